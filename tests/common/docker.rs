//! Docker for the integration tests: the keelson containers of a cluster, Docker agent
//! processes, the local images, a Docker network of the test's own, and the seed's page.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};

use keelson_chaos::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

/// One container as `docker ps -a` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub id: String,
    pub uid: String,
    pub container: String,
    pub node: String,
    pub running: bool,
}

/// The keelson containers carrying `label` (`key=value`).
pub fn containers(label: &str) -> Vec<Container> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--filter", &format!("label={label}")])
        .args([
            "--format",
            "{{.ID}} {{.State}} {{.Label \"io.keelson.pod.uid\"}} {{.Label \"io.keelson.container\"}} {{.Label \"io.keelson.node\"}}",
        ])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5).then(|| Container {
                id: f[0].to_string(),
                running: f[1] == "running",
                uid: f[2].to_string(),
                container: f[3].to_string(),
                node: f[4].to_string(),
            })
        })
        .collect()
}

/// Removes every container of a cluster when a test ends, passed or not.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids: Vec<String> = containers(&self.0).into_iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn build_images() {
    let out = Command::new(BIN)
        .arg("images")
        .output()
        .expect("keelson images");
    assert!(
        out.status.success(),
        "keelson images failed (is Docker running and busybox-static installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET http://addr:port/` → the body, if it answered.
pub async fn fetch(http: &reqwest::Client, addr: &str, port: u16) -> Option<String> {
    let resp = http
        .get(format!("http://{addr}:{port}/"))
        .send()
        .await
        .ok()?;
    resp.status()
        .is_success()
        .then_some(resp.text().await.ok()?)
}

/// The pod named by a page of `user/mysite` ("mysite: served by pod NAME").
pub fn served_by(page: &str) -> Option<String> {
    page.trim()
        .strip_prefix("mysite: served by pod ")
        .map(str::to_string)
}

pub fn random_loopback() -> [u8; 3] {
    let x: u32 = rand_u32();
    [
        100 + (x % 100) as u8,
        ((x >> 8) % 250) as u8 + 1,
        ((x >> 16) % 200) as u8 + 1,
    ]
}

pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// A Docker agent process of a test cluster, killed (SIGKILL) when dropped.
pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub address: String,
    masters: Vec<String>,
    log: std::path::PathBuf,
    /// Flags beyond the name, address and masters (`--proxy-mode`, `--pod-network`).
    extra: Vec<String>,
}

impl Agent {
    pub fn start(c: &Cluster, name: &str, address: &str, extra: &[&str]) -> Agent {
        let mut a = Agent {
            child: None,
            name: name.to_string(),
            address: address.to_string(),
            masters: c.ids().iter().map(|id| c.url(*id)).collect(),
            log: c.root().join(format!("agent-{name}.log")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(BIN)
                .args(["agent", "--runtime", "docker", "--name", &self.name])
                .args(&self.extra)
                .args(["--address", &self.address])
                .args(["--api-addr", &format!("{}:10250", self.address)])
                .args(["--masters", &self.masters.join(",")])
                .args(["--heartbeat-ms", "300"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start an agent"),
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as a service manager stops it; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the agent runs");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    /// Reconcile passes done (the runtime's container listings), from the agent's metrics.
    pub async fn passes(&self, http: &reqwest::Client) -> Option<u64> {
        let text = http
            .get(format!("http://{}:10250/metrics", self.address))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| {
                l.starts_with("keelson_agent_runtime_operation_duration_seconds_count")
                    && l.contains("operation=\"list\"")
            })?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    pub async fn ready(&self, http: &reqwest::Client) -> bool {
        http.get(format!("http://{}:10250/readyz", self.address))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `uid → running container ids` of the pods of a cluster.
pub fn running_by_pod(label: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in containers(label).into_iter().filter(|c| c.running) {
        out.entry(c.uid).or_default().insert(c.id);
    }
    out
}

/// A Docker bridge network of the test's own, with the subnet Docker picked: pods join it, or
/// its subnet is a service cluster IP range, so every packet a test sends to it stays on this
/// machine. Removed when dropped (after the containers on it).
pub struct Network {
    pub name: String,
    pub subnet: String,
}

impl Network {
    pub fn create(tag: &str) -> Network {
        let name = format!("keelson-test-{tag}-{:08x}", rand_u32());
        let out = Command::new("docker")
            .args(["network", "create", "--driver", "bridge", &name])
            .output()
            .expect("docker network create");
        assert!(out.status.success(), "docker network create: {out:?}");
        let out = Command::new("docker")
            .args([
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                &name,
            ])
            .output()
            .expect("docker network inspect");
        let subnet = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|s| !s.contains(':'))
            .unwrap_or_else(|| panic!("network {name} has no IPv4 subnet: {out:?}"))
            .to_string();
        Network { name, subnet }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Containers still attached (a failed test's) go first.
        let out = Command::new("docker")
            .args([
                "network",
                "inspect",
                "--format",
                "{{range $id, $c := .Containers}}{{$id}} {{end}}",
                &self.name,
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates the seed's replication controller and service, verbatim, through v1beta1.
pub async fn create_seed(api: &super::Api) {
    for (path, file) in [
        ("replicationControllers", "replication-controller.json"),
        ("services", "service.json"),
    ] {
        let body: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!(
                "{}/examples/seed/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let (code, v) = api
            .call("POST", &format!("/api/v1beta1/{path}"), Some(&body))
            .await;
        assert_eq!(code, 201, "POST {file}: {v}");
    }
}
