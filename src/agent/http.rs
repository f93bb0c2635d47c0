//! The agent's own HTTP server on `--api-addr`: `/metrics` (Prometheus text), `/healthz` and
//! `/livez` (the process answers), `/readyz` (the heartbeat stream to the leader is connected),
//! and `/containerLogs/{namespace}/{pod}/{container}` (kubelet's path; masters proxy the `log`
//! subresource of pods to it).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use super::docker::{DockerRuntime, LogQuery};
use super::metrics;

/// The runtime that serves container logs (none on a hollow node).
type Logs = Option<Arc<DockerRuntime>>;

fn router(logs: Logs) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(alive))
        .route("/livez", get(alive))
        .route("/readyz", get(ready))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(logs)
}

/// Binds `addr` (failing early if it cannot) and serves until the task is aborted; returns the
/// task and the port bound.
pub async fn serve(addr: &str, logs: Logs) -> anyhow::Result<(tokio::task::JoinHandle<()>, u16)> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on --api-addr {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!("agent API on http://{local}");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(logs)).await {
            tracing::error!("agent API: {e}");
        }
    });
    Ok((task, local.port()))
}

async fn container_logs(
    State(logs): State<Logs>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some(runtime) = logs else {
        return (
            StatusCode::NOT_FOUND,
            "this node runs the hollow runtime: no container runs, so none has logs",
        )
            .into_response();
    };
    match runtime.logs(&namespace, &pod, &container, &query).await {
        Ok(stream) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(stream),
        )
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn scrape() -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&metrics::get().registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn alive() -> &'static str {
    "ok"
}

async fn ready() -> Response {
    if metrics::get().ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "heartbeat stream to the leader is not connected",
        )
            .into_response()
    }
}
