//! The control socket: a root-only unix socket (and the approvals socket,
//! open to approvers, see [`approvals`]) through which the `warden` CLI
//! asks the running daemon for its status and changes enrollments live.
//! One JSON request per connection, one JSON response back.

pub mod approvals;
pub mod client;
pub mod metrics;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::warn;

use crate::approval::Approvals;
use crate::ebpf::AttachedProgram;
use crate::forward::Forwarders;
use crate::identity::Enrolled;
use crate::identity::Selector;
use crate::identity::enrollment::EnrollmentView;
use crate::proxy::OpenConn;
use crate::reload::{Live, Reloader};

/// What the control and approvals sockets and the metrics collector read
/// and change, built once by the daemon.
pub struct Context {
    pub reloader: Arc<Reloader>,
    /// The accept loop's state: open connections, counters, audit handle,
    /// datapath, listeners.
    pub proxy: Arc<crate::proxy::Context>,
    pub enrolled: Arc<Enrolled>,
    /// Held statements, decisions and grants (`[approvals]`).
    pub approvals: Arc<Approvals>,
    /// `[[forward]]` outputs shipping the audit trail off the host.
    pub forward: Arc<Forwarders>,
    pub started_ms: i64,
    pub stop: Arc<Stop>,
}

impl Context {
    /// The configuration in force now.
    pub fn live(&self) -> Arc<Live> {
        self.reloader.live()
    }
}

/// How a stop of the daemon is requested (the daemon waits on the
/// receiving end of the channel).
pub struct Stop {
    detach_on_exit: AtomicBool,
    tx: watch::Sender<bool>,
}

impl Stop {
    /// `detach_on_exit`: whether the stop detaches the programs already.
    pub fn new(detach_on_exit: bool, tx: watch::Sender<bool>) -> Self {
        Self {
            detach_on_exit: AtomicBool::new(detach_on_exit),
            tx,
        }
    }

    /// Asks the daemon to stop; with `detach`, to detach its programs and
    /// remove its pins too.
    pub fn request(&self, detach: bool) {
        if detach {
            self.detach_on_exit.store(true, Ordering::SeqCst);
        }
        let _ = self.tx.send(true);
    }

    /// Whether the stop should detach the programs.
    pub fn detach_on_exit(&self) -> bool {
        self.detach_on_exit.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("is the daemon running? cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed control message: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Enroll {
        account: String,
        selector: Selector,
    },
    Unenroll {
        account: String,
        selector: Selector,
    },
    /// Stop the daemon; with `detach`, also detach the programs and remove pins.
    Shutdown {
        detach: bool,
    },
    /// Re-read the configuration file and apply it (see `crate::reload`).
    Reload,
    /// Pending approval requests and live grants (approvals socket).
    ApprovalsList,
    ApprovalsShow {
        id: String,
    },
    ApprovalsDecide {
        id: String,
        #[serde(flatten)]
        decision: crate::approval::Decision,
        /// `approve --learn` (issue 19).
        #[serde(default)]
        learn: bool,
    },
    ApprovalsRevoke {
        grant_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

impl Request {
    /// Served on the approvals socket (every other request is root-only).
    pub fn is_approval(&self) -> bool {
        matches!(
            self,
            Request::ApprovalsList
                | Request::ApprovalsShow { .. }
                | Request::ApprovalsDecide { .. }
                | Request::ApprovalsRevoke { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReport>),
    Approvals(Box<crate::approval::Listing>),
    Approval(Box<crate::approval::RequestView>),
    Done { message: String },
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub started_ms: i64,
    pub config: PathBuf,
    pub config_sha256: String,
    /// When the configuration in force took effect (ms since the Unix epoch).
    #[serde(default)]
    pub config_loaded_ms: i64,
    /// `load` (at start) or `reload`.
    #[serde(default)]
    pub config_action: String,
    /// Successful reloads since start.
    #[serde(default)]
    pub config_reloads: u64,
    /// The last refused reload, if any.
    #[serde(default)]
    pub last_reload_failure: Option<crate::reload::ReloadFailure>,
    pub listen: Vec<SocketAddr>,
    pub pin_dir: PathBuf,
    pub attach_cgroup: PathBuf,
    pub programs: Vec<AttachedProgram>,
    pub fail_mode: String,
    pub targets: Vec<TargetStatus>,
    pub enrollments: Vec<EnrollmentView>,
    pub open_connections: Vec<OpenConnView>,
    pub connections_relayed: u64,
    pub connections_closed: u64,
    pub connections_refused: u64,
    pub audit_path: PathBuf,
    pub audit_healthy: bool,
    /// `[[forward]]` outputs: backlog, last error, last acknowledgment.
    #[serde(default)]
    pub forwarders: Vec<crate::forward::ForwardStatus>,
    /// Whether BPF LSM is active in this kernel (`None`: cannot tell).
    /// Without it a root workload in an enrolled cgroup is not contained
    /// (see the threat model in ARCHITECTURE.md).
    #[serde(default)]
    pub bpf_lsm: Option<bool>,
    /// Whether Warden's BPF LSM programs (self-protection against root
    /// workloads) are attached, and why not when they are not.
    #[serde(default)]
    pub lsm_attached: bool,
    #[serde(default)]
    pub lsm_error: Option<String>,
    /// How `tcp` targets are relayed: `sockmap` (in the kernel) or `splice`
    /// (the in-kernel relay's program could not be attached: why in
    /// `tcp_relay_error`).
    #[serde(default)]
    pub tcp_relay: String,
    #[serde(default)]
    pub tcp_relay_error: Option<String>,
    /// `tcp` connections relayed in the kernel both ways since start.
    #[serde(default)]
    pub connections_kernel_relayed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetStatus {
    pub name: String,
    pub protocol: String,
    pub address: SocketAddr,
    pub fail_mode: String,
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenConnView {
    pub session: String,
    #[serde(flatten)]
    pub conn: OpenConn,
}

/// Removes a socket left by a killed daemon; one a live daemon still
/// answers on is refused (`AddrInUse`).
fn clear_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another warden daemon is answering on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// The accept loop of both sockets, until `shutdown` turns true: each
/// peer is placed in the loop itself, as close to its connect as the agent
/// gets (a few reads of /proc), then served in its own task.
async fn accept_loop<F, Fut>(
    listener: UnixListener,
    shared: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(UnixStream, std::io::Result<crate::approval::peer::Peer>, Arc<Context>) -> Fut
        + Copy
        + Send
        + 'static,
    Fut: std::future::Future<Output = Result<(), ControlError>> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { break },
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = approvals::peer_of(&stream, &shared);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, peer, shared).await {
                            warn!(error = %e, "{what} request failed");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "{what} accept failed"),
            }
        }
    }
}
