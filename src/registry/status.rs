//! Errors as Kubernetes `Status` objects: the HTTP code, reason, message and details of a
//! failed request. The registry and the strategies return them; the API server turns them into
//! responses (`api/status.rs`), so nothing here knows axum.

use http::StatusCode;
use keelson_raft::ClusterError;
use serde_json::{json, Value};

/// An API failure: HTTP code, Kubernetes reason, message and details.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status: `name`, `kind`, `causes`.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
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
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
    /// A write refused by the space alarm (`OpResult::NoSpace`): 507, naming who raised it and
    /// how to get out.
    pub fn no_space(node: &keelson_raft::RaftNode) -> Self {
        use keelson_raft::command::ALARM_NOSPACE;
        let why = node
            .store
            .get(ALARM_NOSPACE)
            .0
            .and_then(|r| serde_json::from_slice::<keelson_raft::quota::NoSpace>(&r.value).ok())
            .map(|n| {
                format!(
                    " (raised by master {}: its database held {} bytes, over its quota of {})",
                    n.master, n.db_size_bytes, n.quota_bytes
                )
            })
            .unwrap_or_default();
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            format!(
                "no space: the NOSPACE alarm is raised{why}; writes that store data are refused, \
                 deletes still work: free space or raise --quota-backend-bytes, then `keelson ctl \
                 alarm disarm`"
            ),
        )
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }
    /// Adds `details.name` and `details.kind`.
    pub fn with_details(mut self, name: &str, kind: &str) -> Self {
        let d = self.details.get_or_insert_with(|| json!({}));
        d["name"] = json!(name);
        d["kind"] = json!(kind);
        self
    }
    /// Adds `details.retryAfterSeconds` (the `Retry-After` header is the caller's).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        let d = self.details.get_or_insert_with(|| json!({}));
        d["retryAfterSeconds"] = json!(seconds);
        self
    }
    /// Adds `details.causes`.
    pub fn with_causes(mut self, causes: Vec<Value>) -> Self {
        let d = self.details.get_or_insert_with(|| json!({}));
        d["causes"] = Value::Array(causes);
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            body["details"] = d.clone();
        }
        body
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
