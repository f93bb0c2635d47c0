//! Resource versions: one per write, totally ordered, even when several writes share a log
//! entry.
//!
//! A resource version is `index × 2^16 + position`: the Raft log index of the entry that made
//! the write, and the write's position among the entry's operations (0, 1, …). The versions of
//! one entry therefore lie strictly between those of the entries before and after it, and a
//! watch resumed from the version of any write — the last of an entry or one in its middle —
//! gets exactly the writes after it.
//!
//! The state after applying entry `i` is at [`through_entry`]`(i)`, the highest version entry
//! `i` can hold: lists and watches start there. An entry holds at most [`MAX_OPS_PER_ENTRY`]
//! operations, so positions never reach the next entry's versions.
//!
//! Format 2 of the data directory (format 1 used the bare log index; see `store::FORMAT`).

/// Bits of a resource version that hold the position within the entry.
pub const POSITION_BITS: u32 = 16;

/// Most operations one log entry may hold: positions run from 0 to `MAX_OPS_PER_ENTRY - 1`,
/// leaving the top position for [`through_entry`].
pub const MAX_OPS_PER_ENTRY: usize = (1 << POSITION_BITS) - 1;

/// The resource version of the write at `position` in the entry at log index `index`.
pub fn of_write(index: u64, position: usize) -> u64 {
    debug_assert!(position < MAX_OPS_PER_ENTRY);
    (index << POSITION_BITS) | position as u64
}

/// The resource version of the state once entry `index` is applied: above every write of that
/// entry, below every write of the next. 0 for the empty state.
pub fn through_entry(index: u64) -> u64 {
    if index == 0 {
        0
    } else {
        (index << POSITION_BITS) | MAX_OPS_PER_ENTRY as u64
    }
}

/// The log index whose entry holds resource version `rv` (or, for [`through_entry`], the entry
/// it follows): a replica that has applied this index has seen `rv`.
pub fn index_of(rv: u64) -> u64 {
    rv >> POSITION_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_consecutive_entries_are_ordered() {
        for index in [1u64, 2, 1000, 1 << 40] {
            let first = of_write(index, 0);
            let last = of_write(index, MAX_OPS_PER_ENTRY - 1);
            assert!(through_entry(index - 1) < first);
            assert!(first < last && last < through_entry(index));
            assert!(through_entry(index) < of_write(index + 1, 0));
            assert_eq!(index_of(first), index);
            assert_eq!(index_of(last), index);
            assert_eq!(index_of(through_entry(index)), index);
        }
        assert_eq!(through_entry(0), 0);
        assert_eq!(index_of(0), 0);
    }
}
