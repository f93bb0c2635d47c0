//! The scheduler: binds pods without a node to a node, through Raft, in batches.
//!
//! Filters (a node must pass all): Ready, enough free CPU and memory for the pod's requests,
//! no host-port conflict, node selector. Scores: least requested (free share after placing the
//! pod) plus spread (fewer pods of the same controller on the node). One pass places every
//! pending pod in memory — each placement updates the node's free resources — and writes all
//! bindings as one Raft command, each binding with the pod's resource version as precondition
//! so a pod is bound at most once. A pod no node can take gets `PodScheduled=False` and a
//! FailedScheduling event, and is retried on the next change of pods or nodes.

use std::collections::{BTreeMap, BTreeSet};

use keelson_raft::{Command, OpResult};
use serde_json::{json, Value};

use super::events::{event, Severity};
use super::util::{
    condition, controller_uid, list, pod_active, rv, s, store_key, stored_bytes, string_map,
};
use super::Context;
use keelson_model::quantity::parse_quantity;

/// CPU (cores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu: f64,
    pub memory: f64,
}

/// The sum of a pod's container requests.
pub fn pod_requests(pod: &Value) -> Resources {
    let mut r = Resources::default();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        r.cpu += c
            .pointer("/resources/requests/cpu")
            .and_then(Value::as_str)
            .and_then(parse_quantity)
            .unwrap_or(0.0);
        r.memory += c
            .pointer("/resources/requests/memory")
            .and_then(Value::as_str)
            .and_then(parse_quantity)
            .unwrap_or(0.0);
    }
    r
}

/// Host ports a pod asks for.
pub fn host_ports(pod: &Value) -> BTreeSet<i64> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
        .filter(|p| *p > 0)
        .collect()
}

/// A node as the scheduler sees it during one pass.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub used: Resources,
    pub host_ports: BTreeSet<i64>,
    /// Pods per controller uid on this node.
    pub per_controller: BTreeMap<String, usize>,
}

impl NodeInfo {
    fn from_node(node: &Value) -> Self {
        let cap = |k: &str| {
            node.pointer(&format!("/status/allocatable/{k}"))
                .or_else(|| node.pointer(&format!("/status/capacity/{k}")))
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        NodeInfo {
            name: s(node, "/metadata/name").to_string(),
            ready: condition(node, "Ready") == Some("True")
                && node.pointer("/spec/unschedulable") != Some(&Value::Bool(true)),
            labels: string_map(node, "/metadata/labels"),
            capacity: Resources {
                cpu: cap("cpu"),
                memory: cap("memory"),
            },
            used: Resources::default(),
            host_ports: BTreeSet::new(),
            per_controller: BTreeMap::new(),
        }
    }

    fn add(&mut self, pod: &Value) {
        let r = pod_requests(pod);
        self.used.cpu += r.cpu;
        self.used.memory += r.memory;
        self.host_ports.extend(host_ports(pod));
        if let Some(uid) = controller_uid(pod) {
            *self.per_controller.entry(uid.to_string()).or_default() += 1;
        }
    }
}

/// Why a node cannot take a pod, or `None` if it can.
pub fn filter(node: &NodeInfo, pod: &Value) -> Option<&'static str> {
    if !node.ready {
        return Some("node(s) were not ready");
    }
    let want = pod_requests(pod);
    if node.used.cpu + want.cpu > node.capacity.cpu + 1e-9 {
        return Some("Insufficient cpu");
    }
    if node.used.memory + want.memory > node.capacity.memory + 0.5 {
        return Some("Insufficient memory");
    }
    if !host_ports(pod).is_disjoint(&node.host_ports) {
        return Some("node(s) didn't have free ports for the requested pod ports");
    }
    let selector = string_map(pod, "/spec/nodeSelector");
    if !selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    None
}

/// Higher is better: the free share left after placing the pod (0–100), plus up to 100 for
/// spreading the pod's controller.
pub fn score(node: &NodeInfo, pod: &Value) -> f64 {
    let want = pod_requests(pod);
    let free = |cap: f64, used: f64| {
        if cap <= 0.0 {
            0.0
        } else {
            ((cap - used) / cap).clamp(0.0, 1.0)
        }
    };
    let least_requested = 50.0
        * (free(node.capacity.cpu, node.used.cpu + want.cpu)
            + free(node.capacity.memory, node.used.memory + want.memory));
    let same = controller_uid(pod)
        .and_then(|uid| node.per_controller.get(uid))
        .copied()
        .unwrap_or(0);
    least_requested + 100.0 / (1.0 + same as f64)
}

/// Picks the best node for `pod`, or the reasons every node refused it.
pub fn choose<'a>(
    nodes: &'a [NodeInfo],
    pod: &Value,
) -> Result<&'a NodeInfo, BTreeMap<&'static str, usize>> {
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut best: Option<(&NodeInfo, f64)> = None;
    for n in nodes {
        match filter(n, pod) {
            Some(why) => *reasons.entry(why).or_default() += 1,
            None => {
                let sc = score(n, pod);
                if best.is_none_or(|(_, b)| sc > b) {
                    best = Some((n, sc));
                }
            }
        }
    }
    best.map(|(n, _)| n).ok_or(reasons)
}

fn unschedulable_message(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// One scheduling pass.
pub async fn sync(ctx: Context) -> Result<(), String> {
    let pods = list(&ctx, "pods");
    let mut nodes: Vec<NodeInfo> = list(&ctx, "nodes")
        .iter()
        .map(NodeInfo::from_node)
        .collect();
    for pod in pods.iter().filter(|p| pod_active(p)) {
        if let Some(n) = nodes
            .iter_mut()
            .find(|n| n.name == s(pod, "/spec/nodeName"))
        {
            n.add(pod);
        }
    }
    let pending: Vec<&Value> = pods
        .iter()
        .filter(|p| s(p, "/spec/nodeName").is_empty() && pod_active(p))
        .collect();
    ctx.metrics.pending_pods.set(pending.len() as i64);
    if pending.is_empty() {
        return Ok(());
    }
    let mut binds = Vec::new();
    let mut bound_events = Vec::new();
    let mut unschedulable = Vec::new();
    for pod in &pending {
        match choose(&nodes, pod) {
            Ok(node) => {
                let name = node.name.clone();
                let mut bound = (*pod).clone();
                bound["spec"]["nodeName"] = json!(name);
                set_condition(&mut bound, "PodScheduled", "True", "", "");
                binds.push(Command::Update {
                    key: store_key("pods", pod),
                    value: stored_bytes(bound),
                    precondition: Some(rv(pod)),
                });
                bound_events.push(event(
                    pod,
                    Severity::Normal,
                    "Scheduled",
                    &format!(
                        "Successfully assigned {}/{} to {name}",
                        s(pod, "/metadata/namespace"),
                        s(pod, "/metadata/name")
                    ),
                    "default-scheduler",
                ));
                nodes
                    .iter_mut()
                    .find(|n| n.name == name)
                    .expect("chosen node")
                    .add(pod);
            }
            Err(reasons) => {
                unschedulable.push((*pod, unschedulable_message(nodes.len(), &reasons)))
            }
        }
    }
    if !binds.is_empty() {
        let n = binds.len();
        let results = ctx
            .node
            .write_batch(binds)
            .await
            .map_err(|e| e.to_string())?;
        let ok = results
            .iter()
            .filter(|r| matches!(r, OpResult::Stored { .. }))
            .count();
        ctx.metrics
            .scheduling_attempts
            .with_label_values(&["scheduled"])
            .inc_by(ok as u64);
        ctx.metrics
            .scheduling_attempts
            .with_label_values(&["conflict"])
            .inc_by((n - ok) as u64);
        // Events only for bindings that took effect.
        let events: Vec<Command> = results
            .iter()
            .zip(bound_events)
            .filter(|(r, _)| r.is_success())
            .filter_map(|(_, e)| e)
            .collect();
        if !events.is_empty() {
            let _ = ctx.node.write_batch(events).await;
        }
    }
    // Report unschedulable pods once per distinct reason.
    let mut updates = Vec::new();
    for (pod, message) in unschedulable {
        ctx.metrics
            .scheduling_attempts
            .with_label_values(&["unschedulable"])
            .inc();
        let already = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["message"] == message.as_str()
                })
            });
        if already {
            continue;
        }
        let mut p = pod.clone();
        set_condition(&mut p, "PodScheduled", "False", "Unschedulable", &message);
        updates.push(Command::Update {
            key: store_key("pods", pod),
            value: stored_bytes(p),
            precondition: Some(rv(pod)),
        });
        if let Some(e) = event(
            pod,
            Severity::Warning,
            "FailedScheduling",
            &message,
            "default-scheduler",
        ) {
            updates.push(e);
        }
    }
    if !updates.is_empty() {
        ctx.node
            .write_batch(updates)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Sets (or replaces) a status condition.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    let now = crate::registry::object::now();
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .expect("object")
        .entry("conditions")
        .or_insert(json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let arr = conds.as_array_mut().expect("array");
    match arr.iter_mut().find(|x| x["type"] == kind) {
        Some(existing) => {
            if existing["status"] == status {
                c["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = c;
        }
        None => arr.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> NodeInfo {
        NodeInfo::from_node(&json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"capacity": {"cpu": cpu, "memory": mem}, "conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn pod(cpu: &str, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                          "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]}});
        merge(&mut p, &extra);
        p
    }

    fn merge(a: &mut Value, b: &Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    #[test]
    fn filters() {
        let n = node("n", "1", "1Gi", json!({"disk": "ssd"}));
        assert_eq!(filter(&n, &pod("500m", json!({}))), None);
        assert_eq!(filter(&n, &pod("2", json!({}))), Some("Insufficient cpu"));
        assert_eq!(
            filter(
                &n,
                &pod("1", json!({"spec": {"nodeSelector": {"disk": "hdd"}}}))
            ),
            Some("node(s) didn't match Pod's node affinity/selector")
        );
        let mut busy = n.clone();
        busy.host_ports.insert(8080);
        let hp = pod(
            "100m",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        assert!(filter(&busy, &hp).is_some());
        let mut not_ready = n.clone();
        not_ready.ready = false;
        assert_eq!(
            filter(&not_ready, &pod("1m", json!({}))),
            Some("node(s) were not ready")
        );
    }

    #[test]
    fn scores_prefer_free_nodes_and_spread() {
        let mut a = node("a", "4", "4Gi", json!({}));
        let b = node("b", "4", "4Gi", json!({}));
        let p = pod(
            "1",
            json!({"metadata": {"ownerReferences": [{"uid": "rc1", "controller": true}]}}),
        );
        a.add(&p);
        assert_eq!(
            choose(&[a.clone(), b.clone()], &p).unwrap().name,
            "b",
            "spread and least requested"
        );
        let big = pod("8", json!({}));
        let reasons = choose(&[a, b], &big).unwrap_err();
        assert_eq!(reasons.get("Insufficient cpu"), Some(&2));
        assert_eq!(
            unschedulable_message(2, &reasons),
            "0/2 nodes are available: 2 Insufficient cpu."
        );
    }
}
