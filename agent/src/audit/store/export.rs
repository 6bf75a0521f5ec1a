//! The exporter's reads (see `audit::export`): the seq range of a time
//! range, the hash an exported range continues from, the range's events
//! in order and the checkpoint events after it. Each runs inside the
//! caller's read snapshot.

#[allow(clippy::wildcard_imports)]
use super::*;

fn q(op: &'static str) -> impl Fn(rusqlite::Error) -> AuditError {
    move |source| AuditError::Query { op, source }
}

/// First and last seq of the events with `from_ms <= time_ms < to_ms`.
pub(crate) fn seq_range_in_time(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Option<u64>, Option<u64>), AuditError> {
    conn.query_row(
        "SELECT MIN(seq), MAX(seq) FROM events WHERE time_ms >= ?1 AND time_ms < ?2",
        [from_ms, to_ms],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .map_err(q("find range"))
}

/// The chain hash of event `seq`, or, when it was pruned, the head hash a
/// kept checkpoint of that size signed.
pub(crate) fn hash_through(conn: &Connection, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT hash FROM events WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()
        .map_err(q("read previous hash"))?;
    match stored {
        Some(h) => Ok(Some(h)),
        // Pruned: the kept checkpoint of that seq signed its hash.
        None => conn
            .query_row(
                "SELECT head_hash FROM checkpoints WHERE size = ?1 LIMIT 1",
                [seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("read previous hash")),
    }
}

/// Every stored event with `first <= seq <= last`, in seq order, handed to
/// `each` with its stored bytes.
pub(crate) fn each_event_in(
    conn: &Connection,
    first: u64,
    last: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, data FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq")
        .map_err(q("select range"))?;
    let mut rows = stmt.query([first, last]).map_err(q("select range"))?;
    while let Some(row) = rows.next().map_err(q("select range"))? {
        let seq: u64 = row.get(0).map_err(q("select range"))?;
        let data = row
            .get_ref(1)
            .and_then(|v| Ok(v.as_bytes()?))
            .map_err(q("select range"))?;
        each(seq, data)?;
    }
    Ok(())
}

/// The stored bytes of every checkpoint event after `last`, in seq order.
pub(crate) fn each_checkpoint_event_after(
    conn: &Connection,
    last: u64,
    mut each: impl FnMut(&[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut stmt = conn
        .prepare(
            "SELECT e.data FROM checkpoints c JOIN events e ON e.seq = c.size + 1 \
             WHERE e.seq > ?1 ORDER BY e.seq",
        )
        .map_err(q("select later checkpoints"))?;
    let mut rows = stmt.query([last]).map_err(q("select later checkpoints"))?;
    while let Some(row) = rows.next().map_err(q("select later checkpoints"))? {
        let data = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_bytes()?))
            .map_err(q("select later checkpoints"))?;
        each(data)?;
    }
    Ok(())
}
