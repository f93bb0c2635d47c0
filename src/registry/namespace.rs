//! Namespaces: core/v1 `Namespace`, cluster-scoped; `default` always exists.

use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{age, col, s, Column, AGE, NAME};
use super::resource::Kind;
use super::validation::NameRule;

/// Namespaces.
pub struct Namespace;

impl Kind for Namespace {
    type Object = core::Namespace;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        has_status: true,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };

    const NAMES: NameRule = NameRule::Label;

    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", 0, "The status of the namespace"),
        AGE,
    ];

    const SELECTABLE_FIELDS: &'static [&'static str] = &["status.phase"];

    fn initial_status(&self) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/status/phase")),
            json!(age(obj, now)),
        ]
    }
}
