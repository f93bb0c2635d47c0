//! The cluster IP repair loop (Kubernetes' `ipallocator/controller/repair.go`): the leader
//! keeps the claims of `registry/clusterip.rs` equal to the stored services' addresses.
//!
//! Each pass reads the claims, then the services, from the local store (claims first: a service
//! stored after the claims were read has its claim, made before it, or gets one now), and
//! - deletes a claim no stored service holds (its service is gone, or has another uid or
//!   address) once it is older than [`ORPHAN_AFTER`]: a younger one may be a create in flight
//!   between its claim and its service; left by a create that failed half-way (its master
//!   killed, a write of unknown outcome) or a delete whose release missed;
//! - creates the missing claim of a stored service whose in-range address has none (services
//!   stored before claims existed, a restore), so nothing else is given that address;
//! - logs services that share an address, or hold one outside the range (it does not fix them:
//!   Kubernetes does not either).
//!
//! Every write has a precondition (a claim is deleted only at the version read, created only if
//! absent), so a pass racing the API's creates and deletes changes nothing they did.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use keelson_raft::Command;

use super::util::s;
use super::Context;
use crate::registry::clusterip::{
    claim_ip, has_cluster_ip, requested, Claim, ServiceRange, CLAIMS, ORPHAN_AFTER,
};
use crate::registry::{self, lookup};

/// A stored service, as the repair reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    /// `namespace/name`.
    pub name: String,
    pub uid: String,
    /// Its cluster IP (`""`, `None`, an address).
    pub ip: String,
}

/// A stored claim: its address, its value if it decodes, the version it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaim {
    pub ip: Ipv4Addr,
    pub claim: Option<Claim>,
    pub rv: u64,
}

/// What a pass does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    pub commands: Vec<Command>,
    pub warnings: Vec<String>,
}

/// What the passes have warned about.
static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// One pass over the stored state.
pub async fn repair(ctx: Context) -> Result<(), String> {
    let (claim_records, _) = ctx.node.list(CLAIMS);
    let claims: Vec<StoredClaim> = claim_records
        .into_iter()
        .filter_map(|(key, r)| {
            Some(StoredClaim {
                ip: claim_ip(&key)?,
                claim: Claim::decode(&r.value),
                rv: r.mod_rv,
            })
        })
        .collect();
    let info = lookup("services").expect("services");
    let (records, _) = ctx.node.list(&registry::prefix(info, None));
    let services: Vec<StoredService> =
        registry::decode_records(records.iter().map(|(k, r)| (k.as_str(), r)))
            .iter()
            .filter(|svc| has_cluster_ip(svc))
            .map(|svc| StoredService {
                name: format!(
                    "{}/{}",
                    s(svc, "/metadata/namespace"),
                    s(svc, "/metadata/name")
                ),
                uid: s(svc, "/metadata/uid").to_string(),
                ip: requested(svc).to_string(),
            })
            .collect();
    let pass = decide(
        &ctx.config.service_range,
        &services,
        &claims,
        jiff::Timestamp::now(),
    );
    // Each finding once per process: a pass runs every few seconds.
    {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        for w in &pass.warnings {
            if warned.insert(w.clone()) {
                tracing::warn!("cluster IPs: {w}");
            }
        }
    }
    if !pass.commands.is_empty() {
        tracing::info!(
            writes = pass.commands.len(),
            "cluster IPs: repairing claims"
        );
        super::util::write(&ctx, pass.commands).await?;
    }
    Ok(())
}

/// The commands and warnings of a pass over `services` and `claims` at `now`.
pub fn decide(
    range: &ServiceRange,
    services: &[StoredService],
    claims: &[StoredClaim],
    now: jiff::Timestamp,
) -> Repair {
    let mut out = Repair::default();
    // Services by address (in-range ones; the others are reported).
    let mut holders: BTreeMap<Ipv4Addr, Vec<&StoredService>> = BTreeMap::new();
    for svc in services {
        match svc.ip.as_str() {
            "" | "None" => {}
            ip => match ip.parse::<Ipv4Addr>() {
                Ok(ip) if range.contains(ip) => holders.entry(ip).or_default().push(svc),
                _ => out.warnings.push(format!(
                    "service {} has cluster IP {ip}, outside the range {range}",
                    svc.name
                )),
            },
        }
    }
    for (ip, svcs) in &holders {
        if svcs.len() > 1 {
            let names: Vec<&str> = svcs.iter().map(|s| s.name.as_str()).collect();
            out.warnings.push(format!(
                "cluster IP {ip} is held by several services: {}",
                names.join(", ")
            ));
        }
    }
    let by_ip: HashMap<Ipv4Addr, &StoredClaim> = claims.iter().map(|c| (c.ip, c)).collect();
    let orphan_after = jiff::SignedDuration::try_from(ORPHAN_AFTER).expect("a short duration");
    for c in claims {
        let held = c.claim.as_ref().is_some_and(|claim| {
            holders
                .get(&c.ip)
                .is_some_and(|svcs| svcs.iter().any(|s| s.uid == claim.uid))
        });
        if held {
            continue;
        }
        // An undecodable claim is no create's in flight.
        let old = c.claim.as_ref().is_none_or(|claim| {
            claim
                .allocated
                .parse::<jiff::Timestamp>()
                .map_or(true, |at| now.duration_since(at) > orphan_after)
        });
        if old {
            out.commands.push(Command::Delete {
                key: crate::registry::clusterip::claim_key(c.ip),
                precondition: Some(c.rv),
            });
        }
    }
    for (ip, svcs) in &holders {
        if by_ip.contains_key(ip) {
            continue;
        }
        let svc = svcs[0];
        out.commands.push(Command::Create {
            key: crate::registry::clusterip::claim_key(*ip),
            value: Claim {
                service: svc.name.clone(),
                uid: svc.uid.clone(),
                allocated: now.to_string(),
            }
            .encode(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::clusterip::claim_key;

    fn svc(name: &str, uid: &str, ip: &str) -> StoredService {
        StoredService {
            name: format!("default/{name}"),
            uid: uid.into(),
            ip: ip.into(),
        }
    }

    fn claim(ip: &str, service: &str, uid: &str, allocated: &str, rv: u64) -> StoredClaim {
        StoredClaim {
            ip: ip.parse().unwrap(),
            claim: Some(Claim {
                service: format!("default/{service}"),
                uid: uid.into(),
                allocated: allocated.into(),
            }),
            rv,
        }
    }

    fn deletes(r: &Repair) -> Vec<(String, u64)> {
        r.commands
            .iter()
            .filter_map(|c| match c {
                Command::Delete { key, precondition } => Some((key.clone(), precondition.unwrap())),
                _ => None,
            })
            .collect()
    }

    fn creates(r: &Repair) -> Vec<(String, Claim)> {
        r.commands
            .iter()
            .filter_map(|c| match c {
                Command::Create { key, value } => {
                    Some((key.clone(), Claim::decode(value).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    const NOW: &str = "2026-01-01T00:10:00Z";
    const LONG_AGO: &str = "2026-01-01T00:00:00Z";
    const JUST_NOW: &str = "2026-01-01T00:09:30Z";

    #[test]
    fn claims_matching_their_services_are_left_alone() {
        let range = ServiceRange::parse("10.250.0.0/28").unwrap();
        let r = decide(
            &range,
            &[
                svc("a", "ua", "10.250.0.1"),
                svc("h", "uh", "None"),
                svc("e", "ue", ""),
            ],
            &[claim("10.250.0.1", "a", "ua", LONG_AGO, 5)],
            NOW.parse().unwrap(),
        );
        assert_eq!(r, Repair::default());
    }

    #[test]
    fn old_claims_no_service_holds_are_deleted_at_their_version_and_young_ones_kept() {
        let range = ServiceRange::parse("10.250.0.0/28").unwrap();
        let r = decide(
            &range,
            &[
                // Recreated under the same name: another uid.
                svc("a", "ua2", "10.250.0.1"),
                svc("b", "ub", "10.250.0.2"),
            ],
            &[
                claim("10.250.0.1", "a", "ua1", LONG_AGO, 5),
                // b's address changed (restored data): its old claim is stale.
                claim("10.250.0.3", "b", "ub", LONG_AGO, 6),
                // Service gone.
                claim("10.250.0.4", "gone", "ug", LONG_AGO, 7),
                // A create in flight: claimed, its service not stored yet.
                claim("10.250.0.5", "new", "un", JUST_NOW, 8),
                StoredClaim {
                    ip: "10.250.0.6".parse().unwrap(),
                    claim: None,
                    rv: 9,
                },
            ],
            NOW.parse().unwrap(),
        );
        assert_eq!(
            deletes(&r),
            [
                (claim_key("10.250.0.1".parse().unwrap()), 5),
                (claim_key("10.250.0.3".parse().unwrap()), 6),
                (claim_key("10.250.0.4".parse().unwrap()), 7),
                (claim_key("10.250.0.6".parse().unwrap()), 9),
            ]
        );
        // b has no claim for its address: it gets one (a's has another uid's, deleted first,
        // so a gets its claim in a later pass).
        let made = creates(&r);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].0, claim_key("10.250.0.2".parse().unwrap()));
        assert_eq!(made[0].1.service, "default/b");
        assert_eq!(made[0].1.uid, "ub");
        assert_eq!(made[0].1.allocated, NOW);
    }

    #[test]
    fn unclaimed_services_get_claims_and_odd_ones_are_reported() {
        let range = ServiceRange::parse("10.96.0.0/12").unwrap();
        let r = decide(
            &range,
            &[
                svc("old", "u1", "10.96.12.34"),
                svc("out", "u2", "192.168.0.1"),
                svc("x", "u3", "10.96.0.7"),
                svc("y", "u4", "10.96.0.7"),
            ],
            &[],
            NOW.parse().unwrap(),
        );
        let made: Vec<String> = creates(&r).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            made,
            [
                claim_key("10.96.0.7".parse().unwrap()),
                claim_key("10.96.12.34".parse().unwrap())
            ]
        );
        assert!(deletes(&r).is_empty());
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("192.168.0.1, outside the range 10.96.0.0/12"));
        assert!(r.warnings[1].contains("default/x, default/y"));
    }
}
