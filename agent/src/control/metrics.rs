//! The daemon's state as Prometheus readings, read at each scrape of the
//! `/metrics` endpoint (`crate::metrics::server`): the same facts as
//! `warden status`, in the exposition format. Counters of connections,
//! statements, requests and refusals come from the registry itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Context;
use crate::metrics::Reading;
use crate::metrics::server::Collector;

/// The collector the metrics endpoint calls at each scrape.
pub fn collector(shared: Arc<Context>) -> Collector {
    Arc::new(move || readings(&shared))
}

fn labelled(
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
) -> Reading {
    Reading::labelled(name, help, kind, rows.into_iter().collect())
}

fn bool_f(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

pub fn readings(shared: &Context) -> Vec<Reading> {
    let mut out = vec![labelled(
        "warden_build_info",
        "The running agent's version.",
        "gauge",
        [(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
    )];

    // Connections open now, by account and target.
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, c) in shared.proxy.conns.open() {
        *open.entry((c.account, c.target)).or_default() += 1;
    }
    out.push(labelled(
        "warden_open_connections",
        "Relayed connections open now, by account and target.",
        "gauge",
        open.into_iter()
            .map(|((a, t), n)| (vec![("account", a), ("target", t)], n as f64)),
    ));

    // The audit store.
    let stats = shared.proxy.audit.stats();
    out.push(Reading::gauge(
        "warden_audit_healthy",
        "1 while the last audit commit and fsync succeeded.",
        bool_f(shared.proxy.audit.is_healthy()),
    ));
    out.push(Reading::gauge(
        "warden_audit_last_seq",
        "Highest committed audit seq.",
        stats.last_seq as f64,
    ));
    out.push(Reading::gauge(
        "warden_audit_durable_seq",
        "Highest audit seq known to be on stable storage.",
        stats.durable_seq as f64,
    ));
    out.push(Reading::gauge(
        "warden_audit_detached_backlog",
        "Result records waiting in memory for the audit writer.",
        stats.detached_backlog as f64,
    ));
    let path = shared.live().config.audit_path();
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let size: u64 = [path.clone(), wal.into()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    out.push(Reading::gauge(
        "warden_audit_store_bytes",
        "Size of the audit store (database and write-ahead log) in bytes.",
        size as f64,
    ));

    // Forwarders.
    let fwd = shared.forward.status(Some(stats.last_seq));
    let by = |f: &dyn Fn(&crate::forward::ForwardStatus) -> f64| {
        fwd.iter()
            .map(|s| (vec![("output", s.name.clone())], f(s)))
            .collect::<Vec<_>>()
    };
    out.push(labelled(
        "warden_forward_lag_events",
        "Audit events stored but not yet acknowledged by the output.",
        "gauge",
        by(&|s| s.backlog as f64),
    ));
    out.push(labelled(
        "warden_forward_acked_seq",
        "Every audit event up to this seq was acknowledged by the output.",
        "gauge",
        by(&|s| s.acked_seq as f64),
    ));
    out.push(labelled(
        "warden_forward_events_total",
        "Audit events acknowledged by the output since the agent started.",
        "counter",
        by(&|s| s.events_acked as f64),
    ));
    out.push(labelled(
        "warden_forward_errors_total",
        "Failed delivery attempts of the output since the agent started.",
        "counter",
        by(&|s| s.failures as f64),
    ));

    // Approvals.
    let listing = shared.approvals.list();
    out.push(Reading::gauge(
        "warden_approvals_pending",
        "Statements and requests held for a human decision now.",
        listing.pending.len() as f64,
    ));
    out.push(Reading::gauge(
        "warden_approval_grants_active",
        "Approval grants (approve --for) in force now.",
        listing.grants.len() as f64,
    ));

    // The kernel side.
    out.push(Reading::gauge(
        "warden_bpf_programs_attached",
        "eBPF programs the agent attached (redirect and, where possible, LSM).",
        shared.proxy.datapath.attached().len() as f64,
    ));
    out.push(Reading::gauge(
        "warden_bpf_lsm_attached",
        "1 when the BPF LSM self-protection programs are attached.",
        bool_f(shared.proxy.datapath.lsm_attached()),
    ));
    let fill = shared.proxy.datapath.map_fill();
    out.push(labelled(
        "warden_bpf_map_entries",
        "Entries in each of the agent's kernel maps.",
        "gauge",
        fill.iter()
            .map(|m| (vec![("map", m.name.to_owned())], m.entries as f64)),
    ));
    out.push(labelled(
        "warden_bpf_map_capacity",
        "Capacity of each of the agent's kernel maps.",
        "gauge",
        fill.iter()
            .map(|m| (vec![("map", m.name.to_owned())], m.capacity as f64)),
    ));

    out.extend(crate::metrics::process::readings());
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Every `warden_*` and `process_*` name written as a string literal in
    /// `src` (the families and readings this build exports).
    fn exported(src: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for part in src.split('"').skip(1).step_by(2) {
            if (part.starts_with("warden_") || part.starts_with("process_"))
                && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                out.insert(part.to_owned());
            }
        }
        out
    }

    /// Metric names in a PromQL expression (identifiers followed by `{`,
    /// `[`, `)` , space or the end, that start with warden_ or process_).
    fn queried(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let b = expr.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
            if ident(b[i]) && (i == 0 || !ident(b[i - 1])) {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                if word.starts_with("warden_") || word.starts_with("process_") {
                    out.push(word.to_owned());
                }
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn the_shipped_dashboard_is_well_formed_and_queries_only_exported_metrics() {
        let mut names = exported(include_str!("metrics.rs"));
        names.extend(exported(include_str!("../metrics/mod.rs")));
        names.extend(exported(include_str!("../metrics/process.rs")));
        // Histogram series.
        for h in ["warden_audit_commit_seconds", "warden_decision_seconds"] {
            assert!(names.contains(h));
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{h}{s}"));
            }
        }
        let d: Value =
            serde_json::from_str(include_str!("../../../config/grafana-dashboard.json")).unwrap();
        for key in ["uid", "title", "schemaVersion", "panels", "templating"] {
            assert!(!d[key].is_null(), "dashboard lacks {key}");
        }
        assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        let mut ids = BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "duplicate id at {title}"
            );
            assert!(p["type"].is_string(), "{title}");
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
            }
            assert!(
                p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title}");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
                let expr = t["expr"].as_str().unwrap();
                let used = queried(expr);
                assert!(!used.is_empty(), "{title}: {expr}");
                for m in used {
                    assert!(names.contains(&m), "{title}: {m} is not exported ({expr})");
                }
            }
        }
    }
}
