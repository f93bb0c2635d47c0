//! Node lifecycle: heartbeats in the leader's memory, transitions through Raft.
//!
//! Agents stream heartbeats to the leader over one long-lived request (`POST
//! /agent/heartbeats?node=NAME`, one line per beat). Each beat resets the node's TTL in
//! [`Heartbeats`]; nothing is written for a beat. Only transitions are: Ready → Unknown when a
//! node was silent for the grace period (with a NodeNotReady event), back to Ready when it beats
//! again. A newly elected leader gives every node a full grace period before judging it. Pods on
//! a node NotReady for longer than the eviction timeout are marked Failed (reason NodeLost), so
//! their replication controller replaces them elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use keelson_raft::{Command, RaftNode};
use openraft::ServerState;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::events::{event, Severity};
use super::util::{pod_terminating, rv, s, set_condition, store_key, stored_bytes};
use super::{Context, ControllerMetrics};
use crate::informer::pod as pod_index;
use crate::registry::{self, lookup};

/// Last heartbeat of every node, as seen by this master while leader.
#[derive(Clone)]
pub struct Heartbeats(Arc<Mutex<HeartbeatState>>);

struct HeartbeatState {
    last: HashMap<String, Instant>,
    /// When this master last became leader: nodes not heard from since count from here.
    since: Instant,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats(Arc::new(Mutex::new(HeartbeatState {
            last: HashMap::new(),
            since: Instant::now(),
        })))
    }
}

impl Heartbeats {
    /// Records a beat of `node`.
    pub fn beat(&self, node: &str) {
        self.0
            .lock()
            .expect("heartbeats")
            .last
            .insert(node.to_string(), Instant::now());
    }

    /// When `node` was last heard of (or the start of this leadership).
    pub fn last(&self, node: &str) -> Instant {
        let st = self.0.lock().expect("heartbeats");
        st.last.get(node).copied().unwrap_or(st.since).max(st.since)
    }

    /// A new leadership: every node gets a full grace period from now.
    pub fn grant_grace_to_all(&self) {
        self.0.lock().expect("heartbeats").since = Instant::now();
    }
}

/// What the lifecycle decides for one node.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    BecameNotReady,
    BecameReady,
}

/// The transition for a node silent for `silent`, whose Ready condition is `ready`.
pub fn transition(ready: Option<&str>, silent: Duration, grace: Duration) -> Transition {
    let is_ready = ready == Some("True");
    if silent > grace && (is_ready || ready.is_none()) {
        Transition::BecameNotReady
    } else if silent <= grace && !is_ready {
        Transition::BecameReady
    } else {
        Transition::None
    }
}

/// The lifecycle loop, until `token` is cancelled.
pub async fn run(ctx: Context, token: CancellationToken) {
    let tick = (ctx.config.node_grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut not_ready_since: HashMap<String, Instant> = HashMap::new();
    loop {
        if let Err(e) = pass(&ctx, &mut not_ready_since).await {
            if !token.is_cancelled() {
                tracing::warn!("node lifecycle: {e}");
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

async fn pass(ctx: &Context, not_ready_since: &mut HashMap<String, Instant>) -> Result<(), String> {
    // From the nodes informer: a node is decoded only when it changes state.
    let nodes = ctx.informers.nodes.list();
    let now = Instant::now();
    let mut commands = Vec::new();
    let mut counts: HashMap<&str, i64> = HashMap::from([("True", 0), ("False", 0), ("Unknown", 0)]);
    for item in &nodes {
        let name = item.facts.name.clone();
        let ready = item.facts.ready.as_deref();
        let silent = now.saturating_duration_since(ctx.heartbeats.last(&name));
        let change = match transition(ready, silent, ctx.config.node_grace) {
            Transition::BecameNotReady => Some((
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
                "NodeNotReady",
            )),
            Transition::BecameReady => Some((
                "True",
                "KubeletReady",
                "keelson agent is posting ready status",
                "NodeReady",
            )),
            Transition::None => None,
        };
        if let Some((status, reason, message, event_reason)) = change {
            let node = item.object().map_err(|e| e.message)?;
            let mut updated = node.clone();
            set_condition(&mut updated, "Ready", status, reason, message);
            commands.push(Command::Update {
                key: item.key.clone(),
                value: stored_bytes(updated),
                precondition: Some(item.rv()),
            });
            commands.extend(event(
                &node,
                Severity::Normal,
                event_reason,
                &format!("Node {name} status is now: {event_reason}"),
                "node-controller",
            ));
            if status == "True" {
                not_ready_since.remove(&name);
            }
        }
        *counts.entry(ready.unwrap_or("Unknown")).or_default() += 1;
        if ready != Some("True") {
            let since = *not_ready_since.entry(name.clone()).or_insert(now);
            if now.saturating_duration_since(since) > ctx.config.pod_eviction {
                commands.extend(evict_pods(ctx, &name)?);
            }
        } else {
            not_ready_since.remove(&name);
        }
    }
    for (cond, n) in counts {
        ctx.metrics.nodes.with_label_values(&[cond]).set(n);
    }
    if !commands.is_empty() {
        super::util::write(&ctx, commands).await?;
    }
    Ok(())
}

/// Marks every active pod on `node` Failed (reason NodeLost), and removes its terminating
/// pods at once: no agent is there to confirm their deletion.
fn evict_pods(ctx: &Context, node: &str) -> Result<Vec<Command>, String> {
    let info = lookup("pods").expect("pods");
    let mut pods = Vec::new();
    for item in ctx.informers.pods.by_index(pod_index::BY_NODE, node) {
        if item.facts.active() || item.facts.terminating {
            pods.push(item.object().map_err(|e| e.message)?);
        }
    }
    Ok(pods
        .into_iter()
        .map(|p| {
            if pod_terminating(&p) {
                return Command::Delete {
                    key: store_key("pods", &p),
                    precondition: Some(rv(&p)),
                };
            }
            let mut failed = p.clone();
            failed["status"]["phase"] = json!("Failed");
            failed["status"]["reason"] = json!("NodeLost");
            failed["status"]["message"] = json!(format!(
                "Node {node} which was running pod {} is unresponsive",
                s(&p, "/metadata/name")
            ));
            set_condition(&mut failed, "Ready", "False", "NodeLost", "");
            Command::Update {
                key: registry::key(
                    info,
                    Some(s(&p, "/metadata/namespace")),
                    s(&p, "/metadata/name"),
                ),
                value: stored_bytes(failed),
                precondition: Some(rv(&p)),
            }
        })
        .collect())
}

/// What the heartbeat endpoint needs.
#[derive(Clone)]
pub struct HeartbeatEndpoint {
    pub node: Arc<RaftNode>,
    pub heartbeats: Heartbeats,
    pub metrics: ControllerMetrics,
}

#[derive(Deserialize)]
pub struct BeatParams {
    node: String,
}

/// `POST /agent/heartbeats?node=NAME`: a long-lived request whose body carries one line per
/// heartbeat. Only the leader takes it; others answer 503 naming the leader's API.
pub async fn heartbeats(
    State(ep): State<HeartbeatEndpoint>,
    Query(p): Query<BeatParams>,
    body: Body,
) -> Response {
    let leader_api = || ep.node.leader().map(|(_, n)| n.api).unwrap_or_default();
    let mut metrics = ep.node.raft.metrics();
    if metrics.borrow().state != ServerState::Leader {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"leader": leader_api()})),
        )
            .into_response();
    }
    let mut stream = body.into_data_stream();
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    for _ in bytes.iter().filter(|b| **b == b'\n') {
                        ep.heartbeats.beat(&p.node);
                        ep.metrics.heartbeats.inc();
                    }
                }
                _ => return (StatusCode::OK, "stream ended").into_response(),
            },
            changed = metrics.changed() => {
                if changed.is_err() || metrics.borrow().state != ServerState::Leader {
                    return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"leader": leader_api()}))).into_response();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let g = Duration::from_secs(10);
        assert_eq!(
            transition(Some("True"), Duration::from_secs(11), g),
            Transition::BecameNotReady
        );
        assert_eq!(
            transition(None, Duration::from_secs(11), g),
            Transition::BecameNotReady
        );
        assert_eq!(
            transition(Some("True"), Duration::from_secs(1), g),
            Transition::None
        );
        assert_eq!(
            transition(Some("Unknown"), Duration::from_secs(1), g),
            Transition::BecameReady
        );
        assert_eq!(
            transition(None, Duration::from_secs(1), g),
            Transition::BecameReady
        );
        assert_eq!(
            transition(Some("Unknown"), Duration::from_secs(20), g),
            Transition::None
        );
    }

    #[test]
    fn a_new_leadership_grants_grace() {
        let hb = Heartbeats::default();
        hb.beat("n1");
        hb.grant_grace_to_all();
        assert!(hb.last("n1") >= hb.last("never-seen"));
        assert!(hb.last("never-seen").elapsed() < Duration::from_secs(1));
    }
}
