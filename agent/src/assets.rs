//! Man pages and shell completions generated from the clap definitions in
//! [`crate::cli`], so that they never drift from the CLI: the hidden
//! `warden generate-assets --out DIR` writes them, and `cargo xtask
//! package` runs it on the binary it packages.
//!
//! Layout under `DIR`: `man/warden.1`, `man/warden-SUBCOMMAND….1` (one per
//! visible subcommand), `completions/warden.bash`, `completions/_warden`
//! (zsh), `completions/warden.fish`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the man pages and completions into `out` (created if needed);
/// returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AssetsError::Write { path, source }
    };
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    clap_mangen::generate_to(crate::cli::Cli::command(), &man).map_err(io(&man))?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        // clap_complete offers hidden subcommands too: leave them out.
        let mut cmd = visible(crate::cli::Cli::command());
        let path = clap_complete::generate_to(shell, &mut cmd, "warden", &completions)
            .map_err(io(&completions))?;
        written.push(path);
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(io(&man))?
        .flatten()
        .map(|e| e.path())
        .collect();
    pages.sort();
    written.extend(pages);
    Ok(written)
}

/// `cmd` without its hidden subcommands (at any depth): the same name,
/// texts, arguments and visible subcommands.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned()
                .map(visible),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_the_cli_but_not_hidden_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "warden.1",
            "warden-doctor.1",
            "warden-audit-verify.1",
            "warden.bash",
            "_warden",
            "warden.fish",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("generate-assets")),
            "{names:?}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/warden.bash")).unwrap();
        assert!(bash.contains("check-config") && !bash.contains("generate-assets"));
        let zsh = std::fs::read_to_string(dir.path().join("completions/_warden")).unwrap();
        assert!(zsh.contains("from-checkpoint") && !zsh.contains("generate-assets"));
    }
}
