//! The space quota (`--quota-backend-bytes`, etcd's): every second each master compares its
//! database's size with the quota and, past it, raises the replicated space alarm
//! ([`ALARM_NOSPACE`]) through Raft. While the alarm is in the state, apply refuses every
//! operation that stores a value, on every replica alike (`OpResult::NoSpace`); deletes still
//! apply. An administrator clears it by deleting the key (`keelson ctl alarm disarm`) once space
//! was freed or the quota raised; a master still over the quota raises it again.

use std::sync::Weak;
use std::time::Duration;

use crate::command::{Command, ALARM_NOSPACE};
use crate::RaftNode;

/// What the alarm's value says: who raised it, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoSpace {
    pub master: crate::NodeId,
    pub db_size_bytes: u64,
    pub quota_bytes: u64,
}

/// Watches this master's database size against `quota` (0: no quota) until the node is gone.
pub(crate) async fn guard_quota(node: Weak<RaftNode>, quota: u64) {
    loop {
        let Some(node) = node.upgrade() else { return };
        let raised = node.store.get(ALARM_NOSPACE).0.is_some();
        let size = node.db_size_bytes();
        node.metrics.alarm_nospace.set(raised as i64);
        node.metrics.db_size_bytes.set(size as i64);
        node.metrics.quota_bytes.set(quota as i64);
        if quota > 0 && size > quota && !raised && node.is_ready() {
            let why = NoSpace {
                master: node.id,
                db_size_bytes: size,
                quota_bytes: quota,
            };
            tracing::warn!(
                db_size_bytes = size,
                quota_bytes = quota,
                "the database is over its quota: raising the NOSPACE alarm"
            );
            let value = serde_json::to_vec(&why).expect("encode").into();
            let put = Command::Put {
                key: ALARM_NOSPACE.into(),
                value,
            };
            if let Err(e) = node.write(put).await {
                tracing::warn!("cannot raise the NOSPACE alarm yet: {e}");
            }
        }
        drop(node);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
