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

/// An error that ends the process with its own exit status (`main` exits with `code` after
/// printing `message`), for what a supervisor must tell apart.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

/// A size in bytes written as a quantity (`10Mi`, `64k`, `1000`; `0` allowed), for flags.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match keelson_model::quantity::parse_quantity(s) {
        Some(v) if v >= 0.0 => Ok(v as u64),
        _ => Err(format!("{s:?} is not a size such as 10Mi, 2Gi or 500k")),
    }
}
