//! Writes of core/v1 that kubectl sends: create (`POST`) and every kind of `PATCH`, with
//! `fieldValidation` and, for server-side apply, `fieldManager` and `force`.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::fieldvalidation::{self, Directive, Warnings};
use super::patch::{self, PatchKind};
use super::status::parse_json;
use super::target::{content_type, truthy, Params, Target};
use super::{apply, ApiError, ApiState};
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, ResourceInfo, Subresource};

/// `POST` to a collection.
pub async fn create(
    s: &ApiState,
    t: &Target,
    p: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ns = t.namespace.as_deref();
    if t.info.namespaced && ns.is_none() {
        return Err(ApiError::method_not_allowed(format!(
            "create {} in a namespace: POST {}/namespaces/NS/{}",
            t.info.plural,
            t.info.base_path(),
            t.info.plural
        )));
    }
    let mut obj = parse_json(body)?;
    let directive = Directive::parse(p.field_validation.as_deref())?;
    let warnings = fieldvalidation::check(t.info, &mut obj, directive)?;
    strategy::prepare_create(t.info, &mut obj, ns, Names::Dns1123, &t.info.api_version())?;
    s.admit(t.info, &obj)?;
    let created = s.registry().create(t.info, obj).await?;
    Ok((StatusCode::CREATED, warnings.headers(), Json(created)).into_response())
}

/// `PATCH` of an object or its status.
pub async fn patch(
    s: &ApiState,
    t: &Target,
    name: &str,
    sub: Subresource,
    p: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kind = PatchKind::from_content_type(content_type(headers))?;
    let directive = Directive::parse(p.field_validation.as_deref())?;
    let patch_body = parse_body(kind, body)?;
    if kind == PatchKind::Apply {
        return server_side_apply(s, t, name, sub, p, directive, patch_body).await;
    }
    let warnings = std::sync::Mutex::new(Warnings::default());
    let patched = patch_object(s, t.info, t.namespace.as_deref(), name, sub, |obj| {
        patch::apply(
            kind,
            t.info.kind,
            registry::resource(t.info).patch_strategies(),
            obj,
            &patch_body,
        )?;
        let w = fieldvalidation::check(t.info, obj, directive)?;
        *warnings.lock().expect("warnings") = w;
        Ok(())
    })
    .await?;
    let w = warnings.into_inner().expect("warnings");
    Ok((w.headers(), Json(patched)).into_response())
}

/// The patch document: JSON; an apply configuration is YAML (kubectl sends YAML's JSON
/// subset), whose syntax errors and non-JSON shapes (a map key that is not a string) are 400.
fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    if kind != PatchKind::Apply {
        return parse_json(body);
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(_) => serde_norway::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the apply configuration is not valid YAML: {e}"))
        }),
    }
}

/// Server-side apply: creates the object when absent, else merges with field ownership.
async fn server_side_apply(
    s: &ApiState,
    t: &Target,
    name: &str,
    sub: Subresource,
    p: &Params,
    directive: Directive,
    mut applied: Value,
) -> Result<Response, ApiError> {
    let manager = match p.field_manager.as_deref() {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ))
        }
    };
    let force = truthy(&p.force);
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "an apply configuration must be an object",
        ));
    }
    if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str) {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let warnings = fieldvalidation::check(t.info, &mut applied, directive)?;
    let ns = t.namespace.as_deref();
    match s.registry().get(t.info, ns, name, true).await {
        Err(e) if e.code == StatusCode::NOT_FOUND && sub == Subresource::Main => {
            let mut obj = apply::create(
                registry::resource(t.info).patch_strategies(),
                &applied,
                &manager,
            );
            obj["metadata"]["name"] = Value::String(name.to_string());
            strategy::prepare_create(t.info, &mut obj, ns, Names::Dns1123, &t.info.api_version())?;
            s.admit(t.info, &obj)?;
            let created = s.registry().create(t.info, obj).await?;
            Ok((StatusCode::CREATED, warnings.headers(), Json(created)).into_response())
        }
        Err(e) => Err(e),
        Ok(_) => {
            let patched = patch_object(s, t.info, ns, name, sub, |obj| {
                apply::merge(t.info, obj, &applied, &manager, force)
            })
            .await?;
            Ok((warnings.headers(), Json(patched)).into_response())
        }
    }
}

/// Replaces an object: the body's `metadata.resourceVersion`, when set, is the precondition.
#[allow(clippy::too_many_arguments)]
pub async fn update_object(
    s: &ApiState,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    sub: Subresource,
    api_version: &str,
) -> Result<Value, ApiError> {
    let precondition = match registry::meta_str(&obj, "resourceVersion") {
        Some("") | None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid metadata.resourceVersion {v:?}"))
        })?),
    };
    let old = s.registry().get(info, ns, name, true).await?;
    let current: u64 = registry::meta_str(&old, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    strategy::prepare_update(info, &mut obj, &old, sub, api_version)?;
    // The write is conditional on what we read, so a concurrent change is a conflict rather
    // than lost; the caller's own version, if any, must be that same one.
    if precondition.is_some_and(|p| p != current) {
        return Err(registry::conflict(info, name));
    }
    s.admit(info, &obj)?;
    s.registry().update(info, obj, Some(current)).await
}

/// Read-modify-write with retries on conflict: `change` edits the current object.
pub async fn patch_object(
    s: &ApiState,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Subresource,
    change: impl Fn(&mut Value) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let mut attempts = 0;
    loop {
        let old = s.registry().get(info, ns, name, true).await?;
        let current: u64 = registry::meta_str(&old, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Without its version: only a version the change itself names is a precondition.
        let mut obj = registry::without_rv(old.clone());
        change(&mut obj)?;
        // A patch that names a resourceVersion makes it a precondition.
        let asked = registry::meta_str(&obj, "resourceVersion").and_then(|v| v.parse::<u64>().ok());
        if asked.is_some_and(|a| a != current) {
            return Err(registry::conflict(info, name));
        }
        strategy::prepare_update(info, &mut obj, &old, sub, &info.api_version())?;
        s.admit(info, &obj)?;
        match s.registry().update(info, obj, Some(current)).await {
            Err(e) if e.code == StatusCode::CONFLICT && attempts < 5 && asked.is_none() => {
                attempts += 1
            }
            other => return other,
        }
    }
}
