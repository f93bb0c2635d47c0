//! `fieldValidation=Strict|Warn|Ignore`: what happens to fields core/v1 does not define.
//!
//! Unknown fields are found by decoding the body into k8s-openapi's typed struct and encoding
//! it again: a key of the body (with a non-null value) that the round trip lost is unknown.
//! Strict refuses the request (400, as the API server's "strict decoding error"), Warn drops
//! the fields and answers with a `Warning` header per field, Ignore drops them silently. The
//! API server's default, when the parameter is absent, is Warn.

use axum::http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::ApiError;
use crate::registry::{self, ResourceInfo};

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

/// At most this many `Warning` headers per answer (the last one counting those left out):
/// a body with hundreds of unknown fields would otherwise get an answer with hundreds of
/// headers, which HTTP clients refuse (Python's at 100). kube-apiserver bounds its warnings
/// the same way (4 KiB in all).
const MAX_WARNING_HEADERS: usize = 16;

/// Longest warning text, in characters, before it is cut (with `...`).
const MAX_WARNING_CHARS: usize = 256;

impl Warnings {
    /// The headers, as `299 - "text"`: at most [`MAX_WARNING_HEADERS`], each text quoted with
    /// every character outside printable ASCII escaped, so that no warning is lost to an
    /// invalid header value.
    pub fn headers(&self) -> axum::response::AppendHeaders<Vec<(HeaderName, HeaderValue)>> {
        let mut texts: Vec<String> = self.0.clone();
        if texts.len() > MAX_WARNING_HEADERS {
            let left_out = texts.len() - (MAX_WARNING_HEADERS - 1);
            texts.truncate(MAX_WARNING_HEADERS - 1);
            texts.push(format!("{left_out} more warnings left out"));
        }
        axum::response::AppendHeaders(
            texts
                .iter()
                .filter_map(|w| {
                    let text = format!("299 - {}", quote(w));
                    Some((
                        HeaderName::from_static("warning"),
                        HeaderValue::from_str(&text).ok()?,
                    ))
                })
                .collect(),
        )
    }
}

/// `text` as a quoted string of printable ASCII: `"` and `\` escaped, other characters as
/// `\u{…}`, cut at [`MAX_WARNING_CHARS`].
fn quote(text: &str) -> String {
    let mut q = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == MAX_WARNING_CHARS {
            q.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            ' '..='~' => q.push(c),
            _ => q.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    q.push('"');
    q
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
pub fn strip_unknown(info: &ResourceInfo, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let kind = info.kind;
    let known = match registry::resource(info).typed_view(obj) {
        Ok(known) => known,
        // Refused here, not later: a part that does not decode (a main-resource write's
        // `status`, say) may be replaced by the stored one before validation, and the unknown
        // fields around it would then be stored.
        Err(why) => {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"v1\" cannot be handled as a {kind}: {why}"
            )))
        }
    };
    let mut found = Vec::new();
    prune(obj, &known, "", &mut found);
    Ok(found)
}

/// Applies `directive` to an object about to be written: unknown fields refused, or dropped
/// with warnings, or dropped.
pub fn check(
    info: &ResourceInfo,
    obj: &mut Value,
    directive: Directive,
) -> Result<Warnings, ApiError> {
    let unknown = strip_unknown(info, obj)?;
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

    #[test]
    fn warnings_are_bounded_and_always_valid_headers() {
        let many = Warnings(
            (0..500)
                .map(|i| format!("unknown field \"x{i}\\é\n\""))
                .collect(),
        );
        let headers = many.headers().0;
        assert_eq!(headers.len(), MAX_WARNING_HEADERS);
        assert_eq!(headers[0].1, r#"299 - "unknown field \"x0\\\u{e9}\u{a}\"""#);
        assert_eq!(headers[15].1, r#"299 - "485 more warnings left out""#);
    }
    use serde_json::json;

    #[test]
    fn an_undecodable_body_is_refused_naming_the_field() {
        let info = crate::registry::lookup("pods").unwrap();
        let mut pod = json!({"metadata": {"name": "a"}, "spec": {"containers": []},
                             "status": {"conditions": "no"}, "zz": 1});
        let err = check(info, &mut pod, Directive::Ignore).unwrap_err();
        assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            err.message.contains("status.conditions: invalid type"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1, "resources": {"requests": {"cpu": "1"}}}], "extra": {"a": 1}}});
        let found = strip_unknown(crate::registry::lookup("pods").unwrap(), &mut pod).unwrap();
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
