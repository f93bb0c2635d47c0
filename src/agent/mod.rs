//! `keelson agent`: one node. It registers its Node, streams heartbeats to the leader, runs the
//! pods bound to it through a [`runtime::Runtime`] and reports their status.
//!
//! Invariant: the agent talks to masters only through their HTTP API (any master for reads and
//! writes, the leader for heartbeats); it never touches RocksDB.

mod client;
mod http;
pub mod metrics;
pub mod runtime;

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use client::Masters;

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
    /// How pods run: `docker` (real containers) or `hollow` (nothing runs; pods are reported
    /// running — for scale tests).
    #[arg(long, default_value = "docker")]
    pub runtime: String,
    /// CPU capacity (cores) reported for the node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity reported for the node.
    #[arg(long, default_value = "8Gi")]
    pub memory: String,
    /// Maximum pods on the node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Node labels, `k=v,...`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Interval between heartbeats.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Where the agent serves /metrics, /healthz, /livez and /readyz (default `<--address>:10250`).
    #[arg(long)]
    pub api_addr: Option<String>,
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let stop = crate::master::shutdown_signal();
    let runtime: Box<dyn runtime::Runtime> = match args.runtime.as_str() {
        "hollow" => Box::new(runtime::Hollow::new(&args.name)),
        "docker" => bail!("--runtime docker: the Docker runtime is not part of this build yet; use --runtime hollow"),
        other => bail!("--runtime {other}: expected docker or hollow"),
    };
    let masters = Masters::new(args.masters.clone(), args.token.clone())?;
    // An explicit --api-addr must be served; the default may be taken (several agents on one
    // address, as in tests and benchmarks): then the agent runs without its HTTP server.
    let http = match &args.api_addr {
        Some(addr) => Some(http::serve(addr).await?),
        None => match http::serve(&format!("{}:10250", args.address)).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("{e:#}; running without /metrics and health endpoints");
                None
            }
        },
    };
    register(&masters, &args)
        .await
        .context("register the node")?;
    tracing::info!(node = %args.name, runtime = %args.runtime, "agent running");
    let beats = tokio::spawn(client::heartbeat_forever(
        masters.clone(),
        args.name.clone(),
        Duration::from_millis(args.heartbeat_ms),
    ));
    let pods = tokio::spawn(sync_pods_forever(masters.clone(), args.clone(), runtime));
    stop.await;
    beats.abort();
    pods.abort();
    if let Some(h) = http {
        h.abort();
    }
    Ok(())
}

fn node_object(args: &AgentArgs) -> Value {
    let labels: serde_json::Map<String, Value> = args
        .labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .chain([("kubernetes.io/hostname".to_string(), json!(args.name))])
        .collect();
    let capacity =
        json!({"cpu": args.cpu, "memory": args.memory, "pods": args.max_pods.to_string()});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": args.name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": args.address}, {"type": "Hostname", "address": args.name}],
            "nodeInfo": {"kubeletVersion": format!("keelson-v{}", env!("CARGO_PKG_VERSION")), "containerRuntimeVersion": args.runtime},
        },
    })
}

/// Creates the Node, or refreshes its capacity and addresses if it exists.
async fn register(masters: &Masters, args: &AgentArgs) -> anyhow::Result<()> {
    let node = node_object(args);
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
                current["status"]["capacity"] = node["status"]["capacity"].clone();
                current["status"]["allocatable"] = node["status"]["allocatable"].clone();
                current["status"]["addresses"] = node["status"]["addresses"].clone();
                current["status"]["nodeInfo"] = node["status"]["nodeInfo"].clone();
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

/// Follows the pods bound to this node (list + watch, re-established on any failure) and lets
/// the runtime bring each to its desired state, reporting status back.
async fn sync_pods_forever(masters: Masters, args: AgentArgs, runtime: Box<dyn runtime::Runtime>) {
    let selector = format!("spec.nodeName={}", args.name);
    let mut backoff = Duration::from_millis(100);
    loop {
        let path = format!(
            "/api/v1/pods?watch=true&fieldSelector={}",
            urlencode(&selector)
        );
        match masters.watch(&path).await {
            Ok(mut events) => {
                backoff = Duration::from_millis(100);
                metrics::get().reset_pods();
                while let Some(ev) = events.next().await {
                    let key = pod_key(&ev["object"]);
                    if ev["type"] == "ADDED" || ev["type"] == "MODIFIED" {
                        let started = std::time::Instant::now();
                        let desired = runtime.desired_status(&ev["object"], &args.address);
                        metrics::get().observe_runtime("desired_status", started.elapsed());
                        let phase = desired
                            .as_ref()
                            .unwrap_or(&ev["object"]["status"])
                            .get("phase")
                            .cloned();
                        if let Some(status) = desired {
                            report_status(&masters, &ev["object"], status).await;
                        }
                        metrics::get().pod_phase(
                            key,
                            Some(phase.as_ref().and_then(Value::as_str).unwrap_or("")),
                        );
                    } else if ev["type"] == "DELETED" {
                        let started = std::time::Instant::now();
                        runtime.forget(&ev["object"]);
                        metrics::get().observe_runtime("forget", started.elapsed());
                        metrics::get().pod_phase(key, None);
                    }
                }
            }
            Err(e) => tracing::debug!("pod watch: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
