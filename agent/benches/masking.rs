//! `cargo bench -p warden --bench masking`: the pattern backstop's cost on
//! this host, printed, never asserted. It runs the real `warden::masking`
//! code with every built-in detector on:
//!
//! - a 1,000-row × 10-column result of realistic mixed values (ids, names,
//!   timestamps, amounts, statuses, cities, UUIDs, free text, a few emails
//!   and card numbers), each value through `mask_value` as the proxy does;
//! - the per-value cost of each kind of value, matched or not.
//!
//! Every figure is the median of `WARDEN_BENCH_ROUNDS` rounds (default 15),
//! best round in brackets. The issue's goal: the 1000×10 result in ≤ 2 ms.

use std::hint::black_box;
use std::time::Instant;

use warden::masking::{Masker, MaskingConfig, builtin};

const ROWS: usize = 1000;
const GOAL_MS: f64 = 2.0;

fn luhn_complete(body: &str) -> String {
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|s| {
            let sum: u32 = s
                .bytes()
                .rev()
                .enumerate()
                .map(|(i, b)| {
                    let d = u32::from(b - b'0');
                    if i % 2 == 1 {
                        let x = d * 2;
                        if x > 9 { x - 9 } else { x }
                    } else {
                        d
                    }
                })
                .sum();
            sum.is_multiple_of(10)
        })
        .unwrap_or_default()
}

/// Row `i` of the result: 10 text-format values.
fn row(i: usize) -> Vec<Vec<u8>> {
    const FIRST: [&str; 8] = [
        "Alice", "Bob", "Chen", "Dana", "Émile", "Farah", "Goran", "Hiro",
    ];
    const LAST: [&str; 6] = ["Smith", "Okafor", "Müller", "Nakamura", "Rossi", "Lee"];
    const CITY: [&str; 5] = ["Berlin", "São Paulo", "Tokyo", "Lagos", "Austin"];
    const STATUS: [&str; 4] = ["active", "pending", "closed", "suspended"];
    let name = format!("{} {}", FIRST[i % 8], LAST[i % 6]);
    // One row in 20 has an email in the contact column, one in 50 a card in
    // the notes; the rest hold ordinary text.
    let contact = if i.is_multiple_of(20) {
        format!("{}.{}@example.com", FIRST[i % 8], LAST[i % 6]).to_lowercase()
    } else {
        format!("+1 555 01{:02}", i % 100)
    };
    let notes = if i.is_multiple_of(50) {
        format!(
            "paid with {}",
            luhn_complete(&format!("411111111111{:03}", i % 1000))
        )
    } else {
        format!("order #{} shipped to {}", 100_000 + i, CITY[i % 5])
    };
    vec![
        (1_000_000 + i).to_string(),
        name,
        contact,
        format!(
            "2025-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            1 + i % 12,
            1 + i % 28,
            i % 24,
            i % 60,
            (i * 7) % 60,
            i * 37 % 1_000_000
        ),
        format!("{}.{:02}", 10 + i * 13 % 9000, i % 100),
        STATUS[i % 4].to_string(),
        CITY[i % 5].to_string(),
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            i * 2_654_435_761 % 0xffff_ffff,
            i % 0xffff,
            i % 0xfff,
            (i * 3) % 0xfff,
            i * 11
        ),
        if i.is_multiple_of(3) { "true" } else { "false" }.to_string(),
        notes,
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn rounds() -> usize {
    std::env::var("WARDEN_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// Median and best of `rounds` timings of `f`, in seconds.
fn time(rounds: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..rounds)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

fn mask_result(m: &Masker, rows: &[Vec<Vec<u8>>]) -> usize {
    let mut masked = 0;
    for r in rows {
        for v in r {
            if let Some((out, n)) = m.mask_value(black_box(v)) {
                black_box(out);
                masked += n;
            }
        }
    }
    masked
}

fn main() {
    let rounds = rounds();
    let all = builtin();
    let rows: Vec<Vec<Vec<u8>>> = (0..ROWS).map(row).collect();
    let values = ROWS * 10;
    let bytes: usize = rows.iter().flatten().map(Vec::len).sum();

    // Warm up the lazily built token detector and the caches.
    let masked = mask_result(&all, &rows);
    let (med, best) = time(rounds, || {
        black_box(mask_result(&all, &rows));
    });
    println!(
        "masking: {ROWS} rows x 10 columns ({values} values, {bytes} bytes, {masked} matches), all built-in detectors"
    );
    println!(
        "  result: {:.3} ms  [best {:.3} ms]  = {:.0} ns/value  (goal <= {GOAL_MS} ms: {})",
        med * 1e3,
        best * 1e3,
        med * 1e9 / values as f64,
        if med * 1e3 <= GOAL_MS {
            "met"
        } else {
            "NOT met"
        }
    );

    // Only the custom-free config from the issue (same detectors, compiled).
    let cfg: MaskingConfig =
        toml::from_str(r#"patterns = ["card", "email", "ssn", "iban", "token"]"#)
            .unwrap_or_default();
    if let Ok(m) = Masker::compile(&cfg, None) {
        let (med, best) = time(rounds, || {
            black_box(mask_result(&m, &rows));
        });
        println!(
            "  result via compiled [masking] config: {:.3} ms  [best {:.3} ms]",
            med * 1e3,
            best * 1e3
        );
    }

    // Per-value costs.
    println!("  per value (median of {rounds} rounds of 100,000 calls):");
    let card = luhn_complete("411111111111111");
    let samples: Vec<(&str, String)> = vec![
        ("int", "1000042".into()),
        ("name", "Émile Müller".into()),
        ("timestamp", "2025-03-04 05:06:07.123456+00".into()),
        ("amount", "1234.56".into()),
        ("uuid", "550e8400-e29b-41d4-a716-446655440000".into()),
        ("sentence", "order #100042 shipped to São Paulo".into()),
        ("epoch ms", "1735689600123".into()),
        ("email (hit)", "emile.muller@example.com".into()),
        ("card (hit)", format!("paid with {card}")),
        ("ssn (hit)", "123-45-6789".into()),
        ("iban (hit)", "DE89 3704 0044 0532 0130 00".into()),
        (
            "token (hit)",
            "Authorization: Bearer abcdef0123456789xyz".into(),
        ),
        (
            "1 KB text",
            "The quick brown fox jumps over the lazy dog 0123456789. ".repeat(18),
        ),
    ];
    const CALLS: usize = 100_000;
    for (label, v) in &samples {
        let v = v.as_bytes();
        let (med, best) = time(rounds, || {
            for _ in 0..CALLS {
                black_box(all.mask_value(black_box(v)));
            }
        });
        println!(
            "    {label:<12} {:>4} B  {:>7.0} ns  [best {:.0} ns]",
            v.len(),
            med * 1e9 / CALLS as f64,
            best * 1e9 / CALLS as f64
        );
    }
}
