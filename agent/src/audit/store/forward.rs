//! The forwarders' SQL: events read in seq order for shipping, and each
//! output's cursor in `forward_cursors` (written by the forwarder on its
//! own connection, read by retention; see `forward::source`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// One row of `events` as a forwarder reads it; each column is read when
/// asked for.
pub(crate) struct ForwardRow<'a>(&'a rusqlite::Row<'a>);

impl ForwardRow<'_> {
    pub(crate) fn seq(&self) -> rusqlite::Result<u64> {
        self.0.get(0)
    }

    pub(crate) fn time_ms(&self) -> rusqlite::Result<i64> {
        self.0.get(1)
    }

    /// The store's decision column.
    pub(crate) fn decision(&self) -> rusqlite::Result<String> {
        self.0.get(2)
    }

    /// The stored bytes (OCSF JSON or a compact record).
    pub(crate) fn data(&self) -> rusqlite::Result<Vec<u8>> {
        self.0.get(3)
    }
}

/// Events with `after < seq <= through`, in seq order, at most `limit`:
/// `each` is called for every row until it returns `false`.
pub(crate) fn events_after(
    conn: &Connection,
    after: u64,
    limit: i64,
    through: i64,
    mut each: impl FnMut(&ForwardRow<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, time_ms, decision, data FROM events WHERE seq > ?1 \
         AND seq <= ?3 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, limit, through])?;
    while let Some(row) = rows.next()? {
        if !each(&ForwardRow(row))? {
            break;
        }
    }
    Ok(())
}

/// Names of every output with a cursor in the store.
pub(crate) fn cursor_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM forward_cursors ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

/// Make sure the output `name` has a cursor row (a new output starts with
/// no acknowledged seq).
pub(crate) fn cursor_create(conn: &Connection, name: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO forward_cursors (name, acked_seq, updated_ms) \
         VALUES (?1, NULL, ?2)",
        params![name, now_ms],
    )?;
    Ok(())
}

/// The cursor of `name`: `None` without a row, `Some(None)` when nothing
/// was acknowledged yet.
pub(crate) fn cursor_acked(conn: &Connection, name: &str) -> rusqlite::Result<Option<Option<i64>>> {
    conn.query_row(
        "SELECT acked_seq FROM forward_cursors WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}

/// Record that `name` acknowledged every event up to `seq`; never moves
/// the cursor back.
pub(crate) fn cursor_advance(
    conn: &Connection,
    name: &str,
    seq: u64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO forward_cursors (name, acked_seq, updated_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name) DO UPDATE SET \
         acked_seq = max(COALESCE(acked_seq, 0), excluded.acked_seq), \
         updated_ms = excluded.updated_ms",
        params![name, seq, now_ms],
    )?;
    Ok(())
}
