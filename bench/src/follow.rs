//! The bench's view of the pods: an informer's cache (`keelson-informer`) fed by list and watch
//! on the masters, whose changes are reported with the moment the bench process saw them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use keelson_informer::remote::{self, Source};
use keelson_informer::{Cache, Facts};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::harness::name_of;

/// What the pod follower reports, with the moment the bench process read it.
pub enum PodEvent {
    /// A (re-)list is in the cache: the whole current set.
    Listed(Vec<Value>, Instant),
    Changed(Value, Instant),
    Deleted(Value, Instant),
}

/// A pod in the follower's cache: the whole object, which every event reports, decoded once.
struct Pod(Value);

impl Facts for Pod {
    const PLURAL: &'static str = "pods";
    fn from_object(pod: &Value) -> Self {
        Pod(pod.clone())
    }
}

/// Lists and watches on one master at a time, moving to the next when one fails or a watch is
/// silent for 5 s (bookmarks come every second): the bench kills masters.
struct Masters {
    urls: Vec<String>,
    http: reqwest::Client,
    next: AtomicUsize,
}

const SILENCE: Duration = Duration::from_secs(5);

impl Masters {
    fn url(&self, path: &str) -> String {
        let urls = &self.urls;
        format!(
            "{}{path}",
            urls[self.next.load(Ordering::Relaxed) % urls.len()]
        )
    }

    fn failed<T>(&self, e: impl std::fmt::Display) -> Result<T, String> {
        self.next.fetch_add(1, Ordering::Relaxed);
        Err(e.to_string())
    }
}

impl Source for Masters {
    fn list(&self, path: String) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let resp = self
                .http
                .get(self.url(&path))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => match r.json().await {
                    Ok(v) => Ok(v),
                    Err(e) => self.failed(e),
                },
                Ok(r) => self.failed(format!("list: {}", r.status())),
                Err(e) => self.failed(e),
            }
        })
    }

    fn watch(&self, path: String) -> BoxFuture<'_, Result<BoxStream<'static, Value>, String>> {
        Box::pin(async move {
            let resp = match self.http.get(self.url(&path)).send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return self.failed(format!("watch: {}", r.status())),
                Err(e) => return self.failed(e),
            };
            // Ended, broke or went silent: the follower watches again, elsewhere.
            Ok(remote::events(resp.bytes_stream(), Some(SILENCE)))
        })
    }
}

/// Follows the pods of `namespace` (with `selector`, a label selector, if not empty) on the
/// masters at `urls`: every change the cache sees goes to the returned channel, and after each
/// (re-)list the whole set. The task ends when the receiver is gone.
pub fn follow_pods(
    urls: Vec<String>,
    namespace: &str,
    selector: &str,
) -> (
    mpsc::UnboundedReceiver<PodEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let collection = format!("/api/v1/namespaces/{namespace}/pods");
    let query = match selector {
        "" => String::new(),
        s => format!("labelSelector={}", keelson_model::url::enc(s)),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let source = Arc::new(Masters {
        urls,
        http,
        next: AtomicUsize::new(0),
    });
    let cache: Arc<Cache<Pod>> = Arc::default();
    let guard = cache.on_change({
        let tx = tx.clone();
        move |old, new| {
            let now = Instant::now();
            let _ = tx.send(match (old, new) {
                (_, Some(new)) => PodEvent::Changed(new.facts.0.clone(), now),
                (Some(old), None) => PodEvent::Deleted(old.facts.0.clone(), now),
                (None, None) => return,
            });
        }
    });
    let task = tokio::spawn(async move {
        let _guard = guard;
        let receiver = tx.clone();
        let listed = {
            let cache = cache.clone();
            move || {
                let pods = cache.list().iter().map(|p| p.facts.0.clone()).collect();
                let _ = tx.send(PodEvent::Listed(pods, Instant::now()));
            }
        };
        let follow = remote::follow(source, &collection, &query, cache.clone(), listed);
        tokio::select! {
            _ = follow => {}
            _ = receiver.closed() => {}
        }
    });
    (rx, task)
}

/// Pods by name, as a [`follow_pods`] stream last told, and how many (re-)lists it took.
#[derive(Default)]
pub struct PodView {
    pub pods: HashMap<String, Value>,
    pub lists: usize,
}

impl PodView {
    /// Applies one event; returns the pods that changed (for a list: every pod listed) with
    /// the event's time.
    pub fn apply(&mut self, ev: PodEvent) -> (Vec<Value>, Instant) {
        match ev {
            PodEvent::Listed(items, at) => {
                self.lists += 1;
                self.pods = items.iter().map(|p| (name_of(p), p.clone())).collect();
                (items, at)
            }
            PodEvent::Changed(p, at) => {
                self.pods.insert(name_of(&p), p.clone());
                (vec![p], at)
            }
            PodEvent::Deleted(p, at) => {
                self.pods.remove(&name_of(&p));
                (Vec::new(), at)
            }
        }
    }
}
