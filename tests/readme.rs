//! The README's walkthrough, command by command: the "Try it" and "The seed, end to end"
//! sections are read from README.md and every command in them is run with bash, in order, in a
//! fresh directory, against `keelson up` with Docker agents, and what it shows is checked.
//! A command the README gains without a check here fails the test, so the README and this
//! test cannot drift apart. Placeholders (`<leader pid …>`, `<pod>`) are filled in from the
//! running cluster. At the end, Ctrl-C (SIGINT to the process group, as a terminal sends it)
//! must stop `keelson up` and every child without anything being killed.
//!
//! Needs Docker, busybox-static, curl and kubectl (CI installs them); without Docker the test
//! is skipped with a message, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const README: &str = include_str!("../README.md");
const SECTIONS: [&str; 2] = ["## Try it", "The seed, end to end"];

/// The shell commands of the walkthrough sections, comments stripped, in order.
fn walkthrough() -> Vec<String> {
    let mut out = Vec::new();
    for heading in SECTIONS {
        let start = README.find(heading).expect("README section");
        let rest = &README[start..];
        let block = rest.split("```sh\n").nth(1).expect("a sh block");
        let block = block.split("```").next().unwrap();
        for line in block.lines() {
            let cmd = match line.find("  #") {
                Some(i) => &line[..i],
                None => line,
            }
            .trim();
            if !cmd.is_empty() {
                out.push(cmd.to_string());
            }
        }
    }
    out
}

/// `keelson up` in its own process group, and what it leaves on the Docker engine.
struct Up {
    child: Child,
    dir: PathBuf,
}

impl Up {
    fn cluster(&self) -> Value {
        let bytes = std::fs::read(self.dir.join(".keelson/cluster.json")).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    fn pids(&self) -> Vec<i32> {
        let c = self.cluster();
        ["masters", "agents"]
            .iter()
            .flat_map(|k| c[k].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    }

    /// The last lines of every master's and agent's log, for a failure message.
    fn log_tails(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join(".keelson"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        let mut out = String::new();
        for path in names {
            let tail = keelson_chaos::cluster::file_tail(&path, 40);
            out.push_str(&format!("--- {} (last 40 lines)\n{tail}\n", path.display()));
        }
        out
    }

    fn docker_ids(&self) -> Vec<String> {
        let id = self.cluster()["cluster_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            return Vec::new();
        }
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.keelson.cluster={id}"))
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: signals to our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        // What the cluster leaves on the engine: containers and its Docker networks.
        let _ = Command::new(BIN)
            .args(["down", "--data-dir"])
            .arg(self.dir.join(".keelson"))
            .output();
        let ids = self.docker_ids();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

struct Shell {
    dir: PathBuf,
    path: String,
    /// Function definitions seen so far (`kcurl() { … }`), prepended to every command.
    prelude: String,
}

struct Run {
    ok: bool,
    out: String,
}

impl Shell {
    fn run(&self, cmd: &str) -> Run {
        let script = format!("{}\n{cmd}", self.prelude);
        let o = Command::new("bash")
            .args(["-c", &script])
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env_remove("KUBECONFIG")
            .env_remove("KEELSON_SERVER")
            .env_remove("KEELSON_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        Run {
            ok: o.status.success(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }

    /// Runs `cmd` once; it must succeed and show `want`.
    fn once(&self, cmd: &str, want: &[&str]) -> String {
        let r = self.run(cmd);
        assert!(
            r.ok && want.iter().all(|w| r.out.contains(w)),
            "README command {cmd:?} should succeed and show {want:?}; it showed:\n{}",
            r.out
        );
        r.out
    }

    /// Re-runs a reading command until it succeeds and `check` accepts its output.
    async fn until(&self, cmd: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.run(cmd);
            if r.ok && check(&r.out) {
                return r.out;
            }
            assert!(
                Instant::now() < deadline,
                "README command {cmd:?} never showed {what} within 120 s; last:\n{}",
                r.out
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn docker_available() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "-f", "{{.ID}}"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("docker: {e}")),
    }
}

/// Lines of `keelson ctl get pods` for pods whose name starts with `prefix`.
fn pod_lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn running(out: &str, prefix: &str, n: usize) -> bool {
    let lines = pod_lines(out, prefix);
    lines.len() == n && lines.iter().all(|l| l.contains("Running"))
}

/// The leader's id, as `keelson ctl masters list` shows it.
fn leader(sh: &Shell) -> Option<String> {
    let out = sh.run("keelson ctl masters list").out;
    out.lines()
        .find(|l| l.contains("leader"))
        .and_then(|l| Some(l.split_whitespace().next()?.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    if let Err(why) = docker_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs a Docker engine: {why}"
        );
        eprintln!("skipped: no Docker engine ({why})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::os::unix::fs::symlink(repo.join("examples"), dir.join("examples")).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut sh = Shell {
        dir: dir.clone(),
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        prelude: String::new(),
    };
    let mut up: Option<Up> = None;
    let commands = walkthrough();
    assert!(commands.len() >= 20, "README sections read: {commands:?}");
    for cmd in &commands {
        eprintln!("README $ {cmd}");
        let c = cmd.as_str();
        match c {
            _ if c.starts_with("cargo run --release -- up") => {
                let args = c.trim_start_matches("cargo run --release -- ");
                let log = std::fs::File::create(dir.join("up.out")).unwrap();
                let child = {
                    use std::os::unix::process::CommandExt;
                    Command::new(BIN)
                        .args(args.split_whitespace())
                        .current_dir(&dir)
                        .env("PATH", &sh.path)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log)
                        .process_group(0)
                        .spawn()
                        .expect("keelson up")
                };
                up = Some(Up {
                    child,
                    dir: dir.clone(),
                });
                let deadline = Instant::now() + Duration::from_secs(120);
                while !std::fs::read_to_string(dir.join("up.out"))
                    .unwrap_or_default()
                    .contains("ready: try")
                {
                    let u = up.as_mut().unwrap();
                    let status = u.child.try_wait().unwrap();
                    let out = std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
                    assert!(
                        status.is_none(),
                        "keelson up exited ({status:?}):\n{out}\n{}",
                        u.log_tails()
                    );
                    assert!(
                        Instant::now() < deadline,
                        "keelson up not ready in 120 s:\n{out}\n{}",
                        u.log_tails()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            "keelson ctl masters list" => {
                sh.until(c, "a leader among 3 masters", |o| {
                    o.contains("leader") && o.lines().count() >= 4
                })
                .await;
            }
            _ if c.starts_with("keelson ctl kv put greeting hello") => {
                sh.once(c, &[]);
            }
            _ if c.starts_with("kcurl() {") => {
                sh.prelude.push_str(c);
                sh.prelude.push('\n');
            }
            _ if c.starts_with("kcurl ") && c.contains("/kv/greeting") => {
                sh.once(c, &["hello"]);
            }
            _ if c.starts_with("kcurl ") && c.contains("/metrics | grep") => {
                sh.once(c, &["keelson_raft_is_leader"]);
            }
            _ if c.starts_with("kubectl --kubeconfig .keelson/kubeconfig get nodes") => {
                sh.until(c, "both Docker nodes Ready", |o| {
                    ["node-1", "node-2"]
                        .iter()
                        .all(|n| o.lines().any(|l| l.starts_with(n) && l.contains(" Ready")))
                })
                .await;
            }
            _ if c.starts_with("kill -9 <leader pid") => {
                let id = leader(&sh).expect("a leader before the kill");
                let file = up.as_ref().unwrap().cluster();
                let pid = file["masters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["id"].to_string() == id)
                    .and_then(|m| m["pid"].as_i64())
                    .expect("the leader's pid in cluster.json");
                sh.once(&format!("kill -9 {pid}"), &[]);
                let new = sh
                    .until("keelson ctl masters list", "a new leader", |o| {
                        o.lines()
                            .any(|l| l.contains("leader") && !l.starts_with(&id))
                    })
                    .await;
                eprintln!("after killing master {id}:\n{new}");
            }
            _ if c.starts_with("keelson ctl create -f examples/web.yaml") => {
                sh.once(c, &["replicationcontroller/web created"]);
            }
            "keelson ctl get pods" => {
                sh.until(c, "the web pod Running", |o| running(o, "web-", 1))
                    .await;
            }
            _ if c.starts_with("keelson ctl apply -f examples/web.yaml") => {
                sh.once(c, &["replicationcontroller/web unchanged"]);
            }
            "keelson ctl scale rc web --replicas 3" => {
                sh.once(c, &["replicationcontroller/web scaled"]);
                sh.until("keelson ctl get pods", "3 web pods Running", |o| {
                    running(o, "web-", 3)
                })
                .await;
            }
            "keelson ctl describe rc web" => {
                sh.once(c, &["web", "Replicas:", "3 current / 3 desired"]);
            }
            "keelson ctl delete -f examples/web.yaml" => {
                sh.once(c, &["replicationcontroller \"web\" deleted"]);
                sh.until("keelson ctl get pods", "the web pods gone", |o| {
                    pod_lines(o, "web-").is_empty()
                })
                .await;
            }
            "keelson ctl create -f examples/seed/replication-controller.json" => {
                sh.once(c, &["replicationcontroller/mysiteController created"]);
            }
            "keelson ctl create -f examples/seed/service.json" => {
                sh.once(c, &["service/mysite created"]);
            }
            "keelson ctl get pods -o wide" => {
                let out = sh
                    .until(c, "2 mysite pods Running", |o| {
                        running(o, "mysitecontroller-", 2)
                    })
                    .await;
                for l in pod_lines(&out, "mysitecontroller-") {
                    assert!(l.contains("node-"), "NODE column: {l}");
                }
            }
            _ if c.starts_with("curl 127.0.0.11:10000; curl 127.0.0.12:10000") => {
                sh.until(c, "the site through both nodes' proxies", |o| {
                    o.matches("mysite: served by pod mysitecontroller-").count() == 2
                })
                .await;
            }
            "keelson ctl get svc mysite" => {
                sh.once(c, &["mysite", "CLUSTER-IP", "10000/TCP"]);
            }
            _ if c.starts_with("curl <mysite's CLUSTER-IP>:10000") => {
                let svc: Value =
                    serde_json::from_str(&sh.once("keelson ctl get svc mysite -o json", &[]))
                        .expect("the service as JSON");
                let ip = svc["spec"]["clusterIP"].as_str().expect("a cluster IP");
                sh.until(
                    &c.replace("<mysite's CLUSTER-IP>", ip),
                    "the site on its cluster IP",
                    |o| o.contains("mysite: served by pod mysitecontroller-"),
                )
                .await;
            }
            "keelson ctl scale rc mysiteController --replicas 3" => {
                sh.once(c, &["replicationcontroller/mysiteController scaled"]);
                sh.until("keelson ctl get pods", "3 mysite pods Running", |o| {
                    running(o, "mysitecontroller-", 3)
                })
                .await;
            }
            _ if c.starts_with("docker kill <a k8s_mysite_") => {
                let up = up.as_ref().unwrap();
                let id = up.cluster()["cluster_id"].as_str().unwrap().to_string();
                let names = sh.once(
                    &format!(
                        "docker ps --filter label=io.keelson.cluster={id} --filter name=k8s_mysite_ --format '{{{{.Names}}}}'"
                    ),
                    &["k8s_mysite_"],
                );
                let victim = names.lines().next().unwrap().trim().to_string();
                sh.once(&format!("docker kill {victim}"), &[]);
                sh.until("keelson ctl get pods", "a mysite pod with 1 restart", |o| {
                    pod_lines(o, "mysitecontroller-")
                        .iter()
                        .any(|l| l.split_whitespace().nth(3) == Some("1"))
                })
                .await;
            }
            _ if c.starts_with("keelson ctl logs <pod>") => {
                let pods = sh.once("keelson ctl get pods -o name", &["mysitecontroller-"]);
                let pod = pods
                    .lines()
                    .find(|l| l.contains("mysitecontroller-"))
                    .unwrap()
                    .trim_start_matches("pod/")
                    .to_string();
                sh.once(&c.replace("<pod>", &pod), &[]);
            }
            "keelson ctl delete rc mysiteController" => {
                sh.once(c, &["replicationcontroller \"mysiteController\" deleted"]);
                let up = up.as_ref().unwrap();
                let id = up.cluster()["cluster_id"].as_str().unwrap().to_string();
                sh.until(
                    &format!(
                        "docker ps --filter label=io.keelson.cluster={id} --filter name=k8s_mysite_ --format '{{{{.Names}}}}'"
                    ),
                    "the mysite containers gone",
                    |o| o.trim().is_empty(),
                )
                .await;
            }
            other => {
                panic!("the README command {other:?} has no check in tests/readme.rs: add one")
            }
        }
    }

    // Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
    let mut up = up.expect("the walkthrough starts keelson up");
    let pids = up.pids();
    assert!(pids.len() >= 4, "masters and agents: {pids:?}");
    let started = Instant::now();
    // SAFETY: a signal to our own child's process group.
    unsafe { libc::kill(-(up.child.id() as i32), libc::SIGINT) };
    let deadline = started + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "keelson up still running 15 s after Ctrl-C:\n{}",
            std::fs::read_to_string(dir.join("up.out")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    let out = std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
    eprintln!("keelson up stopped {took:?} after Ctrl-C ({status})");
    assert!(status.success(), "keelson up after Ctrl-C: {status}\n{out}");
    assert!(
        !out.contains("killing it"),
        "a child had to be killed:\n{out}"
    );
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} outlived keelson up");
    }
}

/// Documentation names no directory of one machine (a home, a workspace): paths are relative
/// to the repository or placeholders such as `<dir>`.
#[test]
fn docs_name_no_machine_paths() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![repo.join("README.md")];
    for e in std::fs::read_dir(repo.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            // Built from parts, so this file does not name them itself.
            for bad in ["work", "home", "root", "Users"].map(|d| format!("/{d}/")) {
                assert!(
                    !line.contains(&bad),
                    "{}:{}: names a machine's directory ({bad}): {line}",
                    f.display(),
                    i + 1
                );
            }
        }
    }
}
