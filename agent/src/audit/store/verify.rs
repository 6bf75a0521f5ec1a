//! The verifier's reads (see `audit::verify`): every value as stored,
//! damage included (a tampered value is reported, never a failed read):
//! the events' span, the `checkpoints` rows, the full event walk and the
//! rows after a broken link.

#[allow(clippy::wildcard_imports)]
use super::*;
use rusqlite::Row;
use rusqlite::types::ValueRef;

/// The number of events and their first and last seq (0 when empty).
pub(crate) fn event_span(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(
        "SELECT count(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// Every event in seq order, for the verifier's walk; the columns are, in
/// order: seq, time_ms, class_uid, activity, decision, account, target,
/// session, reason, data, hash (read them with [`int_at`], [`bytes_at`] or
/// `get_ref`).
pub(crate) fn event_walk(conn: &Connection) -> rusqlite::Result<rusqlite::Statement<'_>> {
    conn.prepare(
        "SELECT seq, time_ms, class_uid, activity, decision, account, target, \
         session, reason, data, hash FROM events ORDER BY seq",
    )
}

/// A `checkpoints` row as stored (leniently read: tampering must be
/// reported, not fail the query).
pub(crate) struct CheckpointRow {
    pub(crate) id: i64,
    pub(crate) size: Option<i64>,
    pub(crate) head_hash: Vec<u8>,
    pub(crate) time_ms: Option<i64>,
    pub(crate) prev_hash: Vec<u8>,
    pub(crate) key_id: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

/// Bytes of a TEXT or BLOB value; empty for anything else.
pub(crate) fn bytes_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
        _ => Vec::new(),
    })
}

pub(crate) fn int_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    })
}

pub(crate) fn checkpoint_rows(conn: &Connection) -> rusqlite::Result<Vec<CheckpointRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, size, head_hash, time_ms, prev_hash, key_id, body, signature \
         FROM checkpoints ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CheckpointRow {
            id: r.get(0)?,
            size: int_at(r, 1)?,
            head_hash: bytes_at(r, 2)?,
            time_ms: int_at(r, 3)?,
            prev_hash: bytes_at(r, 4)?,
            key_id: bytes_at(r, 5)?,
            body: bytes_at(r, 6)?,
            signature: bytes_at(r, 7)?,
        })
    })?;
    rows.collect()
}

/// At most `limit` rows after `seq`, in order (the verifier classifies a
/// broken link with them).
pub(crate) fn chain_window(
    conn: &Connection,
    limit: usize,
    seq: u64,
) -> rusqlite::Result<Vec<Raw>> {
    let mut stmt =
        conn.prepare("SELECT seq, data, hash FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = stmt.query_map(rusqlite::params![seq, limit], |r| {
        Ok(Raw {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            data: bytes_at(r, 1)?,
            hash: bytes_at(r, 2)?,
        })
    })?;
    rows.collect()
}

/// The parts of a row the chain covers.
pub(crate) struct Raw {
    pub(crate) seq: u64,
    pub(crate) data: Vec<u8>,
    pub(crate) hash: Vec<u8>,
}
