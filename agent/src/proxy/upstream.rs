//! Upstream connections: marked with the agent's SO_MARK so the kernel side
//! never redirects them, with a connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("creating upstream socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("setting SO_MARK {mark:#x} on the upstream socket: {source}")]
    Mark {
        mark: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

pub async fn connect(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(UpstreamError::Socket)?;
    socket2::SockRef::from(&sock)
        .set_mark(mark)
        .map_err(|source| UpstreamError::Mark { mark, source })?;
    let stream = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| UpstreamError::Timeout { addr, timeout })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
