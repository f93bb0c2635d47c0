//! What the authorizer reads of RBAC's kinds: a role's rules, a binding's role and subjects.

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use serde_json::Value;

use super::cache::Facts;

/// Index: role bindings by namespace.
pub const BY_NAMESPACE: &str = "namespace";
/// Index: bindings by the subjects they name ([`subject_keys`]): the cluster role bindings of
/// a user are found without reading the others.
pub const BY_SUBJECT: &str = "subject";

/// The index values under which a binding naming `user` is found: `user:NAME` and one
/// `group:NAME` per group.
pub fn subject_keys(user: &keelson_model::rbac::UserInfo) -> Vec<String> {
    std::iter::once(format!("user:{}", user.name))
        .chain(user.groups.iter().map(|g| format!("group:{g}")))
        .collect()
}

/// The index value of a binding's subject (`namespace` the binding's own, the default of a
/// service account's); `None` for a kind that names nobody.
fn subject_key(subject: &Subject, namespace: &str) -> Option<String> {
    match subject.kind.as_str() {
        "User" => Some(format!("user:{}", subject.name)),
        "Group" => Some(format!("group:{}", subject.name)),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().unwrap_or(namespace);
            Some(format!("user:system:serviceaccount:{ns}:{}", subject.name))
        }
        _ => None,
    }
}

/// A Role's (`CLUSTER` false) or a ClusterRole's rules.
#[derive(Debug, Clone)]
pub struct RoleFacts<const CLUSTER: bool> {
    pub rules: Vec<PolicyRule>,
}

impl<const CLUSTER: bool> Facts for RoleFacts<CLUSTER> {
    const PLURAL: &'static str = if CLUSTER { "clusterroles" } else { "roles" };

    fn from_object(obj: &Value) -> Self {
        // Stored objects were validated; one that does not read grants nothing.
        let rules = obj
            .get("rules")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        RoleFacts { rules }
    }
}

/// A RoleBinding's (`CLUSTER` false) or a ClusterRoleBinding's role and subjects.
#[derive(Debug, Clone)]
pub struct BindingFacts<const CLUSTER: bool> {
    pub namespace: String,
    /// `None` for a binding that does not read (it grants nothing).
    pub role_ref: Option<RoleRef>,
    pub subjects: Vec<Subject>,
}

impl<const CLUSTER: bool> Facts for BindingFacts<CLUSTER> {
    const PLURAL: &'static str = if CLUSTER {
        "clusterrolebindings"
    } else {
        "rolebindings"
    };
    const INDEXES: &'static [&'static str] = &[BY_NAMESPACE, BY_SUBJECT];

    fn from_object(obj: &Value) -> Self {
        let read = |pointer: &str| obj.pointer(pointer).cloned().unwrap_or(Value::Null);
        BindingFacts {
            namespace: obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            role_ref: serde_json::from_value(read("/roleRef")).ok(),
            subjects: serde_json::from_value(read("/subjects")).unwrap_or_default(),
        }
    }

    fn index_values(&self, index: &str) -> Vec<String> {
        match index {
            BY_NAMESPACE => vec![self.namespace.clone()],
            BY_SUBJECT => {
                let mut keys: Vec<String> = (self.subjects.iter())
                    .filter_map(|s| subject_key(s, &self.namespace))
                    .collect();
                keys.sort();
                keys.dedup();
                keys
            }
            _ => Vec::new(),
        }
    }
}
