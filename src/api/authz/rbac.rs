//! The RBAC authorizer: a request is allowed when a rule of a role bound to its user allows it
//! (Kubernetes' `RBACAuthorizer`). Roles and bindings are read from the master's informers, so
//! a change is in force on a master as soon as it has applied it (within milliseconds of the
//! write on a healthy cluster).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::PolicyRule;
use keelson_model::rbac::{rule_allows, subject_applies, Attributes, Target, UserInfo};

use crate::informer::rbac::{subject_keys, BY_NAMESPACE, BY_SUBJECT};
use crate::informer::Informers;

/// RBAC over one master's informers.
#[derive(Clone)]
pub struct Rbac {
    pub informers: Arc<Informers>,
}

impl Rbac {
    /// Whether a role bound to `user` allows `attrs`.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        let namespace = match &attrs.target {
            Target::Resource { namespace, .. } => namespace.as_str(),
            Target::NonResource { .. } => "",
        };
        let mut allowed = false;
        self.visit(user, namespace, &mut |rule| {
            allowed = rule_allows(rule, attrs);
            allowed
        });
        allowed
    }

    /// Every rule granted to `user` in `namespace` (cluster-wide ones included): what the
    /// escalation check compares a new role's rules with.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut rules = Vec::new();
        self.visit(user, namespace, &mut |rule| {
            rules.push(rule.clone());
            false
        });
        rules
    }

    /// `f` of the rules of a role (`Role` in `namespace`, or `ClusterRole`), if it exists.
    pub fn with_role<R>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&[PolicyRule]) -> R,
    ) -> Option<R> {
        if kind == "Role" {
            let key = format!("/registry/roles/{namespace}/{name}");
            self.informers.roles.get(&key).map(|r| f(&r.facts.rules))
        } else {
            let key = format!("/registry/clusterroles/{name}");
            self.informers
                .cluster_roles
                .get(&key)
                .map(|r| f(&r.facts.rules))
        }
    }

    /// Calls `f` with each rule bound to `user` (cluster-wide, then in `namespace`) until it
    /// returns true. Cluster role bindings are found through their subjects' index, so a
    /// request reads only those naming its user or one of its groups.
    fn visit(&self, user: &UserInfo, namespace: &str, f: &mut dyn FnMut(&PolicyRule) -> bool) {
        let bindings = &self.informers.cluster_role_bindings;
        let mut seen = std::collections::BTreeSet::new();
        let mine = subject_keys(user)
            .into_iter()
            .flat_map(|k| bindings.by_index(BY_SUBJECT, &k))
            .filter(|b| seen.insert(b.key.clone()));
        for binding in mine {
            let b = &binding.facts;
            if !b.subjects.iter().any(|s| subject_applies(s, "", user)) {
                continue;
            }
            let Some(role_ref) = &b.role_ref else {
                continue;
            };
            let done = self.with_role("ClusterRole", "", &role_ref.name, |rules| {
                rules.iter().any(&mut *f)
            });
            if done == Some(true) {
                return;
            }
        }
        if namespace.is_empty() {
            return;
        }
        for binding in self
            .informers
            .role_bindings
            .by_index(BY_NAMESPACE, namespace)
        {
            let b = &binding.facts;
            if !b
                .subjects
                .iter()
                .any(|s| subject_applies(s, namespace, user))
            {
                continue;
            }
            let Some(role_ref) = &b.role_ref else {
                continue;
            };
            let done = self.with_role(&role_ref.kind, namespace, &role_ref.name, |rules| {
                rules.iter().any(&mut *f)
            });
            if done == Some(true) {
                return;
            }
        }
    }
}
