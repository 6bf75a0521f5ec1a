//! Test helpers for the audit module: stores with a known shape, and raw
//! SQLite access to tamper with them behind Warden's back.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::chain::{ChainKey, GENESIS, event_hash};
use super::event::{ConnActivity, ConnectionEvent, Decision, SessionId};
use super::ocsf::tests::sample;
use super::store::{SyncMode, WriterOptions};

/// A distinct connection event.
pub(crate) fn ev(i: u64) -> ConnectionEvent {
    let mut e = sample(ConnActivity::Open, Decision::Allowed);
    e.session = SessionId(i);
    e.time_ms += i as i64;
    e.account = Some(format!("acct-{}", i % 3));
    e
}

/// Checkpoints every `every` events (0: only at shutdown), none by time.
pub(crate) fn opts(every: u64) -> WriterOptions {
    WriterOptions {
        sync: SyncMode::Normal,
        batch_max: 64,
        host: "h".into(),
        checkpoint_every: every,
        checkpoint_interval: Duration::ZERO,
    }
}

/// Record `n` events one after the other into the store at `path`, then
/// shut the writer down. Returns the seqs `record` answered.
pub(crate) async fn build_store(path: &Path, every: u64, n: u64) -> Vec<u64> {
    let (h, task) = super::spawn_writer(path, opts(every)).unwrap();
    let mut seqs = Vec::new();
    for i in 1..=n {
        seqs.push(h.record(ev(i)).await.unwrap());
    }
    h.shutdown().await;
    tokio::task::spawn_blocking(move || task.join())
        .await
        .unwrap()
        .unwrap();
    seqs
}

/// A plain read-write connection, as an attacker would open it.
pub(crate) fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

pub(crate) fn chain_key(c: &Connection) -> ChainKey {
    let id: String = c
        .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    ChainKey::parse(&id).unwrap()
}

pub(crate) fn data(c: &Connection, seq: u64) -> Vec<u8> {
    c.query_row("SELECT data FROM events WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })
    .unwrap()
}

pub(crate) fn hash(c: &Connection, seq: u64) -> Vec<u8> {
    c.query_row("SELECT hash FROM events WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Replace `from` with `to` (same JSON shape) in the stored data of `seq`.
pub(crate) fn edit_data(c: &Connection, seq: u64, from: &str, to: &str) {
    let text = String::from_utf8(data(c, seq)).unwrap();
    assert!(text.contains(from), "{from} not in event {seq}: {text}");
    let changed = text.replacen(from, to, 1).into_bytes();
    c.execute(
        "UPDATE events SET data = ?1 WHERE seq = ?2",
        params![changed, seq],
    )
    .unwrap();
}

/// Recompute the hash of every row from `from` on, as an attacker who
/// knows the algorithm would after rewriting rows.
pub(crate) fn rehash_from(c: &Connection, from: u64) {
    let key = chain_key(c);
    let mut prev = if from <= 1 {
        GENESIS.to_vec()
    } else {
        hash(c, from - 1)
    };
    let rows: Vec<(u64, Vec<u8>)> = c
        .prepare("SELECT seq, data FROM events WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([from], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (seq, data) in rows {
        let h = event_hash(&key, seq, &prev, &data);
        c.execute(
            "UPDATE events SET hash = ?1 WHERE seq = ?2",
            params![&h[..], seq],
        )
        .unwrap();
        prev = h.to_vec();
    }
}

/// Shift every row with `seq >= from` by `delta` (±1), keeping the
/// primary key unique on the way.
pub(crate) fn renumber_from(c: &Connection, from: u64, delta: i64) {
    c.execute(
        "UPDATE events SET seq = -seq WHERE seq >= ?1",
        params![from],
    )
    .unwrap();
    c.execute(
        "UPDATE events SET seq = -seq + ?1 WHERE seq < 0",
        params![delta],
    )
    .unwrap();
}

/// The API Activity events of the store at `db` (activity, decision, OCSF
/// JSON rendered from the stored record), in seq order (issue 17: HTTP
/// requests are stored as compact records).
pub(crate) fn api_rows(db: &Path) -> Vec<(String, String, String)> {
    let c = Connection::open(db).unwrap();
    let chain: String = c
        .query_row("SELECT value FROM meta WHERE key = 'chain_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut st = c
        .prepare(
            "SELECT seq, activity, decision, data FROM events WHERE class_uid = 6003 ORDER BY seq",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })
    .unwrap()
    .map(|row| {
        let (seq, activity, decision, data) = row.unwrap();
        let json = super::record::render(&data, seq, &chain).unwrap();
        (
            activity,
            decision,
            String::from_utf8(json.into_owned()).unwrap(),
        )
    })
    .collect()
}
