//! PostgreSQL through the real `warden` binary: a workload in an enrolled
//! test cgroup runs psql/pgbench against a real PostgreSQL 15 (started by
//! the harness, SCRAM + TLS) without holding any password. Warden injects
//! the credentials, decides every statement, masks results and audits.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::pg::{self, PgServer};
use common::*;
use serde_json::Value;

/// A running agent in front of the shared PostgreSQL.
struct PgEnv {
    env: TestEnv,
    pg: &'static PgServer,
    app: String,
}

const POLICY: &str = r#"
[policy.ro]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
  { action = "approve", classes = ["write"], tables = ["orders"], name = "orders-writes" },
  { action = "block", functions = ["pg_read_file", "dblink*", "lo_*", "set_config", "query_to_xml"], name = "no-file-access" },
]

[masking.pii]
columns = [ { column = "customers.card", strategy = "last4" } ]
patterns = ["card", "email", "ssn", "iban", "token"]

# Nobody approves in these tests: `approve` statements are refused after 1 s.
[approvals]
approval_timeout_secs = 1
"#;

impl PgEnv {
    fn start(extra: &str) -> Self {
        Self::start_with("", extra)
    }

    /// `target_extra`: more keys of the `[[target]]` table.
    fn start_with(target_extra: &str, extra: &str) -> Self {
        let pg = PgServer::shared();
        let mut env = TestEnv::new();
        let app = env.cgroup("app");
        let pw = env.tmp.path().join("orders_ro.pw");
        std::fs::write(&pw, format!("{}\n", pg.password(pg::ORDERS_RO))).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.write_config(&format!(
            "{agent}
[[target]]
name = \"pg\"
protocol = \"postgres\"
address = \"{addr}\"
tls = {{ mode = \"verify-full\", ca_file = \"{ca}\" }}
{target_extra}

[[account]]
name = \"app\"
cgroups = [\"{app}\"]

[[grant]]
account = \"app\"
target = \"pg\"
database = \"{db}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"ro\"
masking = \"pii\"
{POLICY}
{extra}",
            agent = env.agent_table(false, ""),
            addr = pg.addr(),
            ca = pg.ca_pem_path().display(),
            db = pg::DB,
            user = pg::ORDERS_RO,
            pw = pw.display(),
        ));
        env.start();
        Self { env, pg, app }
    }

    /// A command run inside the enrolled cgroup, with no PostgreSQL
    /// password anywhere in its environment.
    fn in_app(&self, program: &std::path::Path, args: &[&str]) -> Output {
        self.in_app_cmd(program, args).output().unwrap()
    }

    /// [`in_app`](Self::in_app) as a command, to add variables or spawn.
    fn in_app_cmd(&self, program: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = self.env.in_cgroup_cmd(&self.app, program, args);
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port().to_string())
            .env("PGUSER", "workload")
            .env("PGDATABASE", pg::DB)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    fn psql(&self, sql: &str) -> Output {
        self.in_app(
            &self.pg.bin("psql"),
            &["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
    }

    fn psql_ok(&self, sql: &str) -> String {
        let out = self.psql(sql);
        assert!(
            out.status.success(),
            "psql through Warden failed for {sql:?}: {}\n{}\nwarden log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.env.log())
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn statements(&self) -> Vec<Value> {
        self.env
            .audit_events()
            .into_iter()
            .filter(|e| e["class_uid"] == 6005)
            .collect()
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_workload_without_a_password_reads_through_warden_with_masking() {
    let e = PgEnv::start("");
    let out = e.psql_ok("SELECT name, email, card, ssn FROM customers ORDER BY id");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pg::CUSTOMERS.len(), "{out}");
    for (line, c) in lines.iter().zip(pg::CUSTOMERS) {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols[0], c.name, "{line}");
        assert!(!line.contains(c.email), "email leaked: {line}");
        assert!(!line.contains(c.card), "card leaked: {line}");
        assert!(!line.contains(c.ssn), "ssn leaked: {line}");
        // The column rule keeps the last four digits of the card.
        assert!(cols[2].ends_with(&c.card[c.card.len() - 4..]), "{line}");
    }
    // Expressions of a column without a rule are caught by the pattern
    // backstop; an expression of a masked column is refused (42501).
    let out = e.psql_ok("SELECT email || '' AS x FROM customers WHERE id = 1");
    assert!(!out.contains("alice@example.com"), "{out}");
    let out = e.psql("SELECT upper(card) FROM customers WHERE id = 1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("masked column public.customers.card"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("4111111111111111"));
    // Errors are masked too (psql itself echoes its own query on the LINE
    // line; the server's message is what must not carry the value).
    let out = e.psql("SELECT 'alice@example.com'::int");
    assert!(!out.status.success());
    let err = stderr(&out);
    let error_line = err
        .lines()
        .find(|l| l.starts_with("ERROR:"))
        .unwrap_or_default();
    assert!(error_line.contains("invalid input syntax"), "{err}");
    assert!(!error_line.contains("alice@example.com"), "{err}");

    // The upstream saw Warden's role, not the workload's user name.
    assert_eq!(e.psql_ok("SELECT current_user"), pg::ORDERS_RO);

    let stmts = e.statements();
    let req = stmts
        .iter()
        .find(|s| {
            s["unmapped"]["warden"]["statement"]["phase"] == "request"
                && s["query_info"]["query_string"]
                    .as_str()
                    .is_some_and(|q| q.contains("FROM customers ORDER BY id"))
        })
        .unwrap_or_else(|| panic!("no request event: {stmts:#?}"));
    assert_eq!(req["unmapped"]["warden"]["decision"], "allowed", "{req:#}");
    let res = stmts
        .iter()
        .find(|s| {
            s["unmapped"]["warden"]["statement"]["phase"] == "result"
                && s["query_info"]["query_string"] == req["query_info"]["query_string"]
        })
        .unwrap_or_else(|| panic!("no result event: {stmts:#?}"));
    let st = &res["unmapped"]["warden"]["statement"];
    assert_eq!(st["rows"], pg::CUSTOMERS.len() as u64, "{res:#}");
    assert!(
        st["values_masked"].as_u64().unwrap() >= 3 * pg::CUSTOMERS.len() as u64,
        "{res:#}"
    );
    for s in &stmts {
        let dump = serde_json::to_string(s).unwrap();
        for c in pg::CUSTOMERS {
            assert!(
                !dump.contains(c.email) && !dump.contains(c.card) && !dump.contains(c.ssn),
                "audit holds unmasked data: {s:#}"
            );
        }
    }
}

#[test]
fn bypass_attempts_are_refused_with_42501_and_audited() {
    let e = PgEnv::start("");
    let refused = [
        "SELECT 1; DROP TABLE orders",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        "EXPLAIN ANALYZE DELETE FROM orders",
        "DO $$BEGIN EXECUTE 'DROP TABLE orders'; END$$",
        "COPY orders TO PROGRAM 'id'",
        "SELECT pg_catalog.PG_READ_FILE('/etc/passwd')",
        "SELECT \"set_config\"('role','admin',false)",
        "SELECT * FROM \"Secrets\"",
        "SELECT * FROM secrets",
        "SELECT * FROM public.payroll",
        "DELETE FROM orders",
        "SET standard_conforming_strings = off",
    ];
    for sql in refused {
        let out = e.psql(sql);
        assert!(!out.status.success(), "{sql:?} was not refused");
        let err = stderr(&out);
        assert!(err.contains("Warden"), "{sql:?}: {err}");
    }
    // Text PostgreSQL's grammar rejects gets the server's own answer:
    // 42601, its message and position (nothing forwarded).
    let out = e.in_app(
        &e.pg.bin("psql"),
        &[
            "-X",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT * FROM orders WHERE note = 'unterminated",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("42601: unterminated quoted string") && err.contains("LINE 1:"),
        "{err}"
    );
    // SQLSTATE is 42501 (psql shows it with VERBOSITY verbose).
    let out = e.in_app(
        &e.pg.bin("psql"),
        &["-X", "-v", "VERBOSITY=verbose", "-c", "DELETE FROM orders"],
    );
    assert!(stderr(&out).contains("42501"), "{}", stderr(&out));
    // Nothing changed upstream.
    assert_eq!(
        e.pg.psql_ok(pg::SUPERUSER, pg::DB, "SELECT count(*) FROM orders"),
        pg::ORDERS.len().to_string()
    );
    let stmts = e.statements();
    let decisions: Vec<&str> = stmts
        .iter()
        .filter_map(|s| s["unmapped"]["warden"]["decision"].as_str())
        .collect();
    assert!(decisions.contains(&"blocked"), "{decisions:?}");
    assert!(decisions.contains(&"denied"), "{decisions:?}");
    assert!(decisions.contains(&"rejected"), "{decisions:?}");
    assert!(decisions.contains(&"approval_required"), "{decisions:?}");
    // The session still works after a refusal.
    let out = e.in_app(
        &e.pg.bin("psql"),
        &[
            "-X",
            "-A",
            "-t",
            "-c",
            "DELETE FROM orders",
            "-c",
            "SELECT count(*) FROM orders",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pg::ORDERS.len().to_string()));
}

#[test]
fn extended_protocol_and_pgbench_work_and_parse_refusals_hold() {
    let e = PgEnv::start("");
    // pgbench's own tables, created directly by the superuser.
    let init =
        e.pg.pgbench_cmd(pg::SUPERUSER, pg::DB, "require")
            .args(["-i", "-s", "1", "-q"])
            .output()
            .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    e.pg.psql_ok(
        pg::SUPERUSER,
        pg::DB,
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO orders_ro",
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = e.in_app(
            &e.pg.bin("pgbench"),
            &["-n", "-S", "-M", mode, "-c", "2", "-t", "50"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains("number of transactions actually processed: 100/100"),
            "pgbench -M {mode}: {text}\n{}\nwarden log:\n{}",
            stderr(&out),
            tail(&e.env.log())
        );
    }
    // The write transaction is refused statement by statement, in every mode.
    for mode in ["simple", "extended", "prepared"] {
        let out = e.in_app(
            &e.pg.bin("pgbench"),
            &["-n", "-M", mode, "-c", "1", "-t", "1"],
        );
        assert!(!out.status.success(), "pgbench tpcb -M {mode} must fail");
        assert!(stderr(&out).contains("Warden"), "{}", stderr(&out));
    }
}

/// VmHWM of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn agent_pid(e: &PgEnv) -> u32 {
    e.env.daemon.as_ref().unwrap().id()
}

fn session_of(e: &PgEnv, sql: &str) -> String {
    e.statements()
        .iter()
        .find(|s| s["query_info"]["query_string"] == sql)
        .and_then(|s| s["unmapped"]["warden"]["session"].as_str())
        .unwrap_or_else(|| panic!("no statement {sql:?}: {:#?}", e.statements()))
        .to_owned()
}

#[test]
fn psql_copy_streaming_and_replay() {
    let e = PgEnv::start("");
    // \copy out: the data is masked by pattern on its way through.
    let out = e.psql_ok("\\copy (SELECT name, email, ssn FROM customers ORDER BY id) TO STDOUT");
    assert_eq!(out.lines().count(), pg::CUSTOMERS.len(), "{out}");
    for (line, c) in out.lines().zip(pg::CUSTOMERS) {
        assert!(line.starts_with(c.name), "{line}");
        assert!(!line.contains(c.email) && !line.contains(c.ssn), "{line}");
    }
    // \copy in: a write, refused for this read-only grant.
    let data = e.env.tmp.path().join("rows.tsv");
    std::fs::write(&data, "99\t1\t1.00\tcopied\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = e.psql(&format!("\\copy orders FROM '{}'", data.display()));
    assert!(
        !out.status.success(),
        "\\copy in allowed on a read-only grant"
    );
    assert!(stderr(&out).contains("Warden"), "{}", stderr(&out));
    assert_eq!(
        e.pg.psql_ok(pg::SUPERUSER, pg::DB, "SELECT count(*) FROM orders"),
        pg::ORDERS.len().to_string()
    );

    // 200,000 rows stream through without the agent's memory growing with
    // the result (~60 MB of rows; a buffered result would add at least that).
    let pid = agent_pid(&e);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = vm_hwm_kib(pid);
    let sql = "SELECT g, repeat('x', 300) FROM generate_series(1, 200000) g";
    let out = e.psql(sql);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    assert_eq!(lines.count(), 200_000);
    assert!(out.stdout.len() > 60_000_000, "{}", out.stdout.len());
    let after = vm_hwm_kib(pid);
    eprintln!("agent VmHWM before {before} KiB, after 200k rows {after} KiB");
    assert!(
        after < before + 24 * 1024,
        "agent peak memory grew by {} KiB for a {} byte result",
        after - before,
        out.stdout.len()
    );

    // Replay of one session: its statements in order, with decisions and
    // masked samples.
    let out = e.in_app(
        &e.pg.bin("psql"),
        &[
            "-X",
            "-c",
            "SELECT name, email FROM customers WHERE id = 1",
            "-c",
            "DELETE FROM orders WHERE id = 2",
            "-c",
            "SELECT count(*) FROM orders",
        ],
    );
    assert!(stderr(&out).contains("Warden"), "{}", stderr(&out));
    let session = session_of(&e, "DELETE FROM orders WHERE id = 2");
    let start = std::time::Instant::now();
    let text = loop {
        let r = e.env.warden(&["audit", "replay", &session]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let text = String::from_utf8_lossy(&r.stdout).into_owned();
        if text.contains("close") || start.elapsed() > std::time::Duration::from_secs(5) {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let select = text
        .find("SELECT name, email FROM customers WHERE id = 1")
        .unwrap_or_else(|| panic!("{text}"));
    let delete = text
        .find("DELETE FROM orders WHERE id = 2")
        .unwrap_or_else(|| panic!("{text}"));
    let count = text
        .find("SELECT count(*) FROM orders")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(select < delete && delete < count, "{text}");
    assert!(text.contains(" allowed "), "{text}");
    assert!(
        text.contains(" approval_required ") || text.contains(" denied "),
        "{text}"
    );
    assert!(
        text.contains(pg::CUSTOMERS[0].name),
        "sample missing: {text}"
    );
    assert!(
        !text.contains(pg::CUSTOMERS[0].email),
        "unmasked sample: {text}"
    );
    assert!(text.contains("masked=1"), "{text}");
}

#[test]
fn psql_cancel_with_sigint_cancels_the_query() {
    let e = PgEnv::start("");
    let mut child = e
        .in_app_cmd(&e.pg.bin("psql"), &["-X", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sleep runs upstream.
    let start = std::time::Instant::now();
    while e.pg.psql_ok(
        pg::SUPERUSER,
        pg::DB,
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
    ) != "1"
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the sleep never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let t = std::time::Instant::now();
    assert!(nix_kill(child.id(), "INT"));
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "psql still waiting after SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = stderr(&out);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn psycopg2_queries_cursors_and_gets_42501_for_a_refused_delete() {
    let e = PgEnv::start("");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/support/pg_warden_client.py");
    let out = e.in_app(
        std::path::Path::new("/usr/bin/python3"),
        &[script.to_str().unwrap()],
    );
    let res: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    assert!(
        res.get("error").is_none(),
        "{res:#}\nwarden log:\n{}",
        tail(&e.env.log())
    );
    assert_eq!(res["rows"][0][1], pg::CUSTOMERS[0].name, "{res:#}");
    assert_eq!(res["rows"].as_array().unwrap().len(), 2, "{res:#}");
    assert_eq!(res["cursor_rows"], 1000, "{res:#}");
    assert_eq!(res["cursor_first"], 1, "{res:#}");
    assert_eq!(res["delete_pgcode"], "42501", "{res:#}");
    assert!(
        res["delete_error"].as_str().unwrap().contains("Warden"),
        "{res:#}"
    );
    assert_eq!(res["after"], pg::ORDERS.len(), "{res:#}");
}

#[test]
fn client_tls_is_terminated_when_configured_and_declined_otherwise() {
    // Without client_tls: sslmode=require fails, prefer falls back to plain.
    let e = PgEnv::start("");
    let out = e
        .in_app_cmd(&e.pg.bin("psql"), &["-X", "-A", "-t", "-c", "SELECT 1"])
        .env("PGSSLMODE", "require")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "sslmode=require worked without client_tls"
    );
    assert!(stderr(&out).contains("SSL"), "{}", stderr(&out));
    let out = e
        .in_app_cmd(&e.pg.bin("psql"), &["-X", "-A", "-t", "-c", "SELECT 1"])
        .env("PGSSLMODE", "prefer")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(e);

    // With client_tls: a certificate made here; verify-full against it
    // proves the workload spoke TLS to Warden.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cert_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = PgEnv::start_with(
        &format!(
            "client_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            cert_path.display(),
            key_path.display()
        ),
        "",
    );
    for (mode, root) in [("require", None), ("verify-full", Some(&cert_path))] {
        let mut cmd = e.in_app_cmd(
            &e.pg.bin("psql"),
            &[
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT name FROM customers WHERE id = 1",
            ],
        );
        cmd.env("PGSSLMODE", mode);
        if let Some(root) = root {
            cmd.env("PGSSLROOTCERT", root);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "sslmode={mode}: {}\nwarden log:\n{}",
            stderr(&out),
            tail(&e.env.log())
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            pg::CUSTOMERS[0].name
        );
    }
    // A different CA: verify-full fails (the check can fail).
    let out = e
        .in_app_cmd(&e.pg.bin("psql"), &["-X", "-c", "SELECT 1"])
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", e.pg.ca_pem_path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "verify-full against the wrong CA worked"
    );
}
