//! The endpoints controller: for every service with a selector, an Endpoints object listing
//! the ready pods that match it, with the target port. It works from a queue of services
//! (`run`), so a pod's change costs work for the services that select it only.
//!
//! The target port is the service port's `targetPort`: a number, or the name of a container
//! port; a service converted from the seed's v1beta1 without `containerPort` uses the first
//! port of the pod's first container. The address is the pod IP; an agent on a host whose pod
//! IPs other hosts cannot reach reports a reachable address and port instead (annotations
//! `keelson.io/reachable-ip` and `keelson.io/reachable-port-<containerPort>` on the pod).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use keelson_raft::Command;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::util::{pod_ready, pod_terminating, s};
use super::Context;
use crate::informer::pod::{self as pod_index, PodFacts};
use crate::informer::queue::WorkQueue;
use crate::informer::service as service_index;
use crate::informer::Informers;
use crate::registry::selectors::LabelSelector;
use crate::registry::service::FIRST_CONTAINER_PORT;
use crate::registry::strategy;
use crate::registry::validation::Names;
use crate::registry::{self, lookup};

/// Annotation with the address other hosts use to reach the pod.
pub const REACHABLE_IP: &str = "keelson.io/reachable-ip";
/// Prefix of annotations mapping a container port to the port other hosts use.
pub const REACHABLE_PORT_PREFIX: &str = "keelson.io/reachable-port-";

/// The container port a service port targets on `pod`.
pub fn target_port(service: &Value, port: &Value, pod: &Value) -> Option<i64> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let first_container_port = || {
        containers
            .first()?
            .pointer("/ports/0/containerPort")?
            .as_i64()
    };
    if service
        .pointer(&format!(
            "/metadata/annotations/{}",
            FIRST_CONTAINER_PORT.replace('/', "~1")
        ))
        .is_some()
    {
        return first_container_port();
    }
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => containers
            .iter()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port.get("port").and_then(Value::as_i64),
    }
}

/// The address and port other hosts reach `container_port` of `pod` at.
fn reachable(pod: &Value, container_port: i64) -> (String, i64) {
    let ann = |k: &str| {
        pod.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
    };
    match (
        ann(REACHABLE_IP),
        ann(&format!("{REACHABLE_PORT_PREFIX}{container_port}")).and_then(|p| p.parse().ok()),
    ) {
        (Some(ip), Some(port)) => (ip.to_string(), port),
        _ => (s(pod, "/status/podIP").to_string(), container_port),
    }
}

/// The `subsets` of a service's endpoints.
pub fn subsets(service: &Value, pods: &[&Value]) -> Value {
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Group addresses by their port set, as Kubernetes does.
    let mut groups: BTreeMap<Vec<(String, i64, String)>, Vec<Value>> = BTreeMap::new();
    for pod in pods {
        if s(pod, "/status/podIP").is_empty() || !pod_ready(pod) || pod_terminating(pod) {
            continue;
        }
        let mut ip = String::new();
        let mut port_set = Vec::new();
        for p in &ports {
            let Some(cp) = target_port(service, p, pod) else {
                continue;
            };
            let (addr, port) = reachable(pod, cp);
            ip = addr;
            port_set.push((
                p["name"].as_str().unwrap_or("").to_string(),
                port,
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
            ));
        }
        if port_set.is_empty() {
            continue;
        }
        groups.entry(port_set).or_default().push(json!({
            "ip": ip,
            "nodeName": s(pod, "/spec/nodeName"),
            "targetRef": {"kind": "Pod", "namespace": s(pod, "/metadata/namespace"), "name": s(pod, "/metadata/name"), "uid": s(pod, "/metadata/uid")},
        }));
    }
    let subsets: Vec<Value> = groups
        .into_iter()
        .map(|(ports, mut addresses)| {
            addresses.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(name, port, protocol)| {
                    let mut p = json!({"port": port, "protocol": protocol});
                    if !name.is_empty() {
                        p["name"] = json!(name);
                    }
                    p
                })
                .collect();
            json!({"addresses": addresses, "ports": ports})
        })
        .collect();
    Value::Array(subsets)
}

/// Runs the endpoints controller until `token` is cancelled: a queue of service keys, fed by
/// the informers (a service's change queues it; a pod's change queues the services of its
/// namespace that select it), and every resync period all of them, with the services of
/// Endpoints whose service is gone. A change costs work for the services it concerns only.
pub async fn run(ctx: Context, token: CancellationToken) {
    let queue = Arc::new(WorkQueue::<String>::default());
    let informers = ctx.informers.clone();
    let _service_changes = informers.services.on_change({
        let queue = queue.clone();
        move |old, new| {
            if let Some(svc) = new.or(old) {
                queue.add(svc.key.clone());
            }
        }
    });
    let _pod_changes = informers.pods.on_each_side({
        let queue = queue.clone();
        let informers = informers.clone();
        move |pod| enqueue_for_pod(&informers, &queue, &pod.facts)
    });
    let mut resync = tokio::time::interval(ctx.config.resync);
    loop {
        let keys = tokio::select! {
            _ = token.cancelled() => break,
            _ = resync.tick() => {
                queue_everything(&ctx, &queue);
                continue;
            }
            keys = queue.take(64) => match keys { Some(k) => k, None => break },
        };
        let began = std::time::Instant::now();
        let result = tokio::select! {
            _ = token.cancelled() => break,
            r = pass(&ctx, &keys) => r,
        };
        super::util::record_pass(&ctx, "endpoints", began);
        for k in &keys {
            queue.done(k);
        }
        match result {
            Ok(()) => keys.iter().for_each(|k| queue.forget(k)),
            Err(e) => {
                tracing::warn!("endpoints: {e}");
                keys.into_iter().for_each(|k| queue.retry(k));
            }
        }
    }
    queue.shut_down();
}

/// Queues the services of `pod`'s namespace whose selector matches it.
fn enqueue_for_pod(informers: &Informers, queue: &WorkQueue<String>, pod: &PodFacts) {
    for svc in informers
        .services
        .by_index(service_index::BY_NAMESPACE, &pod.namespace)
    {
        let selector = &svc.facts.selector;
        if !selector.is_empty() && LabelSelector::from_map(selector).matches(&pod.labels) {
            queue.add(svc.key.clone());
        }
    }
}

/// Queues every service, and the service key of every Endpoints object (one whose service is
/// gone is deleted by its pass).
fn queue_everything(ctx: &Context, queue: &WorkQueue<String>) {
    for svc in ctx.informers.services.list() {
        queue.add(svc.key.clone());
    }
    let base = registry::prefix(lookup("endpoints").expect("endpoints"), None);
    let services = registry::prefix(lookup("services").expect("services"), None);
    let (records, _) = ctx.node.list(&base);
    for (key, _) in records {
        if let Some(rest) = key.strip_prefix(&base) {
            queue.add(format!("{services}{rest}"));
        }
    }
}

/// One pass over the services under `keys` (storage keys): each one's Endpoints brought to
/// the ready pods it selects, and removed when the service is gone.
async fn pass(ctx: &Context, keys: &[String]) -> Result<(), String> {
    let info = lookup("endpoints").expect("endpoints");
    let base = registry::prefix(lookup("services").expect("services"), None);
    let mut commands = Vec::new();
    for key in keys {
        let Some((ns, name)) = key.strip_prefix(&base).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let ep_key = registry::key(info, Some(ns), name);
        let existing = match ctx.node.get(&ep_key).0 {
            Some(r) => Some(registry::decode_record(&r).map_err(|e| e.message)?),
            None => None,
        };
        let Some(item) = ctx.informers.services.get(key) else {
            // The service is gone: so are its endpoints.
            if let Some(ep) = existing {
                commands.push(Command::Delete {
                    key: ep_key,
                    precondition: Some(super::util::rv(&ep)),
                });
            }
            continue;
        };
        if item.facts.selector.is_empty() {
            continue;
        }
        let svc = item.object()?;
        let sel = LabelSelector::from_map(&item.facts.selector);
        // From the pods informer: only the ready pods the service selects are decoded.
        let mut matching = Vec::new();
        for p in ctx.informers.pods.by_index(pod_index::BY_NAMESPACE, ns) {
            let f = &p.facts;
            if f.ready && !f.terminating && !f.pod_ip.is_empty() && sel.matches(&f.labels) {
                matching.push(p.object()?);
            }
        }
        let subsets = subsets(&svc, &matching.iter().collect::<Vec<_>>());
        match existing {
            Some(current) if current.get("subsets").cloned().unwrap_or(json!([])) == subsets => {}
            Some(current) => {
                let mut updated = current.clone();
                updated["subsets"] = subsets;
                if let Some(m) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                commands.push(Command::Update {
                    key: ep_key,
                    value: Bytes::from(serde_json::to_vec(&updated).expect("json")),
                    precondition: Some(super::util::rv(&current)),
                });
            }
            None => {
                let mut ep = json!({"metadata": {"name": name, "labels": svc.pointer("/metadata/labels").cloned().unwrap_or(json!({}))}, "subsets": subsets});
                if strategy::prepare_create(info, &mut ep, Some(ns), Names::Lenient, "v1").is_ok() {
                    commands.push(Command::Create {
                        key: ep_key,
                        value: Bytes::from(serde_json::to_vec(&ep).expect("json")),
                    });
                }
            }
        }
    }
    if !commands.is_empty() {
        super::util::write(ctx, commands).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, ports: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": name},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": ports}]},
               "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn seed_service_uses_first_container_port() {
        let svc = json!({"metadata": {"name": "mysite", "annotations": {FIRST_CONTAINER_PORT: "true"}}, "spec": {"ports": [{"port": 10000, "protocol": "TCP"}]}});
        let a = pod("a", "10.0.0.2", true, json!([{"containerPort": 80}]));
        let b = pod("b", "10.0.0.3", false, json!([{"containerPort": 80}]));
        let subsets = subsets(&svc, &[&a, &b]);
        assert_eq!(
            subsets[0]["addresses"].as_array().unwrap().len(),
            1,
            "only ready pods"
        );
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subsets[0]["ports"][0]["port"], 80);
    }

    #[test]
    fn named_and_numbered_target_ports() {
        let p = pod(
            "a",
            "10.0.0.2",
            true,
            json!([{"containerPort": 8080, "name": "http"}]),
        );
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert_eq!(target_port(&svc, &svc["spec"]["ports"][0], &p), Some(8080));
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 9000}]}});
        assert_eq!(target_port(&svc, &svc["spec"]["ports"][0], &p), Some(9000));
        let mut published = p.clone();
        published["metadata"]["annotations"] =
            json!({REACHABLE_IP: "127.0.0.2", "keelson.io/reachable-port-8080": "32001"});
        assert_eq!(
            reachable(&published, 8080),
            ("127.0.0.2".to_string(), 32001)
        );
    }
}
