//! Short fault-injection campaigns against real masters (the `keelson-chaos` runner, called as
//! a library), and the checker's self-check on a known-bad history. The three-master campaign
//! also runs the controller workload (the seed's replication controller on hollow agents,
//! scaled under faults, and a burst of three more controllers of 100 replicas created at the
//! start, none of which may ever hold more live pods than its replicas).
//!
//! Campaigns run one at a time (two clusters at once would starve 2 cores). Partitions need
//! root and iptables; without them they are skipped with a printed reason.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use keelson_chaos::campaign::{self, Config};
use keelson_chaos::faults::{self, FaultKind, Timing};
use keelson_chaos::report::{self, Report};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

/// One campaign at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn config(masters: u64, secs: u64, seed: u64, faults: &[FaultKind]) -> Config {
    let mut cfg = Config::new(PathBuf::from(BIN), masters);
    cfg.duration = Duration::from_secs(secs);
    cfg.seed = seed;
    cfg.faults = faults.to_vec();
    cfg.timing = Timing {
        hold: (Duration::from_millis(1000), Duration::from_millis(2000)),
        gap: (Duration::from_millis(300), Duration::from_millis(800)),
    };
    cfg.verbose = true;
    cfg
}

/// Runs `cfg`, writes its report under the temp dir, prints the summary and fails on any
/// violation.
async fn campaign(name: &str, cfg: Config) -> Report {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = faults::iptables_unavailable() {
        println!("{name}: partitions skipped: {why}");
    }
    let (mut r, h) = campaign::run(&cfg).await.expect("campaign runs");
    let path =
        std::env::temp_dir().join(format!("keelson-chaos-{name}-{}.json", std::process::id()));
    r.write(&path, &h).expect("write report");
    println!("{}report: {}", r.summary(), path.display());
    assert!(
        r.violations.is_empty(),
        "{name}: violations\n{}",
        r.summary()
    );
    assert!(
        r.unknown.is_empty(),
        "{name}: checks gave up\n{}",
        r.summary()
    );
    assert!(
        r.checked.register_ops > 100,
        "{name}: too few operations\n{}",
        r.summary()
    );
    assert!(
        r.checked.appends.acknowledged > 50,
        "{name}: too few creates\n{}",
        r.summary()
    );
    assert!(
        r.checked.watch_events > 50,
        "{name}: too few watch events\n{}",
        r.summary()
    );
    r
}

/// The controller workload ran and was checked: scales acknowledged, pods bound and watched,
/// the exact count back after the heal.
fn assert_controller_checked(r: &Report) {
    let c = r
        .checked
        .controller
        .as_ref()
        .unwrap_or_else(|| panic!("controller workload not checked\n{}", r.summary()));
    assert!(
        c.scales.get("ok").copied().unwrap_or(0) >= 3,
        "too few acknowledged scales\n{}",
        r.summary()
    );
    assert!(
        c.bindings.bound >= 3 && c.bindings.nodes >= 2,
        "too few pods bound\n{}",
        r.summary()
    );
    assert!(r.controller_converged_after_s.is_some(), "{}", r.summary());
    assert_eq!(
        c.final_replicas,
        Some(c.live_pods as i64),
        "{}",
        r.summary()
    );
}

/// Every requested kind that this machine can inject was injected at least once.
fn assert_covered(r: &Report, kinds: &[FaultKind]) {
    let partitions = faults::iptables_unavailable().is_none();
    for k in kinds.iter().filter(|k| partitions || !k.needs_iptables()) {
        assert!(
            r.faults.get(k.name()).copied().unwrap_or(0) >= 1,
            "{} never injected\n{}",
            k.name(),
            r.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_keep_every_property_under_faults_with_the_seed_controller() {
    let kinds = [
        FaultKind::KillLeader,
        FaultKind::KillMinority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::PartitionLeader,
    ];
    let mut cfg = config(3, 35, 11, &kinds);
    cfg.controllers = true;
    cfg.burst_controllers = 3;
    cfg.burst_replicas = 100;
    let r = campaign("3-masters", cfg).await;
    assert_covered(&r, &kinds);
    assert_controller_checked(&r);
    let over = &r
        .checked
        .controller
        .as_ref()
        .expect("checked")
        .over_replicas;
    assert!(
        over.controllers >= 4 && over.pod_events > 300,
        "the burst was not checked\n{}",
        r.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_masters_keep_every_property_under_faults() {
    let kinds = [
        FaultKind::KillLeader,
        FaultKind::KillMinority,
        FaultKind::PartitionHalves,
    ];
    let r = campaign("5-masters", config(5, 20, 5, &kinds)).await;
    assert_covered(&r, &kinds);
}

#[test]
fn the_checker_rejects_a_known_bad_history() {
    let r = report::self_check();
    assert_ne!(r.exit_code(), 0, "{}", r.summary());
    for checker in [
        "linearizability",
        "lost-write",
        "leaders",
        "replica-count",
        "pod-binding",
        "over-replicas",
    ] {
        assert!(
            r.violations.iter().any(|v| v.checker == checker),
            "{checker} not reported\n{}",
            r.summary()
        );
    }
}

/// End to end: register reads served from the answering replica (`resourceVersion=0`) are
/// not linearizable, and the campaign must say so (the stand-in for a broken store mode until
/// the master has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_with_stale_reads_reports_violations() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = config(3, 15, 3, &[FaultKind::KillLeader, FaultKind::PauseLeader]);
    cfg.local_reads = true;
    let (r, _) = campaign::run(&cfg).await.expect("campaign runs");
    println!("{}", r.summary());
    assert_ne!(
        r.exit_code(),
        0,
        "stale reads went unnoticed\n{}",
        r.summary()
    );
    assert!(
        r.violations.iter().any(|v| v.checker == "linearizability"),
        "{}",
        r.summary()
    );
}

/// The deliberately broken store mode (`keelson master --unsafe-stale-reads`: reads answered
/// from the local replica without confirming leadership) is caught: an isolated or paused
/// leader keeps answering reads with values the majority has overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broken_store_mode_is_caught() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = faults::iptables_unavailable() {
        println!("skipped: partitions need iptables: {why}");
        return;
    }
    let mut cfg = config(
        3,
        20,
        11,
        &[FaultKind::PartitionLeader, FaultKind::PauseLeader],
    );
    cfg.master_args.push("--unsafe-stale-reads".into());
    let (r, _) = campaign::run(&cfg).await.expect("campaign runs");
    println!("{}", r.summary());
    assert_ne!(
        r.exit_code(),
        0,
        "the broken store went unnoticed\n{}",
        r.summary()
    );
    assert!(
        r.violations.iter().any(|v| v.checker == "linearizability"),
        "{}",
        r.summary()
    );
}
