//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`, as kubectl and the client libraries read them, in
//! the legacy form and, when the `Accept` header asks for it first, as aggregated discovery
//! (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`).

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::extract::ApiPath;
use super::ApiError;
use crate::registry::{resources, ResourceInfo};

/// The aggregated discovery media type served.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// True when `Accept` prefers aggregated discovery (v2) to the legacy documents.
fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for media in accept.split(',') {
        let params: Vec<String> = media
            .split(';')
            .map(|p| p.trim().replace(' ', ""))
            .collect();
        let has = |p: &str| params.iter().any(|x| x == p);
        if has("as=APIGroupDiscoveryList") {
            if has("g=apidiscovery.k8s.io") && has("v=v2") {
                return true;
            }
            continue;
        }
        return false;
    }
    false
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, AGGREGATED), (header::VARY, "Accept")],
        Json(body),
    )
        .into_response()
}

/// `GET /api`: the core group's versions.
pub async fn api_versions(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(vec![aggregated_group("")]);
    }
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

/// The named groups served (not the core group), in discovery's order.
fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = Vec::new();
    for r in served() {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

/// Every resource discovery names: the registry's kinds and the reviews, which are not stored.
fn served() -> impl Iterator<Item = &'static ResourceInfo> {
    resources().chain(std::iter::once(&super::authz::review::INFO))
}

/// One group's legacy `APIGroup` document (every group serves `v1` only).
fn group_document(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv})
}

/// One group's aggregated discovery entry.
fn aggregated_group(group: &str) -> Value {
    let mut g = json!({
        "metadata": {"creationTimestamp": null},
        "versions": [{"version": "v1", "resources": aggregated_resources(group), "freshness": "Current"}],
    });
    if !group.is_empty() {
        g["metadata"]["name"] = json!(group);
    }
    g
}

/// `GET /apis`: every named group.
pub async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(named_groups().into_iter().map(aggregated_group).collect());
    }
    let groups: Vec<Value> = named_groups().into_iter().map(group_document).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response()
}

/// `GET /apis/{group}`: the group's versions.
pub async fn api_group(ApiPath(group): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    if !named_groups().contains(&group.as_str()) {
        return Err(ApiError::not_found(format!(
            "the server could not find the requested resource (group {group})"
        )));
    }
    Ok(Json(group_document(&group)))
}

/// `GET /apis/{group}/{version}`: the group version's resources.
pub async fn group_version(
    ApiPath((group, version)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if version != "v1" || !named_groups().contains(&group.as_str()) {
        return Err(ApiError::not_found(format!(
            "the server could not find the requested resource ({group}/{version})"
        )));
    }
    Ok(Json(resource_list(&group)))
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

/// A served subresource: name, response kind (group, version, kind), verbs.
struct Sub {
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
}

fn subresources(r: &ResourceInfo) -> Vec<Sub> {
    let mut subs = Vec::new();
    if r.has_status {
        subs.push(Sub {
            name: "status",
            group: "",
            version: "v1",
            kind: r.kind,
            verbs: SUB_VERBS,
        });
    }
    if r.has_scale {
        subs.push(Sub {
            name: "scale",
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: SUB_VERBS,
        });
    }
    if r.has_log {
        // Streamed from the agent of the pod's node (`api::logs`).
        subs.push(Sub {
            name: "log",
            group: "",
            version: "v1",
            kind: "Pod",
            verbs: &["get"],
        });
    }
    subs
}

/// The verbs of a resource (`deletecollection` is not served; a review is only created).
fn verbs(r: &ResourceInfo) -> Vec<&'static str> {
    if r.kind == super::authz::review::INFO.kind {
        return vec!["create"];
    }
    VERBS.to_vec()
}

/// `kubectl get all` covers what Kubernetes puts in the `all` category.
fn categories(r: &ResourceInfo) -> Vec<&'static str> {
    r.categories.to_vec()
}

fn aggregated_resources(group: &str) -> Vec<Value> {
    served()
        .filter(|r| r.group == group)
        .map(|r| {
            let subs: Vec<Value> = subresources(r)
                .iter()
                .map(|s| {
                    json!({
                        "subresource": s.name,
                        "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                        "verbs": s.verbs,
                    })
                })
                .collect();
            let mut v = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": verbs(r),
                "shortNames": r.short_names,
            });
            if !categories(r).is_empty() {
                v["categories"] = json!(categories(r));
            }
            if !subs.is_empty() {
                v["subresources"] = Value::Array(subs);
            }
            v
        })
        .collect()
}

/// `GET /api/v1`: every resource and subresource served.
pub async fn core_v1() -> Json<Value> {
    Json(resource_list(""))
}

/// The `APIResourceList` of a group's `v1`.
fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for r in served().filter(|r| r.group == group) {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
            "shortNames": r.short_names,
        });
        if !categories(r).is_empty() {
            main["categories"] = json!(categories(r));
        }
        resources.push(main);
        for s in subresources(r) {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if !s.group.is_empty() {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert!(wants_aggregated(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert!(!wants_aggregated(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_aggregated(&h));
    }

    #[test]
    fn every_resource_and_subresource_has_a_response_kind() {
        let all = aggregated_resources("");
        assert_eq!(
            all.len(),
            resources().filter(|r| r.group.is_empty()).count()
        );
        let rbac = aggregated_resources("rbac.authorization.k8s.io");
        assert_eq!(rbac.len(), 4);
        assert_eq!(
            rbac[0]["responseKind"]["group"],
            "rbac.authorization.k8s.io"
        );
        for r in &all {
            assert!(r["responseKind"]["kind"].is_string(), "{r}");
            for s in r["subresources"].as_array().into_iter().flatten() {
                assert!(s["responseKind"]["kind"].is_string(), "{s}");
            }
        }
        let rc = all
            .iter()
            .find(|r| r["resource"] == "replicationcontrollers")
            .unwrap();
        let scale = rc["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
    }
}
