//! Writes the `raft_rpc` seed corpus: one well-formed message of every type the Raft port
//! decodes, each prefixed by the selector byte the target reads first. Run it after changing a
//! message type (the files are committed):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example raft_seeds
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use keelson_raft::codec;
use keelson_raft::command::{Command, CommandResponse, OpResult};
use keelson_raft::error::ClusterError;
use keelson_raft::message::{AdminRequest, NodeStatus};
use keelson_raft::{MasterNode, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use serde::Serialize;

fn master(n: u64) -> MasterNode {
    MasterNode {
        raft: format!("127.0.0.{n}:7441"),
        api: format!("https://127.0.0.{n}:6443"),
    }
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<NodeId, MasterNode> {
    let nodes: BTreeMap<NodeId, MasterNode> = (1..=3).map(|n| (n, master(n))).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn pod_write() -> Command {
    Command::Create {
        key: "/registry/pods/default/web-1".into(),
        value: Bytes::from_static(br#"{"kind":"Pod","metadata":{"name":"web-1"}}"#),
    }
}

fn bindings() -> Command {
    Command::Batch(vec![
        Command::Update {
            key: "/registry/pods/default/web-1".into(),
            value: Bytes::from_static(br#"{"spec":{"nodeName":"node-1"}}"#),
            precondition: Some(7),
        },
        Command::Put {
            key: "/kv/k".into(),
            value: Bytes::from_static(b"v"),
        },
        Command::Delete {
            key: "/registry/pods/default/old".into(),
            precondition: None,
        },
        Command::Batch(vec![]),
    ])
}

fn status() -> NodeStatus {
    NodeStatus {
        id: 1,
        cluster_id: Some("c0ffee".into()),
        state: "Leader".into(),
        term: 3,
        leader: Some(1),
        last_log_index: 12,
        applied_index: 12,
        snapshot_index: 10,
        purged_index: 9,
        voters: vec![1, 2, 3],
        learners: vec![],
        members: (1..=3).map(|n| (n, master(n))).collect(),
    }
}

fn write<T: Serialize>(dir: &Path, name: &str, selector: u8, message: &T) {
    let mut bytes = vec![selector];
    bytes.extend(codec::encode(message).expect("encode a seed"));
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/raft_rpc");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let vote = Vote::new_committed(3, 1);

    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(3, 9)),
        entries: vec![
            Entry {
                log_id: log_id(3, 10),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(3, 11),
                payload: EntryPayload::Normal(pod_write()),
            },
            Entry {
                log_id: log_id(3, 12),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(3, 13),
                payload: EntryPayload::Normal(bindings()),
            },
        ],
        leader_commit: Some(log_id(3, 11)),
    };
    write(&dir, "append", 0, &append);
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    write(&dir, "append-heartbeat", 0, &heartbeat);
    write(
        &dir,
        "vote",
        1,
        &VoteRequest::<NodeId> {
            vote: Vote::new(4, 2),
            last_log_id: Some(log_id(3, 12)),
        },
    );
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 12)),
            last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
            snapshot_id: "3-1-12-7".into(),
        },
        offset: 1 << 20,
        data: b"\x02\x00snapshot chunk".to_vec(),
        done: true,
    };
    write(&dir, "snapshot", 2, &snapshot);
    write(&dir, "write-create", 3, &pod_write());
    write(&dir, "write-batch", 3, &bindings());
    write(&dir, "read-index", 4, &());
    write(
        &dir,
        "admin-add",
        5,
        &AdminRequest::AddMaster {
            id: 4,
            node: master(4),
        },
    );
    write(
        &dir,
        "admin-remove",
        5,
        &AdminRequest::RemoveMaster { id: 3 },
    );

    let appended: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(3, 11))));
    write(&dir, "answer-append", 6, &appended);
    let conflict: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        Ok(AppendEntriesResponse::Conflict);
    write(&dir, "answer-append-conflict", 6, &conflict);
    let voted: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(VoteResponse {
        vote: Vote::new(4, 2),
        vote_granted: true,
        last_log_id: Some(log_id(3, 12)),
    });
    write(&dir, "answer-vote", 7, &voted);
    let installed: Result<
        InstallSnapshotResponse<NodeId>,
        RaftError<NodeId, InstallSnapshotError>,
    > = Ok(InstallSnapshotResponse { vote });
    write(&dir, "answer-snapshot", 8, &installed);
    let mismatch: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
            SnapshotMismatch {
                expect: openraft::SnapshotSegmentId {
                    id: "3-1-12-7".into(),
                    offset: 0,
                },
                got: openraft::SnapshotSegmentId {
                    id: "3-1-12-7".into(),
                    offset: 1 << 20,
                },
            },
        )));
    write(&dir, "answer-snapshot-mismatch", 8, &mismatch);
    let written: Result<CommandResponse, ClusterError> = Ok(CommandResponse {
        index: 13,
        results: vec![
            OpResult::Stored {
                rv: 13,
                created: false,
            },
            OpResult::Deleted {
                rv: 13,
                prev: Bytes::from_static(b"{}"),
            },
            OpResult::AlreadyExists { current_rv: 4 },
            OpResult::Conflict { current_rv: 5 },
            OpResult::NotFound,
        ],
    });
    write(&dir, "answer-write", 9, &written);
    let not_leader: Result<CommandResponse, ClusterError> = Err(ClusterError::NotLeader {
        leader: Some((2, master(2))),
    });
    write(&dir, "answer-write-not-leader", 9, &not_leader);
    write(&dir, "answer-read-index", 10, &Ok::<u64, ClusterError>(12));
    write(
        &dir,
        "answer-read-index-removed",
        10,
        &Err::<u64, ClusterError>(ClusterError::Removed),
    );
    write(
        &dir,
        "answer-admin",
        11,
        &Ok::<NodeStatus, ClusterError>(status()),
    );
    println!("wrote {}", dir.display());
}
