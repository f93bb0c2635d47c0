//! The append-only workload: every acknowledged create must be in the final (linearizable,
//! healed) list; no key that was never created, or whose create certainly failed, may be.

use std::collections::BTreeSet;

use super::Violation;
use crate::history::{AppendOp, Outcome};

/// Figures of the check, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AppendStats {
    pub acknowledged: usize,
    pub indeterminate: usize,
    pub failed: usize,
    /// Indeterminate creates found applied.
    pub indeterminate_applied: usize,
}

/// Compares the creates with the keys `present` under the workload's prefix at the end.
pub fn check(ops: &[AppendOp], present: &BTreeSet<String>) -> (Vec<Violation>, AppendStats) {
    let mut v = Vec::new();
    let mut st = AppendStats::default();
    let attempted: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    let mut lost = Vec::new();
    for op in ops {
        let here = present.contains(&op.key);
        match op.outcome {
            Outcome::Ok => {
                st.acknowledged += 1;
                if !here {
                    lost.push(op.key.clone());
                }
            }
            Outcome::Info => {
                st.indeterminate += 1;
                st.indeterminate_applied += here as usize;
            }
            Outcome::Fail => {
                st.failed += 1;
                if here && op.code != Some(409) {
                    v.push(Violation::new(
                        "lost-write",
                        format!(
                            "create of {} failed definitely ({:?}) but was applied",
                            op.key, op.code
                        ),
                    ));
                }
                if op.code == Some(409) {
                    v.push(Violation::new(
                        "lost-write",
                        format!(
                            "create of fresh key {} answered AlreadyExists: applied twice?",
                            op.key
                        ),
                    ));
                }
            }
        }
    }
    if !lost.is_empty() {
        v.push(Violation::new(
            "lost-write",
            format!(
                "{} acknowledged creates lost, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ),
        ));
    }
    let phantoms: Vec<&String> = present
        .iter()
        .filter(|k| !attempted.contains(k.as_str()))
        .collect();
    if !phantoms.is_empty() {
        v.push(Violation::new(
            "lost-write",
            format!(
                "keys nobody created: {:?}",
                &phantoms[..phantoms.len().min(5)]
            ),
        ));
    }
    (v, st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, outcome: Outcome, code: Option<u16>) -> AppendOp {
        AppendOp {
            client: 0,
            key: key.into(),
            invoke_us: 0,
            complete_us: 1,
            outcome,
            code,
        }
    }

    #[test]
    fn a_lost_acknowledged_create_is_flagged() {
        let ops = [
            op("a/1", Outcome::Ok, None),
            op("a/2", Outcome::Ok, None),
            op("a/3", Outcome::Info, None),
        ];
        let present: BTreeSet<String> = ["a/1".to_string()].into();
        let (v, st) = check(&ops, &present);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("a/2"));
        assert_eq!(st.acknowledged, 2);
    }

    #[test]
    fn indeterminate_creates_may_or_may_not_apply() {
        let ops = [
            op("a/1", Outcome::Info, None),
            op("a/2", Outcome::Info, None),
        ];
        let present: BTreeSet<String> = ["a/1".to_string()].into();
        let (v, st) = check(&ops, &present);
        assert!(v.is_empty());
        assert_eq!(st.indeterminate_applied, 1);
    }

    #[test]
    fn an_applied_definite_failure_and_a_phantom_are_flagged() {
        let ops = [op("a/1", Outcome::Fail, Some(503))];
        let present: BTreeSet<String> = ["a/1".to_string(), "a/9".to_string()].into();
        let (v, _) = check(&ops, &present);
        assert_eq!(v.len(), 2, "{v:?}");
    }
}
