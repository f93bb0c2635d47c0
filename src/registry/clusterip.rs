//! Services' cluster IPs: the range they come from (`keelson master
//! --service-cluster-ip-range`) and their allocation through Raft, as Kubernetes' IP allocator
//! (`pkg/registry/core/service/ipallocator`) does it over etcd.
//!
//! Invariant: **an address is claimed by a Raft `Create` of its key
//! (`/keelson.io/clusterips/<ip>`) before its service is stored**, so no two services get one
//! address, whichever master serves the create and across leader changes. Raft batches are not
//! atomic, so the claim and the service are two writes: a create that fails after its claim
//! gives the claim back, and the leader's repair loop (`controllers/clusterips.rs`) frees the
//! claims a create left when it could not (a master killed in between) and claims the
//! addresses of services stored without one (data from before claims, a restore).
//!
//! The claims live outside `/registry/` (they are no API objects) and outside the `/kv` surface's
//! fenced space, so no client can write them.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use bytes::Bytes;
use keelson_raft::{Command, OpResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::object::meta_str;
use super::status::ApiError;
use super::validation::{invalid, invalid_error};
use super::Registry;

/// kubeadm's default service range.
pub const DEFAULT_RANGE: &str = "10.96.0.0/12";

/// Where the claims live: `/keelson.io/clusterips/<ip>`.
pub const CLAIMS: &str = "/keelson.io/clusterips/";

/// A claim older than this whose service is not stored is left by a create that failed half-way
/// (a younger one may be a create in flight, between its claim and its service).
pub const ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates of a claim tried before an allocation gives up (each one lost to another create).
const ATTEMPTS: usize = 32;

/// An IPv4 service range: a CIDR from /12 to /28 whose host bits are zero. Its usable
/// addresses are all but the network and broadcast addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRange {
    network: Ipv4Addr,
    prefix: u8,
}

impl ServiceRange {
    /// Parses `A.B.C.D/N`, refusing what kube-apiserver refuses (and ranges of fewer than 14
    /// addresses).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (A.B.C.D/N)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 128)
            .ok_or_else(|| format!("{s:?} is not a CIDR: bad prefix length {prefix:?}"))?;
        let network: Ipv4Addr = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => v4,
            Ok(std::net::IpAddr::V6(_)) => {
                return Err(format!("{s:?}: only IPv4 service ranges are supported"))
            }
            Err(_) => return Err(format!("{s:?} is not a CIDR: {ip:?} is not an IP address")),
        };
        if prefix > 32 {
            return Err(format!("{s:?} is not a CIDR: prefix length over 32"));
        }
        if prefix < 12 {
            return Err(format!(
                "specified --service-cluster-ip-range {s} is too large: the mask must be >= 12"
            ));
        }
        if prefix > 28 {
            return Err(format!(
                "specified --service-cluster-ip-range {s} is too small: the mask must be <= 28"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{s:?} has host bits set: its network is {}/{prefix}",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(ServiceRange { network, prefix })
    }

    /// How many usable addresses the range holds.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `n`th usable address (0-based), if the range has it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + 1 + n))
    }

    /// Where `ip` is among the usable addresses.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip).wrapping_sub(u32::from(self.network));
        (n >= 1 && n <= self.size()).then(|| n - 1)
    }

    /// Whether `ip` is a usable address of the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }

    /// The first usable address not in `taken`, scanning from offset `start` and wrapping.
    pub fn first_free(&self, start: u32, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let size = self.size();
        (0..size)
            .filter_map(|i| self.nth((start % size + i) % size))
            .find(|ip| !taken.contains(ip))
    }
}

impl Default for ServiceRange {
    fn default() -> Self {
        ServiceRange::parse(DEFAULT_RANGE).expect("the default range parses")
    }
}

impl fmt::Display for ServiceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for ServiceRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ServiceRange::parse(s)
    }
}

/// What a claim's key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// `namespace/name`.
    pub service: String,
    pub uid: String,
    /// RFC 3339.
    pub allocated: String,
}

impl Claim {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("json"))
    }
    pub fn decode(bytes: &[u8]) -> Option<Claim> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The key of `ip`'s claim.
pub fn claim_key(ip: Ipv4Addr) -> String {
    format!("{CLAIMS}{ip}")
}

/// The address a claim key names.
pub fn claim_ip(key: &str) -> Option<Ipv4Addr> {
    key.strip_prefix(CLAIMS)?.parse().ok()
}

/// Whether `info`'s objects get cluster IPs (services).
pub fn allocates(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "services"
}

/// A service's `spec.clusterIP` (or `clusterIPs[0]` without it), `""` when none.
pub fn requested(svc: &Value) -> &str {
    match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => ip,
        _ => svc
            .pointer("/spec/clusterIPs/0")
            .and_then(Value::as_str)
            .unwrap_or(""),
    }
}

/// Whether a service of this type has a cluster IP (all but `ExternalName`).
pub fn has_cluster_ip(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

/// A claim taken for a service being created: given back if the create fails.
#[derive(Debug)]
pub struct Held {
    key: String,
    rv: u64,
}

/// Sets `spec.clusterIP` and `spec.clusterIPs` to `ip`.
pub fn set_ips(svc: &mut Value, ip: &str) {
    if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
}

/// Claims the cluster IP of `svc`, a service about to be created (defaulted and validated):
/// the one it asks for, or a free one of the range, which it then carries in `spec.clusterIP`
/// and `spec.clusterIPs`. Headless (`None`) and `ExternalName` services claim nothing.
pub async fn allocate(reg: &Registry, svc: &mut Value) -> Result<Option<Held>, ApiError> {
    if !has_cluster_ip(svc) {
        return Ok(None);
    }
    let info = super::lookup("services").expect("services");
    let name = meta_str(svc, "name").unwrap_or_default().to_string();
    let claim = Claim {
        service: format!("{}/{name}", meta_str(svc, "namespace").unwrap_or("default")),
        uid: meta_str(svc, "uid").unwrap_or_default().to_string(),
        allocated: super::object::now(),
    };
    let range = reg.service_range;
    match requested(svc).to_string() {
        ip if ip == "None" => {
            set_ips(svc, "None");
            Ok(None)
        }
        ip if ip.is_empty() => {
            let held = allocate_any(reg, &claim).await?;
            set_ips(svc, &held.0.to_string());
            Ok(Some(held.1))
        }
        requested => {
            let invalid_ip = |why: String| {
                invalid_error(
                    info,
                    &name,
                    vec![invalid("spec.clusterIP", &requested, &why)],
                )
            };
            // Validation refused what is not an address.
            let ip: Ipv4Addr = requested
                .parse()
                .map_err(|_| invalid_ip("must be a valid IP address".into()))?;
            if !range.contains(ip) {
                return Err(invalid_ip(format!(
                    "provided IP is not in the valid range. The range of valid IPs is {range}"
                )));
            }
            match claim_one(reg, ip, &claim).await? {
                Some(held) => {
                    set_ips(svc, &requested);
                    Ok(Some(held))
                }
                None => Err(invalid_ip("provided IP is already allocated".into())),
            }
        }
    }
}

/// Claims `ip` for `claim` (a Raft `Create` of its key): the claim held, or `None` when another
/// service holds the address.
async fn claim_one(reg: &Registry, ip: Ipv4Addr, claim: &Claim) -> Result<Option<Held>, ApiError> {
    let key = claim_key(ip);
    match reg
        .run(Command::Create {
            key: key.clone(),
            value: claim.encode(),
        })
        .await?
    {
        OpResult::Stored { rv, .. } => Ok(Some(Held { key, rv })),
        OpResult::AlreadyExists { .. } => Ok(None),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

/// Claims a free address of the range: from a random offset, the first one this replica does
/// not see claimed; one another create took meanwhile is passed over.
async fn allocate_any(reg: &Registry, claim: &Claim) -> Result<(Ipv4Addr, Held), ApiError> {
    let range = reg.service_range;
    let start = rand::random::<u32>() % range.size();
    let mut lost = HashSet::new();
    let mut caught_up = false;
    for _ in 0..ATTEMPTS {
        let (claimed, _) = reg.node.list(CLAIMS);
        let mut taken: HashSet<Ipv4Addr> =
            claimed.iter().filter_map(|(k, _)| claim_ip(k)).collect();
        taken.extend(lost.iter().copied());
        let Some(ip) = range.first_free(start, &taken) else {
            if !caught_up {
                // This replica may be behind: what it sees claimed may have been given back.
                reg.node.read_barrier().await?;
                caught_up = true;
                lost.clear();
                continue;
            }
            return Err(range_full());
        };
        match claim_one(reg, ip, claim).await? {
            Some(held) => return Ok((ip, held)),
            None => {
                lost.insert(ip);
            }
        }
    }
    Err(ApiError::internal(
        "Internal error occurred: failed to allocate a serviceIP: too many concurrent allocations, try again",
    ))
}

/// Kubernetes' answer when no address is free.
fn range_full() -> ApiError {
    let why = "failed to allocate a serviceIP: range is full";
    ApiError::internal(format!("Internal error occurred: {why}"))
        .with_causes(vec![json!({"message": why})])
}

/// Gives back the claim of a create that failed. A claim that cannot be given back now is the
/// repair loop's.
pub async fn abandon(reg: &Registry, held: Held) {
    let result = reg
        .run(Command::Delete {
            key: held.key.clone(),
            precondition: Some(held.rv),
        })
        .await;
    if !matches!(result, Ok(OpResult::Deleted { .. })) {
        tracing::warn!(
            key = held.key,
            ?result,
            "could not give back the claim of a failed create; the repair loop will"
        );
    }
}

/// Frees the address of `svc`, a service just deleted: its claim is deleted if it is this
/// service's (same uid). What this misses (a replica behind) the repair loop frees.
pub async fn release(reg: &Registry, svc: &Value) {
    let Ok(ip) = requested(svc).parse::<Ipv4Addr>() else {
        return;
    };
    let key = claim_key(ip);
    let Some(record) = reg.node.get(&key).0 else {
        return;
    };
    let ours =
        Claim::decode(&record.value).is_some_and(|c| Some(c.uid.as_str()) == meta_str(svc, "uid"));
    if !ours {
        return;
    }
    let result = reg
        .run(Command::Delete {
            key: key.clone(),
            precondition: Some(record.mod_rv),
        })
        .await;
    if !matches!(result, Ok(OpResult::Deleted { .. })) {
        tracing::warn!(
            key,
            ?result,
            "could not free a deleted service's cluster IP; the repair loop will"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_kube_apiserver_accepts_them() {
        let r = ServiceRange::parse("10.250.0.0/28").unwrap();
        assert_eq!(r.to_string(), "10.250.0.0/28");
        assert_eq!(r.size(), 14);
        assert_eq!(r.nth(0), Some(Ipv4Addr::new(10, 250, 0, 1)));
        assert_eq!(r.nth(13), Some(Ipv4Addr::new(10, 250, 0, 14)));
        assert_eq!(r.nth(14), None);
        assert!(!r.contains(Ipv4Addr::new(10, 250, 0, 0)), "network");
        assert!(!r.contains(Ipv4Addr::new(10, 250, 0, 15)), "broadcast");
        assert!(r.contains(Ipv4Addr::new(10, 250, 0, 7)));
        assert!(!r.contains(Ipv4Addr::new(10, 250, 0, 16)));
        assert!(!r.contains(Ipv4Addr::new(9, 250, 0, 7)));
        assert_eq!(r.offset(Ipv4Addr::new(10, 250, 0, 3)), Some(2));

        let d = ServiceRange::default();
        assert_eq!(d.to_string(), "10.96.0.0/12");
        assert_eq!(d.size(), (1 << 20) - 2);
        assert!(d.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!d.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!("10.96.0.0/12".parse::<ServiceRange>(), Ok(d));

        for (bad, why) in [
            ("10.96.0.0", "not a CIDR"),
            ("10.96.0/12", "not an IP"),
            ("10.96.0.0/x", "bad prefix"),
            ("10.96.0.0/33", "over 32"),
            ("fd00::/112", "only IPv4"),
            ("10.0.0.0/8", "too large: the mask must be >= 12"),
            ("10.0.0.0/29", "too small"),
            ("10.96.0.1/12", "host bits set: its network is 10.96.0.0/12"),
        ] {
            let e = ServiceRange::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_first_free_address_wraps_around_the_range() {
        let r = ServiceRange::parse("10.250.0.0/28").unwrap();
        let ip = |n| Ipv4Addr::new(10, 250, 0, n);
        let mut taken = HashSet::new();
        assert_eq!(r.first_free(0, &taken), Some(ip(1)));
        assert_eq!(r.first_free(13, &taken), Some(ip(14)));
        assert_eq!(r.first_free(14 + 2, &taken), Some(ip(3)));
        taken.extend([ip(14), ip(1)]);
        assert_eq!(r.first_free(13, &taken), Some(ip(2)));
        taken.extend((1..=14).map(ip));
        assert_eq!(r.first_free(5, &taken), None);
    }

    #[test]
    fn claims_round_trip_through_their_keys() {
        let ip = Ipv4Addr::new(10, 96, 0, 10);
        assert_eq!(claim_key(ip), "/keelson.io/clusterips/10.96.0.10");
        assert_eq!(claim_ip(&claim_key(ip)), Some(ip));
        assert_eq!(claim_ip("/keelson.io/clusterips/junk"), None);
        let c = Claim {
            service: "default/web".into(),
            uid: "u".into(),
            allocated: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(Claim::decode(&c.encode()), Some(c));
        assert_eq!(Claim::decode(b"junk"), None);
    }

    #[test]
    fn a_service_asks_for_its_cluster_ip_or_its_first_cluster_ips() {
        assert_eq!(
            requested(&json!({"spec": {"clusterIP": "10.0.0.1"}})),
            "10.0.0.1"
        );
        assert_eq!(
            requested(&json!({"spec": {"clusterIP": "", "clusterIPs": ["10.0.0.2"]}})),
            "10.0.0.2"
        );
        assert_eq!(requested(&json!({"spec": {}})), "");
        assert!(!has_cluster_ip(&json!({"spec": {"type": "ExternalName"}})));
        assert!(has_cluster_ip(&json!({"spec": {}})));
    }
}
