//! `cargo xtask package`: builds `target/debian/warden_<version>_amd64.deb`
//! with dpkg-deb from the release binary (or `--binary`), then runs lintian
//! on it (`--no-lintian` to skip).
//!
//! Contents: `/usr/bin/warden` (stripped), `warden.service` from
//! `systemd/`, the starting configuration `packaging/warden.toml` as the
//! conffile `/etc/warden/warden.toml` (checked with `warden check-config`
//! before anything is built), `/var/lib/warden` (0700), man pages and
//! shell completions that the binary itself writes from its clap
//! definitions (hidden `warden generate-assets`), the maintainer scripts
//! of `packaging/debian/`, copyright, changelog and lintian overrides.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::run;

/// Where the systemd unit goes (bookworm's dpkg does not yet allow
/// `/usr/lib/systemd/system` alongside merged-/usr aliasing).
const UNIT_DIR: &str = "lib/systemd/system";

pub struct Options {
    /// Package this binary instead of building `target/release/warden`.
    pub binary: Option<PathBuf>,
    /// Directory for the .deb (default `target/debian`).
    pub out: Option<PathBuf>,
    pub lintian: bool,
}

/// Builds the package; returns the path of the .deb.
pub fn run_package(root: &Path, opts: &Options) -> Result<PathBuf> {
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => {
            crate::build_release(root)?;
            root.join("target/release/warden")
        }
    };
    let version = binary_version(&binary)?;
    let changelog = fs::read_to_string(root.join("packaging/debian/changelog"))?;
    ensure!(
        changelog.starts_with(&format!("warden ({version}) ")),
        "packaging/debian/changelog does not start with an entry for {version}: add one"
    );
    let config = root.join("packaging/warden.toml");
    run(Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .arg("check-config"))
    .context("the shipped configuration must pass check-config")?;

    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/debian"));
    let stage = out.join(format!("warden_{version}_amd64"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(&stage)?;

    // The binary, stripped as Debian ships binaries.
    let bin = install(&binary, &stage.join("usr/bin/warden"), 0o755)?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg(&bin))?;

    let unit = fs::read_to_string(root.join("systemd/warden.service"))?;
    ensure!(
        unit.contains("/usr/bin/warden "),
        "systemd/warden.service must run /usr/bin/warden"
    );
    write(
        &stage.join(UNIT_DIR).join("warden.service"),
        unit.as_bytes(),
        0o644,
    )?;

    // Configuration: /etc/warden holds secrets too, so root's only.
    dir(&stage.join("etc/warden"), 0o700)?;
    install(&config, &stage.join("etc/warden/warden.toml"), 0o600)?;
    dir(&stage.join("var/lib/warden"), 0o700)?;

    // Man pages and completions from the binary's own clap definitions.
    let assets = out.join("assets");
    if assets.exists() {
        fs::remove_dir_all(&assets)?;
    }
    run(Command::new(&binary)
        .arg("generate-assets")
        .arg("--out")
        .arg(&assets)
        .stdout(std::process::Stdio::null()))?;
    let man = stage.join("usr/share/man/man1");
    dir(&man, 0o755)?;
    let mut pages: Vec<PathBuf> = fs::read_dir(assets.join("man"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    pages.sort();
    ensure!(
        !pages.is_empty(),
        "warden generate-assets wrote no man page"
    );
    for page in &pages {
        let name = page
            .file_name()
            .context("a man page without a name")?
            .to_string_lossy();
        gzip(page, &man.join(format!("{name}.gz")))?;
    }
    let comp = assets.join("completions");
    install(
        &comp.join("warden.bash"),
        &stage.join("usr/share/bash-completion/completions/warden"),
        0o644,
    )?;
    install(
        &comp.join("_warden"),
        &stage.join("usr/share/zsh/vendor-completions/_warden"),
        0o644,
    )?;
    install(
        &comp.join("warden.fish"),
        &stage.join("usr/share/fish/vendor_completions.d/warden.fish"),
        0o644,
    )?;

    let pkg = root.join("packaging/debian");
    let doc = stage.join("usr/share/doc/warden");
    install(&pkg.join("copyright"), &doc.join("copyright"), 0o644)?;
    gzip(&pkg.join("changelog"), &doc.join("changelog.gz"))?;
    gzip(&root.join("README.md"), &doc.join("README.md.gz"))?;
    install(
        &pkg.join("lintian-overrides"),
        &stage.join("usr/share/lintian/overrides/warden"),
        0o644,
    )?;

    // Control area.
    let control_dir = stage.join("DEBIAN");
    dir(&control_dir, 0o755)?;
    for script in ["postinst", "prerm", "postrm"] {
        install(&pkg.join(script), &control_dir.join(script), 0o755)?;
    }
    write(
        &control_dir.join("conffiles"),
        b"/etc/warden/warden.toml\n",
        0o644,
    )?;
    let control = fs::read_to_string(pkg.join("control"))?
        .replace("@VERSION@", &version)
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&stage)?.to_string())
        .replace("@DEPENDS@", &shlib_depends(&bin)?);
    write(&control_dir.join("control"), control.as_bytes(), 0o644)?;
    write(
        &control_dir.join("md5sums"),
        md5sums(&stage)?.as_bytes(),
        0o644,
    )?;

    let deb = out.join(format!("warden_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    if opts.lintian {
        lintian(&deb)?;
    }
    println!("{}", deb.display());
    Ok(deb)
}

/// `warden --version` → `0.1.0`.
fn binary_version(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .trim()
        .strip_prefix("warden ")
        .with_context(|| format!("unexpected --version output {text:?}"))?;
    ensure!(
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)),
        "not a Debian version: {v:?}"
    );
    Ok(v.to_owned())
}

/// Runs lintian; any error or warning fails (informational tags and the
/// justified overrides of `packaging/debian/lintian-overrides` do not).
pub fn lintian(deb: &Path) -> Result<()> {
    run(Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-level", ">=info"])
        .arg(deb))
    .context("lintian found problems (fix them, or justify an override in packaging/debian/lintian-overrides)")
}

fn dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies `from` to `to` (parents 0755) with `mode`; returns `to`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<PathBuf> {
    if let Some(parent) = to.parent() {
        parents(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(to.to_owned())
}

fn write(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        parents(parent)?;
    }
    fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0755 (leaving existing
/// ones, e.g. a 0700 directory made on purpose, alone).
fn parents(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        parents(p)?;
    }
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `gzip -9n` (no name, no timestamp: reproducible, as lintian asks).
fn gzip(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        parents(parent)?;
    }
    let out = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(from)
        .output()
        .with_context(|| format!("gzip {}", from.display()))?;
    if !out.status.success() {
        bail!("gzip {} failed", from.display());
    }
    write(to, &out.stdout, 0o644)
}

/// `Depends:` of the binary's shared libraries, by dpkg-shlibdeps.
fn shlib_depends(bin: &Path) -> Result<String> {
    // dpkg-shlibdeps wants a source tree: a throwaway one.
    let tmp = std::env::temp_dir().join(format!("warden-shlibdeps-{}", std::process::id()));
    fs::create_dir_all(tmp.join("debian"))?;
    fs::write(
        tmp.join("debian/control"),
        "Source: warden\n\nPackage: warden\nArchitecture: amd64\n",
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(&tmp)
        .arg("-O")
        .arg(bin)
        .output()
        .context("running dpkg-shlibdeps (dpkg-dev)")?;
    let _ = fs::remove_dir_all(&tmp);
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .context("dpkg-shlibdeps printed no shlibs:Depends")
}

/// Sum of the file sizes in KiB (rounded up per file), as dpkg computes it.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    for f in files(stage)? {
        total += fs::symlink_metadata(&f)?.len().div_ceil(1024).max(1);
    }
    Ok(total)
}

/// `md5sums` of every file outside DEBIAN, paths relative to the root.
fn md5sums(stage: &Path) -> Result<String> {
    let rel: Vec<PathBuf> = files(stage)?
        .into_iter()
        .filter_map(|f| f.strip_prefix(stage).ok().map(Path::to_path_buf))
        .collect();
    let out = Command::new("md5sum")
        .current_dir(stage)
        .args(&rel)
        .output()
        .context("md5sum")?;
    ensure!(out.status.success(), "md5sum failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Regular files below `stage`, DEBIAN excluded, sorted.
fn files(stage: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![stage.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p == stage.join("DEBIAN") {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
