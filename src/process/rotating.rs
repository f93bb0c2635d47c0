//! A log file rotated by size: before a record would take it past `max_bytes`, `PATH` becomes
//! `PATH.1`, older ones shift up to `PATH.backups` (the oldest beyond it removed) and a new,
//! empty `PATH` (0600) is started. Records are never split across files. The audit log and the
//! logs of `keelson up`'s processes are kept this way.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// How a rotated file is kept: its path, the size it rotates at, how many rotated files stay.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub backups: usize,
}

/// An open, rotated file, appended to record by record.
pub struct RotatingFile {
    rotation: Rotation,
    out: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens (creates, 0600) `rotation.path` for appending.
    pub fn open(rotation: Rotation) -> std::io::Result<Self> {
        let file = open(&rotation.path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            rotation,
            out: BufWriter::new(file),
            size,
        })
    }

    /// Appends one record (a line, with its newline), rotating first if it would not fit. A
    /// file that cannot be rotated keeps growing rather than losing the record.
    pub fn write_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.rotation.max_bytes {
            self.out.flush()?;
            match self.rotate() {
                Ok(file) => {
                    self.out = BufWriter::new(file);
                    self.size = 0;
                }
                Err(e) => tracing::warn!("{}: cannot rotate: {e}", self.rotation.path.display()),
            }
        }
        self.out.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// `PATH.(n-1)` → `PATH.n` down to `PATH` → `PATH.1`, and a new `PATH`.
    fn rotate(&self) -> std::io::Result<File> {
        let path = &self.rotation.path;
        if self.rotation.backups == 0 {
            std::fs::remove_file(path)?;
        } else {
            let _ = std::fs::remove_file(rotated(path, self.rotation.backups));
            for n in (1..self.rotation.backups).rev() {
                let _ = std::fs::rename(rotated(path, n), rotated(path, n + 1));
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        open(path)
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The path of rotated file `n` (`PATH.n`).
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_records_whole_and_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::open(Rotation {
            path: path.clone(),
            max_bytes: 100,
            backups: 2,
        })
        .unwrap();
        for i in 0..40 {
            f.write_record(format!("record {i:03} ..........\n").as_bytes())
                .unwrap();
        }
        f.flush().unwrap();
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 100, "{}", p.display());
            assert!(text.lines().all(|l| l.len() == 21), "{text}");
        }
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("record 039 ..........\n"));
    }
}
