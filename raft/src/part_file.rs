//! A file written whole or not at all: `NAME.part` (0600), synced, checked, then renamed to
//! `NAME` and its directory synced. A file by that name is always whole; a part not committed
//! is removed when dropped. The state's snapshot file, backups and the cluster file are written
//! this way.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct PartFile {
    part: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    committed: bool,
}

/// An I/O error that names what was being done, and to which file.
fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl PartFile {
    /// Where the part of the file at `path` is written.
    pub fn part_path(path: &Path) -> PathBuf {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        PathBuf::from(part)
    }

    pub fn create(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let part = Self::part_path(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .map_err(at("create", &part))?;
        // A part left by an earlier attempt keeps its mode when opened: 0600 all the same.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(at("chmod 600", &part))?;
        Ok(PartFile {
            part,
            path: path.to_path_buf(),
            file,
            committed: false,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).map_err(at("write", &self.part))
    }

    /// Syncs what was written so far: a large file synced a piece at a time does not hold up
    /// other fsyncs on the same disk for as long as its whole dirty pages would.
    pub fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data().map_err(at("sync", &self.part))
    }

    /// [`PartFile::commit`] with nothing to check.
    pub fn finish(self) -> io::Result<()> {
        self.commit(|_| Ok::<_, io::Error>(()))
    }

    /// Syncs the part, checks it with `check`, renames it to its name and syncs the directory.
    pub fn commit<T, E: From<io::Error>>(
        mut self,
        check: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<T, E> {
        self.file.sync_all().map_err(at("sync", &self.part))?;
        let checked = check(&self.part)?;
        std::fs::rename(&self.part, &self.path).map_err(at("rename to", &self.path))?;
        self.committed = true;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(at("sync", dir))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_appears_whole_and_private_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        // An earlier part, world-readable, is taken over as 0600.
        std::fs::write(PartFile::part_path(&path), b"old").unwrap();
        std::fs::set_permissions(
            PartFile::part_path(&path),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let mut f = PartFile::create(&path).unwrap();
        f.write_all(b"new").unwrap();
        assert!(!path.exists(), "visible before its commit");
        // A failed check leaves nothing: neither the file nor its part.
        let failed = f.commit(|_| Err::<(), _>(io::Error::other("bad")));
        assert!(failed.is_err());
        assert!(!path.exists() && !PartFile::part_path(&path).exists());

        let mut f = PartFile::create(&path).unwrap();
        f.write_all(b"whole").unwrap();
        let checked = f.commit(|part| std::fs::read(part)).unwrap();
        assert_eq!(checked, b"whole");
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!PartFile::part_path(&path).exists());
    }
}
