//! OCSF 1.8 encoding of audit events: connection events (Network Activity,
//! class 4001) and chain checkpoints (Application Lifecycle, class 6002).
//!
//! Each event is encoded exactly once, by the writer when it assigns `seq`;
//! the resulting bytes are stored verbatim and are what the hash chain covers.
//! The encoding is deterministic: fixed struct field order, absent values are
//! omitted (never `null`).
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

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::checkpoint::Checkpoint;
use super::event::{
    ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId, TokenIdentity,
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

fn activity_from_id(id: u8) -> Option<ConnActivity> {
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

fn endpoint(addr: SocketAddr, svc_name: Option<String>) -> Endpoint {
    Endpoint {
        ip: Some(addr.ip().to_string()),
        port: Some(addr.port()),
        svc_name,
    }
}

fn actor(p: &ProcessInfo) -> Option<Actor> {
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
pub fn encode_connection(
    ev: &ConnectionEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    let id = activity_id(ev.activity);
    let allowed = ev.decision == Decision::Allowed;
    let session = ev.session.to_string();
    let dst_endpoint = match (ev.orig_dst, ev.target.clone()) {
        (Some(addr), svc) => Some(endpoint(addr, svc)),
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
        src_endpoint: endpoint(ev.client, None),
        dst_endpoint,
        actor: actor(&ev.process),
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

/// OCSF Application Lifecycle event carrying a checkpoint, in
/// serialization order.
#[derive(Debug, Serialize, Deserialize)]
struct ApplicationLifecycle {
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
    unmapped: CheckpointUnmapped,
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
    let doc: ApplicationLifecycle = serde_json::from_slice(data)
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
    let mut process = ProcessInfo {
        tgid: w.tgid,
        gid: w.gid,
        cgroup_id: w.cgroup_id,
        cgroup_path: w.cgroup_path,
        unit: w.unit,
        start_boot_ns: w.process_start_boot_ns,
        pid_reused: w.pid_reused,
        ..ProcessInfo::default()
    };
    if let Some(actor) = doc.actor {
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
}
