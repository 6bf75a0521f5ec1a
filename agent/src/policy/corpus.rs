//! Bypass corpus: query texts with the expected outcome under a read-only
//! policy and under a policy that also allows writes on `orders`, plus the
//! statements psql and pgbench send.

use super::rules::{Action, Policy, SessionContext};
use super::sql::analyze;
use super::{PolicyConfig, StatementClass};

/// Expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum E {
    /// Allowed.
    A,
    /// Refused by default (no rule allows it).
    D,
    /// Refused by a rule or a built-in refusal (settings).
    B,
    /// Approval required.
    P,
    /// Cannot be analysed: refused before any rule.
    X,
}
use E::*;

const READ_ONLY: &str = r#"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"] },
  { action = "block", functions = ["pg_read_file", "dblink*"] },
]
"#;

const WRITE_ORDERS: &str = r#"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "allow", classes = ["write"], tables = ["orders", "order_items"] },
  { action = "approve", classes = ["write"], tables = ["refunds"] },
  { action = "block", tables = ["secrets", "public.payroll"] },
  { action = "block", functions = ["pg_read_file", "dblink*"] },
]
"#;

/// (SQL, read-only, write-on-orders)
pub(crate) const CORPUS: &[(&str, E, E)] = &[
    // The issue's examples.
    ("SELECT 1; DROP TABLE t", D, D),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        D,
        D,
    ),
    ("EXPLAIN ANALYZE DELETE FROM t", D, D),
    ("DO $$BEGIN EXECUTE 'DROP TABLE t'; END$$", D, D),
    ("COPY t TO PROGRAM 'id'", D, D),
    ("SELECT pg_catalog.PG_READ_FILE('/etc/passwd')", B, B),
    ("SELECT \"set_config\"('role','admin',false)", B, B),
    ("DELETE FROM \"Secrets\"", B, B),
    ("SET standard_conforming_strings = off", B, B),
    // Data-modifying CTEs, EXPLAIN.
    (
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        D,
        A,
    ),
    (
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d JOIN t ON true",
        D,
        D,
    ),
    (
        "SELECT * FROM (WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM u) x",
        D,
        D,
    ),
    ("EXPLAIN ANALYZE DELETE FROM orders", D, A),
    ("EXPLAIN (ANALYZE true) DELETE FROM t", D, D),
    ("EXPLAIN (ANALYZE) DELETE FROM t", D, D),
    ("EXPLAIN (ANALYZE 1, FORMAT JSON) DELETE FROM t", D, D),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", A, A),
    ("EXPLAIN DELETE FROM t", A, A),
    ("EXPLAIN SELECT * FROM secrets", B, B),
    // Comments, quoting, dollar quoting, escapes.
    ("SELECT 1 /* ; DROP TABLE t */", A, A),
    ("SELECT 1 -- ; DROP TABLE t", A, A),
    ("SELECT 1 /* nested /* ; */ DROP TABLE t */", A, A),
    ("SELECT 1 -- x\n; DROP TABLE t", D, D),
    ("SELECT $$ ; DROP TABLE t; $$", A, A),
    ("SELECT $tag$ $$ ; DROP TABLE t $tag$", A, A),
    ("SELECT E'\\'; DROP TABLE t; --'", A, A),
    ("SELECT '\\'; DROP TABLE t; --'", D, D),
    ("SELECT 'it''s'; DELETE FROM orders", D, A),
    ("SELECT x$$ FROM t; DROP TABLE t; SELECT $$a$$", D, D),
    ("SELECT U&\"pg_read_fil\\0065\"('/etc/passwd')", B, B),
    ("SELECT u&\"secr\\0065ts\".x FROM t", A, A),
    ("SELECT U&'\\0041'", A, A),
    ("SELECT 1 AS \"a; DROP TABLE t\"", A, A),
    // Table names: case, quotes, schemas, search path.
    ("SELECT * FROM \"my secrets\"", A, A),
    ("SELECT * FROM \"secrets\"", B, B),
    ("select * from SECRETS", B, B),
    ("SeLeCt * FrOm SeCrEtS", B, B),
    ("SELECT * FROM public.Secrets", B, B),
    ("SELECT * FROM \"PUBLIC\".\"SECRETS\"", B, B),
    ("SELECT * FROM payroll", B, B),
    ("SELECT * FROM hr.payroll", A, A),
    ("SELECT \"Secrets\".x FROM \"Secrets\"", B, B),
    ("TABLE secrets", B, B),
    ("COPY secrets TO STDOUT", B, B),
    // Sub-queries, joins, set operations, LATERAL, CTEs.
    (
        "SELECT * FROM (SELECT * FROM (SELECT * FROM secrets) a) b",
        B,
        B,
    ),
    ("SELECT 1 UNION SELECT x FROM secrets", B, B),
    ("SELECT 1 EXCEPT (SELECT x FROM payroll)", B, B),
    (
        "SELECT * FROM orders o JOIN LATERAL (SELECT * FROM secrets s WHERE s.id = o.id) x ON true",
        B,
        B,
    ),
    (
        "SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)",
        B,
        B,
    ),
    (
        "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM payroll)",
        B,
        B,
    ),
    ("SELECT (SELECT max(x) FROM secrets) FROM orders", B, B),
    (
        "WITH secrets AS (SELECT 1 AS x) SELECT * FROM secrets",
        A,
        A,
    ),
    ("WITH s AS (SELECT * FROM secrets) SELECT * FROM s", B, B),
    (
        "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
        B,
        B,
    ),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
        A,
        A,
    ),
    (
        "SELECT * FROM orders WHERE id = 1; DELETE FROM secrets",
        B,
        B,
    ),
    // Functions everywhere.
    ("SELECT pg_catalog.\"pg_read_file\"('x')", B, B),
    ("SELECT \"PG_CATALOG\".\"PG_READ_FILE\"('x')", B, B),
    ("SELECT * FROM t ORDER BY pg_read_file('x')", B, B),
    (
        "SELECT * FROM t GROUP BY 1 HAVING count(pg_read_file('x')) > 0",
        B,
        B,
    ),
    ("SELECT * FROM t, LATERAL (SELECT pg_ls_dir('.')) x", D, D),
    ("SELECT * FROM t, LATERAL pg_ls_dir(t.d) x", D, D),
    ("SELECT * FROM pg_ls_dir('/')", D, D),
    ("VALUES (lo_import('/etc/passwd'))", D, D),
    ("SELECT lo_export(1, '/tmp/x')", D, D),
    (
        "SELECT CASE WHEN true THEN dblink_exec('host=x', 'DROP TABLE t') END",
        B,
        B,
    ),
    ("SELECT dblink('host=x', 'SELECT 1')", B, B),
    (
        "SELECT (SELECT set_config('search_path', 'evil', false))",
        B,
        B,
    ),
    (
        "SELECT query_to_xml('delete from t returning 1', true, true, '')",
        D,
        D,
    ),
    ("SELECT table_to_xml('secrets', true, true, '')", D, D),
    ("SELECT ts_stat('select v from t')", D, D),
    ("SELECT pg_terminate_backend(123)", D, D),
    ("select pg_catalog.pg_reload_conf()", D, D),
    ("SELECT * FROM pg_stat_file('x')", D, D),
    ("SELECT pg_read_binary_file('/etc/shadow')", D, D),
    ("SELECT coalesce(NULL, pg_read_file('x'))", B, B),
    ("SELECT ARRAY[pg_read_file('x')]", B, B),
    ("SELECT pg_read_file('x')::text", B, B),
    (
        "SELECT count(*) FILTER (WHERE pg_ls_dir('.') IS NULL) FROM t",
        D,
        D,
    ),
    ("SELECT pg_sleep(0.01)", A, A),
    ("SELECT current_setting('search_path')", A, A),
    ("SELECT * FROM generate_series(1, 10)", A, A),
    ("SELECT nextval('orders_id_seq')", D, D),
    (
        "INSERT INTO orders SELECT g FROM generate_series(1, 3) g",
        D,
        A,
    ),
    ("INSERT INTO orders VALUES (pg_read_file('x'))", B, B),
    ("CREATE TABLE z (a text DEFAULT pg_read_file('x'))", B, B),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t RETURNING 1 $$",
        D,
        D,
    ),
    ("CALL process_orders()", D, D),
    // COPY.
    ("COPY (SELECT * FROM orders) TO STDOUT", A, A),
    ("COPY orders TO STDOUT WITH (FORMAT csv)", A, A),
    ("COPY orders FROM STDIN", D, A),
    ("COPY orders FROM '/etc/passwd'", D, D),
    ("COPY orders TO '/tmp/x'", D, D),
    // Writes and the orders grant.
    ("SELECT 1; SELECT 2;", A, A),
    ("SELECT * INTO new_table FROM orders", D, D),
    ("UPDATE orders SET status = 'x' WHERE id = 1", D, A),
    ("update ORDERS set status = 'x'", D, A),
    ("UPDATE \"orders\" SET a = 1", D, A),
    ("UPDATE \"Orders\" SET a = 1", D, D),
    ("UPDATE public.orders SET a = 1", D, A),
    (
        "UPDATE orders SET total = (SELECT sum(x) FROM secrets)",
        B,
        B,
    ),
    ("INSERT INTO orders SELECT * FROM customers", D, D),
    (
        "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2",
        D,
        A,
    ),
    ("INSERT INTO order_items (id) SELECT id FROM orders", D, A),
    (
        "DELETE FROM orders USING secrets WHERE orders.id = secrets.id",
        B,
        B,
    ),
    ("DELETE FROM refunds WHERE id = 1", D, P),
    (
        "DELETE FROM refunds USING orders WHERE refunds.id = orders.id",
        D,
        P,
    ),
    ("SELECT * FROM orders FOR UPDATE", D, A),
    ("BEGIN; UPDATE orders SET a = 1; COMMIT;", D, A),
    (
        "MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN UPDATE SET total = s.total",
        D,
        D,
    ),
    (
        "MERGE INTO orders o USING order_items s ON o.id = s.id WHEN MATCHED THEN DELETE",
        D,
        A,
    ),
    ("PREPARE p AS DELETE FROM orders", D, A),
    ("PREPARE q AS DELETE FROM t", D, D),
    ("TRUNCATE orders", D, D),
    ("DROP TABLE orders", D, D),
    ("CREATE TABLE orders2 AS SELECT * FROM orders", D, D),
    ("LOCK TABLE orders", D, A),
    // Session statements and settings.
    // search_path is forced (the server's default unless the policy names
    // one): every way to change it is refused.
    ("SET search_path = evil, public", B, B),
    ("SET LOCAL search_path = nosuch", B, B),
    ("RESET search_path", B, B),
    ("SET search_path TO DEFAULT", B, B),
    ("SET SCHEMA 'evil'", B, B),
    ("SELECT set_config('search_path', 'evil', true)", B, B),
    (
        "SELECT set_config(current_setting('x'), 'evil', true)",
        B,
        B,
    ),
    ("RESET ALL", A, A),
    ("DISCARD ALL", A, A),
    ("SET ROLE postgres", B, B),
    ("SET SESSION AUTHORIZATION postgres", B, B),
    ("RESET ROLE", A, A),
    ("SET client_encoding = 'SJIS'", B, B),
    ("SET client_encoding TO 'utf-8'", A, A),
    ("SET NAMES 'UTF8'", A, A),
    ("SET NAMES 'BIG5'", B, B),
    ("SET backslash_quote = on", B, B),
    ("SET LOCAL standard_conforming_strings TO false", B, B),
    ("SET standard_conforming_strings = on", A, A),
    ("SET statement_timeout = '5s'", A, A),
    ("SHOW search_path", A, A),
    ("LISTEN ch", A, A),
    ("NOTIFY ch, 'x'", D, D),
    ("DEALLOCATE ALL", A, A),
    ("DISCARD ALL", A, A),
    ("START TRANSACTION READ WRITE", A, A),
    (
        "SAVEPOINT a; RELEASE SAVEPOINT a; ROLLBACK TO SAVEPOINT a",
        A,
        A,
    ),
    ("SELECT 'a' || $1 WHERE $2 > 0", A, A),
    // Privileged.
    ("GRANT ALL ON orders TO public", D, D),
    ("REVOKE ALL ON orders FROM app", D, D),
    ("CREATE ROLE eve SUPERUSER", D, D),
    ("CREATE EXTENSION dblink", D, D),
    ("LOAD 'auto_explain'", D, D),
    ("DO LANGUAGE plpgsql $$ BEGIN END $$", D, D),
    ("CHECKPOINT", D, D),
    // Unparsable: refused before any rule.
    ("ALTER SYSTEM SET fsync = off", D, D),
    ("SELECT 1 -/* x */ 1", A, A),
    ("SELEC 1", X, X),
    ("SELECT 1; FROBNICATE t", X, X),
    ("SELECT $1$; DROP TABLE t; $1$", X, X),
];

fn compile(text: &str) -> Policy {
    let cfg: PolicyConfig = toml::from_str(text).unwrap();
    Policy::compile("corpus", &cfg).unwrap()
}

fn outcome(p: &Policy, sql: &str) -> (E, String) {
    let ctx = SessionContext::new(vec!["public".into()]);
    match analyze(sql) {
        Err(e) => (X, e.to_string()),
        Ok(a) => {
            let v = p.decide(&a, &ctx);
            let e = match v.action {
                Action::Allow => A,
                Action::Deny => D,
                Action::Block => B,
                Action::Approve => P,
            };
            (e, v.reason)
        }
    }
}

#[test]
fn bypass_corpus() {
    assert!(CORPUS.len() >= 60);
    let ro = compile(READ_ONLY);
    let wo = compile(WRITE_ORDERS);
    let mut failures = Vec::new();
    for (sql, want_ro, want_wo) in CORPUS {
        for (label, p, want) in [("read-only", &ro, want_ro), ("write-orders", &wo, want_wo)] {
            let (got, reason) = outcome(p, sql);
            if got != *want {
                failures.push(format!(
                    "{label}: {sql:?}: want {want:?}, got {got:?} ({reason})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refusals_name_the_reason() {
    let ro = compile(READ_ONLY);
    let (_, r) = outcome(&ro, "DELETE FROM t");
    assert!(
        r.contains("statement class write") && r.contains("default deny"),
        "{r}"
    );
    let (_, r) = outcome(&ro, "DELETE FROM \"Secrets\"");
    assert!(r.contains("Secrets") && r.contains("rules[1]"), "{r}");
    let (_, r) = outcome(&ro, "SELECT pg_read_file('/x')");
    assert!(r.contains("pg_read_file") && r.contains("rules[2]"), "{r}");
    let (_, r) = outcome(&ro, "COPY t TO PROGRAM 'id'");
    assert!(r.contains("privileged") && r.contains("program"), "{r}");
    let (_, r) = outcome(&ro, "SET standard_conforming_strings = off");
    assert!(r.contains("standard_conforming_strings"), "{r}");
    let wo = compile(WRITE_ORDERS);
    let (_, r) = outcome(&wo, "DELETE FROM refunds");
    assert!(r.contains("approval") && r.contains("rules[2]"), "{r}");
    let (_, r) = outcome(&ro, "SELEC 1");
    assert!(r.contains("syntax error at or near"), "{r}");
}

/// A DELETE sent through Parse/Bind/Execute: the proxy analyses the Parse
/// text, remembers the verdict under the statement name and uses it at
/// Execute.
#[test]
fn extended_protocol_delete() {
    let ro = compile(READ_ONLY);
    let mut ctx = SessionContext::new(vec!["public".into()]);
    let parse = analyze("DELETE FROM t WHERE id = $1").unwrap();
    let v = ro.decide(&parse, &ctx);
    assert_eq!(v.action, Action::Deny);
    ctx.prepared.insert("s1", v).unwrap();
    assert!(!ctx.prepared.get("s1").unwrap().is_allowed());
    // The same name through SQL EXECUTE is refused too.
    let exec = analyze("EXECUTE s1(5)").unwrap();
    assert_eq!(ro.decide(&exec, &ctx).action, Action::Deny);
}

/// Statements psql and pgbench send, under a policy granting reads and
/// writes on the pgbench tables.
#[test]
fn psql_and_pgbench() {
    let p = compile(
        r#"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "allow", classes = ["write", "ddl"], tables = ["pgbench_*"] },
]
"#,
    );
    let reads = [
        // psql \d t
        "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;",
        // psql \dt
        "SELECT n.nspname as \"Schema\",\n  c.relname as \"Name\",\n  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\",\n  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relkind IN ('r','p','')\n      AND n.nspname <> 'pg_catalog'\n      AND n.nspname !~ '^pg_toast'\n      AND n.nspname <> 'information_schema'\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 1,2;",
        // psql \l (shortened)
        "SELECT d.datname as \"Name\", pg_catalog.pg_get_userbyid(d.datdba) as \"Owner\", pg_catalog.pg_encoding_to_char(d.encoding) as \"Encoding\" FROM pg_catalog.pg_database d ORDER BY 1;",
        "select count(*) from pgbench_branches",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    ];
    for sql in reads {
        let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(a.class(), StatementClass::Read, "{sql}");
        let v = p.decide(&a, &SessionContext::new(vec!["public".into()]));
        assert_eq!(v.action, Action::Allow, "{sql}: {}", v.reason);
    }
    let allowed = [
        // pgbench's TPC-B-like script, extended and simple protocol.
        "BEGIN;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
        "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
        "END;",
        "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5; SELECT abalance FROM pgbench_accounts WHERE aid = 5; END;",
        // pgbench -i and the run's preparation.
        "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "create table pgbench_history(tid int,bid int,aid    int,delta int,mtime timestamp,filler char(22))",
        "copy pgbench_accounts from stdin with (freeze on)",
        "copy pgbench_accounts from stdin",
        "alter table pgbench_branches add primary key (bid)",
        "vacuum analyze pgbench_branches",
        "vacuum pgbench_branches",
        "truncate pgbench_history",
        "insert into pgbench_branches(bid,bbalance) values(1,0)",
    ];
    for sql in allowed {
        let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let v = p.decide(&a, &SessionContext::new(vec!["public".into()]));
        assert_eq!(v.action, Action::Allow, "{sql}: {}", v.reason);
    }
    let classes = [
        ("vacuum analyze pgbench_branches", StatementClass::Ddl),
        ("copy pgbench_accounts from stdin", StatementClass::Write),
        ("truncate pgbench_history", StatementClass::Ddl),
    ];
    for (sql, c) in classes {
        assert_eq!(analyze(sql).unwrap().class(), c, "{sql}");
    }
    // The same script under the read-only policy is refused.
    let ro = compile(READ_ONLY);
    let a = analyze("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2").unwrap();
    assert_eq!(
        ro.decide(&a, &SessionContext::default()).action,
        Action::Deny
    );
}

/// `pg_read_file` and `secrets` placed in every corner the walker must
/// reach: the read-only policy blocks each of these.
#[test]
fn every_corner_is_reached() {
    let ro = compile(READ_ONLY);
    let f = "pg_read_file('/x')";
    let corners = [
        format!("SELECT sum(a) OVER (ORDER BY {f}) FROM t"),
        format!("SELECT * FROM t LIMIT length({f})"),
        format!("SELECT * FROM t OFFSET length({f})"),
        format!("SELECT * FROM t JOIN u ON u.a = {f}"),
        format!("SELECT ROW({f})"),
        format!("SELECT CAST({f} AS int)"),
        format!("SELECT a FROM t WHERE a IS DISTINCT FROM {f}"),
        format!("SELECT ({f})[1]"),
        format!("SELECT a BETWEEN 1 AND length({f}) FROM t"),
        format!("SELECT * FROM t WHERE a = ANY(ARRAY[{f}])"),
        format!("SELECT now() AT TIME ZONE {f}"),
        format!("SELECT {f} COLLATE \"C\""),
        format!("SELECT DISTINCT ON ({f}) a FROM t"),
        format!("SELECT a FROM t GROUP BY ROLLUP(a, {f})"),
        format!("SELECT string_agg(a, ',' ORDER BY {f}) FROM t"),
        format!("SELECT * FROM (VALUES (1)) v(a) WHERE a IN ({f})"),
        format!("SELECT * FROM t WINDOW w AS (PARTITION BY {f})"),
        format!("DECLARE c CURSOR FOR SELECT {f}"),
        format!("COPY (SELECT {f}) TO STDOUT"),
        format!("EXPLAIN SELECT {f}"),
        format!("PREPARE p AS SELECT {f}"),
        format!("CREATE VIEW v AS SELECT {f}"),
        format!("CREATE INDEX i ON t (({f}))"),
        format!("UPDATE t SET a = {f}"),
        format!("DELETE FROM t WHERE a = {f}"),
        format!("INSERT INTO t VALUES (1) RETURNING {f}"),
        format!("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = {f}"),
        format!("SELECT * FROM t WHERE a = (SELECT {f})"),
        "SELECT * FROM t, ROWS FROM (pg_read_file('/x')) x".to_string(),
        "SELECT * FROM pg_read_file('/x')".to_string(),
        "SELECT * FROM t JOIN pg_read_file('/x') p ON true".to_string(),
        "SELECT * FROM secrets TABLESAMPLE SYSTEM (10)".to_string(),
        "SELECT * FROM ONLY secrets".to_string(),
        "SELECT * FROM secrets*".to_string(),
        "SELECT * FROM t JOIN (u JOIN secrets ON true) ON true".to_string(),
        "SELECT * FROM t NATURAL JOIN secrets".to_string(),
        "SELECT * FROM t CROSS JOIN LATERAL (SELECT * FROM secrets) s".to_string(),
        "DELETE FROM ONLY secrets".to_string(),
        "UPDATE ONLY secrets SET a = 1".to_string(),
        "UPDATE secrets AS s SET a = 1".to_string(),
        "INSERT INTO secrets AS s VALUES (1)".to_string(),
        "SELECT * FROM t WHERE a IN (SELECT a FROM t UNION SELECT a FROM secrets)".to_string(),
        "SELECT (WITH x AS (SELECT * FROM secrets) SELECT count(*) FROM x)".to_string(),
        "INSERT INTO t WITH x AS (SELECT * FROM secrets) SELECT * FROM x".to_string(),
        "LOCK TABLE secrets".to_string(),
        "TRUNCATE secrets".to_string(),
        "ALTER TABLE secrets ADD COLUMN b int".to_string(),
        "DROP TABLE t, secrets".to_string(),
        "GRANT SELECT ON secrets TO PUBLIC".to_string(),
        "CREATE INDEX i ON secrets (a)".to_string(),
        "COMMENT ON TABLE secrets IS 'x'".to_string(),
        "VACUUM secrets".to_string(),
        "REINDEX TABLE secrets".to_string(),
    ];
    let mut missed = Vec::new();
    for sql in &corners {
        let (got, reason) = outcome(&ro, sql);
        if got != B && got != X {
            missed.push(format!("{sql:?}: {got:?} ({reason})"));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}
