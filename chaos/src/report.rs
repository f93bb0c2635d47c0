//! The campaign's report (JSON), its summary (stdout) and its timeline picture (SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checker::appends::AppendStats;
use crate::checker::controller::{BindingStats, ControllerFinal};
use crate::checker::linear::KeyResult;
use crate::checker::over_replicas::OverStats;
use crate::checker::{self, FinalState, Invariant, Violation};
use crate::config::Config;
use crate::faults::FaultRecord;
use crate::history;
use crate::history::{
    AppendOp, BindingObs, BindingSource, LeaderSample, Outcome, PodSeen, RcSeen, RegKind,
    RegisterOp, ScaleOp, Seen, WatchLog,
};
use crate::objects::PodWatchLog;

/// Everything recorded during a campaign.
#[derive(Debug, Default, Serialize)]
pub struct Histories {
    pub registers: Vec<RegisterOp>,
    pub appends: Vec<AppendOp>,
    pub leaders: Vec<LeaderSample>,
    pub watches: Vec<WatchLog>,
    pub faults: Vec<FaultRecord>,
    /// Scales of the replication controller (controller workload).
    pub scales: Vec<ScaleOp>,
    /// Every pod binding observed (controller workload).
    pub bindings: Vec<BindingObs>,
    /// Every pod as the pods watcher saw it (controller workload).
    pub pods: Vec<Seen<PodSeen>>,
    /// Every replication controller as the controllers watcher saw it (controller workload).
    pub controllers: Vec<Seen<RcSeen>>,
}

/// What the controller invariants looked at.
#[derive(Debug, Default, Serialize)]
pub struct ControllerChecked {
    /// `namespace/name`.
    pub controller: String,
    pub agents: u32,
    /// Scale outcomes: `ok`/`fail`/`info` → count.
    pub scales: BTreeMap<&'static str, usize>,
    /// Values `spec.replicas` could end at (last acknowledged scale, indeterminate ones after).
    pub acceptable_replicas: Vec<i64>,
    /// `spec.replicas` at the end.
    pub final_replicas: Option<i64>,
    pub status_replicas: Option<i64>,
    /// Pods counted towards the controller at the end (not terminal).
    pub live_pods: usize,
    pub running_pods: usize,
    /// Heal → exact count, seconds (`None`: not within `bound_s`).
    pub converged_after_s: Option<f64>,
    pub bound_s: f64,
    pub bindings: BindingStats,
    pub pod_watch: PodWatchLog,
    /// The controllers watcher.
    pub rc_watch: PodWatchLog,
    /// Burst controllers created at the start, and their replicas each.
    pub burst_controllers: u32,
    pub burst_replicas: i64,
    /// What [`checker::over_replicas`] looked at.
    pub over_replicas: OverStats,
}

/// What the checkers looked at.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// Register operations given to the linearizability checker.
    pub register_ops: usize,
    /// The verdict per key.
    pub keys: Vec<KeyResult>,
    pub appends: AppendStats,
    pub leader_samples: usize,
    pub terms_with_leader: usize,
    /// Distinct watch events compared.
    pub watch_events: usize,
    pub watch_segments: usize,
    /// Watches ended by `ERROR`/410 (the watcher re-listed).
    pub relists: usize,
    pub final_keys: usize,
    /// The controller workload, when it ran.
    pub controller: Option<ControllerChecked>,
}

/// Nearest-rank percentiles, in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `v` (any order).
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            n: v.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// The campaign's report.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub masters: u64,
    /// Length of the fault phase, seconds.
    pub duration_s: f64,
    pub master_args: Vec<String>,
    pub work_dir: PathBuf,
    /// Injected faults by kind.
    pub faults: BTreeMap<String, usize>,
    /// Faults that could not be injected, and why.
    pub skipped_faults: Vec<String>,
    /// Empty when every property held.
    pub violations: Vec<Violation>,
    /// Checks that gave up (neither passed nor failed).
    pub unknown: Vec<String>,
    /// Fault start → first acknowledged write, by fault kind.
    pub failover_ms: BTreeMap<String, Percentiles>,
    /// Acknowledged operations / all operations (clients retry at once, so outages with fast
    /// 503s weigh heavily).
    pub availability: f64,
    /// Share of the campaign's seconds in which at least one write was acknowledged.
    pub write_availability: f64,
    /// `register`/`append` → outcome → count.
    pub ops: BTreeMap<String, BTreeMap<&'static str, usize>>,
    pub ops_per_s: f64,
    /// Latency of acknowledged operations.
    pub latency_ms: Percentiles,
    pub checked: Checked,
    /// Controller workload: heal of the last fault → the controller back at its exact count
    /// (`None`: not within the bound, or the workload did not run).
    pub controller_converged_after_s: Option<f64>,
    pub fault_log: Vec<FaultRecord>,
    /// The timeline picture, once written.
    pub timeline: Option<PathBuf>,
}

impl Report {
    /// An empty report for `cfg`.
    pub fn new(cfg: &Config, fault_end_us: u64, work_dir: PathBuf) -> Report {
        Report {
            seed: cfg.seed,
            masters: cfg.masters,
            duration_s: fault_end_us as f64 / 1e6,
            master_args: cfg.master_args.clone(),
            work_dir,
            ..Report::default()
        }
    }

    /// Process exit code: 0 when no violation, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(!self.violations.is_empty())
    }

    /// Fills the figures derived from the histories.
    pub fn summarize(&mut self, h: &Histories) {
        for f in &h.faults {
            *self.faults.entry(f.kind.name().to_string()).or_default() += 1;
        }
        let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for f in h.faults.iter().filter(|f| f.kind.measures_failover()) {
            if let Some(ms) = f.failover_ms {
                by_kind
                    .entry(f.kind.name().to_string())
                    .or_default()
                    .push(ms);
            }
        }
        self.failover_ms = by_kind
            .into_iter()
            .map(|(k, v)| (k, Percentiles::of(v)))
            .collect();
        self.ops.insert(
            "register".into(),
            history::count(h.registers.iter().map(|o| o.outcome)),
        );
        self.ops.insert(
            "append".into(),
            history::count(h.appends.iter().map(|o| o.outcome)),
        );
        let total = h.registers.len() + h.appends.len();
        let ok = self.ops.values().map(|m| m["ok"]).sum::<usize>();
        self.availability = if total == 0 {
            0.0
        } else {
            ok as f64 / total as f64
        };
        let span = h
            .registers
            .iter()
            .map(|o| o.complete_us)
            .chain(h.appends.iter().map(|o| o.complete_us))
            .max()
            .unwrap_or(0) as f64
            / 1e6;
        self.ops_per_s = if span > 0.0 { total as f64 / span } else { 0.0 };
        self.write_availability = write_availability(h, span);
        self.latency_ms = Percentiles::of(
            latencies(h)
                .filter(|l| l.2 == Outcome::Ok)
                .map(|l| l.1 as f64 / 1e3)
                .collect(),
        );
        self.fault_log = h.faults.clone();
    }

    /// A few lines for stdout.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "keelson-chaos: {} masters, seed {}, {:.0}s of faults",
            self.masters, self.seed, self.duration_s
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(s, "  faults: {}", faults.join(" "));
        for skip in &self.skipped_faults {
            let _ = writeln!(s, "  skipped: {skip}");
        }
        for (k, p) in &self.failover_ms {
            let _ = writeln!(
                s,
                "  failover {k}: p50 {:.0} ms, p99 {:.0} ms (n={})",
                p.p50, p.p99, p.n
            );
        }
        let _ = writeln!(
            s,
            "  ops: {} register ops checked on {} keys, {} acknowledged creates, {} watch events, {} leader samples",
            self.checked.register_ops,
            self.checked.keys.len(),
            self.checked.appends.acknowledged,
            self.checked.watch_events,
            self.checked.leader_samples
        );
        let _ = writeln!(
            s,
            "  availability {:.1}% of ops, writes acknowledged in {:.1}% of seconds, {:.0} ops/s, latency p50 {:.1} ms p99 {:.1} ms",
            self.availability * 100.0,
            self.write_availability * 100.0,
            self.ops_per_s,
            self.latency_ms.p50,
            self.latency_ms.p99
        );
        if let Some(c) = &self.checked.controller {
            let n = |k: &str| c.scales.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "  controller {} on {} hollow agents: {} scales (ok {}, fail {}, info {}), spec.replicas {:?} (allowed {:?}), {} live pods ({} running), status.replicas {:?}, exact {} after the heal",
                c.controller,
                c.agents,
                n("ok") + n("fail") + n("info"),
                n("ok"),
                n("fail"),
                n("info"),
                c.final_replicas,
                c.acceptable_replicas,
                c.live_pods,
                c.running_pods,
                c.status_replicas,
                c.converged_after_s
                    .map_or(format!("NOT within {:.0}s", c.bound_s), |t| format!("{t:.1}s"))
            );
            let _ = writeln!(
                s,
                "  bindings: {} observations of {} pods ({} bound, on {} nodes), {} pod watches, {} lists",
                c.bindings.observations,
                c.bindings.pods,
                c.bindings.bound,
                c.bindings.nodes,
                c.pod_watch.segments,
                c.pod_watch.lists
            );
            let o = &c.over_replicas;
            let peaks: Vec<String> = o
                .peak
                .iter()
                .map(|(name, (n, want))| format!("{name} {n}/{want}"))
                .collect();
            let _ = writeln!(
                s,
                "  over-replicas: {} controllers ({} burst of {}), {} pod and {} controller events, {} versions checked in {:?}, unobserved {:?}, peak live/replicas: {}",
                o.controllers,
                c.burst_controllers,
                c.burst_replicas,
                o.pod_events,
                o.rc_events,
                o.versions,
                o.checked,
                o.unobserved,
                peaks.join(", ")
            );
        }
        for u in &self.unknown {
            let _ = writeln!(s, "  UNKNOWN {u}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(s, "  no violations");
        }
        for v in &self.violations {
            let _ = writeln!(s, "  VIOLATION [{}] {}", v.label(), v.message);
        }
        s
    }

    /// Writes the report to `path`, the histories to `*.history.json` and the timeline to
    /// `*.svg` beside it.
    pub fn write(&mut self, path: &Path, h: &Histories) -> std::io::Result<()> {
        let svg = path.with_extension("svg");
        std::fs::write(&svg, timeline_svg(h, self.duration_s))?;
        self.timeline = Some(svg);
        std::fs::write(path.with_extension("history.json"), serde_json::to_vec(h)?)?;
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
    }
}

/// Fills every fault's failover time: from its start to the completion of the first
/// acknowledged write invoked at or after it.
pub fn fill_failover(h: &mut Histories) {
    let mut writes: Vec<(u64, u64)> = h
        .registers
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && o.kind != RegKind::Read)
        .map(|o| (o.invoke_us, o.complete_us))
        .chain(
            h.appends
                .iter()
                .filter(|o| o.outcome == Outcome::Ok)
                .map(|o| (o.invoke_us, o.complete_us)),
        )
        .collect();
    writes.sort();
    for f in &mut h.faults {
        let from = writes.partition_point(|w| w.0 < f.start_us);
        f.failover_ms = writes[from..]
            .iter()
            .map(|w| w.1)
            .min()
            .map(|done| done.saturating_sub(f.start_us) as f64 / 1e3);
    }
}

/// Share of the whole seconds of `span_s` in which some acknowledged write completed.
fn write_availability(h: &Histories, span_s: f64) -> f64 {
    let seconds = span_s.floor() as usize;
    if seconds == 0 {
        return 0.0;
    }
    let mut up = vec![false; seconds];
    let done = h
        .registers
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && o.kind != RegKind::Read)
        .map(|o| o.complete_us)
        .chain(
            h.appends
                .iter()
                .filter(|o| o.outcome == Outcome::Ok)
                .map(|o| o.complete_us),
        );
    for t in done {
        if let Some(slot) = up.get_mut((t / 1_000_000) as usize) {
            *slot = true;
        }
    }
    up.iter().filter(|u| **u).count() as f64 / seconds as f64
}

/// `(invoke_us, latency_us, outcome)` of every operation.
fn latencies(h: &Histories) -> impl Iterator<Item = (u64, u64, Outcome)> + '_ {
    h.registers
        .iter()
        .map(|o| (o.invoke_us, o.latency_us(), o.outcome))
        .chain(h.appends.iter().map(|o| {
            (
                o.invoke_us,
                o.complete_us.saturating_sub(o.invoke_us),
                o.outcome,
            )
        }))
}

/// The known-bad history the checker must reject (`keelson-chaos --self-check`): a stale read
/// after an indeterminate write that a read proved applied, a lost acknowledged create, two
/// leaders in one term, a pod bound to two nodes, and a controller with a pod too many (at
/// the end, and at a version during the campaign).
pub fn self_check() -> Report {
    let op = |kind, value: Option<&str>, rv, t: (u64, u64), outcome| RegisterOp {
        client: 0,
        key: "chaos/r/0".into(),
        kind,
        value: value.map(String::from),
        expected_rv: None,
        rv,
        invoke_us: t.0,
        complete_us: t.1,
        outcome,
        code: None,
    };
    let h = Histories {
        registers: vec![
            op(RegKind::Write, Some("a"), Some(5), (0, 10), Outcome::Ok),
            op(RegKind::Write, Some("b"), None, (20, 30), Outcome::Info),
            op(RegKind::Read, Some("b"), Some(7), (40, 50), Outcome::Ok),
            op(RegKind::Read, Some("a"), Some(5), (60, 70), Outcome::Ok),
        ],
        appends: vec![AppendOp {
            client: 0,
            key: "chaos/a/0-000000".into(),
            invoke_us: 0,
            complete_us: 5,
            outcome: Outcome::Ok,
            code: None,
        }],
        leaders: [1, 2]
            .map(|id| LeaderSample {
                t_us: 0,
                id,
                term: 4,
                state: "Leader".into(),
                leader: Some(id),
            })
            .to_vec(),
        ..Histories::default()
    };
    let mut r = Report::default();
    for k in checker::linear::check(&h.registers, 10_000) {
        if let checker::linear::Verdict::NotLinearizable { culprit } = k.verdict {
            r.violations.push(Violation::new(
                "linearizability",
                format!("{}: {culprit}", k.key),
            ));
        }
    }
    r.violations
        .extend(checker::appends::check(&h.appends, &Default::default()).0);
    r.violations.extend(checker::leaders::check(&h.leaders));
    let fin = FinalState {
        controller: Some(bad_controller()),
        ..FinalState::default()
    };
    for inv in [
        &checker::controller::ReplicaCount as &dyn Invariant,
        &checker::controller::BoundOnce,
        &checker::over_replicas::NeverOverReplicas,
    ] {
        r.violations.extend(inv.check(&fin));
    }
    r.summarize(&h);
    r
}

/// A controller at 2 replicas with 3 live pods (since version 12), one of which was seen on
/// two nodes.
fn bad_controller() -> ControllerFinal {
    let pod = |name: &str, node: &str| {
        serde_json::json!({"metadata": {"name": name, "namespace": "default", "uid": name,
            "labels": {"name": "mysite"},
            "ownerReferences": [{"kind": "ReplicationController", "uid": "rc", "controller": true}]},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}})
    };
    let seen = |uid: &str, node: &str, rv: u64| BindingObs {
        uid: uid.into(),
        pod: format!("default/{uid}"),
        node: node.into(),
        rv,
        phase: "Running".into(),
        t_us: rv,
        source: BindingSource::Watch,
    };
    ControllerFinal {
        namespace: "default".into(),
        name: "mysiteController".into(),
        rc: Some(serde_json::json!({
            "metadata": {"name": "mysiteController", "namespace": "default", "uid": "rc"},
            "spec": {"replicas": 2, "selector": {"name": "mysite"}},
            "status": {"replicas": 2}})),
        pods: vec![pod("a", "n1"), pod("b", "n2"), pod("c", "n2")],
        acceptable: [2].into(),
        bindings: vec![
            seen("a", "n1", 10),
            seen("b", "n2", 11),
            seen("a", "n2", 12),
        ],
        pod_log: std::iter::once(Seen::Listed {
            rv: 1,
            items: vec![],
        })
        .chain(
            ["a", "b", "c"]
                .iter()
                .zip(10..)
                .map(|(uid, rv)| Seen::Event {
                    kind: "ADDED".into(),
                    item: PodSeen {
                        uid: uid.to_string(),
                        pod: format!("default/{uid}"),
                        rv,
                        owner: "rc".into(),
                        terminating: false,
                        phase: "Running".into(),
                    },
                }),
        )
        .chain([Seen::Reached { rv: 20 }])
        .collect(),
        rc_log: vec![
            Seen::Listed {
                rv: 1,
                items: vec![],
            },
            Seen::Event {
                kind: "ADDED".into(),
                item: RcSeen {
                    uid: "rc".into(),
                    name: "default/mysiteController".into(),
                    rv: 2,
                    replicas: 2,
                },
            },
            Seen::Reached { rv: 20 },
        ],
        converged_after_s: None,
        bound_s: 30.0,
    }
}

const W: f64 = 1200.0;
const LEFT: f64 = 110.0;

/// The timeline: fault bands, the leader of every master over time, and operation latencies
/// (log scale; green ok, orange fail, red indeterminate).
pub fn timeline_svg(h: &Histories, duration_s: f64) -> String {
    let end_us = latencies(h)
        .map(|l| l.0 + l.1)
        .chain(h.faults.iter().map(|f| f.end_us))
        .max()
        .unwrap_or(1)
        .max((duration_s * 1e6) as u64)
        .max(1);
    let x = |t: u64| LEFT + (W - LEFT - 10.0) * t as f64 / end_us as f64;
    let masters: Vec<u64> = {
        let mut v: Vec<u64> = h.leaders.iter().map(|s| s.id).collect();
        v.sort();
        v.dedup();
        v
    };
    let lat_top = 60.0 + 22.0 * masters.len() as f64 + 20.0;
    let height = lat_top + 230.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="16" font-size="13">keelson-chaos timeline ({:.0} s): faults, leaders, operation latencies</text>
"#,
        end_us as f64 / 1e6
    );
    svg_faults(&mut s, h, &x);
    svg_scales(&mut s, h, &x);
    svg_leaders(&mut s, h, &masters, &x);
    svg_latencies(&mut s, h, lat_top, &x);
    for sec in (0..=(end_us / 1_000_000)).step_by(((end_us / 10_000_000).max(1)) as usize) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">{sec}s</text>"##,
            x(sec * 1_000_000),
            height - 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn svg_faults(s: &mut String, h: &Histories, x: &impl Fn(u64) -> f64) {
    let _ = writeln!(s, r#"<text x="10" y="44">faults</text>"#);
    for (i, f) in h.faults.iter().enumerate() {
        let (x0, x1) = (x(f.start_us), x(f.end_us.max(f.start_us + 50_000)));
        let hue = (f.kind as usize * 40) % 360;
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="30" width="{:.1}" height="20" fill="hsl({hue},70%,60%)" opacity="0.8"><title>{} on {:?} at {:.1}s, failover {:?} ms</title></rect><text x="{x0:.1}" y="{}" font-size="9">{}</text>"#,
            (x1 - x0).max(1.0),
            f.kind.name(),
            f.targets,
            f.start_us as f64 / 1e6,
            f.failover_ms.map(|m| m.round()),
            if i % 2 == 0 { 27 } else { 60 },
            f.kind.name()
        );
    }
}

/// Scales of the controller as ticks under the fault bands (green ok, orange fail, red
/// indeterminate), the new replica count on hover.
fn svg_scales(s: &mut String, h: &Histories, x: &impl Fn(u64) -> f64) {
    for o in &h.scales {
        let color = match o.outcome {
            Outcome::Ok => "#4e9a06",
            Outcome::Fail => "#f57900",
            Outcome::Info => "#cc0000",
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="52" width="2" height="8" fill="{color}"><title>scale to {} at {:.1}s ({:?})</title></rect>"#,
            x(o.invoke_us),
            o.replicas,
            o.invoke_us as f64 / 1e6,
            o.outcome
        );
    }
}

fn svg_leaders(s: &mut String, h: &Histories, masters: &[u64], x: &impl Fn(u64) -> f64) {
    for (row, id) in masters.iter().enumerate() {
        let y = 70.0 + 22.0 * row as f64;
        let _ = writeln!(s, r#"<text x="10" y="{:.1}">master {id}</text>"#, y + 12.0);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{W}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            y + 8.0,
            y + 8.0
        );
        let mut samples: Vec<&LeaderSample> = h.leaders.iter().filter(|l| l.id == *id).collect();
        samples.sort_by_key(|l| l.t_us);
        for w in samples.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.state != "Leader" || b.t_us - a.t_us > 1_000_000 {
                continue;
            }
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="16" fill="#3465a4"><title>leader, term {}</title></rect>"##,
                x(a.t_us),
                (x(b.t_us) - x(a.t_us)).max(0.5),
                a.term
            );
        }
    }
}

fn svg_latencies(s: &mut String, h: &Histories, top: f64, x: &impl Fn(u64) -> f64) {
    let height = 200.0;
    // log10(latency ms) from 0.1 ms to 10 s
    let y = |us: u64| {
        let l = ((us.max(100) as f64) / 1e3).log10().clamp(-1.0, 4.0);
        top + height - (l + 1.0) / 5.0 * height
    };
    let _ = writeln!(s, r#"<text x="10" y="{:.1}">latency</text>"#, top + 12.0);
    for (ms, label) in [
        (1u64, "1 ms"),
        (10, "10 ms"),
        (100, "100 ms"),
        (1000, "1 s"),
        (10000, "10 s"),
    ] {
        let yy = y(ms * 1000);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{W}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="60" y="{:.1}" fill="#555">{label}</text>"##,
            yy + 4.0
        );
    }
    let all: Vec<(u64, u64, Outcome)> = latencies(h).collect();
    let step = (all.len() / 20_000).max(1);
    for (i, (t, l, o)) in all.iter().enumerate() {
        if i % step != 0 && *o == Outcome::Ok {
            continue;
        }
        let color = match o {
            Outcome::Ok => "#4e9a06",
            Outcome::Fail => "#f57900",
            Outcome::Info => "#cc0000",
        };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.3" fill="{color}"/>"#,
            x(*t),
            y(*l)
        );
    }
}
