//! When a master's storage fails: a full disk (ENOSPC) or any other error writing RocksDB or a
//! snapshot. openraft stops for good on such an error; the state machine has undone what it
//! could not persist (memory never runs ahead of disk), [`crate::RaftNode`] records the failure
//! (gauges, `storage_failure()`, the end of every open watch), and the master serves nothing it
//! holds. Every write acknowledged to a client is on a majority of disks, so the others go on.
//! What the master does next (wait for space, exit for its supervisor) is the master's.

use openraft::error::Fatal;
use serde::Serialize;

use crate::NodeId;

/// Why this master's storage stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The disk is full (ENOSPC).
    pub no_space: bool,
    /// What failed, in a few words (clients and `GET /cluster` see this).
    pub reason: &'static str,
    /// The error as openraft reported it, paths included: for the master's log only.
    #[serde(skip)]
    pub detail: String,
}

impl Failure {
    /// openraft's fatal error, when it is a failure: a clean stop is not.
    pub(crate) fn of(fatal: &Fatal<NodeId>) -> Option<Self> {
        let detail = fatal.to_string();
        let no_space = is_no_space(&detail);
        let reason = match fatal {
            Fatal::Stopped => return None,
            Fatal::StorageError(_) if no_space => "no space left on device",
            Fatal::StorageError(_) => "a storage error",
            Fatal::Panicked => "Raft panicked",
        };
        Some(Failure {
            no_space,
            reason,
            detail,
        })
    }
}

/// True for an error text of a full disk: RocksDB's ("No space left on device", errno 28).
pub fn is_no_space(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("os error 28")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{AnyError, StorageError, StorageIOError};

    fn storage(text: &str) -> Fatal<NodeId> {
        Fatal::StorageError(StorageError::from(StorageIOError::write_state_machine(
            AnyError::error(text),
        )))
    }

    #[test]
    fn a_full_disk_is_told_from_other_errors_and_a_clean_stop_is_none() {
        let full = Failure::of(&storage(
            "IO error: No space left on device: While appending to file: /d/000012.log: No space left on device",
        ))
        .unwrap();
        assert!(full.no_space);
        assert_eq!(full.reason, "no space left on device");
        assert!(full.detail.contains("/d/000012.log"));
        let io = Failure::of(&storage("IO error: Input/output error (os error 5)")).unwrap();
        assert!(!io.no_space);
        assert!(is_no_space(
            "write snapshot: No space left on device (os error 28)"
        ));
        assert_eq!(Failure::of(&Fatal::Stopped), None);
        assert!(!Failure::of(&Fatal::Panicked).unwrap().no_space);
    }
}
