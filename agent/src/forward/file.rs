//! `kind = "file"`: NDJSON (or CEF lines) appended to a local file, for a
//! log shipper that is already installed (Filebeat, Fluent Bit, Vector).
//!
//! A batch is acknowledged once it is written and fsynced. When appending
//! it would take the file past `rotate_bytes` (and the file is not empty),
//! the file is rotated first: `path.N-1` → `path.N` … `path` → `path.1`,
//! the oldest beyond `keep_files` deleted, and a new `path` created (mode
//! 0600, its directory created 0700 when missing). Shippers that follow by
//! name (all of the above) pick up the new file. Every line ends in `\n`;
//! a batch is never split across two files.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Batch, Failure, ForwardError, Sink, Stop};
use crate::config::Forward;

/// A rotating file output.
pub struct FileSink {
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
    file: Option<(File, u64)>,
}

impl FileSink {
    pub fn new(f: &Forward) -> Result<Self, ForwardError> {
        let path = f.path.clone().unwrap_or_default();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| ForwardError::File {
                    output: f.name.clone(),
                    what: "directory",
                    path: dir.to_owned(),
                    detail: e.to_string(),
                })?;
        }
        Ok(Self {
            path,
            rotate_bytes: f.rotate_bytes,
            keep: f.keep_files.max(1),
            file: None,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let oldest = self.numbered(self.keep);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        sync_dir(&self.path);
        Ok(())
    }

    fn write(&mut self, body: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(self.open()?);
        }
        let len = self.file.as_ref().map_or(0, |(_, l)| *l);
        if len > 0 && len + body.len() as u64 > self.rotate_bytes {
            self.rotate()?;
            self.file = Some(self.open()?);
        }
        let Some((f, len)) = self.file.as_mut() else {
            return Err(std::io::Error::other("file not open"));
        };
        f.write_all(body)?;
        f.sync_data()?;
        *len += body.len() as u64;
        Ok(())
    }
}

impl Sink for FileSink {
    fn deliver(&mut self, batch: &mut Batch, _stop: &Stop) -> Result<(), Failure> {
        let body = super::http::ndjson(batch);
        self.write(&body).map_err(|e| {
            // Reopen next time (the file may have been moved or the disk
            // freed meanwhile).
            self.file = None;
            Failure::Retry {
                error: format!("write {}: {e}", self.path.display()),
                after: None,
            }
        })
    }
}

/// Make a rename durable (best effort: not every filesystem supports it).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Item;

    fn batch(from: u64, n: u64) -> Batch {
        let mut b = Batch::default();
        for seq in from..from + n {
            let line = format!("{{\"seq\":{seq:04}}}").into_bytes();
            b.bytes += line.len();
            b.items.push(Item {
                seq,
                time_ms: 0,
                uid: format!("c:{seq}"),
                notable: false,
                line,
                done: false,
            });
        }
        b
    }

    #[test]
    fn appends_rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.ndjson");
        let mut s = FileSink {
            path: path.clone(),
            rotate_bytes: 60,
            keep: 2,
            file: None,
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let stop = Stop::default();
        // Each line is 13 bytes + newline = 14; 4 lines = 56 bytes fit.
        let mut seq = 1;
        for _ in 0..5 {
            s.deliver(&mut batch(seq, 4), &stop).unwrap();
            seq += 4;
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        // Newest in `path`, then .1, then .2; older ones deleted.
        assert_eq!(read(&path).lines().count(), 4);
        assert!(read(&path).starts_with("{\"seq\":0017}"));
        assert!(read(&s.numbered(1)).starts_with("{\"seq\":0013}"));
        assert!(read(&s.numbered(2)).starts_with("{\"seq\":0009}"));
        assert!(!s.numbered(3).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A batch larger than rotate_bytes still goes, whole, in one file.
        s.deliver(&mut batch(100, 10), &stop).unwrap();
        assert_eq!(read(&path).lines().count(), 10);
    }
}
