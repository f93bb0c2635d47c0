//! `keelson master`: one Raft member, its store and its API server.
//!
//! Start-up order: open the data directory (refusing one of another master or cluster), start
//! Raft, listen on the Raft and API ports, then initialize the cluster if — and only if — this
//! master holds no Raft state yet and is not joining an existing cluster. SIGTERM and Ctrl-C stop
//! it cleanly; SIGKILL is safe because every acknowledged write is synced to a majority.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use keelson_raft::node::{ElectionTimeout, NodeConfig};
use keelson_raft::runtime::OwnedRuntime;
use keelson_raft::{MasterNode, NodeId, RaftNode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{api, controllers};
use tokio_util::sync::CancellationToken;

pub mod http;
pub mod peer_tls;
pub mod snapshots;
pub mod storage_failure;
pub mod tls;

/// Flags of `keelson master`.
#[derive(Args, Debug, Clone)]
pub struct MasterArgs {
    /// This master's id (a positive integer, unique in the cluster, never reused).
    #[arg(long)]
    pub id: NodeId,
    /// Where the RocksDB database and snapshots live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the Raft port (peer traffic).
    #[arg(long)]
    pub raft_addr: SocketAddr,
    /// Address of the API server.
    #[arg(long)]
    pub api_addr: SocketAddr,
    /// The initial members, `ID=RAFT_ADDR/API_ADDR,...` (the `/API_ADDR` part may be left out).
    /// Every initial master must be given the same list.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Join an existing cluster instead of creating one: wait to be added with
    /// `keelson ctl masters add`.
    #[arg(long)]
    pub join: bool,
    /// The cluster's id. A data directory of another cluster is refused. Default: derived from
    /// `--peers` when the cluster is created.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Raft heartbeat interval; also how long the leader waits for an append's answer.
    #[arg(long, default_value_t = keelson_raft::node::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Raft election timeout range, `MIN-MAX` milliseconds. A follower that stops hearing from
    /// its leader campaigns after MAX (the leader's lease) plus a random time in the range.
    #[arg(long, default_value_t = ElectionTimeout::default())]
    pub election_timeout_ms: ElectionTimeout,
    /// Build a snapshot after this many log entries, and once the log since the last snapshot
    /// holds a quarter of its size in bytes.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,
    /// The space quota of the database (a quantity; etcd's flag and default, 2Gi; 0: none).
    /// Past it the master raises the replicated NOSPACE alarm: writes that store a value are
    /// refused (507) until `keelson ctl alarm disarm`; deletes still work.
    #[arg(long, default_value = "2Gi", value_parser = crate::process::parse_size)]
    pub quota_backend_bytes: u64,
    /// Save a backup of the cluster this often (`1h`, `30m`, `1h30m`; none when not given), as
    /// k3s's etcd snapshots: each master with the flag keeps its own, in `--snapshot-dir`.
    #[arg(long, value_parser = snapshots::parse_every)]
    pub snapshot_schedule: Option<Duration>,
    /// Scheduled snapshots kept: the oldest of this master's are removed past it.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub snapshot_retention: u32,
    /// Where scheduled snapshots go (0700). Default: `DATA_DIR/snapshots`.
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// Bearer tokens accepted by the API, one per line (`token,user,uid,"group1,group2"`). Without it the API is
    /// open (local tests only).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Run no control loops (scheduler, replication, endpoints, node lifecycle) on this master
    /// even when it leads: the API alone, as kube-apiserver without a controller manager.
    #[arg(long)]
    pub no_controllers: bool,
    /// TEST ONLY: serve key/value reads from the local replica without confirming leadership —
    /// a deliberately broken store that the chaos harness must catch.
    #[arg(long, hide = true)]
    pub unsafe_stale_reads: bool,
    /// A node silent for this long becomes NotReady.
    #[arg(long, default_value_t = 10_000)]
    pub node_grace_ms: u64,
    /// Pods on a node NotReady for this long are failed and replaced elsewhere.
    #[arg(long, default_value_t = 30_000)]
    pub pod_eviction_ms: u64,
    /// Events last seen longer ago than this are deleted.
    #[arg(long, default_value_t = 3600)]
    pub event_ttl_secs: u64,
    /// The IPv4 range services' cluster IPs are allocated from (kube-apiserver's flag: a CIDR
    /// from /12 to /28; its network and broadcast addresses are not used). Every master of a
    /// cluster must be given the same range: each one allocates from it.
    #[arg(long, default_value = crate::registry::clusterip::DEFAULT_RANGE, value_parser = crate::registry::clusterip::ServiceRange::parse)]
    pub service_cluster_ip_range: crate::registry::clusterip::ServiceRange,
    /// How long a request waits for a leader and a quorum.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Serve the API over HTTPS only, with this PEM certificate (chain). Every master of a
    /// cluster serves the same scheme: the API URLs in the membership use it.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `--tls-cert-file`.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Record every mutating request, and every refused one, in this file: JSON lines,
    /// `audit.k8s.io/v1` events at level Metadata (kube-apiserver's flag).
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it would pass this many megabytes.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (`PATH.1` the newest).
    #[arg(long, default_value_t = 10)]
    pub audit_log_maxbackup: usize,
    /// Authenticate API clients that present a certificate signed by this PEM CA: its CN is the
    /// user, its Os the groups (kube-apiserver's flag). Clients without one use tokens.
    #[arg(long, requires = "tls_cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// Requests in flight at most (long-running ones not counted); beyond: 429.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Writes in flight at most (within `--max-requests-inflight`); beyond: 429.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Long-running requests (watches, followed logs) one user may hold open.
    #[arg(long, default_value_t = 5000)]
    pub max_watches_per_user: usize,
    /// How long a client may take to send a request's headers (both ports).
    #[arg(long, default_value_t = 30_000)]
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body (408 after).
    #[arg(long, default_value_t = 60_000)]
    pub body_read_timeout_ms: u64,
    /// This master's certificate on the Raft port (PEM), signed by `--peer-trusted-ca-file`:
    /// served to peers and presented when calling them. Required, with the two below.
    #[arg(long, requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,
    /// The PEM private key of `--peer-cert-file`.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs every master's peer certificate; the only one trusted on the
    /// Raft port.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// BENCH ONLY: plain HTTP between masters, without authentication. Refused unless the Raft
    /// address and every peer's are loopback.
    #[arg(long, hide = true, conflicts_with = "peer_cert_file")]
    pub insecure_plaintext_peers: bool,
}

/// A parsed `--peers` entry; API addresses become `SCHEME://API_ADDR`.
pub(crate) fn parse_peers(
    peers: &[String],
    scheme: &str,
) -> anyhow::Result<BTreeMap<NodeId, MasterNode>> {
    let mut out = BTreeMap::new();
    for p in peers.iter().filter(|p| !p.is_empty()) {
        let (id, addrs) = p
            .split_once('=')
            .with_context(|| format!("--peers entry {p:?} is not ID=RAFT_ADDR[/API_ADDR]"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("--peers entry {p:?}: id is not a number"))?;
        let (raft, api) = match addrs.split_once('/') {
            Some((r, a)) => (r.trim(), format!("{scheme}://{}", a.trim())),
            None => (addrs.trim(), String::new()),
        };
        raft.parse::<SocketAddr>()
            .with_context(|| format!("--peers entry {p:?}: {raft:?} is not HOST:PORT"))?;
        if out
            .insert(
                id,
                MasterNode {
                    raft: raft.to_string(),
                    api,
                },
            )
            .is_some()
        {
            bail!("--peers names master {id} twice");
        }
    }
    Ok(out)
}

/// A stable id for a cluster created from `peers`.
fn derived_cluster_id(peers: &BTreeMap<NodeId, MasterNode>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (id, n) in peers {
        (id, &n.raft).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// How long a stopping leader tries to hand its leadership over before it just stops.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Worker threads of the control loops' runtime.
const CONTROLLER_THREADS: usize = 2;

/// Runs a master until SIGTERM or Ctrl-C.
pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    if args.id == 0 {
        bail!("--id must be a positive integer");
    }
    let stop_signal = crate::process::shutdown_signal();
    let tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            cert,
            key,
            args.client_ca_file.as_deref(),
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let peers = parse_peers(&args.peers, scheme)?;
    check_peers(&args, &peers)?;
    let peer_files = peer_files(&args, &peers)?;
    let peer_server = match &peer_files {
        Some(files) => Some(files.server_config()?),
        None => None,
    };
    let cfg = node_config(&args, &peers, scheme, peer_files.as_ref())?;
    let registry = metrics_registry(&args, peer_files.as_ref())?;
    let raft_listener = TcpListener::bind(args.raft_addr)
        .await
        .with_context(|| format!("listen on --raft-addr {}", args.raft_addr))?;
    let api_listener = TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("listen on --api-addr {}", args.api_addr))?;
    let node = match RaftNode::start(cfg, &registry).await {
        Ok(node) => node,
        // A disk too full to open the database on: wait for room, then exit to be restarted.
        Err(e) if keelson_raft::failure::is_no_space(&format!("{e:#}")) => {
            tracing::error!("cannot start: {e:#}");
            let needed = 64 << 20;
            return Err(storage_failure::wait_for_space(&args.data_dir, needed)
                .await
                .into());
        }
        Err(e) => return Err(e.into()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Stops with `stop_tx`; a part being written when the master stops is removed at the next
    // start.
    let _scheduled = match args.snapshot_schedule {
        Some(every) => Some(snapshots::start(
            node.clone(),
            snapshots::Schedule {
                every,
                retention: args.snapshot_retention as usize,
                dir: args
                    .snapshot_dir
                    .clone()
                    .unwrap_or_else(|| args.data_dir.join("snapshots")),
            },
            &registry,
            stop_rx.clone(),
        )?),
        None => None,
    };

    let timeouts = http::Timeouts {
        header_read: Duration::from_millis(args.header_read_timeout_ms),
    };
    let raft_server = serve_raft(&node, raft_listener, peer_server, timeouts, stop_rx.clone())?;
    let tokens = match &args.token_file {
        Some(path) => api::auth::Tokens::load(path)?,
        None => api::auth::Tokens::open(),
    };
    // On every master: a new leader's loops start warm, and lists by label read their index.
    let informers = crate::informer::Informers::start(node.store.clone());
    // The control loops' passes are CPU-bound: threads of their own, not the API's workers.
    let loops_runtime = match args.no_controllers {
        true => None,
        false => Some(
            OwnedRuntime::new("controllers", CONTROLLER_THREADS)
                .context("the controllers' runtime")?,
        ),
    };
    let audit = match &args.audit_log_path {
        Some(path) => Some(api::audit::AuditLog::open(
            api::audit::AuditConfig {
                path: path.clone(),
                max_bytes: args.audit_log_maxsize.saturating_mul(1 << 20),
                backups: args.audit_log_maxbackup,
            },
            &registry,
        )?),
        None => None,
    };
    let guard = api::authz::Guard {
        tokens,
        rbac: Some(api::authz::rbac::Rbac {
            informers: informers.clone(),
        }),
        audit,
        timing: Some(api::authz::timing::GuardMetrics::register(&registry)?),
    };
    let (loops, loops_stop, heartbeat_routes) = start_controllers(
        &args,
        &node,
        &informers,
        &registry,
        &guard,
        loops_runtime.as_ref().map(OwnedRuntime::handle),
    );
    let agents = match &peer_files {
        Some(files) => api::logs::Agents::tls(&files.client()?)?,
        None => api::logs::Agents::plain(),
    };
    let api_router = api_router(
        &args,
        &node,
        informers,
        registry,
        guard,
        tls.is_some(),
        agents,
    )
    .merge(heartbeat_routes);
    let api_server = match tls {
        Some(config) => tokio::spawn(http::serve(
            tls::TlsListener::new(api_listener, config)?,
            api_router,
            timeouts,
            stop_rx.clone(),
        )),
        None => tokio::spawn(http::serve(
            api_listener,
            api_router,
            timeouts,
            stop_rx.clone(),
        )),
    };

    if !args.join {
        match node.initialize(peers.clone()).await {
            Ok(true) => {
                tracing::info!(members = ?peers.keys().collect::<Vec<_>>(), "initialized a new cluster")
            }
            Ok(false) => tracing::info!("found existing Raft state: resuming"),
            Err(e) => bail!("cannot initialize the cluster: {e}"),
        }
    }
    tracing::info!(id = args.id, raft = %args.raft_addr, api = %format!("{scheme}://{}", args.api_addr), cluster = ?node.cluster_id(), "master running");

    let exit = tokio::select! {
        _ = stop_signal => None,
        exit = storage_failure::exit_after_failure(node.clone(), args.data_dir.clone()) => Some(exit),
    };
    tracing::info!("stopping");
    loops_stop.cancel();
    let _ = loops.await;
    // A leader hands over before its listeners close, so the cluster need not wait out an
    // election timeout; writes arriving meanwhile are forwarded to the next leader.
    node.hand_over(HAND_OVER_TIMEOUT).await;
    let _ = stop_tx.send(true);
    // Requests in flight finish (a write forwarded to the new leader gets its answer) before
    // Raft stops: a client of a rolling restart sees an answer or a refused connection.
    let _ = tokio::time::timeout(Duration::from_secs(5), api_server).await;
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), raft_server).await;
    match exit {
        Some(exit) => Err(exit.into()),
        None => Ok(()),
    }
}

/// A master creating a cluster must be named in `--peers`, at its own `--raft-addr`.
fn check_peers(args: &MasterArgs, peers: &BTreeMap<NodeId, MasterNode>) -> anyhow::Result<()> {
    if args.join {
        return Ok(());
    }
    if peers.is_empty() {
        bail!("--peers is required to create a cluster (or pass --join to join one)");
    }
    match peers.get(&args.id) {
        None => bail!(
            "--peers does not name this master's id {}: conflicting id",
            args.id
        ),
        Some(me) if me.raft != args.raft_addr.to_string() => bail!(
            "--peers gives master {} the Raft address {}, but --raft-addr is {}: conflicting id",
            args.id,
            me.raft,
            args.raft_addr
        ),
        Some(_) => Ok(()),
    }
}

/// The peer certificate files of the Raft port's mutual TLS; `None` only with
/// `--insecure-plaintext-peers`, which every Raft address must then be loopback for.
fn peer_files<'a>(
    args: &'a MasterArgs,
    peers: &BTreeMap<NodeId, MasterNode>,
) -> anyhow::Result<Option<peer_tls::PeerFiles<'a>>> {
    match (
        &args.peer_cert_file,
        &args.peer_key_file,
        &args.peer_trusted_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(peer_tls::PeerFiles { cert, key, ca })),
        _ if args.insecure_plaintext_peers => {
            let raft_addr = args.raft_addr.to_string();
            let addrs = peers.values().map(|p| p.raft.as_str());
            if !peer_tls::plaintext_allowed(addrs.chain([raft_addr.as_str()])) {
                bail!("--insecure-plaintext-peers is for loopback benches only: every Raft address must be loopback");
            }
            tracing::warn!("--insecure-plaintext-peers: the Raft port is unauthenticated; for benches only");
            Ok(None)
        }
        _ => bail!("the Raft port requires mutual TLS: pass --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"),
    }
}

/// The Raft member's configuration from the flags.
fn node_config(
    args: &MasterArgs,
    peers: &BTreeMap<NodeId, MasterNode>,
    scheme: &str,
    peer_files: Option<&peer_tls::PeerFiles>,
) -> anyhow::Result<NodeConfig> {
    let mut cfg = NodeConfig::new(
        args.id,
        args.data_dir.clone(),
        args.raft_addr,
        format!("{scheme}://{}", args.api_addr),
    );
    cfg.cluster_id = args.cluster_id.clone();
    cfg.default_cluster_id = (!args.join).then(|| derived_cluster_id(peers));
    cfg.heartbeat_ms = args.heartbeat_ms;
    cfg.election_min_ms = args.election_timeout_ms.min_ms;
    cfg.election_max_ms = args.election_timeout_ms.max_ms;
    cfg.snapshot_every = args.snapshot_every;
    cfg.keep_logs = args.keep_logs;
    cfg.quota_backend_bytes = args.quota_backend_bytes;
    cfg.request_timeout = Duration::from_millis(args.request_timeout_ms);
    cfg.peer_tls = match peer_files {
        Some(files) => Some(files.client()?),
        None => None,
    };
    Ok(cfg)
}

/// The master's Prometheus registry: process metrics and the expiry of its certificates.
fn metrics_registry(
    args: &MasterArgs,
    peer_files: Option<&peer_tls::PeerFiles>,
) -> anyhow::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("register process metrics")?;
    let mut certs: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(files) = peer_files {
        certs.extend([("peer", files.cert), ("ca", files.ca)]);
    }
    if let Some(cert) = &args.tls_cert_file {
        certs.push(("serving", cert));
    }
    peer_tls::register_expiry(&registry, &certs)?;
    Ok(registry)
}

/// Serves the Raft port on Raft's own runtime (keelson_raft::runtime), so API load never delays
/// a heartbeat or a vote. With mTLS, a caller reaches the router (and the cluster id) only after
/// its handshake.
fn serve_raft(
    node: &Arc<RaftNode>,
    listener: TcpListener,
    peer_server: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    timeouts: http::Timeouts,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let router = keelson_raft::server::router(node.clone());
    let listener = listener.into_std().context("the Raft listener")?;
    Ok(node.runtime().spawn(async move {
        let listener = TcpListener::from_std(listener)?;
        match peer_server {
            Some(config) => {
                let listener = tls::TlsListener::new(listener, config)?;
                http::serve(listener, router, timeouts, stop).await
            }
            None => http::serve(listener, router, timeouts, stop).await,
        }
        anyhow::Ok(())
    }))
}

/// The leader's control loops (unless `--no-controllers`), the token that stops them, and the
/// heartbeat endpoint that feeds node lifecycle.
fn start_controllers(
    args: &MasterArgs,
    node: &Arc<RaftNode>,
    informers: &Arc<crate::informer::Informers>,
    registry: &prometheus::Registry,
    guard: &api::authz::Guard,
    runtime: Option<&tokio::runtime::Handle>,
) -> (tokio::task::JoinHandle<()>, CancellationToken, axum::Router) {
    let heartbeats = controllers::Heartbeats::default();
    let controller_metrics = controllers::ControllerMetrics::register(registry);
    let loops_stop = CancellationToken::new();
    let loop_ctx = controllers::Context {
        node: node.clone(),
        informers: informers.clone(),
        term: 0,
        config: controllers::LoopConfig {
            node_grace: Duration::from_millis(args.node_grace_ms),
            pod_eviction: Duration::from_millis(args.pod_eviction_ms),
            event_ttl: Duration::from_secs(args.event_ttl_secs),
            service_range: args.service_cluster_ip_range,
            ..Default::default()
        },
        heartbeats: heartbeats.clone(),
        metrics: controller_metrics.clone(),
    };
    // No runtime: `--no-controllers`.
    let loops = match runtime {
        Some(rt) => rt.spawn(controllers::LeaderGate::run(loop_ctx, loops_stop.clone())),
        None => tokio::spawn(async {}),
    };
    let heartbeat_routes = axum::Router::new()
        .route(
            "/agent/heartbeats",
            axum::routing::post(controllers::nodes::heartbeats),
        )
        .with_state(controllers::nodes::HeartbeatEndpoint {
            node: node.clone(),
            heartbeats,
            metrics: controller_metrics,
        })
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            api::authz::guard,
        ));
    (loops, loops_stop, heartbeat_routes)
}

/// The API server's router, with its limits and flags.
fn api_router(
    args: &MasterArgs,
    node: &Arc<RaftNode>,
    informers: Arc<crate::informer::Informers>,
    registry: prometheus::Registry,
    guard: api::authz::Guard,
    tls: bool,
    agents: api::logs::Agents,
) -> axum::Router {
    let mut api_state = api::ApiState::new(node.clone(), registry, guard).with_informers(informers);
    api_state.unsafe_stale_reads = args.unsafe_stale_reads;
    api_state.tls = tls;
    api_state.agents = agents;
    api_state.service_range = args.service_cluster_ip_range;
    api_state.limits = api::limits::Limits::new(api::limits::LimitConfig {
        max_inflight: args.max_requests_inflight,
        max_mutating: args.max_mutating_requests_inflight,
        max_watches_per_user: args.max_watches_per_user,
        body_read: Duration::from_millis(args.body_read_timeout_ms),
    });
    if args.unsafe_stale_reads {
        tracing::warn!("--unsafe-stale-reads: key/value reads may be stale; for testing the chaos checkers only");
    }
    api::router(api_state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers(
            &[
                "1=127.0.0.1:7001/127.0.0.1:6441".into(),
                "2=127.0.0.1:7002".into(),
            ],
            "http",
        )
        .unwrap();
        assert_eq!(p[&1].api, "http://127.0.0.1:6441");
        assert_eq!(p[&2].api, "");
        let p = parse_peers(&["1=127.0.0.1:7001/127.0.0.1:6441".into()], "https").unwrap();
        assert_eq!(p[&1].api, "https://127.0.0.1:6441");
        assert!(parse_peers(&["x=127.0.0.1:1".into()], "http").is_err());
        assert!(parse_peers(&["1=nothost".into()], "http").is_err());
        assert!(parse_peers(&["1=127.0.0.1:1".into(), "1=127.0.0.1:2".into()], "http").is_err());
    }
}
