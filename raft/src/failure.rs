//! When a master's storage fails: a full disk (ENOSPC) or any other error writing RocksDB or a
//! snapshot. openraft stops for good on such an error; this master then serves nothing it holds
//! (the API refuses every request but health and metrics, naming the master and the cause), and
//! its state machine has undone what it could not persist, so memory never runs ahead of disk.
//! Every write acknowledged to a client is on a majority of disks, so the others go on.
//!
//! Recovery is a restart: RocksDB and openraft do not resume after a write error. On a full disk
//! the master probes for space every second ([`space_is_back`]) and exits once there is some, for
//! its supervisor to start it again; on any other error it exits at once.

use std::path::Path;

use openraft::error::Fatal;
use serde::Serialize;

use crate::NodeId;

/// Why this master's storage stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The disk is full (ENOSPC).
    pub no_space: bool,
    /// The error, as openraft reported it.
    pub reason: String,
}

impl Failure {
    /// openraft's fatal error, classified.
    pub(crate) fn of(fatal: &Fatal<NodeId>) -> Self {
        let reason = fatal.to_string();
        Failure {
            no_space: is_no_space(&reason),
            reason,
        }
    }
}

/// True for an error text of a full disk: RocksDB's ("No space left on device", errno 28).
fn is_no_space(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("os error 28")
}

/// Bytes the probe writes: room for RocksDB to open, flush its memtable and write a log entry.
const PROBE_BYTES: usize = 1 << 20;

/// True when `dir` has room again: a probe file of [`PROBE_BYTES`] can be written and synced
/// there (and is removed).
pub fn space_is_back(dir: &Path) -> bool {
    use std::io::Write;
    let probe = dir.join(".space-probe");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_other_errors() {
        assert!(is_no_space(
            "storage error: write state machine: IO error: No space left on device: While appending to file: /d/000012.log: No space left on device"
        ));
        assert!(is_no_space(
            "write snapshot: No space left on device (os error 28)"
        ));
        assert!(!is_no_space("IO error: Input/output error (os error 5)"));
    }

    #[test]
    fn a_writable_directory_has_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(space_is_back(dir.path()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!space_is_back(&dir.path().join("missing")));
    }
}
