//! The producers' side of the store: [`AuditHandle`] (record, await the
//! commit or queue detached), the prepared record handed to the writer,
//! the overflow queue that keeps detached records in order when the
//! channel is full, the lazy queue of detached records that do not wake
//! the writer, and [`DurableSeq`].

#[allow(clippy::wildcard_imports)]
use super::*;

/// Detached records (statement and HTTP results nobody awaits) left for
/// the writer without a wake-up: it takes them at its next batch, before
/// the channel's records (so each producer's order is kept), and while
/// records come it never sleeps longer than [`DETACHED_LINGER`]. Only
/// when it sleeps with no deadline does a detached record wake it. At most
/// [`LAZY_MAX`] records; beyond, the channel (and its overflow queue) as
/// before.
#[derive(Default)]
pub(super) struct LazyQueue {
    // Boxed as in `Msg` and `Pending`: records move between them unmoved.
    #[allow(clippy::vec_box)]
    pub(super) records: Vec<Box<Prepared>>,
    /// The writer has stopped: nothing here will be committed any more.
    pub(super) closed: bool,
}

/// Most detached records left in the [`LazyQueue`].
pub(super) const LAZY_MAX: usize = CHANNEL_CAPACITY;

impl Shared {
    pub(super) fn lazy(&self) -> std::sync::MutexGuard<'_, LazyQueue> {
        // Held for plain vector operations only; a poisoned lock still
        // holds a consistent queue.
        self.lazy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An event ready for the writer: its store columns and its encoding with
/// the seq left open.
pub struct Prepared {
    pub(super) class_uid: u32,
    pub(super) time_ms: i64,
    pub(super) activity: &'static str,
    pub(super) decision: &'static str,
    pub(super) account: Option<String>,
    pub(super) target: Option<String>,
    pub(super) session: String,
    pub(super) reason: Option<String>,
    pub(super) body: Body,
    /// [`SyncMode::Pipelined`]: answer the producer once the record is
    /// committed (in the WAL), before its fsync; the producer then holds
    /// its answer back with [`AuditHandle::release_ready`].
    pub(super) early: bool,
}

/// The stored bytes of a prepared event.
pub(super) enum Body {
    /// OCSF JSON with the seq left open (spliced in by the writer).
    Template(SeqTemplate),
    /// A compact canonical record (see [`crate::audit::record`]): it holds no
    /// seq, so its bytes are final.
    Record(Vec<u8>),
}

impl Body {
    pub(super) fn fill_into(&self, seq: u64, out: &mut Vec<u8>) {
        match self {
            Body::Template(t) => t.fill_into(seq, out),
            Body::Record(bytes) => out.extend_from_slice(bytes),
        }
    }
}

pub(super) enum Msg {
    /// `reply: None`: a detached record; the writer logs and counts it if
    /// it cannot be committed.
    Record {
        rec: Box<Prepared>,
        reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
    /// One prune step as of `now_ms` (tests, and a future CLI).
    Prune {
        now_ms: i64,
        reply: oneshot::Sender<Result<PruneReport, AuditError>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Wakes the writer to check whether a checkpoint or prune is due.
    Tick,
    /// Wakes a writer that sleeps with no deadline: a detached record
    /// waits in the [`LazyQueue`].
    Wake,
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
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) shared: Arc<Shared>,
    pub(super) overflow: Arc<Overflow>,
    /// Highest seq of a record answered before its fsync
    /// ([`SyncMode::Pipelined`]) through this handle's scope (see
    /// [`AuditHandle::session_scope`]): answers wait for it.
    pub(super) owed: Arc<AtomicU64>,
}

/// Records that found the channel full while being queued detached
/// ([`AuditHandle::record_detached`]), and every record queued
/// after them while they wait: a single drainer task feeds them to the
/// channel in order, so records keep the order they were queued in.
///
/// Unbounded, but not in practice: producers that await their records
/// (the statement request phase) go through the same queue while it is in
/// use, so each producer adds at most the detached records of the
/// statements it already had recorded. Its length is in
/// [`WriterStats::detached_backlog`].
#[derive(Default)]
pub(super) struct Overflow {
    pub(super) state: std::sync::Mutex<OverflowState>,
}

#[derive(Default)]
pub(super) struct OverflowState {
    pub(super) queue: std::collections::VecDeque<Msg>,
    /// A drainer runs; it clears this when it leaves the queue empty.
    pub(super) draining: bool,
}

impl Overflow {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, OverflowState> {
        // The lock is held for plain queue operations only; a poisoned
        // lock still holds a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The writer thread. [`WriterTask::join`] waits for it to finish, which
/// happens after [`AuditHandle::shutdown`] or once every handle is dropped.
pub struct WriterTask {
    pub(super) thread: std::thread::JoinHandle<()>,
}

impl AuditHandle {
    /// Record `ev`; resolves with its `seq` once the transaction holding it
    /// has committed. An `Err` means the event is NOT in the store: the
    /// caller must not let the audited effect happen (a statement must not
    /// reach the database, an HTTP request the upstream, an approval must not
    /// take effect). Used for connection events, configuration loads,
    /// statements' and HTTP requests' request phases, approval transitions
    /// and kernel denials (which already happened: this only reports them);
    /// see [`AuditRecord`].
    ///
    /// The event is encoded here, on the caller's task; only the seq is
    /// filled in by the writer.
    ///
    /// With [`SyncMode::Pipelined`], an allowed read statement is answered
    /// once its record is in the WAL (before the fsync): the caller forwards
    /// it and must hold the answer back until
    /// [`release_ready`](Self::release_ready) succeeds.
    ///
    /// Cancel safety: if this future is dropped after the event was queued,
    /// the event is still committed; only the answer is lost.
    pub async fn record<E: AuditRecord>(&self, ev: E) -> Result<u64, AuditError> {
        ev.count();
        let rec = ev.prepare(&self.prepare_ctx())?;
        let early = rec.early;
        let seq = self.submit(rec).await?;
        if early {
            self.owed.fetch_max(seq, Ordering::AcqRel);
        }
        Ok(seq)
    }

    /// Queue one event without waiting for its commit (a statement's or
    /// HTTP request's result phase: the answer is already on its way to the
    /// client; HTTP rejections that forward nothing).
    ///
    /// Never blocks and never drops: the event is encoded here and queued
    /// in order with every record queued after it. When the writer's
    /// channel is full it waits in an in-memory overflow queue that a
    /// single task drains in order (see [`WriterStats::detached_backlog`]).
    /// An event that cannot be stored (encoding failed, writer stopped,
    /// commit failed) is logged as an error and counted in
    /// [`WriterStats::detached_lost`], and a failed commit marks the handle
    /// unhealthy as for any record.
    ///
    /// Outside a Tokio runtime the drainer is a short-lived thread.
    pub fn record_detached<E: AuditRecord>(&self, ev: E) {
        ev.count();
        let mut rec = match ev.prepare(&self.prepare_ctx()) {
            Ok(rec) => rec,
            Err(e) => {
                self.lost(1, &format!("cannot encode the {}", E::WHAT), &e.to_string());
                return;
            }
        };
        // Nobody awaits a detached record: nothing to answer early.
        rec.early = false;
        self.enqueue_detached(Msg::Record {
            rec: Box::new(rec),
            reply: None,
        });
    }

    pub(super) fn prepare_ctx(&self) -> PrepareCtx<'_> {
        PrepareCtx {
            chain_id: &self.shared.chain_id,
            host: &self.shared.host,
            mode: self.shared.mode,
        }
    }

    /// A handle for one session: records made through it that were
    /// answered before their fsync ([`SyncMode::Pipelined`]) are what its
    /// [`release_ready`](Self::release_ready) waits for. Other clones feed
    /// the same writer.
    pub fn session_scope(&self) -> Self {
        Self {
            owed: Arc::new(AtomicU64::new(0)),
            ..self.clone()
        }
    }

    /// Resolves once every record made through this scope is on stable
    /// storage; call it before releasing an answer to the client. Immediate
    /// unless a pipelined record's fsync is still running. `Err` (the fsync
    /// covering it failed, or the writer stopped): the answer must not be
    /// released.
    pub async fn release_ready(&self) -> Result<(), AuditError> {
        let owed = self.owed.load(Ordering::Acquire);
        if owed == 0 {
            return Ok(());
        }
        // Fast path: durable, and no commit or fsync ever failed.
        if self.shared.durable_seq.load(Ordering::Acquire) >= owed
            && self.shared.failed_commits.load(Ordering::Acquire) == 0
        {
            return Ok(());
        }
        loop {
            let woken = self.shared.durable_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // durable_seq first: a failure recorded before a later fsync
            // advanced it is then visible.
            let durable = self.shared.durable_seq.load(Ordering::Acquire);
            if let Some(e) = self.sync_failure_covering(owed) {
                return Err(e);
            }
            if durable >= owed {
                return Ok(());
            }
            if self.tx.is_closed() && self.shared.durable_seq.load(Ordering::Acquire) < owed {
                return Err(AuditError::Closed);
            }
            woken.await;
        }
    }

    pub(super) fn sync_failure_covering(&self, seq: u64) -> Option<AuditError> {
        let failures = self
            .shared
            .sync_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures
            .iter()
            .any(|&(from, through)| (from..=through).contains(&seq))
            .then(|| AuditError::Sync {
                path: PathBuf::from("audit WAL"),
                source: Arc::new(std::io::Error::other(format!(
                    "the fsync covering record {seq} failed"
                ))),
            })
    }

    pub(super) fn lost(&self, n: u64, what: &str, error: &str) {
        crate::audit::counted::lost(n);
        self.shared.detached_lost.fetch_add(n, Ordering::AcqRel);
        tracing::error!(
            audit.events = n,
            audit.error = error,
            "audit event NOT recorded: {what}"
        );
    }

    pub(super) fn enqueue_detached(&self, msg: Msg) {
        let Some(msg) = self.leave_lazy(msg) else {
            return;
        };
        let mut st = self.overflow.lock();
        let msg = if st.queue.is_empty() && !st.draining {
            match self.tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    drop(st);
                    self.lost(1, "the audit writer is not running", "closed");
                    return;
                }
                Err(mpsc::error::TrySendError::Full(msg)) => msg,
            }
        } else {
            msg
        };
        st.queue.push_back(msg);
        self.shared.detached_backlog.fetch_add(1, Ordering::AcqRel);
        self.shared
            .detached_overflowed
            .fetch_add(1, Ordering::AcqRel);
        if !st.draining {
            st.draining = true;
            drop(st);
            tracing::warn!("audit writer queue full; statement results wait in memory");
            self.spawn_drainer();
        }
    }

    /// Leave a detached record in the [`LazyQueue`] (waking the writer only
    /// if it sleeps with no deadline); give it back when it must go through
    /// the channel: the queue is full, or records wait in the overflow
    /// queue (it goes behind them).
    pub(super) fn leave_lazy(&self, msg: Msg) -> Option<Msg> {
        let Msg::Record { rec, reply: None } = msg else {
            return Some(msg);
        };
        {
            let overflow = self.overflow.lock();
            if overflow.draining || !overflow.queue.is_empty() {
                return Some(Msg::Record { rec, reply: None });
            }
            let mut lazy = self.shared.lazy();
            if lazy.closed || self.tx.is_closed() {
                drop(lazy);
                drop(overflow);
                self.lost(1, "the audit writer is not running", "closed");
                return None;
            }
            if lazy.records.len() >= LAZY_MAX {
                return Some(Msg::Record { rec, reply: None });
            }
            lazy.records.push(rec);
        }
        // After the push (see Writer::sleep_without_deadline): either the
        // writer sees the record before it sleeps, or this sees it asleep.
        if self.shared.writer_parked.load(Ordering::SeqCst)
            && self.shared.writer_parked.swap(false, Ordering::SeqCst)
        {
            // Full: the writer has work and takes the record with it.
            let _ = self.tx.try_send(Msg::Wake);
        }
        None
    }

    /// Start the task that feeds the overflow queue to the writer in order.
    pub(super) fn spawn_drainer(&self) {
        let h = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    while let Some(msg) = h.next_overflow() {
                        if let Err(mpsc::error::SendError(msg)) = h.tx.send(msg).await {
                            h.drain_closed(msg);
                            return;
                        }
                    }
                });
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("warden-audit-overflow".into())
                    .spawn(move || {
                        while let Some(msg) = h.next_overflow() {
                            if let Err(mpsc::error::SendError(msg)) = h.tx.blocking_send(msg) {
                                h.drain_closed(msg);
                                return;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    // Without a drainer the queue would never move.
                    let n = {
                        let mut st = self.overflow.lock();
                        st.draining = false;
                        let n = st.queue.len() as u64;
                        st.queue.clear();
                        n
                    };
                    self.shared.detached_backlog.fetch_sub(n, Ordering::AcqRel);
                    self.lost(n, "cannot start the overflow drainer", &e.to_string());
                }
            }
        }
    }

    /// The next queued record, or `None` (and the drainer's end) when the
    /// queue is empty.
    pub(super) fn next_overflow(&self) -> Option<Msg> {
        let mut st = self.overflow.lock();
        match st.queue.pop_front() {
            Some(msg) => {
                self.shared.detached_backlog.fetch_sub(1, Ordering::AcqRel);
                Some(msg)
            }
            None => {
                st.draining = false;
                None
            }
        }
    }

    /// The writer stopped while the overflow queue held `first` and more:
    /// awaited records get [`AuditError::Closed`], detached ones are lost.
    pub(super) fn drain_closed(&self, first: Msg) {
        let rest: Vec<Msg> = {
            let mut st = self.overflow.lock();
            st.draining = false;
            st.queue.drain(..).collect()
        };
        self.shared
            .detached_backlog
            .fetch_sub(rest.len() as u64, Ordering::AcqRel);
        let mut lost = 0;
        for msg in std::iter::once(first).chain(rest) {
            match msg {
                Msg::Record {
                    reply: Some(reply), ..
                } => {
                    let _ = reply.send(Err(AuditError::Closed));
                }
                Msg::Record { reply: None, .. } => lost += 1,
                _ => {}
            }
        }
        if lost > 0 {
            self.lost(lost, "the audit writer stopped", "closed");
        }
    }

    pub(super) async fn submit(&self, rec: Prepared) -> Result<u64, AuditError> {
        let started = std::time::Instant::now();
        let committed = self.submit_inner(rec).await;
        crate::audit::counted::committed(started.elapsed(), committed.is_ok());
        committed
    }

    pub(super) async fn submit_inner(&self, rec: Prepared) -> Result<u64, AuditError> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Record {
            rec: Box::new(rec),
            reply: Some(reply),
        };
        if let Some(msg) = self.behind_overflow(msg) {
            self.tx.send(msg).await.map_err(|_| AuditError::Closed)?;
        }
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// While records wait in the overflow queue, queue `msg` behind them
    /// (keeping the order) and return `None`; else give it back to be sent
    /// directly.
    pub(super) fn behind_overflow(&self, msg: Msg) -> Option<Msg> {
        let mut st = self.overflow.lock();
        if st.draining {
            st.queue.push_back(msg);
            self.shared.detached_backlog.fetch_add(1, Ordering::AcqRel);
            None
        } else {
            Some(msg)
        }
    }

    /// Run one retention prune step now, as if the time were `now_ms` (ms
    /// since the Unix epoch), in order with the records queued before it.
    /// The writer also prunes on its own, at start and every
    /// [`Retention::every`].
    pub async fn prune_at(&self, now_ms: i64) -> Result<PruneReport, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Prune { now_ms, reply })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// False after the last commit or WAL fsync failed (or the writer
    /// stopped); true again after a successful one.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
            && !self.shared.sync_failed.load(Ordering::Acquire)
            && !self.tx.is_closed()
    }

    /// Tests: make the next `n` WAL fsyncs fail.
    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: u32) {
        self.shared.fail_syncs.store(n, Ordering::Release);
    }

    /// Tests: make every WAL fsync take at least `ms` longer.
    #[cfg(test)]
    pub(crate) fn delay_syncs(&self, ms: u64) {
        self.shared.sync_delay_ms.store(ms, Ordering::Release);
    }

    /// How far the store is durable, for readers that must not pass it
    /// (forwarders: an event sent off the host before it is on this host's
    /// disk could be lost here by a power cut and its seq reused).
    pub fn durable(&self) -> DurableSeq {
        DurableSeq(Arc::clone(&self.shared))
    }

    /// The store's chain id (`metadata.uid` prefix).
    #[allow(dead_code, reason = "for `warden status`; not wired yet")]
    pub fn chain_id(&self) -> &str {
        &self.shared.chain_id
    }

    /// Id of the key that signs this writer's checkpoints.
    pub fn key_id(&self) -> &str {
        &self.shared.key_id
    }

    /// Writer counters.
    #[allow(dead_code, reason = "for `warden status`; not wired yet")]
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.commits.load(Ordering::Acquire),
            failed_commits: self.shared.failed_commits.load(Ordering::Acquire),
            events: self.shared.events.load(Ordering::Acquire),
            checkpoints: self.shared.checkpoints.load(Ordering::Acquire),
            last_seq: self.shared.last_seq.load(Ordering::Acquire),
            durable_seq: self.shared.durable_seq.load(Ordering::Acquire),
            detached_backlog: self.shared.detached_backlog.load(Ordering::Acquire),
            detached_overflowed: self.shared.detached_overflowed.load(Ordering::Acquire),
            detached_lost: self.shared.detached_lost.load(Ordering::Acquire),
        }
    }

    /// Stop the writer: everything queued before and during the shutdown is
    /// still committed and answered, then a final checkpoint is signed (if
    /// events were recorded since the last one); later `record`s fail with
    /// [`AuditError::Closed`]. Resolves when the store is closed.
    pub async fn shutdown(self) {
        let (done, finished) = oneshot::channel();
        // Behind any records still in the overflow queue.
        if let Some(msg) = self.behind_overflow(Msg::Shutdown { done })
            && self.tx.send(msg).await.is_err()
        {
            return;
        }
        // An Err only means the writer already stopped.
        let _ = finished.await;
    }
}

/// The highest seq on stable storage, readable without keeping the writer
/// alive (see [`AuditHandle::durable`]).
#[derive(Clone)]
pub struct DurableSeq(Arc<Shared>);

impl DurableSeq {
    /// Every event with a seq at or below this is durable.
    pub fn get(&self) -> u64 {
        self.0.durable_seq.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for DurableSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DurableSeq").field(&self.get()).finish()
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
