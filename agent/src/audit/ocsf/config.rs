//! Device Config State Change (5019): configuration loads and reloads.
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

#[allow(clippy::wildcard_imports)]
use super::*;

/// The class as its events name it.
pub(super) const DEVICE_CONFIG_STATE_CHANGE: OcsfClass = OcsfClass {
    uid: CLASS_UID_DEVICE_CONFIG_STATE_CHANGE,
    name: "Device Config State Change",
    category_uid: CATEGORY_UID_DISCOVERY,
    category_name: "Discovery",
};

/// OCSF Device Config State Change class (configuration loads/reloads).
pub const CLASS_UID_DEVICE_CONFIG_STATE_CHANGE: u32 = 5019;
/// OCSF Discovery category.
pub const CATEGORY_UID_DISCOVERY: u32 = 5;
/// Store `activity` column of configuration events.
pub const CONFIG_ACTIVITY: &str = "config";
/// The members of a Device Config State Change event before `metadata`.
#[derive(Serialize)]
pub(super) struct ConfigHead<'a> {
    #[serde(flatten)]
    pub(super) head: ClassHead<'a>,
    pub(super) message: &'a str,
}

#[derive(Serialize)]
pub(super) struct ConfigMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<DeviceSer<'a>>,
}

#[derive(Serialize)]
pub(super) struct ConfigExtSer<'a> {
    pub(super) config: ConfigDocSer<'a>,
}

#[derive(Serialize)]
pub(super) struct ConfigDocSer<'a> {
    pub(super) action: ConfigAction,
    pub(super) path: &'a str,
    pub(super) sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) previous_sha256: Option<&'a str>,
    pub(super) outcome: ConfigOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
}

pub(super) fn config_activity_name(action: ConfigAction) -> &'static str {
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
            head: ClassHead::new(
                &DEVICE_CONFIG_STATE_CHANGE,
                (ACTIVITY_ID_OTHER, config_activity_name(change.action)),
                "Device Config State Change: Other",
                change.time_ms,
                (1, "Informational"),
                (status_id, status),
            ),
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

/// OCSF Device Config State Change event, for decoding.
#[derive(Debug, Deserialize)]
pub(super) struct DeviceConfigStateChange {
    pub(super) activity_id: u8,
    pub(super) class_uid: u32,
    pub(super) time: i64,
    pub(super) metadata: Metadata,
    #[serde(default)]
    pub(super) device: Option<Device>,
    pub(super) unmapped: ConfigUnmapped,
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfigUnmapped {
    pub(super) warden: ConfigExt,
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfigExt {
    pub(super) config: ConfigDoc,
    pub(super) seq: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfigDoc {
    pub(super) action: ConfigAction,
    pub(super) path: String,
    pub(super) sha256: String,
    #[serde(default)]
    pub(super) detail: Option<String>,
    #[serde(default)]
    pub(super) previous_sha256: Option<String>,
    #[serde(default)]
    pub(super) outcome: ConfigOutcome,
    #[serde(default)]
    pub(super) reason: Option<String>,
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
