//! Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`), read as the JSON
//! object they encode, for the kinds whose typed clients send them: kubectl's `create
//! rolebinding`, `create role` and `auth can-i` use client-go's typed clients, which encode
//! built-in kinds in protobuf and do not fall back to JSON when refused.
//!
//! The envelope is the magic `k8s\0` and a `runtime.Unknown` (`typeMeta` 1, `raw` 2,
//! `contentEncoding` 3, `contentType` 4); `raw` is the object's message, read here from a table
//! of its fields (number, JSON name, type) taken from Kubernetes' `generated.proto`. Fields not
//! in the table are skipped; empty strings, zero numbers, false and Go's zero time are omitted,
//! as the JSON encoding's `omitempty` would. Untrusted input: every length is checked against
//! what remains, nesting is bounded, and a kind without a table is an error naming it.

use serde_json::{Map, Value};

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
/// Messages nest at most this deep (the deepest table nests 4).
const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// `meta/v1` `Time` (`seconds` 1, `nanos` 2) as RFC 3339.
    Time,
    /// `map<string, string>` (entries `key` 1, `value` 2).
    Map,
    Msg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

use Ty::*;

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Str),
    f(3, "name", Str),
    f(4, "uid", Str),
    f(5, "apiVersion", Str),
    f(6, "controller", Bool),
    f(7, "blockOwnerDeletion", Bool),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Str),
    f(2, "generateName", Str),
    f(3, "namespace", Str),
    f(5, "uid", Str),
    f(6, "resourceVersion", Str),
    f(7, "generation", Int),
    f(8, "creationTimestamp", Time),
    f(9, "deletionTimestamp", Time),
    f(10, "deletionGracePeriodSeconds", Int),
    f(11, "labels", Map),
    f(12, "annotations", Map),
    rep(13, "ownerReferences", Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Str),
];
const POLICY_RULE: &[Field] = &[
    rep(1, "verbs", Str),
    rep(2, "apiGroups", Str),
    rep(3, "resources", Str),
    rep(4, "resourceNames", Str),
    rep(5, "nonResourceURLs", Str),
];
const ROLE: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    rep(2, "rules", Msg(POLICY_RULE)),
];
const SUBJECT: &[Field] = &[
    f(1, "kind", Str),
    f(2, "apiGroup", Str),
    f(3, "name", Str),
    f(4, "namespace", Str),
];
const ROLE_REF: &[Field] = &[f(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)];
const BINDING: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    rep(2, "subjects", Msg(SUBJECT)),
    f(3, "roleRef", Msg(ROLE_REF)),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Str),
    f(2, "verb", Str),
    f(3, "group", Str),
    f(4, "version", Str),
    f(5, "resource", Str),
    f(6, "subresource", Str),
    f(7, "name", Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Str), f(2, "verb", Str)];
const REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    f(2, "spec", Msg(REVIEW_SPEC)),
];
const NAMESPACE: &[Field] = &[f(1, "metadata", Msg(OBJECT_META))];

/// The kinds read from protobuf: (apiVersion, kind, table).
const KINDS: &[(&str, &str, &[Field])] = &[
    ("rbac.authorization.k8s.io/v1", "Role", ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", BINDING),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        BINDING,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        SELF_SUBJECT_ACCESS_REVIEW,
    ),
    ("v1", "Namespace", NAMESPACE),
];

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a well-formed envelope or message.
    Malformed(String),
    /// A well-formed envelope of a kind not read from protobuf (send it as JSON).
    Unsupported(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Malformed(why) => write!(f, "the protobuf body is malformed: {why}"),
            Error::Unsupported(kind) => write!(
                f,
                "{kind} is not accepted as protobuf ({MEDIA_TYPE}); send it as application/json"
            ),
        }
    }
}

fn malformed(why: &str) -> Error {
    Error::Malformed(why.to_string())
}

/// The JSON object a protobuf body encodes.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("it does not start with the k8s magic"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for field in Reader(rest) {
        match field? {
            (1, Wire::Len(type_meta)) => {
                for tf in Reader(type_meta) {
                    match tf? {
                        (1, Wire::Len(v)) => api_version = utf8(v)?,
                        (2, Wire::Len(k)) => kind = utf8(k)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(bytes)) => raw = Some(bytes),
            (3, Wire::Len(encoding)) if !encoding.is_empty() => {
                return Err(malformed("a content encoding is not supported"))
            }
            _ => {}
        }
    }
    let table = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, t)| *t)
        .ok_or_else(|| Error::Unsupported(format!("{api_version} {kind}")))?;
    let mut obj = message(raw.unwrap_or_default(), table, 0)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

fn utf8(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

fn message(bytes: &[u8], table: &[Field], depth: usize) -> Result<Map<String, Value>, Error> {
    if depth > MAX_DEPTH {
        return Err(malformed("messages nest too deep"));
    }
    let mut out = Map::new();
    for field in Reader(bytes) {
        let (num, wire) = field?;
        let Some(spec) = table.iter().find(|s| s.num == num) else {
            continue;
        };
        let value = match (spec.ty, wire) {
            (Str, Wire::Len(b)) => Value::String(utf8(b)?),
            (Int, Wire::Varint(v)) => Value::from(v as i64),
            (Bool, Wire::Varint(v)) => Value::Bool(v != 0),
            (Time, Wire::Len(b)) => time(b)?,
            (Msg(inner), Wire::Len(b)) => Value::Object(message(b, inner, depth + 1)?),
            (Map, Wire::Len(b)) => {
                let (mut key, mut value) = (String::new(), String::new());
                for entry in Reader(b) {
                    match entry? {
                        (1, Wire::Len(k)) => key = utf8(k)?,
                        (2, Wire::Len(v)) => value = utf8(v)?,
                        _ => {}
                    }
                }
                let map = out
                    .entry(spec.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(key, Value::String(value));
                }
                continue;
            }
            _ => {
                return Err(Error::Malformed(format!(
                    "{} has the wrong wire type",
                    spec.name
                )))
            }
        };
        if spec.repeated {
            let list = out
                .entry(spec.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.push(value);
            }
        } else if !is_empty(&value) {
            out.insert(spec.name.into(), value);
        }
    }
    Ok(out)
}

/// What `omitempty` leaves out of the JSON encoding.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

/// `Time` as RFC 3339; Go's zero time (year 1) is `null`, as in JSON.
fn time(bytes: &[u8]) -> Result<Value, Error> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for field in Reader(bytes) {
        match field? {
            (1, Wire::Varint(s)) => seconds = s as i64,
            (2, Wire::Varint(n)) => nanos = n as i64,
            _ => {}
        }
    }
    const GO_ZERO: i64 = -62_135_596_800;
    if seconds == GO_ZERO || (seconds == 0 && nanos == 0) {
        return Ok(Value::Null);
    }
    let t = k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map_err(|_| malformed("a time is out of range"))?;
    Ok(Value::String(t.to_string()))
}

/// A field's payload.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of a message, in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .0
                .split_first()
                .ok_or_else(|| malformed("a varint is cut short"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a varint is too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(malformed("a length is past the end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), Error> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| malformed("a length is too large"))?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(malformed("an unsupported wire type")),
        };
        Ok((key >> 3, wire))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // One error ends the message.
            self.0 = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(num << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())].concat();
        [
            MAGIC.to_vec(),
            bytes(1, &type_meta),
            bytes(2, raw),
            bytes(3, b""),
            bytes(4, b""),
        ]
        .concat()
    }

    #[test]
    fn a_role_binding_reads_as_its_json() {
        let meta = [
            bytes(1, b"vera-view"),
            bytes(3, b"default"),
            bytes(11, &[bytes(1, b"app"), bytes(2, b"web")].concat()),
            bytes(8, &[]),
        ]
        .concat();
        let subject = [
            bytes(1, b"User"),
            bytes(2, b"rbac.authorization.k8s.io"),
            bytes(3, b"vera"),
            bytes(4, b""),
        ]
        .concat();
        let role_ref = [
            bytes(1, b"rbac.authorization.k8s.io"),
            bytes(2, b"ClusterRole"),
            bytes(3, b"view"),
        ]
        .concat();
        let raw = [
            bytes(1, &meta),
            bytes(2, &subject),
            bytes(3, &role_ref),
            bytes(99, b"unknown"),
        ]
        .concat();
        let obj = decode(&envelope(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            &raw,
        ))
        .unwrap();
        assert_eq!(
            obj,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "vera-view", "namespace": "default", "labels": {"app": "web"}},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "vera"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            })
        );
        // A rule's apiGroups keep the core group's empty string.
        let rule = [bytes(1, b"get"), bytes(2, b""), bytes(3, b"pods")].concat();
        let role = decode(&envelope(
            "rbac.authorization.k8s.io/v1",
            "Role",
            &bytes(2, &rule),
        ))
        .unwrap();
        assert_eq!(
            role["rules"],
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])
        );
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(matches!(decode(b"{}"), Err(Error::Malformed(_))));
        assert!(matches!(
            decode(&envelope("v1", "Pod", b"")),
            Err(Error::Unsupported(k)) if k == "v1 Pod"
        ));
        let mut cut = envelope(
            "rbac.authorization.k8s.io/v1",
            "Role",
            &bytes(1, &bytes(1, b"x")),
        );
        cut.truncate(cut.len() - 5);
        assert!(matches!(decode(&cut), Err(Error::Malformed(_))));
        // A length far past the end.
        let mut huge = MAGIC.to_vec();
        huge.extend([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&huge), Err(Error::Malformed(_))));
        // Deep nesting of a field the table does not know is skipped, not followed.
        let mut deep = b"x".to_vec();
        for _ in 0..1000 {
            deep = bytes(1, &deep);
        }
        let _ = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &deep));
    }
}
