//! The workloads a campaign runs while faults are injected: register clients (read, write,
//! compare-and-set on a few keys), appenders (creates of fresh keys), watchers, and a sampler
//! of every master's view of leadership. Each records what it saw; the checkers judge it later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Kv, KvError};
use crate::history::{
    AppendOp, BindingObs, LeaderSample, Outcome, PodSeen, RcSeen, RegKind, RegisterOp, ScaleOp,
    Seen, SegmentStart, WatchEvent, WatchLog, WatchSegment,
};

/// The prefix every workload key lives under.
pub const PREFIX: &str = "chaos/";
/// Register keys: `chaos/r/N`.
pub const REGISTER_PREFIX: &str = "chaos/r/";
/// Append keys: `chaos/a/CLIENT-N`.
pub const APPEND_PREFIX: &str = "chaos/a/";

/// State shared by the campaign and its workload tasks.
pub struct Shared {
    pub start: Instant,
    /// `(id, API URL)` of every current member.
    pub members: RwLock<Vec<(u64, String)>>,
    /// Set when the workloads must stop issuing operations.
    pub stop: AtomicBool,
    /// Watchers stop once they have seen this version (`u64::MAX`: not known yet).
    pub watch_target: AtomicU64,
    /// Set when watchers must give up.
    pub stop_watch: AtomicBool,
    /// Per-request timeout of workload clients.
    pub timeout: Duration,
    /// Register reads with `resourceVersion=0` (the answering replica's state): not
    /// linearizable, so a campaign with it must report violations (harness self-test).
    pub local_reads: AtomicBool,
    pub registers: Mutex<Vec<RegisterOp>>,
    pub appends: Mutex<Vec<AppendOp>>,
    pub leaders: Mutex<Vec<LeaderSample>>,
    /// Controller workload: set when the scaler must stop.
    pub stop_scale: AtomicBool,
    /// The pods watcher stops once it has seen this version (`u64::MAX`: not known yet).
    pub pod_watch_target: AtomicU64,
    /// Set when the pods watcher must give up.
    pub stop_pod_watch: AtomicBool,
    pub scales: Mutex<Vec<ScaleOp>>,
    pub bindings: Mutex<Vec<BindingObs>>,
    /// Every pod as the pods watcher saw it (lists, events, where each watch ended).
    pub pod_log: Mutex<Vec<Seen<PodSeen>>>,
    /// Every replication controller as the controllers watcher saw it.
    pub rc_log: Mutex<Vec<Seen<RcSeen>>>,
}

impl Shared {
    /// Shared state for `members`, with the clock starting now.
    pub fn new(members: Vec<(u64, String)>, timeout: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            members: RwLock::new(members),
            stop: AtomicBool::new(false),
            watch_target: AtomicU64::new(u64::MAX),
            stop_watch: AtomicBool::new(false),
            timeout,
            local_reads: AtomicBool::new(false),
            registers: Mutex::new(Vec::new()),
            appends: Mutex::new(Vec::new()),
            leaders: Mutex::new(Vec::new()),
            stop_scale: AtomicBool::new(false),
            pod_watch_target: AtomicU64::new(u64::MAX),
            stop_pod_watch: AtomicBool::new(false),
            scales: Mutex::new(Vec::new()),
            bindings: Mutex::new(Vec::new()),
            pod_log: Mutex::new(Vec::new()),
            rc_log: Mutex::new(Vec::new()),
        })
    }

    /// Microseconds since the campaign started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A snapshot of the members.
    pub fn members(&self) -> Vec<(u64, String)> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Replaces the member list (after a membership change).
    pub fn set_members(&self, m: Vec<(u64, String)>) {
        if let Ok(mut g) = self.members.write() {
            *g = m;
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One `Kv` per master URL, created on first use.
struct Clients {
    timeout: Duration,
    by_url: HashMap<String, Kv>,
}

impl Clients {
    fn new(timeout: Duration) -> Self {
        Clients {
            timeout,
            by_url: HashMap::new(),
        }
    }

    /// A client for a random member.
    fn pick(&mut self, shared: &Shared, rng: &mut StdRng) -> Option<Kv> {
        let members = shared.members();
        if members.is_empty() {
            return None;
        }
        let url = &members[rng.gen_range(0..members.len())].1;
        let timeout = self.timeout;
        Some(
            self.by_url
                .entry(url.clone())
                .or_insert_with(|| Kv::new(url, timeout))
                .clone(),
        )
    }
}

/// A pause between operations so that a few clients do not saturate two cores (pacing, not
/// synchronisation).
const THINK: Duration = Duration::from_millis(5);

/// A register client: reads, writes and compare-and-sets on `keys` register keys until stopped.
pub async fn register_client(shared: Arc<Shared>, client: u32, keys: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5245_4700 + client as u64));
    let mut clients = Clients::new(shared.timeout);
    let mut last_rv: HashMap<String, u64> = HashMap::new();
    let mut n = 0u64;
    while !shared.stopped() {
        let Some(kv) = clients.pick(&shared, &mut rng) else {
            tokio::time::sleep(THINK).await;
            continue;
        };
        let key = format!("{REGISTER_PREFIX}{}", rng.gen_range(0..keys.max(1)));
        let roll: u32 = rng.gen_range(0..10);
        let value = format!("c{client}-{n}");
        n += 1;
        let op = match (roll, last_rv.get(&key).copied()) {
            (0..=3, _) | (7.., None) => read_op(&shared, &kv, client, &key).await,
            (4..=6, _) => write_op(&shared, &kv, client, &key, value).await,
            (_, Some(rv)) => cas_op(&shared, &kv, client, &key, value, rv).await,
        };
        match (op.outcome, op.rv) {
            (Outcome::Ok, Some(rv)) => {
                last_rv.insert(key, rv);
            }
            (Outcome::Ok, None) => {
                last_rv.remove(&key);
            }
            _ => {}
        }
        if let Ok(mut h) = shared.registers.lock() {
            h.push(op);
        }
        tokio::time::sleep(THINK).await;
    }
}

/// A register operation before it is sent.
fn invoke(shared: &Shared, client: u32, key: &str, kind: RegKind) -> RegisterOp {
    RegisterOp {
        client,
        key: key.to_string(),
        kind,
        value: None,
        expected_rv: None,
        rv: None,
        invoke_us: shared.now_us(),
        complete_us: 0,
        outcome: Outcome::Info,
        code: None,
    }
}

/// Completes `op` with a write's result.
fn complete_write(shared: &Shared, mut op: RegisterOp, r: Result<u64, KvError>) -> RegisterOp {
    op.complete_us = shared.now_us();
    match r {
        Ok(rv) => {
            op.outcome = Outcome::Ok;
            op.rv = Some(rv);
        }
        Err(e) => {
            op.outcome = Outcome::of_error(&e);
            op.code = e.code();
        }
    }
    op
}

async fn read_op(shared: &Shared, kv: &Kv, client: u32, key: &str) -> RegisterOp {
    let mut op = invoke(shared, client, key, RegKind::Read);
    let r = kv
        .get(key, shared.local_reads.load(Ordering::Relaxed))
        .await;
    op.complete_us = shared.now_us();
    match r {
        Ok(found) => {
            op.outcome = Outcome::Ok;
            if let Some((v, rv)) = found {
                op.value = Some(v);
                op.rv = Some(rv);
            }
        }
        Err(e) => {
            op.outcome = Outcome::of_error(&e);
            op.code = e.code();
        }
    }
    op
}

async fn write_op(shared: &Shared, kv: &Kv, client: u32, key: &str, value: String) -> RegisterOp {
    let mut op = invoke(shared, client, key, RegKind::Write);
    let r = kv.put(key, &value).await;
    op.value = Some(value);
    complete_write(shared, op, r)
}

async fn cas_op(
    shared: &Shared,
    kv: &Kv,
    client: u32,
    key: &str,
    value: String,
    rv: u64,
) -> RegisterOp {
    let mut op = invoke(shared, client, key, RegKind::Cas);
    op.expected_rv = Some(rv);
    let r = kv.update(key, &value, Some(rv)).await;
    op.value = Some(value);
    complete_write(shared, op, r)
}

/// An appender: creates `chaos/a/CLIENT-N` for N = 0, 1, ... until stopped.
pub async fn appender(shared: Arc<Shared>, client: u32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x4150_0000 + client as u64));
    let mut clients = Clients::new(shared.timeout);
    let mut n = 0u64;
    while !shared.stopped() {
        let Some(kv) = clients.pick(&shared, &mut rng) else {
            tokio::time::sleep(THINK).await;
            continue;
        };
        let key = format!("{APPEND_PREFIX}{client}-{n:06}");
        n += 1;
        let invoke_us = shared.now_us();
        let r = kv.create(&key, "x").await;
        let op = AppendOp {
            client,
            key,
            invoke_us,
            complete_us: shared.now_us(),
            outcome: r.as_ref().map_or_else(Outcome::of_error, |_| Outcome::Ok),
            code: r.as_ref().err().and_then(KvError::code),
        };
        if let Ok(mut h) = shared.appends.lock() {
            h.push(op);
        }
        tokio::time::sleep(THINK).await;
    }
}

/// Samples `GET /cluster` of every member every `every` until stopped.
pub async fn leader_sampler(shared: Arc<Shared>, every: Duration) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
    else {
        return;
    };
    while !shared.stopped() {
        let members = shared.members();
        let polls = members
            .iter()
            .map(|(id, url)| sample(&http, &shared, *id, url));
        let samples: Vec<LeaderSample> = futures::future::join_all(polls)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Ok(mut h) = shared.leaders.lock() {
            h.extend(samples);
        }
        tokio::time::sleep(every).await;
    }
}

async fn sample(
    http: &reqwest::Client,
    shared: &Shared,
    id: u64,
    url: &str,
) -> Option<LeaderSample> {
    let v: serde_json::Value = http
        .get(format!("{url}/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(LeaderSample {
        t_us: shared.now_us(),
        id: v["id"].as_u64().unwrap_or(id),
        term: v["term"].as_u64()?,
        state: v["state"].as_str().unwrap_or("").to_string(),
        leader: v["leader"].as_u64(),
    })
}

/// How long a watch may stay silent before the watcher moves to another master.
const WATCH_IDLE: Duration = Duration::from_secs(2);

/// A watcher of [`PREFIX`]: lists, then watches from the list's version; on a dropped or silent
/// connection it resumes from the last version seen on the next master; on `ERROR`/410 it
/// re-lists. Returns its log once it has seen [`Shared::watch_target`] or is told to stop.
pub async fn watcher(shared: Arc<Shared>, watcher: u32) -> WatchLog {
    let mut log = WatchLog {
        watcher,
        segments: Vec::new(),
    };
    let Ok(http) = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .build()
    else {
        return log;
    };
    let mut pos: Option<u64> = None;
    let mut turn = watcher as usize;
    while !shared.stop_watch.load(Ordering::Relaxed) {
        if pos.is_some_and(|p| p >= shared.watch_target.load(Ordering::Relaxed)) {
            break;
        }
        turn += 1;
        let members = shared.members();
        if members.is_empty() {
            tokio::time::sleep(THINK).await;
            continue;
        }
        let (id, url) = members[turn % members.len()].clone();
        let (start_rv, start) = match pos {
            Some(p) => (p, SegmentStart::Resumed),
            None => match Kv::new(&url, shared.timeout).list(PREFIX, false).await {
                Ok((items, rv)) => (rv, SegmentStart::Listed(items)),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut seg = WatchSegment {
            master: id,
            start_rv,
            start,
            events: Vec::new(),
            expired: false,
        };
        let relist = follow(&http, &url, &shared, &mut seg).await;
        pos = if relist {
            None
        } else {
            Some(seg.events.last().map_or(start_rv, |e| e.rv))
        };
        let empty_resume = seg.events.is_empty() && matches!(seg.start, SegmentStart::Resumed);
        if !empty_resume || seg.expired {
            log.segments.push(seg);
        }
        if empty_resume {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log
}

/// Streams one watch into `seg`; returns true when the watcher must re-list (410 or `ERROR`).
async fn follow(
    http: &reqwest::Client,
    url: &str,
    shared: &Shared,
    seg: &mut WatchSegment,
) -> bool {
    let req = http.get(format!(
        "{url}/kv?prefix={PREFIX}&watch=true&resourceVersion={}",
        seg.start_rv
    ));
    let resp = match tokio::time::timeout(WATCH_IDLE, req.send()).await {
        Ok(Ok(r)) => r,
        _ => return false,
    };
    if resp.status().as_u16() == 410 {
        seg.expired = true;
        return true;
    }
    if !resp.status().is_success() {
        return false;
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if shared.stop_watch.load(Ordering::Relaxed)
            || seg
                .events
                .last()
                .is_some_and(|e| e.rv >= shared.watch_target.load(Ordering::Relaxed))
        {
            return false;
        }
        let chunk = match tokio::time::timeout(WATCH_IDLE, body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => return false,
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            match parse_event(&line) {
                Parsed::Event(e) => seg.events.push(e),
                Parsed::Error => {
                    seg.expired = true;
                    return true;
                }
                Parsed::Skip => {}
            }
        }
    }
}

enum Parsed {
    Event(WatchEvent),
    Error,
    Skip,
}

fn parse_event(line: &[u8]) -> Parsed {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Parsed::Skip;
    };
    match v["type"].as_str() {
        Some("ERROR") => Parsed::Error,
        Some(kind) => Parsed::Event(WatchEvent {
            kind: kind.to_string(),
            key: v["key"].as_str().unwrap_or("").to_string(),
            value: v["value"].as_str().unwrap_or("").to_string(),
            rv: v["resourceVersion"].as_u64().unwrap_or(0),
        }),
        None => Parsed::Skip,
    }
}
