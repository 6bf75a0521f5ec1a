//! What each CLI command does; talks to the daemon over the control socket or
//! reads local state (config, audit store, pins).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::audit::parse_time;
use crate::audit::reader::{AuditReader, TailFilter, format_text};
use crate::audit::store::now_ms;
use crate::cli::{
    ApprovalsArgs, ApprovalsCommand, AuditCommand, CaCommand, Cli, Command, IdentityCommand,
    SelectorArgs, TailFormat,
};
use crate::config::Config;
use crate::control::{Request, Response, client};
use crate::identity::Selector;

/// `agent.worker_threads` not set: half the CPUs, at least one.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Events `warden audit tail` shows first without `-n` or `--since`.
const DEFAULT_TAIL_LINES: usize = 20;

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { detach_on_exit } => {
            init_tracing();
            // Loaded once: it sizes the runtime, then the daemon runs on it.
            let config = Config::load(&cli.config).map_err(crate::daemon::DaemonError::from)?;
            let workers = config.agent.worker_threads.unwrap_or_else(default_workers);
            tracing::debug!(runtime.workers = workers, "starting the async runtime");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .thread_name("warden")
                .build()
                .context("starting the async runtime")?;
            rt.block_on(crate::daemon::run(config, detach_on_exit))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => match Config::load(&cli.config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} targets, {} accounts, sha256 {})",
                    cfg.source.display(),
                    cfg.targets.len(),
                    cfg.accounts.len(),
                    cfg.sha256
                );
                // Valid, but weaker than it looks on this host: said, not refused.
                for w in crate::config::warnings::host_warnings(&cfg) {
                    eprintln!("warning: {w}");
                }
                // The files it names, opened as the agent will: host state
                // (a secret may be provisioned after the file is written),
                // so said at the line naming each, not refused.
                for d in cfg.check_files()? {
                    eprintln!("warning: {}:{d}", cfg.source.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Status { json } => {
            // Reachable while the file is being edited (and invalid).
            let resp = client::call(&control_socket_of(&cli.config), &Request::Status)?;
            let Response::Status(st) = resp else {
                bail!("unexpected answer from the daemon");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { socket } => {
            let socket = socket.unwrap_or_else(|| control_socket_of(&cli.config));
            done(client::call(&socket, &Request::Reload)?)
        }
        Command::Enroll(args) => {
            let cfg = Config::load(&cli.config)?;
            let unit = drop_in_unit(&args);
            let req = Request::Enroll {
                account: args.account,
                selector: selector(args.selector)?,
            };
            let code = done(client::call(&cfg.agent.control_socket, &req)?)?;
            if let Some(unit) = unit {
                let exe = std::env::current_exe().context("the path of this warden binary")?;
                let config = std::path::absolute(&cli.config)
                    .with_context(|| format!("the path of {}", cli.config.display()))?;
                let path = crate::bootorder::install(&args.systemd_dir, &unit, &exe, &config)?;
                println!(
                    "{unit} starts only after Warden at boot: {}",
                    path.display()
                );
                systemd_reload();
            }
            Ok(code)
        }
        Command::Unenroll(args) => {
            let cfg = Config::load(&cli.config)?;
            let unit = drop_in_unit(&args);
            let req = Request::Unenroll {
                account: args.account,
                selector: selector(args.selector)?,
            };
            let code = done(client::call(&cfg.agent.control_socket, &req)?)?;
            if let Some(unit) = unit
                && crate::bootorder::remove(&args.systemd_dir, &unit)?
            {
                println!("removed {unit}'s boot-order drop-in");
                systemd_reload();
            }
            Ok(code)
        }
        Command::DropIn { unit } => {
            let exe = std::env::current_exe().context("the path of this warden binary")?;
            let config = std::path::absolute(&cli.config)
                .with_context(|| format!("the path of {}", cli.config.display()))?;
            print!("{}", crate::bootorder::drop_in(&unit, &exe, &config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals(args) => approvals(&cli.config, args),
        Command::Policy(cmd) => crate::policy::allowlist::commands::run(&cli.config, cmd),
        Command::Doctor { json } => {
            let report = crate::doctor::run(&cli.config);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::GenerateAssets { out } => {
            for path in crate::assets::generate(&out)? {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall => {
            let cfg = Config::load(&cli.config)?;
            let sock = &cfg.agent.control_socket;
            if sock.exists()
                && let Ok(resp) = client::call(sock, &Request::Shutdown { detach: true })
            {
                if let Response::Done { message } = resp {
                    println!("daemon: {message}");
                }
                // Wait for it to go away (it removes its socket last).
                for _ in 0..200 {
                    if !sock.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let report = crate::ebpf::uninstall(&cfg.agent.bpf_pin_dir)?;
            println!(
                "uninstalled: {} links released, {} map pins removed under {}",
                report.links_released,
                report.pins_removed,
                cfg.agent.bpf_pin_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Tail {
            follow,
            account,
            decision,
            since,
            session,
            fingerprint,
            lines,
            format,
            json,
        }) => {
            let cfg = Config::load(&cli.config)?;
            let reader = AuditReader::open(&cfg.audit_path())?;
            let since_ms = since
                .as_deref()
                .map(|t| parse_time(t, now_ms()))
                .transpose()?;
            let filter = TailFilter {
                account,
                decision,
                session,
                since_ms,
            };
            let ocsf = json || format == TailFormat::Ocsf;
            let mut after = match (lines, since_ms) {
                // A fingerprint is not an indexed column: every event is read.
                _ if fingerprint.is_some() => 0,
                (Some(n), _) => reader.tail_start(&filter, n)?,
                (None, Some(_)) => 0,
                (None, None) => reader.tail_start(&filter, DEFAULT_TAIL_LINES)?,
            };
            let wanted = fingerprint.map(|id| format!("\"fingerprint\":\"{id}\""));
            loop {
                let events = reader.query(&filter, after, 1000)?;
                for ev in &events {
                    after = ev.seq;
                    if let Some(w) = &wanted
                        && !String::from_utf8_lossy(&ev.data).contains(w.as_str())
                    {
                        continue;
                    }
                    if ocsf {
                        println!("{}", String::from_utf8_lossy(&ev.data));
                    } else {
                        println!("{}", format_text(ev));
                    }
                    after = ev.seq;
                }
                if !follow && events.len() < 1000 {
                    break;
                }
                if events.is_empty() {
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Replay { session, json }) => {
            let cfg = Config::load(&cli.config)?;
            let id = crate::audit::replay::parse_session(&session)?;
            let path = cfg.audit_path();
            let bar = crate::progress::Bar::new("reading", json);
            let loaded =
                crate::audit::replay::load_with_progress(&path, id, &|n, t| bar.update(n, t));
            bar.finish();
            match loaded? {
                Some(replay) if json => {
                    println!("{}", serde_json::to_string_pretty(&replay)?);
                    Ok(ExitCode::SUCCESS)
                }
                Some(replay) => {
                    print!("{replay}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!(
                        "no audit events for session {id} ({}) in {}",
                        id.0,
                        path.display()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Audit(AuditCommand::Export { from, to, out }) => {
            let cfg = Config::load(&cli.config)?;
            let now = now_ms();
            let from = parse_time(&from, now)?;
            let to = parse_time(&to, now)?;
            let bar = crate::progress::Bar::new("verifying", false);
            let report = crate::audit::export_with_progress(
                &cfg.audit_path(),
                from,
                to,
                &out,
                &|n, t| bar.update(n, t),
                &|n, t| {
                    if n == 0 {
                        bar.phase("exporting");
                    }
                    bar.update(n, t);
                },
            );
            bar.finish();
            let report = report?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::VerifyExport { dir, json }) => {
            match crate::audit::verify_export(&dir) {
                Ok(v) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        println!("{v}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::audit::AuditError::Bundle { dir, file, detail }) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": false, "file": file, "detail": detail})
                        );
                    }
                    eprintln!(
                        "INVALID: evidence bundle {}: {file}: {detail}",
                        dir.display()
                    );
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Audit(AuditCommand::Verify {
            from_checkpoint,
            json,
        }) => {
            let cfg = Config::load(&cli.config)?;
            let anchor = from_checkpoint
                .as_deref()
                .map(crate::audit::Checkpoint::from_json_file)
                .transpose()?;
            let bar = crate::progress::Bar::new("verifying", json);
            let report =
                crate::audit::verify_with_progress(&cfg.audit_path(), anchor.as_ref(), &|n, t| {
                    bar.update(n, t)
                });
            bar.finish();
            let report = report?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(if report.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Identity(IdentityCommand::Jwks) => {
            let cfg = Config::load(&cli.config)?;
            let jwks = crate::identity::sources::mint_jwks(&cfg, &crate::daemon::host_name())?;
            println!("{}", serde_json::to_string_pretty(&jwks)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Cert) => {
            let cfg = Config::load(&cli.config)?;
            let pem = crate::proxy::http::ca::LocalCa::read_cert_pem(&cfg.agent.state_dir)?;
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Checkpoint { out }) => {
            let cfg = Config::load(&cli.config)?;
            let Some(cp) = crate::audit::latest_checkpoint(&cfg.audit_path())? else {
                bail!(
                    "no checkpoint has been signed yet in {}",
                    cfg.audit_path().display()
                );
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, cp.to_json())
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "checkpoint at seq {} written to {}",
                        cp.size(),
                        path.display()
                    );
                }
                None => println!("{}", cp.to_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The service unit of `warden enroll/unenroll --unit` whose boot-order
/// drop-in is managed (not scopes, not with --no-drop-in).
fn drop_in_unit(args: &crate::cli::EnrollArgs) -> Option<String> {
    let unit = args.selector.unit.as_ref()?;
    (!args.no_drop_in && unit.ends_with(".service")).then(|| unit.clone())
}

/// `systemctl daemon-reload`, so a changed drop-in applies; said, not
/// fatal, when systemd is not running (the file applies at its next start).
fn systemd_reload() {
    match std::process::Command::new("systemctl")
        .arg("daemon-reload")
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "note: systemctl daemon-reload failed ({}); run it to apply the drop-in",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("note: could not run systemctl daemon-reload ({e})"),
    }
}

fn selector(s: SelectorArgs) -> anyhow::Result<Selector> {
    match (s.cgroup, s.unit, s.uid) {
        (Some(c), None, None) => Ok(Selector::Cgroup(c)),
        (None, Some(u), None) => Ok(Selector::Unit(u)),
        (None, None, Some(u)) => Ok(Selector::Uid(u)),
        _ => bail!("give exactly one of --cgroup, --unit or --uid"),
    }
}

/// The control socket the configuration names, read leniently: `warden
/// reload` must reach the daemon even when the edited file is invalid (the
/// daemon then answers with, and records, every problem).
fn control_socket_of(path: &std::path::Path) -> std::path::PathBuf {
    if let Ok(cfg) = Config::load(path) {
        return cfg.agent.control_socket;
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("agent")?
                .get("control_socket")?
                .as_str()
                .map(std::path::PathBuf::from)
        })
        .unwrap_or_else(crate::config::model::defaults::control_socket)
}

fn done(resp: Response) -> anyhow::Result<ExitCode> {
    if let Response::Done { message } = resp {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(st: &crate::control::StatusReport) {
    println!("warden {} (pid {})", st.version, st.pid);
    println!(
        "  config:   {} (sha256 {})",
        st.config.display(),
        &st.config_sha256
    );
    println!(
        "            {} {} ({} reloads since start)",
        if st.config_action == "reload" {
            "reloaded"
        } else {
            "loaded"
        },
        crate::audit::reader::format_time(st.config_loaded_ms),
        st.config_reloads
    );
    if let Some(f) = &st.last_reload_failure {
        println!(
            "            last reload refused {} (sha256 {}):",
            crate::audit::reader::format_time(f.time_ms),
            if f.sha256.is_empty() { "-" } else { &f.sha256 }
        );
        for e in &f.errors {
            println!("              {e}");
        }
    }
    let listen: Vec<String> = st.listen.iter().map(ToString::to_string).collect();
    println!("  proxy:    {}", listen.join(", "));
    println!(
        "  attached: {} at {}",
        st.programs.len(),
        st.attach_cgroup.display()
    );
    for p in &st.programs {
        println!(
            "            {} prog_id={} link_id={}",
            p.program, p.program_id, p.link_id
        );
    }
    println!("  pins:     {}", st.pin_dir.display());
    println!(
        "  bpf lsm:  {}",
        match st.bpf_lsm {
            Some(true) if st.lsm_attached => "active, Warden's LSM programs attached",
            Some(true) =>
                "active in the kernel, but Warden's LSM programs are NOT attached: a root workload in an enrolled cgroup can bypass Warden (detach its programs, leave its cgroup, set the agent's mark)",
            Some(false) =>
                "NOT ACTIVE: a root workload in an enrolled cgroup can bypass Warden (detach its programs, leave its cgroup, set the agent's mark)",
            None =>
                "unknown (no /sys/kernel/security/lsm): a root workload in an enrolled cgroup may bypass Warden",
        }
    );
    if let Some(e) = &st.lsm_error {
        println!("            {e}");
    }
    println!(
        "  tcp relay: {}",
        match (st.tcp_relay.as_str(), &st.tcp_relay_error) {
            ("sockmap", _) => format!(
                "sockmap (in the kernel; {} connections relayed there both ways)",
                st.connections_kernel_relayed
            ),
            (_, Some(e)) => format!("splice (not in the kernel: {e})"),
            (other, None) => other.to_owned(),
        }
    );
    println!("  fail mode: {}", st.fail_mode);
    println!(
        "  audit:    {} ({})",
        st.audit_path.display(),
        if st.audit_healthy {
            "healthy"
        } else {
            "FAILING"
        }
    );
    println!("  targets:");
    for t in &st.targets {
        println!(
            "    {} {} {} fail_mode={} accounts=[{}]",
            t.name,
            t.protocol,
            t.address,
            t.fail_mode,
            t.accounts.join(", ")
        );
    }
    if !st.forwarders.is_empty() {
        println!("  forwarding:");
    }
    for f in &st.forwarders {
        println!(
            "    {} {} {} -> {}: {} acked_seq={} backlog={}{}",
            f.name,
            f.kind,
            f.format,
            f.destination,
            f.state,
            f.acked_seq,
            f.backlog,
            if f.backlog_over_warn {
                format!(" (over backlog_warn {})", f.backlog_warn)
            } else {
                String::new()
            }
        );
        if let Some(e) = &f.last_error {
            println!("      last error: {e}");
        }
    }
    println!("  enrollments:");
    for e in &st.enrollments {
        let id = e.cgroup_id.map(|i| format!(" id={i}")).unwrap_or_default();
        let path = e
            .cgroup_path
            .as_ref()
            .map(|p| format!(" -> {p}"))
            .unwrap_or_default();
        println!(
            "    {} {}{}{} ({:?})",
            e.account, e.selector, path, id, e.source
        );
    }
    println!(
        "  connections: {} open, {} relayed, {} closed, {} refused",
        st.open_connections.len(),
        st.connections_relayed,
        st.connections_closed,
        st.connections_refused
    );
    for c in &st.open_connections {
        println!(
            "    {} {} -> {} ({}) pid={} client={}",
            c.session, c.conn.account, c.conn.target, c.conn.orig_dst, c.conn.pid, c.conn.client
        );
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run(args: &[&str]) -> ExitCode {
        dispatch(Cli::try_parse_from(args).unwrap()).unwrap()
    }

    /// The audit commands against a real store, end to end through clap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_then_verify_export_and_tail_through_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        crate::audit::testutil::build_store(&state.join("audit.db"), 5, 12).await;
        let cfg = dir.path().join("warden.toml");
        std::fs::write(
            &cfg,
            format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
        )
        .unwrap();
        let cfg = cfg.to_str().unwrap().to_owned();
        let out = dir.path().join("bundle");
        let out_s = out.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            let base = ["warden", "--config", cfg.as_str(), "audit"];
            let with = |rest: &[&str]| {
                let mut v = base.to_vec();
                v.extend_from_slice(rest);
                run(&v)
            };
            // The test events are stamped 2026-11-29T13:05:02.124Z onwards.
            let export = [
                "export",
                "--from",
                "2026-11-29",
                "--to",
                "2026-11-30T00:00:00Z",
                "--out",
                out_s.as_str(),
            ];
            assert_eq!(with(&export), ExitCode::SUCCESS);
            assert_eq!(with(&["verify-export", out_s.as_str()]), ExitCode::SUCCESS);
            // Exporting into the same directory again is refused.
            assert!(dispatch(Cli::try_parse_from(base.iter().chain(&export)).unwrap()).is_err());
            let events = out.join("events.jsonl");
            let mut b = std::fs::read(&events).unwrap();
            b[10] ^= 1;
            std::fs::write(&events, b).unwrap();
            assert_eq!(with(&["verify-export", out_s.as_str()]), ExitCode::FAILURE);
            assert_eq!(
                with(&["verify-export", "--json", out_s.as_str()]),
                ExitCode::FAILURE
            );
            for tail in [
                &["tail", "--since", "2026-11-29T13:05:02.130Z"][..],
                &["tail", "--since", "-7d", "--format", "ocsf"],
                &["tail", "--session", "3", "--json"],
                &["tail", "-n", "2", "--decision", "allowed"],
            ] {
                assert_eq!(with(tail), ExitCode::SUCCESS, "{tail:?}");
            }
            assert!(
                dispatch(
                    Cli::try_parse_from(base.iter().chain(&["tail", "--since", "soon"])).unwrap()
                )
                .is_err()
            );
        })
        .await
        .unwrap();
    }

    /// `ca cert`: an error naming the cause before the CA exists, the PEM
    /// after.
    #[test]
    fn ca_cert_through_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = dir.path().join("warden.toml");
        std::fs::write(
            &cfg,
            format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
        )
        .unwrap();
        let args = ["warden", "--config", cfg.to_str().unwrap(), "ca", "cert"];
        let e = dispatch(Cli::try_parse_from(args).unwrap()).unwrap_err();
        assert!(e.to_string().contains("intercept_tls"), "{e}");
        assert!(!state.join("ca.key").exists(), "reading never creates");
        crate::proxy::http::ca::LocalCa::load_or_create(&state).unwrap();
        assert_eq!(run(&args), ExitCode::SUCCESS);
        // The certificate is readable without the key.
        std::fs::remove_file(state.join("ca.key")).unwrap();
        assert_eq!(run(&args), ExitCode::SUCCESS);
    }

    /// `audit replay` against a real store, through clap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_through_the_cli() {
        use crate::audit::event::{
            ConnActivity, Decision, SessionId, StatementDecision, StatementPhase,
        };
        use crate::audit::ocsf::tests::{sample, sample_statement};
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (h, task) =
            crate::audit::spawn_writer(&state.join("audit.db"), crate::audit::testutil::opts(0))
                .unwrap();
        h.record(sample(ConnActivity::Open, Decision::Allowed))
            .await
            .unwrap();
        for (phase, decision, n) in [
            (StatementPhase::Request, StatementDecision::Allowed, 1),
            (StatementPhase::Result, StatementDecision::Allowed, 1),
            (StatementPhase::Request, StatementDecision::Blocked, 2),
        ] {
            h.record(sample_statement(phase, decision, n))
                .await
                .unwrap();
        }
        let mut other = sample(ConnActivity::Open, Decision::Allowed);
        other.session = SessionId(0x99);
        h.record(other).await.unwrap();
        h.shutdown().await;
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
        let cfg = dir.path().join("warden.toml");
        std::fs::write(
            &cfg,
            format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
        )
        .unwrap();
        let cfg = cfg.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            let base = ["warden", "--config", cfg.as_str(), "audit", "replay"];
            let with = |rest: &[&str]| {
                let mut v = base.to_vec();
                v.extend_from_slice(rest);
                dispatch(Cli::try_parse_from(v).unwrap())
            };
            for ok in [
                &["00000000000004d2"][..],
                &["0x4d2", "--json"],
                &["1234"],
                &["0000000000000099"],
                &["153"],
            ] {
                assert_eq!(with(ok).unwrap(), ExitCode::SUCCESS, "{ok:?}");
            }
            // No events: exit 1; not a session id: an error.
            assert_eq!(with(&["5"]).unwrap(), ExitCode::FAILURE);
            assert_eq!(with(&["00000000000004d3"]).unwrap(), ExitCode::FAILURE);
            assert!(with(&["not-a-session"]).is_err());
            // Tail shows the statements readably.
            let tail = ["warden", "--config", cfg.as_str(), "audit", "tail"];
            for args in [
                &["--decision", "blocked"][..],
                &["--session", "4d2", "--format", "ocsf"],
                &["--account", "orders-api"],
            ] {
                let mut v = tail.to_vec();
                v.extend_from_slice(args);
                assert_eq!(run(&v), ExitCode::SUCCESS, "{args:?}");
            }
        })
        .await
        .unwrap();
    }
}

/// `warden approvals ...`: through the approvals socket, as the caller's uid.
fn approvals(config: &std::path::Path, args: ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let socket = match args.socket {
        Some(s) => s,
        None => Config::load(config)
            .map(|c| c.approvals.socket_path(&c.agent.control_socket))
            .unwrap_or_else(|_| crate::config::approvals::defaults::socket()),
    };
    let req = match args.command {
        ApprovalsCommand::List => Request::ApprovalsList,
        ApprovalsCommand::Show { id } => Request::ApprovalsShow { id },
        ApprovalsCommand::Approve {
            id,
            reason,
            duration,
            learn,
        } => Request::ApprovalsDecide {
            id,
            decision: crate::approval::Decision {
                approve: true,
                reason,
                grant_secs: duration.as_deref().map(parse_duration).transpose()?,
            },
            learn,
        },
        ApprovalsCommand::Deny { id, reason } => Request::ApprovalsDecide {
            id,
            decision: crate::approval::Decision {
                approve: false,
                reason,
                grant_secs: None,
            },
            learn: false,
        },
        ApprovalsCommand::Revoke { grant_id, reason } => {
            Request::ApprovalsRevoke { grant_id, reason }
        }
    };
    let resp = client::call(&socket, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(ExitCode::SUCCESS);
    }
    match resp {
        Response::Approvals(l) => {
            println!("pending requests: {}", l.pending.len());
            for r in &l.pending {
                println!(
                    "  {} {}@{} risk={} rule={} pid={} uid={} expires={} statement={:?}",
                    r.id,
                    r.account,
                    r.target,
                    r.risk,
                    r.rule.as_deref().unwrap_or("-"),
                    r.process.pid.map_or("-".into(), |p| p.to_string()),
                    r.process.uid.map_or("-".into(), |u| u.to_string()),
                    crate::audit::reader::format_time(r.expires_ms),
                    r.statement
                );
            }
            println!("grants: {}", l.grants.len());
            for g in &l.grants {
                println!(
                    "  {} {}@{} until={} uses={} by uid {} (request {}) statement={:?}",
                    g.id,
                    g.account,
                    g.target,
                    crate::audit::reader::format_time(g.until_ms),
                    g.uses,
                    g.approver.uid,
                    g.request_id,
                    g.statement
                );
            }
        }
        Response::Approval(r) => println!("{}", serde_json::to_string_pretty(&r)?),
        other => return done(other),
    }
    Ok(ExitCode::SUCCESS)
}

/// `30m`, `2h`, `90s`, `1d` or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?} (e.g. 30m, 2h, 90s)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("invalid duration {s:?}: unit must be s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .with_context(|| format!("invalid duration {s:?}"))
}

#[cfg(test)]
mod approval_cli_tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
