//! Events for what users need to see (`kubectl describe`): Scheduled, FailedScheduling,
//! SuccessfulCreate, SuccessfulDelete, NodeNotReady, NodeReady; and their garbage collection
//! after `--event-ttl-secs`.

use bytes::Bytes;
use keelson_raft::Command;
use serde_json::{json, Value};

use super::util::{list, rv, s, store_key};
use super::Context;
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, lookup};

/// Normal or Warning.
#[derive(Debug, Clone, Copy)]
pub enum Severity {
    Normal,
    Warning,
}

/// The command creating an Event about `involved` (any stored object with `kind`).
pub fn event(
    involved: &Value,
    severity: Severity,
    reason: &str,
    message: &str,
    component: &str,
) -> Option<Command> {
    let info = lookup("events")?;
    let name = s(involved, "/metadata/name");
    let namespace = match s(involved, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    let now = crate::registry::object::now();
    let mut ev = json!({
        "metadata": {"name": format!("{name}.{:016x}", rand::random::<u64>()).to_lowercase()},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": s(involved, "/kind"),
            "name": name,
            "namespace": s(involved, "/metadata/namespace"),
            "uid": s(involved, "/metadata/uid"),
            "resourceVersion": s(involved, "/metadata/resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": match severity { Severity::Normal => "Normal", Severity::Warning => "Warning" },
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    // Events about objects with names a DNS-1123 check would refuse (the seed's
    // `mysiteController`) are still events: names are checked leniently.
    strategy::prepare_create(info, &mut ev, Some(namespace), Names::Lenient, "v1").ok()?;
    let key = registry::key(info, Some(namespace), s(&ev, "/metadata/name"));
    Some(Command::Create {
        key,
        value: Bytes::from(serde_json::to_vec(&ev).ok()?),
    })
}

/// Deletes the events last seen more than the TTL ago, in batches.
pub async fn collect_garbage(ctx: Context) -> Result<(), String> {
    let cutoff = jiff::Timestamp::now()
        .checked_sub(
            jiff::SignedDuration::try_from(ctx.config.event_ttl).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    let expired: Vec<Command> = list(&ctx, "events")
        .iter()
        .filter(|e| {
            [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| s(e, p).parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t < cutoff)
        })
        .map(|e| Command::Delete {
            key: store_key("events", e),
            precondition: Some(rv(e)),
        })
        .collect();
    super::util::write(&ctx, expired).await?;
    Ok(())
}
