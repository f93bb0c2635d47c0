//! A small filesystem of its own for a test: a data directory that fills up.

/// A tmpfs mounted for a test, unmounted (lazily) when dropped.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    /// True when this process may mount one (root); else says the test is skipped.
    pub fn can_mount() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: mounting a tmpfs needs root");
        }
        root
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
