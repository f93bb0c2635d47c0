//! Events: core/v1 `Event`, what happened to an object (`describe` shows them); the event
//! collector deletes them after their time to live.

use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{col, s, since, Column};
use super::resource::Kind;
use super::validation::{required, Cause};

/// Events.
pub struct Event;

impl Kind for Event {
    type Object = core::Event;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        has_status: false,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };

    const COLUMNS: &'static [Column] = &[
        col("Last Seen", "string", 0, "Time since the most recent occurrence of this event."),
        col("Type", "string", 0, "Type of this event (Normal, Warning)."),
        col("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        col("Object", "string", 0, "The object that this event is about."),
        col("Subobject", "string", 1, "The field of the object that this event is about."),
        col("Source", "string", 1, "The component reporting this event."),
        col("Message", "string", 0, "A human-readable description of the status of this operation."),
        col("First Seen", "string", 1, "The time at which the event was first recorded."),
        col("Count", "string", 1, "The number of times this event has occurred."),
        col("Name", "string", 1, "Name must be unique within a namespace."),
    ];

    const SELECTABLE_FIELDS: &'static [&'static str] =
        &["involvedObject.", "reason", "type", "source"];

    fn check(&self, _event: &core::Event, obj: &Value, causes: &mut Vec<Cause>) {
        // Required by the schema (k8s-openapi's struct would default it to empty).
        if !obj.get("involvedObject").is_some_and(Value::is_object) {
            causes.push(required("involvedObject"));
        }
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        event_cells(obj, now)
    }
}

fn event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let first = match s(obj, "/firstTimestamp") {
        "" => s(obj, "/eventTime"),
        t => t,
    };
    let last = match s(obj, "/lastTimestamp") {
        "" => first,
        t => t,
    };
    let object = format!(
        "{}/{}",
        s(obj, "/involvedObject/kind").to_lowercase(),
        s(obj, "/involvedObject/name")
    );
    let source = match (s(obj, "/source/component"), s(obj, "/source/host")) {
        ("", _) => s(obj, "/reportingComponent").to_string(),
        (c, "") => c.to_string(),
        (c, h) => format!("{c}, {h}"),
    };
    let count = obj.get("count").and_then(Value::as_i64).unwrap_or(1);
    vec![
        json!(since(last, now)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(object),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(since(first, now)),
        json!(count.to_string()),
        name,
    ]
}
