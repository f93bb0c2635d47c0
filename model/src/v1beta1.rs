//! Conversion between the seed's v1beta1 JSON objects (the 2014 Kubernetes API) and keelson's
//! internal model, the core/v1 types of `k8s-openapi`.
//!
//! Pure functions, no I/O. The `*_from_v1beta1` functions fail only when a field cannot be
//! converted (wrong JSON type, unknown enum value, wrong `kind`/`apiVersion`); required fields,
//! names and ranges are the caller's to validate. Fields v1beta1 does not define are ignored,
//! as the 2014 server did; `null` is the same as an absent field, and so is `""` for optional
//! strings. The `*_to_v1beta1` functions never fail: what v1beta1 cannot express is dropped.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, EmptyDirVolumeSource, Endpoints, EnvVar,
    HostPathVolumeSource, Node, NodeAddress, NodeCondition, NodeStatus, Pod, PodSpec, PodStatus,
    PodTemplateSpec, ReplicationController, ReplicationControllerSpec, ResourceRequirements,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};

/// Annotation set on a Service converted from v1beta1 without `containerPort`: its endpoints use
/// the first port of the pod's first container.
pub const FIRST_CONTAINER_PORT_ANNOTATION: &str = "keelson.io/target-port-first-container-port";
/// Annotation keeping a v1beta1 manifest `id` that differs from its pod's (or, in a pod
/// template, its controller's) id; without it the manifest id is the object's id.
pub const MANIFEST_ID_ANNOTATION: &str = "keelson.io/v1beta1-manifest-id";
const API_VERSION: &str = "v1beta1";
/// Annotations that carry v1beta1 fields: never shown as annotations in v1beta1 output.
const INTERNAL_ANNOTATIONS: [&str; 2] = [FIRST_CONTAINER_PORT_ANNOTATION, MANIFEST_ID_ANNOTATION];

/// A conversion failure naming the v1beta1 field at fault (e.g.
/// "desiredState.manifest.containers[0].cpu"); the field is empty when the document itself is
/// not a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConvertError {}

type Result<T> = std::result::Result<T, ConvertError>;

fn fail<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConvertError {
        field: field.into(),
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading v1beta1 JSON: typed accessors that know their field path.

/// A JSON value being read, with its v1beta1 field path for error messages.
struct At<'a> {
    v: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn new(v: &'a Value, path: String) -> Self {
        At { v, path }
    }

    fn root(v: &'a Value) -> Result<Self> {
        match v.is_object() {
            true => Ok(At::new(v, String::new())),
            false => fail("", "expected a JSON object"),
        }
    }

    fn path(&self, key: &str) -> String {
        match self.path.is_empty() {
            true => key.to_string(),
            false => format!("{}.{key}", self.path),
        }
    }

    /// The value of `key`; absent and `null` are the same.
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }

    /// The value of `key` converted by `f`, or an error naming the field if `f` returns None.
    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.raw(key).map(f) {
            None => Ok(None),
            Some(Some(t)) => Ok(Some(t)),
            Some(None) => fail(self.path(key), format!("expected {what}")),
        }
    }

    fn obj(&self, key: &str) -> Result<Option<At<'a>>> {
        let path = self.path(key);
        self.typed(key, "an object", |x| {
            x.is_object().then(|| At::new(x, path))
        })
    }

    fn str(&self, key: &str) -> Result<Option<String>> {
        let s = self.typed(key, "a string", |x| x.as_str().map(str::to_string))?;
        Ok(s.filter(|s| !s.is_empty()))
    }

    fn int(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "an integer", Value::as_i64)
    }

    fn i32(&self, key: &str) -> Result<Option<i32>> {
        let small = |x: &Value| x.as_i64().and_then(|n| i32::try_from(n).ok());
        self.typed(key, "a 32-bit integer", small)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    fn time(&self, key: &str) -> Result<Option<Time>> {
        self.typed(key, "an RFC 3339 time", |x| {
            x.as_str()?.parse().ok().map(Time)
        })
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let strings = |x: &Value| {
            x.as_array()?
                .iter()
                .map(|s| Some(s.as_str()?.into()))
                .collect()
        };
        self.typed(key, "an array of strings", strings)
    }

    fn map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        let entry = |(k, v): (&String, &Value)| Some((k.clone(), v.as_str()?.to_string()));
        self.typed(key, "an object of strings", |x| {
            x.as_object()?.iter().map(entry).collect()
        })
    }

    /// The elements of array `key`, each an object with its path `key[i]`.
    fn list(&self, key: &str) -> Result<Vec<At<'a>>> {
        let Some(items) = self.typed(key, "an array", Value::as_array)? else {
            return Ok(Vec::new());
        };
        let each = |(i, x): (usize, &'a Value)| match x.is_object() {
            true => Ok(At::new(x, format!("{}[{i}]", self.path(key)))),
            false => fail(format!("{}[{i}]", self.path(key)), "expected an object"),
        };
        items.iter().enumerate().map(each).collect()
    }

    /// `f` of each element of array `key`; None if there are none.
    fn each<T>(&self, key: &str, f: impl Fn(&At<'a>) -> Result<T>) -> Result<Option<Vec<T>>> {
        let items = self.list(key)?.iter().map(f).collect::<Result<Vec<_>>>()?;
        Ok((!items.is_empty()).then_some(items))
    }

    /// The non-null entries of object `key`, each with its path `key.name`.
    fn entries(&self, key: &str) -> Result<Vec<(String, At<'a>)>> {
        let Some(m) = self.typed(key, "an object", Value::as_object)? else {
            return Ok(Vec::new());
        };
        let each = |(k, v): (&String, &'a Value)| (k.clone(), At::new(v, self.path(key) + "." + k));
        Ok(m.iter().filter(|(_, v)| !v.is_null()).map(each).collect())
    }
}

/// Runs `f` on `at` if present.
fn opt<'a, T>(at: Option<At<'a>>, f: impl FnOnce(&At<'a>) -> Result<T>) -> Result<Option<T>> {
    at.map(|a| f(&a)).transpose()
}

/// Sets `key` in `annotations` to `value`, or removes it if None; an empty map becomes None.
fn set_annotation(
    annotations: &mut Option<BTreeMap<String, String>>,
    key: &str,
    value: Option<String>,
) {
    let map = annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => map.insert(key.to_string(), v),
        None => map.remove(key),
    };
    if map.is_empty() {
        *annotations = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Writing v1beta1 JSON: built with `json!`, then `compact` drops the null (absent) fields.

/// `v` without null object fields, recursively: v1beta1 omits absent fields.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => m
            .into_iter()
            .filter(|(_, x)| !x.is_null())
            .map(|(k, x)| (k, compact(x)))
            .collect(),
        Value::Array(items) => items.into_iter().map(compact).collect(),
        v => v,
    }
}

/// The core/v1 JSON of `t`; used for types holding a `Time`, whose serialization returns a
/// Result (and `json!` would unwrap it).
fn to_json<T: serde::Serialize>(t: T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The value of `q` times 10^`scale` (3: thousandths), rounded up like Kubernetes'
/// `ScaledValue`; None if `q` does not parse or does not fit an i64.
fn quantity_scaled(q: &Quantity, scale: i32) -> Option<i64> {
    let s = q.0.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(d - b'0'))?;
    }
    // (power of 2, power of 10) of the suffix.
    let (binary, decimal) = match suffix {
        "" => (0, 0),
        "n" | "u" | "m" => (0, -3 * (1 + "mun".find(suffix)? as i32)),
        "k" | "M" | "G" | "T" | "P" | "E" => (0, 3 * (1 + "kMGTPE".find(suffix)? as i32)),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            (10 * (1 + "KMGTPE".find(&suffix[..1])? as u32), 0)
        }
        e => (0, e.strip_prefix(['e', 'E'])?.parse::<i32>().ok()?),
    };
    let value = mantissa.checked_mul(1i128.checked_shl(binary)?)?;
    let exponent = decimal
        .checked_add(scale)?
        .checked_sub(i32::try_from(fraction.len()).ok()?)?;
    let value = match u32::try_from(exponent) {
        Ok(e) => value.checked_mul(10i128.checked_pow(e)?)?,
        Err(_) => {
            let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
            (value + divisor - 1) / divisor
        }
    };
    i64::try_from(if negative { -value } else { value }).ok()
}

// ---------------------------------------------------------------------------------------------
// Object metadata.

fn meta_from(at: &At, kind: &str) -> Result<ObjectMeta> {
    if let Some(k) = at.str("kind")?.filter(|k| k != kind) {
        return fail("kind", format!("expected \"{kind}\", got \"{k}\""));
    }
    if let Some(a) = at.str("apiVersion")?.filter(|a| a != API_VERSION) {
        return fail(
            "apiVersion",
            format!("expected \"{API_VERSION}\", got \"{a}\""),
        );
    }
    let resource_version = at.typed("resourceVersion", "a non-negative integer", Value::as_u64)?;
    Ok(ObjectMeta {
        name: at.str("id")?,
        namespace: Some("default".to_string()),
        uid: at.str("uid")?,
        creation_timestamp: at.time("creationTimestamp")?,
        resource_version: resource_version.map(|n| n.to_string()),
        self_link: at.str("selfLink")?,
        labels: at.map("labels")?,
        annotations: at.map("annotations")?,
        ..Default::default()
    })
}

/// Annotations without the internal ones; None if none are left.
fn shown_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    let mut shown = annotations.cloned().unwrap_or_default();
    shown.retain(|k, _| !INTERNAL_ANNOTATIONS.contains(&k.as_str()));
    (!shown.is_empty()).then_some(shown)
}

/// A v1beta1 object: `kind`, `apiVersion`, the metadata fields, then the fields of `body`.
fn object(kind: &str, meta: &ObjectMeta, body: Value) -> Value {
    let rv = meta.resource_version.as_deref();
    let rv = rv.map(|rv| {
        rv.parse::<u64>()
            .map_or_else(|_| Value::from(rv), Value::from)
    });
    let mut m = json!({
        "kind": kind, "apiVersion": API_VERSION, "id": meta.name, "uid": meta.uid,
        "creationTimestamp": to_json(&meta.creation_timestamp), "resourceVersion": rv,
        "selfLink": meta.self_link, "labels": meta.labels,
        "annotations": shown_annotations(meta.annotations.as_ref()),
    });
    if let (Value::Object(m), Value::Object(body)) = (&mut m, body) {
        m.extend(body);
    }
    compact(m)
}

/// The v1beta1 manifest id of a pod (template) whose owner is named `owner`.
fn manifest_id(meta: Option<&ObjectMeta>, owner: Option<&str>) -> Option<String> {
    let kept = meta.and_then(|m| m.annotations.as_ref()?.get(MANIFEST_ID_ANNOTATION));
    kept.map(String::as_str).or(owner).map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Pod spec: `desiredState` (+ `nodeSelector`) of a pod or a pod template.

/// The spec in `at` (a pod or pod template) and its manifest id if it differs from `owner`'s.
fn pod_body_from(at: &At, owner: Option<&str>) -> Result<(PodSpec, Option<String>)> {
    let mut spec = PodSpec::default();
    let mut manifest_id = None;
    if let Some(ds) = at.obj("desiredState")? {
        spec.node_name = ds.str("host")?;
        spec.node_selector = ds.map("nodeSelector")?;
        if let Some(m) = ds.obj("manifest")? {
            m.str("version")?;
            manifest_id = m.str("id")?.filter(|id| Some(id.as_str()) != owner);
            spec.containers = m.each("containers", container_from)?.unwrap_or_default();
            spec.volumes = m.each("volumes", volume_from)?;
            spec.restart_policy = opt(m.obj("restartPolicy")?, restart_policy_from)?.flatten();
        }
    }
    if let Some(selector) = at.map("nodeSelector")? {
        spec.node_selector = Some(selector);
    }
    Ok((spec, manifest_id))
}

/// The v1beta1 `desiredState` of a pod (template).
fn desired_state(spec: &PodSpec, manifest_id: Option<String>) -> Value {
    let policy = match spec.restart_policy.as_deref() {
        Some("Always") => Some(json!({ "always": {} })),
        Some("OnFailure") => Some(json!({ "onFailure": {} })),
        Some("Never") => Some(json!({ "never": {} })),
        _ => None,
    };
    let containers: Vec<Value> = spec.containers.iter().map(container_to).collect();
    let volumes: Option<Vec<Value>> = spec
        .volumes
        .as_ref()
        .map(|v| v.iter().map(volume_to).collect());
    json!({
        "manifest": {
            "version": API_VERSION, "id": manifest_id, "containers": containers,
            "volumes": volumes, "restartPolicy": policy,
        },
        "host": spec.node_name,
    })
}

fn container_from(c: &At) -> Result<Container> {
    let mut requests = BTreeMap::new();
    if let Some(cpu) = c.int("cpu")?.filter(|n| *n != 0) {
        requests.insert("cpu".to_string(), Quantity(format!("{cpu}m")));
    }
    if let Some(memory) = c.int("memory")?.filter(|n| *n != 0) {
        requests.insert("memory".to_string(), Quantity(memory.to_string()));
    }
    let resources = ResourceRequirements {
        requests: Some(requests),
        ..Default::default()
    };
    let port = |p: &At| {
        Ok(ContainerPort {
            name: p.str("name")?,
            container_port: p.i32("containerPort")?.unwrap_or(0),
            host_port: p.i32("hostPort")?.filter(|n| *n != 0),
            host_ip: p.str("hostIP")?,
            protocol: p.str("protocol")?,
        })
    };
    let env = |e: &At| {
        let (name, value) = (e.str("name")?.unwrap_or_default(), e.str("value")?);
        Ok(EnvVar {
            name,
            value,
            value_from: None,
        })
    };
    let mount = |m: &At| {
        let (name, mount_path) = (
            m.str("name")?.unwrap_or_default(),
            m.str("mountPath")?.unwrap_or_default(),
        );
        let read_only = m.bool("readOnly")?.filter(|r| *r);
        Ok(VolumeMount {
            name,
            mount_path,
            read_only,
            ..Default::default()
        })
    };
    let pull = c.str("imagePullPolicy")?;
    Ok(Container {
        name: c.str("name")?.unwrap_or_default(),
        image: c.str("image")?,
        command: c.strings("command")?,
        working_dir: c.str("workingDir")?,
        image_pull_policy: pull.map(|p| p.trim_start_matches("Pull").to_string()),
        resources: resources
            .requests
            .as_ref()
            .is_some_and(|r| !r.is_empty())
            .then_some(resources),
        ports: c.each("ports", port)?,
        env: c.each("env", env)?,
        volume_mounts: c.each("volumeMounts", mount)?,
        ..Default::default()
    })
}

fn container_to(c: &Container) -> Value {
    // v1beta1 has one amount per resource: the request, else the limit.
    let res = c.resources.as_ref();
    let amount = |key: &str, scale| {
        let requested = res.and_then(|r| r.requests.as_ref()?.get(key));
        let q = requested.or_else(|| res.and_then(|r| r.limits.as_ref()?.get(key)));
        q.and_then(|q| quantity_scaled(q, scale))
    };
    let pull = c.image_pull_policy.as_ref().map(|p| format!("Pull{p}"));
    // Ports, env and volume mounts have the same JSON shape in v1beta1 and core/v1.
    compact(json!({
        "name": c.name, "image": c.image, "command": c.command, "workingDir": c.working_dir,
        "cpu": amount("cpu", 3), "memory": amount("memory", 0), "ports": c.ports, "env": c.env,
        "volumeMounts": c.volume_mounts, "imagePullPolicy": pull,
    }))
}

fn volume_from(v: &At) -> Result<Volume> {
    let name = v.str("name")?.unwrap_or_default();
    let empty_dir = Some(EmptyDirVolumeSource::default());
    let mut volume = Volume {
        name,
        empty_dir,
        ..Default::default()
    };
    // A missing or empty source meant emptyDir in v1beta1.
    let Some(source) = v.obj("source")? else {
        return Ok(volume);
    };
    if let Some(host) = source.obj("hostDir")? {
        let path = host.str("path")?.unwrap_or_default();
        (volume.empty_dir, volume.host_path) =
            (None, Some(HostPathVolumeSource { path, type_: None }));
    }
    let fields = source
        .v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, x)| !x.is_null());
    if let Some((key, _)) = fields
        .into_iter()
        .find(|(k, _)| *k != "emptyDir" && *k != "hostDir")
    {
        return fail(
            source.path(key),
            "unsupported volume source (expected emptyDir or hostDir)",
        );
    }
    Ok(volume)
}

/// The core/v1 volume source as the v1beta1 `source` (`hostPath` is called `hostDir`).
fn volume_to(v: &Volume) -> Value {
    let mut source = match to_json(v) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    source.remove("name");
    if let Some(host) = &v.host_path {
        source.remove("hostPath");
        source.insert("hostDir".into(), json!({ "path": host.path }));
    }
    json!({ "name": v.name, "source": source })
}

/// `{always: {}}` etc. as a core/v1 restart policy; `{}` is None (the caller's default).
fn restart_policy_from(rp: &At) -> Result<Option<String>> {
    let mut found = None;
    for (key, value) in
        rp.v.as_object()
            .into_iter()
            .flatten()
            .filter(|(_, x)| !x.is_null())
    {
        let policy = match key.as_str() {
            "always" => "Always",
            "onFailure" => "OnFailure",
            "never" => "Never",
            _ => return fail(rp.path(key), "expected always, onFailure or never"),
        };
        if !value.is_object() {
            return fail(rp.path(key), "expected an object");
        }
        if found.replace(policy).is_some() {
            return fail(
                rp.path.clone(),
                "expected only one of always, onFailure, never",
            );
        }
    }
    Ok(found.map(str::to_string))
}

// ---------------------------------------------------------------------------------------------
// Pod status: `currentState`.

fn pod_status_from(cs: &At, spec: &PodSpec) -> Result<Option<PodStatus>> {
    let mut statuses = Vec::new();
    for (name, at) in cs.entries("info")? {
        statuses.push(container_status_from(name, &at)?);
    }
    let order = |name: &str| spec.containers.iter().position(|c| c.name == name);
    statuses.sort_by_key(|s| order(&s.name).unwrap_or(usize::MAX));
    let exit_code =
        |s: &ContainerStatus| s.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code);
    let failed = statuses
        .iter()
        .any(|s| exit_code(s).is_some_and(|code| code != 0));
    let phase = match cs.str("status")?.as_deref() {
        None => None,
        Some("Waiting") => Some("Pending"),
        Some("Running") => Some("Running"),
        Some("Terminated") if failed => Some("Failed"),
        Some("Terminated") => Some("Succeeded"),
        Some(other) => return fail(cs.path("status"), format!("unknown pod status \"{other}\"")),
    };
    let status = PodStatus {
        phase: phase.map(str::to_string),
        host_ip: cs.str("hostIP")?,
        pod_ip: cs.str("podIP")?,
        container_statuses: (!statuses.is_empty()).then_some(statuses),
        ..Default::default()
    };
    Ok((status != PodStatus::default()).then_some(status))
}

fn container_status_from(name: String, at: &At) -> Result<ContainerStatus> {
    if !at.v.is_object() {
        return fail(at.path.clone(), "expected an object");
    }
    Ok(ContainerStatus {
        name,
        image: at.str("image")?.unwrap_or_default(),
        image_id: at.str("imageID")?.unwrap_or_default(),
        container_id: at.str("containerID")?,
        restart_count: at.i32("restartCount")?.unwrap_or(0),
        ready: at.bool("ready")?.unwrap_or(false),
        state: opt(at.obj("state")?, state_from)?,
        last_state: opt(at.obj("lastState")?, state_from)?,
        ..Default::default()
    })
}

/// A v1beta1 container state: core/v1's, except that `terminated` is called `termination`.
fn state_from(s: &At) -> Result<ContainerState> {
    let waiting = |w: &At| {
        let (reason, message) = (w.str("reason")?, w.str("message")?);
        Ok(ContainerStateWaiting { reason, message })
    };
    let running = |r: &At| {
        Ok(ContainerStateRunning {
            started_at: r.time("startedAt")?,
        })
    };
    let terminated = |t: &At| {
        Ok(ContainerStateTerminated {
            exit_code: t.i32("exitCode")?.unwrap_or(0),
            signal: t.i32("signal")?.filter(|n| *n != 0),
            reason: t.str("reason")?,
            message: t.str("message")?,
            started_at: t.time("startedAt")?,
            finished_at: t.time("finishedAt")?,
            container_id: t.str("containerID")?,
        })
    };
    Ok(ContainerState {
        waiting: opt(s.obj("waiting")?, waiting)?,
        running: opt(s.obj("running")?, running)?,
        terminated: opt(s.obj("termination")?, terminated)?,
    })
}

fn state_to(s: &ContainerState) -> Value {
    let mut m = match to_json(s) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(t) = m.remove("terminated") {
        m.insert("termination".into(), t);
    }
    m.into()
}

fn container_status_to(s: &ContainerStatus) -> Value {
    let state = s.state.as_ref().map(state_to);
    let last_state = s.last_state.as_ref().map(state_to);
    let (image, image_id) = (
        Some(&s.image).filter(|i| !i.is_empty()),
        Some(&s.image_id).filter(|i| !i.is_empty()),
    );
    json!({
        "state": state, "lastState": last_state, "restartCount": s.restart_count, "image": image,
        "imageID": image_id, "containerID": s.container_id, "ready": s.ready,
    })
}

// ---------------------------------------------------------------------------------------------
// Pods and replication controllers.

/// Converts a v1beta1 Pod. `desiredState.host` (else `currentState.host`) becomes the node
/// name; `currentState` becomes the status (Terminated: Failed if a container exited non-zero).
pub fn pod_from_v1beta1(v: &Value) -> Result<Pod> {
    let at = At::root(v)?;
    let mut metadata = meta_from(&at, "Pod")?;
    let (mut spec, manifest_id) = pod_body_from(&at, metadata.name.as_deref())?;
    set_annotation(
        &mut metadata.annotations,
        MANIFEST_ID_ANNOTATION,
        manifest_id,
    );
    let mut status = None;
    if let Some(cs) = at.obj("currentState")? {
        if spec.node_name.is_none() {
            spec.node_name = cs.str("host")?;
        }
        status = pod_status_from(&cs, &spec)?;
    }
    Ok(Pod {
        metadata,
        spec: Some(spec),
        status,
    })
}

/// Converts a Pod to v1beta1 (phase Pending/Unknown → Waiting, Succeeded/Failed → Terminated).
pub fn pod_to_v1beta1(p: &Pod) -> Value {
    let default = PodSpec::default();
    let spec = p.spec.as_ref().unwrap_or(&default);
    let desired = desired_state(
        spec,
        manifest_id(Some(&p.metadata), p.metadata.name.as_deref()),
    );
    let mut current = json!({ "host": spec.node_name });
    if let Some(st) = &p.status {
        let status = match st.phase.as_deref() {
            Some("Running") => "Running",
            Some("Succeeded" | "Failed") => "Terminated",
            _ => "Waiting",
        };
        let info = st.container_statuses.iter().flatten();
        let info: Map<String, Value> = info
            .map(|s| (s.name.clone(), container_status_to(s)))
            .collect();
        current = json!({
            "status": status, "host": spec.node_name, "hostIP": st.host_ip, "podIP": st.pod_ip,
            "info": (!info.is_empty()).then_some(info),
        });
    }
    let body = json!({ "desiredState": desired, "nodeSelector": spec.node_selector, "currentState": current });
    object("Pod", &p.metadata, body)
}

/// Converts a v1beta1 ReplicationController; its `currentState` is ignored (status is None).
pub fn controller_from_v1beta1(v: &Value) -> Result<ReplicationController> {
    let at = At::root(v)?;
    let metadata = meta_from(&at, "ReplicationController")?;
    let mut spec = ReplicationControllerSpec::default();
    if let Some(ds) = at.obj("desiredState")? {
        spec.replicas = ds.i32("replicas")?;
        spec.selector = ds.map("replicaSelector")?;
        spec.template = opt(ds.obj("podTemplate")?, |t| {
            let (pod_spec, manifest_id) = pod_body_from(t, metadata.name.as_deref())?;
            let (labels, annotations) = (t.map("labels")?, t.map("annotations")?);
            let mut meta = ObjectMeta {
                labels,
                annotations,
                ..Default::default()
            };
            set_annotation(&mut meta.annotations, MANIFEST_ID_ANNOTATION, manifest_id);
            Ok(PodTemplateSpec {
                metadata: Some(meta),
                spec: Some(pod_spec),
            })
        })?;
    }
    Ok(ReplicationController {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

/// Converts a ReplicationController to v1beta1; `currentState.replicas` is the observed count.
pub fn controller_to_v1beta1(rc: &ReplicationController) -> Value {
    let default = ReplicationControllerSpec::default();
    let spec = rc.spec.as_ref().unwrap_or(&default);
    let template = spec.template.as_ref().map(|t| {
        let meta = t.metadata.clone().unwrap_or_default();
        let id = manifest_id(Some(&meta), rc.metadata.name.as_deref());
        let desired = desired_state(t.spec.as_ref().unwrap_or(&PodSpec::default()), id);
        json!({
            "desiredState": desired, "nodeSelector": t.spec.as_ref().and_then(|s| s.node_selector.as_ref()),
            "labels": meta.labels, "annotations": shown_annotations(meta.annotations.as_ref()),
        })
    });
    let observed = rc.status.as_ref().map_or(0, |s| s.replicas);
    let body = json!({
        "desiredState": { "replicas": spec.replicas, "replicaSelector": spec.selector, "podTemplate": template },
        "currentState": { "replicas": observed, "replicaSelector": spec.selector, "podTemplate": template },
    });
    object("ReplicationController", &rc.metadata, body)
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints.

/// Converts a v1beta1 Service to one ServicePort. Without `containerPort` (or with 0 or "") the
/// target port is None and [`FIRST_CONTAINER_PORT_ANNOTATION`] is set; `portalIP` and
/// `proxyPort` are ignored (the master assigns them); `createExternalLoadBalancer` → LoadBalancer.
pub fn service_from_v1beta1(v: &Value) -> Result<Service> {
    let at = At::root(v)?;
    let mut metadata = meta_from(&at, "Service")?;
    let target_port = match at.raw("containerPort") {
        None => None,
        Some(Value::String(s)) => (!s.is_empty()).then(|| IntOrString::String(s.clone())),
        Some(x) => match x.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(0) => None,
            Some(n) => Some(IntOrString::Int(n)),
            None => return fail("containerPort", "expected a port number or a port name"),
        },
    };
    let first = target_port.is_none().then(|| "true".to_string());
    set_annotation(
        &mut metadata.annotations,
        FIRST_CONTAINER_PORT_ANNOTATION,
        first,
    );
    let (port, protocol) = (at.i32("port")?.unwrap_or(0), at.str("protocol")?);
    let port = ServicePort {
        port,
        protocol,
        target_port,
        ..Default::default()
    };
    let load_balancer = at.bool("createExternalLoadBalancer")?.filter(|b| *b);
    let spec = ServiceSpec {
        ports: Some(vec![port]),
        selector: at.map("selector")?,
        type_: load_balancer.map(|_| "LoadBalancer".to_string()),
        ..Default::default()
    };
    Ok(Service {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

/// Converts a Service to v1beta1 from its first port; `proxyPort` is that port.
pub fn service_to_v1beta1(s: &Service) -> Value {
    let default = ServiceSpec::default();
    let spec = s.spec.as_ref().unwrap_or(&default);
    let annotations = s.metadata.annotations.as_ref();
    let first_container_port = annotations
        .and_then(|a| a.get(FIRST_CONTAINER_PORT_ANNOTATION))
        .is_some_and(|v| v == "true");
    let port = spec.ports.as_ref().and_then(|ps| ps.first());
    let target = port
        .and_then(|p| p.target_port.as_ref())
        .filter(|_| !first_container_port);
    let target = target.map(|t| match t {
        IntOrString::Int(n) => Value::from(*n),
        IntOrString::String(name) => Value::from(name.as_str()),
    });
    let load_balancer = (spec.type_.as_deref() == Some("LoadBalancer")).then_some(true);
    let body = json!({
        "port": port.map(|p| p.port), "protocol": port.and_then(|p| p.protocol.as_ref()),
        "containerPort": target, "selector": spec.selector, "portalIP": spec.cluster_ip,
        "proxyPort": port.map(|p| p.port), "createExternalLoadBalancer": load_balancer,
    });
    object("Service", &s.metadata, body)
}

/// Converts Endpoints to v1beta1: `"IP:PORT"` for every address of every subset, with the
/// subset's first port (v1beta1 services have one port); IPv6 addresses are bracketed.
pub fn endpoints_to_v1beta1(e: &Endpoints) -> Value {
    let mut list = Vec::new();
    for subset in e.subsets.iter().flatten() {
        let Some(port) = subset.ports.iter().flatten().next().map(|p| p.port) else {
            continue;
        };
        for ip in subset.addresses.iter().flatten().map(|a| &a.ip) {
            list.push(match ip.contains(':') {
                true => format!("[{ip}]:{port}"),
                false => format!("{ip}:{port}"),
            });
        }
    }
    object("Endpoints", &e.metadata, json!({ "endpoints": list }))
}

// ---------------------------------------------------------------------------------------------
// Minions (nodes).

/// Converts a v1beta1 Minion to a Node. Nodes are cluster-scoped: the namespace is None.
/// Condition `kind` becomes `type`; status Full/None/other → True/False/Unknown.
pub fn minion_from_v1beta1(v: &Value) -> Result<Node> {
    let at = At::root(v)?;
    let mut metadata = meta_from(&at, "Minion")?;
    metadata.namespace = None;
    let address = |address| NodeAddress {
        address,
        type_: "InternalIP".into(),
    };
    let addresses = at.str("hostIP")?.map(|ip| vec![address(ip)]);
    let mut capacity = BTreeMap::new();
    for (name, q) in opt(at.obj("resources")?, |r| r.entries("capacity"))?.unwrap_or_default() {
        let quantity = match (q.v.as_i64(), q.v.as_str()) {
            (Some(n), _) if name == "cpu" => format!("{n}m"),
            (Some(n), _) => n.to_string(),
            (None, Some(s)) => s.to_string(),
            _ => return fail(q.path, "expected an integer or a quantity string"),
        };
        capacity.insert(name, Quantity(quantity));
    }
    let condition = |c: &At| {
        let status = match c.str("status")?.as_deref() {
            Some("Full" | "True") => "True",
            Some("None" | "False") => "False",
            _ => "Unknown",
        };
        Ok(NodeCondition {
            type_: c.str("kind")?.unwrap_or_default(),
            status: status.to_string(),
            reason: c.str("reason")?,
            message: c.str("message")?,
            last_heartbeat_time: c.time("lastProbeTime")?,
            last_transition_time: c.time("lastTransitionTime")?,
        })
    };
    let conditions = opt(at.obj("status")?, |s| s.each("conditions", condition))?.flatten();
    let capacity = (!capacity.is_empty()).then_some(capacity);
    let status = NodeStatus {
        addresses,
        capacity,
        conditions,
        ..Default::default()
    };
    let status = (status != NodeStatus::default()).then_some(status);
    Ok(Node {
        metadata,
        spec: None,
        status,
    })
}

/// Converts a Node to a v1beta1 Minion; `hostIP` is its InternalIP (else its first address).
pub fn node_to_v1beta1(n: &Node) -> Value {
    let default = NodeStatus::default();
    let st = n.status.as_ref().unwrap_or(&default);
    let addresses = st.addresses.as_deref().unwrap_or_default();
    let ip = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .or(addresses.first());
    let mut capacity = Map::new();
    for (name, q) in st.capacity.iter().flatten() {
        let value = quantity_scaled(q, if name == "cpu" { 3 } else { 0 });
        capacity.insert(
            name.clone(),
            value.map_or_else(|| Value::from(q.0.as_str()), Value::from),
        );
    }
    let condition = |c: &NodeCondition| {
        let status = match c.status.as_str() {
            "True" => "Full",
            "False" => "None",
            _ => "Unknown",
        };
        json!({
            "kind": c.type_, "status": status, "reason": c.reason, "message": c.message,
            "lastProbeTime": to_json(&c.last_heartbeat_time),
            "lastTransitionTime": to_json(&c.last_transition_time),
        })
    };
    let conditions: Vec<Value> = st.conditions.iter().flatten().map(condition).collect();
    let body = json!({
        "hostIP": ip.map(|a| &a.address),
        "resources": (!capacity.is_empty()).then(|| json!({ "capacity": capacity })),
        "status": (!conditions.is_empty()).then(|| json!({ "conditions": conditions })),
    });
    object("Minion", &n.metadata, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = include_str!("../../examples/seed/pod.json");
    const CONTROLLER: &str = include_str!("../../examples/seed/replication-controller.json");
    const SERVICE: &str = include_str!("../../examples/seed/service.json");

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("seed manifest is JSON")
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn time(s: &str) -> Time {
        Time(s.parse().expect("valid time"))
    }

    fn error(field: &str, result: Result<impl fmt::Debug>) {
        assert_eq!(result.expect_err("conversion must fail").field, field);
    }

    /// The seed pod container: mysite, user/mysite, 100 thousandths of a core, port 80.
    fn assert_seed_container(c: &Container) {
        assert_eq!(c.name, "mysite");
        assert_eq!(c.image.as_deref(), Some("user/mysite"));
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .expect("requests");
        assert_eq!(requests.get("cpu"), Some(&Quantity("100m".into())));
        assert_eq!(c.resources.as_ref().and_then(|r| r.limits.as_ref()), None);
        let ports = c.ports.as_deref().expect("ports");
        assert_eq!((ports.len(), ports[0].container_port), (1, 80));
    }

    fn assert_seed_v1beta1_container(manifest: &Value, id: &str) {
        assert_eq!(manifest["version"], "v1beta1");
        assert_eq!(manifest["id"], id);
        let c = &manifest["containers"][0];
        assert_eq!(
            (&c["name"], &c["image"], &c["cpu"]),
            (&json!("mysite"), &json!("user/mysite"), &json!(100))
        );
        assert_eq!(c["ports"], json!([{ "containerPort": 80 }]));
    }

    #[test]
    fn seed_pod_converts_and_round_trips() {
        let pod = pod_from_v1beta1(&parse(POD)).expect("seed pod converts");
        assert_eq!(pod.metadata.name.as_deref(), Some("mysite"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(pod.metadata.labels, labels(&[("name", "mysite")]));
        assert_eq!(
            pod.metadata.annotations, None,
            "manifest id equals the pod id"
        );
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            (
                spec.containers.len(),
                spec.restart_policy.as_ref(),
                spec.node_name.as_ref()
            ),
            (1, None, None)
        );
        assert_seed_container(&spec.containers[0]);
        assert_eq!(pod.status, None);

        let back = pod_to_v1beta1(&pod);
        assert_eq!(
            (&back["kind"], &back["apiVersion"], &back["id"]),
            (&json!("Pod"), &json!("v1beta1"), &json!("mysite"))
        );
        assert_eq!(back["labels"], json!({ "name": "mysite" }));
        assert_seed_v1beta1_container(&back["desiredState"]["manifest"], "mysite");
        assert_eq!(pod_from_v1beta1(&back), Ok(pod));
    }

    #[test]
    fn seed_controller_converts_and_round_trips() {
        let rc = controller_from_v1beta1(&parse(CONTROLLER)).expect("seed controller converts");
        assert_eq!(rc.metadata.name.as_deref(), Some("mysiteController"));
        assert_eq!(rc.metadata.labels, labels(&[("name", "mysite")]));
        let spec = rc.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector, labels(&[("name", "mysite")]));
        let template = spec.template.as_ref().expect("template");
        let meta = template.metadata.as_ref().expect("template metadata");
        assert_eq!(
            (&meta.labels, &meta.annotations),
            (&labels(&[("name", "mysite")]), &None)
        );
        assert_seed_container(&template.spec.as_ref().expect("template spec").containers[0]);

        let back = controller_to_v1beta1(&rc);
        assert_eq!(
            (&back["kind"], &back["id"]),
            (&json!("ReplicationController"), &json!("mysiteController"))
        );
        let ds = &back["desiredState"];
        assert_eq!(
            (&ds["replicas"], &ds["replicaSelector"]),
            (&json!(2), &json!({ "name": "mysite" }))
        );
        assert_eq!(ds["podTemplate"]["labels"], json!({ "name": "mysite" }));
        assert_seed_v1beta1_container(
            &ds["podTemplate"]["desiredState"]["manifest"],
            "mysiteController",
        );
        assert_eq!(back["currentState"]["replicas"], 0);
        assert_eq!(back["currentState"]["podTemplate"], ds["podTemplate"]);
        assert_eq!(controller_from_v1beta1(&back), Ok(rc));
    }

    #[test]
    fn seed_service_converts_and_round_trips() {
        let svc = service_from_v1beta1(&parse(SERVICE)).expect("seed service converts");
        assert_eq!(svc.metadata.name.as_deref(), Some("mysite"));
        assert_eq!(
            svc.metadata.annotations,
            labels(&[(FIRST_CONTAINER_PORT_ANNOTATION, "true")])
        );
        let spec = svc.spec.as_ref().expect("spec");
        let ports = spec.ports.as_deref().expect("ports");
        assert_eq!(
            (ports.len(), ports[0].port, &ports[0].target_port),
            (1, 10000, &None)
        );
        assert_eq!(spec.selector, labels(&[("name", "mysite")]));

        let back = service_to_v1beta1(&svc);
        assert_eq!(
            (&back["kind"], &back["id"], &back["port"]),
            (&json!("Service"), &json!("mysite"), &json!(10000))
        );
        assert_eq!(
            (&back["selector"], &back["labels"]),
            (&json!({ "name": "mysite" }), &json!({ "name": "mysite" }))
        );
        assert_eq!(
            (back.get("containerPort"), back.get("annotations")),
            (None, None)
        );
        assert_eq!(service_from_v1beta1(&back), Ok(svc));
    }

    #[test]
    fn service_container_port_number_or_name() {
        for (port, target) in [
            (json!(8080), IntOrString::Int(8080)),
            (json!("http"), IntOrString::String("http".into())),
        ] {
            let v = json!({ "id": "web", "port": 80, "protocol": "TCP", "containerPort": port, "createExternalLoadBalancer": true });
            let svc = service_from_v1beta1(&v).expect("converts");
            assert_eq!(svc.metadata.annotations, None);
            let spec = svc.spec.as_ref().expect("spec");
            assert_eq!(
                spec.ports.as_ref().map(|p| p[0].target_port.clone()),
                Some(Some(target))
            );
            assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
            let back = service_to_v1beta1(&svc);
            assert_eq!(
                (
                    &back["containerPort"],
                    &back["protocol"],
                    &back["proxyPort"]
                ),
                (&port, &json!("TCP"), &json!(80))
            );
            assert_eq!(back["createExternalLoadBalancer"], true);
        }
    }

    #[test]
    fn status_rich_pod_round_trips() {
        let terminated = ContainerStateTerminated {
            exit_code: 137,
            reason: Some("OOMKilled".into()),
            started_at: Some(time("2014-06-06T20:00:00Z")),
            finished_at: Some(time("2014-06-06T20:05:00Z")),
            ..Default::default()
        };
        let status = ContainerStatus {
            name: "mysite".into(),
            image: "user/mysite".into(),
            restart_count: 1,
            state: Some(ContainerState {
                terminated: Some(terminated),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("mysite-1".into()),
                namespace: Some("default".into()),
                uid: Some("7f3c".into()),
                resource_version: Some("42".into()),
                creation_timestamp: Some(time("2014-06-06T19:59:00Z")),
                annotations: labels(&[(MANIFEST_ID_ANNOTATION, "mysite")]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "mysite".into(),
                    image: Some("user/mysite".into()),
                    ..Default::default()
                }],
                node_name: Some("minion-1".into()),
                restart_policy: Some("OnFailure".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                host_ip: Some("10.0.0.1".into()),
                pod_ip: Some("10.244.1.5".into()),
                container_statuses: Some(vec![status]),
                ..Default::default()
            }),
        };
        let v = pod_to_v1beta1(&pod);
        assert_eq!(
            (&v["resourceVersion"], &v["creationTimestamp"]),
            (&json!(42), &json!("2014-06-06T19:59:00Z"))
        );
        assert_eq!(v.get("annotations"), None);
        assert_eq!(v["desiredState"]["manifest"]["id"], "mysite");
        assert_eq!(
            v["desiredState"]["manifest"]["restartPolicy"],
            json!({ "onFailure": {} })
        );
        let cs = &v["currentState"];
        assert_eq!(
            (&cs["status"], &cs["host"], &cs["podIP"]),
            (&json!("Running"), &json!("minion-1"), &json!("10.244.1.5"))
        );
        let info = &cs["info"]["mysite"];
        assert_eq!(
            (
                &info["restartCount"],
                &info["state"]["termination"]["exitCode"]
            ),
            (&json!(1), &json!(137))
        );
        assert_eq!(
            info["state"]["termination"]["finishedAt"],
            "2014-06-06T20:05:00Z"
        );
        assert_eq!(pod_from_v1beta1(&v), Ok(pod.clone()));

        // Terminated maps back to Failed when a container exited non-zero, else Succeeded.
        let mut done = v.clone();
        done["currentState"]["status"] = json!("Terminated");
        let phase = |v: &Value| pod_from_v1beta1(v).ok().and_then(|p| p.status?.phase);
        assert_eq!(phase(&done).as_deref(), Some("Failed"));
        done["currentState"]["info"]["mysite"]["state"]["termination"]["exitCode"] = json!(0);
        assert_eq!(phase(&done).as_deref(), Some("Succeeded"));
    }

    #[test]
    fn full_container_fields_round_trip() {
        let v = json!({ "kind": "Pod", "id": "full", "nodeSelector": { "disk": "ssd" }, "desiredState": { "manifest": {
            "version": "v1beta1", "id": "full",
            "containers": [{ "name": "db", "image": "redis", "command": ["redis-server"], "workingDir": "/data",
                "cpu": 500, "memory": 134217728, "imagePullPolicy": "PullAlways",
                "ports": [{ "name": "redis", "containerPort": 6379, "hostPort": 6379, "protocol": "TCP" }],
                "env": [{ "name": "MODE", "value": "fast" }],
                "volumeMounts": [{ "name": "data", "mountPath": "/data", "readOnly": true }] }],
            "volumes": [{ "name": "data", "source": { "emptyDir": {} } }, { "name": "logs", "source": { "hostDir": { "path": "/var/log" } } }],
            "restartPolicy": { "never": {} } } } });
        let pod = pod_from_v1beta1(&v).expect("converts");
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        let requests = spec.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone());
        assert_eq!(
            requests.and_then(|r| r.get("memory").cloned()),
            Some(Quantity("134217728".into()))
        );
        assert_eq!(
            spec.volumes
                .as_ref()
                .and_then(|v| v[1].host_path.clone())
                .map(|h| h.path)
                .as_deref(),
            Some("/var/log")
        );
        let back = pod_to_v1beta1(&pod);
        let manifest = &v["desiredState"]["manifest"];
        assert_eq!(
            back["desiredState"]["manifest"]["containers"],
            manifest["containers"]
        );
        assert_eq!(
            back["desiredState"]["manifest"]["volumes"],
            manifest["volumes"]
        );
        assert_eq!(back["nodeSelector"], v["nodeSelector"]);
        assert_eq!(pod_from_v1beta1(&back), Ok(pod));
    }

    #[test]
    fn quantities_to_v1beta1_integers() {
        let cases = [
            ("100m", 3, Some(100)),
            ("0.5", 3, Some(500)),
            ("1", 3, Some(1000)),
            ("2", 3, Some(2000)),
            ("1.5k", 3, Some(1_500_000)),
        ];
        let bytes = [
            ("128Mi", 0, Some(134_217_728)),
            ("1Gi", 0, Some(1 << 30)),
            ("123456", 0, Some(123_456)),
            ("1e3", 0, Some(1000)),
            ("1M", 0, Some(1_000_000)),
        ];
        let bad = [
            ("lots", 0, None),
            ("", 0, None),
            ("1.2.3", 0, None),
            ("1Zi", 0, None),
            ("99999999999999999999Ei", 0, None),
            ("1e99999", 0, None),
        ];
        for (q, scale, want) in cases
            .into_iter()
            .chain(bytes)
            .chain(bad)
            .chain([("1m", 0, Some(1)), ("-250m", 3, Some(-250))])
        {
            assert_eq!(quantity_scaled(&Quantity(q.into()), scale), want, "{q}");
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut pod = parse(POD);
        pod["desiredState"]["manifest"]["containers"][0]["cpu"] = json!("lots");
        error(
            "desiredState.manifest.containers[0].cpu",
            pod_from_v1beta1(&pod),
        );
        pod["desiredState"]["manifest"]["containers"][0]["cpu"] = json!(100);
        pod["desiredState"]["manifest"]["containers"][0]["ports"][0]["containerPort"] =
            json!(1u64 << 40);
        error(
            "desiredState.manifest.containers[0].ports[0].containerPort",
            pod_from_v1beta1(&pod),
        );
        pod["desiredState"]["manifest"]["containers"] = json!([7]);
        error(
            "desiredState.manifest.containers[0]",
            pod_from_v1beta1(&pod),
        );
        let mut rc = parse(CONTROLLER);
        rc["desiredState"]["replicas"] = json!("two");
        error("desiredState.replicas", controller_from_v1beta1(&rc));
        rc["desiredState"]["replicas"] = json!(-1);
        assert_eq!(
            controller_from_v1beta1(&rc).map(|rc| rc.spec.and_then(|s| s.replicas)),
            Ok(Some(-1))
        );
        error("kind", controller_from_v1beta1(&parse(POD)));
        error("kind", minion_from_v1beta1(&parse(SERVICE)));
        error(
            "apiVersion",
            service_from_v1beta1(&json!({ "apiVersion": "v1", "id": "x" })),
        );
        error(
            "containerPort",
            service_from_v1beta1(&json!({ "id": "x", "containerPort": true })),
        );
        error(
            "labels",
            service_from_v1beta1(&json!({ "id": "x", "labels": { "a": 1 } })),
        );
        error(
            "resourceVersion",
            service_from_v1beta1(&json!({ "id": "x", "resourceVersion": "12" })),
        );
        error(
            "currentState.status",
            pod_from_v1beta1(&json!({ "id": "x", "currentState": { "status": "Sleeping" } })),
        );
        let restart = json!({ "id": "x", "desiredState": { "manifest": { "restartPolicy": { "sometimes": {} } } } });
        error(
            "desiredState.manifest.restartPolicy.sometimes",
            pod_from_v1beta1(&restart),
        );
        error("", pod_from_v1beta1(&json!([1, 2])));
    }

    #[test]
    fn endpoints_list_every_address_with_its_subset_port() {
        let subset = |ips: &[&str], port: i32| k8s_openapi::api::core::v1::EndpointSubset {
            addresses: Some(
                ips.iter()
                    .map(|ip| k8s_openapi::api::core::v1::EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                port,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let e = Endpoints {
            metadata: ObjectMeta {
                name: Some("mysite".into()),
                ..Default::default()
            },
            subsets: Some(vec![
                subset(&["10.244.1.5", "10.244.2.7"], 80),
                subset(&["fd00::1"], 8080),
            ]),
        };
        let v = endpoints_to_v1beta1(&e);
        assert_eq!(
            (&v["kind"], &v["id"]),
            (&json!("Endpoints"), &json!("mysite"))
        );
        assert_eq!(
            v["endpoints"],
            json!(["10.244.1.5:80", "10.244.2.7:80", "[fd00::1]:8080"])
        );
    }

    #[test]
    fn minion_round_trips() {
        let v = json!({ "kind": "Minion", "apiVersion": "v1beta1", "id": "minion-1", "hostIP": "10.0.0.1",
            "resources": { "capacity": { "cpu": 2000, "memory": 4294967296u64 } }, "labels": { "zone": "a" },
            "status": { "conditions": [{ "kind": "Ready", "status": "Full", "lastProbeTime": "2014-06-06T20:00:00Z" }] } });
        let node = minion_from_v1beta1(&v).expect("converts");
        assert_eq!(node.metadata.namespace, None);
        let status = node.status.as_ref().expect("status");
        assert_eq!(
            status
                .addresses
                .as_ref()
                .map(|a| (a[0].type_.as_str(), a[0].address.as_str())),
            Some(("InternalIP", "10.0.0.1"))
        );
        let capacity = status.capacity.clone().unwrap_or_default();
        assert_eq!(
            (capacity.get("cpu"), capacity.get("memory")),
            (
                Some(&Quantity("2000m".into())),
                Some(&Quantity("4294967296".into()))
            )
        );
        assert_eq!(
            status.conditions.as_ref().map(|c| c[0].status.as_str()),
            Some("True")
        );
        let back = node_to_v1beta1(&node);
        for key in ["kind", "id", "hostIP", "resources", "labels", "status"] {
            assert_eq!(back[key], v[key], "{key}");
        }
        assert_eq!(minion_from_v1beta1(&back), Ok(node));
    }

    #[test]
    fn no_panic_on_odd_json() {
        let odd = [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!({ "a": { "b": [] } }),
            json!(-1.5),
            json!(u64::MAX),
        ];
        let keys = [
            "id",
            "kind",
            "labels",
            "desiredState",
            "currentState",
            "manifest",
            "containers",
            "info",
            "port",
            "containerPort",
            "replicas",
            "podTemplate",
            "cpu",
            "memory",
            "ports",
            "volumes",
            "source",
            "restartPolicy",
            "resources",
            "capacity",
            "status",
            "conditions",
            "hostIP",
        ];
        for value in &odd {
            let mut docs = vec![value.clone()];
            for key in keys {
                docs.push(json!({ key: value }));
                docs.push(json!({ "desiredState": { key: value, "manifest": { key: value, "containers": [{ key: value }] },
                    "podTemplate": { "desiredState": { "manifest": { "volumes": [{ "source": { key: value } }] } } } },
                    "currentState": { key: value, "info": { "c": { key: value, "state": { key: value } } } }, "resources": { key: value } }));
            }
            for doc in &docs {
                let _ = (
                    pod_from_v1beta1(doc),
                    controller_from_v1beta1(doc),
                    service_from_v1beta1(doc),
                    minion_from_v1beta1(doc),
                );
            }
        }
    }
}
