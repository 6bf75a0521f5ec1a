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
//!    ERR 1142, SQLSTATE 42000, naming the rule) and its text result rows
//!    are masked; `COM_PING`, `COM_QUIT` and `COM_INIT_DB` (the grant's
//!    database only) are relayed; every other command is refused (1047).
//!
//! A server's request for a local file (`LOAD DATA LOCAL INFILE`) is never
//! passed to the workload: Warden answers it with an empty file. Malformed
//! or oversized packets end in an ERR packet and a close, never a panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::audit::AuditHandle;
use crate::audit::event::{StatementDecision, StatementEvent, StatementPhase};
use crate::audit::reason::RefuseReason;
use crate::config::{Config, Grant, Protocol, Target};
use crate::masking::{Masked, Masker, Strategy};
use crate::policy::{Action, Policy, SessionContext, Verdict};
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
/// Write to the client once this much is buffered.
const FLUSH_AT: usize = 64 << 10;

/// One `[[grant]]` on a MySQL target, ready to serve.
pub struct MysqlGrant {
    pub grant: Grant,
    pub policy: Arc<Policy>,
    pub masker: Option<Arc<Masker>>,
}

/// Everything MySQL sessions share, built once at start.
pub struct MysqlRuntime {
    grants: GrantTable<MysqlGrant>,
    builtin: Arc<Masker>,
    approvals: ApprovalContext,
}

impl MysqlRuntime {
    /// The runtime of `config`'s MySQL targets, its maskings compiled
    /// already.
    pub fn build_with(config: &Config, maskers: &Maskers) -> Result<Self, SetupError> {
        let policies = super::session::compile_policies(config)?;
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
                // Validation guarantees the policy exists for protocol grants.
                Ok(g.policy
                    .as_ref()
                    .and_then(|p| policies.get(p))
                    .map(|policy| MysqlGrant {
                        grant: g.clone(),
                        policy: Arc::clone(policy),
                        masker: maskers.of(g),
                    }))
            },
        )?;
        Ok(Self {
            grants,
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
}

/// One side of the session: a socket and what was read but not used.
struct Peer {
    tcp: TcpStream,
    buf: BytesMut,
    max: usize,
    bytes_read: u64,
}

impl Peer {
    fn new(tcp: TcpStream, max: usize) -> Self {
        Self {
            tcp,
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
    let mut upstream = Peer::new(up, MAX_SERVER_PACKET);
    let session_caps = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connect(&mut client, &mut upstream, user, database, &password),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            info!(error = %e, "mysql connection phase failed");
            let (reason, msg) = match &e {
                SessionError::Login(_) => (
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
        account_uids: Vec::new(),
        deprecate_eof: session_caps & caps::DEPRECATE_EOF != 0,
        seq: 0,
        bytes_down: 0,
    };
    s.account_uids = rt.approvals.uids_of(&s.caller.account);
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

/// The connection phase (see the module documentation); returns the
/// session's capabilities.
async fn connect(
    client: &mut Peer,
    upstream: &mut Peer,
    user: &str,
    database: &str,
    password: &[u8],
) -> Result<u32, SessionError> {
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
    login(
        upstream,
        &server,
        session_caps,
        user,
        database,
        password,
        greeting.seq,
    )
    .await?;
    // The classifier reads statements as MySQL does by default; a server
    // whose sql_mode changes how quotes and backslashes are read is
    // refused (fail closed), as `SET sql_mode` is.
    let mode = sql_mode(upstream, session_caps & caps::DEPRECATE_EOF != 0).await?;
    if let Some(bad) = unsafe_sql_mode(&mode) {
        return Err(SessionError::UnsafeServer(format!(
            "the server's sql_mode has {bad}, which changes how Warden would read statements"
        )));
    }
    client
        .send(resp.seq.wrapping_add(1), &message::ok_packet(0, 0, 0x0002))
        .await?;
    Ok(session_caps)
}

/// The session's `sql_mode`, asked of the upstream right after login.
async fn sql_mode(upstream: &mut Peer, deprecate_eof: bool) -> Result<String, SessionError> {
    let bad = SessionError::Upstream("an unexpected answer to SELECT @@SESSION.sql_mode");
    upstream.send(0, b"\x03SELECT @@SESSION.sql_mode").await?;
    if message::response(&upstream.read().await?.payload)? != Response::ResultSet(1) {
        return Err(bad);
    }
    upstream.read().await?; // the column definition
    if !deprecate_eof {
        upstream.read().await?;
    }
    let row = upstream.read().await?;
    let mode = match message::text_row(&row.payload, 1)?.first() {
        Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
        _ => String::new(),
    };
    if !message::is_eof(&upstream.read().await?.payload, deprecate_eof) {
        return Err(bad);
    }
    Ok(mode)
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
                // Full authentication: ask for the server's RSA key.
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
    /// The account's enrolled uids (never approvers of its requests).
    account_uids: Vec<u32>,
    deprecate_eof: bool,
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
}

impl Session {
    async fn run(&mut self) -> Result<(), (RefuseReason, SessionError)> {
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
                        let msg = format!(
                            "Access denied to database '{db}' (Warden: the grant's database is '{}')",
                            self.database
                        );
                        self.client_err(1, code::DB_ACCESS_DENIED, "42000", &msg)
                            .await
                    }
                }
                com::QUERY => {
                    // The session's character set is utf8mb4 (Warden logs in
                    // with it): text that is not UTF-8 is not read at all.
                    let utf8 = std::str::from_utf8(&p.payload[1..]).is_ok();
                    let text = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                    self.query(&text, utf8, &p.payload).await
                }
                other => {
                    debug!(command = other, "mysql command refused");
                    let msg = format!("command 0x{other:02x} is not supported by Warden");
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

    fn decide(&self, text: &str, utf8: bool) -> Verdict {
        if !utf8 {
            return Verdict::unparsable(&crate::policy::AnalyzeError::Unsupported {
                reason: "the statement text is not valid UTF-8".into(),
            });
        }
        let verdict = match crate::policy::mysql::analyze(text, &self.database) {
            Ok(a) => self.policy.decide(&a, &self.ctx),
            Err(e) => return Verdict::unparsable(&e),
        };
        // Masked columns only as bare output columns (fail closed: a name
        // masked in any table the statement reads counts).
        if let Some(m) = self.masker.as_ref().filter(|m| m.has_columns())
            && verdict.is_allowed()
        {
            let masked = |column: &str| {
                verdict.tables.iter().any(|t| {
                    let t = t.rsplit('.').next().unwrap_or(t);
                    m.column_rule_loose(None, t, Some(column)).is_some()
                })
            };
            if let Some(why) = crate::policy::mysql::masked_column_misuse(text, masked) {
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

    fn event(&self, v: &Verdict, statement: &str, phase: StatementPhase) -> StatementEvent {
        let (process, identity) = super::session::caller_facts(
            phase,
            &self.caller.process,
            self.caller.identity.as_ref(),
        );
        let decision = if v.rule.is_none() && v.action == Action::Block {
            StatementDecision::Rejected
        } else {
            super::session::decision_of(v.action)
        };
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
            via: "simple".into(),
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
            // MySQL grants have no allow-list yet (issue 19 covers
            // PostgreSQL and HTTP).
            allowlist: None,
        }
    }

    async fn query(&mut self, text: &str, utf8: bool, payload: &[u8]) -> Result<(), SessionError> {
        self.seq += 1;
        let verdict = self.decide(text, utf8);
        let statement = self.text_masker.mask_str(text).0.into_owned();
        // A statement of an `approve` rule is held (nothing forwarded) until
        // decided; its request event records how it ended.
        let verdict = self.approval(verdict, &statement).await;
        let request = self.event(&verdict, &statement, StatementPhase::Request);
        // Audit before effect: an unrecorded statement is not forwarded.
        let recorded = self.audit.record_statement(request).await;
        if let Err(e) = &recorded {
            tracing::error!(error = %e, "could not audit a statement; refused");
        }
        if !verdict.is_allowed() || recorded.is_err() {
            info!(statement.seq = self.seq, rule = ?verdict.rule.as_ref().map(|r| &r.label), "mysql statement refused");
            let why = match (verdict.action, &verdict.rule) {
                (Action::Approve, _) => format!(
                    "statement requires approval and was not approved: {}",
                    verdict.reason
                ),
                (_, Some(r)) => {
                    format!("statement refused by rule {}: {}", r.label, verdict.reason)
                }
                (_, None) => format!("statement refused: {}", verdict.reason),
            };
            let why = if recorded.is_err() {
                "statement refused: the audit trail is unavailable".to_owned()
            } else {
                why
            };
            return self
                .client_err(1, code::TABLE_ACCESS_DENIED, "42000", &why)
                .await;
        }
        let started = Instant::now();
        self.upstream.send(0, payload).await?;
        let relayed = self.relay_result(&verdict).await?;
        let mut ev = self.event(&verdict, &statement, StatementPhase::Result);
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
        self.audit.record_statement_detached(ev);
        Ok(())
    }

    /// Asks the approval service about a statement of an `approve` rule and
    /// waits for the decision (what the client sends meanwhile is buffered,
    /// up to twice its largest packet; a client that leaves withdraws the
    /// request). Other verdicts pass unchanged; without an approval service
    /// the statement stays refused.
    async fn approval(&mut self, verdict: Verdict, statement: &str) -> Verdict {
        use super::session::{Asked, ask, wait};
        use crate::approval::{RequestSpec, Resolution, fingerprint};
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
            fingerprint: fingerprint::exact_fingerprint("mysql", statement),
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
        let hold = match ask(&approvals, spec).await {
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

    /// Relays the server's answer to a forwarded query (every result set of
    /// it), masking text rows.
    async fn relay_result(&mut self, verdict: &Verdict) -> Result<Relayed, SessionError> {
        let mut out = BytesMut::with_capacity(FLUSH_AT);
        let mut seq: u8 = 1;
        let mut r = Relayed::default();
        loop {
            let p = self.upstream.read().await?;
            match message::response(&p.payload)? {
                Response::Ok(ok) => {
                    r.rows += ok.affected;
                    self.put(&mut out, &mut seq, &p.payload);
                    if ok.status & message::MORE_RESULTS == 0 {
                        break;
                    }
                }
                Response::Err(e) => {
                    let msg = self.text_masker.mask_str(&e.message).0.into_owned();
                    let masked = message::err_packet(e.code, &e.sqlstate, &msg);
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
                        .relay_rows(n as usize, verdict, &mut out, &mut seq, &mut r)
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

    /// Column definitions and rows of one result set; `true` when another
    /// result follows.
    async fn relay_rows(
        &mut self,
        n: usize,
        verdict: &Verdict,
        out: &mut BytesMut,
        seq: &mut u8,
        r: &mut Relayed,
    ) -> Result<bool, SessionError> {
        let mut strategies: Vec<Option<Strategy>> = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.upstream.read().await?;
            let col: Column = ParseBuf(&p.payload)
                .parse(())
                .map_err(|_| SessionError::Upstream("a malformed column definition"))?;
            strategies.push(self.column_strategy(&col, verdict));
            self.put(out, seq, &p.payload);
        }
        if !self.deprecate_eof {
            let p = self.upstream.read().await?;
            if !message::is_eof(&p.payload, false) {
                return Err(SessionError::Upstream("no EOF after column definitions"));
            }
            self.put(out, seq, &p.payload);
        }
        let masking = self.masker.is_some();
        loop {
            let p = self.upstream.read().await?;
            if p.payload.first() == Some(&0xff) {
                let e = message::parse_err(&p.payload)?;
                let msg = self.text_masker.mask_str(&e.message).0.into_owned();
                self.put(out, seq, &message::err_packet(e.code, &e.sqlstate, &msg));
                r.error = Some(e);
                return Ok(false);
            }
            if message::is_eof(&p.payload, self.deprecate_eof) {
                self.put(out, seq, &p.payload);
                let status = message::eof_status(&p.payload, self.deprecate_eof);
                return Ok(status & message::MORE_RESULTS != 0);
            }
            r.rows += 1;
            if masking {
                let masked = self.mask_row(&p.payload, &strategies, r)?;
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
    fn column_strategy(&self, col: &Column, verdict: &Verdict) -> Option<Strategy> {
        let m = self.masker.as_ref()?;
        if !m.has_columns() {
            return None;
        }
        let org_table = String::from_utf8_lossy(col.org_table_ref());
        if !org_table.is_empty() {
            let schema = String::from_utf8_lossy(col.schema_ref());
            let name = String::from_utf8_lossy(col.org_name_ref());
            return m.column_strategy(&schema, &org_table, &name);
        }
        verdict
            .tables
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
        strategies: &[Option<Strategy>],
        r: &mut Relayed,
    ) -> Result<Vec<u8>, SessionError> {
        let Some(m) = self.masker.as_ref() else {
            return Ok(payload.to_vec());
        };
        let values = message::text_row(payload, strategies.len())?;
        let mut owned: Vec<Option<Vec<u8>>> = Vec::with_capacity(values.len());
        for (v, s) in values.iter().zip(strategies) {
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
