//! The leader's control loops: scheduler, replication manager, endpoints controller and node
//! lifecycle, the cluster IP repair loop, and the bootstrap policy (the default roles, once per
//! tenure).
//!
//! Invariants:
//! - The loops run only on the leader: [`LeaderGate`] starts them when openraft reports this
//!   master Leader (after a read barrier, so the local replica holds every committed write) and
//!   cancels them when it stops being leader. Their writes go through Raft, so a deposed leader
//!   that still runs a loop for a moment cannot commit anything: that is the fence.
//! - A tenure is a term: the gate restarts the loops when the term changes, and every write of
//!   a loop is proposed only while this master leads in the loops' term, and awaited without a
//!   deadline ([`keelson_raft::RaftNode::write_batch_in_term`]). So no write of a loop has an
//!   unknown outcome when its next pass starts, and the passes of a new tenure start after the
//!   read barrier that settles every write of the old one: the expectations Kubernetes keeps
//!   against duplicate creates reduce to running each pass to completion before the next.
//! - The scheduler and the replication manager read the informers' caches
//!   ([`crate::informer`]) and work from queues of keys: a change costs work in proportion to
//!   what changed. After writing, a loop waits until the caches reflect its writes
//!   (read-your-writes). The endpoints, events and node lifecycle loops still list the store
//!   and run a full pass per burst of changes.

pub mod clusterips;
pub mod endpoints;
pub mod events;
pub mod nodes;
pub mod policy;
pub mod replication;
pub mod scheduler;
mod util;

use std::sync::Arc;
use std::time::Duration;

use keelson_raft::RaftNode;
use tokio_util::sync::CancellationToken;

use crate::informer::Informers;

pub use nodes::Heartbeats;

/// Timeouts of the control loops (flags of `keelson master`).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// A node with no heartbeat for this long becomes NotReady.
    pub node_grace: Duration,
    /// Pods on a node NotReady for this long are marked Failed (and replaced).
    pub pod_eviction: Duration,
    /// Every loop also resyncs this often, whatever the watch says.
    pub resync: Duration,
    /// Events last seen longer ago than this are deleted (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
    /// Where services' cluster IPs come from (`--service-cluster-ip-range`).
    pub service_range: crate::registry::clusterip::ServiceRange,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            node_grace: Duration::from_secs(10),
            pod_eviction: Duration::from_secs(30),
            resync: Duration::from_secs(5),
            event_ttl: Duration::from_secs(3600),
            service_range: Default::default(),
        }
    }
}

/// What every loop gets.
#[derive(Clone)]
pub struct Context {
    pub node: Arc<RaftNode>,
    pub informers: Arc<Informers>,
    /// The term this master leads in while the loops run: their writes are fenced by it.
    pub term: u64,
    pub config: LoopConfig,
    pub heartbeats: Heartbeats,
    pub metrics: ControllerMetrics,
}

/// Prometheus metrics of the control loops.
#[derive(Clone)]
pub struct ControllerMetrics {
    pub syncs: prometheus::IntCounterVec,
    pub sync_seconds: prometheus::HistogramVec,
    pub scheduling_attempts: prometheus::IntCounterVec,
    pub pending_pods: prometheus::IntGauge,
    pub pods_created: prometheus::IntCounter,
    pub pods_deleted: prometheus::IntCounter,
    pub heartbeats: prometheus::IntCounter,
    pub nodes: prometheus::IntGaugeVec,
}

impl ControllerMetrics {
    pub fn register(reg: &prometheus::Registry) -> Self {
        use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
        let m = ControllerMetrics {
            syncs: IntCounterVec::new(
                Opts::new(
                    "keelson_controller_syncs_total",
                    "Control-loop passes by controller.",
                ),
                &["controller"],
            )
            .expect("metric"),
            sync_seconds: prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "keelson_controller_sync_duration_seconds",
                    "Duration of a control-loop pass by controller.",
                )
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["controller"],
            )
            .expect("metric"),
            scheduling_attempts: IntCounterVec::new(
                Opts::new(
                    "keelson_scheduler_attempts_total",
                    "Scheduling attempts by result (scheduled, unschedulable, error).",
                ),
                &["result"],
            )
            .expect("metric"),
            pending_pods: IntGauge::new(
                "keelson_scheduler_pending_pods",
                "Pods waiting for a node.",
            )
            .expect("metric"),
            pods_created: IntCounter::new(
                "keelson_replication_pods_created_total",
                "Pods created by the replication manager.",
            )
            .expect("metric"),
            pods_deleted: IntCounter::new(
                "keelson_replication_pods_deleted_total",
                "Pods deleted by the replication manager.",
            )
            .expect("metric"),
            heartbeats: IntCounter::new(
                "keelson_node_heartbeats_total",
                "Node heartbeats received by this master.",
            )
            .expect("metric"),
            nodes: IntGaugeVec::new(
                Opts::new(
                    "keelson_nodes",
                    "Nodes by Ready condition (True, False, Unknown).",
                ),
                &["condition"],
            )
            .expect("metric"),
        };
        reg.register(Box::new(m.syncs.clone())).expect("register");
        reg.register(Box::new(m.sync_seconds.clone()))
            .expect("register");
        reg.register(Box::new(m.scheduling_attempts.clone()))
            .expect("register");
        reg.register(Box::new(m.pending_pods.clone()))
            .expect("register");
        reg.register(Box::new(m.pods_created.clone()))
            .expect("register");
        reg.register(Box::new(m.pods_deleted.clone()))
            .expect("register");
        reg.register(Box::new(m.heartbeats.clone()))
            .expect("register");
        reg.register(Box::new(m.nodes.clone())).expect("register");
        m
    }
}

/// Starts the loops when this master becomes leader and stops them when it is not.
pub struct LeaderGate;

impl LeaderGate {
    /// Runs until `shutdown` is cancelled. `ctx.term` is set for each tenure.
    pub async fn run(ctx: Context, shutdown: CancellationToken) {
        let mut metrics = ctx.node.raft.metrics();
        // The term the loops run in, their token and tasks.
        let mut running: Option<(u64, CancellationToken, Vec<tokio::task::JoinHandle<()>>)> = None;
        loop {
            metrics.borrow_and_update();
            let (term, leader) = ctx.node.term();
            if running
                .as_ref()
                .is_some_and(|(t, _, _)| !leader || *t != term)
            {
                tracing::info!("lost leadership (or its term): stopping the control loops");
                if let Some((_, token, tasks)) = running.take() {
                    stop(token, tasks).await;
                }
                // Only the leader reports what its loops see: a deposed leader's gauges
                // would be summed with the new one's.
                ctx.metrics.pending_pods.set(0);
                ctx.metrics.nodes.reset();
            }
            if leader && running.is_none() {
                // The local replica must hold every committed write before loops read it, and
                // the caches must reflect it; still the leader of the same term after that.
                if let Ok(index) = ctx.node.read_barrier().await {
                    let rv = keelson_raft::revision::through_entry(index);
                    let synced = ctx.informers.wait_synced(rv, Duration::from_secs(10)).await;
                    if synced && ctx.node.term() == (term, true) {
                        tracing::info!(term, "became leader: starting the control loops");
                        ctx.heartbeats.grant_grace_to_all();
                        let token = shutdown.child_token();
                        let ctx = Context {
                            term,
                            ..ctx.clone()
                        };
                        running = Some((term, token.clone(), start_loops(&ctx, token)));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => if changed.is_err() { break },
                // Retry a failed read barrier.
                _ = tokio::time::sleep(Duration::from_millis(200)), if leader && running.is_none() => {}
            }
        }
        if let Some((_, token, tasks)) = running.take() {
            stop(token, tasks).await;
        }
    }
}

async fn stop(token: CancellationToken, tasks: Vec<tokio::task::JoinHandle<()>>) {
    token.cancel();
    for t in tasks {
        let _ = t.await;
    }
}

fn start_loops(ctx: &Context, token: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(scheduler::run(ctx.clone(), token.clone())),
        tokio::spawn(replication::run(ctx.clone(), token.clone())),
        tokio::spawn(endpoints::run(ctx.clone(), token.clone())),
        // Watches nothing: wakes every resync period.
        tokio::spawn(util::run_loop(
            "events",
            &[],
            ctx.clone(),
            token.clone(),
            events::collect_garbage,
        )),
        // Frees the claims of failed creates, claims the addresses of unclaimed services.
        tokio::spawn(util::run_loop(
            "clusterips",
            &["services"],
            ctx.clone(),
            token.clone(),
            clusterips::repair,
        )),
        tokio::spawn(policy::run(ctx.clone(), token.clone())),
        tokio::spawn(nodes::run(ctx.clone(), token)),
    ]
}
