//! Shared pieces of the cluster phases of `keelson bench` (pod-startup, proxy, scheduling,
//! heartbeats, metrics-cost): agent processes, an in-process harness of heartbeat streams for
//! many hollow nodes, Docker cleanup
//! by cluster label, CPU accounting from `/proc/PID/stat`, and a small JSON client.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use keelson_chaos::cluster::free_addr;
use keelson_chaos::Cluster;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{MEMBERS, REQUEST_TIMEOUT};

/// A JSON client over every master of a cluster.
#[derive(Clone)]
pub struct Api {
    pub urls: Vec<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(cluster: &Cluster) -> anyhow::Result<Api> {
        Ok(Api {
            urls: (1..=MEMBERS as u64).map(|id| cluster.url(id)).collect(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(256)
                .build()?,
        })
    }

    /// One request to master index `m` (0-based); the status and the JSON answer.
    pub async fn call(
        &self,
        m: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.urls[m % self.urls.len()]));
        if let Some(b) = body {
            req = req
                .header("content-type", content_type)
                .body(serde_json::to_vec(b)?);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    /// GET on master `m`, which must answer 2xx.
    pub async fn get(&self, m: usize, path: &str) -> anyhow::Result<Value> {
        match self
            .call(m, reqwest::Method::GET, path, None, "application/json")
            .await?
        {
            (c, v) if (200..300).contains(&c) => Ok(v),
            (c, v) => bail!("GET {path}: {c} {v}"),
        }
    }

    /// POST of `body` on master `m`, which must answer 2xx.
    pub async fn post(&self, m: usize, path: &str, body: &Value) -> anyhow::Result<Value> {
        match self
            .call(
                m,
                reqwest::Method::POST,
                path,
                Some(body),
                "application/json",
            )
            .await?
        {
            (c, v) if (200..300).contains(&c) => Ok(v),
            (c, v) => bail!("POST {path}: {c} {v}"),
        }
    }

    /// The cluster id the masters report (the label value of every container the agents run).
    pub async fn cluster_id(&self) -> anyhow::Result<String> {
        let v = self.get(0, "/cluster").await?;
        v["cluster_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("/cluster without cluster_id: {v}"))
    }
}

/// The loopback address `127.SLOT.OCTET.N` beside the cluster's masters (127.SLOT.0.N).
pub fn beside(cluster: &Cluster, octet: u8, n: usize) -> Ipv4Addr {
    let slot = match cluster.spec(1).api.ip() {
        IpAddr::V4(ip) => ip.octets()[1],
        IpAddr::V6(_) => 250,
    };
    Ipv4Addr::new(127, slot, octet, (n % 250) as u8 + 1)
}

/// One `keelson agent` process.
pub struct Agent {
    pub name: String,
    pub address: Ipv4Addr,
    /// Where it serves `/metrics`.
    pub api: std::net::SocketAddr,
    child: Child,
}

/// Agent processes, killed on drop.
pub struct Agents(pub Vec<Agent>);

impl Agents {
    /// Starts `n` agents `bench-node-N` on the Docker runtime, each on its own loopback address
    /// 127.SLOT.3.N, logging to `ROOT/agent-N.log` of the cluster, with `extra` flags
    /// (`--proxy-mode`, `--pod-network`).
    pub fn start_docker(cluster: &Cluster, n: usize, extra: &[&str]) -> anyhow::Result<Agents> {
        let bin = super::keelson_bin()?;
        let masters: Vec<String> = (1..=MEMBERS as u64).map(|id| cluster.url(id)).collect();
        let mut agents = Vec::new();
        for i in 0..n {
            let name = format!("bench-node-{}", i + 1);
            let address = beside(cluster, 3, i);
            let api = free_addr(address);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(cluster.root().join(format!("agent-{}.log", i + 1)))?;
            let child = Command::new(&bin)
                .args(["agent", "--runtime", "docker", "--name", &name])
                .args(["--masters", &masters.join(",")])
                .args(["--address", &address.to_string()])
                .args(["--api-addr", &api.to_string()])
                .arg("--data-dir")
                .arg(cluster.root().join(format!("agent-{}", i + 1)))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn keelson agent")?;
            agents.push(Agent {
                name,
                address,
                api,
                child,
            });
        }
        Ok(Agents(agents))
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|a| a.name.clone()).collect()
    }
}

impl Drop for Agents {
    /// SIGTERM first, so a kernel-mode agent removes its rules; SIGKILL after 10 s.
    fn drop(&mut self) {
        for a in &self.0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for a in &mut self.0 {
            while Instant::now() < deadline && matches!(a.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }
}

/// A Docker bridge network of the bench's own (Docker picks its subnet), removed on drop: pods
/// join it, so wrk's "direct" traffic goes to addresses the bench created.
pub struct Network {
    pub name: String,
    pub subnet: String,
}

impl Network {
    pub fn create(tag: &str) -> anyhow::Result<Network> {
        let name = format!("keelson-bench-{tag}-{}", std::process::id());
        let out = Command::new("docker")
            .args(["network", "create", "--driver", "bridge", &name])
            .output()
            .context("docker network create")?;
        if !out.status.success() {
            bail!(
                "docker network create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new("docker")
            .args(["network", "inspect", "--format"])
            .arg("{{range .IPAM.Config}}{{.Subnet}} {{end}}")
            .arg(&name)
            .output()
            .context("docker network inspect")?;
        let subnet = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|s| !s.contains(':'))
            .map(str::to_string);
        let net = Network {
            name,
            subnet: subnet.unwrap_or_default(),
        };
        if net.subnet.is_empty() {
            bail!("docker network {} has no IPv4 subnet", net.name);
        }
        Ok(net)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes (`docker rm -f`) every container labelled with the cluster's id, on drop too.
pub struct DockerCleanup(pub String);

impl DockerCleanup {
    pub fn run(&self) -> usize {
        let filter = format!("label=io.keelson.cluster={}", self.0);
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        let ids: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        ids.len()
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let n = self.run();
        if n > 0 {
            eprintln!(
                "bench: removed {n} containers labelled io.keelson.cluster={}",
                self.0
            );
        }
    }
}

/// `condition` of an object's status is "True".
pub fn condition_true(obj: &Value, condition: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == condition && c["status"] == "True")
        })
}

/// Waits until every node in `names` reports Ready=True.
pub async fn wait_nodes_ready(
    api: &Api,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = match api.get(0, "/api/v1/nodes").await {
            Ok(list) => list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| condition_true(n, "Ready"))
                .filter(|n| names.iter().any(|x| n["metadata"]["name"] == x.as_str()))
                .count(),
            Err(_) => 0,
        };
        if ready == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} nodes Ready after {timeout:?}",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn name_of(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

pub fn node_of(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Not finished and not being deleted.
pub fn active(p: &Value) -> bool {
    !matches!(
        p.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) && p.pointer("/metadata/deletionTimestamp").is_none()
}

/// A Node as `keelson agent` registers it (hollow runtime).
pub fn hollow_node(name: &str, i: usize) -> Value {
    let capacity = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", 200 + i / 65536 % 50, i / 256 % 256, i % 256)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": keelson_nodeinfo::hollow(name),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        },
    })
}

/// Registers `names` as Nodes, `clients` at a time, round-robin over the masters.
pub async fn register_nodes(api: &Api, names: &[String], clients: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let names = Arc::new(names.to_vec());
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (api, next, names) = (api.clone(), next.clone(), names.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(name) = names.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let mut tries = 0;
                loop {
                    match api
                        .call(
                            c + tries,
                            reqwest::Method::POST,
                            "/api/v1/nodes",
                            Some(&hollow_node(name, i)),
                            "application/json",
                        )
                        .await
                    {
                        Ok((code, _)) if (200..300).contains(&code) || code == 409 => break,
                        Ok((code, v)) if tries >= 5 => bail!("register {name}: {code} {v}"),
                        Err(e) if tries >= 5 => bail!("register {name}: {e}"),
                        _ => tries += 1,
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The leader's API URL as the masters report it, shared by every heartbeat stream.
struct LeaderCache {
    urls: Vec<String>,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<String>>,
}

impl LeaderCache {
    async fn get(&self) -> Option<String> {
        let mut cur = self.current.lock().await;
        if cur.is_none() {
            for url in &self.urls {
                let status: Option<Value> = async {
                    self.http
                        .get(format!("{url}/cluster"))
                        .timeout(Duration::from_millis(500))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                let api = status.and_then(|s| {
                    let leader = s["leader"].as_u64()?;
                    s["members"][leader.to_string()]["api"]
                        .as_str()
                        .map(str::to_string)
                });
                if let Some(api) = api.filter(|a| !a.is_empty()) {
                    *cur = Some(api);
                    break;
                }
            }
        }
        cur.clone()
    }

    async fn forget(&self, stale: &str) {
        let mut cur = self.current.lock().await;
        if cur.as_deref() == Some(stale) {
            *cur = None;
        }
    }
}

/// Heartbeat streams of many hollow nodes from this process, as `keelson agent` sends them: one
/// long-lived `POST /agent/heartbeats?node=NAME` to the leader per node, one line per beat,
/// re-opened (on the new leader) when it ends. Dropping it ends every stream.
pub struct Heartbeats {
    tasks: JoinSet<()>,
    pub sent: Arc<AtomicU64>,
    pub reconnects: Arc<AtomicU64>,
}

impl Heartbeats {
    pub fn start(urls: Vec<String>, names: &[String], every: Duration) -> Heartbeats {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_keepalive(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client");
        let leader = Arc::new(LeaderCache {
            urls,
            http: http.clone(),
            current: tokio::sync::Mutex::new(None),
        });
        let sent = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for name in names {
            let (http, leader, sent, reconnects) = (
                http.clone(),
                leader.clone(),
                sent.clone(),
                reconnects.clone(),
            );
            let name = name.clone();
            // Real agents do not beat in lockstep: each stream starts at a random offset.
            let offset =
                Duration::from_millis(rand::random::<u64>() % every.as_millis().max(1) as u64);
            tasks.spawn(async move {
                let mut first = true;
                loop {
                    if !first {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    first = false;
                    let Some(url) = leader.get().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let start = tokio::time::Instant::now() + offset;
                    let sent = sent.clone();
                    let beats = futures::stream::unfold(
                        tokio::time::interval_at(start, every),
                        move |mut tick| {
                            let sent = sent.clone();
                            async move {
                                tick.tick().await;
                                sent.fetch_add(1, Ordering::Relaxed);
                                Some((
                                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}\n")),
                                    tick,
                                ))
                            }
                        },
                    );
                    let _ = http
                        .post(format!("{url}/agent/heartbeats?node={name}"))
                        .body(reqwest::Body::wrap_stream(beats))
                        .send()
                        .await;
                    leader.forget(&url).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        Heartbeats {
            tasks,
            sent,
            reconnects,
        }
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// utime + stime of process `pid` in seconds (`/proc/PID/stat`).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / tck)
}

/// The machine's 1-minute load average.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The command line this process was started with.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut args = args;
    if let Some(first) = args.first_mut() {
        if let Some(rel) = Path::new(first.as_str())
            .strip_prefix(std::env::current_dir().unwrap_or_default())
            .ok()
            .map(|p| p.display().to_string())
        {
            *first = rel;
        }
    }
    args.join(" ")
}
