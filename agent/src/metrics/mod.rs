//! Prometheus metrics: the process-wide registry of counters and latency
//! histograms, the text exposition format, and the `/metrics` endpoint
//! ([`server`]).
//!
//! What is counted comes from the audit trail's producer side (every
//! connection, statement, HTTP request and approval passes through
//! `AuditHandle`), so one hook covers every protocol; gauges (store size,
//! forwarder lag, approvals pending, attached programs, map fill levels) are
//! read at scrape time by a collector the daemon hands to the server.
//!
//! Labels carry only names from the configuration (account, target, output,
//! map) and closed vocabularies (decision, reason, protocol, phase): never a
//! statement, a path, a value or anything a workload chooses. A reason that
//! is not a short snake_case word is counted as `other`.
//!
//! One registry per process, as every Prometheus client library has: it is
//! a leaf module (it imports nothing from the rest of the agent), so any room
//! may count into it without an import cycle.

pub mod process;
pub mod server;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// A metric family this registry counts. The name, type and help text of
/// each are fixed here, so the exposition is the same on every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Connections accepted, refused and closed, by account/target/decision.
    Connections,
    /// SQL statements decided, by account/target/protocol/decision.
    Statements,
    /// HTTP requests decided, by account/target/decision.
    HttpRequests,
    /// Refusals of every kind, by kind and reason.
    Refusals,
    /// Values masked in results, by account/target.
    ValuesMasked,
    /// Approval transitions, by status.
    Approvals,
    /// Audit events that could not be recorded (the effect was refused).
    AuditFailures,
    /// Time from handing a record to the audit writer to its commit.
    AuditCommitSeconds,
    /// Time the policy took to decide one statement or request.
    DecisionSeconds,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Connections => "warden_connections_total",
            Family::Statements => "warden_statements_total",
            Family::HttpRequests => "warden_http_requests_total",
            Family::Refusals => "warden_refusals_total",
            Family::ValuesMasked => "warden_values_masked_total",
            Family::Approvals => "warden_approvals_total",
            Family::AuditFailures => "warden_audit_failures_total",
            Family::AuditCommitSeconds => "warden_audit_commit_seconds",
            Family::DecisionSeconds => "warden_decision_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Connections => {
                "Connections from enrolled workloads, by account, target, activity and decision."
            }
            Family::Statements => {
                "SQL statements decided by the policy, by account, target, protocol and decision."
            }
            Family::HttpRequests => {
                "HTTP requests decided by the policy, by account, target and decision."
            }
            Family::Refusals => "Refusals, by kind (connection, statement, http) and reason.",
            Family::ValuesMasked => "Values masked in results returned to workloads.",
            Family::Approvals => "Approval transitions (requested, approved, denied, ...).",
            Family::AuditFailures => {
                "Audit records that could not be committed (their effect was refused)."
            }
            Family::AuditCommitSeconds => {
                "Time from handing an awaited audit record to the writer to its commit."
            }
            Family::DecisionSeconds => {
                "Time the policy took to decide one statement or request, by protocol."
            }
        }
    }

    fn is_histogram(self) -> bool {
        matches!(self, Family::AuditCommitSeconds | Family::DecisionSeconds)
    }

    const ALL: [Family; 9] = [
        Family::Connections,
        Family::Statements,
        Family::HttpRequests,
        Family::Refusals,
        Family::ValuesMasked,
        Family::Approvals,
        Family::AuditFailures,
        Family::AuditCommitSeconds,
        Family::DecisionSeconds,
    ];
}

/// Upper bounds (seconds) of the latency histograms' buckets: 5 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Hist(Box<Hist>),
}

#[derive(Debug, Clone)]
struct Series {
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// Counters and histograms, by family and label set.
#[derive(Debug, Default)]
pub struct Registry {
    /// By family and a hash of the label values; the vector resolves
    /// collisions by comparing the labels themselves.
    series: Mutex<HashMap<(Family, u64), Vec<Series>>>,
}

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// The process's registry.
pub fn global() -> &'static Registry {
    GLOBAL.get_or_init(Registry::default)
}

fn label_hash(labels: &[(&'static str, &str)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in labels {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

fn same(a: &[(&'static str, String)], b: &[(&'static str, &str)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1 == y.1)
}

/// `reason` as a label value: a short snake_case word, or `other`. Reasons
/// are typed in the agent, but a label must never carry free text.
pub fn reason_label(reason: &str) -> &str {
    let ok = !reason.is_empty()
        && reason.len() <= 48
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { reason } else { "other" }
}

impl Registry {
    fn with_series(
        &self,
        family: Family,
        labels: &[(&'static str, &str)],
        f: impl FnOnce(&mut Value),
    ) {
        let key = (family, label_hash(labels));
        // Plain map updates under the lock: a poisoned lock still holds
        // consistent counts.
        let mut map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = map.entry(key).or_default();
        if let Some(s) = bucket.iter_mut().find(|s| same(&s.labels, labels)) {
            f(&mut s.value);
            return;
        }
        let mut value = if family.is_histogram() {
            Value::Hist(Box::default())
        } else {
            Value::Counter(0)
        };
        f(&mut value);
        bucket.push(Series {
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        });
    }

    /// Adds `n` to a counter.
    pub fn add(&self, family: Family, labels: &[(&'static str, &str)], n: u64) {
        debug_assert!(!family.is_histogram());
        self.with_series(family, labels, |v| {
            if let Value::Counter(c) = v {
                *c = c.saturating_add(n);
            }
        });
    }

    /// Adds one to a counter.
    pub fn inc(&self, family: Family, labels: &[(&'static str, &str)]) {
        self.add(family, labels, 1);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, family: Family, labels: &[(&'static str, &str)], d: Duration) {
        debug_assert!(family.is_histogram());
        let secs = d.as_secs_f64();
        self.with_series(family, labels, |v| {
            if let Value::Hist(h) = v {
                for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                    if secs <= *bound {
                        h.buckets[i] += 1;
                    }
                }
                h.count += 1;
                h.sum_secs += secs;
            }
        });
    }

    /// The current value of a counter (tests, `warden status`).
    pub fn counter(&self, family: Family, labels: &[(&'static str, &str)]) -> u64 {
        let map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(family, label_hash(labels)))
            .and_then(|b| b.iter().find(|s| same(&s.labels, labels)))
            .map_or(0, |s| match &s.value {
                Value::Counter(c) => *c,
                Value::Hist(h) => h.count,
            })
    }

    /// Appends every counted family, in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        for family in Family::ALL {
            let mut series: Vec<&Series> = map
                .iter()
                .filter(|((f, _), _)| *f == family)
                .flat_map(|(_, v)| v.iter())
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            let kind = if family.is_histogram() {
                "histogram"
            } else {
                "counter"
            };
            header(out, family.name(), family.help(), kind);
            for s in series {
                match &s.value {
                    Value::Counter(c) => sample(out, family.name(), "", &s.labels, None, *c as f64),
                    Value::Hist(h) => {
                        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                            sample(
                                out,
                                family.name(),
                                "_bucket",
                                &s.labels,
                                Some(&fmt_float(*bound)),
                                h.buckets[i] as f64,
                            );
                        }
                        sample(
                            out,
                            family.name(),
                            "_bucket",
                            &s.labels,
                            Some("+Inf"),
                            h.count as f64,
                        );
                        sample(out, family.name(), "_sum", &s.labels, None, h.sum_secs);
                        sample(
                            out,
                            family.name(),
                            "_count",
                            &s.labels,
                            None,
                            h.count as f64,
                        );
                    }
                }
            }
        }
    }
}

/// A gauge or counter read at scrape time (from the daemon's state).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub name: &'static str,
    pub help: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Reading {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Reading {
            name,
            help,
            kind: "gauge",
            samples: vec![(Vec::new(), value)],
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Reading {
            kind: "counter",
            ..Reading::gauge(name, help, value)
        }
    }

    /// A family with one sample per label set.
    pub fn labelled(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        samples: Vec<(Vec<(&'static str, String)>, f64)>,
    ) -> Self {
        Reading {
            name,
            help,
            kind,
            samples,
        }
    }
}

/// The whole exposition: the registry's families, then `readings`.
pub fn exposition(registry: &Registry, readings: &[Reading]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    registry.render(&mut out);
    for r in readings {
        header(&mut out, r.name, r.help, r.kind);
        for (labels, v) in &r.samples {
            sample(&mut out, r.name, "", labels, None, *v);
        }
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&'static str, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&fmt_float(value));
    out.push('\n');
}

fn fmt_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Help text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_kept_per_label_set_and_rendered_sorted() {
        let r = Registry::default();
        let a = [("account", "orders"), ("decision", "allowed")];
        let b = [("account", "billing"), ("decision", "blocked")];
        r.inc(Family::Statements, &a);
        r.inc(Family::Statements, &a);
        r.add(Family::Statements, &b, 5);
        assert_eq!(r.counter(Family::Statements, &a), 2);
        assert_eq!(r.counter(Family::Statements, &b), 5);
        assert_eq!(r.counter(Family::Statements, &[("account", "x")]), 0);
        let text = exposition(&r, &[]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("warden_statements_total"))
            .collect();
        assert_eq!(
            lines,
            [
                "warden_statements_total{account=\"billing\",decision=\"blocked\"} 5",
                "warden_statements_total{account=\"orders\",decision=\"allowed\"} 2",
            ]
        );
        assert!(text.contains("# TYPE warden_statements_total counter\n"));
        // Every family is announced, counted or not.
        assert!(text.contains("# TYPE warden_audit_commit_seconds histogram\n"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let r = Registry::default();
        let l = [("kind", "statement")];
        r.observe(Family::AuditCommitSeconds, &l, Duration::from_micros(300));
        r.observe(Family::AuditCommitSeconds, &l, Duration::from_secs(9));
        let text = exposition(&r, &[]);
        let get = |le: &str| {
            let prefix =
                format!("warden_audit_commit_seconds_bucket{{kind=\"statement\",le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_owned()
        };
        assert_eq!(get("0.00025"), "0");
        assert_eq!(get("0.0005"), "1");
        assert_eq!(get("5"), "1");
        assert_eq!(get("+Inf"), "2");
        assert!(text.contains("warden_audit_commit_seconds_count{kind=\"statement\"} 2\n"));
        assert!(text.contains("warden_audit_commit_seconds_sum{kind=\"statement\"} 9.0003\n"));
    }

    #[test]
    fn label_values_are_escaped_and_reasons_are_a_closed_vocabulary() {
        let r = Registry::default();
        r.inc(Family::Connections, &[("account", "a\"b\\c\nd")]);
        let text = exposition(&r, &[]);
        assert!(
            text.contains("warden_connections_total{account=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert_eq!(reason_label("target_not_granted"), "target_not_granted");
        assert_eq!(reason_label("DROP TABLE x"), "other");
        assert_eq!(reason_label(""), "other");
        assert_eq!(reason_label(&"a".repeat(49)), "other");
    }

    #[test]
    fn readings_follow_the_registry() {
        let r = Registry::default();
        let text = exposition(
            &r,
            &[
                Reading::gauge("warden_up", "The agent runs.", 1.0),
                Reading::labelled(
                    "warden_bpf_map_entries",
                    "Entries.",
                    "gauge",
                    vec![(vec![("map", "orig_dst".to_owned())], 3.0)],
                ),
            ],
        );
        assert!(text.contains("# TYPE warden_up gauge\nwarden_up 1\n"));
        assert!(text.contains("warden_bpf_map_entries{map=\"orig_dst\"} 3\n"));
    }
}
