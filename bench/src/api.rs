//! The object API's phases of `keelson bench`: pod creates per second (side by side with
//! key/value puts of the same size on keelson and etcd), and the delay from a write's
//! acknowledgement to its delivery on many concurrent watches.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures::StreamExt;
use keelson_chaos::Cluster;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{pct_ms, table, throughput, BenchArgs, Kind, Level, Sys, MEMBERS, REQUEST_TIMEOUT};

/// A small valid pod named `name`.
fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": "bench"}},
           "spec": {"containers": [{"name": "c", "image": "registry.local/bench:1",
                                    "resources": {"requests": {"cpu": "100m"}}}]}})
}

/// Results of the api-creates phase.
pub struct ApiCreates {
    /// `POST .../pods`.
    pub creates: Level,
    /// keelson `PUT /kv/KEY?upsert=true` of a value as large as the create's body, on the same
    /// cluster right after the creates, and on a fresh cluster.
    pub kv: Level,
    pub kv_fresh: Level,
    /// With nodes: kv puts again once every pod created is bound (the loops' backlog done), and
    /// how long after the creates ended that was.
    pub kv_settled: Option<(Level, Duration)>,
    /// Hollow nodes beating during the creates (`--api-nodes`), so that the pods bind.
    pub nodes: usize,
    /// etcd puts of that size, unless `--skip-etcd`.
    pub etcd: Option<Level>,
    /// Bytes of one create's request body, and of the object as stored.
    pub body_bytes: usize,
    pub stored_bytes: usize,
}

/// Who pod creators are: the CA their client trusts (a cluster serving HTTPS), the token they
/// send, and the prefix of the pods' names.
pub struct Creator {
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
    pub prefix: String,
}

/// `clients` closed-loop creators of fresh pods, client `i` talking to master `i % MEMBERS`;
/// only requests started after one second of warm-up count.
async fn creates(c: &Cluster, clients: usize, duration: Duration) -> Level {
    let who = Creator {
        ca_pem: None,
        token: None,
        prefix: "bench".into(),
    };
    creates_by(c, &who, clients, duration).await
}

/// [`creates`] as `who`.
pub async fn creates_by(c: &Cluster, who: &Creator, clients: usize, duration: Duration) -> Level {
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + duration;
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let url = format!(
            "{}/api/v1/namespaces/default/pods",
            c.url((i % MEMBERS) as u64 + 1)
        );
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(pem) = &who.ca_pem {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"));
        }
        let token = who.token.clone();
        let prefix = who.prefix.clone();
        tasks.spawn(async move {
            let http = builder.build().expect("http client");
            let (mut lat, mut errors) = (Vec::new(), 0);
            for n in 0u64.. {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let body = serde_json::to_vec(&pod(&format!("{prefix}-{i}-{n}"))).expect("json");
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let ok = req
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED);
                match (ok, t >= start) {
                    (true, true) => lat.push(t.elapsed()),
                    (false, true) => errors += 1,
                    _ => {}
                }
            }
            (lat, errors)
        });
    }
    Level::gather(tasks, duration).await
}

/// Phase 4: pod creates, then keelson and etcd puts of the same byte size, in one run.
pub async fn api_creates(args: &BenchArgs) -> anyhow::Result<ApiCreates> {
    let duration = Duration::from_secs(args.duration_secs);
    let body_bytes = serde_json::to_vec(&pod("bench-00-0000"))?.len();
    eprintln!("bench: api-creates: {} clients", args.api_clients);
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let beats = if args.api_nodes > 0 {
        let api = super::harness::Api::new(cluster)?;
        let every = Duration::from_millis(args.heartbeat_ms);
        let (beats, _, ready) = super::scale::hollow_nodes(&api, args.api_nodes, every).await?;
        eprintln!(
            "bench: api-creates: {} hollow nodes Ready after {:.1} s",
            args.api_nodes,
            ready.as_secs_f64()
        );
        Some(beats)
    } else {
        None
    };
    let level = creates(cluster, args.api_clients, duration).await;
    eprintln!("bench: api-creates: {:.0} creates/s", level.ops_per_sec);
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let stored: Value = http
        .get(format!(
            "{}/api/v1/namespaces/default/pods/bench-0-0",
            cluster.url(1)
        ))
        .send()
        .await?
        .json()
        .await?;
    let stored_bytes = serde_json::to_vec(&stored)?.len();
    let value = "x".repeat(body_bytes);
    let created = Instant::now();
    let kv = throughput(&sys, args.api_clients, duration, &value).await;
    eprintln!(
        "bench: api-creates: keelson kv {:.0} puts/s",
        kv.ops_per_sec
    );
    let kv_settled = match beats {
        Some(_) => {
            let deadline = created + Duration::from_secs(args.sched_timeout_secs.min(300));
            match all_bound(&http, &cluster.url(1), deadline).await {
                Ok(settled) => {
                    let since = settled.duration_since(created);
                    eprintln!(
                        "bench: api-creates: every pod bound {:.1} s after the creates",
                        since.as_secs_f64()
                    );
                    let l = throughput(&sys, args.api_clients, duration, &value).await;
                    eprintln!(
                        "bench: api-creates: keelson kv once bound {:.0} puts/s",
                        l.ops_per_sec
                    );
                    Some((l, since))
                }
                // The measures taken so far still count; the report leaves this row out.
                Err(e) => {
                    eprintln!("bench: api-creates: not every pod bound: {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    if let Some(b) = beats {
        b.stop();
    }
    drop(sys);
    let fresh = Sys::start(Kind::Keelson, args).await?;
    let kv_fresh = throughput(&fresh, args.api_clients, duration, &value).await;
    eprintln!(
        "bench: api-creates: keelson kv on a fresh cluster {:.0} puts/s",
        kv_fresh.ops_per_sec
    );
    drop(fresh);
    let etcd = if args.skip_etcd {
        None
    } else {
        let sys = Sys::start(Kind::Etcd, args).await?;
        let l = throughput(&sys, args.api_clients, duration, &value).await;
        eprintln!("bench: api-creates: etcd {:.0} puts/s", l.ops_per_sec);
        Some(l)
    };
    Ok(ApiCreates {
        creates: level,
        kv,
        kv_fresh,
        kv_settled,
        nodes: args.api_nodes,
        etcd,
        body_bytes,
        stored_bytes,
    })
}

/// Polls until no pod is left without a node; when that was first seen.
async fn all_bound(
    http: &reqwest::Client,
    url: &str,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let unbound = format!("{url}/api/v1/pods?fieldSelector=spec.nodeName%3D&limit=1");
    loop {
        // A failed poll is polled again.
        let list: Option<Value> = match http.get(&unbound).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if list
            .as_ref()
            .is_some_and(|l| l["items"].as_array().is_some_and(Vec::is_empty))
        {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("a pod is still unbound at the deadline");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Results of the watchers phase.
pub struct Watchers {
    /// Per timed write: from its acknowledgement to its delivery on the last watcher.
    pub to_all: Vec<Duration>,
    /// Every (write, watcher) delivery, from the write's acknowledgement.
    pub each: Vec<Duration>,
    /// Deliveries that never came (write × watcher), and watches that ended with an error.
    pub missing: usize,
    pub failed_watches: usize,
    /// Time for every watch to be open.
    pub open_secs: f64,
    pub writes: usize,
}

/// Reads one watch: marks `arrivals[k]` (nanoseconds since `base`) when the event for pod
/// `watch-K` comes; counts itself in `open` once the answer's headers are in.
async fn watch_one(
    http: reqwest::Client,
    url: String,
    base: Instant,
    arrivals: Arc<Vec<AtomicU64>>,
    open: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let resp = http.get(&url).send().await?;
    if !resp.status().is_success() {
        bail!("watch answered {}", resp.status());
    }
    open.fetch_add(1, Ordering::SeqCst);
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    const NEEDLE: &[u8] = b"\"name\":\"watch-";
    while let Some(chunk) = stream.next().await {
        let now = base.elapsed().as_nanos() as u64;
        buf.extend_from_slice(&chunk?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = &buf[..nl];
            if line.starts_with(b"{\"type\":\"ERROR\"") {
                bail!("watch error: {}", String::from_utf8_lossy(line));
            }
            if let Some(at) = line.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
                let digits: Vec<u8> = line[at + NEEDLE.len()..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .copied()
                    .collect();
                let k: Option<usize> = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok());
                if let Some(slot) = k.and_then(|k| arrivals.get(k)) {
                    let _ =
                        slot.compare_exchange(0, now.max(1), Ordering::SeqCst, Ordering::SeqCst);
                }
            }
            buf.drain(..=nl);
        }
    }
    Ok(())
}

/// Phase 5: `--watchers` watches of `default/pods` from one resource version, spread over the
/// masters; then `--watch-writes` pod creates, one every `--watch-interval-ms`, round-robin
/// over the masters, each timed from its acknowledgement to its arrival on every watcher.
pub async fn watchers(args: &BenchArgs) -> anyhow::Result<Watchers> {
    let n = args.watchers;
    let writes = args.watch_writes;
    eprintln!("bench: watchers: {n} watches, {writes} writes");
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let list: Value = http
        .get(format!("{}/api/v1/namespaces/default/pods", cluster.url(1)))
        .send()
        .await?
        .json()
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| anyhow!("a list without a resourceVersion: {list}"))?
        .to_string();
    let base = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let rows: Vec<Arc<Vec<AtomicU64>>> = (0..n)
        .map(|_| Arc::new((0..writes).map(|_| AtomicU64::new(0)).collect()))
        .collect();
    // One connection pool per master, no overall timeout: the watches stay open.
    let pools: Vec<reqwest::Client> = (0..MEMBERS)
        .map(|_| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let mut tasks = JoinSet::new();
    for (w, row) in rows.iter().enumerate() {
        let m = w % MEMBERS;
        let url = format!(
            "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}",
            cluster.url(m as u64 + 1)
        );
        tasks.spawn(watch_one(
            pools[m].clone(),
            url,
            base,
            row.clone(),
            open.clone(),
        ));
    }
    let opened = Instant::now();
    let deadline = opened + Duration::from_secs(120);
    while open.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline || tasks.is_empty() {
            bail!("only {} of {n} watches opened", open.load(Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_secs = opened.elapsed().as_secs_f64();
    eprintln!("bench: watchers: {n} open in {open_secs:.1} s");
    let mut acks = vec![None; writes];
    let mut ticker = tokio::time::interval(Duration::from_millis(args.watch_interval_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (k, ack) in acks.iter_mut().enumerate() {
        ticker.tick().await;
        let url = format!(
            "{}/api/v1/namespaces/default/pods",
            cluster.url((k % MEMBERS) as u64 + 1)
        );
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&pod(&format!("watch-{k}")))?)
            .send()
            .await;
        if resp.is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED) {
            *ack = Some(base.elapsed().as_nanos() as u64);
        }
    }
    // Every delivery of the last write, or a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_in = |rows: &[Arc<Vec<AtomicU64>>]| {
        rows.iter().all(|r| {
            r.iter()
                .zip(&acks)
                .all(|(a, ack)| ack.is_none() || a.load(Ordering::SeqCst) > 0)
        })
    };
    while !all_in(&rows) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.abort_all();
    let mut failed_watches = 0;
    while let Some(r) = tasks.join_next().await {
        if matches!(r, Ok(Err(_))) {
            failed_watches += 1;
        }
    }
    let (mut to_all, mut each, mut missing) = (Vec::new(), Vec::new(), 0);
    for (k, ack) in acks.iter().enumerate() {
        let Some(ack) = ack else { continue };
        let mut last = Some(0u64);
        for row in &rows {
            match row[k].load(Ordering::SeqCst) {
                0 => {
                    missing += 1;
                    last = None;
                }
                at => {
                    let d = at.saturating_sub(*ack);
                    each.push(Duration::from_nanos(d));
                    last = last.map(|l| l.max(d));
                }
            }
        }
        if let Some(l) = last {
            to_all.push(Duration::from_nanos(l));
        }
    }
    to_all.sort();
    each.sort();
    let acknowledged = acks.iter().flatten().count();
    eprintln!(
        "bench: watchers: {acknowledged}/{writes} writes acknowledged, p99 to all {:.1} ms",
        pct_ms(&to_all, 0.99)
    );
    drop(sys);
    Ok(Watchers {
        to_all,
        each,
        missing,
        failed_watches,
        open_secs,
        writes: acknowledged,
    })
}

/// The api-creates section of the report.
pub fn render_api(args: &BenchArgs, a: &ApiCreates) -> String {
    let ms = |l: &Level, q| format!("{:.1}", pct_ms(&l.latencies, q));
    let row = |what: &str, l: &Level| {
        vec![
            what.to_string(),
            format!("{:.0}", l.ops_per_sec),
            ms(l, 0.5),
            ms(l, 0.99),
            l.errors.to_string(),
        ]
    };
    let mut rows = vec![
        row("keelson `POST /api/v1/namespaces/default/pods`", &a.creates),
        row("keelson `PUT /kv/KEY?upsert=true`, right after", &a.kv),
        row(
            "keelson `PUT /kv/KEY?upsert=true`, fresh cluster",
            &a.kv_fresh,
        ),
    ];
    if let Some((l, _)) = &a.kv_settled {
        rows.insert(
            2,
            row(
                "keelson `PUT /kv/KEY?upsert=true`, once every pod is bound",
                l,
            ),
        );
    }
    if let Some(e) = &a.etcd {
        rows.push(row("etcd `POST /v3/kv/put`", e));
    }
    let header = ["operation", "ops/s", "p50 ms", "p99 ms", "errors"].map(String::from);
    let ratio = a
        .etcd
        .as_ref()
        .map(|e| {
            format!(
                " Pod creates reach {:.2}x etcd's put rate, and {:.2}x keelson's own key/value puts; the puts right after reach {:.2}x a fresh cluster's.",
                a.creates.ops_per_sec / e.ops_per_sec,
                a.creates.ops_per_sec / a.kv.ops_per_sec,
                a.kv.ops_per_sec / a.kv_fresh.ops_per_sec
            )
        })
        .unwrap_or_default();
    let settled = a
        .kv_settled
        .as_ref()
        .map(|(l, since)| {
            format!(
                " Every pod was bound at the first check after those puts, {:.1} s after the creates ended; the puts after that reach {:.2}x a fresh cluster's.",
                since.as_secs_f64(),
                l.ops_per_sec / a.kv_fresh.ops_per_sec
            )
        })
        .unwrap_or_default();
    format!(
        "## Object API: pod creates per second\n\n\
         {} closed-loop clients, client i talking to master i mod 3, each creating fresh small \
         valid pods ({} B request body; {} B as stored, with uid, timestamps and status) for {} \
         s after 1 s of warm-up on a fresh 3-master cluster{}. Then, in the same run, keelson's \
         key/value upserts of {} B values (the request body's size) with the same clients and \
         duration on that cluster right after, on a fresh cluster, and etcd's puts.{ratio}{settled}\n\n{}",
        args.api_clients,
        a.body_bytes,
        a.stored_bytes,
        args.duration_secs,
        if a.nodes > 0 {
            format!(
                " with {} hollow nodes beating, so every pod is scheduled and bound",
                a.nodes
            )
        } else {
            " with no node (the pods stay pending)".to_string()
        },
        a.body_bytes,
        table(&header, &rows)
    )
}

/// The watchers section of the report.
pub fn render_watch(args: &BenchArgs, w: &Watchers) -> String {
    let q = |v: &[Duration], q| format!("{:.1}", pct_ms(v, q));
    let header = ["delay", "p50 ms", "p99 ms", "max ms"].map(String::from);
    let rows = vec![
        vec![
            "acknowledgement → delivered on every watcher".to_string(),
            q(&w.to_all, 0.5),
            q(&w.to_all, 0.99),
            q(&w.to_all, 1.0),
        ],
        vec![
            "acknowledgement → each single delivery".to_string(),
            q(&w.each, 0.5),
            q(&w.each, 0.99),
            q(&w.each, 1.0),
        ],
    ];
    format!(
        "## Watch fan-out: {} concurrent watchers\n\n\
         A fresh 3-master cluster; {} watches of `GET /api/v1/namespaces/default/pods?watch=true&resourceVersion=N` \
         (N from a list), watcher i on master i mod 3, all open in {:.1} s; then {} pod creates, \
         one every {} ms, round-robin over the masters. Each create is timed from its \
         acknowledgement (the 201 answer reaching the writer) to the arrival of its event on \
         the watchers (an event that arrives before the acknowledgement counts as 0). \
         Deliveries missing after 30 s: {}; watches ended by an error: {}.\n\n{}",
        args.watchers,
        args.watchers,
        w.open_secs,
        w.writes,
        args.watch_interval_ms,
        w.missing,
        w.failed_watches,
        table(&header, &rows)
    )
}
