//! The controllers' work queue, with client-go's workqueue semantics: a key is queued at most
//! once however often it is added; a key being processed is not handed out again until it is
//! [`done`](WorkQueue::done) (added meanwhile, it is queued again then); failures are retried
//! after an exponential back-off; [`shut_down`](WorkQueue::shut_down) ends every wait.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry's back-off; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct State<K> {
    /// Keys to hand out, in the order they were first added.
    queue: VecDeque<K>,
    /// Every key in `queue` or being processed and added again.
    dirty: HashSet<K>,
    processing: HashSet<K>,
    /// Keys to add at an instant.
    delayed: BTreeMap<(Instant, u64), K>,
    seq: u64,
    failures: HashMap<K, u32>,
    shut: bool,
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    wake: Notify,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                delayed: BTreeMap::new(),
                seq: 0,
                failures: HashMap::new(),
                shut: false,
            }),
            wake: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: K) {
        let mut st = self.lock();
        if st.shut || !st.dirty.insert(key.clone()) {
            return;
        }
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut st = self.lock();
        if st.shut {
            return;
        }
        st.seq += 1;
        let at = (Instant::now() + delay, st.seq);
        st.delayed.insert(at, key);
        drop(st);
        self.wake.notify_one();
    }

    /// Queues `key` again after its back-off, which doubles with each failure in a row.
    pub fn retry(&self, key: K) {
        let n = {
            let mut st = self.lock();
            let n = st.failures.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        self.add_after(key, backoff(n));
    }

    /// Forgets `key`'s failures: its next retry waits the base back-off.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Up to `max` keys, waiting for one; `None` once shut down. Each must be given back with
    /// [`WorkQueue::done`].
    pub async fn take(&self, max: usize) -> Option<Vec<K>> {
        loop {
            let notified = self.wake.notified();
            let next_due = {
                let mut st = self.lock();
                if st.shut {
                    return None;
                }
                st.promote_due();
                if !st.queue.is_empty() {
                    let n = st.queue.len().min(max.max(1));
                    let keys: Vec<K> = st.queue.drain(..n).collect();
                    for k in &keys {
                        st.dirty.remove(k);
                        st.processing.insert(k.clone());
                    }
                    // Another taker may find more.
                    if !st.queue.is_empty() {
                        self.wake.notify_one();
                    }
                    return Some(keys);
                }
                st.delayed.keys().next().map(|(at, _)| *at)
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Gives `key` back after processing; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) && !st.shut {
            st.queue.push_back(key.clone());
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Keys queued now (not delayed, not being processed).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when no key is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every wait; later adds are ignored.
    pub fn shut_down(&self) {
        self.lock().shut = true;
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().expect("queue lock")
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Moves delayed keys whose time has come into the queue.
    fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if self.dirty.insert(key.clone()) && !self.processing.contains(&key) {
                self.queue.push_back(key);
            }
        }
    }
}

/// The back-off before the `n`th retry in a row (n ≥ 1).
pub fn backoff(n: u32) -> Duration {
    BASE_BACKOFF
        .saturating_mul(1u32 << (n - 1).min(20))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_handed_out_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(10).await, Some(vec!["a", "b"]));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = WorkQueue::default();
        q.add(1);
        assert_eq!(q.take(1).await, Some(vec![1]));
        q.add(1);
        q.add(1);
        // Not handed out while being processed.
        assert!(q.is_empty());
        q.done(&1);
        assert_eq!(q.take(5).await, Some(vec![1]));
        q.done(&1);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failures_back_off_exponentially_and_forget_resets() {
        assert_eq!(backoff(1), BASE_BACKOFF);
        assert_eq!(backoff(3), BASE_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
        let q = WorkQueue::default();
        let start = Instant::now();
        q.retry("k");
        q.retry("k");
        assert!(q.is_empty(), "not before its back-off");
        let taken = q.take(1).await;
        assert_eq!(taken, Some(vec!["k"]));
        assert!(start.elapsed() >= BASE_BACKOFF);
        assert_eq!(q.lock().failures[&"k"], 2);
        q.done(&"k");
        q.forget(&"k");
        assert!(q.lock().failures.is_empty());
        q.retry("k");
        assert_eq!(q.lock().failures[&"k"], 1, "back to the base back-off");
        let before = Instant::now();
        q.take(1).await;
        assert!(before.elapsed() >= BASE_BACKOFF);
    }

    #[tokio::test]
    async fn shut_down_ends_waits_and_ignores_adds() {
        let q = std::sync::Arc::new(WorkQueue::<u8>::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.take(1).await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
        q.add(3);
        assert_eq!(q.take(1).await, None);
    }
}
