//! The HTTP/1.1 proxy: a target with `protocol = "http"` is served here.
//!
//! Per connection, requests are handled one after the other (pipelined
//! requests wait in the buffer and are answered in order):
//! 1. the head is parsed ([`crate::protocol::http`]); malformed heads,
//!    ambiguous framing (smuggling), bad targets and HTTP/2's prior-knowledge
//!    preface get an error status and a close;
//! 2. the target is normalised; a request for another host than the
//!    target's gets `421`, one that asks the upstream for another method
//!    or path (`X-HTTP-Method-Override`, `_method`, `X-Original-URL`...)
//!    `403` ([`request`]); the grant's [`HttpPolicy`] decides on the
//!    method, path, query parameters and headers (every occurrence, every
//!    reading: see [`crate::policy::http`]); `Upgrade` requests are refused
//!    (`403`, always on a grant with masking), as is `CONNECT`;
//! 3. a request the policy would let through whose body holds parameters
//!    (form, multipart, JSON) has its body read whole (up to
//!    `max_message_bytes`, else `413`; `Expect: 100-continue` answered
//!    first) and is decided again with them;
//! 4. the request event is committed (audit before effect); a refusal gets
//!    `403` with a JSON body naming the rule, its body is drained and the
//!    connection stays usable;
//! 5. allowed requests go upstream with the normalised target, the
//!    target's own `Host`, hop-by-hop headers and the workload's
//!    `Authorization`, `Proxy-Authorization` and `Cookie` removed, and the
//!    grant's credential set; `Expect: 100-continue` is answered by Warden
//!    once the request is allowed; bodies stream in bounded pieces (chunked
//!    bodies are re-chunked). `Accept-Encoding`, `Range` and `If-Range`
//!    are removed on a grant with masking or a credential (a `206` is then
//!    refused on a grant with a credential: its piece cannot be searched
//!    whole);
//! 6. the response: on a grant with masking, what [`response::plan`]
//!    says: JSON, form and text bodies are read whole up to
//!    `max_message_bytes` (larger: `502`), gzip and deflate decoded, the
//!    body masked and sent with a recomputed `Content-Length` (gzip-ed
//!    again when it came gzip-ed and the client takes gzip); what cannot be
//!    masked gets `502` before its body is read, unless the masking lists
//!    its type in `unmasked_types` or its coding in `unmasked_encodings`
//!    (it then passes unmasked and the event says so); the head's values
//!    are masked too. On a grant with a credential, every response head and
//!    body (a tunnel's too) is searched for the credential ([`echo`]): a
//!    head or a whole body that holds it gets `502`, a streamed body is cut
//!    (the connection closes) before the bytes that hold it;
//! 7. the result event is queued.
//!
//! TLS: `upstream_tls` (or a `tls` table) makes Warden originate TLS to the
//! upstream, verified as `tls.server_name` (default: the address);
//! `intercept_tls` (which requires `tls.server_name`) makes it terminate
//! the workload's TLS first, with a leaf of the local CA ([`ca`]) for the
//! SNI. A failed handshake ends the connection with reason
//! `tls_handshake_failed`; the SNI of an intercepted connection is in each
//! request event as the pseudo-header `:sni`, and a request whose SNI is
//! not the server name gets `421`.

pub mod ca;
mod echo;
mod issued;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::approval::{Approvals, RequestSpec};
use crate::audit::AuditHandle;
use crate::audit::event::{ApiEvent, StatementDecision, StatementPhase};
use crate::audit::reason::RefuseReason;
use crate::config::{Config, CredentialKind, HttpCredential, IssuedCredentials, Protocol, Target};
use crate::masking::Masker;
use crate::masking::json::{
    FORM_TYPE, FieldRules, Projection, is_json_type, mask_form_for, mask_json_for, parse_strict,
};
use crate::policy::{Action, HttpPolicy, HttpRequestFacts, HttpVerdict};
use crate::protocol::http::params::{self, Param};
use crate::protocol::http::{
    BodyDecoder, BodyEvent, BodyKind, Header, Headers, HttpError, LAST_CHUNK, RequestHead,
    ResponseHead, encode_chunk, looks_like_h2, parse_response, parse_workload_request, path,
    remove_header, request_body, response_body, set_header, strip_hop_by_hop, write_request,
    write_response,
};
use crate::proxy::postgres::stream::{self, Stream};
use crate::proxy::session::{self, ApprovalContext, GrantTable, Maskers, builtin_masker};
use echo::Echo;
use response::{BodyClass, Coding, Plan};

/// Largest request or response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most bytes handed on per body piece.
pub const PIECE: usize = 64 * 1024;
/// How long an idle keep-alive connection is kept.
const IDLE: Duration = Duration::from_secs(300);
/// How long a stream searched for the credential may hold back the few
/// bytes that could begin it before they go on ([`echo::EchoFilter`]).
const TUNNEL_IDLE: Duration = Duration::from_millis(100);
/// Request headers kept in audit events (values masked).
const AUDIT_REQUEST_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "x-request-id",
    "traceparent",
];
/// Response headers kept in audit events (values masked).
const AUDIT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "x-request-id",
];
/// Request headers that carry the workload's own credentials: removed.
const STRIPPED: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Why the HTTP runtime could not be built.
pub type HttpSetupError = super::session::SetupError;

/// One `[[grant]]` on an HTTP target, ready to serve.
pub struct HttpGrant {
    pub policy: Arc<HttpPolicy>,
    pub masker: Option<Arc<Masker>>,
    pub fields: Arc<FieldRules>,
    pub credential: Option<Credential>,
    /// The grant's allow-list (issue 19), `None` without a `mode`.
    pub allowlist: Option<Arc<crate::policy::allowlist::GrantAllowlist>>,
}

/// How long a credential read from its file is reused: a rotated secret
/// applies within this, and a busy grant reads its file once per period
/// instead of at every request (open, stat, read, close were ~4.5% of the
/// agent's CPU under `cargo xtask bench http`).
const CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// A grant's credential and the header it last produced.
pub struct Credential {
    config: HttpCredential,
    /// Cookies the upstream set for this grant (`issued = "hold"`).
    jar: issued::Jar,
    /// When the file was last read, and what it gave (errors too: a
    /// broken file refuses requests until it is fixed, then within the TTL).
    last: std::sync::Mutex<Option<(Instant, HeaderOrWhy)>>,
}

/// The header a credential sets and what to look for in responses.
#[derive(Debug, Clone)]
struct CredHeader {
    name: String,
    value: Vec<u8>,
    echo: Arc<Echo>,
}

/// A credential's header, or why it cannot be used.
type HeaderOrWhy = Result<CredHeader, String>;

impl Credential {
    pub fn new(config: HttpCredential) -> Self {
        Self {
            config,
            jar: issued::Jar::default(),
            last: std::sync::Mutex::new(None),
        }
    }

    /// Whether credentials the upstream issues in exchange for this one
    /// are kept from the workload (see [`issued`]).
    fn withholds_issued(&self) -> bool {
        self.config.issued != IssuedCredentials::Pass
    }

    /// The header to set, from the file at most [`CREDENTIAL_TTL`] ago.
    fn header(&self, now: Instant) -> HeaderOrWhy {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, got)) if now.saturating_duration_since(*at) < CREDENTIAL_TTL => got.clone(),
            _ => {
                let got = credential_header(&self.config);
                *last = Some((now, got.clone()));
                got
            }
        }
    }
}

struct HttpTarget {
    /// TLS towards the upstream, and the name to verify (and send as SNI).
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// `intercept_tls`: the server side, presenting leaves of the local CA,
    /// and whether it has names for clients that send no SNI.
    intercept: Option<(Arc<rustls::ServerConfig>, bool)>,
    /// The target's virtual host.
    names: request::HostNames,
}

/// Everything HTTP connections share, built once at start.
pub struct HttpRuntime {
    grants: GrantTable<HttpGrant>,
    targets: HashMap<String, HttpTarget>,
    builtin: Arc<Masker>,
    /// Requests of `approve` rules are held here (without a service they
    /// are refused), and who may never approve them.
    approvals: ApprovalContext,
}

impl HttpRuntime {
    pub fn build(config: &Config) -> Result<Self, HttpSetupError> {
        Self::build_with(config, &Maskers::build(config)?)
    }

    /// [`build`](Self::build) with the configuration's maskings compiled
    /// already.
    pub fn build_with(config: &Config, maskers: &Maskers) -> Result<Self, HttpSetupError> {
        let mut targets = HashMap::new();
        let mut local_ca: Option<Arc<ca::LocalCa>> = None;
        for t in config
            .targets
            .iter()
            .filter(|t| t.protocol == Protocol::Http)
        {
            let ca_err = |source| HttpSetupError::Ca {
                target: t.name.clone(),
                source,
            };
            let server_name = t.tls.as_ref().and_then(|x| x.server_name.as_deref());
            let tls = match &t.effective_upstream_tls() {
                Some(tls) => stream::client_config(tls, t.address)
                    .map_err(|source| HttpSetupError::Tls {
                        target: t.name.clone(),
                        source,
                    })?
                    .map(|(cfg, name)| {
                        let mut c = (*cfg).clone();
                        c.alpn_protocols = vec![b"http/1.1".to_vec()];
                        (Arc::new(c), name)
                    }),
                None => None,
            };
            let intercept = if t.intercept_tls {
                let ca = match &local_ca {
                    Some(ca) => Arc::clone(ca),
                    None => {
                        let ca = Arc::new(
                            ca::LocalCa::load_or_create(&config.agent.state_dir).map_err(ca_err)?,
                        );
                        local_ca = Some(Arc::clone(&ca));
                        ca
                    }
                };
                // A client that sends no SNI gets the configured name and
                // the target's address; without a configured name it fails.
                let fallback = match server_name {
                    Some(n) => vec![
                        ca::LeafName::parse(n).map_err(ca_err)?,
                        ca::LeafName::Ip(t.address.ip()),
                    ],
                    None => Vec::new(),
                };
                let has_fallback = !fallback.is_empty();
                Some((ca.server_config(fallback).map_err(ca_err)?, has_fallback))
            } else {
                None
            };
            targets.insert(
                t.name.clone(),
                HttpTarget {
                    tls,
                    intercept,
                    names: request::HostNames::new(t),
                },
            );
        }
        let grants = GrantTable::build(
            config,
            |t| targets.contains_key(t),
            |g| {
                // Validation compiled the policy (it exists for HTTP grants)
                // and the masking's field rules.
                let Some(policy) = g
                    .policy
                    .as_ref()
                    .and_then(|p| config.compiled.http_policy(p))
                else {
                    return Ok(None);
                };
                let fields = g
                    .masking
                    .as_ref()
                    .and_then(|m| config.compiled.masking(m))
                    .map_or_else(
                        || Arc::new(FieldRules::default()),
                        |m| Arc::clone(&m.fields),
                    );
                let allowlist = session::grant_allowlist(config, g)?;
                Ok(Some(HttpGrant {
                    allowlist,
                    policy: Arc::clone(policy),
                    masker: maskers.of(g),
                    fields,
                    credential: config
                        .credentials
                        .get(&(g.account.clone(), g.target.clone()))
                        .cloned()
                        .map(Credential::new),
                }))
            },
        )?;
        Ok(Self {
            grants,
            targets,
            builtin: builtin_masker(),
            approvals: ApprovalContext::new(config),
        })
    }

    /// Requests of `approve` rules are held for a decision.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Self {
        self.approvals.approvals = Some(approvals);
        self
    }

    /// The grant of `account` on `target`, if any.
    pub fn grant(&self, account: &str, target: &str) -> Option<Arc<HttpGrant>> {
        self.grants.get(account, target)
    }
}

use super::now_ms;
pub use super::{Caller, Outcome};

/// How a held request ended.
struct Held {
    /// `allow` when approved; otherwise still `approve`, with why.
    verdict: HttpVerdict,
    /// The approval request id, when one was made.
    request: Option<String>,
    /// The client went away while waiting.
    gone: bool,
}

/// Why a connection ends early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{0}")]
    Protocol(String),
}

/// A connection to the workload with its read buffer and byte counts.
struct Client<S> {
    io: S,
    buf: BytesMut,
    read: u64,
    written: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn fill(&mut self) -> Result<usize, Stop> {
        let n = match self.io.read_buf(&mut self.buf).await {
            Ok(n) => n,
            // A TLS client that closes without close_notify (many do): an
            // end like any other; the request loop tells a close between
            // requests from a truncated message.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(Stop::Client(e)),
        };
        self.read += n as u64;
        Ok(n)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.io.write_all(bytes).await.map_err(Stop::Client)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Sends a piece of a response body, as a chunk when `rechunk`.
    async fn send_body(&mut self, data: &[u8], rechunk: bool) -> Result<(), Stop> {
        if rechunk {
            let mut out = Vec::with_capacity(data.len() + 16);
            encode_chunk(data, &mut out);
            self.send(&out).await
        } else {
            self.send(data).await
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> session::HeldClient for Client<S> {
    fn buffered(&self) -> usize {
        self.buf.len()
    }

    async fn read_more(&mut self) -> bool {
        matches!(self.fill().await, Ok(n) if n > 0)
    }
}

/// A JSON error response; `close` adds `Connection: close`.
fn error_response(status: u16, reason: &str, body: &serde_json::Value, close: bool) -> Vec<u8> {
    let body = body.to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Longest a workload may take to complete the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Longest a refused connection is kept to read its first request head.
const REFUSAL_READ: Duration = Duration::from_secs(5);

/// A connection refused before it is served (a connection limit): its
/// first request head is read (bounded, after the workload's TLS when the
/// target intercepts it) so that closing does not reset the connection
/// under an unread request, then answered `503` with `Retry-After` and
/// closed. The caller records the refusal.
pub async fn refuse_connection(rt: &HttpRuntime, target: &Target, client: TcpStream, detail: &str) {
    let body = serde_json::json!({ "error": format!("Warden: {detail}") });
    let mut answer = error_response(503, "Service Unavailable", &body, true);
    // `Retry-After` goes with the other headers, before the blank line.
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 2);
    answer.splice(head_end..head_end, b"Retry-After: 1\r\n".iter().copied());
    let intercept = rt
        .targets
        .get(&target.name)
        .and_then(|t| t.intercept.clone());
    let _ = tokio::time::timeout(REFUSAL_READ + HANDSHAKE, async {
        match intercept {
            None => refuse_on(client, &answer).await,
            Some(server) => {
                if let Ok((tls, _)) = accept_tls(server, client).await {
                    refuse_on(tls, &answer).await;
                }
            }
        }
    })
    .await;
}

async fn refuse_on<S: AsyncRead + AsyncWrite + Unpin>(io: S, answer: &[u8]) {
    let mut c = Client {
        io,
        buf: BytesMut::with_capacity(4096),
        read: 0,
        written: 0,
    };
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        while !c.buf.windows(4).any(|w| w == b"\r\n\r\n") && c.buf.len() < MAX_HEAD {
            if !matches!(c.fill().await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
    if c.send(answer).await.is_ok() {
        let _ = c.io.shutdown().await;
    }
}

/// Serves one HTTP connection until it closes (after terminating the
/// workload's TLS when the target intercepts it).
pub async fn serve(
    rt: &HttpRuntime,
    config: &Config,
    audit: &AuditHandle,
    target: &Target,
    caller: Caller,
    client: TcpStream,
) -> Outcome {
    let _ = client.set_nodelay(true);
    let served = Served {
        rt,
        config,
        audit,
        target,
    };
    let Some(server) = rt
        .targets
        .get(&target.name)
        .and_then(|t| t.intercept.clone())
    else {
        return serve_on(served, caller, client, None).await;
    };
    match accept_tls(server, client).await {
        Ok((tls, sni)) => serve_on(served, caller, tls, sni).await,
        Err(outcome) => outcome,
    }
}

/// The workload's TLS handshake, with Warden's leaf for its SNI. The SNI is
/// read from the ClientHello first so that a refusal can say why.
async fn accept_tls(
    (server, fallback): (Arc<rustls::ServerConfig>, bool),
    client: TcpStream,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<String>), Outcome> {
    let failed = |reason: RefuseReason, detail: String| {
        info!(reason = reason.as_str(), detail = %detail, "tls handshake refused");
        Outcome::default().ended(reason, Some(detail))
    };
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client)
                .await
                .map_err(|e| {
                    (
                        RefuseReason::TlsHandshakeFailed,
                        format!("reading the ClientHello: {e}"),
                    )
                })?;
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        // Without a name the resolver has none to issue for, and rustls
        // answers with an alert.
        let no_name = sni.is_none() && !fallback;
        let tls = start.into_stream(server).await.map_err(|e| {
            if no_name {
                return (
                    RefuseReason::TlsNoSni,
                    format!("the client sent no SNI and the target has no tls.server_name: {e}"),
                );
            }
            let distrust = matches!(
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::UnknownCA
                        | rustls::AlertDescription::BadCertificate
                        | rustls::AlertDescription::CertificateUnknown
                ))
            );
            let hint = if distrust {
                " (does the workload trust Warden's CA? install `warden ca cert` in its trust store)"
            } else {
                ""
            };
            (
                RefuseReason::TlsHandshakeFailed,
                format!("sni {}: {e}{hint}", sni.as_deref().unwrap_or("none")),
            )
        })?;
        Ok::<_, (RefuseReason, String)>((tls, sni))
    };
    match tokio::time::timeout(HANDSHAKE, handshake).await {
        Ok(Ok(x)) => Ok(x),
        Ok(Err((reason, detail))) => Err(failed(reason, detail)),
        Err(_) => Err(failed(
            RefuseReason::TlsHandshakeFailed,
            format!("no complete handshake within {HANDSHAKE:?}"),
        )),
    }
}

/// What one HTTP connection is served with.
struct Served<'a> {
    rt: &'a HttpRuntime,
    config: &'a Config,
    audit: &'a AuditHandle,
    target: &'a Target,
}

/// Serves the request loop over the workload's (plain or TLS) stream.
async fn serve_on<S: AsyncRead + AsyncWrite + Unpin>(
    Served {
        rt,
        config,
        audit,
        target,
    }: Served<'_>,
    caller: Caller,
    client: S,
    sni: Option<String>,
) -> Outcome {
    let mut c = Client {
        io: client,
        buf: BytesMut::with_capacity(8192),
        read: 0,
        written: 0,
    };
    let mut outcome = Outcome::default();
    let Some(grant) = rt.grant(&caller.account, &target.name) else {
        // The accept path checked the grant; a reload may have removed it.
        let _ = c
            .send(&error_response(
                403,
                "Forbidden",
                &serde_json::json!({"error": "no grant for this target"}),
                true,
            ))
            .await;
        return outcome.ended(RefuseReason::NoGrant, None);
    };
    let conn = Conn {
        rt,
        config,
        audit,
        target,
        caller: &caller,
        grant: &grant,
        sni,
        names: rt
            .targets
            .get(&target.name)
            .map_or_else(|| request::HostNames::new(target), |t| t.names.clone()),
    };
    let mut upstream: Option<(Stream, BytesMut)> = None;
    let mut seq = 0u64;
    let result = loop {
        match conn.one(&mut c, &mut upstream, &mut seq).await {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    outcome.bytes_up = c.read;
    outcome.bytes_down = c.written;
    if let Err(e) = result {
        debug!(error = %e, "http connection ended");
        outcome.reason = Some(
            match e {
                Stop::Client(_) => RefuseReason::ClientError,
                Stop::Upstream(_) => RefuseReason::UpstreamError,
                Stop::Protocol(_) => RefuseReason::ProtocolError,
            }
            .into(),
        );
        outcome.detail = Some(e.to_string());
    }
    let _ = c.io.shutdown().await;
    outcome
}

struct Conn<'a> {
    rt: &'a HttpRuntime,
    config: &'a Config,
    audit: &'a AuditHandle,
    target: &'a Target,
    caller: &'a Caller,
    grant: &'a HttpGrant,
    /// The SNI of an intercepted connection.
    sni: Option<String>,
    /// The target's virtual host.
    names: request::HostNames,
}

/// The parts of one request kept for its events.
struct Req {
    seq: u64,
    started: Instant,
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    read_before: u64,
    written_before: u64,
}

/// What a request's result event records.
struct Finished {
    /// The status the client got.
    status: u16,
    /// Values masked in the response.
    masked: u64,
    /// The response headers kept for the record (values masked).
    resp_headers: Vec<(String, String)>,
    /// Why the response could not be delivered as received.
    error: Option<String>,
    /// What the masking let through by configuration.
    note: Option<String>,
}

impl Finished {
    fn status(status: u16) -> Self {
        Self {
            status,
            masked: 0,
            resp_headers: Vec::new(),
            error: None,
            note: None,
        }
    }

    fn failed(status: u16, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::status(status)
        }
    }
}

/// An upstream response head, its body framing and how it is to be sent.
struct Response {
    head: ResponseHead,
    kind: BodyKind,
    plan: Plan,
}

/// What the client's request said about the response it takes.
struct ClientWants {
    /// The connection closes after this response.
    close: bool,
    /// The client's HTTP minor version.
    version: u8,
    /// It accepts gzip.
    gzip: bool,
    /// What it said about the names of the response's members.
    names: Projection,
}

impl Conn<'_> {
    fn masker(&self) -> &Masker {
        self.grant.masker.as_deref().unwrap_or(&self.rt.builtin)
    }

    fn event(&self, r: &Req, phase: StatementPhase, decision: StatementDecision) -> ApiEvent {
        let (process, identity) =
            session::caller_facts(phase, &self.caller.process, self.caller.identity.as_ref());
        ApiEvent {
            time_ms: now_ms(),
            phase,
            decision,
            session: self.caller.session,
            request_seq: r.seq,
            account: self.caller.account.clone(),
            target: self.target.name.clone(),
            // Who called goes with the request; the result is tied to it by
            // session and request_seq. A minted token's attestation belongs
            // to the connection (its open event carries it), not to every
            // request.
            process,
            identity: identity.map(|i| crate::audit::event::TokenIdentity {
                attestation: None,
                ..i
            }),
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.as_deref().map(|q| mask_query(self.masker(), q)),
            request_headers: match &self.sni {
                // A pseudo-header (no real header has a ':'), beside Host.
                Some(sni) => {
                    let mut h = r.headers.clone();
                    h.push((":sni".into(), sni.clone()));
                    h
                }
                None => r.headers.clone(),
            },
            policy: Some(self.grant.policy.name().to_owned()),
            rule: None,
            reason: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_us: None,
            values_masked: None,
            response_headers: Vec::new(),
            error: None,
            allowlist: None,
        }
    }

    // --- allow-lists (issue 19) ---
    /// The request's fingerprint and the grant's allow-list verdict: an
    /// unlisted request of an enforcing grant is refused (or held, with
    /// `on_new = "approve"`) whatever the rules allow; block still wins.
    /// Also what `approve --learn` would add when the request is held.
    fn allowlist_gate(
        &self,
        req: &Req,
        query: &[crate::protocol::http::params::Param],
        verdict: &mut HttpVerdict,
    ) -> (
        Option<crate::policy::allowlist::AllowlistFacts>,
        Option<crate::approval::learn::LearnCandidate>,
    ) {
        use crate::policy::allowlist::{AllowlistFacts, Judged, http_fingerprint};
        let names: Vec<&str> = query.iter().map(|p| p.name.as_str()).collect();
        let fp = http_fingerprint(&req.method, &req.path, &names);
        let Some(gate) = self.grant.allowlist.as_deref() else {
            return (
                Some(AllowlistFacts {
                    fingerprint: Some(fp.id),
                    ..Default::default()
                }),
                None,
            );
        };
        let example = format!("{} {}", req.method, self.masker().mask_str(&req.path).0);
        let (facts, judged) = session::judge_allowlist(
            gate,
            Some(&fp),
            "http",
            &example,
            session::decision_of(verdict.action),
        );
        let held = matches!(judged, Judged::Hold(_));
        match judged {
            Judged::Refuse(why) if matches!(verdict.action, Action::Allow | Action::Approve) => {
                verdict.action = Action::Block;
                verdict.rule = None;
                verdict.reason = why;
            }
            Judged::Hold(why) if verdict.action == Action::Allow => {
                verdict.action = Action::Approve;
                verdict.reason = why;
            }
            _ => {}
        }
        let learn = held
            .then(|| {
                crate::approval::learn::LearnCandidate::of(
                    self.grant.allowlist.as_ref(),
                    Some(&fp),
                    "http",
                    &example,
                )
            })
            .flatten();
        (Some(facts), learn)
    }

    fn audit_headers(&self, headers: &[Header], allow: &[&str]) -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|h| allow.iter().any(|a| h.name.eq_ignore_ascii_case(a)))
            .map(|h| {
                let v = String::from_utf8_lossy(&h.value);
                (
                    h.name.to_ascii_lowercase(),
                    self.masker().mask_str(&v).0.into_owned(),
                )
            })
            .collect()
    }

    /// Refuses a request that could not be parsed: status, close, and an
    /// event when the request got far enough to have a method.
    async fn bad<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        status: u16,
        message: String,
        req: Option<&Req>,
    ) -> Result<bool, Stop> {
        if let Some(r) = req {
            let mut ev = self.event(r, StatementPhase::Request, StatementDecision::Rejected);
            ev.reason = Some(message.clone());
            ev.status = Some(status);
            ev.bytes_in = c.read - r.read_before;
            ev.policy = None;
            // Nothing is forwarded: the event may trail the answer.
            self.audit.record_detached(ev);
        }
        info!(status, reason = %message, "http request rejected");
        c.send(&error_response(
            status,
            response::reason_phrase(status),
            &serde_json::json!({ "error": message }),
            true,
        ))
        .await?;
        Ok(false)
    }

    /// Handles one request; `Ok(false)` ends the connection.
    async fn one<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        upstream: &mut Option<(Stream, BytesMut)>,
        seq: &mut u64,
    ) -> Result<bool, Stop> {
        // 1. The head.
        let read_before = c.read - c.buf.len() as u64;
        let written_before = c.written;
        let (head, n) = loop {
            if looks_like_h2(&c.buf) {
                return self
                    .bad(
                        c,
                        505,
                        "HTTP/2 is not supported by Warden yet; use HTTP/1.1".into(),
                        None,
                    )
                    .await;
            }
            match parse_workload_request(&c.buf, MAX_HEAD) {
                Ok(Some(h)) => break h,
                Ok(None) => {
                    let got = match tokio::time::timeout(IDLE, c.fill()).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(false),
                    };
                    if got == 0 {
                        if !c.buf.is_empty() {
                            return Err(Stop::Protocol("connection closed inside a head".into()));
                        }
                        return Ok(false);
                    }
                }
                Err(HttpError::HeadTooLarge { .. }) => {
                    return self
                        .bad(
                            c,
                            400,
                            format!("request head too large (limit {} KiB)", MAX_HEAD / 1024),
                            None,
                        )
                        .await;
                }
                Err(e) => return self.bad(c, 400, e.to_string(), None).await,
            }
        };
        bytes::Buf::advance(&mut c.buf, n);
        *seq += 1;
        let mut req = Req {
            seq: *seq,
            started: Instant::now(),
            method: head.method.to_ascii_uppercase(),
            path: String::new(),
            query: None,
            headers: self.audit_headers(&head.headers, AUDIT_REQUEST_HEADERS),
            read_before,
            written_before,
        };
        // 2. Framing, target, method, host.
        let kind = match request_body(&head) {
            Ok(k) => k,
            Err(e) => return self.bad(c, 400, e.to_string(), Some(&req)).await,
        };
        let target = match path::normalize(&head.target) {
            Ok(t) => t,
            Err(e) => {
                req.path = head.target.chars().take(256).collect();
                req.path = self.masker().mask_str(&req.path).0.into_owned();
                return self.bad(c, 400, e.to_string(), Some(&req)).await;
            }
        };
        req.path = target.path.clone();
        req.query = target.query.clone();
        if req.method == "CONNECT" {
            return self
                .bad(c, 405, "CONNECT is not proxied".into(), Some(&req))
                .await;
        }
        // The target's one virtual host: the credential goes nowhere else.
        if let Err((status, why)) = self.names.check(&head, &target, self.sni.as_deref()) {
            return self.bad(c, status, why, Some(&req)).await;
        }
        let client_close = head.version == 0 && !head.has_token("connection", "keep-alive")
            || head.has_token("connection", "close");
        let expect_continue = head
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        // 3. Decision: on the head first, then, when the policy would let
        // it through, with the parameters of its body.
        let query = target
            .query
            .as_deref()
            .map(params::query_params)
            .unwrap_or_default();
        if let Some(why) =
            request::header_override(&head).or_else(|| request::param_override(&query, "query"))
        {
            return self.bad(c, 403, why, Some(&req)).await;
        }
        let body_format = match params::body_format(head.all("content-type")) {
            Ok(f) => f.filter(|_| kind != BodyKind::Empty),
            Err(e) => return self.bad(c, 400, e.to_string(), Some(&req)).await,
        };
        let headers = params::header_params(
            head.headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_slice())),
        );
        let upgrade = upgrade_of(&head, &self.target.allow_upgrade).and_then(|u| match u {
            Some(_) if self.grant.masker.is_some() => Err(
                "protocol upgrades are refused on a grant with masking: an upgraded connection \
                 cannot be masked"
                    .to_owned(),
            ),
            u => Ok(u),
        });
        let decide = |body: &[Param], body_len: Option<u64>| {
            if let Err(why) = &upgrade {
                return HttpVerdict {
                    action: Action::Block,
                    rule: None,
                    reason: why.clone(),
                    body_limit: None,
                };
            }
            let started = std::time::Instant::now();
            let verdict = self.grant.policy.decide(&HttpRequestFacts {
                method: &req.method,
                path: &target.match_path,
                query: &query,
                body,
                headers: &headers,
                body_len,
            });
            crate::metrics::global().observe(
                crate::metrics::Family::DecisionSeconds,
                &[("protocol", "http")],
                started.elapsed(),
            );
            verdict
        };
        let declared = match kind {
            BodyKind::Empty => Some(0),
            BodyKind::Length(n) => Some(n),
            _ => None,
        };
        // Cookies are parameters too to ASP.NET's `Request[name]` and PHP's
        // `$_REQUEST` (with its built-in request order): judged with the
        // body's.
        let cookies = params::cookie_params(head.all("cookie"));
        // A body of another type (or none) holds parameters too for many
        // applications (FastAPI, Go handlers, Rack): read as every one of
        // them may when a rule looks at parameters of this request, and
        // for an untyped POST, which Rack parses as a form before routing
        // (its MethodOverride reads `_method` there), when a method it
        // could name is judged otherwise here. A body nothing in which can
        // change the decision streams unread, whatever its size.
        let untyped_params = body_format.is_none()
            && kind != BodyKind::Empty
            && (self
                .grant
                .policy
                .reads_body_parameters(&req.method, &target.match_path)
                || (req.method == "POST"
                    && head.all("content-type").next().is_none()
                    && self
                        .grant
                        .policy
                        .method_override_matters(&HttpRequestFacts {
                            method: &req.method,
                            path: &target.match_path,
                            query: &query,
                            body: &cookies,
                            headers: &headers,
                            body_len: declared,
                        })));
        // Parameters in a coded body: frameworks that decompress requests
        // would read what Warden cannot judge.
        if (body_format.is_some() || untyped_params)
            && let Some(why) = request::coded_params(&head)
        {
            return self.bad(c, 415, why, Some(&req)).await;
        }
        let mut verdict = decide(&cookies, declared);
        // The body, read whole when its parameters must be judged.
        let mut body: Option<Vec<u8>> = None;
        if (body_format.is_some() || untyped_params)
            && matches!(verdict.action, Action::Allow | Action::Approve)
        {
            if expect_continue {
                c.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            let bytes = match self.read_body(c, kind).await? {
                Ok(b) => b,
                Err((status, why)) => return self.bad(c, status, why, Some(&req)).await,
            };
            let read = match &body_format {
                Some(format) => params::body_params(format, &bytes),
                None => params::untyped_body_params(&bytes),
            };
            let found = match read {
                Ok(p) => p,
                Err(e) => return self.bad(c, 400, e.to_string(), Some(&req)).await,
            };
            if let Some(why) = request::param_override(&found, "body") {
                return self.bad(c, 403, why, Some(&req)).await;
            }
            let mut found = found;
            found.extend(cookies.iter().cloned());
            let again = decide(&found, Some(bytes.len() as u64));
            // The body's parameters can only make the decision stricter
            // (see policy::http); take it as it is.
            verdict = again;
            body = Some(bytes);
        }
        // The grant's allow-list over the rule decision (issue 19).
        let (allowlist, learn) = self.allowlist_gate(&req, &query, &mut verdict);
        // An `approve` rule holds the request (its body read and shown) for
        // a human decision; the final decision is what gets recorded.
        let query_pairs: Vec<(String, String)> = target
            .query
            .as_deref()
            .map(path::query_pairs)
            .unwrap_or_default();
        // Field rules name response members, and the request may name them
        // too (`?select=n:name`, GraphQL aliases): its words are read, the
        // body's as well (whole, bounded, never in a coding Warden does not
        // read).
        // Bodies read for words: text types an upstream parses for names
        // (GraphQL documents, XML, SQL...; larger than max_message_bytes
        // refused, 413) and any body of a known length within that limit;
        // a large upload of another type or none streams unread.
        let names_matter = self.grant.masker.is_some() && self.grant.fields.has_field_rules();
        let wordy = names_matter
            && verdict.is_allowed()
            && kind != BodyKind::Empty
            && body.is_none()
            && (request::textual_body(&head)
                || matches!(kind, BodyKind::Length(n) if n <= self.target.max_message_bytes as u64));
        if wordy && let Some(why) = request::coded_params(&head) {
            let why = format!("{why} (field rules apply to the response)");
            return self.bad(c, 415, why, Some(&req)).await;
        }
        // What an approver approves is what is forwarded: the body too, read
        // whole (bounded by max_message_bytes) before asking.
        if (verdict.action == Action::Approve || wordy) && body.is_none() && kind != BodyKind::Empty
        {
            if expect_continue {
                c.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            body = match self.read_body(c, kind).await? {
                Ok(b) => Some(b),
                Err((status, why)) => return self.bad(c, status, why, Some(&req)).await,
            };
        }
        let (verdict, approval) = if verdict.action == Action::Approve {
            let content_type = head
                .all("content-type")
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let shown_body = body.as_deref().map(|b| (b, content_type.as_deref()));
            let held = self
                .hold(c, &req, verdict, &query_pairs, shown_body, learn)
                .await;
            if held.gone {
                let mut ev = self.event(
                    &req,
                    StatementPhase::Request,
                    StatementDecision::ApprovalRequired,
                );
                ev.rule = held.verdict.rule.as_ref().map(|r| r.label.clone());
                ev.reason = Some(held.verdict.reason.clone());
                if let Err(e) = self.audit.record(ev).await {
                    warn!(error = %e, "could not audit a withdrawn request");
                }
                return Ok(false);
            }
            (held.verdict, held.request)
        } else {
            (verdict, None)
        };
        let decision = session::decision_of(verdict.action);
        let mut ev = self.event(&req, StatementPhase::Request, decision);
        ev.allowlist = allowlist;
        ev.rule = verdict.rule.as_ref().map(|r| r.label.clone());
        ev.reason = Some(verdict.reason.clone());
        ev.bytes_in = c.read - c.buf.len() as u64 - read_before;
        // Audit before effect, refusals included: the record is the proof.
        if let Err(e) = self.audit.record(ev).await {
            warn!(error = %e, "audit store unavailable; refusing the request");
            c.send(&error_response(
                503,
                "Service Unavailable",
                &serde_json::json!({"error": "audit unavailable; request refused"}),
                true,
            ))
            .await?;
            return Ok(false);
        }
        if !verdict.is_allowed() {
            info!(method = %req.method, path = %req.path, reason = %verdict.reason, "http request refused");
            let reply = serde_json::json!({
                "error": "forbidden by policy",
                "decision": decision.as_str(),
                "policy": self.grant.policy.name(),
                "rule": verdict.rule.as_ref().map(|r| r.label.clone()),
                "reason": verdict.reason,
                "approval_request": approval,
            });
            // A body the client sends anyway is read and dropped; after
            // `Expect: 100-continue` the client may or may not send it, so
            // the connection cannot stay in step: close it (unless the body
            // was read already).
            let keep = if body.is_some() {
                !client_close
            } else {
                let in_step = !(client_close || expect_continue && kind != BodyKind::Empty);
                in_step && self.drain(c, kind).await?
            };
            c.send(&error_response(403, "Forbidden", &reply, !keep))
                .await?;
            self.result(&req, c, decision, Finished::status(403));
            return Ok(keep);
        }
        // 4. Forward.
        let upgrade = upgrade.ok().flatten();
        let mut out_headers =
            self.upstream_headers(&head, upgrade.as_deref(), body.as_ref().map(Vec::len), kind);
        let mut echo = None;
        if let Some(cred) = &self.grant.credential {
            match cred.header(Instant::now()) {
                Ok(h) => {
                    set_header(&mut out_headers, &h.name, h.value);
                    echo = Some(h.echo);
                    // The upstream's session for this grant, kept by Warden.
                    if cred.config.issued == IssuedCredentials::Hold
                        && let Some(cookies) = cred.jar.header()
                    {
                        set_header(&mut out_headers, "Cookie", cookies);
                    }
                }
                Err(why) => {
                    warn!(error = %why, "credential unavailable");
                    c.send(&error_response(
                        502,
                        "Bad Gateway",
                        &serde_json::json!({"error": "upstream credential unavailable"}),
                        true,
                    ))
                    .await?;
                    self.result(&req, c, decision, Finished::failed(502, why));
                    return Ok(false);
                }
            }
        }
        let up_head = RequestHead {
            // The method as the policy read it.
            method: req.method.clone(),
            target: target.forward(),
            version: 1,
            headers: out_headers,
        };
        if upstream.is_none() {
            match self.connect().await {
                Ok(s) => *upstream = Some((s, BytesMut::with_capacity(8192))),
                Err(e) => {
                    c.send(&error_response(
                        502,
                        "Bad Gateway",
                        &serde_json::json!({"error": "upstream unreachable", "reason": e}),
                        true,
                    ))
                    .await?;
                    self.result(&req, c, decision, Finished::failed(502, e.clone()));
                    return Err(Stop::Upstream(e));
                }
            }
        }
        let Some((up, ubuf)) = upstream.as_mut() else {
            return Err(Stop::Upstream("no upstream".into()));
        };
        let mut bytes = Vec::with_capacity(1024);
        write_request(&up_head, &mut bytes);
        if let Some(b) = &body {
            bytes.extend_from_slice(b);
        }
        up.write_all(&bytes)
            .await
            .map_err(|e| Stop::Upstream(e.to_string()))?;
        if body.is_none() {
            if expect_continue && kind != BodyKind::Empty {
                c.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            if let Err(e) = self.forward_body(c, up, kind, verdict.body_limit).await {
                *upstream = None;
                return Err(e);
            }
        }
        up.flush()
            .await
            .map_err(|e| Stop::Upstream(e.to_string()))?;
        // 5. Response.
        let scrub = self.grant.masker.is_some() || echo.is_some();
        let (mut resp, n) = loop {
            match parse_response(ubuf, MAX_HEAD) {
                Ok(Some((h, n))) if (100..200).contains(&h.status) && h.status != 101 => {
                    bytes::Buf::advance(ubuf, n);
                    // Interim responses (103 Early Hints) go on as they
                    // are, unless they must be judged: then they are
                    // dropped (a client needs none of them).
                    if !scrub {
                        let mut out = Vec::new();
                        write_response(&h, &mut out);
                        c.send(&out).await?;
                    }
                }
                Ok(Some(h)) => break h,
                Ok(None) => {
                    let got = up
                        .read_buf(ubuf)
                        .await
                        .map_err(|e| Stop::Upstream(e.to_string()))?;
                    if got == 0 {
                        *upstream = None;
                        c.send(&error_response(
                            502,
                            "Bad Gateway",
                            &serde_json::json!({"error": "upstream closed without a response"}),
                            true,
                        ))
                        .await?;
                        self.result(&req, c, decision, Finished::failed(502, "no response"));
                        return Ok(false);
                    }
                }
                Err(e) => {
                    *upstream = None;
                    c.send(&error_response(
                        502,
                        "Bad Gateway",
                        &serde_json::json!({"error": "malformed upstream response"}),
                        true,
                    ))
                    .await?;
                    self.result(&req, c, decision, Finished::failed(502, e.to_string()));
                    return Ok(false);
                }
            }
        };
        bytes::Buf::advance(ubuf, n);
        // The head: masked values, the standard reason phrase, and never
        // the credential.
        let mut head_masked = 0;
        if scrub {
            resp.reason = response::reason_phrase(resp.status).to_owned();
        }
        // Credentials issued in exchange for the grant's: never the
        // workload's (cookies kept in the grant's jar or dropped).
        if let Some(cred) = &self.grant.credential
            && cred.withholds_issued()
        {
            let keep = cred.config.issued == IssuedCredentials::Hold;
            let cookies = cred.jar.take(&mut resp.headers, keep);
            let before = resp.headers.len();
            resp.headers.retain(|h| !issued::is_issued_header(&h.name));
            let removed = before - resp.headers.len() + issued::mask_issued_urls(&mut resp.headers);
            if cookies + removed > 0 {
                info!(
                    http.cookies = cookies,
                    http.headers = removed,
                    kept = keep,
                    "credentials issued by the upstream withheld from the workload"
                );
            }
        }
        if let Some(m) = &self.grant.masker {
            head_masked = response::mask_head(m, &mut resp.headers);
        }
        // Ranges were not asked for (see `upstream_headers`): a partial
        // response on a grant with a credential is a piece the search
        // cannot judge whole.
        let unsearchable = echo
            .as_ref()
            .and_then(|e| match response::echo_in_head(e, &resp) {
                Some(place) => Some(format!(
                    "the upstream echoed the grant's credential in {place}"
                )),
                None if resp.status == 206 => Some(
                    "a partial response (206) cannot be searched whole for the grant's credential"
                        .to_owned(),
                ),
                // Extensions were not offered (see `upstream_headers`): a
                // compressed upgraded stream cannot be searched.
                None if resp.status == 101
                    && resp.all("sec-websocket-extensions").next().is_some() =>
                {
                    Some(
                        "an upgraded connection with an extension (Sec-WebSocket-Extensions: \
                         compressed messages) cannot be searched for the grant's credential"
                            .to_owned(),
                    )
                }
                None => None,
            });
        if let Some(why) = unsearchable {
            *upstream = None;
            let ((status, _), err) = self.fail(c, why).await?;
            self.result(
                &req,
                c,
                decision,
                Finished {
                    error: err,
                    ..Finished::status(status)
                },
            );
            return Ok(false);
        }
        if resp.status == 101 {
            let Some(up) = upstream.take() else {
                return Err(Stop::Upstream("no upstream".into()));
            };
            if upgrade.is_none() {
                return self
                    .bad(c, 502, "upstream switched protocols unasked".into(), None)
                    .await;
            }
            return self
                .tunnel(c, up, &req, decision, &resp, echo.as_deref())
                .await;
        }
        let rkind = match response_body(&head.method, &resp) {
            Ok(k) => k,
            Err(e) => {
                // Refused with a result event naming why (a transfer coding
                // other than chunked, conflicting lengths).
                *upstream = None;
                let ((status, _), err) = self.fail(c, e.to_string()).await?;
                self.result(
                    &req,
                    c,
                    decision,
                    Finished {
                        error: err,
                        ..Finished::status(status)
                    },
                );
                return Ok(false);
            }
        };
        let upstream_close = resp.version == 0 && !resp.has_token("connection", "keep-alive")
            || resp.has_token("connection", "close")
            || rkind == BodyKind::UntilClose;
        let close = client_close;
        let resp_audit = self.audit_headers(&resp.headers, AUDIT_RESPONSE_HEADERS);
        let plan = response::plan(
            &resp,
            rkind,
            self.grant.masker.as_ref().map(|_| &*self.grant.fields),
        );
        let note = match &plan {
            Plan::Mask { note, .. } | Plan::Stream { note } => note.clone(),
            Plan::Refuse(_) => None,
        };
        let client_gzip = accepts_gzip(&head);
        let names = if names_matter {
            let texts = std::iter::once(head.target.as_bytes())
                .chain(
                    head.headers
                        .iter()
                        .flat_map(|h| [h.name.as_bytes(), h.value.as_slice()]),
                )
                .chain(body.as_deref());
            self.grant.fields.projection(texts)
        } else {
            Projection::default()
        };
        let wants = ClientWants {
            close,
            version: head.version,
            gzip: client_gzip,
            names,
        };
        let response = Response {
            head: resp,
            kind: rkind,
            plan,
        };
        let (masked, err) = self
            .respond(c, (up, ubuf), response, wants, echo.as_deref())
            .await?;
        if upstream_close {
            *upstream = None;
        }
        let status_sent = masked.0;
        if let Some(n) = &note {
            info!(method = %req.method, path = %req.path, note = %n, "response not fully masked, by configuration");
        }
        let finished = Finished {
            status: status_sent,
            masked: masked.1 + head_masked as u64,
            resp_headers: resp_audit,
            error: err.clone(),
            note,
        };
        self.result(&req, c, decision, finished);
        if err.is_some() {
            *upstream = None;
            return Ok(false);
        }
        Ok(!close)
    }

    /// The headers forwarded upstream: hop-by-hop headers and the
    /// workload's own credentials removed, the target's `Host`, the allowed
    /// upgrade, the body's framing (`body_len`: a body read whole), and
    /// what masking and credential search need of the response.
    fn upstream_headers(
        &self,
        head: &RequestHead,
        upgrade: Option<&str>,
        body_len: Option<usize>,
        kind: BodyKind,
    ) -> Vec<Header> {
        let mut out_headers = head.headers.clone();
        strip_hop_by_hop(&mut out_headers);
        for h in STRIPPED {
            remove_header(&mut out_headers, h);
        }
        remove_header(&mut out_headers, "expect");
        remove_header(&mut out_headers, "content-length");
        // The upstream is addressed as the target's host, whatever the
        // workload wrote (it was checked to name the same one).
        set_header(&mut out_headers, "Host", self.names.authority());
        // An allowed upgrade keeps its hop-by-hop pair.
        if let Some(u) = upgrade {
            set_header(&mut out_headers, "connection", "upgrade");
            set_header(&mut out_headers, "upgrade", u.as_bytes());
        }
        match (body_len, kind) {
            (Some(n), _) => set_header(&mut out_headers, "Content-Length", n.to_string()),
            (None, BodyKind::Length(n)) => {
                set_header(&mut out_headers, "Content-Length", n.to_string())
            }
            (None, BodyKind::Chunked) => {
                set_header(&mut out_headers, "Transfer-Encoding", "chunked")
            }
            _ => {}
        }
        // Responses must be readable to be masked and searched for the
        // credential; a masked one is judged whole, never in ranges.
        if self.grant.masker.is_some() || self.grant.credential.is_some() {
            remove_header(&mut out_headers, "accept-encoding");
            // The same for an upgraded connection: WebSocket extensions
            // (permessage-deflate) would compress what the tunnel's search
            // reads; a 101 that names one anyway is refused.
            remove_header(&mut out_headers, "sec-websocket-extensions");
        }
        // A range of an echo is a piece of the credential shorter than any
        // form the search looks for: bodies are searched whole, never in
        // ranges (a 206 is then refused, see `one`).
        if self.grant.masker.is_some() || self.grant.credential.is_some() {
            response::strip_range(&mut out_headers);
        }
        out_headers
    }

    /// A request of an `approve` rule: asks the approval service and waits
    /// until it is approved (the verdict becomes `allow`), denied, timed out
    /// or withdrawn because the client went away. Nothing is forwarded
    /// meanwhile. The approver sees the body (read before, whole) and a
    /// grant covers that exact body only (what the client sends after it
    /// waits in the buffer, up to twice `max_message_bytes`). Without an
    /// approval service the request stays refused.
    async fn hold<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        req: &Req,
        mut verdict: HttpVerdict,
        query: &[(String, String)],
        body: Option<(&[u8], Option<&str>)>,
        learn: Option<crate::approval::learn::LearnCandidate>,
    ) -> Held {
        let not_gone = |verdict, request| Held {
            verdict,
            request,
            gone: false,
        };
        let Some(approvals) = self.rt.approvals.approvals.clone() else {
            return not_gone(verdict, None);
        };
        let statement = match &req.query {
            Some(q) => format!(
                "{} {}?{}",
                req.method,
                req.path,
                mask_query(self.masker(), q)
            ),
            None => format!("{} {}", req.method, req.path),
        };
        let statement = match body {
            Some((b, content_type)) if !b.is_empty() => {
                format!("{statement}\n{}", self.shown_body(b, content_type))
            }
            _ => statement,
        };
        let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        let spec = RequestSpec {
            account: self.caller.account.clone(),
            target: self.target.name.clone(),
            protocol: "http".into(),
            session: Some(self.caller.session),
            process: self.caller.process.clone(),
            identity: self.caller.identity.clone(),
            statement,
            fingerprint: crate::approval::fingerprint::http_fingerprint(
                &req.method,
                &req.path,
                &names,
                body.map(|(b, _)| b),
            ),
            policy: Some(self.grant.policy.name().to_owned()),
            rule: verdict.rule.as_ref().map(|r| r.label.clone()),
            risk: if matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
                "read".into()
            } else {
                "write".into()
            },
            account_uids: self.rt.approvals.uids_of(&self.caller.account),
        };
        let hold = match session::ask_learnable(&approvals, spec, learn).await {
            session::Asked::Granted(why) => {
                verdict.action = Action::Allow;
                verdict.reason = why;
                return not_gone(verdict, None);
            }
            session::Asked::Unrecorded(why) => {
                verdict.reason = why;
                return not_gone(verdict, None);
            }
            session::Asked::Held(h) => h,
        };
        info!(request = %hold.id, method = %req.method, path = %req.path, "http request held for approval");
        let cap = self.target.max_message_bytes.saturating_mul(2);
        let waited = session::wait(&approvals, hold, c, cap, None).await;
        if waited.resolution.approved() {
            verdict.action = Action::Allow;
        }
        verdict.reason = waited.why;
        Held {
            verdict,
            request: Some(waited.id),
            gone: waited.gone,
        }
    }

    /// A held request's body as the approver sees it: its type, size and
    /// digest (what a grant for it covers, exactly), and its text with the
    /// detectors' values masked, cut at [`SHOWN_BODY_MAX`] characters.
    fn shown_body(&self, body: &[u8], content_type: Option<&str>) -> String {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(body));
        let mut out = format!(
            "body: {} bytes, {}, sha256 {}",
            body.len(),
            content_type.unwrap_or("no content-type"),
            &digest[..16]
        );
        match std::str::from_utf8(body) {
            Ok(text) => {
                let (masked, _) = self.masker().mask_str(text);
                let mut shown: String = masked.chars().take(SHOWN_BODY_MAX).collect();
                if masked.chars().count() > SHOWN_BODY_MAX {
                    shown.push_str(" …");
                }
                out.push('\n');
                out.push_str(&shown);
            }
            Err(_) => out.push_str(" (binary, not shown)"),
        }
        out
    }

    /// An allowed upgrade the upstream accepted (101): the response goes to
    /// the client, then bytes flow both ways untouched until either side
    /// closes. The result event records the 101 and the bytes of the whole
    /// upgraded exchange. The connection ends with the tunnel. With a
    /// credential, what the upstream sends is searched for it and the
    /// tunnel cut before the bytes that would carry it.
    async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        (mut up, mut ubuf): (Stream, BytesMut),
        req: &Req,
        decision: StatementDecision,
        resp: &ResponseHead,
        echo: Option<&Echo>,
    ) -> Result<bool, Stop> {
        let mut filter = echo.map(Echo::filter);
        let mut out = Vec::with_capacity(256);
        write_response(resp, &mut out);
        let mut cut: Option<String> = None;
        match filter.as_mut().map(|f| f.push(&ubuf)) {
            Some(Ok(safe)) => out.extend_from_slice(&safe),
            Some(Err(form)) => {
                cut = Some(format!(
                    "the upstream echoed the grant's credential ({form})"
                ))
            }
            None => out.extend_from_slice(&ubuf),
        }
        ubuf.clear();
        c.send(&out).await?;
        let early = c.buf.split();
        up.write_all(&early)
            .await
            .map_err(|e| Stop::Upstream(e.to_string()))?;
        let resp_audit = self.audit_headers(&resp.headers, AUDIT_RESPONSE_HEADERS);
        let (mut to_up, mut to_client) = (0u64, 0u64);
        let mut error: Option<String> = None;
        if cut.is_none() {
            let (mut cr, mut cw) = tokio::io::split(&mut c.io);
            let (mut ur, mut uw) = tokio::io::split(&mut up);
            let upward = async {
                let n = tokio::io::copy(&mut cr, &mut uw).await;
                let _ = uw.shutdown().await;
                n
            };
            let downward = async {
                let mut buf = vec![0u8; PIECE];
                let mut sent = 0u64;
                let cut = |form: &str| {
                    Err(format!(
                        "the upstream echoed the grant's credential ({form}): tunnel cut"
                    ))
                };
                loop {
                    // Bytes held back (a possible beginning of the secret)
                    // go on after a short idle time when they are few.
                    let holding = filter.as_ref().is_some_and(|f| f.holding());
                    let read = if holding {
                        tokio::time::timeout(TUNNEL_IDLE, ur.read(&mut buf)).await
                    } else {
                        Ok(ur.read(&mut buf).await)
                    };
                    let (n, safe) = match (read, filter.as_mut()) {
                        (Err(_idle), Some(f)) => match f.release() {
                            Ok(held) => (None, held),
                            Err(form) => return (sent, cut(form)),
                        },
                        (Err(_idle), None) => continue,
                        (Ok(Err(e)), _) => {
                            return (sent, Err(format!("upgraded connection: {e}")));
                        }
                        (Ok(Ok(0)), Some(f)) => match f.release() {
                            Ok(held) => (Some(0), held),
                            Err(form) => return (sent, cut(form)),
                        },
                        (Ok(Ok(n)), Some(f)) => match f.push(&buf[..n]) {
                            Ok(safe) => (Some(n), safe),
                            Err(form) => return (sent, cut(form)),
                        },
                        (Ok(Ok(n)), None) => (Some(n), buf[..n].to_vec()),
                    };
                    if cw.write_all(&safe).await.is_err() {
                        return (sent, Ok(()));
                    }
                    sent += safe.len() as u64;
                    if n == Some(0) {
                        let _ = cw.shutdown().await;
                        return (sent, Ok(()));
                    }
                }
            };
            tokio::pin!(upward, downward);
            let mut up_done = false;
            loop {
                tokio::select! {
                    r = &mut upward, if !up_done => {
                        up_done = true;
                        match r {
                            Ok(n) => to_up = n,
                            Err(e) => error = Some(format!("upgraded connection: {e}")),
                        }
                    }
                    (sent, r) = &mut downward => {
                        to_client = sent;
                        if let Err(e) = r {
                            error = Some(e);
                        }
                        break;
                    }
                }
            }
        } else {
            error = cut;
        }
        c.read += to_up;
        c.written += to_client;
        if let Some(e) = &error
            && e.contains("credential")
        {
            warn!(method = %req.method, path = %req.path, "tunnel cut: the upstream echoed the credential");
        }
        info!(method = %req.method, path = %req.path, bytes.up = to_up, bytes.down = to_client, "upgraded connection ended");
        self.result(
            req,
            c,
            decision,
            Finished {
                resp_headers: resp_audit,
                error,
                ..Finished::status(101)
            },
        );
        Ok(false)
    }

    /// Queues the result event of an answered request; `note` says what
    /// else the auditor must know (e.g. a body passed unmasked).
    fn result<S>(&self, r: &Req, c: &Client<S>, decision: StatementDecision, f: Finished) {
        let Finished {
            status,
            masked,
            resp_headers,
            error,
            note,
        } = f;
        let mut ev = self.event(r, StatementPhase::Result, decision);
        ev.status = Some(status);
        ev.bytes_in = c.read - c.buf.len() as u64 - r.read_before;
        ev.bytes_out = c.written - r.written_before;
        ev.duration_us = Some(r.started.elapsed().as_micros() as u64);
        ev.values_masked = Some(masked);
        ev.response_headers = resp_headers;
        ev.error = error.map(|e| self.masker().mask_str(&e).0.into_owned());
        if note.is_some() {
            ev.reason = note;
        }
        self.audit.record_detached(ev);
    }

    async fn connect(&self) -> Result<Stream, String> {
        let tcp = crate::proxy::upstream::connect(
            self.target.address,
            self.config.agent.upstream_mark,
            Duration::from_millis(self.config.agent.connect_timeout_ms),
        )
        .await
        .map_err(|e| e.to_string())?;
        match self
            .rt
            .targets
            .get(&self.target.name)
            .and_then(|t| t.tls.as_ref())
        {
            None => Ok(Stream::Plain(tcp)),
            Some((cfg, name)) => {
                let name = name.clone();
                let shown = format!("{name:?}");
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS to {} as {shown}: {e}", self.target.address))?;
                Ok(Stream::ClientTls(Box::new(tls)))
            }
        }
    }

    /// Reads a request body whole (its parameters are judged before it is
    /// forwarded): `Ok(Err((status, why)))` when it is larger than
    /// `max_message_bytes` (413) or malformed (400).
    async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        kind: BodyKind,
    ) -> Result<Result<Vec<u8>, (u16, String)>, Stop> {
        let limit = self.target.max_message_bytes;
        let too_large = || {
            Ok(Err((
                413,
                format!(
                    "a request body whose parameters a rule looks at is judged whole: \
                     larger than {limit} bytes (max_message_bytes) is refused"
                ),
            )))
        };
        if let BodyKind::Length(n) = kind
            && n > limit as u64
        {
            return too_large();
        }
        let mut dec = BodyDecoder::new(kind);
        let mut body = Vec::new();
        loop {
            match dec.decode(&mut c.buf, PIECE) {
                Ok(Some(BodyEvent::Data(d))) => {
                    if body.len() + d.len() > limit {
                        return too_large();
                    }
                    body.extend_from_slice(&d);
                }
                Ok(Some(BodyEvent::End)) => return Ok(Ok(body)),
                Ok(None) => {
                    if c.fill().await? == 0 {
                        return Err(Stop::Protocol("client closed inside a request body".into()));
                    }
                }
                Err(e) => return Ok(Err((400, e.to_string()))),
            }
        }
    }

    /// Reads and drops a refused request's body; `false` when it is too
    /// large or malformed (the connection is then closed).
    async fn drain<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        kind: BodyKind,
    ) -> Result<bool, Stop> {
        let limit = self.target.max_message_bytes as u64;
        if let BodyKind::Length(n) = kind
            && n > limit
        {
            return Ok(false);
        }
        let mut dec = BodyDecoder::new(kind);
        let mut total = 0u64;
        loop {
            match dec.decode(&mut c.buf, PIECE) {
                Ok(Some(BodyEvent::Data(d))) => {
                    total += d.len() as u64;
                    if total > limit {
                        return Ok(false);
                    }
                }
                Ok(Some(BodyEvent::End)) => return Ok(true),
                Ok(None) => {
                    if c.fill().await? == 0 {
                        return Ok(false);
                    }
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// Streams the request body to the upstream.
    async fn forward_body<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        up: &mut Stream,
        kind: BodyKind,
        limit: Option<u64>,
    ) -> Result<(), Stop> {
        let mut dec = BodyDecoder::new(kind);
        let mut total = 0u64;
        let mut out = Vec::with_capacity(PIECE + 32);
        loop {
            match dec.decode(&mut c.buf, PIECE) {
                Ok(Some(BodyEvent::Data(d))) => {
                    total += d.len() as u64;
                    if limit.is_some_and(|l| total > l) {
                        // The upstream got part of a chunked body and no
                        // last chunk: it never sees a complete request.
                        let _ = c
                            .send(&error_response(
                                413,
                                "Content Too Large",
                                &serde_json::json!({"error": "body larger than the rule allows"}),
                                true,
                            ))
                            .await;
                        return Err(Stop::Protocol("request body over the rule's limit".into()));
                    }
                    out.clear();
                    if kind == BodyKind::Chunked {
                        encode_chunk(&d, &mut out);
                    } else {
                        out.extend_from_slice(&d);
                    }
                    up.write_all(&out)
                        .await
                        .map_err(|e| Stop::Upstream(e.to_string()))?;
                }
                Ok(Some(BodyEvent::End)) => {
                    if kind == BodyKind::Chunked {
                        up.write_all(LAST_CHUNK)
                            .await
                            .map_err(|e| Stop::Upstream(e.to_string()))?;
                    }
                    return Ok(());
                }
                Ok(None) => {
                    if c.fill().await? == 0 {
                        return Err(Stop::Protocol("client closed inside a request body".into()));
                    }
                }
                Err(e) => {
                    let _ = c
                        .send(&error_response(
                            400,
                            "Bad Request",
                            &serde_json::json!({"error": e.to_string()}),
                            true,
                        ))
                        .await;
                    return Err(Stop::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Sends the response as `plan` says ([`response::plan`]), searching
    /// it for the credential when `echo` is given. Returns (status sent,
    /// values masked) and an error text when the response could not be
    /// delivered as received.
    async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        (up, ubuf): (&mut Stream, &mut BytesMut),
        Response {
            head: mut resp,
            kind,
            plan,
        }: Response,
        ClientWants {
            close,
            version: client_version,
            gzip: client_gzip,
            names,
        }: ClientWants,
        echo: Option<&Echo>,
    ) -> Result<((u16, u64), Option<String>), Stop> {
        let status = resp.status;
        let coding = Coding::of(&resp);
        let json = resp
            .get("content-type")
            .is_some_and(|t| is_json_type(&crate::protocol::http::media_type(t).essence));
        // Tokens issued in a JSON or form body are redacted: such bodies
        // are read whole (see [`issued`]).
        let withholds = self
            .grant
            .credential
            .as_ref()
            .is_some_and(Credential::withholds_issued);
        let form = resp
            .get("content-type")
            .is_some_and(|t| crate::protocol::http::media_type(t).essence == FORM_TYPE);
        let issued_json = json && withholds;
        let issued_form = form && withholds;
        // Whole bodies: masked ones, and those that must be searched and
        // can be read whole (coded ones, small ones: refused with a 502
        // rather than cut).
        let whole = match &plan {
            Plan::Refuse(why) => return self.fail(c, why.clone()).await,
            Plan::Mask { class, .. } => Some(Some(*class)),
            Plan::Stream { .. } if echo.is_some() && kind != BodyKind::Empty => match &coding {
                Coding::Identity if matches!(kind, BodyKind::Length(n) if n <= PIECE as u64) => {
                    Some(None)
                }
                Coding::Identity if issued_json || issued_form => Some(None),
                Coding::Identity => None,
                Coding::Gzip | Coding::Deflate => Some(None),
                Coding::Other(other) => {
                    return self
                        .fail(
                            c,
                            format!(
                                "content-encoding {other:?} cannot be searched for the grant's \
                                 credential"
                            ),
                        )
                        .await;
                }
            },
            Plan::Stream { .. } => None,
        };
        strip_hop_by_hop(&mut resp.headers);
        if close {
            set_header(&mut resp.headers, "Connection", "close");
        }
        let mut dec = BodyDecoder::new(kind);
        if let Some(class) = whole {
            // Read the whole body, bounded.
            let limit = self.target.max_message_bytes;
            let mut body = Vec::new();
            loop {
                match dec.decode(ubuf, PIECE) {
                    Ok(Some(BodyEvent::Data(d))) => {
                        if body.len() + d.len() > limit {
                            return self
                                .fail(
                                    c,
                                    format!(
                                        "response body larger than {limit} bytes cannot be masked \
                                         or searched"
                                    ),
                                )
                                .await;
                        }
                        body.extend_from_slice(&d);
                    }
                    Ok(Some(BodyEvent::End)) => break,
                    Ok(None) => {
                        let n = up
                            .read_buf(ubuf)
                            .await
                            .map_err(|e| Stop::Upstream(e.to_string()))?;
                        if n == 0 {
                            if dec.eof().is_ok() {
                                break;
                            }
                            return self.fail(c, "upstream closed inside a body".into()).await;
                        }
                    }
                    Err(e) => return self.fail(c, e.to_string()).await,
                }
            }
            let gzip = coding == Coding::Gzip;
            let plain = if gzip || coding == Coding::Deflate {
                match decode_body(&body, gzip, limit) {
                    Some(plain) => Some(plain),
                    None => {
                        return self
                            .fail(c, "coded body could not be decoded within the limit".into())
                            .await;
                    }
                }
            } else {
                None
            };
            let Some(class) = class else {
                // Not masked, only searched: sent as it came.
                if let Some(e) = echo
                    && let Some(form) = body_echo(e, plain.as_deref().unwrap_or(&body), json)
                {
                    return self
                        .fail(
                            c,
                            format!(
                                "the upstream echoed the grant's credential in its body ({form})"
                            ),
                        )
                        .await;
                }
                let mut withheld = 0;
                let text = plain.as_deref().unwrap_or(&body);
                if issued_json && !text.iter().all(u8::is_ascii_whitespace) {
                    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(text) else {
                        return self
                            .fail(
                                c,
                                "a JSON body that does not parse cannot be searched for issued \
                                 credentials"
                                    .into(),
                            )
                            .await;
                    };
                    withheld = issued::mask_issued(&mut v);
                    if withheld > 0 {
                        body = serde_json::to_vec(&v).map_err(|e| Stop::Protocol(e.to_string()))?;
                        remove_header(&mut resp.headers, "content-encoding");
                    }
                } else if issued_form && let Some((out, k)) = issued::mask_issued_form(text) {
                    withheld = k;
                    body = out;
                    remove_header(&mut resp.headers, "content-encoding");
                }
                set_header(&mut resp.headers, "Content-Length", body.len().to_string());
                let mut out = Vec::with_capacity(body.len() + 512);
                write_response(&resp, &mut out);
                out.extend_from_slice(&body);
                c.send(&out).await?;
                return Ok(((status, withheld as u64), None));
            };
            if let Some(p) = plain {
                body = p;
                remove_header(&mut resp.headers, "content-encoding");
            }
            let (mut body, n) = match self.mask_body(class, &body, echo, &names) {
                Ok(x) => x,
                Err(why) => return self.fail(c, why).await,
            };
            // Re-encoded when it came gzip-ed and the client takes gzip.
            if gzip && client_gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                if std::io::Write::write_all(&mut enc, &body).is_ok()
                    && let Ok(z) = enc.finish()
                {
                    body = z;
                    set_header(&mut resp.headers, "Content-Encoding", "gzip");
                }
            }
            set_header(&mut resp.headers, "Content-Length", body.len().to_string());
            let mut out = Vec::with_capacity(body.len() + 512);
            write_response(&resp, &mut out);
            out.extend_from_slice(&body);
            c.send(&out).await?;
            return Ok(((status, n as u64), None));
        }
        // Streamed untouched (but searched for the credential).
        let rechunk = matches!(kind, BodyKind::Chunked)
            || (kind == BodyKind::UntilClose && client_version == 1);
        if rechunk {
            remove_header(&mut resp.headers, "content-length");
            set_header(&mut resp.headers, "Transfer-Encoding", "chunked");
        } else if kind == BodyKind::UntilClose {
            set_header(&mut resp.headers, "Connection", "close");
        }
        let mut filter = echo.map(Echo::filter);
        let mut out = Vec::with_capacity(1024);
        write_response(&resp, &mut out);
        c.send(&out).await?;
        let cut = |form: &str| {
            warn!(
                form,
                "response cut: the upstream echoed the grant's credential"
            );
            Ok((
                (status, 0),
                Some(format!(
                    "the upstream echoed the grant's credential in its body ({form}): response cut"
                )),
            ))
        };
        loop {
            match dec.decode(ubuf, PIECE) {
                Ok(Some(BodyEvent::Data(d))) => {
                    let safe = match filter.as_mut().map(|f| f.push(&d)) {
                        Some(Ok(safe)) => bytes::Bytes::from(safe),
                        Some(Err(form)) => return cut(form),
                        None => d,
                    };
                    c.send_body(&safe, rechunk).await?;
                }
                Ok(Some(BodyEvent::End)) => break,
                Ok(None) => {
                    // Held bytes (a possible beginning of the secret) go
                    // on after a short idle time when they are few: a
                    // slow stream (events, long polls) does not stall.
                    let read = match filter.as_mut() {
                        Some(f) if f.holding() => {
                            match tokio::time::timeout(TUNNEL_IDLE, up.read_buf(ubuf)).await {
                                Ok(r) => r,
                                Err(_idle) => {
                                    let held = match f.release() {
                                        Ok(held) => held,
                                        Err(form) => return cut(form),
                                    };
                                    c.send_body(&held, rechunk).await?;
                                    continue;
                                }
                            }
                        }
                        _ => up.read_buf(ubuf).await,
                    };
                    let n = read.map_err(|e| Stop::Upstream(e.to_string()))?;
                    if n == 0 {
                        if dec.eof().is_ok() {
                            break;
                        }
                        // Headers are gone already: the client sees a
                        // truncated message and a close.
                        return Ok(((status, 0), Some("upstream closed inside a body".into())));
                    }
                }
                Err(e) => return Ok(((status, 0), Some(e.to_string()))),
            }
        }
        if let Some(f) = filter.as_mut() {
            let rest = match f.release() {
                Ok(rest) => rest,
                Err(form) => return cut(form),
            };
            c.send_body(&rest, rechunk).await?;
        }
        if rechunk {
            c.send(LAST_CHUNK).await?;
        }
        Ok(((status, 0), None))
    }

    /// A response that cannot be delivered (masked, without the grant's
    /// credential): 502 and a close.
    async fn fail<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut Client<S>,
        why: String,
    ) -> Result<((u16, u64), Option<String>), Stop> {
        warn!(reason = %why, "response refused");
        c.send(&error_response(
            502,
            "Bad Gateway",
            &serde_json::json!({"error": "response refused by Warden", "reason": why}),
            true,
        ))
        .await?;
        Ok(((502, 0), Some(why)))
    }

    /// Masks a whole, decoded body of `class` and searches the result for
    /// the credential; why it cannot be delivered otherwise.
    fn mask_body(
        &self,
        class: BodyClass,
        body: &[u8],
        echo: Option<&Echo>,
        names: &Projection,
    ) -> Result<(Vec<u8>, usize), String> {
        let m = self.masker();
        let echoed =
            |form: &str| format!("the upstream echoed the grant's credential in its body ({form})");
        let (out, n) = match class {
            BodyClass::Json => {
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok((body.to_vec(), 0));
                }
                let mut v = parse_strict(body)?;
                let mut n = mask_json_for(m, &self.grant.fields, names, &mut v)?;
                if let Some(cred) = &self.grant.credential
                    && cred.withholds_issued()
                {
                    n += issued::mask_issued(&mut v);
                }
                // Strings and names as a client decodes them (`\u0041`).
                if let Some(e) = echo
                    && let Some(form) = json_echo(e, &v)
                {
                    return Err(echoed(form));
                }
                if n == 0 {
                    (body.to_vec(), 0)
                } else {
                    (serde_json::to_vec(&v).map_err(|e| e.to_string())?, n)
                }
            }
            BodyClass::Form | BodyClass::Text => {
                if let Some(what) = response::unreadable_text(body) {
                    return Err(format!("a text or form body with {what} cannot be masked"));
                }
                let masked = if class == BodyClass::Form {
                    mask_form_for(m, &self.grant.fields, names, body)?
                } else {
                    m.mask_patterns(body)
                };
                let (out, n) = masked.unwrap_or_else(|| (body.to_vec(), 0));
                match self.grant.credential.as_ref() {
                    Some(cred) if class == BodyClass::Form && cred.withholds_issued() => {
                        match issued::mask_issued_form(&out) {
                            Some((o, k)) => (o, n + k),
                            None => (out, n),
                        }
                    }
                    _ => (out, n),
                }
            }
        };
        if let Some(e) = echo
            && let Some(form) = e.find_decoded(&out)
        {
            return Err(echoed(form));
        }
        Ok((out, n))
    }
}

/// The form of the credential in a whole body (and, for JSON, in its
/// strings and member names as a client decodes them).
fn body_echo(e: &Echo, body: &[u8], json: bool) -> Option<&'static str> {
    e.find_decoded(body).or_else(|| {
        json.then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten()
            .and_then(|v| json_echo(e, &v))
    })
}

/// The form of the credential in a JSON document's strings or member
/// names, as a client decodes them.
fn json_echo(e: &Echo, v: &serde_json::Value) -> Option<&'static str> {
    match v {
        serde_json::Value::String(s) => e.find_decoded(s.as_bytes()),
        serde_json::Value::Array(items) => items.iter().find_map(|i| json_echo(e, i)),
        serde_json::Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| e.find_decoded(k.as_bytes()).or_else(|| json_echo(e, v))),
        _ => None,
    }
}

/// Whether the request's `Accept-Encoding` takes gzip (not `gzip;q=0`).
pub fn accepts_gzip(head: &RequestHead) -> bool {
    head.all("accept-encoding")
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .any(|t| {
            let mut parts = t.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name == "gzip" || name == "x-gzip") && !q_zero
        })
}

/// A gzip (`gzip`, every member, as clients decode it) or deflate (zlib,
/// else raw deflate) body decoded, at most `limit` bytes; `None` when it
/// does not decode, is larger, or has bytes after a deflate stream (read
/// by some clients, not by others: nothing is left unread).
pub fn decode_body(body: &[u8], gzip: bool, limit: usize) -> Option<Vec<u8>> {
    let cap = limit as u64 + 1;
    let mut plain = Vec::new();
    let ok = if gzip {
        flate2::read::MultiGzDecoder::new(body)
            .take(cap)
            .read_to_end(&mut plain)
            .is_ok()
    } else {
        let mut zlib = flate2::read::ZlibDecoder::new(body);
        let whole = |n: u64| n == body.len() as u64;
        let zlib_ok = (&mut zlib).take(cap).read_to_end(&mut plain).is_ok()
            && (plain.len() > limit || whole(zlib.total_in()));
        zlib_ok || {
            plain.clear();
            let mut raw = flate2::read::DeflateDecoder::new(body);
            (&mut raw).take(cap).read_to_end(&mut plain).is_ok()
                && (plain.len() > limit || whole(raw.total_in()))
        }
    };
    (ok && plain.len() <= limit).then_some(plain)
}

/// The request's protocol upgrade: `Ok(None)` without `Upgrade`,
/// `Ok(Some(value))` when every offered protocol is in the target's
/// `allow_upgrade` and `Connection` lists `upgrade`, else why it is refused.
pub fn upgrade_of(head: &RequestHead, allowed: &[String]) -> Result<Option<String>, String> {
    let values: Vec<String> = head
        .all("upgrade")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    let offered: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let name = |t: &str| t.split('/').next().unwrap_or(t).to_ascii_lowercase();
    let refused: Vec<&str> = offered
        .iter()
        .copied()
        .filter(|t| !allowed.iter().any(|a| a.eq_ignore_ascii_case(&name(t))))
        .collect();
    if offered.is_empty() || !refused.is_empty() {
        return Err(format!(
            "protocol upgrade to {:?} is not allowed on this target (allow_upgrade)",
            refused.join(", ")
        ));
    }
    if !head.has_token("connection", "upgrade") {
        return Err("Upgrade without Connection: upgrade".into());
    }
    Ok(Some(offered.join(", ")))
}

/// A query string for the audit trail: each value is masked decoded (so
/// `bob%40example.com` is seen as the email it is), then the whole text
/// once more as it was sent.
/// How much of a held request's body text an approver is shown.
const SHOWN_BODY_MAX: usize = 4096;

fn mask_query(m: &Masker, q: &str) -> String {
    let pairs: Vec<String> = q
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = crate::masking::json::decode(v);
            match m.mask_str(&decoded) {
                (std::borrow::Cow::Owned(masked), n) if n > 0 => format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(
                        &masked,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
                _ => pair.to_owned(),
            }
        })
        .collect();
    m.mask_str(&pairs.join("&")).0.into_owned()
}

/// The header a credential sets, read from its file (see [`Credential`]),
/// and the forms of its secret to look for in responses.
fn credential_header(c: &HttpCredential) -> HeaderOrWhy {
    let secret = crate::proxy::postgres::upstream::read_password(&c.file)?;
    let (name, value) = match c.kind {
        CredentialKind::Bearer => {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(&secret);
            ("Authorization".to_owned(), v)
        }
        CredentialKind::Basic => {
            let mut raw = c.username.clone().unwrap_or_default().into_bytes();
            raw.push(b':');
            raw.extend_from_slice(&secret);
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            );
            ("Authorization".to_owned(), v.into_bytes())
        }
        CredentialKind::Header => (c.header.clone().unwrap_or_default(), secret.clone()),
    };
    let echo = Echo::new(&secret, &value)
        .ok_or_else(|| "the credential's secret cannot be searched for".to_owned())?;
    Ok(CredHeader {
        name,
        value,
        echo: Arc::new(echo),
    })
}

#[cfg(test)]
mod soundness_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
