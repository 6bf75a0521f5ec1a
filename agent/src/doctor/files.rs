//! Every file the configuration names (the list is
//! [`crate::config::files::named`]): it exists, has the right kind, owner
//! and mode, and the agent can read it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Area, Finding};
use crate::config::Config;
use crate::config::files::FileKind as Kind;

/// Checks every named file as the agent (`agent_uid`) will use it.
pub(super) fn check(cfg: &Config, agent_uid: u32) -> Vec<Finding> {
    crate::config::files::named(cfg)
        .into_iter()
        .map(|f| check_one(&f.path, f.kind, &f.by, agent_uid))
        .collect()
}

fn check_one(path: &Path, kind: Kind, by: &str, agent_uid: u32) -> Finding {
    let check = path.display().to_string();
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // The agent creates its state directory and a file forwarder's
        // directory (0700) at start.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && kind == Kind::Directory => {
            return Finding::ok(
                Area::Files,
                check,
                format!("{by}: created (0700) when the agent starts"),
            );
        }
        Err(e) => {
            let what = match kind {
                Kind::Secret => {
                    format!("create it with the secret (owned by uid {agent_uid}, mode 0600)")
                }
                Kind::Public => "put the file there".to_owned(),
                Kind::Executable => "install the executable there".to_owned(),
                Kind::Directory => {
                    format!("create the directory (owned by uid {agent_uid}, mode 0700)")
                }
            };
            return Finding::problem(
                Area::Files,
                check,
                format!("{by}: {e}"),
                format!("{what}, or correct {by} in the configuration"),
            );
        }
    };
    let mode = meta.mode() & 0o7777;
    let detail = format!("{by}: owner uid {}, mode {mode:04o}", meta.uid());
    let wrong_type = match kind {
        Kind::Directory => !meta.is_dir(),
        _ => !meta.is_file(),
    };
    if wrong_type {
        return Finding::problem(
            Area::Files,
            check,
            format!(
                "{by}: not a {}",
                if kind == Kind::Directory {
                    "directory"
                } else {
                    "regular file"
                }
            ),
            format!("replace {shown} with the right kind of file, or correct {by}"),
        );
    }
    match kind {
        Kind::Secret | Kind::Directory if meta.uid() != agent_uid => {
            return Finding::problem(
                Area::Files,
                check,
                format!("{detail}: not owned by the agent (uid {agent_uid})"),
                format!("chown {agent_uid} {shown}"),
            );
        }
        Kind::Secret if mode & 0o077 != 0 => {
            return Finding::problem(
                Area::Files,
                check,
                format!("{detail}: group or others can access it, so the agent refuses it"),
                format!("chmod 600 {shown}"),
            );
        }
        Kind::Directory if cfg_dir_is_state(by) && mode & 0o077 != 0 => {
            return Finding::problem(
                Area::Files,
                check,
                format!("{detail}: group or others can enter the agent's state"),
                format!("chmod 700 {shown}"),
            );
        }
        Kind::Public | Kind::Executable if mode & 0o022 != 0 => {
            return Finding::problem(
                Area::Files,
                check,
                format!("{detail}: group or others can rewrite it"),
                format!("chmod go-w {shown}"),
            );
        }
        Kind::Executable if mode & 0o111 == 0 => {
            return Finding::problem(
                Area::Files,
                check,
                format!("{detail}: not executable"),
                format!("chmod +x {shown}, or correct {by}"),
            );
        }
        _ => {}
    }
    if let Some(why) = unreadable(path, &meta, kind, agent_uid) {
        return Finding::problem(
            Area::Files,
            check,
            format!("{detail}: the agent cannot read it ({why})"),
            format!("give uid {agent_uid} read access to {shown}"),
        );
    }
    Finding::ok(Area::Files, check, detail)
}

fn cfg_dir_is_state(by: &str) -> bool {
    by == "agent.state_dir"
}

/// Why the agent could not read `path`, if it could not. When the doctor
/// runs as the agent's user it simply tries; otherwise the mode bits say.
fn unreadable(path: &Path, meta: &std::fs::Metadata, kind: Kind, agent_uid: u32) -> Option<String> {
    if nix::unistd::geteuid().as_raw() == agent_uid {
        let opened = if kind == Kind::Directory {
            std::fs::read_dir(path).map(drop)
        } else {
            std::fs::File::open(path).map(drop)
        };
        return opened.err().map(|e| e.to_string());
    }
    if agent_uid == 0 {
        return None;
    }
    let bits = if meta.uid() == agent_uid {
        0o400
    } else {
        0o004
    };
    (meta.mode() & bits == 0).then(|| "mode bits".to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;
    use crate::doctor::Severity;

    fn write(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_secret_must_be_the_agents_alone() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let good = write(dir.path(), "good", 0o600);
        assert_eq!(
            check_one(&good, Kind::Secret, "x", me).severity,
            Severity::Ok
        );
        let open = write(dir.path(), "open", 0o640);
        let f = check_one(&open, Kind::Secret, "x", me);
        assert_eq!(f.severity, Severity::Problem);
        assert_eq!(f.fix.unwrap(), format!("chmod 600 {}", open.display()));
        let f = check_one(&good, Kind::Secret, "x", me + 1);
        assert!(f.fix.unwrap().starts_with(&format!("chown {}", me + 1)));
        let f = check_one(
            &dir.path().join("missing"),
            Kind::Secret,
            "grant a→b password_file",
            me,
        );
        assert_eq!(f.severity, Severity::Problem);
        assert!(f.detail.contains("No such file"), "{}", f.detail);
    }

    #[test]
    fn public_files_may_be_read_but_not_rewritten_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let ca = write(dir.path(), "ca.pem", 0o644);
        assert_eq!(check_one(&ca, Kind::Public, "x", me).severity, Severity::Ok);
        let ca = write(dir.path(), "ca2.pem", 0o666);
        assert_eq!(
            check_one(&ca, Kind::Public, "x", me).severity,
            Severity::Problem
        );
        assert_eq!(
            check_one(&ca, Kind::Directory, "x", me).severity,
            Severity::Problem
        );
    }
}
