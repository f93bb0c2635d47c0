//! `keelson ctl`: the command line for people.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::up::ClusterFile;

/// Flags of `keelson ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// A master's API URL; default: the masters in DATA_DIR/cluster.json.
    #[arg(long, env = "KEELSON_SERVER")]
    pub server: Option<String>,
    /// The data directory of `keelson up`.
    #[arg(long, default_value = ".keelson")]
    pub data_dir: PathBuf,
    /// Bearer token; default: the one in DATA_DIR/tokens.csv.
    #[arg(long, env = "KEELSON_TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The master quorum: list, add or remove masters.
    Masters {
        #[command(subcommand)]
        command: MastersCommand,
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

/// Runs a `ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let servers = match &args.server {
        Some(s) => vec![s.clone()],
        None => match ClusterFile::load(&args.data_dir)? {
            Some(f) => f.masters.iter().map(|m| m.api.clone()).collect(),
            None => bail!(
                "no --server given and no {} found: is `keelson up` running?",
                args.data_dir.join("cluster.json").display()
            ),
        },
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?;
    let token = args.token.clone().or_else(|| {
        let text = std::fs::read_to_string(args.data_dir.join("tokens.csv")).ok()?;
        text.lines()
            .filter_map(|l| l.split(',').next())
            .map(str::trim)
            .find(|t| !t.is_empty())
            .map(str::to_string)
    });
    let ctl = Ctl {
        client,
        servers,
        token,
    };
    match args.command {
        CtlCommand::Masters { command } => match command {
            MastersCommand::List => {
                let status = ctl.send(reqwest::Method::GET, "/cluster", None).await?;
                print_members(&status);
            }
            MastersCommand::Add { id, raft, api } => {
                let body = serde_json::json!({"id": id, "raft": raft, "api": api});
                let status = ctl
                    .send(
                        reqwest::Method::POST,
                        "/cluster/masters",
                        Some(body.to_string()),
                    )
                    .await?;
                println!("master {id} added");
                print_members(&status);
            }
            MastersCommand::Remove { id } => {
                let status = ctl
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/cluster/masters/{id}"),
                        None,
                    )
                    .await?;
                println!("master {id} removed");
                print_members(&status);
            }
        },
        CtlCommand::Kv { command } => {
            let v = match command {
                KvCommand::Get { key } => {
                    ctl.send(reqwest::Method::GET, &format!("/kv/{key}"), None)
                        .await?
                }
                KvCommand::Put { key, value } => {
                    ctl.send(
                        reqwest::Method::PUT,
                        &format!("/kv/{key}?upsert=true"),
                        Some(value),
                    )
                    .await?
                }
                KvCommand::List { prefix } => {
                    ctl.send(reqwest::Method::GET, &format!("/kv?prefix={prefix}"), None)
                        .await?
                }
                KvCommand::Delete { key } => {
                    ctl.send(reqwest::Method::DELETE, &format!("/kv/{key}"), None)
                        .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

struct Ctl {
    client: reqwest::Client,
    servers: Vec<String>,
    token: Option<String>,
}

impl Ctl {
    /// Sends to the first master that answers; a `Status` failure is reported as an error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let mut last_err = None;
        for server in &self.servers {
            let mut req = self
                .client
                .request(method.clone(), format!("{server}{path}"));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    let code = resp.status();
                    let v: Value = resp
                        .json()
                        .await
                        .with_context(|| format!("answer of {server}"))?;
                    if !code.is_success() {
                        bail!(
                            "{} ({}): {}",
                            v["reason"].as_str().unwrap_or("Error"),
                            code.as_u16(),
                            v["message"].as_str().unwrap_or("")
                        );
                    }
                    return Ok(v);
                }
                Err(e) => last_err = Some(e),
            }
        }
        bail!(
            "no master answered: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )
    }
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
