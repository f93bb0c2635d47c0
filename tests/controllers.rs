//! The leader's control loops on real masters with hollow agents: the seed's controller,
//! scaling, a leader killed mid-scale-up, a node that stops heartbeating, an unschedulable pod,
//! endpoints that follow pods.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use common::{eventually, Api};
use keelson_chaos::Cluster;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const FAST: &[&str] = &["--node-grace-ms", "3000", "--pod-eviction-ms", "1000"];

struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `n` nodes report Ready.
async fn ready_nodes(api: &Api, n: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} Ready nodes"),
        || async {
            let nodes = api.items("/api/v1/nodes").await;
            let ready = nodes
                .iter()
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            (ready == n).then_some(())
        },
    )
    .await;
}

fn agent(c: &Cluster, name: &str, cpu: &str) -> Agent {
    let masters: Vec<String> = c.ids().iter().map(|id| c.url(*id)).collect();
    let log = std::fs::File::create(c.root().join(format!("agent-{name}.log"))).unwrap();
    let child = Command::new(BIN)
        .args([
            "agent",
            "--runtime",
            "hollow",
            "--name",
            name,
            "--cpu",
            cpu,
            "--memory",
            "8Gi",
            "--heartbeat-ms",
            "200",
        ])
        .args(["--masters", &masters.join(",")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent { child }
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/seed/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Running pods with the seed's label, and the nodes they are on.
async fn running_pods(api: &Api, selector: &str) -> Vec<(String, String)> {
    api.items(&format!(
        "/api/v1/namespaces/default/pods?labelSelector={selector}"
    ))
    .await
    .iter()
    .filter(|p| p["status"]["phase"] == "Running")
    .map(|p| {
        (
            p["metadata"]["name"].as_str().unwrap().to_string(),
            p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
        )
    })
    .collect()
}

async fn exactly_running(api: &Api, selector: &str, n: usize) -> Vec<(String, String)> {
    eventually(
        Duration::from_secs(30),
        &format!("exactly {n} running pods for {selector}"),
        || async {
            let all = api
                .items(&format!(
                    "/api/v1/namespaces/default/pods?labelSelector={selector}"
                ))
                .await;
            let running = running_pods(api, selector).await;
            (all.len() == n && running.len() == n).then_some(running)
        },
    )
    .await
}

async fn scale(api: &Api, rc: &str, n: i64) {
    let (code, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/default/replicationcontrollers/{rc}/scale"),
            Some(&json!({"spec": {"replicas": n}})),
        )
        .await;
    assert_eq!(code, 200, "scale: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_controller_spreads_scales_and_its_endpoints_follow() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, FAST);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let _a = agent(&c, "node-a", "4");
    let _b = agent(&c, "node-b", "4");
    let api = Api::of(&c);
    ready_nodes(&api, 2).await;
    for (path, file) in [
        ("replicationControllers", "replication-controller.json"),
        ("services", "service.json"),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1beta1/{path}", c.url(1)))
            .body(seed(file))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let pods = exactly_running(&api, "name%3Dmysite", 2).await;
    let nodes: BTreeSet<&String> = pods.iter().map(|(_, n)| n).collect();
    assert_eq!(nodes.len(), 2, "spread across both nodes: {pods:?}");
    // currentState.replicas in v1beta1 follows.
    eventually(
        Duration::from_secs(20),
        "currentState.replicas = 2",
        || async {
            let (_, rc) = api
                .call(
                    "GET",
                    "/api/v1beta1/replicationControllers/mysiteController",
                    None,
                )
                .await;
            (rc["currentState"]["replicas"] == 2).then_some(())
        },
    )
    .await;
    // The endpoints of the seed's service: both pods, on the first container port.
    eventually(
        Duration::from_secs(20),
        "endpoints with both pods on port 80",
        || async {
            let (_, ep) = api
                .call("GET", "/api/v1/namespaces/default/endpoints/mysite", None)
                .await;
            let addrs = ep["subsets"][0]["addresses"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            (addrs == 2 && ep["subsets"][0]["ports"][0]["port"] == 80).then_some(())
        },
    )
    .await;
    scale(&api, "mysiteController", 5).await;
    exactly_running(&api, "name%3Dmysite", 5).await;
    scale(&api, "mysiteController", 1).await;
    let left = exactly_running(&api, "name%3Dmysite", 1).await;
    eventually(
        Duration::from_secs(20),
        "endpoints follow the scale-down",
        || async {
            let (_, ep) = api
                .call("GET", "/api/v1/namespaces/default/endpoints/mysite", None)
                .await;
            let addrs = ep["subsets"][0]["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (addrs.len() == 1 && addrs[0]["targetRef"]["name"] == left[0].0.as_str()).then_some(())
        },
    )
    .await;
    // Events a user would look for.
    let events = api.items("/api/v1/namespaces/default/events").await;
    let reasons: BTreeSet<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    for r in ["Scheduled", "SuccessfulCreate", "SuccessfulDelete"] {
        assert!(reasons.contains(r), "event {r} in {reasons:?}");
    }
    // Deleting a controller with propagationPolicy=Orphan leaves its pods.
    let orphan_rc = json!({"metadata": {"name": "keep"}, "spec": {"replicas": 2, "selector": {"app": "keep"},
                          "template": {"metadata": {"labels": {"app": "keep"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/namespaces/default/replicationcontrollers",
            Some(&orphan_rc)
        )
        .await
        .0,
        201
    );
    exactly_running(&api, "app%3Dkeep", 2).await;
    let (code, _) = api
        .call(
            "DELETE",
            "/api/v1/namespaces/default/replicationcontrollers/keep",
            Some(&json!({"propagationPolicy": "Orphan"})),
        )
        .await;
    assert_eq!(code, 200);
    let orphans = api
        .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dkeep")
        .await;
    assert_eq!(orphans.len(), 2);
    assert!(
        orphans.iter().all(|p| p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())),
        "orphans keep no owner"
    );
    // Deleting the controller (default policy) deletes its pods.
    let (code, _) = api
        .call(
            "DELETE",
            "/api/v1/namespaces/default/replicationcontrollers/mysiteController",
            None,
        )
        .await;
    assert_eq!(code, 200);
    eventually(
        Duration::from_secs(20),
        "the controller's pods are gone",
        || async {
            api.items("/api/v1/namespaces/default/pods?labelSelector=name%3Dmysite")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_scale_up_ends_with_exactly_fifty_pods_bound_once() {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, FAST);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let _a = agent(&c, "node-a", "64");
    let _b = agent(&c, "node-b", "64");
    let api = Api::of(&c);
    let rc = json!({"metadata": {"name": "big"}, "spec": {"replicas": 0, "selector": {"app": "big"},
                    "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]}}}});
    let (code, _) = api
        .call(
            "POST",
            "/api/v1/namespaces/default/replicationcontrollers",
            Some(&rc),
        )
        .await;
    assert_eq!(code, 201);
    // Record every binding seen by a watch from here: a pod's node must never change.
    let start_rv = api
        .call("GET", "/api/v1/namespaces/default/pods", None)
        .await
        .1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    scale(&api, "big", 50).await;
    let leader = c
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    c.kill(leader);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("a new leader");
    let api = Api::of(&c);
    exactly_running(&api, "app%3Dbig", 50).await;
    // Replay the history of pod changes on a surviving master.
    let survivor = c.running()[0];
    let resp = reqwest::get(format!(
        "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={start_rv}&timeoutSeconds=2",
        c.url(survivor)
    ))
    .await
    .unwrap();
    let text = resp.text().await.unwrap();
    let mut bound: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let ev: Value = serde_json::from_str(line).unwrap();
        assert_ne!(ev["type"], "ERROR", "{ev}");
        let name = ev["object"]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(node) = ev["object"]["spec"]["nodeName"].as_str() {
            if let Some(before) = bound.insert(name.clone(), node.to_string()) {
                assert_eq!(before, node, "pod {name} bound twice");
            }
        }
    }
    assert!(bound.len() >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_not_ready_and_its_pods_move() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, FAST);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let a = agent(&c, "node-a", "4");
    let _b = agent(&c, "node-b", "4");
    let api = Api::of(&c);
    // Both Ready before the pods exist: a node Ready alone would take them all.
    ready_nodes(&api, 2).await;
    let rc = json!({"metadata": {"name": "web"}, "spec": {"replicas": 4, "selector": {"app": "web"},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/namespaces/default/replicationcontrollers",
            Some(&rc)
        )
        .await
        .0,
        201
    );
    let pods = exactly_running(&api, "app%3Dweb", 4).await;
    assert!(pods.iter().any(|(_, n)| n == "node-a"));
    drop(a); // SIGKILL: node-a stops heartbeating.
    eventually(Duration::from_secs(30), "node-a NotReady", || async {
        let (_, n) = api.call("GET", "/api/v1/nodes/node-a", None).await;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] != "True")
            .then_some(())
    })
    .await;
    let moved = eventually(
        Duration::from_secs(30),
        "4 running pods, all on node-b",
        || async {
            let running = running_pods(&api, "app%3Dweb").await;
            let all = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await;
            (all.len() == 4 && running.len() == 4 && running.iter().all(|(_, n)| n == "node-b"))
                .then_some(running)
        },
    )
    .await;
    assert_eq!(moved.len(), 4);
    let events = api
        .items("/api/v1/namespaces/default/events?fieldSelector=reason%3DNodeNotReady")
        .await;
    assert!(!events.is_empty(), "a NodeNotReady event");
    // The node comes back: Ready again, and the controller holds its exact count.
    let _a2 = agent(&c, "node-a", "4");
    eventually(Duration::from_secs(30), "node-a Ready again", || async {
        let (_, n) = api.call("GET", "/api/v1/nodes/node-a", None).await;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    })
    .await;
    exactly_running(&api, "app%3Dweb", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_for_every_node_waits_for_a_big_enough_node() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, FAST);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let _a = agent(&c, "small", "2");
    let api = Api::of(&c);
    ready_nodes(&api, 1).await;
    let pod = json!({"metadata": {"name": "huge"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "16"}}}]}});
    assert_eq!(
        api.call("POST", "/api/v1/namespaces/default/pods", Some(&pod))
            .await
            .0,
        201
    );
    let message = eventually(Duration::from_secs(30), "FailedScheduling event", || async {
        let events = api.items("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dhuge,reason%3DFailedScheduling").await;
        events.iter().filter_map(|e| e["message"].as_str()).find(|m| m.contains("Insufficient cpu")).map(str::to_string)
    })
    .await;
    assert!(message.contains("Insufficient cpu"), "{message}");
    let (_, p) = api
        .call("GET", "/api/v1/namespaces/default/pods/huge", None)
        .await;
    assert_eq!(p["status"]["phase"], "Pending");
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    let _big = agent(&c, "big", "32");
    eventually(Duration::from_secs(30), "huge scheduled on big", || async {
        let (_, p) = api
            .call("GET", "/api/v1/namespaces/default/pods/huge", None)
            .await;
        (p["spec"]["nodeName"] == "big" && p["status"]["phase"] == "Running").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_deleted_after_their_ttl() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &["--event-ttl-secs", "1"]);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let api = Api::of(&c);
    let rc = json!({"metadata": {"name": "ttl"}, "spec": {"replicas": 1, "selector": {"app": "ttl"},
                    "template": {"metadata": {"labels": {"app": "ttl"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let (code, v) = api
        .call(
            "POST",
            "/api/v1/namespaces/default/replicationcontrollers",
            Some(&rc),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let name = eventually(
        Duration::from_secs(30),
        "a SuccessfulCreate event",
        || async {
            api.items("/api/v1/namespaces/default/events")
                .await
                .iter()
                .find(|e| e["reason"] == "SuccessfulCreate")
                .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the event collected", || async {
        let (code, _) = api
            .call(
                "GET",
                &format!("/api/v1/namespaces/default/events/{name}"),
                None,
            )
            .await;
        (code == 404).then_some(())
    })
    .await;
}

/// The schemathesis finding: a controller of `replicas: 2147483647` made one pass build two
/// billion pods in memory, and the master ran out of memory. Passes are bounded now: pods come
/// in bursts, the masters keep answering, and scaling down to 0 ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_replica_count_is_worked_off_in_bursts() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let api = Api::of(&c);
    let rc = json!({"metadata": {"name": "huge"}, "spec": {"replicas": 2147483647, "selector": {"app": "huge"},
                    "template": {"metadata": {"labels": {"app": "huge"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let (code, v) = api.call("POST", rcs, Some(&rc)).await;
    assert_eq!(code, 201, "{v}");
    let pods = "/api/v1/namespaces/default/pods?labelSelector=app%3Dhuge";
    eventually(Duration::from_secs(60), "a first burst of pods", || async {
        (api.items(pods).await.len() >= 500).then_some(())
    })
    .await;
    scale(&api, "huge", 0).await;
    eventually(Duration::from_secs(120), "every pod gone", || async {
        api.items(pods).await.is_empty().then_some(())
    })
    .await;
    // Every master answered throughout, and still does.
    for id in c.ids() {
        assert!(
            c.is_running(id),
            "master {id} died:\n{}",
            c.log_tail(id, 20)
        );
    }
}

/// Issue #14: a burst of big writes kept the quorum live-locked. Ten replication controllers of
/// 600 replicas each (pods with a 4 KiB annotation), created at once: the first pass of the
/// replication loop creates 5,000 pods and their events, about 30 MB, which was one log entry —
/// an append no follower could take within the RPC timeout (the heartbeat interval), so
/// heartbeats waited behind it, followers campaigned, and each new leader inherited the same
/// entry. Without the bounds this test saw 30 terms in 25 s. Now the loop's writes are packed
/// into entries of at most 512 KiB and appends carry at most 1 MiB: the same leader, in the same
/// term, sees every pod created. (Tests never fail on timing: the deadline is generous; the
/// assertion is that leadership never moved.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_thousands_of_pods_keeps_one_leader() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    let leader = c
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let api = Api::of(&c);

    // Every 50 ms, every master's view: (term, leader) as it reports them.
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = c.ids().iter().map(|id| c.url(*id)).collect();
    let monitor = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    let status: Option<Value> =
                        match http.get(format!("{url}/cluster")).send().await {
                            Ok(r) => r.json().await.ok(),
                            Err(_) => None,
                        };
                    if let Some(s) = status {
                        seen.insert((s["term"].as_u64(), s["leader"].as_u64()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };

    const RCS: usize = 10;
    const REPLICAS: u64 = 600;
    let creates = (0..RCS).map(|i| {
        let api = &api;
        async move {
            let rc = json!({"metadata": {"name": format!("burst-{i}")}, "spec": {"replicas": REPLICAS,
                "selector": {"app": format!("burst-{i}")},
                "template": {"metadata": {"labels": {"app": format!("burst-{i}")},
                    "annotations": {"note": "n".repeat(4096)}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}});
            let (code, body) = api
                .call(
                    "POST",
                    "/api/v1/namespaces/default/replicationcontrollers",
                    Some(&rc),
                )
                .await;
            assert_eq!(code, 201, "{body}");
        }
    });
    futures::future::join_all(creates).await;

    eventually(
        Duration::from_secs(300),
        "every replica created",
        || async {
            let rcs = api
                .items("/api/v1/namespaces/default/replicationcontrollers")
                .await;
            let created: u64 = rcs
                .iter()
                .filter_map(|rc| rc["status"]["replicas"].as_u64())
                .sum();
            (created == RCS as u64 * REPLICAS).then_some(())
        },
    )
    .await;
    let pods = api.items("/api/v1/namespaces/default/pods").await;
    assert_eq!(pods.len(), RCS * REPLICAS as usize);

    stop.store(true, Ordering::Relaxed);
    let seen = monitor.await.unwrap();
    let terms: BTreeSet<Option<u64>> = seen.iter().map(|(t, _)| *t).collect();
    let leaders: BTreeSet<Option<u64>> = seen.iter().map(|(_, l)| *l).collect();
    assert_eq!(
        leaders,
        BTreeSet::from([Some(leader)]),
        "leadership moved during the burst: {seen:?}\n{}",
        c.log_tail(leader, 40)
    );
    assert_eq!(
        terms.len(),
        1,
        "the term changed during the burst: {seen:?}"
    );
}
