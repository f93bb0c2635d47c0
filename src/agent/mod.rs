//! `keelson agent`: one node. It registers its Node, streams heartbeats to the leader, runs the
//! pods bound to it through a [`runtime::Runtime`] and reports their status.
//!
//! Invariant: the agent talks to masters only through their HTTP API (any master for reads and
//! writes, the leader for heartbeats); it never touches RocksDB.

mod client;
pub mod docker;
mod engine;
mod hairpin;
mod http;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod proxy;
pub mod runtime;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Notify;

use client::Masters;

use crate::informer::cache::HandlerGuard;
use crate::informer::{remote, Cache, PodFacts};

/// Flags of `keelson agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The node's name.
    #[arg(long)]
    pub name: String,
    /// Master API URLs (any subset of the masters; the agent follows the leader).
    #[arg(long, value_delimiter = ',', required = true)]
    pub masters: Vec<String>,
    /// The address this node is reachable at (its proxy listens there).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Bearer token for the masters' API.
    #[arg(long, env = "KEELSON_TOKEN")]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for `https://` masters (`keelson up`'s `DATA_DIR/ca.crt`).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The node's client certificate (PEM) for the masters' API: CN `system:node:NAME`, O
    /// `system:nodes`, signed by the masters' `--client-ca-file` (`keelson up` issues one per
    /// agent). Used instead of a token.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `--cert-file`.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// How pods run: `docker` (real containers) or `hollow` (nothing runs; pods are reported
    /// running — for scale tests).
    #[arg(long, default_value = "docker")]
    pub runtime: String,
    /// CPU capacity (cores) reported for the node (default: the machine's with Docker, 4 on a
    /// hollow node).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory capacity reported for the node (default: the machine's with Docker, 8Gi on a
    /// hollow node).
    #[arg(long)]
    pub memory: Option<String>,
    /// Maximum pods on the node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Node labels, `k=v,...`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Interval between heartbeats.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Where the agent serves /metrics, /healthz, /livez, /readyz and container logs (default
    /// `<--address>:10250`).
    #[arg(long)]
    pub api_addr: Option<String>,
    /// The agent's serving certificate (PEM, signed by a CA the masters trust): with it the
    /// agent serves HTTPS, and container logs only to masters (kubelet's flag). Without it, plain
    /// HTTP and logs to anyone, for local tests.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `--tls-cert-file`.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// The CA whose client certificates the agent verifies (the masters' peer certificates);
    /// default: `--ca-file`.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Where the agent keeps pods' `emptyDir` volumes (default: a folder named after the node in
    /// the system's temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How services reach their endpoints: `nftables` (DNAT rules in the kernel, in a table of
    /// the agent's own; cluster IPs served) or `userspace` (a listener per service port on
    /// `--address`). Default: nftables where the host allows it (the `nft` program and
    /// CAP_NET_ADMIN), else userspace, said in one line.
    #[arg(long, value_enum)]
    pub proxy_mode: Option<proxy::Mode>,
    /// The Docker network pods join (default: the engine's default bridge). Pods must be
    /// reachable from this host at their IPs in the kernel mode, which DNATs to them; `keelson up`
    /// creates one per cluster.
    #[arg(long)]
    pub pod_network: Option<String>,
    /// A static busybox to build the `keelson/pause` image from when the engine lacks it.
    #[arg(long, default_value = images::DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
}

/// How this agent runs pods.
#[derive(Clone)]
enum Runtime {
    Hollow(Arc<runtime::Hollow>),
    Docker(Arc<docker::DockerRuntime>),
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let stop = crate::process::shutdown_signal();
    // Docker first: without an engine the agent says so at once, before touching the masters.
    let engine = match args.runtime.as_str() {
        "hollow" => None,
        "docker" => {
            let engine = docker::connect().await?;
            let built = images::ensure(&engine, &args.busybox, false, false)
                .await
                .context("build the keelson/pause image")?;
            for image in built {
                tracing::info!("built {image} from {}", args.busybox.display());
            }
            Some(engine)
        }
        other => bail!("--runtime {other}: expected docker or hollow"),
    };
    let identity = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => Some(client::identity(cert, key)?),
        _ => None,
    };
    let masters = Masters::new(
        args.masters.clone(),
        args.token.clone(),
        args.ca_file.as_deref(),
        identity,
    )?;
    // The service proxy runs where pods run; hollow nodes (thousands in scale tests) skip it
    // and the two watches it holds.
    let mut proxy_setup = None;
    let runtime = match engine {
        None => Runtime::Hollow(Arc::new(runtime::Hollow::new(&args.name))),
        Some(engine) => {
            let data_dir = args.data_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("keelson-agent-{}", args.name))
            });
            crate::files::private_dir(&data_dir)
                .with_context(|| format!("--data-dir {}", data_dir.display()))?;
            let (cluster, ancestors) = cluster_id(&masters).await?;
            if !ancestors.is_empty() {
                tracing::info!(?ancestors, "the cluster was restored from a backup: the containers of the clusters it came from are adopted or removed as its pods say");
            }
            let table = proxy::nftables::table_name(&cluster, &args.name);
            let mode = proxy::choose(args.proxy_mode, &table).await?;
            proxy_setup = Some((mode, table));
            Runtime::Docker(Arc::new(docker::DockerRuntime::new(
                engine,
                (&cluster, &ancestors),
                &args.name,
                &args.address,
                &data_dir,
                docker::PodNetwork {
                    name: args.pod_network.clone(),
                    by_ip: mode.pods_by_ip(),
                },
            )))
        }
    };
    let logs = match &runtime {
        Runtime::Docker(d) => Some(d.clone()),
        Runtime::Hollow(_) => None,
    };
    // An explicit --api-addr must be served; the default may be taken (several agents on one
    // address, as in tests and benchmarks): then the agent runs without its HTTP server.
    let tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => {
            let Some(ca) = args.client_ca_file.as_deref().or(args.ca_file.as_deref()) else {
                bail!("--tls-cert-file needs --client-ca-file (or --ca-file): the CA of the masters' certificates, which alone may read container logs");
            };
            Some(crate::master::tls::server_config(cert, key, Some(ca))?)
        }
        _ => None,
    };
    let (http, api_port) = match &args.api_addr {
        Some(addr) => {
            let (h, port) = http::serve(addr, logs, tls).await?;
            (Some(h), Some(port))
        }
        None => match http::serve(&format!("{}:10250", args.address), logs, tls).await {
            Ok((h, port)) => (Some(h), Some(port)),
            Err(e) => {
                tracing::warn!("{e:#}; running without /metrics, health and log endpoints");
                (None, None)
            }
        },
    };
    let node_info = match &runtime {
        Runtime::Docker(d) => keelson_nodeinfo::host(&d.version().await),
        Runtime::Hollow(_) => keelson_nodeinfo::hollow(&args.name),
    };
    register(&masters, &args, api_port, node_info)
        .await
        .context("register the node")?;
    tracing::info!(node = %args.name, runtime = %args.runtime, "agent running");
    let beats = tokio::spawn(client::heartbeat_forever(
        masters.clone(),
        args.name.clone(),
        Duration::from_millis(args.heartbeat_ms),
    ));
    let cache = Arc::new(PodCache::new());
    let watch = tokio::spawn(watch_pods_forever(
        masters.clone(),
        args.name.clone(),
        cache.clone(),
    ));
    let proxy = proxy_setup
        .map(|(mode, table)| proxy::start(masters.clone(), args.address.clone(), mode, table));
    let pods = tokio::spawn(sync_pods_forever(
        masters.clone(),
        args.address.clone(),
        cache,
        runtime,
    ));
    stop.await;
    beats.abort();
    watch.abort();
    pods.abort();
    if let Some(p) = proxy {
        p.stop().await;
    }
    if let Some(h) = http {
        h.abort();
    }
    Ok(())
}

/// The cluster's id, which scopes the containers this agent owns on a shared engine, and the
/// ids of the clusters it was restored from (whose containers it owns too).
async fn cluster_id(masters: &Masters) -> anyhow::Result<(String, Vec<String>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match masters.send(reqwest::Method::GET, "/cluster", None).await {
            Ok(v) => {
                let id = v["cluster_id"].as_str().unwrap_or("").to_string();
                let ancestors = v["restored_from"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok((id, ancestors));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("ask the masters for the cluster id: {e}"))
            }
            Err(e) => tracing::warn!("cluster id: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn node_object(args: &AgentArgs, api_port: Option<u16>, node_info: Value) -> Value {
    let labels: serde_json::Map<String, Value> = args
        .labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .chain([("kubernetes.io/hostname".to_string(), json!(args.name))])
        .collect();
    let (machine_cpu, machine_memory) = match args.runtime.as_str() {
        "hollow" => ("4".to_string(), "8Gi".to_string()),
        _ => machine_capacity(),
    };
    let cpu = args.cpu.clone().unwrap_or(machine_cpu);
    let memory = args.memory.clone().unwrap_or(machine_memory);
    let capacity = json!({"cpu": cpu, "memory": memory, "pods": args.max_pods.to_string()});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": args.name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": args.address}, {"type": "Hostname", "address": args.name}],
            "nodeInfo": node_info,
            // Where masters fetch container logs (kubelet's field for it); 0: this agent
            // serves no HTTP (its default address was taken).
            "daemonEndpoints": {"kubeletEndpoint": {"Port": api_port.unwrap_or(0)}},
        },
    })
}

/// This machine's cores and memory (`/proc/meminfo`'s MemTotal), as Kubernetes quantities.
fn machine_capacity() -> (String, String) {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(8 * 1024 * 1024);
    (cpu.to_string(), format!("{memory_kib}Ki"))
}

/// Creates the Node, or refreshes its capacity and addresses if it exists.
async fn register(
    masters: &Masters,
    args: &AgentArgs,
    api_port: Option<u16>,
    node_info: Value,
) -> anyhow::Result<()> {
    let node = node_object(args, api_port, node_info);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match masters
            .send(reqwest::Method::POST, "/api/v1/nodes", Some(&node))
            .await
        {
            Ok(_) => return Ok(()),
            Err(client::Error::Status(409, _)) => {
                // Known node (a restart): keep its conditions, refresh what we report.
                let path = format!("/api/v1/nodes/{}/status", args.name);
                let mut current = masters.send(reqwest::Method::GET, &path, None).await?;
                for field in [
                    "capacity",
                    "allocatable",
                    "addresses",
                    "nodeInfo",
                    "daemonEndpoints",
                ] {
                    current["status"][field] = node["status"][field].clone();
                }
                match masters
                    .send(reqwest::Method::PUT, &path, Some(&current))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(client::Error::Status(409, _)) => continue,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::warn!("register: {e}")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) if tokio::time::Instant::now() < deadline => tracing::warn!("register: {e}"),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pods bound to this node, as the masters last told: an informer's cache, fed by list and
/// watch.
struct PodCache {
    pods: Arc<Cache<PodFacts>>,
    /// Set once the first list arrived: before that, an empty cache means "unknown", not "none",
    /// and nothing may be removed.
    synced: AtomicBool,
    changed: Arc<Notify>,
    _wake: HandlerGuard<PodFacts>,
}

impl PodCache {
    fn new() -> Self {
        let pods: Arc<Cache<PodFacts>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let _wake = pods.on_change({
            let changed = changed.clone();
            move |_, _| changed.notify_one()
        });
        PodCache {
            pods,
            synced: AtomicBool::new(false),
            changed,
            _wake,
        }
    }

    /// The pods, by uid.
    fn snapshot(&self) -> HashMap<String, Value> {
        self.pods
            .list()
            .iter()
            .filter_map(|item| item.object().ok())
            .map(|pod| (uid_of(&pod), pod))
            .collect()
    }
}

/// Follows the pods bound to this node for ever (list, then watch; see [`remote::follow`]).
async fn watch_pods_forever(masters: Masters, node: String, cache: Arc<PodCache>) {
    let selector = crate::process::url::enc(&format!("spec.nodeName={node}"));
    let query = format!("fieldSelector={selector}");
    remote::follow(
        Arc::new(masters),
        "/api/v1/pods",
        &query,
        cache.pods.clone(),
        || {
            cache.synced.store(true, Ordering::SeqCst);
            cache.changed.notify_one();
        },
    )
    .await
}

fn uid_of(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn phase_of(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Brings the runtime to the pods in the cache, on every change and (Docker) every second —
/// which is how a container that died is noticed.
async fn sync_pods_forever(
    masters: Masters,
    address: String,
    cache: Arc<PodCache>,
    runtime: Runtime,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pods with a sync or removal under way, which the next passes leave alone.
    let mut inflight: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match &runtime {
            Runtime::Hollow(_) => cache.changed.notified().await,
            Runtime::Docker(_) => tokio::select! {
                _ = cache.changed.notified() => {}
                _ = tick.tick() => {}
            },
        }
        if !cache.synced.load(Ordering::SeqCst) {
            continue;
        }
        let desired = cache.snapshot();
        metrics::get().set_pods(
            desired
                .values()
                .map(|p| (pod_key(p), phase_of(p).to_string())),
        );
        match &runtime {
            Runtime::Hollow(h) => {
                for pod in desired.values() {
                    if pod.pointer("/metadata/deletionTimestamp").is_some() {
                        confirm_deletion(&masters, pod).await;
                        continue;
                    }
                    let started = std::time::Instant::now();
                    let status = h.desired_status(pod, &address);
                    metrics::get().observe_runtime("desired_status", started.elapsed());
                    if let Some(status) = status {
                        report_status(&masters, pod, status).await;
                    }
                }
            }
            Runtime::Docker(d) => {
                inflight.retain(|_, h| !h.is_finished());
                let busy: HashSet<String> = inflight.keys().cloned().collect();
                // Observed after `busy` was taken: a sync that finished meanwhile is seen whole.
                let mut observed = match d.observe().await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!("list containers: {e}");
                        continue;
                    }
                };
                for (uid, pod) in &desired {
                    if busy.contains(uid) {
                        continue;
                    }
                    let containers = observed.remove(uid).unwrap_or_default();
                    let (d, masters, pod) = (d.clone(), masters.clone(), pod.clone());
                    let finished = matches!(phase_of(&pod), "Succeeded" | "Failed");
                    let task = if pod.pointer("/metadata/deletionTimestamp").is_some() {
                        // Deleted: the containers go first (SIGTERM, SIGKILL after the grace
                        // period), then the pod itself.
                        let key = uid.clone();
                        tokio::spawn(async move {
                            match d.remove_pod(&key, containers).await {
                                Ok(()) => confirm_deletion(&masters, &pod).await,
                                Err(e) => tracing::warn!("stop pod {}: {e:#}", pod_key(&pod)),
                            }
                        })
                    } else if finished {
                        if !containers.iter().any(docker::Observed::running) {
                            continue;
                        }
                        tokio::spawn(async move { d.stop_pod(containers).await })
                    } else {
                        tokio::spawn(async move {
                            match d.sync_pod(&pod, containers).await {
                                Ok(synced) => {
                                    annotate(&masters, &pod, &synced.annotations).await;
                                    report_status(&masters, &pod, synced.status).await;
                                }
                                Err(e) => tracing::warn!("pod {}: {e:#}", pod_key(&pod)),
                            }
                        })
                    };
                    inflight.insert(uid.clone(), task);
                }
                // Containers of pods no longer bound here (deleted): stop and remove them.
                for (uid, containers) in observed {
                    if busy.contains(&uid) {
                        continue;
                    }
                    let d = d.clone();
                    let key = uid.clone();
                    inflight.insert(
                        uid,
                        tokio::spawn(async move {
                            if let Err(e) = d.remove_pod(&key, containers).await {
                                tracing::warn!("remove the containers of pod {key}: {e:#}");
                            }
                        }),
                    );
                }
            }
        }
    }
}

/// Removes a terminating pod whose containers are gone (grace period 0, for this very pod).
async fn confirm_deletion(masters: &Masters, pod: &Value) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let options =
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}});
    match masters
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            Some(&options),
        )
        .await
    {
        Ok(_) | Err(client::Error::Status(404 | 409, _)) => {}
        Err(e) => tracing::debug!("delete {name}: {e}"),
    }
}

/// Records where other hosts reach the pod (annotations the endpoints controller reads), when
/// they differ from what the pod holds.
async fn annotate(
    masters: &Masters,
    pod: &Value,
    wanted: &std::collections::BTreeMap<String, String>,
) {
    use crate::controllers::endpoints::{REACHABLE_IP, REACHABLE_PORT_PREFIX};
    let current = &pod["metadata"]["annotations"];
    // What an earlier run said and this one does not (a change of proxy mode) is removed.
    let stale: Vec<&String> = current
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| {
            (k.as_str() == REACHABLE_IP || k.starts_with(REACHABLE_PORT_PREFIX))
                && !wanted.contains_key(*k)
        })
        .collect();
    if stale.is_empty() && wanted.iter().all(|(k, v)| current[k].as_str() == Some(v)) {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let mut annotations = json!(wanted);
    for k in stale {
        annotations[k] = Value::Null;
    }
    let patch = json!({"metadata": {"annotations": annotations}});
    if let Err(e) = masters
        .merge_patch(&format!("/api/v1/namespaces/{ns}/pods/{name}"), &patch)
        .await
    {
        tracing::debug!("annotate {name}: {e}");
    }
}

/// Writes a pod's status (only when it differs), retrying on conflicts with a fresh read.
async fn report_status(masters: &Masters, pod: &Value, status: Value) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status");
    let mut current = pod.clone();
    for _ in 0..5 {
        if current.get("status") == Some(&status) {
            return;
        }
        current["status"] = status.clone();
        let started = std::time::Instant::now();
        let result = masters
            .send(reqwest::Method::PUT, &path, Some(&current))
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(client::Error::Status(409, _)) => "conflict",
            Err(client::Error::Status(404, _)) => "not_found",
            Err(_) => "error",
        };
        metrics::get().observe_status_write(outcome, started.elapsed());
        match result {
            Ok(_) => return,
            Err(client::Error::Status(409, _)) => {
                match masters.send(reqwest::Method::GET, &path, None).await {
                    Ok(fresh) => current = fresh,
                    Err(_) => return,
                }
            }
            Err(client::Error::Status(404, _)) => return,
            Err(e) => {
                tracing::debug!("status of {name}: {e}");
                return;
            }
        }
    }
}

fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}
