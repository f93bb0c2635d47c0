//! What the API serves about a resource, and where its objects are stored.

/// What the API serves about a resource: names, scope and subresources. Each kind's file holds
/// its own (`pod.rs`'s `INFO`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The API group (`""`: core, served under `/api/v1`; others under `/apis/GROUP/VERSION`).
    pub group: &'static str,
    pub version: &'static str,
    /// Lower-case plural, as in URLs and storage keys.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` is what `kubectl get all` lists).
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub has_status: bool,
    pub has_scale: bool,
    /// A `log` subresource, streamed from the agent of the object's node (pods).
    pub has_log: bool,
    /// Deleted gracefully: marked terminating while an agent stops it, then removed (pods;
    /// `Registry::delete_pod`).
    pub graceful_delete: bool,
}

impl ResourceInfo {
    /// The `apiVersion` of its objects (`v1`, `rbac.authorization.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The path its collections are served under (`/api/v1`, `/apis/GROUP/VERSION`).
    pub fn base_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// Storage key of one object.
pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match (info.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/{}", info.plural, ns, name),
        _ => format!("/registry/{}/{}", info.plural, name),
    }
}

/// Storage prefix of a collection: every namespace when `namespace` is `None`.
pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match (info.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/", info.plural, ns),
        _ => format!("/registry/{}/", info.plural),
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object: spec and metadata; status is kept as stored.
    Main,
    /// `/status`: status only; spec and most metadata are kept as stored.
    Status,
}
