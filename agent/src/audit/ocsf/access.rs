//! User Access Management (3005): approval transitions.
//!
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

#[allow(clippy::wildcard_imports)]
use super::*;

/// The class as its events name it.
pub(super) const USER_ACCESS_MANAGEMENT: OcsfClass = OcsfClass {
    uid: CLASS_UID_USER_ACCESS_MANAGEMENT,
    name: "User Access Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};

/// OCSF User Access Management class (approval transitions).
pub const CLASS_UID_USER_ACCESS_MANAGEMENT: u32 = 3005;
/// Store `activity` column of approval events.
pub const APPROVAL_ACTIVITY: &str = "approval";

/// The members of a User Access Management event before `metadata`.
#[derive(Serialize)]
pub(super) struct ApprovalHead<'a> {
    #[serde(flatten)]
    pub(super) head: ClassHead<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<&'a str>,
    pub(super) message: &'a str,
}

#[derive(Serialize)]
pub(super) struct ApprovalMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<DeviceSer<'a>>,
    pub(super) user: UserNameSer<'a>,
    pub(super) privileges: [String; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<ApproverActorSer<'a>>,
}

#[derive(Serialize)]
pub(super) struct UserNameSer<'a> {
    pub(super) name: &'a str,
}

#[derive(Serialize)]
pub(super) struct ApproverActorSer<'a> {
    pub(super) user: ApproverUserSer<'a>,
}

#[derive(Serialize)]
pub(super) struct ApproverUserSer<'a> {
    pub(super) uid: Shown<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[GroupSer<'_>]>::is_empty")]
    pub(super) groups: Vec<GroupSer<'a>>,
}

#[derive(Serialize)]
pub(super) struct GroupSer<'a> {
    pub(super) name: &'a str,
}

/// `unmapped.warden` of an approval event, without `seq`.
#[derive(Serialize)]
pub(super) struct ApprovalExtSer<'a> {
    pub(super) account: &'a str,
    pub(super) target: &'a str,
    pub(super) decision: ApprovalStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    pub(super) session: &'a str,
    pub(super) approval: &'a ApprovalEvent,
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
            head: ClassHead::new(
                &USER_ACCESS_MANAGEMENT,
                (activity_id, activity_name),
                format!("User Access Management: {activity_name}"),
                ev.time_ms,
                (severity_id, severity),
                (status_id, status),
            ),
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
pub(super) struct ApprovalDoc {
    pub(super) class_uid: u32,
    pub(super) metadata: MetaUid,
    pub(super) unmapped: ApprovalUnmapped,
}

#[derive(Deserialize)]
pub(super) struct MetaUid {
    pub(super) uid: String,
}

#[derive(Deserialize)]
pub(super) struct ApprovalUnmapped {
    pub(super) warden: ApprovalWarden,
}

#[derive(Deserialize)]
pub(super) struct ApprovalWarden {
    pub(super) approval: ApprovalEvent,
    pub(super) seq: u64,
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
