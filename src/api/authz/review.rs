//! `SelfSubjectAccessReview` (`authorization.k8s.io/v1`): "may I?", answered by the same
//! authorizer that guards every request, which is what `kubectl auth can-i` asks. Created, never
//! stored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use keelson_model::rbac::{Attributes, Target};
use serde_json::{json, Value};

use super::super::auth::User;
use super::super::status::{json_body, parse_json};
use super::super::{ApiError, ApiState};
use crate::registry::ResourceInfo;

/// What discovery says of the review.
pub const INFO: ResourceInfo = ResourceInfo {
    group: "authorization.k8s.io",
    version: "v1",
    plural: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    kind: "SelfSubjectAccessReview",
    short_names: &[],
    categories: &[],
    namespaced: false,
    has_status: false,
    has_scale: false,
    has_log: false,
    graceful_delete: false,
};

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub async fn create(
    State(s): State<ApiState>,
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut review = parse_json(&json_body(&headers, body)?)?;
    let attrs = attributes(&review)?;
    let (allowed, reason) = match &user {
        // No authentication configured: everything is allowed.
        None => (true, "the API is open"),
        Some(Extension(User(user))) if s.guard.allows(user, &attrs) => (true, ""),
        Some(_) => (false, ""),
    };
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(INFO.kind);
    review["status"] = status;
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok((StatusCode::CREATED, Json(review)).into_response())
}

/// The attributes a review asks about: `spec.resourceAttributes` or
/// `spec.nonResourceAttributes`, exactly one.
fn attributes(review: &Value) -> Result<Attributes, ApiError> {
    let field = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let resource = review
        .pointer("/spec/resourceAttributes")
        .filter(|v| v.is_object());
    let non_resource = review
        .pointer("/spec/nonResourceAttributes")
        .filter(|v| v.is_object());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            verb: field(r, "verb"),
            target: Target::Resource {
                group: field(r, "group"),
                resource: field(r, "resource"),
                subresource: field(r, "subresource"),
                namespace: field(r, "namespace"),
                name: field(r, "name"),
            },
        }),
        (None, Some(n)) => Ok(Attributes {
            verb: field(n, "verb"),
            target: Target::NonResource { path: field(n, "path") },
        }),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "SelfSubjectAccessReview.authorization.k8s.io is invalid: spec: exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be given",
        )
        .with_causes(vec![json!({"reason": "FieldValueInvalid", "field": "spec", "message": "exactly one of resourceAttributes and nonResourceAttributes must be given"})])),
    }
}
