//! keelson's fault-injection harness, as a library: real `keelson master` processes on their own
//! loopback addresses ([`cluster`]), a client for the store's key/value surface ([`client`]),
//! and the campaign runner behind `keelson-chaos` ([`campaign`]: [`faults`] on a seeded
//! schedule, [`workload`]s recording [`history`], [`checker`]s, a [`report`]); with the
//! controller workload, the seed's replication controller ([`objects`]) on hollow
//! [`agents`].
//! The integration tests in `tests/` and the `keelson-chaos` binary share it.

pub mod agents;
pub mod campaign;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod faults;
pub mod history;
pub mod objects;
pub mod report;
pub mod workload;

pub use client::{Kv, KvError};
pub use cluster::Cluster;
