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

/// How deeply batches may nest: `Batch([Put])` is depth 1. keelson itself writes depth 1 (the
/// controllers' and the registry's batches of plain operations); the margin is for callers that
/// group batches. Decoding refuses anything deeper (see `decode_batch`), and so does
/// [`Command::check_depth`] before a command is proposed, so that every entry a leader appends
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

    /// Refuses a command nested deeper than [`MAX_BATCH_DEPTH`]: followers could not decode it.
    pub fn check_depth(&self) -> Result<(), String> {
        let depth = self.batch_depth();
        if depth > MAX_BATCH_DEPTH {
            return Err(format!(
                "batches nested {depth} deep (at most {MAX_BATCH_DEPTH})"
            ));
        }
        Ok(())
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
}

impl OpResult {
    /// True when the operation changed the state.
    pub fn is_success(&self) -> bool {
        matches!(self, OpResult::Stored { .. } | OpResult::Deleted { .. })
    }
}

/// The answer to a [`Command`]: one result per (flattened) operation, and the log index the
/// command was applied at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    pub index: u64,
    pub results: Vec<OpResult>,
}

/// A stored value with its resource versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Bytes,
    /// Log index of the entry that created the key.
    pub create_rv: u64,
    /// Log index of the entry that last wrote the key: the resource version.
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
    },
}

/// The key space apply works on.
pub type KeySpace = BTreeMap<String, Record>;

/// Applies `cmd`, written by the log entry at `index`, to `space`; records every change in
/// `changes` in order. Deterministic: the same state, command and index give the same result.
pub fn apply_command(
    space: &mut KeySpace,
    index: u64,
    cmd: &Command,
    changes: &mut Vec<Change>,
) -> CommandResponse {
    let mut results = Vec::new();
    apply_into(space, index, cmd, changes, &mut results);
    CommandResponse { index, results }
}

fn apply_into(
    space: &mut KeySpace,
    index: u64,
    cmd: &Command,
    changes: &mut Vec<Change>,
    out: &mut Vec<OpResult>,
) {
    let result = match cmd {
        Command::Batch(cmds) => {
            for c in cmds {
                apply_into(space, index, c, changes, out);
            }
            return;
        }
        Command::Create { key, value } => match space.get(key) {
            Some(existing) => OpResult::AlreadyExists {
                current_rv: existing.mod_rv,
            },
            None => store(space, index, key, value, changes),
        },
        Command::Update {
            key,
            value,
            precondition,
        } => match space.get(key) {
            None => OpResult::NotFound,
            Some(existing) if precondition.is_some_and(|rv| rv != existing.mod_rv) => {
                OpResult::Conflict {
                    current_rv: existing.mod_rv,
                }
            }
            Some(_) => store(space, index, key, value, changes),
        },
        Command::Put { key, value } => store(space, index, key, value, changes),
        Command::Delete { key, precondition } => match space.get(key) {
            None => OpResult::NotFound,
            Some(existing) if precondition.is_some_and(|rv| rv != existing.mod_rv) => {
                OpResult::Conflict {
                    current_rv: existing.mod_rv,
                }
            }
            Some(_) => {
                let prev = space.remove(key).expect("checked above");
                let result = OpResult::Deleted {
                    rv: index,
                    prev: prev.value.clone(),
                };
                changes.push(Change::Delete {
                    key: key.clone(),
                    prev,
                });
                result
            }
        },
    };
    out.push(result);
}

fn store(
    space: &mut KeySpace,
    index: u64,
    key: &str,
    value: &Bytes,
    changes: &mut Vec<Change>,
) -> OpResult {
    let prev = space.get(key).cloned();
    let record = Record {
        value: value.clone(),
        create_rv: prev.as_ref().map_or(index, |p| p.create_rv),
        mod_rv: index,
    };
    space.insert(key.to_string(), record.clone());
    let created = prev.is_none();
    changes.push(Change::Put {
        key: key.to_string(),
        record,
        prev,
    });
    OpResult::Stored { rv: index, created }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
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
                    rv: 1,
                    created: true,
                }],
            ),
            (
                2,
                Command::Create {
                    key: "a".into(),
                    value: b("2"),
                },
                vec![OpResult::AlreadyExists { current_rv: 1 }],
            ),
            (
                3,
                Command::Update {
                    key: "a".into(),
                    value: b("3"),
                    precondition: Some(2),
                },
                vec![OpResult::Conflict { current_rv: 1 }],
            ),
            (
                4,
                Command::Update {
                    key: "a".into(),
                    value: b("4"),
                    precondition: Some(1),
                },
                vec![OpResult::Stored {
                    rv: 4,
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
                    precondition: Some(1),
                },
                vec![OpResult::Conflict { current_rv: 4 }],
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
                        precondition: Some(4),
                    }]),
                    Command::Delete {
                        key: "a".into(),
                        precondition: None,
                    },
                ]),
                vec![
                    OpResult::Stored {
                        rv: 7,
                        created: true,
                    },
                    OpResult::Deleted {
                        rv: 7,
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
                create_rv: 7,
                mod_rv: 7
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
        assert_eq!(space["k"].create_rv, 3);
        assert_eq!(space["k"].mod_rv, 9);
        match &changes[1] {
            Change::Put { prev: Some(p), .. } => assert_eq!(p.mod_rv, 3),
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
            assert!(cmd.check_depth().is_ok());
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
        assert!(too_deep.check_depth().is_err());
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
                rv: 1,
                created: true
            }]
        );
    }
}
