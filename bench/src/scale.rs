//! The scale phases of `keelson bench`, with hollow nodes simulated in this process through the
//! real API (issue #5's "in-test harness"): Node objects registered with `POST /api/v1/nodes`
//! and kept Ready by one heartbeat stream each to the leader (`POST /agent/heartbeats`, one line
//! per beat, as `keelson agent` sends them). No agent processes run, so no pod status is
//! reported: the phases measure binding and the heartbeat path, not pod start-up.
//!
//! - `scheduling`: pods bound per second, from the first create to the last pod having
//!   `spec.nodeName` (watched); then convergence of a replication controller after a SIGKILL
//!   of the leader and a change of its replica count.
//! - `heartbeats`: CPU of the leader and of the followers with every node beating, against the
//!   same cluster idle, in the same run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::follow::{follow_pods, PodEvent, PodView};
use super::harness::{
    active, command_line, cpu_secs, loadavg, name_of, node_of, register_nodes, wait_nodes_ready,
    Api, Heartbeats,
};
use super::{table, BenchArgs, Kind, Sys, MEMBERS};

/// How the scheduling phase makes its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedMode {
    /// Replication controllers of at most `--rc-replicas` replicas each, created at once: the
    /// replication manager creates the pods.
    Rc,
    /// Pods created one by one through the API by `--api-clients` concurrent clients.
    Pods,
}

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("hollow-{i:05}")).collect()
}

fn template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels},
           "spec": {"containers": [{"name": "c", "image": "user/mysite:latest",
                                    "resources": {"requests": {"cpu": "100m"}}}]}})
}

fn rc(name: &str, replicas: usize, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController",
           "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": labels.clone(), "template": template(labels)}})
}

/// Registers `n` hollow nodes, starts their heartbeats and waits until all are Ready; returns
/// the heartbeats and the time each step took.
pub(crate) async fn hollow_nodes(
    api: &Api,
    n: usize,
    every: Duration,
) -> anyhow::Result<(Heartbeats, Duration, Duration)> {
    let names = node_names(n);
    let t = Instant::now();
    register_nodes(api, &names, 32).await?;
    let registered = t.elapsed();
    let beats = Heartbeats::start(api.urls.clone(), &names, every);
    wait_nodes_ready(api, &names, Duration::from_secs(180)).await?;
    Ok((beats, registered, t.elapsed()))
}

/// Convergence of a replication controller after a leader kill.
pub struct Convergence {
    pub from: usize,
    pub to: usize,
    /// From the SIGKILL to the acknowledgement of the replica change (on a survivor).
    pub patched: Option<Duration>,
    /// From the SIGKILL to exactly `to` active pods, all bound, and nothing else.
    pub exact: Option<Duration>,
    /// Most active pods of the controller seen at once after the kill.
    pub max_active: usize,
    /// Pods whose nodeName changed after being set (bound twice).
    pub rebound: usize,
    /// Active pods, bound pods, all pods of the controller in a linearizable list at the end.
    pub final_counts: (usize, usize, usize),
    /// The killed leader and the new one.
    pub killed: u64,
    pub new_leader: Option<u64>,
}

/// Results of the scheduling phase.
pub struct Scheduling {
    pub nodes: usize,
    pub pods: usize,
    pub mode: SchedMode,
    pub register: Duration,
    pub ready: Duration,
    /// From the first create sent to the last create acknowledged.
    pub creates_done: Option<Duration>,
    /// From the first create sent to the last pod seen with a node.
    pub all_bound: Option<Duration>,
    /// From the first create sent to the last pod seen at all, and to the first pod bound.
    pub all_seen: Option<Duration>,
    pub first_bound: Option<Duration>,
    /// Pods that could not be created (after retries).
    pub failed_creates: usize,
    /// (passes, seconds) of the scheduler's and the replication manager's loops on the leader
    /// once every pod was bound.
    pub loops: Vec<(String, Option<f64>, Option<f64>)>,
    pub bound: usize,
    pub rebound: usize,
    /// Bound pods per node over every node (min, median, max): placement quality.
    pub per_node: Option<(usize, usize, usize)>,
    pub lists: usize,
    pub convergence: Option<Convergence>,
    pub load_before: String,
    pub load_after: String,
}

/// Phase `scheduling`.
pub async fn scheduling(args: &BenchArgs) -> anyhow::Result<Scheduling> {
    let (n_nodes, n_pods) = (args.nodes, args.pods);
    eprintln!(
        "bench: scheduling: {n_nodes} hollow nodes, {n_pods} pods ({:?})",
        args.sched_mode
    );
    let mut sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &mut sys else {
        bail!("not keelson")
    };
    let api = Api::new(cluster)?;
    let load_before = loadavg();
    let (beats, register, ready) =
        hollow_nodes(&api, n_nodes, Duration::from_millis(args.heartbeat_ms)).await?;
    eprintln!(
        "bench: scheduling: {n_nodes} nodes registered in {:.1} s, Ready after {:.1} s",
        register.as_secs_f64(),
        ready.as_secs_f64()
    );

    let (mut events, follower) = follow_pods(api.urls.clone(), "default", "app=sched");
    let mut view = PodView::default();
    if let Some(ev) = events.recv().await {
        view.apply(ev);
    }
    let t0 = Instant::now();
    let creates = match args.sched_mode {
        SchedMode::Rc => create_controllers(&api, n_pods, args.rc_replicas.max(1)),
        SchedMode::Pods => create_pods(&api, n_pods, args.api_clients),
    };
    let deadline = t0 + Duration::from_secs(args.sched_timeout_secs);
    let b = watch_binding(creates, &mut events, &mut view, n_pods, t0, deadline).await;
    follower.abort();
    drop(events);
    let all_bound = (b.bound_at.len() >= n_pods - b.failed_creates)
        .then(|| b.bound_at.values().map(|(_, at)| *at).max())
        .flatten()
        .map(|last| last - t0);
    let all_seen = (b.seen_at.len() >= n_pods - b.failed_creates)
        .then(|| b.seen_at.values().max().map(|last| *last - t0))
        .flatten();
    let first_bound = b.bound_at.values().map(|(_, at)| *at - t0).min();
    let per_node = spread(n_nodes, b.bound_at.values().map(|(node, _)| node.as_str()));
    // The pass that bound the pods is counted once it ends (after its events are written).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loops = controller_loops(cluster, &api).await;
    eprintln!(
        "bench: scheduling: {}/{n_pods} bound in {:?} ({:.0} pods/s)",
        b.bound_at.len(),
        all_bound,
        all_bound.map_or(f64::NAN, |d| n_pods as f64 / d.as_secs_f64())
    );
    let convergence = if args.converge_from > 0 {
        Some(converge(cluster, &api, args).await?)
    } else {
        None
    };
    let load_after = loadavg();
    beats.stop();
    drop(sys);
    Ok(Scheduling {
        nodes: n_nodes,
        pods: n_pods,
        mode: args.sched_mode,
        register,
        ready,
        creates_done: b.creates_done,
        all_bound,
        all_seen,
        first_bound,
        failed_creates: b.failed_creates,
        loops,
        bound: b.bound_at.len(),
        rebound: b.rebound,
        per_node,
        lists: view.lists,
        convergence,
        load_before,
        load_after,
    })
}

/// Pods per node over `n_nodes` nodes (those without a pod count 0): min, median, max.
fn spread<'a>(
    n_nodes: usize,
    nodes: impl Iterator<Item = &'a str>,
) -> Option<(usize, usize, usize)> {
    let mut per: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        *per.entry(n).or_default() += 1;
    }
    let mut counts: Vec<usize> = per.into_values().collect();
    counts.resize(n_nodes.max(counts.len()), 0);
    counts.sort_unstable();
    Some((*counts.first()?, counts[counts.len() / 2], *counts.last()?))
}

/// Creates `n_pods` pods as replication controllers of `per` replicas each, one task per
/// controller; each task returns how many pods it failed to create.
pub(crate) fn create_controllers(api: &Api, n_pods: usize, per: usize) -> JoinSet<usize> {
    let mut creates = JoinSet::new();
    for (i, start) in (0..n_pods).step_by(per).enumerate() {
        let api = api.clone();
        let replicas = per.min(n_pods - start);
        creates.spawn(async move {
            let body = rc(
                &format!("sched-{i}"),
                replicas,
                json!({"app": "sched", "rc": format!("sched-{i}")}),
            );
            let path = "/api/v1/namespaces/default/replicationcontrollers";
            match api.post(i, path, &body).await {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("bench: scheduling: create sched-{i}: {e:#}");
                    replicas
                }
            }
        });
    }
    creates
}

/// Creates `n_pods` pods one by one from `clients` tasks (retrying, and taking a conflict on a
/// retry as the first attempt's pod); each task returns how many pods it failed to create.
fn create_pods(api: &Api, n_pods: usize, clients: usize) -> JoinSet<usize> {
    let mut creates = JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for c in 0..clients {
        let (api, next) = (api.clone(), next.clone());
        creates.spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_pods {
                    return failed;
                }
                let mut pod = template(json!({"app": "sched"}));
                pod["apiVersion"] = json!("v1");
                pod["kind"] = json!("Pod");
                pod["metadata"]["name"] = json!(format!("sched-{i}"));
                // A retry after a timeout may find the first attempt's pod.
                let mut tries = 0;
                loop {
                    let r = api
                        .call(
                            c + tries,
                            reqwest::Method::POST,
                            "/api/v1/namespaces/default/pods",
                            Some(&pod),
                            "application/json",
                        )
                        .await;
                    match r {
                        Ok((code, _)) if (200..300).contains(&code) => break,
                        Ok((409, _)) if tries > 0 => break,
                        r if tries >= 4 => {
                            let why = match r {
                                Ok((code, v)) => format!("{code} {v}"),
                                Err(e) => format!("{e:#}"),
                            };
                            eprintln!("bench: scheduling: create sched-{i}: {why}");
                            failed += 1;
                            break;
                        }
                        _ => tries += 1,
                    }
                }
            }
        });
    }
    creates
}

/// What the pod watch saw while the pods were created and bound.
struct Binding {
    /// Each pod's first node and when it was seen bound.
    bound_at: HashMap<String, (String, Instant)>,
    /// When each pod was first seen.
    seen_at: HashMap<String, Instant>,
    /// Pods seen bound to a second node.
    rebound: usize,
    /// From `t0` to the last create acknowledged.
    creates_done: Option<Duration>,
    failed_creates: usize,
}

/// Follows the pod watch until the creates are done and every pod created is bound, or until
/// `deadline`; reports progress every 10 s.
async fn watch_binding(
    mut creates: JoinSet<usize>,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<PodEvent>,
    view: &mut PodView,
    n_pods: usize,
    t0: Instant,
    deadline: Instant,
) -> Binding {
    let mut b = Binding {
        bound_at: HashMap::new(),
        seen_at: HashMap::new(),
        rebound: 0,
        creates_done: None,
        failed_creates: 0,
    };
    let mut report = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            Some(r) = creates.join_next(), if !creates.is_empty() => {
                b.failed_creates += r.unwrap_or(0);
                if creates.is_empty() {
                    b.creates_done = Some(t0.elapsed());
                }
            }
            _ = report.tick() => {
                eprintln!(
                    "bench: scheduling: {:.0} s: {} pods seen, {} bound",
                    t0.elapsed().as_secs_f64(),
                    view.pods.len(),
                    b.bound_at.len()
                );
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let (pods, at) = view.apply(ev);
                for p in pods {
                    b.seen_at.entry(name_of(&p)).or_insert(at);
                    let node = node_of(&p);
                    if node.is_empty() {
                        continue;
                    }
                    match b.bound_at.get(&name_of(&p)) {
                        None => {
                            b.bound_at.insert(name_of(&p), (node.to_string(), at));
                        }
                        Some((first, _)) if first != node => b.rebound += 1,
                        _ => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
        if creates.is_empty() && b.bound_at.len() >= n_pods - b.failed_creates {
            break;
        }
    }
    b
}

/// (controller, passes, seconds) of the scheduler's and the replication manager's loops, from
/// the leader's metrics (none if no leader answers).
async fn controller_loops(
    cluster: &keelson_chaos::Cluster,
    api: &Api,
) -> Vec<(String, Option<f64>, Option<f64>)> {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let text = match leader {
        Some(l) => async {
            api.http
                .get(format!("{}/metrics", cluster.url(l)))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
        .await
        .unwrap_or_default(),
        None => String::new(),
    };
    ["scheduler", "replication"]
        .iter()
        .map(|c| {
            let m = |suffix: &str| {
                metric(
                    &text,
                    &format!(
                        "keelson_controller_sync_duration_seconds_{suffix}{{controller=\"{c}\"}}"
                    ),
                )
            };
            (c.to_string(), m("count"), m("sum"))
        })
        .collect()
}

/// Counts of a controller's pods in `view`: (active, active and bound, all).
fn counts(view: &HashMap<String, Value>) -> (usize, usize, usize) {
    let act: Vec<&Value> = view.values().filter(|p| active(p)).collect();
    let bound = act.iter().filter(|p| !node_of(p).is_empty()).count();
    (act.len(), bound, view.len())
}

/// A replication controller at `--converge-from` replicas, all bound; SIGKILL of the leader;
/// at once a change to `--converge-to` through a survivor; time until the controller has
/// exactly that many active pods, all bound, and nothing else (watched on a survivor).
async fn converge(
    cluster: &mut keelson_chaos::Cluster,
    api: &Api,
    args: &BenchArgs,
) -> anyhow::Result<Convergence> {
    let (from, to) = (args.converge_from, args.converge_to);
    eprintln!("bench: scheduling: convergence {from} → {to} across a leader kill");
    let labels = json!({"app": "converge"});
    api.post(
        0,
        "/api/v1/namespaces/default/replicationcontrollers",
        &rc("converge", from, labels),
    )
    .await?;
    wait_at_count(cluster, api, from).await?;
    let (leader, survivors, mut events, follower, mut view) =
        follow_from_survivors(cluster, api).await?;
    let first_node: HashMap<String, String> = view
        .pods
        .values()
        .map(|p| (name_of(p), node_of(p).to_string()))
        .collect();
    // The kill, and the change right after it.
    cluster.kill(leader);
    let killed_at = Instant::now();
    let patcher = patch_replicas(api, &survivors, to, killed_at);
    let deadline = killed_at + Duration::from_secs(args.sched_timeout_secs);
    let seen = watch_convergence(
        patcher,
        &mut events,
        &mut view,
        first_node,
        to,
        killed_at,
        deadline,
    )
    .await;
    follower.abort();
    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let final_view = converge_pods(api, survivors[0]).await?;
    Ok(Convergence {
        from,
        to,
        patched: seen.patched,
        exact: seen.exact,
        max_active: seen.max_active,
        rebound: seen.rebound,
        final_counts: counts(&final_view),
        killed: leader,
        new_leader,
    })
}

/// The pods of the `converge` controller, by name, listed through member `m`.
async fn converge_pods(api: &Api, m: usize) -> anyhow::Result<HashMap<String, Value>> {
    let v = api
        .get(
            m,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dconverge",
        )
        .await?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (name_of(p), p.clone()))
        .collect())
}

/// Waits until the controller is at count: `from` active pods, all bound, in two lists a
/// second apart (polled: nothing is timed yet); fails after 5 minutes, with the master logs.
async fn wait_at_count(
    cluster: &mut keelson_chaos::Cluster,
    api: &Api,
    from: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut at_count = 0;
    let mut last = (0, 0, 0);
    while at_count < 2 {
        if Instant::now() > deadline {
            let logs = save_logs(cluster);
            bail!(
                "the controller never reached {from} bound pods: last list (active, bound, \
                 all) {last:?}; master logs copied to {logs}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        match converge_pods(api, 0).await {
            Ok(pods) => {
                last = counts(&pods);
                at_count = if last == (from, from, from) {
                    at_count + 1
                } else {
                    0
                };
            }
            Err(e) => eprintln!("bench: scheduling: convergence: list: {e:#}"),
        }
    }
    Ok(())
}

/// The leader as of now (leadership may move under load), a watch of the controller's pods on
/// the two others, and the leader checked again once the watch has its first list.
async fn follow_from_survivors(
    cluster: &keelson_chaos::Cluster,
    api: &Api,
) -> anyhow::Result<(
    u64,
    Vec<usize>,
    tokio::sync::mpsc::UnboundedReceiver<PodEvent>,
    tokio::task::JoinHandle<()>,
    PodView,
)> {
    loop {
        let leader = cluster
            .wait_leader(Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow!("no leader"))?;
        let survivors: Vec<usize> = (0..MEMBERS).filter(|m| *m as u64 + 1 != leader).collect();
        let urls: Vec<String> = survivors.iter().map(|m| api.urls[*m].clone()).collect();
        let (mut events, follower) = follow_pods(urls, "default", "app=converge");
        let mut view = PodView::default();
        match events.recv().await {
            Some(ev) => {
                view.apply(ev);
            }
            None => bail!("pod follower ended"),
        }
        if cluster.wait_leader(Duration::from_secs(5)).await == Some(leader) {
            return Ok((leader, survivors, events, follower, view));
        }
        follower.abort();
    }
}

/// Sets the controller's replicas to `to` through the survivors in turn, every 50 ms until one
/// acknowledges (for 60 s after the kill); the time from the kill to that acknowledgement.
fn patch_replicas(
    api: &Api,
    survivors: &[usize],
    to: usize,
    killed_at: Instant,
) -> tokio::task::JoinHandle<Option<Duration>> {
    let patch = json!({"spec": {"replicas": to}});
    let path = "/api/v1/namespaces/default/replicationcontrollers/converge";
    let (api, survivors) = (api.clone(), survivors.to_vec());
    tokio::spawn(async move {
        for i in 0usize.. {
            let r = api
                .call(
                    survivors[i % survivors.len()],
                    reqwest::Method::PATCH,
                    path,
                    Some(&patch),
                    "application/merge-patch+json",
                )
                .await;
            if matches!(r, Ok((c, _)) if (200..300).contains(&c)) {
                return Some(killed_at.elapsed());
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    })
}

/// What the survivors' watch saw after the kill.
struct Converged {
    patched: Option<Duration>,
    exact: Option<Duration>,
    max_active: usize,
    rebound: usize,
}

/// Follows the watch after the kill until the controller has been at exactly `to` pods, all
/// bound, for 3 s after the patch was acknowledged, or until `deadline`.
async fn watch_convergence(
    patcher: tokio::task::JoinHandle<Option<Duration>>,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<PodEvent>,
    view: &mut PodView,
    mut first_node: HashMap<String, String>,
    to: usize,
    killed_at: Instant,
    deadline: Instant,
) -> Converged {
    let mut patched: Option<Option<Duration>> = None;
    let (mut exact, mut max_active, mut rebound) = (None, 0, 0);
    let mut patcher = Some(patcher);
    let mut reached: Option<Instant> = None;
    let mut last_event = killed_at;
    loop {
        tokio::select! {
            r = async { patcher.as_mut().expect("patcher").await }, if patcher.is_some() => {
                patched = Some(r.unwrap_or(None));
                patcher = None;
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let (pods, at) = view.apply(ev);
                for p in pods {
                    let node = node_of(&p);
                    if node.is_empty() {
                        continue;
                    }
                    match first_node.get(&name_of(&p)) {
                        Some(f) if !f.is_empty() && f != node => rebound += 1,
                        Some(f) if !f.is_empty() => {}
                        _ => {
                            first_node.insert(name_of(&p), node.to_string());
                        }
                    }
                }
                last_event = at;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let (act, bound, all) = counts(&view.pods);
        max_active = max_active.max(act);
        if (act, bound, all) == (to, to, to) {
            reached.get_or_insert(last_event);
        } else {
            reached = None;
        }
        if let (None, Some(_), Some(at)) = (exact, patched, reached) {
            exact = Some(at - killed_at);
            eprintln!(
                "bench: scheduling: at {to} exactly after {:?}",
                at - killed_at
            );
        }
        // Watch a few seconds more once there, for overshoot and re-binding.
        if exact.is_some_and(|e| killed_at.elapsed() > e + Duration::from_secs(3)) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    Converged {
        patched: patched.flatten(),
        exact,
        max_active,
        rebound,
    }
}

/// Copies the masters' logs to a folder of their own (the cluster's folder goes with it);
/// returns its path.
fn save_logs(cluster: &keelson_chaos::Cluster) -> String {
    let dir = std::env::temp_dir().join(format!("keelson-bench-logs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for id in cluster.ids() {
        let name = format!("master-{id}.log");
        let _ = std::fs::copy(cluster.root().join(&name), dir.join(&name));
    }
    dir.display().to_string()
}

/// CPU (cores) of each master over one window, and of this process.
pub struct CpuWindow {
    pub leader: f64,
    pub followers: Vec<f64>,
    pub bench: f64,
    pub secs: f64,
    /// Heartbeats the leader counted in the window (`keelson_node_heartbeats_total`).
    pub beats: Option<f64>,
}

/// The value of the first sample of `metric` in a Prometheus text exposition.
fn metric(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with([' ', '{']))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

async fn window(
    cluster: &keelson_chaos::Cluster,
    api: &Api,
    leader: u64,
    secs: u64,
) -> anyhow::Result<CpuWindow> {
    let beats = |api: Api| async move {
        let text = api
            .http
            .get(format!("{}/metrics", api.urls[leader as usize - 1]))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric(&text, "keelson_node_heartbeats_total")
    };
    let pids: Vec<u32> = (1..=MEMBERS as u64)
        .map(|id| {
            cluster
                .pid(id)
                .ok_or_else(|| anyhow!("master {id} not running"))
        })
        .collect::<anyhow::Result<_>>()?;
    let me = std::process::id();
    let b0 = beats(api.clone()).await;
    let t0 = Instant::now();
    let c0: Vec<Option<f64>> = pids.iter().chain([&me]).map(|p| cpu_secs(*p)).collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let c1: Vec<Option<f64>> = pids.iter().chain([&me]).map(|p| cpu_secs(*p)).collect();
    let el = t0.elapsed().as_secs_f64();
    let b1 = beats(api.clone()).await;
    let cores: Vec<f64> = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => (b - a) / el,
            _ => f64::NAN,
        })
        .collect();
    let l = leader as usize - 1;
    Ok(CpuWindow {
        leader: cores[l],
        followers: (0..MEMBERS).filter(|m| *m != l).map(|m| cores[m]).collect(),
        bench: cores[MEMBERS],
        secs: el,
        beats: b0.zip(b1).map(|(a, b)| b - a),
    })
}

/// Results of the heartbeats phase.
pub struct HeartbeatCpu {
    pub nodes: usize,
    pub idle: CpuWindow,
    /// The nodes registered but silent (all Ready=Unknown).
    pub silent: CpuWindow,
    pub loaded: CpuWindow,
    pub ready: Duration,
    pub reconnects: u64,
    pub sent: u64,
    pub load_before: String,
    pub load_after: String,
}

/// Nodes whose Ready condition has `status`.
async fn ready_status_count(api: &Api, status: &str) -> usize {
    match api.get(0, "/api/v1/nodes").await {
        Ok(list) => list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == status)
                    })
            })
            .count(),
        Err(_) => 0,
    }
}

/// Phase `heartbeats`.
pub async fn heartbeats(args: &BenchArgs) -> anyhow::Result<HeartbeatCpu> {
    let n = args.nodes;
    eprintln!(
        "bench: heartbeats: {n} hollow nodes every {} ms, {} s windows",
        args.heartbeat_ms, args.cpu_window_secs
    );
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let api = Api::new(cluster)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let load_before = loadavg();
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| anyhow!("no leader"))?;
    let idle = window(cluster, &api, leader, args.cpu_window_secs).await?;
    eprintln!(
        "bench: heartbeats: idle: leader {:.3} cores, followers {:?}",
        idle.leader, idle.followers
    );
    // The same nodes registered but silent: the lifecycle loop's pass over them every second
    // without a beat (the first pass marks them Unknown; nothing is written after that).
    let names = node_names(n);
    register_nodes(&api, &names, 32).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready_status_count(&api, "Unknown").await < n {
        if Instant::now() > deadline {
            bail!("the silent nodes never all became Unknown");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let silent = window(cluster, &api, leader, args.cpu_window_secs).await?;
    eprintln!(
        "bench: heartbeats: {n} silent nodes: leader {:.3} cores, followers {:?}",
        silent.leader, silent.followers
    );
    let started = Instant::now();
    let beats = Heartbeats::start(
        api.urls.clone(),
        &names,
        Duration::from_millis(args.heartbeat_ms),
    );
    wait_nodes_ready(&api, &names, Duration::from_secs(180)).await?;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now_leader = cluster.wait_leader(Duration::from_secs(30)).await;
    if now_leader != Some(leader) {
        bail!("the leader changed ({leader} → {now_leader:?}) before the loaded window");
    }
    let loaded = window(cluster, &api, leader, args.cpu_window_secs).await?;
    eprintln!(
        "bench: heartbeats: {n} nodes: leader {:.3} cores, followers {:?}, {:?} beats",
        loaded.leader, loaded.followers, loaded.beats
    );
    let reconnects = beats.reconnects.load(Ordering::Relaxed);
    let sent = beats.sent.load(Ordering::Relaxed);
    let load_after = loadavg();
    beats.stop();
    drop(sys);
    Ok(HeartbeatCpu {
        nodes: n,
        idle,
        silent,
        loaded,
        ready,
        reconnects,
        sent,
        load_before,
        load_after,
    })
}

/// The scheduling section.
pub fn render_scheduling(args: &BenchArgs, r: &Scheduling) -> String {
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.1}", d.as_secs_f64()))
            .unwrap_or_else(|| "did not finish".into())
    };
    let rate = r
        .all_bound
        .map(|d| format!("{:.0}", r.bound as f64 / d.as_secs_f64()))
        .unwrap_or_else(|| {
            format!(
                "{} of {} bound within {} s",
                r.bound, r.pods, args.sched_timeout_secs
            )
        });
    let how = match r.mode {
        SchedMode::Rc => format!(
            "{} replication controllers of up to {} replicas each, created at once (the \
             replication manager creates the pods)",
            r.pods.div_ceil(args.rc_replicas.max(1)),
            args.rc_replicas
        ),
        SchedMode::Pods => format!(
            "{} pods created through `POST /api/v1/namespaces/default/pods` by {} concurrent \
             clients round-robin over the masters",
            r.pods, args.api_clients
        ),
    };
    let header = ["measure", "value"].map(String::from);
    let mut rows = vec![
        vec![
            "nodes registered (32 concurrent creates)".into(),
            format!("{} in {:.1} s", r.nodes, r.register.as_secs_f64()),
        ],
        vec![
            "all nodes Ready (from the first registration)".into(),
            format!("{:.1} s", r.ready.as_secs_f64()),
        ],
        vec![
            "first create sent → last create acknowledged".into(),
            format!("{} s", secs(r.creates_done)),
        ],
        vec![
            format!("first create sent → last of {} pods seen (watch)", r.pods),
            format!("{} s", secs(r.all_seen)),
        ],
        vec![
            "first create sent → first pod bound".into(),
            format!("{} s", secs(r.first_bound)),
        ],
        vec![
            format!("first create sent → last of {} pods bound", r.pods),
            format!("{} s", secs(r.all_bound)),
        ],
        vec!["**pods bound per second**".into(), format!("**{rate}**")],
        vec![
            "pods not created (failed after 5 attempts)".into(),
            r.failed_creates.to_string(),
        ],
        vec![
            "pods bound twice (nodeName changed)".into(),
            r.rebound.to_string(),
        ],
        vec![
            "placement: bound pods per node, min / median / max (cpu requested: 100m each)".into(),
            r.per_node
                .map_or("?".into(), |(lo, mid, hi)| format!("{lo} / {mid} / {hi}")),
        ],
    ];
    for (c, n, secs) in &r.loops {
        let v = |x: &Option<f64>, p: usize| x.map_or("?".into(), |x| format!("{x:.p$}"));
        rows.push(vec![
            format!(
                "leader's `{c}` loop, 5 s after the last binding: passes ended, seconds in them"
            ),
            format!("{}, {} s", v(n, 0), v(secs, 1)),
        ]);
    }
    let mut conv = String::new();
    if let Some(c) = &r.convergence {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "never".into())
        };
        rows.push(vec![
            format!(
                "convergence: SIGKILL of the leader → replica change {}→{} acknowledged",
                c.from, c.to
            ),
            ms(c.patched),
        ]);
        rows.push(vec![
            format!(
                "convergence: SIGKILL of the leader → exactly {} active pods, all bound",
                c.to
            ),
            ms(c.exact),
        ]);
        rows.push(vec![
            "convergence: most active pods seen at once; pods bound twice".into(),
            format!("{}; {}", c.max_active, c.rebound),
        ]);
        rows.push(vec![
            "convergence: final list (active / bound / all)".into(),
            format!(
                "{} / {} / {}",
                c.final_counts.0, c.final_counts.1, c.final_counts.2
            ),
        ]);
        conv = format!(
            " Then, on the same cluster (with those {} pods and the {} nodes still there), a \
             replication controller of {} replicas is brought to its count (all bound, for a \
             second); the leader (master {}) is SIGKILLed and right after that the replica count \
             is changed to {} with a JSON merge patch sent to the survivors (retried every 50 ms \
             until acknowledged); the controller's pods are watched on a survivor until exactly \
             {} are active, all bound, and no other pod of it exists, then 3 s more for \
             overshoot and re-binding. New leader: master {}.",
            r.pods,
            r.nodes,
            c.from,
            c.killed,
            c.to,
            c.to,
            c.new_leader.map_or("?".into(), |l| l.to_string())
        );
    }
    format!(
        "## Scheduling throughput: {} hollow nodes, {} pods (issue #5)\n\n\
         Produced by `{}`.\n\n\
         A fresh 3-master cluster. The hollow nodes are simulated in the bench process through \
         the real API: {} Node objects registered with `POST /api/v1/nodes` (4 cpu, 8Gi \
         each), kept Ready by one heartbeat stream each to the leader (`POST \
         /agent/heartbeats?node=NAME`, one line every {} ms, as `keelson agent` sends them); no \
         agent process runs, so no pod status is reported. Pods: {how}; each pod requests \
         100m cpu. A watch of the pods (an informer's cache, listed before the first create, \
         resumed when it ends, listed again only when its version expired: {} list(s)) times each pod's first event with `spec.nodeName`.{conv} Load average \
         (1 min) {} before, {} after.\n\n{}\
         Anchors: kube-scheduler binds about 100–300 pods/s; Nomad's C1M reached ~3,750 \
         containers/s on 5 servers; keelson's goal is 10× kube-scheduler (1,000–3,000 \
         pods/s).\n\n",
        r.nodes,
        r.pods,
        command_line(),
        r.nodes,
        args.heartbeat_ms,
        r.lists,
        r.load_before,
        r.load_after,
        table(&header, &rows)
    )
}

/// The heartbeats section.
pub fn render_heartbeats(args: &BenchArgs, r: &HeartbeatCpu) -> String {
    let c = |v: f64| format!("{v:.3}");
    let f = |w: &CpuWindow| {
        w.followers
            .iter()
            .map(|x| c(*x))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let beats = |w: &CpuWindow| {
        w.beats
            .map(|b| format!("{:.0}", b / w.secs))
            .unwrap_or_else(|| "?".into())
    };
    let header = [
        "condition",
        "leader cores",
        "follower cores",
        "bench process cores",
        "beats/s counted by the leader",
    ]
    .map(String::from);
    let rows = vec![
        vec![
            "idle (no nodes)".into(),
            c(r.idle.leader),
            f(&r.idle),
            c(r.idle.bench),
            beats(&r.idle),
        ],
        vec![
            format!("{} nodes registered, silent (Ready=Unknown)", r.nodes),
            c(r.silent.leader),
            f(&r.silent),
            c(r.silent.bench),
            beats(&r.silent),
        ],
        vec![
            format!("{} nodes beating every {} ms", r.nodes, args.heartbeat_ms),
            c(r.loaded.leader),
            f(&r.loaded),
            c(r.loaded.bench),
            beats(&r.loaded),
        ],
        vec![
            "beating − idle".into(),
            c(r.loaded.leader - r.idle.leader),
            (0..r.idle.followers.len())
                .map(|i| c(r.loaded.followers[i] - r.idle.followers[i]))
                .collect::<Vec<_>>()
                .join(" / "),
            c(r.loaded.bench - r.idle.bench),
            String::new(),
        ],
        vec![
            "beating − silent (the beats themselves)".into(),
            c(r.loaded.leader - r.silent.leader),
            (0..r.idle.followers.len())
                .map(|i| c(r.loaded.followers[i] - r.silent.followers[i]))
                .collect::<Vec<_>>()
                .join(" / "),
            c(r.loaded.bench - r.silent.bench),
            String::new(),
        ],
    ];
    format!(
        "## Heartbeat cost: {} hollow nodes (issue #6)\n\n\
         Produced by `{}`.\n\n\
         A fresh 3-master cluster, three windows of {} s in one run: idle (no nodes); {} Node \
         objects registered through the API but silent (the node lifecycle loop marks them \
         Unknown at once, then passes over them every second without writing); the same nodes \
         beating, one heartbeat stream each from the bench process to the leader (`POST \
         /agent/heartbeats?node=NAME`, one line every {} ms, started at random offsets; all \
         Ready {:.1} s after the streams started, measured 5 s later). Cores = (utime + stime) \
         from `/proc/PID/stat` over the window ÷ its wall time. Stream reconnections: {}; \
         beats sent by the harness in all: {}. Load average (1 min) {} before, {} \
         after.\n\n{}",
        r.nodes,
        command_line(),
        args.cpu_window_secs,
        r.nodes,
        args.heartbeat_ms,
        r.ready.as_secs_f64(),
        r.reconnects,
        r.sent,
        r.load_before,
        r.load_after,
        table(&header, &rows)
    )
}
