//! Where a pod goes: filters (a node must pass all), scores (higher is better), and the choice
//! over a sample of the nodes.
//!
//! Filters: Ready and schedulable, room for one more pod, enough free CPU and memory for the
//! pod's requests, no host-port conflict, the node selector. Scores: least requested (the free share after
//! placing the pod) plus spread (fewer pods of the same controller on the node).
//!
//! Like kube-scheduler's `percentageOfNodesToScore`, a choice stops once it has found enough
//! feasible nodes ([`nodes_to_find`]) and the next choice starts where it stopped, so over many
//! pods every node is considered in turn and one choice costs O(sample), not O(nodes).

use std::collections::BTreeMap;

use crate::informer::node::NodeFacts;
use crate::informer::pod::PodFacts;

use super::accounting::Usage;

/// Why `node` (with `usage`) cannot take `pod`, or `None` if it can.
pub fn filter(node: &NodeFacts, usage: Option<&Usage>, pod: &PodFacts) -> Option<&'static str> {
    if !node.is_ready() || node.unschedulable {
        return Some("node(s) were not ready");
    }
    let empty = Usage::default();
    let usage = usage.unwrap_or(&empty);
    if node.max_pods.is_some_and(|max| usage.pods >= max) {
        return Some("Too many pods");
    }
    let want = pod.requests;
    if usage.requested.cpu + want.cpu > node.allocatable.cpu + 1e-9 {
        return Some("Insufficient cpu");
    }
    if usage.requested.memory + want.memory > node.allocatable.memory + 0.5 {
        return Some("Insufficient memory");
    }
    if pod
        .host_ports
        .iter()
        .any(|p| usage.host_ports.contains_key(p))
    {
        return Some("node(s) didn't have free ports for the requested pod ports");
    }
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    None
}

/// Higher is better: the free share left after placing the pod (0–100), plus up to 100 for
/// spreading the pod's controller.
pub fn score(node: &NodeFacts, usage: Option<&Usage>, pod: &PodFacts) -> f64 {
    let empty = Usage::default();
    let usage = usage.unwrap_or(&empty);
    let want = pod.requests;
    let free = |cap: f64, used: f64| {
        if cap <= 0.0 {
            0.0
        } else {
            ((cap - used) / cap).clamp(0.0, 1.0)
        }
    };
    let least_requested = 50.0
        * (free(node.allocatable.cpu, usage.requested.cpu + want.cpu)
            + free(
                node.allocatable.memory,
                usage.requested.memory + want.memory,
            ));
    let same = pod
        .controller_uid()
        .and_then(|uid| usage.per_controller.get(uid))
        .copied()
        .unwrap_or(0);
    least_requested + 100.0 / (1.0 + same as f64)
}

/// How many feasible nodes a choice looks for among `n`: all of them below 100 nodes, else
/// kube-scheduler's adaptive share (50% less 1% per 125 nodes, at least 5%), at least 100.
pub fn nodes_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let percent = 50usize.saturating_sub(n / 125).max(5);
    (n * percent / 100).max(100)
}

/// Picks a node for `pod` among `nodes`, examining them from `*start` on (and moving it past
/// the nodes examined), or gives the reasons every node refused it.
pub fn choose<'a, 'u>(
    nodes: &[&'a NodeFacts],
    usage: impl Fn(&str) -> Option<&'u Usage>,
    start: &mut usize,
    pod: &PodFacts,
) -> Result<&'a NodeFacts, BTreeMap<&'static str, usize>> {
    let n = nodes.len();
    let want = nodes_to_find(n);
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut best: Option<(&'a NodeFacts, f64)> = None;
    let mut found = 0;
    let mut examined = 0;
    while examined < n && found < want {
        let node = nodes[(*start + examined) % n];
        examined += 1;
        let u = usage(&node.name);
        match filter(node, u, pod) {
            Some(why) => *reasons.entry(why).or_default() += 1,
            None => {
                found += 1;
                let sc = score(node, u, pod);
                if best.is_none_or(|(_, b)| sc > b) {
                    best = Some((node, sc));
                }
            }
        }
    }
    if n > 0 {
        *start = (*start + examined) % n;
    }
    best.map(|(n, _)| n).ok_or(reasons)
}

/// The `FailedScheduling` message kube-scheduler gives.
pub fn unschedulable_message(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::accounting::{Accounting, Contribution};
    use super::*;
    use crate::informer::Facts;

    fn node(name: &str, cpu: &str, mem: &str, labels: Value) -> NodeFacts {
        NodeFacts::from_object(&json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"capacity": {"cpu": cpu, "memory": mem}, "conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn pod(cpu: &str, extra: Value) -> PodFacts {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                          "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]}});
        merge(&mut p, &extra);
        PodFacts::from_object(&p)
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
        assert_eq!(filter(&n, None, &pod("500m", json!({}))), None);
        assert_eq!(
            filter(&n, None, &pod("2", json!({}))),
            Some("Insufficient cpu")
        );
        assert_eq!(
            filter(
                &n,
                None,
                &pod("1", json!({"spec": {"nodeSelector": {"disk": "hdd"}}}))
            ),
            Some("node(s) didn't match Pod's node affinity/selector")
        );
        let hp = pod(
            "100m",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        let mut busy = Accounting::default();
        busy.set("other", Some(Contribution::of(&hp, "n")), false);
        assert!(filter(&n, busy.usage("n"), &hp).is_some());
        let mut not_ready = n.clone();
        not_ready.ready = Some("Unknown".into());
        assert_eq!(
            filter(&not_ready, None, &pod("1m", json!({}))),
            Some("node(s) were not ready")
        );
    }

    #[test]
    fn scores_prefer_free_nodes_and_spread() {
        let (a, b) = (
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        );
        let nodes = [&a, &b];
        let p = pod(
            "1",
            json!({"metadata": {"ownerReferences": [{"uid": "rc1", "controller": true}]}}),
        );
        let mut acc = Accounting::default();
        acc.set("placed", Some(Contribution::of(&p, "a")), false);
        let mut start = 0;
        let chosen = choose(&nodes, |n| acc.usage(n), &mut start, &p).unwrap();
        assert_eq!(chosen.name, "b", "spread and least requested");
        let big = pod("8", json!({}));
        let reasons = choose(&nodes, |n| acc.usage(n), &mut start, &big).unwrap_err();
        assert_eq!(reasons.get("Insufficient cpu"), Some(&2));
        assert_eq!(
            unschedulable_message(2, &reasons),
            "0/2 nodes are available: 2 Insufficient cpu."
        );
    }

    #[test]
    fn a_choice_samples_from_a_rotating_start() {
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(1_000), 420);
        assert_eq!(nodes_to_find(5_000), 500);
        assert_eq!(nodes_to_find(100_000), 5_000);
        let facts: Vec<NodeFacts> = (0..1_000)
            .map(|i| node(&format!("n{i:04}"), "4", "4Gi", json!({})))
            .collect();
        let nodes: Vec<&NodeFacts> = facts.iter().collect();
        let p = pod("1m", json!({}));
        let acc = Accounting::default();
        let mut start = 0;
        choose(&nodes, |n| acc.usage(n), &mut start, &p).unwrap();
        assert_eq!(start, 420, "stopped after the sample");
        choose(&nodes, |n| acc.usage(n), &mut start, &p).unwrap();
        assert_eq!(start, 840);
        choose(&nodes, |n| acc.usage(n), &mut start, &p).unwrap();
        assert_eq!(start, 260, "wrapped around");
    }

    /// Kube-scheduler's invariants under a random workload of placements and removals: no
    /// node over its cpu, memory or pod count, no host port taken twice on a node, every pod
    /// on a Ready node its selector admits, and the accounting equal to a recount.
    #[test]
    fn invariants_hold_under_a_random_workload() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let facts: Vec<NodeFacts> = (0..rng.gen_range(1..12))
                .map(|i| {
                    let disk = if rng.gen_bool(0.5) { "ssd" } else { "hdd" };
                    let ready = if rng.gen_bool(0.9) { "True" } else { "Unknown" };
                    NodeFacts::from_object(&json!({
                        "metadata": {"name": format!("n{i}"), "labels": {"disk": disk}},
                        "spec": {"unschedulable": rng.gen_bool(0.1)},
                        "status": {"allocatable": {"cpu": format!("{}", rng.gen_range(1..5)),
                                                   "memory": format!("{}Gi", rng.gen_range(1..5)),
                                                   "pods": format!("{}", rng.gen_range(1..8))},
                                   "conditions": [{"type": "Ready", "status": ready}]},
                    }))
                })
                .collect();
            let nodes: Vec<&NodeFacts> = facts.iter().collect();
            let mut acc = Accounting::default();
            let mut placed: BTreeMap<String, (PodFacts, String)> = BTreeMap::new();
            let mut start = 0;
            for step in 0..300 {
                if !placed.is_empty() && rng.gen_bool(0.3) {
                    let key = placed
                        .keys()
                        .nth(rng.gen_range(0..placed.len()))
                        .unwrap()
                        .clone();
                    placed.remove(&key);
                    acc.set(&key, None, false);
                    continue;
                }
                let mut extra = json!({"metadata": {"ownerReferences": [{"uid": format!("rc{}", rng.gen_range(0..3)), "controller": true}]}});
                if rng.gen_bool(0.3) {
                    let port = [80, 443, 8080][rng.gen_range(0..3)];
                    extra["spec"] = json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1m"}}, "ports": [{"containerPort": 1, "hostPort": port}]}]});
                }
                if rng.gen_bool(0.3) {
                    extra["spec"]["nodeSelector"] = json!({"disk": "ssd"});
                }
                let mut p = pod(&format!("{}m", rng.gen_range(1..1500)), extra);
                p.requests.memory = rng.gen_range(0..1_500_000_000u64) as f64;
                let key = format!("default/p{step}");
                if let Ok(node) = choose(&nodes, |n| acc.usage(n), &mut start, &p) {
                    let name = node.name.clone();
                    acc.set(&key, Some(Contribution::of(&p, &name)), step % 2 == 0);
                    placed.insert(key, (p, name));
                }
            }
            for node in &facts {
                let here: Vec<&PodFacts> = placed
                    .values()
                    .filter(|(_, n)| *n == node.name)
                    .map(|(p, _)| p)
                    .collect();
                let cpu: f64 = here.iter().map(|p| p.requests.cpu).sum();
                let memory: f64 = here.iter().map(|p| p.requests.memory).sum();
                assert!(
                    cpu <= node.allocatable.cpu + 1e-6,
                    "seed {seed}: cpu on {}",
                    node.name
                );
                assert!(
                    memory <= node.allocatable.memory + 1.0,
                    "seed {seed}: memory on {}",
                    node.name
                );
                assert!(
                    here.len() <= node.max_pods.unwrap(),
                    "seed {seed}: pods on {}",
                    node.name
                );
                let mut ports: Vec<i64> = here.iter().flat_map(|p| p.host_ports.clone()).collect();
                let n = ports.len();
                ports.sort();
                ports.dedup();
                assert_eq!(
                    ports.len(),
                    n,
                    "seed {seed}: a host port twice on {}",
                    node.name
                );
                if !here.is_empty() {
                    assert!(
                        node.is_ready() && !node.unschedulable,
                        "seed {seed}: {}",
                        node.name
                    );
                }
                for p in &here {
                    assert!(p
                        .node_selector
                        .iter()
                        .all(|(k, v)| node.labels.get(k) == Some(v)));
                }
                let usage = acc.usage(&node.name).cloned().unwrap_or_default();
                assert_eq!(
                    usage.pods,
                    here.len(),
                    "seed {seed}: recount on {}",
                    node.name
                );
                assert!((usage.requested.cpu - cpu).abs() < 1e-6, "seed {seed}");
            }
        }
    }
}
