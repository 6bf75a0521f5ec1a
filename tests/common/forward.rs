//! Harness for the forwarding tests: certificates made here (rcgen), an
//! HTTPS collector that fails on demand, fake Elasticsearch and Splunk HEC
//! endpoints (through the collector's request handler), a real rsyslog
//! receiving RFC 5425 over TLS, and checks that a collector's stream
//! holds every stored event.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A CA and a server certificate for `localhost` / `127.0.0.1`.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn make_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "warden forward test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut srv =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    srv.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = srv.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    Certs {
        ca: paths.0,
        cert: paths.1,
        key: paths.2,
        server: Arc::new(server),
    }
}

/// What the collector does with the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with the handler.
    None,
    /// Nothing listens on the port (connection refused).
    Refuse,
    /// Read the request, answer this status (with `Retry-After` seconds).
    Status(u16, Option<u64>),
    /// Read the request and never answer (until the fault changes).
    Hang,
    /// Keep the batch, then cut the connection in the middle of the answer.
    DropMidResponse,
    /// Read the batch, lose it, close the connection without an answer.
    AcceptThenLose,
    /// Wait this long, then answer with the handler.
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// Decoded (gunzipped when sent with `content-encoding: gzip`).
    pub body: Vec<u8>,
    pub gzipped: bool,
    /// The collector kept what it received (a 2xx answer, or a cut answer).
    pub kept: bool,
    /// Status answered (0: none).
    pub status: u16,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            body: body.as_bytes().to_vec(),
        }
    }
}

pub type Handler = Arc<dyn Fn(&HttpRequest) -> HttpReply + Send + Sync>;

/// An HTTPS server on 127.0.0.1 that records every request and fails on
/// demand.
pub struct Collector {
    pub port: u16,
    pub fault: Arc<Mutex<Fault>>,
    pub requests: Arc<Mutex<Vec<HttpRequest>>>,
    /// Lines (events) of the requests kept so far.
    pub lines_kept: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    pub fn start(certs: &Certs, handler: Handler) -> Self {
        Self::start_with(certs, handler, true)
    }

    /// With `keep_bodies = false` the bodies are counted (`lines_kept`)
    /// and dropped, so a benchmark's million events do not stay in memory.
    pub fn start_with(certs: &Certs, handler: Handler, keep_bodies: bool) -> Self {
        let lines_kept = Arc::new(AtomicU64::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s, cfg, lk) = (
            Arc::clone(&fault),
            Arc::clone(&requests),
            Arc::clone(&stop),
            Arc::clone(&certs.server),
            Arc::clone(&lines_kept),
        );
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !s.load(Ordering::Acquire) {
                let refuse = *f.lock().unwrap() == Fault::Refuse;
                if refuse {
                    listener = None;
                } else if listener.is_none() {
                    listener = TcpListener::bind(("127.0.0.1", port)).ok();
                }
                let Some(l) = &listener else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        let (f, r, cfg, h, lk) = (
                            Arc::clone(&f),
                            Arc::clone(&r),
                            Arc::clone(&cfg),
                            Arc::clone(&handler),
                            Arc::clone(&lk),
                        );
                        std::thread::spawn(move || {
                            serve_conn(sock, cfg, &f, &r, &h, &lk, keep_bodies)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            fault,
            requests,
            lines_kept,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.set(Fault::Refuse);
    }
}

fn serve_conn(
    sock: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    fault: &Mutex<Fault>,
    log: &Mutex<Vec<HttpRequest>>,
    handler: &Handler,
    lines_kept: &AtomicU64,
    keep_bodies: bool,
) {
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    // As real collectors do; without it every answer waits for a delayed ACK.
    sock.set_nodelay(true).ok();
    let conn = match rustls::ServerConnection::new(cfg) {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(mut req) = read_request(&mut tls, &mut buf) else {
            return;
        };
        let now = fault.lock().unwrap().clone();
        let reply = match now {
            Fault::Hang => {
                log.lock().unwrap().push(req);
                let start = Instant::now();
                while *fault.lock().unwrap() == Fault::Hang
                    && start.elapsed() < Duration::from_secs(60)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Fault::AcceptThenLose => {
                log.lock().unwrap().push(req);
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                return;
            }
            Fault::DropMidResponse => {
                req.kept = true;
                req.status = 200;
                log.lock().unwrap().push(req);
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"acc",
                );
                let _ = tls.flush();
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                return;
            }
            Fault::Status(code, ra) => {
                let extra = ra
                    .map(|s| format!("retry-after: {s}\r\n"))
                    .unwrap_or_default();
                req.status = code;
                log.lock().unwrap().push(req);
                let body = b"{\"error\":\"injected\"}";
                let head = format!(
                    "HTTP/1.1 {code} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
                    body.len()
                );
                if tls.write_all(head.as_bytes()).is_err() || tls.write_all(body).is_err() {
                    return;
                }
                let _ = tls.flush();
                continue;
            }
            Fault::Delay(d) => {
                std::thread::sleep(d);
                handler(&req)
            }
            // The server went away: open connections die too.
            Fault::Refuse => {
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                return;
            }
            Fault::None => handler(&req),
        };
        req.status = reply.status;
        req.kept = (200..300).contains(&reply.status);
        if req.kept {
            let n = req
                .body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            lines_kept.fetch_add(n as u64, Ordering::AcqRel);
        }
        if !keep_bodies {
            req.body = Vec::new();
        }
        log.lock().unwrap().push(req);
        let mut answer = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.status,
            reply.body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&reply.body);
        if tls.write_all(&answer).is_err() {
            return;
        }
        let _ = tls.flush();
    }
}

/// One HTTP/1.1 request (Content-Length or chunked body); `None` at end of
/// stream or on garbage.
fn read_request(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<HttpRequest> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        if !fill(s, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            if !fill(s, buf) {
                return None;
            }
        }
        body.extend(buf.drain(..len));
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                if !fill(s, buf) {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(s, buf) {
                    return None;
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    let gzipped = get("content-encoding").is_some_and(|v| v.contains("gzip"));
    if gzipped {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .ok()?;
        body = out;
    }
    Some(HttpRequest {
        at: Instant::now(),
        method,
        path,
        headers,
        body,
        gzipped,
        kept: false,
        status: 0,
    })
}

fn fill(s: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Every stored event: seq → exact OCSF bytes.
pub fn stored_events(db: &Path) -> Vec<(u64, Vec<u8>)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT seq, data FROM events ORDER BY seq")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn head_seq(db: &Path) -> u64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .unwrap()
}

pub fn cursor(db: &Path, name: &str) -> Option<u64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(
        "SELECT acked_seq FROM forward_cursors WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .ok()
    .flatten()
}

/// The seq in `metadata.sequence` of an OCSF event line.
pub fn seq_of(line: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
    v["metadata"]["sequence"].as_u64().unwrap()
}

/// Checks a collector's stream (`received`, in arrival order) against the
/// store: every stored event arrived at least once with its exact bytes;
/// a duplicate is the same bytes under the same uid; events first arrive
/// in seq order. Returns (events, duplicates).
pub fn check_stream(received: &[Vec<u8>], stored: &[(u64, Vec<u8>)]) -> (usize, usize) {
    let by_seq: std::collections::HashMap<u64, &Vec<u8>> =
        stored.iter().map(|(s, d)| (*s, d)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut last_first = 0u64;
    let mut dups = 0;
    for line in received {
        let seq = seq_of(line);
        let want = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("seq {seq} received but not stored"));
        assert_eq!(
            line, *want,
            "seq {seq}: forwarded bytes differ from the stored ones"
        );
        if seen.insert(seq) {
            assert!(
                seq > last_first,
                "seq {seq} first arrived after seq {last_first}: out of order"
            );
            last_first = seq;
        } else {
            dups += 1;
        }
    }
    let missing: Vec<u64> = stored
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| !seen.contains(s))
        .collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    (seen.len(), dups)
}

/// NDJSON lines of the requests the collector kept, in arrival order.
pub fn kept_lines(reqs: &[HttpRequest]) -> Vec<Vec<u8>> {
    reqs.iter()
        .filter(|r| r.kept)
        .flat_map(|r| {
            r.body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Wait up to `secs` for `f`; panics with `what` (and `ctx()`) otherwise.
pub fn wait_until(secs: u64, what: &str, ctx: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real rsyslogd receiving RFC 5425 (octet counting over TLS) on
/// 127.0.0.1, writing each message raw to `raw` and as rsyslog parsed it
/// (`app|msgid|structured data|msg`) to `fields`.
pub struct Rsyslog {
    child: Child,
    pub port: u16,
    pub raw: PathBuf,
    pub fields: PathBuf,
}

pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

impl Rsyslog {
    pub fn start(dir: &Path, certs: &Certs) -> Self {
        Self::start_with(dir, certs, true)
    }

    /// With `keep = false` messages are received and parsed, then written
    /// to /dev/null (benchmarks).
    pub fn start_with(dir: &Path, certs: &Certs, keep: bool) -> Self {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "rsyslog is not installed (cargo xtask setup installs rsyslog-gnutls)"
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let port = super::free_port("127.0.0.1");
        let (raw, fields) = if keep {
            (dir.join("raw.log"), dir.join("fields.log"))
        } else {
            (PathBuf::from("/dev/null"), PathBuf::from("/dev/null"))
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="256k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="fields" type="string" string="%app-name%|%msgid%|%structured-data%|%msg%\n")
action(type="omfile" file="{raw}" template="raw")
action(type="omfile" file="{fields}" template="fields")
"#,
                work = dir.join("work").display(),
                ca = certs.ca.display(),
                cert = certs.cert.display(),
                key = certs.key.display(),
                raw = raw.display(),
                fields = fields.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("rsyslogd.out")).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Self {
            child,
            port,
            raw,
            fields,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(dir.join("rsyslogd.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    pub fn raw_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.raw)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn field_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.fields)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
