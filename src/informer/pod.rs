//! What the control loops read of a pod, computed once per change: identity, placement,
//! phase, owner, labels, and the scheduler's inputs (requests parsed once, host ports, node
//! selector).

use std::collections::BTreeMap;

use keelson_model::owners::controller_uid;
use keelson_model::quantity::parse_quantity;
use keelson_model::selectors::string_map;
use serde_json::Value;

use super::cache::Facts;
use crate::registry::condition;

/// Index: pods by `spec.nodeName` (unscheduled pods are not in it).
pub const BY_NODE: &str = "node";
/// Index: pods by the uid of their controller.
pub const BY_CONTROLLER: &str = "controller";
/// Index: pods by namespace.
pub const BY_NAMESPACE: &str = "namespace";
/// Index: pods without a controller, by namespace (what a controller may adopt).
pub const ORPHANS: &str = "orphans";
/// Index: pods by each of their labels, as `key=value` (in every namespace): what narrows a
/// list by label selector.
pub const BY_LABEL: &str = "label";
/// Index: active pods without a node, under the one value [`UNSCHEDULED`].
pub const PENDING: &str = "pending";
/// The value of every pod in [`PENDING`].
pub const UNSCHEDULED: &str = "";

/// CPU (cores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu: f64,
    pub memory: f64,
}

/// The controlling owner reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub node_name: String,
    pub pod_ip: String,
    pub phase: String,
    pub terminating: bool,
    pub ready: bool,
    pub controller: Option<Controller>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    /// The sum of the containers' requests.
    pub requests: Resources,
    pub host_ports: Vec<i64>,
    pub node_selector: BTreeMap<String, String>,
    /// The message of a `PodScheduled=False` condition.
    pub unschedulable: Option<String>,
}

impl PodFacts {
    /// Bound, running or about to: not finished.
    pub fn active(&self) -> bool {
        !matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }

    /// Waiting for a node.
    pub fn pending(&self) -> bool {
        self.node_name.is_empty() && self.active() && !self.terminating
    }

    /// The uid of the controller, if any.
    pub fn controller_uid(&self) -> Option<&str> {
        self.controller.as_ref().map(|c| c.uid.as_str())
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The sum of a pod's container requests.
pub fn requests_of(pod: &Value) -> Resources {
    let mut r = Resources::default();
    for c in containers(pod) {
        let q = |name: &str| {
            c.pointer(&format!("/resources/requests/{name}"))
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        r.cpu += q("cpu");
        r.memory += q("memory");
    }
    r
}

/// Host ports a pod asks for.
pub fn host_ports_of(pod: &Value) -> Vec<i64> {
    let mut ports: Vec<i64> = containers(pod)
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
        .filter(|p| *p > 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

impl Facts for PodFacts {
    const PLURAL: &'static str = "pods";
    const INDEXES: &'static [&'static str] = &[
        BY_NODE,
        BY_CONTROLLER,
        BY_NAMESPACE,
        BY_LABEL,
        ORPHANS,
        PENDING,
    ];

    fn from_object(pod: &Value) -> Self {
        let controller = controller_uid(pod).map(|uid| {
            let owner = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|os| os.iter().find(|o| o["uid"] == uid));
            let field = |f: &str| {
                owner
                    .and_then(|o| o.get(f))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            Controller {
                kind: field("kind"),
                name: field("name"),
                uid: uid.to_string(),
            }
        });
        let scheduled = condition(pod, "PodScheduled");
        PodFacts {
            namespace: s(pod, "/metadata/namespace").to_string(),
            name: s(pod, "/metadata/name").to_string(),
            node_name: s(pod, "/spec/nodeName").to_string(),
            pod_ip: s(pod, "/status/podIP").to_string(),
            phase: s(pod, "/status/phase").to_string(),
            terminating: pod.pointer("/metadata/deletionTimestamp").is_some(),
            ready: condition(pod, "Ready").is_some_and(|c| c["status"] == "True"),
            controller,
            labels: string_map(pod, "/metadata/labels"),
            created: s(pod, "/metadata/creationTimestamp").to_string(),
            requests: requests_of(pod),
            host_ports: host_ports_of(pod),
            node_selector: string_map(pod, "/spec/nodeSelector"),
            unschedulable: scheduled
                .filter(|c| c["status"] == "False")
                .map(|c| c["message"].as_str().unwrap_or("").to_string()),
        }
    }

    fn index_values(&self, index: &str) -> Vec<String> {
        match index {
            BY_NODE if !self.node_name.is_empty() => vec![self.node_name.clone()],
            BY_CONTROLLER => self.controller.iter().map(|c| c.uid.clone()).collect(),
            BY_NAMESPACE => vec![self.namespace.clone()],
            BY_LABEL => self.labels.iter().map(|(k, v)| label(k, v)).collect(),
            ORPHANS if self.controller.is_none() => vec![self.namespace.clone()],
            PENDING if self.pending() => vec![UNSCHEDULED.to_string()],
            _ => Vec::new(),
        }
    }
}

/// The value of `key=value` in [`BY_LABEL`].
pub fn label(key: &str, value: &str) -> String {
    format!("{key}={value}")
}
