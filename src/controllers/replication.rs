//! The replication manager: exactly `spec.replicas` active pods matching each controller's
//! selector, always.
//!
//! `sync` runs over every controller: pods of the controller that failed (or were failed by
//! node lifecycle) are deleted; missing pods are created from the template, with an owner
//! reference; extra pods are deleted, the least useful first (unscheduled, pending, not ready,
//! then the youngest). Creates and deletes of one pass are one Raft command. Pods whose
//! controller no longer exists are garbage-collected. `status` (replicas, ready, available,
//! observedGeneration) is written only when it changed.

use std::sync::Arc;

use bytes::Bytes;
use keelson_raft::{Command, OpResult};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::events::{event, Severity};
use super::util::{self, delete_pod_command, s};
use super::Context;
use crate::informer::pod::{self as pod_index, PodFacts};
use crate::informer::queue::WorkQueue;
use crate::informer::replicationcontroller::{self as rc_index, RcFacts};
use crate::informer::{Informers, Item};
use crate::registry::selectors::LabelSelector;
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, lookup, Subresource};

/// Pods one pass may create or delete, over every controller (kube-controller-manager's
/// `burstReplicas` is 500 too).
pub const BURST_REPLICAS: usize = 500;

/// How much a pod is worth keeping on scale-down: lower goes first.
fn keep_rank(pod: &PodFacts) -> (u8, std::cmp::Reverse<&str>) {
    let rank = if pod.node_name.is_empty() {
        0
    } else if pod.phase == "Pending" {
        1
    } else if !pod.ready {
        2
    } else {
        3
    };
    // Among equals, the youngest goes first.
    (rank, std::cmp::Reverse(pod.created.as_str()))
}

/// Pods to delete to go from `active` down to `want`.
pub fn choose_victims(
    mut active: Vec<&Arc<Item<PodFacts>>>,
    want: usize,
) -> Vec<&Arc<Item<PodFacts>>> {
    if active.len() <= want {
        return Vec::new();
    }
    active.sort_by(|a, b| keep_rank(&a.facts).cmp(&keep_rank(&b.facts)));
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

/// What the replication manager works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    /// A controller, by storage key.
    Controller(String),
    /// The pods of a controller that is gone, by its uid: garbage.
    Orphans(String),
}

/// Runs the replication manager until `token` is cancelled: a queue of controllers (and of
/// the uids of deleted ones), fed by the informers.
pub async fn run(ctx: Context, token: CancellationToken) {
    let queue = Arc::new(WorkQueue::<Work>::default());
    let informers = ctx.informers.clone();
    let _rc_changes = informers.rcs.on_change({
        let queue = queue.clone();
        move |old, new| match (old, new) {
            (_, Some(rc)) => queue.add(Work::Controller(rc.key.clone())),
            (Some(rc), None) => queue.add(Work::Orphans(rc.facts.uid.clone())),
            (None, None) => {}
        }
    });
    let _pod_changes = informers.pods.on_each_side({
        let queue = queue.clone();
        let informers = informers.clone();
        move |pod| enqueue_for_pod(&informers, &queue, &pod.facts)
    });
    for rc in informers.rcs.list() {
        queue.add(Work::Controller(rc.key.clone()));
    }
    for pod in informers.pods.list() {
        enqueue_for_pod(&informers, &queue, &pod.facts);
    }
    loop {
        let work = tokio::select! {
            _ = token.cancelled() => break,
            work = queue.take(64) => match work { Some(w) => w, None => break },
        };
        let began = std::time::Instant::now();
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = pass(&ctx, &work) => r,
        };
        util::record_pass(&ctx, "replication", began);
        for w in &work {
            queue.done(w);
        }
        match result {
            Ok(unfinished) => {
                for w in &work {
                    queue.forget(w);
                }
                for w in unfinished {
                    queue.add(w);
                }
            }
            Err(e) => {
                tracing::warn!("replication: {e}");
                for w in work {
                    queue.retry(w);
                }
            }
        }
    }
    queue.shut_down();
}

/// Queues what a pod's change concerns: its controller (or, that gone, its garbage), or for
/// an orphan the controllers of its namespace whose selector matches it.
fn enqueue_for_pod(informers: &Informers, queue: &WorkQueue<Work>, pod: &PodFacts) {
    match &pod.controller {
        Some(c) if c.kind == "ReplicationController" => {
            let rcs = informers.rcs.keys_by_index(rc_index::BY_UID, &c.uid);
            if rcs.is_empty() {
                queue.add(Work::Orphans(c.uid.clone()));
            }
            for key in rcs {
                queue.add(Work::Controller(key));
            }
        }
        Some(_) => {}
        None => {
            for rc in informers
                .rcs
                .by_index(rc_index::BY_NAMESPACE, &pod.namespace)
            {
                if LabelSelector::from_map(&rc.facts.selector).matches(&pod.labels) {
                    queue.add(Work::Controller(rc.key.clone()));
                }
            }
        }
    }
}

/// What one pass writes, and the work it could not finish within its budget.
#[derive(Default)]
struct Plan {
    commands: Vec<Command>,
    status_updates: Vec<Command>,
    created: u64,
    deleted: u64,
    /// Creations and deletions this pass may still make: the rest follows on the next passes,
    /// so `replicas: 2147483647` is a long job, not one pass building two billion pods.
    budget: usize,
    unfinished: Vec<Work>,
}

/// One pass over `work`: every change it needs, written together.
async fn pass(ctx: &Context, work: &[Work]) -> Result<Vec<Work>, String> {
    let mut plan = Plan {
        budget: BURST_REPLICAS,
        ..Plan::default()
    };
    for w in work {
        match w {
            Work::Controller(key) => plan_controller(ctx, key, &mut plan)?,
            Work::Orphans(uid) => plan_garbage(ctx, uid, &mut plan)?,
        }
    }
    let Plan {
        mut commands,
        status_updates,
        created,
        deleted,
        unfinished,
        ..
    } = plan;
    commands.extend(status_updates);
    if commands.is_empty() {
        return Ok(unfinished);
    }
    let results = util::write(ctx, commands).await?;
    ctx.metrics.pods_created.inc_by(created);
    ctx.metrics.pods_deleted.inc_by(deleted);
    let failed = results
        .iter()
        .filter(|r| !matches!(r, OpResult::Stored { .. } | OpResult::Deleted { .. }))
        .count();
    if failed > 0 {
        // Something moved under us (a concurrent write): the change requeues the controller.
        tracing::debug!(failed, "replication: some operations lost a race");
    }
    Ok(unfinished)
}

/// Whether the node named `name` is Ready.
fn node_ready(informers: &Informers, name: &str) -> bool {
    let info = lookup("nodes").expect("nodes");
    informers
        .nodes
        .get(&registry::key(info, None, name))
        .is_some_and(|n| n.facts.is_ready())
}

/// The command deleting a cached pod (none if it is terminating already).
fn delete(informers: &Informers, pod: &Item<PodFacts>) -> Result<Option<Command>, String> {
    let obj = pod.object()?;
    Ok(delete_pod_command(
        &obj,
        node_ready(informers, &pod.facts.node_name),
    ))
}

/// Plans one controller: exactly `spec.replicas` active pods, and its status.
fn plan_controller(ctx: &Context, key: &str, plan: &mut Plan) -> Result<(), String> {
    let informers = &ctx.informers;
    let Some(rc) = informers.rcs.get(key) else {
        return Ok(());
    };
    let f: &RcFacts = &rc.facts;
    let selector = LabelSelector::from_map(&f.selector);
    // The controller's pods: owned by it, or orphans matching its selector (adopted);
    // terminating pods no longer count, as in Kubernetes.
    let owned = informers.pods.by_index(pod_index::BY_CONTROLLER, &f.uid);
    let orphans = informers.pods.by_index(pod_index::ORPHANS, &f.namespace);
    let mine: Vec<&Arc<Item<PodFacts>>> = owned
        .iter()
        .chain(orphans.iter())
        .filter(|p| p.facts.namespace == f.namespace && selector.matches(&p.facts.labels))
        .filter(|p| !p.facts.terminating)
        .collect();
    let (active, finished): (Vec<&Arc<Item<PodFacts>>>, Vec<&Arc<Item<PodFacts>>>) =
        mine.into_iter().partition(|p| p.facts.active());
    let mut rc_object: Option<Value> = None;
    let mut rc_value = || -> Result<Value, String> {
        if rc_object.is_none() {
            rc_object = Some(rc.object()?);
        }
        Ok(rc_object.clone().expect("decoded"))
    };
    for p in &finished {
        plan.commands.extend(delete(informers, p)?);
        plan.deleted += 1;
    }
    let mut events = Vec::new();
    if active.len() < f.replicas {
        let missing = f.replicas - active.len();
        let n = missing.min(plan.budget);
        plan.budget -= n;
        if n < missing {
            plan.unfinished.push(Work::Controller(key.to_string()));
        }
        let rc_obj = if n > 0 { Some(rc_value()?) } else { None };
        for _ in 0..n {
            let rc_obj = rc_obj.as_ref().expect("decoded");
            let (key, pod) = pod_from_template(rc_obj)?;
            events.push(event(
                rc_obj,
                Severity::Normal,
                "SuccessfulCreate",
                &format!("Created pod: {}", s(&pod, "/metadata/name")),
                "replication-controller",
            ));
            plan.commands.push(Command::Create {
                key,
                value: Bytes::from(serde_json::to_vec(&pod).expect("json")),
            });
            plan.created += 1;
        }
    } else {
        let victims = choose_victims(active.clone(), f.replicas);
        let n = victims.len().min(plan.budget);
        plan.budget -= n;
        if n < victims.len() {
            plan.unfinished.push(Work::Controller(key.to_string()));
        }
        for p in victims.into_iter().take(n) {
            events.push(event(
                &rc_value()?,
                Severity::Normal,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", p.facts.name),
                "replication-controller",
            ));
            plan.commands.extend(delete(informers, p)?);
            plan.deleted += 1;
        }
    }
    plan.commands.extend(events.into_iter().flatten());
    // Status as observed now (the next pass sees the effect of this one's writes).
    let ready = active.iter().filter(|p| p.facts.ready).count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": f.generation,
    });
    if f.status.as_ref() != Some(&status) {
        let current = rc_value()?;
        let mut updated = current.clone();
        updated["status"] = status;
        let info = lookup("replicationcontrollers").expect("rcs");
        if strategy::prepare_update(info, &mut updated, &current, Subresource::Status, "v1").is_ok()
        {
            plan.status_updates.push(Command::Update {
                key: key.to_string(),
                value: Bytes::from(serde_json::to_vec(&updated).expect("json")),
                precondition: Some(rc.rv()),
            });
        }
    }
    Ok(())
}

/// Plans the deletion of the pods of a controller that is gone.
fn plan_garbage(ctx: &Context, uid: &str, plan: &mut Plan) -> Result<(), String> {
    let informers = &ctx.informers;
    if !informers
        .rcs
        .keys_by_index(rc_index::BY_UID, uid)
        .is_empty()
    {
        return Ok(());
    }
    for p in informers.pods.by_index(pod_index::BY_CONTROLLER, uid) {
        let ours = p
            .facts
            .controller
            .as_ref()
            .is_some_and(|c| c.kind == "ReplicationController");
        if ours {
            if let Some(c) = delete(informers, &p)? {
                plan.commands.push(c);
                plan.deleted += 1;
            }
        }
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
        let item = |v: &Value| {
            Arc::new(Item {
                key: String::new(),
                record: keelson_raft::command::Record {
                    value: Bytes::new(),
                    create_rv: 0,
                    mod_rv: 0,
                },
                facts: <PodFacts as crate::informer::Facts>::from_object(v),
            })
        };
        let items: Vec<_> = [&ready, &young_ready, &not_ready, &pending, &unscheduled]
            .into_iter()
            .map(item)
            .collect();
        let all: Vec<_> = items.iter().collect();
        let names = |v: Vec<&Arc<Item<PodFacts>>>| {
            v.iter().map(|p| p.facts.name.clone()).collect::<Vec<_>>()
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
