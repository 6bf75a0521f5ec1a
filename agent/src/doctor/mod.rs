//! `warden doctor [--json]`: one command that tells an operator what is
//! wrong with this host's Warden and how to fix it. It reads (never
//! changes) the configuration, the kernel's features, the pins, the
//! running agent's status, every file the configuration names, the
//! targets (a TCP connect each), the forwarders, the clock and the disk.
//!
//! Each check yields a [`Finding`]: `ok`, a `warning` (Warden works but is
//! weaker than it could be, e.g. no BPF LSM) or a `problem` (something is
//! broken or will break), the latter two with the fix in one sentence. The
//! exit status is non-zero when there is any problem.

mod checks;
mod files;

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::control::{Request, Response, StatusReport, client};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    /// Works, but weaker or closer to trouble than it should be.
    Warning,
    /// Broken, or will break: `warden doctor` exits non-zero.
    Problem,
}

/// What part of the host a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Config,
    Kernel,
    Agent,
    Pins,
    Enrollment,
    Files,
    Targets,
    Forwarders,
    Clock,
    Disk,
}

impl Area {
    fn as_str(self) -> &'static str {
        match self {
            Area::Config => "config",
            Area::Kernel => "kernel",
            Area::Agent => "agent",
            Area::Pins => "pins",
            Area::Enrollment => "enrollment",
            Area::Files => "files",
            Area::Targets => "targets",
            Area::Forwarders => "forwarders",
            Area::Clock => "clock",
            Area::Disk => "disk",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub area: Area,
    /// What was checked (`BTF`, `/etc/warden/secrets/pg`, `target orders-db`).
    pub check: String,
    pub severity: Severity,
    /// What was found.
    pub detail: String,
    /// For warnings and problems: what to do, in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(area: Area, check: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            area,
            check: check.into(),
            severity: Severity::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn problem(
        area: Area,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            area,
            check: check.into(),
            severity: Severity::Problem,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn warning(
        area: Area,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::problem(area, check, detail, fix)
        }
    }
}

/// Everything `warden doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No problem (warnings allowed).
    pub ok: bool,
    pub problems: usize,
    pub warnings: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(findings: Vec<Finding>) -> Self {
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        let (problems, warnings) = (count(Severity::Problem), count(Severity::Warning));
        Report {
            ok: problems == 0,
            problems,
            warnings,
            findings,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            let tag = match x.severity {
                Severity::Ok => "ok     ",
                Severity::Warning => "WARN   ",
                Severity::Problem => "PROBLEM",
            };
            writeln!(f, "{tag} {:<11} {}: {}", x.area.as_str(), x.check, x.detail)?;
            if let Some(fix) = &x.fix {
                writeln!(f, "        {:<11} fix: {fix}", "")?;
            }
        }
        write!(
            f,
            "{} problem{}, {} warning{}",
            self.problems,
            if self.problems == 1 { "" } else { "s" },
            self.warnings,
            if self.warnings == 1 { "" } else { "s" }
        )
    }
}

/// Runs every check against the configuration at `config_path`.
pub fn run(config_path: &Path) -> Report {
    let mut out = Vec::new();
    let cfg = match Config::load(config_path) {
        Ok(cfg) => {
            out.push(Finding::ok(
                Area::Config,
                config_path.display().to_string(),
                format!(
                    "valid ({} targets, {} accounts)",
                    cfg.targets.len(),
                    cfg.accounts.len()
                ),
            ));
            Some(cfg)
        }
        Err(e) => {
            out.push(Finding::problem(
                Area::Config,
                config_path.display().to_string(),
                e.to_string().replace('\n', "; "),
                format!(
                    "correct what `warden --config {} check-config` reports, then `warden reload`",
                    config_path.display()
                ),
            ));
            None
        }
    };
    out.extend(checks::kernel(cfg.as_ref()));
    let Some(cfg) = cfg else {
        return Report::new(out);
    };
    let status = agent_status(&cfg, &mut out);
    out.extend(checks::pins(&cfg, status.as_ref()));
    out.extend(checks::enrollments(&cfg, status.as_ref()));
    let agent_uid = status
        .as_ref()
        .and_then(|s| checks::process_uid(s.pid))
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    out.extend(files::check(&cfg, agent_uid));
    out.extend(checks::targets(&cfg));
    out.extend(checks::forwarders(&cfg, status.as_ref()));
    out.extend(checks::clock(&cfg));
    out.extend(checks::disk(&cfg));
    Report::new(out)
}

/// The running agent's status, with a finding either way.
fn agent_status(cfg: &Config, out: &mut Vec<Finding>) -> Option<StatusReport> {
    let sock = &cfg.agent.control_socket;
    match client::call(sock, &Request::Status) {
        Ok(Response::Status(st)) => {
            out.push(Finding::ok(
                Area::Agent,
                "running",
                format!(
                    "warden {} pid {} answers on {}",
                    st.version,
                    st.pid,
                    sock.display()
                ),
            ));
            if !st.audit_healthy {
                out.push(Finding::problem(
                    Area::Agent,
                    "audit store",
                    format!("{} is not healthy: connections are refused", st.audit_path.display()),
                    "look at the agent's log (journalctl -u warden) for the store's error, usually a full disk or a failed fsync",
                ));
            }
            Some(*st)
        }
        Ok(_) => {
            out.push(Finding::problem(
                Area::Agent,
                "running",
                format!("{} answered something other than a status", sock.display()),
                "check that control_socket names this agent's socket and no other program's",
            ));
            None
        }
        Err(crate::control::ControlError::Connect { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            out.push(Finding::problem(
                Area::Agent,
                "running",
                format!("{} is root's only: {source}", sock.display()),
                "run `warden doctor` as root, which it needs for the agent's status and the pins anyway",
            ));
            None
        }
        Err(e) => {
            out.push(Finding::problem(
                Area::Agent,
                "running",
                format!("not answering: {e}"),
                "start it: `systemctl start warden` (or `warden run` under your supervisor where systemd does not run)",
            ));
            None
        }
    }
}
