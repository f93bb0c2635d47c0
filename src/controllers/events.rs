//! Events for what users need to see (`kubectl describe`): Scheduled, FailedScheduling,
//! SuccessfulCreate, SuccessfulDelete, NodeNotReady, NodeReady; and their garbage collection
//! after `--event-ttl-secs`.

use std::borrow::Cow;

use bytes::Bytes;
use keelson_raft::Command;
use serde_json::{json, Value};

use super::util::s;
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

/// Deletes the events last seen more than the TTL ago, in batches. Reads each stored event's
/// times only: decoding every event whole each resync period cost the leader more memory than
/// the events themselves (a `Value` weighs several times its JSON).
pub async fn collect_garbage(ctx: Context) -> Result<(), String> {
    let cutoff = jiff::Timestamp::now()
        .checked_sub(
            jiff::SignedDuration::try_from(ctx.config.event_ttl).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    let info = lookup("events").expect("events");
    let (records, _) = ctx.node.list(&registry::prefix(info, None));
    let expired: Vec<Command> = records
        .into_iter()
        .filter(|(_, r)| last_seen(&r.value).is_some_and(|t| t < cutoff))
        .map(|(key, r)| Command::Delete {
            key,
            precondition: Some(r.mod_rv),
        })
        .collect();
    super::util::write(&ctx, expired).await?;
    Ok(())
}

/// The times of a stored event, and nothing else of it.
#[derive(serde::Deserialize)]
struct Times<'a> {
    #[serde(rename = "lastTimestamp", borrow, default)]
    last: Option<Cow<'a, str>>,
    #[serde(rename = "eventTime", borrow, default)]
    event_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<Created<'a>>,
}

#[derive(serde::Deserialize)]
struct Created<'a> {
    #[serde(rename = "creationTimestamp", borrow, default)]
    at: Option<Cow<'a, str>>,
}

/// When a stored event was last seen: its `lastTimestamp`, else its `eventTime`, else its
/// creation.
fn last_seen(stored: &[u8]) -> Option<jiff::Timestamp> {
    let t: Times = serde_json::from_slice(stored).ok()?;
    [t.last, t.event_time, t.metadata.and_then(|m| m.at)]
        .into_iter()
        .flatten()
        .find_map(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_last_sight_is_read_from_its_times_alone() {
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        let both = br#"{"metadata":{"name":"e","creationTimestamp":"2026-01-01T00:00:00Z"},"lastTimestamp":"2026-01-02T00:00:00Z","message":"x"}"#;
        assert_eq!(last_seen(both), at("2026-01-02T00:00:00Z"));
        let series = br#"{"metadata":{"creationTimestamp":"2026-01-01T00:00:00Z"},"lastTimestamp":null,"eventTime":"2026-01-03T00:00:00.000000Z"}"#;
        assert_eq!(last_seen(series), at("2026-01-03T00:00:00Z"));
        let created = br#"{"metadata":{"creationTimestamp":"2026-01-01T00:00:00Z"}}"#;
        assert_eq!(last_seen(created), at("2026-01-01T00:00:00Z"));
        assert_eq!(last_seen(br#"{"metadata":{}}"#), None);
        assert_eq!(last_seen(b"not json"), None);
    }
}
