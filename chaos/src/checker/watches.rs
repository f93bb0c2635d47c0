//! Watch consistency: every watcher saw the same events (same key, type and value at each
//! resource version), in increasing order, with no gap.
//!
//! A watcher's log is a chain of segments (one per connection). A segment resumed from the last
//! version seen must contain every event any watcher saw after that version, up to the last
//! version it saw itself. After an `ERROR`/410 the watcher re-lists: the listed state must be
//! what the events up to the list's version make it (not a skip, not stale). At the end, the
//! events replayed must give the final linearizable list.

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;
use crate::history::{SegmentStart, WatchEvent, WatchLog, WatchSegment};

/// Every distinct event, by (resource version, key).
pub type Union = BTreeMap<(u64, String), WatchEvent>;

/// Checks the logs; `final_items` is the linearizable list of the watched prefix at the end,
/// compared only when `caught_up` (every watcher reached its last version).
pub fn check(
    logs: &[WatchLog],
    final_items: &[(String, String, u64)],
    caught_up: bool,
) -> (Vec<Violation>, Union) {
    let (mut v, union) = union_of(logs);
    for log in logs {
        for (i, seg) in log.segments.iter().enumerate() {
            v.extend(check_order(log.watcher, i, seg));
            v.extend(check_coverage(log.watcher, i, seg, &union));
            if let SegmentStart::Listed(items) = &seg.start {
                v.extend(check_list(
                    &format!("watcher {} re-list at {}", log.watcher, seg.start_rv),
                    items,
                    seg.start_rv,
                    &union,
                ));
            }
        }
    }
    if caught_up {
        let listed: BTreeSet<(String, u64)> = logs
            .iter()
            .flat_map(|l| &l.segments)
            .filter_map(|s| match &s.start {
                SegmentStart::Listed(items) => Some(items),
                SegmentStart::Resumed => None,
            })
            .flatten()
            .map(|(k, _, rv)| (k.clone(), *rv))
            .collect();
        v.extend(check_list("final list", final_items, u64::MAX, &union));
        v.extend(check_final_seen(final_items, &union, &listed));
    }
    (v, union)
}

/// The union of every watcher's events; two different events at one (version, key) conflict.
fn union_of(logs: &[WatchLog]) -> (Vec<Violation>, Union) {
    let mut v = Vec::new();
    let mut union = Union::new();
    for log in logs {
        for e in log.segments.iter().flat_map(|s| &s.events) {
            let k = (e.rv, e.key.clone());
            match union.get(&k) {
                Some(old) if old != e => v.push(Violation::new(
                    "watch",
                    format!(
                        "watcher {} saw {e:?} where another saw {old:?}",
                        log.watcher
                    ),
                )),
                Some(_) => {}
                None => {
                    union.insert(k, e.clone());
                }
            }
        }
    }
    (v, union)
}

/// Events after the segment's start, strictly increasing by (version, key).
fn check_order(watcher: u32, i: usize, seg: &WatchSegment) -> Option<Violation> {
    let mut last: Option<(u64, String)> = None;
    for e in &seg.events {
        let k = (e.rv, e.key.clone());
        if e.rv <= seg.start_rv || last.as_ref().is_some_and(|l| k <= *l) {
            return Some(Violation::new(
                "watch",
                format!(
                    "watcher {watcher} segment {i} (from {} on master {}): event {k:?} after {last:?}",
                    seg.start_rv, seg.master
                ),
            ));
        }
        last = Some(k);
    }
    None
}

/// Every union event within the segment's span was delivered to it.
fn check_coverage(watcher: u32, i: usize, seg: &WatchSegment, union: &Union) -> Option<Violation> {
    let end = seg.events.last().map_or(seg.start_rv, |e| e.rv);
    let seen: BTreeSet<(u64, &str)> = seg.events.iter().map(|e| (e.rv, e.key.as_str())).collect();
    let missing: Vec<u64> = union
        .range((seg.start_rv + 1, String::new())..)
        .take_while(|((rv, _), _)| *rv <= end)
        .filter(|((rv, k), _)| !seen.contains(&(*rv, k.as_str())))
        .map(|((rv, _), _)| *rv)
        .collect();
    (!missing.is_empty()).then(|| {
        Violation::new(
            "watch",
            format!(
                "watcher {watcher} segment {i} (from {} on master {}) skipped {} events, e.g. versions {:?}",
                seg.start_rv,
                seg.master,
                missing.len(),
                &missing[..missing.len().min(5)]
            ),
        )
    })
}

/// The latest event of every key at or before `at`.
fn state_at(union: &Union, at: u64) -> BTreeMap<&str, &WatchEvent> {
    let mut s = BTreeMap::new();
    for ((rv, key), e) in union {
        if *rv > at {
            break;
        }
        s.insert(key.as_str(), e);
    }
    s
}

/// A list taken at version `at` agrees with the events up to `at`.
fn check_list(
    what: &str,
    items: &[(String, String, u64)],
    at: u64,
    union: &Union,
) -> Vec<Violation> {
    let state = state_at(union, at);
    let listed: BTreeMap<&str, (&str, u64)> = items
        .iter()
        .map(|(k, v, rv)| (k.as_str(), (v.as_str(), *rv)))
        .collect();
    let mut v = Vec::new();
    for (key, (value, rv)) in &listed {
        match state.get(key) {
            Some(e) if e.rv > *rv => v.push(format!(
                "{key} listed at version {rv}, but an event at {} came before the list",
                e.rv
            )),
            Some(e) if e.rv == *rv && (e.kind == "DELETED" || e.value != *value) => v.push(
                format!("{key} listed as {value:?}@{rv}, the event says {e:?}"),
            ),
            _ => {}
        }
        if let Some(e) = union.get(&(*rv, key.to_string())) {
            if e.value != *value {
                v.push(format!(
                    "{key}@{rv} listed as {value:?}, watched as {:?}",
                    e.value
                ));
            }
        }
    }
    for (key, e) in &state {
        if e.kind != "DELETED" && !listed.contains_key(key) {
            v.push(format!(
                "{key} missing from the list, though {e:?} came before it"
            ));
        }
    }
    v.into_iter()
        .take(5)
        .map(|m| Violation::new("watch", format!("{what}: {m}")))
        .collect()
}

/// Every final item was delivered to some watcher, or was in a list some watcher took after
/// an `ERROR`/410 (events applied while every watcher was re-listing reach no watch).
fn check_final_seen(
    final_items: &[(String, String, u64)],
    union: &Union,
    listed: &BTreeSet<(String, u64)>,
) -> Vec<Violation> {
    let unseen: Vec<String> = final_items
        .iter()
        .filter(|(k, _, rv)| {
            !union.contains_key(&(*rv, k.clone())) && !listed.contains(&(k.clone(), *rv))
        })
        .map(|(k, _, rv)| format!("{k}@{rv}"))
        .collect();
    (!unseen.is_empty())
        .then(|| {
            Violation::new(
                "watch",
                format!(
                    "{} final items reached no watcher, neither by event nor by list, e.g. {:?}",
                    unseen.len(),
                    &unseen[..unseen.len().min(5)]
                ),
            )
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rv: u64, key: &str, value: &str) -> WatchEvent {
        WatchEvent {
            kind: "MODIFIED".into(),
            key: key.into(),
            value: value.into(),
            rv,
        }
    }

    fn seg(start_rv: u64, start: SegmentStart, events: Vec<WatchEvent>) -> WatchSegment {
        WatchSegment {
            master: 1,
            start_rv,
            start,
            events,
            expired: false,
        }
    }

    fn log(w: u32, segments: Vec<WatchSegment>) -> WatchLog {
        WatchLog {
            watcher: w,
            segments,
        }
    }

    fn final_items() -> Vec<(String, String, u64)> {
        vec![("k".into(), "c".into(), 7), ("j".into(), "x".into(), 6)]
    }

    #[test]
    fn identical_resumed_streams_pass() {
        let a = log(
            0,
            vec![
                seg(
                    1,
                    SegmentStart::Listed(vec![]),
                    vec![ev(5, "k", "a"), ev(6, "j", "x")],
                ),
                seg(6, SegmentStart::Resumed, vec![ev(7, "k", "c")]),
            ],
        );
        let b = log(
            1,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "a"), ev(6, "j", "x"), ev(7, "k", "c")],
            )],
        );
        let (v, union) = check(&[a, b], &final_items(), true);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(union.len(), 3);
    }

    #[test]
    fn a_gap_and_a_divergence_are_flagged() {
        let a = log(
            0,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "a"), ev(6, "j", "x"), ev(7, "k", "c")],
            )],
        );
        let gap = log(
            1,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "a"), ev(7, "k", "c")],
            )],
        );
        let (v, _) = check(&[a.clone(), gap], &final_items(), true);
        assert!(v.iter().any(|v| v.message.contains("skipped 1")), "{v:?}");
        let diverged = log(
            2,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "OTHER")],
            )],
        );
        let (v, _) = check(&[a, diverged], &final_items(), true);
        assert!(v.iter().any(|v| v.message.contains("another saw")), "{v:?}");
    }

    #[test]
    fn a_relist_may_skip_but_must_match_the_events() {
        let a = log(
            0,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "a"), ev(6, "j", "x"), ev(7, "k", "c")],
            )],
        );
        let good = log(
            1,
            vec![
                seg(1, SegmentStart::Listed(vec![]), vec![ev(5, "k", "a")]),
                seg(
                    6,
                    SegmentStart::Listed(vec![
                        ("j".into(), "x".into(), 6),
                        ("k".into(), "a".into(), 5),
                    ]),
                    vec![ev(7, "k", "c")],
                ),
            ],
        );
        let (v, _) = check(&[a.clone(), good], &final_items(), true);
        assert!(v.is_empty(), "{v:?}");
        let stale = log(
            1,
            vec![seg(
                6,
                SegmentStart::Listed(vec![("k".into(), "a".into(), 5)]),
                vec![ev(7, "k", "c")],
            )],
        );
        let (v, _) = check(&[a, stale], &final_items(), true);
        assert!(
            v.iter()
                .any(|v| v.message.contains("missing from the list")),
            "{v:?}"
        );
    }

    #[test]
    fn events_nobody_watched_must_have_been_listed() {
        let a = log(
            0,
            vec![
                seg(1, SegmentStart::Listed(vec![]), vec![ev(5, "k", "a")]),
                seg(
                    6,
                    SegmentStart::Listed(vec![
                        ("j".into(), "x".into(), 6),
                        ("k".into(), "a".into(), 5),
                    ]),
                    vec![ev(7, "k", "c")],
                ),
            ],
        );
        let (v, _) = check(&[a], &final_items(), true);
        assert!(v.is_empty(), "{v:?}");
        let b = log(
            0,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(5, "k", "a"), ev(7, "k", "c")],
            )],
        );
        let (v, _) = check(&[b], &final_items(), true);
        assert!(
            v.iter().any(|v| v.message.contains("reached no watcher")),
            "{v:?}"
        );
    }

    #[test]
    fn out_of_order_events_are_flagged() {
        let a = log(
            0,
            vec![seg(
                1,
                SegmentStart::Listed(vec![]),
                vec![ev(6, "j", "x"), ev(5, "k", "a")],
            )],
        );
        let (v, _) = check(&[a], &[], false);
        assert!(v.iter().any(|v| v.message.contains("after")), "{v:?}");
    }
}
