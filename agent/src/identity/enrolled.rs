//! The enrollments in force: who is enrolled ([`Enrollments`]) together
//! with the kernel maps that mirror them. One value, shared by the accept
//! path (which account a connection belongs to), the control socket (live
//! enroll and unenroll), a reload (the new set) and the daemon's once-a-
//! second resync.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use warden_common::ConnMeta;

use super::Enrollments;
use crate::ebpf::{Datapath, DatapathError};

pub struct Enrolled {
    enrollments: Mutex<Enrollments>,
    cgroup_mount: PathBuf,
    datapath: Arc<Datapath>,
}

impl Enrolled {
    pub fn new(enrollments: Enrollments, cgroup_mount: PathBuf, datapath: Arc<Datapath>) -> Self {
        Self {
            enrollments: Mutex::new(enrollments),
            cgroup_mount,
            datapath,
        }
    }

    /// The enrollments, locked. The set stays consistent across a panic
    /// (each update is a single assignment or a map call), so a poisoned
    /// lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Enrollments> {
        self.enrollments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Where cgroup2 is mounted (enrolled cgroups are resolved under it).
    pub fn cgroup_mount(&self) -> &Path {
        &self.cgroup_mount
    }

    /// The account the kernel matched for this connection. A cgroup the
    /// kernel enrolled on its own (an enrolled unit's cgroup, recreated since
    /// the last resolution) is resolved now rather than refused.
    pub fn account_for(&self, meta: &ConnMeta) -> Option<(String, Option<String>)> {
        if let Some(found) = self.lock().account_for(meta) {
            return Some(found);
        }
        if meta.match_kind != warden_common::MATCH_CGROUP {
            return None;
        }
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "syncing enrollments failed");
        }
        self.lock().account_for(meta)
    }

    /// Re-resolves enrolled cgroups and pushes enrollments to the kernel.
    pub fn sync(&self) -> Result<(), DatapathError> {
        let (cg, uids, units) = {
            let mut e = self.lock();
            e.resolve(&self.cgroup_mount);
            (e.cgroup_entries(), e.uid_entries(), e.unit_path_entries())
        };
        self.datapath.sync_unit_paths(&units)?;
        self.datapath.sync_cgroups(&cg)?;
        self.datapath.sync_uids(&uids)
    }

    /// Puts `fresh` in force (a reload), resolved before it replaces the
    /// old set, so no accept in between finds an enrolled caller unknown.
    /// `fresh` is built under the lock, so a live enroll since the caller
    /// read its own set is kept.
    pub fn replace_with(&self, fresh: impl FnOnce() -> Enrollments) {
        let mut guard = self.lock();
        let mut fresh = fresh();
        fresh.resolve(&self.cgroup_mount);
        *guard = fresh;
    }
}
