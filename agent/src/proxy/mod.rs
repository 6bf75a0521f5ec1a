//! The proxy: listeners on loopback, the accept loop, the original-destination
//! lookup, the account and target decision, the marked upstream connect and
//! the relay. Protocol handlers (PostgreSQL, MySQL, HTTP) plug in where the
//! `tcp` relay is chosen today.

pub mod budget;
pub mod context;
mod handlers;
pub mod http;
pub mod mysql;
pub mod postgres;
pub mod refusals;
pub mod relay;
pub mod session;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use crate::audit::event::{
    ConnActivity, ConnectionEvent, Decision, ProcessInfo, SessionId, TokenIdentity,
};
use crate::audit::reason::RefuseReason;
use crate::config::ExePin;
use crate::ebpf::keys;
use crate::identity::facts;
pub use context::{
    Connections, Context, Handler, Handlers, InForce, LiveSource, OpenConn, SlotRefusal,
};

/// The destination the workload asked for, as recorded by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrigDst(pub SocketAddr);

/// The workload's end of the connection as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientAddr(pub SocketAddr);

impl std::fmt::Display for OrigDst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("binding proxy listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds one proxy listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| ProxyError::Bind { addr, source })?;
    sock.set_reuseaddr(true)
        .map_err(|source| ProxyError::Bind { addr, source })?;
    if addr.is_ipv6() {
        socket2::SockRef::from(&sock)
            .set_only_v6(true)
            .map_err(|source| ProxyError::Bind { addr, source })?;
    }
    sock.bind(addr)
        .map_err(|source| ProxyError::Bind { addr, source })?;
    sock.listen(1024)
        .map_err(|source| ProxyError::Bind { addr, source })
}

/// Accepts until `shutdown` turns true; each connection runs in its own task.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&shared);
                    let session = shared.conns.next_session();
                    let span = tracing::info_span!("conn", session = %session, src.addr = %peer);
                    tokio::spawn(handle(stream, ClientAddr(peer), session, shared).instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Who is connecting to a protocol target, as the accept path established
/// it (handed to the protocol handlers).
pub struct Caller {
    pub session: SessionId,
    pub account: String,
    pub process: ProcessInfo,
    pub identity: Option<TokenIdentity>,
}

/// How a protocol connection ended, for its close event.
#[derive(Debug, Default)]
pub struct Outcome {
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Machine-readable reason when it did not end normally.
    pub reason: Option<String>,
    pub detail: Option<String>,
}

impl Outcome {
    /// The outcome with why the connection ended early.
    pub fn ended(mut self, reason: RefuseReason, detail: Option<String>) -> Self {
        self.reason = Some(reason.into());
        self.detail = detail;
        self
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Pending {
    session: SessionId,
    client: ClientAddr,
    orig_dst: Option<OrigDst>,
    account: Option<String>,
    target: Option<String>,
    protocol: &'static str,
    process: ProcessInfo,
    identity: Option<TokenIdentity>,
}

impl Pending {
    /// A connection nothing is known about yet but its session and client.
    fn new(session: SessionId, client: ClientAddr) -> Self {
        Pending {
            session,
            client,
            orig_dst: None,
            account: None,
            target: None,
            protocol: "tcp",
            process: ProcessInfo::default(),
            identity: None,
        }
    }

    fn event(&self, activity: ConnActivity, decision: Decision) -> ConnectionEvent {
        ConnectionEvent {
            time_ms: now_ms(),
            activity,
            decision,
            reason: None,
            detail: None,
            session: self.session,
            account: self.account.clone(),
            target: self.target.clone(),
            protocol: self.protocol.to_owned(),
            process: self.process.clone(),
            client: self.client.0,
            orig_dst: self.orig_dst.map(|o| o.0),
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            identity: self.identity.clone(),
        }
    }
}

/// Refuses a connection: audit first, then reset the client so it sees the
/// refusal at once (plain TCP has no error message to carry).
async fn refuse(
    shared: &Context,
    stream: TcpStream,
    p: &Pending,
    reason: RefuseReason,
    detail: String,
) {
    record_refusal(shared, p, reason, detail).await;
    reset_on_close(&stream);
    drop(stream);
}

/// Counts, logs and audits a refused connection.
async fn record_refusal(shared: &Context, p: &Pending, reason: RefuseReason, detail: String) {
    let reason = reason.as_str();
    let mut ev = p.event(ConnActivity::Refuse, Decision::Refused);
    ev.reason = Some(reason.to_owned());
    ev.detail = Some(detail.clone());
    shared.conns.metrics.refused.fetch_add(1, Ordering::Relaxed);
    info!(reason, detail = %detail, account = p.account.as_deref().unwrap_or("-"), "connection refused");
    if let Err(e) = shared.audit.record(ev).await {
        tracing::error!(error = %e, reason, "could not audit a refused connection");
    }
}

/// One event for `n` unredirected connections refused without their own
/// (see [`refusals`]); `p` is the connection that closed the window, or any.
async fn record_unredirected_summary(shared: &Context, p: &Pending, n: u64) {
    let mut ev = p.event(ConnActivity::Refuse, Decision::Refused);
    ev.reason = Some(RefuseReason::Unredirected.into());
    ev.detail = Some(format!(
        "{n} more connections without a kernel record were refused in the last {} s without an event each (at most {} a second are recorded individually)",
        refusals::RefusalLimiter::WINDOW.as_secs(),
        refusals::RefusalLimiter::PER_WINDOW
    ));
    warn!(
        refused = n,
        "unredirected connections refused beyond the audit rate limit"
    );
    if let Err(e) = shared.audit.record(ev).await {
        tracing::error!(error = %e, "could not audit unredirected connections");
    }
}

/// Records the summary of a finished window of unredirected connections
/// when no connection arrived to close it (called once a second).
pub async fn flush_unredirected(shared: &Context) {
    if let Some(n) = shared.unredirected.flush(Instant::now()) {
        let p = Pending::new(
            SessionId(0),
            ClientAddr(
                shared
                    .listen
                    .first()
                    .copied()
                    .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ),
        );
        record_unredirected_summary(shared, &p, n).await;
    }
}

async fn handle(stream: TcpStream, client: ClientAddr, session: SessionId, shared: Arc<Context>) {
    let started = Instant::now();
    // One configuration for the whole connection: a reload while it is open
    // applies to later connections only.
    let live = shared.live.current();
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            debug!(error = %e, "connection vanished before it could be inspected");
            return;
        }
    };
    let key = keys::tuple_key(client.0, local);
    let mut p = Pending::new(session, client);
    let meta = match shared.datapath.take_orig_dst(&key) {
        Ok(Some(meta)) => meta,
        lookup => {
            let detail = match lookup {
                Err(e) => format!("original destination lookup failed: {e}"),
                Ok(_) => "no kernel record for this connection: it did not come through Warden's redirect"
                    .into(),
            };
            // Anyone can open these in a loop: a bounded number of events.
            let admission = shared.unredirected.admit(Instant::now());
            if let Some(n) = admission.summary {
                record_unredirected_summary(&shared, &p, n).await;
            }
            if !admission.record {
                shared.conns.metrics.refused.fetch_add(1, Ordering::Relaxed);
                reset_on_close(&stream);
                return;
            }
            return refuse(&shared, stream, &p, RefuseReason::Unredirected, detail).await;
        }
    };
    let orig = OrigDst(keys::orig_dst(&meta));
    p.orig_dst = Some(orig);
    let resolved = shared.enrolled.account_for(&meta);
    let facts = {
        let shared = Arc::clone(&shared);
        let enrolled = resolved.as_ref().and_then(|(_, path)| path.clone());
        // /proc reads and (first time per binary) hashing block: off the runtime.
        tokio::task::spawn_blocking(move || {
            facts::read_facts(
                &meta,
                shared.enrolled.cgroup_mount(),
                enrolled.as_deref(),
                &shared.exe_hashes,
                // kernel (issue 16): what each process exec'ed, and when.
                |tgid| shared.datapath.proc_record(tgid),
            )
        })
        .await
        .ok()
    };
    // A failed fact-reading task leaves only the kernel's record.
    let facts = facts.unwrap_or_else(|| facts::ProcessFacts {
        pid: meta.pid,
        tgid: meta.tgid,
        uid: meta.uid,
        gid: meta.gid,
        cgroup_id: meta.cgroup_id,
        ..Default::default()
    });
    p.process = process_info(&facts);
    let Some(target) = live.target_for(orig) else {
        return refuse(
            &shared,
            stream,
            &p,
            RefuseReason::UnknownTarget,
            format!("{orig} is not a configured target"),
        )
        .await;
    };
    p.target = Some(target.name.clone());
    p.protocol = target.protocol.as_str();
    let Some((account, _)) = resolved else {
        return refuse(
            &shared,
            stream,
            &p,
            RefuseReason::UnknownAccount,
            "the caller's enrollment was removed before the connection was accepted".into(),
        )
        .await;
    };
    p.account = Some(account.clone());
    let granted = live.config().is_granted(&account, &target.name);
    if !granted {
        return refuse(
            &shared,
            stream,
            &p,
            RefuseReason::TargetNotGranted,
            format!("account {account} is not granted target {}", target.name),
        )
        .await;
    }
    if let Some(pin) = live.config().account(&account).and_then(|a| a.exe.as_ref())
        && let Err(why) = exe_matches(pin, &facts)
    {
        return refuse(&shared, stream, &p, RefuseReason::IdentityMismatch, why).await;
    }
    match live.identities().identify(&account, &facts).await {
        Ok(id) => p.identity = id,
        Err(e) => {
            let reason = e.reason();
            return refuse(
                &shared,
                stream,
                &p,
                RefuseReason::Identity(reason),
                e.to_string(),
            )
            .await;
        }
    }
    let agent = &live.config().agent;
    let _slot = match shared.conns.try_acquire_slot(
        &account,
        agent.max_connections,
        agent.max_connections_per_account,
    ) {
        Ok(slot) => slot,
        Err(why) => {
            let detail = match why {
                SlotRefusal::Global(n) => format!("max_connections ({n}) reached"),
                SlotRefusal::Account(n) => {
                    format!("max_connections_per_account ({n}) reached by account {account}")
                }
            };
            // In the protocol (PostgreSQL SQLSTATE 53300
            // too_many_connections, HTTP 503 with Retry-After); a reset
            // for plain TCP and protocols without their own refusal.
            record_refusal(&shared, &p, RefuseReason::ConnectionLimit, detail.clone()).await;
            match live.handlers().get(target.protocol) {
                Some(h) => h.refuse_connection(target, stream, &detail).await,
                None => reset_on_close(&stream),
            }
            return;
        }
    };
    // Audit before effect: the upstream is not even contacted before the
    // open event is committed.
    let audit_start = Instant::now();
    if let Err(e) = shared
        .audit
        .record(p.event(ConnActivity::Open, Decision::Allowed))
        .await
    {
        tracing::error!(error = %e, "audit store unavailable; refusing connection");
        return refuse(
            &shared,
            stream,
            &p,
            RefuseReason::AuditUnavailable,
            e.to_string(),
        )
        .await;
    }
    if let Some(handler) = live.handlers().get(target.protocol) {
        return serve_protocol(
            &shared,
            (live.config(), handler),
            target,
            &p,
            account,
            meta.tgid,
            (stream, started),
        )
        .await;
    }
    let open_audit_us = audit_start.elapsed().as_micros() as u64;
    let connect_start = Instant::now();
    let upstream = match upstream::connect(
        target.address,
        live.config().agent.upstream_mark,
        Duration::from_millis(live.config().agent.connect_timeout_ms),
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            // The open is on record, so the failure is recorded as its close.
            info!(error = %e, "upstream connect failed");
            reset_on_close(&stream);
            drop(stream);
            let mut ev = p.event(ConnActivity::Close, Decision::Allowed);
            ev.reason = Some(RefuseReason::UpstreamConnectFailed.into());
            ev.detail = Some(e.to_string());
            ev.duration_ms = started.elapsed().as_millis() as u64;
            if let Err(e) = shared.audit.record(ev).await {
                tracing::error!(error = %e, "could not audit a failed upstream connect");
            }
            return;
        }
    };
    shared.conns.insert(
        session,
        OpenConn {
            account: account.clone(),
            target: target.name.clone(),
            client: client.0,
            orig_dst: orig.0,
            pid: meta.tgid,
            since_ms: now_ms(),
        },
    );
    // Where a connection's set-up time goes (accept to relay), for the
    // relay benchmark's latency breakdown.
    info!(
        account = %account,
        target = %target.name,
        dst.addr = %orig,
        pid = meta.tgid,
        setup.accept_us = started.elapsed().as_micros() as u64,
        setup.open_audit_us = open_audit_us,
        setup.connect_us = connect_start.elapsed().as_micros() as u64,
        "relaying"
    );
    let _ = stream.set_nodelay(true);
    let counts = relay::relay(
        stream,
        upstream,
        live.config().agent.relay_buffer_bytes,
        match live.config().agent.tcp_relay {
            crate::config::TcpRelay::Sockmap => shared.datapath.kernel_relay(),
            crate::config::TcpRelay::Splice => None,
        },
    )
    .await;
    if counts.kernel.up && counts.kernel.down {
        shared
            .conns
            .metrics
            .kernel_relayed
            .fetch_add(1, Ordering::Relaxed);
    }
    shared.conns.remove(session);
    let mut ev = p.event(ConnActivity::Close, Decision::Allowed);
    ev.bytes_up = counts.up;
    ev.bytes_down = counts.down;
    ev.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(err) = counts.error {
        ev.reason = Some(RefuseReason::RelayError.into());
        ev.detail = Some(err);
    }
    if let Err(e) = shared.audit.record(ev).await {
        tracing::error!(error = %e, "could not audit a connection close");
    }
    shared.conns.metrics.closed.fetch_add(1, Ordering::Relaxed);
}

/// A connection to a protocol target (PostgreSQL, HTTP, MySQL): served by its
/// handler between the open event (already committed) and the close event.
/// The configuration in force and the target protocol's handler; the
/// workload's connection and when it was accepted.
async fn serve_protocol(
    shared: &Context,
    (config, handler): (&crate::config::Config, &dyn Handler),
    target: &crate::config::Target,
    p: &Pending,
    account: String,
    pid: u32,
    (stream, started): (TcpStream, Instant),
) {
    let client = p.client;
    shared.conns.insert(
        p.session,
        OpenConn {
            account: account.clone(),
            target: target.name.clone(),
            client: client.0,
            orig_dst: p.orig_dst.map_or(client.0, |o| o.0),
            pid,
            since_ms: now_ms(),
        },
    );
    info!(account = %account, target = %target.name, pid, protocol = target.protocol.as_str(), "protocol session");
    let caller = Caller {
        session: p.session,
        account,
        process: p.process.clone(),
        identity: p.identity.clone(),
    };
    let outcome = handler
        .serve(config, &shared.audit, target, caller, stream)
        .await;
    shared.conns.remove(p.session);
    let mut ev = p.event(ConnActivity::Close, Decision::Allowed);
    ev.bytes_up = outcome.bytes_up;
    ev.bytes_down = outcome.bytes_down;
    ev.duration_ms = started.elapsed().as_millis() as u64;
    ev.reason = outcome.reason;
    ev.detail = outcome.detail;
    if let Err(e) = shared.audit.record(ev).await {
        tracing::error!(error = %e, "could not audit a connection close");
    }
    shared.conns.metrics.closed.fetch_add(1, Ordering::Relaxed);
}

/// The audit view of the caller.
fn process_info(f: &facts::ProcessFacts) -> ProcessInfo {
    ProcessInfo {
        pid: Some(f.pid),
        tgid: Some(f.tgid),
        uid: Some(f.uid),
        gid: Some(f.gid),
        comm: f.comm.clone(),
        exe: f.exe.clone(),
        cgroup_id: Some(f.cgroup_id),
        cgroup_path: f.cgroup_path.clone(),
        exe_sha256: f.exe_sha256.clone(),
        // Command lines carry arguments (`psql -c '…'`, `--token=…`): masked
        // with every built-in detector before they reach the audit trail.
        cmdline: f
            .cmdline
            .as_deref()
            .map(|c| builtin_masker().mask_str(c).0.into_owned()),
        start_boot_ns: f.start_boot_ns,
        pid_reused: f.pid_reused,
        unit: f.cgroup_path.as_deref().and_then(unit_of),
    }
}

use session::builtin_masker;

/// The systemd unit a cgroup path belongs to: its deepest `.service` or
/// `.scope` segment.
fn unit_of(cgroup_path: &str) -> Option<String> {
    cgroup_path
        .rsplit('/')
        .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
        .map(str::to_owned)
}

/// Checks the account's executable pin against what the caller runs. Facts
/// that could not be read (or a reused pid) never match: fail closed.
fn exe_matches(pin: &ExePin, f: &facts::ProcessFacts) -> Result<(), String> {
    if f.exec_after_connect {
        return Err(format!(
            "pid {} executed another program after its connect; the executable that connected cannot be confirmed",
            f.tgid
        ));
    }
    // kernel (issue 16): /proc/<pid>/exe pointed away from what was exec'ed.
    if f.exe_replaced {
        return Err(format!(
            "pid {} shows an executable it did not exec (prctl PR_SET_MM); the executable that connected cannot be confirmed",
            f.tgid
        ));
    }
    if f.exec_unrecorded {
        return Err(format!(
            "the kernel has no record of what pid {} executed (its record could not be stored); the executable that connected cannot be confirmed",
            f.tgid
        ));
    }
    if f.pid_reused {
        return Err(format!(
            "pid {} was reused after the connect; the executable cannot be confirmed",
            f.tgid
        ));
    }
    let want = pin.path.to_string_lossy();
    match f.exe.as_deref() {
        Some(exe) if exe == want => {}
        Some(exe) => return Err(format!("executable {exe} is not the pinned {want}")),
        None => return Err(format!("executable of pid {} could not be read", f.tgid)),
    }
    if let Some(sha) = &pin.sha256 {
        match f.exe_sha256.as_deref() {
            Some(h) if h == sha => {}
            Some(h) => {
                return Err(format!(
                    "executable {want} has sha256 {h}, not the pinned {sha}"
                ));
            }
            None => return Err(format!("executable {want} could not be hashed")),
        }
    }
    Ok(())
}

/// SO_LINGER 0: closing sends RST, so the peer sees the refusal at once. The
/// socket is non-blocking, so the close never blocks the runtime.
fn reset_on_close(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}
