//! `systemd/warden.service` passes `systemd-analyze verify` (with ExecStart
//! pointed at the binary this build produced, since /usr/local/bin/warden is
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
    std::fs::write(&unit, unit_text().replace("/usr/local/bin/warden", WARDEN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
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
