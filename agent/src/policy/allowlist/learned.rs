//! What a grant in `mode = "learn"` has seen: each fingerprint with first
//! and last seen, count, the rule policy's decision and one masked
//! example, kept in memory and written to
//! `<state_dir>/learned/<account>+<target>.json` (a file of its own, not
//! the audit store) whenever a new fingerprint appears and at most every
//! [`FLUSH_EVERY`] otherwise. One store per grant lives for the whole
//! process ([`store_for`]), so a configuration reload keeps what was
//! learned.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;

/// Longest time counts stay only in memory.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Most fingerprints learned per grant (a workload that sends unbounded
/// shapes is not one to learn from; the rest are counted, not kept).
pub const MAX_LEARNED: usize = 10_000;

/// Why the learned file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One learned fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    pub id: String,
    pub protocol: String,
    pub text: String,
    /// One example, masked as the audit trail shows it.
    pub example: String,
    /// Milliseconds since the Unix epoch.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: u64,
    /// The rule policy's decision the last time (`allowed`, `denied`...).
    pub decision: String,
}

/// The learned file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LearnedFile {
    /// `ACCOUNT/TARGET`.
    pub grant: String,
    pub fingerprints: BTreeMap<String, Learned>,
    /// Requests not kept because [`MAX_LEARNED`] was reached.
    #[serde(default)]
    pub dropped: u64,
}

/// The file of a grant's learned fingerprints.
pub fn learned_path(state_dir: &Path, account: &str, target: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    state_dir
        .join("learned")
        .join(format!("{}+{}.json", safe(account), safe(target)))
}

impl LearnedFile {
    /// Reads a learned file; an absent file is an empty one.
    pub fn read(path: &Path, grant: &str) -> Result<Self, LearnedError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| LearnedError::Format {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LearnedFile {
                grant: grant.to_owned(),
                ..Default::default()
            }),
            Err(source) => Err(LearnedError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write(&self, path: &Path) -> Result<(), LearnedError> {
        let io = |source| LearnedError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| LearnedError::Format {
            path: path.to_owned(),
            source,
        })?;
        crate::fsutil::replace_atomic(path, &bytes, 0o600).map_err(io)
    }
}

struct Inner {
    file: LearnedFile,
    dirty: bool,
    flushed: Instant,
}

/// A grant's learned fingerprints, shared by its sessions.
pub struct LearnStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LearnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnStore")
            .field("path", &self.path)
            .finish()
    }
}

impl LearnStore {
    /// Opens (or starts) the store at `path`.
    pub fn open(path: PathBuf, grant: &str) -> Self {
        let file = LearnedFile::read(&path, grant).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "learned fingerprints unreadable, starting afresh");
            LearnedFile {
                grant: grant.to_owned(),
                ..Default::default()
            }
        });
        LearnStore {
            path,
            inner: Mutex::new(Inner {
                file,
                dirty: false,
                flushed: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation leaves the map consistent: a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one request.
    pub fn record(&self, fp: &Fingerprint, protocol: &str, example: &str, decision: &str) {
        let now = now_ms();
        let mut guard = self.lock();
        let g = &mut *guard;
        let full = g.file.fingerprints.len() >= MAX_LEARNED;
        let new = match g.file.fingerprints.get_mut(&fp.id) {
            Some(l) => {
                l.count += 1;
                l.last_seen_ms = now;
                if l.decision != decision {
                    l.decision = decision.to_owned();
                }
                false
            }
            None if full => {
                g.file.dropped += 1;
                false
            }
            None => {
                g.file.fingerprints.insert(
                    fp.id.clone(),
                    Learned {
                        id: fp.id.clone(),
                        protocol: protocol.to_owned(),
                        text: fp.text.clone(),
                        example: example.to_owned(),
                        first_seen_ms: now,
                        last_seen_ms: now,
                        count: 1,
                        decision: decision.to_owned(),
                    },
                );
                true
            }
        };
        g.dirty = true;
        if new || g.flushed.elapsed() >= FLUSH_EVERY {
            self.flush_locked(g);
        }
    }

    /// Writes pending counts.
    pub fn flush(&self) {
        let mut g = self.lock();
        if g.dirty {
            self.flush_locked(&mut g);
        }
    }

    fn flush_locked(&self, g: &mut Inner) {
        if let Err(e) = g.file.write(&self.path) {
            tracing::warn!(error = %e, "learned fingerprints not written");
        }
        g.dirty = false;
        g.flushed = Instant::now();
    }
}

impl Drop for LearnStore {
    fn drop(&mut self) {
        self.flush();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The process's one store for a grant's learned file.
pub fn store_for(path: &Path, grant: &str) -> Arc<LearnStore> {
    static STORES: OnceLock<Mutex<HashMap<PathBuf, Arc<LearnStore>>>> = OnceLock::new();
    let mut m = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Arc::clone(
        m.entry(path.to_owned())
            .or_insert_with(|| Arc::new(LearnStore::open(path.to_owned(), grant))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = learned_path(dir.path(), "svc", "db/1");
        let s = LearnStore::open(path.clone(), "svc/db/1");
        let fp = Fingerprint::new("postgres", "select $?".into());
        s.record(&fp, "postgres", "SELECT 1", "allowed");
        s.record(&fp, "postgres", "SELECT 2", "allowed");
        s.flush();
        let f = LearnedFile::read(&path, "x").unwrap();
        let l = &f.fingerprints[&fp.id];
        assert_eq!(l.count, 2);
        assert_eq!(l.example, "SELECT 1");
        assert!(path.ends_with("learned/svc+db_1.json"));
    }
}
