//! The seed's API version, v1beta1, over the same registry as core/v1: every request is
//! converted to the internal model (`keelson_model::v1beta1`, through each kind's file in the
//! registry) on the way in and back on the way out, so an
//! object created in one version is readable in the other.
//!
//! Paths: `/api/v1beta1/{pods,replicationControllers,services,endpoints,minions}[/{id}]`,
//! `?labels=` selectors, and `/api/v1beta1/watch/{resource}`. v1beta1 has no namespaces: its
//! objects live in `default`. Ids keep the seed's leniency (`mysiteController` is accepted).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiPath, ApiQuery};
use super::status::parse_json;
use super::watch::{self, WatchSpec};
use super::write::update_object;
use super::{ApiError, ApiState};
use crate::registry::selectors::{FieldSelector, LabelSelector};
use crate::registry::strategy;
use crate::registry::validation::{invalid_error, Cause, Names};
use crate::registry::{self, ResourceInfo, Subresource};

const NAMESPACE: &str = "default";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1beta1/watch/{resource}", any(watch_collection))
        .route("/api/v1beta1/{resource}", any(collection))
        .route("/api/v1beta1/{resource}/{id}", any(item))
}

/// The internal resource behind a v1beta1 collection name.
fn resource(name: &str) -> Result<&'static ResourceInfo, ApiError> {
    registry::kinds::by_v1beta1(|collection, _| collection == name)
        .map(|k| k.info())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "the server could not find the requested resource (v1beta1 {name})"
            ))
        })
}

fn namespace(info: &ResourceInfo) -> Option<&'static str> {
    info.namespaced.then_some(NAMESPACE)
}

fn v1beta1_kind(info: &ResourceInfo) -> &'static str {
    registry::resource(info)
        .v1beta1_names()
        .map_or(info.kind, |(_, kind)| kind)
}

/// Internal object → v1beta1.
pub fn to_v1beta1(info: &ResourceInfo, v: &Value) -> Result<Value, ApiError> {
    registry::resource(info).to_v1beta1(v)
}

/// v1beta1 body → internal object (not yet defaulted or validated).
fn from_v1beta1(info: &ResourceInfo, v: &Value) -> Result<Value, ApiError> {
    let name = v.get("id").and_then(Value::as_str).unwrap_or("");
    match registry::resource(info).from_v1beta1(v) {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(invalid_error(
            info,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: e.field,
                message: e.message,
            }],
        )),
        None => Err(ApiError::method_not_allowed(format!(
            "{} cannot be written through v1beta1",
            info.plural
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    labels: Option<String>,
    fields: Option<String>,
    resource_version: Option<String>,
}

impl Params {
    fn selectors(&self, info: &ResourceInfo) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.labels.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            self.fields.as_deref().unwrap_or(""),
            registry::resource(info).selectable_fields(),
        )
        .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }
}

async fn collection(
    State(s): State<ApiState>,
    method: Method,
    ApiPath(name): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let info = resource(&name)?;
    match method {
        Method::GET => {
            let (labels, fields) = p.selectors(info)?;
            let (objects, rv) = s.registry().list(info, namespace(info), true).await?;
            // An object that does not convert is skipped (and counted), not a failed list.
            let items: Vec<Value> = objects
                .iter()
                .filter(|o| labels.matches_object(o) && fields.matches(o))
                .filter_map(|o| match to_v1beta1(info, o) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        registry::UNDECODABLE.inc();
                        tracing::warn!("v1beta1 list skips an object: {}", e.message);
                        None
                    }
                })
                .collect();
            let kind = format!("{}List", v1beta1_kind(info));
            Ok(Json(json!({"kind": kind, "apiVersion": "v1beta1", "resourceVersion": rv, "items": items})).into_response())
        }
        Method::POST => {
            let body = parse_json(&body)?;
            let mut obj = from_v1beta1(info, &body)?;
            strategy::prepare_create(info, &mut obj, namespace(info), Names::Lenient, "v1")?;
            let created = s.registry().create(info, obj).await?;
            Ok((StatusCode::CREATED, Json(to_v1beta1(info, &created)?)).into_response())
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on v1beta1 {name}"
        ))),
    }
}

async fn item(
    State(s): State<ApiState>,
    method: Method,
    ApiPath((name, id)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let info = resource(&name)?;
    let ns = namespace(info);
    let obj = match method {
        Method::GET => s.registry().get(info, ns, &id, true).await?,
        Method::PUT => {
            let body = parse_json(&body)?;
            if body
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|b| b != id)
            {
                return Err(ApiError::bad_request(format!(
                    "the id in the body ({}) does not match the URL ({id})",
                    body["id"]
                )));
            }
            let mut obj = from_v1beta1(info, &body)?;
            obj["metadata"]["name"] = json!(id);
            update_object(&s, info, ns, &id, obj, Subresource::Main, "v1").await?
        }
        Method::DELETE if info.graceful_delete => {
            s.registry().delete_pod(ns, &id, None, None, None).await?
        }
        Method::DELETE => s.registry().delete(info, ns, &id, None).await?,
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on v1beta1 {name}/{id}"
            )))
        }
    };
    Ok(Json(to_v1beta1(info, &obj)?).into_response())
}

async fn watch_collection(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    let info = resource(&name)?;
    let (labels, fields) = p.selectors(info)?;
    let from = match p.resource_version.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    let spec = WatchSpec {
        info,
        prefix: registry::prefix(info, namespace(info)),
        exact: false,
        labels,
        fields,
        from,
        bookmarks: false,
        timeout: None,
        render: Some(Arc::new(move |v: &Value| {
            to_v1beta1(info, v).unwrap_or_else(|e| e.to_status())
        })),
    };
    watch::serve(&s.node, spec, s.metrics.clone())
}
