//! What the loops share: the watch-driven run loop and accessors over stored objects.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::registry::{self, lookup};

/// Runs `sync` whenever an object of a `watched` resource changes (coalescing bursts), and at
/// least every resync period, until `token` is cancelled. A failed pass is retried after a
/// short pause.
pub async fn run_loop<F, Fut>(
    name: &'static str,
    watched: &'static [&'static str],
    ctx: Context,
    token: CancellationToken,
    sync: F,
) where
    F: Fn(Context) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // A loop that could not watch would stop for the whole tenure: it retries instead.
    let mut sub = loop {
        match ctx.node.watch(ctx.node.store.applied_rv()) {
            Ok(s) => break s,
            Err(e) => tracing::warn!("{name}: cannot watch the store yet: {e}"),
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    loop {
        let start = Instant::now();
        // A pass is dropped when the tenure ends: its writes are fenced by the term anyway.
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = sync(ctx.clone()) => result,
        };
        record_pass(&ctx, name, start);
        let pause = match result {
            Ok(()) => ctx.config.resync,
            Err(e) => {
                if !token.is_cancelled() {
                    tracing::warn!("{name}: {e}");
                }
                Duration::from_millis(200)
            }
        };
        let wake = tokio::time::sleep(pause);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                next = sub.next() => match next {
                    Ok(e) if !relevant(watched, &e.key) => continue,
                    Ok(_) => {}
                    Err(_) => {
                        // Lagged or reset: resubscribe from now and resync.
                        match ctx.node.watch(ctx.node.store.applied_rv()) {
                            Ok(s) => sub = s,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                },
                _ = &mut wake => {}
            }
            break;
        }
        // Coalesce a burst of changes into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts a pass of loop `name` that began at `start` in the loops' metrics.
pub fn record_pass(ctx: &Context, name: &str, start: Instant) {
    ctx.metrics.syncs.with_label_values(&[name]).inc();
    ctx.metrics
        .sync_seconds
        .with_label_values(&[name])
        .observe(start.elapsed().as_secs_f64());
}

/// True when `key` is an object of one of the `watched` resources.
fn relevant(watched: &[&str], key: &str) -> bool {
    key.strip_prefix("/registry/")
        .and_then(|k| k.split('/').next())
        .is_some_and(|plural| watched.contains(&plural))
}

/// Writes `commands` in the loops' tenure ([`keelson_raft::RaftNode::write_batch_in_term`]:
/// fenced by its term, awaited without a deadline) and waits until the informers' caches
/// reflect them, so the next pass reads its own writes.
pub async fn write(
    ctx: &Context,
    commands: Vec<keelson_raft::Command>,
) -> Result<Vec<keelson_raft::OpResult>, String> {
    let results = ctx.node.write_batch_in_term(ctx.term, commands).await;
    // On an error too: the entries before it were applied.
    let rv = ctx.node.store.applied_rv();
    if !ctx.informers.wait_synced(rv, Duration::from_secs(10)).await {
        return Err("the informers did not catch up with this pass's writes in 10 s".into());
    }
    results.map_err(|e| e.to_string())
}

/// A string field at a JSON pointer.
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The resource version of a stored object.
pub fn rv(v: &Value) -> u64 {
    s(v, "/metadata/resourceVersion").parse().unwrap_or(0)
}

/// True when the pod is being deleted (its agent stops it, then removes it).
pub fn pod_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// The command that deletes `pod` as the API would ([`crate::registry::pod::pod_deletion`]): at once, or by
/// marking it terminating for its agent (when its node is Ready); `None` when it is
/// terminating already.
pub fn delete_pod_command(pod: &Value, node_ready: bool) -> Option<keelson_raft::Command> {
    use crate::registry::pod::{pod_deletion, PodDeletion};
    match pod_deletion(pod, None, node_ready) {
        PodDeletion::Now => Some(keelson_raft::Command::Delete {
            key: store_key("pods", pod),
            precondition: Some(rv(pod)),
        }),
        PodDeletion::Graceful(marked) => Some(keelson_raft::Command::Update {
            key: store_key("pods", pod),
            value: bytes::Bytes::from(
                serde_json::to_vec(&crate::registry::without_rv(marked)).expect("json"),
            ),
            precondition: Some(rv(pod)),
        }),
        PodDeletion::Terminating => None,
    }
}

/// True when the pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    crate::registry::condition_status(pod, "Ready") == Some("True")
}

/// The storage key of a stored object of `plural`.
pub fn store_key(plural: &str, obj: &Value) -> String {
    let info = lookup(plural).expect("served resource");
    let ns = s(obj, "/metadata/namespace");
    registry::key(
        info,
        (!ns.is_empty()).then_some(ns),
        s(obj, "/metadata/name"),
    )
}

/// The bytes to store for an object read from the store (without its resource version).
pub fn stored_bytes(obj: Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(&registry::without_rv(obj)).expect("json"))
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
