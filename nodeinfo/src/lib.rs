//! `status.nodeInfo`: what a node says about its machine, with every field the kubelet reports
//! (clients such as the official Python one refuse a Node that lacks one). Docker agents read
//! them from the host they run on; hollow nodes, which run nothing, report plausible values
//! derived from their name.
//!
//! Shared by `keelson agent` and the hollow nodes the bench (keelson-bench) registers itself.
//! A crate of its own rather than part of keelson-model, which does no I/O: this one reads
//! `/proc` and `/etc`.

use serde_json::{json, Value};

/// The kubelet version keelson's agents report: the Kubernetes API they serve (core/v1 of
/// 1.37, as k8s-openapi's `v1_37`), with keelson's own version as build metadata (the
/// workspace's version, which every keelson crate shares), the form k3s uses (`v1.28.3+k3s1`),
/// so version parsers in clients read it.
pub fn kubelet_version() -> String {
    format!("v1.37.0+keelson-{}", env!("CARGO_PKG_VERSION"))
}

/// The machine this process runs on; `runtime_version` as the kubelet prints it
/// (`docker://28.2.2`).
pub fn host(runtime_version: &str) -> Value {
    let machine_id = first_line(&["/etc/machine-id", "/var/lib/dbus/machine-id"])
        .unwrap_or_else(|| hex_id("machine", &hostname()));
    // The DMI UUID is readable by root only; the machine id, shaped as a UUID, stands in.
    let system_uuid = first_line(&["/sys/class/dmi/id/product_uuid"])
        .map(|u| u.to_ascii_lowercase())
        .unwrap_or_else(|| as_uuid(&machine_id));
    let boot_id = first_line(&["/proc/sys/kernel/random/boot_id"])
        .unwrap_or_else(|| as_uuid(&hex_id("boot", &machine_id)));
    info(
        &machine_id,
        &system_uuid,
        &boot_id,
        &kernel_version(),
        &os_image(),
        runtime_version,
    )
}

/// A hollow node's: stable ids derived from its name, the host's kernel, a hollow runtime.
pub fn hollow(name: &str) -> Value {
    let machine_id = hex_id("machine", name);
    info(
        &machine_id,
        &as_uuid(&machine_id),
        &as_uuid(&hex_id("boot", name)),
        &kernel_version(),
        "keelson hollow node",
        &format!("hollow://{}", env!("CARGO_PKG_VERSION")),
    )
}

fn info(
    machine_id: &str,
    system_uuid: &str,
    boot_id: &str,
    kernel: &str,
    os_image: &str,
    runtime_version: &str,
) -> Value {
    json!({
        "machineID": machine_id,
        "systemUUID": system_uuid,
        "bootID": boot_id,
        "kernelVersion": kernel,
        "osImage": os_image,
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": kubelet_version(),
        "kubeProxyVersion": kubelet_version(),
        "operatingSystem": std::env::consts::OS,
        "architecture": architecture(),
    })
}

/// Go's architecture names, as Kubernetes reports them (`amd64`, `arm64`).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn kernel_version() -> String {
    first_line(&["/proc/sys/kernel/osrelease"]).unwrap_or_else(|| "unknown".into())
}

/// `PRETTY_NAME` of os-release, as the kubelet reports it.
fn os_image() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn hostname() -> String {
    first_line(&["/proc/sys/kernel/hostname", "/etc/hostname"]).unwrap_or_default()
}

/// The first non-empty line of the first readable file.
fn first_line(paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        let line = text.lines().next()?.trim();
        (!line.is_empty()).then(|| line.to_string())
    })
}

/// 32 hex digits, stable for `(purpose, seed)` (two FNV-1a hashes; an id, not a secret).
fn hex_id(purpose: &str, seed: &str) -> String {
    let fnv = |basis: u64| {
        format!("{purpose}/{seed}").bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// 32 hex digits as a UUID (8-4-4-4-12); longer or shorter input is used as it is.
fn as_uuid(hex: &str) -> String {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [&str; 10] = [
        "machineID",
        "systemUUID",
        "bootID",
        "kernelVersion",
        "osImage",
        "containerRuntimeVersion",
        "kubeletVersion",
        "kubeProxyVersion",
        "operatingSystem",
        "architecture",
    ];

    #[test]
    fn every_kubelet_field_is_reported() {
        for info in [host("docker://28.2.2"), hollow("hollow-7")] {
            let typed: k8s_openapi::api::core::v1::NodeSystemInfo =
                serde_json::from_value(info.clone()).unwrap();
            assert_eq!(typed.operating_system, "linux");
            for f in FIELDS {
                let v = info[f].as_str().unwrap_or("");
                assert!(!v.is_empty(), "{f} empty in {info}");
            }
        }
    }

    #[test]
    fn hollow_ids_are_stable_and_distinct() {
        assert_eq!(hollow("a"), hollow("a"));
        assert_ne!(hollow("a")["machineID"], hollow("b")["machineID"]);
        let uuid = hollow("a")["systemUUID"].as_str().unwrap().to_string();
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
    }

    #[test]
    fn host_reads_the_machine() {
        let info = host("docker://1");
        if let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            assert_eq!(info["bootID"], boot.trim());
        }
        assert_eq!(info["containerRuntimeVersion"], "docker://1");
    }
}
