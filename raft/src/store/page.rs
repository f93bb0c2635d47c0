//! Pages of the key space as it stood at a past resource version: what the API's paged lists
//! read, so that every page of a list is consistent with its first (Kubernetes' continue
//! tokens), and a page costs O(its size + the changes since), never O(the collection).
//!
//! The state machine keeps only the current records; the change feed's window tells what each
//! key changed since held before ([`crate::feed::Feed::changed_since`]). A page merges the two:
//! the current records of the keys unchanged since, and the past records of the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::command::{KeySpace, Record};
use crate::feed::Expired;

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most the page's limit of records, in key order.
    pub records: Vec<(String, Record)>,
    /// The resource version the page was read at.
    pub rv: u64,
    /// Whether records follow the last one.
    pub more: bool,
}

/// Why a page at a past version could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The change feed's window no longer reaches back to the version.
    #[error(transparent)]
    Expired(#[from] Expired),
    /// This replica has not applied the version yet (a read barrier brings it there).
    #[error("resource version {at} is not applied here yet (applied: {applied})")]
    NotYet { at: u64, applied: u64 },
}

/// What the keys changed since a version held then (`None`: absent), from
/// [`crate::feed::Feed::changed_since`].
pub type Past = BTreeMap<String, Option<Record>>;

/// Where a page starts: the keys under `prefix` after `after` (a full key), or all of them.
pub struct Range<'a> {
    pub prefix: &'a str,
    pub after: Option<&'a str>,
}

impl Range<'_> {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(self.prefix) && self.after.is_none_or(|a| key > a)
    }

    fn lower(&self) -> Bound<&str> {
        match self.after {
            Some(a) if a >= self.prefix => Bound::Excluded(a),
            _ => Bound::Included(self.prefix),
        }
    }
}

/// Up to `limit` records of `range`, as they stood when `space` held what it holds now except
/// for the keys of `then`, which held what `then` says (`None`: absent); and whether more
/// follow.
pub fn read(
    space: &KeySpace,
    then: &Past,
    range: &Range<'_>,
    limit: usize,
) -> (Vec<(String, Record)>, bool) {
    let bounds = (range.lower(), Bound::Unbounded);
    let mut now = space
        .range::<str, _>(bounds)
        .take_while(|(k, _)| k.starts_with(range.prefix))
        .filter(|(k, _)| !then.contains_key(k.as_str()))
        .peekable();
    let mut past = then
        .range::<str, _>(bounds)
        .take_while(|(k, _)| k.starts_with(range.prefix))
        .filter_map(|(k, r)| r.as_ref().map(|r| (k, r)))
        .peekable();
    let mut records = Vec::new();
    loop {
        // The two runs hold distinct keys: take the smaller head.
        let next = match (now.peek(), past.peek()) {
            (Some((a, _)), Some((b, _))) if a < b => now.next(),
            (Some(_), Some(_)) => past.next(),
            (Some(_), None) => now.next(),
            (None, Some(_)) => past.next(),
            (None, None) => return (records, false),
        };
        if records.len() == limit {
            return (records, true);
        }
        let (k, r) = next.expect("a head was there");
        records.push((k.clone(), r.clone()));
    }
}

/// Up to `limit` records of `range` among `keys` (sorted, deduplicated) and the keys of
/// `then`, as [`read`] reads them: an index's candidates, read at a past version. An index
/// taken at any version since holds every key that did not change since; `then` names the
/// others. Also whether more follow.
pub fn read_keys(
    space: &KeySpace,
    then: &Past,
    range: &Range<'_>,
    keys: &[String],
    limit: usize,
) -> (Vec<(String, Record)>, bool) {
    let bounds = (range.lower(), Bound::Unbounded);
    let start = match range.lower() {
        Bound::Excluded(a) => keys.partition_point(|k| k.as_str() <= a),
        Bound::Included(p) => keys.partition_point(|k| k.as_str() < p),
        Bound::Unbounded => 0,
    };
    let mut candidates = keys[start..]
        .iter()
        .take_while(|k| k.starts_with(range.prefix))
        .peekable();
    let mut changed = then
        .range::<str, _>(bounds)
        .take_while(|(k, _)| k.starts_with(range.prefix))
        .peekable();
    let mut records = Vec::new();
    loop {
        let key = match (candidates.peek(), changed.peek()) {
            (Some(a), Some((b, _))) if a.as_str() < b.as_str() => candidates.next(),
            (Some(a), Some((b, _))) if a == b => {
                candidates.next();
                changed.next().map(|(k, _)| k)
            }
            (_, Some(_)) => changed.next().map(|(k, _)| k),
            (Some(_), None) => candidates.next(),
            (None, None) => return (records, false),
        }
        .expect("a head was there");
        let record = match then.get(key) {
            Some(past) => past.as_ref(),
            None => space.get(key),
        };
        let Some(record) = record else { continue };
        if records.len() == limit {
            return (records, true);
        }
        records.push((key.clone(), record.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(v: &str, rv: u64) -> Record {
        Record {
            value: Bytes::from(v.to_string()),
            create_rv: rv,
            mod_rv: rv,
        }
    }

    fn keys(records: &[(String, Record)]) -> Vec<(&str, &[u8])> {
        records
            .iter()
            .map(|(k, r)| (k.as_str(), &r.value[..]))
            .collect()
    }

    #[test]
    fn merges_the_present_with_the_past() {
        let mut space = KeySpace::new();
        for (k, v) in [("/p/a", "a"), ("/p/b", "b2"), ("/p/d", "d"), ("/q/x", "x")] {
            space.insert(k.into(), rec(v, 5));
        }
        // Since the version read: b was updated, c deleted, d created.
        let then = BTreeMap::from([
            ("/p/b".to_string(), Some(rec("b1", 1))),
            ("/p/c".to_string(), Some(rec("c", 1))),
            ("/p/d".to_string(), None),
        ]);
        let all = Range {
            prefix: "/p/",
            after: None,
        };
        let (records, more) = read(&space, &then, &all, 10);
        assert_eq!(
            keys(&records),
            [("/p/a", &b"a"[..]), ("/p/b", b"b1"), ("/p/c", b"c")]
        );
        assert!(!more);
        let (first, more) = read(&space, &then, &all, 2);
        assert_eq!(keys(&first), [("/p/a", &b"a"[..]), ("/p/b", b"b1")]);
        assert!(more);
        let rest = Range {
            prefix: "/p/",
            after: Some("/p/b"),
        };
        let (second, more) = read(&space, &then, &rest, 2);
        assert_eq!(keys(&second), [("/p/c", &b"c"[..])]);
        assert!(!more);
        // A full page that is also the last says no more follow.
        let (exact, more) = read(&space, &then, &all, 3);
        assert_eq!(exact.len(), 3);
        assert!(!more);
    }

    #[test]
    fn reads_candidates_and_what_changed_since() {
        let mut space = KeySpace::new();
        for (k, v) in [("/p/a", "a"), ("/p/b", "b2"), ("/p/d", "d"), ("/p/e", "e")] {
            space.insert(k.into(), rec(v, 5));
        }
        let then = BTreeMap::from([
            ("/p/b".to_string(), Some(rec("b1", 1))),
            ("/p/c".to_string(), Some(rec("c", 1))),
            ("/p/d".to_string(), None),
        ]);
        // Candidates from an index: a, d (created since: absent then) and one key gone from
        // the space and the window alike; b and c come from `then`.
        let candidates = ["/o/z", "/p/a", "/p/d", "/p/gone"].map(String::from);
        let all = Range {
            prefix: "/p/",
            after: None,
        };
        let (records, more) = read_keys(&space, &then, &all, &candidates, 10);
        assert_eq!(
            keys(&records),
            [("/p/a", &b"a"[..]), ("/p/b", b"b1"), ("/p/c", b"c")]
        );
        assert!(!more);
        let (first, more) = read_keys(&space, &then, &all, &candidates, 2);
        assert_eq!(keys(&first), [("/p/a", &b"a"[..]), ("/p/b", b"b1")]);
        assert!(more);
        let rest = Range {
            prefix: "/p/",
            after: Some("/p/a"),
        };
        let (second, more) = read_keys(&space, &then, &rest, &candidates, 10);
        assert_eq!(keys(&second), [("/p/b", &b"b1"[..]), ("/p/c", b"c")]);
        assert!(!more);
    }
}
