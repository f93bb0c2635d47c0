//! `describe`: an object's main fields, kubectl-style, then the events about it.

use std::fmt::Write;

use clap::Args;
use serde_json::Value;

use super::client::enc;
use super::manifest::{collection_path, object_path};
use super::objects::yaml;
use super::table::{list, map_string, Table};
use super::Ctx;

/// Flags of `describe`.
#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Resource type, or TYPE/NAME.
    pub resource: String,
    pub name: Option<String>,
}

/// `describe KIND NAME`: the object's name and namespace, its kind's section, then its events.
pub async fn describe(ctx: &Ctx, a: DescribeArgs) -> anyhow::Result<()> {
    let (info, name) = match (a.resource.split_once('/'), a.name) {
        (Some((kind, name)), None) => (super::manifest::resolve(kind)?, name.to_string()),
        (None, Some(name)) => (super::manifest::resolve(&a.resource)?, name),
        _ => anyhow::bail!("describe needs one object: TYPE NAME or TYPE/NAME"),
    };
    let ns = info.namespaced.then_some(ctx.namespace.as_str());
    let obj = ctx.client.get(&object_path(info, ns, &name)).await?;
    let mut out = String::new();
    field(&mut out, "Name", &name);
    if info.namespaced {
        field(&mut out, "Namespace", str_at(&obj, "/metadata/namespace"));
    }
    match info.plural {
        "pods" => describe_pod(&mut out, &obj),
        "replicationcontrollers" => describe_controller(ctx, &mut out, &obj, ns).await?,
        "services" => describe_service(ctx, &mut out, &obj, ns, &name).await?,
        "nodes" => describe_node(&mut out, &obj),
        "namespaces" => describe_namespace(&mut out, &obj),
        _ => describe_generic(&mut out, &obj),
    }
    describe_events(ctx, &mut out, &obj, &name, info.kind).await?;
    print!("{out}");
    Ok(())
}

/// A pod's section: node, start time, labels, status, IP, owner, containers and conditions.
fn describe_pod(out: &mut String, obj: &Value) {
    let s = |p: &str| str_at(obj, p);
    field(out, "Node", or(s("/spec/nodeName"), "<none>"));
    field(out, "Start Time", or(s("/status/startTime"), "<unset>"));
    labels(out, obj);
    field(out, "Status", &crate::registry::pod::status_reason(obj));
    field(out, "IP", or(s("/status/podIP"), "<none>"));
    if let Some(owner) = list(obj, "/metadata/ownerReferences").first() {
        let by = format!("{}/{}", str_at(owner, "/kind"), str_at(owner, "/name"));
        field(out, "Controlled By", &by);
    }
    containers(
        out,
        0,
        list(obj, "/spec/containers"),
        list(obj, "/status/containerStatuses"),
    );
    conditions(out, obj);
}

/// A replication controller's section: selector, replicas, its pods' phases and its pod template.
async fn describe_controller(
    ctx: &Ctx,
    out: &mut String,
    obj: &Value,
    ns: Option<&str>,
) -> anyhow::Result<()> {
    field(out, "Selector", &map_string(obj.pointer("/spec/selector")));
    labels(out, obj);
    let replicas = format!(
        "{} current / {} desired",
        num(obj, "/status/replicas"),
        num(obj, "/spec/replicas")
    );
    field(out, "Replicas", &replicas);
    let selector = map_string(obj.pointer("/spec/selector"));
    if !selector.is_empty() {
        let path = format!(
            "{}?labelSelector={}",
            collection_path(super::manifest::resolve("pods")?, ns),
            enc(&selector)
        );
        if let Ok(pods) = ctx.client.get(&path).await {
            field(out, "Pods Status", &pods_status(list(&pods, "/items")));
        }
    }
    out.push_str("Pod Template:\n");
    field_at(
        out,
        2,
        "Labels",
        &lines(obj.pointer("/spec/template/metadata/labels")),
    );
    containers(out, 2, list(obj, "/spec/template/spec/containers"), &[]);
    Ok(())
}

/// A service's section: selector, type, IP, ports and the endpoints of service `name`.
async fn describe_service(
    ctx: &Ctx,
    out: &mut String,
    obj: &Value,
    ns: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let s = |p: &str| str_at(obj, p);
    labels(out, obj);
    field(out, "Selector", &map_string(obj.pointer("/spec/selector")));
    field(out, "Type", or(s("/spec/type"), "ClusterIP"));
    field(out, "IP", or(s("/spec/clusterIP"), "<none>"));
    for p in list(obj, "/spec/ports") {
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        let pname = p["name"].as_str().unwrap_or("<unset>");
        let port = format!("{pname}  {}/{proto}", p["port"]);
        field(out, "Port", &port);
        if !p["targetPort"].is_null() {
            let target = match &p["targetPort"] {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            field(out, "TargetPort", &format!("{target}/{proto}"));
        }
        if let Some(np) = p["nodePort"].as_i64() {
            field(out, "NodePort", &format!("{pname}  {np}/{proto}"));
        }
    }
    let eps = format!(
        "{}/{}",
        collection_path(super::manifest::resolve("endpoints")?, ns),
        enc(name)
    );
    let endpoints = match ctx.client.get(&eps).await {
        Ok(ep) => endpoint_list(&ep),
        Err(_) => String::new(),
    };
    field(out, "Endpoints", or(&endpoints, "<none>"));
    field(
        out,
        "Session Affinity",
        or(s("/spec/sessionAffinity"), "None"),
    );
    Ok(())
}

/// A node's section: schedulability, conditions, addresses, capacity and kubelet version.
fn describe_node(out: &mut String, obj: &Value) {
    labels(out, obj);
    let unsched = obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true));
    field(out, "Unschedulable", &unsched.to_string());
    conditions(out, obj);
    out.push_str("Addresses:\n");
    for a in list(obj, "/status/addresses") {
        field_at(out, 2, str_at(a, "/type"), str_at(a, "/address"));
    }
    field(out, "Capacity", &lines(obj.pointer("/status/capacity")));
    let info = obj
        .pointer("/status/nodeInfo")
        .cloned()
        .unwrap_or(Value::Null);
    field(out, "Kubelet Version", str_at(&info, "/kubeletVersion"));
}

/// A namespace's section: labels, annotations and phase.
fn describe_namespace(out: &mut String, obj: &Value) {
    labels(out, obj);
    field(out, "Status", str_at(obj, "/status/phase"));
}

/// Any other kind's section: labels, annotations, then its spec, subsets and status as YAML.
fn describe_generic(out: &mut String, obj: &Value) {
    labels(out, obj);
    for part in ["spec", "subsets", "status"] {
        if let Some(v) = obj.get(part).filter(|v| !v.is_null()) {
            let _ = writeln!(out, "{}:", capitalize(part));
            for l in yaml(v).lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
    }
}

/// `Events:` about this object (same name, namespace and kind), or why there are none.
async fn describe_events(
    ctx: &Ctx,
    out: &mut String,
    obj: &Value,
    name: &str,
    kind: &str,
) -> anyhow::Result<()> {
    let ev_ns = obj["metadata"]["namespace"].as_str();
    let selector = format!(
        "involvedObject.name={name},involvedObject.namespace={},involvedObject.kind={}",
        ev_ns.unwrap_or(""),
        kind
    );
    let events_path = format!(
        "{}?fieldSelector={}",
        collection_path(super::manifest::resolve("events")?, ev_ns),
        enc(&selector)
    );
    match ctx.client.get(&events_path).await {
        Ok(evs) if !list(&evs, "/items").is_empty() => {
            out.push_str("Events:\n");
            out.push_str(&events_table(list(&evs, "/items")));
        }
        Ok(_) => out.push_str("Events:  <none>\n"),
        Err(e) => {
            let _ = writeln!(out, "Events:  <unavailable: {e}>");
        }
    }
    Ok(())
}

/// `Containers:` with each container's image, ports, requests and, when known, its state.
fn containers(out: &mut String, indent: usize, cs: &[Value], statuses: &[Value]) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}Containers:");
    for c in cs {
        let cname = str_at(c, "/name");
        let _ = writeln!(out, "{pad}  {cname}:");
        let at = indent + 4;
        field_at(out, at, "Image", str_at(c, "/image"));
        let ports: Vec<String> = list(c, "/ports")
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["containerPort"],
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        field_at(out, at, "Port", or(&ports.join(", "), "<none>"));
        if let Some(cmd) = c.get("command").filter(|v| !v.is_null()) {
            field_at(out, at, "Command", &cmd.to_string());
        }
        let requests = map_string(c.pointer("/resources/requests"));
        if !requests.is_empty() {
            field_at(out, at, "Requests", &requests);
        }
        let limits = map_string(c.pointer("/resources/limits"));
        if !limits.is_empty() {
            field_at(out, at, "Limits", &limits);
        }
        if let Some(st) = statuses.iter().find(|s| s["name"].as_str() == Some(cname)) {
            let state = st["state"]
                .as_object()
                .and_then(|m| m.iter().find(|(_, v)| !v.is_null()))
                .map(|(k, v)| match v["reason"].as_str() {
                    Some(r) => format!("{}: {r}", capitalize(k)),
                    None => capitalize(k),
                })
                .unwrap_or_else(|| "Unknown".into());
            field_at(out, at, "State", &state);
            field_at(
                out,
                at,
                "Ready",
                &st["ready"].as_bool().unwrap_or(false).to_string(),
            );
            field_at(
                out,
                at,
                "Restart Count",
                &st["restartCount"].as_i64().unwrap_or(0).to_string(),
            );
        }
    }
}

fn conditions(out: &mut String, obj: &Value) {
    let cs = list(obj, "/status/conditions");
    if cs.is_empty() {
        return;
    }
    out.push_str("Conditions:\n");
    let mut rows = vec![vec!["Type".to_string(), "Status".into(), "Reason".into()]];
    rows.push(vec!["----".into(), "------".into(), "------".into()]);
    for c in cs {
        rows.push(vec![
            str_at(c, "/type").into(),
            str_at(c, "/status").into(),
            str_at(c, "/reason").into(),
        ]);
    }
    for l in Table::default().render(&rows).lines() {
        let _ = writeln!(out, "  {l}");
    }
}

/// `Running / Waiting / Succeeded / Failed` counts of a controller's pods.
fn pods_status(pods: &[Value]) -> String {
    let count = |phase: &str| {
        pods.iter()
            .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some(phase))
            .count()
    };
    format!(
        "{} Running / {} Waiting / {} Succeeded / {} Failed",
        count("Running"),
        count("Pending"),
        count("Succeeded"),
        count("Failed")
    )
}

fn endpoint_list(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in list(ep, "/subsets") {
        for a in list(subset, "/addresses") {
            for p in list(subset, "/ports") {
                all.push(format!("{}:{}", str_at(a, "/ip"), p["port"]));
            }
        }
    }
    all.join(",")
}

/// The events table of `describe`: Type, Reason, Age, From, Message.
fn events_table(events: &[Value]) -> String {
    let now = jiff::Timestamp::now();
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"]
            .map(String::from)
            .to_vec(),
        ["----", "------", "----", "----", "-------"]
            .map(String::from)
            .to_vec(),
    ];
    let mut events: Vec<&Value> = events.iter().collect();
    let when = |e: &Value| -> String {
        [
            "/lastTimestamp",
            "/eventTime",
            "/firstTimestamp",
            "/metadata/creationTimestamp",
        ]
        .iter()
        .map(|p| str_at(e, p))
        .find(|t| !t.is_empty())
        .unwrap_or("")
        .to_string()
    };
    events.sort_by_key(|e| when(e));
    for e in events {
        let from = match (
            str_at(e, "/source/component"),
            str_at(e, "/reportingComponent"),
        ) {
            ("", r) => r,
            (c, _) => c,
        };
        let count = e["count"].as_i64().unwrap_or(1);
        let age = crate::registry::printing::since(&when(e), now);
        let age = if count > 1 {
            format!("{age} (x{count})")
        } else {
            age
        };
        rows.push(vec![
            str_at(e, "/type").into(),
            str_at(e, "/reason").into(),
            age,
            from.into(),
            str_at(e, "/message").trim().into(),
        ]);
    }
    Table::default()
        .render(&rows)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `Labels:` and `Annotations:`, one `key=value` a line.
fn labels(out: &mut String, obj: &Value) {
    field(out, "Labels", &lines(obj.pointer("/metadata/labels")));
    field(
        out,
        "Annotations",
        &lines(obj.pointer("/metadata/annotations")),
    );
}

/// A map as `k=v` lines, `<none>` if empty.
fn lines(m: Option<&Value>) -> String {
    let s = map_string(m);
    if s.is_empty() {
        "<none>".into()
    } else {
        s.replace(',', "\n")
    }
}

/// `Label:` padded to a column, a multi-line value continued under it.
fn field(out: &mut String, label: &str, value: &str) {
    field_at(out, 0, label, value)
}

fn field_at(out: &mut String, indent: usize, label: &str, value: &str) {
    let width = 18usize.saturating_sub(indent).max(label.len() + 2);
    let head = format!("{}{label}:", " ".repeat(indent));
    let mut value_lines = value.lines();
    let first = value_lines.next().unwrap_or("");
    let _ = writeln!(out, "{head:<w$}{first}", w = width + indent);
    for l in value_lines {
        let _ = writeln!(out, "{}{l}", " ".repeat(width + indent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_events() {
        let mut out = String::new();
        field(&mut out, "Labels", "a=1\nb=2");
        assert_eq!(out, "Labels:           a=1\n                  b=2\n");
        let ev = json!({"type": "Normal", "reason": "Scheduled", "message": "assigned",
                        "source": {"component": "scheduler"}, "count": 2,
                        "lastTimestamp": "2000-01-01T00:00:00Z"});
        let t = events_table(&[ev]);
        assert!(t.starts_with("  Type     Reason"), "{t}");
        assert!(
            t.contains("Scheduled") && t.contains("(x2)") && t.contains("scheduler"),
            "{t}"
        );
    }
}
