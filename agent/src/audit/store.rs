//! The SQLite audit store, its single writer, and the writer's side of the
//! hash chain, signed checkpoints and retention.
//!
//! One dedicated OS thread owns the read-write connection (rusqlite is
//! blocking). Producers encode their event into a [`SeqTemplate`] (OCSF
//! JSON with the seq left open; the costly part, done in parallel on the
//! producers' threads) and hand it over a bounded channel through
//! [`AuditHandle::record`] / [`AuditHandle::record_config`] /
//! [`AuditHandle::record_statement`]; the writer takes everything queued
//! (up to `batch_max`), assigns gap-free sequence numbers, splices each seq
//! into its template, hashes the resulting bytes into the chain, inserts
//! the batch in ONE transaction (group commit) and only then answers each
//! producer. So a successful `record` means the event is committed (durable
//! with [`SyncMode::Full`]): audit before effect. With FULL the fsync is
//! not made inside the commit: a second thread ([`WalSyncer`]) fsyncs the
//! WAL and answers the producers of every commit it covers while the
//! writer goes on with the next batch (pipelined group commit).
//!
//! [`AuditHandle::record_statement_detached`] (a statement's result phase)
//! queues without waiting for the commit and never blocks: when the channel
//! is full the event waits in an in-memory overflow queue drained in order
//! by one task (records queued meanwhile, awaited or not, go behind it, so
//! the order is kept and producers that await are still held back by the
//! writer's pace). Nothing is dropped silently: an event that cannot be
//! stored is logged as an error and counted ([`WriterStats::detached_lost`]).
//! A bounded `try_send` that drops on a full channel was rejected: it would
//! lose evidence exactly under load.
//!
//! Detached records do not wake the writer (issue 17, lever 4): they are
//! left in a [`LazyQueue`] that the writer empties into each batch before
//! the channel's records (a producer's detached record is queued before
//! its next awaited one, so its order is kept). While records come the
//! writer sleeps at most [`DETACHED_LINGER`] at a time, so a detached
//! record waits no longer than before; only once the writer sleeps with no
//! deadline does a detached record wake it. Under load a statement then
//! costs one writer wake-up (its request) instead of two.
//!
//! If a commit fails, every event of that batch gets an error, their
//! sequence numbers are reused by the next batch (no gaps), the in-memory
//! chain state is left as it was before the batch, the handle reports
//! unhealthy, and the writer carries on with the next batch.
//!
//! WAL checkpoints (copying committed pages from the `-wal` file into the
//! database): SQLite's automatic checkpoint in the writer is off. A second
//! thread with its own connection runs a PASSIVE checkpoint whenever the
//! writer has committed a couple of MiB since the last one (and every few
//! seconds); it copies the bulk while the writer goes on. Then the writer
//! copies the few frames committed meanwhile itself, so its next
//! transaction restarts the WAL from the beginning: the file is reused
//! rather than grown, which keeps each commit's writes and fsync cheap
//! (see `Writer::wal_maintenance`). Readers never block either.
//!
//! Checkpoints (see [`super::checkpoint`]): after every `checkpoint_every`
//! recorded events (inside the same transaction as the event that reaches
//! the count), every `checkpoint_interval` if events were recorded since
//! the last one, and when the writer stops. A checkpoint covering seq N is
//! itself event N + 1 of the chain and a row of `checkpoints`, written in
//! one transaction. Recorded events therefore get gap-free seqs except for
//! the seqs taken by checkpoints (and prunes).
//!
//! Retention ([`Retention`]): at start and then every `Retention::every`
//! (daily), the writer deletes events that are older than the retention AND
//! acknowledged by every forwarder (`forward_cursors`; no row = nothing held
//! back), but only up to a checkpoint whose event is kept, so the remaining
//! chain starts right after a signed head (see `Writer::prune_step`).
//! The deletion and a *prune* event recording it are one transaction.
//!
//! Schema (version [`SCHEMA_VERSION`]):
//! - `meta(key, value)`: `schema_version`, `chain_id` (hex of 16 random
//!   bytes, fixed when the store is created; the `metadata.uid` prefix);
//! - `events`: one row per event, `seq` gap-free from 1 (or from just after
//!   the last prune), a few indexed columns for the CLI (derived from
//!   `data`), `data` = the exact OCSF JSON bytes, `hash` = the chain hash
//!   over `data` (see [`super::chain`]);
//! - `checkpoints`: every signed checkpoint, in signing order (never
//!   pruned: they are small and keep the signed history linked);
//! - `keys`: every public key that signed checkpoints of this store;
//! - `forward_cursors(name, acked_seq, updated_ms)`: how far each forwarder
//!   has been acknowledged (written by forwarders; read by retention).
//!
//! Version 1 (no `hash`, no checkpoints) is migrated in place at open, in one
//! transaction that hashes the existing rows in seq order; version 2 gains
//! `forward_cursors` and a partial `decision` index (only decisions other
//! than `allowed` are indexed: the common case costs no index update, and
//! `tail --decision allowed` finds its rows by scanning from the end);
//! version 3 loses the account index (`tail --account` scans from the end:
//! the index cost a third of every append). New stores use 8 KiB pages.
//! Newer or unknown versions are refused.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{
    CachedStatement, Connection, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::chain::{ChainKey, GENESIS, Hash, as_hash, event_hash, sha256};
use super::checkpoint::{Checkpoint, CheckpointBody, CheckpointSigner, ORIGIN_PREFIX, known_keys};
use super::event::{
    ApprovalEvent, ConfigChange, ConnectionEvent, PruneRecord, StatementDecision, StatementEvent,
    StatementPhase,
};
use super::ocsf::{APPROVAL_ACTIVITY, CLASS_UID_USER_ACCESS_MANAGEMENT, approval_template};
use super::ocsf::{
    CHECKPOINT_ACTIVITY, CLASS_UID_APPLICATION_LIFECYCLE, CLASS_UID_DATASTORE_ACTIVITY,
    CLASS_UID_DEVICE_CONFIG_STATE_CHANGE, CLASS_UID_NETWORK_ACTIVITY, CONFIG_ACTIVITY, NO_DECISION,
    PRUNE_ACTIVITY, SeqTemplate, activity_str, config_template, connection_template,
    encode_checkpoint, encode_prune, statement_activity_str,
};

/// Version of the store layout written by this build.
pub const SCHEMA_VERSION: i64 = 5;
/// Capacity of the channel between producers and the writer.
pub const CHANNEL_CAPACITY: usize = 8192;
/// How long SQLite waits on a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`WriterOptions::batch_max`].
pub const DEFAULT_BATCH_MAX: usize = 256;
/// Default [`WriterOptions::checkpoint_every`].
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Default [`WriterOptions::checkpoint_interval`].
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Most events one prune step deletes (when a checkpoint allows a cut that
/// small), so a large backlog is pruned in steps between event batches.
pub const PRUNE_STEP_MAX: u64 = 20_000;

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_CHAIN_ID: &str = "chain_id";

/// Rows hashed per step of the v1 → v2 migration.
const MIGRATION_CHUNK: usize = 1024;
/// Event bytes committed between two requests to the WAL checkpointer
/// (the WAL then holds about twice that: whole pages, index pages). Small
/// enough that the WAL file is soon reused from its start instead of
/// growing, which makes each commit's fsync cheaper.
const WAL_CHECKPOINT_BYTES: usize = 2 << 20;
/// The WAL checkpointer also runs this long after its last run.
const WAL_CHECKPOINT_PERIOD: Duration = Duration::from_secs(5);
/// Pause between the steps of a prune that was capped at
/// [`PRUNE_STEP_MAX`].
const PRUNE_STEP_PAUSE: Duration = Duration::from_secs(1);
/// Page cache of the writer connection, in KiB.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// Page size of a new store, in bytes.
const PAGE_SIZE: i64 = 8 * 1024;
/// Longest a batch of detached records alone (statement results nobody
/// awaits) waits for an awaited record to share its commit with.
const DETACHED_LINGER: Duration = Duration::from_millis(5);
/// Longest the writer sleeps between checks for due checkpoints/prunes.
const MAX_TICK: Duration = Duration::from_secs(1);

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

/// Applied to a v1 store, and to a new store after [`SCHEMA_V1`], so both
/// end up with the same layout.
const SCHEMA_V1_TO_V2: &str = "
ALTER TABLE events ADD COLUMN hash BLOB NOT NULL DEFAULT x''; -- chain hash over data
CREATE TABLE checkpoints (
    id        INTEGER PRIMARY KEY,  -- 1, 2, ... in signing order
    size      INTEGER NOT NULL,     -- last seq covered; the checkpoint is event size + 1
    head_hash BLOB NOT NULL,        -- hash of event `size`
    time_ms   INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,        -- SHA-256 of the previous body; empty for the first
    key_id    TEXT NOT NULL,
    body      BLOB NOT NULL,        -- the exact signed bytes (canonical JSON)
    signature BLOB NOT NULL         -- Ed25519 over body
);
CREATE TABLE keys (
    key_id     TEXT PRIMARY KEY NOT NULL,  -- hex of SHA-256(public_key)[..16]
    public_key BLOB NOT NULL,              -- raw 32-byte Ed25519 public key
    added_ms   INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Applied to a v2 store (and to a new one after the above).
const SCHEMA_V2_TO_V3: &str = "
CREATE TABLE forward_cursors (
    name       TEXT PRIMARY KEY,  -- forwarder name
    acked_seq  INTEGER,           -- every event with seq <= acked_seq was acknowledged
    updated_ms INTEGER
);
DROP INDEX events_decision;
CREATE INDEX events_decision ON events(decision, seq) WHERE decision <> 'allowed';
";

/// Applied to a v3 store (and to a new one after the above): the account
/// index goes. Its entries land on as many leaf pages as there are
/// accounts in a batch, each rewritten whole into the WAL at every commit;
/// on this kind of host that was a third of the append cost. `tail
/// --account` scans from the end instead.
const SCHEMA_V3_TO_V4: &str = "DROP INDEX IF EXISTS events_account;";

/// Version 5: `data` of a statement event may be a compact canonical
/// record (see [`super::record`]) instead of OCSF JSON. The layout does not
/// change and stored rows are left as they are (their bytes are chained
/// and signed): the version only keeps builds that would misread the
/// records away from the store.
const SCHEMA_V4_TO_V5: &str = "-- data may hold compact statement records";

const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, time_ms, class_uid, activity, decision, account, target, session, reason, data, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const INSERT_CHECKPOINT: &str = "INSERT INTO checkpoints \
    (size, head_hash, time_ms, prev_hash, key_id, body, signature) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

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
    /// ([`AuditHandle::record_statement`] of class `read`) is answered once
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
    fn pragma_value(self) -> &'static str {
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

/// How the writer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// SQLite `synchronous` of the writer connection.
    pub sync: SyncMode,
    /// Most events per transaction (at least 1).
    pub batch_max: usize,
    /// Goes into each event's `device.hostname` (omitted when empty).
    pub host: String,
    /// Sign a checkpoint after this many recorded events; 0 = never by
    /// count.
    pub checkpoint_every: u64,
    /// Sign a checkpoint this long after the last one if events were
    /// recorded since; zero = never by time.
    pub checkpoint_interval: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Full,
            batch_max: DEFAULT_BATCH_MAX,
            host: String::new(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// How long events are kept (`[audit] retention_days`), and how often the
/// writer prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this may be pruned.
    pub max_age: Duration,
    /// The writer prunes at start and then this often.
    pub every: Duration,
}

impl Retention {
    /// Default `retention_days`.
    pub const DEFAULT_DAYS: u32 = 400;

    /// Keep events `days` days; prune daily.
    pub fn days(days: u32) -> Self {
        Self {
            max_age: Duration::from_secs(u64::from(days) * 86_400),
            every: Duration::from_secs(86_400),
        }
    }

    fn max_age_ms(&self) -> i64 {
        i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::days(Self::DEFAULT_DAYS)
    }
}

/// What one prune step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Events older than this were eligible (ms since the Unix epoch).
    pub cutoff_ms: i64,
    /// Lowest seq acknowledged by every forwarder (`None`: no forwarder
    /// holds events back).
    pub acked_through: Option<u64>,
    /// Seqs removed (`from..=through`), `None` when nothing was removed.
    pub removed: Option<(u64, u64)>,
    /// Rows removed.
    pub events_removed: u64,
    /// Seq of the prune event recorded for this step.
    pub prune_seq: Option<u64>,
    /// More events can be pruned now (this step was capped at
    /// [`PRUNE_STEP_MAX`]).
    pub more: bool,
    /// Events are past retention but were NOT pruned because the chain
    /// they are part of does not verify (evidence is never deleted):
    /// why.
    pub refused: Option<String>,
}

impl PruneReport {
    fn nothing(cutoff_ms: i64, acked_through: Option<u64>) -> Self {
        Self {
            cutoff_ms,
            acked_through,
            removed: None,
            events_removed: 0,
            prune_seq: None,
            more: false,
            refused: None,
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
    /// Recorded events committed (checkpoint and prune events not included).
    pub events: u64,
    /// Checkpoints signed and committed by this writer.
    pub checkpoints: u64,
    /// Highest committed `seq` (0 when the store is empty).
    pub last_seq: u64,
    /// Highest `seq` known to be on stable storage: with
    /// [`SyncMode::Full`], the WAL was fsynced after it was committed;
    /// with [`SyncMode::Normal`], the same as `last_seq`.
    pub durable_seq: u64,
    /// Records waiting in the in-memory overflow queue now (see
    /// [`AuditHandle::record_statement_detached`]).
    pub detached_backlog: u64,
    /// Detached records that found the writer's channel full (total).
    pub detached_overflowed: u64,
    /// Detached records that could not be stored (each logged as an
    /// error).
    pub detached_lost: u64,
}

struct Shared {
    healthy: AtomicBool,
    /// The last fsync of the WAL failed (only with [`WalSyncer`]).
    sync_failed: AtomicBool,
    /// Highest seq known to be on stable storage (with
    /// [`SyncMode::Normal`]: committed).
    durable_seq: AtomicU64,
    /// Tests: this many next WAL fsyncs fail.
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicU32,
    /// Tests: every WAL fsync first sleeps this many ms.
    #[cfg(test)]
    sync_delay_ms: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    events: AtomicU64,
    checkpoints: AtomicU64,
    last_seq: AtomicU64,
    detached_backlog: AtomicU64,
    detached_overflowed: AtomicU64,
    detached_lost: AtomicU64,
    chain_id: String,
    key_id: String,
    host: String,
    /// The durability mode the writer runs with.
    mode: SyncMode,
    /// Woken whenever `durable_seq` advances or an fsync fails
    /// ([`AuditHandle::release_ready`] waits on it).
    durable_wake: tokio::sync::Notify,
    /// Seq ranges whose fsync failed (pipelined records answered early are
    /// then never released); only the most recent few are kept.
    sync_failures: std::sync::Mutex<Vec<(u64, u64)>>,
    // --- issue 17 lever 4: detached records do not wake the writer ---
    /// Detached records waiting for the writer's next batch.
    lazy: std::sync::Mutex<LazyQueue>,
    /// The writer sleeps with no deadline: a detached record must wake it
    /// (otherwise it finds them within [`DETACHED_LINGER`]).
    writer_parked: AtomicBool,
}

/// Detached records (statement and HTTP results nobody awaits) left for
/// the writer without a wake-up: it takes them at its next batch, before
/// the channel's records (so each producer's order is kept), and while
/// records come it never sleeps longer than [`DETACHED_LINGER`]. Only
/// when it sleeps with no deadline does a detached record wake it. At most
/// [`LAZY_MAX`] records; beyond, the channel (and its overflow queue) as
/// before.
#[derive(Default)]
struct LazyQueue {
    // Boxed as in `Msg` and `Pending`: records move between them unmoved.
    #[allow(clippy::vec_box)]
    records: Vec<Box<Prepared>>,
    /// The writer has stopped: nothing here will be committed any more.
    closed: bool,
}

/// Most detached records left in the [`LazyQueue`].
const LAZY_MAX: usize = CHANNEL_CAPACITY;

impl Shared {
    fn lazy(&self) -> std::sync::MutexGuard<'_, LazyQueue> {
        // Held for plain vector operations only; a poisoned lock still
        // holds a consistent queue.
        self.lazy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An event ready for the writer: its store columns and its encoding with
/// the seq left open.
struct Prepared {
    class_uid: u32,
    time_ms: i64,
    activity: &'static str,
    decision: &'static str,
    account: Option<String>,
    target: Option<String>,
    session: String,
    reason: Option<String>,
    body: Body,
    /// [`SyncMode::Pipelined`]: answer the producer once the record is
    /// committed (in the WAL), before its fsync; the producer then holds
    /// its answer back with [`AuditHandle::release_ready`].
    early: bool,
}

/// The stored bytes of a prepared event.
enum Body {
    /// OCSF JSON with the seq left open (spliced in by the writer).
    Template(SeqTemplate),
    /// A compact canonical record (see [`super::record`]): it holds no
    /// seq, so its bytes are final.
    Record(Vec<u8>),
}

impl Body {
    fn fill_into(&self, seq: u64, out: &mut Vec<u8>) {
        match self {
            Body::Template(t) => t.fill_into(seq, out),
            Body::Record(bytes) => out.extend_from_slice(bytes),
        }
    }
}

impl Prepared {
    fn connection(ev: ConnectionEvent, chain_id: &str, host: &str) -> Result<Self, AuditError> {
        let session = ev.session.to_string();
        let template = connection_template(&ev, &session, chain_id, host)?;
        Ok(Self {
            class_uid: CLASS_UID_NETWORK_ACTIVITY,
            time_ms: ev.time_ms,
            activity: activity_str(ev.activity),
            decision: ev.decision.as_str(),
            account: ev.account,
            target: ev.target,
            session,
            reason: ev.reason,
            body: Body::Template(template),
            early: false,
        })
    }

    /// A statement is stored as its compact record (the caller's facts are
    /// in its session's open event); `chain_id` is not part of it.
    fn statement(ev: &StatementEvent, chain_id: &str, host: &str) -> Result<Self, AuditError> {
        let session = ev.session.to_string();
        let body = Body::Record(super::record::encode_statement(ev, host));
        // Tests: write a statement as the OCSF JSON stores of schema 4 hold.
        #[cfg(test)]
        let body = if tests::LEGACY_JSON.with(std::cell::Cell::get) {
            Body::Template(super::ocsf::statement_template(
                ev, &session, chain_id, host,
            )?)
        } else {
            body
        };
        let _ = chain_id;
        Ok(Self {
            class_uid: CLASS_UID_DATASTORE_ACTIVITY,
            time_ms: ev.time_ms,
            activity: statement_activity_str(ev.phase),
            decision: ev.decision.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session,
            reason: ev.reason.clone(),
            body,
            early: false,
        })
    }

    fn approval(ev: &ApprovalEvent, chain_id: &str, host: &str) -> Result<Self, AuditError> {
        let session = ev.session.map(|s| s.to_string()).unwrap_or_default();
        let template = approval_template(ev, &session, chain_id, host)?;
        Ok(Self {
            class_uid: CLASS_UID_USER_ACCESS_MANAGEMENT,
            time_ms: ev.time_ms,
            activity: APPROVAL_ACTIVITY,
            decision: ev.status.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session,
            reason: ev.reason.clone(),
            body: Body::Template(template),
            early: false,
        })
    }

    /// An HTTP request is stored as its compact record (issue 17), as a
    /// statement is; `chain_id` is not part of it.
    fn api(ev: &super::event::ApiEvent, chain_id: &str, host: &str) -> Result<Self, AuditError> {
        let session = ev.session.to_string();
        let _ = chain_id;
        Ok(Self {
            class_uid: super::ocsf::CLASS_UID_API_ACTIVITY,
            time_ms: ev.time_ms,
            activity: super::ocsf::api_activity_str(ev.phase),
            decision: ev.decision.as_str(),
            account: Some(ev.account.clone()),
            target: Some(ev.target.clone()),
            session,
            reason: ev.reason.clone(),
            body: Body::Record(super::record::encode_api(ev, host)),
            early: false,
        })
    }

    fn kernel(
        ev: &super::ocsf::KernelDenial,
        chain_id: &str,
        host: &str,
    ) -> Result<Self, AuditError> {
        Ok(Self {
            class_uid: super::ocsf::CLASS_UID_PROCESS_ACTIVITY,
            time_ms: ev.time_ms,
            activity: super::ocsf::KERNEL_ACTIVITY,
            decision: super::ocsf::KERNEL_DECISION,
            account: ev.account.clone(),
            target: None,
            session: String::new(),
            reason: Some(ev.kind.clone()),
            body: Body::Template(super::ocsf::kernel_template(ev, chain_id, host)?),
            early: false,
        })
    }

    fn config(change: &ConfigChange, chain_id: &str, host: &str) -> Result<Self, AuditError> {
        Ok(Self {
            class_uid: CLASS_UID_DEVICE_CONFIG_STATE_CHANGE,
            time_ms: change.time_ms,
            activity: CONFIG_ACTIVITY,
            decision: NO_DECISION,
            account: None,
            target: None,
            session: String::new(),
            reason: Some(change.action.as_str().to_owned()),
            body: Body::Template(config_template(change, chain_id, host)?),
            early: false,
        })
    }
}

enum Msg {
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
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    overflow: Arc<Overflow>,
    /// Highest seq of a record answered before its fsync
    /// ([`SyncMode::Pipelined`]) through this handle's scope (see
    /// [`AuditHandle::session_scope`]): answers wait for it.
    owed: Arc<AtomicU64>,
}

/// Records that found the channel full while being queued detached
/// ([`AuditHandle::record_statement_detached`]), and every record queued
/// after them while they wait: a single drainer task feeds them to the
/// channel in order, so records keep the order they were queued in.
///
/// Unbounded, but not in practice: producers that await their records
/// (the statement request phase) go through the same queue while it is in
/// use, so each producer adds at most the detached records of the
/// statements it already had recorded. Its length is in
/// [`WriterStats::detached_backlog`].
#[derive(Default)]
struct Overflow {
    state: std::sync::Mutex<OverflowState>,
}

#[derive(Default)]
struct OverflowState {
    queue: std::collections::VecDeque<Msg>,
    /// A drainer runs; it clears this when it leaves the queue empty.
    draining: bool,
}

impl Overflow {
    fn lock(&self) -> std::sync::MutexGuard<'_, OverflowState> {
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
    thread: std::thread::JoinHandle<()>,
}

impl AuditHandle {
    /// Record `ev`; resolves with its `seq` once the transaction holding it
    /// has committed. An `Err` means the event is NOT in the store: the
    /// caller must not let the audited effect happen.
    ///
    /// The event is encoded here, on the caller's task; only the seq is
    /// filled in by the writer.
    ///
    /// Cancel safety: if this future is dropped after the event was queued,
    /// the event is still committed; only the answer is lost.
    pub async fn record(&self, ev: ConnectionEvent) -> Result<u64, AuditError> {
        super::counted::connection(&ev);
        let rec = Prepared::connection(ev, &self.shared.chain_id, &self.shared.host)?;
        self.submit(rec).await
    }

    /// Record a configuration load or reload (OCSF Device Config State
    /// Change); committed like [`record`](Self::record).
    pub async fn record_config(&self, change: ConfigChange) -> Result<u64, AuditError> {
        let rec = Prepared::config(&change, &self.shared.chain_id, &self.shared.host)?;
        self.submit(rec).await
    }

    /// Record one database statement (OCSF Datastore Activity); committed
    /// like [`record`](Self::record). Used for the request phase: the
    /// statement must not reach the database unless this returned `Ok`.
    ///
    /// With [`SyncMode::Pipelined`], an allowed read is answered once its
    /// record is in the WAL (before the fsync): the caller forwards it and
    /// must hold the answer back until [`release_ready`](Self::release_ready)
    /// succeeds.
    pub async fn record_statement(&self, ev: StatementEvent) -> Result<u64, AuditError> {
        super::counted::statement(&ev);
        let mut rec = Prepared::statement(&ev, &self.shared.chain_id, &self.shared.host)?;
        rec.early = self.shared.mode == SyncMode::Pipelined
            && ev.phase == StatementPhase::Request
            && ev.decision == StatementDecision::Allowed
            && ev.class == "read";
        let early = rec.early;
        let seq = self.submit(rec).await?;
        if early {
            self.owed.fetch_max(seq, Ordering::AcqRel);
        }
        Ok(seq)
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

    fn sync_failure_covering(&self, seq: u64) -> Option<AuditError> {
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

    /// Record one approval transition (OCSF User Access Management);
    /// committed like [`record`](Self::record): an approval takes effect
    /// only once its record is in the store.
    pub async fn record_approval(&self, ev: ApprovalEvent) -> Result<u64, AuditError> {
        super::counted::approval(&ev);
        let rec = Prepared::approval(&ev, &self.shared.chain_id, &self.shared.host)?;
        self.submit(rec).await
    }

    /// Queue one database statement event without waiting for its commit
    /// (the result phase: the answer is already on its way to the client).
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
    pub fn record_statement_detached(&self, ev: StatementEvent) {
        super::counted::statement(&ev);
        let rec = match Prepared::statement(&ev, &self.shared.chain_id, &self.shared.host) {
            Ok(rec) => rec,
            Err(e) => {
                self.lost(1, "cannot encode the statement event", &e.to_string());
                return;
            }
        };
        self.enqueue_detached(Msg::Record {
            rec: Box::new(rec),
            reply: None,
        });
    }

    /// Record one HTTP request event (OCSF API Activity); committed like
    /// [`record`](Self::record). The request phase is awaited: the request
    /// must not reach the upstream unless this returned `Ok`.
    pub async fn record_api(&self, ev: super::event::ApiEvent) -> Result<u64, AuditError> {
        super::counted::api(&ev);
        let rec = Prepared::api(&ev, &self.shared.chain_id, &self.shared.host)?;
        self.submit(rec).await
    }

    /// Queue one HTTP request event without waiting for its commit (result
    /// phase, and rejections that forward nothing); as
    /// [`record_statement_detached`](Self::record_statement_detached).
    pub fn record_api_detached(&self, ev: super::event::ApiEvent) {
        super::counted::api(&ev);
        let rec = match Prepared::api(&ev, &self.shared.chain_id, &self.shared.host) {
            Ok(rec) => rec,
            Err(e) => {
                self.lost(1, "cannot encode the API event", &e.to_string());
                return;
            }
        };
        self.enqueue_detached(Msg::Record {
            rec: Box::new(rec),
            reply: None,
        });
    }

    /// Record a kernel (BPF LSM) denial; committed like
    /// [`record`](Self::record). The denial already happened: this only
    /// reports it.
    pub async fn record_kernel(&self, ev: super::ocsf::KernelDenial) -> Result<u64, AuditError> {
        let rec = Prepared::kernel(&ev, &self.shared.chain_id, &self.shared.host)?;
        self.submit(rec).await
    }

    fn lost(&self, n: u64, what: &str, error: &str) {
        super::counted::lost(n);
        self.shared.detached_lost.fetch_add(n, Ordering::AcqRel);
        tracing::error!(
            audit.events = n,
            audit.error = error,
            "audit event NOT recorded: {what}"
        );
    }

    fn enqueue_detached(&self, msg: Msg) {
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
    fn leave_lazy(&self, msg: Msg) -> Option<Msg> {
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
    fn spawn_drainer(&self) {
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
    fn next_overflow(&self) -> Option<Msg> {
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
    fn drain_closed(&self, first: Msg) {
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

    async fn submit(&self, rec: Prepared) -> Result<u64, AuditError> {
        let started = std::time::Instant::now();
        let committed = self.submit_inner(rec).await;
        super::counted::committed(started.elapsed(), committed.is_ok());
        committed
    }

    async fn submit_inner(&self, rec: Prepared) -> Result<u64, AuditError> {
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
    fn behind_overflow(&self, msg: Msg) -> Option<Msg> {
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

/// Open (creating or migrating if needed) the store at `path`, load or
/// create its checkpoint key (`checkpoint.key` / `checkpoint.pub` in the
/// same directory) and start its writer, with the default [`Retention`].
/// Re-exported as `audit::spawn_writer`.
///
/// The parent directory is created with mode 0700 when missing, a new store
/// file with mode 0600.
pub fn spawn(path: &Path, opts: WriterOptions) -> Result<(AuditHandle, WriterTask), AuditError> {
    spawn_inner(path, opts, Some(Retention::default()), None)
}

/// [`spawn`] with an explicit retention (`None`: never prune).
/// Re-exported as `audit::spawn_writer_with`.
pub fn spawn_with(
    path: &Path,
    opts: WriterOptions,
    retention: Option<Retention>,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    spawn_inner(path, opts, retention, None)
}

/// `start_gate`: when set, the writer waits for it before taking its first
/// message (tests use it to queue a known set of events first).
fn spawn_inner(
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
fn spawn_ticker(
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

/// An answer owed to a producer: its channel and its event's seq.
type Reply = (oneshot::Sender<Result<u64, AuditError>>, u64);
/// A [`Reply`] and whether it may be answered before the fsync
/// ([`Prepared::early`]).
type EarlyReply = (oneshot::Sender<Result<u64, AuditError>>, u64, bool);

/// A commit waiting for its fsync.
struct SyncJob {
    /// Last seq of the commit.
    through: u64,
    replies: Vec<Reply>,
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
struct WalSyncer {
    tx: Option<std::sync::mpsc::Sender<SyncJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl WalSyncer {
    fn spawn(path: &Path, shared: Arc<Shared>) -> Result<Self, AuditError> {
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
    fn submit(&self, job: SyncJob, here: bool) {
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
    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("audit WAL fsync thread panicked");
        }
    }
}

/// [`sync_wal`], failing on purpose where a test asked for it.
fn sync_wal_of(shared: &Shared, db: &Path) -> std::io::Result<()> {
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
fn sync_wal(db: &Path) -> std::io::Result<()> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::File::open(&wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(db)?.sync_data(),
        Err(e) => Err(e),
    }
}

/// Answer the producers of `jobs` after their fsync ended with `result`.
fn answer(shared: &Shared, db: &Path, result: std::io::Result<()>, jobs: &mut Vec<SyncJob>) {
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
struct WalCheckpointer {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    /// Set after each completed background run.
    ran: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalCheckpointer {
    fn spawn(path: &Path, sync: SyncMode) -> Result<Self, AuditError> {
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
    fn poke(&self) {
        self.ran.store(false, Ordering::Release);
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }

    /// Whether a run completed since the last [`poke`](Self::poke).
    fn has_run(&self) -> bool {
        self.ran.load(Ordering::Acquire)
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("audit WAL checkpointer thread panicked");
        }
    }
}

/// A PASSIVE WAL checkpoint on `conn`: (frames in the WAL, frames copied).
fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Create the directory and file with tight modes, open the connection,
/// apply pragmas and the schema (migrating v1 and v2). Returns the
/// connection, the chain id (hex and raw) and the chain state at the end of
/// the store.
fn open_store(
    path: &Path,
    sync: SyncMode,
) -> Result<(Connection, String, ChainKey, ChainState), AuditError> {
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
    // Only takes effect on a new, empty file (an existing store keeps its
    // page size). Every commit rewrites the last page of the table and of
    // each index into the WAL, so the size trades large commits (bulk
    // appends: fewer, larger frames) against small ones (a proxy's
    // requests: less rewritten per commit). Measured here: `bench audit`
    // (512 producers, FULL) 87k events/s with 4 KiB, 113k with 8 KiB, 114k
    // with 16 KiB; `bench http` through Warden 11.6k req/s with 4 KiB,
    // 11.2k with 8 KiB, 9.4k with 16 KiB.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(open_err("set page_size"))?;
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
    // Keep the index pages every insert touches in memory.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(open_err("set cache_size"))?;

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
    let version = if has_meta {
        let version = read_schema_version(&tx).map_err(open_err("read schema_version"))?;
        if !matches!(version, Some(1..=4)) {
            check_schema_version(path, version)?;
        }
        version
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
        for step in [
            SCHEMA_V1,
            SCHEMA_V1_TO_V2,
            SCHEMA_V2_TO_V3,
            SCHEMA_V3_TO_V4,
            SCHEMA_V4_TO_V5,
        ] {
            tx.execute_batch(step).map_err(open_err("create schema"))?;
        }
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
        Some(SCHEMA_VERSION)
    };
    let chain_id = read_chain_id(&tx).map_err(open_err("read chain_id"))?;
    let Some(chain_id) = chain_id else {
        return Err(AuditError::Schema {
            path: path.to_owned(),
            detail: "meta has no chain_id".into(),
        });
    };
    let chain_key = ChainKey::parse(&chain_id).map_err(|e| AuditError::Schema {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if version == Some(1) {
        let hashed =
            migrate_v1_to_v2(&tx, &chain_key).map_err(open_err("migrate schema 1 to 2"))?;
        tracing::info!(
            audit.path = %path.display(),
            audit.events = hashed,
            "audit store migrated from schema 1 to 2 (existing events hash-chained)"
        );
    }
    if matches!(version, Some(1 | 2)) {
        migrate_step(&tx, SCHEMA_V2_TO_V3, 3).map_err(open_err("migrate schema 2 to 3"))?;
        tracing::info!(
            audit.path = %path.display(),
            "audit store migrated from schema 2 to 3 (forwarder cursors, partial decision index)"
        );
    }
    if matches!(version, Some(1..=3)) {
        migrate_step(&tx, SCHEMA_V3_TO_V4, 4).map_err(open_err("migrate schema 3 to 4"))?;
        tracing::info!(
            audit.path = %path.display(),
            "audit store migrated from schema 3 to 4 (no account index)"
        );
    }
    if matches!(version, Some(1..=4)) {
        migrate_step(&tx, SCHEMA_V4_TO_V5, 5).map_err(open_err("migrate schema 4 to 5"))?;
        tracing::info!(
            audit.path = %path.display(),
            "audit store migrated from schema 4 to 5 (new statements stored as compact records)"
        );
    }
    let state = load_chain_state(&tx).map_err(open_err("read chain head"))?;
    tx.commit().map_err(open_err("commit schema"))?;
    Ok((conn, chain_id, chain_key, state))
}

/// Add the hash column and checkpoint tables, hash every existing row in
/// seq order, and record version 2. Runs inside the open transaction.
fn migrate_v1_to_v2(tx: &Transaction<'_>, key: &ChainKey) -> rusqlite::Result<u64> {
    tx.execute_batch(SCHEMA_V1_TO_V2)?;
    let mut select =
        tx.prepare("SELECT seq, data FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let mut update = tx.prepare("UPDATE events SET hash = ?1 WHERE seq = ?2")?;
    let mut head = GENESIS;
    let mut after: i64 = i64::MIN;
    let mut hashed = 0u64;
    loop {
        // Read a chunk, then update it: no update while a select runs over
        // the same rows.
        let chunk: Vec<(i64, Vec<u8>)> = select
            .query_map(params![after, MIGRATION_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        for (seq, data) in &chunk {
            let hash = event_hash(key, u64::try_from(*seq).unwrap_or(0), &head, data);
            update.execute(params![&hash[..], seq])?;
            head = hash;
            hashed += 1;
        }
        after = last;
    }
    tx.execute(
        "UPDATE meta SET value = '2' WHERE key = ?1",
        params![META_SCHEMA_VERSION],
    )?;
    Ok(hashed)
}

/// Apply one schema step (`SCHEMA_V2_TO_V3`, `SCHEMA_V3_TO_V4`) and
/// record version `to`. Runs inside the open transaction.
fn migrate_step(tx: &Transaction<'_>, sql: &str, to: i64) -> rusqlite::Result<()> {
    tx.execute_batch(sql)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = ?2",
        params![to.to_string(), META_SCHEMA_VERSION],
    )?;
    Ok(())
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

/// Lowest seq acknowledged by every forwarder; `None` when no forwarder has
/// a cursor (nothing holds events back). A cursor without a seq holds
/// everything back.
pub(crate) fn acked_through(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let (n, min): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), MIN(COALESCE(acked_seq, 0)) FROM forward_cursors",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n > 0).then(|| min.and_then(|m| u64::try_from(m).ok()).unwrap_or(0)))
}

/// Where the chain ends, as the writer needs it. Advanced on a copy while
/// a transaction is built; stored back only after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChainState {
    /// Seq of the next event.
    next_seq: u64,
    /// Stored hash of event `next_seq - 1` ([`GENESIS`] for an empty store).
    head: Hash,
    /// Events since the last checkpoint.
    since_checkpoint: u64,
    /// SHA-256 of the last checkpoint's body.
    last_checkpoint: Option<Hash>,
}

/// Read the chain state from the last event and the last checkpoint.
fn load_chain_state(conn: &Connection) -> rusqlite::Result<ChainState> {
    let last: Option<(u64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let checkpoint: Option<(u64, Vec<u8>)> = conn
        .query_row(
            "SELECT size, body FROM checkpoints ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (last_seq, head) = match last {
        Some((seq, hash)) => {
            let head = as_hash(&hash).unwrap_or_else(|| {
                tracing::warn!(
                    audit.seq = seq,
                    "hash of the last audit event is malformed; `warden audit verify` reports it"
                );
                GENESIS
            });
            (seq, head)
        }
        None => (0, GENESIS),
    };
    let since_checkpoint = match &checkpoint {
        // The checkpoint covering `size` is event size + 1.
        Some((size, _)) => last_seq.saturating_sub(size.saturating_add(1)),
        None => last_seq,
    };
    Ok(ChainState {
        next_seq: last_seq + 1,
        head,
        since_checkpoint,
        last_checkpoint: checkpoint.map(|(_, body)| sha256(&body)),
    })
}

/// Whether the writer may hold `batch` back for [`DETACHED_LINGER`]: it is
/// not empty, not full, and nobody awaits its commit.
fn lingers(batch: &[Pending], batch_max: usize) -> bool {
    !batch.is_empty() && batch.len() < batch_max && batch.iter().all(|p| p.reply.is_none())
}

struct Pending {
    rec: Box<Prepared>,
    /// `None` for detached records.
    reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

/// What the writer needs to hash, encode and sign, fixed at open.
struct ChainCtx {
    chain_id: String,
    key: ChainKey,
    host: String,
    signer: CheckpointSigner,
    /// Checkpoint after this many events (0 = never by count).
    every: u64,
}

type DbError = (&'static str, rusqlite::Error);

/// The seqs of a batch's events, and the number of checkpoints it wrote.
type BatchResult = Result<(Vec<u64>, u64), DbError>;

/// Store columns of an event the writer makes itself.
struct Columns {
    time_ms: i64,
    class_uid: u32,
    activity: &'static str,
    reason: Option<String>,
}

struct Writer {
    /// `None` only after [`Writer::close`].
    conn: Option<Connection>,
    path: PathBuf,
    ctx: ChainCtx,
    /// Advances only on commit.
    state: ChainState,
    batch_max: usize,
    /// Checkpoint by time (None = never).
    interval: Option<Duration>,
    last_checkpoint_at: Instant,
    /// `None`: never prune.
    retention: Option<Retention>,
    next_prune_at: Instant,
    /// The last scheduled prune step was capped: the next one follows
    /// after [`PRUNE_STEP_PAUSE`].
    prune_more: bool,
    checkpointer: Option<WalCheckpointer>,
    /// With [`SyncMode::Full`]: answers producers once their commit is
    /// fsynced.
    syncer: Option<WalSyncer>,
    /// Set by the run loop while it commits a batch with nothing queued
    /// behind it: the writer fsyncs that commit itself.
    sync_inline: bool,
    /// [`SyncMode::Relaxed`]: when the last fsync was handed to the syncer.
    last_sync_at: Instant,
    /// Event bytes committed since the WAL was last fully checkpointed.
    wal_bytes: usize,
    /// The background checkpointer was asked to run and has not been
    /// followed up yet.
    wal_poked: bool,
    /// Reused buffer for one event's bytes.
    buf: Vec<u8>,
    shared: Arc<Shared>,
    /// Dropped with the writer, which stops the ticker thread.
    _ticker_stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
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
    fn take_lazy(&self, batch: &mut Vec<Pending>, linger_start: &mut Instant) {
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
    fn sleep_without_deadline(&self, batch: &mut Vec<Pending>, linger_start: &mut Instant) -> bool {
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
    fn after_batch(&mut self) {
        if self.checkpoint_due() {
            self.checkpoint("interval");
        }
        self.scheduled_prune();
        self.wal_maintenance();
    }

    /// Keep the WAL small and reused: once [`WAL_CHECKPOINT_BYTES`] were
    /// committed, the background checkpointer copies them; after it ran,
    /// the writer copies what was committed meanwhile (little) and the next
    /// transaction restarts the WAL. If the background run falls far
    /// behind, the writer checkpoints everything itself.
    fn wal_maintenance(&mut self) {
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

    fn checkpoint_due(&self) -> bool {
        self.interval.is_some_and(|interval| {
            self.state.since_checkpoint > 0 && self.last_checkpoint_at.elapsed() >= interval
        })
    }

    /// A prune step when one is due (at start, every `Retention::every`, and
    /// right after a capped step).
    fn scheduled_prune(&mut self) {
        let Some(retention) = self.retention else {
            return;
        };
        if Instant::now() < self.next_prune_at {
            return;
        }
        match self.prune_step(now_ms()) {
            Ok(report) => {
                self.prune_more = report.more;
                if let Some(why) = &report.refused {
                    tracing::error!(
                        audit.path = %self.path.display(),
                        audit.reason = %why,
                        "audit retention: events past retention are kept because the chain \
                         does not verify; run `warden audit verify`"
                    );
                }
            }
            Err(e) => {
                self.prune_more = false;
                tracing::warn!(audit.error = %e, "audit retention prune failed; retrying later");
            }
        }
        // A capped step continues a second later, so a large backlog is
        // worked off without holding up event batches for long.
        self.next_prune_at = Instant::now()
            + if self.prune_more {
                PRUNE_STEP_PAUSE
            } else {
                retention.every
            };
    }

    fn close(&mut self) {
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
    fn commit(&mut self, batch: &mut Vec<Pending>) {
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
    fn checkpoint(&mut self, why: &'static str) {
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
    fn committed(&mut self, events: u64, checkpoints: u64, replies: Vec<EarlyReply>) {
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

    /// [`SyncMode::Relaxed`]: hand the fsync of everything committed to
    /// the syncer when the last one is [`RELAXED_SYNC_INTERVAL`] old (or,
    /// with `idle`, whenever something is not yet durable: the writer has
    /// nothing else to do).
    fn relaxed_sync(&mut self, idle: bool) {
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

    fn failed(&mut self, op: &'static str, n: usize, e: &rusqlite::Error) {
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
    fn write(&mut self, batch: &[Pending], force: bool) -> BatchResult {
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
    fn recover(&mut self) {
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

    /// One retention step as of `now_ms`: delete the events older than
    /// the retention and acknowledged by every forwarder, up to the
    /// largest checkpoint that allows (at most [`PRUNE_STEP_MAX`] rows
    /// when a checkpoint allows a cut that small), and record a prune
    /// event, in one transaction.
    ///
    /// The cut is always at a checkpoint of seq S whose event (S + 1) is
    /// kept: the remaining chain starts right after a signed head, which
    /// `verify` uses as its anchor. Before deleting, the rows to delete are
    /// checked: contiguous, hash-chained from the previous anchor (genesis
    /// or the last prune's checkpoint) to the signed head of S, and all
    /// older than the cutoff; otherwise nothing is deleted (damage must
    /// stay visible) and the report says why.
    fn prune_step(&mut self, now_ms: i64) -> Result<PruneReport, AuditError> {
        let Some(retention) = self.retention else {
            return Ok(PruneReport::nothing(now_ms, None));
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(AuditError::Closed);
        };
        let cutoff = now_ms.saturating_sub(retention.max_age_ms());
        let wrap = |op: &'static str| {
            move |e: rusqlite::Error| AuditError::Write {
                op,
                source: Arc::new(e),
            }
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap("begin prune"))?;
        let acked = acked_through(&tx).map_err(wrap("read forward cursors"))?;
        let mut report = PruneReport::nothing(cutoff, acked);
        let plan = plan_prune(&tx, &self.path, cutoff, acked, self.state.next_seq)
            .map_err(wrap("plan prune"))?;
        let plan = match plan {
            PrunePlan::Nothing => return Ok(report),
            PrunePlan::Refused(why) => {
                report.refused = Some(why);
                return Ok(report);
            }
            PrunePlan::Cut(cut) => cut,
        };
        let deleted = tx
            .execute(
                "DELETE FROM events WHERE seq >= ?1 AND seq <= ?2",
                params![plan.from, plan.through],
            )
            .map_err(wrap("delete pruned events"))?;
        let record = PruneRecord {
            time_ms: now_ms,
            from_seq: plan.from,
            through_seq: plan.through,
            events: deleted as u64,
            reason: "retention".into(),
            retention_days: retention.max_age.as_secs() / 86_400,
            cutoff_ms: cutoff,
            acked_through: acked,
            checkpoint_head_hash: hex::encode(plan.head),
        };
        let ctx = &self.ctx;
        let mut st = self.state;
        let data = encode_prune(&record, st.next_seq, &ctx.chain_id, &ctx.host)?;
        let prune_seq = st.next_seq;
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(wrap("prepare"))?;
            insert_own_event(
                ctx,
                &tx,
                &mut insert,
                &mut st,
                &Columns {
                    time_ms: now_ms,
                    class_uid: CLASS_UID_APPLICATION_LIFECYCLE,
                    activity: PRUNE_ACTIVITY,
                    reason: Some(record.reason.clone()),
                },
                &data,
            )
            .map_err(|(op, e)| wrap(op)(e))?;
        }
        tx.commit().map_err(wrap("commit prune"))?;
        self.state = st;
        self.committed(0, 0, Vec::new());
        tracing::info!(
            audit.from_seq = plan.from,
            audit.through_seq = plan.through,
            audit.events = deleted,
            audit.prune_seq = prune_seq,
            "audit retention: pruned events past retention"
        );
        report.removed = Some((plan.from, plan.through));
        report.events_removed = deleted as u64;
        report.prune_seq = Some(prune_seq);
        report.more = plan.more;
        Ok(report)
    }
}

/// A cut the prune may make.
struct PruneCut {
    from: u64,
    through: u64,
    /// Signed head hash of `through`.
    head: Hash,
    /// A later checkpoint would allow pruning more right away.
    more: bool,
}

enum PrunePlan {
    Nothing,
    Refused(String),
    Cut(PruneCut),
}

/// (size, body, signature) of a checkpoint row.
type CheckpointParts = (u64, Vec<u8>, Vec<u8>);

/// Decide what a prune may delete (see [`Writer::prune_step`]).
fn plan_prune(
    conn: &Connection,
    store: &Path,
    cutoff: i64,
    acked: Option<u64>,
    next_seq: u64,
) -> rusqlite::Result<PrunePlan> {
    let Some(first) = conn.query_row("SELECT MIN(seq) FROM events", [], |r| {
        r.get::<_, Option<u64>>(0)
    })?
    else {
        return Ok(PrunePlan::Nothing);
    };
    // Every event before the first one that is not past retention.
    let first_recent: Option<u64> = conn.query_row(
        "SELECT MIN(seq) FROM events WHERE time_ms >= ?1",
        [cutoff],
        |r| r.get(0),
    )?;
    let mut limit = first_recent.unwrap_or(next_seq).saturating_sub(1);
    if let Some(a) = acked {
        limit = limit.min(a);
    }
    if limit < first {
        return Ok(PrunePlan::Nothing);
    }
    let pick = |sql: &str, a: u64, b: u64| -> rusqlite::Result<Option<CheckpointParts>> {
        conn.query_row(sql, params![a, b], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
    };
    // The largest checkpoint within one step, else the smallest beyond.
    let capped = limit.min(first.saturating_add(PRUNE_STEP_MAX - 1));
    let chosen = match pick(
        "SELECT size, body, signature FROM checkpoints WHERE size >= ?1 AND size <= ?2 \
         ORDER BY size DESC LIMIT 1",
        first,
        capped,
    )? {
        Some(c) => Some(c),
        None => pick(
            "SELECT size, body, signature FROM checkpoints WHERE size >= ?1 AND size <= ?2 \
             ORDER BY size ASC LIMIT 1",
            first,
            limit,
        )?,
    };
    let Some((through, body, signature)) = chosen else {
        // No checkpoint to cut at yet.
        return Ok(PrunePlan::Nothing);
    };
    let more: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE size > ?1 AND size <= ?2)",
        params![through, limit],
        |r| r.get(0),
    )?;
    let refused = |why: String| Ok(PrunePlan::Refused(why));
    // The checkpoint must be genuine, and its event must stay.
    let keys = known_keys(conn, store)?;
    let cp = match Checkpoint::from_parts(body, signature, None) {
        Ok(cp) => cp,
        Err(e) => return refused(format!("checkpoint of seq {through} is unreadable: {e}")),
    };
    if !keys.get(cp.key_id()).is_some_and(|k| cp.signature_valid(k)) {
        return refused(format!("checkpoint of seq {through} does not verify"));
    }
    let event_kept: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE seq = ?1 AND activity = ?2)",
        params![through + 1, CHECKPOINT_ACTIVITY],
        |r| r.get(0),
    )?;
    if !event_kept {
        return refused(format!(
            "the event of the checkpoint of seq {through} (seq {}) is missing",
            through + 1
        ));
    }
    // Where the rows to delete chain from.
    let mut prev: Hash = if first == 1 {
        GENESIS
    } else {
        let anchor: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT body, signature FROM checkpoints WHERE size = ?1 LIMIT 1",
                [first - 1],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let anchor = anchor.and_then(|(b, s)| Checkpoint::from_parts(b, s, None).ok());
        match anchor {
            Some(a) if keys.get(a.key_id()).is_some_and(|k| a.signature_valid(k)) => *a.head_hash(),
            _ => {
                return refused(format!(
                    "the store starts at seq {first} without a valid checkpoint of seq {} \
                     before it",
                    first - 1
                ));
            }
        }
    };
    let key = ChainKey::parse(&read_chain_id(conn)?.unwrap_or_default())
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut stmt = conn.prepare(
        "SELECT seq, time_ms, data, hash FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![first, through])?;
    let mut expected = first;
    while let Some(row) = rows.next()? {
        let seq: u64 = row.get(0)?;
        let time_ms: i64 = row.get(1)?;
        let data = row.get_ref(2)?.as_bytes().unwrap_or_default();
        let stored = row.get_ref(3)?.as_bytes().unwrap_or_default();
        if seq != expected {
            return refused(format!("event {expected} is missing"));
        }
        let h = event_hash(&key, seq, &prev, data);
        if h[..] != *stored {
            return refused(format!("event {seq} does not chain"));
        }
        if time_ms >= cutoff {
            // Cannot happen: `through` < the first recent seq.
            return refused(format!("event {seq} is not past retention"));
        }
        prev = h;
        expected = seq + 1;
    }
    if expected != through + 1 {
        return refused(format!("event {expected} is missing"));
    }
    if prev != *cp.head_hash() {
        return refused(format!(
            "the chain's hash of event {through} differs from its signed checkpoint"
        ));
    }
    Ok(PrunePlan::Cut(PruneCut {
        from: first,
        through,
        head: prev,
        more,
    }))
}

/// Insert an event the writer makes itself (prune) as the next event,
/// advancing `st`, with a checkpoint after it when the count is reached.
fn insert_own_event(
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
fn insert_checkpoint(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ConnActivity, Decision, SessionId};
    use crate::audit::ocsf::{decode_connection, encode_connection, tests::sample};

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

    thread_local! {
        /// This thread's statements are written as OCSF JSON (stores of
        /// schema 4 and before).
        pub(crate) static LEGACY_JSON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Checkpoints only at shutdown, so seqs of recorded events are 1, 2, ...
    fn opts(sync: SyncMode, batch_max: usize, host: &str) -> WriterOptions {
        WriterOptions {
            sync,
            batch_max,
            host: host.into(),
            checkpoint_every: 0,
            checkpoint_interval: Duration::ZERO,
        }
    }

    /// Connection events (checkpoint events left out).
    fn rows(path: &Path) -> Vec<(u64, String, Vec<u8>)> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare("SELECT seq, session, data FROM events WHERE class_uid = 4001 ORDER BY seq")
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
        let (h, task) = spawn(&path, opts(SyncMode::Normal, 64, "host1")).unwrap();
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
        let (h, task) = spawn(&path, opts(SyncMode::Full, 64, "")).unwrap();
        assert_eq!(h.chain_id(), chain_id);
        // 1001 is the checkpoint signed at shutdown.
        assert_eq!(h.record(ev(1)).await.unwrap(), 1002);
        let c = Connection::open(&path).unwrap();
        let jm: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "wal");
        drop(c);
        h.shutdown().await;
        task.join().unwrap();
    }

    type Answer = tokio::task::JoinHandle<Result<u64, AuditError>>;

    /// A FULL writer (batch_max 10) held at its start gate with 25 records
    /// queued: open the gate with the returned sender.
    async fn gated_25(
        path: &Path,
    ) -> (
        AuditHandle,
        WriterTask,
        std::sync::mpsc::Sender<()>,
        Vec<Answer>,
    ) {
        let (gate_tx, gate) = std::sync::mpsc::channel();
        let (h, task) = spawn_inner(path, opts(SyncMode::Full, 10, ""), None, Some(gate)).unwrap();
        let mut pending = Vec::new();
        for i in 0..25 {
            let h = h.clone();
            pending.push(tokio::spawn(async move { h.record(ev(i)).await }));
        }
        while h.tx.max_capacity() - h.tx.capacity() < 25 {
            tokio::task::yield_now().await;
        }
        (h, task, gate_tx, pending)
    }

    #[tokio::test]
    async fn queued_events_are_committed_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task, gate_tx, pending) = gated_25(&path).await;
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
    async fn a_failed_pipelined_fsync_refuses_the_commits_it_covered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task, gate_tx, pending) = gated_25(&path).await;
        // The first two commits have more queued behind them (the syncer
        // fsyncs them); the last is fsynced by the writer itself.
        h.fail_next_syncs(1);
        gate_tx.send(()).unwrap();
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await.unwrap());
        }
        let n_failed = results.iter().filter(|r| r.is_err()).count();
        let mut ok: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
        ok.sort_unstable();
        // The failed fsync covered the first commit or the first two (the
        // syncer's); on a very slow machine the writer's own fsync of the
        // last commit can come first and take the failure.
        match n_failed {
            10 | 20 => assert_eq!(
                ok,
                (n_failed as u64 + 1..=25).collect::<Vec<_>>(),
                "the records answered are exactly those after the failed fsync"
            ),
            5 => assert_eq!(ok, (1..=20).collect::<Vec<_>>()),
            n => panic!("{n} records failed"),
        }
        assert_eq!(h.stats().last_seq, 25);
        // The next fsync covers everything: healthy, all durable.
        assert_eq!(h.record(ev(99)).await.unwrap(), 26);
        assert!(h.is_healthy());
        assert_eq!(h.stats().durable_seq, 26);
        h.shutdown().await;
        task.join().unwrap();
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    #[tokio::test]
    async fn failing_store_returns_errors_and_recovers_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(&path, opts(SyncMode::Full, 16, "")).unwrap();
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
        // Failed batches left no trace in the chain.
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.last_seq, 3, "2 events + the shutdown checkpoint");
    }

    #[tokio::test]
    async fn full_answers_after_the_fsync_and_a_failed_fsync_refuses_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(&path, opts(SyncMode::Full, 64, "")).unwrap();
        // The writer's connection commits without fsync; the syncer does it.
        assert_eq!(h.record(ev(1)).await.unwrap(), 1);
        assert_eq!(h.stats().durable_seq, 1);
        let c = Connection::open(&path).unwrap();
        let wal = path.with_file_name("audit.db-wal");
        assert!(wal.exists());

        h.fail_next_syncs(1);
        let err = h.record(ev(2)).await.unwrap_err();
        assert!(matches!(err, AuditError::Sync { .. }), "{err}");
        assert!(err.to_string().contains("fsync of the WAL failed"), "{err}");
        assert!(!h.is_healthy());
        // Recorded without effect: the event is in the chain, but not
        // counted durable, so no forwarder reads it yet.
        assert_eq!(h.stats().last_seq, 2);
        assert_eq!(h.stats().durable_seq, 1);
        assert_eq!(h.stats().failed_commits, 1);

        // The next fsync covers it and the new record.
        assert_eq!(h.record(ev(3)).await.unwrap(), 3);
        assert!(h.is_healthy());
        assert_eq!(h.stats().durable_seq, 3);
        let n: u64 = c
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        h.shutdown().await;
        task.join().unwrap();
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    #[tokio::test]
    async fn many_concurrent_full_records_are_answered_only_when_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(&path, opts(SyncMode::Full, 256, "")).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let seq = h.record(ev(i)).await.unwrap();
                // Answered only once the syncer counted it durable.
                assert!(h.stats().durable_seq >= seq);
                seq
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        h.shutdown().await;
        task.join().unwrap();
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    #[tokio::test]
    async fn unusable_paths_fail_at_open() {
        let dir = tempfile::tempdir().unwrap();
        // The path is a directory.
        let err = spawn(dir.path(), opts(SyncMode::Full, 16, ""))
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        // A file that is not a SQLite database.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'z'; 8192]).unwrap();
        let err = spawn(&junk, opts(SyncMode::Full, 16, "")).err().unwrap();
        assert!(matches!(err, AuditError::Open { .. }), "{err}");
        // A SQLite database that is not ours.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = spawn(&other, opts(SyncMode::Full, 16, "")).err().unwrap();
        assert!(matches!(err, AuditError::Schema { .. }), "{err}");
    }

    #[tokio::test]
    async fn shutdown_drains_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (gate_tx, gate) = std::sync::mpsc::channel();
        let (h, task) = spawn_inner(&path, opts(SyncMode::Full, 4, ""), None, Some(gate)).unwrap();
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
        let (h, task) = spawn(&dir.path().join("a.db"), opts(SyncMode::Full, 4, "")).unwrap();
        h.record(ev(1)).await.unwrap();
        drop(h);
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
    }

    /// (size, prev_hash, body, signature) of every checkpoint row.
    type CheckpointRow = (u64, Vec<u8>, Vec<u8>, Vec<u8>);

    fn checkpoint_rows(path: &Path) -> Vec<CheckpointRow> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare("SELECT size, prev_hash, body, signature FROM checkpoints ORDER BY id")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn classes(path: &Path) -> Vec<(u64, u32, String, String)> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare("SELECT seq, class_uid, activity, decision FROM events ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn checkpoints_every_n_events_and_at_shutdown_are_chain_events() {
        use crate::audit::chain::event_hash;
        use crate::audit::ocsf::decode_checkpoint;
        use crate::audit::testutil::{ev, opts};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(&path, opts(10)).unwrap();
        let mut seqs = Vec::new();
        for i in 1..=25 {
            seqs.push(h.record(ev(i)).await.unwrap());
        }
        let stats = h.stats();
        assert_eq!(
            (stats.events, stats.checkpoints, stats.last_seq),
            (25, 2, 27)
        );
        let key_id = h.key_id().to_owned();
        h.shutdown().await;
        task.join().unwrap();
        let expected: Vec<u64> = (1..=10).chain(12..=21).chain(23..=27).collect();
        assert_eq!(seqs, expected, "checkpoints take seqs 11 and 22");

        let cps = checkpoint_rows(&path);
        assert_eq!(
            cps.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![10, 21, 27],
            "every 10 events, then the rest at shutdown"
        );
        let kinds = classes(&path);
        assert_eq!(kinds.len(), 28);
        for (seq, class, activity, decision) in &kinds {
            let is_cp = [11, 22, 28].contains(seq);
            assert_eq!(*class == 6002, is_cp, "seq {seq}");
            assert_eq!(activity == "checkpoint", is_cp, "seq {seq}");
            assert_eq!(decision == "n/a", is_cp, "seq {seq}");
        }

        // Each checkpoint event carries exactly its table row, signs the
        // hash of the event before it and links to the previous one.
        let c = Connection::open(&path).unwrap();
        let chain = crate::audit::testutil::chain_key(&c);
        let mut prev_body: Option<Vec<u8>> = None;
        for ((size, prev_hash, body, sig), event_seq) in cps.iter().zip([11u64, 22, 28]) {
            let d = decode_checkpoint(&crate::audit::testutil::data(&c, event_seq)).unwrap();
            assert_eq!(d.seq, event_seq);
            assert_eq!(d.checkpoint.body_bytes(), &body[..]);
            assert_eq!(d.checkpoint.signature(), &sig[..]);
            assert_eq!(d.checkpoint.size(), *size);
            assert_eq!(d.checkpoint.key_id(), key_id);
            assert_eq!(
                &d.checkpoint.head_hash()[..],
                &crate::audit::testutil::hash(&c, *size)[..]
            );
            assert_eq!(
                d.checkpoint.body().origin,
                format!("warden:{}", h_chain_id(&c))
            );
            match &prev_body {
                None => {
                    assert!(prev_hash.is_empty() && d.checkpoint.prev_checkpoint_hash().is_none())
                }
                Some(p) => {
                    assert_eq!(prev_hash, &sha256(p).to_vec());
                    assert_eq!(d.checkpoint.prev_checkpoint_hash(), Some(&sha256(p)));
                }
            }
            prev_body = Some(body.clone());
            // The checkpoint event is hashed into the chain like any other.
            let h = event_hash(
                &chain,
                event_seq,
                &crate::audit::testutil::hash(&c, event_seq - 1),
                &crate::audit::testutil::data(&c, event_seq),
            );
            assert_eq!(&h[..], &crate::audit::testutil::hash(&c, event_seq)[..]);
        }
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.key_ids, vec![key_id]);

        // Reopen and stop without new events: no empty checkpoint.
        let (h, task) = spawn(&path, opts(10)).unwrap();
        h.shutdown().await;
        task.join().unwrap();
        assert_eq!(checkpoint_rows(&path).len(), 3);
    }

    fn h_chain_id(c: &Connection) -> String {
        read_chain_id(c).unwrap().unwrap()
    }

    #[tokio::test]
    async fn checkpoints_by_time_only_when_events_were_added() {
        use crate::audit::testutil::ev;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let opts = WriterOptions {
            checkpoint_every: 0,
            checkpoint_interval: Duration::from_millis(40),
            ..WriterOptions::default()
        };
        let (h, task) = spawn(&path, opts).unwrap();
        let wait_for = |n: u64| {
            let h = h.clone();
            async move {
                let start = Instant::now();
                while h.stats().checkpoints < n {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "no checkpoint {n}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // Idle and empty: nothing to sign.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(h.stats().checkpoints, 0);
        assert_eq!(h.record(ev(1)).await.unwrap(), 1);
        wait_for(1).await;
        assert_eq!(h.stats().last_seq, 2);
        // Idle again: no further checkpoint.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.stats().checkpoints, 1);
        assert_eq!(h.record(ev(2)).await.unwrap(), 3);
        wait_for(2).await;
        h.shutdown().await;
        task.join().unwrap();
        // Nothing new since the last one: no shutdown checkpoint.
        assert_eq!(
            checkpoint_rows(&path)
                .iter()
                .map(|c| c.0)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    #[tokio::test]
    async fn v1_store_migrates_to_a_verifying_chain() {
        use crate::audit::chain::{ChainKey, GENESIS, event_hash};
        use crate::audit::testutil::{ev, opts};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let chain_id = "00112233445566778899aabbccddeeff";
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('chain_id', ?1)",
                [chain_id],
            )
            .unwrap();
            for seq in 1..=5u64 {
                let e = ev(seq);
                let data = encode_connection(&e, seq, chain_id, "old").unwrap();
                c.execute(
                    "INSERT INTO events (seq, time_ms, class_uid, activity, decision, account, \
                     target, session, reason, data) VALUES (?1, ?2, 4001, 'open', 'allowed', \
                     ?3, ?4, ?5, NULL, ?6)",
                    params![
                        seq,
                        e.time_ms,
                        e.account,
                        e.target,
                        e.session.to_string(),
                        data
                    ],
                )
                .unwrap();
            }
        }
        // A v1 store is still readable for `audit tail`, but not verifiable.
        let r = crate::audit::AuditReader::open(&path).unwrap();
        assert_eq!(r.last_seq().unwrap(), 5);
        drop(r);
        let err = crate::audit::verify(&path, None).unwrap_err();
        assert!(matches!(err, AuditError::Schema { .. }), "{err}");

        let (h, task) = spawn(&path, opts(0)).unwrap();
        assert_eq!(h.chain_id(), chain_id);
        assert_eq!(h.record(ev(6)).await.unwrap(), 6);
        h.shutdown().await;
        task.join().unwrap();

        let c = Connection::open(&path).unwrap();
        assert_eq!(read_schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        // Migrated hashes are the chain over the stored v1 bytes.
        let key = ChainKey::parse(chain_id).unwrap();
        let mut prev = GENESIS.to_vec();
        for seq in 1..=7u64 {
            let data = crate::audit::testutil::data(&c, seq);
            let stored = crate::audit::testutil::hash(&c, seq);
            assert_eq!(
                &event_hash(&key, seq, &prev, &data)[..],
                &stored[..],
                "seq {seq}"
            );
            prev = stored;
        }
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(
            (report.events, report.checkpoints, report.signed_through),
            (7, 1, 6)
        );
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::audit::testutil::build_store(&path, 0, 1).await;
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE meta SET value = '6' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        let err = spawn(&path, opts(SyncMode::Full, 1, "")).err().unwrap();
        assert!(err.to_string().contains("schema version 6"), "{err}");
        let err = crate::audit::AuditReader::open(&path).err().unwrap();
        assert!(matches!(err, AuditError::Schema { .. }), "{err}");
    }

    #[tokio::test]
    async fn key_file_is_0600_and_reused_across_reopen() {
        use crate::audit::checkpoint::key_paths;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.db");
        let (h, task) = spawn(&path, opts(SyncMode::Full, 8, "")).unwrap();
        let first = h.key_id().to_owned();
        h.record(crate::audit::testutil::ev(1)).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();
        let (key, public) = key_paths(&path);
        assert_eq!(key, dir.path().join("state/checkpoint.key"));
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(public.exists());

        let (h, task) = spawn(&path, opts(SyncMode::Full, 8, "")).unwrap();
        assert_eq!(h.key_id(), first);
        h.record(crate::audit::testutil::ev(2)).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.key_ids, vec![first.clone()]);

        // A replaced key: old checkpoints stay verifiable through the keys
        // table, new ones use the new key.
        std::fs::remove_file(&key).unwrap();
        let (h, task) = spawn(&path, opts(SyncMode::Full, 8, "")).unwrap();
        let second = h.key_id().to_owned();
        assert_ne!(second, first);
        h.record(crate::audit::testutil::ev(3)).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.key_ids, vec![first, second]);
    }

    /// Throughput sanity: many producers, group commit, checkpoints inline;
    /// the result is one intact chain. (No timing assertions.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_events_chain_and_verify() {
        use crate::audit::testutil::ev;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(
            &path,
            WriterOptions {
                sync: SyncMode::Normal,
                batch_max: 256,
                checkpoint_every: 1000,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        let mut tasks = Vec::new();
        for t in 0..20u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250u64 {
                    h.record(ev(t * 1000 + i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = h.stats();
        assert_eq!((stats.events, stats.checkpoints), (5000, 5));
        h.shutdown().await;
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!((report.events, report.checkpoints), (5005, 5));
        assert_eq!(report.signed_through, 5004);
    }

    #[tokio::test]
    async fn config_changes_are_queryable_chain_events() {
        use crate::audit::event::{ConfigAction, ConfigChange};
        use crate::audit::ocsf::decode_config;
        use crate::audit::reader::{AuditReader, TailFilter, format_text};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = spawn(&path, opts(SyncMode::Full, 16, "host1")).unwrap();
        let load = ConfigChange {
            time_ms: 1_795_957_500_000,
            path: "/etc/warden/warden.toml".into(),
            sha256: "ab".repeat(32),
            action: ConfigAction::Load,
            detail: None,
            previous_sha256: None,
            outcome: Default::default(),
            reason: None,
        };
        assert_eq!(h.record_config(load.clone()).await.unwrap(), 1);
        assert_eq!(h.record(ev(2)).await.unwrap(), 2);
        let reload = ConfigChange {
            action: ConfigAction::Reload,
            sha256: "cd".repeat(32),
            detail: Some("SIGHUP by uid 0".into()),
            ..load.clone()
        };
        assert_eq!(h.record_config(reload.clone()).await.unwrap(), 3);
        assert_eq!(h.stats().events, 3);
        let chain_id = h.chain_id().to_owned();
        h.shutdown().await;
        task.join().unwrap();

        let c = Connection::open(&path).unwrap();
        type Cols = (
            u64,
            u32,
            String,
            String,
            Option<String>,
            String,
            Option<String>,
        );
        let cols: Vec<Cols> = c
            .prepare(
                "SELECT seq, class_uid, activity, decision, account, session, reason FROM events \
                 WHERE class_uid = 5019 ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            cols,
            vec![
                (
                    1,
                    5019,
                    "config".into(),
                    "n/a".into(),
                    None,
                    String::new(),
                    Some("load".into())
                ),
                (
                    3,
                    5019,
                    "config".into(),
                    "n/a".into(),
                    None,
                    String::new(),
                    Some("reload".into())
                ),
            ]
        );
        for (seq, want) in [(1, &load), (3, &reload)] {
            let data = crate::audit::testutil::data(&c, seq);
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(v["class_uid"], 5019);
            assert_eq!(v["category_uid"], 5);
            assert_eq!(v["type_uid"], 501999);
            assert_eq!(v["metadata"]["uid"], format!("{chain_id}:{seq}"));
            assert_eq!(v["device"]["hostname"], "host1");
            let d = decode_config(&data).unwrap();
            assert_eq!((&d.change, d.seq), (want, seq));
        }
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");

        // Queryable through the reader; readable as text.
        let r = AuditReader::open(&path).unwrap();
        let configs = TailFilter {
            decision: Some("n/a".into()),
            ..TailFilter::default()
        };
        let got = r.query(&configs, 0, 10).unwrap();
        assert_eq!(
            got.iter()
                .map(|e| (e.seq, e.activity.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "config"), (3, "config"), (4, "checkpoint")]
        );
        let line = format_text(&got[1]);
        assert!(
            line.ends_with(&format!(
                "#3 config n/a action=reload path=/etc/warden/warden.toml sha256={} \
                 detail=\"SIGHUP by uid 0\"",
                "cd".repeat(32)
            )),
            "{line}"
        );

        // A reload whose column was edited is caught like any other column.
        c.execute("UPDATE events SET reason = 'load' WHERE seq = 3", [])
            .unwrap();
        let p = crate::audit::verify(&path, None).unwrap().problem.unwrap();
        assert_eq!(
            (p.seq, p.kind),
            (3, crate::audit::Damage::Modified),
            "{}",
            p.detail
        );
        assert!(p.detail.contains("column reason"), "{}", p.detail);
    }

    mod retention {
        use super::*;
        use crate::audit::testutil::{data, edit_data, raw};
        use crate::audit::{Damage, verify};

        const DAY: i64 = 86_400_000;

        fn at(i: u64, time_ms: i64) -> ConnectionEvent {
            let mut e = ev(i);
            e.time_ms = time_ms;
            e
        }

        /// Checkpoints every 10 events, retention 1 day. 20 events of now
        /// (seqs 1..=10, checkpoint of 10 at 11, 12..=21, checkpoint of 21
        /// at 22), then 10 events 30 days ahead (23..=32, checkpoint of 32
        /// at 33).
        async fn fixture() -> (tempfile::TempDir, PathBuf, AuditHandle, WriterTask, i64) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let o = WriterOptions {
                checkpoint_every: 10,
                checkpoint_interval: Duration::ZERO,
                ..opts(SyncMode::Normal, 64, "")
            };
            let (h, task) = spawn_inner(&path, o, Some(Retention::days(1)), None).unwrap();
            let now = now_ms();
            for i in 1..=20 {
                h.record(at(i, now + i as i64)).await.unwrap();
            }
            for i in 21..=30 {
                h.record(at(i, now + 30 * DAY + i as i64)).await.unwrap();
            }
            assert_eq!(h.stats().last_seq, 33);
            (dir, path, h, task, now)
        }

        fn seqs(path: &Path) -> Vec<u64> {
            Connection::open(path)
                .unwrap()
                .prepare("SELECT seq FROM events ORDER BY seq")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }

        #[tokio::test]
        async fn events_past_retention_are_pruned_only_up_to_a_checkpoint() {
            let (_dir, path, h, task, now) = fixture().await;
            // Nothing is a day old yet.
            let r = h.prune_at(now).await.unwrap();
            assert_eq!((r.removed, r.events_removed, r.prune_seq), (None, 0, None));
            assert_eq!(seqs(&path).len(), 33);

            // Five days on: the 20 events of "now" are past retention, the
            // later ones are not; the cut is at the checkpoint of 21, whose
            // event (22) is kept.
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!(r.cutoff_ms, now + 4 * DAY);
            assert_eq!(r.acked_through, None);
            assert_eq!(r.removed, Some((1, 21)));
            assert_eq!(r.events_removed, 21);
            assert_eq!(r.prune_seq, Some(34));
            assert!(!r.more && r.refused.is_none());
            assert_eq!(seqs(&path), (22..=34).collect::<Vec<_>>());
            let report = verify(&path, None).unwrap();
            assert!(report.is_intact(), "{report}");
            assert_eq!((report.first_seq, report.pruned_through), (22, 21));
            assert!(
                report.to_string().contains("pruned:      events 1..=21"),
                "{report}"
            );

            // The prune is in the trail, as its own event.
            let c = raw(&path);
            let d = crate::audit::ocsf::decode_prune(&data(&c, 34)).unwrap();
            assert_eq!(
                (d.prune.from_seq, d.prune.through_seq, d.prune.events),
                (1, 21, 21)
            );
            assert_eq!(d.prune.reason, "retention");
            assert_eq!(d.prune.retention_days, 1);
            let head: Vec<u8> = c
                .query_row(
                    "SELECT head_hash FROM checkpoints WHERE size = 21",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(d.prune.checkpoint_head_hash, hex::encode(head));
            let r = crate::audit::AuditReader::open(&path).unwrap();
            let got = r
                .query(&crate::audit::TailFilter::default(), 33, 1)
                .unwrap();
            let line = crate::audit::format_text(&got[0]);
            assert!(
                line.contains(
                    "#34 prune n/a removed=1..=21 events=21 reason=retention retention_days=1"
                ),
                "{line}"
            );

            // Again at the same time: nothing more is old enough.
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!(r.removed, None);
            // Forty days on everything is old; the cut moves to the
            // checkpoint of 32, from the anchor the first prune kept.
            let r = h.prune_at(now + 40 * DAY).await.unwrap();
            assert_eq!(r.removed, Some((22, 32)));
            assert_eq!(seqs(&path), (33..=35).collect::<Vec<_>>());
            h.shutdown().await;
            task.join().unwrap();
            let report = verify(&path, None).unwrap();
            assert!(report.is_intact(), "{report}");
            assert_eq!((report.pruned_through, report.last_seq), (32, 36));
            // The writer resumes the chain after a prune.
            let (h, task) = spawn_inner(&path, opts(SyncMode::Normal, 8, ""), None, None).unwrap();
            assert_eq!(h.record(ev(99)).await.unwrap(), 37);
            h.shutdown().await;
            task.join().unwrap();
            assert!(verify(&path, None).unwrap().is_intact());
        }

        #[tokio::test]
        async fn events_not_acknowledged_by_every_forwarder_are_kept() {
            let (_dir, path, h, task, now) = fixture().await;
            let c = raw(&path);
            c.execute(
                "INSERT INTO forward_cursors (name, acked_seq, updated_ms) VALUES ('siem', 15, 0)",
                [],
            )
            .unwrap();
            // Acknowledged through 15: the cut is at the checkpoint of 10.
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!(r.acked_through, Some(15));
            assert_eq!(r.removed, Some((1, 10)));
            assert_eq!(seqs(&path)[0], 11);
            // A forwarder that has acknowledged nothing holds everything.
            c.execute(
                "INSERT INTO forward_cursors (name, acked_seq, updated_ms) VALUES ('archive', NULL, 0)",
                [],
            )
            .unwrap();
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!((r.acked_through, r.removed), (Some(0), None));
            // Both caught up: the rest past retention goes.
            c.execute("UPDATE forward_cursors SET acked_seq = 1000", [])
                .unwrap();
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!((r.acked_through, r.removed), (Some(1000), Some((11, 21))));
            h.shutdown().await;
            task.join().unwrap();
            let report = verify(&path, None).unwrap();
            assert!(report.is_intact(), "{report}");
            assert_eq!(report.pruned_through, 21);
        }

        #[tokio::test]
        async fn a_damaged_range_is_never_pruned() {
            let (_dir, path, h, task, now) = fixture().await;
            edit_data(&raw(&path), 5, "\"acct-2\"", "\"acct-9\"");
            let r = h.prune_at(now + 5 * DAY).await.unwrap();
            assert_eq!(r.removed, None);
            let why = r.refused.unwrap();
            assert!(why.contains("event 5 does not chain"), "{why}");
            assert_eq!(seqs(&path).len(), 33);
            h.shutdown().await;
            task.join().unwrap();
            let p = verify(&path, None).unwrap().problem.unwrap();
            assert_eq!((p.seq, p.kind), (5, Damage::Modified), "{}", p.detail);
        }

        #[tokio::test]
        async fn deletions_that_are_not_prunes_are_still_deleted() {
            // At a checkpoint boundary, but no prune recorded it.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            crate::audit::testutil::build_store(&path, 10, 25).await;
            raw(&path)
                .execute("DELETE FROM events WHERE seq <= 10", [])
                .unwrap();
            let p = verify(&path, None).unwrap().problem.unwrap();
            assert_eq!((p.seq, p.kind), (1, Damage::Deleted), "{}", p.detail);
            assert!(p.detail.contains("no prune event"), "{}", p.detail);

            // Not at a checkpoint boundary.
            let path = dir.path().join("b/audit.db");
            crate::audit::testutil::build_store(&path, 10, 25).await;
            raw(&path)
                .execute("DELETE FROM events WHERE seq <= 5", [])
                .unwrap();
            let p = verify(&path, None).unwrap().problem.unwrap();
            assert_eq!((p.seq, p.kind), (1, Damage::Deleted), "{}", p.detail);
            assert!(
                p.detail.contains("no valid checkpoint of seq 5"),
                "{}",
                p.detail
            );

            // More than the last prune removed.
            let (_dir, path, h, task, now) = fixture().await;
            assert_eq!(
                h.prune_at(now + 5 * DAY).await.unwrap().removed,
                Some((1, 21))
            );
            h.shutdown().await;
            task.join().unwrap();
            raw(&path)
                .execute("DELETE FROM events WHERE seq <= 32", [])
                .unwrap();
            let p = verify(&path, None).unwrap().problem.unwrap();
            assert_eq!((p.seq, p.kind), (22, Damage::Deleted), "{}", p.detail);
            assert!(p.detail.contains("only through seq 21"), "{}", p.detail);
        }

        #[tokio::test]
        async fn the_writer_prunes_at_start() {
            let (_dir, path, h, task, _now) = fixture().await;
            h.shutdown().await;
            task.join().unwrap();
            // Reopened with a retention shorter than the events' age: the
            // start-up prune removes what the checkpoints allow.
            let o = opts(SyncMode::Normal, 8, "");
            let mut r = Retention::days(1);
            r.max_age = Duration::from_millis(1);
            // Past every time the fixture wrote "now" (events are stamped
            // up to 20 ms ahead).
            let done = now_ms();
            while now_ms() <= done + 25 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (h, task) = spawn_inner(&path, o, Some(r), None).unwrap();
            h.record(ev(1)).await.unwrap();
            h.shutdown().await;
            task.join().unwrap();
            let first = seqs(&path)[0];
            assert_eq!(first, 22, "pruned through the checkpoint of 21 at start");
            assert!(verify(&path, None).unwrap().is_intact());
        }
    }

    #[tokio::test]
    async fn v2_store_migrates_to_v4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::audit::testutil::build_store(&path, 0, 3).await;
        {
            // Back to the v2 layout.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "DROP TABLE forward_cursors; DROP INDEX events_decision; \
                 CREATE INDEX events_decision ON events(decision, seq); \
                 CREATE INDEX events_account ON events(account, seq); \
                 UPDATE meta SET value = '2' WHERE key = 'schema_version';",
            )
            .unwrap();
        }
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
        let (h, task) = spawn(&path, opts(SyncMode::Full, 4, "")).unwrap();
        assert_eq!(h.record(ev(9)).await.unwrap(), 5);
        h.shutdown().await;
        task.join().unwrap();
        let c = Connection::open(&path).unwrap();
        assert_eq!(read_schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            index_names(&c),
            ["events_decision", "events_session", "events_time_ms"]
        );
        assert_eq!(acked_through(&c).unwrap(), None);
        let index: String = c
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'events_decision'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.contains("WHERE decision <> 'allowed'"), "{index}");
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    fn index_names(c: &Connection) -> Vec<String> {
        let mut st = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' \
                 AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn v3_store_loses_the_account_index_and_new_stores_use_8k_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        crate::audit::testutil::build_store(&path, 0, 3).await;
        let c = Connection::open(&path).unwrap();
        let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(page_size, PAGE_SIZE);
        assert_eq!(
            index_names(&c),
            ["events_decision", "events_session", "events_time_ms"]
        );
        // Back to the v3 layout.
        c.execute_batch(
            "CREATE INDEX events_account ON events(account, seq); \
             UPDATE meta SET value = '3' WHERE key = 'schema_version';",
        )
        .unwrap();
        drop(c);
        assert_eq!(
            crate::audit::AuditReader::open(&path)
                .unwrap()
                .schema_version(),
            3
        );
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
        let (h, task) = spawn(&path, opts(SyncMode::Full, 4, "")).unwrap();
        assert_eq!(h.record(ev(9)).await.unwrap(), 5);
        h.shutdown().await;
        task.join().unwrap();
        let c = Connection::open(&path).unwrap();
        assert_eq!(read_schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            index_names(&c),
            ["events_decision", "events_session", "events_time_ms"]
        );
        assert!(crate::audit::verify(&path, None).unwrap().is_intact());
    }

    mod statements {
        use super::*;
        use crate::audit::event::{StatementDecision, StatementPhase};
        use crate::audit::ocsf::decode_statement;
        use crate::audit::ocsf::tests::sample_statement;

        fn stmt(phase: StatementPhase, decision: StatementDecision, n: u64) -> StatementEvent {
            sample_statement(phase, decision, n)
        }

        type Cols = (
            u64,
            u32,
            String,
            String,
            Option<String>,
            String,
            Option<String>,
        );

        fn columns(path: &Path) -> Vec<Cols> {
            let c = Connection::open(path).unwrap();
            c.prepare(
                "SELECT seq, class_uid, activity, decision, account, session, reason FROM events \
                 WHERE class_uid = 6005 ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        }

        #[tokio::test]
        async fn statements_are_chain_events_with_columns_and_verify() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Full, 16, "host1")).unwrap();
            let mut open = sample(ConnActivity::Open, Decision::Allowed);
            open.protocol = "postgres".into();
            assert_eq!(h.record(open).await.unwrap(), 1);
            let req = stmt(StatementPhase::Request, StatementDecision::Allowed, 1);
            assert_eq!(h.record_statement(req.clone()).await.unwrap(), 2);
            let res = stmt(StatementPhase::Result, StatementDecision::Allowed, 1);
            h.record_statement_detached(res.clone());
            let blocked = stmt(StatementPhase::Request, StatementDecision::Blocked, 2);
            // In order behind the detached result.
            assert_eq!(h.record_statement(blocked.clone()).await.unwrap(), 4);
            let stats = h.stats();
            assert_eq!((stats.events, stats.detached_lost), (4, 0));
            h.shutdown().await;
            task.join().unwrap();

            let cols = columns(&path);
            let s = "00000000000004d2".to_owned();
            let acct = Some("orders-api".to_owned());
            let why = Some("statement blocked by rule no-deletes".to_owned());
            assert_eq!(
                cols,
                vec![
                    (
                        2,
                        6005,
                        "statement".into(),
                        "allowed".into(),
                        acct.clone(),
                        s.clone(),
                        None
                    ),
                    (
                        3,
                        6005,
                        "result".into(),
                        "allowed".into(),
                        acct.clone(),
                        s.clone(),
                        None
                    ),
                    (4, 6005, "statement".into(), "blocked".into(), acct, s, why),
                ]
            );
            let c = Connection::open(&path).unwrap();
            for (seq, want) in [(2u64, &req), (3, &res), (4, &blocked)] {
                let data: Vec<u8> = c
                    .query_row("SELECT data FROM events WHERE seq = ?1", [seq], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let chain: String = c
                    .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let data = crate::audit::record::render(&data, seq, &chain).unwrap();
                let d = decode_statement(&data).unwrap();
                // The caller's facts are in the session's open event, not
                // in each statement's record.
                let mut want = crate::audit::ocsf::tests::as_stored(want);
                want.process = Default::default();
                want.identity = None;
                assert_eq!((&d.event, d.seq), (&want, seq));
            }
            drop(c);
            // The chain covers statement events, and their columns are
            // checked against the hashed data.
            let report = crate::audit::verify(&path, None).unwrap();
            assert!(report.is_intact(), "{report}");
            assert_eq!(report.last_seq, 5, "4 events + the shutdown checkpoint");
            let c = crate::audit::testutil::raw(&path);
            c.execute("UPDATE events SET decision = 'allowed' WHERE seq = 4", [])
                .unwrap();
            let report = crate::audit::verify(&path, None).unwrap();
            let p = report.problem.expect("edited column detected");
            assert_eq!(p.seq, 4, "{p:?}");
            assert!(p.detail.contains("column decision"), "{}", p.detail);
        }

        #[tokio::test]
        async fn detached_results_alone_commit_after_the_linger() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Normal, 256, "")).unwrap();
            h.record_statement_detached(stmt(
                StatementPhase::Result,
                StatementDecision::Allowed,
                1,
            ));
            // Nothing else comes: the result is committed on its own.
            let start = Instant::now();
            while h.stats().events < 1 {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "a lone detached record was never committed"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(
                start.elapsed() >= DETACHED_LINGER / 2,
                "{:?}",
                start.elapsed()
            );
            assert_eq!(h.stats().commits, 1);
            h.shutdown().await;
            task.join().unwrap();
        }

        #[tokio::test]
        async fn detached_results_share_the_next_awaited_commit() {
            // Without the linger the result would be committed alone at
            // once and the request a millisecond later in a second
            // transaction. A loaded machine can stall this task past the
            // linger, so one of a few attempts must show a shared commit.
            let mut seen = Vec::new();
            for _ in 0..5 {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("audit.db");
                let (h, task) = spawn(&path, opts(SyncMode::Normal, 256, "")).unwrap();
                h.record_statement_detached(stmt(
                    StatementPhase::Result,
                    StatementDecision::Allowed,
                    1,
                ));
                tokio::time::sleep(Duration::from_millis(1)).await;
                let seq = h
                    .record_statement(stmt(StatementPhase::Request, StatementDecision::Allowed, 2))
                    .await
                    .unwrap();
                assert_eq!(seq, 2, "recorded in the order queued");
                let st = h.stats();
                h.shutdown().await;
                task.join().unwrap();
                assert_eq!(st.events, 2);
                if st.commits == 1 {
                    return;
                }
                seen.push(st.commits);
            }
            panic!("result and request never shared a commit: commits {seen:?}");
        }

        #[tokio::test]
        async fn detached_statements_overflow_in_order_and_are_never_dropped() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (gate_tx, gate) = std::sync::mpsc::channel();
            let (h, task) =
                spawn_inner(&path, opts(SyncMode::Normal, 256, ""), None, Some(gate)).unwrap();
            // The writer is held at its gate: the lazy queue fills, then
            // the channel, then the overflow queue takes the rest without
            // blocking this task.
            let n = (LAZY_MAX + CHANNEL_CAPACITY) as u64 + 50;
            for i in 1..=n {
                h.record_statement_detached(stmt(
                    StatementPhase::Result,
                    StatementDecision::Allowed,
                    i,
                ));
            }
            let st = h.stats();
            assert_eq!(
                (st.detached_overflowed, st.detached_backlog),
                (50, 50),
                "{st:?}"
            );
            // An awaited record queues behind them.
            let h2 = h.clone();
            let awaited = tokio::spawn(async move {
                h2.record_statement(stmt(
                    StatementPhase::Request,
                    StatementDecision::Allowed,
                    n + 1,
                ))
                .await
            });
            tokio::task::yield_now().await;
            gate_tx.send(()).unwrap();
            assert_eq!(awaited.await.unwrap().unwrap(), n + 1);
            let st = h.stats();
            assert_eq!(
                (st.events, st.detached_backlog, st.detached_lost),
                (n + 1, 0, 0)
            );
            h.shutdown().await;
            task.join().unwrap();

            let c = Connection::open(&path).unwrap();
            let mut q = c
                .prepare("SELECT seq, data FROM events WHERE class_uid = 6005 ORDER BY seq")
                .unwrap();
            let rows: Vec<(u64, Vec<u8>)> = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len() as u64, n + 1);
            for (seq, data) in rows {
                let chain: String = c
                    .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let data = crate::audit::record::render(&data, seq, &chain).unwrap();
                let d = decode_statement(&data).unwrap();
                assert_eq!(d.event.statement_seq, seq, "recorded in the order queued");
            }
        }

        #[tokio::test]
        async fn detached_statements_that_cannot_be_stored_are_counted() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Full, 16, "")).unwrap();
            // A failing commit.
            test_sql(&h, "PRAGMA query_only = ON").await;
            h.record_statement_detached(stmt(
                StatementPhase::Result,
                StatementDecision::Allowed,
                1,
            ));
            // In order: the detached event's batch is committed (and fails)
            // before this runs.
            test_sql(&h, "PRAGMA query_only = OFF").await;
            assert_eq!(h.stats().detached_lost, 1);
            assert!(!h.is_healthy());
            let seq = h
                .record_statement(stmt(StatementPhase::Request, StatementDecision::Denied, 2))
                .await
                .unwrap();
            assert_eq!(seq, 1, "no gap");
            // A stopped writer.
            let h2 = h.clone();
            h.shutdown().await;
            task.join().unwrap();
            h2.record_statement_detached(stmt(
                StatementPhase::Result,
                StatementDecision::Allowed,
                2,
            ));
            assert_eq!(h2.stats().detached_lost, 2);
        }
    }
    mod durability {
        //! Each durability mode's promise (issue 17 lever 2).
        use super::*;
        use crate::audit::event::{StatementDecision, StatementPhase};
        use crate::audit::ocsf::tests::sample_statement;

        fn read(n: u64) -> StatementEvent {
            sample_statement(StatementPhase::Request, StatementDecision::Allowed, n)
        }

        fn write(n: u64) -> StatementEvent {
            let mut ev = read(n);
            ev.class = "write".into();
            ev
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pipelined_reads_go_on_before_the_fsync_and_their_answers_wait_for_it() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Pipelined, 64, "")).unwrap();
            assert_eq!(h.record(ev(1)).await.unwrap(), 1);
            h.delay_syncs(300);
            let s = h.session_scope();
            // Nothing owed yet: released at once.
            s.release_ready().await.unwrap();
            let started = Instant::now();
            let seq = s.record_statement(read(1)).await.unwrap();
            // Answered from the WAL, before its fsync ended...
            assert!(started.elapsed() < Duration::from_millis(250));
            assert!(h.stats().durable_seq < seq, "{:?}", h.stats());
            assert_eq!(h.stats().last_seq, seq);
            // ...and the answer is held until it did.
            s.release_ready().await.unwrap();
            assert!(h.stats().durable_seq >= seq);
            // Another session owes nothing.
            h.session_scope().release_ready().await.unwrap();
            // A write is answered only once durable, as with strict.
            let w = s.record_statement(write(2)).await.unwrap();
            assert!(h.stats().durable_seq >= w);
            h.delay_syncs(0);
            h.shutdown().await;
            task.join().unwrap();
            assert!(crate::audit::verify(&path, None).unwrap().is_intact());
        }

        #[tokio::test]
        async fn a_pipelined_answer_is_never_released_when_its_fsync_failed() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Pipelined, 64, "")).unwrap();
            let s = h.session_scope();
            h.fail_next_syncs(1);
            let seq = s.record_statement(read(1)).await.unwrap();
            let err = s.release_ready().await.unwrap_err();
            assert!(matches!(err, AuditError::Sync { .. }), "{err}");
            assert!(h.stats().durable_seq < seq);
            // Still refused after a later fsync succeeded.
            let other = h.session_scope();
            let next = other.record_statement(read(2)).await.unwrap();
            other.release_ready().await.unwrap();
            assert!(h.stats().durable_seq >= next);
            assert!(s.release_ready().await.is_err());
            h.shutdown().await;
            task.join().unwrap();
        }

        #[tokio::test]
        async fn strict_answers_only_durable_records_and_owes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Full, 64, "")).unwrap();
            let s = h.session_scope();
            let seq = s.record_statement(read(1)).await.unwrap();
            assert!(h.stats().durable_seq >= seq);
            s.release_ready().await.unwrap();
            h.shutdown().await;
            task.join().unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn relaxed_answers_from_the_wal_and_fsyncs_within_the_interval() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let (h, task) = spawn(&path, opts(SyncMode::Relaxed, 64, "")).unwrap();
            h.delay_syncs(100);
            let seq = h.record_statement(write(1)).await.unwrap();
            // Answered before any fsync covered it (in the WAL already).
            assert!(h.stats().durable_seq < seq);
            let c = Connection::open(&path).unwrap();
            let n: u64 = c
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, seq);
            let deadline =
                Instant::now() + MAX_TICK + RELAXED_SYNC_INTERVAL + Duration::from_secs(2);
            while h.stats().durable_seq < seq {
                assert!(Instant::now() < deadline, "never fsynced: {:?}", h.stats());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            h.shutdown().await;
            task.join().unwrap();
        }
    }
    mod compact_records {
        //! Statements stored as compact records (issue 17 lever 1), and a
        //! store written before them.
        use super::*;
        use crate::audit::event::{StatementDecision, StatementPhase};
        use crate::audit::ocsf::{decode_statement, tests::sample_statement};

        fn stmt(phase: StatementPhase, n: u64) -> StatementEvent {
            sample_statement(phase, StatementDecision::Allowed, n)
        }

        #[tokio::test]
        async fn a_schema_4_store_with_json_statements_migrates_and_reads_as_one_trail() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            // A store as schema 4 wrote it: statements in OCSF JSON.
            LEGACY_JSON.with(|c| c.set(true));
            let (h, task) = spawn(&path, opts(SyncMode::Full, 64, "host1")).unwrap();
            h.record(ev(1)).await.unwrap();
            h.record_statement(stmt(StatementPhase::Request, 1))
                .await
                .unwrap();
            h.record_statement(stmt(StatementPhase::Result, 1))
                .await
                .unwrap();
            h.shutdown().await;
            task.join().unwrap();
            LEGACY_JSON.with(|c| c.set(false));
            {
                let c = Connection::open(&path).unwrap();
                c.execute(
                    "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
                    [],
                )
                .unwrap();
                let json: Vec<u8> = c
                    .query_row("SELECT data FROM events WHERE seq = 2", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(json.first(), Some(&b'{'));
            }
            // This build opens it (schema 5), keeps the old rows as they
            // are and stores new statements compactly.
            let (h, task) = spawn(&path, opts(SyncMode::Full, 64, "host1")).unwrap();
            let req = h
                .record_statement(stmt(StatementPhase::Request, 2))
                .await
                .unwrap();
            let res = h
                .record_statement(stmt(StatementPhase::Result, 2))
                .await
                .unwrap();
            h.shutdown().await;
            task.join().unwrap();
            let c = Connection::open(&path).unwrap();
            assert_eq!(read_schema_version(&c).unwrap(), Some(SCHEMA_VERSION));
            let old_len: usize = c
                .query_row("SELECT length(data) FROM events WHERE seq = 2", [], |r| {
                    r.get(0)
                })
                .unwrap();
            for seq in [req, res] {
                let data: Vec<u8> = c
                    .query_row("SELECT data FROM events WHERE seq = ?1", [seq], |r| {
                        r.get(0)
                    })
                    .unwrap();
                assert!(crate::audit::record::is_record(&data));
                assert!(data.len() * 4 < old_len, "{} vs {old_len}", data.len());
            }
            // verify checks both kinds (hash and columns)...
            let report = crate::audit::verify(&path, None).unwrap();
            assert!(report.is_intact(), "{report:?}");
            // ...the reader shows both as OCSF...
            let r = crate::audit::AuditReader::open(&path).unwrap();
            let all = r.query(&Default::default(), 0, 100).unwrap();
            let stmts: Vec<_> = all
                .iter()
                .filter(|e| e.class_uid == CLASS_UID_DATASTORE_ACTIVITY)
                .map(|e| decode_statement(&e.data).unwrap())
                .collect();
            assert_eq!(stmts.len(), 4);
            assert_eq!(stmts[0].record, None);
            assert_eq!(stmts[2].record, Some(crate::audit::record::RECORD_VERSION));
            assert_eq!(stmts[2].seq, req);
            assert_eq!(stmts[2].host.as_deref(), Some("host1"));
            assert_eq!(stmts[2].event.statement, stmts[0].event.statement);
            assert_eq!(stmts[3].event.result, stmts[1].event.result);
            // ...and an export of both verifies offline.
            let out = dir.path().join("bundle");
            crate::audit::export(&path, 0, i64::MAX / 2, &out).unwrap();
            crate::audit::verify_export(&out).unwrap();
        }
    }
}
