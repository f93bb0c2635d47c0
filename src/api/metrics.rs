//! API metrics and the `/metrics` endpoint.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use super::ApiState;

/// Request counts and latencies of the API server.
#[derive(Clone)]
pub struct ApiMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub open_watches: IntGauge,
    pub watch_events: IntCounter,
}

impl ApiMetrics {
    pub fn register(reg: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "keelson_api_requests_total",
                "API requests by verb, resource and HTTP code.",
            ),
            &["verb", "resource", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "keelson_api_request_duration_seconds",
                "API request latency by verb and resource.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["verb", "resource"],
        )
        .expect("valid metric");
        let open_watches = IntGauge::new(
            "keelson_api_open_watches",
            "Watches currently open on this master.",
        )
        .expect("valid metric");
        let watch_events =
            IntCounter::new("keelson_api_watch_events_total", "Events sent to watchers.")
                .expect("valid metric");
        reg.register(Box::new(requests.clone())).expect("register");
        reg.register(Box::new(latency.clone())).expect("register");
        reg.register(Box::new(open_watches.clone()))
            .expect("register");
        reg.register(Box::new(watch_events.clone()))
            .expect("register");
        reg.register(Box::new(crate::registry::UNDECODABLE.clone()))
            .expect("register");
        ApiMetrics {
            requests,
            latency,
            open_watches,
            watch_events,
        }
    }
}

/// Resource label: the first segment of the matched route (low cardinality by construction).
fn resource_of(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// Method label: HTTP's registered methods, and `other` for the extension methods a client can
/// make up (each would otherwise be a new time series: unbounded memory on every scrape).
fn method_of(req: &Request) -> &'static str {
    match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware counting and timing every request.
pub async fn track(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let verb = method_of(&req);
    let resource = resource_of(&req);
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .latency
        .with_label_values(&[verb, &resource])
        .observe(start.elapsed().as_secs_f64());
    s.metrics
        .requests
        .with_label_values(&[verb, &resource, resp.status().as_str()])
        .inc();
    resp
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn scrape(State(s): State<ApiState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&s.prometheus.gather(), &mut buf) {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        );
    }
    (
        axum::http::StatusCode::OK,
        [(CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
}

/// Counts an open watch in `keelson_api_open_watches` for as long as it lives.
pub struct OpenWatch(ApiMetrics);

impl OpenWatch {
    pub fn new(metrics: &ApiMetrics) -> Self {
        metrics.open_watches.inc();
        OpenWatch(metrics.clone())
    }
    /// The metrics this watch counts in.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.0
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.dec();
    }
}
