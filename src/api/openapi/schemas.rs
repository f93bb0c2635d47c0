//! The schemas of core/v1's document: every served kind, its list, and everything they
//! reference, as `components.schemas`.
//!
//! They come from k8s-openapi's `schemars` support, which carries the Kubernetes 1.37 schemas
//! and descriptions of the very types the registry decodes every body into, so the document
//! cannot drift from what the server accepts. Two things are added the way kube-apiserver's
//! own document has them: `x-kubernetes-group-version-kind` on every top-level kind (kubectl
//! finds a kind's schema by it, for `explain` and for field validation), and the `…List`
//! kinds, which k8s-openapi models as one generic type. `metadata` is not required, as
//! upstream: k8s-openapi requires it only because its structs hold it by value.

use k8s_openapi::api::autoscaling::v1 as autoscaling;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::registry::{self, resources, ResourceInfo};

/// The prefix of a meta/v1 schema name.
pub const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// The schema name of a served kind (`io.k8s.api.core.v1.Pod`,
/// `io.k8s.api.rbac.v1.Role`): the group's first label names its package, as in k8s-openapi;
/// keelson's own kinds are named in reverse domain order (`io.keelson.auth.v1.Token`).
pub fn kind_name(info: &ResourceInfo) -> String {
    named(info, info.kind)
}

/// The schema name of a kind's list (`io.k8s.api.core.v1.PodList`).
pub fn list_name(info: &ResourceInfo) -> String {
    named(info, &format!("{}List", info.kind))
}

fn named(info: &ResourceInfo, kind: &str) -> String {
    let package = match info.group {
        "" => "io.k8s.api.core".to_string(),
        group if group.ends_with(".k8s.io") => {
            format!("io.k8s.api.{}", group.split('.').next().unwrap_or(group))
        }
        // keelson's own groups, in reverse domain order (`io.keelson.auth`), as the kind's
        // typed struct names its schema.
        group => group.rsplit('.').collect::<Vec<_>>().join("."),
    };
    format!("{package}.{}.{kind}", info.version)
}

/// The schema name of `autoscaling/v1` `Scale`.
pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// A `$ref` to a component schema.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "version": version, "kind": kind}])
}

/// The list of a served kind, as kube-apiserver describes it.
fn list_schema(info: &ResourceInfo) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", info.kind, info.kind),
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "items": {"description": format!("List of {}.", info.plural), "type": "array", "items": reference(&kind_name(info))},
            "metadata": {"allOf": [reference(&format!("{META}.ListMeta"))], "description": "Standard list metadata."},
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": gvk(info.group, info.version, &format!("{}List", info.kind)),
    })
}

/// `components.schemas` of the core/v1 document.
pub fn components() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for kind in registry::kinds::KINDS {
        kind.add_schema(&mut generator);
    }
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<autoscaling::Scale>();
    let mut schemas = generator.take_definitions(true);

    for info in resources() {
        let schema = schemas
            .get_mut(&kind_name(info))
            .and_then(Value::as_object_mut)
            .expect("every served kind has a schema");
        schema.insert(
            "x-kubernetes-group-version-kind".into(),
            gvk(info.group, info.version, info.kind),
        );
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|f| f != "metadata");
            if required.is_empty() {
                schema.remove("required");
            }
        }
        schemas.insert(list_name(info), list_schema(info));
    }
    for (name, kinds) in [
        (format!("{META}.Status"), gvk("", "v1", "Status")),
        (
            format!("{META}.DeleteOptions"),
            gvk("", "v1", "DeleteOptions"),
        ),
        (SCALE.to_string(), gvk("autoscaling", "v1", "Scale")),
    ] {
        if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-group-version-kind".into(), kinds);
            if let Some(Value::Array(required)) = s.get_mut("required") {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    s.remove("required");
                }
            }
        }
    }
    schemas
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_kinds_are_complete() {
        let schemas = components();
        let all = Value::Object(schemas.clone());
        let mut found = Vec::new();
        refs(&all, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("foreign reference {r}"));
            assert!(
                schemas.contains_key(name),
                "{name} is referenced but absent"
            );
        }
        let pod = &schemas[&kind_name(registry::lookup("pods").unwrap())];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod.get("required").is_none(), "{pod}");
        let spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(spec["required"], json!(["containers"]));
        assert!(schemas.contains_key("io.k8s.api.core.v1.Container"));
        assert!(schemas.contains_key(&list_name(registry::lookup("nodes").unwrap())));
        let roles = registry::lookup_in("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        assert!(
            schemas.contains_key(&kind_name(roles)),
            "io.k8s.api.rbac.v1.Role"
        );
        assert!(schemas.contains_key(&format!("{META}.Status")));
    }
}
