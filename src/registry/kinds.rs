//! Every kind served, in one list: adding a kind is adding its file and one line here.

use super::clusterrole::ClusterRole;
use super::clusterrolebinding::ClusterRoleBinding;
use super::endpoints::Endpoints;
use super::event::Event;
use super::info::ResourceInfo;
use super::namespace::Namespace;
use super::node::Node;
use super::pod::Pod;
use super::replicationcontroller::ReplicationController;
use super::resource::Resource;
use super::role::Role;
use super::rolebinding::RoleBinding;
use super::service::Service;
use super::token::Token;

/// Every kind served, in discovery's order (core/v1 first).
pub static KINDS: &[&dyn Resource] = &[
    &Pod,
    &ReplicationController,
    &Service,
    &Endpoints,
    &Event,
    &Node,
    &Namespace,
    &Role,
    &ClusterRole,
    &RoleBinding,
    &ClusterRoleBinding,
    &Token,
];

/// What the API serves about every kind, in discovery's order.
pub fn resources() -> impl Iterator<Item = &'static ResourceInfo> {
    KINDS.iter().map(|k| k.info())
}

/// The core/v1 resource served under `plural`.
pub fn lookup(plural: &str) -> Option<&'static ResourceInfo> {
    lookup_in("", "v1", plural)
}

/// The resource served under `plural` in a group version.
pub fn lookup_in(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    resources().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The group versions served, core first, in discovery's order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in resources() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource of `kind` (`Pod`).
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    resources().find(|r| r.kind == kind)
}

/// The behaviour of a served resource.
pub fn resource(info: &ResourceInfo) -> &'static dyn Resource {
    *KINDS
        .iter()
        .find(|k| k.info().kind == info.kind)
        .expect("every ResourceInfo is a served kind's")
}

/// The kind v1beta1 serves under the names (collection, kind) that `matches`.
pub fn by_v1beta1(matches: impl Fn(&str, &str) -> bool) -> Option<&'static dyn Resource> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.v1beta1_names().is_some_and(|(c, kind)| matches(c, kind)))
}
