//! The `/metrics` endpoint: a minimal HTTP/1.1 server for Prometheus
//! scrapes. One request per connection, a bounded request head, a deadline
//! for the whole head and one for the answer, and a cap on concurrent
//! scrapes, so a local peer cannot tie the agent up through it (nor, by
//! trickling bytes into every slot, keep the scraper out). Only
//! `GET`/`HEAD /metrics` is answered with data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use super::{Reading, exposition, global};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// A scraper that has not sent a complete head this long after it
/// connected is dropped: a deadline for the whole head, not for each read,
/// or a peer trickling a byte at a time would hold a slot for hours.
#[cfg(not(test))]
const READ_TIMEOUT: Duration = Duration::from_secs(5);
#[cfg(test)]
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// A scraper that does not take the answer within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait for a slot.
const MAX_CONCURRENT: usize = 4;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads the daemon's state at scrape time (runs on a blocking thread: it
/// may walk kernel maps and stat files).
pub type Collector = Arc<dyn Fn() -> Vec<Reading> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding the metrics endpoint {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves scrapes until `shutdown` turns true.
pub async fn serve(listener: TcpListener, collect: Collector, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let collect = Arc::clone(&collect);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, collect).await {
                debug!(metrics.peer = %peer, error = %e, "metrics scrape ended early");
            }
            drop(permit);
        });
    }
}

/// What the request line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Bad,
}

fn parse(head: &[u8]) -> Option<Ask> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Ask::Bad),
    }
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    Some(match req.method {
        Some(m @ ("GET" | "HEAD")) if path == "/metrics" => Ask::Metrics {
            head_only: m == "HEAD",
        },
        Some("GET" | "HEAD") => Ask::NotFound,
        _ => Ask::BadMethod,
    })
}

async fn answer(mut stream: TcpStream, collect: Collector) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let ask = loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(ask) = parse(&head) {
            break ask;
        }
        if head.len() > MAX_HEAD {
            break Ask::Bad;
        }
    };
    let (status, body, head_only) = match ask {
        Ask::Metrics { head_only } => {
            let readings = tokio::task::spawn_blocking(move || collect())
                .await
                .unwrap_or_default();
            ("200 OK", exposition(global(), &readings), head_only)
        }
        Ask::NotFound => (
            "404 Not Found",
            "only /metrics is served\n".to_owned(),
            false,
        ),
        Ask::BadMethod => (
            "405 Method Not Allowed",
            "only GET and HEAD are served\n".to_owned(),
            false,
        ),
        Ask::Bad => ("400 Bad Request", "bad request\n".to_owned(), false),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the scraper did not take the answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_answered() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ask::Metrics { head_only: false })
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Some(Ask::Metrics { head_only: true })
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Ask::NotFound));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Ask::BadMethod)
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(parse(b"\x00\x01 junk\r\n\r\n"), Some(Ask::Bad));
    }

    /// An endpoint serving one test gauge: its address, its shutdown
    /// switch and its task.
    async fn start() -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let collect: Collector =
            Arc::new(|| vec![Reading::gauge("warden_test_gauge", "A test gauge.", 7.0)]);
        (addr, tx, tokio::spawn(serve(listener, collect, rx)))
    }

    #[tokio::test]
    async fn a_scrape_gets_the_exposition_and_a_slow_peer_is_dropped() {
        let (addr, tx, server) = start().await;

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(text.contains("\r\n\r\n# HELP "), "{text}");
        assert!(text.contains("warden_test_gauge 7\n"));

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 404 "), "{text}");

        // An endless head is cut at MAX_HEAD.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let junk = vec![b'a'; MAX_HEAD + 2048];
        let _ = s.write_all(&junk).await;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text).await;
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");

        tx.send(true).unwrap();
        server.await.unwrap();
    }

    /// A local peer that fills every slot with a head trickled a byte at a
    /// time, each byte well within the old per-read timeout, does not keep
    /// the scraper out (session 4 attack S4-M1).
    #[tokio::test]
    async fn peers_trickling_heads_into_every_slot_do_not_keep_the_scraper_out() {
        let (addr, tx, server) = start().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tricklers = Vec::new();
        for _ in 0..MAX_CONCURRENT {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let stop = Arc::clone(&stop);
            tricklers.push(tokio::spawn(async move {
                for b in b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).await.is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(READ_TIMEOUT / 5).await;
                }
            }));
        }
        tokio::time::sleep(READ_TIMEOUT / 5).await;
        let scrape = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            text
        };
        let got = tokio::time::timeout(READ_TIMEOUT * 6, scrape).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let text = got.expect("the scrape was kept out by peers trickling heads");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        for t in tricklers {
            t.await.unwrap();
        }
        tx.send(true).unwrap();
        server.await.unwrap();
    }
}
