//! Fuzzes the configuration loader the daemon, `warden check-config` and a
//! reload use (`Config::load`: the file read, UTF-8 check, TOML, decoding,
//! `config::validate`), seeded with the shipped configurations so the
//! fuzzer starts inside Warden's keys rather than in the TOML library.
//! Any byte string gives a `Config` or diagnostics that point inside the
//! input, never a panic; a configuration that loads answers the lookups
//! the daemon makes at start.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use warden::config::{Config, ConfigError};

/// One file per fuzzing process, rewritten for each input.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("warden-fuzz-config-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    dir.join("warden.toml")
});

fuzz_target!(|data: &[u8]| {
    if let Err(e) = std::fs::write(&*FILE, data) {
        panic!("{}: {e}", FILE.display());
    }
    // Lines as the diagnostics count them (a trailing line without a
    // newline counts; invalid UTF-8 is reported on the line it starts).
    let lines = data.split(|b| *b == b'\n').count().max(1);
    match Config::load(&FILE) {
        Err(ConfigError::Invalid { diagnostics, .. }) => {
            assert!(!diagnostics.is_empty());
            for d in diagnostics {
                assert!(d.line >= 1 && d.line <= lines, "line {} of {lines}", d.line);
            }
        }
        Err(e) => panic!("a readable file gives diagnostics, not {e}"),
        Ok(cfg) => {
            let _ = cfg.audit_path();
            let _ = cfg.listen6_addr();
            let _ = cfg.account_uids();
            for t in &cfg.targets {
                let _ = cfg.fail_mode_of(t);
                let _ = t.effective_upstream_tls();
                assert!(cfg.target(&t.name).is_some());
            }
            for g in &cfg.grants {
                assert!(cfg.is_granted(&g.account, &g.target), "grant {g:?}");
                assert!(
                    cfg.target(&g.target).is_some(),
                    "grant of an unknown target"
                );
                assert!(
                    cfg.account(&g.account).is_some(),
                    "grant of an unknown account"
                );
            }
            let _ = warden::config::warnings::port_warnings(&cfg, Some(1024));
        }
    }
});
