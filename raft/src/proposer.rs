//! Proposal batching on the leader: concurrent writes share one log entry.
//!
//! Every write this master proposes — its own and those followers forward — goes through one
//! queue. A task takes them in arrival order and proposes each group as one entry: while
//! [`MAX_IN_FLIGHT`] proposals await their commit, new writes wait in the queue, and the next
//! group takes all that fit ([`PACKED_ENTRY_BYTES`], [`MAX_OPS_PER_ENTRY`]). One client alone
//! finds a free slot and is proposed at once; many clients share entries, so the per-entry
//! costs (encoding, log write, replication, apply) are paid once per group.
//!
//! Each write keeps its own result: a group is proposed as `Batch([w1, w2, …])`, apply gives
//! one result per flattened operation in order, and [`split_results`] hands each write the
//! results of its own operations (with the entry's index; each operation has its own resource
//! version). A write that nests batches as deep as allowed is proposed alone, as wrapping it
//! would exceed the nesting bound.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::{Command, CommandResponse, MAX_BATCH_DEPTH, PACKED_ENTRY_BYTES};
use crate::error::ClusterError;
use crate::revision::MAX_OPS_PER_ENTRY;
use crate::{MasterNode, NodeId, Raft};

/// Proposals awaiting their commit at once; more writes wait and are grouped.
pub const MAX_IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<CommandResponse, ClusterError>>;

/// A write waiting to be proposed.
struct Pending {
    cmd: Command,
    /// Encoded size of `cmd`.
    size: u64,
    ops: usize,
    reply: Reply,
}

impl Pending {
    /// Whether the write may share an entry: wrapping it adds one level of nesting.
    fn groupable(&self) -> bool {
        self.cmd.batch_depth() < MAX_BATCH_DEPTH
    }
}

/// The queue in front of `Raft::client_write`.
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the grouping task for `raft` on `runtime`; it ends when the proposer is dropped.
    pub(crate) fn start(raft: Raft, runtime: &tokio::runtime::Handle) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(raft, rx));
        Proposer { queue }
    }

    /// Proposes `cmd` (checked by the caller: bounded, `size` bytes encoded, `ops` operations)
    /// and returns its result once committed and applied. Dropping the future does not withdraw
    /// the write.
    pub(crate) async fn propose(
        &self,
        cmd: Command,
        size: u64,
        ops: usize,
    ) -> Result<CommandResponse, ClusterError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                cmd,
                size,
                ops,
                reply,
            })
            .map_err(|_| ClusterError::Fatal("this master is stopping".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(ClusterError::Indeterminate(
                "the proposal was dropped before its result".into(),
            ))
        })
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting for a slot is what lets writes gather behind the first.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut bytes, mut ops) = (first.size, first.ops);
        let groupable = first.groupable();
        let mut group = vec![first];
        while groupable {
            let Ok(next) = rx.try_recv() else { break };
            if !next.groupable()
                || bytes + next.size > PACKED_ENTRY_BYTES
                || ops + next.ops > MAX_OPS_PER_ENTRY
            {
                carried = Some(next);
                break;
            }
            bytes += next.size;
            ops += next.ops;
            group.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_group(&raft, group).await;
            drop(permit);
        });
    }
}

/// Proposes one group as one entry and answers each of its writes.
async fn propose_group(raft: &Raft, mut group: Vec<Pending>) {
    if group.len() == 1 {
        let p = group.pop().expect("one write");
        let result = raft
            .client_write(p.cmd)
            .await
            .map(|r| r.data)
            .map_err(write_error);
        let _ = p.reply.send(result);
        return;
    }
    let counts: Vec<usize> = group.iter().map(|p| p.ops).collect();
    let (cmds, replies): (Vec<Command>, Vec<Reply>) =
        group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(resp) => {
            for (reply, answer) in replies.into_iter().zip(split_results(resp.data, &counts)) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            let e = write_error(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// What a failed `client_write` (or membership change) means to the caller.
pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, MasterNode>>,
) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ClusterError::Invalid(e.to_string())
        }
        RaftError::Fatal(e) => ClusterError::Fatal(e.to_string()),
    }
}

/// Splits the response to `Batch([w1, w2, …])` into one response per write, where write `i`
/// has `counts[i]` operations: each gets the entry's index and its own operations' results,
/// in order.
pub fn split_results(resp: CommandResponse, counts: &[usize]) -> Vec<CommandResponse> {
    debug_assert_eq!(counts.iter().sum::<usize>(), resp.results.len());
    let mut results = resp.results.into_iter();
    counts
        .iter()
        .map(|&n| CommandResponse {
            index: resp.index,
            results: results.by_ref().take(n).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{apply_command, KeySpace, OpResult};
    use bytes::Bytes;

    /// Writes grouped into one entry get, each, exactly the results they get when proposed one
    /// by one (versions aside, which depend on the entry): over random groups of random writes,
    /// with preconditions that hold or not, creates of existing keys and deletes of missing
    /// ones, and batches.
    #[test]
    fn a_group_answers_each_write_as_if_alone() {
        let seed = std::cell::Cell::new(0x2545_F491_4F6C_DD1Du64);
        let next = |n: u64| {
            let mut s = seed.get();
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            seed.set(s);
            s % n
        };
        let strip = |r: &OpResult| match r {
            OpResult::Stored { created, .. } => format!("stored {created}"),
            OpResult::Deleted { prev, .. } => format!("deleted {prev:?}"),
            OpResult::AlreadyExists { .. } => "exists".into(),
            OpResult::Conflict { .. } => "conflict".into(),
            OpResult::NotFound => "not found".into(),
            OpResult::Refused => "refused".into(),
            OpResult::NoSpace => "no space".into(),
        };
        for round in 0..300 {
            let op = |i: u64| {
                let key = format!("k{}", next(8));
                let value = Bytes::from(format!("v{i}"));
                match next(5) {
                    0 => Command::Create { key, value },
                    1 => Command::Update {
                        key,
                        value,
                        precondition: None,
                    },
                    2 => Command::Delete {
                        key,
                        precondition: None,
                    },
                    _ => Command::Put { key, value },
                }
            };
            let writes: Vec<Command> = (0..1 + next(12))
                .map(|i| match next(3) {
                    0 => Command::Batch((0..next(4)).map(|j| op(i * 10 + j)).collect()),
                    _ => op(i),
                })
                .collect();
            let mut alone = KeySpace::new();
            let want: Vec<Vec<String>> = writes
                .iter()
                .map(|w| {
                    apply_command(&mut alone, 1, w, &mut Vec::new())
                        .results
                        .iter()
                        .map(strip)
                        .collect()
                })
                .collect();
            let counts: Vec<usize> = writes.iter().map(Command::op_count).collect();
            let mut grouped = KeySpace::new();
            let resp = apply_command(&mut grouped, 7, &Command::Batch(writes), &mut Vec::new());
            let got: Vec<Vec<String>> = split_results(resp, &counts)
                .into_iter()
                .map(|r| {
                    assert_eq!(r.index, 7);
                    r.results.iter().map(strip).collect()
                })
                .collect();
            assert_eq!(got, want, "round {round}");
            let values = |space: &KeySpace| -> Vec<(String, Bytes)> {
                space
                    .iter()
                    .map(|(k, r)| (k.clone(), r.value.clone()))
                    .collect()
            };
            assert_eq!(
                values(&grouped),
                values(&alone),
                "round {round}: the same state"
            );
        }
    }
}
