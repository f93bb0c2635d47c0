//! Nodes: core/v1 `Node` (v1beta1's `Minion`), registered and kept Ready by each agent's
//! heartbeats; cluster-scoped.

use k8s_openapi::api::core::v1 as core;
use keelson_model::smp::{self, Strategies};
use keelson_model::v1beta1 as convert;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{age, arr, col, or_none, s, Column, AGE, NAME};
use super::resource::Kind;

/// Nodes.
pub struct Node;

impl Kind for Node {
    type Object = core::Node;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        has_status: true,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };

    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", 0, "The status of the node"),
        col("Roles", "string", 0, "The roles of the node"),
        AGE,
        col("Version", "string", 0, "Kubelet Version reported by the node."),
        col("Internal-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
        col("External-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
        col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
        col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
        col("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
    ];

    const PATCH_STRATEGIES: Strategies = smp::core_v1::NODE;

    const SELECTABLE_FIELDS: &'static [&'static str] = &["spec.unschedulable"];

    const V1BETA1_NAMES: Option<(&'static str, &'static str)> = Some(("minions", "Minion"));

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        node_cells(obj, now)
    }

    fn to_v1beta1(&self, node: &core::Node) -> Option<Value> {
        Some(convert::node_to_v1beta1(node))
    }

    fn from_v1beta1(&self) -> Option<fn(&Value) -> Result<core::Node, convert::ConvertError>> {
        Some(convert::minion_from_v1beta1)
    }
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    super::condition_status(node, "Ready") == Some("True")
}

fn node_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let conditions = arr(obj, "/status/conditions");
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = conditions.iter().find(|c| s(c, "/type") == "Ready") {
        status.push(
            if s(ready, "/status") == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .into(),
        );
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|r| !r.is_empty()).map(str::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |t: &str| {
        or_none(
            arr(obj, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == t)
                .map_or("", |a| s(a, "/address")),
        )
    };
    vec![
        name,
        json!(status.join(",")),
        json!(or_none(&roles.join(","))),
        json!(age(obj, now)),
        json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_none(s(obj, "/status/nodeInfo/osImage"))),
        json!(or_none(s(obj, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_row() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"}}});
        let c = node_cells(&node, jiff::Timestamp::now());
        assert_eq!(
            c[1..3],
            [json!("Ready,SchedulingDisabled"), json!("worker")]
        );
        assert_eq!(c[4], "v1.37.0");
    }
}
