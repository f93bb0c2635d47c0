//! Services: core/v1 `Service`, a stable virtual IP whose traffic the agents proxy to the
//! ready pods its selector matches (the endpoints controller keeps its `Endpoints`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;
use keelson_model::smp::{self, Strategies};
use keelson_model::v1beta1 as convert;
use serde_json::{json, Value};

use super::clusterip::{has_cluster_ip, requested, set_ips};
use super::info::ResourceInfo;
use super::object::obj_mut;
use super::printing::{age, arr, col, format_labels, or_none, s, Column, AGE, NAME};
use super::resource::Kind;
use super::validation::NameRule;
use super::validation::{duplicate, invalid, required, validate_string_map, Cause};

/// Annotation of a Service whose endpoints use the first port of the pod's first container
/// (the seed's v1beta1 service without `containerPort`).
pub const FIRST_CONTAINER_PORT: &str = keelson_model::v1beta1::FIRST_CONTAINER_PORT_ANNOTATION;

/// Services.
pub struct Service;

impl Kind for Service {
    type Object = core::Service;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };

    const NAMES: NameRule = NameRule::Label;

    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Type", "string", 0, "type determines how the Service is exposed."),
        col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
        col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
        AGE,
        col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
    ];

    const PATCH_STRATEGIES: Strategies = smp::core_v1::SERVICE;

    const V1BETA1_NAMES: Option<(&'static str, &'static str)> = Some(("services", "Service"));

    fn apply_defaults(&self, obj: &mut Value) {
        let first_port = obj
            .pointer(&format!(
                "/metadata/annotations/{}",
                FIRST_CONTAINER_PORT.replace('/', "~1")
            ))
            .is_some();
        let spec = obj_mut(obj, "spec");
        spec.entry("type").or_insert(json!("ClusterIP"));
        spec.entry("sessionAffinity").or_insert(json!("None"));
        // The cluster IP is allocated when the service is stored (`clusterip.rs`).
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.entry("protocol").or_insert(json!("TCP"));
                if !first_port && p.get("targetPort").is_none() {
                    if let Some(port) = p.get("port").cloned() {
                        p.insert("targetPort".into(), port);
                    }
                }
            }
        }
    }

    fn carry_over(&self, old: &Value, new: &mut Value) {
        if !has_cluster_ip(new) {
            return;
        }
        let ip = match requested(new) {
            "" => requested(old).to_string(),
            ip => ip.to_string(),
        };
        if ip.is_empty() {
            return;
        }
        // Both fields from one value: an update that sends only one of them (or empties
        // `clusterIP` beside `clusterIPs`) keeps the other in step, and the agents, which read
        // `clusterIP`, go on serving the address.
        set_ips(new, &ip);
    }

    fn check(&self, svc: &core::Service, _obj: &Value, causes: &mut Vec<Cause>) {
        validate_service(svc, causes);
    }

    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        if has_cluster_ip(old) != has_cluster_ip(new) {
            // The address would have to be claimed or given back by the update.
            causes.push(invalid(
                "spec.type",
                new.pointer("/spec/type")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                "may not change to or from ExternalName: delete the service and create it again",
            ));
        }
        let (before, after) = (requested(old), requested(new));
        if !before.is_empty() && has_cluster_ip(old) && has_cluster_ip(new) && before != after {
            causes.push(invalid("spec.clusterIP", after, "field is immutable"));
        }
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        service_cells(obj, now)
    }

    fn to_v1beta1(&self, svc: &core::Service) -> Option<Value> {
        Some(convert::service_to_v1beta1(svc))
    }

    fn from_v1beta1(&self) -> Option<fn(&Value) -> Result<core::Service, convert::ConvertError>> {
        Some(convert::service_from_v1beta1)
    }
}

fn validate_service(svc: &core::Service, causes: &mut Vec<Cause>) {
    let Some(spec) = &svc.spec else {
        causes.push(required("spec"));
        return;
    };
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() {
        causes.push(required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !numbers.insert((p.port, protocol.to_ascii_uppercase())) {
            causes.push(duplicate(
                format!("spec.ports[{i}]"),
                format!("{}/{protocol}", p.port),
            ));
        }
        if !(1..=65535).contains(&p.port) {
            causes.push(invalid(
                format!("spec.ports[{i}].port"),
                p.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 {
            match &p.name {
                None => causes.push(required(format!("spec.ports[{i}].name"))),
                Some(n) if !names.insert(n.clone()) => {
                    causes.push(duplicate(format!("spec.ports[{i}].name"), n))
                }
                _ => {}
            }
        }
    }
    validate_cluster_ips(spec, causes);
    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()) {
            causes.push(invalid(
                "spec.clusterIP",
                ip,
                "must be empty for ExternalName services",
            ));
        }
    }
    if let Some(sel) = &spec.selector {
        let as_value = serde_json::to_value(sel).unwrap_or_default();
        validate_string_map(Some(&as_value), "spec.selector", true, causes);
    }
}

/// `spec.clusterIP` and `spec.clusterIPs`: an IPv4 address or `None`, the one the other holds.
/// Whether it is in the range and free is for the allocation to say.
fn validate_cluster_ips(spec: &core::ServiceSpec, causes: &mut Vec<Cause>) {
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    let ips = spec.cluster_ips.as_deref().unwrap_or(&[]);
    let valid = |ip: &str| ip == "None" || ip.parse::<std::net::Ipv4Addr>().is_ok();
    if !ip.is_empty() && !valid(ip) {
        causes.push(invalid("spec.clusterIP", ip, "must be a valid IP address"));
    }
    for (i, each) in ips.iter().enumerate() {
        if i > 0 {
            causes.push(invalid(
                format!("spec.clusterIPs[{i}]"),
                each,
                "only one (IPv4) cluster IP is served",
            ));
        } else if !valid(each) {
            causes.push(invalid(
                "spec.clusterIPs[0]",
                each,
                "must be a valid IP address",
            ));
        } else if !ip.is_empty() && each != ip {
            causes.push(invalid(
                "spec.clusterIPs[0]",
                each,
                "must be equal to spec.clusterIP",
            ));
        }
    }
}

fn service_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let kind = match s(obj, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let external_ips: Vec<&str> = arr(obj, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(obj, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match s(i, "/ip") {
                    "" => s(i, "/hostname").to_string(),
                    ip => ip.to_string(),
                })
                .collect();
            ips.extend(external_ips.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => s(obj, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np != 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    vec![
        name,
        json!(kind),
        json!(or_none(s(obj, "/spec/clusterIP"))),
        json!(external),
        json!(or_none(&ports.join(","))),
        json!(age(obj, now)),
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_row() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP", "nodePort": 30053}], "selector": {"b": "2", "a": "1"}}});
        let c = service_cells(&svc, jiff::Timestamp::now());
        assert_eq!(
            c[1..5],
            [
                json!("ClusterIP"),
                json!("10.96.0.9"),
                json!("<none>"),
                json!("80/TCP,53:30053/UDP")
            ]
        );
        assert_eq!(c[6], "a=1,b=2");
    }

    #[test]
    fn an_update_keeps_the_cluster_ip_and_may_not_change_it() {
        let old = json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]}});
        let mut new = json!({"spec": {"ports": [{"port": 80}]}});
        Kind::carry_over(&Service, &old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        let mut causes = Vec::new();
        Kind::check_update(&Service, &old, &new, &mut causes);
        assert!(causes.is_empty());
        let mut moved = json!({"spec": {"clusterIP": "10.96.0.10"}});
        Kind::carry_over(&Service, &old, &mut moved);
        assert_eq!(moved["spec"]["clusterIP"], "10.96.0.10");
        Kind::check_update(&Service, &old, &moved, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.clusterIP");
        assert!(causes[0].message.ends_with("field is immutable"));
    }

    #[test]
    fn an_update_sending_one_field_keeps_both_and_external_name_is_no_way_out() {
        let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]}});
        // `clusterIP` emptied beside `clusterIPs`: both keep the address.
        let mut new = json!({"spec": {"clusterIP": "", "clusterIPs": ["10.96.0.9"]}});
        Kind::carry_over(&Service, &old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        // To or from ExternalName: refused (the address would be given back or claimed).
        let external = json!({"spec": {"type": "ExternalName", "externalName": "x"}});
        for (from, to) in [(&old, &external), (&external, &old)] {
            let mut causes = Vec::new();
            Kind::check_update(&Service, from, to, &mut causes);
            assert_eq!(causes.len(), 1, "{from} -> {to}");
            assert_eq!(causes[0].field, "spec.type");
        }
        let mut to_external = external.clone();
        Kind::carry_over(&Service, &old, &mut to_external);
        assert!(to_external["spec"]["clusterIP"].is_null());
    }

    #[test]
    fn ports_are_unique_by_number_and_protocol() {
        let causes = |spec: Value| {
            let svc: core::Service = serde_json::from_value(json!({"spec": spec})).unwrap();
            let mut causes = Vec::new();
            validate_service(&svc, &mut causes);
            causes.into_iter().map(|c| c.field).collect::<Vec<_>>()
        };
        assert!(causes(json!({"ports": [{"name": "dns", "port": 53}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]})).is_empty());
        assert_eq!(
            causes(
                json!({"ports": [{"name": "a", "port": 80, "targetPort": 8080}, {"name": "b", "port": 80, "targetPort": 9090}]})
            ),
            ["spec.ports[1]"]
        );
        assert_eq!(
            causes(
                json!({"type": "ExternalName", "externalName": "x", "clusterIP": "10.96.0.9", "ports": [{"port": 80}]})
            ),
            ["spec.clusterIP"]
        );
    }

    #[test]
    fn cluster_ips_must_be_addresses_and_agree() {
        let causes = |spec: Value| {
            let svc: core::Service = serde_json::from_value(json!({"spec": spec})).unwrap();
            let mut causes = Vec::new();
            validate_cluster_ips(svc.spec.as_ref().unwrap(), &mut causes);
            causes
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(causes(json!({"clusterIP": "None"})).is_empty());
        assert!(causes(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]})).is_empty());
        assert_eq!(
            causes(json!({"clusterIP": "10.0.0.300"})),
            ["spec.clusterIP: Invalid value: \"10.0.0.300\": must be a valid IP address"]
        );
        assert_eq!(causes(json!({"clusterIP": "fd00::1"})).len(), 1);
        assert_eq!(
            causes(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2", "10.0.0.3"]})),
            [
                "spec.clusterIPs[0]: Invalid value: \"10.0.0.2\": must be equal to spec.clusterIP",
                "spec.clusterIPs[1]: Invalid value: \"10.0.0.3\": only one (IPv4) cluster IP is served"
            ]
        );
    }
}
