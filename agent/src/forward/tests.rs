//! Tests of the delivery loop with scripted sinks against a real store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::audit::testutil;
use crate::config::{ForwardAuth, ForwardKind};

/// A sink whose answers are scripted; records what it was given.
#[derive(Clone, Default)]
struct Script {
    /// Answers for the next attempts; empty = acknowledge.
    answers: Arc<Mutex<Vec<Failure>>>,
    /// Seqs of every attempt, in order.
    attempts: Arc<Mutex<Vec<Vec<u64>>>>,
    /// Seqs acknowledged, in order.
    acked: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Script {
    fn deliver(&mut self, batch: &mut Batch, _stop: &Stop) -> Result<(), Failure> {
        let seqs: Vec<u64> = batch.items.iter().map(|i| i.seq).collect();
        self.attempts.lock().unwrap().push(seqs.clone());
        let next = {
            let mut a = self.answers.lock().unwrap();
            (!a.is_empty()).then(|| a.remove(0))
        };
        match next {
            Some(f) => Err(f),
            None => {
                self.acked.lock().unwrap().extend(seqs);
                Ok(())
            }
        }
    }
}

fn output(name: &str) -> Forward {
    Forward {
        name: name.into(),
        kind: ForwardKind::File,
        format: ForwardFormat::Ocsf,
        url: None,
        address: None,
        transport: None,
        path: Some("/dev/null".into()),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        server_name: None,
        auth: ForwardAuth::None,
        token_file: None,
        credentials_file: None,
        gzip: true,
        index: None,
        sourcetype: None,
        ack: false,
        ack_timeout_secs: 300,
        facility: "local0".into(),
        rotate_bytes: 1 << 20,
        keep_files: 5,
        batch_max_events: 7,
        batch_max_bytes: 1 << 20,
        batch_wait_ms: 0,
        timeout_secs: 5,
        retry_max_secs: 1,
        backlog_warn: 5,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn store(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    testutil::build_store(&path, 0, n).await;
    (dir, path)
}

fn cursor_of(path: &Path, name: &str) -> u64 {
    source::Cursor::open(path, name).unwrap().load().unwrap()
}

#[tokio::test]
async fn every_event_arrives_in_order_after_failures_and_the_cursor_follows_acks() {
    // 40 events + the writer's final checkpoint.
    let (_d, path) = store(40).await;
    let sink = Script::default();
    sink.answers.lock().unwrap().extend([
        Failure::Retry {
            error: "connection refused".into(),
            after: None,
        },
        Failure::Retry {
            error: "HTTP 503".into(),
            after: Some(Duration::from_millis(10)),
        },
    ]);
    let f = output("a");
    let fw = Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, None).unwrap();
    wait_for("all acked", || sink.acked.lock().unwrap().len() == 41);
    let acked = sink.acked.lock().unwrap().clone();
    assert_eq!(acked, (1..=41).collect::<Vec<u64>>());
    let attempts = sink.attempts.lock().unwrap().clone();
    // The failed batch was sent again, identical; batches respect the count.
    assert_eq!(attempts[0], attempts[1]);
    assert_eq!(attempts[1], attempts[2]);
    assert!(attempts.iter().all(|a| a.len() <= 7));
    wait_for("cursor", || cursor_of(&path, "a") == 41);
    let st = &fw.status(Some(41))[0];
    assert_eq!(st.acked_seq, 41);
    assert_eq!(st.backlog, 0);
    assert_eq!(st.failures, 2);
    assert!(st.last_ack_ms.is_some());
    assert!(st.last_error.as_deref().unwrap().contains("503"));
    fw.shutdown(Duration::from_secs(2));
    assert_eq!(fw.status(None)[0].state, "stopped");
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor() {
    let (_d, path) = store(20).await;
    source::Cursor::open(&path, "a")
        .unwrap()
        .advance(12)
        .unwrap();
    let sink = Script::default();
    let f = output("a");
    let fw = Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, None).unwrap();
    wait_for("rest acked", || sink.acked.lock().unwrap().len() == 9);
    assert_eq!(*sink.acked.lock().unwrap(), (13..=21).collect::<Vec<u64>>());
    fw.shutdown(Duration::from_secs(1));
}

#[tokio::test]
async fn a_refusal_parks_the_output_and_keeps_the_cursor() {
    let (_d, path) = store(10).await;
    let sink = Script::default();
    sink.answers.lock().unwrap().push(Failure::Park {
        error: "HTTP 401: bad token".into(),
    });
    let mut f = output("p");
    f.batch_max_events = 100;
    let fw = Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, None).unwrap();
    wait_for("parked", || fw.status(None)[0].state == "parked");
    std::thread::sleep(Duration::from_millis(300));
    // One attempt only: parked, not looping.
    assert_eq!(sink.attempts.lock().unwrap().len(), 1);
    assert!(sink.acked.lock().unwrap().is_empty());
    assert_eq!(cursor_of(&path, "p"), 0);
    let st = &fw.status(Some(11))[0];
    assert_eq!(st.backlog, 11);
    assert!(st.backlog_over_warn, "backlog_warn is 5");
    assert!(st.last_error.as_deref().unwrap().contains("401"));
    fw.shutdown(Duration::from_secs(1));
}

#[tokio::test]
async fn outputs_are_independent_and_new_events_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let (h, w) = crate::audit::spawn_writer(&path, testutil::opts(0)).unwrap();
    for i in 1..=5 {
        h.record(testutil::ev(i)).await.unwrap();
    }
    let ok = Script::default();
    let down = Script::default();
    down.answers
        .lock()
        .unwrap()
        .extend((0..1000).map(|_| Failure::Retry {
            error: "down".into(),
            after: Some(Duration::from_millis(5)),
        }));
    let (a, b) = (output("ok"), output("down"));
    let fw = Forwarders::spawn(
        vec![(&a, Box::new(ok.clone())), (&b, Box::new(down.clone()))],
        &path,
        None,
    )
    .unwrap();
    wait_for("first 5", || ok.acked.lock().unwrap().len() == 5);
    for i in 6..=30 {
        h.record(testutil::ev(i)).await.unwrap();
    }
    wait_for("all 30", || ok.acked.lock().unwrap().len() == 30);
    assert_eq!(*ok.acked.lock().unwrap(), (1..=30).collect::<Vec<u64>>());
    // The other output is still failing: its backlog grows, nothing is lost.
    assert!(down.acked.lock().unwrap().is_empty());
    let st = fw.status(Some(h.stats().last_seq));
    assert_eq!(st[1].backlog, 30);
    assert_eq!(st[1].state, "retrying");
    // Retention holds back everything the failing output has not acked.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(crate::audit::store::acked_through(&conn).unwrap(), Some(0));
    fw.shutdown(Duration::from_millis(200));
    h.shutdown().await;
    tokio::task::spawn_blocking(move || w.join())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn events_not_yet_fsynced_are_not_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let opts = crate::audit::WriterOptions {
        sync: crate::audit::SyncMode::Full,
        ..testutil::opts(0)
    };
    let (h, w) = crate::audit::spawn_writer(&path, opts).unwrap();
    for i in 1..=5 {
        h.record(testutil::ev(i)).await.unwrap();
    }
    // Events 6 and 7 are committed, but their fsync failed.
    h.fail_next_syncs(2);
    assert!(h.record(testutil::ev(6)).await.is_err());
    assert!(h.record(testutil::ev(7)).await.is_err());
    assert_eq!((h.stats().last_seq, h.stats().durable_seq), (7, 5));
    let sink = Script::default();
    let f = output("a");
    let fw =
        Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, Some(h.durable())).unwrap();
    wait_for("first 5", || sink.acked.lock().unwrap().len() == 5);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(*sink.acked.lock().unwrap(), (1..=5).collect::<Vec<u64>>());
    // The next fsync covers them all.
    h.record(testutil::ev(8)).await.unwrap();
    wait_for("all 8", || sink.acked.lock().unwrap().len() == 8);
    assert_eq!(*sink.acked.lock().unwrap(), (1..=8).collect::<Vec<u64>>());
    fw.shutdown(Duration::from_secs(1));
    h.shutdown().await;
    tokio::task::spawn_blocking(move || w.join())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn batches_are_bounded_by_bytes_and_wait_for_time() {
    let (_d, path) = store(30).await;
    let one = source::EventSource::open(&path)
        .unwrap()
        .read(0, 1, usize::MAX)
        .unwrap()[0]
        .data
        .len();
    let sink = Script::default();
    let mut f = output("b");
    f.batch_max_events = 1000;
    f.batch_max_bytes = one * 3 + one / 2;
    let fw = Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, None).unwrap();
    wait_for("all", || sink.acked.lock().unwrap().len() == 31);
    fw.shutdown(Duration::from_secs(1));
    let attempts = sink.attempts.lock().unwrap().clone();
    assert!(attempts.iter().all(|a| a.len() <= 3), "{attempts:?}");
    assert!(attempts.iter().filter(|a| a.len() == 3).count() >= 9);
}

#[test]
fn backoff_grows_with_jitter_and_honours_retry_after() {
    let mut b = Backoff::new(Duration::from_secs(4));
    let mut prev_max = Duration::ZERO;
    for step in 0..10 {
        let d = b.delay(None);
        let nominal = (BACKOFF_START * 2u32.pow(step.min(4))).min(Duration::from_secs(4));
        assert!(
            d >= nominal / 2 && d <= nominal,
            "{step}: {d:?} vs {nominal:?}"
        );
        prev_max = prev_max.max(d);
    }
    assert!(prev_max <= Duration::from_secs(4));
    assert_eq!(
        b.delay(Some(Duration::from_secs(30))),
        Duration::from_secs(30)
    );
    assert_eq!(b.delay(Some(Duration::from_secs(1 << 20))), MAX_RETRY_AFTER);
    b.reset();
    assert!(b.delay(None) <= BACKOFF_START);
}

#[test]
fn stop_wakes_sleepers_and_ends_after_the_grace() {
    let stop = Arc::new(Stop::default());
    let s2 = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        let first = s2.sleep(Duration::from_secs(30));
        (first, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    stop.request(Duration::from_millis(200));
    let (first, took) = t.join().unwrap();
    assert!(first, "a drain request wakes the sleeper to send");
    assert!(took < Duration::from_secs(5));
    assert!(stop.draining() && !stop.stopped());
    assert!(!stop.sleep(Duration::from_secs(30)), "ends at the deadline");
    assert!(stop.stopped());
}

#[tokio::test]
async fn full_batches_go_at_once_and_partial_ones_wait() {
    let (_d, path) = store(30).await;
    let one = source::EventSource::open(&path)
        .unwrap()
        .read(0, 1, usize::MAX)
        .unwrap()[0]
        .data
        .len();
    let sink = Script::default();
    let mut f = output("w");
    f.batch_max_events = 1000;
    f.batch_max_bytes = one * 4 + one / 2;
    f.batch_wait_ms = 3_000;
    let start = Instant::now();
    let fw = Forwarders::spawn(vec![(&f, Box::new(sink.clone()))], &path, None).unwrap();
    // 31 events: seven full batches of 4 go without waiting...
    wait_for("full batches", || sink.acked.lock().unwrap().len() >= 28);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "full batches waited: {:?}",
        start.elapsed()
    );
    // ...the last 3 wait for batch_wait_ms.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.acked.lock().unwrap().len(), 28);
    wait_for("the rest", || sink.acked.lock().unwrap().len() == 31);
    assert!(start.elapsed() >= Duration::from_millis(2900));
    fw.shutdown(Duration::from_secs(1));
}
