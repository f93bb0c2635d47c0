//! A cache fed by list and watch over the API, as client-go's reflector feeds an informer: a
//! list, then a watch from the list's resource version (with bookmarks, so the version moves
//! on while nothing changes); when the watch ends, a new one from the last version seen; when
//! that version has expired (an `ERROR` event) or no watch can be opened, a list again, which
//! the cache diffs against what it held, so its handlers still see every change.
//!
//! The transport is the caller's ([`Source`]): the agent's client (any master, failing over,
//! with its token and CA), the bench's plain one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use keelson_raft::command::Record;
use serde_json::Value;

use crate::cache::{Cache, Facts};

/// Where a follower lists and watches.
pub trait Source: Send + Sync + 'static {
    /// GETs `path` (a list) and returns its body.
    fn list(&self, path: String) -> BoxFuture<'_, Result<Value, String>>;
    /// Opens the watch at `path` and returns its events, one JSON object each.
    fn watch(&self, path: String) -> BoxFuture<'_, Result<BoxStream<'static, Value>, String>>;
}

/// The first and longest pause between failed attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Follows the collection at `collection` (`/api/v1/pods`), narrowed by `query` (selectors, or
/// empty), into `cache`, for ever. `on_listed` runs after each list is in the cache: from the
/// first, the cache holds a whole state, not a partial one.
pub async fn follow<T: Facts>(
    source: Arc<dyn Source>,
    collection: &str,
    query: &str,
    cache: Arc<Cache<T>>,
    on_listed: impl Fn() + Send,
) {
    let path = |extra: &str| {
        let q: Vec<&str> = [query, extra]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        match q.is_empty() {
            true => collection.to_string(),
            false => format!("{collection}?{}", q.join("&")),
        }
    };
    let mut backoff = BACKOFF.0;
    let pause = |backoff: &mut Duration| {
        let now = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF.1);
        tokio::time::sleep(now)
    };
    loop {
        let list = match source.list(path("")).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!("informer: list {collection}: {e}");
                pause(&mut backoff).await;
                continue;
            }
        };
        // A body cut short is no list: taken as one, it would empty the cache.
        let (Some(rv), Some(items)) = (
            list.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
            list["items"].as_array(),
        ) else {
            tracing::debug!("informer: list {collection}: not a list");
            pause(&mut backoff).await;
            continue;
        };
        let mut rv = rv.to_string();
        cache.replace(items.iter().filter_map(record_of::<T>).collect());
        on_listed();
        backoff = BACKOFF.0;
        // Watches from `rv` until one cannot be opened or its version is gone.
        loop {
            let opened = tokio::time::Instant::now();
            let watch = path(&format!(
                "watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
            ));
            let mut events = match source.watch(watch).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::debug!("informer: watch {collection}: {e}");
                    break;
                }
            };
            let mut gone = false;
            while let Some(ev) = events.next().await {
                let object = &ev["object"];
                match ev["type"].as_str() {
                    Some("ADDED" | "MODIFIED" | "DELETED") => {
                        let Some((key, record)) = record_of::<T>(object) else {
                            continue;
                        };
                        rv = record.mod_rv.to_string();
                        let deleted = ev["type"] == "DELETED";
                        cache.apply(&key, (!deleted).then_some(record));
                    }
                    Some("BOOKMARK") => {
                        if let Some(v) = object
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                        {
                            rv = v.to_string();
                        }
                    }
                    Some("ERROR") => {
                        // 410 Gone: the version left the window; anything else, start over too.
                        tracing::debug!("informer: watch {collection}: {object}");
                        gone = true;
                        break;
                    }
                    _ => {}
                }
            }
            if gone {
                break;
            }
            // The watch ended (a master went away, or timed it out): resume where it stopped,
            // at once unless it ended as soon as it opened.
            if opened.elapsed() < Duration::from_secs(1) {
                pause(&mut backoff).await;
            } else {
                backoff = BACKOFF.0;
            }
        }
        pause(&mut backoff).await;
    }
}

/// The events of a watch response's body, one JSON object per line, until the body ends or
/// breaks, or (with `silence`) sends nothing for that long: a master that went away without
/// closing the connection sends no more bookmarks.
pub fn events<E: Send + 'static>(
    body: impl futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    silence: Option<Duration>,
) -> BoxStream<'static, Value> {
    let lines = (Box::pin(body), Vec::<u8>::new());
    futures::stream::unfold(lines, move |(mut body, mut buf)| async move {
        loop {
            if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(event) => return Some((event, (body, buf))),
                    Err(_) => continue,
                }
            }
            let chunk = match silence {
                Some(d) => tokio::time::timeout(d, body.next()).await.ok().flatten(),
                None => body.next().await,
            };
            match chunk {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    })
    .boxed()
}

/// The storage key and record of an object read from the API: its bytes as sent, its version.
pub fn record_of<T: Facts>(object: &Value) -> Option<(String, Record)> {
    let meta = object.get("metadata")?;
    let name = meta.get("name").and_then(Value::as_str)?;
    let key = match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => format!("/registry/{}/{ns}/{name}", T::PLURAL),
        _ => format!("/registry/{}/{name}", T::PLURAL),
    };
    let mod_rv = meta
        .get("resourceVersion")
        .and_then(Value::as_str)?
        .parse()
        .ok()?;
    let value = Bytes::from(serde_json::to_vec(object).ok()?);
    Some((
        key,
        Record {
            value,
            // Caches do not serve creation versions.
            create_rv: 0,
            mod_rv,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    struct Named;
    impl Facts for Named {
        const PLURAL: &'static str = "pods";
        fn from_object(_: &Value) -> Self {
            Named
        }
    }

    fn pod(name: &str, rv: u64) -> Value {
        json!({"metadata": {"namespace": "default", "name": name, "resourceVersion": rv.to_string()}})
    }

    /// Answers lists and watches from scripts, and records what was asked.
    #[derive(Default)]
    struct Script {
        lists: Mutex<VecDeque<Value>>,
        watches: Mutex<VecDeque<Vec<Value>>>,
        asked: Mutex<Vec<String>>,
    }

    impl Source for Script {
        fn list(&self, path: String) -> BoxFuture<'_, Result<Value, String>> {
            self.asked.lock().unwrap().push(path);
            let next = self.lists.lock().unwrap().pop_front();
            Box::pin(async move { next.ok_or_else(|| "no more lists".to_string()) })
        }
        fn watch(&self, path: String) -> BoxFuture<'_, Result<BoxStream<'static, Value>, String>> {
            self.asked.lock().unwrap().push(path);
            let next = self.watches.lock().unwrap().pop_front();
            Box::pin(async move {
                match next {
                    Some(events) => Ok(futures::stream::iter(events).boxed()),
                    None => Err("no more watches".to_string()),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_lines_until_the_body_ends_or_falls_silent() {
        let chunks: Vec<Result<Bytes, ()>> = vec![
            Ok(Bytes::from_static(b"{\"type\":\"ADDED\"}\n{\"ty")),
            Ok(Bytes::from_static(b"pe\":\"BOOKMARK\"}\nnot json\n")),
        ];
        let got: Vec<Value> = events(futures::stream::iter(chunks.clone()), None)
            .collect()
            .await;
        assert_eq!(got, [json!({"type": "ADDED"}), json!({"type": "BOOKMARK"})]);
        let silent = futures::stream::iter(chunks).chain(futures::stream::pending());
        let got: Vec<Value> = events(silent, Some(Duration::from_secs(5))).collect().await;
        assert_eq!(got.len(), 2, "ends when nothing comes for 5 s");
    }

    /// A list, a watch that ends (resumed from its last bookmark, not re-listed), a watch whose
    /// version expired (re-listed: the cache diffs, so the deletion the watch missed shows).
    #[tokio::test(start_paused = true)]
    async fn lists_watches_resumes_and_relists() {
        let script = Arc::new(Script::default());
        script.lists.lock().unwrap().extend([
            // A body cut short: not taken as an empty list.
            Value::Null,
            json!({"metadata": {"resourceVersion": "10"}, "items": [pod("a", 5), pod("b", 7)]}),
            json!({"metadata": {"resourceVersion": "40"}, "items": [pod("a", 30)]}),
        ]);
        script.watches.lock().unwrap().extend([
            vec![
                json!({"type": "MODIFIED", "object": pod("a", 11)}),
                json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}),
            ],
            vec![
                json!({"type": "ADDED", "object": pod("c", 16)}),
                json!({"type": "ERROR", "object": {"code": 410}}),
            ],
        ]);
        let cache: Arc<Cache<Named>> = Arc::new(Cache::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let _guard = cache.on_change({
            let seen = seen.clone();
            move |old, new| {
                let what = match (old, new) {
                    (_, Some(n)) => format!("{}@{}", n.key, n.rv()),
                    (Some(o), None) => format!("-{}", o.key),
                    (None, None) => unreachable!(),
                };
                seen.lock().unwrap().push(what);
            }
        });
        let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let (source, cache, listed) = (
                script.clone() as Arc<dyn Source>,
                cache.clone(),
                listed.clone(),
            );
            async move {
                follow(
                    source,
                    "/api/v1/pods",
                    "fieldSelector=x",
                    cache,
                    move || {
                        listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    },
                )
                .await
            }
        });
        while listed.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let keys: Vec<String> = cache
            .list()
            .iter()
            .map(|i| format!("{}@{}", i.key, i.rv()))
            .collect();
        assert_eq!(keys, ["/registry/pods/default/a@30"]);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/registry/pods/default/a@5",
                "/registry/pods/default/b@7",
                "/registry/pods/default/a@11",
                "/registry/pods/default/c@16",
                "-/registry/pods/default/b",
                "-/registry/pods/default/c",
                "/registry/pods/default/a@30",
            ]
        );
        let asked = script.asked.lock().unwrap();
        assert_eq!(
            asked[..5],
            [
                "/api/v1/pods?fieldSelector=x",
                "/api/v1/pods?fieldSelector=x",
                "/api/v1/pods?fieldSelector=x&watch=true&allowWatchBookmarks=true&resourceVersion=10",
                "/api/v1/pods?fieldSelector=x&watch=true&allowWatchBookmarks=true&resourceVersion=15",
                "/api/v1/pods?fieldSelector=x",
            ]
        );
    }
}
