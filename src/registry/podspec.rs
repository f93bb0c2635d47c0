//! Validation of a pod spec (a Pod's, or a replication controller's template), as Kubernetes
//! validates it, plus the trust boundary: **no pod spec reaches the host**. The fields that
//! would (host namespaces, privileged or capability-adding containers, host paths and any
//! volume type keelson does not implement, devices) are refused with a 422 naming the field;
//! fields keelson ignores but that cannot reach the host (`dnsPolicy`, `tolerations`, an empty
//! `securityContext`, …) are accepted, as kubectl and other clients send them by default.
//!
//! The agent checks again before it mounts anything (`agent::volumes`): the store may hold what
//! an older version accepted.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;

use keelson_model::quantity::is_quantity;
use serde_json::{json, Map, Value};

use super::validation::{duplicate, forbidden, invalid, is_dns1123_label, required, Cause};

/// The only volume type keelson implements.
pub const EMPTY_DIR: &str = "emptyDir";

/// The defaults of a pod spec (a pod's, or a replication controller's template's).
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

pub fn validate_pod_spec(spec: &core::PodSpec, at: &str, causes: &mut Vec<Cause>) {
    if spec.containers.is_empty() {
        causes.push(required(format!("{at}.containers")));
    }
    let volumes = validate_volumes(spec, at, causes);
    let mut seen = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{at}.containers[{i}]");
        if c.name.is_empty() {
            causes.push(required(format!("{f}.name")));
        } else if !is_dns1123_label(&c.name) {
            causes.push(invalid(format!("{f}.name"), &c.name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"));
        } else if !seen.insert(c.name.as_str()) {
            causes.push(duplicate(format!("{f}.name"), &c.name));
        }
        match c.image.as_deref() {
            None | Some("") => causes.push(required(format!("{f}.image"))),
            Some(image) if !is_image_reference(image) => causes.push(invalid(
                format!("{f}.image"),
                image,
                "must be an image reference such as user/mysite, registry:5000/a/b:v1 or a@sha256:<hex>",
            )),
            Some(_) => {}
        }
        validate_ports(c, &f, causes);
        if let Some(res) = &c.resources {
            for (kind, map) in [("requests", &res.requests), ("limits", &res.limits)] {
                for (k, q) in map.iter().flatten() {
                    if !is_quantity(&q.0) {
                        causes.push(invalid(
                            format!("{f}.resources.{kind}[{k}]"),
                            &q.0,
                            "must be a quantity such as 100m, 0.5 or 128Mi",
                        ));
                    }
                }
            }
        }
        validate_mounts(c.volume_mounts.as_deref(), &volumes, &f, causes);
        host_reach(
            c.security_context.as_ref(),
            c.volume_devices.is_some(),
            &f,
            causes,
        );
    }
    // Init and ephemeral containers do not run on keelson, but nothing that reaches the host
    // is stored either.
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let f = format!("{at}.initContainers[{i}]");
        validate_mounts(c.volume_mounts.as_deref(), &volumes, &f, causes);
        host_reach(
            c.security_context.as_ref(),
            c.volume_devices.is_some(),
            &f,
            causes,
        );
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let f = format!("{at}.ephemeralContainers[{i}]");
        validate_mounts(c.volume_mounts.as_deref(), &volumes, &f, causes);
        host_reach(
            c.security_context.as_ref(),
            c.volume_devices.is_some(),
            &f,
            causes,
        );
    }
    for (field, on) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            causes.push(forbidden(
                format!("{at}.{field}"),
                "the host's namespaces are not available to pods",
            ));
        }
    }
    if let Some(p) = &spec.restart_policy {
        if !["Always", "OnFailure", "Never"].contains(&p.as_str()) {
            causes.push(invalid(
                format!("{at}.restartPolicy"),
                p,
                "supported values: \"Always\", \"OnFailure\", \"Never\"",
            ));
        }
    }
}

/// Volume names (DNS labels, unique) and types (`emptyDir` only); returns the names.
fn validate_volumes<'a>(
    spec: &'a core::PodSpec,
    at: &str,
    causes: &mut Vec<Cause>,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("{at}.volumes[{i}]");
        if v.name.is_empty() {
            causes.push(required(format!("{f}.name")));
        } else if !is_dns1123_label(&v.name) {
            causes.push(invalid(format!("{f}.name"), &v.name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
        } else if !names.insert(v.name.as_str()) {
            causes.push(duplicate(format!("{f}.name"), &v.name));
        }
        // Every source the volume names other than emptyDir: hostPath reaches the host, the
        // others are not implemented (and some reach the host or the network too).
        let value = serde_json::to_value(v).unwrap_or_default();
        for source in value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| *k != "name" && *k != EMPTY_DIR)
        {
            let why = if source == "hostPath" {
                "hostPath volumes reach the host's filesystem".to_string()
            } else {
                format!("{source} volumes are not supported; use emptyDir")
            };
            causes.push(forbidden(format!("{f}.{source}"), &why));
        }
    }
    names
}

fn validate_mounts(
    mounts: Option<&[core::VolumeMount]>,
    volumes: &BTreeSet<&str>,
    f: &str,
    causes: &mut Vec<Cause>,
) {
    for (j, m) in mounts.into_iter().flatten().enumerate() {
        let mf = format!("{f}.volumeMounts[{j}]");
        if !volumes.contains(m.name.as_str()) {
            causes.push(Cause {
                reason: "FieldValueNotFound",
                field: format!("{mf}.name"),
                message: format!("Not found: \"{}\"", m.name),
            });
        }
        if m.mount_path.is_empty() {
            causes.push(required(format!("{mf}.mountPath")));
        } else if !m.mount_path.starts_with('/') {
            causes.push(invalid(
                format!("{mf}.mountPath"),
                &m.mount_path,
                "must be an absolute path",
            ));
        } else if m.mount_path.split('/').any(|part| part == "..") {
            causes.push(invalid(
                format!("{mf}.mountPath"),
                &m.mount_path,
                "must not contain '..'",
            ));
        }
        if m.sub_path.as_deref().is_some_and(|p| !p.is_empty()) {
            causes.push(forbidden(
                format!("{mf}.subPath"),
                "subPath is not supported",
            ));
        }
    }
}

/// The container fields that reach the host.
fn host_reach(sc: Option<&core::SecurityContext>, devices: bool, f: &str, causes: &mut Vec<Cause>) {
    if devices {
        causes.push(forbidden(
            format!("{f}.volumeDevices"),
            "devices are not available to pods",
        ));
    }
    let Some(sc) = sc else { return };
    if sc.privileged == Some(true) {
        causes.push(forbidden(
            format!("{f}.securityContext.privileged"),
            "privileged containers are not allowed",
        ));
    }
    if sc.allow_privilege_escalation == Some(true) {
        causes.push(forbidden(
            format!("{f}.securityContext.allowPrivilegeEscalation"),
            "privilege escalation is not allowed",
        ));
    }
    if sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| !add.is_empty())
    {
        causes.push(forbidden(
            format!("{f}.securityContext.capabilities.add"),
            "adding capabilities is not allowed",
        ));
    }
    if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
        causes.push(forbidden(
            format!("{f}.securityContext.procMount"),
            "only the Default proc mount is allowed",
        ));
    }
}

fn validate_ports(c: &core::Container, f: &str, causes: &mut Vec<Cause>) {
    for (j, p) in c.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            causes.push(invalid(
                format!("{f}.ports[{j}].containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port {
            if !(0..=65535).contains(&hp) {
                causes.push(invalid(
                    format!("{f}.ports[{j}].hostPort"),
                    hp,
                    "must be between 0 and 65535, inclusive",
                ));
            }
        }
        if let Some(proto) = &p.protocol {
            if !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                causes.push(invalid(
                    format!("{f}.ports[{j}].protocol"),
                    proto,
                    "supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ));
            }
        }
    }
}

/// Docker's image reference grammar (distribution's `reference`):
/// `[domain[:port]/]path(/path)*[:tag][@algorithm:hex]`.
pub fn is_image_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return false;
    }
    // A tag is what follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) || name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            if !is_domain(first) {
                return false;
            }
            parts.remove(0);
        }
    }
    !parts.is_empty() && parts.iter().all(|p| is_path_component(p))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host a DNS name or an IPv4 address (or `[IPv6]`).
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
                    && !c.starts_with('-')
                    && !c.ends_with('-')
            })
    })
}

/// `[\w][\w.-]{0,127}`
fn is_tag(t: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !t.is_empty()
        && t.len() <= 128
        && word(t.as_bytes()[0])
        && t.bytes().all(|c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`, the hex at least 32 digits.
fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    !alg.is_empty()
        && alg.as_bytes()[0].is_ascii_alphabetic()
        && alg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+.-_".contains(&c))
        && hex.len() >= 32
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes_of(spec: serde_json::Value) -> Vec<Cause> {
        let spec: core::PodSpec = serde_json::from_value(spec).unwrap();
        let mut causes = Vec::new();
        validate_pod_spec(&spec, "spec", &mut causes);
        causes
    }

    fn fields(spec: serde_json::Value) -> Vec<String> {
        causes_of(spec).into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn image_references() {
        for ok in [
            "user/mysite",
            "busybox",
            "keelson/pause:latest",
            "registry.example:5000/a/b-c__d.e:v1.2_3",
            "localhost/x",
            "[::1]:5000/x:1",
            "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a:1@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_image_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "User/site",
            "a/../b",
            "/abs",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:xyz",
            "a b",
            "a/b/",
            "-a",
            "a:b:c",
            "host:port:/x",
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }

    #[test]
    fn host_reaching_fields_are_forbidden_by_name() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "x", "path": "/"}}],
            "containers": [{"name": "c", "image": "a",
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                                    "capabilities": {"add": ["SYS_ADMIN"]}},
                "volumeDevices": [{"name": "h", "devicePath": "/dev/x"}]}],
            "initContainers": [{"name": "i", "image": "a", "securityContext": {"privileged": true}}],
        });
        let causes = causes_of(spec);
        let fs: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        for want in [
            "spec.hostNetwork",
            "spec.hostPID",
            "spec.hostIPC",
            "spec.volumes[0].hostPath",
            "spec.volumes[1].nfs",
            "spec.containers[0].securityContext.privileged",
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            "spec.containers[0].securityContext.capabilities.add",
            "spec.containers[0].volumeDevices",
            "spec.initContainers[0].securityContext.privileged",
        ] {
            assert!(fs.contains(&want), "{want} in {fs:?}");
        }
        assert!(causes
            .iter()
            .filter(|c| c.field != "spec.volumes[1].nfs")
            .all(|c| c.reason == "FieldValueForbidden"));
    }

    #[test]
    fn harmless_fields_are_accepted() {
        let spec = json!({
            "dnsPolicy": "ClusterFirst", "tolerations": [{"key": "k", "operator": "Exists"}],
            "hostNetwork": false, "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "user/mysite", "securityContext": {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false, "privileged": false},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}],
        });
        assert_eq!(causes_of(spec), vec![]);
    }

    #[test]
    fn volumes_and_mounts() {
        let fs = fields(json!({
            "volumes": [{"name": "/tmp/probe", "emptyDir": {}}, {"name": "ok", "emptyDir": {}}, {"name": "ok", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "a", "volumeMounts": [
                {"name": "missing", "mountPath": "/m"},
                {"name": "ok", "mountPath": "relative"},
                {"name": "ok", "mountPath": "/a/../etc"},
                {"name": "ok", "mountPath": "/x", "subPath": "../.."}]}],
        }));
        for want in [
            "spec.volumes[0].name",
            "spec.volumes[2].name",
            "spec.containers[0].volumeMounts[0].name",
            "spec.containers[0].volumeMounts[1].mountPath",
            "spec.containers[0].volumeMounts[2].mountPath",
            "spec.containers[0].volumeMounts[3].subPath",
        ] {
            assert!(fs.contains(&want.to_string()), "{want} in {fs:?}");
        }
    }
}
