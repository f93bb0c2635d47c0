//! Hairpin mode on a pod's bridge port, so a pod reaches itself through its service: the kernel
//! proxy may DNAT a pod's connection to its own IP, and with bridge netfilter (which Docker
//! loads) such a packet is bridged straight back out of the port it came in on, which a bridge
//! does only for a port in hairpin mode (kubelet's `hairpin-veth` mode does the same).
//!
//! The host end of the pod's `eth0` is found by its interface index: the container's `sysfs`
//! (under `/proc/PID/root`) names the peer's index in `iflink`.

use std::path::Path;

/// Puts the host end of `eth0` of the process `pid`'s network namespace in hairpin mode; the
/// interface set, or why not.
pub fn enable(pid: i64) -> Result<String, String> {
    let iflink = std::fs::read_to_string(format!("/proc/{pid}/root/sys/class/net/eth0/iflink"))
        .map_err(|e| format!("the pod's eth0: {e}"))?;
    let index = iflink.trim();
    let entries = std::fs::read_dir("/sys/class/net").map_err(|e| e.to_string())?;
    for entry in entries.flatten() {
        let dir = entry.path();
        if std::fs::read_to_string(dir.join("ifindex")).is_ok_and(|i| i.trim() == index) {
            let name = entry.file_name().to_string_lossy().into_owned();
            return set(&dir.join("brport/hairpin_mode")).map(|()| name);
        }
    }
    Err(format!("no host interface has index {index}"))
}

fn set(path: &Path) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| format!("{}: {e}", path.display()))
}
