//! `keelson ctl snapshot save FILE`: a backup of the cluster taken by its leader
//! (`GET /cluster/snapshot`), streamed into `FILE.part` (0600), synced, checked (layout,
//! SHA-256, data format), then renamed to `FILE`: a file by that name is always whole
//! ([`crate::files::PartFile`]).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
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
    let leader = cluster["leader"].as_u64();
    Ok(super::status::member_apis(&cluster)
        .into_iter()
        .find(|(id, api)| Some(*id) == leader && !api.is_empty())
        .map(|(_, api)| api))
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
    // Received, synced and checked, or removed: a partial file is never left behind.
    let mut out = crate::files::PartFile::create(file)?;
    let mut stream = resp.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow!("the backup stopped after {received} bytes: {e}"))?;
        out.write_all(&chunk)?;
        received += chunk.len() as u64;
    }
    let (header, _, sum) =
        out.commit(|part| -> anyhow::Result<_> { Ok(keelson_raft::backup::read(part)?) })?;
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
