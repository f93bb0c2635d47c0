//! A master whose storage failed (`keelson_raft::failure`) answers every request with a Status
//! naming it and the cause — 507 `InsufficientStorage` for a full disk, 503 otherwise — but
//! health, metrics and its own status (`GET /cluster`), which read nothing it stores: it must
//! not serve state it may not have persisted, and a client must learn to go elsewhere.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keelson_raft::failure::Failure;

use super::{ApiError, ApiState};

/// Paths served whatever the storage's state.
const ALWAYS: [&str; 6] = [
    "/healthz", "/livez", "/readyz", "/metrics", "/version", "/cluster",
];

pub async fn refuse(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    match s.node.storage_failure() {
        Some(failure) if !ALWAYS.contains(&req.uri().path()) => {
            refusal(s.node.id, &failure).into_response()
        }
        _ => next.run(req).await,
    }
}

/// The Status of a request to master `id` whose storage failed.
pub fn refusal(id: keelson_raft::NodeId, failure: &Failure) -> ApiError {
    if failure.no_space {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            format!(
                "no space: master {id} ran out of disk space and stopped ({}); it serves \
                 nothing until it restarts, which it does once space is freed: use another \
                 master",
                failure.reason
            ),
        )
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "master {id}'s storage failed ({}); it serves nothing until it restarts: use \
                 another master",
                failure.reason
            ),
        )
    }
}
