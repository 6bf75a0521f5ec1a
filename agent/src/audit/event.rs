//! The audit event model: what happened to one connection, as data.
//!
//! Events are encoded to OCSF 1.8 JSON by `audit::ocsf` when they are
//! committed; the exact stored bytes are what later issues hash-chain.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Process-unique id of one proxied connection (also the audit session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// OCSF Network Activity activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnActivity {
    /// A connection was accepted and relayed to its target (OCSF activity_id 1).
    Open,
    /// A relayed connection ended (OCSF activity_id 2).
    Close,
    /// A connection was refused by Warden (OCSF activity_id 5).
    Refuse,
}

/// What Warden decided for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Refused,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
        }
    }
}

/// Who made the connection, as recorded by the kernel at connect() time and
/// completed from /proc where still possible. Fields that could not be learnt
/// are `None`, never guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: Option<u32>,
    pub tgid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Kernel `comm` (task name).
    pub comm: Option<String>,
    /// Path of the executable (`/proc/<tgid>/exe`).
    pub exe: Option<String>,
    pub cgroup_id: Option<u64>,
    /// cgroup2 path relative to the cgroup2 mount.
    pub cgroup_path: Option<String>,
    /// Lowercase hex SHA-256 of the running executable.
    #[serde(default)]
    pub exe_sha256: Option<String>,
    /// Command line (arguments joined by spaces, cut at 1 KiB).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Process start, nanoseconds since boot.
    #[serde(default)]
    pub start_boot_ns: Option<u64>,
    /// The pid belonged to another process by the time Warden looked: the
    /// /proc facts were discarded and only the kernel's record is kept.
    #[serde(default)]
    pub pid_reused: bool,
    /// systemd unit the process runs in (from its cgroup path).
    #[serde(default)]
    pub unit: Option<String>,
}

/// The validated identity token bound to a connection (never the token of a
/// `token_file` source itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    /// `token_file` or `mint`.
    pub source: String,
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    pub alg: String,
    /// For `mint`: the token Warden minted for this connection, a signed
    /// statement of who called that a collector verifies with the keys
    /// `warden identity jwks` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}

/// One connection-level audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub activity: ConnActivity,
    pub decision: Decision,
    /// Machine-readable reason for refusals and abnormal closes, e.g.
    /// `unredirected`, `target_not_granted`, `unknown_account`,
    /// `unknown_target`, `upstream_connect_failed`, `connection_limit`,
    /// `audit_unavailable`. `None` for ordinary opens and closes.
    pub reason: Option<String>,
    /// Human-readable detail for the reason (no secrets, no payload bytes).
    pub detail: Option<String>,
    pub session: SessionId,
    pub account: Option<String>,
    pub target: Option<String>,
    /// `tcp` for now; later `postgres`, `mysql`, `http`.
    pub protocol: String,
    pub process: ProcessInfo,
    /// The workload's side of the connection as the proxy saw it.
    pub client: SocketAddr,
    /// Where the workload wanted to go (`None` when the kernel left no record).
    pub orig_dst: Option<SocketAddr>,
    /// Bytes from client to upstream (set on close).
    pub bytes_up: u64,
    /// Bytes from upstream to client (set on close).
    pub bytes_down: u64,
    /// Connection duration in milliseconds (set on close).
    pub duration_ms: u64,
    /// The account's identity token, when the account has an identity source
    /// and the token validated.
    #[serde(default)]
    pub identity: Option<TokenIdentity>,
}

/// What happened to the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigAction {
    /// The configuration the agent started with.
    Load,
    /// A configuration loaded while running, replacing the previous one.
    Reload,
}

impl ConfigAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigAction::Load => "load",
            ConfigAction::Reload => "reload",
        }
    }
}

/// A configuration the agent loaded: a chain event of its own, so what
/// Warden enforced at any time can be proven from the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// When it took effect, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The file it was read from.
    pub path: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub action: ConfigAction,
    /// Free text, e.g. what changed or who asked for the reload (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a reload: the sha256 of the configuration in force before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    /// Whether it took effect; a failed reload changed nothing.
    #[serde(default)]
    pub outcome: ConfigOutcome,
    /// Why a reload failed: every problem, one per line (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether a configuration change took effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigOutcome {
    /// In force from `time_ms` on.
    #[default]
    Applied,
    /// Refused (invalid, needs a restart, or could not be built): the
    /// previous configuration stayed in force.
    Failed,
}

impl ConfigOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigOutcome::Applied => "applied",
            ConfigOutcome::Failed => "failed",
        }
    }
}

/// A retention prune: events `from_seq..=through_seq` were deleted from the
/// store. Written by the writer as a chain event in the same transaction as
/// the deletion, so removal is visible in the trail; the checkpoint of
/// `through_seq` (kept) anchors the chain that remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneRecord {
    /// When the prune ran, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// First seq removed.
    pub from_seq: u64,
    /// Last seq removed; the checkpoint of this seq is kept.
    pub through_seq: u64,
    /// Rows removed.
    pub events: u64,
    /// Why: `retention`.
    pub reason: String,
    /// The retention in force, in days.
    pub retention_days: u64,
    /// Every removed event is older than this (ms since the Unix epoch).
    pub cutoff_ms: i64,
    /// Lowest seq acknowledged by every forwarder; absent when no
    /// forwarder holds events back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_through: Option<u64>,
    /// Hex head hash of the kept checkpoint of `through_seq`.
    pub checkpoint_head_hash: String,
}

/// Which half of a statement's life a [`StatementEvent`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementPhase {
    /// The decision, committed BEFORE an allowed statement is forwarded
    /// (audit before effect). Refused statements only have this phase.
    Request,
    /// What came back: rows, masking, duration, error. Recorded after the
    /// upstream answered; not awaited by the data path.
    Result,
}

impl StatementPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementPhase::Request => "request",
            StatementPhase::Result => "result",
        }
    }
}

/// What the policy decided for one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementDecision {
    /// Forwarded to the upstream.
    Allowed,
    /// A `block` rule matched.
    Blocked,
    /// No rule allowed it (the policy's default).
    Denied,
    /// An `approve` rule matched and approvals are not available (or the
    /// approval was refused or timed out).
    ApprovalRequired,
    /// Refused before any rule: the statement could not be parsed or
    /// classified, or a protocol rule was broken (fail closed).
    Rejected,
}

impl StatementDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementDecision::Allowed => "allowed",
            StatementDecision::Blocked => "blocked",
            StatementDecision::Denied => "denied",
            StatementDecision::ApprovalRequired => "approval_required",
            StatementDecision::Rejected => "rejected",
        }
    }
}

/// The masked result summary kept with a statement's `result` event (for
/// `warden audit replay`): column names and the first rows, masked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSummary {
    pub columns: Vec<String>,
    /// The first few rows, values already masked (`None` = SQL NULL or a
    /// binary value that is not text).
    pub sample: Vec<Vec<Option<String>>>,
}

/// One database statement (OCSF Datastore Activity 6005): who ran what on
/// which target, what Warden decided and why, and (in the `result` phase)
/// what came back. Statement text and every value in it are masked by the
/// masking detectors before they get here: nothing unmasked is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub phase: StatementPhase,
    pub decision: StatementDecision,
    /// The connection this statement ran on (ties to its connection events).
    pub session: SessionId,
    /// 1-based position of the statement within its session; the request and
    /// the result of one statement share it.
    pub statement_seq: u64,
    pub account: String,
    pub target: String,
    /// `postgres` (later `mysql`).
    pub protocol: String,
    /// Upstream database the statement ran in.
    pub database: String,
    /// Upstream role Warden authenticated as.
    pub upstream_user: String,
    /// The caller, as recorded for the connection.
    pub process: ProcessInfo,
    #[serde(default)]
    pub identity: Option<TokenIdentity>,
    /// How it was sent: `simple` (Query), `extended` (Parse/Bind/Execute),
    /// `function_call`, `prepared` (SQL EXECUTE of a PREPAREd statement).
    pub via: String,
    /// Statement text with literals and sensitive values masked.
    pub statement: String,
    /// Most severe statement class: read, write, ddl, privileged, unknown.
    pub class: String,
    /// Normalised `schema.table` names it touches.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Normalised function names it calls.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Policy that decided.
    pub policy: Option<String>,
    /// The rule that decided (`rules[2]` or its name); `None` = default.
    pub rule: Option<String>,
    /// Why, in words (for refusals: what the client was told).
    pub reason: Option<String>,
    /// Result phase: rows returned or affected.
    #[serde(default)]
    pub rows: Option<u64>,
    /// Result phase: values masked in what was returned.
    #[serde(default)]
    pub values_masked: Option<u64>,
    /// Result phase: time from forwarding to completion, microseconds.
    #[serde(default)]
    pub duration_us: Option<u64>,
    /// Result phase: the command tag (`SELECT 3`, `UPDATE 1`).
    #[serde(default)]
    pub command_tag: Option<String>,
    /// SQLSTATE of the error the client received (ours or the upstream's).
    #[serde(default)]
    pub sqlstate: Option<String>,
    /// Upstream error message, masked.
    #[serde(default)]
    pub error: Option<String>,
    /// Result phase: columns and first rows, masked.
    #[serde(default)]
    pub result: Option<ResultSummary>,
    // --- allow-lists (issue 19) ---
    /// Fingerprint id, the grant's allow-list mode and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
}

/// One step in the life of an approval request or grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// A statement matched an `approve` rule and is held.
    Requested,
    /// An approver let it through (with `grant_id`: and created a grant).
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody decided within the timeout (a refusal).
    TimedOut,
    /// The client cancelled or went away while it was held.
    Withdrawn,
    /// A statement matched a live grant and went through without a hold.
    GrantUsed,
    /// A grant was revoked before it expired.
    Revoked,
    /// Someone tried to decide or revoke and was not allowed to (their own
    /// request, not an approver, reason missing).
    DecisionRefused,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Requested => "requested",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::TimedOut => "timed_out",
            ApprovalStatus::Withdrawn => "withdrawn",
            ApprovalStatus::GrantUsed => "grant_used",
            ApprovalStatus::Revoked => "revoked",
            ApprovalStatus::DecisionRefused => "decision_refused",
        }
    }

    /// Every status, for parsing and tests.
    pub const ALL: [ApprovalStatus; 8] = [
        ApprovalStatus::Requested,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::TimedOut,
        ApprovalStatus::Withdrawn,
        ApprovalStatus::GrantUsed,
        ApprovalStatus::Revoked,
        ApprovalStatus::DecisionRefused,
    ];
}

/// Who decided (or tried to): the approvals socket's peer as the kernel
/// reported it (SO_PEERCRED) and its groups from `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverIdentity {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// User name of `uid`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Primary and supplementary groups, by name (or number when unnamed).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An approval transition (OCSF User Access Management 3005): what was
/// asked, by whom, for what, and what became of it. Statement text is
/// masked by the protocol handler before it gets here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub status: ApprovalStatus,
    /// The request this step belongs to (absent for a revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The grant created (approved with a duration), used or revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    pub account: String,
    pub target: String,
    /// `postgres` (later `mysql`, `http`).
    pub protocol: String,
    /// The connection the statement was held on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// The requesting process, as recorded for its connection.
    #[serde(default)]
    pub process: ProcessInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<TokenIdentity>,
    /// The statement, masked.
    pub statement: String,
    /// Hex SHA-256 of the statement with its literals normalised.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Risk class (the statement's class: write, ddl, ...).
    pub risk: String,
    /// When the request was made (ms since the Unix epoch).
    pub requested_ms: i64,
    /// Requested: when it times out; with a grant: when the grant ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Who decided, revoked or tried to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<ApproverIdentity>,
    /// The approver's reason, or why the step happened (timeout, cancel,
    /// refusal of a decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `approve --learn`: the fingerprint id added to the grant's
    /// allow-list file with this approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<String>,
}

// --- HTTP API activity -------------------------------------------------------

/// One HTTP request (OCSF API Activity 6003): who called which target with
/// what, what Warden decided and why, and (in the `result` phase) what came
/// back. The query and header values are masked by the caller; only
/// allow-listed headers are kept, never credentials or cookies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// `request` is committed before the request is forwarded; `result`
    /// after the response went back.
    pub phase: StatementPhase,
    pub decision: StatementDecision,
    pub session: SessionId,
    /// 1-based position of the request on its connection.
    pub request_seq: u64,
    pub account: String,
    pub target: String,
    pub process: ProcessInfo,
    #[serde(default)]
    pub identity: Option<TokenIdentity>,
    pub method: String,
    /// The normalised path (what the policy matched and what was forwarded).
    pub path: String,
    /// The query string, masked.
    #[serde(default)]
    pub query: Option<String>,
    /// Allow-listed request headers (name lower-case, value masked).
    #[serde(default)]
    pub request_headers: Vec<(String, String)>,
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub reason: Option<String>,
    /// Result phase: the status the client received.
    #[serde(default)]
    pub status: Option<u16>,
    /// Request bytes read from the workload (head and body).
    #[serde(default)]
    pub bytes_in: u64,
    /// Response bytes written to the workload.
    #[serde(default)]
    pub bytes_out: u64,
    /// Result phase: from the request head to the end of the response.
    #[serde(default)]
    pub duration_us: Option<u64>,
    /// Result phase: values masked in the response body.
    #[serde(default)]
    pub values_masked: Option<u64>,
    /// Allow-listed response headers (name lower-case, value masked).
    #[serde(default)]
    pub response_headers: Vec<(String, String)>,
    /// What went wrong upstream, if anything (masked).
    #[serde(default)]
    pub error: Option<String>,
    // --- allow-lists (issue 19) ---
    /// Fingerprint id, the grant's allow-list mode and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
}
