//! Watch streams of API objects: one compact JSON event per line, flushed as it happens.
//!
//! From a resource version N the stream carries every change after N (from the master's change
//! feed); with N unset or "0" it starts with a synthetic `ADDED` per object currently matching.
//! With selectors, an object that stops matching is sent as `DELETED` and one that starts
//! matching as `ADDED`, as the Kubernetes API server does. A version older than the feed's
//! window is an `ERROR` event carrying a 410 `Expired` Status.
//!
//! Events of one log entry (a `Batch` writing several objects, as the scheduler's) go out as one
//! chunk, each with its own resource version. A bookmark names the subscription's position
//! (`Subscription::position`): the end of the last entry taken or, once every event is taken,
//! the applied state's version, so a watch reaches a list's version even when the last entries
//! changed nothing (a new leader's blank entry).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use keelson_raft::feed::{Event, EventKind, Subscription};
use serde_json::{json, Value};

use super::metrics::{ApiMetrics, OpenWatch};
use super::ApiError;
use crate::registry::selectors::{FieldSelector, LabelSelector};
use crate::registry::{self, ResourceInfo};

/// What a watch follows.
pub struct WatchSpec {
    pub info: &'static ResourceInfo,
    /// Storage prefix (collection, or one object's key).
    pub prefix: String,
    /// Exact key to follow (watch on one object), else every key under `prefix`.
    pub exact: bool,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` or `Some(0)`: start with the current state.
    pub from: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Turns an internal object into what the client sees (version conversion, a Table);
    /// `None` sends it as stored, encoded once for every watcher.
    pub render: Option<Render>,
}

/// What a watch sends for an object, when it is not the object itself.
pub type Render = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

fn line(kind: &str, object: Value) -> Bytes {
    line_of(kind, &serde_json::to_vec(&object).expect("json"))
}

/// The event line for an object already encoded as JSON.
fn line_of(kind: &str, object: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(object.len() + 32);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(kind.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    v.extend_from_slice(object);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

/// The object after a change (for a delete, its last state) with its resource version, or
/// `None` when it does not decode.
fn object_after(e: &Event) -> Option<Value> {
    let v = serde_json::from_slice::<Value>(&e.value).ok()?;
    Some(registry::with_rv(v, e.rv))
}

/// A feed event's object as a watch without selectors or renderer sends it, encoded once per
/// event and shared by every such watcher through the event's memo: a thousand watches of a
/// change decode and encode it once. Only the JSON is kept (about the size of the stored
/// value), not the decoded object, so the window's events carry little more than their bytes.
struct Encoded(Option<Bytes>);

impl Encoded {
    fn of(e: &Event) -> Encoded {
        Encoded(object_after(e).map(|v| Bytes::from(serde_json::to_vec(&v).expect("json"))))
    }
}

fn expired(message: String) -> Bytes {
    let status = ApiError::new(axum::http::StatusCode::GONE, "Expired", message).to_status();
    line("ERROR", status)
}

struct State {
    spec: WatchSpec,
    sub: Subscription,
    bookmark_tick: tokio::time::Interval,
    deadline: Option<tokio::time::Instant>,
    metrics: ApiMetrics,
    _open: OpenWatch,
    done: bool,
}

impl WatchSpec {
    fn rendered(&self, v: Value) -> Value {
        match &self.render {
            Some(render) => render(&v),
            None => v,
        }
    }
}

impl State {
    fn matches(&self, v: &Value) -> bool {
        self.spec.labels.matches_object(v) && self.spec.fields.matches(v)
    }

    fn in_scope(&self, e: &Event) -> bool {
        if self.spec.exact {
            e.key == self.spec.prefix
        } else {
            e.key.starts_with(&self.spec.prefix)
        }
    }

    /// The line for one feed event, if the client should see it.
    fn translate(&self, e: &Event) -> Option<Bytes> {
        let everything = self.spec.labels.0.is_empty() && self.spec.fields.0.is_empty();
        if everything && self.spec.render.is_none() {
            // Every change is the client's, as it is: the event's shared encoding.
            let kind = match e.kind {
                EventKind::Created => "ADDED",
                EventKind::Updated => "MODIFIED",
                EventKind::Deleted => "DELETED",
            };
            let shared = e.memo.get_or_init(|| Encoded::of(e));
            return match shared {
                Some(enc) => enc.0.as_ref().map(|json| line_of(kind, json)),
                None => Encoded::of(e).0.map(|json| line_of(kind, &json)),
            };
        }
        let now = object_after(e)?;
        let before = e
            .prev
            .as_ref()
            .and_then(|p| serde_json::from_slice::<Value>(&p.value).ok());
        let (was, is) = (
            before.as_ref().is_some_and(|b| self.matches(b)),
            self.matches(&now),
        );
        let kind = match e.kind {
            EventKind::Created if is => "ADDED",
            EventKind::Updated if was && is => "MODIFIED",
            EventKind::Updated if is => "ADDED",
            EventKind::Updated if was => "DELETED",
            EventKind::Deleted if is => "DELETED",
            _ => return None,
        };
        Some(line(kind, self.spec.rendered(now)))
    }
}

/// Options of a core/v1 watch beyond what every watch has.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Watch-list (`sendInitialEvents=true`): the current state as `ADDED` events whatever
    /// the resource version, then a `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`.
    pub send_initial_events: bool,
}

/// The annotation of the bookmark that ends a watch-list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut object = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        object["metadata"]["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    line("BOOKMARK", object)
}

/// Starts a watch: the HTTP response streaming events.
pub fn serve(
    node: &keelson_raft::RaftNode,
    spec: WatchSpec,
    metrics: ApiMetrics,
) -> Result<Response, ApiError> {
    serve_with(node, spec, WatchOptions::default(), metrics)
}

/// Starts a watch with core/v1's options.
pub fn serve_with(
    node: &keelson_raft::RaftNode,
    spec: WatchSpec,
    options: WatchOptions,
    metrics: ApiMetrics,
) -> Result<Response, ApiError> {
    let mut initial: Vec<Bytes> = Vec::new();
    let from = if options.send_initial_events {
        None
    } else {
        spec.from
    };
    let sub = match from {
        None | Some(0) => {
            let (items, rv, sub) = node.store.list_and_subscribe(&spec.prefix);
            for (k, r) in &items {
                if spec.exact && *k != spec.prefix {
                    continue;
                }
                let Some(v) = registry::decode_records([(k.as_str(), r)]).pop() else {
                    continue;
                };
                if spec.labels.matches_object(&v) && spec.fields.matches(&v) {
                    initial.push(line("ADDED", spec.rendered(v)));
                }
            }
            if options.send_initial_events {
                initial.push(bookmark(spec.info, rv, true));
            }
            sub
        }
        Some(n) => match node.watch(n) {
            Ok(sub) => sub,
            Err(e) => {
                // As the API server does: a 200 stream with one ERROR event.
                let body = Body::from(expired(e.to_string()));
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
        },
    };
    let open = OpenWatch::new(&metrics);
    let mut bookmark_tick = tokio::time::interval(Duration::from_secs(1));
    bookmark_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let state = State {
        spec,
        sub,
        bookmark_tick,
        deadline,
        metrics,
        _open: open,
        done: false,
    };
    let live = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let timeout = async {
                match st.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                next = st.sub.next_index() => match next {
                    Ok(entry) => {
                        // One chunk per log entry. Every event has its own version, so a
                        // client resuming from any version it was sent gets exactly what
                        // follows; a bookmark names the subscription's position.
                        let lines: Vec<Bytes> = entry
                            .iter()
                            .filter(|e| st.in_scope(e))
                            .filter_map(|e| st.translate(e))
                            .collect();
                        if !lines.is_empty() {
                            st.metrics.watch_events.inc_by(lines.len() as u64);
                            return Some((Bytes::from(lines.concat()), st));
                        }
                    }
                    Err(end) => {
                        st.done = true;
                        return Some((expired(end.to_string()), st));
                    }
                },
                _ = st.bookmark_tick.tick(), if st.spec.bookmarks => {
                    let at = st.sub.position();
                    return Some((bookmark(st.spec.info, at, false), st));
                }
                _ = timeout => return None,
            }
        }
    });
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
