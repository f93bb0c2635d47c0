//! What every kind's validation shares: `StatusCause`s and the `Invalid` error, names, label
//! and annotation maps, the size of metadata — the shape of Kubernetes' `apimachinery/pkg/api/
//! validation` over JSON.

use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::status::ApiError;

/// One validation failure, as a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

pub fn required(field: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: \"{value}\": {why}"),
    }
}

pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: \"{value}\""),
    }
}

pub fn forbidden(field: impl Into<String>, why: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {why}"),
    }
}

/// The `Invalid` (422) error for `causes`, worded as Kubernetes does.
pub fn invalid_error(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let joined = if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    };
    let message = format!("{} \"{}\" is invalid: {}", info.kind, name, joined);
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect();
    ApiError::new(http::StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
        .with_details(name, info.kind)
        .with_causes(causes)
}

/// How strictly names are checked: core/v1 follows Kubernetes (DNS-1123); v1beta1 accepts the
/// seed's mixed-case ids such as `mysiteController`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Dns1123,
    Lenient,
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_lenient_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A label or annotation key `[prefix/]name`, or a label value.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// What a kind's names may be, as the v1 API checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 label: at most 63 characters, no dots (namespaces, services).
    Label,
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// Anything that is one path segment: not `.` or `..`, no `/` or `%` (RBAC's kinds, whose
    /// default names hold colons: `system:node`).
    PathSegment,
}

fn is_path_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s != "." && s != ".." && !s.contains(['/', '%'])
}

pub fn validate_name(name: &str, names: Names, rule: NameRule, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(required("metadata.name"));
        return;
    }
    let ok = match (names, rule) {
        (_, NameRule::PathSegment) => is_path_segment(name),
        (Names::Lenient, _) => is_lenient_name(name),
        (Names::Dns1123, NameRule::Label) => is_dns1123_label(name),
        (Names::Dns1123, NameRule::Subdomain) => is_dns1123_subdomain(name),
    };
    if !ok {
        let why = match (names, rule) {
            (_, NameRule::PathSegment) => "may not be '.' or '..' and may not contain '/' or '%'",
            (Names::Lenient, _) => "must consist of alphanumeric characters, '-', '_' or '.', and start with an alphanumeric character",
            (Names::Dns1123, _) => "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        };
        causes.push(invalid("metadata.name", name, why));
    }
}

pub fn validate_string_map(
    map: Option<&Value>,
    field: &str,
    values_are_labels: bool,
    causes: &mut Vec<Cause>,
) {
    let Some(map) = map.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        if !is_qualified_name(k) {
            causes.push(invalid(format!("{field}"), k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (63 characters at most)"));
        }
        if values_are_labels && !v.as_str().is_some_and(is_label_value) {
            causes.push(invalid(format!("{field}"), v.as_str().unwrap_or(&v.to_string()), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (63 characters at most)"));
        }
    }
}

/// Largest total size of an object's annotations (keys and values), as Kubernetes'
/// `TotalAnnotationSizeLimitB`, and of its whole `metadata` as JSON. `managedFields` is left
/// out of the latter: server-side apply grows it with the object, which
/// `MAX_OBJECT_BYTES` (registry/mod.rs) bounds.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

fn too_long(field: &str, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: field.into(),
        message: format!("Too long: must have at most {max} bytes"),
    }
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).expect("counting never fails");
    c.0
}

pub fn validate_metadata_size(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return;
    };
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let total: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or_else(|| json_len(v), str::len))
            .sum();
        if total > MAX_METADATA_BYTES {
            causes.push(too_long("metadata.annotations", MAX_METADATA_BYTES));
            return;
        }
    }
    let total: usize = meta
        .iter()
        .filter(|(k, _)| *k != "managedFields")
        .map(|(k, v)| k.len() + json_len(v))
        .sum();
    if total > MAX_METADATA_BYTES {
        causes.push(too_long("metadata", MAX_METADATA_BYTES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(is_dns1123_subdomain("my-site.example"));
        assert!(!is_dns1123_subdomain("mysiteController"));
        assert!(is_lenient_name("mysiteController"));
        assert!(!is_lenient_name("-bad"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }
}
