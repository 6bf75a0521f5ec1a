//! OCSF 1.8 encoding of audit events: connection events (Network Activity,
//! class 4001), database statements (Datastore Activity, 6005),
//! configuration changes (Device Config State Change, 5019), and the
//! chain's own events, checkpoints and retention prunes (Application
//! Lifecycle, 6002).
//!
//! Each event is encoded exactly once and the resulting bytes are stored
//! verbatim; they are what the hash chain covers. Producers encode their
//! event into a [`SeqTemplate`] (everything but the seq) and the writer
//! splices in the seq it assigns; the bytes are identical to serializing
//! the whole document with that seq. The encoding is deterministic: fixed
//! struct field order, absent values are omitted (never `null`).
//!
//! Connection mapping:
//! - `activity_id` 1 Open / 2 Close / 5 Refuse, `type_uid = 400100 + activity_id`;
//! - allowed: severity 1 Informational, status Success, action Allowed,
//!   disposition Allowed; refused: severity 3 Medium, status Failure,
//!   action Denied, disposition Blocked; `reason`/`detail` go to
//!   `status_code`/`status_detail`;
//! - `metadata.uid = "<chain_id>:<seq>"` (the downstream idempotency key),
//!   `metadata.sequence = seq`, `metadata.correlation_uid` = session;
//! - `src_endpoint` = the client as the proxy saw it, `dst_endpoint` = the
//!   original destination with `svc_name` = target name;
//! - `actor.process` = pid, comm (`name`), `cmd_line`, exe (`file.path`,
//!   with its SHA-256 in `file.hashes`), uid (OCSF user uids are strings);
//! - the identity token's claims (iss, sub, aud, jti, exp, kid, alg; for
//!   minted tokens the signed token itself as `attestation`) are under
//!   `unmapped.warden.identity`, the unit and process start under
//!   `unmapped.warden`;
//! - everything Warden-specific (account, decision, gid, tgid, cgroup, ...) is
//!   under `unmapped.warden`.
//!
//! Statement mapping (one event when Warden decided, the *request* phase,
//! and one when the upstream answered, the *result* phase; both carry the
//! same `statement_seq`):
//! - class 6005 Datastore Activity, category 6 Application Activity,
//!   `activity_id` 4 Query for both phases, `type_uid` 600504; the phase is
//!   `unmapped.warden.statement.phase` (`request`/`result`);
//! - allowed: severity 1 Informational, action Allowed, disposition
//!   Allowed; every refusal (blocked, denied, approval_required, rejected):
//!   severity 3 Medium, action Denied, disposition Blocked (action and
//!   disposition as for connections, security-control profile); `status`
//!   Success when allowed and no error came back, else Failure, with the
//!   SQLSTATE as `status_code` and the (masked) error, or for a refusal the
//!   reason, as `status_detail`; `message` = e.g. "write statement blocked";
//! - `metadata` as for connections, `correlation_uid` = session;
//! - `src_endpoint` = `hostname` (the host, when known: the workload runs
//!   there) and `name` = the account; the client's address is on the
//!   connection events of the same `correlation_uid`; `dst_endpoint` =
//!   `svc_name` target; `actor.process` as for connections;
//! - `database` = `name` (the upstream database), `type_id` 1 Relational;
//!   `table.name` when the statement touches exactly one table; `type_id`
//!   1 Database; `query_info` = `query_string` (the statement, masked by
//!   the caller), `uid` = `"<session>:<statement_seq>"`; `duration` (ms)
//!   in the result phase;
//! - `unmapped.warden` = `account`, `target`, `decision` (a
//!   `StatementDecision`), `reason`, `session`, `protocol`, the process
//!   facts and `identity` as for connections, and `statement` = `phase`,
//!   `statement_seq`, `via`, `class`, `tables`, `functions`, `policy`,
//!   `rule`, `upstream_user`, and in the result phase `rows`,
//!   `values_masked`, `duration_us`, `command_tag`, `sqlstate`, `error`,
//!   `result` (`columns`, `sample`: masked rows, where SQL NULL is JSON
//!   `null`, the only nulls Warden writes); `unmapped.warden.seq` = seq;
//! - store columns: `class_uid` 6005, `activity` "statement" (request) or
//!   "result", `decision` = the statement decision, `account`, `target`,
//!   `session`, `reason`.
//!
//! Configuration change mapping (each load and reload of the configuration
//! file is evidence of what Warden enforced from then on):
//! - class 5019 Device Config State Change, category 5 Discovery,
//!   `activity_id` 99 Other with `activity_name` "Load" or "Reload",
//!   `type_uid` 501999; severity 1 Informational, status Success;
//! - `time` = when it took effect; `message` = `"configuration loaded from
//!   PATH (sha256 HEX)"`; `device` = the host (when known);
//! - `metadata` as for connections, without `correlation_uid`;
//! - `unmapped.warden.config` = `action` (`load`/`reload`), `path`,
//!   `sha256` (of the file's bytes), `detail` when given;
//!   `unmapped.warden.seq` = seq;
//! - store columns: `class_uid` 5019, `activity` "config", `decision`
//!   "n/a", `session` "", `reason` = the action, no account/target.
//!
//! Checkpoint mapping (a signed checkpoint travels in the stream as an event
//! of its own, so forwarders ship it off-host with the events it covers):
//! - class 6002 Application Lifecycle, category 6 Application Activity,
//!   `activity_id` 99 Other with `activity_name` "Checkpoint",
//!   `type_uid` 600299; severity 1 Informational, status Success;
//! - `time` = the checkpoint's `time_ms`; `app` = the Warden product;
//!   `message` = "audit chain checkpoint at seq N";
//! - `metadata` as for connections (`uid = "<chain_id>:<seq>"`, `sequence`),
//!   without `correlation_uid`;
//! - `unmapped.warden.checkpoint` = the signed body's fields (`origin`,
//!   `size`, `head_hash`, `time_ms`, `prev_checkpoint_hash`, `key_id`) for
//!   searching, plus `body` (the exact signed bytes as a string),
//!   `signature` and `public_key` (hex): a collector verifies `signature`
//!   over `body` with `public_key`, checks that the key id is the first 16
//!   bytes of SHA-256(public_key), and compares `head_hash` with the hash of
//!   event `size` it received. `unmapped.warden.seq` = seq;
//! - store columns: `class_uid` 6002, `activity` "checkpoint", `decision`
//!   "n/a", `session` "", no account/target/reason.
//!
//! Prune mapping (retention deleted old events; the deletion itself stays
//! in the trail):
//! - class 6002 Application Lifecycle, `activity_id` 99 Other with
//!   `activity_name` "Prune", `type_uid` 600299; severity 1, status
//!   Success; `time` = when the prune ran; `message` = "audit events
//!   A..=B removed (retention, retention N days)";
//! - `unmapped.warden.prune` = [`PruneRecord`] (`from_seq`, `through_seq`,
//!   `events`, `reason`, `retention_days`, `cutoff_ms`, `acked_through`,
//!   `checkpoint_head_hash`); `unmapped.warden.seq` = seq;
//! - store columns: `class_uid` 6002, `activity` "prune", `decision` "n/a",
//!   `session` "", `reason` = the prune's reason (`retention`).
//!
//! Approval mapping (just-in-time approvals, `approval/`: each transition
//! of a request or grant is its own chain event). OCSF has no "approval
//! request" class; a held statement that a human lets through is a
//! privilege granted to the account for that statement (or, with a grant,
//! for that statement fingerprint for a while), so the closest fit is
//! class 3005 User Access Management (category 3 Identity & Access
//! Management):
//! - `activity_id` 1 Assign Privileges for `approved`, 2 Revoke Privileges
//!   for `revoked`, 99 Other for the rest, with `activity_name` the status
//!   (`Requested`, `Denied`, `Timed Out`, `Withdrawn`, `Grant Used`,
//!   `Decision Refused`); `type_uid` = 300500 + activity_id;
//! - approved/grant_used: severity 1, status Success; requested: severity 2
//!   Low, status Other; denied/timed_out/withdrawn/revoked: severity 1,
//!   status Failure (the statement did not run); decision_refused:
//!   severity 3 Medium, status Failure;
//! - `message` e.g. "approval ab12cd34 approved for orders-api on
//!   orders-db"; `metadata` as for statements (`correlation_uid` = the
//!   session, when there is one); `user.name` = the account (whose
//!   privilege it is), `privileges` = [`statement:<fingerprint>`];
//!   `actor.user` = the approver (uid, name, groups), when there is one;
//! - `unmapped.warden` = `account`, `target`, `decision` (the status),
//!   `reason`, `session` ("" when none), and `approval` = the whole
//!   [`ApprovalEvent`] (decoded back by [`decode_approval`]);
//! - store columns: `class_uid` 3005, `activity` "approval", `decision` =
//!   the status, `account`, `target`, `session`, `reason`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use memchr::memmem;

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::checkpoint::Checkpoint;

mod kernel;
use super::event::{
    ApprovalEvent, ApprovalStatus, ConfigAction, ConfigChange, ConfigOutcome, ConnActivity,
    ConnectionEvent, Decision, ProcessInfo, PruneRecord, ResultSummary, SessionId,
    StatementDecision, StatementEvent, StatementPhase, TokenIdentity,
};
pub use kernel::{
    CLASS_UID_PROCESS_ACTIVITY, KERNEL_ACTIVITY, KERNEL_DECISION, KernelDenial, decode_kernel,
    kernel_template, kernel_text,
};

/// OCSF schema version written into `metadata.version`.
pub const OCSF_VERSION: &str = "1.8.0";
/// OCSF Network Activity class.
pub const CLASS_UID_NETWORK_ACTIVITY: u32 = 4001;
/// OCSF Network Activity category.
pub const CATEGORY_UID_NETWORK: u32 = 4;
/// `metadata.log_name` of every Warden event.
pub const LOG_NAME: &str = "warden";
/// OCSF Application Lifecycle class (chain checkpoints).
pub const CLASS_UID_APPLICATION_LIFECYCLE: u32 = 6002;
/// OCSF Application Activity category.
pub const CATEGORY_UID_APPLICATION: u32 = 6;
/// OCSF `activity_id` Other, used for checkpoints.
pub const ACTIVITY_ID_OTHER: u8 = 99;
/// Store `activity` column of checkpoint events.
pub const CHECKPOINT_ACTIVITY: &str = "checkpoint";
/// Store `decision` column of checkpoint events.
pub const CHECKPOINT_DECISION: &str = "n/a";
/// Store `decision` column of every event that is not a decision
/// (checkpoints, configuration changes, prunes).
pub const NO_DECISION: &str = "n/a";
/// OCSF Device Config State Change class (configuration loads/reloads).
pub const CLASS_UID_DEVICE_CONFIG_STATE_CHANGE: u32 = 5019;
/// OCSF Discovery category.
pub const CATEGORY_UID_DISCOVERY: u32 = 5;
/// Store `activity` column of configuration events.
pub const CONFIG_ACTIVITY: &str = "config";
/// Store `activity` column of prune events.
pub const PRUNE_ACTIVITY: &str = "prune";
/// OCSF `activity_name` of prune events.
pub const PRUNE_ACTIVITY_NAME: &str = "Prune";
/// OCSF Datastore Activity class (database statements).
pub const CLASS_UID_DATASTORE_ACTIVITY: u32 = 6005;
/// OCSF User Access Management class (approval transitions).
pub const CLASS_UID_USER_ACCESS_MANAGEMENT: u32 = 3005;
/// Store `activity` column of approval events.
pub const APPROVAL_ACTIVITY: &str = "approval";

/// OCSF `activity_id` of a connection activity.
pub fn activity_id(activity: ConnActivity) -> u8 {
    match activity {
        ConnActivity::Open => 1,
        ConnActivity::Close => 2,
        ConnActivity::Refuse => 5,
    }
}

/// The lowercase name used in the store's `activity` column and in text output.
pub fn activity_str(activity: ConnActivity) -> &'static str {
    match activity {
        ConnActivity::Open => "open",
        ConnActivity::Close => "close",
        ConnActivity::Refuse => "refuse",
    }
}

fn activity_name(activity: ConnActivity) -> &'static str {
    match activity {
        ConnActivity::Open => "Open",
        ConnActivity::Close => "Close",
        ConnActivity::Refuse => "Refuse",
    }
}

/// The connection activity of an OCSF `activity_id`.
pub fn activity_from_id(id: u8) -> Option<ConnActivity> {
    match id {
        1 => Some(ConnActivity::Open),
        2 => Some(ConnActivity::Close),
        5 => Some(ConnActivity::Refuse),
        _ => None,
    }
}

/// OCSF Network Activity event, in serialization order.
#[derive(Debug, Serialize, Deserialize)]
struct NetworkActivity {
    activity_id: u8,
    activity_name: String,
    category_uid: u32,
    category_name: String,
    class_uid: u32,
    class_name: String,
    type_uid: u32,
    type_name: String,
    time: i64,
    severity_id: u8,
    severity: String,
    status_id: u8,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<String>,
    action_id: u8,
    action: String,
    disposition_id: u8,
    disposition: String,
    metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device>,
    src_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Actor>,
    connection_info: ConnectionInfo,
    traffic: Traffic,
    duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    unmapped: Unmapped,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    version: String,
    product: Product,
    uid: String,
    sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_uid: Option<String>,
    log_name: String,
}

fn metadata(chain_id: &str, seq: u64, correlation_uid: Option<String>) -> Metadata {
    Metadata {
        version: OCSF_VERSION.to_owned(),
        product: product(),
        uid: format!("{chain_id}:{seq}"),
        sequence: seq,
        correlation_uid,
        log_name: LOG_NAME.to_owned(),
    }
}

fn product() -> Product {
    Product {
        name: "Warden".to_owned(),
        vendor_name: "Warden".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn device(host: &str) -> Option<Device> {
    (!host.is_empty()).then(|| Device {
        hostname: host.to_owned(),
        type_id: 0,
        type_name: "Unknown".to_owned(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Product {
    name: String,
    vendor_name: String,
    version: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Device {
    hostname: String,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    svc_name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Actor {
    process: Process,
}

#[derive(Debug, Serialize, Deserialize)]
struct Process {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    name: String,
    path: String,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Fingerprint>,
}

/// OCSF Fingerprint; algorithm_id 3 = SHA-256.
#[derive(Debug, Serialize, Deserialize)]
struct Fingerprint {
    algorithm_id: u8,
    algorithm: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct User {
    /// OCSF `user.uid` is a string.
    uid: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConnectionInfo {
    protocol_name: String,
    protocol_num: u8,
    direction_id: u8,
    direction: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Unmapped {
    warden: WardenExt,
}

#[derive(Debug, Serialize, Deserialize)]
struct WardenExt {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    session: String,
    protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process_start_boot_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pid_reused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<TokenIdentity>,
    seq: u64,
}

/// Encoded event bytes with the seq left out: the decimal digits of the
/// seq go at each of `slots` (ascending byte offsets into `bytes`).
///
/// Producers encode their event into a template (the costly part: serde,
/// escaping, allocation) before handing it to the writer, which only has to
/// splice the seq it assigns into the three places an event carries it
/// (`metadata.uid`, `metadata.sequence`, `unmapped.warden.seq`). The result
/// is byte for byte what serializing the whole document with that seq gives
/// (tests compare both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqTemplate {
    bytes: Vec<u8>,
    slots: [usize; 3],
}

impl SeqTemplate {
    /// Append the event bytes for `seq` to `out`.
    pub fn fill_into(&self, seq: u64, out: &mut Vec<u8>) {
        let digits = itoa_u64(seq);
        let digits = digits.as_bytes();
        out.reserve(self.bytes.len() + 3 * digits.len());
        let mut at = 0;
        for &slot in &self.slots {
            out.extend_from_slice(&self.bytes[at..slot]);
            out.extend_from_slice(digits);
            at = slot;
        }
        out.extend_from_slice(&self.bytes[at..]);
    }

    /// The event bytes for `seq`.
    pub fn fill(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.fill_into(seq, &mut out);
        out
    }
}

/// Decimal digits of `v` without allocating.
fn itoa_u64(mut v: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `v % 10` is a single digit.
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Builds a [`SeqTemplate`] from serde pieces in document order.
struct TemplateBuilder {
    bytes: Vec<u8>,
    slots: [usize; 3],
    used: usize,
}

impl TemplateBuilder {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(2048),
            slots: [0; 3],
            used: 0,
        }
    }

    fn raw(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
    }

    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AuditError> {
        serde_json::to_writer(&mut self.bytes, v).map_err(|source| AuditError::Encode { source })
    }

    /// Serialize the struct `v` and append its members without the braces
    /// (preceded by a comma unless `first`). Returns whether it had any.
    fn members<T: Serialize>(&mut self, v: &T, first: bool) -> Result<bool, AuditError> {
        let mark = self.bytes.len();
        if !first {
            self.bytes.push(b',');
        }
        let open = self.bytes.len();
        self.value(v)?;
        // serde_json writes a struct as `{...}`.
        let empty = self.bytes.len() - open <= 2;
        if empty {
            self.bytes.truncate(mark);
            return Ok(false);
        }
        self.bytes.pop();
        self.bytes.remove(open);
        Ok(true)
    }

    fn slot(&mut self) {
        if let Some(s) = self.slots.get_mut(self.used) {
            *s = self.bytes.len();
        }
        self.used += 1;
    }

    /// `"metadata":{...}` with the seq slots for `uid` and `sequence`.
    fn metadata(
        &mut self,
        chain_id: &str,
        correlation_uid: Option<&str>,
    ) -> Result<(), AuditError> {
        self.raw("\"metadata\":{\"version\":");
        self.value(OCSF_VERSION)?;
        self.raw(",\"product\":");
        self.value(&ProductSer::WARDEN)?;
        self.raw(",\"uid\":");
        // `"<chain_id>:<seq>"`: ':' and digits need no escaping.
        self.value(chain_id)?;
        self.bytes.pop();
        self.raw(":");
        self.slot();
        self.raw("\",\"sequence\":");
        self.slot();
        if let Some(c) = correlation_uid {
            self.raw(",\"correlation_uid\":");
            self.value(c)?;
        }
        self.raw(",\"log_name\":");
        self.value(LOG_NAME)?;
        self.raw("}");
        Ok(())
    }

    /// `"unmapped":{"warden":{<members of ext>,"seq":<slot>}}}` (the last
    /// brace closes the document).
    fn unmapped_and_close<T: Serialize>(mut self, ext: &T) -> Result<SeqTemplate, AuditError> {
        self.raw(",\"unmapped\":{\"warden\":{");
        if self.members(ext, true)? {
            self.raw(",");
        }
        self.raw("\"seq\":");
        self.slot();
        self.raw("}}}");
        if self.used != 3 {
            return Err(AuditError::Decode {
                detail: format!("event template has {} seq slots, not 3", self.used),
            });
        }
        Ok(SeqTemplate {
            bytes: self.bytes,
            slots: self.slots,
        })
    }
}

/// `metadata.product` and `app` of every event.
#[derive(Serialize)]
struct ProductSer {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

impl ProductSer {
    const WARDEN: ProductSer = ProductSer {
        name: "Warden",
        vendor_name: "Warden",
        version: env!("CARGO_PKG_VERSION"),
    };
}

#[derive(Serialize)]
struct DeviceSer<'a> {
    hostname: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: &'static str,
}

fn device_ser(host: &str) -> Option<DeviceSer<'_>> {
    (!host.is_empty()).then_some(DeviceSer {
        hostname: host,
        type_id: 0,
        type_name: "Unknown",
    })
}

/// Serializes with `Display` (addresses, numbers as OCSF strings) without
/// an intermediate `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The members of a Network Activity event before `metadata`.
#[derive(Serialize)]
struct ConnHead<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
}

#[derive(Serialize)]
struct EndpointSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<Shown<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    svc_name: Option<&'a str>,
}

fn endpoint_ser(addr: SocketAddr, svc_name: Option<&str>) -> EndpointSer<'_> {
    EndpointSer {
        ip: Some(Shown(addr.ip())),
        port: Some(addr.port()),
        svc_name,
    }
}

#[derive(Serialize)]
struct ActorSer<'a> {
    process: ProcessSer<'a>,
}

#[derive(Serialize)]
struct ProcessSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd_line: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileSer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserSer>,
}

#[derive(Serialize)]
struct FileSer<'a> {
    name: &'a str,
    path: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<[FingerprintSer<'a>; 1]>,
}

#[derive(Serialize)]
struct FingerprintSer<'a> {
    algorithm_id: u8,
    algorithm: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct UserSer {
    uid: Shown<u32>,
}

fn actor_ser(p: &ProcessInfo) -> Option<ActorSer<'_>> {
    let file = p.exe.as_deref().map(|path| FileSer {
        name: path.rsplit('/').next().unwrap_or(path),
        path,
        type_id: 1,
        type_name: "Regular File",
        hashes: p.exe_sha256.as_deref().map(|value| {
            [FingerprintSer {
                algorithm_id: 3,
                algorithm: "SHA-256",
                value,
            }]
        }),
    });
    let user = p.uid.map(|uid| UserSer { uid: Shown(uid) });
    if p.pid.is_none() && p.comm.is_none() && file.is_none() && user.is_none() {
        return None;
    }
    Some(ActorSer {
        process: ProcessSer {
            pid: p.pid,
            name: p.comm.as_deref(),
            cmd_line: p.cmdline.as_deref(),
            file,
            user,
        },
    })
}

/// The members of a Network Activity event between `metadata` and
/// `unmapped`.
#[derive(Serialize)]
struct ConnMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
    src_endpoint: EndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<EndpointSer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<ActorSer<'a>>,
    connection_info: ConnectionInfoSer,
    traffic: Traffic,
    duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
}

#[derive(Serialize)]
struct ConnectionInfoSer {
    protocol_name: &'static str,
    protocol_num: u8,
    direction_id: u8,
    direction: &'static str,
}

/// `unmapped.warden` of a connection event, without `seq`.
#[derive(Serialize)]
struct WardenExtSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    session: &'a str,
    protocol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process_start_boot_ns: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pid_reused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a TokenIdentity>,
}

fn type_name(activity: ConnActivity) -> &'static str {
    match activity {
        ConnActivity::Open => "Network Activity: Open",
        ConnActivity::Close => "Network Activity: Close",
        ConnActivity::Refuse => "Network Activity: Refuse",
    }
}

/// Encode `ev` as OCSF 1.8 Network Activity JSON with the seq left open
/// (see [`SeqTemplate`]); `chain_id` is the store's chain id and `host` the
/// reporting host name (omitted when empty). `session` is
/// `ev.session.to_string()` (passed in so callers format it once).
pub fn connection_template(
    ev: &ConnectionEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    let id = activity_id(ev.activity);
    let allowed = ev.decision == Decision::Allowed;
    let dst_endpoint = match (ev.orig_dst, ev.target.as_deref()) {
        (Some(addr), svc) => Some(endpoint_ser(addr, svc)),
        (None, Some(svc)) => Some(EndpointSer {
            ip: None,
            port: None,
            svc_name: Some(svc),
        }),
        (None, None) => None,
    };
    let (start_time, end_time) = match ev.activity {
        ConnActivity::Close => (
            Some(ev.time_ms.saturating_sub_unsigned(ev.duration_ms)),
            Some(ev.time_ms),
        ),
        ConnActivity::Open | ConnActivity::Refuse => (None, None),
    };
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &ConnHead {
            activity_id: id,
            activity_name: activity_name(ev.activity),
            category_uid: CATEGORY_UID_NETWORK,
            category_name: "Network Activity",
            class_uid: CLASS_UID_NETWORK_ACTIVITY,
            class_name: "Network Activity",
            type_uid: CLASS_UID_NETWORK_ACTIVITY * 100 + u32::from(id),
            type_name: type_name(ev.activity),
            time: ev.time_ms,
            severity_id: if allowed { 1 } else { 3 },
            severity: if allowed { "Informational" } else { "Medium" },
            status_id: if allowed { 1 } else { 2 },
            status: if allowed { "Success" } else { "Failure" },
            status_code: ev.reason.as_deref(),
            status_detail: ev.detail.as_deref(),
            action_id: if allowed { 1 } else { 2 },
            action: if allowed { "Allowed" } else { "Denied" },
            disposition_id: if allowed { 1 } else { 2 },
            disposition: if allowed { "Allowed" } else { "Blocked" },
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, Some(session))?;
    b.members(
        &ConnMiddle {
            device: device_ser(host),
            src_endpoint: endpoint_ser(ev.client, None),
            dst_endpoint,
            actor: actor_ser(&ev.process),
            connection_info: ConnectionInfoSer {
                protocol_name: "tcp",
                protocol_num: 6,
                direction_id: 2,
                direction: "Outbound",
            },
            traffic: Traffic {
                bytes_in: ev.bytes_down,
                bytes_out: ev.bytes_up,
                bytes: ev.bytes_down.saturating_add(ev.bytes_up),
            },
            duration: ev.duration_ms,
            start_time,
            end_time,
        },
        false,
    )?;
    let p = &ev.process;
    b.unmapped_and_close(&WardenExtSer {
        account: ev.account.as_deref(),
        target: ev.target.as_deref(),
        decision: ev.decision,
        reason: ev.reason.as_deref(),
        detail: ev.detail.as_deref(),
        session,
        protocol: &ev.protocol,
        cgroup_id: p.cgroup_id,
        cgroup_path: p.cgroup_path.as_deref(),
        tgid: p.tgid,
        gid: p.gid,
        unit: p.unit.as_deref(),
        process_start_boot_ns: p.start_boot_ns,
        pid_reused: p.pid_reused,
        identity: ev.identity.as_ref(),
    })
}

/// Encode `ev` as OCSF 1.8 Network Activity JSON; `seq` is the sequence
/// number the writer assigned, `chain_id` the store's chain id and `host` the
/// reporting host name (omitted when empty).
pub fn encode_connection(
    ev: &ConnectionEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    Ok(connection_template(ev, &ev.session.to_string(), chain_id, host)?.fill(seq))
}

/// The members of a Device Config State Change event before `metadata`.
#[derive(Serialize)]
struct ConfigHead<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct ConfigMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
}

#[derive(Serialize)]
struct ConfigExtSer<'a> {
    config: ConfigDocSer<'a>,
}

#[derive(Serialize)]
struct ConfigDocSer<'a> {
    action: ConfigAction,
    path: &'a str,
    sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_sha256: Option<&'a str>,
    outcome: ConfigOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

fn config_activity_name(action: ConfigAction) -> &'static str {
    match action {
        ConfigAction::Load => "Load",
        ConfigAction::Reload => "Reload",
    }
}

/// Encode a configuration load/reload as OCSF 1.8 Device Config State
/// Change JSON with the seq left open (see the module docs).
pub fn config_template(
    change: &ConfigChange,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    let verb = match change.action {
        ConfigAction::Load => "loaded",
        ConfigAction::Reload => "reloaded",
    };
    let (verb, status_id, status) = match change.outcome {
        ConfigOutcome::Applied => (verb, 1, "Success"),
        ConfigOutcome::Failed => ("reload failed", 2, "Failure"),
    };
    let message = format!(
        "configuration {verb} from {} (sha256 {})",
        change.path, change.sha256
    );
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &ConfigHead {
            activity_id: ACTIVITY_ID_OTHER,
            activity_name: config_activity_name(change.action),
            category_uid: CATEGORY_UID_DISCOVERY,
            category_name: "Discovery",
            class_uid: CLASS_UID_DEVICE_CONFIG_STATE_CHANGE,
            class_name: "Device Config State Change",
            type_uid: CLASS_UID_DEVICE_CONFIG_STATE_CHANGE * 100 + u32::from(ACTIVITY_ID_OTHER),
            type_name: "Device Config State Change: Other",
            time: change.time_ms,
            severity_id: 1,
            severity: "Informational",
            status_id,
            status,
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, None)?;
    b.members(
        &ConfigMiddle {
            device: device_ser(host),
        },
        false,
    )?;
    b.unmapped_and_close(&ConfigExtSer {
        config: ConfigDocSer {
            action: change.action,
            path: &change.path,
            sha256: &change.sha256,
            detail: change.detail.as_deref(),
            previous_sha256: change.previous_sha256.as_deref(),
            outcome: change.outcome,
            reason: change.reason.as_deref(),
        },
    })
}

/// Encode `change` as event `seq` (see [`config_template`]).
pub fn encode_config(
    change: &ConfigChange,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    Ok(config_template(change, chain_id, host)?.fill(seq))
}

/// OCSF Application Lifecycle event carrying a checkpoint, in
/// serialization order.
#[derive(Debug, Serialize, Deserialize)]
struct ApplicationLifecycle<U> {
    activity_id: u8,
    activity_name: String,
    category_uid: u32,
    category_name: String,
    class_uid: u32,
    class_name: String,
    type_uid: u32,
    type_name: String,
    time: i64,
    severity_id: u8,
    severity: String,
    status_id: u8,
    status: String,
    message: String,
    metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device>,
    app: Product,
    unmapped: U,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointUnmapped {
    warden: CheckpointExt,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointExt {
    checkpoint: CheckpointDoc,
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointDoc {
    origin: String,
    size: u64,
    head_hash: String,
    time_ms: i64,
    prev_checkpoint_hash: String,
    key_id: String,
    /// The exact signed body bytes (canonical JSON, hence UTF-8).
    body: String,
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// Encode checkpoint `cp`, carried as event `seq` of chain `chain_id`, as
/// OCSF Application Lifecycle JSON (see the module docs).
pub fn encode_checkpoint(
    cp: &Checkpoint,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    let b = cp.body();
    let doc = ApplicationLifecycle {
        activity_id: ACTIVITY_ID_OTHER,
        activity_name: "Checkpoint".to_owned(),
        category_uid: CATEGORY_UID_APPLICATION,
        category_name: "Application Activity".to_owned(),
        class_uid: CLASS_UID_APPLICATION_LIFECYCLE,
        class_name: "Application Lifecycle".to_owned(),
        type_uid: CLASS_UID_APPLICATION_LIFECYCLE * 100 + u32::from(ACTIVITY_ID_OTHER),
        type_name: "Application Lifecycle: Other".to_owned(),
        time: b.time_ms,
        severity_id: 1,
        severity: "Informational".to_owned(),
        status_id: 1,
        status: "Success".to_owned(),
        message: format!("audit chain checkpoint at seq {}", b.size),
        metadata: metadata(chain_id, seq, None),
        device: device(host),
        app: product(),
        unmapped: CheckpointUnmapped {
            warden: CheckpointExt {
                checkpoint: CheckpointDoc {
                    origin: b.origin.clone(),
                    size: b.size,
                    head_hash: b.head_hash.clone(),
                    time_ms: b.time_ms,
                    prev_checkpoint_hash: b.prev_checkpoint_hash.clone(),
                    key_id: b.key_id.clone(),
                    body: String::from_utf8_lossy(cp.body_bytes()).into_owned(),
                    signature: hex::encode(cp.signature()),
                    public_key: cp.public_key().map(hex::encode),
                },
                seq,
            },
        },
    };
    serde_json::to_vec(&doc).map_err(|source| AuditError::Encode { source })
}

/// A checkpoint event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedCheckpoint {
    /// The checkpoint, from the embedded body, signature and public key.
    pub checkpoint: Checkpoint,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
}

/// Decode stored checkpoint event bytes (the inverse of
/// [`encode_checkpoint`]). The signature is NOT checked here.
pub fn decode_checkpoint(data: &[u8]) -> Result<DecodedCheckpoint, AuditError> {
    let doc: ApplicationLifecycle<CheckpointUnmapped> = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not a checkpoint event: {e}")))?;
    if doc.class_uid != CLASS_UID_APPLICATION_LIFECYCLE || doc.activity_id != ACTIVITY_ID_OTHER {
        return Err(decode_err(format!(
            "class_uid {} activity_id {} is not a checkpoint",
            doc.class_uid, doc.activity_id
        )));
    }
    let c = doc.unmapped.warden.checkpoint;
    let signature =
        hex::decode(&c.signature).map_err(|_| decode_err("checkpoint signature is not hex"))?;
    let public_key = match &c.public_key {
        Some(pk) => {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(pk, &mut raw)
                .map_err(|_| decode_err("checkpoint public_key is not 64 hex digits"))?;
            Some(raw)
        }
        None => None,
    };
    let checkpoint =
        Checkpoint::from_parts(c.body.into_bytes(), signature, public_key).map_err(decode_err)?;
    Ok(DecodedCheckpoint {
        checkpoint,
        seq: doc.unmapped.warden.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct PruneUnmapped {
    warden: PruneExt,
}

#[derive(Debug, Serialize, Deserialize)]
struct PruneExt {
    prune: PruneRecord,
    seq: u64,
}

/// Encode a retention prune, carried as event `seq`, as OCSF Application
/// Lifecycle JSON (see the module docs).
pub fn encode_prune(
    p: &PruneRecord,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    let doc = ApplicationLifecycle {
        activity_id: ACTIVITY_ID_OTHER,
        activity_name: PRUNE_ACTIVITY_NAME.to_owned(),
        category_uid: CATEGORY_UID_APPLICATION,
        category_name: "Application Activity".to_owned(),
        class_uid: CLASS_UID_APPLICATION_LIFECYCLE,
        class_name: "Application Lifecycle".to_owned(),
        type_uid: CLASS_UID_APPLICATION_LIFECYCLE * 100 + u32::from(ACTIVITY_ID_OTHER),
        type_name: "Application Lifecycle: Other".to_owned(),
        time: p.time_ms,
        severity_id: 1,
        severity: "Informational".to_owned(),
        status_id: 1,
        status: "Success".to_owned(),
        message: format!(
            "audit events {}..={} removed ({}, retention {} days)",
            p.from_seq, p.through_seq, p.reason, p.retention_days
        ),
        metadata: metadata(chain_id, seq, None),
        device: device(host),
        app: product(),
        unmapped: PruneUnmapped {
            warden: PruneExt {
                prune: p.clone(),
                seq,
            },
        },
    };
    serde_json::to_vec(&doc).map_err(|source| AuditError::Encode { source })
}

/// A prune event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPrune {
    pub prune: PruneRecord,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
}

/// Decode stored prune event bytes (the inverse of [`encode_prune`]).
pub fn decode_prune(data: &[u8]) -> Result<DecodedPrune, AuditError> {
    let doc: ApplicationLifecycle<PruneUnmapped> =
        serde_json::from_slice(data).map_err(|e| decode_err(format!("not a prune event: {e}")))?;
    if doc.class_uid != CLASS_UID_APPLICATION_LIFECYCLE
        || doc.activity_id != ACTIVITY_ID_OTHER
        || doc.activity_name != PRUNE_ACTIVITY_NAME
    {
        return Err(decode_err(format!(
            "class_uid {} activity {:?} is not a prune",
            doc.class_uid, doc.activity_name
        )));
    }
    Ok(DecodedPrune {
        prune: doc.unmapped.warden.prune,
        seq: doc.unmapped.warden.seq,
        uid: doc.metadata.uid,
    })
}

/// OCSF Device Config State Change event, for decoding.
#[derive(Debug, Deserialize)]
struct DeviceConfigStateChange {
    activity_id: u8,
    class_uid: u32,
    time: i64,
    metadata: Metadata,
    #[serde(default)]
    device: Option<Device>,
    unmapped: ConfigUnmapped,
}

#[derive(Debug, Deserialize)]
struct ConfigUnmapped {
    warden: ConfigExt,
}

#[derive(Debug, Deserialize)]
struct ConfigExt {
    config: ConfigDoc,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct ConfigDoc {
    action: ConfigAction,
    path: String,
    sha256: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    previous_sha256: Option<String>,
    #[serde(default)]
    outcome: ConfigOutcome,
    #[serde(default)]
    reason: Option<String>,
}

/// A configuration event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedConfig {
    pub change: ConfigChange,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
}

/// Decode stored configuration event bytes (the inverse of
/// [`encode_config`]).
pub fn decode_config(data: &[u8]) -> Result<DecodedConfig, AuditError> {
    let doc: DeviceConfigStateChange = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not a configuration event: {e}")))?;
    if doc.class_uid != CLASS_UID_DEVICE_CONFIG_STATE_CHANGE || doc.activity_id != ACTIVITY_ID_OTHER
    {
        return Err(decode_err(format!(
            "class_uid {} activity_id {} is not a configuration event",
            doc.class_uid, doc.activity_id
        )));
    }
    let c = doc.unmapped.warden.config;
    Ok(DecodedConfig {
        change: ConfigChange {
            time_ms: doc.time,
            path: c.path,
            sha256: c.sha256,
            action: c.action,
            detail: c.detail,
            previous_sha256: c.previous_sha256,
            outcome: c.outcome,
            reason: c.reason,
        },
        seq: doc.unmapped.warden.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
    })
}

/// OCSF `activity_id` Query of Datastore Activity (both phases of a
/// statement).
pub const ACTIVITY_ID_QUERY: u8 = 4;
/// Store `activity` column of a statement's request event.
pub const STATEMENT_ACTIVITY: &str = "statement";
/// Store `activity` column of a statement's result event.
pub const RESULT_ACTIVITY: &str = "result";

/// The store's `activity` column of a statement event of `phase`.
pub fn statement_activity_str(phase: StatementPhase) -> &'static str {
    match phase {
        StatementPhase::Request => STATEMENT_ACTIVITY,
        StatementPhase::Result => RESULT_ACTIVITY,
    }
}

/// The members of a Datastore Activity event before `metadata`.
#[derive(Serialize)]
struct StmtHead<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
    message: &'a str,
}

/// The members of a Datastore Activity event between `metadata` and
/// `unmapped`.
#[derive(Serialize)]
struct StmtMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
    src_endpoint: SrcEndpointSer<'a>,
    dst_endpoint: SvcEndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<ActorSer<'a>>,
    database: DatabaseSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<NameSer<'a>>,
    query_info: QueryInfoSer<'a>,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
}

#[derive(Serialize)]
struct SrcEndpointSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    name: &'a str,
}

#[derive(Serialize)]
struct SvcEndpointSer<'a> {
    svc_name: &'a str,
}

#[derive(Serialize)]
struct DatabaseSer<'a> {
    name: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    type_name: &'static str,
}

#[derive(Serialize)]
struct NameSer<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct QueryInfoSer<'a> {
    query_string: &'a str,
    uid: &'a str,
}

/// `unmapped.warden` of a statement event, without `seq`: the columns'
/// sources (account, target, decision, reason, session) where connection
/// events have them, then the process facts, then `statement`.
#[derive(Serialize)]
struct StmtExtSer<'a> {
    account: &'a str,
    target: &'a str,
    decision: StatementDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    session: &'a str,
    protocol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process_start_boot_ns: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pid_reused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<StmtIdentitySer<'a>>,
    statement: StmtDocSer<'a>,
    // --- allow-lists (issue 19) ---
    #[serde(skip_serializing_if = "Option::is_none")]
    allowlist: Option<&'a crate::policy::allowlist::AllowlistFacts>,
}

/// The identity token's claims in a statement request event: a
/// [`TokenIdentity`] without the minted attestation, which belongs to the
/// connection (its open event carries it) and would be repeated, unchanged,
/// in every statement of the session.
#[derive(Serialize)]
struct StmtIdentitySer<'a> {
    source: &'a str,
    iss: &'a str,
    sub: &'a str,
    aud: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    alg: &'a str,
}

impl<'a> StmtIdentitySer<'a> {
    fn of(t: &'a TokenIdentity) -> Self {
        Self {
            source: &t.source,
            iss: &t.iss,
            sub: &t.sub,
            aud: &t.aud,
            jti: t.jti.as_deref(),
            exp: t.exp,
            kid: t.kid.as_deref(),
            alg: &t.alg,
        }
    }
}

/// `unmapped.warden.statement`. No key here may be named like a member of
/// `unmapped.warden` that the fast probe reads (account, target, decision,
/// reason, session, seq).
#[derive(Serialize)]
struct StmtDocSer<'a> {
    phase: StatementPhase,
    statement_seq: u64,
    via: &'a str,
    class: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tables: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    functions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    upstream_user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values_masked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlstate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a ResultSummary>,
    /// Version of the compact canonical record this rendering was made
    /// from (see [`super::record`]); absent when the stored bytes are this
    /// JSON itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<u8>,
}

/// `message` of a statement event, e.g. "write statement blocked" or
/// "read statement result: SELECT 3".
fn statement_message(ev: &StatementEvent) -> String {
    match ev.phase {
        StatementPhase::Request => format!("{} statement {}", ev.class, ev.decision.as_str()),
        StatementPhase::Result => match (&ev.command_tag, &ev.sqlstate) {
            (_, Some(state)) => format!("{} statement failed (SQLSTATE {state})", ev.class),
            (Some(tag), None) => format!("{} statement result: {tag}", ev.class),
            (None, None) => format!("{} statement result", ev.class),
        },
    }
}

/// Encode a database statement as OCSF 1.8 Datastore Activity JSON with
/// the seq left open (see the module docs and [`SeqTemplate`]). `session`
/// is `ev.session.to_string()`.
pub fn statement_template(
    ev: &StatementEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    statement_template_of(ev, session, chain_id, host, None)
}

/// [`statement_template`] of a statement rendered from its compact
/// canonical record (`record`: the record's version, written into
/// `unmapped.warden.statement.record` so that `verify-export` knows to
/// recompute the chain over the record rather than over the JSON).
pub(crate) fn statement_template_of(
    ev: &StatementEvent,
    session: &str,
    chain_id: &str,
    host: &str,
    record: Option<u8>,
) -> Result<SeqTemplate, AuditError> {
    let allowed = ev.decision == StatementDecision::Allowed;
    let failed = !allowed || ev.sqlstate.is_some() || ev.error.is_some();
    let message = statement_message(ev);
    let query_uid = format!("{session}:{}", ev.statement_seq);
    // Who called is recorded with the request; the result is tied to it
    // (and to the connection's open event, which has every process fact)
    // by session and statement_seq.
    let request = ev.phase == StatementPhase::Request;
    let p = &ev.process;
    let no_process = ProcessInfo::default();
    let p = if request { p } else { &no_process };
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &StmtHead {
            activity_id: ACTIVITY_ID_QUERY,
            activity_name: "Query",
            category_uid: CATEGORY_UID_APPLICATION,
            category_name: "Application Activity",
            class_uid: CLASS_UID_DATASTORE_ACTIVITY,
            class_name: "Datastore Activity",
            type_uid: CLASS_UID_DATASTORE_ACTIVITY * 100 + u32::from(ACTIVITY_ID_QUERY),
            type_name: "Datastore Activity: Query",
            time: ev.time_ms,
            severity_id: if allowed { 1 } else { 3 },
            severity: if allowed { "Informational" } else { "Medium" },
            status_id: if failed { 2 } else { 1 },
            status: if failed { "Failure" } else { "Success" },
            status_code: ev.sqlstate.as_deref(),
            status_detail: ev.error.as_deref().or(if allowed {
                None
            } else {
                ev.reason.as_deref()
            }),
            action_id: if allowed { 1 } else { 2 },
            action: if allowed { "Allowed" } else { "Denied" },
            disposition_id: if allowed { 1 } else { 2 },
            disposition: if allowed { "Allowed" } else { "Blocked" },
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, Some(session))?;
    b.members(
        &StmtMiddle {
            device: device_ser(host),
            src_endpoint: SrcEndpointSer {
                hostname: (!host.is_empty()).then_some(host),
                name: &ev.account,
            },
            dst_endpoint: SvcEndpointSer {
                svc_name: &ev.target,
            },
            actor: actor_ser(p),
            database: DatabaseSer {
                name: &ev.database,
                type_id: 1,
                type_name: "Relational",
            },
            table: match ev.tables.as_slice() {
                [one] => Some(NameSer { name: one }),
                _ => None,
            },
            query_info: QueryInfoSer {
                query_string: &ev.statement,
                uid: &query_uid,
            },
            type_id: 1,
            type_name: "Database",
            duration: ev.duration_us.map(|us| us / 1000),
        },
        false,
    )?;
    b.unmapped_and_close(&StmtExtSer {
        account: &ev.account,
        target: &ev.target,
        decision: ev.decision,
        reason: ev.reason.as_deref(),
        session,
        protocol: &ev.protocol,
        cgroup_id: p.cgroup_id,
        cgroup_path: p.cgroup_path.as_deref(),
        tgid: p.tgid,
        gid: p.gid,
        unit: p.unit.as_deref(),
        process_start_boot_ns: p.start_boot_ns,
        pid_reused: p.pid_reused,
        identity: ev
            .identity
            .as_ref()
            .filter(|_| request)
            .map(StmtIdentitySer::of),
        statement: StmtDocSer {
            phase: ev.phase,
            statement_seq: ev.statement_seq,
            via: &ev.via,
            class: &ev.class,
            tables: &ev.tables,
            functions: &ev.functions,
            policy: ev.policy.as_deref(),
            rule: ev.rule.as_deref(),
            upstream_user: &ev.upstream_user,
            rows: ev.rows,
            values_masked: ev.values_masked,
            duration_us: ev.duration_us,
            command_tag: ev.command_tag.as_deref(),
            sqlstate: ev.sqlstate.as_deref(),
            error: ev.error.as_deref(),
            result: ev.result.as_ref(),
            record,
        },
        allowlist: ev.allowlist.as_ref(),
    })
}

/// Encode `ev` as event `seq` (see [`statement_template`]).
pub fn encode_statement(
    ev: &StatementEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    Ok(statement_template(ev, &ev.session.to_string(), chain_id, host)?.fill(seq))
}

/// OCSF Datastore Activity event, for decoding.
#[derive(Debug, Deserialize)]
struct DatastoreActivity {
    activity_id: u8,
    class_uid: u32,
    time: i64,
    metadata: Metadata,
    #[serde(default)]
    device: Option<Device>,
    #[serde(default)]
    actor: Option<Actor>,
    database: DatabaseDoc,
    query_info: QueryInfoDoc,
    unmapped: StmtUnmapped,
}

#[derive(Debug, Deserialize)]
struct DatabaseDoc {
    name: String,
}

#[derive(Debug, Deserialize)]
struct QueryInfoDoc {
    query_string: String,
}

#[derive(Debug, Deserialize)]
struct StmtUnmapped {
    warden: StmtExt,
}

#[derive(Debug, Deserialize)]
struct StmtExt {
    // --- allow-lists (issue 19) ---
    #[serde(default)]
    allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
    account: String,
    target: String,
    decision: StatementDecision,
    #[serde(default)]
    reason: Option<String>,
    session: String,
    protocol: String,
    #[serde(default)]
    cgroup_id: Option<u64>,
    #[serde(default)]
    cgroup_path: Option<String>,
    #[serde(default)]
    tgid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    process_start_boot_ns: Option<u64>,
    #[serde(default)]
    pid_reused: bool,
    #[serde(default)]
    identity: Option<TokenIdentity>,
    statement: StmtDoc,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct StmtDoc {
    phase: StatementPhase,
    statement_seq: u64,
    via: String,
    class: String,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    upstream_user: String,
    #[serde(default)]
    rows: Option<u64>,
    #[serde(default)]
    values_masked: Option<u64>,
    #[serde(default)]
    duration_us: Option<u64>,
    #[serde(default)]
    command_tag: Option<String>,
    #[serde(default)]
    sqlstate: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    result: Option<ResultSummary>,
    #[serde(default)]
    record: Option<u8>,
}

/// A statement event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedStatement {
    pub event: StatementEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
    /// The JSON is a rendering of a compact canonical record of this
    /// version (see [`super::record`]); `None`: the JSON was stored as is.
    pub record: Option<u8>,
}

/// `unmapped.warden.session` (16 hex digits) of a statement or API event.
fn session_of(hex: &str) -> Result<SessionId, AuditError> {
    u64::from_str_radix(hex, 16)
        .map(SessionId)
        .map_err(|_| decode_err("unmapped.warden.session is not hex"))
}

/// Decode stored Datastore Activity bytes back into the event model (the
/// inverse of [`encode_statement`]).
pub fn decode_statement(data: &[u8]) -> Result<DecodedStatement, AuditError> {
    let doc: DatastoreActivity = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not a statement event: {e}")))?;
    if doc.class_uid != CLASS_UID_DATASTORE_ACTIVITY || doc.activity_id != ACTIVITY_ID_QUERY {
        return Err(decode_err(format!(
            "class_uid {} activity_id {} is not a statement",
            doc.class_uid, doc.activity_id
        )));
    }
    let w = doc.unmapped.warden;
    let session = session_of(&w.session)?;
    let process = decode_process(
        doc.actor,
        ProcessInfo {
            tgid: w.tgid,
            gid: w.gid,
            cgroup_id: w.cgroup_id,
            cgroup_path: w.cgroup_path,
            unit: w.unit,
            start_boot_ns: w.process_start_boot_ns,
            pid_reused: w.pid_reused,
            ..ProcessInfo::default()
        },
    )?;
    let s = w.statement;
    Ok(DecodedStatement {
        event: StatementEvent {
            time_ms: doc.time,
            phase: s.phase,
            decision: w.decision,
            session,
            statement_seq: s.statement_seq,
            account: w.account,
            target: w.target,
            protocol: w.protocol,
            database: doc.database.name,
            upstream_user: s.upstream_user,
            process,
            identity: w.identity,
            via: s.via,
            statement: doc.query_info.query_string,
            class: s.class,
            tables: s.tables,
            functions: s.functions,
            policy: s.policy,
            rule: s.rule,
            reason: w.reason,
            rows: s.rows,
            values_masked: s.values_masked,
            duration_us: s.duration_us,
            command_tag: s.command_tag,
            sqlstate: s.sqlstate,
            error: s.error,
            result: s.result,
            allowlist: w.allowlist,
        },
        seq: w.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
        record: s.record,
    })
}

/// What a stored event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Network Activity (4001): open, close, refuse.
    Connection,
    /// Device Config State Change (5019): a configuration load or reload.
    Config,
    /// Application Lifecycle (6002) "Checkpoint".
    Checkpoint,
    /// Application Lifecycle (6002) "Prune".
    Prune,
    /// Datastore Activity (6005): a database statement's request or result.
    Statement,
    /// User Access Management (3005): an approval transition.
    Approval,
    /// API Activity (6003): an HTTP request's decision or result.
    Api,
    /// Process Activity (1007): a BPF LSM denial ([`KernelDenial`]).
    Kernel,
}

impl EventKind {
    /// The kind of an event of OCSF class `class_uid` whose store
    /// `activity` column is `activity`.
    pub fn from_columns(class_uid: u32, activity: &str) -> Option<Self> {
        match (class_uid, activity) {
            (CLASS_UID_NETWORK_ACTIVITY, _) => Some(EventKind::Connection),
            (CLASS_UID_DEVICE_CONFIG_STATE_CHANGE, _) => Some(EventKind::Config),
            (CLASS_UID_APPLICATION_LIFECYCLE, CHECKPOINT_ACTIVITY) => Some(EventKind::Checkpoint),
            (CLASS_UID_APPLICATION_LIFECYCLE, PRUNE_ACTIVITY) => Some(EventKind::Prune),
            (CLASS_UID_DATASTORE_ACTIVITY, _) => Some(EventKind::Statement),
            (CLASS_UID_USER_ACCESS_MANAGEMENT, _) => Some(EventKind::Approval),
            (CLASS_UID_API_ACTIVITY, _) => Some(EventKind::Api),
            (CLASS_UID_PROCESS_ACTIVITY, _) => Some(EventKind::Kernel),
            _ => None,
        }
    }
}

/// The fields of a stored event that the store's columns are derived from,
/// read without building the whole document (strings borrowed where they
/// need no unescaping). Used where every event is looked at (verify,
/// export).
#[derive(Debug, Deserialize)]
pub(crate) struct Probe<'a> {
    pub class_uid: u32,
    pub activity_id: u8,
    #[serde(borrow)]
    pub activity_name: Cow<'a, str>,
    pub time: i64,
    #[serde(borrow)]
    pub metadata: ProbeMeta<'a>,
    #[serde(borrow)]
    pub unmapped: ProbeUnmapped<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeMeta<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeUnmapped<'a> {
    #[serde(borrow)]
    pub warden: ProbeWarden<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeWarden<'a> {
    #[serde(borrow, default)]
    pub account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub target: Option<Cow<'a, str>>,
    /// `allowed`/`refused` for connections, a [`StatementDecision`] for
    /// statements.
    #[serde(borrow, default)]
    pub decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub session: Option<Cow<'a, str>>,
    #[serde(default)]
    pub config: Option<ProbeConfig>,
    #[serde(borrow, default)]
    pub prune: Option<ProbePrune<'a>>,
    #[serde(borrow, default)]
    pub statement: Option<ProbeStatement<'a>>,
    #[serde(default)]
    pub api: Option<ProbeApi>,
    pub seq: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeStatement<'a> {
    pub phase: StatementPhase,
    #[serde(borrow)]
    pub class: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeConfig {
    pub action: ConfigAction,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbePrune<'a> {
    pub through_seq: u64,
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
}

impl Probe<'_> {
    /// What the event is, from its own content.
    pub fn kind(&self) -> Option<EventKind> {
        match (self.class_uid, self.activity_name.as_ref()) {
            (CLASS_UID_NETWORK_ACTIVITY, _) => Some(EventKind::Connection),
            (CLASS_UID_DEVICE_CONFIG_STATE_CHANGE, _) => Some(EventKind::Config),
            (CLASS_UID_APPLICATION_LIFECYCLE, "Checkpoint") => Some(EventKind::Checkpoint),
            (CLASS_UID_APPLICATION_LIFECYCLE, PRUNE_ACTIVITY_NAME) => Some(EventKind::Prune),
            (CLASS_UID_DATASTORE_ACTIVITY, _) => Some(EventKind::Statement),
            (CLASS_UID_USER_ACCESS_MANAGEMENT, _) => Some(EventKind::Approval),
            (CLASS_UID_API_ACTIVITY, _) => Some(EventKind::Api),
            (CLASS_UID_PROCESS_ACTIVITY, _) => Some(EventKind::Kernel),
            _ => None,
        }
    }
}

/// Read the [`Probe`] fields of stored event bytes.
pub(crate) fn probe(data: &[u8]) -> Result<Probe<'_>, AuditError> {
    serde_json::from_slice(data).map_err(|e| decode_err(format!("not a Warden OCSF event: {e}")))
}

/// [`probe`], reading events in this module's own encoding without parsing
/// the whole document: the top-level fields before any free text (fixed
/// order) are found by their keys, and only `unmapped.warden` (the last
/// member) goes through serde. Falls back to [`probe`] whenever the bytes
/// are not laid out that way.
///
/// In bytes this encoder wrote, a key with its quotes (`"time":`) cannot
/// occur inside a string value (quotes in values are escaped) and each key
/// searched for occurs once at top level before any other use, so the
/// first match is the member. Used where every event is read (verify,
/// export) after the event's hash was checked.
pub(crate) fn probe_fast(data: &[u8]) -> Result<Probe<'_>, AuditError> {
    match probe_layout(data) {
        Some(p) => Ok(p),
        None => probe(data),
    }
}

/// Keys the fast reader looks for, with their searchers built once.
struct Keys {
    activity_name: memmem::Finder<'static>,
    class_uid: memmem::Finder<'static>,
    time: memmem::Finder<'static>,
    uid: memmem::Finder<'static>,
    unmapped: memmem::FinderRev<'static>,
    account: memmem::Finder<'static>,
    target: memmem::Finder<'static>,
    decision: memmem::Finder<'static>,
    reason: memmem::Finder<'static>,
    session: memmem::Finder<'static>,
    phase: memmem::Finder<'static>,
    class: memmem::Finder<'static>,
    seq: memmem::FinderRev<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    activity_name: memmem::Finder::new(b"\"activity_name\":\""),
    class_uid: memmem::Finder::new(b"\"class_uid\":"),
    time: memmem::Finder::new(b"\"time\":"),
    uid: memmem::Finder::new(b"\"uid\":\""),
    unmapped: memmem::FinderRev::new(UNMAPPED),
    account: memmem::Finder::new(b"\"account\":\""),
    target: memmem::Finder::new(b"\"target\":\""),
    decision: memmem::Finder::new(b"\"decision\":\""),
    reason: memmem::Finder::new(b"\"reason\":\""),
    session: memmem::Finder::new(b"\"session\":\""),
    phase: memmem::Finder::new(b"\"phase\":\""),
    class: memmem::Finder::new(b"\"class\":\""),
    seq: memmem::FinderRev::new(b",\"seq\":"),
});

const UNMAPPED: &[u8] = b",\"unmapped\":{\"warden\":";

fn probe_layout(data: &[u8]) -> Option<Probe<'_>> {
    const FIRST: &[u8] = b"{\"activity_id\":";
    let k = &*KEYS;
    let (activity_id, at) = int_at(data, FIRST.len())?;
    if !data.starts_with(FIRST) {
        return None;
    }
    let (activity_name, at) = str_after(data, at, &k.activity_name)?;
    let (class_uid, at) = int_after(data, at, &k.class_uid)?;
    let (time, at) = int_after(data, at, &k.time)?;
    let (uid, at) = str_after(data, at, &k.uid)?;
    let start = k.unmapped.rfind(data)?;
    if start < at || !data.ends_with(b"}}}") {
        return None;
    }
    let object = data.get(start + UNMAPPED.len()..data.len() - 2)?;
    let class_uid = u32::try_from(class_uid).ok()?;
    let fast = match class_uid {
        CLASS_UID_NETWORK_ACTIVITY => fast_warden(object, false),
        CLASS_UID_DATASTORE_ACTIVITY => fast_warden(object, true),
        _ => None,
    };
    let warden = match fast {
        Some(w) => w,
        None => serde_json::from_slice(object).ok()?,
    };
    Some(Probe {
        class_uid,
        activity_id: u8::try_from(activity_id).ok()?,
        activity_name: Cow::Borrowed(activity_name),
        time,
        metadata: ProbeMeta {
            uid: Cow::Borrowed(uid),
        },
        unmapped: ProbeUnmapped { warden },
    })
}

/// `unmapped.warden` of a connection or (`statement`) statement event
/// without serde: each key read occurs once in that object (the identity
/// claims and the `statement` object nested in it use other names; the
/// statement's `phase` occurs only there), and `seq` is its last member.
/// `None` (full parse) for anything unexpected, e.g. a value with escapes.
fn fast_warden(o: &[u8], statement: bool) -> Option<ProbeWarden<'_>> {
    let k = &*KEYS;
    let opt = |f: &memmem::Finder<'static>| -> Option<Option<Cow<'_, str>>> {
        match f.find(o) {
            None => Some(None),
            Some(_) => str_after(o, 0, f).map(|(s, _)| Some(Cow::Borrowed(s))),
        }
    };
    let decision = str_after(o, 0, &k.decision)?.0;
    let statement = if statement {
        let phase = match str_after(o, 0, &k.phase)?.0 {
            "request" => StatementPhase::Request,
            "result" => StatementPhase::Result,
            _ => return None,
        };
        let class = str_after(o, 0, &k.class)?.0;
        Some(ProbeStatement {
            phase,
            class: Cow::Borrowed(class),
        })
    } else {
        None
    };
    let seq_at = k.seq.rfind(o)? + b",\"seq\":".len();
    let (seq, end) = int_at(o, seq_at)?;
    if o.get(end..) != Some(&b"}"[..]) {
        return None;
    }
    Some(ProbeWarden {
        account: opt(&k.account)?,
        target: opt(&k.target)?,
        decision: Some(Cow::Borrowed(decision)),
        reason: opt(&k.reason)?,
        session: opt(&k.session)?,
        config: None,
        prune: None,
        statement,
        api: None,
        seq: u64::try_from(seq).ok()?,
    })
}

/// The integer right after the first `key` at or after `from`, and the
/// position after it.
fn int_after(data: &[u8], from: usize, key: &memmem::Finder<'_>) -> Option<(i64, usize)> {
    let start = from + key.find(data.get(from..)?)? + key.needle().len();
    int_at(data, start)
}

/// The integer at `start`, and the position after it.
fn int_at(data: &[u8], start: usize) -> Option<(i64, usize)> {
    let rest = data.get(start..)?;
    let neg = rest.first() == Some(&b'-');
    let digits = rest.get(usize::from(neg)..)?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v: i64 = std::str::from_utf8(digits.get(..n)?).ok()?.parse().ok()?;
    Some((if neg { -v } else { v }, start + usize::from(neg) + n))
}

/// The string (without escapes) right after the first `key` (which ends
/// with the opening quote) at or after `from`, and the position after it.
fn str_after<'a>(
    data: &'a [u8],
    from: usize,
    key: &memmem::Finder<'_>,
) -> Option<(&'a str, usize)> {
    let start = from + key.find(data.get(from..)?)? + key.needle().len();
    let rest = data.get(start..)?;
    let len = memchr::memchr2(b'"', b'\\', rest)?;
    if rest.get(len) != Some(&b'"') {
        return None;
    }
    Some((std::str::from_utf8(rest.get(..len)?).ok()?, start + len + 1))
}

/// The `class_uid` of stored event bytes, if they are a JSON object with one.
pub fn class_of(data: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        class_uid: u32,
    }
    serde_json::from_slice::<Probe>(data)
        .ok()
        .map(|p| p.class_uid)
}

/// A connection event decoded back from stored OCSF bytes, with the
/// identifiers the writer added.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedConnection {
    pub event: ConnectionEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
}

/// The members of a User Access Management event before `metadata`.
#[derive(Serialize)]
struct ApprovalHead<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: String,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<&'a str>,
    message: &'a str,
}

#[derive(Serialize)]
struct ApprovalMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
    user: UserNameSer<'a>,
    privileges: [String; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<ApproverActorSer<'a>>,
}

#[derive(Serialize)]
struct UserNameSer<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ApproverActorSer<'a> {
    user: ApproverUserSer<'a>,
}

#[derive(Serialize)]
struct ApproverUserSer<'a> {
    uid: Shown<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[GroupSer<'_>]>::is_empty")]
    groups: Vec<GroupSer<'a>>,
}

#[derive(Serialize)]
struct GroupSer<'a> {
    name: &'a str,
}

/// `unmapped.warden` of an approval event, without `seq`.
#[derive(Serialize)]
struct ApprovalExtSer<'a> {
    account: &'a str,
    target: &'a str,
    decision: ApprovalStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    session: &'a str,
    approval: &'a ApprovalEvent,
}

/// OCSF `activity_id` and `activity_name` of an approval status.
pub fn approval_activity(status: ApprovalStatus) -> (u8, &'static str) {
    match status {
        ApprovalStatus::Approved => (1, "Assign Privileges"),
        ApprovalStatus::Revoked => (2, "Revoke Privileges"),
        ApprovalStatus::Requested => (ACTIVITY_ID_OTHER, "Requested"),
        ApprovalStatus::Denied => (ACTIVITY_ID_OTHER, "Denied"),
        ApprovalStatus::TimedOut => (ACTIVITY_ID_OTHER, "Timed Out"),
        ApprovalStatus::Withdrawn => (ACTIVITY_ID_OTHER, "Withdrawn"),
        ApprovalStatus::GrantUsed => (ACTIVITY_ID_OTHER, "Grant Used"),
        ApprovalStatus::DecisionRefused => (ACTIVITY_ID_OTHER, "Decision Refused"),
    }
}

/// Encode an approval transition as OCSF 1.8 User Access Management JSON
/// with the seq left open (see the module docs).
pub fn approval_template(
    ev: &ApprovalEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    let (activity_id, activity_name) = approval_activity(ev.status);
    let (severity_id, severity, status_id, status) = match ev.status {
        ApprovalStatus::Approved | ApprovalStatus::GrantUsed => (1, "Informational", 1, "Success"),
        ApprovalStatus::Requested => (2, "Low", 99, "Other"),
        ApprovalStatus::DecisionRefused => (3, "Medium", 2, "Failure"),
        _ => (1, "Informational", 2, "Failure"),
    };
    let id = ev
        .request_id
        .as_deref()
        .or(ev.grant_id.as_deref())
        .unwrap_or("-");
    let message = format!(
        "approval {id} {} for {} on {}",
        ev.status.as_str(),
        ev.account,
        ev.target
    );
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &ApprovalHead {
            activity_id,
            activity_name,
            category_uid: 3,
            category_name: "Identity & Access Management",
            class_uid: CLASS_UID_USER_ACCESS_MANAGEMENT,
            class_name: "User Access Management",
            type_uid: CLASS_UID_USER_ACCESS_MANAGEMENT * 100 + u32::from(activity_id),
            type_name: format!("User Access Management: {activity_name}"),
            time: ev.time_ms,
            severity_id,
            severity,
            status_id,
            status,
            status_detail: ev.reason.as_deref(),
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, (!session.is_empty()).then_some(session))?;
    b.members(
        &ApprovalMiddle {
            device: device_ser(host),
            user: UserNameSer { name: &ev.account },
            privileges: [format!("statement:{}", ev.fingerprint)],
            actor: ev.approver.as_ref().map(|a| ApproverActorSer {
                user: ApproverUserSer {
                    uid: Shown(a.uid),
                    name: a.user.as_deref(),
                    groups: a.groups.iter().map(|g| GroupSer { name: g }).collect(),
                },
            }),
        },
        false,
    )?;
    b.unmapped_and_close(&ApprovalExtSer {
        account: &ev.account,
        target: &ev.target,
        decision: ev.status,
        reason: ev.reason.as_deref(),
        session,
        approval: ev,
    })
}

/// Encode `ev` as event `seq` (see [`approval_template`]).
pub fn encode_approval(
    ev: &ApprovalEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    let session = ev.session.map(|s| s.to_string()).unwrap_or_default();
    Ok(approval_template(ev, &session, chain_id, host)?.fill(seq))
}

#[derive(Deserialize)]
struct ApprovalDoc {
    class_uid: u32,
    metadata: MetaUid,
    unmapped: ApprovalUnmapped,
}

#[derive(Deserialize)]
struct MetaUid {
    uid: String,
}

#[derive(Deserialize)]
struct ApprovalUnmapped {
    warden: ApprovalWarden,
}

#[derive(Deserialize)]
struct ApprovalWarden {
    approval: ApprovalEvent,
    seq: u64,
}

/// An approval event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedApproval {
    pub event: ApprovalEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
}

/// Decode stored approval event bytes (the inverse of [`encode_approval`]).
pub fn decode_approval(data: &[u8]) -> Result<DecodedApproval, AuditError> {
    let doc: ApprovalDoc = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not an approval event: {e}")))?;
    if doc.class_uid != CLASS_UID_USER_ACCESS_MANAGEMENT {
        return Err(decode_err(format!(
            "class_uid {} is not an approval event",
            doc.class_uid
        )));
    }
    Ok(DecodedApproval {
        event: doc.unmapped.warden.approval,
        seq: doc.unmapped.warden.seq,
        uid: doc.metadata.uid,
    })
}

fn decode_err(detail: impl Into<String>) -> AuditError {
    AuditError::Decode {
        detail: detail.into(),
    }
}

fn decode_addr(ep: &Endpoint, what: &str) -> Result<Option<SocketAddr>, AuditError> {
    match (&ep.ip, ep.port) {
        (Some(ip), Some(port)) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| decode_err(format!("{what}.ip is not an IP address")))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Ok(None),
    }
}

/// `process` (the facts kept under `unmapped.warden`) completed with what
/// `actor.process` says.
fn decode_process(
    actor: Option<Actor>,
    mut process: ProcessInfo,
) -> Result<ProcessInfo, AuditError> {
    if let Some(actor) = actor {
        let p = actor.process;
        process.pid = p.pid;
        process.comm = p.name;
        process.cmdline = p.cmd_line;
        if let Some(f) = p.file {
            process.exe_sha256 = f
                .hashes
                .into_iter()
                .find(|h| h.algorithm_id == 3)
                .map(|h| h.value);
            process.exe = Some(f.path);
        }
        process.uid = match p.user {
            Some(u) => Some(
                u.uid
                    .parse()
                    .map_err(|_| decode_err("actor.process.user.uid is not numeric"))?,
            ),
            None => None,
        };
    }
    Ok(process)
}

/// Decode stored Network Activity bytes back into the event model (the
/// inverse of [`encode_connection`]); used by the CLI and by tests.
pub fn decode_connection(data: &[u8]) -> Result<DecodedConnection, AuditError> {
    let doc: NetworkActivity =
        serde_json::from_slice(data).map_err(|e| decode_err(format!("not OCSF JSON: {e}")))?;
    if doc.class_uid != CLASS_UID_NETWORK_ACTIVITY {
        return Err(decode_err(format!(
            "class_uid {} is not Network Activity",
            doc.class_uid
        )));
    }
    let activity = activity_from_id(doc.activity_id)
        .ok_or_else(|| decode_err(format!("unknown activity_id {}", doc.activity_id)))?;
    let w = doc.unmapped.warden;
    let session = u64::from_str_radix(&w.session, 16)
        .map_err(|_| decode_err("unmapped.warden.session is not hex"))?;
    let client = decode_addr(&doc.src_endpoint, "src_endpoint")?
        .ok_or_else(|| decode_err("src_endpoint has no ip/port"))?;
    let orig_dst = match &doc.dst_endpoint {
        Some(ep) => decode_addr(ep, "dst_endpoint")?,
        None => None,
    };
    let process = decode_process(
        doc.actor,
        ProcessInfo {
            tgid: w.tgid,
            gid: w.gid,
            cgroup_id: w.cgroup_id,
            cgroup_path: w.cgroup_path,
            unit: w.unit,
            start_boot_ns: w.process_start_boot_ns,
            pid_reused: w.pid_reused,
            ..ProcessInfo::default()
        },
    )?;
    Ok(DecodedConnection {
        event: ConnectionEvent {
            time_ms: doc.time,
            activity,
            decision: w.decision,
            reason: w.reason,
            detail: w.detail,
            session: SessionId(session),
            account: w.account,
            target: w.target,
            protocol: w.protocol,
            process,
            client,
            orig_dst,
            bytes_up: doc.traffic.bytes_out,
            bytes_down: doc.traffic.bytes_in,
            duration_ms: doc.duration,
            identity: w.identity,
        },
        seq: w.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    pub(crate) fn sample(activity: ConnActivity, decision: Decision) -> ConnectionEvent {
        ConnectionEvent {
            time_ms: 1_795_957_502_123,
            activity,
            decision,
            reason: None,
            detail: None,
            session: SessionId(0x4d2),
            account: Some("orders-api".into()),
            target: Some("orders-db".into()),
            protocol: "tcp".into(),
            process: ProcessInfo {
                pid: Some(1234),
                tgid: Some(1234),
                uid: Some(1000),
                gid: Some(1001),
                comm: Some("curl".into()),
                exe: Some("/usr/bin/curl".into()),
                cgroup_id: Some(77),
                cgroup_path: Some("/system.slice/orders.service".into()),
                exe_sha256: Some("ab".repeat(32)),
                cmdline: Some("curl http://orders".into()),
                start_boot_ns: Some(42_000_000),
                pid_reused: false,
                unit: Some("orders.service".into()),
            },
            client: "127.0.0.1:40000".parse().unwrap(),
            orig_dst: Some("10.0.0.5:5432".parse().unwrap()),
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            identity: Some(TokenIdentity {
                source: "token_file".into(),
                iss: "https://idp.example".into(),
                sub: "system:serviceaccount:orders:api".into(),
                aud: vec!["warden".into()],
                jti: Some("j-1".into()),
                exp: 1_900_000_000,
                kid: Some("k1".into()),
                alg: "RS256".into(),
                attestation: None,
            }),
        }
    }

    /// A statement of session 0x4d2 by the process of [`sample`].
    pub(crate) fn sample_statement(
        phase: StatementPhase,
        decision: StatementDecision,
        statement_seq: u64,
    ) -> StatementEvent {
        let conn = sample(ConnActivity::Open, Decision::Allowed);
        let mut ev = StatementEvent {
            time_ms: conn.time_ms + statement_seq as i64 * 10,
            phase,
            decision,
            session: conn.session,
            statement_seq,
            account: "orders-api".into(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            database: "orders".into(),
            upstream_user: "orders_rw".into(),
            process: conn.process,
            identity: conn.identity,
            via: "simple".into(),
            statement: "SELECT id, email FROM public.orders WHERE id = $1".into(),
            class: "read".into(),
            tables: vec!["public.orders".into()],
            functions: Vec::new(),
            policy: Some("orders-policy".into()),
            rule: Some("rules[0]".into()),
            reason: None,
            rows: None,
            values_masked: None,
            duration_us: None,
            command_tag: None,
            sqlstate: None,
            error: None,
            result: None,
            allowlist: None,
        };
        if decision != StatementDecision::Allowed {
            ev.statement = "DELETE FROM public.orders".into();
            ev.class = "write".into();
            ev.rule = Some("no-deletes".into());
            ev.reason = Some("statement blocked by rule no-deletes".into());
            ev.sqlstate = Some("42501".into());
        }
        if phase == StatementPhase::Result {
            ev.rows = Some(2);
            ev.values_masked = Some(1);
            ev.duration_us = Some(1_234);
            ev.command_tag = Some("SELECT 2".into());
            ev.result = Some(ResultSummary {
                columns: vec!["id".into(), "email".into()],
                sample: vec![
                    vec![Some("1".into()), Some("***".into())],
                    vec![Some("2".into()), None],
                ],
            });
        }
        ev
    }

    fn encode(ev: &ConnectionEvent, seq: u64) -> Value {
        let bytes = encode_connection(ev, seq, "c0ffee", "host1").unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn assert_no_nulls(v: &Value, path: &str) {
        match v {
            Value::Null => panic!("null at {path}"),
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| assert_no_nulls(v, &format!("{path}.{k}"))),
            Value::Array(a) => a.iter().for_each(|v| assert_no_nulls(v, path)),
            _ => {}
        }
    }

    #[test]
    fn open_is_network_activity_open() {
        let v = encode(&sample(ConnActivity::Open, Decision::Allowed), 42);
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["category_uid"], 4);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["activity_name"], "Open");
        assert_eq!(v["type_uid"], 400101);
        assert_eq!(v["time"], 1_795_957_502_123i64);
        assert_eq!(v["severity_id"], 1);
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["status"], "Success");
        assert_eq!(v["action_id"], 1);
        assert_eq!(v["action"], "Allowed");
        assert_eq!(v["disposition"], "Allowed");
        assert_eq!(v["metadata"]["version"], "1.8.0");
        assert_eq!(v["metadata"]["uid"], "c0ffee:42");
        assert_eq!(v["metadata"]["log_name"], "warden");
        assert_eq!(v["metadata"]["product"]["name"], "Warden");
        assert_eq!(v["metadata"]["product"]["vendor_name"], "Warden");
        assert_eq!(
            v["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(v["device"]["hostname"], "host1");
        assert_eq!(v["src_endpoint"]["ip"], "127.0.0.1");
        assert_eq!(v["src_endpoint"]["port"], 40000);
        assert_eq!(v["dst_endpoint"]["ip"], "10.0.0.5");
        assert_eq!(v["dst_endpoint"]["port"], 5432);
        assert_eq!(v["dst_endpoint"]["svc_name"], "orders-db");
        assert_eq!(v["actor"]["process"]["pid"], 1234);
        assert_eq!(v["actor"]["process"]["name"], "curl");
        assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/curl");
        assert_eq!(v["actor"]["process"]["file"]["name"], "curl");
        assert_eq!(v["actor"]["process"]["user"]["uid"], "1000");
        assert_eq!(v["connection_info"]["protocol_name"], "tcp");
        assert_eq!(v["connection_info"]["direction_id"], 2);
        let w = &v["unmapped"]["warden"];
        assert_eq!(w["account"], "orders-api");
        assert_eq!(w["decision"], "allowed");
        assert_eq!(w["session"], "00000000000004d2");
        assert_eq!(w["gid"], 1001);
        assert_eq!(w["tgid"], 1234);
        assert_eq!(w["cgroup_id"], 77);
        assert_eq!(w["seq"], 42);
        // Absent values are omitted.
        assert!(v.get("status_code").is_none());
        assert!(v.get("status_detail").is_none());
        assert!(v.get("start_time").is_none());
        assert!(w.get("reason").is_none());
        assert!(w.get("detail").is_none());
        assert_no_nulls(&v, "");
    }

    #[test]
    fn close_carries_traffic_and_duration() {
        let mut ev = sample(ConnActivity::Close, Decision::Allowed);
        ev.bytes_up = 100;
        ev.bytes_down = 2500;
        ev.duration_ms = 1500;
        let v = encode(&ev, 7);
        assert_eq!(v["activity_id"], 2);
        assert_eq!(v["type_uid"], 400102);
        assert_eq!(v["traffic"]["bytes_out"], 100);
        assert_eq!(v["traffic"]["bytes_in"], 2500);
        assert_eq!(v["traffic"]["bytes"], 2600);
        assert_eq!(v["duration"], 1500);
        assert_eq!(v["end_time"], ev.time_ms);
        assert_eq!(v["start_time"], ev.time_ms - 1500);
        assert_no_nulls(&v, "");
    }

    #[test]
    fn refuse_is_denied_medium_failure_and_omits_unknowns() {
        let mut ev = sample(ConnActivity::Refuse, Decision::Refused);
        ev.reason = Some("unredirected".into());
        ev.detail = Some("no original destination recorded".into());
        ev.account = None;
        ev.target = None;
        ev.orig_dst = None;
        ev.process = ProcessInfo::default();
        ev.client = "[::1]:50000".parse().unwrap();
        let v = encode(&ev, 3);
        assert_eq!(v["activity_id"], 5);
        assert_eq!(v["activity_name"], "Refuse");
        assert_eq!(v["type_uid"], 400105);
        assert_eq!(v["severity_id"], 3);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["action_id"], 2);
        assert_eq!(v["action"], "Denied");
        assert_eq!(v["disposition_id"], 2);
        assert_eq!(v["status_code"], "unredirected");
        assert_eq!(v["status_detail"], "no original destination recorded");
        assert_eq!(v["src_endpoint"]["ip"], "::1");
        assert!(v.get("dst_endpoint").is_none());
        assert!(v.get("actor").is_none());
        let w = &v["unmapped"]["warden"];
        assert_eq!(w["decision"], "refused");
        assert_eq!(w["reason"], "unredirected");
        for absent in [
            "account",
            "target",
            "gid",
            "tgid",
            "cgroup_id",
            "cgroup_path",
        ] {
            assert!(w.get(absent).is_none(), "{absent} should be omitted");
        }
        assert_no_nulls(&v, "");
    }

    // The encoder before templates: the whole document as one struct.
    fn ref_endpoint(addr: SocketAddr, svc_name: Option<String>) -> Endpoint {
        Endpoint {
            ip: Some(addr.ip().to_string()),
            port: Some(addr.port()),
            svc_name,
        }
    }

    fn ref_actor(p: &ProcessInfo) -> Option<Actor> {
        let file = p.exe.as_ref().map(|path| File {
            name: path.rsplit('/').next().unwrap_or(path).to_owned(),
            path: path.clone(),
            type_id: 1,
            type_name: "Regular File".to_owned(),
            hashes: p
                .exe_sha256
                .iter()
                .map(|h| Fingerprint {
                    algorithm_id: 3,
                    algorithm: "SHA-256".to_owned(),
                    value: h.clone(),
                })
                .collect(),
        });
        let user = p.uid.map(|uid| User {
            uid: uid.to_string(),
        });
        if p.pid.is_none() && p.comm.is_none() && file.is_none() && user.is_none() {
            return None;
        }
        Some(Actor {
            process: Process {
                pid: p.pid,
                name: p.comm.clone(),
                cmd_line: p.cmdline.clone(),
                file,
                user,
            },
        })
    }

    /// Encode `ev` as OCSF 1.8 Network Activity JSON; `seq` is the sequence
    /// number the writer assigned, `chain_id` the store's chain id and `host` the
    /// reporting host name (omitted when empty).
    fn reference_connection(
        ev: &ConnectionEvent,
        seq: u64,
        chain_id: &str,
        host: &str,
    ) -> Result<Vec<u8>, AuditError> {
        let id = activity_id(ev.activity);
        let allowed = ev.decision == Decision::Allowed;
        let session = ev.session.to_string();
        let dst_endpoint = match (ev.orig_dst, ev.target.clone()) {
            (Some(addr), svc) => Some(ref_endpoint(addr, svc)),
            (None, Some(svc)) => Some(Endpoint {
                ip: None,
                port: None,
                svc_name: Some(svc),
            }),
            (None, None) => None,
        };
        let (start_time, end_time) = match ev.activity {
            ConnActivity::Close => (
                Some(ev.time_ms.saturating_sub_unsigned(ev.duration_ms)),
                Some(ev.time_ms),
            ),
            ConnActivity::Open | ConnActivity::Refuse => (None, None),
        };
        let doc = NetworkActivity {
            activity_id: id,
            activity_name: activity_name(ev.activity).to_owned(),
            category_uid: CATEGORY_UID_NETWORK,
            category_name: "Network Activity".to_owned(),
            class_uid: CLASS_UID_NETWORK_ACTIVITY,
            class_name: "Network Activity".to_owned(),
            type_uid: CLASS_UID_NETWORK_ACTIVITY * 100 + u32::from(id),
            type_name: format!("Network Activity: {}", activity_name(ev.activity)),
            time: ev.time_ms,
            severity_id: if allowed { 1 } else { 3 },
            severity: if allowed { "Informational" } else { "Medium" }.to_owned(),
            status_id: if allowed { 1 } else { 2 },
            status: if allowed { "Success" } else { "Failure" }.to_owned(),
            status_code: ev.reason.clone(),
            status_detail: ev.detail.clone(),
            action_id: if allowed { 1 } else { 2 },
            action: if allowed { "Allowed" } else { "Denied" }.to_owned(),
            disposition_id: if allowed { 1 } else { 2 },
            disposition: if allowed { "Allowed" } else { "Blocked" }.to_owned(),
            metadata: metadata(chain_id, seq, Some(session.clone())),
            device: device(host),
            src_endpoint: ref_endpoint(ev.client, None),
            dst_endpoint,
            actor: ref_actor(&ev.process),
            connection_info: ConnectionInfo {
                protocol_name: "tcp".to_owned(),
                protocol_num: 6,
                direction_id: 2,
                direction: "Outbound".to_owned(),
            },
            traffic: Traffic {
                bytes_in: ev.bytes_down,
                bytes_out: ev.bytes_up,
                bytes: ev.bytes_down.saturating_add(ev.bytes_up),
            },
            duration: ev.duration_ms,
            start_time,
            end_time,
            unmapped: Unmapped {
                warden: WardenExt {
                    account: ev.account.clone(),
                    target: ev.target.clone(),
                    decision: ev.decision,
                    reason: ev.reason.clone(),
                    detail: ev.detail.clone(),
                    session,
                    protocol: ev.protocol.clone(),
                    cgroup_id: ev.process.cgroup_id,
                    cgroup_path: ev.process.cgroup_path.clone(),
                    tgid: ev.process.tgid,
                    gid: ev.process.gid,
                    unit: ev.process.unit.clone(),
                    process_start_boot_ns: ev.process.start_boot_ns,
                    pid_reused: ev.process.pid_reused,
                    identity: ev.identity.clone(),
                    seq,
                },
            },
        };
        serde_json::to_vec(&doc).map_err(|source| AuditError::Encode { source })
    }

    #[test]
    fn templates_equal_whole_document_serialization() {
        let mut close = sample(ConnActivity::Close, Decision::Allowed);
        close.bytes_up = 5;
        close.bytes_down = 6;
        close.duration_ms = 7;
        close.reason = Some("upstream_closed".into());
        close.detail = Some("a \"quoted\" \u{1b} detail\n".into());
        let mut bare = sample(ConnActivity::Refuse, Decision::Refused);
        bare.process = ProcessInfo::default();
        bare.account = None;
        bare.target = None;
        bare.orig_dst = None;
        bare.identity = None;
        let mut svc_only = bare.clone();
        svc_only.target = Some("t\u{e9}".into());
        svc_only.process.exe = Some("noslash".into());
        svc_only.process.pid_reused = true;
        for ev in [
            sample(ConnActivity::Open, Decision::Allowed),
            close,
            bare,
            svc_only,
        ] {
            for (seq, chain, host) in [
                (1, "c0ffee", "h"),
                (u64::MAX, "a\"b", ""),
                (42, "", "h\u{0}"),
            ] {
                let want = reference_connection(&ev, seq, chain, host).unwrap();
                let got = encode_connection(&ev, seq, chain, host).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
        // One template, many seqs.
        let ev = sample(ConnActivity::Open, Decision::Allowed);
        let t = connection_template(&ev, &ev.session.to_string(), "c", "h").unwrap();
        for seq in [0, 9, 10, 12345, u64::MAX] {
            assert_eq!(
                t.fill(seq),
                reference_connection(&ev, seq, "c", "h").unwrap()
            );
        }
    }

    #[test]
    fn encoding_is_deterministic_and_host_optional() {
        let ev = sample(ConnActivity::Open, Decision::Allowed);
        let a = encode_connection(&ev, 1, "c", "").unwrap();
        let b = encode_connection(&ev, 1, "c", "").unwrap();
        assert_eq!(a, b);
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert!(v.get("device").is_none());
    }

    #[test]
    fn decode_inverts_encode() {
        let mut close = sample(ConnActivity::Close, Decision::Allowed);
        close.bytes_up = 5;
        close.bytes_down = 6;
        close.duration_ms = 7;
        close.reason = Some("upstream_closed".into());
        let mut refuse = sample(ConnActivity::Refuse, Decision::Refused);
        refuse.process = ProcessInfo {
            cgroup_id: Some(9),
            ..ProcessInfo::default()
        };
        refuse.orig_dst = None;
        refuse.detail = Some("say \"hi\"\n".into());
        for ev in [sample(ConnActivity::Open, Decision::Allowed), close, refuse] {
            let bytes = encode_connection(&ev, 99, "abc", "h").unwrap();
            let d = decode_connection(&bytes).unwrap();
            assert_eq!(d.event, ev);
            assert_eq!(d.seq, 99);
            assert_eq!(d.uid, "abc:99");
            assert_eq!(d.host.as_deref(), Some("h"));
        }
        assert!(decode_connection(b"{}").is_err());
    }

    /// The probe's fields, comparable.
    fn probed(p: &Probe<'_>) -> String {
        format!("{p:?}")
    }

    #[test]
    fn fast_probe_reads_what_the_full_probe_reads() {
        let mut docs = Vec::new();
        let mut refuse = sample(ConnActivity::Refuse, Decision::Refused);
        refuse.reason = Some("unknown_account".into());
        refuse.detail = Some("\"unmapped\":{\"warden\":{\"seq\":1}} \\ \"time\":5".into());
        refuse.process.cmdline = Some(",\"unmapped\":{\"warden\":{\"account\":\"x\"}}}".into());
        refuse.account = None;
        let mut escaped = sample(ConnActivity::Close, Decision::Allowed);
        escaped.account = Some("acct \"q\"".into());
        escaped.target = Some("t\\1".into());
        escaped.identity = None;
        for ev in [
            sample(ConnActivity::Open, Decision::Allowed),
            refuse,
            escaped,
        ] {
            docs.push(encode_connection(&ev, 7, "c0ffee", "h").unwrap());
        }
        let change = ConfigChange {
            time_ms: -5,
            path: "/etc/w\"arden.toml".into(),
            sha256: "ab".repeat(32),
            action: ConfigAction::Reload,
            detail: Some("x".into()),
            previous_sha256: Some("cd".repeat(32)),
            outcome: ConfigOutcome::Failed,
            reason: Some("agent.listen: restart required".into()),
        };
        docs.push(encode_config(&change, 8, "c0ffee", "").unwrap());
        let prune = PruneRecord {
            time_ms: 9,
            from_seq: 1,
            through_seq: 5,
            events: 5,
            reason: "retention".into(),
            retention_days: 400,
            cutoff_ms: 3,
            acked_through: Some(4),
            checkpoint_head_hash: "00".repeat(32),
        };
        docs.push(encode_prune(&prune, 9, "c0ffee", "h").unwrap());
        for d in &docs {
            assert!(probe_layout(d).is_some(), "{}", String::from_utf8_lossy(d));
            assert_eq!(probed(&probe_fast(d).unwrap()), probed(&probe(d).unwrap()));
        }
        let p = probe_fast(&docs[1]).unwrap();
        assert_eq!(p.unmapped.warden.account, None);
        assert_eq!(p.unmapped.warden.reason.as_deref(), Some("unknown_account"));
        assert_eq!(p.unmapped.warden.seq, 7);
        assert_eq!(
            probe_fast(&docs[2])
                .unwrap()
                .unmapped
                .warden
                .account
                .as_deref(),
            Some("acct \"q\"")
        );
        assert_eq!(probe_fast(&docs[3]).unwrap().time, -5);
        // Other layouts of the same content go through the full parse.
        let v: serde_json::Value = serde_json::from_slice(&docs[0]).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert!(probe_layout(&pretty).is_none());
        assert_eq!(
            probed(&probe_fast(&pretty).unwrap()),
            probed(&probe(&docs[0]).unwrap())
        );
        for junk in [
            &b""[..],
            b"{",
            b"{\"activity_id\":",
            b"{\"activity_id\":1}}}",
            b"\xff\xfe",
        ] {
            assert!(probe_layout(junk).is_none());
            assert!(probe_fast(junk).is_err());
        }
    }

    #[test]
    fn checkpoint_is_application_lifecycle_with_the_signed_body() {
        let dir = tempfile::tempdir().unwrap();
        let signer =
            crate::audit::checkpoint::CheckpointSigner::load_or_create(&dir.path().join("a.db"))
                .unwrap();
        let body = crate::audit::CheckpointBody {
            origin: "warden:c0ffee".into(),
            size: 41,
            head_hash: "ab".repeat(32),
            time_ms: 1_795_957_502_123,
            prev_checkpoint_hash: String::new(),
            key_id: signer.key_id().into(),
        };
        let cp = signer.sign(&body).unwrap();
        let bytes = encode_checkpoint(&cp, 42, "c0ffee", "host1").unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["class_uid"], 6002);
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "Checkpoint");
        assert_eq!(v["type_uid"], 600299);
        assert_eq!(v["time"], 1_795_957_502_123i64);
        assert_eq!(v["metadata"]["uid"], "c0ffee:42");
        assert_eq!(v["metadata"]["sequence"], 42);
        assert!(v["metadata"].get("correlation_uid").is_none());
        assert_eq!(v["app"]["name"], "Warden");
        assert_eq!(v["device"]["hostname"], "host1");
        let c = &v["unmapped"]["warden"]["checkpoint"];
        assert_eq!(c["size"], 41);
        assert_eq!(c["key_id"], signer.key_id());
        assert_eq!(c["body"].as_str().unwrap().as_bytes(), cp.body_bytes());
        assert_eq!(c["signature"], hex::encode(cp.signature()));
        assert_eq!(c["public_key"], hex::encode(signer.public_key()));
        assert_eq!(v["unmapped"]["warden"]["seq"], 42);
        assert_no_nulls(&v, "");
        assert_eq!(class_of(&bytes), Some(6002));

        let d = decode_checkpoint(&bytes).unwrap();
        assert_eq!(d.checkpoint, cp);
        assert_eq!((d.seq, d.uid.as_str()), (42, "c0ffee:42"));
        assert_eq!(d.host.as_deref(), Some("host1"));
        // Neither decoder accepts the other's events.
        assert!(decode_connection(&bytes).is_err());
        let conn =
            encode_connection(&sample(ConnActivity::Open, Decision::Allowed), 1, "c", "").unwrap();
        assert!(decode_checkpoint(&conn).is_err());
        assert_eq!(class_of(&conn), Some(4001));
    }

    #[test]
    fn statement_request_is_datastore_activity_query() {
        let ev = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 3);
        let bytes = encode_statement(&ev, 42, "c0ffee", "host1").unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["class_uid"], 6005);
        assert_eq!(v["class_name"], "Datastore Activity");
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 4);
        assert_eq!(v["activity_name"], "Query");
        assert_eq!(v["type_uid"], 600504);
        assert_eq!(v["time"], ev.time_ms);
        assert_eq!(
            (v["severity_id"].clone(), v["status_id"].clone()),
            (1.into(), 1.into())
        );
        assert_eq!(v["status"], "Success");
        assert_eq!(v["action"], "Allowed");
        assert_eq!(v["disposition_id"], 1);
        assert_eq!(v["disposition"], "Allowed");
        assert!(v.get("status_code").is_none());
        assert_eq!(v["message"], "read statement allowed");
        assert_eq!(v["metadata"]["uid"], "c0ffee:42");
        assert_eq!(v["metadata"]["sequence"], 42);
        assert_eq!(v["metadata"]["correlation_uid"], "00000000000004d2");
        assert_eq!(v["src_endpoint"]["hostname"], "host1");
        assert_eq!(v["src_endpoint"]["name"], "orders-api");
        assert_eq!(v["dst_endpoint"]["svc_name"], "orders-db");
        assert_eq!(v["actor"]["process"]["pid"], 1234);
        assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/curl");
        assert_eq!(v["database"]["name"], "orders");
        assert_eq!(v["database"]["type_id"], 1);
        assert_eq!(v["table"]["name"], "public.orders");
        assert_eq!(v["type_id"], 1);
        assert_eq!(v["query_info"]["query_string"], ev.statement);
        assert_eq!(v["query_info"]["uid"], "00000000000004d2:3");
        assert!(v.get("duration").is_none());
        let w = &v["unmapped"]["warden"];
        assert_eq!(w["account"], "orders-api");
        assert_eq!(w["decision"], "allowed");
        assert_eq!(w["session"], "00000000000004d2");
        assert_eq!(w["identity"]["sub"], "system:serviceaccount:orders:api");
        assert_eq!(w["unit"], "orders.service");
        assert_eq!(w["seq"], 42);
        let st = &w["statement"];
        assert_eq!(st["phase"], "request");
        assert_eq!(st["statement_seq"], 3);
        assert_eq!(st["class"], "read");
        assert_eq!(st["rule"], "rules[0]");
        assert_eq!(st["policy"], "orders-policy");
        assert_eq!(st["via"], "simple");
        assert_eq!(st["tables"][0], "public.orders");
        assert!(st.get("functions").is_none(), "empty lists are omitted");
        assert!(st.get("rows").is_none());
        assert_no_nulls(&v, "");
        assert_eq!(class_of(&bytes), Some(6005));
    }

    #[test]
    fn refused_and_result_statements_map_status_and_disposition() {
        let ev = sample_statement(StatementPhase::Request, StatementDecision::Blocked, 4);
        let v: Value = serde_json::from_slice(&encode_statement(&ev, 7, "c", "").unwrap()).unwrap();
        assert_eq!(v["severity_id"], 3);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["status_code"], "42501");
        assert_eq!(v["status_detail"], "statement blocked by rule no-deletes");
        assert_eq!(v["action_id"], 2);
        assert_eq!(v["disposition_id"], 2);
        assert_eq!(v["disposition"], "Blocked");
        assert_eq!(v["message"], "write statement blocked");
        assert!(v.get("device").is_none());
        assert!(v["src_endpoint"].get("hostname").is_none());
        assert_eq!(v["unmapped"]["warden"]["decision"], "blocked");
        assert_eq!(
            v["unmapped"]["warden"]["reason"],
            "statement blocked by rule no-deletes"
        );

        let mut ev = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 5);
        ev.tables.push("public.items".into());
        let v: Value =
            serde_json::from_slice(&encode_statement(&ev, 8, "c", "h").unwrap()).unwrap();
        assert_eq!(v["status"], "Success");
        assert_eq!(v["duration"], 1);
        assert!(
            v.get("table").is_none(),
            "two tables: no single table object"
        );
        assert_eq!(v["message"], "read statement result: SELECT 2");
        let st = &v["unmapped"]["warden"]["statement"];
        assert_eq!(st["phase"], "result");
        assert_eq!(st["rows"], 2);
        assert_eq!(st["values_masked"], 1);
        assert_eq!(st["duration_us"], 1234);
        assert_eq!(st["command_tag"], "SELECT 2");
        assert_eq!(st["result"]["columns"][1], "email");
        assert_eq!(st["result"]["sample"][0][1], "***");
        assert!(st["result"]["sample"][1][1].is_null(), "SQL NULL");

        // An allowed statement the upstream failed.
        ev.sqlstate = Some("23505".into());
        ev.error = Some("duplicate key value violates unique constraint".into());
        let v: Value =
            serde_json::from_slice(&encode_statement(&ev, 9, "c", "h").unwrap()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["disposition"], "Allowed");
        assert_eq!(v["status_code"], "23505");
        assert_eq!(
            v["status_detail"],
            "duplicate key value violates unique constraint"
        );
        assert_eq!(v["message"], "read statement failed (SQLSTATE 23505)");
    }

    /// What a statement event decodes to: a result without process facts
    /// and identity (the request and the open event have them), no
    /// attestation in either phase.
    pub(crate) fn as_stored(ev: &StatementEvent) -> StatementEvent {
        let mut ev = ev.clone();
        if ev.phase == StatementPhase::Result {
            ev.process = ProcessInfo::default();
            ev.identity = None;
        }
        if let Some(id) = ev.identity.as_mut() {
            id.attestation = None;
        }
        ev
    }

    #[test]
    fn statement_results_leave_who_called_to_the_request() {
        let mut req = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 4);
        if let Some(id) = req.identity.as_mut() {
            id.attestation = Some("eyJhbGciOiJFZERTQSJ9.claims.signature".into());
        }
        let mut res = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 4);
        res.identity = req.identity.clone();
        let req_json: Value =
            serde_json::from_slice(&encode_statement(&req, 7, "c", "h").unwrap()).unwrap();
        let res_bytes = encode_statement(&res, 8, "c", "h").unwrap();
        let res_json: Value = serde_json::from_slice(&res_bytes).unwrap();
        // The request names the caller: process, cgroup, unit, token claims.
        assert_eq!(req_json["actor"]["process"]["pid"], 1234, "{req_json:#}");
        let w = &req_json["unmapped"]["warden"];
        assert_eq!(w["unit"], "orders.service");
        assert_eq!(w["cgroup_id"], 77);
        assert_eq!(w["identity"]["sub"], "system:serviceaccount:orders:api");
        assert!(w["identity"].get("attestation").is_none(), "{w:#}");
        // The result: account, target, session and statement, no caller.
        assert!(res_json.get("actor").is_none(), "{res_json:#}");
        let w = &res_json["unmapped"]["warden"];
        for key in [
            "identity",
            "unit",
            "cgroup_id",
            "cgroup_path",
            "tgid",
            "gid",
        ] {
            assert!(w.get(key).is_none(), "{key} in {w:#}");
        }
        assert_eq!(w["account"], "orders-api");
        assert_eq!(w["session"], "00000000000004d2");
        assert_eq!(w["statement"]["statement_seq"], 4);
        assert_eq!(w["statement"]["rows"], 2);
        let full = encode_statement(&req, 8, "c", "h").unwrap().len();
        assert!(res_bytes.len() < full, "{} >= {full}", res_bytes.len());
    }

    #[test]
    fn decode_statement_inverts_encode() {
        let mut odd = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 9);
        odd.statement = "SELECT '\"unmapped\":{' || $1 -- \u{1b}\n".into();
        odd.process = ProcessInfo::default();
        odd.identity = None;
        odd.policy = None;
        odd.rule = None;
        odd.functions = vec!["pg_catalog.now".into()];
        odd.error = Some("\"seq\":1".into());
        let mut rejected =
            sample_statement(StatementPhase::Request, StatementDecision::Rejected, 1);
        rejected.class = "unknown".into();
        rejected.tables.clear();
        for ev in [
            sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1),
            sample_statement(StatementPhase::Result, StatementDecision::Allowed, 1),
            sample_statement(
                StatementPhase::Request,
                StatementDecision::ApprovalRequired,
                2,
            ),
            sample_statement(StatementPhase::Request, StatementDecision::Denied, 3),
            rejected,
            odd,
        ] {
            for seq in [1, 99, u64::MAX] {
                let bytes = encode_statement(&ev, seq, "abc", "h").unwrap();
                let d = decode_statement(&bytes).unwrap();
                assert_eq!(d.event, as_stored(&ev));
                assert_eq!(d.seq, seq);
                assert_eq!(d.uid, format!("abc:{seq}"));
                assert_eq!(d.host.as_deref(), Some("h"));
                // The fast probe reads what the full probe reads.
                assert!(
                    probe_layout(&bytes).is_some(),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
                let fast = probe_fast(&bytes).unwrap();
                assert_eq!(probed(&fast), probed(&probe(&bytes).unwrap()));
                assert_eq!(fast.kind(), Some(EventKind::Statement));
                let w = &fast.unmapped.warden;
                assert_eq!(w.decision.as_deref(), Some(ev.decision.as_str()));
                let st = w.statement.as_ref().unwrap();
                assert_eq!((st.phase, st.class.as_ref()), (ev.phase, ev.class.as_str()));
                assert_eq!(w.seq, seq);
            }
        }
        // Neither decoder accepts the other's events.
        let conn =
            encode_connection(&sample(ConnActivity::Open, Decision::Allowed), 1, "c", "").unwrap();
        assert!(decode_statement(&conn).is_err());
        let stmt = encode_statement(
            &sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1),
            1,
            "c",
            "",
        )
        .unwrap();
        assert!(decode_connection(&stmt).is_err());
        assert!(decode_statement(b"{}").is_err());
    }
}

// --- HTTP API activity (6003) -----------------------------------------------
//
// API Activity mapping (one event when Warden decided, the *request* phase,
// committed before the request is forwarded, and one when the response went
// back, the *result* phase; both carry the same `request_seq`):
// - class 6003 API Activity, category 6; `activity_id` from the method:
//   1 Create (POST), 2 Read (GET, HEAD, OPTIONS), 3 Update (PUT, PATCH),
//   4 Delete (DELETE), 99 Other; `type_uid = 600300 + activity_id`;
// - severity, status, action and disposition as for statements; the HTTP
//   status the client got is `status_code` in the result phase;
// - `api.operation` = method, `api.request.uid` = `"<session>:<seq>"`,
//   `api.response.code` (result); `http_request` = `http_method`, `url`
//   (`path`, the normalised path; `query_string`, masked); `http_response`
//   = `code`; `src_endpoint.name` = account, `dst_endpoint.svc_name` =
//   target; `actor.process` as for connections; `duration` (ms);
// - `unmapped.warden` = account, target, decision, reason, session,
//   process facts, identity, and `api` = phase, request_seq, policy, rule,
//   bytes_in, bytes_out, duration_us, values_masked, allow-listed request
//   and response headers (values masked), error;
// - store columns: `class_uid` 6003, `activity` "api_request" / "api_result".

/// OCSF class of HTTP requests.
pub const CLASS_UID_API_ACTIVITY: u32 = 6003;
/// Store `activity` of an API event's request phase.
pub const API_REQUEST_ACTIVITY: &str = "api_request";
/// Store `activity` of an API event's result phase.
pub const API_RESULT_ACTIVITY: &str = "api_result";

/// The store `activity` of an API event phase.
pub fn api_activity_str(phase: StatementPhase) -> &'static str {
    match phase {
        StatementPhase::Request => API_REQUEST_ACTIVITY,
        StatementPhase::Result => API_RESULT_ACTIVITY,
    }
}

/// OCSF API Activity `activity_id` and name of an HTTP method.
pub fn api_activity(method: &str) -> (u8, &'static str) {
    match method {
        "POST" => (1, "Create"),
        "GET" | "HEAD" | "OPTIONS" => (2, "Read"),
        "PUT" | "PATCH" => (3, "Update"),
        "DELETE" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

#[derive(Serialize)]
struct ApiMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
    src_endpoint: SrcEndpointSer<'a>,
    dst_endpoint: SvcEndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<ActorSer<'a>>,
    api: ApiSer<'a>,
    http_request: HttpRequestSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_response: Option<HttpResponseSer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
}

#[derive(Serialize)]
struct ApiSer<'a> {
    operation: &'a str,
    request: ApiRequestSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<HttpResponseSer>,
}

#[derive(Serialize)]
struct ApiRequestSer<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct HttpRequestSer<'a> {
    http_method: &'a str,
    url: UrlSer<'a>,
}

#[derive(Serialize)]
struct UrlSer<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string: Option<&'a str>,
}

#[derive(Serialize)]
struct HttpResponseSer {
    code: u16,
}

#[derive(Serialize)]
struct ApiExtSer<'a> {
    account: &'a str,
    target: &'a str,
    decision: StatementDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    session: &'a str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a TokenIdentity>,
    api: ApiDocSer<'a>,
    // --- allow-lists (issue 19) ---
    #[serde(skip_serializing_if = "Option::is_none")]
    allowlist: Option<&'a crate::policy::allowlist::AllowlistFacts>,
}

/// `unmapped.warden.api`. No key here may be named like a member of
/// `unmapped.warden` that the fast probe reads.
#[derive(Serialize)]
struct ApiDocSer<'a> {
    phase: StatementPhase,
    request_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values_masked: Option<u64>,
    #[serde(skip_serializing_if = "<[(String, String)]>::is_empty")]
    request_headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "<[(String, String)]>::is_empty")]
    response_headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// Version of the compact record this rendering was made from (see
    /// [`super::record::encode_api`]); absent when the JSON was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<u8>,
}

/// Encode an HTTP request event as OCSF 1.8 API Activity JSON with the seq
/// left open. `session` is `ev.session.to_string()`.
pub fn api_template(
    ev: &crate::audit::event::ApiEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    api_template_of(ev, session, chain_id, host, None)
}

/// [`api_template`] of an HTTP request rendered from its compact record
/// (`record`: the record's version, written into
/// `unmapped.warden.api.record` so that `verify-export` recomputes the
/// chain over the record).
pub(crate) fn api_template_of(
    ev: &crate::audit::event::ApiEvent,
    session: &str,
    chain_id: &str,
    host: &str,
    record: Option<u8>,
) -> Result<SeqTemplate, AuditError> {
    let allowed = ev.decision == StatementDecision::Allowed;
    let failed = !allowed || ev.error.is_some() || ev.status.is_some_and(|s| s >= 500);
    let (activity_id, activity_name) = api_activity(&ev.method);
    let message = match ev.phase {
        StatementPhase::Request => format!("{} {} {}", ev.method, ev.path, ev.decision.as_str()),
        StatementPhase::Result => format!(
            "{} {} answered {}",
            ev.method,
            ev.path,
            ev.status.map_or("-".to_owned(), |s| s.to_string())
        ),
    };
    let status_code = ev.status.map(|s| s.to_string());
    let request_uid = format!("{session}:{}", ev.request_seq);
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &StmtHead {
            activity_id,
            activity_name,
            category_uid: CATEGORY_UID_APPLICATION,
            category_name: "Application Activity",
            class_uid: CLASS_UID_API_ACTIVITY,
            class_name: "API Activity",
            type_uid: CLASS_UID_API_ACTIVITY * 100 + u32::from(activity_id),
            type_name: match activity_id {
                1 => "API Activity: Create",
                2 => "API Activity: Read",
                3 => "API Activity: Update",
                4 => "API Activity: Delete",
                _ => "API Activity: Other",
            },
            time: ev.time_ms,
            severity_id: if allowed { 1 } else { 3 },
            severity: if allowed { "Informational" } else { "Medium" },
            status_id: if failed { 2 } else { 1 },
            status: if failed { "Failure" } else { "Success" },
            status_code: status_code.as_deref(),
            status_detail: ev.error.as_deref().or(if allowed {
                None
            } else {
                ev.reason.as_deref()
            }),
            action_id: if allowed { 1 } else { 2 },
            action: if allowed { "Allowed" } else { "Denied" },
            disposition_id: if allowed { 1 } else { 2 },
            disposition: if allowed { "Allowed" } else { "Blocked" },
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, Some(session))?;
    b.members(
        &ApiMiddle {
            device: device_ser(host),
            src_endpoint: SrcEndpointSer {
                hostname: (!host.is_empty()).then_some(host),
                name: &ev.account,
            },
            dst_endpoint: SvcEndpointSer {
                svc_name: &ev.target,
            },
            actor: actor_ser(&ev.process),
            api: ApiSer {
                operation: &ev.method,
                request: ApiRequestSer { uid: &request_uid },
                response: ev.status.map(|code| HttpResponseSer { code }),
            },
            http_request: HttpRequestSer {
                http_method: &ev.method,
                url: UrlSer {
                    path: &ev.path,
                    query_string: ev.query.as_deref(),
                },
            },
            http_response: ev.status.map(|code| HttpResponseSer { code }),
            duration: ev.duration_us.map(|us| us / 1000),
        },
        false,
    )?;
    let p = &ev.process;
    b.unmapped_and_close(&ApiExtSer {
        account: &ev.account,
        target: &ev.target,
        decision: ev.decision,
        reason: ev.reason.as_deref(),
        session,
        protocol: "http",
        cgroup_id: p.cgroup_id,
        cgroup_path: p.cgroup_path.as_deref(),
        tgid: p.tgid,
        gid: p.gid,
        unit: p.unit.as_deref(),
        identity: ev.identity.as_ref(),
        api: ApiDocSer {
            phase: ev.phase,
            request_seq: ev.request_seq,
            policy: ev.policy.as_deref(),
            rule: ev.rule.as_deref(),
            bytes_in: ev.bytes_in,
            bytes_out: ev.bytes_out,
            duration_us: ev.duration_us,
            values_masked: ev.values_masked,
            request_headers: &ev.request_headers,
            response_headers: &ev.response_headers,
            error: ev.error.as_deref(),
            record,
        },
        allowlist: ev.allowlist.as_ref(),
    })
}

// --- reading API Activity back (issue 17: compact HTTP records) ---

#[derive(Debug, Deserialize)]
struct ApiActivity {
    class_uid: u32,
    time: i64,
    metadata: Metadata,
    #[serde(default)]
    device: Option<Device>,
    #[serde(default)]
    actor: Option<Actor>,
    api: ApiDoc,
    http_request: HttpRequestDoc,
    #[serde(default)]
    http_response: Option<HttpResponseDoc>,
    unmapped: ApiUnmapped,
}

#[derive(Debug, Deserialize)]
struct ApiDoc {
    operation: String,
}

#[derive(Debug, Deserialize)]
struct HttpRequestDoc {
    url: UrlDoc,
}

#[derive(Debug, Deserialize)]
struct UrlDoc {
    path: String,
    #[serde(default)]
    query_string: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HttpResponseDoc {
    code: u16,
}

#[derive(Debug, Deserialize)]
struct ApiUnmapped {
    warden: ApiExt,
}

#[derive(Debug, Deserialize)]
struct ApiExt {
    #[serde(default)]
    allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
    account: String,
    target: String,
    decision: StatementDecision,
    #[serde(default)]
    reason: Option<String>,
    session: String,
    #[serde(default)]
    cgroup_id: Option<u64>,
    #[serde(default)]
    cgroup_path: Option<String>,
    #[serde(default)]
    tgid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    identity: Option<TokenIdentity>,
    api: ApiExtDoc,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct ApiExtDoc {
    phase: StatementPhase,
    request_seq: u64,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(default)]
    duration_us: Option<u64>,
    #[serde(default)]
    values_masked: Option<u64>,
    #[serde(default)]
    request_headers: Vec<(String, String)>,
    #[serde(default)]
    response_headers: Vec<(String, String)>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    record: Option<u8>,
}

/// An HTTP request event decoded back from its OCSF JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedApi {
    pub event: crate::audit::event::ApiEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
    /// The JSON is a rendering of a compact record of this version;
    /// `None`: the JSON was stored as is.
    pub record: Option<u8>,
}

/// Decode API Activity JSON back into the event model (the inverse of
/// [`api_template`]; `verify-export` uses it to find a rendered record).
pub fn decode_api(data: &[u8]) -> Result<DecodedApi, AuditError> {
    let doc: ApiActivity =
        serde_json::from_slice(data).map_err(|e| decode_err(format!("not an API event: {e}")))?;
    if doc.class_uid != CLASS_UID_API_ACTIVITY {
        return Err(decode_err(format!(
            "class_uid {} is not API Activity",
            doc.class_uid
        )));
    }
    let w = doc.unmapped.warden;
    let session = session_of(&w.session)?;
    // The API JSON has no process start or pid reuse (see api_template).
    let process = ProcessInfo {
        tgid: w.tgid,
        gid: w.gid,
        cgroup_id: w.cgroup_id,
        cgroup_path: w.cgroup_path,
        unit: w.unit,
        ..ProcessInfo::default()
    };
    let process = decode_process(doc.actor, process)?;
    let a = w.api;
    Ok(DecodedApi {
        event: crate::audit::event::ApiEvent {
            time_ms: doc.time,
            phase: a.phase,
            decision: w.decision,
            session,
            request_seq: a.request_seq,
            account: w.account,
            target: w.target,
            process,
            identity: w.identity,
            method: doc.api.operation,
            path: doc.http_request.url.path,
            query: doc.http_request.url.query_string,
            request_headers: a.request_headers,
            policy: a.policy,
            rule: a.rule,
            reason: w.reason,
            status: doc.http_response.map(|r| r.code),
            bytes_in: a.bytes_in,
            bytes_out: a.bytes_out,
            duration_us: a.duration_us,
            values_masked: a.values_masked,
            response_headers: a.response_headers,
            error: a.error,
            allowlist: w.allowlist,
        },
        seq: w.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
        record: a.record,
    })
}

/// `unmapped.warden.api` as the verifier and readers need it.
#[derive(Debug, Deserialize)]
pub(crate) struct ProbeApi {
    pub phase: StatementPhase,
}
