//! Retention: [`Retention`] settings, [`PruneReport`], planning a cut at
//! a checkpoint and the writer's prune steps (delete and record the
//! prune in one transaction).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Pause between the steps of a prune that was capped at
/// [`PRUNE_STEP_MAX`].
pub(super) const PRUNE_STEP_PAUSE: Duration = Duration::from_secs(1);
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

    pub(super) fn max_age_ms(&self) -> i64 {
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
    pub(super) fn nothing(cutoff_ms: i64, acked_through: Option<u64>) -> Self {
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

/// A cut the prune may make.
pub(super) struct PruneCut {
    pub(super) from: u64,
    pub(super) through: u64,
    /// Signed head hash of `through`.
    pub(super) head: Hash,
    /// A later checkpoint would allow pruning more right away.
    pub(super) more: bool,
}

pub(super) enum PrunePlan {
    Nothing,
    Refused(String),
    Cut(PruneCut),
}

/// (size, body, signature) of a checkpoint row.
pub(super) type CheckpointParts = (u64, Vec<u8>, Vec<u8>);

/// Decide what a prune may delete (see [`Writer::prune_step`]).
pub(super) fn plan_prune(
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
    let keys = known_keys(stored_keys(conn)?, store);
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

impl Writer {
    /// A prune step when one is due (at start, every `Retention::every`, and
    /// right after a capped step).
    pub(super) fn scheduled_prune(&mut self) {
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
    pub(super) fn prune_step(&mut self, now_ms: i64) -> Result<PruneReport, AuditError> {
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
