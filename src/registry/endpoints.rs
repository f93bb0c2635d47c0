//! Endpoints: core/v1 `Endpoints`, the ready pod addresses behind a service, written by the
//! endpoints controller and read by the agents' proxies.

use k8s_openapi::api::core::v1 as core;
use keelson_model::v1beta1 as convert;
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{age, arr, col, or_none, s, Column, AGE, NAME};
use super::resource::Kind;

/// Endpoints.
pub struct Endpoints;

impl Kind for Endpoints {
    type Object = core::Endpoints;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        short_names: &["ep"],
        categories: &[],
        namespaced: true,
        has_status: false,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };

    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Endpoints",
            "string",
            0,
            "Endpoints is the list of endpoints comprising a service.",
        ),
        AGE,
    ];

    const V1BETA1_NAMES: Option<(&'static str, &'static str)> = Some(("endpoints", "Endpoints"));

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(s(obj, "/metadata/name")),
            json!(format_endpoints(obj)),
            json!(age(obj, now)),
        ]
    }

    fn to_v1beta1(&self, ep: &core::Endpoints) -> Option<Value> {
        Some(convert::endpoints_to_v1beta1(ep))
    }
}

/// kubectl's `formatEndpoints`: `ip:port` pairs, three at most then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    let mut list = Vec::new();
    let mut count = 0;
    for subset in arr(obj, "/subsets") {
        let ports = arr(subset, "/ports");
        for addr in arr(subset, "/addresses") {
            let ip = s(addr, "/ip");
            if ports.is_empty() {
                count += 1;
                if list.len() < 3 {
                    list.push(ip.to_string());
                }
            }
            for p in ports {
                count += 1;
                if list.len() < 3 {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    list.push(format!("{ip}:{port}"));
                }
            }
        }
    }
    let mut out = list.join(",");
    if count > list.len() {
        out.push_str(&format!(" + {} more...", count - list.len()));
    }
    or_none(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_row() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "1.1.1.1:80,1.1.1.1:443,2.2.2.2:80 + 1 more..."
        );
    }
}
