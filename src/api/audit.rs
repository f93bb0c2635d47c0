//! The audit log (`--audit-log-path`): one JSON line per mutating request and per refused one,
//! as kube-apiserver's `audit.k8s.io/v1` `Event` at level `Metadata` (who, what, where, the
//! answer's code, when; never a body or a credential).
//!
//! Requests never wait on the disk: events go through a bounded queue to a thread of their own,
//! which appends them and rotates the file when it would pass `--audit-log-maxsize` (the file
//! becomes `PATH.1`, the older ones shift up to `--audit-log-maxbackup`). When the queue is full
//! an event is dropped and counted (`keelson_audit_events_dropped_total`).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use keelson_model::rbac::{Attributes, Target, UserInfo};
use serde_json::{json, Value};

use crate::process::rotating::RotatingFile;
pub use crate::process::rotating::Rotation as AuditConfig;

/// Events waiting for the writer at most.
const QUEUE: usize = 16_384;

/// Where audit events go.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Vec<u8>>,
    dropped: prometheus::IntCounter,
}

impl AuditLog {
    /// Opens (creates, 0600) the log and starts its writer thread.
    pub fn open(config: AuditConfig, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let file = RotatingFile::open(config.clone())
            .map_err(|e| anyhow::anyhow!("--audit-log-path {}: {e}", config.path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = prometheus::IntCounter::new(
            "keelson_audit_events_dropped_total",
            "Audit events dropped because the audit log's writer fell behind.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_forever(file, rx))?;
        Ok(AuditLog { tx, dropped })
    }

    /// Records one request: `user` (none: it did not authenticate), what it asked, the code of
    /// its answer.
    pub fn record(
        &self,
        request: &Request,
        user: Option<&UserInfo>,
        attrs: &Attributes,
        code: u16,
    ) {
        let mut line = serde_json::to_vec(&event(request, user, attrs, code)).expect("json");
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// What the audit event says of the request itself (its `auditID` is drawn when an event is
/// recorded, so requests that are not recorded cost no id).
pub struct Request {
    pub uri: String,
    pub source: Option<std::net::IpAddr>,
    pub user_agent: String,
    pub received: jiff::Timestamp,
}

/// Whether a request changes something: what the audit log records besides refusals.
pub fn mutating(attrs: &Attributes) -> bool {
    match &attrs.target {
        Target::Resource { .. } => !matches!(attrs.verb.as_str(), "get" | "list" | "watch"),
        Target::NonResource { .. } => !matches!(attrs.verb.as_str(), "get" | "head" | "options"),
    }
}

fn event(request: &Request, user: Option<&UserInfo>, attrs: &Attributes, code: u16) -> Value {
    let user = match user {
        Some(u) => json!({"username": u.name, "groups": u.groups}),
        None => json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
    };
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": crate::registry::object::new_uid(),
        "stage": "ResponseComplete",
        "requestURI": request.uri,
        "verb": attrs.verb,
        "user": user,
        "sourceIPs": request.source.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        "userAgent": request.user_agent,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": request.received.to_string(),
        "stageTimestamp": jiff::Timestamp::now().to_string(),
    });
    if let Target::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
    } = &attrs.target
    {
        let mut object = json!({"resource": resource, "apiGroup": group, "apiVersion": "v1"});
        for (k, v) in [
            ("subresource", subresource),
            ("namespace", namespace),
            ("name", name),
        ] {
            if !v.is_empty() {
                object[k] = json!(v);
            }
        }
        event["objectRef"] = object;
    }
    event
}

fn write_forever(mut file: RotatingFile, rx: Receiver<Vec<u8>>) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next.take() {
            if let Err(e) = file.write_record(&line) {
                tracing::warn!("audit log: {e}");
            }
            next = rx.try_recv().ok();
        }
        let _ = file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::rotating::rotated;

    #[test]
    fn the_log_rotates_by_size_and_keeps_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            path: path.clone(),
            max_bytes: 2_000,
            backups: 2,
        };
        // The log's own queue, drained here by the writer once every event is in.
        let (tx, rx) = sync_channel(QUEUE);
        let log = AuditLog {
            tx,
            dropped: prometheus::IntCounter::new("dropped", "dropped").unwrap(),
        };
        let user = UserInfo {
            name: "vera".into(),
            groups: vec!["system:authenticated".into()],
        };
        let attrs = Attributes {
            verb: "create".into(),
            target: Target::Resource {
                group: String::new(),
                resource: "pods".into(),
                subresource: String::new(),
                namespace: "default".into(),
                name: String::new(),
            },
        };
        let request = Request {
            uri: "/api/v1/namespaces/default/pods".into(),
            source: None,
            user_agent: "test".into(),
            received: jiff::Timestamp::now(),
        };
        for _ in 0..40 {
            log.record(&request, Some(&user), &attrs, 201);
        }
        drop(log);
        write_forever(RotatingFile::open(config).unwrap(), rx);
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for n in 1..=2 {
            assert!(std::fs::metadata(rotated(&path, n)).unwrap().len() <= 2_000);
        }
        let line = std::fs::read_to_string(rotated(&path, 2)).unwrap();
        let first: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(first["user"]["username"], "vera");
        assert_eq!(first["objectRef"]["resource"], "pods");
        assert_eq!(first["responseStatus"]["code"], 201);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
