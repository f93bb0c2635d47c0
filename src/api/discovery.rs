//! Discovery: `/api`, `/apis`, `/api/v1`, as kubectl and the client libraries read them, in
//! the legacy form and, when the `Accept` header asks for it first, as aggregated discovery
//! (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`).

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

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
        let group = json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": aggregated_resources(), "freshness": "Current"}],
        });
        return aggregated(vec![group]);
    }
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

/// `GET /apis`: no groups beyond the core group (always 200).
pub async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(Vec::new());
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})).into_response()
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

/// The verbs of a resource (`deletecollection` is not served).
fn verbs(_r: &ResourceInfo) -> Vec<&'static str> {
    VERBS.to_vec()
}

/// `kubectl get all` covers what Kubernetes puts in the `all` category.
fn categories(r: &ResourceInfo) -> Vec<&'static str> {
    r.categories.to_vec()
}

fn aggregated_resources() -> Vec<Value> {
    resources()
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
                "responseKind": {"group": "", "version": "v1", "kind": r.kind},
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
    let mut resources = Vec::new();
    for r in crate::registry::resources() {
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
    Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}))
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
        let all = aggregated_resources();
        assert_eq!(all.len(), resources().count());
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
