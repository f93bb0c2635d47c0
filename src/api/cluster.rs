//! Membership of the master quorum: `GET /cluster`, `POST /cluster/masters`,
//! `DELETE /cluster/masters/{id}`. Changes are forwarded to the leader, which adds a master as a
//! learner (waiting until it has caught up) before making it a voter.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keelson_raft::node::{AdminRequest, NodeStatus};
use keelson_raft::{MasterNode, NodeId};
use serde::Deserialize;

use super::{ApiError, ApiState};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/cluster", get(status))
        .route("/cluster/masters", post(add))
        .route("/cluster/masters/{id}", delete(remove))
}

async fn status(State(s): State<ApiState>) -> Json<NodeStatus> {
    Json(s.node.status())
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
