//! keelson's own messages on the Raft port, beside openraft's RPCs: what `admin` takes and
//! answers. `write` carries a [`crate::Command`], `read_index` a unit, and every answer is a
//! `Result<_, ClusterError>`.
//!
//! They live apart from `node` so that the wire format builds without the `storage`
//! feature (no RocksDB): the fuzz targets decode exactly these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{MasterNode, NodeId};

/// What a master reports about itself and the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub cluster_id: Option<String>,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub members: BTreeMap<NodeId, MasterNode>,
}

/// Membership requests, forwarded to the leader like writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    AddMaster { id: NodeId, node: MasterNode },
    RemoveMaster { id: NodeId },
}
