//! Every kind served, in one list: adding a kind is adding its file and one line here.

use super::endpoints::Endpoints;
use super::event::Event;
use super::info::ResourceInfo;
use super::namespace::Namespace;
use super::node::Node;
use super::pod::Pod;
use super::replicationcontroller::ReplicationController;
use super::resource::Resource;
use super::service::Service;

/// Every kind core/v1 serves, in discovery's order.
pub static KINDS: &[&dyn Resource] = &[
    &Pod,
    &ReplicationController,
    &Service,
    &Endpoints,
    &Event,
    &Node,
    &Namespace,
];

/// What the API serves about every kind, in discovery's order.
pub fn resources() -> impl Iterator<Item = &'static ResourceInfo> {
    KINDS.iter().map(|k| k.info())
}

/// The resource served under `plural`.
pub fn lookup(plural: &str) -> Option<&'static ResourceInfo> {
    resources().find(|r| r.plural == plural)
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
