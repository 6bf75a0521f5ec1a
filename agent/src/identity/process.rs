//! Process facts for one connection: what the kernel recorded at connect()
//! time, completed from `/proc/<tgid>` while the process still exists.
//! Nothing is guessed: a fact that cannot be read stays `None`.

use std::fs;
use std::path::Path;

use warden_common::{ConnMeta, MATCH_CGROUP};

use crate::audit::event::ProcessInfo;
use crate::ebpf::{cgroup, keys};

/// Builds the audit view of the caller. `enrolled_path` is the configured
/// cgroup path the kernel matched, used when the process is already gone.
pub fn process_info(
    meta: &ConnMeta,
    cgroup_mount: &Path,
    enrolled_path: Option<&str>,
) -> ProcessInfo {
    let tgid = meta.tgid;
    let exe = fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    // Trust /proc's cgroup path only if it still names the cgroup the kernel saw.
    let cgroup_path = cgroup::process_cgroup_path(tgid)
        .ok()
        .filter(|p| {
            cgroup::cgroup_id(&cgroup::cgroup_dir(cgroup_mount, p)).ok() == Some(meta.cgroup_id)
        })
        .or_else(|| {
            (meta.match_kind == MATCH_CGROUP && meta.matched_id == meta.cgroup_id)
                .then(|| enrolled_path.map(str::to_owned))
                .flatten()
        });
    let comm = keys::comm(meta);
    ProcessInfo {
        pid: Some(meta.pid),
        tgid: Some(tgid),
        uid: Some(meta.uid),
        gid: Some(meta.gid),
        comm: (!comm.is_empty()).then_some(comm),
        exe,
        cgroup_id: Some(meta.cgroup_id),
        cgroup_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_described() {
        let mut meta = ConnMeta {
            tgid: std::process::id(),
            pid: std::process::id(),
            ..Default::default()
        };
        meta.comm[..4].copy_from_slice(b"test");
        let info = process_info(&meta, Path::new("/nonexistent"), None);
        assert_eq!(info.tgid, Some(std::process::id()));
        assert!(info.exe.is_some());
        assert_eq!(info.comm.as_deref(), Some("test"));
        // The cgroup cannot be confirmed under a bogus mount: not guessed.
        assert_eq!(info.cgroup_path, None);
    }

    #[test]
    fn vanished_process_keeps_kernel_facts_only() {
        let meta = ConnMeta {
            tgid: u32::MAX - 1,
            pid: u32::MAX - 1,
            uid: 1001,
            cgroup_id: 42,
            matched_id: 42,
            match_kind: MATCH_CGROUP,
            ..Default::default()
        };
        let info = process_info(&meta, Path::new("/sys/fs/cgroup"), Some("/app.slice/x"));
        assert_eq!(info.exe, None);
        assert_eq!(info.uid, Some(1001));
        assert_eq!(info.cgroup_path.as_deref(), Some("/app.slice/x"));
        assert_eq!(info.comm, None);
    }
}
