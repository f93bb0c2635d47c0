//! The agent's Prometheus metrics (`keelson_agent_*`), served on its `/metrics`.
//!
//! One agent per process, so the metrics live in a process-wide [`get`]: the heartbeat stream,
//! the pod sync and the runtime record into it without threading a handle through every call.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Phases every scrape reports (at 0 when no pod is in them).
const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// Metrics of one node agent.
pub struct AgentMetrics {
    pub registry: Registry,
    pub heartbeats_sent: IntCounter,
    pub heartbeat_connections: IntCounter,
    pub heartbeat_connected: IntGauge,
    pub pods: IntGaugeVec,
    pub status_writes: IntCounterVec,
    pub status_write_seconds: Histogram,
    pub runtime_seconds: HistogramVec,
    /// Phase of every pod bound to this node, by `namespace/name`.
    phases: Mutex<HashMap<String, String>>,
}

/// The process's agent metrics.
pub fn get() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::new)
}

impl AgentMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("register process metrics");
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = AgentMetrics {
            heartbeats_sent: IntCounter::new(
                "keelson_agent_heartbeats_sent_total",
                "Heartbeats this agent sent to the leader.",
            )
            .expect("metric"),
            heartbeat_connections: IntCounter::new(
                "keelson_agent_heartbeat_connections_total",
                "Heartbeat streams opened to the leader (first connection and reconnections).",
            )
            .expect("metric"),
            heartbeat_connected: IntGauge::new(
                "keelson_agent_heartbeat_connected",
                "1 while the heartbeat stream to the leader is connected, else 0.",
            )
            .expect("metric"),
            pods: IntGaugeVec::new(
                Opts::new("keelson_agent_pods", "Pods bound to this node by phase."),
                &["phase"],
            )
            .expect("metric"),
            status_writes: IntCounterVec::new(
                Opts::new(
                    "keelson_agent_pod_status_writes_total",
                    "Pod status writes by result (ok, conflict, not_found, error).",
                ),
                &["result"],
            )
            .expect("metric"),
            status_write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keelson_agent_pod_status_write_duration_seconds",
                    "Latency of one pod status write to the masters.",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("metric"),
            runtime_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "keelson_agent_runtime_operation_duration_seconds",
                    "Latency of runtime operations by operation.",
                )
                .buckets(latency_buckets),
                &["operation"],
            )
            .expect("metric"),
            phases: Mutex::new(HashMap::new()),
            registry,
        };
        let reg = &m.registry;
        reg.register(Box::new(m.heartbeats_sent.clone()))
            .expect("register");
        reg.register(Box::new(m.heartbeat_connections.clone()))
            .expect("register");
        reg.register(Box::new(m.heartbeat_connected.clone()))
            .expect("register");
        reg.register(Box::new(m.pods.clone())).expect("register");
        reg.register(Box::new(m.status_writes.clone()))
            .expect("register");
        reg.register(Box::new(m.status_write_seconds.clone()))
            .expect("register");
        reg.register(Box::new(m.runtime_seconds.clone()))
            .expect("register");
        for p in PHASES {
            m.pods.with_label_values(&[p]).set(0);
        }
        for r in ["ok", "conflict", "not_found", "error"] {
            m.status_writes.with_label_values(&[r]);
        }
        for op in ["desired_status", "forget"] {
            m.runtime_seconds.with_label_values(&[op]);
        }
        m
    }

    /// The heartbeat stream is (still) carrying beats.
    pub fn beat_sent(&self) {
        self.heartbeats_sent.inc();
        self.heartbeat_connected.set(1);
    }

    /// A heartbeat stream is being opened.
    pub fn stream_opened(&self) {
        self.heartbeat_connections.inc();
    }

    /// The heartbeat stream ended or broke.
    pub fn stream_closed(&self) {
        self.heartbeat_connected.set(0);
    }

    /// Ready = the heartbeat stream to the leader is connected.
    pub fn ready(&self) -> bool {
        self.heartbeat_connected.get() == 1
    }

    pub fn observe_runtime(&self, operation: &str, took: Duration) {
        self.runtime_seconds
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
    }

    pub fn observe_status_write(&self, result: &str, took: Duration) {
        self.status_writes.with_label_values(&[result]).inc();
        self.status_write_seconds.observe(took.as_secs_f64());
    }

    /// Records the phase of a pod bound to this node (`None`: it was deleted).
    pub fn pod_phase(&self, key: String, phase: Option<&str>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Some(p) => {
                let p = if p.is_empty() { "Pending" } else { p };
                phases.insert(key, p.to_string());
            }
            None => {
                phases.remove(&key);
            }
        }
        self.publish(&phases);
    }

    /// A new pod watch starts over from a full listing: forget what the last one said.
    pub fn reset_pods(&self) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.clear();
        self.publish(&phases);
    }

    fn publish(&self, phases: &HashMap<String, String>) {
        let mut counts: HashMap<&str, i64> = PHASES.iter().map(|p| (*p, 0)).collect();
        for p in phases.values() {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        for (p, n) in counts {
            self.pods.with_label_values(&[p]).set(n);
        }
    }
}
