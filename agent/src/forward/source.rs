//! The forwarders' side of the audit store: events read in seq order over a
//! read-only connection, and each output's cursor in `forward_cursors`.
//!
//! Reading never blocks the writer: the connection is opened read-only
//! (through [`AuditReader`], which checks the schema), the store is in WAL
//! mode, and every read is its own short transaction.
//!
//! Cursors are written by the forwarder itself, on a second connection, in
//! one short autocommit `UPSERT` per acknowledged batch, rather than through
//! the audit writer's channel: the writer's queue carries evidence and
//! answers producers that hold client connections, so a cursor update must
//! not queue behind (or in front of) them, and the writer need not know
//! about forwarders. SQLite serialises the two writers; both connections
//! wait on the lock (`busy_timeout` 5 s), and a cursor update holds it for
//! one row. A lost cursor update (crash, power loss: this connection uses
//! `synchronous = NORMAL`) only means the batch is sent again, which
//! at-least-once allows. Retention reads the cursors inside its own
//! transaction, so it never prunes past what every output acknowledged.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::ForwardError;
use crate::audit::DurableSeq;
use crate::audit::reader::AuditReader;
use crate::audit::store::{self, BUSY_TIMEOUT};

/// One stored event, as an output needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub seq: u64,
    pub time_ms: i64,
    /// The store's decision column (`allowed`, `refused`, `n/a`, ...).
    pub decision: String,
    /// The exact OCSF JSON bytes.
    pub data: Vec<u8>,
}

/// Read-only access to the events, in seq order.
pub struct EventSource {
    reader: AuditReader,
    chain_id: String,
    /// Read no event past this (`None`: up to the last committed one).
    horizon: Option<DurableSeq>,
}

impl EventSource {
    /// Open the store at `path` read-only.
    pub fn open(path: &Path) -> Result<Self, ForwardError> {
        let reader = AuditReader::open(path).map_err(|source| ForwardError::Store {
            op: "open the audit store read-only",
            source: Box::new(source),
        })?;
        let chain_id = reader.chain_id().map_err(|source| ForwardError::Store {
            op: "read the chain id",
            source: Box::new(source),
        })?;
        Ok(Self {
            reader,
            chain_id,
            horizon: None,
        })
    }

    /// Read only events at or below `durable`: an event is sent off the
    /// host only once it is on this host's disk, so a power cut can never
    /// make the store reuse the seq of an event a collector already has.
    pub fn bounded(mut self, durable: Option<DurableSeq>) -> Self {
        self.horizon = durable;
        self
    }

    /// The store's chain id (`metadata.uid` prefix).
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Events with `seq > after`, in order: at most `max_events`, and no
    /// more than `max_bytes` of event data (the first event is always
    /// returned, however large). Rows are read one by one, so a large
    /// backlog never costs more memory than this batch.
    pub fn read(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRow>, ForwardError> {
        Ok(self.read_bounded(after, max_events, max_bytes)?.0)
    }

    /// [`read`](Self::read), and whether it stopped at the byte bound (a
    /// next event exists that did not fit, or the bound was reached).
    pub fn read_bounded(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<(Vec<StoredRow>, bool), ForwardError> {
        let q = |source| ForwardError::Read { source };
        let limit = i64::try_from(max_events).unwrap_or(i64::MAX);
        let through = self
            .horizon
            .as_ref()
            .map_or(i64::MAX, |d| i64::try_from(d.get()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut full = false;
        store::events_after(self.reader.conn(), after, limit, through, |row| {
            let seq = row.seq()?;
            let data = row.data()?;
            // Forwarders ship OCSF (or ECS/CEF made from it): a compact
            // statement record is rendered here.
            let data = if crate::audit::record::is_record(&data) {
                crate::audit::record::render_lossy(&data, seq, &self.chain_id).into_owned()
            } else {
                data
            };
            if !out.is_empty() && bytes + data.len() > max_bytes {
                full = true;
                return Ok(false);
            }
            bytes += data.len();
            out.push(StoredRow {
                seq,
                time_ms: row.time_ms()?,
                decision: row.decision()?,
                data,
            });
            if bytes >= max_bytes {
                full = true;
                return Ok(false);
            }
            Ok(true)
        })
        .map_err(q)?;
        Ok((out, full))
    }

    /// Names of every output with a cursor in the store.
    pub fn cursor_names(&self) -> Result<Vec<String>, ForwardError> {
        store::cursor_names(self.reader.conn()).map_err(|source| ForwardError::Read { source })
    }

    /// Highest stored seq (0 when empty).
    pub fn head(&self) -> Result<u64, ForwardError> {
        self.reader
            .last_seq()
            .map_err(|source| ForwardError::Store {
                op: "read the last seq",
                source: Box::new(source),
            })
    }
}

/// One output's cursor: every event with `seq <= acked` was acknowledged.
pub struct Cursor {
    conn: Connection,
    name: String,
    path: PathBuf,
}

impl Cursor {
    /// Open a read-write connection to the store at `path` and make sure
    /// the output `name` has a cursor row (a new output starts with no
    /// acknowledged seq, which holds every event back from retention).
    pub fn open(path: &Path, name: &str) -> Result<Self, ForwardError> {
        let open_err = |op: &'static str| {
            move |source| ForwardError::Cursor {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("set busy_timeout"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err("set synchronous"))?;
        store::cursor_create(&conn, name, now_ms()).map_err(open_err("create the cursor"))?;
        Ok(Self {
            conn,
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The acknowledged seq (0: nothing yet).
    pub fn load(&self) -> Result<u64, ForwardError> {
        let v = store::cursor_acked(&self.conn, &self.name)
            .map_err(|source| self.err("read", source))?;
        Ok(v.flatten().and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// Record that every event up to `seq` was acknowledged. Never moves
    /// the cursor back.
    pub fn advance(&self, seq: u64) -> Result<(), ForwardError> {
        store::cursor_advance(&self.conn, &self.name, seq, now_ms())
            .map_err(|source| self.err("advance", source))?;
        Ok(())
    }

    fn err(&self, op: &'static str, source: rusqlite::Error) -> ForwardError {
        ForwardError::Cursor {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testutil;

    #[tokio::test]
    async fn reads_in_order_within_bounds_and_cursors_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, w) = crate::audit::spawn_writer(&path, testutil::opts(0)).unwrap();
        for i in 0..10 {
            h.record(testutil::ev(i + 1)).await.unwrap();
        }
        let src = EventSource::open(&path).unwrap();
        assert_eq!(src.head().unwrap(), 10);
        let all = src.read(0, 100, usize::MAX).unwrap();
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(src.read(4, 3, usize::MAX).unwrap()[0].seq, 5);
        assert_eq!(src.read(4, 3, usize::MAX).unwrap().len(), 3);
        // The byte bound stops the batch; one event always comes.
        let one = all[0].data.len();
        assert_eq!(src.read(0, 100, one + 1).unwrap().len(), 1);
        assert_eq!(src.read(0, 100, 1).unwrap().len(), 1);
        assert_eq!(src.read(0, 100, 2 * one + 10).unwrap().len(), 2);
        assert!(src.read(10, 100, usize::MAX).unwrap().is_empty());

        let c = Cursor::open(&path, "siem").unwrap();
        assert_eq!(c.load().unwrap(), 0);
        c.advance(7).unwrap();
        c.advance(3).unwrap();
        assert_eq!(c.load().unwrap(), 7);
        drop(c);
        // A new output's row holds everything back; the existing one stays.
        let again = Cursor::open(&path, "siem").unwrap();
        assert_eq!(again.load().unwrap(), 7);
        let other = Cursor::open(&path, "archive").unwrap();
        assert_eq!(other.load().unwrap(), 0);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            crate::audit::store::acked_through(&conn).unwrap(),
            Some(0),
            "a fresh output holds retention back"
        );
        h.shutdown().await;
        tokio::task::spawn_blocking(move || w.join())
            .await
            .unwrap()
            .unwrap();
    }
}
