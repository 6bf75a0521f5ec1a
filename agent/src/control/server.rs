//! Daemon side of the control socket: mode 0600, and every peer's uid is
//! checked with SO_PEERCRED (only root may talk to it). A root process
//! that is itself enrolled (in or below an enrolled cgroup or unit, or by
//! one of its uids), or that could not be placed, may only read the status
//! (and decide approvals under their own rules): it must not change
//! enrollments, reload the configuration or stop the agent that enforces
//! on it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Context;
use super::{ControlError, OpenConnView, Request, Response, StatusReport, TargetStatus};
use crate::approval::peer::{Peer, Place};

/// Largest request accepted (a request is a few hundred bytes).
pub const MAX_REQUEST: u64 = 64 * 1024;
/// A client that sends no complete request within this time is dropped.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A stale socket from a killed daemon; a live daemon would still answer.
    super::clear_stale_socket(path).map_err(io)?;
    // Bind with a restrictive umask so the socket is never briefly open to others.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, shared: Arc<Context>, shutdown: watch::Receiver<bool>) {
    super::accept_loop(
        listener,
        shared,
        shutdown,
        "control",
        |stream, peer, shared| async move { handle(stream, peer, &shared).await },
    )
    .await
}

async fn handle(
    stream: UnixStream,
    peer: std::io::Result<Peer>,
    shared: &Context,
) -> Result<(), ControlError> {
    let socket = shared.live().config.agent.control_socket.clone();
    let io = |source| ControlError::Io {
        path: socket.clone(),
        source,
    };
    let cred = stream.peer_cred().map_err(io)?;
    let peer = peer.map_err(io)?;
    let (r, mut w) = stream.into_split();
    // Read the request first, from every peer (bounded in size and time), so
    // a refused client gets its answer instead of a broken pipe.
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(read) => {
            read.map_err(io)?;
        }
        Err(_) => return Ok(()),
    }
    let response = if cred.uid() != 0 {
        warn!(peer.uid = cred.uid(), peer.pid = ?cred.pid(), "control request from non-root peer refused");
        Response::Error {
            message: "permission denied: the control socket is for root only".into(),
        }
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) if req.is_approval() => {
                super::approvals::dispatch(req, &shared.approvals, &peer).await
            }
            Ok(req) if let Some(why) = enrolled_refusal(&peer, &req) => {
                warn!(peer.pid = ?cred.pid(), error = %why, "control request from an enrolled peer refused");
                Response::Error {
                    message: format!("permission denied: {why}"),
                }
            }
            Ok(Request::Reload) => reload(shared, cred.pid()).await,
            Ok(req) => dispatch(req, shared, cred.pid()),
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
        }
    };
    let mut bytes =
        serde_json::to_vec(&response).map_err(|e| ControlError::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    w.write_all(&bytes).await.map_err(io)?;
    w.shutdown().await.map_err(io)
}

/// Why `peer` may not make `req`: anything but the status from a process
/// enrolled for an account, or one that could not be placed.
fn enrolled_refusal(peer: &Peer, req: &Request) -> Option<String> {
    if matches!(req, Request::Status) {
        return None;
    }
    match &peer.place {
        Place::Known {
            cgroups, accounts, ..
        } if !accounts.is_empty() => Some(format!(
            "the requesting process (in cgroup {}) is enrolled for account {}; an enrolled process cannot change enrollments, reload or stop Warden",
            cgroups.join(", "),
            accounts.join(", ")
        )),
        Place::Known { .. } => None,
        Place::Unknown { why } => Some(format!(
            "where the requesting process runs is unknown ({why})"
        )),
    }
}

fn dispatch(req: Request, shared: &Context, peer_pid: Option<i32>) -> Response {
    match req {
        Request::Status => Response::Status(Box::new(status(shared))),
        Request::Enroll { account, selector } => {
            let r = shared.enrolled.lock().enroll(&account, selector.clone());
            match r
                .map_err(|e| e.to_string())
                .and_then(|()| shared.enrolled.sync().map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    info!(account = %account, selector = %selector, peer.pid = ?peer_pid, "enrolled");
                    Response::Done {
                        message: format!("enrolled {selector} as account {account}"),
                    }
                }
                Err(message) => Response::Error { message },
            }
        }
        Request::Unenroll { account, selector } => {
            let r = shared.enrolled.lock().unenroll(&account, &selector);
            match r
                .map_err(|e| e.to_string())
                .and_then(|()| shared.enrolled.sync().map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    info!(account = %account, selector = %selector, peer.pid = ?peer_pid, "unenrolled");
                    Response::Done {
                        message: format!("unenrolled {selector} from account {account}"),
                    }
                }
                Err(message) => Response::Error { message },
            }
        }
        Request::ApprovalsList
        | Request::ApprovalsShow { .. }
        | Request::ApprovalsDecide { .. }
        | Request::ApprovalsRevoke { .. } => Response::Error {
            message: "approval requests are served separately".into(),
        },
        Request::Reload => Response::Error {
            message: "reload requests are served separately".into(),
        },
        Request::Shutdown { detach } => {
            info!(detach, peer.pid = ?peer_pid, "shutdown requested");
            shared.stop.request(detach);
            Response::Done {
                message: if detach {
                    "stopping; programs will be detached and pins removed".into()
                } else {
                    "stopping".into()
                },
            }
        }
    }
}

/// `warden reload`: every problem of a refused reload goes back to the CLI.
async fn reload(shared: &Context, peer_pid: Option<i32>) -> Response {
    let trigger = crate::reload::Trigger::Control { pid: peer_pid };
    match shared.reloader.reload(trigger).await {
        Ok(r) => {
            let mut message = format!(
                "reloaded {}: sha256 {} (was {})",
                shared.live().config.source.display(),
                r.sha256,
                r.previous_sha256
            );
            for w in &r.warnings {
                message.push_str("\nwarning: ");
                message.push_str(w);
            }
            Response::Done { message }
        }
        Err(e) => Response::Error {
            message: format!(
                "reload refused; the running configuration is unchanged:\n{}",
                crate::reload::error_lines(&e).join("\n")
            ),
        },
    }
}

fn status(shared: &Context) -> StatusReport {
    let live = shared.live();
    let cfg = &live.config;
    let (reloads, last_reload_failure) = shared.reloader.state();
    StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started_ms: shared.started_ms,
        config: cfg.source.clone(),
        config_sha256: cfg.sha256.clone(),
        config_loaded_ms: live.loaded_ms,
        config_action: live.action.as_str().to_owned(),
        config_reloads: reloads,
        last_reload_failure,
        listen: shared.proxy.listen.clone(),
        pin_dir: shared.proxy.datapath.pin_dir().to_path_buf(),
        attach_cgroup: shared.proxy.datapath.attach_dir().to_path_buf(),
        programs: shared.proxy.datapath.attached().to_vec(),
        fail_mode: cfg.agent.fail_mode.as_str().to_owned(),
        targets: cfg
            .targets
            .iter()
            .map(|t| TargetStatus {
                name: t.name.clone(),
                protocol: t.protocol.as_str().to_owned(),
                address: t.address,
                fail_mode: cfg.fail_mode_of(t).as_str().to_owned(),
                accounts: cfg
                    .accounts
                    .iter()
                    .filter(|a| a.targets.contains(&t.name))
                    .map(|a| a.name.clone())
                    .collect(),
            })
            .collect(),
        enrollments: shared.enrolled.lock().list(),
        open_connections: shared
            .proxy
            .conns
            .open()
            .into_iter()
            .map(|(s, conn)| OpenConnView {
                session: s.to_string(),
                conn,
            })
            .collect(),
        connections_relayed: shared.proxy.conns.metrics.accepted.load(Ordering::Relaxed),
        connections_closed: shared.proxy.conns.metrics.closed.load(Ordering::Relaxed),
        connections_refused: shared.proxy.conns.metrics.refused.load(Ordering::Relaxed),
        audit_path: cfg.audit_path(),
        audit_healthy: shared.proxy.audit.is_healthy(),
        bpf_lsm: crate::ebpf::bpf_lsm_active(),
        lsm_attached: shared.proxy.datapath.lsm_attached(),
        lsm_error: shared.proxy.datapath.lsm_error().map(str::to_owned),
        tcp_relay: if shared.proxy.datapath.kernel_relay().is_some()
            && cfg.agent.tcp_relay == crate::config::TcpRelay::Sockmap
        {
            "sockmap"
        } else {
            "splice"
        }
        .to_owned(),
        tcp_relay_error: if cfg.agent.tcp_relay == crate::config::TcpRelay::Splice {
            Some("agent.tcp_relay = \"splice\" in the configuration".to_owned())
        } else {
            shared.proxy.datapath.relay_error().map(str::to_owned)
        },
        connections_kernel_relayed: shared
            .proxy
            .conns
            .metrics
            .kernel_relayed
            .load(Ordering::Relaxed),
        forwarders: shared
            .forward
            .status(Some(shared.proxy.audit.stats().last_seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(place: Place) -> Peer {
        Peer {
            uid: 0,
            gid: 0,
            pid: Some(1),
            gids: vec![0],
            uids: vec![0],
            place,
        }
    }

    #[test]
    fn an_enrolled_or_unplaced_root_peer_only_reads_the_status() {
        let enrolled = peer(Place::Known {
            cgroups: vec!["/app.slice/shell".into()],
            cgroup_ids: vec![2, 1],
            accounts: vec!["app".into()],
        });
        let unplaced = peer(Place::Unknown {
            why: "the kernel reported no pid".into(),
        });
        let admin = peer(Place::Known {
            cgroups: vec!["/user.slice/session-1.scope".into()],
            cgroup_ids: vec![4, 3],
            accounts: vec![],
        });
        let unenroll = Request::Unenroll {
            account: "app".into(),
            selector: crate::identity::enrollment::Selector::Cgroup("/app.slice".into()),
        };
        for req in [
            Request::Reload,
            Request::Shutdown { detach: true },
            unenroll.clone(),
        ] {
            let why = enrolled_refusal(&enrolled, &req).unwrap();
            assert!(why.contains("enrolled for account app"), "{why}");
            assert!(enrolled_refusal(&unplaced, &req).is_some());
            assert_eq!(enrolled_refusal(&admin, &req), None);
        }
        assert_eq!(enrolled_refusal(&enrolled, &Request::Status), None);
        assert_eq!(enrolled_refusal(&unplaced, &Request::Status), None);
    }
}
