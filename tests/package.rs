//! The Debian package: `cargo xtask package` builds it from this build's
//! binary and runs lintian (any error or warning fails); dpkg installs it
//! into a throwaway root (`--root`, maintainer scripts run chrootless with
//! DPKG_ROOT, so the host is never touched); files, modes, the conffile
//! and the unit's enablement are checked, the shipped configuration passes
//! `check-config`; then remove keeps the configuration and state, purge
//! removes the configuration and keeps the state unless
//! WARDEN_PURGE_STATE=yes.
//!
//! Run as root: `cargo test -p warden --test package -- --test-threads=1`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The xtask binary beside this build's warden (built by `cargo xtask`),
/// else built now.
fn xtask() -> Command {
    let beside = Path::new(WARDEN).with_file_name("xtask");
    if beside.exists() {
        Command::new(beside)
    } else {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(workspace())
            .args(["run", "--quiet", "--package", "xtask", "--"]);
        c
    }
}

fn ok(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

/// dpkg operating on the throwaway root.
fn dpkg(root: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("dpkg");
    ok(out, &format!("dpkg {args:?}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn new_root(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    root
}

#[test]
fn package_is_lintian_clean_installs_and_purges_in_a_throwaway_root() {
    let tmp = tempfile::Builder::new()
        .prefix("warden-package-")
        .tempdir()
        .unwrap();
    let out_dir = tmp.path().join("out");
    let built = ok(
        xtask()
            .args(["package", "--binary", WARDEN, "--out"])
            .arg(&out_dir)
            .output()
            .unwrap(),
        "cargo xtask package",
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = out_dir.join(format!("warden_{version}_amd64.deb"));
    assert!(deb.exists(), "{built}");

    // The control data.
    let fields = ok(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb --field",
    );
    for want in [
        "Package: warden",
        &format!("Version: {version}"),
        "Architecture: amd64",
        "Depends: libc6",
        "init-system-helpers",
    ] {
        assert!(fields.contains(want), "{want} missing in:\n{fields}");
    }
    let listing = ok(
        Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb --contents",
    );
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "every file root's:\n{listing}"
    );

    let root = new_root(tmp.path());
    let installed = dpkg(&root, &["--install", deb.to_str().unwrap()], &[]);
    assert!(
        installed.contains("systemd is not running") || Path::new("/run/systemd/system").exists(),
        "postinst says what to do without systemd: {installed}"
    );

    // Files and modes.
    for (path, want) in [
        ("usr/bin/warden", 0o755),
        ("etc/warden", 0o700),
        ("etc/warden/warden.toml", 0o600),
        ("var/lib/warden", 0o700),
        ("lib/systemd/system/warden.service", 0o644),
        ("usr/share/man/man1/warden.1.gz", 0o644),
        ("usr/share/man/man1/warden-doctor.1.gz", 0o644),
        ("usr/share/man/man1/warden-audit-verify.1.gz", 0o644),
        ("usr/share/bash-completion/completions/warden", 0o644),
        ("usr/share/zsh/vendor-completions/_warden", 0o644),
        ("usr/share/fish/vendor_completions.d/warden.fish", 0o644),
        ("usr/share/doc/warden/copyright", 0o644),
        ("usr/share/doc/warden/changelog.gz", 0o644),
    ] {
        assert_eq!(mode(&root.join(path)), want, "mode of /{path}");
    }
    assert!(
        !root
            .join("usr/share/man/man1/warden-generate-assets.1.gz")
            .exists(),
        "hidden commands get no page"
    );
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/warden.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/warden --config /etc/warden/warden.toml run"));
    // Enabled for systemd boots (deb-systemd-helper under DPKG_ROOT).
    let wants = root.join("etc/systemd/system/multi-user.target.wants/warden.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/lib/systemd/system/warden.service")
    );
    let conffiles = ok(
        Command::new("dpkg-query")
            .arg(format!("--root={}", root.display()))
            .args(["-W", "-f", "${Conffiles}", "warden"])
            .output()
            .unwrap(),
        "dpkg-query",
    );
    assert!(conffiles.contains("/etc/warden/warden.toml"), "{conffiles}");

    // The installed binary accepts the installed configuration, which
    // enrolls nothing.
    let config = root.join("etc/warden/warden.toml");
    let check = ok(
        Command::new(root.join("usr/bin/warden"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap(),
        "check-config of the shipped configuration",
    );
    assert!(check.contains("ok (0 targets, 0 accounts"), "{check}");
    assert!(
        std::fs::metadata(root.join("usr/bin/warden"))
            .unwrap()
            .uid()
            == 0,
        "installed as root's"
    );

    // Remove: the binary goes; configuration and state stay.
    std::fs::write(root.join("var/lib/warden/audit.db"), "evidence").unwrap();
    dpkg(&root, &["--remove", "warden"], &[]);
    assert!(!root.join("usr/bin/warden").exists());
    assert!(config.exists(), "remove keeps the conffile");
    assert!(root.join("var/lib/warden/audit.db").exists());

    // Purge without asking: the configuration goes, the audit trail stays.
    let purged = dpkg(&root, &["--purge", "warden"], &[]);
    assert!(!config.exists(), "purge removes the conffile");
    assert!(root.join("var/lib/warden/audit.db").exists(), "{purged}");
    assert!(purged.contains("WARDEN_PURGE_STATE=yes"), "{purged}");
    assert!(!wants.exists(), "purge forgets the enablement");

    // Purge when asked: the state goes too, and nothing of the package is left.
    dpkg(&root, &["--install", deb.to_str().unwrap()], &[]);
    dpkg(
        &root,
        &["--purge", "warden"],
        &[("WARDEN_PURGE_STATE", "yes")],
    );
    assert!(!root.join("var/lib/warden").exists());
    for gone in [
        "usr/bin/warden",
        "etc/warden",
        "lib/systemd/system/warden.service",
    ] {
        assert!(!root.join(gone).exists(), "/{gone} left after purge");
    }
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: warden"), "{status}");
}
