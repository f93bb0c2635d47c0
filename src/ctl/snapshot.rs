//! `keelson ctl snapshot save FILE`: a backup of the cluster taken by its leader
//! (`GET /cluster/snapshot`), streamed into `FILE.part` (0600), synced, checked (layout,
//! SHA-256, data format), then renamed to `FILE`: a file by that name is always whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Subcommand;
use futures::StreamExt;
use serde_json::Value;

use super::client::Client;

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent backup of every object, taken by the leader, to FILE (0600).
    Save { file: PathBuf },
}

pub async fn run(c: &Client, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => save(c, &file).await,
    }
}

/// The leader's API URL, if the answering master knows it.
async fn leader_api(c: &Client) -> anyhow::Result<Option<String>> {
    let cluster: Value = c.get("/cluster").await?;
    Ok(cluster["leader"]
        .as_u64()
        .and_then(|l| cluster["members"][l.to_string()]["api"].as_str())
        .filter(|api| !api.is_empty())
        .map(String::from))
}

async fn save(c: &Client, file: &Path) -> anyhow::Result<()> {
    let leader = leader_api(c).await?;
    // From the leader when it is known (any master answers, after a read barrier, the same).
    let resp = match &leader {
        Some(api) => c.stream_from(api, "/cluster/snapshot").await?,
        None => {
            c.ok(reqwest::Method::GET, "/cluster/snapshot", None, true)
                .await?
        }
    };
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .with_context(|| format!("create {}", part.display()))?
    };
    // Received, synced and checked, or removed: a partial file is never left behind.
    let received = async {
        let mut stream = resp.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| anyhow!("the backup stopped after {received} bytes: {e}"))?;
            out.write_all(&chunk)
                .with_context(|| format!("write {}", part.display()))?;
            received += chunk.len() as u64;
        }
        out.sync_all()?;
        anyhow::Ok(received)
    }
    .await;
    let checked = received.and_then(|n| Ok((n, keelson_raft::backup::read(&part)?)));
    let (received, (header, _, sum)) = match checked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, file).with_context(|| format!("rename to {}", file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    println!(
        "Snapshot saved at {}: cluster {}, index {}, term {}, {} records, {} bytes, sha256 {sum}",
        file.display(),
        header.cluster_id,
        header.index,
        header.term,
        header.records,
        received
    );
    Ok(())
}
