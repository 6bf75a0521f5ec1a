//! End-to-end checks of the audit trail as evidence: events written by the
//! real daemon verify, a checkpoint exported off-host anchors them, and
//! tampering with the SQLite file behind Warden's back is reported by
//! `warden audit verify` with the seq and the kind of damage.

mod common;

use common::*;

#[test]
fn daemon_written_chain_verifies_and_tampering_is_caught() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}[audit]\ncheckpoint_every = 4\n[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n[[account]]\nname = \"app\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        db.addr
    ));
    env.start();
    for _ in 0..5 {
        let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
        assert!(r.same_bytes_back(), "{:?}", r.json);
    }
    // A graceful stop signs a final checkpoint.
    env.stop();

    let out = env.warden(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clean chain must verify: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("intact"), "{text}");

    let anchor = env.tmp.path().join("anchor.json");
    let out = env.warden(&["audit", "checkpoint", "--out", anchor.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.warden(&[
        "audit",
        "verify",
        "--from-checkpoint",
        anchor.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A second store to damage differently, next to the first (its signing
    // key files are found beside it).
    let db_path = env.state_dir().join("audit.db");
    let copy_path = env.state_dir().join("audit-copy.db");
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    conn.execute("VACUUM INTO ?1", [copy_path.to_str().unwrap()])
        .unwrap();

    // Behind Warden's back: rewrite the byte count of the first close event.
    let close_seq: i64 = conn
        .query_row(
            "SELECT seq FROM events WHERE activity = 'close' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let n = conn
        .execute(
            "UPDATE events SET data = CAST(replace(CAST(data AS TEXT), '\"bytes_out\":1024', '\"bytes_out\":1') AS BLOB) WHERE seq = ?1",
            [close_seq],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let out = env.warden(&["audit", "verify", "--json"]);
    assert!(!out.status.success(), "tampering must fail verify");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problem"]["seq"], close_seq, "{report:#}");
    assert_eq!(report["problem"]["kind"], "modified", "{report:#}");
    let out = env.warden(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{close_seq}")) && text.contains("modified"),
        "{text}"
    );

    // On the copy: cut the tail and the checkpoints that described it. The
    // store alone now looks short but consistent; the anchor kept off-host
    // knows the chain was longer.
    let conn = rusqlite::Connection::open(&copy_path).unwrap();
    conn.execute("DELETE FROM checkpoints", []).unwrap();
    conn.execute("DELETE FROM events WHERE seq > 3", [])
        .unwrap();
    drop(conn);
    let copy_cfg = env.tmp.path().join("copy.toml");
    let cfg = std::fs::read_to_string(&env.config_path).unwrap().replace(
        "[audit]\n",
        &format!("[audit]\npath = \"{}\"\n", copy_path.display()),
    );
    std::fs::write(&copy_cfg, cfg).unwrap();
    let verify_copy = |extra: &[&str]| {
        std::process::Command::new(WARDEN)
            .arg("--config")
            .arg(&copy_cfg)
            .args(["audit", "verify", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = verify_copy(&[]);
    assert!(
        out.status.success(),
        "without an anchor the cut is invisible: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = verify_copy(&["--from-checkpoint", anchor.to_str().unwrap()]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problem"]["kind"], "truncated", "{report:#}");
    assert_eq!(report["problem"]["seq"], 4, "{report:#}");
}

/// Crash safety: under sustained load through the proxy, SIGKILL the agent.
/// Every connection a client saw answered has its audit record after the
/// restart, and the chain verifies with no gap.
#[test]
fn sigkill_under_load_loses_no_answered_connection() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n[[account]]\nname = \"app\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        db.addr
    ));
    env.start();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/loop_client.py");
    let procs = env.cg_dir(&app).join("cgroup.procs");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > '{}' && exec /usr/bin/python3 '{}' 127.0.0.2 {} 4",
                    procs.display(),
                    script.display(),
                    db.addr.port()
                ))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    env.kill9();
    let mut answered = Vec::new();
    for c in clients {
        let out = c.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(port) = line.trim().parse::<u16>() {
                answered.push(port);
            }
        }
    }
    assert!(
        answered.len() > 20,
        "the load ran: {} answered",
        answered.len()
    );

    env.start();
    let events = env.audit_events();
    let opened: std::collections::HashSet<u64> = events
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
        "{} of {} answered connections have no audit record: {missing:?}",
        missing.len(),
        answered.len()
    );
    let out = env.warden(&["audit", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["first_seq"], 1, "{report:#}");
    assert!(report["problem"].is_null(), "{report:#}");
}

/// Disk full: traffic is refused with a clear reason in Warden's log, no
/// partial record is left, and relaying resumes when space returns.
#[test]
fn full_disk_refuses_traffic_then_recovers() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    let state = env.state_dir();
    let _unmount = mount_tmpfs(&state, "3m");
    env.write_config(&format!(
        "{}[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n[[account]]\nname = \"app\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        db.addr
    ));
    env.start();
    let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}", r.json);

    // Fill the file system.
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let before = db.connections();
    let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
    assert!(
        !r.ok(),
        "traffic must be refused while the audit store cannot write: {:?}",
        r.json
    );
    assert_eq!(db.connections(), before, "nothing reached the server");
    let log = env.log();
    assert!(
        log.contains("audit store unavailable"),
        "Warden says why: {log}"
    );

    std::fs::remove_file(&filler).unwrap();
    let start = std::time::Instant::now();
    let port = loop {
        let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
        if r.same_bytes_back() {
            break r.local_port().unwrap();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "did not recover: {:?}",
            r.json
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(env.events_for_client_port(port, 2).len(), 2);
    env.stop();
    let out = env.warden(&["audit", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "no partial record: {report:#}");
}

/// Evidence export through the real binary: a bundle of what the daemon
/// recorded verifies offline; any modified file, a removed file, or an added
/// event is rejected; the bundle holds the connection and config events.
#[test]
fn export_bundle_round_trips_and_modifications_are_rejected() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}[audit]\ncheckpoint_every = 3\n[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n[[account]]\nname = \"app\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        db.addr
    ));
    env.start();
    for _ in 0..4 {
        let r = env.client(&app, "127.0.0.2", db.addr.port(), 512, None);
        assert!(r.same_bytes_back(), "{:?}", r.json);
    }
    env.stop();

    let bundle = env.tmp.path().join("bundle");
    let out = env.warden(&[
        "audit",
        "export",
        "--from",
        "-1h",
        "--to",
        "now",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "export: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verify =
        |dir: &std::path::Path| env.warden(&["audit", "verify-export", dir.to_str().unwrap()]);
    let ok = verify(&bundle);
    assert!(
        ok.status.success(),
        "a fresh bundle must verify: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let events = std::fs::read_to_string(bundle.join("events.jsonl")).unwrap();
    let classes: Vec<u64> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["class_uid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        classes.iter().filter(|c| **c == 4001).count(),
        8,
        "{classes:?}"
    );
    let config = std::fs::read_to_string(bundle.join("config-changes.jsonl")).unwrap();
    assert!(
        config.contains("\"sha256\""),
        "the config load is in the bundle: {config}"
    );
    assert!(
        !std::fs::read_to_string(bundle.join("checkpoints.jsonl"))
            .unwrap()
            .is_empty()
    );

    // Every file of the bundle, one change at a time, on a fresh copy.
    let files: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() >= 7, "{files:?}");
    for (i, name) in files.iter().enumerate() {
        let copy = env.tmp.path().join(format!("copy-{i}"));
        std::fs::create_dir(&copy).unwrap();
        for f in &files {
            std::fs::copy(bundle.join(f), copy.join(f)).unwrap();
        }
        let path = copy.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.is_empty() {
            bytes.push(b'\n');
        } else {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
        }
        std::fs::write(&path, &bytes).unwrap();
        let out = verify(&copy);
        assert!(
            !out.status.success(),
            "a bundle with {name} modified must be rejected: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A removed file.
    let copy = env.tmp.path().join("copy-removed");
    std::fs::create_dir(&copy).unwrap();
    for f in &files {
        if f != "summary.json" {
            std::fs::copy(bundle.join(f), copy.join(f)).unwrap();
        }
    }
    assert!(
        !verify(&copy).status.success(),
        "a missing summary.json must be rejected"
    );
    // A forged event appended to events.jsonl.
    let copy = env.tmp.path().join("copy-appended");
    std::fs::create_dir(&copy).unwrap();
    for f in &files {
        std::fs::copy(bundle.join(f), copy.join(f)).unwrap();
    }
    let first = events.lines().next().unwrap().to_owned();
    std::fs::write(copy.join("events.jsonl"), format!("{events}{first}\n")).unwrap();
    assert!(
        !verify(&copy).status.success(),
        "an appended event must be rejected"
    );
}
