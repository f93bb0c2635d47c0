//! Phase `lists` of `keelson bench`: reading a large collection. `--pods` pods (pending: no
//! node runs them) are created by replication controllers; then, `--list-rounds` times each,
//! `kubectl get pods` (a server-side Table, in kubectl's pages of 500), `kubectl get pods -o
//! json` (JSON pages of 500), one unpaged JSON list, a list's first page of 500, and a list by
//! label of one controller's pods.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::harness::{command_line, loadavg, Api};
use super::scale::create_controllers;
use super::{pct_ms, table, BenchArgs, Kind, Sys};

/// The reads timed, each `--list-rounds` times.
pub struct Lists {
    pub pods: usize,
    /// From the first controller's create until every pod exists.
    pub create: Duration,
    /// `kubectl get pods`, `kubectl get pods -o json` (empty without kubectl), in pages of
    /// 500 (kubectl's default) and in one request (`--chunk-size=0`).
    pub kubectl_table: Vec<Duration>,
    pub kubectl_json: Vec<Duration>,
    pub kubectl_table_whole: Vec<Duration>,
    pub kubectl_json_whole: Vec<Duration>,
    /// One unpaged `GET /api/v1/namespaces/default/pods`, and the first page of 500.
    pub unpaged: Vec<Duration>,
    pub first_page: Vec<Duration>,
    /// `GET …?labelSelector=rc=sched-0`: one controller's pods.
    pub by_label: Vec<Duration>,
    pub kubectl: Option<String>,
    /// Each master's VmRSS (KiB) before the pods and once they all exist, and the leader.
    pub rss_before: Vec<u64>,
    pub rss_after: Vec<u64>,
    pub leader: u64,
    pub load_before: String,
    pub load_after: String,
}

const PODS: &str = "/api/v1/namespaces/default/pods";
/// The pods of the first controller `create_controllers` makes.
const BY_LABEL: &str = "labelSelector=rc%3Dsched-0";

pub async fn lists(args: &BenchArgs) -> anyhow::Result<Lists> {
    let n = args.pods;
    eprintln!("bench: lists: {n} pods");
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let api = Api::new(cluster)?;
    let load_before = loadavg();
    let rss_before = sys.rss_kib();
    let t0 = Instant::now();
    let mut creates = create_controllers(&api, n, args.rc_replicas.max(1));
    while let Some(failed) = creates.join_next().await {
        if failed? > 0 {
            bail!("a controller was not created");
        }
    }
    let deadline = t0 + Duration::from_secs(args.sched_timeout_secs);
    while count(&api).await? < n {
        if Instant::now() > deadline {
            bail!("the controllers did not create {n} pods in time");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let create = t0.elapsed();
    eprintln!("bench: lists: {n} pods in {:.1} s", create.as_secs_f64());
    // Settled: the controllers' last writes applied everywhere, the feed's window turned over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = sys.rss_kib();
    let leader = cluster
        .wait_leader(Duration::from_secs(10))
        .await
        .unwrap_or(0);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&config, 1, "bench");
    let kubectl = kubectl_version();
    let mut r = Lists {
        pods: n,
        create,
        kubectl_table: Vec::new(),
        kubectl_json: Vec::new(),
        kubectl_table_whole: Vec::new(),
        kubectl_json_whole: Vec::new(),
        unpaged: Vec::new(),
        first_page: Vec::new(),
        by_label: Vec::new(),
        kubectl: kubectl.clone(),
        rss_before,
        rss_after,
        leader,
        load_before,
        load_after: String::new(),
    };
    for round in 0..args.list_rounds {
        if kubectl.is_some() {
            r.kubectl_table.push(kubectl_get(&config, &[], n)?);
            r.kubectl_json
                .push(kubectl_get(&config, &["-o", "json"], n)?);
            let whole = "--chunk-size=0";
            r.kubectl_table_whole
                .push(kubectl_get(&config, &[whole], n)?);
            r.kubectl_json_whole
                .push(kubectl_get(&config, &["-o", "json", whole], n)?);
        }
        r.unpaged.push(timed_get(&api, PODS, n).await?);
        r.first_page
            .push(timed_get(&api, &format!("{PODS}?limit=500"), n.min(500)).await?);
        let one_rc = args.rc_replicas.max(1).min(n);
        r.by_label
            .push(timed_get(&api, &format!("{PODS}?{BY_LABEL}"), one_rc).await?);
        eprintln!("bench: lists: round {} done", round + 1);
    }
    for v in [
        &mut r.kubectl_table,
        &mut r.kubectl_json,
        &mut r.kubectl_table_whole,
        &mut r.kubectl_json_whole,
        &mut r.unpaged,
        &mut r.first_page,
        &mut r.by_label,
    ] {
        v.sort();
    }
    r.load_after = loadavg();
    Ok(r)
}

/// Pods the controllers report, summed.
async fn count(api: &Api) -> anyhow::Result<usize> {
    let rcs = api
        .get(0, "/api/v1/namespaces/default/replicationcontrollers")
        .await?;
    Ok(rcs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|rc| rc["status"]["replicas"].as_u64())
                .sum::<u64>() as usize
        })
        .unwrap_or(0))
}

/// One GET through master 1 (a follower or the leader), which must hold `expect` items.
async fn timed_get(api: &Api, path: &str, expect: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let v = api.get(0, path).await?;
    let took = t.elapsed();
    let got = v["items"].as_array().map_or(0, Vec::len);
    if got != expect {
        bail!("GET {path}: {got} items, expected {expect}");
    }
    Ok(took)
}

fn kubectl_version() -> Option<String> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["clientVersion"]["gitVersion"]
        .as_str()
        .map(str::to_string)
}

/// `kubectl get pods ARGS` with output counted and discarded; it must list `expect` pods.
fn kubectl_get(config: &Path, extra: &[&str], expect: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(config)
        .args(["get", "pods", "--no-headers"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("run kubectl")?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "kubectl get pods {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let got = if !extra.contains(&"json") {
        text.lines().count()
    } else {
        text.matches("\"kind\": \"Pod\"").count()
    };
    if got != expect {
        bail!("kubectl get pods {extra:?}: {got} pods, expected {expect}");
    }
    Ok(took)
}

pub fn render_lists(args: &BenchArgs, r: &Lists) -> String {
    let header = ["read", "median ms", "min ms", "max ms", "rounds"].map(String::from);
    let row = |name: &str, v: &[Duration]| {
        vec![
            name.to_string(),
            format!("{:.0}", pct_ms(v, 0.5)),
            format!("{:.0}", pct_ms(v, 0.0)),
            format!("{:.0}", pct_ms(v, 1.0)),
            v.len().to_string(),
        ]
    };
    let mut rows = Vec::new();
    if r.kubectl.is_some() {
        rows.push(row(
            "`kubectl get pods` (Table, pages of 500)",
            &r.kubectl_table,
        ));
        rows.push(row(
            "`kubectl get pods -o json` (pages of 500)",
            &r.kubectl_json,
        ));
        rows.push(row(
            "`kubectl get pods --chunk-size=0` (Table, one request)",
            &r.kubectl_table_whole,
        ));
        rows.push(row(
            "`kubectl get pods -o json --chunk-size=0` (one request)",
            &r.kubectl_json_whole,
        ));
    }
    rows.push(row(&format!("`GET {PODS}` (one JSON list)"), &r.unpaged));
    rows.push(row(
        &format!("`GET {PODS}?limit=500` (first page)"),
        &r.first_page,
    ));
    rows.push(row(
        &format!(
            "`GET {PODS}?{BY_LABEL}` (one controller's {} pods)",
            args.rc_replicas.max(1).min(r.pods)
        ),
        &r.by_label,
    ));
    let mib = |k: u64| format!("{:.0}", k as f64 / 1024.0);
    let rss_header = ["master", "RSS MiB before", "RSS MiB after", "KiB per pod"].map(String::from);
    let rss_rows: Vec<Vec<String>> = (0..r.rss_after.len())
        .map(|m| {
            let (before, after) = (r.rss_before[m], r.rss_after[m]);
            let leader = if m as u64 + 1 == r.leader {
                " (leader)"
            } else {
                ""
            };
            vec![
                format!("{}{leader}", m + 1),
                mib(before),
                mib(after),
                format!(
                    "{:.2}",
                    after.saturating_sub(before) as f64 / r.pods.max(1) as f64
                ),
            ]
        })
        .collect();
    format!(
        "## Reading a large collection (issue 16)\n\n\
         Produced by `{}`.\n\n\
         A fresh 3-master cluster; {} pods created by replication controllers of {} replicas \
         (in {:.1} s; no node, so they stay pending), then each read {} times through master 1, \
         in turn. kubectl: {}; its time includes starting it and decoding what it reads, its \
         output is discarded. kubectl paces its own requests (client-go's default limiter: 5 \
         per second after a burst of 10), so 20 pages of 500 take at least 2 s whatever the \
         server; `--chunk-size=0` reads the same list in one request. Load average (1 min) {} before, {} after. Goals: `kubectl get \
         pods` ≤ 1.5 s, `-o json` ≤ 3 s on 10,000 pods.\n\n{}\
         Each master's resident memory before the pods were created and 5 s after the last \
         existed (the store's records, the change feed's window, the informers' caches, \
         RocksDB's memtables):\n\n{}",
        command_line(),
        r.pods,
        args.rc_replicas,
        r.create.as_secs_f64(),
        args.list_rounds,
        r.kubectl
            .as_deref()
            .unwrap_or("not found, its rows are left out"),
        r.load_before,
        r.load_after,
        table(&header, &rows),
        table(&rss_header, &rss_rows)
    )
}
