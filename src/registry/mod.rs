//! The registry: API objects over the replicated store, one file per kind.
//!
//! The internal model is Kubernetes core/v1 (k8s-openapi's types); objects are stored as their
//! JSON under `/registry/{resource}/{namespace}/{name}` (cluster-scoped: `/registry/{resource}/
//! {name}`), without `metadata.resourceVersion`, which is set on every read from the Raft index
//! that last wrote the object. Every write is one Raft command whose precondition (absent for a
//! create, the caller's resource version for an update) is checked in apply.
//!
//! Invariants: nothing invalid is stored (strategies default and validate before proposing); a
//! write to the main resource cannot change `status`, a write to `/status` cannot change `spec`.
//!
//! This is the model floor of the binary: nothing here imports the API server, axum, the
//! controllers or the agent. The files, bottom up:
//! - `status.rs` (Kubernetes `Status` errors), `info.rs` (what is served about a resource,
//!   storage keys), `object.rs` (metadata helpers), `printing.rs` (Table columns and cells),
//!   `validation.rs` (causes, names, metadata);
//! - `resource.rs`: the [`resource::Kind`] trait a kind implements and the
//!   [`resource::Resource`] the rest uses;
//! - one file per kind: `pod.rs` (with `podspec.rs`), `replicationcontroller.rs`, `service.rs`,
//!   `endpoints.rs`, `event.rs`, `node.rs`, `namespace.rs`; RBAC's `role.rs`, `clusterrole.rs`,
//!   `rolebinding.rs`, `clusterrolebinding.rs` (with `rbac.rs`); `token.rs`, keelson's stored
//!   bearer tokens;
//! - `kinds.rs`: the list of kinds; `strategy.rs`: create and update for every kind;
//!   `clusterip.rs`: services' cluster IPs, claimed through Raft before the service is stored;
//! - this file: [`Registry`], the reads and writes over Raft.

pub mod clusterip;
pub mod clusterrole;
pub mod clusterrolebinding;
pub mod endpoints;
pub mod event;
mod info;
pub mod kinds;
pub mod namespace;
pub mod node;
pub mod object;
pub mod pod;
pub mod podspec;
pub mod printing;
pub mod rbac;
pub mod replicationcontroller;
pub mod resource;
pub mod role;
pub mod rolebinding;
/// Label and field selectors, from the model crate.
pub use keelson_model::selectors;
pub mod service;
mod status;
pub mod strategy;
pub mod token;
pub mod validation;

pub use info::{key, prefix, ResourceInfo, Subresource};
pub use kinds::{by_kind, group_versions, lookup, lookup_in, resource, resources};
pub use node::node_ready;
pub use object::{condition, condition_status, drop_nulls, meta_str, with_rv, without_rv};
pub use status::ApiError;

use bytes::Bytes;
use keelson_raft::command::Record;
use keelson_raft::store::page::{PageError, Range};
use keelson_raft::{Command, OpResult, RaftNode};
use serde_json::Value;

/// Stored objects that could not be decoded (the registry's lists and watches skip them, as
/// the informers' caches do).
pub use keelson_informer::UNDECODABLE;

/// The objects of `records` that decode; each one that does not is logged and counted in
/// [`UNDECODABLE`], and skipped.
pub fn decode_records<'a>(records: impl IntoIterator<Item = (&'a str, &'a Record)>) -> Vec<Value> {
    records
        .into_iter()
        .filter_map(|(key, r)| match decode_record(r) {
            Ok(v) => Some(v),
            Err(e) => {
                UNDECODABLE.inc();
                tracing::warn!(
                    key,
                    rv = r.mod_rv,
                    "skipping a stored object: {}",
                    e.message
                );
                None
            }
        })
        .collect()
}

/// An object as read: its JSON with `metadata.resourceVersion` set and no `null` members.
pub fn decode_record(r: &Record) -> Result<Value, ApiError> {
    keelson_model::stored::decode(&r.value, r.mod_rv)
        .map_err(|e| ApiError::internal(format!("stored object undecodable: {e}")))
}

/// A page of a collection, decoded.
pub struct ListPage {
    /// The objects that decode, in key order.
    pub objects: Vec<Value>,
    /// The resource version the page was read at.
    pub rv: u64,
    /// When more objects follow: the position of the last one read (its key after the
    /// kind's prefix, `namespace/name` or `name`), where the next page starts.
    pub next: Option<String>,
}

/// Largest object stored, in bytes of its JSON: etcd's default request limit
/// (`--max-request-bytes`), which bounds every Kubernetes object too. Also the bound on a `/kv`
/// value.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The JSON stored for an object: without `metadata.resourceVersion`, and at most
/// [`MAX_OBJECT_BYTES`] (else 413 `RequestEntityTooLarge`, nothing stored).
fn encode_object(info: &ResourceInfo, obj: &Value) -> Result<Bytes, ApiError> {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&v).expect("json");
    if bytes.len() > MAX_OBJECT_BYTES {
        let name = meta_str(obj, "name").unwrap_or_default();
        return Err(ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "{} \"{name}\" is too large: {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes for a stored object",
                info.kind,
                bytes.len()
            ),
        )
        .with_details(name, info.plural));
    }
    Ok(Bytes::from(bytes))
}

/// Kubernetes' "not found" message.
pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::not_found(format!("{} \"{}\" not found", info.plural, name))
        .with_details(name, info.plural)
}

/// Kubernetes' "the object has been modified" conflict.
pub fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(format!(
        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
        info.plural, name
    ))
    .with_details(name, info.plural)
}

/// Typed operations on API objects over a [`RaftNode`].
#[derive(Clone)]
pub struct Registry {
    pub node: std::sync::Arc<RaftNode>,
    /// Where services' cluster IPs come from (`--service-cluster-ip-range`).
    pub service_range: clusterip::ServiceRange,
}

impl Registry {
    /// Reads one object; `consistent` makes the read linearizable.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        consistent: bool,
    ) -> Result<Value, ApiError> {
        if consistent {
            self.node.read_barrier().await?;
        }
        match self.node.get(&key(info, ns, name)).0 {
            Some(r) => decode_record(&r),
            None => Err(not_found(info, name)),
        }
    }

    /// Lists a collection: the objects and the resource version of the list.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        consistent: bool,
    ) -> Result<(Vec<Value>, u64), ApiError> {
        if consistent {
            self.node.read_barrier().await?;
        }
        let (records, rv) = self.node.list(&prefix(info, ns));
        let objects = decode_records(records.iter().map(|(k, r)| (k.as_str(), r)));
        Ok((objects, rv))
    }

    /// One page of a collection: at most `limit` objects after position `after` (see
    /// [`ListPage::next`]), read at resource version `at` (a continued list's first page, or
    /// `resourceVersionMatch=Exact`), or at the applied state after a read barrier when
    /// `consistent`. A version the change feed's window no longer reaches is 410 `Expired`;
    /// one this replica has not applied yet is waited for (a read barrier), and one the
    /// cluster has not reached is 504. Reads O(limit + changes since `at`) records, never the
    /// whole collection.
    pub async fn list_page(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        after: Option<&str>,
        at: Option<u64>,
        limit: usize,
        consistent: bool,
        candidates: Option<&[String]>,
    ) -> Result<ListPage, ApiError> {
        if consistent && at.is_none() {
            self.node.read_barrier().await?;
        }
        // Positions are relative to the kind's prefix, so a token names a key of this kind.
        let base = prefix(info, None);
        let after = after.map(|a| format!("{base}{a}"));
        let list_prefix = prefix(info, ns);
        let range = Range {
            prefix: &list_prefix,
            after: after.as_deref(),
        };
        let read = || match candidates {
            Some(keys) => self.node.store.list_keys(&range, keys, at, limit),
            None => self.node.store.list_page(&range, at, limit),
        };
        let page = match read() {
            Err(PageError::NotYet { .. }) => {
                // Another master served the first page: catch up with the cluster.
                self.node.read_barrier().await?;
                read()
            }
            other => other,
        }
        .map_err(|e| match e {
            PageError::Expired(e) => {
                ApiError::new(http::StatusCode::GONE, "Expired", e.to_string())
            }
            // As kube-apiserver answers a version it has not reached.
            PageError::NotYet { at, applied } => ApiError::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {at}, current: {applied}"),
            )
            .with_retry_after(1),
        })?;
        let next = match (page.more, page.records.last()) {
            (true, Some((key, _))) => Some(key[base.len()..].to_string()),
            _ => None,
        };
        let objects = decode_records(page.records.iter().map(|(k, r)| (k.as_str(), r)));
        Ok(ListPage {
            objects,
            rv: page.rv,
            next,
        })
    }

    /// Stores a new object (already defaulted and validated). A service first claims its
    /// cluster IP ([`clusterip::allocate`]), given back if the service is not stored.
    pub async fn create(&self, info: &ResourceInfo, mut obj: Value) -> Result<Value, ApiError> {
        drop_nulls(&mut obj);
        let claim = if clusterip::allocates(info) {
            clusterip::allocate(self, &mut obj).await?
        } else {
            None
        };
        let created = self.store_new(info, obj).await;
        // Only when the service is surely not stored (AlreadyExists, too large, no space): a
        // create of unknown outcome (a timeout, a lost leader) may have stored it, so its claim
        // is left to the repair loop, which frees it if no service holds it.
        if let (Err(e), Some(claim)) = (&created, claim) {
            use http::StatusCode as S;
            if [S::CONFLICT, S::PAYLOAD_TOO_LARGE, S::INSUFFICIENT_STORAGE].contains(&e.code) {
                clusterip::abandon(self, claim).await;
            }
        }
        created
    }

    async fn store_new(&self, info: &ResourceInfo, obj: Value) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let k = key(info, meta_str(&obj, "namespace"), &name);
        match self
            .run(Command::Create {
                key: k,
                value: encode_object(info, &obj)?,
            })
            .await?
        {
            OpResult::Stored { rv, .. } => Ok(with_rv(obj, rv)),
            OpResult::AlreadyExists { .. } => Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{}\" already exists", info.plural, name),
            )
            .with_details(&name, info.plural)),
            other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Replaces an object if it is still at `precondition` (when given).
    pub async fn update(
        &self,
        info: &ResourceInfo,
        mut obj: Value,
        precondition: Option<u64>,
    ) -> Result<Value, ApiError> {
        drop_nulls(&mut obj);
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let k = key(info, meta_str(&obj, "namespace"), &name);
        match self
            .run(Command::Update {
                key: k,
                value: encode_object(info, &obj)?,
                precondition,
            })
            .await?
        {
            OpResult::Stored { rv, .. } => Ok(with_rv(obj, rv)),
            OpResult::Conflict { .. } => Err(conflict(info, &name)),
            OpResult::NotFound => Err(not_found(info, &name)),
            other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Deletes an object if it is still at `precondition` (when given); returns it.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<u64>,
    ) -> Result<Value, ApiError> {
        match self
            .run(Command::Delete {
                key: key(info, ns, name),
                precondition,
            })
            .await?
        {
            OpResult::Deleted { rv, prev } => {
                let obj: Value =
                    serde_json::from_slice(&prev).map_err(|e| ApiError::internal(e.to_string()))?;
                if clusterip::allocates(info) {
                    clusterip::release(self, &obj).await;
                }
                Ok(with_rv(obj, rv))
            }
            OpResult::Conflict { .. } => Err(conflict(info, name)),
            OpResult::NotFound => Err(not_found(info, name)),
            other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Deletes pod `name` gracefully when an agent will confirm it ([`pod::pod_deletion`]):
    /// returns the pod as stored (terminating) or as it was (removed).
    pub async fn delete_pod(
        &self,
        ns: Option<&str>,
        name: &str,
        precondition: Option<u64>,
        uid: Option<&str>,
        grace: Option<i64>,
    ) -> Result<Value, ApiError> {
        let info = lookup("pods").expect("pods");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let pod = self.get(info, ns, name, true).await?;
            let current = meta_str(&pod, "resourceVersion").and_then(|v| v.parse::<u64>().ok());
            if precondition.is_some() && precondition != current {
                return Err(conflict(info, name));
            }
            if uid.is_some_and(|u| Some(u) != meta_str(&pod, "uid")) {
                return Err(ApiError::new(
                    http::StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on pods \"{name}\": the UID in the precondition ({}) does not match the UID in record. The object might have been deleted and then recreated",
                        uid.unwrap_or("")
                    ),
                ));
            }
            let result = match pod::pod_deletion(&pod, grace, self.pod_node_ready(&pod).await) {
                pod::PodDeletion::Now => self.delete(info, ns, name, current).await,
                pod::PodDeletion::Terminating => return Ok(pod),
                pod::PodDeletion::Graceful(marked) => {
                    self.update(info, without_rv(marked), current).await
                }
            };
            // Without a precondition of the caller's, a pod its agent changed meanwhile is
            // read again (as kube-apiserver retries its own guaranteed updates).
            match result {
                Err(e)
                    if e.code == http::StatusCode::CONFLICT
                        && precondition.is_none()
                        && attempts < 10 => {}
                other => return other,
            }
        }
    }

    /// Whether the node `pod` is bound to is Ready (this replica's view).
    async fn pod_node_ready(&self, pod: &Value) -> bool {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        !node.is_empty()
            && self
                .get(lookup("nodes").expect("nodes"), None, node, false)
                .await
                .is_ok_and(|n| node_ready(&n))
    }

    /// Removes `owner` from the owner references of every pod it owns (propagation policy
    /// Orphan), as one Raft command; retried when a pod changed meanwhile.
    pub async fn orphan_dependents(&self, owner: &Value) -> Result<usize, ApiError> {
        let uid = owner
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pods = lookup("pods").expect("pods");
        let ns = meta_str(owner, "namespace");
        for _ in 0..5 {
            let (dependents, _) = self.list(pods, ns, false).await?;
            let mut updates = Vec::new();
            for mut pod in dependents {
                let Some(refs) = pod
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                let before = refs.len();
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                if refs.len() == before {
                    continue;
                }
                let rv: u64 = meta_str(&pod, "resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let key = key(
                    pods,
                    meta_str(&pod, "namespace"),
                    meta_str(&pod, "name").unwrap_or_default(),
                );
                updates.push(Command::Update {
                    key,
                    value: encode_object(pods, &pod)?,
                    precondition: Some(rv),
                });
            }
            if updates.is_empty() {
                return Ok(0);
            }
            let n = updates.len();
            let results = self.node.write_batch(updates).await?;
            if results.iter().all(OpResult::is_success) {
                return Ok(n);
            }
        }
        Err(conflict(pods, "dependents of the deleted object"))
    }

    async fn run(&self, cmd: Command) -> Result<OpResult, ApiError> {
        let resp = self.node.write(cmd).await?;
        match resp.results.into_iter().next() {
            Some(OpResult::NoSpace) => Err(ApiError::no_space(&self.node)),
            Some(result) => Ok(result),
            None => Err(ApiError::internal("no result")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_records_are_skipped_and_counted() {
        let rec = |v: &str, rv| Record {
            value: Bytes::from(v.to_string()),
            create_rv: rv,
            mod_rv: rv,
        };
        let good = rec(r#"{"metadata": {"name": "a"}}"#, 7);
        let junk = rec("junk", 8);
        let before = UNDECODABLE.get();
        let out = decode_records([
            ("/registry/pods/default/a", &good),
            ("/registry/pods/default/zzz", &junk),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["metadata"]["resourceVersion"], "7");
        assert!(UNDECODABLE.get() > before);
    }
}
