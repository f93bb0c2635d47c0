//! `keelson ctl masters status` and `keelson ctl cluster health`: every master asked about
//! itself (`GET /cluster` on its own API URL, as the membership records it), as
//! `etcdctl endpoint status -w table` and `etcdctl endpoint health` do.
//!
//! The membership comes from whichever master answers first; then each member is asked in
//! parallel, each within [`ASK_TIMEOUT`], so a dead master costs one timeout, not one per row.

use std::time::Duration;

use anyhow::bail;
use keelson_model::duration::human_duration;
use serde_json::{json, Value};

use super::client::Client;
use super::table::Table;

/// How long one master may take to answer about itself.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// One member and what it said about itself (or why it said nothing).
struct Member {
    id: u64,
    api: String,
    voter: bool,
    answer: Result<Value, String>,
}

impl Member {
    /// Answered, and serving: it knows a leader and has applied what it holds.
    fn healthy(&self) -> bool {
        matches!(&self.answer, Ok(v) if v["ready"] == true)
    }

    /// Why it is not healthy (`None` if it is).
    fn problem(&self) -> Option<String> {
        match &self.answer {
            Err(e) => Some(e.clone()),
            Ok(v) if v["storage_failure"].is_object() => {
                Some(match v["storage_failure"]["no_space"] == true {
                    true => "out of disk space: its storage stopped".into(),
                    false => "its storage failed".into(),
                })
            }
            Ok(v) if v["ready"] != true => Some(match v["leader"].as_u64() {
                None => "no leader known".into(),
                Some(_) => "still applying its log".into(),
            }),
            Ok(_) => None,
        }
    }
}

/// The members of a `GET /cluster` answer: id and API URL (empty when none is recorded).
pub(super) fn member_apis(cluster: &Value) -> Vec<(u64, String)> {
    cluster["members"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, node)| {
                    let api = node["api"].as_str().unwrap_or("").to_string();
                    (id.parse().unwrap_or(0), api)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The members (by the first master that answers), each asked about itself.
async fn survey(c: &Client) -> anyhow::Result<Vec<Member>> {
    let cluster = c.get("/cluster").await?;
    let voters: Vec<u64> = cluster["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let members = member_apis(&cluster);
    let answers = futures::future::join_all(members.iter().map(|(_, api)| async move {
        if api.is_empty() {
            return Err("no API address recorded".to_string());
        }
        c.get_from(api, "/cluster", ASK_TIMEOUT)
            .await
            .map_err(|e| format!("{e:#}"))
    }))
    .await;
    Ok(members
        .into_iter()
        .zip(answers)
        .map(|((id, api), answer)| Member {
            id,
            voter: voters.contains(&id),
            api,
            answer,
        })
        .collect())
}

/// `1.5 MiB`: a size as etcdctl prints its DB SIZE.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The table of `keelson ctl masters status`: one row per master.
fn status_table(members: &[Member]) -> String {
    // Lag is counted against the newest log any master reports: the leader's, when it answers.
    let newest = members
        .iter()
        .filter_map(|m| m.answer.as_ref().ok())
        .filter_map(|v| v["last_log_index"].as_u64())
        .max()
        .unwrap_or(0);
    let mut rows = vec![[
        "ID",
        "API",
        "ROLE",
        "TERM",
        "RAFT INDEX",
        "APPLIED",
        "LAG",
        "DB SIZE",
        "SNAPSHOT",
        "VERSION",
        "UPTIME",
        "HEALTH",
    ]
    .map(String::from)
    .to_vec()];
    for m in members {
        let mut row = vec![m.id.to_string(), m.api.clone()];
        match &m.answer {
            Ok(v) => {
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                let role = match v["state"].as_str().unwrap_or("") {
                    "Leader" => "leader".to_string(),
                    "Follower" if m.voter => "follower".to_string(),
                    "Follower" | "Learner" => "learner".to_string(),
                    other => other.to_lowercase(),
                };
                row.extend([
                    role,
                    n("term").to_string(),
                    n("last_log_index").to_string(),
                    n("applied_index").to_string(),
                    newest.saturating_sub(n("applied_index")).to_string(),
                    bytes(n("db_size_bytes")),
                    n("snapshot_index").to_string(),
                    v["version"].as_str().unwrap_or("?").to_string(),
                    human_duration(n("uptime_seconds") as i64),
                ]);
            }
            Err(_) => row.extend(std::iter::repeat_n("-".to_string(), 9)),
        }
        row.push(
            m.problem()
                .map_or_else(|| "ok".into(), |p| format!("unhealthy: {p}")),
        );
        rows.push(row);
    }
    Table::default().render(&rows)
}

/// `keelson ctl masters status [-o table|json]`.
pub async fn masters_status(c: &Client, output: Option<&str>) -> anyhow::Result<()> {
    let members = survey(c).await?;
    match output {
        None | Some("table") | Some("wide") => print!("{}", status_table(&members)),
        Some("json") => {
            let list: Vec<Value> = members
                .iter()
                .map(|m| {
                    json!({
                        "id": m.id,
                        "api": m.api,
                        "voter": m.voter,
                        "healthy": m.healthy(),
                        "status": m.answer.as_ref().ok(),
                        "error": m.answer.as_ref().err(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Some(other) => bail!("unknown output format {other:?}: expected table or json"),
    }
    Ok(())
}

/// The cluster's health from its members' answers: healthy (every master serves), degraded (a
/// majority of voters serves under one leader, some master does not) or unavailable.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unavailable,
}

impl Health {
    /// The exit status `cluster health` ends with: 0, 2 and 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 2,
            Health::Unavailable => 1,
        }
    }
}

fn judge(members: &[Member]) -> (Health, String) {
    let voters = members.iter().filter(|m| m.voter).count();
    let quorum = voters / 2 + 1;
    let serving = members.iter().filter(|m| m.voter && m.healthy()).count();
    let leaders: std::collections::BTreeSet<u64> = members
        .iter()
        .filter_map(|m| m.answer.as_ref().ok())
        .filter_map(|v| v["leader"].as_u64())
        .collect();
    let leader = match leaders.len() {
        1 => leaders.first().copied(),
        _ => None,
    };
    let summary = format!(
        "{serving} of {voters} voting masters healthy (quorum {quorum}), leader {}",
        leader.map_or("unknown".to_string(), |l| l.to_string())
    );
    let health = if serving < quorum || leader.is_none() {
        Health::Unavailable
    } else if members.iter().all(Member::healthy) {
        Health::Healthy
    } else {
        Health::Degraded
    };
    (health, summary)
}

/// `keelson ctl cluster health`: a line per master and one for the cluster; the exit status
/// says which (0 healthy, 2 degraded, 1 unavailable or unreachable).
pub async fn cluster_health(c: &Client) -> anyhow::Result<()> {
    let members = match survey(c).await {
        Ok(m) => m,
        Err(e) => {
            super::report(&e);
            println!("cluster is unavailable: no master answered");
            std::process::exit(Health::Unavailable.exit_code());
        }
    };
    for m in &members {
        match m.problem() {
            None => println!("master {} ({}) is healthy", m.id, m.api),
            Some(p) => println!("master {} ({}) is unhealthy: {p}", m.id, m.api),
        }
    }
    let (health, summary) = judge(&members);
    let word = match health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Unavailable => "unavailable",
    };
    println!("cluster is {word}: {summary}");
    if health != Health::Healthy {
        std::process::exit(health.exit_code());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, answer: Result<Value, String>) -> Member {
        Member {
            id,
            api: format!("https://127.0.0.1:644{id}"),
            voter: true,
            answer,
        }
    }

    fn up(id: u64, leader: u64, applied: u64) -> Member {
        let state = if id == leader { "Leader" } else { "Follower" };
        member(
            id,
            Ok(
                json!({"state": state, "leader": leader, "ready": true, "term": 4,
                "last_log_index": 120, "applied_index": applied, "snapshot_index": 100,
                "db_size_bytes": 1_500_000, "version": "0.1.0", "uptime_seconds": 75}),
            ),
        )
    }

    #[test]
    fn health_of_a_quorum() {
        let all = [up(1, 1, 120), up(2, 1, 120), up(3, 1, 118)];
        assert_eq!(judge(&all).0, Health::Healthy);
        let one_down = [
            up(1, 1, 120),
            up(2, 1, 120),
            member(3, Err("refused".into())),
        ];
        let (health, summary) = judge(&one_down);
        assert_eq!(health, Health::Degraded);
        assert_eq!(
            summary,
            "2 of 3 voting masters healthy (quorum 2), leader 1"
        );
        let two_down = [
            up(1, 1, 120),
            member(2, Err("refused".into())),
            member(3, Err("refused".into())),
        ];
        assert_eq!(judge(&two_down).0, Health::Unavailable);
        let split = [up(1, 1, 120), up(2, 2, 120), up(3, 2, 120)];
        assert_eq!(judge(&split).0, Health::Unavailable);
    }

    #[test]
    fn status_rows() {
        let t = status_table(&[
            up(1, 1, 120),
            up(2, 1, 117),
            member(3, Err("no answer".into())),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID   API"), "{t}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "2",
                "https://127.0.0.1:6442",
                "follower",
                "4",
                "120",
                "117",
                "3",
                "1.5",
                "MB",
                "100",
                "0.1.0",
                "75s",
                "ok"
            ]
        );
        assert!(lines[3].ends_with("unhealthy: no answer"), "{t}");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(2_345_678_901), "2.3 GB");
    }
}
