//! The API server every master runs.
//!
//! Every master answers every request: writes are forwarded to the leader inside
//! [`keelson_raft::RaftNode`], reads are linearizable unless `resourceVersion=0` asks for this
//! replica's state. Errors are Kubernetes `Status` objects.
//!
//! Routes: health (`/healthz`, `/livez`, `/readyz`), `/metrics`, `/version`, discovery
//! ([`discovery`]), core/v1 ([`v1`]), the seed's v1beta1 ([`v1beta1`]), the cluster's membership
//! (`/cluster`, [`cluster`]) and the store's key/value surface (`/kv`, [`kv`]). Every path but
//! health and metrics needs a bearer token when the master has a token file ([`auth`]).

pub mod auth;
mod cluster;
mod discovery;
mod kv;
mod metrics;
mod patch;
mod scale;
mod status;
pub mod v1;
pub mod v1beta1;
mod watch;

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
    /// The Prometheus registry `/metrics` exposes.
    pub prometheus: prometheus::Registry,
    pub metrics: metrics::ApiMetrics,
    pub tokens: auth::Tokens,
}

impl ApiState {
    /// Builds the API state, registering the API metrics in `prometheus`.
    pub fn new(
        node: Arc<RaftNode>,
        prometheus: prometheus::Registry,
        tokens: auth::Tokens,
    ) -> Self {
        let metrics = metrics::ApiMetrics::register(&prometheus);
        ApiState {
            node,
            prometheus,
            metrics,
            tokens,
        }
    }

    /// The object registry over this master's store.
    pub fn registry(&self) -> crate::registry::Registry {
        crate::registry::Registry {
            node: self.node.clone(),
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
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1", get(discovery::core_v1))
        .route("/api/v1/{*rest}", axum::routing::any(v1::handle))
        .merge(v1beta1::routes())
        .merge(cluster::routes())
        .merge(kv::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::authenticate,
        ))
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
