//! The observability surface against real Prometheus tools (Debian's `prometheus` package:
//! `prometheus` and `promtool`): the metrics of a master and of an agent pass `promtool check
//! metrics`, the shipped alerting rules and the configuration `keelson up` generates pass
//! `promtool check`, and a real Prometheus scraping a `keelson up` cluster sees exactly one
//! leader before and after the leader is SIGKILLed.
//!
//! Without the tools the tests print why and pass, unless `CI` is set: then they fail.

mod common;

use common::eventually;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

/// The path of `name` on PATH; `None` (after printing why) when it is missing outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("`{name}` is not installed (Debian package `prometheus`), and CI is set");
        }
        eprintln!("skipped: `{name}` is not installed (apt-get install prometheus)");
    }
    found
}

/// A loopback address of its own for each test, so tests and a developer's cluster can run
/// side by side with the default ports.
fn test_host(slot: u32) -> String {
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        90 + slot,
        (pid / 250) % 250 + 1,
        pid % 250 + 1
    )
}

fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child stopped with SIGTERM (then SIGKILL after 15 s) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `keelson up` cluster of 3 masters and 2 hollow agents, ready.
struct UpCluster {
    dir: tempfile::TempDir,
    _up: Proc,
    file: Value,
    token: String,
    http: reqwest::Client,
}

impl UpCluster {
    async fn start(host: &str) -> UpCluster {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let data = dir.path().join("data");
        let up = Command::new(BIN)
            .args(["up", "--agents", "2", "--runtime", "hollow", "--host", host])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let up = Proc(up);
        let file: Value = eventually(Duration::from_secs(30), "cluster.json", || {
            let path = data.join("cluster.json");
            async move {
                let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
                (v["agents"].as_array()?.len() == 2).then_some(v)
            }
        })
        .await;
        let token = std::fs::read_to_string(data.join("tokens.csv")).unwrap();
        let token = token.split(',').next().unwrap().trim().to_string();
        // The masters serve HTTPS with a certificate of the cluster's CA.
        let ca = std::fs::read(data.join("ca.crt")).unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let c = UpCluster {
            dir,
            _up: up,
            file,
            token,
            http,
        };
        eventually(Duration::from_secs(60), "a leader", || c.leader()).await;
        for a in c.file["agents"].as_array().unwrap() {
            let url = format!("{}/readyz", a["api"].as_str().unwrap());
            eventually(Duration::from_secs(60), &format!("{url} ready"), || {
                let req = c.http.get(&url);
                async move { (req.send().await.ok()?.status() == 200).then_some(()) }
            })
            .await;
        }
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn masters(&self) -> Vec<Value> {
        self.file["masters"].as_array().unwrap().clone()
    }

    /// The leader's id, as any live master reports it.
    async fn leader(&self) -> Option<u64> {
        for m in self.masters() {
            let resp = self
                .http
                .get(format!("{}/cluster", m["api"].as_str().unwrap()))
                .bearer_auth(&self.token)
                .send()
                .await;
            if let Ok(resp) = resp {
                if let Ok(v) = resp.json::<Value>().await {
                    if let Some(l) = v["leader"].as_u64() {
                        return Some(l);
                    }
                }
            }
        }
        None
    }

    async fn get_text(&self, url: &str) -> String {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.text().await.unwrap()
    }
}

/// Pipes `text` into `promtool check metrics`; panics with its complaints.
fn promtool_check_metrics(promtool: &Path, what: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on {what}: {}\n{said}",
        out.status
    );
}

fn promtool_check(promtool: &Path, args: &[&str], file: &Path) {
    let out = Command::new(promtool)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} {}: {}\n{}{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_alert_rules_pass_promtool() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    promtool_check(&promtool, &["check", "rules"], &rules);
}

#[test]
fn grafana_dashboard_is_valid_json_on_known_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/keelson.json");
    let d: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for needle in [
        "keelson_raft_is_leader",
        "keelson_raft_term",
        "keelson_raft_committed_index",
        "keelson_raft_applied_index",
        "keelson_raft_leader_changes_total",
        "keelson_raft_proposal_duration_seconds_bucket",
        "keelson_api_requests_total",
        "keelson_api_request_duration_seconds_bucket",
        "keelson_nodes",
        "keelson_node_heartbeats_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no panel shows {needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_metrics_and_the_generated_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let c = UpCluster::start(&test_host(0)).await;
    promtool_check(
        &promtool,
        &["check", "config"],
        &c.data().join("prometheus.yml"),
    );
    let config = std::fs::read_to_string(c.data().join("prometheus.yml")).unwrap();
    assert!(config.contains("job_name: keelson-agents"), "{config}");
    assert!(config.contains("scrape_interval: 1s"), "{config}");
    assert!(config.contains("alerts.yml"), "{config}");

    let master = c.masters()[0]["api"].as_str().unwrap().to_string();
    // A master's metrics need a user allowed to read them: Prometheus's token is
    // (`system:monitoring`), and an anonymous scrape is not.
    let scrape = |token: Option<String>| {
        let mut req = c.http.get(format!("{master}/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(scrape(None).await, 401);
    let prometheus_token = std::fs::read_to_string(c.data().join("prometheus.token")).unwrap();
    // (The leader creates the default roles, system:monitoring's among them, as it starts.)
    eventually(
        Duration::from_secs(30),
        "Prometheus's token reads a master's metrics",
        || {
            let s = scrape(Some(prometheus_token.clone()));
            async move { (s.await == 200).then_some(()) }
        },
    )
    .await;
    assert!(
        config.contains("credentials_file"),
        "Prometheus scrapes the masters with its token: {config}"
    );
    let text = c.get_text(&format!("{master}/metrics")).await;
    assert!(text.contains("keelson_raft_is_leader"), "{text}");
    promtool_check_metrics(&promtool, "a master", &text);

    // A pod bound to node-1, so that its agent has run the runtime and written a status.
    let node = c.file["agents"][0]["name"].as_str().unwrap().to_string();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "metrics-probe", "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    });
    let resp = c
        .http
        .post(format!("{master}/api/v1/namespaces/default/pods"))
        .bearer_auth(&c.token)
        .json(&pod)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "create pod: {}", resp.status());
    let agent = c.file["agents"][0]["api"].as_str().unwrap().to_string();
    let text = eventually(Duration::from_secs(30), "node-1 reports its pod Running", || {
        let c = &c;
        let url = format!("{agent}/metrics");
        async move {
            let t = c.get_text(&url).await;
            let has = |p: &str| t.lines().any(|l| l.starts_with(p) && !l.ends_with(" 0"));
            (has("keelson_agent_heartbeats_sent_total ")
                && has("keelson_agent_pods{phase=\"Running\"} ")
                && has("keelson_agent_pod_status_writes_total{result=\"ok\"} ")
                && has("keelson_agent_runtime_operation_duration_seconds_count{operation=\"desired_status\"} "))
            .then_some(t)
        }
    })
    .await;
    for family in [
        "keelson_agent_heartbeat_connections_total",
        "keelson_agent_heartbeat_connected 1",
        "keelson_agent_pods{phase=\"Running\"}",
        "keelson_agent_pod_status_writes_total",
        "keelson_agent_pod_status_write_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(family),
            "agent metrics lack {family}:\n{text}"
        );
    }
    promtool_check_metrics(&promtool, "an agent", &text);
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(c.get_text(&format!("{agent}{path}")).await.trim(), "ok");
    }
}

/// One instant query; the (labels, value) of each sample.
async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Option<Vec<(Value, f64)>> {
    let v: Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    if v["status"] != "success" {
        return None;
    }
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
        .collect()
}

/// The value of a query that yields one sample.
async fn scalar(http: &reqwest::Client, prom: &str, q: &str) -> Option<f64> {
    match query(http, prom, q).await?.as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_one_leader_before_and_after_a_leader_is_killed() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let host = test_host(1);
    let c = UpCluster::start(&host).await;
    let tsdb = tempfile::tempdir().unwrap();
    let port = free_port(&host);
    let prom = format!("http://{host}:{port}");
    let log = std::fs::File::create(c.dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Proc(
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                c.data().join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", tsdb.path().display()))
            .arg(format!("--web.listen-address={host}:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let targets = c.masters().len() + 2;
    eventually(
        Duration::from_secs(60),
        "up == 1 for every master and agent",
        || async {
            let up = query(&http, &prom, "up").await?;
            (up.len() == targets && up.iter().all(|(_, v)| *v == 1.0)).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "sum(keelson_raft_is_leader) == 1",
        || async {
            (scalar(&http, &prom, "sum(keelson_raft_is_leader)").await? == 1.0).then_some(())
        },
    )
    .await;
    let term = scalar(&http, &prom, "max(keelson_raft_term)")
        .await
        .unwrap();

    let leader = c.leader().await.expect("a leader");
    let victim = c
        .masters()
        .into_iter()
        .find(|m| m["id"].as_u64() == Some(leader))
        .unwrap();
    let pid = victim["pid"].as_u64().unwrap() as i32;
    assert!(pid > 0);
    // SAFETY: the pid of a master `keelson up` started for this test.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "SIGKILL master {leader}"
    );
    let instance = victim["api"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string();

    let survivors = format!("sum(keelson_raft_is_leader{{instance!=\"{instance}\"}})");
    let newer = format!("max(keelson_raft_term{{instance!=\"{instance}\"}}) > {term}");
    eventually(
        Duration::from_secs(60),
        "exactly one leader among the survivors, in a higher term",
        || async {
            let leaders = scalar(&http, &prom, &survivors).await?;
            let risen = scalar(&http, &prom, &newer).await?;
            (leaders == 1.0 && risen > term).then_some(())
        },
    )
    .await;
    // The dead master is down for Prometheus too.
    eventually(
        Duration::from_secs(30),
        "up == 0 for the killed master",
        || async {
            let up = query(&http, &prom, &format!("up{{instance=\"{instance}\"}}")).await?;
            (up.len() == 1 && up[0].1 == 0.0).then_some(())
        },
    )
    .await;
}
