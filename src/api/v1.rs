//! core/v1: namespaced and cluster-wide REST paths over the registry, parsed from one
//! catch-all route so that every resource shares the same verbs.
//!
//! Paths: `/api/v1/[watch/][namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`, and
//! `/api/v1/namespaces/{name}[/status]` for namespaces themselves.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::extract::{ApiPath, ApiQuery};
use super::fieldvalidation::{self, Directive};
use super::status::parse_json;
use super::{collection, logs, table, watch, write};
use super::{ApiError, ApiState};
use crate::registry::selectors::{FieldSelector, LabelSelector};
use crate::registry::strategy;
use crate::registry::{self, lookup, ResourceInfo, Subresource};

/// The object a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    pub watch: bool,
}

/// Parses the part of the path after `/api/v1/`.
pub fn parse_target(rest: &str) -> Result<Target, ApiError> {
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let watch = segs.first() == Some(&"watch");
    if watch {
        segs.remove(0);
    }
    let unknown = |what: &str| {
        ApiError::not_found(format!(
            "the server could not find the requested resource ({what})"
        ))
    };
    let resource = |plural: &str| lookup(plural).ok_or_else(|| unknown(plural));
    let own = |s: &str| Some(s.to_string());
    let t = match segs.as_slice() {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|r| r.namespaced) => {
            let info = resource(plural)?;
            match tail {
                [] => Target {
                    info,
                    namespace: own(ns),
                    name: None,
                    sub: None,
                    watch,
                },
                [name] => Target {
                    info,
                    namespace: own(ns),
                    name: own(name),
                    sub: None,
                    watch,
                },
                [name, sub] => Target {
                    info,
                    namespace: own(ns),
                    name: own(name),
                    sub: own(sub),
                    watch,
                },
                _ => return Err(unknown(rest)),
            }
        }
        [plural] => Target {
            info: resource(plural)?,
            namespace: None,
            name: None,
            sub: None,
            watch,
        },
        [plural, name] => Target {
            info: resource(plural)?,
            namespace: None,
            name: own(name),
            sub: None,
            watch,
        },
        [plural, name, sub] => Target {
            info: resource(plural)?,
            namespace: None,
            name: own(name),
            sub: own(sub),
            watch,
        },
        _ => return Err(unknown(rest)),
    };
    if t.name.is_some() && t.info.namespaced && t.namespace.is_none() {
        return Err(unknown(rest));
    }
    Ok(t)
}

/// Query parameters of every verb.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub limit: Option<usize>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub watch: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: Option<String>,
    pub resource_version_match: Option<String>,
    /// Table rows: `None`, `Metadata` (default) or `Object`.
    pub include_object: Option<String>,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub force: Option<String>,
}

pub(crate) fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

impl Params {
    /// The resource version asked for, if any.
    pub fn rv(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
        }
    }

    /// A linearizable read unless `resourceVersion` was given (Kubernetes: "0" = any, N = not
    /// older than N; both are served from this replica).
    pub fn consistent(&self) -> bool {
        self.resource_version.as_deref().is_none_or(str::is_empty)
    }

    pub fn selectors(&self, kind: &str) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(self.field_selector.as_deref().unwrap_or(""), kind)
            .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }
}

/// `GET|POST|PUT|PATCH|DELETE /api/v1/{*rest}`.
pub async fn handle(
    State(s): State<ApiState>,
    method: Method,
    ApiPath(rest): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
    ApiQuery(log_params): ApiQuery<logs::LogParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target(&rest)?;
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
        (&Method::GET, Some(name), Some("log")) if t.info.kind == "Pod" => {
            logs::pod_log(&s, t.info, ns, name, &log_params).await
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let sub = subresource(&t, sub)?;
            let mut obj = parse_json(&body)?;
            let directive = Directive::parse(p.field_validation.as_deref())?;
            let warnings = fieldvalidation::check(t.info, &mut obj, directive)?;
            let updated = update_object(&s, t.info, ns, name, obj, sub, "v1").await?;
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
            if t.info.kind == "Pod" {
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

pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(crate) fn subresource(t: &Target, sub: Option<&str>) -> Result<Subresource, ApiError> {
    match sub {
        None => Ok(Subresource::Main),
        Some("status") if t.info.has_status => Ok(Subresource::Status),
        Some(other) => Err(ApiError::not_found(format!(
            "{}/{} is not a served subresource",
            t.info.plural, other
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
        strategy::prepare_update(info, &mut obj, &old, sub, "v1")?;
        match s.registry().update(info, obj, Some(current)).await {
            Err(e) if e.code == StatusCode::CONFLICT && attempts < 5 && asked.is_none() => {
                attempts += 1
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                t.info.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_target("watch/namespaces/ns1/services").unwrap();
        assert!(t.watch && t.name.is_none());
        let t = parse_target("namespaces/kube-system").unwrap();
        assert_eq!(
            (t.info.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_target("nodes/n1/status").unwrap();
        assert_eq!((t.info.plural, t.sub.as_deref()), ("nodes", Some("status")));
        assert_eq!(parse_target("pods").unwrap().namespace, None);
        assert!(
            parse_target("pods/web").is_err(),
            "a namespaced object needs its namespace"
        );
        assert!(parse_target("widgets").is_err());
    }
}
