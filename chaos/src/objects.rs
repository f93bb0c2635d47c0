//! The controller workload: the seed's replication controller (`mysiteController`, posted in
//! the seed's own v1beta1 JSON) on hollow agents ([`crate::agents`]), scaled during the
//! campaign by one client ([`scaler`]), optionally a burst of more controllers created at the
//! start ([`create_burst`]), every pod change recorded by a pods watcher ([`pod_watcher`]) and
//! every controller change by a controllers watcher ([`rc_watcher`]), and the seed
//! controller's convergence after the heal ([`converge`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use keelson_model::owners::controller_uid;

use crate::checker::controller::{desired, live_pods};
use crate::client::KvError;
use crate::history::{BindingObs, BindingSource, Outcome, PodSeen, RcSeen, ScaleOp, Seen};
use crate::workload::Shared;

/// The seed's replication controller, as the seed wrote it (v1beta1).
pub const SEED_RC: &str = include_str!("../../examples/seed/replication-controller.json");
/// Where v1beta1 controllers are posted.
pub const V1BETA1_RCS: &str = "/api/v1beta1/replicationControllers";
pub const NAMESPACE: &str = "default";
/// The seed controller's name (its v1beta1 `id`).
pub const RC_NAME: &str = "mysiteController";
/// Its pods' label selector, URL-encoded.
const SELECTOR: &str = "name%3Dmysite";

fn rc_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/replicationcontrollers/{RC_NAME}")
}

/// The seed controller's `desiredState.replicas`.
pub fn seed_replicas() -> i64 {
    serde_json::from_str::<Value>(SEED_RC)
        .ok()
        .and_then(|v| v.pointer("/desiredState/replicas").and_then(Value::as_i64))
        .unwrap_or(1)
}

/// A JSON client of the object API on any master.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Api {
    pub fn new(timeout: Duration) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("http client"),
        }
    }

    /// `method base+path` with an optional body of content type `ct`.
    pub async fn call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, KvError> {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        crate::client::answer(req.send().await).await
    }

    pub async fn get(&self, base: &str, path: &str) -> Result<Value, KvError> {
        self.call(base, reqwest::Method::GET, path, None).await
    }
}

/// A list's or object's resource version.
fn rv_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Posts `body` to collection `coll` on any master until the object at `one` exists (a 409,
/// or a GET after an indeterminate create, counts as created), within 30 s.
async fn create_until_exists(
    shared: &Shared,
    coll: &str,
    one: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let api = Api::new(shared.timeout);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        for (_, url) in shared.members() {
            let r = api
                .call(
                    &url,
                    reqwest::Method::POST,
                    coll,
                    Some(("application/json", body.clone())),
                )
                .await;
            match r {
                Ok(_) | Err(KvError::Status { code: 409, .. }) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            // An indeterminate create may have been applied.
            if api.get(&url, one).await.is_ok() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("could not create {one}: {last}"))
}

/// Posts the seed's controller (v1beta1) until it exists; returns its initial replicas.
pub async fn create_controller(shared: &Shared) -> Result<i64, String> {
    let body = SEED_RC.as_bytes().to_vec();
    create_until_exists(shared, V1BETA1_RCS, &rc_path(), body).await?;
    Ok(seed_replicas())
}

/// The name of the `i`-th burst controller (from 1).
pub fn burst_name(i: u32) -> String {
    format!("chaos-burst-{i}")
}

/// The `i`-th burst controller (core/v1): `replicas` pods labelled `app=chaos-burst-i`.
pub fn burst_rc(i: u32, replicas: i64) -> Value {
    let name = burst_name(i);
    json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "burst", "image": "chaos/burst"}]}
            }
        }
    })
}

/// Creates `n` burst controllers of `replicas` replicas each, all at once (every create
/// retried on any master until it exists, within 30 s); returns their names.
pub async fn create_burst(shared: &Shared, n: u32, replicas: i64) -> Result<Vec<String>, String> {
    let creates = (1..=n).map(|i| async move {
        let name = burst_name(i);
        let coll = format!("/api/v1/namespaces/{NAMESPACE}/replicationcontrollers");
        let one = format!("{coll}/{name}");
        let body = serde_json::to_vec(&burst_rc(i, replicas)).expect("json");
        create_until_exists(shared, &coll, &one, body).await?;
        Ok(name)
    });
    futures::future::join_all(creates)
        .await
        .into_iter()
        .collect()
}

/// Sleeps `d` in slices, returning early (true) once `stop` says so.
async fn sleep_unless(d: Duration, stop: impl Fn() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop() {
            return true;
        }
        tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(100))).await;
    }
    stop()
}

/// Scales the controller to one of `values` (never its current value) every `every` (a random
/// duration in the range), through a random master, until [`Shared::stop_scale`]. Each scale
/// reads `.../scale` and patches it with the version read as a precondition, and is recorded.
pub async fn scaler(shared: Arc<Shared>, seed: u64, values: Vec<i64>, every: (Duration, Duration)) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5343_414c);
    let api = Api::new(shared.timeout);
    let path = format!("{}/scale", rc_path());
    let stopped = || shared.stop_scale.load(Ordering::Relaxed);
    loop {
        let pause = if every.1 > every.0 {
            rng.gen_range(every.0..=every.1)
        } else {
            every.0
        };
        if sleep_unless(pause, stopped).await {
            return;
        }
        let members = shared.members();
        if members.is_empty() {
            continue;
        }
        let url = members[rng.gen_range(0..members.len())].1.clone();
        let Ok(current) = api.get(&url, &path).await else {
            continue;
        };
        let now = current
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        let choices: Vec<i64> = values.iter().copied().filter(|v| *v != now).collect();
        if choices.is_empty() || stopped() {
            continue;
        }
        let replicas = choices[rng.gen_range(0..choices.len())];
        let expected_rv = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let body =
            json!({"metadata": {"resourceVersion": expected_rv}, "spec": {"replicas": replicas}});
        let invoke_us = shared.now_us();
        let r = api
            .call(
                &url,
                reqwest::Method::PATCH,
                &path,
                Some((
                    "application/merge-patch+json",
                    serde_json::to_vec(&body).expect("json"),
                )),
            )
            .await;
        let op = ScaleOp {
            replicas,
            expected_rv,
            invoke_us,
            complete_us: shared.now_us(),
            outcome: r.as_ref().map_or_else(Outcome::of_error, |_| Outcome::Ok),
            code: r.as_ref().err().and_then(KvError::code),
        };
        if let Ok(mut h) = shared.scales.lock() {
            h.push(op);
        }
    }
}

/// What a collection watcher (pods, controllers) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PodWatchLog {
    /// Watch connections that were answered with a stream.
    pub segments: usize,
    /// Lists (the first, and after every `ERROR`/410).
    pub lists: usize,
    /// The last version it had seen everything up to.
    pub reached_rv: u64,
}

/// The observation of `pod` at its resource version.
pub fn observe(shared: &Shared, pod: &Value, source: BindingSource) -> BindingObs {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    BindingObs {
        uid: s("/metadata/uid"),
        pod: format!("{}/{}", s("/metadata/namespace"), s("/metadata/name")),
        node: s("/spec/nodeName"),
        rv: rv_of(pod),
        phase: s("/status/phase"),
        t_us: shared.now_us(),
        source,
    }
}

fn str_of(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn ns_name(v: &Value) -> String {
    format!(
        "{}/{}",
        str_of(v, "/metadata/namespace"),
        str_of(v, "/metadata/name")
    )
}

/// `pod` as the over-replicas check needs it.
pub fn pod_seen(pod: &Value) -> PodSeen {
    PodSeen {
        uid: str_of(pod, "/metadata/uid"),
        pod: ns_name(pod),
        rv: rv_of(pod),
        owner: controller_uid(pod).unwrap_or("").to_string(),
        terminating: pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null()),
        phase: str_of(pod, "/status/phase"),
    }
}

/// `rc`'s desired replicas at its version.
pub fn rc_seen(rc: &Value) -> RcSeen {
    RcSeen {
        uid: str_of(rc, "/metadata/uid"),
        name: ns_name(rc),
        rv: rv_of(rc),
        replicas: desired(rc),
    }
}

/// What a collection watcher passes on, in the order it sees it.
pub enum Sight<'a> {
    /// The whole collection at a version.
    Listed(u64, &'a [Value]),
    /// `ADDED`, `MODIFIED`, `DELETED` and the object.
    Event(&'a str, &'a Value),
    /// A watch connection ended, having seen everything up to this version.
    Reached(u64),
}

/// Records what the pods watcher sees: bindings ([`crate::checker::controller::BoundOnce`])
/// and the pods' history ([`crate::checker::over_replicas`]).
fn record_pods(shared: &Shared, s: Sight<'_>) {
    let (obs, seen) = match s {
        Sight::Listed(rv, items) => (
            items
                .iter()
                .map(|p| observe(shared, p, BindingSource::List))
                .collect(),
            Seen::Listed {
                rv,
                items: items.iter().map(pod_seen).collect(),
            },
        ),
        Sight::Event(kind, pod) => (
            vec![observe(shared, pod, BindingSource::Watch)],
            Seen::Event {
                kind: kind.to_string(),
                item: pod_seen(pod),
            },
        ),
        Sight::Reached(rv) => (Vec::new(), Seen::Reached { rv }),
    };
    if let Ok(mut h) = shared.bindings.lock() {
        h.extend(obs);
    }
    if let Ok(mut h) = shared.pod_log.lock() {
        h.push(seen);
    }
}

/// Records what the controllers watcher sees.
fn record_rcs(shared: &Shared, s: Sight<'_>) {
    let seen = match s {
        Sight::Listed(rv, items) => Seen::Listed {
            rv,
            items: items.iter().map(rc_seen).collect(),
        },
        Sight::Event(kind, rc) => Seen::Event {
            kind: kind.to_string(),
            item: rc_seen(rc),
        },
        Sight::Reached(rv) => Seen::Reached { rv },
    };
    if let Ok(mut h) = shared.rc_log.lock() {
        h.push(seen);
    }
}

/// How long a watch may stay silent (bookmarks come every second) before the watcher moves to
/// another master.
const POD_WATCH_IDLE: Duration = Duration::from_secs(3);

/// Watches every pod (`/api/v1/pods`, all namespaces) for the whole campaign and records each
/// pod at every version it sees (its binding, owner, phase, deletion); see [`watch_all`].
pub async fn pod_watcher(shared: Arc<Shared>) -> PodWatchLog {
    watch_all(shared, "/api/v1/pods", record_pods).await
}

/// Watches every replication controller (all namespaces) for the whole campaign and records
/// its `spec.replicas` at every version; see [`watch_all`].
pub async fn rc_watcher(shared: Arc<Shared>) -> PodWatchLog {
    watch_all(shared, "/api/v1/replicationcontrollers", record_rcs).await
}

/// Watches the collection at `path` (all namespaces) for the whole campaign and passes what it
/// sees to `sink`: lists (linearizably), then watches from the list's version with bookmarks;
/// a dropped or silent connection is resumed from the last version on the next master; an
/// `ERROR` (410) makes it re-list. Stops once it has seen [`Shared::pod_watch_target`], or on
/// [`Shared::stop_pod_watch`].
pub async fn watch_all(
    shared: Arc<Shared>,
    path: &'static str,
    sink: fn(&Shared, Sight<'_>),
) -> PodWatchLog {
    let mut log = PodWatchLog::default();
    let Ok(http) = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .build()
    else {
        return log;
    };
    let api = Api::new(shared.timeout);
    let mut pos: Option<u64> = None;
    let mut turn = 0usize;
    while !shared.stop_pod_watch.load(Ordering::Relaxed) {
        if pos.is_some_and(|p| p >= shared.pod_watch_target.load(Ordering::Relaxed)) {
            break;
        }
        turn += 1;
        let members = shared.members();
        if members.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let url = members[turn % members.len()].1.clone();
        let from = match pos {
            Some(p) => p,
            None => match api.get(&url, path).await {
                Ok(list) => {
                    log.lists += 1;
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let rv = rv_of(&list);
                    sink(&shared, Sight::Listed(rv, &items));
                    rv
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (reached, relist, connected) = follow(&http, &url, path, &shared, from, sink).await;
        sink(&shared, Sight::Reached(reached));
        log.segments += usize::from(connected);
        log.reached_rv = log.reached_rv.max(reached);
        pos = if relist { None } else { Some(reached) };
        if reached == from && !relist {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log
}

/// Streams one watch of `path` from `from`; returns the version reached, whether to re-list,
/// and whether a stream was opened.
async fn follow(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    shared: &Shared,
    from: u64,
    sink: fn(&Shared, Sight<'_>),
) -> (u64, bool, bool) {
    let mut at = from;
    let req = http.get(format!(
        "{url}{path}?watch=true&allowWatchBookmarks=true&resourceVersion={from}"
    ));
    let resp = match tokio::time::timeout(POD_WATCH_IDLE, req.send()).await {
        Ok(Ok(r)) => r,
        _ => return (at, false, false),
    };
    if resp.status().as_u16() == 410 {
        return (at, true, false);
    }
    if !resp.status().is_success() {
        return (at, false, false);
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if shared.stop_pod_watch.load(Ordering::Relaxed)
            || at >= shared.pod_watch_target.load(Ordering::Relaxed)
        {
            return (at, false, true);
        }
        let chunk = match tokio::time::timeout(POD_WATCH_IDLE, body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => return (at, false, true),
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match ev["type"].as_str() {
                Some("ERROR") => return (at, true, true),
                Some("BOOKMARK") => at = at.max(rv_of(&ev["object"])),
                Some(kind) => {
                    sink(shared, Sight::Event(kind, &ev["object"]));
                    at = at.max(rv_of(&ev["object"]));
                }
                None => {}
            }
        }
    }
}

/// The controller and its pods after the heal.
#[derive(Debug, Clone, Default)]
pub struct Convergence {
    /// The controller as last read (`None`: never read).
    pub rc: Option<Value>,
    /// Its pods (matching its selector) as last listed.
    pub pods: Vec<Value>,
    /// The pods list's version.
    pub list_rv: u64,
    /// Heal → first read of the exact count (and a status that agrees), seconds.
    pub converged_after_s: Option<f64>,
    /// Running pods in the last read.
    pub running: usize,
}

/// True when the controller has exactly `spec.replicas` live pods and its status agrees.
pub fn is_exact(rc: &Value, pods: &[Value]) -> bool {
    let want = desired(rc);
    live_pods(rc, pods).len() as i64 == want
        && rc.pointer("/status/replicas").and_then(Value::as_i64) == Some(want)
}

/// Polls the controller and its pods (linearizable reads, any master) until the count is
/// exact, at most until `healed_us + within`.
pub async fn converge(shared: &Shared, healed_us: u64, within: Duration) -> Convergence {
    let api = Api::new(Duration::from_secs(5));
    let deadline_us = healed_us + within.as_micros() as u64;
    let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={SELECTOR}");
    let mut out = Convergence::default();
    let mut turn = 0usize;
    loop {
        turn += 1;
        let members = shared.members();
        if let Some((_, url)) = members.get(turn % members.len().max(1)) {
            if let (Ok(rc), Ok(list)) = (
                api.get(url, &rc_path()).await,
                api.get(url, &pods_path).await,
            ) {
                let now = shared.now_us();
                out.pods = list["items"].as_array().cloned().unwrap_or_default();
                out.list_rv = rv_of(&list);
                out.running = out
                    .pods
                    .iter()
                    .filter(|p| p.pointer("/status/phase") == Some(&json!("Running")))
                    .count();
                let exact = is_exact(&rc, &out.pods);
                out.rc = Some(rc);
                if exact {
                    out.converged_after_s = Some(now.saturating_sub(healed_us) as f64 / 1e6);
                    return out;
                }
            }
        }
        if shared.now_us() >= deadline_us {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
