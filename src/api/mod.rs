//! The API server every master runs.
//!
//! Every master answers every request: writes are forwarded to the leader inside
//! [`keelson_raft::RaftNode`], reads are linearizable unless `resourceVersion=0` asks for this
//! replica's state. Errors are Kubernetes `Status` objects.
//!
//! Routes: health (`/healthz`, `/livez`, `/readyz`), `/metrics`, `/version`, discovery
//! ([`discovery`]), OpenAPI v3 ([`openapi`]), core/v1 ([`v1`]: lists, watches and Tables in
//! [`collection`] and [`table`], writes in [`write`], patches in [`patch`], [`smp`] and
//! [`apply`]), the seed's v1beta1 ([`v1beta1`]), the cluster's membership
//! (`/cluster`, [`cluster`]) and the store's key/value surface (`/kv`, [`kv`]); the other groups'
//! kinds (RBAC's) under `/apis/{group}/{version}`. Every path but health and metrics needs a
//! bearer token when the master has a token file ([`auth`]), and a role that allows the
//! request ([`authz`]).

mod apply;
pub mod audit;
pub mod auth;
pub mod authz;
mod cluster;
mod collection;
mod discovery;
mod extract;
mod failed;
mod fieldvalidation;
mod kv;
pub mod limits;
pub mod logs;
mod metrics;
mod openapi;
mod patch;
mod scale;
/// Strategic merge patch, from the model crate.
use keelson_model::smp;
mod status;
mod table;
mod target;
pub mod v1;
pub mod v1beta1;
mod watch;
mod write;

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
    /// Who may do what: tokens, and RBAC once the informers are there.
    pub guard: authz::Guard,
    /// The user of the request being served (set by the handlers that write RBAC's kinds,
    /// whose escalation check needs it; `None` when the API is open).
    pub requester: Option<Arc<keelson_model::rbac::UserInfo>>,
    /// Test-only broken mode: the key/value surface serves "linearizable" reads from the local
    /// replica without a read barrier, so the chaos harness can prove it catches stale reads.
    pub unsafe_stale_reads: bool,
    /// The API is served over HTTPS (`--tls-cert-file`): API addresses given as bare
    /// `HOST:PORT` (adding a master) are `https://` ones.
    pub tls: bool,
    /// Requests in flight, long-running requests per user, body read time.
    pub limits: Arc<limits::Limits>,
    /// The master's informers, whose indexes narrow lists by label (none: every list scans).
    pub informers: Option<Arc<crate::informer::Informers>>,
    /// How pods' logs are fetched from their agents.
    pub agents: logs::Agents,
    /// When this master started serving (its uptime at `GET /cluster`).
    pub started: std::time::Instant,
    /// Where services' cluster IPs come from (`--service-cluster-ip-range`).
    pub service_range: crate::registry::clusterip::ServiceRange,
}

impl ApiState {
    /// Builds the API state, registering the API metrics in `prometheus`.
    pub fn new(node: Arc<RaftNode>, prometheus: prometheus::Registry, guard: authz::Guard) -> Self {
        let metrics = metrics::ApiMetrics::register(&prometheus);
        ApiState {
            node,
            prometheus,
            metrics,
            guard,
            requester: None,
            unsafe_stale_reads: false,
            tls: false,
            limits: limits::Limits::new(limits::LimitConfig::default()),
            informers: None,
            agents: logs::Agents::plain(),
            started: std::time::Instant::now(),
            service_range: Default::default(),
        }
    }

    /// Reads lists by label through `informers`' indexes.
    pub fn with_informers(mut self, informers: Arc<crate::informer::Informers>) -> Self {
        self.informers = Some(informers);
        self
    }

    /// The state for serving a request of `user` (the `User` extension, if authenticated).
    pub fn for_user(mut self, user: Option<axum::Extension<auth::User>>) -> Self {
        self.requester = user.map(|axum::Extension(auth::User(u))| u);
        self
    }

    /// The escalation check of a write of `obj` by the request's user (RBAC's kinds only).
    pub fn admit(
        &self,
        info: &crate::registry::ResourceInfo,
        obj: &serde_json::Value,
    ) -> Result<(), ApiError> {
        self.guard.admit(self.requester.as_deref(), info, obj)
    }

    /// The object registry over this master's store.
    pub fn registry(&self) -> crate::registry::Registry {
        crate::registry::Registry {
            node: self.node.clone(),
            service_range: self.service_range,
        }
    }
}

/// Largest request body accepted (Kubernetes' limit is 3 MiB too).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Refuses a body whose declared length is over [`MAX_BODY`] before reading any of it (bodies
/// without a length are cut off by the body limit as they are read).
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|l| *l > MAX_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body of {len} bytes is over the limit of {MAX_BODY} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/version", get(version))
        // Discovery, with and without the trailing slash (the official clients ask for
        // `/api/v1/`).
        .route("/api", get(discovery::api_versions))
        .route("/api/", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/", get(discovery::api_groups))
        .route("/api/v1", get(discovery::core_v1))
        .route("/api/v1/", get(discovery::core_v1))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/api/v1", get(openapi::core_v1))
        .route(
            "/openapi/v3/apis/{group}/{version}",
            get(openapi::group_version),
        )
        .route("/api/v1/{*rest}", axum::routing::any(v1::handle))
        .route("/apis/{group}", get(discovery::api_group))
        .route("/apis/{group}/", get(discovery::api_group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .route("/apis/{group}/{version}/", get(discovery::group_version))
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(authz::review::create),
        )
        .route(
            "/apis/{group}/{version}/{*rest}",
            axum::routing::any(v1::handle_group),
        )
        .merge(v1beta1::routes())
        .merge(cluster::routes())
        .merge(kv::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            failed::refuse,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            authz::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
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

/// The Kubernetes API version keelson's core/v1 follows (kubectl warns when its own minor
/// version is more than one away).
const KUBERNETES_VERSION: (&str, &str) = ("1", "37");

/// `GET /version`: the Kubernetes version served, with keelson's own as build metadata
/// (`v1.37.0+keelson-0.1.0`), as Kubernetes distributions report theirs.
async fn version() -> Json<serde_json::Value> {
    let v = env!("CARGO_PKG_VERSION");
    let (major, minor) = KUBERNETES_VERSION;
    Json(serde_json::json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0+keelson-{v}"),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
