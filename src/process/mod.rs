//! What every keelson process shares, below the master, the agent, `up` and `ctl`: the stop
//! signals, logging (its flags, and files rotated by size), the cluster file and the percent-encoding of request URLs (`url`, from
//! keelson-model, which the bench shares too).

pub mod cluster_file;
pub mod logging;
pub mod rotating;
pub mod signal;
pub use keelson_model::url;

pub use cluster_file::{AgentEntry, ClusterFile, MasterEntry};
pub use signal::shutdown_signal;
