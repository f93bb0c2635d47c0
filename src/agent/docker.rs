//! The Docker runtime (bollard): pods as Docker containers.
//!
//! A pod is an infrastructure container (`keelson/pause`, named `k8s_POD_…`) that holds the
//! pod's network namespace and publishes every container port on the node's address, plus one
//! container per spec container joined to it (`container:<pause>` network and IPC modes), so the
//! containers of a pod share localhost. `emptyDir` volumes are host folders under the agent's
//! data dir mounted into every container that names them, only after [`super::volumes`] has
//! checked that they lie inside the pod's own directory.
//!
//! Invariants:
//! - Every container keelson starts carries the labels [`LABEL_CLUSTER`], [`LABEL_NODE`],
//!   [`LABEL_UID`] and [`LABEL_CONTAINER`]; the agent's view of what runs is what Docker lists
//!   with its cluster and node labels, never an in-memory record — so an agent restarted adopts
//!   what still runs, and two clusters on one engine never touch each other's containers.
//! - A container's restart count is in its name and its [`LABEL_RESTARTS`] label: a restart
//!   creates the next container and removes older ones, keeping the last dead one for
//!   `logs --previous`. The deterministic name makes a second create of the same restart fail
//!   (409) instead of running a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use super::images::PAUSE_IMAGE;
use super::metrics;
use super::volumes;

pub const LABEL_CLUSTER: &str = "io.keelson.cluster";
pub const LABEL_NODE: &str = "io.keelson.node";
pub const LABEL_UID: &str = "io.keelson.pod.uid";
pub const LABEL_NAME: &str = "io.keelson.pod.name";
pub const LABEL_NAMESPACE: &str = "io.keelson.pod.namespace";
pub const LABEL_CONTAINER: &str = "io.keelson.container";
pub const LABEL_RESTARTS: &str = "io.keelson.restarts";
pub const LABEL_GRACE: &str = "io.keelson.grace-seconds";
/// The [`LABEL_CONTAINER`] value of the infrastructure container.
const SANDBOX: &str = "POD";

/// How long one image pull may take before the pod reports `ErrImagePull`.
const PULL_TIMEOUT: Duration = Duration::from_secs(20);
/// Back-off between restarts of a crashing container (and between pulls): doubles up to the cap.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// One container as Docker reports it.
#[derive(Clone, Debug)]
pub struct Observed {
    pub id: String,
    pub container: String,
    pub restarts: u32,
    pub inspect: ContainerInspectResponse,
}

impl Observed {
    fn status(&self) -> &str {
        self.inspect
            .state
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .map(|s| s.as_ref())
            .unwrap_or("")
    }
    pub fn running(&self) -> bool {
        matches!(self.status(), "running" | "restarting" | "paused")
    }
    fn exited(&self) -> bool {
        matches!(self.status(), "exited" | "dead")
    }
    fn exit_code(&self) -> i64 {
        self.inspect
            .state
            .as_ref()
            .and_then(|s| s.exit_code)
            .unwrap_or(0)
    }
    fn state_time(&self, finished: bool) -> Option<String> {
        let s = self.inspect.state.as_ref()?;
        let t = if finished {
            s.finished_at.as_ref()
        } else {
            s.started_at.as_ref()
        }?;
        rfc3339_seconds(t)
    }
    fn ip(&self) -> String {
        self.inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .unwrap_or_default()
    }
    /// `containerPort/proto` → the host port Docker published it on.
    fn published(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let ports = self
            .inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref());
        for (key, bindings) in ports.into_iter().flatten() {
            if let Some(p) = bindings.iter().flatten().find_map(|b| b.host_port.clone()) {
                out.insert(key.clone(), p);
            }
        }
        out
    }
    fn terminated(&self) -> Value {
        let code = self.exit_code();
        let oom = self
            .inspect
            .state
            .as_ref()
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": self.state_time(false),
               "finishedAt": self.state_time(true), "containerID": format!("docker://{}", self.id)}})
    }
}

/// Docker's RFC 3339 timestamps (nanoseconds) cut to seconds, as Kubernetes reports them.
fn rfc3339_seconds(t: &str) -> Option<String> {
    let ts: jiff::Timestamp = t.parse().ok()?;
    if ts.as_second() <= 0 {
        return None;
    }
    Some(
        jiff::Timestamp::from_second(ts.as_second())
            .ok()?
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    )
}

/// Restart and pull back-off of one container of one pod.
#[derive(Clone, Copy)]
struct Backoff {
    next: Instant,
    delay: Duration,
}

/// A container whose configuration the agent refuses (a volume that would reach the host):
/// `CreateContainerConfigError`, as the kubelet reports a bad configuration.
#[derive(Debug)]
struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Why a container is waiting.
#[derive(Clone, Debug)]
struct Waiting {
    reason: &'static str,
    message: String,
}

/// What one spec container needs from a sync of its pod.
enum Step<'a> {
    /// Nothing now: it runs, or exited for good (the restart policy).
    Leave,
    /// Nothing now: its crash back-off runs, for this reason.
    Wait(Waiting),
    /// Its latest container, by id, was created but never started.
    StartCreated(&'a str),
    /// Create and start the container of this restart count.
    Start(u32),
}

/// The Docker runtime of one agent.
pub struct DockerRuntime {
    docker: Docker,
    cluster: String,
    /// The clusters this one was restored from (`keelson snapshot restore`): their containers
    /// are this cluster's too, adopted or removed as its pods say.
    ancestors: Vec<String>,
    node: String,
    address: String,
    data_dir: PathBuf,
    network: PodNetwork,
    backoff: Mutex<HashMap<(String, String), Backoff>>,
    /// Last inspection of each container, with the list state it was taken in.
    inspected: Mutex<HashMap<String, (String, ContainerInspectResponse)>>,
    /// Sandboxes whose bridge port was put in hairpin mode (pods reached by IP).
    hairpinned: Mutex<std::collections::HashSet<String>>,
}

/// Where pods' sandboxes are attached, and how other hosts reach them.
#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    /// The Docker network sandboxes join (`None`: the engine's default bridge).
    pub name: Option<String>,
    /// Pods are reached at their own IP and container ports (the kernel proxy DNATs there):
    /// only ports with an explicit `hostPort` are published. Otherwise every container port is
    /// published on the node's address and the pod annotated with where (the userspace proxy,
    /// and hosts that cannot route to pod IPs, dial that).
    pub by_ip: bool,
}

/// What a sync of one pod produced.
pub struct Synced {
    /// Annotations telling other hosts where the pod's ports are reachable.
    pub annotations: BTreeMap<String, String>,
    /// The pod's status.
    pub status: Value,
}

pub use super::engine::connect;

/// Removes container `id`, running or not, with its anonymous volumes; one already gone is no
/// error. The agent's removals and `keelson down`'s.
pub async fn remove_container(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn label_map(
    pod: &Value,
    (cluster, node): (&str, &str),
    container: &str,
    restarts: u32,
) -> HashMap<String, String> {
    let grace = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    [
        (LABEL_CLUSTER, cluster.to_string()),
        (LABEL_NODE, node.to_string()),
        (LABEL_UID, meta(pod, "uid")),
        (LABEL_NAME, meta(pod, "name")),
        (LABEL_NAMESPACE, meta(pod, "namespace")),
        (LABEL_CONTAINER, container.to_string()),
        (LABEL_RESTARTS, restarts.to_string()),
        (LABEL_GRACE, grace.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn meta(pod: &Value, field: &str) -> String {
    pod["metadata"][field].as_str().unwrap_or("").to_string()
}

/// Docker names allow `[a-zA-Z0-9_.-]`.
fn container_name(pod: &Value, container: &str, restarts: u32) -> String {
    let uid = meta(pod, "uid");
    format!(
        "k8s_{container}_{}_{}_{}_{restarts}",
        meta(pod, "name"),
        meta(pod, "namespace"),
        &uid[..uid.len().min(8)]
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || "_.-".contains(c) {
            c
        } else {
            '-'
        }
    })
    .collect()
}

/// Every `containerPort/proto` of the pod with the host port asked for (`""`: any).
fn pod_ports(pod: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in spec_containers(pod) {
        for p in c["ports"].as_array().into_iter().flatten() {
            let Some(cp) = p["containerPort"].as_i64() else {
                continue;
            };
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
            let host = p["hostPort"]
                .as_i64()
                .filter(|h| *h > 0)
                .map(|h| h.to_string())
                .unwrap_or_default();
            out.entry(format!("{cp}/{proto}")).or_insert(host);
        }
    }
    out
}

fn spec_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A Kubernetes quantity in bytes / nano-CPUs, if it parses.
fn quantity(v: &Value, scale: f64) -> Option<i64> {
    let q = keelson_model::quantity::parse_quantity(v.as_str()?)?;
    Some((q * scale).round() as i64)
}

fn should_restart(policy: &str, exit_code: i64) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

impl DockerRuntime {
    pub fn new(
        docker: Docker,
        (cluster, ancestors): (&str, &[String]),
        node: &str,
        address: &str,
        data_dir: &Path,
        network: PodNetwork,
    ) -> Self {
        DockerRuntime {
            docker,
            cluster: cluster.to_string(),
            ancestors: ancestors.to_vec(),
            node: node.to_string(),
            address: address.to_string(),
            data_dir: data_dir.to_path_buf(),
            network,
            backoff: Mutex::new(HashMap::new()),
            inspected: Mutex::new(HashMap::new()),
            hairpinned: Mutex::default(),
        }
    }

    /// The engine's version as the kubelet reports a runtime's (`docker://28.2.2`).
    pub async fn version(&self) -> String {
        match self.docker.version().await {
            Ok(v) => format!("docker://{}", v.version.unwrap_or_default()),
            Err(e) => {
                tracing::warn!("docker version: {e}");
                "docker://unknown".into()
            }
        }
    }

    /// Every keelson container of this node, by pod uid.
    pub async fn observe(&self) -> anyhow::Result<HashMap<String, Vec<Observed>>> {
        self.list(&format!("{LABEL_NODE}={}", self.node)).await
    }

    /// The containers of one pod.
    async fn observe_pod(&self, uid: &str) -> anyhow::Result<Vec<Observed>> {
        Ok(self
            .list(&format!("{LABEL_UID}={uid}"))
            .await?
            .remove(uid)
            .unwrap_or_default())
    }

    async fn list(&self, label: &str) -> anyhow::Result<HashMap<String, Vec<Observed>>> {
        let started = Instant::now();
        // Docker ANDs label filters: the cluster's own is one only when no ancestor's counts.
        let mut wanted = vec![label.to_string()];
        if self.ancestors.is_empty() {
            wanted.push(format!("{LABEL_CLUSTER}={}", self.cluster));
        }
        let filters = HashMap::from([("label".to_string(), wanted)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self.docker.list_containers(Some(options)).await?;
        metrics::get().observe_runtime("list", started.elapsed());
        let mut out: HashMap<String, Vec<Observed>> = HashMap::new();
        let mut seen = Vec::new();
        for c in listed {
            let (Some(id), Some(labels)) = (c.id.clone(), c.labels.clone()) else {
                continue;
            };
            let cluster = labels.get(LABEL_CLUSTER);
            let ours = cluster == Some(&self.cluster)
                || cluster.is_some_and(|c| self.ancestors.contains(c));
            if labels.get(LABEL_NODE) != Some(&self.node) || !ours {
                continue;
            }
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            seen.push(id.clone());
            let cached = self
                .inspected
                .lock()
                .unwrap()
                .get(&id)
                .filter(|(s, _)| *s == state)
                .map(|(_, i)| i.clone());
            let inspect = match cached {
                Some(i) => i,
                None => match self.docker.inspect_container(&id, None).await {
                    Ok(i) => {
                        self.inspected
                            .lock()
                            .unwrap()
                            .insert(id.clone(), (state, i.clone()));
                        i
                    }
                    Err(_) => continue, // removed meanwhile
                },
            };
            out.entry(labels.get(LABEL_UID).cloned().unwrap_or_default())
                .or_default()
                .push(Observed {
                    id,
                    container: labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                    restarts: labels
                        .get(LABEL_RESTARTS)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                    inspect,
                });
        }
        if label.starts_with(LABEL_NODE) {
            self.inspected
                .lock()
                .unwrap()
                .retain(|id, _| seen.contains(id));
        }
        for list in out.values_mut() {
            list.sort_by_key(|o| o.restarts);
        }
        Ok(out)
    }

    fn backoff_ready(&self, uid: &str, container: &str) -> bool {
        self.backoff
            .lock()
            .unwrap()
            .get(&(uid.to_string(), container.to_string()))
            .is_none_or(|b| Instant::now() >= b.next)
    }

    /// Records a failure (a crash or a failed pull): the next attempt waits a doubled delay.
    fn back_off(&self, uid: &str, container: &str) {
        let mut map = self.backoff.lock().unwrap();
        let entry = map
            .entry((uid.to_string(), container.to_string()))
            .or_insert(Backoff {
                next: Instant::now(),
                delay: Duration::ZERO,
            });
        entry.delay = if entry.delay.is_zero() {
            BACKOFF_BASE
        } else {
            (entry.delay * 2).min(BACKOFF_CAP)
        };
        entry.next = Instant::now() + entry.delay;
    }

    fn reset_backoff(&self, uid: &str, container: &str) {
        self.backoff
            .lock()
            .unwrap()
            .remove(&(uid.to_string(), container.to_string()));
    }

    /// Makes sure `image` is local: present, or pulled now (this machine has no registry, so a
    /// missing image normally fails here with the engine's message).
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let started = Instant::now();
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let pull = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        };
        let result = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(r) => r,
            Err(_) => Err(format!("pull timed out after {}s", PULL_TIMEOUT.as_secs())),
        };
        metrics::get().observe_runtime("pull_image", started.elapsed());
        if result.is_err() {
            metrics::get().image_pull_failures.inc();
        }
        result.map_err(|e| format!("failed to pull image \"{image}\": {e}"))
    }

    /// Creates and starts the pod's infrastructure container.
    async fn start_sandbox(&self, pod: &Value, restarts: u32) -> anyhow::Result<()> {
        let mut ports = pod_ports(pod);
        if self.network.by_ip {
            // Reached at the pod's IP: only what the pod asks to have on the node is published.
            ports.retain(|_, host| !host.is_empty());
        }
        let bindings: bollard::models::PortMap = ports
            .iter()
            .map(|(key, host)| {
                (
                    key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(self.address.clone()),
                        host_port: Some(host.clone()),
                    }]),
                )
            })
            .collect();
        let hostname: String = meta(pod, "name").chars().take(63).collect();
        let body = ContainerCreateBody {
            image: Some(PAUSE_IMAGE.to_string()),
            hostname: Some(hostname),
            labels: Some(label_map(
                pod,
                (&self.cluster, &self.node),
                SANDBOX,
                restarts,
            )),
            exposed_ports: Some(ports.keys().cloned().collect()),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: self.network.name.clone(),
                // The pod's containers join its IPC namespace too.
                ipc_mode: Some("shareable".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&container_name(pod, SANDBOX, restarts), body)
            .await
    }

    async fn create_and_start(&self, name: &str, body: ContainerCreateBody) -> anyhow::Result<()> {
        let started = Instant::now();
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self.docker.create_container(Some(options), body).await?;
        metrics::get().observe_runtime("create_container", started.elapsed());
        let started = Instant::now();
        let result = self.docker.start_container(&created.id, None).await;
        metrics::get().observe_runtime("start_container", started.elapsed());
        if let Err(e) = result {
            // A container that cannot start (a host port taken, a bad command) is removed, so
            // the next attempt can take its name again.
            let _ = self.remove(&created.id).await;
            return Err(e.into());
        }
        metrics::get().container_starts.inc();
        Ok(())
    }

    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = remove_container(&self.docker, id).await;
        metrics::get().observe_runtime("remove_container", started.elapsed());
        result
    }

    /// Creates and starts one spec container joined to the sandbox.
    async fn start_container(
        &self,
        pod: &Value,
        spec: &Value,
        sandbox_id: &str,
        restarts: u32,
    ) -> anyhow::Result<()> {
        let name = spec["name"].as_str().unwrap_or("");
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect()
            })
        };
        let env: Vec<String> = spec["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some(format!(
                    "{}={}",
                    e["name"].as_str()?,
                    e["value"].as_str().unwrap_or("")
                ))
            })
            .collect();
        let mounts = volumes::mounts(&self.data_dir.join("pods"), pod, spec)
            .map_err(|e| anyhow::Error::new(ConfigError(e)))?;
        let limits = &spec["resources"]["limits"];
        let requests = &spec["resources"]["requests"];
        let body = ContainerCreateBody {
            image: spec["image"].as_str().map(str::to_string),
            entrypoint: strings(&spec["command"]),
            cmd: strings(&spec["args"]),
            env: Some(env),
            working_dir: spec["workingDir"].as_str().map(str::to_string),
            tty: spec["tty"].as_bool(),
            open_stdin: spec["stdin"].as_bool(),
            labels: Some(label_map(pod, (&self.cluster, &self.node), name, restarts)),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{sandbox_id}")),
                ipc_mode: Some(format!("container:{sandbox_id}")),
                mounts: Some(mounts),
                memory: quantity(&limits["memory"], 1.0),
                nano_cpus: quantity(&limits["cpu"], 1e9),
                cpu_shares: quantity(&requests["cpu"], 1024.0).map(|s| s.max(2)),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&container_name(pod, name, restarts), body)
            .await
    }

    /// Brings one pod to its spec: sandbox, then every container (restarting by policy, with
    /// back-off), and returns its reachable ports and status.
    pub async fn sync_pod(&self, pod: &Value, observed: Vec<Observed>) -> anyhow::Result<Synced> {
        let uid = meta(pod, "uid");
        let mut observed = self.ensure_sandbox(pod, &uid, observed).await?;
        let sandbox = observed
            .iter()
            .rev()
            .find(|o| o.container == SANDBOX && o.running())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the pod's sandbox container did not start"))?;
        if self.network.by_ip {
            self.hairpin(&sandbox);
        }
        let policy = pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always");
        let mut acted = false;
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        for spec in spec_containers(pod) {
            acted |= self
                .sync_container(pod, spec, &observed, &sandbox.id, policy, &mut waiting)
                .await;
        }
        if acted {
            observed = self.observe_pod(&uid).await?;
        }
        Ok(Synced {
            annotations: self.reachable(&sandbox),
            status: self.status(pod, &observed, &waiting, policy),
        })
    }

    /// Lets the pod reach itself through its services (once per sandbox).
    fn hairpin(&self, sandbox: &Observed) {
        let mut done = self.hairpinned.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&sandbox.id) {
            return;
        }
        if done.len() > 10_000 {
            done.clear(); // enabling again is harmless
        }
        let pid = sandbox
            .inspect
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .unwrap_or(0);
        match super::hairpin::enable(pid) {
            Ok(port) => tracing::debug!(sandbox = %sandbox.id, %port, "hairpin mode on"),
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, "hairpin mode: {e}: the pod cannot reach itself through a service")
            }
        }
        done.insert(sandbox.id.clone());
    }

    /// Keeps a running sandbox, else starts the next one (removing the dead sandboxes and every
    /// running container of the pod first): what then runs of the pod.
    async fn ensure_sandbox(
        &self,
        pod: &Value,
        uid: &str,
        observed: Vec<Observed>,
    ) -> anyhow::Result<Vec<Observed>> {
        let sandbox_ok = observed
            .iter()
            .rev()
            .find(|o| o.container == SANDBOX)
            .is_some_and(Observed::running);
        if sandbox_ok {
            return Ok(observed);
        }
        // No sandbox, or it died: everything of the pod starts again in a new one.
        let next = observed
            .iter()
            .filter(|o| o.container == SANDBOX)
            .map(|o| o.restarts + 1)
            .max()
            .unwrap_or(0);
        for o in observed
            .iter()
            .filter(|o| o.running() || o.container == SANDBOX)
        {
            self.remove(&o.id).await?;
        }
        self.start_sandbox(pod, next).await?;
        self.observe_pod(uid).await
    }

    /// Brings one spec container to its spec (start, restart, or nothing yet), noting in
    /// `waiting` why it waits; true if it acted on Docker.
    async fn sync_container(
        &self,
        pod: &Value,
        spec: &Value,
        observed: &[Observed],
        sandbox_id: &str,
        policy: &str,
        waiting: &mut HashMap<String, Waiting>,
    ) -> bool {
        let uid = meta(pod, "uid");
        let name = spec["name"].as_str().unwrap_or("").to_string();
        let mine: Vec<&Observed> = observed.iter().filter(|o| o.container == name).collect();
        let restarts = match self.next_step(&uid, &name, mine.last().copied(), policy) {
            Step::Leave => return false,
            Step::Wait(w) => {
                waiting.insert(name, w);
                return false;
            }
            Step::StartCreated(id) => {
                // Created but never started (the agent died in between): start it.
                let _ = self.docker.start_container(id, None).await;
                return true;
            }
            Step::Start(restarts) => restarts,
        };
        let image = spec["image"].as_str().unwrap_or("");
        if let Err(w) = self.pull_with_backoff(&uid, &name, image).await {
            waiting.insert(name, w);
            return false;
        }
        if let Err(w) = self
            .start_with_backoff(pod, spec, &uid, &name, sandbox_id, restarts)
            .await
        {
            waiting.insert(name, w);
        }
        // Older containers go; the one before is kept for `logs --previous`.
        for old in mine.iter().filter(|o| o.restarts + 1 < restarts) {
            let _ = self.remove(&old.id).await;
        }
        true
    }

    /// What a spec container whose latest container is `latest` needs now, by the restart
    /// policy and its crash back-off (reset when it ran long enough).
    fn next_step<'a>(
        &self,
        uid: &str,
        name: &str,
        latest: Option<&'a Observed>,
        policy: &str,
    ) -> Step<'a> {
        match latest {
            None => Step::Start(0),
            Some(l) if l.running() => Step::Leave,
            Some(l) if l.exited() && should_restart(policy, l.exit_code()) => {
                let ran = l
                    .state_time(false)
                    .zip(l.state_time(true))
                    .and_then(|(a, b)| {
                        let a: jiff::Timestamp = a.parse().ok()?;
                        let b: jiff::Timestamp = b.parse().ok()?;
                        Some(b.as_second() - a.as_second())
                    })
                    .unwrap_or(0);
                if ran >= BACKOFF_RESET.as_secs() as i64 {
                    self.reset_backoff(uid, name);
                }
                if self.backoff_ready(uid, name) {
                    Step::Start(l.restarts + 1)
                } else {
                    Step::Wait(Waiting {
                        reason: "CrashLoopBackOff",
                        message: format!("back-off restarting failed container {name}"),
                    })
                }
            }
            Some(l) if !l.exited() => Step::StartCreated(&l.id),
            Some(_) => Step::Leave, // exited for good (restart policy)
        }
    }

    /// Makes sure a container's image is local, unless its pull is backing off: why it waits
    /// (`ImagePullBackOff`, `ErrImagePull`) otherwise.
    async fn pull_with_backoff(&self, uid: &str, name: &str, image: &str) -> Result<(), Waiting> {
        if !self.backoff_ready(uid, &format!("pull:{name}")) {
            return Err(Waiting {
                reason: "ImagePullBackOff",
                message: format!("Back-off pulling image \"{image}\""),
            });
        }
        if let Err(message) = self.ensure_image(image).await {
            self.back_off(uid, &format!("pull:{name}"));
            return Err(Waiting {
                reason: "ErrImagePull",
                message,
            });
        }
        self.reset_backoff(uid, &format!("pull:{name}"));
        Ok(())
    }

    /// Creates and starts restart `restarts` of a container; a restart, or a failure (why it
    /// waits), backs the next one off.
    async fn start_with_backoff(
        &self,
        pod: &Value,
        spec: &Value,
        uid: &str,
        name: &str,
        sandbox_id: &str,
        restarts: u32,
    ) -> Result<(), Waiting> {
        match self.start_container(pod, spec, sandbox_id, restarts).await {
            Ok(()) => {
                if restarts > 0 {
                    self.back_off(uid, name);
                    metrics::get().container_restarts.inc();
                }
                Ok(())
            }
            Err(e) => {
                self.back_off(uid, name);
                let reason = if e.is::<ConfigError>() {
                    "CreateContainerConfigError"
                } else {
                    "CreateContainerError"
                };
                Err(Waiting {
                    reason,
                    message: e.to_string(),
                })
            }
        }
    }

    /// Annotations telling other hosts where the pod is reachable: the node's address and the
    /// host port of each TCP port the sandbox published.
    fn reachable(&self, sandbox: &Observed) -> BTreeMap<String, String> {
        if self.network.by_ip {
            return BTreeMap::new();
        }
        sandbox
            .published()
            .into_iter()
            .filter_map(|(key, host)| {
                let (port, proto) = key.split_once('/')?;
                (proto == "tcp").then(|| {
                    (
                        format!(
                            "{}{port}",
                            crate::controllers::endpoints::REACHABLE_PORT_PREFIX
                        ),
                        host,
                    )
                })
            })
            .chain([(
                crate::controllers::endpoints::REACHABLE_IP.to_string(),
                self.address.clone(),
            )])
            .collect()
    }

    /// The pod's status from what Docker reports.
    fn status(
        &self,
        pod: &Value,
        observed: &[Observed],
        waiting: &HashMap<String, Waiting>,
        policy: &str,
    ) -> Value {
        let sandbox = observed
            .iter()
            .rev()
            .find(|o| o.container == SANDBOX && o.running());
        let pod_ip = sandbox.map(Observed::ip).unwrap_or_default();
        let mut statuses = Vec::new();
        let (mut all_ready, mut any_running, mut all_done, mut any_failed) =
            (true, false, true, false);
        for spec in spec_containers(pod) {
            let name = spec["name"].as_str().unwrap_or("");
            let mine: Vec<&Observed> = observed.iter().filter(|o| o.container == name).collect();
            let latest = mine.last();
            let previous = mine.len().checked_sub(2).map(|i| mine[i]);
            let running = latest.is_some_and(|l| l.running());
            let state = match (waiting.get(name), latest) {
                (Some(w), _) => json!({"waiting": {"reason": w.reason, "message": w.message}}),
                (None, Some(l)) if l.running() => {
                    json!({"running": {"startedAt": l.state_time(false)}})
                }
                (None, Some(l)) if l.exited() => l.terminated(),
                _ => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let finished = latest.is_some_and(|l| {
                l.exited() && !should_restart(policy, l.exit_code()) && !waiting.contains_key(name)
            });
            all_ready &= running;
            any_running |= running;
            all_done &= finished;
            any_failed |= finished && latest.is_some_and(|l| l.exit_code() != 0);
            let mut st = json!({
                "name": name,
                "image": spec["image"],
                "imageID": latest.and_then(|l| l.inspect.image.clone()).map(|i| format!("docker://{i}")).unwrap_or_default(),
                "ready": running,
                "started": running,
                "restartCount": latest.map(|l| l.restarts).unwrap_or(0),
                "state": state,
                "lastState": previous.map(|p| p.terminated()).unwrap_or_else(|| json!({})),
            });
            if let Some(l) = latest {
                st["containerID"] = json!(format!("docker://{}", l.id));
            }
            statuses.push(st);
        }
        let phase = if all_done && !statuses.is_empty() {
            if any_failed {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if any_running
            || observed
                .iter()
                .any(|o| o.container != SANDBOX && o.exited())
        {
            "Running"
        } else {
            "Pending"
        };
        let old = &pod["status"];
        let ready = if all_ready && phase == "Running" {
            "True"
        } else {
            "False"
        };
        let conditions = conditions(
            old,
            &[
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", ready),
                ("Ready", ready),
            ],
        );
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.address,
            "hostIPs": [{"ip": self.address}],
            "startTime": old.get("startTime").cloned().unwrap_or_else(|| json!(crate::registry::object::now())),
            "containerStatuses": statuses,
            "qosClass": qos_class(pod),
        });
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        status
    }

    /// Stops (SIGTERM, then SIGKILL after the pod's grace period) and removes a pod's containers,
    /// the sandbox last, then its folders.
    pub async fn remove_pod(&self, uid: &str, observed: Vec<Observed>) -> anyhow::Result<()> {
        let (sandboxes, containers): (Vec<_>, Vec<_>) =
            observed.into_iter().partition(|o| o.container == SANDBOX);
        let stop_all = |list: Vec<Observed>| {
            futures::future::join_all(list.into_iter().map(|o| async move {
                self.stop(&o).await;
                self.remove(&o.id).await
            }))
        };
        for r in stop_all(containers).await {
            r?;
        }
        for r in stop_all(sandboxes).await {
            r?;
        }
        if let Ok(dir) = volumes::pod_dir(&self.data_dir.join("pods"), uid) {
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        self.backoff.lock().unwrap().retain(|(u, _), _| u != uid);
        Ok(())
    }

    /// Stops the running containers of a pod that reached a final phase (or was evicted),
    /// keeping them for their logs.
    pub async fn stop_pod(&self, observed: Vec<Observed>) {
        let running: Vec<Observed> = observed.into_iter().filter(Observed::running).collect();
        futures::future::join_all(running.iter().map(|o| self.stop(o))).await;
    }

    async fn stop(&self, o: &Observed) {
        if !o.running() {
            return;
        }
        let grace = o
            .inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_GRACE))
            .and_then(|g| g.parse::<i32>().ok())
            .unwrap_or(30);
        let started = Instant::now();
        let options = StopContainerOptionsBuilder::default().t(grace).build();
        let _ = self.docker.stop_container(&o.id, Some(options)).await;
        metrics::get().observe_runtime("stop_container", started.elapsed());
    }

    /// A container's log, as `kubectl logs` asks for it.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &LogQuery,
    ) -> anyhow::Result<impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + use<>> {
        let all = self.observe().await?;
        let mut mine: Vec<&Observed> = all
            .values()
            .flatten()
            .filter(|o| {
                o.container == container && {
                    let labels = o.inspect.config.as_ref().and_then(|c| c.labels.as_ref());
                    let l = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
                    l(LABEL_NAME) == Some(pod) && l(LABEL_NAMESPACE) == Some(namespace)
                }
            })
            .collect();
        mine.sort_by_key(|o| o.restarts);
        let target = if query.previous {
            mine.len().checked_sub(2).map(|i| mine[i])
        } else {
            mine.last().copied()
        };
        let Some(target) = target else {
            anyhow::bail!(
                "container \"{container}\" in pod \"{pod}\" has no {}container on this node",
                if query.previous { "previous " } else { "" }
            );
        };
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(query.follow)
            .timestamps(query.timestamps);
        if let Some(n) = query.tail_lines {
            options = options.tail(&n.to_string());
        }
        let stream = self.docker.logs(&target.id, Some(options.build()));
        Ok(stream.map(|item| {
            item.map(|out| out.into_bytes())
                .map_err(std::io::Error::other)
        }))
    }
}

/// Options of a log request (kubelet's `/containerLogs` query).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub previous: bool,
    #[serde(default)]
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
}

/// The pod's quality-of-service class, as Kubernetes derives it from requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec_containers(pod) {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Pod conditions with their transition times kept while their status holds.
fn conditions(old_status: &Value, wanted: &[(&str, &str)]) -> Vec<Value> {
    let now = crate::registry::object::now();
    wanted
        .iter()
        .map(|(t, s)| {
            let old = old_status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == *t && c["status"] == *s);
            let since = old
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            json!({"type": t, "status": s, "lastTransitionTime": since, "lastProbeTime": null})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports() {
        let pod = json!({"metadata": {"name": "web.1", "namespace": "default", "uid": "0123456789abcdef"},
            "spec": {"containers": [
                {"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]},
                {"name": "b", "ports": [{"containerPort": 8080, "hostPort": 9090}, {"containerPort": 80}]}]}});
        assert_eq!(
            container_name(&pod, "a", 2),
            "k8s_a_web.1_default_01234567_2"
        );
        let ports = pod_ports(&pod);
        assert_eq!(ports["80/tcp"], "");
        assert_eq!(ports["53/udp"], "");
        assert_eq!(ports["8080/tcp"], "9090");
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn qos_classes() {
        let pod = |resources: Value| json!({"spec": {"containers": [{"name": "c", "resources": resources}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 137));
    }

    #[test]
    fn docker_times_to_seconds() {
        assert_eq!(
            rfc3339_seconds("2026-11-26T15:00:01.123456789Z").as_deref(),
            Some("2026-11-26T15:00:01Z")
        );
        assert_eq!(rfc3339_seconds("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let old = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
        let c = conditions(&old, &[("Ready", "True"), ("Initialized", "True")]);
        assert_eq!(c[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_ne!(c[1]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        let c = conditions(&old, &[("Ready", "False")]);
        assert_ne!(c[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }
}
