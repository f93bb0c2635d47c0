//! keelson's model floor: what API objects mean, as pure functions, below the API server and
//! the registry.
//!
//! This is the first step of issue #15's "model layer at the bottom", which holds selectors,
//! quantities and time: it starts with the code that parses and transforms untrusted input, so
//! the fuzz targets (`fuzz/`) can link it without RocksDB, openraft or axum. Invariant: **no
//! I/O and no server types** — nothing here imports the API server, the registry, controllers
//! or agents; they import it (and re-export it at their old paths).
//!
//! Map:
//! - [`selectors`]: label (equality- and set-based) and field selectors, parsing and matching.
//! - [`duration`]: kubectl's human durations (the AGE column).
//! - [`owners`]: owner references (a pod's controller).
//! - [`quantity`]: resource quantities (`100m`, `128Mi`) and their values.
//! - [`smp`]: strategic merge patch with core/v1's patch strategies.
//! - [`v1beta1`]: conversion between the seed's v1beta1 objects and core/v1.
//! - [`stored`]: how a stored record's bytes read as the object the API serves.
//! - [`protobuf`]: Kubernetes' protobuf request bodies of the kinds typed clients send, as JSON.
//! - [`rbac`]: what a request asks, whether RBAC's rules allow it, the escalation check and
//!   the default roles.
//! - [`url`]: percent-encoding of request URLs' path segments and query values (selectors,
//!   names), for the API's clients: `keelson ctl`, the agent and the bench.

pub mod duration;
pub mod owners;
pub mod protobuf;
pub mod quantity;
pub mod rbac;
pub mod selectors;
pub mod smp;
pub mod stored;
pub mod url;
pub mod v1beta1;
