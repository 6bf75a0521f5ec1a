//! Attacks on the masking of PostgreSQL results and on approvals (branch
//! `attack2`): every test here asserts the SECURE behaviour, so a test
//! FAILS while the bypass it describes works. Findings are written up in
//! `ATTACK2-FINDINGS.md`.
//!
//! End-to-end through the in-process proxy (harness copied from
//! `pg_proxy.rs`) in front of the harness's real PostgreSQL 15, with the
//! column rules of `pg_proxy.rs` (`COLUMN_RULES`: name/email redact, card
//! last4, ssn null; only the e-mail detector as a backstop).
//!
//! `cargo test -p warden --test mask_attack -- --test-threads=1`

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
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use warden::approval::peer::{Peer, Place};
use warden::approval::{Approvals, Decision, RequestView};
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
    /// The `[approvals]` table.
    approvals: &'a str,
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
            approvals: "",
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
    /// Statements of `approve` rules wait here, as in the daemon.
    approvals: Arc<Approvals>,
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
        toml.push_str(&format!("\n[approvals]\n{}\n", spec.approvals));
        let config = Config::parse(&toml, &dir.path().join("warden.toml"))
            .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
        let store = dir.path().join("audit.db");
        let opts = WriterOptions {
            sync: warden::audit::SyncMode::Normal,
            ..WriterOptions::default()
        };
        let (audit, writer) = warden::audit::spawn_writer(&store, opts).unwrap();
        let approvals = Approvals::new(
            config.approvals.clone(),
            audit.clone(),
            "warden approvals".into(),
        );
        let rt = Arc::new(
            PgRuntime::build(&config)
                .unwrap_or_else(|e| panic!("runtime: {e}"))
                .with_approvals(Arc::clone(&approvals)),
        );
        let runtime = Arc::new(std::sync::RwLock::new(rt));
        let config = Arc::new(config);
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
            approvals,
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
        let mut next = PgRuntime::build(&self.config)
            .unwrap()
            .with_approvals(Arc::clone(&self.approvals));
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
    /// A message read by [`Raw::recv_streaming`] without being held: its
    /// tag, its length field and the first bytes of its body.
    Big {
        tag: u8,
        len: usize,
        head: Vec<u8>,
    },
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

    /// Like [`recv`](Self::recv), but a message whose length field is
    /// above `big` is read and dropped piece by piece (so that the test
    /// process, which also runs Warden, does not hold it) and returned as
    /// [`Msg::Big`].
    async fn recv_streaming(&mut self, big: usize) -> Option<Msg> {
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if self.buf.len() >= 5 {
                    let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                    if len > big {
                        let tag = self.buf[0];
                        let mut remaining = len + 1;
                        let mut head = Vec::new();
                        loop {
                            let n = remaining.min(self.buf.len());
                            let piece = self.buf.split_to(n);
                            let body = if head.is_empty() && n >= 5 {
                                &piece[5..]
                            } else {
                                &piece[..]
                            };
                            head.extend_from_slice(
                                &body[..body.len().min(64 - head.len().min(64))],
                            );
                            remaining -= n;
                            if remaining == 0 {
                                return Some(Msg::Big { tag, len, head });
                            }
                            self.buf.reserve(64 * 1024);
                            match self.tcp.read_buf(&mut self.buf).await {
                                Ok(0) | Err(_) => return None,
                                Ok(_) => {}
                            }
                        }
                    }
                }
                if let Some(f) = decode_frame(&mut self.buf, 1 << 30).unwrap() {
                    return Some(to_msg(&f));
                }
                self.buf.reserve(64 * 1024);
                match self.tcp.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await;
        read.expect("no answer within 60 s")
    }

    /// [`recv_streaming`](Self::recv_streaming) up to and including
    /// ReadyForQuery, or up to the close.
    async fn until_ready_streaming(&mut self, big: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv_streaming(big).await {
            let done = matches!(m, Msg::Ready(_));
            out.push(m);
            if done {
                break;
            }
        }
        out
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
            // Every text field: message, detail, hint, context (where).
            message: [b'M', b'D', b'H', b'W']
                .iter()
                .filter_map(|k| f.get(*k))
                .collect::<Vec<_>>()
                .join(" | "),
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
            message: [b'M', b'D', b'H', b'W']
                .iter()
                .filter_map(|k| f.get(*k))
                .collect::<Vec<_>>()
                .join(" | "),
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

/// Whether the client was told its statement is held for approval.
fn held_notice(msgs: &[Msg]) -> bool {
    msgs.iter()
        .any(|m| matches!(m, Msg::Notice { message } if message.contains("approval")))
}

// ---------------------------------------------------------------------------
// The setting under attack
// ---------------------------------------------------------------------------

/// Column rules on every sensitive column of `customers` (as in
/// pg_proxy.rs): names are matched by no detector, so a name in any
/// message is the column analysis failing.
const COLUMN_RULES: &str = r#"columns = [
  { column = "customers.name", strategy = "redact" },
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "customers.ssn", strategy = "null" },
]
patterns = ["email"]"#;

async fn masked_proxy(pg: &PgServer, mode: &str, policy: &str, role: &str) -> Proxy {
    let masking = format!("{COLUMN_RULES}\nmasked_in_predicates = \"{mode}\"");
    // The masking text must outlive `Spec`: leak it (tests only).
    let masking: &'static str = Box::leak(masking.into_boxed_str());
    Proxy::start(
        pg,
        Spec {
            role,
            policy,
            masking: Some(masking),
            ..Spec::default()
        },
    )
    .await
}

/// A customer's name (or any masked value) in `s`: the leak found.
fn leaked(s: &str) -> Option<String> {
    for c in pg::CUSTOMERS {
        for v in [c.name, c.email, c.card, c.ssn] {
            if s.contains(v) {
                return Some(v.to_owned());
            }
        }
    }
    None
}

fn dump(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| match m {
            Msg::Row(r) => format!("ROW {:?}", r.iter().map(text).collect::<Vec<_>>()),
            Msg::CopyData(d) => format!("COPY {:?}", String::from_utf8_lossy(d)),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn refused_42501(msgs: &[Msg]) -> bool {
    errors(msgs).iter().any(|(_, code, _)| code == "42501")
}

// ---------------------------------------------------------------------------
// M1: the select list of an EXISTS sub-query is "ignored" by the analysis,
// but PostgreSQL evaluates it whenever the sub-query has aggregates,
// set-returning functions, OFFSET, window functions... (the planner keeps
// the target list: `simplify_EXISTS_query`)
// ---------------------------------------------------------------------------

/// The error of a cast in an EXISTS select list quotes the masked values,
/// and the error text is not withheld (the statement "reads" no masked
/// column as far as the analysis records).
#[test]
fn m1_exists_select_list_error_quotes_masked_values() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        for sql in [
            // Every name at once through an aggregate.
            "SELECT 1 WHERE EXISTS (SELECT string_agg(name, ',')::int FROM customers)",
            // One row's value (OFFSET keeps the select list).
            "SELECT 1 WHERE EXISTS (SELECT name::int FROM customers WHERE id = 2 OFFSET 0)",
            // A scalar sub-query inside the ignored select list.
            "SELECT EXISTS (SELECT (SELECT string_agg(name || ssn || card, ';') FROM customers)::int \
             OFFSET 0)",
        ] {
            let msgs = r.query(sql).await;
            let all = dump(&msgs);
            assert!(
                leaked(&all).is_none(),
                "{sql}: masked value leaked: {:?}\n{all}",
                leaked(&all)
            );
        }
        assert!(p.any_panic().is_none());
    });
}

/// Without errors: a set-returning function in the EXISTS select list
/// decides whether the sub-query has a row, one bit of any function of a
/// masked column per row (here: the first letter of each name).
#[test]
fn m1_exists_select_list_set_returning_function_is_a_bit_oracle() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let sql = "SELECT c.id FROM customers c WHERE EXISTS \
                   (SELECT generate_series(1, CASE WHEN c.name LIKE 'B%' THEN 1 ELSE 0 END)) \
                   ORDER BY c.id";
        let msgs = r.query(sql).await;
        let got: Vec<String> = rows(&msgs).iter().map(|row| text(&row[0])).collect();
        assert!(
            refused_42501(&msgs),
            "{sql}: not refused; ids of customers whose name starts with B: {got:?}\n{}",
            dump(&msgs)
        );
        // The same through an error (1/0 only when the bit is set).
        let sql = "SELECT 1 WHERE EXISTS (SELECT CASE WHEN name LIKE 'A%' THEN 1/0 END \
                   FROM customers WHERE id = 1 OFFSET 0)";
        let msgs = r.query(sql).await;
        assert!(
            refused_42501(&msgs),
            "{sql}: not refused (22012 means the name starts with A): {}",
            dump(&msgs)
        );
    });
}

// ---------------------------------------------------------------------------
// M2: COPY ... TO STDOUT masks fields by position; `(row).*` expands to
// several fields that the analysis counts as one, and a NULL marker of a
// single backslash makes the masker merge two fields: the counts agree
// again, the positions do not.
// ---------------------------------------------------------------------------

#[test]
fn m2_copy_field_positions_shifted_by_row_expansion_and_a_backslash_null() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // Analysis: 4 fields, the 2nd masked. Server: 5 fields
        // ('a', 'b', name, NULL, 'x'). Masker: `\<TAB>x` is one escaped
        // field, so it sees 4: 'a' | 'b' | name | '\\\tx', and masks 'b'.
        let sql = "COPY (SELECT (ROW('a'::text, 'b'::text)).*, name, NULL::text, 'x' FROM customers ORDER BY id) \
                   TO STDOUT (NULL '\\')";
        let msgs = r.query(sql).await;
        let all = dump(&msgs);
        assert!(
            leaked(&all).is_none(),
            "{sql}: masked value leaked: {:?}\n{all}",
            leaked(&all)
        );
        // The same in CSV is not possible (the NULL marker may not hold the
        // quote), but one more: the names through `*` of a VALUES list
        // after the expansion.
        let sql = "COPY (SELECT (ROW(1, 2, 3)).*, card, NULL::text, NULL::text, 'y' FROM customers) \
                   TO STDOUT (NULL '\\')";
        let msgs = r.query(sql).await;
        let all = dump(&msgs);
        assert!(
            leaked(&all).is_none(),
            "{sql}: masked value leaked: {:?}\n{all}",
            leaked(&all)
        );
        assert!(p.any_panic().is_none());
    });
}

// ---------------------------------------------------------------------------
// M3: a WITH HOLD cursor is run to completion at COMMIT; its errors come
// back for the COMMIT, which Warden does not count as reading masked
// columns (masked_in_predicates = "any", where conditions may use them).
// ---------------------------------------------------------------------------

#[test]
fn m3_with_hold_cursor_errors_at_commit_are_not_withheld() {
    run(|pg| async move {
        let p = masked_proxy(pg, "any", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let _ = r.query("BEGIN").await;
        let msgs = r
            .query("DECLARE h CURSOR WITH HOLD FOR SELECT id FROM customers WHERE name::int = 1")
            .await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        let msgs = r.query("COMMIT").await;
        let all = dump(&msgs);
        assert!(
            leaked(&all).is_none(),
            "COMMIT: masked value leaked: {:?}\n{all}",
            leaked(&all)
        );
        // And in a simple query of its own (implicit transaction), the
        // same through END.
        let msgs = r
            .query("BEGIN; DECLARE h2 CURSOR WITH HOLD FOR SELECT id FROM customers WHERE ssn::int = 1")
            .await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        let msgs = r.query("END").await;
        let all = dump(&msgs);
        assert!(
            leaked(&all).is_none(),
            "END: masked value leaked: {:?}\n{all}",
            leaked(&all)
        );
    });
}

// ---------------------------------------------------------------------------
// M4 / A1: a protocol-level statement name is re-pointed in Warden's books
// by a Parse the server refuses (42P05 "prepared statement already
// exists"): Warden records the new text at Parse, before the server
// answers, and keeps it after the error. Bind/Execute of that name then run
// the server's (first) statement under the decision Warden made for the
// second one: its COPY masking, its "reads masked columns", its approval.
// ---------------------------------------------------------------------------

fn parse_sync(name: &str, sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::parse(&mut b, name, sql, &[]).unwrap();
    frontend::sync(&mut b);
    b
}

fn bind_execute_sync(statement: &str, params: &[Option<&[u8]>]) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::bind(&mut b, "", statement, &[], params, &[]).unwrap();
    frontend::execute(&mut b, "", 0).unwrap();
    frontend::sync(&mut b);
    b
}

#[test]
fn m4_statement_name_redefined_by_a_failed_parse_copies_masked_columns_unmasked() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // Control: the COPY through the statement is masked.
        r.send(&parse_sync(
            "s1",
            "COPY (SELECT id, name FROM customers ORDER BY id) TO STDOUT",
        ))
        .await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        r.send(&bind_execute_sync("s1", &[])).await;
        let msgs = r.until_ready().await;
        let control = dump(&msgs);
        assert!(leaked(&control).is_none(), "control leaked: {control}");
        // The same name parsed again with a harmless text: the server
        // refuses it (42P05) and keeps the COPY.
        r.send(&parse_sync("s1", "SELECT 1")).await;
        let msgs = r.until_ready().await;
        assert!(
            errors(&msgs).iter().any(|(_, c, _)| c == "42P05"),
            "{}",
            dump(&msgs)
        );
        r.send(&bind_execute_sync("s1", &[])).await;
        let msgs = r.until_ready().await;
        let all = dump(&msgs);
        assert!(
            leaked(&all).is_none(),
            "COPY through a re-pointed statement name leaked: {:?}\n{all}",
            leaked(&all)
        );
        assert!(p.any_panic().is_none());
    });
}

/// Sends `b` and reports whether Warden asked an approver (the request is
/// then denied) or let it run without asking; the messages either way.
async fn asked(p: &Proxy, r: &mut Raw, b: &[u8]) -> (bool, Vec<Msg>) {
    r.send(b).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(v) = p.approvals.list().pending.pop() {
            p.decide(&v.id, false, None).await;
            return (true, r.until_ready().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (false, r.until_ready().await)
}

#[test]
fn a1_statement_name_redefined_by_a_failed_parse_runs_a_held_delete_without_approval() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: r#"default = "allow"
rules = [ { action = "approve", tables = ["orders"], classes = ["write"], name = "order-writes" } ]"#,
                approvals: APPROVERS,
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        // A write inside a transaction that is rolled back at the end: the
        // proof is the row count the DELETE reports.
        let _ = r.query("BEGIN").await;
        r.send(&parse_sync("del", "DELETE FROM orders WHERE id = $1"))
            .await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        // Control: executing it is asked.
        let (was_asked, msgs) = asked(&p, &mut r, &bind_execute_sync("del", &[Some(b"1")])).await;
        assert!(was_asked, "control: not asked: {}", dump(&msgs));
        let _ = r.query("ROLLBACK").await;
        let _ = r.query("BEGIN").await;
        // Re-point the name in Warden's books.
        r.send(&parse_sync("del", "SELECT $1::int")).await;
        let msgs = r.until_ready().await;
        assert!(
            errors(&msgs).iter().any(|(_, c, _)| c == "42P05"),
            "{}",
            dump(&msgs)
        );
        let _ = r.query("ROLLBACK").await;
        let _ = r.query("BEGIN").await;
        let (was_asked, msgs) = asked(&p, &mut r, &bind_execute_sync("del", &[Some(b"1")])).await;
        let all = dump(&msgs);
        let _ = r.query("ROLLBACK").await;
        assert!(was_asked, "the held DELETE ran without an approval: {all}");
    });
}

// ---------------------------------------------------------------------------
// A2: a `--for` grant of a write covers every statement of the same shape,
// and the shape turns every literal into `?`, also literals that name the
// object the write goes to: a NOTIFY channel, a sequence.
// ---------------------------------------------------------------------------

#[test]
fn a2_grant_for_a_write_covers_other_channels_and_sequences() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: r#"default = "allow"
rules = [ { action = "approve", classes = ["write"], name = "writes" } ]"#,
                approvals: APPROVERS,
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut through = Vec::new();
        for (shown, other) in [
            (
                "SELECT pg_notify('orders_audit', 'order 7 viewed')",
                "SELECT pg_notify('payments', '{\"refund\": \"all\"}')",
            ),
            (
                "SELECT nextval('orders_id_seq')",
                "SELECT nextval('customers_id_seq')",
            ),
            (
                "DELETE FROM orders WHERE note LIKE 'gift wrap'",
                "DELETE FROM orders WHERE note LIKE '%'",
            ),
        ] {
            // Each pair in a transaction rolled back (the DELETEs).
            let _ = r.query("BEGIN").await;
            // The approver sees `shown` and grants it for a minute.
            let mut b = BytesMut::new();
            frontend::query(&mut b, shown).unwrap();
            r.send(&b).await;
            let req = p.pending().await;
            assert!(req.statement.contains(shown), "{req:#?}");
            p.decide(&req.id, true, Some(60)).await;
            let _ = r.until_ready().await;
            // Another channel / sequence.
            let mut b = BytesMut::new();
            frontend::query(&mut b, other).unwrap();
            let (was_asked, msgs) = asked(&p, &mut r, &b).await;
            let _ = r.query("ROLLBACK").await;
            if !was_asked {
                through.push(format!(
                    "a grant for {shown:?} let {other:?} through unasked: {}",
                    dump(&msgs)
                ));
            }
        }
        assert!(through.is_empty(), "{through:#?}");
    });
}

// ---------------------------------------------------------------------------
// M5 / M6: the catalog marks a column masked by a rule naming it, by
// inheritance, or by a view's rewrite dependencies. A column computed from
// a masked column in other ways keeps its value unmasked: a STORED
// generated column (`name_key GENERATED ALWAYS AS (lower(name))`, the usual
// case-insensitive lookup key) and a view whose column calls a function
// that reads the masked column (the view depends on the function, not on
// the column).
// ---------------------------------------------------------------------------

#[test]
#[ignore = "finding M6: generated column of a masked column is unmasked"]
fn m6_generated_column_of_a_masked_column_is_returned_unmasked() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "ALTER TABLE public.customers DROP COLUMN IF EXISTS name_key; \
             ALTER TABLE public.customers ADD COLUMN name_key text \
               GENERATED ALWAYS AS (lower(name)) STORED",
        );
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut out = String::new();
        for sql in [
            "SELECT id, name_key FROM customers ORDER BY id",
            "SELECT * FROM customers ORDER BY id",
            "COPY customers TO STDOUT",
        ] {
            let msgs = r.query(sql).await;
            out.push_str(&format!("{sql}:\n{}\n", dump(&msgs)));
        }
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "ALTER TABLE public.customers DROP COLUMN name_key",
        );
        let lower: Vec<String> = pg::CUSTOMERS
            .iter()
            .map(|c| c.name.to_lowercase())
            .collect();
        let hit = lower.iter().find(|n| out.contains(n.as_str()));
        assert!(
            hit.is_none(),
            "a generated column of customers.name leaked {hit:?}:\n{out}"
        );
    });
}

#[test]
#[ignore = "finding M5: view column computed by a function over a masked column"]
fn m5_view_column_computed_by_a_function_over_a_masked_column_is_unmasked() {
    run(|pg| async move {
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP VIEW IF EXISTS public.order_summary; \
             DROP FUNCTION IF EXISTS public.customer_name(int); \
             CREATE FUNCTION public.customer_name(int) RETURNS text LANGUAGE sql STABLE \
               AS 'SELECT name FROM public.customers WHERE id = $1'; \
             CREATE VIEW public.order_summary AS \
               SELECT o.id, o.amount, public.customer_name(o.customer_id) AS customer \
               FROM public.orders o; \
             GRANT SELECT ON public.order_summary TO orders_ro",
        );
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r
            .query("SELECT id, customer FROM order_summary ORDER BY id")
            .await;
        let all = dump(&msgs);
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP VIEW public.order_summary; DROP FUNCTION public.customer_name(int)",
        );
        assert!(
            leaked(&all).is_none(),
            "a view over a function leaked {:?}:\n{all}",
            leaked(&all)
        );
    });
}

// ---------------------------------------------------------------------------
// Probes that are expected to hold (what held is recorded too).
// ---------------------------------------------------------------------------

/// Statements that must be refused (42501): each would return a masked
/// value or one bit of it.
#[test]
fn held_probes_masked_columns_in_other_positions() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut bad = Vec::new();
        for sql in [
            // ORDER BY an output alias that names another input column.
            "SELECT name AS id, id AS x FROM customers ORDER BY id",
            "SELECT id FROM customers GROUP BY ROLLUP (name)",
            "SELECT id FROM customers c WHERE c.name = c.email",
            "SELECT id FROM customers WHERE name = ANY (SELECT note FROM orders)",
            "SELECT id FROM customers WHERE (name, id) = ('Bob Brown', 2)",
            "SELECT id FROM customers WHERE (name = 'x') IS NOT TRUE",
            "SELECT id FROM customers WHERE name = 'Bob Brown' COLLATE \"C\"",
            "SELECT count(*) FILTER (WHERE name LIKE 'A%') FROM customers",
            "SELECT (c).name FROM customers c",
            "SELECT (ROW(name, 1)).f1 FROM customers",
            "SELECT id FROM customers, LATERAL generate_series(1, length(name)) g",
            "SELECT histogram_bounds FROM pg_stats WHERE tablename = 'customers'",
            "SELECT most_common_vals FROM pg_catalog.pg_stats WHERE attname = 'name'",
            "SELECT id FROM customers WHERE name IS NOT NULL ORDER BY 1 LIMIT (SELECT length(name) FROM customers LIMIT 1)",
            "SELECT 1 FROM customers HAVING max(name) > 'B'",
            "SELECT id, row_number() OVER (ORDER BY name) FROM customers",
            "SELECT json_agg(c) FROM customers c",
            "SELECT to_jsonb(c.*) FROM customers c",
            "SELECT c.*::text FROM customers c",
            "TABLE customers UNION ALL TABLE customers",
            "VALUES ((SELECT name FROM customers LIMIT 1))",
            "SELECT * FROM (VALUES (1)) v(x) WHERE EXISTS (SELECT 1 FROM customers WHERE name > 'B')",
            "COPY (SELECT name FROM customers) TO STDOUT (FORMAT binary)",
            "COPY (SELECT name FROM customers) TO STDOUT (ENCODING 'SJIS')",
            "EXPLAIN (ANALYZE, VERBOSE) SELECT id FROM customers WHERE name > 'B'",
            "SELECT pg_notify('x', name) FROM customers",
        ] {
            let msgs = r.query(sql).await;
            let all = dump(&msgs);
            if !refused_42501(&msgs) {
                bad.push(format!("{sql}: {all}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(p.any_panic().is_none());
    });
}

/// Rows of a WITH HOLD cursor fetched after its transaction committed are
/// still masked (the portal keeps its statement's column origins).
#[test]
fn held_probe_with_hold_cursor_rows_stay_masked_after_commit() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r
            .query("BEGIN; DECLARE k CURSOR WITH HOLD FOR SELECT id, name, card FROM customers ORDER BY id; COMMIT")
            .await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        let msgs = r.query("FETCH ALL FROM k").await;
        let all = dump(&msgs);
        assert_eq!(rows(&msgs).len(), pg::CUSTOMERS.len(), "{all}");
        assert!(leaked(&all).is_none(), "{all}");
        let _ = r.query("CLOSE k").await;
    });
}

// ---------------------------------------------------------------------------
// A3: an approver asked about `EXECUTE name(...)` of a SQL-level prepared
// statement must see what the statement is.
// ---------------------------------------------------------------------------

#[test]
fn a3_approver_of_an_execute_sees_the_prepared_statement() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: r#"default = "allow"
rules = [ { action = "approve", tables = ["orders"], classes = ["write"], name = "order-writes" } ]"#,
                approvals: APPROVERS,
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let _ = r.query("BEGIN").await;
        let mut b = BytesMut::new();
        frontend::query(&mut b, "PREPARE d(int) AS DELETE FROM orders WHERE id > $1").unwrap();
        let (prepare_asked, msgs) = asked_approve(&p, &mut r, &b).await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        let mut b = BytesMut::new();
        frontend::query(&mut b, "EXECUTE d(0)").unwrap();
        r.send(&b).await;
        let view = p.pending().await;
        p.decide(&view.id, false, None).await;
        let _ = r.until_ready().await;
        let _ = r.query("ROLLBACK").await;
        assert!(
            view.statement.contains("DELETE FROM orders WHERE id > $1"),
            "PREPARE asked: {prepare_asked}; the approver of the EXECUTE sees only: {:?}",
            view.statement
        );
    });
}

/// As [`asked`], but approving (once) when asked.
async fn asked_approve(p: &Proxy, r: &mut Raw, b: &[u8]) -> (bool, Vec<Msg>) {
    r.send(b).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(v) = p.approvals.list().pending.pop() {
            p.decide(&v.id, true, None).await;
            return (true, r.until_ready().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (false, r.until_ready().await)
}

// ---------------------------------------------------------------------------
// M7: ORDER BY a masked column is refused under "equality", but an index on
// it returns rows in its order when the planner is told to use it.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "finding M7: index order on a masked column is an ordering oracle"]
fn m7_index_order_on_a_masked_column_is_an_ordering_oracle() {
    run(|pg| async move {
        // Descending, so that index order differs from the table's (whose
        // ids happen to follow the names).
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "CREATE INDEX IF NOT EXISTS customers_name_idx ON public.customers (name DESC)",
        );
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut log = String::new();
        for sql in ["SET enable_seqscan = off", "SET enable_bitmapscan = off"] {
            let msgs = r.query(sql).await;
            log.push_str(&format!("{sql}: {}\n", dump(&msgs)));
        }
        // Ids in the order of the (masked) names, if the index is used.
        let msgs = r
            .query("SELECT id FROM customers WHERE name IS NOT NULL")
            .await;
        log.push_str(&dump(&msgs));
        let ids: Vec<String> = rows(&msgs).iter().map(|row| text(&row[0])).collect();
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "DROP INDEX public.customers_name_idx",
        );
        let mut by_name: Vec<(&str, usize)> = pg::CUSTOMERS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name, i + 1))
            .collect();
        by_name.sort();
        by_name.reverse();
        let name_order: Vec<String> = by_name.iter().map(|(_, id)| id.to_string()).collect();
        assert!(
            ids != name_order,
            "rows come back in the order of the masked column (its index): {ids:?}\n{log}"
        );
    });
}

/// A1, second road: SQL `DEALLOCATE`/`PREPARE` act on the protocol-level
/// statement of the same name, which Warden's books keep.
#[test]
fn a1b_sql_prepare_over_a_protocol_statement_name_runs_unasked() {
    run(|pg| async move {
        let p = Proxy::start(
            pg,
            Spec {
                role: pg::ORDERS_RW,
                policy: r#"default = "allow"
rules = [ { action = "approve", tables = ["orders"], classes = ["write"], name = "order-writes" } ]"#,
                approvals: APPROVERS,
                ..Spec::default()
            },
        )
        .await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        r.send(&parse_sync("s2", "SELECT $1::int")).await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        let _ = r.query("BEGIN").await;
        let msgs = r.query("DEALLOCATE s2").await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        // The approver approves a PREPARE (nothing runs yet; each EXECUTE
        // of it is asked again).
        let mut b = BytesMut::new();
        frontend::query(
            &mut b,
            "PREPARE s2(int) AS DELETE FROM orders WHERE id = $1",
        )
        .unwrap();
        let (prepare_asked, msgs) = asked_approve(&p, &mut r, &b).await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        // Control: EXECUTE is asked.
        let mut b = BytesMut::new();
        frontend::query(&mut b, "EXECUTE s2(1)").unwrap();
        let (execute_asked, _) = asked(&p, &mut r, &b).await;
        let _ = r.query("ROLLBACK").await;
        let _ = r.query("BEGIN").await;
        let (was_asked, msgs) = asked(&p, &mut r, &bind_execute_sync("s2", &[Some(b"1")])).await;
        let all = dump(&msgs);
        let _ = r.query("ROLLBACK").await;
        // Secure: asked, or refused without running (Warden forgets a
        // protocol statement whose name SQL PREPARE/DEALLOCATE touched).
        let refused = errors(&msgs).iter().any(|e| e.1 == "42501") && !all.contains("DELETE");
        assert!(
            was_asked || refused,
            "PREPARE asked: {prepare_asked}, EXECUTE asked: {execute_asked}; \
             Bind/Execute of the SQL-prepared DELETE ran unasked: {all}"
        );
    });
}

/// Writes (read+write policy, orders_rw, rolled back): RETURNING masks by
/// column, errors of writes to a masked table are withheld, masked values
/// never reach another table.
#[test]
fn held_probes_writes_return_and_report_masked_values_masked() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_WRITE, pg::ORDERS_RW).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let mut bad = Vec::new();
        for sql in [
            "UPDATE customers SET id = id WHERE id = 1 RETURNING id, name, email, card",
            "DELETE FROM customers WHERE id = 99 RETURNING *",
            "UPDATE customers SET name = NULL WHERE id = 1",
            "INSERT INTO customers (id, name) VALUES (1, 'x')",
            "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id",
            "INSERT INTO orders (customer_id, note) SELECT id, name FROM customers",
            "INSERT INTO orders (customer_id, note) VALUES (1, 'x') RETURNING (SELECT name FROM customers LIMIT 1)",
        ] {
            let _ = r.query("BEGIN").await;
            let msgs = r.query(sql).await;
            let _ = r.query("ROLLBACK").await;
            let all = dump(&msgs);
            if let Some(v) = leaked(&all) {
                bad.push(format!("{sql}: {v}: {all}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
}

/// M1, third road: `pg_notify` is refused with a masked argument
/// (`CHANNEL_FUNCTIONS`) except in the ignored EXISTS select list.
#[test]
fn m1_exists_select_list_pg_notify_sends_masked_values() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", ALLOW_ALL, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r.query("LISTEN leak").await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        // Control: refused outside EXISTS.
        let msgs = r
            .query("SELECT pg_notify('leak', string_agg(name, ',')) FROM customers")
            .await;
        assert!(refused_42501(&msgs), "control: {}", dump(&msgs));
        let msgs = r
            .query(
                "SELECT 1 WHERE EXISTS (SELECT pg_notify('leak', string_agg(name, ',')) FROM customers)",
            )
            .await;
        let mut all = dump(&msgs);
        // The notification may come with the answer or just after it.
        let more = r.query("SELECT 1").await;
        all.push_str(&dump(&more));
        assert!(
            leaked(&all).is_none(),
            "masked values sent by NOTIFY: {:?}\n{all}",
            leaked(&all)
        );
    });
}

// ---------------------------------------------------------------------------
// M8: result columns are masked by (table OID, attnum) from a catalog that is
// cached for 60 s per target/database/masking, and an origin the cached map
// does not know is passed. A relation replaced in that window (the usual
// migration: create the new table, copy, rename) is returned unmasked,
// while the analysis, which goes by name, lets the bare column through.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "finding M8: origin OIDs missing from the cached catalog pass unmasked"]
fn m8_table_recreated_within_the_catalog_ttl_is_returned_unmasked() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        // A first session loads (and caches) the catalog.
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r.query("SELECT id, name FROM customers ORDER BY id").await;
        let control = dump(&msgs);
        assert!(leaked(&control).is_none(), "control: {control}");
        drop(r);
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "BEGIN; \
             ALTER TABLE public.customers RENAME TO customers_orig; \
             CREATE TABLE public.customers (LIKE public.customers_orig INCLUDING ALL); \
             INSERT INTO public.customers SELECT * FROM public.customers_orig; \
             GRANT SELECT ON public.customers TO orders_ro; \
             COMMIT",
        );
        let (mut r, _, _) = Raw::session(p.addr()).await;
        let msgs = r.query("SELECT id, name FROM customers ORDER BY id").await;
        let all = dump(&msgs);
        drop(r);
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            "BEGIN; DROP TABLE public.customers; \
             ALTER TABLE public.customers_orig RENAME TO customers; COMMIT",
        );
        assert!(
            leaked(&all).is_none(),
            "a replaced table's masked column came back unmasked: {:?}\n{all}",
            leaked(&all)
        );
    });
}

/// Warden's statement names follow the server's: a Parse the server
/// refuses (here, of a relation that does not exist) leaves no name
/// behind, so the client may parse the name again; a name the session
/// has is answered 42P05 by Warden, as the server would, and the old
/// statement keeps running under its own decision.
#[test]
fn statement_names_follow_the_server_after_a_refused_parse() {
    run(|pg| async move {
        let p = masked_proxy(pg, "equality", READ_ONLY, pg::ORDERS_RO).await;
        let (mut r, _, _) = Raw::session(p.addr()).await;
        r.send(&parse_sync("s9", "SELECT id FROM no_such_table"))
            .await;
        let msgs = r.until_ready().await;
        assert!(
            errors(&msgs).iter().any(|(_, c, _)| c == "42P01"),
            "{}",
            dump(&msgs)
        );
        // The name is free again on the server, and in Warden's books.
        r.send(&parse_sync(
            "s9",
            "SELECT id, name FROM customers ORDER BY id",
        ))
        .await;
        let msgs = r.until_ready().await;
        assert!(errors(&msgs).is_empty(), "{}", dump(&msgs));
        r.send(&bind_execute_sync("s9", &[])).await;
        let msgs = r.until_ready().await;
        let all = dump(&msgs);
        assert_eq!(rows(&msgs).len(), 5, "{all}");
        assert!(leaked(&all).is_none(), "{all}");
        // A name the session has: 42P05 from Warden, nothing changes.
        r.send(&parse_sync("s9", "SELECT 1")).await;
        let msgs = r.until_ready().await;
        assert!(
            errors(&msgs).iter().any(|(_, c, _)| c == "42P05"),
            "{}",
            dump(&msgs)
        );
        r.send(&bind_execute_sync("s9", &[])).await;
        let msgs = r.until_ready().await;
        let all = dump(&msgs);
        assert_eq!(rows(&msgs).len(), 5, "{all}");
        assert!(leaked(&all).is_none(), "{all}");
    });
}
