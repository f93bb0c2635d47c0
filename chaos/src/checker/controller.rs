//! The replication controller's invariants, checked on the healed cluster:
//!
//! - [`ReplicaCount`] (`replica-count`): the controller's live pods (matching its selector,
//!   owned by it or by nobody, not `Succeeded`/`Failed`, not being deleted) number exactly
//!   `spec.replicas`, `status.replicas` says the same (kinds `count`, `status`), and
//!   `spec.replicas` is a value the scale history allows (kind `lost-scale`: the last
//!   acknowledged scale, or an indeterminate one after it); the controller must exist (kind
//!   `missing`).
//! - [`BoundOnce`] (`pod-binding`): over every observation of a pod during the campaign (lists
//!   and watch events of the pods watcher, and the final list), a pod uid is bound to at most
//!   one node (kind `bound-twice`), and once bound it is never seen unbound at a later version
//!   (kind `unbound`).

use std::collections::{BTreeMap, BTreeSet};

use keelson_model::owners::controller_uid;
use serde::Serialize;
use serde_json::Value;

use super::{FinalState, Invariant, Violation};
use crate::history::{BindingObs, Outcome, PodSeen, RcSeen, ScaleOp, Seen};

/// The controller workload as the campaign leaves it.
#[derive(Debug, Clone, Default)]
pub struct ControllerFinal {
    pub namespace: String,
    pub name: String,
    /// The controller as last read (once its count was exact, or at the deadline); `None`:
    /// not found.
    pub rc: Option<Value>,
    /// The pods of its namespace matching its selector, read right after `rc`.
    pub pods: Vec<Value>,
    /// The values `spec.replicas` may end at (see [`acceptable_replicas`]).
    pub acceptable: BTreeSet<i64>,
    /// Every binding observation of the campaign.
    pub bindings: Vec<BindingObs>,
    /// Every pod (all namespaces) over the campaign: lists and events, as the pods watcher saw
    /// them ([`super::over_replicas`]).
    pub pod_log: Vec<Seen<PodSeen>>,
    /// Every replication controller's `spec.replicas` over the campaign, as the controllers
    /// watcher saw them.
    pub rc_log: Vec<Seen<RcSeen>>,
    /// Heal → first exact count, seconds (`None`: not within `bound_s`).
    pub converged_after_s: Option<f64>,
    /// How long the count was given to become exact after the heal, seconds.
    pub bound_s: f64,
}

/// The values `spec.replicas` may end at after the scales `ops` (one sequential client, in
/// order) of a controller created with `initial`: the last acknowledged value, or the value of
/// any indeterminate scale after it. Scales carry the version they read as a precondition, so
/// an indeterminate scale cannot take effect after a later acknowledged one.
pub fn acceptable_replicas(initial: i64, ops: &[ScaleOp]) -> BTreeSet<i64> {
    let last_ok = ops.iter().rposition(|o| o.outcome == Outcome::Ok);
    let (base, rest) = match last_ok {
        Some(k) => (ops[k].replicas, &ops[k + 1..]),
        None => (initial, ops),
    };
    std::iter::once(base)
        .chain(
            rest.iter()
                .filter(|o| o.outcome == Outcome::Info)
                .map(|o| o.replicas),
        )
        .collect()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// `spec.replicas` (1 when unset, as the controller reads it).
pub fn desired(rc: &Value) -> i64 {
    rc.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0)
}

/// The pods that count towards `rc`: in its namespace, matching its selector, owned by it or
/// by nobody, not terminal, not being deleted.
pub fn live_pods<'a>(rc: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let ns = str_at(rc, "/metadata/namespace");
    let uid = str_at(rc, "/metadata/uid");
    let selector: BTreeMap<String, String> = rc
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    pods.iter()
        .filter(|p| str_at(p, "/metadata/namespace") == ns)
        .filter(|p| {
            selector.iter().all(|(k, v)| {
                p.pointer("/metadata/labels").and_then(|l| l.get(k))
                    == Some(&Value::from(v.as_str()))
            })
        })
        .filter(|p| controller_uid(p).is_none_or(|u| u == uid))
        .filter(|p| !matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed"))
        .filter(|p| {
            p.pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
        })
        .collect()
}

/// Exact replica count after healing.
pub struct ReplicaCount;

impl Invariant for ReplicaCount {
    fn name(&self) -> &str {
        "replica-count"
    }

    fn check(&self, state: &FinalState) -> Vec<Violation> {
        let Some(c) = &state.controller else {
            return Vec::new();
        };
        let name = self.name();
        let Some(rc) = &c.rc else {
            return vec![Violation::with_kind(
                name,
                "missing",
                format!(
                    "controller {}/{} not found (or never read) after healing",
                    c.namespace, c.name
                ),
            )];
        };
        let mut v = Vec::new();
        let want = desired(rc);
        if !c.acceptable.contains(&want) {
            v.push(Violation::with_kind(
                name,
                "lost-scale",
                format!(
                    "{}/{}: spec.replicas is {want}, but the scales allow only {:?}",
                    c.namespace, c.name, c.acceptable
                ),
            ));
        }
        let live = live_pods(rc, &c.pods);
        let when = match c.converged_after_s {
            Some(s) => format!("{s:.1}s after the heal"),
            None => format!("still {:.0}s after the heal", c.bound_s),
        };
        if live.len() as i64 != want {
            let names: Vec<&str> = live.iter().map(|p| str_at(p, "/metadata/name")).collect();
            v.push(Violation::with_kind(
                name,
                "count",
                format!(
                    "{}/{}: {} live pods {names:?} but spec.replicas = {want}, {when}",
                    c.namespace,
                    c.name,
                    live.len()
                ),
            ));
        }
        let status = rc.pointer("/status/replicas").and_then(Value::as_i64);
        if status != Some(want) {
            v.push(Violation::with_kind(
                name,
                "status",
                format!(
                    "{}/{}: status.replicas is {status:?} but spec.replicas = {want}, {when}",
                    c.namespace, c.name
                ),
            ));
        }
        v
    }
}

/// No pod bound twice.
pub struct BoundOnce;

/// At most this many violations of one kind are listed one by one.
const LIST_AT_MOST: usize = 10;

impl Invariant for BoundOnce {
    fn name(&self) -> &str {
        "pod-binding"
    }

    fn check(&self, state: &FinalState) -> Vec<Violation> {
        let Some(c) = &state.controller else {
            return Vec::new();
        };
        check_bindings(self.name(), &c.bindings)
    }
}

/// The `bound-twice` and `unbound` violations in `obs`.
pub fn check_bindings(checker: &str, obs: &[BindingObs]) -> Vec<Violation> {
    let mut by_uid: BTreeMap<&str, Vec<&BindingObs>> = BTreeMap::new();
    for o in obs.iter().filter(|o| !o.uid.is_empty()) {
        by_uid.entry(&o.uid).or_default().push(o);
    }
    let mut twice = Vec::new();
    let mut unbound = Vec::new();
    for (uid, mut seen) in by_uid {
        seen.sort_by_key(|o| (o.rv, o.t_us));
        let mut first_on: BTreeMap<&str, &BindingObs> = BTreeMap::new();
        for o in seen.iter().filter(|o| !o.node.is_empty()) {
            first_on.entry(&o.node).or_insert(o);
        }
        if first_on.len() > 1 {
            let on: Vec<String> = first_on
                .values()
                .map(|o| format!("{} (version {}, {:?})", o.node, o.rv, o.source))
                .collect();
            twice.push(format!(
                "pod {} (uid {uid}) bound to {} nodes: {}",
                seen[0].pod,
                on.len(),
                on.join(", ")
            ));
        }
        if let Some(bound) = seen.iter().find(|o| !o.node.is_empty()) {
            if let Some(later) = seen.iter().find(|o| o.node.is_empty() && o.rv > bound.rv) {
                unbound.push(format!(
                    "pod {} (uid {uid}) bound to {} at version {} but unbound at version {} ({:?})",
                    bound.pod, bound.node, bound.rv, later.rv, later.source
                ));
            }
        }
    }
    let mut v = Vec::new();
    for (kind, found) in [("bound-twice", twice), ("unbound", unbound)] {
        let n = found.len();
        for m in found.into_iter().take(LIST_AT_MOST) {
            v.push(Violation::with_kind(checker, kind, m));
        }
        if n > LIST_AT_MOST {
            v.push(Violation::with_kind(
                checker,
                kind,
                format!("... and {} more pods", n - LIST_AT_MOST),
            ));
        }
    }
    v
}

/// What the binding check looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BindingStats {
    pub observations: usize,
    /// Distinct pod uids seen.
    pub pods: usize,
    /// Distinct pod uids seen bound to a node.
    pub bound: usize,
    /// Distinct nodes pods were bound to.
    pub nodes: usize,
}

/// Figures of `obs`.
pub fn binding_stats(obs: &[BindingObs]) -> BindingStats {
    let pods: BTreeSet<&str> = obs.iter().map(|o| o.uid.as_str()).collect();
    let bound: BTreeSet<&str> = obs
        .iter()
        .filter(|o| !o.node.is_empty())
        .map(|o| o.uid.as_str())
        .collect();
    let nodes: BTreeSet<&str> = obs
        .iter()
        .filter(|o| !o.node.is_empty())
        .map(|o| o.node.as_str())
        .collect();
    BindingStats {
        observations: obs.len(),
        pods: pods.len(),
        bound: bound.len(),
        nodes: nodes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::BindingSource;
    use serde_json::json;

    fn obs(uid: &str, node: &str, rv: u64, source: BindingSource) -> BindingObs {
        BindingObs {
            uid: uid.into(),
            pod: format!("default/{uid}"),
            node: node.into(),
            rv,
            phase: "Running".into(),
            t_us: rv * 10,
            source,
        }
    }

    fn state(c: ControllerFinal) -> FinalState {
        FinalState {
            controller: Some(c),
            ..FinalState::default()
        }
    }

    fn rc(replicas: i64, status: i64) -> Value {
        json!({"metadata": {"name": "mysiteController", "namespace": "default", "uid": "rc-1"},
               "spec": {"replicas": replicas, "selector": {"name": "mysite"}},
               "status": {"replicas": status}})
    }

    fn pod(name: &str, phase: &str, owner: Option<&str>) -> Value {
        let refs = owner.map_or(
            json!([]),
            |u| json!([{"kind": "ReplicationController", "uid": u, "controller": true}]),
        );
        json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"name": "mysite"}, "ownerReferences": refs},
               "spec": {"nodeName": "n1"}, "status": {"phase": phase}})
    }

    fn scale(replicas: i64, outcome: Outcome) -> ScaleOp {
        ScaleOp {
            replicas,
            expected_rv: "1".into(),
            invoke_us: 0,
            complete_us: 0,
            outcome,
            code: None,
        }
    }

    #[test]
    fn a_pod_bound_to_two_nodes_is_reported() {
        let h = vec![
            obs("p1", "", 10, BindingSource::Watch),
            obs("p1", "node-a", 11, BindingSource::Watch),
            obs("p2", "node-b", 12, BindingSource::Watch),
            obs("p1", "node-b", 15, BindingSource::Watch),
            obs("p1", "node-b", 20, BindingSource::Final),
        ];
        let v = BoundOnce.check(&state(ControllerFinal {
            bindings: h,
            ..Default::default()
        }));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, "pod-binding");
        assert_eq!(v[0].kind.as_deref(), Some("bound-twice"));
        assert!(v[0].message.contains("node-a") && v[0].message.contains("node-b"));
    }

    #[test]
    fn observations_out_of_order_from_two_sources_still_count() {
        // A list on one master and a watch on another, recorded out of version order.
        let h = vec![
            obs("p1", "node-b", 30, BindingSource::List),
            obs("p1", "node-a", 12, BindingSource::Watch),
        ];
        let v = check_bindings("pod-binding", &h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind.as_deref(), Some("bound-twice"));
    }

    #[test]
    fn a_pod_unbound_after_binding_is_reported() {
        let h = vec![
            obs("p1", "node-a", 11, BindingSource::Watch),
            obs("p1", "", 14, BindingSource::Watch),
        ];
        let v = check_bindings("pod-binding", &h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind.as_deref(), Some("unbound"));
    }

    #[test]
    fn a_clean_binding_history_passes() {
        let h = vec![
            obs("p1", "", 10, BindingSource::List),
            obs("p1", "node-a", 11, BindingSource::Watch),
            obs("p1", "node-a", 12, BindingSource::Watch),
            // A replacement pod of the same name is another uid.
            obs("p2", "node-b", 13, BindingSource::Watch),
            obs("p1", "node-a", 40, BindingSource::Final),
        ];
        assert!(check_bindings("pod-binding", &h).is_empty());
        let st = binding_stats(&h);
        assert_eq!((st.observations, st.pods, st.bound, st.nodes), (5, 2, 2, 2));
    }

    #[test]
    fn many_pods_bound_twice_are_summarized() {
        let h: Vec<BindingObs> = (0..15)
            .flat_map(|i| {
                let uid = format!("p{i}");
                [
                    obs(&uid, "node-a", 10 + i, BindingSource::Watch),
                    obs(&uid, "node-b", 50 + i, BindingSource::Watch),
                ]
            })
            .collect();
        let v = check_bindings("pod-binding", &h);
        assert_eq!(v.len(), LIST_AT_MOST + 1);
        assert!(v.last().unwrap().message.contains("5 more"));
    }

    #[test]
    fn the_wrong_count_is_reported() {
        let c = ControllerFinal {
            namespace: "default".into(),
            name: "mysiteController".into(),
            rc: Some(rc(2, 2)),
            pods: vec![
                pod("a", "Running", Some("rc-1")),
                pod("b", "Running", Some("rc-1")),
                pod("c", "Pending", None),
            ],
            acceptable: BTreeSet::from([2]),
            bound_s: 30.0,
            ..Default::default()
        };
        let v = ReplicaCount.check(&state(c));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, "replica-count");
        assert_eq!(v[0].kind.as_deref(), Some("count"));
        assert!(v[0].message.contains("3 live pods"), "{}", v[0].message);
    }

    #[test]
    fn the_exact_count_passes_and_terminal_or_foreign_pods_do_not_count() {
        let mut other = pod("x", "Running", Some("another-rc"));
        other["metadata"]["labels"]["name"] = json!("mysite");
        let mut unlabeled = pod("y", "Running", None);
        unlabeled["metadata"]["labels"] = json!({"name": "other"});
        let c = ControllerFinal {
            namespace: "default".into(),
            name: "mysiteController".into(),
            rc: Some(rc(2, 2)),
            pods: vec![
                pod("a", "Running", Some("rc-1")),
                pod("b", "Pending", None),
                pod("f", "Failed", Some("rc-1")),
                pod("s", "Succeeded", Some("rc-1")),
                other,
                unlabeled,
            ],
            acceptable: BTreeSet::from([2, 4]),
            converged_after_s: Some(1.5),
            bound_s: 30.0,
            ..Default::default()
        };
        assert!(ReplicaCount.check(&state(c)).is_empty());
    }

    #[test]
    fn a_stale_status_a_lost_scale_and_a_missing_controller_are_reported() {
        let c = ControllerFinal {
            namespace: "default".into(),
            name: "mysiteController".into(),
            rc: Some(rc(3, 1)),
            pods: (0..3)
                .map(|i| pod(&format!("p{i}"), "Running", Some("rc-1")))
                .collect(),
            acceptable: BTreeSet::from([5]),
            bound_s: 30.0,
            ..Default::default()
        };
        let kinds: Vec<Option<String>> = ReplicaCount
            .check(&state(c.clone()))
            .into_iter()
            .map(|v| v.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![Some("lost-scale".into()), Some("status".into())]
        );
        let gone = ControllerFinal { rc: None, ..c };
        let v = ReplicaCount.check(&state(gone));
        assert_eq!(v[0].kind.as_deref(), Some("missing"));
        // Without the controller workload there is nothing to check.
        assert!(ReplicaCount.check(&FinalState::default()).is_empty());
        assert!(BoundOnce.check(&FinalState::default()).is_empty());
    }

    #[test]
    fn acceptable_values_follow_the_last_acknowledged_scale() {
        use Outcome::*;
        assert_eq!(acceptable_replicas(2, &[]), BTreeSet::from([2]));
        assert_eq!(
            acceptable_replicas(2, &[scale(4, Info), scale(1, Fail)]),
            BTreeSet::from([2, 4])
        );
        assert_eq!(
            acceptable_replicas(
                2,
                &[
                    scale(4, Info),
                    scale(3, Ok),
                    scale(5, Fail),
                    scale(1, Info),
                    scale(4, Info)
                ]
            ),
            BTreeSet::from([1, 3, 4])
        );
        assert_eq!(
            acceptable_replicas(2, &[scale(4, Ok), scale(1, Ok)]),
            BTreeSet::from([1])
        );
    }
}
