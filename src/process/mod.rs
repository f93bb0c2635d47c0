//! What every keelson process shares, below the master, the agent, `up` and `ctl`: the stop
//! signals and the cluster file.

pub mod cluster_file;
pub mod signal;

pub use cluster_file::{AgentEntry, ClusterFile, MasterEntry};
pub use signal::shutdown_signal;
