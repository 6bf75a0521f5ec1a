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

/// The decision cache's premise, checked over the bypass corpus and the
/// attack texts of session 3: replacing the value of every data literal
/// (by another of the same cache-key kind) changes neither the analysis
/// nor which literals are data. A text the variant makes unparsable is
/// skipped: a cache hit on it is forwarded and rejected by the server.
#[test]
fn data_literal_values_never_change_the_analysis() {
    let extra = [
        "SELECT set_config('search_path', 'x', false) FROM t WHERE a = 1",
        "SELECT * FROM t WHERE a = 'secrets' AND b = 'secrets'::regclass",
        "SELECT to_regclass('secrets'), format('%s', 1), 'pg_read_file'",
        "SELECT * FROM t ORDER BY 1 LIMIT 2 OFFSET 3",
        "SELECT a FROM t GROUP BY 1 HAVING count(*) > 1",
        "SELECT DISTINCT ON (1) a FROM t",
        "SELECT a, -5, - 5.5, +3 FROM t WHERE b = -1",
        "SELECT U&'\\0041', E'\\x41', $$x$$, $q$y$q$, B'101', X'1F' FROM t",
        "SELECT ARRAY['a', 'b'], ROW(1, 'x'), '{1,2}'::int[] FROM t",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b') RETURNING 3",
        "UPDATE t SET a[1] = 5, b = 'x' WHERE c IN (1, 2, 3)",
        "SELECT * FROM t WHERE a LIKE 'x%' AND b ~ 'y' AND c->>'k' = 'v'",
        "SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (1)",
        "SELECT * FROM generate_series(1, 10) g WHERE g = 5",
        "SELECT CASE WHEN a = 1 THEN 'x' ELSE 'y' END FROM t",
        "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.b = 'z' OFFSET 0)",
        "SELECT a FROM t FETCH FIRST 5 ROWS WITH TIES",
        "SELECT a FROM t WINDOW w AS (ORDER BY 1)",
        "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED AND u.b = 1 THEN UPDATE SET c = 'x' \
         WHEN NOT MATCHED THEN INSERT VALUES (1, 'y')",
        "SELECT 1 FROM t WHERE a = ANY('{a,b}') AND b BETWEEN 1 AND 2 AND c IS DISTINCT FROM 'q'",
    ];
    let texts = crate::policy::corpus::CORPUS
        .iter()
        .map(|(sql, _, _)| *sql)
        .chain(extra);
    let mut checked = 0;
    for sql in texts {
        let Some(scan) = SqlScan::new(sql) else {
            continue;
        };
        let Ok(tree) = crate::policy::sql::parse_tree(sql) else {
            continue;
        };
        let Ok(before) = crate::policy::sql::analyze_tree(&tree) else {
            continue;
        };
        let mask = scan.data_mask(&data_literals(&tree));
        if !mask.data.iter().any(|d| *d) {
            continue;
        }
        // Every data literal replaced, by kind.
        let mut variant = String::new();
        let mut at = 0;
        let mut lit = 0;
        for t in &scan.toks {
            let Kind::Literal(k) = t.kind else { continue };
            let data = mask.data[lit];
            lit += 1;
            if !data {
                continue;
            }
            variant.push_str(&sql[at..t.start]);
            variant.push_str(match k {
                's' => "'zz\\'",
                'i' => "7",
                'f' => "7.25",
                'b' => "B'1'",
                _ => "X'1F'",
            });
            at = t.end;
        }
        variant.push_str(&sql[at..]);
        let vscan = SqlScan::new(&variant).expect("variant scans");
        assert_eq!(scan.cache_key(), vscan.cache_key(), "{sql} / {variant}");
        let Ok(vtree) = crate::policy::sql::parse_tree(&variant) else {
            continue;
        };
        let after =
            crate::policy::sql::analyze_tree(&vtree).unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(before, after, "{sql}\n{variant}");
        let vmask = vscan.data_mask(&data_literals(&vtree));
        assert_eq!(mask, vmask, "{sql}\n{variant}");
        assert_eq!(
            scan.fingerprint(&mask),
            vscan.fingerprint(&vmask),
            "{sql}\n{variant}"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} texts had data literals");
}
