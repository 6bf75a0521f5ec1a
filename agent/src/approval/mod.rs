//! Just-in-time approvals, protocol-neutral: a protocol handler whose
//! policy says `approve` asks [`Approvals::request`]; it either passes
//! through a live grant ([`Gate::Granted`]) or gets a [`Hold`] to wait on
//! until an approver decides (`warden approvals approve|deny`), the client
//! withdraws (cancel, disconnect) or the timeout passes (= deny). Grants
//! (`approve --for`) let the same statement fingerprint through for the
//! same account and target for a while, and can be revoked.
//!
//! Every transition is an audit chain event ([`ApprovalEvent`], committed
//! before it takes effect: a statement is released only once its approval
//! is on record). Who may decide is checked here ([`peer::Peer`] against
//! `[approvals] approvers`); a uid of the requesting account (its enrolled
//! uids or the requesting process's uid, checked against every uid the
//! deciding process holds), and a process that runs in or below a cgroup
//! enrolled for the account, or in or below the requesting process's own
//! cgroup (learnt when it connected, [`peer`]), can never decide the
//! account's requests, root included; nor can one whose place is unknown.
//! New requests are announced to webhooks ([`webhook`]) off the data path.
//!
//! This module knows nothing of any wire protocol: the handler supplies
//! the masked statement, its fingerprint ([`fingerprint`]) and the facts of
//! the caller.

pub mod fingerprint;
pub mod learn;
pub mod peer;
pub mod restore;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::audit::AuditHandle;
use crate::audit::event::{
    ApprovalEvent, ApprovalStatus, ApproverIdentity, ProcessInfo, SessionId, TokenIdentity,
};
use crate::audit::store::now_ms;
use crate::config::approvals::ApprovalsSection;

use peer::Peer;
use webhook::{Notice, Notifier};

/// Characters of request and grant ids: no 0/o, 1/l/i look-alikes.
const ID_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// Length of a request id (grant ids are `g-` and as many).
const ID_LEN: usize = 8;
/// Decided requests kept for `show` (most recent).
const HISTORY: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no pending approval request {id}")]
    UnknownRequest { id: String },
    #[error("no grant {id}")]
    UnknownGrant { id: String },
    #[error("uid {uid} is not an approver (see [approvals] approvers)")]
    NotApprover { uid: u32 },
    #[error(
        "uid {uid} belongs to the requesting account {account} and cannot decide its own request"
    )]
    OwnRequest { uid: u32, account: String },
    #[error(
        "the deciding process (in cgroup {cgroup}) is enrolled for the requesting account {account}, by its cgroup or one of its uids, and cannot decide its requests"
    )]
    EnrolledPeer { cgroup: String, account: String },
    #[error(
        "the deciding process runs in cgroup {cgroup}, in or below the requesting process's cgroup {requester}, and cannot decide its requests"
    )]
    RequesterCgroup { cgroup: String, requester: String },
    #[error("where the deciding process runs is unknown ({why}), so it cannot decide")]
    UnplacedPeer { why: String },
    #[error("a reason is required ([approvals] require_reason = true)")]
    ReasonRequired,
    #[error("grant duration {secs}s exceeds [approvals] max_grant_secs = {max}")]
    GrantTooLong { secs: u64, max: u64 },
    #[error("the audit trail cannot be written, so nothing was changed: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// `approve --learn` could not add the fingerprint (nothing changed).
    #[error("{0}")]
    Learn(#[from] learn::LearnError),
}

/// What a protocol handler asks approval for.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub account: String,
    pub target: String,
    pub protocol: String,
    pub session: Option<SessionId>,
    pub process: ProcessInfo,
    pub identity: Option<TokenIdentity>,
    /// Masked.
    pub statement: String,
    /// [`fingerprint::shape_fingerprint`], [`fingerprint::exact_fingerprint`]
    /// or [`fingerprint::http_fingerprint`].
    pub fingerprint: String,
    pub policy: Option<String>,
    pub rule: Option<String>,
    /// Risk class, e.g. the statement class.
    pub risk: String,
    /// uids that belong to the account (enrolled uids); with the process's
    /// uid, they can never decide this request.
    pub account_uids: Vec<u32>,
}

/// How a held request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Approved {
        approver: ApproverIdentity,
        reason: Option<String>,
        grant_id: Option<String>,
    },
    Denied {
        approver: ApproverIdentity,
        reason: Option<String>,
    },
    TimedOut,
    Withdrawn {
        why: String,
    },
    /// The decision could not be recorded: refused (fail closed).
    Failed {
        why: String,
    },
}

impl Resolution {
    pub fn approved(&self) -> bool {
        matches!(self, Resolution::Approved { .. })
    }

    /// How request `id` ended, for the audit trail and the client, e.g.
    /// `approval k3x9m2pq denied by alice: not during the freeze`.
    pub fn describe(&self, id: &str, timeout_secs: u64) -> String {
        let who = |a: &ApproverIdentity| a.user.clone().unwrap_or_else(|| format!("uid {}", a.uid));
        let with = |r: &Option<String>| r.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        match self {
            Resolution::Approved {
                approver,
                reason,
                grant_id,
            } => format!(
                "approval {id} approved by {}{}{}",
                who(approver),
                grant_id
                    .as_ref()
                    .map(|g| format!(" (grant {g})"))
                    .unwrap_or_default(),
                with(reason)
            ),
            Resolution::Denied { approver, reason } => {
                format!("approval {id} denied by {}{}", who(approver), with(reason))
            }
            Resolution::TimedOut => format!("approval {id} timed out after {timeout_secs}s"),
            Resolution::Withdrawn { why } => format!("approval {id} withdrawn ({why})"),
            Resolution::Failed { why } => format!("approval {id} failed: {why}"),
        }
    }
}

/// The handler's answer from [`Approvals::request`].
pub enum Gate {
    /// A live grant covers it (its use is on record): go ahead.
    Granted { grant_id: String },
    /// Wait on the hold.
    Held(Hold),
}

/// A decision asked of [`Approvals::decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approve: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// With `approve`: also grant the fingerprint for this long.
    #[serde(default)]
    pub grant_secs: Option<u64>,
}

/// A request as listed and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    pub id: String,
    /// `pending`, or the final status.
    pub status: String,
    pub account: String,
    pub target: String,
    pub protocol: String,
    #[serde(default)]
    pub session: Option<String>,
    pub process: ProcessInfo,
    #[serde(default)]
    pub identity_sub: Option<String>,
    pub statement: String,
    pub fingerprint: String,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    pub risk: String,
    pub requested_ms: i64,
    pub expires_ms: i64,
    #[serde(default)]
    pub decided_ms: Option<i64>,
    #[serde(default)]
    pub approver: Option<ApproverIdentity>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub grant_id: Option<String>,
    /// The fingerprint `approve --learn` added to the grant's allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<String>,
}

/// A grant as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantView {
    pub id: String,
    pub account: String,
    pub target: String,
    pub fingerprint: String,
    pub statement: String,
    pub request_id: String,
    pub created_ms: i64,
    pub until_ms: i64,
    pub approver: ApproverIdentity,
    pub uses: u64,
}

/// `approvals list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub pending: Vec<RequestView>,
    pub grants: Vec<GrantView>,
}

struct Pending {
    view: RequestView,
    spec: RequestSpec,
    /// What `approve --learn` would add to an allow-list.
    learn: Option<learn::LearnCandidate>,
    tx: Option<oneshot::Sender<Resolution>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    grants: HashMap<String, GrantView>,
    /// Decided requests, oldest first.
    history: std::collections::VecDeque<RequestView>,
}

/// The approvals of one agent.
pub struct Approvals {
    cfg: ApprovalsSection,
    audit: AuditHandle,
    state: Mutex<State>,
    notifier: Option<Notifier>,
    /// How an approver runs the approvals CLI (`warden approvals`, with
    /// `--socket` when it is not the default).
    cli: String,
    /// One `approve --learn` at a time writes allow-list files.
    learning: tokio::sync::Mutex<()>,
}

impl Approvals {
    /// `cli`: how an approver runs the approvals CLI (`warden approvals`).
    pub fn new(cfg: ApprovalsSection, audit: AuditHandle, cli: String) -> Arc<Self> {
        let notifier = Notifier::start(cfg.webhooks.clone());
        Arc::new(Self {
            cfg,
            audit,
            state: Mutex::new(State::default()),
            notifier,
            cli,
            learning: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &ApprovalsSection {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain map operations under the lock; a poisoned lock still holds
        // consistent maps.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The command an approver runs.
    pub fn approve_line(&self, id: &str) -> String {
        format!("{} approve {id}", self.cli)
    }

    fn deny_line(&self, id: &str) -> String {
        format!("{} deny {id}", self.cli)
    }

    /// Asks for approval: through a live grant, or held. `Err` (the audit
    /// trail failed): refuse.
    pub async fn request(self: &Arc<Self>, spec: RequestSpec) -> Result<Gate, ApprovalError> {
        self.request_learnable(spec, None).await
    }

    /// [`Approvals::request`] of a request an allow-list held: `learn` is
    /// what `approve --learn` adds to it.
    pub async fn request_learnable(
        self: &Arc<Self>,
        spec: RequestSpec,
        learn: Option<learn::LearnCandidate>,
    ) -> Result<Gate, ApprovalError> {
        let now = now_ms();
        let grant = {
            let mut st = self.lock();
            st.grants.retain(|_, g| g.until_ms > now);
            st.grants
                .values_mut()
                .find(|g| {
                    g.account == spec.account
                        && g.target == spec.target
                        && g.fingerprint == spec.fingerprint
                })
                .map(|g| {
                    g.uses += 1;
                    (g.id.clone(), g.request_id.clone(), g.until_ms)
                })
        };
        if let Some((grant_id, request_id, until)) = grant {
            let mut ev = event(&spec, ApprovalStatus::GrantUsed, now, now);
            ev.grant_id = Some(grant_id.clone());
            ev.request_id = Some(request_id);
            ev.expires_ms = Some(until);
            self.audit.record(ev).await?;
            return Ok(Gate::Granted { grant_id });
        }
        let timeout = Duration::from_secs(self.cfg.approval_timeout_secs);
        let expires = now + timeout.as_millis() as i64;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.lock();
            let id = loop {
                let id = random_id();
                if !st.pending.contains_key(&id) && !st.history.iter().any(|h| h.id == id) {
                    break id;
                }
            };
            st.pending.insert(
                id.clone(),
                Pending {
                    view: view(&id, &spec, now, expires),
                    spec: spec.clone(),
                    learn,
                    tx: Some(tx),
                },
            );
            id
        };
        let mut ev = event(&spec, ApprovalStatus::Requested, now, now);
        ev.request_id = Some(id.clone());
        ev.expires_ms = Some(expires);
        if let Err(e) = self.audit.record(ev).await {
            self.lock().pending.remove(&id);
            return Err(e.into());
        }
        if let Some(n) = &self.notifier {
            n.notify(Notice {
                event: "approval_requested",
                id: id.clone(),
                account: spec.account.clone(),
                target: spec.target.clone(),
                protocol: spec.protocol.clone(),
                statement: spec.statement.clone(),
                risk: spec.risk.clone(),
                rule: spec.rule.clone(),
                pid: spec.process.pid,
                uid: spec.process.uid,
                exe: spec.process.exe.clone(),
                requested_ms: now,
                expires_ms: expires,
                approve: self.approve_line(&id),
                deny: self.deny_line(&id),
            });
        }
        Ok(Gate::Held(Hold {
            id,
            rx: Some(rx),
            deadline: tokio::time::Instant::now() + timeout,
            svc: Arc::clone(self),
        }))
    }

    /// Ends a pending request without a decision (`TimedOut`, `Withdrawn`);
    /// `false` when it was no longer pending.
    pub async fn end(&self, id: &str, res: Resolution) -> bool {
        let Some(mut p) = self.lock().pending.remove(id) else {
            return false;
        };
        let (status, reason) = match &res {
            Resolution::TimedOut => (
                ApprovalStatus::TimedOut,
                Some(format!(
                    "no decision within {}s",
                    self.cfg.approval_timeout_secs
                )),
            ),
            Resolution::Withdrawn { why } => (ApprovalStatus::Withdrawn, Some(why.clone())),
            _ => (ApprovalStatus::Withdrawn, None),
        };
        let now = now_ms();
        let mut ev = event(&p.spec, status, p.view.requested_ms, now);
        ev.request_id = Some(id.to_owned());
        ev.reason = reason.clone();
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(request = id, error = %e, "could not record the end of an approval request");
        }
        self.remember(p.view.clone(), status, now, None, reason, None);
        if let Some(tx) = p.tx.take() {
            let _ = tx.send(res);
        }
        true
    }

    /// Withdraws a pending request (the client cancelled or left).
    pub async fn withdraw(&self, id: &str, why: &str) -> bool {
        self.end(
            id,
            Resolution::Withdrawn {
                why: why.to_owned(),
            },
        )
        .await
    }

    /// An approver's decision on `id` from `peer`.
    pub async fn decide(
        &self,
        id: &str,
        peer: &Peer,
        d: Decision,
    ) -> Result<Resolution, ApprovalError> {
        self.decide_learning(id, peer, d, false).await
    }

    /// [`Approvals::decide`]; with `learn` (`approve --learn`), an approval
    /// also adds the request's fingerprint to its grant's allow-list
    /// ([`learn`]).
    pub async fn decide_learning(
        &self,
        id: &str,
        peer: &Peer,
        d: Decision,
        learn: bool,
    ) -> Result<Resolution, ApprovalError> {
        let who = peer.identity();
        let (spec, candidate) = {
            let st = self.lock();
            match st.pending.get(id) {
                Some(p) => (p.spec.clone(), p.learn.clone()),
                None => {
                    return Err(ApprovalError::UnknownRequest { id: id.to_owned() });
                }
            }
        };
        let reason = d.reason.clone().filter(|r| !r.trim().is_empty());
        let refusal = if !peer.is_approver(&self.cfg.approvers) {
            Some(ApprovalError::NotApprover { uid: peer.uid })
        } else if let Some(&uid) = peer
            .uids
            .iter()
            .find(|u| spec.account_uids.contains(u) || spec.process.uid == Some(**u))
        {
            Some(ApprovalError::OwnRequest {
                uid,
                account: spec.account.clone(),
            })
        } else if let Some(err) = placement_refusal(peer, &spec) {
            Some(err)
        } else if self.cfg.require_reason && reason.is_none() {
            Some(ApprovalError::ReasonRequired)
        } else if learn && !d.approve {
            Some(learn::LearnError::NotApproving.into())
        } else if learn && candidate.is_none() {
            Some(learn::LearnError::NotLearnable { id: id.to_owned() }.into())
        } else {
            match d.grant_secs {
                Some(s) if s == 0 || s > self.cfg.max_grant_secs => {
                    Some(ApprovalError::GrantTooLong {
                        secs: s,
                        max: self.cfg.max_grant_secs,
                    })
                }
                _ => None,
            }
        };
        if let Some(err) = refusal {
            let now = now_ms();
            let mut ev = event(&spec, ApprovalStatus::DecisionRefused, now, now);
            ev.request_id = Some(id.to_owned());
            ev.approver = Some(who);
            ev.reason = Some(format!(
                "{} refused: {err}",
                if d.approve { "approval" } else { "denial" }
            ));
            self.audit.record(ev).await?;
            tracing::warn!(request = id, peer.uid = peer.uid, error = %err, "approval decision refused");
            return Err(err);
        }
        // `--learn`: the allow-list file is written first (nothing else
        // changes if it cannot be), one learner at a time.
        let _learning;
        let mut staged = None;
        if let (true, Some(c)) = (learn, &candidate) {
            _learning = self.learning.lock().await;
            match learn::write(c, id, &who, now_ms()) {
                Ok(s) => staged = Some(s),
                Err(err) => {
                    let now = now_ms();
                    let mut ev = event(&spec, ApprovalStatus::DecisionRefused, now, now);
                    ev.request_id = Some(id.to_owned());
                    ev.approver = Some(who);
                    ev.reason = Some(format!("approval --learn refused: {err}"));
                    self.audit.record(ev).await?;
                    tracing::warn!(request = id, error = %err, "approve --learn: the allow-list file was not changed");
                    return Err(err.into());
                }
            }
        }
        // First come, first served: whoever removes it decides.
        let Some(mut p) = self.lock().pending.remove(id) else {
            if let Some(s) = staged {
                s.revert();
            }
            return Err(ApprovalError::UnknownRequest { id: id.to_owned() });
        };
        let now = now_ms();
        let grant = match (d.approve, d.grant_secs) {
            (true, Some(secs)) => Some(GrantView {
                id: format!("g-{}", random_id()),
                account: spec.account.clone(),
                target: spec.target.clone(),
                fingerprint: spec.fingerprint.clone(),
                statement: spec.statement.clone(),
                request_id: id.to_owned(),
                created_ms: now,
                until_ms: now + (secs as i64) * 1000,
                approver: who.clone(),
                uses: 0,
            }),
            _ => None,
        };
        let status = if d.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        let mut ev = event(&spec, status, p.view.requested_ms, now);
        ev.request_id = Some(id.to_owned());
        ev.approver = Some(who.clone());
        ev.reason = reason.clone();
        ev.grant_id = grant.as_ref().map(|g| g.id.clone());
        ev.expires_ms = grant.as_ref().map(|g| g.until_ms);
        let learned = staged
            .as_ref()
            .filter(|s| s.written())
            .and(candidate.as_ref())
            .map(|c| c.fingerprint.id.clone());
        ev.learned.clone_from(&learned);
        if let Err(e) = self.audit.record(ev).await {
            // Not on record: not in effect. The statement is refused.
            if let Some(s) = staged {
                s.revert();
            }
            if let Some(tx) = p.tx.take() {
                let _ = tx.send(Resolution::Failed {
                    why: "the decision could not be recorded".into(),
                });
            }
            return Err(e.into());
        }
        let grant_id = grant.as_ref().map(|g| g.id.clone());
        if let Some(g) = grant {
            self.lock().grants.insert(g.id.clone(), g);
        }
        if let (Some(s), Some(c)) = (staged, &candidate) {
            tracing::info!(request = id, fingerprint = %c.fingerprint.id, grant = %c.allowlist.grant, written = s.written(), "approve --learn: fingerprint added to the allow-list");
            s.commit(c);
        }
        let mut view = p.view.clone();
        view.learned = learned;
        self.remember(
            view,
            status,
            now,
            Some(who.clone()),
            reason.clone(),
            grant_id.clone(),
        );
        let res = if d.approve {
            Resolution::Approved {
                approver: who,
                reason,
                grant_id,
            }
        } else {
            Resolution::Denied {
                approver: who,
                reason,
            }
        };
        if let Some(tx) = p.tx.take() {
            let _ = tx.send(res.clone());
        }
        Ok(res)
    }

    /// Revokes a grant (an approver only).
    pub async fn revoke(
        &self,
        grant_id: &str,
        peer: &Peer,
        reason: Option<String>,
    ) -> Result<(), ApprovalError> {
        if !peer.is_approver(&self.cfg.approvers) {
            return Err(ApprovalError::NotApprover { uid: peer.uid });
        }
        let Some(g) = self.lock().grants.remove(grant_id) else {
            return Err(ApprovalError::UnknownGrant {
                id: grant_id.to_owned(),
            });
        };
        let now = now_ms();
        let ev = ApprovalEvent {
            time_ms: now,
            status: ApprovalStatus::Revoked,
            request_id: Some(g.request_id.clone()),
            grant_id: Some(g.id.clone()),
            account: g.account.clone(),
            target: g.target.clone(),
            protocol: String::new(),
            session: None,
            process: ProcessInfo::default(),
            identity: None,
            statement: g.statement.clone(),
            fingerprint: g.fingerprint.clone(),
            policy: None,
            rule: None,
            risk: String::new(),
            requested_ms: g.created_ms,
            expires_ms: Some(g.until_ms),
            approver: Some(peer.identity()),
            reason,
            learned: None,
        };
        if let Err(e) = self.audit.record(ev).await {
            // Keep the grant: the revocation is not on record.
            self.lock().grants.insert(g.id.clone(), g);
            return Err(e.into());
        }
        Ok(())
    }

    /// Pending requests and live grants.
    pub fn list(&self) -> Listing {
        let now = now_ms();
        let mut st = self.lock();
        st.grants.retain(|_, g| g.until_ms > now);
        let mut pending: Vec<RequestView> = st.pending.values().map(|p| p.view.clone()).collect();
        pending.sort_by_key(|v| v.requested_ms);
        let mut grants: Vec<GrantView> = st.grants.values().cloned().collect();
        grants.sort_by_key(|g| g.created_ms);
        Listing { pending, grants }
    }

    /// One request, pending or recently decided.
    pub fn show(&self, id: &str) -> Option<RequestView> {
        let st = self.lock();
        st.pending
            .get(id)
            .map(|p| p.view.clone())
            .or_else(|| st.history.iter().rev().find(|h| h.id == id).cloned())
    }

    /// Puts back what the audit chain says was open when the agent last
    /// stopped ([`restore`]): grants in force again; each request that was
    /// still held is recorded as withdrawn (its client's connection ended
    /// with the agent). Returns (grants restored, requests withdrawn).
    pub async fn restore(&self, open: restore::Restored) -> Result<(usize, usize), ApprovalError> {
        let grants = open.grants.len();
        {
            let mut st = self.lock();
            for g in open.grants {
                st.grants.insert(g.id.clone(), g);
            }
        }
        let withdrawn = open.orphaned.len();
        for req in open.orphaned {
            let now = now_ms();
            let reason = "the agent stopped while the request was held; its client's \
                          connection ended with it"
                .to_owned();
            let mut ev = req.clone();
            ev.status = ApprovalStatus::Withdrawn;
            ev.time_ms = now;
            ev.approver = None;
            ev.reason = Some(reason.clone());
            self.audit.record(ev).await?;
            let view = RequestView {
                id: req.request_id.clone().unwrap_or_default(),
                status: "pending".into(),
                account: req.account,
                target: req.target,
                protocol: req.protocol,
                session: req.session.map(|s| s.to_string()),
                process: req.process,
                identity_sub: req.identity.map(|i| i.sub),
                statement: req.statement,
                fingerprint: req.fingerprint,
                policy: req.policy,
                rule: req.rule,
                risk: req.risk,
                requested_ms: req.requested_ms,
                expires_ms: req.expires_ms.unwrap_or(req.requested_ms),
                decided_ms: None,
                approver: None,
                reason: None,
                grant_id: None,
                learned: None,
            };
            self.remember(
                view,
                ApprovalStatus::Withdrawn,
                now,
                None,
                Some(reason),
                None,
            );
        }
        Ok((grants, withdrawn))
    }

    fn remember(
        &self,
        mut v: RequestView,
        status: ApprovalStatus,
        at: i64,
        approver: Option<ApproverIdentity>,
        reason: Option<String>,
        grant_id: Option<String>,
    ) {
        v.status = status.as_str().to_owned();
        v.decided_ms = Some(at);
        v.approver = approver;
        v.reason = reason;
        v.grant_id = grant_id;
        let mut st = self.lock();
        if st.history.len() >= HISTORY {
            st.history.pop_front();
        }
        st.history.push_back(v);
    }
}

/// A held request: wait with [`Hold::wait`]. Dropped while pending (the
/// session ended), it is withdrawn.
pub struct Hold {
    pub id: String,
    rx: Option<oneshot::Receiver<Resolution>>,
    deadline: tokio::time::Instant,
    svc: Arc<Approvals>,
}

impl Hold {
    /// The command an approver runs.
    pub fn approve_line(&self) -> String {
        self.svc.approve_line(&self.id)
    }

    /// Waits for the decision, the timeout or a withdrawal.
    pub async fn wait(&mut self) -> Resolution {
        let Some(rx) = self.rx.as_mut() else {
            return Resolution::Failed {
                why: "already resolved".into(),
            };
        };
        let res = match tokio::time::timeout_at(self.deadline, &mut *rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Resolution::Failed {
                why: "the approval service stopped".into(),
            },
            Err(_) => {
                if self.svc.end(&self.id, Resolution::TimedOut).await {
                    Resolution::TimedOut
                } else {
                    // Decided at the last moment: the answer is on its way.
                    rx.await.unwrap_or(Resolution::TimedOut)
                }
            }
        };
        self.rx = None;
        res
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let svc = Arc::clone(&self.svc);
        let id = self.id.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                svc.withdraw(&id, "the client's session ended").await;
            });
        }
    }
}

fn random_id() -> String {
    (0..ID_LEN)
        .map(|_| ID_ALPHABET[rand::random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

fn event(spec: &RequestSpec, status: ApprovalStatus, requested: i64, now: i64) -> ApprovalEvent {
    ApprovalEvent {
        time_ms: now,
        status,
        request_id: None,
        grant_id: None,
        account: spec.account.clone(),
        target: spec.target.clone(),
        protocol: spec.protocol.clone(),
        session: spec.session,
        process: spec.process.clone(),
        identity: spec.identity.clone(),
        statement: spec.statement.clone(),
        fingerprint: spec.fingerprint.clone(),
        policy: spec.policy.clone(),
        rule: spec.rule.clone(),
        risk: spec.risk.clone(),
        requested_ms: requested,
        expires_ms: None,
        approver: None,
        reason: None,
        learned: None,
    }
}

fn view(id: &str, spec: &RequestSpec, now: i64, expires: i64) -> RequestView {
    RequestView {
        id: id.to_owned(),
        status: "pending".into(),
        account: spec.account.clone(),
        target: spec.target.clone(),
        protocol: spec.protocol.clone(),
        session: spec.session.map(|s| s.to_string()),
        process: spec.process.clone(),
        identity_sub: spec.identity.as_ref().map(|i| i.sub.clone()),
        statement: spec.statement.clone(),
        fingerprint: spec.fingerprint.clone(),
        policy: spec.policy.clone(),
        rule: spec.rule.clone(),
        risk: spec.risk.clone(),
        requested_ms: now,
        expires_ms: expires,
        decided_ms: None,
        approver: None,
        reason: None,
        grant_id: None,
        learned: None,
    }
}

/// Why `peer` may not decide `spec` because of where it runs: in, or
/// below, a cgroup (or unit) enrolled for the requesting account, or
/// enrolled for it by uid; in or below the requesting process's own cgroup
/// (unless that is the root cgroup); or nowhere that could be established.
fn placement_refusal(peer: &Peer, spec: &RequestSpec) -> Option<ApprovalError> {
    match &peer.place {
        peer::Place::Known {
            cgroups,
            cgroup_ids,
            accounts,
        } => {
            let cgroup = || cgroups.join(", ");
            if accounts.iter().any(|a| a == &spec.account) {
                Some(ApprovalError::EnrolledPeer {
                    cgroup: cgroup(),
                    account: spec.account.clone(),
                })
            } else if spec
                .process
                .cgroup_id
                .is_some_and(|id| cgroup_ids.contains(&id))
            {
                Some(ApprovalError::RequesterCgroup {
                    cgroup: cgroup(),
                    requester: spec.process.cgroup_path.clone().unwrap_or_default(),
                })
            } else {
                None
            }
        }
        peer::Place::Unknown { why } => Some(ApprovalError::UnplacedPeer { why: why.clone() }),
    }
}

#[cfg(test)]
mod tests;
