//! The Debian package: `cargo xtask package` builds it from this build's
//! binary and runs lintian (any error or warning fails); dpkg installs it
//! into a throwaway root (`--root`, maintainer scripts run chrootless with
//! DPKG_ROOT, so the host is never touched); files, modes, the conffile
//! and the unit's enablement are checked, the shipped configuration passes
//! `check-config`; then remove keeps the configuration and state, purge
//! removes the configuration and keeps the state unless
//! WARDEN_PURGE_STATE=yes.
//!
//! Upgrade and downgrade (issue 21, item 2): with the agent installed from
//! the package running and an enrolled client connecting in a tight loop,
//! `dpkg -i` of a newer version and then of the older one, each followed by
//! the restart the unit does: no connection goes direct, every answered one
//! is in the audit trail, and the store's chain verifies across both. The
//! same with a newer package whose agent has the next eBPF layout version
//! (a second build with `warden-common/layout-next`): the new agent pins
//! fresh maps under another version directory, replaces the programs, and
//! only then releases the old version's pins.
//!
//! Run as root: `cargo test -p warden --test package -- --test-threads=1`.

mod common;

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

/// The package of this build, built (and lintian-checked) once for all
/// the tests of this file.
fn built_package() -> &'static Path {
    static DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = std::env::temp_dir().join(format!("warden-package-{}", std::process::id()));
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
        deb
    })
}

#[test]
fn package_is_lintian_clean_installs_and_purges_in_a_throwaway_root() {
    let tmp = tempfile::Builder::new()
        .prefix("warden-package-")
        .tempdir()
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let deb = built_package().to_path_buf();

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

/// `deb` repacked as version `version` (same files and scripts).
fn repack(deb: &Path, version: &str, out: &Path) -> PathBuf {
    let tree = out.join(format!("tree-{version}"));
    ok(
        Command::new("dpkg-deb")
            .arg("-R")
            .arg(deb)
            .arg(&tree)
            .output()
            .unwrap(),
        "dpkg-deb -R",
    );
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let new = out.join(format!("warden_{version}_amd64.deb"));
    ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&new)
            .output()
            .unwrap(),
        "dpkg-deb -b",
    );
    new
}

#[test]
fn upgrade_and_downgrade_under_load_send_nothing_direct_and_audit_every_connection() {
    let env = common::TestEnv::new();
    let out_dir = env.tmp.path().join("debs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let old = out_dir.join(format!("warden_{version}_amd64.deb"));
    std::fs::copy(built_package(), &old).unwrap();
    let newer = repack(&old, &format!("{version}+up1"), &out_dir);
    under_load(env, &old, &newer, |_, _| {});
}

/// With the agent installed from `old` running and an enrolled client
/// connecting in a tight loop, `dpkg -i` of `newer`, then of `old`, each
/// followed by the restart the unit does (`after` looks at the agent after
/// each, told `upgrade` or `downgrade`): no connection goes direct, every
/// answered one is in the audit trail, and the store's chain verifies
/// across both.
fn under_load(
    mut env: common::TestEnv,
    old: &Path,
    newer: &Path,
    mut after: impl FnMut(&common::TestEnv, &str),
) {
    let db = common::EchoServer::start("127.0.0.1:0");
    let app = env.cgroup("app");
    let version = env!("CARGO_PKG_VERSION");
    let root = new_root(env.tmp.path());
    dpkg(&root, &["--install", old.to_str().unwrap()], &[]);
    env.agent_binary = root.join("usr/bin/warden");
    env.write_config(&format!(
        "{}[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\n\
         [[account]]\nname = \"app\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        db.addr
    ));
    env.start();
    after(&env, "install");

    // The enrolled client loops for the whole upgrade and downgrade.
    let procs = env.cg_dir(&app).join("cgroup.procs");
    let client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec /usr/bin/python3 \"$0\" \"$@\"",
            procs.display()
        ))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/loop_client.py"))
        .args(["127.0.0.1", &db.addr.port().to_string(), "14", "127.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(1500));
    pause();
    for (deb, what) in [(newer, "upgrade"), (old, "downgrade")] {
        let text = dpkg(&root, &["--install", deb.to_str().unwrap()], &[]);
        assert!(!text.contains("programs detached"), "{what}: {text}");
        // What the unit does after the package's postinst: restart.
        env.stop();
        env.start();
        pause();
        let st = env.status_json();
        assert!(
            st["programs"].as_array().is_some_and(|p| p.len() >= 2),
            "{what}: {st:#}"
        );
        after(&env, what);
    }
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answered: Vec<u16> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(answered.len() > 20, "{text}");

    // Nothing went direct: the client connects from 127.0.0.2, Warden from
    // 127.0.0.1, and the echo server saw only the latter.
    assert_eq!(
        db.connections_from("127.0.0.2".parse().unwrap()),
        0,
        "direct connections\n{}",
        env.log()
    );
    assert!(db.connections() >= answered.len());
    // Every answered connection has its open event.
    let opened: std::collections::HashSet<u64> = env
        .audit_events()
        .iter()
        .filter(|e| e["activity_id"] == 1)
        .filter_map(|e| e["src_endpoint"]["port"].as_u64())
        .collect();
    let missing: Vec<u16> = answered
        .iter()
        .copied()
        .filter(|p| !opened.contains(&u64::from(*p)))
        .collect();
    assert!(
        missing.is_empty(),
        "answered without an open event: {missing:?}"
    );
    // The chain continues across both versions.
    let verify = env.warden(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // dpkg knows the downgraded version.
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains(&format!("Version: {version}\n")),
        "{status}"
    );
}

// --- a layout version change (issue 21, item 2) ---

/// This build's agent with the next layout version (feature
/// `warden-common/layout-next`, which changes that constant and nothing
/// else), built by cargo into this target directory. Cargo leaves the new
/// binary at this build's path: it is copied out and this build's binary
/// put back in its place.
fn next_layout_binary(out: &Path) -> PathBuf {
    let here = Path::new(WARDEN);
    let saved = out.join("warden.this-build");
    std::fs::copy(here, &saved).unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace()).args([
        "build",
        "--quiet",
        "--package",
        "warden",
        "--bin",
        "warden",
        "--features",
        "warden-common/layout-next",
    ]);
    if here.components().any(|c| c.as_os_str() == "release") {
        cmd.arg("--release");
    }
    let built = cmd.output().unwrap();
    let next = out.join("warden.layout-next");
    let copied = std::fs::copy(here, &next);
    // This build's binary back (a new file: the one cargo left is a hard
    // link of its own artifact).
    let back = here.with_extension("restoring");
    std::fs::copy(&saved, &back).unwrap();
    std::fs::rename(&back, here).unwrap();
    ok(built, "cargo build --features warden-common/layout-next");
    copied.unwrap();
    next
}

#[test]
fn a_layout_version_change_under_load_sends_nothing_direct_and_audits_every_connection() {
    let env = common::TestEnv::new();
    let out_dir = env.tmp.path().join("debs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let old = out_dir.join(format!("warden_{version}_amd64.deb"));
    std::fs::copy(built_package(), &old).unwrap();
    // The newer package carries the next layout version's binary.
    let next_bin = next_layout_binary(&out_dir);
    let next_dir = out_dir.join("next");
    let built = ok(
        xtask()
            .args(["package", "--binary"])
            .arg(&next_bin)
            .arg("--out")
            .arg(&next_dir)
            .output()
            .unwrap(),
        "cargo xtask package (layout-next)",
    );
    let next = next_dir.join(format!("warden_{version}_amd64.deb"));
    assert!(next.exists(), "{built}");
    let newer = repack(&next, &format!("{version}+layout1"), &out_dir);

    // The layout version directories under the pin base after each step:
    // one, the running agent's (the other's pins go once its programs
    // are replaced).
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    under_load(env, &old, &newer, |env, what| {
        let mut dirs: Vec<String> = std::fs::read_dir(&env.pin_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('v'))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        assert_eq!(dirs.len(), 1, "{what}: {dirs:?}\n{}", env.log());
        seen.push((what.to_owned(), dirs));
    });
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_ne!(
        seen[0].1, seen[1].1,
        "the upgrade changed the layout version"
    );
    assert_eq!(seen[0].1, seen[2].1, "the downgrade went back to it");
}
