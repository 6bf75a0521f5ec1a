//! The analysis against the issue's cases and variants: every way a masked
//! column can be used, judged under each `masked_in_predicates`.

use std::sync::Arc;

use super::*;
use crate::masking::{Masker, MaskingConfig};

fn masker() -> Arc<Masker> {
    let cfg: MaskingConfig = toml::from_str(
        r#"
columns = [
  { column = "customers.name", strategy = "redact" },
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "customers.ssn", strategy = "null" },
  { column = "staff.salary", strategy = "null" },
]
"#,
    )
    .unwrap();
    Arc::new(Masker::compile(&cfg, None).unwrap())
}

fn rel(schema: &str, name: &str, cols: &[&str], m: &Masker) -> CatalogRelation {
    CatalogRelation {
        schema: schema.into(),
        name: name.into(),
        columns: cols
            .iter()
            .map(|c| CatalogColumn {
                name: (*c).into(),
                mask: m
                    .column_rule(schema, name, c)
                    .map(|(rule, strategy)| ColumnMask {
                        rule: rule.into(),
                        strategy,
                    }),
                generated: false,
            })
            .collect(),
    }
}

fn catalog() -> ColumnCatalog {
    let m = masker();
    let mut view = rel("public", "customer_names", &["id", "label"], &m);
    for c in &mut view.columns {
        c.mask = Some(ColumnMask {
            rule: "customers.name".into(),
            strategy: Strategy::Redact,
        });
    }
    ColumnCatalog::new(
        "pii",
        vec![
            rel(
                "public",
                "customers",
                &["id", "name", "email", "card", "ssn", "note"],
                &m,
            ),
            rel(
                "public",
                "orders",
                &["id", "customer_id", "amount", "note"],
                &m,
            ),
            rel("public", "products", &["id", "name", "price"], &m),
            rel("public", "emails", &["id", "email"], &m),
            view,
        ],
        Some(m),
    )
}

fn run(sql: &str, mode: MaskedInPredicates) -> Result<ColumnFacts, ColumnError> {
    check(sql, &catalog(), mode)
}

#[track_caller]
fn allowed(sql: &str, mode: MaskedInPredicates) -> ColumnFacts {
    run(sql, mode).unwrap_or_else(|e| panic!("{sql}\n  refused: {e}"))
}

#[track_caller]
fn refused(sql: &str, mode: MaskedInPredicates) -> String {
    match run(sql, mode) {
        Ok(f) => panic!("{sql}\n  allowed: {f:?}"),
        Err(e) => e.to_string(),
    }
}

use MaskedInPredicates::{Any, Equality, Refuse};

#[test]
fn bare_output_columns_are_allowed_and_reported() {
    for sql in [
        "SELECT name FROM customers",
        "SELECT name AS n, email e, card FROM customers",
        "SELECT c.name, c.email FROM customers c",
        "SELECT public.customers.name FROM public.customers",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT c.*, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT n FROM customers AS c(i, n)",
        "SELECT (name) FROM customers",
        "SELECT name FROM customers ORDER BY id LIMIT 3",
        "SELECT id, name FROM customers FOR UPDATE",
        "DECLARE cur CURSOR FOR SELECT name FROM customers",
        "PREPARE p AS SELECT email FROM customers WHERE id = $1",
        "EXPLAIN SELECT name FROM customers",
        "EXPLAIN ANALYZE SELECT * FROM customers",
        "UPDATE customers SET note = 'x' WHERE id = 1 RETURNING name",
        "INSERT INTO customers (id, name) VALUES (9, 'new') RETURNING *",
        "DELETE FROM customers WHERE id = 1 RETURNING email, card",
        "SELECT label FROM customer_names",
    ] {
        for mode in [Refuse, Equality, Any] {
            let f = allowed(sql, mode);
            assert!(f.reads_masked(), "{sql}: {f:?}");
        }
    }
    let f = allowed("SELECT name, email FROM customers", Refuse);
    assert_eq!(
        f.masked,
        vec![
            "public.customers.name".to_owned(),
            "public.customers.email".to_owned()
        ]
    );
}

#[test]
fn statements_without_masked_columns_are_untouched() {
    for sql in [
        "SELECT 1",
        "SELECT id, note FROM customers WHERE id = 1 ORDER BY note",
        "SELECT count(*) FROM customers",
        "SELECT count(1), max(id) FROM customers GROUP BY note",
        "SELECT p.name FROM products p ORDER BY p.name",
        "SELECT name FROM products WHERE name LIKE 'a%' ORDER BY name",
        "SELECT o.* FROM orders o JOIN customers c ON c.id = o.customer_id",
        "WITH x AS (SELECT id FROM customers) SELECT * FROM x",
        "SELECT id FROM customers UNION SELECT id FROM orders",
        "SELECT upper(note) FROM customers",
        "SELECT * FROM pg_catalog.pg_class WHERE relname = 'x'",
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2",
        "SELECT (SELECT name FROM products p WHERE p.id = c.id) FROM customers c",
        "SELECT * FROM generate_series(1, 3) g",
        "SELECT id FROM customers WHERE EXISTS (SELECT * FROM customers c2 WHERE c2.id = customers.id)",
        "BEGIN",
        "SET statement_timeout = 0",
        "SHOW search_path",
        "COPY orders TO STDOUT",
        "COPY customers (id, note) TO STDOUT (FORMAT binary)",
        "COPY customers FROM STDIN",
        "VALUES (1, 'a')",
        "SELECT row_to_json(o) FROM orders o",
    ] {
        let f = allowed(sql, Refuse);
        assert!(!f.reads_masked(), "{sql}: {f:?}");
    }
}

#[test]
fn expressions_of_a_masked_column_are_refused_in_every_mode() {
    for sql in [
        // The issue's cases.
        "SELECT name || '' FROM customers",
        "SELECT name::varchar FROM customers",
        "SELECT CAST(name AS text) FROM customers",
        "SELECT format('%s', name) FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT c::text FROM customers c",
        "SELECT ARRAY[email, card] FROM customers",
        "SELECT string_agg(name, ',') FROM customers",
        "SELECT max(email) FROM customers",
        "SELECT count(DISTINCT email) FROM customers",
        "SELECT (SELECT name FROM customers LIMIT 1)",
        "SELECT x FROM (SELECT name AS x FROM customers) s",
        "SELECT * FROM (SELECT * FROM customers) s",
        "WITH x AS (SELECT name FROM customers) SELECT * FROM x",
        "WITH x AS (SELECT * FROM customers) SELECT id FROM x",
        "SELECT name FROM customers UNION SELECT 'a'",
        "SELECT email FROM customers UNION ALL SELECT email FROM emails",
        "SELECT note FROM customers EXCEPT SELECT name FROM customers",
        "SELECT translate(email, '@.', '#,') FROM customers",
        "SELECT encode(convert_to(card, 'UTF8'), 'base64') FROM customers",
        "SELECT replace(ssn, '-', '/') FROM customers",
        // Variants.
        "SELECT c FROM customers c",
        "SELECT customers FROM customers",
        "SELECT (c).name FROM customers c",
        "SELECT to_json(c.*) FROM customers c",
        "SELECT ROW(name, id) FROM customers",
        "SELECT name COLLATE \"C\" FROM customers",
        "SELECT CASE WHEN id > 0 THEN name END FROM customers",
        "SELECT coalesce(name, 'x') FROM customers",
        "SELECT greatest(email, '') FROM customers",
        "SELECT nullif(email, 'x') FROM customers",
        "SELECT email = 'a@b.c' FROM customers",
        "SELECT email IS NULL FROM customers",
        "SELECT name[1] FROM customers",
        "SELECT lower(name) AS name FROM customers",
        "SELECT reverse(ssn) FROM customers",
        "SELECT md5(card) FROM customers",
        "SELECT substr(card, 1, 8) FROM customers",
        "SELECT left(card, 6) FROM customers",
        "SELECT length(name) FROM customers",
        "SELECT lag(name) OVER (ORDER BY id) FROM customers",
        "SELECT first_value(email) OVER w FROM customers WINDOW w AS (ORDER BY id)",
        "SELECT json_agg(c) FROM customers c",
        "SELECT array_agg(card) FROM customers",
        "SELECT ARRAY(SELECT email FROM customers)",
        "SELECT x.n FROM customers c, LATERAL (SELECT c.name AS n) x",
        "SELECT u FROM customers c, unnest(ARRAY[c.name]) u",
        "SELECT * FROM customers c, LATERAL unnest(ARRAY[c.email]) AS u(v)",
        "SELECT * FROM customers c CROSS JOIN LATERAL jsonb_each_text(to_jsonb(c)) j",
        "SELECT * FROM (VALUES ((SELECT name FROM customers LIMIT 1))) v(x)",
        "VALUES ((SELECT card FROM customers LIMIT 1))",
        "WITH RECURSIVE r(n) AS (SELECT name FROM customers UNION SELECT n FROM r) SELECT n FROM r",
        "WITH d AS (DELETE FROM customers RETURNING name) SELECT * FROM d",
        "SELECT name FROM customers INTERSECT SELECT name FROM products",
        "SELECT xmlelement(name x, name) FROM customers",
        "SELECT jsonb_build_object('n', name) FROM customers",
        "SELECT name::int FROM customers",
        "SELECT (SELECT c2.email FROM customers c2 WHERE c2.id = c.id) FROM customers c",
        "SELECT 'x' || c.email FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT upper(label) FROM customer_names",
        // Written elsewhere.
        "INSERT INTO orders (note) SELECT name FROM customers",
        "INSERT INTO orders (note) VALUES ((SELECT email FROM customers LIMIT 1))",
        "UPDATE customers SET note = name",
        "UPDATE orders o SET note = c.email FROM customers c WHERE c.id = o.customer_id",
        "UPDATE customers SET name = upper(name) RETURNING id",
        "INSERT INTO customers (id, note) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET note = customers.email",
        "CREATE TABLE t AS SELECT name FROM customers",
        "SELECT name INTO t FROM customers",
        "CREATE VIEW v AS SELECT email FROM customers",
        "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN UPDATE SET note = c.name",
        "SELECT pg_notify('ch', name) FROM customers",
        "SELECT 1 FROM customers WHERE pg_notify('ch', email) IS NULL",
        "SELECT set_config('x.y', email, false) FROM customers",
        "CALL p((SELECT name FROM customers LIMIT 1))",
        "SELECT * FROM customers LIMIT (SELECT length(name) FROM customers LIMIT 1)",
        "EXPLAIN ANALYZE SELECT name::int FROM customers",
        "UPDATE customers SET note = 'x' RETURNING upper(name)",
        "DELETE FROM customers RETURNING row_to_json(customers)",
        "INSERT INTO customers (id) VALUES (1) RETURNING email || ''",
        "DECLARE c CURSOR FOR SELECT lower(email) FROM customers",
        "PREPARE p AS SELECT name || '' FROM customers",
    ] {
        for mode in [Refuse, Equality, Any] {
            let e = refused(sql, mode);
            assert!(e.contains("masked column"), "{sql} ({mode:?}): {e}");
        }
    }
    let e = refused("SELECT format('%s', name) FROM customers", Any);
    assert!(e.contains("public.customers.name"), "{e}");
    assert!(e.contains("masking rule \"customers.name\""), "{e}");
    assert!(e.contains("function format()"), "{e}");
}

#[test]
fn equality_conditions_against_literals_and_parameters() {
    let ok = [
        "SELECT id FROM customers WHERE email = 'ana@example.com'",
        "SELECT id FROM customers WHERE email = $1",
        "SELECT id FROM customers WHERE $1 = email",
        "SELECT id FROM customers WHERE email = $1::text",
        "SELECT id FROM customers WHERE email <> 'x'",
        "SELECT id FROM customers WHERE email IN ('a', 'b')",
        "SELECT id FROM customers WHERE email NOT IN ('a', $1)",
        "SELECT id FROM customers WHERE email = ANY($1)",
        "SELECT id FROM customers WHERE email = ANY(ARRAY['a', 'b'])",
        "SELECT id FROM customers WHERE email IS NULL",
        "SELECT id FROM customers WHERE NOT (email IS NOT NULL) AND id > 3",
        "SELECT id FROM customers WHERE email IS NOT DISTINCT FROM NULL",
        "SELECT id FROM customers WHERE email IS NOT DISTINCT FROM $1",
        "SELECT id FROM customers WHERE NOT (email = 'x') OR card = '4111'",
        "SELECT name, email FROM customers WHERE email = $1",
        "SELECT c.id FROM customers c JOIN orders o ON o.customer_id = c.id AND c.email = 'x'",
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email = $1)",
        "UPDATE customers SET note = 'vip' WHERE email = $1",
        "DELETE FROM customers WHERE ssn = '078-05-1120'",
        "SELECT id FROM customers WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id) AND email = 'x'",
        "EXPLAIN ANALYZE SELECT id FROM customers WHERE email = 'x'",
        "SELECT count(*) FILTER (WHERE email = 'x') FROM customers",
    ];
    let not_equality = [
        // IS NOT NULL selects unknown values an index returns in order (M7).
        "SELECT id FROM customers WHERE email IS NOT NULL AND id > 3",
        "SELECT id FROM customers WHERE NOT (email IS NULL)",
        "SELECT id FROM customers WHERE NOT (id > 3 OR email IS NULL)",
        "SELECT id FROM customers WHERE email IS DISTINCT FROM NULL",
        "SELECT id FROM customers WHERE NOT (email IS NOT DISTINCT FROM NULL)",
        "SELECT id FROM customers WHERE email LIKE '%@example.com'",
        "SELECT id FROM customers WHERE email ILIKE 'a%'",
        "SELECT id FROM customers WHERE email SIMILAR TO 'a%'",
        "SELECT id FROM customers WHERE email ~ '^a'",
        "SELECT id FROM customers WHERE email > 'm'",
        "SELECT id FROM customers WHERE card BETWEEN '4' AND '5'",
        "SELECT id FROM customers WHERE lower(email) = 'x'",
        "SELECT id FROM customers WHERE left(ssn, 3) = '078'",
        "SELECT id FROM customers WHERE length(name) = 5",
        "SELECT id FROM customers WHERE email = name",
        "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM emails e WHERE e.email = c.email)",
        "SELECT id FROM customers WHERE email IN (SELECT email FROM emails)",
        "SELECT id FROM customers WHERE email = (SELECT email FROM emails LIMIT 1)",
        "SELECT id FROM customers WHERE (SELECT email FROM customers LIMIT 1) = 'x'",
        "SELECT id FROM customers WHERE (email = 'x') = true",
        "SELECT id FROM customers WHERE CASE WHEN email = 'x' THEN true END",
        "SELECT id FROM customers WHERE email = 'a' || 'b' || note",
        "SELECT id FROM customers ORDER BY email",
        "SELECT id, email FROM customers ORDER BY 2",
        "SELECT email AS e FROM customers ORDER BY e",
        "SELECT * FROM customers ORDER BY 3",
        "SELECT count(*) FROM customers GROUP BY email",
        "SELECT count(*) FROM customers GROUP BY left(card, 6)",
        "SELECT email FROM customers GROUP BY 1",
        "SELECT DISTINCT email FROM customers",
        "SELECT DISTINCT ON (email) id FROM customers",
        "SELECT row_number() OVER (PARTITION BY email) FROM customers",
        "SELECT rank() OVER (ORDER BY card) FROM customers",
        "SELECT c.id FROM customers c JOIN emails e ON e.email = c.email",
        "SELECT c.id FROM customers c JOIN emails e USING (email)",
        "SELECT id FROM customers NATURAL JOIN emails",
        "SELECT id FROM customers WHERE email",
        "SELECT count(*) FILTER (WHERE email LIKE 'x%') FROM customers",
        "SELECT * FROM customer_names WHERE label LIKE 'a%'",
        "SELECT id FROM customers WHERE ssn IS NULL OR ssn LIKE '0%'",
        "SELECT id FROM customers GROUP BY id HAVING max(email) > 'm'",
        "UPDATE customers SET note = 'x' WHERE email LIKE 'a%'",
        "DELETE FROM customers WHERE card > '4'",
        "EXPLAIN ANALYZE SELECT id FROM customers WHERE email LIKE 'a%'",
        "SELECT id FROM customers WHERE email = ANY(SELECT email FROM emails)",
    ];
    for sql in ok {
        allowed(sql, Equality);
        allowed(sql, Any);
        let e = refused(sql, Refuse);
        assert!(
            e.contains("masked_in_predicates = \"refuse\""),
            "{sql}: {e}"
        );
    }
    for sql in not_equality {
        let e = refused(sql, Equality);
        assert!(e.contains("masked column"), "{sql}: {e}");
        refused(sql, Refuse);
        allowed(sql, Any);
    }
}

#[test]
fn merged_join_columns_and_whole_rows_are_never_bare() {
    // In `any` mode the join may compare them, but the merged column's
    // origin is not the masked table's: never returned.
    for sql in [
        "SELECT email FROM customers JOIN emails USING (email)",
        "SELECT * FROM customers JOIN emails USING (email)",
        "SELECT * FROM customers NATURAL JOIN emails",
        "SELECT j.email FROM (customers JOIN emails USING (email)) j",
    ] {
        let e = refused(sql, Any);
        assert!(e.contains("email"), "{sql}: {e}");
    }
    // Joined on other columns: the masked table's own column is bare.
    allowed(
        "SELECT c.email, e.email FROM customers c JOIN emails e USING (id)",
        Refuse,
    );
}

#[test]
fn names_resolve_as_postgresql_resolves_them() {
    // A column alias list renames: `n` is name, `name` is the email column.
    refused("SELECT upper(n) FROM customers c(i, n)", Any);
    allowed(
        "SELECT upper(x) FROM (SELECT note AS x FROM customers) s",
        Refuse,
    );
    // The nearest scope wins: products.name, not customers.name.
    allowed(
        "SELECT (SELECT upper(name) FROM products p LIMIT 1) FROM customers c",
        Refuse,
    );
    // Correlated: the outer customers.name inside a sub-query.
    refused(
        "SELECT (SELECT upper(c.name) FROM products p LIMIT 1) FROM customers c",
        Any,
    );
    // A CTE shadows a table of the same name.
    allowed(
        "WITH customers AS (SELECT 1 AS name) SELECT upper(name) FROM customers",
        Refuse,
    );
    // ... but not inside its own body (not recursive).
    refused(
        "WITH customers AS (SELECT upper(name) AS name FROM customers) SELECT 1",
        Any,
    );
    // Schema-qualified references.
    refused(
        "SELECT lower(public.customers.email) FROM public.customers",
        Any,
    );
    refused("SELECT lower(c.email) FROM public.customers AS c", Any);
}

#[test]
fn relations_outside_the_catalog_are_judged_by_the_rules_naming_them() {
    // A table Warden has no catalog entry for, named by a rule.
    let e = refused("SELECT salary FROM staff", Refuse);
    assert!(e.contains("not in Warden's catalog"), "{e}");
    allowed("SELECT id FROM staff WHERE salary = $1", Equality);
    refused("SELECT salary + 1 FROM staff", Any);
    let e = refused("SELECT * FROM staff", Any);
    assert!(e.contains("not in Warden's catalog"), "{e}");
    refused("SELECT row_to_json(s) FROM staff s", Any);
    refused("COPY staff TO STDOUT", Any);
    // Not named by any rule: nothing to mask.
    allowed("SELECT * FROM some_temp_table", Refuse);
    allowed("SELECT upper(x) FROM some_temp_table", Refuse);
    // An unknown FROM item beside a masked table: an unqualified name may
    // be either.
    refused(
        "SELECT (SELECT upper(email) FROM some_temp_table) FROM customers",
        Any,
    );
}

#[test]
fn copy_to_stdout_is_masked_by_position() {
    let f = allowed("COPY customers (id, name) TO STDOUT", Equality);
    let c = f.copy.unwrap();
    assert!(!c.csv);
    assert_eq!(c.delimiter, b'\t');
    assert_eq!(c.null, "\\N");
    assert_eq!(c.fields, vec![None, Some(Strategy::Redact)]);
    let f = allowed(
        "COPY customers TO STDOUT WITH (FORMAT csv, HEADER)",
        Equality,
    );
    let c = f.copy.unwrap();
    assert!(c.csv && c.header);
    assert_eq!(c.delimiter, b',');
    assert_eq!(
        c.fields,
        vec![
            None,
            Some(Strategy::Redact),
            Some(Strategy::Redact),
            Some(Strategy::Last4),
            Some(Strategy::Null),
            None
        ]
    );
    let f = allowed(
        "COPY (SELECT id, card FROM customers ORDER BY id) TO STDOUT (FORMAT csv, DELIMITER ';')",
        Equality,
    );
    let c = f.copy.unwrap();
    assert_eq!(c.delimiter, b';');
    assert_eq!(c.fields, vec![None, Some(Strategy::Last4)]);
    let f = allowed("COPY (SELECT * FROM customers) TO STDOUT", Equality);
    assert_eq!(f.copy.unwrap().fields.len(), 6);
    let f = allowed(
        "COPY (UPDATE customers SET note = 'x' RETURNING id, email) TO STDOUT",
        Equality,
    );
    assert_eq!(f.copy.unwrap().fields, vec![None, Some(Strategy::Redact)]);
    // Transformed, binary, or beside other statements: refused.
    refused("COPY (SELECT upper(name) FROM customers) TO STDOUT", Any);
    refused(
        "COPY (SELECT name FROM customers UNION SELECT 'x') TO STDOUT",
        Any,
    );
    refused("COPY customers (id, card) TO STDOUT (FORMAT binary)", Any);
    refused(
        "COPY (SELECT email FROM customers) TO STDOUT WITH BINARY",
        Any,
    );
    refused(
        "COPY customers TO STDOUT (FORMAT csv, ENCODING 'LATIN1')",
        Any,
    );
    refused("SELECT 1; COPY customers TO STDOUT", Any);
    assert!(allowed("COPY orders TO STDOUT", Refuse).copy.is_none());
}

#[test]
fn unparsable_text_is_an_error() {
    assert!(matches!(
        run("SELEC name FROM customers", Any),
        Err(ColumnError::Analyze(_))
    ));
}

#[test]
fn copy_rows_are_rewritten_field_by_field() {
    use crate::masking::Masked;
    let apply = |st: Strategy, v: &[u8]| match st {
        Strategy::Null => Masked::Null,
        _ => Masked::Value(format!("<{}>", String::from_utf8_lossy(v)).into_bytes()),
    };
    let f = allowed("COPY customers (id, name, ssn, note) TO STDOUT", Any);
    let c = f.copy.unwrap();
    let row = c
        .mask_row(b"1\tAna\\tB\\\\x\t078-05-1120\tn\\no\n", &apply)
        .unwrap()
        .unwrap();
    assert_eq!(row, b"1\t<Ana\\tB\\\\x>\t\\N\tn\\no\n");
    // NULLs stay NULL; nothing to change.
    assert_eq!(c.mask_row(b"2\t\\N\t\\N\tx\n", &apply).unwrap(), None);
    assert!(c.mask_row(b"1\t2\n", &apply).is_err());
    // Octal and hex escapes decode before masking.
    let row = c
        .mask_row(b"1\t\\101\\x42\t\\N\tx\n", &apply)
        .unwrap()
        .unwrap();
    assert_eq!(row, b"1\t<AB>\t\\N\tx\n");

    let f = allowed(
        "COPY customers (id, name, note) TO STDOUT (FORMAT csv)",
        Any,
    );
    let c = f.copy.unwrap();
    let row = c
        .mask_row(b"1,\"A, \"\"q\"\"\",note\n", &apply)
        .unwrap()
        .unwrap();
    assert_eq!(row, b"1,\"<A, \"\"q\"\">\",note\n");
    // Empty unquoted is NULL in CSV; quoted empty is a value.
    assert_eq!(c.mask_row(b"1,,x\n", &apply).unwrap(), None);
    let row = c.mask_row(b"1,\"\",x\n", &apply).unwrap().unwrap();
    assert_eq!(row, b"1,\"<>\",x\n");
    assert!(c.mask_row(b"1,\"open,x\n", &apply).is_err());
    let f = allowed(
        "COPY customers (id, email) TO STDOUT (FORMAT csv, DELIMITER '|', QUOTE '''', ESCAPE '\\', NULL 'NULL')",
        Any,
    );
    let c = f.copy.unwrap();
    let row = c.mask_row(b"1|'a\\'b'\n", &apply).unwrap().unwrap();
    assert_eq!(row, b"1|'<a\\'b>'\n");
    assert_eq!(c.mask_row(b"1|NULL\n", &apply).unwrap(), None);
}

#[test]
fn more_forms_of_select_and_dml() {
    for sql in [
        "TABLE customers",
        "SELECT name FROM ONLY customers",
        "SELECT name FROM customers TABLESAMPLE SYSTEM (50)",
        "SELECT c1.name, c2.email FROM customers c1 JOIN customers c2 ON c1.id = c2.id",
        "SELECT email FROM customers WHERE id IN (SELECT customer_id FROM orders)",
        "SELECT DISTINCT ON (id) name FROM customers ORDER BY id",
        "SELECT \"name\" FROM \"customers\"",
        "SELECT NAME FROM CUSTOMERS",
        "SELECT email FROM customers WHERE id = 1 FOR UPDATE",
        "WITH o AS (SELECT customer_id FROM orders) SELECT c.email FROM customers c JOIN o ON o.customer_id = c.id",
        "SELECT c.email FROM customers c LEFT JOIN LATERAL (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) n ON true",
        "MERGE INTO customers c USING orders o ON o.customer_id = c.id WHEN MATCHED THEN UPDATE SET note = o.note",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM customers",
    ] {
        allowed(sql, Refuse);
    }
    for sql in [
        "SELECT id FROM customers GROUP BY ROLLUP (email)",
        "SELECT id FROM customers WHERE (name, email) = ('a', 'b')",
        "SELECT id FROM customers c WHERE c = ROW(1, 'a', 'b', 'c', 'd', 'e')",
        "SELECT id FROM customers WHERE email = $1 OR email LIKE 'a%'",
        "SELECT name FROM customers GROUP BY name",
        "SELECT ntile(4) OVER (ORDER BY ssn) FROM customers",
        "SELECT id FROM customers WHERE card = ANY(SELECT card FROM customers)",
    ] {
        refused(sql, Equality);
        allowed(sql, Any);
    }
    for sql in [
        // The aggregate returns a card: its ORDER BY is its input.
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY card) FROM customers",
        "INSERT INTO orders (note) SELECT email FROM customers WHERE id = 1 RETURNING id",
        "SELECT * FROM customers c, LATERAL (SELECT c.card) x",
        "SELECT * FROM ROWS FROM (unnest(ARRAY[1]), generate_series(1, (SELECT length(name) FROM customers LIMIT 1))) r",
        "SELECT xmlserialize(content xmlelement(name e, email) AS text) FROM customers",
        "SELECT * FROM XMLTABLE('/a' PASSING ((SELECT email FROM customers LIMIT 1)::xml) COLUMNS x text)",
        "SELECT string_agg(id::text, ',' ORDER BY email) FROM customers",
        "SELECT email FROM customers UNION ALL SELECT 'x' ORDER BY 1",
        "DECLARE c CURSOR FOR SELECT * FROM (SELECT email FROM customers) s",
        "SELECT name FROM customers EXCEPT ALL SELECT name FROM customers WHERE id = 1",
    ] {
        for mode in [Refuse, Equality, Any] {
            let e = refused(sql, mode);
            assert!(e.contains("masked column"), "{sql}: {e}");
        }
    }
}

#[test]
fn writes_to_a_table_with_masked_columns_withhold_the_servers_texts() {
    for sql in [
        "UPDATE customers SET name = 'x' WHERE id = 1",
        "UPDATE customers SET note = 'x' WHERE id = 1",
        "INSERT INTO customers (id, name, email) VALUES (1, $1, $2)",
        "INSERT INTO customers (id, email) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
        "DELETE FROM customers WHERE id = 1",
        "MERGE INTO customers c USING orders o ON o.customer_id = c.id WHEN MATCHED THEN DELETE",
        "UPDATE staff SET note = 'x'",
    ] {
        let f = allowed(sql, Refuse);
        assert!(f.reads_masked(), "{sql}");
        assert!(
            f.masked.iter().any(|m| m.starts_with("writes ")),
            "{sql}: {f:?}"
        );
    }
    assert!(!allowed("UPDATE orders SET note = 'x'", Refuse).reads_masked());
}

#[test]
#[ignore = "needs WARDEN_REGRESS_SQL (a directory of .sql files)"]
fn the_regression_suite_analyses_without_panics() {
    let dir = std::env::var("WARDEN_REGRESS_SQL").unwrap();
    let (mut n, mut refused_n, mut other) = (0, 0, Vec::new());
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(stmts) = pg_query::split_with_parser(&text) else {
            continue;
        };
        for s in stmts {
            n += 1;
            match run(s, Any) {
                Ok(_) => {}
                Err(ColumnError::MaskedUse { .. } | ColumnError::UnknownColumns { .. }) => {
                    refused_n += 1
                }
                Err(e) => other.push(format!("{}: {e}: {s}", path.display())),
            }
        }
    }
    eprintln!("{n} statements, {refused_n} refused, {} other", other.len());
    for o in other.iter().take(20) {
        eprintln!("{o}");
    }
}

#[test]
fn deep_statements_end_in_an_error_not_a_stack_overflow() {
    // Run where the proxy runs: a thread with a 2 MiB stack.
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let chain = format!(
                "SELECT id FROM customers WHERE id = 1{}",
                " + 1".repeat(20_000)
            );
            let nested = format!(
                "SELECT {}email{} FROM customers",
                "upper(".repeat(900),
                ")".repeat(900)
            );
            let subs = format!("SELECT {}1{}", "(SELECT ".repeat(300), ")".repeat(300));
            [chain, nested, subs]
                .iter()
                .map(|s| run(s, Any).is_ok())
                .collect::<Vec<_>>()
        })
        .unwrap();
    let r = h.join().expect("no stack overflow");
    assert_eq!(r.len(), 3);
}

#[test]
fn a_name_of_several_relations_is_judged_as_any_of_them() {
    let m = masker();
    let catalog = ColumnCatalog::new(
        "pii",
        vec![
            rel(
                "public",
                "customers",
                &["id", "name", "email", "card", "ssn", "note"],
                &m,
            ),
            rel("crm", "customers", &["id", "phone", "email"], &m),
        ],
        Some(m),
    );
    let ok = |sql: &str| {
        check(sql, &catalog, Equality).unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    let no = |sql: &str| {
        assert!(check(sql, &catalog, Any).is_err(), "{sql}");
    };
    ok("SELECT * FROM customers");
    ok("SELECT email, phone FROM customers");
    ok("SELECT upper(phone) FROM customers");
    ok("SELECT upper(name) FROM crm.customers c(i, name)");
    ok("COPY crm.customers (id, email) TO STDOUT");
    no("SELECT upper(email) FROM customers");
    no("SELECT upper(name) FROM customers");
    no("SELECT c FROM customers c");
    no("SELECT upper(phone) FROM customers c(i, phone)");
    no("COPY customers TO STDOUT");
    // Output positions are not known: ORDER BY 2 may be a masked column.
    assert!(check("SELECT * FROM customers ORDER BY 2", &catalog, Equality).is_err());
}

/// The select list of EXISTS is evaluated (aggregates, set-returning
/// functions, casts that fail, OFFSET...) and can decide whether a row
/// exists: every expression in it is a condition. Only bare column
/// references, which can neither fail nor change the rows, are left out.
#[test]
fn the_select_list_of_exists_is_a_condition() {
    let leaks = [
        "SELECT 1 WHERE EXISTS (SELECT string_agg(name, ',')::int FROM customers)",
        "SELECT 1 WHERE EXISTS (SELECT name::int FROM customers WHERE id = 2 OFFSET 0)",
        "SELECT c.id FROM customers c WHERE EXISTS (SELECT generate_series(1, CASE WHEN c.name LIKE 'B%' THEN 1 ELSE 0 END))",
        "SELECT c.id FROM customers c WHERE NOT EXISTS (SELECT CASE WHEN c.name LIKE 'A%' THEN 1/0 END OFFSET 0)",
        "SELECT EXISTS (SELECT length(name) FROM customers GROUP BY 1 HAVING count(*) > 0)",
        "SELECT id FROM orders ORDER BY EXISTS (SELECT upper(email) FROM customers OFFSET 0)",
        "SELECT 1 WHERE EXISTS (SELECT name FROM customers WHERE id = 1 INTERSECT SELECT 'Alice')",
        "SELECT 1 WHERE EXISTS (SELECT name FROM customers WHERE id = 1 EXCEPT SELECT 'Alice')",
        "SELECT 1 WHERE EXISTS (VALUES ((SELECT name FROM customers LIMIT 1)::int))",
    ];
    for sql in leaks {
        refused(sql, Refuse);
        refused(sql, Equality);
    }
    // A side channel inside EXISTS is one everywhere.
    let notify =
        "SELECT 1 WHERE EXISTS (SELECT pg_notify('leak', string_agg(name, ',')) FROM customers)";
    for mode in [Refuse, Equality, Any] {
        refused(notify, mode);
    }
    // Under "any" conditions are allowed, and reported: the server's texts
    // about them are withheld.
    let f = allowed(leaks[0], Any);
    assert!(
        f.masked.iter().any(|c| c.ends_with("customers.name")),
        "{f:?}"
    );
    // The usual forms stay allowed.
    for sql in [
        "SELECT id FROM customers c WHERE EXISTS (SELECT * FROM customers c2 WHERE c2.id = c.id)",
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)",
        "SELECT id FROM orders o WHERE NOT EXISTS (SELECT c.name, c.email FROM customers c WHERE c.id = o.customer_id)",
    ] {
        allowed(sql, Refuse);
    }
}

/// COPY rows of masked columns are masked by position: every option that
/// changes how a row splits must be one the masker reads exactly.
#[test]
fn copy_options_that_change_how_rows_split_are_refused() {
    for sql in [
        // A NULL marker with a backslash swallows the next delimiter.
        r"COPY (SELECT (ROW('a'::text, 'b'::text)).*, name, NULL::text, 'x' FROM customers) TO STDOUT (NULL '\')",
        // A chosen NULL marker: a value equal to it passes as NULL.
        "COPY (SELECT id, name FROM customers) TO STDOUT (NULL 'Alice Anderson')",
        "COPY customers (id, email) TO STDOUT (FORMAT csv, FORCE_NOT_NULL (email))",
        "COPY customers (id, email) TO STDOUT (SOME_FUTURE_OPTION 'x')",
    ] {
        refused(sql, Any);
    }
    // The defaults, spelled out, and CSV quoting stay allowed.
    for sql in [
        r"COPY customers (id, name) TO STDOUT (NULL '\N')",
        "COPY customers TO STDOUT (FORMAT csv, NULL '')",
        "COPY customers TO STDOUT (FORMAT csv, NULL 'x')",
        "COPY customers TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
        "COPY customers (id, name) TO STDOUT (FORMAT csv, FORCE_QUOTE (name), HEADER)",
    ] {
        assert!(allowed(sql, Equality).copy.is_some(), "{sql}");
    }
}
