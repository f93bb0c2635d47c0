//! `fieldValidation=Strict|Warn|Ignore`: what happens to fields core/v1 does not define.
//!
//! Unknown fields are found by decoding the body into k8s-openapi's typed struct and encoding
//! it again: a key of the body (with a non-null value) that the round trip lost is unknown.
//! Strict refuses the request (400, as the API server's "strict decoding error"), Warn drops
//! the fields and answers with a `Warning` header per field, Ignore drops them silently. The
//! API server's default, when the parameter is absent, is Warn.

use axum::http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1 as core;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::ApiError;
use crate::registry::ResourceInfo;

/// The `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Strict,
    Warn,
    Ignore,
}

impl Directive {
    /// Parses the query parameter; absent means Warn, as the API server defaults.
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(Directive::Warn),
            Some("Strict") => Ok(Directive::Strict),
            Some("Ignore") => Ok(Directive::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: invalid value {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

/// `Warning` headers to add to a response.
#[derive(Debug, Default, Clone)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    /// The headers, as `299 - "text"`.
    pub fn headers(&self) -> axum::response::AppendHeaders<Vec<(HeaderName, HeaderValue)>> {
        axum::response::AppendHeaders(
            self.0
                .iter()
                .filter_map(|w| {
                    let text = format!("299 - {}", serde_json::to_string(w).ok()?);
                    Some((
                        HeaderName::from_static("warning"),
                        HeaderValue::from_str(&text).ok()?,
                    ))
                })
                .collect(),
        )
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// The object as its typed struct keeps it, if it decodes.
fn typed_view(kind: &str, obj: &Value) -> Option<Value> {
    match kind {
        "Pod" => round_trip::<core::Pod>(obj),
        "ReplicationController" => round_trip::<core::ReplicationController>(obj),
        "Service" => round_trip::<core::Service>(obj),
        "Endpoints" => round_trip::<core::Endpoints>(obj),
        "Event" => round_trip::<core::Event>(obj),
        "Node" => round_trip::<core::Node>(obj),
        "Namespace" => round_trip::<core::Namespace>(obj),
        _ => None,
    }
}

/// Removes the fields of `obj` that `known` lacks; returns their paths (`spec.containers[0].x`).
fn prune(obj: &mut Value, known: &Value, path: &str, found: &mut Vec<String>) {
    match (obj, known) {
        (Value::Object(m), Value::Object(k)) => {
            let mut gone = Vec::new();
            for (key, v) in m.iter_mut() {
                if v.is_null() {
                    continue;
                }
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => prune(v, kv, &at, found),
                    None => {
                        found.push(at);
                        gone.push(key.clone());
                    }
                }
            }
            for key in gone {
                m.remove(&key);
            }
        }
        (Value::Array(a), Value::Array(k)) => {
            for (i, (v, kv)) in a.iter_mut().zip(k).enumerate() {
                prune(v, kv, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// The unknown fields of `obj`, removed from it (a body that does not decode is left as is:
/// validation reports it).
pub fn strip_unknown(kind: &str, obj: &mut Value) -> Vec<String> {
    let Some(known) = typed_view(kind, obj) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    prune(obj, &known, "", &mut found);
    found
}

/// Applies `directive` to an object about to be written: unknown fields refused, or dropped
/// with warnings, or dropped.
pub fn check(
    info: &ResourceInfo,
    obj: &mut Value,
    directive: Directive,
) -> Result<Warnings, ApiError> {
    let unknown = strip_unknown(info.kind, obj);
    if unknown.is_empty() {
        return Ok(Warnings::default());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match directive {
        Directive::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
            listed.join(", "),
            kind = info.kind
        ))),
        Directive::Warn => Ok(Warnings(listed)),
        Directive::Ignore => Ok(Warnings::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1, "resources": {"requests": {"cpu": "1"}}}], "extra": {"a": 1}}});
        let found = strip_unknown("Pod", &mut pod);
        assert_eq!(found, vec!["spec.containers[0].bogus", "spec.extra"]);
        assert!(pod["spec"].get("extra").is_none());
        assert_eq!(pod["metadata"]["labels"]["x"], "y");
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        let info = crate::registry::lookup("pods").unwrap();
        let mut again =
            json!({"metadata": {"name": "a"}, "spec": {"containers": [], "nope": true}});
        let err = check(info, &mut again.clone(), Directive::Strict).unwrap_err();
        assert!(
            err.message
                .contains("strict decoding error: unknown field \"spec.nope\""),
            "{}",
            err.message
        );
        assert_eq!(
            check(info, &mut again.clone(), Directive::Warn)
                .unwrap()
                .0
                .len(),
            1
        );
        assert!(check(info, &mut again, Directive::Ignore)
            .unwrap()
            .0
            .is_empty());
        assert!(Directive::parse(Some("Loose")).is_err());
    }
}
