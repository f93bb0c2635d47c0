//! keelson's informers: typed, indexed caches of API objects and the work queue control loops
//! take their keys from, as client-go's informers and workqueue are to Kubernetes.
//!
//! A cache ([`Cache`]) has exactly one feeder, which applies changes in their order:
//! - on a master, the state machine's change feed (`keelson`'s `informer` module), so the
//!   control loops read the replicated state without the API;
//! - anywhere else, list and watch over the API ([`remote::follow`]): the agent's pods, its
//!   proxy's services and endpoints, the bench's view of the pods.
//!
//! Files: `cache.rs` (one kind's cache, indexes, change handlers), `queue.rs` (the work
//! queue), `remote.rs` (the list-and-watch feeder). What a cache keeps of each kind (its
//! [`Facts`]) belongs to the cache's user.

pub mod cache;
pub mod queue;
pub mod remote;

pub use cache::{Cache, Facts, HandlerGuard, Item};

/// Stored objects that could not be decoded, skipped by lists, watches and caches (nothing
/// invalid is stored through the API, but a store written by an older version, or around the
/// API, may hold one: it must not turn every list into an error).
pub static UNDECODABLE: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| {
        prometheus::IntCounter::new(
            "keelson_registry_undecodable_objects_total",
            "Stored objects skipped by lists and watches because they could not be decoded.",
        )
        .expect("valid metric")
    });
