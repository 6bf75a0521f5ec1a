//! The PostgreSQL proxy in process: `warden::proxy::postgres::serve` behind a
//! loopback listener in the test process, in front of the harness's real
//! PostgreSQL 15 (SCRAM, md5 and cleartext roles; TLS upstream with
//! verify-full). No eBPF or cgroups: each listener stands for one account,
//! as the kernel's redirect would. Clients are tokio-postgres (binary
//! results, extended protocol) and a raw wire client built on Warden's own
//! codec for what real clients never send (malformed messages, Execute
//! without Describe, foreign cancel keys).
//!
//! `cargo test -p warden --test pg_proxy -- --test-threads=1` (root: the
//! upstream socket carries Warden's SO_MARK).

mod common;

include!("common/pg_proxy_harness.rs");

fn to_msg(frame: &Frame) -> Msg {
    match BackendMessage::parse(frame).unwrap() {
        BackendMessage::ErrorResponse(f) => Msg::Error {
            code: f.get(b'C').unwrap_or("").to_owned(),
            message: f.get(b'M').unwrap_or("").to_owned(),
            severity: f.get(b'S').unwrap_or("").to_owned(),
        },
        BackendMessage::DataRow { values } => {
            Msg::Row(values.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
        }
        BackendMessage::ReadyForQuery { status } => Msg::Ready(status),
        BackendMessage::NotificationResponse {
            channel, payload, ..
        } => Msg::Notification {
            channel: channel.to_owned(),
            payload: payload.to_owned(),
        },
        BackendMessage::BackendKeyData {
            process_id,
            secret_key,
        } => Msg::Key {
            process_id,
            secret_key: secret_key.to_vec(),
        },
        BackendMessage::CopyData(d) => Msg::CopyData(d.to_vec()),
        BackendMessage::NoticeResponse(f) => Msg::Notice {
            message: f.get(b'M').unwrap_or("").to_owned(),
        },
        BackendMessage::FunctionCallResponse { value } => {
            Msg::FunctionResult(value.map(<[u8]>::to_vec))
        }
        _ => Msg::Other(frame.tag),
    }
}

fn errors(msgs: &[Msg]) -> Vec<(String, String, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Error {
                code,
                message,
                severity,
            } => Some((severity.clone(), code.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

fn rows(msgs: &[Msg]) -> Vec<Vec<Option<Vec<u8>>>> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Row(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn text(v: &Option<Vec<u8>>) -> String {
    v.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "NULL".into())
}

/// Every sensitive value of the data set that must never come out masked
/// grants.
fn assert_no_pii(what: &str, s: &str) {
    for c in pg::CUSTOMERS {
        assert!(!s.contains(c.email), "{what}: email leaked: {s}");
        assert!(!s.contains(c.card), "{what}: card leaked: {s}");
        assert!(!s.contains(c.ssn), "{what}: ssn leaked: {s}");
    }
}

/// Any value's bytes, as the server sent them (binary format through
/// tokio-postgres).
#[derive(Debug, PartialEq)]
struct RawValue(Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// 1. tokio-postgres
// ---------------------------------------------------------------------------

#[test]
fn tokio_postgres_binary_results_parameters_prepared_and_transactions() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        // Binary results and a parameter.
        let row = c
            .query_one(
                "SELECT id, customer_id, note, amount::float8 FROM orders WHERE id = $1",
                &[&1i32],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, i32>(1), pg::ORDERS[0].0);
        assert_eq!(row.get::<_, String>(2), pg::ORDERS[0].2);
        assert_eq!(
            row.get::<_, f64>(3),
            pg::ORDERS[0].1.parse::<f64>().unwrap()
        );
        // A prepared statement reused: masked by column rule (card, last 4
        // kept) and pattern (email) on every execution, although
        // tokio-postgres never describes the portal it executes.
        let st = c
            .prepare("SELECT name, email, card, ssn FROM customers WHERE id = $1")
            .await
            .unwrap();
        for (i, cust) in pg::CUSTOMERS.iter().enumerate() {
            let row = c.query_one(&st, &[&(i as i32 + 1)]).await.unwrap();
            let (name, email, card, ssn): (String, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            assert_eq!(name, cust.name);
            assert_ne!(email, cust.email);
            assert!(!email.contains(cust.email), "{email}");
            assert_ne!(card, cust.card);
            assert!(card.ends_with(&cust.card[cust.card.len() - 4..]), "{card}");
            assert_ne!(ssn, cust.ssn);
        }
        // Transactions: commit and rollback.
        let mut c = c;
        let tx = c.transaction().await.unwrap();
        let n: i64 = tx
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, pg::ORDERS.len() as i64);
        tx.commit().await.unwrap();
        // A refused statement inside a transaction: 42501, and the session
        // goes on.
        let tx = c.transaction().await.unwrap();
        tx.query_one("SELECT 1", &[]).await.unwrap();
        let e = tx.execute("DELETE FROM orders", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert!(message(&e).contains("Warden"), "{e:?}");
        // As after any error, the transaction is aborted.
        let e = tx.query_one("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "25P02", "{e:?}");
        tx.rollback().await.unwrap();
        let e = c.simple_query("SELECT * FROM secrets").await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        assert_eq!(
            pg.psql_ok(pg::SUPERUSER, pg::DB, "SELECT count(*) FROM orders"),
            pg::ORDERS.len().to_string()
        );
        drop(c);
        // The audit trail has the statements, masked, with decisions.
        let stmts = p.statements(8).await;
        let delete = stmts
            .iter()
            .find(|s| sql_of(s) == "DELETE FROM orders")
            .unwrap_or_else(|| panic!("no DELETE: {stmts:#?}"));
        assert!(refused(delete));
        let dump = serde_json::to_string(&stmts).unwrap();
        assert_no_pii("audit", &dump);
        let masked: u64 = stmts
            .iter()
            .filter_map(|s| s.result.as_ref()?.values_masked)
            .sum();
        assert!(masked >= 3 * pg::CUSTOMERS.len() as u64, "{masked}");
    });
}

#[test]
fn execute_without_describe_is_masked_by_column_and_pattern() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        for format in [0i16, 1] {
            let mut b = BytesMut::new();
            frontend::parse(
                &mut b,
                "s1",
                "SELECT email, card FROM customers ORDER BY id",
                &[],
            )
            .unwrap();
            frontend::bind(&mut b, "", "s1", &[], &[], &[format]).unwrap();
            frontend::execute(&mut b, "", 0).unwrap();
            // A named portal, executed in two steps.
            frontend::bind(&mut b, "p2", "s1", &[], &[], &[format]).unwrap();
            frontend::execute(&mut b, "p2", 2).unwrap();
            frontend::execute(&mut b, "p2", 0).unwrap();
            frontend::close(&mut b, frontend::Target::Statement, "s1").unwrap();
            frontend::sync(&mut b);
            r.send(&b).await;
            let msgs = r.until_ready().await;
            let rows = rows(&msgs);
            assert_eq!(rows.len(), 2 * pg::CUSTOMERS.len(), "{msgs:?}");
            for (i, row) in rows.iter().enumerate() {
                let c = pg::CUSTOMERS[i % pg::CUSTOMERS.len()];
                let (email, card) = (text(&row[0]), text(&row[1]));
                assert_ne!(email, c.email, "format {format}");
                assert_ne!(card, c.card, "format {format}");
                assert!(card.ends_with(&c.card[c.card.len() - 4..]), "{card}");
            }
            assert!(errors(&msgs).is_empty(), "{msgs:?}");
        }
    });
}

// ---------------------------------------------------------------------------
// 2. Differential: direct vs through Warden (allow-all, no masking)
// ---------------------------------------------------------------------------

const CORPUS: &[&str] = &[
    "SELECT 1",
    "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c",
    "SELECT (-2147483648)::int4, 9223372036854775807::int8",
    "SELECT 9223372036854775807::int8 + 1",
    "SELECT 12345.6789::numeric, 'NaN'::numeric, 1e-20::numeric, -0.5::numeric(10,3)",
    "SELECT 3.14::float4, 2.718281828459045::float8, 'Infinity'::float8, '-0'::float8",
    "SELECT 'hello'::text, ''::text, 'with ''quote''', E'line1\\nline2\\ttab'",
    "SELECT 'ünïcødé ✓ 日本語 🙂' AS u, length('🙂'), upper('straße')",
    "SELECT '\\x00ff10'::bytea, ''::bytea, decode('deadbeef', 'hex')",
    "SELECT '{\"a\":1,\"b\":[1,2,null],\"c\":\"é\"}'::json",
    "SELECT '{\"b\":2,\"a\":1,\"n\":null}'::jsonb, '[]'::jsonb",
    "SELECT ARRAY[1,2,3], ARRAY['a','b',NULL], '{}'::int[]",
    "SELECT ARRAY[[1,2],[3,4]], ARRAY[1.5,2.5]::float8[]",
    "SELECT '2024-02-29 12:34:56.789'::timestamp, '2024-02-29 12:34:56+02'::timestamptz",
    "SELECT '2024-01-01'::date, '12:00:01.5'::time, '1 day 2 hours'::interval, 'infinity'::timestamp",
    "SELECT NULL, NULL::int, NULL::text, NULL::bytea",
    "SELECT true, false, NULL::bool, 'a' = 'a', 2 > 1",
    "SELECT * FROM orders ORDER BY id",
    "SELECT * FROM customers ORDER BY id",
    "SELECT * FROM customers WHERE false",
    "SELECT id FROM orders WHERE id > 1000",
    "SELECT 1/0",
    "SELECT 'abc'::int",
    "SELECT * FROM no_such_table",
    "SELECT no_such_column FROM orders",
    "SELECT 1; SELECT 2",
    "SELECT 1 AS a; SELECT 'x' AS b, 2 AS c; SELECT * FROM orders WHERE id = 1",
    "SELECT 1; SELECT 1/0; SELECT 3",
    "SELECT generate_series(1, 1000)",
    "SELECT g, g * g, md5(g::text) FROM generate_series(1, 200) g",
    "SELECT count(*), sum(amount), avg(amount), max(note) FROM orders",
    "SELECT customer_id, count(*) FROM orders GROUP BY customer_id ORDER BY 1",
    "SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.id",
    "WITH t AS (SELECT 1 AS x UNION ALL SELECT 2) SELECT x FROM t ORDER BY x",
    "SELECT '00000000-0000-0000-0000-000000000001'::uuid",
    "SELECT '192.168.0.1/24'::inet, '08:00:2b:01:02:03'::macaddr",
    "SELECT 'a'::char(3), 'b'::varchar(5), 'nm'::name, 'x'::\"char\"",
    "SELECT repeat('x', 100000)",
    "SELECT row(1, 'a'), '(1,2)'::point, '[1,5)'::int4range",
    "SELECT to_json(c) FROM customers c ORDER BY id",
    "VALUES (1, 'one'), (2, 'two')",
    "SELECT 'x' || NULL, coalesce(NULL, 'y'), nullif(1, 1)",
    "SELECT pg_typeof(1.5), pg_typeof(ARRAY[1])",
    "SELECT current_database(), current_user",
    "SELECT 1 WHERE 1 = 2",
    "SELECT string_agg(name, ',' ORDER BY id) FROM customers",
    "SELECT * FROM (SELECT id, note FROM orders) s WHERE note LIKE '%o%' ORDER BY id",
    "SELECT 'a' LIKE 'b' ESCAPE '!'",
    "SELECT 1::bit(3), B'101'::varbit, 'abc'::tsvector",
    "SELECT '1 2'::int2vector, 42::oid, 'pg_class'::regclass",
];

fn simple_summary(r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>) -> Vec<String> {
    match r {
        Err(e) => vec![format!("ERROR {}", sqlstate(&e))],
        Ok(msgs) => msgs
            .iter()
            .map(|m| match m {
                SimpleQueryMessage::Row(row) => {
                    let cols: Vec<String> = row
                        .columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{}={:?}", c.name(), row.get(i)))
                        .collect();
                    format!("ROW {}", cols.join(" "))
                }
                SimpleQueryMessage::CommandComplete(n) => format!("COMPLETE {n}"),
                SimpleQueryMessage::RowDescription(cols) => format!(
                    "DESC {:?}",
                    cols.iter().map(|c| c.name().to_owned()).collect::<Vec<_>>()
                ),
                other => format!("OTHER {other:?}"),
            })
            .collect(),
    }
}

fn typed_summary(r: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> Vec<String> {
    match r {
        Err(e) => vec![format!("ERROR {}", sqlstate(&e))],
        Ok(rows) => rows
            .iter()
            .map(|row| {
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let t = c.type_();
                        let v = typed_value(row, i, t);
                        format!("{}:{}={v}", c.name(), t.name())
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
    }
}

/// A value decoded by its type where tokio-postgres knows the type, else its
/// raw binary bytes (both sides decode the same way).
fn typed_value(row: &tokio_postgres::Row, i: usize, t: &Type) -> String {
    fn get<'a, T: FromSql<'a> + std::fmt::Debug>(row: &'a tokio_postgres::Row, i: usize) -> String {
        match row.try_get::<_, Option<T>>(i) {
            Ok(v) => format!("{v:?}"),
            Err(_) => format!("raw {:?}", row.get::<_, Option<RawValue>>(i)),
        }
    }
    match *t {
        Type::INT2 => get::<i16>(row, i),
        Type::INT4 => get::<i32>(row, i),
        Type::INT8 => get::<i64>(row, i),
        Type::FLOAT4 => get::<f32>(row, i),
        Type::FLOAT8 => get::<f64>(row, i),
        Type::BOOL => get::<bool>(row, i),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
            get::<String>(row, i)
        }
        Type::BYTEA => get::<Vec<u8>>(row, i),
        Type::INT4_ARRAY => get::<Vec<Option<i32>>>(row, i),
        Type::TEXT_ARRAY => get::<Vec<Option<String>>>(row, i),
        _ => get::<RawValue>(row, i),
    }
}

#[test]
fn differential_corpus_gives_identical_results_direct_and_through_warden() {
    assert!(CORPUS.len() >= 40);
    run(|pg| async move {
        let p = Proxy::start(pg, Spec::default()).await;
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let warden = p.connect().await;
        let mut differences = Vec::new();
        let mut typed_runs = 0;
        for sql in CORPUS {
            let a = simple_summary(direct.simple_query(sql).await);
            let b = simple_summary(warden.simple_query(sql).await);
            if a != b {
                differences.push(format!("simple {sql}\n  direct: {a:?}\n  warden: {b:?}"));
            }
            if !sql.contains("; ") {
                typed_runs += 1;
                let a = typed_summary(direct.query(*sql, &[]).await);
                let b = typed_summary(warden.query(*sql, &[]).await);
                if a != b {
                    differences.push(format!("typed {sql}\n  direct: {a:?}\n  warden: {b:?}"));
                }
            }
        }
        // The comparison is not vacuous: the corpus has rows and errors.
        let all = simple_summary(direct.simple_query("SELECT * FROM orders").await);
        assert_eq!(all.iter().filter(|l| l.starts_with("ROW")).count(), 6);
        assert!(typed_runs >= 40, "{typed_runs}");
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        // Through Warden every statement was audited.
        drop(warden);
        let stmts = p.statements(CORPUS.len()).await;
        assert!(stmts.len() >= CORPUS.len(), "{}", stmts.len());
    });
}

// ---------------------------------------------------------------------------
// 3. COPY
// ---------------------------------------------------------------------------

#[test]
fn copy_out_is_pattern_masked() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        let sql = "COPY (SELECT id, name, email, card, ssn FROM customers ORDER BY id) TO STDOUT";
        let stream = c.copy_out(sql).await.unwrap();
        let mut stream = std::pin::pin!(stream);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        let out = String::from_utf8(data).unwrap();
        assert_eq!(out.lines().count(), pg::CUSTOMERS.len(), "{out}");
        for (line, cust) in out.lines().zip(pg::CUSTOMERS) {
            assert!(line.contains(cust.name), "{line}");
        }
        assert_no_pii("COPY out", &out);
        // Direct, the same COPY carries the values (the check can fail).
        let d = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let rows = d.simple_query("SELECT email FROM customers").await.unwrap();
        assert!(rows.len() > pg::CUSTOMERS.len());
    });
}

#[test]
fn copy_from_stdin_needs_a_write_grant() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.copy_in; \
             CREATE TABLE public.copy_in (id int, note text); \
             GRANT SELECT, INSERT ON public.copy_in TO orders_rw, orders_ro",
        );
        let count = || pg.psql_ok(pg::SUPERUSER, pg::DB, "SELECT count(*) FROM public.copy_in");
        // Read-write role and a policy that allows writes: copied.
        let rw = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: READ_WRITE,
                ..Spec::default()
            },
        )
        .await;
        let c = rw.connect().await;
        let sink = c.copy_in("COPY public.copy_in FROM STDIN").await.unwrap();
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from_static(b"1\thello\n2\tworld\n"))
            .await
            .unwrap();
        sink.send(bytes::Bytes::from_static(b"3\t\\N\n"))
            .await
            .unwrap();
        let n = sink.as_mut().finish().await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(count(), "3");
        // The session goes on after COPY.
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        // Read-only policy: refused before any data reaches the server.
        let ro = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RO,
                policy: READ_ONLY,
                ..Spec::default()
            },
        )
        .await;
        let c = ro.connect().await;
        let e = match c
            .copy_in::<_, bytes::Bytes>("COPY public.copy_in FROM STDIN")
            .await
        {
            Ok(sink) => {
                let mut sink = std::pin::pin!(sink);
                let _ = sink.send(bytes::Bytes::from_static(b"9\tno\n")).await;
                sink.as_mut().finish().await.unwrap_err()
            }
            Err(e) => e,
        };
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert_eq!(count(), "3");
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.copy_in");
    });
}

// ---------------------------------------------------------------------------
// 4. LISTEN/NOTIFY
// ---------------------------------------------------------------------------

#[test]
fn notification_payloads_are_masked() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: ALLOW_ALL,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r.query("LISTEN warden_chan").await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let payload = format!(
            "contact {} card {}",
            pg::CUSTOMERS[0].email,
            pg::CUSTOMERS[0].card
        );
        direct
            .simple_query(&format!("NOTIFY warden_chan, {}", pg::lit(&payload)))
            .await
            .unwrap();
        let got = loop {
            match r.recv().await {
                Some(Msg::Notification { channel, payload }) => break (channel, payload),
                Some(_) => {}
                None => panic!("closed before the notification"),
            }
        };
        assert_eq!(got.0, "warden_chan");
        assert!(got.1.starts_with("contact "), "{}", got.1);
        assert_no_pii("notification", &got.1);
        // A payload without sensitive values passes unchanged.
        direct
            .simple_query("NOTIFY warden_chan, 'plain words'")
            .await
            .unwrap();
        let got = loop {
            if let Some(Msg::Notification { payload, .. }) = r.recv().await {
                break payload;
            }
        };
        assert_eq!(got, "plain words");
    });
}

// ---------------------------------------------------------------------------
// 5. Cancel with a foreign or wrong key
// ---------------------------------------------------------------------------

async fn send_cancel(addr: SocketAddr, process_id: i32, secret_key: Vec<u8>) {
    let mut r = Raw::tcp(addr).await;
    let mut b = BytesMut::new();
    CancelRequest {
        process_id,
        secret_key,
    }
    .encode(&mut b)
    .unwrap();
    r.send(&b).await;
    // The proxy closes without an answer, as PostgreSQL does.
    assert!(r.until_closed().await.is_empty());
}

#[test]
fn cancel_requests_only_cancel_with_the_sessions_own_key_and_account() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                accounts: &["app", "other"],
                ..Spec::default()
            },
        )
        .await;
        let (mut a, pid, key) = Raw::session(p.addr()).await;
        let sleep = {
            let mut b = BytesMut::new();
            frontend::query(&mut b, "SELECT pg_sleep(2)").unwrap();
            b
        };
        // Wrong key, and the right key from another account: nothing is
        // cancelled, the sleep runs its course.
        a.send(&sleep).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let mut wrong = key.clone();
        wrong[0] ^= 0xff;
        send_cancel(p.addrs["app"], pid, wrong).await;
        send_cancel(p.addrs["app"], pid.wrapping_add(1), key.clone()).await;
        send_cancel(p.addrs["other"], pid, key.clone()).await;
        let msgs = a.until_ready().await;
        assert!(
            errors(&msgs).is_empty(),
            "cancelled by a foreign key: {msgs:?}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t.elapsed()
        );
        // The session's own key, from its own account, cancels.
        a.send(&sleep).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        send_cancel(p.addrs["app"], pid, key.clone()).await;
        let msgs = a.until_ready().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "57014", "{errs:?}");
        assert!(
            errs[0]
                .2
                .contains("canceling statement due to user request")
        );
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // The key Warden handed out is not the upstream's.
        let upstream_pids = pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "SELECT string_agg(pid::text, ',') FROM pg_stat_activity",
        );
        assert!(
            !upstream_pids.split(',').any(|x| x == pid.to_string()),
            "{upstream_pids} / {pid}"
        );
        let msgs = a.query("SELECT 1").await;
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
    });
}

#[test]
fn a_session_opened_before_a_reload_can_still_be_cancelled() {
    run(|pg| async move {
        let p = Proxy::start(pg, Spec::default()).await;
        let (mut a, pid, key) = Raw::session(p.addr()).await;
        p.reload();
        let mut sleep = BytesMut::new();
        frontend::query(&mut sleep, "SELECT pg_sleep(5)").unwrap();
        a.send(&sleep).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        // Served by the new runtime.
        send_cancel(p.addr(), pid, key).await;
        let msgs = a.until_ready().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "57014", "{errs:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // The session goes on.
        let msgs = a.query("SELECT 1").await;
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
    });
}

// ---------------------------------------------------------------------------
// 6. Upstream authentication methods and credential problems
// ---------------------------------------------------------------------------

#[test]
fn md5_and_cleartext_upstream_roles_work() {
    run(|pg| async move {
        for (role, method) in [(pg::MD5_USER, "md5"), (pg::PLAIN_USER, "password")] {
            let p = Proxy::start(
                pg,
                Spec {
                    role,
                    ..Spec::default()
                },
            )
            .await;
            let c = p.connect().await;
            let who: String = c
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(who, role);
            let n: i64 = c
                .query_one("SELECT count(*) FROM orders", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, pg::ORDERS.len() as i64);
            assert!(
                pg.wait_log(&format!("identity=\"{role}\" method={method}")),
                "the server did not log {method} authentication for {role}"
            );
        }
    });
}

#[test]
fn a_wrong_or_exposed_password_file_is_refused_with_a_fatal_naming_warden() {
    run(|pg| async move {
        // Wrong password: the upstream refuses, the client gets a FATAL
        // that names Warden, and the close says why.
        let p = Proxy::start(
            pg,
            Spec {
                password: Some("not-the-password"),
                ..Spec::default()
            },
        )
        .await;
        let (mut r, msgs) =
            Raw::startup(p.addr(), &[("user", "workload"), ("database", pg::DB)]).await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].0, "FATAL");
        assert!(errs[0].2.contains("Warden"), "{errs:?}");
        assert!(!errs[0].2.contains("not-the-password"), "{errs:?}");
        assert!(r.until_closed().await.is_empty());
        let e = p.ended(r.port()).await;
        assert_eq!(
            e.reason.as_deref(),
            Some("upstream_connect_failed"),
            "{e:?}"
        );
        let detail = e.detail.unwrap_or_default();
        assert!(
            detail.contains("28P01") && detail.contains("password authentication failed"),
            "{detail}"
        );
        // tokio-postgres sees the same.
        let err = tokio_postgres::connect(&p.conn_string(), NoTls)
            .await
            .err()
            .unwrap();
        assert!(message(&err).contains("Warden"), "{err:?}");

        // A password file group or others can read: refused before any
        // upstream connection.
        let p = Proxy::start(
            pg,
            Spec {
                password_mode: 0o644,
                ..Spec::default()
            },
        )
        .await;
        let (mut r, msgs) =
            Raw::startup(p.addr(), &[("user", "workload"), ("database", pg::DB)]).await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].0, "FATAL");
        assert!(errs[0].2.contains("Warden"), "{errs:?}");
        assert!(r.until_closed().await.is_empty());
        let e = p.ended(r.port()).await;
        assert_eq!(e.reason.as_deref(), Some("credential_unusable"), "{e:?}");
        assert!(e.detail.unwrap_or_default().contains("644"));
    });
}

// ---------------------------------------------------------------------------
// 9. Malformed messages
// ---------------------------------------------------------------------------

/// Sends `bytes` after a valid startup; the session must end with an
/// ErrorResponse and/or a close, never a panic, and promptly.
async fn after_startup(p: &Proxy, bytes: &[u8], close_write: bool) -> (Vec<Msg>, Ended) {
    let (mut r, _, _) = Raw::session(p.addr()).await;
    r.send(bytes).await;
    if close_write {
        r.tcp.shutdown().await.unwrap();
    }
    let t = Instant::now();
    let msgs = r.until_closed().await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let e = p.ended(r.port()).await;
    (msgs, e)
}

fn header(tag: u8, len: u32) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn malformed_messages_end_in_an_error_or_a_close_never_a_panic() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                target_extra: "max_message_bytes = 65536",
                ..Spec::default()
            },
        )
        .await;
        let fatal_08p01 = |what: &str, msgs: &[Msg]| {
            let errs = errors(msgs);
            assert_eq!(errs.len(), 1, "{what}: {msgs:?}");
            assert_eq!(errs[0].0, "FATAL", "{what}");
            assert_eq!(errs[0].1, "08P01", "{what}");
            assert!(errs[0].2.contains("Warden"), "{what}: {errs:?}");
        };
        // Length 0 (less than its own 4 bytes).
        let (msgs, e) = after_startup(&p, &header(b'Q', 0), false).await;
        fatal_08p01("length 0", &msgs);
        assert!(e.detail.is_some(), "{e:?}");
        // Negative length.
        let (msgs, _) = after_startup(&p, &header(b'Q', 0x8000_0000), false).await;
        fatal_08p01("negative length", &msgs);
        // Past max_message_bytes, and a 2 GiB declaration: refused from the
        // header alone, before any body is buffered (we never send one).
        // The limit is Warden's, named in a 54000 (program limit exceeded).
        for (what, len) in [("past the maximum", 65_537 + 4), ("2 GiB", 0x7fff_ffff)] {
            let (msgs, _) = after_startup(&p, &header(b'Q', len), false).await;
            let errs = errors(&msgs);
            assert_eq!(errs.len(), 1, "{what}: {msgs:?}");
            assert_eq!((errs[0].0.as_str(), errs[0].1.as_str()), ("FATAL", "54000"));
            assert!(errs[0].2.contains("max_message_bytes (65536)"), "{errs:?}");
        }
        // Just under the maximum is accepted (the limit is the configured one).
        let sql = format!("SELECT '{}'", "x".repeat(60_000));
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r.query(&sql).await;
        assert_eq!(rows(&msgs).len(), 1, "{:?}", errors(&msgs));
        // Truncated mid-message, then close: the session ends quietly.
        let mut b = header(b'Q', 100);
        b.extend_from_slice(b"SELECT 1");
        let (msgs, e) = after_startup(&p, &b, true).await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        assert_eq!(e.reason, None, "{e:?}");
        // Unknown message type.
        let (msgs, _) = after_startup(&p, &header(b'z', 4), false).await;
        fatal_08p01("unknown type", &msgs);
        // A known type with a body that does not parse (Bind with a count
        // past its end).
        let mut b = header(b'B', 4 + 2 + 2 + 2);
        b.extend_from_slice(&[0, 0, 0, 9, 0, 0]);
        let (msgs, _) = after_startup(&p, &b, false).await;
        fatal_08p01("bad Bind", &msgs);
        // A second startup packet after startup.
        let mut b = BytesMut::new();
        encode_ssl_request(&mut b);
        let (msgs, _) = after_startup(&p, &b, false).await;
        fatal_08p01("SSLRequest after startup", &msgs);

        // The startup packet itself.
        let startups: Vec<(&str, Vec<u8>)> = vec![
            ("length 0", 0u32.to_be_bytes().to_vec()),
            ("negative", 0x8000_0000u32.to_be_bytes().to_vec()),
            ("2 GiB", 0x7fff_ffffu32.to_be_bytes().to_vec()),
            ("bogus code", {
                let mut b = 8u32.to_be_bytes().to_vec();
                b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }),
            ("no terminator", {
                let mut b = 17u32.to_be_bytes().to_vec();
                b.extend_from_slice(&0x0003_0000u32.to_be_bytes());
                b.extend_from_slice(b"user\0abcd");
                b
            }),
            ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ];
        for (what, bytes) in startups {
            let mut r = Raw::tcp(p.addr()).await;
            r.send(&bytes).await;
            let t = Instant::now();
            let msgs = r.until_closed().await;
            assert!(t.elapsed() < Duration::from_secs(5), "{what}");
            assert!(
                !msgs
                    .iter()
                    .any(|m| matches!(m, Msg::Ready(_) | Msg::Row(_))),
                "{what}: {msgs:?}"
            );
            let e = p.ended(r.port()).await;
            assert_eq!(e.reason.as_deref(), Some("protocol_error"), "{what}: {e:?}");
        }
        // Truncated startup, then close.
        let mut r = Raw::tcp(p.addr()).await;
        r.send(&[0, 0, 0, 40, 0, 3]).await;
        r.tcp.shutdown().await.unwrap();
        assert!(r.until_closed().await.is_empty());
        let e = p.ended(r.port()).await;
        assert_eq!(e.reason.as_deref(), Some("protocol_error"), "{e:?}");
        assert!(p.any_panic().is_none());
    });
}

// ---------------------------------------------------------------------------
// 10. Startup checks
// ---------------------------------------------------------------------------

#[test]
fn startup_parameters_outside_the_grant_are_refused() {
    run(|pg| async move {
        let p = Proxy::start(pg, Spec::default()).await;
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("user", "w"), ("database", "postgres")], "\"postgres\""),
            (
                &[
                    ("user", "w"),
                    ("database", pg::DB),
                    ("options", "-c role=postgres"),
                ],
                "role",
            ),
            (
                &[
                    ("user", "w"),
                    ("database", pg::DB),
                    ("replication", "database"),
                ],
                "replication",
            ),
            (
                &[
                    ("user", "w"),
                    ("database", pg::DB),
                    ("options", "-c standard_conforming_strings=off"),
                ],
                "standard_conforming_strings",
            ),
        ];
        for (params, needle) in cases {
            let (mut r, msgs) = Raw::startup(p.addr(), params).await;
            let errs = errors(&msgs);
            assert_eq!(errs.len(), 1, "{params:?}: {msgs:?}");
            assert_eq!(errs[0].0, "FATAL", "{params:?}");
            assert!(errs[0].2.contains("Warden"), "{errs:?}");
            assert!(errs[0].2.contains(needle), "{params:?}: {errs:?}");
            assert!(!msgs.iter().any(|m| matches!(m, Msg::Ready(_))));
            assert!(r.until_closed().await.is_empty());
            let e = p.ended(r.port()).await;
            assert_eq!(e.reason.as_deref(), Some("startup_refused"), "{e:?}");
        }
        // The same through tokio-postgres, and the granted database works.
        let err = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=w dbname=postgres sslmode=disable",
                p.addr().port()
            ),
            NoTls,
        )
        .await
        .err()
        .unwrap();
        assert!(message(&err).contains("postgres"), "{err:?}");
        let c = p.connect().await;
        let db: String = c
            .query_one("SELECT current_database()::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(db, pg::DB);
    });
}

#[test]
fn a_refusal_in_a_pipeline_rolls_back_the_implicit_transaction_like_a_server_error() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.pipe_t; CREATE TABLE public.pipe_t (id int); \
             GRANT SELECT, INSERT ON public.pipe_t TO orders_rw",
        );
        let policy = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "block", tables = ["secrets"] },
]"#;
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy,
                ..Spec::default()
            },
        )
        .await;
        let count = || pg.psql_ok(pg::SUPERUSER, pg::DB, "SELECT count(*) FROM public.pipe_t");
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // INSERT, then a refused statement, one batch: as with a server
        // error, nothing of the batch commits.
        let mut b = BytesMut::new();
        frontend::parse(&mut b, "", "INSERT INTO public.pipe_t VALUES (1)", &[]).unwrap();
        frontend::bind(&mut b, "", "", &[], &[], &[]).unwrap();
        frontend::execute(&mut b, "", 0).unwrap();
        frontend::parse(&mut b, "", "SELECT * FROM secrets", &[]).unwrap();
        frontend::bind(&mut b, "", "", &[], &[], &[]).unwrap();
        frontend::execute(&mut b, "", 0).unwrap();
        frontend::sync(&mut b);
        r.send(&b).await;
        let msgs = r.until_ready().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "42501");
        assert!(matches!(msgs.last(), Some(Msg::Ready(b'I'))), "{msgs:?}");
        assert_eq!(count(), "0");
        // The same INSERT alone commits (the check can fail).
        let mut b = BytesMut::new();
        frontend::parse(&mut b, "", "INSERT INTO public.pipe_t VALUES (2)", &[]).unwrap();
        frontend::bind(&mut b, "", "", &[], &[], &[]).unwrap();
        frontend::execute(&mut b, "", 0).unwrap();
        frontend::sync(&mut b);
        r.send(&b).await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        assert_eq!(count(), "1");
        // In an explicit transaction (simple protocol): the refusal leaves
        // it aborted, ReadyForQuery says so, COMMIT rolls back.
        let msgs = r.query("BEGIN; INSERT INTO public.pipe_t VALUES (3)").await;
        assert!(matches!(msgs.last(), Some(Msg::Ready(b'T'))), "{msgs:?}");
        let msgs = r.query("SELECT * FROM secrets").await;
        assert_eq!(errors(&msgs)[0].1, "42501");
        assert!(matches!(msgs.last(), Some(Msg::Ready(b'E'))), "{msgs:?}");
        let msgs = r.query("COMMIT").await;
        assert!(matches!(msgs.last(), Some(Msg::Ready(b'I'))), "{msgs:?}");
        assert_eq!(count(), "1");
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.pipe_t");
    });
}

// ---------------------------------------------------------------------------
// Every detector in every message type that can carry data
// ---------------------------------------------------------------------------

/// Every statement class allowed: DO (for RAISE NOTICE) is privileged.
const ALLOW_EVERY_CLASS: &str = r#"default = "deny"
rules = [ { action = "allow", classes = ["read", "write", "ddl", "privileged"] } ]"#;

/// One sample per detector, and a piece of it that must not survive.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("card", "4111 1111 1111 1111", "4111 1111 1111"),
    ("email", "alice@example.com", "alice@example"),
    ("ssn", "123-45-6789", "123-45-6789"),
    ("iban", "DE89370400440532013000", "DE8937040044053201"),
    ("token", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
];

#[test]
fn every_detector_is_masked_in_every_message_type() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: ALLOW_EVERY_CLASS,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let client = p.connect().await;
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let msgs = r.query("LISTEN warden_detectors").await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        for (kind, sample, piece) in SAMPLES {
            let value = format!("value {sample} end");
            let check = |what: &str, got: &str| {
                assert!(
                    !got.contains(piece),
                    "{kind} in {what} was not masked: {got:?}"
                );
                assert!(got.contains("value "), "{kind} in {what}: {got:?}");
            };
            // DataRow, text format.
            let msgs = r.query(&format!("SELECT {}::text", pg::lit(&value))).await;
            let got = rows(&msgs);
            assert_eq!(got.len(), 1, "{msgs:?}");
            check("DataRow (text)", &text(&got[0][0]));
            // DataRow, binary format (tokio-postgres asks for binary results).
            let row = client
                .query_one("SELECT $1::text", &[&value])
                .await
                .unwrap();
            check("DataRow (binary)", row.get::<_, &str>(0));
            // CopyData out.
            let msgs = r
                .query(&format!(
                    "COPY (SELECT {}::text) TO STDOUT",
                    pg::lit(&value)
                ))
                .await;
            let copied: Vec<String> = msgs
                .iter()
                .filter_map(|m| match m {
                    Msg::CopyData(d) => Some(String::from_utf8_lossy(d).into_owned()),
                    _ => None,
                })
                .collect();
            assert_eq!(copied.len(), 1, "{msgs:?}");
            check("CopyData", &copied[0]);
            // ErrorResponse: the server quotes the bad input in its message.
            let msgs = r.query(&format!("SELECT {}::int", pg::lit(&value))).await;
            let errs = errors(&msgs);
            assert_eq!(errs.len(), 1, "{msgs:?}");
            assert_eq!(errs[0].1, "22P02", "{errs:?}");
            check("ErrorResponse", &errs[0].2);
            // NoticeResponse.
            let msgs = r
                .query(&format!(
                    "DO $$BEGIN RAISE NOTICE '%', {}; END$$",
                    pg::lit(&value)
                ))
                .await;
            let notices: Vec<String> = msgs
                .iter()
                .filter_map(|m| match m {
                    Msg::Notice { message } => Some(message.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(notices.len(), 1, "{msgs:?}");
            check("NoticeResponse", &notices[0]);
            // NotificationResponse.
            direct
                .simple_query(&format!("NOTIFY warden_detectors, {}", pg::lit(&value)))
                .await
                .unwrap();
            let payload = loop {
                match r.recv().await {
                    Some(Msg::Notification { payload, .. }) => break payload,
                    Some(_) => {}
                    None => panic!("closed before the notification"),
                }
            };
            check("NotificationResponse", &payload);
        }
    });
}

// ---------------------------------------------------------------------------
// FunctionCall (the fast-path interface libpq's large objects use)
// ---------------------------------------------------------------------------

async fn function_call(r: &mut Raw, oid: u32, args: &[&str]) -> Vec<Msg> {
    let mut b = BytesMut::new();
    let args: Vec<Option<&[u8]>> = args.iter().map(|a| Some(a.as_bytes())).collect();
    frontend::function_call(&mut b, oid, &[], &args, 0).unwrap();
    r.send(&b).await;
    r.until_ready().await
}

#[test]
fn function_calls_are_decided_by_name_and_their_results_masked() {
    run(|pg| async move {
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let oid_of = |sig: &'static str| {
            let direct = &direct;
            async move {
                let row = direct
                    .query_one(&format!("SELECT '{sig}'::regprocedure::oid"), &[])
                    .await
                    .unwrap();
                row.get::<_, u32>(0)
            }
        };
        let textcat = oid_of("textcat(text,text)").await;
        let lo_creat = oid_of("lo_creat(integer)").await;

        // Allowed: textcat(text, text) runs, its result is masked.
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(PII),
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = function_call(&mut r, textcat, &["plain ", "words"]).await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| matches!(m, Msg::FunctionResult(Some(v)) if v == b"plain words")),
            "{msgs:?}"
        );
        let msgs = function_call(&mut r, textcat, &["mail ", "alice@example.com"]).await;
        let result = msgs
            .iter()
            .find_map(|m| match m {
                Msg::FunctionResult(Some(v)) => Some(String::from_utf8_lossy(v).into_owned()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no FunctionCallResponse: {msgs:?}"));
        assert!(result.starts_with("mail "), "{result}");
        assert!(
            !result.to_lowercase().contains("alice@example.com"),
            "{result}"
        );

        // Refused by name: lo_creat is a large-object function.
        let msgs = function_call(&mut r, lo_creat, &["0"]).await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "42501", "{errs:?}");
        assert!(matches!(msgs.last(), Some(Msg::Ready(b'I'))), "{msgs:?}");
        // An oid that names no function is refused too (fail closed).
        let msgs = function_call(&mut r, 4_000_000_000, &[]).await;
        assert_eq!(
            errors(&msgs).first().map(|e| e.1.as_str()),
            Some("42501"),
            "{msgs:?}"
        );
        // The session is still usable.
        let msgs = r.query("SELECT 1").await;
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
        let stmts = p.statements(4).await;
        assert!(
            stmts
                .iter()
                .any(|s| sql_of(s).contains("lo_creat") && refused(s)),
            "{stmts:#?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Protocol fidelity: how a session ends, large messages, approvals per
// execution
// ---------------------------------------------------------------------------

#[test]
fn a_server_reported_tokenisation_change_ends_the_session_with_a_fatal_naming_it() {
    run(|pg| async move {
        let p = Proxy::start(pg, Spec::default()).await;
        // Named by a literal, the change is refused before it runs.
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r
            .query("SELECT set_config('client_encoding', 'LATIN1', false)")
            .await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "42501", "{errs:?}");
        assert_eq!(rows(&r.query("SELECT 1").await).len(), 1);
        drop(r);
        // Changed inside a function (or named at run time, also refused
        // now), Warden cannot know before the server reports it.
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "CREATE OR REPLACE FUNCTION public.warden_set_setting(n text, v text) RETURNS text \
             LANGUAGE sql AS $$ SELECT set_config(n, v, false) $$",
        );
        for (sql, setting, value) in [
            (
                "SELECT public.warden_set_setting('client_encoding', 'LATIN1')",
                "client_encoding",
                "LATIN1",
            ),
            (
                "SELECT public.warden_set_setting('standard_conforming_strings', 'off')",
                "standard_conforming_strings",
                "off",
            ),
        ] {
            let (mut r, _, _) = Raw::session(p.addr()).await;
            let mut b = BytesMut::new();
            frontend::query(&mut b, sql).unwrap();
            r.send(&b).await;
            let msgs = r.until_closed().await;
            // The statement ran: its row reaches the client, then a FATAL
            // error that names the setting, then the close.
            assert_eq!(rows(&msgs).len(), 1, "{sql}: {msgs:?}");
            let errs = errors(&msgs);
            assert_eq!(errs.len(), 1, "{sql}: {msgs:?}");
            assert_eq!(errs[0].0, "FATAL", "{errs:?}");
            assert!(
                errs[0].2.contains("Warden")
                    && errs[0].2.contains(setting)
                    && errs[0].2.contains(value),
                "{errs:?}"
            );
            assert!(
                matches!(msgs.last(), Some(Msg::Error { .. })),
                "nothing may follow the FATAL error: {msgs:?}"
            );
            let e = p.ended(r.port()).await;
            assert_eq!(e.reason.as_deref(), Some("session_error"), "{e:?}");
            assert!(e.detail.unwrap_or_default().contains(setting));
        }
        // Both statements have their result on record: the row, the tag and
        // why the session ended.
        let stmts = p.statements(4).await;
        let ran: Vec<_> = stmts
            .iter()
            .filter(|s| sql_of(s).contains("warden_set_setting"))
            .collect();
        assert_eq!(ran.len(), 2, "{stmts:#?}");
        for (s, setting) in ran
            .into_iter()
            .zip(["client_encoding", "standard_conforming_strings"])
        {
            let r = s
                .result
                .as_ref()
                .unwrap_or_else(|| panic!("no result event: {s:#?}"));
            assert_eq!(r.rows, Some(1), "{r:#?}");
            assert_eq!(r.command_tag.as_deref(), Some("SELECT 1"), "{r:#?}");
            assert!(
                r.error.as_deref().unwrap_or_default().contains(setting),
                "{r:#?}"
            );
        }
    });
}

/// Held by the tests that measure this process's peak memory: one at a
/// time, or each would see (and reset) the other's peak.
static MEMORY_TESTS: Mutex<()> = Mutex::new(());

/// Peak resident memory of this process (which runs Warden's sessions),
/// in KiB, after `reset` sets the peak back to the current size.
fn vm_hwm_kib(reset: bool) -> u64 {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
    }
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Masking with a column rule and no patterns: only rows with that column
/// need masking.
const CARD_COLUMN_ONLY: &str = r#"columns = [ { column = "customers.card", strategy = "last4" } ]"#;

#[test]
fn rows_over_max_message_bytes_stream_through_when_nothing_in_them_is_masked() {
    let _one = MEMORY_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run(|pg| async move {
        // 40 MB, over the default max_message_bytes of 16 MiB.
        const BIG: usize = 40_000_000;
        const GROWTH_KIB: u64 = 16 * 1024;
        let select = format!("SELECT 1 AS n, repeat('x', {BIG}) AS big");
        let copy = format!("COPY (SELECT repeat('x', {BIG})) TO STDOUT");
        for masking in [None, Some(CARD_COLUMN_ONLY)] {
            let p = Proxy::start(
                pg,
                Spec {
                    masking,
                    ..Spec::default()
                },
            )
            .await;
            let (mut r, _, _) = Raw::session(p.addr()).await;
            let before = vm_hwm_kib(true);
            // Simple query, extended protocol without Describe (Warden
            // injects one when the grant has masking), and COPY out.
            let mut q = BytesMut::new();
            frontend::query(&mut q, &select).unwrap();
            let mut ext = BytesMut::new();
            frontend::parse(&mut ext, "", &select, &[]).unwrap();
            frontend::bind(&mut ext, "", "", &[], &[], &[]).unwrap();
            frontend::execute(&mut ext, "", 0).unwrap();
            frontend::sync(&mut ext);
            let mut c = BytesMut::new();
            frontend::query(&mut c, &copy).unwrap();
            for (what, bytes, tag) in [
                ("query", &q, b'D'),
                ("extended", &ext, b'D'),
                ("copy", &c, b'd'),
            ] {
                r.send(bytes).await;
                let msgs = r.until_ready_streaming(1 << 20).await;
                assert!(errors(&msgs).is_empty(), "{what} {masking:?}: {msgs:?}");
                let big: Vec<_> = msgs
                    .iter()
                    .filter_map(|m| match m {
                        Msg::Big { tag, len, head } => Some((*tag, *len, head.clone())),
                        _ => None,
                    })
                    .collect();
                assert_eq!(big.len(), 1, "{what} {masking:?}: {msgs:?}");
                assert_eq!(big[0].0, tag, "{what}");
                assert!(big[0].1 > BIG, "{what}: {}", big[0].1);
                assert!(big[0].2.ends_with(b"xxxxxxxx"), "{what}: {:?}", big[0].2);
                assert!(matches!(msgs.last(), Some(Msg::Ready(b'I'))), "{msgs:?}");
            }
            let after = vm_hwm_kib(false);
            eprintln!("masking {masking:?}: peak memory {before} KiB before, {after} KiB after");
            assert!(
                after < before + GROWTH_KIB,
                "peak memory grew by {} KiB for 40 MB rows (masking {masking:?})",
                after - before
            );
            // The session goes on, and the statements are on record with
            // their row counts and a sample cut to a few hundred characters.
            let msgs = r.query("SELECT 2").await;
            assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
            let stmts = p.statements(4).await;
            let big: Vec<_> = stmts
                .iter()
                .filter(|s| sql_of(s).contains("repeat"))
                .collect();
            assert_eq!(big.len(), 3, "{stmts:#?}");
            for s in big {
                let res = s.result.as_ref().unwrap_or_else(|| panic!("{s:#?}"));
                assert_eq!(res.rows, Some(1), "{res:#?}");
                assert_eq!(res.error, None, "{res:#?}");
                // Execute without Describe on a grant without masking: the
                // columns (and so the sample) are not known.
                if sql_of(s).starts_with("SELECT") && res.via == "simple" {
                    let sample = &res.result.as_ref().unwrap().sample;
                    assert_eq!(sample.len(), 1, "{res:#?}");
                    assert_eq!(sample[0][0].as_deref(), Some("1"));
                    let v = sample[0][1].as_deref().unwrap();
                    assert!(v.len() <= 200 && v.chars().all(|c| c == 'x'), "{v}");
                }
            }
        }
    });
}

#[test]
fn rows_over_max_message_bytes_that_must_be_masked_end_the_session_naming_the_limit() {
    run(|pg| async move {
        const BIG: usize = 40_000_000;
        // Patterns apply to every text value: every text row must be read
        // whole. A column rule applies to the rows that carry its column.
        for (masking, sql) in [
            (PII, format!("SELECT repeat('x', {BIG})")),
            (
                CARD_COLUMN_ONLY,
                format!("SELECT card, repeat('x', {BIG}) FROM customers ORDER BY id LIMIT 1"),
            ),
        ] {
            let p = Proxy::start(
                pg,
                Spec {
                    masking: Some(masking),
                    ..Spec::default()
                },
            )
            .await;
            let (mut r, _, _) = Raw::session(p.addr()).await;
            let mut b = BytesMut::new();
            frontend::query(&mut b, &sql).unwrap();
            r.send(&b).await;
            let mut msgs = Vec::new();
            while let Some(m) = r.recv_streaming(1 << 20).await {
                msgs.push(m);
            }
            assert!(
                !msgs
                    .iter()
                    .any(|m| matches!(m, Msg::Big { .. } | Msg::Row(_))),
                "{sql}: no part of the row may reach the client: {msgs:?}"
            );
            let errs = errors(&msgs);
            assert_eq!(errs.len(), 1, "{sql}: {msgs:?}");
            assert_eq!((errs[0].0.as_str(), errs[0].1.as_str()), ("FATAL", "54000"));
            assert!(
                errs[0].2.contains("max_message_bytes") && errs[0].2.contains("16777216"),
                "{errs:?}"
            );
            let e = p.ended(r.port()).await;
            assert_eq!(e.reason.as_deref(), Some("session_error"), "{e:?}");
            let stmts = p.statements(1).await;
            let res = stmts[0]
                .result
                .as_ref()
                .unwrap_or_else(|| panic!("{stmts:#?}"));
            assert_eq!(res.sqlstate.as_deref(), Some("54000"), "{res:#?}");
            assert!(
                res.error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("max_message_bytes"),
                "{res:#?}"
            );
        }
    });
}

/// Code, message and position of an error as a client sees it.
fn server_error(e: &tokio_postgres::Error) -> (String, String, Option<String>) {
    let pos = e
        .as_db_error()
        .and_then(|d| d.position())
        .map(|p| format!("{p:?}"));
    (sqlstate(e), message(e), pos)
}

#[test]
fn statements_the_server_rejects_anyway_get_the_servers_own_error() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                ..Spec::default()
            },
        )
        .await;
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let through = p.connect().await;
        // Syntax errors (42601, the parser's message and position, counted
        // in characters) and EXECUTE of a statement never prepared (26000).
        let rejected = [
            "SELEC 1",
            "SELECT 1 FROM",
            "SELECT 'é', 'ü' FROM WHERE",
            "SELECT * FROM orders WHERE id = 1 ORDER",
            "SELECT 'unterminated",
            "SELECT 'ü', 1 /* open comment",
            "SELECT \"open identifier",
            "SELECT $$open dollar",
            "EXECUTE nosuch",
            "EXECUTE nosuch(1, 'x')",
            "SELECT 1; EXECUTE nosuch",
        ];
        for sql in rejected {
            let want = server_error(&direct.simple_query(sql).await.unwrap_err());
            let got = server_error(&through.simple_query(sql).await.unwrap_err());
            assert_eq!(got, want, "simple query {sql:?}");
            assert!(matches!(want.0.as_str(), "42601" | "26000"), "{want:?}");
        }
        // Parse of text the grammar rejects: the server's answer to Parse.
        for sql in ["SELEC $1", "SELECT 'é' FROM WHERE $1"] {
            let want = server_error(&direct.prepare(sql).await.unwrap_err());
            let got = server_error(&through.prepare(sql).await.unwrap_err());
            assert_eq!(got, want, "Parse {sql:?}");
        }
        // The session goes on, and a statement refused by the policy is
        // still the policy's 42501.
        let e = through
            .simple_query("DELETE FROM orders")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert!(message(&e).contains("Warden"), "{e:?}");
        through.simple_query("SELECT 1").await.unwrap();
        // On record with the SQLSTATE the client got.
        let stmts = p.statements(15).await;
        let code_of = |sql: &str| {
            stmts
                .iter()
                .find(|s| sql_of(s) == sql)
                .and_then(|s| s.request.as_ref())
                .and_then(|r| r.sqlstate.clone())
        };
        assert_eq!(code_of("SELEC 1").as_deref(), Some("42601"), "{stmts:#?}");
        assert_eq!(code_of("EXECUTE nosuch").as_deref(), Some("26000"));
        assert_eq!(code_of("DELETE FROM orders").as_deref(), Some("42501"));
    });
}

#[test]
fn a_statement_over_4_mib_within_max_message_bytes_runs() {
    run(|pg| async move {
        // 6 MiB of statement text, under the default max_message_bytes
        // (16 MiB): PostgreSQL runs it, so Warden must too.
        let p = Proxy::start(pg, Spec::default()).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let n = 6 << 20;
        let msgs = r
            .query(&format!("SELECT length('{}')", "x".repeat(n)))
            .await;
        assert!(errors(&msgs).is_empty(), "{:?}", errors(&msgs));
        assert_eq!(
            rows(&msgs).iter().map(|r| text(&r[0])).collect::<Vec<_>>(),
            [n.to_string()]
        );
        // The same through Parse/Bind/Execute.
        let mut b = BytesMut::new();
        let sql = format!("SELECT length('{}') + $1::int", "y".repeat(n));
        frontend::parse(&mut b, "", &sql, &[]).unwrap();
        frontend::bind(&mut b, "", "", &[], &[Some(b"1".as_slice())], &[]).unwrap();
        frontend::execute(&mut b, "", 0).unwrap();
        frontend::sync(&mut b);
        r.send(&b).await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{:?}", errors(&msgs));
        assert_eq!(
            rows(&msgs).iter().map(|r| text(&r[0])).collect::<Vec<_>>(),
            [(n + 1).to_string()]
        );
    });
}

#[test]
fn many_large_statements_do_not_accumulate_in_the_session() {
    let _one = MEMORY_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run(|pg| async move {
        // 96 distinct statements of 1 MiB each: a session keeps none of
        // their text once they are answered (the per-session decision
        // cache holds short texts only; it kept them all: 250 MiB more).
        // The audit writer's page cache (32 MiB) fills with them.
        const N: usize = 96;
        const GROWTH_KIB: u64 = 128 * 1024;
        let p = Proxy::start(pg, Spec::default()).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let before = vm_hwm_kib(true);
        for i in 0..N {
            let msgs = r
                .query(&format!("SELECT {i}, length('{}')", "x".repeat(1 << 20)))
                .await;
            assert_eq!(rows(&msgs).len(), 1, "{:?}", errors(&msgs));
        }
        let after = vm_hwm_kib(false);
        eprintln!("{N} statements of 1 MiB: peak memory {before} KiB before, {after} KiB after");
        assert!(
            after < before + GROWTH_KIB,
            "peak memory grew by {} KiB",
            after - before
        );
    });
}

#[test]
fn a_client_message_over_max_message_bytes_ends_the_session_naming_the_limit() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                target_extra: "max_message_bytes = 1048576",
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // Under the limit: runs.
        let msgs = r
            .query(&format!("SELECT length('{}')", "x".repeat(900_000)))
            .await;
        assert_eq!(rows(&msgs).len(), 1, "{:?}", errors(&msgs));
        // Over it: a FATAL error that names the setting, then the close.
        // 32 MiB: far more than the socket buffers hold, so the client is
        // still sending when Warden answers; what it still sends is read
        // and dropped (a lingering close), not answered with a reset that
        // would lose the error.
        let mut b = BytesMut::new();
        frontend::query(
            &mut b,
            &format!("SELECT length('{}')", "x".repeat(32 << 20)),
        )
        .unwrap();
        r.send(&b).await;
        let msgs = r.until_closed().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!((errs[0].0.as_str(), errs[0].1.as_str()), ("FATAL", "54000"));
        assert!(
            errs[0].2.contains("max_message_bytes (1048576)") && errs[0].2.contains("Query"),
            "{errs:?}"
        );
        let e = p.ended(r.port()).await;
        assert_eq!(e.reason.as_deref(), Some("session_error"), "{e:?}");
    });
}

impl Proxy {
    /// The one pending approval request, once there is one (10 s limit).
    async fn pending(&self) -> RequestView {
        let start = Instant::now();
        loop {
            let mut l = self.approvals.list().pending;
            if let Some(v) = l.pop() {
                assert!(l.is_empty(), "more than one pending: {l:#?} and {v:#?}");
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no approval request"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An approver's decision (uid 5001, listed in [`APPROVERS`]).
    async fn decide(&self, id: &str, approve: bool, grant_secs: Option<u64>) {
        let approver = Peer {
            uid: 5001,
            gid: 5001,
            pid: None,
            gids: vec![5001],
            uids: vec![5001],
            place: Place::Known {
                cgroups: vec!["/user.slice/approver".into()],
                cgroup_ids: vec![77],
                accounts: vec![],
            },
        };
        let d = Decision {
            approve,
            reason: Some("test".into()),
            grant_secs,
        };
        self.approvals.decide(id, &approver, d).await.unwrap();
    }
}

const APPROVERS: &str = "approvers = { groups = [], uids = [5001] }\napproval_timeout_secs = 30";

/// Bind of statement `s1` to the unnamed portal with one text parameter,
/// Execute, Sync.
fn bind_execute(value: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::bind(&mut b, "", "s1", &[], &[Some(value.as_bytes())], &[]).unwrap();
    frontend::execute(&mut b, "", 0).unwrap();
    frontend::sync(&mut b);
    b
}

#[test]
fn extended_protocol_approvals_are_asked_per_execution_with_the_bound_parameters() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: r#"default = "allow"
rules = [ { action = "approve", tables = ["customers"], name = "customer-lookups" } ]"#,
                masking: Some(PII),
                approvals: APPROVERS,
                ..Spec::default()
            },
        )
        .await;
        let (alice, bob) = (&pg::CUSTOMERS[0], &pg::CUSTOMERS[1]);
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // Parse once; nothing is asked until an Execute.
        let mut b = BytesMut::new();
        frontend::parse(
            &mut b,
            "s1",
            "SELECT id FROM customers WHERE name = $1 OR email = $1",
            &[],
        )
        .unwrap();
        b.extend_from_slice(&bind_execute(alice.name));
        r.send(&b).await;
        // The approver sees the statement with the value bound to it.
        let req = p.pending().await;
        assert!(
            req.statement.contains("email = $1")
                && req.statement.contains(&format!("$1 = '{}'", alice.name)),
            "{req:#?}"
        );
        p.decide(&req.id, true, None).await;
        let msgs = r.until_ready().await;
        assert_eq!(
            rows(&msgs).iter().map(|r| text(&r[0])).collect::<Vec<_>>(),
            ["1"],
            "{msgs:?}"
        );

        // The same statement with another value is asked again; the value
        // is shown masked by the detectors (an e-mail address here).
        r.send(&bind_execute(bob.email)).await;
        let req = p.pending().await;
        assert!(req.statement.contains("$1 = '"), "{req:#?}");
        assert!(!req.statement.contains(bob.email), "unmasked: {req:#?}");
        p.decide(&req.id, false, None).await;
        let msgs = r.until_ready().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0].1, "42501", "{errs:?}");
        assert!(rows(&msgs).is_empty(), "{msgs:?}");

        // An approval with --for grants the statement (whatever its
        // parameters) for a while: later executions pass without asking.
        r.send(&bind_execute(alice.name)).await;
        let req = p.pending().await;
        p.decide(&req.id, true, Some(60)).await;
        let msgs = r.until_ready().await;
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
        r.send(&bind_execute(bob.email)).await;
        let msgs = r.until_ready().await;
        assert_eq!(
            rows(&msgs).iter().map(|r| text(&r[0])).collect::<Vec<_>>(),
            ["2"],
            "{msgs:?}"
        );
        assert!(p.approvals.list().pending.is_empty());
        drop(r);

        // Binary parameters (tokio-postgres) are shown in their text form,
        // with the types the server described.
        p.approvals.list().grants.iter().for_each(|_| ());
        let client = p.connect().await;
        let q = tokio::spawn(async move {
            client
                .query(
                    "SELECT name FROM customers WHERE id = $1 AND $2",
                    &[&2i32, &true],
                )
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
        });
        let req = p.pending().await;
        assert!(
            req.statement.contains("$1 = '2'") && req.statement.contains("$2 = 't'"),
            "{req:#?}"
        );
        p.decide(&req.id, true, None).await;
        assert_eq!(q.await.unwrap().unwrap(), [bob.name]);

        // Every execution is on record with the values it ran with.
        let stmts = p.statements(5).await;
        let executed: Vec<String> = stmts
            .iter()
            .filter(|s| s.result.is_some() && !refused(s))
            .map(sql_of)
            .filter(|s| s.contains("$1 = "))
            .collect();
        assert_eq!(executed.len(), 4, "{stmts:#?}");
    });
}

/// Whether the client was told its statement is held for approval.
fn held(msgs: &[Msg]) -> bool {
    msgs.iter()
        .any(|m| matches!(m, Msg::Notice { message } if message.contains("held for approval")))
}

/// Warden with approvals for privileged statements, and a session.
async fn privileged_approvals(pg: &PgServer) -> (Proxy, Raw) {
    let p = Proxy::start(
        pg,
        Spec {
            policy: r#"default = "allow"
rules = [ { action = "approve", classes = ["privileged"], name = "privileged" } ]"#,
            approvals: APPROVERS,
            ..Spec::default()
        },
    )
    .await;
    let (r, _, _) = Raw::session(p.addr()).await;
    (p, r)
}

#[test]
fn privileged_statements_are_granted_only_for_the_exact_values_approved() {
    run(|pg| async move {
        let (p, mut r) = privileged_approvals(pg).await;
        let mut b = BytesMut::new();
        frontend::parse(
            &mut b,
            "s1",
            "SELECT query_to_xml($1, true, false, '')",
            &[],
        )
        .unwrap();
        b.extend_from_slice(&bind_execute("SELECT 1"));
        r.send(&b).await;
        let req = p.pending().await;
        assert!(req.statement.contains("$1 = 'SELECT 1'"), "{req:#?}");
        // Approved for a minute: it runs, and runs again with the same
        // value unasked.
        p.decide(&req.id, true, Some(60)).await;
        let msgs = r.until_ready().await;
        assert!(held(&msgs), "{msgs:?}");
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
        r.send(&bind_execute("SELECT 1")).await;
        let msgs = r.until_ready().await;
        assert!(!held(&msgs), "{msgs:?}");
        assert_eq!(rows(&msgs).len(), 1, "{msgs:?}");
        // Another value is another statement to the approver.
        r.send(&bind_execute("SELECT 2")).await;
        let req = p.pending().await;
        assert!(req.statement.contains("$1 = 'SELECT 2'"), "{req:#?}");
        p.decide(&req.id, false, None).await;
        let msgs = r.until_ready().await;
        let errs = errors(&msgs);
        assert!(
            errs.len() == 1 && errs[0].1 == "42501" && errs[0].2.contains("Warden"),
            "{msgs:?}"
        );
        // The same in the simple protocol: a grant is for the exact text.
        let text = |sql: &str| {
            let mut q = BytesMut::new();
            frontend::query(
                &mut q,
                &format!("SELECT query_to_xml('{sql}', true, false, '')"),
            )
            .unwrap();
            q
        };
        r.send(&text("SELECT 1")).await;
        let req = p.pending().await;
        p.decide(&req.id, true, Some(60)).await;
        assert!(held(&r.until_ready().await));
        r.send(&text("SELECT 1")).await;
        assert!(!held(&r.until_ready().await));
        r.send(&text("SELECT 2")).await;
        let req = p.pending().await;
        assert!(req.statement.contains("SELECT 2"), "{req:#?}");
        p.decide(&req.id, false, None).await;
        let errs = errors(&r.until_ready().await);
        assert!(errs.len() == 1 && errs[0].2.contains("Warden"), "{errs:?}");
        drop(r);
    });
}

#[test]
fn an_execute_the_server_will_skip_is_not_asked_about() {
    run(|pg| async move {
        let (p, mut r) = privileged_approvals(pg).await;
        // The role may not call pg_read_file: the server refuses the Bind
        // and skips the Execute, so no approver is asked about it.
        let mut b = BytesMut::new();
        frontend::parse(&mut b, "s1", "SELECT pg_read_file($1)", &[]).unwrap();
        b.extend_from_slice(&bind_execute("/etc/hostname"));
        r.send(&b).await;
        let msgs = r.until_ready().await;
        let errs = errors(&msgs);
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert!(
            errs[0].1 == "42501" && errs[0].2.contains("permission denied"),
            "{errs:?}"
        );
        assert!(!held(&msgs), "{msgs:?}");
        let l = p.approvals.list();
        assert!(l.pending.is_empty(), "{:#?}", l.pending);
        assert_eq!(rows(&r.query("SELECT 1").await).len(), 1);
    });
}

// ---------------------------------------------------------------------------
// PostgreSQL's own grammar and the soundness of the SQL policy
// ---------------------------------------------------------------------------

/// The issue's policy, without any function rule: what reaches data
/// through a function is refused by the safe list, not by naming it.
const BLOCK_SECRETS: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#;

/// A proxy with the `BLOCK_SECRETS` policy and a client connected to it.
async fn block_secrets(pg: &PgServer) -> (Proxy, tokio_postgres::Client) {
    let p = Proxy::start(
        pg,
        Spec {
            policy: BLOCK_SECRETS,
            ..Spec::default()
        },
    )
    .await;
    let c = p.connect().await;
    (p, c)
}

/// Every statement of `sqls` in its own simple Query: each must be refused
/// with 42501 and return no row.
async fn all_refused(c: &tokio_postgres::Client, sqls: &[&str]) {
    for sql in sqls {
        match c.simple_query(sql).await {
            Ok(r) => panic!("{sql}: not refused: {:?}", simple_summary(Ok(r))),
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}"),
        }
    }
}

#[test]
fn syntax_errors_are_the_servers_42601_and_unknown_prepared_statements_26000() {
    run(|pg| async move {
        let p = Proxy::start(pg, Spec::default()).await;
        let c = p.connect().await;
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        for sql in [
            "SELEC 1",
            "SELECT * FROM customers WHERE",
            "SELECT 1; SELECT FROM FROM",
            "SELECT 'é' FROM FROM",
        ] {
            let ours = c.simple_query(sql).await.unwrap_err();
            let theirs = direct.simple_query(sql).await.unwrap_err();
            let (o, t) = (ours.as_db_error().unwrap(), theirs.as_db_error().unwrap());
            assert_eq!(o.code().code(), "42601", "{sql}: {ours:?}");
            assert_eq!(o.message(), t.message(), "{sql}");
            assert_eq!(o.position(), t.position(), "{sql}");
        }
        let e = c.simple_query("EXECUTE nosuch").await.unwrap_err();
        assert_eq!(sqlstate(&e), "26000", "{e:?}");
        assert_eq!(message(&e), "prepared statement \"nosuch\" does not exist");
        // Statements PostgreSQL accepts and sqlparser could not read.
        c.simple_query("PREPARE q(int) AS SELECT $1 + 1")
            .await
            .unwrap();
        let r = c.simple_query("EXECUTE q(41)").await.unwrap();
        assert_eq!(
            simple_summary(Ok(r)),
            simple_summary(direct.simple_query("SELECT 42").await)
        );
        for sql in [
            "SELECT name 'x' = name 'x'",
            "SELECT concat(VARIADIC array['a','b'])",
            "SELECT 'a'\n'b' AS x",
            "BEGIN; DECLARE c SCROLL CURSOR FOR SELECT generate_series(1, 5); FETCH ABSOLUTE -1 FROM c; MOVE FIRST IN c; CLOSE c; COMMIT",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE; SET CONSTRAINTS ALL DEFERRED; COMMIT",
        ] {
            let ours = simple_summary(c.simple_query(sql).await);
            let theirs = simple_summary(direct.simple_query(sql).await);
            assert_eq!(ours, theirs, "{sql}");
            assert!(!ours[0].starts_with("ERROR"), "{sql}: {ours:?}");
        }
        // A statement longer than the 4 MiB sqlparser limit of old.
        let long = format!("SELECT 1 /* {} */", "x".repeat(6 << 20));
        let r = c.simple_query(&long).await.unwrap();
        assert_eq!(
            simple_summary(Ok(r)),
            simple_summary(direct.simple_query("SELECT 1").await)
        );
    });
}

#[test]
fn search_path_cannot_drift_from_what_the_policy_resolves() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        // Every way to change the path is refused, so `payroll` resolves to
        // public.payroll, which the block entry names; and the block entry
        // matches the unqualified name whatever the path anyway.
        all_refused(
            &c,
            &[
                "SET LOCAL search_path = nosuch",
                "SET search_path = nosuch",
                "RESET search_path",
                "SET SCHEMA 'nosuch'",
                "SELECT set_config('search_path', 'nosuch', false)",
                "SET ROLE orders_rw",
                "SET SESSION AUTHORIZATION orders_rw",
                "SELECT * FROM payroll",
            ],
        )
        .await;
        // Through the extended protocol too.
        for sql in ["SET search_path = nosuch", "SELECT * FROM payroll"] {
            let e = c.query(sql, &[]).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        }
        c.simple_query("BEGIN").await.unwrap();
        let e = c
            .simple_query("SET search_path = nosuch")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        c.simple_query("ROLLBACK").await.unwrap();
        all_refused(&c, &["SELECT * FROM payroll"]).await;
        let forced: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
        assert!(
            matches!(
                forced.as_str(),
                "\"$user\", public" | "\"$user\", \"public\""
            ),
            "{forced}"
        );
        // RESET ALL and DISCARD ALL return to the forced startup value.
        c.simple_query("RESET ALL").await.unwrap();
        c.simple_query("DISCARD ALL").await.unwrap();
        let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
        assert_eq!(path, forced);
    });
}

#[test]
fn functions_outside_the_safe_list_are_privileged() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        all_refused(
            &c,
            &[
                "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, name::tsquery FROM secrets')",
                "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')",
                "SELECT table_to_xml('secrets', true, true, '')",
                "SELECT database_to_xml(true, true, '')",
                "SELECT schema_to_xml('public', true, true, '')",
                "SELECT * FROM ts_stat('SELECT to_tsvector(name) FROM secrets')",
                "SELECT histogram_bounds FROM pg_stats WHERE tablename = 'secrets'",
                "SELECT most_common_vals FROM pg_catalog.pg_stats",
                "SELECT * FROM pg_stat_activity",
                "SELECT pg_read_file('/etc/hostname')",
                "SELECT lo_get(1)",
                "SELECT pg_advisory_lock(1)",
                "SELECT public.lower('x')",
                "SELECT 1 OPERATOR(public.+) 1",
            ],
        )
        .await;
        // Built-in functions stay allowed.
        let r = c
            .simple_query("SELECT lower('A'), count(*), now() IS NOT NULL FROM customers")
            .await
            .unwrap();
        let rows = simple_summary(Ok(r));
        assert!(rows.iter().any(|r| r.starts_with("ROW ")), "{rows:?}");
    });
}

#[test]
fn a_read_only_grant_cannot_be_made_writable() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.ro_probe; CREATE TABLE public.ro_probe (id int);              GRANT SELECT, INSERT ON public.ro_probe TO orders_rw",
        );
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: READ_WRITE,
                grant_extra: "read_only = true",
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        all_refused(
            &c,
            &[
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "BEGIN READ WRITE",
                "START TRANSACTION READ WRITE",
                "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
                "SET transaction_read_only = off",
                "SET default_transaction_read_only = off",
                "RESET default_transaction_read_only",
                "SELECT set_config('transaction_read_only', 'off', false)",
                "SELECT set_config('default_transaction_read_only', 'off', false)",
            ],
        )
        .await;
        c.simple_query("BEGIN").await.unwrap();
        let e = c
            .simple_query("SET TRANSACTION READ WRITE")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        c.simple_query("ROLLBACK").await.unwrap();
        // Writes are refused by Warden on a read-only grant, whatever the
        // policy allows (the server's read-only transaction would refuse
        // this one too, 25006, but not LOCK, NOTIFY or index maintenance).
        let e = c
            .simple_query("INSERT INTO public.ro_probe VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert_eq!(
            pg.psql_ok(
                pg::SUPERUSER,
                pg::DB,
                "SELECT count(*) FROM public.ro_probe"
            ),
            "0"
        );
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.ro_probe");
    });
}

// ---------------------------------------------------------------------------
// Masking that holds however a masked column is used (issue 15, item 6)
// ---------------------------------------------------------------------------

/// Column rules on every sensitive column of `customers`; only the e-mail
/// detector as a backstop, so names (which no pattern matches) show what
/// the column analysis alone holds.
const COLUMN_RULES: &str = r#"columns = [
  { column = "customers.name", strategy = "redact" },
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "customers.ssn", strategy = "null" },
]
patterns = ["email"]"#;

fn assert_no_names(what: &str, s: &str) {
    for c in pg::CUSTOMERS {
        assert!(!s.contains(c.name), "{what}: name leaked: {s}");
        assert!(
            !s.contains(c.name.to_uppercase().as_str()),
            "{what}: name leaked: {s}"
        );
    }
    assert_no_pii(what, s);
}

#[test]
fn masked_columns_hold_in_expressions_conditions_copy_views_and_errors() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP VIEW IF EXISTS public.customer_labels; \
             CREATE VIEW public.customer_labels AS \
               SELECT id, upper(name) AS label FROM public.customers; \
             GRANT SELECT ON public.customer_labels TO orders_ro",
        );
        let p = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(COLUMN_RULES),
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        // Every way around a column rule, simple and extended protocol:
        // refused with 42501 naming the column and the rule, and the
        // session goes on.
        for sql in [
            "SELECT name || '' FROM customers",
            "SELECT name::varchar FROM customers",
            "SELECT format('%s', name) FROM customers",
            "SELECT row_to_json(c) FROM customers c",
            "SELECT c::text FROM customers c",
            "SELECT ARRAY[email, card] FROM customers",
            "SELECT string_agg(name, ',') FROM customers",
            "SELECT (SELECT name FROM customers LIMIT 1)",
            "WITH x AS (SELECT name FROM customers) SELECT * FROM x",
            "SELECT name FROM customers UNION SELECT 'x'",
            "SELECT translate(email, '@.', '#,') FROM customers",
            "SELECT encode(convert_to(card, 'UTF8'), 'base64') FROM customers",
            "SELECT replace(ssn, '-', '/') FROM customers",
            "SELECT name::int FROM customers",
            "SELECT x.n FROM customers c, LATERAL (SELECT c.name AS n) x",
            "SELECT lower(label) FROM customer_labels",
            "SELECT id FROM customers WHERE name LIKE 'A%'",
            "SELECT id FROM customers ORDER BY name",
            "SELECT id FROM customers c JOIN customers d USING (email)",
            "EXPLAIN ANALYZE SELECT id FROM customers WHERE ssn > '3'",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
            let m = message(&e);
            assert!(m.contains("masked column public.customer"), "{sql}: {m}");
            assert!(m.contains("masking rule \"customers."), "{sql}: {m}");
            assert_no_names(sql, &m);
            let e = c.query(sql, &[]).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "extended {sql}: {e:?}");
        }
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        // Bare columns are masked, in text and binary format, however
        // they are selected.
        for sql in [
            "SELECT id, name, email, card, ssn FROM customers ORDER BY id",
            "SELECT c.id, c.name AS n, c.email, c.card, c.ssn FROM customers c ORDER BY 1",
            "SELECT * FROM customers ORDER BY id",
        ] {
            let rows = c.query(sql, &[]).await.unwrap();
            assert_eq!(rows.len(), pg::CUSTOMERS.len());
            for (row, cust) in rows.iter().zip(pg::CUSTOMERS) {
                assert_eq!(row.get::<_, String>(1), "[MASKED]", "{sql}");
                assert_eq!(row.get::<_, String>(2), "[MASKED]", "{sql}");
                let card: String = row.get(3);
                assert!(card.ends_with(&cust.card[cust.card.len() - 4..]), "{card}");
                assert_ne!(card, cust.card);
                assert_eq!(row.get::<_, Option<String>>(4), None, "{sql}");
            }
            let text = format!("{:?}", simple_summary(c.simple_query(sql).await));
            assert_no_names(sql, &text);
            assert!(text.contains("[MASKED]"), "{text}");
        }
        // A view over a masked column: its columns are masked.
        let text = format!(
            "{:?}",
            simple_summary(c.simple_query("SELECT label FROM customer_labels").await)
        );
        assert_no_names("view", &text);
        assert!(text.contains("[MASKED]"), "{text}");
        // Looked up by equality with a parameter (the default): allowed.
        let id: i32 = c
            .query_one(
                "SELECT id FROM customers WHERE email = $1",
                &[&pg::CUSTOMERS[1].email],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(id, 2);

        // COPY TO STDOUT: masked by column in text and CSV, refused in
        // binary.
        let copy = |sql: &'static str| {
            let c = &c;
            async move {
                let stream = c.copy_out(sql).await?;
                let mut stream = std::pin::pin!(stream);
                let mut data = Vec::new();
                while let Some(chunk) = stream.next().await {
                    data.extend_from_slice(&chunk?);
                }
                Ok::<String, tokio_postgres::Error>(String::from_utf8(data).unwrap())
            }
        };
        let out = copy("COPY customers (id, name, ssn) TO STDOUT")
            .await
            .unwrap();
        assert_eq!(out.lines().count(), pg::CUSTOMERS.len(), "{out}");
        assert!(out.lines().all(|l| l.ends_with("\t[MASKED]\t\\N")), "{out}");
        let out = copy("COPY customers TO STDOUT WITH (FORMAT csv, HEADER)")
            .await
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "id,name,email,card,ssn", "{out}");
        let first = lines.iter().find(|l| l.starts_with("1,")).unwrap();
        assert!(first.starts_with("1,\"[MASKED]\",\"[MASKED]\",\""), "{out}");
        assert!(first.ends_with("1111\","), "{out}");
        assert_no_names("COPY csv", &out);
        let e = copy("COPY customers (id, card) TO STDOUT (FORMAT binary)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        // masked_in_predicates = "any": conditions may use them, values
        // still never leave, and the server's error texts about a
        // statement reading masked columns are withheld (SQLSTATE kept).
        let any = format!("{COLUMN_RULES}\nmasked_in_predicates = \"any\"");
        let p2 = Proxy::start(
            pg,
            Spec {
                policy: READ_ONLY,
                masking: Some(&any),
                ..Spec::default()
            },
        )
        .await;
        let c2 = p2.connect().await;
        let rows = c2
            .query(
                "SELECT id FROM customers WHERE name LIKE 'Bob%' ORDER BY name",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let e = c2
            .simple_query("SELECT id FROM customers WHERE name::int = 1")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "22P02", "{e:?}");
        let m = format!("{:?}", e.as_db_error());
        assert!(m.contains("withheld"), "{m}");
        assert_no_names("22P02", &m);
        let e = c2
            .simple_query("SELECT name || '' FROM customers")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        // Through a cursor: rows masked, FETCH errors withheld.
        c2.batch_execute(
            "BEGIN; DECLARE cur CURSOR FOR SELECT id, name FROM customers ORDER BY id",
        )
        .await
        .unwrap();
        let fetched = format!(
            "{:?}",
            simple_summary(c2.simple_query("FETCH 2 FROM cur").await)
        );
        assert!(fetched.contains("[MASKED]"), "{fetched}");
        assert_no_names("FETCH", &fetched);
        c2.batch_execute("DECLARE bad CURSOR FOR SELECT id FROM customers WHERE name::int = 1")
            .await
            .unwrap();
        let e = c2.simple_query("FETCH ALL FROM bad").await.unwrap_err();
        assert_eq!(sqlstate(&e), "22P02", "{e:?}");
        let m = format!("{:?}", e.as_db_error());
        assert!(m.contains("withheld"), "{m}");
        assert_no_names("FETCH error", &m);
        c2.batch_execute("ROLLBACK").await.unwrap();
        // Direct, the same error shows the name (the check can fail).
        let d = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let e = d
            .simple_query("SELECT id FROM customers WHERE name::int = 1")
            .await
            .unwrap_err();
        let m = message(&e);
        assert!(pg::CUSTOMERS.iter().any(|c| m.contains(c.name)), "{e:?}");
        drop((c, c2, d));
        let stmts = p.statements(10).await;
        assert!(
            stmts
                .iter()
                .any(|s| sql_of(s).contains("format('%s', name)") && refused(s)),
            "{stmts:#?}"
        );
        assert!(p.any_panic().is_none());
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP VIEW public.customer_labels");
    });
}

#[test]
fn psql_meta_commands_pass_with_column_masking() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: ALLOW_ALL,
                masking: Some(COLUMN_RULES),
                ..Spec::default()
            },
        )
        .await;
        let conn = p.conn_string();
        let psql = pg.bin("psql");
        let out = tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new(psql);
            c.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", &conn]);
            for meta in [
                "\\d customers",
                "\\d+ customers",
                "\\dt",
                "\\dt+",
                "\\dv",
                "\\di",
                "\\ds",
                "\\dn",
                "\\du",
                "\\l",
                "\\df",
                "\\dT",
                "\\dx",
                "\\dp customers",
                "\\d orders",
            ] {
                c.args(["-c", meta]);
            }
            c.output().unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("Warden"), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("email"), "{stdout}");
    });
}

#[test]
fn errors_about_a_written_row_of_a_masked_table_are_withheld() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.card_notes; \
             CREATE TABLE public.card_notes (id int PRIMARY KEY, card text, \
               note text CHECK (length(note) < 5)); \
             INSERT INTO public.card_notes VALUES (1, '4111111111111111', 'ok'); \
             GRANT SELECT, INSERT, UPDATE, DELETE ON public.card_notes TO orders_rw",
        );
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: READ_WRITE,
                // No pattern backstop: only the column rule protects it.
                masking: Some(
                    r#"columns = [ { column = "card_notes.card", strategy = "last4" } ]"#,
                ),
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        let sql = "UPDATE card_notes SET note = 'toolong' WHERE id = 1";
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "23514", "{e:?}");
        let shown = format!("{:?}", e.as_db_error());
        assert!(!shown.contains("4111111111111111"), "{shown}");
        assert!(shown.contains("withheld"), "{shown}");
        let card: String = c
            .query_one("SELECT card FROM card_notes WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(card, "************1111");
        // Direct, the server quotes the whole failing row (the check can fail).
        let d = connect(&direct_conn(pg, pg::ORDERS_RW)).await;
        let e = d.simple_query(sql).await.unwrap_err();
        let direct = format!("{:?}", e.as_db_error());
        assert!(direct.contains("4111111111111111"), "{direct}");
        drop((c, d));
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.card_notes");
    });
}
