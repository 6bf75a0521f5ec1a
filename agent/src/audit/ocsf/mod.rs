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
//! One file per OCSF class: [`network`] (4001), [`datastore`] (6005),
//! [`api`] (6003), [`access`] (3005), [`config`] (5019), [`lifecycle`]
//! (6002) and [`kernel`] (1007); [`probe`] reads any stored event's kind.
//! Shared here: `metadata`, product, device, endpoints, the
//! actor/process/identity block ([`actor_ser`]) every class writes, the
//! seq template and the decode helpers.

mod access;
mod api;
mod config;
mod datastore;
mod kernel;
mod lifecycle;
mod network;
mod probe;
#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use memchr::memmem;

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::checkpoint::Checkpoint;

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
pub use self::{access::*, api::*, config::*, datastore::*, lifecycle::*, network::*, probe::*};

/// OCSF schema version written into `metadata.version`.
pub const OCSF_VERSION: &str = "1.8.0";
/// `metadata.log_name` of every Warden event.
pub const LOG_NAME: &str = "warden";
/// OCSF Application Activity category.
pub const CATEGORY_UID_APPLICATION: u32 = 6;
/// OCSF `activity_id` Other, used for checkpoints.
pub const ACTIVITY_ID_OTHER: u8 = 99;
/// Store `decision` column of every event that is not a decision
/// (checkpoints, configuration changes, prunes).
pub const NO_DECISION: &str = "n/a";
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

/// An OCSF class as its events name it (each class file has its constant).
struct OcsfClass {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

/// The members every class's event starts with, in this order: activity,
/// category, class, type (`type_uid = class_uid * 100 + activity_id`),
/// time, severity and status. The one builder of that head for Network,
/// Datastore, API, Device Config State Change and User Access Management
/// (the kernel class writes its action before its status).
#[derive(Serialize)]
struct ClassHead<'a> {
    activity_id: u8,
    activity_name: &'a str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: Cow<'a, str>,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
}

impl<'a> ClassHead<'a> {
    fn new(
        class: &OcsfClass,
        (activity_id, activity_name): (u8, &'a str),
        type_name: impl Into<Cow<'a, str>>,
        time: i64,
        (severity_id, severity): (u8, &'static str),
        (status_id, status): (u8, &'static str),
    ) -> Self {
        Self {
            activity_id,
            activity_name,
            category_uid: class.category_uid,
            category_name: class.category_name,
            class_uid: class.uid,
            class_name: class.name,
            type_uid: class.uid * 100 + u32::from(activity_id),
            type_name: type_name.into(),
            time,
            severity_id,
            severity,
            status_id,
            status,
        }
    }
}

/// Severity of a decision: 1 Informational when allowed, else 3 Medium.
fn severity(allowed: bool) -> (u8, &'static str) {
    if allowed {
        (1, "Informational")
    } else {
        (3, "Medium")
    }
}

/// 1 Success, or 2 Failure.
fn status(success: bool) -> (u8, &'static str) {
    if success {
        (1, "Success")
    } else {
        (2, "Failure")
    }
}

/// Action and disposition of a decision (security-control profile):
/// Allowed/Allowed, or Denied/Blocked.
#[derive(Serialize)]
struct VerdictSer {
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
}

fn verdict(allowed: bool) -> VerdictSer {
    if allowed {
        VerdictSer {
            action_id: 1,
            action: "Allowed",
            disposition_id: 1,
            disposition: "Allowed",
        }
    } else {
        VerdictSer {
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
        }
    }
}

/// The caller's process facts and identity under `unmapped.warden`, written
/// alike by every class that has a caller (connections, statements, HTTP
/// requests; flattened into each class's extension right after its
/// `protocol`). `I` is how the class writes the identity token (statements
/// leave out the minted attestation).
#[derive(Serialize)]
struct CallerSer<'a, I> {
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
    identity: Option<I>,
}

/// The one builder of the caller block ([`actor_ser`] is its OCSF `actor`).
fn caller_ser<I>(p: &ProcessInfo, identity: Option<I>) -> CallerSer<'_, I> {
    CallerSer {
        cgroup_id: p.cgroup_id,
        cgroup_path: p.cgroup_path.as_deref(),
        tgid: p.tgid,
        gid: p.gid,
        unit: p.unit.as_deref(),
        process_start_boot_ns: p.start_boot_ns,
        pid_reused: p.pid_reused,
        identity,
    }
}

impl<I> CallerSer<'_, I> {
    /// Without the process start and pid reuse (API Activity does not
    /// carry them).
    fn without_start(self) -> Self {
        Self {
            process_start_boot_ns: None,
            pid_reused: false,
            ..self
        }
    }
}

/// `unmapped.warden.session` (16 hex digits) of a statement or API event.
fn session_of(hex: &str) -> Result<SessionId, AuditError> {
    u64::from_str_radix(hex, 16)
        .map(SessionId)
        .map_err(|_| decode_err("unmapped.warden.session is not hex"))
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
