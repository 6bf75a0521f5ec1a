//! Fuzzes the configuration loader: any byte string must give either a
//! valid `Config` or diagnostics that point inside the input, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    if let Err(warden::config::ConfigError::Invalid { diagnostics, .. }) =
        warden::config::Config::parse(text, Path::new("fuzz.toml"))
    {
        assert!(!diagnostics.is_empty());
        for d in diagnostics {
            assert!(d.line >= 1 && d.line <= lines + 1, "line {} of {lines}", d.line);
        }
    }
});
