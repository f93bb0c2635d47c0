//! The checkers: each reads recorded histories and returns [`Violation`]s (empty when every
//! property holds).
//!
//! - [`linear`]: linearizability of the register history (per key).
//! - [`appends`]: no acknowledged create lost, nothing applied that certainly failed.
//! - [`leaders`]: at most one leader per term.
//! - [`watches`]: every watcher saw the same events, in order, without a gap.
//! - [`Invariant`]: the hook for domain invariants on the healed cluster; [`controller`] holds
//!   the replication controller's (exact replica count, no pod bound twice), and
//!   [`over_replicas`] that no controller ever holds more live pods than `spec.replicas`.

pub mod appends;
pub mod controller;
pub mod leaders;
pub mod linear;
pub mod over_replicas;
pub mod watches;

use serde::{Deserialize, Serialize};

/// A property that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which checker: `linearizability`, `lost-write`, `leaders`, `watch`, `liveness`, or an
    /// [`Invariant::name`].
    pub checker: String,
    /// What went wrong, within the checker (e.g. `bound-twice`, `count`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub message: String,
}

impl Violation {
    /// A violation found by `checker`.
    pub fn new(checker: &str, message: impl Into<String>) -> Violation {
        Violation {
            checker: checker.to_string(),
            kind: None,
            message: message.into(),
        }
    }

    /// A violation of kind `kind` found by `checker`.
    pub fn with_kind(checker: &str, kind: &str, message: impl Into<String>) -> Violation {
        Violation {
            kind: Some(kind.to_string()),
            ..Violation::new(checker, message)
        }
    }

    /// `checker` or `checker/kind`.
    pub fn label(&self) -> String {
        match &self.kind {
            Some(k) => format!("{}/{k}", self.checker),
            None => self.checker.clone(),
        }
    }
}

/// The store as the campaign leaves it: a linearizable list of every key after every fault was
/// healed, plus every event the watchers saw, and (with the controller workload) the
/// replication controller and its pods. Invariants read it.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// `(key, value, resourceVersion)` of every key, in key order.
    pub items: Vec<(String, String, u64)>,
    /// The list's resource version.
    pub rv: u64,
    /// Every distinct watch event under the campaign's prefix, by resource version.
    pub events: Vec<crate::history::WatchEvent>,
    /// The controller workload's end state, when it ran.
    pub controller: Option<controller::ControllerFinal>,
}

/// A domain invariant checked at the end of a campaign, on the healed cluster.
///
/// The campaign adds [`controller::ReplicaCount`] ("the controller owns exactly
/// `spec.replicas` live pods, and says so in its status"), [`controller::BoundOnce`] ("no
/// pod was ever bound to two nodes") and [`over_replicas::NeverOverReplicas`] ("no controller
/// ever held more live pods than `spec.replicas`") when the controller workload runs; more
/// can be passed in
/// [`crate::config::Config::invariants`].
pub trait Invariant: Send + Sync {
    /// Names the violations this invariant reports.
    fn name(&self) -> &str;
    /// The violations found in `state` (empty when the invariant holds).
    fn check(&self, state: &FinalState) -> Vec<Violation>;
}
