//! `cargo bench -p warden --bench policy`: the SQL policy engine's costs on
//! this host, printed, never asserted:
//!
//! - analyze + decide of typical statements, uncached (parse, walk, rules);
//! - a decision cache hit for the same statements (scan, shape lookup,
//!   compare) in one session's [`SqlSession`], single-threaded and from 4
//!   threads each with a session of its own (a session is one connection).
//!
//! Each figure is the median of 5 rounds. The issue's goal for a cached
//! decision is at most 5 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use warden::policy::sql::session::SqlSession;
use warden::policy::{Policy, PolicyConfig, SessionContext, Verdict, analyze};

const POLICY: &str = r#"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "allow", classes = ["write"], tables = ["orders", "order_items"] },
  { action = "block", tables = ["secrets", "public.payroll"] },
  { action = "block", functions = ["pg_read_file", "dblink*"] },
]
"#;

const STATEMENTS: &[(&str, &str)] = &[
    (
        "point select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    ),
    (
        "update",
        "UPDATE orders SET status = $1, updated_at = now() WHERE id = $2",
    ),
    (
        "join + sub-query",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.created_at > now() - interval '1 day' AND o.id IN (SELECT order_id FROM order_items \
         WHERE sku = $1) ORDER BY o.created_at DESC LIMIT 50",
    ),
    (
        "psql \\d",
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN \
         pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname \
         OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND \
         pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
    ),
];

const ROUNDS: usize = 5;

/// A session whose search path is `app, public` (as `ctx` below).
fn new_session() -> SqlSession<Verdict> {
    SqlSession::new("bench", Some("app, public"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median nanoseconds per call of `f` over `ROUNDS` rounds of `iters`.
fn time_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        rounds.push(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    median(rounds)
}

fn main() {
    let cfg: PolicyConfig = toml::from_str(POLICY).expect("bench policy parses");
    let policy = Arc::new(Policy::compile("bench", &cfg).expect("bench policy compiles"));
    let ctx = SessionContext::new(vec!["app".into(), "public".into()]);

    println!("policy engine (median of {ROUNDS} rounds)");
    println!(
        "{:<18} {:>14} {:>14} {:>14}",
        "statement", "uncached µs", "cached µs", "4 thr. µs/call"
    );
    for (label, sql) in STATEMENTS {
        let uncached = time_ns(2_000, || {
            let a = analyze(black_box(sql)).expect("bench statement parses");
            black_box(policy.decide(&a, &ctx));
        });
        let mut session = new_session();
        let _ = session.verdict(sql, &policy);
        let cached = time_ns(200_000, || {
            let _ = black_box(session.verdict(black_box(sql), &policy));
        });
        // 4 threads, each its own session, deciding the same text.
        let threaded = {
            let mut per_call = Vec::new();
            for _ in 0..ROUNDS {
                let iters = 100_000u32;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..4 {
                        let policy = policy.clone();
                        s.spawn(move || {
                            let mut session = new_session();
                            for _ in 0..iters {
                                let _ = black_box(session.verdict(black_box(sql), &policy));
                            }
                        });
                    }
                });
                per_call.push(start.elapsed().as_nanos() as f64 / f64::from(iters));
            }
            median(per_call)
        };
        println!(
            "{:<18} {:>14.2} {:>14.3} {:>14.3}",
            label,
            uncached / 1000.0,
            cached / 1000.0,
            threaded / 1000.0
        );
    }
    // pgbench -S in simple mode: every statement carries another literal.
    // The cache is keyed by shape, so these are hits too.
    {
        let texts: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                    17 + i * 7919
                )
            })
            .collect();
        let mut session = new_session();
        let mut i = 0usize;
        let varying = time_ns(200_000, || {
            i = (i + 1) % texts.len();
            let _ = black_box(session.verdict(black_box(&texts[i]), &policy));
        });
        let n = session.cached_decisions();
        println!(
            "{:<18} {:>14} {:>14.3}   (new literal each call; {n} cached decision(s))",
            "point sel. varying",
            "",
            varying / 1000.0
        );
    }
    let cached = {
        let mut session = new_session();
        for _ in 0..10 {
            for (_, sql) in STATEMENTS {
                let _ = session.verdict(sql, &policy);
            }
        }
        session.cached_decisions()
    };
    println!("cache check: {cached} decisions cached over 40 lookups of 4 statements");
    println!("goal: cached decision <= 5 µs");
}
