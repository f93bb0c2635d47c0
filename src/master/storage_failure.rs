//! What a master does once its storage failed (`keelson_raft::failure`): until then its API
//! refuses what it would serve from the store (`api::failed`); on a full disk it waits until
//! its data directory has room for a restart, then exits with [`EXIT_SPACE_FREED`] for its
//! supervisor (`keelson up`, systemd) to start it again — RocksDB and openraft do not resume
//! after a failed write, a new process does. Any other failure exits at once (1). A master that
//! cannot even start for want of space waits the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keelson_raft::RaftNode;

use crate::process::Exit;

/// Exit status of a master that stopped on a full disk once space was freed: EX_TEMPFAIL,
/// "try again", for its supervisor to start it again.
pub const EXIT_SPACE_FREED: i32 = 75;

/// Room a restart needs at least: RocksDB opens, replays its log and flushes its memtable.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// Waits for this master's storage to fail and for the moment to exit; the exit to make.
pub async fn exit_after_failure(node: Arc<RaftNode>, data_dir: PathBuf) -> Exit {
    let mut failures = node.storage_failures();
    let failure = match failures.wait_for(Option::is_some).await {
        Ok(f) => f.clone().expect("a failure"),
        Err(_) => return std::future::pending().await,
    };
    if !failure.no_space {
        return Exit {
            code: 1,
            message: format!("storage failed ({}): exiting", failure.detail),
        };
    }
    // Room for the snapshot twice over (a new one is written beside the old) as well.
    let snapshot = node
        .store
        .snapshot_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    wait_for_space(&data_dir, MIN_FREE_BYTES.max(2 * snapshot + (32 << 20))).await
}

/// Waits until `dir` has `needed` bytes free, checking every second; then the exit that asks
/// the supervisor for a restart.
pub async fn wait_for_space(dir: &Path, needed: u64) -> Exit {
    tracing::error!(
        "out of disk space in {}: waiting for {} MiB to be free, then exiting for the supervisor to restart this master",
        dir.display(),
        needed >> 20
    );
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if free_bytes(dir).is_some_and(|free| free >= needed) {
            return Exit {
                code: EXIT_SPACE_FREED,
                message: format!(
                    "space was freed in {}: exiting ({EXIT_SPACE_FREED}) for the supervisor to restart this master",
                    dir.display()
                ),
            };
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct statvfs fills.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
