//! The queries of `warden audit tail` (see `audit::reader`): which events
//! to show ([`TailFilter`], turned into SQL here), the rows as shown
//! ([`StoredEvent`]), and where a tail of the last N events starts.

#[allow(clippy::wildcard_imports)]
use super::*;
use rusqlite::ToSql;

/// Which events to show; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailFilter {
    pub account: Option<String>,
    /// `allowed` or `refused` for connections; `allowed`, `blocked`,
    /// `denied`, `approval_required` or `rejected` for statements
    /// (case-insensitive).
    pub decision: Option<String>,
    /// Session id as printed (16 hex digits); shorter hex is accepted too.
    pub session: Option<String>,
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
}

/// One stored row: the indexed columns plus the exact OCSF bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub time_ms: i64,
    /// OCSF class of `data` (4001 for connection events).
    pub class_uid: u32,
    pub activity: String,
    pub decision: String,
    pub account: Option<String>,
    pub target: Option<String>,
    pub session: String,
    pub reason: Option<String>,
    /// The event's OCSF JSON: the exact stored bytes, or the rendering of
    /// a compact statement record (see [`crate::audit::record`]).
    pub data: Vec<u8>,
}

const SELECT_EVENTS: &str = "SELECT seq, time_ms, class_uid, activity, decision, account, \
    target, session, reason, data FROM events";

/// Whether the database has Warden's `meta` table.
pub(crate) fn has_meta_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )
}

/// Up to `limit` events matching `filter` with `seq > after_seq`, in `seq`
/// order; compact records rendered as OCSF with `chain_id`.
pub(crate) fn tail_events(
    conn: &Connection,
    filter: &TailFilter,
    after_seq: u64,
    limit: usize,
    chain_id: &str,
) -> Result<Vec<StoredEvent>, AuditError> {
    let (where_sql, mut args) = filter_sql(filter);
    let sql = format!("{SELECT_EVENTS} WHERE seq > ? {where_sql} ORDER BY seq LIMIT ?");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    args.insert(0, Box::new(after_seq));
    args.push(Box::new(limit));
    let query_err = |source| AuditError::Query {
        op: "select events",
        source,
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(query_err)?;
    let params: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let rows = stmt
        .query_map(params.as_slice(), |row| {
            let seq = row.get(0)?;
            let data: Vec<u8> = row.get(9)?;
            let data = if crate::audit::record::is_record(&data) {
                crate::audit::record::render_lossy(&data, seq, chain_id).into_owned()
            } else {
                data
            };
            Ok(StoredEvent {
                seq,
                time_ms: row.get(1)?,
                class_uid: row.get(2)?,
                activity: row.get(3)?,
                decision: row.get(4)?,
                account: row.get(5)?,
                target: row.get(6)?,
                session: row.get(7)?,
                reason: row.get(8)?,
                data,
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query_err)
}

/// The `after_seq` from which the last `last_n` (> 0) events matching
/// `filter` follow (0 when there are fewer).
pub(crate) fn tail_start_seq(
    conn: &Connection,
    filter: &TailFilter,
    last_n: usize,
) -> Result<u64, AuditError> {
    let (where_sql, mut args) = filter_sql(filter);
    let sql = format!(
        "SELECT seq FROM events WHERE 1 = 1 {where_sql} ORDER BY seq DESC LIMIT 1 OFFSET ?"
    );
    let offset = i64::try_from(last_n - 1).unwrap_or(i64::MAX);
    args.push(Box::new(offset));
    let query_err = |source| AuditError::Query {
        op: "find tail start",
        source,
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(query_err)?;
    let params: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut rows = stmt.query(params.as_slice()).map_err(query_err)?;
    match rows.next().map_err(query_err)? {
        Some(row) => {
            let seq: u64 = row.get(0).map_err(query_err)?;
            Ok(seq.saturating_sub(1))
        }
        // Fewer than last_n matches: show them all.
        None => Ok(0),
    }
}

/// `AND ...` clauses and their parameters for `filter`.
fn filter_sql(filter: &TailFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let mut sql = String::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(account) = &filter.account {
        sql.push_str(" AND account = ?");
        args.push(Box::new(account.clone()));
    }
    if let Some(decision) = &filter.decision {
        let decision = decision.to_ascii_lowercase();
        // The decision index holds only decisions other than `allowed`;
        // saying so lets SQLite use it.
        if decision != "allowed" {
            sql.push_str(" AND decision <> 'allowed'");
        }
        sql.push_str(" AND decision = ?");
        args.push(Box::new(decision));
    }
    if let Some(session) = &filter.session {
        sql.push_str(" AND session = ?");
        args.push(Box::new(normalize_session(session)));
    }
    if let Some(since) = filter.since_ms {
        sql.push_str(" AND time_ms >= ?");
        args.push(Box::new(since));
    }
    (sql, args)
}

/// Accept `4d2`, `0x4d2` or `00000000000004d2` for the stored form.
fn normalize_session(s: &str) -> String {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    match u64::from_str_radix(t, 16) {
        Ok(v) if t.len() <= 16 => format!("{v:016x}"),
        _ => s.to_owned(),
    }
}
