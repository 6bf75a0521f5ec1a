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
    /// Validate the configuration and report every error with file:line.
    CheckConfig,
    /// Show the running daemon's state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Enroll a cgroup or uid as ACCOUNT, live and persisted.
    Enroll(EnrollArgs),
    /// Remove a live enrollment.
    Unenroll(EnrollArgs),
    /// Stop the daemon if it runs, detach every program and remove all pins.
    Uninstall,
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Workload identity tools.
    #[command(subcommand)]
    Identity(IdentityCommand),
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
        /// Only events with this decision (allowed, refused).
        #[arg(long)]
        decision: Option<String>,
        /// How many past events to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Print the stored OCSF JSON, one event per line.
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
}
