//! The most recent log entries, in memory: what replication and apply read in steady state, so
//! that neither reads RocksDB nor decodes an entry once per follower.
//!
//! Invariant: **the entries held are contiguous and each is the log's entry at its index** —
//! every append goes through [`Recent::push`] after its write, truncation and purge trim the
//! same range here as on disk, and an append that does not continue what is held starts afresh.
//! So a range inside the held span is answered exactly as the log would answer it; anything
//! else (an open-ended range too) is read from RocksDB.

use std::collections::VecDeque;

use openraft::Entry;

use crate::TypeConfig;

/// Entries held at most.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Bytes of entries (encoded) held at most.
pub(crate) const MAX_BYTES: usize = 16 * 1024 * 1024;

/// A window of the newest entries, bounded in count and bytes.
pub(crate) struct Recent {
    /// Each entry with its encoded size, in index order without gaps.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(MAX_ENTRIES, MAX_BYTES)
    }
}

impl Recent {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Holds an entry just written to the log (`size` bytes encoded), dropping the oldest ones
    /// past the bounds.
    pub(crate) fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        if self
            .last()
            .is_some_and(|last| last + 1 != entry.log_id.index)
        {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// The entries of indexes `start..end`, when all of them are held; `None` when the log
    /// must be read.
    pub(crate) fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let (first, last) = (self.first()?, self.last()?);
        if start >= end {
            return Some(Vec::new());
        }
        if start < first || end > last + 1 {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// Forgets the entries from index `from` on (the log was truncated there).
    pub(crate) fn truncate(&mut self, from: u64) {
        while self.last().is_some_and(|last| last >= from) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries up to index `upto` (the log was purged through it).
    pub(crate) fn purge(&mut self, upto: u64) {
        while self.first().is_some_and(|first| first <= upto) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let mut r = Recent::new(100, 1000);
        for i in 5..10 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(6, 8)), Some(vec![6, 7]));
        assert_eq!(indexes(r.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.get(9, 9)), Some(vec![]));
        assert_eq!(indexes(r.get(4, 8)), None, "before the first held");
        assert_eq!(indexes(r.get(8, 11)), None, "past the last");
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let mut r = Recent::new(3, 1000);
        for i in 1..=5 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(3, 6)), Some(vec![3, 4, 5]));
        assert_eq!(r.get(2, 6), None);
        let mut r = Recent::new(100, 25);
        for i in 1..=5 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(4, 6)), Some(vec![4, 5]));
        assert_eq!(r.bytes, 20);
    }

    #[test]
    fn truncate_purge_and_a_gap_keep_it_contiguous() {
        let mut r = Recent::new(100, 1000);
        for i in 1..=6 {
            r.push(entry(i), 10);
        }
        r.truncate(5);
        assert_eq!(indexes(r.get(1, 5)), Some(vec![1, 2, 3, 4]));
        r.purge(2);
        assert_eq!(indexes(r.get(3, 5)), Some(vec![3, 4]));
        assert_eq!(r.bytes, 20);
        // A new run after a snapshot: what was held is dropped, not joined across the gap.
        r.push(entry(20), 10);
        assert_eq!(indexes(r.get(20, 21)), Some(vec![20]));
        assert_eq!(r.get(4, 5), None);
        r.purge(30);
        assert_eq!(r.get(20, 21), None);
        assert_eq!(r.bytes, 0);
    }
}
