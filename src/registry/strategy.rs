//! The strategy every kind shares: what a create sets and an update may change, and the checks
//! every object passes — the shape of Kubernetes' `pkg/registry/rest` create and update
//! strategies over the JSON of core/v1 objects. Each kind's own defaults and checks are in its
//! file (`pod.rs`, ...), reached through [`resource`].
//!
//! Every object is also decoded into k8s-openapi's typed struct, so a body whose fields have
//! the wrong JSON types is refused before anything else.

use serde_json::{json, Value};

use super::info::{ResourceInfo, Subresource};
use super::kinds::resource;
use super::object::{meta_str, new_uid, now, obj_mut, random_suffix};
use super::status::ApiError;
use super::validation::{
    invalid, invalid_error, validate_metadata_size, validate_name, validate_string_map, Names,
};

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
    o.insert("apiVersion".into(), json!(info.api_version()));
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
    if let Some(status) = resource(info).initial_status() {
        obj.as_object_mut()
            .expect("object")
            .insert("status".into(), status);
    }
    resource(info).apply_defaults(obj);
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
    let old_name = meta_str(old, "name").unwrap_or_default();
    if let Some(n) = meta_str(new, "name") {
        if n != old_name {
            return Err(invalid_error(
                info,
                old_name,
                vec![invalid("metadata.name", n, "field is immutable")],
            ));
        }
    }
    let o = new.as_object_mut().expect("checked");
    o.insert("apiVersion".into(), json!(info.api_version()));
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
    resource(info).carry_over(old, new);
    resource(info).apply_defaults(new);
    // The name is immutable: it was checked when the object was created (through whichever
    // version), so an update through core/v1 of the seed's `mysiteController` is fine.
    validate(info, new, Names::Lenient)?;
    let mut causes = Vec::new();
    resource(info).check_update(old, new, &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_error(info, old_name, causes))
    }
}

/// Validates `obj` as `info`'s kind.
fn validate(info: &ResourceInfo, obj: &Value, names: Names) -> Result<(), ApiError> {
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    let mut causes = Vec::new();
    validate_name(&name, names, resource(info).name_rule(), &mut causes);
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
    resource(info).check(obj, &mut causes)?;
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_error(info, &name, causes))
    }
}
