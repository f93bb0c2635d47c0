//! A campaign: start a cluster, run the workloads, inject the scheduled faults, heal, check.
//!
//! [`run`] is what `keelson-chaos` and `tests/chaos.rs` call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agents::Agents;
use crate::checker::controller::{self as ctl, BoundOnce, ControllerFinal, ReplicaCount};
use crate::checker::over_replicas::{self, NeverOverReplicas};
use crate::checker::{self, FinalState, Invariant, Violation};
use crate::client::Kv;
use crate::cluster::Cluster;
use crate::faults::{self, FaultKind, Firewall, PlannedFault};
use crate::history::{BindingSource, WatchLog};
use crate::objects::{self, PodWatchLog};
use crate::report::{self, ControllerChecked, Histories, Report};

pub use crate::config::Config;
pub use crate::faults::FaultRecord;
pub use crate::history::count;
use crate::workload::{self, Shared, APPEND_PREFIX, PREFIX, REGISTER_PREFIX};

/// The masters' own flags: a request gives up (503/504) well before the clients time out.
const MASTER_DEFAULTS: [&str; 2] = ["--request-timeout-ms", "2000"];

/// With the controller workload (unless `--master-arg` sets them): a node silent for 3 s is
/// NotReady and its pods are failed 2 s later, so faults that cut agents from the leader
/// (a paused or partitioned leader holds their heartbeat streams) also exercise eviction.
const CONTROLLER_MASTER_DEFAULTS: [(&str, &str); 2] =
    [("--node-grace-ms", "3000"), ("--pod-eviction-ms", "2000")];

/// Heartbeat interval of the hollow agents.
const AGENT_HEARTBEAT_MS: u64 = 200;

/// How a fault is undone.
enum Undo {
    Restart(Vec<u64>),
    Resume(u64),
    Heal,
    Nothing,
}

/// Everything a running campaign owns.
struct Run<'a> {
    cfg: &'a Config,
    cluster: Cluster,
    firewall: Option<Firewall>,
    shared: Arc<Shared>,
    /// Current voters, by id.
    members: Vec<u64>,
    records: Vec<FaultRecord>,
    violations: Vec<Violation>,
    skipped: Vec<String>,
    /// Checks that gave up.
    unknown: Vec<String>,
    /// The controller workload's agents.
    agents: Option<Agents>,
    /// The seed controller's replicas when created.
    initial_replicas: i64,
    /// When the last fault was healed (a leader agreed on), µs.
    healed_us: u64,
}

/// Runs a campaign and checks it. `Err` only when the harness itself cannot run (no binary,
/// no initial leader); property violations are in [`Report::violations`].
pub async fn run(cfg: &Config) -> Result<(Report, Histories), String> {
    if !cfg.keelson.is_file() {
        return Err(format!("no keelson binary at {}", cfg.keelson.display()));
    }
    let (kinds, skipped) = usable_faults(&cfg.faults);
    for s in &skipped {
        eprintln!("keelson-chaos: {s}");
    }
    let cluster = start_cluster(cfg);
    let firewall = match kinds.iter().any(|k| k.needs_iptables()) {
        true => Some(Firewall::new(ip_of(&cluster, 1).octets()[1])?),
        false => None,
    };
    let members = cluster.ids();
    if cluster.wait_leader(Duration::from_secs(30)).await.is_none() {
        return Err(format!(
            "no initial leader; master 1 log:\n{}",
            cluster.log_tail(1, 30)
        ));
    }
    let shared = Shared::new(urls(&cluster, &members), cfg.client_timeout);
    shared.local_reads.store(cfg.local_reads, Ordering::Relaxed);
    let (initial_replicas, agents) = match cfg.controllers {
        false => (0, None),
        true => {
            let initial = objects::create_controller(&shared).await?;
            let agents = Agents::start(
                &cfg.keelson,
                cluster.root(),
                ip_of(&cluster, 1).octets()[1],
                cfg.agents,
                shared.members().into_iter().map(|m| m.1).collect(),
                AGENT_HEARTBEAT_MS,
            );
            (initial, Some(agents))
        }
    };
    let mut run = Run {
        cfg,
        cluster,
        firewall,
        shared,
        members,
        records: Vec::new(),
        violations: Vec::new(),
        skipped,
        unknown: Vec::new(),
        agents,
        initial_replicas,
        healed_us: 0,
    };
    let tasks = spawn_workloads(cfg, &run.shared);
    if cfg.controllers && cfg.burst_controllers > 0 {
        if let Err(e) = run.burst().await {
            run.stop_all();
            return Err(e);
        }
    }
    let plan = faults::schedule(cfg.seed, &kinds, 100_000, cfg.timing);
    run.inject_all(&plan).await;
    run.heal_everything().await;
    run.finish(tasks).await
}

/// The requested faults this machine can inject, and why the others are skipped.
fn usable_faults(requested: &[FaultKind]) -> (Vec<FaultKind>, Vec<String>) {
    let blocked = requested
        .iter()
        .any(|k| k.needs_iptables())
        .then(faults::iptables_unavailable)
        .flatten();
    match blocked {
        None => (requested.to_vec(), Vec::new()),
        Some(why) => {
            let skipped: Vec<FaultKind> = requested
                .iter()
                .copied()
                .filter(|k| k.needs_iptables())
                .collect();
            let names: Vec<&str> = skipped.iter().map(|k| k.name()).collect();
            (
                requested
                    .iter()
                    .copied()
                    .filter(|k| !k.needs_iptables())
                    .collect(),
                vec![format!(
                    "skipping {} (iptables unusable: {why})",
                    names.join(", ")
                )],
            )
        }
    }
}

fn start_cluster(cfg: &Config) -> Cluster {
    let mut args: Vec<&str> = MASTER_DEFAULTS.to_vec();
    if cfg.controllers {
        for (flag, value) in CONTROLLER_MASTER_DEFAULTS {
            if !cfg.master_args.iter().any(|a| a.starts_with(flag)) {
                args.extend([flag, value]);
            }
        }
    }
    args.extend(cfg.master_args.iter().map(String::as_str));
    match &cfg.work_dir {
        None => Cluster::start(&cfg.keelson, cfg.masters, &args),
        Some(dir) => {
            let mut c = Cluster::new_in(&cfg.keelson, dir, cfg.masters, &args);
            c.start_all();
            c
        }
    }
}

/// Master `id`'s address.
fn ip_of(c: &Cluster, id: u64) -> Ipv4Addr {
    match c.spec(id).raft.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    }
}

fn urls(c: &Cluster, ids: &[u64]) -> Vec<(u64, String)> {
    ids.iter().map(|id| (*id, c.url(*id))).collect()
}

/// Handles of the workload tasks.
struct Tasks {
    writers: Vec<tokio::task::JoinHandle<()>>,
    sampler: tokio::task::JoinHandle<()>,
    watchers: Vec<tokio::task::JoinHandle<WatchLog>>,
    /// The controller workload's scaler, pods watcher and controllers watcher.
    scaler: Option<tokio::task::JoinHandle<()>>,
    pods: Option<tokio::task::JoinHandle<PodWatchLog>>,
    rcs: Option<tokio::task::JoinHandle<PodWatchLog>>,
}

fn spawn_workloads(cfg: &Config, shared: &Arc<Shared>) -> Tasks {
    let mut writers = Vec::new();
    for c in 0..cfg.register_clients {
        let s = shared.clone();
        writers.push(tokio::spawn(workload::register_client(
            s,
            c,
            cfg.register_keys,
            cfg.seed,
        )));
    }
    for c in 0..cfg.appenders {
        writers.push(tokio::spawn(workload::appender(
            shared.clone(),
            c,
            cfg.seed,
        )));
    }
    Tasks {
        writers,
        sampler: tokio::spawn(workload::leader_sampler(
            shared.clone(),
            Duration::from_millis(100),
        )),
        watchers: (0..cfg.watchers)
            .map(|w| tokio::spawn(workload::watcher(shared.clone(), w)))
            .collect(),
        scaler: cfg.controllers.then(|| {
            tokio::spawn(objects::scaler(
                shared.clone(),
                cfg.seed,
                cfg.scale_values.clone(),
                cfg.scale_every,
            ))
        }),
        pods: cfg
            .controllers
            .then(|| tokio::spawn(objects::pod_watcher(shared.clone()))),
        rcs: cfg
            .controllers
            .then(|| tokio::spawn(objects::rc_watcher(shared.clone()))),
    }
}

impl Run<'_> {
    /// Creates the burst controllers ([`Config::burst_controllers`]) once the pods and
    /// controllers watchers have listed (within 5 s), so that both see the burst as events.
    async fn burst(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listed = |s: &Shared| {
            s.pod_log.lock().is_ok_and(|l| !l.is_empty())
                && s.rc_log.lock().is_ok_and(|l| !l.is_empty())
        };
        while Instant::now() < deadline && !listed(&self.shared) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let names = objects::create_burst(
            &self.shared,
            self.cfg.burst_controllers,
            self.cfg.burst_replicas,
        )
        .await?;
        self.log(format!(
            "burst: {} controllers of {} replicas ({}..)",
            names.len(),
            self.cfg.burst_replicas,
            names.first().map_or("", String::as_str)
        ));
        Ok(())
    }

    /// Tells every workload task to stop.
    fn stop_all(&self) {
        for f in [
            &self.shared.stop,
            &self.shared.stop_watch,
            &self.shared.stop_scale,
            &self.shared.stop_pod_watch,
        ] {
            f.store(true, Ordering::Relaxed);
        }
    }

    fn log(&self, msg: impl AsRef<str>) {
        if self.cfg.verbose {
            eprintln!(
                "[{:7.2}s] {}",
                self.shared.now_us() as f64 / 1e6,
                msg.as_ref()
            );
        }
    }

    /// Injects planned faults while time remains.
    async fn inject_all(&mut self, plan: &[PlannedFault]) {
        let deadline = Instant::now() + self.cfg.duration;
        if plan.is_empty() {
            tokio::time::sleep(self.cfg.duration).await;
            return;
        }
        // Let the workloads get going before the first fault.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for f in plan {
            if Instant::now() + f.hold >= deadline {
                break;
            }
            self.inject_one(f).await;
            let rest = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(f.gap.min(rest)).await;
        }
    }

    /// Injects `f`, holds it, undoes it and waits for a leader.
    async fn inject_one(&mut self, f: &PlannedFault) {
        let leader = self.cluster.wait_leader(Duration::from_secs(5)).await;
        let start_us = self.shared.now_us();
        let (targets, undo, note) = match self.apply(f, leader).await {
            Ok(x) => x,
            Err(why) => {
                self.log(format!("{} skipped: {why}", f.kind.name()));
                self.skipped.push(format!(
                    "{} at {:.1}s: {why}",
                    f.kind.name(),
                    start_us as f64 / 1e6
                ));
                return;
            }
        };
        self.log(format!(
            "{} on {targets:?} (leader {leader:?})",
            f.kind.name()
        ));
        if !matches!(undo, Undo::Nothing) {
            tokio::time::sleep(f.hold).await;
        }
        self.undo(undo);
        let end_us = self.shared.now_us();
        self.records.push(FaultRecord {
            kind: f.kind,
            start_us,
            end_us,
            targets,
            leader,
            failover_ms: None,
            note,
        });
        self.await_leader(f.kind.name()).await;
    }

    /// A liveness violation when no leader is agreed on within 30 s of healing.
    async fn await_leader(&mut self, after: &str) -> Option<u64> {
        let l = self.cluster.wait_leader(Duration::from_secs(30)).await;
        if l.is_none() {
            let logs: Vec<String> = self
                .members
                .iter()
                .map(|id| format!("master {id}: {}", self.cluster.log_tail(*id, 3)))
                .collect();
            self.violations.push(Violation::new(
                "liveness",
                format!(
                    "no leader within 30s after healing {after}\n{}",
                    logs.join("\n")
                ),
            ));
        }
        l
    }

    /// Injects the fault; returns its targets and how to undo it.
    async fn apply(
        &mut self,
        f: &PlannedFault,
        leader: Option<u64>,
    ) -> Result<(Vec<u64>, Undo, Option<String>), String> {
        let n = self.members.len();
        let need_leader = || leader.ok_or_else(|| "no leader".to_string());
        Ok(match f.kind {
            FaultKind::KillLeader => (vec![need_leader()?], self.kill(&[need_leader()?]), None),
            FaultKind::KillRandom => {
                let t = faults::choose(&self.members, 1, f.pick);
                (t.clone(), self.kill(&t), None)
            }
            FaultKind::KillMinority => {
                let t = faults::choose(&self.members, (n - 1) / 2, f.pick);
                (t.clone(), self.kill(&t), None)
            }
            FaultKind::KillAll => {
                let t = self.members.clone();
                (t.clone(), self.kill(&t), None)
            }
            FaultKind::PauseLeader => {
                let l = need_leader()?;
                self.cluster.pause(l);
                (vec![l], Undo::Resume(l), None)
            }
            FaultKind::PartitionLeader => {
                let l = need_leader()?;
                let others: Vec<u64> = self.members.iter().copied().filter(|m| *m != l).collect();
                self.partition(&[l], &others)?;
                (vec![l], Undo::Heal, None)
            }
            FaultKind::PartitionHalves => {
                let minority = faults::choose(&self.members, (n - 1) / 2, f.pick);
                let majority: Vec<u64> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|m| !minority.contains(m))
                    .collect();
                self.partition(&minority, &majority)?;
                (minority, Undo::Heal, None)
            }
            FaultKind::PartitionBridge => {
                let order = faults::choose(&self.members, n, f.pick);
                let (bridge, rest) = order.split_first().ok_or("no masters")?;
                let (left, right) = rest.split_at(rest.len() / 2);
                self.partition(left, right)?;
                (
                    vec![*bridge],
                    Undo::Heal,
                    Some(format!("{left:?} | {right:?}, bridge {bridge}")),
                )
            }
            FaultKind::Membership => {
                let l = need_leader()?;
                let note = self.change_membership(l, f.pick).await?;
                // Agents know only the masters they were started with.
                let urls: Vec<String> = self.shared.members().into_iter().map(|m| m.1).collect();
                if let Some(a) = self.agents.as_mut() {
                    a.restart_all(urls);
                }
                (self.members.clone(), Undo::Nothing, Some(note))
            }
        })
    }

    fn kill(&mut self, ids: &[u64]) -> Undo {
        for id in ids {
            self.cluster.kill(*id);
        }
        Undo::Restart(ids.to_vec())
    }

    fn partition(&self, left: &[u64], right: &[u64]) -> Result<(), String> {
        let fw = self.firewall.as_ref().ok_or("no firewall")?;
        let ips = |ids: &[u64]| {
            ids.iter()
                .map(|id| ip_of(&self.cluster, *id))
                .collect::<Vec<_>>()
        };
        fw.split(&ips(left), &ips(right))
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Restart(ids) => {
                for id in ids {
                    if !self.cluster.is_running(id) {
                        self.cluster.spawn(id);
                    }
                }
            }
            Undo::Resume(id) => self.cluster.resume(id),
            Undo::Heal => {
                if let Some(Err(e)) = self.firewall.as_ref().map(Firewall::heal) {
                    self.violations
                        .push(Violation::new("harness", format!("heal failed: {e}")));
                }
            }
            Undo::Nothing => {}
        }
    }

    /// Adds a new master, then removes an old follower (the size stays the same).
    async fn change_membership(&mut self, leader: u64, pick: u64) -> Result<String, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let new_id = self.cluster.ids().into_iter().max().unwrap_or(0) + 1;
        let spec = self.cluster.declare_joiner(new_id);
        self.cluster.spawn(new_id);
        let body =
            json!({"id": new_id, "raft": spec.raft.to_string(), "api": spec.api.to_string()});
        let added = http
            .post(format!("{}/cluster/masters", self.cluster.url(leader)))
            .json(&body)
            .send()
            .await;
        if !added.as_ref().is_ok_and(|r| r.status().is_success()) {
            self.cluster.forget(new_id);
            return Err(format!(
                "adding master {new_id} failed: {:?}",
                added.map(|r| r.status())
            ));
        }
        self.members.push(new_id);
        self.shared.set_members(urls(&self.cluster, &self.members));
        let followers: Vec<u64> = self
            .members
            .iter()
            .copied()
            .filter(|m| *m != leader && *m != new_id)
            .collect();
        let victim = *faults::choose(&followers, 1, pick)
            .first()
            .ok_or("no follower to remove")?;
        let removed = http
            .delete(format!(
                "{}/cluster/masters/{victim}",
                self.cluster.url(leader)
            ))
            .send()
            .await;
        if !removed.as_ref().is_ok_and(|r| r.status().is_success()) {
            return Ok(format!(
                "added {new_id}; removing {victim} failed: {:?}",
                removed.map(|r| r.status())
            ));
        }
        self.members.retain(|m| *m != victim);
        self.shared.set_members(urls(&self.cluster, &self.members));
        self.cluster.forget(victim);
        Ok(format!("added {new_id}, removed {victim}"))
    }

    /// Heals the network, resumes and restarts every member, waits for a leader.
    async fn heal_everything(&mut self) {
        // The controller's desired replicas stay put from here on.
        self.shared.stop_scale.store(true, Ordering::Relaxed);
        if let Some(fw) = &self.firewall {
            let _ = fw.heal();
        }
        for id in self.members.clone() {
            self.cluster.resume(id);
            if !self.cluster.is_running(id) {
                self.cluster.spawn(id);
            }
        }
        self.await_leader("the last fault").await;
        self.healed_us = self.shared.now_us();
        let again = self
            .agents
            .as_mut()
            .map(Agents::respawn_exited)
            .unwrap_or_default();
        if !again.is_empty() {
            self.log(format!("agents {again:?} had exited; started again"));
        }
        // Some operations on the healed cluster, so every history ends healthy.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Stops the workloads, reads the final state, runs every checker.
    async fn finish(mut self, tasks: Tasks) -> Result<(Report, Histories), String> {
        let fault_end = self.shared.now_us();
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in tasks.writers {
            let _ = t.await;
        }
        let _ = tasks.sampler.await;
        if let Some(s) = tasks.scaler {
            let _ = s.await;
        }
        let final_state = self.final_state().await;
        let target = final_state
            .as_ref()
            .and_then(|f| f.items.iter().map(|i| i.2).max())
            .unwrap_or(0);
        self.shared.watch_target.store(target, Ordering::Relaxed);
        let controller = match (tasks.pods, tasks.rcs) {
            (Some(pods), Some(rcs)) => Some(self.controller_final(pods, rcs).await),
            _ => None,
        };
        let logs = self.join_watchers(tasks.watchers, target).await;
        let mut h = Histories {
            registers: std::mem::take(
                &mut *self.shared.registers.lock().map_err(|e| e.to_string())?,
            ),
            appends: std::mem::take(&mut *self.shared.appends.lock().map_err(|e| e.to_string())?),
            leaders: std::mem::take(&mut *self.shared.leaders.lock().map_err(|e| e.to_string())?),
            watches: logs,
            faults: std::mem::take(&mut self.records),
            scales: std::mem::take(&mut *self.shared.scales.lock().map_err(|e| e.to_string())?),
            bindings: Vec::new(),
            pods: Vec::new(),
            controllers: Vec::new(),
        };
        report::fill_failover(&mut h);
        let mut report = Report::new(self.cfg, fault_end, self.cluster.root().to_path_buf());
        report.violations = std::mem::take(&mut self.violations);
        report.skipped_faults = std::mem::take(&mut self.skipped);
        report.unknown = std::mem::take(&mut self.unknown);
        let (controller, ctl_checked) = match controller {
            Some((fin, checked)) => (Some(fin), Some(checked)),
            None => (None, None),
        };
        if let Some(c) = &controller {
            h.bindings = c.bindings.clone();
            h.pods = c.pod_log.clone();
            h.controllers = c.rc_log.clone();
        }
        self.check(&mut report, &h, final_state, controller);
        if let Some(mut c) = ctl_checked {
            c.scales = count(h.scales.iter().map(|o| o.outcome));
            report.controller_converged_after_s = c.converged_after_s;
            report.checked.controller = Some(c);
        }
        report.summarize(&h);
        Ok((report, h))
    }

    /// Waits (within [`Config::controller_bound`] of the heal) for the controller's exact
    /// count, lets the pods and controllers watchers catch up with the final list, and
    /// gathers what the controller invariants check.
    async fn controller_final(
        &mut self,
        pods: tokio::task::JoinHandle<PodWatchLog>,
        rcs: tokio::task::JoinHandle<PodWatchLog>,
    ) -> (ControllerFinal, ControllerChecked) {
        let bound = self.cfg.controller_bound;
        let conv = objects::converge(&self.shared, self.healed_us, bound).await;
        match conv.converged_after_s {
            Some(s) => self.log(format!(
                "controller at its exact count {s:.1}s after the heal"
            )),
            None => self.log(format!(
                "controller not at its exact count {bound:?} after the heal"
            )),
        }
        if conv.list_rv > 0 {
            self.shared
                .pod_watch_target
                .store(conv.list_rv, Ordering::Relaxed);
        } else {
            self.shared.stop_pod_watch.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !(pods.is_finished() && rcs.is_finished()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shared.stop_pod_watch.store(true, Ordering::Relaxed);
        let pod_watch = pods.await.unwrap_or_default();
        let rc_watch = rcs.await.unwrap_or_default();
        if pod_watch.reached_rv < conv.list_rv {
            self.unknown.push(format!(
                "pod-binding: the pods watcher reached version {}, not the final list's {}; later bindings were not observed",
                pod_watch.reached_rv, conv.list_rv
            ));
        }
        if rc_watch.reached_rv < conv.list_rv {
            self.unknown.push(format!(
                "over-replicas: the controllers watcher reached version {}, not the final list's {}; later versions were not checked",
                rc_watch.reached_rv, conv.list_rv
            ));
        }
        let pod_log = std::mem::take(
            &mut *self
                .shared
                .pod_log
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let rc_log =
            std::mem::take(&mut *self.shared.rc_log.lock().unwrap_or_else(|e| e.into_inner()));
        let (_, over) = over_replicas::check("over-replicas", &pod_log, &rc_log);
        if over.undecided > 0 {
            self.unknown.push(format!(
                "over-replicas: {} controller versions over spec.replicas right after a re-list, where the controller's previous version was not observed",
                over.undecided
            ));
        }
        let mut bindings = std::mem::take(
            &mut *self
                .shared
                .bindings
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        bindings.extend(
            conv.pods
                .iter()
                .map(|p| objects::observe(&self.shared, p, BindingSource::Final)),
        );
        let scales = self
            .shared
            .scales
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let acceptable = ctl::acceptable_replicas(self.initial_replicas, &scales);
        let checked = ControllerChecked {
            controller: format!("{}/{}", objects::NAMESPACE, objects::RC_NAME),
            agents: self.cfg.agents,
            scales: BTreeMap::new(),
            acceptable_replicas: acceptable.iter().copied().collect(),
            final_replicas: conv.rc.as_ref().map(ctl::desired),
            status_replicas: conv
                .rc
                .as_ref()
                .and_then(|rc| rc.pointer("/status/replicas"))
                .and_then(serde_json::Value::as_i64),
            live_pods: conv
                .rc
                .as_ref()
                .map_or(0, |rc| ctl::live_pods(rc, &conv.pods).len()),
            running_pods: conv.running,
            converged_after_s: conv.converged_after_s,
            bound_s: bound.as_secs_f64(),
            bindings: ctl::binding_stats(&bindings),
            pod_watch,
            rc_watch,
            burst_controllers: self.cfg.burst_controllers,
            burst_replicas: self.cfg.burst_replicas,
            over_replicas: over,
        };
        let fin = ControllerFinal {
            namespace: objects::NAMESPACE.to_string(),
            name: objects::RC_NAME.to_string(),
            rc: conv.rc,
            pods: conv.pods,
            acceptable,
            bindings,
            pod_log,
            rc_log,
            converged_after_s: conv.converged_after_s,
            bound_s: bound.as_secs_f64(),
        };
        (fin, checked)
    }

    /// A linearizable list of every workload key, retried for 30 s.
    async fn final_state(&mut self) -> Option<FinalState> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (_, url) in self.shared.members() {
                if let Ok((items, rv)) = Kv::new(&url, Duration::from_secs(5))
                    .list(PREFIX, false)
                    .await
                {
                    return Some(FinalState {
                        items,
                        rv,
                        ..FinalState::default()
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.violations.push(Violation::new(
            "liveness",
            "no final list within 30s of healing",
        ));
        None
    }

    /// Waits (at most 30 s) for every watcher to reach `target`.
    async fn join_watchers(
        &mut self,
        watchers: Vec<tokio::task::JoinHandle<WatchLog>>,
        target: u64,
    ) -> Vec<WatchLog> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !watchers.iter().all(|w| w.is_finished()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shared.stop_watch.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for w in watchers {
            if let Ok(log) = w.await {
                let last = log
                    .segments
                    .iter()
                    .flat_map(|s| &s.events)
                    .map(|e| e.rv)
                    .max()
                    .unwrap_or(0);
                if last < target {
                    self.violations.push(Violation::new(
                        "watch",
                        format!(
                            "watcher {} stopped at version {last}, never reached {target}",
                            log.watcher
                        ),
                    ));
                }
                logs.push(log);
            }
        }
        logs
    }

    /// Runs every checker and records its figures.
    fn check(
        &self,
        report: &mut Report,
        h: &Histories,
        final_state: Option<FinalState>,
        controller: Option<ControllerFinal>,
    ) {
        let fin = final_state.unwrap_or_default();
        // Linearizability of the registers.
        let results = checker::linear::check(&h.registers, self.cfg.search_limit);
        for r in &results {
            match &r.verdict {
                checker::linear::Verdict::Linearizable => {}
                checker::linear::Verdict::NotLinearizable { culprit } => {
                    report.violations.push(Violation::new(
                        "linearizability",
                        format!(
                            "{}: not linearizable ({} ops); stuck at {culprit}",
                            r.key, r.ops
                        ),
                    ))
                }
                checker::linear::Verdict::Unknown { reason } => {
                    report.unknown.push(format!("{}: {reason}", r.key))
                }
            }
        }
        report.checked.register_ops = results.iter().map(|r| r.ops).sum();
        report.checked.keys = results;
        // Acknowledged creates.
        let present: BTreeSet<String> = fin
            .items
            .iter()
            .filter(|i| i.0.starts_with(APPEND_PREFIX))
            .map(|i| i.0.clone())
            .collect();
        let (v, stats) = checker::appends::check(&h.appends, &present);
        report.violations.extend(v);
        report.checked.appends = stats;
        // Leaders.
        report
            .violations
            .extend(checker::leaders::check(&h.leaders));
        report.checked.leader_samples = h.leaders.len();
        report.checked.terms_with_leader = checker::leaders::terms_with_leader(&h.leaders);
        // Watches.
        let caught_up = !report.violations.iter().any(|v| v.checker == "watch");
        let (v, union) = checker::watches::check(&h.watches, &fin.items, caught_up);
        report.violations.extend(v);
        report.checked.watch_events = union.len();
        report.checked.watch_segments = h.watches.iter().map(|w| w.segments.len()).sum();
        report.checked.relists = h
            .watches
            .iter()
            .flat_map(|w| &w.segments)
            .filter(|s| s.expired)
            .count();
        // Domain invariants.
        let fin = FinalState {
            events: union.into_values().collect(),
            controller,
            ..fin
        };
        let builtin: Vec<Box<dyn Invariant>> = match self.cfg.controllers {
            true => vec![
                Box::new(ReplicaCount),
                Box::new(BoundOnce),
                Box::new(NeverOverReplicas),
            ],
            false => Vec::new(),
        };
        for inv in self.cfg.invariants.iter().chain(&builtin) {
            report.violations.extend(inv.check(&fin));
        }
        let _ = REGISTER_PREFIX;
        report.checked.final_keys = fin.items.len();
    }
}
