//! Developer tasks: `cargo xtask setup | build | test | lint | demo | bench | package | fuzz`.

mod bench;
mod demo;
mod fuzz;
mod nginx;
mod package;
mod pg;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (apt packages, rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build target/release/warden (eBPF object embedded).
    Build,
    /// Setup, lint, then the whole test suite (unit + privileged end-to-end).
    Test,
    /// rustfmt check and clippy with -D warnings.
    Lint,
    /// One-command tour: a demo service, Warden, an enrolled client, the audit trail.
    Demo,
    /// Benchmarks that print figures; without NAME, all of them. relay: TCP
    /// direct vs through Warden; pg: pgbench direct, through Warden and
    /// through PgBouncer, agent RSS at 500 sessions; audit, masking, policy…:
    /// the agent crate's in-process benches (agent/benches/).
    Bench {
        #[arg(value_name = "NAME")]
        which: Option<String>,
    },
    /// Build target/debian/warden_<version>_amd64.deb and run lintian on it.
    Package {
        /// Package this binary instead of building target/release/warden.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Directory for the .deb (default: target/debian).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Skip lintian.
        #[arg(long)]
        no_lintian: bool,
    },
    /// Fuzz targets (fuzz/), one after the other, TARGET alone when given:
    /// a table of executions, exec/s, coverage, corpus and crashes; fails on
    /// any crash.
    Fuzz {
        #[arg(value_name = "TARGET")]
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        secs: u64,
    },
    /// Internal: the bench's client, run inside a bench cgroup.
    #[command(hide = true)]
    BenchClient { mode: String, addr: String },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::run()?;
            build_release(&root)
        }
        Cmd::Lint => lint(&root),
        Cmd::Test => {
            setup::run()?;
            lint(&root)?;
            test(&root)
        }
        Cmd::Demo => {
            setup::run()?;
            build_release(&root)?;
            demo::run(&root)
        }
        Cmd::Package {
            binary,
            out,
            no_lintian,
        } => {
            setup::run()?;
            package::run_package(
                &root,
                &package::Options {
                    binary,
                    out,
                    lintian: !no_lintian,
                },
            )
            .map(drop)
        }
        Cmd::Fuzz { target, secs } => {
            setup::run()?;
            fuzz::main(&root, target.as_deref(), secs)
        }
        Cmd::BenchClient { mode, addr } => bench::client_main(&mode, &addr),
        Cmd::Bench { which } => {
            setup::run()?;
            bench::main(&root, which.as_deref(), || build_release(&root))
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command, echoing it, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn build_release(root: &Path) -> Result<()> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "warden", "--bin", "warden"]))
}

fn lint(root: &Path) -> Result<()> {
    run(cargo()
        .current_dir(root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "warden-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the BPF target, with the nightly toolchain.
    run(Command::new("rustup")
        .current_dir(root.join("agent-ebpf"))
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
}

fn test(root: &Path) -> Result<()> {
    if !nix_is_root() {
        bail!("the end-to-end tests load eBPF programs: run `cargo xtask test` as root");
    }
    // Unit tests of every crate, then the privileged end-to-end suites one at a
    // time (they attach programs and create cgroups).
    run(cargo().current_dir(root).args([
        "test",
        "--workspace",
        "--exclude",
        "warden-ebpf",
        "--lib",
        "--bins",
    ]))?;
    let suites = run(cargo().current_dir(root).args([
        "test",
        "-p",
        "warden",
        "--test",
        "*",
        // Every suite runs even after one fails, so one CI run shows them all.
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]));
    // The fuzz smoke run: every target builds, replays its regression
    // inputs and survives a short run (fails on any crash).
    let smoke = fuzz::smoke(root);
    match (suites, smoke) {
        (Err(a), Err(b)) => Err(a.context(format!("and the fuzz smoke run failed: {b:#}"))),
        (a, b) => a.and(b),
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
