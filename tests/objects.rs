//! The object API on a real 3-master cluster: the seed's v1beta1 manifests verbatim, core/v1
//! REST, validation (nothing invalid stored), watches, authentication.

use std::time::{Duration, Instant};

use keelson_chaos::Cluster;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(base: String) -> Self {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base,
            token: None,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, "", None).await
    }
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            "POST",
            path,
            "application/json",
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            "PUT",
            path,
            "application/json",
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
    async fn patch(&self, path: &str, ct: &str, body: &Value) -> (u16, Value) {
        self.call("PATCH", path, ct, Some(serde_json::to_vec(body).unwrap()))
            .await
    }
}

/// A cluster serving the API alone: no control loops rewrite what these tests write.
async fn cluster() -> (Cluster, u64, u64) {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &["--no-controllers"]);
    let leader = c
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();
    c.wait_ready(Duration::from_secs(30)).await.unwrap();
    (c, leader, follower)
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/seed/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_manifests_verbatim_on_a_follower_read_in_both_versions() {
    let (c, leader, follower) = cluster().await;
    let f = Api::new(c.url(follower));
    let l = Api::new(c.url(leader));
    for (path, file) in [
        ("pods", "pod.json"),
        ("replicationControllers", "replication-controller.json"),
        ("services", "service.json"),
    ] {
        let (code, body) = f
            .call(
                "POST",
                &format!("/api/v1beta1/{path}"),
                "application/json",
                Some(seed(file)),
            )
            .await;
        assert_eq!(code, 201, "{file}: {body}");
    }
    // v1beta1, read back on the leader.
    let (code, rc) = l
        .get("/api/v1beta1/replicationControllers/mysiteController")
        .await;
    assert_eq!(code, 200, "{rc}");
    assert_eq!(rc["id"], "mysiteController");
    assert_eq!(rc["desiredState"]["replicas"], 2);
    assert_eq!(
        rc["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0]["cpu"],
        100
    );
    let (_, pods) = l.get("/api/v1beta1/pods?labels=name%3Dmysite").await;
    assert_eq!(pods["items"].as_array().unwrap().len(), 1);
    // core/v1, the same objects.
    let (code, rc1) = l
        .get("/api/v1/namespaces/default/replicationcontrollers/mysiteController")
        .await;
    assert_eq!(code, 200, "{rc1}");
    assert_eq!(rc1["kind"], "ReplicationController");
    assert_eq!(rc1["spec"]["replicas"], 2);
    assert_eq!(rc1["spec"]["selector"]["name"], "mysite");
    let (_, pod) = l.get("/api/v1/namespaces/default/pods/mysite").await;
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    let (_, svc) = l.get("/api/v1/namespaces/default/services/mysite").await;
    assert_eq!(svc["spec"]["ports"][0]["port"], 10000);
    assert!(
        svc["spec"]["ports"][0].get("targetPort").is_none(),
        "no containerPort: the first container port is used"
    );
    // Objects created in v1 are readable in v1beta1.
    let (code, _) = l
        .post(
            "/api/v1/namespaces/default/pods",
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "250m"}}}]}}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, beta) = f.get("/api/v1beta1/pods/web").await;
    assert_eq!(code, 200, "{beta}");
    assert_eq!(
        beta["desiredState"]["manifest"]["containers"][0]["cpu"],
        250
    );
    // The seed's text as printed, with typographic quotes, is refused where it breaks.
    let typographic = String::from_utf8(seed("service.json")).unwrap().replacen(
        "\"id\"",
        "\u{201c}id\u{201d}",
        1,
    );
    let (code, body) = f
        .call(
            "POST",
            "/api/v1beta1/services",
            "application/json",
            Some(typographic.into_bytes()),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("line 2 column"),
        "{body}"
    );
    // The same request gives the same answer on the leader and a follower.
    assert_eq!(
        l.get("/api/v1/namespaces/default/services/mysite").await,
        f.get("/api/v1/namespaces/default/services/mysite").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_the_right_status_and_store_nothing() {
    let (c, leader, follower) = cluster().await;
    let f = Api::new(c.url(follower));
    let pod = |name: &str, containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}});
    let rc = |replicas: i64, selector: Value| {
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
               "spec": {"replicas": replicas, "selector": selector,
                        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    let pods = "/api/v1/namespaces/default/pods";
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    struct Case {
        what: &'static str,
        path: &'static str,
        body: Vec<u8>,
        code: u16,
        reason: &'static str,
        field: Option<&'static str>,
    }
    let j = |v: Value| serde_json::to_vec(&v).unwrap();
    let cases = vec![
        Case {
            what: "malformed JSON",
            path: pods,
            body: b"{\"metadata\": {".to_vec(),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "wrong kind",
            path: pods,
            body: j(json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "a"}})),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "wrong apiVersion",
            path: pods,
            body: j(json!({"kind": "Pod", "apiVersion": "v2", "metadata": {"name": "a"}})),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "invalid name",
            path: pods,
            body: j(pod("Bad_Name", json!([{"name": "c", "image": "i"}]))),
            code: 422,
            reason: "Invalid",
            field: Some("metadata.name"),
        },
        Case {
            what: "no name",
            path: pods,
            body: j(json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})),
            code: 422,
            reason: "Invalid",
            field: Some("metadata.name"),
        },
        Case {
            what: "invalid label",
            path: pods,
            body: j(
                json!({"metadata": {"name": "a", "labels": {"k": "-bad-"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            ),
            code: 422,
            reason: "Invalid",
            field: Some("metadata.labels"),
        },
        Case {
            what: "no containers",
            path: pods,
            body: j(pod("a", json!([]))),
            code: 422,
            reason: "Invalid",
            field: Some("spec.containers"),
        },
        Case {
            what: "duplicate container names",
            path: pods,
            body: j(pod(
                "a",
                json!([{"name": "c", "image": "i"}, {"name": "c", "image": "j"}]),
            )),
            code: 422,
            reason: "Invalid",
            field: Some("spec.containers[1].name"),
        },
        Case {
            what: "wrong JSON type",
            path: pods,
            body: j(pod("a", json!("not a list"))),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "negative replicas",
            path: rcs,
            body: j(rc(-1, json!({"app": "x"}))),
            code: 422,
            reason: "Invalid",
            field: Some("spec.replicas"),
        },
        Case {
            what: "selector not matching template",
            path: rcs,
            body: j(rc(1, json!({"app": "y"}))),
            code: 422,
            reason: "Invalid",
            field: Some("spec.template.metadata.labels"),
        },
    ];
    for case in &cases {
        let (code, body) = f
            .call(
                "POST",
                case.path,
                "application/json",
                Some(case.body.clone()),
            )
            .await;
        assert_eq!(code, case.code, "{}: {body}", case.what);
        if !case.reason.is_empty() {
            assert_eq!(body["kind"], "Status", "{}", case.what);
            assert_eq!(body["reason"], case.reason, "{}: {body}", case.what);
        }
        if let Some(field) = case.field {
            let causes = body["details"]["causes"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no causes in {body}", case.what));
            assert!(
                causes
                    .iter()
                    .any(|c| c["field"].as_str().is_some_and(|f| f.starts_with(field))),
                "{}: {body}",
                case.what
            );
        }
    }
    // An oversized body is refused from its declared length.
    let code =
        keelson_chaos::client::status_of_declared_post(&c.url(follower), pods, 4 * 1024 * 1024)
            .await;
    assert_eq!(code, Some(413), "oversized body");
    let (code, body) = f.get("/api/v1/pods?labelSelector=a%20in%20b").await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "bad selector"
    );
    let (code, body) = f.get("/api/v1/pods?fieldSelector=spec.nope%3D1").await;
    assert_eq!(code, 400, "unsupported field selector: {body}");
    // Nothing was stored.
    for path in [pods, rcs] {
        let (code, list) = Api::new(c.url(leader)).get(path).await;
        assert_eq!(code, 200);
        assert_eq!(list["items"], json!([]), "{path}");
        assert!(list["metadata"]["resourceVersion"].is_string());
    }
    let (code, body) = f.get("/api/v1/namespaces/default/pods/nosuch").await;
    assert_eq!(code, 404);
    assert_eq!(body["message"], "pods \"nosuch\" not found");
    assert_eq!(body["details"]["name"], "nosuch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_writes_patches_subresources_and_lists() {
    let (c, _leader, follower) = cluster().await;
    let a = Api::new(c.url(follower));
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web", "labels": {"tier": "front"}},
                    "spec": {"replicas": 2, "selector": {"app": "web"},
                             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    let (code, created) = a.post(rcs, &rc).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    let (code, body) = a.post(rcs, &rc).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(
        body["message"],
        "replicationcontrollers \"web\" already exists"
    );

    // PUT with the current version succeeds; with a stale one it conflicts.
    let mut update = created.clone();
    update["spec"]["replicas"] = json!(3);
    let (code, updated) = a.put(&format!("{rcs}/web"), &update).await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    let (code, body) = a.put(&format!("{rcs}/web"), &update).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "stale resourceVersion"
    );

    // A main-resource write cannot change status; a status write cannot change spec.
    let mut with_status = updated.clone();
    with_status["status"] = json!({"replicas": 7});
    with_status["metadata"]["resourceVersion"] = json!(null);
    let (_, after) = a.put(&format!("{rcs}/web"), &with_status).await;
    assert_eq!(after["status"]["replicas"], 0);
    let mut status_write = after.clone();
    status_write["status"] = json!({"replicas": 3, "readyReplicas": 1});
    status_write["spec"]["replicas"] = json!(99);
    let (code, after) = a.put(&format!("{rcs}/web/status"), &status_write).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(
        (
            after["status"]["replicas"].as_i64(),
            after["spec"]["replicas"].as_i64()
        ),
        (Some(3), Some(3))
    );

    // Merge patch and JSON patch.
    let (code, p) = a
        .patch(
            &format!("{rcs}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"tier": null, "env": "prod"}}}),
        )
        .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["metadata"]["labels"], json!({"env": "prod"}));
    let (code, p) = a
        .patch(
            &format!("{rcs}/web"),
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
        )
        .await;
    assert_eq!(
        (code, p["spec"]["replicas"].as_i64()),
        (200, Some(4)),
        "{p}"
    );

    // The scale subresource.
    let (code, scale) = a.get(&format!("{rcs}/web/scale")).await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(
        (
            scale["kind"].as_str(),
            scale["apiVersion"].as_str(),
            scale["spec"]["replicas"].as_i64()
        ),
        (Some("Scale"), Some("autoscaling/v1"), Some(4))
    );
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, scale) = a.put(&format!("{rcs}/web/scale"), &json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"}, "spec": {"replicas": 5}})).await;
    assert_eq!(
        (code, scale["spec"]["replicas"].as_i64()),
        (200, Some(5)),
        "{scale}"
    );
    let (code, scale) = a
        .patch(
            &format!("{rcs}/web/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 1}}),
        )
        .await;
    assert_eq!((code, scale["spec"]["replicas"].as_i64()), (200, Some(1)));
    let (code, body) = a
        .patch(
            &format!("{rcs}/web/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": -2}}),
        )
        .await;
    assert_eq!(code, 422, "negative replicas through scale: {body}");

    // Label and field selectors, pagination.
    for (name, env) in [("a", "prod"), ("b", "dev"), ("c", "prod"), ("d", "test")] {
        let pod = json!({"metadata": {"name": name, "labels": {"env": env}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(a.post("/api/v1/namespaces/default/pods", &pod).await.0, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, l) = a
        .get("/api/v1/namespaces/default/pods?labelSelector=env%20in%20(prod,test)")
        .await;
    assert_eq!(names(&l), ["a", "c", "d"]);
    let (_, l) = a
        .get("/api/v1/pods?labelSelector=env!%3Dprod&fieldSelector=metadata.name%3Db")
        .await;
    assert_eq!(names(&l), ["b"]);
    let (_, l) = a
        .get("/api/v1/pods?fieldSelector=status.phase%3DPending")
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 4);
    let (_, page1) = a.get("/api/v1/namespaces/default/pods?limit=3").await;
    assert_eq!(names(&page1), ["a", "b", "c"]);
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let (_, page2) = a
        .get(&format!(
            "/api/v1/namespaces/default/pods?limit=3&continue={token}"
        ))
        .await;
    assert_eq!(names(&page2), ["d"]);
    assert!(page2["metadata"].get("continue").is_none());

    // Delete with a precondition, then without.
    let (code, _) = a
        .call(
            "DELETE",
            "/api/v1/namespaces/default/pods/a",
            "application/json",
            Some(br#"{"preconditions": {"resourceVersion": "1"}}"#.to_vec()),
        )
        .await;
    assert_eq!(code, 409);
    let (code, deleted) = a
        .call("DELETE", "/api/v1/namespaces/default/pods/a", "", None)
        .await;
    assert_eq!(
        (code, deleted["metadata"]["name"].as_str()),
        (200, Some("a"))
    );
    assert_eq!(a.get("/api/v1/namespaces/default/pods/a").await.0, 404);
    // Cluster-scoped resources.
    assert_eq!(
        a.post("/api/v1/nodes", &json!({"metadata": {"name": "n1"}}))
            .await
            .0,
        201
    );
    assert_eq!(a.get("/api/v1/nodes/n1").await.0, 200);
    assert_eq!(
        a.post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "team-a"}})
        )
        .await
        .0,
        201
    );
    let (_, ns) = a.get("/api/v1/namespaces/team-a").await;
    assert_eq!(ns["status"]["phase"], "Active");
}

/// Reads NDJSON events from a watch response until `n` events other than bookmarks arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while out
        .iter()
        .filter(|e: &&Value| e["type"] != "BOOKMARK")
        .count()
        < n
    {
        let chunk = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.next(),
        )
        .await
        .expect("events in time")
        .expect("stream open")
        .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_on_a_follower_resume_and_expire() {
    let (mut c, leader, follower) = cluster().await;
    let l = Api::new(c.url(leader));
    let svc = |name: &str| json!({"metadata": {"name": name, "labels": {"app": "w"}}, "spec": {"ports": [{"port": 80}]}});
    let (_, first) = l
        .post("/api/v1/namespaces/default/services", &svc("s0"))
        .await;
    let rv0 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/api/v1/namespaces/default/services?watch=true&resourceVersion={rv0}&allowWatchBookmarks=true&labelSelector=app%3Dw", c.url(follower));
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut want = Vec::new();
    for i in 1..=3 {
        let (_, s) = l
            .post(
                "/api/v1/namespaces/default/services",
                &svc(&format!("s{i}")),
            )
            .await;
        want.push((
            "ADDED".to_string(),
            s["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let (_, p) = l
        .patch(
            "/api/v1/namespaces/default/services/s1",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"app": "other"}}}),
        )
        .await;
    want.push((
        "DELETED".to_string(),
        p["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string(),
    ));
    let events = read_events(resp, want.len()).await;
    let got: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "in order, no gap; leaving the selector is DELETED"
    );
    for e in &events {
        assert!(
            e["object"]["kind"].is_string(),
            "every object has its kind: {e}"
        );
    }
    // A restarted master's window starts at what it had applied: older versions expire.
    c.restart(follower);
    assert!(c.wait_applied(follower, 1, Duration::from_secs(30)).await);
    let resp = reqwest::get(format!(
        "{}/api/v1/namespaces/default/services?watch=true&resourceVersion=1",
        c.url(follower)
    ))
    .await
    .unwrap();
    let events = read_events(resp, 1).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    // resourceVersion unset: the current state first, as ADDED.
    let resp = reqwest::get(format!(
        "{}/api/v1/namespaces/default/services?watch=true",
        c.url(follower)
    ))
    .await
    .unwrap();
    let events = read_events(resp, 4).await;
    assert!(events.iter().all(|e| e["type"] == "ADDED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_a_list_reads_the_first_pages_version() {
    let (mut c, leader, follower) = cluster().await;
    let (l, f) = (Api::new(c.url(leader)), Api::new(c.url(follower)));
    let services = "/api/v1/namespaces/default/services";
    let svc = |name: &str| json!({"metadata": {"name": name, "labels": {"app": "w"}}, "spec": {"ports": [{"port": 80}]}});
    let mut rvs = std::collections::BTreeMap::new();
    for i in 0..6 {
        let (code, s) = l.post(services, &svc(&format!("s{i}"))).await;
        assert_eq!(code, 201, "{s}");
        rvs.insert(format!("s{i}"), s["metadata"]["resourceVersion"].clone());
    }
    let names = |l: &Value| -> Vec<String> {
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, page1) = l.get(&format!("{services}?limit=2")).await;
    assert_eq!(code, 200, "{page1}");
    assert_eq!(names(&page1), ["s0", "s1"]);
    let rv = page1["metadata"]["resourceVersion"].clone();
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("a token")
        .to_string();
    // Changes after the first page: an update, a delete, creates before and after the cursor.
    let (code, _) = l
        .patch(
            &format!("{services}/s2"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"app": "changed"}}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        l.call("DELETE", &format!("{services}/s3"), "", None)
            .await
            .0,
        200
    );
    for name in ["s2a", "s9"] {
        assert_eq!(l.post(services, &svc(name)).await.0, 201);
    }
    // The later pages, from a follower, read the state of the first page's version.
    let (code, page2) = f.get(&format!("{services}?limit=2&continue={token}")).await;
    assert_eq!(code, 200, "{page2}");
    assert_eq!(names(&page2), ["s2", "s3"], "as at the first page");
    assert_eq!(page2["metadata"]["resourceVersion"], rv);
    assert_eq!(page2["items"][0]["metadata"]["labels"]["app"], "w");
    assert_eq!(page2["items"][0]["metadata"]["resourceVersion"], rvs["s2"]);
    let token2 = page2["metadata"]["continue"]
        .as_str()
        .expect("a token")
        .to_string();
    let (_, page3) = f
        .get(&format!("{services}?limit=2&continue={token2}"))
        .await;
    assert_eq!(names(&page3), ["s4", "s5"]);
    assert!(page3["metadata"].get("continue").is_none(), "{page3}");
    // A new list sees the changes; resourceVersionMatch=Exact reads the first page's version.
    let (_, now) = f.get(services).await;
    assert_eq!(names(&now), ["s0", "s1", "s2", "s2a", "s4", "s5", "s9"]);
    let rv_s = rv.as_str().unwrap();
    let (code, then) = f
        .get(&format!(
            "{services}?resourceVersion={rv_s}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 200, "{then}");
    assert_eq!(names(&then), ["s0", "s1", "s2", "s3", "s4", "s5"]);
    assert_eq!(then["metadata"]["resourceVersion"], rv);
    let (code, e) = f
        .get(&format!(
            "{services}?resourceVersion={}&resourceVersionMatch=Exact",
            u64::MAX / 2
        ))
        .await;
    assert_eq!((code, e["reason"].as_str()), (504, Some("Timeout")), "{e}");
    for bad in [
        "resourceVersionMatch=Sometimes&resourceVersion=1",
        "resourceVersionMatch=Exact",
    ] {
        let (code, e) = f.get(&format!("{services}?{bad}")).await;
        assert_eq!(
            (code, e["reason"].as_str()),
            (422, Some("Invalid")),
            "{bad}: {e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("resourceVersionMatch"),
            "{e}"
        );
    }
    // Bad tokens, and a token with a resource version, are 400 naming the field.
    let (code, e) = f.get(&format!("{services}?continue=garbage")).await;
    assert_eq!(
        (code, e["reason"].as_str()),
        (400, Some("BadRequest")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().starts_with("continue: "),
        "{e}"
    );
    let (code, e) = f
        .get(&format!("{services}?continue={token}&resourceVersion=0"))
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("resourceVersion: "),
        "{e}"
    );
    // A restarted master's change feed starts at what it had applied: the first page's
    // version is gone there, and the continue token is 410 Expired (clients list again).
    c.restart(follower);
    assert!(c.wait_applied(follower, 1, Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{}/readyz", c.url(follower)))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the restarted master is not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, e) = f.get(&format!("{services}?limit=2&continue={token}")).await;
    assert_eq!((code, e["reason"].as_str()), (410, Some("Expired")), "{e}");
}

/// Lists of pods by label read the informers' label index, at the list's version: a page read
/// after pods were relabelled, deleted and created still holds what matched at the first
/// page's version, and so does an Exact list; a new list sees the changes. Set-based and
/// combined selectors too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_by_label_read_the_index_at_the_lists_version() {
    let (c, leader, follower) = cluster().await;
    let (l, f) = (Api::new(c.url(leader)), Api::new(c.url(follower)));
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, app: &str, tier: &str| {
        json!({"metadata": {"name": name, "labels": {"app": app, "tier": tier}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    for (name, app, tier) in [
        ("p0", "w", "a"),
        ("p1", "w", "b"),
        ("p2", "w", "a"),
        ("p3", "w", "b"),
        ("p4", "x", "a"),
        ("p5", "x", "b"),
    ] {
        let (code, p) = l.post(pods, &pod(name, app, tier)).await;
        assert_eq!(code, 201, "{p}");
    }
    // Another namespace's pod with the same label stays out of a namespaced list.
    let (code, other) = l
        .post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "other"}}),
        )
        .await;
    assert_eq!(code, 201, "{other}");
    let (code, p) = l
        .post("/api/v1/namespaces/other/pods", &pod("o0", "w", "a"))
        .await;
    assert_eq!(code, 201, "{p}");
    let names = |l: &Value| -> Vec<String> {
        l["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a list: {l}"))
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let sel = |s: &str| keelson_model::url::enc(s);
    for (selector, want) in [
        ("app=w", vec!["p0", "p1", "p2", "p3"]),
        ("app in (w,x),tier=a", vec!["p0", "p2", "p4"]),
        ("app=w,tier!=a", vec!["p1", "p3"]),
        ("app=nothing", vec![]),
    ] {
        let (code, list) = f
            .get(&format!("{pods}?labelSelector={}", sel(selector)))
            .await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(names(&list), want, "{selector}");
    }
    let (_, all) = f
        .get(&format!(
            "/api/v1/pods?labelSelector={}",
            sel("app=w,tier=a")
        ))
        .await;
    assert_eq!(names(&all), ["p0", "p2", "o0"]);
    let w = sel("app=w");
    let (code, page1) = f.get(&format!("{pods}?labelSelector={w}&limit=2")).await;
    assert_eq!(code, 200, "{page1}");
    assert_eq!(names(&page1), ["p0", "p1"]);
    let rv = page1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("a token")
        .to_string();
    // After the first page: p2 leaves the selection, p4 joins it, p3 is deleted, p2a created.
    for (name, app) in [("p2", "x"), ("p4", "w")] {
        let (code, p) = l
            .patch(
                &format!("{pods}/{name}"),
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"app": app}}}),
            )
            .await;
        assert_eq!(code, 200, "{p}");
    }
    let (code, _) = l.call("DELETE", &format!("{pods}/p3"), "", None).await;
    assert_eq!(code, 200);
    assert_eq!(l.post(pods, &pod("p2a", "w", "a")).await.0, 201);
    let (code, page2) = f
        .get(&format!(
            "{pods}?labelSelector={w}&limit=2&continue={token}"
        ))
        .await;
    assert_eq!(code, 200, "{page2}");
    assert_eq!(names(&page2), ["p2", "p3"], "as at the first page");
    assert_eq!(page2["items"][0]["metadata"]["labels"]["app"], "w");
    assert!(page2["metadata"].get("continue").is_none(), "{page2}");
    let (code, then) = f
        .get(&format!(
            "{pods}?labelSelector={w}&resourceVersion={rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 200, "{then}");
    assert_eq!(names(&then), ["p0", "p1", "p2", "p3"]);
    // Consistent reads, on the leader and on a follower, see every change.
    for api in [&l, &f] {
        let (_, now) = api.get(&format!("{pods}?labelSelector={w}")).await;
        assert_eq!(names(&now), ["p0", "p1", "p2a", "p4"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_required_except_for_health() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,admin,admin,system:masters\n").unwrap();
    let c = Cluster::start(
        std::path::Path::new(BIN),
        1,
        &["--token-file", tokens.to_str().unwrap()],
    );
    let url = c.url(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Metrics need a user RBAC lets read them (the administrator, here).
    let metrics = |token: Option<&'static str>| {
        let mut req = reqwest::Client::new().get(format!("{url}/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(metrics(None).await, 401);
    assert_eq!(metrics(Some("s3cret")).await, 200);
    let mut a = Api::new(url.clone());
    let (code, body) = a.get("/api/v1/namespaces/default/pods").await;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
    a.token = Some("wrong".into());
    assert_eq!(a.get("/api/v1/namespaces/default/pods").await.0, 401);
    a.token = Some("s3cret".into());
    assert_eq!(a.get("/api/v1/namespaces/default/pods").await.0, 200);
    let (code, v) = a.get("/version").await;
    assert_eq!(code, 200);
    assert!(v["gitVersion"].as_str().unwrap().starts_with('v'));
    let (code, api) = a.get("/api/v1").await;
    assert_eq!(code, 200);
    let short: Vec<&str> = api["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["shortNames"].as_array().into_iter().flatten())
        .filter_map(|s| s.as_str())
        .collect();
    for s in ["po", "rc", "svc", "ep", "no", "ns", "ev"] {
        assert!(short.contains(&s), "short name {s}");
    }
    assert_eq!(a.get("/apis").await.0, 200);
    // The official clients ask with a trailing slash.
    for path in ["/api/", "/apis/", "/api/v1/"] {
        assert_eq!(a.get(path).await.0, 200, "{path}");
    }
    assert_eq!(a.get("/api/v1/").await.1, api);
}

/// Trust boundary: a pod spec never reaches the host. Every host-reaching field is a 422 that
/// names it, through core/v1 and through a replication controller's template, and nothing is
/// stored; harmless fields that keelson ignores are accepted as Kubernetes accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_reaching_pod_specs_are_refused_by_field() {
    let (c, leader, follower) = cluster().await;
    let a = Api::new(c.url(follower));
    let pods = "/api/v1/namespaces/default/pods";
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let container = json!({"name": "c", "image": "user/mysite"});
    let with = |spec: Value| {
        let mut s = json!({"containers": [container.clone()]});
        json_patch::merge(&mut s, &spec);
        s
    };
    let hostile = [
        // The finding: a volume named like a host path, mounted.
        (
            json!({"volumes": [{"name": "/tmp/probe", "emptyDir": {}}],
                   "containers": [{"name": "c", "image": "user/mysite", "volumeMounts": [{"name": "/tmp/probe", "mountPath": "/host"}]}]}),
            "spec.volumes[0].name",
        ),
        (
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            "spec.volumes[0].hostPath",
        ),
        (
            json!({"volumes": [{"name": "n", "nfs": {"server": "127.0.0.1", "path": "/"}}]}),
            "spec.volumes[0].nfs",
        ),
        (json!({"hostNetwork": true}), "spec.hostNetwork"),
        (json!({"hostPID": true}), "spec.hostPID"),
        (json!({"hostIPC": true}), "spec.hostIPC"),
        (
            json!({"containers": [{"name": "c", "image": "a", "securityContext": {"privileged": true}}]}),
            "spec.containers[0].securityContext.privileged",
        ),
        (
            json!({"containers": [{"name": "c", "image": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
            "spec.containers[0].securityContext.capabilities.add",
        ),
        (
            json!({"containers": [{"name": "c", "image": "a", "securityContext": {"allowPrivilegeEscalation": true}}]}),
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            json!({"containers": [{"name": "c", "image": "a", "volumeDevices": [{"name": "d", "devicePath": "/dev/sda"}]}]}),
            "spec.containers[0].volumeDevices",
        ),
        (
            json!({"volumes": [{"name": "v", "emptyDir": {}}],
                   "containers": [{"name": "c", "image": "a", "volumeMounts": [{"name": "v", "mountPath": "/a/../../etc"}]}]}),
            "spec.containers[0].volumeMounts[0].mountPath",
        ),
        (
            json!({"containers": [{"name": "c", "image": "a", "volumeMounts": [{"name": "none", "mountPath": "/x"}]}]}),
            "spec.containers[0].volumeMounts[0].name",
        ),
        (
            json!({"containers": [{"name": "c", "image": "Not A/Reference"}]}),
            "spec.containers[0].image",
        ),
    ];
    for (i, (spec, field)) in hostile.iter().enumerate() {
        let name = format!("hostile-{i}");
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": with(spec.clone())});
        let (code, status) = a.post(pods, &body).await;
        assert_eq!(code, 422, "{field}: {status}");
        assert_eq!(status["reason"], "Invalid", "{status}");
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert!(fields.contains(field), "{field} in {status}");
        // The same spec as a controller's template.
        let template = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"app": "h"},
                     "template": {"metadata": {"labels": {"app": "h"}}, "spec": with(spec.clone())}}});
        let (code, status) = a.post(rcs, &template).await;
        let want = field.replacen("spec.", "spec.template.spec.", 1);
        assert_eq!(code, 422, "{want}: {status}");
        assert!(
            status["message"].as_str().unwrap().contains(&want),
            "{want} in {status}"
        );
    }
    // Harmless fields that kubectl and the official clients send are accepted.
    let harmless = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "harmless"}, "spec": {
        "dnsPolicy": "ClusterFirst", "tolerations": [{"key": "k", "operator": "Exists"}], "securityContext": {},
        "hostNetwork": false, "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "c", "image": "registry.local:5000/team/site:v1", "imagePullPolicy": "IfNotPresent",
                        "securityContext": {"capabilities": {"drop": ["ALL"]}, "privileged": false},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}});
    let (code, created) = a.post(pods, &harmless).await;
    assert_eq!(code, 201, "{created}");
    // An update cannot add what a create could not.
    let mut update = created.clone();
    update["spec"]["hostNetwork"] = json!(true);
    let (code, status) = a.put(&format!("{pods}/harmless"), &update).await;
    assert_eq!(code, 422, "{status}");
    // Nothing hostile was stored.
    let (_, list) = Api::new(c.url(leader)).get(pods).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["harmless"]);
    let (_, list) = Api::new(c.url(leader)).get(rcs).await;
    assert_eq!(list["items"], json!([]));
}

/// The finding: `PUT /kv/%2Fregistry%2Fpods%2Fdefault%2Fzzz?upsert=true` with `junk` made every
/// pod list a 500. `/kv` keys now live in a space of their own: that key is a kv key like any
/// other, the registry never sees it, and no kv read, list or watch shows API objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_fenced_from_the_registry() {
    let (c, leader, follower) = cluster().await;
    let a = Api::new(c.url(follower));
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "real"},
                     "spec": {"containers": [{"name": "c", "image": "user/mysite"}]}});
    assert_eq!(a.post(pods, &pod).await.0, 201);
    let junk_key = "/kv/%2Fregistry%2Fpods%2Fdefault%2Fzzz";
    let (code, v) = a
        .call(
            "PUT",
            &format!("{junk_key}?upsert=true"),
            "text/plain",
            Some(b"junk".to_vec()),
        )
        .await;
    assert!(code == 200 || code == 201, "{code} {v}");
    // Every master still lists pods, with only the real one.
    for id in c.ids() {
        let (code, list) = Api::new(c.url(id)).get(pods).await;
        assert_eq!(code, 200, "master {id}: {list}");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, vec!["real"], "master {id}");
    }
    // The kv surface reads its own key back, and cannot reach the pod's.
    let (code, v) = a.get(junk_key).await;
    assert_eq!((code, v["value"].as_str()), (200, Some("junk")), "{v}");
    let (code, _) = a.get("/kv/%2Fregistry%2Fpods%2Fdefault%2Freal").await;
    assert_eq!(code, 404, "a pod is not a kv key");
    let (_, list) = a.get("/kv?prefix=%2Fregistry%2F").await;
    let keys: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert_eq!(keys, vec!["/registry/pods/default/zzz"]);
    let (code, _) = a
        .call(
            "DELETE",
            "/kv/%2Fregistry%2Fpods%2Fdefault%2Freal",
            "",
            None,
        )
        .await;
    assert_eq!(code, 404, "kv cannot delete a pod");
    assert_eq!(
        Api::new(c.url(leader)).get(&format!("{pods}/real")).await.0,
        200
    );
    // A kv watch of everything starts with the kv keys only.
    let http = reqwest::Client::new();
    let mut resp = http
        .get(format!("{}/kv?watch=true", c.url(leader)))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains('\n') {
        assert!(std::time::Instant::now() < deadline, "no kv watch event");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("/registry/pods/default/zzz"), "{seen}");
    assert!(
        !seen.contains("\"real\""),
        "a kv watch shows no API object: {seen}"
    );
}

/// The finding: `?watch=1&timeoutSeconds=18446744073709551615` panicked the request's task.
/// The timeout is bounded now: the watch is served like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_watch_timeout_is_bounded() {
    let (c, _leader, follower) = cluster().await;
    let a = Api::new(c.url(follower));
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"containers": [{"name": "c", "image": "user/mysite"}]}});
    assert_eq!(a.post(pods, &pod).await.0, 201);
    let mut resp = reqwest::Client::new()
        .get(format!(
            "{}{pods}?watch=1&timeoutSeconds=18446744073709551615",
            c.url(follower)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the watch's first event")
        .expect("a stream, not a broken connection")
        .expect("an event");
    let event: Value =
        serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "p");
    // A limit above the page bound still pages.
    let (code, list) = a.get(&format!("{pods}?limit=18446744073709551615")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Limits: a client that never finishes its headers (a slow loris) is cut after the header
/// timeout while others are served; a body that stalls gets 408; past the in-flight cap a
/// request is answered at once with 429 and `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_and_the_inflight_cap_answers_429() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(
        std::path::Path::new(BIN),
        3,
        &[
            "--no-controllers",
            "--header-read-timeout-ms",
            "1000",
            "--body-read-timeout-ms",
            "8000",
            "--max-mutating-requests-inflight",
            "1",
        ],
    );
    let leader = c
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let url = c.url(leader);
    let addr = url.trim_start_matches("http://").to_string();
    let a = Api::new(url.clone());
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                  "spec": {"containers": [{"name": "c", "image": "user/mysite"}]}})
    };

    // The slow loris: a header line every 300 ms, never the end of the headers.
    let mut loris = tokio::net::TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let cut = loop {
        // Others are served meanwhile.
        assert_eq!(a.get(pods).await.0, 200);
        if loris.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), loris.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => break started.elapsed(), // an answer or EOF: cut
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the slow loris was never cut"
        );
    };
    eprintln!("slow loris cut after {cut:?}");

    // A write whose body stalls holds the only write slot: another write gets 429 at once.
    // (The master's own writes may hold the slot at that moment: then the stalled write is
    // itself refused at once, and is sent again.)
    let stalled_deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut slow = loop {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(
            format!("POST {pods} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"kind\"")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut first = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut first)).await {
            Err(_) => break slow, // no answer: it waits for its body, holding the slot
            Ok(got) => assert!(
                std::time::Instant::now() < stalled_deadline,
                "the stalled write is always answered at once: {got:?} {}",
                String::from_utf8_lossy(&first)
            ),
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(7);
    let mut refused = None;
    let mut seen = Vec::new();
    let mut i = 0;
    while refused.is_none() && std::time::Instant::now() < deadline {
        i += 1;
        let resp = a
            .http
            .post(format!("{url}{pods}"))
            .json(&pod(&format!("p{i}")))
            .send()
            .await
            .unwrap();
        seen.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry = resp.headers().get("retry-after").cloned();
            let body: Value = resp.json().await.unwrap();
            refused = Some((retry, body));
        }
    }
    let (retry, body) = refused.unwrap_or_else(|| {
        panic!("a write past the cap is refused with 429; the writes got {seen:?}")
    });
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(body["reason"], "TooManyRequests", "{body}");
    assert_eq!(body["details"]["retryAfterSeconds"], 1, "{body}");
    // Reads are not writes: still served.
    assert_eq!(a.get(pods).await.0, 200);
    // The stalled body is cut with 408, and the slot is free again.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(a.post(pods, &pod("after")).await.0, 201);
}

/// Limits: metadata over 256 KiB is a 422 naming the field, an object over 1.5 MiB (or a kv
/// value) a 413, and nothing is stored or changed; a made-up HTTP method does not become a
/// metric label of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_and_objects_are_refused_and_store_nothing() {
    let (c, leader, _follower) = cluster().await;
    let a = Api::new(c.url(leader));
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, meta: Value, env: Value| {
        let mut m = meta;
        m["name"] = json!(name);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": m,
               "spec": {"containers": [{"name": "c", "image": "user/mysite", "env": env}]}})
    };
    let big = "x".repeat(100 * 1024);

    // Annotations: 300 KiB in total is over Kubernetes' limit; 200 KiB is fine.
    let over = json!({"annotations": {"a": big, "b": big, "c": big}});
    let (code, body) = a.post(pods, &pod("annotated", over, json!([]))).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid", "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"], "metadata.annotations",
        "{body}"
    );
    assert_eq!(
        body["details"]["causes"][0]["reason"], "FieldValueTooLong",
        "{body}"
    );
    assert_eq!(a.get(&format!("{pods}/annotated")).await.0, 404);
    let under = json!({"annotations": {"a": big, "b": big}});
    assert_eq!(
        a.post(pods, &pod("annotated", under, json!([]))).await.0,
        201
    );

    // The whole metadata: 6,000 valid labels are over 256 KiB.
    let labels: serde_json::Map<String, Value> = (0..6000)
        .map(|i| {
            (
                format!("label-{i:05}-{}", "k".repeat(20)),
                json!("v".repeat(20)),
            )
        })
        .collect();
    let (code, body) = a
        .post(pods, &pod("labelled", json!({"labels": labels}), json!([])))
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata", "{body}");
    assert_eq!(a.get(&format!("{pods}/labelled")).await.0, 404);

    // An object of 2 MiB: under the 3 MiB body limit, over the 1.5 MiB object limit.
    let env: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("E{i}"), "value": big}))
        .collect();
    let (code, body) = a.post(pods, &pod("huge", json!({}), json!(env))).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("1572864"),
        "{body}"
    );
    assert_eq!(a.get(&format!("{pods}/huge")).await.0, 404);

    // An update that grows an object over the limit changes nothing.
    let small: Vec<Value> = env[..2].to_vec();
    let (code, created) = a.post(pods, &pod("grows", json!({}), json!(small))).await;
    assert_eq!(code, 201, "{created}");
    let mut grown = created.clone();
    grown["spec"]["containers"][0]["env"] = json!(env);
    let (code, body) = a.put(&format!("{pods}/grows"), &grown).await;
    assert_eq!(code, 413, "{body}");
    let (_, now) = a.get(&format!("{pods}/grows")).await;
    assert_eq!(
        now["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "the refused update changed nothing"
    );

    // A kv value over the limit.
    let (code, body) = a
        .call(
            "PUT",
            "/kv/big?upsert=true",
            "text/plain",
            Some(vec![b'v'; 2 << 20]),
        )
        .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(a.get("/kv/big").await.0, 404);

    // A made-up method is answered, and counted as `other`.
    let (code, _) = a.call("FROBNICATE", pods, "", None).await;
    assert!((400..500).contains(&code), "{code}");
    let metrics = reqwest::get(format!("{}/metrics", c.url(leader)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("FROBNICATE"), "the method became a label");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keelson_api_requests_total{") && l.contains("verb=\"other\"")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("keelson_api_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Reads a watch until the server ends it (its `timeoutSeconds`): every event but bookmarks, as
/// (type, name, resourceVersion).
async fn events_until_end(url: &str) -> Vec<(String, String, u64)> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            assert_ne!(e["type"], "ERROR", "{e}");
            let meta = &e["object"]["metadata"];
            (
                e["type"].as_str().unwrap().to_string(),
                meta["name"].as_str().unwrap().to_string(),
                meta["resourceVersion"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Issue #14: several writes in one log entry each get their own resource version, and a watch
/// resumed from any of them — in the middle of the entry too — gets exactly the events after
/// it. The batched entry is the one an orphaning delete writes: every dependent pod loses its
/// owner reference in one Raft command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_exactly_from_any_version_inside_a_batched_entry() {
    let (c, leader, follower) = cluster().await;
    let l = Api::new(c.url(leader));
    let (code, rc) = l
        .post(
            "/api/v1/namespaces/default/replicationcontrollers",
            &json!({"metadata": {"name": "owner"}, "spec": {"replicas": 0, "selector": {"app": "b"},
                "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        )
        .await;
    assert_eq!(code, 201, "{rc}");
    let uid = rc["metadata"]["uid"].as_str().unwrap();
    let owner = json!([{"apiVersion": "v1", "kind": "ReplicationController", "name": "owner", "uid": uid, "controller": true}]);
    for i in 0..5 {
        let pod = json!({"metadata": {"name": format!("b{i}"), "labels": {"app": "b"}, "ownerReferences": owner},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let (code, body) = l.post("/api/v1/namespaces/default/pods", &pod).await;
        assert_eq!(code, 201, "{body}");
    }
    let (_, list) = l.get("/api/v1/namespaces/default/pods").await;
    let from: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (code, body) = l
        .call(
            "DELETE",
            "/api/v1/namespaces/default/replicationcontrollers/owner?propagationPolicy=Orphan",
            "",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");

    // On a follower: the five updates, in one entry, at five versions.
    let pods = format!("{}/api/v1/namespaces/default/pods", c.url(follower));
    let watch = |rv: u64| format!("{pods}?watch=true&resourceVersion={rv}&timeoutSeconds=2");
    let all = events_until_end(&watch(from)).await;
    assert_eq!(all.len(), 5, "{all:?}");
    let entry = keelson_raft::revision::index_of(all[0].2);
    for (i, (kind, _, rv)) in all.iter().enumerate() {
        assert_eq!(kind, "MODIFIED");
        assert_eq!(
            keelson_raft::revision::index_of(*rv),
            entry,
            "one entry: {all:?}"
        );
        if i > 0 {
            assert!(all[i - 1].2 < *rv, "versions increase: {all:?}");
        }
    }
    // The list after the entry is at its end.
    let (_, after) = Api::new(c.url(follower))
        .get("/api/v1/namespaces/default/pods")
        .await;
    let end: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end >= all[4].2, "list at {end}, after {all:?}");

    // Resumed from each event's version: exactly the rest of the entry.
    for (i, (_, name, rv)) in all.iter().enumerate() {
        let rest = events_until_end(&watch(*rv)).await;
        assert_eq!(rest, all[i + 1..], "resumed after {name} at {rv}");
    }
}

/// One POST of a service; `None` when the master did not answer (killed, refusing).
async fn try_post(http: &reqwest::Client, base: &str, body: &Value) -> Option<(u16, Value)> {
    let resp = http
        .post(format!("{base}/api/v1/namespaces/default/services"))
        .json(body)
        .send()
        .await
        .ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.json().await.unwrap_or(Value::Null)))
}

fn service(name: &str, cluster_ip: Option<&str>) -> Value {
    let mut svc = json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip);
    }
    svc
}

/// Services' cluster IPs come from `--service-cluster-ip-range`, each claimed through Raft
/// before its service is stored: concurrent creates through every master, across a leader
/// killed part-way, never share an address; a full range, a taken or out-of-range address and
/// a changed address are refused as Kubernetes refuses them; a delete frees its address. The
/// range (10.250.0.0/28, 14 addresses) is never sent a packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_ips_are_allocated_once_from_the_range_across_a_leader_change() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const RANGE: &str = "10.250.0.0/28";
    let mut c = Cluster::start(
        std::path::Path::new(BIN),
        3,
        &["--service-cluster-ip-range", RANGE],
    );
    let leader = c
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    c.wait_ready(Duration::from_secs(30)).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let alive = Arc::new(Mutex::new(
        c.ids().iter().map(|id| c.url(*id)).collect::<Vec<_>>(),
    ));
    let created = Arc::new(AtomicUsize::new(0));
    // Each create is retried through the live masters until its outcome is known: stored
    // (201, or 409 when an earlier try of unknown outcome stored it). A claim left by a try
    // that failed half-way holds an address until the repair loop frees it (60 s).
    let create = |i: usize| {
        let (http, alive, created) = (http.clone(), alive.clone(), created.clone());
        tokio::spawn(async move {
            let name = format!("svc-{i}");
            let deadline = Instant::now() + Duration::from_secs(150);
            let mut attempt = i;
            loop {
                assert!(Instant::now() < deadline, "{name} was never created");
                let base = {
                    let alive = alive.lock().unwrap();
                    alive[attempt % alive.len()].clone()
                };
                attempt += 1;
                match try_post(&http, &base, &service(&name, None)).await {
                    Some((201, svc)) => {
                        created.fetch_add(1, Ordering::SeqCst);
                        return svc["spec"]["clusterIP"].as_str().unwrap().to_string();
                    }
                    Some((409, _)) => {
                        let got = http
                            .get(format!("{base}/api/v1/namespaces/default/services/{name}"))
                            .send()
                            .await;
                        if let Ok(r) = got {
                            if r.status().is_success() {
                                let svc: Value = r.json().await.unwrap();
                                created.fetch_add(1, Ordering::SeqCst);
                                return svc["spec"]["clusterIP"].as_str().unwrap().to_string();
                            }
                        }
                    }
                    Some((code, body)) if code < 500 => panic!("{name}: {code} {body}"),
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks: Vec<_> = (0..7).map(create).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while created.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "no services created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The leader dies with creates in flight; the others go on through the survivors.
    c.kill(leader);
    alive.lock().unwrap().retain(|u| *u != c.url(leader));
    tasks.extend((7..14).map(create));
    let mut ips = Vec::new();
    for t in tasks {
        ips.push(t.await.expect("a create task"));
    }
    let range: Vec<String> = (1..=14).map(|n| format!("10.250.0.{n}")).collect();
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 14, "addresses shared: {ips:?}");
    assert!(ips.iter().all(|ip| range.contains(ip)), "{ips:?}");

    let survivor = *c.ids().iter().find(|id| **id != leader).unwrap();
    let a = Api::new(c.url(survivor));
    let (code, list) = a.get("/api/v1/namespaces/default/services").await;
    assert_eq!(code, 200);
    for item in list["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        if let Some(i) = name.strip_prefix("svc-") {
            let i: usize = i.parse().unwrap();
            assert_eq!(item["spec"]["clusterIP"], ips[i], "{name}");
            assert_eq!(item["spec"]["clusterIPs"], json!([ips[i]]), "{name}");
        }
    }

    // The range is full.
    let (code, body) = a
        .post(
            "/api/v1/namespaces/default/services",
            &service("svc-14", None),
        )
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (500, Some("InternalError")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
    // A taken, an out-of-range and a malformed address are refused by field.
    for (ip, why) in [
        (
            ips[0].as_str(),
            "provided IP is already allocated".to_string(),
        ),
        (
            "10.251.0.1",
            format!("provided IP is not in the valid range. The range of valid IPs is {RANGE}"),
        ),
        ("10.250.0.300", "must be a valid IP address".to_string()),
    ] {
        let (code, body) = a
            .post(
                "/api/v1/namespaces/default/services",
                &service("wanted", Some(ip)),
            )
            .await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (422, Some("Invalid")),
            "{ip}: {body}"
        );
        let cause = &body["details"]["causes"][0];
        assert_eq!(cause["field"], "spec.clusterIP", "{body}");
        assert!(cause["message"].as_str().unwrap().ends_with(&why), "{body}");
    }
    // A PUT without the address keeps it; one that changes it is refused.
    let path = "/api/v1/namespaces/default/services/svc-1";
    let (_, mut svc) = a.get(path).await;
    let spec = svc["spec"].as_object_mut().unwrap();
    spec.remove("clusterIP");
    spec.remove("clusterIPs");
    spec.insert("selector".into(), json!({"app": "web"}));
    let (code, updated) = a.put(path, &svc).await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["spec"]["clusterIP"], ips[1]);
    assert_eq!(updated["spec"]["clusterIPs"], json!([ips[1]]));
    let mut changed = updated.clone();
    changed["spec"]["clusterIP"] = json!(ips[2]);
    changed["spec"]["clusterIPs"] = json!([ips[2]]);
    let (code, body) = a.put(path, &changed).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.clusterIP");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{body}"
    );
    assert_eq!(a.get(path).await.1["spec"]["clusterIP"], ips[1]);

    // A delete frees its address: the only free one, so the next create gets it.
    let del = |n: usize| {
        let a = &a;
        async move {
            let (code, body) = a
                .call(
                    "DELETE",
                    &format!("/api/v1/namespaces/default/services/svc-{n}"),
                    "",
                    None,
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    del(3).await;
    let other = Api::new(
        c.url(
            *c.ids()
                .iter()
                .find(|id| **id != leader && **id != survivor)
                .unwrap(),
        ),
    );
    let (code, body) = other
        .post(
            "/api/v1/namespaces/default/services",
            &service("again", None),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["clusterIP"], ips[3]);
    // The claims are the services' own: two freed addresses can be asked for again, and then
    // nothing is left.
    del(4).await;
    del(5).await;
    for n in [4, 5] {
        let (code, body) = other
            .post(
                "/api/v1/namespaces/default/services",
                &service(&format!("wanted-{n}"), Some(&ips[n])),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["spec"]["clusterIP"], ips[n]);
    }
    let (code, body) = a
        .post(
            "/api/v1/namespaces/default/services",
            &service("svc-15", None),
        )
        .await;
    assert_eq!(code, 500, "{body}");
    assert!(
        body["message"].as_str().unwrap().ends_with("range is full"),
        "{body}"
    );
}
