//! The `hollow` runtime: it starts nothing. Every pod bound to the node is reported Running and
//! Ready at once, with a made-up pod IP, like Kubemark's hollow kubelet. It serves scale tests of
//! the control plane; real pods run on the Docker runtime (`super::docker`).

use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

/// The runtime that runs nothing.
pub struct Hollow {
    node: String,
}

impl Hollow {
    pub fn new(node: &str) -> Self {
        Hollow {
            node: node.to_string(),
        }
    }
}

/// A stable, made-up pod IP in 10.0.0.0/8 derived from the pod's uid.
fn fake_ip(uid: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let x = h.finish();
    format!(
        "10.{}.{}.{}",
        (x >> 16) & 0xff,
        (x >> 8) & 0xff,
        (x & 0xff).clamp(2, 254)
    )
}

impl Hollow {
    /// The status to report for `pod`, if it should change.
    pub fn desired_status(&self, pod: &Value, host_ip: &str) -> Option<Value> {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Running" | "Succeeded" | "Failed") {
            return None;
        }
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let now = crate::registry::object::now();
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true, "restartCount": 0,
                       "state": {"running": {"startedAt": now}}, "containerID": format!("hollow://{}/{}", self.node, c["name"].as_str().unwrap_or(""))})
            })
            .collect();
        let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .iter()
            .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": now, "lastProbeTime": null}))
            .collect();
        Some(json!({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "podIP": fake_ip(uid),
            "podIPs": [{"ip": fake_ip(uid)}],
            "startTime": now,
            "containerStatuses": containers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hollow_reports_running_once() {
        let h = Hollow::new("n1");
        let pod = json!({"metadata": {"uid": "u"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        let st = h.desired_status(&pod, "127.0.0.2").unwrap();
        assert_eq!(st["phase"], "Running");
        assert_eq!(st["hostIP"], "127.0.0.2");
        assert_eq!(st["podIP"], fake_ip("u"));
        let mut running = pod.clone();
        running["status"] = st;
        assert!(h.desired_status(&running, "127.0.0.2").is_none());
    }
}
