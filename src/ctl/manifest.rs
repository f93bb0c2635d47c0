//! Resource names as people type them, and manifest files: JSON or YAML, several documents
//! per file, `List`s, stdin.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_json::Value;

use super::client::enc;
use crate::registry::{self, resources, ResourceInfo};

/// The resource a word names: plural, singular, short name or kind, in any case
/// (`pods`, `pod`, `po`, `Pod`).
pub fn resolve(word: &str) -> anyhow::Result<&'static ResourceInfo> {
    let w = word.to_ascii_lowercase();
    resources()
        .find(|r| {
            r.plural == w
                || r.singular == w
                || r.short_names.contains(&w.as_str())
                || r.kind.eq_ignore_ascii_case(&w)
        })
        .ok_or_else(|| anyhow!("the server doesn't have a resource type {word:?}"))
}

/// The resource of an object's `kind`.
pub use crate::registry::by_kind;

/// `/api/v1/[namespaces/NS/]PLURAL` (`/apis/GROUP/VERSION/…` for the other groups); `ns` `None` for cluster-scoped resources or every
/// namespace.
pub fn collection_path(info: &ResourceInfo, ns: Option<&str>) -> String {
    match (info.namespaced, ns) {
        (true, Some(ns)) => format!(
            "{}/namespaces/{}/{}",
            info.base_path(),
            enc(ns),
            info.plural
        ),
        _ => format!("{}/{}", info.base_path(), info.plural),
    }
}

/// The path of one object.
pub fn object_path(info: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
    format!("{}/{}", collection_path(info, ns), enc(name))
}

/// One object read from a manifest, with where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source: String,
    /// The object as core/v1 (a v1beta1 object converted as the masters convert it).
    pub object: Value,
    /// The file's own v1beta1 object, if it was one: created through `/api/v1beta1`, as
    /// kubecfg did, so the seed's lenient ids (`mysiteController`) stay valid.
    pub v1beta1: Option<Value>,
}

impl Manifest {
    /// Where and what to POST to create it: the v1beta1 collection with the file's own object
    /// for a v1beta1 manifest (converted, it names the namespace `default`, v1beta1's only
    /// one, so [`Manifest::namespace`] already refused any other), else the core/v1
    /// collection with the object.
    pub fn create_request(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
    ) -> anyhow::Result<(String, &Value)> {
        match &self.v1beta1 {
            Some(original) => {
                let collection = v1beta1_collection(info)
                    .ok_or_else(|| anyhow!("{} cannot be created through v1beta1", info.plural))?;
                Ok((format!("/api/v1beta1/{collection}"), original))
            }
            None => Ok((collection_path(info, ns), &self.object)),
        }
    }

    /// Its resource, checking `apiVersion` and `kind`.
    pub fn info(&self) -> anyhow::Result<&'static ResourceInfo> {
        let kind = self.object["kind"].as_str().unwrap_or("");
        let version = self.object["apiVersion"].as_str().unwrap_or("");
        if kind.is_empty() {
            bail!("error validating {:?}: kind not set", self.source);
        }
        if version.is_empty() {
            bail!("error validating {:?}: apiVersion not set", self.source);
        }
        match by_kind(kind) {
            Some(info) if version == "v1" => Ok(info),
            _ => bail!(
                "resource mapping not found for name: {:?} from {:?}: no matches for kind {kind:?} in version {version:?}",
                self.name().unwrap_or(""),
                self.source
            ),
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
    }

    /// The namespace to use: the object's own, else the command line's (`-n`, the kubeconfig's,
    /// `default`). An explicit `-n` that contradicts the object is an error, as in kubectl.
    pub fn namespace(
        &self,
        info: &ResourceInfo,
        default: &str,
        explicit: bool,
    ) -> anyhow::Result<Option<String>> {
        if !info.namespaced {
            return Ok(None);
        }
        match self.object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            Some(own) if explicit && own != default => bail!(
                "the namespace from the provided object {own:?} does not match the namespace {default:?}. You must pass '--namespace={own}' to perform this operation."
            ),
            Some(own) => Ok(Some(own.to_string())),
            None => Ok(Some(default.to_string())),
        }
    }
}

/// Reads every object of `-f` arguments: files, directories (their `.json`, `.yaml` and
/// `.yml` files, sorted), or `-` for stdin.
pub fn read_all(paths: &[String]) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read stdin")?;
            out.extend(manifests("STDIN", &text)?);
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("read {p}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "json" | "yaml" | "yml"))
                })
                .collect();
            files.sort();
            for f in files {
                let text =
                    std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
                out.extend(manifests(&f.display().to_string(), &text)?);
            }
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("the path {p:?} does not exist or cannot be read"))?;
            out.extend(manifests(p, &text)?);
        }
    }
    if out.is_empty() {
        bail!("no objects passed to the command");
    }
    Ok(out)
}

/// The objects in one file's text (the seed's v1beta1 objects converted to v1).
pub fn manifests(source: &str, text: &str) -> anyhow::Result<Vec<Manifest>> {
    parse_documents(text)
        .with_context(|| format!("error parsing {source}"))?
        .into_iter()
        .map(|object| {
            let v1beta1 = (object["apiVersion"] == "v1beta1").then(|| object.clone());
            Ok(Manifest {
                source: source.to_string(),
                object: from_v1beta1(object)
                    .with_context(|| format!("error converting {source} from v1beta1"))?,
                v1beta1,
            })
        })
        .collect()
}

/// The v1beta1 collection that creates a resource's objects (the seed's API: no namespaces,
/// camel-case names, nodes as minions).
fn v1beta1_collection(info: &ResourceInfo) -> Option<&'static str> {
    let kind = registry::resource(info);
    kind.v1beta1_writable()
        .then(|| kind.v1beta1_names().map(|(collection, _)| collection))
        .flatten()
}

/// A v1beta1 object (the seed's manifests: `id`, `desiredState`…) as v1, converted as the
/// masters convert it; other objects as they are.
fn from_v1beta1(object: Value) -> anyhow::Result<Value> {
    if object["apiVersion"] != "v1beta1" {
        return Ok(object);
    }
    let v1beta1_kind = object["kind"].as_str().unwrap_or("");
    let Some(kind) = registry::kinds::by_v1beta1(|_, kind| kind == v1beta1_kind) else {
        return Ok(object);
    };
    let Some(converted) = kind.from_v1beta1(&object) else {
        return Ok(object);
    };
    let mut v1 = converted?;
    v1["apiVersion"] = "v1".into();
    v1["kind"] = kind.info().kind.into();
    Ok(v1)
}

/// Parses JSON (one or more concatenated values) or YAML (documents separated by `---`) into
/// objects; empty documents are skipped and `List`s are flattened into their items.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut docs = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, v) in serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .enumerate()
        {
            docs.push(v.with_context(|| format!("JSON value {}", i + 1))?);
        }
    } else {
        for (i, doc) in serde_norway::Deserializer::from_str(trimmed).enumerate() {
            docs.push(Value::deserialize(doc).with_context(|| format!("YAML document {}", i + 1))?);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        flatten(d, &mut out)?;
    }
    Ok(out)
}

fn flatten(v: Value, out: &mut Vec<Value>) -> anyhow::Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => items.into_iter().try_for_each(|i| flatten(i, out)),
        Value::Object(ref m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.get("items").is_some_and(Value::is_array) =>
        {
            let Value::Object(mut m) = v else {
                unreachable!()
            };
            let Some(Value::Array(items)) = m.remove("items") else {
                unreachable!()
            };
            items.into_iter().try_for_each(|i| flatten(i, out))
        }
        Value::Object(_) => {
            out.push(v);
            Ok(())
        }
        other => bail!("expected an object, found {other}"),
    }
}

/// `apply`'s merge: `desired` over `current` (RFC 7386: maps merge recursively, everything
/// else is replaced, `null` removes), keeping the current `resourceVersion` as the update's
/// precondition.
pub fn merged(current: &Value, desired: &Value) -> Value {
    let mut desired = desired.clone();
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let mut out = current.clone();
    json_patch::merge(&mut out, &desired);
    out
}

/// Whether `current` already has every field `desired` sets (a `null` field: absent), lists
/// element by element: then `apply` has nothing to change. Fields the server filled in (defaults,
/// status) do not count; `metadata.resourceVersion` is ignored.
pub fn already_applied(current: &Value, desired: &Value) -> bool {
    fn contains(cur: Option<&Value>, want: &Value, top: bool) -> bool {
        match (cur, want) {
            (c, Value::Null) => c.is_none_or(Value::is_null),
            (Some(Value::Object(c)), Value::Object(w)) => w.iter().all(|(k, v)| {
                (top && k == "metadata" && v.is_object() && {
                    let mut meta = v.clone();
                    meta.as_object_mut().map(|m| m.remove("resourceVersion"));
                    contains(c.get(k), &meta, false)
                }) || (!(top && k == "metadata") && contains(c.get(k), v, false))
            }),
            (Some(Value::Array(c)), Value::Array(w)) => {
                c.len() == w.len() && c.iter().zip(w).all(|(c, w)| contains(Some(c), w, false))
            }
            (Some(c), w) => c == w,
            (None, _) => false,
        }
    }
    contains(Some(current), desired, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_manifests_read_as_v1() {
        for (file, kind, name) in [
            ("pod.json", "Pod", "mysite"),
            (
                "replication-controller.json",
                "ReplicationController",
                "mysiteController",
            ),
            ("service.json", "Service", "mysite"),
        ] {
            let path = format!("{}/examples/seed/{file}", env!("CARGO_MANIFEST_DIR"));
            let ms = manifests(file, &std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(ms.len(), 1);
            let info = ms[0].info().unwrap();
            assert_eq!(info.kind, kind);
            assert_eq!(ms[0].name(), Some(name));
            // Created through v1beta1, with the file's own object.
            let (path, body) = ms[0].create_request(info, Some("default")).unwrap();
            assert!(path.starts_with("/api/v1beta1/"), "{path}");
            assert_eq!(body["id"], name);
        }
    }

    #[test]
    fn resource_words() {
        for w in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(resolve(w).unwrap().plural, "pods", "{w}");
        }
        assert_eq!(resolve("rc").unwrap().plural, "replicationcontrollers");
        assert_eq!(resolve("svc").unwrap().plural, "services");
        assert_eq!(resolve("ep").unwrap().plural, "endpoints");
        assert_eq!(resolve("no").unwrap().plural, "nodes");
        assert_eq!(resolve("ns").unwrap().plural, "namespaces");
        assert_eq!(resolve("ev").unwrap().plural, "events");
        let e = resolve("widgets").unwrap_err().to_string();
        assert_eq!(e, "the server doesn't have a resource type \"widgets\"");
    }

    #[test]
    fn paths() {
        let pods = resolve("po").unwrap();
        assert_eq!(
            object_path(pods, Some("default"), "web"),
            "/api/v1/namespaces/default/pods/web"
        );
        assert_eq!(collection_path(pods, None), "/api/v1/pods");
        let nodes = resolve("no").unwrap();
        assert_eq!(
            object_path(nodes, Some("default"), "n1"),
            "/api/v1/nodes/n1"
        );
    }

    #[test]
    fn yaml_documents_and_lists() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\n# nothing\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n- {apiVersion: v1, kind: Pod, metadata: {name: c}}\n---\n";
        let docs = parse_documents(text).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d["metadata"]["name"].clone()).collect();
        assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
        assert!(parse_documents("a: [").is_err());
        assert!(parse_documents("- 1\n- 2\n").is_err(), "not objects");
    }

    #[test]
    fn json_documents() {
        let docs = parse_documents("{\"kind\": \"Pod\"}\n{\"kind\": \"Service\"}").unwrap();
        assert_eq!(docs.len(), 2);
        let docs = parse_documents("[{\"kind\": \"Pod\"}]").unwrap();
        assert_eq!(docs.len(), 1);
        assert!(parse_documents("{\"kind\": ").is_err());
    }

    #[test]
    fn manifest_checks() {
        let m = |v: Value| Manifest {
            source: "f".into(),
            object: v,
            v1beta1: None,
        };
        assert!(m(json!({"apiVersion": "v1", "kind": "Pod"})).info().is_ok());
        assert!(m(json!({"apiVersion": "apps/v1", "kind": "Deployment"}))
            .info()
            .is_err());
        assert!(m(json!({"kind": "Pod"})).info().is_err());
        let pods = resolve("po").unwrap();
        let own = m(json!({"metadata": {"namespace": "a"}}));
        assert_eq!(
            own.namespace(pods, "b", false).unwrap().as_deref(),
            Some("a")
        );
        assert!(own.namespace(pods, "b", true).is_err());
        assert_eq!(
            m(json!({})).namespace(pods, "b", false).unwrap().as_deref(),
            Some("b")
        );
    }

    #[test]
    fn apply_merge() {
        let current = json!({"metadata": {"name": "a", "resourceVersion": "7", "labels": {"x": "1"}},
                             "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c"}]}}},
                             "status": {"replicas": 1}});
        let desired = json!({"metadata": {"name": "a", "resourceVersion": "3", "labels": {"y": "2"}},
                             "spec": {"replicas": 3}});
        let m = merged(&current, &desired);
        assert_eq!(m["metadata"]["resourceVersion"], "7");
        assert_eq!(m["metadata"]["labels"], json!({"x": "1", "y": "2"}));
        assert_eq!(m["spec"]["replicas"], 3);
        assert_eq!(m["spec"]["template"], current["spec"]["template"]);
        assert_eq!(merged(&current, &json!({"spec": {"replicas": 1}})), current);
    }

    #[test]
    fn applied_already() {
        let current = json!({"metadata": {"name": "a", "resourceVersion": "7", "uid": "u"},
                             "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
        let same = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {"ports": [{"port": 80}]}});
        assert!(already_applied(&current, &same));
        let other = json!({"spec": {"ports": [{"port": 8080}]}});
        assert!(!already_applied(&current, &other));
        let more = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!already_applied(&current, &more));
        assert!(!already_applied(
            &current,
            &json!({"metadata": {"labels": {"x": "1"}}})
        ));
        assert!(already_applied(
            &current,
            &json!({"metadata": {"labels": null}})
        ));
        assert!(!already_applied(
            &current,
            &json!({"metadata": {"uid": null}})
        ));
    }
}
