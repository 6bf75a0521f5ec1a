//! Progress of long audit commands through the real binary: drawn on a
//! terminal (run under `script`, which gives the command a pseudo-TTY),
//! never with `--json`, and never when stderr is not a terminal (pipes,
//! files, scripts see exactly the output they saw before).
//!
//! Run as root: `cargo test -p warden --test cli_progress -- --test-threads=1`.

mod common;

use std::process::Command;

use common::*;

/// `warden ARGS` under a pseudo-terminal; everything it drew.
fn on_a_terminal(env: &TestEnv, args: &str) -> String {
    let cmd = format!("{WARDEN} --config {} {args}", env.config_path.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("script (bsdutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn audit_progress_only_on_a_terminal_and_never_with_json() {
    let mut env = TestEnv::new();
    env.write_config(&env.agent_table(false, ""));
    // A store with a few events: the configuration load, a checkpoint at
    // shutdown.
    env.start();
    env.stop();

    // Not a terminal: stderr stays empty.
    let plain = env.warden(&["audit", "verify"]);
    assert!(plain.status.success(), "{plain:?}");
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(String::from_utf8_lossy(&plain.stdout).contains("chain intact"));

    // A terminal: the bar is drawn (and cleared before the result).
    let tty = on_a_terminal(&env, "audit verify");
    assert!(tty.contains("verifying"), "{tty}");
    assert!(tty.contains("chain intact"), "{tty}");

    // --json on a terminal: no bar, the JSON alone.
    let json = on_a_terminal(&env, "audit verify --json");
    assert!(!json.contains("verifying"), "{json}");
    assert!(json.contains("\"chain_id\""), "{json}");

    // Export: both phases on a terminal, nothing on stderr otherwise.
    let out = env.tmp.path().join("bundle");
    let tty = on_a_terminal(
        &env,
        &format!("audit export --from -1d --to now --out {}", out.display()),
    );
    assert!(
        tty.contains("verifying") && tty.contains("exporting"),
        "{tty}"
    );
    let out2 = env.tmp.path().join("bundle2");
    let plain = env.warden(&[
        "audit",
        "export",
        "--from",
        "-1d",
        "--to",
        "now",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(plain.status.success(), "{plain:?}");
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}
