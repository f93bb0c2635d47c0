//! [`RaftNode`]: one master's consensus facade.
//!
//! Any master takes any request: a write on a follower is forwarded to the leader over the Raft
//! port and its answer returned as if local; a linearizable read asks the leader for its read
//! index (openraft's `get_read_log_id`, which confirms leadership with a quorum) and waits until
//! the local replica has applied that far.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::Serialize;

use crate::command::{
    self, Command, CommandResponse, OpResult, Record, MAX_ENTRY_BYTES, PACKED_ENTRY_BYTES,
};
use crate::error::ClusterError;
use crate::failure::Failure;
use crate::feed::{Expired, Subscription, WindowLimits};
use crate::gate::{Tenure, WriteGate};
use crate::metrics::RaftMetrics;
use crate::network::{call, http_client, scheme, CallError, Network, PeerTls};
use crate::prevote::PreVote;
use crate::proposer::{write_error, Proposer};
use crate::runtime::{OwnedRuntime, RAFT_THREADS};
use crate::store::{self, LogStore, OpenError, Shared, StateMachine};
use crate::{codec, MasterNode, NodeId, Raft};

/// Default of [`NodeConfig::max_snapshot_bytes`]: 4 GiB, twice etcd's default backend quota.
/// keelson holds its whole state in memory, so a larger snapshot is not a cluster it can run.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// A command one log entry can hold: its encoded size and number of operations.
#[derive(Clone, Copy)]
struct Checked {
    size: u64,
    ops: usize,
}

/// Refuses a command one log entry cannot hold ([`Command::check_bounds`], and over
/// [`MAX_ENTRY_BYTES`] encoded).
fn check_entry(cmd: &Command) -> Result<Checked, ClusterError> {
    // Before sizing: that recursion, too, is only safe at an accepted depth.
    let ops = cmd.check_bounds().map_err(ClusterError::Invalid)?;
    let size = codec::encoded_size(cmd).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    if size > MAX_ENTRY_BYTES {
        return Err(ClusterError::Invalid(format!(
            "a command of {size} bytes is over the {MAX_ENTRY_BYTES} bytes a log entry may hold"
        )));
    }
    Ok(Checked { size, ops })
}

/// How one master runs its Raft member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    /// `http://HOST:PORT` of this master's API.
    pub api_url: String,
    /// The cluster this master belongs to; `None` for a joining master, which learns it from
    /// the leader's first request.
    pub cluster_id: Option<String>,
    /// The cluster id recorded when neither the data directory nor `cluster_id` has one (a
    /// master creating a cluster).
    pub default_cluster_id: Option<String>,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many applied entries, once the log since the last one holds
    /// a quarter of its size (`snapshot_policy.rs`).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (for followers slightly behind).
    pub keep_logs: u64,
    /// How long a write or linearizable read may wait for a leader and a quorum.
    pub request_timeout: Duration,
    /// Events kept for watches to resume from.
    pub feed_window: usize,
    /// Bytes (keys, values and previous values) kept for watches to resume from; the window
    /// drops its oldest entries when either bound is passed.
    pub feed_window_bytes: usize,
    /// Largest snapshot this master accepts from a leader (and expects to send): a chunk that
    /// would end beyond it is refused before any memory is reserved for it. The same on every
    /// master of a cluster.
    pub max_snapshot_bytes: u64,
    /// This master's side of peer mTLS; `None` speaks plain HTTP to peers (loopback benches).
    pub peer_tls: Option<PeerTls>,
    /// The space quota of this master's database (`quota.rs`); 0: none.
    pub quota_backend_bytes: u64,
}

/// Default space quota: 2 GiB, etcd's.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;
/// Default Raft heartbeat interval, in milliseconds; also how long the leader waits for an
/// append's answer.
pub const DEFAULT_HEARTBEAT_MS: u64 = 20;
/// Default election timeout range, in milliseconds: a follower that stops hearing from its
/// leader campaigns after the maximum (the leader's lease) plus a random time in the range.
pub const DEFAULT_ELECTION_MS: (u64, u64) = (60, 120);

/// An election timeout range as a flag takes it (`keelson master --election-timeout-ms`, and
/// the bench's `--raft-election-ms`): `MIN-MAX` milliseconds, with 0 < MIN < MAX; its default
/// is [`DEFAULT_ELECTION_MS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTimeout {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Default for ElectionTimeout {
    fn default() -> Self {
        let (min_ms, max_ms) = DEFAULT_ELECTION_MS;
        ElectionTimeout { min_ms, max_ms }
    }
}

impl std::str::FromStr for ElectionTimeout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |n: &str| {
            n.trim()
                .parse::<u64>()
                .map_err(|e| format!("{s}: {e} (expected MIN-MAX milliseconds)"))
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s}: expected MIN-MAX milliseconds"))?;
        let (min_ms, max_ms) = (parse(a)?, parse(b)?);
        if min_ms == 0 || max_ms <= min_ms {
            return Err(format!("{s}: need 0 < MIN < MAX"));
        }
        Ok(ElectionTimeout { min_ms, max_ms })
    }
}

impl std::fmt::Display for ElectionTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min_ms, self.max_ms)
    }
}

impl NodeConfig {
    /// Defaults for everything but identity and addresses.
    pub fn new(id: NodeId, data_dir: PathBuf, raft_addr: SocketAddr, api_url: String) -> Self {
        NodeConfig {
            id,
            data_dir,
            raft_addr,
            api_url,
            cluster_id: None,
            default_cluster_id: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_min_ms: DEFAULT_ELECTION_MS.0,
            election_max_ms: DEFAULT_ELECTION_MS.1,
            snapshot_every: 10_000,
            keep_logs: 1_000,
            request_timeout: Duration::from_secs(10),
            feed_window: WindowLimits::default().events,
            feed_window_bytes: WindowLimits::default().bytes,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            peer_tls: None,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
        }
    }
}

/// What `admin` takes and answers, at the path the master and `ctl` have always used.
pub use crate::message::{AdminRequest, NodeStatus};

/// Why a master could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// One master's Raft member and its store.
pub struct RaftNode {
    pub id: NodeId,
    pub raft: Raft,
    pub store: Arc<Shared>,
    pub metrics: RaftMetrics,
    pub cluster_id: Arc<RwLock<Option<String>>>,
    db: Arc<rocksdb::DB>,
    pub(crate) client: reqwest::Client,
    pub(crate) scheme: &'static str,
    request_timeout: Duration,
    data_dir: PathBuf,
    /// Largest snapshot accepted from a leader ([`NodeConfig::max_snapshot_bytes`]).
    pub max_snapshot_bytes: u64,
    /// Groups this master's proposals into entries.
    proposer: Proposer,
    /// Closed while leadership is handed over (`handover.rs`).
    pub(crate) gate: WriteGate,
    /// Since when this master leads (`handover.rs`).
    pub(crate) tenure: Tenure,
    /// When a leader last reached this master; elections wait for a majority (`prevote.rs`).
    pub(crate) prevote: PreVote,
    /// Raft's own threads: dropped (stopping its tasks) with the node.
    runtime: OwnedRuntime,
    /// Why this master's storage stopped, once it has (`failure.rs`).
    failure: tokio::sync::watch::Sender<Option<Failure>>,
}

impl RaftNode {
    /// Opens the data directory (checking that it belongs to this master and cluster) and
    /// starts the Raft member without the tasks that watch it ([`RaftNode::start`] adds them);
    /// also returns the counter of bytes the log has taken.
    pub(crate) async fn open(
        cfg: NodeConfig,
        registry: &prometheus::Registry,
    ) -> Result<(Arc<Self>, Arc<AtomicU64>), StartError> {
        // Private to its owner: it holds every object of the cluster.
        let private = std::fs::create_dir_all(&cfg.data_dir).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
        });
        private.map_err(|e| {
            StartError::Config(format!("cannot create {}: {e}", cfg.data_dir.display()))
        })?;
        let db = store::open_db(&cfg.data_dir)?;
        let cluster_id =
            store::check_identity(&db, &cfg.data_dir, cfg.id, cfg.cluster_id.as_deref())?;
        // A master creating a cluster without an explicit id records the derived one.
        let cluster_id = match (cluster_id, &cfg.default_cluster_id) {
            (None, Some(default)) => {
                store::record_cluster_id(&db, default).map_err(|e| {
                    StartError::Config(format!("cannot record the cluster id: {e}"))
                })?;
                Some(default.clone())
            }
            (id, _) => id,
        };
        let window = WindowLimits {
            events: cfg.feed_window,
            bytes: cfg.feed_window_bytes,
        };
        let sm = StateMachine::open(db.clone(), &cfg.data_dir, window)?;
        let log = LogStore::new(db.clone());
        let appended = log.appended_bytes();
        let shared = sm.shared.clone();

        let config = Config {
            cluster_name: "keelson".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_min_ms,
            election_timeout_max: cfg.election_max_ms,
            // Ours, in snapshot_policy.rs: it weighs the snapshot's size too.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            // Small AppendEntries so that a slow fsync never turns a heartbeat into a timeout.
            max_payload_entries: 256,
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let cluster_id = Arc::new(RwLock::new(cluster_id));
        // Two clients, so that replication's connections live on the Raft runtime and
        // forwarded requests' on the API's.
        let client_for = |what| {
            http_client(Some(cfg.raft_addr.ip()), cfg.peer_tls.as_ref())
                .map_err(|e| StartError::Config(format!("{what}: {e}")))
        };
        let client = client_for("forwarding client")?;
        let scheme = scheme(cfg.peer_tls.is_some());
        let metrics = RaftMetrics::register(registry);
        let network = Network {
            client: client_for("replication client")?,
            scheme,
            cluster_id: cluster_id.clone(),
            round_trip: metrics.peer_round_trip_seconds.clone(),
        };
        let runtime = OwnedRuntime::new("raft", RAFT_THREADS)
            .map_err(|e| StartError::Raft(format!("cannot start Raft's threads: {e}")))?;
        // openraft spawns its tasks where it is created.
        let raft = runtime
            .handle()
            .spawn(Raft::new(cfg.id, config, network, log, sm))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let proposer = Proposer::start(raft.clone(), runtime.handle());
        let node = Arc::new(RaftNode {
            id: cfg.id,
            proposer,
            raft,
            store: shared,
            metrics,
            cluster_id,
            db,
            client,
            scheme,
            request_timeout: cfg.request_timeout,
            data_dir: cfg.data_dir,
            max_snapshot_bytes: cfg.max_snapshot_bytes,
            gate: WriteGate::default(),
            tenure: Tenure::default(),
            prevote: PreVote::new(Duration::from_millis(cfg.election_min_ms)),
            runtime,
            failure: tokio::sync::watch::Sender::new(None),
        });
        tokio::spawn(export_metrics(node.clone()));
        Ok((node, appended))
    }

    /// Initializes a new cluster with `members` unless this master already holds Raft state.
    /// Returns true when it initialized. Every initial master may call this with the same set.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, MasterNode>,
    ) -> Result<bool, ClusterError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Fatal(e.to_string()))?
        {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Another initial master's leader already reached us: nothing to do.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(ClusterError::Fatal(e.to_string())),
        }
    }

    /// The cluster id this master belongs to, once known.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().expect("cluster id lock").clone()
    }

    /// Adopts the cluster id of the leader that first contacts a joining master.
    ///
    /// Only reachable from the Raft port's router, which a caller reaches only after the mTLS
    /// handshake: the caller holds a certificate of the cluster's CA. The refusal names neither
    /// id, so that a caller learns nothing by guessing.
    pub fn adopt_cluster_id(&self, id: &str) -> Result<(), String> {
        let mut slot = self.cluster_id.write().expect("cluster id lock");
        match slot.as_deref() {
            Some(mine) if mine == id => Ok(()),
            Some(_) => Err("this master belongs to another cluster".to_string()),
            None => {
                store::record_cluster_id(&self.db, id).map_err(|e| e.to_string())?;
                *slot = Some(id.to_string());
                Ok(())
            }
        }
    }

    /// The leader this master knows of.
    pub fn leader(&self) -> Option<(NodeId, MasterNode)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, node))
    }

    /// True while this master is a member (voter or learner) of the cluster, or not yet
    /// initialized.
    pub fn is_member(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership.nodes().next().is_none() || membership.get_node(&self.id).is_some()
    }

    /// True once this master knows a membership: it was initialized, or has joined.
    pub fn has_membership(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some()
    }

    /// `/raft/{route}` on the Raft port of member `id`, when this master knows it.
    pub(crate) fn peer_url(&self, id: NodeId, route: &str) -> Option<String> {
        let node = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()?;
        Some(format!("{}://{}/raft/{route}", self.scheme, node.raft))
    }

    /// True when master `id` is in the membership this master knows.
    pub fn knows_member(&self, id: NodeId) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// Proposes `cmd` through Raft, forwarding it to the leader when this master is not the
    /// leader, and returns once it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<CommandResponse, ClusterError> {
        let checked = check_entry(&cmd)?;
        let deadline = Instant::now() + self.request_timeout;
        self.until_leader(deadline, |leader| {
            let cmd = cmd.clone();
            async move {
                match leader {
                    None => self.propose(cmd, checked, deadline).await,
                    Some(node) => {
                        self.metrics.proposals_forwarded.inc();
                        self.forward(&node, "write", &cmd, deadline).await
                    }
                }
            }
        })
        .await
    }

    /// Writes many operations, in order, in as few log entries as their size allows
    /// ([`command::pack`]: up to 512 KiB each), one entry after another, and returns every
    /// operation's result in order. Not atomic, as a `Batch` is not: on an error the entries
    /// before it are applied and the rest are not written; callers recompute from the state.
    /// Bounded entries keep the quorum live under any burst: no append grows so large that a
    /// heartbeat behind it misses its timeout.
    pub async fn write_batch(&self, ops: Vec<Command>) -> Result<Vec<OpResult>, ClusterError> {
        let mut results = Vec::with_capacity(ops.len());
        for entry in command::pack(ops, PACKED_ENTRY_BYTES) {
            results.extend(self.write(entry).await?.results);
        }
        Ok(results)
    }

    /// [`RaftNode::write_batch`] for the leader's own control loops, fenced by their tenure:
    /// each entry is proposed on this master only while it leads in `term` (never forwarded:
    /// `NotLeader` otherwise), and its result is awaited however long that takes — no deadline
    /// turns it into `Indeterminate`. Within one term a proposal's entry is either committed
    /// and applied here, or the term ends (openraft then answers it); so a loop that runs its
    /// passes one after another never starts a pass while one of its writes could still land,
    /// and a pass of a later tenure starts only after the read barrier that settles them all.
    /// This is what Kubernetes' replication manager keeps expectations for.
    pub async fn write_batch_in_term(
        &self,
        term: u64,
        ops: Vec<Command>,
    ) -> Result<Vec<OpResult>, ClusterError> {
        let mut results = Vec::with_capacity(ops.len());
        for entry in command::pack(ops, PACKED_ENTRY_BYTES) {
            let checked = check_entry(&entry)?;
            let leads = {
                let m = self.raft.metrics();
                let m = m.borrow();
                m.state == ServerState::Leader && m.current_term == term
            };
            if !leads || !self.is_member() {
                return Err(ClusterError::NotLeader {
                    leader: self.leader(),
                });
            }
            let Some(_pass) = self.gate.enter() else {
                return Err(ClusterError::NoQuorum);
            };
            self.metrics.proposals.inc();
            let start = Instant::now();
            let response = self
                .proposer
                .propose(entry, checked.size, checked.ops)
                .await?;
            self.metrics
                .proposal_seconds
                .observe(start.elapsed().as_secs_f64());
            results.extend(response.results);
        }
        Ok(results)
    }

    /// The term and whether this master leads it, woken only when one of them changes:
    /// cheaper to wait on than openraft's metrics, which change with every replication ack.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<(u64, bool)> {
        self.tenure.changes()
    }

    /// The current term and whether this master is its leader.
    pub fn term(&self) -> (u64, bool) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.state == ServerState::Leader)
    }

    /// Proposes `cmd`, forwarded by another master, on this master, which must be the leader.
    pub async fn write_local(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<CommandResponse, ClusterError> {
        // Every entry appended must decode on every follower (and on restart), and stay small.
        let checked = check_entry(&cmd)?;
        self.propose(cmd, checked, deadline).await
    }

    /// Proposes a checked command on this master, which must be the leader.
    async fn propose(
        &self,
        cmd: Command,
        checked: Checked,
        deadline: Instant,
    ) -> Result<CommandResponse, ClusterError> {
        if !self.is_member() {
            return Err(ClusterError::Removed);
        }
        // Closed while leadership is handed over: the write goes to the next leader.
        let Some(_pass) = self.gate.enter() else {
            return Err(ClusterError::NoQuorum);
        };
        self.metrics.proposals.inc();
        let start = Instant::now();
        let remaining = deadline.saturating_duration_since(start);
        // Grouped with concurrent writes into one entry (proposer.rs).
        let result = match tokio::time::timeout(
            remaining,
            self.proposer.propose(cmd, checked.size, checked.ops),
        )
        .await
        {
            Err(_) => Err(ClusterError::Indeterminate(
                "the write was proposed but not committed in time".into(),
            )),
            Ok(result) => result,
        };
        match &result {
            Ok(_) => self
                .metrics
                .proposal_seconds
                .observe(start.elapsed().as_secs_f64()),
            Err(ClusterError::NotLeader { .. }) => {}
            Err(_) => self.metrics.proposals_failed.inc(),
        }
        result
    }

    /// Makes the next reads linearizable: returns once this replica has applied everything
    /// committed before the call. Forwarded to the leader for its read index when needed.
    pub async fn read_barrier(&self) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + self.request_timeout;
        let index: u64 = self
            .until_leader(deadline, |leader| async move {
                match leader {
                    None => self.read_index_local().await,
                    Some(node) => self.forward(&node, "read_index", &(), deadline).await,
                }
            })
            .await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|e| ClusterError::Indeterminate(format!("replica did not catch up: {e}")))?;
        Ok(index)
    }

    /// The leader's read index, confirmed by a quorum. Fails with `NotLeader` on a follower.
    pub async fn read_index_local(&self) -> Result<u64, ClusterError> {
        if !self.is_member() {
            return Err(ClusterError::Removed);
        }
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ClusterError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(ClusterError::NoQuorum)
            }
            Err(RaftError::Fatal(e)) => Err(ClusterError::Fatal(e.to_string())),
        }
    }

    /// Adds (`AddMaster`) or removes (`RemoveMaster`) a master, on the leader.
    pub async fn admin(&self, req: AdminRequest) -> Result<NodeStatus, ClusterError> {
        let deadline = Instant::now() + self.request_timeout.max(Duration::from_secs(60));
        self.until_leader(deadline, |leader| {
            let req = req.clone();
            async move {
                match leader {
                    None => self.admin_local(req).await,
                    Some(node) => self.forward(&node, "admin", &req, deadline).await,
                }
            }
        })
        .await
    }

    /// Runs a membership change on this master, which must be the leader.
    pub async fn admin_local(&self, req: AdminRequest) -> Result<NodeStatus, ClusterError> {
        let map = write_error;
        match req {
            AdminRequest::AddMaster { id, node } => {
                // As a learner first (blocking until it has caught up), then as a voter.
                self.raft.add_learner(id, node, true).await.map_err(map)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(map)?;
            }
            AdminRequest::RemoveMaster { id } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(map)?;
            }
        }
        Ok(self.status())
    }

    /// Runs `op` on the leader: locally (`None`) when this master leads, else with the leader's
    /// address; retries while the leader is unknown or moves, until `deadline`.
    async fn until_leader<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, ClusterError>
    where
        F: Fn(Option<MasterNode>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let mut metrics = self.raft.metrics();
        loop {
            if !self.is_member() {
                return Err(ClusterError::Removed);
            }
            let target = match self.leader() {
                Some((id, _)) if id == self.id => Some(None),
                Some((_, node)) => Some(Some(node)),
                None => None,
            };
            if let Some(target) = target {
                match op(target).await {
                    Err(e) if e.is_retryable() => {}
                    other => return other,
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClusterError::NoQuorum);
            }
            // Wait for news about the leader, but poll at least every 50 ms.
            let pause = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    async fn forward<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        leader: &MasterNode,
        path: &str,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, ClusterError> {
        let url = format!("{}://{}/raft/{}", self.scheme, leader.raft, path);
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let cluster = self.cluster_id();
        let call = call::<Req, Result<Resp, ClusterError>>(
            &self.client,
            &url,
            cluster.as_deref(),
            Some(self.id),
            req,
            timeout,
        );
        // Resolves when this master learns of another leader: a request still in flight to the
        // old one (paused or cut off) is then given up at once instead of at its deadline.
        let mut metrics = self.raft.metrics();
        let moved = async {
            loop {
                if metrics.changed().await.is_err() {
                    return futures::future::pending::<()>().await;
                }
                if self.leader().is_some_and(|(_, n)| n.raft != leader.raft) {
                    return;
                }
            }
        };
        tokio::select! {
            result = call => match result {
                Ok(answer) => answer,
                // Never reached the leader: nothing happened, try again with the next leader.
                Err(CallError::Connect(..)) => Err(ClusterError::NoQuorum),
                Err(e) => Err(ClusterError::Indeterminate(e.to_string())),
            },
            _ = moved => Err(if path == "read_index" {
                // A read has no effect: retry it with the new leader.
                ClusterError::NoQuorum
            } else {
                ClusterError::Indeterminate("the leader changed while the request was in flight".into())
            }),
        }
    }

    /// Reads one record from this replica (call [`RaftNode::read_barrier`] first for a
    /// linearizable read).
    pub fn get(&self, key: &str) -> (Option<Record>, u64) {
        self.store.get(key)
    }

    /// Lists records under `prefix` from this replica.
    pub fn list(&self, prefix: &str) -> (Vec<(String, Record)>, u64) {
        self.store.list(prefix)
    }

    /// Subscribes to changes after resource version `from`.
    pub fn watch(&self, from: u64) -> Result<Subscription, Expired> {
        self.store.feed.subscribe(from)
    }

    /// This master's view of itself and the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let members = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        // Raft stopped (storage failed): it neither leads nor follows anyone.
        let stopped = m.running_state.is_err();
        NodeStatus {
            id: self.id,
            cluster_id: self.cluster_id(),
            state: match stopped {
                true => "Stopped".into(),
                false => format!("{:?}", m.state),
            },
            term: m.current_term,
            leader: m.current_leader.filter(|_| !stopped),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            voters,
            learners,
            members,
        }
    }

    /// Why this master's storage stopped, if it has: it then serves nothing (`failure.rs`).
    pub fn storage_failure(&self) -> Option<Failure> {
        self.failure.borrow().clone()
    }

    /// Records why this master's storage stopped (`storage_watch.rs`).
    pub(crate) fn record_failure(&self, failure: Failure) {
        self.failure.send_replace(Some(failure));
    }

    /// Changes to [`RaftNode::storage_failure`].
    pub fn storage_failures(&self) -> tokio::sync::watch::Receiver<Option<Failure>> {
        self.failure.subscribe()
    }

    /// The clusters this one was restored from, newest first (`keelson snapshot restore`).
    pub fn restored_from(&self) -> Vec<String> {
        store::restored_from(&self.db)
    }

    /// The size of this master's database in bytes (its SST files and memtables).
    pub fn db_size_bytes(&self) -> u64 {
        store::db_size(&self.db)
    }

    /// True when this master knows a leader and has applied what it has in its log: the
    /// readiness check.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        m.current_leader.is_some()
            && m.last_log_index.unwrap_or(0) <= applied + 1000
            && self.is_member()
            && self.failure.borrow().is_none()
    }

    /// Raft's own runtime, for the Raft port's server.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Stops Raft; the store is closed when the last handle is dropped.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Keeps the Prometheus gauges in step with openraft's metrics.
async fn export_metrics(node: Arc<RaftNode>) {
    let mut rx = node.raft.metrics();
    let mut last_leader = None;
    let mut disk_tick = Instant::now() - Duration::from_secs(60);
    let mut snapshot_oversized = false;
    loop {
        let m = rx.borrow_and_update().clone();
        let g = &node.metrics;
        g.is_leader.set((m.state == ServerState::Leader) as i64);
        g.term.set(m.current_term as i64);
        g.leader_id.set(m.current_leader.unwrap_or(0) as i64);
        if m.current_leader.is_some() && m.current_leader != last_leader {
            g.leader_changes.inc();
            tracing::info!(
                "leader is now master {} (term {}, was {last_leader:?})",
                m.current_leader.unwrap_or(0),
                m.current_term
            );
        }
        last_leader = m.current_leader;
        let last_log = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        g.last_log_index.set(last_log as i64);
        g.applied_index.set(applied as i64);
        g.committed_index.set(applied as i64);
        g.apply_lag.set(last_log.saturating_sub(applied) as i64);
        g.snapshot_index
            .set(m.snapshot.map_or(0, |l| l.index) as i64);
        g.purged_index.set(m.purged.map_or(0, |l| l.index) as i64);
        g.membership_size
            .set(m.membership_config.membership().voter_ids().count() as i64);
        g.snapshot_builds
            .set(node.store.snapshots_built.load(Ordering::Relaxed) as i64);
        g.snapshot_installs
            .set(node.store.snapshots_installed.load(Ordering::Relaxed) as i64);
        g.objects.set(node.store.len() as i64);
        let (events, bytes) = node.store.feed.held();
        g.feed_window_events.set(events as i64);
        g.feed_window_bytes.set(bytes as i64);
        let snapshot_bytes = node.store.snapshot_bytes.load(Ordering::Relaxed);
        g.snapshot_bytes.set(snapshot_bytes as i64);
        let oversized = snapshot_bytes > node.max_snapshot_bytes;
        if oversized && !snapshot_oversized {
            // Followers refuse every chunk past their limit: one that needs this snapshot
            // cannot catch up until the limit is raised on every master.
            tracing::error!(
                snapshot_bytes,
                max_snapshot_bytes = node.max_snapshot_bytes,
                "this master's snapshot is larger than max_snapshot_bytes: followers will refuse it"
            );
        }
        snapshot_oversized = oversized;
        if disk_tick.elapsed() > Duration::from_secs(5) {
            disk_tick = Instant::now();
            let dir = node.data_dir.clone();
            if let Ok(bytes) = tokio::task::spawn_blocking(move || dir_size(&dir)).await {
                g.disk_bytes.set(bytes as i64);
            }
        }
        // Wake on change, and at least every few seconds for the disk gauge.
        match tokio::time::timeout(Duration::from_secs(5), rx.changed()).await {
            Ok(Err(_)) => return,
            _ => {}
        }
    }
}

/// Total size of the files under `dir`.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(md) if md.is_dir() => dir_size(&e.path()),
            Ok(md) => md.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::ElectionTimeout;

    #[test]
    fn election_timeout_parses_and_prints() {
        let t: ElectionTimeout = "250-500".parse().unwrap();
        assert_eq!((t.min_ms, t.max_ms), (250, 500));
        assert_eq!(t.to_string(), "250-500");
        assert!("500-250".parse::<ElectionTimeout>().is_err());
        assert!("0-5".parse::<ElectionTimeout>().is_err());
    }
}
