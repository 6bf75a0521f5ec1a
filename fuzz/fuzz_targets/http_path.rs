//! Differential target for the HTTP path normaliser (`protocol::http::path`):
//! what the policy matches (`match_path`) and what goes upstream
//! (`forward()`) must be a fixed point: normalising the forwarded target
//! again gives the same path, the same match path and the same query, so
//! the upstream cannot read a different path than the one judged. Globs
//! over a normalised path never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::protocol::http::path::{normalize, path_glob, query_pairs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A glob pattern may follow the target after a NUL.
    let (target, pattern) = text.split_once('\0').unwrap_or((text, "/**"));
    let Ok(t) = normalize(target) else {
        return;
    };
    let fwd = t.forward();
    let again = normalize(&fwd).expect("a forwarded target normalises");
    assert_eq!(again.path, t.path, "path of {fwd:?}");
    assert_eq!(again.match_path, t.match_path, "match path of {fwd:?}");
    assert_eq!(again.query, t.query, "query of {fwd:?}");
    assert_eq!(again.forward(), fwd, "forward() is idempotent");
    // Origin form, or `*` (asterisk form, OPTIONS).
    assert!(t.path.starts_with('/') || t.path == "*", "{:?}", t.path);
    let _ = path_glob(pattern, &t.match_path);
    if let Some(q) = &t.query {
        let _ = query_pairs(q);
    }
});
