//! `keelson down [--data-dir D] [--purge]`: stops what `keelson up` started in a data directory
//! and removes the cluster's containers and Docker networks; `--purge` also removes the data directory.
//!
//! The processes come from `DATA_DIR/cluster.json`: `keelson up` itself (`up_pid`), which stops
//! its masters and agents on SIGTERM, then any master or agent still running (one whose `up`
//! was killed). A pid is signalled only if it is still a keelson process of this data directory
//! (its command line's `--data-dir`, resolved in its working directory, lies in it), so a pid
//! reused by another program is left alone. Containers are those labelled with the cluster's id
//! (`io.keelson.cluster`), on whatever node they ran.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::process::ClusterFile;

/// Flags of `keelson down`.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// The data directory of the `keelson up` to stop.
    #[arg(long, default_value = ".keelson")]
    pub data_dir: PathBuf,
    /// Also remove the data directory: every master's data, the logs, the certificates.
    #[arg(long)]
    pub purge: bool,
}

/// How long a process may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(20);

pub async fn run(args: DownArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir.canonicalize() {
        Ok(d) => d,
        Err(e) => bail!("no cluster in {}: {e}", args.data_dir.display()),
    };
    let Some(file) = ClusterFile::load(&data_dir)? else {
        bail!(
            "no cluster in {}: it holds no cluster.json",
            data_dir.display()
        );
    };
    let mut processes: Vec<(String, u32)> = Vec::new();
    if let Some(pid) = file.up_pid {
        processes.push(("keelson up".into(), pid));
    }
    processes.extend(
        file.masters
            .iter()
            .map(|m| (format!("master {}", m.id), m.pid)),
    );
    processes.extend(
        file.agents
            .iter()
            .map(|a| (format!("agent {}", a.name), a.pid)),
    );
    // `keelson up` first: it stops its children itself, in order; then whatever is left.
    for (name, pid) in processes {
        if pid != 0 && belongs(pid, &data_dir) {
            stop(&name, pid).await;
        }
    }
    let (removed, networks) = remove_containers(&file.cluster_id).await?;
    println!(
        "removed {removed} container(s) of cluster {}",
        file.cluster_id
    );
    if networks > 0 {
        println!(
            "removed {networks} Docker network(s) of cluster {}",
            file.cluster_id
        );
    }
    if args.purge {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("remove {}", data_dir.display()))?;
        println!("removed {}", data_dir.display());
    }
    Ok(())
}

/// Whether `pid` runs keelson with a `--data-dir` in `data_dir` (`up`'s own, or a master's or
/// agent's below it).
fn belongs(pid: u32, data_dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let keelson = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("keelson"));
    if !keelson || zombie(pid) {
        return false;
    }
    let dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--data-dir=").map(String::from))
        })
        .unwrap_or_else(|| ".keelson".into());
    let Ok(cwd) = std::fs::read_link(proc.join("cwd")) else {
        return false;
    };
    cwd.join(dir)
        .canonicalize()
        .is_ok_and(|d| d.starts_with(data_dir))
}

/// A process that has exited but was not reaped yet.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 && !zombie(pid) }
}

/// SIGTERM, then SIGKILL if `pid` is still running after [`GRACE`].
async fn stop(name: &str, pid: u32) {
    // SAFETY: `pid` was checked to be a keelson process of this data directory.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if alive(pid) {
        eprintln!("{name} (pid {pid}) did not stop in {GRACE:?}: killing it");
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    println!("stopped {name} (pid {pid})");
}

/// Removes every container labelled with `cluster`, running or not, then its networks; the
/// numbers removed. Without a Docker engine there is nothing to remove (a `--runtime hollow`
/// cluster): said, not failed.
async fn remove_containers(cluster: &str) -> anyhow::Result<(usize, usize)> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    use std::collections::HashMap;
    let docker = match crate::agent::docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("note: no containers checked: {e:#}");
            return Ok((0, 0));
        }
    };
    let label = format!("{}={cluster}", crate::agent::docker::LABEL_CLUSTER);
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let listed = docker
        .list_containers(Some(options))
        .await
        .context("list the cluster's containers")?;
    let mut removed = 0;
    for id in listed.into_iter().filter_map(|c| c.id) {
        crate::agent::docker::remove_container(&docker, &id)
            .await
            .with_context(|| format!("remove container {id}"))?;
        removed += 1;
    }
    let networks = crate::agent::networks::remove(&docker, cluster).await?;
    Ok((removed, networks))
}
