//! Election safety: at most one leader per term, from frequent samples of every master's
//! `GET /cluster`.

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;
use crate::history::LeaderSample;

/// One violation per term in which two or more masters reported themselves `Leader`.
pub fn check(samples: &[LeaderSample]) -> Vec<Violation> {
    let mut by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.state == "Leader") {
        by_term.entry(s.term).or_default().insert(s.id);
    }
    by_term
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(term, ids)| {
            Violation::new(
                "leaders",
                format!("term {term} had {} leaders: {ids:?}", ids.len()),
            )
        })
        .collect()
}

/// The number of distinct terms in which a leader was seen.
pub fn terms_with_leader(samples: &[LeaderSample]) -> usize {
    samples
        .iter()
        .filter(|s| s.state == "Leader")
        .map(|s| s.term)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, term: u64, state: &str) -> LeaderSample {
        LeaderSample {
            t_us: 0,
            id,
            term,
            state: state.into(),
            leader: None,
        }
    }

    #[test]
    fn one_leader_per_term_holds() {
        let h = [
            s(1, 1, "Leader"),
            s(2, 1, "Follower"),
            s(1, 1, "Leader"),
            s(2, 2, "Leader"),
        ];
        assert!(check(&h).is_empty());
    }

    #[test]
    fn two_leaders_in_a_term_are_flagged() {
        let h = [s(1, 3, "Leader"), s(2, 3, "Leader"), s(3, 3, "Follower")];
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("term 3"));
    }
}
