//! `cargo xtask setup`: make a fresh machine able to build and test Warden.
//! Every step checks first and does nothing when already done.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run as sh;

/// Debian packages the build, the tests and the demo use, besides
/// `pgkit::PG_PACKAGES` (PostgreSQL, PgBouncer, psycopg2) and
/// `pgkit::REGRESS_PACKAGES` (what PostgreSQL's regression suite needs:
/// dpkg-dev, the server headers, a C toolchain) and
/// `pgkit::mariadb::MARIADB_PACKAGES` (MariaDB, its client, pymysql,
/// sysbench).
const APT_PACKAGES: &[(&str, &str)] = &[
    // (package, a file it provides that tells us it is installed)
    ("bpftool", "/usr/sbin/bpftool"),
    ("python3", "/usr/bin/python3"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("iproute2", "/usr/bin/ss"),
    ("socat", "/usr/bin/socat"),
    ("rsyslog-gnutls", "/usr/share/doc/rsyslog-gnutls/copyright"),
    // HTTP tests (upstream server, a Python client) and `bench http`.
    ("nginx", "/usr/sbin/nginx"),
    (
        "python3-requests",
        "/usr/lib/python3/dist-packages/requests/__init__.py",
    ),
    ("wrk", "/usr/bin/wrk"),
    // The metrics test scrapes Warden with a real Prometheus.
    ("prometheus", "/usr/bin/prometheus"),
    // pg_query (PostgreSQL's own parser, libpg_query) generates its bindings
    // with bindgen, which needs libclang.
    ("libclang-dev", "/usr/lib/llvm-14/lib/libclang.so"),
    // `cargo xtask package` and its test: strip, lintian, and
    // deb-systemd-helper for the maintainer scripts (dpkg-shlibdeps comes
    // with dpkg-dev, in pgkit::REGRESS_PACKAGES).
    ("binutils", "/usr/bin/strip"),
    ("lintian", "/usr/bin/lintian"),
    ("init-system-helpers", "/usr/bin/deb-systemd-helper"),
];

/// The bpf-linker release known to build against the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    apt()?;
    nightly()?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    Ok(())
}

/// The cargo-fuzz release the fuzz targets (fuzz/, `cargo xtask fuzz`) are
/// built with (on the nightly toolchain, which the eBPF build needs anyway).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if have {
        return Ok(());
    }
    sh(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .chain(pgkit::PG_PACKAGES)
        .chain(pgkit::REGRESS_PACKAGES)
        .chain(pgkit::mariadb::MARIADB_PACKAGES)
        .filter(|(_, probe)| !std::path::Path::new(probe).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // The server headers pinned to the installed server's version.
    let names: Vec<String> = missing.iter().map(|p| pgkit::apt_name(p)).collect();
    eprintln!("setup: installing {}", names.join(" "));
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&names))
}

/// The nightly toolchain: the eBPF build (`-Z build-std`) and the fuzz
/// targets (cargo-fuzz's sanitizer-coverage flags) need it; a fresh
/// machine has stable only.
fn nightly() -> Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup (install it from https://rustup.rs)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        return Ok(());
    }
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (is the nightly toolchain installed?)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("rustc +nightly --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let libdir = sysroot.join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("listing {}", libdir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| format!("no libLLVM in {}", libdir.display()))?;
    let llvm_major = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.trim_start_matches("libLLVM.so.")
                .trim_start_matches("libLLVM-")
                .split(['.', '-'])
                .next()
                .map(str::to_owned)
        })
        .context("cannot read the LLVM version of the nightly toolchain")?;

    // Already built against this very libLLVM? (the stamp names it)
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let stamp = home.join("warden-bpf-linker.stamp");
    let want = llvm.display().to_string();
    // bpf-linker loads the nightly's libLLVM at run time (rustup puts the
    // toolchain's lib dir on the library path when cargo runs it).
    let have_linker = Command::new("bpf-linker")
        .arg("--version")
        .env("LD_LIBRARY_PATH", &libdir)
        .output()
        .is_ok_and(|o| o.status.success());
    if have_linker && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        return Ok(());
    }

    let prefix = std::env::temp_dir().join("warden-llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let link = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)
        .with_context(|| format!("symlinking {} -> {}", link.display(), llvm.display()))?;
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed: {status}");
    }
    std::fs::write(&stamp, want)?;
    Ok(())
}
