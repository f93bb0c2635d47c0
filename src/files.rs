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

/// A file written as `NAME.part` (0600) and renamed to `NAME` only once synced and checked
/// (the Raft crate's, which writes the state's snapshot file the same way).
pub use keelson_raft::part_file::PartFile;
