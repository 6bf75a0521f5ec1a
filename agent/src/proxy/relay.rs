//! The byte relay for `protocol = "tcp"`: both directions at once, with
//! splice(2) through a pipe so payload bytes never enter userspace; half-close
//! passed through (EOF on one side shuts down writing on the other); bounded
//! by the pipe size; byte counts kept even when a side fails. Pipes are
//! created on a direction's first data, so idle connections hold none.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayCounts {
    /// Client → upstream.
    pub up: u64,
    /// Upstream → client.
    pub down: u64,
    /// First error that ended the relay, if it did not end by both sides closing.
    pub error: Option<String>,
}

pub async fn relay(client: TcpStream, upstream: TcpStream, pipe_size: usize) -> RelayCounts {
    let mut up = 0u64;
    let mut down = 0u64;
    let mut error = None;
    {
        let up_fut = pump(&client, &upstream, pipe_size, &mut up);
        let down_fut = pump(&upstream, &client, pipe_size, &mut down);
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
    RelayCounts { up, down, error }
}

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
        let relay_task = tokio::spawn(relay(client_side, upstream_side, 4096));

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
