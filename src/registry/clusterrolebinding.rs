//! RBAC's `ClusterRoleBinding` (`rbac.authorization.k8s.io/v1`): grants the rules of a ClusterRole to
//! users, groups and service accounts across the cluster.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::Value;

use super::info::ResourceInfo;
use super::printing::Column;
use super::rbac::{
    binding_cells, check_binding, check_role_ref_kept, info, BINDING_COLUMNS, NAMES,
};
use super::resource::Kind;
use super::validation::{Cause, NameRule};

/// ClusterRoleBindings.
pub struct ClusterRoleBinding;

impl Kind for ClusterRoleBinding {
    type Object = rbac::ClusterRoleBinding;

    const INFO: ResourceInfo = info(
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
    );
    const NAMES: NameRule = NAMES;
    const COLUMNS: &'static [Column] = BINDING_COLUMNS;

    fn check(&self, binding: &rbac::ClusterRoleBinding, _obj: &Value, causes: &mut Vec<Cause>) {
        check_binding(
            &binding.role_ref,
            binding.subjects.as_ref(),
            &["ClusterRole"],
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
