//! keelson-bench, also run as `keelson bench`: measurements of a 3-master keelson cluster side
//! by side with a 3-member etcd cluster on the same machine. See docs/performance.md.
//!
//! A binary of its own, out of the production `keelson` binary (it links the chaos harness);
//! `keelson bench ARGS` replaces itself with `keelson-bench ARGS` from its own directory. The
//! masters and agents it starts are the `keelson` binary next to this one, or `KEELSON_BIN`
//! ([`keelson_bin`]).
//!
//! Both systems run as child processes on loopback (keelson on 127.0.1.N through
//! [`keelson_chaos::Cluster`], etcd on 127.0.2.N), one system at a time, with their default
//! durability (every write synced to disk on a majority before the answer). Clients are spread
//! round-robin over every member for both systems; followers forward writes to the leader.
//!
//! Five phases, each bounded in time (`--only` picks some):
//! 1. `writes`: throughput and latency of upserts under several levels of concurrency;
//! 2. `failover`: SIGKILL the leader, time until the next acknowledged write, restart it;
//!    `leader-stop` does the same with SIGTERM (a graceful stop: both systems hand leadership
//!    over before they exit); `stability` (only when named) counts leader changes during
//!    minutes of write load;
//! 3. `memory`: resident memory with N objects stored, and time for a SIGKILLed member to serve
//!    a local read again after a restart;
//! 4. `api-creates`: pods created per second through the object API (`POST
//!    /api/v1/namespaces/default/pods`) by concurrent clients, side by side with keelson's and
//!    etcd's key/value puts of the same byte size;
//! 5. `watchers`: many concurrent pod watches spread over the masters, and the delay from a
//!    write's acknowledgement to its delivery on every watcher.
//!
//! Cluster phases, run only when named in `--only` (they need Docker, wrk, or minutes of
//! load; each starts a fresh cluster of its own):
//! 6. `pod-startup`: pods on two Docker agents, from the create's acknowledgement to Running
//!    and Ready, beside `docker run -d` of the same image (`bench/src/pods.rs`);
//! 7. `proxy`: wrk through each proxy mode of the agents and straight at a pod's IP, and the
//!    kernel mode's rules latency and a 1,000-service sync (`bench/src/proxy.rs`);
//! 8. `scheduling`: pods bound per second over many hollow nodes, and convergence of a
//!    replication controller after a leader kill (`bench/src/scale.rs`);
//! 9. `heartbeats`: CPU of the masters with many hollow nodes beating, against idle
//!    (`bench/src/scale.rs`);
//! 10. `metrics-cost`: write throughput with and without a 1 s `/metrics` scraper
//!    (`bench/src/metrics_cost.rs`);
//! 11. `lists`: `kubectl get pods` and API lists of `--pods` pods (`bench/src/lists.rs`);
//! 12. `authz-cost`: pod creates as the administrator, as an RBAC user and with a stored token,
//!    alternating, and `kubectl auth can-i` latency (`bench/src/authz_cost.rs`).

mod api;
mod authz_cost;
mod follow;
mod harness;
mod lists;
mod metrics_cost;
mod pods;
mod proxy;
mod scale;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use keelson_chaos::cluster::free_addr;
use keelson_chaos::{Cluster, Kv};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// Measure keelson side by side with etcd (see docs/performance.md).
///
/// Also run as `keelson bench`. keelson masters and agents are started from the `keelson` binary
/// next to this one, or from the path in the environment variable KEELSON_BIN.
#[derive(Parser, Debug)]
#[command(name = "keelson-bench", version)]
pub struct BenchArgs {
    /// Size in bytes of every value written.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Measured seconds per concurrency level (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Concurrency levels: numbers of clients each writing in a closed loop.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub clients: Vec<usize>,
    /// Leader kills in the failover phase (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub failovers: usize,
    /// Objects stored for the memory and restart phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub objects: usize,
    /// Measure keelson only.
    #[arg(long)]
    pub skip_etcd: bool,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Also write the markdown report to this file (it is always printed to stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Phases to run. Default: writes, failover, memory, api-creates, watchers. The cluster
    /// phases pod-startup, proxy, scheduling, heartbeats and metrics-cost run only when named.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,
    /// Concurrent clients of the api-creates phase.
    #[arg(long, default_value_t = 64)]
    pub api_clients: usize,
    /// Concurrent watches of the watchers phase, spread round-robin over the masters.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Writes timed in the watchers phase.
    #[arg(long, default_value_t = 200)]
    pub watch_writes: usize,
    /// Milliseconds between two timed writes of the watchers phase.
    #[arg(long, default_value_t = 50)]
    pub watch_interval_ms: u64,
    /// pod-startup: pods created at once.
    #[arg(long, default_value_t = 50)]
    pub startup_pods: usize,
    /// pod-startup: pods created one at a time (each once the previous one runs) before the
    /// burst.
    #[arg(long, default_value_t = 10)]
    pub startup_serial: usize,
    /// pod-startup: `docker run -d` timed one at a time (the floor).
    #[arg(long, default_value_t = 10)]
    pub docker_runs: usize,
    /// pod-startup: give up waiting for pods to run after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub startup_timeout_secs: u64,
    /// proxy: wrk's flags (besides `--latency` and the URL).
    #[arg(long, default_value = "-t2 -c32 -d10s", allow_hyphen_values = true)]
    pub wrk_args: String,
    /// proxy: rounds of (direct, proxied), back to back.
    #[arg(long, default_value_t = 3)]
    pub proxy_rounds: usize,
    /// proxy: the service's port.
    #[arg(long, default_value_t = 18080)]
    pub service_port: u16,
    /// scheduling and heartbeats: hollow nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// scheduling: pods to bind.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// scheduling: how the pods are made (rc: replication controllers; pods: one create each).
    #[arg(long, value_enum, default_value = "rc")]
    pub sched_mode: scale::SchedMode,
    /// scheduling: replicas per replication controller (--sched-mode rc).
    #[arg(long, default_value_t = 1000)]
    pub rc_replicas: usize,
    /// api-creates: hollow nodes registered and beating before the creates, so pods bind.
    #[arg(long, default_value_t = 0)]
    pub api_nodes: usize,
    /// lists: times each read is repeated.
    #[arg(long, default_value_t = 3)]
    pub list_rounds: usize,
    /// scheduling: give up waiting for bindings (and for convergence) after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub sched_timeout_secs: u64,
    /// scheduling: replicas of the controller at count before the leader kill (0 skips the
    /// convergence measurement).
    #[arg(long, default_value_t = 500)]
    pub converge_from: usize,
    /// scheduling: replicas it is changed to right after the kill.
    #[arg(long, default_value_t = 600)]
    pub converge_to: usize,
    /// scheduling and heartbeats: milliseconds between two beats of each hollow node.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// heartbeats: seconds of each CPU window (idle, then beating).
    #[arg(long, default_value_t = 30)]
    pub cpu_window_secs: u64,
    /// metrics-cost: closed-loop key/value writers.
    #[arg(long, default_value_t = 16)]
    pub metrics_clients: usize,
    /// metrics-cost: rounds of (without, with) scraping, each --duration-secs long; authz-cost:
    /// rounds of the three identities.
    #[arg(long, default_value_t = 3)]
    pub metrics_rounds: usize,
    /// keelson masters talk plain HTTP between them (`--insecure-plaintext-peers`) instead of
    /// mutual TLS: to measure what peer mTLS costs against the default.
    #[arg(long)]
    pub plaintext_peers: bool,
    /// stability: seconds of load during which leader changes are counted.
    #[arg(long, default_value_t = 300)]
    pub stability_secs: u64,
    /// stability: closed-loop writers.
    #[arg(long, default_value_t = 256)]
    pub stability_clients: usize,
    /// leader-stop: rounds of SIGTERM of the leader.
    #[arg(long, default_value_t = 20)]
    pub stops: usize,
    /// keelson masters' Raft heartbeat interval (`keelson master --heartbeat-ms`).
    #[arg(long, default_value_t = keelson_raft::node::DEFAULT_HEARTBEAT_MS)]
    pub raft_heartbeat_ms: u64,
    /// keelson masters' election timeout range (`keelson master --election-timeout-ms`).
    #[arg(long, default_value_t = keelson_raft::node::ElectionTimeout::default())]
    pub raft_election_ms: keelson_raft::node::ElectionTimeout,
    /// etcd's `--heartbeat-interval` (its default: 100).
    #[arg(long, default_value_t = 100)]
    pub etcd_heartbeat_ms: u64,
    /// etcd's `--election-timeout` (its default: 1000).
    #[arg(long, default_value_t = 1000)]
    pub etcd_election_ms: u64,
}

/// The phases of `keelson bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Writes,
    Failover,
    LeaderStop,
    Stability,
    Memory,
    ApiCreates,
    Watchers,
    PodStartup,
    Proxy,
    Scheduling,
    Heartbeats,
    MetricsCost,
    Lists,
    AuthzCost,
}

impl Phase {
    /// The phases that run without `--only`.
    fn default_on(self) -> bool {
        matches!(
            self,
            Phase::Writes
                | Phase::Failover
                | Phase::LeaderStop
                | Phase::Memory
                | Phase::ApiCreates
                | Phase::Watchers
        )
    }
}

impl BenchArgs {
    /// Whether `phase` runs.
    fn runs(&self, phase: Phase) -> bool {
        (self.only.is_empty() && phase.default_on()) || self.only.contains(&phase)
    }
}

/// Generous bound on any single request, and on waiting for a cluster to settle.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Members in each cluster.
pub(crate) const MEMBERS: usize = 3;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEELSON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = BenchArgs::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("keelson-bench: {e:#}");
        std::process::exit(1);
    }
}

/// The `keelson` binary the masters and agents run: `KEELSON_BIN` if set, else the `keelson`
/// file next to this executable (cargo builds both into the same directory; `keelson bench`
/// sets `KEELSON_BIN` to itself).
pub(crate) fn keelson_bin() -> anyhow::Result<PathBuf> {
    let (bin, hint) = match std::env::var_os("KEELSON_BIN").filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), "KEELSON_BIN names no file"),
        None => (
            std::env::current_exe()
                .context("current_exe")?
                .with_file_name("keelson"),
            "not next to keelson-bench: build it (`cargo build --release` at the workspace \
             root builds both) or set KEELSON_BIN to its path",
        ),
    };
    if !bin.is_file() {
        bail!("no keelson binary at {}: {hint}", bin.display());
    }
    std::path::absolute(&bin).with_context(|| format!("{}", bin.display()))
}

/// Runs the benchmarks and prints the report.
async fn run(args: BenchArgs) -> anyhow::Result<()> {
    keelson_bin()?;
    let value = "x".repeat(args.value_size);
    let mut kinds = vec![Kind::Keelson];
    if !args.skip_etcd {
        kinds.push(Kind::Etcd);
    }
    let mut results = Vec::new();
    let cluster_phases = [
        Phase::Writes,
        Phase::Stability,
        Phase::Failover,
        Phase::LeaderStop,
        Phase::Memory,
    ];
    if cluster_phases.iter().any(|p| args.runs(*p)) {
        for kind in kinds {
            results.push(measure(kind, &args, &value).await?);
        }
    }
    let api = if args.runs(Phase::ApiCreates) {
        Some(api::api_creates(&args).await?)
    } else {
        None
    };
    let watch = if args.runs(Phase::Watchers) {
        Some(api::watchers(&args).await?)
    } else {
        None
    };
    let mut report = render(&args, &results);
    if let Some(a) = &api {
        report = insert_before_caveats(report, &api::render_api(&args, a));
    }
    if let Some(w) = &watch {
        report = insert_before_caveats(report, &api::render_watch(&args, w));
    }
    // The cluster phases, each on a fresh cluster of its own; one that fails is reported and
    // the others still run.
    let mut sections = Vec::new();
    if args.runs(Phase::PodStartup) {
        match pods::pod_startup(&args).await {
            Ok(r) => sections.push(pods::render_startup(&args, &r)),
            Err(e) => sections.push(failed("pod-startup", &e)),
        }
    }
    if args.runs(Phase::Proxy) {
        match proxy::proxy(&args).await {
            Ok(r) => sections.push(proxy::render_proxy(&args, &r)),
            Err(e) => sections.push(failed("proxy", &e)),
        }
    }
    if args.runs(Phase::Scheduling) {
        match scale::scheduling(&args).await {
            Ok(r) => sections.push(scale::render_scheduling(&args, &r)),
            Err(e) => sections.push(failed("scheduling", &e)),
        }
    }
    if args.runs(Phase::Lists) {
        match lists::lists(&args).await {
            Ok(r) => sections.push(lists::render_lists(&args, &r)),
            Err(e) => sections.push(failed("lists", &e)),
        }
    }
    if args.runs(Phase::Heartbeats) {
        match scale::heartbeats(&args).await {
            Ok(r) => sections.push(scale::render_heartbeats(&args, &r)),
            Err(e) => sections.push(failed("heartbeats", &e)),
        }
    }
    if args.runs(Phase::MetricsCost) {
        match metrics_cost::metrics_cost(&args).await {
            Ok(r) => sections.push(metrics_cost::render_metrics_cost(&args, &r)),
            Err(e) => sections.push(failed("metrics-cost", &e)),
        }
    }
    if args.runs(Phase::AuthzCost) {
        match authz_cost::authz_cost(&args).await {
            Ok(r) => sections.push(authz_cost::render_authz_cost(&args, &r)),
            Err(e) => sections.push(failed("authz-cost", &e)),
        }
    }
    for s in &sections {
        report = insert_before_caveats(report, s);
    }
    println!("{report}");
    if let Some(path) = &args.output {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The two systems under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Keelson,
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Keelson => "keelson",
            Kind::Etcd => "etcd",
        }
    }
}

/// The section of a cluster phase that failed.
fn failed(phase: &str, e: &anyhow::Error) -> String {
    eprintln!("bench: {phase}: {e:#}");
    format!("## {phase}: failed\n\n{e:#}\n\n")
}

/// `section` placed before the report's caveats.
fn insert_before_caveats(report: String, section: &str) -> String {
    match report.find("## Caveats") {
        Some(i) => format!("{}{section}{}", &report[..i], &report[i..]),
        None => report + section,
    }
}

/// Everything measured on one system.
struct Results {
    kind: Kind,
    levels: Vec<Level>,
    failovers: Vec<Duration>,
    failover_errors: usize,
    stops: Vec<Duration>,
    stop_errors: usize,
    /// Phase `stability`: the load, and the leader changes during it.
    stability: Option<(Level, u64)>,
    /// Phase `writes`: one client through the leader, then one through a follower.
    one_client: Option<(Level, Level)>,
    memory: Option<Memory>,
}

/// One concurrency level of phase 1.
struct Level {
    pub ops_per_sec: f64,
    pub latencies: Vec<Duration>,
    pub errors: usize,
}

impl Level {
    /// Joins the clients of one level, each returning its latencies and error count.
    async fn gather(
        mut tasks: tokio::task::JoinSet<(Vec<Duration>, usize)>,
        duration: Duration,
    ) -> Level {
        let (mut latencies, mut errors) = (Vec::new(), 0);
        while let Some(r) = tasks.join_next().await {
            if let Ok((lat, e)) = r {
                latencies.extend(lat);
                errors += e;
            }
        }
        latencies.sort();
        Level {
            ops_per_sec: latencies.len() as f64 / duration.as_secs_f64(),
            latencies,
            errors,
        }
    }
}

/// Phase 3.
struct Memory {
    rss_kib: Vec<u64>,
    disk_bytes: Vec<u64>,
    load_secs: f64,
    restart: Option<Duration>,
}

async fn measure(kind: Kind, args: &BenchArgs, value: &str) -> anyhow::Result<Results> {
    eprintln!("bench: {kind:?}: throughput and failover");
    let mut sys = Sys::start(kind, args).await?;
    let mut levels = Vec::new();
    let clients: &[usize] = if args.runs(Phase::Writes) {
        &args.clients
    } else {
        &[]
    };
    for &clients in clients {
        let level = throughput(
            &sys,
            clients,
            Duration::from_secs(args.duration_secs),
            value,
        )
        .await;
        eprintln!(
            "bench: {kind:?}: {clients} clients: {:.0} ops/s",
            level.ops_per_sec
        );
        levels.push(level);
    }
    let one_client = if args.runs(Phase::Writes) {
        let leader = sys
            .settled_leader()
            .await
            .ok_or_else(|| anyhow!("no leader"))?;
        let duration = Duration::from_secs(args.duration_secs);
        let through = |member| closed_loop(&sys, 1, duration, value, Some(member));
        let via_leader = through(leader).await;
        let via_follower = through((leader + 1) % MEMBERS).await;
        eprintln!(
            "bench: {kind:?}: 1 client through the leader: {:.0} ops/s, through a follower: \
             {:.0} ops/s",
            via_leader.ops_per_sec, via_follower.ops_per_sec
        );
        Some((via_leader, via_follower))
    } else {
        None
    };
    let stability = if args.runs(Phase::Stability) {
        let duration = Duration::from_secs(args.stability_secs);
        let before = sys.term().await;
        let level = throughput(&sys, args.stability_clients, duration, value).await;
        let changes = sys.term().await.saturating_sub(before);
        eprintln!(
            "bench: {kind:?}: stability: {:.0} ops/s, {changes} leader changes",
            level.ops_per_sec
        );
        Some((level, changes))
    } else {
        None
    };
    let rounds = if args.runs(Phase::Failover) {
        args.failovers
    } else {
        0
    };
    let (failovers, failover_errors) = failover(&mut sys, rounds, value, Stop::Kill).await?;
    let rounds = if args.runs(Phase::LeaderStop) {
        args.stops
    } else {
        0
    };
    let (stops, stop_errors) = failover(&mut sys, rounds, value, Stop::Term).await?;
    drop(sys);
    let memory = if args.objects > 0 && args.runs(Phase::Memory) {
        eprintln!("bench: {kind:?}: {} objects", args.objects);
        let mut sys = Sys::start(kind, args).await?;
        Some(memory(&mut sys, args.objects, value).await?)
    } else {
        None
    };
    Ok(Results {
        kind,
        levels,
        failovers,
        failover_errors,
        stops,
        stop_errors,
        stability,
        one_client,
        memory,
    })
}

/// Phase 1: `clients` closed-loop writers of fresh keys, client `i` talking to member
/// `i % MEMBERS`. Only requests started after the warm-up second count.
async fn throughput(sys: &Sys, clients: usize, duration: Duration, value: &str) -> Level {
    closed_loop(sys, clients, duration, value, None).await
}

/// `clients` closed-loop writers of fresh keys, all through `member`, or client `i` through
/// member `i % MEMBERS` when `None`. Only requests started after the warm-up second count.
async fn closed_loop(
    sys: &Sys,
    clients: usize,
    duration: Duration,
    value: &str,
    member: Option<usize>,
) -> Level {
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + duration;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (sys, value) = (sys.writer(), value.to_string());
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            for n in 0u64.. {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ok = sys
                    .put(
                        member.unwrap_or(c % MEMBERS),
                        &format!("bench-{clients}-{member:?}-{c}-{n}"),
                        &value,
                    )
                    .await;
                match (ok, t >= start) {
                    (Ok(()), true) => lat.push(t.elapsed()),
                    (Err(_), true) => errors += 1,
                    _ => {}
                }
            }
            (lat, errors)
        });
    }
    Level::gather(tasks, duration).await
}

/// Phase 2: `rounds` times, SIGKILL the leader and time until a write through a survivor is
/// acknowledged. A probe write, bounded by one second, starts every 10 ms, as a client that
/// retries would, so the result does not depend on how long a doomed request hangs. Returns the
/// sorted times and the number of rounds without an acknowledged write within [`SETTLE_TIMEOUT`].
/// How phase 2 stops the leader.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop.
    Term,
}

/// Phase 2 (`failover`, `leader-stop`): stop the leader `rounds` times; the times from the
/// signal to the next acknowledged write, and the rounds with none.
async fn failover(
    sys: &mut Sys,
    rounds: usize,
    value: &str,
    how: Stop,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let (mut times, mut errors) = (Vec::new(), 0);
    for round in 0..rounds {
        let leader = sys
            .settled_leader()
            .await
            .ok_or_else(|| anyhow!("no leader"))?;
        match how {
            Stop::Kill => sys.kill(leader),
            Stop::Term => sys.signal_term(leader),
        }
        let killed = Instant::now();
        let survivors: Vec<usize> = (0..MEMBERS).filter(|m| *m != leader).collect();
        let (mut probes, mut ack, w) = (JoinSet::new(), None, sys.writer());
        for n in 0usize.. {
            if killed.elapsed() > SETTLE_TIMEOUT {
                break;
            }
            let (w, value) = (w.clone(), value.to_string());
            let (member, key) = (
                survivors[n % survivors.len()],
                format!("failover-{round}-{n}"),
            );
            probes.spawn(async move {
                let put = w.put(member, &key, &value);
                tokio::time::timeout(Duration::from_secs(1), put)
                    .await
                    .ok()?
                    .ok()?;
                Some(Instant::now())
            });
            tokio::select! {
                Some(Ok(Some(at))) = probes.join_next() => { ack = Some(at - killed); break; }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        probes.abort_all();
        match ack {
            Some(t) => times.push(t),
            None => errors += 1,
        }
        eprintln!("bench: {:?}: {how:?} {}: {ack:?}", sys.kind(), round + 1);
        // After a SIGTERM, reap the exit (bounded: a member that hangs is killed).
        sys.reap(leader).await;
        sys.spawn(leader);
        sys.wait_caught_up(leader).await;
    }
    times.sort();
    Ok((times, errors))
}

/// Phase 3: store `objects` keys with 64 writers, read every member's VmRSS and data size,
/// then SIGKILL a follower, restart it and time until it serves a local read of the last key.
async fn memory(sys: &mut Sys, objects: usize, value: &str) -> anyhow::Result<Memory> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for c in 0..64 {
        let (w, value, next) = (sys.writer(), value.to_string(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects || started.elapsed() > Duration::from_secs(1800) {
                    return Ok(());
                }
                let mut tries = 0;
                while let Err(e) = w.put(c % MEMBERS, &format!("obj-{i}"), &value).await {
                    tries += 1;
                    if tries >= 5 {
                        return Err(e);
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_kib = sys.rss_kib();
    let disk_bytes = (0..MEMBERS)
        .map(|m| keelson_raft::node::dir_size(&sys.data_dir(m)))
        .collect();
    let leader = sys
        .settled_leader()
        .await
        .ok_or_else(|| anyhow!("no leader"))?;
    let follower = (leader + 1) % MEMBERS;
    let key = format!("obj-{}", objects - 1);
    sys.kill(follower);
    sys.spawn(follower);
    let spawned = Instant::now();
    let mut restart = None;
    while spawned.elapsed() < Duration::from_secs(300) {
        if sys.read_local(follower, &key).await {
            restart = Some(spawned.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Memory {
        rss_kib,
        disk_bytes,
        load_secs,
        restart,
    })
}

/// VmRSS of process `pid` in KiB (0 if unknown).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A running cluster of either system, members indexed 0..MEMBERS.
enum Sys {
    Keelson(Cluster),
    Etcd(Etcd),
}

/// The cheap, cloneable write path to a cluster's members.
#[derive(Clone)]
enum Writer {
    Keelson(Vec<Kv>),
    Etcd(reqwest::Client, Vec<String>),
}

impl Writer {
    /// Upserts `key` through `member`.
    async fn put(&self, member: usize, key: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Writer::Keelson(kvs) => kvs[member]
                .put(key, value)
                .await
                .map(drop)
                .map_err(Into::into),
            Writer::Etcd(http, urls) => {
                let body =
                    json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())});
                let resp = http
                    .post(format!("{}/v3/kv/put", urls[member]))
                    .json(&body)
                    .send()
                    .await?;
                let v: Value = resp.json().await?;
                match v.get("header") {
                    Some(_) => Ok(()),
                    None => bail!("etcd put: {v}"),
                }
            }
        }
    }
}

impl Sys {
    /// Starts a fresh cluster and waits for a leader.
    pub(crate) async fn start(kind: Kind, args: &BenchArgs) -> anyhow::Result<Sys> {
        let sys = match kind {
            Kind::Keelson => {
                let bin = keelson_bin()?;
                let heartbeat = args.raft_heartbeat_ms.to_string();
                let election = args.raft_election_ms.to_string();
                let mut extra = vec![
                    "--heartbeat-ms",
                    &heartbeat,
                    "--election-timeout-ms",
                    &election,
                ];
                if args.plaintext_peers {
                    extra.push("--insecure-plaintext-peers");
                }
                Sys::Keelson(Cluster::start(&bin, MEMBERS as u64, &extra))
            }
            Kind::Etcd => Sys::Etcd(Etcd::start(args)?),
        };
        sys.settled_leader()
            .await
            .ok_or_else(|| anyhow!("{kind:?}: no leader within {SETTLE_TIMEOUT:?}"))?;
        Ok(sys)
    }

    fn kind(&self) -> Kind {
        match self {
            Sys::Keelson(_) => Kind::Keelson,
            Sys::Etcd(_) => Kind::Etcd,
        }
    }

    /// A write path with its own connections (so each load client has its own).
    fn writer(&self) -> Writer {
        match self {
            Sys::Keelson(c) => Writer::Keelson(
                (1..=MEMBERS as u64)
                    .map(|id| Kv::new(&c.url(id), REQUEST_TIMEOUT))
                    .collect(),
            ),
            Sys::Etcd(e) => Writer::Etcd(
                reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .expect("http client"),
                e.urls(),
            ),
        }
    }

    /// Waits until every running member agrees on one leader; returns it.
    async fn settled_leader(&self) -> Option<usize> {
        match self {
            Sys::Keelson(c) => c
                .wait_leader(SETTLE_TIMEOUT)
                .await
                .map(|id| id as usize - 1),
            Sys::Etcd(e) => e.settled_leader().await,
        }
    }

    /// The highest term any member reports: it rises by one at least with every election.
    async fn term(&self) -> u64 {
        let mut term = 0;
        for m in 0..MEMBERS {
            let t = match self {
                Sys::Keelson(c) => c
                    .status(m as u64 + 1)
                    .await
                    .and_then(|s| s["term"].as_u64()),
                Sys::Etcd(e) => e
                    .call(m, "/v3/maintenance/status", &json!({}))
                    .await
                    .and_then(|s| s["raftTerm"].as_str()?.parse().ok()),
            };
            term = term.max(t.unwrap_or(0));
        }
        term
    }

    /// The index member `m` has applied.
    async fn applied(&self, m: usize) -> Option<u64> {
        match self {
            Sys::Keelson(c) => c.status(m as u64 + 1).await?["applied_index"].as_u64(),
            Sys::Etcd(e) => {
                let s = e.call(m, "/v3/maintenance/status", &json!({})).await?;
                s["raftAppliedIndex"].as_str()?.parse().ok()
            }
        }
    }

    /// Waits (bounded) until the cluster has a settled leader and member `m` has applied
    /// everything the leader had applied by then.
    async fn wait_caught_up(&self, m: usize) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let Some(leader) = self.settled_leader().await else {
            return;
        };
        let target = self.applied(leader).await.unwrap_or(0);
        while Instant::now() < deadline && self.applied(m).await.unwrap_or(0) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL member `m`.
    fn kill(&mut self, m: usize) {
        match self {
            Sys::Keelson(c) => c.kill(m as u64 + 1),
            Sys::Etcd(e) => e.kill(m),
        }
    }

    /// SIGTERM to member `m`, without waiting.
    fn signal_term(&self, m: usize) {
        if let Some(pid) = self.pid(m) {
            // SAFETY: signalling a child process this bench started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }

    /// Waits (at most 15 s, then SIGKILL) until member `m` has exited, and reaps it.
    async fn reap(&mut self, m: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.pid(m).is_some() && Instant::now() < deadline && !self.exited(m) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill(m);
    }

    /// True once member `m`'s process has exited.
    fn exited(&mut self, m: usize) -> bool {
        let child = match self {
            Sys::Keelson(c) => return c.has_exited(m as u64 + 1),
            Sys::Etcd(e) => e.children[m].as_mut(),
        };
        child.map_or(true, |c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Starts member `m` again on its data.
    fn spawn(&mut self, m: usize) {
        match self {
            Sys::Keelson(c) => c.spawn(m as u64 + 1),
            Sys::Etcd(e) => e.spawn(m).unwrap_or_else(|err| eprintln!("bench: {err:#}")),
        }
    }

    /// Each member's VmRSS (KiB; 0 for one not running).
    fn rss_kib(&self) -> Vec<u64> {
        (0..MEMBERS)
            .map(|m| self.pid(m).map_or(0, rss_kib))
            .collect()
    }

    fn pid(&self, m: usize) -> Option<u32> {
        match self {
            Sys::Keelson(c) => c.pid(m as u64 + 1),
            Sys::Etcd(e) => e.children[m].as_ref().map(|c| c.id()),
        }
    }

    fn data_dir(&self, m: usize) -> PathBuf {
        match self {
            Sys::Keelson(c) => c.spec(m as u64 + 1).data_dir.clone(),
            Sys::Etcd(e) => e.root.join(format!("e{}.data", m + 1)),
        }
    }

    /// True when member `m` answers a local (serializable) read of `key` with a value.
    async fn read_local(&self, m: usize, key: &str) -> bool {
        match self {
            Sys::Keelson(c) => {
                let kv = Kv::new(&c.url(m as u64 + 1), Duration::from_secs(1));
                matches!(kv.get(key, true).await, Ok(Some(_)))
            }
            Sys::Etcd(e) => {
                let body = json!({"key": base64(key.as_bytes()), "serializable": true});
                let v = e.call(m, "/v3/kv/range", &body).await;
                v.is_some_and(|v| v["kvs"].as_array().is_some_and(|a| !a.is_empty()))
            }
        }
    }
}

/// Three etcd members as child processes on 127.0.2.1-3, in a temporary directory that is
/// removed (and the processes killed) on drop.
struct Etcd {
    bin: PathBuf,
    /// `--heartbeat-interval` and `--election-timeout`, in ms.
    timers: (u64, u64),
    root: PathBuf,
    peers: Vec<SocketAddr>,
    clients: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl Etcd {
    fn start(args: &BenchArgs) -> anyhow::Result<Etcd> {
        let root =
            std::env::temp_dir().join(format!("keelson-bench-etcd-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&root)?;
        let ip = |m: usize| Ipv4Addr::new(127, 0, 2, m as u8 + 1);
        let mut etcd = Etcd {
            bin: args.etcd_bin.clone(),
            timers: (args.etcd_heartbeat_ms, args.etcd_election_ms),
            root,
            peers: (0..MEMBERS).map(|m| free_addr(ip(m))).collect(),
            clients: (0..MEMBERS).map(|m| free_addr(ip(m))).collect(),
            children: (0..MEMBERS).map(|_| None).collect(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
        };
        for m in 0..MEMBERS {
            etcd.spawn(m)?;
        }
        Ok(etcd)
    }

    fn urls(&self) -> Vec<String> {
        self.clients.iter().map(|a| format!("http://{a}")).collect()
    }

    /// Starts member `m`; the `--initial-*` flags are ignored once its data directory exists.
    fn spawn(&mut self, m: usize) -> anyhow::Result<()> {
        let cluster = (0..MEMBERS)
            .map(|i| format!("e{}=http://{}", i + 1, self.peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("e{}.log", m + 1)))?;
        let (peer, client) = (
            format!("http://{}", self.peers[m]),
            format!("http://{}", self.clients[m]),
        );
        let child = Command::new(&self.bin)
            .args(["--name", &format!("e{}", m + 1)])
            .arg("--data-dir")
            .arg(self.root.join(format!("e{}.data", m + 1)))
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", "keelson-bench"])
            .args(["--heartbeat-interval", &self.timers.0.to_string()])
            .args(["--election-timeout", &self.timers.1.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "spawn {} (install etcd-server, or pass --skip-etcd)",
                    self.bin.display()
                )
            })?;
        self.children[m] = Some(child);
        Ok(())
    }

    fn kill(&mut self, m: usize) {
        if let Some(mut child) = self.children[m].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// POSTs `body` to `path` on member `m` with a short timeout; the JSON answer if any.
    async fn call(&self, m: usize, path: &str, body: &Value) -> Option<Value> {
        let req = self.http.post(format!("http://{}{path}", self.clients[m]));
        let resp = req
            .timeout(Duration::from_millis(500))
            .json(body)
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// Waits until every running member reports the same leader, and that leader is itself
    /// running (`/v3/maintenance/status`: `leader` is a member id, `header.member_id` its own).
    async fn settled_leader(&self) -> Option<usize> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            let mut seen = Vec::new();
            for m in (0..MEMBERS).filter(|m| self.children[*m].is_some()) {
                match self.call(m, "/v3/maintenance/status", &json!({})).await {
                    Some(s) => {
                        seen.push((m, s["header"]["member_id"].clone(), s["leader"].clone()))
                    }
                    None => seen.clear(),
                }
                if seen.is_empty() {
                    break;
                }
            }
            let leader = seen.first().map(|(_, _, l)| l.clone());
            if seen.len() == self.children.iter().flatten().count()
                && seen.iter().all(|(_, _, l)| Some(l) == leader.as_ref())
            {
                if let Some((m, _, _)) = seen.iter().find(|(_, id, l)| id == l) {
                    return Some(*m);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in 0..MEMBERS {
            self.kill(m);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Standard base64 with padding, as etcd's JSON gateway wants for keys and values.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The `q` quantile of sorted `v`, in milliseconds (NaN if empty).
pub(crate) fn pct_ms(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

/// A markdown table.
pub(crate) fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let rule: Vec<String> = header.iter().map(|_| "---".to_string()).collect();
    let body: String = rows.iter().map(|r| line(r)).collect();
    format!("{}{}{body}\n", line(header), line(&rule))
}

/// The first line of `cmd`'s output, if it runs.
fn first_line(cmd: &mut Command) -> Option<String> {
    let out = String::from_utf8(cmd.output().ok()?.stdout).ok()?;
    out.lines().next().map(str::to_string)
}

/// The markdown report.
/// The election settings both systems ran with.
fn timers(args: &BenchArgs) -> String {
    format!(
        "Election settings: keelson heartbeat {} ms, election timeout {} ms; etcd heartbeat {} \
         ms, election timeout {} ms.",
        args.raft_heartbeat_ms,
        args.raft_election_ms,
        args.etcd_heartbeat_ms,
        args.etcd_election_ms
    )
}

/// The table of a stop phase: rounds acknowledged and the times to the next write.
fn stop_table(results: &[Results], of: impl Fn(&Results) -> (&Vec<Duration>, usize)) -> String {
    let header = ["system", "acknowledged", "p50 ms", "p99 ms", "max ms"].map(String::from);
    let rows: Vec<Vec<String>> = (results.iter())
        .map(|r| {
            let (f, errors) = of(r);
            let q = |q| format!("{:.0}", pct_ms(f, q));
            vec![
                r.kind.name().into(),
                format!("{}/{}", f.len(), f.len() + errors),
                q(0.5),
                q(0.99),
                q(1.0),
            ]
        })
        .collect();
    table(&header, &rows)
}

fn render(args: &BenchArgs, results: &[Results]) -> String {
    let cpu = first_line(Command::new("sh").args(["-c", "grep -m1 'model name' /proc/cpuinfo"]));
    let cpu = cpu
        .as_deref()
        .and_then(|l| l.split(": ").nth(1))
        .unwrap_or("?");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = first_line(Command::new("uname").arg("-r")).unwrap_or_default();
    let etcd = first_line(Command::new(&args.etcd_bin).arg("--version"));
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut s = format!(
        "# keelson performance, side by side with etcd\n\n\
         Produced by `{command}` (`keelson bench --help` lists the flags).\n\n\
         - Machine: {cores} cores ({cpu}), Linux {kernel}; load generator and clusters share it.\n\
         - keelson {} (3 masters, release build, default flags but the election settings \
         below); {} (3 members, likewise). \
         One system runs at a time, on loopback.\n\
         - Every write is an upsert of a {} B value, acknowledged after an fsync on a majority \
         (both systems' defaults). Each client is a closed loop over its own HTTP/1.1 keep-alive \
         connections, client i talking to member i mod 3 for both systems (followers forward to \
         the leader): keelson `PUT /kv/KEY?upsert=true`, etcd `POST /v3/kv/put` (JSON gateway).\n\n",
        env!("CARGO_PKG_VERSION"),
        etcd.as_deref().unwrap_or("etcd not run"),
        args.value_size,
    );
    let ms = |v: f64| format!("{v:.1}");
    let mut header = vec!["clients".to_string()];
    for r in results {
        let k = r.kind.name();
        header.extend([
            format!("{k} ops/s"),
            format!("{k} p50 ms"),
            format!("{k} p99 ms"),
        ]);
        header.push(format!("{k} errors"));
    }
    if results.len() == 2 {
        header.extend(["keelson/etcd ops/s".into(), "keelson/etcd p99".into()]);
    }
    let measured = results.iter().map(|r| r.levels.len()).min().unwrap_or(0);
    let rows: Vec<Vec<String>> = (args.clients.iter().enumerate())
        .take(measured)
        .map(|(i, c)| {
            let mut row = vec![c.to_string()];
            for l in results.iter().map(|r| &r.levels[i]) {
                row.extend([
                    format!("{:.0}", l.ops_per_sec),
                    ms(pct_ms(&l.latencies, 0.5)),
                ]);
                row.extend([ms(pct_ms(&l.latencies, 0.99)), l.errors.to_string()]);
            }
            if let [k, e] = results {
                let (k, e) = (&k.levels[i], &e.levels[i]);
                row.push(format!("{:.2}", k.ops_per_sec / e.ops_per_sec));
                let p99 = |l: &Level| pct_ms(&l.latencies, 0.99);
                row.push(format!("{:.2}", p99(k) / p99(e)));
            }
            row
        })
        .collect();
    if results.iter().any(|r| !r.levels.is_empty()) {
        s += &format!(
            "## Write throughput and latency\n\n{} s per level after 1 s of warm-up.\n\n{}",
            args.duration_secs,
            table(&header, &rows)
        );
    }
    if results.iter().any(|r| r.one_client.is_some()) {
        s += &format!(
            "## One client: through the leader and through a follower\n\n\
             One closed-loop client for {} s after 1 s of warm-up, writing only through the \
             leader, then only through a follower (which forwards each write to the leader).\n\n",
            args.duration_secs
        );
        let header = ["system", "through", "ops/s", "p50 ms", "p99 ms", "errors"];
        let rows: Vec<Vec<String>> = (results.iter())
            .filter_map(|r| Some((r.kind, r.one_client.as_ref()?)))
            .flat_map(|(kind, (leader, follower))| {
                [("leader", leader), ("follower", follower)].map(|(through, l)| {
                    vec![
                        kind.name().into(),
                        through.into(),
                        format!("{:.0}", l.ops_per_sec),
                        ms(pct_ms(&l.latencies, 0.5)),
                        ms(pct_ms(&l.latencies, 0.99)),
                        l.errors.to_string(),
                    ]
                })
            })
            .collect();
        s += &table(&header.map(String::from), &rows);
    }
    if args.failovers > 0 && args.runs(Phase::Failover) && !results.is_empty() {
        s += &format!(
            "## Failover: SIGKILL of the leader to the next acknowledged write\n\n\
             {} rounds per system: SIGKILL the leader; every 10 ms send a probe write (1 s \
             timeout) to a survivor until one is acknowledged; restart the killed member; wait \
             until all 3 agree on a leader and it has applied what the leader had. {}\n\n",
            args.failovers,
            timers(args)
        );
        s += &stop_table(results, |r| (&r.failovers, r.failover_errors));
    }
    if results.iter().any(|r| r.stability.is_some()) {
        s += &format!(
            "## Stability: leader changes under load\n\n\
             {} closed-loop writers for {} s, as in the write phase; leader changes are the rise \
             of the highest term any member reports (each election raises it at least by one). \
             {}\n\n",
            args.stability_clients,
            args.stability_secs,
            timers(args)
        );
        let header = ["system", "ops/s", "p99 ms", "errors", "leader changes"].map(String::from);
        let rows: Vec<Vec<String>> = (results.iter())
            .filter_map(|r| Some((r.kind, r.stability.as_ref()?)))
            .map(|(kind, (l, changes))| {
                vec![
                    kind.name().into(),
                    format!("{:.0}", l.ops_per_sec),
                    format!("{:.1}", pct_ms(&l.latencies, 0.99)),
                    l.errors.to_string(),
                    changes.to_string(),
                ]
            })
            .collect();
        s += &table(&header, &rows);
    }
    if args.stops > 0 && args.runs(Phase::LeaderStop) && !results.is_empty() {
        s += &format!(
            "## Leader stop: SIGTERM of the leader to the next acknowledged write\n\n\
             {} rounds per system, as the failover rounds but with SIGTERM: a graceful stop, \
             where each system hands leadership to a follower before it exits (keelson: \
             `keelson_raft::handover`; etcd: its leadership transfer on stop). {}\n\n",
            args.stops,
            timers(args)
        );
        s += &stop_table(results, |r| (&r.stops, r.stop_errors));
    }
    if args.objects > 0 && args.runs(Phase::Memory) && !results.is_empty() {
        s += &format!(
            "## Memory and restart with {} objects of {} B\n\n\
             A fresh cluster is loaded by 64 writers; then VmRSS of every member \
             (/proc/PID/status) and the size of its data directory; then a follower is SIGKILLed \
             and restarted, timed from the spawn until it answers a local read of the last key \
             written (keelson `GET /kv/KEY?resourceVersion=0`, etcd serializable range).\n\n",
            args.objects, args.value_size
        );
        let header = [
            "system",
            "load s",
            "RSS MiB each",
            "data MiB each",
            "restart ms",
        ];
        let header = header.map(String::from);
        let rows: Vec<Vec<String>> = (results.iter())
            .filter_map(|r| Some((r.kind, r.memory.as_ref()?)))
            .map(|(kind, m)| {
                let mib = |v: &[u64], unit: f64| {
                    let v: Vec<String> = v
                        .iter()
                        .map(|x| format!("{:.0}", *x as f64 / unit))
                        .collect();
                    v.join(" / ")
                };
                let restart = m.restart.map(|d| format!("{:.0}", d.as_secs_f64() * 1e3));
                vec![
                    kind.name().into(),
                    format!("{:.1}", m.load_secs),
                    mib(&m.rss_kib, 1024.0),
                    mib(&m.disk_bytes, 1048576.0),
                    restart.unwrap_or_else(|| "not serving".into()),
                ]
            })
            .collect();
        s += &table(&header, &rows);
    }
    s + "## Caveats\n\n\
         - A single run on a shared 2-core machine: the load generator competes with the \
         cluster for CPU, and every member's fsync goes to the same disk. Other work on \
         the machine adds noise (repeated runs differed by up to 1.7x in keelson throughput), \
         so compare the two systems within one run; these are not absolute capacities.\n\
         - etcd preallocates 64 MB WAL segments, which dominates its data directory size.\n\
         - Timings are measured only; no test asserts them.\n"
}
