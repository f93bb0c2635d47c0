//! The change feed: every change that apply makes, in log order, with a bounded replay window.
//!
//! Watches subscribe from a resource version N and receive every event with `rv > N`: first
//! the backlog still held in the window, then live events. Subscribing and publishing take the
//! same lock, so the hand-over from backlog to live has no gap and no duplicate. A version below
//! the window's floor is [`Expired`] (HTTP 410 Gone), as Kubernetes clients expect; they
//! re-list. The window lives in memory only: after a restart or a snapshot install its floor is
//! the applied index at that moment.
//!
//! One log entry can change several keys (`Command::Batch`): those events share a resource
//! version. A client resumes a watch from the version of the last event it saw, so a stream cut
//! between two events of one entry would skip the rest of it; [`Subscription::next_index`] hands
//! out an entry's events together, and live subscribers receive each publish (whole entries) as
//! one item, so the end of an entry is known without waiting for the next one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

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
    /// Resource version: the log index of the entry that made the change.
    pub rv: u64,
    pub kind: EventKind,
    pub key: String,
    /// The new value; for a delete, the value the key held.
    pub value: Bytes,
    /// The previous value of an update or delete.
    pub prev: Option<Bytes>,
}

/// Items on the live channel.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// The events of one publish: whole log entries, in order.
    Events(Arc<[Arc<Event>]>),
    /// The state was replaced by a snapshot: every watch must end and re-list.
    Reset,
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
    events: VecDeque<Arc<Event>>,
    /// Every event with `rv > floor` is in `events`.
    floor: u64,
    /// Highest resource version published.
    head: u64,
}

/// The change feed of one master.
pub struct Feed {
    window: Mutex<Window>,
    capacity: usize,
    tx: broadcast::Sender<FeedItem>,
}

impl Feed {
    /// A feed holding up to `capacity` events, starting after resource version `floor`.
    pub fn new(capacity: usize, floor: u64) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(1024, 65536));
        Feed {
            window: Mutex::new(Window {
                events: VecDeque::new(),
                floor,
                head: floor,
            }),
            capacity: capacity.max(1),
            tx,
        }
    }

    /// Publishes events (in log order) to the window and the live subscribers.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut w = self.window.lock().expect("feed lock");
        let events: Arc<[Arc<Event>]> = events.into_iter().map(Arc::new).collect();
        if events.is_empty() {
            return;
        }
        for event in events.iter() {
            w.head = w.head.max(event.rv);
            w.events.push_back(event.clone());
            while w.events.len() > self.capacity {
                let evicted = w.events.pop_front().expect("non-empty");
                w.floor = w.floor.max(evicted.rv);
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(FeedItem::Events(events));
    }

    /// Forgets the window: the state now stands at `applied`, reached without events.
    pub fn reset(&self, applied: u64) {
        let mut w = self.window.lock().expect("feed lock");
        w.events.clear();
        w.floor = applied;
        w.head = applied;
        let _ = self.tx.send(FeedItem::Reset);
    }

    /// The oldest resource version a watch can start from, and the newest published.
    pub fn bounds(&self) -> (u64, u64) {
        let w = self.window.lock().expect("feed lock");
        (w.floor, w.head)
    }

    /// Subscribes to every event with `rv > from`.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, Expired> {
        let w = self.window.lock().expect("feed lock");
        if from < w.floor {
            return Err(Expired {
                requested: from,
                floor: w.floor,
            });
        }
        let backlog: VecDeque<Arc<Event>> =
            w.events.iter().filter(|e| e.rv > from).cloned().collect();
        Ok(Subscription {
            backlog,
            rx: self.tx.subscribe(),
            from,
        })
    }
}

/// A live subscription: the backlog first, then live events.
pub struct Subscription {
    backlog: VecDeque<Arc<Event>>,
    rx: broadcast::Receiver<FeedItem>,
    from: u64,
}

impl Subscription {
    /// The next event, in order.
    pub async fn next(&mut self) -> Result<Arc<Event>, WatchEnd> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                return Ok(e);
            }
            self.receive().await?;
        }
    }

    /// Every event of the next log entry that changed something (they share its resource
    /// version), in order: a watch that sends them together never leaves a client between two
    /// events of one version.
    pub async fn next_index(&mut self) -> Result<Vec<Arc<Event>>, WatchEnd> {
        let first = self.next().await?;
        let mut entry = vec![first];
        // The backlog and every live item hold whole entries.
        while self.backlog.front().is_some_and(|e| e.rv == entry[0].rv) {
            entry.extend(self.backlog.pop_front());
        }
        Ok(entry)
    }

    /// Moves the next live item's events (those after `from`) to the backlog.
    async fn receive(&mut self) -> Result<(), WatchEnd> {
        match self.rx.recv().await {
            Ok(FeedItem::Events(events)) => {
                let from = self.from;
                self.backlog
                    .extend(events.iter().filter(|e| e.rv > from).cloned());
                Ok(())
            }
            Ok(FeedItem::Reset) => Err(WatchEnd::Reset),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(WatchEnd::Lagged),
            Err(broadcast::error::RecvError::Closed) => Err(WatchEnd::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rv: u64, key: &str) -> Event {
        Event {
            rv,
            kind: EventKind::Created,
            key: key.into(),
            value: Bytes::new(),
            prev: None,
        }
    }

    #[tokio::test]
    async fn backlog_then_live_without_gap() {
        let feed = Feed::new(10, 0);
        feed.publish([ev(1, "a"), ev(2, "b"), ev(3, "c")]);
        let mut sub = feed.subscribe(1).unwrap();
        feed.publish([ev(4, "d")]);
        let got: Vec<u64> = [sub.next().await, sub.next().await, sub.next().await]
            .into_iter()
            .map(|e| e.unwrap().rv)
            .collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn versions_below_the_window_expire() {
        let feed = Feed::new(2, 5);
        assert!(matches!(
            feed.subscribe(4),
            Err(Expired {
                requested: 4,
                floor: 5
            })
        ));
        feed.publish([ev(6, "a"), ev(7, "b"), ev(8, "c")]);
        assert_eq!(feed.bounds(), (6, 8));
        assert!(feed.subscribe(5).is_err());
        let mut sub = feed.subscribe(6).unwrap();
        assert_eq!(sub.next().await.unwrap().rv, 7);
    }

    #[tokio::test]
    async fn an_entry_comes_whole() {
        let feed = Feed::new(10, 0);
        feed.publish([ev(1, "a"), ev(2, "b"), ev(2, "c")]);
        // From the window: entry 2 together.
        let mut sub = feed.subscribe(1).unwrap();
        let keys = |events: Vec<Arc<Event>>| -> Vec<String> {
            events.iter().map(|e| e.key.clone()).collect()
        };
        assert_eq!(keys(sub.next_index().await.unwrap()), ["b", "c"]);
        // Live: entries 3 (three keys) and 4 in one publish.
        feed.publish([ev(3, "d"), ev(3, "e"), ev(3, "f"), ev(4, "g")]);
        assert_eq!(keys(sub.next_index().await.unwrap()), ["d", "e", "f"]);
        assert_eq!(keys(sub.next_index().await.unwrap()), ["g"]);
    }

    #[tokio::test]
    async fn reset_ends_watches() {
        let feed = Feed::new(10, 0);
        let mut sub = feed.subscribe(0).unwrap();
        feed.reset(100);
        assert_eq!(sub.next().await.unwrap_err(), WatchEnd::Reset);
        assert!(feed.subscribe(99).is_err());
        assert!(feed.subscribe(100).is_ok());
    }
}
