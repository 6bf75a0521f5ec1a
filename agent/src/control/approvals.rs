//! The approvals socket (`[approvals] socket`, mode 0666): serves only the
//! approval requests, to any local peer, and hands each peer's facts,
//! learnt as soon as the connection is accepted ([`peer_of`]: SO_PEERCRED
//! credentials, groups, cgroup and the accounts it is enrolled for), to the
//! approval service, which decides whether that peer may list, decide or
//! revoke. Listing and showing need an approver or root; deciding and
//! revoking need an approver who is not of the requesting account (by uid
//! or by where it runs).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::info;

use super::Context;
use super::{ControlError, Request, Response};
use crate::approval::Approvals;
use crate::approval::peer::Peer;

pub const MAX_REQUEST: u64 = 64 * 1024;
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the approvals socket, replacing a stale one, mode 0666 (the
/// directory must let approvers through: it is made 0755 when created).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    super::clear_stale_socket(path).map_err(io)?;
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, shared: Arc<Context>, shutdown: watch::Receiver<bool>) {
    super::accept_loop(
        listener,
        shared,
        shutdown,
        "approvals",
        |stream, peer, shared| async move { handle(stream, peer, &shared).await },
    )
    .await
}

/// The peer of a just-accepted connection to either socket, with the
/// accounts its cgroups (or their ancestors) or its uids are enrolled for.
pub fn peer_of(stream: &UnixStream, shared: &Context) -> std::io::Result<Peer> {
    Peer::of_stream(stream, shared.enrolled.cgroup_mount(), |l| {
        shared
            .enrolled
            .lock()
            .accounts_of(&l.cgroup_ids, &l.cgroups, &l.uids)
    })
}

async fn handle(
    stream: UnixStream,
    peer: std::io::Result<Peer>,
    shared: &Context,
) -> Result<(), ControlError> {
    let approvals: &Approvals = &shared.approvals;
    let path = approvals.config().socket.clone().unwrap_or_default();
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let peer = peer.map_err(io)?;
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(read) => {
            read.map_err(io)?;
        }
        Err(_) => return Ok(()),
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) if req.is_approval() => dispatch(req, approvals, &peer).await,
        Ok(_) => Response::Error {
            message: "only approval requests are served on this socket".into(),
        },
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
    };
    let mut bytes =
        serde_json::to_vec(&response).map_err(|e| ControlError::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    w.write_all(&bytes).await.map_err(io)?;
    w.shutdown().await.map_err(io)
}

/// One approval request from `peer` (also used by the root control socket).
pub async fn dispatch(req: Request, approvals: &Approvals, peer: &Peer) -> Response {
    let may_read = peer.uid == 0 || peer.is_approver(&approvals.config().approvers);
    match req {
        Request::ApprovalsList | Request::ApprovalsShow { .. } if !may_read => Response::Error {
            message: format!(
                "permission denied: uid {} is not an approver (see [approvals] approvers)",
                peer.uid
            ),
        },
        Request::ApprovalsList => Response::Approvals(Box::new(approvals.list())),
        Request::ApprovalsShow { id } => match approvals.show(&id) {
            Some(v) => Response::Approval(Box::new(v)),
            None => Response::Error {
                message: format!("no approval request {id}"),
            },
        },
        Request::ApprovalsDecide {
            id,
            decision,
            learn,
        } => {
            let approve = decision.approve;
            let grant = decision.grant_secs;
            match approvals.decide_learning(&id, peer, decision, learn).await {
                Ok(_) => {
                    info!(request = %id, approve, peer.uid = peer.uid, "approval decided");
                    let mut message = match (approve, grant) {
                        (true, Some(s)) => {
                            format!("approved {id}; the same statement is granted for {s}s")
                        }
                        (true, None) => format!("approved {id}"),
                        (false, _) => format!("denied {id}"),
                    };
                    if learn {
                        message.push_str(&match approvals.show(&id).and_then(|v| v.learned) {
                            Some(fp) => {
                                format!("; fingerprint {fp} added to the grant's allow-list")
                            }
                            None => {
                                "; its fingerprint was already in the grant's allow-list".to_owned()
                            }
                        });
                    }
                    Response::Done { message }
                }
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Request::ApprovalsRevoke { grant_id, reason } => {
            match approvals.revoke(&grant_id, peer, reason).await {
                Ok(()) => Response::Done {
                    message: format!("revoked {grant_id}"),
                },
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        _ => Response::Error {
            message: "not an approval request".into(),
        },
    }
}
