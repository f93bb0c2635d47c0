//! RBAC's `RoleBinding` (`rbac.authorization.k8s.io/v1`): grants the rules of a Role, or of a
//! ClusterRole, to users, groups and service accounts in the binding's namespace.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::Value;

use super::info::ResourceInfo;
use super::printing::Column;
use super::rbac::{
    binding_cells, check_binding, check_role_ref_kept, info, BINDING_COLUMNS, NAMES,
};
use super::resource::Kind;
use super::validation::{Cause, NameRule};

/// RoleBindings.
pub struct RoleBinding;

impl Kind for RoleBinding {
    type Object = rbac::RoleBinding;

    const INFO: ResourceInfo = info("rolebindings", "rolebinding", "RoleBinding", true);
    const NAMES: NameRule = NAMES;
    const COLUMNS: &'static [Column] = BINDING_COLUMNS;

    fn check(&self, binding: &rbac::RoleBinding, _obj: &Value, causes: &mut Vec<Cause>) {
        check_binding(
            &binding.role_ref,
            binding.subjects.as_ref(),
            &["Role", "ClusterRole"],
            causes,
        );
    }

    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        check_role_ref_kept(old, new, causes);
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        binding_cells(obj, now)
    }
}
