//! A small filesystem of its own for a test: a data directory that fills up.

/// A tmpfs mounted for a test, unmounted (lazily) when dropped.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    /// True when this process may mount one (it tries, on a directory of its own); else says
    /// the test is skipped and why (not root, or a container without the privilege).
    pub fn can_mount() -> bool {
        let probe = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(probe.path())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let _ = std::process::Command::new("umount")
                    .arg(probe.path())
                    .output();
                true
            }
            other => {
                eprintln!("skipped: this process cannot mount a tmpfs ({other:?})");
                false
            }
        }
    }

    pub fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount a tmpfs: {out:?}");
        Tmpfs(path.to_path_buf())
    }

    pub fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount the tmpfs: {out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}
