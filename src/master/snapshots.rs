//! Scheduled snapshots (`keelson master --snapshot-schedule 1h --snapshot-retention 24`), as
//! k3s takes etcd snapshots on every server: each master with the flag saves a backup of the
//! cluster ([`RaftNode::backup`], after a read barrier) into its `--snapshot-dir` on the schedule,
//! and keeps the newest `--snapshot-retention` of its own files there.
//!
//! A file is `keelson-snapshot-m<ID>-<UTC time>-<index>.db`, written through a `.part` file
//! (0600, synced, checked) as `keelson ctl snapshot save` writes one, and restored the same way
//! (`keelson snapshot restore`). A failed attempt (no quorum, a full disk) is logged and counted,
//! removes nothing, and the next one comes on the schedule.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keelson_raft::{NodeId, RaftNode};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;

/// What `--snapshot-schedule` and friends ask for.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub every: Duration,
    pub retention: usize,
    pub dir: PathBuf,
}

/// Parses `--snapshot-schedule`: a duration such as `1h`, `30m`, `90s` or `1h30m`.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration such as 1h, 30m or 90s: {e}"))?;
    let d = Duration::try_from(d).map_err(|_| format!("{text:?} is negative"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than a second"));
    }
    Ok(d)
}

struct Metrics {
    taken: IntCounterVec,
    last_success: IntGauge,
    kept: IntGauge,
}

impl Metrics {
    fn register(registry: &Registry) -> anyhow::Result<Self> {
        let taken = IntCounterVec::new(
            Opts::new(
                "keelson_scheduled_snapshots_total",
                "Scheduled snapshots attempted, by result (ok, failed).",
            ),
            &["result"],
        )?;
        let last_success = IntGauge::new(
            "keelson_scheduled_snapshot_last_success_timestamp_seconds",
            "When the last scheduled snapshot was saved (Unix seconds; 0: never).",
        )?;
        let kept = IntGauge::new(
            "keelson_scheduled_snapshots_kept",
            "Scheduled snapshot files of this master in its --snapshot-dir.",
        )?;
        registry.register(Box::new(taken.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(kept.clone()))?;
        for result in ["ok", "failed"] {
            taken.with_label_values(&[result]);
        }
        Ok(Metrics {
            taken,
            last_success,
            kept,
        })
    }
}

/// Starts taking snapshots on `schedule` until `stop` turns true.
pub fn start(
    node: Arc<RaftNode>,
    schedule: Schedule,
    registry: &Registry,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::files::private_dir(&schedule.dir)?;
    let metrics = Metrics::register(registry).context("register the snapshot metrics")?;
    // Parts left by a master that stopped while writing one.
    for path in files(&schedule.dir, node.id)?.1 {
        let _ = std::fs::remove_file(path);
    }
    metrics
        .kept
        .set(files(&schedule.dir, node.id)?.0.len() as i64);
    tracing::info!(every = ?schedule.every, retention = schedule.retention, dir = %schedule.dir.display(), "scheduled snapshots");
    Ok(tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match take(&node, &schedule).await {
                Ok((path, kept)) => {
                    metrics.taken.with_label_values(&["ok"]).inc();
                    metrics.last_success.set(unix_now() as i64);
                    metrics.kept.set(kept as i64);
                    tracing::info!(file = %path.display(), kept, "scheduled snapshot saved");
                }
                Err(e) => {
                    metrics.taken.with_label_values(&["failed"]).inc();
                    tracing::warn!("scheduled snapshot failed: {e:#}");
                }
            }
        }
    }))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Saves one snapshot and prunes to the retention; returns its path and how many are kept.
async fn take(node: &RaftNode, schedule: &Schedule) -> anyhow::Result<(PathBuf, usize)> {
    let (header, bytes) = node.backup().await?;
    let when = jiff::Timestamp::from_second(header.taken_at as i64)?.strftime("%Y%m%dT%H%M%SZ");
    let name = format!("{PREFIX}{}-{when}-{}.db", node.id, header.index);
    let path = schedule.dir.join(name);
    let (dir, id, retention) = (schedule.dir.clone(), node.id, schedule.retention);
    tokio::task::spawn_blocking(move || {
        let mut out = crate::files::PartFile::create(&path)?;
        out.write_all(&bytes)?;
        out.commit(|part| -> anyhow::Result<_> { Ok(keelson_raft::backup::read(part)?) })?;
        let kept = prune(&dir, id, retention)?;
        Ok((path, kept))
    })
    .await?
}

const PREFIX: &str = "keelson-snapshot-m";

/// This master's snapshot files in `dir` with their (time, index), oldest (lowest index)
/// first, and its `.part` files.
type Files = (Vec<(PathBuf, (String, u64))>, Vec<PathBuf>);

fn files(dir: &Path, id: NodeId) -> anyhow::Result<Files> {
    let mine = format!("{PREFIX}{id}-");
    let (mut whole, mut parts) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&mine) else {
            continue;
        };
        if rest.ends_with(".db.part") {
            parts.push(path);
        } else if let Some((when, index)) = rest
            .strip_suffix(".db")
            .and_then(|r| r.split_once('-'))
            .and_then(|(w, i)| Some((w.to_string(), i.parse::<u64>().ok()?)))
        {
            whole.push((path, (when, index)));
        }
    }
    // By index first: it only grows, where the wall clock may step back.
    whole.sort_by(|a, b| (a.1 .1, &a.1 .0).cmp(&(b.1 .1, &b.1 .0)));
    Ok((whole, parts))
}

/// Removes this master's oldest snapshots beyond `retention`; returns how many remain.
fn prune(dir: &Path, id: NodeId, retention: usize) -> anyhow::Result<usize> {
    let (whole, _) = files(dir, id)?;
    let extra = whole.len().saturating_sub(retention);
    for (path, _) in &whole[..extra] {
        std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(whole.len() - extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_as_durations() {
        assert_eq!(parse_every("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_every("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_every("90s").unwrap(), Duration::from_secs(90));
        for bad in ["", "soon", "-1h", "10ms"] {
            assert!(parse_every(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_of_this_master_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let names = [
            "keelson-snapshot-m1-20261207T100000Z-9.db",
            "keelson-snapshot-m1-20261207T090000Z-5.db",
            "keelson-snapshot-m1-20261207T100000Z-12.db",
            "keelson-snapshot-m1-20261207T110000Z-20.db",
            // The clock stepped back: the newest by index is kept all the same.
            "keelson-snapshot-m1-20261207T080000Z-25.db",
            "keelson-snapshot-m2-20261207T080000Z-1.db",
            "keelson-snapshot-m1-20261207T120000Z-30.db.part",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let (_, parts) = files(d, 1).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(prune(d, 1, 2).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "keelson-snapshot-m1-20261207T080000Z-25.db",
                "keelson-snapshot-m1-20261207T110000Z-20.db",
                "keelson-snapshot-m1-20261207T120000Z-30.db.part",
                "keelson-snapshot-m2-20261207T080000Z-1.db",
                "notes.txt",
            ]
        );
    }
}
