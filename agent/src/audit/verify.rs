//! Verification of a store's hash chain and checkpoints (`warden audit
//! verify`): read-only, in one read transaction (a consistent snapshot while
//! the daemon keeps writing).
//!
//! What is checked:
//! - every event, in seq order: seqs start at 1 without gaps (or, after a
//!   retention prune, right after a valid checkpoint of the store, from
//!   whose signed head the walk starts), the stored hash equals the hash
//!   recomputed from the stored bytes and the previous row's stored hash,
//!   and the indexed columns agree with the hashed data;
//! - a store that starts after seq 1 must have been cut there by a prune:
//!   the latest prune event in the chain must record removing exactly the
//!   events before the start; any other missing prefix is `Deleted`;
//! - every `checkpoints` row, in id order: canonical body, columns equal to
//!   the body, origin = this chain, signature under a known key (the `keys`
//!   table or `checkpoint.pub`), `prev_checkpoint_hash` links to the row
//!   before (the first row links to nothing), sizes grow; and that it is
//!   the same checkpoint as the chain event at `size + 1` (and every
//!   checkpoint event has its row);
//! - every valid checkpoint, and the optional anchor (a checkpoint exported
//!   earlier, e.g. kept off-host), against the chain: the hash of event
//!   `size` equals its `head_hash`, and the store still reaches `size + 1`.
//!
//! The per-row checks need only the row and the previous row's stored
//! hash, so worker threads run them over chunks of rows while this thread
//! reads the next chunk; results are applied in seq order, so the report is
//! the same as a sequential walk's.
//!
//! The report names the FIRST damaged seq and classifies it (see
//! [`Damage`]). Comparing each row with its neighbours' stored hashes
//! (rather than only with a recomputed chain) localises damage: a changed
//! row breaks only its own link, so the classification below can tell what
//! happened at that seq. Limits, inherent to a hash chain: a row whose data
//! *and* hash were rewritten consistently is seen at the next row (whose
//! link breaks); a consistent rewrite of a whole range (recomputed hashes)
//! is seen only by a signed checkpoint or the anchor covering it, and is
//! reported from the first seq that no checkpoint vouches for; rows appended
//! with correct hashes after the last checkpoint are indistinguishable from
//! genuine events until a later checkpoint (or the forwarded stream)
//! covers them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use serde::Serialize;

use super::AuditError;
use super::chain::{ChainKey, GENESIS, Hash, event_hash};
use super::checkpoint::{Checkpoint, ORIGIN_PREFIX, known_keys};
use super::ocsf::{
    APPROVAL_ACTIVITY, CHECKPOINT_ACTIVITY, CLASS_UID_APPLICATION_LIFECYCLE, CONFIG_ACTIVITY,
    EventKind, NO_DECISION, PRUNE_ACTIVITY, Probe, activity_from_id, activity_str, class_of,
    decode_checkpoint, probe_fast, statement_activity_str,
};
use super::reader::AuditReader;
use super::store::{self, CheckpointRow, Raw, int_at, stored_keys};

/// How many rows after a broken link are examined to classify it.
const CLASSIFY_WINDOW: usize = 1024;

/// What happened at the first damaged seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// The row's data (or an indexed column) no longer matches its hash or
    /// the chain; also a consistently rewritten range caught by a
    /// checkpoint.
    Modified,
    /// A seq is missing (a gap, or a row removed and later rows renumbered).
    Deleted,
    /// Rows swapped places: the data at this seq chains at another seq and
    /// vice versa.
    Reordered,
    /// A forged row: one that breaks the chain while the rows around it
    /// chain to each other (later rows renumbered), or an unverifiable row
    /// appended after the last checkpoint.
    Inserted,
    /// A checkpoint or the anchor covers seqs the store no longer has.
    Truncated,
    /// A checkpoint's signature, body, link or event is invalid.
    BadCheckpoint,
}

impl Damage {
    pub fn as_str(self) -> &'static str {
        match self {
            Damage::Modified => "modified",
            Damage::Deleted => "deleted",
            Damage::Reordered => "reordered",
            Damage::Inserted => "inserted",
            Damage::Truncated => "truncated",
            Damage::BadCheckpoint => "bad_checkpoint",
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first damage found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// First damaged seq (for a checkpoint: the seq of its event,
    /// `size + 1`; for truncation: the first missing seq).
    pub seq: u64,
    pub kind: Damage,
    pub detail: String,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub chain_id: String,
    /// Event rows in the store (checkpoint events included).
    pub events: u64,
    /// Rows in the `checkpoints` table.
    pub checkpoints: u64,
    /// Lowest and highest stored seq (0 when the store is empty).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Highest seq vouched for by a valid checkpoint (or the anchor) whose
    /// head matched the chain; 0 when none.
    pub signed_through: u64,
    /// Events up to this seq were removed by retention (recorded by a
    /// prune event; the chain resumes after the checkpoint of this seq); 0
    /// when nothing was pruned.
    pub pruned_through: u64,
    /// `size` of the anchor checkpoint, when one was given.
    pub anchor_size: Option<u64>,
    /// Ids of the keys that signed the store's checkpoints, in order of
    /// first use.
    pub key_ids: Vec<String>,
    /// `None` when the chain is intact.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// True when no damage was found.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chain {}", self.chain_id)?;
        if self.events == 0 {
            writeln!(f, "  events:      0")?;
        } else {
            writeln!(
                f,
                "  events:      {} (seq {}..={})",
                self.events, self.first_seq, self.last_seq
            )?;
        }
        if self.pruned_through > 0 {
            writeln!(
                f,
                "  pruned:      events 1..={} removed by retention; the chain resumes at the \
                 checkpoint of seq {}",
                self.pruned_through, self.pruned_through
            )?;
        }
        write!(f, "  checkpoints: {}", self.checkpoints)?;
        if self.signed_through > 0 {
            write!(f, ", signed through seq {}", self.signed_through)?;
        }
        writeln!(f)?;
        if let Some(size) = self.anchor_size {
            writeln!(f, "  anchor:      checkpoint of seq {size}")?;
        }
        if self.key_ids.is_empty() {
            writeln!(f, "  keys:        none")?;
        } else {
            writeln!(f, "  keys:        {}", self.key_ids.join(", "))?;
        }
        match &self.problem {
            None => write!(f, "chain intact"),
            Some(p) => write!(
                f,
                "FIRST PROBLEM at seq {}: {}: {}",
                p.seq, p.kind, p.detail
            ),
        }
    }
}

/// Verify the store at `path` (read-only; usable while the daemon writes)
/// and, when given, that it still contains and matches `anchor`.
///
/// `Err` means the store (or the anchor) could not be examined at all: no
/// store, not a v2 store, an anchor of another chain or with a bad
/// signature. Damage is reported in [`VerifyReport::problem`].
pub fn verify(path: &Path, anchor: Option<&Checkpoint>) -> Result<VerifyReport, AuditError> {
    verify_with_progress(path, anchor, &|_, _| {})
}

/// Called now and then with (events checked, events in the store) while a
/// long audit command runs (`warden audit verify` draws a bar from it).
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// [`verify`], reporting its progress through the chain to `progress`.
pub fn verify_with_progress(
    path: &Path,
    anchor: Option<&Checkpoint>,
    progress: Progress<'_>,
) -> Result<VerifyReport, AuditError> {
    let reader = AuditReader::open(path)?;
    if reader.schema_version() < 2 {
        return Err(AuditError::Schema {
            path: path.to_owned(),
            detail: format!(
                "schema version {} has no hash chain yet; start `warden run` once to migrate it",
                reader.schema_version()
            ),
        });
    }
    let conn = reader.conn();
    let q = |op: &'static str| move |source| AuditError::Query { op, source };
    // Read the database file through a memory map rather than a copy per
    // page (the walk reads every page once). Best effort.
    let file_size = std::fs::metadata(path).map_or(0, |m| m.len());
    let _ = conn.pragma_update(None, "mmap_size", file_size.min(MAX_MMAP));
    // One snapshot for every query below.
    let snapshot = conn.unchecked_transaction().map_err(q("begin read"))?;
    let chain_id = reader.chain_id()?;
    let key = ChainKey::parse(&chain_id).map_err(|e| AuditError::Schema {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let (events, first, last) = store::event_span(conn).map_err(q("count events"))?;
    let keys = known_keys(stored_keys(conn).map_err(q("read keys"))?, path);
    let rows = store::checkpoint_rows(conn).map_err(q("read checkpoints"))?;

    let mut v = Verifier {
        key,
        origin: format!("{ORIGIN_PREFIX}{chain_id}"),
        chain_id: chain_id.clone(),
        problems: Vec::new(),
        vouchers: Vec::new(),
        by_event_seq: HashMap::new(),
        key_ids: Vec::new(),
        signed_through: 0,
        pruned_through: 0,
        prune_claims: 0,
    };
    v.check_checkpoint_rows(&rows, &keys);
    if let Some(anchor) = anchor {
        v.add_anchor(anchor, &keys)?;
    }
    v.vouchers.sort_by_key(|x| x.size);
    let first_seq = u64::try_from(first).unwrap_or(0);
    let last_seq = u64::try_from(last).unwrap_or(0);
    let total = u64::try_from(events).unwrap_or(0);
    let tick = |through: u64| progress(through.saturating_sub(first_seq.saturating_sub(1)), total);
    let walked = v.walk(conn, first_seq, &tick).map_err(q("read events"))?;
    if walked {
        v.check_truncation(last_seq);
        v.check_prunes(first_seq);
    }
    if let Some(anchor) = anchor {
        v.check_pruned_anchor(anchor, &rows);
    }
    drop(snapshot);

    let problem = v
        .problems
        .into_iter()
        .enumerate()
        // First seq; on a tie, damage to events before checkpoint
        // bookkeeping, then the first noted.
        .min_by_key(|(i, p)| (p.seq, p.kind == Damage::BadCheckpoint, *i))
        .map(|(_, p)| p);
    Ok(VerifyReport {
        chain_id,
        events: u64::try_from(events).unwrap_or(0),
        checkpoints: rows.len() as u64,
        first_seq: u64::try_from(first).unwrap_or(0),
        last_seq,
        signed_through: v.signed_through,
        pruned_through: v.pruned_through,
        anchor_size: anchor.map(Checkpoint::size),
        key_ids: v.key_ids,
        problem,
    })
}

/// Where a value lies in [`RowChunk::buf`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// One stored event row; variable-length values live in its chunk.
#[derive(Debug, Clone, Copy)]
struct RowAt {
    seq: i64,
    time_ms: Option<i64>,
    class_uid: Option<i64>,
    activity: Option<Span>,
    decision: Option<Span>,
    account: Option<Span>,
    target: Option<Span>,
    session: Option<Span>,
    reason: Option<Span>,
    data: Span,
    hash: Span,
}

/// Consecutive event rows (a unit of work of the walk), with every
/// variable-length value in one buffer: reading a row costs a copy, not an
/// allocation per column.
#[derive(Default)]
struct RowChunk {
    buf: Vec<u8>,
    rows: Vec<RowAt>,
}

impl RowChunk {
    fn with_capacity(rows: usize) -> Self {
        Self {
            buf: Vec::with_capacity(rows * 2048),
            rows: Vec::with_capacity(rows),
        }
    }

    fn bytes(&mut self, b: &[u8]) -> Span {
        let start = self.buf.len();
        self.buf.extend_from_slice(b);
        Span {
            start,
            len: b.len(),
        }
    }

    /// A TEXT value (`None` for NULL; BLOBs as their bytes, numbers as
    /// their decimal text: tampering is reported, never a failed read).
    fn text(&mut self, row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Span>> {
        Ok(match row.get_ref(idx)? {
            ValueRef::Null => None,
            ValueRef::Text(b) | ValueRef::Blob(b) => Some(self.bytes(b)),
            ValueRef::Integer(i) => Some(self.bytes(i.to_string().as_bytes())),
            ValueRef::Real(r) => Some(self.bytes(r.to_string().as_bytes())),
        })
    }

    /// A BLOB or TEXT value's bytes; empty for anything else.
    fn blob(&mut self, row: &Row<'_>, idx: usize) -> rusqlite::Result<Span> {
        Ok(match row.get_ref(idx)? {
            ValueRef::Text(b) | ValueRef::Blob(b) => self.bytes(b),
            _ => self.bytes(&[]),
        })
    }

    fn push(&mut self, r: &Row<'_>) -> rusqlite::Result<()> {
        let row = RowAt {
            seq: r.get(0)?,
            time_ms: int_at(r, 1)?,
            class_uid: int_at(r, 2)?,
            activity: self.text(r, 3)?,
            decision: self.text(r, 4)?,
            account: self.text(r, 5)?,
            target: self.text(r, 6)?,
            session: self.text(r, 7)?,
            reason: self.text(r, 8)?,
            data: self.blob(r, 9)?,
            hash: self.blob(r, 10)?,
        };
        self.rows.push(row);
        Ok(())
    }

    fn get(&self, s: Span) -> &[u8] {
        self.buf.get(s.start..s.start + s.len).unwrap_or_default()
    }

    fn opt(&self, s: Option<Span>) -> Option<&[u8]> {
        s.map(|s| self.get(s))
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// A checkpoint trusted to say what the hash of event `size` is.
struct Voucher {
    size: u64,
    head: Hash,
    label: String,
    /// A row of the store's `checkpoints` (not the anchor).
    from_store: bool,
}

struct Verifier {
    key: ChainKey,
    chain_id: String,
    origin: String,
    problems: Vec<Problem>,
    /// Valid checkpoints and the anchor, sorted by size before the walk.
    vouchers: Vec<Voucher>,
    /// Checkpoint rows by the seq of their chain event: (id, body, signature).
    by_event_seq: HashMap<u64, (i64, Vec<u8>, Vec<u8>)>,
    key_ids: Vec<String>,
    signed_through: u64,
    /// The walk started after the checkpoint of this seq (0: at seq 1).
    pruned_through: u64,
    /// Highest `through_seq` of the prune events seen by the walk.
    prune_claims: u64,
}

impl Verifier {
    fn note(&mut self, seq: u64, kind: Damage, detail: String) {
        self.problems.push(Problem { seq, kind, detail });
    }

    /// Check every `checkpoints` row on its own and its link to the row
    /// before; valid ones become vouchers.
    fn check_checkpoint_rows(
        &mut self,
        rows: &[CheckpointRow],
        keys: &HashMap<String, ed25519_dalek::VerifyingKey>,
    ) {
        let mut prev: Option<(i64, Hash, u64)> = None;
        for row in rows {
            let col_size = row.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            let cp = match Checkpoint::from_parts(row.body.clone(), row.signature.clone(), None) {
                Ok(cp) => cp,
                Err(e) => {
                    let at = col_size.saturating_add(1);
                    self.note(
                        at,
                        Damage::BadCheckpoint,
                        format!("checkpoint #{}: {e}", row.id),
                    );
                    self.by_event_seq
                        .insert(at, (row.id, row.body.clone(), row.signature.clone()));
                    prev = Some((row.id, super::chain::sha256(&row.body), col_size));
                    continue;
                }
            };
            let size = cp.size();
            let at = size.saturating_add(1);
            self.by_event_seq
                .insert(at, (row.id, row.body.clone(), row.signature.clone()));
            if !self.key_ids.iter().any(|k| k == cp.key_id()) {
                self.key_ids.push(cp.key_id().to_owned());
            }
            let b = cp.body();
            let bad = if b.origin != self.origin {
                Some(format!("belongs to {:?}, not this chain", b.origin))
            } else if row.size != i64::try_from(size).ok()
                || row.head_hash != cp.head_hash()[..]
                || row.time_ms != Some(b.time_ms)
                || row.prev_hash
                    != cp
                        .prev_checkpoint_hash()
                        .map(|h| h.to_vec())
                        .unwrap_or_default()
                || row.key_id != b.key_id.as_bytes()
            {
                Some("its columns differ from its signed body".to_owned())
            } else if let Some(problem) = match keys.get(cp.key_id()) {
                None => Some(format!("signed by unknown key {}", cp.key_id())),
                Some(k) if !cp.signature_valid(k) => Some(format!(
                    "signature does not verify under key {}",
                    cp.key_id()
                )),
                Some(_) => None,
            } {
                Some(problem)
            } else {
                match (&prev, cp.prev_checkpoint_hash()) {
                    (None, None) => None,
                    (None, Some(_)) => Some(
                        "links to an earlier checkpoint, but it is the first one \
                         (earlier checkpoints deleted?)"
                            .to_owned(),
                    ),
                    (Some((id, _, _)), None) => Some(format!(
                        "links to no earlier checkpoint, but follows checkpoint #{id}"
                    )),
                    (Some((id, digest, _)), Some(link)) if link != digest => Some(format!(
                        "does not link to checkpoint #{id} before it (a checkpoint between \
                         them deleted or altered?)"
                    )),
                    (Some((id, _, psize)), Some(_)) if size <= *psize => Some(format!(
                        "covers seq {size}, not beyond checkpoint #{id} (seq {psize})"
                    )),
                    _ => None,
                }
            };
            match bad {
                Some(detail) => self.note(
                    at,
                    Damage::BadCheckpoint,
                    format!("checkpoint #{} (of seq {size}): {detail}", row.id),
                ),
                None => self.vouchers.push(Voucher {
                    size,
                    head: *cp.head_hash(),
                    label: format!("checkpoint #{}", row.id),
                    from_store: true,
                }),
            }
            prev = Some((row.id, cp.digest(), size));
        }
    }

    /// The anchor must be a valid checkpoint of this chain; then it vouches
    /// like the store's own.
    fn add_anchor(
        &mut self,
        anchor: &Checkpoint,
        keys: &HashMap<String, ed25519_dalek::VerifyingKey>,
    ) -> Result<(), AuditError> {
        let bad = |detail: String| AuditError::Checkpoint {
            detail: format!("anchor: {detail}"),
        };
        if anchor.body().origin != self.origin {
            return Err(bad(format!(
                "is a checkpoint of {:?}, not of this store ({})",
                anchor.body().origin,
                self.origin
            )));
        }
        let key = match anchor.embedded_key().map_err(bad)? {
            Some(k) => k,
            None => *keys
                .get(anchor.key_id())
                .ok_or_else(|| bad(format!("signed by unknown key {}", anchor.key_id())))?,
        };
        if !anchor.signature_valid(&key) {
            return Err(bad("signature does not verify".into()));
        }
        self.vouchers.push(Voucher {
            size: anchor.size(),
            head: *anchor.head_hash(),
            label: "the anchor".into(),
            from_store: false,
        });
        Ok(())
    }

    /// Walk the events in seq order (from seq 1, or right after the
    /// checkpoint a retention prune kept). Returns true when it reached the
    /// end (false when it stopped at damage).
    ///
    /// The per-row work (hash, columns against the data, checkpoint rows)
    /// needs only the row and the previous row's stored hash, so it runs on
    /// worker threads over chunks of rows; this thread reads the rows and
    /// applies the results in seq order.
    fn walk(
        &mut self,
        conn: &Connection,
        first: u64,
        tick: &dyn Fn(u64),
    ) -> rusqlite::Result<bool> {
        let Some((expected, prev)) = self.walk_start(first) else {
            return Ok(false);
        };
        let mut w = WalkState {
            expected,
            prev: prev.to_vec(),
            prev2: None,
            vi: self.vouchers.partition_point(|v| v.size < expected),
        };
        let by_event_seq = std::mem::take(&mut self.by_event_seq);
        let ctx = RowCtx {
            key: self.key,
            chain_id: self.chain_id.clone(),
            by_event_seq: &by_event_seq,
        };
        // This thread reads rows; the others check them.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .clamp(1, MAX_WORKERS);
        let in_flight = (workers * 2).max(4);
        let mut stmt = store::event_walk(conn)?;
        let mut rows = stmt.query([])?;
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(workers * 2);
        let job_rx = std::sync::Mutex::new(job_rx);
        let (res_tx, res_rx) = std::sync::mpsc::channel::<Done>();
        let outcome = std::thread::scope(|scope| -> rusqlite::Result<bool> {
            for _ in 0..workers {
                let (job_rx, res_tx, ctx) = (&job_rx, res_tx.clone(), &ctx);
                scope.spawn(move || {
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((id, prev, chunk)) = job else { return };
                        let verdicts = check_rows(ctx, prev, &chunk);
                        if res_tx.send((id, chunk, verdicts)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(res_tx);
            // Every way out of the loop must drop `job_tx`, or the workers
            // wait forever and the scope never ends.
            let mut feed_and_apply = || -> rusqlite::Result<bool> {
                // Chunks handed back, for reuse.
                let mut spare: Vec<RowChunk> = Vec::new();
                let mut chunk_prev = w.prev.clone();
                let (mut sent, mut applied) = (0usize, 0usize);
                let mut done: std::collections::BTreeMap<usize, (RowChunk, Vec<Verdict>)> =
                    Default::default();
                let mut reading = true;
                // The next chunk of rows and the stored hash before it.
                let mut next_chunk =
                    |spare: &mut Vec<RowChunk>,
                     reading: &mut bool|
                     -> rusqlite::Result<Option<(Vec<u8>, RowChunk)>> {
                        let mut chunk = spare
                            .pop()
                            .unwrap_or_else(|| RowChunk::with_capacity(CHUNK_ROWS));
                        while chunk.len() < CHUNK_ROWS {
                            match rows.next()? {
                                Some(row) => chunk.push(row)?,
                                None => {
                                    *reading = false;
                                    break;
                                }
                            }
                        }
                        let Some(last) = chunk.rows.last().map(|r| chunk.get(r.hash).to_vec())
                        else {
                            spare.push(chunk);
                            return Ok(None);
                        };
                        Ok(Some((std::mem::replace(&mut chunk_prev, last), chunk)))
                    };
                loop {
                    // Keep the workers fed.
                    while reading && sent - applied < in_flight {
                        let Some((prev, chunk)) = next_chunk(&mut spare, &mut reading)? else {
                            break;
                        };
                        if job_tx.send((sent, prev, chunk)).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    if applied == sent {
                        break Ok(true);
                    }
                    // A finished chunk; while there is none, check the next
                    // chunk on this thread rather than wait.
                    let finished = match res_rx.try_recv() {
                        Ok(d) => Some(d),
                        Err(std::sync::mpsc::TryRecvError::Empty)
                            if reading && sent - applied < in_flight * 4 =>
                        {
                            match next_chunk(&mut spare, &mut reading)? {
                                Some((prev, chunk)) => {
                                    let verdicts = check_rows(&ctx, prev, &chunk);
                                    sent += 1;
                                    Some((sent - 1, chunk, verdicts))
                                }
                                None => None,
                            }
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => match res_rx.recv() {
                            Ok(d) => Some(d),
                            // Workers are gone (a panic): nothing more to learn.
                            Err(_) => break Ok(true),
                        },
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break Ok(true),
                    };
                    if let Some((id, rows_done, verdicts)) = finished {
                        done.insert(id, (rows_done, verdicts));
                    }
                    let mut stopped = false;
                    while let Some((mut rows_done, verdicts)) = done.remove(&applied) {
                        applied += 1;
                        for (i, v) in verdicts.into_iter().enumerate() {
                            if !self.apply(conn, &mut w, &rows_done, i, v)? {
                                stopped = true;
                                break;
                            }
                        }
                        if stopped {
                            break;
                        }
                        tick(w.expected.saturating_sub(1));
                        rows_done.buf.clear();
                        rows_done.rows.clear();
                        spare.push(rows_done);
                    }
                    if stopped {
                        break Ok(false);
                    }
                }
            };
            let result = feed_and_apply();
            drop(job_tx);
            result
        });
        self.by_event_seq = by_event_seq;
        outcome
    }

    /// Where the walk starts: seq 1 from genesis, or (after a retention
    /// prune) right after a valid checkpoint of the store, from its signed
    /// head. `None` (with the problem noted) when neither applies.
    fn walk_start(&mut self, first: u64) -> Option<(u64, Hash)> {
        let (expected, head) = if first > 1 {
            let Some(v) = self
                .vouchers
                .iter()
                .find(|v| v.from_store && v.size + 1 == first)
            else {
                let detail = format!(
                    "events 1..={} are missing, and no valid checkpoint of seq {} anchors the \
                     rest (a retention prune always cuts at one)",
                    first - 1,
                    first - 1
                );
                self.note(1, Damage::Deleted, detail);
                return None;
            };
            self.pruned_through = first - 1;
            self.signed_through = first - 1;
            (first, v.head)
        } else {
            (1, GENESIS)
        };
        // Whatever else vouches for the seq before the start must agree.
        let disagree = self
            .vouchers
            .iter()
            .find(|v| v.size + 1 == expected && v.head != head)
            .map(|v| (v.size, v.label.clone()));
        if let Some((size, label)) = disagree {
            let (seq, kind, detail) = if size == 0 {
                (
                    1,
                    Damage::Modified,
                    format!("{label} covers no event but its head is not empty"),
                )
            } else {
                (
                    expected,
                    Damage::BadCheckpoint,
                    format!(
                        "{label} of seq {size} disagrees with the store's checkpoint of that \
                         seq, where the chain resumes after pruning"
                    ),
                )
            };
            self.note(seq, kind, detail);
            return None;
        }
        Some((expected, head))
    }

    /// Apply one checked row in seq order. Returns false at the first
    /// damage (noted).
    fn apply(
        &mut self,
        conn: &Connection,
        w: &mut WalkState,
        chunk: &RowChunk,
        i: usize,
        c: Verdict,
    ) -> rusqlite::Result<bool> {
        let Some(&r) = chunk.rows.get(i) else {
            return Ok(true);
        };
        let Some(seq) = u64::try_from(r.seq).ok().filter(|s| *s >= 1) else {
            self.note(
                0,
                Damage::Inserted,
                format!("a row has seq {} (seqs start at 1)", r.seq),
            );
            return Ok(false);
        };
        if seq > w.expected {
            let expected = w.expected;
            let detail = if seq == expected + 1 {
                format!("event {expected} is missing")
            } else {
                format!("events {expected}..={} are missing", seq - 1)
            };
            self.note(expected, Damage::Deleted, detail);
            return Ok(false);
        }
        if !c.hash_ok {
            let next = store::chain_window(conn, CLASSIFY_WINDOW, seq)?;
            let p = classify(
                &self.key,
                &w.prev,
                w.prev2.as_deref(),
                &Raw {
                    seq,
                    data: chunk.get(r.data).to_vec(),
                    hash: chunk.get(r.hash).to_vec(),
                },
                &next,
                &self.vouchers,
            );
            self.problems.push(p);
            return Ok(false);
        }
        if let Some(detail) = c.column {
            self.note(seq, Damage::Modified, detail);
            return Ok(false);
        }
        if let Some(detail) = c.checkpoint {
            self.note(seq, Damage::BadCheckpoint, detail);
            return Ok(false);
        }
        if let Some(through) = c.prune_through {
            self.prune_claims = self.prune_claims.max(through);
        }
        let hash = chunk.get(r.hash);
        while let Some(v) = self.vouchers.get(w.vi).filter(|v| v.size <= seq) {
            // Smaller sizes were matched at their own seq (no gaps).
            if v.size == seq {
                if v.head[..] != *hash {
                    let from = self.signed_through + 1;
                    let detail = format!(
                        "events {from}..={seq} were rewritten: the chain's hash of event \
                         {seq} is {}, {} signed {}",
                        hex::encode(hash),
                        v.label,
                        hex::encode(v.head)
                    );
                    self.note(from, Damage::Modified, detail);
                    return Ok(false);
                }
                self.signed_through = seq;
            }
            w.vi += 1;
        }
        let prev2 = w.prev2.get_or_insert_with(Vec::new);
        std::mem::swap(prev2, &mut w.prev);
        w.prev.clear();
        w.prev.extend_from_slice(hash);
        w.expected = seq + 1;
        Ok(true)
    }

    /// After a complete walk: a store that starts after seq 1 must have
    /// been pruned to exactly there, as recorded by the latest prune event
    /// in the chain; rows removed any other way are deletions.
    fn check_prunes(&mut self, first: u64) {
        let start = self.pruned_through;
        let claimed = self.prune_claims;
        if claimed < start {
            let (from, detail) = if claimed == 0 {
                (
                    1,
                    format!(
                        "events 1..={start} are missing and no prune event records removing \
                         them (the store resumes at the checkpoint of seq {start})"
                    ),
                )
            } else {
                (
                    claimed + 1,
                    format!(
                        "events {}..={start} are missing: the last prune removed events only \
                         through seq {claimed}",
                        claimed + 1
                    ),
                )
            };
            self.note(from, Damage::Deleted, detail);
        } else if claimed > start {
            let from = first.max(1);
            self.note(
                from,
                Damage::Inserted,
                format!(
                    "a prune event records removing events through seq {claimed}, but the \
                     store holds events from seq {from}"
                ),
            );
        }
    }

    /// An anchor whose events were pruned cannot be compared with events;
    /// it must then be one of the store's own (linked, verified)
    /// checkpoints.
    fn check_pruned_anchor(&mut self, anchor: &Checkpoint, rows: &[CheckpointRow]) {
        let size = anchor.size();
        if self.pruned_through == 0 || size >= self.pruned_through {
            return;
        }
        if rows.iter().any(|r| r.body[..] == *anchor.body_bytes()) {
            return;
        }
        self.note(
            size.saturating_add(1),
            Damage::BadCheckpoint,
            format!(
                "the anchor (checkpoint of seq {size}) covers pruned events and is not among \
                 the store's checkpoints: the checkpoint history differs from the one exported"
            ),
        );
    }

    /// After a complete walk: vouchers beyond the end mean the tail is gone.
    fn check_truncation(&mut self, last_seq: u64) {
        // A checkpoint of seq N is itself event N + 1.
        if let Some(v) = self
            .vouchers
            .iter()
            .filter(|v| v.size.saturating_add(1) > last_seq)
            .max_by_key(|v| v.size)
        {
            let detail = format!(
                "{} covers seq {} (and is itself event {}), but the store ends at seq {last_seq}",
                v.label,
                v.size,
                v.size.saturating_add(1)
            );
            self.note(last_seq + 1, Damage::Truncated, detail);
        }
    }
}

fn chains(key: &ChainKey, seq: u64, prev: &[u8], row: &Raw) -> bool {
    event_hash(key, seq, prev, &row.data)[..] == row.hash[..]
}

/// Classify a broken link at `row` (seq s, which is in sequence after the
/// last good row): `prev` is the stored hash of event s - 1 (genesis for
/// s = 1), `prev2` that of event s - 2 (genesis for s = 2, none for s = 1),
/// `next` the rows after s. Rules, first match wins:
/// 1. Reordered: the data of a later row t chains at s (from `prev`), and
///    row s's data chains at t: the two swapped places (with or without
///    their hashes). Checked first: a swap of data alone leaves the stored
///    hashes in place, which rule 2 would take for an in-place change.
/// 2. Modified: the next row chains from row s's stored hash (or a valid
///    checkpoint signed that hash), so the hash is genuine and the data
///    changed in place.
/// 3. Inserted: the next row chains from `prev` as seq s: row s was
///    inserted and the later rows renumbered up by one.
/// 4. Inserted at s - 1: row s chains from event s - 2 as seq s - 1: the
///    row before it (which chains, being forged with a correct hash) was
///    inserted and the later rows renumbered.
/// 5. Deleted: the next row chains from row s as seq next + 1: an event
///    before row s was removed and the later rows renumbered down by one.
/// 6. Inserted: row s is the last row and nothing vouches for it: a row
///    appended after the fact.
/// 7. Modified otherwise (the detail says whether only the stored hash
///    was changed: the data still chains and the next row chains from it).
fn classify(
    key: &ChainKey,
    prev: &[u8],
    prev2: Option<&[u8]>,
    row: &Raw,
    next: &[Raw],
    vouchers: &[Voucher],
) -> Problem {
    let s = row.seq;
    let problem = |seq, kind, detail: String| Problem { seq, kind, detail };
    let first = next.first();
    // 1.
    for (k, other) in next.iter().enumerate() {
        let h = event_hash(key, s, prev, &other.data);
        if h[..] != other.hash[..] && h[..] != row.hash[..] {
            continue;
        }
        let prev_t: &[u8] = if k == 0 { &h } else { &next[k - 1].hash };
        let ht = event_hash(key, other.seq, prev_t, &row.data);
        if ht[..] == row.hash[..] || ht[..] == other.hash[..] {
            return problem(
                s,
                Damage::Reordered,
                format!(
                    "events {s} and {} swapped places: the data stored at {} belongs at {s} \
                     and vice versa",
                    other.seq, other.seq
                ),
            );
        }
    }
    // 2.
    let confirmed_by_next =
        first.is_some_and(|n| n.seq == s + 1 && chains(key, n.seq, &row.hash, n));
    let signed = vouchers
        .iter()
        .any(|v| v.size == s && v.head[..] == row.hash[..]);
    if confirmed_by_next || signed {
        let why = if confirmed_by_next {
            format!("event {} still chains from its stored hash", s + 1)
        } else {
            "a signed checkpoint vouches for its stored hash".to_owned()
        };
        return problem(
            s,
            Damage::Modified,
            format!(
                "the data of event {s} does not match its hash; {why}, so the data was changed"
            ),
        );
    }
    // 3.
    if let Some(n) = first
        && chains(key, s, prev, n)
    {
        return problem(
            s,
            Damage::Inserted,
            format!(
                "event {s} does not chain, but the row after it chains from event {} as seq \
                 {s}: a row was inserted at {s} and later rows renumbered",
                s - 1
            ),
        );
    }
    // 4.
    if let Some(p2) = prev2
        && s >= 2
        && chains(key, s - 1, p2, row)
    {
        return problem(
            s - 1,
            Damage::Inserted,
            format!(
                "event {s} chains from event {} as seq {}: the row at {} was inserted and \
                 later rows renumbered",
                s - 2,
                s - 1,
                s - 1
            ),
        );
    }
    // 5.
    if let Some(n) = first
        && chains(key, n.seq + 1, &row.hash, n)
    {
        return problem(
            s,
            Damage::Deleted,
            format!(
                "event {s} is missing: the rows from seq {s} on chain as if they were one seq \
                 later (renumbered to close the gap)"
            ),
        );
    }
    // 6.
    let vouched_later = vouchers.iter().any(|v| v.size >= s);
    if first.is_none() && !vouched_later {
        return problem(
            s,
            Damage::Inserted,
            format!(
                "the last event, {s}, does not chain from event {} and no checkpoint covers it: \
                 a row appended after the fact (or its data changed)",
                s - 1
            ),
        );
    }
    // 7.
    let recomputed = event_hash(key, s, prev, &row.data);
    let detail = if first.is_some_and(|n| n.seq == s + 1 && chains(key, n.seq, &recomputed, n)) {
        format!(
            "the stored hash of event {s} was changed (its data still chains from event {} \
             and event {} from it)",
            s - 1,
            s + 1
        )
    } else {
        format!(
            "event {s} does not chain from event {} (its data and hash were changed)",
            s - 1
        )
    };
    problem(s, Damage::Modified, detail)
}

/// Largest memory map `verify` asks SQLite for.
const MAX_MMAP: u64 = 1 << 36;

/// Most worker threads of a walk.
const MAX_WORKERS: usize = 4;
/// Rows per unit of work of a walk.
const CHUNK_ROWS: usize = 512;

/// A chunk of rows for a worker: (chunk number, stored hash of the row
/// before the chunk, rows).
type Job = (usize, Vec<u8>, RowChunk);

/// A worker's answer: the chunk back, and a verdict per row.
type Done = (usize, RowChunk, Vec<Verdict>);

/// Where the walk is.
struct WalkState {
    expected: u64,
    /// Stored hash of the last good row (or the start's head).
    prev: Vec<u8>,
    prev2: Option<Vec<u8>>,
    /// Next voucher to match.
    vi: usize,
}

/// What the workers need, shared read-only.
struct RowCtx<'a> {
    key: ChainKey,
    chain_id: String,
    /// Checkpoint rows by the seq of their chain event: (id, body,
    /// signature).
    by_event_seq: &'a HashMap<u64, (i64, Vec<u8>, Vec<u8>)>,
}

/// What a worker found about one row on its own.
struct Verdict {
    /// The stored hash is the hash of the row's data chained from the
    /// previous row's stored hash.
    hash_ok: bool,
    /// An indexed column differs from the hashed data.
    column: Option<String>,
    /// A checkpoint event and the `checkpoints` table disagree.
    checkpoint: Option<String>,
    /// For a prune event: the last seq it removed.
    prune_through: Option<u64>,
}

fn check_rows(ctx: &RowCtx<'_>, prev: Vec<u8>, chunk: &RowChunk) -> Vec<Verdict> {
    let mut out = Vec::with_capacity(chunk.len());
    let mut prev_span: Option<Span> = None;
    for r in &chunk.rows {
        let seq = u64::try_from(r.seq).unwrap_or(0);
        let before = prev_span.map_or(&prev[..], |s| chunk.get(s));
        let data = chunk.get(r.data);
        let hash_ok = event_hash(&ctx.key, seq, before, data)[..] == *chunk.get(r.hash);
        let (column, checkpoint, prune_through) = if hash_ok {
            inspect(ctx, chunk, r, seq)
        } else {
            (None, None, None)
        };
        prev_span = Some(r.hash);
        out.push(Verdict {
            hash_ok,
            column,
            checkpoint,
            prune_through,
        });
    }
    out
}

/// Column and checkpoint checks of a row whose hash verified.
fn inspect(
    ctx: &RowCtx<'_>,
    chunk: &RowChunk,
    r: &RowAt,
    seq: u64,
) -> (Option<String>, Option<String>, Option<u64>) {
    let stored = chunk.get(r.data);
    // A compact statement record is checked through its OCSF rendering
    // (the same columns derive from it).
    let rendered = match super::record::render(stored, seq, &ctx.chain_id) {
        Ok(std::borrow::Cow::Owned(json)) => Some(json),
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Err(e) => {
            let why = format!("event {seq} is an unreadable statement record: {e}");
            return (Some(why), None, None);
        }
    };
    let data = rendered.as_deref().unwrap_or(stored);
    let probed = probe_fast(data).ok();
    let kind = probed.as_ref().and_then(Probe::kind);
    let column = probed
        .as_ref()
        .and_then(|p| column_mismatch(chunk, r, seq, &ctx.chain_id, p, kind));
    let checkpoint = checkpoint_event_mismatch(ctx.by_event_seq, data, seq, kind);
    let prune_through = match (kind, &probed) {
        (Some(EventKind::Prune), Some(p)) => {
            p.unmapped.warden.prune.as_ref().map(|x| x.through_seq)
        }
        _ => None,
    };
    (column, checkpoint, prune_through)
}

/// Checkpoint events and `checkpoints` rows must correspond one to one.
fn checkpoint_event_mismatch(
    by_event_seq: &HashMap<u64, (i64, Vec<u8>, Vec<u8>)>,
    data: &[u8],
    seq: u64,
    kind: Option<EventKind>,
) -> Option<String> {
    let row = by_event_seq.get(&seq);
    if kind != Some(EventKind::Checkpoint) {
        // A row that claims to be a checkpoint must be one.
        if kind.is_none() && class_of(data) == Some(CLASS_UID_APPLICATION_LIFECYCLE) {
            return Some(format!("event {seq} is an unreadable lifecycle event"));
        }
        return row.map(|(id, _, _)| {
            format!(
                "checkpoint #{id} is event {seq} of the chain, but event {seq} is not a \
                 checkpoint"
            )
        });
    }
    let d = match decode_checkpoint(data) {
        Ok(d) => d,
        Err(e) => return Some(format!("checkpoint event cannot be read: {e}")),
    };
    if d.checkpoint.size().saturating_add(1) != seq {
        return Some(format!(
            "checkpoint event covers seq {}, but a checkpoint covers the events before it",
            d.checkpoint.size()
        ));
    }
    match row {
        None => {
            Some("checkpoint event has no row in the checkpoints table (rows deleted?)".to_owned())
        }
        Some((id, body, sig))
            if body[..] != *d.checkpoint.body_bytes() || sig[..] != *d.checkpoint.signature() =>
        {
            Some(format!(
                "checkpoint event differs from checkpoint #{id} in the checkpoints table"
            ))
        }
        Some(_) => None,
    }
}

/// The text columns an event's data implies.
struct Derived<'a> {
    activity: Option<&'a str>,
    decision: Option<&'a str>,
    account: Option<&'a str>,
    target: Option<&'a str>,
    session: Option<&'a str>,
    reason: Option<&'a str>,
}

/// Whether `uid` is `"<chain_id>:<seq>"`.
fn uid_matches(uid: &str, chain_id: &str, seq: u64) -> bool {
    uid.strip_prefix(chain_id)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|n| n.parse::<u64>().ok() == Some(seq) && !n.starts_with('0'))
}

/// The indexed columns are derived from the hashed data; a difference
/// means they were edited (e.g. to hide events from `audit tail --account`).
fn column_mismatch(
    chunk: &RowChunk,
    r: &RowAt,
    seq: u64,
    chain_id: &str,
    p: &Probe<'_>,
    kind: Option<EventKind>,
) -> Option<String> {
    let differs = |col: &str, stored: &dyn fmt::Debug, data: &dyn fmt::Debug| {
        Some(format!(
            "column {col} of event {seq} is {stored:?}, but its hashed data says {data:?}"
        ))
    };
    let w = &p.unmapped.warden;
    let kind = kind?;
    if w.seq != seq || !uid_matches(&p.metadata.uid, chain_id, seq) {
        return differs("seq", &seq, &p.metadata.uid);
    }
    if r.class_uid != Some(i64::from(p.class_uid)) {
        return differs("class_uid", &r.class_uid, &p.class_uid);
    }
    if r.time_ms != Some(p.time) {
        return differs("time_ms", &r.time_ms, &p.time);
    }
    let lifecycle = |activity, reason| Derived {
        activity: Some(activity),
        decision: Some(NO_DECISION),
        account: None,
        target: None,
        session: Some(""),
        reason,
    };
    let expected = match kind {
        EventKind::Connection => Derived {
            activity: activity_from_id(p.activity_id).map(activity_str),
            decision: w.decision.as_deref(),
            account: w.account.as_deref(),
            target: w.target.as_deref(),
            session: w.session.as_deref(),
            reason: w.reason.as_deref(),
        },
        EventKind::Statement => Derived {
            activity: w
                .statement
                .as_ref()
                .map(|s| statement_activity_str(s.phase)),
            decision: w.decision.as_deref(),
            account: w.account.as_deref(),
            target: w.target.as_deref(),
            session: w.session.as_deref(),
            reason: w.reason.as_deref(),
        },
        EventKind::Approval => Derived {
            activity: Some(APPROVAL_ACTIVITY),
            decision: w.decision.as_deref(),
            account: w.account.as_deref(),
            target: w.target.as_deref(),
            session: w.session.as_deref(),
            reason: w.reason.as_deref(),
        },
        EventKind::Api => Derived {
            activity: w
                .api
                .as_ref()
                .map(|a| super::ocsf::api_activity_str(a.phase)),
            decision: w.decision.as_deref(),
            account: w.account.as_deref(),
            target: w.target.as_deref(),
            session: w.session.as_deref(),
            reason: w.reason.as_deref(),
        },
        EventKind::Kernel => Derived {
            activity: Some(super::ocsf::KERNEL_ACTIVITY),
            decision: w.decision.as_deref(),
            account: w.account.as_deref(),
            target: None,
            session: Some(""),
            reason: w.reason.as_deref(),
        },
        EventKind::Config => lifecycle(
            CONFIG_ACTIVITY,
            w.config.as_ref().map(|c| c.action.as_str()),
        ),
        EventKind::Prune => lifecycle(PRUNE_ACTIVITY, w.prune.as_ref().map(|x| x.reason.as_ref())),
        EventKind::Checkpoint => lifecycle(CHECKPOINT_ACTIVITY, None),
    };
    let Derived {
        activity,
        decision,
        account,
        target,
        session,
        reason,
    } = expected;
    let columns = [
        ("activity", r.activity, activity),
        ("decision", r.decision, decision),
        ("account", r.account, account),
        ("target", r.target, target),
        ("session", r.session, session),
        ("reason", r.reason, reason),
    ];
    for (col, stored, data) in columns {
        let stored = chunk.opt(stored);
        if stored != data.map(str::as_bytes) {
            let stored = stored.map(String::from_utf8_lossy);
            return differs(col, &stored, &data);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::latest_checkpoint;
    use crate::audit::testutil::{
        build_store, data, edit_data, ev, hash, raw, rehash_from, renumber_from,
    };
    use rusqlite::params;

    /// 25 recorded events, a checkpoint every 10: events 1..=10, checkpoint
    /// of 10 at 11, events 12..=21, checkpoint of 21 at 22, events 23..=27,
    /// checkpoint of 27 (shutdown) at 28.
    async fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let seqs = build_store(&path, 10, 25).await;
        let expected: Vec<u64> = (1..=10).chain(12..=21).chain(23..=27).collect();
        assert_eq!(seqs, expected);
        (dir, path)
    }

    fn problem(path: &Path) -> Problem {
        let report = verify(path, None).unwrap();
        match &report.problem {
            Some(p) => p.clone(),
            None => panic!("damage not detected:\n{report}"),
        }
    }

    fn assert_problem(path: &Path, seq: u64, kind: Damage) -> Problem {
        let p = problem(path);
        assert_eq!((p.seq, p.kind), (seq, kind), "{}", p.detail);
        p
    }

    #[tokio::test]
    async fn clean_store_verifies_also_while_the_writer_runs() {
        let (_dir, path) = store().await;
        let report = verify(&path, None).unwrap();
        assert_eq!(report.problem, None, "{report}");
        assert_eq!(report.events, 28);
        assert_eq!(report.checkpoints, 3);
        assert_eq!((report.first_seq, report.last_seq), (1, 28));
        assert_eq!(report.signed_through, 27);
        let cp = latest_checkpoint(&path).unwrap().unwrap();
        assert_eq!(report.key_ids, vec![cp.key_id().to_owned()]);
        let text = report.to_string();
        assert!(text.contains("events:      28 (seq 1..=28)"), "{text}");
        assert!(
            text.contains("checkpoints: 3, signed through seq 27"),
            "{text}"
        );
        assert!(text.contains(cp.key_id()), "{text}");
        assert!(text.ends_with("chain intact"), "{text}");

        // A running writer (open connection, uncommitted-free WAL) is fine.
        let (h, task) = crate::audit::spawn_writer(&path, crate::audit::testutil::opts(0)).unwrap();
        assert_eq!(h.record(ev(99)).await.unwrap(), 29);
        let report = verify(&path, None).unwrap();
        assert_eq!(report.problem, None, "{report}");
        assert_eq!(report.last_seq, 29);
        assert_eq!(report.signed_through, 27, "29 is not signed yet");
        h.shutdown().await;
        task.join().unwrap();
        let report = verify(&path, None).unwrap();
        assert_eq!((report.last_seq, report.signed_through), (30, 29));
        assert!(report.is_intact(), "{report}");
    }

    #[tokio::test]
    async fn changed_data_is_modified_at_that_seq() {
        let (_dir, path) = store().await;
        edit_data(&raw(&path), 5, "\"acct-2\"", "\"acct-9\"");
        let p = assert_problem(&path, 5, Damage::Modified);
        assert!(p.detail.contains("still chains"), "{}", p.detail);
        let text = verify(&path, None).unwrap().to_string();
        assert!(
            text.contains("FIRST PROBLEM at seq 5: modified: "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn changed_hash_is_modified() {
        let (_dir, path) = store().await;
        raw(&path)
            .execute(
                "UPDATE events SET hash = ?1 WHERE seq = 6",
                params![vec![9u8; 32]],
            )
            .unwrap();
        let p = assert_problem(&path, 6, Damage::Modified);
        assert!(
            p.detail.contains("stored hash of event 6 was changed"),
            "{}",
            p.detail
        );
    }

    #[tokio::test]
    async fn changed_index_column_is_modified() {
        let (_dir, path) = store().await;
        // Hide event 7 from `audit tail --account acct-1`.
        raw(&path)
            .execute("UPDATE events SET account = 'acct-0' WHERE seq = 7", [])
            .unwrap();
        let p = assert_problem(&path, 7, Damage::Modified);
        assert!(p.detail.contains("column account"), "{}", p.detail);
    }

    #[tokio::test]
    async fn changed_checkpoint_event_is_modified() {
        let (_dir, path) = store().await;
        edit_data(&raw(&path), 11, "\"size\":10", "\"size\":11");
        assert_problem(&path, 11, Damage::Modified);
    }

    #[tokio::test]
    async fn deleted_row_is_deleted_at_that_seq() {
        let (_dir, path) = store().await;
        raw(&path)
            .execute("DELETE FROM events WHERE seq = 7", [])
            .unwrap();
        assert_problem(&path, 7, Damage::Deleted);
    }

    #[tokio::test]
    async fn deleted_row_with_renumbered_tail_is_deleted() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        c.execute("DELETE FROM events WHERE seq = 7", []).unwrap();
        renumber_from(&c, 8, -1);
        let p = assert_problem(&path, 7, Damage::Deleted);
        assert!(p.detail.contains("renumbered"), "{}", p.detail);
    }

    #[tokio::test]
    async fn swapped_rows_are_reordered_at_the_first() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        // Adjacent, data and hashes swapped.
        let (d4, h4, d5, h5) = (data(&c, 4), hash(&c, 4), data(&c, 5), hash(&c, 5));
        let set = "UPDATE events SET data = ?1, hash = ?2 WHERE seq = ?3";
        c.execute(set, params![d5, h5, 4]).unwrap();
        c.execute(set, params![d4, h4, 5]).unwrap();
        let p = assert_problem(&path, 4, Damage::Reordered);
        assert!(p.detail.contains("events 4 and 5"), "{}", p.detail);
    }

    #[tokio::test]
    async fn swapped_data_far_apart_is_reordered() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        let (d3, d8) = (data(&c, 3), data(&c, 8));
        let set = "UPDATE events SET data = ?1 WHERE seq = ?2";
        c.execute(set, params![d8, 3]).unwrap();
        c.execute(set, params![d3, 8]).unwrap();
        let p = assert_problem(&path, 3, Damage::Reordered);
        assert!(p.detail.contains("events 3 and 8"), "{}", p.detail);
    }

    #[tokio::test]
    async fn appended_forged_row_is_inserted() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        c.execute(
            "INSERT INTO events (seq, time_ms, class_uid, activity, decision, account, target, \
             session, reason, data, hash) SELECT 29, time_ms, class_uid, activity, decision, \
             account, target, session, reason, data, ?1 FROM events WHERE seq = 5",
            params![vec![7u8; 32]],
        )
        .unwrap();
        let p = assert_problem(&path, 29, Damage::Inserted);
        assert!(p.detail.contains("no checkpoint covers it"), "{}", p.detail);
    }

    #[tokio::test]
    async fn forged_row_in_the_middle_is_inserted() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        renumber_from(&c, 6, 1);
        // A plausible row at 6 with a made-up hash.
        c.execute(
            "INSERT INTO events (seq, time_ms, class_uid, activity, decision, account, target, \
             session, reason, data, hash) SELECT 6, time_ms, class_uid, activity, decision, \
             account, target, session, reason, data, ?1 FROM events WHERE seq = 5",
            params![vec![1u8; 32]],
        )
        .unwrap();
        let p = assert_problem(&path, 6, Damage::Inserted);
        assert!(p.detail.contains("inserted at 6"), "{}", p.detail);
    }

    #[tokio::test]
    async fn forged_row_with_a_correct_hash_is_inserted() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        renumber_from(&c, 6, 1);
        // A copy of event 5 posing as event 6, chained correctly from row 5
        // with consistent columns. The forger cannot fix row 7 (the old 6)
        // without rewriting everything after it.
        let key = crate::audit::testutil::chain_key(&c);
        let chain_id: String = c
            .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let forged = String::from_utf8(data(&c, 5))
            .unwrap()
            .replace(&format!("{chain_id}:5\""), &format!("{chain_id}:6\""))
            .replace("\"sequence\":5,", "\"sequence\":6,")
            .replace("\"seq\":5}", "\"seq\":6}");
        let h = event_hash(&key, 6, &hash(&c, 5), forged.as_bytes());
        c.execute(
            "INSERT INTO events (seq, time_ms, class_uid, activity, decision, account, target, \
             session, reason, data, hash) SELECT 6, time_ms, class_uid, activity, decision, \
             account, target, session, reason, ?1, ?2 FROM events WHERE seq = 5",
            params![forged.into_bytes(), &h[..]],
        )
        .unwrap();
        let p = assert_problem(&path, 6, Damage::Inserted);
        assert!(
            p.detail.contains("event 7 chains from event 5"),
            "{}",
            p.detail
        );
    }

    #[tokio::test]
    async fn cut_tail_after_a_checkpoint_is_truncated() {
        let (_dir, path) = store().await;
        raw(&path)
            .execute("DELETE FROM events WHERE seq >= 20", [])
            .unwrap();
        let p = assert_problem(&path, 20, Damage::Truncated);
        assert!(p.detail.contains("store ends at seq 19"), "{}", p.detail);
        // Only the checkpoint event itself cut: still truncated.
        let (_dir, path) = store().await;
        raw(&path)
            .execute("DELETE FROM events WHERE seq = 28", [])
            .unwrap();
        assert_problem(&path, 28, Damage::Truncated);
    }

    #[tokio::test]
    async fn tampered_checkpoint_signature_is_bad_checkpoint() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        let mut sig: Vec<u8> = c
            .query_row("SELECT signature FROM checkpoints WHERE id = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        sig[3] ^= 0x40;
        c.execute(
            "UPDATE checkpoints SET signature = ?1 WHERE id = 2",
            params![sig],
        )
        .unwrap();
        let p = assert_problem(&path, 22, Damage::BadCheckpoint);
        assert!(
            p.detail.contains("signature does not verify"),
            "{}",
            p.detail
        );
    }

    #[tokio::test]
    async fn tampered_checkpoint_body_and_links_are_bad_checkpoint() {
        // A re-signed-looking body edit (no key): signature fails.
        let (_dir, path) = store().await;
        let c = raw(&path);
        c.execute(
            "UPDATE checkpoints SET body = CAST(replace(CAST(body AS TEXT), '\"size\":21', \
             '\"size\":20') AS BLOB), size = 20 WHERE id = 2",
            [],
        )
        .unwrap();
        assert_eq!(problem(&path).kind, Damage::BadCheckpoint);

        // A checkpoint row deleted: its event has no row any more.
        let (_dir, path) = store().await;
        raw(&path)
            .execute("DELETE FROM checkpoints WHERE id = 2", [])
            .unwrap();
        let p = assert_problem(&path, 22, Damage::BadCheckpoint);
        assert!(p.detail.contains("no row"), "{}", p.detail);

        // The first row deleted: the next one links to a missing checkpoint
        // (reported at the earliest seq: event 11 lost its row).
        let (_dir, path) = store().await;
        raw(&path)
            .execute("DELETE FROM checkpoints WHERE id = 1", [])
            .unwrap();
        assert_problem(&path, 11, Damage::BadCheckpoint);

        // A column edited (not covered by the signature).
        let (_dir, path) = store().await;
        raw(&path)
            .execute("UPDATE checkpoints SET time_ms = 1 WHERE id = 3", [])
            .unwrap();
        let p = assert_problem(&path, 28, Damage::BadCheckpoint);
        assert!(p.detail.contains("columns"), "{}", p.detail);
    }

    #[tokio::test]
    async fn rewritten_chain_is_caught_by_the_signed_checkpoint() {
        let (_dir, path) = store().await;
        let c = raw(&path);
        // Change event 15 and recompute every hash from there: each row
        // chains again, only the signatures tell.
        edit_data(&c, 15, "\"acct-", "\"evil-");
        c.execute(
            "UPDATE events SET account = replace(account, 'acct-', 'evil-') WHERE seq = 15",
            [],
        )
        .unwrap();
        rehash_from(&c, 15);
        let report = verify(&path, None).unwrap();
        let p = report.problem.clone().unwrap();
        // Checkpoint #1 vouches for 1..=10; 11..=21 are not vouched for.
        assert_eq!((p.seq, p.kind), (11, Damage::Modified), "{}", p.detail);
        assert!(p.detail.contains("checkpoint #2"), "{}", p.detail);
        assert!(
            p.detail.contains("events 11..=21 were rewritten"),
            "{}",
            p.detail
        );
        assert_eq!(report.signed_through, 10);
    }

    #[tokio::test]
    async fn anchor_detects_truncation_with_checkpoints_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        // Only the shutdown checkpoint: of seq 20, as event 21.
        build_store(&path, 0, 20).await;
        let exported = dir.path().join("anchor.json");
        std::fs::write(
            &exported,
            latest_checkpoint(&path).unwrap().unwrap().to_json(),
        )
        .unwrap();
        let anchor = Checkpoint::from_json_file(&exported).unwrap();
        assert_eq!(anchor.size(), 20);
        let report = verify(&path, Some(&anchor)).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.anchor_size, Some(20));
        assert!(
            report
                .to_string()
                .contains("anchor:      checkpoint of seq 20")
        );

        // The attacker cuts the tail and every checkpoint: the store alone
        // looks intact ...
        let c = raw(&path);
        c.execute("DELETE FROM events WHERE seq >= 15", []).unwrap();
        c.execute("DELETE FROM checkpoints", []).unwrap();
        let report = verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.last_seq, 14);
        // ... but not against the anchor.
        let report = verify(&path, Some(&anchor)).unwrap();
        let p = report.problem.unwrap();
        assert_eq!((p.seq, p.kind), (15, Damage::Truncated), "{}", p.detail);
        assert!(p.detail.contains("the anchor"), "{}", p.detail);
    }

    #[tokio::test]
    async fn anchor_detects_a_rewrite_and_must_belong_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        build_store(&path, 0, 20).await;
        let anchor = latest_checkpoint(&path).unwrap().unwrap();
        // Rewrite event 3 and the chain after it; drop the checkpoints.
        let c = raw(&path);
        edit_data(&c, 3, "\"acct-0\"", "\"acct-1\"");
        c.execute("UPDATE events SET account = 'acct-1' WHERE seq = 3", [])
            .unwrap();
        rehash_from(&c, 3);
        c.execute("DELETE FROM checkpoints", []).unwrap();
        c.execute("DELETE FROM events WHERE seq = 21", []).unwrap();
        assert!(verify(&path, None).unwrap().is_intact());
        let p = verify(&path, Some(&anchor)).unwrap().problem.unwrap();
        assert_eq!((p.seq, p.kind), (1, Damage::Modified), "{}", p.detail);

        // An anchor of another store is refused outright.
        let other = dir.path().join("other/audit.db");
        build_store(&other, 0, 3).await;
        let foreign = latest_checkpoint(&other).unwrap().unwrap();
        let err = verify(&path, Some(&foreign)).unwrap_err();
        assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
        // A forged anchor (signature broken) is refused too.
        let mut v: serde_json::Value = serde_json::from_str(&anchor.to_json()).unwrap();
        let sig = v["signature"].as_str().unwrap().to_owned();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        v["signature"] = format!("{flipped}{}", &sig[1..]).into();
        let forged = Checkpoint::from_json(&v.to_string()).unwrap();
        let err = verify(&path, Some(&forged)).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
    }

    /// Many chunks of rows (the walk checks them on several threads and
    /// applies the results in order): damage far into the store is found
    /// exactly where it is, and nothing after it is reported instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_deep_in_a_large_store_is_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        build_store(&path, 100, 3000).await;
        let report = verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.events, 3030);
        assert_eq!(report.signed_through, 3029);
        let copy = |name: &str| {
            let p = dir.path().join(name);
            std::fs::copy(&path, &p).unwrap();
            p
        };
        // Two damages: the earlier one is reported.
        let p = copy("a.db");
        let c = raw(&p);
        edit_data(&c, 2500, "\"acct-", "\"evil-");
        c.execute("UPDATE events SET account = 'x' WHERE seq = 2900", [])
            .unwrap();
        assert_problem(&p, 2500, Damage::Modified);
        let p = copy("b.db");
        raw(&p)
            .execute("DELETE FROM events WHERE seq = 1700", [])
            .unwrap();
        assert_problem(&p, 1700, Damage::Deleted);
        let p = copy("c.db");
        raw(&p)
            .execute("UPDATE events SET session = 'x' WHERE seq = 1101", [])
            .unwrap();
        let got = assert_problem(&p, 1101, Damage::Modified);
        assert!(got.detail.contains("column session"), "{}", got.detail);
        // A checkpoint event in the last chunk (checkpoints are every
        // 101st event).
        let p = copy("d.db");
        edit_data(&raw(&p), 2929, "\"size\":2928", "\"size\":2927");
        assert_problem(&p, 2929, Damage::Modified);
    }

    #[tokio::test]
    async fn empty_store_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        build_store(&path, 10, 0).await;
        let report = verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!((report.events, report.checkpoints), (0, 0));
        assert!(report.to_string().contains("keys:        none"));
        assert!(latest_checkpoint(&path).unwrap().is_none());
    }

    #[test]
    fn missing_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(&dir.path().join("nope.db"), None).unwrap_err();
        assert!(matches!(err, AuditError::NotFound { .. }), "{err}");
    }
}
