//! Prometheus metrics of the consensus layer, fed from openraft's metrics channel and from the
//! write path.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts, Registry};

/// The Raft metrics of one master (names in docs/metrics.md).
#[derive(Clone)]
pub struct RaftMetrics {
    pub is_leader: IntGauge,
    pub term: IntGauge,
    pub leader_id: IntGauge,
    pub last_log_index: IntGauge,
    pub committed_index: IntGauge,
    pub applied_index: IntGauge,
    pub apply_lag: IntGauge,
    pub snapshot_index: IntGauge,
    pub purged_index: IntGauge,
    pub membership_size: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals: IntCounter,
    pub proposals_failed: IntCounter,
    pub proposals_forwarded: IntCounter,
    pub proposal_seconds: Histogram,
    /// Raft RPCs this master sent, from sending to the answer, by RPC (`append`, `vote`, …).
    pub peer_round_trip_seconds: HistogramVec,
    /// Appends this master served as a follower, from the decoded request to its answer
    /// (its log written and synced).
    pub append_served_seconds: Histogram,
    pub snapshot_builds: IntGauge,
    pub snapshot_installs: IntGauge,
    pub snapshot_bytes: IntGauge,
    pub snapshot_chunks_refused: IntCounter,
    pub feed_window_events: IntGauge,
    pub feed_window_bytes: IntGauge,
    pub disk_bytes: IntGauge,
    pub objects: IntGauge,
    pub db_size_bytes: IntGauge,
    pub quota_bytes: IntGauge,
    pub alarm_nospace: IntGauge,
    pub storage_failed: IntGauge,
    pub disk_full: IntGauge,
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge");
    reg.register(Box::new(g.clone())).expect("register gauge");
    g
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid counter");
    reg.register(Box::new(c.clone())).expect("register counter");
    c
}

fn histogram(reg: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid histogram");
    reg.register(Box::new(h.clone()))
        .expect("register histogram");
    h
}

impl RaftMetrics {
    /// Creates the metrics and registers them in `reg`.
    pub fn register(reg: &Registry) -> Self {
        let proposal_seconds = histogram(
            reg,
            "keelson_raft_proposal_duration_seconds",
            "Time from proposing a command to its application on the leader.",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        // Sub-millisecond buckets: these are the parts of a write's latency.
        let fine = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let peer_round_trip_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keelson_raft_peer_round_trip_seconds",
                "Raft RPCs sent to other masters, from sending to the answer, by RPC.",
            )
            .buckets(fine.clone()),
            &["rpc"],
        )
        .expect("valid histogram");
        reg.register(Box::new(peer_round_trip_seconds.clone()))
            .expect("register histogram");
        let append_served_seconds = histogram(
            reg,
            "keelson_raft_append_served_seconds",
            "Appends served as a follower, from the decoded request to the answer (log written and synced).",
            fine,
        );
        RaftMetrics {
            peer_round_trip_seconds,
            append_served_seconds,
            is_leader: gauge(
                reg,
                "keelson_raft_is_leader",
                "1 if this master is the Raft leader, else 0.",
            ),
            term: gauge(
                reg,
                "keelson_raft_term",
                "Current Raft term of this master.",
            ),
            leader_id: gauge(
                reg,
                "keelson_raft_leader_id",
                "Id of the leader this master knows, 0 if none.",
            ),
            last_log_index: gauge(
                reg,
                "keelson_raft_last_log_index",
                "Index of the last entry in this master's log.",
            ),
            committed_index: gauge(
                reg,
                "keelson_raft_committed_index",
                "Highest log index this master knows committed.",
            ),
            applied_index: gauge(
                reg,
                "keelson_raft_applied_index",
                "Highest log index applied to the state machine.",
            ),
            apply_lag: gauge(
                reg,
                "keelson_raft_apply_lag_entries",
                "Log entries written but not yet applied.",
            ),
            snapshot_index: gauge(
                reg,
                "keelson_raft_snapshot_index",
                "Last log index covered by the current snapshot.",
            ),
            purged_index: gauge(
                reg,
                "keelson_raft_purged_index",
                "Last log index purged from the log.",
            ),
            membership_size: gauge(
                reg,
                "keelson_raft_membership_voters",
                "Number of voting masters in the membership.",
            ),
            leader_changes: counter(
                reg,
                "keelson_raft_leader_changes_total",
                "Times this master saw the leader change.",
            ),
            proposals: counter(
                reg,
                "keelson_raft_proposals_total",
                "Commands proposed on this master as leader.",
            ),
            proposals_failed: counter(
                reg,
                "keelson_raft_proposals_failed_total",
                "Proposals that failed or timed out.",
            ),
            proposals_forwarded: counter(
                reg,
                "keelson_raft_proposals_forwarded_total",
                "Writes this master forwarded to the leader.",
            ),
            proposal_seconds,
            snapshot_builds: gauge(
                reg,
                "keelson_raft_snapshot_builds",
                "Snapshots built by this master since start.",
            ),
            snapshot_installs: gauge(
                reg,
                "keelson_raft_snapshot_installs",
                "Snapshots received and installed by this master since start.",
            ),
            snapshot_bytes: gauge(
                reg,
                "keelson_raft_snapshot_bytes",
                "Size of the current snapshot's data, as sent to a follower that needs it.",
            ),
            snapshot_chunks_refused: counter(
                reg,
                "keelson_raft_snapshot_chunks_refused_total",
                "Snapshot chunks refused: past max_snapshot_bytes, or not continuing the data received.",
            ),
            feed_window_events: gauge(
                reg,
                "keelson_raft_feed_window_events",
                "Events held in the change feed's replay window.",
            ),
            feed_window_bytes: gauge(
                reg,
                "keelson_raft_feed_window_bytes",
                "Bytes (keys, values, previous values) held in the change feed's replay window.",
            ),
            disk_bytes: gauge(
                reg,
                "keelson_raft_disk_bytes",
                "Bytes used by this master's data directory.",
            ),
            objects: gauge(
                reg,
                "keelson_store_objects",
                "Records held by the state machine.",
            ),
            db_size_bytes: gauge(
                reg,
                "keelson_raft_db_size_bytes",
                "This master's database size as RocksDB accounts it (SST files and memtables), what the quota is compared with.",
            ),
            quota_bytes: gauge(
                reg,
                "keelson_raft_quota_backend_bytes",
                "The space quota (--quota-backend-bytes; 0: none).",
            ),
            alarm_nospace: gauge(
                reg,
                "keelson_raft_alarm_nospace",
                "1 while the replicated NOSPACE alarm is raised: writes that store a value are refused, deletes go through.",
            ),
            storage_failed: gauge(
                reg,
                "keelson_raft_storage_failed",
                "1 once this master's storage failed (a write to RocksDB or a snapshot did not complete): it serves nothing until restarted.",
            ),
            disk_full: gauge(
                reg,
                "keelson_raft_alarm_disk_full",
                "1 once this master's storage failed because its disk is full (ENOSPC): it exits when space is freed, for its supervisor to restart it.",
            ),
        }
    }
}
