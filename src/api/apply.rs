//! Server-side apply (`application/apply-patch+yaml`, `fieldManager`, `force`), with field
//! ownership among appliers.
//!
//! The applied configuration is merged into the live object with core/v1's list keys (as a
//! strategic merge); each applier's fields are recorded in `metadata.managedFields`
//! (`operation: Apply`, `fieldsType: FieldsV1`). Applying a value to a field another applier
//! owns, with a different value, is a 409 `Conflict` listing the fields (`force=true` takes
//! them over); fields an applier stops applying, and nobody else owns, are removed. Writes
//! other than apply are not recorded as managers. The body must be JSON (YAML's JSON subset),
//! which is what kubectl sends.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::smp::{self, ListStrategy, Strategies};
use super::ApiError;
use crate::registry::{self, ResourceInfo};

/// One field: path elements as FieldsV1 writes them (`f:spec`, `k:{"name":"web"}`, `v:"x"`,
/// `.` for a list element itself).
type FieldPath = Vec<String>;

/// Fields never owned: identity and the server's own.
fn untracked(path: &[&str]) -> bool {
    matches!(
        path,
        ["apiVersion"]
            | ["kind"]
            | ["status", ..]
            | [
                "metadata",
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "selfLink"
            ]
    )
}

/// The fields `v` sets (its leaves), below `fp` (FieldsV1) at `names` (field names only).
fn collect<'a>(
    kind: &Strategies,
    v: &'a Value,
    names: &mut Vec<&'a str>,
    fp: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                names.push(k);
                if !untracked(names) {
                    fp.push(format!("f:{k}"));
                    collect(kind, child, names, fp, out);
                    fp.pop();
                }
                names.pop();
            }
        }
        Value::Array(items) => match smp::list_strategy(kind, names) {
            ListStrategy::MergeKey(key) => {
                for item in items {
                    let Some(id) = item.get(key) else { continue };
                    fp.push(format!("k:{}", json!({ key: id })));
                    fp.push(".".into());
                    out.insert(fp.clone());
                    fp.pop();
                    collect(kind, item, names, fp, out);
                    fp.pop();
                }
            }
            ListStrategy::Primitive => {
                for item in items {
                    fp.push(format!("v:{item}"));
                    out.insert(fp.clone());
                    fp.pop();
                }
            }
            ListStrategy::Atomic => {
                out.insert(fp.clone());
            }
        },
        _ => {
            out.insert(fp.clone());
        }
    }
}

/// The fields an applied configuration sets.
pub fn fields_of(kind: &Strategies, applied: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect(kind, applied, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

/// FieldsV1 JSON of a set of fields.
pub fn encode(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for pe in path {
            node = node
                .entry(pe.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

/// The set of fields in FieldsV1 JSON.
pub fn decode(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Does list element `item` match the key of a `k:{...}` path element?
fn key_matches(item: &Value, key: &str) -> bool {
    let Ok(Value::Object(want)) = serde_json::from_str::<Value>(key) else {
        return false;
    };
    want.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// The value at a field path.
fn get<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    let Some((pe, rest)) = path.split_first() else {
        return Some(v);
    };
    if pe == "." {
        return Some(v);
    }
    let next = if let Some(f) = pe.strip_prefix("f:") {
        v.get(f)?
    } else if let Some(k) = pe.strip_prefix("k:") {
        v.as_array()?.iter().find(|i| key_matches(i, k))?
    } else if let Some(x) = pe.strip_prefix("v:") {
        let want: Value = serde_json::from_str(x).ok()?;
        v.as_array()?.iter().find(|i| **i == want)?
    } else {
        return None;
    };
    get(next, rest)
}

/// Removes the field at a path (a list element when the path ends in it or in `.`).
fn remove(v: &mut Value, path: &[String]) {
    let Some((pe, rest)) = path.split_first() else {
        return;
    };
    let last = rest.is_empty() || rest == ["."];
    if let Some(f) = pe.strip_prefix("f:") {
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(f);
        } else if let Some(child) = m.get_mut(f) {
            remove(child, rest);
        }
    } else if let Some(k) = pe.strip_prefix("k:") {
        let Some(items) = v.as_array_mut() else {
            return;
        };
        if last {
            items.retain(|i| !key_matches(i, k));
        } else if let Some(item) = items.iter_mut().find(|i| key_matches(i, k)) {
            remove(item, rest);
        }
    } else if let Some(x) = pe.strip_prefix("v:") {
        if let (Some(items), Ok(want)) = (v.as_array_mut(), serde_json::from_str::<Value>(x)) {
            items.retain(|i| *i != want);
        }
    }
}

/// `.spec.containers[name="web"].image`, as the API server names a conflicting field.
fn display(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(x) = pe.strip_prefix("v:") {
            s.push_str(&format!("[={x}]"));
        }
    }
    s
}

/// The `managedFields` entries of an object.
fn entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn entry(manager: &str, fields: &BTreeSet<FieldPath>) -> Value {
    json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": "v1",
        "time": crate::registry::object::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(fields),
    })
}

/// The object a first apply creates: the configuration, with its manager's fields.
pub fn create(kind: &Strategies, applied: &Value, manager: &str) -> Value {
    let mut obj = applied.clone();
    let fields = fields_of(kind, applied);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), json!([entry(manager, &fields)]));
    }
    obj
}

/// Applies `applied` for `manager` to the live object `live`.
pub fn merge(
    info: &ResourceInfo,
    live: &mut Value,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(), ApiError> {
    let kind = registry::resource(info).patch_strategies();
    let new_fields = fields_of(kind, applied);
    let mut managers = entries(live);
    let mut previous = BTreeSet::new();
    let mut others = BTreeSet::new();
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for e in managers.iter_mut() {
        let name = e
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let owned = decode(e.get("fieldsV1").unwrap_or(&Value::Null));
        if name == manager && e.get("operation").and_then(Value::as_str) == Some("Apply") {
            previous = owned;
            continue;
        }
        let mut kept = owned.clone();
        for f in owned.intersection(&new_fields) {
            if f.last().is_some_and(|l| l == ".") {
                continue;
            }
            if get(live, f) != get(applied, f) {
                if force {
                    kept.remove(f);
                } else {
                    conflicts.push((name.clone(), f.clone()));
                }
            }
        }
        e["fieldsV1"] = encode(&kept);
        others.extend(kept);
    }
    if !conflicts.is_empty() {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?} using v1"), "field": display(f)}))
            .collect();
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with {m:?} using v1: {}", display(f)))
            .collect();
        let n = conflicts.len();
        let message = format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            listed.join("\n")
        );
        return Err(ApiError::conflict(message).with_causes(causes));
    }
    for gone in previous.difference(&new_fields) {
        if !others.contains(gone) && get(applied, gone).is_none() {
            remove(live, gone);
        }
    }
    smp::apply(kind, live, &strip_nulls(applied)).map_err(ApiError::bad_request)?;
    managers.retain(|e| {
        let mine = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply");
        let empty = e
            .get("fieldsV1")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        !mine && !empty
    });
    managers.push(entry(manager, &new_fields));
    if let Some(meta) = live.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(managers));
    }
    Ok(())
}

/// An applied configuration's explicit nulls mean "unset", not "delete" as in a merge patch:
/// they are dropped before merging.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !v.is_null() && !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r", "labels": {"a": "1"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_round_trip_through_fieldsv1() {
        let f = fields_of(
            registry::resource(registry::lookup("replicationcontrollers").unwrap())
                .patch_strategies(),
            &rc(2, "nginx"),
        );
        assert!(f.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        assert!(f
            .iter()
            .any(|p| p.iter().any(|pe| pe == r#"k:{"name":"web"}"#)));
        assert!(!f
            .iter()
            .any(|p| p == &vec!["f:metadata".to_string(), "f:name".to_string()]));
        assert_eq!(decode(&encode(&f)), f);
    }

    #[test]
    fn conflicts_force_and_removal() {
        let info = crate::registry::lookup("replicationcontrollers").unwrap();
        let strategies = registry::resource(info).patch_strategies();
        let mut live = create(strategies, &rc(2, "nginx"), "a");
        // Same values: shared, no conflict.
        merge(info, &mut live, &rc(2, "nginx"), "b", false).unwrap();
        // A different value of a field "a" owns.
        let err = merge(info, &mut live, &rc(3, "nginx"), "b", false).unwrap_err();
        assert_eq!(err.code, axum::http::StatusCode::CONFLICT);
        assert!(
            err.message
                .contains(r#"conflict with "a" using v1: .spec.replicas"#),
            "{}",
            err.message
        );
        merge(info, &mut live, &rc(3, "nginx"), "b", true).unwrap();
        assert_eq!(live["spec"]["replicas"], 3);
        // "a" stops applying the labels: nobody else owns them... but "b" does, so they stay.
        let mut without = rc(3, "nginx");
        without["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        merge(info, &mut live, &without, "a", false).unwrap();
        assert_eq!(live["metadata"]["labels"]["a"], "1");
        merge(info, &mut live, &without, "b", false).unwrap();
        assert!(
            live["metadata"]
                .get("labels")
                .is_none_or(|l| l.get("a").is_none()),
            "{live}"
        );
    }
}
