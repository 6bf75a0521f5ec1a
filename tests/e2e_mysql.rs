//! MySQL/MariaDB through the real `warden` binary: a workload in an
//! enrolled test cgroup runs the `mariadb` client and pymysql against a real
//! MariaDB 10.11 (started by the harness) without holding any password.
//! Warden answers the client's handshake itself, logs in upstream as the
//! grant's user, decides every statement, masks results and audits.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::mariadb::{self, MariaDb};
use common::*;
use serde_json::Value;

const POLICY: &str = r#"
[policy.ro]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets"], name = "no-secrets" },
  { action = "approve", classes = ["write"], tables = ["orders"], name = "orders-writes" },
]

# Nobody approves in these tests: `approve` statements are refused after 1 s.
[approvals]
approval_timeout_secs = 1

[masking.pii]
columns = [ { column = "customers.card", strategy = "last4" } ]
patterns = ["email", "ssn"]
"#;

/// A running agent in front of the shared MariaDB.
struct MyEnv {
    env: TestEnv,
    db: &'static MariaDb,
    app: String,
}

impl MyEnv {
    fn start() -> Self {
        let db = MariaDb::shared();
        let mut env = TestEnv::new();
        let app = env.cgroup("app");
        let pw = env.tmp.path().join("shop_app.pw");
        std::fs::write(&pw, format!("{}\n", db.password())).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.write_config(&format!(
            "{agent}
[[target]]
name = \"shop\"
protocol = \"mysql\"
address = \"{addr}\"
max_message_bytes = 1048576

[[account]]
name = \"app\"
cgroups = [\"{app}\"]

[[grant]]
account = \"app\"
target = \"shop\"
database = \"{dbname}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"ro\"
masking = \"pii\"
{POLICY}",
            agent = env.agent_table(false, ""),
            addr = db.addr(),
            dbname = mariadb::DB,
            user = mariadb::APP_USER,
            pw = pw.display(),
        ));
        env.start();
        Self { env, db, app }
    }

    /// A command run inside the enrolled cgroup, with no MySQL password
    /// anywhere in its environment.
    fn in_app(&self, program: &str, args: &[&str]) -> Output {
        let procs = self.env.cg_dir(&self.app).join("cgroup.procs");
        let mut quoted = String::new();
        for a in args {
            quoted.push_str(" '");
            quoted.push_str(&a.replace('\'', "'\\''"));
            quoted.push('\'');
        }
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec '{program}'{quoted}",
                procs.display()
            ))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    }

    /// The `mariadb` client as user `workload`, no password.
    fn mariadb(&self, sql: &str) -> Output {
        let port = self.db.port().to_string();
        self.in_app(
            "/usr/bin/mariadb",
            &[
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-u",
                "workload",
                "--skip-password",
                mariadb::DB,
                "-N",
                "-B",
                "-e",
                sql,
            ],
        )
    }

    fn mariadb_ok(&self, sql: &str) -> String {
        let out = self.mariadb(sql);
        assert!(
            out.status.success(),
            "mariadb through Warden failed for {sql:?}: {}\n{}\nwarden log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.env.log())
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// `script` run by Debian's python3 (pymysql) with `PORT` set.
    fn python(&self, script: &str) -> Output {
        let port = self.db.port().to_string();
        self.in_app("/usr/bin/python3", &["-c", script, &port])
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_harness_starts_mariadb_with_the_data_set() {
    let db = MariaDb::shared();
    let out = db.root_sql("SELECT name FROM shop.customers ORDER BY id");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Alice\nBob\n");
    // The application user logs in over TCP with its password.
    let out = Command::new("/usr/bin/mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P"])
        .arg(db.port().to_string())
        .args(["-u", mariadb::APP_USER])
        .arg(format!("-p{}", db.password()))
        .args([
            mariadb::DB,
            "-N",
            "-B",
            "-e",
            "SELECT count(*) FROM secrets",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "1\n");
}

#[test]
fn the_mariadb_client_reads_through_warden_without_a_password_with_masking() {
    let e = MyEnv::start();
    let out = e.mariadb_ok("SELECT name, email, ssn, card FROM customers ORDER BY id");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), mariadb::CUSTOMERS.len(), "{out}");
    for (line, c) in lines.iter().zip(mariadb::CUSTOMERS) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols[0], c.name, "{line}");
        assert!(!line.contains(c.email), "email leaked: {line}");
        assert!(!line.contains(c.ssn), "ssn leaked: {line}");
        assert!(!line.contains(c.card), "card leaked: {line}");
        // The column rule keeps the last four digits of the card.
        assert!(cols[3].ends_with(&c.card[c.card.len() - 4..]), "{line}");
    }
    // A masked column only as a bare output column: in an expression or a
    // condition it is refused (it could be read out or probed).
    for sql in [
        "SELECT concat(card, '') FROM customers WHERE id = 1",
        "SELECT name FROM customers WHERE card LIKE '4111%'",
    ] {
        let out = e.mariadb(sql);
        assert!(!out.status.success(), "{sql}");
        let err = text(&out.stderr);
        assert!(
            err.contains("ERROR 1142 (42000)") && err.contains("masked column card"),
            "{sql}: {err}"
        );
        assert!(!text(&out.stdout).contains("4111111111111111"), "{sql}");
    }
    // A computed column of a masked table that slips past the analysis
    // still gets the table's strictest rule.
    let out = e.mariadb_ok("SELECT concat(name, '') FROM customers WHERE id = 1");
    assert!(!out.contains("Alice"), "{out}");
    // The upstream saw the grant's user, not the workload's.
    let out = e.mariadb_ok("SELECT current_user()");
    assert!(out.starts_with(mariadb::APP_USER), "{out}");

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
    assert_eq!(st["rows"], mariadb::CUSTOMERS.len() as u64, "{res:#}");
    assert!(
        st["values_masked"].as_u64().unwrap() >= 3 * mariadb::CUSTOMERS.len() as u64,
        "{res:#}"
    );
    for s in &stmts {
        let dump = serde_json::to_string(s).unwrap();
        for c in mariadb::CUSTOMERS {
            assert!(
                !dump.contains(c.email) && !dump.contains(c.card) && !dump.contains(c.ssn),
                "audit holds unmasked data: {s:#}"
            );
        }
    }
}

#[test]
fn blocked_tables_and_bypass_attempts_are_refused_with_1142_and_audited() {
    let e = MyEnv::start();
    let refused = [
        ("SELECT token FROM secrets", 1142, "no-secrets"),
        ("SELECT token FROM `shop`.`SECRETS`", 1142, "no-secrets"),
        (
            "SELECT 1 /*! , (SELECT token FROM secrets) */",
            1142,
            "executable comment",
        ),
        (
            "SELECT 1 /*!50000 UNION SELECT token FROM secrets */",
            1142,
            "executable comment",
        ),
        (
            "SELECT 1 --x, (SELECT token FROM secrets)",
            1142,
            "no-secrets",
        ),
        ("DELETE FROM customers", 1142, "default deny"),
        // Held for approval, nobody approves: refused after the timeout.
        ("DELETE FROM orders", 1142, "not approved"),
        ("SELECT LOAD_FILE('/etc/passwd')", 1142, "load_file"),
        ("SET sql_mode = 'ANSI_QUOTES'", 1142, "sql_mode"),
        ("SET NAMES gbk", 1142, "SET NAMES"),
        ("SELEC 1", 1142, "statement refused"),
        // The client's own `use` command is COM_INIT_DB.
        ("USE mysql", 1044, "grant's database"),
    ];
    for (sql, code, why) in refused {
        let out = e.mariadb(sql);
        assert!(!out.status.success(), "{sql:?} was not refused");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("ERROR {code} (42000)")),
            "{sql:?}: {err}"
        );
        assert!(err.contains(why), "{sql:?}: {err}");
        assert!(!text(&out.stdout).contains("top-secret-token"), "{sql:?}");
    }
    // Nothing changed upstream.
    let out = e.db.root_sql("SELECT count(*) FROM shop.orders");
    assert_eq!(text(&out.stdout), "2\n");
    let stmts = e.statements();
    let blocked = stmts
        .iter()
        .find(|s| {
            s["query_info"]["query_string"]
                .as_str()
                .is_some_and(|q| q == "SELECT token FROM secrets")
        })
        .unwrap_or_else(|| panic!("no event for the blocked statement: {stmts:#?}"));
    let w = &blocked["unmapped"]["warden"];
    assert_eq!(w["decision"], "blocked", "{blocked:#}");
    assert_eq!(w["statement"]["rule"], "no-secrets", "{blocked:#}");
    let decisions: Vec<&str> = stmts
        .iter()
        .filter_map(|s| s["unmapped"]["warden"]["decision"].as_str())
        .collect();
    assert!(decisions.contains(&"denied"), "{decisions:?}");
    assert!(decisions.contains(&"rejected"), "{decisions:?}");
    assert!(decisions.contains(&"approval_required"), "{decisions:?}");
    // The held statement is on record as an approval request.
    let requested = e
        .env
        .audit_events()
        .into_iter()
        .any(|ev| ev.to_string().contains("DELETE FROM orders") && ev["class_uid"] != 6005);
    assert!(requested, "no approval request event");
    // Warden still serves (a refusal inside one session is in the pymysql
    // test).
    assert_eq!(e.mariadb_ok("SELECT 1"), "1");
}

#[test]
fn pymysql_connects_without_a_password_and_reads_masked_rows() {
    let e = MyEnv::start();
    let script = r#"
import sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="anyone",
                    password="wrong-on-purpose", database="shop")
with c.cursor() as cur:
    cur.execute("SELECT id, email, card FROM customers WHERE id = %s", (1,))
    print(cur.fetchall())
    try:
        cur.execute("SELECT * FROM secrets")
        print("NOT REFUSED")
    except pymysql.err.OperationalError as err:
        print("refused", err.args[0])
    try:
        cur.execute(b"SELECT 'caf\xe9' FROM secrets")
        print("NOT REFUSED")
    except pymysql.err.OperationalError as err:
        print("latin1 refused", err.args[0], "UTF-8" in err.args[1])
    cur.execute("SELECT count(*) FROM orders")
    print(cur.fetchone()[0])
c.ping()
c.close()
"#;
    let out = e.python(script);
    let so = text(&out.stdout);
    assert!(
        out.status.success(),
        "{so}\n{}\nwarden log:\n{}",
        text(&out.stderr),
        tail(&e.env.log())
    );
    assert!(!so.contains("alice@example.com"), "{so}");
    assert!(!so.contains("4111111111111111"), "{so}");
    assert!(so.contains("1111"), "{so}");
    assert!(so.contains("refused 1142"), "{so}");
    assert!(so.contains("latin1 refused 1142 True"), "{so}");
    assert!(so.trim_end().ends_with('2'), "{so}");
}

#[test]
fn malformed_packets_end_in_an_err_or_a_close_and_warden_carries_on() {
    let e = MyEnv::start();
    // Raw sockets: a packet header claiming 16 MiB, a handshake response
    // of garbage, and a command with sequence id 5 after a good login.
    let script = r#"
import socket, struct, sys
port = int(sys.argv[1])
def packet(s):
    head = b""
    while len(head) < 4:
        b = s.recv(4 - len(head))
        if not b: return None
        head += b
    n = head[0] | head[1] << 8 | head[2] << 16
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b: return None
        body += b
    return head[3], body
def answer(s):
    try:
        p = packet(s)
    except ConnectionResetError:
        return "close"
    if p is None: return "close"
    return "err%d" % struct.unpack("<H", p[1][1:3])[0] if p[1][:1] == b"\xff" else "ok"
# 1. garbage handshake response
s = socket.create_connection(("127.0.0.1", port)); packet(s)
s.sendall(b"\x05\x00\x00\x01garba"); print("garbage", answer(s)); s.close()
# 2. a good login, then a packet past the maximum
def login():
    s = socket.create_connection(("127.0.0.1", port)); packet(s)
    caps = 0x0200 | 0x8000 | 0x80000 | 0x1
    body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"x\x00" + b"\x00" + b"mysql_native_password\x00"
    s.sendall(struct.pack("<I", len(body))[:3] + b"\x01" + body)
    return s, answer(s)
s, a = login(); print("login", a)
s.sendall(b"\xff\xff\xff\x00" + b"\x03SELECT 1"); print("huge", answer(s)); s.close()
# 3. a command with a sequence id out of order
s, a = login()
q = b"\x03SELECT 1"
s.sendall(struct.pack("<I", len(q))[:3] + b"\x05" + q); print("sequence", answer(s)); s.close()
"#;
    let out = e.python(script);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}\n{}", text(&out.stderr));
    assert!(
        so.contains("garbage err1043") || so.contains("garbage close"),
        "{so}"
    );
    assert!(so.contains("login ok"), "{so}");
    assert!(
        so.contains("huge err1153") || so.contains("huge close"),
        "{so}"
    );
    assert!(
        so.contains("sequence err1156") || so.contains("sequence close"),
        "{so}"
    );
    // Warden is still serving.
    assert_eq!(e.mariadb_ok("SELECT 41 + 1"), "42");
    assert!(!e.env.log().contains("panicked"), "{}", tail(&e.env.log()));
}

#[test]
fn a_server_whose_sql_mode_changes_quoting_is_refused() {
    let e = MyEnv::start();
    let set = |mode: &str| {
        let out = e.db.root_sql(&format!("SET GLOBAL sql_mode = '{mode}'"));
        assert!(out.status.success(), "{out:?}");
    };
    let before = text(&e.db.root_sql("SELECT @@GLOBAL.sql_mode").stdout)
        .trim()
        .to_owned();
    set("ANSI_QUOTES");
    let out = e.mariadb("SELECT 1");
    set(&before);
    assert!(
        !out.status.success(),
        "a session on an ANSI_QUOTES server was served"
    );
    let err = text(&out.stderr);
    assert!(err.contains("ANSI_QUOTES"), "{err}");
    // With the mode restored, sessions are served again.
    assert_eq!(e.mariadb_ok("SELECT 1"), "1");
}

#[test]
fn sysbench_oltp_read_only_runs_through_warden_without_errors() {
    let e = MyEnv::start();
    let socket = format!("--mysql-socket={}", e.db.socket().display());
    let common = ["--tables=1", "--table-size=1000", "--mysql-db=shop"];
    let out = Command::new("/usr/bin/sysbench")
        .arg("oltp_read_only")
        .arg(&socket)
        .arg("--mysql-user=root")
        .args(common)
        .arg("prepare")
        .output()
        .unwrap();
    assert!(out.status.success(), "sysbench prepare: {out:?}");
    let port = format!("--mysql-port={}", e.db.port());
    let mut args = vec![
        "oltp_read_only",
        "--mysql-host=127.0.0.1",
        &port,
        "--mysql-user=workload",
        "--mysql-password=",
        // Text protocol: prepared statements are not served yet.
        "--db-ps-mode=disable",
        "--threads=2",
        "--time=4",
    ];
    args.extend(common);
    args.push("run");
    let out = e.in_app("/usr/bin/sysbench", &args);
    let _ = e.db.root_sql("DROP TABLE shop.sbtest1");
    let so = text(&out.stdout);
    assert!(
        out.status.success(),
        "{so}\n{}\nwarden log:\n{}",
        text(&out.stderr),
        tail(&e.env.log())
    );
    assert!(
        so.contains("ignored errors:                      0"),
        "{so}"
    );
    let queries: u64 = so
        .lines()
        .find_map(|l| l.trim().strip_prefix("total:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(queries > 100, "{so}");
}
