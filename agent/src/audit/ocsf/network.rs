//! Network Activity (4001): connection events, encoded, templated and decoded.
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

#[allow(clippy::wildcard_imports)]
use super::*;

/// The class as its events name it.
pub(super) const NETWORK_ACTIVITY: OcsfClass = OcsfClass {
    uid: CLASS_UID_NETWORK_ACTIVITY,
    name: "Network Activity",
    category_uid: CATEGORY_UID_NETWORK,
    category_name: "Network Activity",
};

/// OCSF Network Activity class.
pub const CLASS_UID_NETWORK_ACTIVITY: u32 = 4001;
/// OCSF Network Activity category.
pub const CATEGORY_UID_NETWORK: u32 = 4;
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

pub(super) fn activity_name(activity: ConnActivity) -> &'static str {
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
pub(super) struct NetworkActivity {
    pub(super) activity_id: u8,
    pub(super) activity_name: String,
    pub(super) category_uid: u32,
    pub(super) category_name: String,
    pub(super) class_uid: u32,
    pub(super) class_name: String,
    pub(super) type_uid: u32,
    pub(super) type_name: String,
    pub(super) time: i64,
    pub(super) severity_id: u8,
    pub(super) severity: String,
    pub(super) status_id: u8,
    pub(super) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<String>,
    pub(super) action_id: u8,
    pub(super) action: String,
    pub(super) disposition_id: u8,
    pub(super) disposition: String,
    pub(super) metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<Device>,
    pub(super) src_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<Actor>,
    pub(super) connection_info: ConnectionInfo,
    pub(super) traffic: Traffic,
    pub(super) duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_time: Option<i64>,
    pub(super) unmapped: Unmapped,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ConnectionInfo {
    pub(super) protocol_name: String,
    pub(super) protocol_num: u8,
    pub(super) direction_id: u8,
    pub(super) direction: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Traffic {
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Unmapped {
    pub(super) warden: WardenExt,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WardenExt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<String>,
    pub(super) decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) detail: Option<String>,
    pub(super) session: String,
    pub(super) protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cgroup_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) process_start_boot_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) pid_reused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) identity: Option<TokenIdentity>,
    pub(super) seq: u64,
}

/// The members of a Network Activity event before `metadata`.
#[derive(Serialize)]
pub(super) struct ConnHead<'a> {
    #[serde(flatten)]
    pub(super) head: ClassHead<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<&'a str>,
    #[serde(flatten)]
    pub(super) verdict: VerdictSer,
}

/// The members of a Network Activity event between `metadata` and
/// `unmapped`.
#[derive(Serialize)]
pub(super) struct ConnMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<DeviceSer<'a>>,
    pub(super) src_endpoint: EndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dst_endpoint: Option<EndpointSer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<ActorSer<'a>>,
    pub(super) connection_info: ConnectionInfoSer,
    pub(super) traffic: Traffic,
    pub(super) duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_time: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct ConnectionInfoSer {
    pub(super) protocol_name: &'static str,
    pub(super) protocol_num: u8,
    pub(super) direction_id: u8,
    pub(super) direction: &'static str,
}

/// `unmapped.warden` of a connection event, without `seq`.
#[derive(Serialize)]
pub(super) struct WardenExtSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<&'a str>,
    pub(super) decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) detail: Option<&'a str>,
    pub(super) session: &'a str,
    pub(super) protocol: &'a str,
    #[serde(flatten)]
    pub(super) caller: CallerSer<'a, &'a TokenIdentity>,
}

pub(super) fn type_name(activity: ConnActivity) -> &'static str {
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
            head: ClassHead::new(
                &NETWORK_ACTIVITY,
                (id, activity_name(ev.activity)),
                type_name(ev.activity),
                ev.time_ms,
                severity(allowed),
                status(allowed),
            ),
            status_code: ev.reason.as_deref(),
            status_detail: ev.detail.as_deref(),
            verdict: verdict(allowed),
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
        caller: caller_ser(p, ev.identity.as_ref()),
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
