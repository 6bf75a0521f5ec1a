//! MySQL/MariaDB through the real `warden` binary: a workload in an
//! enrolled test cgroup runs the `mariadb` client and pymysql against a real
//! MariaDB 10.11 (started by the harness) without holding any password.
//! Warden answers the client's handshake itself, logs in upstream as the
//! grant's user, decides every statement, masks results and audits.

mod common;

use std::process::Command;

use common::mariadb::{self, MariaDb};
use common::mysql::*;
use common::{User, WARDEN};
use serde_json::Value;

#[test]
fn the_harness_starts_mariadb_with_the_data_set() {
    let db = MariaDb::shared();
    let out = db.root_sql("SELECT name FROM shop.customers ORDER BY id");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Alice\nBob\n");
    // The application user logs in over TCP with its password.
    let out = app_direct(db, "SELECT count(*) FROM secrets");
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

/// `sysbench oltp_read_only` through Warden (`ps_mode`: `disable` for the
/// text protocol, `auto` for prepared statements), checked for errors and
/// a reasonable number of queries.
fn sysbench_read_only(e: &MyEnv, ps_mode: &str) {
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
    let ps = format!("--db-ps-mode={ps_mode}");
    let mut args = vec![
        "oltp_read_only",
        "--mysql-host=127.0.0.1",
        &port,
        "--mysql-user=workload",
        "--mysql-password=",
        &ps,
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

#[test]
fn sysbench_oltp_read_only_runs_through_warden_without_errors() {
    let e = MyEnv::start();
    sysbench_read_only(&e, "disable");
}

#[test]
fn prepared_statements_are_decided_at_prepare_and_binary_rows_are_masked() {
    let e = MyEnv::start();
    let so = e.raw(
        r#"
s = connect()
ok, sid, cols = prepare(s, "SELECT id, name, email, ssn, card FROM customers WHERE id = ? ORDER BY id")
print("prepared", ok, [c["name"] for c in cols])
r = execute(s, sid, [1])
print("execute", r[0], r[2])
# The same statement with a cursor: rows come with COM_STMT_FETCH, masked.
r = execute(s, sid, [2], cursor=1)
print("cursor", r[0])
print("fetched", fetch(s, sid, r[1]))
# Refused at PREPARE: nothing reaches the server, no id exists.
print("secrets", prepare(s, "SELECT token FROM secrets WHERE id = ?"))
print("misuse", prepare(s, "SELECT name FROM customers WHERE card LIKE ?"))
print("write", prepare(s, "DELETE FROM customers WHERE id = ?"))
# MariaDB's "the statement just prepared" after a refused PREPARE, and
# ids Warden never prepared.
print("last", execute(s, 0xffffffff, [1]))
print("unknown", execute(s, sid + 100, [1]))
print("reset-unknown", simple(s, b"\x1a" + struct.pack("<I", sid + 100)))
# A computed number of a table with masked columns: shown as a string.
ok, sid2, cols2 = prepare(s, "SELECT id * 1 AS n, concat(name, '') AS c FROM customers WHERE id = ?")
r = execute(s, sid2, [1])
print("computed", [c["type"] for c in r[1]], r[2])
print("reset", simple(s, b"\x1a" + struct.pack("<I", sid)))
send(s, 0, b"\x19" + struct.pack("<I", sid))
print("closed", execute(s, sid, [1]))
print("still", query(s, "SELECT 41 + 1"))
# A parameter sent in pieces (COM_STMT_SEND_LONG_DATA, no answer); pieces
# for a statement Warden did not prepare are dropped.
ok, sid3, cols3 = prepare(s, "SELECT concat('<', ?, '>') AS v")
send(s, 0, b"\x18" + struct.pack("<IH", sid3 + 100, 0) + b"dropped")
send(s, 0, b"\x18" + struct.pack("<IH", sid3, 0) + b"hel")
send(s, 0, b"\x18" + struct.pack("<IH", sid3, 0) + b"lo")
send(s, 0, b"\x17" + struct.pack("<IBI", sid3, 0, 1) + b"\x00\x01\xfc\x00")
_, p = packet(s)
n, _ = lenenc(p, 0)
c3, _ = columns(s, n)
print("long-data", rows(s, c3))
# The same with CLIENT_DEPRECATE_EOF (OK packets end rows, no EOF after
# column definitions).
DEPRECATE_EOF = True
s = connect()
ok, sid, cols = prepare(s, "SELECT id, card FROM customers WHERE id = ?")
r = execute(s, sid, [1])
print("deprecate-eof", r[0], r[2])
r = execute(s, sid, [2], cursor=1)
print("deprecate-eof-cursor", r[0], fetch(s, sid, r[1]))
"#,
    );
    println!("{so}");
    assert_eq!(
        line_of(&so, "deprecate-eof "),
        "deprecate-eof rows [[1, '************1111']]"
    );
    assert_eq!(
        line_of(&so, "deprecate-eof-cursor "),
        "deprecate-eof-cursor cursor [[2, '************5559']]"
    );
    for c in mariadb::CUSTOMERS {
        assert!(!so.contains(c.email), "email leaked: {so}");
        assert!(!so.contains(c.ssn), "ssn leaked: {so}");
        assert!(!so.contains(c.card), "card leaked: {so}");
    }
    assert!(
        so.contains("prepared ok [b'id', b'name', b'email', b'ssn', b'card']"),
        "{so}"
    );
    let line = |p: &str| line_of(&so, p);
    let ex = line("execute rows [[1, 'Alice', ");
    assert!(ex.contains("1111'"), "card keeps its last four: {ex}");
    assert_eq!(line("cursor"), "cursor cursor");
    let f = line("fetched [[2, 'Bob', ");
    assert!(f.contains("5559'"), "{f}");
    for (p, why) in [
        ("secrets", "no-secrets"),
        ("misuse", "masked column card"),
        ("write", "default deny"),
    ] {
        let l = line(p);
        assert!(l.contains("'err', 1142") && l.contains(why), "{l}");
    }
    for p in ["last", "unknown", "reset-unknown", "closed"] {
        assert!(line(p).contains("'err', 1243"), "{so}");
    }
    let computed = line("computed");
    assert!(computed.starts_with("computed [253, 253]"), "{computed}");
    assert!(!computed.contains("Alice"), "{computed}");
    assert_eq!(line("reset ("), "reset ('ok',)");
    assert_eq!(line("still"), "still ('rows', [['42']])");
    assert_eq!(line("long-data"), "long-data [['<hello>']]");
    // Audited: the refused PREPARE, each execution and the fetch.
    let stmts = e.statements();
    let via = |v: &str, phase: &str| {
        stmts
            .iter()
            .filter(|s| {
                s["unmapped"]["warden"]["statement"]["via"] == v
                    && s["unmapped"]["warden"]["statement"]["phase"] == phase
            })
            .count()
    };
    assert!(via("execute", "request") >= 2, "{stmts:#?}");
    assert!(via("fetch", "result") >= 1, "{stmts:#?}");
    let refused = stmts
        .iter()
        .find(|s| {
            s["unmapped"]["warden"]["statement"]["via"] == "prepare"
                && s["query_info"]["query_string"]
                    .as_str()
                    .is_some_and(|q| q.contains("FROM secrets"))
        })
        .unwrap_or_else(|| panic!("no event for the refused PREPARE: {stmts:#?}"));
    assert_eq!(refused["unmapped"]["warden"]["decision"], "blocked");
    assert!(
        stmts
            .iter()
            .any(|s| s["unmapped"]["warden"]["statement"]["via"] == "command"),
        "unknown statement ids are audited: {stmts:#?}"
    );
    for s in &stmts {
        let dump = serde_json::to_string(s).unwrap();
        for c in mariadb::CUSTOMERS {
            assert!(!dump.contains(c.card), "audit holds a card: {s:#}");
        }
    }
}

#[test]
fn sysbench_oltp_read_only_with_prepared_statements_runs_through_warden() {
    let e = MyEnv::start();
    // Server-side prepared statements, binary rows.
    sysbench_read_only(&e, "auto");
    let executions = e
        .statements()
        .iter()
        .filter(|s| s["unmapped"]["warden"]["statement"]["via"] == "execute")
        .count();
    assert!(executions > 100, "sysbench did not use prepared statements");
}

#[test]
fn multi_statements_are_decided_statement_by_statement_and_refused_whole() {
    let e = MyEnv::start();
    let script = r#"
import sys, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="anyone",
                    password="", database="shop", client_flag=CLIENT.MULTI_STATEMENTS)
with c.cursor() as cur:
    cur.execute("SELECT 1; SELECT name FROM customers WHERE id = 2")
    first = cur.fetchall()
    cur.nextset()
    print("both", first, cur.fetchall())
    for sql in ["SELECT 1; DELETE FROM customers",
                "SELECT name FROM customers; SELECT token FROM secrets",
                "SELECT 1; SELEC 2",
                "SELECT 1; KILL 1"]:
        try:
            cur.execute(sql)
            print("NOT REFUSED", sql)
        except pymysql.err.OperationalError as err:
            print("refused", err.args[0], err.args[1][:60])
    cur.execute("SELECT count(*) FROM orders")
    print("count", cur.fetchone()[0])
"#;
    let out = e.python(script);
    let so = text(&out.stdout);
    assert!(
        out.status.success(),
        "{so}\n{}\nwarden log:\n{}",
        text(&out.stderr),
        tail(&e.env.log())
    );
    assert!(so.contains("both ((1,),) (('Bob',),)"), "{so}");
    assert!(!so.contains("NOT REFUSED"), "{so}");
    assert_eq!(so.matches("refused 1142").count(), 4, "{so}");
    assert!(so.contains("count 2"), "{so}");
    let out = e.db.root_sql("SELECT count(*) FROM shop.customers");
    assert_eq!(text(&out.stdout), "2\n");
}

#[test]
fn change_user_reset_kill_and_init_db_stay_within_the_grant() {
    let e = MyEnv::start();
    let so = e.raw(
        r#"
s = connect()
ok, sid, cols = prepare(s, "SELECT name FROM customers WHERE id = ?")
# COM_CHANGE_USER to root with a made-up password: re-authenticated as
# the grant's user, whatever the workload names.
cu = b"\x11" + b"root\x00" + b"\x14" + b"x" * 20 + b"shop\x00" + struct.pack("<H", 45) + b"mysql_native_password\x00"
print("change", simple(s, cu))
print("user", query(s, "SELECT current_user()"))
print("after-change", execute(s, sid, [1]))
cu = b"\x11" + b"root\x00" + b"\x00" + b"mysql\x00" + struct.pack("<H", 45)
print("change-db", simple(s, cu))
print("initdb", simple(s, b"\x02mysql"))
print("initdb-own", simple(s, b"\x02shop"))
ok, sid, cols = prepare(s, "SELECT name FROM customers WHERE id = ?")
print("reset-conn", simple(s, b"\x1f"))
print("after-reset", execute(s, sid, [1]))
# KILL: only the account's own sessions through Warden.
other = connect()
oid = int(query(other, "SELECT connection_id()")[1][0][0])
print("kill-own", query(s, "KILL QUERY %d" % oid))
print("kill-foreign", query(s, "KILL 1"))
print("kill-user", query(s, "KILL USER shop_app"))
print("process-kill-foreign", simple(s, b"\x0c" + struct.pack("<I", 1)))
print("process-kill-own", simple(s, b"\x0c" + struct.pack("<I", oid)))
print("unknown-command", simple(s, b"\x1e"))
# COM_FIELD_LIST: decided as SHOW COLUMNS FROM the table.
send(s, 0, b"\x04customers\x00")
names = []
while True:
    _, p = packet(s)
    if p[0] in (0xfe, 0xff): break
    names.append(column(p)["name"].decode())
print("fields", names, p[0])
print("fields-secrets", simple(s, b"\x04secrets\x00"))
send(s, 0, b"\x09")
print("statistics", packet(s)[1][:7])
print("still", query(s, "SELECT 41 + 1"))
"#,
    );
    println!("{so}");
    let line = |p: &str| line_of(&so, &format!("{p} "));
    assert_eq!(line("change"), "change ('ok',)");
    assert!(
        line("user").contains(&format!("'{}@", mariadb::APP_USER)),
        "{so}"
    );
    assert!(line("after-change").contains("'err', 1243"), "{so}");
    assert!(line("change-db").contains("'err', 1044"), "{so}");
    assert!(line("initdb").contains("'err', 1044"), "{so}");
    assert_eq!(line("initdb-own"), "initdb-own ('ok',)");
    assert_eq!(line("reset-conn"), "reset-conn ('ok',)");
    assert!(line("after-reset").contains("'err', 1243"), "{so}");
    assert_eq!(line("kill-own"), "kill-own ('ok',)");
    assert!(line("kill-foreign").contains("'err', 1095"), "{so}");
    assert!(line("kill-user").contains("'err', 1142"), "{so}");
    assert!(line("process-kill-foreign").contains("'err', 1095"), "{so}");
    assert_eq!(line("process-kill-own"), "process-kill-own ('ok',)");
    assert!(line("unknown-command").contains("'err', 1047"), "{so}");
    assert_eq!(
        line("fields"),
        "fields ['id', 'name', 'email', 'ssn', 'card'] 254"
    );
    assert!(line("fields-secrets").contains("'err', 1142"), "{so}");
    assert_eq!(line("statistics"), "statistics b'Uptime:'");
    assert_eq!(line("still"), "still ('rows', [['42']])");
    let stmts = e.statements();
    let refused: Vec<String> = stmts
        .iter()
        .filter(|s| s["unmapped"]["warden"]["decision"] == "rejected")
        .filter_map(|s| s["query_info"]["query_string"].as_str().map(str::to_owned))
        .collect();
    for what in [
        "COM_CHANGE_USER",
        "COM_INIT_DB",
        "KILL 1",
        "COM_PROCESS_KILL 1",
        "command 0x1e",
    ] {
        assert!(
            refused.iter().any(|q| q.contains(what)),
            "{what} not audited: {refused:?}"
        );
    }
}

#[test]
fn tls_upstream_is_spoken_and_verified_when_the_target_asks() {
    let db = MariaDb::shared();
    let ca = db.ca_pem_path();
    let e = MyEnv::start_with(&format!(
        "tls = {{ mode = \"verify-full\", ca_file = \"{}\", server_name = \"localhost\" }}",
        ca.display()
    ));
    let out = e.mariadb_ok("SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert!(out.starts_with("Ssl_version\tTLSv1."), "{out}");
    let out = e.mariadb_ok("SELECT name, card FROM customers WHERE id = 1");
    assert!(out.starts_with("Alice\t") && out.ends_with("1111"), "{out}");
    assert!(!out.contains("4111111111111111"), "{out}");
    drop(e);
    // A certificate that does not carry the name: no session, not a
    // session in clear.
    let e = MyEnv::start_with(&format!(
        "tls = {{ mode = \"verify-full\", ca_file = \"{}\", server_name = \"db.example\" }}",
        ca.display()
    ));
    let out = e.mariadb("SELECT 1");
    assert!(!out.status.success(), "served over an unverified upstream");
    assert!(
        text(&out.stderr).contains("could not log in"),
        "{}",
        text(&out.stderr)
    );
    drop(e);
    // Without tls the same server is used in clear, as before.
    let e = MyEnv::start();
    let out = e.mariadb_ok("SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert_eq!(out.trim_end(), "Ssl_version", "no TLS: {out}");
}

/// `warden approvals ARGS` on `socket` as `uid` (0: root, directly).
fn approvals(socket: &std::path::Path, uid: u32, args: &[&str]) -> std::process::Output {
    let mut cmd = if uid == 0 {
        Command::new(WARDEN)
    } else {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(WARDEN);
        c
    };
    cmd.args([
        "--config",
        "/nonexistent/warden.toml",
        "approvals",
        "--socket",
    ])
    .arg(socket)
    .args(args)
    .output()
    .unwrap()
}

/// The pending request whose statement contains `needle`, waited for.
fn pending_with(socket: &std::path::Path, needle: &str) -> serde_json::Value {
    let t = std::time::Instant::now();
    loop {
        let out = approvals(socket, 0, &["--json", "list"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(r) = v["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r.to_string().contains(needle))
        {
            return r.clone();
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "no pending request with {needle:?}: {v:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn an_approve_rule_holds_every_execution_of_a_prepared_statement_showing_its_values() {
    let approver = User::create("wdn-my-approver");
    let socket = std::env::temp_dir().join(format!(
        "warden-mysql-approvals-{}.sock",
        std::process::id()
    ));
    let policy = POLICY.replace(
        "approval_timeout_secs = 1",
        &format!(
            "approval_timeout_secs = 20\napprovers = {{ groups = [], uids = [{}] }}\nsocket = \"{}\"",
            approver.uid,
            socket.display()
        ),
    );
    let e = MyEnv::start_custom("", "", &policy);
    let script = format!(
        "{RAW_CLIENT}\n{}",
        r#"
s = connect()
r = prepare(s, "UPDATE orders SET total = ? WHERE id = ?")
print("prepare", r[0], flush=True)
sid = r[1]
print("first", execute(s, sid, ["12.5", 1]), flush=True)
print("second", execute(s, sid, ["77.7", 2]), flush=True)
"#
    );
    let port = e.db.port().to_string();
    let child = e.spawn_in_app("/usr/bin/python3", &["-c", &script, &port]);
    // The first execution is held with its values shown; approved, it runs.
    let first = pending_with(&socket, "12.5");
    let shown = first.to_string();
    assert!(
        shown.contains("UPDATE orders SET total = ? WHERE id = ?"),
        "{first:#}"
    );
    assert!(shown.contains("parameters"), "{first:#}");
    let id = first["id"].as_str().unwrap().to_owned();
    let ok = approvals(
        &socket,
        approver.uid,
        &["approve", &id, "--reason", "ticket 1"],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // The second, with other values, is held again: denied, it does not run.
    let second = pending_with(&socket, "77.7");
    let id = second["id"].as_str().unwrap().to_owned();
    let no = approvals(&socket, approver.uid, &["deny", &id, "--reason", "no"]);
    assert!(no.status.success(), "{}", text(&no.stderr));
    let out = child.wait_with_output().unwrap();
    let so = text(&out.stdout);
    let totals = text(
        &e.db
            .root_sql("SELECT total FROM shop.orders ORDER BY id")
            .stdout,
    );
    let _ =
        e.db.root_sql("UPDATE shop.orders SET total = IF(id = 1, 10.50, 99.99)");
    assert!(so.contains("prepare ok"), "{so}\n{}", text(&out.stderr));
    assert!(line_of(&so, "first").contains("'ok'"), "{so}");
    assert!(line_of(&so, "second").contains("'err', 1142"), "{so}");
    assert_eq!(totals, "12.50\n99.99\n");
}

#[test]
fn allowlists_learn_freeze_and_enforce_mysql_statement_shapes() {
    let e = MyEnv::start_custom("", "mode = \"learn\"", POLICY);
    // A workload's shapes: the text protocol with literals, a prepared
    // statement with parameters, an IN list.
    let workload = |id: u32, other: u32| {
        let so = e.raw(&format!(
            r#"
s = connect()
print("a", query(s, "SELECT name FROM customers WHERE id = {id}"))
print("b", query(s, "SELECT id, total FROM orders WHERE id IN ({id}, {other}) ORDER BY id"))
ok, sid, cols = prepare(s, "SELECT name FROM customers WHERE id = ?")
print("c", execute(s, sid, [{id}]))
"#
        ));
        assert!(!so.contains("'err'"), "{so}");
        so
    };
    workload(1, 2);
    workload(2, 1);
    let learned: Value = serde_json::from_slice(
        &e.env
            .warden(&["policy", "learned", "--grant", "app/shop", "--json"])
            .stdout,
    )
    .unwrap();
    let fps = learned["fingerprints"].as_object().unwrap();
    let texts: Vec<&str> = fps.values().map(|f| f["text"].as_str().unwrap()).collect();
    for want in [
        "select `name` from `customers` where `id` = $?",
        "select `id` , `total` from `orders` where `id` in ( $? ) order by `id`",
        "select `name` from `customers` where `id` = $n",
    ] {
        assert!(texts.contains(&want), "{want}: {texts:#?}");
    }
    let ev = e
        .statements()
        .into_iter()
        .find(|s| s["unmapped"]["warden"]["allowlist"]["mode"] == "learn")
        .unwrap_or_else(|| panic!("no learn-mode statement event"));
    assert_eq!(
        ev["unmapped"]["warden"]["allowlist"]["verdict"], "learned",
        "{ev:#}"
    );

    // Freeze, then enforce (reload): the same shapes with other values pass.
    let list = e.env.tmp.path().join("app-shop.allowlist.toml");
    let out = e.env.warden(&[
        "policy",
        "freeze",
        "--grant",
        "app/shop",
        "--out",
        list.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let frozen = std::fs::read_to_string(&list).unwrap();
    assert!(frozen.contains("protocol = \"mysql\""), "{frozen}");
    e.configure(
        "",
        &format!("mode = \"enforce\"\nallowlist = \"{}\"", list.display()),
        POLICY,
    );
    let out = e.env.warden(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    workload(2, 2);
    // New shapes are refused whatever the rules say, naming the fingerprint.
    for sql in [
        "SELECT name FROM customers WHERE id = 1 OR 1 = 1",
        "SELECT name FROM customers WHERE id = 1; SELECT 1",
        "SELECT * FROM customers",
        "SELECT 1",
        "SELECT name FROM customers WHERE id = (SELECT 1)",
    ] {
        let out = e.mariadb(sql);
        assert!(!out.status.success(), "{sql}: must be refused");
        let err = text(&out.stderr);
        assert!(
            err.contains("ERROR 1142") && err.contains("not in the allow-list"),
            "{sql}: {err}"
        );
    }
    let refused = e
        .statements()
        .into_iter()
        .filter(|s| s["unmapped"]["warden"]["allowlist"]["verdict"] == "not_listed")
        .count();
    assert!(refused >= 5, "refusals are audited as not listed");
}

#[test]
fn on_new_approve_holds_a_new_shape_and_approve_learn_lists_it() {
    let approver = User::create("wdn-my-learner");
    let socket =
        std::env::temp_dir().join(format!("warden-mysql-learn-{}.sock", std::process::id()));
    let policy = POLICY.replace(
        "approval_timeout_secs = 1",
        &format!(
            "approval_timeout_secs = 20\napprovers = {{ groups = [], uids = [{}] }}\nsocket = \"{}\"",
            approver.uid,
            socket.display()
        ),
    );
    // The reviewed allow-list: one shape.
    let dir = tempfile::Builder::new()
        .prefix("warden-mysql-learn-")
        .tempdir()
        .unwrap();
    let list = dir.path().join("app-shop.toml");
    let reviewed = "# reviewed\n[[fingerprint]]\nprotocol = \"mysql\"\n\
                    text = \"select `name` from `customers` where `id` = $?\"\n";
    std::fs::write(&list, reviewed).unwrap();
    let e = MyEnv::start_custom(
        "",
        &format!(
            "mode = \"enforce\"\nallowlist = \"{}\"\non_new = \"approve\"",
            list.display()
        ),
        &policy,
    );
    assert_eq!(
        e.mariadb_ok("SELECT name FROM customers WHERE id = 1")
            .trim(),
        "Alice"
    );
    // A new shape is held; the approver approves it with --learn.
    let script = format!(
        "{RAW_CLIENT}\n{}",
        r#"
s = connect()
print("held", query(s, "SELECT id, total FROM orders WHERE id = 1"), flush=True)
"#
    );
    let port = e.db.port().to_string();
    let child = e.spawn_in_app("/usr/bin/python3", &["-c", &script, &port]);
    let pending = pending_with(&socket, "orders");
    let id = pending["id"].as_str().unwrap().to_owned();
    let said = approvals(
        &socket,
        approver.uid,
        &["approve", &id, "--learn", "--reason", "new report"],
    );
    assert!(said.status.success(), "{}", text(&said.stderr));
    assert!(
        text(&said.stdout).contains("added to the grant's allow-list"),
        "{}",
        text(&said.stdout)
    );
    let out = child.wait_with_output().unwrap();
    let so = text(&out.stdout);
    assert!(
        line_of(&so, "held").contains("('rows', [['1', '10.50']])"),
        "{so}\n{}",
        text(&out.stderr)
    );
    let after = std::fs::read_to_string(&list).unwrap();
    assert!(after.starts_with(reviewed), "{after}");
    assert!(after.contains("protocol = \"mysql\""), "{after}");
    assert!(after.contains("`orders`"), "{after}");
    // The same shape with another value now passes without asking.
    let t = std::time::Instant::now();
    let out = e.mariadb_ok("SELECT id, total FROM orders WHERE id = 2");
    assert!(out.starts_with("2\t"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // A shape still not listed is held again (and times out unanswered
    // only after the test: it is denied here).
    let script = format!(
        "{RAW_CLIENT}\n{}",
        r#"
s = connect()
print("other", query(s, "SELECT count(*) FROM orders"), flush=True)
"#
    );
    let child = e.spawn_in_app("/usr/bin/python3", &["-c", &script, &port]);
    let pending = pending_with(&socket, "count");
    let id = pending["id"].as_str().unwrap().to_owned();
    let no = approvals(&socket, approver.uid, &["deny", &id, "--reason", "no"]);
    assert!(no.status.success(), "{}", text(&no.stderr));
    let out = child.wait_with_output().unwrap();
    let so = text(&out.stdout);
    assert!(line_of(&so, "other").contains("'err', 1142"), "{so}");
}

/// `warden audit replay` of a MySQL session: its statements in order, each
/// with its decision and rule, the masked-value count and no unmasked value.
#[test]
fn a_mysql_session_replays_in_order_with_decisions_and_nothing_unmasked() {
    let e = MyEnv::start();
    // The refused statement last: `mariadb -e` stops at the first error.
    let statements = [
        "SELECT name, email FROM customers WHERE id = 1",
        "SELECT count(*) FROM orders",
        "SELECT * FROM secrets",
    ];
    let script: String = statements.iter().map(|s| format!("{s};\n")).collect();
    let port = e.db.port().to_string();
    let out = e.in_app(
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
            &script,
        ],
    );
    assert!(text(&out.stderr).contains("ERROR 1142"), "{out:?}");
    let session = e
        .statements()
        .iter()
        .find(|s| s["query_info"]["query_string"] == "SELECT * FROM secrets")
        .and_then(|s| s["unmapped"]["warden"]["session"].as_str())
        .unwrap_or_else(|| panic!("no statement event: {:#?}", e.statements()))
        .to_owned();
    let start = std::time::Instant::now();
    let replay = loop {
        let r = e.env.warden(&["audit", "replay", &session]);
        assert!(r.status.success(), "{}", text(&r.stderr));
        let t = text(&r.stdout);
        if t.contains("close") || start.elapsed() > std::time::Duration::from_secs(5) {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let at: Vec<usize> = statements
        .iter()
        .map(|s| {
            replay
                .find(s)
                .unwrap_or_else(|| panic!("{s} missing: {replay}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{replay}");
    assert!(replay.contains(" allowed "), "{replay}");
    assert!(replay.contains(" blocked "), "{replay}");
    assert!(replay.contains("rule=no-secrets"), "{replay}");
    let c = &mariadb::CUSTOMERS[0];
    assert!(!replay.contains(c.email), "unmasked sample: {replay}");
    assert!(replay.contains("masked=1"), "{replay}");
    // The same session's JSON form names the protocol's account and target.
    let r = e.env.warden(&["audit", "replay", &session, "--json"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let j = text(&r.stdout);
    assert!(j.contains("\"shop\""), "{j}");
    assert!(!j.contains(c.email), "{j}");
}
