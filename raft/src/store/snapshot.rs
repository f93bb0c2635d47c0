//! The snapshot: its data format and its file.
//!
//! - Data: the `state` column family as `codec::encode(&Vec<(String, Record)>)` gives it. It is
//!   built here from the stored bytes, which are already each record's encoding, so no record is
//!   decoded and encoded again: with millions of records that round trip cost seconds of CPU on
//!   every snapshot, enough to hold up heartbeats on a 2-core machine. Install decodes it whole.
//! - File: `codec::encode(&StoredSnapshot)`, written in pieces (meta, data length, data) so the
//!   data is not copied into a second buffer; synced every few MiB as it is written, then renamed
//!   into place, then the directory synced.

use std::path::Path;

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::part_file::PartFile;
use crate::{MasterNode, NodeId};

/// A snapshot as the file holds it.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<NodeId, MasterNode>,
    pub(super) data: Vec<u8>,
}

/// Bytes of snapshot data written between two syncs of the file.
const SYNC_EVERY: usize = 8 << 20;

/// Room for the record count in front of the data: bincode's varint u64 takes at most 9 bytes.
const COUNT_ROOM: usize = 9;

/// The snapshot data of the `state` column family's `items` (key, encoded record), in key order.
/// Keys must be UTF-8 (an error otherwise): the format holds them as strings.
pub(super) fn encode_records<I>(items: I) -> Result<Vec<u8>, String>
where
    I: IntoIterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    let mut data = vec![0u8; COUNT_ROOM];
    let mut count: u64 = 0;
    for item in items {
        let (key, record) = item.map_err(|e| e.to_string())?;
        let key = std::str::from_utf8(&key).map_err(|e| e.to_string())?;
        codec::encode_into(&mut data, key).map_err(|e| e.to_string())?;
        data.extend_from_slice(&record);
        count += 1;
    }
    let prefix = codec::encode(&count).map_err(|e| e.to_string())?;
    let start = COUNT_ROOM - prefix.len();
    data[start..COUNT_ROOM].copy_from_slice(&prefix);
    data.drain(..start);
    Ok(data)
}

/// Writes `snap` to `path` durably ([`PartFile`]: 0600, synced, renamed over `path`). A failed
/// write (a full disk) removes the part.
pub(super) fn write_file(path: &Path, snap: &StoredSnapshot) -> std::io::Result<()> {
    let mut f = PartFile::create(path)?;
    let mut header = codec::encode(&snap.meta).map_err(std::io::Error::other)?;
    header.extend(codec::encode(&(snap.data.len() as u64)).map_err(std::io::Error::other)?);
    f.write_all(&header)?;
    // Synced a piece at a time: a whole snapshot's dirty pages flushed at once would hold up the
    // log's fsyncs on the same disk for as long.
    for piece in snap.data.chunks(SYNC_EVERY) {
        f.write_all(piece)?;
        f.sync_data()?;
    }
    f.finish()
}

/// Reads the snapshot at `path`, if there is one.
pub(super) fn read_file(path: &Path) -> Result<Option<StoredSnapshot>, String> {
    match std::fs::read(path) {
        Ok(bytes) => codec::decode_trusted(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{LogId, StoredMembership};

    use super::*;
    use crate::command::Record;

    fn records(n: usize) -> Vec<(String, Record)> {
        (0..n)
            .map(|i| {
                let key = format!("/registry/pods/default/p{i:05}-ü");
                let record = Record {
                    value: vec![b'x'; i * 37 % 300].into(),
                    create_rv: i as u64,
                    mod_rv: (i as u64) << 16 | 3,
                };
                (key, record)
            })
            .collect()
    }

    fn as_stored(
        records: &[(String, Record)],
    ) -> Vec<Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> {
        records
            .iter()
            .map(|(k, r)| {
                let v = codec::encode(r).expect("encode");
                Ok((k.as_bytes().into(), v.into_boxed_slice()))
            })
            .collect()
    }

    #[test]
    fn the_data_is_what_encoding_the_decoded_records_gives() {
        // Counts whose varint prefix takes 1, 3 and 5 bytes.
        for n in [0, 1, 250, 251, 70_000] {
            let records = records(n);
            let data = encode_records(as_stored(&records)).expect("encode_records");
            assert_eq!(
                data,
                codec::encode(&records).expect("encode"),
                "{n} records"
            );
            let back: Vec<(String, Record)> = codec::decode_trusted(&data).expect("decode");
            assert_eq!(back.len(), n);
        }
    }

    #[test]
    fn a_key_that_is_not_utf8_is_an_error() {
        let items = vec![Ok((
            b"\xff\xfe".to_vec().into_boxed_slice(),
            Box::from(&b""[..]),
        ))];
        assert!(encode_records(items).is_err());
    }

    #[test]
    fn the_file_is_the_encoded_snapshot_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot.bin");
        assert!(read_file(&path).expect("read").is_none());
        let snap = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "1-42-0".into(),
            },
            data: encode_records(as_stored(&records(300))).expect("data"),
        };
        write_file(&path, &snap).expect("write");
        let bytes = std::fs::read(&path).expect("read bytes");
        assert_eq!(bytes, codec::encode(&snap).expect("encode"));
        let back = read_file(&path).expect("read").expect("a snapshot");
        assert_eq!(back.meta, snap.meta);
        assert_eq!(back.data, snap.data);
    }
}
