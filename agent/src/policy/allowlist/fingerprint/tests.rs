use super::*;

fn fp(sql: &str) -> String {
    sql_fingerprint(sql).expect("scans").text
}

#[test]
fn variants_that_share_a_fingerprint() {
    for (a, b) in [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 17;",
            "select abalance from PGBENCH_ACCOUNTS where aid=90210",
        ),
        (
            "UPDATE t SET note = 'a' /* c */ WHERE x = $$y$$",
            "update t set note = E'it''s' where x = 'z' -- done",
        ),
        (
            "SELECT * FROM t WHERE id IN (1, 2, 3)",
            "SELECT * FROM t WHERE id IN (4)",
        ),
        (
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
            "INSERT INTO t (a, b) VALUES (3, 'z')",
        ),
        (
            "SELECT * FROM t WHERE a = $1",
            "SELECT * FROM t WHERE a = $2",
        ),
        (
            "SELECT * FROM t WHERE a = -1",
            "SELECT * FROM t WHERE a = -2",
        ),
        (
            "SELECT * FROM t WHERE a BETWEEN 1 AND 2 LIMIT 10",
            "SELECT * FROM t WHERE a BETWEEN 3 AND 4 LIMIT 20",
        ),
        ("SELECT U&'d\\0061t' FROM t", "SELECT 'other' FROM t"),
    ] {
        assert_eq!(fp(a), fp(b), "{a} / {b}");
    }
    assert_eq!(
        fp("SELECT abalance FROM pgbench_accounts WHERE aid = 17;"),
        "select abalance from pgbench_accounts where aid = $?"
    );
    assert_eq!(
        fp("SELECT * FROM t WHERE id IN (1, 2, 3)"),
        "select * from t where id in ( $? )"
    );
}

#[test]
fn variants_that_do_not_share_a_fingerprint() {
    for (a, b) in [
        // Names, quoted or not, and structure.
        ("SELECT * FROM orders", "SELECT * FROM payments"),
        ("SELECT * FROM \"Orders\"", "SELECT * FROM orders"),
        // PostgreSQL folds ASCII letters only.
        ("SELECT * FROM Éa", "SELECT * FROM éa"),
        (
            "DELETE FROM t WHERE id = 1",
            "DELETE FROM t WHERE id = 1 OR true",
        ),
        ("SELECT 1; SELECT 2", "SELECT 1"),
        // Literals that name, steer or are code.
        (
            "SELECT pg_read_file('/tmp/x')",
            "SELECT pg_read_file('/etc/shadow')",
        ),
        ("SELECT nextval('a_seq')", "SELECT nextval('b_seq')"),
        ("SELECT 'orders'::regclass", "SELECT 'pg_authid'::regclass"),
        (
            "SELECT * FROM t WHERE a LIKE 'x'",
            "SELECT * FROM t WHERE a LIKE '%'",
        ),
        (
            "SELECT * FROM t WHERE a ~ 'x'",
            "SELECT * FROM t WHERE a ~ '.*'",
        ),
        (
            "SELECT doc->>'name' FROM t",
            "SELECT doc->>'password' FROM t",
        ),
        (
            "SELECT a, b FROM t ORDER BY 1",
            "SELECT a, b FROM t ORDER BY 2",
        ),
        (
            "SELECT a, b FROM t GROUP BY 1",
            "SELECT a, b FROM t GROUP BY 2",
        ),
        (
            "SET statement_timeout = '1s'",
            "SET statement_timeout = '0'",
        ),
        ("SET search_path = 'app'", "SET search_path = 'evil'"),
        ("COPY t FROM '/tmp/a'", "COPY t FROM '/etc/passwd'"),
        ("DO $$ BEGIN END $$", "DO $$ BEGIN PERFORM 1; END $$"),
        (
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "EXPLAIN (ANALYZE 1) DELETE FROM t",
        ),
        (
            "SELECT set_config('a.b', 'x', false)",
            "SELECT set_config('search_path', 'x', false)",
        ),
        (
            "SELECT CAST(a AS numeric(10, 2)) FROM t",
            "SELECT CAST(a AS numeric(12, 2)) FROM t",
        ),
        ("SELECT date '2020-01-01'", "SELECT date '2021-01-01'"),
        (
            "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
            "SELECT * FROM t TABLESAMPLE SYSTEM (90)",
        ),
        // A placeholder is never a literal's own text.
        ("SELECT '$?'", "SELECT $1::text"),
        (
            "SELECT * FROM t WHERE a = $1",
            "SELECT * FROM t WHERE a = 5",
        ),
    ] {
        assert_ne!(fp(a), fp(b), "{a} / {b}");
    }
    // Lists with something other than plain values are not collapsed.
    assert_ne!(
        fp("SELECT * FROM t WHERE id IN (1, f(2))"),
        fp("SELECT * FROM t WHERE id IN (1)")
    );
}

#[test]
fn the_cache_key_differs_only_by_literal_values() {
    let a = SqlScan::new("SELECT a FROM t WHERE id = 1 /* x */").unwrap();
    let b = SqlScan::new("select A from t where ID = 2").unwrap();
    assert_eq!(a.cache_key(), b.cache_key());
    let c = SqlScan::new("SELECT a FROM t WHERE id = 1.5").unwrap();
    assert_ne!(
        a.cache_key(),
        c.cache_key(),
        "literal kinds are part of the key"
    );
    // Kept literals pin a cached decision to their text.
    let sql = "SELECT pg_read_file('/tmp/x') WHERE 1 = 1";
    let s = SqlScan::new(sql).unwrap();
    let tree = crate::policy::sql::parse_tree(sql).unwrap();
    let mask = s.data_mask(&data_literals(&tree));
    assert_eq!(mask.data, vec![false, true, true]);
    let kept = s.kept_literals(&mask);
    let other = SqlScan::new("SELECT pg_read_file('/etc/shadow') WHERE 2 = 2").unwrap();
    assert_eq!(other.cache_key(), s.cache_key());
    assert!(!other.keeps(&kept));
    assert!(
        SqlScan::new("SELECT pg_read_file('/tmp/x') WHERE 3 = 4")
            .unwrap()
            .keeps(&kept)
    );
}

#[test]
fn scanning_is_postgresqls() {
    // A dollar-quoted string holding a quote and a comment marker is one
    // literal; so is an E'' string with an escaped quote.
    let s = SqlScan::new("SELECT $tag$ it's -- $tag$, E'a\\'b' FROM t").unwrap();
    assert_eq!(s.literal_count(), 2);
    // Unterminated strings do not scan.
    assert!(SqlScan::new("SELECT 'abc").is_none());
    assert!(SqlScan::new("SELECT 1\0").is_none());
}

#[test]
fn masked_text_comes_from_literal_positions() {
    let s = SqlScan::new("SELECT a /* c */ FROM t WHERE b = 'secret' AND \"Q\" = 5").unwrap();
    let out = s.masked_text(|t| "#".repeat(t.len()));
    assert_eq!(
        out,
        "SELECT a ####### FROM t WHERE b = ######## AND ### = #"
    );
}

#[test]
fn http_shapes() {
    assert_eq!(
        http_normalised(
            "get",
            "/v1/orders/42/items/3f2b1c9e-0a4d-4e8b-9c1d-2e3f4a5b6c7d",
            &["b", "a", "b"]
        ),
        "GET /v1/orders/{id}/items/{id}?a&b"
    );
    assert_eq!(
        http_normalised("GET", "/blobs/0123456789abcdef0123", &[]),
        "GET /blobs/{id}"
    );
    assert_ne!(
        http_fingerprint("GET", "/v1/orders/42", &[]),
        http_fingerprint("GET", "/v1/admin/42", &[])
    );
    assert_ne!(
        http_fingerprint("GET", "/v1/orders/42", &[]),
        http_fingerprint("DELETE", "/v1/orders/42", &[])
    );
    assert_ne!(
        http_fingerprint("GET", "/v1/orders/42", &["q"]),
        http_fingerprint("GET", "/v1/orders/42", &[])
    );
    assert_eq!(
        http_fingerprint("GET", "/v1/orders/42", &[]).id,
        http_fingerprint("GET", "/v1/orders/43", &[]).id
    );
    // Words are not ids.
    assert_eq!(
        http_normalised("GET", "/v1/deadbeef", &[]),
        "GET /v1/deadbeef"
    );
}

/// The fuzz target's crash (sql_policy, 2026-12-07): a text with no token
/// made pg_query build a slice from a null pointer. Blank and comment
/// texts scan (to nothing, or a comment) and a trailing `--` comment still
/// ends the statement's tokens where the text ends.
#[test]
fn texts_without_tokens_scan_safely() {
    for sql in ["", " ", "\n\t ", "-- only a comment", "/* c */"] {
        let scan = SqlScan::new(sql).expect(sql);
        assert!(scan.toks.iter().all(|t| t.kind == Kind::Comment), "{sql:?}");
    }
    let scan = SqlScan::new("SELECT 1 -- tail").unwrap();
    assert_eq!(scan.toks.len(), 3);
    assert!(SqlScan::new("SELECT '1").is_none());
    assert!(SqlScan::new("SELECT 1 /* open").is_none());
}
