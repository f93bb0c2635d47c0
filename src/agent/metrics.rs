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
    pub container_starts: IntCounter,
    pub container_restarts: IntCounter,
    pub image_pull_failures: IntCounter,
    /// Service proxy: connections accepted, by service (`namespace/name`).
    pub proxy_connections: IntCounterVec,
    /// Service proxy: connections open (accepted, not yet closed), by service.
    pub proxy_active_connections: IntGaugeVec,
    /// Service proxy: bytes forwarded, by service and direction (`in`: client to endpoint,
    /// `out`: endpoint to client).
    pub proxy_bytes: IntCounterVec,
    /// Service proxy: failed attempts to connect to an endpoint, by service.
    pub proxy_endpoint_failures: IntCounterVec,
    /// Service proxy: accepted connections closed without being forwarded, by service and
    /// reason (`no_endpoints`, `endpoints_unreachable`).
    pub proxy_rejected: IntCounterVec,
    /// Service proxy: listeners open (one per TCP service port).
    pub proxy_listeners: IntGauge,
    /// Service proxy: attempts to open a listener that failed (port taken, address missing).
    pub proxy_listen_failures: IntCounter,
    /// Service proxy: how long a sync of the rules (or listeners) with the services took.
    pub proxy_sync_seconds: Histogram,
    /// Service proxy: when the rules last matched the services (Unix seconds).
    pub proxy_last_sync: IntGauge,
    /// Service proxy: rules (kernel mode) or listeners (userspace mode) per service.
    pub proxy_rules: IntGaugeVec,
    /// Service proxy: syncs that could not write the rules.
    pub proxy_sync_failures: IntCounter,
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
            proxy_connections: IntCounterVec::new(
                Opts::new(
                    "keelson_agent_proxy_connections_total",
                    "Connections the service proxy accepted, by service.",
                ),
                &["service"],
            )
            .expect("metric"),
            proxy_active_connections: IntGaugeVec::new(
                Opts::new(
                    "keelson_agent_proxy_active_connections",
                    "Connections open through the service proxy, by service.",
                ),
                &["service"],
            )
            .expect("metric"),
            proxy_bytes: IntCounterVec::new(
                Opts::new(
                    "keelson_agent_proxy_bytes_total",
                    "Bytes the service proxy forwarded, by service and direction (in: client to endpoint, out: endpoint to client).",
                ),
                &["service", "direction"],
            )
            .expect("metric"),
            proxy_endpoint_failures: IntCounterVec::new(
                Opts::new(
                    "keelson_agent_proxy_endpoint_connect_failures_total",
                    "Failed attempts of the service proxy to connect to an endpoint, by service.",
                ),
                &["service"],
            )
            .expect("metric"),
            proxy_rejected: IntCounterVec::new(
                Opts::new(
                    "keelson_agent_proxy_connections_rejected_total",
                    "Accepted connections closed without being forwarded, by service and reason (no_endpoints, endpoints_unreachable).",
                ),
                &["service", "reason"],
            )
            .expect("metric"),
            proxy_listeners: IntGauge::new(
                "keelson_agent_proxy_listeners",
                "Listeners the service proxy has open (one per TCP service port).",
            )
            .expect("metric"),
            proxy_listen_failures: IntCounter::new(
                "keelson_agent_proxy_listen_failures_total",
                "Attempts of the service proxy to open a listener that failed (e.g. port taken).",
            )
            .expect("metric"),
            proxy_sync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keelson_agent_proxy_sync_duration_seconds",
                    "How long a sync of the service proxy's rules (kernel mode) or listeners (userspace mode) with the services and endpoints took.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .expect("metric"),
            proxy_last_sync: IntGauge::new(
                "keelson_agent_proxy_last_sync_timestamp_seconds",
                "When the service proxy's rules last matched the services (Unix seconds).",
            )
            .expect("metric"),
            proxy_rules: IntGaugeVec::new(
                Opts::new(
                    "keelson_agent_proxy_rules",
                    "Rules of each service in the kernel mode (map elements and chain rules), listeners in the userspace mode.",
                ),
                &["service"],
            )
            .expect("metric"),
            proxy_sync_failures: IntCounter::new(
                "keelson_agent_proxy_sync_failures_total",
                "Syncs of the service proxy that could not write its rules (retried).",
            )
            .expect("metric"),
            container_starts: IntCounter::new(
                "keelson_agent_container_starts_total",
                "Containers the runtime created and started (sandboxes included).",
            )
            .expect("metric"),
            container_restarts: IntCounter::new(
                "keelson_agent_container_restarts_total",
                "Containers restarted by the pod's restart policy after they exited.",
            )
            .expect("metric"),
            image_pull_failures: IntCounter::new(
                "keelson_agent_image_pull_failures_total",
                "Image pulls that failed (the pod reports ErrImagePull).",
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
        for c in [
            &m.container_starts,
            &m.container_restarts,
            &m.image_pull_failures,
        ] {
            reg.register(Box::new(c.clone())).expect("register");
        }
        reg.register(Box::new(m.proxy_connections.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_active_connections.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_bytes.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_endpoint_failures.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_rejected.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_listeners.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_listen_failures.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_sync_seconds.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_last_sync.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_rules.clone()))
            .expect("register");
        reg.register(Box::new(m.proxy_sync_failures.clone()))
            .expect("register");
        for p in PHASES {
            m.pods.with_label_values(&[p]).set(0);
        }
        for r in ["ok", "conflict", "not_found", "error"] {
            m.status_writes.with_label_values(&[r]);
        }
        for op in ["desired_status"] {
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

    /// The proxy metrics of one service (`namespace/name`), its series created at 0.
    pub fn proxy_service(&self, service: &str) -> ProxyServiceMetrics {
        ProxyServiceMetrics {
            accepted: self.proxy_connections.with_label_values(&[service]),
            active: self.proxy_active_connections.with_label_values(&[service]),
            bytes_in: self.proxy_bytes.with_label_values(&[service, "in"]),
            bytes_out: self.proxy_bytes.with_label_values(&[service, "out"]),
            endpoint_failures: self.proxy_endpoint_failures.with_label_values(&[service]),
            no_endpoints: self
                .proxy_rejected
                .with_label_values(&[service, "no_endpoints"]),
            unreachable: self
                .proxy_rejected
                .with_label_values(&[service, "endpoints_unreachable"]),
        }
    }

    /// A service the proxy no longer serves: drop its series (connections still open keep
    /// counting into handles that are no longer exported).
    pub fn forget_proxy_service(&self, service: &str) {
        let _ = self.proxy_connections.remove_label_values(&[service]);
        let _ = self
            .proxy_active_connections
            .remove_label_values(&[service]);
        for d in ["in", "out"] {
            let _ = self.proxy_bytes.remove_label_values(&[service, d]);
        }
        let _ = self.proxy_endpoint_failures.remove_label_values(&[service]);
        for r in ["no_endpoints", "endpoints_unreachable"] {
            let _ = self.proxy_rejected.remove_label_values(&[service, r]);
        }
    }

    /// Replaces the pods bound to this node: `namespace/name` → phase.
    pub fn set_pods(&self, pods: impl Iterator<Item = (String, String)>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.clear();
        for (key, phase) in pods {
            let phase = if phase.is_empty() {
                "Pending".to_string()
            } else {
                phase
            };
            phases.insert(key, phase);
        }
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

/// The proxy metrics of one service, resolved once per listener.
#[derive(Clone)]
pub struct ProxyServiceMetrics {
    pub accepted: IntCounter,
    pub active: IntGauge,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub endpoint_failures: IntCounter,
    pub no_endpoints: IntCounter,
    pub unreachable: IntCounter,
}
