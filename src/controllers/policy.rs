//! The bootstrap policy: every new tenure makes sure the default ClusterRoles and
//! ClusterRoleBindings (`keelson_model::rbac`) exist, creating the missing ones, as
//! kube-apiserver's `rbac/bootstrap-roles` hook does. Existing ones are left as they are, so an
//! administrator's edit of a default role is kept. Runs once per tenure, retrying until done.

use std::time::Duration;

use bytes::Bytes;
use keelson_model::rbac::{default_cluster_role_bindings, default_cluster_roles, GROUP};
use keelson_raft::Command;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, lookup_in};

/// Creates the missing default objects, retrying every second until it has (or `token` stops
/// the tenure).
pub async fn run(ctx: Context, token: CancellationToken) {
    loop {
        match ensure(&ctx).await {
            Ok(0) => return,
            Ok(created) => {
                tracing::info!(
                    created,
                    "bootstrap policy: created the missing default roles and bindings"
                );
                return;
            }
            Err(e) => tracing::warn!("bootstrap policy: {e}; retrying"),
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Proposes the missing defaults in this tenure's term; how many were missing.
async fn ensure(ctx: &Context) -> Result<usize, String> {
    let roles = lookup_in(GROUP, "v1", "clusterroles").expect("served");
    let bindings = lookup_in(GROUP, "v1", "clusterrolebindings").expect("served");
    let mut commands = Vec::new();
    for (info, objects) in [
        (roles, default_cluster_roles()),
        (bindings, default_cluster_role_bindings()),
    ] {
        for mut obj in objects {
            let name = registry::meta_str(&obj, "name")
                .unwrap_or_default()
                .to_string();
            let key = registry::key(info, None, &name);
            let exists = match info.plural {
                "clusterroles" => ctx.informers.cluster_roles.get(&key).is_some(),
                _ => ctx.informers.cluster_role_bindings.get(&key).is_some(),
            };
            if exists {
                continue;
            }
            strategy::prepare_create(info, &mut obj, None, Names::Dns1123, &info.api_version())
                .map_err(|e| format!("default {} {name}: {}", info.kind, e.message))?;
            commands.push(Command::Create {
                key,
                value: Bytes::from(serde_json::to_vec(&obj).expect("json")),
            });
        }
    }
    let created = commands.len();
    if created > 0 {
        // A create that finds the object (another tenure made it) is fine.
        ctx.node
            .write_batch_in_term(ctx.term, commands)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(created)
}
