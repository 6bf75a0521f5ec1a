//! Fuzzes the SQL policy analysis as a PostgreSQL session runs it
//! (`proxy::postgres::decide::Decider`, one per session): PostgreSQL's own
//! grammar through `pg_query`, the analysis over its tree, session
//! settings, read-only grants, the grant's policy, prepared statements,
//! the tracked `search_path`, and the column-masking checks against a
//! catalog — over a few sessions of the fuzz configuration (its shipped
//! `orders-readonly` policy and an open one; with and without column
//! masking; read-only or not).
//!
//! The first input byte picks the session; the rest is its Query
//! messages, separated by NUL (a NUL never reaches the parser). Every
//! allowed statement changes the session as the relay does
//! (`after_allowed`).
//!
//! Differential: no statement text the PostgreSQL grammar rejects is ever
//! allowed (the second opinion is `pg_query::parse` itself, on the text as
//! the server would receive it), and an allowed text is never empty of
//! analysis.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use warden::audit::event::{ProcessInfo, SessionId};
use warden::masking::Strategy;
use warden::policy::Policy;
use warden::policy::columns::{CatalogColumn, CatalogRelation, ColumnCatalog, ColumnMask};
use warden::proxy::postgres::decide::Decider;
use warden::proxy::postgres::catalog::{CatalogSlot, MaskedCatalog};
use warden::proxy::postgres::{HoldSlot, SessionInfo};

fn relation(
    schema: &str,
    name: &str,
    cols: &[(&str, Option<(&str, Strategy)>)],
) -> CatalogRelation {
    CatalogRelation {
        schema: schema.into(),
        name: name.into(),
        columns: cols
            .iter()
            .map(|(c, m)| CatalogColumn {
                name: (*c).into(),
                mask: m.map(|(rule, strategy)| ColumnMask {
                    rule: rule.into(),
                    strategy,
                }),
                generated: false,
            })
            .collect(),
    }
}

fn session(policy: &str, masked: bool, read_only: bool) -> Arc<SessionInfo> {
    let cfg = warden_fuzz::config();
    let Some(pcfg) = cfg.policies.get(policy) else {
        panic!("no [policy.{policy}] in fuzz.toml");
    };
    let policy = match Policy::compile(policy, pcfg) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("[policy.{policy}]: {e:?}"),
    };
    let (pii, _) = warden_fuzz::masking("pii");
    let columns = if masked {
        ColumnCatalog::new(
            "pii",
            vec![
                relation(
                    "public",
                    "customers",
                    &[
                        ("id", None),
                        ("name", None),
                        ("email", Some(("customers.email", Strategy::Redact))),
                        ("card", Some(("customers.card", Strategy::Last4))),
                    ],
                ),
                relation(
                    "public",
                    "orders",
                    &[("id", None), ("customer_id", None), ("total", None)],
                ),
                relation("public", "payroll", &[("id", None), ("salary", None)]),
            ],
            Some(Arc::clone(&pii)),
        )
    } else {
        ColumnCatalog::default()
    };
    Arc::new(SessionInfo {
        session: SessionId(1),
        account: "orders-api".into(),
        target: "orders-pg".into(),
        database: "orders".into(),
        upstream_user: "app".into(),
        process: ProcessInfo::default(),
        identity: None,
        policy,
        masker: masked.then(|| Arc::clone(&pii)),
        text_masker: pii,
        catalog: CatalogSlot::new(Arc::new(MaskedCatalog::from_columns(columns))),
        audit: warden_fuzz::audit(),
        max_message: 1 << 24,
        read_only,
        shadowed: Arc::new(HashSet::new()),
        startup_search_path: None,
        approvals: None,
        account_uids: Vec::new(),
        hold: Arc::new(HoldSlot::default()),
        allowlist: None,
    })
}

static SESSIONS: LazyLock<Vec<Arc<SessionInfo>>> = LazyLock::new(|| {
    vec![
        session("orders-readonly", true, false),
        session("open", false, false),
        session("open", true, true),
        session("orders-readonly", false, true),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = warden_fuzz::selector(data) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let info = &SESSIONS[usize::from(sel) % SESSIONS.len()];
    let mut decider = Decider::new(Arc::clone(info));
    for sql in text.split('\0').take(8) {
        let d = decider.decide(sql);
        if !d.allowed() {
            continue;
        }
        if let Err(e) = pg_query::parse(sql, 0) {
            panic!("allowed a statement PostgreSQL's grammar rejects ({e}): {sql:?}");
        }
        assert!(d.analysis.is_some(), "allowed without an analysis: {sql:?}");
        decider.after_allowed(&d);
    }
});
