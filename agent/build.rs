//! Builds `agent-ebpf` with the nightly toolchain and bpf-linker (through
//! aya-build) so that the object can be embedded in the `warden` binary.
//!
//! aya-build replays the sub-build's every line as a cargo warning (about
//! 36 `warning: warden@0.1.0:    Compiling …` lines on every build). So the
//! sub-build runs in a child process (this same build script, told so by
//! [`CHILD_ENV`]) whose output is held back: on success only the cargo
//! directives and real compiler diagnostics pass, on failure everything is
//! shown.
use std::io::Write as _;
use std::process::Command;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Set in the child that runs the eBPF build itself.
const CHILD_ENV: &str = "WARDEN_EBPF_BUILD_CHILD";

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return build_ebpf();
    }
    let exe = std::env::current_exe().context("the build script's own path")?;
    let out = Command::new(&exe)
        .env(CHILD_ENV, "1")
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Cargo prints a failed build script's stderr: all of it, then.
        let mut err = std::io::stderr().lock();
        for line in stdout.lines() {
            let _ = writeln!(
                err,
                "{}",
                line.strip_prefix("cargo:warning=").unwrap_or(line)
            );
        }
        let _ = write!(err, "{stderr}");
        return Err(anyhow!("the eBPF build failed ({})", out.status));
    }
    for line in stdout.lines() {
        match line.strip_prefix("cargo:warning=") {
            Some(text) if is_progress(text) => {}
            _ => println!("{line}"),
        }
    }
    Ok(())
}

/// A cargo status line of the sub-build (`   Compiling x v1`, `Finished …`)
/// or a blank line, as opposed to a compiler diagnostic.
fn is_progress(text: &str) -> bool {
    let t = text.trim_start();
    t.is_empty()
        || [
            "Compiling",
            "Finished",
            "Fresh",
            "Running",
            "Blocking",
            "Updating",
            "Downloading",
            "Downloaded",
            "Locking",
            "Adding",
            "Checking",
        ]
        .iter()
        .any(|verb| t.starts_with(verb) && t[verb.len()..].starts_with(' '))
}

fn build_ebpf() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "warden-ebpf")
        .ok_or_else(|| anyhow!("warden-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("warden-ebpf manifest has no parent directory"))?
        .to_string();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
