//! Approvals across a restart. Every transition of a request or grant is
//! already a chain event (OCSF User Access Management); at start the agent
//! reads back those of the last `max_grant_secs + approval_timeout_secs`
//! and folds them: a grant approved with `--for`, not revoked and not yet
//! expired is in force again with its expiry and use count; a request that
//! was still held when the agent stopped (its client's connection ended
//! with the agent) is recorded as withdrawn, so the trail says what became
//! of it. The chain is the only store: nothing else can disagree with it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::audit::event::{ApprovalEvent, ApprovalStatus};
use crate::audit::{AuditError, AuditReader, TailFilter};

use super::GrantView;

/// OCSF User Access Management, the class of approval events.
const APPROVAL_CLASS: u32 = 3005;
/// Events read per query.
const PAGE: usize = 5_000;

/// What the chain says is still open.
#[derive(Debug, Default, PartialEq)]
pub struct Restored {
    /// Grants in force, by id.
    pub grants: Vec<GrantView>,
    /// `Requested` events with no end recorded (oldest first).
    pub orphaned: Vec<ApprovalEvent>,
}

/// Approval events stored at or after `since_ms`, in chain order. A store
/// that does not exist yet has none.
pub fn read(store: &Path, since_ms: i64) -> Result<Vec<ApprovalEvent>, AuditError> {
    if !store.exists() {
        return Ok(Vec::new());
    }
    let reader = AuditReader::open(store)?;
    let filter = TailFilter {
        since_ms: Some(since_ms),
        ..TailFilter::default()
    };
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = reader.query(&filter, after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = last.seq;
        for ev in page.iter().filter(|e| e.class_uid == APPROVAL_CLASS) {
            out.push(crate::audit::ocsf::decode_approval(&ev.data)?.event);
        }
    }
}

/// Folds approval events (chain order) into what is open at `now_ms`.
pub fn fold(events: impl IntoIterator<Item = ApprovalEvent>, now_ms: i64) -> Restored {
    let mut requested: BTreeMap<(i64, String), ApprovalEvent> = BTreeMap::new();
    let mut by_id: HashMap<String, (i64, String)> = HashMap::new();
    let mut grants: HashMap<String, GrantView> = HashMap::new();
    for ev in events {
        let request = ev.request_id.clone();
        match ev.status {
            ApprovalStatus::Requested => {
                if let Some(id) = request {
                    let key = (ev.time_ms, id.clone());
                    by_id.insert(id, key.clone());
                    requested.insert(key, ev);
                }
            }
            ApprovalStatus::Approved
            | ApprovalStatus::Denied
            | ApprovalStatus::TimedOut
            | ApprovalStatus::Withdrawn => {
                if let Some(key) = request.and_then(|id| by_id.remove(&id)) {
                    requested.remove(&key);
                }
                if ev.status == ApprovalStatus::Approved
                    && let (Some(id), Some(until), Some(approver)) =
                        (ev.grant_id.clone(), ev.expires_ms, ev.approver.clone())
                {
                    grants.insert(
                        id.clone(),
                        GrantView {
                            id,
                            account: ev.account,
                            target: ev.target,
                            fingerprint: ev.fingerprint,
                            statement: ev.statement,
                            request_id: ev.request_id.unwrap_or_default(),
                            created_ms: ev.time_ms,
                            until_ms: until,
                            approver,
                            uses: 0,
                        },
                    );
                }
            }
            ApprovalStatus::GrantUsed => {
                if let Some(g) = ev.grant_id.as_ref().and_then(|id| grants.get_mut(id)) {
                    g.uses += 1;
                }
            }
            ApprovalStatus::Revoked => {
                if let Some(id) = &ev.grant_id {
                    grants.remove(id);
                }
            }
            ApprovalStatus::DecisionRefused => {}
        }
    }
    let mut grants: Vec<GrantView> = grants
        .into_values()
        .filter(|g| g.until_ms > now_ms)
        .collect();
    grants.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Restored {
        grants,
        orphaned: requested.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ApproverIdentity, ProcessInfo};

    fn ev(status: ApprovalStatus, at: i64, request: &str, grant: Option<&str>) -> ApprovalEvent {
        ApprovalEvent {
            time_ms: at,
            status,
            request_id: (!request.is_empty()).then(|| request.to_owned()),
            grant_id: grant.map(str::to_owned),
            account: "app".into(),
            target: "pg".into(),
            protocol: "postgres".into(),
            session: None,
            process: ProcessInfo::default(),
            identity: None,
            statement: "DELETE FROM t WHERE id = $1".into(),
            fingerprint: "f1".into(),
            policy: None,
            rule: None,
            risk: "write".into(),
            requested_ms: at,
            expires_ms: None,
            approver: None,
            reason: None,
            learned: None,
        }
    }

    fn approved(at: i64, request: &str, grant: &str, until: i64) -> ApprovalEvent {
        let mut e = ev(ApprovalStatus::Approved, at, request, Some(grant));
        e.expires_ms = Some(until);
        e.approver = Some(ApproverIdentity {
            uid: 1000,
            user: Some("ann".into()),
            pid: Some(7),
            ..ApproverIdentity::default()
        });
        e
    }

    #[test]
    fn live_grants_come_back_with_their_uses_and_open_requests_are_orphaned() {
        let events = vec![
            ev(ApprovalStatus::Requested, 10, "r1", None),
            approved(11, "r1", "g1", 1_000),
            ev(ApprovalStatus::GrantUsed, 12, "r1", Some("g1")),
            ev(ApprovalStatus::GrantUsed, 13, "r1", Some("g1")),
            // Approved once, no grant.
            ev(ApprovalStatus::Requested, 14, "r2", None),
            ev(ApprovalStatus::Approved, 15, "r2", None),
            // Granted then revoked.
            ev(ApprovalStatus::Requested, 16, "r3", None),
            approved(17, "r3", "g3", 1_000),
            ev(ApprovalStatus::Revoked, 18, "", Some("g3")),
            // Granted, expired by now.
            ev(ApprovalStatus::Requested, 19, "r4", None),
            approved(20, "r4", "g4", 500),
            // Held when the agent stopped.
            ev(ApprovalStatus::Requested, 21, "r5", None),
            // Timed out, denied, withdrawn.
            ev(ApprovalStatus::Requested, 22, "r6", None),
            ev(ApprovalStatus::TimedOut, 23, "r6", None),
            ev(ApprovalStatus::Requested, 24, "r7", None),
            ev(ApprovalStatus::Denied, 25, "r7", None),
            ev(ApprovalStatus::Requested, 26, "r8", None),
            ev(ApprovalStatus::Withdrawn, 27, "r8", None),
            ev(ApprovalStatus::Requested, 28, "r9", None),
        ];
        let r = fold(events, 600);
        assert_eq!(r.grants.len(), 1, "{r:?}");
        let g = &r.grants[0];
        assert_eq!(
            (
                g.id.as_str(),
                g.request_id.as_str(),
                g.until_ms,
                g.uses,
                g.created_ms
            ),
            ("g1", "r1", 1_000, 2, 11)
        );
        assert_eq!(g.approver.uid, 1000);
        assert_eq!(g.fingerprint, "f1");
        let orphaned: Vec<_> = r
            .orphaned
            .iter()
            .map(|e| e.request_id.as_deref().unwrap())
            .collect();
        assert_eq!(orphaned, ["r5", "r9"]);
    }

    #[test]
    fn no_store_no_events() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("audit.db"), 0).unwrap().is_empty());
        assert_eq!(fold(Vec::new(), 0), Restored::default());
    }
}
