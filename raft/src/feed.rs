//! The change feed: every change that apply makes, in log order, with a bounded replay window.
//!
//! Watches subscribe from a resource version N and receive every event with `rv > N`, read
//! from the window: first what it already holds, then what is published later. Subscribing and
//! publishing take the same lock, so the hand-over has no gap and no duplicate. A version below
//! the window's floor is [`Expired`] (HTTP 410 Gone), as Kubernetes clients expect; they
//! re-list. The window lives in memory only: after a restart or a snapshot install its floor is
//! the version of the applied state at that moment.
//!
//! The window is bounded twice ([`WindowLimits`]): in events, and in bytes (keys, values and
//! previous values), so that a run of large objects cannot hold memory that an event count
//! alone would allow. Beyond either bound it drops its oldest entries and its floor rises; the
//! newest entry is always kept, so the window exceeds its bounds by at most one entry.
//! The window is the only buffer: a subscription holds a position in it and at most the entry
//! it is handing out, so a watcher that stops reading pins nothing else; once the window has
//! dropped events it had not taken, it ends with [`WatchEnd::Lagged`] and its client re-lists.
//!
//! One log entry can change several keys (`Command::Batch`), each at its own resource version
//! ([`crate::revision`]: the entry's index and the write's position in it). A watch resumed
//! from any of them, even in the middle of an entry, gets exactly the events after it. The
//! window drops whole entries (its floor is then [`revision::through_entry`] of the last one
//! dropped), and [`Subscription::next_index`] hands out an entry's events together, so the end
//! of an entry is known without waiting for the next one.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::command::Record;
use crate::revision;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Resource version of the change ([`crate::revision`]).
    pub rv: u64,
    pub kind: EventKind,
    pub key: String,
    /// The new value; for a delete, the value the key held.
    pub value: Bytes,
    /// What the key held before an update or delete (its value shares the record's bytes):
    /// what a read of an earlier version finds there.
    pub prev: Option<Record>,
    /// What subscribers derive from the event, computed by the first one and shared by all.
    pub memo: Memo,
}

impl Event {
    /// A change, with nothing derived from it yet.
    pub fn new(rv: u64, kind: EventKind, key: String, value: Bytes, prev: Option<Record>) -> Self {
        Event {
            rv,
            kind,
            key,
            value,
            prev,
            memo: Memo::default(),
        }
    }

    /// What the event weighs in the window: its key, value and previous value.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.prev.as_ref().map_or(0, |p| p.value.len())
    }
}

/// A value derived from an event once (an encoded object) and shared by every
/// subscriber: every subscription hands out the same `Arc<Event>`, so a thousand watches of
/// one change decode it once. It holds one value of one type; a consumer asking for another
/// type gets `None` and derives its own.
#[derive(Clone, Default)]
pub struct Memo(OnceLock<Arc<dyn Any + Send + Sync>>);

impl Memo {
    /// The value derived by `derive`, computed on the first call and shared by the others.
    pub fn get_or_init<T: Any + Send + Sync>(&self, derive: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.0
            .get_or_init(|| Arc::new(derive()))
            .clone()
            .downcast()
            .ok()
    }
}

impl PartialEq for Memo {
    /// Derived data: it never makes two events differ.
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(unset)"
        })
    }
}

/// How much the replay window holds; it drops its oldest entries when either bound is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Events kept.
    pub events: usize,
    /// Bytes kept, counted by [`Event::size`].
    pub bytes: usize,
}

impl Default for WindowLimits {
    /// 10,000 events or 64 MiB: a few minutes of a busy cluster's writes, and at most a few
    /// dozen of the largest objects (1.5 MiB, each counted twice by an update).
    fn default() -> Self {
        WindowLimits {
            events: 10_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// The requested version is older than what the window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} (oldest available: {floor})")]
pub struct Expired {
    pub requested: u64,
    pub floor: u64,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchEnd {
    #[error("the watcher fell behind the change feed")]
    Lagged,
    #[error("the state was replaced by a snapshot")]
    Reset,
    #[error("the store is shutting down")]
    Closed,
}

struct Window {
    /// In log order (`rv` never decreases).
    events: VecDeque<Arc<Event>>,
    /// Sum of [`Event::size`] over `events`.
    bytes: usize,
    /// Every event with `rv > floor` is in `events`.
    floor: u64,
    /// The applied state's version: at or past every event published (entries that changed
    /// nothing, such as a new leader's blank entry, advance it without an event).
    head: u64,
    /// Counts resets: a subscription taken before the last one has ended.
    generation: u64,
}

impl Window {
    /// Drops the oldest entries, whole, until both limits hold. The newest entry is always
    /// kept, even alone over a limit, so that the live subscribers can still take it; it is
    /// dropped on the next publish.
    fn trim(&mut self, limits: WindowLimits) {
        let newest = match self.events.back() {
            Some(e) => revision::index_of(e.rv),
            None => return,
        };
        while self.events.len() > limits.events || self.bytes > limits.bytes {
            let oldest = match self.events.front().map(|e| revision::index_of(e.rv)) {
                Some(index) if index < newest => index,
                _ => break,
            };
            // Subscriptions take whole entries: an entry is kept or dropped as one.
            while self
                .events
                .front()
                .is_some_and(|e| revision::index_of(e.rv) == oldest)
            {
                let e = self.events.pop_front().expect("non-empty");
                self.bytes -= e.size();
            }
            self.floor = self.floor.max(revision::through_entry(oldest));
        }
    }
}

/// The change feed of one master.
pub struct Feed {
    window: Arc<RwLock<Window>>,
    limits: WindowLimits,
    /// Ticks on every publish and reset; subscriptions wait on it. Dropped with the feed, which
    /// ends them ([`WatchEnd::Closed`]).
    tick: watch::Sender<u64>,
}

impl Feed {
    /// A feed holding up to `limits`, starting after resource version `floor`.
    pub fn new(limits: WindowLimits, floor: u64) -> Self {
        let (tick, _) = watch::channel(0);
        Feed {
            window: Arc::new(RwLock::new(Window {
                events: VecDeque::new(),
                bytes: 0,
                floor,
                head: floor,
                generation: 0,
            })),
            limits: WindowLimits {
                events: limits.events.max(1),
                bytes: limits.bytes,
            },
            tick,
        }
    }

    /// Publishes events (in log order) to the window and the live subscribers.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        {
            let mut w = self.window.write().expect("feed lock");
            let before = w.events.len();
            for event in events {
                w.head = w.head.max(event.rv);
                w.bytes += event.size();
                w.events.push_back(Arc::new(event));
            }
            if w.events.len() == before {
                return;
            }
            w.trim(self.limits);
        }
        self.tick.send_modify(|t| *t += 1);
    }

    /// The state now stands at `applied`: entries up to it were applied, the events of those
    /// that changed something already published. Watches report it in bookmarks once they have
    /// taken every event ([`Subscription::position`]), so a watch catches up with a list even
    /// when the last entries changed nothing.
    pub fn advance(&self, applied: u64) {
        let mut w = self.window.write().expect("feed lock");
        w.head = w.head.max(applied);
    }

    /// Forgets the window: the state now stands at `applied`, reached without events.
    pub fn reset(&self, applied: u64) {
        {
            let mut w = self.window.write().expect("feed lock");
            w.events.clear();
            w.bytes = 0;
            w.floor = applied;
            w.head = applied;
            w.generation += 1;
        }
        self.tick.send_modify(|t| *t += 1);
    }

    /// The oldest resource version a watch can start from, and the newest published.
    pub fn bounds(&self) -> (u64, u64) {
        let w = self.window.read().expect("feed lock");
        (w.floor, w.head)
    }

    /// What the window holds: events and bytes (for metrics).
    pub fn held(&self) -> (usize, usize) {
        let w = self.window.read().expect("feed lock");
        (w.events.len(), w.bytes)
    }

    /// What the keys `in_range` held at resource version `at`, for each one changed since:
    /// `None` for a key created since. Every other key holds now what it held then. Needs the
    /// window to reach back to `at`, as a watch from it would.
    pub fn changed_since(
        &self,
        at: u64,
        in_range: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, Option<Record>>, Expired> {
        let w = self.window.read().expect("feed lock");
        if at < w.floor {
            return Err(Expired {
                requested: at,
                floor: w.floor,
            });
        }
        let start = w.events.partition_point(|e| e.rv <= at);
        let mut then = BTreeMap::new();
        for e in w.events.range(start..).filter(|e| in_range(&e.key)) {
            // The first change since `at` tells what the key held at `at`.
            then.entry(e.key.clone()).or_insert_with(|| match e.kind {
                EventKind::Created => None,
                EventKind::Updated | EventKind::Deleted => e.prev.clone(),
            });
        }
        Ok(then)
    }

    /// Subscribes to every event with `rv > from`.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, Expired> {
        let w = self.window.read().expect("feed lock");
        if from < w.floor {
            return Err(Expired {
                requested: from,
                floor: w.floor,
            });
        }
        Ok(Subscription {
            window: self.window.clone(),
            tick: self.tick.subscribe(),
            generation: w.generation,
            seen: from,
            entry: VecDeque::new(),
        })
    }
}

/// A subscription: a position in the window, and the entry being handed out.
pub struct Subscription {
    window: Arc<RwLock<Window>>,
    tick: watch::Receiver<u64>,
    generation: u64,
    /// Every event with `rv <= seen` has been taken from the window.
    seen: u64,
    /// Events of the entry taken last and not yet handed out.
    entry: VecDeque<Arc<Event>>,
}

impl Subscription {
    /// The next event, in order.
    pub async fn next(&mut self) -> Result<Arc<Event>, WatchEnd> {
        if self.entry.is_empty() {
            self.take_entry().await?;
        }
        Ok(self.entry.pop_front().expect("an entry has events"))
    }

    /// The version this subscription has caught up to: the end of the last entry it took, or
    /// the applied state's version once it has taken every event published (and lost none).
    /// It never goes back: no event lies between the two, so the subscription moves there.
    pub fn position(&mut self) -> u64 {
        let w = self.window.read().expect("feed lock");
        let caught_up = self.entry.is_empty()
            && w.generation == self.generation
            && self.seen >= w.floor
            && w.events.back().is_none_or(|e| e.rv <= self.seen);
        if caught_up {
            self.seen = self.seen.max(w.head);
        }
        self.seen
    }

    /// The events after the subscription's position in the next log entry that changed
    /// something, in order: a watch that sends them together never leaves a client in the
    /// middle of an entry (though one that does resumes exactly).
    pub async fn next_index(&mut self) -> Result<Vec<Arc<Event>>, WatchEnd> {
        if self.entry.is_empty() {
            self.take_entry().await?;
        }
        Ok(self.entry.drain(..).collect())
    }

    /// Takes the next entry after `seen` from the window, waiting for one to be published.
    /// Cancel-safe: it changes nothing before its only await point returns.
    async fn take_entry(&mut self) -> Result<(), WatchEnd> {
        loop {
            // Mark the current tick seen before looking, so that a publish after the look
            // wakes the wait below.
            self.tick.mark_unchanged();
            {
                let w = self.window.read().expect("feed lock");
                if w.generation != self.generation {
                    return Err(WatchEnd::Reset);
                }
                if self.seen < w.floor {
                    // The window dropped events this subscription had not taken.
                    return Err(WatchEnd::Lagged);
                }
                let start = w.events.partition_point(|e| e.rv <= self.seen);
                if let Some(index) = w.events.get(start).map(|e| revision::index_of(e.rv)) {
                    let entry = w
                        .events
                        .range(start..)
                        .take_while(|e| revision::index_of(e.rv) == index);
                    self.entry.extend(entry.cloned());
                    // The whole entry is taken: were the window to drop it now (its floor
                    // rising to its end), this subscription has lost nothing.
                    self.seen = revision::through_entry(index);
                    return Ok(());
                }
            }
            if self.tick.changed().await.is_err() {
                return Err(WatchEnd::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(events: usize) -> WindowLimits {
        WindowLimits {
            events,
            ..WindowLimits::default()
        }
    }

    /// Resource version of the write at `position` in entry `index`.
    fn w(index: u64, position: usize) -> u64 {
        revision::of_write(index, position)
    }

    /// Resource version of the state through entry `index`.
    fn through(index: u64) -> u64 {
        revision::through_entry(index)
    }

    fn ev(rv: u64, key: &str) -> Event {
        Event::new(rv, EventKind::Created, key.into(), Bytes::new(), None)
    }

    #[tokio::test]
    async fn backlog_then_live_without_gap() {
        let feed = Feed::new(limit(10), 0);
        feed.publish([ev(w(1, 0), "a"), ev(w(2, 0), "b"), ev(w(3, 0), "c")]);
        let mut sub = feed.subscribe(w(1, 0)).unwrap();
        feed.publish([ev(w(4, 0), "d")]);
        let got: Vec<u64> = [sub.next().await, sub.next().await, sub.next().await]
            .into_iter()
            .map(|e| e.unwrap().rv)
            .collect();
        assert_eq!(got, vec![w(2, 0), w(3, 0), w(4, 0)]);
    }

    #[tokio::test]
    async fn versions_below_the_window_expire() {
        let feed = Feed::new(limit(2), through(5));
        assert_eq!(
            feed.subscribe(through(4)).err(),
            Some(Expired {
                requested: through(4),
                floor: through(5)
            })
        );
        feed.publish([ev(w(6, 0), "a"), ev(w(7, 0), "b"), ev(w(8, 0), "c")]);
        assert_eq!(feed.bounds(), (through(6), w(8, 0)));
        assert!(feed.subscribe(through(5)).is_err());
        assert!(feed.subscribe(w(6, 0)).is_err());
        let mut sub = feed.subscribe(through(6)).unwrap();
        assert_eq!(sub.next().await.unwrap().rv, w(7, 0));
    }

    #[tokio::test]
    async fn an_entry_comes_whole() {
        let feed = Feed::new(limit(10), 0);
        feed.publish([ev(w(1, 0), "a"), ev(w(2, 0), "b"), ev(w(2, 1), "c")]);
        // From the window: entry 2 together.
        let mut sub = feed.subscribe(through(1)).unwrap();
        let keys = |events: Vec<Arc<Event>>| -> Vec<String> {
            events.iter().map(|e| e.key.clone()).collect()
        };
        assert_eq!(keys(sub.next_index().await.unwrap()), ["b", "c"]);
        // Live: entries 3 (three keys) and 4 in one publish.
        feed.publish([
            ev(w(3, 0), "d"),
            ev(w(3, 1), "e"),
            ev(w(3, 2), "f"),
            ev(w(4, 0), "g"),
        ]);
        assert_eq!(keys(sub.next_index().await.unwrap()), ["d", "e", "f"]);
        assert_eq!(keys(sub.next_index().await.unwrap()), ["g"]);
        // Resumed from the middle of entry 3: exactly the rest of it, then entry 4.
        for (from, rest) in [
            (w(3, 0), vec!["e", "f"]),
            (w(3, 1), vec!["f"]),
            (w(3, 2), vec![]),
            (through(3), vec![]),
        ] {
            let mut sub = feed.subscribe(from).unwrap();
            let mut got = keys(sub.next_index().await.unwrap());
            if !rest.is_empty() {
                assert_eq!(got, rest, "from {from}");
                got = keys(sub.next_index().await.unwrap());
            }
            assert_eq!(got, ["g"], "from {from}");
        }
    }

    #[tokio::test]
    async fn reset_ends_watches() {
        let feed = Feed::new(limit(10), 0);
        let mut sub = feed.subscribe(0).unwrap();
        feed.reset(through(100));
        assert_eq!(sub.next().await.unwrap_err(), WatchEnd::Reset);
        assert!(feed.subscribe(through(99)).is_err());
        assert!(feed.subscribe(through(100)).is_ok());
    }

    fn big(rv: u64, key: &str, len: usize) -> Event {
        let prev = Record {
            value: Bytes::from(vec![b'p'; len]),
            create_rv: 0,
            mod_rv: 0,
        };
        Event::new(
            rv,
            EventKind::Updated,
            key.into(),
            Bytes::from(vec![b'v'; len]),
            Some(prev),
        )
    }

    const KIB: usize = 1024;

    #[tokio::test]
    async fn large_events_keep_the_window_under_its_byte_budget() {
        let limits = WindowLimits {
            events: 10_000,
            bytes: 256 * KIB,
        };
        let feed = Feed::new(limits, 0);
        // 1,000 updates of 16 KiB (value and previous value: 32 KiB each), far under the event
        // bound: the bytes decide.
        for index in 1..=1000 {
            feed.publish([big(w(index, 0), "k", 16 * KIB)]);
            let (events, bytes) = feed.held();
            assert!(bytes <= limits.bytes, "{bytes} bytes held at entry {index}");
            assert_eq!(bytes, events * (32 * KIB + 1));
        }
        let (events, _) = feed.held();
        assert_eq!(events, 7, "256 KiB holds 7 events of 32 KiB and a byte");
        assert_eq!(feed.bounds(), (through(993), w(1000, 0)));
        // From the floor on, everything is there.
        let mut sub = feed.subscribe(through(993)).unwrap();
        assert_eq!(sub.next().await.unwrap().rv, w(994, 0));
    }

    #[tokio::test]
    async fn a_watch_from_below_the_raised_floor_expires() {
        let feed = Feed::new(
            WindowLimits {
                events: 10_000,
                bytes: 100 * KIB,
            },
            0,
        );
        let mut early = feed.subscribe(0).unwrap();
        feed.publish([big(w(1, 0), "a", 30 * KIB)]);
        feed.publish([big(w(2, 0), "b", 30 * KIB)]);
        feed.publish([big(w(3, 0), "c", 30 * KIB)]);
        // 3 × 60 KiB: only the newest fits; the floor moved to the end of the last entry dropped.
        assert_eq!(feed.bounds(), (through(2), w(3, 0)));
        assert_eq!(
            feed.subscribe(w(2, 0)).err(),
            Some(Expired {
                requested: w(2, 0),
                floor: through(2)
            })
        );
        assert!(feed.subscribe(through(2)).is_ok());
        // A watch that had not taken 1 and 2 before they were dropped has lagged.
        assert_eq!(early.next().await.unwrap_err(), WatchEnd::Lagged);
    }

    #[tokio::test]
    async fn entries_are_dropped_whole() {
        let feed = Feed::new(
            WindowLimits {
                events: 10_000,
                bytes: 50 * KIB,
            },
            0,
        );
        // Entry 1 has three events of 10 KiB (20 KiB each with the previous value); then entry 2.
        feed.publish([
            big(w(1, 0), "a", 10 * KIB),
            big(w(1, 1), "b", 10 * KIB),
            big(w(1, 2), "c", 10 * KIB),
        ]);
        assert_eq!(
            feed.held().0,
            3,
            "the newest entry stays, even over the budget"
        );
        feed.publish([big(w(2, 0), "d", 10 * KIB)]);
        // Dropping "a" alone would have been enough for the bytes; the whole entry goes.
        assert_eq!(feed.held().0, 1);
        assert_eq!(feed.bounds(), (through(1), w(2, 0)));
        let mut sub = feed.subscribe(through(1)).unwrap();
        let entry = sub.next_index().await.unwrap();
        assert_eq!(entry.len(), 1);
        assert_eq!(entry[0].key, "d");
        // The event bound drops whole entries too.
        let feed = Feed::new(limit(3), 0);
        feed.publish([
            ev(w(1, 0), "a"),
            ev(w(1, 1), "b"),
            ev(w(2, 0), "c"),
            ev(w(2, 1), "d"),
        ]);
        assert_eq!(feed.bounds(), (through(1), w(2, 1)));
        assert_eq!(feed.held().0, 2);
    }

    #[tokio::test]
    async fn a_caught_up_watch_is_at_the_applied_state_past_entries_without_events() {
        let feed = Feed::new(limit(10), 0);
        let mut sub = feed.subscribe(0).unwrap();
        feed.publish([ev(w(1, 0), "a"), ev(w(1, 1), "b")]);
        // Entries 2 and 3 changed nothing (a new leader's blank entry, say).
        feed.advance(through(3));
        assert_eq!(sub.position(), 0, "entry 1 not taken yet");
        assert_eq!(sub.next().await.unwrap().key, "a");
        assert_eq!(
            sub.position(),
            through(1),
            "mid-entry: the end of the entry taken"
        );
        assert_eq!(sub.next().await.unwrap().key, "b");
        assert_eq!(sub.position(), through(3));
        // An event published after the position was read: the position stays until it is
        // taken, and never goes back.
        feed.publish([ev(w(4, 0), "c")]);
        feed.advance(through(4));
        assert_eq!(sub.position(), through(3));
        assert_eq!(sub.next().await.unwrap().key, "c");
        assert_eq!(sub.position(), through(4));
    }

    #[tokio::test]
    async fn a_stalled_watch_pins_only_its_entry() {
        let feed = Feed::new(
            WindowLimits {
                events: 10_000,
                bytes: 100 * KIB,
            },
            0,
        );
        let mut stalled = feed.subscribe(0).unwrap();
        feed.publish([big(w(1, 0), "a", 10 * KIB)]);
        let first = stalled.next().await.unwrap();
        for index in 2..=100 {
            feed.publish([big(w(index, 0), "k", 10 * KIB)]);
        }
        // The window dropped 1..=96; nothing but the test's handle holds event 1, and the
        // watch holds no copy of what it has not taken.
        assert_eq!(Arc::strong_count(&first), 1);
        assert!(feed.held().1 <= 100 * KIB);
        assert_eq!(stalled.next().await.unwrap_err(), WatchEnd::Lagged);
    }

    #[tokio::test]
    async fn a_waiting_watch_wakes_on_publish_and_ends_when_the_feed_closes() {
        let feed = Feed::new(limit(10), 0);
        let mut sub = feed.subscribe(0).unwrap();
        let waiter = tokio::spawn(async move {
            let e = sub.next().await.unwrap();
            (e.rv, sub.next().await.unwrap_err())
        });
        tokio::task::yield_now().await;
        feed.publish([ev(w(1, 0), "a")]);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(feed);
        assert_eq!(waiter.await.unwrap(), (w(1, 0), WatchEnd::Closed));
    }
}
