//! The checkers: each reads recorded histories and returns [`Violation`]s (empty when every
//! property holds).
//!
//! - [`linear`]: linearizability of the register history (per key).
//! - [`appends`]: no acknowledged create lost, nothing applied that certainly failed.
//! - [`leaders`]: at most one leader per term.
//! - [`watches`]: every watcher saw the same events, in order, without a gap.
//! - [`Invariant`]: the hook for controller invariants (replica counts, a pod bound once)
//!   once the object API and controllers exist.

pub mod appends;
pub mod leaders;
pub mod linear;
pub mod watches;

use serde::{Deserialize, Serialize};

/// A property that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which checker: `linearizability`, `lost-write`, `leaders`, `watch`, `liveness`, or an
    /// [`Invariant::name`].
    pub checker: String,
    pub message: String,
}

impl Violation {
    /// A violation found by `checker`.
    pub fn new(checker: &str, message: impl Into<String>) -> Violation {
        Violation {
            checker: checker.to_string(),
            message: message.into(),
        }
    }
}

/// The store as the campaign leaves it: a linearizable list of every key after every fault was
/// healed, plus every event the watchers saw. Controller invariants read it.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// `(key, value, resourceVersion)` of every key, in key order.
    pub items: Vec<(String, String, u64)>,
    /// The list's resource version.
    pub rv: u64,
    /// Every distinct watch event under the campaign's prefix, by resource version.
    pub events: Vec<crate::history::WatchEvent>,
}

/// A domain invariant checked at the end of a campaign, on the healed store.
///
/// The Kubernetes object API and its controllers do not exist yet; when they do, their
/// invariants plug in here (and into [`crate::campaign::Config::invariants`]), e.g.:
///
/// - "a ReplicaSet with `spec.replicas = n` owns exactly `n` live pods" (read the pods and
///   replica sets from [`FinalState::items`]);
/// - "no pod was ever bound to two nodes" (scan [`FinalState::events`] for a pod whose
///   `spec.nodeName` changed from one non-empty value to another).
///
/// A workload driving those objects would be added beside the register and append workloads.
pub trait Invariant: Send + Sync {
    /// Names the violations this invariant reports.
    fn name(&self) -> &str;
    /// The violations found in `state` (empty when the invariant holds).
    fn check(&self, state: &FinalState) -> Vec<Violation>;
}
