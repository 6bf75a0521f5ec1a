//! End-to-end forwarding: the real daemon ships its audit trail to an
//! HTTPS collector that fails on demand, to fake Elasticsearch and Splunk
//! HEC endpoints that check every request's documented shape, to a real
//! rsyslog over TLS, and to a rotating file. After every fault, every
//! stored event (checkpoints included) has arrived at least once, with its
//! exact bytes, first arrivals in seq order, duplicates only of the same
//! uid.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::forward::*;
use common::*;
use serde_json::{Value, json};

struct Fwd {
    env: TestEnv,
    app: String,
    db: EchoServer,
    certs: Certs,
}

impl Fwd {
    fn new() -> Self {
        let env = TestEnv::new();
        let app = env.cgroup("app");
        let db = EchoServer::start("127.0.0.2:0");
        let certs = make_certs(&env.tmp.path().join("certs"));
        Self {
            env,
            app,
            db,
            certs,
        }
    }

    /// Write the config with these `[[forward]]` tables and start.
    fn start(&mut self, forwards: &str) {
        self.env.write_config(&format!(
            "{}[audit]\ncheckpoint_every = 10\n[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"{}\"\n[[account]]\nname = \"app\"\ncgroups = [\"{}\"]\ntargets = [\"db\"]\n{forwards}",
            self.env.agent_table(false, ""),
            self.db.addr,
            self.app
        ));
        self.env.start();
    }

    fn db_path(&self) -> std::path::PathBuf {
        self.env.state_dir().join("audit.db")
    }

    /// `n` relayed connections (two events each).
    fn connections(&self, n: usize) {
        for _ in 0..n {
            let r = self
                .env
                .client(&self.app, "127.0.0.2", self.db.addr.port(), 64, None);
            assert!(r.same_bytes_back(), "{:?}", r.json);
        }
    }

    /// Connections for `secs` seconds from `clients` looping clients.
    fn load(&self, clients: usize, secs: f64) -> Vec<std::process::Child> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/support/loop_client.py");
        let procs = self.env.cg_dir(&self.app).join("cgroup.procs");
        (0..clients)
            .map(|_| {
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "echo $$ > '{}' && exec /usr/bin/python3 '{}' 127.0.0.2 {} {secs}",
                        procs.display(),
                        script.display(),
                        self.db.addr.port()
                    ))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }

    fn status(&self, name: &str) -> Value {
        let st = self.env.status_json();
        st["forwarders"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no forwarder {name} in status: {st:#}"))
    }

    fn token(&self, name: &str, value: &str) -> std::path::PathBuf {
        let p = self.env.tmp.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        // A secret: the agent's own, mode 0600 (fsutil::read_secret).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

/// True when every stored event is among `lines`.
fn complete(db: &std::path::Path, lines: &[Vec<u8>]) -> bool {
    let got: HashSet<u64> = lines.iter().map(|l| seq_of(l)).collect();
    let head = head_seq(db);
    head > 0 && (1..=head).all(|s| got.contains(&s))
}

fn https_forward(f: &Fwd, c: &Collector, token: &std::path::Path, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"collector\"\nkind = \"https\"\nurl = \"{}\"\nca_file = \"{}\"\nauth = \"bearer\"\ntoken_file = \"{}\"\nbatch_max_events = 5\nbatch_wait_ms = 50\ntimeout_secs = 2\nretry_max_secs = 1\n{extra}\n",
        c.url("/ingest"),
        f.certs.ca.display(),
        token.display()
    )
}

fn ndjson_handler() -> Handler {
    Arc::new(|_req: &HttpRequest| HttpReply::ok("{}"))
}

#[test]
fn https_collector_faults_lose_no_event() {
    let mut f = Fwd::new();
    let c = Collector::start(&f.certs, ndjson_handler());
    let token = f.token("token", "s3cret-token");
    let cfg = https_forward(&f, &c, &token, "");
    f.start(&cfg);
    let db = f.db_path();
    let ctx = |c: &Collector, f: &Fwd| {
        let reqs = c.requests();
        format!(
            "{} requests, last {:?}\nstatus: {:#}\nlog tail: {}",
            reqs.len(),
            reqs.last().map(|r| (r.status, r.kept)),
            f.status("collector"),
            f.env
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };

    f.connections(3);
    wait_until(
        20,
        "first events",
        || ctx(&c, &f),
        || complete(&db, &kept_lines(&c.requests())),
    );
    let first = &c.requests()[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/ingest");
    assert_eq!(first.header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(first.header("content-type"), Some("application/x-ndjson"));
    assert!(first.gzipped, "gzip is on by default");

    let faults = [
        Fault::Refuse,
        Fault::Status(500, None),
        Fault::Status(429, Some(1)),
        Fault::Hang,
        Fault::DropMidResponse,
        Fault::AcceptThenLose,
    ];
    for fault in faults {
        c.set(fault.clone());
        let before = c.requests().len();
        f.connections(3);
        std::thread::sleep(Duration::from_millis(2500));
        let head = head_seq(&db);
        let acked = cursor(&db, "collector").unwrap_or(0);
        assert!(
            acked < head,
            "{fault:?}: the cursor passed events no collector acknowledged ({acked} of {head})"
        );
        let st = f.status("collector");
        assert_eq!(st["state"], "retrying", "{fault:?}: {st:#}");
        assert!(st["last_error"].is_string(), "{fault:?}: {st:#}");
        assert!(st["backlog"].as_u64().unwrap() > 0, "{fault:?}: {st:#}");
        if fault != Fault::Refuse {
            assert!(c.requests().len() > before, "{fault:?}: no attempt seen");
        }
        c.set(Fault::None);
        let t = Instant::now();
        wait_until(
            30,
            &format!("recovery after {fault:?}"),
            || ctx(&c, &f),
            || complete(&db, &kept_lines(&c.requests())),
        );
        eprintln!("{fault:?}: recovered in {:?}", t.elapsed());
    }
    // Retry-After was honoured: after each 429 the next attempt waited ~1 s.
    let reqs = c.requests();
    let gaps: Vec<Duration> = reqs
        .windows(2)
        .filter(|w| w[0].status == 429)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(900)),
        "Retry-After: 1 not honoured: {gaps:?}"
    );

    // A graceful stop ships the final checkpoint too.
    f.env.stop();
    let stored = stored_events(&db);
    let lines = kept_lines(&c.requests());
    let (events, dups) = check_stream(&lines, &stored);
    assert_eq!(events, stored.len());
    assert!(
        stored
            .iter()
            .any(|(_, d)| String::from_utf8_lossy(d).contains("\"activity_name\":\"Checkpoint\"")),
        "checkpoints are in the stream"
    );
    eprintln!("{events} events, {dups} duplicates (same uid, same bytes)");
    assert!(dups > 0, "drop-mid-response must have caused resends");
    assert_eq!(cursor(&db, "collector"), Some(stored.last().unwrap().0));
}

#[test]
fn a_refusing_collector_parks_the_output_loudly() {
    let mut f = Fwd::new();
    let c = Collector::start(&f.certs, ndjson_handler());
    c.set(Fault::Status(401, None));
    let token = f.token("token", "expired");
    let cfg = https_forward(&f, &c, &token, "backlog_warn = 3");
    f.start(&cfg);
    f.connections(2);
    wait_until(
        20,
        "parked",
        || format!("{:#}", f.status("collector")),
        || f.status("collector")["state"] == "parked",
    );
    let n = c.requests().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.requests().len(), n, "a parked output does not loop");
    let st = f.status("collector");
    assert!(st["last_error"].as_str().unwrap().contains("401"), "{st:#}");
    assert!(st["backlog_over_warn"].as_bool().unwrap(), "{st:#}");
    assert!(f.env.log().contains("FORWARD OUTPUT PARKED"));
    assert_eq!(cursor(&f.db_path(), "collector"), None);
    // The operator's view says the same.
    let out = f.env.warden(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forwarding:") && text.contains("collector https") && text.contains("parked"),
        "{text}"
    );
    assert!(
        text.contains("over backlog_warn 3") && text.contains("401"),
        "{text}"
    );
}

/// Many events while the collector is down (a long outage, compressed in
/// time), then recovery: the backlog is reported and warned about, and
/// drains with no gap.
#[test]
fn outage_grows_the_backlog_then_recovery_has_no_gap() {
    let mut f = Fwd::new();
    let c = Collector::start(&f.certs, ndjson_handler());
    let token = f.token("token", "t");
    let cfg = https_forward(&f, &c, &token, "backlog_warn = 100")
        .replace("batch_max_events = 5", "batch_max_events = 500");
    f.start(&cfg);
    let db = f.db_path();
    c.set(Fault::Refuse);
    for mut child in f.load(3, 5.0) {
        child.wait().unwrap();
    }
    let head = head_seq(&db);
    assert!(head > 500, "the outage saw {head} events");
    std::thread::sleep(Duration::from_millis(300));
    let st = f.status("collector");
    assert!(st["backlog"].as_u64().unwrap() >= head - 1, "{st:#}");
    assert!(st["backlog_over_warn"].as_bool().unwrap(), "{st:#}");
    assert!(
        f.env
            .log()
            .contains("forward backlog over its warning level"),
        "backlog warning in the log"
    );
    // Enforcement went on during the outage.
    f.connections(1);
    let t = Instant::now();
    c.set(Fault::None);
    wait_until(
        60,
        "catch-up",
        || format!("{:#}", f.status("collector")),
        || complete(&db, &kept_lines(&c.requests())),
    );
    eprintln!("caught up {} events in {:?}", head_seq(&db), t.elapsed());
    f.env.stop();
    let stored = stored_events(&db);
    check_stream(&kept_lines(&c.requests()), &stored);
}

/// SIGKILL while batches are in flight, restart: nothing is missing.
#[test]
fn sigkill_mid_batch_then_restart_has_no_gap() {
    let mut f = Fwd::new();
    let c = Collector::start(&f.certs, ndjson_handler());
    c.set(Fault::Delay(Duration::from_millis(300)));
    let token = f.token("token", "t");
    let cfg = https_forward(&f, &c, &token, "");
    f.start(&cfg);
    let db = f.db_path();
    let clients = f.load(2, 3.0);
    std::thread::sleep(Duration::from_millis(1500));
    let in_flight = c.requests().len();
    f.env.kill9();
    for mut ch in clients {
        ch.wait().unwrap();
    }
    assert!(in_flight > 0, "batches were being sent when the agent died");
    let acked = cursor(&db, "collector").unwrap_or(0);
    assert!(
        acked < head_seq(&db),
        "events were still waiting at the kill"
    );
    c.set(Fault::None);
    f.env.start();
    f.connections(1);
    wait_until(
        60,
        "delivery after restart",
        || format!("{:#}", f.status("collector")),
        || complete(&db, &kept_lines(&c.requests())),
    );
    f.env.stop();
    let stored = stored_events(&db);
    let (events, dups) = check_stream(&kept_lines(&c.requests()), &stored);
    eprintln!("after SIGKILL: {events} events, {dups} duplicates");
}

/// Elasticsearch `_bulk`: every request is checked against the documented
/// shape; partial failures (429 items), lost answers (409 on the resend)
/// and a mapping error (parks) are handled as documented.
#[test]
fn elasticsearch_bulk_requests_and_partial_failures() {
    let mut f = Fwd::new();
    #[derive(Default)]
    struct Es {
        docs: HashMap<String, Value>,
        violations: Vec<String>,
        /// Requests left that fail every third item with 429.
        partial: usize,
        /// Requests left that store everything but answer 503.
        lose_answer: usize,
        mapping_error: bool,
        /// Per request: (ids sent, ids answered 429).
        log: Vec<(Vec<String>, Vec<String>)>,
        conflicts: usize,
    }
    let es = Arc::new(Mutex::new(Es {
        partial: 3,
        ..Default::default()
    }));
    let state = Arc::clone(&es);
    let handler: Handler = Arc::new(move |req: &HttpRequest| {
        let mut es = state.lock().unwrap();
        let mut bad = |why: String| {
            es.violations.push(why);
        };
        if req.method != "POST" || req.path != "/_bulk" {
            bad(format!("{} {}", req.method, req.path));
        }
        if req.header("content-type") != Some("application/x-ndjson") {
            bad(format!("content-type {:?}", req.header("content-type")));
        }
        if req.header("authorization") != Some("ApiKey a2V5OnNlY3JldA==") {
            bad(format!("authorization {:?}", req.header("authorization")));
        }
        let text = String::from_utf8_lossy(&req.body).into_owned();
        if !text.ends_with('\n') {
            bad("body must end with a newline".into());
        }
        let lines: Vec<&str> = text.lines().collect();
        if !lines.len().is_multiple_of(2) {
            bad(format!(
                "{} lines: action/document pairs expected",
                lines.len()
            ));
        }
        let mut items = Vec::new();
        let mut ids = Vec::new();
        let mut failed = Vec::new();
        let mut errors = false;
        let lose = es.lose_answer > 0;
        for (i, pair) in lines.chunks(2).enumerate() {
            let action: Value = serde_json::from_str(pair[0]).unwrap_or(Value::Null);
            let doc: Value =
                serde_json::from_str(pair.get(1).unwrap_or(&"")).unwrap_or(Value::Null);
            let obj = action.as_object();
            if obj.map(|o| o.len()) != Some(1) || action.get("create").is_none() {
                es.violations.push(format!("action line {:?}", pair[0]));
                continue;
            }
            let id = action["create"]["_id"].as_str().unwrap_or("").to_owned();
            if action["create"]["_index"] != "warden-test" {
                es.violations.push(format!("index in {:?}", pair[0]));
            }
            if doc["metadata"]["uid"].as_str() != Some(id.as_str()) {
                es.violations
                    .push(format!("_id {id} is not the document's uid"));
            }
            ids.push(id.clone());
            let status = if es.mapping_error {
                errors = true;
                json!({"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [time]"}})
            } else if es.partial > 0 && i % 3 == 1 {
                errors = true;
                failed.push(id.clone());
                json!({"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}})
            } else if es.docs.contains_key(&id) {
                errors = true;
                es.conflicts += 1;
                json!({"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}})
            } else {
                es.docs.insert(id.clone(), doc);
                json!({"status": 201, "result": "created"})
            };
            let mut item = status;
            item["_index"] = json!("warden-test");
            item["_id"] = json!(id);
            items.push(json!({ "create": item }));
        }
        if es.partial > 0 && !failed.is_empty() {
            es.partial -= 1;
        }
        es.log.push((ids, failed));
        if lose {
            es.lose_answer -= 1;
            return HttpReply {
                status: 503,
                body: b"{\"error\":\"lost\"}".to_vec(),
            };
        }
        let body = json!({"took": 1, "errors": errors, "items": items});
        HttpReply::ok(&body.to_string())
    });
    let c = Collector::start(&f.certs, handler);
    let key = f.token("es-key", "a2V5OnNlY3JldA==");
    f.start(&format!(
        "[[forward]]\nname = \"es\"\nkind = \"elasticsearch\"\nurl = \"{}\"\nindex = \"warden-test\"\nca_file = \"{}\"\nauth = \"apikey\"\ntoken_file = \"{}\"\ngzip = false\nbatch_max_events = 6\nbatch_wait_ms = 50\ntimeout_secs = 2\nretry_max_secs = 1\n",
        c.url(""),
        f.certs.ca.display(),
        key.display()
    ));
    let db = f.db_path();
    let stored_ids = |db: &std::path::Path| -> Vec<String> {
        let c =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let chain: String = c
            .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        stored_events(db)
            .iter()
            .map(|(s, _)| format!("{chain}:{s}"))
            .collect()
    };
    let all_indexed = |es: &Arc<Mutex<Es>>| {
        let es = es.lock().unwrap();
        stored_ids(&db).iter().all(|id| es.docs.contains_key(id))
    };
    f.connections(6);
    wait_until(
        30,
        "all documents indexed",
        || format!("{:#}", f.status("es")),
        || all_indexed(&es),
    );
    {
        let es = es.lock().unwrap();
        assert!(es.violations.is_empty(), "{:#?}", es.violations);
        // After a partial failure, only the failed items were sent again.
        let mut checked = 0;
        for w in es.log.windows(2) {
            if !w[0].1.is_empty() {
                assert_eq!(w[1].0, w[0].1, "resend = exactly the 429 items");
                checked += 1;
            }
        }
        assert!(checked >= 1, "partial failures happened: {:?}", es.log);
    }
    // Lost answers: the resend meets 409s, which count as delivered.
    es.lock().unwrap().lose_answer = 2;
    f.connections(4);
    wait_until(
        30,
        "indexed after lost answers",
        || format!("{:#}", f.status("es")),
        || all_indexed(&es),
    );
    wait_until(
        10,
        "cursor after 409s",
        || format!("{:#}", f.status("es")),
        || cursor(&db, "es") == Some(head_seq(&db)),
    );
    {
        let es = es.lock().unwrap();
        assert!(es.conflicts > 0, "resent documents were answered 409");
        assert!(es.violations.is_empty(), "{:#?}", es.violations);
        // Each stored event is one document, under its uid.
        let ids = stored_ids(&db);
        assert_eq!(es.docs.len(), ids.len());
        for (id, doc) in &es.docs {
            assert_eq!(doc["metadata"]["uid"], json!(id));
        }
    }
    // A mapping error cannot be retried away: the output parks, naming it.
    es.lock().unwrap().mapping_error = true;
    f.connections(1);
    wait_until(
        20,
        "parked on a mapping error",
        || format!("{:#}", f.status("es")),
        || f.status("es")["state"] == "parked",
    );
    let st = f.status("es");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception"),
        "{st:#}"
    );
}

/// Splunk HEC: `/services/collector/event` envelopes, the token, the
/// channel, and indexer acknowledgment polled until true. A second output
/// with a bad token parks without holding the first one back.
#[test]
fn splunk_hec_events_and_indexer_acknowledgment() {
    let mut f = Fwd::new();
    #[derive(Default)]
    struct Hec {
        next_ack: u64,
        /// ackId -> (events, polls so far)
        pending: HashMap<u64, (Vec<Value>, u32)>,
        indexed: Vec<Value>,
        violations: Vec<String>,
        channels: HashSet<String>,
        polls: usize,
    }
    let hec = Arc::new(Mutex::new(Hec::default()));
    let state = Arc::clone(&hec);
    let handler: Handler = Arc::new(move |req: &HttpRequest| {
        let mut h = state.lock().unwrap();
        let channel = req
            .header("x-splunk-request-channel")
            .unwrap_or("")
            .to_owned();
        let uuid_shape = channel.len() == 36
            && channel.chars().filter(|c| *c == '-').count() == 4
            && channel.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
        if !uuid_shape {
            h.violations
                .push(format!("channel {channel:?} is not a GUID"));
        }
        h.channels.insert(channel);
        let token = req.header("authorization").unwrap_or("");
        if token != "Splunk 0c1d2e3f-hec" {
            return HttpReply {
                status: 403,
                body: br#"{"text":"Invalid token","code":4}"#.to_vec(),
            };
        }
        match req.path.as_str() {
            "/services/collector/event" => {
                let mut events = Vec::new();
                for v in serde_json::Deserializer::from_slice(&req.body).into_iter::<Value>() {
                    let Ok(v) = v else {
                        h.violations
                            .push("body is not a stream of JSON objects".into());
                        return HttpReply {
                            status: 400,
                            body: br#"{"text":"Invalid data format","code":6}"#.to_vec(),
                        };
                    };
                    let ok = v["time"].is_number()
                        && v["host"].is_string()
                        && v["source"] == "warden"
                        && v["sourcetype"] == "warden:ocsf"
                        && v["event"]["metadata"]["uid"].is_string();
                    if !ok {
                        h.violations.push(format!("envelope {v}"));
                    }
                    let t = v["time"].as_f64().unwrap_or(0.0);
                    let ev_ms = v["event"]["time"].as_f64().unwrap_or(-1.0);
                    if (t * 1000.0 - ev_ms).abs() > 1.0 {
                        h.violations
                            .push(format!("time {t} is not the event's {ev_ms}"));
                    }
                    events.push(v["event"].clone());
                }
                h.next_ack += 1;
                let id = h.next_ack;
                h.pending.insert(id, (events, 0));
                HttpReply::ok(&json!({"text": "Success", "code": 0, "ackId": id}).to_string())
            }
            "/services/collector/ack" => {
                h.polls += 1;
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let Some(ids) = body["acks"].as_array() else {
                    h.violations.push(format!("ack body {body}"));
                    return HttpReply {
                        status: 400,
                        body: br#"{"text":"Invalid data format","code":6}"#.to_vec(),
                    };
                };
                let mut acks = serde_json::Map::new();
                for id in ids.iter().filter_map(Value::as_u64) {
                    // Indexed on the second poll.
                    let done = match h.pending.get_mut(&id) {
                        Some((_, polls)) => {
                            *polls += 1;
                            *polls >= 2
                        }
                        None => false,
                    };
                    if done && let Some((evs, _)) = h.pending.remove(&id) {
                        h.indexed.extend(evs);
                    }
                    acks.insert(id.to_string(), json!(done));
                }
                HttpReply::ok(&json!({ "acks": acks }).to_string())
            }
            other => {
                h.violations.push(format!("path {other}"));
                HttpReply {
                    status: 404,
                    body:
                        br#"{"text":"The requested URL was not found on this server.","code":404}"#
                            .to_vec(),
                }
            }
        }
    });
    let c = Collector::start(&f.certs, handler);
    let good = f.token("hec", "0c1d2e3f-hec");
    let bad = f.token("hec-bad", "wrong");
    let out = |name: &str, token: &std::path::Path| {
        format!(
            "[[forward]]\nname = \"{name}\"\nkind = \"splunk-hec\"\nurl = \"{}\"\nca_file = \"{}\"\ntoken_file = \"{}\"\nack = true\nbatch_max_events = 8\nbatch_wait_ms = 50\ntimeout_secs = 2\nretry_max_secs = 1\n",
            c.url(""),
            f.certs.ca.display(),
            token.display()
        )
    };
    let cfg = format!("{}{}", out("splunk", &good), out("splunk-bad", &bad));
    f.start(&cfg);
    let db = f.db_path();
    f.connections(5);
    let lines = |h: &Arc<Mutex<Hec>>| -> Vec<Vec<u8>> {
        h.lock()
            .unwrap()
            .indexed
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap())
            .collect()
    };
    wait_until(
        30,
        "indexed and acknowledged",
        || format!("{:#}", f.status("splunk")),
        || {
            let got: HashSet<u64> = lines(&hec).iter().map(|l| seq_of(l)).collect();
            let head = head_seq(&db);
            (1..=head).all(|s| got.contains(&s)) && cursor(&db, "splunk") == Some(head)
        },
    );
    {
        let h = hec.lock().unwrap();
        assert!(h.violations.is_empty(), "{:#?}", h.violations);
        assert!(h.polls >= 2, "the ack endpoint was polled");
        assert_eq!(h.channels.len(), 2, "one channel per output");
    }
    // HEC re-encodes the event as JSON, so compare values, not bytes.
    let stored: HashMap<u64, Value> = stored_events(&db)
        .into_iter()
        .map(|(s, d)| (s, serde_json::from_slice(&d).unwrap()))
        .collect();
    for l in lines(&hec) {
        let v: Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v, stored[&seq_of(&l)]);
    }
    let st = f.status("splunk-bad");
    assert_eq!(st["state"], "parked", "{st:#}");
    assert!(st["last_error"].as_str().unwrap().contains("403"), "{st:#}");
    assert_eq!(f.status("splunk")["state"], "idle");
}

/// A real rsyslog receives RFC 5424 over TLS with RFC 5425 framing: each
/// message parses back to the stored event with its uid and seq as
/// structured data. A file output next to it writes the same events.
#[test]
fn rsyslog_over_tls_and_a_rotating_file_receive_every_event() {
    let mut f = Fwd::new();
    let rs = Rsyslog::start(&f.env.tmp.path().join("rsyslog"), &f.certs);
    let file = f.env.tmp.path().join("out/audit.ndjson");
    f.start(&format!(
        "[[forward]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\nfacility = \"authpriv\"\nbatch_max_events = 7\nbatch_wait_ms = 50\nretry_max_secs = 1\n\
         [[forward]]\nname = \"disk\"\nkind = \"file\"\npath = \"{}\"\nrotate_bytes = 8192\nkeep_files = 1000\nbatch_max_events = 3\nbatch_wait_ms = 50\n",
        rs.port,
        f.certs.ca.display(),
        file.display()
    ));
    let db = f.db_path();
    f.connections(12);
    let parse = |line: &str| -> (u32, String, u64, Vec<u8>) {
        // <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG
        let (pri, rest) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once(">1 "))
            .unwrap_or_else(|| panic!("not RFC 5424: {line}"));
        let mut parts = rest.splitn(6, ' ');
        let _ts = parts.next().unwrap();
        let _host = parts.next().unwrap();
        assert_eq!(parts.next(), Some("warden"), "{line}");
        let _pid = parts.next().unwrap();
        assert_eq!(parts.next(), Some("audit"), "{line}");
        let rest = parts.next().unwrap();
        let (sd, msg) = rest.split_once("] ").unwrap();
        let sd = sd.strip_prefix("[warden@32473 ").unwrap();
        let uid = sd
            .split("uid=\"")
            .nth(1)
            .and_then(|x| x.split('"').next())
            .unwrap()
            .to_owned();
        let seq: u64 = sd
            .split("seq=\"")
            .nth(1)
            .and_then(|x| x.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        (pri.parse().unwrap(), uid, seq, msg.as_bytes().to_vec())
    };
    let ctx = || {
        format!(
            "rsyslog has {} lines; status {:#}\n{}",
            rs.raw_lines().len(),
            f.status("siem"),
            std::fs::read_to_string(f.env.tmp.path().join("rsyslog/rsyslogd.out"))
                .unwrap_or_default()
        )
    };
    wait_until(30, "rsyslog has every event", ctx, || {
        let msgs: Vec<Vec<u8>> = rs.raw_lines().iter().map(|l| parse(l).3).collect();
        complete(&db, &msgs)
    });
    f.env.stop();
    // The final checkpoint, sent at stop.
    wait_until(10, "final checkpoint", String::new, || {
        let msgs: Vec<Vec<u8>> = rs.raw_lines().iter().map(|l| parse(l).3).collect();
        complete(&db, &msgs)
    });
    let stored = stored_events(&db);
    let chain: String = {
        let first: Value = serde_json::from_slice(&stored[0].1).unwrap();
        first["metadata"]["uid"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut msgs = Vec::new();
    for line in rs.raw_lines() {
        let (pri, uid, seq, msg) = parse(&line);
        assert_eq!(uid, format!("{chain}:{seq}"));
        assert_eq!(seq_of(&msg), seq);
        // authpriv (10) × 8 + informational (6) or warning (4).
        assert!(pri == 86 || pri == 84, "{pri}");
        msgs.push(msg);
    }
    let (events, _) = check_stream(&msgs, &stored);
    assert_eq!(events, stored.len());
    // rsyslog itself parsed the messages as RFC 5424.
    for l in rs.field_lines() {
        let mut p = l.splitn(4, '|');
        assert_eq!(p.next(), Some("warden"), "{l}");
        assert_eq!(p.next(), Some("audit"), "{l}");
        let sd = p.next().unwrap();
        assert!(
            sd.starts_with(&format!("[warden@32473 uid=\"{chain}:")),
            "{l}"
        );
    }
    // The file output: rotated files plus the live one hold every event.
    let dir = file.parent().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() > 1, "rotation happened: {files:?}");
    // Oldest first: audit.ndjson.N .. .1, then audit.ndjson.
    files.sort_by_key(|p| {
        let n = p
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<u32>().ok())
            .unwrap_or(0);
        std::cmp::Reverse(n)
    });
    let mut lines = Vec::new();
    for p in &files {
        let meta = std::fs::metadata(p).unwrap();
        assert!(meta.len() <= 8192 || std::fs::read_to_string(p).unwrap().lines().count() <= 3);
        for l in std::fs::read_to_string(p).unwrap().lines() {
            lines.push(l.as_bytes().to_vec());
        }
    }
    check_stream(&lines, &stored);
    assert_eq!(cursor(&db, "disk"), Some(stored.last().unwrap().0));
}
