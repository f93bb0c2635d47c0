//! Server-side printing: `meta.k8s.io/v1` `Table`s, as kubectl asks for them with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Each row carries the object as `includeObject` asks: `PartialObjectMetadata` by default
//! (`Metadata`), the whole object (`Object`) or nothing (`None`). The columns are kubectl's
//! familiar ones (each kind's columns and cells, `registry/printing.rs` and the kind's file).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::ApiError;
use crate::registry::{self, ResourceInfo};

/// What a request wants in each row's `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// A request for a Table: which version of `meta.k8s.io` and what each row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRequest {
    /// `v1` or `v1beta1` (the same shape).
    pub version: &'static str,
    pub include: IncludeObject,
}

/// The Table the `Accept` header asks for, if it asks for one before anything else this server
/// can give. `include` is the `includeObject` query parameter.
pub fn requested(
    headers: &HeaderMap,
    include: Option<&str>,
) -> Result<Option<TableRequest>, ApiError> {
    let accept = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut version = None;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        if !matches!(base, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match (get("as"), get("g"), get("v")) {
            (None, _, _) => break,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => {
                version = Some("v1");
                break;
            }
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                version = Some("v1beta1");
                break;
            }
            _ => continue,
        }
    }
    let Some(version) = version else {
        return Ok(None);
    };
    let include = match include {
        None | Some("") | Some("Metadata") => IncludeObject::Metadata,
        Some("Object") => IncludeObject::Object,
        Some("None") => IncludeObject::None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "includeObject: unsupported value {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
            )))
        }
    };
    Ok(Some(TableRequest { version, include }))
}

/// The column definitions of `info`'s Table.
fn column_definitions(info: &ResourceInfo) -> Value {
    let cols: Vec<Value> = registry::resource(info)
        .columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    Value::Array(cols)
}

/// One row for `obj`.
fn row(info: &ResourceInfo, obj: &Value, req: TableRequest) -> Value {
    let cells = registry::resource(info).cells(obj, jiff::Timestamp::now());
    let mut r = json!({"cells": cells});
    match req.include {
        IncludeObject::None => {}
        IncludeObject::Object => r["object"] = obj.clone(),
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": format!("meta.k8s.io/{}", req.version),
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
    }
    r
}

/// A Table of `objects`; `metadata` is the list's (resourceVersion, continue).
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    metadata: Value,
    req: TableRequest,
    with_columns: bool,
) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", req.version),
        "metadata": metadata,
        "rows": objects.iter().map(|o| row(info, o, req)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = column_definitions(info);
    }
    t
}

/// A one-object Table, as a GET of one object answers.
pub fn of_object(info: &ResourceInfo, obj: &Value, req: TableRequest) -> Value {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(json!(""));
    table(
        info,
        std::slice::from_ref(obj),
        json!({"resourceVersion": rv}),
        req,
        true,
    )
}

/// A watch renderer: every event's object becomes a one-row Table; the first carries the
/// column definitions, later ones only their row, as the Kubernetes API server sends them.
pub fn watch_renderer(
    info: &'static ResourceInfo,
    req: TableRequest,
) -> Arc<dyn Fn(&Value) -> Value + Send + Sync> {
    let first = AtomicBool::new(true);
    Arc::new(move |obj: &Value| {
        let with_columns = first.swap(false, Ordering::Relaxed);
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        table(
            info,
            std::slice::from_ref(obj),
            json!({"resourceVersion": rv}),
            req,
            with_columns,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn kubectl_accept_header_asks_for_a_v1_table() {
        let h = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        let r = requested(&h, None).unwrap().unwrap();
        assert_eq!(r.version, "v1");
        assert_eq!(r.include, IncludeObject::Metadata);
        assert!(requested(&accept("application/json"), None)
            .unwrap()
            .is_none());
        assert!(requested(&HeaderMap::new(), None).unwrap().is_none());
        assert!(requested(&h, Some("Bogus")).is_err());
        // Something else preferred first: plain JSON.
        assert!(requested(
            &accept("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"),
            None
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn watch_tables_carry_columns_once() {
        let info = crate::registry::lookup("pods").unwrap();
        let req = TableRequest {
            version: "v1",
            include: IncludeObject::Metadata,
        };
        let render = watch_renderer(info, req);
        let pod = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "5"}, "spec": {}, "status": {}});
        let first = render(&pod);
        assert!(first["columnDefinitions"].is_array());
        assert_eq!(first["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(first["rows"][0]["cells"][0], "a");
        assert!(render(&pod).get("columnDefinitions").is_none());
    }
}
