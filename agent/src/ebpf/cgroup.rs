//! cgroup v2 discovery: where the unified hierarchy is mounted, cgroup ids,
//! and moving the agent into its own cgroup.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::DatapathError;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones), read from `/proc/self/mounts`.
pub fn cgroup2_mount() -> Result<PathBuf, DatapathError> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|source| DatapathError::Io {
        what: "reading /proc/self/mounts".into(),
        source,
    })?;
    parse_cgroup2_mount(&mounts).ok_or(DatapathError::NoCgroup2)
}

fn parse_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _dev = fields.next()?;
        let dir = fields.next()?;
        let fstype = fields.next()?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// /proc/self/mounts escapes spaces and a few other bytes as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(oct) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Joins a cgroup2 path (`/a/b`, relative to the mount) onto the mount point.
pub fn cgroup_dir(mount: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// The cgroup id of a cgroup2 directory: the kernfs inode number, which is
/// what `bpf_get_current_cgroup_id()` returns.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// The cgroup2 path (relative to the mount) of a process, from `/proc/<pid>/cgroup`.
pub fn process_cgroup_path(pid: u32) -> io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 entry"))
}

/// Moves the calling process (all its threads) into `dir`, creating it if needed.
pub fn move_self_into(dir: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        what: format!("creating agent cgroup {}", dir.display()),
        source,
    })?;
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).map_err(|source| {
        DatapathError::Io {
            what: format!("moving the agent into cgroup {}", dir.display()),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(parse_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn joins_cgroup_paths() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_dir(m, "/"), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            cgroup_dir(m, "/system.slice/x.service"),
            PathBuf::from("/sys/fs/cgroup/system.slice/x.service")
        );
    }
}
