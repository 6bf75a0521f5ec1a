//! The MySQL/MariaDB proxy: a target with `protocol = "mysql"` is served
//! here instead of being relayed byte for byte.
//!
//! The session ([`serve`]):
//! 1. Warden connects upstream and reads the server's greeting;
//! 2. it greets the workload itself (the server's version and connection
//!    id, Warden's own nonce, only the capabilities Warden supports) and
//!    reads the workload's response — the user and password it sends are
//!    ignored; a database other than the grant's is refused (1044);
//! 3. it logs in upstream as the grant's `upstream_user` with the password
//!    of `password_file` (`mysql_native_password`, `caching_sha2_password`
//!    fast path and RSA full path, auth switches) and the grant's database;
//! 4. commands: `COM_QUERY` is decided by the grant's policy (refusals are
//!    ERR 1142, SQLSTATE 42000, naming the rule; every statement of a
//!    multi-statement text is decided and the text refused whole when one
//!    is) and its text result rows are masked; `COM_STMT_PREPARE` is
//!    decided the same way (a refused text never reaches the server),
//!    `COM_STMT_EXECUTE` / `FETCH` / `CLOSE` / `RESET` / `SEND_LONG_DATA`
//!    are relayed only for statements Warden prepared (1243 otherwise), and
//!    binary result rows are masked like text ones; `COM_CHANGE_USER`
//!    re-authenticates upstream as the grant (whatever user the workload
//!    names), `COM_RESET_CONNECTION` is relayed (both forget prepared
//!    statements and check the sql_mode again); `KILL` and
//!    `COM_PROCESS_KILL` reach only the account's own sessions (1095);
//!    `COM_FIELD_LIST` is decided as `SHOW COLUMNS FROM` its table;
//!    `COM_PING`, `COM_QUIT`, `COM_STATISTICS`, `COM_SET_OPTION` and
//!    `COM_INIT_DB` (the grant's database only) are relayed; every other
//!    command is refused (1047) and audited.
//!
//! A server's request for a local file (`LOAD DATA LOCAL INFILE`) is never
//! passed to the workload: Warden answers it with an empty file. Malformed
//! or oversized packets end in an ERR packet and a close, never a panic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::postgres::stream::Stream;
use crate::audit::AuditHandle;
use crate::audit::event::{StatementDecision, StatementEvent, StatementPhase};
use crate::audit::reason::RefuseReason;
use crate::config::{Config, Grant, Protocol, Target};
use crate::masking::{Masked, Masker, Strategy};
use crate::policy::allowlist::{AllowlistFacts, Fingerprint, GrantAllowlist, Judged, ListVerdict};
use crate::policy::{Action, Policy, RuleAction, SessionContext, Verdict};
use crate::protocol::mysql::binary;
use crate::protocol::mysql::handshake::{self, ServerHello};
use crate::protocol::mysql::message::{self, Response, caps, code, com};
use crate::protocol::mysql::packet::{self, FrameError, Packet};

use super::session::{ApprovalContext, GrantTable, Maskers, SetupError, builtin_masker};
use super::{Caller, Outcome, now_ms};

/// Longest the connection phase may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet accepted from the server (rows may be larger than what
/// a client may send).
const MAX_SERVER_PACKET: usize = 64 << 20;
/// Most columns of a result set Warden relays.
const MAX_COLUMNS: u64 = 4096;
/// Most parameters of a prepared statement Warden relays.
const MAX_PARAMS: u64 = 65535;
/// Most statements a session may hold prepared at once.
const MAX_STATEMENTS: usize = 16 * 1024;
/// Write to the client once this much is buffered.
const FLUSH_AT: usize = 64 << 10;
/// Bytes of a parameter sent as long data kept to show an approver (the
/// rest is counted).
const LONG_DATA_SHOWN: usize = 4096;

/// One `[[grant]]` on a MySQL target, ready to serve.
pub struct MysqlGrant {
    pub grant: Grant,
    pub policy: Arc<Policy>,
    pub masker: Option<Arc<Masker>>,
    /// The grant's allow-list (issue 19), `None` without a `mode`.
    pub allowlist: Option<Arc<GrantAllowlist>>,
    /// The column names of its masking's column rules (lower case) and the
    /// strictest of their strategies: what a view's columns get.
    pub masked_names: Vec<String>,
    pub strictest: Option<Strategy>,
    /// Its policy has `block` or `approve` rules naming tables (which a
    /// view could read under its own name).
    pub table_rules: bool,
}

/// The upstream connection ids of live sessions, by target (ids are the
/// server's: two targets may use the same), and their accounts: what
/// `KILL` and `COM_PROCESS_KILL` may name (an account's own connections
/// on the same target only, like PostgreSQL cancel keys).
#[derive(Default)]
pub struct Connections(std::sync::Mutex<HashMap<(String, u32), String>>);

/// Removes a session's connection id when the session ends.
struct Registered<'a>(&'a Connections, (String, u32));

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), String>> {
        // A poisoned map is still a map of ids: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, target: &str, id: u32, account: &str) -> Registered<'_> {
        let key = (target.to_owned(), id);
        self.lock().insert(key.clone(), account.to_owned());
        Registered(self, key)
    }

    /// True when connection `id` of `target` is a live session of
    /// `account`.
    fn owned_by(&self, target: &str, id: u64, account: &str) -> bool {
        u32::try_from(id).ok().is_some_and(|id| {
            self.lock()
                .get(&(target.to_owned(), id))
                .is_some_and(|a| a == account)
        })
    }
}

/// Everything MySQL sessions share, built once at start.
pub struct MysqlRuntime {
    grants: GrantTable<MysqlGrant>,
    /// TLS towards the upstream, by target (targets with `tls.mode`
    /// `require` or `verify-full`).
    tls: HashMap<String, UpstreamTls>,
    connections: Arc<Connections>,
    builtin: Arc<Masker>,
    approvals: ApprovalContext,
}

impl MysqlRuntime {
    /// The runtime of `config`'s MySQL targets, its maskings compiled
    /// already.
    pub fn build_with(config: &Config, maskers: &Maskers) -> Result<Self, SetupError> {
        let mysql_targets: Vec<&str> = config
            .targets
            .iter()
            .filter(|t| t.protocol == Protocol::Mysql)
            .map(|t| t.name.as_str())
            .collect();
        let grants = GrantTable::build(
            config,
            |t| mysql_targets.contains(&t),
            |g| {
                // Validation compiled the policy (it exists for protocol grants).
                let Some(policy) = g
                    .policy
                    .as_ref()
                    .and_then(|p| config.compiled.sql_policy(p))
                else {
                    return Ok(None);
                };
                let rules = g
                    .masking
                    .as_ref()
                    .and_then(|m| config.maskings.get(m))
                    .map(|m| m.columns.as_slice())
                    .unwrap_or_default();
                let masked_names = rules
                    .iter()
                    .filter_map(|r| r.column.rsplit('.').next())
                    .map(|c| c.trim_matches(|q| q == '"' || q == '`').to_lowercase())
                    .collect();
                let strictest = rules
                    .iter()
                    .map(|r| r.strategy)
                    .max_by_key(|s| crate::masking::column::strictness(*s));
                let table_rules = g
                    .policy
                    .as_ref()
                    .and_then(|p| config.policies.get(p))
                    .is_some_and(|p| {
                        p.rules
                            .iter()
                            .any(|r| r.action != RuleAction::Allow && !r.tables.is_empty())
                    });
                Ok(Some(MysqlGrant {
                    grant: g.clone(),
                    policy: Arc::clone(policy),
                    masker: maskers.of(g),
                    allowlist: super::session::grant_allowlist(config, g)?,
                    masked_names,
                    strictest,
                    table_rules,
                }))
            },
        )?;
        let mut tls = HashMap::new();
        for t in config
            .targets
            .iter()
            .filter(|t| t.protocol == Protocol::Mysql)
        {
            let Some(cfg) = &t.tls else { continue };
            let made =
                super::postgres::stream::client_config(cfg, t.address).map_err(|source| {
                    SetupError::Tls {
                        target: t.name.clone(),
                        source,
                    }
                })?;
            if let Some(c) = made {
                tls.insert(t.name.clone(), c);
            }
        }
        Ok(Self {
            grants,
            tls,
            connections: Arc::default(),
            builtin: builtin_masker(),
            approvals: ApprovalContext::new(config),
        })
    }

    /// Statements of `approve` rules are held for a decision.
    pub fn with_approvals(mut self, approvals: Arc<crate::approval::Approvals>) -> Self {
        self.approvals.approvals = Some(approvals);
        self
    }
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Message(#[from] message::MessageError),
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("the upstream refused Warden's login: {0}")]
    Login(String),
    #[error("the upstream sent {0}")]
    Upstream(&'static str),
    #[error("{0}")]
    UnsafeServer(String),
    #[error("TLS with the upstream: {0}")]
    Tls(String),
}

/// The TLS client configuration of a target and the name its certificate
/// must carry.
type UpstreamTls = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// One side of the session: a socket and what was read but not used.
struct Peer {
    tcp: Stream,
    buf: BytesMut,
    max: usize,
    bytes_read: u64,
}

impl Peer {
    fn new(tcp: TcpStream, max: usize) -> Self {
        Self {
            tcp: Stream::Plain(tcp),
            buf: BytesMut::with_capacity(16 << 10),
            max,
            bytes_read: 0,
        }
    }

    async fn read(&mut self) -> Result<Packet, SessionError> {
        loop {
            if let Some(p) = packet::decode(&mut self.buf, self.max)? {
                return Ok(p);
            }
            let n = self.tcp.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(SessionError::Closed);
            }
            self.bytes_read += n as u64;
        }
    }

    /// TLS over this (plain, drained) connection, as a client.
    async fn start_tls(self, tls: &UpstreamTls) -> Result<Self, SessionError> {
        let (cfg, name) = tls;
        let Stream::Plain(tcp) = self.tcp else {
            return Err(SessionError::Upstream("TLS asked for twice"));
        };
        if !self.buf.is_empty() {
            return Err(SessionError::Upstream("bytes before the TLS handshake"));
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(cfg));
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        Ok(Self {
            tcp: Stream::ClientTls(Box::new(tls)),
            ..self
        })
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        let mut s = seq;
        packet::encode(&mut s, payload, &mut out);
        self.tcp.write_all(&out).await?;
        Ok(())
    }
}

impl super::session::HeldClient for Peer {
    fn buffered(&self) -> usize {
        self.buf.len()
    }

    async fn read_more(&mut self) -> bool {
        match self.tcp.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.bytes_read += n as u64;
                true
            }
        }
    }
}

/// Serves one accepted connection to a MySQL target.
/// `upstream`: the socket mark of upstream connections and the connect
/// timeout.
pub async fn serve(
    rt: &MysqlRuntime,
    audit: &AuditHandle,
    target: &Target,
    caller: Caller,
    tcp: TcpStream,
    (upstream_mark, connect_timeout): (u32, Duration),
) -> Outcome {
    let out = Outcome::default();
    let Some(grant) = rt.grants.get(&caller.account, &target.name) else {
        return out.ended(
            RefuseReason::TargetNotGranted,
            Some(format!(
                "no [[grant]] of {} on {}",
                caller.account, target.name
            )),
        );
    };
    let g = &grant.grant;
    let (Some(user), Some(database), Some(password_file)) =
        (&g.upstream_user, &g.database, &g.password_file)
    else {
        return out.ended(RefuseReason::GrantIncomplete, None);
    };
    let _ = tcp.set_nodelay(true);
    let mut client = Peer::new(tcp, target.max_message_bytes);
    let password = match super::postgres::upstream::read_password(password_file) {
        Ok(p) => p,
        Err(why) => {
            let _ = client
                .send(
                    0,
                    &message::err_packet(
                        code::ACCESS_DENIED,
                        "28000",
                        "Warden could not read the grant's credential",
                    ),
                )
                .await;
            return out.ended(RefuseReason::CredentialUnusable, Some(why));
        }
    };
    let up = match super::upstream::connect(target.address, upstream_mark, connect_timeout).await {
        Ok(u) => u,
        Err(e) => {
            let _ = client
                .send(
                    0,
                    &message::err_packet(
                        2003,
                        "HY000",
                        "Warden could not reach the upstream server",
                    ),
                )
                .await;
            return out.ended(RefuseReason::UpstreamConnectFailed, Some(e.to_string()));
        }
    };
    let _ = up.set_nodelay(true);
    let upstream = Peer::new(up, MAX_SERVER_PACKET);
    let login = Login {
        user,
        database,
        password: &password,
        tls: rt.tls.get(&target.name),
    };
    let (session_caps, server_hello, upstream) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&mut client, upstream, &login)).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                info!(error = %e, "mysql connection phase failed");
                let (reason, msg) = match &e {
                    SessionError::Login(_) | SessionError::Tls(_) => (
                        RefuseReason::UpstreamConnectFailed,
                        "Warden could not log in to the upstream server".to_owned(),
                    ),
                    SessionError::Handshake(h) => (RefuseReason::StartupRefused, h.to_string()),
                    SessionError::UnsafeServer(why) => (
                        RefuseReason::UpstreamUnsafeSettings,
                        format!("Warden refused the session: {why}"),
                    ),
                    _ => (RefuseReason::ProtocolError, e.to_string()),
                };
                // The client may be waiting for its greeting or for the answer
                // to its response; an ERR packet ends either.
                let _ = client
                    .send(2, &message::err_packet(code::HANDSHAKE, "08S01", &msg))
                    .await;
                return out.ended(reason, Some(e.to_string()));
            }
            Err(_) => return out.ended(RefuseReason::StartupTimeout, None),
        };
    drop(password);
    info!(upstream.user = %user, database = %database, "mysql session open");
    let text_masker = grant
        .masker
        .clone()
        .unwrap_or_else(|| Arc::clone(&rt.builtin));
    let mut s = Session {
        client,
        upstream,
        caller,
        target: target.name.clone(),
        database: database.clone(),
        upstream_user: user.clone(),
        policy: Arc::clone(&grant.policy),
        masker: grant.masker.clone(),
        text_masker,
        audit: audit.clone(),
        ctx: SessionContext::new(vec![database.clone()]),
        approvals: rt.approvals.approvals.clone(),
        allowlist: grant.allowlist.clone(),
        listed: None,
        views: Vec::new(),
        generated: Vec::new(),
        masked_names: grant.masked_names.clone(),
        strictest: grant.strictest,
        table_rules: grant.table_rules,
        account_uids: Vec::new(),
        deprecate_eof: session_caps & caps::DEPRECATE_EOF != 0,
        stmts: HashMap::new(),
        last_prepared: None,
        server: server_hello,
        password_file: password_file.clone(),
        connections: Arc::clone(&rt.connections),
        seq: 0,
        bytes_down: 0,
    };
    s.account_uids = rt.approvals.uids_of(&s.caller.account);
    let _registered =
        rt.connections
            .register(&target.name, s.server.connection_id, &s.caller.account);
    let res = s.run().await;
    let mut out = Outcome {
        bytes_up: s.client.bytes_read,
        bytes_down: s.bytes_down,
        ..Outcome::default()
    };
    if let Err((reason, e)) = res {
        out = out.ended(reason, Some(e.to_string()));
    }
    out
}

/// Who Warden logs in upstream as, and how.
struct Login<'a> {
    user: &'a str,
    database: &'a str,
    password: &'a [u8],
    /// TLS towards the upstream (`tls.mode` other than `disable`).
    tls: Option<&'a UpstreamTls>,
}

/// The connection phase (see the module documentation); returns the
/// session's capabilities, the server's greeting and the upstream
/// connection (over TLS when the target says so).
async fn connect(
    client: &mut Peer,
    mut upstream: Peer,
    who: &Login<'_>,
) -> Result<(u32, ServerHello, Peer), SessionError> {
    let Login {
        user,
        database,
        password,
        tls,
    } = *who;
    let greeting = upstream.read().await?;
    if greeting.payload.first() == Some(&0xff) {
        let e = message::parse_err(&greeting.payload)?;
        return Err(SessionError::Login(e.message));
    }
    let server = handshake::parse_server_hello(&greeting.payload)?;
    let nonce: [u8; 20] = std::array::from_fn(|_| rand::random::<u8>() % 94 + 33);
    let offered = server.capabilities & caps::SUPPORTED;
    client
        .send(0, &handshake::server_hello_for_client(&server, &nonce))
        .await?;
    let resp = client.read().await?;
    let hello = handshake::parse_client_hello(&resp.payload, offered)?;
    if let Some(db) = &hello.database
        && db != database
    {
        let msg = format!(
            "Access denied for user '{}' to database '{db}' (Warden: the grant's database is '{database}')",
            hello.user
        );
        client
            .send(
                resp.seq.wrapping_add(1),
                &message::err_packet(code::DB_ACCESS_DENIED, "42000", &msg),
            )
            .await?;
        return Err(SessionError::Handshake(
            handshake::HandshakeError::NotOffered {
                what: "another database",
            },
        ));
    }
    let session_caps = handshake::session_caps(&server, &hello);
    let mut seq = greeting.seq;
    let mut up_caps = session_caps;
    if let Some(tls) = tls {
        // SSLRequest, the TLS handshake, then the response over TLS.
        seq = seq.wrapping_add(1);
        upstream
            .send(seq, &handshake::ssl_request(&server, session_caps)?)
            .await?;
        upstream = upstream.start_tls(tls).await?;
        up_caps |= caps::SSL;
    }
    login(
        &mut upstream,
        &server,
        up_caps,
        user,
        database,
        password,
        seq,
    )
    .await?;
    check_sql_mode(&mut upstream, session_caps & caps::DEPRECATE_EOF != 0).await?;
    client
        .send(resp.seq.wrapping_add(1), &message::ok_packet(0, 0, 0x0002))
        .await?;
    Ok((session_caps, server, upstream))
}

/// The classifier reads statements as MySQL does by default; a session
/// whose sql_mode changes how quotes and backslashes are read is refused
/// (fail closed), as `SET sql_mode` is. Asked after login and after every
/// reset of the session (which takes the server's global mode again).
async fn check_sql_mode(upstream: &mut Peer, deprecate_eof: bool) -> Result<(), SessionError> {
    let mode = sql_mode(upstream, deprecate_eof).await?;
    if let Some(bad) = unsafe_sql_mode(&mode) {
        return Err(SessionError::UnsafeServer(format!(
            "the server's sql_mode has {bad}, which changes how Warden would read statements"
        )));
    }
    Ok(())
}

/// The session's `sql_mode`, asked of the upstream right after login.
async fn sql_mode(upstream: &mut Peer, deprecate_eof: bool) -> Result<String, SessionError> {
    let rows = internal_query(upstream, deprecate_eof, "SELECT @@SESSION.sql_mode", 1).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .unwrap_or_default())
}

/// Most rows Warden reads of its own queries.
const MAX_INTERNAL_ROWS: usize = 100_000;

/// Runs one of Warden's own queries (answered with `columns` text columns)
/// on the upstream; its rows (NULL as empty).
async fn internal_query(
    upstream: &mut Peer,
    deprecate_eof: bool,
    sql: &str,
    columns: u64,
) -> Result<Vec<Vec<String>>, SessionError> {
    let bad = SessionError::Upstream("an unexpected answer to one of Warden's own queries");
    let mut cmd = Vec::with_capacity(sql.len() + 1);
    cmd.push(com::QUERY);
    cmd.extend_from_slice(sql.as_bytes());
    upstream.send(0, &cmd).await?;
    if message::response(&upstream.read().await?.payload)? != Response::ResultSet(columns) {
        return Err(bad);
    }
    for _ in 0..columns {
        upstream.read().await?; // the column definitions
    }
    if !deprecate_eof {
        upstream.read().await?;
    }
    let n = usize::try_from(columns).unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    loop {
        let p = upstream.read().await?;
        if message::is_eof(&p.payload, deprecate_eof) {
            return Ok(rows);
        }
        if p.payload.first() == Some(&0xff) || rows.len() >= MAX_INTERNAL_ROWS {
            return Err(bad);
        }
        rows.push(
            message::text_row(&p.payload, n)?
                .into_iter()
                .map(|v| {
                    v.map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                })
                .collect(),
        );
    }
}

/// The views the upstream user can see, as `schema.name` in lower case
/// (the server's own `SYSTEM VIEW`s of `information_schema` are not: the
/// classifier decides which of them are reads):
/// the origin Warden can read of their columns is the view, not the table
/// it reads, so their columns are masked by the strictest column rule
/// (see `Session::column_strategy`).
async fn visible_views(
    upstream: &mut Peer,
    deprecate_eof: bool,
) -> Result<Vec<String>, SessionError> {
    let rows = internal_query(
        upstream,
        deprecate_eof,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_TYPE = 'VIEW'",
        2,
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.join(".").to_lowercase())
        .collect())
}

/// The generated columns the upstream user can see, as (table, column) in
/// lower case (see `Session::generated`). MariaDB reports NULL, MySQL an
/// empty text, for a column that is not generated.
async fn generated_columns(
    upstream: &mut Peer,
    deprecate_eof: bool,
) -> Result<Vec<(String, String)>, SessionError> {
    let rows = internal_query(
        upstream,
        deprecate_eof,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE GENERATION_EXPRESSION IS NOT NULL AND GENERATION_EXPRESSION <> ''",
        2,
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.as_slice() {
            [t, c] => Some((t.to_lowercase(), c.to_lowercase())),
            _ => None,
        })
        .collect())
}

/// The first `sql_mode` flag that changes tokenisation, if any.
fn unsafe_sql_mode(mode: &str) -> Option<&'static str> {
    let flags: Vec<String> = mode
        .split(',')
        .map(|f| f.trim().to_ascii_uppercase())
        .collect();
    // ANSI (and the combination modes holding it) turn on ANSI_QUOTES.
    ["ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ANSI"]
        .into_iter()
        .find(|b| flags.iter().any(|f| f == b))
}

/// Logs in upstream as the grant's user.
async fn login(
    upstream: &mut Peer,
    server: &ServerHello,
    session_caps: u32,
    user: &str,
    database: &str,
    password: &[u8],
    greeting_seq: u8,
) -> Result<(), SessionError> {
    let response =
        handshake::client_hello_for_server(server, session_caps, user, database, password)?;
    upstream
        .send(greeting_seq.wrapping_add(1), &response)
        .await?;
    authenticate(upstream, server, password).await
}

/// The authentication exchange after Warden's response (or its
/// `COM_CHANGE_USER`): auth switches, `caching_sha2_password` fast and
/// full paths, up to the server's OK or ERR.
async fn authenticate(
    upstream: &mut Peer,
    server: &ServerHello,
    password: &[u8],
) -> Result<(), SessionError> {
    let mut nonce = server.nonce.clone();
    let mut plugin = server.plugin.clone();
    for _ in 0..8 {
        let p = upstream.read().await?;
        let next = p.seq.wrapping_add(1);
        match p.payload.first() {
            Some(0x00) => return Ok(()),
            Some(0xff) => {
                let e = message::parse_err(&p.payload)?;
                return Err(SessionError::Login(format!("{} {}", e.code, e.message)));
            }
            Some(0xfe) => {
                let (new_plugin, new_nonce) = handshake::parse_auth_switch(&p.payload)?;
                let mut n = new_nonce;
                if n.len() > 20 {
                    n.truncate(20);
                }
                let data = handshake::auth_data(&new_plugin, &n, password)?;
                plugin = new_plugin;
                nonce = n;
                upstream.send(next, &data).await?;
            }
            Some(0x01) if plugin == b"caching_sha2_password" => match p.payload.get(1) {
                // Fast authentication succeeded: OK follows.
                Some(3) => {}
                // Full authentication over TLS: the password itself.
                Some(4) if upstream.tcp.is_tls() => {
                    let mut clear = password.to_vec();
                    clear.push(0);
                    upstream.send(next, &clear).await?;
                }
                // Full authentication in clear: ask for the server's RSA key.
                Some(4) => upstream.send(next, &[0x02]).await?,
                // The key itself.
                _ => {
                    let enc = handshake::rsa_password(password, &nonce, &p.payload[1..])?;
                    upstream.send(next, &enc).await?;
                }
            },
            _ => {
                return Err(SessionError::Upstream(
                    "an unexpected authentication packet",
                ));
            }
        }
    }
    Err(SessionError::Upstream("too many authentication rounds"))
}

/// A running session after the connection phase.
struct Session {
    client: Peer,
    upstream: Peer,
    caller: Caller,
    target: String,
    database: String,
    upstream_user: String,
    policy: Arc<Policy>,
    masker: Option<Arc<Masker>>,
    /// Masks statement text and error messages for the audit trail.
    text_masker: Arc<Masker>,
    audit: AuditHandle,
    ctx: SessionContext,
    /// Holds statements of `approve` rules (`None`: they are refused).
    approvals: Option<Arc<crate::approval::Approvals>>,
    /// The grant's allow-list (`None` without a `mode`).
    allowlist: Option<Arc<GrantAllowlist>>,
    /// The allow-list's facts on the statement being handled (and its
    /// fingerprint), for its audit events and an `approve --learn`.
    listed: Option<(AllowlistFacts, Option<Fingerprint>)>,
    /// Views the upstream user sees (`schema.name`, lower case), read at
    /// login and after every forwarded DDL statement.
    views: Vec<String>,
    /// Generated columns the upstream user sees (table name and column
    /// name, lower case), read with the views on a grant that masks
    /// columns: one of a table with column rules may compute a masked
    /// value (`AS (concat(card, ''))`), so it is redacted whole (NULL
    /// under a `null` rule) and, like a masked column, only ever a bare
    /// output column.
    generated: Vec<(String, String)>,
    /// See [`MysqlGrant::masked_names`] (non-empty: the grant masks
    /// columns, views are read).
    masked_names: Vec<String>,
    strictest: Option<Strategy>,
    /// See [`MysqlGrant::table_rules`] (views are read too).
    table_rules: bool,
    /// The account's enrolled uids (never approvers of its requests).
    account_uids: Vec<u32>,
    deprecate_eof: bool,
    /// Statements prepared through Warden, by the server's id.
    stmts: HashMap<u32, Prepared>,
    /// The statement the last `COM_STMT_PREPARE` made (what MariaDB's id
    /// 0xffffffff names); `None` after a refused or failed one.
    last_prepared: Option<u32>,
    /// The server's greeting (its nonce and plugin re-authenticate a
    /// `COM_CHANGE_USER`).
    server: ServerHello,
    /// The grant's credential, read again for a `COM_CHANGE_USER`.
    password_file: std::path::PathBuf,
    /// Upstream connection ids of live sessions (a `KILL` may name only
    /// the account's own).
    connections: Arc<Connections>,
    /// Statements so far (request and result events share the number).
    seq: u64,
    bytes_down: u64,
}

/// What the result of one forwarded statement amounted to.
#[derive(Default)]
struct Relayed {
    rows: u64,
    masked: u64,
    error: Option<message::ErrInfo>,
    /// The columns of a binary result set (kept for `COM_STMT_FETCH`).
    columns: Option<Arc<ResultColumns>>,
}

/// A prepared statement a command names (see `Session::named_statement`).
struct Named {
    id: u32,
    verdict: Verdict,
    statement: String,
    columns: Option<Arc<ResultColumns>>,
    /// The command, with the server's statement id.
    payload: Vec<u8>,
}

/// A statement the policy let through, as audited.
struct Admitted {
    verdict: Verdict,
    /// The text masked for the audit trail.
    statement: String,
    /// The tables of each statement of a multi-statement text, by result.
    per_statement: Vec<Vec<String>>,
}

/// How one result column's values are masked.
#[derive(Debug, Clone)]
struct ResultColumn {
    strategy: Option<Strategy>,
    ty: ColumnType,
    flags: ColumnFlags,
    /// A non-string column of binary rows shown to the client as a string
    /// (its values are masked text).
    as_string: bool,
}

/// The columns of one result set.
#[derive(Debug)]
struct ResultColumns {
    columns: Vec<ResultColumn>,
    binary: bool,
}

/// A statement Warden prepared: the verdict its executions run under
/// (`Approve`: each execution is held, showing its parameters).
struct Prepared {
    verdict: Verdict,
    /// The statement text as audited (masked).
    statement: String,
    /// The columns of its last execution's result (for `COM_STMT_FETCH`).
    columns: Option<Arc<ResultColumns>>,
    /// How many parameters it has.
    params: u16,
    /// The parameter types of its last execution (a client sends them
    /// once).
    types: Vec<(ColumnType, ColumnFlags)>,
    /// Per parameter, the long data sent since the last execution (the
    /// first [`LONG_DATA_SHOWN`] bytes) and its full length.
    long_data: Vec<Option<(Vec<u8>, usize)>>,
    /// The allow-list's facts on its text (its executions carry them).
    listed: Option<(AllowlistFacts, Option<Fingerprint>)>,
}

impl Session {
    async fn run(&mut self) -> Result<(), (RefuseReason, SessionError)> {
        self.refresh_views()
            .await
            .map_err(|e| (RefuseReason::SessionError, e))?;
        loop {
            let p = match self.client.read().await {
                Ok(p) => p,
                Err(SessionError::Closed) => return Ok(()),
                Err(SessionError::Frame(e)) => {
                    let (c, state) = match e {
                        FrameError::TooLong { .. } => (code::PACKET_TOO_LARGE, "08S01"),
                        FrameError::Sequence { .. } => (code::PACKETS_OUT_OF_ORDER, "08S01"),
                    };
                    let _ = self.client_err(1, c, state, &e.to_string()).await;
                    return Err((RefuseReason::ProtocolError, e.into()));
                }
                Err(e) => return Err((RefuseReason::SessionError, e)),
            };
            if p.seq != 0 {
                let msg = "packets out of order: a command must start with sequence id 0";
                let _ = self
                    .client_err(1, code::PACKETS_OUT_OF_ORDER, "08S01", msg)
                    .await;
                let e = FrameError::Sequence {
                    expected: 0,
                    got: p.seq,
                };
                return Err((RefuseReason::ProtocolError, e.into()));
            }
            let Some(&command) = p.payload.first() else {
                let _ = self
                    .client_err(1, code::UNKNOWN_COM, "08S01", "empty command packet")
                    .await;
                return Err((
                    RefuseReason::ProtocolError,
                    message::MessageError::Empty.into(),
                ));
            };
            let r = match command {
                com::QUIT => return Ok(()),
                com::PING => self.relay_simple(&p.payload).await,
                com::INIT_DB => {
                    let db = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                    if db == self.database {
                        self.relay_simple(&p.payload).await
                    } else {
                        self.other_database("COM_INIT_DB", &db).await
                    }
                }
                com::CHANGE_USER => self.change_user(&p.payload).await,
                com::STATISTICS => self.relay_simple(&p.payload).await,
                com::FIELD_LIST => self.field_list(&p.payload).await,
                com::RESET_CONNECTION => self.reset_connection(&p.payload).await,
                com::PROCESS_KILL => {
                    match p
                        .payload
                        .get(1..5)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    {
                        Some(id) => self.kill(u64::from(id), None, &p.payload).await,
                        None => {
                            self.refused_command("COM_PROCESS_KILL", "is truncated")
                                .await;
                            self.client_err(
                                1,
                                code::UNKNOWN_COM,
                                "08S01",
                                "truncated COM_PROCESS_KILL",
                            )
                            .await
                        }
                    }
                }
                com::QUERY => {
                    // The session's character set is utf8mb4 (Warden logs in
                    // with it): text that is not UTF-8 is not read at all.
                    let utf8 = std::str::from_utf8(&p.payload[1..]).is_ok();
                    let text = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                    match crate::policy::mysql::kill_target(&text).filter(|_| utf8) {
                        Some(id) => self.kill(id, Some(&text), &p.payload).await,
                        None => self.query(&text, utf8, &p.payload).await,
                    }
                }
                com::STMT_PREPARE => {
                    let utf8 = std::str::from_utf8(&p.payload[1..]).is_ok();
                    let text = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                    self.prepare(&text, utf8, &p.payload).await
                }
                com::STMT_EXECUTE => self.execute(&p.payload).await,
                com::STMT_FETCH => self.fetch(&p.payload).await,
                com::STMT_CLOSE | com::STMT_RESET | com::STMT_SEND_LONG_DATA => {
                    self.statement_command(command, &p.payload).await
                }
                // Multi-statements on or off: every statement of a text is
                // decided either way.
                com::SET_OPTION => self.relay_eof_answer(&p.payload).await,
                other => {
                    debug!(command = other, "mysql command refused");
                    let name = format!("command 0x{other:02x}");
                    self.refused_command(&name, "is not supported by Warden")
                        .await;
                    let msg = format!("{name} is not supported by Warden");
                    self.client_err(1, code::UNKNOWN_COM, "08S01", &msg).await
                }
            };
            r.map_err(|e| (RefuseReason::SessionError, e))?;
        }
    }

    async fn client_err(
        &mut self,
        seq: u8,
        c: u16,
        state: &str,
        msg: &str,
    ) -> Result<(), SessionError> {
        let p = message::err_packet(c, state, msg);
        self.bytes_down += p.len() as u64 + 4;
        self.client.send(seq, &p).await
    }

    /// A command answered by one packet (OK or ERR).
    async fn relay_simple(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.upstream.send(0, payload).await?;
        let r = self.upstream.read().await?;
        self.bytes_down += r.payload.len() as u64 + 4;
        self.client.send(1, &r.payload).await
    }

    /// Refuses a database other than the grant's (1044), audited.
    async fn other_database(&mut self, command: &str, db: &str) -> Result<(), SessionError> {
        let msg = format!(
            "Access denied to database '{db}' (Warden: the grant's database is '{}')",
            self.database
        );
        self.refused_command(command, &format!("names database {db}"))
            .await;
        self.client_err(1, code::DB_ACCESS_DENIED, "42000", &msg)
            .await
    }

    /// `COM_CHANGE_USER`: the upstream session is re-authenticated as the
    /// grant's user on the grant's database, whatever user the workload
    /// names (its credentials are ignored, another database is refused);
    /// prepared statements are gone, the sql_mode is checked again.
    async fn change_user(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let db = match handshake::change_user_database(payload) {
            Ok(db) => db,
            Err(e) => {
                self.refused_command("COM_CHANGE_USER", "is malformed")
                    .await;
                return self
                    .client_err(1, code::HANDSHAKE, "08S01", &e.to_string())
                    .await;
            }
        };
        if let Some(db) = db.filter(|d| *d != self.database) {
            return self.other_database("COM_CHANGE_USER", &db).await;
        }
        let password = match super::postgres::upstream::read_password(&self.password_file) {
            Ok(p) => p,
            Err(why) => {
                warn!(error = %why, "mysql change user: the grant's credential is unreadable");
                return self
                    .client_err(
                        1,
                        code::ACCESS_DENIED,
                        "28000",
                        "Warden could not read the grant's credential",
                    )
                    .await;
            }
        };
        let packet = handshake::change_user_for_server(
            &self.server,
            &self.upstream_user,
            &self.database,
            &password,
        )?;
        self.upstream.send(0, &packet).await?;
        authenticate(&mut self.upstream, &self.server, &password).await?;
        drop(password);
        self.session_reset().await?;
        info!(upstream.user = %self.upstream_user, "mysql session re-authenticated as the grant");
        self.client.send(1, &message::ok_packet(0, 0, 0x0002)).await
    }

    /// `COM_FIELD_LIST` (the columns of a table, for the client's name
    /// completion): decided as `SHOW COLUMNS FROM` the table, then relayed
    /// up to its EOF.
    async fn field_list(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let table = payload[1..].split(|&b| b == 0).next().unwrap_or_default();
        let table = std::str::from_utf8(table).ok().filter(|t| !t.is_empty());
        let text = table.map(|t| format!("SHOW COLUMNS FROM `{}`", t.replace('`', "``")));
        let Some(text) = text else {
            self.refused_command("COM_FIELD_LIST", "names no table in UTF-8")
                .await;
            return self
                .client_err(
                    1,
                    code::TABLE_ACCESS_DENIED,
                    "42000",
                    "COM_FIELD_LIST refused",
                )
                .await;
        };
        let Some(Admitted {
            verdict, statement, ..
        }) = self.admit(&text, true, "field_list").await?
        else {
            return Ok(());
        };
        let started = Instant::now();
        self.upstream.send(0, payload).await?;
        let mut out = BytesMut::with_capacity(FLUSH_AT);
        let mut seq: u8 = 1;
        let mut relayed = Relayed::default();
        loop {
            let p = self.upstream.read().await?;
            if p.payload.first() == Some(&0xff) {
                let e = message::parse_err(&p.payload)?;
                let masked = self.masked_err(&e);
                self.put(&mut out, &mut seq, &masked);
                relayed.error = Some(e);
                break;
            }
            self.put(&mut out, &mut seq, &p.payload);
            if message::is_eof(&p.payload, self.deprecate_eof) {
                break;
            }
            relayed.rows += 1;
            if relayed.rows > MAX_COLUMNS {
                return Err(SessionError::Upstream("a field list of too many columns"));
            }
        }
        self.flush(&mut out).await?;
        self.record_result(&verdict, &statement, "field_list", &relayed, started);
        Ok(())
    }

    /// `COM_RESET_CONNECTION`: relayed; prepared statements are gone and
    /// the sql_mode is checked again.
    async fn reset_connection(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.upstream.send(0, payload).await?;
        let r = self.upstream.read().await?;
        if r.payload.first() == Some(&0x00) {
            self.session_reset().await?;
        }
        self.bytes_down += r.payload.len() as u64 + 4;
        self.client.send(1, &r.payload).await
    }

    /// After the server reset the session: no prepared statements, and the
    /// session's sql_mode is the global one again.
    async fn session_reset(&mut self) -> Result<(), SessionError> {
        self.stmts.clear();
        self.last_prepared = None;
        check_sql_mode(&mut self.upstream, self.deprecate_eof).await
    }

    /// `KILL [CONNECTION | QUERY] id` and `COM_PROCESS_KILL`: forwarded
    /// only when `id` is a live session of the same account through
    /// Warden; otherwise refused (1095) and audited.
    async fn kill(
        &mut self,
        id: u64,
        text: Option<&str>,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        let statement = text.map_or_else(|| format!("COM_PROCESS_KILL {id}"), str::to_owned);
        let own = self
            .connections
            .owned_by(&self.target, id, &self.caller.account);
        self.seq += 1;
        let verdict = Verdict {
            action: if own { Action::Allow } else { Action::Block },
            rule: None,
            reason: if own {
                format!("KILL of connection {id}, the account's own")
            } else {
                format!("KILL of connection {id}, which is not a session of this account")
            },
            class: crate::policy::model::StatementClass::Privileged,
            tables: Vec::new(),
            functions: Vec::new(),
        };
        let request = self.event(&verdict, &statement, StatementPhase::Request, "simple");
        let recorded = self.audit.record(request).await;
        if !own || recorded.is_err() {
            let msg = if recorded.is_err() {
                "statement refused: the audit trail is unavailable".to_owned()
            } else {
                format!("You are not owner of thread {id} (Warden: not a session of this account)")
            };
            return self.client_err(1, code::KILL_DENIED, "HY000", &msg).await;
        }
        let started = Instant::now();
        self.upstream.send(0, payload).await?;
        let relayed = self.relay_result(&verdict, false, &[]).await?;
        self.record_result(&verdict, &statement, "simple", &relayed, started);
        Ok(())
    }

    /// A server's ERR packet with its message masked (it may quote a
    /// value).
    fn masked_err(&self, e: &message::ErrInfo) -> Vec<u8> {
        let msg = self.text_masker.mask_str(&e.message).0;
        message::err_packet(e.code, &e.sqlstate, &msg)
    }

    /// A command answered by an EOF packet (`COM_SET_OPTION`) or an ERR.
    async fn relay_eof_answer(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.relay_simple(payload).await
    }

    /// The verdict on a text, and for a multi-statement text whose
    /// statements each answer with exactly one result, the tables of each
    /// statement (what the computed columns of its result are masked by;
    /// empty otherwise: every result is masked by all the text's tables).
    fn decide(&self, text: &str, utf8: bool) -> (Verdict, Vec<Vec<String>>) {
        if !utf8 {
            let v = Verdict::unparsable(&crate::policy::AnalyzeError::Unsupported {
                reason: "the statement text is not valid UTF-8".into(),
            });
            return (v, Vec::new());
        }
        let (verdict, per_statement) = match crate::policy::mysql::analyze(text, &self.database) {
            Ok(a) => {
                // CALL and unknown statements may answer with several
                // results: no per-statement mapping then.
                let one_result_each = a
                    .statements
                    .iter()
                    .all(|st| !matches!(st.command.as_str(), "PRIVILEGED" | "UNKNOWN"));
                let per: Vec<Vec<String>> = if a.statements.len() > 1 && one_result_each {
                    a.statements
                        .iter()
                        .map(|st| st.tables.iter().map(|t| t.display()).collect())
                        .collect()
                } else {
                    Vec::new()
                };
                (self.policy.decide(&a, &self.ctx), per)
            }
            Err(e) => return (Verdict::unparsable(&e), Vec::new()),
        };
        (
            self.vet_masked_columns(text, self.vet_views(verdict)),
            per_statement,
        )
    }

    /// A view reads tables Warden cannot see (its definition is not shown
    /// to the upstream user without SHOW VIEW): under a policy whose block
    /// or approve rules name tables, a statement reading one is refused.
    fn vet_views(&self, verdict: Verdict) -> Verdict {
        if self.table_rules && verdict.is_allowed() && self.reads_view(&verdict.tables) {
            return Verdict {
                action: Action::Block,
                rule: None,
                reason: "the statement reads a view: Warden cannot see which tables it reads, \
                         and the policy blocks or holds tables"
                    .into(),
                ..verdict
            };
        }
        verdict
    }

    /// Reads the views the upstream user sees again (only for a grant
    /// with column masking rules or table-naming block/approve rules: what
    /// they are for).
    async fn refresh_views(&mut self) -> Result<(), SessionError> {
        if !self.masked_names.is_empty() || self.table_rules {
            self.views = visible_views(&mut self.upstream, self.deprecate_eof).await?;
        }
        if !self.masked_names.is_empty() {
            self.generated = generated_columns(&mut self.upstream, self.deprecate_eof).await?;
        }
        Ok(())
    }

    /// Whether `column` of `table` (either spelling) is a generated
    /// column of a table with column rules.
    fn masked_generated(&self, table: &str, column: &str) -> bool {
        let Some(m) = self.masker.as_ref() else {
            return false;
        };
        let table = table.rsplit('.').next().unwrap_or(table).to_lowercase();
        let column = column.to_lowercase();
        self.generated
            .iter()
            .any(|(t, c)| *t == table && *c == column)
            && m.column_rule_loose(None, &table, None).is_some()
    }

    /// Whether one of `tables` (as the classifier names them) is a view.
    fn reads_view(&self, tables: &[String]) -> bool {
        !self.views.is_empty()
            && tables.iter().any(|t| {
                let t = t.to_lowercase();
                let full = if t.contains('.') {
                    t
                } else {
                    format!("{}.{t}", self.database.to_lowercase())
                };
                self.views.contains(&full)
            })
    }

    /// Masked columns only as bare output columns.
    fn vet_masked_columns(&self, text: &str, verdict: Verdict) -> Verdict {
        // Masked columns only as bare output columns (fail closed: a name
        // masked in any table the statement reads counts).
        if let Some(m) = self.masker.as_ref().filter(|m| m.has_columns())
            && verdict.is_allowed()
        {
            let masked_in = |column: Option<&str>| {
                verdict.tables.iter().any(|t| {
                    let t = t.rsplit('.').next().unwrap_or(t);
                    m.column_rule_loose(None, t, column).is_some()
                })
            };
            // A view may read a masked table under any column name it
            // likes, and conditions on its columns could probe the values:
            // what cannot be analysed is refused (its columns would also
            // be masked by the strictest rule, see `column_strategy`).
            if self.reads_view(&verdict.tables) {
                return Verdict {
                    action: Action::Block,
                    rule: None,
                    reason: "the statement reads a view: Warden cannot tie a view's columns \
                             to the masked columns it may read"
                        .into(),
                    ..verdict
                };
            }
            let reads_masked = masked_in(None);
            let masked = |column: &str| {
                masked_in(Some(column))
                    || verdict
                        .tables
                        .iter()
                        .any(|t| self.masked_generated(t, column))
            };
            if let Some(why) =
                crate::policy::mysql::masked_column_misuse(text, masked, reads_masked)
            {
                return Verdict {
                    action: Action::Block,
                    rule: None,
                    reason: why,
                    ..verdict
                };
            }
        }
        verdict
    }

    fn event(
        &self,
        v: &Verdict,
        statement: &str,
        phase: StatementPhase,
        via: &str,
    ) -> StatementEvent {
        let (process, identity) = super::session::caller_facts(
            phase,
            &self.caller.process,
            self.caller.identity.as_ref(),
        );
        let decision = decision_of(v);
        StatementEvent {
            time_ms: now_ms(),
            phase,
            decision,
            session: self.caller.session,
            statement_seq: self.seq,
            account: self.caller.account.clone(),
            target: self.target.clone(),
            protocol: "mysql".into(),
            database: self.database.clone(),
            upstream_user: self.upstream_user.clone(),
            process,
            identity,
            via: via.to_owned(),
            statement: statement.to_owned(),
            class: v.class.as_str().to_owned(),
            tables: v.tables.clone(),
            functions: v.functions.clone(),
            policy: Some(self.policy.name().to_owned()),
            rule: v.rule.as_ref().map(|r| r.label.clone()),
            reason: Some(v.reason.clone()),
            rows: None,
            values_masked: None,
            duration_us: None,
            command_tag: None,
            sqlstate: (!v.is_allowed()).then(|| "42000".to_owned()),
            error: None,
            result: None,
            allowlist: self.listed.as_ref().map(|(facts, _)| facts.clone()),
        }
    }

    /// Decides, holds (approval) and audits a statement before it is
    /// forwarded; a refused one is answered with ERR 1142 here. `Some`
    /// with the verdict and the masked text when the statement may go. A
    /// `COM_STMT_PREPARE` of an `approve` rule is not held: it runs nothing,
    /// each of its executions is held with its values (see `execute`).
    async fn admit(
        &mut self,
        text: &str,
        utf8: bool,
        via: &str,
    ) -> Result<Option<Admitted>, SessionError> {
        self.seq += 1;
        let (verdict, per_statement) = self.decide(text, utf8);
        let statement = self.text_masker.mask_str(text).0.into_owned();
        let verdict = self.allowlist_gate(text, utf8, &statement, verdict);
        let deferred = via == "prepare" && verdict.action == Action::Approve;
        // A statement of an `approve` rule is held (nothing forwarded) until
        // decided; its request event records how it ended.
        let verdict = if deferred {
            verdict
        } else {
            let fingerprint = crate::approval::fingerprint::exact_fingerprint("mysql", &statement);
            self.approval(verdict, &statement, fingerprint).await
        };
        Ok(self
            .gate(verdict, &statement, via, deferred)
            .await?
            .map(|verdict| Admitted {
                verdict,
                statement,
                per_statement,
            }))
    }

    /// The grant's allow-list over the rule verdict (learn: record;
    /// enforce: an unlisted fingerprint is refused, or held for approval
    /// with `on_new = "approve"`, whatever the rules say; block and deny
    /// still win). Remembers the facts for the statement's audit events.
    fn allowlist_gate(
        &mut self,
        text: &str,
        utf8: bool,
        statement: &str,
        verdict: Verdict,
    ) -> Verdict {
        self.listed = None;
        let Some(gate) = self.allowlist.clone() else {
            return verdict;
        };
        let fp = utf8
            .then(|| crate::policy::allowlist::mysql_fingerprint(text))
            .flatten();
        let (facts, judged) = super::session::judge_allowlist(
            &gate,
            fp.as_ref(),
            "mysql",
            statement,
            decision_of(&verdict),
        );
        self.listed = Some((facts, fp));
        let (action, why) = match judged {
            Judged::Pass => return verdict,
            Judged::Refuse(why) => (Action::Deny, why),
            Judged::Hold(why) => (Action::Approve, why),
        };
        if !matches!(verdict.action, Action::Allow | Action::Approve) {
            return verdict;
        }
        Verdict {
            action,
            rule: Some(crate::policy::RuleRef {
                index: usize::MAX,
                label: format!("allowlist of grant {}", gate.grant),
            }),
            reason: why,
            ..verdict
        }
    }

    /// Audits the request phase of a decided statement and answers a
    /// refused one with ERR 1142; `Some(verdict)` when it may be forwarded
    /// (`approve_later`: an `Approve` verdict may, for a PREPARE).
    async fn gate(
        &mut self,
        verdict: Verdict,
        statement: &str,
        via: &str,
        approve_later: bool,
    ) -> Result<Option<Verdict>, SessionError> {
        let request = self.event(&verdict, statement, StatementPhase::Request, via);
        // Audit before effect: an unrecorded statement is not forwarded.
        let recorded = self.audit.record(request).await;
        if let Err(e) = &recorded {
            tracing::error!(error = %e, "could not audit a statement; refused");
        }
        let may = verdict.is_allowed() || (approve_later && verdict.action == Action::Approve);
        if may && recorded.is_ok() {
            return Ok(Some(verdict));
        }
        info!(statement.seq = self.seq, rule = ?verdict.rule.as_ref().map(|r| &r.label), "mysql statement refused");
        let why = match (verdict.action, &verdict.rule) {
            _ if recorded.is_err() => {
                "statement refused: the audit trail is unavailable".to_owned()
            }
            (Action::Approve, _) => format!(
                "statement requires approval and was not approved: {}",
                verdict.reason
            ),
            (_, Some(r)) => {
                format!("statement refused by rule {}: {}", r.label, verdict.reason)
            }
            (_, None) => format!("statement refused: {}", verdict.reason),
        };
        self.client_err(1, code::TABLE_ACCESS_DENIED, "42000", &why)
            .await?;
        Ok(None)
    }

    /// The result event of a forwarded statement.
    fn record_result(
        &self,
        verdict: &Verdict,
        statement: &str,
        via: &str,
        relayed: &Relayed,
        started: Instant,
    ) {
        let mut ev = self.event(verdict, statement, StatementPhase::Result, via);
        ev.rows = Some(relayed.rows);
        ev.values_masked = Some(relayed.masked);
        ev.duration_us = Some(started.elapsed().as_micros() as u64);
        if let Some(e) = &relayed.error {
            ev.sqlstate = Some(e.sqlstate.clone());
            ev.error = Some(format!(
                "{} {}",
                e.code,
                self.text_masker.mask_str(&e.message).0
            ));
        }
        self.audit.record_detached(ev);
    }

    /// `COM_QUERY`: every statement of the text decided (a multi-statement
    /// text is refused whole when any of its statements is), then relayed
    /// with its text result rows masked.
    async fn query(&mut self, text: &str, utf8: bool, payload: &[u8]) -> Result<(), SessionError> {
        let Some(Admitted {
            verdict,
            statement,
            per_statement,
        }) = self.admit(text, utf8, "simple").await?
        else {
            return Ok(());
        };
        let started = Instant::now();
        self.upstream.send(0, payload).await?;
        let relayed = self.relay_result(&verdict, false, &per_statement).await?;
        self.record_result(&verdict, &statement, "simple", &relayed, started);
        // DDL (or what the classifier does not know) may have made a view.
        if !matches!(
            verdict.class,
            crate::policy::model::StatementClass::Read
                | crate::policy::model::StatementClass::Write
        ) {
            self.refresh_views().await?;
        }
        Ok(())
    }

    /// `COM_STMT_PREPARE`: the statement text is decided like a query's
    /// (refused at PREPARE, never forwarded); the server's answer is
    /// relayed with the result columns' definitions as executions will
    /// send them (masked non-string columns become strings), and the
    /// statement is remembered with its verdict.
    async fn prepare(
        &mut self,
        text: &str,
        utf8: bool,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        self.last_prepared = None;
        let Some(Admitted {
            verdict, statement, ..
        }) = self.admit(text, utf8, "prepare").await?
        else {
            return Ok(());
        };
        let started = Instant::now();
        self.upstream.send(0, payload).await?;
        let p = self.upstream.read().await?;
        let mut out = BytesMut::with_capacity(FLUSH_AT);
        let mut seq: u8 = 1;
        let mut relayed = Relayed::default();
        if p.payload.first() == Some(&0xff) {
            let e = message::parse_err(&p.payload)?;
            let masked = self.masked_err(&e);
            self.put(&mut out, &mut seq, &masked);
            relayed.error = Some(e);
        } else {
            let ok = binary::parse_prepare_ok(&p.payload)?;
            if u64::from(ok.columns) > MAX_COLUMNS || u64::from(ok.params) > MAX_PARAMS {
                return Err(SessionError::Upstream("a statement of too many columns"));
            }
            self.put(&mut out, &mut seq, &p.payload);
            for _ in 0..ok.params {
                let c = self.upstream.read().await?;
                self.put(&mut out, &mut seq, &c.payload);
            }
            if ok.params > 0 && !self.deprecate_eof {
                self.relay_eof(&mut out, &mut seq).await?;
            }
            for _ in 0..ok.columns {
                let c = self.upstream.read().await?;
                let (_, shown) = self.result_column(&c.payload, &verdict.tables, true)?;
                self.put(&mut out, &mut seq, &shown);
            }
            if ok.columns > 0 && !self.deprecate_eof {
                self.relay_eof(&mut out, &mut seq).await?;
            }
            if self.stmts.len() >= MAX_STATEMENTS {
                return Err(SessionError::Upstream("too many prepared statements"));
            }
            self.stmts.insert(
                ok.statement_id,
                Prepared {
                    verdict: verdict.clone(),
                    statement: statement.clone(),
                    columns: None,
                    params: ok.params,
                    types: Vec::new(),
                    long_data: Vec::new(),
                    listed: self.listed.clone(),
                },
            );
            self.last_prepared = Some(ok.statement_id);
        }
        self.flush(&mut out).await?;
        self.record_result(&verdict, &statement, "prepare", &relayed, started);
        Ok(())
    }

    /// Relays the EOF packet that ends parameter or column definitions.
    async fn relay_eof(&mut self, out: &mut BytesMut, seq: &mut u8) -> Result<(), SessionError> {
        let p = self.upstream.read().await?;
        if !message::is_eof(&p.payload, false) {
            return Err(SessionError::Upstream("no EOF after column definitions"));
        }
        self.put(out, seq, &p.payload);
        Ok(())
    }

    /// The statement a `COM_STMT_*` command names, as Warden prepared it
    /// (id 0xffffffff is MariaDB's "the statement just prepared"); `None`
    /// when Warden did not prepare it.
    fn known_statement(&self, payload: &[u8]) -> Option<u32> {
        let id = binary::statement_id(payload).ok()?;
        let id = if id == u32::MAX {
            self.last_prepared?
        } else {
            id
        };
        self.stmts.contains_key(&id).then_some(id)
    }

    /// The statement a `COM_STMT_*` command names, with what Warden knows
    /// of it and the command carrying the server's own id.
    fn named_statement(&self, payload: &[u8]) -> Option<Named> {
        let id = self.known_statement(payload)?;
        let st = self.stmts.get(&id)?;
        let mut payload = payload.to_vec();
        payload[1..5].copy_from_slice(&id.to_le_bytes());
        Some(Named {
            id,
            verdict: st.verdict.clone(),
            statement: st.statement.clone(),
            columns: st.columns.clone(),
            payload,
        })
    }

    /// Refuses a `COM_STMT_*` command for a statement Warden did not
    /// prepare (audited: it could only be an attempt to run something
    /// undecided).
    async fn unknown_statement(&mut self, command: &str) -> Result<(), SessionError> {
        self.refused_command(command, "names a statement Warden did not prepare")
            .await;
        self.client_err(
            1,
            code::UNKNOWN_STMT_HANDLER,
            "HY000",
            &format!("Unknown prepared statement handler given to {command}"),
        )
        .await
    }

    /// `COM_STMT_EXECUTE` of a statement Warden prepared (and so decided):
    /// audited per execution, its binary rows masked. A statement of an
    /// `approve` rule is held at every execution, the approver shown its
    /// parameters (masked); parameters that cannot be read refuse it.
    async fn execute(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(Named {
            id,
            verdict,
            statement,
            payload,
            ..
        }) = self.named_statement(payload)
        else {
            return self.unknown_statement("COM_STMT_EXECUTE").await;
        };
        let shown = self.bound_parameters(id, &payload);
        self.seq += 1;
        self.listed = self.stmts.get(&id).and_then(|p| p.listed.clone());
        let (verdict, statement) = if verdict.action == Action::Approve {
            match shown {
                Ok(shown) => {
                    let text = if shown.text.is_empty() {
                        statement
                    } else {
                        format!("{statement}\n-- parameters: {}", shown.text)
                    };
                    let exact = !matches!(
                        verdict.class,
                        crate::policy::model::StatementClass::Read
                            | crate::policy::model::StatementClass::Write
                    );
                    let key = if exact {
                        format!("{text}\0parameters\0{}", shown.digest)
                    } else {
                        self.stmts
                            .get(&id)
                            .map(|p| p.statement.clone())
                            .unwrap_or_default()
                    };
                    let fingerprint =
                        crate::approval::fingerprint::exact_fingerprint("mysql", &key);
                    (self.approval(verdict, &text, fingerprint).await, text)
                }
                Err(e) => {
                    let v = Verdict {
                        action: Action::Block,
                        rule: None,
                        reason: format!("the parameters of an execution to approve: {e}"),
                        ..verdict
                    };
                    (v, statement)
                }
            }
        } else {
            (verdict, statement)
        };
        if let Some(st) = self.stmts.get_mut(&id) {
            // The server forgets long data at an execution.
            st.long_data.clear();
        }
        let Some(verdict) = self.gate(verdict, &statement, "execute", false).await? else {
            return Ok(());
        };
        let started = Instant::now();
        self.upstream.send(0, &payload).await?;
        let mut relayed = self.relay_result(&verdict, true, &[]).await?;
        if let (Some(cols), Some(st)) = (relayed.columns.take(), self.stmts.get_mut(&id)) {
            st.columns = Some(cols);
        }
        self.record_result(&verdict, &statement, "execute", &relayed, started);
        Ok(())
    }

    /// The parameters of an execution of statement `id` as an approver sees
    /// them (remembering the types it binds).
    fn bound_parameters(
        &mut self,
        id: u32,
        payload: &[u8],
    ) -> Result<super::postgres::params::Shown, message::MessageError> {
        let Some(st) = self.stmts.get_mut(&id) else {
            return Err(message::MessageError::Empty);
        };
        let n = usize::from(st.params);
        let long: Vec<bool> = (0..n)
            .map(|i| st.long_data.get(i).is_some_and(Option::is_some))
            .collect();
        let (params, types) = binary::execute_params(payload, n, &st.types, &long)?;
        st.types = types;
        let values: Vec<Option<Vec<u8>>> = params
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                binary::Param::Null => None,
                binary::Param::Value(v) => Some(v),
                binary::Param::LongData => {
                    let (kept, len) = st.long_data[i].clone().unwrap_or_default();
                    let mut v = kept;
                    if len > v.len() {
                        v.extend_from_slice(
                            format!(" (… {} more bytes sent as long data)", len - v.len())
                                .as_bytes(),
                        );
                    }
                    Some(v)
                }
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        Ok(super::postgres::params::show(
            &refs,
            &[],
            &[],
            &self.text_masker,
        ))
    }

    /// `COM_STMT_FETCH`: more binary rows of an execution's cursor, masked
    /// as the execution's were.
    async fn fetch(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(Named {
            verdict,
            statement,
            columns,
            payload,
            ..
        }) = self.named_statement(payload)
        else {
            return self.unknown_statement("COM_STMT_FETCH").await;
        };
        let Some(cols) = columns else {
            // No result set to fetch from: the server says so.
            return self.relay_simple(&payload).await;
        };
        let started = Instant::now();
        self.upstream.send(0, &payload).await?;
        let mut out = BytesMut::with_capacity(FLUSH_AT);
        let mut seq: u8 = 1;
        let mut relayed = Relayed::default();
        self.relay_row_stream(&cols, &mut out, &mut seq, &mut relayed)
            .await?;
        self.flush(&mut out).await?;
        self.record_result(&verdict, &statement, "fetch", &relayed, started);
        Ok(())
    }

    /// `COM_STMT_CLOSE`, `COM_STMT_RESET` and `COM_STMT_SEND_LONG_DATA` of
    /// a statement Warden prepared (the id rewritten when it was MariaDB's
    /// "last statement").
    async fn statement_command(&mut self, command: u8, payload: &[u8]) -> Result<(), SessionError> {
        let Some(id) = self.known_statement(payload) else {
            return match command {
                // No answer is expected to these; a statement Warden does
                // not know is not forwarded.
                com::STMT_CLOSE | com::STMT_SEND_LONG_DATA => Ok(()),
                _ => self.unknown_statement("COM_STMT_RESET").await,
            };
        };
        let mut payload = payload.to_vec();
        payload[1..5].copy_from_slice(&id.to_le_bytes());
        match command {
            com::STMT_CLOSE => {
                self.stmts.remove(&id);
                if self.last_prepared == Some(id) {
                    self.last_prepared = None;
                }
                self.upstream.send(0, &payload).await
            }
            com::STMT_SEND_LONG_DATA => {
                self.keep_long_data(id, &payload);
                self.upstream.send(0, &payload).await
            }
            com::STMT_RESET => {
                if let Some(st) = self.stmts.get_mut(&id) {
                    st.long_data.clear();
                }
                self.relay_simple(&payload).await
            }
            _ => self.relay_simple(&payload).await,
        }
    }

    /// Keeps (the start of) a piece of long data of a statement Warden
    /// prepared: an approver of its execution is shown it.
    fn keep_long_data(&mut self, id: u32, payload: &[u8]) {
        let Some(st) = self.stmts.get_mut(&id) else {
            return;
        };
        let Some(param) = payload
            .get(5..7)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .filter(|&p| p < usize::from(st.params))
        else {
            return;
        };
        let data = &payload[7..];
        if st.long_data.len() <= param {
            st.long_data.resize(param + 1, None);
        }
        let (kept, len) = st.long_data[param].get_or_insert_with(Default::default);
        let room = LONG_DATA_SHOWN.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..room.min(data.len())]);
        *len += data.len();
    }

    /// Audits a command Warden refused outside the statement policy.
    async fn refused_command(&mut self, command: &str, why: &str) {
        self.seq += 1;
        self.listed = None;
        let v = Verdict {
            action: Action::Block,
            rule: None,
            reason: format!("{command} {why}"),
            class: crate::policy::model::StatementClass::Unknown,
            tables: Vec::new(),
            functions: Vec::new(),
        };
        let ev = self.event(&v, command, StatementPhase::Request, "command");
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "could not audit a refused command");
        }
    }

    /// Asks the approval service about a statement of an `approve` rule and
    /// waits for the decision (what the client sends meanwhile is buffered,
    /// up to twice its largest packet; a client that leaves withdraws the
    /// request). Other verdicts pass unchanged; without an approval service
    /// the statement stays refused.
    async fn approval(
        &mut self,
        verdict: Verdict,
        statement: &str,
        fingerprint: String,
    ) -> Verdict {
        use super::session::{Asked, ask_learnable, wait};
        use crate::approval::{RequestSpec, Resolution};
        if verdict.action != Action::Approve {
            return verdict;
        }
        let Some(approvals) = self.approvals.clone() else {
            return verdict;
        };
        let spec = RequestSpec {
            account: self.caller.account.clone(),
            target: self.target.clone(),
            protocol: "mysql".into(),
            session: Some(self.caller.session),
            process: self.caller.process.clone(),
            identity: self.caller.identity.clone(),
            statement: statement.to_owned(),
            fingerprint,
            policy: Some(self.policy.name().to_owned()),
            rule: verdict.rule.as_ref().map(|r| r.label.clone()),
            risk: verdict.class.as_str().to_owned(),
            account_uids: self.account_uids.clone(),
        };
        let decided = |allow: bool, why: String| Verdict {
            action: if allow {
                Action::Allow
            } else {
                Action::Approve
            },
            reason: why,
            ..verdict.clone()
        };
        // Held by the grant's allow-list: what `approve --learn` adds to it.
        let learn = self
            .listed
            .as_ref()
            .filter(|(facts, _)| facts.verdict == Some(ListVerdict::NotListed))
            .and_then(|(_, fp)| {
                crate::approval::learn::LearnCandidate::of(
                    self.allowlist.as_ref(),
                    fp.as_ref(),
                    "mysql",
                    statement,
                )
            });
        let hold = match ask_learnable(&approvals, spec, learn).await {
            Asked::Granted(why) => return decided(true, why),
            Asked::Unrecorded(why) => return decided(false, why),
            Asked::Held(h) => h,
        };
        info!(approval.id = %hold.id, "mysql statement held for approval");
        let cap = self.client.max.saturating_mul(2);
        let waited = wait(&approvals, hold, &mut self.client, cap, None).await;
        match waited.resolution {
            Resolution::Approved { .. } => decided(true, waited.why),
            _ => decided(false, waited.why),
        }
    }

    /// Relays the server's answer to a forwarded query or execution (every
    /// result set of it), masking text or binary rows.
    async fn relay_result(
        &mut self,
        verdict: &Verdict,
        binary: bool,
        per_statement: &[Vec<String>],
    ) -> Result<Relayed, SessionError> {
        let mut out = BytesMut::with_capacity(FLUSH_AT);
        let mut seq: u8 = 1;
        let mut r = Relayed::default();
        let mut result = 0usize;
        loop {
            let p = self.upstream.read().await?;
            let tables = per_statement.get(result).unwrap_or(&verdict.tables);
            // A file request is part of its statement's answer.
            if p.payload.first() != Some(&0xfb) {
                result += 1;
            }
            match message::response(&p.payload)? {
                Response::Ok(ok) => {
                    r.rows += ok.affected;
                    self.put(&mut out, &mut seq, &p.payload);
                    if ok.status & message::MORE_RESULTS == 0 {
                        break;
                    }
                }
                Response::Err(e) => {
                    let masked = self.masked_err(&e);
                    self.put(&mut out, &mut seq, &masked);
                    r.error = Some(e);
                    break;
                }
                Response::LocalInfile => {
                    // Never pass the server's file request to the workload:
                    // answer with an empty file; the server then reports.
                    warn!("mysql server asked for a local file; answered with an empty one");
                    self.upstream.send(p.last_seq.wrapping_add(1), &[]).await?;
                }
                Response::ResultSet(n) => {
                    if n == 0 || n > MAX_COLUMNS {
                        return Err(SessionError::Upstream("a result set of too many columns"));
                    }
                    self.put(&mut out, &mut seq, &p.payload);
                    let more = self
                        .relay_rows(n as usize, tables, binary, &mut out, &mut seq, &mut r)
                        .await?;
                    if !more {
                        break;
                    }
                }
            }
            if out.len() >= FLUSH_AT {
                self.flush(&mut out).await?;
            }
        }
        self.flush(&mut out).await?;
        Ok(r)
    }

    /// A result column's definition: how its values are masked, and the
    /// definition the client is shown (a masked non-string column of
    /// binary rows is shown as a string: its masked value is text).
    fn result_column(
        &self,
        payload: &[u8],
        tables: &[String],
        binary: bool,
    ) -> Result<(ResultColumn, Vec<u8>), SessionError> {
        let col: Column = ParseBuf(payload)
            .parse(())
            .map_err(|_| SessionError::Upstream("a malformed column definition"))?;
        let strategy = self.column_strategy(&col, tables);
        let (ty, flags) = (col.column_type(), col.flags());
        let as_string = binary && strategy.is_some() && !binary::is_string_type(ty);
        let shown = if as_string {
            binary::as_string_column(&col)
        } else {
            payload.to_vec()
        };
        Ok((
            ResultColumn {
                strategy,
                ty,
                flags,
                as_string,
            },
            shown,
        ))
    }

    /// Column definitions and rows of one result set; `true` when another
    /// result follows.
    async fn relay_rows(
        &mut self,
        n: usize,
        tables: &[String],
        binary: bool,
        out: &mut BytesMut,
        seq: &mut u8,
        r: &mut Relayed,
    ) -> Result<bool, SessionError> {
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.upstream.read().await?;
            let (c, shown) = self.result_column(&p.payload, tables, binary)?;
            columns.push(c);
            self.put(out, seq, &shown);
        }
        let cols = Arc::new(ResultColumns { columns, binary });
        if binary {
            r.columns = Some(Arc::clone(&cols));
        }
        if !self.deprecate_eof {
            let p = self.upstream.read().await?;
            if !message::is_eof(&p.payload, false) {
                return Err(SessionError::Upstream("no EOF after column definitions"));
            }
            self.put(out, seq, &p.payload);
            // An execution that opened a cursor: rows come with FETCH.
            if message::eof_status(&p.payload, false) & binary::CURSOR_EXISTS != 0 {
                return Ok(false);
            }
        }
        let status = self.relay_row_stream(&cols, out, seq, r).await?;
        Ok(status.is_some_and(|s| s & message::MORE_RESULTS != 0))
    }

    /// Rows up to the EOF (its status) or an ERR (`None`), masked.
    async fn relay_row_stream(
        &mut self,
        cols: &ResultColumns,
        out: &mut BytesMut,
        seq: &mut u8,
        r: &mut Relayed,
    ) -> Result<Option<u16>, SessionError> {
        let masking = self.masker.is_some();
        loop {
            let p = self.upstream.read().await?;
            if p.payload.first() == Some(&0xff) {
                let e = message::parse_err(&p.payload)?;
                let masked = self.masked_err(&e);
                self.put(out, seq, &masked);
                r.error = Some(e);
                return Ok(None);
            }
            if message::is_eof(&p.payload, self.deprecate_eof) {
                self.put(out, seq, &p.payload);
                return Ok(Some(message::eof_status(&p.payload, self.deprecate_eof)));
            }
            r.rows += 1;
            if masking {
                let masked = if cols.binary {
                    self.mask_binary_row(&p.payload, &cols.columns, r)?
                } else {
                    self.mask_row(&p.payload, &cols.columns, r)?
                };
                self.put(out, seq, &masked);
            } else {
                self.put(out, seq, &p.payload);
            }
            if out.len() >= FLUSH_AT {
                self.flush(out).await?;
            }
        }
    }

    /// The column rule of a result column (by its table and column in the
    /// database); a computed column (no table) of a statement that reads a
    /// table with masked columns gets that table's strictest rule, so an
    /// expression cannot carry a masked value out unmasked.
    fn column_strategy(&self, col: &Column, tables: &[String]) -> Option<Strategy> {
        let m = self.masker.as_ref()?;
        if !m.has_columns() {
            return None;
        }
        let org_table = String::from_utf8_lossy(col.org_table_ref());
        if !org_table.is_empty() {
            let schema = String::from_utf8_lossy(col.schema_ref());
            // A view's column: what it reads is not known here (a computed
            // column of a view comes without its schema).
            let in_schema = if schema.is_empty() {
                &self.database
            } else {
                schema.as_ref()
            };
            if self
                .views
                .contains(&format!("{in_schema}.{org_table}").to_lowercase())
            {
                return self.strictest;
            }
            let name = String::from_utf8_lossy(col.org_name_ref());
            return m.column_strategy(&schema, &org_table, &name).or_else(|| {
                // Computed from masked values in ways Warden does not read
                // (`reverse(card)` kept to its last four shows the first
                // four): nothing of it is shown.
                self.masked_generated(&org_table, &name)
                    .then_some(match self.strictest {
                        Some(Strategy::Null) => Strategy::Null,
                        _ => Strategy::Redact,
                    })
            });
        }
        if self.reads_view(tables) {
            return self.strictest;
        }
        tables
            .iter()
            .filter_map(|t| {
                let t = t.rsplit('.').next().unwrap_or(t);
                m.column_rule_loose(None, t, None).map(|(_, s)| s)
            })
            .max_by_key(|s| crate::masking::column::strictness(*s))
    }

    fn mask_row(
        &self,
        payload: &[u8],
        columns: &[ResultColumn],
        r: &mut Relayed,
    ) -> Result<Vec<u8>, SessionError> {
        let Some(m) = self.masker.as_ref() else {
            return Ok(payload.to_vec());
        };
        let values = message::text_row(payload, columns.len())?;
        let mut owned: Vec<Option<Vec<u8>>> = Vec::with_capacity(values.len());
        for (v, c) in values.iter().zip(columns) {
            let s = &c.strategy;
            let Some(v) = v else {
                owned.push(None);
                continue;
            };
            let masked = match s {
                Some(s) => {
                    r.masked += 1;
                    m.apply(*s, v)
                }
                None => match m.mask_value(v) {
                    Some((masked, n)) => {
                        r.masked += n as u64;
                        masked
                    }
                    None => Masked::Value(v.to_vec()),
                },
            };
            owned.push(match masked {
                Masked::Null => None,
                Masked::Value(b) => Some(b),
            });
        }
        Ok(message::encode_text_row(owned.iter().map(|v| v.as_deref())))
    }

    /// A binary row with its values masked: a column rule's value (as
    /// text, then length-encoded: string columns, and non-string columns
    /// shown as strings); pattern detectors over the text of every value —
    /// a hit in a string column is replaced, a hit in a number or a date
    /// (which cannot carry text) becomes NULL.
    fn mask_binary_row(
        &self,
        payload: &[u8],
        columns: &[ResultColumn],
        r: &mut Relayed,
    ) -> Result<Vec<u8>, SessionError> {
        let Some(m) = self.masker.as_ref() else {
            return Ok(payload.to_vec());
        };
        let types: Vec<_> = columns.iter().map(|c| (c.ty, c.flags)).collect();
        let cells = binary::binary_row(payload, &types)?;
        let mut owned: Vec<Option<Vec<u8>>> = Vec::with_capacity(cells.len());
        for (cell, c) in cells.iter().zip(columns) {
            let Some(v) = &cell.value else {
                owned.push(None);
                continue;
            };
            let text = binary::text_of(v);
            let string = c.as_string || binary::is_string_type(c.ty);
            let masked = match c.strategy {
                Some(s) => {
                    r.masked += 1;
                    match m.apply(s, &text) {
                        Masked::Null => None,
                        Masked::Value(b) => Some(binary::lenenc_bytes(&b)),
                    }
                }
                None => match m.mask_value(&text) {
                    Some((masked, n)) => {
                        r.masked += n as u64;
                        match masked {
                            Masked::Value(b) if string => Some(binary::lenenc_bytes(&b)),
                            _ => None,
                        }
                    }
                    None => Some(cell.raw.to_vec()),
                },
            };
            owned.push(masked);
        }
        let values: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
        Ok(binary::encode_binary_row(&values))
    }

    fn put(&mut self, out: &mut BytesMut, seq: &mut u8, payload: &[u8]) {
        packet::encode(seq, payload, out);
    }

    async fn flush(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        if !out.is_empty() {
            self.client.tcp.write_all(out).await?;
            self.bytes_down += out.len() as u64;
            out.clear();
        }
        Ok(())
    }
}

/// The audit decision of a verdict (a refusal by no rule is `rejected`).
fn decision_of(v: &Verdict) -> StatementDecision {
    if v.rule.is_none() && v.action == Action::Block {
        StatementDecision::Rejected
    } else {
        super::session::decision_of(v.action)
    }
}

#[cfg(test)]
mod tests {
    use super::Connections;

    #[test]
    fn a_kill_may_name_only_the_same_account_s_sessions_on_the_same_target() {
        let c = Connections::default();
        {
            let _a = c.register("shop", 5, "app");
            assert!(c.owned_by("shop", 5, "app"));
            assert!(!c.owned_by("shop", 5, "other"), "another account");
            assert!(!c.owned_by("billing", 5, "app"), "the same id elsewhere");
            assert!(!c.owned_by("shop", 5 + (1 << 32), "app"), "past u32");
        }
        assert!(!c.owned_by("shop", 5, "app"), "gone with its session");
    }
}
