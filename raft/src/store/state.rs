//! The replicated state machine: records by key, in memory for reads and in RocksDB for
//! restarts, with snapshots and the change feed.
//!
//! Invariants:
//! - `SmState` in memory and the `state` column family hold the same records and the same
//!   last-applied log id once a batch of entries is applied (one RocksDB write batch).
//! - Apply publishes its events to the feed while it still holds the state lock, so a reader
//!   that lists and subscribes under that lock sees a consistent cut (list at N, events > N).
//! - A snapshot install makes the snapshot file durable first, then replaces the records in
//!   memory and disk in one synced write batch, then resets the feed. A crash between the two
//!   leaves a snapshot newer than the state, and opening the directory completes the install from
//!   the file ([`StateMachine::open`]): at every step the file and the state agree, or the next
//!   start makes them.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, DB};

use super::page::{self, Page, PageError, Range};
use super::snapshot::{self, StoredSnapshot};
use super::{synced, OpenError, CF_META, CF_STATE};
use crate::codec;
use crate::command::{apply_command, Change, CommandResponse, KeySpace, Record};
use crate::error::storage_err;
use crate::feed::{Event, EventKind, Feed, Subscription, WindowLimits};
use crate::revision;
use crate::{MasterNode, NodeId, TypeConfig};

const KEY_APPLIED: &[u8] = b"sm_applied";
const KEY_MEMBERSHIP: &[u8] = b"sm_membership";
const KEY_REMOVED: &[u8] = b"sm_removed";
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// What the state machine holds.
#[derive(Debug, Default)]
pub struct SmState {
    pub space: KeySpace,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, MasterNode>,
    /// Masters that were members and are no longer (the Raft port refuses their certificates):
    /// kept across restarts, a re-added master leaves the set.
    pub removed: BTreeSet<NodeId>,
}

impl SmState {
    /// Moves to `next` membership, recording who left.
    fn change_membership(&mut self, next: StoredMembership<NodeId, MasterNode>) {
        let ids = |m: &StoredMembership<NodeId, MasterNode>| -> BTreeSet<NodeId> {
            m.membership().nodes().map(|(id, _)| *id).collect()
        };
        let (before, after) = (ids(&self.membership), ids(&next));
        self.removed.extend(before.difference(&after));
        self.removed.retain(|id| !after.contains(id));
        self.membership = next;
    }
}

/// The state shared between openraft's state machine and the readers (API, watches).
pub struct Shared {
    db: Arc<DB>,
    snapshot_path: PathBuf,
    state: RwLock<SmState>,
    /// The change feed published by apply.
    pub feed: Feed,
    snapshot_seq: AtomicU64,
    current_snapshot: Mutex<Option<Arc<StoredSnapshot>>>,
    /// Held while the snapshot file is written: openraft builds snapshots in a task of their
    /// own, beside installs.
    snapshot_write: Mutex<()>,
    /// Tests: apply's batch fails as on a full disk.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
    /// Counts snapshot builds and installs, for metrics.
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Size of the current snapshot's data: what a leader sends a follower that needs it.
    pub snapshot_bytes: AtomicU64,
}

impl Shared {
    /// True when master `id` was a member and no longer is, as far as this replica applied.
    pub fn was_removed(&self, id: NodeId) -> bool {
        self.state.read().expect("state lock").removed.contains(&id)
    }

    /// The record under `key`, from this replica (possibly stale: call a read barrier first
    /// for a linearizable read), with the resource version of the state it was read from.
    pub fn get(&self, key: &str) -> (Option<Record>, u64) {
        let st = self.state.read().expect("state lock");
        (st.space.get(key).cloned(), applied_rv(&st))
    }

    /// Records whose key starts with `prefix`, in key order, with the resource version of the
    /// state they were read from.
    pub fn list(&self, prefix: &str) -> (Vec<(String, Record)>, u64) {
        let st = self.state.read().expect("state lock");
        (scan(&st.space, prefix), applied_rv(&st))
    }

    /// A consistent list and a subscription to every change after it.
    pub fn list_and_subscribe(&self, prefix: &str) -> (Vec<(String, Record)>, u64, Subscription) {
        let st = self.state.read().expect("state lock");
        let rv = applied_rv(&st);
        let sub = self
            .feed
            .subscribe(rv)
            .expect("the feed always covers the applied state");
        (scan(&st.space, prefix), rv, sub)
    }

    /// Up to `limit` records of `range` as the state stood at resource version `at` (the
    /// applied state when `None`): every page of a paged list reads at its first page's
    /// version. A past version is read through the change feed's window.
    pub fn list_page(
        &self,
        range: &Range<'_>,
        at: Option<u64>,
        limit: usize,
    ) -> Result<Page, PageError> {
        self.page_at(range, at, |space, then| {
            page::read(space, then, range, limit)
        })
    }

    /// Like [`Shared::list_page`], among `keys` (sorted) only, and the keys of the range that
    /// changed since the version read: the candidates of an index taken at that version or any
    /// later one.
    pub fn list_keys(
        &self,
        range: &Range<'_>,
        keys: &[String],
        at: Option<u64>,
        limit: usize,
    ) -> Result<Page, PageError> {
        self.page_at(range, at, |space, then| {
            page::read_keys(space, then, range, keys, limit)
        })
    }

    fn page_at(
        &self,
        range: &Range<'_>,
        at: Option<u64>,
        read: impl FnOnce(&KeySpace, &page::Past) -> (Vec<(String, Record)>, bool),
    ) -> Result<Page, PageError> {
        let st = self.state.read().expect("state lock");
        let applied = applied_rv(&st);
        let rv = at.unwrap_or(applied);
        if rv > applied {
            return Err(PageError::NotYet { at: rv, applied });
        }
        // Apply publishes under the state lock held here: the window matches the state.
        let then = if rv < applied {
            self.feed.changed_since(rv, |k| range.contains(k))?
        } else {
            Default::default()
        };
        let (records, more) = read(&st.space, &then);
        Ok(Page { records, rv, more })
    }

    /// Number of records stored.
    pub fn len(&self) -> usize {
        self.state.read().expect("state lock").space.len()
    }

    /// True when no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The applied log index.
    pub fn applied(&self) -> u64 {
        applied_index(&self.state.read().expect("state lock"))
    }

    /// The resource version of the applied state ([`revision::through_entry`] of the applied
    /// index): a watch from it sees every later write.
    pub fn applied_rv(&self) -> u64 {
        applied_rv(&self.state.read().expect("state lock"))
    }
}

fn applied_index(st: &SmState) -> u64 {
    st.last_applied.map_or(0, |l| l.index)
}

fn applied_rv(st: &SmState) -> u64 {
    revision::through_entry(applied_index(st))
}

fn scan(space: &KeySpace, prefix: &str) -> Vec<(String, Record)> {
    space
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// openraft's view of the state machine.
#[derive(Clone)]
pub struct StateMachine {
    pub shared: Arc<Shared>,
}

fn meta_get<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, String> {
    let cf = db.cf_handle(CF_META).expect("meta cf");
    match db.get_cf(&cf, key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(b) => codec::decode(&b).map(Some).map_err(|e| e.to_string()),
    }
}

impl StateMachine {
    pub(crate) fn open(
        db: Arc<DB>,
        dir: &Path,
        feed_window: WindowLimits,
    ) -> Result<Self, OpenError> {
        let corrupt = |reason: String| OpenError::Corrupt {
            path: dir.display().to_string(),
            reason,
        };
        let last_applied: Option<LogId<NodeId>> =
            meta_get::<Option<LogId<NodeId>>>(&db, KEY_APPLIED)
                .map_err(corrupt)?
                .flatten();
        let membership: StoredMembership<NodeId, MasterNode> = meta_get(&db, KEY_MEMBERSHIP)
            .map_err(corrupt)?
            .unwrap_or_default();
        let removed: BTreeSet<NodeId> = meta_get(&db, KEY_REMOVED)
            .map_err(corrupt)?
            .unwrap_or_default();
        let mut space = KeySpace::new();
        {
            let cf = db.cf_handle(CF_STATE).expect("state cf");
            for item in db.iterator_cf(&cf, IteratorMode::Start) {
                let (key, record) = stored_record(item).map_err(corrupt)?;
                space.insert(key, record);
            }
        }
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let current_snapshot = snapshot::read_file(&snapshot_path)
            .map_err(corrupt)?
            .map(Arc::new);
        let mut st = SmState {
            space,
            last_applied,
            membership,
            removed,
        };
        if let Some(snap) = &current_snapshot {
            if snap.meta.last_log_id > st.last_applied {
                // An install (or a build) that stopped after the file and before the state:
                // the file is durable and newer, so finish with it.
                tracing::warn!(
                    snapshot = ?snap.meta.last_log_id,
                    applied = ?st.last_applied,
                    "the snapshot file is newer than the stored state: completing its install"
                );
                let records =
                    decode_snapshot(&snap.meta, &snap.data).map_err(|e| corrupt(e.to_string()))?;
                replace_state(&db, &mut st, &snap.meta, records)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
        }
        let applied = applied_index(&st);
        let snapshot_bytes = current_snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                snapshot_path,
                state: RwLock::new(st),
                feed: Feed::new(feed_window, revision::through_entry(applied)),
                snapshot_seq: AtomicU64::new(0),
                current_snapshot: Mutex::new(current_snapshot),
                snapshot_write: Mutex::new(()),
                #[cfg(test)]
                fail_writes: Default::default(),
                snapshots_built: AtomicU64::new(0),
                snapshots_installed: AtomicU64::new(0),
                snapshot_bytes: AtomicU64::new(snapshot_bytes),
            }),
        })
    }

    /// Makes `snap` the current snapshot, on disk first — unless the current one is newer (a
    /// build that started before an install finished after it): one writer at a time, and
    /// never an older snapshot over a newer one.
    fn save_snapshot(&self, snap: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let _one_writer = self
            .shared
            .snapshot_write
            .lock()
            .expect("snapshot write lock");
        let newer = |cur: &Option<Arc<StoredSnapshot>>| {
            cur.as_ref()
                .is_some_and(|c| c.meta.last_log_id > snap.meta.last_log_id)
        };
        if newer(&self.shared.current_snapshot.lock().expect("snapshot lock")) {
            return Ok(());
        }
        snapshot::write_file(&self.shared.snapshot_path, &snap).map_err(|e| {
            storage_err(
                |ae| StorageIOError::write_snapshot(Some(snap.meta.signature()), ae),
                e,
            )
        })?;
        self.shared
            .snapshot_bytes
            .store(snap.data.len() as u64, Ordering::Relaxed);
        *self.shared.current_snapshot.lock().expect("snapshot lock") = Some(Arc::new(snap));
        Ok(())
    }
}

/// A record as the `state` column family holds it: the key (UTF-8) and the encoded record.
fn stored_record(
    item: Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>,
) -> Result<(String, Record), String> {
    let (k, v) = item.map_err(|e| e.to_string())?;
    let key = String::from_utf8(k.into_vec()).map_err(|e| e.to_string())?;
    let record = codec::decode(&v).map_err(|e| e.to_string())?;
    Ok((key, record))
}

fn record_changes(
    db: &DB,
    batch: &mut WriteBatch,
    changes: Vec<Change>,
    events: &mut Vec<Event>,
) -> Result<(), StorageError<NodeId>> {
    let cf = db.cf_handle(CF_STATE).expect("state cf");
    // Every change gets its event, even past a failure: apply undoes the changes in memory by
    // their events when the batch cannot be written.
    let mut failed = None;
    for change in changes {
        match change {
            Change::Put { key, record, prev } => {
                match codec::encode(&record) {
                    Ok(bytes) => batch.put_cf(&cf, key.as_bytes(), bytes),
                    Err(e) => {
                        failed.get_or_insert(e.to_string());
                    }
                }
                let kind = if prev.is_some() {
                    EventKind::Updated
                } else {
                    EventKind::Created
                };
                events.push(Event::new(record.mod_rv, kind, key, record.value, prev));
            }
            Change::Delete { key, prev, rv } => {
                batch.delete_cf(&cf, key.as_bytes());
                let value = prev.value.clone();
                events.push(Event::new(rv, EventKind::Deleted, key, value, Some(prev)));
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(e) => Err(storage_err(StorageIOError::write_state_machine, e)),
    }
}

/// Undoes in `st` what apply did before its batch failed to be written: the changes by their
/// events (newest first), and the applied id and membership as they were. Memory then holds
/// what the disk holds, so a master whose disk failed never serves state it did not persist.
fn undo(st: &mut SmState, before: Before, events: &[Event]) {
    for e in events.iter().rev() {
        match &e.prev {
            Some(prev) => st.space.insert(e.key.clone(), prev.clone()),
            None => st.space.remove(&e.key),
        };
    }
    (st.last_applied, st.membership, st.removed) = before;
}

/// What apply changes besides the records.
type Before = (
    Option<LogId<NodeId>>,
    StoredMembership<NodeId, MasterNode>,
    BTreeSet<NodeId>,
);

fn write_applied(
    db: &DB,
    batch: &mut WriteBatch,
    st: &SmState,
) -> Result<(), StorageError<NodeId>> {
    let meta = db.cf_handle(CF_META).expect("meta cf");
    let enc = |e| storage_err(StorageIOError::write_state_machine, e);
    batch.put_cf(
        &meta,
        KEY_APPLIED,
        codec::encode(&st.last_applied).map_err(enc)?,
    );
    batch.put_cf(&meta, KEY_REMOVED, codec::encode(&st.removed).map_err(enc)?);
    batch.put_cf(
        &meta,
        KEY_MEMBERSHIP,
        codec::encode(&st.membership).map_err(enc)?,
    );
    Ok(())
}

/// The records of snapshot data.
fn decode_snapshot(
    meta: &SnapshotMeta<NodeId, MasterNode>,
    data: &[u8],
) -> Result<Vec<(String, Record)>, StorageError<NodeId>> {
    codec::decode_trusted(data).map_err(|e| {
        storage_err(
            |ae| StorageIOError::read_snapshot(Some(meta.signature()), ae),
            e,
        )
    })
}

/// Replaces every record, in `st` and on disk (one synced batch), with a snapshot's.
fn replace_state(
    db: &DB,
    st: &mut SmState,
    meta: &SnapshotMeta<NodeId, MasterNode>,
    records: Vec<(String, Record)>,
) -> Result<(), StorageError<NodeId>> {
    let state_cf = db.cf_handle(CF_STATE).expect("state cf");
    let mut batch = WriteBatch::default();
    // Keys are UTF-8, which never contains the byte 0xFF: this range covers them all.
    batch.delete_range_cf(&state_cf, b"".as_slice(), [0xFFu8; 8].as_slice());
    let mut space = KeySpace::new();
    for (key, record) in records {
        let bytes = codec::encode(&record)
            .map_err(|e| storage_err(StorageIOError::write_state_machine, e))?;
        batch.put_cf(&state_cf, key.as_bytes(), bytes);
        space.insert(key, record);
    }
    // Memory changes only once the disk has: a failed write leaves both as they were.
    let mut next = SmState {
        space,
        last_applied: meta.last_log_id,
        membership: st.membership.clone(),
        removed: st.removed.clone(),
    };
    next.change_membership(meta.last_membership.clone());
    write_applied(db, &mut batch, &next)?;
    db.write_opt(batch, &synced())
        .map_err(|e| storage_err(StorageIOError::write_state_machine, e))?;
    *st = next;
    Ok(())
}

/// The whole state at one applied entry, as snapshot data ([`Shared::export`]).
pub struct Export {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, MasterNode>,
    /// Snapshot data: `codec::encode(&Vec<(String, Record)>)`.
    pub data: Vec<u8>,
    pub records: u64,
}

impl Shared {
    /// The state as snapshot data, read from a RocksDB snapshot taken under the state lock, so
    /// the lock is held only for an instant and apply goes on meanwhile: apply writes the
    /// `state` column family and the last-applied id in one batch under that lock, so the view
    /// and the last-applied id read with it describe the same state. Blocking: call it off the
    /// async threads.
    pub fn export(&self) -> Result<Export, String> {
        let db = &self.db;
        let (view, last_applied, membership, records) = {
            let st = self.state.read().expect("state lock");
            (
                db.snapshot(),
                st.last_applied,
                st.membership.clone(),
                st.space.len() as u64,
            )
        };
        let cf = db.cf_handle(CF_STATE).expect("state cf");
        let data = snapshot::encode_records(view.iterator_cf(&cf, IteratorMode::Start))?;
        Ok(Export {
            last_applied,
            membership,
            data,
            records,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Builds on a blocking thread: serializing every record and syncing the file takes long
    /// with a large state (hundreds of ms at a million records), and on Raft's own two threads
    /// it held heartbeats back long enough for followers to campaign.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_snapshot_now())
            .await
            .map_err(|e| storage_err(StorageIOError::read_state_machine, e))?
    }
}

impl StateMachine {
    /// Builds a snapshot of the state ([`Shared::export`]) and makes it the current one.
    fn build_snapshot_now(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let Export {
            last_applied,
            membership,
            data,
            ..
        } = self
            .shared
            .export()
            .map_err(|e| storage_err(StorageIOError::read_state_machine, e))?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        // openraft 0.9 keeps only the meta of a snapshot it asked for; the data goes along
        // because the trait returns it.
        let snapshot = Box::new(Cursor::new(data.clone()));
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot { meta, snapshot })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MasterNode>), StorageError<NodeId>>
    {
        let st = self.shared.state.read().expect("state lock");
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let db = &self.shared.db;
        let mut st = self.shared.state.write().expect("state lock");
        let before: Before = (st.last_applied, st.membership.clone(), st.removed.clone());
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let mut responses = Vec::new();
        let applied = || -> Result<(), StorageError<NodeId>> {
            for entry in entries {
                let index = entry.log_id.index;
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(CommandResponse {
                        index,
                        results: vec![],
                    }),
                    EntryPayload::Normal(cmd) => {
                        let mut changes = Vec::new();
                        let resp = apply_command(&mut st.space, index, &cmd, &mut changes);
                        record_changes(db, &mut batch, changes, &mut events)?;
                        responses.push(resp);
                    }
                    EntryPayload::Membership(m) => {
                        st.change_membership(StoredMembership::new(Some(entry.log_id), m));
                        responses.push(CommandResponse {
                            index,
                            results: vec![],
                        });
                    }
                }
            }
            write_applied(db, &mut batch, &st)?;
            #[cfg(test)]
            if self.shared.fail_writes.load(Ordering::Relaxed) {
                return Err(storage_err(
                    StorageIOError::write_state_machine,
                    "IO error: No space left on device (injected)",
                ));
            }
            db.write(std::mem::take(&mut batch))
                .map_err(|e| storage_err(StorageIOError::write_state_machine, e))
        };
        if let Err(e) = applied() {
            // A full disk, most often: openraft stops on the error, and memory stays as the
            // disk is.
            undo(&mut st, before, &events);
            return Err(e);
        }
        self.shared.feed.publish(events);
        self.shared.feed.advance(applied_rv(&st));
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MasterNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let records = decode_snapshot(meta, &data)?;
        // The file first: from here on a crash is completed at the next start (`open`).
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        {
            let mut st = self.shared.state.write().expect("state lock");
            replace_state(&self.shared.db, &mut st, meta, records)?;
            self.shared.feed.reset(applied_rv(&st));
        }
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self
            .shared
            .current_snapshot
            .lock()
            .expect("snapshot lock")
            .clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod crash_tests {
    //! A crash at any step of a snapshot install leaves the snapshot file and the state in
    //! agreement once the directory is opened again. Each crash is the directory as the steps
    //! before it left it: the database closed, the later steps never run.
    use openraft::{CommittedLeaderId, Membership};

    use super::*;

    fn snapshot_at(index: u64, n: usize) -> StoredSnapshot {
        let records: Vec<(String, Record)> = (0..n)
            .map(|i| {
                let record = Record {
                    value: format!("{index}-{i}").into_bytes().into(),
                    create_rv: index << 16,
                    mod_rv: index << 16,
                };
                (format!("/k/{i:03}"), record)
            })
            .collect();
        let at = LogId::new(CommittedLeaderId::new(1, 1), index);
        let members = std::collections::BTreeMap::from([(1, MasterNode::default())]);
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(at),
                last_membership: StoredMembership::new(
                    Some(at),
                    Membership::new(vec![BTreeSet::from([1])], members),
                ),
                snapshot_id: format!("test-{index}"),
            },
            data: codec::encode(&records).unwrap(),
        }
    }

    fn open(dir: &Path) -> StateMachine {
        let db = super::super::open_db(dir).unwrap();
        StateMachine::open(db, dir, WindowLimits::default()).unwrap()
    }

    /// The file's snapshot and the state (memory, and disk after a reopen) are the same.
    fn assert_agree(dir: &Path, expect: &StoredSnapshot) {
        for round in ["as opened", "opened again"] {
            let sm = open(dir);
            let file = snapshot::read_file(&dir.join(SNAPSHOT_FILE))
                .unwrap()
                .unwrap();
            assert_eq!(file.meta, expect.meta, "{round}: the file");
            let (records, _) = sm.shared.list("");
            let want: Vec<(String, Record)> = codec::decode_trusted(&expect.data).unwrap();
            assert_eq!(records, want, "{round}: the records");
            let st = sm.shared.state.read().unwrap();
            assert_eq!(st.last_applied, expect.meta.last_log_id, "{round}: applied");
            assert_eq!(st.membership, expect.meta.last_membership, "{round}");
        }
    }

    async fn install(dir: &Path, snap: &StoredSnapshot) {
        let mut sm = open(dir);
        sm.install_snapshot(&snap.meta, Box::new(Cursor::new(snap.data.clone())))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_crash_between_any_two_install_steps_leaves_file_and_state_agreeing() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let first = snapshot_at(10, 5);
        install(dir, &first).await;
        assert_agree(dir, &first);

        // Crash while writing the file: a partial temporary file, never renamed.
        let second = snapshot_at(20, 8);
        let whole = codec::encode(&second).unwrap();
        std::fs::write(
            crate::part_file::PartFile::part_path(&dir.join(SNAPSHOT_FILE)),
            &whole[..whole.len() / 2],
        )
        .unwrap();
        assert_agree(dir, &first);

        // Crash after the file is in place, before the state's batch: the start completes it.
        snapshot::write_file(&dir.join(SNAPSHOT_FILE), &second).unwrap();
        assert_agree(dir, &second);

        // No crash: a whole install, with fewer records than before (the old ones go).
        let third = snapshot_at(30, 3);
        install(dir, &third).await;
        assert_agree(dir, &third);
    }

    #[tokio::test]
    async fn an_apply_whose_batch_cannot_be_written_leaves_memory_as_the_disk_is() {
        use crate::command::Command;
        use openraft::{Entry, EntryPayload};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let put = |key: &str, value: &str| Command::Put {
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
        };
        let entry = |index: u64, cmd: Command| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        };
        let first = entry(1, Command::Batch(vec![put("/a", "1"), put("/b", "1")]));
        sm.apply([first]).await.unwrap();
        let after_one = sm.shared.list("");
        let bounds = sm.shared.feed.bounds();

        // Entries 2 and 3 update, delete, create and rewrite; their batch fails.
        let second = entry(
            2,
            Command::Batch(vec![
                put("/a", "2"),
                Command::Delete {
                    key: "/b".into(),
                    precondition: None,
                },
            ]),
        );
        let third = entry(3, Command::Batch(vec![put("/c", "3"), put("/c", "4")]));
        sm.shared.fail_writes.store(true, Ordering::Relaxed);
        let err = sm.apply([second.clone(), third.clone()]).await;
        assert!(err.is_err());
        assert_eq!(sm.shared.list(""), after_one, "memory as the disk is");
        assert_eq!(sm.shared.applied(), 1);
        assert_eq!(sm.shared.feed.bounds(), bounds, "no event published");
        let (_, membership) = sm.applied_state().await.unwrap();
        assert_eq!(membership, StoredMembership::default());

        // The same entries apply on that state as on a fresh one.
        sm.shared.fail_writes.store(false, Ordering::Relaxed);
        sm.apply([second, third]).await.unwrap();
        let (items, _) = sm.shared.list("");
        let values: Vec<(String, Vec<u8>)> = items
            .into_iter()
            .map(|(k, r)| (k, r.value.to_vec()))
            .collect();
        assert_eq!(
            values,
            [("/a".into(), b"2".to_vec()), ("/c".into(), b"4".to_vec())]
        );
        drop(sm);
        let reopened = open(dir.path());
        assert_eq!(reopened.shared.applied(), 3);
    }
}
