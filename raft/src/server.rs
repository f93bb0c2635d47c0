//! The Raft port: openraft's RPCs and the internal requests followers forward to the leader.
//!
//! Everything here is bincode over HTTP POST. Input is untrusted: a body that does not decode
//! is a 400 with the reason, a body over [`codec::MAX_MESSAGE`] a 413, a request from another
//! cluster a 403 — never a panic.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::command::Command;
use crate::error::ClusterError;
use crate::network::{CLUSTER_HEADER, FROM_HEADER};
use crate::node::{AdminRequest, RaftNode};
use crate::TypeConfig;

/// The router of the Raft port.
pub fn router(node: Arc<RaftNode>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/read_index", post(read_index))
        .route("/raft/admin", post(admin))
        .layer(middleware::from_fn_with_state(node.clone(), check_cluster))
        .layer(DefaultBodyLimit::max(codec::MAX_MESSAGE as usize))
        .with_state(node)
}

async fn check_cluster(State(node): State<Arc<RaftNode>>, req: Request, next: Next) -> Response {
    let Some(theirs) = req
        .headers()
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("missing {CLUSTER_HEADER} header"),
        )
            .into_response();
    };
    if let Err(e) = node.adopt_cluster_id(&theirs) {
        return (StatusCode::FORBIDDEN, e).into_response();
    }
    // Requests forwarded by a master that is no longer a member are refused: a removed master
    // takes no writes, even through a leader that still answers it.
    let from = req
        .headers()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(from) = from {
        if !node.knows_member(from) {
            let refusal: Result<(), ClusterError> = Err(ClusterError::Removed);
            let bytes = codec::encode(&refusal).expect("encode a refusal");
            return (StatusCode::OK, bytes).into_response();
        }
    }
    next.run(req).await
}

/// Decodes the request, runs `handler` and encodes its answer; an undecodable body is a 400.
async fn serve_rpc<Req, Resp, Fut>(body: &[u8], handler: impl FnOnce(Req) -> Fut) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Resp>,
{
    let req: Req = match codec::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")).into_response()
        }
    };
    match codec::encode(&handler(req).await) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |req: AppendEntriesRequest<TypeConfig>| {
        node.raft.append_entries(req)
    })
    .await
}

async fn vote(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |req: VoteRequest<u64>| node.raft.vote(req)).await
}

async fn snapshot(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |req: InstallSnapshotRequest<TypeConfig>| {
        node.raft.install_snapshot(req)
    })
    .await
}

async fn write(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    // The forwarding master applies its own deadline; ours only bounds the wait here.
    serve_rpc(&body, |cmd: Command| {
        node.write_local(cmd, Instant::now() + Duration::from_secs(10))
    })
    .await
}

async fn read_index(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |(): ()| node.read_index_local()).await
}

async fn admin(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |req: AdminRequest| node.admin_local(req)).await
}
