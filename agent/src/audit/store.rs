//! The SQLite audit store and its single writer.
//!
//! One dedicated OS thread owns the read-write connection (rusqlite is
//! blocking). Producers hand events over a bounded channel through
//! [`AuditHandle::record`]; the writer takes everything queued (up to
//! `batch_max`), assigns gap-free sequence numbers, encodes each event to
//! OCSF once, inserts the batch in ONE transaction (group commit) and only
//! then answers each producer. So a successful `record` means the event is
//! committed (durable with [`SyncMode::Full`]): audit before effect.
//!
//! If a commit fails, every event of that batch gets an error, their
//! sequence numbers are reused by the next batch (no gaps), the handle
//! reports unhealthy, and the writer carries on with the next batch.
//!
//! Schema (version [`SCHEMA_VERSION`]):
//! - `meta(key, value)`: `schema_version`, `chain_id` (hex of 16 random
//!   bytes, fixed when the store is created; the `metadata.uid` prefix);
//! - `events`: one row per event, `seq` gap-free from 1, a few indexed
//!   columns for the CLI, and `data` = the exact OCSF JSON bytes. Later
//!   schema versions add the hash chain and forwarder cursors beside these.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::event::ConnectionEvent;
use super::ocsf::{CLASS_UID_NETWORK_ACTIVITY, activity_str, encode_connection};

/// Version of the store layout written by this build.
pub const SCHEMA_VERSION: i64 = 1;
/// Capacity of the channel between producers and the writer.
pub const CHANNEL_CAPACITY: usize = 8192;
/// How long SQLite waits on a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_CHAIN_ID: &str = "chain_id";

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,  -- gap-free from 1, assigned by the single writer
    time_ms   INTEGER NOT NULL,     -- event time, ms since the Unix epoch
    class_uid INTEGER NOT NULL,     -- OCSF class of `data`
    activity  TEXT NOT NULL,
    decision  TEXT NOT NULL,
    account   TEXT,
    target    TEXT,
    session   TEXT NOT NULL,
    reason    TEXT,
    data      BLOB NOT NULL         -- exact OCSF JSON bytes, as hash-chained
);
CREATE INDEX events_time_ms ON events(time_ms);
CREATE INDEX events_account ON events(account, seq);
CREATE INDEX events_session ON events(session, seq);
CREATE INDEX events_decision ON events(decision, seq);
";

const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, time_ms, class_uid, activity, decision, account, target, session, reason, data) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// SQLite `synchronous` setting of the writer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync on every commit: a committed event survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of Warden, not of the host.
    Normal,
}

impl SyncMode {
    fn pragma_value(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

/// Counters of the writer, for `warden status` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Transactions that failed (their events were answered with errors).
    pub failed_commits: u64,
    /// Events committed.
    pub events: u64,
    /// Highest committed `seq` (0 when the store is empty).
    pub last_seq: u64,
}

struct Shared {
    healthy: AtomicBool,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    events: AtomicU64,
    last_seq: AtomicU64,
    chain_id: String,
}

enum Msg {
    Record {
        ev: Box<ConnectionEvent>,
        reply: oneshot::Sender<Result<u64, AuditError>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Runs SQL on the writer connection, in order with the records (tests
    /// use it to make the store fail, e.g. `PRAGMA query_only=ON`).
    #[cfg(test)]
    TestSql {
        sql: String,
        done: oneshot::Sender<()>,
    },
}

/// Producer side of the audit store. Cheap to clone; all clones feed the
/// same writer.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

/// The writer thread. [`WriterTask::join`] waits for it to finish, which
/// happens after [`AuditHandle::shutdown`] or once every handle is dropped.
pub struct WriterTask {
    thread: std::thread::JoinHandle<()>,
}

impl AuditHandle {
    /// Record `ev`; resolves with its `seq` once the transaction holding it
    /// has committed. An `Err` means the event is NOT in the store: the
    /// caller must not let the audited effect happen.
    ///
    /// Cancel safety: if this future is dropped after the event was queued,
    /// the event is still committed; only the answer is lost.
    pub async fn record(&self, ev: ConnectionEvent) -> Result<u64, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Record {
                ev: Box::new(ev),
                reply,
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// False after the last commit failed (or the writer stopped); true again
    /// after a successful commit.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    /// The store's chain id (`metadata.uid` prefix).
    #[allow(dead_code, reason = "for `warden status`; not wired yet")]
    pub fn chain_id(&self) -> &str {
        &self.shared.chain_id
    }

    /// Writer counters.
    #[allow(dead_code, reason = "for `warden status`; not wired yet")]
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.commits.load(Ordering::Acquire),
            failed_commits: self.shared.failed_commits.load(Ordering::Acquire),
            events: self.shared.events.load(Ordering::Acquire),
            last_seq: self.shared.last_seq.load(Ordering::Acquire),
        }
    }

    /// Stop the writer: everything queued before and during the shutdown is
    /// still committed and answered; later `record`s fail with
    /// [`AuditError::Closed`]. Resolves when the store is closed.
    pub async fn shutdown(self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { done }).await.is_ok() {
            // An Err only means the writer already stopped.
            let _ = finished.await;
        }
    }
}

impl WriterTask {
    /// Wait for the writer thread to end. Blocks: call it after
    /// [`AuditHandle::shutdown`] (or once all handles are dropped), from
    /// `spawn_blocking` inside async code.
    pub fn join(self) -> Result<(), AuditError> {
        self.thread.join().map_err(|_| AuditError::WriterPanicked)
    }
}

/// Open (creating if needed) the store at `path` and start its writer.
///
/// The parent directory is created with mode 0700 when missing, a new store
/// file with mode 0600. `batch_max` bounds the events per transaction
/// (at least 1); `host` goes into each event's `device.hostname`.
pub fn spawn_writer(
    path: &Path,
    sync: SyncMode,
    batch_max: usize,
    host: String,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    spawn_writer_inner(path, sync, batch_max, host, None)
}

/// `start_gate`: when set, the writer waits for it before taking its first
/// message (tests use it to queue a known set of events first).
fn spawn_writer_inner(
    path: &Path,
    sync: SyncMode,
    batch_max: usize,
    host: String,
    start_gate: Option<std::sync::mpsc::Receiver<()>>,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    let (conn, chain_id, last_seq) = open_store(path, sync)?;
    tracing::info!(
        audit.path = %path.display(),
        audit.chain_id = %chain_id,
        audit.last_seq = last_seq,
        audit.synchronous = sync.pragma_value(),
        "audit store open"
    );
    let shared = Arc::new(Shared {
        healthy: AtomicBool::new(true),
        commits: AtomicU64::new(0),
        failed_commits: AtomicU64::new(0),
        events: AtomicU64::new(0),
        last_seq: AtomicU64::new(last_seq),
        chain_id: chain_id.clone(),
    });
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let writer = Writer {
        conn: Some(conn),
        path: path.to_owned(),
        chain_id,
        host,
        next_seq: last_seq + 1,
        batch_max: batch_max.max(1),
        shared: Arc::clone(&shared),
    };
    let thread = std::thread::Builder::new()
        .name("warden-audit".into())
        .spawn(move || {
            if let Some(gate) = start_gate {
                // A dropped sender opens the gate as well.
                let _ = gate.recv();
            }
            writer.run(rx);
        })
        .map_err(|source| AuditError::Io {
            op: "spawn writer thread for",
            path: path.to_owned(),
            source,
        })?;
    Ok((AuditHandle { tx, shared }, WriterTask { thread }))
}

/// Create the directory and file with tight modes, open the connection,
/// apply pragmas and the schema. Returns the connection, the chain id and
/// the highest stored `seq`.
fn open_store(path: &Path, sync: SyncMode) -> Result<(Connection, String, u64), AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AuditError::Io {
                op: "create directory",
                path: dir.to_owned(),
                source,
            })?;
    }
    // Create the file ourselves so it never exists with a looser mode;
    // SQLite gives the -wal and -shm files the database file's mode.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditError::Io {
            op: "open",
            path: path.to_owned(),
            source,
        })?;
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            audit.path = %path.display(),
            audit.mode = format_args!("{:o}", meta.permissions().mode() & 0o7777),
            "audit store is accessible to group/others"
        );
    }
    drop(file);

    let open_err = |op: &'static str| {
        move |source| AuditError::Open {
            path: path.to_owned(),
            op,
            source,
        }
    };
    let mut conn = Connection::open(path).map_err(open_err("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(open_err("set busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_err("set journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::Schema {
            path: path.to_owned(),
            detail: format!("cannot enable WAL (journal_mode stays {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", sync.pragma_value())
        .map_err(open_err("set synchronous"))?;

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err("begin schema transaction"))?;
    let has_meta: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |row| row.get(0),
        )
        .map_err(open_err("read schema"))?;
    if has_meta {
        let version = read_schema_version(&tx).map_err(open_err("read schema_version"))?;
        check_schema_version(path, version)?;
    } else {
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .map_err(open_err("read schema"))?;
        if tables != 0 {
            return Err(AuditError::Schema {
                path: path.to_owned(),
                detail: "not a Warden audit store (has tables but no meta)".into(),
            });
        }
        let chain_id = hex::encode(rand::random::<[u8; 16]>());
        tx.execute_batch(SCHEMA_V1)
            .map_err(open_err("create schema"))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2), (?3, ?4)",
            params![
                META_SCHEMA_VERSION,
                SCHEMA_VERSION.to_string(),
                META_CHAIN_ID,
                chain_id
            ],
        )
        .map_err(open_err("write meta"))?;
    }
    let chain_id = read_chain_id(&tx).map_err(open_err("read chain_id"))?;
    let Some(chain_id) = chain_id else {
        return Err(AuditError::Schema {
            path: path.to_owned(),
            detail: "meta has no chain_id".into(),
        });
    };
    let last_seq = max_seq(&tx).map_err(open_err("read last seq"))?;
    tx.commit().map_err(open_err("commit schema"))?;
    Ok((conn, chain_id, last_seq))
}

pub(crate) fn read_schema_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [META_SCHEMA_VERSION],
            |row| row.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

pub(crate) fn check_schema_version(path: &Path, version: Option<i64>) -> Result<(), AuditError> {
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(v) => Err(AuditError::Schema {
            path: path.to_owned(),
            detail: format!(
                "schema version {v} is not supported by this Warden (supports {SCHEMA_VERSION})"
            ),
        }),
        None => Err(AuditError::Schema {
            path: path.to_owned(),
            detail: "meta has no valid schema_version".into(),
        }),
    }
}

pub(crate) fn read_chain_id(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        [META_CHAIN_ID],
        |row| row.get(0),
    )
    .optional()
}

pub(crate) fn max_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
        row.get(0)
    })
}

struct Pending {
    ev: Box<ConnectionEvent>,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

struct Writer {
    /// `None` only after [`Writer::close`].
    conn: Option<Connection>,
    path: PathBuf,
    chain_id: String,
    host: String,
    /// Seq of the next event to commit; advances only on commit.
    next_seq: u64,
    batch_max: usize,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut msgs = Vec::with_capacity(self.batch_max);
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut shutdown_acks = Vec::new();
        // Blocks for the first message, then takes what is queued, up to
        // batch_max. Returns 0 once the channel is closed and drained.
        while rx.blocking_recv_many(&mut msgs, self.batch_max) > 0 {
            for msg in msgs.drain(..) {
                match msg {
                    Msg::Record { ev, reply } => batch.push(Pending { ev, reply }),
                    Msg::Shutdown { done } => {
                        // Stop accepting; what is already queued is drained.
                        rx.close();
                        shutdown_acks.push(done);
                    }
                    #[cfg(test)]
                    Msg::TestSql { sql, done } => {
                        self.commit(&mut batch);
                        if let Some(conn) = &self.conn
                            && let Err(e) = conn.execute_batch(&sql)
                        {
                            tracing::warn!(audit.error = %e, "test sql failed");
                        }
                        let _ = done.send(());
                    }
                }
            }
            self.commit(&mut batch);
        }
        self.close();
        for done in shutdown_acks {
            let _ = done.send(());
        }
    }

    fn close(&mut self) {
        self.shared.healthy.store(false, Ordering::Release);
        if let Some(conn) = self.conn.take() {
            if let Err((_, e)) = conn.close() {
                tracing::warn!(
                    audit.path = %self.path.display(),
                    audit.error = %e,
                    "closing audit store failed"
                );
            } else {
                tracing::info!(audit.path = %self.path.display(), "audit store closed");
            }
        }
    }

    /// Commit `batch` in one transaction and answer every sender.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        match self.write_batch(batch) {
            Ok(outcomes) => {
                let committed = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
                self.shared.commits.fetch_add(1, Ordering::AcqRel);
                self.shared.events.fetch_add(committed, Ordering::AcqRel);
                self.shared
                    .last_seq
                    .store(self.next_seq - 1, Ordering::Release);
                if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        audit.path = %self.path.display(),
                        "audit store writable again"
                    );
                }
                tracing::trace!(
                    audit.batch_size = n,
                    audit.last_seq = self.next_seq - 1,
                    "audit batch committed"
                );
                for (p, outcome) in batch.drain(..).zip(outcomes) {
                    // The producer may have gone away; the event is stored.
                    let _ = p.reply.send(outcome);
                }
            }
            Err((op, e)) => {
                self.shared.failed_commits.fetch_add(1, Ordering::AcqRel);
                if self.shared.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(
                        audit.path = %self.path.display(),
                        audit.op = op,
                        audit.batch_size = n,
                        audit.error = %e,
                        "audit commit failed; events of this batch are refused"
                    );
                } else {
                    tracing::debug!(
                        audit.op = op,
                        audit.batch_size = n,
                        audit.error = %e,
                        "audit commit failed again"
                    );
                }
                let source = Arc::new(e);
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(AuditError::Write {
                        op,
                        source: Arc::clone(&source),
                    }));
                }
                self.recover();
            }
        }
    }

    /// Insert the batch in one transaction. Per-event outcomes: `Ok(seq)`,
    /// or an encoding error for that event alone. A database error fails
    /// the whole batch (and consumes no seq).
    #[allow(clippy::type_complexity)]
    fn write_batch(
        &mut self,
        batch: &[Pending],
    ) -> Result<Vec<Result<u64, AuditError>>, (&'static str, rusqlite::Error)> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(("write", rusqlite::Error::InvalidQuery));
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| ("begin", e))?;
        let mut seq = self.next_seq;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut insert = tx
                .prepare_cached(INSERT_EVENT)
                .map_err(|e| ("prepare", e))?;
            for p in batch {
                let ev = &p.ev;
                let data = match encode_connection(ev, seq, &self.chain_id, &self.host) {
                    Ok(data) => data,
                    Err(e) => {
                        outcomes.push(Err(e));
                        continue;
                    }
                };
                insert
                    .execute(params![
                        seq,
                        ev.time_ms,
                        CLASS_UID_NETWORK_ACTIVITY,
                        activity_str(ev.activity),
                        ev.decision.as_str(),
                        ev.account,
                        ev.target,
                        ev.session.to_string(),
                        ev.reason,
                        data,
                    ])
                    .map_err(|e| ("insert", e))?;
                outcomes.push(Ok(seq));
                seq += 1;
            }
        }
        tx.commit().map_err(|e| ("commit", e))?;
        self.next_seq = seq;
        Ok(outcomes)
    }

    /// After a failed batch: make sure no transaction is left open and
    /// re-read the last seq (another process may have written).
    fn recover(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::debug!(audit.error = %e, "audit rollback failed");
        }
        match max_seq(conn) {
            Ok(last) => self.next_seq = last + 1,
            Err(e) => tracing::debug!(audit.error = %e, "cannot re-read audit last seq"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ConnActivity, Decision, SessionId};
    use crate::audit::ocsf::{decode_connection, tests::sample};

    fn ev(i: u64) -> ConnectionEvent {
        let mut e = sample(ConnActivity::Open, Decision::Allowed);
        e.session = SessionId(i);
        e.time_ms += i as i64;
        e.account = Some(format!("acct-{}", i % 3));
        e
    }

    async fn test_sql(h: &AuditHandle, sql: &str) {
        let (done, rx) = oneshot::channel();
        h.tx.send(Msg::TestSql {
            sql: sql.into(),
            done,
        })
        .await
        .unwrap();
        rx.await.unwrap();
    }

    fn rows(path: &Path) -> Vec<(u64, String, Vec<u8>)> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare("SELECT seq, session, data FROM events ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_get_gap_free_seqs_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.db");
        let (h, task) = spawn_writer(&path, SyncMode::Normal, 64, "host1".into()).unwrap();
        let mut tasks = Vec::new();
        for t in 0..50u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..20u64 {
                    let e = ev(t * 1000 + i);
                    let seq = h.record(e.clone()).await.unwrap();
                    out.push((seq, e));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let mut seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        assert!(h.is_healthy());
        let stats = h.stats();
        assert_eq!(stats.events, 1000);
        assert_eq!(stats.last_seq, 1000);
        let chain_id = h.chain_id().to_owned();
        assert_eq!(chain_id.len(), 32);
        h.shutdown().await;
        task.join().unwrap();

        let stored = rows(&path);
        assert_eq!(stored.len(), 1000);
        let by_seq: std::collections::HashMap<u64, ConnectionEvent> = all.into_iter().collect();
        for (seq, session, data) in stored {
            let d = decode_connection(&data).unwrap();
            assert_eq!(d.seq, seq);
            assert_eq!(d.uid, format!("{chain_id}:{seq}"));
            assert_eq!(d.host.as_deref(), Some("host1"));
            assert_eq!(&d.event, &by_seq[&seq]);
            assert_eq!(session, d.event.session.to_string());
        }

        // File modes, WAL, and seq continues after reopen.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let (h, task) = spawn_writer(&path, SyncMode::Full, 64, String::new()).unwrap();
        assert_eq!(h.chain_id(), chain_id);
        assert_eq!(h.record(ev(1)).await.unwrap(), 1001);
        let c = Connection::open(&path).unwrap();
        let jm: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "wal");
        drop(c);
        h.shutdown().await;
        task.join().unwrap();
    }

    #[tokio::test]
    async fn queued_events_are_committed_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (gate_tx, gate) = std::sync::mpsc::channel();
        let (h, task) =
            spawn_writer_inner(&path, SyncMode::Full, 10, String::new(), Some(gate)).unwrap();
        // Queue 25 events while the writer is held at its start gate.
        let mut pending = Vec::new();
        for i in 0..25 {
            let h = h.clone();
            pending.push(tokio::spawn(async move { h.record(ev(i)).await }));
        }
        while h.tx.max_capacity() - h.tx.capacity() < 25 {
            tokio::task::yield_now().await;
        }
        assert_eq!(h.stats().commits, 0);
        gate_tx.send(()).unwrap();
        let mut seqs = Vec::new();
        for p in pending {
            seqs.push(p.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
        // batch_max = 10: 10 + 10 + 5.
        let stats = h.stats();
        assert_eq!(stats.commits, 3, "{stats:?}");
        assert_eq!(stats.events, 25);
        h.shutdown().await;
        task.join().unwrap();
    }

    #[tokio::test]
    async fn failing_store_returns_errors_and_recovers_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn_writer(&path, SyncMode::Full, 16, String::new()).unwrap();
        assert_eq!(h.record(ev(1)).await.unwrap(), 1);
        assert!(h.is_healthy());

        // Writes are rejected by SQLite from now on.
        test_sql(&h, "PRAGMA query_only = ON").await;
        for i in 0..100 {
            let err = h.record(ev(i)).await.unwrap_err();
            assert!(matches!(err, AuditError::Write { .. }), "{err}");
        }
        assert!(!h.is_healthy());
        assert!(h.stats().failed_commits >= 1);

        // Disk-full style failure: no page may be added.
        test_sql(&h, "PRAGMA query_only = OFF").await;
        let c = Connection::open(&path).unwrap();
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        drop(c);
        test_sql(&h, &format!("PRAGMA max_page_count = {pages}")).await;
        let mut big = ev(2);
        big.detail = Some("x".repeat(64 * 1024));
        let err = h.record(big).await.unwrap_err();
        assert!(matches!(err, AuditError::Write { .. }), "{err}");
        assert!(!h.is_healthy());

        test_sql(&h, "PRAGMA max_page_count = 4294967294").await;
        assert_eq!(h.record(ev(3)).await.unwrap(), 2, "no gap after failures");
        assert!(h.is_healthy());
        h.shutdown().await;
        task.join().unwrap();
        assert_eq!(rows(&path).len(), 2);
    }

    #[tokio::test]
    async fn unusable_paths_fail_at_open() {
        let dir = tempfile::tempdir().unwrap();
        // The path is a directory.
        let err = spawn_writer(dir.path(), SyncMode::Full, 16, String::new())
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        // A file that is not a SQLite database.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'z'; 8192]).unwrap();
        let err = spawn_writer(&junk, SyncMode::Full, 16, String::new())
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::Open { .. }), "{err}");
        // A SQLite database that is not ours.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = spawn_writer(&other, SyncMode::Full, 16, String::new())
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::Schema { .. }), "{err}");
    }

    #[tokio::test]
    async fn shutdown_drains_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (gate_tx, gate) = std::sync::mpsc::channel();
        let (h, task) =
            spawn_writer_inner(&path, SyncMode::Full, 4, String::new(), Some(gate)).unwrap();
        let mut pending = Vec::new();
        for i in 0..10 {
            let h = h.clone();
            pending.push(tokio::spawn(async move { h.record(ev(i)).await }));
        }
        while h.tx.max_capacity() - h.tx.capacity() < 10 {
            tokio::task::yield_now().await;
        }
        let h2 = h.clone();
        let stopping = tokio::spawn(h.shutdown());
        while h2.tx.max_capacity() - h2.tx.capacity() < 11 {
            tokio::task::yield_now().await;
        }
        gate_tx.send(()).unwrap();
        stopping.await.unwrap();
        for p in pending {
            p.await.unwrap().unwrap();
        }
        assert!(matches!(h2.record(ev(99)).await, Err(AuditError::Closed)));
        assert!(!h2.is_healthy());
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows(&path).len(), 10);
    }

    #[tokio::test]
    async fn dropping_all_handles_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (h, task) =
            spawn_writer(&dir.path().join("a.db"), SyncMode::Full, 4, String::new()).unwrap();
        h.record(ev(1)).await.unwrap();
        drop(h);
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
    }
}
