//! `keelson ctl`: the command line for people, shaped like kubectl.
//!
//! Object commands (`get`, `create`, `apply`, `delete`, `scale`, `describe`, `logs`) talk to
//! core/v1 on any master; `masters` and `kv` manage the quorum and the store's key/value
//! surface, `cluster health` checks it, `snapshot save` backs it up; `token` the bearer tokens
//! kept in the store. The cluster comes from a kubeconfig (`--kubeconfig`, `KUBECONFIG`, or the one
//! `keelson up` writes in its data directory), else from `DATA_DIR/cluster.json` and
//! `tokens.csv`. Failures print as kubectl prints them (`Error from server (NotFound): pods "x"
//! not found`) and exit with status 1.
//!
//! Modules: [`client`] (configuration, HTTP, errors), [`manifest`] (resource names, `-f`
//! files), [`table`] (table output), [`objects`] (the object commands), [`describe`],
//! [`token`], [`status`] (masters status, cluster health), [`snapshot`] (backups).

mod client;
mod describe;
mod manifest;
mod objects;
mod snapshot;
mod status;
pub mod table;
mod token;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use client::{Client, ServerError};

/// Flags of `keelson ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// A master's API URL; overrides the kubeconfig's server.
    #[arg(long, env = "KEELSON_SERVER", global = true)]
    pub server: Option<String>,
    /// The data directory of `keelson up` (its kubeconfig, cluster.json and tokens.csv).
    #[arg(long, default_value = ".keelson", global = true)]
    pub data_dir: PathBuf,
    /// Bearer token; overrides the kubeconfig's.
    #[arg(long, env = "KEELSON_TOKEN", global = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for an `https://` server; overrides the kubeconfig's.
    #[arg(long, global = true)]
    pub certificate_authority: Option<PathBuf>,
    /// Kubeconfig file; default: $KUBECONFIG, else DATA_DIR/kubeconfig.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace; default: the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// List objects, or show some by name: `get pods`, `get rc web -o yaml`, `get po -w`.
    Get(objects::GetArgs),
    /// Create the objects of files (JSON or YAML, `---` between documents; `-` is stdin).
    Create(objects::FileArgs),
    /// Create the objects of files, or update those that exist with their fields.
    Apply(objects::FileArgs),
    /// Delete objects by name, by label selector, or those of files.
    Delete(objects::DeleteArgs),
    /// Set a replication controller's replicas through its scale subresource.
    Scale(objects::ScaleArgs),
    /// Show an object's main fields and its events.
    Describe(describe::DescribeArgs),
    /// Print a container's log.
    Logs(objects::LogsArgs),
    /// The master quorum: list, add or remove masters.
    Masters {
        #[command(subcommand)]
        command: MastersCommand,
    },
    /// Backups: `snapshot save FILE` (restore one with `keelson snapshot restore`).
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Alarms (etcd's): list them, disarm the NOSPACE alarm.
    Alarm {
        #[command(subcommand)]
        command: AlarmCommand,
    },
    /// The cluster as a whole: its health.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Bearer tokens kept in the replicated store: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// The store's key/value surface.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum MastersCommand {
    /// Members, their roles and the leader.
    List,
    /// Add a master (started with `keelson master --join`): learner first, voter once caught up.
    Add {
        #[arg(long)]
        id: u64,
        /// Its Raft address, HOST:PORT.
        #[arg(long)]
        raft: String,
        /// Its API address, HOST:PORT.
        #[arg(long, default_value = "")]
        api: String,
    },
    /// Remove a master from the quorum.
    Remove { id: u64 },
    /// Every master asked about itself: role, term, log and applied index, lag, database size,
    /// snapshot, version, uptime and health, one row each (`etcdctl endpoint status`).
    Status {
        /// Output format: table (default) or json.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// The alarms raised (NOSPACE: the space quota was passed).
    List,
    /// Clear the NOSPACE alarm, once space was freed or the quota raised (a master still over
    /// its quota raises it again).
    Disarm,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Whether every master serves under one leader. Exit status: 0 healthy, 2 degraded (a
    /// quorum serves, some master does not), 1 unavailable.
    Health,
}

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    Delete {
        key: String,
    },
}

/// What object commands share: the client and the namespace to use.
pub struct Ctx {
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
    /// Whether `-n` was given (an object's own namespace must then agree with it).
    pub explicit_namespace: bool,
}

/// An error that has already been printed: the command only exits with status 1.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported")
    }
}

impl std::error::Error for Reported {}

/// Prints an error as kubectl does: the server's `Error from server (Reason): message`, or
/// `error: ...`.
pub fn report(e: &anyhow::Error) {
    if e.downcast_ref::<Reported>().is_some() {
        return;
    }
    match e.downcast_ref::<ServerError>() {
        Some(se) => eprintln!("{se}"),
        None => eprintln!("error: {e:#}"),
    }
}

/// Runs a `ctl` command. Failures are printed here, kubectl-style, and end the process with
/// status 1.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let Err(e) = run_command(args).await {
        report(&e);
        std::process::exit(1);
    }
    Ok(())
}

async fn run_command(args: CtlArgs) -> anyhow::Result<()> {
    let kubeconfig_env = std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty());
    let resolved = client::resolve(
        &client::Target {
            server: args.server.as_deref(),
            token: args.token.as_deref(),
            ca_file: args.certificate_authority.as_deref(),
            kubeconfig: args.kubeconfig.as_deref(),
            data_dir: &args.data_dir,
        },
        kubeconfig_env.as_deref(),
    )?;
    let namespace = resolved.namespace.clone();
    let ctx = Ctx {
        client: Client::new(resolved)?,
        explicit_namespace: args.namespace.is_some(),
        namespace: args
            .namespace
            .or(namespace)
            .unwrap_or_else(|| "default".into()),
    };
    match args.command {
        CtlCommand::Get(a) => objects::get(&ctx, a).await,
        CtlCommand::Create(a) => objects::create(&ctx, a).await,
        CtlCommand::Apply(a) => objects::apply(&ctx, a).await,
        CtlCommand::Delete(a) => objects::delete(&ctx, a).await,
        CtlCommand::Scale(a) => objects::scale(&ctx, a).await,
        CtlCommand::Describe(a) => describe::describe(&ctx, a).await,
        CtlCommand::Logs(a) => objects::logs(&ctx, a).await,
        CtlCommand::Masters { command } => masters(&ctx.client, command).await,
        CtlCommand::Kv { command } => kv(&ctx.client, command).await,
        CtlCommand::Snapshot { command } => snapshot::run(&ctx.client, command).await,
        CtlCommand::Alarm { command } => alarm(&ctx.client, command).await,
        CtlCommand::Cluster {
            command: ClusterCommand::Health,
        } => status::cluster_health(&ctx.client).await,
        CtlCommand::Token { command } => token::run(&ctx, command).await,
    }
}

async fn masters(c: &Client, command: MastersCommand) -> anyhow::Result<()> {
    match command {
        MastersCommand::List => print_members(&c.get("/cluster").await?),
        MastersCommand::Add { id, raft, api } => {
            let body = serde_json::json!({"id": id, "raft": raft, "api": api});
            let status = c.send_json(Method::POST, "/cluster/masters", &body).await?;
            println!("master {id} added");
            print_members(&status);
        }
        MastersCommand::Remove { id } => {
            let path = format!("/cluster/masters/{id}");
            let status = c.json(Method::DELETE, &path, None).await?;
            println!("master {id} removed");
            print_members(&status);
        }
        MastersCommand::Status { output } => status::masters_status(c, output.as_deref()).await?,
    }
    Ok(())
}

async fn alarm(c: &Client, command: AlarmCommand) -> anyhow::Result<()> {
    match command {
        AlarmCommand::List => {
            let v = c.get("/cluster/alarms").await?;
            for a in v["alarms"].as_array().into_iter().flatten() {
                println!(
                    "alarm:{} master:{} db_size_bytes:{} quota_bytes:{}",
                    a["name"].as_str().unwrap_or("?"),
                    a["master"],
                    a["db_size_bytes"],
                    a["quota_bytes"]
                );
            }
        }
        AlarmCommand::Disarm => {
            let v = c
                .json(Method::DELETE, "/cluster/alarms/nospace", None)
                .await?;
            match v["disarmed"].as_bool() {
                Some(true) => println!("alarm:NOSPACE disarmed"),
                _ => println!("no alarm was raised"),
            }
        }
    }
    Ok(())
}

async fn kv(c: &Client, command: KvCommand) -> anyhow::Result<()> {
    use client::enc;
    let key_path = |k: &str| {
        format!(
            "/kv/{}",
            k.split('/').map(enc).collect::<Vec<_>>().join("/")
        )
    };
    let v = match command {
        KvCommand::Get { key } => c.get(&key_path(&key)).await?,
        KvCommand::Put { key, value } => {
            let path = format!("{}?upsert=true", key_path(&key));
            let body = Some(("application/octet-stream", value.into_bytes()));
            c.json(Method::PUT, &path, body).await?
        }
        KvCommand::List { prefix } => c.get(&format!("/kv?prefix={}", enc(&prefix))).await?,
        KvCommand::Delete { key } => c.json(Method::DELETE, &key_path(&key), None).await?,
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn print_members(status: &Value) {
    let leader = status["leader"].as_u64();
    let voters: Vec<u64> = status["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    println!("{:<6} {:<8} {:<24} {:<28}", "ID", "ROLE", "RAFT", "API");
    if let Some(members) = status["members"].as_object() {
        for (id, node) in members {
            let n: u64 = id.parse().unwrap_or(0);
            let role = if leader == Some(n) {
                "leader"
            } else if voters.contains(&n) {
                "voter"
            } else {
                "learner"
            };
            println!(
                "{:<6} {:<8} {:<24} {:<28}",
                id,
                role,
                node["raft"].as_str().unwrap_or(""),
                node["api"].as_str().unwrap_or("")
            );
        }
    }
    println!("term {}", status["term"]);
}
