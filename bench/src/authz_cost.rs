//! Phase `authz-cost` of `keelson bench` (issue #17): what authentication and authorization
//! cost on pod creates, and how long `kubectl auth can-i` takes.
//!
//! One 3-master cluster serving HTTPS with a token file; the same closed-loop pod creators run
//! as three identities in turn, round after round, so drift hits all three alike:
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
use super::harness::loadavg;
use super::{keelson_bin, pct_ms, table, BenchArgs, Level, MEMBERS};

const ADMIN: &str = "bench-admin-token";
/// The token-file user bound to `edit` through its group.
const EDITOR: &str = "bench-editor-token,editor,editor,editors";
const EDITOR_TOKEN: &str = "bench-editor-token";

/// One measured window.
pub struct Window {
    pub identity: usize,
    pub level: Level,
}

/// Results of the authz-cost phase.
pub struct AuthzCost {
    pub windows: Vec<Window>,
    /// `POST .../selfsubjectaccessreviews` as the editor, sequential.
    pub reviews: Vec<Duration>,
    /// `kubectl auth can-i create pods` runs (empty without kubectl).
    pub can_i: Vec<Duration>,
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
        for (identity, token) in tokens.iter().enumerate() {
            let who = Creator {
                ca_pem: Some(ca.clone()),
                token: Some(token.clone()),
                prefix: format!("authz-{round}-{identity}"),
            };
            let level = creates_by(&cluster, &who, clients, duration).await;
            eprintln!(
                "bench: authz-cost: round {} {}: {:.0} creates/s",
                round + 1,
                IDENTITIES[identity].0,
                level.ops_per_sec
            );
            windows.push(Window { identity, level });
        }
    }
    let reviews = reviews(&http, &base, 200).await?;
    let can_i = can_i(&cluster, leader, 20)?;
    let load_after = loadavg();
    Ok(AuthzCost {
        windows,
        reviews,
        can_i,
        load_before,
        load_after,
    })
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
                .map(|w| format!("{:.0}", w.level.ops_per_sec))
                .collect();
            format!("round {}: {}", round + 1, v.join(" / "))
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
         pods for {} s as each identity in turn, {} rounds (creates/s per round, in the table's \
         order: {}). The administrator is authorized without reading a role (`system:masters`), \
         the others by RBAC over the informers; \"vs admin\" is the cost of authorization. \
         Load average before: {}; after: {}.\n\n{}\
         `kubectl auth can-i` as a user of that group (the review is answered by the master \
         from its informers, without a Raft round):\n\n{}",
        args.api_clients,
        args.duration_secs,
        args.metrics_rounds,
        per_round.join("; "),
        r.load_before,
        r.load_after,
        table(&header, &rows),
        table(&latency_header, &latency_rows),
    )
}
