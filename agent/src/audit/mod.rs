//! Audit trail: what Warden did with each connection, durably, before it
//! takes effect.
//!
//! This module owns
//! - the event model ([`event`]): plain data built by the proxy;
//! - the OCSF 1.8 encoding ([`ocsf`]): each event is encoded exactly once,
//!   and those bytes are what is stored (and later hash-chained and shipped);
//! - the SQLite store and its single writer ([`store`]): WAL, group commit,
//!   gap-free `seq`, a random `chain_id` per store; `record` resolves only
//!   after the event's transaction committed (audit before effect);
//! - the hash chain ([`chain`]): every stored event's `hash` covers its
//!   exact bytes, its seq, the chain id and the previous hash;
//! - signed checkpoints ([`checkpoint`]): an Ed25519 key next to the store
//!   signs (size, head hash, time, link to the previous checkpoint) every N
//!   events / T seconds and at shutdown; each checkpoint is also an event of
//!   the chain, so it travels with the stream;
//! - verification ([`verify`]): recomputes the chain, checks every
//!   checkpoint (and optionally an exported anchor) and names the first
//!   damaged seq and how it was damaged;
//! - database statements ([`event::StatementEvent`], OCSF Datastore
//!   Activity): a request event committed before the statement is
//!   forwarded, and a result event queued without waiting
//!   ([`AuditHandle::record_detached`]);
//! - read-only access for the CLI ([`reader`]): `warden audit tail`, usable
//!   while the daemon writes;
//! - session replay ([`replay`]): `warden audit replay`, one connection's
//!   open, statements (request and result merged) and close, in order;
//! - configuration changes ([`event::ConfigChange`]): each load/reload is a
//!   chain event (OCSF Device Config State Change);
//! - retention ([`store::Retention`]): the writer prunes events past
//!   retention and acknowledged by every forwarder, only at a kept
//!   checkpoint, and records each prune as a chain event, so `verify`
//!   accepts the shortened chain and still catches other deletions;
//! - evidence export ([`export`](mod@export)): a signed bundle of a time range for
//!   auditors, and its offline check;
//! - time arguments of the CLI ([`timespec`]).
//!
//! Recordings and forwarders build on this store in later layers (see
//! DESIGN.md §2); the store already has the forwarders' cursor table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod chain;
pub mod checkpoint;
mod counted;
pub mod event;
pub mod export;
pub mod ocsf;
pub mod reader;
pub mod reason;
pub mod record;
pub mod replay;
pub mod store;
#[cfg(test)]
pub(crate) mod testutil;
pub mod timespec;
pub mod verify;

// Convenience paths (`audit::AuditHandle`); a binary need not use them all.
#[allow(unused_imports)]
pub use checkpoint::{Checkpoint, CheckpointBody};
#[allow(unused_imports)]
pub use event::{
    ConfigAction, ConfigChange, ConnActivity, ConnectionEvent, Decision, ProcessInfo, PruneRecord,
    ResultSummary, SessionId, StatementDecision, StatementEvent, StatementPhase,
};
#[allow(unused_imports)]
pub use export::{ExportReport, ExportVerification, export, export_with_progress, verify_export};
#[allow(unused_imports)]
pub use ocsf::{encode_connection, encode_statement};
#[allow(unused_imports)]
pub use reader::{AuditReader, StoredEvent, TailFilter, format_text, latest_checkpoint};
#[allow(unused_imports)]
pub use store::{
    AuditHandle, AuditRecord, DurableSeq, PruneReport, Retention, SyncMode, WriterOptions,
    WriterStats, WriterTask,
};
#[allow(unused_imports)]
pub use timespec::parse_time;
#[allow(unused_imports)]
pub use verify::{Damage, Problem, Progress, VerifyReport, verify, verify_with_progress};

/// Open (creating, or migrating from an older schema, if needed) the store
/// at `path`, load or create its checkpoint key (`checkpoint.key`, 0600,
/// and `checkpoint.pub` in the same directory) and start its writer, with
/// the default retention (400 days, pruned at start and daily).
///
/// The parent directory is created with mode 0700 when missing, a new store
/// file with mode 0600.
pub fn spawn_writer(
    path: &Path,
    opts: WriterOptions,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    store::spawn(path, opts)
}

/// [`spawn_writer`] with an explicit retention (`[audit] retention_days`:
/// `Some(Retention::days(n))`; `None` never prunes).
pub fn spawn_writer_with(
    path: &Path,
    opts: WriterOptions,
    retention: Option<Retention>,
) -> Result<(AuditHandle, WriterTask), AuditError> {
    store::spawn_with(path, opts, retention)
}

/// Everything that can go wrong in the audit trail.
#[derive(thiserror::Error, Debug)]
pub enum AuditError {
    /// A filesystem step around the store failed (directory, file mode, ...).
    #[error("audit store: cannot {op} {path}: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Opening or preparing the SQLite store failed.
    #[error("cannot open audit store {path} ({op}): {source}", path = path.display())]
    Open {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a store this version of Warden can use.
    #[error("audit store {path}: {detail}", path = path.display())]
    Schema { path: PathBuf, detail: String },
    /// Committing a batch failed; every event of the batch gets this error
    /// (the source is shared between them).
    #[error("audit write failed ({op}): {source}")]
    Write {
        op: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A commit could not be made durable (fsync of the WAL failed); every
    /// record it covered gets this error.
    #[error("audit store {path}: fsync of the WAL failed: {source}", path = path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer is not running (shut down or never started).
    #[error("audit writer is not running")]
    Closed,
    /// The writer thread panicked (a bug; the store itself is unaffected).
    #[error("audit writer thread panicked")]
    WriterPanicked,
    /// No store file where one was expected (reader side).
    #[error("no audit store at {path} (is state_dir right?)", path = path.display())]
    NotFound { path: PathBuf },
    /// A read query failed.
    #[error("audit query failed ({op}): {source}")]
    Query {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Stored bytes are not an event this version of Warden can decode.
    #[error("cannot decode audit event: {detail}")]
    Decode { detail: String },
    /// Encoding an event to OCSF JSON failed.
    #[error("cannot encode audit event: {source}")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    /// The checkpoint signing key cannot be used.
    #[error("audit checkpoint key {path}: {detail}", path = path.display())]
    Key { path: PathBuf, detail: String },
    /// A checkpoint (an exported file, or the store's latest) is unusable.
    #[error("audit checkpoint: {detail}")]
    Checkpoint { detail: String },
    /// A time argument (`--from`, `--to`, `--since`) is not understood.
    #[error("invalid time {spec:?}: {detail}")]
    Time { spec: String, detail: String },
    /// An evidence export cannot be written.
    #[error("evidence export to {dir}: {detail}", dir = dir.display())]
    Export { dir: PathBuf, detail: String },
    /// An evidence bundle does not verify; `file` names the file at fault
    /// (`manifest.json` for the manifest or its signature).
    #[error("evidence bundle {dir}: {file}: {detail}", dir = dir.display())]
    Bundle {
        dir: PathBuf,
        file: String,
        detail: String,
    },
}
