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
//! - read-only access for the CLI ([`reader`]): `warden audit tail`, usable
//!   while the daemon writes.
//!
//! Hash chain, signed checkpoints, recordings, export and forwarder cursors
//! build on this store in later layers (see DESIGN.md §2).

use std::path::PathBuf;
use std::sync::Arc;

pub mod event;
pub mod ocsf;
pub mod reader;
pub mod store;

// Convenience paths (`audit::AuditHandle`); a binary need not use them all.
#[allow(unused_imports)]
pub use event::{ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId};
#[allow(unused_imports)]
pub use ocsf::encode_connection;
#[allow(unused_imports)]
pub use reader::{AuditReader, StoredEvent, TailFilter, format_text};
#[allow(unused_imports)]
pub use store::{AuditHandle, SyncMode, WriterStats, WriterTask, spawn_writer};

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
}
