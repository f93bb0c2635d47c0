//! The replicated commands and their deterministic application.
//!
//! Every write in keelson is one [`Command`] proposed through Raft. Preconditions are checked
//! here, in apply, against the state the log has built so far: every replica applies the same
//! entries in the same order and therefore reaches the same verdict (stored, conflict, not
//! found). [`apply_command`] is a pure function over a [`KeySpace`] so that it is tested without
//! Raft or RocksDB.

use std::cell::Cell;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use crate::codec;
use crate::revision::{self, MAX_OPS_PER_ENTRY};

/// How deeply batches may nest: `Batch([Put])` is depth 1. keelson itself writes depth 1 (the
/// controllers' and the registry's batches of plain operations); the margin is for callers that
/// group batches. Decoding refuses anything deeper (see `decode_batch`), and so does
/// [`Command::check_bounds`] before a command is proposed, so that every entry a leader appends
/// decodes on every follower.
pub const MAX_BATCH_DEPTH: usize = 8;

/// A replicated write. A closed enum: adding a variant is a change of the log format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store `value` under `key` if the key is absent.
    Create { key: String, value: Bytes },
    /// Replace the value of an existing key; with `precondition`, only if the key was last
    /// written at that resource version.
    Update {
        key: String,
        value: Bytes,
        precondition: Option<u64>,
    },
    /// Store `value` whether or not the key exists (no precondition).
    Put { key: String, value: Bytes },
    /// Remove a key; with `precondition`, only if it was last written at that resource version.
    Delete {
        key: String,
        precondition: Option<u64>,
    },
    /// Several commands in one log entry, applied in order, each with its own result. Batches
    /// nested in a batch are flattened, at most [`MAX_BATCH_DEPTH`] deep. Used for scheduler
    /// bindings and bulk writes.
    Batch(#[serde(deserialize_with = "decode_batch")] Vec<Command>),
}

impl Command {
    /// How deeply batches nest in this command: 0 for a single operation. Iterative, so that
    /// it is safe on any value, however it was built.
    pub fn batch_depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 0)];
        while let Some((cmd, depth)) = stack.pop() {
            if let Command::Batch(cmds) = cmd {
                deepest = deepest.max(depth + 1);
                let nested = cmds.iter().filter(|c| matches!(c, Command::Batch(_)));
                stack.extend(nested.map(|c| (c, depth + 1)));
            }
        }
        deepest
    }

    /// How many operations the command holds once batches are flattened: the number of
    /// results it gets. Iterative, like [`Command::batch_depth`].
    pub fn op_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(cmd) = stack.pop() {
            match cmd {
                Command::Batch(cmds) => stack.extend(cmds),
                _ => count += 1,
            }
        }
        count
    }

    /// Refuses a command that one log entry cannot hold: nested deeper than
    /// [`MAX_BATCH_DEPTH`] (followers could not decode it) or with more than
    /// [`MAX_OPS_PER_ENTRY`] operations (they would run out of resource versions). Returns its
    /// number of operations ([`Command::op_count`]).
    pub fn check_bounds(&self) -> Result<usize, String> {
        let depth = self.batch_depth();
        if depth > MAX_BATCH_DEPTH {
            return Err(format!(
                "batches nested {depth} deep (at most {MAX_BATCH_DEPTH})"
            ));
        }
        let ops = self.op_count();
        if ops > MAX_OPS_PER_ENTRY {
            return Err(format!(
                "{ops} operations in one command (at most {MAX_OPS_PER_ENTRY})"
            ));
        }
        Ok(ops)
    }
}

thread_local! {
    /// Batches being decoded on this thread, outermost first. Decoding is synchronous (bincode
    /// over a byte slice), so a thread-local count is the nesting depth of the value at hand.
    static BATCH_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One level of batch nesting being decoded; leaving it (done, failed or unwinding) pops it.
struct BatchLevel(usize);

impl BatchLevel {
    fn enter() -> Self {
        BatchLevel(BATCH_DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        }))
    }
}

impl Drop for BatchLevel {
    fn drop(&mut self) {
        BATCH_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Decodes the commands of a `Batch`, refusing nesting deeper than [`MAX_BATCH_DEPTH`].
///
/// `Command` is recursive and bincode 1.3 has no recursion limit: without this, a 64 MiB body
/// of nested `Batch` tags on the Raft port (a `/raft/write`, or an entry in `/raft/append`)
/// would overflow the stack while decoding, which aborts the process. The wire and disk format
/// is unchanged: only the depth is checked, so every log written before still decodes.
fn decode_batch<'de, D: Deserializer<'de>>(decoder: D) -> Result<Vec<Command>, D::Error> {
    let level = BatchLevel::enter();
    if level.0 > MAX_BATCH_DEPTH {
        return Err(serde::de::Error::custom(format_args!(
            "batches nested deeper than {MAX_BATCH_DEPTH}"
        )));
    }
    Vec::<Command>::deserialize(decoder)
}

/// Largest command one log entry may hold, encoded: a single object of the API's largest
/// (1.5 MiB) with room to spare. Every append, and so every heartbeat that waits behind one,
/// stays small enough to reach a follower well within the RPC timeout.
pub const MAX_ENTRY_BYTES: u64 = 2 * 1024 * 1024;

/// What [`pack`] aims for: many small operations share an entry up to this size.
pub const PACKED_ENTRY_BYTES: u64 = 512 * 1024;

/// Groups `ops` into as few commands as fit in `max_bytes` (encoded) and
/// [`MAX_OPS_PER_ENTRY`] operations each, keeping their order: flattening the result gives
/// `ops` back. An operation larger than `max_bytes` gets a command of its own (and is refused
/// at proposal if over [`MAX_ENTRY_BYTES`]).
pub fn pack(ops: Vec<Command>, max_bytes: u64) -> Vec<Command> {
    // A Batch costs its tag and a length: a few bytes, counted once per command.
    const BATCH_OVERHEAD: u64 = 16;
    let mut out = Vec::new();
    let (mut current, mut bytes, mut count) = (Vec::new(), BATCH_OVERHEAD, 0usize);
    for op in ops {
        let size = codec::encoded_size(&op).unwrap_or(u64::MAX);
        let n = op.op_count();
        if !current.is_empty() && (bytes + size > max_bytes || count + n > MAX_OPS_PER_ENTRY) {
            out.push(Command::Batch(std::mem::take(&mut current)));
            (bytes, count) = (BATCH_OVERHEAD, 0);
        }
        bytes = bytes.saturating_add(size);
        count += n;
        current.push(op);
    }
    if !current.is_empty() {
        out.push(Command::Batch(current));
    }
    out
}

/// What a single operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The value was stored (created or updated) at resource version `rv`.
    Stored { rv: u64, created: bool },
    /// The key was removed at resource version `rv`; `prev` is what it held.
    Deleted { rv: u64, prev: Bytes },
    /// A create found the key present (last written at `current_rv`).
    AlreadyExists { current_rv: u64 },
    /// An update or delete precondition did not hold: the key is at `current_rv`.
    Conflict { current_rv: u64 },
    /// An update or delete found no such key.
    NotFound,
    /// Not applied: the entry holds more than [`MAX_OPS_PER_ENTRY`] operations, and this one
    /// is past the last resource version the entry can give. Leaders refuse such commands
    /// before proposing them ([`Command::check_bounds`]); apply refuses them again, the same
    /// way on every replica, whoever appended the entry.
    Refused,
    /// Not applied: the space alarm ([`ALARM_NOSPACE`]) is raised, and this operation would
    /// store a value (deletes still apply). Decided in apply, so every replica agrees.
    NoSpace,
}

impl OpResult {
    /// True when the operation changed the state.
    pub fn is_success(&self) -> bool {
        matches!(self, OpResult::Stored { .. } | OpResult::Deleted { .. })
    }
}

/// The answer to a [`Command`]: one result per (flattened) operation, and the log index of the
/// entry that held it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    pub index: u64,
    pub results: Vec<OpResult>,
}

/// A stored value with its resource versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Bytes,
    /// Resource version of the write that created the key ([`crate::revision`]).
    pub create_rv: u64,
    /// Resource version of the write that last wrote the key: the key's resource version.
    pub mod_rv: u64,
}

/// A change made by apply, handed to the storage layer and the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        key: String,
        record: Record,
        prev: Option<Record>,
    },
    Delete {
        key: String,
        prev: Record,
        /// The resource version of the delete.
        rv: u64,
    },
}

/// The key space apply works on.
pub type KeySpace = BTreeMap<String, Record>;

/// The key of the space alarm (etcd's NOSPACE): while it is present, every operation that
/// stores a value, other than one on this key, is [`OpResult::NoSpace`]; deletes apply. A
/// master whose database passes its quota writes it (`quota.rs`); an administrator deletes it.
pub const ALARM_NOSPACE: &str = "/keelson.io/alarms/nospace";

/// Applies `cmd`, written by the log entry at `index`, to `space`; records every change in
/// `changes` in order. Deterministic: the same state, command and index give the same result.
/// The operation at position `p` (batches flattened) writes at resource version
/// [`revision::of_write`]`(index, p)`.
pub fn apply_command(
    space: &mut KeySpace,
    index: u64,
    cmd: &Command,
    changes: &mut Vec<Change>,
) -> CommandResponse {
    let mut results = Vec::new();
    let mut stack = vec![cmd];
    // Depth-first, in order: a batch's commands are pushed last to first.
    while let Some(cmd) = stack.pop() {
        match cmd {
            Command::Batch(cmds) => stack.extend(cmds.iter().rev()),
            op => {
                let position = results.len();
                let result = if position < MAX_OPS_PER_ENTRY {
                    apply_op(space, revision::of_write(index, position), op, changes)
                } else {
                    OpResult::Refused
                };
                results.push(result);
            }
        }
    }
    CommandResponse { index, results }
}

/// Applies one operation (not a batch) at resource version `rv`.
fn apply_op(space: &mut KeySpace, rv: u64, cmd: &Command, changes: &mut Vec<Change>) -> OpResult {
    let stores = match cmd {
        Command::Create { key, .. } | Command::Update { key, .. } | Command::Put { key, .. } => {
            Some(key)
        }
        _ => None,
    };
    if stores.is_some_and(|key| key != ALARM_NOSPACE) && space.contains_key(ALARM_NOSPACE) {
        return OpResult::NoSpace;
    }
    match cmd {
        Command::Batch(_) => unreachable!("apply_command flattens batches"),
        Command::Create { key, value } => match space.get(key) {
            Some(existing) => OpResult::AlreadyExists {
                current_rv: existing.mod_rv,
            },
            None => store(space, rv, key, value, changes),
        },
        Command::Update {
            key,
            value,
            precondition,
        } => match space.get(key) {
            None => OpResult::NotFound,
            Some(existing) if precondition.is_some_and(|p| p != existing.mod_rv) => {
                OpResult::Conflict {
                    current_rv: existing.mod_rv,
                }
            }
            Some(_) => store(space, rv, key, value, changes),
        },
        Command::Put { key, value } => store(space, rv, key, value, changes),
        Command::Delete { key, precondition } => match space.get(key) {
            None => OpResult::NotFound,
            Some(existing) if precondition.is_some_and(|p| p != existing.mod_rv) => {
                OpResult::Conflict {
                    current_rv: existing.mod_rv,
                }
            }
            Some(_) => {
                let prev = space.remove(key).expect("checked above");
                let result = OpResult::Deleted {
                    rv,
                    prev: prev.value.clone(),
                };
                changes.push(Change::Delete {
                    key: key.clone(),
                    prev,
                    rv,
                });
                result
            }
        },
    }
}

fn store(
    space: &mut KeySpace,
    rv: u64,
    key: &str,
    value: &Bytes,
    changes: &mut Vec<Change>,
) -> OpResult {
    let prev = space.get(key).cloned();
    let record = Record {
        value: value.clone(),
        create_rv: prev.as_ref().map_or(rv, |p| p.create_rv),
        mod_rv: rv,
    };
    space.insert(key.to_string(), record.clone());
    let created = prev.is_none();
    changes.push(Change::Put {
        key: key.to_string(),
        record,
        prev,
    });
    OpResult::Stored { rv, created }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn w(index: u64, position: usize) -> u64 {
        revision::of_write(index, position)
    }

    /// A golden script: each step is (index, command, expected results).
    #[test]
    fn preconditions_are_checked_in_apply() {
        let mut space = KeySpace::new();
        let mut changes = Vec::new();
        let steps: Vec<(u64, Command, Vec<OpResult>)> = vec![
            (
                1,
                Command::Create {
                    key: "a".into(),
                    value: b("1"),
                },
                vec![OpResult::Stored {
                    rv: w(1, 0),
                    created: true,
                }],
            ),
            (
                2,
                Command::Create {
                    key: "a".into(),
                    value: b("2"),
                },
                vec![OpResult::AlreadyExists {
                    current_rv: w(1, 0),
                }],
            ),
            (
                3,
                Command::Update {
                    key: "a".into(),
                    value: b("3"),
                    precondition: Some(w(2, 0)),
                },
                vec![OpResult::Conflict {
                    current_rv: w(1, 0),
                }],
            ),
            (
                4,
                Command::Update {
                    key: "a".into(),
                    value: b("4"),
                    precondition: Some(w(1, 0)),
                },
                vec![OpResult::Stored {
                    rv: w(4, 0),
                    created: false,
                }],
            ),
            (
                5,
                Command::Update {
                    key: "zz".into(),
                    value: b("5"),
                    precondition: None,
                },
                vec![OpResult::NotFound],
            ),
            (
                6,
                Command::Delete {
                    key: "a".into(),
                    precondition: Some(w(1, 0)),
                },
                vec![OpResult::Conflict {
                    current_rv: w(4, 0),
                }],
            ),
            (
                7,
                Command::Batch(vec![
                    Command::Put {
                        key: "b".into(),
                        value: b("7"),
                    },
                    Command::Batch(vec![Command::Delete {
                        key: "a".into(),
                        precondition: Some(w(4, 0)),
                    }]),
                    Command::Delete {
                        key: "a".into(),
                        precondition: None,
                    },
                ]),
                vec![
                    OpResult::Stored {
                        rv: w(7, 0),
                        created: true,
                    },
                    OpResult::Deleted {
                        rv: w(7, 1),
                        prev: b("4"),
                    },
                    OpResult::NotFound,
                ],
            ),
        ];
        for (index, cmd, want) in steps {
            let got = apply_command(&mut space, index, &cmd, &mut changes);
            assert_eq!(got.results, want, "step at index {index}: {cmd:?}");
            assert_eq!(got.index, index);
        }
        assert_eq!(space.len(), 1);
        assert_eq!(
            space["b"],
            Record {
                value: b("7"),
                create_rv: w(7, 0),
                mod_rv: w(7, 0)
            }
        );
        // Only successful operations produce changes: create a, update a, put b, delete a.
        assert_eq!(changes.len(), 4);
    }

    #[test]
    fn update_keeps_create_revision() {
        let mut space = KeySpace::new();
        let mut changes = Vec::new();
        apply_command(
            &mut space,
            3,
            &Command::Put {
                key: "k".into(),
                value: b("x"),
            },
            &mut changes,
        );
        apply_command(
            &mut space,
            9,
            &Command::Put {
                key: "k".into(),
                value: b("y"),
            },
            &mut changes,
        );
        assert_eq!(space["k"].create_rv, w(3, 0));
        assert_eq!(space["k"].mod_rv, w(9, 0));
        match &changes[1] {
            Change::Put { prev: Some(p), .. } => assert_eq!(p.mod_rv, w(3, 0)),
            other => panic!("unexpected change {other:?}"),
        }
    }

    /// `depth` batches around one `Put`, encoded without recursion: bincode writes a variant
    /// as its index (`Batch` is 4) and a length as a varint, so each level is the bytes 4, 1.
    fn nested_bytes(depth: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(2 * depth + 4);
        for _ in 0..depth {
            bytes.extend([4, 1]);
        }
        // Put { key: "k", value: "" }
        bytes.extend([2, 1, b'k', 0]);
        bytes
    }

    fn nested(depth: usize) -> Command {
        let mut cmd = Command::Put {
            key: "k".into(),
            value: Bytes::new(),
        };
        for _ in 0..depth {
            cmd = Command::Batch(vec![cmd]);
        }
        cmd
    }

    #[test]
    fn the_hand_made_encoding_is_bincodes() {
        for depth in [0, 1, 3] {
            assert_eq!(
                crate::codec::encode(&nested(depth)).unwrap(),
                nested_bytes(depth)
            );
        }
    }

    #[test]
    fn batches_nested_up_to_the_limit_roundtrip() {
        for depth in 0..=MAX_BATCH_DEPTH {
            let cmd = nested(depth);
            assert_eq!(cmd.batch_depth(), depth);
            assert!(cmd.check_bounds().is_ok());
            let back: Command = crate::codec::decode(&crate::codec::encode(&cmd).unwrap()).unwrap();
            assert_eq!(back, cmd);
        }
        // As the controllers write them: one level of many operations.
        let flat = Command::Batch(
            (0..500)
                .map(|i| Command::Delete {
                    key: format!("/registry/events/{i}"),
                    precondition: Some(i),
                })
                .collect(),
        );
        let back: Command = crate::codec::decode(&crate::codec::encode(&flat).unwrap()).unwrap();
        assert_eq!(back, flat);
    }

    #[test]
    fn deeper_batches_are_refused_not_a_crash() {
        let too_deep = nested(MAX_BATCH_DEPTH + 1);
        assert!(too_deep.check_bounds().is_err());
        let err =
            crate::codec::decode::<Command>(&crate::codec::encode(&too_deep).unwrap()).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // A hostile body: 100,000 levels (200 KB) would overflow the stack without the limit.
        let err = crate::codec::decode::<Command>(&nested_bytes(100_000)).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // Failures leave the depth count where it was: the deepest allowed still decodes.
        let truncated = &nested_bytes(5)[..7];
        assert!(crate::codec::decode::<Command>(truncated).is_err());
        let ok: Command = crate::codec::decode(&nested_bytes(MAX_BATCH_DEPTH)).unwrap();
        assert_eq!(ok, nested(MAX_BATCH_DEPTH));
        assert_eq!(BATCH_DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn a_deep_batch_inside_append_entries_is_refused() {
        use openraft::raft::AppendEntriesRequest;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let marker = Command::Put {
            key: "k".into(),
            value: Bytes::new(),
        };
        let req = AppendEntriesRequest::<crate::TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Normal(marker.clone()),
            }],
        };
        let plain = crate::codec::encode(&req).unwrap();
        let leaf = crate::codec::encode(&marker).unwrap();
        let at = plain
            .windows(leaf.len())
            .position(|w| w == leaf)
            .expect("the command is in the request");
        let mut hostile = plain[..at].to_vec();
        hostile.extend(nested_bytes(100_000));
        hostile.extend(&plain[at + leaf.len()..]);
        assert!(crate::codec::decode::<AppendEntriesRequest<crate::TypeConfig>>(&plain).is_ok());
        let err =
            crate::codec::decode::<AppendEntriesRequest<crate::TypeConfig>>(&hostile).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn apply_flattens_the_deepest_allowed_batch() {
        let mut space = KeySpace::new();
        let mut changes = Vec::new();
        let resp = apply_command(&mut space, 1, &nested(MAX_BATCH_DEPTH), &mut changes);
        assert_eq!(
            resp.results,
            vec![OpResult::Stored {
                rv: w(1, 0),
                created: true
            }]
        );
    }

    /// Every operation of a batch gets its own resource version, in order, between those of
    /// the entries around it; a batch over the limit is refused before proposing, and past the
    /// limit apply refuses the rest the same way everywhere.
    #[test]
    fn the_space_alarm_refuses_what_stores_and_lets_deletes_through() {
        let mut space = KeySpace::new();
        let mut changes = Vec::new();
        let put = |key: &str| Command::Put {
            key: key.into(),
            value: b("v"),
        };
        let results = |space: &mut KeySpace, changes: &mut Vec<Change>, i, cmd: Command| {
            apply_command(space, i, &cmd, changes).results
        };
        assert!(results(&mut space, &mut changes, 1, put("a"))[0].is_success());
        assert!(results(&mut space, &mut changes, 2, put(ALARM_NOSPACE))[0].is_success());
        let refused = Command::Batch(vec![
            Command::Create {
                key: "b".into(),
                value: b("1"),
            },
            Command::Update {
                key: "a".into(),
                value: b("2"),
                precondition: None,
            },
            put("a"),
        ]);
        assert_eq!(
            results(&mut space, &mut changes, 3, refused),
            vec![OpResult::NoSpace; 3]
        );
        let delete = |key: &str| Command::Delete {
            key: key.into(),
            precondition: None,
        };
        assert!(results(&mut space, &mut changes, 4, delete("a"))[0].is_success());
        // The alarm's own key stays writable; deleting it disarms.
        assert!(results(&mut space, &mut changes, 5, put(ALARM_NOSPACE))[0].is_success());
        assert!(results(&mut space, &mut changes, 6, delete(ALARM_NOSPACE))[0].is_success());
        assert!(results(&mut space, &mut changes, 7, put("b"))[0].is_success());
    }

    #[test]
    fn each_operation_of_an_entry_has_its_own_version() {
        let puts = |n: usize| {
            Command::Batch(
                (0..n)
                    .map(|i| Command::Put {
                        key: format!("k{i}"),
                        value: b("v"),
                    })
                    .collect(),
            )
        };
        let mut space = KeySpace::new();
        let mut changes = Vec::new();
        let resp = apply_command(&mut space, 5, &puts(3), &mut changes);
        let rvs: Vec<u64> = resp
            .results
            .iter()
            .map(|r| match r {
                OpResult::Stored { rv, .. } => *rv,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rvs, vec![w(5, 0), w(5, 1), w(5, 2)]);
        assert!(revision::through_entry(4) < rvs[0] && rvs[2] < revision::through_entry(5));

        let too_many = puts(MAX_OPS_PER_ENTRY + 1);
        assert_eq!(too_many.op_count(), MAX_OPS_PER_ENTRY + 1);
        assert!(too_many.check_bounds().unwrap_err().contains("operations"));
        assert!(puts(MAX_OPS_PER_ENTRY).check_bounds().is_ok());
        let resp = apply_command(&mut KeySpace::new(), 6, &too_many, &mut Vec::new());
        assert_eq!(resp.results.len(), MAX_OPS_PER_ENTRY + 1);
        assert_eq!(resp.results.last(), Some(&OpResult::Refused));
        assert!(resp.results[MAX_OPS_PER_ENTRY - 1].is_success());
    }

    /// `pack` over random runs of operations (single ones and small batches, values of random
    /// sizes): flattening its commands gives the operations back in order, each command fits
    /// its budget unless it is one operation alone, and applying the packed commands gives
    /// every operation the result it gets when applied one by one.
    #[test]
    fn packing_keeps_every_operation_in_order_within_the_budget() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let flatten = |cmds: &[Command]| -> Vec<Command> {
            let mut out = Vec::new();
            let mut stack: Vec<&Command> = cmds.iter().rev().collect();
            while let Some(c) = stack.pop() {
                match c {
                    Command::Batch(inner) => stack.extend(inner.iter().rev()),
                    op => out.push(op.clone()),
                }
            }
            out
        };
        for round in 0..200 {
            let budget = 1 + next(64 * 1024);
            let ops: Vec<Command> = (0..next(300))
                .map(|i| {
                    let put = |k: u64, len: u64| Command::Put {
                        key: format!("k{}", k % 20),
                        value: Bytes::from(vec![b'x'; len as usize]),
                    };
                    match next(4) {
                        0 => Command::Batch((0..next(4)).map(|j| put(i + j, next(2000))).collect()),
                        1 => Command::Delete {
                            key: format!("k{}", i % 20),
                            precondition: None,
                        },
                        _ => put(i, next(if round % 10 == 0 { 200_000 } else { 3000 })),
                    }
                })
                .collect();
            let packed = pack(ops.clone(), budget);
            assert_eq!(flatten(&packed), flatten(&ops), "round {round}");
            for cmd in &packed {
                let size = codec::encoded_size(cmd).unwrap();
                let Command::Batch(inner) = cmd else {
                    panic!("pack makes batches")
                };
                assert!(
                    size <= budget + 16 || inner.len() == 1,
                    "round {round}: {size} bytes over {budget} in {} commands",
                    inner.len()
                );
                assert!(cmd.check_bounds().is_ok());
            }
            let (mut one, mut packed_space) = (KeySpace::new(), KeySpace::new());
            let singly: Vec<OpResult> = ops
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    apply_command(&mut one, i as u64 + 1, c, &mut Vec::new()).results
                })
                .map(|r| strip_rv(&r))
                .collect();
            let together: Vec<OpResult> = packed
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    apply_command(&mut packed_space, i as u64 + 1, c, &mut Vec::new()).results
                })
                .map(|r| strip_rv(&r))
                .collect();
            assert_eq!(singly, together, "round {round}");
        }
    }

    /// A result without its versions, which depend on how operations share entries.
    fn strip_rv(r: &OpResult) -> OpResult {
        match r {
            OpResult::Stored { created, .. } => OpResult::Stored {
                rv: 0,
                created: *created,
            },
            OpResult::Deleted { prev, .. } => OpResult::Deleted {
                rv: 0,
                prev: prev.clone(),
            },
            OpResult::AlreadyExists { .. } => OpResult::AlreadyExists { current_rv: 0 },
            OpResult::Conflict { .. } => OpResult::Conflict { current_rv: 0 },
            other => other.clone(),
        }
    }
}
