//! `systemd/warden.service` passes `systemd-analyze verify` (with ExecStart
//! pointed at the binary this build produced, since /usr/bin/warden is
//! not installed on a test machine) and keeps the properties the daemon needs.

use std::path::Path;
use std::process::Command;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/warden.service"))
        .unwrap()
}

#[test]
fn unit_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("warden.service");
    std::fs::write(&unit, unit_text().replace("/usr/bin/warden", WARDEN)).unwrap();
    // --man=no: Documentation=man:warden(1) is installed by the package,
    // not on a test machine.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (installed by cargo xtask setup)");
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("warden.service"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn unit_has_notify_restart_and_no_uid_bypass() {
    let text = unit_text();
    for needed in [
        "Type=notify",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf /sys/fs/cgroup",
        "Before=network-online.target",
        "CAP_NET_BIND_SERVICE",
        "MemoryMax=",
        "TasksMax=",
    ] {
        assert!(text.contains(needed), "unit lacks {needed}");
    }
    // The unit must not run the agent as some dedicated uid that the kernel
    // side would then have to skip: loop avoidance is by cgroup and mark.
    assert!(
        !text.lines().any(|l| l.starts_with("User=")),
        "no User= line"
    );
}

/// `systemd-analyze verify` of `unit` with `dir` first in the unit path (so
/// its drop-in directories apply); the stderr lines about `unit`.
fn verify_in(dir: &Path, unit: &str) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .arg("verify")
        .arg(dir.join(unit))
        .output()
        .expect("systemd-analyze (installed by cargo xtask setup)");
    let err = String::from_utf8_lossy(&out.stderr);
    let stem = unit.trim_end_matches(".service");
    (
        out.status.success(),
        err.lines()
            .filter(|l| l.contains(stem) || l.contains("50-warden"))
            .map(str::to_owned)
            .collect(),
    )
}

/// Issue 16, item 6: the drop-in `warden drop-in UNIT` prints (and `warden
/// enroll --unit` installs) verifies next to Warden's unit and an enrolled
/// service, and is read by systemd (a broken copy of it is reported).
#[test]
fn enrolled_unit_drop_in_verifies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("warden.service"),
        unit_text().replace("/usr/bin/warden", WARDEN),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("orders-api.service"),
        "[Unit]\nDescription=an enrolled workload\n[Service]\nExecStart=/bin/sleep 1\n",
    )
    .unwrap();
    let out = Command::new(WARDEN)
        .args([
            "--config",
            "/etc/warden/warden.toml",
            "drop-in",
            "orders-api.service",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("After=warden.service"), "{text}");
    assert!(
        text.contains(&format!("ExecStartPre=+{WARDEN} --config")),
        "{text}"
    );
    let d = dir.path().join("orders-api.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("50-warden.conf"), &text).unwrap();
    let (ok, lines) = verify_in(dir.path(), "orders-api.service");
    assert!(ok && lines.is_empty(), "{lines:?}");

    // Control: systemd does read the drop-in (a missing binary in it is reported).
    std::fs::write(
        d.join("50-warden.conf"),
        text.replace(WARDEN, "/nonexistent/warden"),
    )
    .unwrap();
    let (ok, lines) = verify_in(dir.path(), "orders-api.service");
    assert!(
        !ok || lines.iter().any(|l| l.contains("/nonexistent/warden")),
        "the drop-in was not read: {lines:?}"
    );

    // Scopes are not started from unit files: no drop-in, one clear sentence.
    let out = Command::new(WARDEN)
        .args(["drop-in", "session-4.scope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scope"));
}
