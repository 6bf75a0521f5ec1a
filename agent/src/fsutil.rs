//! Filesystem helpers shared by the subsystems that keep keys and state on
//! disk: creating a file only if it does not exist (so two agents starting
//! at once agree on one key), and replacing a file atomically. Both write a
//! temporary file first (O_EXCL, O_NOFOLLOW, the final mode from the start),
//! fsync it, put it in place, and fsync the directory.
//!
//! Secrets (upstream passwords, HTTP credentials, masking HMAC keys, TLS
//! client keys, forwarders' tokens, the token-signing key, the audit
//! checkpoint key, the local CA key) are read through one function,
//! [`read_secret`]: opened without following a symlink, checked on the
//! opened descriptor (a regular file, owned by the agent's effective uid, no
//! group or other permission bits), then read up to [`MAX_SECRET_BYTES`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The largest secret file read (keys and tokens are far smaller).
pub const MAX_SECRET_BYTES: u64 = 1024 * 1024;

/// Why a secret file was refused. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Opening failed: missing, unreadable, or a symlink (`ELOOP`).
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is accessible to group or others (mode {mode:04o}); chmod 600 it", path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("{} is owned by uid {owner}, not by the agent (uid {agent})", path.display())]
    Owner {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_SECRET_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
}

impl SecretError {
    /// The file does not exist (callers that create a missing key ask).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads the secret at `path`: opened with `O_NOFOLLOW`; the opened file
/// (fstat, so it cannot be swapped after the check) must be a regular
/// file owned by the agent's effective uid with no group or other
/// permission bits; at most [`MAX_SECRET_BYTES`].
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| SecretError::Open {
            path: path.to_owned(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretError::NotRegular {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    let agent = nix::unistd::geteuid().as_raw();
    if meta.uid() != agent {
        return Err(SecretError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            agent,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// [`read_secret`], `None` when the file does not exist.
pub fn read_secret_optional(path: &Path) -> Result<Option<Vec<u8>>, SecretError> {
    match read_secret(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

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
    use super::*;

    fn secret(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn read_secret_reads_the_agents_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = secret(dir.path(), "pw", 0o600);
        assert_eq!(read_secret(&p).unwrap(), b"s3cret\n");
        let p = secret(dir.path(), "ro", 0o400);
        assert_eq!(read_secret(&p).unwrap(), b"s3cret\n");
    }

    #[test]
    fn read_secret_refuses_group_or_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644] {
            let p = secret(dir.path(), &format!("m{mode:o}"), mode);
            match read_secret(&p) {
                Err(e @ SecretError::Mode { .. }) => {
                    assert!(e.to_string().contains(&format!("mode {mode:04o}")), "{e}");
                    assert!(e.to_string().contains("chmod 600"), "{e}");
                }
                other => panic!("{mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn read_secret_refuses_symlinks_directories_and_strangers() {
        use std::os::unix::fs::DirBuilderExt;
        let dir = tempfile::tempdir().unwrap();
        let real = secret(dir.path(), "real", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // O_NOFOLLOW: the link itself is refused, whatever it points at.
        match read_secret(&link) {
            Err(SecretError::Open { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ELOOP));
            }
            other => panic!("{other:?}"),
        }
        let sub = dir.path().join("sub");
        std::fs::DirBuilder::new().mode(0o700).create(&sub).unwrap();
        assert!(matches!(
            read_secret(&sub),
            Err(SecretError::NotRegular { .. })
        ));
        let missing = read_secret(&dir.path().join("missing")).unwrap_err();
        assert!(missing.is_not_found());
        assert_eq!(
            read_secret_optional(&dir.path().join("missing")).unwrap(),
            None
        );
        // Another owner (only root can give a file away).
        if nix::unistd::geteuid().is_root() {
            let p = secret(dir.path(), "theirs", 0o600);
            std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
            match read_secret(&p) {
                Err(e @ SecretError::Owner { owner: 4242, .. }) => {
                    assert!(e.to_string().contains("not by the agent"), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn read_secret_refuses_an_oversized_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_secret(&p), Err(SecretError::TooLarge { .. })));
    }

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
