//! Files and directories private to their owner: secrets (private keys, tokens, kubeconfigs)
//! are 0600 and data directories 0700, whether they are new or already there.

use std::path::Path;

use anyhow::Context;

/// Writes a secret (a private key, a token, a kubeconfig) readable by its owner only: created
/// 0600, and an existing file made 0600 before it is written.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// Creates a data directory (and its parents) private to its owner: 0700, an existing one
/// included.
pub fn private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", path.display()))
}

/// A file written as `NAME.part` (0600) and renamed to `NAME` only once synced and checked: a
/// file by that name is always whole, and a part not committed is removed when dropped.
pub struct PartFile {
    part: std::path::PathBuf,
    path: std::path::PathBuf,
    file: std::fs::File,
    committed: bool,
}

impl PartFile {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .with_context(|| format!("create {}", part.display()))?;
        // A part left by an earlier attempt keeps its mode when opened: 0600 all the same.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", part.display()))?;
        Ok(PartFile {
            part,
            path: path.to_path_buf(),
            file,
            committed: false,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        self.file
            .write_all(bytes)
            .with_context(|| format!("write {}", self.part.display()))
    }

    /// Syncs the part, checks it with `check`, renames it to its name and syncs the directory.
    pub fn commit<T>(
        mut self,
        check: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.file
            .sync_all()
            .with_context(|| format!("sync {}", self.part.display()))?;
        let checked = check(&self.part)?;
        std::fs::rename(&self.part, &self.path)
            .with_context(|| format!("rename to {}", self.path.display()))?;
        self.committed = true;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("sync {}", dir.display()))?;
        }
        Ok(checked)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}
