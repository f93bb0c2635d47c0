//! kubectl's familiar columns, per kind: the shape of Kubernetes' `pkg/printers/internalversion`
//! over the JSON of core/v1 objects. Priority-1 columns are the ones `-o wide` adds.

use keelson_model::duration::human_duration;
use serde_json::{json, Value};

/// One column of a Table.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `date`...
    pub kind: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 is always shown, 1 with `-o wide`.
    pub priority: u8,
}

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

const POD: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", 0, "The aggregate status of the containers in this pod."),
    col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster."),
    col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
    col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
    col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
];
const RC: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        0,
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        0,
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        0,
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    col(
        "Containers",
        "string",
        1,
        "Names of each container in the template.",
    ),
    col(
        "Images",
        "string",
        1,
        "Images referenced by each container in the template.",
    ),
    col(
        "Selector",
        "string",
        1,
        "Selector is a label query over pods that should match the Replicas count.",
    ),
];
const SERVICE: &[Column] = &[
    NAME,
    col("Type", "string", 0, "type determines how the Service is exposed."),
    col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
    col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
    AGE,
    col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
];
const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        0,
        "Endpoints is the list of endpoints comprising a service.",
    ),
    AGE,
];
const NODE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the node"),
    col("Roles", "string", 0, "The roles of the node"),
    AGE,
    col("Version", "string", 0, "Kubelet Version reported by the node."),
    col("Internal-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("External-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    col("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];
const NAMESPACE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the namespace"),
    AGE,
];
const EVENT: &[Column] = &[
    col("Last Seen", "string", 0, "Time since the most recent occurrence of this event."),
    col("Type", "string", 0, "Type of this event (Normal, Warning)."),
    col("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", 0, "The object that this event is about."),
    col("Subobject", "string", 1, "The field of the object that this event is about."),
    col("Source", "string", 1, "The component reporting this event."),
    col("Message", "string", 0, "A human-readable description of the status of this operation."),
    col("First Seen", "string", 1, "The time at which the event was first recorded."),
    col("Count", "string", 1, "The number of times this event has occurred."),
    col("Name", "string", 1, "Name must be unique within a namespace."),
];
const DEFAULT: &[Column] = &[NAME, AGE];

/// The columns of `kind`'s Table.
pub fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => POD,
        "ReplicationController" => RC,
        "Service" => SERVICE,
        "Endpoints" => ENDPOINTS,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "Event" => EVENT,
        _ => DEFAULT,
    }
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.into()
    }
}

/// Kubernetes' `labels.FormatLabels`: `k=v,...` sorted, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// Seconds since an RFC 3339 timestamp, if it parses.
fn seconds_since(ts: &str) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(jiff::Timestamp::now().as_second() - t.as_second())
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when absent.
fn since(ts: &str) -> String {
    seconds_since(ts).map_or_else(|| "<unknown>".into(), human_duration)
}

fn age(obj: &Value) -> String {
    since(s(obj, "/metadata/creationTimestamp"))
}

/// The cells of `obj`'s row.
pub fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match kind {
        "Pod" => pod_cells(obj, name),
        "ReplicationController" => {
            let containers = arr(obj, "/spec/template/spec/containers");
            let join = |field: &str| {
                containers
                    .iter()
                    .map(|c| s(c, field).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let int = |p: &str| json!(obj.pointer(p).and_then(Value::as_i64).unwrap_or(0));
            vec![
                name,
                int("/spec/replicas"),
                int("/status/replicas"),
                int("/status/readyReplicas"),
                json!(age(obj)),
                json!(join("/name")),
                json!(join("/image")),
                json!(format_labels(obj.pointer("/spec/selector"))),
            ]
        }
        "Service" => service_cells(obj, name),
        "Endpoints" => vec![name, json!(format_endpoints(obj)), json!(age(obj))],
        "Node" => node_cells(obj, name),
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        "Event" => event_cells(obj, name),
        _ => vec![name, json!(age(obj))],
    }
}

fn pod_cells(obj: &Value, name: Value) -> Vec<Value> {
    let containers = arr(obj, "/spec/containers");
    let statuses = arr(obj, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<String> = None;
    let mut reason = match s(obj, "/status/reason") {
        "" => s(obj, "/status/phase").to_string(),
        r => r.to_string(),
    };
    for c in statuses {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        let finished = s(c, "/lastState/terminated/finishedAt");
        if !finished.is_empty() && last_restart.as_deref().is_none_or(|l| finished > l) {
            last_restart = Some(finished.to_string());
        }
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            reason = terminated.to_string();
        }
    }
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", since(&t)),
        _ => restarts.to_string(),
    };
    let gates = arr(obj, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(obj, "/status/conditions");
        let true_gates = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    vec![
        name,
        json!(format!("{ready}/{}", containers.len())),
        json!(reason),
        json!(restarts),
        json!(age(obj)),
        json!(or_none(s(obj, "/status/podIP"))),
        json!(or_none(s(obj, "/spec/nodeName"))),
        json!(or_none(s(obj, "/status/nominatedNodeName"))),
        json!(gates),
    ]
}

fn service_cells(obj: &Value, name: Value) -> Vec<Value> {
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
        json!(age(obj)),
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
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

fn node_cells(obj: &Value, name: Value) -> Vec<Value> {
    let conditions = arr(obj, "/status/conditions");
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = conditions.iter().find(|c| s(c, "/type") == "Ready") {
        status.push(
            if s(ready, "/status") == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .into(),
        );
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|r| !r.is_empty()).map(str::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |t: &str| {
        or_none(
            arr(obj, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == t)
                .map_or("", |a| s(a, "/address")),
        )
    };
    vec![
        name,
        json!(status.join(",")),
        json!(or_none(&roles.join(","))),
        json!(age(obj)),
        json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_none(s(obj, "/status/nodeInfo/osImage"))),
        json!(or_none(s(obj, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn event_cells(obj: &Value, name: Value) -> Vec<Value> {
    let first = match s(obj, "/firstTimestamp") {
        "" => s(obj, "/eventTime"),
        t => t,
    };
    let last = match s(obj, "/lastTimestamp") {
        "" => first,
        t => t,
    };
    let object = format!(
        "{}/{}",
        s(obj, "/involvedObject/kind").to_lowercase(),
        s(obj, "/involvedObject/name")
    );
    let source = match (s(obj, "/source/component"), s(obj, "/source/host")) {
        ("", _) => s(obj, "/reportingComponent").to_string(),
        (c, "") => c.to_string(),
        (c, h) => format!("{c}, {h}"),
    };
    let count = obj.get("count").and_then(Value::as_i64).unwrap_or(1);
    vec![
        json!(since(last)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(object),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(since(first)),
        json!(count.to_string()),
        name,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells("Pod", &pod);
        assert_eq!(c.len(), POD.len());
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "<unknown>");
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn service_node_endpoint_rows() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP", "nodePort": 30053}], "selector": {"b": "2", "a": "1"}}});
        let c = cells("Service", &svc);
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
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"}}});
        let c = cells("Node", &node);
        assert_eq!(
            c[1..3],
            [json!("Ready,SchedulingDisabled"), json!("worker")]
        );
        assert_eq!(c[4], "v1.37.0");
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cells("Endpoints", &ep)[1],
            "1.1.1.1:80,1.1.1.1:443,2.2.2.2:80 + 1 more..."
        );
    }
}
