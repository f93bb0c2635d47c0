//! `keelson snapshot restore` and `keelson snapshot status`: a backup file (`keelson ctl
//! snapshot save`) read offline, as `etcdutl snapshot restore` and `etcdutl snapshot status`.
//!
//! Restore prepares one master's data directory of a new cluster holding the backup's objects;
//! run it once per master, with the same `--peers` (and `--cluster-id`, if given), then start
//! each master with those `--peers` and that cluster id, as a new cluster is started.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use keelson_raft::backup;

/// `keelson snapshot`'s commands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Make a data directory of a new cluster from a backup: same objects, a new cluster id.
    Restore(RestoreArgs),
    /// Check a backup (its checksum and format) and print what it holds.
    Status {
        file: PathBuf,
        /// Output format: table (default) or json.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup, from `keelson ctl snapshot save`.
    pub file: PathBuf,
    /// The master's new data directory (absent or empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Which of `--peers` this master is.
    #[arg(long)]
    pub id: u64,
    /// The new cluster's masters, `ID=RAFT_ADDR/API_ADDR,...`, as `keelson master --peers`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub peers: Vec<String>,
    /// The new cluster's id. Default: derived from the backup and `--peers`, so that every
    /// master restored with the same two agrees, and it differs from the old cluster's.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The scheme of the masters' API URLs in the membership: https (their `--tls-cert-file`)
    /// or http.
    #[arg(long, default_value = "https", value_parser = ["https", "http"])]
    pub api_scheme: String,
}

pub async fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Status { file, output } => status(&file, output.as_deref()),
        SnapshotCommand::Restore(args) => restore(args).await,
    }
}

fn status(file: &std::path::Path, output: Option<&str>) -> anyhow::Result<()> {
    let (header, _, sum) = backup::read(file)?;
    match output {
        Some("json") => {
            let mut v = serde_json::to_value(&header)?;
            v["sha256"] = sum.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        None | Some("table") => {
            let taken = jiff::Timestamp::from_second(header.taken_at as i64)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let rows = [
                [
                    "CLUSTER",
                    "INDEX",
                    "TERM",
                    "RECORDS",
                    "DATA BYTES",
                    "TAKEN BY",
                    "TAKEN AT",
                    "SHA-256",
                ]
                .map(String::from),
                [
                    header.cluster_id,
                    header.index.to_string(),
                    header.term.to_string(),
                    header.records.to_string(),
                    header.data_bytes.to_string(),
                    format!("master {}", header.taken_by),
                    taken,
                    sum,
                ],
            ];
            print!(
                "{}",
                crate::ctl::table::Table::default().render(&rows.map(Vec::from))
            );
        }
        Some(other) => anyhow::bail!("unknown output format {other:?}: expected table or json"),
    }
    Ok(())
}

/// The default id of the cluster restored from `header` with `peers`.
fn derived_cluster_id(header: &backup::BackupHeader, peers: &[String]) -> String {
    let mut input = format!("{}/{}", header.cluster_id, header.index);
    for p in peers {
        input.push('/');
        input.push_str(p);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("restored-{hex}")
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let members = crate::master::parse_peers(&args.peers, &args.api_scheme)?;
    let (header, _, _) = backup::read(&args.file)?;
    let cluster_id = args
        .cluster_id
        .clone()
        .unwrap_or_else(|| derived_cluster_id(&header, &args.peers));
    backup::restore(&args.file, &args.data_dir, args.id, &cluster_id, members)
        .await
        .with_context(|| format!("restore {}", args.file.display()))?;
    println!(
        "restored {} records of cluster {} at index {} into {} as master {} of cluster {cluster_id}",
        header.records,
        header.cluster_id,
        header.index,
        args.data_dir.display(),
        args.id
    );
    println!(
        "start it: keelson master --id {} --data-dir {} --peers {} --cluster-id {cluster_id} …",
        args.id,
        args.data_dir.display(),
        args.peers.join(",")
    );
    Ok(())
}
