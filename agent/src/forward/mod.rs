//! Forwarding: every audit event, checkpoints included, shipped off the host
//! at least once, to the collectors and SIEMs a security team already runs.
//!
//! This module owns the `[[forward]]` outputs ([`Forwarders`]): for each
//! one a dedicated thread that reads events in seq order from the store
//! over a read-only connection ([`source::EventSource`]), formats them
//! ([`format`]: `ocsf`, `ecs`, `cef`), batches them by count, bytes and
//! time, hands each batch to the output's sink and, only once the sink
//! reports the batch acknowledged, advances the output's cursor in
//! `forward_cursors` ([`source::Cursor`]). Sinks:
//! - [`http`]: `https` (NDJSON POST), `splunk-hec` (with indexer
//!   acknowledgment), `elasticsearch` (`_bulk` `create`, `_id` = uid);
//! - [`syslog`]: RFC 5424 over TLS (RFC 5425 octet counting), TCP, UDP;
//!   best effort: the cursor advances once the batch is written to the
//!   socket, since syslog has no acknowledgment;
//! - [`file`]: rotating NDJSON on local disk (written and fsynced).
//!
//! Delivery semantics:
//! - at least once, in seq order per output; duplicates (a batch resent
//!   after a lost acknowledgment or a crash) carry the same
//!   `metadata.uid` (`chain_id:seq`), so collectors drop them;
//! - a collector outage only grows the backlog: the store is the buffer and
//!   retention never prunes what an output has not acknowledged; memory per
//!   output stays within one batch whatever the backlog;
//! - failures that may pass (network errors, timeouts, HTTP 408/429/5xx)
//!   are retried with exponential backoff and jitter, honouring
//!   `Retry-After`; failures that will not (other 4xx: bad token, bad
//!   request) park the output with an error in the log and in
//!   `warden status` instead of looping; the backlog then grows until the
//!   configuration is fixed and the agent restarted;
//! - a restart resumes from the cursor; a SIGKILL between the
//!   acknowledgment and the cursor update resends that batch.
//!
//! Threads rather than async tasks: reading SQLite and writing the cursor
//! are blocking calls, and one thread per output keeps a slow collector
//! from ever touching the proxy's runtime. HTTP goes through `ureq`
//! (rustls with ring, already used for JWKS), so no second HTTP stack is
//! built in.

pub mod file;
pub mod format;
pub mod http;
pub mod source;
pub mod syslog;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audit::DurableSeq;
use crate::config::{Forward, ForwardFormat, ForwardKind};
use source::{Cursor, EventSource, now_ms};

/// Everything that can go wrong setting up or running an output.
#[derive(thiserror::Error, Debug)]
pub enum ForwardError {
    /// A file the output needs (CA, client certificate, key, token) cannot
    /// be used.
    #[error("forward {output}: {what} {path}: {detail}", path = path.display())]
    File {
        output: String,
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// The output's TLS settings are unusable.
    #[error("forward {output}: TLS: {detail}")]
    Tls { output: String, detail: String },
    /// The audit store cannot be read.
    #[error("forward: cannot {op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: Box<crate::audit::AuditError>,
    },
    /// Reading events failed.
    #[error("forward: reading events failed: {source}")]
    Read {
        #[source]
        source: rusqlite::Error,
    },
    /// The cursor table cannot be read or written.
    #[error("forward: cursor in {path} ({op}): {source}", path = path.display())]
    Cursor {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The output's thread could not be started.
    #[error("forward {output}: cannot start its thread: {source}")]
    Spawn {
        output: String,
        #[source]
        source: std::io::Error,
    },
}

/// Shortest pause after a failure.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Pause between reads when the output is caught up.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Pause between reads while a batch waits to fill.
const FILL_POLL: Duration = Duration::from_millis(20);
/// Least time between two backlog warnings in the log.
const BACKLOG_WARN_EVERY: Duration = Duration::from_secs(60);

/// One event of a batch, formatted for its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub time_ms: i64,
    /// `chain_id:seq`, the idempotency key.
    pub uid: String,
    /// A refusal or other non-allowed decision (syslog severity warning).
    pub notable: bool,
    /// The event in the output's format, without a line terminator.
    pub line: Vec<u8>,
    /// Already acknowledged while the batch is retried (Elasticsearch
    /// items that succeeded in an earlier attempt).
    pub done: bool,
}

/// Events handed to a sink together; acknowledged as a whole.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    /// Sum of the formatted lines' sizes.
    pub bytes: usize,
}

impl Batch {
    /// Seq range `first..=last` (None when empty).
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.items.first()?.seq, self.items.last()?.seq))
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// May pass: try again after a pause (at least `after` when the
    /// collector said so).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Will not pass by retrying: stop the output.
    Park { error: String },
}

/// An output's transport: delivers a batch, returning only once it is
/// acknowledged (or written, for best-effort kinds).
pub trait Sink: Send {
    /// Deliver every item of `batch` not yet `done`. `Ok` means all are
    /// acknowledged. A sink that acknowledges per item sets `done` on those
    /// that were, so a retry sends only the rest.
    fn deliver(&mut self, batch: &mut Batch, stop: &Stop) -> Result<(), Failure>;
}

/// Stop signal shared by the outputs: first *draining* (finish what is in
/// the store, then end), then *stopped* once the grace period is over.
#[derive(Default)]
pub struct Stop {
    state: Mutex<StopState>,
    cv: Condvar,
}

#[derive(Default)]
struct StopState {
    draining: bool,
    deadline: Option<Instant>,
}

impl Stop {
    fn lock(&self) -> std::sync::MutexGuard<'_, StopState> {
        // Plain flags: a poisoned lock still holds consistent values.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Start draining; stop for good after `grace`.
    pub fn request(&self, grace: Duration) {
        let mut st = self.lock();
        st.draining = true;
        st.deadline = Some(Instant::now() + grace);
        self.cv.notify_all();
    }

    /// Draining: end once nothing is left to send.
    pub fn draining(&self) -> bool {
        self.lock().draining
    }

    /// The grace period is over: end now.
    pub fn stopped(&self) -> bool {
        self.lock().deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleep up to `d`; false when the output must end now. Wakes early
    /// when a stop is requested, so a draining output can send at once.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.lock();
        let was_draining = st.draining;
        loop {
            let now = Instant::now();
            if st.deadline.is_some_and(|dl| now >= dl) {
                return false;
            }
            if now >= until || st.draining != was_draining {
                return true;
            }
            let mut wait = until - now;
            if let Some(dl) = st.deadline {
                wait = wait.min(dl - now);
            }
            st = self
                .cv
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// Exponential backoff with jitter.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            next: BACKOFF_START,
            max: max.max(BACKOFF_START),
        }
    }

    /// The pause before the next attempt: `Retry-After` when the
    /// collector gave one (capped at an hour), else the current step
    /// with jitter (between half and all of it), doubling up to `max`.
    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(MAX_RETRY_AFTER);
        }
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=jitter_ms))
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// What `warden status` shows for one output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardStatus {
    pub name: String,
    pub kind: String,
    pub format: String,
    /// URL, address or path (never credentials).
    pub destination: String,
    /// `starting`, `idle`, `sending`, `retrying`, `parked`, `stopped`.
    pub state: String,
    /// Every event up to this seq was acknowledged.
    pub acked_seq: u64,
    /// Events stored but not yet acknowledged.
    pub backlog: u64,
    pub backlog_warn: u64,
    /// `backlog > backlog_warn`.
    pub backlog_over_warn: bool,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub last_ack_ms: Option<i64>,
    /// Events acknowledged since the agent started.
    pub events_acked: u64,
    pub batches_acked: u64,
    /// Failed delivery attempts since the agent started.
    pub failures: u64,
}

/// One output's live state.
struct OutputShared {
    status: Mutex<ForwardStatus>,
}

impl OutputShared {
    fn update(&self, f: impl FnOnce(&mut ForwardStatus)) {
        let mut g = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g);
    }

    fn snapshot(&self) -> ForwardStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The running outputs.
pub struct Forwarders {
    outputs: Vec<Arc<OutputShared>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: Arc<Stop>,
    finished: Arc<AtomicBool>,
}

/// How an output runs, apart from its sink.
#[derive(Debug, Clone)]
struct Plan {
    name: String,
    format: ForwardFormat,
    max_events: usize,
    max_bytes: usize,
    wait: Duration,
    retry_max: Duration,
    backlog_warn: u64,
}

impl Forwarders {
    /// Build every output's sink (reading its CA, certificates and
    /// credentials now, so a broken file stops the start) and start one
    /// thread per output reading the store at `store`. `host` names this
    /// machine in syslog headers and HEC events. With `durable` (the
    /// writer's [`DurableSeq`]), no event is read before it is on disk.
    pub fn start(
        outputs: &[Forward],
        store: &Path,
        host: &str,
        durable: Option<DurableSeq>,
    ) -> Result<Self, ForwardError> {
        let mut built = Vec::new();
        for f in outputs {
            built.push((f, build_sink(f, host)?));
        }
        warn_stale_cursors(outputs, store);
        Self::spawn(built, store, durable)
    }

    /// Start one thread per `(output, sink)`.
    pub(crate) fn spawn(
        built: Vec<(&Forward, Box<dyn Sink>)>,
        store: &Path,
        durable: Option<DurableSeq>,
    ) -> Result<Self, ForwardError> {
        let stop = Arc::new(Stop::default());
        let mut shared = Vec::new();
        let mut threads = Vec::new();
        for (f, sink) in built {
            let out = Arc::new(OutputShared {
                status: Mutex::new(ForwardStatus {
                    name: f.name.clone(),
                    kind: f.kind.as_str().to_owned(),
                    format: f.format.as_str().to_owned(),
                    destination: destination(f),
                    state: "starting".into(),
                    acked_seq: 0,
                    backlog: 0,
                    backlog_warn: f.backlog_warn,
                    backlog_over_warn: false,
                    last_error: None,
                    last_error_ms: None,
                    last_ack_ms: None,
                    events_acked: 0,
                    batches_acked: 0,
                    failures: 0,
                }),
            });
            let plan = Plan {
                name: f.name.clone(),
                format: f.format,
                max_events: f.batch_max_events.max(1),
                max_bytes: f.batch_max_bytes.max(1),
                wait: Duration::from_millis(f.batch_wait_ms),
                retry_max: Duration::from_secs(f.retry_max_secs),
                backlog_warn: f.backlog_warn,
            };
            let (o, st, path) = (Arc::clone(&out), Arc::clone(&stop), store.to_owned());
            let durable = durable.clone();
            let handle = std::thread::Builder::new()
                .name(format!("warden-fwd-{}", f.name))
                .spawn(move || run_output(plan, sink, &path, durable, &o, &st))
                .map_err(|source| ForwardError::Spawn {
                    output: f.name.clone(),
                    source,
                })?;
            shared.push(out);
            threads.push(handle);
        }
        Ok(Self {
            outputs: shared,
            threads: Mutex::new(threads),
            stop,
            finished: Arc::new(AtomicBool::new(false)),
        })
    }

    /// No outputs at all.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Every output's status. With `head_seq` (the store's last seq, from
    /// the writer) the backlog is exact as of now; without, as of the
    /// output's last read.
    pub fn status(&self, head_seq: Option<u64>) -> Vec<ForwardStatus> {
        self.outputs
            .iter()
            .map(|o| {
                let mut s = o.snapshot();
                if let Some(head) = head_seq {
                    s.backlog = head.saturating_sub(s.acked_seq);
                    s.backlog_over_warn = s.backlog > s.backlog_warn;
                }
                s
            })
            .collect()
    }

    /// Stop: each output sends what the store holds (the writer's final
    /// checkpoint included, when the writer stopped first) and ends, or is
    /// abandoned after `grace`; what it did not send goes at the next
    /// start. Blocks up to `grace` plus a moment.
    pub fn shutdown(&self, grace: Duration) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.request(grace);
        let threads: Vec<_> = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let deadline = Instant::now() + grace + Duration::from_millis(500);
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                if t.join().is_err() {
                    tracing::error!("a forward thread panicked");
                }
            } else {
                // Blocked in a network call bounded by timeout_secs; the
                // process exit ends it. Its batch is resent next time.
                tracing::warn!("a forward output did not stop within its grace period");
            }
        }
    }
}

/// Cursors of outputs no longer configured hold every later event back
/// from retention: say so (they are never removed silently: a typo in a
/// name must not let retention delete what was never shipped).
fn warn_stale_cursors(outputs: &[Forward], store: &Path) {
    let Ok(names) = EventSource::open(store).and_then(|s| s.cursor_names()) else {
        return;
    };
    for n in names {
        if !outputs.iter().any(|f| f.name == n) {
            tracing::warn!(
                forward.output = %n,
                "the audit store has a forward cursor for an output that is not configured; \
                 it holds retention back (delete its row from forward_cursors if the output \
                 is gone for good)"
            );
        }
    }
}

/// URL, address or path of `f`, for status and logs.
fn destination(f: &Forward) -> String {
    match f.kind {
        ForwardKind::Https | ForwardKind::SplunkHec | ForwardKind::Elasticsearch => {
            f.url.clone().unwrap_or_default()
        }
        ForwardKind::Syslog => format!(
            "{}://{}",
            f.transport
                .unwrap_or(crate::config::SyslogTransport::Tls)
                .as_str(),
            f.address.clone().unwrap_or_default()
        ),
        ForwardKind::File => f
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

fn build_sink(f: &Forward, host: &str) -> Result<Box<dyn Sink>, ForwardError> {
    Ok(match f.kind {
        ForwardKind::Https => Box::new(http::HttpsSink::new(f)?),
        ForwardKind::SplunkHec => Box::new(http::HecSink::new(f, host)?),
        ForwardKind::Elasticsearch => Box::new(http::EsSink::new(f)?),
        ForwardKind::Syslog => Box::new(syslog::SyslogSink::new(f, host)?),
        ForwardKind::File => Box::new(file::FileSink::new(f)?),
    })
}

/// Run one output until stopped (see [`Stop`]).
fn run_output(
    plan: Plan,
    mut sink: Box<dyn Sink>,
    store: &Path,
    durable: Option<DurableSeq>,
    out: &OutputShared,
    stop: &Stop,
) {
    let name = plan.name.as_str();
    let mut backoff = Backoff::new(plan.retry_max);
    // Open the store; a failure here (locked, damaged) is retried like any.
    let (source, cursor) = loop {
        match EventSource::open(store)
            .map(|s| s.bounded(durable.clone()))
            .and_then(|s| Ok((s, Cursor::open(store, name)?)))
        {
            Ok(sc) => break sc,
            Err(e) => {
                note_failure(out, name, &e.to_string(), "retrying");
                if !stop.sleep(backoff.delay(None)) || stop.draining() {
                    out.update(|s| s.state = "stopped".into());
                    return;
                }
            }
        }
    };
    let mut acked = match cursor.load() {
        Ok(a) => a,
        Err(e) => {
            note_failure(out, name, &e.to_string(), "parked");
            tracing::error!(forward.output = name, error = %e, "forward output parked: cannot read its cursor");
            out.update(|s| s.state = "stopped".into());
            return;
        }
    };
    backoff.reset();
    out.update(|s| {
        s.acked_seq = acked;
        s.state = "idle".into();
    });
    tracing::info!(
        forward.output = name,
        forward.acked_seq = acked,
        "forward output started"
    );
    let mut cursor_dirty = false;
    let mut last_warn: Option<Instant> = None;
    let mut expected_next = acked + 1;

    'outer: while let Some(mut batch) = collect(&plan, &source, acked, out, stop, &mut last_warn) {
        let Some((first, last)) = batch.range() else {
            break;
        };
        if first != expected_next {
            tracing::warn!(
                forward.output = name,
                forward.missing_from = expected_next,
                forward.missing_to = first - 1,
                "forward: events are no longer in the store (pruned before this output \
                 acknowledged them, e.g. an output added after retention ran)"
            );
        }
        out.update(|s| s.state = "sending".into());
        loop {
            match sink.deliver(&mut batch, stop) {
                Ok(()) => break,
                Err(Failure::Retry { error, after }) => {
                    note_failure(out, name, &error, "retrying");
                    // An outage is when the backlog grows: say so.
                    backlog_check(&plan, &source, acked, out, &mut last_warn);
                    let pause = backoff.delay(after);
                    tracing::warn!(
                        forward.output = name,
                        forward.first_seq = first,
                        forward.last_seq = last,
                        forward.retry_in_ms = pause.as_millis() as u64,
                        error = %error,
                        "forward: batch not acknowledged; will retry"
                    );
                    if !stop.sleep(pause) {
                        break 'outer;
                    }
                }
                Err(Failure::Park { error }) => {
                    note_failure(out, name, &error, "parked");
                    tracing::error!(
                        forward.output = name,
                        forward.first_seq = first,
                        forward.last_seq = last,
                        error = %error,
                        "FORWARD OUTPUT PARKED: the collector refused the batch and retrying \
                         cannot help; events are kept in the store (the backlog grows) until \
                         the configuration is fixed and Warden restarted"
                    );
                    park(out, &source, acked, stop);
                    break 'outer;
                }
            }
        }
        backoff.reset();
        acked = last;
        expected_next = last + 1;
        match cursor.advance(acked) {
            Ok(()) => cursor_dirty = false,
            Err(e) => {
                // Delivery goes on; the next success writes it again. A
                // crash before then only resends.
                cursor_dirty = true;
                note_failure(out, name, &e.to_string(), "sending");
            }
        }
        let n = batch.items.len() as u64;
        out.update(|s| {
            s.acked_seq = acked;
            s.last_ack_ms = Some(now_ms());
            s.events_acked += n;
            s.batches_acked += 1;
            s.state = "idle".into();
        });
    }
    if cursor_dirty && let Err(e) = cursor.advance(acked) {
        tracing::error!(forward.output = name, error = %e, "forward: cursor not saved; the last batch will be sent again");
    }
    out.update(|s| s.state = "stopped".into());
    tracing::info!(
        forward.output = name,
        forward.acked_seq = acked,
        "forward output stopped"
    );
}

fn note_failure(out: &OutputShared, _name: &str, error: &str, state: &str) {
    out.update(|s| {
        s.last_error = Some(error.to_owned());
        s.last_error_ms = Some(now_ms());
        s.failures += 1;
        s.state = state.to_owned();
    });
}

/// A parked output keeps reporting its backlog until the agent stops.
fn park(out: &OutputShared, source: &EventSource, acked: u64, stop: &Stop) {
    while !stop.draining() {
        if let Ok(head) = source.head() {
            out.update(|s| {
                s.backlog = head.saturating_sub(acked);
                s.backlog_over_warn = s.backlog > s.backlog_warn;
            });
        }
        if !stop.sleep(Duration::from_secs(1)) {
            return;
        }
    }
}

/// The next batch after `acked`: returns when it is full (events or
/// bytes), when `wait` has passed since its first event was read, or when
/// stopping. `None` when the output must end (stopped, or draining with
/// nothing left).
fn collect(
    plan: &Plan,
    source: &EventSource,
    acked: u64,
    out: &OutputShared,
    stop: &Stop,
    last_warn: &mut Option<Instant>,
) -> Option<Batch> {
    let mut batch = Batch::default();
    let mut after = acked;
    let mut first_at: Option<Instant> = None;
    let mut read_failures = 0u32;
    loop {
        if stop.stopped() {
            return None;
        }
        let room = plan.max_events - batch.items.len();
        // An empty batch takes one event of any size; else what fits.
        let bytes_left = if batch.items.is_empty() {
            plan.max_bytes
        } else {
            plan.max_bytes.saturating_sub(batch.bytes)
        };
        let mut full = bytes_left == 0;
        let read = if full {
            Ok((Vec::new(), true))
        } else {
            source.read_bounded(after, room, bytes_left)
        };
        match read {
            Ok((rows, bytes_full)) => {
                read_failures = 0;
                full |= bytes_full;
                for r in rows {
                    let uid = format!("{}:{}", source.chain_id(), r.seq);
                    let line = format::format_event(plan.format, r.data, &uid, r.seq);
                    batch.bytes += line.len();
                    after = r.seq;
                    batch.items.push(Item {
                        seq: r.seq,
                        time_ms: r.time_ms,
                        uid,
                        notable: !matches!(r.decision.as_str(), "allowed" | "n/a"),
                        line,
                        done: false,
                    });
                }
            }
            Err(e) => {
                read_failures += 1;
                note_failure(out, &plan.name, &e.to_string(), "retrying");
                if read_failures == 1 {
                    tracing::warn!(forward.output = plan.name, error = %e, "forward: reading the store failed; retrying");
                }
            }
        }
        if !batch.items.is_empty() && first_at.is_none() {
            first_at = Some(Instant::now());
            backlog_check(plan, source, acked, out, last_warn);
        }
        let full = full || batch.items.len() >= plan.max_events || batch.bytes >= plan.max_bytes;
        let due = first_at.is_some_and(|t| t.elapsed() >= plan.wait);
        if full || due || (!batch.items.is_empty() && stop.draining()) {
            return Some(batch);
        }
        if batch.items.is_empty() {
            if stop.draining() {
                return None;
            }
            backlog_check(plan, source, acked, out, last_warn);
        }
        let pause = if batch.items.is_empty() {
            IDLE_POLL
        } else {
            FILL_POLL
        };
        if !stop.sleep(pause) {
            return None;
        }
    }
}

/// Update the backlog in the status and warn (at most once a minute)
/// while it is over `backlog_warn`.
fn backlog_check(
    plan: &Plan,
    source: &EventSource,
    acked: u64,
    out: &OutputShared,
    last_warn: &mut Option<Instant>,
) {
    let Ok(head) = source.head() else { return };
    let backlog = head.saturating_sub(acked);
    let over = backlog > plan.backlog_warn;
    out.update(|s| {
        s.backlog = backlog;
        s.backlog_over_warn = over;
    });
    if over && last_warn.is_none_or(|t| t.elapsed() >= BACKLOG_WARN_EVERY) {
        *last_warn = Some(Instant::now());
        tracing::warn!(
            forward.output = plan.name,
            forward.backlog = backlog,
            forward.backlog_warn = plan.backlog_warn,
            "forward backlog over its warning level: the collector is not keeping up or \
             not reachable (events are kept in the store)"
        );
    }
}

#[cfg(test)]
mod tests;
