//! What a campaign is asked to run ([`Config`]), below the campaign and its report, which both
//! read it.

use std::path::PathBuf;
use std::time::Duration;

use crate::checker::Invariant;
use crate::faults::{FaultKind, Timing};

/// What to run.
pub struct Config {
    /// The `keelson` binary.
    pub keelson: PathBuf,
    pub masters: u64,
    /// How long faults are injected (the campaign also starts, heals and checks).
    pub duration: Duration,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    pub timing: Timing,
    /// Extra flags for every `keelson master`, e.g. a test-only broken mode.
    pub master_args: Vec<String>,
    pub register_clients: u32,
    pub register_keys: usize,
    pub appenders: u32,
    pub watchers: u32,
    /// Per-request timeout of the workload clients (above the masters' request timeout, so
    /// most failures are answered rather than timed out).
    pub client_timeout: Duration,
    /// Where masters keep their data and logs (kept); a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// States the linearizability search may explore per key before it gives up.
    pub search_limit: usize,
    /// Domain invariants checked on the healed store (see [`Invariant`]), besides the
    /// controller workload's own.
    pub invariants: Vec<Box<dyn Invariant>>,
    /// The controller workload: hollow agents, the seed's replication controller scaled
    /// during the campaign, a pods watcher and a controllers watcher; checked by
    /// [`crate::checker::controller::ReplicaCount`],
    /// [`crate::checker::controller::BoundOnce`] and
    /// [`crate::checker::over_replicas::NeverOverReplicas`].
    pub controllers: bool,
    /// With the controller workload: replication controllers created all at once at the start
    /// of the campaign besides the seed's (`chaos-burst-1..N`, never scaled), each of
    /// [`Config::burst_replicas`]; every one is checked by
    /// [`crate::checker::over_replicas::NeverOverReplicas`]. 0: none.
    pub burst_controllers: u32,
    /// `spec.replicas` of each burst controller.
    pub burst_replicas: i64,
    /// Hollow agents of the controller workload.
    pub agents: u32,
    /// The values the scaler picks from.
    pub scale_values: Vec<i64>,
    /// Time between two scales (random within the range).
    pub scale_every: (Duration, Duration),
    /// How long after the heal the controller has to be back at its exact count.
    pub controller_bound: Duration,
    /// Register reads from the answering replica (`resourceVersion=0`) instead of
    /// linearizable ones: a deliberately wrong client, to show the checker catches stale reads
    /// end to end (the campaign must then report violations).
    pub local_reads: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl Config {
    /// Defaults for `masters` masters of `keelson`.
    pub fn new(keelson: PathBuf, masters: u64) -> Config {
        Config {
            keelson,
            masters,
            duration: Duration::from_secs(60),
            seed: 1,
            faults: vec![
                FaultKind::KillLeader,
                FaultKind::KillMinority,
                FaultKind::KillAll,
                FaultKind::PauseLeader,
                FaultKind::PartitionLeader,
            ],
            timing: Timing::default(),
            master_args: Vec::new(),
            register_clients: 4,
            register_keys: 3,
            appenders: 2,
            watchers: 3,
            client_timeout: Duration::from_secs(5),
            work_dir: None,
            search_limit: 2_000_000,
            invariants: Vec::new(),
            controllers: false,
            burst_controllers: 0,
            burst_replicas: 0,
            agents: 3,
            scale_values: vec![1, 2, 3, 4],
            scale_every: (Duration::from_millis(1000), Duration::from_millis(2500)),
            controller_bound: Duration::from_secs(30),
            local_reads: false,
            verbose: false,
        }
    }
}
