//! The `scale` subresource of replication controllers: an `autoscaling/v1` `Scale`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::patch::{self, PatchKind};
use super::status::parse_json;
use super::target::Target;
use super::write::patch_object;
use super::{ApiError, ApiState};
use crate::registry::selectors::LabelSelector;
use crate::registry::Subresource;

/// The `Scale` view of a controller.
fn scale_of(rc: &Value) -> Value {
    let selector: std::collections::BTreeMap<String, String> = rc
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": rc.pointer("/metadata/name"),
            "namespace": rc.pointer("/metadata/namespace"),
            "uid": rc.pointer("/metadata/uid"),
            "resourceVersion": rc.pointer("/metadata/resourceVersion"),
            "creationTimestamp": rc.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": rc.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": rc.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": LabelSelector::from_map(&selector).to_string_form(),
        },
    })
}

/// `GET|PUT|PATCH .../replicationcontrollers/{name}/scale`.
pub async fn handle(
    s: &ApiState,
    t: &Target,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ns = t.namespace.as_deref();
    let new_scale = |current: &Value| -> Result<Value, ApiError> {
        match *method {
            Method::PUT => parse_json(body),
            _ => {
                let ct = headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let kind = PatchKind::from_content_type(ct)?;
                let mut scale = scale_of(current);
                // The version in `scale` is the one just read: only a version the client put
                // in its patch is a precondition.
                if let Some(m) = scale.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                patch::apply(
                    kind,
                    "Scale",
                    &super::smp::PLAIN,
                    &mut scale,
                    &parse_json(body)?,
                )?;
                Ok(scale)
            }
        }
    };
    match *method {
        Method::GET => {
            Ok(Json(scale_of(&s.registry().get(t.info, ns, name, true).await?)).into_response())
        }
        Method::PUT | Method::PATCH => {
            let updated = patch_object(s, t.info, ns, name, Subresource::Main, |rc| {
                let scale = new_scale(rc)?;
                let replicas = scale
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        crate::registry::validation::invalid_error(
                            t.info,
                            name,
                            vec![crate::registry::validation::Cause {
                                reason: "FieldValueRequired",
                                field: "spec.replicas".into(),
                                message: "Required value".into(),
                            }],
                        )
                    })?;
                if let Some(rv) = scale
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                {
                    rc["metadata"]["resourceVersion"] = json!(rv);
                }
                rc["spec"]["replicas"] = json!(replicas);
                Ok(())
            })
            .await?;
            Ok(Json(scale_of(&updated)).into_response())
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}/scale",
            t.info.plural
        ))),
    }
}
