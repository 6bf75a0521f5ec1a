//! What the proxy needs from the rest of the daemon, as types the proxy
//! owns: the daemon builds a [`Context`] once and hands it to the accept
//! loop; the configuration in force reaches it through [`LiveSource`] and
//! [`InForce`] (implemented by `reload`), and protocol handlers plug in
//! through [`Handler`]. Nothing here names the daemon or the reload code, so
//! the arrows point one way: `daemon → proxy`, `reload → proxy`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::refusals::RefusalLimiter;
use super::{Caller, OrigDst, Outcome};
use crate::audit::event::SessionId;
use crate::audit::store::AuditHandle;
use crate::config::{Config, Protocol, Target};
use crate::ebpf::Datapath;
use crate::identity::Enrolled;
use crate::identity::facts::ExeHashCache;
use crate::identity::sources::IdentitySources;

/// A boxed future a handler returns (the trait is used as `dyn Handler`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A protocol handler (PostgreSQL, HTTP, MySQL): the runtime of one
/// protocol's targets, built from a configuration.
pub trait Handler: Send + Sync + 'static {
    /// The protocol whose targets this handler serves.
    fn protocol(&self) -> Protocol;

    /// Serves one admitted connection between its open event (committed
    /// already) and its close event (written by the caller from the
    /// returned [`Outcome`]).
    fn serve<'a>(
        &'a self,
        config: &'a Config,
        audit: &'a AuditHandle,
        target: &'a Target,
        caller: Caller,
        stream: TcpStream,
    ) -> BoxFuture<'a, Outcome>;

    /// Refuses, in the protocol, a connection over the connection limits
    /// (the refusal is on record already). By default the connection is
    /// reset.
    fn refuse_connection<'a>(
        &'a self,
        _target: &'a Target,
        stream: TcpStream,
        _detail: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { super::reset_on_close(&stream) })
    }

    /// Takes over what must outlive a reload from the handler it replaces
    /// (the same protocol's). Nothing by default.
    fn take_over(&mut self, _previous: &dyn Handler) {}

    /// For [`Handler::take_over`]: the concrete handler behind `previous`.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The protocol handlers of one configuration, at most one per protocol.
#[derive(Default)]
pub struct Handlers(Vec<Box<dyn Handler>>);

impl Handlers {
    /// `self` with `handler` serving its protocol (replacing any other).
    pub fn with(mut self, handler: impl Handler) -> Self {
        let protocol = handler.protocol();
        self.0.retain(|h| h.protocol() != protocol);
        self.0.push(Box::new(handler));
        self
    }

    /// The handler of `protocol`, if it has one (plain `tcp` has none).
    pub fn get(&self, protocol: Protocol) -> Option<&dyn Handler> {
        self.0
            .iter()
            .find(|h| h.protocol() == protocol)
            .map(|h| h.as_ref())
    }

    /// The concrete handler of type `H`, if one is registered.
    pub fn find<H: Handler>(&self) -> Option<&H> {
        self.0.iter().find_map(|h| h.as_any().downcast_ref::<H>())
    }

    /// A reload: each handler takes over from `previous`'s of its protocol.
    pub fn take_over(&mut self, previous: &Handlers) {
        for h in &mut self.0 {
            if let Some(p) = previous.get(h.protocol()) {
                h.take_over(p);
            }
        }
    }
}

/// The configuration in force, as one connection takes it (once, for its
/// whole life).
pub trait InForce: Send + Sync {
    fn config(&self) -> &Config;
    /// The target the workload asked for, by its original destination.
    fn target_for(&self, orig: OrigDst) -> Option<&Target>;
    fn identities(&self) -> &IdentitySources;
    fn handlers(&self) -> &Handlers;
}

/// Where the configuration in force is read from (a reload replaces it).
pub trait LiveSource: Send + Sync {
    fn current(&self) -> Arc<dyn InForce>;
}

/// What the accept loop works with, built once by the daemon.
pub struct Context {
    pub live: Arc<dyn LiveSource>,
    pub enrolled: Arc<Enrolled>,
    pub datapath: Arc<Datapath>,
    pub audit: AuditHandle,
    /// The proxy's listening addresses.
    pub listen: Vec<SocketAddr>,
    pub exe_hashes: ExeHashCache,
    /// Bounds the audit events of connections without a kernel record.
    pub unredirected: RefusalLimiter,
    pub conns: Connections,
}

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

/// The connections being relayed: session ids, connection slots (global
/// and per account), the open list and the counters.
pub struct Connections {
    pub metrics: Metrics,
    conns: Mutex<HashMap<SessionId, OpenConn>>,
    session_base: u64,
    session_ctr: AtomicU64,
    active: AtomicUsize,
    /// Relayed connections per account (absent: none).
    active_per_account: Mutex<HashMap<String, usize>>,
}

/// Releases a connection slot (global and the account's) when the relay ends.
pub struct Slot<'a> {
    conns: &'a Connections,
    account: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.conns.active.fetch_sub(1, Ordering::AcqRel);
        let mut per = lock(&self.conns.active_per_account);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic (each update is a
    // single map call), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    /// Session ids start at `session_base` (its low 32 bits zero).
    pub fn new(session_base: u64) -> Self {
        Self {
            metrics: Metrics::default(),
            conns: Mutex::new(HashMap::new()),
            session_base,
            session_ctr: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            active_per_account: Mutex::new(HashMap::new()),
        }
    }

    pub fn next_session(&self) -> SessionId {
        SessionId(
            self.session_base
                .wrapping_add(self.session_ctr.fetch_add(1, Ordering::Relaxed)),
        )
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
            conns: self,
            account: account.to_owned(),
        })
    }

    pub fn insert(&self, s: SessionId, c: OpenConn) {
        lock(&self.conns).insert(s, c);
        self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove(&self, s: SessionId) {
        lock(&self.conns).remove(&s);
    }

    /// The open connections, oldest first.
    pub fn open(&self) -> Vec<(SessionId, OpenConn)> {
        let mut v: Vec<_> = lock(&self.conns)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort_by_key(|(_, c)| c.since_ms);
        v
    }
}
