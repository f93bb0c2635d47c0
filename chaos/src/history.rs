//! What the workloads record: every operation with its invocation and completion times (in
//! microseconds since the campaign started) and its outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::KvError;

/// How an operation ended, as a client can know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: it took effect (or, for a read, it observed the returned state).
    Ok,
    /// Certainly did not take effect, or (for a compare-and-set) definitely refused by the
    /// state machine (409 / 404, see [`RegisterOp::code`]).
    Fail,
    /// Indeterminate (a timeout, a 504, a dropped connection): a write may take effect at any
    /// time after its invocation, or never.
    Info,
}

impl Outcome {
    /// The outcome of a request that failed with `e`.
    pub fn of_error(e: &KvError) -> Outcome {
        if e.is_definite_failure() {
            Outcome::Fail
        } else {
            Outcome::Info
        }
    }
}

/// The kind of a register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegKind {
    /// A linearizable `GET /kv/{key}`.
    Read,
    /// An unconditional write (`PUT ?upsert=true`).
    Write,
    /// A compare-and-set: `PUT /kv/{key}?resourceVersion=expected_rv`.
    Cas,
}

/// One operation on a register (a key of the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterOp {
    /// The client (a sequential process) that issued it.
    pub client: u32,
    pub key: String,
    pub kind: RegKind,
    /// Written value (write, cas), or the value a successful read returned (`None`: absent).
    /// Every written value is unique in a campaign.
    pub value: Option<String>,
    /// The precondition of a compare-and-set.
    pub expected_rv: Option<u64>,
    /// The resource version returned by a successful operation (for a read: of the value).
    pub rv: Option<u64>,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    /// The HTTP code of a failed request, if the master answered.
    pub code: Option<u16>,
}

impl RegisterOp {
    /// Completion minus invocation.
    pub fn latency_us(&self) -> u64 {
        self.complete_us.saturating_sub(self.invoke_us)
    }
}

/// One create of the append-only workload (every key is created once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendOp {
    pub client: u32,
    pub key: String,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    pub code: Option<u16>,
}

/// One sample of a master's `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderSample {
    pub t_us: u64,
    /// The master that answered.
    pub id: u64,
    pub term: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner`.
    pub state: String,
    /// The leader it believes in.
    pub leader: Option<u64>,
}

/// One change a watcher received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: String,
    pub key: String,
    pub value: String,
    pub rv: u64,
}

/// How a watch segment started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SegmentStart {
    /// After a linearizable list at `start_rv` (the first segment, or after an `ERROR`/410):
    /// the listed `(key, value, rv)`.
    Listed(Vec<(String, String, u64)>),
    /// Resumed from the last version seen, on another (or the same) master.
    Resumed,
}

/// Events received over one watch connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchSegment {
    pub master: u64,
    pub start_rv: u64,
    pub start: SegmentStart,
    pub events: Vec<WatchEvent>,
    /// The connection ended with an `ERROR` event (410): the watcher re-lists.
    pub expired: bool,
}

/// Everything one watcher saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchLog {
    pub watcher: u32,
    pub segments: Vec<WatchSegment>,
}

/// One scale of the replication controller (`PATCH .../scale` with the version just read as a
/// precondition), by the single scaler client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleOp {
    /// The desired replicas asked for.
    pub replicas: i64,
    /// The controller's resource version the scale was conditioned on.
    pub expected_rv: String,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    pub code: Option<u16>,
}

/// Where a binding observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingSource {
    /// A (linearizable) list of the pods watcher.
    List,
    /// A watch event.
    Watch,
    /// The final list after healing.
    Final,
}

/// A pod as the pods watcher (or a list) saw it at one resource version: which node it was
/// bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingObs {
    pub uid: String,
    /// `namespace/name`.
    pub pod: String,
    /// `spec.nodeName` (empty: not bound).
    pub node: String,
    /// The object's resource version.
    pub rv: u64,
    pub phase: String,
    pub t_us: u64,
    pub source: BindingSource,
}

/// A pod as the over-replicas check needs it ([`crate::checker::over_replicas`]), at one
/// resource version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSeen {
    pub uid: String,
    /// `namespace/name`.
    pub pod: String,
    pub rv: u64,
    /// The uid of its controlling owner reference (empty: none).
    pub owner: String,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    pub phase: String,
}

/// A replication controller's desired replicas at one resource version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcSeen {
    pub uid: String,
    /// `namespace/name`.
    pub name: String,
    pub rv: u64,
    /// `spec.replicas` (1 when unset).
    pub replicas: i64,
}

/// What a collection watcher saw, in the order it saw it: a list is the whole collection at
/// its version (the first, and after every `ERROR`/410, when the versions between the last
/// one reached and the list's are not observed); events follow, in version order, from the
/// list's version on, across resumed watches; `Reached` is where a watch connection ended (it
/// had seen every change up to there, bookmarks included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seen<T> {
    Listed {
        rv: u64,
        items: Vec<T>,
    },
    /// `ADDED`, `MODIFIED` or `DELETED` (the object at its deletion's version).
    Event {
        kind: String,
        item: T,
    },
    Reached {
        rv: u64,
    },
}

/// Outcome counts of a list of outcomes.
pub fn count(outcomes: impl Iterator<Item = Outcome>) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::from([("ok", 0), ("fail", 0), ("info", 0)]);
    for o in outcomes {
        let k = match o {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}
