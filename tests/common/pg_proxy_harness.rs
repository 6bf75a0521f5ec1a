// The in-process PostgreSQL proxy harness (a proxy in front of the test
// server, a raw wire client), shared by `pg_proxy.rs` and `mask_attack.rs`
// with `include!`: both need every piece of it, and their message decoders
// (`to_msg`) differ.

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
