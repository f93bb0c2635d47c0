//! What RBAC's four kinds share (`role.rs`, `clusterrole.rs`, `rolebinding.rs`,
//! `clusterrolebinding.rs`): the checks of Kubernetes' `pkg/apis/rbac/validation` and the
//! columns kubectl prints. What a rule means is the model's (`keelson_model::rbac`).

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use keelson_model::rbac::GROUP;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{age, arr, col, s, Column, AGE, NAME};
use super::validation::{invalid, required, Cause, NameRule};

/// What every RBAC kind's `ResourceInfo` shares.
pub const fn info(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: GROUP,
        version: "v1",
        plural,
        singular,
        kind,
        short_names: &[],
        categories: &[],
        namespaced,
        has_status: false,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    }
}

/// RBAC's names hold colons (`system:node`): any path segment.
pub const NAMES: NameRule = NameRule::PathSegment;

/// Checks a role's rules; a namespaced role's rules cannot name non-resource URLs.
pub fn check_rules(rules: Option<&Vec<PolicyRule>>, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if rule.verbs.is_empty() {
            causes.push(required(field("verbs")));
        }
        let urls = rule.non_resource_urls.as_deref().unwrap_or(&[]);
        let groups = rule.api_groups.as_deref().unwrap_or(&[]);
        let resources = rule.resources.as_deref().unwrap_or(&[]);
        if !urls.is_empty() {
            if namespaced {
                causes.push(invalid(
                    field("nonResourceURLs"),
                    urls.join(","),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !groups.is_empty() || !resources.is_empty() {
                causes.push(invalid(
                    field("nonResourceURLs"),
                    urls.join(","),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if groups.is_empty() {
            causes.push(required(field("apiGroups")));
        }
        if resources.is_empty() {
            causes.push(required(field("resources")));
        }
    }
}

/// Checks a binding's role reference and subjects; `kinds` are the role kinds it may name.
pub fn check_binding(
    role_ref: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    kinds: &[&str],
    causes: &mut Vec<Cause>,
) {
    let api_group = role_ref.api_group.as_deref().unwrap_or("");
    if api_group != GROUP {
        causes.push(invalid(
            "roleRef.apiGroup",
            api_group,
            &format!("supported values: \"{GROUP}\""),
        ));
    }
    if !kinds.contains(&role_ref.kind.as_str()) {
        causes.push(invalid(
            "roleRef.kind",
            &role_ref.kind,
            &format!("supported values: {}", kinds.join(", ")),
        ));
    }
    if role_ref.name.is_empty() {
        causes.push(required("roleRef.name"));
    }
    for (i, subject) in subjects.into_iter().flatten().enumerate() {
        let field = |f: &str| format!("subjects[{i}].{f}");
        if subject.name.is_empty() {
            causes.push(required(field("name")));
        }
        let group = subject.api_group.as_deref().unwrap_or("");
        match subject.kind.as_str() {
            "ServiceAccount" if !group.is_empty() => {
                causes.push(invalid(field("apiGroup"), group, "supported values: \"\""))
            }
            "User" | "Group" if group != GROUP => causes.push(invalid(
                field("apiGroup"),
                group,
                &format!("supported values: \"{GROUP}\""),
            )),
            "ServiceAccount" | "User" | "Group" => {}
            other => causes.push(invalid(
                field("kind"),
                other,
                "supported values: \"ServiceAccount\", \"User\", \"Group\"",
            )),
        }
    }
}

/// A binding's role reference cannot change (delete and recreate it instead).
pub fn check_role_ref_kept(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if old.get("roleRef") != new.get("roleRef") {
        causes.push(invalid(
            "roleRef",
            new.get("roleRef").unwrap_or(&Value::Null),
            "cannot change roleRef",
        ));
    }
}

/// A role's columns: kubectl's `NAME  CREATED AT`.
pub const ROLE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
];

pub fn role_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/metadata/creationTimestamp")),
    ]
}

/// A binding's columns: `NAME  ROLE  AGE`, and with `-o wide` its subjects by kind.
pub const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", 0, "RoleRef is the reference to the role."),
    AGE,
    col("Users", "string", 1, "Users in the binding."),
    col("Groups", "string", 1, "Groups in the binding."),
    col(
        "ServiceAccounts",
        "string",
        1,
        "ServiceAccounts in the binding.",
    ),
];

pub fn binding_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let of = |kind: &str| -> String {
        arr(obj, "/subjects")
            .iter()
            .filter(|sub| s(sub, "/kind") == kind)
            .map(|sub| match (kind, s(sub, "/namespace")) {
                ("ServiceAccount", ns) => format!("{ns}/{}", s(sub, "/name")),
                _ => s(sub, "/name").to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(format!(
            "{}/{}",
            s(obj, "/roleRef/kind"),
            s(obj, "/roleRef/name")
        )),
        json!(age(obj, now)),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}
