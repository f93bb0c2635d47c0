//! Starting a master's Raft member: [`RaftNode::open`] (`node.rs`), then the tasks that watch
//! it, each in the file of what it keeps — the leadership tenure a graceful stop waits on
//! (`handover.rs`), the record of a storage failure (`storage_watch.rs`), the pre-vote guard of elections (`elections.rs`) and the snapshot policy
//! (`snapshot_policy.rs`). They sit above `node.rs`, which knows none of them.

use std::sync::Arc;
use std::time::Duration;

use crate::elections::guard_elections;
use crate::handover::follow_tenure;
use crate::node::{NodeConfig, RaftNode, StartError};
use crate::snapshot_policy::drive_snapshots;
use crate::storage_watch::follow_storage;

impl RaftNode {
    /// Opens the data directory (checking that it belongs to this master and cluster) and
    /// starts the Raft member. Does not initialize a cluster: see [`RaftNode::initialize`].
    pub async fn start(
        cfg: NodeConfig,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, StartError> {
        let heartbeat = Duration::from_millis(cfg.heartbeat_ms);
        let snapshot_every = cfg.snapshot_every;
        let quota = cfg.quota_backend_bytes;
        let (node, appended) = Self::open(cfg, registry).await?;
        tokio::spawn(follow_tenure(node.clone()));
        tokio::spawn(follow_storage(Arc::downgrade(&node)));
        tokio::spawn(crate::quota::guard_quota(Arc::downgrade(&node), quota));
        // On Raft's threads: API load must not hold back the switch it keeps.
        node.runtime()
            .spawn(guard_elections(Arc::downgrade(&node), heartbeat));
        node.runtime().spawn(drive_snapshots(
            Arc::downgrade(&node),
            snapshot_every,
            appended,
        ));
        Ok(node)
    }
}
