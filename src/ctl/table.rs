//! kubectl-style tables: a few useful columns per kind, ages, aligned with three spaces.

use keelson_model::duration::human_duration;
use serde_json::Value;

use crate::registry::ResourceInfo;

/// Column headers and cells of one row for an object of `info`'s kind.
pub fn columns(info: &ResourceInfo, wide: bool) -> Vec<&'static str> {
    let mut c = match info.plural {
        "pods" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "replicationcontrollers" => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "services" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "nodes" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "namespaces" => vec!["NAME", "STATUS", "AGE"],
        "events" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        c.extend(match info.plural {
            "pods" => &["IP", "NODE"][..],
            "replicationcontrollers" => &["CONTAINERS", "IMAGES", "SELECTOR"][..],
            "services" => &["SELECTOR"][..],
            "nodes" => &["INTERNAL-IP", "OS-IMAGE", "CONTAINER-RUNTIME"][..],
            _ => &[][..],
        });
    }
    c
}

/// The cells of `obj` under [`columns`]; `now` is the current time, for ages.
pub fn row(info: &ResourceInfo, obj: &Value, wide: bool, now: jiff::Timestamp) -> Vec<String> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let name = s("/metadata/name").to_string();
    let age = age(s("/metadata/creationTimestamp"), now);
    let none = |v: String| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v
        }
    };
    let mut r = match info.plural {
        "pods" => {
            let statuses = list(obj, "/status/containerStatuses");
            let total = list(obj, "/spec/containers").len();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            vec![
                name,
                format!("{ready}/{total}"),
                pod_status(obj),
                restarts.to_string(),
                age,
            ]
        }
        "replicationcontrollers" => vec![
            name,
            n("/spec/replicas").to_string(),
            n("/status/replicas").to_string(),
            n("/status/readyReplicas").to_string(),
            age,
        ],
        "services" => {
            let external: Vec<String> = list(obj, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .chain(
                    list(obj, "/spec/externalIPs")
                        .iter()
                        .filter_map(Value::as_str),
                )
                .map(str::to_string)
                .collect();
            let external = match (external.is_empty(), s("/spec/type")) {
                (true, "LoadBalancer") => "<pending>".to_string(),
                (true, _) => "<none>".to_string(),
                (false, _) => external.join(","),
            };
            vec![
                name,
                or(s("/spec/type"), "ClusterIP"),
                none(s("/spec/clusterIP").to_string()),
                external,
                none(service_ports(obj)),
                age,
            ]
        }
        "endpoints" => vec![name, none(endpoints(obj)), age],
        "nodes" => {
            let ready = list(obj, "/status/conditions")
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| match c["status"].as_str() {
                    Some("True") => "Ready",
                    Some("False") => "NotReady",
                    _ => "Unknown",
                })
                .unwrap_or("Unknown")
                .to_string();
            let status = if obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                format!("{ready},SchedulingDisabled")
            } else {
                ready
            };
            vec![
                name,
                status,
                "<none>".into(),
                age,
                s("/status/nodeInfo/kubeletVersion").to_string(),
            ]
        }
        "namespaces" => vec![name, s("/status/phase").to_string(), age],
        "events" => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/firstTimestamp",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .map(|p| s(p))
            .find(|t| !t.is_empty())
            .unwrap_or("");
            let object = format!(
                "{}/{}",
                s("/involvedObject/kind").to_ascii_lowercase(),
                s("/involvedObject/name")
            );
            vec![
                age_of(last, now),
                s("/type").to_string(),
                s("/reason").to_string(),
                object,
                s("/message").trim().to_string(),
            ]
        }
        _ => vec![name, age],
    };
    if wide {
        match info.plural {
            "pods" => r.extend([
                none(s("/status/podIP").to_string()),
                none(s("/spec/nodeName").to_string()),
            ]),
            "replicationcontrollers" => {
                let containers = list(obj, "/spec/template/spec/containers");
                let join = |f: &str| {
                    containers
                        .iter()
                        .filter_map(|c| c[f].as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                r.extend([
                    join("name"),
                    join("image"),
                    none(map_string(obj.pointer("/spec/selector"))),
                ]);
            }
            "services" => r.push(none(map_string(obj.pointer("/spec/selector")))),
            "nodes" => {
                let ip = list(obj, "/status/addresses")
                    .iter()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string();
                r.extend([
                    ip,
                    or(s("/status/nodeInfo/osImage"), "<unknown>"),
                    or(s("/status/nodeInfo/containerRuntimeVersion"), "<unknown>"),
                ]);
            }
            _ => {}
        }
    }
    r
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() { default } else { s }.to_string()
}

/// The array at `pointer`, or an empty one.
pub fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `a=1,b=2` for a string map (empty if absent).
pub fn map_string(m: Option<&Value>) -> String {
    m.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A pod's STATUS as kubectl shows it: Terminating, a container's waiting or terminated
/// reason, else the phase.
pub fn pod_status(pod: &Value) -> String {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    for c in list(pod, "/status/containerStatuses") {
        for state in ["waiting", "terminated"] {
            if let Some(r) = c["state"][state]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                return r.to_string();
            }
        }
    }
    let reason = pod.pointer("/status/reason").and_then(Value::as_str);
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    reason.or(phase).unwrap_or("Unknown").to_string()
}

/// `80/TCP,443:30443/TCP`.
pub fn service_ports(svc: &Value) -> String {
    list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p["port"].as_i64().unwrap_or(0);
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `10.0.0.1:80,10.0.0.2:80 + 3 more...`, as kubectl abbreviates.
fn endpoints(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in list(ep, "/subsets") {
        let ports = list(subset, "/ports");
        for a in list(subset, "/addresses") {
            let ip = a["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in ports {
                all.push(format!("{ip}:{}", p["port"].as_i64().unwrap_or(0)));
            }
        }
    }
    if all.len() > 3 {
        format!("{} + {} more...", all[..3].join(","), all.len() - 3)
    } else {
        all.join(",")
    }
}

/// The age of an RFC 3339 timestamp, `<unknown>` if it is absent or invalid.
pub fn age(ts: &str, now: jiff::Timestamp) -> String {
    age_of(ts, now)
}

fn age_of(ts: &str, now: jiff::Timestamp) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// Prints rows aligned in columns, three spaces apart; widths only grow, so that a watch's
/// later rows line up with the first ones.
#[derive(Default)]
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// Renders `rows` (the first is the header if there is one).
    pub fn render(&mut self, rows: &[Vec<String>]) -> String {
        for r in rows {
            if self.widths.len() < r.len() {
                self.widths.resize(r.len(), 0);
            }
            for (w, c) in self.widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = self.widths[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::manifest::resolve;
    use serde_json::json;

    #[test]
    fn durations() {
        let now: jiff::Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(age("2024-01-01T00:00:00Z", now), "60s");
        assert_eq!(age("garbage", now), "<unknown>");
    }

    #[test]
    fn pod_and_service_rows() {
        let now: jiff::Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let pods = resolve("po").unwrap();
        assert_eq!(
            row(pods, &pod, false, now),
            ["web", "1/2", "CrashLoopBackOff", "3", "10m"]
        );
        let svc = json!({"metadata": {"name": "db"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.5",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443}]}});
        let svcs = resolve("svc").unwrap();
        assert_eq!(
            row(svcs, &svc, false, now),
            [
                "db",
                "NodePort",
                "10.0.0.5",
                "<none>",
                "80/TCP,443:30443/TCP",
                "<unknown>"
            ]
        );
        assert_eq!(
            columns(svcs, false).len(),
            row(svcs, &svc, false, now).len()
        );
        assert_eq!(columns(pods, true).len(), row(pods, &pod, true, now).len());
    }

    #[test]
    fn alignment() {
        let mut t = Table::default();
        let s = t.render(&[
            vec!["NAME".into(), "AGE".into()],
            vec!["a-long-name".into(), "5s".into()],
        ]);
        assert_eq!(s, "NAME          AGE\na-long-name   5s\n");
        assert_eq!(
            t.render(&[vec!["b".into(), "1m".into()]]),
            "b             1m\n"
        );
    }
}
