//! The replication manager: exactly `spec.replicas` active pods matching each controller's
//! selector, always.
//!
//! `sync` runs over every controller: pods of the controller that failed (or were failed by
//! node lifecycle) are deleted; missing pods are created from the template, with an owner
//! reference; extra pods are deleted, the least useful first (unscheduled, pending, not ready,
//! then the youngest). Creates and deletes of one pass are one Raft command. Pods whose
//! controller no longer exists are garbage-collected. `status` (replicas, ready, available,
//! observedGeneration) is written only when it changed.

use std::collections::BTreeSet;

use bytes::Bytes;
use keelson_raft::{Command, OpResult};
use serde_json::{json, Value};

use super::events::{event, Severity};
use super::util::{
    controller_uid, delete_pod_command, list, pod_active, pod_ready, pod_terminating, ready_nodes,
    rv, s, string_map,
};
use super::Context;
use crate::registry::selectors::LabelSelector;
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, lookup, Subresource};

/// Pods one pass may create or delete, over every controller (kube-controller-manager's
/// `burstReplicas` is 500 too).
pub const BURST_REPLICAS: usize = 500;

/// How much a pod is worth keeping on scale-down: lower goes first.
fn keep_rank(pod: &Value) -> (u8, std::cmp::Reverse<String>) {
    let rank = if s(pod, "/spec/nodeName").is_empty() {
        0
    } else if s(pod, "/status/phase") == "Pending" {
        1
    } else if !pod_ready(pod) {
        2
    } else {
        3
    };
    // Among equals, the youngest goes first.
    (
        rank,
        std::cmp::Reverse(s(pod, "/metadata/creationTimestamp").to_string()),
    )
}

/// Pods to delete to go from `active` down to `want`.
pub fn choose_victims(mut active: Vec<&Value>, want: usize) -> Vec<&Value> {
    if active.len() <= want {
        return Vec::new();
    }
    active.sort_by_key(|p| keep_rank(p));
    let n = active.len() - want;
    active.into_iter().take(n).collect()
}

fn pod_from_template(rc: &Value) -> Result<(String, Value), String> {
    let info = lookup("pods").expect("pods");
    let ns = s(rc, "/metadata/namespace");
    let rc_name = s(rc, "/metadata/name");
    let template = rc.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    let prefix = format!("{}-", rc_name.to_lowercase());
    meta["generateName"] = json!(prefix);
    meta["ownerReferences"] = json!([{
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "name": rc_name,
        "uid": s(rc, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))});
    strategy::prepare_create(info, &mut pod, Some(ns), Names::Dns1123, "v1")
        .map_err(|e| e.message)?;
    let key = registry::key(info, Some(ns), s(&pod, "/metadata/name"));
    Ok((key, pod))
}

/// One pass over every controller.
pub async fn sync(ctx: Context) -> Result<(), String> {
    let rcs = list(&ctx, "replicationcontrollers");
    let pods = list(&ctx, "pods");
    let nodes = list(&ctx, "nodes");
    let nodes_ready = ready_nodes(&nodes);
    let live_uids: BTreeSet<&str> = rcs.iter().map(|rc| s(rc, "/metadata/uid")).collect();
    let mut commands = Vec::new();
    let mut status_updates = Vec::new();
    let (mut created, mut deleted) = (0u64, 0u64);
    // Creations and deletions this pass may make: the rest follows on the next passes (each
    // woken by this one's writes), so `replicas: 2147483647` is a long job, not one pass
    // building two billion pods in memory.
    let mut budget = BURST_REPLICAS;

    for rc in &rcs {
        let ns = s(rc, "/metadata/namespace");
        let uid = s(rc, "/metadata/uid");
        let selector = LabelSelector::from_map(&string_map(rc, "/spec/selector"));
        let want = rc
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        // The controller's pods: owned by it, or orphans matching its selector (adopted);
        // terminating pods no longer count, as in Kubernetes.
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| s(p, "/metadata/namespace") == ns && selector.matches_object(p))
            .filter(|p| !pod_terminating(p))
            .filter(|p| controller_uid(p).is_none_or(|u| u == uid))
            .collect();
        let (active, finished): (Vec<&Value>, Vec<&Value>) =
            mine.into_iter().partition(|p| pod_active(p));
        for p in &finished {
            commands.extend(delete_pod_command(p, &nodes_ready));
            deleted += 1;
        }
        let mut events = Vec::new();
        if active.len() < want {
            let n = (want - active.len()).min(budget);
            budget -= n;
            for _ in 0..n {
                let (key, pod) = pod_from_template(rc)?;
                events.push(event(
                    rc,
                    Severity::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", s(&pod, "/metadata/name")),
                    "replication-controller",
                ));
                commands.push(Command::Create {
                    key,
                    value: Bytes::from(serde_json::to_vec(&pod).expect("json")),
                });
                created += 1;
            }
        } else {
            let victims = choose_victims(active.clone(), want);
            let n = victims.len().min(budget);
            budget -= n;
            for p in victims.into_iter().take(n) {
                events.push(event(
                    rc,
                    Severity::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", s(p, "/metadata/name")),
                    "replication-controller",
                ));
                commands.extend(delete_pod_command(p, &nodes_ready));
                deleted += 1;
            }
        }
        commands.extend(events.into_iter().flatten());
        // Status as observed now (the next pass sees the effect of this one's writes).
        let ready = active.iter().filter(|p| pod_ready(p)).count();
        let labeled = active.len();
        let generation = rc
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": labeled,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": generation,
        });
        if rc.get("status") != Some(&status) {
            let mut updated = rc.clone();
            updated["status"] = status;
            let info = lookup("replicationcontrollers").expect("rcs");
            if strategy::prepare_update(info, &mut updated, rc, Subresource::Status, "v1").is_ok() {
                status_updates.push(Command::Update {
                    key: registry::key(info, Some(ns), s(rc, "/metadata/name")),
                    value: Bytes::from(serde_json::to_vec(&updated).expect("json")),
                    precondition: Some(rv(rc)),
                });
            }
        }
    }
    // Garbage: pods whose controller is gone.
    for p in &pods {
        if controller_uid(p).is_some_and(|u| !live_uids.contains(u))
            && p.pointer("/metadata/ownerReferences/0/kind")
                == Some(&json!("ReplicationController"))
        {
            if let Some(c) = delete_pod_command(p, &nodes_ready) {
                commands.push(c);
                deleted += 1;
            }
        }
    }
    commands.extend(status_updates);
    if commands.is_empty() {
        return Ok(());
    }
    let results = ctx
        .node
        .write_batch(commands)
        .await
        .map_err(|e| e.to_string())?;
    let failed = results
        .iter()
        .filter(|r| !matches!(r, OpResult::Stored { .. } | OpResult::Deleted { .. }))
        .count();
    ctx.metrics.pods_created.inc_by(created);
    ctx.metrics.pods_deleted.inc_by(deleted);
    if failed > 0 {
        // Something moved under us (a concurrent write): the next pass recomputes.
        tracing::debug!(
            failed,
            "replication: some operations lost a race; resyncing"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_down_removes_the_least_useful_first() {
        let ready = json!({"metadata": {"name": "ready", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"nodeName": "n"},
                           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let not_ready = json!({"metadata": {"name": "notready", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}});
        let pending = json!({"metadata": {"name": "pending", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}});
        let unscheduled = json!({"metadata": {"name": "unscheduled"}, "spec": {}, "status": {"phase": "Pending"}});
        let young_ready = json!({"metadata": {"name": "young", "creationTimestamp": "2026-06-01T00:00:00Z"}, "spec": {"nodeName": "n"},
                                 "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let all = vec![&ready, &young_ready, &not_ready, &pending, &unscheduled];
        let names = |v: Vec<&Value>| {
            v.iter()
                .map(|p| s(p, "/metadata/name").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(choose_victims(all.clone(), 4)), ["unscheduled"]);
        assert_eq!(
            names(choose_victims(all.clone(), 1)),
            ["unscheduled", "pending", "notready", "young"]
        );
        assert!(choose_victims(all, 5).is_empty());
    }

    #[test]
    fn pods_from_template_are_owned_and_valid() {
        let rc = json!({"kind": "ReplicationController", "metadata": {"name": "mysiteController", "namespace": "default", "uid": "u1"},
                        "spec": {"replicas": 2, "selector": {"name": "mysite"},
                                 "template": {"metadata": {"labels": {"name": "mysite"}}, "spec": {"containers": [{"name": "mysite", "image": "user/mysite"}]}}}});
        let (key, pod) = pod_from_template(&rc).unwrap();
        assert!(key.starts_with("/registry/pods/default/mysitecontroller-"));
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["labels"]["name"], "mysite");
        assert_eq!(pod["status"]["phase"], "Pending");
    }
}
