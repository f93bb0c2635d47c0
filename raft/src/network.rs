//! Raft RPCs between masters: HTTP POSTs with bincode bodies over pooled connections.
//!
//! Every request carries the cluster id, so that a master of another cluster refuses it.
//! Between masters the port speaks TLS with client certificates ([`PeerTls`]): each side proves
//! it holds a certificate of the cluster's CA before a byte of HTTP is exchanged.
//! Errors are mapped so that openraft backs off from a peer that is down or paused
//! ([`Unreachable`]) instead of spinning on it. Outgoing connections are bound to the master's
//! own address, so that packet filters between master addresses cut Raft traffic for real.

use std::net::IpAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Entry};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::{MasterNode, NodeId, TypeConfig};

/// Header carrying the cluster id on every internal request.
pub const CLUSTER_HEADER: &str = "x-keelson-cluster";
/// Header naming the master that forwards a write, read index or membership request.
pub const FROM_HEADER: &str = "x-keelson-from";

/// The client side of peer mTLS, as PEM: this master's certificate and key, and the CA that
/// signs every master's certificate (the only root trusted on the Raft port).
///
/// Kept as PEM so that this crate needs no TLS types of its own: the master loads the files,
/// and the server side (a rustls `ServerConfig` that requires client certificates) stays with it.
#[derive(Clone)]
pub struct PeerTls {
    /// The certificate (chain) followed by its private key (PKCS#8), PEM.
    pub identity_pem: Vec<u8>,
    /// The peer CA's certificate, PEM.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.write_str("PeerTls { .. }")
    }
}

/// Builds the HTTP client used between masters: over TLS with this master's certificate when
/// `tls` is given (URLs are then `https://`), plain HTTP otherwise (loopback benches only).
pub fn http_client(
    local: Option<IpAddr>,
    tls: Option<&PeerTls>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        // Every connection a burst opened stays for the next one: a master forwards up to its
        // API's write limit (200 by default) at once, and closing the connections beyond a
        // small idle pool made every burst pay new TLS handshakes (a third of the cluster's CPU
        // at 256 writers, in perf).
        .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500));
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    if let Some(tls) = tls {
        let identity = reqwest::Identity::from_pem(&tls.identity_pem)
            .map_err(|e| format!("peer certificate and key: {e}"))?;
        let ca = reqwest::Certificate::from_pem(&tls.ca_pem)
            .map_err(|e| format!("peer CA certificate: {e}"))?;
        // Only the cluster's CA: a certificate from a public CA names no master.
        b = b
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .https_only(true);
    }
    b.build()
        .map_err(|e| format!("build the peer HTTP client: {e}"))
}

/// Idle connections kept to each peer.
const MAX_IDLE_PER_PEER: usize = 512;

/// `https` when the Raft port speaks TLS, `http` otherwise.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// Creates one [`Connection`] per peer.
#[derive(Clone)]
pub struct Network {
    pub client: reqwest::Client,
    /// `https` (peer mTLS) or `http`.
    pub scheme: &'static str,
    pub cluster_id: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    /// `keelson_raft_peer_round_trip_seconds`.
    pub round_trip: prometheus::HistogramVec,
}

/// The connection to one peer.
pub struct Connection {
    target: NodeId,
    base: String,
    client: reqwest::Client,
    cluster_id: Option<String>,
    round_trip: prometheus::HistogramVec,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &MasterNode) -> Connection {
        Connection {
            target,
            base: format!("{}://{}/raft", self.scheme, node.raft),
            client: self.client.clone(),
            cluster_id: self.cluster_id.read().expect("cluster id lock").clone(),
            round_trip: self.round_trip.clone(),
        }
    }
}

/// Why an internal call failed, before the remote answered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection could not be made: the request certainly had no effect.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The request may have been delivered, but no usable answer came back.
    #[error("no answer from {0}: {1}")]
    Lost(String, String),
    /// The peer refused the request (wrong cluster, malformed, too large).
    #[error("refused by {0}: {1}")]
    Refused(String, String),
}

/// Largest answer to openraft's RPCs (append, vote, snapshot) decoded. Their answers are a few
/// dozen bytes; only an error can be long, and openraft's `AnyError` nests its sources, so a
/// long one could be nested deeply enough to overflow the decoding stack (a fuzzing finding,
/// docs/fuzzing.md). 8 KiB holds at most 2,730 levels, half of what overflows a 2 MiB stack.
pub const MAX_RPC_ANSWER: usize = 8 * 1024;

/// Most bytes of entries one AppendEntries carries (one larger entry goes alone; entries are at
/// most `command::MAX_ENTRY_BYTES`).
pub const MAX_APPEND_BYTES: u64 = 1024 * 1024;

/// How many of `entries`, from the first, fit in `max_bytes` encoded: at least one.
fn entries_within(entries: &[Entry<TypeConfig>], max_bytes: u64) -> usize {
    let mut total = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        total = total.saturating_add(codec::encoded_size(entry).unwrap_or(u64::MAX));
        if total > max_bytes {
            return i.max(1);
        }
    }
    entries.len()
}

/// POSTs a bincode-encoded `req` to `url` and decodes the bincode answer.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    cluster_id: Option<&str>,
    from: Option<u64>,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    call_limited(client, url, cluster_id, from, req, timeout, usize::MAX).await
}

/// [`call`], with answers over `max_answer` bytes refused undecoded.
async fn call_limited<Req: Serialize, Resp: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    cluster_id: Option<&str>,
    from: Option<u64>,
    req: &Req,
    timeout: Duration,
    max_answer: usize,
) -> Result<Resp, CallError> {
    let body = codec::encode(req).map_err(|e| CallError::Refused(url.into(), e.to_string()))?;
    send_encoded(client, url, cluster_id, from, body, timeout, max_answer).await
}

/// [`call_limited`] of a request already encoded.
async fn send_encoded<Resp: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    cluster_id: Option<&str>,
    from: Option<u64>,
    body: Vec<u8>,
    timeout: Duration,
    max_answer: usize,
) -> Result<Resp, CallError> {
    let mut builder = client.post(url).timeout(timeout).body(body);
    if let Some(id) = cluster_id {
        builder = builder.header(CLUSTER_HEADER, id);
    }
    if let Some(from) = from {
        builder = builder.header(FROM_HEADER, from.to_string());
    }
    let resp = builder.send().await.map_err(|e| {
        if e.is_connect() {
            CallError::Connect(url.into(), e.to_string())
        } else {
            CallError::Lost(url.into(), e.to_string())
        }
    })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| CallError::Lost(url.into(), e.to_string()))?;
    if !status.is_success() {
        return Err(CallError::Refused(
            url.into(),
            format!("{status}: {}", String::from_utf8_lossy(&bytes)),
        ));
    }
    if bytes.len() > max_answer {
        return Err(CallError::Lost(
            url.into(),
            format!(
                "an answer of {} bytes, over the {max_answer} expected",
                bytes.len()
            ),
        ));
    }
    codec::decode(&bytes)
        .map_err(|e| CallError::Lost(url.into(), format!("undecodable answer: {e}")))
}

/// How long an append or a vote keeps going after openraft stopped waiting for its answer
/// (openraft 0.9 waits one heartbeat interval for an append). Delivered late, an append still
/// refreshes the follower's lease and lands its entries; cancelled, it would leave a follower
/// on a loaded machine hearing nothing until it campaigns. Bounded, so a paused peer holds at
/// most this many seconds of requests.
const DELIVER_WITHIN: Duration = Duration::from_secs(1);

/// Whether an RPC outlives openraft's wait for it ([`DELIVER_WITHIN`]).
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// Sent on a task of its own, which finishes however long openraft waits: appends and
    /// votes, which a peer may take in any order.
    Detached,
    /// Cancelled with openraft's wait: snapshot chunks, which must arrive in order.
    Awaited,
}

impl Connection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
        delivery: Delivery,
    ) -> Result<Resp, RPCError<NodeId, MasterNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned + Send + 'static,
        E: std::error::Error + DeserializeOwned + Send + 'static,
    {
        let url = format!("{}/{}", self.base, path);
        let (client, cluster_id) = (self.client.clone(), self.cluster_id.clone());
        let timeout = match delivery {
            Delivery::Detached => option.hard_ttl().max(DELIVER_WITHIN),
            Delivery::Awaited => option.hard_ttl(),
        };
        let started = std::time::Instant::now();
        let sent = match codec::encode(req) {
            Err(e) => Err(CallError::Refused(url, e.to_string())),
            Ok(body) => {
                let send = async move {
                    send_encoded::<Result<Resp, RaftError<NodeId, E>>>(
                        &client,
                        &url,
                        cluster_id.as_deref(),
                        None,
                        body,
                        timeout,
                        MAX_RPC_ANSWER,
                    )
                    .await
                };
                match delivery {
                    // A spawned task is not cancelled when openraft drops this future.
                    Delivery::Detached => tokio::spawn(send)
                        .await
                        .unwrap_or_else(|e| Err(CallError::Lost(self.base.clone(), e.to_string()))),
                    Delivery::Awaited => send.await,
                }
            }
        };
        if sent.is_ok() {
            self.round_trip
                .with_label_values(&[path])
                .observe(started.elapsed().as_secs_f64());
        }
        let answer: Result<Resp, RaftError<NodeId, E>> = sent.map_err(|e| match e {
            // Down, paused or refusing: let openraft back off rather than spin.
            CallError::Connect(..) | CallError::Refused(..) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            CallError::Lost(..) => RPCError::Network(NetworkError::new(&AnyError::new(&e))),
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>>
    {
        // A long run of entries goes in pieces of at most MAX_APPEND_BYTES, each answered
        // `PartialSuccess` up to its last entry: openraft sends the rest next. No append takes
        // long enough to miss its timeout (the heartbeat interval), and a heartbeat waits
        // behind one piece at most.
        let keep = entries_within(&rpc.entries, MAX_APPEND_BYTES);
        if keep == rpc.entries.len() {
            return self.rpc("append", &rpc, &option, Delivery::Detached).await;
        }
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|e| e.log_id);
        match self
            .rpc("append", &rpc, &option, Delivery::Detached)
            .await?
        {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MasterNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("snapshot", &rpc, &option, Delivery::Awaited).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>> {
        self.rpc("vote", &rpc, &option, Delivery::Detached).await
    }

    fn backoff(&self) -> Backoff {
        // Short enough that a restarted master is found again quickly.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
