//! The SQLite audit store, its single writer, and the writer's side of the
//! hash chain, signed checkpoints and retention.
//!
//! One dedicated OS thread owns the read-write connection (rusqlite is
//! blocking). Producers encode their event into a [`SeqTemplate`] (OCSF
//! JSON with the seq left open; the costly part, done in parallel on the
//! producers' threads) and hand it over a bounded channel through
//! [`AuditHandle::record`] (any [`AuditRecord`]); the writer takes everything queued
//! (up to `batch_max`), assigns gap-free sequence numbers, splices each seq
//! into its template, hashes the resulting bytes into the chain, inserts
//! the batch in ONE transaction (group commit) and only then answers each
//! producer. So a successful `record` means the event is committed (durable
//! with [`SyncMode::Full`]): audit before effect. With FULL the fsync is
//! not made inside the commit: a second thread ([`WalSyncer`]) fsyncs the
//! WAL and answers the producers of every commit it covers while the
//! writer goes on with the next batch (pipelined group commit).
//!
//! [`AuditHandle::record_detached`] (a statement's result phase)
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
//! Files: [`schema`] (layout, migrations, the SQL every module runs against
//! the store), [`handle`] (the producers' side: [`AuditHandle`], the overflow
//! and lazy queues), [`writer`] (the writer thread: batches, chain, checkpoints),
//! [`tail`] (the queries of `audit tail`), [`export`] (the exporter's reads), [`verify`] (the verifier's reads), [`forward`] (the forwarders' reads and cursors), [`prepare`] (the [`AuditRecord`] trait: what each event kind is stored
//! as), [`durability`] (sync modes, the WAL syncer and checkpointer) and
//! [`retention`] (prune planning and steps).

mod durability;
mod export;
mod forward;
mod handle;
mod prepare;
mod retention;
mod schema;
mod tail;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

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

#[allow(clippy::wildcard_imports)]
use self::{durability::*, handle::*, schema::*, writer::*};

pub use durability::{RELAXED_SYNC_INTERVAL, SyncMode};
pub(crate) use export::{
    each_checkpoint_event_after, each_event_in, hash_through, seq_range_in_time,
};
pub(crate) use forward::{cursor_acked, cursor_advance, cursor_create, cursor_names, events_after};
pub use handle::{AuditHandle, DurableSeq, Prepared, WriterTask};
pub use prepare::{AuditRecord, PrepareCtx};
pub use retention::{PruneReport, Retention};
pub(crate) use schema::{
    acked_through, check_schema_version, latest_checkpoint_row, max_seq, read_chain_id,
    read_schema_version, stored_keys,
};
pub use tail::{StoredEvent, TailFilter};
pub(crate) use tail::{has_meta_table, tail_events, tail_start_seq};
pub(crate) use verify::{
    CheckpointRow, Raw, chain_window, checkpoint_rows, event_span, event_walk, int_at,
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
    /// [`AuditHandle::record_detached`]).
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
