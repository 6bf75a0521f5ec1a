//! `warden run`: wires the subsystems together for the life of the daemon —
//! config, agent cgroup, audit writer, enrollments, datapath, listeners,
//! control socket, heartbeat — and tears them down in order on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};
use warden_common::{ConnMeta, TARGET_FAIL_OPEN, TargetKey, TargetValue};

use crate::audit::event::ConfigAction;
use crate::audit::event::SessionId;
use crate::audit::store::{AuditHandle, SyncMode};
use crate::config::{AgentCgroup, CgroupRoot, Config, FailMode, Synchronous};
use crate::control;
use crate::ebpf::{self, Datapath, DatapathOptions, cgroup, keys};
use crate::identity::Enrollments;
use crate::proxy;
use crate::reload::{Live, Snapshot};

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

/// One relayed connection, for `warden status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenConn {
    pub account: String,
    pub target: String,
    pub client: SocketAddr,
    pub orig_dst: SocketAddr,
    pub pid: u32,
    pub since_ms: i64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub closed: AtomicU64,
    /// `tcp` connections relayed in the kernel both ways (sockmap).
    pub kernel_relayed: AtomicU64,
}

/// State shared by the accept loop, the control socket and the heartbeat.
/// What a reload replaces lives in [`Live`], read once per connection.
pub struct Shared {
    live: Snapshot<Live>,
    /// Serialises reloads (SIGHUP and `warden reload`).
    pub reload_lock: tokio::sync::Mutex<()>,
    pub reload_state: Mutex<crate::reload::ReloadState>,
    pub cgroup_mount: PathBuf,
    pub datapath: Datapath,
    pub enrollments: Mutex<Enrollments>,
    pub audit: AuditHandle,
    pub listen: Vec<SocketAddr>,
    pub exe_hashes: crate::identity::facts::ExeHashCache,
    /// Bounds the audit events of connections without a kernel record.
    pub unredirected: crate::proxy::refusals::RefusalLimiter,
    pub metrics: Metrics,
    /// `[[forward]]` outputs shipping the audit trail off the host.
    pub forward: crate::forward::Forwarders,
    /// Held statements, decisions and grants (`[approvals]`).
    pub approvals: Arc<crate::approval::Approvals>,
    pub started_ms: i64,
    pub detach_on_exit: AtomicBool,
    shutdown: watch::Sender<bool>,
    conns: Mutex<HashMap<SessionId, OpenConn>>,
    session_base: u64,
    session_ctr: AtomicU64,
    active: AtomicUsize,
    /// Relayed connections per account (absent: none).
    active_per_account: Mutex<HashMap<String, usize>>,
}

/// Releases a connection slot (global and the account's) when the relay ends.
pub struct Slot<'a> {
    shared: &'a Shared,
    account: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let mut per = lock(&self.shared.active_per_account);
        if let Some(n) = per.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.account);
            }
        }
    }
}

/// Why no connection slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// `max_connections` connections are relayed already.
    Global(usize),
    /// The account has `max_connections_per_account` already.
    Account(usize),
}

impl Shared {
    pub fn next_session(&self) -> SessionId {
        SessionId(
            self.session_base
                .wrapping_add(self.session_ctr.fetch_add(1, Ordering::Relaxed)),
        )
    }

    /// The configuration in force now; a connection takes it once and keeps
    /// it until it closes.
    pub fn live(&self) -> Arc<Live> {
        self.live.load()
    }

    /// Puts a new configuration in force for new connections (see
    /// [`crate::reload`]); returns the one it replaced.
    pub fn swap_live(&self, live: Arc<Live>) -> Arc<Live> {
        self.live.swap(live)
    }

    /// The account the kernel matched for this connection. A cgroup the
    /// kernel enrolled on its own (an enrolled unit's cgroup, recreated since
    /// the last resolution) is resolved now rather than refused.
    pub fn account_for(&self, meta: &ConnMeta) -> Option<(String, Option<String>)> {
        if let Some(found) = lock(&self.enrollments).account_for(meta) {
            return Some(found);
        }
        if meta.match_kind != warden_common::MATCH_CGROUP {
            return None;
        }
        if let Err(e) = self.sync_enrollments() {
            warn!(error = %e, "syncing enrollments failed");
        }
        lock(&self.enrollments).account_for(meta)
    }

    /// A connection slot for `account`, unless `max` connections are
    /// relayed already or the account has `max_per_account`.
    pub fn try_acquire_slot(
        &self,
        account: &str,
        max: usize,
        max_per_account: usize,
    ) -> Result<Slot<'_>, SlotRefusal> {
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotRefusal::Global(max));
        }
        let mut per = lock(&self.active_per_account);
        let n = per.entry(account.to_owned()).or_insert(0);
        if *n >= max_per_account {
            if *n == 0 {
                per.remove(account);
            }
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotRefusal::Account(max_per_account));
        }
        *n += 1;
        Ok(Slot {
            shared: self,
            account: account.to_owned(),
        })
    }

    pub fn conns_insert(&self, s: SessionId, c: OpenConn) {
        lock(&self.conns).insert(s, c);
        self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn conns_remove(&self, s: SessionId) {
        lock(&self.conns).remove(&s);
    }

    pub fn open_conns(&self) -> Vec<(SessionId, OpenConn)> {
        let mut v: Vec<_> = lock(&self.conns)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort_by_key(|(_, c)| c.since_ms);
        v
    }

    /// Re-resolves enrolled cgroups and pushes enrollments to the kernel.
    pub fn sync_enrollments(&self) -> Result<(), ebpf::DatapathError> {
        let (cg, uids, units) = {
            let mut e = lock(&self.enrollments);
            e.resolve(&self.cgroup_mount);
            (e.cgroup_entries(), e.uid_entries(), e.unit_path_entries())
        };
        self.datapath.sync_unit_paths(&units)?;
        self.datapath.sync_cgroups(&cg)?;
        self.datapath.sync_uids(&uids)
    }

    pub fn request_shutdown(&self, detach: bool) {
        if detach {
            self.detach_on_exit.store(true, Ordering::SeqCst);
        }
        let _ = self.shutdown.send(true);
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic (each update is a
    // single assignment or a map call), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

pub(crate) fn target_entries(config: &Config) -> Vec<(TargetKey, TargetValue)> {
    config
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let flags = match config.fail_mode_of(t) {
                FailMode::Open => TARGET_FAIL_OPEN,
                FailMode::Closed => 0,
            };
            (
                keys::target_key(t.address),
                TargetValue {
                    flags,
                    target_id: i as u32,
                },
            )
        })
        .collect()
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
        .record_config(crate::audit::event::ConfigChange {
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
    })?;
    datapath.sync_targets(&target_entries(config))?;
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
    // heartbeat thread starts as soon as `shared` exists, before anything
    // is served; otherwise enrolled connections fail with EPERM in between.
    datapath.heartbeat()?;
    info!(
        pin_dir = %datapath.pin_dir().display(),
        cgroup = %datapath.attach_dir().display(),
        agent.cgroup = %agent_cg,
        "eBPF programs attached"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let session_base = rand::random::<u64>() & 0xffff_ffff_0000_0000;
    let shared = Arc::new(Shared {
        live: Snapshot::new(Arc::new(live)),
        reload_lock: tokio::sync::Mutex::new(()),
        reload_state: Mutex::new(Default::default()),
        cgroup_mount: mount,
        datapath,
        enrollments: Mutex::new(enrollments),
        audit,
        listen: listen.clone(),
        exe_hashes: Default::default(),
        unredirected: Default::default(),
        metrics: Metrics::default(),
        forward,
        approvals,
        started_ms: now_ms(),
        detach_on_exit: AtomicBool::new(detach_on_exit),
        shutdown: shutdown_tx,
        conns: Mutex::new(HashMap::new()),
        session_base,
        session_ctr: AtomicU64::new(1),
        active: AtomicUsize::new(0),
        active_per_account: Mutex::new(HashMap::new()),
    });
    let beat = Heartbeat::start(Arc::clone(&shared))?;
    // Restart-only settings: a reload never changes them.
    let fixed = shared.live().config.agent.clone();
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
            Arc::clone(&shared),
            shutdown_rx.clone(),
        )));
    }
    let approvals_socket = shared.approvals.config().socket_path(&fixed.control_socket);
    let approvals_listener = control::approvals::bind(&approvals_socket)?;
    tasks.push(tokio::spawn(control::approvals::serve(
        approvals_listener,
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(control::server::serve(
        control,
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));
    // Prometheus metrics (`[metrics] listen`), when configured.
    let metrics = shared.live().config.metrics.clone();
    if let Some(addr) = metrics.listen {
        let token = match &metrics.token_file {
            Some(path) => Some(crate::metrics::server::Token::read(path)?),
            None => None,
        };
        let listener = crate::metrics::server::bind(addr).await?;
        info!(metrics.listen = %addr, token = token.is_some(), "serving Prometheus metrics");
        tasks.push(tokio::spawn(crate::metrics::server::serve(
            listener,
            control::metrics::collector(Arc::clone(&shared)),
            token,
            shutdown_rx.clone(),
        )));
    }
    // BPF LSM denials into the audit trail (issue 16, item 5).
    tasks.push(tokio::spawn(ebpf::denials::serve(
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(resync_enrollments(
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(reload_on_hangup(
        hangup,
        Arc::clone(&shared),
        shutdown_rx.clone(),
    )));

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(listen = ?listen, "warden is running");

    wait_for_stop(Arc::clone(&shared), shutdown_rx.clone()).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shared.request_shutdown(false);
    beat.stop();
    if let Err(e) = shared.datapath.mark_down() {
        warn!(error = %e, "could not mark the agent down in the kernel");
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let relays finish for a moment; the process exit closes the rest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !shared.open_conns().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let control_socket = fixed.control_socket.clone();
    let _ = std::fs::remove_file(&approvals_socket);
    if shared.detach_on_exit.load(Ordering::SeqCst) {
        // Unpinning releases the kernel's references; ours close at exit.
        let report = ebpf::uninstall(&fixed.bpf_pin_dir)?;
        info!(
            links = report.links_released,
            pins = report.pins_removed,
            "programs detached and pins removed"
        );
    }
    // Commit what is queued, refuse anything later, then wait for the writer.
    shared.audit.clone().shutdown().await;
    // The writer signed its final checkpoint; give the forwarders a moment
    // to ship it and whatever else is left (the rest goes at next start).
    let fwd = Arc::clone(&shared);
    let _ = tokio::task::spawn_blocking(move || fwd.forward.shutdown(FORWARD_GRACE)).await;
    drop(shared);
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

async fn wait_for_stop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
    drop(shared);
}

/// SIGHUP: reload the configuration (see [`crate::reload`]); the outcome is
/// logged and recorded there.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            got = hangup.recv() => {
                if got.is_none() { break }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let _ = crate::reload::reload(&shared, crate::reload::Trigger::Signal).await;
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
    fn start(shared: Arc<Shared>) -> Result<Self, DaemonError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("warden-heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = shared.datapath.heartbeat() {
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
async fn resync_enrollments(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = shared.sync_enrollments() {
                    warn!(error = %e, "syncing enrollments failed");
                }
                crate::proxy::flush_unredirected(&shared).await;
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
