//! What every keelson process shares, below the master, the agent, `up` and `ctl`: the stop
//! signals, the cluster file and the percent-encoding of request URLs.

pub mod cluster_file;
pub mod signal;
pub mod url;

pub use cluster_file::{AgentEntry, ClusterFile, MasterEntry};
pub use signal::shutdown_signal;
