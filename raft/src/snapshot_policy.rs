//! When a master builds a snapshot: after `snapshot_every` log entries, and no sooner than the
//! log since its last snapshot holds a quarter of that snapshot's size in bytes.
//!
//! A snapshot holds the whole state, so building one every fixed number of entries costs more
//! and more as the state grows: at 1.5 million records (400 MB) a build every 10,000 entries came
//! every few seconds under 256 writers, and writing and syncing it stalled the disk that the
//! log's fsyncs share long enough for followers to miss their leader (issue 14's leader changes).
//! Tying builds to the bytes the log has grown keeps the snapshot's writing at most four times
//! the log's, whatever the state's size, and leaves small states to `snapshot_every` alone.
//!
//! openraft's own policy is off (`SnapshotPolicy::Never`); this task asks for builds with
//! `trigger().snapshot()`, which openraft ignores while one is under way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::node::RaftNode;

/// A new snapshot waits until the log since the last one is at least 1/GROWTH of its size.
const GROWTH: u64 = 4;

/// How often the policy looks.
const EVERY: Duration = Duration::from_millis(100);

/// True when a snapshot is due: `entries` and `log_bytes` appended since the last snapshot, whose
/// data is `snapshot_bytes` long (0: none yet).
fn due(entries: u64, log_bytes: u64, snapshot_bytes: u64, every: u64) -> bool {
    entries >= every && log_bytes.saturating_mul(GROWTH) >= snapshot_bytes
}

/// Asks openraft for snapshots as [`due`] says; ends with the node. `appended` counts the bytes
/// this master's log has taken since it started.
pub(crate) async fn drive_snapshots(node: Weak<RaftNode>, every: u64, appended: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last snapshot seen, and the log's byte count when it was seen.
    let mut last = None;
    let mut mark = 0;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let (snapshot, applied) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            (m.snapshot, m.last_applied)
        };
        let now = appended.load(Ordering::Relaxed);
        if snapshot != last {
            last = snapshot;
            mark = now;
        }
        let entries = applied
            .map_or(0, |l| l.index)
            .saturating_sub(snapshot.map_or(0, |l| l.index));
        let snapshot_bytes = node.store.snapshot_bytes.load(Ordering::Relaxed);
        if due(entries, now.saturating_sub(mark), snapshot_bytes, every) {
            // Fails only when Raft has stopped, and then the node is going away.
            let _ = node.raft.trigger().snapshot().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_small_state_snapshots_every_so_many_entries() {
        assert!(!due(9_999, 10 << 20, 0, 10_000));
        assert!(due(10_000, 1, 0, 10_000), "no snapshot yet");
        assert!(due(10_000, 3 << 20, 1 << 20, 10_000));
    }

    #[test]
    fn a_large_state_waits_for_the_log_to_grow_by_a_quarter_of_it() {
        let snapshot = 400 << 20;
        assert!(!due(50_000, 99 << 20, snapshot, 10_000));
        assert!(due(50_000, 100 << 20, snapshot, 10_000));
    }
}
