//! `warden run`: wires the subsystems together for the life of the daemon —
//! config, agent cgroup, audit writer, enrollments, datapath, listeners,
//! control socket, heartbeat — and tears them down in order on shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::audit::event::ConfigAction;
use crate::audit::store::SyncMode;
use crate::config::{AgentCgroup, CgroupRoot, Config, Synchronous};
use crate::control;
use crate::ebpf::{self, Datapath, DatapathOptions, cgroup, keys};
use crate::identity::{Enrolled, Enrollments};
use crate::proxy;
use crate::reload::{Live, Reloader};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Datapath(#[from] ebpf::DatapathError),
    #[error(transparent)]
    Enroll(#[from] crate::identity::EnrollError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("identity source: {0}")]
    Identity(#[from] crate::identity::token::TokenError),
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    #[error(transparent)]
    Reload(#[from] crate::reload::ReloadError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::MetricsError),
    #[error("restoring approvals: {0}")]
    Approvals(#[from] crate::approval::ApprovalError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long forwarders may keep sending at shutdown.
const FORWARD_GRACE: Duration = Duration::from_secs(3);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the agent puts itself: its systemd unit's cgroup when started by
/// systemd, otherwise a dedicated cgroup.
fn agent_cgroup_path(cfg: &AgentCgroup) -> String {
    match cfg {
        AgentCgroup::Path(p) => p.clone(),
        AgentCgroup::Auto => {
            let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
            let current = cgroup::process_cgroup_path(std::process::id()).ok();
            match current {
                Some(c) if under_systemd && c != "/" => c,
                _ => "/warden.agent".to_owned(),
            }
        }
    }
}

/// Runs the agent on a configuration already loaded and validated (the
/// caller sized the runtime from it; it is loaded once).
pub async fn run(config: Config, detach_on_exit: bool) -> Result<(), DaemonError> {
    let mount = cgroup::cgroup2_mount()?;

    let agent_cg = agent_cgroup_path(&config.agent.agent_cgroup);
    let agent_dir = cgroup::cgroup_dir(&mount, &agent_cg);
    if !nix::unistd::geteuid().is_root() {
        return Err(ebpf::DatapathError::NotRoot.into());
    }
    let current = cgroup::process_cgroup_path(std::process::id()).ok();
    if current.as_deref() != Some(agent_cg.as_str()) {
        cgroup::move_self_into(&agent_dir)?;
    }
    let agent_cgroup_id = cgroup::cgroup_id(&agent_dir).map_err(|source| DaemonError::Io {
        what: format!("reading cgroup id of {}", agent_dir.display()),
        source,
    })?;

    create_private_dir(&config.agent.state_dir)?;
    let sync = match config.audit.synchronous {
        Synchronous::Strict => SyncMode::Full,
        Synchronous::Pipelined => SyncMode::Pipelined,
        Synchronous::Relaxed => SyncMode::Relaxed,
        Synchronous::Normal => SyncMode::Normal,
    };
    let host = host_name();
    let (audit, writer) = crate::audit::spawn_writer(
        &config.audit_path(),
        crate::audit::WriterOptions {
            sync,
            batch_max: config.audit.batch_max,
            host,
            checkpoint_every: config.audit.checkpoint_every,
            checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_secs),
        },
    )?;

    // The configuration being enforced is on record before anything is.
    audit
        .record(crate::audit::event::ConfigChange {
            time_ms: now_ms(),
            path: config.source.display().to_string(),
            sha256: config.sha256.clone(),
            action: ConfigAction::Load,
            detail: None,
            previous_sha256: None,
            outcome: crate::audit::event::ConfigOutcome::Applied,
            reason: None,
        })
        .await?;
    // Forwarders start before anything is enforced, so a broken output
    // (unreadable CA or token file) stops the start instead of silently
    // keeping the trail on this host.
    let forward = crate::forward::Forwarders::start(
        &config.forwards,
        &config.audit_path(),
        &host_name(),
        Some(audit.durable()),
    )?;
    let mut approvals_cfg = config.approvals.clone();
    approvals_cfg.socket = Some(config.approvals.socket_path(&config.agent.control_socket));
    let approvals =
        crate::approval::Approvals::new(approvals_cfg, audit.clone(), approver_cli(&config));
    // Grants and held requests from before this start (issue 21, item 5).
    let horizon_ms = 1000
        * i64::try_from(config.approvals.max_grant_secs + config.approvals.approval_timeout_secs)
            .unwrap_or(i64::MAX / 2000);
    let open = crate::approval::restore::read(&config.audit_path(), now_ms() - horizon_ms)?;
    let open = crate::approval::restore::fold(open, now_ms());
    let (grants, withdrawn) = approvals.restore(open).await?;
    if grants + withdrawn > 0 {
        info!(
            approvals.grants_restored = grants,
            approvals.requests_withdrawn = withdrawn,
            "approvals restored from the audit trail"
        );
    }
    let live = Live::build(config, &approvals, &host_name(), ConfigAction::Load)?;
    let config = &live.config;
    let mut enrollments =
        Enrollments::load(config, config.agent.state_dir.join("enrollments.json"))?;
    enrollments.resolve(&mount);

    let attach_cgroup = match &config.agent.cgroup_root {
        CgroupRoot::Auto => "/".to_owned(),
        CgroupRoot::Path(p) => p.clone(),
    };
    let listen6 = config.listen6_addr();
    crate::proxy::budget::set_limit(config.agent.max_buffered_bytes);
    let mut datapath = Datapath::load(&DatapathOptions {
        pin_base: config.agent.bpf_pin_dir.clone(),
        cgroup_mount: mount.clone(),
        attach_cgroup,
        proxy_addr4: config.agent.listen,
        proxy_addr6: listen6,
        mark: config.agent.upstream_mark,
        agent_cgroup_id,
        protected: ebpf::lsm::protected_paths(config),
        connects_per_sec: config.agent.max_connects_per_account_per_sec,
    })?;
    datapath.sync_targets(&keys::target_entries(config))?;
    datapath.sync_unit_paths(&enrollments.unit_path_entries())?;
    datapath.sync_cgroups(&enrollments.cgroup_entries())?;
    datapath.sync_uids(&enrollments.uid_entries())?;

    // Listeners exist before anything is redirected to them, and carry the
    // agent's mark: the kernel side redirects only to a listener that does.
    let mut listeners = vec![proxy::bind(config.agent.listen).await?];
    if let Some(a6) = listen6 {
        listeners.push(proxy::bind(a6).await?);
    }
    for l in &listeners {
        mark_listener(l, config.agent.upstream_mark)?;
    }
    log_host_warnings(config);
    let listen: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    datapath.publish_config()?;
    datapath.attach()?;
    // Attaching (the LSM programs above all) can take longer than the
    // heartbeat's grace: the deadline is pushed forward now, and the
    // heartbeat thread starts as soon as the datapath is shared, before anything
    // is served; otherwise enrolled connections fail with EPERM in between.
    datapath.heartbeat()?;
    info!(
        pin_dir = %datapath.pin_dir().display(),
        cgroup = %datapath.attach_dir().display(),
        agent.cgroup = %agent_cg,
        "eBPF programs attached"
    );

    // Each subsystem gets the part it works with: the accept loop its
    // `proxy::Context`, the reload its `Reloader`, the control sockets
    // their `control::Context`.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let session_base = rand::random::<u64>() & 0xffff_ffff_0000_0000;
    let datapath = Arc::new(datapath);
    let enrolled = Arc::new(Enrolled::new(enrollments, mount, Arc::clone(&datapath)));
    let approvals_socket = approvals.config().socket_path(&config.agent.control_socket);
    let reloader = Arc::new(Reloader::new(
        live,
        Arc::clone(&approvals),
        audit.clone(),
        Arc::clone(&enrolled),
        Arc::clone(&datapath),
        host_name(),
    ));
    let proxy = Arc::new(proxy::Context {
        live: Arc::clone(&reloader) as Arc<dyn proxy::LiveSource>,
        enrolled: Arc::clone(&enrolled),
        datapath: Arc::clone(&datapath),
        audit: audit.clone(),
        listen: listen.clone(),
        exe_hashes: Default::default(),
        unredirected: Default::default(),
        conns: proxy::Connections::new(session_base),
    });
    let stop = Arc::new(control::Stop::new(detach_on_exit, shutdown_tx));
    let forward = Arc::new(forward);
    let ctl = Arc::new(control::Context {
        reloader: Arc::clone(&reloader),
        proxy: Arc::clone(&proxy),
        enrolled: Arc::clone(&enrolled),
        approvals,
        forward: Arc::clone(&forward),
        started_ms: now_ms(),
        stop: Arc::clone(&stop),
    });
    let beat = Heartbeat::start(Arc::clone(&datapath))?;
    // Restart-only settings: a reload never changes them.
    let fixed = reloader.live().config.agent.clone();
    // SIGHUP is caught from here on (its default action would end the daemon).
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| DaemonError::Io {
            what: "listening for SIGHUP".into(),
            source,
        },
    )?;

    let control = control::server::bind(&fixed.control_socket)?;
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(proxy::serve(
            l,
            Arc::clone(&proxy),
            shutdown_rx.clone(),
        )));
    }
    let approvals_listener = control::approvals::bind(&approvals_socket)?;
    tasks.push(tokio::spawn(control::approvals::serve(
        approvals_listener,
        Arc::clone(&ctl),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(control::server::serve(
        control,
        Arc::clone(&ctl),
        shutdown_rx.clone(),
    )));
    // Prometheus metrics (`[metrics] listen`), when configured.
    let metrics = reloader.live().config.metrics.clone();
    if let Some(addr) = metrics.listen {
        let token = match &metrics.token_file {
            Some(path) => Some(crate::metrics::server::Token::read(path)?),
            None => None,
        };
        let listener = crate::metrics::server::bind(addr).await?;
        info!(metrics.listen = %addr, token = token.is_some(), "serving Prometheus metrics");
        tasks.push(tokio::spawn(crate::metrics::server::serve(
            listener,
            control::metrics::collector(Arc::clone(&ctl)),
            token,
            shutdown_rx.clone(),
        )));
    }
    // BPF LSM denials into the audit trail (issue 16, item 5).
    let targets_of = Arc::clone(&reloader);
    let denials = ebpf::denials::Context {
        datapath: Arc::clone(&datapath),
        audit: audit.clone(),
        enrolled: Arc::clone(&enrolled),
        target: Box::new(move |id| {
            let live = targets_of.live();
            let t = live.config.targets.get(usize::try_from(id).ok()?)?;
            Some((t.name.clone(), t.address))
        }),
    };
    tasks.push(tokio::spawn(ebpf::denials::serve(
        Arc::new(denials),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(resync_enrollments(
        Arc::clone(&enrolled),
        Arc::clone(&proxy),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(reload_on_hangup(
        hangup,
        Arc::clone(&reloader),
        shutdown_rx.clone(),
    )));

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(listen = ?listen, "warden is running");

    wait_for_stop(shutdown_rx.clone()).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop.request(false);
    beat.stop();
    if let Err(e) = datapath.mark_down() {
        warn!(error = %e, "could not mark the agent down in the kernel");
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let relays finish for a moment; the process exit closes the rest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !proxy.conns.open().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let control_socket = fixed.control_socket.clone();
    let _ = std::fs::remove_file(&approvals_socket);
    if stop.detach_on_exit() {
        // Unpinning releases the kernel's references; ours close at exit.
        let report = ebpf::uninstall(&fixed.bpf_pin_dir)?;
        info!(
            links = report.links_released,
            pins = report.pins_removed,
            "programs detached and pins removed"
        );
    }
    // Commit what is queued, refuse anything later, then wait for the writer.
    audit.clone().shutdown().await;
    // The writer signed its final checkpoint; give the forwarders a moment
    // to ship it and whatever else is left (the rest goes at next start).
    let _ = tokio::task::spawn_blocking(move || forward.shutdown(FORWARD_GRACE)).await;
    drop((ctl, proxy, reloader, enrolled, datapath));
    match tokio::task::spawn_blocking(move || writer.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "audit writer ended with an error"),
        Err(e) => warn!(error = %e, "audit writer task failed"),
    }
    // Last: `warden uninstall` waits for the socket to disappear.
    let _ = std::fs::remove_file(&control_socket);
    info!("warden stopped");
    Ok(())
}

/// How an approver invokes Warden to reach this daemon's approvals socket.
fn approver_cli(config: &Config) -> String {
    let socket = config.approvals.socket_path(&config.agent.control_socket);
    if socket == crate::config::approvals::defaults::socket() {
        "warden approvals".to_owned()
    } else {
        format!("warden approvals --socket {}", socket.display())
    }
}

async fn wait_for_stop(mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGINT");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
        _ = async { while shutdown.changed().await.is_ok() { if *shutdown.borrow() { break; } } } => info!("stop requested over the control socket"),
    }
}

/// SIGHUP: reload the configuration (see [`crate::reload`]); the outcome is
/// logged and recorded there.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            got = hangup.recv() => {
                if got.is_none() { break }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let _ = reloader.reload(crate::reload::Trigger::Signal).await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

/// The agent's liveness in the kernel: a thread of its own (so a busy async
/// runtime cannot starve it) pushes the deadline forward every
/// [`ebpf::HEARTBEAT_INTERVAL`]. Once the deadline lapses, enrolled
/// connections to fail-closed targets fail with EPERM and fail-open ones pass.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeat {
    fn start(datapath: Arc<Datapath>) -> Result<Self, DaemonError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("warden-heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = datapath.heartbeat() {
                        warn!(error = %e, "heartbeat failed");
                    }
                    std::thread::park_timeout(ebpf::HEARTBEAT_INTERVAL);
                }
            })
            .map_err(|source| DaemonError::Io {
                what: "starting the heartbeat thread".into(),
                source,
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops beating; the caller then marks the agent down.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Every second: re-resolve enrolled cgroups (systemd recreates them on unit
/// restart) and push them to the kernel, and record the summary of
/// unredirected connections refused without an event each.
async fn resync_enrollments(
    enrolled: Arc<Enrolled>,
    proxy: Arc<proxy::Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = enrolled.sync() {
                    warn!(error = %e, "syncing enrollments failed");
                }
                crate::proxy::flush_unredirected(&proxy).await;
            }
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

/// Puts the agent's mark on a proxy listener (see [`mark_listener`]'s use in
/// [`run`]); only a process with CAP_NET_ADMIN or CAP_NET_RAW can set one.
fn mark_listener(l: &tokio::net::TcpListener, mark: u32) -> Result<(), DaemonError> {
    socket2::SockRef::from(l)
        .set_mark(mark)
        .map_err(|source| DaemonError::Io {
            what: format!(
                "setting SO_MARK {mark:#x} on the proxy listener {}",
                l.local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into())
            ),
            source,
        })
}

/// Logs what `warden check-config` warns about (a proxy port any local user
/// could bind while the agent is down, local targets served on every address).
fn log_host_warnings(config: &Config) {
    for w in crate::config::warnings::host_warnings(config) {
        warn!(warning = %w, "configuration weakens enforcement on this host");
    }
}

/// This host's name, as audit events and minted tokens carry it.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn create_private_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DaemonError::Io {
            what: format!("creating state_dir {}", dir.display()),
            source,
        })
}
