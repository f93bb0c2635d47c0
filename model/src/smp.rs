//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl's client-side
//! apply, `edit` and `patch` send it for core kinds.
//!
//! Maps merge recursively and `null` deletes, as in a JSON merge patch; lists follow their
//! field's patch strategy in core/v1: merged by a key (`name` for containers, env, volumes;
//! `containerPort` for container ports; `port` for service ports; `mountPath` for volume mounts;
//! `type` for conditions and node addresses), merged as sets (`metadata.finalizers`), or
//! replaced whole (everything else). Directives: `$patch: replace|delete|merge` on a map or a
//! list element, `$setElementOrder/<list>`, `$retainKeys`, `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole (`x-kubernetes-list-type: atomic`, no patch strategy).
    Atomic,
    /// A list of maps merged by the value of this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set.
    Primitive,
}

/// What one kind adds to the list strategies every object shares (`metadata.finalizers` as a
/// set, `metadata.ownerReferences` by `uid`, `status.conditions` by `type`): where it holds a
/// pod spec, whose lists have core/v1's pod strategies, and its own lists merged by a key. Each
/// kind's file in the registry holds its own.
#[derive(Debug)]
pub struct Strategies {
    /// The path of its pod spec (`["spec"]` for a Pod, `["spec", "template", "spec"]` for a
    /// ReplicationController).
    pub pod_spec: Option<&'static [&'static str]>,
    /// Lists merged by a key: (path, key).
    pub merge_keys: &'static [(&'static [&'static str], &'static str)],
}

/// A kind with no list strategies of its own.
pub const PLAIN: Strategies = Strategies {
    pod_spec: None,
    merge_keys: &[],
};

/// The strategies of core/v1's kinds that have lists of their own (their registry files name
/// them; the tests and the fuzz target use the same).
pub mod core_v1 {
    use super::Strategies;

    pub const POD: Strategies = Strategies {
        pod_spec: Some(&["spec"]),
        merge_keys: &[(&["status", "podIPs"], "ip")],
    };
    pub const REPLICATION_CONTROLLER: Strategies = Strategies {
        pod_spec: Some(&["spec", "template", "spec"]),
        merge_keys: &[],
    };
    pub const SERVICE: Strategies = Strategies {
        pod_spec: None,
        merge_keys: &[(&["spec", "ports"], "port")],
    };
    pub const NODE: Strategies = Strategies {
        pod_spec: None,
        merge_keys: &[(&["status", "addresses"], "type")],
    };
}

/// The patch strategy of the list at `path` (field names, list positions left out) in an
/// object of a kind with strategies `kind`.
pub fn list_strategy(kind: &Strategies, path: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match path {
        [.., "metadata", "finalizers"] => return Primitive,
        [.., "metadata", "ownerReferences"] => return MergeKey("uid"),
        ["status", "conditions"] => return MergeKey("type"),
        _ => {}
    }
    let pod_spec = kind.pod_spec.and_then(|at| path.strip_prefix(at));
    if let Some(rel) = pod_spec {
        return match rel {
            ["containers" | "initContainers" | "ephemeralContainers"] => MergeKey("name"),
            ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
                MergeKey("name")
            }
            ["hostAliases"] => MergeKey("ip"),
            ["topologySpreadConstraints"] => MergeKey("topologyKey"),
            [_, "ports"] => MergeKey("containerPort"),
            [_, "env"] => MergeKey("name"),
            [_, "volumeMounts"] => MergeKey("mountPath"),
            [_, "volumeDevices"] => MergeKey("devicePath"),
            _ => Atomic,
        };
    }
    kind.merge_keys
        .iter()
        .find(|(at, _)| *at == path)
        .map_or(Atomic, |(_, key)| MergeKey(key))
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target`, an object of a kind with strategies `kind`.
pub fn apply(kind: &Strategies, target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    let mut path = Vec::new();
    if !merge_map(kind, t, p, &mut path)? {
        return Err("a strategic merge patch cannot delete the whole object".into());
    }
    Ok(())
}

/// Removes every directive (`$...` key) from a value, recursively.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Merges `patch` into `orig`; `false` when the patch deletes the map.
fn merge_map<'a>(
    kind: &Strategies,
    orig: &mut Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<bool, String> {
    match patch.get("$patch") {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(false),
        Some(Value::String(d)) if d == "replace" => {
            *orig = match clean(&Value::Object(patch.clone())) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            return Ok(true);
        }
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list of field names")?
            .iter()
            .map(|k| {
                k.as_str()
                    .ok_or("$retainKeys must be a list of field names")
            })
            .collect::<Result<_, _>>()?;
        orig.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.as_str());
        match v {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                let mut child = match orig.remove(k) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if merge_map(kind, &mut child, pm, path)? {
                    orig.insert(k.clone(), Value::Object(child));
                }
            }
            Value::Array(pl) => {
                let current = orig.remove(k);
                let merged = merge_list(kind, current, pl, path)?;
                orig.insert(k.clone(), merged);
            }
            scalar => {
                orig.insert(k.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM) {
            let gone = v.as_array().ok_or_else(|| format!("{k} must be a list"))?;
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                items.retain(|i| !gone.contains(i));
            }
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            let order = v.as_array().ok_or_else(|| format!("{k} must be a list"))?;
            path.push(field);
            let strategy = list_strategy(kind, path);
            path.pop();
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                reorder(items, order, strategy);
            }
        }
    }
    Ok(true)
}

/// The identity of a list element for ordering: its merge key's value, or itself.
fn identity<'v>(item: &'v Value, strategy: ListStrategy) -> Option<&'v Value> {
    match strategy {
        ListStrategy::MergeKey(key) => item.get(key),
        _ => Some(item),
    }
}

/// Puts the elements named in `order` first, in that order; the others follow as they were.
fn reorder(items: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let position = |item: &Value| -> usize {
        let id = identity(item, strategy);
        order
            .iter()
            .position(|o| identity(o, strategy) == id && id.is_some())
            .unwrap_or(usize::MAX)
    };
    let mut keyed: Vec<(usize, usize, Value)> = items
        .drain(..)
        .enumerate()
        .map(|(i, v)| (position(&v), i, v))
        .collect();
    keyed.sort_by_key(|(p, i, _)| (*p, *i));
    items.extend(keyed.into_iter().map(|(_, _, v)| v));
}

fn merge_list<'a>(
    kind: &Strategies,
    current: Option<Value>,
    patch: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<Value, String> {
    let strategy = list_strategy(kind, path);
    let mut items = match current {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let replace = patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || strategy == ListStrategy::Atomic {
        let kept = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(clean)
            .collect();
        return Ok(Value::Array(kept));
    }
    match strategy {
        ListStrategy::Atomic => unreachable!("handled above"),
        ListStrategy::Primitive => {
            for e in patch {
                if !items.contains(e) {
                    items.push(e.clone());
                }
            }
        }
        ListStrategy::MergeKey(key) => {
            for e in patch {
                let Value::Object(pm) = e else {
                    return Err(format!(
                        "{}: a list merged by {key:?} must hold maps, not {e}",
                        path.join(".")
                    ));
                };
                let id = pm.get(key);
                let directive = pm.get("$patch").and_then(Value::as_str);
                let Some(id) = id else {
                    if directive == Some("delete") && pm.len() == 1 {
                        return Err(format!(
                            "{}: $patch: delete needs the merge key {key:?}",
                            path.join(".")
                        ));
                    }
                    return Err(format!(
                        "map: {e} does not contain declared merge key: {key}"
                    ));
                };
                let found = items.iter().position(|i| i.get(key) == Some(id));
                if directive == Some("delete") {
                    items.retain(|i| i.get(key) != Some(id));
                    continue;
                }
                match found {
                    Some(at) => {
                        let mut m = match std::mem::take(&mut items[at]) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        if merge_map(kind, &mut m, pm, path)? {
                            items[at] = Value::Object(m);
                        } else {
                            items.remove(at);
                        }
                    }
                    None => {
                        let mut m = Map::new();
                        if merge_map(kind, &mut m, pm, path)? {
                            items.push(Value::Object(m));
                        }
                    }
                }
            }
        }
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::core_v1::{POD, REPLICATION_CONTROLLER as RC, SERVICE};

    fn patched(kind: &Strategies, mut obj: Value, patch: Value) -> Value {
        apply(kind, &mut obj, &patch).unwrap();
        obj
    }

    #[test]
    fn strategies_by_path() {
        assert_eq!(
            list_strategy(&POD, &["spec", "containers"]),
            ListStrategy::MergeKey("name")
        );
        assert_eq!(
            list_strategy(&RC, &["spec", "template", "spec", "containers", "ports"]),
            ListStrategy::MergeKey("containerPort")
        );
        assert_eq!(
            list_strategy(&SERVICE, &["spec", "ports"]),
            ListStrategy::MergeKey("port")
        );
        assert_eq!(
            list_strategy(&POD, &["spec", "tolerations"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy(&POD, &["metadata", "finalizers"]),
            ListStrategy::Primitive
        );
    }

    #[test]
    fn containers_merge_by_name_and_maps_merge() {
        let pod = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}});
        let out = patched(
            &POD,
            pod,
            json!({"metadata": {"labels": {"b": "2", "a": null}},
            "spec": {"containers": [{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 443}]}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let c = &out["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 443}])
        );
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn directives() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k"}], "volumes": [{"name": "v", "emptyDir": {}}]}, "metadata": {"finalizers": ["f1", "f2"]}});
        let out = patched(
            &POD,
            pod.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "y"}])
        );
        let out = patched(
            &POD,
            pod.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "z"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "y"}, {"name": "a", "image": "z"}])
        );
        let out = patched(
            &POD,
            pod.clone(),
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/d"}}])
        );
        let out = patched(
            &POD,
            pod.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"], "finalizers": ["f3"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f2", "f3"]));
        let out = patched(
            &POD,
            pod.clone(),
            json!({"spec": {"tolerations": [{"key": "j"}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "j"}]));
        let out = patched(
            &POD,
            pod.clone(),
            json!({"spec": {"containers": [{"name": "c", "image": "w"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "w"}])
        );
        let out = patched(
            &POD,
            pod.clone(),
            json!({"metadata": {"$patch": "replace", "name": "n"}}),
        );
        assert_eq!(out["metadata"], json!({"name": "n"}));
        let mut bad = pod.clone();
        assert!(apply(
            &POD,
            &mut bad,
            &json!({"spec": {"containers": [{"image": "no-name"}]}})
        )
        .is_err());
        assert!(apply(&POD, &mut bad, &json!({"$patch": "delete"})).is_err());
        assert!(apply(&POD, &mut bad, &json!([1])).is_err());
    }
}
