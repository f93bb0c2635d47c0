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
use axum::Extension;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::command::Command;
use crate::error::ClusterError;
use crate::network::{CLUSTER_HEADER, FROM_HEADER};
use crate::node::{AdminRequest, RaftNode};
use crate::{NodeId, TypeConfig};

/// Who called, as the transport proved it: the master named by the caller's client
/// certificate, `None` if the certificate names none. The master sets it on every request of a
/// mutual-TLS connection (this crate knows nothing of TLS); it is absent only between plaintext
/// peers (a loopback-only benchmark switch), where nothing is proved and nothing is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<NodeId>);

/// The master the caller proved to be, if its transport proves anything; a refusal otherwise.
fn proven(identity: Option<Extension<PeerIdentity>>) -> Result<Option<NodeId>, Response> {
    match identity {
        None => Ok(None),
        Some(Extension(PeerIdentity(Some(id)))) => Ok(Some(id)),
        Some(Extension(PeerIdentity(None))) => Err((
            StatusCode::FORBIDDEN,
            "the peer certificate names no master: it must carry the DNS name master-<id>",
        )
            .into_response()),
    }
}

/// Refuses an RPC whose sender (the candidate of a vote, the leader of an append or snapshot)
/// is not the master the certificate names: one master's certificate cannot speak for another.
fn check_sender(proven: Option<NodeId>, claimed: Option<NodeId>) -> Result<(), Response> {
    match proven {
        Some(id) if claimed != Some(id) => Err((
            StatusCode::FORBIDDEN,
            format!(
                "the certificate names master {id}, the request speaks for master {}",
                claimed.map_or("none".to_string(), |c| c.to_string())
            ),
        )
            .into_response()),
        _ => Ok(()),
    }
}

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
    let identity = req
        .extensions()
        .get::<PeerIdentity>()
        .copied()
        .map(Extension);
    let caller = match proven(identity) {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let from = req
        .headers()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(from) = from {
        if let Err(refusal) = check_sender(caller, Some(from)) {
            return refusal;
        }
    }
    // A master that is no longer a member is refused, whatever its certificate: it may neither
    // start elections nor lead (its forwarded requests get the `Removed` answer below). Appends
    // and snapshots from a master this one does not know are taken, though: a lagging follower
    // must take them from a leader added after the membership it has seen, and a master about
    // to join knows no membership yet.
    if let Some(id) = caller.filter(|id| from.is_none() && !node.knows_member(*id)) {
        let from_leader = matches!(req.uri().path(), "/raft/append" | "/raft/snapshot");
        if node.store.was_removed(id) || (node.has_membership() && !from_leader) {
            return (
                StatusCode::FORBIDDEN,
                format!("master {id} is not a member of this cluster"),
            )
                .into_response();
        }
    }
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
    if from.is_some_and(|from| !node.knows_member(from)) {
        let refusal: Result<(), ClusterError> = Err(ClusterError::Removed);
        let bytes = codec::encode(&refusal).expect("encode a refusal");
        return (StatusCode::OK, bytes).into_response();
    }
    next.run(req).await
}

/// Decodes the request, runs `handler` and encodes its answer; an undecodable body is a 400, a
/// refusal of `handler` is answered as it is.
async fn serve_rpc<Req, Resp, Fut>(body: &[u8], handler: impl FnOnce(Req) -> Fut) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Result<Resp, Response>>,
{
    let req: Req = match codec::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")).into_response()
        }
    };
    let resp = match handler(req).await {
        Ok(resp) => resp,
        Err(refusal) => return refusal,
    };
    match codec::encode(&resp) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(
    State(node): State<Arc<RaftNode>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    serve_rpc(&body, |req: AppendEntriesRequest<TypeConfig>| async move {
        let claimed = req.vote.leader_id().voted_for();
        check_sender(proven(identity)?, claimed)?;
        Ok(node.raft.append_entries(req).await)
    })
    .await
}

async fn vote(
    State(node): State<Arc<RaftNode>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    serve_rpc(&body, |req: VoteRequest<u64>| async move {
        check_sender(proven(identity)?, req.vote.leader_id().voted_for())?;
        Ok(node.raft.vote(req).await)
    })
    .await
}

async fn snapshot(
    State(node): State<Arc<RaftNode>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    serve_rpc(
        &body,
        |req: InstallSnapshotRequest<TypeConfig>| async move {
            check_sender(proven(identity)?, req.vote.leader_id().voted_for())?;
            Ok(node.raft.install_snapshot(req).await)
        },
    )
    .await
}

async fn write(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    // The forwarding master applies its own deadline; ours only bounds the wait here.
    serve_rpc(&body, |cmd: Command| async move {
        Ok(node
            .write_local(cmd, Instant::now() + Duration::from_secs(10))
            .await)
    })
    .await
}

async fn read_index(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(
        &body,
        |(): ()| async move { Ok(node.read_index_local().await) },
    )
    .await
}

async fn admin(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |req: AdminRequest| async move {
        Ok(node.admin_local(req).await)
    })
    .await
}
