//! The API server every master runs.
//!
//! Every master answers every request: writes are forwarded to the leader inside
//! [`keelson_raft::RaftNode`], reads are linearizable unless `resourceVersion=0` asks for this
//! replica's state. Errors are Kubernetes `Status` objects.
//!
//! Routes: health (`/healthz`, `/livez`, `/readyz`), `/metrics`, `/version`, the cluster's
//! membership (`/cluster`, [`cluster`]) and the store's key/value surface (`/kv`, [`kv`]).

mod cluster;
pub mod v1beta1;
mod kv;
mod metrics;
mod status;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use keelson_raft::RaftNode;

pub use status::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub node: Arc<RaftNode>,
    pub registry: prometheus::Registry,
    pub metrics: metrics::ApiMetrics,
}

impl ApiState {
    /// Builds the API state, registering the API metrics in `registry`.
    pub fn new(node: Arc<RaftNode>, registry: prometheus::Registry) -> Self {
        let metrics = metrics::ApiMetrics::register(&registry);
        ApiState {
            node,
            registry,
            metrics,
        }
    }
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/version", get(version))
        .merge(cluster::routes())
        .merge(kv::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(3 * 1024 * 1024))
        .with_state(state)
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.node.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known, or still catching up",
        )
    }
}

async fn version() -> Json<serde_json::Value> {
    let v = env!("CARGO_PKG_VERSION");
    Json(serde_json::json!({
        "major": v.split('.').next().unwrap_or("0"),
        "minor": v.split('.').nth(1).unwrap_or("0"),
        "gitVersion": format!("v{v}"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
