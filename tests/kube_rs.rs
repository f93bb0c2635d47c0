//! kube-rs, the Rust client, against a `keelson up` cluster through the kubeconfig it writes
//! (HTTPS with the cluster's CA, a bearer token), unchanged:
//!
//! - discovery, typed `Api<Pod>` list and create, merge, strategic merge and server-side apply
//!   patches (field managers, conflicts, removal of fields an applier drops), and the
//!   `Status` of a refused write naming its field;
//! - the `scale` subresource of a ReplicationController (`patch_scale`, `replace_scale`);
//! - a `kube::runtime::Controller` that annotates pods with their image, reconciling again
//!   when the image changes;
//! - a `watcher` feeding a `reflector` store while the leader master is SIGKILLed under a
//!   churn of creates and deletes (and restarted, as a supervisor would): once settled the
//!   store must equal a fresh list exactly, and no watch stream may go back in versions.
//!
//! The phases share one cluster (three masters, no agents: pods stay Pending) to keep the wall
//! time down; each works in a namespace of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `keelson up` (three masters, no agents) in a temporary directory, plus the masters this test
/// started again itself after killing them. Dropping it stops them all.
struct Up {
    _dir: tempfile::TempDir,
    data: PathBuf,
    up: Child,
    restarted: Vec<Child>,
}

impl Up {
    async fn start() -> Up {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let host = format!("127.0.5.{}", 1 + nanos % 250);
        let up = Command::new(BIN)
            .args(["up", "--masters", "3", "--agents", "0", "--host", &host])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keelson up");
        let up = Up {
            _dir: dir,
            data,
            up,
            restarted: Vec::new(),
        };
        // The kubeconfig is written once every master is started; then wait for a leader.
        let kubeconfig = up.kubeconfig();
        eventually(
            Duration::from_secs(30),
            "keelson up writes its kubeconfig",
            || {
                let ready = kubeconfig.exists() && up.data.join("cluster.json").exists();
                async move { ready.then_some(()) }
            },
        )
        .await;
        let client = up.client(None).await;
        eventually(Duration::from_secs(30), "a leader", || {
            let client = client.clone();
            async move { leader(&client).await }
        })
        .await;
        up
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    /// `cluster.json`: the masters' ids, pids and API URLs.
    fn cluster_file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.data.join("cluster.json")).unwrap()).unwrap()
    }

    fn master(&self, id: u64) -> Value {
        self.cluster_file()["masters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"].as_u64() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("master {id} in cluster.json"))
    }

    /// A client from `keelson up`'s kubeconfig as written, or with its server set to master
    /// `via`'s URL (the serving certificate covers every master).
    async fn client(&self, via: Option<u64>) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read the kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a kube-rs Config from keelson up's kubeconfig");
        if let Some(id) = via {
            config.cluster_url = self.master(id)["api"].as_str().unwrap().parse().unwrap();
        }
        Client::try_from(config).expect("a kube-rs Client")
    }

    /// SIGKILLs master `id`, remembering its command line for [`Up::restart`].
    fn kill(&self, id: u64) -> Vec<String> {
        let pid = self.master(id)["pid"].as_u64().unwrap() as i32;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the master's cmdline");
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // SAFETY: signalling a master that `keelson up`, our child, started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        args
    }

    /// Starts a killed master again with its own command line and data directory.
    fn restart(&mut self, id: u64, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.data.join(format!("master-{id}.log")))
            .unwrap();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart the master");
        self.restarted.push(child);
    }

    fn log_tail(&self, id: u64) -> String {
        keelson_chaos::cluster::file_tail(&self.data.join(format!("master-{id}.log")), 15)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        for child in &mut self.restarted {
            let _ = child.kill();
            let _ = child.wait();
        }
        // SAFETY: SIGTERM to our child: `keelson up` stops every master it started.
        unsafe { libc::kill(self.up.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.up.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.up.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The leader master's id, as `GET /cluster` (keelson's own path) of the client's master says.
async fn leader(client: &Client) -> Option<u64> {
    let req = axum::http::Request::get("/cluster").body(Vec::new()).ok()?;
    let status: Value = client.request(req).await.ok()?;
    status["leader"].as_u64()
}

fn pod(name: &str, image: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }))
    .unwrap()
}

fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected a Status from the API, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_drives_keelson() {
    let started = Instant::now();
    let mut up = Up::start().await;
    let client = up.client(None).await;
    discovery_finds_core_v1(&client).await;
    pods_list_create_and_patch(&client).await;
    replication_controller_scale(&client).await;
    controller_reconciles_pods(&client).await;
    reflector_survives_leader_kill(&mut up).await;
    eprintln!("kube-rs scenario: {:.1} s", started.elapsed().as_secs_f64());
}

/// kube-rs discovery, per group and aggregated, sees core/v1: pods, and replication
/// controllers with their `scale` subresource.
async fn discovery_finds_core_v1(client: &Client) {
    let plain = kube::Discovery::new(client.clone()).filter(&[""]).run();
    let aggregated = kube::Discovery::new(client.clone()).run_aggregated();
    for discovery in [plain.await, aggregated.await] {
        let discovery = discovery.expect("discovery");
        let core = discovery
            .get("")
            .expect("the core group is discovered")
            .recommended_resources();
        let find = |kind: &str| {
            core.iter()
                .find(|(r, _)| r.kind == kind)
                .unwrap_or_else(|| panic!("{kind} is discovered"))
                .clone()
        };
        let (pods, caps) = find("Pod");
        assert_eq!(
            (pods.plural.as_str(), pods.version.as_str()),
            ("pods", "v1")
        );
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
        let (_, caps) = find("ReplicationController");
        assert!(
            caps.subresources.iter().any(|(r, _)| r.plural == "scale"),
            "{:?}",
            caps.subresources
        );
    }
}

async fn pods_list_create_and_patch(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-rs-pods");
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let created = pods
        .create(
            &PostParams::default(),
            &pod("web", "nginx:1.27", json!({"app": "web"})),
        )
        .await
        .expect("create a pod");
    assert!(created.uid().is_some() && created.resource_version().is_some());
    assert_eq!(created.namespace().as_deref(), Some("kube-rs-pods"));
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    // A JSON merge patch: labels are merged, a null removes one.
    let merged = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front", "app": null}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged.labels(),
        &BTreeMap::from([("tier".to_string(), "front".to_string())])
    );

    // A strategic merge patch merges containers by name: a sidecar is added, main keeps its
    // image, and `$patch: delete` removes the sidecar again.
    let spec = |p: &Pod| p.spec.clone().unwrap().containers;
    let strategic = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [
                {"name": "sidecar", "image": "busybox:1.36"},
                {"name": "main", "image": "nginx:1.28"},
            ]}})),
        )
        .await
        .expect("strategic merge patch");
    let images: BTreeMap<String, Option<String>> = spec(&strategic)
        .into_iter()
        .map(|c| (c.name, c.image))
        .collect();
    assert_eq!(
        images,
        BTreeMap::from([
            ("main".to_string(), Some("nginx:1.28".to_string())),
            ("sidecar".to_string(), Some("busybox:1.36".to_string())),
        ])
    );
    let strategic = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}),
            ),
        )
        .await
        .expect("strategic merge patch deleting a container");
    assert_eq!(
        spec(&strategic)
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["main"]
    );

    // Server-side apply: creates, records the manager, removes what the manager stops applying.
    let apply = |labels: Value| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "applied", "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
        })
    };
    let ssa = PatchParams::apply("mgr");
    let applied = pods
        .patch(
            "applied",
            &ssa,
            &Patch::Apply(apply(json!({"a": "1", "b": "2"}))),
        )
        .await
        .expect("server-side apply creating the pod");
    let managers = applied.managed_fields();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("mgr") && m.operation.as_deref() == Some("Apply")),
        "{managers:?}"
    );
    let applied = pods
        .patch("applied", &ssa, &Patch::Apply(apply(json!({"a": "1"}))))
        .await
        .expect("server-side apply dropping a label");
    assert_eq!(
        applied.labels(),
        &BTreeMap::from([("a".to_string(), "1".to_string())])
    );
    // Another manager applying a different value to mgr's field conflicts, unless forced.
    let other = pods
        .patch(
            "applied",
            &PatchParams::apply("other"),
            &Patch::Apply(apply(json!({"a": "changed"}))),
        )
        .await
        .expect_err("a conflicting apply is refused");
    let status = api_status(other);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "Conflict"),
        "{status:?}"
    );
    assert!(status.message.contains("labels.a"), "{status:?}");
    let forced = pods
        .patch(
            "applied",
            &PatchParams::apply("other").force(),
            &Patch::Apply(apply(json!({"a": "changed"}))),
        )
        .await
        .expect("a forced apply");
    assert_eq!(forced.labels()["a"], "changed");

    // A refused write is a Status naming the field.
    let bad = pods
        .create(&PostParams::default(), &pod("bad", "", json!({})))
        .await
        .expect_err("a container without an image is refused");
    let status = api_status(bad);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    let causes = status.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.field == "spec.containers[0].image"),
        "{causes:?}"
    );
    let missing = pods.get("absent").await.expect_err("no such pod");
    let status = api_status(missing);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (404, "NotFound"),
        "{status:?}"
    );
}

async fn replication_controller_scale(client: &Client) {
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "kube-rs-scale");
    let rc: ReplicationController = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"app": "scaled"},
            "template": {
                "metadata": {"labels": {"app": "scaled"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
            },
        },
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &rc)
        .await
        .expect("create the controller");
    let scale = rcs
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch_scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    let replicas = |rc: &ReplicationController| rc.spec.as_ref().and_then(|s| s.replicas);
    assert_eq!(replicas(&rcs.get("web").await.unwrap()), Some(3));
    // The replication manager acts on it: three pods, counted in the status.
    eventually(Duration::from_secs(20), "status.replicas = 3", || {
        let rcs = rcs.clone();
        async move {
            let rc = rcs.get("web").await.ok()?;
            (rc.status?.replicas == 3).then_some(())
        }
    })
    .await;

    let mut scale: Scale = rcs.get_scale("web").await.expect("get_scale");
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(3));
    scale.spec.get_or_insert_with(Default::default).replicas = Some(1);
    let replaced = rcs
        .replace_scale("web", &PostParams::default(), &scale)
        .await
        .expect("replace_scale");
    assert_eq!(replaced.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(replicas(&rcs.get("web").await.unwrap()), Some(1));
    // The version read is a precondition: replacing with it again conflicts.
    let stale = rcs
        .replace_scale("web", &PostParams::default(), &scale)
        .await
        .expect_err("a stale scale is refused");
    assert_eq!(api_status(stale).code, 409);
}

/// The annotation the controller writes: the image of the pod's first container.
const RECONCILED: &str = "keelson.test/reconciled-image";

async fn reconcile_pod(pod: Arc<Pod>, pods: Arc<Api<Pod>>) -> Result<Action, kube::Error> {
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    if pod.annotations().get(RECONCILED) != Some(&image) {
        let patch = json!({"metadata": {"annotations": {RECONCILED: image}}});
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    }
    Ok(Action::await_change())
}

fn retry_pod(_: Arc<Pod>, _: &kube::Error, _: Arc<Api<Pod>>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

/// A `Controller` over pods annotates each with its image, and again when the image changes.
async fn controller_reconciles_pods(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-rs-ctl");
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("ctl-{i}"), "nginx:1.27", json!({"app": "ctl"})),
        )
        .await
        .unwrap();
    }
    let controller = Controller::new(pods.clone(), watcher::Config::default())
        .run(reconcile_pod, retry_pod, Arc::new(pods.clone()))
        .for_each(|_| futures::future::ready(()));
    let controller = tokio::spawn(controller);
    // Pods created while it runs are reconciled too.
    for i in 3..5 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("ctl-{i}"), "nginx:1.27", json!({"app": "ctl"})),
        )
        .await
        .unwrap();
    }
    let all_annotated = |image: &'static str| {
        let pods = pods.clone();
        move || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default()).await.ok()?;
                (list.items.len() == 5
                    && list.items.iter().all(|p| {
                        p.annotations().get(RECONCILED).map(String::as_str) == Some(image)
                    }))
                .then_some(())
            }
        }
    };
    eventually(
        Duration::from_secs(20),
        "the controller annotates every pod",
        all_annotated("nginx:1.27"),
    )
    .await;
    for i in 0..5 {
        pods.patch(
            &format!("ctl-{i}"),
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "main", "image": "nginx:1.28"}]}}),
            ),
        )
        .await
        .unwrap();
    }
    eventually(
        Duration::from_secs(20),
        "the controller follows the new image",
        all_annotated("nginx:1.28"),
    )
    .await;
    controller.abort();
}

/// What the test's watcher saw, checked as it goes.
#[derive(Default)]
struct WatchLog {
    /// Resource version of the last event of the current stream (reset by a re-list).
    last_rv: Option<u64>,
    relists: u32,
    errors: u32,
    /// Events whose resource version was older than the one before (versions may repeat:
    /// one log entry can change several objects).
    out_of_order: Vec<String>,
}

impl WatchLog {
    fn see(&mut self, event: &Result<watcher::Event<Pod>, watcher::Error>) {
        let obj = match event {
            Err(_) => {
                self.errors += 1;
                return;
            }
            Ok(watcher::Event::Init) => {
                self.relists += 1;
                self.last_rv = None;
                return;
            }
            Ok(watcher::Event::InitApply(_)) => return,
            Ok(watcher::Event::InitDone) => return,
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => obj,
        };
        let rv: u64 = obj
            .resource_version()
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        if self.last_rv.is_some_and(|last| rv < last) {
            self.out_of_order.push(format!(
                "{} at {rv} after {:?}",
                obj.name_any(),
                self.last_rv
            ));
        }
        self.last_rv = Some(rv);
    }
}

/// Retries a write through an election (unavailable, timed out, connection refused) until
/// `within`; `done` says whether a refusal means the write is already in effect (a create that
/// exists, a delete of what is gone: an earlier attempt went through).
async fn write_through<F, Fut, T>(what: &str, done: u16, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op().await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == done => return,
            Err(kube::Error::Api(s)) if ![503, 504, 500].contains(&s.code) => {
                panic!("{what}: {s:?}")
            }
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `watcher` feeding a `reflector` store, driven by a task of its own.
struct Mirror {
    /// Which master it watches through, for messages.
    via: String,
    store: reflector::Store<Pod>,
    log: Arc<Mutex<WatchLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    async fn start(pods: Api<Pod>, via: String) -> Mirror {
        let (store, writer) = reflector::store::<Pod>();
        let log = Arc::new(Mutex::new(WatchLog::default()));
        let seen = log.clone();
        let watch = reflector(writer, watcher(pods, watcher::Config::default()))
            .map(move |e| {
                seen.lock().unwrap().see(&e);
                e
            })
            .default_backoff()
            .for_each(|_| futures::future::ready(()));
        let task = tokio::spawn(watch);
        store.wait_until_ready().await.expect("the store is ready");
        Mirror {
            via,
            store,
            log,
            task,
        }
    }

    /// Name → resource version of what the store holds, and how many objects it holds.
    fn contents(&self) -> (BTreeMap<String, String>, usize) {
        let cached: Vec<Pod> = self.store.state().iter().map(|p| (**p).clone()).collect();
        (versions(cached.clone()), cached.len())
    }
}

fn versions(pods: Vec<Pod>) -> BTreeMap<String, String> {
    pods.into_iter()
        .map(|p| (p.name_any(), p.resource_version().unwrap_or_default()))
        .collect()
}

/// Watchers + reflector stores, one through the kubeconfig's master and one through the
/// leader, while the leader is SIGKILLed under creates and deletes (and restarted): settled,
/// each store equals a fresh list.
async fn reflector_survives_leader_kill(up: &mut Up) {
    const NS: &str = "kube-rs-watch";
    let client = up.client(None).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let killed = leader(&client).await.expect("a leader");
    let through_leader = Api::namespaced(up.client(Some(killed)).await, NS);
    let mirrors = [
        Mirror::start(pods.clone(), "the kubeconfig's master".into()).await,
        Mirror::start(
            through_leader,
            format!("master {killed}, the leader killed"),
        )
        .await,
    ];

    let name = |i: usize| format!("w-{i:03}");
    let mut expected: BTreeMap<String, ()> = BTreeMap::new();
    for i in 0..20 {
        pods.create(
            &PostParams::default(),
            &pod(&name(i), "nginx:1.27", json!({})),
        )
        .await
        .unwrap();
        expected.insert(name(i), ());
    }

    let survivor = [1, 2, 3].into_iter().find(|id| *id != killed).unwrap();
    let args = up.kill(killed);
    // Writes go through a surviving master (forwarded to the new leader once elected).
    let writer = up.client(Some(survivor)).await;
    let writes: Api<Pod> = Api::namespaced(writer, NS);
    let (pp, dp) = (PostParams::default(), DeleteParams::default());
    for i in 20..40 {
        let p = pod(&name(i), "nginx:1.27", json!({}));
        write_through(&format!("create {}", name(i)), 409, || {
            writes.create(&pp, &p)
        })
        .await;
        expected.insert(name(i), ());
        if i % 2 == 0 {
            let victim = name(i - 20);
            write_through(&format!("delete {victim}"), 404, || {
                writes.delete(&victim, &dp)
            })
            .await;
            expected.remove(&victim);
        }
    }
    up.restart(killed, &args);
    // More churn once the killed master is back (the watcher's master may be that one).
    for i in 40..45 {
        let p = pod(&name(i), "nginx:1.27", json!({}));
        write_through(&format!("create {}", name(i)), 409, || pods.create(&pp, &p)).await;
        expected.insert(name(i), ());
    }

    let expected: Vec<String> = expected.into_keys().collect();
    // The control loops still write (the scheduler marks new pods unschedulable): compare each
    // store with a list taken anew each time until they agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    for mirror in &mirrors {
        loop {
            let Ok(fresh) = writes.list(&ListParams::default()).await else {
                assert!(Instant::now() < deadline, "no list from master {survivor}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let listed = versions(fresh.items);
            assert_eq!(
                listed.keys().cloned().collect::<Vec<_>>(),
                expected,
                "the cluster lost or resurrected a write"
            );
            let (cached, count) = mirror.contents();
            if cached == listed && count == listed.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the reflector through {} never matched a fresh list\nmissing: {:?}\nextra or stale: {:?}\nlog of master {killed}:\n{}",
                mirror.via,
                listed.iter().filter(|(k, v)| cached.get(*k) != Some(v)).collect::<Vec<_>>(),
                cached.iter().filter(|(k, v)| listed.get(*k) != Some(v)).collect::<Vec<_>>(),
                up.log_tail(killed)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for mirror in &mirrors {
        mirror.task.abort();
        let log = mirror.log.lock().unwrap();
        assert!(
            log.out_of_order.is_empty(),
            "watch events through {} went back in versions: {:?}",
            mirror.via,
            log.out_of_order
        );
        eprintln!(
            "reflector through {}: {} list(s), {} watcher error(s)",
            mirror.via, log.relists, log.errors
        );
    }
}
