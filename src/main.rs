//! `keelson`: a container orchestrator with a Raft-replicated control plane.
//!
//! Subcommands: `master` (one Raft member with its API server), `up` (a local cluster of
//! master processes) and `down` (stop it), `ctl` (the command line for people). `bench` runs the keelson-bench
//! binary (bench/, a crate of its own) beside this one.

mod agent;
mod api;
mod controllers;
mod ctl;
mod down;
mod files;
mod informer;
mod master;
mod process;
mod registry;
mod snapshot;
mod up;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "A container orchestrator with a Raft-replicated control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: process::logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one master: a Raft member, its RocksDB store and the API server.
    Master(master::MasterArgs),
    /// Start a local cluster (3 or 5 masters as separate processes) and keep it running.
    Up(up::UpArgs),
    /// Stop what `keelson up` started in a data directory and remove the cluster's containers.
    Down(down::DownArgs),
    /// Run one node agent: heartbeats, pods, service proxy.
    Agent(agent::AgentArgs),
    /// Build the local images (`keelson/pause`, the seed's `user/mysite`) from a static busybox.
    Images(agent::images::ImagesArgs),
    /// Backups offline: restore one into a new cluster's data directory, or check one.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Talk to a running cluster.
    Ctl(ctl::CtlArgs),
    /// Measure keelson side by side with etcd (see docs/performance.md).
    ///
    /// Runs keelson-bench, from this binary's directory, with the arguments as given:
    /// `keelson bench --help` prints its flags.
    #[command(disable_help_flag = true)]
    Bench(BenchAlias),
}

/// `keelson bench`'s arguments: keelson-bench's, passed on verbatim.
#[derive(clap::Args)]
struct BenchAlias {
    /// keelson-bench's flags (`keelson bench --help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// `keelson bench ARGS`: replaces this process with `keelson-bench ARGS`, the `keelson-bench`
/// file next to this executable, with `KEELSON_BIN` set to this executable unless it is set
/// already (so the bench's masters are this keelson, as when the bench was part of it). Its
/// argv[0] is this one's followed by ` bench`, so its usage line and the command line its
/// report quotes read `keelson bench …` as typed. Returns only if that fails.
fn exec_bench(args: Vec<OsString>) -> anyhow::Error {
    use anyhow::Context as _;
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe().context("current_exe") {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let bench = exe.with_file_name("keelson-bench");
    if !bench.is_file() {
        return anyhow::anyhow!(
            "`keelson bench` runs keelson-bench, which is not next to keelson ({}): build it \
             with `cargo build --release` at the workspace root (or `-p keelson-bench`)",
            bench.display()
        );
    }
    let mut arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| exe.clone().into_os_string());
    arg0.push(" bench");
    let mut command = std::process::Command::new(&bench);
    command.arg0(arg0).args(args);
    if std::env::var_os("KEELSON_BIN").is_none() {
        command.env("KEELSON_BIN", &exe);
    }
    anyhow::Error::new(command.exec()).context(format!("exec {}", bench.display()))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = process::logging::init(&cli.log) {
        eprintln!("keelson: {e:#}");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Master(args) => master::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Down(args) => down::run(args).await,
            Command::Images(args) => agent::images::run(args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Snapshot { command } => snapshot::run(command).await,
            Command::Bench(alias) => Err(exec_bench(alias.args)),
        }
    });
    if let Err(e) = result {
        eprintln!("keelson: {e:#}");
        let code = e
            .downcast_ref::<process::Exit>()
            .map_or(1, |exit| exit.code);
        std::process::exit(code);
    }
}
