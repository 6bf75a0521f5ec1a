//! Command-line interface definition (clap). Behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/warden/warden.toml";

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Host-level enforcement agent: redirects enrolled workloads' connections to an auditing proxy"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, env = "WARDEN_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (attach the eBPF programs, serve the proxy).
    Run {
        /// On exit, detach the programs and remove the pins (default: keep
        /// them, so enrolled traffic stays refused while the agent is down).
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Validate the configuration and report every error with file:line;
    /// then open every file it names as the agent would (run it as the
    /// agent's user) and warn, at the line naming each, about those that
    /// are missing, unreadable or unsafe.
    CheckConfig,
    /// Show the running daemon's state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read and apply its configuration (like
    /// SIGHUP); on any problem nothing changes and every error is printed.
    Reload {
        /// The daemon's control socket (default: `[agent] control_socket`
        /// of the configuration, read even when the file is invalid).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Enroll a cgroup, systemd unit or uid as ACCOUNT, live and persisted.
    /// For a service unit, also installs a drop-in that orders the unit
    /// after Warden at boot (see `drop-in`).
    Enroll(EnrollArgs),
    /// Remove a live enrollment (and a unit's drop-in).
    Unenroll(EnrollArgs),
    /// Print the systemd drop-in that keeps UNIT from starting before Warden
    /// has attached (for units enrolled in the configuration file; install
    /// it as /etc/systemd/system/UNIT.d/50-warden.conf).
    DropIn {
        /// A service unit, e.g. orders-api.service.
        unit: String,
    },
    /// Stop the daemon if it runs, detach every program and remove all pins.
    Uninstall,
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Workload identity tools.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Just-in-time approvals of held statements (for approvers).
    Approvals(ApprovalsArgs),
    /// Statement allow-lists learned from traffic: what a grant in
    /// `mode = "learn"` has seen, and freezing it into an allow-list file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The local CA of intercept_tls HTTP targets.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Tell what is wrong on this host and how to fix it: kernel features,
    /// programs and pins, enrollments that match nothing, the files the
    /// configuration names, targets, forwarders, clock and disk. Exit 1 on
    /// any problem (warnings alone exit 0).
    Doctor {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Internal (packaging): write man pages and shell completions generated
    /// from this CLI's definitions into DIR.
    #[command(hide = true)]
    GenerateAssets {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `warden policy ...` (allow-lists, issue 19).
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The fingerprints a grant in `mode = "learn"` has recorded: id,
    /// count, first and last seen, the rule decision, normalised text and
    /// one masked example.
    Learned {
        /// The grant, as ACCOUNT/TARGET (e.g. orders-api/orders-pg).
        #[arg(long, value_name = "ACCOUNT/TARGET")]
        grant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a grant's learned fingerprints to an allow-list file (id,
    /// normalised text, example) for review; name it in the grant as
    /// `allowlist = FILE` with `mode = "enforce"`.
    Freeze {
        /// The grant, as ACCOUNT/TARGET.
        #[arg(long, value_name = "ACCOUNT/TARGET")]
        grant: String,
        /// The allow-list file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM) to install in workloads' trust stores.
    Cert,
}

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// The approvals socket (default: `[approvals] socket` of the
    /// configuration when readable, else /run/warden/approvals.sock).
    #[arg(long, env = "WARDEN_APPROVALS_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ApprovalsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests and live grants.
    List,
    /// One request, pending or recently decided.
    Show { id: String },
    /// Let a held statement through.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Also let the same statement (literals aside) of the same account
        /// on the same target through for this long, e.g. 30m, 2h, 90s.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Also add the request's fingerprint to its grant's allow-list file
        /// (a request held by a grant in mode = "enforce" with
        /// on_new = "approve"): the same shape passes from then on.
        #[arg(long)]
        learn: bool,
    },
    /// Refuse a held statement.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a grant before it expires.
    Revoke {
        grant_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the JWKS (public keys) that verify tokens Warden mints, for a
    /// collector to check the `attestation` of audit events.
    Jwks,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "selector")]
pub struct SelectorArgs {
    /// cgroup2 path relative to the cgroup2 mount, e.g. /system.slice/orders-api.service
    #[arg(long)]
    pub cgroup: Option<String>,
    /// systemd unit, e.g. orders-api.service (follows the unit across restarts)
    #[arg(long)]
    pub unit: Option<String>,
    /// Numeric uid.
    #[arg(long)]
    pub uid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    pub account: String,
    #[command(flatten)]
    pub selector: SelectorArgs,
    /// With --unit: leave the unit's boot-order drop-in alone.
    #[arg(long)]
    pub no_drop_in: bool,
    /// Where unit drop-ins are written.
    #[arg(long, value_name = "DIR", default_value = crate::bootorder::SYSTEMD_DIR)]
    pub systemd_dir: PathBuf,
}

/// Output of `warden audit tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailFormat {
    /// One human-readable line per event.
    Text,
    /// The stored OCSF 1.8 JSON, one event per line.
    Ocsf,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the latest events, and with -f keep following.
    Tail {
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this account's events.
        #[arg(long)]
        account: Option<String>,
        /// Only events with this decision (allowed, refused; for
        /// statements also blocked, denied, approval_required, rejected;
        /// n/a for checkpoints, configuration changes and prunes).
        #[arg(long)]
        decision: Option<String>,
        /// Only events at or after T: RFC 3339 (2026-11-23T00:00:00Z), a
        /// date (2026-11-23), relative (-90s, -30m, -24h, -7d, -2w) or now.
        /// Prints every such event unless -n is given.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        since: Option<String>,
        /// Only this session's events (the id as printed; shorter hex works).
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Only statement/API events of this fingerprint id (as `warden
        /// policy learned` and refusals print it); prints every such event.
        #[arg(long, value_name = "ID")]
        fingerprint: Option<String>,
        /// How many past events to show first (default 20; with --since, all).
        #[arg(short = 'n', long)]
        lines: Option<usize>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = TailFormat::Text)]
        format: TailFormat,
        /// Same as --format ocsf.
        #[arg(long)]
        json: bool,
    },
    /// Print one session as it happened: the connection (who), each
    /// statement (decision, rule, masked text, result: columns, sample rows,
    /// row count, duration, error) and the close. Exit 1 when the store has
    /// no event of the session.
    Replay {
        /// Session id: the 16 hex digits `tail` prints (0x-prefixed hex
        /// works too), or the decimal number.
        #[arg(value_name = "SESSION")]
        session: String,
        /// Print the replay as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain and check every signed checkpoint; exit 0
    /// only when the chain is intact.
    Verify {
        /// A checkpoint kept off-host earlier (`warden audit checkpoint`):
        /// also proves nothing it covers was removed or rewritten since.
        #[arg(long, value_name = "FILE")]
        from_checkpoint: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint (JSON), to keep off-host.
    Checkpoint {
        /// Write it to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write a signed evidence bundle of the events in [FROM, TO) into DIR
    /// (events, configuration changes, checkpoints, verification, summary,
    /// manifest). T: RFC 3339, a date, relative (-24h, -7d) or now.
    Export {
        /// Start of the range (inclusive).
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        from: String,
        /// End of the range (exclusive).
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        to: String,
        /// New or empty directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Check an evidence bundle offline (signature, every file's hash,
    /// contents, chain against its checkpoints); exit 0 only when valid.
    VerifyExport {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(args: &[&str]) -> AuditCommand {
        let mut all = vec!["warden", "audit"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Audit(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tail_takes_relative_times_and_both_format_spellings() {
        match audit(&["tail", "--since", "-24h", "--session", "4d2", "--json"]) {
            AuditCommand::Tail {
                since,
                session,
                json,
                format,
                lines,
                ..
            } => {
                assert_eq!(since.as_deref(), Some("-24h"));
                assert_eq!(session.as_deref(), Some("4d2"));
                assert!(json);
                assert_eq!(format, TailFormat::Text);
                assert_eq!(lines, None);
            }
            other => panic!("{other:?}"),
        }
        match audit(&[
            "tail",
            "--format",
            "ocsf",
            "-n",
            "5",
            "--decision",
            "refused",
        ]) {
            AuditCommand::Tail {
                format,
                lines,
                decision,
                json,
                ..
            } => {
                assert_eq!(format, TailFormat::Ocsf);
                assert_eq!(lines, Some(5));
                assert_eq!(decision.as_deref(), Some("refused"));
                assert!(!json);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["warden", "audit", "tail", "--format", "xml"]).is_err());
    }

    #[test]
    fn export_and_verify_export_arguments() {
        match audit(&["export", "--from", "-7d", "--to", "now", "--out", "/tmp/b"]) {
            AuditCommand::Export { from, to, out } => {
                assert_eq!((from.as_str(), to.as_str()), ("-7d", "now"));
                assert_eq!(out, PathBuf::from("/tmp/b"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["warden", "audit", "export", "--from", "now", "--out", "x"])
                .is_err(),
            "--to is required"
        );
        match audit(&["verify-export", "/tmp/b"]) {
            AuditCommand::VerifyExport { dir, json } => {
                assert_eq!(dir, PathBuf::from("/tmp/b"));
                assert!(!json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replay_takes_a_session_and_json() {
        match audit(&["replay", "00000000000004d2", "--json"]) {
            AuditCommand::Replay { session, json } => {
                assert_eq!(session, "00000000000004d2");
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["warden", "audit", "replay"]).is_err());
    }
}
