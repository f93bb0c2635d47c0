//! The Raft port: openraft's RPCs and the internal requests followers forward to the leader.
//!
//! Everything here is bincode over HTTP POST. Input is untrusted: a body that does not decode
//! is a 400 with the reason, a body over [`codec::MAX_MESSAGE`] a 413, a request from another
//! cluster a 403 — never a panic. Decoding bounds what a body can make this master do: batches
//! nest at most [`MAX_BATCH_DEPTH`](crate::command::MAX_BATCH_DEPTH) deep, and a snapshot chunk
//! must continue what was received and end within the largest snapshot accepted
//! ([`SnapshotIntake`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
};
use openraft::SnapshotSegmentId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

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
    let intake = Arc::new(Mutex::new(SnapshotIntake::default()));
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route(
            "/raft/snapshot",
            post(
                move |State(node): State<Arc<RaftNode>>,
                      identity: Option<Extension<PeerIdentity>>,
                      body: Bytes| snapshot(node, intake.clone(), identity, body),
            ),
        )
        .route("/raft/write", post(write))
        .route("/raft/read_index", post(read_index))
        .route("/raft/admin", post(admin))
        .route("/raft/campaign", post(campaign))
        .route("/raft/prevote", post(prevote))
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
    match handler(req).await {
        Ok(resp) => answer(&resp),
        Err(refusal) => refusal,
    }
}

/// A 200 carrying the encoded answer.
fn answer<Resp: Serialize>(resp: &Resp) -> Response {
    match codec::encode(resp) {
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
        node.heard_from(&req.vote);
        let started = std::time::Instant::now();
        let answer = node.raft.append_entries(req).await;
        node.metrics
            .append_served_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(answer)
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

/// What this master has received of the snapshot a leader streams to it, kept beside openraft's
/// own record so that every chunk is checked before openraft writes it.
///
/// openraft 0.9 writes a chunk into the `Cursor<Vec<u8>>` at whatever offset the chunk names: it
/// seeks, and only checks that a new stream starts at 0. A cursor written past its end first
/// grows its vector to the offset, so one chunk at offset 2^60 from a peer (hostile, or buggy)
/// would abort this master, and one at a few GiB would take that much memory for nothing. So a
/// chunk must end within the largest snapshot accepted, and must start no further than the data
/// received so far: memory grows only with bytes actually sent.
#[derive(Debug, Default)]
pub struct SnapshotIntake {
    /// The stream being received and how many of its bytes openraft holds. Never more than it
    /// holds: a chunk at 0 resets it before the chunk is handed over (openraft starts, or
    /// rewinds, the stream), and it rises only once openraft has taken a chunk.
    stream: Option<(String, u64)>,
}

/// What to do with a snapshot chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Hand it to openraft.
    Accept,
    /// Not where the stream stands (a gap, or the middle of a stream this master is not
    /// receiving): answer as openraft does, with its `SnapshotMismatch`, and the sender starts
    /// over from offset 0.
    Mismatch { expect: u64 },
    /// It would end beyond the largest snapshot accepted: a 400 with the reason. Starting over
    /// would not help.
    TooLarge(String),
}

impl SnapshotIntake {
    /// Judges a chunk of `len` bytes at `offset` of stream `id`, against a total of `max` bytes.
    pub fn check(&self, id: &str, offset: u64, len: u64, max: u64) -> ChunkVerdict {
        if offset.checked_add(len).is_none_or(|end| end > max) {
            return ChunkVerdict::TooLarge(format!(
                "snapshot chunk of {len} bytes at offset {offset} ends beyond the largest \
                 snapshot this master accepts ({max} bytes, max_snapshot_bytes)"
            ));
        }
        let received = match &self.stream {
            Some((stream, received)) if stream == id => *received,
            _ => 0,
        };
        if offset > received {
            return ChunkVerdict::Mismatch { expect: received };
        }
        ChunkVerdict::Accept
    }

    /// Before an accepted chunk is handed to openraft. A chunk at 0 starts the stream anew: what
    /// was received before no longer counts, even if openraft's answer never comes back.
    fn handing_over(&mut self, id: &str, offset: u64) {
        if offset == 0 {
            self.stream = Some((id.to_string(), 0));
        }
    }

    /// After openraft wrote a chunk ending at `end`; the last one (`done`) ends the stream.
    fn written(&mut self, id: &str, end: u64, done: bool) {
        match &mut self.stream {
            _ if done => self.stream = None,
            Some((stream, received)) if stream == id => *received = (*received).max(end),
            _ => {}
        }
    }
}

async fn snapshot(
    node: Arc<RaftNode>,
    intake: Arc<Mutex<SnapshotIntake>>,
    identity: Option<Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    serve_rpc(
        &body,
        |req: InstallSnapshotRequest<TypeConfig>| async move {
            check_sender(proven(identity)?, req.vote.leader_id().voted_for())?;
            node.heard_from(&req.vote);
            receive_chunk(&node, &intake, req).await
        },
    )
    .await
}

/// openraft's answer to a snapshot chunk.
type ChunkAnswer = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Checks a snapshot chunk against the intake and hands it to openraft if it passes; a chunk
/// past the limit is refused with a 400.
async fn receive_chunk(
    node: &RaftNode,
    intake: &Mutex<SnapshotIntake>,
    req: InstallSnapshotRequest<TypeConfig>,
) -> Result<ChunkAnswer, Response> {
    // openraft takes one chunk at a time anyway; holding the intake across the call keeps it in
    // step with openraft's stream.
    let mut intake = intake.lock().await;
    let id = req.meta.snapshot_id.clone();
    let (offset, len, done) = (req.offset, req.data.len() as u64, req.done);
    match intake.check(&id, offset, len, node.max_snapshot_bytes) {
        ChunkVerdict::Accept => {}
        ChunkVerdict::TooLarge(reason) => {
            tracing::warn!(snapshot = %id, offset, len, "snapshot chunk refused: {reason}");
            node.metrics.snapshot_chunks_refused.inc();
            return Err((StatusCode::BAD_REQUEST, reason).into_response());
        }
        ChunkVerdict::Mismatch { expect } => {
            tracing::warn!(
                snapshot = %id, offset, expect,
                "snapshot chunk refused: it does not continue the data received"
            );
            node.metrics.snapshot_chunks_refused.inc();
            let mismatch = SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: id.clone(),
                    offset: expect,
                },
                got: SnapshotSegmentId { id, offset },
            };
            return Ok(Err(RaftError::APIError(
                InstallSnapshotError::SnapshotMismatch(mismatch),
            )));
        }
    }
    let before = intake.stream.clone();
    let vote = req.vote;
    intake.handing_over(&id, offset);
    let result = node.raft.install_snapshot(req).await;
    match &result {
        // openraft reads a chunk only when the sender's vote is at least its own, the vote it
        // answers with.
        Ok(resp) if vote >= resp.vote => intake.written(&id, offset + len, done),
        Ok(_) => intake.stream = before,
        Err(_) => {}
    }
    Ok(result)
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

/// Another voter asks whether this master, too, has heard from no leader (`prevote.rs`).
async fn prevote(State(node): State<Arc<RaftNode>>, body: Bytes) -> Response {
    serve_rpc(&body, |(): ()| async move { Ok(node.prevote_answer()) }).await
}

/// The leader hands leadership over (`handover.rs`): its FROM header, checked against its
/// certificate by `check_cluster`, names it.
async fn campaign(State(node): State<Arc<RaftNode>>, headers: HeaderMap, body: Bytes) -> Response {
    let from = headers
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    serve_rpc(&body, |(): ()| async move {
        Ok(match from {
            Some(from) => node.campaign(from).await,
            None => Err(ClusterError::Invalid(format!(
                "missing {FROM_HEADER} header"
            ))),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership, Vote};

    use super::*;
    use crate::command::Record;
    use crate::node::NodeConfig;
    use crate::MasterNode;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn chunks_must_continue_the_stream_and_stay_under_the_limit() {
        let max = 4 * GIB;
        let mut intake = SnapshotIntake::default();
        assert_eq!(intake.check("s", 0, 10, max), ChunkVerdict::Accept);
        // Mid-stream of a stream never started: openraft's own answer, start over.
        assert_eq!(
            intake.check("s", 10, 10, max),
            ChunkVerdict::Mismatch { expect: 0 }
        );
        intake.handing_over("s", 0);
        intake.written("s", 10, false);
        // The next chunk, a resend of one already taken, a rewind: all fine.
        assert_eq!(intake.check("s", 10, 10, max), ChunkVerdict::Accept);
        assert_eq!(intake.check("s", 5, 10, max), ChunkVerdict::Accept);
        assert_eq!(intake.check("s", 0, 10, max), ChunkVerdict::Accept);
        // A gap is refused, however small.
        assert_eq!(
            intake.check("s", 11, 10, max),
            ChunkVerdict::Mismatch { expect: 10 }
        );
        // Another stream starts at 0 only.
        assert_eq!(
            intake.check("t", 10, 1, max),
            ChunkVerdict::Mismatch { expect: 0 }
        );
        // Past the limit, or overflowing u64, is refused outright.
        for (offset, len) in [(1 << 60, 1), (max, 1), (max - 1, 2), (u64::MAX, 2)] {
            assert!(
                matches!(
                    intake.check("s", offset, len, max),
                    ChunkVerdict::TooLarge(_)
                ),
                "{offset} + {len}"
            );
        }
        assert_eq!(intake.check("s", 0, max, max), ChunkVerdict::Accept);
        // The last chunk ends the stream.
        intake.written("s", 20, true);
        assert_eq!(
            intake.check("s", 10, 1, max),
            ChunkVerdict::Mismatch { expect: 0 }
        );
    }

    /// A master's Raft port on loopback, plain HTTP, with a snapshot limit of `max` bytes.
    async fn raft_port(dir: &std::path::Path, max: u64) -> (Arc<RaftNode>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = NodeConfig::new(1, dir.to_path_buf(), addr, "http://127.0.0.1:1".into());
        cfg.default_cluster_id = Some("c".into());
        cfg.max_snapshot_bytes = max;
        let node = RaftNode::start(cfg, &prometheus::Registry::new())
            .await
            .unwrap();
        let app = router(node.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (node, format!("http://{addr}/raft/snapshot"))
    }

    type Answer = ChunkAnswer;

    /// Sends one chunk from leader 2 (term 1); the status and, on a 200, the answer.
    async fn send(
        url: &str,
        id: &str,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> (u16, Option<Answer>) {
        let log_id = LogId::new(CommittedLeaderId::new(1, 2), 10);
        let members = BTreeMap::from([(1, MasterNode::default()), (2, MasterNode::default())]);
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 2),
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::new(
                    Some(log_id),
                    Membership::new(vec![BTreeSet::from([1, 2])], members),
                ),
                snapshot_id: id.into(),
            },
            offset,
            data: data.to_vec(),
            done,
        };
        let resp = reqwest::Client::new()
            .post(url)
            .header(crate::network::CLUSTER_HEADER, "c")
            .body(codec::encode(&req).unwrap())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("max_snapshot_bytes"), "{status}: {text}");
            return (status, None);
        }
        (status, Some(codec::decode(&body).unwrap()))
    }

    fn is_mismatch(answer: &Option<Answer>) -> bool {
        matches!(
            answer,
            Some(Err(RaftError::APIError(
                InstallSnapshotError::SnapshotMismatch(_)
            )))
        )
    }

    /// Peak resident memory of this test process, from /proc.
    fn peak_rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    #[tokio::test]
    async fn absurd_snapshot_offsets_are_refused_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let (node, url) = raft_port(dir.path(), 4 * GIB).await;
        let (status, answer) = send(&url, "s1", 0, b"abc", false).await;
        assert_eq!(status, 200);
        assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
        // Before the intake, openraft would seek there and the cursor would grow its vector to
        // 2^60 bytes: an allocation failure, and the process aborts.
        assert_eq!(send(&url, "s1", 1 << 60, b"x", false).await.0, 400);
        assert_eq!(send(&url, "s1", u64::MAX, b"xy", false).await.0, 400);
        // Within the limit but far past the data received: 3 GiB of zeroes for nothing.
        let (status, answer) = send(&url, "s1", 3 * GIB, b"x", false).await;
        assert_eq!(status, 200);
        assert!(is_mismatch(&answer), "{answer:?}");
        // The middle of a stream this master never started.
        assert!(is_mismatch(&send(&url, "s2", 5, b"x", false).await.1));
        assert!(
            peak_rss_bytes() < GIB,
            "peak memory {} bytes",
            peak_rss_bytes()
        );
        assert_eq!(node.metrics.snapshot_chunks_refused.get(), 4);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_snapshot_in_chunks_is_still_installed() {
        let dir = tempfile::tempdir().unwrap();
        let (node, url) = raft_port(dir.path(), 4 * GIB).await;
        let record = Record {
            value: bytes::Bytes::from(vec![b'v'; 3000]),
            create_rv: 7,
            mod_rv: 9,
        };
        let data = codec::encode(&vec![("k".to_string(), record.clone())]).unwrap();
        let (a, rest) = data.split_at(1000);
        let (b, c) = rest.split_at(1000);
        for (offset, chunk, done) in [
            (0, a, false),
            (1000, b, false),
            // A resend of a chunk already taken (its answer was lost).
            (1000, b, false),
            (2000, c, true),
        ] {
            let (status, answer) = send(&url, "s1", offset, chunk, done).await;
            assert_eq!(status, 200);
            assert!(
                matches!(answer, Some(Ok(_))),
                "chunk at {offset}: {answer:?}"
            );
        }
        assert_eq!(
            node.get("k"),
            (Some(record), crate::revision::through_entry(10))
        );
        assert_eq!(
            node.store
                .snapshot_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            data.len() as u64
        );
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (node, url) = raft_port(dir.path(), 1500).await;
        assert_eq!(send(&url, "s1", 0, &[0; 1000], false).await.0, 200);
        assert_eq!(send(&url, "s1", 1000, &[0; 1000], false).await.0, 400);
        assert_eq!(node.get("k").0, None);
        node.shutdown().await;
    }
}
