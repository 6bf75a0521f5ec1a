//! `cargo xtask bench audit` (= `cargo bench -p warden --bench audit`): the
//! audit store's figures on this host, printed, never asserted. It runs the
//! real `warden::audit` code in-process:
//!
//! - sustained append rate through the writer (producer-side encoding,
//!   hash chain, a checkpoint every 1000 events, group commit), with many
//!   concurrent producers, `synchronous = FULL` and `NORMAL`;
//! - added latency of one audited record (a sequential producer), p50/p99;
//! - `verify` speed over the store written by the 64-producer NORMAL run.
//!
//! Each rate is the median of `WARDEN_BENCH_ROUNDS` runs (default 3), best
//! run in brackets: other work on a small machine moves single runs a lot.
//! `WARDEN_BENCH_EVENTS` changes the events per append run (default
//! 200,000).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warden::audit::event::{
    ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId, TokenIdentity,
};
use warden::audit::{SyncMode, WriterOptions, spawn_writer, verify};

/// Events of an append run.
const TOTAL: u64 = 200_000;
/// Concurrent producers of the append runs.
const PRODUCERS: [u64; 2] = [64, 512];
/// Records of the latency run.
const LATENCY_RECORDS: usize = 5_000;
/// Goals from the issue.
const APPEND_GOAL: f64 = 100_000.0;
const VERIFY_GOAL: f64 = 500_000.0;

/// The `i`-th event of a run: an open or a close with a validated identity
/// token, about 1.8 KB of OCSF JSON. As in the daemon, session ids come
/// from one counter and times from the clock, so both grow with `i`;
/// accounts and targets repeat.
fn event(i: u64) -> ConnectionEvent {
    let close = !i.is_multiple_of(2);
    ConnectionEvent {
        time_ms: 1_795_957_502_123 + (i / 64) as i64,
        activity: if close {
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
        bytes_up: if close { 1234 } else { 0 },
        bytes_down: if close { 56_789 } else { 0 },
        duration_ms: if close { 17 } else { 0 },
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

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
        SyncMode::Pipelined => "pipelined",
        SyncMode::Relaxed => "relaxed",
        SyncMode::Normal => "normal",
    }
}

/// Median and best of `runs`.
fn median_best(mut runs: Vec<f64>) -> (f64, f64) {
    runs.sort_by(f64::total_cmp);
    let best = runs.last().copied().unwrap_or(0.0);
    (runs.get(runs.len() / 2).copied().unwrap_or(0.0), best)
}

/// Append `total` events from `producers` tasks into a new store at
/// `path`: (events/s, events per commit).
fn append(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    sync: SyncMode,
    producers: u64,
    total: u64,
) -> (f64, f64) {
    let (h, task) = spawn_writer(path, opts(sync)).expect("open bench store");
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
    rt.block_on(h.shutdown());
    task.join().expect("writer");
    (
        (per * producers) as f64 / secs,
        stats.events as f64 / stats.commits.max(1) as f64,
    )
}

/// Sequential records into a new store: (p50, p99) added latency.
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

/// Per-event costs outside the store: producer-side encoding and the chain
/// hash, in microseconds.
fn unit_costs() -> (usize, f64, f64) {
    let chain = "0123456789abcdef0123456789abcdef";
    let n = 20_000u64;
    let events: Vec<ConnectionEvent> = (0..n).map(event).collect();
    let start = Instant::now();
    let mut size = 0;
    for (i, ev) in events.iter().enumerate() {
        let bytes = warden::audit::encode_connection(ev, i as u64 + 1, chain, "bench-host")
            .expect("encode");
        size = bytes.len();
    }
    let encode = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let key = warden::audit::chain::ChainKey::parse(chain).expect("chain id");
    let data =
        warden::audit::encode_connection(&events[0], 1, chain, "bench-host").expect("encode");
    let start = Instant::now();
    let mut prev = warden::audit::chain::GENESIS;
    for seq in 1..=n {
        prev = warden::audit::chain::event_hash(&key, seq, &prev, &data);
    }
    let hash = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    (size, encode, hash)
}

fn main() {
    let rounds = env_u64("WARDEN_BENCH_ROUNDS", 3).max(1);
    let total = env_u64("WARDEN_BENCH_EVENTS", TOTAL).max(PRODUCERS[1]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "audit store benchmark: {} CPUs, stores in {}, median of {rounds} runs [best]",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.path().display()
    );
    let (size, encode, hash) = unit_costs();
    println!(
        "event: {size} bytes of OCSF JSON; per event {encode:.1} us encoding (on the producer), \
         {hash:.2} us chain hash"
    );
    println!(
        "append {total} events (hash chain, checkpoint every 1000, group commit of up to 256):"
    );
    let mut verify_store = None;
    for sync in [SyncMode::Full, SyncMode::Normal] {
        for producers in PRODUCERS {
            let mut rates = Vec::new();
            let mut per_commit = 0.0;
            for round in 0..rounds {
                let path = dir
                    .path()
                    .join(format!("append-{}-{producers}-{round}.db", sync_name(sync)));
                let (rate, batch) = append(&rt, &path, sync, producers, total);
                rates.push(rate);
                per_commit = batch;
                if sync == SyncMode::Normal && producers == PRODUCERS[0] && round == 0 {
                    verify_store = Some(path);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let (median, best) = median_best(rates);
            println!(
                "  synchronous={:<6} {producers:>3} producers: {median:>8.0} events/s [{best:>8.0}], \
                 {per_commit:.0} events per commit",
                sync_name(sync)
            );
        }
    }
    println!("added latency of one record, sequential producer, {LATENCY_RECORDS} records:");
    for sync in [SyncMode::Full, SyncMode::Normal] {
        let path = dir.path().join(format!("latency-{}.db", sync_name(sync)));
        let (p50, p99) = latency(&rt, &path, sync);
        println!(
            "  synchronous={:<6} p50 {:>6.1} us   p99 {:>6.1} us",
            sync_name(sync),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    if let Some(path) = verify_store {
        let mut rates = Vec::new();
        let mut summary = String::new();
        for _ in 0..rounds {
            let start = Instant::now();
            let report = verify(&path, None).expect("verify");
            let secs = start.elapsed().as_secs_f64();
            rates.push(report.events as f64 / secs);
            summary = format!(
                "{} events, {}",
                report.events,
                if report.is_intact() {
                    "intact"
                } else {
                    "DAMAGED"
                }
            );
        }
        let (median, best) = median_best(rates);
        println!("verify ({summary}): {median:.0} events/s [{best:.0}]");
    }
    println!("goals: append >= {APPEND_GOAL:.0} events/s, verify >= {VERIFY_GOAL:.0} events/s");
}
