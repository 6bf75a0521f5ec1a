//! Proves the PostgreSQL test harness (`tests/common/pg.rs`) against the real
//! server, without Warden: authentication methods, TLS, privileges, the data
//! set, PgBouncer, pgbench, psycopg2 and tokio-postgres (binary results).
//!
//! Needs Debian's postgresql, postgresql-client, pgbouncer and
//! python3-psycopg2 (installed on first use when run as root, or by
//! `cargo xtask setup`). `cargo test -p warden --test pg_harness`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::pg::*;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs tests/support/pg_client.py (psycopg2) with `dsn`.
fn psycopg2(dsn: &str, sql: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/pg_client.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(sql)
        .env("WARDEN_PG_DSN", dsn)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pg_client.py output not JSON ({e}): {}", show(&out)))
}

#[test]
fn start_reports_timings_and_settings() {
    let t = Instant::now();
    let pg = PgServer::start(PgOptions::default());
    eprintln!("PgServer::start took {:?}: {:?}", t.elapsed(), pg.timings);
    assert_eq!(pg.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(pg.port(), 0);
    assert_eq!(pg.psql_ok(SUPERUSER, DB, "SHOW max_connections"), "600");
    assert_eq!(
        pg.psql_ok(SUPERUSER, DB, "SHOW server_version_num")[..2],
        *"15"
    );
    assert_eq!(pg.psql_ok(SUPERUSER, DB, "SHOW fsync"), "off");
    assert_eq!(
        pg.psql_ok(SUPERUSER, DB, "SHOW listen_addresses"),
        "127.0.0.1"
    );
    // Two servers at once get different ports and both answer.
    let other = PgServer::start(PgOptions {
        stream_rows: 10,
        max_connections: 20,
        ..PgOptions::default()
    });
    assert_ne!(other.port(), pg.port());
    assert_eq!(
        other.psql_ok(ORDERS_RO, DB, "SELECT count(*) FROM public.events"),
        "10"
    );
    // Passwords differ per server: one server's password does not open the other.
    let mut c = other.psql_cmd(ORDERS_RO, DB, "require");
    c.env("PGPASSWORD", pg.password(ORDERS_RO))
        .args(["-c", "SELECT 1"]);
    let out = c.output().unwrap();
    assert!(!out.status.success(), "wrong password accepted");
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );

    // Drop stops the postmaster and removes the directory.
    let pid = other.postmaster_pid().expect("postmaster pid");
    let dir = other.dir().to_owned();
    assert!(process_running(pid));
    drop(other);
    assert!(!dir.exists(), "data dir left behind");
    assert!(!process_running(pid), "postmaster {pid} still running");
}

#[test]
fn scram_login_over_tls_require_and_verify_full() {
    let pg = PgServer::shared();
    for mode in ["require", "verify-ca", "verify-full"] {
        let out = pg.psql_ssl(
            ORDERS_RO,
            DB,
            mode,
            "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        assert!(out.status.success(), "{mode}: {}", show(&out));
        assert_eq!(stdout(&out), "t|orders_ro", "{mode}");
    }
    assert!(pg.wait_log("identity=\"orders_ro\" method=scram-sha-256"));

    // verify-full with the host name in the certificate works too.
    let mut c = pg.psql_cmd(ORDERS_RO, DB, "verify-full");
    let out = c
        .env("PGHOST", "localhost")
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "localhost: {}", show(&out));

    // …and fails against a CA that did not sign it (here: another server's).
    let other_ca =
        std::env::temp_dir().join(format!("warden-pg-otherca-{}.pem", std::process::id()));
    {
        // A CA made the same way but never used for this server.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&other_ca, p.self_signed(&key).unwrap().pem()).unwrap();
    }
    let mut c = pg.psql_cmd(ORDERS_RO, DB, "verify-full");
    let out = c
        .env("PGSSLROOTCERT", &other_ca)
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&other_ca);
    assert!(!out.status.success(), "foreign CA accepted");
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );

    // Plaintext is accepted as well (hostnossl is not refused).
    let out = pg.psql_ssl(
        ORDERS_RO,
        DB,
        "disable",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "f");
}

#[test]
fn md5_and_cleartext_roles_log_in_with_their_methods() {
    let pg = PgServer::shared();
    assert_eq!(
        pg.psql_ok(
            SUPERUSER,
            DB,
            "SELECT rolname, left(rolpassword, 3) FROM pg_authid \
             WHERE rolname IN ('md5_user', 'plain_user', 'orders_ro') ORDER BY rolname"
        ),
        "md5_user|md5\norders_ro|SCR\nplain_user|SCR"
    );
    for (role, method) in [(MD5_USER, "md5"), (PLAIN_USER, "password")] {
        for mode in ["disable", "verify-full"] {
            let out = pg.psql_ssl(
                role,
                DB,
                mode,
                "SELECT current_user, count(*) FROM customers",
            );
            assert!(out.status.success(), "{role} {mode}: {}", show(&out));
            assert_eq!(stdout(&out), format!("{role}|{}", CUSTOMERS.len()));
        }
        assert!(
            pg.wait_log(&format!("identity=\"{role}\" method={method}")),
            "{role} did not authenticate with {method}:\n{}",
            pg.log()
        );
        // A wrong password is refused.
        let mut c = pg.psql_cmd(role, DB, "require");
        let out = c
            .env("PGPASSWORD", "wrong")
            .args(["-c", "SELECT 1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{role} with a wrong password");
    }
}

#[test]
fn privileges_and_data_set() {
    let pg = PgServer::shared();
    let out = pg.psql(ORDERS_RO, DB, "DELETE FROM orders WHERE id = -1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied for table orders"),
        "{}",
        stderr(&out)
    );
    let out = pg.psql(
        ORDERS_RO,
        DB,
        "INSERT INTO orders (customer_id, amount) VALUES (1, 1)",
    );
    assert!(stderr(&out).contains("permission denied"), "{}", show(&out));

    // orders_rw writes; rolled back, as other tests share the server.
    let out = pg.psql_ok(
        ORDERS_RW,
        DB,
        "BEGIN; \
         INSERT INTO orders (customer_id, amount, note) VALUES (2, 3.50, 'harness') RETURNING id; \
         UPDATE orders SET note = 'x' WHERE id = 1; \
         DELETE FROM orders WHERE note = 'harness'; \
         ROLLBACK",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[1].parse::<i32>().unwrap() > ORDERS.len() as i32,
        "{out}"
    );
    assert_eq!(
        lines[2..],
        ["INSERT 0 1", "UPDATE 1", "DELETE 1", "ROLLBACK"],
        "{out}"
    );

    // The data set is what the constants say.
    let rows = pg.psql_ok(
        ORDERS_RO,
        DB,
        "SELECT id, name, email, card, ssn FROM customers ORDER BY id",
    );
    let want: Vec<String> = CUSTOMERS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}|{}|{}|{}|{}", i + 1, c.name, c.email, c.card, c.ssn))
        .collect();
    assert_eq!(rows, want.join("\n"));
    for c in CUSTOMERS {
        assert!(luhn(c.card), "{} is not Luhn-valid", c.card);
    }
    let rows = pg.psql_ok(
        ORDERS_RO,
        DB,
        "SELECT customer_id, amount, note FROM orders ORDER BY id",
    );
    let want: Vec<String> = ORDERS
        .iter()
        .map(|(c, a, n)| format!("{c}|{a}|{n}"))
        .collect();
    assert_eq!(rows, want.join("\n"));
    assert_eq!(
        pg.psql_ok(ORDERS_RO, DB, "SELECT name, value FROM secrets ORDER BY id"),
        SECRETS
            .iter()
            .map(|(n, v)| format!("{n}|{v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        pg.psql_ok(ORDERS_RO, DB, "SELECT \"Name\", \"Value\" FROM \"Secrets\""),
        format!("{}|{}", QUOTED_SECRETS[0].0, QUOTED_SECRETS[0].1)
    );
    assert_eq!(
        pg.psql_ok(ORDERS_RO, DB, "SELECT count(*) FROM payroll"),
        PAYROLL.len().to_string()
    );
    let stream = pg.psql_ok(
        ORDERS_RO,
        DB,
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE payload LIKE '%@example.com%'), \
             count(*) FILTER (WHERE payload LIKE '%4111111111111111%') FROM {STREAM_TABLE}"
        ),
    );
    let n = pg.opts.stream_rows;
    assert_eq!(stream, format!("{n}|{}|{}", n / 100, n / 250));
}

#[test]
fn pgbouncer_session_mode_answers() {
    let pg = PgServer::shared();
    let t = Instant::now();
    let bouncer = PgBouncer::start(pg, PoolMode::Session);
    eprintln!("PgBouncer::start took {:?}", t.elapsed());
    assert_ne!(bouncer.port(), pg.port());
    for (role, mode) in [
        (ORDERS_RO, "disable"),
        (ORDERS_RW, "verify-full"),
        (MD5_USER, "require"),
    ] {
        let mut c = pg.psql_cmd(role, DB, mode);
        let out = c
            .env("PGPORT", bouncer.port().to_string())
            .args(["-c", "SELECT current_user, count(*) FROM orders"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{role} via pgbouncer: {}\nlog:\n{}",
            show(&out),
            bouncer.log()
        );
        assert_eq!(stdout(&out), format!("{role}|{}", ORDERS.len()));
    }
    // The admin console reports session pooling and the pool that served us.
    let admin = |sql: &str| {
        let mut c = pg.psql_cmd(SUPERUSER, "pgbouncer", "disable");
        let out = c
            .env("PGPORT", bouncer.port().to_string())
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", show(&out));
        stdout(&out)
    };
    let config = admin("SHOW CONFIG");
    assert!(
        config.lines().any(|l| l.starts_with("pool_mode|session|")),
        "{config}"
    );
    let pools = admin("SHOW POOLS");
    assert!(
        pools.lines().any(|l| l.starts_with("orders|orders_rw|")),
        "{pools}"
    );
    let json = psycopg2(&bouncer.conn_string(ORDERS_RO, DB), "SELECT 41 + 1");
    assert_eq!(json["rows"][0][0], "42", "{json}");
}

#[test]
fn pgbench_runs_against_the_server() {
    let pg = PgServer::shared();
    let out = Command::new(pg.bin("pgbench"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("pgbench (PostgreSQL) 15"),
        "{}",
        stdout(&out)
    );

    let script = pg.dir().join("bench-select.sql");
    std::fs::write(&script, "SELECT count(*) FROM orders;\n").unwrap();
    let out = pg
        .pgbench_cmd(ORDERS_RO, DB, "require")
        .args(["-n", "-c", "4", "-j", "2", "-t", "25", "-f"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("number of transactions actually processed: 100/100"),
        "{text}"
    );
}

/// The benchmarks hold 500 sessions open at once, directly and through
/// PgBouncer in session mode (one server connection per client). A barrier:
/// the test holds an advisory lock, each of 500 pgbench clients queues for
/// it, and the lock is released only once all 500 are seen waiting in
/// pg_stat_activity.
#[test]
fn five_hundred_concurrent_sessions() {
    use std::io::Write;

    let pg = PgServer::start(PgOptions {
        stream_rows: 10,
        log_connections: false,
        ..PgOptions::default()
    });
    let bouncer = PgBouncer::start(&pg, PoolMode::Session);
    let script = pg.dir().join("bench-barrier.sql");
    std::fs::write(
        &script,
        "SELECT pg_advisory_lock_shared(4242);\nSELECT pg_advisory_unlock_shared(4242);\n",
    )
    .unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE usename = 'orders_ro' AND wait_event_type = 'Lock'";
    for (what, port) in [("direct", pg.port()), ("pgbouncer", bouncer.port())] {
        let t = Instant::now();
        let mut holder = pg
            .psql_cmd(SUPERUSER, DB, "disable")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = holder.stdin.take().unwrap();
        writeln!(stdin, "SELECT pg_advisory_lock(4242);").unwrap();
        while pg.psql_ok(
            SUPERUSER,
            DB,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        ) != "1"
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let bench = pg
            .pgbench_cmd(ORDERS_RO, DB, "disable")
            .env("PGPORT", port.to_string())
            .args(["-n", "-c", "500", "-j", "4", "-t", "1", "-f"])
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = 0;
        while seen < 500 && t.elapsed() < std::time::Duration::from_secs(180) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            seen = seen.max(pg.psql_ok(SUPERUSER, DB, waiting).parse().unwrap());
        }
        let all_in = t.elapsed();
        // Release (also on failure, so pgbench ends).
        writeln!(stdin, "SELECT pg_advisory_unlock(4242);").unwrap();
        drop(stdin);
        let out = bench.wait_with_output().unwrap();
        let _ = holder.wait();
        eprintln!(
            "500 sessions {what}: all waiting after {all_in:?}, done after {:?}",
            t.elapsed()
        );
        assert_eq!(seen, 500, "{what}: at most {seen} sessions at once");
        assert!(out.status.success(), "{what}: {}", show(&out));
        let text = stdout(&out);
        assert!(
            text.contains("number of transactions actually processed: 500/500"),
            "{what}: {text}"
        );
    }
}

#[test]
fn psycopg2_connects_with_tls() {
    let pg = PgServer::shared();
    let json = psycopg2(
        &pg.conn_string_ssl(ORDERS_RO, DB, "verify-full"),
        "SELECT c.id, email, amount FROM customers c JOIN orders o ON o.customer_id = c.id \
         WHERE o.id = 3",
    );
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["ssl"], true);
    assert_eq!(json["server_version"].as_u64().unwrap() / 10000, 15);
    assert_eq!(
        json["columns"],
        serde_json::json!(["id", "email", "amount"])
    );
    assert_eq!(
        json["rows"],
        serde_json::json!([["2", CUSTOMERS[1].email, ORDERS[2].1]])
    );
    // Errors come back as JSON, not as a crash.
    let json = psycopg2(&pg.conn_string(ORDERS_RO, DB), "DELETE FROM payroll");
    assert_eq!(json["ok"], false);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("InsufficientPrivilege"),
        "{json}"
    );
}

#[test]
fn tokio_postgres_binary_results() {
    let pg = PgServer::shared();
    let conn = pg.conn_string(ORDERS_RO, DB);
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            let task = tokio::spawn(connection);
            // Extended protocol: parameters and results in binary format.
            let rows = client
                .query(
                    "SELECT c.id, c.name, c.card, o.amount::float8 \
                     FROM customers c JOIN orders o ON o.customer_id = c.id \
                     WHERE c.id = $1 ORDER BY o.id",
                    &[&1i32],
                )
                .await
                .unwrap();
            let got: Vec<(i32, String, String, f64)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            // Text (simple query) and binary agree.
            let simple = client
                .simple_query("SELECT count(*) FROM events")
                .await
                .unwrap();
            let text_count = simple
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap();
            let bin_count: i64 = client
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .unwrap()
                .get(0);
            // Streaming every row of the big table.
            let mut streamed = 0u32;
            for r in client
                .query("SELECT id, payload FROM events ORDER BY id", &[])
                .await
                .unwrap()
            {
                let id: i64 = r.get(0);
                assert_eq!(id, i64::from(streamed) + 1);
                streamed += 1;
            }
            drop(client);
            task.await.unwrap().unwrap();
            (got, text_count, bin_count, streamed)
        });
    let (got, text_count, bin_count, streamed) = rows;
    let want: Vec<(i32, String, String, f64)> = ORDERS
        .iter()
        .filter(|(c, _, _)| *c == 1)
        .map(|(_, a, _)| {
            (
                1,
                CUSTOMERS[0].name.to_owned(),
                CUSTOMERS[0].card.to_owned(),
                a.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(text_count, bin_count.to_string());
    assert_eq!(streamed, pg.opts.stream_rows);
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Warden's built-in safe function and operator lists (policy/safe_*.txt)
/// are what their generators (policy/safe_*.sql) find in this server's
/// catalog. `WARDEN_REGENERATE=1` rewrites the lists instead of comparing.
#[test]
fn safe_function_lists_match_the_servers_catalog() {
    let pg = PgServer::shared();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy");
    for (list, header) in [
        (
            "safe_functions",
            "# Built-in functions of PostgreSQL 15 a policy lets a statement call without naming them:\n\
             # generated from pg_proc by safe_functions.sql (tests/pg_harness.rs checks it against the server).\n",
        ),
        (
            "safe_operators",
            "# Built-in operators of PostgreSQL 15 (pg_catalog), generated by safe_operators.sql.\n",
        ),
    ] {
        let out = pg
            .psql_cmd(SUPERUSER, DB, "verify-full")
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(dir.join(format!("{list}.sql")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{list}.sql: {}", stderr(&out));
        let generated = format!("{header}{}", String::from_utf8_lossy(&out.stdout));
        let path = dir.join(format!("{list}.txt"));
        if std::env::var_os("WARDEN_REGENERATE").is_some() {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let shipped = std::fs::read_to_string(&path).unwrap();
        let names = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let (want, have) = (names(&generated), names(&shipped));
        let missing: Vec<_> = want.iter().filter(|n| !have.contains(n)).collect();
        let extra: Vec<_> = have.iter().filter(|n| !want.contains(n)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{list}.txt differs from the server's catalog (rerun with WARDEN_REGENERATE=1): \
             missing {missing:?}, not in the catalog {extra:?}"
        );
        // The list never holds what the issue names as reaching outside
        // the account's tables.
        if list == "safe_functions" {
            for bad in [
                "pg_read_file",
                "query_to_xml",
                "table_to_xml",
                "cursor_to_xml",
                "database_to_xml",
                "ts_rewrite",
                "ts_stat",
                "set_config",
                "lo_import",
                "lo_get",
                "pg_ls_dir",
                "pg_advisory_lock",
                "pg_terminate_backend",
                "pg_stat_get_activity",
                "dblink",
            ] {
                assert!(!have.iter().any(|n| n == bad), "{bad} is on the safe list");
            }
            for good in [
                "lower",
                "count",
                "now",
                "nextval",
                "pg_table_is_visible",
                "format_type",
            ] {
                assert!(
                    have.iter().any(|n| n == good),
                    "{good} is missing from the safe list"
                );
            }
        }
    }
}
