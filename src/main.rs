//! `keelson`: a container orchestrator with a Raft-replicated control plane.
//!
//! Subcommands: `master` (one Raft member with its API server), `up` (a local cluster of
//! master processes), `ctl` (the command line for people).

mod agent;
mod api;
mod bench;
mod controllers;
mod ctl;
mod files;
mod master;
mod process;
mod registry;
mod up;

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
}

#[derive(Subcommand)]
enum Command {
    /// Run one master: a Raft member, its RocksDB store and the API server.
    Master(master::MasterArgs),
    /// Start a local cluster (3 or 5 masters as separate processes) and keep it running.
    Up(up::UpArgs),
    /// Run one node agent: heartbeats, pods, service proxy.
    Agent(agent::AgentArgs),
    /// Build the local images (`keelson/pause`, the seed's `user/mysite`) from a static busybox.
    Images(agent::images::ImagesArgs),
    /// Talk to a running cluster.
    Ctl(ctl::CtlArgs),
    /// Measure keelson side by side with etcd (see docs/performance.md).
    Bench(bench::BenchArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEELSON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Master(args) => master::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Images(args) => agent::images::run(args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("keelson: {e:#}");
        std::process::exit(1);
    }
}
