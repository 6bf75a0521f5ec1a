//! `kind = "syslog"`: RFC 5424 messages over TLS with RFC 5425 framing
//! (also plain TCP, octet counted as RFC 6587 describes, and UDP, one
//! datagram per message, for labs).
//!
//! Each event is one message:
//! `<PRI>1 TIMESTAMP HOSTNAME warden PID audit [warden@32473 uid="…" seq="…"] MSG`
//! - PRI = facility × 8 + severity: informational (6), or warning (4) for
//!   events whose decision is not `allowed` (refusals, blocks);
//! - TIMESTAMP = the event's time (RFC 3339, UTC, milliseconds);
//! - structured data `warden@32473` (32473 is the example enterprise
//!   number of RFC 5612; the SD-ID is fixed) with the event's `uid`
//!   (`chain_id:seq`) and `seq`, so a receiver can order and de-duplicate
//!   without parsing MSG;
//! - MSG = the event in the output's format (the OCSF JSON by default),
//!   UTF-8 without a BOM. Receivers must accept messages as large as the
//!   largest event (rsyslog: `global(maxMessageSize=...)`, default 8 KiB).
//!
//! Best effort, by nature: syslog has no acknowledgment. The cursor
//! advances once the batch is written to the socket (TLS records flushed,
//! or datagrams sent); a receiver that dies with bytes in its socket buffer
//! loses them and nobody can tell. Before each batch the connection is
//! checked for a close by the peer, so a receiver restart costs at most the
//! batch in flight. For a lossless path use `https`, `splunk-hec` or
//! `elasticsearch`.

use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::{Batch, Failure, ForwardError, Sink, Stop};
use crate::config::forward::SYSLOG_FACILITIES;
use crate::config::{Forward, SyslogTransport};

/// SD-ID of Warden's structured data element.
pub const SD_ID: &str = "warden@32473";
/// Largest UDP payload (IPv4: 65535 - 8 - 20).
const MAX_DATAGRAM: usize = 65_507;

enum Conn {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// A syslog output.
pub struct SyslogSink {
    address: String,
    transport: SyslogTransport,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
    facility: u8,
    host: String,
    pid: u32,
    conn: Option<Conn>,
}

impl SyslogSink {
    /// Build the output `f` (reads its CA and client certificate files).
    /// `host` is the HOSTNAME field.
    pub fn new(f: &Forward, host: &str) -> Result<Self, ForwardError> {
        let transport = f.transport.unwrap_or(SyslogTransport::Tls);
        let address = f.address.clone().unwrap_or_default();
        let tls = match transport {
            SyslogTransport::Tls => Some(client_config(f, &address)?),
            _ => None,
        };
        let facility = SYSLOG_FACILITIES
            .iter()
            .position(|x| *x == f.facility)
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(16);
        Ok(Self {
            address,
            transport,
            tls,
            timeout: Duration::from_secs(f.timeout_secs.max(1)),
            facility,
            host: header_field(host, 255),
            pid: std::process::id(),
            conn: None,
        })
    }

    fn connect(&self) -> Result<Conn, String> {
        let addrs: Vec<_> = self
            .address
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", self.address))?
            .collect();
        if self.transport == SyslogTransport::Udp {
            let mut last = format!("{}: no address", self.address);
            for a in addrs {
                let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                match UdpSocket::bind(bind).and_then(|s| s.connect(a).map(|()| s)) {
                    Ok(s) => return Ok(Conn::Udp(s)),
                    Err(e) => last = format!("udp {a}: {e}"),
                }
            }
            return Err(last);
        }
        let mut last = format!("{}: no address", self.address);
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connect {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let io = |e: std::io::Error| format!("{}: {e}", self.address);
        tcp.set_write_timeout(Some(self.timeout)).map_err(io)?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Conn::Tcp(tcp)),
            Some((cfg, name)) => {
                let conn = rustls::ClientConnection::new(Arc::clone(cfg), name.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                // Handshake now, so certificate problems are named as such.
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| format!("TLS handshake with {}: {e}", self.address))?;
                }
                Ok(Conn::Tls(Box::new(s)))
            }
        }
    }

    /// The RFC 5424 message for one item.
    pub fn message(&self, it: &super::Item) -> Vec<u8> {
        self_message(self.facility, &self.host, self.pid, it)
    }
}

impl Sink for SyslogSink {
    fn deliver(&mut self, batch: &mut Batch, _stop: &Stop) -> Result<(), Failure> {
        let retry = |error: String| Failure::Retry { error, after: None };
        // A receiver that closed the connection since the last batch: start
        // over on a new one rather than write into the void.
        let closed = match &self.conn {
            Some(Conn::Tcp(s)) => peer_closed(s),
            Some(Conn::Tls(s)) => peer_closed(&s.sock),
            _ => false,
        };
        if closed {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().map_err(retry)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(retry("not connected".into()));
        };
        let result = match conn {
            Conn::Udp(sock) => {
                let mut r = Ok(());
                for it in &batch.items {
                    let msg = self_message(self.facility, &self.host, self.pid, it);
                    if msg.len() > MAX_DATAGRAM {
                        return Err(Failure::Park {
                            error: format!(
                                "syslog/udp: event {} is {} bytes, more than a datagram holds; \
                                 use transport = \"tls\"",
                                it.uid,
                                msg.len()
                            ),
                        });
                    }
                    if let Err(e) = sock.send(&msg) {
                        r = Err(format!("udp send: {e}"));
                        break;
                    }
                }
                r
            }
            Conn::Tcp(_) | Conn::Tls(_) => {
                let mut frames = Vec::with_capacity(batch.bytes + batch.items.len() * 170);
                for it in &batch.items {
                    let msg = self_message(self.facility, &self.host, self.pid, it);
                    let _ = write!(frames, "{} ", msg.len());
                    frames.extend_from_slice(&msg);
                }
                let w = match conn {
                    Conn::Tcp(s) => s.write_all(&frames).and_then(|()| s.flush()),
                    Conn::Tls(s) => s.write_all(&frames).and_then(|()| s.flush()),
                    Conn::Udp(_) => Ok(()),
                };
                w.map_err(|e| format!("write to {}: {e}", self.address))
            }
        };
        result.map_err(|e| {
            self.conn = None;
            retry(e)
        })
    }
}

/// [`SyslogSink::message`] without borrowing the sink (the connection is
/// borrowed mutably meanwhile).
fn self_message(facility: u8, host: &str, pid: u32, it: &super::Item) -> Vec<u8> {
    let severity: u8 = if it.notable { 4 } else { 6 };
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let ts = crate::audit::reader::format_time(it.time_ms);
    let mut m = Vec::with_capacity(it.line.len() + 160);
    let _ = write!(
        m,
        "<{pri}>1 {ts} {host} warden {pid} audit [{SD_ID} uid=\"{}\" seq=\"{}\"] ",
        sd_escape(&it.uid),
        it.seq
    );
    m.extend_from_slice(&it.line);
    m
}

/// True when the peer has closed (or reset) the connection: a non-blocking
/// peek sees end of file or an error. Data the receiver sent (it should
/// send none) counts as open.
fn peer_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    if s.set_nonblocking(false).is_err() {
        return true;
    }
    closed
}

/// A header field: printable US-ASCII without spaces, at most `max`
/// characters; `-` when empty (RFC 5424 NILVALUE).
pub fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped.
pub fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn client_config(
    f: &Forward,
    address: &str,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), ForwardError> {
    let output = f.name.clone();
    let tls_err = |detail: String| ForwardError::Tls {
        output: output.clone(),
        detail,
    };
    let file_err =
        |what: &'static str, path: &std::path::Path, detail: String| ForwardError::File {
            output: output.clone(),
            what,
            path: path.to_owned(),
            detail,
        };
    let mut roots = rustls::RootCertStore::empty();
    match &f.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_err("CA file", path, e.to_string()))?;
            if certs.is_empty() {
                return Err(file_err("CA file", path, "holds no certificate".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| file_err("CA file", path, e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(tls_err(
                    "no system root certificates found; set ca_file".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_root_certificates(roots);
    let config = match (&f.client_cert_file, &f.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_err("client certificate", cert, e.to_string()))?;
            // The private key is a secret (fsutil::read_secret).
            let pem = crate::fsutil::read_secret(key)
                .map_err(|e| file_err("client key", key, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| file_err("client key", key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = match &f.server_name {
        Some(n) => n.clone(),
        None => {
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        }
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| tls_err(format!("server name {name:?}: {e}")))?;
    Ok((Arc::new(config), server_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Item;

    fn sink() -> SyslogSink {
        SyslogSink {
            address: "127.0.0.1:1".into(),
            transport: SyslogTransport::Tcp,
            tls: None,
            timeout: Duration::from_secs(1),
            facility: 16,
            host: header_field("host one\u{e9}", 255),
            pid: 42,
            conn: None,
        }
    }

    fn item(notable: bool) -> Item {
        Item {
            seq: 7,
            time_ms: 1_700_000_000_123,
            uid: "ab]c:7".into(),
            notable,
            line: b"{\"k\":1}".to_vec(),
            done: false,
        }
    }

    #[test]
    fn messages_follow_rfc5424() {
        let m = String::from_utf8(sink().message(&item(false))).unwrap();
        assert_eq!(
            m,
            "<134>1 2023-11-14T22:13:20.123Z hostone warden 42 audit \
             [warden@32473 uid=\"ab\\]c:7\" seq=\"7\"] {\"k\":1}"
        );
        let warn = String::from_utf8(sink().message(&item(true))).unwrap();
        assert!(warn.starts_with("<132>1 "), "{warn}");
        assert_eq!(
            self_message(16, "hostone", 42, &item(false)),
            sink().message(&item(false))
        );
        assert_eq!(header_field("", 10), "-");
        assert_eq!(sd_escape("a\"b\\c]"), "a\\\"b\\\\c\\]");
    }

    #[test]
    fn tcp_frames_are_octet_counted_and_a_closed_peer_is_noticed() {
        use std::io::Read as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = sink();
        s.address = l.local_addr().unwrap().to_string();
        let mut b = Batch {
            items: vec![item(false), item(true)],
            ..Default::default()
        };
        let stop = Stop::default();
        s.deliver(&mut b, &stop).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let want: Vec<u8> = b
            .items
            .iter()
            .flat_map(|i| {
                let m = s.message(i);
                let mut f = format!("{} ", m.len()).into_bytes();
                f.extend(m);
                f
            })
            .collect();
        let mut got = vec![0u8; want.len()];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        // The receiver goes away: the next batch goes on a new connection.
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        s.deliver(&mut b, &stop).unwrap();
        let (mut peer2, _) = l.accept().unwrap();
        peer2
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = vec![0u8; want.len()];
        peer2.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        // Nobody listening: a retryable failure.
        drop(l);
        drop(peer2);
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(
            s.deliver(&mut b, &stop),
            Err(Failure::Retry { .. })
        ));
    }
}
