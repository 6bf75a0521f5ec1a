//! `cargo xtask bench audit` (or `cargo bench -p warden --bench audit`): the
//! audit store's figures on this host, printed, never asserted.
//!
//! - sustained append rate through the real writer (hash chain, checkpoints
//!   every 1000 events, group commit), many concurrent producers, with
//!   `synchronous = FULL` and `NORMAL`;
//! - added latency of one audited record (a sequential producer), p50/p99;
//! - `verify` speed over the store written by the append run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warden::audit::event::{
    ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId, TokenIdentity,
};
use warden::audit::{SyncMode, WriterOptions, spawn_writer, verify};

/// Events of the append run (`WARDEN_BENCH_EVENTS` overrides).
const TOTAL: u64 = 200_000;
/// Concurrent producers of the append run.
const PRODUCERS: u64 = 64;
/// Records of the latency run.
const LATENCY_RECORDS: usize = 5_000;

/// The `i`-th event of a run. As in the daemon, session ids come from one
/// counter and times from the clock, so both grow with `i` (the indexes on
/// them are appended to); accounts and targets repeat.
fn event(i: u64) -> ConnectionEvent {
    ConnectionEvent {
        time_ms: 1_795_957_502_123 + (i / 64) as i64,
        activity: if i.is_multiple_of(2) {
            ConnActivity::Open
        } else {
            ConnActivity::Close
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
            exe: Some("/usr/local/bin/orders-api".into()),
            cgroup_id: Some(4242),
            cgroup_path: Some("/system.slice/orders-api.service".into()),
            exe_sha256: Some("ab".repeat(32)),
            cmdline: Some("/usr/local/bin/orders-api --listen :8080".into()),
            start_boot_ns: Some(42_000_000_000),
            pid_reused: false,
            unit: Some("orders-api.service".into()),
        },
        client: "127.0.0.1:40000".parse().expect("literal address"),
        orig_dst: Some("10.0.0.5:5432".parse().expect("literal address")),
        bytes_up: 1234 * (i % 2),
        bytes_down: 56789 * (i % 2),
        duration_ms: 17 * (i % 2),
        identity: Some(TokenIdentity {
            source: "token_file".into(),
            iss: "https://idp.example".into(),
            sub: "system:serviceaccount:orders:api".into(),
            aud: vec!["warden".into()],
            jti: Some(format!("j-{i}")),
            exp: 1_900_000_000,
            kid: Some("k1".into()),
            alg: "RS256".into(),
            attestation: None,
        }),
    }
}

fn opts(sync: SyncMode) -> WriterOptions {
    WriterOptions {
        sync,
        host: "bench-host".into(),
        ..WriterOptions::default()
    }
}

fn sync_name(sync: SyncMode) -> &'static str {
    match sync {
        SyncMode::Full => "full",
        SyncMode::Normal => "normal",
    }
}

/// Append `TOTAL` events from `producers` tasks; events/s.
fn append(rt: &tokio::runtime::Runtime, path: &Path, sync: SyncMode, producers: u64) -> f64 {
    let (h, task) = spawn_writer(path, opts(sync)).expect("open bench store");
    let total = std::env::var("WARDEN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TOTAL);
    let per = total / producers;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..producers {
            let h = h.clone();
            let next = Arc::clone(&next);
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    h.record(event(i)).await.expect("record");
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer task");
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let stats = h.stats();
    println!(
        "        {} commits, {:.1} events per commit",
        stats.commits,
        stats.events as f64 / stats.commits.max(1) as f64
    );
    rt.block_on(h.shutdown());
    task.join().expect("writer");
    (per * producers) as f64 / secs
}

/// Sequential records: (p50, p99) added latency.
fn latency(rt: &tokio::runtime::Runtime, path: &Path, sync: SyncMode) -> (Duration, Duration) {
    let (h, task) = spawn_writer(path, opts(sync)).expect("open bench store");
    let mut samples = Vec::with_capacity(LATENCY_RECORDS);
    rt.block_on(async {
        for i in 0..LATENCY_RECORDS as u64 {
            let ev = event(i);
            let start = Instant::now();
            h.record(ev).await.expect("record");
            samples.push(start.elapsed());
        }
    });
    rt.block_on(h.shutdown());
    task.join().expect("writer");
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "audit benchmark on this host ({} CPUs), store in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.path().display()
    );
    println!(
        "event size: {} bytes of OCSF JSON",
        warden::audit::encode_connection(&event(1), 1, &"0".repeat(32), "bench-host")
            .map_or(0, |b| b.len())
    );
    let mut verify_store = None;
    let only = std::env::var("WARDEN_BENCH_ONLY").unwrap_or_default();
    for sync in [SyncMode::Full, SyncMode::Normal] {
        for producers in [PRODUCERS, 512] {
            if !only.is_empty() && only != format!("{}-{producers}", sync_name(sync)) {
                continue;
            }
            let path = dir
                .path()
                .join(format!("append-{}-{producers}.db", sync_name(sync)));
            let rate = append(&rt, &path, sync, producers);
            println!(
                "append  synchronous={:<6} {producers:>3} producers: {rate:>9.0} events/s",
                sync_name(sync)
            );
            if sync == SyncMode::Normal && producers == PRODUCERS {
                verify_store = Some(path);
            }
        }
    }
    for sync in [SyncMode::Full, SyncMode::Normal] {
        if !only.is_empty() {
            continue;
        }
        let path = dir.path().join(format!("latency-{}.db", sync_name(sync)));
        let (p50, p99) = latency(&rt, &path, sync);
        println!(
            "latency synchronous={:<6} sequential:    p50 {:>7.1} us  p99 {:>7.1} us",
            sync_name(sync),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    if let Some(path) = verify_store {
        let repeat: usize = std::env::var("WARDEN_BENCH_VERIFY_REPEAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for _ in 0..repeat {
            let start = Instant::now();
            let report = verify(&path, None).expect("verify");
            let secs = start.elapsed().as_secs_f64();
            println!(
                "verify  {} events ({}): {:>9.0} events/s",
                report.events,
                if report.is_intact() {
                    "intact"
                } else {
                    "DAMAGED"
                },
                report.events as f64 / secs
            );
        }
    }
}
