//! The `/metrics` endpoint: a minimal HTTP/1.1 server for Prometheus
//! scrapes. One request per connection, a bounded request head, a deadline
//! for the whole head and one for the answer, and a cap on concurrent
//! scrapes, so a local peer cannot tie the agent up through it (nor, by
//! trickling bytes into every slot, keep the scraper out). Only
//! `GET`/`HEAD /metrics` is answered with data, and, with a token
//! (`[metrics] token_file`), only to a request carrying it as a bearer
//! credential: a loopback listener is open to every local user, enrolled
//! workloads included (401 otherwise).

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
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
    #[error("reading the metrics token {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the metrics token {path} {why}")]
    TokenUnfit { path: PathBuf, why: &'static str },
}

/// The bearer token scrapes must send, as its SHA-256 (compared digest to
/// digest, so the comparison's time says nothing about the token).
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// Reads `path`: one line, not empty, not readable by every user.
    pub fn read(path: &Path) -> Result<Token, MetricsError> {
        let err = |source| MetricsError::Token {
            path: path.to_owned(),
            source,
        };
        let unfit = |why| MetricsError::TokenUnfit {
            path: path.to_owned(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        if meta.mode() & 0o004 != 0 {
            return Err(unfit("is readable by every user (chmod o-r)"));
        }
        let text = std::fs::read_to_string(path).map_err(err)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(unfit("is empty"));
        }
        Ok(Token::of(token))
    }

    fn of(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `Authorization` values carry this token as a bearer credential.
    fn admits<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some(v) = values.next() else { return false };
        if values.next().is_some() {
            return false;
        }
        let Ok(v) = std::str::from_utf8(v) else {
            return false;
        };
        let Some((scheme, cred)) = v.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && Token::of(cred.trim()).0 == self.0
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves scrapes until `shutdown` turns true.
/// Serves scrapes until `shutdown` turns true; with `token`, only to
/// requests that carry it.
pub async fn serve(
    listener: TcpListener,
    collect: Collector,
    token: Option<Token>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, collect, token.as_ref()).await {
                debug!(metrics.peer = %peer, error = %e, "metrics scrape ended early");
            }
            drop(permit);
        });
    }
}

/// What the request line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Metrics {
        head_only: bool,
    },
    /// `/metrics` without the token.
    Unauthorized,
    NotFound,
    BadMethod,
    Bad,
}

fn parse(head: &[u8], token: Option<&Token>) -> Option<Ask> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Ask::Bad),
    }
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let admitted = || {
        token.is_none_or(|t| {
            t.admits(
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value),
            )
        })
    };
    Some(match req.method {
        Some("GET" | "HEAD") if path == "/metrics" && !admitted() => Ask::Unauthorized,
        Some(m @ ("GET" | "HEAD")) if path == "/metrics" => Ask::Metrics {
            head_only: m == "HEAD",
        },
        Some("GET" | "HEAD") => Ask::NotFound,
        _ => Ask::BadMethod,
    })
}

async fn answer(
    mut stream: TcpStream,
    collect: Collector,
    token: Option<&Token>,
) -> std::io::Result<()> {
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
        if let Some(ask) = parse(&head, token) {
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
        Ask::Unauthorized => (
            "401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"warden\"",
            "a bearer token is required\n".to_owned(),
            false,
        ),
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
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Some(Ask::Metrics { head_only: false })
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n", None),
            Some(Ask::Metrics { head_only: true })
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n", None), Some(Ask::NotFound));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n", None),
            Some(Ask::BadMethod)
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\n", None), None);
        assert_eq!(parse(b"\x00\x01 junk\r\n\r\n", None), Some(Ask::Bad));
    }

    /// An endpoint serving one test gauge: its address, its shutdown
    /// switch and its task.
    async fn start() -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        start_with(None).await
    }

    async fn start_with(
        token: Option<Token>,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let collect: Collector =
            Arc::new(|| vec![Reading::gauge("warden_test_gauge", "A test gauge.", 7.0)]);
        (addr, tx, tokio::spawn(serve(listener, collect, token, rx)))
    }

    #[test]
    fn with_a_token_only_a_request_carrying_it_is_answered() {
        let t = Token::of("s3cret");
        let ask = |h: &str| {
            parse(
                format!("GET /metrics HTTP/1.1\r\n{h}\r\n").as_bytes(),
                Some(&t),
            )
        };
        let ok = Some(Ask::Metrics { head_only: false });
        assert_eq!(ask("Authorization: Bearer s3cret\r\n"), ok);
        assert_eq!(ask("authorization: bearer  s3cret \r\n"), ok);
        for h in [
            "",
            "Authorization: Bearer s3cre\r\n",
            "Authorization: Bearer s3cret2\r\n",
            "Authorization: Basic s3cret\r\n",
            "Authorization: s3cret\r\n",
            "Authorization: Bearer s3cret\r\nAuthorization: Bearer x\r\n",
            "X-Authorization: Bearer s3cret\r\n",
        ] {
            assert_eq!(ask(h), Some(Ask::Unauthorized), "{h:?}");
        }
    }

    #[test]
    fn a_token_file_readable_by_everyone_or_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let mode = |m| {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m))
                .unwrap()
        };
        mode(0o644);
        assert!(matches!(
            Token::read(&path),
            Err(MetricsError::TokenUnfit { .. })
        ));
        mode(0o640);
        assert_eq!(Token::read(&path).unwrap().0, Token::of("abc").0);
        std::fs::write(&path, " \n").unwrap();
        assert!(Token::read(&path).is_err());
    }

    #[tokio::test]
    async fn a_scrape_without_the_token_gets_401() {
        let (addr, tx, server) = start_with(Some(Token::of("tok"))).await;
        for (head, want) in [
            ("", "HTTP/1.1 401 "),
            ("Authorization: Bearer tok\r\n", "HTTP/1.1 200 "),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET /metrics HTTP/1.1\r\n{head}\r\n").as_bytes())
                .await
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            assert!(text.starts_with(want), "{text}");
            assert_eq!(text.contains("warden_test_gauge"), want.contains("200"));
        }
        tx.send(true).unwrap();
        server.await.unwrap();
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
