//! `keelson-chaos`: fault-injection campaigns against real master processes.
//!
//! ```text
//! keelson-chaos --masters 3 --duration 60s --seed 7 --report chaos.json \
//!     --faults kill-leader,kill-minority,kill-all,pause-leader,partition-leader --controllers
//! ```
//!
//! Prints a summary, writes the report (JSON), the histories (`*.history.json`) and a timeline
//! (`*.svg`); exits 1 when a property was violated, 2 when the campaign could not run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use keelson_chaos::campaign::{self, Config};
use keelson_chaos::faults::{self, FaultKind, Timing};
use keelson_chaos::report;

/// Flags of `keelson-chaos`.
#[derive(Parser, Debug)]
#[command(
    name = "keelson-chaos",
    about = "Fault-injection campaigns against keelson masters"
)]
struct Args {
    /// Number of masters (3 or 5).
    #[arg(long, default_value_t = 3)]
    masters: u64,
    /// How long faults are injected: `90s`, `5m`, `1500ms` (a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule (replay a campaign with the same seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the JSON report (the timeline goes beside it as .svg).
    #[arg(long, default_value = "chaos-report.json")]
    report: PathBuf,
    /// The keelson binary; default: `keelson` beside this binary.
    #[arg(long)]
    keelson: Option<PathBuf>,
    /// Comma-separated fault kinds, or `all`: kill-leader, kill-random, kill-minority, kill-all,
    /// pause-leader, partition-leader, partition-halves, partition-bridge, membership.
    #[arg(
        long,
        default_value = "kill-leader,kill-random,kill-minority,kill-all,pause-leader,partition-leader,partition-halves,partition-bridge,membership"
    )]
    faults: String,
    /// Extra flag for every master (repeat), e.g. `--master-arg=--unsafe-stale-reads`.
    #[arg(long = "master-arg", allow_hyphen_values = true)]
    master_args: Vec<String>,
    /// Shortest and longest fault, e.g. `1s-3s`.
    #[arg(long, default_value = "1s-3s")]
    hold: String,
    /// Shortest and longest quiet time between faults, e.g. `500ms-2s`.
    #[arg(long, default_value = "500ms-2s")]
    gap: String,
    /// Register clients.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// The controller workload: hollow agents run the seed's replication controller, which is
    /// scaled during the campaign; checks exact replica counts after the heal and that no pod
    /// was bound twice.
    #[arg(long)]
    controllers: bool,
    /// Hollow agents of the controller workload.
    #[arg(long, default_value_t = 3)]
    agents: u32,
    /// With --controllers: replication controllers created all at once at the start, besides
    /// the seed's (`chaos-burst-1..N`), checked never to hold more pods than their replicas.
    #[arg(long, default_value_t = 0)]
    burst_controllers: u32,
    /// Replicas of each burst controller.
    #[arg(long, default_value_t = 100)]
    burst_replicas: i64,
    /// Values the controller is scaled between, e.g. `1,2,3,4`.
    #[arg(long, default_value = "1,2,3,4", value_delimiter = ',')]
    scale_values: Vec<i64>,
    /// Keep the masters' data and logs here (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Harness self-test: register reads from the answering replica (`resourceVersion=0`),
    /// which are not linearizable; the campaign should report violations.
    #[arg(long)]
    local_reads: bool,
    /// Only check the checker: run it on a known-bad history (exits 1 if it is caught).
    #[arg(long)]
    self_check: bool,
    /// Less output on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// `90s`, `5m`, `1500ms`, `2h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `A-B` as two durations.
fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    Ok((parse_duration(a)?, parse_duration(b)?))
}

fn default_keelson() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("keelson")))
        .unwrap_or_else(|| PathBuf::from("keelson"))
}

fn config(a: &Args) -> Result<Config, String> {
    let mut cfg = Config::new(a.keelson.clone().unwrap_or_else(default_keelson), a.masters);
    cfg.duration = a.duration;
    cfg.seed = a.seed;
    cfg.faults = FaultKind::parse_list(&a.faults)?;
    cfg.master_args = a.master_args.clone();
    cfg.timing = Timing {
        hold: parse_range(&a.hold)?,
        gap: parse_range(&a.gap)?,
    };
    cfg.register_clients = a.clients;
    cfg.controllers = a.controllers;
    cfg.agents = a.agents.max(1);
    if a.burst_replicas < 0 {
        return Err("--burst-replicas cannot be negative".into());
    }
    cfg.burst_controllers = a.burst_controllers;
    cfg.burst_replicas = a.burst_replicas;
    if a.scale_values.len() < 2 || a.scale_values.iter().any(|v| *v < 0) {
        return Err("--scale-values needs at least two values, none negative".into());
    }
    cfg.scale_values = a.scale_values.clone();
    cfg.work_dir = a.work_dir.clone();
    cfg.verbose = !a.quiet;
    cfg.local_reads = a.local_reads;
    Ok(cfg)
}

async fn campaign(a: &Args) -> i32 {
    let cfg = match config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keelson-chaos: {e}");
            return 2;
        }
    };
    let (mut report, histories) = match campaign::run(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keelson-chaos: campaign could not run: {e}");
            return 2;
        }
    };
    if let Err(e) = report.write(&a.report, &histories) {
        eprintln!("keelson-chaos: writing {}: {e}", a.report.display());
    }
    print!("{}", report.summary());
    println!(
        "  report {} timeline {}",
        a.report.display(),
        report
            .timeline
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    report.exit_code()
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn main() {
    let args = Args::parse();
    if args.self_check {
        let r = report::self_check();
        print!("{}", r.summary());
        std::process::exit(r.exit_code());
    }
    // Remove our iptables chains even when a panic unwinds past the campaign.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Only a panic of the campaign itself (on the main thread) ends the run.
        if std::thread::current().name() == Some("main") {
            faults::cleanup_all();
        }
        hook(info)
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            code = campaign(&args) => code,
            // Dropping the campaign kills its masters and removes its chain.
            _ = interrupted() => {
                eprintln!("keelson-chaos: interrupted; masters stopped, iptables chain removed");
                130
            }
        }
    });
    faults::cleanup_all();
    drop(rt);
    std::process::exit(code);
}
