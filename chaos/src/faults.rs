//! Faults: what can be injected, a schedule drawn from a seed, and the packet filter used for
//! partitions (an iptables chain of the harness's own).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGKILL a random master, restart it.
    KillRandom,
    /// SIGKILL a minority (⌊(n-1)/2⌋ masters, possibly the leader), restart them.
    KillMinority,
    /// SIGKILL every master, restart them all.
    KillAll,
    /// SIGSTOP the leader, SIGCONT after the hold.
    PauseLeader,
    /// Drop every packet between the leader and the other masters.
    PartitionLeader,
    /// Split the masters into a random minority and majority.
    PartitionHalves,
    /// Two sides that cannot see each other, and one master that sees both.
    PartitionBridge,
    /// Add a new master (new id, empty disk) and remove an old follower, under load.
    Membership,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::KillRandom,
        FaultKind::KillMinority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::PartitionLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionBridge,
        FaultKind::Membership,
    ];

    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::KillMinority => "kill-minority",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::Membership => "membership",
        }
    }

    /// Parses a name (see [`FaultKind::name`]).
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s.trim())
    }

    /// Parses a comma-separated list; `all` means every kind.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        if s.trim() == "all" {
            return Ok(FaultKind::ALL.to_vec());
        }
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| FaultKind::parse(p).ok_or_else(|| format!("unknown fault {p:?}")))
            .collect()
    }

    /// True for the faults that need iptables.
    pub fn needs_iptables(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader | FaultKind::PartitionHalves | FaultKind::PartitionBridge
        )
    }

    /// True for the faults after which the time to the first successful write is measured.
    pub fn measures_failover(self) -> bool {
        self != FaultKind::Membership
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedFault {
    pub kind: FaultKind,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// Quiet time after healing (and after a leader is back) before the next fault.
    pub gap: Duration,
    /// Drawn once; chooses the targets among the masters at injection time.
    pub pick: u64,
}

/// Bounds of the random hold and gap.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub hold: (Duration, Duration),
    pub gap: (Duration, Duration),
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            hold: (Duration::from_millis(1000), Duration::from_millis(3000)),
            gap: (Duration::from_millis(500), Duration::from_millis(2000)),
        }
    }
}

/// `count` faults drawn from `seed`: the kinds in shuffled rounds (every kind appears once per
/// round, so short campaigns cover all of them), holds and gaps uniform in `timing`'s bounds.
pub fn schedule(seed: u64, kinds: &[FaultKind], count: usize, timing: Timing) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    if kinds.is_empty() {
        return out;
    }
    while out.len() < count {
        let mut round = kinds.to_vec();
        round.shuffle(&mut rng);
        for kind in round.into_iter().take(count - out.len()) {
            out.push(PlannedFault {
                kind,
                hold: between(&mut rng, timing.hold),
                gap: between(&mut rng, timing.gap),
                pick: rng.gen(),
            });
        }
    }
    out
}

fn between(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
    Duration::from_millis(if hi > lo { rng.gen_range(lo..=hi) } else { lo })
}

/// `k` distinct elements of `from`, chosen by `pick`.
pub fn choose(from: &[u64], k: usize, pick: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(pick);
    let mut v = from.to_vec();
    v.shuffle(&mut rng);
    v.truncate(k);
    v.sort();
    v
}

/// Chains this process created and has not removed yet; removed by [`cleanup_all`] on Ctrl-C.
static CHAINS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs `iptables ARGS`; the error text on failure.
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why partitions cannot be injected here, or `None` if they can.
pub fn iptables_unavailable() -> Option<String> {
    iptables(&["-L", "INPUT", "-n"]).err()
}

/// A packet filter of the harness's own: chain `KEELSON-CHAOS-<pid>-<tag>`, jumped to from
/// `INPUT`. Only rules between two loopback addresses are ever added to it; no other rule is
/// touched. Flushed and deleted on drop (also during a panic) and by [`cleanup_all`].
pub struct Firewall {
    chain: String,
}

impl Firewall {
    /// Creates the chain and the jump to it.
    pub fn new(tag: u8) -> Result<Firewall, String> {
        let chain = format!("KEELSON-CHAOS-{}-{tag}", std::process::id());
        // A chain left over by a crashed earlier run with the same pid: remove it first.
        remove_chain(&chain);
        iptables(&["-N", &chain])?;
        if let Err(e) = iptables(&["-I", "INPUT", "-j", &chain]) {
            let _ = iptables(&["-X", &chain]);
            return Err(e);
        }
        if let Ok(mut c) = CHAINS.lock() {
            c.push(chain.clone());
        }
        Ok(Firewall { chain })
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Drops packets from `a` to `b` and from `b` to `a`.
    pub fn cut(&self, a: Ipv4Addr, b: Ipv4Addr) -> Result<(), String> {
        assert!(
            a.is_loopback() && b.is_loopback(),
            "only loopback addresses"
        );
        for (s, d) in [(a, b), (b, a)] {
            iptables(&[
                "-A",
                &self.chain,
                "-s",
                &s.to_string(),
                "-d",
                &d.to_string(),
                "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    /// Cuts every address of `left` from every address of `right`.
    pub fn split(&self, left: &[Ipv4Addr], right: &[Ipv4Addr]) -> Result<(), String> {
        for a in left {
            for b in right {
                self.cut(*a, *b)?;
            }
        }
        Ok(())
    }

    /// Removes every rule of the chain: the network is whole again.
    pub fn heal(&self) -> Result<(), String> {
        iptables(&["-F", &self.chain])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
        if let Ok(mut c) = CHAINS.lock() {
            c.retain(|x| x != &self.chain);
        }
    }
}

/// Removes the jump, flushes and deletes `chain` (errors ignored: it may not exist).
fn remove_chain(chain: &str) {
    while iptables(&["-D", "INPUT", "-j", chain]).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Removes every chain this process created (for signal handlers, where drops do not run).
pub fn cleanup_all() {
    let chains: Vec<String> = CHAINS.lock().map(|c| c.clone()).unwrap_or_default();
    for c in chains {
        remove_chain(&c);
    }
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub start_us: u64,
    pub end_us: u64,
    pub targets: Vec<u64>,
    /// The leader when the fault started.
    pub leader: Option<u64>,
    /// Fault start → completion of the first acknowledged write invoked after it.
    pub failover_ms: Option<f64>,
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_replay_from_the_seed_and_cover_every_kind() {
        let kinds = [
            FaultKind::KillLeader,
            FaultKind::PauseLeader,
            FaultKind::KillAll,
        ];
        let a = schedule(7, &kinds, 6, Timing::default());
        let b = schedule(7, &kinds, 6, Timing::default());
        let c = schedule(8, &kinds, 6, Timing::default());
        let names = |s: &[PlannedFault]| {
            s.iter()
                .map(|f| (f.kind, f.hold, f.pick))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_ne!(names(&a), names(&c));
        for k in kinds {
            assert_eq!(a[..3].iter().filter(|f| f.kind == k).count(), 1);
        }
    }

    #[test]
    fn fault_names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Some(k));
        }
        assert!(FaultKind::parse_list("kill-leader,nope").is_err());
        assert_eq!(FaultKind::parse_list("all").unwrap().len(), 9);
    }

    #[test]
    fn choose_is_deterministic() {
        assert_eq!(
            choose(&[1, 2, 3, 4, 5], 2, 9),
            choose(&[1, 2, 3, 4, 5], 2, 9)
        );
        assert_eq!(choose(&[1, 2, 3], 5, 1).len(), 3);
    }
}
