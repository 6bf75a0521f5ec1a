//! `cargo xtask fuzz [TARGET] [--secs N]`: builds the cargo-fuzz targets of
//! `fuzz/` (nightly, one build for all of them, in the workspace's own
//! target directory), runs each in turn (one job: the machine has two
//! cores) from its checked-in seeds (`fuzz/seeds/<target>`) and its working
//! corpus (`target/fuzz/corpus/<target>`, kept between runs), with its
//! dictionary, after replaying every regression input
//! (`fuzz/regressions/<target>`); prints the figures as a table (also
//! written to `target/fuzz/report.md`) and fails on any crash.
//!
//! `cargo xtask test` ends with a smoke run ([`smoke`], [`SMOKE_SECS`] per
//! target: every target builds, replays its regression inputs and survives
//! a short run; about 3 minutes for the twelve targets once built).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::run as sh;

/// A fuzz target: its name, the dictionary it uses, and the longest input
/// worth trying (the formats with large limits need room to reach them).
struct Target {
    name: &'static str,
    dict: Option<&'static str>,
    max_len: usize,
}

const fn t(name: &'static str, dict: Option<&'static str>, max_len: usize) -> Target {
    Target {
        name,
        dict,
        max_len,
    }
}

/// Every target of fuzz/Cargo.toml (checked against it by [`check_list`]).
const TARGETS: &[Target] = &[
    t("pg_frame", None, 4096),
    t("pg_startup", None, 4096),
    // Heads up to production's 64 KiB limit, and a body after them.
    t("http_request", Some("http.dict"), 80 * 1024),
    t("http_path", Some("http.dict"), 4096),
    t("http_response", Some("http.dict"), 80 * 1024),
    t("http_body", Some("http.dict"), 16 * 1024),
    t("config_parse", Some("toml.dict"), 32 * 1024),
    t("sql_policy", Some("sql.dict"), 4096),
    t("masking", None, 4096),
    t("jwt", None, 8192),
    t("control_request", None, 4096),
    t("forward_answer", None, 8192),
    t("mysql_packet", None, 4096),
    t("mysql_handshake", None, 4096),
];

/// Figures of one target's run.
#[derive(Default)]
struct Figures {
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    features: u64,
    corpus: u64,
    crashes: Vec<PathBuf>,
    regressions: usize,
    failed: Option<String>,
}

/// Seconds per target of the smoke run in `cargo xtask test`.
pub const SMOKE_SECS: u64 = 15;

/// The smoke run of `cargo xtask test`: every target, [`SMOKE_SECS`] each.
pub fn smoke(root: &Path) -> Result<()> {
    main(root, None, SMOKE_SECS)
}

pub fn main(root: &Path, which: Option<&str>, secs: u64) -> Result<()> {
    check_list(root)?;
    let targets: Vec<&Target> = match which {
        None => TARGETS.iter().collect(),
        Some(name) => match TARGETS.iter().find(|t| t.name == name) {
            Some(t) => vec![t],
            None => bail!(
                "no fuzz target {name:?}; targets: {}",
                TARGETS
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    build(root, which)?;
    let mut rows = Vec::new();
    for t in targets {
        let f = run_target(root, t, secs)?;
        rows.push((t.name, f));
    }
    let table = table(&rows, secs);
    println!("{table}");
    let dir = root.join("target/fuzz");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &table)?;
    let bad: Vec<String> = rows
        .iter()
        .filter_map(|(name, f)| {
            if !f.crashes.is_empty() {
                Some(format!(
                    "{name}: {}",
                    f.crashes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                f.failed.as_ref().map(|why| format!("{name}: {why}"))
            }
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "fuzzing found crashes (keep each as fuzz/regressions/<target>/ with a unit test \
             and a fix):\n  {}",
            bad.join("\n  ")
        );
    }
    Ok(())
}

/// The names in [`TARGETS`] are exactly the `[[bin]]`s of fuzz/Cargo.toml.
fn check_list(root: &Path) -> Result<()> {
    let manifest =
        std::fs::read_to_string(root.join("fuzz/Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "warden-fuzz" && *n != "warden_fuzz")
        .collect();
    bins.sort_unstable();
    let mut listed: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    listed.sort_unstable();
    if bins != listed {
        bail!("xtask/src/fuzz.rs lists {listed:?} but fuzz/Cargo.toml has {bins:?}");
    }
    Ok(())
}

/// The target directory the fuzz build shares with the workspace.
fn target_dir(root: &Path) -> PathBuf {
    root.join("target")
}

/// One build of every target (or of `which`): release with debug
/// assertions (overflow checks), libFuzzer's coverage, no sanitizer (the
/// agent is safe Rust; the C it links is not instrumented by rustc flags
/// anyway, and a sanitizer halves the executions).
fn build(root: &Path, which: Option<&str>) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", "build", "-O", "-a", "-s", "none"])
        .arg("--target-dir")
        .arg(target_dir(root));
    if let Some(w) = which {
        cmd.arg(w);
    }
    // `cargo run` (the xtask alias) exports the xtask package's CARGO_*
    // variables; build scripts that rerun when CARGO_PKG_NAME and the like
    // change (ring) would then rebuild at every run.
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k == "CARGO" || k == "OUT_DIR" || k.starts_with("CARGO_") && k != "CARGO_HOME")
        {
            cmd.env_remove(k);
        }
    }
    sh(&mut cmd)
}

fn binary(root: &Path, name: &str) -> PathBuf {
    target_dir(root)
        .join("x86_64-unknown-linux-gnu/release")
        .join(name)
}

fn run_target(root: &Path, t: &Target, secs: u64) -> Result<Figures> {
    let bin = binary(root, t.name);
    let work = root.join("target/fuzz");
    let corpus = work.join("corpus").join(t.name);
    let artifacts = work.join("artifacts").join(t.name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut f = Figures::default();

    // Regression inputs first: each must pass.
    let regressions = root.join("fuzz/regressions").join(t.name);
    let inputs: Vec<PathBuf> = match std::fs::read_dir(&regressions) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    if !inputs.is_empty() {
        f.regressions = inputs.len();
        let out = Command::new(&bin)
            .args(&inputs)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            f.failed = Some(format!(
                "a regression input of fuzz/regressions/{} fails again",
                t.name
            ));
            return Ok(f);
        }
    }

    let seeds = root.join("fuzz/seeds").join(t.name);
    let mut cmd = Command::new(&bin);
    cmd.arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={}", t.max_len))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null());
    if let Some(d) = t.dict {
        cmd.arg(format!(
            "-dict={}",
            root.join("fuzz/dicts").join(d).display()
        ));
    }
    eprintln!("+ {} ({secs} s)", t.name);
    let started = Instant::now();
    let before: Vec<PathBuf> = crash_files(&artifacts);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    std::fs::write(work.join(format!("{}.log", t.name)), log.as_bytes())?;
    parse_log(&log, &mut f);
    f.crashes = crash_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !out.status.success() && f.crashes.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        f.failed = Some(format!(
            "exited with {} after {} s (log: target/fuzz/{}.log)",
            out.status,
            started.elapsed().as_secs(),
            t.name
        ));
    }
    f.corpus = std::fs::read_dir(&corpus).map_or(0, |rd| rd.count() as u64);
    Ok(f)
}

fn crash_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        ["crash-", "oom-", "timeout-", "leak-"]
                            .iter()
                            .any(|k| n.starts_with(k))
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads libFuzzer's final statistics and its last status line.
fn parse_log(log: &str, f: &mut Figures) {
    for line in log.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            f.execs = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            f.execs_per_sec = v.trim().parse().unwrap_or(0);
        } else if line.starts_with('#') {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                match w {
                    "cov:" => f.cov = words.next().and_then(|n| n.parse().ok()).unwrap_or(f.cov),
                    "ft:" => {
                        f.features = words
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(f.features)
                    }
                    _ => {}
                }
            }
        }
    }
}

fn table(rows: &[(&str, Figures)], secs: u64) -> String {
    let mut s = format!(
        "| target ({secs} s each) | executions | exec/s | coverage (edges) | features | corpus | regressions replayed | crashes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (name, f) in rows {
        let crashes = if let Some(why) = &f.failed {
            format!("FAILED: {why}")
        } else {
            f.crashes.len().to_string()
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {crashes} |\n",
            f.execs, f.execs_per_sec, f.cov, f.features, f.corpus, f.regressions
        ));
    }
    s
}
