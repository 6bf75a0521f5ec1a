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
