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
    report: Arc<Mutex<Report>>,
    task: tokio::task::JoinHandle<()>,
}

/// How a [`Writer`] writes.
pub struct Options {
    /// Bytes of each value.
    pub value_bytes: usize,
    /// Retry a create that certainly did not happen (connection refused, 503, 507) on the next
    /// master, and avoid the master that refused it for a second, as a client of a rolling
    /// restart does; an indeterminate outcome is never retried: it is a failure.
    pub retry: bool,
    /// Each create on a new connection: a refused connection then always means the request
    /// was not sent (a pooled one may be closed by a stopping master as a request goes out).
    pub fresh_connections: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            value_bytes: 1,
            retry: false,
            fresh_connections: false,
        }
    }
}

/// What a writer saw: the creates that failed (indeterminate, or refused for good) and the
/// time each acknowledged one took, retries included.
#[derive(Default)]
pub struct Report {
    pub failed: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Report {
    /// The `q` quantile of the latencies (0 with none).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

impl Writer {
    /// Starts writing through `urls` in turn (each create with a 2 s timeout).
    pub fn spawn(urls: Vec<String>, prefix: &'static str) -> Writer {
        Self::spawn_with(urls, prefix, Options::default())
    }

    /// [`Writer::spawn`] as `options` say.
    pub fn spawn_with(urls: Vec<String>, prefix: &'static str, options: Options) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let report = Arc::new(Mutex::new(Report::default()));
        let (s, a, r) = (stop.clone(), acked.clone(), report.clone());
        let task = tokio::spawn(async move {
            let clients: Vec<Kv> = urls
                .iter()
                .map(|u| {
                    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(2));
                    if options.fresh_connections {
                        b = b.pool_max_idle_per_host(0);
                    }
                    Kv::with_http(u, b.build().unwrap())
                })
                .collect();
            let value = "v".repeat(options.value_bytes);
            let n = clients.len();
            let mut avoid_until = vec![Instant::now(); n];
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("{prefix}{i:06}");
                let start = Instant::now();
                let mut attempt = i as usize;
                loop {
                    // The next master not refusing of late (any, when all are).
                    let now = Instant::now();
                    if let Some(k) = (0..n).find(|k| avoid_until[(attempt + k) % n] <= now) {
                        attempt += k;
                    }
                    let m = attempt % n;
                    match clients[m].create(&key, &value).await {
                        Ok(_) => {
                            a.lock().unwrap().push(key);
                            r.lock().unwrap().latencies.push(start.elapsed());
                        }
                        Err(e)
                            if options.retry
                                && e.is_definite_failure()
                                && e.code() != Some(409) =>
                        {
                            avoid_until[m] = Instant::now() + Duration::from_secs(1);
                            attempt += 1;
                            if !s.load(Ordering::Relaxed) {
                                // Around the masters once, then a pause.
                                if attempt % clients.len() == i as usize % clients.len() {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                continue;
                            }
                        }
                        Err(e) if options.retry => {
                            r.lock().unwrap().failed.push(format!("{key}: {e}"));
                        }
                        Err(_) => {}
                    }
                    break;
                }
                i += 1;
            }
        });
        Writer {
            stop,
            acked,
            report,
            task,
        }
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
        self.stop_with_report().await.0
    }

    /// Stops writing; the keys acknowledged, and what was seen.
    pub async fn stop_with_report(self) -> (Vec<String>, Report) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let report = std::mem::take(&mut *self.report.lock().unwrap());
        (acked, report)
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
