//! Phase `authz-cost` of `keelson bench` (issue #17): what authentication and authorization
//! cost on pod creates, and how long `kubectl auth can-i` takes.
//!
//! One 3-master cluster serving HTTPS with a token file; the same closed-loop pod creators run
//! as three identities in turn, round after round, each round starting with the next identity
//! (a Latin square: each identity runs first, second and third equally often), so the store's
//! growth and other drift hit all three alike:
//! - the administrator (`system:masters`: authorized without reading a role, as in
//!   kube-apiserver): the baseline;
//! - a token-file user in a group bound to `edit` by a ClusterRoleBinding: RBAC evaluated on
//!   every request;
//! - a token kept in the store (`keelson ctl token create`) for a user of that group: its
//!   secret's hash checked too.
//!
//! Then `SelfSubjectAccessReview`s over HTTP, one at a time, and `kubectl auth can-i create
//! pods` as a process (what a person waits for).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keelson_chaos::Cluster;
use serde_json::{json, Value};

use super::api::{creates_by, Creator};
use super::harness::{cpu_secs, loadavg};
use super::{keelson_bin, pct_ms, table, BenchArgs, Level, MEMBERS};

const ADMIN: &str = "bench-admin-token";
/// The token-file user bound to `edit` through its group.
const EDITOR: &str = "bench-editor-token,editor,editor,editors";
const EDITOR_TOKEN: &str = "bench-editor-token";

/// One measured window.
pub struct Window {
    pub identity: usize,
    pub level: Level,
    /// CPU seconds of the three masters together over the window.
    pub masters_cpu: f64,
}

/// Mean seconds per request of one label of the masters' authentication or authorization
/// histogram, over the whole phase, and the requests it counts.
pub struct Timing {
    pub label: String,
    pub mean: f64,
    pub count: f64,
}

/// Results of the authz-cost phase.
pub struct AuthzCost {
    pub windows: Vec<Window>,
    /// `POST .../selfsubjectaccessreviews` as the editor, sequential.
    pub reviews: Vec<Duration>,
    /// `kubectl auth can-i create pods` runs (empty without kubectl).
    pub can_i: Vec<Duration>,
    /// The masters' own timing of authentication (by method) and authorization (by decider).
    pub authentication: Vec<Timing>,
    pub authorization: Vec<Timing>,
    pub load_before: String,
    pub load_after: String,
}

/// The identities, in the order of each round: (label, how it is authorized).
pub const IDENTITIES: [(&str, &str); 3] = [
    (
        "admin (token file, `system:masters`)",
        "none: the privileged group",
    ),
    (
        "editor (token file, group bound to `edit`)",
        "RBAC: ClusterRoleBinding → ClusterRole",
    ),
    (
        "stored token (`keelson ctl token`, same group)",
        "SHA-256 of the secret, then RBAC",
    ),
];

/// Phase `authz-cost`.
pub async fn authz_cost(args: &BenchArgs) -> anyhow::Result<AuthzCost> {
    let duration = Duration::from_secs(args.duration_secs);
    let clients = args.api_clients;
    eprintln!(
        "bench: authz-cost: {clients} pod creators, {} rounds of {} s per identity",
        args.metrics_rounds, args.duration_secs
    );
    let bin = keelson_bin()?;
    let heartbeat = args.raft_heartbeat_ms.to_string();
    let election = args.raft_election_ms.to_string();
    let cluster = Cluster::start_with_users(
        &bin,
        MEMBERS as u64,
        ADMIN,
        &[EDITOR],
        &[
            "--heartbeat-ms",
            &heartbeat,
            "--election-timeout-ms",
            &election,
        ],
    )
    .await;
    let leader = cluster
        .wait_leader(Duration::from_secs(60))
        .await
        .context("no leader")?;
    let http = cluster.client_builder().build()?;
    let base = cluster.url(leader);
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bench-editors"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "editors"}],
    });
    let resp = http
        .post(format!(
            "{base}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
        ))
        .bearer_auth(ADMIN)
        .json(&binding)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("bind edit: {} {}", resp.status(), resp.text().await?);
    }
    let stored = stored_token(&bin, &cluster, leader)?;
    let tokens = [ADMIN.to_string(), EDITOR_TOKEN.to_string(), stored];
    for token in &tokens {
        until_allowed(&http, &base, token).await?;
    }
    let ca = cluster
        .ca_pem()
        .context("a cluster serving HTTPS")?
        .to_vec();
    let load_before = loadavg();
    let mut windows = Vec::new();
    for round in 0..args.metrics_rounds {
        for step in 0..tokens.len() {
            let identity = (round + step) % tokens.len();
            let token = &tokens[identity];
            let who = Creator {
                ca_pem: Some(ca.clone()),
                token: Some(token.clone()),
                prefix: format!("authz-{round}-{identity}"),
            };
            let pids: Vec<u32> = (1..=MEMBERS as u64)
                .filter_map(|id| cluster.pid(id))
                .collect();
            let cpu = || pids.iter().filter_map(|p| cpu_secs(*p)).sum::<f64>();
            let c0 = cpu();
            let level = creates_by(&cluster, &who, clients, duration).await;
            let masters_cpu = cpu() - c0;
            eprintln!(
                "bench: authz-cost: round {} {}: {:.0} creates/s",
                round + 1,
                IDENTITIES[identity].0,
                level.ops_per_sec
            );
            windows.push(Window {
                identity,
                level,
                masters_cpu,
            });
        }
    }
    let scraped = scrape(&http, &cluster).await?;
    let authentication = timings(
        &scraped,
        "keelson_api_authentication_duration_seconds",
        "method",
    );
    let authorization = timings(
        &scraped,
        "keelson_api_authorization_duration_seconds",
        "decider",
    );
    let reviews = reviews(&http, &base, 200).await?;
    let can_i = can_i(&cluster, leader, 20)?;
    let load_after = loadavg();
    Ok(AuthzCost {
        windows,
        reviews,
        can_i,
        authentication,
        authorization,
        load_before,
        load_after,
    })
}

/// Every master's `/metrics`, as the administrator.
async fn scrape(http: &reqwest::Client, cluster: &Cluster) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for id in 1..=MEMBERS as u64 {
        let text = http
            .get(format!("{}/metrics", cluster.url(id)))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        out.push(text);
    }
    Ok(out)
}

/// Per value of `label`, the mean of histogram `name` summed over every master's text.
fn timings(texts: &[String], name: &str, label: &str) -> Vec<Timing> {
    let mut sums: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    let prefix = format!("{{{label}=\"");
    for line in texts.iter().flat_map(|t| t.lines()) {
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s, v.parse::<f64>().unwrap_or(0.0)),
            None => continue,
        };
        let (is_sum, rest) = if let Some(r) = series.strip_prefix(&format!("{name}_sum")) {
            (true, r)
        } else if let Some(r) = series.strip_prefix(&format!("{name}_count")) {
            (false, r)
        } else {
            continue;
        };
        let Some(v) = rest.strip_prefix(&prefix).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let e = sums.entry(v.to_string()).or_default();
        if is_sum {
            e.0 += value;
        } else {
            e.1 += value;
        }
    }
    sums.into_iter()
        .map(|(label, (sum, count))| Timing {
            label,
            mean: sum / count.max(1.0),
            count,
        })
        .collect()
}

/// A token for `stored` in `editors`, made by `keelson ctl token create` (the secret drawn and
/// hashed as a person's would be).
fn stored_token(bin: &Path, cluster: &Cluster, via: u64) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["ctl", "--server", &cluster.url(via), "--token", ADMIN])
        .arg("--certificate-authority")
        .arg(cluster.root().join("ca.crt"))
        .args(["token", "create", "--user", "stored", "--group", "editors"])
        .stdin(Stdio::null())
        .output()
        .context("run keelson ctl token create")?;
    if !out.status.success() {
        bail!(
            "keelson ctl token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Whether `token`'s user may create pods in `default`, by a `SelfSubjectAccessReview`.
async fn may_create(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<bool> {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}}});
    let v: Value = http
        .post(format!(
            "{base}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        ))
        .bearer_auth(token)
        .json(&review)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["status"]["allowed"] == true)
}

/// Waits (up to 60 s) until `token`'s user may create pods (the default roles come with the
/// leader, the binding through the informers).
async fn until_allowed(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !may_create(http, base, token).await.unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("an identity still may not create pods after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `n` sequential reviews as the editor; their latencies, sorted.
async fn reviews(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let allowed = may_create(http, base, EDITOR_TOKEN).await?;
        out.push(t.elapsed());
        if !allowed {
            bail!("the editor may not create pods");
        }
    }
    out.sort();
    Ok(out)
}

/// `n` runs of `kubectl auth can-i create pods` as the editor; empty without kubectl.
fn can_i(cluster: &Cluster, via: u64, n: usize) -> anyhow::Result<Vec<Duration>> {
    let present = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("bench: authz-cost: kubectl not found; no `kubectl auth can-i` figures");
        return Ok(Vec::new());
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&config, via, EDITOR_TOKEN);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let o = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&config)
            .args(["auth", "can-i", "create", "pods"])
            .stdin(Stdio::null())
            .output()
            .context("run kubectl")?;
        out.push(t.elapsed());
        if String::from_utf8_lossy(&o.stdout).trim() != "yes" {
            bail!(
                "kubectl auth can-i create pods: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    out.sort();
    Ok(out)
}

/// The authz-cost section.
pub fn render_authz_cost(args: &BenchArgs, r: &AuthzCost) -> String {
    let header = [
        "identity",
        "authorization",
        "creates/s (mean of rounds)",
        "p50 ms",
        "p99 ms",
        "errors",
        "vs admin",
        "masters' CPU ms per create",
    ]
    .map(String::from);
    let mean = |i: usize| {
        let v: Vec<f64> = (r.windows.iter())
            .filter(|w| w.identity == i)
            .map(|w| w.level.ops_per_sec)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let pooled = |i: usize| {
        let mut lat: Vec<Duration> = (r.windows.iter())
            .filter(|w| w.identity == i)
            .flat_map(|w| w.level.latencies.iter().copied())
            .collect();
        lat.sort();
        let errors: usize = (r.windows.iter())
            .filter(|w| w.identity == i)
            .map(|w| w.level.errors)
            .sum();
        (lat, errors)
    };
    // The creators run from the start of the warm-up second to the window's end.
    let window = args.duration_secs as f64 + 1.0;
    let cpu_per_create = |i: usize| {
        let (cpu, creates) = (r.windows.iter())
            .filter(|w| w.identity == i)
            .fold((0.0, 0.0), |(c, n), w| {
                (c + w.masters_cpu, n + w.level.ops_per_sec * window)
            });
        cpu / creates.max(1.0)
    };
    let baseline = mean(0);
    let rows: Vec<Vec<String>> = IDENTITIES
        .iter()
        .enumerate()
        .map(|(i, (who, how))| {
            let (lat, errors) = pooled(i);
            let m = mean(i);
            vec![
                who.to_string(),
                how.to_string(),
                format!("{m:.0}"),
                format!("{:.1}", pct_ms(&lat, 0.5)),
                format!("{:.1}", pct_ms(&lat, 0.99)),
                errors.to_string(),
                if i == 0 {
                    "—".into()
                } else {
                    format!("{:+.1} %", (m / baseline - 1.0) * 100.0)
                },
                format!("{:.2}", cpu_per_create(i) * 1000.0),
            ]
        })
        .collect();
    let per_round: Vec<String> = r
        .windows
        .chunks(IDENTITIES.len())
        .enumerate()
        .map(|(round, ws)| {
            let v: Vec<String> = ws
                .iter()
                .map(|w| format!("{} {:.0}", w.identity + 1, w.level.ops_per_sec))
                .collect();
            format!("round {}: {}", round + 1, v.join(", "))
        })
        .collect();
    // What the masters themselves measured: mean time per request of each step.
    let mean_of = |timings: &[Timing], label: &str| {
        timings
            .iter()
            .find(|t| t.label == label)
            .map_or((f64::NAN, 0.0), |t| (t.mean, t.count))
    };
    let cpu_all = {
        let cpu: f64 = r.windows.iter().map(|w| w.masters_cpu).sum();
        let n: f64 = r.windows.iter().map(|w| w.level.ops_per_sec * window).sum();
        cpu / n.max(1.0)
    };
    let step_header = [
        "identity",
        "authentication µs (mean)",
        "authorization µs (mean)",
        "together, share of the masters' CPU per create",
    ]
    .map(String::from);
    let steps = [
        ("token-file", "masters"),
        ("token-file", "rbac"),
        ("stored-token", "rbac"),
    ];
    let step_rows: Vec<Vec<String>> = IDENTITIES
        .iter()
        .zip(steps)
        .map(|((who, _), (method, decider))| {
            let ((a, na), (z, nz)) = (
                mean_of(&r.authentication, method),
                mean_of(&r.authorization, decider),
            );
            vec![
                who.to_string(),
                format!("{:.1} ({method}, {na:.0} requests)", a * 1e6),
                format!("{:.1} ({decider}, {nz:.0} requests)", z * 1e6),
                format!("{:.2} %", (a + z) / cpu_all * 100.0),
            ]
        })
        .collect();
    let latency_header = ["request", "p50 ms", "p90 ms", "max ms", "runs"].map(String::from);
    let mut latency_rows = vec![vec![
        "`POST selfsubjectaccessreviews` (HTTP, one at a time)".to_string(),
        format!("{:.1}", pct_ms(&r.reviews, 0.5)),
        format!("{:.1}", pct_ms(&r.reviews, 0.9)),
        format!("{:.1}", pct_ms(&r.reviews, 1.0)),
        r.reviews.len().to_string(),
    ]];
    if !r.can_i.is_empty() {
        latency_rows.push(vec![
            "`kubectl auth can-i create pods` (a process)".to_string(),
            format!("{:.0}", pct_ms(&r.can_i, 0.5)),
            format!("{:.0}", pct_ms(&r.can_i, 0.9)),
            format!("{:.0}", pct_ms(&r.can_i, 1.0)),
            r.can_i.len().to_string(),
        ]);
    }
    format!(
        "## Authorization on pod creates (`--only authz-cost`)\n\n\
         One 3-master cluster serving HTTPS with a token file; {} closed-loop clients create \
         pods for {} s as each identity in turn, {} rounds, each starting with the next identity \
         so that the store's growth weighs on all alike (creates/s per window, identities \
         numbered as the table's rows, in the order run: {}). The administrator is authorized without reading a role (`system:masters`), \
         the others by RBAC over the informers. Throughput varies by ±20 % from one window to \
         the next on this 2-core machine (the load generator shares it), more than \
         authorization can weigh, so \"vs admin\" is mostly that noise; the masters' own timing \
         of each step, below, is the measure of what authorization costs. Load average before: \
         {}; after: {}.\n\n{}\
         Time the masters spent authenticating and authorizing each request, from their \
         histograms (`keelson_api_authentication_duration_seconds`, \
         `keelson_api_authorization_duration_seconds`, every request of the phase), against \
         the masters' CPU per create over all windows ({:.2} ms):\n\n{}\
         `kubectl auth can-i` as a user of that group (the review is answered by the master \
         from its informers, without a Raft round):\n\n{}",
        args.api_clients,
        args.duration_secs,
        args.metrics_rounds,
        per_round.join("; "),
        r.load_before,
        r.load_after,
        table(&header, &rows),
        cpu_all * 1000.0,
        table(&step_header, &step_rows),
        table(&latency_header, &latency_rows),
    )
}
