//! A writer that records every acknowledged create, and the check that none of them was lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keelson_chaos::Kv;

/// Creates `PREFIX000000`, `PREFIX000001`, … in a loop, rotating over masters, and records the
/// keys whose create was acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts writing through `urls` in turn (each create with a 2 s timeout).
    pub fn spawn(urls: Vec<String>, prefix: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let clients: Vec<Kv> = urls
                .iter()
                .map(|u| Kv::new(u, Duration::from_secs(2)))
                .collect();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("{prefix}{i:06}");
                if clients[i as usize % clients.len()]
                    .create(&key, "v")
                    .await
                    .is_ok()
                {
                    a.lock().unwrap().push(key);
                }
                i += 1;
            }
        });
        Writer { stop, acked, task }
    }

    /// Creates acknowledged so far.
    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further creates are acknowledged; panics after 60 s.
    pub async fn wait_more(&self, more: usize) {
        let want = self.count() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count() < want {
            assert!(
                Instant::now() < deadline,
                "writer stalled at {}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops writing; the keys acknowledged.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Asserts that every key of `acked` is stored under `prefix`, read through `url`; returns
/// the keys stored.
pub async fn assert_none_lost(url: &str, prefix: &str, acked: &[String]) -> BTreeSet<String> {
    let (items, _) = Kv::new(url, Duration::from_secs(10))
        .list(prefix, false)
        .await
        .unwrap();
    let stored: BTreeSet<String> = items.into_iter().map(|(k, _, _)| k).collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    stored
}
