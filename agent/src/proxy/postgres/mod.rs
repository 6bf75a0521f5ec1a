//! The PostgreSQL proxy: a target with `protocol = "postgres"` is served
//! here instead of being relayed byte for byte.
//!
//! What it owns:
//! - the client side of startup ([`serve`]): SSLRequest answered `N` (or TLS
//!   terminated with the target's `client_tls` certificate), GSSENCRequest
//!   answered `N`, CancelRequest mapped to the upstream's key (a client can
//!   only cancel a query of its own account), StartupMessage parameters
//!   checked (database within the grant; `replication`, role and
//!   tokenisation settings refused); the client's password is never asked
//!   for;
//! - the upstream session ([`upstream`]): the grant's role, database and
//!   password, TLS per `tls.mode`;
//! - the per-grant runtime built at start ([`PgRuntime`]): compiled policy
//!   and masking, TLS configurations, the catalog map of masked columns per
//!   database (cached), the cancel-key registry;
//! - the query loop ([`relay`]) and statement decisions ([`decide`]).

pub mod catalog;
pub mod decide;
pub(crate) mod params;
pub mod relay;
pub mod stream;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::audit::AuditHandle;
use crate::audit::event::{
    ProcessInfo, SessionId, StatementDecision, StatementEvent, StatementPhase, TokenIdentity,
};
use crate::config::{Config, Grant, Protocol, Target};
use crate::masking::Masker;
use crate::policy::Policy;
use crate::protocol::postgres::backend;
use crate::protocol::postgres::frame::decode_frame;
use crate::protocol::postgres::startup::{
    CancelRequest, StartupMessage, StartupPacket, decode_startup,
};

use super::session::{ApprovalContext, GrantTable, Maskers, builtin_masker};
use crate::audit::reason::RefuseReason;
use catalog::{CatalogSlot, MaskedCatalog};
use decide::Decided;
use stream::Stream;

/// Longest a client may take to finish startup.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest startup packet accepted (PostgreSQL's own limit is 10,000).
const MAX_STARTUP: usize = 10_000;

/// Why the PostgreSQL runtime could not be built.
pub type PgSetupError = super::session::SetupError;

/// One `[[grant]]` on a PostgreSQL target, ready to serve.
pub struct PgGrant {
    pub grant: Grant,
    pub policy: Arc<Policy>,
    pub masker: Option<Arc<Masker>>,
    /// The grant's allow-list (issue 19), `None` without a `mode`.
    pub allowlist: Option<Arc<crate::policy::allowlist::GrantAllowlist>>,
}

/// TLS of one PostgreSQL target.
struct PgTarget {
    upstream_tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    client_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Cancel keys handed to clients: (process id, secret key) → where it leads.
type CancelKeys = Mutex<HashMap<(i32, Vec<u8>), CancelEntry>>;

/// Where a client's cancel key leads.
struct CancelEntry {
    account: String,
    target: String,
    /// The server the session is connected to (the target's address may
    /// change in a reload while the session lives on).
    upstream: SocketAddr,
    process_id: i32,
    secret_key: Vec<u8>,
    /// The session's held statement, if any: a cancel withdraws it.
    hold: Arc<HoldSlot>,
}

pub use super::session::HoldSlot;

type CatalogKey = (String, String, String);

/// Everything PostgreSQL sessions share, built once at start.
pub struct PgRuntime {
    grants: GrantTable<PgGrant>,
    targets: HashMap<String, PgTarget>,
    /// Statement text in the audit trail is masked with every built-in
    /// detector when the grant has no masking of its own.
    builtin: Arc<Masker>,
    /// Shared by every runtime a reload builds from this one, so a client
    /// can cancel its query whichever configuration its CancelRequest
    /// meets.
    cancels: Arc<CancelKeys>,
    /// The last snapshot per target, database and masking: reused by a
    /// new session while the server's digest of it is unchanged.
    catalog: Mutex<HashMap<CatalogKey, Arc<MaskedCatalog>>>,
    /// Holds statements of `approve` rules (without a service they are
    /// refused), and who may never approve them.
    approvals: ApprovalContext,
}

impl PgRuntime {
    pub fn build(config: &Config) -> Result<Self, PgSetupError> {
        Self::build_with(config, &Maskers::build(config)?)
    }

    /// [`build`](Self::build) with the configuration's maskings compiled
    /// already.
    pub fn build_with(config: &Config, maskers: &Maskers) -> Result<Self, PgSetupError> {
        let mut targets = HashMap::new();
        for t in config
            .targets
            .iter()
            .filter(|t| t.protocol == Protocol::Postgres)
        {
            let tls_err = |source| PgSetupError::Tls {
                target: t.name.clone(),
                source,
            };
            let upstream_tls = match &t.tls {
                Some(tls) => stream::client_config(tls, t.address).map_err(tls_err)?,
                None => None,
            };
            let client_tls = match &t.client_tls {
                Some(c) => Some(stream::server_config(c).map_err(tls_err)?),
                None => None,
            };
            targets.insert(
                t.name.clone(),
                PgTarget {
                    upstream_tls,
                    client_tls,
                },
            );
        }
        let grants = GrantTable::build(
            config,
            |t| targets.contains_key(t),
            |g| {
                let allowlist = super::session::grant_allowlist(config, g)?;
                // Validation compiled the policy (it exists for protocol grants).
                Ok(g.policy
                    .as_ref()
                    .and_then(|p| config.compiled.sql_policy(p))
                    .map(|policy| PgGrant {
                        grant: g.clone(),
                        policy: Arc::clone(policy),
                        masker: maskers.of(g),
                        allowlist,
                    }))
            },
        )?;
        Ok(Self {
            grants,
            targets,
            builtin: builtin_masker(),
            cancels: Arc::default(),
            catalog: Mutex::new(HashMap::new()),
            approvals: ApprovalContext::new(config),
        })
    }

    /// Statements of `approve` rules are held for a decision.
    pub fn with_approvals(mut self, approvals: Arc<crate::approval::Approvals>) -> Self {
        self.approvals.approvals = Some(approvals);
        self
    }

    /// Take over `previous`'s cancel keys (a reload): sessions opened
    /// under it stay cancellable through this runtime.
    pub fn keep_cancels_of(&mut self, previous: &PgRuntime) {
        self.cancels = Arc::clone(&previous.cancels);
    }

    pub fn grant(&self, account: &str, target: &str) -> Option<Arc<PgGrant>> {
        self.grants.get(account, target)
    }
}

/// One session's fixed facts, shared by its two halves.
pub struct SessionInfo {
    pub session: SessionId,
    pub account: String,
    pub target: String,
    pub database: String,
    pub upstream_user: String,
    pub process: ProcessInfo,
    pub identity: Option<TokenIdentity>,
    pub policy: Arc<Policy>,
    pub masker: Option<Arc<Masker>>,
    /// Masks statement text and error messages for the audit trail.
    pub text_masker: Arc<Masker>,
    /// The snapshot of the catalog result columns are masked by and the
    /// statement analysis resolves names against (empty without column
    /// rules); refreshed when it proves older than the database.
    pub catalog: CatalogSlot,
    pub audit: AuditHandle,
    pub max_message: usize,
    pub read_only: bool,
    /// Names of functions and operators outside `pg_catalog` that are also
    /// safe built-in names, read from the catalog when the session began:
    /// unqualified calls of them are not trusted by the safe list.
    pub shadowed: Arc<HashSet<String>>,
    /// `search_path` the client asked for at startup.
    pub startup_search_path: Option<String>,
    /// Holds statements of `approve` rules (`None`: they are refused).
    pub approvals: Option<Arc<crate::approval::Approvals>>,
    /// The account's enrolled uids (never approvers of its requests).
    pub account_uids: Vec<u32>,
    /// The request this session's statement is held on.
    pub hold: Arc<HoldSlot>,
    /// The grant's allow-list (issue 19).
    pub allowlist: Option<Arc<crate::policy::allowlist::GrantAllowlist>>,
}

impl SessionInfo {
    pub fn mask_statement(&self, sql: &str) -> String {
        self.text_masker.mask_str(sql).0.into_owned()
    }

    pub fn statement_event(
        &self,
        seq: u64,
        d: &Decided,
        via: &str,
        phase: StatementPhase,
    ) -> StatementEvent {
        let (process, identity) =
            super::session::caller_facts(phase, &self.process, self.identity.as_ref());
        StatementEvent {
            time_ms: now_ms(),
            phase,
            decision: d.decision,
            session: self.session,
            statement_seq: seq,
            account: self.account.clone(),
            target: self.target.clone(),
            protocol: "postgres".into(),
            database: self.database.clone(),
            upstream_user: self.upstream_user.clone(),
            // Stored with the request only (see `ocsf::statement_template`).
            process,
            identity,
            via: via.to_owned(),
            statement: d.statement.clone(),
            class: d.class.clone(),
            tables: d.tables.clone(),
            functions: d.functions.clone(),
            policy: Some(self.policy.name().to_owned()),
            rule: d.rule.clone(),
            reason: d.reason.clone(),
            rows: None,
            values_masked: None,
            duration_us: None,
            command_tag: None,
            sqlstate: (d.decision != StatementDecision::Allowed)
                .then(|| d.answer.sqlstate().to_owned()),
            error: None,
            result: None,
            allowlist: (d.allowlist != Default::default()).then(|| d.allowlist.clone()),
        }
    }
}

use super::now_ms;
pub use super::{Caller, Outcome};

/// Serves one accepted connection to a PostgreSQL target.
pub async fn serve(
    rt: &PgRuntime,
    config: &Config,
    audit: &AuditHandle,
    target: &Target,
    caller: Caller,
    tcp: TcpStream,
) -> Outcome {
    let mut out = Outcome::default();
    let Some(grant) = rt.grant(&caller.account, &target.name) else {
        return out.ended(
            RefuseReason::TargetNotGranted,
            Some(format!(
                "no [[grant]] of {} on {}",
                caller.account, target.name
            )),
        );
    };
    let Some(pg_target) = rt.targets.get(&target.name) else {
        return out.ended(RefuseReason::UnknownTarget, None);
    };
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::time::timeout(
        STARTUP_TIMEOUT,
        negotiate(Stream::Plain(tcp), &mut buf, pg_target.client_tls.as_ref()),
    )
    .await;
    let (mut client, packet) = match first {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return out.ended(RefuseReason::ProtocolError, Some(e));
        }
        Err(_) => {
            return out.ended(
                RefuseReason::StartupTimeout,
                Some(format!("no startup packet within {STARTUP_TIMEOUT:?}")),
            );
        }
    };
    let startup = match packet {
        StartupPacket::Cancel(c) => {
            cancel(rt, config, target, &caller, c, pg_target, &mut out).await;
            return out;
        }
        StartupPacket::Startup(m) => m,
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            return out.ended(RefuseReason::ProtocolError, None);
        }
    };

    let forced_path = grant.policy.forced_search_path();
    let checked = match check_startup(&startup, &grant.grant, forced_path.as_deref())
        .and_then(|c| check_planner_settings(&c.forward, grant.masker.as_deref()).map(|()| c))
    {
        Ok(c) => c,
        Err(why) => {
            refuse_startup(&mut client, "42501", &why).await;
            return out.ended(RefuseReason::StartupRefused, Some(why));
        }
    };
    let g = &grant.grant;
    // Validation guarantees these for protocol grants.
    let (Some(user), Some(database), Some(password_file)) =
        (&g.upstream_user, &g.database, &g.password_file)
    else {
        return out.ended(RefuseReason::GrantIncomplete, None);
    };
    let password = match upstream::read_password(password_file) {
        Ok(p) => p,
        Err(why) => {
            warn!(error = %why, "upstream credential unusable");
            refuse_startup(
                &mut client,
                "08004",
                "Warden cannot use the upstream credential for this grant (see the agent's log)",
            )
            .await;
            return out.ended(RefuseReason::CredentialUnusable, Some(why));
        }
    };
    let params = upstream::UpstreamParams {
        addr: target.address,
        mark: config.agent.upstream_mark,
        connect_timeout: Duration::from_millis(config.agent.connect_timeout_ms),
        tls: pg_target.upstream_tls.as_ref(),
        user,
        database,
        password: &password,
        params: &checked.forward,
        max_message: target.max_message_bytes,
    };
    let mut up = match upstream::open(&params).await {
        Ok(u) => u,
        Err(e) => {
            info!(error = %e, "upstream session failed");
            let msg = match &e {
                upstream::UpstreamError::Refused { sqlstate, message } => {
                    format!("the upstream refused Warden's session: {sqlstate} {message}")
                }
                _ => "Warden could not open the upstream session".to_owned(),
            };
            refuse_startup(&mut client, "08004", &msg).await;
            return out.ended(RefuseReason::UpstreamConnectFailed, Some(e.to_string()));
        }
    };
    drop(password);
    // The policy parsed SQL assuming the tokenisation PostgreSQL uses by
    // default; a server configured otherwise is refused (fail closed).
    if let Err(why) = check_server_parameters(&up.parameters) {
        warn!(error = %why, "upstream session unsafe to parse");
        refuse_startup(
            &mut client,
            "08004",
            "the upstream's settings would make Warden misread statements (see the agent's log)",
        )
        .await;
        return out.ended(RefuseReason::UpstreamUnsafeSettings, Some(why));
    }

    let catalog = match &grant.masker {
        Some(m) => match column_map(rt, &target.name, database, g, m, &mut up, target).await {
            Ok(map) => map,
            Err(why) => {
                refuse_startup(
                    &mut client,
                    "08004",
                    "Warden could not resolve the masked columns of this database",
                )
                .await;
                return out.ended(RefuseReason::CatalogLookupFailed, Some(why));
            }
        },
        None => Arc::new(MaskedCatalog::empty()),
    };

    let shadowed = match shadowed_names(&mut up, target.max_message_bytes).await {
        Ok(s) => Arc::new(s),
        Err(why) => {
            refuse_startup(
                &mut client,
                "08004",
                "Warden could not read which built-in names this database overloads",
            )
            .await;
            return out.ended(RefuseReason::CatalogLookupFailed, Some(why));
        }
    };

    // Our own cancel key for the client, mapped to the upstream's.
    let hold = Arc::new(HoldSlot::default());
    let entry = CancelEntry {
        account: caller.account.clone(),
        target: target.name.clone(),
        upstream: target.address,
        process_id: up.process_id,
        secret_key: up.secret_key.clone(),
        hold: Arc::clone(&hold),
    };
    let cancel_guard = rt.register_cancel(entry);
    let (pid, key) = &cancel_guard.key;
    let hello = match hello(&checked, &up, *pid, key) {
        Ok(h) => h,
        Err(e) => {
            return out.ended(RefuseReason::ProtocolError, Some(e.to_string()));
        }
    };
    if let Err(e) = client.write_all(&hello).await {
        return out.ended(RefuseReason::ClientGone, Some(e.to_string()));
    }

    let text_masker = grant
        .masker
        .clone()
        .unwrap_or_else(|| Arc::clone(&rt.builtin));
    let mut process = caller.process;
    // The connection's command line was masked with the built-in detectors;
    // the grant's own (custom) detectors apply to its statements too.
    process.cmdline = process
        .cmdline
        .map(|c| text_masker.mask_str(&c).0.into_owned());
    let info = Arc::new(SessionInfo {
        session: caller.session,
        account: caller.account.clone(),
        target: target.name.clone(),
        database: database.clone(),
        upstream_user: user.clone(),
        process,
        identity: caller.identity,
        policy: Arc::clone(&grant.policy),
        masker: grant.masker.clone(),
        text_masker,
        catalog: CatalogSlot::new(catalog),
        // One audit scope per session: its answers wait for its own
        // pipelined records only.
        audit: audit.session_scope(),
        max_message: target.max_message_bytes,
        read_only: g.read_only,
        shadowed,
        startup_search_path: checked.search_path,
        approvals: rt.approvals.approvals.clone(),
        account_uids: rt.approvals.uids_of(&caller.account),
        hold,
        allowlist: grant.allowlist.clone(),
    });
    let counters = Arc::new(relay::Counters::default());
    let end = relay::run(
        info,
        client,
        buf,
        up.stream,
        std::mem::take(&mut up.rest),
        up.status,
        Arc::clone(&counters),
    )
    .await;
    debug!(?end, "postgres session ended");
    out.bytes_up = counters.up.load(std::sync::atomic::Ordering::Relaxed);
    out.bytes_down = counters.down.load(std::sync::atomic::Ordering::Relaxed);
    if let relay::End::Error(e) = end {
        out.reason = Some(RefuseReason::SessionError.into());
        out.detail = Some(e);
    }
    out
}

/// The client's side of startup: at most one SSLRequest and one
/// GSSENCRequest (TLS terminated with `client_tls` when the target has it,
/// else `N`) before the StartupMessage or CancelRequest.
async fn negotiate(
    mut client: Stream,
    buf: &mut BytesMut,
    client_tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<(Stream, StartupPacket), String> {
    let mut negotiated = 0;
    loop {
        let packet = loop {
            match decode_startup(buf, MAX_STARTUP) {
                Ok(Some(p)) => break Ok(p),
                Ok(None) => {}
                Err(e) => break Err(format!("malformed startup packet: {e}")),
            }
            match client.read_buf(&mut *buf).await {
                Ok(0) => break Err("client closed during startup".to_owned()),
                Ok(_) => {}
                Err(e) => break Err(format!("reading startup: {e}")),
            }
        }?;
        negotiated += 1;
        if negotiated > 3 {
            return Err("too many negotiation requests".to_owned());
        }
        match packet {
            StartupPacket::SslRequest => {
                if !buf.is_empty() {
                    // Bytes after SSLRequest before the handshake: a
                    // buffer-stuffing attack (CVE-2021-23214 class).
                    return Err("data after SSLRequest before the TLS handshake".into());
                }
                match (client_tls, client) {
                    (Some(cfg), Stream::Plain(mut tcp)) => {
                        tcp.write_all(b"S").await.map_err(|e| e.to_string())?;
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(cfg));
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(|e| format!("client TLS handshake: {e}"))?;
                        client = Stream::ServerTls(Box::new(tls));
                    }
                    (_, mut c) => {
                        c.write_all(b"N").await.map_err(|e| e.to_string())?;
                        client = c;
                    }
                }
            }
            StartupPacket::GssEncRequest => {
                client.write_all(b"N").await.map_err(|e| e.to_string())?;
            }
            other => return Ok((client, other)),
        }
    }
}

/// What the client gets once the upstream session is open: protocol
/// negotiation when it asked for more, AuthenticationOk, the server's
/// ParameterStatus values, our cancel key and ReadyForQuery.
fn hello(
    checked: &Checked,
    up: &upstream::Upstream,
    pid: i32,
    key: &[u8],
) -> Result<BytesMut, crate::protocol::postgres::CodecError> {
    let mut hello = BytesMut::new();
    if checked.negotiate {
        let names: Vec<&str> = checked.unrecognised.iter().map(String::as_str).collect();
        backend::negotiate_protocol_version(&mut hello, 0, &names)?;
    }
    backend::authentication_ok(&mut hello);
    for (name, value) in &up.parameters {
        backend::parameter_status(&mut hello, name, value)?;
    }
    backend::backend_key_data(&mut hello, pid, key)?;
    backend::ready_for_query(&mut hello, up.status);
    Ok(hello)
}

impl PgRuntime {
    /// A fresh cancel key for a session, leading to `entry`; forgotten
    /// when the guard drops.
    fn register_cancel(&self, entry: CancelEntry) -> CancelGuard<'_> {
        let mut entry = Some(entry);
        loop {
            let pid = (rand::random::<u32>() >> 1) as i32;
            let key = rand::random::<[u8; 4]>().to_vec();
            let mut map = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
            if pid != 0
                && !map.contains_key(&(pid, key.clone()))
                && let Some(e) = entry.take()
            {
                map.insert((pid, key.clone()), e);
                return CancelGuard {
                    rt: self,
                    key: (pid, key),
                };
            }
        }
    }
}

struct CancelGuard<'a> {
    rt: &'a PgRuntime,
    key: (i32, Vec<u8>),
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.rt
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// What the startup packet asks for, once checked.
#[derive(Debug, Default, PartialEq)]
struct Checked {
    /// Parameters passed on to the upstream.
    forward: Vec<(String, String)>,
    search_path: Option<String>,
    /// The client asked for a newer minor version or `_pq_.` options.
    negotiate: bool,
    unrecognised: Vec<String>,
}

/// Planner settings are fixed on a grant whose column masking judges how
/// masked columns are used (`refuse`, `equality`): a planner forced onto
/// an index of a masked column returns rows in the column's order (M7).
fn check_planner_settings(
    settings: &[(String, String)],
    masker: Option<&Masker>,
) -> Result<(), String> {
    if !masker.is_some_and(crate::policy::settings::masking_fixes_planner) {
        return Ok(());
    }
    match settings
        .iter()
        .find(|(n, _)| crate::policy::settings::is_planner_setting(n))
    {
        Some((n, _)) => Err(crate::policy::settings::planner_fixed(n)),
        None => Ok(()),
    }
}

/// Checks the client's StartupMessage against the grant: the database, and
/// no parameter that changes privileges or how SQL is tokenised.
/// The server's reported settings that decide how SQL is tokenised must be
/// the ones Warden's parser assumes.
pub(crate) fn check_server_parameters(params: &[(String, String)]) -> Result<(), String> {
    for (name, value) in params {
        check_server_parameter(name, value)?;
    }
    Ok(())
}

/// One ParameterStatus (at startup or later in the session).
pub(crate) fn check_server_parameter(name: &str, value: &str) -> Result<(), String> {
    match name {
        "standard_conforming_strings" | "client_encoding" => {
            crate::policy::settings::check_setting(name, Some(value))
                .map_err(|why| format!("server reports {name} = {value}: {why}"))
        }
        _ => Ok(()),
    }
}

fn check_startup(
    m: &StartupMessage,
    g: &Grant,
    forced_search_path: Option<&[String]>,
) -> Result<Checked, String> {
    let mut c = Checked::default();
    if m.version.major != 3 {
        return Err(format!(
            "unsupported protocol version {}.{}",
            m.version.major, m.version.minor
        ));
    }
    c.negotiate = m.version.minor > 0;
    let mut settings: Vec<(String, String)> = Vec::new();
    for (name, value) in &m.params {
        match name.as_str() {
            // The client's own user name is not an upstream identity.
            "user" => {}
            "database" => {
                if let Some(granted) = &g.database
                    && value != granted
                {
                    return Err(format!(
                        "database {value:?} is not granted to account {} on target {} \
                         (granted: {granted:?})",
                        g.account, g.target
                    ));
                }
            }
            "replication" => {
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err("replication connections are not allowed through Warden".into());
                }
            }
            "options" => {
                for (k, v) in crate::policy::settings::parse_options(value)? {
                    settings.push((k, v));
                }
            }
            n if n.starts_with("_pq_.") => {
                c.negotiate = true;
                c.unrecognised.push(n.to_owned());
            }
            _ => settings.push((name.to_ascii_lowercase(), value.clone())),
        }
    }
    for (name, value) in settings {
        crate::policy::settings::check_setting(&name, Some(&value))?;
        if name == "default_transaction_read_only" && g.read_only {
            continue;
        }
        if name == "search_path" {
            if forced_search_path.is_some() {
                return Err(
                    "search_path is fixed by the grant's policy and cannot be set at startup"
                        .into(),
                );
            }
            c.search_path = Some(value.clone());
        }
        c.forward.push((name, value));
    }
    if let Some(path) = forced_search_path {
        // The server resolves names through the same path the policy does.
        let v: Vec<String> = path
            .iter()
            .map(|p| crate::policy::sql::quote_ident_always(p))
            .collect();
        c.search_path = Some(v.join(", "));
        c.forward.push(("search_path".into(), v.join(", ")));
    }
    if g.read_only {
        c.forward
            .push(("default_transaction_read_only".into(), "on".into()));
    }
    Ok(c)
}

/// An ErrorResponse as bytes. Falls back to a fixed message if the text
/// cannot be encoded (an interior NUL).
pub(crate) fn error_bytes(
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> bytes::Bytes {
    let mut b = BytesMut::new();
    if backend::error_response(&mut b, severity, code, message, detail, hint).is_err() {
        b.clear();
        // Fixed ASCII text without NUL: encoding cannot fail.
        let _ = backend::error_response(&mut b, severity, code, "Warden: refused", None, None);
    }
    b.freeze()
}

// --- sockmap (issue 16 item 4): refusals decided at accept, answered in
// the protocol.

/// How long a connection refused at accept may take to send its startup
/// packet before it is just closed.
const REFUSAL_STARTUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers a connection refused before any session (a connection cap) with
/// FATAL `code` to its startup packet (after TLS, when the target terminates
/// it), so the client sees a PostgreSQL error instead of a reset. The caller
/// has audited the refusal.
pub async fn refuse_connection(
    rt: &PgRuntime,
    target: &Target,
    tcp: TcpStream,
    code: &str,
    message: &str,
) {
    let Some(pg_target) = rt.targets.get(&target.name) else {
        return;
    };
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::time::timeout(
        REFUSAL_STARTUP_TIMEOUT,
        negotiate(Stream::Plain(tcp), &mut buf, pg_target.client_tls.as_ref()),
    )
    .await;
    if let Ok(Ok((mut client, StartupPacket::Startup(_)))) = first {
        refuse_startup(&mut client, code, message).await;
    }
}

async fn refuse_startup(client: &mut Stream, code: &str, message: &str) {
    let b = error_bytes("FATAL", code, &format!("Warden: {message}"), None, None);
    let _ = client.write_all(&b).await;
    let _ = client.shutdown().await;
}

/// A CancelRequest: forwarded to the upstream with the upstream's key, only
/// for a session of the same account on the same target.
async fn cancel(
    rt: &PgRuntime,
    config: &Config,
    target: &Target,
    caller: &Caller,
    c: CancelRequest,
    pg_target: &PgTarget,
    out: &mut Outcome,
) {
    let entry = {
        let map = rt.cancels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(c.process_id, c.secret_key.clone()))
            .filter(|e| e.account == caller.account && e.target == target.name)
            .map(|e| {
                (
                    e.upstream,
                    e.process_id,
                    e.secret_key.clone(),
                    Arc::clone(&e.hold),
                )
            })
    };
    let Some((upstream_addr, process_id, secret_key, hold)) = entry else {
        // As PostgreSQL does: no answer either way.
        out.reason = Some(RefuseReason::CancelUnknown.into());
        out.detail = Some("cancel request with a key of no session of this account".into());
        return;
    };
    // A statement held for approval never reached the upstream: the cancel
    // withdraws the request (the client gets 57014, as from the server).
    if let (Some(id), Some(approvals)) = (hold.get(), &rt.approvals.approvals)
        && approvals
            .withdraw(&id, "cancel request from the client")
            .await
    {
        out.reason = Some(RefuseReason::CancelRequest.into());
        out.detail = Some(format!("cancel request withdrew approval request {id}"));
        return;
    }
    let sent = async {
        let mut s = upstream::connect(
            upstream_addr,
            config.agent.upstream_mark,
            Duration::from_millis(config.agent.connect_timeout_ms),
            pg_target.upstream_tls.as_ref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut b = BytesMut::new();
        CancelRequest {
            process_id,
            secret_key,
        }
        .encode(&mut b)
        .map_err(|e| e.to_string())?;
        s.write_all(&b).await.map_err(|e| e.to_string())?;
        let _ = s.shutdown().await;
        Ok::<(), String>(())
    }
    .await;
    out.reason = Some(RefuseReason::CancelRequest.into());
    out.detail = Some(match sent {
        Ok(()) => "cancel request forwarded to the upstream".into(),
        Err(e) => format!("cancel request could not be forwarded: {e}"),
    });
}

/// The catalog snapshot for this grant's database ([`catalog`]), read on
/// the fresh upstream session before the client gets it: the shared
/// snapshot of the same target, database and masking when the server's
/// digest says it is current, else a new one (which is then shared).
async fn column_map(
    rt: &PgRuntime,
    target_name: &str,
    database: &str,
    g: &Grant,
    masker: &Arc<Masker>,
    up: &mut upstream::Upstream,
    target: &Target,
) -> Result<Arc<MaskedCatalog>, String> {
    let key = (
        target_name.to_owned(),
        database.to_owned(),
        g.masking.clone().unwrap_or_default(),
    );
    let previous = rt
        .catalog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let mut src = StartupSource {
        up,
        max: target.max_message_bytes,
    };
    let map = catalog::load(
        &mut src,
        g.masking.as_deref().unwrap_or_default(),
        masker,
        previous.as_ref(),
    )
    .await
    .map_err(|e| e.to_string())?;
    rt.catalog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, Arc::clone(&map));
    Ok(map)
}

/// The fresh upstream session, before the relay starts.
struct StartupSource<'a> {
    up: &'a mut upstream::Upstream,
    max: usize,
}

impl catalog::CatalogSource for StartupSource<'_> {
    async fn rows(&mut self, sql: &str) -> Result<catalog::Rows, String> {
        simple_query(self.up, sql, self.max).await
    }
}

/// The names of functions and operators outside `pg_catalog` that are
/// also names on the safe lists, on the fresh upstream session (see
/// [`crate::policy::Analysis::distrust_shadowed`]). Objects created later
/// in the session by another role are not seen: keep the schemas on the
/// path unwritable by others.
async fn shadowed_names(
    up: &mut upstream::Upstream,
    max: usize,
) -> Result<HashSet<String>, String> {
    let rows = simple_query(
        up,
        "SELECT p.proname FROM pg_catalog.pg_proc p \
         WHERE p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace \
         UNION SELECT o.oprname FROM pg_catalog.pg_operator o \
         WHERE o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace",
        max,
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .filter(|n| {
            crate::policy::sql::is_safe_builtin(n) || crate::policy::sql::is_safe_operator(n)
        })
        .collect())
}

/// Runs one query of Warden's own on an idle upstream session and returns
/// its rows as text.
async fn simple_query(
    up: &mut upstream::Upstream,
    sql: &str,
    max_message: usize,
) -> Result<Vec<Vec<Option<String>>>, String> {
    use crate::protocol::postgres::backend::BackendMessage;
    let mut out = BytesMut::new();
    crate::protocol::postgres::frontend::query(&mut out, sql).map_err(|e| e.to_string())?;
    up.stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = loop {
            if let Some(f) = decode_frame(&mut up.rest, max_message).map_err(|e| e.to_string())? {
                break f;
            }
            if up
                .stream
                .read_buf(&mut up.rest)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("upstream closed".into());
            }
        };
        match BackendMessage::parse(&frame).map_err(|e| e.to_string())? {
            BackendMessage::DataRow { values } => rows.push(
                values
                    .iter()
                    .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            ),
            BackendMessage::ErrorResponse(f) => {
                error = Some(f.get(b'M').unwrap_or("error").to_owned());
            }
            BackendMessage::ReadyForQuery { status } => {
                up.status = status;
                return match error {
                    Some(e) => Err(e),
                    None => Ok(rows),
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::startup::ProtocolVersion;

    fn grant(read_only: bool) -> Grant {
        Grant {
            account: "orders-api".into(),
            target: "orders-db".into(),
            database: Some("orders".into()),
            upstream_user: Some("orders_ro".into()),
            password_file: Some("/etc/warden/secrets/orders_ro".into()),
            policy: Some("ro".into()),
            masking: None,
            read_only,
        }
    }

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            version: ProtocolVersion { major: 3, minor: 0 },
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn startup_keeps_harmless_parameters_and_drops_the_user() {
        let c = check_startup(
            &startup(&[
                ("user", "someone"),
                ("database", "orders"),
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
            ]),
            &grant(false),
            None,
        )
        .unwrap();
        assert_eq!(
            c.forward,
            vec![
                ("application_name".to_owned(), "psql".to_owned()),
                ("client_encoding".to_owned(), "UTF8".to_owned())
            ]
        );
    }

    #[test]
    fn startup_refuses_other_databases_replication_and_role_options() {
        let g = grant(false);
        let e = check_startup(&startup(&[("database", "postgres")]), &g, None).unwrap_err();
        assert!(e.contains("not granted"), "{e}");
        assert!(check_startup(&startup(&[("replication", "database")]), &g, None).is_err());
        assert!(check_startup(&startup(&[("replication", "false")]), &g, None).is_ok());
        assert!(check_startup(&startup(&[("options", "-c role=admin")]), &g, None).is_err());
        assert!(check_startup(&startup(&[("options", "--role=admin")]), &g, None).is_err());
        assert!(
            check_startup(
                &startup(&[("options", "-c standard_conforming_strings=off")]),
                &g,
                None
            )
            .is_err()
        );
        assert!(check_startup(&startup(&[("client_encoding", "SJIS")]), &g, None).is_err());
    }

    #[test]
    fn read_only_grants_force_read_only_transactions() {
        let c = check_startup(
            &startup(&[("options", "-c default_transaction_read_only=off")]),
            &grant(true),
            None,
        )
        .unwrap();
        assert_eq!(
            c.forward,
            vec![("default_transaction_read_only".to_owned(), "on".to_owned())]
        );
    }

    #[test]
    fn a_forced_search_path_is_sent_and_cannot_be_overridden() {
        let forced = vec!["app".to_owned(), "public".to_owned()];
        let c = check_startup(&startup(&[]), &grant(false), Some(&forced)).unwrap();
        assert_eq!(
            c.forward,
            vec![("search_path".to_owned(), "\"app\", \"public\"".to_owned())]
        );
        assert_eq!(c.search_path.as_deref(), Some("\"app\", \"public\""));
        let e = check_startup(
            &startup(&[("options", "-c search_path=evil")]),
            &grant(false),
            Some(&forced),
        )
        .unwrap_err();
        assert!(e.contains("fixed by the grant's policy"), "{e}");
    }

    #[test]
    fn server_settings_that_change_tokenisation_are_refused() {
        let ok = [
            ("standard_conforming_strings".to_owned(), "on".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
            ("server_version".to_owned(), "15.18".to_owned()),
        ];
        assert!(check_server_parameters(&ok).is_ok());
        assert!(check_server_parameter("standard_conforming_strings", "off").is_err());
        assert!(check_server_parameter("client_encoding", "SJIS").is_err());
        assert!(check_server_parameter("DateStyle", "ISO, MDY").is_ok());
    }

    #[test]
    fn newer_minor_versions_are_negotiated_down() {
        let mut m = startup(&[("_pq_.foo", "1")]);
        m.version.minor = 2;
        let c = check_startup(&m, &grant(false), None).unwrap();
        assert!(c.negotiate);
        assert_eq!(c.unrecognised, vec!["_pq_.foo".to_owned()]);
        m.version.major = 2;
        assert!(check_startup(&m, &grant(false), None).is_err());
    }

    /// A config with one PostgreSQL target and grant whose masking uses
    /// HMAC tokens with the key in `key_file`.
    fn hmac_config(dir: &std::path::Path, key_file: &std::path::Path) -> Config {
        let toml = format!(
            r#"
[agent]
state_dir = "{state}"

[[target]]
name = "db"
protocol = "postgres"
address = "127.0.0.1:5432"

[[account]]
name = "app"
uids = [4242]

[[grant]]
account = "app"
target = "db"
database = "orders"
upstream_user = "orders_ro"
password_file = "{state}/pw"
policy = "p"
masking = "m"

[policy.p]
rules = [{{ action = "allow", classes = ["read"] }}]

[masking.m]
patterns = ["email"]
pattern_strategy = "hmac"
hmac_key_file = "{key}"
"#,
            state = dir.display(),
            key = key_file.display(),
        );
        Config::parse(&toml, &dir.join("warden.toml")).unwrap()
    }

    #[test]
    fn the_hmac_key_file_loses_its_final_newline_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("mask.key");
        std::fs::write(&key, "0123456789abcdef-key\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = hmac_config(dir.path(), &key);
        let rt = PgRuntime::build(&config).unwrap();
        // The policy is the one the load compiled, not a second compile.
        let g = rt.grant("app", "db").unwrap();
        assert!(Arc::ptr_eq(
            &g.policy,
            config.compiled.sql_policy("p").unwrap()
        ));
        let masker = rt.grant("app", "db").unwrap().masker.clone().unwrap();
        // The same token as the key's text without the newline gives.
        let cfg = hmac_config(dir.path(), &key).maskings["m"].clone();
        let expected = Masker::compile(&cfg, Some(b"0123456789abcdef-key".to_vec())).unwrap();
        let value = b"write to ana@example.com";
        let (got, n) = masker.mask_patterns(value).unwrap();
        assert_eq!(n, 1);
        assert_eq!(got, expected.mask_patterns(value).unwrap().0);

        std::fs::write(&key, "short\n").unwrap();
        let err = PgRuntime::build(&hmac_config(dir.path(), &key))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("masking m") && err.contains("at least"),
            "{err}"
        );
    }

    #[test]
    fn a_reloaded_runtime_keeps_the_cancel_keys_of_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("mask.key");
        std::fs::write(&key, "0123456789abcdef-key").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let first = PgRuntime::build(&hmac_config(dir.path(), &key)).unwrap();
        first.cancels.lock().unwrap().insert(
            (7, vec![1, 2, 3, 4]),
            CancelEntry {
                account: "app".into(),
                target: "db".into(),
                upstream: "127.0.0.1:5432".parse().unwrap(),
                process_id: 99,
                secret_key: vec![9; 4],
                hold: Arc::default(),
            },
        );
        let mut second = PgRuntime::build(&hmac_config(dir.path(), &key)).unwrap();
        assert!(second.cancels.lock().unwrap().is_empty());
        second.keep_cancels_of(&first);
        assert_eq!(
            second.cancels.lock().unwrap()[&(7, vec![1, 2, 3, 4])].process_id,
            99
        );
        // A session that ends under the new runtime removes its key from
        // the shared registry.
        drop(CancelGuard {
            rt: &second,
            key: (7, vec![1, 2, 3, 4]),
        });
        assert!(first.cancels.lock().unwrap().is_empty());
    }
}
