use super::prepare::LEGACY_JSON;
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
    assert_eq!(h.record(load.clone()).await.unwrap(), 1);
    assert_eq!(h.record(ev(2)).await.unwrap(), 2);
    let reload = ConfigChange {
        action: ConfigAction::Reload,
        sha256: "cd".repeat(32),
        detail: Some("SIGHUP by uid 0".into()),
        ..load.clone()
    };
    assert_eq!(h.record(reload.clone()).await.unwrap(), 3);
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
        assert_eq!(h.record(req.clone()).await.unwrap(), 2);
        let res = stmt(StatementPhase::Result, StatementDecision::Allowed, 1);
        h.record_detached(res.clone());
        let blocked = stmt(StatementPhase::Request, StatementDecision::Blocked, 2);
        // In order behind the detached result.
        assert_eq!(h.record(blocked.clone()).await.unwrap(), 4);
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
        h.record_detached(stmt(StatementPhase::Result, StatementDecision::Allowed, 1));
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
            h.record_detached(stmt(StatementPhase::Result, StatementDecision::Allowed, 1));
            tokio::time::sleep(Duration::from_millis(1)).await;
            let seq = h
                .record(stmt(StatementPhase::Request, StatementDecision::Allowed, 2))
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
            h.record_detached(stmt(StatementPhase::Result, StatementDecision::Allowed, i));
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
            h2.record(stmt(
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
        h.record_detached(stmt(StatementPhase::Result, StatementDecision::Allowed, 1));
        // In order: the detached event's batch is committed (and fails)
        // before this runs.
        test_sql(&h, "PRAGMA query_only = OFF").await;
        assert_eq!(h.stats().detached_lost, 1);
        assert!(!h.is_healthy());
        let seq = h
            .record(stmt(StatementPhase::Request, StatementDecision::Denied, 2))
            .await
            .unwrap();
        assert_eq!(seq, 1, "no gap");
        // A stopped writer.
        let h2 = h.clone();
        h.shutdown().await;
        task.join().unwrap();
        h2.record_detached(stmt(StatementPhase::Result, StatementDecision::Allowed, 2));
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
        let seq = s.record(read(1)).await.unwrap();
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
        let w = s.record(write(2)).await.unwrap();
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
        let seq = s.record(read(1)).await.unwrap();
        let err = s.release_ready().await.unwrap_err();
        assert!(matches!(err, AuditError::Sync { .. }), "{err}");
        assert!(h.stats().durable_seq < seq);
        // Still refused after a later fsync succeeded.
        let other = h.session_scope();
        let next = other.record(read(2)).await.unwrap();
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
        let seq = s.record(read(1)).await.unwrap();
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
        let seq = h.record(write(1)).await.unwrap();
        // Answered before any fsync covered it (in the WAL already).
        assert!(h.stats().durable_seq < seq);
        let c = Connection::open(&path).unwrap();
        let n: u64 = c
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, seq);
        let deadline = Instant::now() + MAX_TICK + RELAXED_SYNC_INTERVAL + Duration::from_secs(2);
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
        h.record(stmt(StatementPhase::Request, 1)).await.unwrap();
        h.record(stmt(StatementPhase::Result, 1)).await.unwrap();
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
        let req = h.record(stmt(StatementPhase::Request, 2)).await.unwrap();
        let res = h.record(stmt(StatementPhase::Result, 2)).await.unwrap();
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
