//! `keelson up`: a local cluster as child processes, stopped by SIGTERM, resumed with its data
//! and its certificates; its API over HTTPS with a token, for keelson's clients and kubectl.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_chaos::Kv;
use serde_json::Value;

mod common;
use common::kubectl::kubectl_present;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

/// An HTTP client that trusts `keelson up`'s CA, `DATA_DIR/ca.crt`.
fn client(data_dir: &std::path::Path) -> Option<reqwest::Client> {
    let pem = std::fs::read(data_dir.join("ca.crt")).ok()?;
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).ok()?)
        .build()
        .ok()
}

fn start_up(data_dir: &std::path::Path, host: &str) -> Child {
    Command::new(BIN)
        .args(["up", "--masters", "3", "--agents", "0", "--host", host])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keelson up")
}

/// Waits for cluster.json with live pids and a master that knows a leader.
async fn wait_ready(data_dir: &std::path::Path, previous_pids: &[u64]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "keelson up never became ready");
        if let Ok(bytes) = std::fs::read(data_dir.join("cluster.json")) {
            if let Ok(file) = serde_json::from_slice::<Value>(&bytes) {
                let pids: Vec<u64> = file["masters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|m| m["pid"].as_u64())
                    .collect();
                if pids.len() == 3 && pids.iter().all(|p| !previous_pids.contains(p)) {
                    let api = file["masters"][0]["api"].as_str().unwrap().to_string();
                    let token =
                        std::fs::read_to_string(data_dir.join("tokens.csv")).unwrap_or_default();
                    let token = token.split(',').next().unwrap_or("").trim().to_string();
                    let Some(http) = client(data_dir) else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let r = http
                        .get(format!("{api}/cluster"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if let Ok(s) = r.json::<Value>().await {
                            if s["leader"].as_u64().is_some() {
                                return file;
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pids(file: &Value) -> Vec<u64> {
    file["masters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["pid"].as_u64())
        .collect()
}

fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_stops_and_resumes_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = format!("127.0.3.{}", 1 + rand_byte());
    let mut up = start_up(&data, &host);
    let file = wait_ready(&data, &[]).await;
    for m in file["masters"].as_array().unwrap() {
        for field in ["id", "pid", "api", "raft", "data_dir"] {
            assert!(!m[field].is_null(), "cluster.json master has {field}");
        }
    }
    assert!(file["agents"].is_array());
    assert!(data.join("prometheus.yml").exists());
    // Secrets are the owner's only; so are the data directories.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    for secret in ["kubeconfig", "tokens.csv", "ca.key", "apiserver.key"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret}");
    }
    assert_eq!(mode(&data), 0o700, "the data directory");
    for m in file["masters"].as_array().unwrap() {
        let dir = std::path::PathBuf::from(m["data_dir"].as_str().unwrap());
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        // Each master has a peer certificate, and its Raft port answers no plain caller (the
        // finding of issue 13: `curl -H 'x-keelson-cluster: x' http://RAFT/raft/read_index`).
        let id = m["id"].as_u64().unwrap();
        assert_eq!(mode(&data.join(format!("master-{id}-peer.key"))), 0o600);
        assert!(data.join(format!("master-{id}-peer.crt")).is_file());
        let raft = m["raft"].as_str().unwrap();
        let got = reqwest::Client::new()
            .post(format!("http://{raft}/raft/read_index"))
            .header("x-keelson-cluster", "x")
            .send()
            .await;
        assert!(
            got.is_err(),
            "the Raft port answered a plain caller: {got:?}"
        );
    }
    let api = file["masters"][1]["api"].as_str().unwrap().to_string();
    assert!(api.starts_with("https://"), "{api}");
    assert_eq!(
        file["ca_file"].as_str().map(std::path::PathBuf::from),
        Some(data.canonicalize().unwrap().join("ca.crt"))
    );
    let token = token_of(&data);
    let kubeconfig = std::fs::read_to_string(data.join("kubeconfig")).unwrap();
    assert!(kubeconfig.contains(&token), "{kubeconfig}");
    assert!(
        kubeconfig.contains("server: https://")
            && kubeconfig.contains("certificate-authority-data: "),
        "{kubeconfig}"
    );
    let http = client(&data).unwrap();
    let pods = format!("{api}/api/v1/namespaces/default/pods");
    // Without the token the API refuses; with it, it answers.
    let r = http.get(&pods).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(&pods).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // HTTPS only: plain HTTP gets no answer, and a client without the CA does not trust it.
    let plain = format!("http://{}", api.trim_start_matches("https://"));
    assert!(!reqwest::get(format!("{plain}/healthz"))
        .await
        .is_ok_and(|r| r.status().is_success()));
    assert!(reqwest::get(format!("{api}/healthz")).await.is_err());
    // kubectl with the generated kubeconfig (CA and token).
    if kubectl_present() {
        let kubectl = |args: &[&str]| {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(data.join("kubeconfig"))
                .arg("--cache-dir")
                .arg(dir.path().join("kubectl-cache"))
                .args(args)
                .output()
                .expect("kubectl");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "kubectl {args:?}: {text}");
            text
        };
        let version = kubectl(&["version"]);
        assert!(
            version.contains("Server Version: v1.37.0+keelson"),
            "{version}"
        );
        let nodes = kubectl(&["get", "nodes"]);
        assert!(nodes.contains("No resources found"), "{nodes}");
    }
    Kv::with_http(&api, http.clone())
        .with_token(&token)
        .create("survives", "restart")
        .await
        .expect("write");
    let certs: Vec<Vec<u8>> = ["ca.crt", "apiserver.crt"]
        .iter()
        .map(|f| std::fs::read(data.join(f)).unwrap())
        .collect();

    // SIGTERM (as Ctrl-C would) stops every master.
    let first = pids(&file);
    // SAFETY: signalling our child.
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let status = up.wait().unwrap();
    assert!(status.success(), "keelson up exits cleanly: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while first.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "masters still running after keelson up stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Again: same cluster, same data.
    let mut up = start_up(&data, &host);
    let file2 = wait_ready(&data, &first).await;
    assert_eq!(file2["cluster_id"], file["cluster_id"]);
    // The same CA and certificate: the kubeconfig handed out before still works.
    for (f, before) in ["ca.crt", "apiserver.crt"].iter().zip(&certs) {
        assert_eq!(
            &std::fs::read(data.join(f)).unwrap(),
            before,
            "{f} was made anew"
        );
    }
    let got = Kv::with_http(&api, client(&data).unwrap())
        .with_token(&token)
        .get("survives", false)
        .await
        .unwrap();
    assert_eq!(got.map(|(v, _)| v), Some("restart".to_string()));
    // SAFETY: signalling our child.
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    assert!(up.wait().unwrap().success());
}

fn token_of(data: &std::path::Path) -> String {
    let text = std::fs::read_to_string(data.join("tokens.csv")).unwrap();
    text.split(',').next().unwrap().trim().to_string()
}

fn rand_byte() -> u8 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 250) as u8
}

/// `keelson up --log-format json --log-max-size 4k`: its processes log JSON lines, filtered as
/// asked, into files rotated by size; `keelson down --purge` stops it all and removes the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_as_json_lines_and_down_purges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = format!("127.0.4.{}", 1 + rand_byte());
    let mut up = Command::new(BIN)
        .args(["up", "--masters", "3", "--agents", "0", "--host", &host])
        .args(["--log-format", "json", "--log-filter", "info,keelson=debug"])
        .args(["--log-max-size", "4k", "--log-max-backups", "2"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("KEELSON_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keelson up");
    let file = wait_ready(&data, &[]).await;
    let log = data.join("master-1.log");
    let rotated = |n: usize| data.join(format!("master-1.log.{n}"));
    // Make the log lines rather than wait for them: every handshake that is not TLS costs
    // master-1 a debug line ("TLS handshake with … failed"), which the filter lets through.
    let api = file["masters"][0]["api"].as_str().unwrap();
    let addr = api
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rotated(2).exists() {
        assert!(
            Instant::now() < deadline,
            "master-1.log never rotated twice"
        );
        for _ in 0..10 {
            use tokio::io::AsyncWriteExt;
            if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                let _ = s.shutdown().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !rotated(3).exists(),
        "more backups kept than --log-max-backups"
    );
    for path in [rotated(1), rotated(2)] {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() <= 4096,
            "{} holds {} bytes",
            path.display(),
            text.len()
        );
        assert!(text.ends_with('\n'), "a line was split: {}", path.display());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
            // The filter: keelson's debug lines, nothing below info from anyone else.
            let target = v["target"].as_str().unwrap_or("");
            assert!(
                target.starts_with("keelson")
                    || matches!(v["level"].as_str(), Some("INFO" | "WARN" | "ERROR")),
                "{line}"
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "master-1.log");
    // A filter that does not parse is refused, naming the flag.
    let bad = Command::new(BIN)
        .args(["ctl", "--log-filter", "keelson=loud", "masters", "list"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--log-filter"),
        "{bad:?}"
    );

    // `keelson down --purge`: up and its masters stop, the data directory goes.
    let down = Command::new(BIN)
        .args(["down", "--purge", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(down.status.success(), "keelson down: {down:?}");
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("stopped keelson up"), "{said}");
    let status = up.wait().unwrap();
    assert!(
        status.success(),
        "keelson up after keelson down: {status:?}"
    );
    let mut out = String::new();
    use std::io::Read;
    up.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("keelson down --data-dir"), "{out}");
    for pid in pids(&file) {
        assert!(!alive(pid), "master pid {pid} still runs");
    }
    assert!(!data.exists(), "the data directory is still there");
}

/// A `keelson up` stopped (SIGTERM: it stops what it started) when the test ends, passed or not.
struct StopOnDrop(Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

/// Copies the directory `from` to `to`, files 0600 and directories 0700 (git keeps neither).
fn copy_private(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_private(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// Every data directory of an earlier keelson kept in `tests/fixtures/data` (each with the
/// script that made it) opens with this build: `keelson up` resumes a copy, the objects and keys
/// it held are there, a write goes through, and `keelson down --purge` ends it. A fixture whose
/// `fixture.json` says `"opens": false` must be refused, naming both data formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_fixture_opens_with_this_build() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data");
    let mut opened = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let fixture = entry.unwrap().path();
        if !fixture.is_dir() {
            continue;
        }
        let name = fixture.file_name().unwrap().to_string_lossy().to_string();
        let expect: Value =
            serde_json::from_slice(&std::fs::read(fixture.join("fixture.json")).unwrap()).unwrap();
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("cluster");
        copy_private(&fixture.join("cluster"), &data);
        let ctl = |args: &[&str]| {
            Command::new(BIN)
                .arg("ctl")
                .arg("--data-dir")
                .arg(&data)
                .args(args)
                .env_remove("KUBECONFIG")
                .env_remove("KEELSON_SERVER")
                .env_remove("KEELSON_TOKEN")
                .output()
                .unwrap()
        };
        // As the fixture was made: no agent (its pods stay pending, and no Docker is needed).
        let mut up = StopOnDrop(
            Command::new(BIN)
                .args(["up", "--agents", "0", "--data-dir"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn keelson up"),
        );
        if expect["opens"] == false {
            let out = up.0.wait().unwrap();
            assert!(!out.success(), "{name}: opened");
            let log = std::fs::read_to_string(data.join("master-1.log")).unwrap_or_default();
            let format = expect["format"].as_u64().unwrap();
            assert!(
                log.contains(&format!("data format {format}")),
                "{name}: the refusal names the formats\n{log}"
            );
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ctl(&["cluster", "health"]).status.success() {
            let log = std::fs::read_to_string(data.join("master-1.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "{name}: keelson up on it never became healthy\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for kind in ["pods", "services"] {
            let out = ctl(&["get", kind, "-o", "name"]);
            assert!(out.status.success(), "{name}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            for want in expect[kind].as_array().unwrap() {
                let want = want.as_str().unwrap();
                assert!(
                    text.lines().any(|l| l.ends_with(&format!("/{want}"))),
                    "{name}: no {kind} {want} in {text}"
                );
            }
        }
        for (key, value) in expect["kv"].as_object().unwrap() {
            let out = ctl(&["kv", "get", key]);
            assert!(out.status.success(), "{name}: {out:?}");
            let got: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(&got["value"], value, "{name}: {key}: {got}");
        }
        let out = ctl(&["kv", "put", "fixture/after", "this build"]);
        assert!(
            out.status.success(),
            "{name}: a write after opening: {out:?}"
        );
        let down = Command::new(BIN)
            .args(["down", "--purge", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(down.status.success(), "{name}: keelson down: {down:?}");
        assert!(
            up.0.wait().unwrap().success(),
            "{name}: keelson up exits cleanly"
        );
        opened += 1;
    }
    assert!(opened >= 1, "no fixture in {}", fixtures.display());
}

/// `keelson up` is a supervisor for the one exit that asks for it: a master whose disk (a
/// 24 MiB tmpfs here) fills up stops its storage, and once the disk has room it exits with 75;
/// `keelson up` starts it again, records its new pid, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_a_master_again_once_its_full_disk_has_room() {
    use common::tmpfs::Tmpfs;
    if !Tmpfs::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Tmpfs::mount(&data.join("master-2"), "24m");
    let host = format!("127.0.5.{}", 1 + rand_byte());
    let mut up = StopOnDrop(start_up(&data, &host));
    let file = wait_ready(&data, &[]).await;
    let before = pids(&file);
    let token = token_of(&data);
    let http = client(&data).unwrap();
    let api = |i: usize| file["masters"][i]["api"].as_str().unwrap().to_string();
    let status_of_2 = || async {
        let r = http
            .get(format!("{}/cluster", api(1)))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    };
    // 64 KiB values through master 1 until master 2's disk is full.
    let kv = Kv::with_http(&api(0), http.clone()).with_token(&token);
    let value = "v".repeat(64 << 10);
    let deadline = Instant::now() + Duration::from_secs(180);
    for i in 0.. {
        let _ = kv.create(&format!("fill/{i:06}"), &value).await;
        if i % 10 == 0
            && status_of_2()
                .await
                .is_some_and(|s| s["storage_failure"]["no_space"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "master 2's disk never filled");
    }
    disk.resize("512m");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Value =
            serde_json::from_slice(&std::fs::read(data.join("cluster.json")).unwrap()).unwrap();
        let pid = now["masters"][1]["pid"].as_u64().unwrap();
        if pid != before[1] && alive(pid) && status_of_2().await.is_some_and(|s| s["ready"] == true)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keelson up did not start master 2 again\n{}",
            std::fs::read_to_string(data.join("master-2.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SAFETY: signalling our child.
    unsafe { libc::kill(up.0.id() as i32, libc::SIGTERM) };
    assert!(up.0.wait().unwrap().success());
}
