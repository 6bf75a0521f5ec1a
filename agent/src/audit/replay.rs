//! Session replay (`warden audit replay SESSION`): one connection's events
//! read back from the store, in the order they happened.
//!
//! [`load`] reads every event whose `session` column is the session (an
//! indexed lookup, `events_session(session, seq)`), read-only, in seq
//! order; [`build`] turns them into a [`Replay`]: the connection events as
//! they are, and each statement's request and result merged into one
//! [`ReplayStatement`] by `statement_seq`, placed where its first event
//! is. A result without its request (pruned, or recorded in a damaged
//! store) still shows, with `request: None`; events that cannot be decoded
//! are kept as [`Step::Unreadable`] rather than hidden.
//!
//! The text form ([`Replay`]'s `Display`) escapes control characters of
//! every workload-controlled string (statement text, values, names), so
//! nothing reaches the terminal raw; statement text and values are already
//! masked in the store.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::AuditError;
use super::event::{ConnActivity, ConnectionEvent, SessionId, StatementEvent, StatementPhase};
use super::ocsf::{EventKind, activity_str, decode_approval, decode_connection, decode_statement};
use super::reader::{AuditReader, StoredEvent, TailFilter, format_time, format_us};

/// Rows read from the store per query.
const PAGE: usize = 1000;

/// A session id as given on the command line: the 16 hex digits
/// `warden audit tail` prints, `0x`-prefixed hex, or a decimal number
/// (anything shorter than 16 characters made only of digits is decimal;
/// with a hex letter it is hex).
pub fn parse_session(arg: &str) -> Result<SessionId, AuditError> {
    let t = arg.trim();
    let bad = || AuditError::Decode {
        detail: format!(
            "session {arg:?} is neither the 16-hex-digit id `warden audit tail` prints nor a \
             decimal number"
        ),
    };
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16)
            .map(SessionId)
            .map_err(|_| bad());
    }
    if t.len() == 16 || t.chars().any(|c| c.is_ascii_alphabetic()) {
        if t.len() > 16 {
            return Err(bad());
        }
        return u64::from_str_radix(t, 16).map(SessionId).map_err(|_| bad());
    }
    t.parse().map(SessionId).map_err(|_| bad())
}

/// One session, as it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub session: SessionId,
    /// `session` as `warden audit tail` prints it (16 hex digits).
    pub session_id: String,
    pub steps: Vec<Step>,
}

/// One step of a [`Replay`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// A connection event (open, close, refuse).
    Connection {
        seq: u64,
        event: Box<ConnectionEvent>,
    },
    /// A statement: its request and result merged.
    Statement(ReplayStatement),
    /// An approval transition of a statement held on this session.
    Approval {
        seq: u64,
        event: Box<super::event::ApprovalEvent>,
    },
    /// An HTTP request's decision (`api_request`) or result (`api_result`),
    /// as stored.
    Api {
        seq: u64,
        time_ms: i64,
        activity: String,
        decision: String,
        /// The stored OCSF document.
        event: Box<serde_json::Value>,
        /// What `warden audit tail` prints for it.
        #[serde(skip)]
        line: String,
    },
    /// A stored event of this session that cannot be decoded.
    Unreadable {
        seq: u64,
        time_ms: i64,
        class_uid: u32,
        activity: String,
        error: String,
    },
}

/// One statement's request (the decision) and result (what came back).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayStatement {
    pub statement_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<StatementEvent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<StatementEvent>>,
}

impl ReplayStatement {
    /// The request, else the result: where the statement's own facts are.
    fn main(&self) -> Option<&StatementEvent> {
        self.request.as_deref().or(self.result.as_deref())
    }
}

impl Replay {
    /// Number of statements.
    pub fn statements(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Statement(_)))
            .count()
    }

    /// Number of HTTP requests (their decisions).
    pub fn requests(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Api { activity, .. } if activity == super::ocsf::API_REQUEST_ACTIVITY))
            .count()
    }
}

/// Read the events of `session` from the store at `store` (read-only) and
/// build its replay; `None` when the store has no event of that session.
pub fn load(store: &Path, session: SessionId) -> Result<Option<Replay>, AuditError> {
    load_with_progress(store, session, &|_, _| {})
}

/// [`load`], reporting the events read so far to `progress` (the total is
/// not known ahead: 0).
pub fn load_with_progress(
    store: &Path,
    session: SessionId,
    progress: super::Progress<'_>,
) -> Result<Option<Replay>, AuditError> {
    let reader = AuditReader::open(store)?;
    let filter = TailFilter {
        session: Some(session.to_string()),
        ..TailFilter::default()
    };
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = reader.query(&filter, after, PAGE)?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        events.extend(page);
        progress(events.len() as u64, 0);
        if !full {
            break;
        }
    }
    if events.is_empty() {
        return Ok(None);
    }
    Ok(Some(build(session, &events)))
}

/// The replay of `session` from its stored events (in seq order).
pub fn build(session: SessionId, events: &[StoredEvent]) -> Replay {
    let mut steps: Vec<Step> = Vec::new();
    // statement_seq -> index in `steps` of its latest statement.
    let mut by_stmt: HashMap<u64, usize> = HashMap::new();
    for ev in events {
        let kind = EventKind::from_columns(ev.class_uid, &ev.activity);
        let decoded = match kind {
            Some(EventKind::Connection) => decode_connection(&ev.data).map(|d| Step::Connection {
                seq: ev.seq,
                event: Box::new(d.event),
            }),
            Some(EventKind::Statement) => match decode_statement(&ev.data) {
                Ok(d) => {
                    merge(&mut steps, &mut by_stmt, ev.seq, d.event);
                    continue;
                }
                Err(e) => Err(e),
            },
            Some(EventKind::Approval) => decode_approval(&ev.data).map(|d| Step::Approval {
                seq: ev.seq,
                event: Box::new(d.event),
            }),
            Some(EventKind::Api) => {
                match (
                    serde_json::from_slice::<serde_json::Value>(&ev.data),
                    super::reader::api_text(ev),
                ) {
                    (Ok(doc), Some(line)) => Ok(Step::Api {
                        seq: ev.seq,
                        time_ms: ev.time_ms,
                        activity: ev.activity.clone(),
                        decision: ev.decision.clone(),
                        event: Box::new(doc),
                        line,
                    }),
                    _ => Err(AuditError::Decode {
                        detail: "API event does not decode".into(),
                    }),
                }
            }
            _ => Err(AuditError::Decode {
                detail: "not a connection, statement, API or approval event".into(),
            }),
        };
        steps.push(decoded.unwrap_or_else(|e| Step::Unreadable {
            seq: ev.seq,
            time_ms: ev.time_ms,
            class_uid: ev.class_uid,
            activity: ev.activity.clone(),
            error: e.to_string(),
        }));
    }
    Replay {
        session,
        session_id: session.to_string(),
        steps,
    }
}

/// Add statement event `ev` (stored as `seq`): a result joins the latest
/// statement with its `statement_seq` that has no result yet; anything
/// else starts a new step.
fn merge(steps: &mut Vec<Step>, by_stmt: &mut HashMap<u64, usize>, seq: u64, ev: StatementEvent) {
    let n = ev.statement_seq;
    if ev.phase == StatementPhase::Result
        && let Some(&i) = by_stmt.get(&n)
        && let Some(Step::Statement(st)) = steps.get_mut(i)
        && st.result.is_none()
    {
        st.result_seq = Some(seq);
        st.result = Some(Box::new(ev));
        return;
    }
    let st = match ev.phase {
        StatementPhase::Request => ReplayStatement {
            statement_seq: n,
            request_seq: Some(seq),
            request: Some(Box::new(ev)),
            result_seq: None,
            result: None,
        },
        StatementPhase::Result => ReplayStatement {
            statement_seq: n,
            request_seq: None,
            request: None,
            result_seq: Some(seq),
            result: Some(Box::new(ev)),
        },
    };
    by_stmt.insert(n, steps.len());
    steps.push(Step::Statement(st));
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), borrowed when
/// there are none.
fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `s` quoted with escapes when it has spaces, quotes or control
/// characters (for `key=value` output).
fn val(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '"' | '\\' | '='));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{s:?}"))
    }
}

fn who(o: &Option<String>) -> Cow<'_, str> {
    o.as_deref().map_or(Cow::Borrowed("-"), val)
}

fn write_connection(f: &mut fmt::Formatter<'_>, seq: u64, e: &ConnectionEvent) -> fmt::Result {
    write!(
        f,
        "{} #{seq} {} {} {}@{} protocol={}",
        format_time(e.time_ms),
        activity_str(e.activity),
        e.decision.as_str(),
        who(&e.account),
        who(&e.target),
        val(&e.protocol)
    )?;
    if let Some(reason) = &e.reason {
        write!(f, " reason={}", val(reason))?;
    }
    writeln!(f)?;
    if let Some(detail) = &e.detail {
        writeln!(f, "    detail: {}", clean(detail))?;
    }
    match e.activity {
        ConnActivity::Open | ConnActivity::Refuse => {
            let p = &e.process;
            let mut who = Vec::new();
            if let Some(pid) = p.pid {
                who.push(format!("pid={pid}"));
            }
            if let Some(uid) = p.uid {
                who.push(format!("uid={uid}"));
            }
            if let Some(comm) = &p.comm {
                who.push(format!("comm={}", val(comm)));
            }
            if let Some(exe) = &p.exe {
                who.push(format!("exe={}", val(exe)));
            }
            if let Some(unit) = &p.unit {
                who.push(format!("unit={}", val(unit)));
            }
            if p.pid_reused {
                who.push("pid_reused".into());
            }
            if !who.is_empty() {
                writeln!(f, "    process: {}", who.join(" "))?;
            }
            if let Some(id) = &e.identity {
                writeln!(
                    f,
                    "    identity: sub={} iss={} source={}",
                    val(&id.sub),
                    val(&id.iss),
                    val(&id.source)
                )?;
            }
            write!(f, "    client={}", e.client)?;
            if let Some(dst) = e.orig_dst {
                write!(f, " dst={dst}")?;
            }
            writeln!(f)
        }
        ConnActivity::Close => writeln!(
            f,
            "    up={} down={} duration={}ms",
            e.bytes_up, e.bytes_down, e.duration_ms
        ),
    }
}

fn write_statement(f: &mut fmt::Formatter<'_>, st: &ReplayStatement) -> fmt::Result {
    let Some(m) = st.main() else {
        return Ok(());
    };
    let decision = st
        .request
        .as_ref()
        .map_or("(request not in the store)", |r| r.decision.as_str());
    write!(
        f,
        "[{}] {} {} {}",
        st.statement_seq,
        format_time(m.time_ms),
        decision,
        val(&m.class)
    )?;
    if let Some(rule) = &m.rule {
        write!(f, " rule={}", val(rule))?;
    }
    if let Some(policy) = &m.policy {
        write!(f, " policy={}", val(policy))?;
    }
    write!(f, " via={}", val(&m.via))?;
    let seqs: Vec<String> = [st.request_seq, st.result_seq]
        .into_iter()
        .flatten()
        .map(|s| format!("#{s}"))
        .collect();
    writeln!(f, " ({})", seqs.join(", "))?;
    for line in m.statement.lines() {
        writeln!(f, "    {}", clean(line))?;
    }
    if !m.tables.is_empty() {
        writeln!(f, "    tables: {}", clean(&m.tables.join(", ")))?;
    }
    if !m.functions.is_empty() {
        writeln!(f, "    functions: {}", clean(&m.functions.join(", ")))?;
    }
    if let Some(r) = &st.request
        && let Some(reason) = &r.reason
    {
        writeln!(f, "    reason: {}", clean(reason))?;
    }
    if let Some(r) = &st.result {
        let mut facts = Vec::new();
        if let Some(tag) = &r.command_tag {
            facts.push(clean(tag).into_owned());
        }
        if let Some(rows) = r.rows {
            facts.push(format!("rows={rows}"));
        }
        if let Some(masked) = r.values_masked {
            facts.push(format!("masked={masked}"));
        }
        if let Some(us) = r.duration_us {
            facts.push(format_us(us));
        }
        writeln!(f, "    result: {}", facts.join(", "))?;
        if let Some(sum) = &r.result {
            if !sum.columns.is_empty() {
                writeln!(f, "    columns: {}", clean(&sum.columns.join(" | ")))?;
            }
            for row in &sum.sample {
                let cells: Vec<Cow<'_, str>> = row
                    .iter()
                    .map(|c| c.as_deref().map_or(Cow::Borrowed("NULL"), clean))
                    .collect();
                writeln!(f, "    row: {}", cells.join(" | "))?;
            }
            let shown = sum.sample.len() as u64;
            if let Some(rows) = r.rows
                && rows > shown
                && shown > 0
            {
                writeln!(f, "    ({} more rows not kept)", rows - shown)?;
            }
        }
    }
    // The error the client received: the result's, else the refusal's.
    let failed = st
        .result
        .as_ref()
        .filter(|r| r.sqlstate.is_some() || r.error.is_some());
    if let Some(e) = failed.or(st.request.as_ref()) {
        match (&e.sqlstate, &e.error) {
            (Some(state), Some(error)) => {
                writeln!(f, "    error: SQLSTATE {} {}", clean(state), clean(error))?;
            }
            (Some(state), None) => writeln!(f, "    error: SQLSTATE {}", clean(state))?,
            (None, Some(error)) => writeln!(f, "    error: {}", clean(error))?,
            (None, None) => {}
        }
    }
    Ok(())
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.steps.iter().find_map(|s| match s {
            Step::Connection { event, .. } => event
                .account
                .as_deref()
                .map(|a| (a, event.target.as_deref())),
            Step::Statement(st) => st
                .main()
                .map(|m| (m.account.as_str(), Some(m.target.as_str()))),
            Step::Api { event, .. } => event
                .pointer("/unmapped/warden/account")
                .and_then(|a| a.as_str())
                .map(|a| {
                    (
                        a,
                        event
                            .pointer("/unmapped/warden/target")
                            .and_then(|t| t.as_str()),
                    )
                }),
            Step::Approval { .. } | Step::Unreadable { .. } => None,
        });
        write!(f, "session {} ({})", self.session, self.session.0)?;
        if let Some((account, target)) = who {
            write!(
                f,
                ": {}@{}",
                val(account),
                target.map_or(Cow::Borrowed("-"), val)
            )?;
        }
        match self.requests() {
            0 => writeln!(f, ", {} statements", self.statements())?,
            n => writeln!(f, ", {n} HTTP requests")?,
        }
        for step in &self.steps {
            match step {
                Step::Connection { seq, event } => write_connection(f, *seq, event)?,
                Step::Statement(st) => write_statement(f, st)?,
                Step::Api {
                    seq,
                    time_ms,
                    activity,
                    decision,
                    line,
                    ..
                } => writeln!(
                    f,
                    "{} #{seq} {} {}{line}",
                    format_time(*time_ms),
                    val(activity),
                    val(decision)
                )?,
                Step::Approval { seq, event } => {
                    write!(
                        f,
                        "{} #{seq} approval {}",
                        format_time(event.time_ms),
                        event.status.as_str()
                    )?;
                    if let Some(id) = &event.request_id {
                        write!(f, " request={}", val(id))?;
                    }
                    if let Some(g) = &event.grant_id {
                        write!(f, " grant={}", val(g))?;
                    }
                    if let Some(rule) = &event.rule {
                        write!(f, " rule={}", val(rule))?;
                    }
                    if let Some(a) = &event.approver {
                        write!(f, " approver.uid={}", a.uid)?;
                        if let Some(u) = &a.user {
                            write!(f, " approver.user={}", val(u))?;
                        }
                    }
                    writeln!(f)?;
                    if let Some(r) = &event.reason {
                        writeln!(f, "    reason: {}", clean(r))?;
                    }
                }
                Step::Unreadable {
                    seq,
                    time_ms,
                    class_uid,
                    activity,
                    error,
                } => writeln!(
                    f,
                    "{} #{seq} {} (class {class_uid}) cannot be read: {}",
                    format_time(*time_ms),
                    val(activity),
                    clean(error)
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Decision, StatementDecision};
    use crate::audit::ocsf::tests::{sample, sample_statement};
    use crate::audit::spawn_writer;
    use crate::audit::store::{SyncMode, WriterOptions};

    #[test]
    fn session_arguments() {
        for (arg, want) in [
            ("00000000000004d2", 0x4d2),
            ("0x4d2", 0x4d2),
            ("4d2", 0x4d2),
            ("1234", 1234),
            (" 7 ", 7),
            ("0000000000001234", 0x1234),
            ("ffffffffffffffff", u64::MAX),
        ] {
            assert_eq!(parse_session(arg).unwrap(), SessionId(want), "{arg}");
        }
        for bad in ["", "xyz", "0x", "00000000000004d2f", "-1", "4d2 5"] {
            assert!(parse_session(bad).is_err(), "{bad}");
        }
    }

    /// Open, two statements (the second blocked), an event of another
    /// session in between, a result recorded after the next request, close.
    async fn store(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("audit.db");
        let opts = WriterOptions {
            sync: SyncMode::Normal,
            host: "h".into(),
            ..WriterOptions::default()
        };
        let (h, task) = spawn_writer(&path, opts).unwrap();
        let mut open = sample(ConnActivity::Open, Decision::Allowed);
        open.protocol = "postgres".into();
        h.record(open.clone()).await.unwrap();
        let req1 = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1);
        h.record(req1).await.unwrap();
        let mut elsewhere = sample_statement(StatementPhase::Request, StatementDecision::Denied, 1);
        elsewhere.session = SessionId(99);
        h.record(elsewhere).await.unwrap();
        let req2 = sample_statement(StatementPhase::Request, StatementDecision::Blocked, 2);
        h.record(req2).await.unwrap();
        let res1 = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 1);
        h.record_detached(res1);
        let mut close = open;
        close.activity = ConnActivity::Close;
        close.time_ms += 5_000;
        close.bytes_up = 100;
        close.bytes_down = 2_000;
        close.duration_ms = 5_000;
        h.record(close).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();
        path
    }

    #[tokio::test]
    async fn replay_merges_results_into_their_statements_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = store(dir.path()).await;
        let r = load(&path, SessionId(0x4d2)).unwrap().unwrap();
        assert_eq!(r.session, SessionId(0x4d2));
        assert_eq!(r.steps.len(), 4, "{r:#?}");
        match &r.steps[0] {
            Step::Connection { seq, event } => {
                assert_eq!((*seq, event.activity), (1, ConnActivity::Open));
            }
            other => panic!("{other:?}"),
        }
        match &r.steps[1] {
            Step::Statement(st) => {
                assert_eq!(st.statement_seq, 1);
                assert_eq!((st.request_seq, st.result_seq), (Some(2), Some(5)));
                assert_eq!(st.request.as_ref().unwrap().phase, StatementPhase::Request);
                assert_eq!(st.result.as_ref().unwrap().rows, Some(2));
            }
            other => panic!("{other:?}"),
        }
        match &r.steps[2] {
            Step::Statement(st) => {
                assert_eq!(
                    (st.statement_seq, st.request_seq, st.result_seq),
                    (2, Some(4), None)
                );
                assert_eq!(
                    st.request.as_ref().unwrap().decision,
                    StatementDecision::Blocked
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&r.steps[3], Step::Connection { seq: 6, event } if event.activity == ConnActivity::Close)
        );
        assert_eq!(r.statements(), 2);
        // The other session alone; decimal 99 is hex 63.
        let other = load(&path, parse_session("99").unwrap()).unwrap().unwrap();
        assert_eq!(other.steps.len(), 1);
        assert!(load(&path, SessionId(5)).unwrap().is_none());
        // The lookup uses the session index.
        let reader = AuditReader::open(&path).unwrap();
        let plan: Vec<String> = reader
            .conn()
            .prepare(
                "EXPLAIN QUERY PLAN SELECT seq, data FROM events WHERE seq > ? AND session = ? \
                 ORDER BY seq LIMIT ?",
            )
            .unwrap()
            .query_map(rusqlite::params![0, "00000000000004d2", 1000], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("INDEX events_session")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");

        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let want = [
            "session 00000000000004d2 (1234): orders-api@orders-db, 2 statements",
            "2026-11-29T13:05:02.123Z #1 open allowed orders-api@orders-db protocol=postgres",
            "    process: pid=1234 uid=1000 comm=curl exe=/usr/bin/curl unit=orders.service",
            "    identity: sub=system:serviceaccount:orders:api iss=https://idp.example \
             source=token_file",
            "    client=127.0.0.1:40000 dst=10.0.0.5:5432",
            "[1] 2026-11-29T13:05:02.133Z allowed read rule=rules[0] policy=orders-policy \
             via=simple (#2, #5)",
            "    SELECT id, email FROM public.orders WHERE id = $1",
            "    tables: public.orders",
            "    result: SELECT 2, rows=2, masked=1, 1.234ms",
            "    columns: id | email",
            "    row: 1 | ***",
            "    row: 2 | NULL",
            "[2] 2026-11-29T13:05:02.143Z blocked write rule=no-deletes policy=orders-policy \
             via=simple (#4)",
            "    DELETE FROM public.orders",
            "    tables: public.orders",
            "    reason: statement blocked by rule no-deletes",
            "    error: SQLSTATE 42501",
            "2026-11-29T13:05:07.123Z #6 close allowed orders-api@orders-db protocol=postgres",
            "    up=100 down=2000 duration=5000ms",
        ];
        assert_eq!(lines, want, "\n{text}");

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["session"], 0x4d2);
        assert_eq!(json["session_id"], "00000000000004d2");
        assert_eq!(json["steps"][0]["kind"], "connection");
        assert_eq!(json["steps"][1]["kind"], "statement");
        assert_eq!(
            json["steps"][1]["result"]["result"]["sample"][1][1],
            serde_json::Value::Null
        );
        assert_eq!(json["steps"][2]["request"]["decision"], "blocked");
    }

    #[test]
    fn orphan_results_unreadable_rows_and_control_characters() {
        let mut res = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 3);
        res.statement = "SELECT 1;\n-- \u{1b}[2J".into();
        let data = crate::audit::ocsf::encode_statement(&res, 8, "c", "").unwrap();
        let row = |seq: u64, class_uid: u32, activity: &str, data: Vec<u8>| StoredEvent {
            seq,
            time_ms: 0,
            class_uid,
            activity: activity.into(),
            decision: "allowed".into(),
            account: None,
            target: None,
            session: "00000000000004d2".into(),
            reason: None,
            data,
        };
        let r = build(
            SessionId(0x4d2),
            &[
                row(7, 4001, "open", b"{}".to_vec()),
                row(8, 6005, "result", data.clone()),
                row(9, 6005, "result", data),
            ],
        );
        assert_eq!(r.steps.len(), 3);
        assert!(matches!(&r.steps[0], Step::Unreadable { seq: 7, .. }));
        // Two results of one statement: the second starts a new step.
        for (i, seq) in [(1, 8), (2, 9)] {
            match &r.steps[i] {
                Step::Statement(st) => {
                    assert_eq!((st.request_seq, st.result_seq), (None, Some(seq)));
                }
                other => panic!("{other:?}"),
            }
        }
        let text = r.to_string();
        assert!(
            text.contains("#7 open (class 4001) cannot be read"),
            "{text}"
        );
        assert!(text.contains("[3] 2026-11-29T13:05:02.153Z (request not in the store) read"));
        assert!(
            text.contains("    SELECT 1;\n    -- \\u{1b}[2J\n"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn approval_transitions_are_steps_of_the_session() {
        use crate::audit::event::{ApprovalEvent, ApprovalStatus};
        let ev = |status: ApprovalStatus, reason: &str| ApprovalEvent {
            time_ms: 1_795_957_502_123,
            status,
            request_id: Some("az6h4xyj".into()),
            grant_id: None,
            account: "orders-api".into(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            session: Some(SessionId(0x4d2)),
            process: Default::default(),
            identity: None,
            statement: "DELETE FROM orders WHERE id = ?".into(),
            fingerprint: "f".repeat(64),
            policy: Some("ro".into()),
            rule: Some("orders-writes".into()),
            risk: "write".into(),
            requested_ms: 1_795_957_502_000,
            expires_ms: None,
            approver: None,
            reason: Some(reason.into()),
            learned: None,
        };
        let row = |seq: u64, e: &ApprovalEvent| StoredEvent {
            seq,
            time_ms: e.time_ms,
            class_uid: crate::audit::ocsf::CLASS_UID_USER_ACCESS_MANAGEMENT,
            activity: crate::audit::ocsf::APPROVAL_ACTIVITY.into(),
            decision: e.status.as_str().into(),
            account: Some(e.account.clone()),
            target: Some(e.target.clone()),
            session: "00000000000004d2".into(),
            reason: e.reason.clone(),
            data: crate::audit::ocsf::encode_approval(e, seq, "c", "").unwrap(),
        };
        let requested = ev(ApprovalStatus::Requested, "held");
        let timed_out = ev(ApprovalStatus::TimedOut, "nobody decided within 3s");
        let r = build(
            SessionId(0x4d2),
            &[row(12, &requested), row(13, &timed_out)],
        );
        assert_eq!(r.steps.len(), 2, "{r:?}");
        assert!(
            matches!(&r.steps[1], Step::Approval { seq: 13, .. }),
            "{r:?}"
        );
        let text = r.to_string();
        assert!(
            text.contains("#12 approval requested request=az6h4xyj rule=orders-writes"),
            "{text}"
        );
        assert!(text.contains("#13 approval timed_out"), "{text}");
        assert!(text.contains("reason: nobody decided within 3s"), "{text}");
        assert!(!text.contains("cannot be read"), "{text}");
    }
}
