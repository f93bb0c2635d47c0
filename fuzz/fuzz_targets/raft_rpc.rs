//! The Raft port's decoder: every body a route takes (`raft/src/server.rs`) and every answer a
//! master reads back from a peer (`raft/src/network.rs`, `node.rs`'s forwarding), through the
//! one bincode configuration (`keelson_raft::codec`).
//!
//! Input: the first byte picks the message type, the rest is the body. A body may be refused,
//! never panic, abort or exhaust the stack — a 2 MiB stack, as tokio's worker threads have: a
//! master decodes on them, and `fuzz/run.sh` runs every target under `ulimit -s 2048`. A body
//! that decodes must re-encode to a canonical form that decodes to the same value (checked on
//! the encodings, since openraft's types do not all implement `PartialEq`).

#![no_main]

use keelson_raft::codec;
use keelson_raft::command::{Command, CommandResponse};
use keelson_raft::error::ClusterError;
use keelson_raft::message::{AdminRequest, NodeStatus};
use keelson_raft::{NodeId, TypeConfig};
use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `body` as a `T`; if it decodes, checks that encode ∘ decode is stable.
fn check<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(value) = codec::decode::<T>(body) else {
        return;
    };
    let first = codec::encode(&value).expect("a decoded message encodes");
    let again: T = codec::decode(&first).expect("a re-encoded message decodes");
    let second = codec::encode(&again).expect("a decoded message encodes");
    assert_eq!(first, second, "encode(decode(encode(m))) != encode(m)");
}

/// Answers carrying openraft's `RaftError` are decoded only up to this size, as the master
/// does (`network::MAX_RPC_ANSWER`, in the `storage` part of keelson-raft): longer ones can nest
/// `AnyError` sources deeply enough to overflow the stack (docs/fuzzing.md).
const KNOWN_DEEP_ERROR_CHAINS: usize = 8 * 1024;

fuzz_target!(init: keelson_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if matches!(which % 12, 6..=8) && body.len() > KNOWN_DEEP_ERROR_CHAINS {
        return;
    }
    match which % 12 {
        // Requests, as the routes of the Raft port decode them.
        0 => check::<AppendEntriesRequest<TypeConfig>>(body),
        1 => check::<VoteRequest<NodeId>>(body),
        2 => check::<InstallSnapshotRequest<TypeConfig>>(body),
        3 => check::<Command>(body),
        4 => check::<()>(body),
        5 => check::<AdminRequest>(body),
        // Answers, as the sending master decodes them.
        6 => check::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(body),
        7 => check::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(body),
        8 => check::<
            Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
        >(body),
        9 => check::<Result<CommandResponse, ClusterError>>(body),
        10 => check::<Result<u64, ClusterError>>(body),
        _ => check::<Result<NodeStatus, ClusterError>>(body),
    }
});
