//! What a master keeps about its own leadership for a graceful stop (`handover.rs`): the gate
//! proposals pass, and when it was elected; and the leadership's changes, for whoever must act
//! on them (`RaftNode::leadership`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::{watch, Notify};

/// Lets proposals through until it is closed, and counts those in flight.
#[derive(Default)]
pub(crate) struct WriteGate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// A proposal let through the gate; dropping it ends the proposal.
pub(crate) struct Pass<'a>(&'a WriteGate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl WriteGate {
    /// A pass for one proposal, or `None` once the gate is closed.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        // Counted before the check: a closer that sees no proposal in flight after closing
        // knows that every later one sees the gate closed.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(self);
        (!self.closed.load(Ordering::SeqCst)).then_some(pass)
    }

    /// Closes the gate and waits until no proposal is in flight, or until `deadline`; true when
    /// the proposals drained.
    pub(crate) async fn close_and_drain(&self, deadline: Instant) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, idle).await.is_err() {
                return false;
            }
        }
    }

    pub(crate) fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }
}

/// When this master was elected, as seen in openraft's metrics: its lease over its own vote runs
/// from then (seen at or after the election, so waiting from here is never too short).
pub(crate) struct Tenure {
    elected: Mutex<Option<(u64, Instant)>>,
    /// The term and whether this master leads it: changes only when one of them does.
    changes: watch::Sender<(u64, bool)>,
}

impl Default for Tenure {
    fn default() -> Self {
        Tenure {
            elected: Mutex::new(None),
            changes: watch::channel((0, false)).0,
        }
    }
}

impl Tenure {
    /// Records a leadership observed in `term` (kept from its first sighting), or its end.
    pub(crate) fn observe(&self, leading: bool, term: u64) {
        let mut slot = self.elected.lock().expect("tenure lock");
        match (*slot, leading) {
            (Some((t, _)), true) if t == term => {}
            (_, true) => *slot = Some((term, Instant::now())),
            (_, false) => *slot = None,
        }
        self.changes.send_if_modified(|now| {
            let changed = *now != (term, leading);
            *now = (term, leading);
            changed
        });
    }

    pub(crate) fn since(&self) -> Option<Instant> {
        self.elected.lock().expect("tenure lock").map(|(_, at)| at)
    }

    pub(crate) fn changes(&self) -> watch::Receiver<(u64, bool)> {
        self.changes.subscribe()
    }
}
