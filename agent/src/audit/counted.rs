//! What each audit event counts as in the Prometheus metrics
//! (`crate::metrics`): every connection, statement, HTTP request and
//! approval reaches the store through [`AuditHandle`](super::AuditHandle),
//! so counting there covers every protocol once. Only configuration names
//! and closed vocabularies become labels.

use super::event::{
    ApiEvent, ApprovalEvent, ConnActivity, ConnectionEvent, StatementDecision, StatementEvent,
    StatementPhase,
};
use std::time::Duration;

use crate::metrics::{Family, global, reason_label};

fn activity(a: ConnActivity) -> &'static str {
    match a {
        ConnActivity::Open => "open",
        ConnActivity::Close => "close",
        ConnActivity::Refuse => "refuse",
    }
}

pub(crate) fn connection(ev: &ConnectionEvent) {
    let m = global();
    let account = ev.account.as_deref().unwrap_or("");
    let target = ev.target.as_deref().unwrap_or("");
    m.inc(
        Family::Connections,
        &[
            ("account", account),
            ("target", target),
            ("activity", activity(ev.activity)),
            ("decision", ev.decision.as_str()),
        ],
    );
    if ev.activity == ConnActivity::Refuse {
        let reason = reason_label(ev.reason.as_deref().unwrap_or("unspecified"));
        m.inc(
            Family::Refusals,
            &[("kind", "connection"), ("reason", reason)],
        );
    }
}

/// A refused statement or request counts its decision as the reason
/// (`blocked`, `denied`, `approval_required`, `rejected`).
fn refused(kind: &'static str, decision: StatementDecision) {
    if decision != StatementDecision::Allowed {
        global().inc(
            Family::Refusals,
            &[("kind", kind), ("reason", decision.as_str())],
        );
    }
}

/// One statement or HTTP request: the request phase counts its decision
/// (and a refusal), the result phase the values it masked.
struct Decided<'a> {
    family: Family,
    kind: &'static str,
    phase: StatementPhase,
    decision: StatementDecision,
    labels: &'a [(&'static str, &'a str)],
    account: &'a str,
    target: &'a str,
    values_masked: Option<u64>,
}

fn decided(d: Decided<'_>) {
    let m = global();
    match d.phase {
        StatementPhase::Request => {
            m.inc(d.family, d.labels);
            refused(d.kind, d.decision);
        }
        StatementPhase::Result => {
            if let Some(n) = d.values_masked.filter(|n| *n > 0) {
                m.add(
                    Family::ValuesMasked,
                    &[("account", d.account), ("target", d.target)],
                    n,
                );
            }
        }
    }
}

pub(crate) fn statement(ev: &StatementEvent) {
    decided(Decided {
        family: Family::Statements,
        kind: "statement",
        phase: ev.phase,
        decision: ev.decision,
        labels: &[
            ("account", &ev.account),
            ("target", &ev.target),
            ("protocol", &ev.protocol),
            ("decision", ev.decision.as_str()),
        ],
        account: &ev.account,
        target: &ev.target,
        values_masked: ev.values_masked,
    });
}

pub(crate) fn api(ev: &ApiEvent) {
    decided(Decided {
        family: Family::HttpRequests,
        kind: "http",
        phase: ev.phase,
        decision: ev.decision,
        labels: &[
            ("account", &ev.account),
            ("target", &ev.target),
            ("decision", ev.decision.as_str()),
        ],
        account: &ev.account,
        target: &ev.target,
        values_masked: ev.values_masked,
    });
}

pub(crate) fn approval(ev: &ApprovalEvent) {
    global().inc(
        Family::Approvals,
        &[
            ("account", &ev.account),
            ("target", &ev.target),
            ("status", ev.status.as_str()),
        ],
    );
}

/// An awaited record's commit took `took`; `ok` false means it is not in
/// the store (the caller refuses the effect).
pub(crate) fn committed(took: Duration, ok: bool) {
    let m = global();
    m.observe(Family::AuditCommitSeconds, &[], took);
    if !ok {
        m.inc(Family::AuditFailures, &[("mode", "awaited")]);
    }
}

/// `n` detached records could not be stored.
pub(crate) fn lost(n: u64) {
    global().add(Family::AuditFailures, &[("mode", "detached")], n);
}
