//! Fuzzes the masking detectors and `Masker` on upstream values as the
//! proxies use them: `mask_value` (PostgreSQL DataRow and CopyData
//! fields), `mask_patterns` (messages, HTTP text), `mask_str` (statement
//! text, errors), and `apply` (column strategies), over maskers of one
//! detector each and of all of them, with every pattern strategy.
//!
//! The first input byte picks the masker; the rest is the value.
//!
//! Differential: a value masked for a set of detectors never still holds
//! a match of one of them (masking the result again finds nothing), and
//! a value with no match is left exactly as it was.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use warden::masking::{Masked, Masker, MaskingConfig, Strategy};

const DETECTORS: &[&str] = &["card", "email", "ssn", "iban", "token"];
const STRATEGIES: &[&str] = &["redact", "last4", "hmac", "null"];

fn compile(patterns: &[&str], strategy: &str) -> Masker {
    let mut cfg: MaskingConfig = match serde_json::from_value(serde_json::json!({
        "patterns": patterns,
        "pattern_strategy": strategy,
    })) {
        Ok(c) => c,
        Err(e) => panic!("masking config: {e}"),
    };
    let key = (strategy == "hmac").then(|| {
        cfg.hmac_key_file = Some("/etc/warden/mask.key".into());
        vec![0x5a; 32]
    });
    match Masker::compile(&cfg, key) {
        Ok(m) => m,
        Err(e) => panic!("masking {patterns:?}/{strategy}: {e:?}"),
    }
}

/// Every detector alone and all together, with every strategy.
static MASKERS: LazyLock<Vec<Masker>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for s in STRATEGIES {
        for d in DETECTORS {
            out.push(compile(&[d], s));
        }
        out.push(compile(DETECTORS, s));
    }
    out
});

fuzz_target!(|data: &[u8]| {
    let Some((sel, value)) = warden_fuzz::selector(data) else {
        return;
    };
    let m = &MASKERS[usize::from(sel) % MASKERS.len()];
    match m.mask_patterns(value) {
        None => {
            assert!(m.mask_value(value).is_none());
        }
        Some((masked, n)) => {
            assert!(n > 0);
            if let Some((again, _)) = m.mask_patterns(&masked) {
                panic!(
                    "{m:?}: {:?} masked to {:?} still matches (-> {:?})",
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(&masked),
                    String::from_utf8_lossy(&again)
                );
            }
            match m.mask_value(value) {
                Some((Masked::Null, k)) => {
                    assert_eq!(m.pattern_strategy(), Strategy::Null);
                    assert_eq!(k, n);
                }
                Some((Masked::Value(v), k)) => {
                    assert_eq!(v, masked);
                    assert_eq!(k, n);
                }
                None => panic!("mask_value found nothing where mask_patterns did"),
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(value) {
        let (out, n) = m.mask_str(s);
        assert_eq!(n == 0, out == s);
        assert_eq!(m.mask_str(&out).1, 0, "mask_str leaves a match in {out:?}");
    }
    for s in [
        Strategy::Redact,
        Strategy::Last4,
        Strategy::Hmac,
        Strategy::Null,
    ] {
        let _ = m.apply(s, value);
    }
});
