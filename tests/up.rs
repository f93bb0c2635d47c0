//! `keelson up`: a local cluster as child processes, stopped by SIGTERM, resumed with its data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_chaos::Kv;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

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
                    let r = reqwest::Client::new()
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
    let api = file["masters"][1]["api"].as_str().unwrap().to_string();
    let token = token_of(&data);
    assert!(data.join("kubeconfig").exists());
    assert!(std::fs::read_to_string(data.join("kubeconfig"))
        .unwrap()
        .contains(&token));
    // Without the token the API refuses.
    let r = reqwest::get(format!("{api}/api/v1/namespaces/default/pods"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    Kv::new(&api, Duration::from_secs(10))
        .with_token(&token)
        .create("survives", "restart")
        .await
        .expect("write");

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
    let got = Kv::new(&api, Duration::from_secs(10))
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
