//! core/v1: namespaced and cluster-wide REST paths over the registry, parsed from one
//! catch-all route so that every resource shares the same verbs.
//!
//! Paths: `/api/v1/[watch/][namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`, and
//! `/api/v1/namespaces/{name}[/status]` for namespaces themselves; the other groups' kinds the
//! same under `/apis/{group}/{version}/`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

use super::auth::User;
use super::extract::{ApiPath, ApiQuery};
use super::fieldvalidation::{self, Directive};
use super::status::{json_body, parse_json};
use super::target::{parse_target_in, subresource, truthy, Params};
use super::write::update_object;
use super::{collection, logs, table, watch, write};
use super::{ApiError, ApiState};
use crate::registry;

/// `GET|POST|PUT|PATCH|DELETE /api/v1/{*rest}`.
pub async fn handle(
    State(s): State<ApiState>,
    method: Method,
    ApiPath(rest): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
    ApiQuery(log_params): ApiQuery<logs::LogParams>,
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target_in("", "v1", &rest)?;
    let s = s.for_user(user);
    serve(s, method, t, &rest, p, log_params, headers, body).await
}

/// `GET|POST|PUT|PATCH|DELETE /apis/{group}/{version}/{*rest}`: the same verbs for the kinds
/// of the other groups.
pub async fn handle_group(
    State(s): State<ApiState>,
    method: Method,
    ApiPath((group, version, rest)): ApiPath<(String, String, String)>,
    ApiQuery(p): ApiQuery<Params>,
    ApiQuery(log_params): ApiQuery<logs::LogParams>,
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target_in(&group, &version, &rest)?;
    let s = s.for_user(user);
    serve(s, method, t, &rest, p, log_params, headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    s: ApiState,
    method: Method,
    t: super::target::Target,
    rest: &str,
    p: Params,
    log_params: logs::LogParams,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let ns = t.namespace.as_deref();
    let table = table::requested(&headers, p.include_object.as_deref())?;
    match (&method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, None, None) if t.watch || truthy(&p.watch) => {
            collection::watch(&s, &t, &p, table).await
        }
        (&Method::GET, Some(name), None) if t.watch || truthy(&p.watch) => {
            let mut spec = collection::watch_spec(&t, &p, table)?;
            spec.prefix = registry::key(t.info, ns, name);
            spec.exact = true;
            watch::serve(&s.node, spec, s.metrics.clone())
        }
        (&Method::GET, None, None) => collection::list(&s, &t, &p, table).await,
        (&Method::POST, None, None) => write::create(&s, &t, &p, &body).await,
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = s.registry().get(t.info, ns, name, p.consistent()).await?;
            Ok(match table {
                Some(req) => Json(table::of_object(t.info, &obj, req)).into_response(),
                None => Json(obj).into_response(),
            })
        }
        (&Method::GET, Some(name), Some("log")) if t.info.has_log => {
            logs::pod_log(&s, t.info, ns, name, &log_params).await
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let sub = subresource(&t, sub)?;
            let mut obj = parse_json(&body)?;
            let directive = Directive::parse(p.field_validation.as_deref())?;
            let warnings = fieldvalidation::check(t.info, &mut obj, directive)?;
            let updated =
                update_object(&s, t.info, ns, name, obj, sub, &t.info.api_version()).await?;
            Ok((warnings.headers(), Json(updated)).into_response())
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let sub = subresource(&t, sub)?;
            write::patch(&s, &t, name, sub, &p, &headers, &body).await
        }
        (&Method::DELETE, Some(name), None) => {
            let (precondition, policy) = delete_options(&body, &p)?;
            if policy == "Orphan" {
                // Dependents lose their owner reference first, so the garbage collector (the
                // replication manager) leaves them alone once the owner is gone.
                let owner = s.registry().get(t.info, ns, name, true).await?;
                s.registry().orphan_dependents(&owner).await?;
            }
            if t.info.graceful_delete {
                let grace = grace_period(&body, &p)?;
                let uid = uid_precondition(&body)?;
                let pod = s
                    .registry()
                    .delete_pod(ns, name, precondition, uid.as_deref(), grace)
                    .await?;
                return Ok(Json(pod).into_response());
            }
            Ok(Json(s.registry().delete(t.info, ns, name, precondition).await?).into_response())
        }
        (_, Some(name), Some("scale")) if t.info.has_scale => {
            super::scale::handle(&s, &t, name, &method, &headers, &body).await
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {rest}"
        ))),
    }
}

/// `preconditions.resourceVersion` and the propagation policy (`Background` unless the body or
/// the query say `Orphan` or `Foreground`) of a DELETE.
fn delete_options(body: &[u8], p: &Params) -> Result<(Option<u64>, String), ApiError> {
    let opts = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        parse_json(body)?
    };
    let precondition = match opts.pointer("/preconditions/resourceVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid preconditions.resourceVersion {s:?}"))
        })?),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid preconditions.resourceVersion {other}"
            )))
        }
    };
    let orphan_dependents = opts.get("orphanDependents") == Some(&Value::Bool(true));
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| p.propagation_policy.clone())
        .unwrap_or_else(|| {
            if orphan_dependents {
                "Orphan".into()
            } else {
                "Background".into()
            }
        });
    // Foreground is served as Background: dependents are collected after the owner is gone.
    if !["Orphan", "Background", "Foreground"].contains(&policy.as_str()) {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy {policy:?} is not one of Orphan, Background, Foreground"
        )));
    }
    Ok((precondition, policy))
}

/// `preconditions.uid` of a DELETE.
fn uid_precondition(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(parse_json(body)?
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// `gracePeriodSeconds` of a DELETE (body, else query); negative is refused.
fn grace_period(body: &[u8], p: &Params) -> Result<Option<i64>, ApiError> {
    let from_body =
        if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match parse_json(body)?.get("gracePeriodSeconds") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {v}"))
                })?),
            }
        };
    match from_body.or(p.grace_period_seconds) {
        Some(g) if g < 0 => Err(ApiError::bad_request(format!(
            "gracePeriodSeconds must be 0 or more, not {g}"
        ))),
        g => Ok(g),
    }
}
