//! `warden policy learned` and `warden policy freeze`: read a grant's
//! learned file under the agent's state directory (written by the daemon,
//! see [`super::learned`]) and print it or write it as an allow-list file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::file::{AllowlistFile, Entry};
use super::learned::{LearnedFile, learned_path};
use crate::cli::PolicyCommand;
use crate::config::Config;

/// `ACCOUNT/TARGET` → (account, target), checked against the
/// configuration's grants.
fn grant_of<'a>(cfg: &Config, grant: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let Some((account, target)) = grant.split_once('/') else {
        bail!("--grant takes ACCOUNT/TARGET, e.g. orders-api/orders-pg (got {grant:?})");
    };
    if !cfg
        .grants
        .iter()
        .any(|g| g.account == account && g.target == target)
    {
        bail!(
            "no [[grant]] of account {account:?} on target {target:?} in {}",
            cfg.source.display()
        );
    }
    Ok((account, target))
}

fn learned(cfg: &Config, grant: &str) -> anyhow::Result<LearnedFile> {
    let (account, target) = grant_of(cfg, grant)?;
    let path = learned_path(&cfg.agent.state_dir, account, target);
    LearnedFile::read(&path, grant).with_context(|| format!("reading {}", path.display()))
}

fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

pub fn run(config: &Path, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    match cmd {
        PolicyCommand::Learned { grant, json } => {
            let f = learned(&cfg, &grant)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows: Vec<_> = f.fingerprints.values().collect();
            rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
            println!(
                "{} fingerprints learned for {grant}{}",
                rows.len(),
                if f.dropped > 0 {
                    format!(" ({} requests of further shapes not kept)", f.dropped)
                } else {
                    String::new()
                }
            );
            for l in rows {
                println!(
                    "{}  {:>8}  {}  {}  {:<9} {}\n    e.g. {}",
                    l.id,
                    l.count,
                    time(l.first_seen_ms),
                    time(l.last_seen_ms),
                    l.decision,
                    l.text,
                    l.example
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Freeze { grant, out } => {
            let f = learned(&cfg, &grant)?;
            let mut list = AllowlistFile::default();
            for l in f.fingerprints.values() {
                list.entries.insert(
                    l.id.clone(),
                    Entry {
                        id: l.id.clone(),
                        protocol: l.protocol.clone(),
                        text: l.text.clone(),
                        example: Some(l.example.clone()),
                    },
                );
            }
            let header = format!(
                "Allow-list of grant {grant}, frozen from {} learned fingerprints at {}.\n\
                 Review it: remove a [[fingerprint]] to refuse that shape; add one by pasting\n\
                 its normalised text (protocol + text; the id is computed).\n\
                 Use it with mode = \"enforce\" and allowlist = \"{}\" in the grant.",
                list.entries.len(),
                time(crate::audit::store::now_ms()),
                out.display()
            );
            list.write(&out, &header)?;
            println!(
                "{}: {} fingerprints of {grant}",
                out.display(),
                list.entries.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
