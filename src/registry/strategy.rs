//! One strategy per resource: defaults, validation, and what an update may change — the shape
//! of Kubernetes' `pkg/registry/*/strategy.go`, over the JSON of core/v1 objects.
//!
//! Every object is also decoded into k8s-openapi's typed struct, so a body whose fields have
//! the wrong JSON types is refused before anything else.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Map, Value};

use super::{ResourceInfo, Subresource};
use crate::api::ApiError;

/// Quantities live in the model crate; re-exported where validation and the scheduler found them.
pub use keelson_model::quantity::{is_quantity, parse_quantity};

/// Annotation of a Service whose endpoints use the first port of the pod's first container
/// (the seed's v1beta1 service without `containerPort`).
pub const FIRST_CONTAINER_PORT: &str = keelson_model::v1beta1::FIRST_CONTAINER_PORT_ANNOTATION;

/// One validation failure, as a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

pub(super) fn required(field: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

pub(super) fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: \"{value}\": {why}"),
    }
}

pub(super) fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: \"{value}\""),
    }
}

pub(super) fn forbidden(field: impl Into<String>, why: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {why}"),
    }
}

/// The `Invalid` (422) error for `causes`, worded as Kubernetes does.
pub fn invalid_error(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let joined = if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    };
    let message = format!("{} \"{}\" is invalid: {}", info.kind, name, joined);
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
        .with_details(name, info.kind)
        .with_causes(causes)
}

/// How strictly names are checked: core/v1 follows Kubernetes (DNS-1123); v1beta1 accepts the
/// seed's mixed-case ids such as `mysiteController`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Dns1123,
    Lenient,
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_lenient_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A label or annotation key `[prefix/]name`, or a label value.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

fn validate_name(name: &str, names: Names, label_only: bool, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(required("metadata.name"));
        return;
    }
    let ok = match names {
        Names::Lenient => is_lenient_name(name),
        Names::Dns1123 if label_only => is_dns1123_label(name),
        Names::Dns1123 => is_dns1123_subdomain(name),
    };
    if !ok {
        let why = match names {
            Names::Lenient => "must consist of alphanumeric characters, '-', '_' or '.', and start with an alphanumeric character",
            Names::Dns1123 => "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        };
        causes.push(invalid("metadata.name", name, why));
    }
}

fn validate_string_map(
    map: Option<&Value>,
    field: &str,
    values_are_labels: bool,
    causes: &mut Vec<Cause>,
) {
    let Some(map) = map.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        if !is_qualified_name(k) {
            causes.push(invalid(format!("{field}"), k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (63 characters at most)"));
        }
        if values_are_labels && !v.as_str().is_some_and(is_label_value) {
            causes.push(invalid(format!("{field}"), v.as_str().unwrap_or(&v.to_string()), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (63 characters at most)"));
        }
    }
}

fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// A random RFC 4122 version-4 UID.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// Now, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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

fn obj_mut<'a>(v: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let entry = v
        .as_object_mut()
        .expect("object")
        .entry(field)
        .or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("object")
}

/// Checks the body's own `kind`, `apiVersion` and namespace against the request.
fn check_envelope(
    info: &ResourceInfo,
    obj: &Value,
    ns: Option<&str>,
    api_version: &str,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            info.kind
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != info.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                info.kind
            )));
        }
    }
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str) {
        if v != api_version {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the object ({v}) does not match the API ({api_version})"
            )));
        }
    }
    if let (true, Some(body_ns), Some(ns)) = (
        info.namespaced,
        obj.get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str),
        ns,
    ) {
        if body_ns != ns && !body_ns.is_empty() {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    Ok(())
}

/// Readies a new object for storage: metadata, defaults, validation. `api_version` is the
/// version the client spoke (its `apiVersion`, if any, must match).
pub fn prepare_create(
    info: &ResourceInfo,
    obj: &mut Value,
    ns: Option<&str>,
    names: Names,
    api_version: &str,
) -> Result<(), ApiError> {
    check_envelope(info, obj, ns, api_version)?;
    let o = obj.as_object_mut().expect("checked");
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("kind".into(), json!(info.kind));
    let meta = obj_mut(obj, "metadata");
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        if let Some(g) = meta.get("generateName").and_then(Value::as_str) {
            let name = format!("{g}{}", random_suffix(5));
            meta.insert("name".into(), json!(name));
        }
    }
    if info.namespaced {
        meta.insert("namespace".into(), json!(ns.unwrap_or("default")));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for transient in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(transient);
    }
    // Status is the system's to write: a new object starts from its kind's initial status.
    match info.kind {
        "Pod" => {
            obj.as_object_mut()
                .expect("object")
                .insert("status".into(), json!({"phase": "Pending"}));
        }
        "ReplicationController" => {
            obj.as_object_mut()
                .expect("object")
                .insert("status".into(), json!({"replicas": 0}));
        }
        "Namespace" => {
            obj.as_object_mut()
                .expect("object")
                .insert("status".into(), json!({"phase": "Active"}));
        }
        _ => {}
    }
    apply_defaults(info, obj);
    validate(info, obj, names)
}

/// Readies an update: identity and creation metadata come from `old`; a main-resource write
/// keeps the stored status, a status write keeps the stored spec and metadata.
pub fn prepare_update(
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
    sub: Subresource,
    api_version: &str,
) -> Result<(), ApiError> {
    let ns = old
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    check_envelope(info, new, ns.as_deref(), api_version)?;
    let old_name = super::meta_str(old, "name").unwrap_or_default();
    if let Some(n) = super::meta_str(new, "name") {
        if n != old_name {
            return Err(invalid_error(
                info,
                old_name,
                vec![invalid("metadata.name", n, "field is immutable")],
            ));
        }
    }
    let o = new.as_object_mut().expect("checked");
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("kind".into(), json!(info.kind));
    match sub {
        Subresource::Main => {
            if info.has_status {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            let spec_changed = new.get("spec") != old.get("spec");
            let old_gen = old
                .get("metadata")
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let meta = obj_mut(new, "metadata");
            meta.insert(
                "generation".into(),
                json!(if spec_changed { old_gen + 1 } else { old_gen }),
            );
        }
        Subresource::Status => {
            for field in ["spec", "metadata"] {
                if let Some(v) = old.get(field) {
                    o.insert(field.into(), v.clone());
                }
            }
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = obj_mut(new, "metadata");
    for carried in ["name", "namespace", "uid", "creationTimestamp"] {
        match old_meta.get(carried) {
            Some(v) => meta.insert(carried.into(), v.clone()),
            None => meta.remove(carried),
        };
    }
    meta.remove("resourceVersion");
    apply_defaults(info, new);
    // The name is immutable: it was checked when the object was created (through whichever
    // version), so an update through core/v1 of the seed's `mysiteController` is fine.
    validate(info, new, Names::Lenient)
}

/// Per-kind defaults, as Kubernetes' defaulters set them.
fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match info.kind {
        "Pod" => default_pod_spec(obj_mut(obj, "spec")),
        "ReplicationController" => {
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
        "Service" => {
            let first_port = obj
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    FIRST_CONTAINER_PORT.replace('/', "~1")
                ))
                .is_some();
            let name = super::meta_str(obj, "name").unwrap_or_default().to_string();
            let ns = super::meta_str(obj, "namespace")
                .unwrap_or("default")
                .to_string();
            let spec = obj_mut(obj, "spec");
            spec.entry("type").or_insert(json!("ClusterIP"));
            spec.entry("sessionAffinity").or_insert(json!("None"));
            if spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                spec.insert("clusterIP".into(), json!(cluster_ip_for(&ns, &name)));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert(json!("TCP"));
                    if !first_port && p.get("targetPort").is_none() {
                        if let Some(port) = p.get("port").cloned() {
                            p.insert("targetPort".into(), port);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

/// A stable virtual IP for a service (10.96.0.0/16), derived from its namespace and name.
fn cluster_ip_for(ns: &str, name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ns, name).hash(&mut h);
    let x = h.finish();
    format!("10.96.{}.{}", (x >> 8) & 0xff, (x & 0xff).clamp(1, 254))
}

fn decode_typed<T: serde::de::DeserializeOwned>(
    info: &ResourceInfo,
    obj: &Value,
) -> Result<T, ApiError> {
    serde_json::from_value(obj.clone())
        .map_err(|e| ApiError::bad_request(format!("{} in body: {e}", info.kind)))
}

/// Largest total size of an object's annotations (keys and values), as Kubernetes'
/// `TotalAnnotationSizeLimitB`, and of its whole `metadata` as JSON. `managedFields` is left
/// out of the latter: server-side apply grows it with the object, which
/// [`super::MAX_OBJECT_BYTES`] bounds.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

fn too_long(field: &str, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: field.into(),
        message: format!("Too long: must have at most {max} bytes"),
    }
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).expect("counting never fails");
    c.0
}

fn validate_metadata_size(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return;
    };
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let total: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or_else(|| json_len(v), str::len))
            .sum();
        if total > MAX_METADATA_BYTES {
            causes.push(too_long("metadata.annotations", MAX_METADATA_BYTES));
            return;
        }
    }
    let total: usize = meta
        .iter()
        .filter(|(k, _)| *k != "managedFields")
        .map(|(k, v)| k.len() + json_len(v))
        .sum();
    if total > MAX_METADATA_BYTES {
        causes.push(too_long("metadata", MAX_METADATA_BYTES));
    }
}

/// Validates `obj` as `info`'s kind.
fn validate(info: &ResourceInfo, obj: &Value, names: Names) -> Result<(), ApiError> {
    let name = super::meta_str(obj, "name").unwrap_or_default().to_string();
    let mut causes = Vec::new();
    let label_only = matches!(info.kind, "Service" | "Namespace");
    validate_name(&name, names, label_only, &mut causes);
    validate_string_map(
        obj.pointer("/metadata/labels"),
        "metadata.labels",
        true,
        &mut causes,
    );
    validate_string_map(
        obj.pointer("/metadata/annotations"),
        "metadata.annotations",
        false,
        &mut causes,
    );
    validate_metadata_size(obj, &mut causes);
    match info.kind {
        "Pod" => {
            let pod: core::Pod = decode_typed(info, obj)?;
            match &pod.spec {
                Some(spec) => super::podspec::validate_pod_spec(spec, "spec", &mut causes),
                None => causes.push(required("spec")),
            }
        }
        "ReplicationController" => {
            let rc: core::ReplicationController = decode_typed(info, obj)?;
            validate_controller(&rc, &mut causes);
        }
        "Service" => {
            let svc: core::Service = decode_typed(info, obj)?;
            validate_service(&svc, &mut causes);
        }
        "Endpoints" => {
            decode_typed::<core::Endpoints>(info, obj)?;
        }
        "Event" => {
            decode_typed::<core::Event>(info, obj)?;
            // Required by the schema (k8s-openapi's struct would default it to empty).
            if !obj.get("involvedObject").is_some_and(Value::is_object) {
                causes.push(required("involvedObject"));
            }
        }
        "Node" => {
            decode_typed::<core::Node>(info, obj)?;
        }
        "Namespace" => {
            decode_typed::<core::Namespace>(info, obj)?;
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_error(info, &name, causes))
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
            super::podspec::validate_pod_spec(pod, "spec.template.spec", causes);
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

fn validate_service(svc: &core::Service, causes: &mut Vec<Cause>) {
    let Some(spec) = &svc.spec else {
        causes.push(required("spec"));
        return;
    };
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() {
        causes.push(required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            causes.push(invalid(
                format!("spec.ports[{i}].port"),
                p.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 {
            match &p.name {
                None => causes.push(required(format!("spec.ports[{i}].name"))),
                Some(n) if !names.insert(n.clone()) => {
                    causes.push(duplicate(format!("spec.ports[{i}].name"), n))
                }
                _ => {}
            }
        }
    }
    if let Some(sel) = &spec.selector {
        let as_value = serde_json::to_value(sel).unwrap_or_default();
        validate_string_map(Some(&as_value), "spec.selector", true, causes);
    }
}

#[cfg(test)]
mod tests {
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

    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(is_dns1123_subdomain("my-site.example"));
        assert!(!is_dns1123_subdomain("mysiteController"));
        assert!(is_lenient_name("mysiteController"));
        assert!(!is_lenient_name("-bad"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }

    #[test]
    fn uid_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
