//! What the control loops read of a node: readiness, schedulability, labels, allocatable.

use std::collections::BTreeMap;

use keelson_model::quantity::parse_quantity;
use keelson_model::selectors::string_map;
use serde_json::Value;

use super::cache::Facts;
use super::pod::Resources;
use crate::registry::condition_status;

/// Index: nodes by their Ready condition (`True`, `False`, `Unknown`; absent: `Unknown`).
pub const BY_READY: &str = "ready";

#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    /// The Ready condition's status, if it has one.
    pub ready: Option<String>,
    pub unschedulable: bool,
    pub labels: BTreeMap<String, String>,
    /// Allocatable (or, without it, capacity) CPU and memory.
    pub allocatable: Resources,
    /// Allocatable (or capacity) pods, if the node says.
    pub max_pods: Option<usize>,
}

impl NodeFacts {
    /// Ready: its agent is heard from.
    pub fn is_ready(&self) -> bool {
        self.ready.as_deref() == Some("True")
    }
}

impl Facts for NodeFacts {
    const PLURAL: &'static str = "nodes";
    const INDEXES: &'static [&'static str] = &[BY_READY];

    fn from_object(node: &Value) -> Self {
        let quantity = |k: &str| {
            node.pointer(&format!("/status/allocatable/{k}"))
                .or_else(|| node.pointer(&format!("/status/capacity/{k}")))
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        let ready = condition_status(node, "Ready");
        NodeFacts {
            name: node
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ready: ready.map(str::to_string),
            unschedulable: node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)),
            labels: string_map(node, "/metadata/labels"),
            allocatable: Resources {
                cpu: quantity("cpu"),
                memory: quantity("memory"),
            },
            max_pods: ["allocatable", "capacity"].iter().find_map(|field| {
                node.pointer(&format!("/status/{field}/pods"))
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse().ok())
            }),
        }
    }

    fn index_values(&self, index: &str) -> Vec<String> {
        match index {
            BY_READY => vec![self.ready.clone().unwrap_or_else(|| "Unknown".into())],
            _ => Vec::new(),
        }
    }
}
