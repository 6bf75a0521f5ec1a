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

/// Issue 16, item 3: no enrollment gap when a unit restarts. The unit's
/// cgroup is removed and recreated 100 times, and each time a process moves
/// into the new cgroup and connects at once (one shell: mkdir, write
/// cgroup.procs, exec the client): not one connection reaches the target
/// directly, and every one is audited as the unit's account. The kernel
/// enrolls the new cgroup in `mkdir()` itself (cgroup_mkdir tracepoint).
#[test]
fn restarted_unit_is_enrolled_before_it_can_connect() {
    let mut env = TestEnv::new();
    let unit = format!("restarts-{}.service", env.id);
    let cg = env.cgroup(&unit);
    let dir = env.cg_dir(&cg);
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"svc\"\nunits = [\"{unit}\"]\ntargets = [\"db\"]\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    env.start();
    let script = kernel_script();
    let port = db.addr.port().to_string();
    let mut direct = Vec::new();
    let mut ports = Vec::new();
    for i in 0..100 {
        remove_cgroup_tree(&dir);
        assert!(!dir.exists(), "could not remove {}", dir.display());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mkdir '{d}' && echo $$ > '{d}/cgroup.procs' && exec /usr/bin/python3 \"$0\" connect 127.0.0.2 {port}",
                d = dir.display()
            ))
            .arg(&script)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "round {i}: {e}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(r["ok"], true, "round {i}: {r}\n{}", env.log());
        let lp = r["local_port"].as_u64().unwrap() as u16;
        if db.saw_direct_from(lp) {
            direct.push(i);
        }
        ports.push(lp);
    }
    assert!(
        direct.is_empty(),
        "direct connections in rounds {direct:?}\n{}",
        env.log()
    );
    let evs = env.audit_events();
    for lp in ports {
        let ev = evs
            .iter()
            .find(|e| e["src_endpoint"]["port"].as_u64() == Some(u64::from(lp)))
            .unwrap_or_else(|| panic!("no event for client port {lp}"));
        assert_eq!(ev["unmapped"]["warden"]["account"], "svc", "{ev}");
    }
}

/// Issue 16, item 2: the executable is bound at connect time. A process
/// connects (TCP_FASTOPEN_CONNECT: no SYN until the first write), forks, and
/// execs the pinned binary itself, while its child, which inherited the
/// socket, finishes the connection and talks. The proxy, reading /proc only
/// at accept, would see the pinned binary; the kernel recorded that the
/// caller exec'ed after its connect, so the connection is refused as
/// `identity_mismatch` and the audit carries no executable of the wrong program.
#[test]
fn exec_after_connect_is_refused_as_identity_mismatch() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"pinned\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\nexe = {{ path = \"/usr/bin/sleep\" }}\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    env.start();
    let port = db.addr.port().to_string();
    let r = env.kernel_client(
        &app,
        &[
            "exec-after-connect",
            "127.0.0.2",
            &port,
            "/usr/bin/sleep",
            "2",
        ],
    );
    let lp = r["local_port"].as_u64().unwrap() as u16;
    assert_eq!(r["ok"], false, "the connection was served: {r}");
    assert!(!db.saw_direct_from(lp), "connected directly: {r}");
    env.assert_unconfirmed_exe(lp, "after its connect");
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

mod tokens {
    use base64::Engine;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    pub const ISSUER: &str = "https://idp.test";
    pub const SUBJECT: &str = "spiffe://test.example/orders";

    pub fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    pub fn jwks(key: &SigningKey, kid: &str) -> String {
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]})
            .to_string()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// An EdDSA token; `exp_in` seconds from now (negative: already expired).
    pub fn token(key: &SigningKey, kid: &str, aud: &str, exp_in: i64) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let claims = json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": aud, "jti": "jti-1",
            "iat": now() - 10, "exp": now() + exp_in,
        });
        let der = key.to_pkcs8_der().unwrap();
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    }
}

/// An account whose identity is a token file validated against a JWKS: a
/// valid token is bound to the connection and its audit events (claims,
/// never the token); expired, wrong-audience and missing tokens refuse new
/// connections, each audited with its own reason.
#[test]
fn token_file_identity_is_validated_bound_and_audited() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    let key = tokens::key();
    let token_path = env.tmp.path().join("token");
    let jwks_path = env.tmp.path().join("jwks.json");
    std::fs::write(&jwks_path, tokens::jwks(&key, "k1")).unwrap();
    let good = tokens::token(&key, "k1", "warden", 600);
    std::fs::write(&token_path, &good).unwrap();
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"orders\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\nidentity = {{ kind = \"token_file\", token_file = \"{}\", jwks_file = \"{}\", issuer = \"{}\", audience = \"warden\", spiffe_trust_domain = \"test.example\" }}\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
        token_path.display(),
        jwks_path.display(),
        tokens::ISSUER,
    ));
    env.start();

    let r = env.client(&app, "127.0.0.2", db.addr.port(), 4096, None);
    assert!(r.same_bytes_back(), "{:?}\n{}", r.json, env.log());
    let evs = env.events_for_client_port(r.local_port().unwrap(), 2);
    let id = &evs[0]["unmapped"]["warden"]["identity"];
    assert_eq!(id["source"], "token_file", "{:#}", evs[0]);
    assert_eq!(id["iss"], tokens::ISSUER);
    assert_eq!(id["sub"], tokens::SUBJECT);
    assert_eq!(id["aud"][0], "warden");
    assert_eq!(id["kid"], "k1");
    assert_eq!(id["jti"], "jti-1");
    assert!(id["exp"].as_i64().is_some());
    let raw = serde_json::to_string(&evs).unwrap();
    assert!(
        !raw.contains(&good),
        "the token itself must never be stored"
    );

    for (token, reason) in [
        (
            Some(tokens::token(&key, "k1", "warden", -3600)),
            "token_expired",
        ),
        (
            Some(tokens::token(&key, "k1", "someone-else", 600)),
            "token_wrong_audience",
        ),
        (None, "token_file_missing"),
    ] {
        match &token {
            Some(t) => std::fs::write(&token_path, t).unwrap(),
            None => std::fs::remove_file(&token_path).unwrap(),
        }
        let r = env.client(&app, "127.0.0.2", db.addr.port(), 0, None);
        assert!(!r.ok(), "{reason}: {:?}", r.json);
        let evs = env.events_for_client_port(r.local_port().unwrap(), 1);
        assert_eq!(
            evs[0]["unmapped"]["warden"]["reason"], reason,
            "{:#}",
            evs[0]
        );
        assert_eq!(evs[0]["unmapped"]["warden"]["decision"], "refused");
    }

    // The token file is re-read when it changes: a good token again works.
    std::fs::write(&token_path, tokens::token(&key, "k1", "warden", 600)).unwrap();
    let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}", r.json);
}

/// With `kind = "mint"` Warden signs a token per connection binding who
/// called; it travels in the audit event and verifies against the keys
/// `warden identity jwks` prints.
#[test]
fn minted_tokens_verify_against_the_published_jwks() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"orders\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\nidentity = {{ kind = \"mint\", audience = \"collector\", ttl_secs = 120 }}\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    env.start();
    let r = env.client(&app, "127.0.0.2", db.addr.port(), 1024, None);
    assert!(r.same_bytes_back(), "{:?}\n{}", r.json, env.log());
    let evs = env.events_for_client_port(r.local_port().unwrap(), 1);
    let id = &evs[0]["unmapped"]["warden"]["identity"];
    assert_eq!(id["source"], "mint", "{:#}", evs[0]);
    let token = id["attestation"]
        .as_str()
        .expect("minted token in the event");

    let out = env.warden(&["identity", "jwks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = warden::identity::token::verify_with_jwks(
        token,
        &jwks,
        id["iss"].as_str().unwrap(),
        "collector",
    )
    .expect("minted token verifies with the published JWKS");
    assert_eq!(v.sub, id["sub"].as_str().unwrap());
    // The claims bind the caller.
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["account"], "orders", "{claims:#}");
    assert_eq!(
        claims["pid"], evs[0]["actor"]["process"]["pid"],
        "{claims:#}"
    );
    assert_eq!(
        claims["exe_sha256"], evs[0]["actor"]["process"]["file"]["hashes"][0]["value"],
        "{claims:#}"
    );
    // A token altered by one byte does not verify.
    let mut forged = token.to_owned();
    forged.push('A');
    assert!(
        warden::identity::token::verify_with_jwks(
            &forged,
            &jwks,
            id["iss"].as_str().unwrap(),
            "collector"
        )
        .is_err()
    );
}
