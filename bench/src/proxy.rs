//! The bench's `proxy` phase: wrk through each proxy mode of the agents and straight at a pod's
//! IP, in one run; in the kernel mode also how soon an endpoints change is in the rules, and one
//! rules sync with 1,000 services of 10 endpoints each.
//!
//! Pods join a Docker network the bench creates, so wrk's "direct" traffic goes to an address
//! of the bench's own. Each mode gets a fresh 3-master cluster and two Docker agents.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::harness::{command_line, loadavg, Api, Network};
use super::pods::{docker_cluster, site_pod};
use super::{pct_ms, table, BenchArgs};

/// The proxy modes measured, in this order (`keelson agent --proxy-mode`).
const MODES: [&str; 2] = ["nftables", "userspace"];

/// Endpoints changes timed into the rules.
const RULE_CHANGES: usize = 50;

/// The large sync: services, and endpoints per service.
const BIG_SERVICES: usize = 1000;
const BIG_ENDPOINTS: usize = 10;

/// One wrk run.
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
}

/// A wrk latency like `1.23ms`, `850.00us`, `1.02s`, `1.5m` in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        errors: 0,
    };
    let mut in_dist = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if in_dist && f.len() == 2 && f[0].ends_with('%') {
            match f[0] {
                "50%" => w.p50_ms = wrk_ms(f[1]).unwrap_or(f64::NAN),
                "99%" => w.p99_ms = wrk_ms(f[1]).unwrap_or(f64::NAN),
                _ => {}
            }
            continue;
        }
        in_dist = false;
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if line.contains(" requests in ") {
            w.requests = f.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    if w.rps.is_nan() {
        bail!("no Requests/sec in wrk's output:\n{out}");
    }
    Ok(w)
}

async fn wrk(args: &BenchArgs, target: &str) -> anyhow::Result<Wrk> {
    let url = format!("http://{target}/");
    let out = tokio::process::Command::new("wrk")
        .args(args.wrk_args.split_whitespace())
        .arg("--latency")
        .arg(&url)
        .output()
        .await
        .context("run wrk (apt install wrk)")?;
    if !out.status.success() {
        bail!("wrk {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Waits until `http://target/` answers 200.
async fn wait_http(target: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        let ok = http
            .get(format!("http://{target}/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("http://{target}/ did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One mode's wrk rounds.
pub struct ModeResult {
    pub mode: &'static str,
    /// (direct, proxied) per round, run back to back.
    pub rounds: Vec<(Wrk, Wrk)>,
    /// The pod wrk reached directly (its IP and container port) and the service's address.
    pub direct: String,
    pub proxied: String,
    /// Docker's userland proxy processes running.
    pub docker_proxies: usize,
    pub load_before: String,
    pub load_after: String,
}

/// One rules sync with [`BIG_SERVICES`] × [`BIG_ENDPOINTS`] in place.
pub struct BigSync {
    /// Creating the services and endpoints through the API (16 requests at a time).
    pub writes: Duration,
    /// The last write's acknowledgement → every endpoint's DNAT rule in the table.
    pub to_rules: Duration,
    /// The agent's own duration of one sync (render, diff, `nft -f` of the change), taken by one
    /// more endpoints change once everything is in place (its sync-duration histogram).
    pub one_sync: Option<Duration>,
    /// Lines of the table (`nft list table`).
    pub table_lines: usize,
}

/// Results of the proxy phase.
pub struct ProxyResult {
    pub modes: Vec<ModeResult>,
    /// Kernel mode: an endpoints write acknowledged → its DNAT rule in the agent's table.
    pub rule_latency: Vec<Duration>,
    pub big: Option<BigSync>,
}

/// The agent's nftables table (`agent::proxy::nftables::table_name`, which the bench cannot
/// link: cluster ids are hex and the bench's node names plain).
fn table_name(cluster: &str, node: &str) -> String {
    let short: String = cluster.chars().take(12).collect();
    format!("keelson-{short}-{node}")
}

fn nft_table(name: &str) -> String {
    Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The address `offset` into IPv4 subnet `cidr` (`172.18.0.0/16`, 300 → 172.18.1.44).
fn in_subnet(cidr: &str, offset: u32) -> anyhow::Result<Ipv4Addr> {
    let (ip, _) = cidr.split_once('/').context("a CIDR")?;
    let base: Ipv4Addr = ip.parse()?;
    Ok(Ipv4Addr::from(u32::from(base) + offset))
}

/// A selector-less service `name` on `port` and its Endpoints at `ips`:80 (no traffic is ever
/// sent to them: the rules are what is measured).
fn service_and_endpoints(name: &str, port: u16, ips: &[Ipv4Addr]) -> (Value, Value) {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    (
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": port, "targetPort": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
               "subsets": [{"addresses": addresses, "ports": [{"port": 80, "protocol": "TCP"}]}]}),
    )
}

const NS: &str = "/api/v1/namespaces/default";

/// PUT of `body` at `path` on master 0, which must answer 2xx.
async fn put(api: &Api, path: &str, body: &Value) -> anyhow::Result<()> {
    match api
        .call(
            0,
            reqwest::Method::PUT,
            path,
            Some(body),
            "application/json",
        )
        .await?
    {
        (c, _) if (200..300).contains(&c) => Ok(()),
        (c, v) => bail!("PUT {path}: {c} {v}"),
    }
}

/// POST of `body` on master `m`, again after an answer of unknown outcome (a leader change
/// under the burst); AlreadyExists then means an earlier attempt stored it.
async fn create(api: &Api, m: usize, path: &str, body: &Value) -> anyhow::Result<()> {
    let mut last = String::new();
    for attempt in 0..10 {
        match api
            .call(
                m + attempt,
                reqwest::Method::POST,
                path,
                Some(body),
                "application/json",
            )
            .await
        {
            Ok((c, _)) if (200..300).contains(&c) || (c == 409 && attempt > 0) => return Ok(()),
            Ok((c, v)) if c < 500 => bail!("POST {path}: {c} {v}"),
            Ok((c, v)) => last = format!("{c} {v}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("POST {path}: {last}")
}

/// `net.ipv4.tcp_tw_reuse` at 1 while it lives, as it was before afterwards. wrk opens a new
/// connection per request (busybox httpd does not keep them alive): at the Linux default (2,
/// loopback only) the direct runs to the pod's IP run out of local ports within a round and
/// crawl, while connections to loopback addresses do not — the comparison would measure
/// TIME_WAIT, not the proxy.
struct TwReuse(Option<String>);

const TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";

impl TwReuse {
    fn set() -> TwReuse {
        let before = std::fs::read_to_string(TW_REUSE).ok();
        if let Err(e) = std::fs::write(TW_REUSE, "1") {
            eprintln!("bench: proxy: cannot set {TW_REUSE}: {e}");
        }
        TwReuse(before)
    }
}

impl Drop for TwReuse {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(TW_REUSE, v.trim());
        }
    }
}

/// Endpoints writes acknowledged → the new endpoint's DNAT rule in `table`, each.
async fn rule_latency(api: &Api, table: &str, subnet: &str) -> anyhow::Result<Vec<Duration>> {
    let name = "bench-rules";
    let (svc, ep) = service_and_endpoints(name, 18999, &[in_subnet(subnet, 100)?]);
    api.post(0, &format!("{NS}/services"), &svc).await?;
    api.post(0, &format!("{NS}/endpoints"), &ep).await?;
    let mut out = Vec::new();
    for i in 0..RULE_CHANGES {
        let ip = in_subnet(subnet, 101 + i as u32)?;
        let (_, ep) = service_and_endpoints(name, 18999, &[ip]);
        put(api, &format!("{NS}/endpoints/{name}"), &ep).await?;
        let acked = Instant::now();
        // nft lists `dnat ip to` as `dnat to`.
        let want = format!("dnat to {ip}:80");
        loop {
            if nft_table(table).contains(&want) {
                out.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("{want} not in {table} within 10 s");
            }
            // Each poll is an `nft` process: not so often that polling loads the machine.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out.sort();
    Ok(out)
}

/// The agent's sync-duration histogram: (sum seconds, count).
async fn sync_histogram(http: &reqwest::Client, metrics: &str) -> Option<(f64, u64)> {
    let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("keelson_agent_proxy_sync_duration_seconds_sum ")?,
        value("keelson_agent_proxy_sync_duration_seconds_count ")? as u64,
    ))
}

/// [`BIG_SERVICES`] services of [`BIG_ENDPOINTS`] endpoints each into the rules.
async fn big_sync(api: &Api, table: &str, subnet: &str, metrics: &str) -> anyhow::Result<BigSync> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    while done < BIG_SERVICES {
        while next < BIG_SERVICES && tasks.len() < 16 {
            let ips: Vec<Ipv4Addr> = (0..BIG_ENDPOINTS)
                .map(|e| in_subnet(subnet, 1000 + (next * BIG_ENDPOINTS + e) as u32))
                .collect::<Result<_, _>>()?;
            let (svc, ep) =
                service_and_endpoints(&format!("big-{next}"), 40000 + next as u16, &ips);
            let api = Api {
                urls: api.urls.clone(),
                http: api.http.clone(),
            };
            tasks.spawn(async move {
                create(&api, next, &format!("{NS}/services"), &svc).await?;
                create(&api, next, &format!("{NS}/endpoints"), &ep).await
            });
            next += 1;
        }
        tasks.join_next().await.context("a write task")???;
        done += 1;
    }
    let writes = started.elapsed();
    let acked = Instant::now();
    let want = BIG_SERVICES * BIG_ENDPOINTS;
    let table_lines = loop {
        let text = nft_table(table);
        let n = text
            .lines()
            .filter(|l| l.contains("dnat to ") && l.contains(":80"))
            .count();
        // The rules-latency service's one endpoint is there too.
        if n > want {
            break text.lines().count();
        }
        if acked.elapsed() > Duration::from_secs(120) {
            bail!("{n} of {want} endpoints in {table} after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to_rules = acked.elapsed();
    // One more change with everything in place: the duration of that one sync.
    let http = reqwest::Client::new();
    let before = sync_histogram(&http, metrics).await;
    let ip = in_subnet(subnet, 999)?;
    let (_, ep) = service_and_endpoints("big-0", 40000, &[ip]);
    put(api, &format!("{NS}/endpoints/big-0"), &ep).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut one_sync = None;
    while Instant::now() < deadline {
        let after = sync_histogram(&http, metrics).await;
        if let (Some((s0, c0)), Some((s1, c1))) = (before, after) {
            if c1 > c0 {
                one_sync = Some(Duration::from_secs_f64((s1 - s0) / (c1 - c0) as f64));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(BigSync {
        writes,
        to_rules,
        one_sync,
        table_lines,
    })
}

/// wrk through the service and straight at the first pod, `rounds` times back to back.
async fn rounds(args: &BenchArgs, direct: &str, proxied: &str) -> anyhow::Result<Vec<(Wrk, Wrk)>> {
    let mut out = Vec::new();
    for r in 0..args.proxy_rounds {
        let d = wrk(args, direct).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p = wrk(args, proxied).await?;
        eprintln!(
            "bench: proxy: round {}: direct {:.0} req/s p99 {:.1} ms, proxied {:.0} req/s p99 {:.1} ms",
            r + 1,
            d.rps,
            d.p99_ms,
            p.rps,
            p.p99_ms
        );
        out.push((d, p));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(out)
}

/// Docker's userland proxy processes running now.
fn docker_proxies() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "docker-proxy")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Phase `proxy`.
pub async fn proxy(args: &BenchArgs) -> anyhow::Result<ProxyResult> {
    let pods_net = Network::create("pods")?;
    let _tw_reuse = TwReuse::set();
    let mut result = ProxyResult {
        modes: Vec::new(),
        rule_latency: Vec::new(),
        big: None,
    };
    for mode in MODES {
        eprintln!("bench: proxy: {mode} mode: a service over 2 pods on 2 docker agents");
        let (sys, cleanup, agents, api) = docker_cluster(
            args,
            2,
            &["--proxy-mode", mode, "--pod-network", &pods_net.name],
        )
        .await?;
        let port = args.service_port;
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bench-web"},
            "spec": {"selector": {"app": "bench-web"},
                     "ports": [{"port": port, "targetPort": 80, "protocol": "TCP"}]}});
        api.post(0, &format!("{NS}/services"), &service).await?;
        for i in 0..2 {
            api.post(
                i,
                &format!("{NS}/pods"),
                &site_pod(&format!("bench-web-{i}"), "bench-web"),
            )
            .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ep = api
                .get(0, &format!("{NS}/endpoints/bench-web"))
                .await
                .unwrap_or(Value::Null);
            let listed = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
            if listed == 2 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the service's endpoints never listed 2 pods: {ep}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pod = api.get(0, &format!("{NS}/pods/bench-web-0")).await?;
        let pod_ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        let direct = format!("{pod_ip}:80");
        let proxied = format!("{}:{port}", agents.0[0].address);
        wait_http(&direct, Duration::from_secs(30)).await?;
        wait_http(&proxied, Duration::from_secs(30)).await?;
        eprintln!("bench: proxy: {mode}: pod at {direct}, service at {proxied}");
        let load_before = loadavg();
        let docker_proxies = docker_proxies();
        let rounds = rounds(args, &direct, &proxied).await?;
        let load_after = loadavg();
        if mode == "nftables" {
            let cluster = api.cluster_id().await?;
            let table = table_name(&cluster, &agents.0[0].name);
            result.rule_latency = rule_latency(&api, &table, &pods_net.subnet).await?;
            let metrics = format!("http://{}/metrics", agents.0[0].api);
            match big_sync(&api, &table, &pods_net.subnet, &metrics).await {
                Ok(b) => result.big = Some(b),
                Err(e) => eprintln!("bench: proxy: the large sync failed: {e:#}"),
            }
        }
        result.modes.push(ModeResult {
            mode,
            rounds,
            direct,
            proxied,
            docker_proxies,
            load_before,
            load_after,
        });
        drop(agents);
        drop(cleanup);
        drop(sys);
    }
    Ok(result)
}

/// One mode's rounds as a table (the format of issue #8's table, kept).
fn rounds_table(m: &ModeResult) -> String {
    let header = [
        "round",
        "direct req/s",
        "direct p50 ms",
        "direct p99 ms",
        "direct errors",
        "proxy req/s",
        "proxy p50 ms",
        "proxy p99 ms",
        "proxy errors",
        "proxy/direct req/s",
    ]
    .map(String::from);
    let f1 = |v: f64| format!("{v:.1}");
    let mut rows: Vec<Vec<String>> = m
        .rounds
        .iter()
        .enumerate()
        .map(|(i, (d, p))| {
            vec![
                (i + 1).to_string(),
                format!("{:.0}", d.rps),
                f1(d.p50_ms),
                f1(d.p99_ms),
                d.errors.to_string(),
                format!("{:.0}", p.rps),
                f1(p.p50_ms),
                f1(p.p99_ms),
                p.errors.to_string(),
                format!("{:.2}", p.rps / d.rps),
            ]
        })
        .collect();
    let n = m.rounds.len().max(1) as f64;
    let (dm, pm) = (
        m.rounds.iter().map(|(d, _)| d.rps).sum::<f64>() / n,
        m.rounds.iter().map(|(_, p)| p.rps).sum::<f64>() / n,
    );
    rows.push(vec![
        "mean".into(),
        format!("{dm:.0}"),
        String::new(),
        String::new(),
        String::new(),
        format!("{pm:.0}"),
        String::new(),
        String::new(),
        String::new(),
        format!("{:.2}", pm / dm),
    ]);
    table(&header, &rows)
}

/// The proxy section.
pub fn render_proxy(args: &BenchArgs, r: &ProxyResult) -> String {
    let mut out = format!(
        "## Service proxy throughput (issues #6, #8 and #19)\n\n\
         Produced by `{}`.\n\n\
         For each proxy mode a fresh 3-master cluster, 2 `keelson agent --runtime docker \
         --proxy-mode MODE` processes whose pods join a Docker network the bench created, a \
         core/v1 Service (port {} → targetPort 80) over 2 `user/mysite` pods (busybox httpd). \
         `wrk {} --latency` against the service port at the first agent's address, and in the \
         same run straight at the first pod's IP and container port (no docker-proxy, no \
         keelson); direct then proxied, {} rounds back to back. In the nftables mode the \
         service port is DNAT rules in the kernel (random over both pods); in the userspace \
         mode the agent accepts each connection and dials a pod's published port (node \
         address, through docker-proxy). wrk, both agents, the pods and the masters share the \
         machine's cores; busybox httpd answers each request on a new connection (no \
         keep-alive), so every request is a TCP connect through each hop; the phase sets \
         `net.ipv4.tcp_tw_reuse=1` (restored after), without which the direct runs to the \
         pod's IP exhaust the local ports within a round (the default, 2, reuses them for \
         loopback only). Goals: kernel mode \
         proxied ≥ 0.95× direct; the userspace mode is reported.\n\n",
        command_line(),
        args.service_port,
        args.wrk_args,
        args.proxy_rounds,
    );
    for m in &r.modes {
        out.push_str(&format!(
            "### {} mode\n\nDirect: {}; proxied: {}. `docker-proxy` processes running: {}. \
             Load average (1 min) {} before, {} after.\n\n{}\n",
            m.mode,
            m.direct,
            m.proxied,
            m.docker_proxies,
            m.load_before,
            m.load_after,
            rounds_table(m)
        ));
    }
    let header = ["measure", "n", "p50 ms", "p99 ms", "max ms"].map(String::from);
    let q = |v: &[Duration], q| format!("{:.1}", pct_ms(v, q));
    let mut rows = vec![vec![
        "endpoints write acknowledged → its DNAT rule in the agent's table".to_string(),
        r.rule_latency.len().to_string(),
        q(&r.rule_latency, 0.5),
        q(&r.rule_latency, 0.99),
        q(&r.rule_latency, 1.0),
    ]];
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    if let Some(b) = &r.big {
        rows.push(vec![
            format!("{BIG_SERVICES} services × {BIG_ENDPOINTS} endpoints: created through the API (16 at a time)"),
            "1".into(),
            String::new(),
            String::new(),
            ms(b.writes),
        ]);
        rows.push(vec![
            "… the last write acknowledged → every endpoint's rule in the table".into(),
            "1".into(),
            String::new(),
            String::new(),
            ms(b.to_rules),
        ]);
        rows.push(vec![
            format!(
                "… one more endpoints change with all of it in place: the agent's sync (render, diff, `nft -f` of the change; the table lists {} lines)",
                b.table_lines
            ),
            "1".into(),
            String::new(),
            String::new(),
            b.one_sync.map(ms).unwrap_or_else(|| "not seen".into()),
        ]);
    }
    out.push_str(&format!(
        "### Rules (nftables mode)\n\nAn Endpoints object of a selector-less service \
         rewritten {RULE_CHANGES} times, one address at a time, each time polling `nft list \
         table` until the new DNAT rule is there (goal p99 ≤ 100 ms); then {BIG_SERVICES} \
         services of {BIG_ENDPOINTS} endpoints each (addresses on the bench's network, no \
         traffic sent to them).\n\n{}",
        table(&header, &rows)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 10s test @ http://127.0.0.1:80/\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms    1.00ms  30.00ms   90.00%\n    Req/Sec     7.50k   500.00     8.00k    70.00%\n  Latency Distribution\n     50%    1.90ms\n     75%    2.50ms\n     90%    3.10ms\n     99%  850.00us\n  150000 requests in 10.00s, 20.00MB read\n  Socket errors: connect 0, read 12, write 0, timeout 3\n  Non-2xx or 3xx responses: 5\nRequests/sec:  15000.12\nTransfer/sec:      2.00MB\n";
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.rps, 15000.12);
        assert_eq!(w.p50_ms, 1.9);
        assert_eq!(w.p99_ms, 0.85);
        assert_eq!(w.requests, 150000);
        assert_eq!(w.errors, 20);
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
    }
}
