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
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::events::{event, Severity};
use super::util::{pod_terminating, rv, s, set_condition, store_key, stored_bytes};
use super::{Context, ControllerMetrics};
use crate::informer::node as node_index;
use crate::informer::pod as pod_index;
use crate::informer::queue::WorkQueue;
use crate::registry::{self, lookup};

/// Last heartbeat of every node, as seen by this master while leader.
#[derive(Clone)]
pub struct Heartbeats(Arc<Mutex<HeartbeatState>>);

struct HeartbeatState {
    last: HashMap<String, Instant>,
    /// When this master last became leader: nodes not heard from since count from here.
    since: Instant,
    /// Nodes whose next beat the lifecycle loop wants to hear of (they are not Ready), with
    /// their keys, and its queue.
    watched: HashMap<String, String>,
    wake: Option<Arc<WorkQueue<String>>>,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats(Arc::new(Mutex::new(HeartbeatState {
            last: HashMap::new(),
            since: Instant::now(),
            watched: HashMap::new(),
            wake: None,
        })))
    }
}

impl Heartbeats {
    /// Records a beat of `node`.
    pub fn beat(&self, node: &str) {
        let mut st = self.0.lock().expect("heartbeats");
        let now = Instant::now();
        match st.last.get_mut(node) {
            Some(last) => *last = now,
            None => {
                st.last.insert(node.to_string(), now);
            }
        }
        if let Some(key) = st.watched.remove(node) {
            if let Some(queue) = &st.wake {
                queue.add(key);
            }
        }
    }

    /// The lifecycle loop's queue, given the key of every watched node that beats.
    fn wake_on_beat(&self, queue: Arc<WorkQueue<String>>) {
        let mut st = self.0.lock().expect("heartbeats");
        st.wake = Some(queue);
        st.watched.clear();
    }

    /// Stops giving keys to `queue` (unless a later loop's queue replaced it already).
    fn stop_waking(&self, queue: &Arc<WorkQueue<String>>) {
        let mut st = self.0.lock().expect("heartbeats");
        if st.wake.as_ref().is_some_and(|q| Arc::ptr_eq(q, queue)) {
            st.wake = None;
            st.watched.clear();
        }
    }

    /// Whether the next beat of `node` queues `key` (a node not Ready), or not.
    fn watch_beats(&self, node: &str, key: Option<&str>) {
        let mut st = self.0.lock().expect("heartbeats");
        match key {
            Some(key) => {
                st.watched.insert(node.to_string(), key.to_string());
            }
            None => {
                st.watched.remove(node);
            }
        }
    }

    /// When `node` was last heard of, or first asked about (a node registered a moment ago,
    /// whose agent has not beaten yet, is not silent: Kubernetes' node lifecycle counts from a
    /// node's first sight too), or the start of this leadership, whichever is last.
    pub fn last(&self, node: &str) -> Instant {
        let mut st = self.0.lock().expect("heartbeats");
        let since = st.since;
        let last = *st.last.entry(node.to_string()).or_insert_with(Instant::now);
        last.max(since)
    }

    /// Forgets a deleted node.
    fn forget(&self, node: &str) {
        let mut st = self.0.lock().expect("heartbeats");
        st.last.remove(node);
        st.watched.remove(node);
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

/// Nodes looked at in one pass, at most.
const CHUNK: usize = 1000;

/// The lifecycle loop, until `token` is cancelled. It works from a deadline queue of node
/// keys: a node is looked at when it changes, when it beats while not Ready, and when its
/// deadline comes (its grace period after its last beat, or its pods' eviction), so a pass
/// costs O(nodes due), not O(nodes).
pub async fn run(ctx: Context, token: CancellationToken) {
    let queue: Arc<WorkQueue<String>> = Arc::new(WorkQueue::default());
    let nodes = ctx.informers.nodes.clone();
    let _changes = nodes.on_change({
        let queue = queue.clone();
        move |old, new| {
            if let Some(item) = new.or(old) {
                queue.add(item.key.clone());
            }
        }
    });
    ctx.heartbeats.wake_on_beat(queue.clone());
    for item in nodes.list() {
        queue.add(item.key.clone());
    }
    let mut state = Lifecycle::default();
    loop {
        let keys = tokio::select! {
            _ = token.cancelled() => break,
            keys = queue.take(CHUNK) => match keys { Some(k) => k, None => break },
        };
        let began = Instant::now();
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = pass(&ctx, &queue, &mut state, &keys) => r,
        };
        super::util::record_pass(&ctx, "nodes", began);
        for k in &keys {
            queue.done(k);
        }
        if let Err(e) = result {
            tracing::warn!("node lifecycle: {e}");
            for k in keys {
                queue.retry(k);
            }
        }
        for cond in ["True", "False", "Unknown"] {
            let n = nodes.count_by_index(node_index::BY_READY, cond);
            ctx.metrics.nodes.with_label_values(&[cond]).set(n as i64);
        }
    }
    ctx.heartbeats.stop_waking(&queue);
    queue.shut_down();
}

/// What the loop remembers between passes.
#[derive(Default)]
struct Lifecycle {
    /// Since when each node is not Ready, as this leader saw it.
    not_ready_since: HashMap<String, Instant>,
    /// The deadline queued for each node key, so that no more than one waits at a time.
    armed: HashMap<String, Instant>,
}

impl Lifecycle {
    /// Queues `key` for `at`, unless a deadline no later than `at` is queued already.
    fn arm(&mut self, queue: &WorkQueue<String>, key: &str, at: Instant, now: Instant) {
        if self
            .armed
            .get(key)
            .is_some_and(|&armed| armed > now && armed <= at)
        {
            return;
        }
        self.armed.insert(key.to_string(), at);
        queue.add_after(key.to_string(), at.saturating_duration_since(now));
    }
}

async fn pass(
    ctx: &Context,
    queue: &WorkQueue<String>,
    state: &mut Lifecycle,
    keys: &[String],
) -> Result<(), String> {
    let now = Instant::now();
    let grace = ctx.config.node_grace;
    let mut commands = Vec::new();
    for key in keys {
        if state.armed.get(key).is_some_and(|&at| at <= now) {
            state.armed.remove(key);
        }
        // From the nodes informer: a node is decoded only when it changes state.
        let Some(item) = ctx.informers.nodes.get(key) else {
            // Deleted: forget it.
            let name = key.rsplit('/').next().unwrap_or_default();
            state.armed.remove(key);
            state.not_ready_since.remove(name);
            ctx.heartbeats.forget(name);
            continue;
        };
        let name = item.facts.name.clone();
        let ready = item.facts.ready.as_deref();
        let last = ctx.heartbeats.last(&name);
        let silent = now.saturating_duration_since(last);
        let change = match transition(ready, silent, grace) {
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
            let node = item.object()?;
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
        }
        let ready_now = match change {
            Some((status, ..)) => status == "True",
            None => ready == Some("True"),
        };
        if ready_now {
            // Looked at again when its grace runs out, unless it beats before.
            state.not_ready_since.remove(&name);
            ctx.heartbeats.watch_beats(&name, None);
            state.arm(queue, key, last + grace, now);
        } else {
            // Looked at again when it beats, and when its pods are due for eviction.
            ctx.heartbeats.watch_beats(&name, Some(key));
            let since = *state.not_ready_since.entry(name.clone()).or_insert(now);
            let evict_at = since + ctx.config.pod_eviction;
            if now >= evict_at {
                commands.extend(evict_pods(ctx, &name)?);
                // Pods bound there later (none should be) are evicted on the next look.
                state.arm(queue, key, now + ctx.config.pod_eviction, now);
            } else {
                state.arm(queue, key, evict_at, now);
            }
        }
    }
    if !commands.is_empty() {
        super::util::write(ctx, commands).await?;
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
            pods.push(item.object()?);
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
    let not_leader = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"leader": leader_api()})),
        )
            .into_response()
    };
    // Leadership changes only: openraft's metrics change with every replication ack, and a
    // thousand streams woken by each would cost more than their beats.
    let mut leadership = ep.node.leadership();
    leadership.borrow_and_update();
    if !ep.node.term().1 {
        return not_leader();
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
            changed = leadership.changed() => {
                if changed.is_err() || !leadership.borrow().1 {
                    return not_leader();
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
    fn one_deadline_waits_per_node() {
        let queue = WorkQueue::default();
        let mut state = Lifecycle::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        state.arm(&queue, "n", later, now);
        // A later deadline is covered by the one waiting; an earlier one replaces it.
        state.arm(&queue, "n", later + Duration::from_secs(5), now);
        assert_eq!(state.armed["n"], later);
        state.arm(&queue, "n", now + Duration::from_secs(1), now);
        assert_eq!(state.armed["n"], now + Duration::from_secs(1));
        // Once it is due, the next deadline is armed whatever it is.
        let due = now + Duration::from_secs(2);
        state.arm(&queue, "n", due + Duration::from_secs(30), due);
        assert_eq!(state.armed["n"], due + Duration::from_secs(30));
        // Due at once: queued now.
        state.arm(&queue, "m", now, now);
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test]
    async fn a_beat_of_a_watched_node_queues_its_key() {
        let hb = Heartbeats::default();
        let queue = Arc::new(WorkQueue::default());
        hb.wake_on_beat(queue.clone());
        hb.beat("n1");
        assert!(queue.is_empty(), "not watched");
        hb.watch_beats("n1", Some("/registry/nodes/n1"));
        hb.beat("n1");
        assert_eq!(queue.take(10).await.unwrap(), ["/registry/nodes/n1"]);
        queue.done(&"/registry/nodes/n1".to_string());
        hb.beat("n1");
        assert!(queue.is_empty(), "once per watch");
        hb.stop_waking(&queue);
        hb.watch_beats("n1", Some("/registry/nodes/n1"));
        hb.beat("n1");
        assert!(queue.is_empty(), "stopped");
    }

    #[test]
    fn a_new_leadership_grants_grace() {
        let hb = Heartbeats::default();
        hb.beat("n1");
        let granted = Instant::now();
        hb.grant_grace_to_all();
        assert!(hb.last("n1") >= granted, "counts from the new leadership");
        assert!(hb.last("never-seen") >= granted);
    }

    #[test]
    fn a_node_never_heard_of_counts_from_its_first_sight() {
        let hb = Heartbeats::default();
        let first = hb.last("new");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(hb.last("new"), first, "not from each look");
        hb.forget("new");
        assert!(hb.last("new") > first, "a deleted node starts over");
    }
}
