//! Noticing a storage failure ([`crate::failure`]): openraft stops for good on one, and this
//! task records it once — the error in the log, the `storage_failed` and `disk_full` gauges,
//! [`RaftNode::storage_failure`] — and ends every open watch, whose clients go to another
//! master: nothing more is published here.

use std::sync::Weak;

use crate::failure::Failure;
use crate::node::RaftNode;

/// Runs until the node is dropped or its metrics end.
pub(crate) async fn follow_storage(node: Weak<RaftNode>) {
    let Some(mut rx) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    loop {
        let Some(node) = node.upgrade() else { return };
        let fatal = rx.borrow_and_update().running_state.clone().err();
        if let Some(failure) = fatal.as_ref().and_then(Failure::of) {
            if node.storage_failure().is_none() {
                tracing::error!(
                    no_space = failure.no_space,
                    "storage failed: {}; this master serves nothing until it restarts",
                    failure.detail
                );
                node.metrics.storage_failed.set(1);
                node.metrics.disk_full.set(failure.no_space as i64);
                node.record_failure(failure);
                node.store.feed.reset(node.store.applied_rv());
            }
            return;
        }
        drop(node);
        if rx.changed().await.is_err() {
            return;
        }
    }
}
