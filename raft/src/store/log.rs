//! The Raft log in RocksDB, with group commit.
//!
//! `append` writes the entries (readable at once) and hands openraft's flush callback to a
//! flusher thread, which syncs the write-ahead log once for every callback waiting and then
//! reports them durable, in order. Under load many appends share one fsync; openraft is never
//! told an entry is durable before it is on disk. The newest entries are also kept in memory
//! (`recent.rs`), so replication and apply read them without RocksDB or decoding.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::recent::Recent;
use super::{synced, CF_LOGS, CF_META};
use crate::codec;
use crate::error::storage_err;
use crate::{NodeId, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The Raft log of one master.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// The newest entries, shared by every clone (the log readers of replication and apply).
    recent: Arc<Mutex<Recent>>,
    /// Bytes of entries appended since this master started, for the snapshot policy.
    appended: Arc<AtomicU64>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // Weak: the database closes where its owners drop it, never on this thread as the
        // process exits (RocksDB closing during static destruction aborts it).
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                // Ends when every LogStore clone is dropped.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = match flush_db.upgrade() {
                        Some(db) => db.flush_wal(true).map_err(std::io::Error::other),
                        None => Err(std::io::Error::other("the database is closed")),
                    };
                    for cb in batch {
                        cb.log_io_completed(
                            result
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        );
                    }
                }
            })
            .expect("spawn log flusher");
        LogStore {
            db,
            flusher: tx,
            recent: Arc::default(),
            appended: Arc::default(),
        }
    }

    /// Bytes of entries appended since this master started (every clone adds to one count).
    pub(crate) fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let cf = self.db.cf_handle(CF_META).expect("meta cf");
        match self
            .db
            .get_cf(&cf, key)
            .map_err(|e| storage_err(StorageIOError::read, e))?
        {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| storage_err(StorageIOError::read, e)),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError<NodeId>> {
        let cf = self.db.cf_handle(CF_META).expect("meta cf");
        let bytes = codec::encode(value).map_err(|e| storage_err(StorageIOError::write, e))?;
        let opts = if sync {
            synced()
        } else {
            rocksdb::WriteOptions::default()
        };
        self.db
            .put_cf_opt(&cf, key, bytes, &opts)
            .map_err(|e| storage_err(StorageIOError::write, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let cf = self.db.cf_handle(CF_LOGS).expect("logs cf");
        match self.db.iterator_cf(&cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(|e| storage_err(StorageIOError::read_logs, e))?;
                let entry: Entry<TypeConfig> =
                    codec::decode(&v).map_err(|e| storage_err(StorageIOError::read_logs, e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.checked_add(1),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(held) = self.recent.lock().expect("recent lock").get(start, end) {
                return Ok(held);
            }
        }
        let cf = self.db.cf_handle(CF_LOGS).expect("logs cf");
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            &cf,
            IteratorMode::From(&index_key(start), Direction::Forward),
        ) {
            let (k, v) = item.map_err(|e| storage_err(StorageIOError::read_logs, e))?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage_err(StorageIOError::read_logs, "bad log key"))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&v).map_err(|e| storage_err(StorageIOError::read_logs, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf_handle(CF_LOGS).expect("logs cf");
        let mut batch = WriteBatch::default();
        let mut written = Vec::new();
        for entry in entries {
            let bytes =
                codec::encode(&entry).map_err(|e| storage_err(StorageIOError::write_logs, e))?;
            batch.put_cf(&cf, index_key(entry.log_id.index), &bytes);
            written.push((entry, bytes.len()));
        }
        let bytes: usize = written.iter().map(|(_, size)| size).sum();
        self.appended.fetch_add(bytes as u64, Ordering::Relaxed);
        // Written (and readable) now; durable once the flusher has synced the WAL.
        self.db
            .write(batch)
            .map_err(|e| storage_err(StorageIOError::write_logs, e))?;
        let mut recent = self.recent.lock().expect("recent lock");
        for (entry, size) in written {
            recent.push(entry, size);
        }
        drop(recent);
        self.flusher
            .send(callback)
            .map_err(|_| storage_err(StorageIOError::write_logs, "log flusher stopped"))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cf = self.db.cf_handle(CF_LOGS).expect("logs cf");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&cf, index_key(log_id.index), index_key(u64::MAX));
        // Forgotten first: a reader never gets from memory what the log no longer holds.
        self.recent
            .lock()
            .expect("recent lock")
            .truncate(log_id.index);
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| storage_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let logs = self.db.cf_handle(CF_LOGS).expect("logs cf");
        let meta = self.db.cf_handle(CF_META).expect("meta cf");
        let mut batch = WriteBatch::default();
        // One atomic batch: the purge point and the deletion never disagree on disk.
        batch.put_cf(
            &meta,
            KEY_PURGED,
            codec::encode(&log_id).map_err(|e| storage_err(StorageIOError::write_logs, e))?,
        );
        batch.delete_range_cf(&logs, index_key(0), index_key(log_id.index + 1));
        self.recent.lock().expect("recent lock").purge(log_id.index);
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| storage_err(StorageIOError::write_logs, e))
    }
}
