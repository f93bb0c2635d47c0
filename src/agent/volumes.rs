//! A pod's volumes on the node: `emptyDir` folders under the agent's data directory, bound into
//! the containers that mount them.
//!
//! Invariant: **every host path the agent creates, binds or deletes lies inside the pod's own
//! directory** (`DATA_DIR/pods/UID`). The API already refuses pod specs that could reach the
//! host (`registry::podspec`); the agent checks again here, because the store may hold what an
//! older version accepted or what was written around the API. A mount that fails the check
//! fails the container with `CreateContainerConfigError` and nothing is mounted.

use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use serde_json::Value;

/// The directory of the pod with `uid` under `pods` (the agent's `DATA_DIR/pods`), if the uid
/// is a plain name (letters, digits, `-`): never a path of its own.
pub fn pod_dir(pods: &Path, uid: &str) -> Result<PathBuf, String> {
    let plain = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if plain {
        Ok(pods.join(uid))
    } else {
        Err(format!("pod uid {uid:?} is not a plain name"))
    }
}

/// The bind mounts of one container of `pod`, creating their folders. Refuses (with the
/// reason, for the container's status) any mount that is not a checked `emptyDir`.
pub fn mounts(pods: &Path, pod: &Value, container: &Value) -> Result<Vec<Mount>, String> {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let dir = pod_dir(pods, uid)?;
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array);
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let target = m["mountPath"].as_str().unwrap_or("");
        if !crate::registry::validation::is_dns1123_label(name) {
            return Err(format!("volume name {name:?} is not a DNS label"));
        }
        if !target.starts_with('/') || target.split('/').any(|p| p == "..") {
            return Err(format!(
                "mountPath {target:?} of volume {name:?} must be absolute, without '..'"
            ));
        }
        if m["subPath"].as_str().is_some_and(|s| !s.is_empty()) {
            return Err(format!("volume {name:?}: subPath is not supported"));
        }
        let volume = volumes
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .ok_or_else(|| format!("volume {name:?} is not defined by the pod"))?;
        let sources: Vec<&String> = volume
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| *k != "name")
            .collect();
        if sources.len() != 1 || sources[0] != crate::registry::podspec::EMPTY_DIR {
            return Err(format!(
                "volume {name:?}: only emptyDir volumes are supported, found {sources:?}"
            ));
        }
        let host = dir.join("volumes").join(name);
        std::fs::create_dir_all(&host)
            .map_err(|e| format!("create the folder of volume {name:?}: {e}"))?;
        // Resolved (symbolic links followed), the folder must still be the pod's.
        let real = host
            .canonicalize()
            .map_err(|e| format!("volume {name:?}: {e}"))?;
        let real_dir = dir
            .canonicalize()
            .map_err(|e| format!("pod directory: {e}"))?;
        if !real.starts_with(&real_dir) || real == real_dir {
            return Err(format!(
                "volume {name:?} resolves to {}, outside the pod's directory",
                real.display()
            ));
        }
        // emptyDir is world-writable, as the kubelet makes it, so non-root containers write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("volume {name:?}: {e}"))?;
        out.push(Mount {
            target: Some(target.to_string()),
            source: Some(real.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(m["readOnly"].as_bool() == Some(true)),
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, volumes: Value) -> Value {
        json!({"metadata": {"uid": uid}, "spec": {"volumes": volumes}})
    }

    #[test]
    fn an_empty_dir_is_a_folder_of_the_pod() {
        let root = tempfile::tempdir().unwrap();
        let p = pod("u-1", json!([{"name": "data", "emptyDir": {}}]));
        let c = json!({"volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]});
        let m = mounts(root.path(), &p, &c).unwrap();
        assert_eq!(m.len(), 1);
        let source = PathBuf::from(m[0].source.clone().unwrap());
        assert!(source.starts_with(root.path().canonicalize().unwrap().join("u-1")));
        assert!(source.is_dir());
        assert_eq!(m[0].target.as_deref(), Some("/data"));
        assert_eq!(m[0].read_only, Some(true));
    }

    #[test]
    fn what_reaches_the_host_is_refused_and_nothing_is_created() {
        let root = tempfile::tempdir().unwrap();
        let probe = root.path().join("probe");
        let cases = [
            // The API's old finding: a volume named like a host path.
            (
                pod(
                    "u",
                    json!([{"name": probe.display().to_string(), "emptyDir": {}}]),
                ),
                json!({"volumeMounts": [{"name": probe.display().to_string(), "mountPath": "/host"}]}),
            ),
            (
                pod("u", json!([{"name": "..", "emptyDir": {}}])),
                json!({"volumeMounts": [{"name": "..", "mountPath": "/host"}]}),
            ),
            (
                pod("../..", json!([{"name": "v", "emptyDir": {}}])),
                json!({"volumeMounts": [{"name": "v", "mountPath": "/host"}]}),
            ),
            (
                pod("u", json!([{"name": "v", "hostPath": {"path": "/"}}])),
                json!({"volumeMounts": [{"name": "v", "mountPath": "/host"}]}),
            ),
            (
                pod(
                    "u",
                    json!([{"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}]),
                ),
                json!({"volumeMounts": [{"name": "v", "mountPath": "/host"}]}),
            ),
            (
                pod("u", json!([{"name": "v", "emptyDir": {}}])),
                json!({"volumeMounts": [{"name": "v", "mountPath": "/a/../../x"}]}),
            ),
            (
                pod("u", json!([])),
                json!({"volumeMounts": [{"name": "v", "mountPath": "/x"}]}),
            ),
        ];
        for (p, c) in cases {
            assert!(mounts(root.path(), &p, &c).is_err(), "{p} {c}");
        }
        assert!(!probe.exists());
        assert!(!root.path().parent().unwrap().join("volumes").exists());
    }

    #[test]
    fn a_symlinked_volume_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("u/volumes")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("u/volumes/v")).unwrap();
        let p = pod("u", json!([{"name": "v", "emptyDir": {}}]));
        let c = json!({"volumeMounts": [{"name": "v", "mountPath": "/x"}]});
        let e = mounts(root.path(), &p, &c).unwrap_err();
        assert!(e.contains("outside the pod's directory"), "{e}");
    }

    #[test]
    fn uids_are_plain_names() {
        let root = Path::new("/data/pods");
        assert!(pod_dir(root, "0a1b-2c").is_ok());
        for bad in ["", "..", "a/b", "../x", "."] {
            assert!(pod_dir(root, bad).is_err(), "{bad}");
        }
    }
}
