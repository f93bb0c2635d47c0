//! One RocksDB per master: the Raft log and the state machine in column families of the same
//! database, so that both share one write-ahead log.
//!
//! Durability: log appends, votes, truncations and purges are synced before openraft is told
//! they are durable. State-machine writes are not synced on their own; they need not be, because
//! they are re-derivable from the log, and every later synced write (the next append, or the
//! purge that drops their log entries) flushes the shared WAL that holds them first.
//!
//! Column families:
//! - `logs`: entries by big-endian index;
//! - `meta`: vote, committed, last purged, the state machine's applied log id and membership,
//!   and the master's identity (node id, cluster id);
//! - `state`: the state machine's records by key.

mod log;
pub mod page;
mod recent;
mod snapshot;
mod state;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};

pub use log::LogStore;
pub use state::{Export, Shared, SmState, StateMachine};

use crate::codec;
use crate::feed::WindowLimits;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_STATE: &str = "state";

const KEY_NODE_ID: &[u8] = b"node_id";
const KEY_FORMAT: &[u8] = b"format";

/// The format of the data a master keeps, written when its directory is first used and checked
/// at every start. 2: resource versions are `index × 2^16 + position` ([`crate::revision`]).
/// Directories written before formats were recorded hold format 1 (resource versions were bare
/// log indexes) and are refused: their stored versions would go backwards.
pub const FORMAT: u32 = 2;
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// The clusters this one was restored from, newest first (`backup::restore`).
const KEY_RESTORED_FROM: &[u8] = b"restored_from";

/// The database's size as RocksDB accounts it: the live SST files and the memtables of every
/// column family (the write-ahead log aside). Properties RocksDB keeps up to date, so this costs
/// no directory walk: cheap enough for every `GET /cluster`.
pub(crate) fn db_size(db: &DB) -> u64 {
    const PROPERTIES: [&str; 2] = [
        "rocksdb.total-sst-files-size",
        "rocksdb.size-all-mem-tables",
    ];
    [CF_LOGS, CF_META, CF_STATE]
        .iter()
        .filter_map(|name| db.cf_handle(name))
        .flat_map(|cf| {
            PROPERTIES
                .iter()
                .filter_map(move |p| db.property_int_value_cf(&cf, *p).ok().flatten())
        })
        .sum()
}

/// Why a data directory cannot be used by this master.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database in {path}: {source}")]
    Db {
        path: String,
        source: rocksdb::Error,
    },
    #[error("the data directory {path} belongs to master {stored}, not to master {requested}: pass --id {stored} or use another --data-dir")]
    WrongNode {
        path: String,
        stored: u64,
        requested: u64,
    },
    #[error("the data directory {path} belongs to cluster {stored}, not to cluster {requested}: use another --data-dir")]
    WrongCluster {
        path: String,
        stored: String,
        requested: String,
    },
    #[error("cannot read the state in {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("the data directory {path} holds data format {found}, and this keelson reads format {FORMAT} only: {hint}")]
    Format {
        path: String,
        found: u32,
        hint: &'static str,
    },
}

/// Records the data format in a new directory, and refuses one written in another format.
/// A directory is new when its `meta` column family is empty: everything keelson writes there
/// (the master id first of all) is written after this check.
fn check_format(db: &DB, dir: &Path) -> Result<(), OpenError> {
    let path = dir.display().to_string();
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.clone(),
        reason,
    };
    let meta = db.cf_handle(CF_META).expect("meta column family");
    let found: u32 = match db
        .get_cf(&meta, KEY_FORMAT)
        .map_err(|e| corrupt(e.to_string()))?
    {
        Some(bytes) => codec::decode(&bytes).map_err(|e| corrupt(e.to_string()))?,
        None if db.iterator_cf(&meta, IteratorMode::Start).next().is_none() => {
            let bytes = codec::encode(&FORMAT).expect("encode u32");
            db.put_cf_opt(&meta, KEY_FORMAT, bytes, &synced())
                .map_err(|e| corrupt(e.to_string()))?;
            FORMAT
        }
        None => 1,
    };
    match found {
        FORMAT => Ok(()),
        older if older < FORMAT => Err(OpenError::Format {
            path,
            found: older,
            hint: "it was written by an older keelson, whose resource versions were log indexes; \
                   start this master with an empty --data-dir and let it join (keelson master \
                   --join), or restore the cluster from a backup",
        }),
        newer => Err(OpenError::Format {
            path,
            found: newer,
            hint: "it was written by a newer keelson; run that version",
        }),
    }
}

/// Opens (or creates) the database of a master.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Bound memory: keelson's values are small JSON documents.
    opts.set_write_buffer_size(16 * 1024 * 1024);
    opts.set_max_background_jobs(2);
    let cfs = [CF_LOGS, CF_META, CF_STATE]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| OpenError::Db {
        path: dir.display().to_string(),
        source,
    })?;
    check_format(&db, dir)?;
    Ok(Arc::new(db))
}

/// Checks (and on first use records) which master and which cluster this database belongs
/// to. Returns the cluster id in force: the stored one, else `cluster_id`.
pub fn check_identity(
    db: &DB,
    dir: &Path,
    node_id: u64,
    cluster_id: Option<&str>,
) -> Result<Option<String>, OpenError> {
    let path = dir.display().to_string();
    let meta = db.cf_handle(CF_META).expect("meta column family");
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.clone(),
        reason,
    };
    match db
        .get_cf(&meta, KEY_NODE_ID)
        .map_err(|e| corrupt(e.to_string()))?
    {
        Some(bytes) => {
            let stored: u64 = codec::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
            if stored != node_id {
                return Err(OpenError::WrongNode {
                    path,
                    stored,
                    requested: node_id,
                });
            }
        }
        None => {
            let bytes = codec::encode(&node_id).expect("encode u64");
            db.put_cf(&meta, KEY_NODE_ID, bytes)
                .map_err(|e| corrupt(e.to_string()))?;
        }
    }
    let stored = db
        .get_cf(&meta, KEY_CLUSTER_ID)
        .map_err(|e| corrupt(e.to_string()))?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    match (stored, cluster_id) {
        (Some(stored), Some(requested)) if stored != requested => Err(OpenError::WrongCluster {
            path,
            stored,
            requested: requested.to_string(),
        }),
        (Some(stored), _) => Ok(Some(stored)),
        (None, Some(requested)) => {
            record_cluster_id(db, requested).map_err(|e| corrupt(e.to_string()))?;
            Ok(Some(requested.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Records the clusters this one was restored from, newest first (synced).
pub(crate) fn record_restored_from(db: &DB, clusters: &[String]) -> Result<(), String> {
    let meta = db.cf_handle(CF_META).expect("meta column family");
    let bytes = codec::encode(&clusters.to_vec()).map_err(|e| e.to_string())?;
    db.put_cf_opt(&meta, KEY_RESTORED_FROM, bytes, &synced())
        .map_err(|e| e.to_string())
}

/// The clusters this one was restored from, newest first (none if it never was).
pub(crate) fn restored_from(db: &DB) -> Vec<String> {
    let meta = db.cf_handle(CF_META).expect("meta column family");
    db.get_cf(&meta, KEY_RESTORED_FROM)
        .ok()
        .flatten()
        .and_then(|b| codec::decode(&b).ok())
        .unwrap_or_default()
}

/// Records the cluster id (synced): a joining master learns it from its first leader.
pub fn record_cluster_id(db: &DB, cluster_id: &str) -> Result<(), rocksdb::Error> {
    let meta = db.cf_handle(CF_META).expect("meta column family");
    db.put_cf_opt(&meta, KEY_CLUSTER_ID, cluster_id.as_bytes(), &synced())
}

pub(crate) fn synced() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    w
}

/// Opens a master's storage: the log store and the state machine over one database.
pub fn open(dir: &Path, feed_window: WindowLimits) -> Result<(LogStore, StateMachine), OpenError> {
    let db = open_db(dir)?;
    let sm = StateMachine::open(db.clone(), dir, feed_window)?;
    Ok((LogStore::new(db), sm))
}

#[cfg(test)]
mod conformance {
    //! openraft's storage conformance suite against the RocksDB store.
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;
    use tempfile::TempDir;

    use super::*;
    use crate::TypeConfig;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
            let dir = TempDir::new().expect("tempdir");
            let (log, sm) = open(dir.path(), WindowLimits::default()).expect("open store");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("storage suite");
    }

    #[test]
    fn identity_is_checked() {
        let dir = TempDir::new().unwrap();
        let db = open_db(dir.path()).unwrap();
        assert_eq!(
            check_identity(&db, dir.path(), 1, Some("c1")).unwrap(),
            Some("c1".into())
        );
        assert!(matches!(
            check_identity(&db, dir.path(), 2, Some("c1")),
            Err(OpenError::WrongNode { stored: 1, .. })
        ));
        assert!(matches!(
            check_identity(&db, dir.path(), 1, Some("c2")),
            Err(OpenError::WrongCluster { .. })
        ));
        assert_eq!(
            check_identity(&db, dir.path(), 1, None).unwrap(),
            Some("c1".into())
        );
    }

    #[test]
    fn the_data_format_is_recorded_and_checked() {
        // A new directory records format 2 and opens again.
        let dir = TempDir::new().unwrap();
        let db = open_db(dir.path()).unwrap();
        check_identity(&db, dir.path(), 1, Some("c1")).unwrap();
        drop(db);
        open_db(dir.path()).expect("a directory of this format opens");

        // A directory written before formats were recorded (meta without a format): refused,
        // naming both formats and what to do, and left as it was.
        let old = TempDir::new().unwrap();
        let db = open_db(old.path()).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.delete_cf(&meta, KEY_FORMAT).unwrap();
        check_identity(&db, old.path(), 1, Some("c1")).unwrap();
        drop(db);
        let err = open_db(old.path()).err().expect("format 1 is refused");
        assert!(matches!(err, OpenError::Format { found: 1, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("data format 1") && text.contains("format 2"),
            "{text}"
        );
        assert!(text.contains("--join"), "{text}");
        assert!(open_db(old.path()).is_err(), "the refusal wrote nothing");

        // A newer format is refused too.
        let newer = TempDir::new().unwrap();
        let db = open_db(newer.path()).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(&meta, KEY_FORMAT, codec::encode(&(FORMAT + 1)).unwrap())
            .unwrap();
        drop(db);
        let err = open_db(newer.path())
            .err()
            .expect("a newer format is refused");
        assert!(err.to_string().contains("newer keelson"), "{err}");
    }
}
