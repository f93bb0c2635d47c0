//! The agent's own HTTP server on `--api-addr`: `/metrics` (Prometheus text), `/healthz` and
//! `/livez` (the process answers), `/readyz` (the heartbeat stream to the leader is connected).

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

use super::metrics;

fn router() -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(alive))
        .route("/livez", get(alive))
        .route("/readyz", get(ready))
}

/// Binds `addr` (failing early if it cannot) and serves until the task is aborted.
pub async fn serve(addr: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on --api-addr {addr}"))?;
    tracing::info!("agent API on http://{}", listener.local_addr()?);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router()).await {
            tracing::error!("agent API: {e}");
        }
    }))
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
