//! The Docker networks of a cluster that `keelson up` runs, labelled with its id:
//! `keelson-ID-pods`, which pods join (the kernel proxy DNATs to their IPs there), and
//! `keelson-ID-services`, which holds no container: its subnet is the service cluster IP range
//! the masters allocate from, so a packet to a cluster IP stays on this machine whether or not a
//! rule catches it. Docker picks free subnets the first time; `cluster.json` records them, and a
//! network found missing later is made again with the same subnet, since allocated cluster IPs
//! must stay in the range.

use std::collections::HashMap;

use anyhow::Context;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;

use super::docker::LABEL_CLUSTER;
pub use crate::process::cluster_file::ClusterNetworks;

/// The networks of cluster `id` with the subnets `known` recorded (if any), made where missing.
pub async fn ensure(
    docker: &Docker,
    id: &str,
    known: Option<&ClusterNetworks>,
) -> anyhow::Result<ClusterNetworks> {
    let short: String = id.chars().take(12).collect();
    let pods = format!("keelson-{short}-pods");
    let services = format!("keelson-{short}-services");
    let pods_subnet = ensure_one(docker, id, &pods, known.map(|k| k.pods_subnet.as_str())).await?;
    let services_subnet = ensure_one(
        docker,
        id,
        &services,
        known.map(|k| k.services_subnet.as_str()),
    )
    .await?;
    Ok(ClusterNetworks {
        pods,
        pods_subnet,
        services,
        services_subnet,
    })
}

/// The subnet of network `name`, created (with `subnet` if given) when it does not exist.
async fn ensure_one(
    docker: &Docker,
    cluster: &str,
    name: &str,
    subnet: Option<&str>,
) -> anyhow::Result<String> {
    if docker.inspect_network(name, None).await.is_err() {
        let ipam = subnet.map(|s| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                ipam,
                labels: Some(HashMap::from([(
                    LABEL_CLUSTER.to_string(),
                    cluster.to_string(),
                )])),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create Docker network {name}"))?;
    }
    let inspect = docker
        .inspect_network(name, None)
        .await
        .with_context(|| format!("inspect Docker network {name}"))?;
    let found = inspect
        .ipam
        .and_then(|i| i.config)
        .into_iter()
        .flatten()
        .find_map(|c| {
            c.subnet.filter(|s| {
                s.split_once('/')
                    .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().is_ok())
            })
        })
        .with_context(|| format!("Docker network {name} has no IPv4 subnet"))?;
    if let Some(want) = subnet {
        if want != found {
            anyhow::bail!("Docker network {name} has subnet {found}, but the cluster uses {want}: remove the network (`docker network rm {name}`) and start again");
        }
    }
    Ok(found)
}

/// Removes the networks labelled with cluster `id`; how many.
pub async fn remove(docker: &Docker, id: &str) -> anyhow::Result<usize> {
    let label = format!("{LABEL_CLUSTER}={id}");
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let found = docker
        .list_networks(Some(options))
        .await
        .context("list the cluster's networks")?;
    let mut removed = 0;
    for n in found {
        if let Some(name) = n.name {
            docker
                .remove_network(&name)
                .await
                .with_context(|| format!("remove Docker network {name}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}
