//! Services through each proxy mode, on real Docker agents and real kernel rules (as root): the
//! seed's controller and service verbatim, its port 10000 on every agent answered by every pod;
//! in the kernel mode (nftables) cluster IPs answered from the host and from inside a pod,
//! a service without endpoints refused, the rules following a scale up and down (no new
//! connection to a deleted pod), rebuilt exactly by a restarted agent and gone after a clean
//! stop. Pods join a Docker network of the test's own and cluster IPs come from another one's
//! subnet, so no packet leaves the machine, whether or not a rule catches it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{
    build_images, create_seed, fetch, random_loopback, served_by, Agent, Cleanup, Network,
};
use common::{eventually, node_ready, pod_ready, Api};
use keelson_chaos::Cluster;
use serde_json::{json, Value};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const NS: &str = "/api/v1/namespaces/default";

/// One Docker cluster at a time: two at once on two cores make each slow to start.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The agent's table, as `proxy::nftables::table_name` names it.
fn table_name(cluster: &str, node: &str) -> String {
    let short: String = cluster.chars().take(12).collect();
    format!("keelson-{short}-{node}")
}

/// `nft list table ip NAME`, if the table exists.
fn nft_table(name: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .expect("nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rules in the tables whose names start with `prefix` (every chain's rules and every map or
/// set element), from `nft list ruleset`.
fn rules_in_tables(prefix: &str) -> usize {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut count = 0;
    let mut inside = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("table ") {
            inside = rest
                .split_whitespace()
                .nth(1)
                .is_some_and(|n| n.starts_with(prefix));
            continue;
        }
        let l = line.trim();
        if inside
            && !l.is_empty()
            && !l.starts_with("chain ")
            && !l.starts_with("map ")
            && !l.starts_with("set ")
            && !l.starts_with("type ")
            && l != "}"
        {
            count += 1;
        }
    }
    count
}

/// A listed table as sorted `chain-or-set: rule-or-element` lines: what it holds, whatever the
/// order chains were added or elements stored in (an agent's updates and a rebuild differ there).
fn rules_of(listed: &str) -> Vec<String> {
    let flat = listed.replace(",\n", ", ");
    let mut out = Vec::new();
    let mut within = String::new();
    for line in flat.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("chain ")
            .or_else(|| line.strip_prefix("map "))
            .or_else(|| line.strip_prefix("set "))
        {
            within = name.trim_end_matches(" {").to_string();
        } else if let Some(elements) = line.strip_prefix("elements = { ") {
            let elements = elements.trim_end_matches(" }");
            out.extend(
                elements
                    .split(", ")
                    .map(|e| format!("{within}: {}", e.trim())),
            );
        } else if !line.is_empty() && line != "}" {
            out.push(format!("{within}: {line}"));
        }
    }
    out.sort();
    out
}

/// The DNAT targets of the table (`ip:port`; nft lists `dnat ip to` as `dnat to`).
fn dnat_targets(table: &str) -> BTreeSet<String> {
    table
        .lines()
        .filter_map(|l| l.trim().split("dnat to ").nth(1))
        .map(|t| t.trim().to_string())
        .collect()
}

/// A test cluster: one master, two Docker agents in `mode`, pods on a network of the test's.
struct Env {
    cluster: Cluster,
    api: Api,
    agents: Vec<Agent>,
    http: reqwest::Client,
    _cleanup: Cleanup,
    // Dropped last: after the containers.
    _pods: Network,
    _services: Network,
}

impl Drop for Env {
    /// A failed test's agents are killed, which leaves their tables: removed here.
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        for a in &self.agents {
            let _ = Command::new("nft")
                .args([
                    "delete",
                    "table",
                    "ip",
                    &table_name(&self.cluster.cluster_id, &a.name),
                ])
                .output();
        }
    }
}

impl Env {
    async fn start(mode: &str) -> Env {
        build_images();
        let pods = Network::create("pods");
        let services = Network::create("svc");
        let cluster = Cluster::start(
            std::path::Path::new(BIN),
            1,
            &["--service-cluster-ip-range", &services.subnet],
        );
        cluster
            .wait_leader(Duration::from_secs(30))
            .await
            .expect("leader");
        let cleanup = Cleanup(format!("io.keelson.cluster={}", cluster.cluster_id));
        let [x, y, _] = random_loopback();
        let extra = ["--proxy-mode", mode, "--pod-network", &pods.name];
        let agents = vec![
            Agent::start(&cluster, "svc-a", &format!("127.{x}.{y}.31"), &extra),
            Agent::start(&cluster, "svc-b", &format!("127.{x}.{y}.32"), &extra),
        ];
        let api = Api::of(&cluster);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        eventually(Duration::from_secs(60), "two Ready nodes", || async {
            let nodes = api.items("/api/v1/nodes").await;
            (nodes.iter().filter(|n| node_ready(n)).count() == 2).then_some(())
        })
        .await;
        Env {
            cluster,
            api,
            agents,
            http,
            _cleanup: cleanup,
            _pods: pods,
            _services: services,
        }
    }

    /// Waits for `n` Ready mysite pods, listed by the service's endpoints: their names.
    async fn ready_pods(&self, n: usize) -> BTreeSet<String> {
        let api = &self.api;
        eventually(
            Duration::from_secs(90),
            &format!("{n} mysite pods Ready and in the endpoints"),
            || async move {
                let pods = api
                    .items(&format!("{NS}/pods?labelSelector=name%3Dmysite"))
                    .await;
                let live: Vec<&Value> = pods
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                let (_, ep) = api
                    .call("GET", &format!("{NS}/endpoints/mysite"), None)
                    .await;
                let listed = ep["subsets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                    .count();
                (pods.len() == n && live.iter().all(|p| pod_ready(p)) && listed == n).then(|| {
                    pods.iter()
                        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                        .collect()
                })
            },
        )
        .await
    }

    /// Who answers `addr:port` over `tries` new connections (pod names), and how many did not.
    async fn answers(&self, addr: &str, port: u16, tries: usize) -> (BTreeSet<String>, usize) {
        let mut by = BTreeSet::new();
        let mut failed = 0;
        for _ in 0..tries {
            match fetch(&self.http, addr, port)
                .await
                .as_deref()
                .and_then(served_by)
            {
                Some(pod) => {
                    by.insert(pod);
                }
                None => failed += 1,
            }
        }
        (by, failed)
    }

    async fn scale(&self, replicas: u64) {
        let (code, v) = self
            .api
            .call(
                "PATCH",
                &format!("{NS}/replicationcontrollers/mysiteController"),
                Some(&json!({"spec": {"replicas": replicas}})),
            )
            .await;
        assert_eq!(code, 200, "scale to {replicas}: {v}");
    }
}

/// What both modes must do with the seed: port 10000 on every agent answered by every pod, the
/// same after a scale up and down, and no new connection to a deleted pod.
async fn seed_through_every_agent(env: &Env) {
    create_seed(&env.api).await;
    let pods = env.ready_pods(2).await;
    for a in &env.agents {
        let (by, _) = eventually(
            Duration::from_secs(30),
            &format!("both pods answer on {}:10000", a.address),
            || async {
                let (by, failed) = env.answers(&a.address, 10000, 12).await;
                (by == pods).then_some((by, failed))
            },
        )
        .await;
        assert_eq!(by, pods);
    }
    // Scale up: the third pod is answered within a short time of being listed.
    env.scale(3).await;
    let three = env.ready_pods(3).await;
    let listed = Instant::now();
    for a in &env.agents {
        eventually(Duration::from_secs(30), "the third pod answers", || async {
            (env.answers(&a.address, 10000, 15).await.0 == three).then_some(())
        })
        .await;
    }
    println!(
        "scale up: every agent served all 3 pods {:?} after the endpoints listed them",
        listed.elapsed()
    );
    // Scale down to one: once the endpoints list one pod, every new connection reaches it.
    env.scale(1).await;
    let one = env.ready_pods(1).await;
    let survivor = one.iter().next().unwrap().clone();
    for a in &env.agents {
        // The agent's caches follow the endpoints within moments; then no connection may go
        // elsewhere.
        eventually(
            Duration::from_secs(10),
            "rules follow the scale down",
            || async { (env.answers(&a.address, 10000, 3).await.0 == one).then_some(()) },
        )
        .await;
        let (by, failed) = env.answers(&a.address, 10000, 40).await;
        assert_eq!(
            by, one,
            "a new connection to {}:10000 went to a pod other than {survivor}",
            a.address
        );
        assert_eq!(failed, 0, "connections to {}:10000 failed", a.address);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_rules_serve_the_seed_cluster_ips_and_follow_the_pods() {
    let _one = SERIAL.lock().await;
    let mut env = Env::start("nftables").await;
    let tables: Vec<String> = env
        .agents
        .iter()
        .map(|a| table_name(&env.cluster.cluster_id, &a.name))
        .collect();
    let prefix = table_name(&env.cluster.cluster_id, "");
    seed_through_every_agent(&env).await;
    env.scale(2).await;
    let pods = env.ready_pods(2).await;

    // DNAT goes to the pods' own IPs and container port, never to a published port.
    let (_, ep) = env
        .api
        .call("GET", &format!("{NS}/endpoints/mysite"), None)
        .await;
    let pod_ips: BTreeSet<String> = ep["subsets"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}:80", a["ip"].as_str().unwrap()))
        .collect();
    assert!(
        pod_ips.iter().all(|t| !t.starts_with("127.")),
        "endpoints at published ports, not pod IPs: {pod_ips:?}"
    );
    for t in &tables {
        eventually(
            Duration::from_secs(10),
            "the rules hold both pods",
            || async { nft_table(t).filter(|text| dnat_targets(text) == pod_ips) },
        )
        .await;
    }

    // The cluster IP, allocated from the range, is answered from the host by both pods.
    let (_, svc) = env
        .api
        .call("GET", &format!("{NS}/services/mysite"), None)
        .await;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (by, failed) = env.answers(&cluster_ip, 10000, 16).await;
    assert_eq!(
        by, pods,
        "{cluster_ip}:10000 from the host ({failed} failed)"
    );
    assert_eq!(failed, 0);

    // ... and from inside a pod, through the same rules (prerouting), itself included.
    let container = {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!(
                "label=io.keelson.cluster={}",
                env.cluster.cluster_id
            ))
            .args(["--filter", "label=io.keelson.container=mysite"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a mysite container")
            .to_string()
    };
    let mut from_pod = BTreeSet::new();
    for _ in 0..12 {
        // busybox's wget crashes in the image's bare root; its nc speaks HTTP/1.0 as well.
        let out = Command::new("docker")
            .args(["exec", &container, "sh", "-c"])
            .arg(format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 10000"
            ))
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let by = served_by(body).unwrap_or_else(|| panic!("HTTP from a pod: {out:?}"));
        from_pod.insert(by);
    }
    assert_eq!(from_pod, pods, "{cluster_ip}:10000 from inside a pod");

    // A service without endpoints is refused at once, on the node and on its cluster IP.
    let lonely = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lonely"},
        "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 10001, "targetPort": 80}]}});
    let (code, v) = env
        .api
        .call("POST", &format!("{NS}/services"), Some(&lonely))
        .await;
    assert_eq!(code, 201, "{v}");
    let lonely_ip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
    for addr in [env.agents[0].address.clone(), lonely_ip] {
        let refused = eventually(Duration::from_secs(10), "refused", || async {
            match tokio::net::TcpStream::connect((addr.as_str(), 10001)).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        });
        let started = Instant::now();
        refused.await;
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    // Metrics: rules per service, last sync.
    let metrics = env
        .http
        .get(format!("http://{}:10250/metrics", env.agents[0].address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rules = metrics
        .lines()
        .find(|l| l.starts_with("keelson_agent_proxy_rules{service=\"default/mysite\"}"))
        .unwrap_or_else(|| panic!("no rules gauge:\n{metrics}"));
    assert!(!rules.ends_with(" 0"), "{rules}");
    assert!(metrics.contains("keelson_agent_proxy_sync_duration_seconds_count"));
    assert!(!metrics.contains("keelson_agent_proxy_last_sync_timestamp_seconds 0\n"));

    // A killed agent leaves its table; started again it rebuilds exactly the same rules.
    let before = rules_of(&nft_table(&tables[0]).expect("table"));
    env.agents[0].kill();
    assert_eq!(
        nft_table(&tables[0]).map(|t| rules_of(&t)),
        Some(before.clone())
    );
    env.agents[0].spawn();
    eventually(
        Duration::from_secs(30),
        "the restarted agent is ready",
        || async { env.agents[0].ready(&env.http).await.then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the same rules rebuilt",
        || async {
            let metrics = env
                .http
                .get(format!("http://{}:10250/metrics", env.agents[0].address))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let synced = metrics.lines().any(|l| {
                l.starts_with("keelson_agent_proxy_sync_duration_seconds_count")
                    && !l.ends_with(" 0")
            });
            (synced && nft_table(&tables[0]).map(|t| rules_of(&t)).as_ref() == Some(&before))
                .then_some(())
        },
    )
    .await;

    // A clean stop (SIGTERM) removes the agent's rules, and only its own.
    let with_both = rules_in_tables(&prefix);
    assert!(with_both > 0);
    let status = env.agents[0].terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(nft_table(&tables[0]), None, "a clean stop left the table");
    assert!(
        nft_table(&tables[1]).is_some(),
        "the other agent's table went too"
    );
    let status = env.agents[1].terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        rules_in_tables(&prefix),
        0,
        "rules left behind after clean stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_userspace_mode_serves_the_same_seed() {
    let _one = SERIAL.lock().await;
    let env = Env::start("userspace").await;
    seed_through_every_agent(&env).await;
    // The userspace mode writes no kernel rule.
    assert_eq!(rules_in_tables(&table_name(&env.cluster.cluster_id, "")), 0);
}
