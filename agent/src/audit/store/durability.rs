//! Durability: [`SyncMode`], the WAL syncer thread that fsyncs the WAL
//! and answers producers after their commit is on stable storage
//! (pipelined group commit), the background WAL checkpointer, and the
//! writer's WAL upkeep.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Event bytes committed between two requests to the WAL checkpointer
/// (the WAL then holds about twice that: whole pages, index pages). Small
/// enough that the WAL file is soon reused from its start instead of
/// growing, which makes each commit's fsync cheaper.
pub(super) const WAL_CHECKPOINT_BYTES: usize = 2 << 20;
/// The WAL checkpointer also runs this long after its last run.
pub(super) const WAL_CHECKPOINT_PERIOD: Duration = Duration::from_secs(5);
/// Durability of the records, named by what each promises
/// (`[audit] synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `strict` (formerly `full`): a record is on stable storage (its WAL
    /// commit fsynced) before [`AuditHandle::record`] answers, so before
    /// the audited effect: survives power loss.
    #[default]
    Full,
    /// `pipelined`: a read statement's request record
    /// ([`AuditHandle::record`] of class `read`) is answered once
    /// it is committed to the WAL (it survives a crash of Warden), so the
    /// statement goes to the database while the fsync runs; its answer is
    /// released to the client only after the fsync
    /// ([`AuditHandle::release_ready`]). A read's only effect is its
    /// answer, so nothing reaches anyone without its record on disk. Every
    /// other record is answered as with `strict`.
    Pipelined,
    /// `relaxed`: answered once committed to the WAL (survives a crash of
    /// Warden); fsynced at least every [`RELAXED_SYNC_INTERVAL`] while
    /// records arrive: power loss can take the last interval's records.
    Relaxed,
    /// `normal` (kept for existing configurations): answered once committed;
    /// fsynced only when SQLite checkpoints the WAL.
    Normal,
}

/// Longest a committed record waits for its fsync with
/// [`SyncMode::Relaxed`].
pub const RELAXED_SYNC_INTERVAL: Duration = Duration::from_millis(200);

impl SyncMode {
    /// SQLite `synchronous` of the store's connections (the writer's
    /// commits are made durable by the [`WalSyncer`] where it runs).
    pub(super) fn pragma_value(self) -> &'static str {
        match self {
            SyncMode::Full | SyncMode::Pipelined => "FULL",
            SyncMode::Relaxed | SyncMode::Normal => "NORMAL",
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "strict",
            SyncMode::Pipelined => "pipelined",
            SyncMode::Relaxed => "relaxed",
            SyncMode::Normal => "normal",
        }
    }
}

/// An answer owed to a producer: its channel and its event's seq.
pub(super) type Reply = (oneshot::Sender<Result<u64, AuditError>>, u64);
/// A [`Reply`] and whether it may be answered before the fsync
/// ([`Prepared::early`]).
pub(super) type EarlyReply = (oneshot::Sender<Result<u64, AuditError>>, u64, bool);

/// A commit waiting for its fsync.
pub(super) struct SyncJob {
    /// Last seq of the commit.
    pub(super) through: u64,
    pub(super) replies: Vec<Reply>,
}

/// Durability for [`SyncMode::Full`], off the writer's path. The writer's
/// connection commits with SQLite's `synchronous = NORMAL` (the commit
/// writes its WAL frames, no fsync) and hands the commit's answers to this
/// thread, which fdatasyncs the `-wal` file and only then answers them. The
/// writer meanwhile inserts the next batches, so one fsync covers every
/// commit made while the previous one ran (pipelined group commit) instead
/// of the writer stalling on each fsync; `cargo xtask bench audit` shows
/// what it buys. When nothing is queued behind a commit, the writer makes
/// the fsync itself instead (it would be idle anyway, and the producers
/// are spared a thread hand-off).
///
/// Durability is that of SQLite's FULL in WAL mode: an answer means the
/// commit's frames, and those of every earlier commit, are on stable
/// storage (fsync covers every write made to the file before it). A later
/// commit never survives a power cut without an earlier one: WAL frame
/// checksums are cumulative, so recovery stops at the first lost frame.
/// WAL checkpoints stay safe: with NORMAL, SQLite fsyncs the WAL before
/// copying it and the database after, before the WAL is reused.
///
/// Committed but not yet fsynced events are visible to readers; the
/// forwarders read only up to [`DurableSeq`]. A failed fsync answers the
/// commits it covered with [`AuditError::Sync`] (their traffic is refused;
/// the events stay in the chain: recorded without effect, never the other
/// way round) and marks the store unhealthy until an fsync succeeds.
pub(super) struct WalSyncer {
    pub(super) tx: Option<std::sync::mpsc::Sender<SyncJob>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) path: PathBuf,
    pub(super) shared: Arc<Shared>,
}

impl WalSyncer {
    pub(super) fn spawn(path: &Path, shared: Arc<Shared>) -> Result<Self, AuditError> {
        let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
        let (db, sh) = (path.to_owned(), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("warden-audit-sync".into())
            .spawn(move || {
                let mut jobs = Vec::new();
                // Ends when the writer drops the sender and the queue is empty.
                while let Ok(first) = rx.recv() {
                    jobs.push(first);
                    jobs.extend(rx.try_iter());
                    let result = sync_wal_of(&sh, &db);
                    answer(&sh, &db, result, &mut jobs);
                }
            })
            .map_err(|source| AuditError::Io {
                op: "spawn WAL fsync thread for",
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_owned(),
            shared,
        })
    }

    /// Hand `job` to the thread, or (`here`, or the thread is gone) fsync
    /// and answer it on the caller's thread. Anything the thread still
    /// holds is older than `job`; its own fsync answers it.
    pub(super) fn submit(&self, job: SyncJob, here: bool) {
        let job = match &self.tx {
            Some(tx) if !here => match tx.send(job) {
                Ok(()) => return,
                // The thread is gone only if it panicked.
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            _ => job,
        };
        let result = sync_wal_of(&self.shared, &self.path);
        answer(&self.shared, &self.path, result, &mut vec![job]);
    }

    /// Sync and answer everything submitted, then end the thread.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("audit WAL fsync thread panicked");
        }
    }
}

/// [`sync_wal`], failing on purpose where a test asked for it.
pub(super) fn sync_wal_of(shared: &Shared, db: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if shared
        .fail_syncs
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(std::io::Error::other("injected fsync failure"));
    }
    #[cfg(test)]
    std::thread::sleep(Duration::from_millis(
        shared.sync_delay_ms.load(Ordering::Acquire),
    ));
    let _ = shared;
    sync_wal(db)
}

/// fdatasync the store's `-wal` file (the database file when there is no
/// WAL, i.e. everything was checkpointed and the WAL removed).
pub(super) fn sync_wal(db: &Path) -> std::io::Result<()> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::File::open(&wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(db)?.sync_data(),
        Err(e) => Err(e),
    }
}

/// Answer the producers of `jobs` after their fsync ended with `result`.
pub(super) fn answer(
    shared: &Shared,
    db: &Path,
    result: std::io::Result<()>,
    jobs: &mut Vec<SyncJob>,
) {
    match result {
        Ok(()) => {
            if let Some(through) = jobs.iter().map(|j| j.through).max() {
                shared.durable_seq.fetch_max(through, Ordering::AcqRel);
            }
            shared.durable_wake.notify_waiters();
            if shared.sync_failed.swap(false, Ordering::AcqRel) {
                tracing::info!(audit.path = %db.display(), "audit WAL fsync works again");
            }
            for (reply, seq) in jobs.drain(..).flat_map(|j| j.replies) {
                let _ = reply.send(Ok(seq));
            }
        }
        Err(e) => {
            let n: usize = jobs.iter().map(|j| j.replies.len()).sum();
            shared.failed_commits.fetch_add(1, Ordering::AcqRel);
            if let Some(through) = jobs.iter().map(|j| j.through).max() {
                let from = shared.durable_seq.load(Ordering::Acquire) + 1;
                let mut failures = shared
                    .sync_failures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if failures.len() >= 16 {
                    failures.remove(0);
                }
                failures.push((from, through));
            }
            shared.durable_wake.notify_waiters();
            if shared.sync_failed.swap(true, Ordering::AcqRel) {
                tracing::debug!(audit.error = %e, "audit WAL fsync failed again");
            } else {
                tracing::error!(
                    audit.path = %db.display(),
                    audit.error = %e,
                    audit.records = n,
                    "audit WAL fsync failed; the records it covered are refused"
                );
            }
            let source = Arc::new(e);
            for (reply, _) in jobs.drain(..).flat_map(|j| j.replies) {
                let _ = reply.send(Err(AuditError::Sync {
                    path: db.to_owned(),
                    source: Arc::clone(&source),
                }));
            }
        }
    }
}

/// The background WAL checkpointer: its own connection, a PASSIVE
/// checkpoint when asked (and every [`WAL_CHECKPOINT_PERIOD`]). PASSIVE
/// never waits for the writer or for readers. It copies the bulk of the
/// WAL into the database; the writer then copies the few frames committed
/// meanwhile itself (see [`Writer::wal_maintenance`]), which lets its next
/// transaction restart the WAL from the beginning: the file is reused
/// instead of growing (writes into a growing file cost the kernel far more
/// than overwrites).
pub(super) struct WalCheckpointer {
    pub(super) tx: Option<std::sync::mpsc::SyncSender<()>>,
    /// Set after each completed background run.
    pub(super) ran: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl WalCheckpointer {
    pub(super) fn spawn(path: &Path, sync: SyncMode) -> Result<Self, AuditError> {
        let open_err = |op: &'static str| {
            move |source| AuditError::Open {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let conn = Connection::open(path).map_err(open_err("open checkpointer connection"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("set busy_timeout"))?;
        conn.pragma_update(None, "synchronous", sync.pragma_value())
            .map_err(open_err("set synchronous"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let ran = Arc::new(AtomicBool::new(false));
        let ran_flag = Arc::clone(&ran);
        let thread = std::thread::Builder::new()
            .name("warden-audit-wal".into())
            .spawn(move || {
                // Asked, or the period passed; stops when the writer hangs up.
                while let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(WAL_CHECKPOINT_PERIOD)
                {
                    if let Err(e) = wal_checkpoint(&conn) {
                        tracing::debug!(audit.error = %e, "background WAL checkpoint failed");
                    }
                    ran_flag.store(true, Ordering::Release);
                }
                // Closing this connection never checkpoints while the
                // writer's connection is open.
                drop(conn);
            })
            .map_err(|source| AuditError::Io {
                op: "spawn WAL checkpointer thread for",
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            ran,
            thread: Some(thread),
        })
    }

    /// Ask for a run (never blocks: one request pending is enough).
    pub(super) fn poke(&self) {
        self.ran.store(false, Ordering::Release);
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }

    /// Whether a run completed since the last [`poke`](Self::poke).
    pub(super) fn has_run(&self) -> bool {
        self.ran.load(Ordering::Acquire)
    }

    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("audit WAL checkpointer thread panicked");
        }
    }
}

/// A PASSIVE WAL checkpoint on `conn`: (frames in the WAL, frames copied).
pub(super) fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

impl Writer {
    /// Keep the WAL small and reused: once [`WAL_CHECKPOINT_BYTES`] were
    /// committed, the background checkpointer copies them; after it ran,
    /// the writer copies what was committed meanwhile (little) and the next
    /// transaction restarts the WAL. If the background run falls far
    /// behind, the writer checkpoints everything itself.
    pub(super) fn wal_maintenance(&mut self) {
        if self.wal_bytes < WAL_CHECKPOINT_BYTES {
            return;
        }
        let follow_up = match &self.checkpointer {
            Some(c) if !self.wal_poked => {
                c.poke();
                self.wal_poked = true;
                false
            }
            Some(c) => c.has_run() || self.wal_bytes >= 4 * WAL_CHECKPOINT_BYTES,
            None => false,
        };
        if !follow_up {
            return;
        }
        if let Some(conn) = &self.conn {
            match wal_checkpoint(conn) {
                Ok((log, copied)) if log == copied => {}
                Ok((log, copied)) => tracing::debug!(
                    audit.wal_frames = log,
                    audit.copied = copied,
                    "WAL not fully checkpointed (a reader holds an older snapshot)"
                ),
                Err(e) => tracing::debug!(audit.error = %e, "WAL checkpoint failed"),
            }
        }
        self.wal_bytes = 0;
        self.wal_poked = false;
    }

    /// [`SyncMode::Relaxed`]: hand the fsync of everything committed to
    /// the syncer when the last one is [`RELAXED_SYNC_INTERVAL`] old (or,
    /// with `idle`, whenever something is not yet durable: the writer has
    /// nothing else to do).
    pub(super) fn relaxed_sync(&mut self, idle: bool) {
        let Some(s) = &self.syncer else {
            return;
        };
        if self.shared.mode != SyncMode::Relaxed {
            return;
        }
        let last = self.state.next_seq - 1;
        if self.shared.durable_seq.load(Ordering::Acquire) >= last {
            return;
        }
        if idle || self.last_sync_at.elapsed() >= RELAXED_SYNC_INTERVAL {
            self.last_sync_at = Instant::now();
            s.submit(
                SyncJob {
                    through: last,
                    replies: Vec::new(),
                },
                false,
            );
        }
    }
}
