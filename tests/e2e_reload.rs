//! Privileged end-to-end test of configuration reload through the real
//! `warden` binary: `warden reload` and SIGHUP apply a new grant to new
//! connections while an open connection keeps working; an invalid file and
//! a restart-only change are refused with every problem named and change
//! nothing; every attempt is a chain event with both hashes.
//!
//! Run as root, one at a time:
//! `cargo test -p warden --test e2e_reload -- --test-threads=1`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn tcp_target(name: &str, addr: &str) -> String {
    format!("[[target]]\nname = \"{name}\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n")
}

fn account(name: &str, cgroup: &str, targets: &[&str]) -> String {
    let t = targets
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[account]]\nname = \"{name}\"\ncgroups = [\"{cgroup}\"]\ntargets = [{t}]\n")
}

fn sha256_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A client in a cgroup that keeps one connection open and echoes a line
/// through it each time it is asked.
struct HeldClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const HELD_CLIENT: &str = r#"
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(json.dumps({"local_port": s.getsockname()[1]}), flush=True)
for line in sys.stdin:
    msg = line.strip().encode()
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(4096)
            if not b:
                break
            got += b
        print(json.dumps({"ok": got == msg, "got": got.decode(errors="replace")}), flush=True)
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
"#;

impl HeldClient {
    fn open(env: &TestEnv, cgroup: &str, host: &str, port: u16) -> (Self, u16) {
        let procs = env.cg_dir(cgroup).join("cgroup.procs");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                // The script is `$0` of this shell.
                "echo $$ > '{}' && exec /usr/bin/python3 -c \"$0\" {host} {port}",
                procs.display()
            ))
            .arg(HELD_CLIENT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("held client did not connect ({e}): {line:?}"));
        let port = v["local_port"].as_u64().unwrap() as u16;
        (
            Self {
                child,
                stdin,
                stdout,
            },
            port,
        )
    }

    fn echo(&mut self, msg: &str) -> Value {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

impl Drop for HeldClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_events(env: &TestEnv) -> Vec<Value> {
    env.audit_events()
        .into_iter()
        .filter(|e| !e["unmapped"]["warden"]["config"].is_null())
        .collect()
}

fn status_sha(env: &TestEnv) -> String {
    env.status_json()["config_sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn reload(env: &TestEnv) -> std::process::Output {
    env.warden(&["reload"])
}

#[test]
fn reload_applies_grants_to_new_connections_and_refuses_bad_or_restart_only_changes() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let t1 = EchoServer::start("127.0.0.2:0");
    let t2 = EchoServer::start("127.0.0.2:0");
    let targets = format!(
        "{}{}",
        tcp_target("t1", &t1.addr.to_string()),
        tcp_target("t2", &t2.addr.to_string())
    );
    let agent = env.agent_table(false, "");
    let v1 = format!("{agent}{targets}{}", account("app", &app, &["t1"]));
    env.write_config(&v1);
    env.start();
    let st = env.status_json();
    assert_eq!(st["config_sha256"], sha256_of(&v1));
    assert_eq!(st["config_action"], "load");
    assert!(st["config_loaded_ms"].as_i64().unwrap() > 0);

    // Account app may reach t1 only.
    let r = env.client(&app, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(!r.ok(), "t2 is not granted yet: {:?}", r.json);
    assert_eq!(t2.connections(), 0);
    let (mut held, held_port) = HeldClient::open(&env, &app, "127.0.0.2", t1.addr.port());
    assert_eq!(held.echo("before-reload")["ok"], true);
    assert!(
        !t1.saw_direct_from(held_port),
        "the held client must be relayed"
    );

    // Grant t2 instead of t1 and reload through the CLI.
    let v2 = format!("{agent}{targets}{}", account("app", &app, &["t2"]));
    env.write_config(&v2);
    let out = reload(&env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload failed: {stdout} {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    assert!(
        stdout.contains(&sha256_of(&v2)) && stdout.contains(&sha256_of(&v1)),
        "{stdout}"
    );
    let st = env.status_json();
    assert_eq!(st["config_sha256"], sha256_of(&v2));
    assert_eq!(st["config_action"], "reload");
    assert_eq!(st["config_reloads"], 1);
    let r = env.client(&app, "127.0.0.2", t2.addr.port(), 256 * 1024, None);
    assert!(r.same_bytes_back(), "t2 after the reload: {:?}", r.json);
    assert!(!t2.saw_direct_from(r.local_port().unwrap()));
    let r = env.client(&app, "127.0.0.2", t1.addr.port(), 1024, None);
    assert!(!r.ok(), "t1 is no longer granted: {:?}", r.json);
    let evs = env.events_for_client_port(r.local_port().unwrap(), 1);
    assert_eq!(
        evs[0]["unmapped"]["warden"]["reason"], "target_not_granted",
        "{evs:#?}"
    );
    // The connection opened before the reload keeps its snapshot.
    assert_eq!(held.echo("after-reload")["ok"], true);

    // An invalid file: every problem named, nothing changes.
    let bad = format!(
        "{agent}{targets}{}{}",
        account("app", &app, &["t2", "nope"]),
        "[[target]]\nname = \"t3\"\nprotocol = \"tcp\"\naddress = \"not-an-address\"\n"
    );
    env.write_config(&bad);
    let out = reload(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid config was accepted");
    assert!(stderr.contains("unchanged"), "{stderr}");
    assert!(
        stderr.contains("nope"),
        "unknown target not named: {stderr}"
    );
    assert!(
        stderr.contains("not-an-address") || stderr.contains("target[2].address"),
        "bad address not named: {stderr}"
    );
    assert_eq!(status_sha(&env), sha256_of(&v2));
    let st = env.status_json();
    let failure = &st["last_reload_failure"];
    assert_eq!(failure["sha256"], sha256_of(&bad));
    assert!(
        failure["errors"].as_array().unwrap().len() >= 2,
        "{failure}"
    );
    let r = env.client(&app, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(
        r.same_bytes_back(),
        "old config still enforced: {:?}",
        r.json
    );

    // Not enrolled yet: untouched by Warden.
    let app2 = env.cgroup("app2");
    let r = env.client(&app2, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}", r.json);
    assert!(t2.saw_direct_from(r.local_port().unwrap()));

    // SIGHUP: grant both, and enroll a second cgroup as a new account.
    let v3 = format!(
        "{agent}{targets}{}{}",
        account("app", &app, &["t1", "t2"]),
        account("app2", &app2, &["t2"])
    );
    env.write_config(&v3);
    let pid = env.daemon.as_ref().unwrap().id();
    assert!(nix_kill(pid, "HUP"));
    let start = Instant::now();
    while status_sha(&env) != sha256_of(&v3) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = env.client(&app, "127.0.0.2", t1.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "t1 after SIGHUP: {:?}", r.json);
    // The new account's cgroup is in the kernel's map now: redirected.
    let r = env.client(&app2, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "app2 after SIGHUP: {:?}", r.json);
    let port = r.local_port().unwrap();
    assert!(!t2.saw_direct_from(port), "app2 was not redirected");
    let evs = env.events_for_client_port(port, 2);
    assert_eq!(evs[0]["unmapped"]["warden"]["account"], "app2", "{evs:#?}");

    // A restart-only key: refused, naming it.
    let other_port = free_port("127.0.0.1");
    let moved = v3.replace(
        &format!("127.0.0.1:{}", env.listen_port),
        &format!("127.0.0.1:{other_port}"),
    );
    assert_ne!(moved, v3);
    env.write_config(&moved);
    let out = reload(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a listen change was accepted");
    assert!(
        stderr.contains("agent.listen") && stderr.contains("restart required"),
        "{stderr}"
    );
    assert_eq!(status_sha(&env), sha256_of(&v3));
    let r = env.client(&app, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}", r.json);
    assert_eq!(held.echo("still-open")["ok"], true);

    // A file that validates but whose runtime cannot be built (a CA file
    // that is not there): refused with the reason, nothing changes.
    let unbuildable = format!(
        "{v3}\n[[target]]\nname = \"api\"\nprotocol = \"http\"\naddress = \"127.0.0.9:8080\"\nupstream_tls = true\ntls = {{ mode = \"verify-full\", ca_file = \"/nonexistent/warden-test-ca.pem\" }}\n"
    );
    env.write_config(&unbuildable);
    let check = env.warden(&["check-config"]);
    assert!(check.status.success(), "the file itself is valid");
    let out = reload(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unbuildable config was applied");
    assert!(stderr.contains("warden-test-ca.pem"), "{stderr}");
    assert_eq!(status_sha(&env), sha256_of(&v3));
    let r = env.client(&app, "127.0.0.2", t2.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}", r.json);
    assert_eq!(held.echo("still-open-2")["ok"], true);
    drop(held);

    // Every attempt is in the trail, in order, with both hashes.
    let evs = config_events(&env);
    let docs: Vec<&Value> = evs
        .iter()
        .map(|e| &e["unmapped"]["warden"]["config"])
        .collect();
    let summary: Vec<(String, String, String, String)> = docs
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap_or("").to_owned(),
                c["outcome"].as_str().unwrap_or("").to_owned(),
                c["sha256"].as_str().unwrap_or("").to_owned(),
                c["previous_sha256"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let s = |t: &str| sha256_of(t);
    let owned = |a: &str, o: &str, h: String, p: String| (a.to_owned(), o.to_owned(), h, p);
    assert_eq!(
        summary,
        vec![
            owned("load", "applied", s(&v1), String::new()),
            owned("reload", "applied", s(&v2), s(&v1)),
            owned("reload", "failed", s(&bad), s(&v2)),
            owned("reload", "applied", s(&v3), s(&v2)),
            owned("reload", "failed", s(&moved), s(&v3)),
            owned("reload", "failed", s(&unbuildable), s(&v3)),
        ],
        "{evs:#?}"
    );
    assert_eq!(docs[3]["detail"], "by SIGHUP");
    assert!(
        docs[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("by warden reload"),
        "{}",
        docs[1]
    );
    assert_eq!(evs[2]["status"], "Failure");
    assert!(docs[2]["reason"].as_str().unwrap().contains("nope"));
    assert!(
        docs[4]["reason"].as_str().unwrap().contains("agent.listen"),
        "{}",
        docs[4]
    );
    assert!(
        docs[5]["reason"]
            .as_str()
            .unwrap()
            .contains("warden-test-ca.pem"),
        "{}",
        docs[5]
    );
    let text = env.warden(&["audit", "tail", "-n", "1000"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("outcome=failed"), "{text}");
    assert!(
        text.contains(&format!("previous_sha256={}", s(&v2))),
        "{text}"
    );

    let out = env.warden(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    env.stop();
}
