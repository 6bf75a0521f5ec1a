//! `[audit]`: the model (store path, durability, batching, checkpoints,
//! retention) and its checks.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Diags;
use super::load::Decoded;
use super::model::defaults;
use super::validate::check_absolute;

/// Bounds of `audit.batch_max` and `audit.retention_days`.
const MAX_BATCH: usize = 10_000;
const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// SQLite file; default `<state_dir>/audit.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `"pipelined"` (default), `"strict"` (`"full"`), `"relaxed"` or
    /// `"normal"`.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Most events in one commit.
    #[serde(default = "defaults::batch_max")]
    pub batch_max: usize,
    /// Sign a checkpoint after this many events (0: never by count).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Sign a checkpoint this many seconds after the last one when events
    /// were recorded since (0: never by time). One is always signed at shutdown.
    #[serde(default = "defaults::checkpoint_interval_secs")]
    pub checkpoint_interval_secs: u64,
    /// Keep events this many days (1..=36500); older events that every
    /// forwarder has acknowledged are pruned, at a signed checkpoint.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u32,
}

/// `[audit] synchronous`: the durability of audit records, named by what
/// each promises (see `audit::store::SyncMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every record on disk before its effect (`full` is the old name).
    #[serde(alias = "full")]
    Strict,
    /// Reads: recorded in the WAL before forwarding, on disk before the
    /// answer is released; everything else as `strict`.
    #[default]
    Pipelined,
    /// Recorded in the WAL before the effect, fsynced on an interval.
    Relaxed,
    /// Recorded in the WAL; fsynced at SQLite's WAL checkpoints.
    Normal,
}

impl Default for AuditSection {
    /// The same values serde fills in for an empty `[audit]` table.
    fn default() -> Self {
        Self {
            path: None,
            synchronous: Synchronous::default(),
            batch_max: defaults::batch_max(),
            checkpoint_every: defaults::checkpoint_every(),
            checkpoint_interval_secs: defaults::checkpoint_interval_secs(),
            retention_days: defaults::retention_days(),
        }
    }
}

pub(super) fn check_audit(d: &Decoded, diags: &mut Diags<'_>) {
    if let Some(p) = &d.audit.path {
        check_absolute("audit.path", p, diags);
    }
    if !(1..=MAX_BATCH).contains(&d.audit.batch_max) {
        diags.at(
            "audit.batch_max",
            format!(
                "must be between 1 and {MAX_BATCH}, got {}",
                d.audit.batch_max
            ),
        );
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&d.audit.retention_days) {
        diags.at(
            "audit.retention_days",
            format!(
                "must be between 1 and {MAX_RETENTION_DAYS} (100 years), got {}",
                d.audit.retention_days
            ),
        );
    }
}
