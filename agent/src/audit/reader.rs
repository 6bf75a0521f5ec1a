//! Read-only access to the audit store for the CLI (`warden audit tail`).
//!
//! Opens the database read-only, so it can run while the daemon writes (WAL:
//! readers see every committed transaction and never block the writer).
//! Every query is its own read transaction, so polling [`AuditReader::query`]
//! with the last seen `seq` follows the store.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::AuditError;
use super::checkpoint::{Checkpoint, known_keys};
use super::event::{StatementEvent, StatementPhase};
use super::ocsf::{
    CLASS_UID_NETWORK_ACTIVITY, EventKind, decode_approval, decode_checkpoint, decode_config,
    decode_connection, decode_prune, decode_statement,
};
use super::store::{
    self, BUSY_TIMEOUT, SCHEMA_VERSION, check_schema_version, latest_checkpoint_row, max_seq,
    read_chain_id, read_schema_version, stored_keys,
};
pub use super::store::{StoredEvent, TailFilter};

/// A read-only connection to an audit store.
pub struct AuditReader {
    conn: Connection,
    path: PathBuf,
    schema_version: i64,
    /// For rendering compact records (empty if meta has none).
    chain_id: String,
}

impl AuditReader {
    /// Open the store at `path` read-only. Fails with
    /// [`AuditError::NotFound`] when there is no file there.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(AuditError::Schema {
                    path: path.to_owned(),
                    detail: "is a directory, not an audit store".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuditError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(AuditError::Io {
                    op: "stat",
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let open_err = |op: &'static str| {
            move |source| AuditError::Open {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err("open read-only"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("set busy_timeout"))?;
        let has_meta = store::has_meta_table(&conn).map_err(open_err("read schema"))?;
        if !has_meta {
            return Err(AuditError::Schema {
                path: path.to_owned(),
                detail: "not a Warden audit store (no meta table)".into(),
            });
        }
        let version = read_schema_version(&conn).map_err(open_err("read schema_version"))?;
        // Versions 1 (before the hash chain), 2 (before forwarder cursors)
        // and 3 (with an account index) have the same event columns; the
        // writer migrates them at its next start.
        let schema_version = match version {
            Some(v @ (1..=SCHEMA_VERSION)) => v,
            other => {
                check_schema_version(path, other)?;
                SCHEMA_VERSION
            }
        };
        let chain_id = read_chain_id(&conn).ok().flatten().unwrap_or_default();
        Ok(Self {
            conn,
            path: path.to_owned(),
            schema_version,
            chain_id,
        })
    }

    /// The open connection (read-only).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The store's schema version (1 to [`SCHEMA_VERSION`]).
    pub(crate) fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// The store's chain id.
    pub fn chain_id(&self) -> Result<String, AuditError> {
        read_chain_id(&self.conn)
            .map_err(|source| AuditError::Query {
                op: "read chain_id",
                source,
            })?
            .ok_or_else(|| AuditError::Schema {
                path: self.path.clone(),
                detail: "meta has no chain_id".into(),
            })
    }

    /// Highest stored `seq` (0 when empty).
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        max_seq(&self.conn).map_err(|source| AuditError::Query {
            op: "read last seq",
            source,
        })
    }

    /// Up to `limit` events matching `filter` with `seq > after_seq`, in
    /// `seq` order.
    pub fn query(
        &self,
        filter: &TailFilter,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, AuditError> {
        store::tail_events(&self.conn, filter, after_seq, limit, &self.chain_id)
    }

    /// The `after_seq` to start a tail from so that the first
    /// [`query`](Self::query) returns the last `last_n` events matching
    /// `filter` (fewer if there are fewer); with `last_n == 0`, only events
    /// written from now on.
    pub fn tail_start(&self, filter: &TailFilter, last_n: usize) -> Result<u64, AuditError> {
        if last_n == 0 {
            return self.last_seq();
        }
        store::tail_start_seq(&self.conn, filter, last_n)
    }
}

/// RFC 3339 UTC with milliseconds; the raw number if out of range.
pub fn format_time(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A value for `key=value` output: bare when safe, else quoted with escapes
/// (workload-controlled strings such as `comm` must not reach the terminal
/// raw).
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

/// One human-readable line for `ev`, e.g.
/// `2026-11-23T13:05:02.123Z #42 open allowed account=orders-api
/// target=orders-db pid=1234 comm=curl exe=/usr/bin/curl src=127.0.0.1:40000
/// dst=10.0.0.5:5432 up=0 down=0 dur=0ms session=00000000000004d2`.
/// Absent values are left out (`account=-`/`target=-` when unknown).
/// Checkpoints print as `... #1001 checkpoint n/a size=1000 head=<hex>
/// key=<key id>`, configuration changes as `... #1 config n/a action=load
/// path=/etc/warden/warden.toml sha256=<hex>`, prunes as `... #2001 prune
/// n/a removed=1..=1000 events=1000 reason=retention retention_days=400`,
/// statements as `... #2 statement allowed session=00000000000004d2
/// orders-api@orders-db stmt=1 class=read rule=rules[0] via=simple
/// statement="SELECT ..."` and their results as `... #3 result allowed
/// session=... orders-api@orders-db stmt=1 class=read rows=2 masked=1
/// dur=1.234ms tag="SELECT 2"` (plus `reason=`, `sqlstate=`, `error=` when
/// present).
pub fn format_text(ev: &StoredEvent) -> String {
    let mut line = format!(
        "{} #{} {} {}",
        format_time(ev.time_ms),
        ev.seq,
        val(&ev.activity),
        val(&ev.decision)
    );
    let kind = EventKind::from_columns(ev.class_uid, &ev.activity);
    if kind == Some(EventKind::Config)
        && let Ok(d) = decode_config(&ev.data)
    {
        let c = &d.change;
        let _ = write!(
            line,
            " action={} path={} sha256={}",
            c.action.as_str(),
            val(&c.path),
            val(&c.sha256)
        );
        if let Some(prev) = &c.previous_sha256 {
            let _ = write!(line, " previous_sha256={}", val(prev));
        }
        if c.outcome != crate::audit::event::ConfigOutcome::Applied {
            let _ = write!(line, " outcome={}", c.outcome.as_str());
        }
        if let Some(detail) = &c.detail {
            let _ = write!(line, " detail={}", val(detail));
        }
        if let Some(reason) = &c.reason {
            let _ = write!(line, " reason={}", val(reason));
        }
        return line;
    }
    if kind == Some(EventKind::Prune)
        && let Ok(d) = decode_prune(&ev.data)
    {
        let p = &d.prune;
        let _ = write!(
            line,
            " removed={}..={} events={} reason={} retention_days={}",
            p.from_seq,
            p.through_seq,
            p.events,
            val(&p.reason),
            p.retention_days
        );
        return line;
    }
    if kind == Some(EventKind::Checkpoint)
        && let Ok(d) = decode_checkpoint(&ev.data)
    {
        let cp = &d.checkpoint;
        let _ = write!(
            line,
            " size={} head={} key={}",
            cp.size(),
            hex::encode(cp.head_hash()),
            val(cp.key_id())
        );
        return line;
    }
    if kind == Some(EventKind::Approval)
        && let Ok(d) = decode_approval(&ev.data)
    {
        approval_text(&mut line, &d.event);
        return line;
    }
    if kind == Some(EventKind::Statement)
        && let Ok(d) = decode_statement(&ev.data)
    {
        statement_text(&mut line, &d.event);
        return line;
    }
    if kind == Some(EventKind::Kernel)
        && let Ok(d) = super::ocsf::decode_kernel(&ev.data)
    {
        line.push_str(&super::ocsf::kernel_text(&d));
        return line;
    }
    if kind == Some(EventKind::Api)
        && let Some(text) = api_text(ev)
    {
        line.push_str(&text);
        return line;
    }
    let decoded = if ev.class_uid == CLASS_UID_NETWORK_ACTIVITY {
        decode_connection(&ev.data).ok()
    } else {
        None
    };
    // Writing to a String cannot fail; the results are ignored below.
    let account = ev.account.as_deref().map_or(Cow::Borrowed("-"), val);
    let target = ev.target.as_deref().map_or(Cow::Borrowed("-"), val);
    let _ = write!(line, " account={account} target={target}");
    match decoded {
        Some(d) => {
            let e = d.event;
            let p = &e.process;
            if let Some(pid) = p.pid {
                let _ = write!(line, " pid={pid}");
            }
            if let Some(uid) = p.uid {
                let _ = write!(line, " uid={uid}");
            }
            if let Some(comm) = &p.comm {
                let _ = write!(line, " comm={}", val(comm));
            }
            if let Some(exe) = &p.exe {
                let _ = write!(line, " exe={}", val(exe));
            }
            let _ = write!(line, " src={}", e.client);
            if let Some(dst) = e.orig_dst {
                let _ = write!(line, " dst={dst}");
            }
            let _ = write!(
                line,
                " up={} down={} dur={}ms session={}",
                e.bytes_up,
                e.bytes_down,
                e.duration_ms,
                val(&ev.session)
            );
            if let Some(reason) = &e.reason {
                let _ = write!(line, " reason={}", val(reason));
            }
            if let Some(detail) = &e.detail {
                let _ = write!(line, " detail={}", val(detail));
            }
        }
        None => {
            let _ = write!(line, " session={}", val(&ev.session));
            if let Some(reason) = &ev.reason {
                let _ = write!(line, " reason={}", val(reason));
            }
        }
    }
    line
}

/// The statement part of a [`format_text`] line.
fn approval_text(line: &mut String, e: &super::event::ApprovalEvent) {
    if let Some(id) = &e.request_id {
        let _ = write!(line, " request={}", val(id));
    }
    if let Some(id) = &e.grant_id {
        let _ = write!(line, " grant={}", val(id));
    }
    let _ = write!(
        line,
        " account={} target={} risk={}",
        val(&e.account),
        val(&e.target),
        val(&e.risk)
    );
    if let Some(s) = e.session {
        let _ = write!(line, " session={s}");
    }
    if let Some(r) = &e.rule {
        let _ = write!(line, " rule={}", val(r));
    }
    if let Some(a) = &e.approver {
        let _ = write!(
            line,
            " approver.uid={} approver.user={} approver.groups={}",
            a.uid,
            val(a.user.as_deref().unwrap_or("-")),
            val(&a.groups.join(","))
        );
    }
    if let Some(ms) = e.expires_ms {
        let _ = write!(line, " expires={}", format_time(ms));
    }
    if let Some(r) = &e.reason {
        let _ = write!(line, " reason={}", val(r));
    }
    if let Some(fp) = &e.learned {
        let _ = write!(line, " learned={}", val(fp));
    }
    let _ = write!(line, " statement={}", val(&e.statement));
}

fn statement_text(line: &mut String, e: &StatementEvent) {
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        " session={} {}@{} stmt={} class={}",
        e.session,
        val(&e.account),
        val(&e.target),
        e.statement_seq,
        val(&e.class)
    );
    match e.phase {
        StatementPhase::Request => {
            if let Some(rule) = &e.rule {
                let _ = write!(line, " rule={}", val(rule));
            }
            let _ = write!(line, " via={} statement={}", val(&e.via), val(&e.statement));
            if let Some(reason) = &e.reason {
                let _ = write!(line, " reason={}", val(reason));
            }
        }
        StatementPhase::Result => {
            if let Some(rows) = e.rows {
                let _ = write!(line, " rows={rows}");
            }
            if let Some(masked) = e.values_masked {
                let _ = write!(line, " masked={masked}");
            }
            if let Some(us) = e.duration_us {
                let _ = write!(line, " dur={}", format_us(us));
            }
            if let Some(tag) = &e.command_tag {
                let _ = write!(line, " tag={}", val(tag));
            }
        }
    }
    if let Some(state) = &e.sqlstate {
        let _ = write!(line, " sqlstate={}", val(state));
    }
    if let Some(error) = &e.error {
        let _ = write!(line, " error={}", val(error));
    }
}

/// Microseconds as `850us`, `1.234ms` or `2.500s`.
pub fn format_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{}.{:03}ms", us / 1_000, us % 1_000),
        _ => format!("{}.{:03}s", us / 1_000_000, (us / 1_000) % 1_000),
    }
}

/// The rest of an HTTP request event's line: `session=... svc@api req=1
/// GET /orders query="id=1" status=200 rule=... in=120 out=512 masked=2
/// dur=1.234ms` (fields left out when absent), read from the stored OCSF
/// document.
pub(crate) fn api_text(ev: &StoredEvent) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(&ev.data).ok()?;
    let w = doc.get("unmapped")?.get("warden")?;
    let a = w.get("api")?;
    let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let mut out = String::new();
    let _ = write!(
        out,
        " session={} {}@{} req={} {} {}",
        val(&ev.session),
        ev.account.as_deref().map_or(Cow::Borrowed("-"), val),
        ev.target.as_deref().map_or(Cow::Borrowed("-"), val),
        a.get("request_seq")?.as_u64()?,
        val(&s(doc.get("api").and_then(|x| x.get("operation")))?),
        val(&s(doc.pointer("/http_request/url/path"))?),
    );
    if let Some(q) = s(doc.pointer("/http_request/url/query_string")) {
        let _ = write!(out, " query={}", val(&q));
    }
    if let Some(code) = doc.pointer("/http_response/code").and_then(|c| c.as_u64()) {
        let _ = write!(out, " status={code}");
    }
    if let Some(rule) = s(a.get("rule")) {
        let _ = write!(out, " rule={}", val(&rule));
    }
    for key in ["bytes_in", "bytes_out", "values_masked"] {
        if let Some(n) = a.get(key).and_then(|n| n.as_u64()) {
            let name = match key {
                "bytes_in" => "in",
                "bytes_out" => "out",
                _ => "masked",
            };
            let _ = write!(out, " {name}={n}");
        }
    }
    if let Some(us) = a.get("duration_us").and_then(|n| n.as_u64()) {
        let _ = write!(out, " dur={}.{:03}ms", us / 1000, us % 1000);
    }
    if let Some(reason) = s(w.get("reason")) {
        let _ = write!(out, " reason={}", val(&reason));
    }
    if let Some(e) = s(a.get("error")) {
        let _ = write!(out, " error={}", val(&e));
    }
    Some(out)
}

/// The latest checkpoint of the store at `path` (read-only; usable while
/// the daemon writes), with its public key, ready for
/// [`Checkpoint::to_json`]. `None` when the store has no checkpoint yet.
/// Fails when that checkpoint does not verify under its key (run
/// `verify` to see why).
pub fn latest_checkpoint(path: &Path) -> Result<Option<Checkpoint>, AuditError> {
    let reader = AuditReader::open(path)?;
    if reader.schema_version() < 2 {
        return Ok(None);
    }
    let conn = reader.conn();
    let query_err = |source| AuditError::Query {
        op: "read latest checkpoint",
        source,
    };
    let row = latest_checkpoint_row(conn).map_err(query_err)?;
    let Some((body, signature)) = row else {
        return Ok(None);
    };
    let bad = |detail: String| AuditError::Checkpoint {
        detail: format!("latest checkpoint of {}: {detail}", path.display()),
    };
    let cp = Checkpoint::from_parts(body, signature, None).map_err(bad)?;
    let keys = known_keys(stored_keys(conn).map_err(query_err)?, path);
    let Some(key) = keys.get(cp.key_id()) else {
        return Err(bad(format!("signing key {} is unknown", cp.key_id())));
    };
    if !cp.signature_valid(key) {
        return Err(bad("signature does not verify".into()));
    }
    Ok(Some(cp.with_public_key(key.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ConnActivity, ConnectionEvent, Decision, SessionId};
    use crate::audit::ocsf::tests::sample;
    use crate::audit::spawn_writer;
    use crate::audit::store::{SyncMode, WriterOptions};

    fn opts(sync: SyncMode) -> WriterOptions {
        WriterOptions {
            sync,
            batch_max: 32,
            host: "h".into(),
            ..WriterOptions::default()
        }
    }

    fn ev(i: u64, account: &str, decision: Decision) -> ConnectionEvent {
        let activity = match decision {
            Decision::Allowed => ConnActivity::Open,
            Decision::Refused => ConnActivity::Refuse,
        };
        let mut e = sample(activity, decision);
        e.session = SessionId(i);
        e.account = Some(account.into());
        if decision == Decision::Refused {
            e.reason = Some("target_not_granted".into());
        }
        e
    }

    #[test]
    fn approval_text_names_the_shape_an_approval_learned() {
        let mut e = crate::audit::event::ApprovalEvent {
            time_ms: 0,
            status: crate::audit::event::ApprovalStatus::Approved,
            request_id: Some("r1".into()),
            grant_id: None,
            account: "orders-api".into(),
            target: "orders-pg".into(),
            protocol: "postgres".into(),
            session: None,
            process: crate::audit::event::ProcessInfo::default(),
            identity: None,
            statement: "DELETE FROM t WHERE id = ?".into(),
            fingerprint: "f".into(),
            policy: None,
            rule: None,
            risk: "write".into(),
            requested_ms: 0,
            expires_ms: None,
            approver: None,
            reason: None,
            learned: None,
        };
        let mut line = String::new();
        approval_text(&mut line, &e);
        assert!(!line.contains("learned="), "{line}");
        e.learned = Some("9f3a0c1d".into());
        let mut line = String::new();
        approval_text(&mut line, &e);
        assert!(line.contains(" learned=9f3a0c1d statement="), "{line}");
    }

    #[test]
    fn missing_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/audit.db");
        let err = AuditReader::open(&path).err().unwrap();
        assert!(matches!(err, AuditError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!("no audit store at {} (is state_dir right?)", path.display())
        );
        assert!(!path.exists(), "the reader must not create anything");
    }

    #[tokio::test]
    async fn reader_follows_a_running_writer_with_filters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn_writer(&path, opts(SyncMode::Full)).unwrap();
        for i in 1..=10u64 {
            let (acct, dec) = match i % 3 {
                0 => ("billing", Decision::Refused),
                1 => ("orders-api", Decision::Allowed),
                _ => ("billing", Decision::Allowed),
            };
            assert_eq!(h.record(ev(i, acct, dec)).await.unwrap(), i);
        }

        let r = AuditReader::open(&path).unwrap();
        assert_eq!(r.chain_id().unwrap(), h.chain_id());
        assert_eq!(r.last_seq().unwrap(), 10);
        let all = TailFilter::default();
        let got = r.query(&all, 0, 100).unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(r.query(&all, 8, 100).unwrap().len(), 2);
        assert_eq!(r.query(&all, 0, 3).unwrap().len(), 3);

        let orders = TailFilter {
            account: Some("orders-api".into()),
            ..TailFilter::default()
        };
        let seqs = |v: Vec<StoredEvent>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(r.query(&orders, 0, 100).unwrap()), vec![1, 4, 7, 10]);
        let refused = TailFilter {
            decision: Some("REFUSED".into()),
            ..TailFilter::default()
        };
        let got = r.query(&refused, 0, 100).unwrap();
        assert_eq!(seqs(got.clone()), vec![3, 6, 9]);
        assert!(
            got.iter().all(
                |e| e.activity == "refuse" && e.reason.as_deref() == Some("target_not_granted")
            )
        );
        let billing_allowed = TailFilter {
            account: Some("billing".into()),
            decision: Some("allowed".into()),
            ..TailFilter::default()
        };
        assert_eq!(
            seqs(r.query(&billing_allowed, 0, 100).unwrap()),
            vec![2, 5, 8]
        );
        for s in ["5", "0x5", "0000000000000005"] {
            let by_session = TailFilter {
                session: Some(s.into()),
                ..TailFilter::default()
            };
            assert_eq!(seqs(r.query(&by_session, 0, 100).unwrap()), vec![5], "{s}");
        }

        // tail_start picks the last N matches.
        assert_eq!(r.tail_start(&all, 3).unwrap(), 7);
        assert_eq!(seqs(r.query(&all, 7, 100).unwrap()), vec![8, 9, 10]);
        assert_eq!(r.tail_start(&orders, 2).unwrap(), 6);
        assert_eq!(seqs(r.query(&orders, 6, 100).unwrap()), vec![7, 10]);
        assert_eq!(r.tail_start(&orders, 50).unwrap(), 0);
        assert_eq!(r.tail_start(&all, 0).unwrap(), 10);

        // New commits are visible to the open reader (WAL, writer running).
        let after = r.last_seq().unwrap();
        h.record(ev(11, "orders-api", Decision::Allowed))
            .await
            .unwrap();
        let new = r.query(&all, after, 100).unwrap();
        assert_eq!(seqs(new.clone()), vec![11]);
        let d = decode_connection(&new[0].data).unwrap();
        assert_eq!(d.event.session, SessionId(11));

        h.shutdown().await;
        task.join().unwrap();
        // Still readable after the writer closed; the writer signed a
        // checkpoint (event 12) at shutdown.
        assert_eq!(r.last_seq().unwrap(), 12);
        let cp = r.query(&all, 11, 10).unwrap();
        assert_eq!(cp.len(), 1);
        assert_eq!(
            (
                cp[0].class_uid,
                cp[0].activity.as_str(),
                cp[0].decision.as_str()
            ),
            (6002, "checkpoint", "n/a")
        );
    }

    #[tokio::test]
    async fn format_text_has_the_key_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn_writer(&path, opts(SyncMode::Normal)).unwrap();
        h.record(sample(ConnActivity::Open, Decision::Allowed))
            .await
            .unwrap();
        let mut refused = sample(ConnActivity::Refuse, Decision::Refused);
        refused.reason = Some("unknown_account".into());
        refused.detail = Some("no enrollment for uid 1000".into());
        refused.account = None;
        refused.process.comm = Some("evil\u{1b}[2J".into());
        h.record(refused).await.unwrap();
        let mut close = sample(ConnActivity::Close, Decision::Allowed);
        close.bytes_up = 10;
        close.bytes_down = 20;
        close.duration_ms = 30;
        close.client = "[::1]:40000".parse().unwrap();
        h.record(close).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();

        let r = AuditReader::open(&path).unwrap();
        let evs = r.query(&TailFilter::default(), 0, 10).unwrap();
        let lines: Vec<String> = evs.iter().map(format_text).collect();
        assert_eq!(
            lines[0],
            "2026-11-29T13:05:02.123Z #1 open allowed account=orders-api target=orders-db \
             pid=1234 uid=1000 comm=curl exe=/usr/bin/curl src=127.0.0.1:40000 \
             dst=10.0.0.5:5432 up=0 down=0 dur=0ms session=00000000000004d2"
        );
        let l = &lines[1];
        assert!(
            l.contains("#2 refuse refused account=- target=orders-db"),
            "{l}"
        );
        assert!(l.contains("reason=unknown_account"), "{l}");
        assert!(l.contains("detail=\"no enrollment for uid 1000\""), "{l}");
        assert!(!l.contains('\u{1b}'), "control characters are escaped: {l}");
        assert!(l.contains(r#"comm="evil\u{1b}[2J""#), "{l}");
        let l = &lines[2];
        assert!(l.contains("#3 close allowed"), "{l}");
        assert!(
            l.contains("src=[::1]:40000 dst=10.0.0.5:5432 up=10 down=20 dur=30ms"),
            "{l}"
        );
        // The checkpoint signed at shutdown.
        let l = &lines[3];
        let cp = crate::audit::latest_checkpoint(&path).unwrap().unwrap();
        assert!(
            l.ends_with(&format!(
                "#4 checkpoint n/a size=3 head={} key={}",
                hex::encode(cp.head_hash()),
                cp.key_id()
            )),
            "{l}"
        );

        // Rows that are not connection events still print their columns.
        let mut other = evs[1].clone();
        other.class_uid = 6005;
        let l = format_text(&other);
        assert!(
            l.ends_with("session=00000000000004d2 reason=unknown_account"),
            "{l}"
        );
    }

    #[tokio::test]
    async fn since_session_and_decision_filters_combine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn_writer(&path, opts(SyncMode::Normal)).unwrap();
        let base = 4_102_444_800_000i64; // 2100, after the real clock
        for i in 1..=9u64 {
            let dec = if i % 4 == 0 {
                Decision::Refused
            } else {
                Decision::Allowed
            };
            let mut e = ev(i % 3, "orders-api", dec);
            e.time_ms = base + i as i64 * 1000;
            assert_eq!(h.record(e).await.unwrap(), i);
        }
        h.shutdown().await;
        task.join().unwrap();
        let r = AuditReader::open(&path).unwrap();
        let seqs = |f: &TailFilter| {
            r.query(f, 0, 100)
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        let since = |ms: i64| TailFilter {
            since_ms: Some(ms),
            ..TailFilter::default()
        };
        // At or after; the shutdown checkpoint (seq 10) is stamped with
        // the real clock, before these made-up times.
        assert_eq!(seqs(&since(base + 6000)), vec![6, 7, 8, 9]);
        assert_eq!(seqs(&since(base + 5999)), vec![6, 7, 8, 9]);
        assert_eq!(seqs(&since(base + 10_000)), Vec::<u64>::new());
        assert_eq!(seqs(&since(0)).len(), 10);
        let f = TailFilter {
            session: Some("1".into()),
            since_ms: Some(base + 2000),
            ..TailFilter::default()
        };
        assert_eq!(seqs(&f), vec![4, 7]);
        let f = TailFilter {
            decision: Some("refused".into()),
            since_ms: Some(base + 5000),
            ..TailFilter::default()
        };
        assert_eq!(seqs(&f), vec![8]);
        let f = TailFilter {
            decision: Some("n/a".into()),
            ..TailFilter::default()
        };
        assert_eq!(seqs(&f), vec![10]);
        let f = TailFilter {
            decision: Some("allowed".into()),
            session: Some("0".into()),
            ..TailFilter::default()
        };
        assert_eq!(seqs(&f), vec![3, 6, 9]);
        // The last N among the events since T.
        let f = since(base + 3000);
        let after = r.tail_start(&f, 2).unwrap();
        assert_eq!(r.query(&f, after, 100).unwrap().len(), 2);
        assert_eq!(r.query(&f, after, 100).unwrap()[0].seq, 8);
    }

    #[tokio::test]
    async fn statements_are_found_by_filters_and_read_as_text() {
        use crate::audit::event::{StatementDecision, StatementPhase};
        use crate::audit::ocsf::tests::sample_statement;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn_writer(&path, opts(SyncMode::Normal)).unwrap();
        h.record(sample(ConnActivity::Open, Decision::Allowed))
            .await
            .unwrap();
        let req = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 1);
        h.record(req).await.unwrap();
        let mut res = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 1);
        res.statement = "SELECT\n1".into();
        h.record(res).await.unwrap();
        let blocked = sample_statement(StatementPhase::Request, StatementDecision::Blocked, 2);
        h.record(blocked).await.unwrap();
        let mut other = sample_statement(StatementPhase::Request, StatementDecision::Denied, 1);
        other.session = SessionId(7);
        other.account = "billing".into();
        other.reason = Some("no rule allows it".into());
        other.sqlstate = None;
        h.record(other).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();

        let r = AuditReader::open(&path).unwrap();
        let seqs = |f: TailFilter| {
            r.query(&f, 0, 100)
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        let by =
            |account: Option<&str>, decision: Option<&str>, session: Option<&str>| TailFilter {
                account: account.map(Into::into),
                decision: decision.map(Into::into),
                session: session.map(Into::into),
                since_ms: None,
            };
        assert_eq!(seqs(by(Some("billing"), None, None)), vec![5]);
        assert_eq!(seqs(by(None, Some("BLOCKED"), None)), vec![4]);
        assert_eq!(seqs(by(None, Some("denied"), None)), vec![5]);
        assert_eq!(
            seqs(by(Some("orders-api"), Some("allowed"), None)),
            vec![1, 2, 3]
        );
        assert_eq!(seqs(by(None, None, Some("4d2"))), vec![1, 2, 3, 4]);
        assert_eq!(seqs(by(None, None, Some("7"))), vec![5]);

        let evs = r.query(&TailFilter::default(), 0, 100).unwrap();
        let lines: Vec<String> = evs.iter().map(format_text).collect();
        assert_eq!(
            lines[1],
            "2026-11-29T13:05:02.133Z #2 statement allowed session=00000000000004d2 \
             orders-api@orders-db stmt=1 class=read rule=rules[0] via=simple \
             statement=\"SELECT id, email FROM public.orders WHERE id = $1\""
        );
        assert_eq!(
            lines[2],
            "2026-11-29T13:05:02.133Z #3 result allowed session=00000000000004d2 \
             orders-api@orders-db stmt=1 class=read rows=2 masked=1 dur=1.234ms \
             tag=\"SELECT 2\""
        );
        let l = &lines[3];
        assert!(l.contains("#4 statement blocked"), "{l}");
        assert!(l.contains("rule=no-deletes"), "{l}");
        assert!(l.contains("statement=\"DELETE FROM public.orders\""), "{l}");
        assert!(
            l.ends_with("reason=\"statement blocked by rule no-deletes\" sqlstate=42501"),
            "{l}"
        );
        assert!(lines[4].contains("session=0000000000000007 billing@orders-db"));
        assert!(
            lines[4].ends_with("reason=\"no rule allows it\""),
            "{}",
            lines[4]
        );
        assert!(lines.iter().all(|l| !l.contains('\n')));
        assert_eq!(format_us(850), "850us");
        assert_eq!(format_us(2_500_000), "2.500s");
    }
}
