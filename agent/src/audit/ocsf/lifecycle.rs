//! Application Lifecycle (6002): the chain's own events, checkpoints and
//! retention prunes.
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

#[allow(clippy::wildcard_imports)]
use super::*;

/// OCSF Application Lifecycle class (chain checkpoints).
pub const CLASS_UID_APPLICATION_LIFECYCLE: u32 = 6002;
/// Store `activity` column of checkpoint events.
pub const CHECKPOINT_ACTIVITY: &str = "checkpoint";
/// Store `decision` column of checkpoint events.
pub const CHECKPOINT_DECISION: &str = "n/a";
/// Store `activity` column of prune events.
pub const PRUNE_ACTIVITY: &str = "prune";
/// OCSF `activity_name` of prune events.
pub const PRUNE_ACTIVITY_NAME: &str = "Prune";
/// OCSF Application Lifecycle event carrying a checkpoint, in
/// serialization order.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ApplicationLifecycle<U> {
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
    pub(super) message: String,
    pub(super) metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<Device>,
    pub(super) app: Product,
    pub(super) unmapped: U,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointUnmapped {
    pub(super) warden: CheckpointExt,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointExt {
    pub(super) checkpoint: CheckpointDoc,
    pub(super) seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointDoc {
    pub(super) origin: String,
    pub(super) size: u64,
    pub(super) head_hash: String,
    pub(super) time_ms: i64,
    pub(super) prev_checkpoint_hash: String,
    pub(super) key_id: String,
    /// The exact signed body bytes (canonical JSON, hence UTF-8).
    pub(super) body: String,
    pub(super) signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) public_key: Option<String>,
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
pub(super) struct PruneUnmapped {
    pub(super) warden: PruneExt,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PruneExt {
    pub(super) prune: PruneRecord,
    pub(super) seq: u64,
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
