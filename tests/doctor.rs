//! `warden doctor` through the real binary: a healthy host (agent running,
//! target listening, enrolled cgroup present, secret 0600, a file
//! forwarder) has no problem and exits 0; a broken configuration (missing
//! secret, secret readable by others, unreachable target, a cgroup that
//! does not exist, no agent) gets each finding with its fix and exit 1.
//!
//! Run as root: `cargo test -p warden --test doctor -- --test-threads=1`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

fn secret(dir: &Path, name: &str, mode: u32) -> String {
    let p = dir.join(name);
    std::fs::write(&p, "s3cret\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// Config with an HTTP target at `addr` granted to an account enrolled by
/// `cgroup`, its credential at `cred`, and a file forwarder.
fn config(env: &TestEnv, addr: &str, cgroup: &str, cred: &str) -> String {
    format!(
        r#"{agent}
[[target]]
name = "api"
protocol = "http"
address = "{addr}"

[[account]]
name = "app"
cgroups = ["{cgroup}"]

[[grant]]
account = "app"
target = "api"
policy = "api"
credential = {{ kind = "bearer", file = "{cred}" }}

[policy.api]
default = "deny"
rules = [ {{ action = "allow", methods = ["GET"], paths = ["/**"] }} ]

[[forward]]
name = "disk"
kind = "file"
path = "{out}"
"#,
        agent = env.agent_table(false, ""),
        out = env.tmp.path().join("forward/events.jsonl").display(),
    )
}

fn doctor(env: &TestEnv) -> (i32, Value, String) {
    let json = env.warden(&["doctor", "--json"]);
    let text = env.warden(&["doctor"]);
    assert_eq!(json.status.code(), text.status.code());
    let v: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&json.stdout)
        )
    });
    (
        json.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

/// The findings of `area` whose check contains `check`.
fn findings<'a>(v: &'a Value, area: &str, check: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["area"] == area && f["check"].as_str().unwrap().contains(check))
        .collect()
}

fn only<'a>(v: &'a Value, area: &str, check: &str) -> &'a Value {
    let f = findings(v, area, check);
    assert_eq!(f.len(), 1, "one {area} finding for {check}: {v:#}");
    f[0]
}

#[test]
fn healthy_host_has_no_problem() {
    let mut env = TestEnv::new();
    let upstream = EchoServer::start("127.0.0.1:0");
    let app = env.cgroup("app");
    let cred = secret(env.tmp.path(), "bearer", 0o600);
    std::fs::create_dir_all(env.tmp.path().join("forward")).unwrap();
    env.write_config(&config(&env, &upstream.addr.to_string(), &app, &cred));
    env.start();

    let (code, v, text) = doctor(&env);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems"], 0, "{text}");
    for (area, check) in [
        ("agent", "running"),
        ("kernel", "BTF"),
        ("kernel", "cgroup2"),
        ("kernel", "bpffs"),
        ("pins", "warden_connect4"),
        ("pins", "warden_sock_ops"),
        ("enrollment", "app cgroup"),
        ("files", cred.as_str()),
        ("targets", "target api"),
        ("forwarders", "disk"),
        ("clock", "wall clock"),
    ] {
        let f = only(&v, area, check);
        assert_eq!(f["severity"], "ok", "{f:#}");
    }
    // BPF LSM may be off on a test kernel, and a shared test machine's
    // disk may be nearly full (under 10% free): warnings, never problems.
    assert_ne!(only(&v, "kernel", "BPF LSM")["severity"], "problem");
    assert_ne!(only(&v, "disk", "store")["severity"], "problem");
    let summary = text.trim_end().lines().last().unwrap_or_default();
    assert!(summary.starts_with("0 problems,"), "{text}");
    // Saved for NOTES-21.md.
    let _ = std::fs::write("/tmp/warden-doctor-healthy.txt", &text);
    env.stop();
}

#[test]
fn broken_config_gets_each_finding_with_its_fix() {
    let env = TestEnv::new();
    let missing = env.tmp.path().join("secrets/absent").display().to_string();
    let open = secret(env.tmp.path(), "bearer-open", 0o644);
    let closed = free_port("127.0.0.1");
    let closed2 = free_port("127.0.0.2");
    let gone = format!("{}/does-not-exist", env.cg_root);
    let mut cfg = config(&env, &format!("127.0.0.1:{closed}"), &gone, &missing);
    // A second grant whose credential anyone can read.
    cfg.push_str(&format!(
        "\n[[target]]\nname = \"api2\"\nprotocol = \"http\"\naddress = \"127.0.0.2:{closed2}\"\n\n[[grant]]\naccount = \"app\"\ntarget = \"api2\"\npolicy = \"api\"\ncredential = {{ kind = \"bearer\", file = \"{open}\" }}\n"
    ));
    env.write_config(&cfg);
    // The configuration itself is valid: check-config cannot see any of it.
    let cc = env.warden(&["check-config"]);
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let (code, v, text) = doctor(&env);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["ok"], false);

    let f = only(&v, "files", &missing);
    assert_eq!(f["severity"], "problem");
    assert!(
        f["detail"].as_str().unwrap().contains("No such file"),
        "{f:#}"
    );
    assert!(f["fix"].as_str().unwrap().contains("mode 0600"), "{f:#}");

    let f = only(&v, "files", &open);
    assert_eq!(f["severity"], "problem");
    assert_eq!(f["fix"], format!("chmod 600 {open}"));

    let f = only(&v, "targets", "target api2");
    assert_eq!(f["severity"], "problem");
    assert!(
        f["detail"].as_str().unwrap().contains("cannot be reached"),
        "{f:#}"
    );

    let f = only(&v, "enrollment", "app cgroup");
    assert_eq!(f["severity"], "problem");
    assert!(
        f["detail"].as_str().unwrap().contains("enrolls nothing"),
        "{f:#}"
    );

    let f = only(&v, "agent", "running");
    assert_eq!(f["severity"], "problem");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("systemctl start warden"),
        "{f:#}"
    );
    assert_eq!(only(&v, "forwarders", "disk")["severity"], "warning");

    // Every warning and problem carries a one-sentence fix.
    for f in v["findings"].as_array().unwrap() {
        if f["severity"] != "ok" {
            let fix = f["fix"].as_str().unwrap_or_default();
            assert!(!fix.is_empty() && !fix.contains('\n'), "{f:#}");
        }
    }
    assert!(
        text.contains("PROBLEM") && text.contains("fix: chmod 600"),
        "{text}"
    );
    let _ = std::fs::write("/tmp/warden-doctor-broken.txt", &text);
}

#[test]
fn invalid_config_is_a_problem_not_a_crash() {
    let env = TestEnv::new();
    env.write_config("[agent]\nlisten = 12\n");
    let (code, v, text) = doctor(&env);
    assert_eq!(code, 1, "{text}");
    let f = &findings(&v, "config", "warden.toml")[0];
    assert_eq!(f["severity"], "problem");
    assert!(f["fix"].as_str().unwrap().contains("check-config"), "{f:#}");
    // The kernel is still examined.
    assert!(!findings(&v, "kernel", "BTF").is_empty());
}
