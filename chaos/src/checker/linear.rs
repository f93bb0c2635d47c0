//! Linearizability of register histories: the Wing & Gong search with Lowe's memoization
//! (the algorithm of Porcupine and Knossos' `wgl`), one search per key (a register history is
//! linearizable iff each key's sub-history is: P-compositionality).
//!
//! Indeterminate writes (`info`) have no return event: the search may linearize them at any
//! point after their invocation, or never. Failed reads and definitely failed writes are left
//! out; a compare-and-set refused with 409/404 stays in as an observation ("the register was
//! not at the expected version" / "absent").

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Outcome, RegKind, RegisterOp};

/// The register's state: `None` (absent) or the id of an interned value.
type State = Option<u32>;

/// An operation of the sequential register model.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read(State),
    Write(u32),
    CasOk { expected: u32, new: u32 },
    CasConflict { expected: u32 },
    CasNotFound,
}

impl Step {
    /// The state after applying `self` in `s`, or `None` if the model forbids it.
    fn apply(self, s: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == s).then_some(s),
            Step::Write(v) => Some(Some(v)),
            Step::CasOk { expected, new } => (s == Some(expected)).then_some(Some(new)),
            Step::CasConflict { expected } => (s != Some(expected)).then_some(s),
            Step::CasNotFound => s.is_none().then_some(s),
        }
    }
}

/// The verdict for one key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; `culprit` describes the operation the deepest search could not
    /// place.
    NotLinearizable {
        culprit: String,
    },
    /// The search gave up (state space over the limit): neither proven nor refuted.
    Unknown {
        reason: String,
    },
}

/// The result of checking one key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyResult {
    pub key: String,
    /// Operations that took part in the search.
    pub ops: usize,
    pub verdict: Verdict,
}

/// One operation ready for the search.
struct SearchOp {
    step: Step,
    call: u64,
    /// `None` for indeterminate writes.
    ret: Option<u64>,
    /// Index into the original history, for explanations.
    orig: usize,
}

/// Checks every key of `history`; `limit` bounds the states explored per key.
pub fn check(history: &[RegisterOp], limit: usize) -> Vec<KeyResult> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    by_key
        .into_iter()
        .map(|(key, idx)| check_key(key, history, &idx, limit))
        .collect()
}

/// Builds the search operations of one key and runs the search.
fn check_key(key: &str, history: &[RegisterOp], idx: &[usize], limit: usize) -> KeyResult {
    let ops = prepare(history, idx);
    let verdict = match ops {
        Err(culprit) => Verdict::NotLinearizable { culprit },
        Ok(ops) => match search(&ops, limit) {
            Search::Ok => Verdict::Linearizable,
            Search::GaveUp => Verdict::Unknown {
                reason: format!("more than {limit} states explored"),
            },
            Search::Stuck(i) => Verdict::NotLinearizable {
                culprit: describe(&history[ops[i].orig]),
            },
        },
    };
    KeyResult {
        key: key.to_string(),
        ops: idx.len(),
        verdict,
    }
}

/// A human-readable operation.
pub fn describe(op: &RegisterOp) -> String {
    let outcome = match op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Fail => format!(
            "fail {}",
            op.code.map(|c| c.to_string()).unwrap_or_default()
        ),
        Outcome::Info => "info".to_string(),
    };
    let what = match op.kind {
        RegKind::Read => format!("read -> {:?} (rv {:?})", op.value, op.rv),
        RegKind::Write => format!("write {:?} -> rv {:?}", op.value, op.rv),
        RegKind::Cas => format!(
            "cas rv {:?} -> {:?} (rv {:?})",
            op.expected_rv, op.value, op.rv
        ),
    };
    format!(
        "client {} {} {what} [{outcome}] invoked {:.3}s, completed {:.3}s",
        op.client,
        op.key,
        op.invoke_us as f64 / 1e6,
        op.complete_us as f64 / 1e6
    )
}

/// Interns values and translates resource versions into values; checks that every value has
/// one resource version. Drops operations that cannot matter.
fn prepare(history: &[RegisterOp], idx: &[usize]) -> Result<Vec<SearchOp>, String> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut rv_of: HashMap<u32, (u64, usize)> = HashMap::new();
    let mut value_at: HashMap<u64, u32> = HashMap::new();
    // Pass 1: every acknowledged (value, rv) pair must be consistent.
    for &i in idx {
        let op = &history[i];
        if op.outcome != Outcome::Ok {
            continue;
        }
        let (Some(v), Some(rv)) = (op.value.as_deref(), op.rv) else {
            continue;
        };
        let id = intern(v, &mut ids);
        if let Some((old, j)) = rv_of.insert(id, (rv, i)) {
            if old != rv {
                return Err(format!(
                    "value {v:?} seen at two versions {old} and {rv}: {} / {}",
                    describe(&history[j]),
                    describe(op)
                ));
            }
        }
        if let Some(other) = value_at.insert(rv, id) {
            if other != id {
                return Err(format!("two values at version {rv}: {}", describe(op)));
            }
        }
    }
    // Pass 2: the search operations.
    let unknown = u32::MAX; // a value no write produces: a CAS on an unseen version
    let mut out = Vec::new();
    for &i in idx {
        let op = &history[i];
        let value = op.value.as_deref().map(|v| intern(v, &mut ids));
        let expected = op
            .expected_rv
            .map(|rv| value_at.get(&rv).copied().unwrap_or(unknown));
        let step = match (op.kind, op.outcome, op.code) {
            (RegKind::Read, Outcome::Ok, _) => Step::Read(value),
            (RegKind::Read, _, _) => continue,
            (RegKind::Write, Outcome::Fail, _) => continue,
            (RegKind::Write, _, _) => Step::Write(value.unwrap_or(unknown)),
            (RegKind::Cas, Outcome::Fail, Some(409)) => Step::CasConflict {
                expected: expected.unwrap_or(unknown),
            },
            (RegKind::Cas, Outcome::Fail, Some(404)) => Step::CasNotFound,
            (RegKind::Cas, Outcome::Fail, _) => continue,
            (RegKind::Cas, _, _) => Step::CasOk {
                expected: expected.unwrap_or(unknown),
                new: value.unwrap_or(unknown),
            },
        };
        out.push(SearchOp {
            step,
            call: op.invoke_us,
            ret: (op.outcome != Outcome::Info).then_some(op.complete_us),
            orig: i,
        });
    }
    Ok(out)
}

/// The id of value `v`, given a new one if unseen.
fn intern<'a>(v: &'a str, ids: &mut HashMap<&'a str, u32>) -> u32 {
    let n = ids.len() as u32;
    *ids.entry(v).or_insert(n)
}

enum Search {
    Ok,
    GaveUp,
    /// Index of the operation whose return could not be reached by the deepest attempt.
    Stuck(usize),
}

const NIL: usize = usize::MAX;

/// The entries (calls and returns) as a doubly linked list that supports lifting an operation
/// out and putting it back (dancing links).
struct Entries {
    op: Vec<usize>,
    is_call: Vec<bool>,
    next: Vec<usize>,
    prev: Vec<usize>,
    ret_of: Vec<usize>,
    head: usize,
}

impl Entries {
    fn new(ops: &[SearchOp]) -> Entries {
        // (time, 0 = call / 1 = return, op): at equal times a call comes first, so the two
        // operations count as concurrent (the permissive reading).
        let mut ev: Vec<(u64, u8, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            ev.push((o.call, 0, i));
            if let Some(r) = o.ret {
                ev.push((r.max(o.call), 1, i));
            }
        }
        ev.sort();
        let n = ev.len();
        let head = n;
        let mut e = Entries {
            op: ev.iter().map(|x| x.2).collect(),
            is_call: ev.iter().map(|x| x.1 == 0).collect(),
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            prev: (0..n).map(|i| if i == 0 { head } else { i - 1 }).collect(),
            ret_of: vec![NIL; ops.len()],
            head,
        };
        e.next.push(if n == 0 { NIL } else { 0 });
        e.prev.push(NIL);
        for (pos, x) in ev.iter().enumerate() {
            if x.1 == 1 {
                e.ret_of[x.2] = pos;
            }
        }
        e
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    /// Removes a call entry and its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let r = self.ret_of[self.op[call]];
        if r != NIL {
            self.unlink(r);
        }
    }

    /// Undoes [`Entries::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        let r = self.ret_of[self.op[call]];
        if r != NIL {
            self.relink(r);
        }
        self.relink(call);
    }
}

/// Random 128-bit keys per operation: the set of linearized operations hashes to the XOR of
/// its members' keys (Zobrist hashing), updated in O(1).
fn zobrist(n: usize) -> Vec<u128> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x006b_6565_6c73_6f6e);
    (0..n).map(|_| rng.gen()).collect()
}

/// The Wing & Gong search with memoization of (linearized set, state).
fn search(ops: &[SearchOp], limit: usize) -> Search {
    let mut e = Entries::new(ops);
    let keys = zobrist(ops.len());
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut cache: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let (mut state, mut set): (State, u128) = (None, 0);
    let mut entry = e.next[e.head];
    let (mut deepest, mut stuck) = (0usize, 0usize);
    let mut steps = 0usize;
    while remaining > 0 {
        steps += 1;
        if steps > limit.saturating_mul(4) || cache.len() > limit {
            return Search::GaveUp;
        }
        if entry != NIL && e.is_call[entry] {
            let op = e.op[entry];
            if let Some(next) = ops[op].step.apply(state) {
                let with = set ^ keys[op];
                if cache.insert((with, next)) {
                    stack.push((entry, state));
                    state = next;
                    set = with;
                    e.lift(entry);
                    if ops[op].ret.is_some() {
                        remaining -= 1;
                    }
                    entry = e.next[e.head];
                    continue;
                }
            }
            entry = e.next[entry];
            continue;
        }
        // A return whose operation is not linearized yet: backtrack.
        if entry != NIL && stack.len() >= deepest {
            deepest = stack.len();
            stuck = e.op[entry];
        }
        let Some((call, prev_state)) = stack.pop() else {
            return Search::Stuck(stuck);
        };
        let op = e.op[call];
        e.unlift(call);
        state = prev_state;
        set ^= keys[op];
        if ops[op].ret.is_some() {
            remaining += 1;
        }
        entry = e.next[call];
    }
    Search::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "r/0";

    fn op(
        kind: RegKind,
        value: Option<&str>,
        rv: Option<u64>,
        t: (u64, u64),
        outcome: Outcome,
    ) -> RegisterOp {
        RegisterOp {
            client: 0,
            key: K.into(),
            kind,
            value: value.map(String::from),
            expected_rv: None,
            rv,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            code: None,
        }
    }

    fn write(v: &str, rv: u64, t: (u64, u64)) -> RegisterOp {
        op(RegKind::Write, Some(v), Some(rv), t, Outcome::Ok)
    }

    fn read(v: Option<&str>, rv: Option<u64>, t: (u64, u64)) -> RegisterOp {
        op(RegKind::Read, v, rv, t, Outcome::Ok)
    }

    fn cas(
        expected: u64,
        v: &str,
        rv: Option<u64>,
        t: (u64, u64),
        outcome: Outcome,
        code: Option<u16>,
    ) -> RegisterOp {
        let mut o = op(RegKind::Cas, Some(v), rv, t, outcome);
        o.expected_rv = Some(expected);
        o.code = code;
        o
    }

    fn verdict(h: &[RegisterOp]) -> Verdict {
        let r = check(h, 1_000_000);
        assert_eq!(r.len(), 1);
        r[0].verdict.clone()
    }

    fn linearizable(h: &[RegisterOp]) -> bool {
        match verdict(h) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable { .. } => false,
            Verdict::Unknown { reason } => panic!("unknown: {reason}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            read(None, None, (0, 1)),
            write("a", 5, (2, 3)),
            read(Some("a"), Some(5), (4, 5)),
            write("b", 7, (6, 7)),
            read(Some("b"), Some(7), (8, 9)),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn stale_read_is_flagged() {
        let h = [
            write("a", 5, (0, 10)),
            write("b", 7, (20, 30)),
            read(Some("a"), Some(5), (40, 50)),
        ];
        match verdict(&h) {
            Verdict::NotLinearizable { culprit } => assert!(culprit.contains("read"), "{culprit}"),
            v => panic!("stale read accepted: {v:?}"),
        }
    }

    #[test]
    fn concurrent_write_may_be_seen_either_way_but_not_undone() {
        let ok = [
            write("a", 5, (0, 100)),
            read(None, None, (10, 20)),
            read(Some("a"), Some(5), (30, 40)),
        ];
        assert!(linearizable(&ok));
        let mut flicker = ok.to_vec();
        flicker.push(read(None, None, (50, 60)));
        assert!(!linearizable(&flicker));
    }

    #[test]
    fn indeterminate_write_observed_must_be_applied() {
        let mut h = vec![
            write("a", 5, (0, 10)),
            op(RegKind::Write, Some("b"), None, (20, 30), Outcome::Info),
            read(Some("b"), Some(7), (40, 50)),
        ];
        assert!(linearizable(&h), "the indeterminate write took effect");
        h.push(read(Some("a"), Some(5), (60, 70)));
        assert!(!linearizable(&h), "once applied, it cannot be undone");
    }

    #[test]
    fn indeterminate_write_may_never_apply() {
        let h = [
            write("a", 5, (0, 10)),
            op(RegKind::Write, Some("b"), None, (20, 30), Outcome::Info),
            read(Some("a"), Some(5), (40, 50)),
            read(Some("a"), Some(5), (60, 70)),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn indeterminate_write_cannot_apply_before_its_invocation() {
        let h = [
            write("a", 5, (0, 10)),
            read(Some("b"), Some(7), (12, 14)),
            op(RegKind::Write, Some("b"), None, (20, 30), Outcome::Info),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn compare_and_set_history() {
        let h = [
            write("a", 5, (0, 10)),
            read(Some("a"), Some(5), (11, 12)),
            cas(5, "b", Some(9), (13, 20), Outcome::Ok, None),
            cas(5, "c", None, (14, 21), Outcome::Fail, Some(409)),
            read(Some("b"), Some(9), (22, 23)),
        ];
        assert!(linearizable(&h));
        // Two compare-and-sets on one version cannot both win.
        let two_winners = [
            write("a", 5, (0, 10)),
            read(Some("a"), Some(5), (11, 12)),
            cas(5, "b", Some(9), (13, 20), Outcome::Ok, None),
            cas(5, "c", Some(10), (14, 21), Outcome::Ok, None),
        ];
        assert!(!linearizable(&two_winners));
        // A conflict on the current, unchanged version is wrong.
        let bogus_conflict = [
            write("a", 5, (0, 10)),
            read(Some("a"), Some(5), (11, 12)),
            cas(5, "c", None, (14, 21), Outcome::Fail, Some(409)),
        ];
        assert!(!linearizable(&bogus_conflict));
    }

    #[test]
    fn indeterminate_cas_explains_a_later_read() {
        let h = [
            write("a", 5, (0, 10)),
            read(Some("a"), Some(5), (11, 12)),
            cas(5, "b", None, (13, 20), Outcome::Info, None),
            read(Some("b"), Some(9), (30, 31)),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn definite_failures_are_ignored_and_version_mismatch_flagged() {
        let h = [
            write("a", 5, (0, 10)),
            op(RegKind::Write, Some("x"), None, (11, 12), Outcome::Fail),
            read(Some("a"), Some(5), (13, 14)),
        ];
        assert!(linearizable(&h));
        let mismatch = [write("a", 5, (0, 10)), read(Some("a"), Some(6), (13, 14))];
        assert!(!linearizable(&mismatch));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = write("z", 8, (0, 100));
        other.key = "r/1".into();
        let h = [
            write("a", 5, (0, 10)),
            other,
            read(Some("a"), Some(5), (20, 30)),
        ];
        let r = check(&h, 1000);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|k| k.verdict == Verdict::Linearizable));
    }

    #[test]
    fn many_concurrent_clients_stay_tractable() {
        // 6 clients, 400 operations each, overlapping, with indeterminate writes.
        let mut h = Vec::new();
        let mut rv = 1;
        let mut current: Option<(String, u64)> = None;
        for i in 0..2400u64 {
            let t = i * 10;
            let c = (i % 6) as u32;
            let mut o = if i % 3 == 0 {
                rv += 1;
                let v = format!("v{i}");
                current = Some((v.clone(), rv));
                if i % 30 == 0 {
                    op(RegKind::Write, Some(&v), None, (t, t + 55), Outcome::Info)
                } else {
                    write(&v, rv, (t, t + 55))
                }
            } else {
                let cur = current.clone();
                let rv = cur.as_ref().map(|c| c.1);
                read(cur.as_ref().map(|c| c.0.as_str()), rv, (t, t + 55))
            };
            o.client = c;
            h.push(o);
        }
        assert!(linearizable(&h));
    }
}
