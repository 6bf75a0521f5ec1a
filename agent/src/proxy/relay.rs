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
//!   write side. Byte counts come from the kernel (`TCP_INFO`). When the
//!   relay ends with an error instead, no socket is closed (which would
//!   free the bytes the kernel still queues for it) before the
//!   destination's peer acknowledged every byte its source handed over, as
//!   long as it can and keeps acknowledging; the count is then what was
//!   delivered.
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
    let mut up = Progress::default();
    let mut down = Progress::default();
    let mut error = None;
    {
        let up_fut = direction(
            (&client, &upstream),
            pipe_size,
            entered.up.then_some(upstream_acked),
            &mut up,
        );
        let down_fut = direction(
            (&upstream, &client),
            pipe_size,
            entered.down.then_some(client_acked),
            &mut down,
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
    // A kernel direction that did not end cleanly (the relay ended with an
    // error): closing a socket frees the bytes still queued for it in the
    // kernel relay, so first wait until the destination's peer acknowledged
    // every data byte the source handed over (or they can no longer reach
    // it); the count is then what was delivered. A direction that ended
    // cleanly has already waited, and counted.
    if entered.up && !up.done {
        up.count = drain(&client, &upstream, upstream_acked, up.fin).await;
    }
    if entered.down && !down.done {
        down.count = drain(&upstream, &client, client_acked, down.fin).await;
    }
    RelayCounts {
        up: up.count,
        down: down.count,
        error,
        kernel: entered,
    }
}

/// Where one direction stands.
#[derive(Default)]
struct Progress {
    /// Bytes relayed so far (a kernel direction: set when it ends).
    count: u64,
    /// Whether the source's FIN arrived, once a read of the source told
    /// (EOF, or an error such as a reset).
    fin: Option<bool>,
    /// Ended cleanly: every byte delivered, half-close passed on.
    done: bool,
}

/// One direction `(src, dst)`: in the kernel when `kernel_from` is the
/// acknowledged count of `dst` before the relay, else with splice.
async fn direction(
    (src, dst): (&TcpStream, &TcpStream),
    pipe_size: usize,
    kernel_from: Option<u64>,
    progress: &mut Progress,
) -> io::Result<()> {
    match kernel_from {
        Some(acked_before) => kernel_direction(src, dst, acked_before, progress).await,
        None => pump(src, dst, pipe_size, &mut progress.count).await,
    }?;
    progress.done = true;
    Ok(())
}

/// True when a peek at `src` sees EOF: its peer's FIN arrived and nothing
/// is left to read.
fn peek_eof(src: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        recv(
            src.as_raw_fd(),
            &mut probe,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ),
        Ok(0)
    )
}

/// How long [`drain`] waits without the destination's peer acknowledging
/// anything before it gives up (a peer that stopped reading).
const DRAIN_STALL: Duration = Duration::from_secs(10);

/// A kernel direction that did not end cleanly: waits until `dst`'s peer
/// acknowledged every data byte `src` had received when the relay ended
/// (`fin`: whether `src`'s FIN is known to have arrived; unknown, a peek
/// tells), while `dst` can still send and its peer keeps acknowledging.
/// Returns the data bytes delivered (`dst` sends nothing else: its write
/// side is only shut down when its direction ends cleanly).
async fn drain(src: &TcpStream, dst: &TcpStream, acked_before: u64, fin: Option<bool>) -> u64 {
    let Some(target) = handed_over(src, fin) else {
        return 0;
    };
    let mut pause = Duration::from_millis(1);
    let mut last = None;
    let mut since = tokio::time::Instant::now();
    loop {
        let (Ok(s), Ok(d)) = (tcp_counters(src), tcp_counters(dst)) else {
            return 0;
        };
        let delivered = d.acked.saturating_sub(acked_before).min(s.received);
        if delivered >= target || !can_send(d.state) {
            return delivered;
        }
        if last != Some(d.acked) {
            last = Some(d.acked);
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= DRAIN_STALL {
            tracing::warn!(
                relay.delivered = delivered,
                relay.handed = target,
                "in-kernel relay: the destination's peer stopped acknowledging; closing with bytes undelivered"
            );
            return delivered;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The data bytes `src` has received: its sequence space less its FIN
/// (`fin`, or when unknown a peek, taken between two equal readings of the
/// counter so that a FIN arriving in between is not miscounted; a source
/// still streaming bytes has no FIN yet).
fn handed_over(src: &TcpStream, fin: Option<bool>) -> Option<u64> {
    let mut before = tcp_counters(src).ok()?.received;
    for _ in 0..16 {
        let fin = fin.unwrap_or_else(|| peek_eof(src));
        let after = tcp_counters(src).ok()?.received;
        if after == before {
            return Some(before.saturating_sub(u64::from(fin)));
        }
        before = after;
    }
    Some(before)
}

/// Established, or the peer half-closed (CLOSE_WAIT): bytes queued for the
/// socket can still go out; in any other state they never will.
fn can_send(state: u8) -> bool {
    matches!(state, TCP_ESTABLISHED | TCP_CLOSE_WAIT)
}

/// A direction the kernel relays: waits for `src`'s EOF, then for every byte
/// `src` received to be acknowledged by `dst`'s peer (so none is still in
/// the kernel's redirect queue, where a shutdown would lose it), then shuts
/// `dst` down for writing (half-close passed through).
async fn kernel_direction(
    src: &TcpStream,
    dst: &TcpStream,
    acked_before: u64,
    progress: &mut Progress,
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
            Err(e) => {
                progress.fin = Some(false);
                return Err(e);
            }
        }
    }
    progress.fin = Some(true);
    // The source's sequence space less its FIN: the data it handed over.
    let data = tcp_counters(src)?.received.saturating_sub(1);
    let want = acked_before + data;
    let mut pause = Duration::from_millis(1);
    loop {
        let d = tcp_counters(dst)?;
        if d.acked >= want {
            break;
        }
        if !can_send(d.state) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "the destination closed with {} of {data} relayed bytes delivered",
                    d.acked.saturating_sub(acked_before)
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    progress.count = data;
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

    /// The in-kernel relay (verdict program on fresh maps) needs root.
    fn kernel_relay() -> Option<crate::ebpf::relay::testing::TestRelay> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loading the relay's eBPF program needs root");
            return None;
        }
        Some(crate::ebpf::relay::testing::load())
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Issue 17: a half-close relayed in the kernel (the client's bare FIN)
    /// leaves the other socket healthy. A redirected bare FIN made the
    /// kernel set EPIPE on the upstream socket, which the agent's read of
    /// that socket (the other direction, still running) then hit at a
    /// random moment, ending the relay and dropping the bytes still queued.
    #[tokio::test]
    async fn in_kernel_half_close_leaves_the_other_socket_healthy() {
        let Some(k) = kernel_relay() else { return };
        let (mut client_app, client_side) = pair().await;
        let (upstream_side, mut server_app) = pair().await;
        // A second handle on the agent's upstream socket, to read its error.
        let probe = socket2::SockRef::from(&upstream_side).try_clone().unwrap();
        let relaying = relay(client_side, upstream_side, 4096, Some(&k.relay));
        let reply = pattern(300_000);
        let apps = async {
            client_app.write_all(b"request").await.unwrap();
            client_app.shutdown().await.unwrap();
            let mut got = Vec::new();
            server_app.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            // The kernel handles the FIN after the bytes before it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let err = probe.take_error().unwrap();
            assert!(err.is_none(), "upstream socket error: {err:?}");
            server_app.write_all(&reply).await.unwrap();
            server_app.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_app.read_to_end(&mut back).await.unwrap();
            assert!(back == reply, "{} of {} bytes", back.len(), reply.len());
        };
        let (counts, ()) = tokio::join!(relaying, apps);
        assert_eq!(counts.error, None);
        assert_eq!(
            counts.kernel,
            Entered {
                up: true,
                down: true
            }
        );
        assert_eq!((counts.up, counts.down), (7, reply.len() as u64));
    }

    /// Issue 17: when the relay ends with an error (here the server resets
    /// the connection) the bytes the kernel already took from the source
    /// still reach the destination: the relay does not close the client's
    /// socket (which would free its queue) before they are acknowledged.
    #[tokio::test]
    async fn in_kernel_bytes_queued_at_an_error_are_delivered_before_close() {
        let Some(k) = kernel_relay() else { return };
        let (mut client_app, client_side) = pair().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A large receive buffer on the agent's upstream socket: the server's
        // bytes are all taken (and acknowledged) while the client reads
        // nothing, so most of them wait in the kernel relay's queue.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4 << 20).unwrap();
        s.connect(&l.local_addr().unwrap().into()).unwrap();
        s.set_nonblocking(true).unwrap();
        let upstream_side = TcpStream::from_std(s.into()).unwrap();
        let (server_app, _) = l.accept().await.unwrap();
        // Small buffers on the client's path: what the client does not read
        // stays in the relay's queue for the client's socket.
        socket2::SockRef::from(&client_side)
            .set_send_buffer_size(64 << 10)
            .unwrap();
        socket2::SockRef::from(&client_app)
            .set_recv_buffer_size(64 << 10)
            .unwrap();
        let relaying = relay(client_side, upstream_side, 4096, Some(&k.relay));
        let payload = pattern(2 << 20);
        let apps = async {
            let mut server_app = server_app;
            server_app.write_all(&payload).await.unwrap();
            let start = std::time::Instant::now();
            let mut acked = 0;
            while start.elapsed() < Duration::from_secs(5) {
                acked = tcp_counters(&server_app).unwrap().acked;
                if acked >= payload.len() as u64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Reset: what the server sent and was not acknowledged is gone.
            socket2::SockRef::from(&server_app)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(server_app);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = Vec::new();
            client_app.read_to_end(&mut got).await.unwrap();
            (acked, got)
        };
        let (counts, (acked, got)) = tokio::join!(relaying, apps);
        // (The setup: every byte was taken by the agent's upstream socket.)
        assert_eq!(acked, payload.len() as u64);
        assert!(counts.error.is_some(), "{counts:?}");
        assert!(
            got == payload,
            "the client got {} of the {acked} bytes the agent acknowledged",
            got.len()
        );
        assert_eq!(counts.down, acked);
    }
}
