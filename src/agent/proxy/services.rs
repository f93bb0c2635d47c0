//! What the proxy serves, whatever its mode: every port of every service with the endpoints it
//! forwards to, derived from core/v1 Services and Endpoints (a pure function).
//!
//! The endpoints controller already resolves each service port to the port its endpoints are
//! reachable at (the target port on the pod's IP, or a published host port on its node's address
//! for a pod whose agent publishes them), so a service port is matched to the Endpoints port of
//! the same `name` (both empty for a single unnamed port) and the endpoints are `ip:port` as
//! listed.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::Value;

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub host: String,
    pub port: u16,
}

/// The transport of a service port (SCTP is not proxied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn parse(port: &Value) -> Option<Protocol> {
        match port.get("protocol").and_then(Value::as_str) {
            None => Some(Protocol::Tcp),
            Some(p) if p.eq_ignore_ascii_case("TCP") => Some(Protocol::Tcp),
            Some(p) if p.eq_ignore_ascii_case("UDP") => Some(Protocol::Udp),
            Some(_) => None,
        }
    }

    /// The name nftables gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port of one service, with what it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name`.
    pub service: String,
    /// The port's name (empty for a single unnamed port).
    pub name: String,
    pub protocol: Protocol,
    /// The service port: served on the node's address and on the cluster IP.
    pub port: u16,
    /// The service's virtual IP, if it has an IPv4 one (not headless).
    pub cluster_ip: Option<Ipv4Addr>,
    /// Ready endpoints, in the order the Endpoints object lists them.
    pub backends: Vec<Backend>,
}

/// `namespace/name` of an object.
pub fn key_of(v: &Value) -> String {
    format!(
        "{}/{}",
        v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default"),
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn port_name(port: &Value) -> &str {
    port.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The backends of the service port named `name` in an Endpoints object.
fn backends_of(endpoints: Option<&Value>, name: &str, protocol: Protocol) -> Vec<Backend> {
    let mut out = Vec::new();
    let subsets = endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array);
    for subset in subsets.into_iter().flatten() {
        let port = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| port_name(p) == name && Protocol::parse(p) == Some(protocol))
            .and_then(|p| p.get("port"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let Some(port) = port else { continue };
        let addresses = subset.get("addresses").and_then(Value::as_array);
        for a in addresses.into_iter().flatten() {
            if let Some(ip) = a
                .get("ip")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
            {
                out.push(Backend {
                    host: ip.to_string(),
                    port,
                });
            }
        }
    }
    out
}

/// Every port of `services` (ExternalName ones have none), with the backends `endpoints` give
/// it; sorted by service and port.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Value>,
    endpoints: impl IntoIterator<Item = &'a Value>,
) -> Vec<ServicePort> {
    let endpoints: HashMap<String, &Value> =
        endpoints.into_iter().map(|e| (key_of(e), e)).collect();
    let mut out = Vec::new();
    for svc in services {
        if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
            continue;
        }
        let key = key_of(svc);
        // `clusterIP`, else `clusterIPs[0]` (the masters keep the two equal).
        let cluster_ip = ["/spec/clusterIP", "/spec/clusterIPs/0"]
            .iter()
            .find_map(|f| {
                svc.pointer(f)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| !ip.is_unspecified());
        let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
        for p in ports.into_iter().flatten() {
            let Some(protocol) = Protocol::parse(p) else {
                continue;
            };
            let Some(port) = p
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
            else {
                continue;
            };
            out.push(ServicePort {
                service: key.clone(),
                name: port_name(p).to_string(),
                protocol,
                port,
                cluster_ip,
                backends: backends_of(endpoints.get(&key).copied(), port_name(p), protocol),
            });
        }
    }
    out.sort_by(|a, b| (&a.service, a.port, a.protocol).cmp(&(&b.service, b.port, b.protocol)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_match_endpoints_by_name_and_protocol() {
        let svc = json!({"metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.96.0.7", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "port": 9100, "targetPort": 9100},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "sctp", "port": 99, "protocol": "SCTP"}]}});
        let ep = json!({"metadata": {"namespace": "ns", "name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9100, "protocol": "TCP"},
                       {"name": "dns", "port": 5353, "protocol": "UDP"}]},
            {"addresses": [{"ip": "127.0.0.2"}], "ports": [{"name": "http", "port": 32001, "protocol": "TCP"}]}]});
        let other = json!({"metadata": {"namespace": "ns", "name": "other"}, "spec": {"clusterIP": "None", "ports": [{"port": 81}]}});
        let external = json!({"metadata": {"namespace": "ns", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "x", "ports": [{"port": 82}]}});
        let ports = service_ports([&svc, &other, &external], [&ep]);
        let b = |h: &str, p| Backend {
            host: h.into(),
            port: p,
        };
        let summary: Vec<(&str, u16, Protocol)> = ports
            .iter()
            .map(|p| (p.service.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            summary,
            [
                ("ns/other", 81, Protocol::Tcp),
                ("ns/web", 53, Protocol::Udp),
                ("ns/web", 80, Protocol::Tcp),
                ("ns/web", 9100, Protocol::Tcp)
            ]
        );
        assert!(ports[0].backends.is_empty() && ports[0].cluster_ip.is_none());
        assert_eq!(
            ports[1].backends,
            [b("10.0.0.1", 5353), b("10.0.0.2", 5353)]
        );
        assert_eq!(
            ports[2].backends,
            [
                b("10.0.0.1", 8080),
                b("10.0.0.2", 8080),
                b("127.0.0.2", 32001)
            ]
        );
        assert_eq!(ports[2].cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 7)));
        assert_eq!(
            ports[3].backends,
            [b("10.0.0.1", 9100), b("10.0.0.2", 9100)]
        );
    }
}
