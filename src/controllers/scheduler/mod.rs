//! The scheduler: binds pods without a node to a node, through Raft, in chunks as it decides.
//!
//! It works from a queue of pending pods' keys, fed by the pods informer: a pod enters when it
//! is created (or when what it asks for changes) without a node. Node usage is kept
//! incrementally (`accounting.rs`) from the informer's changes; where a pod goes is
//! `placement.rs`, over a rotating sample of the nodes. A pass takes up to [`CHUNK`] keys,
//! decides each (a placement is assumed at once, so the next decision sees it), writes the
//! chunk's bindings — each with the pod's resource version as precondition, so a pod is bound
//! at most once — then a `Scheduled` event for each binding that took effect.
//!
//! A pod no node can take gets `PodScheduled=False` and a `FailedScheduling` event (once per
//! distinct message) and waits: it is retried with a back-off (the queue's, up to 10 s), and at
//! once when a node changes or a bound pod goes away.

mod accounting;
mod placement;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use keelson_raft::{Command, OpResult};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::events::{event, Severity};
use super::util::{self, set_condition, stored_bytes};
use super::Context;
use crate::informer::pod::{self as pod_index, PodFacts};
use crate::informer::queue::WorkQueue;
use crate::informer::{Item, NodeFacts};
use accounting::{Accounting, Contribution};
use placement::{choose, unschedulable_message};

/// Pods decided, then bound in one write, per pass.
pub const CHUNK: usize = 1000;

/// What the informers' handlers and the passes share.
struct Shared {
    queue: WorkQueue<String>,
    accounting: Mutex<Accounting>,
    /// Pods that found no node, retried at once on a change that may make room.
    unschedulable: Mutex<HashSet<String>>,
}

impl Shared {
    fn requeue_unschedulable(&self) {
        let keys: Vec<String> = self
            .unschedulable
            .lock()
            .expect("unschedulable lock")
            .drain()
            .collect();
        for k in keys {
            self.queue.add(k);
        }
    }
}

/// Whether two versions of a pending pod ask the same of a node (if not, it is worth another
/// attempt at once).
fn same_asks(a: &PodFacts, b: &PodFacts) -> bool {
    a.requests == b.requests && a.host_ports == b.host_ports && a.node_selector == b.node_selector
}

/// Runs the scheduler until `token` is cancelled.
pub async fn run(ctx: Context, token: CancellationToken) {
    let shared = Arc::new(Shared {
        queue: WorkQueue::default(),
        accounting: Mutex::new(Accounting::default()),
        unschedulable: Mutex::new(HashSet::new()),
    });
    let pods = ctx.informers.pods.clone();
    // Handlers first, then the initial load under the accounting lock: no change is missed,
    // and none is counted against a stale list.
    let _pod_changes = pods.on_change({
        let shared = shared.clone();
        move |old, new| on_pod(&shared, old, new)
    });
    let _node_changes = ctx.informers.nodes.on_change({
        let shared = shared.clone();
        move |_, _| shared.requeue_unschedulable()
    });
    {
        let mut acc = shared.accounting.lock().expect("accounting lock");
        for item in pods.list() {
            acc.set(&item.key, Contribution::stored(&item.facts), false);
            if item.facts.pending() {
                shared.queue.add(item.key.clone());
            }
        }
    }
    let mut start = 0usize;
    loop {
        let keys = tokio::select! {
            _ = token.cancelled() => break,
            keys = shared.queue.take(CHUNK) => match keys { Some(k) => k, None => break },
        };
        let began = std::time::Instant::now();
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = pass(&ctx, &shared, &keys, &mut start) => r,
        };
        util::record_pass(&ctx, "scheduler", began);
        for k in &keys {
            shared.queue.done(k);
        }
        if let Err(e) = result {
            tracing::warn!("scheduler: {e}");
            for k in keys {
                shared.queue.retry(k);
            }
        }
        ctx.metrics.pending_pods.set(
            ctx.informers
                .pods
                .keys_by_index(pod_index::PENDING, pod_index::UNSCHEDULED)
                .len() as i64,
        );
    }
    shared.queue.shut_down();
}

/// A pod changed in the caches: usage follows, and a pod that newly waits is queued.
fn on_pod(shared: &Shared, old: Option<&Arc<Item<PodFacts>>>, new: Option<&Arc<Item<PodFacts>>>) {
    let key = new.or(old).map(|i| i.key.as_str()).expect("a change");
    let before = old.and_then(|i| Contribution::stored(&i.facts));
    let after = new.and_then(|i| Contribution::stored(&i.facts));
    if before != after {
        shared
            .accounting
            .lock()
            .expect("accounting lock")
            .set(key, after.clone(), false);
        if before.is_some() && after.is_none() {
            // Room was freed.
            shared.requeue_unschedulable();
        }
    }
    if let Some(new) = new.filter(|i| i.facts.pending()) {
        let again = old.is_none_or(|o| !o.facts.pending() || !same_asks(&o.facts, &new.facts));
        if again {
            shared.queue.add(new.key.clone());
        }
    }
}

/// Decides and binds the pods under `keys`.
async fn pass(
    ctx: &Context,
    shared: &Shared,
    keys: &[String],
    start: &mut usize,
) -> Result<(), String> {
    // The cache's items, shared: a pass copies no node.
    let items = ctx.informers.nodes.list();
    let nodes: Vec<&NodeFacts> = items.iter().map(|n| &n.facts).collect();
    let mut binds = Vec::new();
    let mut bound = Vec::new();
    let mut unschedulable = Vec::new();
    {
        let mut acc = shared.accounting.lock().expect("accounting lock");
        for key in keys {
            let Some(item) = ctx.informers.pods.get(key).filter(|i| i.facts.pending()) else {
                continue;
            };
            match choose(&nodes, |n| acc.usage(n), start, &item.facts) {
                Ok(node) => {
                    let name = node.name.clone();
                    acc.set(key, Some(Contribution::of(&item.facts, &name)), true);
                    bound.push((item, name));
                }
                Err(reasons) => {
                    unschedulable.push((item, unschedulable_message(nodes.len(), &reasons)))
                }
            }
        }
    }
    let mut bound_events = Vec::new();
    for (item, name) in &bound {
        let mut pod = item.object()?;
        pod["spec"]["nodeName"] = json!(name);
        set_condition(&mut pod, "PodScheduled", "True", "", "");
        bound_events.push(event(
            &pod,
            Severity::Normal,
            "Scheduled",
            &format!(
                "Successfully assigned {}/{} to {name}",
                item.facts.namespace, item.facts.name
            ),
            "default-scheduler",
        ));
        binds.push(Command::Update {
            key: item.key.clone(),
            value: stored_bytes(pod),
            precondition: Some(item.rv()),
        });
    }
    if !binds.is_empty() {
        let written = util::write(ctx, binds).await;
        let results = match written {
            Ok(r) => r,
            Err(e) => {
                let mut acc = shared.accounting.lock().expect("accounting lock");
                for (item, _) in &bound {
                    acc.forget_assumed(&item.key);
                }
                return Err(e);
            }
        };
        let ok = results.iter().filter(|r| r.is_success()).count();
        {
            let mut acc = shared.accounting.lock().expect("accounting lock");
            for ((item, _), r) in bound.iter().zip(&results) {
                if r.is_success() {
                    shared.queue.forget(&item.key);
                } else {
                    acc.forget_assumed(&item.key);
                }
            }
        }
        let attempts = &ctx.metrics.scheduling_attempts;
        attempts.with_label_values(&["scheduled"]).inc_by(ok as u64);
        attempts
            .with_label_values(&["conflict"])
            .inc_by((results.len() - ok) as u64);
        // Events only for bindings that took effect.
        let events: Vec<Command> = results
            .iter()
            .zip(bound_events)
            .filter(|(r, _)| r.is_success())
            .filter_map(|(_, e)| e)
            .collect();
        if !events.is_empty() {
            util::write(ctx, events).await?;
        }
    }
    report_unschedulable(ctx, shared, unschedulable).await
}

/// Marks pods no node could take (once per distinct message) and queues them for a retry.
async fn report_unschedulable(
    ctx: &Context,
    shared: &Shared,
    pods: Vec<(Arc<Item<PodFacts>>, String)>,
) -> Result<(), String> {
    let mut updates = Vec::new();
    for (item, message) in &pods {
        ctx.metrics
            .scheduling_attempts
            .with_label_values(&["unschedulable"])
            .inc();
        if item.facts.unschedulable.as_deref() == Some(message.as_str()) {
            continue;
        }
        let mut pod: Value = item.object()?;
        set_condition(&mut pod, "PodScheduled", "False", "Unschedulable", message);
        updates.push(Command::Update {
            key: item.key.clone(),
            value: stored_bytes(pod.clone()),
            precondition: Some(item.rv()),
        });
        if let Some(e) = event(
            &pod,
            Severity::Warning,
            "FailedScheduling",
            message,
            "default-scheduler",
        ) {
            updates.push(e);
        }
    }
    {
        let mut waiting = shared.unschedulable.lock().expect("unschedulable lock");
        for (item, _) in &pods {
            waiting.insert(item.key.clone());
        }
    }
    for (item, _) in pods {
        shared.queue.retry(item.key.clone());
    }
    if !updates.is_empty() {
        let results = util::write(ctx, updates).await?;
        let lost = results
            .iter()
            .filter(|r| matches!(r, OpResult::Conflict { .. }))
            .count();
        if lost > 0 {
            tracing::debug!(lost, "scheduler: pods changed while being reported");
        }
    }
    Ok(())
}
