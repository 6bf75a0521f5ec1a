//! What the store needs of each kind of event: the [`AuditRecord`] trait
//! (its store columns and its encoding, as one [`Prepared`] record, and
//! how it is counted) and its implementation for every event producers
//! record through [`AuditHandle::record`] / [`AuditHandle::record_detached`].

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::audit::event::ApiEvent;
use crate::audit::ocsf::{
    CLASS_UID_API_ACTIVITY, CLASS_UID_PROCESS_ACTIVITY, KERNEL_ACTIVITY, KERNEL_DECISION,
    KernelDenial, api_activity_str, kernel_template,
};

#[cfg(test)]
thread_local! {
    /// Tests: this thread's statements are written as OCSF JSON (stores of
    /// schema 4 and before).
    pub(super) static LEGACY_JSON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a producer knows when it encodes an event: the chain, the host
/// and the durability mode the writer runs with.
pub struct PrepareCtx<'a> {
    pub(super) chain_id: &'a str,
    pub(super) host: &'a str,
    pub(super) mode: SyncMode,
}

/// An event the audit store records: connection events, configuration
/// changes, statements, HTTP requests, approval transitions and kernel
/// denials. Each kind says how it is stored; the handle does the rest.
pub trait AuditRecord {
    /// The event as named in the log line of a detached record that cannot
    /// be encoded ("cannot encode the ...").
    const WHAT: &'static str;

    /// Count the event in the process metrics (before it is encoded).
    fn count(&self) {}

    /// Encode the event (on the producer's thread) with its store columns.
    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError>;
}

impl AuditRecord for ConnectionEvent {
    const WHAT: &'static str = "connection event";

    fn count(&self) {
        crate::audit::counted::connection(self);
    }

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        let ev = self;
        let session = ev.session.to_string();
        let template = connection_template(&ev, &session, ctx.chain_id, ctx.host)?;
        Ok(Prepared {
            class_uid: CLASS_UID_NETWORK_ACTIVITY,
            time_ms: ev.time_ms,
            activity: activity_str(ev.activity),
            decision: ev.decision.as_str(),
            account: ev.account,
            target: ev.target,
            session,
            reason: ev.reason,
            body: Body::Template(template),
            early: false,
        })
    }
}

impl AuditRecord for ConfigChange {
    const WHAT: &'static str = "configuration change";

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        Ok(Prepared {
            class_uid: CLASS_UID_DEVICE_CONFIG_STATE_CHANGE,
            time_ms: self.time_ms,
            activity: CONFIG_ACTIVITY,
            decision: NO_DECISION,
            account: None,
            target: None,
            session: String::new(),
            reason: Some(self.action.as_str().to_owned()),
            body: Body::Template(config_template(&self, ctx.chain_id, ctx.host)?),
            early: false,
        })
    }
}

/// A statement is stored as its compact record (the caller's facts are in
/// its session's open event); `chain_id` is not part of it. With
/// [`SyncMode::Pipelined`], an allowed read's request phase is answered
/// once committed, before its fsync ([`Prepared::early`]).
impl AuditRecord for StatementEvent {
    const WHAT: &'static str = "statement event";

    fn count(&self) {
        crate::audit::counted::statement(self);
    }

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        let ev = &self;
        let session = ev.session.to_string();
        let body = Body::Record(crate::audit::record::encode_statement(ev, ctx.host));
        // Tests: write a statement as the OCSF JSON stores of schema 4 hold.
        #[cfg(test)]
        let body = if LEGACY_JSON.with(std::cell::Cell::get) {
            Body::Template(crate::audit::ocsf::statement_template(
                ev,
                &session,
                ctx.chain_id,
                ctx.host,
            )?)
        } else {
            body
        };
        Ok(Prepared {
            class_uid: CLASS_UID_DATASTORE_ACTIVITY,
            time_ms: ev.time_ms,
            activity: statement_activity_str(ev.phase),
            decision: ev.decision.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session,
            reason: ev.reason.clone(),
            body,
            early: ctx.mode == SyncMode::Pipelined
                && ev.phase == StatementPhase::Request
                && ev.decision == StatementDecision::Allowed
                && ev.class == "read",
        })
    }
}

impl AuditRecord for ApprovalEvent {
    const WHAT: &'static str = "approval event";

    fn count(&self) {
        crate::audit::counted::approval(self);
    }

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        let ev = &self;
        let session = ev.session.map(|s| s.to_string()).unwrap_or_default();
        let template = approval_template(ev, &session, ctx.chain_id, ctx.host)?;
        Ok(Prepared {
            class_uid: CLASS_UID_USER_ACCESS_MANAGEMENT,
            time_ms: ev.time_ms,
            activity: APPROVAL_ACTIVITY,
            decision: ev.status.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session,
            reason: ev.reason.clone(),
            body: Body::Template(template),
            early: false,
        })
    }
}

/// An HTTP request is stored as its compact record (issue 17), as a
/// statement is; `chain_id` is not part of it.
impl AuditRecord for ApiEvent {
    const WHAT: &'static str = "API event";

    fn count(&self) {
        crate::audit::counted::api(self);
    }

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        let ev = &self;
        Ok(Prepared {
            class_uid: CLASS_UID_API_ACTIVITY,
            time_ms: ev.time_ms,
            activity: api_activity_str(ev.phase),
            decision: ev.decision.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session: ev.session.to_string(),
            reason: ev.reason.clone(),
            body: Body::Record(crate::audit::record::encode_api(ev, ctx.host)),
            early: false,
        })
    }
}

/// A kernel (BPF LSM) denial already happened: recording it only reports
/// it.
impl AuditRecord for KernelDenial {
    const WHAT: &'static str = "kernel denial";

    fn prepare(self, ctx: &PrepareCtx<'_>) -> Result<Prepared, AuditError> {
        let ev = &self;
        Ok(Prepared {
            class_uid: CLASS_UID_PROCESS_ACTIVITY,
            time_ms: ev.time_ms,
            activity: KERNEL_ACTIVITY,
            decision: KERNEL_DECISION,
            account: ev.account.clone(),
            target: None,
            session: String::new(),
            reason: Some(ev.kind.clone()),
            body: Body::Template(kernel_template(ev, ctx.chain_id, ctx.host)?),
            early: false,
        })
    }
}
