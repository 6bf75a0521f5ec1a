//! The configuration model: what `/etc/warden/warden.toml` deserialises into.
//!
//! Every table denies unknown keys. Optional keys have the defaults written out
//! in `config/warden.toml`; nothing else is filled in silently.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentSection,
    pub audit: AuditSection,
    pub targets: Vec<Target>,
    pub accounts: Vec<Account>,
    /// `[[grant]]`s: what an account may do on a target (required for
    /// protocol targets, which need upstream credentials and a policy).
    pub grants: Vec<Grant>,
    /// `[policy.NAME]` tables, by name.
    pub policies: std::collections::BTreeMap<String, crate::policy::PolicyConfig>,
    /// `[masking.NAME]` tables, by name.
    pub maskings: std::collections::BTreeMap<String, crate::masking::MaskingConfig>,
    /// `[[forward]]` outputs: where audit events are shipped off the host.
    pub forwards: Vec<Forward>,
    /// `[approvals]`: approvers, hold timeout, webhooks.
    pub approvals: super::approvals::ApprovalsSection,
    /// `[metrics]`: the Prometheus endpoint (off unless `listen` is set).
    pub metrics: super::metrics::MetricsSection,
    /// HTTP grants' `credential`s, by (account, target).
    pub credentials: std::collections::BTreeMap<(String, String), HttpCredential>,
    // --- allow-lists (issue 19) ---
    /// Grants' `mode`/`allowlist`/`on_new`, by (account, target).
    pub allowlists:
        std::collections::BTreeMap<(String, String), crate::policy::allowlist::AllowlistSettings>,
    /// File the configuration was read from (for messages and audit).
    pub source: PathBuf,
    /// Hex SHA-256 of the file's exact bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// IPv4 loopback address the proxy listens on. Default `127.0.0.1:965`, a
    /// port below `ip_unprivileged_port_start`, so only root can bind it.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// IPv6 loopback listener, used for IPv6 targets. Default: `[::1]` with the
    /// port of `listen`, only when an IPv6 target exists. `"off"` disables it
    /// (IPv6 targets are then a config error).
    #[serde(default)]
    pub listen6: Listen6,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "defaults::bpf_pin_dir")]
    pub bpf_pin_dir: PathBuf,
    #[serde(default = "defaults::control_socket")]
    pub control_socket: PathBuf,
    /// cgroup2 path (relative to the cgroup2 mount, starting with `/`) where the
    /// programs are attached, or `"auto"` for the cgroup2 root.
    #[serde(default)]
    pub cgroup_root: CgroupRoot,
    /// cgroup2 path the agent moves itself into at start, or `"auto"`: stay in
    /// the current cgroup when started by systemd (the unit's own cgroup),
    /// otherwise `/warden.agent`.
    #[serde(default)]
    pub agent_cgroup: AgentCgroup,
    /// What enrolled connections to protected targets get while the agent is
    /// down: `"closed"` (refused) or `"open"` (passed through untouched).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// SO_MARK put on the agent's upstream sockets (never redirected). Non-zero.
    #[serde(default = "defaults::upstream_mark")]
    pub upstream_mark: u32,
    /// Upstream connect timeout in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Per-direction relay buffer in bytes (bounds memory per connection).
    #[serde(default = "defaults::relay_buffer_bytes")]
    pub relay_buffer_bytes: usize,
    /// Maximum concurrently relayed connections; beyond it new ones are refused
    /// and audited.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Maximum concurrently relayed connections of one account, so that one
    /// workload cannot take every slot; beyond it new ones are refused and
    /// audited.
    #[serde(default = "defaults::max_connections_per_account")]
    pub max_connections_per_account: usize,
    /// Redirected connects one account may make per second, counted in the
    /// kernel (read at start); beyond it `connect()` fails with EPERM and
    /// the refusal is audited (`connect_rate`). It bounds how fast one
    /// account writes the kernel's connection records, so it cannot push
    /// another account's out while they wait for the proxy's accept.
    #[serde(default = "defaults::max_connects_per_account_per_sec")]
    pub max_connects_per_account_per_sec: u32,
    /// Agent-wide budget for buffered client messages beyond 64 KiB per
    /// session (`proxy::budget`); what would exceed it is refused (53200).
    #[serde(default = "defaults::max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    // --- sockmap (issue 17): how `tcp` targets are relayed.
    /// `"splice"` (default): splice(2) through a pipe; `"sockmap"`
    /// (experimental): in the kernel, falling back to splice(2) when the
    /// relay's eBPF program cannot be attached. Read when a connection
    /// opens.
    #[serde(default)]
    pub tcp_relay: TcpRelay,
    /// Threads of the proxy's async runtime. Not set: half the CPUs, at
    /// least one (the audit writer has its own thread, and the proxy shares
    /// the host with its workloads: measured on 2 CPUs, one worker costs
    /// ~20% less CPU per statement than two, with the same throughput).
    /// Read at start.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// SQLite file; default `<state_dir>/audit.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `"pipelined"` (default), `"strict"` (`"full"`), `"relaxed"` or
    /// `"normal"`.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Most events in one commit.
    #[serde(default = "defaults::batch_max")]
    pub batch_max: usize,
    /// Sign a checkpoint after this many events (0: never by count).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Sign a checkpoint this many seconds after the last one when events
    /// were recorded since (0: never by time). One is always signed at shutdown.
    #[serde(default = "defaults::checkpoint_interval_secs")]
    pub checkpoint_interval_secs: u64,
    /// Keep events this many days (1..=36500); older events that every
    /// forwarder has acknowledged are pruned, at a signed checkpoint.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    /// `a.b.c.d:port` or `[v6]:port`.
    pub address: SocketAddr,
    /// Overrides `agent.fail_mode` for this target.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// Protocol targets: TLS from Warden to the upstream,
    /// `{ mode = "disable" | "require" | "verify-full", ca_file, server_name }`.
    /// Default: `disable` (say so explicitly for anything off-host).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Protocol targets: TLS between the workload and Warden, terminated with
    /// this certificate (PEM chain and key). Without it, a PostgreSQL
    /// SSLRequest is answered `N` (loopback only, the bytes never leave the
    /// host).
    #[serde(default)]
    pub client_tls: Option<ClientTls>,
    /// HTTP targets: the workload speaks plain HTTP to the original address
    /// and Warden originates TLS, verified (`verify-full`: the system roots
    /// or `tls.ca_file`, the name `tls.server_name`, default the address).
    #[serde(default)]
    pub upstream_tls: bool,
    /// HTTP targets: the workload speaks HTTPS; Warden terminates it with a
    /// certificate for the requested SNI issued by its local CA (`warden ca
    /// cert`) and re-originates TLS upstream, verified against the SNI (or
    /// `tls.server_name`).
    #[serde(default)]
    pub intercept_tls: bool,
    /// Protocol targets: largest single protocol message accepted from
    /// either side, in bytes; larger ones end the session with an error.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// HTTP targets: protocols a request may upgrade to (`Upgrade:`
    /// tokens, e.g. `["websocket"]`), after the policy allowed the request.
    /// The upgraded connection is relayed byte for byte: no further policy
    /// or masking applies to it. Default: none (upgrades get 403).
    #[serde(default)]
    pub allow_upgrade: Vec<String>,
}

impl Target {
    /// The TLS Warden uses towards the upstream: `upstream_tls` and
    /// `intercept_tls` mean `verify-full` with the `tls` table's `ca_file`
    /// and `server_name`; otherwise the `tls` table as written.
    pub fn effective_upstream_tls(&self) -> Option<UpstreamTls> {
        if self.upstream_tls || self.intercept_tls {
            Some(UpstreamTls {
                mode: TlsMode::VerifyFull,
                ca_file: self.tls.as_ref().and_then(|t| t.ca_file.clone()),
                server_name: self.tls.as_ref().and_then(|t| t.server_name.clone()),
            })
        } else {
            self.tls.clone()
        }
    }
}

/// `tls = { mode = "verify-full", ca_file = "/etc/warden/pg-ca.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub mode: TlsMode,
    /// CA bundle (PEM) to verify the upstream against; default: the system
    /// roots. Only with `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name the certificate must carry (and SNI); default: the target's IP
    /// address.
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP to the upstream.
    Disable,
    /// TLS, certificate not verified (encryption only; active attackers win).
    Require,
    /// TLS, certificate chain and name verified.
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `client_tls = { cert_file = "...", key_file = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM certificate chain presented to workloads.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), readable only by the agent.
    pub key_file: PathBuf,
}

/// `[[grant]]`: one account on one target, with the upstream identity Warden
/// uses for it and the rules it is held to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub account: String,
    pub target: String,
    /// Upstream database the account works in; a client may ask for this
    /// one (or none, meaning this one) and no other.
    #[serde(default)]
    pub database: Option<String>,
    /// Role Warden authenticates as upstream.
    #[serde(default)]
    pub upstream_user: Option<String>,
    /// File holding that role's password (first line), readable only by the
    /// agent; never sent by, or shown to, the workload.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of the `[policy.NAME]` the account's statements are held to.
    #[serde(default)]
    pub policy: Option<String>,
    /// Name of the `[masking.NAME]` applied to what comes back.
    #[serde(default)]
    pub masking: Option<String>,
    /// The grant is read-only: the upstream session is started with
    /// `default_transaction_read_only = on` and a client may not turn it off.
    #[serde(default)]
    pub read_only: bool,
}

/// `credential = { kind = "bearer", file = "/etc/warden/secrets/api" }`,
/// `{ kind = "basic", username = "svc", file = "..." }` or
/// `{ kind = "header", header = "X-Api-Key", file = "..." }` in a
/// `[[grant]]` on an HTTP target: the credential Warden sets on every
/// request (the workload's own `Authorization`, `Proxy-Authorization` and
/// `Cookie` headers are always removed). The file's first line is the
/// secret; it must be owned by the agent and mode 0600. Kept beside the
/// grant in [`Config::credentials`] (keyed by account and target).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCredential {
    pub kind: CredentialKind,
    pub file: PathBuf,
    /// `basic` only: the user name.
    #[serde(default)]
    pub username: Option<String>,
    /// `header` only: the header's name.
    #[serde(default)]
    pub header: Option<String>,
    /// What becomes of the credentials the upstream issues in exchange for
    /// this one (session cookies, tokens). Default `hold`.
    #[serde(default)]
    pub issued: IssuedCredentials,
}

/// `issued = "hold" | "drop" | "pass"` in a `credential`: a session cookie
/// or token the upstream derives from the injected credential is a
/// credential of its own, usable without Warden (on other hosts of the
/// cookie's domain, or after the workload leaves its cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuedCredentials {
    /// `Set-Cookie` is kept by Warden (one jar per grant) and sent back on
    /// the grant's later requests, so upstream sessions still work;
    /// token-bearing response headers are removed and token members of
    /// JSON bodies redacted: the workload never holds them.
    #[default]
    Hold,
    /// As `hold`, but cookies are dropped instead of kept.
    Drop,
    /// Passed to the workload as the upstream sent them (it can then talk
    /// to the upstream without Warden).
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(username:secret)`.
    Basic,
    /// `<header>: <secret>`.
    Header,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    /// systemd units whose cgroup belongs to this account, e.g.
    /// `orders-api.service`; resolved to the unit's cgroup2 path under its
    /// slice, and re-resolved when the unit restarts.
    #[serde(default)]
    pub units: Vec<String>,
    /// cgroup2 paths relative to the cgroup2 mount, e.g. `/system.slice/x.service`.
    #[serde(default)]
    pub cgroups: Vec<String>,
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Names of `[[target]]`s this account may reach.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Executable pin: connections whose process runs another binary are
    /// refused (`identity_mismatch`).
    #[serde(default)]
    pub exe: Option<ExePin>,
    /// Where the account's identity token comes from.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

/// `exe = { path = "/usr/bin/orders-api", sha256 = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExePin {
    /// Absolute path of the executable (`/proc/<pid>/exe`).
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the executable's bytes.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `identity = { kind = "token_file", … }` or `identity = { kind = "mint" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub kind: IdentityKind,
    /// `token_file`: the JWT on disk (re-read when it changes).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `token_file`: JWKS on disk; exactly one of `jwks_file`, `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// `token_file`: JWKS over HTTPS.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// `token_file`: CA bundle for `jwks_url` (default: the system roots).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// `token_file`: required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (`token_file`), or the `aud` of minted tokens (`mint`).
    #[serde(default)]
    pub audience: Option<String>,
    /// `token_file`: exact `sub` the token must carry.
    #[serde(default)]
    pub subject: Option<String>,
    /// `token_file`: `sub` must be `spiffe://<domain>/…`.
    #[serde(default)]
    pub spiffe_trust_domain: Option<String>,
    /// `token_file`: accepted `alg`s (RS256, RS384, RS512, PS256, ES256, ES384, EdDSA).
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// `token_file`: clock leeway in seconds (at most 60).
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// `token_file`: least time between two JWKS fetches caused by an unknown `kid`.
    #[serde(default = "defaults::refresh_cooldown_secs")]
    pub refresh_cooldown_secs: u64,
    /// `token_file`: check the token once per connection (default) or before
    /// every command of protocols that have commands.
    #[serde(default)]
    pub recheck: Recheck,
    /// `mint`: lifetime of minted tokens in seconds.
    #[serde(default = "defaults::mint_ttl_secs")]
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    TokenFile,
    Mint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recheck {
    #[default]
    PerConnection,
    PerCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Closed,
    Open,
}

/// `agent.tcp_relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpRelay {
    /// In the kernel (sk_skb verdict over a sockhash). Not the default: one
    /// CI run lost the tail of an 8 MiB echo through it (7,463,801 bytes
    /// of 8,388,608 arrived), and it was slower than splice in the only
    /// bench run (load ~20).
    Sockmap,
    #[default]
    Splice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Postgres,
    Mysql,
    Http,
}

/// `[audit] synchronous`: the durability of audit records, named by what
/// each promises (see `audit::store::SyncMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every record on disk before its effect (`full` is the old name).
    #[serde(alias = "full")]
    Strict,
    /// Reads: recorded in the WAL before forwarding, on disk before the
    /// answer is released; everything else as `strict`.
    #[default]
    Pipelined,
    /// Recorded in the WAL before the effect, fsynced on an interval.
    Relaxed,
    /// Recorded in the WAL; fsynced at SQLite's WAL checkpoints.
    Normal,
}

/// `"auto"` or a cgroup2 path starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CgroupRoot {
    #[default]
    Auto,
    Path(String),
}

/// `"auto"` or a cgroup2 path starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentCgroup {
    #[default]
    Auto,
    Path(String),
}

/// `"auto"`, `"off"` or an `[addr]:port`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Listen6 {
    #[default]
    Auto,
    Off,
    Addr(SocketAddr),
}

impl Default for AgentSection {
    /// The same values serde fills in for an empty `[agent]` table.
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            listen6: Listen6::default(),
            state_dir: defaults::state_dir(),
            bpf_pin_dir: defaults::bpf_pin_dir(),
            control_socket: defaults::control_socket(),
            cgroup_root: CgroupRoot::default(),
            agent_cgroup: AgentCgroup::default(),
            fail_mode: FailMode::default(),
            upstream_mark: defaults::upstream_mark(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            relay_buffer_bytes: defaults::relay_buffer_bytes(),
            max_connections: defaults::max_connections(),
            max_connections_per_account: defaults::max_connections_per_account(),
            max_connects_per_account_per_sec: defaults::max_connects_per_account_per_sec(),
            max_buffered_bytes: defaults::max_buffered_bytes(),
            tcp_relay: TcpRelay::default(),
            worker_threads: None,
        }
    }
}

impl Default for AuditSection {
    /// The same values serde fills in for an empty `[audit]` table.
    fn default() -> Self {
        Self {
            path: None,
            synchronous: Synchronous::default(),
            batch_max: defaults::batch_max(),
            checkpoint_every: defaults::checkpoint_every(),
            checkpoint_interval_secs: defaults::checkpoint_interval_secs(),
            retention_days: defaults::retention_days(),
        }
    }
}

impl Protocol {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Http => "http",
        }
    }
}

impl FailMode {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

impl CgroupRoot {
    /// The configured path, or `None` for `"auto"`.
    pub fn path(&self) -> Option<&str> {
        match self {
            CgroupRoot::Auto => None,
            CgroupRoot::Path(p) => Some(p),
        }
    }
}

impl AgentCgroup {
    /// The configured path, or `None` for `"auto"`.
    pub fn path(&self) -> Option<&str> {
        match self {
            AgentCgroup::Auto => None,
            AgentCgroup::Path(p) => Some(p),
        }
    }
}

/// `[[forward]]`: one output that ships every audit event (checkpoints
/// included) off the host, at least once, with its own cursor in the store.
/// Which keys apply depends on `kind`; validation rejects the others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// Unique name; also the key of the output's cursor in the store.
    pub name: String,
    pub kind: ForwardKind,
    /// How each event is written: the stored OCSF bytes, ECS JSON or CEF.
    #[serde(default)]
    pub format: ForwardFormat,
    /// `https`, `splunk-hec`, `elasticsearch`: an `https://` URL (for HEC
    /// and Elasticsearch the base URL; the API path is appended).
    #[serde(default)]
    pub url: Option<String>,
    /// `syslog`: `host:port` of the receiver.
    #[serde(default)]
    pub address: Option<String>,
    /// `syslog`: `tls` (RFC 5425, default), `tcp` or `udp` (labs only).
    #[serde(default)]
    pub transport: Option<SyslogTransport>,
    /// `file`: the NDJSON file written (rotated next to itself).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// CA bundle (PEM) the collector's certificate must chain to; default:
    /// the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// `syslog` over TLS: the name the receiver's certificate must carry
    /// (and SNI); default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `https`, `elasticsearch`: `none`, `bearer` or `apikey` (token from
    /// `token_file`), `basic` (`user:password` from `credentials_file`).
    #[serde(default)]
    pub auth: ForwardAuth,
    /// Bearer/API-key token (`auth`), or the HEC token (`splunk-hec`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `auth = "basic"`: first line `user:password`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// HTTP outputs: gzip request bodies.
    #[serde(default = "defaults::forward_gzip")]
    pub gzip: bool,
    /// `elasticsearch`: index (or data stream) written; `splunk-hec`:
    /// optional index of every event.
    #[serde(default)]
    pub index: Option<String>,
    /// `splunk-hec`: sourcetype of every event; default `warden:<format>`.
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// `splunk-hec`: wait for indexer acknowledgment before advancing.
    #[serde(default)]
    pub ack: bool,
    /// `splunk-hec` with `ack`: give up waiting and resend after this long.
    #[serde(default = "defaults::forward_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// `syslog`: facility name (`kern` .. `local7`).
    #[serde(default = "defaults::forward_facility")]
    pub facility: String,
    /// `file`: rotate when the file would grow past this many bytes.
    #[serde(default = "defaults::forward_rotate_bytes")]
    pub rotate_bytes: u64,
    /// `file`: rotated files kept (`path.1` newest .. `path.N`).
    #[serde(default = "defaults::forward_keep_files")]
    pub keep_files: u32,
    /// Most events per batch.
    #[serde(default = "defaults::forward_batch_max_events")]
    pub batch_max_events: usize,
    /// Most bytes (formatted, before compression) per batch; one larger
    /// event still goes alone.
    #[serde(default = "defaults::forward_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A batch that is not full is sent this long after its first event
    /// was read.
    #[serde(default = "defaults::forward_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Network timeout of one request or connection, in seconds.
    #[serde(default = "defaults::forward_timeout_secs")]
    pub timeout_secs: u64,
    /// Longest pause between two retries, in seconds.
    #[serde(default = "defaults::forward_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Warn (log and status) when more events than this wait.
    #[serde(default = "defaults::forward_backlog_warn")]
    pub backlog_warn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardKind {
    Https,
    SplunkHec,
    Elasticsearch,
    Syslog,
    File,
}

impl ForwardKind {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardKind::Https => "https",
            ForwardKind::SplunkHec => "splunk-hec",
            ForwardKind::Elasticsearch => "elasticsearch",
            ForwardKind::Syslog => "syslog",
            ForwardKind::File => "file",
        }
    }

    /// Kinds that speak HTTP (and take `url`, `gzip`, auth).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ForwardKind::Https | ForwardKind::SplunkHec | ForwardKind::Elasticsearch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFormat {
    /// The stored OCSF 1.8 JSON bytes, unchanged.
    #[default]
    Ocsf,
    /// Elastic Common Schema JSON.
    Ecs,
    /// ArcSight Common Event Format lines.
    Cef,
}

impl ForwardFormat {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardFormat::Ocsf => "ocsf",
            ForwardFormat::Ecs => "ecs",
            ForwardFormat::Cef => "cef",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Tls,
    Tcp,
    Udp,
}

impl SyslogTransport {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransport::Tls => "tls",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardAuth {
    #[default]
    None,
    Bearer,
    Basic,
    Apikey,
}

impl ForwardAuth {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardAuth::None => "none",
            ForwardAuth::Bearer => "bearer",
            ForwardAuth::Basic => "basic",
            ForwardAuth::Apikey => "apikey",
        }
    }
}

/// Deserialises a string, with `expecting` as the description in type errors.
fn string_with<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct StrVisitor(&'static str);
    impl Visitor<'_> for StrVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
    d.deserialize_str(StrVisitor(expecting))
}

const CGROUP_EXPECTING: &str = "\"auto\" or a cgroup2 path starting with \"/\"";

/// `"auto"` or a string starting with `/`; the path's shape is checked by validation.
fn auto_or_cgroup_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string_with(d, CGROUP_EXPECTING)?;
    if s == "auto" {
        Ok(None)
    } else if s.starts_with('/') {
        Ok(Some(s))
    } else {
        Err(de::Error::invalid_value(
            Unexpected::Str(&s),
            &CGROUP_EXPECTING,
        ))
    }
}

impl<'de> Deserialize<'de> for CgroupRoot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_cgroup_path(d)?.map_or(CgroupRoot::Auto, CgroupRoot::Path))
    }
}

impl<'de> Deserialize<'de> for AgentCgroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_cgroup_path(d)?.map_or(AgentCgroup::Auto, AgentCgroup::Path))
    }
}

impl<'de> Deserialize<'de> for Listen6 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const EXPECTING: &str = "\"auto\", \"off\" or an \"[IPv6]:port\" address";
        let s = string_with(d, EXPECTING)?;
        match s.as_str() {
            "auto" => Ok(Listen6::Auto),
            "off" => Ok(Listen6::Off),
            other => other
                .parse::<SocketAddr>()
                .map(Listen6::Addr)
                .map_err(|_| de::Error::invalid_value(Unexpected::Str(other), &EXPECTING)),
        }
    }
}

pub mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 965))
    }
    pub fn state_dir() -> PathBuf {
        PathBuf::from("/var/lib/warden")
    }
    pub fn bpf_pin_dir() -> PathBuf {
        PathBuf::from("/sys/fs/bpf/warden")
    }
    pub fn control_socket() -> PathBuf {
        PathBuf::from("/run/warden/control.sock")
    }
    pub fn upstream_mark() -> u32 {
        0x5744_0001
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn relay_buffer_bytes() -> usize {
        64 * 1024
    }
    pub fn algorithms() -> Vec<String> {
        ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
    pub fn leeway_secs() -> u64 {
        30
    }
    pub fn refresh_cooldown_secs() -> u64 {
        30
    }
    pub fn mint_ttl_secs() -> u64 {
        300
    }
    pub fn max_message_bytes() -> usize {
        16 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_connections_per_account() -> usize {
        1_000
    }
    pub fn max_connects_per_account_per_sec() -> u32 {
        warden_common::CONNECTS_PER_ACCOUNT_PER_SEC
    }
    pub fn max_buffered_bytes() -> usize {
        crate::proxy::budget::DEFAULT_LIMIT
    }
    pub fn checkpoint_every() -> u64 {
        1000
    }
    pub fn checkpoint_interval_secs() -> u64 {
        60
    }
    pub fn batch_max() -> usize {
        256
    }
    pub fn retention_days() -> u32 {
        400
    }
    pub fn forward_gzip() -> bool {
        true
    }
    pub fn forward_ack_timeout_secs() -> u64 {
        300
    }
    pub fn forward_facility() -> String {
        "local0".to_owned()
    }
    pub fn forward_rotate_bytes() -> u64 {
        100 * 1024 * 1024
    }
    pub fn forward_keep_files() -> u32 {
        5
    }
    pub fn forward_batch_max_events() -> usize {
        1000
    }
    pub fn forward_batch_max_bytes() -> usize {
        1024 * 1024
    }
    pub fn forward_batch_wait_ms() -> u64 {
        1000
    }
    pub fn forward_timeout_secs() -> u64 {
        30
    }
    pub fn forward_retry_max_secs() -> u64 {
        60
    }
    pub fn forward_backlog_warn() -> u64 {
        100_000
    }
}
