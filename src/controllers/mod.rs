//! The leader's control loops: scheduler, replication manager, endpoints controller and node
//! lifecycle.
//!
//! Invariants:
//! - The loops run only on the leader: [`LeaderGate`] starts them when openraft reports this
//!   master Leader (after a read barrier, so the local replica holds every committed write) and
//!   cancels them when it stops being leader. Their writes go through Raft, so a deposed leader
//!   that still runs a loop for a moment cannot commit anything: that is the fence.
//! - Every loop is "watch → dirty → idempotent sync on current state": a change in the store
//!   wakes the loop, which recomputes what to do from the leader's own applied state. Because a
//!   write returns only once applied on the leader, that state already holds the loop's earlier
//!   writes (read-your-writes): the expectations Kubernetes keeps against a lagging informer
//!   cache reduce here to running each sync to completion before the next.

pub mod endpoints;
pub mod events;
pub mod nodes;
pub mod replication;
pub mod scheduler;
mod util;

use std::sync::Arc;
use std::time::Duration;

use keelson_raft::RaftNode;
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

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
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            node_grace: Duration::from_secs(10),
            pod_eviction: Duration::from_secs(30),
            resync: Duration::from_secs(5),
            event_ttl: Duration::from_secs(3600),
        }
    }
}

/// What every loop gets.
#[derive(Clone)]
pub struct Context {
    pub node: Arc<RaftNode>,
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
    /// Runs until `shutdown` is cancelled.
    pub async fn run(ctx: Context, shutdown: CancellationToken) {
        let mut metrics = ctx.node.raft.metrics();
        let mut running: Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)> = None;
        loop {
            let leader = metrics.borrow_and_update().state == ServerState::Leader;
            match (leader, running.is_some()) {
                (true, false) => {
                    // The local replica must hold every committed write before loops read it.
                    if ctx.node.read_barrier().await.is_ok() {
                        tracing::info!("became leader: starting the control loops");
                        ctx.heartbeats.grant_grace_to_all();
                        let token = shutdown.child_token();
                        running = Some((token.clone(), start_loops(&ctx, token)));
                    }
                }
                (false, true) => {
                    tracing::info!("lost leadership: stopping the control loops");
                    if let Some((token, tasks)) = running.take() {
                        token.cancel();
                        for t in tasks {
                            let _ = t.await;
                        }
                    }
                    // Only the leader reports what its loops see: a deposed leader's gauges
                    // would be summed with the new one's.
                    ctx.metrics.pending_pods.set(0);
                    ctx.metrics.nodes.reset();
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => if changed.is_err() { break },
                // Retry a failed read barrier.
                _ = tokio::time::sleep(Duration::from_millis(200)), if leader && running.is_none() => {}
            }
        }
        if let Some((token, tasks)) = running.take() {
            token.cancel();
            for t in tasks {
                let _ = t.await;
            }
        }
    }
}

fn start_loops(ctx: &Context, token: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(util::run_loop(
            "scheduler",
            &["pods", "nodes"],
            ctx.clone(),
            token.clone(),
            scheduler::sync,
        )),
        tokio::spawn(util::run_loop(
            "replication",
            &["pods", "replicationcontrollers"],
            ctx.clone(),
            token.clone(),
            replication::sync,
        )),
        tokio::spawn(util::run_loop(
            "endpoints",
            &["pods", "services", "endpoints"],
            ctx.clone(),
            token.clone(),
            endpoints::sync,
        )),
        // Watches nothing: wakes every resync period.
        tokio::spawn(util::run_loop(
            "events",
            &[],
            ctx.clone(),
            token.clone(),
            events::collect_garbage,
        )),
        tokio::spawn(nodes::run(ctx.clone(), token)),
    ]
}
