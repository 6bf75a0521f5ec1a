//! Attacker round on MySQL/MariaDB (issue 20): an enrolled workload against
//! a grant that allows reads, blocks the table `secrets` and masks
//! `customers.card` (last four) with the email and ssn detectors on — the
//! shape of the PostgreSQL attack policies. Every test is one class of
//! attempt, run through the real `warden` binary against the real MariaDB
//! 10.11, and asserts the SECURE behaviour: it fails while a bypass works.
//!
//! Findings (held = Warden already refused it; fixed = a bypass this round
//! closed, the test failed before the fix):
//! - executable comments `/*! */`, `/*!50000 */`, `/*M! */`, nested-looking
//!   comments: held (any `/*!` or `/*M!` marker is refused).
//! - `--` followed by a Unicode space (U+00A0, U+3000…) or an ASCII control
//!   character: FIXED. sqlparser took `--\u{a0}` for a comment (Rust's
//!   `char::is_whitespace`), MariaDB reads `-`, `-` and a name starting with
//!   U+00A0, so `WHERE 1 --\u{a0} UNION SELECT token FROM secrets` ran a
//!   UNION the classifier never saw. Texts with non-ASCII spaces or control
//!   characters other than tab/LF/CR are refused.
//! - backslash escapes, `N'…'`, backtick names ending in `\`: held (the
//!   parser reads them as MariaDB does with the pinned sql_mode); every way
//!   to change sql_mode or the client character set in a session: held
//!   (refused or not parsed), `SET \`sql_mode\`` FIXED (was only
//!   privileged, now refused like the bare name).
//! - multi-statement splits: held.
//! - identifier case and database-qualified names: held.
//! - `HANDLER`, `TABLE`, `SELECT … INTO OUTFILE/DUMPFILE`, `LOAD_FILE()`,
//!   `LOAD DATA [LOCAL] INFILE`, `DO`, `CHECKSUM TABLE`: held (not parsed or
//!   privileged; a server's local-file request is answered empty).
//! - dynamic SQL (`PREPARE … FROM @v`, `EXECUTE IMMEDIATE`): held.
//! - stored programs: `CALL`, stored functions, `CREATE VIEW/TRIGGER`:
//!   held (privileged or DDL). A view the DBA made over `secrets`: FIXED
//!   (it was read under its own name, the block rule never saw `secrets`;
//!   its definition is not visible to the upstream user without SHOW VIEW,
//!   so under a policy whose block/approve rules name tables a statement
//!   reading a view is refused).
//! - a view the DBA made over a masked table (`SELECT card FROM
//!   v_customers`, a computed `concat(card, '')` column, conditions on its
//!   columns): FIXED. Result columns carry the view as their origin, so the
//!   column rule never matched and cards came back in clear. Under a grant
//!   with column rules Warden reads the list of visible views at login and
//!   after DDL, refuses statements that read one, and masks any view
//!   column by the strictest column rule (defence in depth).
//! - catalogs: `information_schema.PROCESSLIST` (other sessions' statement
//!   texts with their literals), `SHOW ENGINE … STATUS`, `SHOW BINLOG
//!   EVENTS`, performance_schema, sys, mysql: FIXED (were reads; now
//!   privileged: only metadata tables of information_schema are reads).
//! - masked column read other than as a bare output column: FIXED for
//!   ORDER BY / GROUP BY / HAVING by alias, ORDER BY / GROUP BY by
//!   position, `JOIN … USING (card)`, `NATURAL JOIN`, `MATCH (card)
//!   AGAINST`, `*` inside a derived table, CTE (with a column list
//!   renaming `card`) or set operation. The rule is now on the token
//!   stream: a masked name (or an alias of one) may appear only as a bare
//!   top-level output column; positions and `*` that can reach one outside
//!   the top-level projection are refused. Held: expressions (CONCAT,
//!   CAST, HEX, JSON_OBJECT, GROUP_CONCAT), subqueries, UNION, windows.
//! - error messages echoing values: held (the statements that would make
//!   them name the masked column or are refused; ERR texts pass through the
//!   detectors).
//! - binary protocol: parameter values and COM_STMT_SEND_LONG_DATA are data,
//!   never statement text: held. MariaDB's COM_STMT_BULK_EXECUTE: refused.
//! - the client's character set (handshake, COM_CHANGE_USER): ignored,
//!   the session stays utf8mb4 and non-UTF-8 texts are refused: held.

mod common;

use common::mysql::*;

const SECRET: &str = "top-secret-token";
const CARD: &str = "4111111111111111";

/// A Python helper (after `RAW_CLIENT`) that runs each text of a JSON list
/// on ONE connection (session state carries over) and prints one line per
/// text: `N ok`, `N err CODE MESSAGE` or `N rows [...]` (every result set
/// of a multi-statement text).
const RUN: &str = r#"
import json
def query_all(s, sql):
    send(s, 0, b"\x03" + sql.encode("utf-8", "surrogateescape"))
    out = []
    while True:
        _, p = packet(s)
        if p[0] == 0xff:
            e = err(p); out.append("err %d %s" % (e[1], e[2])); return out
        if p[0] == 0xfb:
            send(s, 2, b""); continue
        if p[0] == 0x00:
            st = ok_status(p); out.append("ok")
            if st & 0x08: continue
            return out
        n, _ = lenenc(p, 0)
        cols, _ = columns(s, n)
        rows = []
        while True:
            _, p = packet(s)
            if p[0] == 0xff:
                e = err(p); out.append("err %d %s" % (e[1], e[2])); return out
            if p[0] == 0xfe and len(p) < 9:
                st = struct.unpack_from("<H", p, 3)[0]; break
            i, row = 0, []
            for _ in cols:
                if p[i] == 0xfb: row.append(None); i += 1; continue
                v, i = lenstr(p, i); row.append(v.decode(errors="replace"))
            rows.append(row)
        out.append("rows %r" % rows)
        if not st & 0x08: return out
texts = json.loads(sys.argv[2])
s = connect()
for k, t in enumerate(texts):
    try:
        print(k, " | ".join(query_all(s, t)))
    except EOFError:
        print(k, "closed"); s = connect()
"#;

/// Runs `texts` on one connection through Warden; one result line each.
fn run(e: &MyEnv, texts: &[&str]) -> Vec<String> {
    let json = serde_json::to_string(texts).unwrap();
    let so = e.raw_with(RUN, &[&json]);
    let lines: Vec<String> = so.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), texts.len(), "{so}");
    lines
        .into_iter()
        .map(|l| l.split_once(' ').map(|x| x.1.to_owned()).unwrap_or(l))
        .collect()
}

/// Each text is refused with 1142 and reveals nothing.
fn all_refused(e: &MyEnv, texts: &[&str]) {
    let got = run(e, texts);
    let mut bypass = Vec::new();
    for (t, r) in texts.iter().zip(&got) {
        if !r.starts_with("err 1142") || r.contains(SECRET) || r.contains(CARD) {
            bypass.push(format!("{t:?} => {r}"));
        }
    }
    assert!(bypass.is_empty(), "not refused:\n{}", bypass.join("\n"));
}

/// Each text reveals nothing (it may run: a string is only a string).
fn nothing_leaks(e: &MyEnv, texts: &[&str]) {
    let got = run(e, texts);
    let mut bypass = Vec::new();
    for (t, r) in texts.iter().zip(&got) {
        if r.contains(SECRET) || r.contains(CARD) {
            bypass.push(format!("{t:?} => {r}"));
        }
    }
    assert!(bypass.is_empty(), "leaked:\n{}", bypass.join("\n"));
}

#[test]
fn executable_comments_are_refused_in_every_spelling() {
    let e = MyEnv::start();
    all_refused(
        &e,
        &[
            "SELECT 1 /*! UNION SELECT token FROM secrets */",
            "SELECT 1 /*!50000 UNION SELECT token FROM secrets */",
            "SELECT 1 /*!00000UNION SELECT token FROM secrets*/",
            "SELECT 1 /*M! UNION SELECT token FROM secrets */",
            "SELECT 1 /*M!100000 UNION SELECT token FROM secrets */",
            "SELECT 1 /*m!100000 UNION SELECT token FROM secrets */",
            "SELECT 1 /* /* */ UNION SELECT token FROM secrets /* */",
            "SELECT 1 /**/UNION/**/SELECT/**/token/**/FROM/**/secrets",
        ],
    );
}

#[test]
fn comment_starts_the_parser_and_the_server_read_differently_are_refused() {
    let e = MyEnv::start();
    // A name made of one U+00A0, so that what the server reads after
    // `--\u{a0}` is valid SQL.
    let nbsp =
        "SELECT 1 FROM (SELECT 1 AS `\u{a0}`) t WHERE 1 --\u{a0} UNION SELECT token FROM secrets\n";
    let ideo = "SELECT 1 FROM (SELECT 1 AS `\u{3000}`) t WHERE 1 --\u{3000} UNION SELECT token FROM secrets\n";
    all_refused(
        &e,
        &[
            nbsp,
            ideo,
            "SELECT 1 --\u{1} , (SELECT token FROM secrets)",
            "SELECT 1 --\u{1f}\n, (SELECT token FROM secrets)",
            "SELECT 1 --x, (SELECT token FROM secrets)",
            "SELECT 1 #\n, (SELECT token FROM secrets)",
            "SELECT 1 -- \r\n, (SELECT token FROM secrets)",
            "SELECT 1 --\x0b\n, (SELECT token FROM secrets)",
        ],
    );
}

#[test]
fn strings_escapes_and_names_split_as_the_server_splits_them() {
    let e = MyEnv::start();
    nothing_leaks(
        &e,
        &[
            // A backslash escapes the quote: one string for both.
            "SELECT 'x\\' UNION SELECT token FROM secrets -- '",
            "SELECT \"x\\\" UNION SELECT token FROM secrets -- \"",
            "SELECT N'x\\' UNION SELECT token FROM secrets -- '",
            "SELECT _binary'x\\' UNION SELECT token FROM secrets -- '",
        ],
    );
    all_refused(
        &e,
        &[
            // No escape in backtick names: two statements for both.
            "SELECT 1 AS `a\\`; SELECT token FROM secrets; -- `",
            "SELECT 'a;b'; SELECT token FROM secrets",
            "SELECT 1 /* ; */; SELECT token FROM secrets",
            // Numbers glued to keywords.
            "SELECT 0x1UNION SELECT token FROM secrets",
            "SELECT 1UNION SELECT token FROM secrets",
            "SELECT 1e0UNION SELECT token FROM secrets",
            "SELECT .5UNION SELECT token FROM secrets",
            "SELECT X'41'UNION SELECT token FROM secrets",
            "SELECT 'a'UNION SELECT token FROM secrets",
        ],
    );
}

#[test]
fn sql_mode_and_character_set_cannot_be_changed_in_a_session() {
    let e = MyEnv::start();
    let before = run(&e, &["SELECT @@sql_mode, @@character_set_client"]);
    let attempts = [
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET LOCAL sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET @@sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET @@session.sql_mode = 'NO_BACKSLASH_ESCAPES'",
        "SET @@SESSION.SQL_MODE = 'NO_BACKSLASH_ESCAPES'",
        "SET `sql_mode` = 'NO_BACKSLASH_ESCAPES'",
        "SET @@session.`sql_mode` = 'NO_BACKSLASH_ESCAPES'",
        "SET sql_mode := 'NO_BACKSLASH_ESCAPES'",
        "SET autocommit = 1, sql_mode = 'ANSI_QUOTES'",
        "SET sql_mode = concat(@@sql_mode, ',ANSI_QUOTES')",
        "SET sql_mode = DEFAULT",
        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 'x\\' UNION SELECT token FROM secrets -- '",
        "SET NAMES gbk",
        "SET CHARACTER SET gbk",
        "SET CHARSET gbk",
        "SET character_set_client = gbk",
        "SET @@character_set_client = 'sjis'",
        "SET character_set_connection = big5",
        "SET collation_connection = gbk_chinese_ci",
    ];
    let mut texts: Vec<&str> = attempts.to_vec();
    texts.push("SELECT @@sql_mode, @@character_set_client");
    texts.push("SELECT 'x\\' UNION SELECT token FROM secrets -- '");
    let got = run(&e, &texts);
    for (t, r) in attempts.iter().zip(&got) {
        assert!(r.starts_with("err 1142"), "{t:?} => {r}");
    }
    assert_eq!(got[attempts.len()], before[0], "the session changed");
    assert!(!got[attempts.len() + 1].contains(SECRET), "{got:?}");
}

#[test]
fn blocked_tables_are_blocked_by_any_spelling_of_their_name() {
    let e = MyEnv::start();
    all_refused(
        &e,
        &[
            "SELECT token FROM SECRETS",
            "SELECT token FROM `shop`.`secrets`",
            "SELECT token FROM SHOP.secrets",
            "SELECT token FROM shop . secrets",
            "SELECT token FROM (secrets)",
            "SELECT token FROM customers JOIN secrets USING (id)",
            "SELECT token FROM customers STRAIGHT_JOIN secrets",
            "SELECT (SELECT token FROM secrets)",
            "SELECT 1 FROM dual WHERE EXISTS (SELECT * FROM secrets WHERE token LIKE 't%')",
            "SET @x = (SELECT token FROM secrets)",
            "WITH s AS (SELECT token FROM secrets) SELECT * FROM s",
            "SELECT name FROM customers WHERE id = 1 UNION ALL SELECT token FROM secrets",
            "EXPLAIN ANALYZE SELECT token FROM secrets",
        ],
    );
}

#[test]
fn stored_programs_views_and_dynamic_sql_are_not_ways_round_the_policy() {
    let e = MyEnv::start();
    // What a DBA might have left: a function and a procedure over secrets.
    let out = e.db.root_sql(
        "CREATE OR REPLACE FUNCTION shop.f_secret() RETURNS VARCHAR(64) READS SQL DATA \
           RETURN (SELECT token FROM shop.secrets LIMIT 1);
         CREATE OR REPLACE PROCEDURE shop.p_secret() SELECT token FROM shop.secrets;
         GRANT EXECUTE ON shop.* TO 'shop_app'@'127.0.0.1';",
    );
    assert!(out.status.success(), "{out:?}");
    all_refused(
        &e,
        &[
            "SELECT f_secret()",
            "SELECT shop.f_secret()",
            "SELECT name FROM customers WHERE f_secret() LIKE 't%'",
            "CALL p_secret()",
            "CALL shop.p_secret",
            "CREATE VIEW v_secret AS SELECT token FROM secrets",
            "CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW SET @x = 1",
            "CREATE EVENT ev ON SCHEDULE EVERY 1 SECOND DO SELECT 1",
            "CREATE TEMPORARY TABLE t AS SELECT token FROM secrets",
            "SET @q = 'SELECT token FROM secrets'; PREPARE s FROM @q; EXECUTE s",
            "PREPARE s FROM 'SELECT token FROM secrets'",
            "EXECUTE IMMEDIATE 'SELECT token FROM secrets'",
            "EXECUTE IMMEDIATE concat('SELECT tok', 'en FROM sec', 'rets')",
            "DO (SELECT token FROM secrets)",
        ],
    );
}

#[test]
fn handler_table_files_and_local_infile_are_refused() {
    let e = MyEnv::start();
    all_refused(
        &e,
        &[
            "HANDLER secrets OPEN",
            "HANDLER secrets READ FIRST",
            "TABLE secrets",
            "TABLE customers",
            "SELECT * FROM customers INTO OUTFILE '/tmp/warden-attack-out'",
            "SELECT * INTO DUMPFILE '/tmp/warden-attack-dump' FROM customers",
            "SELECT name FROM customers INTO @a",
            "SELECT LOAD_FILE('/etc/passwd')",
            "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE orders",
            "LOAD DATA INFILE '/etc/passwd' INTO TABLE orders",
            "CHECKSUM TABLE customers",
            "SELECT * FROM customers PROCEDURE ANALYSE()",
        ],
    );
}

#[test]
fn catalogs_that_hold_statement_texts_or_data_are_not_reads() {
    let e = MyEnv::start();
    // Another session of the same upstream user, whose statement text holds
    // a card number, visible in PROCESSLIST while it runs.
    let db = e.db;
    let other =
        std::thread::spawn(move || app_direct(db, &format!("SELECT SLEEP(4), '{CARD}' AS c")));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    all_refused(
        &e,
        &[
            "SELECT info FROM information_schema.processlist",
            "SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST",
            "SELECT * FROM information_schema.innodb_trx",
            "SHOW PROCESSLIST",
            "SHOW FULL PROCESSLIST",
            "SHOW ENGINE INNODB STATUS",
            "SHOW BINLOG EVENTS",
            "SELECT * FROM performance_schema.events_statements_history",
            "SELECT * FROM sys.session",
            "SELECT * FROM mysql.user",
        ],
    );
    let _ = other.join();
    // Metadata stays readable.
    let got = run(
        &e,
        &[
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' ORDER BY 1",
        ],
    );
    assert!(got[0].contains("customers"), "{got:?}");
}

#[test]
fn a_masked_column_is_only_ever_a_bare_output_column() {
    let e = MyEnv::start();
    all_refused(
        &e,
        &[
            // Expressions.
            "SELECT concat(card) FROM customers",
            "SELECT cast(card AS CHAR) FROM customers",
            "SELECT hex(card) FROM customers",
            "SELECT json_object('c', card) FROM customers",
            "SELECT group_concat(card) FROM customers",
            "SELECT (SELECT card FROM customers LIMIT 1)",
            "SELECT name FROM customers UNION SELECT card FROM customers",
            "SELECT @c := card FROM customers",
            // Predicates and inference.
            "SELECT name FROM customers WHERE card LIKE '4111%'",
            "SELECT name FROM customers ORDER BY card",
            "SELECT row_number() OVER (ORDER BY card) FROM customers",
            // By alias.
            "SELECT card AS x, name FROM customers ORDER BY x",
            "SELECT card x, name FROM customers HAVING x LIKE '4111%'",
            "SELECT count(*), card AS k FROM customers GROUP BY k",
            "SELECT card AS name FROM customers ORDER BY name",
            // By position.
            "SELECT name, card FROM customers ORDER BY 2",
            "SELECT * FROM customers ORDER BY 5",
            "SELECT customers.* FROM customers ORDER BY 5 DESC",
            "SELECT card, count(*) FROM customers GROUP BY 1",
            // Joins that compare it without a predicate.
            "SELECT a.name FROM customers a JOIN (SELECT '4111111111111111' AS card) b USING (card)",
            "SELECT a.name FROM customers a NATURAL JOIN (SELECT 'Alice' AS name) b",
            "SELECT name FROM customers WHERE MATCH (card) AGAINST ('4111*' IN BOOLEAN MODE)",
            // `*` that reaches it below the top level.
            "SELECT x FROM (SELECT * FROM customers) t WHERE card LIKE '4%'",
            "WITH t (a, b, c, d, x) AS (SELECT * FROM customers) SELECT a FROM t WHERE x LIKE '4111%'",
            "SELECT name FROM customers WHERE (1, 'Alice', 'alice@example.com', '123-45-6789', '4111111111111111') IN (SELECT * FROM customers)",
            "SELECT * FROM customers UNION SELECT * FROM customers",
        ],
    );
    // Bare output columns stay fine, masked.
    let got = run(&e, &["SELECT id, card AS c FROM customers ORDER BY id"]);
    assert!(
        got[0].starts_with("rows") && got[0].contains("1111"),
        "{got:?}"
    );
    assert!(!got[0].contains(CARD), "{got:?}");
}

#[test]
fn prepared_statement_parameters_and_long_data_are_only_data() {
    let e = MyEnv::start();
    let so = e.raw(
        r#"
s = connect()
ok, sid, cols = prepare(s, "SELECT concat('<', ?, '>') AS v")
r = execute(s, sid, ["' UNION SELECT token FROM secrets -- "])
print("param", r[0], r[2])
send(s, 0, b"\x18" + struct.pack("<IH", sid, 0) + b"x' UNION SELECT token FROM secrets -- ")
send(s, 0, b"\x17" + struct.pack("<IBI", sid, 0, 1) + b"\x00\x01\xfc\x00")
_, p = packet(s)
n, _ = lenenc(p, 0)
c, _ = columns(s, n)
print("long", rows(s, c))
print("positional", prepare(s, "SELECT name, card FROM customers ORDER BY 2"))
print("alias", prepare(s, "SELECT card AS x FROM customers WHERE id = ? ORDER BY x"))
# MariaDB's COM_STMT_BULK_EXECUTE is not relayed.
print("bulk", simple(s, b"\xfa" + struct.pack("<IH", sid, 0)))
"#,
    );
    assert!(!so.contains(SECRET), "{so}");
    assert!(!so.contains(CARD), "{so}");
    assert!(
        line_of(&so, "param ").contains("UNION SELECT token"),
        "{so}"
    );
    assert!(line_of(&so, "long ").contains("UNION SELECT token"), "{so}");
    assert!(line_of(&so, "positional ").contains("'err', 1142"), "{so}");
    assert!(line_of(&so, "alias ").contains("'err', 1142"), "{so}");
    assert!(line_of(&so, "bulk ").contains("'err', 1047"), "{so}");
}

#[test]
fn the_client_s_character_set_is_never_the_session_s() {
    let e = MyEnv::start();
    let so = e.raw(
        r#"
# A handshake asking for gbk (28), where 0xbf5c is one character holding
# the byte of a backslash.
s = socket.create_connection(("127.0.0.1", port)); packet(s)
caps = 0x1 | 0x8 | 0x0200 | 0x8000 | 0x10000 | 0x20000 | 0x80000
body = struct.pack("<IIB23x", caps, 1 << 24, 28) + b"x\x00" + b"\x00" + b"shop\x00" + b"mysql_native_password\x00"
send(s, 1, body)
_, p = packet(s)
print("login", p[0])
print("charset", query(s, "SELECT @@character_set_client, @@collation_connection"))
print("gbk", query(s, "SELECT '\xbf' UNION SELECT token FROM secrets -- '"))
# COM_CHANGE_USER naming gbk as its character set.
cu = b"\x11" + b"root\x00" + b"\x00" + b"shop\x00" + struct.pack("<H", 28) + b"mysql_native_password\x00"
print("change", simple(s, cu))
print("charset-after", query(s, "SELECT @@character_set_client"))
"#,
    );
    assert!(!so.contains(SECRET), "{so}");
    assert_eq!(line_of(&so, "login "), "login 0", "{so}");
    assert!(line_of(&so, "charset ").contains("utf8mb4"), "{so}");
    assert!(line_of(&so, "charset-after ").contains("utf8mb4"), "{so}");
}

#[test]
fn a_view_over_a_masked_table_does_not_unmask_it() {
    let e = MyEnv::start();
    let out = e.db.root_sql(
        "CREATE OR REPLACE VIEW shop.v_customers AS SELECT * FROM shop.customers;
         CREATE OR REPLACE VIEW shop.v_cards AS SELECT id, concat(card, '') AS c FROM shop.customers;",
    );
    assert!(out.status.success(), "{out:?}");
    all_refused(
        &e,
        &[
            "SELECT card FROM v_customers",
            "SELECT * FROM v_customers",
            "SELECT c FROM v_cards",
            "SELECT id FROM v_cards WHERE c LIKE '4111%'",
            "SELECT id FROM shop.v_customers WHERE card LIKE '4111%'",
            "SELECT name FROM customers WHERE id IN (SELECT id FROM v_cards WHERE c > '4')",
        ],
    );
}

#[test]
fn a_view_over_a_blocked_table_does_not_unblock_it() {
    // Without column rules: the refusal comes from the block rule alone.
    let policy = POLICY.replace(
        "columns = [ { column = \"customers.card\", strategy = \"last4\" } ]\n",
        "",
    );
    assert_ne!(policy, POLICY);
    let e = MyEnv::start_custom("", "", &policy);
    let out = e
        .db
        .root_sql("CREATE OR REPLACE VIEW shop.v_tokens AS SELECT token AS t FROM shop.secrets;");
    assert!(out.status.success(), "{out:?}");
    all_refused(
        &e,
        &[
            "SELECT t FROM v_tokens",
            "SELECT * FROM `shop`.`v_tokens`",
            "SELECT name FROM customers WHERE EXISTS (SELECT 1 FROM v_tokens WHERE t LIKE 'top%')",
        ],
    );
    // Tables stay readable.
    let got = run(&e, &["SELECT count(*) FROM orders"]);
    assert_eq!(got[0], "rows [['2']]");
}

/// [`RUN`] where the text `!multi` sends COM_SET_OPTION (multi-statements on).
const RUN5: &str = r#"
import json
_q = query_all
def query_all(s, sql):
    if sql == "!multi":
        send(s, 0, b"\x1b\x00\x00")
        _, p = packet(s)
        return ["err %d %s" % err(p)[1:]] if p[0] == 0xff else ["ok"]
    return _q(s, sql)
"#;

fn run5(e: &MyEnv, texts: &[&str]) -> Vec<String> {
    let json = serde_json::to_string(texts).unwrap();
    let script = RUN.replace("texts = json.loads", &format!("{RUN5}\ntexts = json.loads"));
    let so = e.raw_with(&script, &[&json]);
    let lines: Vec<String> = so.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), texts.len(), "{so}");
    lines
        .into_iter()
        .map(|l| l.split_once(' ').map(|x| x.1.to_owned()).unwrap_or(l))
        .collect()
}

/// Session 5. FINDING S5-M1: `SELECT DISTINCT card` (also `DISTINCTROW`,
/// which the parser reads as a name, and `DISTINCT *`) ran: DISTINCT groups
/// by every output column, so over a masked one it tells how many distinct
/// values it holds and the server may return them in their order. Refused
/// like GROUP BY. Held (each a probe of this round): accented and
/// full-width spellings of a masked name (MariaDB does not fold them to
/// the column), backtick and case spellings in predicates, an alias by
/// another case in ORDER BY, `SELECT … INTO @v` in both places, `SET
/// @@local.sql_mode`, recursive CTEs over blocked or masked tables,
/// `JSON_ARRAYAGG`, `WINDOW … ORDER BY`, `COLLATE`/`BINARY`/`->` on a
/// masked column, `_latin1`/`_gbk` introducers before a backslash, `FOR
/// SYSTEM_TIME`, `HELP`, `ANALYZE SELECT`.
#[test]
fn s5_distinct_over_a_masked_column_and_held_variants() {
    let e = MyEnv::start();
    all_refused(
        &e,
        &[
            "SELECT DISTINCT card FROM customers",
            "SELECT DISTINCTROW card FROM customers",
            "SELECT SQL_BIG_RESULT DISTINCT card FROM customers",
            "SELECT DISTINCT c.card AS k FROM customers c",
            "SELECT DISTINCT * FROM customers",
            // Held.
            "SELECT name FROM customers WHERE `card` LIKE '4111%'",
            "SELECT name FROM customers WHERE customers.`CARD` LIKE '4111%'",
            "SELECT card AS x FROM customers ORDER BY `X`",
            "SELECT card INTO @c FROM customers LIMIT 1",
            "SELECT card FROM customers LIMIT 1 INTO @c",
            "SET @@local.sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "WITH RECURSIVE r AS (SELECT token FROM secrets) SELECT * FROM r",
            "WITH RECURSIVE r (c) AS (SELECT card FROM customers) SELECT c FROM r",
            "SELECT JSON_ARRAYAGG(card) FROM customers",
            "SELECT card FROM customers WINDOW w AS (ORDER BY card)",
            "SELECT card COLLATE latin1_bin AS k FROM customers",
            "SELECT BINARY card FROM customers",
            "SELECT card->'$' FROM customers",
            "SELECT token FROM secrets FOR SYSTEM_TIME ALL",
            "ANALYZE SELECT token FROM secrets",
        ],
    );
    // A name MariaDB does not resolve is the server's error, not a read.
    nothing_leaks(
        &e,
        &[
            "SELECT name FROM customers WHERE cárd LIKE '4111%'",
            "SELECT name FROM customers WHERE ｃａｒｄ LIKE '4111%'",
            "SELECT _latin1'x\\' UNION SELECT token FROM secrets -- '",
            "SELECT _gbk'\u{bf}\\' UNION SELECT token FROM secrets -- '",
        ],
    );
    // DISTINCT of other columns still runs.
    let got = run(&e, &["SELECT DISTINCT name FROM customers ORDER BY name"]);
    assert_eq!(got[0], "rows [['Alice'], ['Bob']]");
}

/// Session 5, held: multi-statements turned on by the client with
/// COM_SET_OPTION (Warden relays it) are each decided, split as MariaDB
/// splits them (strings with backslashes and doubled quotes, `#`, `--`
/// with a tab, `/*/`), and every result set of the text is masked.
#[test]
fn s5_multi_statements_turned_on_by_com_set_option_are_each_decided() {
    let e = MyEnv::start();
    let texts = [
        "!multi",
        "SELECT 1; SELECT token FROM secrets",
        "SELECT 'x\\'; SELECT token FROM secrets; -- '",
        "SELECT \"x\\\"; SELECT token FROM secrets; -- \"",
        "SELECT 'a''; SELECT token FROM secrets; -- '",
        "SELECT 1 #; SELECT token FROM secrets\n",
        "SELECT 1 --\t; SELECT token FROM secrets\n",
        "SELECT 1 -- ; SELECT token FROM secrets\n; SELECT 2",
        "SELECT 1 /*/ ; SELECT token FROM secrets; /*/",
        "SELECT 1 AS `a\\`; SELECT token FROM secrets; -- `",
        "SELECT 1; SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'x\\' UNION SELECT token FROM secrets -- '",
        "SELECT 1; SELECT name FROM customers WHERE card LIKE '4111%'",
        "SELECT name FROM customers; SELECT card FROM customers ORDER BY 1",
        "SELECT id FROM orders; SELECT card FROM customers",
        "SELECT id FROM orders; SELECT * FROM customers",
    ];
    let got = run5(&e, &texts);
    assert_eq!(got[0], "ok", "COM_SET_OPTION: {got:?}");
    let mut bypass = Vec::new();
    for (t, r) in texts.iter().zip(&got) {
        if r.contains(SECRET) || r.contains(CARD) || r.contains("alice@example.com") {
            bypass.push(format!("{t:?} => {r}"));
        }
    }
    assert!(bypass.is_empty(), "leaked:\n{}", bypass.join("\n"));
    // The second result set is masked (not merely absent).
    assert!(got[13].contains("************1111"), "{got:?}");
    assert!(got[14].contains("[MASKED:email]"), "{got:?}");
}

/// FINDING S5-M2: a generated column of a masked table (a DBA's `card_copy
/// AS (concat(card, ''))`, `card_rev AS (reverse(card))`) carried the
/// card in clear: its origin is its own name, which no column rule names,
/// and conditions on it probed the card. Warden reads the generated
/// columns with the views; one of a table with column rules is redacted
/// whole and is, like a masked column, only a bare output column.
#[test]
fn s5_generated_column_of_a_masked_table_is_masked() {
    let e = MyEnv::start();
    let out = e.db.root_sql(
        "ALTER TABLE shop.customers ADD COLUMN IF NOT EXISTS card_copy VARCHAR(64) \
           AS (concat(card, '')) VIRTUAL, \
         ADD COLUMN IF NOT EXISTS card_rev VARCHAR(64) AS (reverse(card)) PERSISTENT;",
    );
    assert!(out.status.success(), "{out:?}");
    let got = run(
        &e,
        &[
            "SELECT card_copy FROM customers",
            "SELECT card_rev FROM customers",
            "SELECT name FROM customers WHERE card_copy LIKE '4111%'",
            "SELECT name FROM customers ORDER BY card_rev",
            "SELECT * FROM customers",
        ],
    );
    // The binary protocol too.
    let so = e.raw(
        r#"
s = connect()
ok, sid, cols = prepare(s, "SELECT card_copy, card_rev FROM customers")
print("binary", execute(s, sid))
"#,
    );
    let undo = e.db.root_sql(
        "ALTER TABLE shop.customers DROP COLUMN IF EXISTS card_copy, DROP COLUMN IF EXISTS card_rev;",
    );
    assert!(
        line_of(&so, "binary ").contains("rows") && !so.contains(CARD) && !so.contains("1114"),
        "{so}"
    );
    assert!(undo.status.success(), "{undo:?}");
    let rev: String = CARD.chars().rev().collect();
    let mut bypass = Vec::new();
    for (k, r) in got.iter().enumerate() {
        let must_refuse = k == 2 || k == 3;
        // Nothing of a computed value shows: not even the first digits a
        // last-four mask of `reverse(card)` would give.
        let shown = r.contains(CARD) || r.contains(&rev) || r.contains("1114");
        if shown || (must_refuse && !r.starts_with("err 1142")) {
            bypass.push(format!("{k}: {r}"));
        }
    }
    assert!(
        bypass.is_empty(),
        "a generated column unmasked a card:\n{}",
        bypass.join("\n")
    );
}
