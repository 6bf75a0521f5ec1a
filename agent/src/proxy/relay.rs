//! The byte relay for `protocol = "tcp"`: both directions at once, half-close
//! passed through (EOF on one side shuts down writing on the other), bounded
//! buffers, byte counts kept even when a side fails.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

pub async fn relay(mut client: TcpStream, mut upstream: TcpStream, buf_size: usize) -> RelayCounts {
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut up = 0u64;
    let mut down = 0u64;
    let mut error = None;
    {
        let up_fut = pump(&mut cr, &mut uw, buf_size, &mut up);
        let down_fut = pump(&mut ur, &mut cw, buf_size, &mut down);
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

async fn pump<R, W>(r: &mut R, w: &mut W, buf_size: usize, count: &mut u64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buf_size];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Half-close: tell the other side we are done sending.
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
