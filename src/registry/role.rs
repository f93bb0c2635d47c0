//! RBAC's `Role` (`rbac.authorization.k8s.io/v1`): rules that grant verbs on resources in
//! one namespace.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::Value;

use super::info::ResourceInfo;
use super::printing::Column;
use super::rbac::{check_rules, info, role_cells, NAMES, ROLE_COLUMNS};
use super::resource::Kind;
use super::validation::{Cause, NameRule};

/// Roles.
pub struct Role;

impl Kind for Role {
    type Object = rbac::Role;

    const INFO: ResourceInfo = info("roles", "role", "Role", true);
    const NAMES: NameRule = NAMES;
    const COLUMNS: &'static [Column] = ROLE_COLUMNS;

    fn check(&self, role: &rbac::Role, _obj: &Value, causes: &mut Vec<Cause>) {
        check_rules(role.rules.as_ref(), true, causes);
    }

    fn cells(&self, obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
        role_cells(obj)
    }
}
