//! The pod-startup phase of `keelson bench` (with `docker run -d` of the same image as the
//! floor), and the Docker cluster it and the proxy phase (`proxy.rs`) start: a fresh 3-master
//! cluster and two `keelson agent --runtime docker` processes on their own loopback addresses,
//! whose containers (labelled with the cluster's id) are removed at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::follow::{follow_pods, PodView};
use super::harness::{
    command_line, condition_true, loadavg, name_of, wait_nodes_ready, Agents, Api, DockerCleanup,
};
use super::{pct_ms, table, BenchArgs, Kind, Sys, MEMBERS};

/// The seed's site as a pod: one container of `user/mysite` on port 80, a small CPU request.
pub(crate) fn site_pod(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": app}},
           "spec": {"containers": [{"name": "web", "image": "user/mysite:latest",
                                    "ports": [{"containerPort": 80}],
                                    "resources": {"requests": {"cpu": "10m"}}}]}})
}

fn running_ready(p: &Value) -> bool {
    p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && condition_true(p, "Ready")
}

/// A fresh cluster with `n` Docker agents whose nodes are Ready.
pub(crate) async fn docker_cluster(
    args: &BenchArgs,
    n: usize,
    agent_flags: &[&str],
) -> anyhow::Result<(Sys, DockerCleanup, Agents, Api)> {
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let api = Api::new(cluster)?;
    let cleanup = DockerCleanup(api.cluster_id().await?);
    let agents = Agents::start_docker(cluster, n, agent_flags)?;
    wait_nodes_ready(&api, &agents.names(), Duration::from_secs(120))
        .await
        .context("docker agents")?;
    Ok((sys, cleanup, agents, api))
}

/// Results of the pod-startup phase.
pub struct PodStartup {
    pub pods: usize,
    /// Per pod: from its create's acknowledgement to Running with Ready=True, as watched.
    pub startup: Vec<Duration>,
    /// From the first create sent to the last pod Running and Ready.
    pub all_running: Option<Duration>,
    /// Pods created one at a time (each after the previous one ran), before the burst: from
    /// the create's acknowledgement to Running and Ready.
    pub serial: Vec<Duration>,
    /// Create requests: acknowledged, and their latency.
    pub acked: usize,
    pub create_latency: Vec<Duration>,
    /// `docker run -d` one at a time: each.
    pub docker_seq: Vec<Duration>,
    /// A pod's worth of `docker run -d` (sandbox, then the site in its network namespace), one
    /// pod at a time: each pair.
    pub docker_pod_seq: Vec<Duration>,
    /// `pods` such pairs at once: until the last returned.
    pub docker_burst: Option<Duration>,
    pub lists: usize,
    pub load_before: String,
    pub load_after: String,
}

/// Runs `docker run -d --label io.keelson.cluster=ID ARGS…`; the container's id.
async fn docker_run(cluster_id: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(["run", "-d", "--label"])
        .arg(format!("io.keelson.cluster={cluster_id}"))
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What an agent asks of Docker for one pod, through the CLI: the sandbox (`keelson/pause`,
/// port 80 published on `address`), then the site in its network and IPC namespaces. The wall
/// time of both.
async fn docker_pod(cluster_id: &str, address: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let publish = format!("{address}::80");
    let sandbox = docker_run(
        cluster_id,
        &["-p", &publish, "--ipc", "shareable", "keelson/pause:latest"],
    )
    .await?;
    let joined = format!("container:{sandbox}");
    docker_run(
        cluster_id,
        &["--network", &joined, "--ipc", &joined, "user/mysite:latest"],
    )
    .await?;
    Ok(t.elapsed())
}

/// Phase `pod-startup`.
pub async fn pod_startup(args: &BenchArgs) -> anyhow::Result<PodStartup> {
    let n = args.startup_pods;
    eprintln!("bench: pod-startup: {n} pods on 2 docker agents");
    // Pods on Docker's default bridge, started as before the kernel proxy (no traffic is sent
    // to them here).
    let (sys, cleanup, agents, api) =
        docker_cluster(args, 2, &["--proxy-mode", "userspace"]).await?;
    let load_before = loadavg();
    // The floor first, on the same engine, and out of the way before the pods start.
    let mut docker_seq = Vec::new();
    for _ in 0..args.docker_runs {
        let t = Instant::now();
        docker_run(&cleanup.0, &["user/mysite:latest"]).await?;
        docker_seq.push(t.elapsed());
    }
    let address = agents.0[0].address.to_string();
    let mut docker_pod_seq = Vec::new();
    for _ in 0..args.docker_runs {
        docker_pod_seq.push(docker_pod(&cleanup.0, &address).await?);
    }
    cleanup.run();
    let mut burst = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let id = cleanup.0.clone();
        let address = agents.0[i % agents.0.len()].address.to_string();
        burst.spawn(async move { docker_pod(&id, &address).await });
    }
    let mut burst_ok = true;
    while let Some(r) = burst.join_next().await {
        if let Ok(Err(e)) = &r {
            eprintln!("bench: pod-startup: floor: {e:#}");
        }
        burst_ok &= matches!(r, Ok(Ok(_)));
    }
    let docker_burst = burst_ok.then(|| started.elapsed());
    cleanup.run();
    docker_seq.sort();
    docker_pod_seq.sort();
    eprintln!(
        "bench: pod-startup: docker run -d p50 {:.0} ms, a pod's pair p50 {:.0} ms, {n} pairs at once {:?}",
        pct_ms(&docker_seq, 0.5),
        pct_ms(&docker_pod_seq, 0.5),
        docker_burst
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One pod at a time: keelson's own overhead over an engine without a queue.
    let (mut events, follower) = follow_pods(api.urls.clone(), "default", "app=serial");
    let mut view = PodView::default();
    let mut serial = Vec::new();
    for i in 0..args.startup_serial {
        let name = format!("serial-{i}");
        api.post(
            i % MEMBERS,
            "/api/v1/namespaces/default/pods",
            &site_pod(&name, "serial"),
        )
        .await?;
        let ack = Instant::now();
        let deadline = ack + Duration::from_secs(60);
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = tokio::time::sleep_until(deadline.into()) => None,
            };
            let Some(ev) = ev else {
                bail!("pod {name} did not run within 60 s")
            };
            let (pods, at) = view.apply(ev);
            if pods.iter().any(|p| name_of(p) == name && running_ready(p)) {
                serial.push(at.saturating_duration_since(ack));
                break;
            }
        }
    }
    follower.abort();
    serial.sort();
    eprintln!(
        "bench: pod-startup: one at a time: p50 {:.0} ms",
        pct_ms(&serial, 0.5)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Watch first, then the burst of creates.
    let (mut events, follower) = follow_pods(api.urls.clone(), "default", "app=startup");
    let mut view = PodView::default();
    if let Some(ev) = events.recv().await {
        view.apply(ev);
    }
    let t0 = Instant::now();
    let mut creates = JoinSet::new();
    for i in 0..n {
        let api = api.clone();
        creates.spawn(async move {
            let name = format!("startup-{i}");
            let sent = Instant::now();
            let r = api
                .post(
                    i % MEMBERS,
                    "/api/v1/namespaces/default/pods",
                    &site_pod(&name, "startup"),
                )
                .await;
            (name, sent, r.map(|_| Instant::now()))
        });
    }
    let mut acks: HashMap<String, Instant> = HashMap::new();
    let mut create_latency = Vec::new();
    let mut ready_at: HashMap<String, Instant> = HashMap::new();
    let deadline = t0 + Duration::from_secs(args.startup_timeout_secs);
    loop {
        tokio::select! {
            Some(r) = creates.join_next(), if !creates.is_empty() => {
                if let Ok((name, sent, Ok(at))) = r {
                    create_latency.push(at - sent);
                    acks.insert(name, at);
                } else if let Ok((name, _, Err(e))) = r {
                    eprintln!("bench: pod-startup: create {name}: {e:#}");
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let (pods, at) = view.apply(ev);
                for p in pods {
                    if running_ready(&p) {
                        ready_at.entry(name_of(&p)).or_insert(at);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
        if creates.is_empty() && !acks.is_empty() && acks.keys().all(|k| ready_at.contains_key(k)) {
            break;
        }
    }
    follower.abort();
    let mut startup: Vec<Duration> = acks
        .iter()
        .filter_map(|(k, ack)| Some(ready_at.get(k)?.saturating_duration_since(*ack)))
        .collect();
    startup.sort();
    create_latency.sort();
    let all_running = (startup.len() == n)
        .then(|| ready_at.values().max().map(|last| *last - t0))
        .flatten();
    eprintln!(
        "bench: pod-startup: {}/{n} running, p50 {:.0} ms p99 {:.0} ms, all in {:?}",
        startup.len(),
        pct_ms(&startup, 0.5),
        pct_ms(&startup, 0.99),
        all_running
    );
    let load_after = loadavg();
    drop(agents);
    drop(cleanup);
    drop(sys);
    Ok(PodStartup {
        pods: n,
        startup,
        all_running,
        serial,
        acked: acks.len(),
        create_latency,
        docker_seq,
        docker_pod_seq,
        docker_burst,
        lists: view.lists,
        load_before,
        load_after,
    })
}

/// The pod-startup section.
pub fn render_startup(args: &BenchArgs, r: &PodStartup) -> String {
    let q = |v: &[Duration], q| format!("{:.0}", pct_ms(v, q));
    let header = ["measure", "n", "p50 ms", "p99 ms", "max ms"].map(String::from);
    let mut rows = vec![
        vec![
            "create acknowledged → Running and Ready (watched)".to_string(),
            r.startup.len().to_string(),
            q(&r.startup, 0.5),
            q(&r.startup, 0.99),
            q(&r.startup, 1.0),
        ],
        vec![
            "one pod at a time, before the burst: create acknowledged → Running and Ready"
                .to_string(),
            r.serial.len().to_string(),
            q(&r.serial, 0.5),
            q(&r.serial, 0.99),
            q(&r.serial, 1.0),
        ],
        vec![
            "create request → acknowledgement".to_string(),
            r.create_latency.len().to_string(),
            q(&r.create_latency, 0.5),
            q(&r.create_latency, 0.99),
            q(&r.create_latency, 1.0),
        ],
        vec![
            "floor: `docker run -d user/mysite`, one at a time".to_string(),
            r.docker_seq.len().to_string(),
            q(&r.docker_seq, 0.5),
            q(&r.docker_seq, 0.99),
            q(&r.docker_seq, 1.0),
        ],
        vec![
            "floor: a pod's pair of `docker run -d` (sandbox, then the site in its namespaces), one pod at a time".to_string(),
            r.docker_pod_seq.len().to_string(),
            q(&r.docker_pod_seq, 0.5),
            q(&r.docker_pod_seq, 0.99),
            q(&r.docker_pod_seq, 1.0),
        ],
    ];
    let all = |d: Option<Duration>| {
        d.map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "not all".into())
    };
    rows.push(vec![
        format!("first create sent → all {} Running and Ready", r.pods),
        r.pods.to_string(),
        String::new(),
        String::new(),
        all(r.all_running),
    ]);
    rows.push(vec![
        format!(
            "floor: {} pods' pairs of `docker run -d` at once → the last returned",
            r.pods
        ),
        r.pods.to_string(),
        String::new(),
        String::new(),
        all(r.docker_burst),
    ]);
    let p99 = pct_ms(&r.startup, 0.99) / 1000.0;
    format!(
        "## Pod start-up latency (issue #6)\n\n\
         Produced by `{}`.\n\n\
         A fresh 3-master cluster and 2 `keelson agent --runtime docker` processes (each on its \
         own loopback address, same Docker engine). {} pods of `user/mysite:latest` (one \
         container, containerPort 80, cpu request 10m — so 2 containers each with the pause \
         sandbox) created at once by {} concurrent requests round-robin over the masters (after {} pods \
         created one at a time, each once the previous one ran; they keep running during the \
         burst). A \
         watch of the pods (opened before the creates) times each pod from its create's \
         acknowledgement to the first event showing phase Running with Ready=True. Created: \
         {}/{}; Running and Ready: {}; watch (re-)lists: {}. The floor, in the same run on \
         the same engine before the pods: `docker run -d user/mysite:latest` {} times one \
         after another; then what an agent asks of Docker for one pod, through the CLI — \
         `docker run -d -p ADDR::80 --ipc shareable keelson/pause`, then `docker run -d \
         --network container:ID --ipc container:ID user/mysite` — {} times one pod after \
         another, then for {} pods at once (the Docker CLI's wall time, its own start-up \
         included). Load average (1 min) {} before, {} after.\n\n{}\
         Anchors: Kubernetes' pod start-up SLO is p99 ≤ 5 s (for pods whose images are \
         present); keelson's goal is p99 ≤ 1.5 s. This run: p99 {p99:.2} s.\n\n",
        command_line(),
        r.pods,
        r.pods,
        r.serial.len(),
        r.acked,
        r.pods,
        r.startup.len(),
        r.lists,
        args.docker_runs,
        args.docker_runs,
        r.pods,
        r.load_before,
        r.load_after,
        table(&header, &rows)
    )
}
