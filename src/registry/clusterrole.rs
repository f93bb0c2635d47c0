//! RBAC's `ClusterRole` (`rbac.authorization.k8s.io/v1`): rules that grant verbs on resources (and
//! non-resource URLs) across the cluster, or in a namespace through a RoleBinding.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::Value;

use super::info::ResourceInfo;
use super::printing::Column;
use super::rbac::{check_rules, info, role_cells, NAMES, ROLE_COLUMNS};
use super::resource::Kind;
use super::validation::{Cause, NameRule};

/// ClusterRoles.
pub struct ClusterRole;

impl Kind for ClusterRole {
    type Object = rbac::ClusterRole;

    const INFO: ResourceInfo = info("clusterroles", "clusterrole", "ClusterRole", false);
    const NAMES: NameRule = NAMES;
    const COLUMNS: &'static [Column] = ROLE_COLUMNS;

    fn check(&self, role: &rbac::ClusterRole, _obj: &Value, causes: &mut Vec<Cause>) {
        check_rules(role.rules.as_ref(), false, causes);
    }

    fn cells(&self, obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
        role_cells(obj)
    }
}
