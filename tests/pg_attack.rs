//! Attacks on the SQL policy (branch `attack`): every test here asserts the
//! SECURE behaviour, so a test FAILS while the bypass it describes works.
//! Findings and what held are written up in `attack-findings.md` at the
//! worktree's parent (`/work/wt/attack-findings.md`).
//!
//! Unit-level cases call `warden::policy::analyze` and `Policy::decide`;
//! end-to-end cases run through the in-process proxy (copied from
//! `pg_proxy.rs`) in front of the harness's real PostgreSQL 15.
//!
//! `cargo test -p warden --test pg_attack -- --test-threads=1`

#![allow(dead_code, unused_imports)]

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
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_postgres::{NoTls, SimpleQueryMessage};
use warden::audit::event::{ProcessInfo, SessionId, StatementDecision};
use warden::audit::replay::{ReplayStatement, Step};
use warden::audit::{AuditHandle, WriterOptions, WriterTask};
use warden::config::Config;
use warden::policy::{Action, Policy, PolicyConfig, SessionContext, StatementClass, analyze};
use warden::protocol::postgres::backend::BackendMessage;
use warden::protocol::postgres::frame::{Frame, decode_frame};
use warden::protocol::postgres::frontend;
use warden::protocol::postgres::startup::{
    CancelRequest, ProtocolVersion, StartupMessage, encode_ssl_request,
};
use warden::proxy::postgres::{Caller, PgRuntime, serve};

// ---------------------------------------------------------------------------
// Harness (from pg_proxy.rs)
// ---------------------------------------------------------------------------

const ALLOW_ALL: &str = "default = \"allow\"";

/// Reads and writes, nothing else.
const READ_WRITE: &str = r#"default = "deny"
rules = [ { action = "allow", classes = ["read", "write"] } ]"#;

/// The policy under attack (as `BLOCK_SECRETS` in pg_proxy.rs).
const BLOCK_SECRETS: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#;

fn refused(s: &ReplayStatement) -> bool {
    s.request
        .as_ref()
        .is_some_and(|r| r.decision != StatementDecision::Allowed)
}

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

// ---------------------------------------------------------------------------
// Attack helpers
// ---------------------------------------------------------------------------

fn policy(text: &str) -> Policy {
    let cfg: PolicyConfig = toml::from_str(text).unwrap();
    Policy::compile("p", &cfg).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The verdict of `BLOCK_SECRETS` on `sql` (search path as forced by default).
fn verdict(sql: &str) -> (Action, StatementClass, String) {
    let p = policy(BLOCK_SECRETS);
    let ctx = SessionContext::new(vec!["orders_ro".into(), "public".into()]);
    let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let v = p.decide(&a, &ctx);
    (v.action, v.class, v.reason)
}

fn class(sql: &str) -> StatementClass {
    analyze(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .class()
}

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

/// Every statement that the proxy let through (no error at all): each is a
/// bypass when the caller expects all of them to be refused.
async fn let_through(c: &tokio_postgres::Client, sqls: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for sql in sqls {
        if let Ok(r) = c.simple_query(sql).await {
            out.push(format!("{sql} => {:?}", simple_summary(Ok(r))));
        }
    }
    out
}

/// Every secret value of the data set (secrets and payroll rows).
fn secret_values() -> Vec<String> {
    let mut v: Vec<String> = pg::SECRETS.iter().map(|(_, s)| (*s).to_owned()).collect();
    v.extend(pg::PAYROLL.iter().map(|(_, _, iban)| (*iban).to_owned()));
    v.extend(
        pg::PAYROLL
            .iter()
            .map(|(_, salary, _)| (*salary).to_owned()),
    );
    v
}

fn leaks(text: &str) -> Option<String> {
    secret_values()
        .into_iter()
        .find(|s| text.contains(s.as_str()))
}

// ---------------------------------------------------------------------------
// Unit level: classification and functions
// ---------------------------------------------------------------------------

/// FINDING: `ORDER BY x USING op` names an operator (SortBy.useOp) that the
/// walker never reports: an operator outside the safe list (an extension's,
/// or any schema-qualified one) runs without the statement being raised to
/// privileged. `OPERATOR(public.+)` in an expression is refused today.
#[test]
fn unit_order_by_using_operator_is_checked_against_the_safe_list() {
    let (a, _, _) = verdict("SELECT 1 OPERATOR(public.+) 1");
    assert_ne!(
        a,
        Action::Allow,
        "control: an expression operator is checked"
    );
    for sql in [
        "SELECT id FROM orders ORDER BY id USING OPERATOR(public.<)",
        "SELECT id FROM orders ORDER BY id USING OPERATOR(attacker.<<<)",
        "SELECT array_agg(id ORDER BY id USING OPERATOR(public.>)) FROM orders",
    ] {
        let (a, c, why) = verdict(sql);
        assert_ne!(a, Action::Allow, "{sql}: allowed as {c}: {why}");
    }
}

/// FINDING: `ALTER TABLE/SEQUENCE/VIEW … OWNER TO` is an AlterTableStmt and
/// is classed `ddl`, while every other ownership change (AlterOwnerStmt) is
/// `privileged` as the module documentation promises ("ownership changes").
#[test]
fn unit_ownership_changes_of_relations_are_privileged() {
    assert_eq!(
        class("ALTER SCHEMA s OWNER TO postgres"),
        StatementClass::Privileged
    );
    let mut wrong = Vec::new();
    for sql in [
        "ALTER TABLE orders OWNER TO postgres",
        "ALTER SEQUENCE orders_id_seq OWNER TO postgres",
        "ALTER VIEW v OWNER TO postgres",
        "ALTER MATERIALIZED VIEW m OWNER TO postgres",
        "ALTER FOREIGN TABLE f OWNER TO postgres",
        "ALTER INDEX i OWNER TO postgres",
    ] {
        let c = class(sql);
        if c != StatementClass::Privileged {
            wrong.push(format!("{sql}: {c}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// FINDING: `COPY rel TO STDOUT` adds the relation without the statistics
/// check `range_var` does, so `COPY pg_statistic TO STDOUT` is `read` while
/// `SELECT * FROM pg_statistic` is `privileged`.
#[test]
fn unit_copy_of_a_statistics_relation_is_privileged() {
    assert_eq!(
        class("SELECT * FROM pg_statistic"),
        StatementClass::Privileged
    );
    for sql in [
        "COPY pg_statistic TO STDOUT",
        "COPY pg_catalog.pg_statistic_ext_data TO STDOUT",
        "COPY pg_statistic (stavalues1) TO STDOUT",
    ] {
        assert_eq!(class(sql), StatementClass::Privileged, "{sql}");
    }
}

/// FINDING: functions on the safe list that change the database are classed
/// `read`: BRIN summarisation and GIN pending-list cleanup rewrite index
/// pages (the server lets the index owner run them, also in a read-only
/// transaction); `txid_current`/`pg_current_xact_id` assign a transaction id.
#[test]
fn unit_safe_functions_with_side_effects_are_not_read() {
    let mut wrong = Vec::new();
    for sql in [
        "SELECT brin_summarize_new_values('i'::regclass)",
        "SELECT brin_summarize_range('i'::regclass, 0)",
        "SELECT brin_desummarize_range('i'::regclass, 0)",
        "SELECT gin_clean_pending_list('i'::regclass)",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "SELECT setseed(0.5)",
    ] {
        // Off the safe list: a policy then classes the statement
        // `privileged` unless an allow rule names the function.
        let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        if a.statements
            .iter()
            .all(|s| s.functions.iter().all(|f| f.safe))
        {
            wrong.push(sql.to_owned());
        }
    }
    assert!(wrong.is_empty(), "trusted as safe: {wrong:#?}");
}

/// FINDING: catalog views that call functions excluded from the safe list
/// are plain relations to the policy: reading them runs
/// `pg_get_replication_slots`, `pg_stat_get_activity`,
/// `pg_stat_get_progress_info`, `pg_lock_status`-like functions the list
/// refuses when called by name. Only a fixed deny-list of eight statistics
/// relations is checked.
#[test]
fn unit_catalog_views_over_excluded_functions_are_privileged() {
    let mut wrong = Vec::new();
    for (view, func) in [
        ("pg_replication_slots", "pg_get_replication_slots()"),
        ("pg_stat_replication", "pg_stat_get_activity(NULL)"),
        ("pg_stat_ssl", "pg_stat_get_activity(NULL)"),
        ("pg_stat_gssapi", "pg_stat_get_activity(NULL)"),
        (
            "pg_stat_progress_vacuum",
            "pg_stat_get_progress_info('VACUUM')",
        ),
        ("pg_stat_progress_copy", "pg_stat_get_progress_info('COPY')"),
        (
            "pg_stat_progress_create_index",
            "pg_stat_get_progress_info('CREATE INDEX')",
        ),
    ] {
        let by_name = verdict(&format!("SELECT * FROM {func}"));
        assert_ne!(by_name.0, Action::Allow, "control: {func} by name");
        let (a, c, why) = verdict(&format!("SELECT * FROM {view}"));
        if a == Action::Allow {
            wrong.push(format!("{view} ({c}: {why})"));
        }
    }
    assert!(wrong.is_empty(), "allowed: {wrong:#?}");
}

// ---------------------------------------------------------------------------
// End to end: the policy under attack
// ---------------------------------------------------------------------------

/// Ways to reach the blocked tables' rows: none may return a secret value,
/// in rows or in error texts (simple and extended protocol).
#[test]
fn attack_no_statement_returns_a_blocked_row() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        let sqls = [
            "TABLE secrets",
            "SELECT * FROM ONLY secrets",
            "SELECT * FROM ONLY public.payroll",
            "SELECT * FROM \"secrets\"",
            "SELECT * FROM SECRETS",
            "SELECT * FROM U&\"secr\\0065ts\"",
            "SELECT * FROM U&\"secr!0065ts\" UESCAPE '!'",
            "SELECT * FROM orders.public.secrets",
            "SELECT * FROM \"public\" . \"payroll\"",
            "select * from PUBLIC.PAYROLL",
            "SELECT * FROM payroll",
            "SELECT * FROM pg_temp.secrets",
            "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
            "WITH RECURSIVE secrets AS (SELECT * FROM public.secrets) SELECT * FROM secrets",
            "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a",
            "WITH secrets AS (SELECT 1 AS v) SELECT * FROM (WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets) x",
            "SELECT * FROM orders o, LATERAL (SELECT value FROM secrets) s",
            "SELECT * FROM ROWS FROM (json_populate_record(NULL::secrets, '{}'))",
            "SELECT * FROM XMLTABLE('/r' PASSING (SELECT xmlelement(name r, string_agg(value, ',')) FROM secrets) COLUMNS v text PATH '.')",
            "COPY secrets TO STDOUT",
            "COPY (TABLE secrets) TO STDOUT",
            "COPY public.payroll (iban) TO STDOUT",
            "BEGIN; DECLARE c CURSOR FOR SELECT * FROM secrets; FETCH ALL FROM c; COMMIT",
            "PREPARE s AS SELECT * FROM secrets",
            "EXECUTE s",
            "EXPLAIN ANALYZE SELECT * FROM secrets",
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM secrets",
            "SELECT histogram_bounds::text, most_common_vals::text FROM pg_stats WHERE tablename IN ('secrets', 'payroll')",
            "SELECT most_common_vals::text FROM \"pg_catalog\".\"pg_stats\"",
            "SELECT * FROM pg_stats_ext",
            "SELECT row_to_json(s) FROM secrets s",
            "SELECT (SELECT string_agg(value, ',') FROM secrets)",
            "SELECT * FROM orders WHERE note NOT IN (SELECT value FROM secrets)",
            "SELECT p.* FROM orders o JOIN payroll p ON true",
            "SELECT s.* FROM (TABLE secrets) s",
            "VALUES ((SELECT value FROM secrets LIMIT 1))",
            "SELECT value::int FROM secrets",
            "SELECT * FROM (SELECT * FROM secrets) AS orders",
            "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')",
            "SELECT cursor_to_xml('c', 10, true, true, '')",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT value::tsquery, value::tsquery FROM secrets')",
            "SELECT * FROM ts_stat('SELECT to_tsvector(value) FROM secrets')",
            "SELECT xpath('/x', table_to_xml('secrets', true, true, ''))",
            "SELECT 1 WHERE EXISTS (SELECT FROM secrets)",
            "SELECT * FROM orders ORDER BY (SELECT value FROM secrets LIMIT 1)",
            "SELECT * FROM orders GROUP BY id HAVING (SELECT count(*) FROM payroll) > 0",
            "SELECT * FROM orders WINDOW w AS (ORDER BY (SELECT value FROM secrets LIMIT 1))",
            "SELECT * FROM orders TABLESAMPLE system (100) JOIN secrets ON true",
            "SELECT * FROM json_to_recordset((SELECT json_agg(s) FROM secrets s)) AS x(value text)",
        ];
        let mut found = Vec::new();
        for sql in sqls {
            match c.simple_query(sql).await {
                Ok(r) => {
                    let s = format!("{:?}", simple_summary(Ok(r)));
                    if let Some(v) = leaks(&s) {
                        found.push(format!("simple {sql}: {v}"));
                    }
                }
                Err(e) => {
                    let s = format!("{e:?}");
                    if let Some(v) = leaks(&s) {
                        found.push(format!("simple error {sql}: {v}"));
                    }
                }
            }
            match c.query(sql, &[]).await {
                Ok(rows) => {
                    let s: Vec<String> = rows
                        .iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| format!("{:?}", r.try_get::<_, Option<String>>(i).ok()))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect();
                    if let Some(v) = leaks(&s.join("\n")) {
                        found.push(format!("extended {sql}: {v}"));
                    }
                }
                Err(e) => {
                    if let Some(v) = leaks(&format!("{e:?}")) {
                        found.push(format!("extended error {sql}: {v}"));
                    }
                }
            }
        }
        assert!(found.is_empty(), "secret values returned: {found:#?}");
    });
}

/// Catalog views that run functions outside the safe list are readable
/// (`pg_get_replication_slots`, `pg_stat_get_activity`,
/// `pg_stat_get_progress_info`), though each function is refused by name.
#[test]
fn attack_catalog_views_run_functions_outside_the_safe_list() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        // Control: the functions by name are refused.
        for sql in [
            "SELECT * FROM pg_get_replication_slots()",
            "SELECT * FROM pg_stat_get_activity(NULL)",
            "SELECT * FROM pg_stat_get_progress_info('VACUUM')",
        ] {
            let e = c.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}");
        }
        let through = let_through(
            &c,
            &[
                "SELECT * FROM pg_replication_slots",
                "SELECT pid, usename, application_name, client_addr FROM pg_stat_replication",
                "SELECT pid, ssl, client_dn FROM pg_stat_ssl",
                "SELECT * FROM pg_stat_gssapi",
                "SELECT * FROM pg_stat_progress_vacuum",
                "SELECT * FROM pg_stat_progress_copy",
            ],
        )
        .await;
        assert!(through.is_empty(), "allowed: {through:#?}");
    });
}

/// search_path and role: tricks that must leave both as forced.
#[test]
fn attack_search_path_and_role_stay_fixed() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        let path0: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
        for sql in [
            "RESET ROLE",
            "SET ROLE NONE",
            "SET SESSION AUTHORIZATION DEFAULT",
            "RESET SESSION AUTHORIZATION",
            "SET search_path FROM CURRENT",
            "SET \"SEARCH_PATH\" = nosuch",
            "SET LOCAL \"search_path\" TO nosuch",
            "SET SCHEMA 'nosuch'",
            "BEGIN; SET LOCAL search_path = nosuch; COMMIT",
            "SELECT set_config('search_path', 'nosuch', false) WHERE false",
            "SELECT pg_catalog.set_config(current_setting('search_path'), 'x', false)",
            "SET SESSION search_path = nosuch",
            "SET role = postgres",
            "SET session_authorization = postgres",
            "PREPARE q AS SELECT set_config('search_path', 'nosuch', false)",
        ] {
            let _ = c.simple_query(sql).await;
            let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
            let user: String = c
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(path, path0, "after {sql}");
            assert_eq!(user, pg::ORDERS_RO, "after {sql}");
        }
        let e = c.simple_query("SELECT * FROM payroll").await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
    });
}

/// FINDING: a `read_only = true` grant relies on the server's read-only
/// transactions, which PostgreSQL 15 lets run LOCK TABLE in every mode
/// (ACCESS EXCLUSIVE blocks every other session's reads), NOTIFY and
/// pg_notify, and BRIN/GIN maintenance functions. Warden classes LOCK and
/// NOTIFY as `write` itself, and the grant's read+write policy allows them.
#[test]
fn attack_read_only_grant_cannot_write_lock_or_notify() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.ro_attack; \
             CREATE TABLE public.ro_attack (id int, t tsvector); \
             ALTER TABLE public.ro_attack OWNER TO orders_rw; \
             CREATE INDEX ro_attack_brin ON public.ro_attack USING brin (id); \
             CREATE INDEX ro_attack_gin ON public.ro_attack USING gin (t) WITH (fastupdate = on); \
             ALTER INDEX ro_attack_brin OWNER TO orders_rw; \
             ALTER INDEX ro_attack_gin OWNER TO orders_rw; \
             INSERT INTO public.ro_attack SELECT g, to_tsvector('x' || g) FROM generate_series(1, 1000) g",
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
        // Control: writes are refused by Warden (42501), before the
        // server's read-only transaction would (25006).
        let e = c
            .simple_query("INSERT INTO public.ro_attack VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        let through = let_through(
            &c,
            &[
                "BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE; COMMIT",
                "BEGIN; LOCK TABLE public.ro_attack IN EXCLUSIVE MODE; COMMIT",
                "SELECT id FROM public.orders LIMIT 1 FOR UPDATE",
                "SELECT txid_current() IS NULL",
                "NOTIFY attack, 'forged payload'",
                "SELECT pg_notify('attack', 'forged payload')",
                "SELECT brin_summarize_new_values('public.ro_attack_brin'::regclass)",
                "SELECT brin_desummarize_range('public.ro_attack_brin'::regclass, 0)",
                "SELECT gin_clean_pending_list('public.ro_attack_gin'::regclass)",
            ],
        )
        .await;
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.ro_attack");
        assert!(through.is_empty(), "ran on a read-only grant: {through:#?}");
    });
}

/// Ways to leave read-only that must all be refused (these held).
#[test]
fn attack_read_only_grant_cannot_be_made_writable() {
    run(|pg| async move {
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
        for sql in [
            "SET default_transaction_read_only = 'of'",
            "SET default_transaction_read_only TO DEFAULT",
            "SET transaction_read_only = 0",
            "BEGIN TRANSACTION READ ONLY, READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, READ WRITE",
            "BEGIN; SET LOCAL default_transaction_read_only = off; COMMIT",
            "SET \"DEFAULT_TRANSACTION_READ_ONLY\" = off",
            "PREPARE w AS INSERT INTO orders (note) VALUES ('x')",
            "RESET ALL",
            "DISCARD ALL",
            "SET SESSION AUTHORIZATION DEFAULT",
            "RESET ROLE",
        ] {
            let _ = c.simple_query(sql).await;
            let _ = c.simple_query("ROLLBACK").await;
            let ro: String = c
                .query_one("SHOW default_transaction_read_only", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(ro, "on", "after {sql}");
            let e = c
                .simple_query("INSERT INTO orders (note) VALUES ('ro-attack')")
                .await
                .unwrap_err();
            assert!(
                matches!(sqlstate(&e).as_str(), "42501" | "25006"),
                "after {sql}: {e:?}"
            );
            if let Ok(r) = c.simple_query("EXECUTE w").await {
                panic!("after {sql}: EXECUTE w wrote: {:?}", simple_summary(Ok(r)));
            }
        }
    });
}

/// FINDING: operators are trusted by symbol. An operator with a built-in
/// symbol that resolves to a non-built-in function (an extension's, or one
/// any role with CREATE on a path schema made: `+` on (text, text) has no
/// pg_catalog competitor, so the path's wins) runs that function inside a
/// `read` statement: here it returns every row of the blocked `secrets`.
#[test]
fn attack_builtin_operator_symbols_resolve_to_user_functions() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP OPERATOR IF EXISTS public.+ (text, text); \
             DROP FUNCTION IF EXISTS public.attack_plus(text, text); \
             CREATE FUNCTION public.attack_plus(text, text) RETURNS text LANGUAGE sql \
               AS $$ SELECT string_agg(value, ',') FROM public.secrets $$; \
             CREATE OPERATOR public.+ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.attack_plus)",
        );
        let (_p, c) = block_secrets(pg).await;
        // Control: the function by name is refused.
        let e = c
            .simple_query("SELECT public.attack_plus('a', 'b')")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        let r = c.simple_query("SELECT 'a'::text + 'b'::text").await;
        let r2 = c
            .simple_query("SELECT note + note FROM orders LIMIT 1")
            .await;
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP OPERATOR public.+ (text, text); DROP FUNCTION public.attack_plus(text, text)",
        );
        for (sql, r) in [("'a'::text + 'b'::text", r), ("note + note", r2)] {
            if let Ok(rows) = r {
                let s = format!("{:?}", simple_summary(Ok(rows)));
                panic!("{sql}: not refused, leaks {:?}: {s}", leaks(&s));
            }
        }
    });
}

/// FINDING: with a policy that allows `ddl` (only temporary objects are
/// needed: every role has TEMP), a function body given as a string is never
/// analysed, and CREATE TRIGGER names its function without a call the
/// walker sees. A trigger on a temporary table then reads the blocked
/// table on each INSERT (`write`), and a SELECT returns its rows.
#[test]
fn attack_ddl_policy_trigger_with_opaque_body_reads_blocked_table() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                policy: r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write", "ddl"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#,
                ..Spec::default()
            },
        )
        .await;
        let c = p.connect().await;
        let e = c.simple_query("SELECT * FROM secrets").await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "control");
        let steps = [
            "CREATE TEMP TABLE grab (v text)",
            "CREATE FUNCTION pg_temp.grab() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN NEW.v := (SELECT string_agg(value, ',') FROM public.secrets); RETURN NEW; END$$",
            "CREATE TRIGGER grab BEFORE INSERT ON grab FOR EACH ROW EXECUTE FUNCTION pg_temp.grab()",
            "INSERT INTO grab VALUES ('x')",
            "SELECT v FROM grab",
        ];
        let mut out = Vec::new();
        for sql in steps {
            match c.simple_query(sql).await {
                Ok(r) => out.push(format!("{:?}", simple_summary(Ok(r)))),
                Err(e) => {
                    out.push(format!("refused {sql}: {}", sqlstate(&e)));
                    break;
                }
            }
        }
        let all = out.join("\n");
        assert!(
            leaks(&all).is_none(),
            "secrets read through a trigger: {all}"
        );
    });
}

async fn function_call(r: &mut Raw, oid: u32, args: &[&str]) -> Vec<Msg> {
    let mut b = BytesMut::new();
    let args: Vec<Option<&[u8]>> = args.iter().map(|a| Some(a.as_bytes())).collect();
    frontend::function_call(&mut b, oid, &[], &args, 0).unwrap();
    r.send(&b).await;
    r.until_ready().await
}

/// FINDING: a FunctionCall is decided as `SELECT schema.name()` built by
/// splitting the looked-up `nspname.proname` on '.', but PostgreSQL names
/// may contain dots: `public."pg_catalog.lower"` becomes
/// `"public"."pg_catalog"."lower"()`, read as catalog.schema.name, i.e. the
/// built-in safe `lower`. Its body here returns the blocked table.
#[test]
fn attack_function_call_with_a_dotted_name_is_taken_for_a_builtin() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP FUNCTION IF EXISTS public.\"pg_catalog.lower\"(); \
             CREATE FUNCTION public.\"pg_catalog.lower\"() RETURNS text LANGUAGE sql \
               AS $$ SELECT string_agg(value, ',') FROM public.secrets $$; \
             GRANT EXECUTE ON FUNCTION public.\"pg_catalog.lower\"() TO PUBLIC",
        );
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let oid: u32 = direct
            .query_one(
                "SELECT 'public.\"pg_catalog.lower\"()'::regprocedure::oid",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let (p, c) = block_secrets(pg).await;
        // Control: by SQL the function is refused.
        let e = c
            .simple_query("SELECT public.\"pg_catalog.lower\"()")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = function_call(&mut r, oid, &[]).await;
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP FUNCTION public.\"pg_catalog.lower\"()",
        );
        let result = msgs.iter().find_map(|m| match m {
            Msg::FunctionResult(Some(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        });
        assert!(
            result.is_none(),
            "FunctionCall ran public.\"pg_catalog.lower\"(): {result:?}"
        );
    });
}

/// FINDING (unit level of the trigger attack): with `ddl` allowed, a
/// function body given as a string is opaque to the walker: the block on
/// `secrets` does not see it, and neither do CREATE TRIGGER / CREATE
/// OPERATOR / CREATE CAST / CREATE AGGREGATE, which name functions without
/// a call. (A SQL-standard `BEGIN ATOMIC` body is parsed and caught.)
#[test]
fn unit_ddl_function_bodies_and_references_are_seen() {
    let p = policy(
        r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write", "ddl"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#,
    );
    let ctx = SessionContext::new(vec!["orders_ro".into(), "public".into()]);
    let decide = |sql: &str| p.decide(&analyze(sql).unwrap(), &ctx);
    let control = decide(
        "CREATE FUNCTION pg_temp.f() RETURNS SETOF text LANGUAGE sql BEGIN ATOMIC SELECT value FROM secrets; END",
    );
    assert_ne!(control.action, Action::Allow, "control: parsed body");
    let mut wrong = Vec::new();
    for sql in [
        "CREATE FUNCTION pg_temp.f() RETURNS SETOF text LANGUAGE sql AS 'SELECT value FROM secrets'",
        "CREATE FUNCTION pg_temp.g() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM * FROM payroll; RETURN NEW; END$$",
        "CREATE TRIGGER t BEFORE INSERT ON tt FOR EACH ROW EXECUTE FUNCTION pg_temp.g()",
        "CREATE OPERATOR public.+ (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_temp.h)",
        "CREATE CAST (text AS pg_temp.t) WITH FUNCTION pg_temp.k(text) AS IMPLICIT",
        "CREATE AGGREGATE pg_temp.a(text) (SFUNC = pg_temp.s, STYPE = text)",
    ] {
        let v = decide(sql);
        if v.action == Action::Allow {
            wrong.push(format!("{sql}: {}", v.reason));
        }
    }
    assert!(wrong.is_empty(), "allowed: {wrong:#?}");
}

/// FINDING (the function form of the operator finding): a safe-listed name
/// resolves to the path's function when it matches the arguments better
/// (`public.lower(integer)` beats `pg_catalog.lower(text)` for `lower(1)`);
/// extensions install such overloads in `public`.
#[test]
fn attack_safe_function_names_resolve_to_user_overloads() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP FUNCTION IF EXISTS public.lower(integer); \
             CREATE FUNCTION public.lower(integer) RETURNS text LANGUAGE sql \
               AS $$ SELECT string_agg(value, ',') FROM public.secrets $$",
        );
        let (_p, c) = block_secrets(pg).await;
        let r = c.simple_query("SELECT lower(1)").await;
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP FUNCTION public.lower(integer)");
        if let Ok(rows) = r {
            let s = format!("{:?}", simple_summary(Ok(rows)));
            panic!("lower(1): not refused, leaks {:?}: {s}", leaks(&s));
        }
    });
}

/// FINDING (low): safe-listed functions that take a relation by name or
/// regclass report facts of a blocked table without it being a table
/// reference: size, live row count, whether a tuple id exists.
#[test]
fn unit_blocked_tables_are_not_reachable_by_regclass_functions() {
    let mut wrong = Vec::new();
    for sql in [
        "SELECT pg_stat_get_live_tuples('public.payroll'::regclass)",
        "SELECT pg_stat_get_numscans('secrets'::regclass)",
        "SELECT currtid2('secrets', '(0,1)'::tid)",
    ] {
        let (a, c, why) = verdict(sql);
        if a == Action::Allow {
            wrong.push(format!("{sql} ({c}: {why})"));
        }
    }
    assert!(wrong.is_empty(), "allowed: {wrong:#?}");
}

/// Probe (held if it passes): XML constructs are not function calls to the
/// walker (XmlExpr); an external entity must not read a server file.
#[test]
fn attack_xml_external_entities_do_not_read_files() {
    run(|pg| async move {
        let (_p, c) = block_secrets(pg).await;
        for sql in [
            "SELECT xmlparse(document '<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>')::text",
            "SELECT xpath('/x/text()', xmlparse(document '<!DOCTYPE x [<!ENTITY e SYSTEM \"/etc/passwd\">]><x>&e;</x>'))::text",
            "SELECT xmlserialize(document xmlparse(document '<!DOCTYPE x SYSTEM \"/etc/passwd\"><x/>') as text)",
        ] {
            let s = format!("{:?}", simple_summary(c.simple_query(sql).await));
            assert!(!s.contains("root:"), "{sql}: {s}");
        }
    });
}

// ---------------------------------------------------------------------------
// Session 3 attacks (branch s3-attack): settings changed where the analysis
// does not look, and what the server lexes before it reports them.
// ---------------------------------------------------------------------------

/// Reads and writes, with the blocked tables of `BLOCK_SECRETS`.
const READ_WRITE_BLOCK: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#;

/// As `READ_WRITE_BLOCK`, trusting `set_config` (services set
/// `app.tenant` for row security this way).
const SET_CONFIG_TRUSTED: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "allow", functions = ["set_config"], name = "tenant" },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#;

/// A text PostgreSQL lexes differently with `standard_conforming_strings`
/// off: Warden (on) sees two string constants; the server (off) reads the
/// second one as a sub-query of the blocked table.
const SCS_OFF_READS_SECRETS: &str =
    "SELECT '\\' AS a, ' AS b, (SELECT string_agg(value, $$,$$) FROM secrets) AS c --'";

/// Parse/Bind/Execute of each statement (unnamed), then one Sync: one
/// batch, as a pipelining driver sends it.
fn pipeline(stmts: &[(&str, &[Option<&[u8]>])]) -> BytesMut {
    let mut b = BytesMut::new();
    for (sql, params) in stmts {
        frontend::parse(&mut b, "", sql, &[]).unwrap();
        frontend::bind(&mut b, "", "", &[], params, &[]).unwrap();
        frontend::execute(&mut b, "", 0).unwrap();
    }
    frontend::sync(&mut b);
    b
}

/// A proxy granting `policy` to the read-write role, and a raw session.
async fn rw_session(pg: &PgServer, policy: &'static str) -> (Proxy, Raw) {
    let p = Proxy::start(
        pg,
        Spec {
            role: pg::ORDERS_RW,
            policy,
            ..Spec::default()
        },
    )
    .await;
    let (r, _, _) = Raw::session(p.addr()).await;
    (p, r)
}

/// Every row value and error text of `msgs`, as one string.
fn all_text(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| match m {
            Msg::Row(r) => r.iter().map(text).collect::<Vec<_>>().join("|"),
            Msg::Error { message, .. } | Msg::Notice { message } => message.clone(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// FINDING S3-1: `pg_settings` is a view with an UPDATE rule that calls
/// `set_config`, and PUBLIC may update it. Warden saw an UPDATE of a table
/// (class `write`), so any grant that allows writes changed any setting:
/// the tokenisation settings, search_path, planner settings under masking.
#[test]
fn unit_writes_to_system_catalogs_are_privileged() {
    let mut wrong = Vec::new();
    for sql in [
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "UPDATE pg_catalog.pg_settings SET setting = 'nosuch' WHERE name = 'search_path'",
        "UPDATE ONLY \"pg_settings\" SET setting = 'off' WHERE name = 'enable_seqscan'",
        "WITH u AS (UPDATE pg_settings SET setting = 'LATIN1' WHERE name = 'client_encoding' RETURNING 1) SELECT 1",
        "EXPLAIN ANALYZE UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "INSERT INTO pg_catalog.pg_settings (name, setting) VALUES ('search_path', 'x')",
        "DELETE FROM information_schema.sql_features",
    ] {
        let c = class(sql);
        if c < StatementClass::Privileged {
            wrong.push(format!("{sql} ({c})"));
        }
    }
    assert!(wrong.is_empty(), "not privileged: {wrong:#?}");
}

/// FINDING S3-1, end to end: in one batch, `UPDATE pg_settings` turns
/// `standard_conforming_strings` off and the next Parse is lexed by the
/// server with it off; the server reports the change (ParameterStatus)
/// only at ReadyForQuery, after the rows of the blocked table were sent.
#[test]
fn attack_pg_settings_update_changes_tokenisation_within_a_batch() {
    run(|pg| async move {
        let (_p, mut r) = rw_session(pg, READ_WRITE_BLOCK).await;
        // Control: the blocked table is refused when named.
        assert!(
            errors(&r.query("SELECT value FROM secrets").await)
                .iter()
                .any(|e| e.1 == "42501")
        );
        r.send(&pipeline(&[
            (
                "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
                &[],
            ),
            (SCS_OFF_READS_SECRETS, &[]),
        ]))
        .await;
        let msgs = r.until_ready().await;
        let all = all_text(&msgs);
        assert!(leaks(&all).is_none(), "secrets leaked: {all}");
        let errs = errors(&msgs);
        assert!(
            errs.first().is_some_and(|e| e.1 == "42501"),
            "UPDATE pg_settings not refused: {msgs:?}"
        );
    });
}

/// FINDING S3-2: a `set_config` whose name is a literal but whose value is
/// computed (a parameter, a sub-query, an expression) was checked as if it
/// were `RESET`: a tokenisation setting, the role, or a planner setting
/// under masking could be set to anything by a grant that trusts
/// `set_config` (services set `app.tenant` with it).
#[test]
fn attack_set_config_with_a_computed_value_is_checked() {
    run(|pg| async move {
        let (p, mut r) = rw_session(pg, SET_CONFIG_TRUSTED).await;
        // Control: what the trust is for.
        let ok = r
            .query("SELECT set_config('app.tenant', (SELECT '42'), false)")
            .await;
        assert!(errors(&ok).is_empty(), "{ok:?}");
        let mut through = Vec::new();
        for sql in [
            "SELECT set_config('standard_conforming_strings', (SELECT 'off'), false)",
            "SELECT set_config('client_encoding', 'LATIN' || '1', false)",
            "SELECT set_config('backslash_quote', lower('ON'), false)",
            "SELECT set_config('role', (SELECT 'orders_rw'), false)",
            "SELECT set_config('session_authorization', current_user::text, false)",
            "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
        ] {
            let msgs = r.query(sql).await;
            if !errors(&msgs).iter().any(|e| e.1 == "42501") {
                through.push(format!("{sql}: {msgs:?}"));
                // A FATAL for the tokenisation change ends the session.
                r = Raw::session(p.addr()).await.0;
            }
        }
        // Bound as a parameter, in a batch with the statement it breaks.
        r.send(&pipeline(&[
            (
                "SELECT set_config('standard_conforming_strings', $1, false)",
                &[Some(b"off".as_slice())],
            ),
            (SCS_OFF_READS_SECRETS, &[]),
        ]))
        .await;
        let msgs = r.until_ready().await;
        let all = all_text(&msgs);
        assert!(leaks(&all).is_none(), "secrets leaked: {all}");
        assert!(through.is_empty(), "not refused: {through:#?}");
    });
}

/// FINDING S3-3: a setting changed by code Warden trusts but cannot see
/// into (a function an allow rule names, a trigger) is reported by the
/// server only at ReadyForQuery; a later Parse of the same batch was lexed
/// by the server with the new setting but decided by Warden with the old
/// one. After an Execute in an open batch, a text whose tokens depend on
/// those settings (a backslash, a non-ASCII byte) must wait for Sync.
#[test]
fn attack_trusted_function_changes_tokenisation_within_a_batch() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "CREATE OR REPLACE FUNCTION public.s3_tenant(n text, v text) RETURNS text \
             LANGUAGE sql AS $$ SELECT set_config(n, v, false) $$; \
             GRANT EXECUTE ON FUNCTION public.s3_tenant(text, text) TO PUBLIC",
        );
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP TABLE IF EXISTS public.s3_blocked; CREATE TABLE public.s3_blocked (id int); \
             GRANT INSERT, SELECT ON public.s3_blocked TO orders_rw",
        );
        let policy: &'static str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "allow", functions = ["public.s3_tenant"], name = "tenant" },
  { action = "block", tables = ["secrets", "public.payroll", "s3_blocked"], name = "no-secrets" },
]"#;
        let (p, mut r) = rw_session(pg, policy).await;
        r.send(&pipeline(&[
            (
                "SELECT public.s3_tenant('standard_conforming_strings', 'off')",
                &[],
            ),
            (SCS_OFF_READS_SECRETS, &[]),
        ]))
        .await;
        let msgs = r.until_ready().await;
        let all = all_text(&msgs);
        assert!(leaks(&all).is_none(), "secrets leaked: {all}");
        // Simple queries sent without waiting for the first one's answer:
        // the server lexes the second with the setting the first changed,
        // before Warden sees the change reported.
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut b = BytesMut::new();
        frontend::query(
            &mut b,
            "SELECT public.s3_tenant('standard_conforming_strings', 'off')",
        )
        .unwrap();
        frontend::query(
            &mut b,
            "SELECT 'a\\', ' ; INSERT INTO s3_blocked VALUES (1) ; --'",
        )
        .unwrap();
        r.send(&b).await;
        let _ = r.until_closed().await;
        let inserted = pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "SELECT count(*) FROM public.s3_blocked",
        );
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP TABLE public.s3_blocked");
        assert_eq!(inserted.trim(), "0", "the blocked table was written");
        // A batch of tokenisation-neutral texts still runs.
        let (mut r, _, _) = Raw::session(p.addr()).await;
        r.send(&pipeline(&[
            ("SELECT public.s3_tenant('app.tenant', '7')", &[]),
            ("SELECT current_setting('app.tenant')", &[]),
        ]))
        .await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{msgs:?}");
        assert_eq!(text(&rows(&msgs)[1][0]), "7", "{msgs:?}");
    });
}

/// FINDING S3-4: the parser is PostgreSQL 18's; the server is 15. Syntax
/// added after 15 (SQL/JSON constructors and functions, MERGE_ACTION) was
/// not a function call to the analysis, but PostgreSQL 15 reads
/// `json_scalar(x)` as a call of whatever function of that name the path
/// finds: a user's function ran without the policy seeing a call.
#[test]
fn attack_newer_syntax_calls_a_user_function_on_postgresql_15() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "CREATE OR REPLACE FUNCTION public.json_scalar(text) RETURNS text LANGUAGE sql \
             SECURITY DEFINER AS $$ SELECT string_agg(value, ',') FROM public.secrets $$; \
             GRANT EXECUTE ON FUNCTION public.json_scalar(text) TO PUBLIC",
        );
        let (_p, c) = block_secrets(pg).await;
        let through = let_through(
            &c,
            &["SELECT json_scalar('x')", "SELECT json_scalar(NULL::text)"],
        )
        .await;
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP FUNCTION public.json_scalar(text)",
        );
        assert!(through.is_empty(), "ran: {through:#?}");
    });
}

// ---------------------------------------------------------------------------
// Session 5 attacks
// ---------------------------------------------------------------------------

/// The policy under attack, trusting one function that returns a cursor.
const S5_CURSOR_POLICY: &str = r#"default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "allow", functions = ["public.s5_open"], name = "opener" },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
]"#;

/// FINDING S5-P1: a portal opened by code Warden trusts (a refcursor that
/// a function an allow rule names opens over a blocked table) was unknown
/// to Warden's books, and SQL `FETCH`/`MOVE` of a name Warden had no Bind
/// for was taken for a SQL cursor decided at its DECLARE: `FETCH ALL FROM
/// c` returned the blocked table. A cursor name Warden did not see
/// declared (and decided) in the same transaction is refused, and so is a
/// name Warden saw declared or bound in an earlier transaction (a cursor
/// the function reopened under that name since).
#[test]
fn s5_attack_fetch_of_a_cursor_opened_by_trusted_code() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "CREATE OR REPLACE FUNCTION public.s5_open(n text) RETURNS refcursor \
             LANGUAGE plpgsql SECURITY DEFINER AS $$ DECLARE c refcursor := n; \
             BEGIN OPEN c FOR SELECT value FROM public.secrets; RETURN c; END $$; \
             GRANT EXECUTE ON FUNCTION public.s5_open(text) TO PUBLIC",
        );
        let p = Proxy::start(
            pg,
            Spec {
                policy: S5_CURSOR_POLICY,
                ..Spec::default()
            },
        )
        .await;
        let mut got = Vec::new();
        // Fresh names, the function opening them in the same transaction.
        for (k, fetch) in [
            "FETCH ALL FROM c1",
            "FETCH ALL IN c1",
            "FETCH FORWARD 10 c1",
            "MOVE ABSOLUTE 0 IN c1; FETCH ALL c1",
        ]
        .iter()
        .enumerate()
        {
            let c = p.connect().await;
            c.simple_query("BEGIN").await.unwrap();
            c.simple_query("SELECT public.s5_open('c1')").await.unwrap();
            if let Ok(r) = c.simple_query(fetch).await {
                got.push(format!("{k} {fetch} => {:?}", simple_summary(Ok(r))));
            }
        }
        // A name Warden saw declared in an earlier transaction, reopened.
        let c = p.connect().await;
        c.simple_query("BEGIN; DECLARE c2 CURSOR FOR SELECT 1; COMMIT")
            .await
            .unwrap();
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("SELECT public.s5_open('c2')").await.unwrap();
        if let Ok(r) = c.simple_query("FETCH ALL FROM c2").await {
            got.push(format!("reused c2 => {:?}", simple_summary(Ok(r))));
        }
        c.simple_query("ROLLBACK").await.unwrap();
        // A cursor declared after a savepoint rolled back to, reopened.
        let c = p.connect().await;
        for sql in [
            "BEGIN",
            "SAVEPOINT s",
            "DECLARE c4 CURSOR FOR SELECT 1",
            "ROLLBACK TO SAVEPOINT s",
            "SELECT public.s5_open('c4')",
        ] {
            c.simple_query(sql).await.unwrap();
        }
        if let Ok(r) = c.simple_query("FETCH ALL FROM c4").await {
            got.push(format!("reused c4 => {:?}", simple_summary(Ok(r))));
        }
        c.simple_query("ROLLBACK").await.unwrap();
        // A cursor WITH HOLD whose implicit transaction failed (the server
        // reports idle, not failed), its name reopened.
        let c = p.connect().await;
        let _ = c
            .simple_query("DECLARE h2 CURSOR WITH HOLD FOR SELECT 1; SELECT 1/0")
            .await;
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("SELECT public.s5_open('h2')").await.unwrap();
        if let Ok(r) = c.simple_query("FETCH ALL FROM h2").await {
            got.push(format!("reused h2 => {:?}", simple_summary(Ok(r))));
        }
        c.simple_query("ROLLBACK").await.unwrap();
        // The same through a protocol portal bound earlier, now dead.
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut b = BytesMut::new();
        frontend::parse(&mut b, "", "SELECT 1", &[]).unwrap();
        frontend::bind(&mut b, "c3", "", &[], &[], &[]).unwrap();
        frontend::sync(&mut b);
        r.send(&b).await;
        let _ = r.until_ready().await;
        let _ = r.query("BEGIN").await;
        let _ = r.query("SELECT public.s5_open('c3')").await;
        let mut b = BytesMut::new();
        frontend::execute(&mut b, "c3", 0).unwrap();
        frontend::sync(&mut b);
        r.send(&b).await;
        let msgs = r.until_ready().await;
        got.push(format!("portal c3 => {}", all_text(&msgs)));
        let msgs = r.query("FETCH ALL FROM c3").await;
        got.push(format!("fetch c3 => {}", all_text(&msgs)));
        pg.psql_ok(pg::SUPERUSER, pg::DB, "DROP FUNCTION public.s5_open(text)");
        let all = got.join("\n");
        assert!(
            leaks(&all).is_none(),
            "secrets read through a cursor:\n{all}"
        );
        // Cursors declared through Warden still work, in one text or apart.
        let c = p.connect().await;
        let r = c
            .simple_query("BEGIN; DECLARE d CURSOR FOR SELECT 41 + 1; FETCH ALL FROM d; COMMIT")
            .await;
        assert!(format!("{:?}", simple_summary(r)).contains("42"));
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query("DECLARE e CURSOR FOR SELECT 7 AS x")
            .await
            .unwrap();
        let r = c.simple_query("FETCH ALL FROM e").await;
        assert!(format!("{:?}", simple_summary(r)).contains('7'));
        c.simple_query("CLOSE e").await.unwrap();
        c.simple_query("COMMIT").await.unwrap();
        c.simple_query("DECLARE h CURSOR WITH HOLD FOR SELECT 8 AS x")
            .await
            .unwrap();
        let r = c.simple_query("FETCH ALL FROM h").await;
        assert!(format!("{:?}", simple_summary(r)).contains('8'));
        // One declared before a savepoint outlives a rollback to it.
        for sql in [
            "BEGIN",
            "DECLARE k CURSOR FOR SELECT g FROM generate_series(1, 30) g",
            "SAVEPOINT one",
            "FETCH 10 FROM k",
            "ROLLBACK TO SAVEPOINT one",
        ] {
            c.simple_query(sql).await.unwrap();
        }
        let r = c.simple_query("FETCH 10 FROM k").await;
        assert!(format!("{:?}", simple_summary(r)).contains("11"));
        c.simple_query("COMMIT").await.unwrap();
    });
}

/// FINDING S5-P2: a FunctionCall sent inside an unfinished extended-protocol
/// batch made Warden look its oid up with a query of its own inside the
/// client's batch; a server skipping to Sync after an error ignores it, and
/// Warden waited for the answer while holding the client's Sync: the
/// session stalled. A FunctionCall (or a simple Query) inside an unfinished
/// batch is now refused as an error of the batch, and the session goes on.
#[test]
fn s5_attack_function_call_inside_an_unfinished_batch() {
    run(|pg| async move {
        let (p, _c) = block_secrets(pg).await;
        let direct = connect(&direct_conn(pg, pg::ORDERS_RO)).await;
        let textcat: u32 = direct
            .query_one("SELECT 'pg_catalog.textcat'::regproc::oid", &[])
            .await
            .unwrap()
            .get(0);
        for failing in [true, false] {
            let (mut r, _, _) = Raw::session(p.addr()).await;
            let sql = if failing { "SELECT 1/0" } else { "SELECT 1" };
            let mut b = BytesMut::new();
            frontend::parse(&mut b, "", sql, &[]).unwrap();
            frontend::bind(&mut b, "", "", &[], &[], &[]).unwrap();
            frontend::execute(&mut b, "", 0).unwrap();
            let args: Vec<Option<&[u8]>> = vec![Some(b"a"), Some(b"b")];
            frontend::function_call(&mut b, textcat, &[], &args, 0).unwrap();
            frontend::query(&mut b, "SELECT 2").unwrap();
            frontend::sync(&mut b);
            r.send(&b).await;
            let msgs = r.until_ready().await;
            // After the server's own error it skips the rest as the
            // server would; otherwise the FunctionCall is refused.
            let code = if failing { "22012" } else { "42501" };
            let errs = errors(&msgs);
            assert!(
                errs.iter().any(|(_, c, _)| c == code),
                "failing={failing}: {msgs:?}"
            );
            assert!(
                !msgs.iter().any(|m| matches!(m, Msg::FunctionResult(_))),
                "{msgs:?}"
            );
            // Nothing is owed: the session answers the next query.
            let msgs = r.query("SELECT 'still here'").await;
            assert!(all_text(&msgs).contains("still here"), "{msgs:?}");
            // And a FunctionCall outside a batch still runs.
            let msgs = function_call(&mut r, textcat, &["a", "b"]).await;
            assert!(
                msgs.iter()
                    .any(|m| matches!(m, Msg::FunctionResult(Some(v)) if v == b"ab")),
                "{msgs:?}"
            );
        }
    });
}
