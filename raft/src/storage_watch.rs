//! Noticing a storage failure ([`crate::failure`]): openraft stops for good on one, and this
//! task records it once — the error in the log, the `storage_failed` and `disk_full` gauges,
//! [`RaftNode::storage_failure`] — and ends every open watch, whose clients go to another
//! master: nothing more is published here.

use std::sync::Weak;

use crate::failure::Failure;
use crate::node::RaftNode;

/// Runs until the node is dropped, its metrics end, or a failure is recorded.
pub(crate) async fn follow_storage(node: Weak<RaftNode>) {
    let Some(mut rx) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    let fatal = match rx.wait_for(|m| m.running_state.is_err()).await {
        Ok(m) => m.running_state.clone().err(),
        Err(_) => return,
    };
    // A clean stop is not a failure.
    let (Some(node), Some(failure)) = (node.upgrade(), fatal.as_ref().and_then(Failure::of)) else {
        return;
    };
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
