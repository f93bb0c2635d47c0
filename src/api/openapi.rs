//! OpenAPI v3: `/openapi/v3` (the index), `/openapi/v3/api/v1` (core/v1's document) and
//! `/openapi/v3/apis/{group}/{version}` (every other group version's).
//!
//! The document describes exactly what keelson serves of core/v1: every served kind's full
//! schema and everything it references ([`schemas`], from k8s-openapi's Kubernetes 1.37
//! types), and for each resource only the operations, paths and query parameters the API
//! answers (no `deletecollection`, `dryRun`, `pretty` or proxy paths), each with its success
//! answer and the error answers (400, 401, 403, 404, 409, 410, 422, 429, 504) as `Status`. It is
//! built once and served with the hash the index names as its ETag.
//!
//! kubectl reads it to learn that PATCH takes `fieldValidation` (so `create -f` and `apply -f`
//! validate on the server) and to describe the kinds (`kubectl explain`). The PATCH operations
//! list JSON, merge and apply patches but not strategic merge patch, which the server accepts
//! all the same: listed, kubectl would compute its strategic patches from these schemas, which
//! lack kube-apiserver's `x-kubernetes-patch-merge-key` extensions; unlisted, it uses its own
//! compiled-in core/v1 types, which carry every list's merge key. The deprecated
//! `/api/v1/watch/…` paths are served but not listed; `watch=true` on a list is.

mod schemas;

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use std::collections::HashMap;

use super::extract::{ApiPath, ApiQuery};
use crate::registry::{resources, ResourceInfo};
use schemas::{kind_name, list_name, reference, META, SCALE};

/// The error answers every operation declares, as kube-apiserver can give them.
const ERRORS: &[(&str, &str)] = &[
    ("400", "BadRequest"),
    ("401", "Unauthorized"),
    ("403", "Forbidden"),
    ("404", "NotFound"),
    ("409", "Conflict"),
    ("410", "Gone"),
    ("422", "Invalid"),
    ("429", "TooManyRequests"),
    ("504", "Timeout"),
];

/// A query parameter.
fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": schema})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": string()})
}

fn resource_version() -> Value {
    query("resourceVersion", string(), "resourceVersion sets a constraint on what resource versions a request may be served from: unset is a linearizable read, \"0\" or a version is served from the answering master's replica.")
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", boolean(), "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        query("continue", string(), "The continue option should be set when retrieving more results from the server: the value of a previous list's metadata.continue."),
        query("fieldSelector", string(), "A selector to restrict the list of returned objects by their fields (metadata.name, metadata.namespace, and per kind spec.nodeName, status.phase, involvedObject.*, …)."),
        query("labelSelector", string(), "A selector to restrict the list of returned objects by their labels."),
        query("limit", json!({"type": "integer", "minimum": 0}), "limit is a maximum number of responses to return for a list call; more are named by metadata.continue."),
        resource_version(),
        query("resourceVersionMatch", string(), "resourceVersionMatch determines how resourceVersion is applied to list calls (NotOlderThan, Exact)."),
        query("sendInitialEvents", boolean(), "With watch=true, sendInitialEvents=true starts the watch with the current objects, then a bookmark."),
        query("timeoutSeconds", json!({"type": "integer", "minimum": 0}), "Timeout for the list/watch call."),
        query("watch", boolean(), "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
    ]
}

fn write_params() -> Vec<Value> {
    vec![
        query("fieldManager", string(), "fieldManager is a name associated with the actor or entity that is making these changes."),
        query("fieldValidation", string(), "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict."),
    ]
}

fn patch_params() -> Vec<Value> {
    let mut p = write_params();
    p.push(query(
        "force",
        boolean(),
        "Force is going to \"force\" Apply requests: the fields of other managers are taken over.",
    ));
    p
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// The answers of an operation: its successes (code → schema name) and every error.
fn responses(success: &[(&str, &str)]) -> Value {
    let mut r = Map::new();
    for (code, schema) in success {
        let description = if *code == "201" { "Created" } else { "OK" };
        r.insert(
            (*code).into(),
            json!({"description": description, "content": json_content(reference(schema))}),
        );
    }
    let status = format!("{META}.Status");
    for (code, reason) in ERRORS {
        r.insert(
            (*code).into(),
            json!({"description": reason, "content": json_content(reference(&status))}),
        );
    }
    Value::Object(r)
}

/// The answers of a PATCH: as [`responses`], and 415 for a content type it does not take.
fn patch_responses(success: &[(&str, &str)]) -> Value {
    let mut r = responses(success);
    r["415"] = json!({"description": "UnsupportedMediaType",
                      "content": json_content(reference(&format!("{META}.Status")))});
    r
}

/// The request body of a PATCH: the patch kinds listed to clients.
fn patch_body() -> Value {
    let patch = json!({"schema": reference(&format!("{META}.Patch"))});
    json!({"required": true, "content": {
        "application/apply-patch+yaml": patch,
        "application/json-patch+json": patch,
        "application/merge-patch+json": patch,
    }})
}

/// One operation.
struct Op<'a> {
    id: String,
    action: &'a str,
    gvk: Value,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = json!({
            "operationId": self.id,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if !self.parameters.is_empty() {
            op["parameters"] = Value::Array(self.parameters);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

/// The paths of one resource.
fn resource_paths(info: &ResourceInfo, paths: &mut Map<String, Value>) {
    let kind = info.kind;
    let scope = if info.namespaced { "Namespaced" } else { "" };
    let gv = group_version_id(info.group, info.version);
    let id = |verb: &str, suffix: &str| format!("{verb}{gv}{scope}{kind}{suffix}");
    let gvk = json!({"group": info.group, "version": info.version, "kind": kind});
    let schema = kind_name(info);
    let list = list_name(info);
    let root = info.base_path();
    let object_body =
        |schema: &str| json!({"required": true, "content": json_content(reference(schema))});
    let base = if info.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{root}/{}", info.plural)
    };
    let mut scope_params = Vec::new();
    if info.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let mut item_params = vec![path_param("name", &format!("name of the {kind}"))];
    item_params.extend(scope_params.iter().cloned());

    // The collection: list and create.
    let mut collection = json!({
        "get": Op { id: id("list", ""), action: "list", gvk: gvk.clone(), parameters: list_params(), body: None,
                    responses: responses(&[("200", &list)]) }.into_value(),
        "post": Op { id: id("create", ""), action: "post", gvk: gvk.clone(), parameters: write_params(),
                     body: Some(object_body(&schema)), responses: responses(&[("201", &schema)]) }.into_value(),
    });
    if !scope_params.is_empty() {
        collection["parameters"] = Value::Array(scope_params.clone());
    }
    paths.insert(base.clone(), collection);

    // Every namespace at once.
    if info.namespaced {
        paths.insert(
            format!("{root}/{}", info.plural),
            json!({"get": Op { id: format!("list{gv}{kind}ForAllNamespaces"), action: "list", gvk: gvk.clone(),
                               parameters: list_params(), body: None,
                               responses: responses(&[("200", &list)]) }.into_value()}),
        );
    }

    // The object: read, replace, patch, delete.
    paths.insert(
        format!("{base}/{{name}}"),
        json!({
            "get": Op { id: id("read", ""), action: "get", gvk: gvk.clone(), parameters: vec![resource_version()],
                        body: None, responses: responses(&[("200", &schema)]) }.into_value(),
            "put": Op { id: id("replace", ""), action: "put", gvk: gvk.clone(), parameters: write_params(),
                        body: Some(object_body(&schema)), responses: responses(&[("200", &schema)]) }.into_value(),
            "patch": Op { id: id("patch", ""), action: "patch", gvk: gvk.clone(), parameters: patch_params(),
                          body: Some(patch_body()), responses: patch_responses(&[("200", &schema), ("201", &schema)]) }.into_value(),
            "delete": Op { id: id("delete", ""), action: "delete", gvk: gvk.clone(),
                           parameters: vec![
                               query("gracePeriodSeconds", json!({"type": "integer", "minimum": 0}), "The duration in seconds before the object should be deleted (pods)."),
                               query("propagationPolicy", string(), "Whether and how garbage collection will be performed: Orphan, Background (the default) or Foreground (served as Background)."),
                           ],
                           body: Some(json!({"content": json_content(reference(&format!("{META}.DeleteOptions")))})),
                           responses: responses(&[("200", &schema)]) }.into_value(),
            "parameters": item_params,
        }),
    );

    if info.has_status {
        paths.insert(
            format!("{base}/{{name}}/status"),
            json!({
                "get": Op { id: id("read", "Status"), action: "get", gvk: gvk.clone(), parameters: vec![resource_version()],
                            body: None, responses: responses(&[("200", &schema)]) }.into_value(),
                "put": Op { id: id("replace", "Status"), action: "put", gvk: gvk.clone(), parameters: write_params(),
                            body: Some(object_body(&schema)), responses: responses(&[("200", &schema)]) }.into_value(),
                "patch": Op { id: id("patch", "Status"), action: "patch", gvk: gvk.clone(), parameters: patch_params(),
                              body: Some(patch_body()), responses: patch_responses(&[("200", &schema), ("201", &schema)]) }.into_value(),
                "parameters": item_params,
            }),
        );
    }

    if info.has_scale {
        let scale_gvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        paths.insert(
            format!("{base}/{{name}}/scale"),
            json!({
                "get": Op { id: id("read", "Scale"), action: "get", gvk: scale_gvk.clone(), parameters: vec![],
                            body: None, responses: responses(&[("200", SCALE)]) }.into_value(),
                "put": Op { id: id("replace", "Scale"), action: "put", gvk: scale_gvk.clone(), parameters: vec![],
                            body: Some(object_body(SCALE)), responses: responses(&[("200", SCALE)]) }.into_value(),
                "patch": Op { id: id("patch", "Scale"), action: "patch", gvk: scale_gvk,
                              parameters: vec![],
                              body: Some(json!({"required": true, "content": {
                                  "application/json-patch+json": {"schema": reference(&format!("{META}.Patch"))},
                                  "application/merge-patch+json": {"schema": reference(&format!("{META}.Patch"))},
                              }})),
                              responses: patch_responses(&[("200", SCALE)]) }.into_value(),
                "parameters": item_params,
            }),
        );
    }

    if info.has_log {
        let mut log = responses(&[]);
        log["200"] = json!({"description": "OK", "content": {"text/plain": {"schema": string()}}});
        paths.insert(
            format!("{base}/{{name}}/log"),
            json!({
                "get": Op { id: id("read", "Log"), action: "get", gvk: gvk.clone(),
                            parameters: vec![
                                query("container", string(), "The container for which to stream logs; required when the pod has several."),
                                query("follow", boolean(), "Follow the log stream of the pod."),
                                query("previous", boolean(), "Return the previous terminated container's logs."),
                                query("tailLines", integer(), "The number of lines from the end of the logs to show."),
                                query("timestamps", boolean(), "Add a timestamp at the beginning of every line."),
                            ],
                            body: None, responses: log }.into_value(),
                "parameters": item_params,
            }),
        );
    }
}

/// `Core`, `RbacAuthorization`: a group as operation ids spell it.
fn group_id(group: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.trim_end_matches(".k8s.io")
    };
    group.split('.').map(capitalized).collect()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `CoreV1`, `RbacAuthorizationV1`: a group version as operation ids spell it.
fn group_version_id(group: &str, version: &str) -> String {
    group_id(group) + &capitalized(version)
}

/// One group version's document.
fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for info in resources().filter(|r| r.group == group && r.version == version) {
        resource_paths(info, &mut paths);
    }
    // Every operation is tagged with its group version (`core_v1`, `rbacAuthorization_v1`).
    let id = group_id(group);
    let tag = format!("{}{}_{version}", id[..1].to_lowercase(), &id[1..]);
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in item
            .values_mut()
            .filter(|op| op.get("operationId").is_some())
        {
            op["tags"] = json!([tag]);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {
            "schemas": schemas::components(),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "in": "header", "name": "authorization",
                                                 "description": "Bearer Token authentication"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// The document's bytes and the hash clients cache it by.
/// A group version's document: its path under `/openapi/v3/` (`api/v1`,
/// `apis/rbac.authorization.k8s.io/v1`), bytes and the hash clients cache it by.
struct Cached {
    path: String,
    bytes: Vec<u8>,
    hash: String,
}

/// Every group version's document, built once.
fn cached() -> &'static [Cached] {
    static DOCS: OnceLock<Vec<Cached>> = OnceLock::new();
    DOCS.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        crate::registry::group_versions()
            .into_iter()
            .map(|(group, version)| {
                let bytes = serde_json::to_vec(&document(group, version)).expect("json");
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                let path = if group.is_empty() {
                    format!("api/{version}")
                } else {
                    format!("apis/{group}/{version}")
                };
                let hash = format!("{:016X}", h.finish());
                Cached { path, bytes, hash }
            })
            .collect()
    })
}

/// `GET /openapi/v3`: where each group version's document is.
pub async fn index() -> Response {
    let paths: Map<String, Value> = cached()
        .iter()
        .map(|c| {
            let url = format!("/openapi/v3/{}?hash={}", c.path, c.hash);
            (c.path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    axum::Json(json!({"paths": paths})).into_response()
}

/// `GET /openapi/v3/api/v1`.
pub async fn core_v1(headers: HeaderMap, q: ApiQuery<HashMap<String, String>>) -> Response {
    serve("api/v1", headers, q)
}

/// `GET /openapi/v3/apis/{group}/{version}`.
pub async fn group_version(
    ApiPath((group, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
    q: ApiQuery<HashMap<String, String>>,
) -> Response {
    serve(&format!("apis/{group}/{version}"), headers, q)
}

/// A document, with its hash as a strong ETag; a client holding it (`If-None-Match`) gets 304.
/// The document never changes while the process runs, so a client that asked by hash (as the
/// index names it) may keep it for good.
fn serve(
    path: &str,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Response {
    let Some(Cached { bytes, hash, .. }) = cached().iter().find(|c| c.path == path) else {
        return super::ApiError::not_found(format!("no OpenAPI document for {path}"))
            .into_response();
    };
    let etag = format!("\"{hash}\"");
    let cache_control = if q.get("hash") == Some(hash) {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let holds = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let head = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, cache_control.to_string()),
    ];
    if holds {
        return (StatusCode::NOT_MODIFIED, head).into_response();
    }
    (
        StatusCode::OK,
        head,
        [(header::CONTENT_TYPE, "application/json")],
        bytes.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(&String, &String, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method != "parameters" {
                    ops.push((path, method, op));
                }
            }
        }
        ops
    }

    #[test]
    fn every_kind_has_a_patch_with_field_validation() {
        for info in resources() {
            let doc = document(info.group, info.version);
            let patch = operations(&doc)
                .into_iter()
                .find(|(_, m, p)| {
                    *m == "patch" && p["x-kubernetes-group-version-kind"]["kind"] == info.kind
                })
                .unwrap_or_else(|| panic!("no PATCH for {}", info.kind))
                .2;
            assert!(patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            assert!(doc["components"]["schemas"][kind_name(info)].is_object());
        }
    }

    #[test]
    fn every_operation_declares_the_errors_as_status_and_refs_resolve() {
        let doc = document("", "v1");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (path, method, op) in operations(&doc) {
            for (code, _) in ERRORS {
                let r = &op["responses"][*code]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    r,
                    &json!(format!("#/components/schemas/{META}.Status")),
                    "{method} {path} {code}"
                );
            }
            let text = op.to_string();
            for piece in text.split("#/components/schemas/").skip(1) {
                let name = piece.split('"').next().unwrap();
                assert!(schemas.contains_key(name), "{method} {path}: {name}");
            }
            assert!(
                !text.contains("strategic-merge-patch"),
                "strategic merge patch is not listed: {method} {path}"
            );
        }
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"].is_object());
        assert!(
            doc["paths"]["/api/v1/namespaces/{namespace}/replicationcontrollers/{name}/scale"]
                .is_object()
        );
        assert!(doc["paths"]["/api/v1/nodes/{name}/status"].is_object());
        assert!(doc["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/events/{name}/status"].is_null());
    }
}
