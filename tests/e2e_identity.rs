//! Privileged end-to-end tests of workload identity: enrollment by systemd
//! unit (a cgroup laid out as systemd lays out units in slices), the
//! executable pin, and identity tokens bound to connections and audit events.
//!
//! Run as root, one at a time: `cargo xtask test`.

mod common;

use common::*;
use sha2::{Digest, Sha256};

const PYTHON: &str = "/usr/bin/python3.11";

fn tcp_target(name: &str, addr: &str) -> String {
    format!("[[target]]\nname = \"{name}\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n")
}

/// A unit enrolled by name is found under the test's slice, relayed, and
/// followed when "systemd" recreates its cgroup on restart.
#[test]
fn unit_enrollment_follows_the_units_cgroup() {
    let mut env = TestEnv::new();
    let unit = format!("orders-{}.service", env.id);
    let cg = env.cgroup(&unit);
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"orders\"\nunits = [\"{unit}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    env.start();
    let st = env.status_json();
    let e = st["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["selector"]["unit"] == unit.as_str())
        .cloned()
        .unwrap();
    assert_eq!(e["cgroup_path"], cg.as_str(), "{st:#}");

    let r = env.client(&cg, "127.0.0.2", db.addr.port(), 4096, None);
    assert!(r.same_bytes_back(), "{:?}\n{}", r.json, env.log());
    assert!(!db.saw_direct_from(r.local_port().unwrap()));
    let evs = env.events_for_client_port(r.local_port().unwrap(), 1);
    assert_eq!(evs[0]["unmapped"]["warden"]["account"], "orders");

    // Restart of the unit: systemd removes and recreates its cgroup.
    remove_cgroup_tree(&env.cg_dir(&cg));
    let cg2 = env.cgroup(&unit);
    assert_eq!(cg, cg2);
    let start = std::time::Instant::now();
    loop {
        let r = env.client(&cg, "127.0.0.2", db.addr.port(), 1024, None);
        assert!(r.same_bytes_back(), "{:?}", r.json);
        if !db.saw_direct_from(r.local_port().unwrap()) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the recreated unit cgroup was not re-enrolled"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An account pinned to an executable refuses callers running anything else.
#[test]
fn exe_pin_mismatch_is_refused_as_identity_mismatch() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    let real = hex::encode(Sha256::digest(std::fs::read(PYTHON).unwrap()));
    let wrong = "0".repeat(64);
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"good\"\ncgroups = [\"{app}/good\"]\ntargets = [\"db\"]\nexe = {{ path = \"{PYTHON}\", sha256 = \"{real}\" }}\n[[account]]\nname = \"bad\"\ncgroups = [\"{app}/bad\"]\ntargets = [\"db\"]\nexe = {{ path = \"{PYTHON}\", sha256 = \"{wrong}\" }}\n[[account]]\nname = \"other\"\ncgroups = [\"{app}/other\"]\ntargets = [\"db\"]\nexe = {{ path = \"/usr/bin/orders-api\" }}\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    let good = env.cgroup("app/good");
    let bad = env.cgroup("app/bad");
    let other = env.cgroup("app/other");
    env.start();

    let r = env.client(&good, "127.0.0.2", db.addr.port(), 4096, None);
    assert!(
        r.same_bytes_back(),
        "pinned binary and digest match: {:?}\n{}",
        r.json,
        env.log()
    );
    let evs = env.events_for_client_port(r.local_port().unwrap(), 2);
    assert_eq!(
        evs[0]["actor"]["process"]["file"]["hashes"][0]["value"],
        real.as_str(),
        "{:#}",
        evs[0]
    );

    for (cg, needle) in [
        (&bad, "sha256"),
        (&other, "is not the pinned /usr/bin/orders-api"),
    ] {
        let r = env.client(cg, "127.0.0.2", db.addr.port(), 0, None);
        assert!(!r.ok(), "{:?}", r.json);
        let evs = env.events_for_client_port(r.local_port().unwrap(), 1);
        let w = &evs[0]["unmapped"]["warden"];
        assert_eq!(w["reason"], "identity_mismatch", "{:#}", evs[0]);
        assert!(
            w["detail"].as_str().unwrap().contains(needle),
            "{:#}",
            evs[0]
        );
    }
}
