//! Pods: core/v1 `Pod`, the unit the scheduler binds and the agents run.

use k8s_openapi::api::core::v1 as core;
use keelson_model::smp::{self, Strategies};
use keelson_model::v1beta1 as convert;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::object::obj_mut;
use super::podspec::{default_pod_spec, validate_pod_spec};
use super::printing::{age, arr, col, or_none, s, since, Column, AGE, NAME};
use super::resource::Kind;
use super::validation::{forbidden, required, Cause};

/// Pods.
pub struct Pod;

impl Kind for Pod {
    type Object = core::Pod;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        has_scale: false,
        has_log: true,
        graceful_delete: true,
    };

    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "string", 0, "The aggregate status of the containers in this pod."),
        col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        AGE,
        col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster."),
        col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
        col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
        col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
    ];

    const PATCH_STRATEGIES: Strategies = smp::core_v1::POD;

    const SELECTABLE_FIELDS: &'static [&'static str] = &[
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "status.podIP",
    ];

    const V1BETA1_NAMES: Option<(&'static str, &'static str)> = Some(("pods", "Pod"));

    fn initial_status(&self) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn apply_defaults(&self, obj: &mut Value) {
        default_pod_spec(obj_mut(obj, "spec"));
    }

    fn check(&self, pod: &core::Pod, _obj: &Value, causes: &mut Vec<Cause>) {
        match &pod.spec {
            Some(spec) => validate_pod_spec(spec, "spec", causes),
            None => causes.push(required("spec")),
        }
    }

    /// A pod that finished stays finished (kube-apiserver refuses it too): an agent's late
    /// status write must not bring back a pod that node lifecycle failed, after its controller
    /// replaced it.
    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        let phase = |v: &Value| s(v, "/status/phase").to_string();
        let (was, is) = (phase(old), phase(new));
        if matches!(was.as_str(), "Succeeded" | "Failed") && is != was {
            causes.push(forbidden(
                "status.phase",
                &format!("a pod in phase {was} cannot change to {is:?}: it finished"),
            ));
        }
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        pod_cells(obj, now)
    }

    fn to_v1beta1(&self, pod: &core::Pod) -> Option<Value> {
        Some(convert::pod_to_v1beta1(pod))
    }

    fn from_v1beta1(&self) -> Option<fn(&Value) -> Result<core::Pod, convert::ConvertError>> {
        Some(convert::pod_from_v1beta1)
    }
}

/// A pod's STATUS as kubectl shows it: Terminating, else a container's waiting or terminated
/// reason (the last container's that has one), else the pod's reason or phase.
pub fn status_reason(obj: &Value) -> String {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    let mut reason = match s(obj, "/status/reason") {
        "" => s(obj, "/status/phase").to_string(),
        r => r.to_string(),
    };
    for c in arr(obj, "/status/containerStatuses") {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        }
    }
    reason
}

fn pod_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let containers = arr(obj, "/spec/containers");
    let statuses = arr(obj, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<String> = None;
    for c in statuses {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        let finished = s(c, "/lastState/terminated/finishedAt");
        if !finished.is_empty() && last_restart.as_deref().is_none_or(|l| finished > l) {
            last_restart = Some(finished.to_string());
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", since(&t, now)),
        _ => restarts.to_string(),
    };
    let gates = arr(obj, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(obj, "/status/conditions");
        let true_gates = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    vec![
        name,
        json!(format!("{ready}/{}", containers.len())),
        json!(status_reason(obj)),
        json!(restarts),
        json!(age(obj, now)),
        json!(or_none(s(obj, "/status/podIP"))),
        json!(or_none(s(obj, "/spec/nodeName"))),
        json!(or_none(s(obj, "/status/nominatedNodeName"))),
        json!(gates),
    ]
}

/// What deleting a pod does (Kubernetes' graceful deletion).
#[derive(Debug, Clone, PartialEq)]
pub enum PodDeletion {
    /// Remove it now: it is not bound, has finished, its node is not Ready (no agent would
    /// confirm), or the grace period asked for is 0.
    Now,
    /// Mark it terminating (this object, with `deletionTimestamp` and
    /// `deletionGracePeriodSeconds`): its node's agent stops the containers and then removes it.
    Graceful(Value),
    /// It is terminating already.
    Terminating,
}

/// How to delete `pod`, given the grace period asked for (else the pod's
/// `terminationGracePeriodSeconds`, else 30 s) and whether its node is Ready.
pub fn pod_deletion(pod: &Value, grace: Option<i64>, node_ready: bool) -> PodDeletion {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let grace = grace
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0);
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
    if !bound || finished || !node_ready || grace == 0 {
        return PodDeletion::Now;
    }
    if terminating {
        return PodDeletion::Terminating;
    }
    let mut marked = pod.clone();
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let meta = obj_mut(&mut marked, "metadata");
    meta.insert("deletionTimestamp".into(), json!(at));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    PodDeletion::Graceful(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_pod_stays_finished() {
        use crate::registry::strategy::prepare_update;
        use crate::registry::Subresource;
        let info = &Pod::INFO;
        let pod = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "default", "uid": "u"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": phase}})
        };
        let mut back = pod("Running");
        let e =
            prepare_update(info, &mut back, &pod("Failed"), Subresource::Status, "v1").unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("status.phase: Forbidden"),
            "{}",
            e.message
        );
        for (from, to) in [
            ("Running", "Failed"),
            ("Pending", "Running"),
            ("Failed", "Failed"),
        ] {
            let mut new = pod(to);
            prepare_update(info, &mut new, &pod(from), Subresource::Status, "v1")
                .unwrap_or_else(|e| panic!("{from} → {to}: {}", e.message));
        }
    }

    #[test]
    fn pods_are_deleted_gracefully_only_when_an_agent_will_confirm() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5},
                         "status": {"phase": "Running"}});
        let PodDeletion::Graceful(marked) = pod_deletion(&pod, None, true) else {
            panic!("a running pod on a Ready node is deleted gracefully");
        };
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 5);
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(pod_deletion(&marked, None, true), PodDeletion::Terminating);
        assert_eq!(pod_deletion(&marked, Some(0), true), PodDeletion::Now);
        assert_eq!(
            pod_deletion(&pod, None, false),
            PodDeletion::Now,
            "node not Ready"
        );
        assert_eq!(
            pod_deletion(&pod, Some(0), true),
            PodDeletion::Now,
            "grace 0"
        );
        let mut unbound = pod.clone();
        unbound["spec"]["nodeName"] = json!("");
        assert_eq!(pod_deletion(&unbound, None, true), PodDeletion::Now);
        let mut failed = pod.clone();
        failed["status"]["phase"] = json!("Failed");
        assert_eq!(pod_deletion(&failed, None, true), PodDeletion::Now);
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = pod_cells(&pod, jiff::Timestamp::now());
        assert_eq!(c.len(), Pod::COLUMNS.len());
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "<unknown>");
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
    }
}
