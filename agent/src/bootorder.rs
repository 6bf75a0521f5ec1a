//! Boot order: an enrolled systemd service must not start before Warden has
//! attached its programs. Pins live in bpffs, which is empty after a reboot,
//! so until `warden run` has attached (it sends READY=1 only then) nothing
//! redirects the unit's connections.
//!
//! The ordering is a drop-in for the enrolled unit
//! (`/etc/systemd/system/UNIT.d/50-warden.conf`), installed by
//! `warden enroll ACCOUNT --unit UNIT` and printed by `warden drop-in UNIT`
//! for units enrolled in the configuration file:
//!
//! * `Wants=` + `After=warden.service`: at boot the unit waits for Warden's
//!   readiness (`Type=notify`).
//! * `ExecStartPre=+warden status`: the unit does not start at all while
//!   Warden is not answering (it failed to start, or is stopped), rather than
//!   run unprotected. Not `Requires=`: that would also stop or restart every
//!   enrolled unit whenever Warden is restarted (an upgrade), although
//!   enrolled traffic is refused in the kernel meanwhile anyway.
//!
//! Scopes are started by another process (not by systemd from a unit file),
//! so they get no drop-in: order their creator instead.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where administrators' unit drop-ins live.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// File name of Warden's drop-in inside `UNIT.d/`.
pub const DROP_IN_NAME: &str = "50-warden.conf";

#[derive(Debug, Error)]
pub enum BootOrderError {
    #[error("invalid unit name {unit:?}: {reason}")]
    InvalidUnit { unit: String, reason: &'static str },
    #[error(
        "{unit} is a scope: it is started by another process, not from a unit file, so no drop-in can order it after Warden (order the unit that creates it)"
    )]
    Scope { unit: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The drop-in for `unit`, which runs `warden` (this binary's path) with
/// `config` to check that Warden answers before the unit starts.
pub fn drop_in(unit: &str, warden: &Path, config: &Path) -> Result<String, BootOrderError> {
    check_unit(unit)?;
    Ok(format!(
        "# Installed by Warden for the enrolled unit {unit}: it starts only once\n\
         # Warden has attached its programs (after a reboot nothing redirects its\n\
         # connections before that). Removed by `warden unenroll ... --unit {unit}`.\n\
         [Unit]\n\
         Wants=warden.service\n\
         After=warden.service\n\
         \n\
         [Service]\n\
         # '+': with full privileges, whatever the unit's User= (the control\n\
         # socket is root's). Fails, and so stops the start, while Warden is down.\n\
         ExecStartPre=+{warden} --config {config} status\n",
        warden = warden.display(),
        config = config.display(),
    ))
}

/// Path of `unit`'s drop-in below `systemd_dir`.
pub fn drop_in_path(systemd_dir: &Path, unit: &str) -> PathBuf {
    systemd_dir.join(format!("{unit}.d")).join(DROP_IN_NAME)
}

/// Writes `unit`'s drop-in (see [`drop_in`]) below `systemd_dir` and returns
/// its path. The caller then asks systemd to reload.
pub fn install(
    systemd_dir: &Path,
    unit: &str,
    warden: &Path,
    config: &Path,
) -> Result<PathBuf, BootOrderError> {
    let text = drop_in(unit, warden, config)?;
    let path = drop_in_path(systemd_dir, unit);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BootOrderError::Io {
            what: "creating",
            path: dir.to_owned(),
            source,
        })?;
    }
    std::fs::write(&path, text).map_err(|source| BootOrderError::Io {
        what: "writing",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Removes `unit`'s drop-in, if there is one; true when one was removed.
pub fn remove(systemd_dir: &Path, unit: &str) -> Result<bool, BootOrderError> {
    check_unit(unit)?;
    let path = drop_in_path(systemd_dir, unit);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            // The directory only when nothing else is in it.
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BootOrderError::Io {
            what: "removing",
            path,
            source,
        }),
    }
}

fn check_unit(unit: &str) -> Result<(), BootOrderError> {
    if let Some(reason) = crate::config::account::unit_name_problem(unit) {
        return Err(BootOrderError::InvalidUnit {
            unit: unit.to_owned(),
            reason,
        });
    }
    if unit.ends_with(".scope") {
        return Err(BootOrderError::Scope {
            unit: unit.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_orders_the_unit_after_warden_and_checks_it_answers() {
        let t = drop_in(
            "orders-api.service",
            Path::new("/usr/local/bin/warden"),
            Path::new("/etc/warden/warden.toml"),
        )
        .unwrap();
        assert!(t.contains("\nAfter=warden.service\n"), "{t}");
        assert!(t.contains("\nWants=warden.service\n"), "{t}");
        assert!(!t.contains("Requires="), "{t}");
        assert!(
            t.contains(
                "\nExecStartPre=+/usr/local/bin/warden --config /etc/warden/warden.toml status\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn scopes_and_bad_names_get_no_drop_in() {
        let (w, c) = (Path::new("/w"), Path::new("/c"));
        assert!(matches!(
            drop_in("session-1.scope", w, c),
            Err(BootOrderError::Scope { .. })
        ));
        assert!(matches!(
            drop_in("../etc/passwd", w, c),
            Err(BootOrderError::InvalidUnit { .. })
        ));
    }

    #[test]
    fn install_then_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (w, c) = (Path::new("/w"), Path::new("/c"));
        let p = install(dir.path(), "a.service", w, c).unwrap();
        assert_eq!(p, dir.path().join("a.service.d/50-warden.conf"));
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("After=warden.service")
        );
        assert!(remove(dir.path(), "a.service").unwrap());
        assert!(!p.exists() && !dir.path().join("a.service.d").exists());
        assert!(!remove(dir.path(), "a.service").unwrap());
    }
}
