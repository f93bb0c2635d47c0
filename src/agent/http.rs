//! The agent's own HTTP server on `--api-addr`: `/metrics` (Prometheus text), `/healthz` and
//! `/livez` (the process answers), `/readyz` (the heartbeat stream to the leader is connected),
//! and `/containerLogs/{namespace}/{pod}/{container}` (kubelet's path; masters proxy the `log`
//! subresource of pods to it).
//!
//! With `--tls-cert-file` it serves HTTPS, and container logs only to masters: the caller must
//! present a certificate of `--client-ca-file` that names a master (`master-N`, the masters' peer
//! certificates), as the kubelet authenticates the API server by its client certificate. Metrics
//! and health answer anyone, as before.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use keelson_raft::server::PeerIdentity;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use super::docker::{DockerRuntime, LogQuery};
use super::metrics;
use crate::master::http::Timeouts;

/// What the log endpoint needs: the runtime that serves container logs (none on a hollow node),
/// and whether only masters may read them (the agent serves HTTPS).
#[derive(Clone)]
struct Logs {
    runtime: Option<Arc<DockerRuntime>>,
    masters_only: bool,
}

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

/// Binds `addr` (failing early if it cannot) and serves, over HTTPS with `tls`, until the task
/// is aborted; returns the task and the port bound.
pub async fn serve(
    addr: &str,
    runtime: Option<Arc<DockerRuntime>>,
    tls: Option<Arc<ServerConfig>>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, u16)> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on --api-addr {addr}"))?;
    let local = listener.local_addr()?;
    let router = router(Logs {
        runtime,
        masters_only: tls.is_some(),
    });
    let timeouts = Timeouts {
        header_read: Duration::from_secs(10),
    };
    // Never stopped: the agent aborts the task as it exits.
    let (_stop, never) = tokio::sync::watch::channel(false);
    let task = match tls {
        Some(config) => {
            tracing::info!("agent API on https://{local}");
            let listener = crate::master::tls::TlsListener::new(listener, config)?;
            tokio::spawn(async move {
                let _stop = _stop;
                crate::master::http::serve(listener, router, timeouts, never).await
            })
        }
        None => {
            tracing::warn!("agent API on http://{local}: no --tls-cert-file, so container logs are served to anyone");
            tokio::spawn(async move {
                let _stop = _stop;
                crate::master::http::serve(listener, router, timeouts, never).await
            })
        }
    };
    Ok((task, local.port()))
}

async fn container_logs(
    State(logs): State<Logs>,
    identity: Option<Extension<PeerIdentity>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    if logs.masters_only {
        match identity {
            Some(Extension(PeerIdentity(Some(_)))) => {}
            Some(_) => {
                return (
                    StatusCode::FORBIDDEN,
                    "Forbidden: the client certificate names no master; only masters read container logs",
                )
                    .into_response()
            }
            None => {
                return (
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: container logs are served to masters, which present their certificate",
                )
                    .into_response()
            }
        }
    }
    let Some(runtime) = logs.runtime else {
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
