//! keelson's consensus layer: openraft over RocksDB.
//!
//! Invariant: this crate knows nothing about pods, services or any API object. It replicates
//! opaque values under string keys through a closed [`Command`] enum, applies them
//! deterministically (preconditions are checked in apply, so every replica reaches the same
//! verdict) and stamps every write with its *resource version* ([`revision`]): the Raft log index
//! of the entry that wrote it and the write's position in that entry — one global, totally
//! ordered clock, as etcd's revision is.
//!
//! Map:
//! - [`command`]: the replicated commands and their deterministic application to a key space.
//! - [`store`]: one RocksDB per master — the Raft log ([`store::LogStore`]) and the state machine
//!   ([`store::StateMachine`]) in column families of the same database.
//! - [`feed`]: the change feed published by apply, with a bounded replay window for watches.
//! - [`network`]: Raft RPCs between masters over HTTP with bincode bodies.
//! - [`node`]: [`node::RaftNode`], the facade the master uses: writes with forwarding to the
//!   leader, linearizable and local reads, membership changes.
//! - [`server`]: the Raft port, and [`message`]: keelson's own requests on it.
//! - [`failure`]: what a master does when its storage fails (a full disk above all).
//! - [`backup`]: the backup file, taken from a running master, restored into new data
//!   directories.
//!
//! The `storage` feature (on by default) brings the running member: `store`, `feed`,
//! `network`, `node`, `server` and `metrics`. Without it the crate is its wire format only —
//! [`codec`], [`command`], [`error`], [`message`] and the type configuration below — which the
//! fuzz targets link without building RocksDB.

#[cfg(feature = "storage")]
pub mod backup;
pub mod codec;
pub mod command;
#[cfg(feature = "storage")]
mod elections;
pub mod error;
#[cfg(feature = "storage")]
pub mod failure;
#[cfg(feature = "storage")]
pub mod feed;
#[cfg(feature = "storage")]
mod gate;
#[cfg(feature = "storage")]
pub mod handover;
pub mod message;
#[cfg(feature = "storage")]
pub mod metrics;
#[cfg(feature = "storage")]
pub mod network;
#[cfg(feature = "storage")]
pub mod node;
#[cfg(feature = "storage")]
pub mod part_file;
#[cfg(feature = "storage")]
pub mod prevote;
#[cfg(feature = "storage")]
pub mod proposer;
#[cfg(feature = "storage")]
pub mod quota;
pub mod revision;
#[cfg(feature = "storage")]
pub mod runtime;
#[cfg(feature = "storage")]
pub mod server;
#[cfg(feature = "storage")]
mod snapshot_policy;
#[cfg(feature = "storage")]
mod start;
#[cfg(feature = "storage")]
mod storage_watch;
#[cfg(feature = "storage")]
pub mod store;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use command::{Command, CommandResponse, OpResult};
pub use error::ClusterError;
#[cfg(feature = "storage")]
pub use node::RaftNode;

/// A master's address book entry, replicated inside the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterNode {
    /// `HOST:PORT` of the Raft RPC listener.
    pub raft: String,
    /// `http://HOST:PORT` of the API server.
    pub api: String,
}

impl fmt::Display for MasterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft, self.api)
    }
}

/// A master's id inside the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// keelson's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = MasterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle specialised to keelson.
pub type Raft = openraft::Raft<TypeConfig>;
