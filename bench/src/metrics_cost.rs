//! Phase `metrics-cost` of `keelson bench` (issue #8): the API's write throughput with and
//! without a scraper fetching every master's `/metrics` every second, on one cluster, the two
//! conditions alternating.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::harness::{command_line, cpu_secs, loadavg, Api};
use super::{pct_ms, table, throughput, BenchArgs, Kind, Level, Sys, MEMBERS};

/// One measured window.
pub struct Window {
    pub scraped: bool,
    pub level: Level,
    pub scrapes: u64,
    pub scrape_errors: u64,
    pub scrape_ms: Vec<Duration>,
    pub bytes: u64,
    /// CPU of the three masters together over the window (cores).
    pub masters_cores: f64,
}

/// Results of the metrics-cost phase.
pub struct MetricsCost {
    pub windows: Vec<Window>,
    pub load_before: String,
    pub load_after: String,
}

/// Fetches every master's /metrics every second until aborted.
fn scraper(
    api: Api,
    scrapes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    lat: Arc<std::sync::Mutex<Vec<Duration>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let fetches = api.urls.iter().map(|url| {
                let http = api.http.clone();
                let url = format!("{url}/metrics");
                async move {
                    let t = Instant::now();
                    let r = async {
                        http.get(&url)
                            .send()
                            .await?
                            .error_for_status()?
                            .bytes()
                            .await
                    }
                    .await;
                    (r.map(|b| b.len()), t.elapsed())
                }
            });
            for (r, took) in futures::future::join_all(fetches).await {
                match r {
                    Ok(n) => {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        lat.lock().expect("lat").push(took);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    })
}

/// Phase `metrics-cost`.
pub async fn metrics_cost(args: &BenchArgs) -> anyhow::Result<MetricsCost> {
    let clients = args.metrics_clients;
    let duration = Duration::from_secs(args.duration_secs);
    eprintln!(
        "bench: metrics-cost: {clients} kv writers, {} rounds of {} s without / with scraping",
        args.metrics_rounds, args.duration_secs
    );
    let sys = Sys::start(Kind::Keelson, args).await?;
    let Sys::Keelson(cluster) = &sys else {
        bail!("not keelson")
    };
    let api = Api::new(cluster)?;
    let value = "x".repeat(args.value_size);
    let load_before = loadavg();
    let mut windows = Vec::new();
    for round in 0..args.metrics_rounds {
        for scraped in [false, true] {
            let (scrapes, errors, bytes) = (
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
            );
            let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
            let task = scraped.then(|| {
                scraper(
                    api.clone(),
                    scrapes.clone(),
                    errors.clone(),
                    bytes.clone(),
                    lat.clone(),
                )
            });
            let pids: Vec<u32> = (1..=MEMBERS as u64)
                .filter_map(|id| cluster.pid(id))
                .collect();
            let cpu = || pids.iter().filter_map(|p| cpu_secs(*p)).sum::<f64>();
            let (c0, t0) = (cpu(), Instant::now());
            let level = throughput(&sys, clients, duration, &value).await;
            let masters_cores = (cpu() - c0) / t0.elapsed().as_secs_f64();
            if let Some(t) = task {
                t.abort();
            }
            let mut scrape_ms = std::mem::take(&mut *lat.lock().expect("lat"));
            scrape_ms.sort();
            eprintln!(
                "bench: metrics-cost: round {} {}: {:.0} ops/s",
                round + 1,
                if scraped { "scraped" } else { "unscraped" },
                level.ops_per_sec
            );
            windows.push(Window {
                scraped,
                level,
                scrapes: scrapes.load(Ordering::Relaxed),
                scrape_errors: errors.load(Ordering::Relaxed),
                scrape_ms,
                bytes: bytes.load(Ordering::Relaxed),
                masters_cores,
            });
        }
    }
    let load_after = loadavg();
    drop(sys);
    Ok(MetricsCost {
        windows,
        load_before,
        load_after,
    })
}

/// The metrics-cost section.
pub fn render_metrics_cost(args: &BenchArgs, r: &MetricsCost) -> String {
    let header = [
        "round",
        "scraper",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "masters' cores",
        "scrapes",
        "scrape p50 ms",
        "KiB per scrape",
    ]
    .map(String::from);
    let mut rows: Vec<Vec<String>> = r
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            vec![
                (i / 2 + 1).to_string(),
                if w.scraped { "every 1 s" } else { "off" }.into(),
                format!("{:.0}", w.level.ops_per_sec),
                format!("{:.1}", pct_ms(&w.level.latencies, 0.5)),
                format!("{:.1}", pct_ms(&w.level.latencies, 0.99)),
                w.level.errors.to_string(),
                format!("{:.2}", w.masters_cores),
                if w.scraped {
                    format!("{} ({} failed)", w.scrapes, w.scrape_errors)
                } else {
                    String::new()
                },
                if w.scraped {
                    format!("{:.1}", pct_ms(&w.scrape_ms, 0.5))
                } else {
                    String::new()
                },
                if w.scrapes > 0 {
                    format!("{:.0}", w.bytes as f64 / w.scrapes as f64 / 1024.0)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mean = |s: bool| {
        let v: Vec<f64> = (r.windows.iter())
            .filter(|w| w.scraped == s)
            .map(|w| w.level.ops_per_sec)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (off, on) = (mean(false), mean(true));
    rows.push(vec![
        "mean".into(),
        "off / every 1 s".into(),
        format!("{off:.0} / {on:.0}"),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    format!(
        "## Cost of scraping /metrics (issue #8)\n\n\
         Produced by `{}`.\n\n\
         A fresh 3-master cluster; {} closed-loop clients upserting {} B values (`PUT \
         /kv/KEY?upsert=true`, client i on master i mod 3), {} s per window after 1 s of \
         warm-up, alternating without and with a scraper that fetches every master's `/metrics` \
         every second (3 concurrent GETs per second, as one Prometheus with 3 targets at a 1 s \
         interval), {} rounds. The masters' cores: their utime + stime (`/proc/PID/stat`) over the \
         window, warm-up included, ÷ its wall time. Throughput with scraping / without: **{:.2}** (means). Load \
         average (1 min) {} before, {} after.\n\n{}",
        command_line(),
        args.metrics_clients,
        args.value_size,
        args.duration_secs,
        args.metrics_rounds,
        on / off,
        r.load_before,
        r.load_after,
        table(&header, &rows)
    )
}
