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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::pg::{self, PgServer};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use warden::audit::event::{ProcessInfo, SessionId, StatementDecision};
use warden::audit::replay::{ReplayStatement, Step};
use warden::audit::{AuditHandle, WriterOptions, WriterTask};
use warden::config::Config;
use warden::protocol::postgres::backend::BackendMessage;
use warden::protocol::postgres::frame::{Frame, decode_frame};
use warden::protocol::postgres::frontend;
use warden::protocol::postgres::startup::{
    CancelRequest, ProtocolVersion, StartupMessage, encode_ssl_request,
};
use warden::proxy::postgres::{Caller, PgRuntime, serve};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

const ALLOW_ALL: &str = "default = \"allow\"";

/// Read-only with the refusals of the issue's example policy.
const READ_ONLY: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
  { action = "block", functions = ["pg_read_file", "dblink*", "lo_*", "set_config"], name = "no-file-access" },
]"#;

/// Reads and writes, nothing else.
const READ_WRITE: &str = r#"default = "deny"
rules = [ { action = "allow", classes = ["read", "write"] } ]"#;

const PII: &str = r#"columns = [ { column = "customers.card", strategy = "last4" } ]
patterns = ["card", "email", "ssn", "iban", "token"]"#;

/// One in-process Warden in front of the shared PostgreSQL.
struct Spec<'a> {
    role: &'a str,
    policy: &'a str,
    masking: Option<&'a str>,
    /// Extra keys of the `[[target]]` table.
    target_extra: &'a str,
    /// Overrides the role's real password.
    password: Option<&'a str>,
    password_mode: u32,
    /// Accounts, each with its own listener and the same grant.
    accounts: &'a [&'a str],
    /// Extra keys of each `[[grant]]` table.
    grant_extra: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            role: pg::ORDERS_RO,
            policy: ALLOW_ALL,
            masking: None,
            target_extra: "",
            password: None,
            password_mode: 0o600,
            accounts: &["app"],
            grant_extra: "",
        }
    }
}

#[derive(Debug, Clone)]
struct Ended {
    reason: Option<String>,
    detail: Option<String>,
}

struct Proxy {
    addrs: HashMap<String, SocketAddr>,
    /// The runtime new connections get; [`Proxy::reload`] replaces it.
    runtime: Arc<std::sync::RwLock<Arc<PgRuntime>>>,
    config: Arc<Config>,
    store: PathBuf,
    ended: Arc<Mutex<HashMap<u64, Ended>>>,
    /// Session id of each accepted connection, by the client's port.
    sessions: Arc<Mutex<HashMap<u16, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _audit: AuditHandle,
    _writer: WriterTask,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Proxy {
    async fn start(pg: &PgServer, spec: Spec<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        let password = spec.password.unwrap_or_else(|| pg.password(spec.role));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(spec.password_mode)).unwrap();
        let mut toml = format!(
            "[agent]\nstate_dir = \"{state}\"\n\n\
             [[target]]\nname = \"pg\"\nprotocol = \"postgres\"\naddress = \"{addr}\"\n\
             tls = {{ mode = \"verify-full\", ca_file = \"{ca}\" }}\n{extra}\n\n",
            state = dir.path().join("state").display(),
            addr = pg.addr(),
            ca = pg.ca_pem_path().display(),
            extra = spec.target_extra,
        );
        for (i, a) in spec.accounts.iter().enumerate() {
            toml.push_str(&format!(
                "[[account]]\nname = \"{a}\"\nuids = [{uid}]\n\n\
                 [[grant]]\naccount = \"{a}\"\ntarget = \"pg\"\ndatabase = \"{db}\"\n\
                 upstream_user = \"{role}\"\npassword_file = \"{pw}\"\npolicy = \"p\"\n{masking}\n{grant_extra}\n\n",
                uid = 42_000 + i,
                db = pg::DB,
                role = spec.role,
                grant_extra = spec.grant_extra,
                pw = pw.display(),
                masking = if spec.masking.is_some() {
                    "masking = \"m\""
                } else {
                    ""
                },
            ));
        }
        toml.push_str(&format!("[policy.p]\n{}\n\n", spec.policy));
        if let Some(m) = spec.masking {
            toml.push_str(&format!("[masking.m]\n{m}\n"));
        }
        let config = Config::parse(&toml, &dir.path().join("warden.toml"))
            .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
        let rt = Arc::new(PgRuntime::build(&config).unwrap_or_else(|e| panic!("runtime: {e}")));
        let runtime = Arc::new(std::sync::RwLock::new(rt));
        let config = Arc::new(config);
        let store = dir.path().join("audit.db");
        let opts = WriterOptions {
            sync: warden::audit::SyncMode::Normal,
            ..WriterOptions::default()
        };
        let (audit, writer) = warden::audit::spawn_writer(&store, opts).unwrap();
        let ended = Arc::new(Mutex::new(HashMap::new()));
        let sessions = Arc::new(Mutex::new(HashMap::new()));
        let next = Arc::new(AtomicU64::new(1));
        let mut addrs = HashMap::new();
        let mut tasks = Vec::new();
        for account in spec.accounts {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert((*account).to_owned(), listener.local_addr().unwrap());
            let (runtime, config, audit) =
                (Arc::clone(&runtime), Arc::clone(&config), audit.clone());
            let (ended, sessions, next) =
                (Arc::clone(&ended), Arc::clone(&sessions), Arc::clone(&next));
            let account = (*account).to_owned();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        return;
                    };
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    sessions.lock().unwrap().insert(peer.port(), id);
                    // As the daemon does: the runtime in force at accept.
                    let rt = Arc::clone(&runtime.read().unwrap());
                    let (config, audit) = (Arc::clone(&config), audit.clone());
                    let ended = Arc::clone(&ended);
                    let account = account.clone();
                    tokio::spawn(async move {
                        let served = tokio::spawn(async move {
                            let caller = Caller {
                                session: SessionId(id),
                                account,
                                process: ProcessInfo::default(),
                                identity: None,
                            };
                            let target = &config.targets[0];
                            serve(&rt, &config, &audit, target, caller, tcp).await
                        })
                        .await;
                        let e = match served {
                            Ok(o) => Ended {
                                reason: o.reason,
                                detail: o.detail,
                            },
                            Err(e) => Ended {
                                reason: Some("PANIC".into()),
                                detail: Some(e.to_string()),
                            },
                        };
                        ended.lock().unwrap().insert(id, e);
                    });
                }
            }));
        }
        Self {
            addrs,
            runtime,
            config,
            store,
            ended,
            sessions,
            tasks,
            _audit: audit,
            _writer: writer,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addrs["app"]
    }

    /// What a configuration reload does to the PostgreSQL runtime: a new
    /// one for new connections, keeping the previous one's cancel keys.
    fn reload(&self) {
        let mut next = PgRuntime::build(&self.config).unwrap();
        let mut slot = self.runtime.write().unwrap();
        next.keep_cancels_of(&slot);
        *slot = Arc::new(next);
    }

    fn conn_string(&self) -> String {
        self.conn_string_for("app")
    }

    fn conn_string_for(&self, account: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=workload dbname={} sslmode=disable",
            self.addrs[account].port(),
            pg::DB
        )
    }

    async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.conn_string()).await
    }

    /// How the session of the client at `port` ended (waits up to 10 s).
    async fn ended(&self, port: u16) -> Ended {
        let start = Instant::now();
        loop {
            let id = self.sessions.lock().unwrap().get(&port).copied();
            if let Some(e) = id.and_then(|id| self.ended.lock().unwrap().get(&id).cloned()) {
                assert_ne!(e.reason.as_deref(), Some("PANIC"), "{e:?}");
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "session of port {port} did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn any_panic(&self) -> Option<Ended> {
        self.ended
            .lock()
            .unwrap()
            .values()
            .find(|e| e.reason.as_deref() == Some("PANIC"))
            .cloned()
    }

    /// Statements of every session, in store order (waits until `want`
    /// have both request and result, or 5 s).
    async fn statements(&self, want: usize) -> Vec<ReplayStatement> {
        let start = Instant::now();
        loop {
            let ids: Vec<u64> = self.ended_or_open_ids();
            let mut out = Vec::new();
            for id in ids {
                if let Some(r) = warden::audit::replay::load(&self.store, SessionId(id)).unwrap() {
                    for s in r.steps {
                        if let Step::Statement(st) = s {
                            out.push(st);
                        }
                    }
                }
            }
            let complete = out
                .iter()
                .filter(|s| s.request.is_some() && (s.result.is_some() || refused(s)))
                .count();
            if complete >= want || start.elapsed() > Duration::from_secs(5) {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ended_or_open_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.sessions.lock().unwrap().values().copied().collect();
        ids.sort_unstable();
        ids
    }
}

fn refused(s: &ReplayStatement) -> bool {
    s.request
        .as_ref()
        .is_some_and(|r| r.decision != StatementDecision::Allowed)
}

fn sql_of(s: &ReplayStatement) -> String {
    s.request
        .as_ref()
        .or(s.result.as_ref())
        .map(|r| r.statement.clone())
        .unwrap_or_default()
}

async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn}: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn direct_conn(pg: &PgServer, role: &str) -> String {
    format!("{} sslmode=disable", pg.conn_string(role, pg::DB))
}

/// Runs `f` on a fresh runtime after the shared server is up (its start
/// blocks).
fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce(&'static PgServer) -> F) {
    let pg = PgServer::shared();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), f(pg)).await })
        .expect("test timed out");
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e:?}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// A client speaking the wire protocol directly, through Warden's codec.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

/// A server message as the tests look at it (fields not compared are kept
/// for failure messages).
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Msg {
    Error {
        code: String,
        message: String,
        severity: String,
    },
    Row(Vec<Option<Vec<u8>>>),
    Ready(u8),
    Notification {
        channel: String,
        payload: String,
    },
    Key {
        process_id: i32,
        secret_key: Vec<u8>,
    },
    CopyData(Vec<u8>),
    Notice {
        message: String,
    },
    FunctionResult(Option<Vec<u8>>),
    Other(u8),
}

impl Raw {
    async fn tcp(addr: SocketAddr) -> Self {
        Self {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    fn port(&self) -> u16 {
        self.tcp.local_addr().unwrap().port()
    }

    async fn startup(addr: SocketAddr, params: &[(&str, &str)]) -> (Self, Vec<Msg>) {
        let mut r = Self::tcp(addr).await;
        let mut b = BytesMut::new();
        StartupMessage {
            version: ProtocolVersion::V3_0,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
        .encode(&mut b)
        .unwrap();
        r.send(&b).await;
        let msgs = r.until_ready().await;
        (r, msgs)
    }

    async fn session(addr: SocketAddr) -> (Self, i32, Vec<u8>) {
        let (r, msgs) = Self::startup(addr, &[("user", "workload"), ("database", pg::DB)]).await;
        let key = msgs.iter().find_map(|m| match m {
            Msg::Key {
                process_id,
                secret_key,
            } => Some((*process_id, secret_key.clone())),
            _ => None,
        });
        let (pid, key) = key.unwrap_or_else(|| panic!("no BackendKeyData: {msgs:?}"));
        (r, pid, key)
    }

    async fn send(&mut self, b: &[u8]) {
        self.tcp.write_all(b).await.unwrap();
    }

    /// The next message, or `None` when the connection closed (10 s limit).
    async fn recv(&mut self) -> Option<Msg> {
        let frame = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(f) = decode_frame(&mut self.buf, 1 << 30).unwrap() {
                    return Some(f);
                }
                match self.tcp.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no answer within 10 s")?;
        Some(to_msg(&frame))
    }

    /// Messages up to and including ReadyForQuery, or up to the close.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = matches!(m, Msg::Ready(_));
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut b = BytesMut::new();
        frontend::query(&mut b, sql).unwrap();
        self.send(&b).await;
        self.until_ready().await
    }

    /// Everything until the connection closes (10 s limit).
    async fn until_closed(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }
}

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
        let (msgs, _) = after_startup(&p, &header(b'Q', 65_537 + 4), false).await;
        fatal_08p01("past the maximum", &msgs);
        let (msgs, _) = after_startup(&p, &header(b'Q', 0x7fff_ffff), false).await;
        fatal_08p01("2 GiB", &msgs);
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
        // The server itself still refuses the write (25006): read-only holds.
        let e = c
            .simple_query("INSERT INTO public.ro_probe VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "25006", "{e:?}");
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
