//! The crate's one error type, saying for every failure whether it is the client's answer
//! (deterministic), a reason to retry elsewhere, or fatal for this node.

use serde::{Deserialize, Serialize};

use crate::{MasterNode, NodeId};

/// Why a write or a linearizable read did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// This master is not the leader; `leader` is the one it knows of, if any. Forwarding
    /// handles it inside [`crate::RaftNode`]; it reaches callers only when forwarding is off.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<(NodeId, MasterNode)>,
    },
    /// No leader could be reached in time: the cluster has no quorum right now. Nothing was
    /// applied; retry later.
    #[error("no leader is reachable: the masters have no quorum")]
    NoQuorum,
    /// This master is no longer a voting member of the cluster.
    #[error("this master was removed from the cluster and takes no requests")]
    Removed,
    /// The write was sent but its outcome is unknown (a timeout or a lost connection after it
    /// was proposed): it may or may not have been applied.
    #[error("the outcome of the write is unknown: {0}")]
    Indeterminate(String),
    /// The request itself is wrong (deterministic: retrying gives the same answer).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Raft or storage stopped on this node: fatal for this node.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ClusterError {
    /// True when the request certainly had no effect and may be retried elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NotLeader { .. } | ClusterError::NoQuorum
        )
    }
}

/// Turns any displayable error into a storage error for openraft (which stops the node).
#[cfg(feature = "storage")]
pub(crate) fn storage_err<E: std::fmt::Display>(
    make: impl FnOnce(openraft::AnyError) -> openraft::StorageIOError<NodeId>,
    e: E,
) -> openraft::StorageError<NodeId> {
    make(openraft::AnyError::error(e.to_string())).into()
}
