//! Filesystem helpers shared by the subsystems that keep keys and state on
//! disk: creating a file only if it does not exist (so two agents starting
//! at once agree on one key), and replacing a file atomically. Both write a
//! temporary file first (O_EXCL, O_NOFOLLOW, the final mode from the start),
//! fsync it, put it in place, and fsync the directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

fn write_temp(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_temp_owned(tmp, contents, mode, None)
}

fn write_temp_owned(
    tmp: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        // chown clears set-id bits: the mode is put back as it was.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(contents)?;
    f.sync_all()
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Writes `contents` to `path` only if `path` does not exist yet.
/// `Ok(false)` when it already existed (its content is left alone).
pub fn create_exclusive(path: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    let tmp = temp_path(path);
    let linked = write_temp(&tmp, contents, mode).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `contents` atomically: readers see the old or the new
/// file, never a part.
pub fn replace_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let done = write_temp(&tmp, contents, mode).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done?;
    sync_dir(path);
    Ok(())
}

/// Replaces an operator's file (an allow-list) atomically, keeping its
/// owner, group and mode: a rewrite by the agent (root) must not take the
/// file away from whoever maintains it. A file that does not exist yet is
/// created with `new_mode`, owned by the caller.
pub fn replace_keeping_owner(path: &Path, contents: &[u8], new_mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (mode, owner) = match std::fs::metadata(path) {
        Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (new_mode, None),
        Err(e) => return Err(e),
    };
    let tmp = temp_path(path);
    let done =
        write_temp_owned(&tmp, contents, mode, owner).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done?;
    sync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn replace_keeping_owner_keeps_owner_group_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("orders.toml");
        // New file: the given mode, the caller's owner.
        replace_keeping_owner(&p, b"one", 0o640).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        // An operator's file (uid/gid 4242, mode 0664) stays theirs.
        std::os::unix::fs::chown(&p, Some(4242), Some(4243)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        replace_keeping_owner(&p, b"two", 0o600).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4243, 0o664));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_exclusive_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        assert!(create_exclusive(&p, b"first", 0o600).unwrap());
        assert!(!create_exclusive(&p, b"second", 0o600).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_atomic_replaces_with_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        replace_atomic(&p, b"one", 0o600).unwrap();
        replace_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
