//! The official Python `kubernetes` client against a real 3-master cluster with a token file
//! and a hollow agent (a real `keelson agent` process, so its Node is what agents register):
//! runs tests/python/client_scenario.py, which asserts every step itself.
//!
//! Without the `kubernetes` package the test is skipped with a message, unless `CI` is set
//! (CI installs it from .ci/pip-packages), where that is a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keelson_chaos::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const TOKEN: &str = "python-client-token";

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `python3` can import `kubernetes`; the reason if not.
fn client_available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("python3: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kubernetes_client_scenario() {
    if let Err(why) = client_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI needs the Python `kubernetes` package (.ci/pip-packages): {why}");
        }
        eprintln!("skipped: the Python `kubernetes` package is not installed ({why}); `pip install kubernetes` runs this test");
        return;
    }
    let c = Cluster::start_with_token(Path::new(BIN), 3, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, c.ca_pem().unwrap()).unwrap();
    let masters: Vec<String> = c.ids().iter().map(|&id| c.url(id)).collect();
    let agent_log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let agent = Command::new(BIN)
        .args(["agent", "--runtime", "hollow", "--name", "py-node-1"])
        .args(["--address", "127.0.0.1", "--token", TOKEN])
        .arg("--ca-file")
        .arg(&ca)
        .args(["--masters", &masters.join(",")])
        .stdin(Stdio::null())
        .stdout(agent_log.try_clone().unwrap())
        .stderr(agent_log)
        .spawn()
        .expect("start a hollow agent");
    let _agent = KillOnDrop(agent);
    let http = c.client_builder().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let registered = http
            .get(format!("{}/api/v1/nodes/py-node-1", masters[0]))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if registered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hollow agent never registered its node:\n{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client talks to a follower-or-leader alike: master 3.
    let kubeconfig = dir.path().join("kubeconfig");
    c.write_kubeconfig(&kubeconfig, 3, TOKEN);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/client_scenario.py"
    );
    let out_path = dir.path().join("scenario.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&kubeconfig)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            eprintln!("{output}");
            assert!(output.contains("all steps passed"), "{output}");
        }
        Some(s) => panic!("the Python client scenario failed ({s}):\n{output}"),
        None => panic!("the Python client scenario did not finish within 180 s:\n{output}"),
    }
}
