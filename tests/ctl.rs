//! `keelson ctl` as people run it: the built binary with `--kubeconfig`, against a real
//! 3-master cluster that requires a bearer token.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keelson_chaos::Cluster;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const TOKEN: &str = "ctl-test-token";

/// A cluster with a token file, and a kubeconfig for it.
struct Env {
    cluster: Cluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// Starts 3 masters with a token file and waits until every one serves an authenticated list.
async fn env() -> Env {
    env_with(&[], 2).await
}

/// [`env`] with more flags for every master, the kubeconfig naming master `via`.
async fn env_with(flags: &[&str], via: u64) -> Env {
    let c = Cluster::start_with_token_and(Path::new(BIN), 3, TOKEN, flags).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig, via, TOKEN);
    Env {
        cluster: c,
        dir,
        kubeconfig,
    }
}

impl Env {
    /// Master `id`'s `/metrics` text, read as the administrator.
    async fn metrics(&self, id: u64) -> String {
        let http = self.cluster.client_builder().build().unwrap();
        http.get(format!("{}/metrics", self.cluster.url(id)))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("ctl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // No `.keelson` of a developer's `keelson up` may leak in.
            .arg("--data-dir")
            .arg(self.dir.path().join("none"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KEELSON_SERVER")
            .env_remove("KEELSON_TOKEN");
        cmd
    }

    /// Runs `keelson ctl ARGS`.
    fn ctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run keelson ctl")
    }

    /// Runs `keelson ctl ARGS` with `input` on stdin.
    fn ctl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keelson ctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "ctl {args:?}: {}", show(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `get ... -o json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("-o json prints JSON")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const MANIFESTS: &str = r#"# a controller and its service
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    protocol: TCP
"#;

/// The header and the rows of a table, split on runs of spaces.
fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().map(|l| {
        l.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    });
    let header = lines.next().unwrap_or_default();
    (header, lines.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_apply_scale_describe_delete() {
    let e = env().await;
    let manifests = e.file("web.yaml", MANIFESTS);

    let out = e.ok(&["create", "-f", &manifests]);
    assert_eq!(
        out,
        "replicationcontroller/web created\nservice/web created\n"
    );
    // Created again: both fail, as kubectl reports them, and the command exits 1.
    let again = e.ctl(&["create", "-f", &manifests]);
    assert_eq!(again.status.code(), Some(1), "{}", show(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(
            r#"Error from server (AlreadyExists): replicationcontrollers "web" already exists"#
        ),
        "{err}"
    );

    // Tables, with every spelling of the resource.
    for word in ["replicationcontrollers", "rc", "ReplicationController"] {
        let (header, rows) = table(&e.ok(&["get", word]));
        assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
        let web = rows.iter().find(|r| r[0] == "web").expect("row for web");
        assert_eq!(web[1], "1", "{web:?}");
    }
    let (header, rows) = table(&e.ok(&["get", "svc", "web"]));
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0][0].as_str(), rows[0][4].as_str()),
        ("web", "80/TCP")
    );
    let (header, _) = table(&e.ok(&["get", "svc", "-A", "-o", "wide"]));
    assert_eq!(header.first().map(String::as_str), Some("NAMESPACE"));
    assert_eq!(header.last().map(String::as_str), Some("SELECTOR"));
    assert_eq!(
        e.ok(&["get", "rc/web", "-o", "name"]),
        "replicationcontroller/web\n"
    );
    let (_, rows) = table(&e.ok(&["get", "rc", "-l", "app=nothing"]));
    assert!(rows.is_empty());

    // JSON and YAML.
    let rc = e.json(&["get", "rc", "web"]);
    assert_eq!(rc["kind"], "ReplicationController");
    assert_eq!(rc["spec"]["replicas"], 1);
    let list = e.json(&["get", "services"]);
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["metadata"]["name"] == "web"));
    let yaml: Value = serde_norway::from_str(&e.ok(&["get", "svc", "web", "-o", "yaml"])).unwrap();
    assert_eq!(yaml["spec"]["ports"][0]["port"], 80);

    // apply: the changed file is stored; the same file again changes nothing.
    let changed = MANIFESTS
        .replace(
            "labels: {app: web}\nspec:\n  replicas",
            "labels: {app: web, tier: front}\nspec:\n  replicas",
        )
        .replace("- port: 80", "- port: 8080");
    assert_ne!(changed, MANIFESTS);
    let changed = e.file("web-changed.yaml", &changed);
    assert_eq!(
        e.ok(&["apply", "-f", &changed]),
        "replicationcontroller/web configured\nservice/web configured\n"
    );
    let rc2 = e.json(&["get", "rc", "web"]);
    assert_eq!(rc2["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        rc2["metadata"]["uid"], rc["metadata"]["uid"],
        "updated, not recreated"
    );
    assert_eq!(
        e.json(&["get", "svc", "web"])["spec"]["ports"][0]["port"],
        8080
    );
    let second = e.ok(&["apply", "-f", &changed]);
    assert!(second.contains("service/web unchanged"), "{second}");
    // apply of an absent object creates it; stdin, JSON.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#;
    let out = e.ctl_stdin(&["apply", "-f", "-"], pod);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pod/solo created\n");
    let (header, rows) = table(&e.ok(&["get", "po", "solo"]));
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows[0][..2], ["solo".to_string(), "0/1".to_string()]);

    // scale, through the scale subresource.
    assert_eq!(
        e.ok(&["scale", "rc", "web", "--replicas", "3"]),
        "replicationcontroller/web scaled\n"
    );
    assert_eq!(e.json(&["get", "rc", "web"])["spec"]["replicas"], 3);
    let bad = e.ctl(&["scale", "svc", "web", "--replicas", "3"]);
    assert_eq!(bad.status.code(), Some(1));

    // describe: the main fields and an Events section.
    let d = e.ok(&["describe", "rc", "web"]);
    for want in [
        "Name:",
        "web",
        "Selector:",
        "app=web",
        "Replicas:",
        "/ 3 desired",
        "Pod Template:",
        "nginx",
        "Events:",
    ] {
        assert!(d.contains(want), "describe lacks {want:?}:\n{d}");
    }
    let d = e.ok(&["describe", "svc", "web"]);
    assert!(d.contains("8080/TCP"), "{d}");

    // logs: no agent serves them yet; the server's Status is printed.
    let out = e.ctl(&["logs", "solo"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error from server"));

    // delete by name and by file.
    assert_eq!(
        e.ok(&["delete", "rc", "web"]),
        "replicationcontroller \"web\" deleted\n"
    );
    let svc_only = e.file("svc.yaml", MANIFESTS.split("---").nth(1).unwrap());
    assert_eq!(
        e.ok(&["delete", "-f", &svc_only]),
        "service \"web\" deleted\n"
    );
    assert_eq!(
        e.ok(&["delete", "po", "solo", "--ignore-not-found"]),
        "pod \"solo\" deleted\n"
    );
    assert_eq!(e.ok(&["delete", "po", "solo", "--ignore-not-found"]), "");

    // A missing object: kubectl's line, exit code 1.
    let out = e.ctl(&["get", "rc", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error from server (NotFound): replicationcontrollers \"web\" not found\n"
    );
    assert!(out.stdout.is_empty());
}

/// The seed's manifests go through `/api/v1beta1`, as kubecfg sent them, so the seed's own ids
/// (`mysiteController`, not an RFC 1123 name) are accepted, and core/v1 reads, scales and
/// deletes the objects by those ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_manifests_verbatim() {
    let e = env().await;
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed");
    assert_eq!(
        e.ok(&[
            "create",
            "-f",
            &format!("{seed}/replication-controller.json")
        ]),
        "replicationcontroller/mysiteController created\n"
    );
    assert_eq!(
        e.ok(&["create", "-f", &format!("{seed}/service.json")]),
        "service/mysite created\n"
    );
    let rc = e.ok(&["get", "rc"]);
    assert!(
        rc.lines().any(|l| l.starts_with("mysiteController ")),
        "{rc}"
    );
    // Again: AlreadyExists, as kubectl says it.
    let out = e.ctl(&["create", "-f", &format!("{seed}/service.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(AlreadyExists)"),
        "{}",
        show(&out)
    );
    // Applying the file again changes nothing; a v1beta1 object lives in `default`.
    assert_eq!(
        e.ok(&["apply", "-f", &format!("{seed}/service.json")]),
        "service/mysite unchanged\n"
    );
    let out = e.ctl(&["create", "-n", "other", "-f", &format!("{seed}/pod.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the namespace \"other\""),
        "{}",
        show(&out)
    );
    assert_eq!(
        e.ok(&["scale", "rc", "mysiteController", "--replicas", "3"]),
        "replicationcontroller/mysiteController scaled\n"
    );
    let json = e.ok(&["get", "rc", "mysiteController", "-o", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["spec"]["replicas"], 3, "{json}");
    assert_eq!(
        e.ok(&["delete", "rc", "mysiteController"]),
        "replicationcontroller \"mysiteController\" deleted\n"
    );
    assert_eq!(
        e.ok(&["delete", "-f", &format!("{seed}/service.json")]),
        "service \"mysite\" deleted\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_watch() {
    let e = env().await;
    for (args, want) in [
        (
            vec!["get", "widgets"],
            "error: the server doesn't have a resource type \"widgets\"",
        ),
        (
            vec!["get", "po", "-o", "xml"],
            "error: unable to match a printer",
        ),
        (vec!["create", "-f", "/nonexistent.yaml"], "error: the path"),
    ] {
        let out = e.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(want),
            "{args:?}: {}",
            show(&out)
        );
    }
    let broken = e.file("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n");
    let out = e.ctl(&["create", "-f", &broken]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let apps = e.file(
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
    );
    let out = e.ctl(&["apply", "-f", &apps]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no matches for kind \"Deployment\""));
    // Invalid objects get the server's Invalid status.
    let invalid = e.file("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}\n");
    let out = e.ctl(&["create", "-f", &invalid]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("Error from server (Invalid)"),
        "{}",
        show(&out)
    );

    // get -w: a pod created after the watch started shows up.
    let mut watcher = e
        .command(&["get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pod = e.file("watched.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: watched}\nspec: {containers: [{name: c, image: i}]}\n");
    e.ok(&["create", "-f", &pod]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = line == "pod/watched";
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(seen, "the watch never printed pod/watched");
}

/// Polls `ctl ARGS` until `done` holds of its output, for at most 30 s; returns that output.
fn until(e: &Env, args: &[&str], done: impl Fn(&Output) -> bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = e.ctl(args);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "ctl {args:?}: {}", show(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_status_and_cluster_health_show_every_master() {
    let mut e = env().await;
    // Every master answers about itself: one leader, the others following, all healthy.
    let out = until(&e, &["masters", "status"], |o| {
        let text = String::from_utf8_lossy(&o.stdout);
        o.status.success()
            && text
                .lines()
                .skip(1)
                .filter(|l| l.ends_with("   ok"))
                .count()
                == 3
    });
    let (header, rows) = table(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        header,
        [
            "ID",
            "API",
            "ROLE",
            "TERM",
            "RAFT INDEX",
            "APPLIED",
            "LAG",
            "DB SIZE",
            "SNAPSHOT",
            "VERSION",
            "UPTIME",
            "HEALTH"
        ]
    );
    assert_eq!(rows.len(), 3, "{}", show(&out));
    let roles: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "follower").count(),
        2,
        "{roles:?}"
    );
    for r in &rows {
        assert_eq!(r.len(), 12, "{r:?}");
        assert!(r[1].starts_with("http"), "{r:?}");
        assert_eq!(r[9], env!("CARGO_PKG_VERSION"), "{r:?}");
        assert!(r[7].ends_with('B'), "a size: {r:?}");
    }
    // The JSON form, for scripts: every master's own status.
    let json: Value =
        serde_json::from_str(&e.ok(&["masters", "status", "-o", "json"])).expect("json");
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for m in list {
        assert_eq!(m["healthy"], true, "{m}");
        assert!(m["status"]["db_size_bytes"].as_u64().unwrap() > 0, "{m}");
        assert!(m["status"]["uptime_seconds"].is_u64(), "{m}");
        assert_eq!(m["status"]["id"], m["id"], "{m}");
    }
    let out = e.ctl(&["cluster", "health"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let healthy = text
        .lines()
        .filter(|l| l.starts_with("master ") && l.ends_with(") is healthy"))
        .count();
    assert_eq!(healthy, 3, "{text}");
    assert!(text.contains("cluster is healthy: 3 of 3"), "{text}");

    // One master down (the kubeconfig names master 2): degraded, exit 2, its row unhealthy.
    e.cluster.kill(3);
    let out = until(&e, &["cluster", "health"], |o| o.status.code() == Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("master 3 ("), "{text}");
    assert!(text.contains("cluster is degraded: 2 of 3"), "{text}");
    let status = e.ok(&["masters", "status"]);
    let (_, rows) = table(&status);
    let row3 = rows
        .iter()
        .find(|r| r[0] == "3")
        .expect("a row for master 3");
    assert!(row3.last().unwrap().starts_with("unhealthy: "), "{status}");
    assert_eq!(row3[2], "-", "{status}");
    // Two down: no quorum, exit 1.
    e.cluster.kill(1);
    let out = until(&e, &["cluster", "health"], |o| o.status.code() == Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cluster is unavailable"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_the_same_objects() {
    let e = env().await;
    let manifests = e.file("web.yaml", MANIFESTS);
    e.ok(&["create", "-f", &manifests]);
    let pod = |name: &str| {
        e.file(
            &format!("{name}.yaml"),
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: i}}]}}\n"),
        )
    };
    e.ok(&["create", "-f", &pod("kept")]);
    let before = e.json(&["get", "pods", "kept"]);

    // Saved: 0600, whole (no `.part` left), and it says what it holds.
    let backup = e.dir.path().join("backup.snap");
    let backup_arg = backup.to_str().unwrap();
    let said = e.ok(&["snapshot", "save", backup_arg]);
    assert!(said.starts_with("Snapshot saved at "), "{said}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!e.dir.path().join("backup.snap.part").exists());
    let status = Command::new(BIN)
        .args(["snapshot", "status", backup_arg, "-o", "json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", show(&status));
    let header: Value = serde_json::from_slice(&status.stdout).unwrap();
    let (_, old_id) = e.cluster.peers_and_id();
    assert_eq!(header["cluster_id"], old_id, "{header}");
    assert!(header["index"].as_u64().unwrap() > 0, "{header}");
    assert!(header["records"].as_u64().unwrap() >= 3, "{header}");
    assert!(said.contains(header["sha256"].as_str().unwrap()), "{said}");
    // A damaged copy is refused, naming the checksum.
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let damaged = e.dir.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = Command::new(BIN)
        .args(["snapshot", "status", damaged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is damaged: its SHA-256 is"));
    // Written after the backup: not in it.
    e.ok(&["create", "-f", &pod("later")]);

    // Three new masters restored from it, then started as a new cluster.
    let new = Cluster::prepare_with_users(Path::new(BIN), 3, TOKEN, &[], &[]);
    let (peers, new_id) = new.peers_and_id();
    let (peers, new_id) = (peers.to_string(), new_id.to_string());
    for id in new.ids() {
        let dir = new.spec(id).data_dir.clone();
        let out = Command::new(BIN)
            .args(["snapshot", "restore", backup_arg, "--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--peers", &peers, "--cluster-id", &new_id])
            .output()
            .unwrap();
        assert!(out.status.success(), "restore master {id}: {}", show(&out));
        // Not twice into the same directory.
        let again = Command::new(BIN)
            .args(["snapshot", "restore", backup_arg, "--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--peers", &peers])
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(1), "{}", show(&again));
        assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    }
    let restored = Env {
        cluster: new.serve().await,
        dir: tempfile::tempdir().unwrap(),
        kubeconfig: e.dir.path().join("restored.kubeconfig"),
    };
    restored
        .cluster
        .write_kubeconfig(&restored.kubeconfig, 1, TOKEN);
    // The same objects, as they were (uid, resource version); nothing written after the backup.
    let after = restored.json(&["get", "pods", "kept"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    restored.ok(&["get", "rc", "web"]);
    restored.ok(&["get", "svc", "web"]);
    let out = restored.ctl(&["get", "pods", "later"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // A new cluster: its own id; every master healthy; writes go on past the restored versions.
    let cluster: Value = serde_json::from_str(
        &String::from_utf8(restored.ctl(&["masters", "status", "-o", "json"]).stdout).unwrap(),
    )
    .unwrap();
    for m in cluster.as_array().unwrap() {
        assert_eq!(m["status"]["cluster_id"], new_id.as_str(), "{m}");
    }
    until(&restored, &["cluster", "health"], |o| o.status.success());
    restored.ok(&["create", "-f", &pod("fresh")]);
    let fresh = restored.json(&["get", "pods", "fresh"]);
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&fresh) > rv(&before), "{fresh}");
    let header_rv = header["index"].as_u64().unwrap() << 16;
    assert!(rv(&fresh) > header_rv, "{fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_writes_are_refused_deletes_work_until_the_alarm_is_disarmed() {
    let e = env_with(&["--quota-backend-bytes", "4Mi"], 1).await;
    let http = e
        .cluster
        .client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = e.cluster.url(1);
    let put = |i: usize| {
        http.put(format!("{url}/kv/big-{i}?upsert=true"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/octet-stream")
            .body(vec![b'x'; 1 << 20])
            .send()
    };
    // 1 MiB values over 8 keys until the store passes 4 MiB and a master raises the alarm.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let refused: Value = loop {
        let r = put(i % 8).await.unwrap();
        if r.status() == 507 {
            break r.json().await.unwrap();
        }
        assert!(r.status().is_success(), "put {i}: {}", r.status());
        assert!(Instant::now() < deadline, "no write refused after {i} puts");
        i += 1;
    };
    assert_eq!(refused["reason"], "InsufficientStorage", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.starts_with("no space: the NOSPACE alarm is raised (raised by master "),
        "{message}"
    );
    // Objects too: kubectl-style, with the same Status.
    let pod = e.file(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    let out = e.ctl(&["create", "-f", &pod]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("Error from server (InsufficientStorage): no space"),
        "{}",
        show(&out)
    );
    // Deletes still work.
    let r = http
        .delete(format!("{url}/kv/big-0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Every master shows the alarm; `alarm list` names it.
    for id in e.cluster.ids() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if e.metrics(id)
                .await
                .contains("\nkeelson_raft_alarm_nospace 1\n")
            {
                break;
            }
            assert!(Instant::now() < deadline, "master {id}: no alarm metric");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let list = e.ok(&["alarm", "list"]);
    assert!(list.starts_with("alarm:NOSPACE master:"), "{list}");
    assert!(list.contains("quota_bytes:4194304"), "{list}");
    // Disarmed, it goes; still over the quota, a master raises it again.
    let said = e.ok(&["alarm", "disarm"]);
    assert_eq!(said.trim(), "alarm:NOSPACE disarmed");
    until(&e, &["alarm", "list"], |o| {
        String::from_utf8_lossy(&o.stdout).starts_with("alarm:NOSPACE")
    });
}

/// `keelson master --snapshot-schedule 1s --snapshot-retention 2`: every master saves backups
/// of the cluster into `DATA_DIR/snapshots` (0700, files 0600), keeps its newest two, and each
/// is a whole backup that `keelson snapshot status` reads, holding what was written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_snapshots_are_saved_and_pruned_to_the_retention() {
    let e = env_with(
        &["--snapshot-schedule", "1s", "--snapshot-retention", "2"],
        1,
    )
    .await;
    let pod = e.file(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: scheduled}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    e.ok(&["create", "-f", &pod]);
    let created = e.json(&["get", "pods", "scheduled"]);
    let rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, cluster_id) = e.cluster.peers_and_id();
    use std::os::unix::fs::PermissionsExt;
    let e = &e;
    let taken = |id: u64| async move {
        e.metrics(id)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("keelson_scheduled_snapshots_total{result=\"ok\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut since_pod = Vec::new();
    for id in e.cluster.ids() {
        since_pod.push(taken(id).await);
    }
    for (id, at_pod) in e.cluster.ids().into_iter().zip(since_pod) {
        let snapshots = e.cluster.spec(id).data_dir.join("snapshots");
        // Four taken (from the master's own counter), two kept: the oldest were pruned. Two
        // more than when the pod was there: the second of them began after it was created.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let taken = taken(id).await;
            if taken >= 4 && taken >= at_pod + 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "master {id}: {taken} scheduled snapshots after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&snapshots), 0o700, "{}", snapshots.display());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "db"))
            .collect();
        files.sort();
        // The schedule goes on meanwhile: two, or three for the instant between a save and
        // its pruning.
        assert!((2..=3).contains(&files.len()), "master {id}: {files:?}");
        let newest = files.last().unwrap();
        let name = newest.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("keelson-snapshot-m{id}-")),
            "{name}"
        );
        assert_eq!(mode(newest), 0o600, "{name}");
        let status = Command::new(BIN)
            .args(["snapshot", "status", "-o", "json"])
            .arg(newest)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", show(&status));
        let header: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(header["cluster_id"], cluster_id, "{header}");
        assert_eq!(header["taken_by"], id, "{header}");
        assert!(
            header["index"].as_u64().unwrap() >= rv >> 16,
            "a snapshot taken after the pod was created is older than it: {header}"
        );
    }
}
