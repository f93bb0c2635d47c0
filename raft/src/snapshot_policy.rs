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

use openraft::LogId;

use crate::node::RaftNode;
use crate::NodeId;

/// A new snapshot waits until the log since the last one is at least 1/GROWTH of its size.
const GROWTH: u64 = 4;

/// How often the policy looks.
const EVERY: Duration = Duration::from_millis(100);

/// True when a snapshot is due: `entries` and `log_bytes` appended since the last snapshot, whose
/// data is `snapshot_bytes` long (0: none yet).
fn due(entries: u64, log_bytes: u64, snapshot_bytes: u64, every: u64) -> bool {
    entries >= every && log_bytes.saturating_mul(GROWTH) >= snapshot_bytes
}

/// What the policy remembers between looks.
#[derive(Default)]
struct Policy {
    /// The last snapshot seen.
    last: Option<LogId<NodeId>>,
    /// The log's byte count where the log since that snapshot begins.
    mark: u64,
    /// A build this policy asked for has yet to show.
    asked: bool,
}

impl Policy {
    /// One look: the current snapshot, the last applied entry and the log's byte count. True
    /// when a build should be asked for, which the policy then counts as asked.
    fn look(
        &mut self,
        snapshot: Option<LogId<NodeId>>,
        applied: Option<LogId<NodeId>>,
        log_bytes: u64,
        snapshot_bytes: u64,
        every: u64,
    ) -> bool {
        if snapshot != self.last {
            self.last = snapshot;
            // A build this policy asked for covers the log up to at least where it was asked,
            // so the log since it counts from there. Counting from now would drop the bytes
            // appended during the build, and if writes stopped there no snapshot would come due
            // again. A snapshot from elsewhere (installed from the leader, or found at start)
            // counts from when it is seen.
            if !std::mem::take(&mut self.asked) {
                self.mark = log_bytes;
            }
        }
        let entries = applied
            .map_or(0, |l| l.index)
            .saturating_sub(snapshot.map_or(0, |l| l.index));
        if !due(
            entries,
            log_bytes.saturating_sub(self.mark),
            snapshot_bytes,
            every,
        ) {
            return false;
        }
        self.mark = log_bytes;
        self.asked = true;
        true
    }
}

/// Asks openraft for snapshots as [`due`] says; ends with the node. `appended` counts the bytes
/// this master's log has taken since it started.
pub(crate) async fn drive_snapshots(node: Weak<RaftNode>, every: u64, appended: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = Policy::default();
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let (snapshot, applied) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            (m.snapshot, m.last_applied)
        };
        let log_bytes = appended.load(Ordering::Relaxed);
        let snapshot_bytes = node.store.snapshot_bytes.load(Ordering::Relaxed);
        if policy.look(snapshot, applied, log_bytes, snapshot_bytes, every) {
            // Fails only when Raft has stopped, and then the node is going away.
            let _ = node.raft.trigger().snapshot().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::{due, Policy};
    use crate::NodeId;

    fn at(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

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

    #[test]
    fn bytes_appended_while_an_asked_for_build_runs_count_toward_the_next() {
        let mut p = Policy::default();
        // 40 entries of 100 bytes: due, asked for at byte 4,000.
        assert!(p.look(None, at(40), 4_000, 0, 40));
        // The build (1,000 bytes, at index 45) shows only once all writes are done, at entry
        // 150 and byte 15,000. The bytes appended since it was asked for count, so the next
        // build is due at once though no byte comes after; and it is asked for once.
        assert!(p.look(at(45), at(150), 15_000, 1_000, 40));
        assert!(!p.look(at(45), at(150), 15_000, 1_000, 40), "asked once");
    }

    #[test]
    fn a_snapshot_from_elsewhere_counts_from_when_it_is_seen() {
        let mut p = Policy::default();
        // Installed from the leader: the log since it starts empty.
        assert!(!p.look(at(500), at(600), 50_000, 10_000, 40));
        assert!(!p.look(at(500), at(640), 52_000, 10_000, 40));
        assert!(p.look(at(500), at(700), 52_500, 10_000, 40));
    }
}
