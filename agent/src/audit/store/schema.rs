//! The store's layout: schema version, the SQL of every version and its
//! migrations, opening (modes, pragmas, migration) and the small reads of
//! `meta`, `events` and `forward_cursors` that other modules use.
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

#[allow(clippy::wildcard_imports)]
use super::*;

pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_CHAIN_ID: &str = "chain_id";

/// Rows hashed per step of the v1 → v2 migration.
pub(super) const MIGRATION_CHUNK: usize = 1024;
/// Page cache of the writer connection, in KiB.
pub(super) const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// Page size of a new store, in bytes.
pub(super) const PAGE_SIZE: i64 = 8 * 1024;
pub(super) const SCHEMA_V1: &str = "
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
pub(super) const SCHEMA_V1_TO_V2: &str = "
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
pub(super) const SCHEMA_V2_TO_V3: &str = "
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
pub(super) const SCHEMA_V3_TO_V4: &str = "DROP INDEX IF EXISTS events_account;";

/// Version 5: `data` of a statement event may be a compact canonical
/// record (see [`crate::audit::record`]) instead of OCSF JSON. The layout does not
/// change and stored rows are left as they are (their bytes are chained
/// and signed): the version only keeps builds that would misread the
/// records away from the store.
pub(super) const SCHEMA_V4_TO_V5: &str = "-- data may hold compact statement records";

pub(super) const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, time_ms, class_uid, activity, decision, account, target, session, reason, data, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

pub(super) const INSERT_CHECKPOINT: &str = "INSERT INTO checkpoints \
    (size, head_hash, time_ms, prev_hash, key_id, body, signature) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Create the directory and file with tight modes, open the connection,
/// apply pragmas and the schema (migrating v1 and v2). Returns the
/// connection, the chain id (hex and raw) and the chain state at the end of
/// the store.
pub(super) fn open_store(
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
pub(super) fn migrate_v1_to_v2(tx: &Transaction<'_>, key: &ChainKey) -> rusqlite::Result<u64> {
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
pub(super) fn migrate_step(tx: &Transaction<'_>, sql: &str, to: i64) -> rusqlite::Result<()> {
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
pub(super) struct ChainState {
    /// Seq of the next event.
    pub(super) next_seq: u64,
    /// Stored hash of event `next_seq - 1` ([`GENESIS`] for an empty store).
    pub(super) head: Hash,
    /// Events since the last checkpoint.
    pub(super) since_checkpoint: u64,
    /// SHA-256 of the last checkpoint's body.
    pub(super) last_checkpoint: Option<Hash>,
}

/// Read the chain state from the last event and the last checkpoint.
pub(super) fn load_chain_state(conn: &Connection) -> rusqlite::Result<ChainState> {
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

/// Every (key id, public key) of the `keys` table, in the order they were
/// added: the keys that signed checkpoints of this store (ids not yet
/// checked against their keys; see [`crate::audit::checkpoint::known_keys`]).
pub(crate) fn stored_keys(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = conn.prepare("SELECT key_id, public_key FROM keys ORDER BY added_ms, key_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    rows.collect()
}

/// The signed body and signature of the store's latest checkpoint, if any.
pub(crate) fn latest_checkpoint_row(
    conn: &Connection,
) -> rusqlite::Result<Option<(Vec<u8>, Vec<u8>)>> {
    conn.query_row(
        "SELECT body, signature FROM checkpoints ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}
