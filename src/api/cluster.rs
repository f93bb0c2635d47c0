//! Membership of the master quorum: `GET /cluster`, `POST /cluster/masters`,
//! `DELETE /cluster/masters/{id}`, `GET /cluster/snapshot` (a backup), `GET /cluster/alarms`
//! and `DELETE /cluster/alarms/nospace` (the space alarm, `keelson_raft::quota`). Changes are forwarded to the leader, which adds a master as a
//! learner (waiting until it has caught up) before making it a voter. `GET /cluster` is what
//! `keelson ctl masters status` and `cluster health` ask each master.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keelson_raft::command::ALARM_NOSPACE;
use keelson_raft::node::{AdminRequest, NodeStatus};
use keelson_raft::{Command, MasterNode, NodeId, OpResult};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/cluster", get(status))
        .route("/cluster/snapshot", get(snapshot))
        .route("/cluster/alarms", get(alarms))
        .route("/cluster/alarms/nospace", delete(disarm))
        .route("/cluster/masters", post(add))
        .route("/cluster/masters/{id}", delete(remove))
}

/// What a master says of itself at `GET /cluster`: its Raft view of the cluster, and what an
/// operator checks at a glance (as `etcdctl endpoint status`).
#[derive(Serialize)]
struct MasterStatus {
    #[serde(flatten)]
    raft: NodeStatus,
    /// The keelson version this master runs.
    version: &'static str,
    uptime_seconds: u64,
    /// Its database's size (RocksDB's SST files and memtables).
    db_size_bytes: u64,
    /// Whether it serves: knows a leader and has applied what it holds (`/readyz`).
    ready: bool,
    /// The clusters this one was restored from (`keelson snapshot restore`), newest first:
    /// agents own their containers too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    restored_from: Vec<String>,
    /// Why its storage stopped, if it has (`keelson_raft::failure`): it serves nothing else.
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_failure: Option<keelson_raft::failure::Failure>,
}

async fn status(State(s): State<ApiState>) -> Json<MasterStatus> {
    Json(MasterStatus {
        raft: s.node.status(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs(),
        db_size_bytes: s.node.db_size_bytes(),
        ready: s.node.is_ready(),
        restored_from: s.node.restored_from(),
        storage_failure: s.node.storage_failure(),
    })
}

/// A backup of the state (`keelson ctl snapshot save`): the file of `keelson_raft::backup`,
/// taken after a read barrier and streamed in 1 MiB pieces; its header also in
/// `X-Keelson-Backup`. A non-resource URL: only those RBAC lets `get /cluster/snapshot` (the
/// administrators) may take one, for it holds every object, secrets too.
async fn snapshot(State(s): State<ApiState>) -> Result<axum::response::Response, ApiError> {
    let (header, file) = s.node.backup().await?;
    tracing::info!(
        index = header.index,
        records = header.records,
        bytes = file.len(),
        "backup taken"
    );
    const PIECE: usize = 1 << 20;
    let file = bytes::Bytes::from(file);
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..file.len())
        .step_by(PIECE)
        .map(|at| Ok(file.slice(at..(at + PIECE).min(file.len()))))
        .collect();
    let body = axum::body::Body::from_stream(futures::stream::iter(pieces));
    Ok(axum::response::Response::builder()
        .header("content-type", "application/octet-stream")
        .header(
            "x-keelson-backup",
            serde_json::to_string(&header).unwrap_or_default(),
        )
        .body(body)
        .expect("a response"))
}

/// The alarms raised, after a read barrier: `{"alarms": [{"name": "NOSPACE", "master", …}]}`.
async fn alarms(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.node.read_barrier().await?;
    let alarms: Vec<serde_json::Value> = s
        .node
        .store
        .get(ALARM_NOSPACE)
        .0
        .map(|r| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&r.value).unwrap_or_else(|_| serde_json::json!({}));
            v["name"] = "NOSPACE".into();
            v
        })
        .into_iter()
        .collect();
    Ok(Json(serde_json::json!({ "alarms": alarms })))
}

/// Clears the space alarm (`keelson ctl alarm disarm`): whether it was raised.
async fn disarm(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let resp = s
        .node
        .write(Command::Delete {
            key: ALARM_NOSPACE.into(),
            precondition: None,
        })
        .await?;
    let disarmed = resp.results.first().is_some_and(OpResult::is_success);
    tracing::info!(disarmed, "NOSPACE alarm disarmed by an administrator");
    Ok(Json(serde_json::json!({ "disarmed": disarmed })))
}

#[derive(Deserialize)]
struct AddMaster {
    id: NodeId,
    /// `HOST:PORT` of the new master's Raft port.
    raft: String,
    /// `HOST:PORT` or URL of its API.
    #[serde(default)]
    api: String,
}

async fn add(
    State(s): State<ApiState>,
    Json(req): Json<AddMaster>,
) -> Result<Json<NodeStatus>, ApiError> {
    if req.id == 0 {
        return Err(ApiError::bad_request("id must be a positive integer"));
    }
    if req.raft.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::bad_request(format!(
            "raft address {:?} is not HOST:PORT",
            req.raft
        )));
    }
    let api = if req.api.is_empty() || req.api.starts_with("http") {
        req.api
    } else if s.tls {
        format!("https://{}", req.api)
    } else {
        format!("http://{}", req.api)
    };
    let status = s
        .node
        .admin(AdminRequest::AddMaster {
            id: req.id,
            node: MasterNode {
                raft: req.raft,
                api,
            },
        })
        .await?;
    Ok(Json(status))
}

async fn remove(
    State(s): State<ApiState>,
    Path(id): Path<NodeId>,
) -> Result<Json<NodeStatus>, ApiError> {
    let status = s.node.admin(AdminRequest::RemoveMaster { id }).await?;
    Ok(Json(status))
}
