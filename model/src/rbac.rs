//! RBAC's meaning, as pure functions: what a request asks ([`Attributes`]), whether a policy
//! rule allows it, whether a binding's subjects name a user, whether one set of rules covers
//! another (the escalation check), and the default roles every cluster starts with.
//!
//! The semantics are Kubernetes' (`plugin/pkg/auth/authorizer/rbac`): `*` matches any verb,
//! group, resource or URL; `resource/subresource` and `*/subresource` name subresources; empty
//! `resourceNames` match every name; a non-resource URL ending in `*` matches by prefix.

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};
use serde_json::{json, Value};

/// The group whose members pass every authorization check (kube-apiserver's privileged group).
pub const MASTERS: &str = "system:masters";
/// The group bound to `system:monitoring`, which may read the metrics (`keelson up`'s
/// Prometheus is in it).
pub const MONITORING: &str = "system:monitoring";
/// The group every authenticated user belongs to.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of the nodes' agents.
pub const NODES: &str = "system:nodes";
/// The API group of RBAC's kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What a request does, as authorization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`; for a non-resource URL the
    /// HTTP method in lower case.
    pub verb: String,
    pub target: Target,
}

/// The thing a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Resource {
        /// The API group (`""` for core).
        group: String,
        resource: String,
        subresource: String,
        /// Empty for a cluster-scoped resource, or every namespace.
        namespace: String,
        /// Empty for a collection.
        name: String,
    },
    /// A path outside the resource API (`/kv/…`, `/cluster/masters`, `/api`).
    NonResource { path: String },
}

fn matches(items: &[String], value: &str) -> bool {
    items.iter().any(|i| i == "*" || i == value)
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

/// Whether `rule` allows `attrs`.
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !matches(&rule.verbs, &attrs.verb) {
        return false;
    }
    match &attrs.target {
        Target::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let combined = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let resources = list(&rule.resources);
            let resource_ok = resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!subresource.is_empty() && *r == format!("*/{subresource}"))
            });
            let names = list(&rule.resource_names);
            matches(list(&rule.api_groups), group)
                && resource_ok
                && (names.is_empty() || names.iter().any(|n| n == name))
        }
        Target::NonResource { path } => list(&rule.non_resource_urls).iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        }),
    }
}

/// Whether a binding's `subject` (bound in `namespace`, for service accounts without one) names
/// `user`.
pub fn subject_applies(subject: &Subject, namespace: &str, user: &UserInfo) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().unwrap_or(namespace);
            user.name == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

/// Whether `owner`'s rules grant everything `rule` grants, so that a user holding `owner` may
/// write a role with `rule` or bind one (Kubernetes' escalation check). A `*` in `rule` is
/// covered only by a `*` in `owner`; names are covered one by one.
pub fn covers(owner: &[PolicyRule], rule: &PolicyRule) -> bool {
    let names: Vec<Option<&String>> = if list(&rule.resource_names).is_empty() {
        vec![None]
    } else {
        list(&rule.resource_names).iter().map(Some).collect()
    };
    let literal = |items: &[String], v: &str| items.iter().any(|i| i == "*" || i == v);
    for verb in &rule.verbs {
        for url in list(&rule.non_resource_urls) {
            let ok = owner.iter().any(|o| {
                literal(&o.verbs, verb)
                    && list(&o.non_resource_urls).iter().any(|u| {
                        u == "*"
                            || u == url
                            || u.strip_suffix('*').is_some_and(|p| url.starts_with(p))
                    })
            });
            if !ok {
                return false;
            }
        }
        for group in list(&rule.api_groups) {
            for resource in list(&rule.resources) {
                for name in &names {
                    let ok = owner.iter().any(|o| {
                        let sub = resource.split_once('/').map(|(_, s)| s);
                        literal(&o.verbs, verb)
                            && literal(list(&o.api_groups), group)
                            && list(&o.resources).iter().any(|r| {
                                r == "*"
                                    || r == resource
                                    || sub.is_some_and(|s| s != "*" && *r == format!("*/{s}"))
                            })
                            && match name {
                                None => list(&o.resource_names).is_empty(),
                                Some(n) => {
                                    list(&o.resource_names).is_empty()
                                        || list(&o.resource_names).contains(n)
                                }
                            }
                    });
                    if !ok {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// What `view` reads: the served namespaced kinds and their subresources, secrets aside.
const READABLE: &[&str] = &[
    "pods",
    "pods/log",
    "pods/status",
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "replicationcontrollers/status",
    "services",
    "services/status",
    "endpoints",
    "events",
    "namespaces",
    "namespaces/status",
];
/// What `edit` writes.
const WRITABLE: &[&str] = &[
    "pods",
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "services",
    "endpoints",
];
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

/// The label every default role and binding carries (as Kubernetes' bootstrap policy).
pub const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");

fn object(kind: &str, name: &str, body: Value) -> Value {
    let mut obj = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": {
            "name": name,
            "labels": {BOOTSTRAP_LABEL.0: BOOTSTRAP_LABEL.1},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
    });
    for (k, v) in body.as_object().expect("an object").clone() {
        obj[k] = v;
    }
    obj
}

/// The default ClusterRoles: `cluster-admin`, `admin`, `edit`, `view`, `system:node`,
/// `system:discovery` and `system:basic-user`.
pub fn default_cluster_roles() -> Vec<Value> {
    let view = vec![rule(&[""], READABLE, READ)];
    let mut edit = view.clone();
    edit.push(rule(&[""], WRITABLE, WRITE));
    let mut admin = edit.clone();
    admin.push(rule(
        &[GROUP],
        &["roles", "rolebindings"],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ));
    let node = vec![
        rule(
            &[""],
            &["pods", "services", "endpoints", "nodes"],
            &["get", "list", "watch"],
        ),
        rule(
            &[""],
            &["nodes", "nodes/status"],
            &["create", "update", "patch"],
        ),
        rule(&[""], &["pods/status"], &["update", "patch"]),
        rule(&[""], &["events"], &["create", "update", "patch"]),
        urls(&["/cluster", "/agent/heartbeats"], &["get", "post"]),
    ];
    let discovery = vec![urls(
        &[
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/openapi",
            "/openapi/*",
            "/version",
            "/version/",
        ],
        &["get"],
    )];
    let basic = vec![rule(
        &["authorization.k8s.io"],
        &["selfsubjectaccessreviews"],
        &["create"],
    )];
    let monitoring = vec![urls(
        &[
            "/metrics",
            "/healthz",
            "/healthz/*",
            "/livez",
            "/livez/*",
            "/readyz",
            "/readyz/*",
        ],
        &["get"],
    )];
    let role = |name: &str, rules: Vec<Value>| object("ClusterRole", name, json!({"rules": rules}));
    vec![
        role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role("admin", admin),
        role("edit", edit),
        role("view", view),
        role("system:node", node),
        role("system:discovery", discovery),
        role("system:basic-user", basic),
        role("system:monitoring", monitoring),
    ]
}

/// The default ClusterRoleBindings: `system:masters` to cluster-admin, every authenticated user
/// to discovery and to reviewing its own access, `system:monitoring` to the metrics (what a
/// Prometheus scraper needs). `system:node` is bound to nobody: agents are
/// authorized by the Node authorizer, as in Kubernetes since 1.8.
pub fn default_cluster_role_bindings() -> Vec<Value> {
    let bind = |name: &str, role: &str, group: &str| {
        object(
            "ClusterRoleBinding",
            name,
            json!({
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": group}],
            }),
        )
    };
    vec![
        bind("cluster-admin", "cluster-admin", MASTERS),
        bind("system:discovery", "system:discovery", AUTHENTICATED),
        bind("system:basic-user", "system:basic-user", AUTHENTICATED),
        bind("system:monitoring", "system:monitoring", MONITORING),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            target: Target::Resource {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            },
        }
    }

    #[test]
    fn rules_match_as_kubernetes_defines_them() {
        let pods = r(rule(&[""], &["pods"], &["get", "list"]));
        assert!(rule_allows(&pods, &res("get", "", "pods", "", "d", "a")));
        assert!(!rule_allows(
            &pods,
            &res("delete", "", "pods", "", "d", "a")
        ));
        assert!(!rule_allows(
            &pods,
            &res("get", "", "pods", "log", "d", "a")
        ));
        assert!(!rule_allows(
            &pods,
            &res("get", "apps", "pods", "", "d", "a")
        ));
        let any_status = r(rule(&[""], &["*/status"], &["update"]));
        assert!(rule_allows(
            &any_status,
            &res("update", "", "pods", "status", "d", "a")
        ));
        assert!(!rule_allows(
            &any_status,
            &res("update", "", "pods", "", "d", "a")
        ));
        let named = r(
            json!({"apiGroups": [""], "resources": ["nodes"], "resourceNames": ["n1"], "verbs": ["*"]}),
        );
        assert!(rule_allows(
            &named,
            &res("update", "", "nodes", "", "", "n1")
        ));
        assert!(!rule_allows(
            &named,
            &res("update", "", "nodes", "", "", "n2")
        ));
        assert!(!rule_allows(&named, &res("list", "", "nodes", "", "", "")));
        let kv = r(urls(&["/kv/*"], &["get"]));
        let path = |p: &str| Attributes {
            verb: "get".into(),
            target: Target::NonResource { path: p.into() },
        };
        assert!(rule_allows(&kv, &path("/kv/a")));
        assert!(!rule_allows(&kv, &path("/cluster")));
        assert!(!rule_allows(&pods, &path("/kv/a")));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let u = UserInfo {
            name: "system:serviceaccount:d:bot".into(),
            groups: vec!["g".into()],
        };
        let s = |kind: &str, name: &str| Subject {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        };
        assert!(subject_applies(&s("Group", "g"), "d", &u));
        assert!(subject_applies(&s("ServiceAccount", "bot"), "d", &u));
        assert!(!subject_applies(&s("ServiceAccount", "bot"), "e", &u));
        assert!(!subject_applies(&s("User", "g"), "d", &u));
    }

    #[test]
    fn coverage_is_the_escalation_check() {
        let roles = default_cluster_roles();
        let rules = |name: &str| -> Vec<PolicyRule> {
            let role = roles
                .iter()
                .find(|r| r["metadata"]["name"] == name)
                .unwrap();
            serde_json::from_value(role["rules"].clone()).unwrap()
        };
        let (admin, edit, view, root) = (
            rules("admin"),
            rules("edit"),
            rules("view"),
            rules("cluster-admin"),
        );
        assert!(view.iter().all(|r| covers(&edit, r)));
        assert!(edit.iter().all(|r| covers(&admin, r)));
        assert!(!edit.iter().all(|r| covers(&view, r)));
        assert!(!admin.iter().all(|r| covers(&edit, r)));
        assert!(!root.iter().all(|r| covers(&admin, r)));
        assert!(admin.iter().chain(&root).all(|r| covers(&root, r)));
        // A name is covered by a rule for every name or for that name; not the other way.
        let one = r(
            json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"], "verbs": ["get"]}),
        );
        let all = r(rule(&[""], &["pods"], &["get"]));
        assert!(covers(&[all.clone()], &one));
        assert!(!covers(&[one], &all));
        // A wildcard is covered only by a wildcard.
        assert!(!covers(&admin, &r(rule(&[""], &["*"], &["get"]))));
    }
}
