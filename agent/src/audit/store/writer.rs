//! The writer thread: starting it ([`spawn_inner`], the ticker), its run
//! loop, group commit of a batch in one transaction with the hash chain,
//! signed checkpoints, failure and recovery.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Longest a batch of detached records alone (statement results nobody
/// awaits) waits for an awaited record to share its commit with.
pub(super) const DETACHED_LINGER: Duration = Duration::from_millis(5);
/// Longest the writer sleeps between checks for due checkpoints/prunes.
pub(super) const MAX_TICK: Duration = Duration::from_secs(1);

/// `start_gate`: when set, the writer waits for it before taking its first
/// message (tests use it to queue a known set of events first).
pub(super) fn spawn_inner(
    path: &Path,
    opts: WriterOptions,
    retention: Option<Retention>,
    start_gate: Option<std::sync::mpsc::Receiver<()>>,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    // With FULL, SQLite commits without an fsync and the WalSyncer makes
    // each commit durable before it is answered (see there).
    let (conn, chain_id, chain_key, state) = open_store(path, SyncMode::Normal)?;
    let signer = CheckpointSigner::load_or_create(path)?;
    conn.execute(
        "INSERT OR IGNORE INTO keys (key_id, public_key, added_ms) VALUES (?1, ?2, ?3)",
        params![signer.key_id(), &signer.public_key()[..], now_ms()],
    )
    .map_err(|source| AuditError::Open {
        path: path.to_owned(),
        op: "register checkpoint key",
        source,
    })?;
    // WAL checkpoints run on their own thread; without it, SQLite's
    // automatic checkpoints in the writer stay on.
    let checkpointer = match WalCheckpointer::spawn(path, opts.sync) {
        Ok(c) => {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(|source| AuditError::Open {
                    path: path.to_owned(),
                    op: "set wal_autocheckpoint",
                    source,
                })?;
            Some(c)
        }
        Err(e) => {
            tracing::warn!(
                audit.path = %path.display(),
                audit.error = %e,
                "no background WAL checkpointer; the writer checkpoints itself"
            );
            None
        }
    };
    tracing::info!(
        audit.path = %path.display(),
        audit.chain_id = %chain_id,
        audit.last_seq = state.next_seq - 1,
        audit.key_id = %signer.key_id(),
        audit.durability = opts.sync.as_str(),
        "audit store open"
    );
    let shared = Arc::new(Shared {
        healthy: AtomicBool::new(true),
        sync_failed: AtomicBool::new(false),
        durable_seq: AtomicU64::new(state.next_seq - 1),
        #[cfg(test)]
        fail_syncs: Default::default(),
        #[cfg(test)]
        sync_delay_ms: AtomicU64::new(0),
        commits: AtomicU64::new(0),
        failed_commits: AtomicU64::new(0),
        events: AtomicU64::new(0),
        checkpoints: AtomicU64::new(0),
        last_seq: AtomicU64::new(state.next_seq - 1),
        detached_backlog: AtomicU64::new(0),
        detached_overflowed: AtomicU64::new(0),
        detached_lost: AtomicU64::new(0),
        chain_id: chain_id.clone(),
        key_id: signer.key_id().to_owned(),
        host: opts.host.clone(),
        mode: opts.sync,
        durable_wake: tokio::sync::Notify::new(),
        sync_failures: std::sync::Mutex::new(Vec::new()),
        lazy: std::sync::Mutex::default(),
        writer_parked: AtomicBool::new(false),
    });
    let syncer = match opts.sync {
        SyncMode::Full | SyncMode::Pipelined | SyncMode::Relaxed => {
            // What a previous run committed may still be only in the page
            // cache (it was killed before its fsync).
            sync_wal(path).map_err(|source| AuditError::Io {
                op: "fsync the WAL of",
                path: path.to_owned(),
                source,
            })?;
            Some(WalSyncer::spawn(path, Arc::clone(&shared))?)
        }
        SyncMode::Normal => None,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let interval = (!opts.checkpoint_interval.is_zero()).then_some(opts.checkpoint_interval);
    let tick = match (interval, retention) {
        (Some(i), _) => Some((i / 4).clamp(Duration::from_millis(10), MAX_TICK)),
        (None, Some(_)) => Some(MAX_TICK),
        (None, None) => None,
    };
    // Relaxed: the ticker also bounds how long a commit waits for its
    // fsync when no further commit comes.
    let tick = match (opts.sync, tick) {
        (SyncMode::Relaxed, Some(t)) => Some(t.min(RELAXED_SYNC_INTERVAL)),
        (SyncMode::Relaxed, None) => Some(RELAXED_SYNC_INTERVAL),
        (_, t) => t,
    };
    let ticker_stop = match tick {
        Some(period) => Some(spawn_ticker(path, tx.downgrade(), period)?),
        None => None,
    };
    let writer = Writer {
        conn: Some(conn),
        path: path.to_owned(),
        ctx: ChainCtx {
            chain_id,
            key: chain_key,
            host: opts.host,
            signer,
            every: opts.checkpoint_every,
        },
        state,
        batch_max: opts.batch_max.max(1),
        interval,
        last_checkpoint_at: Instant::now(),
        retention,
        next_prune_at: Instant::now(),
        prune_more: false,
        checkpointer,
        syncer,
        sync_inline: false,
        last_sync_at: Instant::now(),
        wal_bytes: 0,
        wal_poked: false,
        buf: Vec::with_capacity(4096),
        shared: Arc::clone(&shared),
        _ticker_stop: ticker_stop,
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
    Ok((
        AuditHandle {
            tx,
            shared,
            overflow: Arc::default(),
            owed: Arc::default(),
        },
        WriterTask { thread },
    ))
}

/// A thread that wakes the writer every `period` (time-based checkpoints
/// and prunes). It holds only a weak sender (so it never keeps the writer
/// alive) and ends when the writer drops the returned sender or the
/// channel closes.
pub(super) fn spawn_ticker(
    path: &Path,
    weak: mpsc::WeakSender<Msg>,
    period: Duration,
) -> Result<std::sync::mpsc::Sender<()>, AuditError> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("warden-audit-tick".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(period)
            {
                let Some(tx) = weak.upgrade() else { return };
                // Full: the writer is busy and checks the time after each
                // batch anyway.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Msg::Tick) {
                    return;
                }
            }
        })
        .map_err(|source| AuditError::Io {
            op: "spawn checkpoint timer thread for",
            path: path.to_owned(),
            source,
        })?;
    Ok(stop_tx)
}

/// Whether the writer may hold `batch` back for [`DETACHED_LINGER`]: it is
/// not empty, not full, and nobody awaits its commit.
pub(super) fn lingers(batch: &[Pending], batch_max: usize) -> bool {
    !batch.is_empty() && batch.len() < batch_max && batch.iter().all(|p| p.reply.is_none())
}

pub(super) struct Pending {
    pub(super) rec: Box<Prepared>,
    /// `None` for detached records.
    pub(super) reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

/// What the writer needs to hash, encode and sign, fixed at open.
pub(super) struct ChainCtx {
    pub(super) chain_id: String,
    pub(super) key: ChainKey,
    pub(super) host: String,
    pub(super) signer: CheckpointSigner,
    /// Checkpoint after this many events (0 = never by count).
    pub(super) every: u64,
}

pub(super) type DbError = (&'static str, rusqlite::Error);

/// The seqs of a batch's events, and the number of checkpoints it wrote.
pub(super) type BatchResult = Result<(Vec<u64>, u64), DbError>;

/// Store columns of an event the writer makes itself.
pub(super) struct Columns {
    pub(super) time_ms: i64,
    pub(super) class_uid: u32,
    pub(super) activity: &'static str,
    pub(super) reason: Option<String>,
}

pub(super) struct Writer {
    /// `None` only after [`Writer::close`].
    pub(super) conn: Option<Connection>,
    pub(super) path: PathBuf,
    pub(super) ctx: ChainCtx,
    /// Advances only on commit.
    pub(super) state: ChainState,
    pub(super) batch_max: usize,
    /// Checkpoint by time (None = never).
    pub(super) interval: Option<Duration>,
    pub(super) last_checkpoint_at: Instant,
    /// `None`: never prune.
    pub(super) retention: Option<Retention>,
    pub(super) next_prune_at: Instant,
    /// The last scheduled prune step was capped: the next one follows
    /// after [`PRUNE_STEP_PAUSE`].
    pub(super) prune_more: bool,
    pub(super) checkpointer: Option<WalCheckpointer>,
    /// With [`SyncMode::Full`]: answers producers once their commit is
    /// fsynced.
    pub(super) syncer: Option<WalSyncer>,
    /// Set by the run loop while it commits a batch with nothing queued
    /// behind it: the writer fsyncs that commit itself.
    pub(super) sync_inline: bool,
    /// [`SyncMode::Relaxed`]: when the last fsync was handed to the syncer.
    pub(super) last_sync_at: Instant,
    /// Event bytes committed since the WAL was last fully checkpointed.
    pub(super) wal_bytes: usize,
    /// The background checkpointer was asked to run and has not been
    /// followed up yet.
    pub(super) wal_poked: bool,
    /// Reused buffer for one event's bytes.
    pub(super) buf: Vec<u8>,
    pub(super) shared: Arc<Shared>,
    /// Dropped with the writer, which stops the ticker thread.
    pub(super) _ticker_stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut msgs = Vec::with_capacity(self.batch_max);
        let mut batch: Vec<Pending> = Vec::with_capacity(self.batch_max);
        let mut shutdown_acks = Vec::new();
        // Only to wait for messages with a time limit (see DETACHED_LINGER);
        // every store operation runs on this thread outside it.
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(audit.error = %e, "no timer for the audit writer; results commit at once");
                None
            }
        };
        self.scheduled_prune();
        // When the first record of the current batch arrived.
        let mut linger_start = Instant::now();
        // Nothing arrived during the last DETACHED_LINGER: the next wait
        // has no deadline (and detached records wake the writer).
        let mut idle = true;
        loop {
            // Detached records left since the last batch go first: they
            // were queued before anything the channel holds now.
            self.take_lazy(&mut batch, &mut linger_start);
            // Blocks for the first message, then takes what is queued, up to
            // batch_max; 0 once the channel is closed and drained. While the
            // batch holds only detached records (statement results), waits
            // at most DETACHED_LINGER: they then ride in the transaction of
            // the next awaited record instead of costing a commit (and, with
            // synchronous = FULL, an fsync the next request would queue
            // behind) of their own.
            let room = self.batch_max.saturating_sub(batch.len()).max(1);
            let received = match &waiter {
                Some(rt) if lingers(&batch, self.batch_max) && shutdown_acks.is_empty() => {
                    let left = DETACHED_LINGER.saturating_sub(linger_start.elapsed());
                    rt.block_on(async {
                        tokio::time::timeout(left, rx.recv_many(&mut msgs, room)).await
                    })
                    .ok()
                }
                // Records came lately: sleep at most DETACHED_LINGER, so
                // detached ones left meanwhile need no wake-up.
                Some(rt) if batch.is_empty() && !idle && shutdown_acks.is_empty() => rt
                    .block_on(async {
                        tokio::time::timeout(DETACHED_LINGER, rx.recv_many(&mut msgs, room)).await
                    })
                    .ok(),
                Some(rt) => {
                    if self.sleep_without_deadline(&mut batch, &mut linger_start) {
                        continue;
                    }
                    Some(rt.block_on(rx.recv_many(&mut msgs, room)))
                }
                // No timer: detached records always wake the writer.
                None => {
                    if self.sleep_without_deadline(&mut batch, &mut linger_start) {
                        continue;
                    }
                    Some(rx.blocking_recv_many(&mut msgs, room))
                }
            };
            self.shared.writer_parked.store(false, Ordering::SeqCst);
            match received {
                // Closed and drained.
                Some(0) => break,
                Some(_) => idle = false,
                // Lingered long enough: commit what waits.
                None => {
                    self.take_lazy(&mut batch, &mut linger_start);
                    idle = batch.is_empty();
                    self.commit(&mut batch);
                    self.after_batch();
                    continue;
                }
            }
            self.take_lazy(&mut batch, &mut linger_start);
            for msg in msgs.drain(..) {
                match msg {
                    Msg::Record { rec, reply } => {
                        if batch.is_empty() {
                            linger_start = Instant::now();
                        }
                        batch.push(Pending { rec, reply });
                    }
                    Msg::Prune { now_ms, reply } => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.prune_step(now_ms));
                    }
                    Msg::Shutdown { done } => {
                        // Stop accepting; what is already queued is drained.
                        rx.close();
                        shutdown_acks.push(done);
                    }
                    Msg::Tick => self.relaxed_sync(true),
                    Msg::Wake => {}
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
            let hold = lingers(&batch, self.batch_max)
                && waiter.is_some()
                && shutdown_acks.is_empty()
                && linger_start.elapsed() < DETACHED_LINGER;
            if !hold {
                // Nothing else waiting: the writer would sit idle during
                // the fsync anyway, so it makes it itself and spares the
                // producers the hand-off to the syncer (lower latency at
                // low load; under load the syncer pipelines).
                self.sync_inline = rx.is_empty();
                self.commit(&mut batch);
                self.sync_inline = false;
            }
            self.after_batch();
        }
        self.commit(&mut batch);
        // Detached records left until now are committed; later ones are
        // refused (and counted) by their producers.
        {
            let mut lazy = self.shared.lazy();
            lazy.closed = true;
            batch.extend(
                lazy.records
                    .drain(..)
                    .map(|rec| Pending { rec, reply: None }),
            );
        }
        self.commit(&mut batch);
        if self.state.since_checkpoint > 0 {
            self.checkpoint("shutdown");
        }
        self.close();
        for done in shutdown_acks {
            let _ = done.send(());
        }
    }

    /// Move the detached records left in the [`LazyQueue`] to `batch`
    /// (`linger_start`: when the batch got its first record).
    pub(super) fn take_lazy(&self, batch: &mut Vec<Pending>, linger_start: &mut Instant) {
        let mut lazy = self.shared.lazy();
        if lazy.records.is_empty() {
            return;
        }
        if batch.is_empty() {
            *linger_start = Instant::now();
        }
        batch.extend(
            lazy.records
                .drain(..)
                .map(|rec| Pending { rec, reply: None }),
        );
    }

    /// About to sleep with no deadline: from now on a detached record
    /// wakes the writer. `true` when one was left meanwhile (it is in
    /// `batch` now and the writer must not sleep).
    pub(super) fn sleep_without_deadline(
        &self,
        batch: &mut Vec<Pending>,
        linger_start: &mut Instant,
    ) -> bool {
        if !batch.is_empty() {
            // Held records, and a shutdown on its way: it ends the wait.
            return false;
        }
        self.shared.writer_parked.store(true, Ordering::SeqCst);
        self.take_lazy(batch, linger_start);
        if batch.is_empty() {
            return false;
        }
        self.shared.writer_parked.store(false, Ordering::SeqCst);
        true
    }

    /// Time-based checkpoint, retention and WAL upkeep, after each batch.
    pub(super) fn after_batch(&mut self) {
        if self.checkpoint_due() {
            self.checkpoint("interval");
        }
        self.scheduled_prune();
        self.wal_maintenance();
    }

    pub(super) fn checkpoint_due(&self) -> bool {
        self.interval.is_some_and(|interval| {
            self.state.since_checkpoint > 0 && self.last_checkpoint_at.elapsed() >= interval
        })
    }

    pub(super) fn close(&mut self) {
        // Every commit is fsynced and answered before the store closes.
        if let Some(s) = self.syncer.as_mut() {
            s.stop();
        }
        self.shared.healthy.store(false, Ordering::Release);
        if let Some(c) = self.checkpointer.as_mut() {
            c.stop();
        }
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
    pub(super) fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        match self.write(batch, false) {
            Ok((seqs, checkpoints)) => {
                tracing::trace!(
                    audit.batch_size = n,
                    audit.last_seq = self.state.next_seq - 1,
                    "audit batch committed"
                );
                let replies = batch
                    .drain(..)
                    .zip(seqs)
                    .filter_map(|(p, seq)| {
                        let early = p.rec.early;
                        p.reply.map(|r| (r, seq, early))
                    })
                    .collect();
                self.committed(n as u64, checkpoints, replies);
            }
            Err((op, e)) => {
                self.failed(op, n, &e);
                let source = Arc::new(e);
                let mut lost = 0u64;
                for p in batch.drain(..) {
                    match p.reply {
                        Some(reply) => {
                            let _ = reply.send(Err(AuditError::Write {
                                op,
                                source: Arc::clone(&source),
                            }));
                        }
                        None => lost += 1,
                    }
                }
                if lost > 0 {
                    self.shared.detached_lost.fetch_add(lost, Ordering::AcqRel);
                    tracing::error!(
                        audit.events = lost,
                        audit.op = op,
                        audit.error = %source,
                        "audit events NOT recorded: commit of detached statement events failed"
                    );
                }
                self.recover();
            }
        }
    }

    /// Sign and commit a checkpoint of everything recorded so far (a no-op
    /// when nothing was recorded since the last one).
    pub(super) fn checkpoint(&mut self, why: &'static str) {
        match self.write(&[], true) {
            Ok((_, checkpoints)) => {
                self.committed(0, checkpoints, Vec::new());
                tracing::debug!(
                    audit.trigger = why,
                    audit.size = self.state.next_seq.saturating_sub(2),
                    "audit checkpoint committed"
                );
            }
            Err((op, e)) => {
                self.failed(op, 0, &e);
                self.recover();
            }
        }
    }

    /// After a commit: counters, health, and the answers to its producers
    /// (now, or with [`SyncMode::Full`] once the syncer fsynced it). A
    /// producer may have gone away; its event is stored all the same.
    pub(super) fn committed(&mut self, events: u64, checkpoints: u64, replies: Vec<EarlyReply>) {
        let last = self.state.next_seq - 1;
        self.shared.commits.fetch_add(1, Ordering::AcqRel);
        self.shared.events.fetch_add(events, Ordering::AcqRel);
        self.shared
            .checkpoints
            .fetch_add(checkpoints, Ordering::AcqRel);
        self.shared.last_seq.store(last, Ordering::Release);
        // Healthy before anyone is answered: a producer that got its answer
        // must never see the store unhealthy because of an older failure.
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(
                audit.path = %self.path.display(),
                "audit store writable again"
            );
        }
        let Some(s) = &self.syncer else {
            self.shared.durable_seq.store(last, Ordering::Release);
            for (reply, seq, _) in replies {
                let _ = reply.send(Ok(seq));
            }
            return;
        };
        match self.shared.mode {
            SyncMode::Full | SyncMode::Normal => {
                let replies = replies.into_iter().map(|(r, seq, _)| (r, seq)).collect();
                s.submit(
                    SyncJob {
                        through: last,
                        replies,
                    },
                    self.sync_inline,
                );
            }
            SyncMode::Pipelined => {
                // Early records are in the WAL now: their producers go on
                // (the statement travels to the database while the fsync
                // runs) and hold their answers back until it is done.
                let mut late = Vec::with_capacity(replies.len());
                for (reply, seq, early) in replies {
                    if early {
                        let _ = reply.send(Ok(seq));
                    } else {
                        late.push((reply, seq));
                    }
                }
                s.submit(
                    SyncJob {
                        through: last,
                        replies: late,
                    },
                    self.sync_inline,
                );
            }
            SyncMode::Relaxed => {
                for (reply, seq, _) in replies {
                    let _ = reply.send(Ok(seq));
                }
                self.relaxed_sync(false);
            }
        }
    }

    pub(super) fn failed(&mut self, op: &'static str, n: usize, e: &rusqlite::Error) {
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
    }

    /// Insert the batch in one transaction, chaining each event, with a
    /// checkpoint wherever the count is reached and (with `force`) one at
    /// the end if anything is uncovered. A database error fails the whole
    /// batch (and consumes no seq).
    pub(super) fn write(&mut self, batch: &[Pending], force: bool) -> BatchResult {
        let Some(conn) = self.conn.as_mut() else {
            return Err(("write", rusqlite::Error::InvalidQuery));
        };
        let ctx = &self.ctx;
        let buf = &mut self.buf;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| ("begin", e))?;
        let mut st = self.state;
        let mut seqs = Vec::with_capacity(batch.len());
        let mut checkpoints = 0;
        let mut bytes = 0;
        {
            let mut insert = tx
                .prepare_cached(INSERT_EVENT)
                .map_err(|e| ("prepare", e))?;
            for p in batch {
                let rec = &p.rec;
                let seq = st.next_seq;
                buf.clear();
                rec.body.fill_into(seq, buf);
                let hash = event_hash(&ctx.key, seq, &st.head, buf);
                insert
                    .execute(params![
                        seq,
                        rec.time_ms,
                        rec.class_uid,
                        rec.activity,
                        rec.decision,
                        rec.account,
                        rec.target,
                        rec.session,
                        rec.reason,
                        &buf[..],
                        &hash[..],
                    ])
                    .map_err(|e| ("insert", e))?;
                bytes += buf.len();
                seqs.push(seq);
                st.head = hash;
                st.next_seq += 1;
                st.since_checkpoint += 1;
                if ctx.every > 0 && st.since_checkpoint >= ctx.every {
                    insert_checkpoint(ctx, &tx, &mut insert, &mut st)?;
                    checkpoints += 1;
                }
            }
            if force && st.since_checkpoint > 0 {
                insert_checkpoint(ctx, &tx, &mut insert, &mut st)?;
                checkpoints += 1;
            }
        }
        tx.commit().map_err(|e| ("commit", e))?;
        self.state = st;
        self.wal_bytes += bytes;
        if checkpoints > 0 {
            self.last_checkpoint_at = Instant::now();
        }
        Ok((seqs, checkpoints))
    }

    /// After a failed batch: make sure no transaction is left open and
    /// re-read the chain state (another process may have written).
    pub(super) fn recover(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::debug!(audit.error = %e, "audit rollback failed");
        }
        match load_chain_state(conn) {
            Ok(state) => self.state = state,
            Err(e) => tracing::debug!(audit.error = %e, "cannot re-read audit chain head"),
        }
    }
}

/// Insert an event the writer makes itself (prune) as the next event,
/// advancing `st`, with a checkpoint after it when the count is reached.
pub(super) fn insert_own_event(
    ctx: &ChainCtx,
    tx: &Transaction<'_>,
    insert: &mut CachedStatement<'_>,
    st: &mut ChainState,
    cols: &Columns,
    data: &[u8],
) -> Result<(), DbError> {
    let seq = st.next_seq;
    let hash = event_hash(&ctx.key, seq, &st.head, data);
    insert
        .execute(params![
            seq,
            cols.time_ms,
            cols.class_uid,
            cols.activity,
            NO_DECISION,
            None::<&str>,
            None::<&str>,
            "",
            cols.reason,
            data,
            &hash[..],
        ])
        .map_err(|e| ("insert event", e))?;
    st.head = hash;
    st.next_seq += 1;
    st.since_checkpoint += 1;
    if ctx.every > 0 && st.since_checkpoint >= ctx.every {
        insert_checkpoint(ctx, tx, insert, st)?;
    }
    Ok(())
}

/// Sign a checkpoint of the chain up to `st` and insert it as the next
/// event and as a `checkpoints` row, advancing `st`.
pub(super) fn insert_checkpoint(
    ctx: &ChainCtx,
    tx: &Transaction<'_>,
    insert_event: &mut CachedStatement<'_>,
    st: &mut ChainState,
) -> Result<(), DbError> {
    // Signing and encoding cannot fail for these inputs; should they, the
    // batch fails like a database error rather than losing a checkpoint.
    let conversion = |op: &'static str| {
        move |e: AuditError| (op, rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let size = st.next_seq - 1;
    let body = CheckpointBody {
        origin: format!("{ORIGIN_PREFIX}{}", ctx.chain_id),
        size,
        head_hash: hex::encode(st.head),
        time_ms: now_ms(),
        prev_checkpoint_hash: st.last_checkpoint.map(hex::encode).unwrap_or_default(),
        key_id: ctx.signer.key_id().to_owned(),
    };
    let cp = ctx
        .signer
        .sign(&body)
        .map_err(conversion("sign checkpoint"))?;
    let seq = st.next_seq;
    let data = encode_checkpoint(&cp, seq, &ctx.chain_id, &ctx.host)
        .map_err(conversion("encode checkpoint"))?;
    let hash = event_hash(&ctx.key, seq, &st.head, &data);
    insert_event
        .execute(params![
            seq,
            body.time_ms,
            CLASS_UID_APPLICATION_LIFECYCLE,
            CHECKPOINT_ACTIVITY,
            NO_DECISION,
            None::<&str>,
            None::<&str>,
            "",
            None::<&str>,
            data,
            &hash[..],
        ])
        .map_err(|e| ("insert checkpoint event", e))?;
    let prev = st.last_checkpoint.map(|h| h.to_vec()).unwrap_or_default();
    tx.prepare_cached(INSERT_CHECKPOINT)
        .and_then(|mut s| {
            s.execute(params![
                size,
                &st.head[..],
                body.time_ms,
                prev,
                body.key_id,
                cp.body_bytes(),
                cp.signature(),
            ])
        })
        .map_err(|e| ("insert checkpoint", e))?;
    st.head = hash;
    st.next_seq += 1;
    st.since_checkpoint = 0;
    st.last_checkpoint = Some(cp.digest());
    Ok(())
}
