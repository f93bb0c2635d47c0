//! keelson's fault-injection harness, as a library: real `keelson master` processes on their own
//! loopback addresses ([`cluster`]), a client for the store's key/value surface ([`client`]).
//! The integration tests in `tests/` and the `keelson-chaos` binary share it.

pub mod client;
pub mod cluster;

pub use client::{Kv, KvError};
pub use cluster::Cluster;
