//! `cargo bench -p warden --bench forward`: forwarding throughput on this
//! host, printed, never asserted. It runs the real `warden::forward` code
//! in-process against a store of `WARDEN_BENCH_EVENTS` events (default
//! 1,000,000, about 1 KB of OCSF JSON each, a signed checkpoint every
//! 1000), built first with the real audit writer:
//!
//! - catch-up of the whole backlog to the HTTPS collector of the test
//!   harness (TLS, gzip, NDJSON batches of 1000, a 2xx per batch); the
//!   collector runs on the same two cores and gunzips every batch;
//! - catch-up of the whole backlog to a real rsyslogd over TLS (RFC 5425
//!   octet counting; rsyslog parses every message and writes it to
//!   /dev/null);
//! - sustained rate while the writer is appending: 200,000 new events
//!   recorded by 64 producers with both outputs following, and the lag at
//!   the end.
//!
//! A catch-up rate is events acknowledged (https) or written (syslog) per
//! second, measured from the output's start to its cursor reaching the
//! store's last seq. Goal from the issue: at least 50,000 events/s each.

#[path = "../../tests/common/forward.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::audit::event::{ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId};
use warden::audit::{SyncMode, WriterOptions, spawn_writer_with};
use warden::config::{Config, Forward};
use warden::forward::Forwarders;

const GOAL: f64 = 50_000.0;

/// Used by the harness's rsyslog runner.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn event(i: u64) -> ConnectionEvent {
    ConnectionEvent {
        time_ms: 1_795_957_502_123 + (i / 64) as i64,
        activity: if i % 2 == 1 {
            ConnActivity::Close
        } else {
            ConnActivity::Open
        },
        decision: Decision::Allowed,
        reason: None,
        detail: None,
        session: SessionId(i / 2),
        account: Some(format!("account-{}", i % 16)),
        target: Some(format!("target-{}", i % 8)),
        protocol: "tcp".into(),
        process: ProcessInfo {
            pid: Some(1000 + (i % 5000) as u32),
            tgid: Some(1000 + (i % 5000) as u32),
            uid: Some(1001),
            gid: Some(1001),
            comm: Some("orders-api".into()),
            exe: Some("/usr/bin/orders-api".into()),
            cgroup_id: Some(4242),
            cgroup_path: Some("/system.slice/orders-api.service".into()),
            exe_sha256: Some("ab".repeat(32)),
            cmdline: Some("/usr/bin/orders-api --listen :8080".into()),
            start_boot_ns: Some(42_000_000),
            pid_reused: false,
            unit: Some("orders-api.service".into()),
        },
        client: "127.0.0.1:40000".parse().expect("addr"),
        orig_dst: Some("10.0.0.5:5432".parse().expect("addr")),
        bytes_up: i * 3,
        bytes_down: i * 7,
        duration_ms: i % 1000,
        identity: None,
    }
}

fn opts() -> WriterOptions {
    WriterOptions {
        sync: SyncMode::Normal,
        batch_max: 4096,
        host: "bench-host".into(),
        checkpoint_every: 1000,
        checkpoint_interval: Duration::ZERO,
    }
}

/// Append `n` events with 64 producers; returns the rate.
fn append(rt: &tokio::runtime::Runtime, h: &warden::audit::AuditHandle, from: u64, n: u64) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        let per = n / 64;
        let mut tasks = Vec::new();
        for p in 0..64u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..per {
                    h.record(event(from + p * per + k)).await.expect("record");
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
    });
    (n / 64 * 64) as f64 / start.elapsed().as_secs_f64()
}

fn forward_config(toml: &str) -> Forward {
    let c = Config::parse(toml, Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("bench forward config: {e}"));
    c.forwards.into_iter().next().expect("one [[forward]]")
}

/// Run `f` until its cursor reaches `head`; returns the elapsed time.
fn catch_up(f: &Forward, store: &Path, head: u64) -> Duration {
    let start = Instant::now();
    let fw = Forwarders::start(std::slice::from_ref(f), store, "bench-host", None).expect("start");
    loop {
        let st = &fw.status(Some(head))[0];
        if st.acked_seq >= head {
            break;
        }
        if st.state == "parked" {
            panic!("{} parked: {:?}", f.name, st.last_error);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    fw.shutdown(Duration::from_secs(1));
    took
}

fn main() {
    let total: u64 = std::env::var("WARDEN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::Builder::new()
        .prefix("warden-bench-forward-")
        .tempdir()
        .expect("tempdir");
    let store = dir.path().join("audit.db");
    let certs = harness::make_certs(&dir.path().join("certs"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!("forwarding benchmark on this host (2 cores shared by Warden and the receivers)");
    let (h, writer) = spawn_writer_with(&store, opts(), None).expect("store");
    let rate = append(&rt, &h, 0, total);
    let head = h.stats().last_seq;
    let size = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
    println!(
        "  backlog: {head} events ({:.0} MB) written at {rate:.0} events/s",
        size as f64 / 1e6
    );

    // The agent's own share: read, frame and gzip every batch, no network.
    let src = warden::forward::source::EventSource::open(&store).expect("source");
    let start = Instant::now();
    let (mut after, mut raw, mut packed) = (0u64, 0usize, 0usize);
    let mut t_read = Duration::ZERO;
    let mut t_gzip = Duration::ZERO;
    loop {
        let t = Instant::now();
        let rows = src.read(after, 1000, 1 << 20).expect("read");
        t_read += t.elapsed();
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let mut body = Vec::with_capacity(1 << 20);
        for r in &rows {
            body.extend_from_slice(&r.data);
            body.push(b'\n');
        }
        raw += body.len();
        let t = Instant::now();
        packed += warden::forward::http::gzip(&body).expect("gzip").len();
        t_gzip += t.elapsed();
    }
    let local = head as f64 / start.elapsed().as_secs_f64();
    println!(
        "  local share (read + frame + gzip, no network): {local:.0} events/s (read {:.2} s, gzip {:.2} s, {:.0} MB -> {:.0} MB)",
        t_read.as_secs_f64(),
        t_gzip.as_secs_f64(),
        raw as f64 / 1e6,
        packed as f64 / 1e6
    );

    let collector = harness::Collector::start_with(
        &certs,
        Arc::new(|_r: &harness::HttpRequest| harness::HttpReply::ok("{}")),
        false,
    );
    let https = forward_config(&format!(
        "[[forward]]\nname = \"bench-https\"\nkind = \"https\"\nurl = \"{}\"\nca_file = \"{}\"\n",
        collector.url("/ingest"),
        certs.ca.display()
    ));
    let took = catch_up(&https, &store, head);
    let https_rate = head as f64 / took.as_secs_f64();
    println!(
        "  https (TLS, gzip, batches of 1000) catch-up of {head}: {:.1} s = {https_rate:.0} events/s (goal {GOAL:.0}) {}",
        took.as_secs_f64(),
        if https_rate >= GOAL {
            "ok"
        } else {
            "BELOW GOAL"
        }
    );
    let received = collector
        .lines_kept
        .load(std::sync::atomic::Ordering::Acquire);
    assert!(received >= head, "collector counted {received} of {head}");

    let rs = harness::Rsyslog::start_with(&dir.path().join("rsyslog"), &certs, false);
    let syslog = forward_config(&format!(
        "[[forward]]\nname = \"bench-syslog\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\n",
        rs.port,
        certs.ca.display()
    ));
    let took = catch_up(&syslog, &store, head);
    let syslog_rate = head as f64 / took.as_secs_f64();
    println!(
        "  syslog (RFC 5425 over TLS to rsyslogd) catch-up of {head}: {:.1} s = {syslog_rate:.0} events/s (goal {GOAL:.0}) {}",
        took.as_secs_f64(),
        if syslog_rate >= GOAL {
            "ok"
        } else {
            "BELOW GOAL"
        }
    );

    // Sustained: both outputs follow while 200,000 more events are written.
    let live = 200_000u64;
    let fw = Forwarders::start(
        &[https.clone(), syslog.clone()],
        &store,
        "bench-host",
        Some(h.durable()),
    )
    .expect("start");
    let start = Instant::now();
    let write_rate = append(&rt, &h, total, live);
    let head2 = h.stats().last_seq;
    let written_at = start.elapsed();
    let mut lags = Vec::new();
    loop {
        let st = fw.status(Some(head2));
        if st.iter().all(|s| s.acked_seq >= head2) {
            break;
        }
        if lags.is_empty() && start.elapsed() >= written_at {
            lags = st.iter().map(|s| s.backlog).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = start.elapsed();
    fw.shutdown(Duration::from_secs(1));
    let forwarded = head2 - head;
    println!(
        "  sustained: {forwarded} events written at {write_rate:.0} events/s while both outputs followed; \
         both caught up {:.2} s after the first write = {:.0} events/s each (backlog when writing ended: https {}, syslog {})",
        all.as_secs_f64(),
        forwarded as f64 / all.as_secs_f64(),
        lags.first().copied().unwrap_or(0),
        lags.get(1).copied().unwrap_or(0),
    );
    drop(rs);
    drop(collector);
    rt.block_on(h.shutdown());
    let _ = writer.join();
}
