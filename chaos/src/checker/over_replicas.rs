//! [`NeverOverReplicas`] (`over-replicas`): over the whole campaign, at every resource version
//! (one global, totally ordered clock across all keys), no replication controller holds more
//! live pods than its `spec.replicas`.
//!
//! A pod is live for a controller when its controlling owner reference names the
//! controller's uid, it is not terminating (no `metadata.deletionTimestamp`), its phase is not
//! `Succeeded` or `Failed`, and it is not deleted. Every controller the controllers watcher saw
//! is checked, not only the seed's.
//!
//! **Tolerance.** The bound at a version is the larger of the controller's `spec.replicas` at
//! that version and at the controller's own previous version (its previous write, scale or
//! status). A pass of the replication manager reads the controller at one version and its
//! creates land a little later; a scale-down in between is not a mistake of the pass, so a
//! count the controller's previous version allowed is accepted. The manager writes the
//! controller's status after its pods, so the window closes at its next status write (or the
//! next scale). A controller first seen created (`ADDED`) has no previous version: its bound
//! is its `spec.replicas`.
//!
//! **Gaps.** The histories come from two watchers (pods, controllers), each a list followed by
//! watches resumed from the last version seen, which give exactly the remaining events. After
//! an `ERROR`/410 a watcher re-lists: the versions between the last one it reached and the
//! list's are not observed, and the list is a fresh state at its version. Versions are checked
//! only where both histories are known. After a re-list a controller's previous version is not
//! known: a count above its `spec.replicas` then is neither passed nor reported, but counted
//! as undecided ([`OverStats::undecided`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{FinalState, Invariant, Violation};
use crate::history::{PodSeen, RcSeen, Seen};

/// Never more live pods than `spec.replicas` (with the tolerance above), at any version.
pub struct NeverOverReplicas;

impl Invariant for NeverOverReplicas {
    fn name(&self) -> &str {
        "over-replicas"
    }

    fn check(&self, state: &FinalState) -> Vec<Violation> {
        match &state.controller {
            Some(c) => check(self.name(), &c.pod_log, &c.rc_log).0,
            None => Vec::new(),
        }
    }
}

/// What the check looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OverStats {
    pub pod_events: usize,
    pub rc_events: usize,
    /// Distinct controllers (uids) checked.
    pub controllers: usize,
    /// Version ranges `[from, to]` where both histories were known, and checked.
    pub checked: Vec<(u64, u64)>,
    /// Version ranges `(after, before)` one of the watchers did not observe (a re-list).
    pub unobserved: Vec<(u64, u64)>,
    /// Versions evaluated (one per change).
    pub versions: usize,
    /// Controller and version pairs over `spec.replicas` where the controller's previous
    /// version was not known (after a re-list): neither passed nor reported.
    pub undecided: usize,
    /// The most live pods each controller (`namespace/name`) held, and its `spec.replicas`
    /// then.
    pub peak: BTreeMap<String, (usize, i64)>,
}

/// At most this many violations are listed one by one.
const LIST_AT_MOST: usize = 10;

trait Versioned {
    fn rv(&self) -> u64;
}

impl Versioned for PodSeen {
    fn rv(&self) -> u64 {
        self.rv
    }
}

impl Versioned for RcSeen {
    fn rv(&self) -> u64 {
        self.rv
    }
}

/// A stretch of versions `[from, to]` one watcher knew completely: the state listed at `from`,
/// then every event up to `to`.
struct Known<'a, T> {
    from: u64,
    to: u64,
    initial: &'a [T],
    events: Vec<(&'a str, &'a T)>,
}

fn known<T: Versioned>(log: &[Seen<T>]) -> Vec<Known<'_, T>> {
    let mut out: Vec<Known<'_, T>> = Vec::new();
    for s in log {
        match s {
            Seen::Listed { rv, items } => out.push(Known {
                from: *rv,
                to: *rv,
                initial: items,
                events: Vec::new(),
            }),
            Seen::Event { kind, item } => {
                if let Some(k) = out.last_mut().filter(|k| item.rv() > k.from) {
                    k.events.push((kind.as_str(), item));
                    k.to = k.to.max(item.rv());
                }
            }
            Seen::Reached { rv } => {
                if let Some(k) = out.last_mut() {
                    k.to = k.to.max(*rv);
                }
            }
        }
    }
    for k in &mut out {
        k.events.sort_by_key(|e| e.1.rv());
    }
    out
}

/// The versions `(after, before)` between two stretches.
fn unobserved<T>(ks: &[Known<'_, T>]) -> Vec<(u64, u64)> {
    ks.windows(2)
        .filter(|w| w[1].from > w[0].to)
        .map(|w| (w[0].to, w[1].from))
        .collect()
}

/// The controller's previous version's `spec.replicas`, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// Seen created: there is none.
    Created,
    /// Its `spec.replicas` and version.
    Value(i64, u64),
    /// Listed (first list, or a re-list): not observed.
    Unknown,
}

struct Rc<'a> {
    name: &'a str,
    rv: u64,
    replicas: i64,
    prev: Prev,
}

/// A stretch of versions where a controller held too many pods.
struct Excess {
    name: String,
    uid: String,
    first_rv: u64,
    count: usize,
    replicas: i64,
    rc_rv: u64,
    prev: Prev,
    max_count: usize,
    max_rv: u64,
    /// `None`: still over at the end of the checked window.
    until: Option<u64>,
    window_end: u64,
}

impl Excess {
    fn message(&self) -> String {
        let allowed = match self.prev {
            Prev::Value(p, at) => format!(
                "spec.replicas is {} (its version {}; {p} at its previous version {at})",
                self.replicas, self.rc_rv
            ),
            _ => format!(
                "spec.replicas is {} (created at version {})",
                self.replicas, self.rc_rv
            ),
        };
        let end = match self.until {
            Some(v) => format!("back within the bound at version {v}"),
            None => format!(
                "still over at version {}, the end of the checked window",
                self.window_end
            ),
        };
        format!(
            "controller {} (uid {}): {} live pods at version {} but {allowed}; at most {} live pods (version {}), {end}",
            self.name, self.uid, self.count, self.first_rv, self.max_count, self.max_rv
        )
    }
}

fn live(p: &PodSeen) -> bool {
    !p.terminating && !matches!(p.phase.as_str(), "Succeeded" | "Failed")
}

/// The state of one window's replay.
#[derive(Default)]
struct Replay<'a> {
    pods: HashMap<&'a str, &'a PodSeen>,
    /// Live pods by owner uid.
    live: HashMap<&'a str, usize>,
    rcs: BTreeMap<&'a str, Rc<'a>>,
    open: HashMap<&'a str, Excess>,
    found: Vec<Excess>,
    undecided: usize,
    versions: usize,
    peak: BTreeMap<String, (usize, i64)>,
}

impl<'a> Replay<'a> {
    fn pod(&mut self, kind: &str, p: &'a PodSeen) {
        if let Some(old) = self.pods.remove(p.uid.as_str()) {
            if live(old) {
                if let Some(n) = self.live.get_mut(old.owner.as_str()) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        if kind != "DELETED" {
            self.pods.insert(&p.uid, p);
            if live(p) {
                *self.live.entry(&p.owner).or_default() += 1;
            }
        }
    }

    fn rc(&mut self, kind: &str, r: &'a RcSeen, listed: bool) {
        if kind == "DELETED" {
            self.rcs.remove(r.uid.as_str());
            return;
        }
        let prev = match (listed, self.rcs.get(r.uid.as_str())) {
            (true, _) => Prev::Unknown,
            (false, Some(old)) => Prev::Value(old.replicas, old.rv),
            (false, None) if kind == "ADDED" => Prev::Created,
            (false, None) => Prev::Unknown,
        };
        self.rcs.insert(
            &r.uid,
            Rc {
                name: &r.name,
                rv: r.rv,
                replicas: r.replicas,
                prev,
            },
        );
    }

    /// Judges every controller at version `v` (after every change at `v`).
    fn judge(&mut self, v: u64, window_end: u64) {
        self.versions += 1;
        for (uid, rc) in &self.rcs {
            let n = self.live.get(uid).copied().unwrap_or(0);
            let peak = self
                .peak
                .entry(rc.name.to_string())
                .or_insert((0, rc.replicas));
            if n > peak.0 {
                *peak = (n, rc.replicas);
            }
            let over = n as i64 > rc.replicas;
            let bound = match rc.prev {
                Prev::Value(p, _) => rc.replicas.max(p),
                _ => rc.replicas,
            };
            if over && rc.prev == Prev::Unknown {
                self.undecided += 1;
                continue;
            }
            if n as i64 > bound {
                let e = self.open.entry(*uid).or_insert_with(|| Excess {
                    name: rc.name.to_string(),
                    uid: uid.to_string(),
                    first_rv: v,
                    count: n,
                    replicas: rc.replicas,
                    rc_rv: rc.rv,
                    prev: rc.prev,
                    max_count: n,
                    max_rv: v,
                    until: None,
                    window_end,
                });
                if n > e.max_count {
                    e.max_count = n;
                    e.max_rv = v;
                }
            } else if let Some(mut e) = self.open.remove(uid) {
                e.until = Some(v);
                self.found.push(e);
            }
        }
        // A controller deleted while over.
        let gone: Vec<&str> = self
            .open
            .keys()
            .copied()
            .filter(|u| !self.rcs.contains_key(u))
            .collect();
        for u in gone {
            if let Some(mut e) = self.open.remove(u) {
                e.until = Some(v);
                self.found.push(e);
            }
        }
    }
}

/// Replays the pods window `p` and the controllers window `r` over `[lo, hi]`.
fn replay<'a>(
    p: &Known<'a, PodSeen>,
    r: &Known<'a, RcSeen>,
    lo: u64,
    hi: u64,
    out: &mut Replay<'a>,
) {
    let mut st = Replay::default();
    for pod in p.initial {
        st.pod("ADDED", pod);
    }
    for rc in r.initial {
        st.rc("ADDED", rc, true);
    }
    let (mut i, mut j) = (0, 0);
    while i < p.events.len() && p.events[i].1.rv <= lo {
        st.pod(p.events[i].0, p.events[i].1);
        i += 1;
    }
    while j < r.events.len() && r.events[j].1.rv <= lo {
        st.rc(r.events[j].0, r.events[j].1, false);
        j += 1;
    }
    st.judge(lo, hi);
    loop {
        let next = [
            p.events.get(i).map(|e| e.1.rv),
            r.events.get(j).map(|e| e.1.rv),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(v) = next.filter(|v| *v <= hi) else {
            break;
        };
        while i < p.events.len() && p.events[i].1.rv == v {
            st.pod(p.events[i].0, p.events[i].1);
            i += 1;
        }
        while j < r.events.len() && r.events[j].1.rv == v {
            st.rc(r.events[j].0, r.events[j].1, false);
            j += 1;
        }
        st.judge(v, hi);
    }
    out.found.append(&mut st.found);
    out.found.extend(st.open.into_values());
    out.undecided += st.undecided;
    out.versions += st.versions;
    for (name, (n, want)) in st.peak {
        let e = out.peak.entry(name).or_insert((n, want));
        if n > e.0 {
            *e = (n, want);
        }
    }
}

/// The violations in the pods history `pods` and the controllers history `rcs`, and what was
/// checked.
pub fn check(
    checker: &str,
    pods: &[Seen<PodSeen>],
    rcs: &[Seen<RcSeen>],
) -> (Vec<Violation>, OverStats) {
    let kp = known(pods);
    let kr = known(rcs);
    let mut stats = OverStats {
        pod_events: kp.iter().map(|k| k.events.len()).sum(),
        rc_events: kr.iter().map(|k| k.events.len()).sum(),
        unobserved: [unobserved(&kp), unobserved(&kr)].concat(),
        ..OverStats::default()
    };
    stats.unobserved.sort_unstable();
    let mut uids: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for k in &kr {
        uids.extend(k.initial.iter().map(|r| r.uid.as_str()));
        uids.extend(k.events.iter().map(|e| e.1.uid.as_str()));
    }
    stats.controllers = uids.len();
    let mut all = Replay::default();
    for p in &kp {
        for r in &kr {
            let (lo, hi) = (p.from.max(r.from), p.to.min(r.to));
            if lo > hi {
                continue;
            }
            stats.checked.push((lo, hi));
            replay(p, r, lo, hi, &mut all);
        }
    }
    stats.checked.sort_unstable();
    stats.undecided = all.undecided;
    stats.versions = all.versions;
    stats.peak = all.peak;
    let mut found = all.found;
    found.sort_by_key(|e| (e.first_rv, e.name.clone()));
    let n = found.len();
    let mut v: Vec<Violation> = found
        .iter()
        .take(LIST_AT_MOST)
        .map(|e| Violation::with_kind(checker, "exceeded", e.message()))
        .collect();
    if n > LIST_AT_MOST {
        v.push(Violation::with_kind(
            checker,
            "exceeded",
            format!("... and {} more", n - LIST_AT_MOST),
        ));
    }
    (v, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, rv: u64, owner: &str) -> PodSeen {
        PodSeen {
            uid: uid.into(),
            pod: format!("default/{uid}"),
            rv,
            owner: owner.into(),
            terminating: false,
            phase: "Running".into(),
        }
    }

    fn rc(uid: &str, rv: u64, replicas: i64) -> RcSeen {
        RcSeen {
            uid: uid.into(),
            name: format!("default/{uid}-name"),
            rv,
            replicas,
        }
    }

    fn ev<T>(kind: &str, item: T) -> Seen<T> {
        Seen::Event {
            kind: kind.into(),
            item,
        }
    }

    fn listed<T>(rv: u64, items: Vec<T>) -> Seen<T> {
        Seen::Listed { rv, items }
    }

    fn reached<T>(rv: u64) -> Seen<T> {
        Seen::Reached { rv }
    }

    /// `web` (2 replicas) and `burst` (3) created at versions 2 and 3.
    fn two_controllers() -> Vec<Seen<RcSeen>> {
        vec![
            listed(1, vec![]),
            ev("ADDED", rc("web", 2, 2)),
            ev("ADDED", rc("burst", 3, 3)),
            reached(40),
        ]
    }

    #[test]
    fn a_controller_over_its_replicas_is_reported_with_its_name_version_and_count() {
        let mut gone = pod("w3", 9, "web");
        gone.terminating = true;
        let pods = vec![
            listed(1, vec![]),
            ev("ADDED", pod("w1", 4, "web")),
            ev("ADDED", pod("b1", 5, "burst")),
            ev("ADDED", pod("w2", 6, "web")),
            ev("ADDED", pod("b2", 7, "burst")),
            // One too many for `web`, from version 8 ...
            ev("ADDED", pod("w3", 8, "web")),
            // ... until it is terminating at 9.
            ev("MODIFIED", gone),
            ev("ADDED", pod("b3", 10, "burst")),
            reached(40),
        ];
        let (v, stats) = check("over-replicas", &pods, &two_controllers());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, "over-replicas");
        assert_eq!(v[0].kind.as_deref(), Some("exceeded"));
        let m = &v[0].message;
        assert!(m.contains("default/web-name"), "{m}");
        assert!(m.contains("3 live pods at version 8"), "{m}");
        assert!(m.contains("spec.replicas is 2"), "{m}");
        assert!(m.contains("back within the bound at version 9"), "{m}");
        assert_eq!(stats.controllers, 2);
        assert_eq!(stats.checked, vec![(1, 40)]);
        assert_eq!(stats.peak["default/web-name"], (3, 2));
        assert_eq!(stats.peak["default/burst-name"], (3, 3));
        // Through the invariant.
        let state = FinalState {
            controller: Some(super::super::controller::ControllerFinal {
                pod_log: pods,
                rc_log: two_controllers(),
                ..Default::default()
            }),
            ..FinalState::default()
        };
        assert_eq!(NeverOverReplicas.check(&state), v);
        assert!(NeverOverReplicas.check(&FinalState::default()).is_empty());
    }

    #[test]
    fn a_count_still_over_at_the_end_says_so() {
        let pods = vec![
            listed(1, vec![]),
            ev("ADDED", pod("w1", 4, "web")),
            ev("ADDED", pod("w2", 5, "web")),
            ev("ADDED", pod("w3", 6, "web")),
            ev("ADDED", pod("w4", 7, "web")),
            reached(30),
        ];
        let (v, _) = check("over-replicas", &pods, &two_controllers());
        assert_eq!(v.len(), 1, "{v:?}");
        let m = &v[0].message;
        assert!(m.contains("3 live pods at version 6"), "{m}");
        assert!(m.contains("at most 4 live pods (version 7)"), "{m}");
        assert!(m.contains("still over at version 30"), "{m}");
    }

    #[test]
    fn terminal_terminating_deleted_and_foreign_pods_do_not_count() {
        let mut failed = pod("w2", 6, "web");
        failed.phase = "Failed".into();
        let mut done = pod("w3", 8, "web");
        done.phase = "Succeeded".into();
        let mut leaving = pod("w4", 10, "web");
        leaving.terminating = true;
        let pods = vec![
            listed(1, vec![pod("orphan", 1, ""), pod("x", 1, "another")]),
            ev("ADDED", pod("w1", 4, "web")),
            ev("ADDED", pod("w2", 5, "web")),
            ev("MODIFIED", failed),
            // The replacement of a failed pod.
            ev("ADDED", pod("w3", 7, "web")),
            ev("MODIFIED", done),
            ev("ADDED", pod("w4", 9, "web")),
            ev("MODIFIED", leaving),
            ev("ADDED", pod("w5", 11, "web")),
            ev("DELETED", pod("w4", 12, "web")),
            ev("DELETED", pod("w1", 13, "web")),
            ev("ADDED", pod("w6", 14, "web")),
            ev("ADDED", pod("x2", 15, "another")),
            reached(40),
        ];
        let (v, stats) = check("over-replicas", &pods, &two_controllers());
        assert!(v.is_empty(), "{v:?}");
        assert!(stats.versions >= 12, "{stats:?}");
        assert_eq!(stats.peak["default/web-name"], (2, 2));
    }

    #[test]
    fn creates_landing_just_after_a_scale_down_are_tolerated_until_the_next_write() {
        let rcs = |status_at: u64| {
            vec![
                listed(1, vec![]),
                ev("ADDED", rc("web", 2, 3)),
                // Scaled down to 1 while a pass that read 3 still creates its third pod.
                ev("MODIFIED", rc("web", 6, 1)),
                // The manager's next status write.
                ev("MODIFIED", rc("web", status_at, 1)),
                reached(40),
            ]
        };
        let terminating = |uid: &str, rv| PodSeen {
            terminating: true,
            ..pod(uid, rv, "web")
        };
        let pods = vec![
            listed(1, vec![]),
            ev("ADDED", pod("w1", 4, "web")),
            ev("ADDED", pod("w2", 5, "web")),
            ev("ADDED", pod("w3", 7, "web")),
            ev("MODIFIED", terminating("w3", 9)),
            ev("MODIFIED", terminating("w2", 10)),
            reached(40),
        ];
        // Status written after the extra pods are terminating: within the tolerance.
        let (v, _) = check("over-replicas", &pods, &rcs(11));
        assert!(v.is_empty(), "{v:?}");
        // Written before: its previous version allows 1, and 3 pods are live.
        let (v, _) = check("over-replicas", &pods, &rcs(8));
        assert_eq!(v.len(), 1, "{v:?}");
        let m = &v[0].message;
        assert!(m.contains("3 live pods at version 8"), "{m}");
        assert!(m.contains("1 at its previous version 6"), "{m}");
        assert!(m.contains("back within the bound at version 10"), "{m}");
        // Two scale-downs in a row: only the last previous version counts.
        let twice = vec![
            listed(1, vec![]),
            ev("ADDED", rc("web", 2, 3)),
            ev("MODIFIED", rc("web", 5, 2)),
            ev("MODIFIED", rc("web", 6, 1)),
            reached(40),
        ];
        let pods = vec![
            listed(1, vec![pod("w1", 1, "web"), pod("w2", 1, "web")]),
            ev("ADDED", pod("w3", 7, "web")),
            reached(40),
        ];
        let (v, _) = check("over-replicas", &pods, &twice);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("3 live pods at version 7"));
    }

    #[test]
    fn a_relist_is_a_fresh_state_and_the_gap_is_not_judged() {
        let rcs = vec![listed(1, vec![]), ev("ADDED", rc("web", 2, 2)), reached(50)];
        let head = || {
            vec![
                listed(1, vec![]),
                ev("ADDED", pod("w1", 3, "web")),
                ev("ADDED", pod("w2", 4, "web")),
                // The watch expired at 5; a third pod lived and died in (5, 20) unseen.
                reached(5),
            ]
        };
        // w2 was deleted in the gap and w5 replaced it: the old state must not leak in.
        let mut pods = head();
        pods.extend([
            listed(20, vec![pod("w1", 3, "web"), pod("w5", 12, "web")]),
            ev("ADDED", pod("w6", 22, "other")),
            reached(50),
        ]);
        let (v, stats) = check("over-replicas", &pods, &rcs);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(stats.unobserved, vec![(5, 20)]);
        assert_eq!(stats.checked, vec![(1, 5), (20, 50)]);
        // A list with one too many is judged at the list's version.
        let mut pods = head();
        pods.extend([
            listed(
                20,
                vec![
                    pod("w1", 3, "web"),
                    pod("w2", 4, "web"),
                    pod("w5", 12, "web"),
                ],
            ),
            ev("DELETED", pod("w5", 25, "web")),
            reached(50),
        ]);
        let (v, _) = check("over-replicas", &pods, &rcs);
        assert_eq!(v.len(), 1, "{v:?}");
        let m = &v[0].message;
        assert!(m.contains("3 live pods at version 20"), "{m}");
        assert!(m.contains("back within the bound at version 25"), "{m}");
    }

    #[test]
    fn after_a_controllers_relist_an_unknown_previous_version_is_undecided() {
        let rcs = vec![
            listed(1, vec![]),
            ev("ADDED", rc("web", 2, 3)),
            reached(5),
            // Scaled down to 1 in the gap; its previous version is not observed.
            listed(10, vec![rc("web", 8, 1)]),
            // Its next write makes the bound known again.
            ev("MODIFIED", rc("web", 14, 1)),
            reached(50),
        ];
        let pods = vec![
            listed(1, vec![]),
            ev("ADDED", pod("w1", 3, "web")),
            ev("ADDED", pod("w2", 4, "web")),
            ev("ADDED", pod("w3", 9, "web")),
            ev("DELETED", pod("w3", 12, "web")),
            ev("DELETED", pod("w2", 16, "web")),
            reached(50),
        ];
        let (v, stats) = check("over-replicas", &pods, &rcs);
        // At 10 and 12 over 1 with the previous version unknown; at 14 and 16 over, known.
        assert_eq!(stats.undecided, 2, "{stats:?}");
        assert_eq!(stats.unobserved, vec![(5, 10)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("2 live pods at version 14"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn only_versions_both_watchers_reached_are_checked() {
        let rcs = vec![listed(1, vec![]), ev("ADDED", rc("web", 2, 1)), reached(10)];
        let pods = vec![
            listed(1, vec![]),
            ev("ADDED", pod("w1", 3, "web")),
            // Past what the controllers watcher saw: the controller may have been scaled.
            ev("ADDED", pod("w2", 12, "web")),
            reached(20),
        ];
        let (v, stats) = check("over-replicas", &pods, &rcs);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(stats.checked, vec![(1, 10)]);
    }

    #[test]
    fn the_self_check_reports_it() {
        let r = crate::report::self_check();
        assert!(
            r.violations.iter().any(|v| v.checker == "over-replicas"),
            "{}",
            r.summary()
        );
    }
}
