//! Errors as Kubernetes `Status` objects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keelson_raft::ClusterError;
use serde_json::json;

/// An API failure: HTTP code, Kubernetes reason and message.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let (code, reason) = match &e {
            ClusterError::NotLeader { .. } | ClusterError::NoQuorum | ClusterError::Removed => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            ClusterError::Indeterminate(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ClusterError::Invalid(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ClusterError::Fatal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(code, reason, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        (self.code, Json(body)).into_response()
    }
}
