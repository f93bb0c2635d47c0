//! OpenAPI v3: `/openapi/v3` (the index) and `/openapi/v3/api/v1` (core/v1's document).
//!
//! kubectl reads the document to learn that PATCH takes `fieldValidation` (so `create -f` and
//! `apply -f` validate on the server with their default, strict, validation) and to describe
//! the kinds (`kubectl explain`). The PATCH operations list JSON, merge and apply patches but
//! not strategic merge patch: kubectl then computes its strategic patches from its own
//! compiled-in core/v1 types, which carry every list's merge key, rather than from these
//! abbreviated schemas. The server accepts strategic merge patches all the same.

use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::registry::{ResourceInfo, RESOURCES};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

fn schema_name(kind: &str) -> String {
    format!("io.k8s.api.core.v1.{kind}")
}

fn reference(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}]})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description, "default": ""})
}

fn free_object(description: &str) -> Value {
    json!({"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true})
}

/// The schema of a served kind: the envelope typed, `spec` and `status` open objects.
fn kind_schema(info: &ResourceInfo) -> Value {
    let mut props = Map::new();
    props.insert(
        "apiVersion".into(),
        string("APIVersion defines the versioned schema of this representation of an object."),
    );
    props.insert(
        "kind".into(),
        string("Kind is a string value representing the REST resource this object represents."),
    );
    props.insert("metadata".into(), reference(&format!("{META}.ObjectMeta")));
    match info.kind {
        "Endpoints" => {
            props.insert("subsets".into(), json!({"type": "array", "items": free_object("EndpointSubset"), "x-kubernetes-list-type": "atomic"}));
        }
        "Event" => {
            props.insert(
                "involvedObject".into(),
                free_object("The object that this event is about."),
            );
            for f in [
                "reason",
                "message",
                "type",
                "firstTimestamp",
                "lastTimestamp",
                "reportingComponent",
            ] {
                props.insert(f.into(), string(f));
            }
            props.insert(
                "count".into(),
                json!({"type": "integer", "format": "int32"}),
            );
            props.insert(
                "source".into(),
                free_object("The component reporting this event."),
            );
        }
        _ => {
            props.insert(
                "spec".into(),
                free_object(&format!("The desired behavior of the {}.", info.singular)),
            );
            if info.has_status {
                props.insert(
                    "status".into(),
                    free_object(&format!("The observed status of the {}.", info.singular)),
                );
            }
        }
    }
    json!({
        "type": "object",
        "description": format!("{} (core/v1).", info.kind),
        "properties": props,
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": info.kind}],
    })
}

fn object_meta() -> Value {
    let map = json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": string("Name must be unique within a namespace."),
            "generateName": string("An optional prefix used to generate a unique name."),
            "namespace": string("Namespace defines the space within which each name must be unique."),
            "uid": string("UID is the unique in time and space value for this object."),
            "resourceVersion": string("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "deletionTimestamp": {"type": "string", "format": "date-time"},
            "labels": map,
            "annotations": map,
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"},
            "ownerReferences": {"type": "array", "items": free_object("OwnerReference"), "x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge"},
            "managedFields": {"type": "array", "items": free_object("ManagedFieldsEntry")},
        },
    })
}

fn param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
}

fn ok(kind: &str) -> Value {
    json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(kind))}}}}})
}

/// The operations on one object (`get`, `put`, `patch`, `delete`).
fn item_path(info: &ResourceInfo) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": info.kind});
    let scope = if info.namespaced { "Namespaced" } else { "" };
    let op = |verb: &str| format!("{verb}CoreV1{scope}{}", info.kind);
    let patch_body = |ct: &str| {
        (
            ct.to_string(),
            json!({"schema": {"$ref": format!("#/components/schemas/{META}.Patch")}}),
        )
    };
    let content: Map<String, Value> = [
        patch_body("application/apply-patch+yaml"),
        patch_body("application/json-patch+json"),
        patch_body("application/merge-patch+json"),
    ]
    .into_iter()
    .collect();
    let mut params = vec![
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if info.namespaced {
        params.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}));
    }
    let write_params = vec![
        param("dryRun", "string", "When present, indicates that modifications should not be persisted."),
        param("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict."),
    ];
    let mut patch_params = write_params.clone();
    patch_params.push(param(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests.",
    ));
    json!({
        "get": {"operationId": op("read"), "tags": ["core_v1"], "responses": ok(info.kind),
                "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
        "put": {"operationId": op("replace"), "tags": ["core_v1"], "parameters": write_params,
                "requestBody": {"content": {"*/*": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(info.kind))}}}, "required": true},
                "responses": ok(info.kind), "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
        "patch": {"operationId": op("patch"), "tags": ["core_v1"], "parameters": patch_params,
                  "requestBody": {"content": content, "required": true},
                  "responses": ok(info.kind), "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
        "delete": {"operationId": op("delete"), "tags": ["core_v1"], "responses": ok(info.kind),
                   "x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk},
        "parameters": params,
    })
}

/// The operations on a collection (`list`, `create`).
fn collection_path(info: &ResourceInfo) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": info.kind});
    let scope = if info.namespaced { "Namespaced" } else { "" };
    json!({
        "get": {"operationId": format!("listCoreV1{scope}{}", info.kind), "tags": ["core_v1"],
                "parameters": [param("labelSelector", "string", "A selector to restrict the list of returned objects by their labels."),
                               param("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields."),
                               param("watch", "boolean", "Watch for changes to the described resources.")],
                "responses": {"200": {"description": "OK"}}, "x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk},
        "post": {"operationId": format!("createCoreV1{scope}{}", info.kind), "tags": ["core_v1"],
                 "parameters": [param("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.")],
                 "requestBody": {"content": {"*/*": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(info.kind))}}}, "required": true},
                 "responses": ok(info.kind), "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk},
    })
}

/// The core/v1 document.
fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for info in RESOURCES {
        let base = if info.namespaced {
            format!("/api/v1/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("/api/v1/{}", info.plural)
        };
        paths.insert(base.clone(), collection_path(info));
        paths.insert(format!("{base}/{{name}}"), item_path(info));
        schemas.insert(schema_name(info.kind), kind_schema(info));
    }
    schemas.insert(format!("{META}.ObjectMeta"), object_meta());
    schemas.insert(format!("{META}.Patch"), json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The document's bytes and the hash clients cache it by.
fn cached() -> &'static (Vec<u8>, String) {
    static DOC: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    DOC.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let bytes = serde_json::to_vec(&document()).expect("json");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        (bytes, format!("{:016X}", h.finish()))
    })
}

/// `GET /openapi/v3`: where each group version's document is.
pub async fn index() -> Response {
    let url = format!("/openapi/v3/api/v1?hash={}", cached().1);
    axum::Json(json!({"paths": {"api/v1": {"serverRelativeURL": url}}})).into_response()
}

/// `GET /openapi/v3/api/v1`.
pub async fn core_v1() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        cached().0.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_with_field_validation() {
        let doc = document();
        for info in RESOURCES {
            let patch = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .find(|p| p["x-kubernetes-group-version-kind"]["kind"] == info.kind)
                .unwrap_or_else(|| panic!("no PATCH for {}", info.kind));
            assert!(patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            assert!(doc["components"]["schemas"][schema_name(info.kind)].is_object());
        }
    }
}
