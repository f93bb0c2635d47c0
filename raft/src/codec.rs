//! bincode encoding of everything that crosses the Raft port or lands in RocksDB.
//!
//! One set of options for both directions, with a size limit so that a garbage length prefix
//! on the wire cannot make the decoder allocate without bound: undecodable input is an error,
//! never a panic or an abort.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message accepted on the Raft port or read back from disk.
pub const MAX_MESSAGE: u64 = 64 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_MESSAGE)
}

/// Encodes `value`. Sizes are not limited here (snapshots may be large); writers that send a
/// message check its size against [`MAX_MESSAGE`] before proposing it.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::DefaultOptions::new().serialize(value)
}

/// Encodes `value` at the end of `out`.
pub fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), bincode::Error> {
    bincode::DefaultOptions::new().serialize_into(out, value)
}

/// The size of `value` once encoded, without encoding it into memory.
pub fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<u64, bincode::Error> {
    bincode::DefaultOptions::new().serialized_size(value)
}

/// Decodes `bytes` into a `T`, refusing trailing bytes and oversized lengths.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

/// Decodes data this master wrote itself (snapshots), which may exceed [`MAX_MESSAGE`].
pub fn decode_trusted<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::DefaultOptions::new()
        .with_limit(u64::MAX / 2)
        .deserialize(bytes)
}
