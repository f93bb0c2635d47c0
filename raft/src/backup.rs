//! Backups of the replicated state: the file `keelson ctl snapshot save` writes and `keelson
//! snapshot restore` reads (etcd's `snapshot save` and `etcdutl snapshot restore`).
//!
//! A backup is the state machine at one applied entry of the leader, taken after a read barrier
//! (so it holds every write acknowledged before it was asked for). The file:
//!
//! ```text
//! MAGIC (16 bytes) | header length (u32, little-endian) | header (JSON, [`BackupHeader`])
//!                  | data (header.data_bytes: snapshot data, as `snapshot.bin` holds it)
//!                  | SHA-256 of everything before it (32 bytes)
//! ```
//!
//! Restoring makes the data directory of one master of a **new** cluster: the records, applied
//! at the backup's index (so resource versions go on from there and never repeat one a client
//! saw), a membership of the masters given, a new cluster id, and an empty log whose start is
//! that index. Every master of the new cluster is restored from the same file; they elect a
//! leader among themselves as any cluster does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::feed::WindowLimits;
use crate::store::{self, LogStore, StateMachine};
use crate::{MasterNode, NodeId};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"KEELSON-BACKUP\n\0";
/// This layout's version, in the header.
pub const BACKUP_FORMAT: u32 = 1;
/// A header longer than this is not a backup's.
const MAX_HEADER: u32 = 64 * 1024;
const DIGEST_LEN: usize = 32;

/// What a backup says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`].
    pub backup_format: u32,
    /// The data format of the masters that wrote it ([`store::FORMAT`]).
    pub data_format: u32,
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The last log index applied in it.
    pub index: u64,
    /// The leader's term when it was taken.
    pub term: u64,
    /// The master that took it.
    pub taken_by: NodeId,
    /// When, in seconds since the Unix epoch.
    pub taken_at: u64,
    /// How many records (keys) it holds.
    pub records: u64,
    /// The length of its data.
    pub data_bytes: u64,
    /// The clusters the one it was taken from was itself restored from, newest first.
    #[serde(default)]
    pub restored_from: Vec<String>,
}

/// Why a backup cannot be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is not a keelson backup ({reason})")]
    NotBackup { path: String, reason: String },
    #[error("{path} is damaged: its SHA-256 is {actual}, the file says {recorded}")]
    Checksum {
        path: String,
        actual: String,
        recorded: String,
    },
    #[error(
        "{path} holds data format {found}; this keelson reads format {} only",
        store::FORMAT
    )]
    Format { path: String, found: u32 },
    #[error("{0}")]
    Restore(String),
}

/// The whole backup file for `header` and its `data`.
pub fn encode(header: &BackupHeader, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("a header encodes");
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + data.len() + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and checks the backup at `path`: its layout, its checksum and its data format.
/// Returns its header, its data and its SHA-256 (hex).
pub fn read(path: &Path) -> Result<(BackupHeader, Vec<u8>, String), BackupError> {
    let shown = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|error| BackupError::Io {
            path: shown.clone(),
            error,
        })?;
    let not = |reason: &str| BackupError::NotBackup {
        path: shown.clone(),
        reason: reason.to_string(),
    };
    if bytes.len() < MAGIC.len() + 4 + DIGEST_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(not("it does not start as one"));
    }
    let (body, recorded) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let actual = ring::digest::digest(&ring::digest::SHA256, body);
    if actual.as_ref() != recorded {
        return Err(BackupError::Checksum {
            path: shown,
            actual: hex(actual.as_ref()),
            recorded: hex(recorded),
        });
    }
    let len_at = MAGIC.len();
    let header_len = u32::from_le_bytes(body[len_at..len_at + 4].try_into().expect("4 bytes"));
    let header_at = len_at + 4;
    if header_len > MAX_HEADER || header_at + header_len as usize > body.len() {
        return Err(not("its header length is out of bounds"));
    }
    let data_at = header_at + header_len as usize;
    let header: BackupHeader = serde_json::from_slice(&body[header_at..data_at])
        .map_err(|e| not(&format!("its header does not parse: {e}")))?;
    if header.backup_format != BACKUP_FORMAT {
        return Err(not(&format!(
            "backup format {}, this keelson reads {BACKUP_FORMAT}",
            header.backup_format
        )));
    }
    if header.data_format != store::FORMAT {
        return Err(BackupError::Format {
            path: shown,
            found: header.data_format,
        });
    }
    if (body.len() - data_at) as u64 != header.data_bytes {
        return Err(not("its data is not as long as its header says"));
    }
    let data = body[data_at..].to_vec();
    Ok((header, data, hex(actual.as_ref())))
}

/// Makes `data_dir` (absent or empty) the data directory of master `id` of a new cluster
/// `cluster_id` of `members`, holding the state of the backup at `backup`. Returns its header.
pub async fn restore(
    backup: &Path,
    data_dir: &Path,
    id: NodeId,
    cluster_id: &str,
    members: BTreeMap<NodeId, MasterNode>,
) -> Result<BackupHeader, BackupError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| BackupError::Restore(format!("{what}: {e}"));
    let (header, data, _) = read(backup)?;
    if !members.contains_key(&id) {
        return Err(BackupError::Restore(format!(
            "--peers names no master {id}: the restored master must be one of them"
        )));
    }
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(BackupError::Restore(format!(
            "{} is not empty: restore into a new data directory",
            data_dir.display()
        )));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(data_dir)
            .and_then(|()| {
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| fail(&format!("create {}", data_dir.display()), &e))?;
    }
    let db = store::open_db(data_dir).map_err(|e| fail("open the database", &e))?;
    store::check_identity(&db, data_dir, id, Some(cluster_id))
        .map_err(|e| fail("record the master's identity", &e))?;
    // Its lineage: agents adopt (or remove) the containers of the clusters it came from.
    let mut lineage = vec![header.cluster_id.clone()];
    lineage.extend(header.restored_from.iter().cloned());
    lineage.retain(|c| c != cluster_id);
    store::record_restored_from(&db, &lineage).map_err(|e| fail("record its lineage", &e))?;
    // Applied at the backup's index, under term 0: the new cluster's first leader (term 1 or
    // later) appends after it, so log ids keep growing and resource versions never repeat.
    let at = LogId::new(CommittedLeaderId::new(0, 0), header.index);
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let meta = SnapshotMeta {
        last_log_id: Some(at),
        last_membership: StoredMembership::new(Some(at), Membership::new(vec![voters], members)),
        snapshot_id: format!("restored-{}-{}", header.cluster_id, header.index),
    };
    let mut sm = StateMachine::open(db.clone(), data_dir, WindowLimits::default())
        .map_err(|e| fail("open the state", &e))?;
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data)))
        .await
        .map_err(|e| fail("install the state", &e))?;
    let mut log = LogStore::new(db.clone());
    log.save_committed(Some(at))
        .await
        .map_err(|e| fail("record the commit index", &e))?;
    log.purge(at)
        .await
        .map_err(|e| fail("start the log at the backup's index", &e))?;
    db.flush_wal(true)
        .map_err(|e| fail("sync the database", &e))?;
    Ok(header)
}

impl crate::RaftNode {
    /// A backup of the state as this master holds it after a read barrier: every write
    /// acknowledged before the call is in it. The whole file ([`encode`]), built in memory.
    pub async fn backup(&self) -> Result<(BackupHeader, Vec<u8>), crate::ClusterError> {
        self.read_barrier().await?;
        let shared = self.store.clone();
        let export = tokio::task::spawn_blocking(move || shared.export())
            .await
            .map_err(|e| crate::ClusterError::Fatal(e.to_string()))?
            .map_err(crate::ClusterError::Fatal)?;
        let status = self.status();
        let header = BackupHeader {
            backup_format: BACKUP_FORMAT,
            data_format: store::FORMAT,
            cluster_id: status.cluster_id.unwrap_or_default(),
            index: export.last_applied.map_or(0, |l| l.index),
            term: status.term,
            taken_by: self.id,
            taken_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            records: export.records,
            data_bytes: export.data.len() as u64,
            restored_from: self.restored_from(),
        };
        let file = encode(&header, &export.data);
        Ok((header, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(data: &[u8]) -> BackupHeader {
        BackupHeader {
            backup_format: BACKUP_FORMAT,
            data_format: store::FORMAT,
            cluster_id: "c1".into(),
            index: 42,
            term: 3,
            taken_by: 1,
            taken_at: 0,
            records: 0,
            data_bytes: data.len() as u64,
            restored_from: vec!["c0".into()],
        }
    }

    #[test]
    fn a_backup_reads_back_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.snap");
        let data = crate::codec::encode(&Vec::<(String, crate::command::Record)>::new()).unwrap();
        let file = encode(&header(&data), &data);
        std::fs::write(&path, &file).unwrap();
        let (h, d, sum) = read(&path).unwrap();
        assert_eq!((h, d), (header(&data), data.clone()));
        assert_eq!(sum.len(), 64);
        // Every byte flipped in turn is caught: by the magic, or by the checksum.
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path).is_err(), "byte {i} flipped went unnoticed");
        }
        std::fs::write(&path, &file[..file.len() - 1]).unwrap();
        assert!(matches!(read(&path), Err(BackupError::Checksum { .. })));
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(read(&path), Err(BackupError::NotBackup { .. })));
        // Another data format: refused, naming it.
        let mut newer = header(&data);
        newer.data_format = store::FORMAT + 1;
        std::fs::write(&path, encode(&newer, &data)).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("data format {}", store::FORMAT + 1)),
            "{e}"
        );
    }
}
