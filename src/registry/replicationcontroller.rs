//! Replication controllers: core/v1 `ReplicationController`, which keeps `spec.replicas` pods
//! of its template running (controllers/replication.rs); it has a scale subresource.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use keelson_model::smp::{self, Strategies};
use keelson_model::v1beta1 as convert;
use serde_json::{json, Map, Value};

use super::info::ResourceInfo;
use super::object::obj_mut;
use super::podspec::{default_pod_spec, validate_pod_spec};
use super::printing::{age, arr, col, format_labels, s, Column, AGE, NAME};
use super::resource::Kind;
use super::validation::{invalid, required, Cause};

/// Replication controllers.
pub struct ReplicationController;

impl Kind for ReplicationController {
    type Object = core::ReplicationController;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        kind: "ReplicationController",
        short_names: &["rc"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        has_scale: true,
        has_log: false,
        graceful_delete: false,
    };

    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Desired",
            "integer",
            0,
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            0,
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            0,
            "The number of ready replicas for this replication controller.",
        ),
        AGE,
        col(
            "Containers",
            "string",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            1,
            "Images referenced by each container in the template.",
        ),
        col(
            "Selector",
            "string",
            1,
            "Selector is a label query over pods that should match the Replicas count.",
        ),
    ];

    const PATCH_STRATEGIES: Strategies = smp::core_v1::REPLICATION_CONTROLLER;

    const V1BETA1_NAMES: Option<(&'static str, &'static str)> =
        Some(("replicationControllers", "ReplicationController"));

    fn initial_status(&self) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn apply_defaults(&self, obj: &mut Value) {
        let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
        let spec = obj_mut(obj, "spec");
        spec.entry("replicas").or_insert(json!(1));
        if spec
            .get("selector")
            .is_none_or(|s| s.as_object().is_none_or(Map::is_empty))
        {
            if let Some(labels) = template_labels {
                spec.insert("selector".into(), labels);
            }
        }
        if let Some(pod_spec) = spec
            .get_mut("template")
            .and_then(|t| t.get_mut("spec"))
            .and_then(Value::as_object_mut)
        {
            default_pod_spec(pod_spec);
        }
    }

    fn check(&self, rc: &core::ReplicationController, _obj: &Value, causes: &mut Vec<Cause>) {
        validate_controller(rc, causes);
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let name = json!(s(obj, "/metadata/name"));
        let containers = arr(obj, "/spec/template/spec/containers");
        let join = |field: &str| {
            containers
                .iter()
                .map(|c| s(c, field).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let int = |p: &str| json!(obj.pointer(p).and_then(Value::as_i64).unwrap_or(0));
        vec![
            name,
            int("/spec/replicas"),
            int("/status/replicas"),
            int("/status/readyReplicas"),
            json!(age(obj, now)),
            json!(join("/name")),
            json!(join("/image")),
            json!(format_labels(obj.pointer("/spec/selector"))),
        ]
    }

    fn to_v1beta1(&self, rc: &core::ReplicationController) -> Option<Value> {
        Some(convert::controller_to_v1beta1(rc))
    }

    fn from_v1beta1(
        &self,
    ) -> Option<fn(&Value) -> Result<core::ReplicationController, convert::ConvertError>> {
        Some(convert::controller_from_v1beta1)
    }
}

fn validate_controller(rc: &core::ReplicationController, causes: &mut Vec<Cause>) {
    let Some(spec) = &rc.spec else {
        causes.push(required("spec"));
        return;
    };
    if let Some(r) = spec.replicas {
        if r < 0 {
            causes.push(invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    let selector: BTreeMap<String, String> = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        causes.push(required("spec.selector"));
    }
    let Some(template) = &spec.template else {
        causes.push(required("spec.template"));
        return;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !selector.is_empty() && !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        causes.push(invalid(
            "spec.template.metadata.labels",
            format!("map[{}]", shown.join(" ")),
            "`selector` does not match template `labels`",
        ));
    }
    match &template.spec {
        Some(pod) => {
            validate_pod_spec(pod, "spec.template.spec", causes);
            if pod.restart_policy.as_deref().is_some_and(|p| p != "Always") {
                causes.push(invalid(
                    "spec.template.spec.restartPolicy",
                    pod.restart_policy.as_deref().unwrap_or(""),
                    "supported values: \"Always\"",
                ));
            }
        }
        None => causes.push(required("spec.template.spec")),
    }
}
