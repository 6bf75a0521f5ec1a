//! The byte relay for `protocol = "tcp"`: both directions at once; half-close
//! passed through (EOF on one side shuts down writing on the other); byte
//! counts kept even when a side fails.
//!
//! Each direction is relayed one of two ways:
//! * in the kernel ([`crate::ebpf::relay`]): once both sockets are in the
//!   relay's sockhash maps, the `sk_skb` verdict program moves a socket's
//!   received bytes to the other socket's send side; the agent only waits
//!   for the source's EOF, waits until the destination's peer acknowledged
//!   every byte the source received, then shuts down the destination's
//!   write side. Byte counts come from the kernel (`TCP_INFO`).
//! * with splice(2) through a pipe (payload bytes never enter userspace
//!   either, but each chunk costs two system calls and a wake-up), when the
//!   in-kernel relay is not attached or the kernel did not accept the source
//!   socket (it was no longer established: its peer had already closed).
//!   Bounded by the pipe size; pipes are created on a direction's first
//!   data, so idle connections hold none.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::ebpf::relay::{Entered, KernelRelay, tcp_counters};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayCounts {
    /// Client → upstream.
    pub up: u64,
    /// Upstream → client.
    pub down: u64,
    /// First error that ended the relay, if it did not end by both sides closing.
    pub error: Option<String>,
    /// The directions the kernel relayed.
    pub kernel: Entered,
}

/// Relays until both sides closed or one failed; `kernel`: the in-kernel
/// relay, when attached.
pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    pipe_size: usize,
    kernel: Option<&KernelRelay>,
) -> RelayCounts {
    // What each destination's peer had acknowledged before any relayed
    // byte (the SYN, for the upstream socket the agent connected): the
    // baseline of the drain check.
    let acked_before = |s: &TcpStream| tcp_counters(s).map(|c| c.acked).unwrap_or(0);
    let (client_acked, upstream_acked) = (acked_before(&client), acked_before(&upstream));
    let entered = match kernel.map(|k| k.enter(client.as_fd(), upstream.as_fd())) {
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "in-kernel relay refused the connection; relaying with splice(2)");
            Entered::default()
        }
        None => Entered::default(),
    };
    let mut up = 0u64;
    let mut down = 0u64;
    let mut error = None;
    let (mut up_eof, mut down_eof) = (false, false);
    {
        let up_fut = direction(
            (&client, &upstream),
            pipe_size,
            entered.up.then_some(upstream_acked),
            &mut up,
            &mut up_eof,
        );
        let down_fut = direction(
            (&upstream, &client),
            pipe_size,
            entered.down.then_some(client_acked),
            &mut down,
            &mut down_eof,
        );
        tokio::pin!(up_fut, down_fut);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                r = &mut up_fut, if !up_done => {
                    up_done = true;
                    if let Err(e) = r { error = Some(format!("client to upstream: {e}")); break; }
                }
                r = &mut down_fut, if !down_done => {
                    down_done = true;
                    if let Err(e) = r { error = Some(format!("upstream to client: {e}")); break; }
                }
            }
        }
    }
    // Directions relayed in the kernel: what the source received, less the
    // FIN when it came (counted whether or not the relay ended cleanly).
    if entered.up {
        up = kernel_count(&client, up_eof);
    }
    if entered.down {
        down = kernel_count(&upstream, down_eof);
    }
    RelayCounts {
        up,
        down,
        error,
        kernel: entered,
    }
}

/// One direction `(src, dst)`: in the kernel when `kernel_from` is the
/// acknowledged count of `dst` before the relay, else with splice.
async fn direction(
    (src, dst): (&TcpStream, &TcpStream),
    pipe_size: usize,
    kernel_from: Option<u64>,
    count: &mut u64,
    eof: &mut bool,
) -> io::Result<()> {
    match kernel_from {
        Some(acked_before) => kernel_direction(src, dst, acked_before, eof).await,
        None => pump(src, dst, pipe_size, count).await,
    }
}

/// Data bytes `src` received: its in-order sequence space less the FIN.
fn kernel_count(src: &TcpStream, fin: bool) -> u64 {
    tcp_counters(src)
        .map(|c| c.received.saturating_sub(u64::from(fin)))
        .unwrap_or(0)
}

/// A direction the kernel relays: waits for `src`'s EOF, then for every byte
/// `src` received to be acknowledged by `dst`'s peer (so none is still in
/// the kernel's redirect queue, where a shutdown would lose it), then shuts
/// `dst` down for writing (half-close passed through).
async fn kernel_direction(
    src: &TcpStream,
    dst: &TcpStream,
    acked_before: u64,
    eof: &mut bool,
) -> io::Result<()> {
    let mut probe = [0u8; 1];
    loop {
        src.readable().await?;
        // PEEK: a byte seen here would be one the verdict program left in
        // the socket; taking it would lose it.
        match src.try_io(Interest::READABLE, || {
            recv(
                src.as_raw_fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)
        }) {
            Ok(0) => break,
            Ok(_) => {
                return Err(io::Error::other(
                    "bytes of an in-kernel relayed connection reached userspace",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    *eof = true;
    let want = acked_before + tcp_counters(src)?.received.saturating_sub(1);
    let mut pause = Duration::from_millis(1);
    loop {
        let d = tcp_counters(dst)?;
        if d.acked >= want {
            break;
        }
        // Established, or the destination's peer half-closed (CLOSE_WAIT):
        // the bytes can still go out; otherwise they never will.
        if !matches!(d.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "the destination closed with {} of {want} relayed bytes delivered",
                    d.acked
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    socket2::SockRef::from(dst).shutdown(Shutdown::Write)
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

const SPLICE_FLAGS: SpliceFFlags =
    SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

fn new_pipe(want: usize) -> io::Result<Pipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer splice calls per byte; the kernel may cap the
    // size (fs.pipe-max-size), in which case the default stays.
    let size = fcntl(&write, FcntlArg::F_SETPIPE_SZ(want as i32))
        .map(|s| s as usize)
        .unwrap_or(64 * 1024);
    Ok(Pipe { read, write, size })
}

/// One direction: `src` → pipe → `dst` until `src` reaches EOF (then `dst`'s
/// write side is shut down) or an error.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipe_size: usize,
    count: &mut u64,
) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    loop {
        src.readable().await?;
        let p = match &mut pipe {
            Some(p) => p,
            None => pipe.insert(new_pipe(pipe_size)?),
        };
        let n = match src.try_io(Interest::READABLE, || {
            splice(src, None, &p.write, None, p.size, SPLICE_FLAGS).map_err(io::Error::from)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // Half-close: tell the other side we are done sending.
            return socket2::SockRef::from(dst).shutdown(Shutdown::Write);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&p.read, None, dst, None, left, SPLICE_FLAGS).map_err(io::Error::from)
            }) {
                Ok(m) => {
                    left -= m;
                    *count += m as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        // client_app <-> (client_side | relay | upstream_side) <-> server_app
        let (mut client_app, client_side) = pair().await;
        let (upstream_side, mut server_app) = pair().await;
        let relay_task = tokio::spawn(relay(client_side, upstream_side, 4096, None));

        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        client_app.write_all(&payload).await.unwrap();
        client_app.shutdown().await.unwrap(); // half-close from the client

        let mut got = Vec::new();
        server_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload, "server saw EOF after all client bytes");
        // The other direction still works after the client's half-close.
        server_app
            .write_all(b"reply after half-close")
            .await
            .unwrap();
        server_app.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client_app.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after half-close");

        let counts = relay_task.await.unwrap();
        assert_eq!(counts.up, payload.len() as u64);
        assert_eq!(counts.down, 22);
        assert_eq!(counts.error, None);
    }
}
