use super::*;
use serde_json::Value;

pub(crate) fn sample(activity: ConnActivity, decision: Decision) -> ConnectionEvent {
    ConnectionEvent {
        time_ms: 1_795_957_502_123,
        activity,
        decision,
        reason: None,
        detail: None,
        session: SessionId(0x4d2),
        account: Some("orders-api".into()),
        target: Some("orders-db".into()),
        protocol: "tcp".into(),
        process: ProcessInfo {
            pid: Some(1234),
            tgid: Some(1234),
            uid: Some(1000),
            gid: Some(1001),
            comm: Some("curl".into()),
            exe: Some("/usr/bin/curl".into()),
            cgroup_id: Some(77),
            cgroup_path: Some("/system.slice/orders.service".into()),
            exe_sha256: Some("ab".repeat(32)),
            cmdline: Some("curl http://orders".into()),
            start_boot_ns: Some(42_000_000),
            pid_reused: false,
            unit: Some("orders.service".into()),
        },
        client: "127.0.0.1:40000".parse().unwrap(),
        orig_dst: Some("10.0.0.5:5432".parse().unwrap()),
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        identity: Some(TokenIdentity {
            source: "token_file".into(),
            iss: "https://idp.example".into(),
            sub: "system:serviceaccount:orders:api".into(),
            aud: vec!["warden".into()],
            jti: Some("j-1".into()),
            exp: 1_900_000_000,
            kid: Some("k1".into()),
            alg: "RS256".into(),
            attestation: None,
        }),
    }
}

/// A statement of session 0x4d2 by the process of [`sample`].
pub(crate) fn sample_statement(
    phase: StatementPhase,
    decision: StatementDecision,
    statement_seq: u64,
) -> StatementEvent {
    let conn = sample(ConnActivity::Open, Decision::Allowed);
    let mut ev = StatementEvent {
        time_ms: conn.time_ms + statement_seq as i64 * 10,
        phase,
        decision,
        session: conn.session,
        statement_seq,
        account: "orders-api".into(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        database: "orders".into(),
        upstream_user: "orders_rw".into(),
        process: conn.process,
        identity: conn.identity,
        via: "simple".into(),
        statement: "SELECT id, email FROM public.orders WHERE id = $1".into(),
        class: "read".into(),
        tables: vec!["public.orders".into()],
        functions: Vec::new(),
        policy: Some("orders-policy".into()),
        rule: Some("rules[0]".into()),
        reason: None,
        rows: None,
        values_masked: None,
        duration_us: None,
        command_tag: None,
        sqlstate: None,
        error: None,
        result: None,
        allowlist: None,
    };
    if decision != StatementDecision::Allowed {
        ev.statement = "DELETE FROM public.orders".into();
        ev.class = "write".into();
        ev.rule = Some("no-deletes".into());
        ev.reason = Some("statement blocked by rule no-deletes".into());
        ev.sqlstate = Some("42501".into());
    }
    if phase == StatementPhase::Result {
        ev.rows = Some(2);
        ev.values_masked = Some(1);
        ev.duration_us = Some(1_234);
        ev.command_tag = Some("SELECT 2".into());
        ev.result = Some(ResultSummary {
            columns: vec!["id".into(), "email".into()],
            sample: vec![
                vec![Some("1".into()), Some("***".into())],
                vec![Some("2".into()), None],
            ],
        });
    }
    ev
}

fn encode(ev: &ConnectionEvent, seq: u64) -> Value {
    let bytes = encode_connection(ev, seq, "c0ffee", "host1").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_no_nulls(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("null at {path}"),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| assert_no_nulls(v, &format!("{path}.{k}"))),
        Value::Array(a) => a.iter().for_each(|v| assert_no_nulls(v, path)),
        _ => {}
    }
}

#[test]
fn open_is_network_activity_open() {
    let v = encode(&sample(ConnActivity::Open, Decision::Allowed), 42);
    assert_eq!(v["class_uid"], 4001);
    assert_eq!(v["category_uid"], 4);
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["activity_name"], "Open");
    assert_eq!(v["type_uid"], 400101);
    assert_eq!(v["time"], 1_795_957_502_123i64);
    assert_eq!(v["severity_id"], 1);
    assert_eq!(v["status_id"], 1);
    assert_eq!(v["status"], "Success");
    assert_eq!(v["action_id"], 1);
    assert_eq!(v["action"], "Allowed");
    assert_eq!(v["disposition"], "Allowed");
    assert_eq!(v["metadata"]["version"], "1.8.0");
    assert_eq!(v["metadata"]["uid"], "c0ffee:42");
    assert_eq!(v["metadata"]["log_name"], "warden");
    assert_eq!(v["metadata"]["product"]["name"], "Warden");
    assert_eq!(v["metadata"]["product"]["vendor_name"], "Warden");
    assert_eq!(
        v["metadata"]["product"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(v["device"]["hostname"], "host1");
    assert_eq!(v["src_endpoint"]["ip"], "127.0.0.1");
    assert_eq!(v["src_endpoint"]["port"], 40000);
    assert_eq!(v["dst_endpoint"]["ip"], "10.0.0.5");
    assert_eq!(v["dst_endpoint"]["port"], 5432);
    assert_eq!(v["dst_endpoint"]["svc_name"], "orders-db");
    assert_eq!(v["actor"]["process"]["pid"], 1234);
    assert_eq!(v["actor"]["process"]["name"], "curl");
    assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/curl");
    assert_eq!(v["actor"]["process"]["file"]["name"], "curl");
    assert_eq!(v["actor"]["process"]["user"]["uid"], "1000");
    assert_eq!(v["connection_info"]["protocol_name"], "tcp");
    assert_eq!(v["connection_info"]["direction_id"], 2);
    let w = &v["unmapped"]["warden"];
    assert_eq!(w["account"], "orders-api");
    assert_eq!(w["decision"], "allowed");
    assert_eq!(w["session"], "00000000000004d2");
    assert_eq!(w["gid"], 1001);
    assert_eq!(w["tgid"], 1234);
    assert_eq!(w["cgroup_id"], 77);
    assert_eq!(w["seq"], 42);
    // Absent values are omitted.
    assert!(v.get("status_code").is_none());
    assert!(v.get("status_detail").is_none());
    assert!(v.get("start_time").is_none());
    assert!(w.get("reason").is_none());
    assert!(w.get("detail").is_none());
    assert_no_nulls(&v, "");
}

#[test]
fn close_carries_traffic_and_duration() {
    let mut ev = sample(ConnActivity::Close, Decision::Allowed);
    ev.bytes_up = 100;
    ev.bytes_down = 2500;
    ev.duration_ms = 1500;
    let v = encode(&ev, 7);
    assert_eq!(v["activity_id"], 2);
    assert_eq!(v["type_uid"], 400102);
    assert_eq!(v["traffic"]["bytes_out"], 100);
    assert_eq!(v["traffic"]["bytes_in"], 2500);
    assert_eq!(v["traffic"]["bytes"], 2600);
    assert_eq!(v["duration"], 1500);
    assert_eq!(v["end_time"], ev.time_ms);
    assert_eq!(v["start_time"], ev.time_ms - 1500);
    assert_no_nulls(&v, "");
}

#[test]
fn refuse_is_denied_medium_failure_and_omits_unknowns() {
    let mut ev = sample(ConnActivity::Refuse, Decision::Refused);
    ev.reason = Some("unredirected".into());
    ev.detail = Some("no original destination recorded".into());
    ev.account = None;
    ev.target = None;
    ev.orig_dst = None;
    ev.process = ProcessInfo::default();
    ev.client = "[::1]:50000".parse().unwrap();
    let v = encode(&ev, 3);
    assert_eq!(v["activity_id"], 5);
    assert_eq!(v["activity_name"], "Refuse");
    assert_eq!(v["type_uid"], 400105);
    assert_eq!(v["severity_id"], 3);
    assert_eq!(v["status_id"], 2);
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["action_id"], 2);
    assert_eq!(v["action"], "Denied");
    assert_eq!(v["disposition_id"], 2);
    assert_eq!(v["status_code"], "unredirected");
    assert_eq!(v["status_detail"], "no original destination recorded");
    assert_eq!(v["src_endpoint"]["ip"], "::1");
    assert!(v.get("dst_endpoint").is_none());
    assert!(v.get("actor").is_none());
    let w = &v["unmapped"]["warden"];
    assert_eq!(w["decision"], "refused");
    assert_eq!(w["reason"], "unredirected");
    for absent in [
        "account",
        "target",
        "gid",
        "tgid",
        "cgroup_id",
        "cgroup_path",
    ] {
        assert!(w.get(absent).is_none(), "{absent} should be omitted");
    }
    assert_no_nulls(&v, "");
}

// The encoder before templates: the whole document as one struct.
fn ref_endpoint(addr: SocketAddr, svc_name: Option<String>) -> Endpoint {
    Endpoint {
        ip: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        svc_name,
    }
}

fn ref_actor(p: &ProcessInfo) -> Option<Actor> {
    let file = p.exe.as_ref().map(|path| File {
        name: path.rsplit('/').next().unwrap_or(path).to_owned(),
        path: path.clone(),
        type_id: 1,
        type_name: "Regular File".to_owned(),
        hashes: p
            .exe_sha256
            .iter()
            .map(|h| Fingerprint {
                algorithm_id: 3,
                algorithm: "SHA-256".to_owned(),
                value: h.clone(),
            })
            .collect(),
    });
    let user = p.uid.map(|uid| User {
        uid: uid.to_string(),
    });
    if p.pid.is_none() && p.comm.is_none() && file.is_none() && user.is_none() {
        return None;
    }
    Some(Actor {
        process: Process {
            pid: p.pid,
            name: p.comm.clone(),
            cmd_line: p.cmdline.clone(),
            file,
            user,
        },
    })
}

/// Encode `ev` as OCSF 1.8 Network Activity JSON; `seq` is the sequence
/// number the writer assigned, `chain_id` the store's chain id and `host` the
/// reporting host name (omitted when empty).
fn reference_connection(
    ev: &ConnectionEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    let id = activity_id(ev.activity);
    let allowed = ev.decision == Decision::Allowed;
    let session = ev.session.to_string();
    let dst_endpoint = match (ev.orig_dst, ev.target.clone()) {
        (Some(addr), svc) => Some(ref_endpoint(addr, svc)),
        (None, Some(svc)) => Some(Endpoint {
            ip: None,
            port: None,
            svc_name: Some(svc),
        }),
        (None, None) => None,
    };
    let (start_time, end_time) = match ev.activity {
        ConnActivity::Close => (
            Some(ev.time_ms.saturating_sub_unsigned(ev.duration_ms)),
            Some(ev.time_ms),
        ),
        ConnActivity::Open | ConnActivity::Refuse => (None, None),
    };
    let doc = NetworkActivity {
        activity_id: id,
        activity_name: activity_name(ev.activity).to_owned(),
        category_uid: CATEGORY_UID_NETWORK,
        category_name: "Network Activity".to_owned(),
        class_uid: CLASS_UID_NETWORK_ACTIVITY,
        class_name: "Network Activity".to_owned(),
        type_uid: CLASS_UID_NETWORK_ACTIVITY * 100 + u32::from(id),
        type_name: format!("Network Activity: {}", activity_name(ev.activity)),
        time: ev.time_ms,
        severity_id: if allowed { 1 } else { 3 },
        severity: if allowed { "Informational" } else { "Medium" }.to_owned(),
        status_id: if allowed { 1 } else { 2 },
        status: if allowed { "Success" } else { "Failure" }.to_owned(),
        status_code: ev.reason.clone(),
        status_detail: ev.detail.clone(),
        action_id: if allowed { 1 } else { 2 },
        action: if allowed { "Allowed" } else { "Denied" }.to_owned(),
        disposition_id: if allowed { 1 } else { 2 },
        disposition: if allowed { "Allowed" } else { "Blocked" }.to_owned(),
        metadata: metadata(chain_id, seq, Some(session.clone())),
        device: device(host),
        src_endpoint: ref_endpoint(ev.client, None),
        dst_endpoint,
        actor: ref_actor(&ev.process),
        connection_info: ConnectionInfo {
            protocol_name: "tcp".to_owned(),
            protocol_num: 6,
            direction_id: 2,
            direction: "Outbound".to_owned(),
        },
        traffic: Traffic {
            bytes_in: ev.bytes_down,
            bytes_out: ev.bytes_up,
            bytes: ev.bytes_down.saturating_add(ev.bytes_up),
        },
        duration: ev.duration_ms,
        start_time,
        end_time,
        unmapped: Unmapped {
            warden: WardenExt {
                account: ev.account.clone(),
                target: ev.target.clone(),
                decision: ev.decision,
                reason: ev.reason.clone(),
                detail: ev.detail.clone(),
                session,
                protocol: ev.protocol.clone(),
                cgroup_id: ev.process.cgroup_id,
                cgroup_path: ev.process.cgroup_path.clone(),
                tgid: ev.process.tgid,
                gid: ev.process.gid,
                unit: ev.process.unit.clone(),
                process_start_boot_ns: ev.process.start_boot_ns,
                pid_reused: ev.process.pid_reused,
                identity: ev.identity.clone(),
                seq,
            },
        },
    };
    serde_json::to_vec(&doc).map_err(|source| AuditError::Encode { source })
}

#[test]
fn templates_equal_whole_document_serialization() {
    let mut close = sample(ConnActivity::Close, Decision::Allowed);
    close.bytes_up = 5;
    close.bytes_down = 6;
    close.duration_ms = 7;
    close.reason = Some("upstream_closed".into());
    close.detail = Some("a \"quoted\" \u{1b} detail\n".into());
    let mut bare = sample(ConnActivity::Refuse, Decision::Refused);
    bare.process = ProcessInfo::default();
    bare.account = None;
    bare.target = None;
    bare.orig_dst = None;
    bare.identity = None;
    let mut svc_only = bare.clone();
    svc_only.target = Some("t\u{e9}".into());
    svc_only.process.exe = Some("noslash".into());
    svc_only.process.pid_reused = true;
    for ev in [
        sample(ConnActivity::Open, Decision::Allowed),
        close,
        bare,
        svc_only,
    ] {
        for (seq, chain, host) in [
            (1, "c0ffee", "h"),
            (u64::MAX, "a\"b", ""),
            (42, "", "h\u{0}"),
        ] {
            let want = reference_connection(&ev, seq, chain, host).unwrap();
            let got = encode_connection(&ev, seq, chain, host).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
    // One template, many seqs.
    let ev = sample(ConnActivity::Open, Decision::Allowed);
    let t = connection_template(&ev, &ev.session.to_string(), "c", "h").unwrap();
    for seq in [0, 9, 10, 12345, u64::MAX] {
        assert_eq!(
            t.fill(seq),
            reference_connection(&ev, seq, "c", "h").unwrap()
        );
    }
}

#[test]
fn encoding_is_deterministic_and_host_optional() {
    let ev = sample(ConnActivity::Open, Decision::Allowed);
    let a = encode_connection(&ev, 1, "c", "").unwrap();
    let b = encode_connection(&ev, 1, "c", "").unwrap();
    assert_eq!(a, b);
    let v: Value = serde_json::from_slice(&a).unwrap();
    assert!(v.get("device").is_none());
}

#[test]
fn decode_inverts_encode() {
    let mut close = sample(ConnActivity::Close, Decision::Allowed);
    close.bytes_up = 5;
    close.bytes_down = 6;
    close.duration_ms = 7;
    close.reason = Some("upstream_closed".into());
    let mut refuse = sample(ConnActivity::Refuse, Decision::Refused);
    refuse.process = ProcessInfo {
        cgroup_id: Some(9),
        ..ProcessInfo::default()
    };
    refuse.orig_dst = None;
    refuse.detail = Some("say \"hi\"\n".into());
    for ev in [sample(ConnActivity::Open, Decision::Allowed), close, refuse] {
        let bytes = encode_connection(&ev, 99, "abc", "h").unwrap();
        let d = decode_connection(&bytes).unwrap();
        assert_eq!(d.event, ev);
        assert_eq!(d.seq, 99);
        assert_eq!(d.uid, "abc:99");
        assert_eq!(d.host.as_deref(), Some("h"));
    }
    assert!(decode_connection(b"{}").is_err());
}

/// The probe's fields, comparable.
fn probed(p: &Probe<'_>) -> String {
    format!("{p:?}")
}

#[test]
fn fast_probe_reads_what_the_full_probe_reads() {
    let mut docs = Vec::new();
    let mut refuse = sample(ConnActivity::Refuse, Decision::Refused);
    refuse.reason = Some("unknown_account".into());
    refuse.detail = Some("\"unmapped\":{\"warden\":{\"seq\":1}} \\ \"time\":5".into());
    refuse.process.cmdline = Some(",\"unmapped\":{\"warden\":{\"account\":\"x\"}}}".into());
    refuse.account = None;
    let mut escaped = sample(ConnActivity::Close, Decision::Allowed);
    escaped.account = Some("acct \"q\"".into());
    escaped.target = Some("t\\1".into());
    escaped.identity = None;
    for ev in [
        sample(ConnActivity::Open, Decision::Allowed),
        refuse,
        escaped,
    ] {
        docs.push(encode_connection(&ev, 7, "c0ffee", "h").unwrap());
    }
    let change = ConfigChange {
        time_ms: -5,
        path: "/etc/w\"arden.toml".into(),
        sha256: "ab".repeat(32),
        action: ConfigAction::Reload,
        detail: Some("x".into()),
        previous_sha256: Some("cd".repeat(32)),
        outcome: ConfigOutcome::Failed,
        reason: Some("agent.listen: restart required".into()),
    };
    docs.push(encode_config(&change, 8, "c0ffee", "").unwrap());
    let prune = PruneRecord {
        time_ms: 9,
        from_seq: 1,
        through_seq: 5,
        events: 5,
        reason: "retention".into(),
        retention_days: 400,
        cutoff_ms: 3,
        acked_through: Some(4),
        checkpoint_head_hash: "00".repeat(32),
    };
    docs.push(encode_prune(&prune, 9, "c0ffee", "h").unwrap());
    for d in &docs {
        assert!(probe_layout(d).is_some(), "{}", String::from_utf8_lossy(d));
        assert_eq!(probed(&probe_fast(d).unwrap()), probed(&probe(d).unwrap()));
    }
    let p = probe_fast(&docs[1]).unwrap();
    assert_eq!(p.unmapped.warden.account, None);
    assert_eq!(p.unmapped.warden.reason.as_deref(), Some("unknown_account"));
    assert_eq!(p.unmapped.warden.seq, 7);
    assert_eq!(
        probe_fast(&docs[2])
            .unwrap()
            .unmapped
            .warden
            .account
            .as_deref(),
        Some("acct \"q\"")
    );
    assert_eq!(probe_fast(&docs[3]).unwrap().time, -5);
    // Other layouts of the same content go through the full parse.
    let v: serde_json::Value = serde_json::from_slice(&docs[0]).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    assert!(probe_layout(&pretty).is_none());
    assert_eq!(
        probed(&probe_fast(&pretty).unwrap()),
        probed(&probe(&docs[0]).unwrap())
    );
    for junk in [
        &b""[..],
        b"{",
        b"{\"activity_id\":",
        b"{\"activity_id\":1}}}",
        b"\xff\xfe",
    ] {
        assert!(probe_layout(junk).is_none());
        assert!(probe_fast(junk).is_err());
    }
}

#[test]
fn checkpoint_is_application_lifecycle_with_the_signed_body() {
    let dir = tempfile::tempdir().unwrap();
    let signer =
        crate::audit::checkpoint::CheckpointSigner::load_or_create(&dir.path().join("a.db"))
            .unwrap();
    let body = crate::audit::CheckpointBody {
        origin: "warden:c0ffee".into(),
        size: 41,
        head_hash: "ab".repeat(32),
        time_ms: 1_795_957_502_123,
        prev_checkpoint_hash: String::new(),
        key_id: signer.key_id().into(),
    };
    let cp = signer.sign(&body).unwrap();
    let bytes = encode_checkpoint(&cp, 42, "c0ffee", "host1").unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["class_uid"], 6002);
    assert_eq!(v["category_uid"], 6);
    assert_eq!(v["activity_id"], 99);
    assert_eq!(v["activity_name"], "Checkpoint");
    assert_eq!(v["type_uid"], 600299);
    assert_eq!(v["time"], 1_795_957_502_123i64);
    assert_eq!(v["metadata"]["uid"], "c0ffee:42");
    assert_eq!(v["metadata"]["sequence"], 42);
    assert!(v["metadata"].get("correlation_uid").is_none());
    assert_eq!(v["app"]["name"], "Warden");
    assert_eq!(v["device"]["hostname"], "host1");
    let c = &v["unmapped"]["warden"]["checkpoint"];
    assert_eq!(c["size"], 41);
    assert_eq!(c["key_id"], signer.key_id());
    assert_eq!(c["body"].as_str().unwrap().as_bytes(), cp.body_bytes());
    assert_eq!(c["signature"], hex::encode(cp.signature()));
    assert_eq!(c["public_key"], hex::encode(signer.public_key()));
    assert_eq!(v["unmapped"]["warden"]["seq"], 42);
    assert_no_nulls(&v, "");
    assert_eq!(class_of(&bytes), Some(6002));

    let d = decode_checkpoint(&bytes).unwrap();
    assert_eq!(d.checkpoint, cp);
    assert_eq!((d.seq, d.uid.as_str()), (42, "c0ffee:42"));
    assert_eq!(d.host.as_deref(), Some("host1"));
    // Neither decoder accepts the other's events.
    assert!(decode_connection(&bytes).is_err());
    let conn =
        encode_connection(&sample(ConnActivity::Open, Decision::Allowed), 1, "c", "").unwrap();
    assert!(decode_checkpoint(&conn).is_err());
    assert_eq!(class_of(&conn), Some(4001));
}

#[test]
fn statement_request_is_datastore_activity_query() {
    let ev = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 3);
    let bytes = encode_statement(&ev, 42, "c0ffee", "host1").unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["class_uid"], 6005);
    assert_eq!(v["class_name"], "Datastore Activity");
    assert_eq!(v["category_uid"], 6);
    assert_eq!(v["activity_id"], 4);
    assert_eq!(v["activity_name"], "Query");
    assert_eq!(v["type_uid"], 600504);
    assert_eq!(v["time"], ev.time_ms);
    assert_eq!(
        (v["severity_id"].clone(), v["status_id"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(v["status"], "Success");
    assert_eq!(v["action"], "Allowed");
    assert_eq!(v["disposition_id"], 1);
    assert_eq!(v["disposition"], "Allowed");
    assert!(v.get("status_code").is_none());
    assert_eq!(v["message"], "read statement allowed");
    assert_eq!(v["metadata"]["uid"], "c0ffee:42");
    assert_eq!(v["metadata"]["sequence"], 42);
    assert_eq!(v["metadata"]["correlation_uid"], "00000000000004d2");
    assert_eq!(v["src_endpoint"]["hostname"], "host1");
    assert_eq!(v["src_endpoint"]["name"], "orders-api");
    assert_eq!(v["dst_endpoint"]["svc_name"], "orders-db");
    assert_eq!(v["actor"]["process"]["pid"], 1234);
    assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/curl");
    assert_eq!(v["database"]["name"], "orders");
    assert_eq!(v["database"]["type_id"], 1);
    assert_eq!(v["table"]["name"], "public.orders");
    assert_eq!(v["type_id"], 1);
    assert_eq!(v["query_info"]["query_string"], ev.statement);
    assert_eq!(v["query_info"]["uid"], "00000000000004d2:3");
    assert!(v.get("duration").is_none());
    let w = &v["unmapped"]["warden"];
    assert_eq!(w["account"], "orders-api");
    assert_eq!(w["decision"], "allowed");
    assert_eq!(w["session"], "00000000000004d2");
    assert_eq!(w["identity"]["sub"], "system:serviceaccount:orders:api");
    assert_eq!(w["unit"], "orders.service");
    assert_eq!(w["seq"], 42);
    let st = &w["statement"];
    assert_eq!(st["phase"], "request");
    assert_eq!(st["statement_seq"], 3);
    assert_eq!(st["class"], "read");
    assert_eq!(st["rule"], "rules[0]");
    assert_eq!(st["policy"], "orders-policy");
    assert_eq!(st["via"], "simple");
    assert_eq!(st["tables"][0], "public.orders");
    assert!(st.get("functions").is_none(), "empty lists are omitted");
    assert!(st.get("rows").is_none());
    assert_no_nulls(&v, "");
    assert_eq!(class_of(&bytes), Some(6005));
}

#[test]
fn refused_and_result_statements_map_status_and_disposition() {
    let ev = sample_statement(StatementPhase::Request, StatementDecision::Blocked, 4);
    let v: Value = serde_json::from_slice(&encode_statement(&ev, 7, "c", "").unwrap()).unwrap();
    assert_eq!(v["severity_id"], 3);
    assert_eq!(v["status_id"], 2);
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["status_code"], "42501");
    assert_eq!(v["status_detail"], "statement blocked by rule no-deletes");
    assert_eq!(v["action_id"], 2);
    assert_eq!(v["disposition_id"], 2);
    assert_eq!(v["disposition"], "Blocked");
    assert_eq!(v["message"], "write statement blocked");
    assert!(v.get("device").is_none());
    assert!(v["src_endpoint"].get("hostname").is_none());
    assert_eq!(v["unmapped"]["warden"]["decision"], "blocked");
    assert_eq!(
        v["unmapped"]["warden"]["reason"],
        "statement blocked by rule no-deletes"
    );

    let mut ev = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 5);
    ev.tables.push("public.items".into());
    let v: Value = serde_json::from_slice(&encode_statement(&ev, 8, "c", "h").unwrap()).unwrap();
    assert_eq!(v["status"], "Success");
    assert_eq!(v["duration"], 1);
    assert!(
        v.get("table").is_none(),
        "two tables: no single table object"
    );
    assert_eq!(v["message"], "read statement result: SELECT 2");
    let st = &v["unmapped"]["warden"]["statement"];
    assert_eq!(st["phase"], "result");
    assert_eq!(st["rows"], 2);
    assert_eq!(st["values_masked"], 1);
    assert_eq!(st["duration_us"], 1234);
    assert_eq!(st["command_tag"], "SELECT 2");
    assert_eq!(st["result"]["columns"][1], "email");
    assert_eq!(st["result"]["sample"][0][1], "***");
    assert!(st["result"]["sample"][1][1].is_null(), "SQL NULL");

    // An allowed statement the upstream failed.
    ev.sqlstate = Some("23505".into());
    ev.error = Some("duplicate key value violates unique constraint".into());
    let v: Value = serde_json::from_slice(&encode_statement(&ev, 9, "c", "h").unwrap()).unwrap();
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["disposition"], "Allowed");
    assert_eq!(v["status_code"], "23505");
    assert_eq!(
        v["status_detail"],
        "duplicate key value violates unique constraint"
    );
    assert_eq!(v["message"], "read statement failed (SQLSTATE 23505)");
}

/// What a statement event decodes to: a result without process facts
/// and identity (the request and the open event have them), no
/// attestation in either phase.
pub(crate) fn as_stored(ev: &StatementEvent) -> StatementEvent {
    let mut ev = ev.clone();
    if ev.phase == StatementPhase::Result {
        ev.process = ProcessInfo::default();
        ev.identity = None;
    }
    if let Some(id) = ev.identity.as_mut() {
        id.attestation = None;
    }
    ev
}

#[test]
fn statement_results_leave_who_called_to_the_request() {
    let mut req = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 4);
    if let Some(id) = req.identity.as_mut() {
        id.attestation = Some("eyJhbGciOiJFZERTQSJ9.claims.signature".into());
    }
    let mut res = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 4);
    res.identity = req.identity.clone();
    let req_json: Value =
        serde_json::from_slice(&encode_statement(&req, 7, "c", "h").unwrap()).unwrap();
    let res_bytes = encode_statement(&res, 8, "c", "h").unwrap();
    let res_json: Value = serde_json::from_slice(&res_bytes).unwrap();
    // The request names the caller: process, cgroup, unit, token claims.
    assert_eq!(req_json["actor"]["process"]["pid"], 1234, "{req_json:#}");
    let w = &req_json["unmapped"]["warden"];
    assert_eq!(w["unit"], "orders.service");
    assert_eq!(w["cgroup_id"], 77);
    assert_eq!(w["identity"]["sub"], "system:serviceaccount:orders:api");
    assert!(w["identity"].get("attestation").is_none(), "{w:#}");
    // The result: account, target, session and statement, no caller.
    assert!(res_json.get("actor").is_none(), "{res_json:#}");
    let w = &res_json["unmapped"]["warden"];
    for key in [
        "identity",
        "unit",
        "cgroup_id",
        "cgroup_path",
        "tgid",
        "gid",
    ] {
        assert!(w.get(key).is_none(), "{key} in {w:#}");
    }
    assert_eq!(w["account"], "orders-api");
    assert_eq!(w["session"], "00000000000004d2");
    assert_eq!(w["statement"]["statement_seq"], 4);
    assert_eq!(w["statement"]["rows"], 2);
    let full = encode_statement(&req, 8, "c", "h").unwrap().len();
    assert!(res_bytes.len() < full, "{} >= {full}", res_bytes.len());
}

#[test]
fn decode_statement_inverts_encode() {
    let mut odd = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 9);
    odd.statement = "SELECT '\"unmapped\":{' || $1 -- \u{1b}\n".into();
    odd.process = ProcessInfo::default();
    odd.identity = None;
    odd.policy = None;
    odd.rule = None;
    odd.functions = vec!["pg_catalog.now".into()];
    odd.error = Some("\"seq\":1".into());
    let mut rejected = sample_statement(StatementPhase::Request, StatementDecision::Rejected, 1);
    rejected.class = "unknown".into();
    rejected.tables.clear();
    for ev in [
        sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1),
        sample_statement(StatementPhase::Result, StatementDecision::Allowed, 1),
        sample_statement(
            StatementPhase::Request,
            StatementDecision::ApprovalRequired,
            2,
        ),
        sample_statement(StatementPhase::Request, StatementDecision::Denied, 3),
        rejected,
        odd,
    ] {
        for seq in [1, 99, u64::MAX] {
            let bytes = encode_statement(&ev, seq, "abc", "h").unwrap();
            let d = decode_statement(&bytes).unwrap();
            assert_eq!(d.event, as_stored(&ev));
            assert_eq!(d.seq, seq);
            assert_eq!(d.uid, format!("abc:{seq}"));
            assert_eq!(d.host.as_deref(), Some("h"));
            // The fast probe reads what the full probe reads.
            assert!(
                probe_layout(&bytes).is_some(),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            let fast = probe_fast(&bytes).unwrap();
            assert_eq!(probed(&fast), probed(&probe(&bytes).unwrap()));
            assert_eq!(fast.kind(), Some(EventKind::Statement));
            let w = &fast.unmapped.warden;
            assert_eq!(w.decision.as_deref(), Some(ev.decision.as_str()));
            let st = w.statement.as_ref().unwrap();
            assert_eq!((st.phase, st.class.as_ref()), (ev.phase, ev.class.as_str()));
            assert_eq!(w.seq, seq);
        }
    }
    // Neither decoder accepts the other's events.
    let conn =
        encode_connection(&sample(ConnActivity::Open, Decision::Allowed), 1, "c", "").unwrap();
    assert!(decode_statement(&conn).is_err());
    let stmt = encode_statement(
        &sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1),
        1,
        "c",
        "",
    )
    .unwrap();
    assert!(decode_connection(&stmt).is_err());
    assert!(decode_statement(b"{}").is_err());
}
