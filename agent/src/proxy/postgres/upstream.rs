//! The upstream side of a PostgreSQL session: TCP (marked, never
//! redirected), TLS when the target asks for it, the StartupMessage with the
//! grant's role and database, and authentication with the grant's password
//! (SCRAM-SHA-256 through `postgres-protocol`, md5, cleartext). The workload
//! never sees any of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::Stream;
use crate::protocol::postgres::CodecError;
use crate::protocol::postgres::backend::{Authentication, BackendMessage};
use crate::protocol::postgres::frame::decode_frame;
use crate::protocol::postgres::frontend;
use crate::protocol::postgres::startup::{ProtocolVersion, StartupMessage, encode_ssl_request};

/// Why the upstream session could not be opened. Messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] crate::proxy::upstream::UpstreamError),
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "upstream {addr} refused TLS (answered {answer:?} to SSLRequest) but the target requires it"
    )]
    TlsRefused { addr: SocketAddr, answer: char },
    #[error("TLS handshake with the upstream failed: {0}")]
    TlsHandshake(std::io::Error),
    #[error("upstream protocol error: {0}")]
    Codec(#[from] CodecError),
    #[error("upstream sent {0} during authentication")]
    Unexpected(String),
    #[error("upstream asks for authentication method {0}, which Warden does not support")]
    UnsupportedAuth(String),
    #[error("SCRAM exchange with the upstream failed: {0}")]
    Scram(std::io::Error),
    #[error("upstream refused the session: {sqlstate} {message}")]
    Refused { sqlstate: String, message: String },
    #[error("upstream closed the connection during startup")]
    Closed,
    #[error("upstream did not finish startup within {0:?}")]
    Timeout(Duration),
}

/// What is needed to open one upstream session.
pub struct UpstreamParams<'a> {
    pub addr: SocketAddr,
    pub mark: u32,
    pub connect_timeout: Duration,
    pub tls: Option<&'a (Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub user: &'a str,
    pub database: &'a str,
    pub password: &'a [u8],
    /// Further startup parameters (application_name, client_encoding, …),
    /// already checked.
    pub params: &'a [(String, String)],
    pub max_message: usize,
}

/// An authenticated upstream session, ready for queries.
pub struct Upstream {
    pub stream: Stream,
    /// ParameterStatus values in the order the server sent them.
    pub parameters: Vec<(String, String)>,
    /// The server's BackendKeyData (for cancel requests).
    pub process_id: i32,
    pub secret_key: Vec<u8>,
    /// Transaction status of the first ReadyForQuery.
    pub status: u8,
    /// Bytes read past ReadyForQuery (normally none).
    pub rest: BytesMut,
}

/// TCP connect plus TLS when configured: the stream before the startup
/// packet. Also used for cancel requests.
pub async fn connect(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
    tls: Option<&(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> Result<Stream, UpstreamError> {
    let mut tcp = crate::proxy::upstream::connect(addr, mark, timeout).await?;
    let Some((cfg, name)) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut req = BytesMut::new();
    encode_ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(timeout, tcp.read_exact(&mut answer))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    if answer[0] != b'S' {
        return Err(UpstreamError::TlsRefused {
            addr,
            answer: answer[0] as char,
        });
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(cfg));
    let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
        .map_err(UpstreamError::TlsHandshake)?;
    Ok(Stream::ClientTls(Box::new(tls)))
}

/// Opens and authenticates an upstream session.
pub async fn open(p: &UpstreamParams<'_>) -> Result<Upstream, UpstreamError> {
    let deadline = p.connect_timeout * 2;
    tokio::time::timeout(deadline, open_inner(p))
        .await
        .map_err(|_| UpstreamError::Timeout(deadline))?
}

async fn open_inner(p: &UpstreamParams<'_>) -> Result<Upstream, UpstreamError> {
    let mut stream = connect(p.addr, p.mark, p.connect_timeout, p.tls).await?;
    let mut params = vec![
        ("user".to_owned(), p.user.to_owned()),
        ("database".to_owned(), p.database.to_owned()),
    ];
    params.extend(p.params.iter().cloned());
    let startup = StartupMessage {
        version: ProtocolVersion { major: 3, minor: 0 },
        params,
    };
    let mut out = BytesMut::new();
    startup.encode(&mut out)?;
    stream.write_all(&out).await?;

    let mut buf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut key: Option<(i32, Vec<u8>)> = None;
    loop {
        let frame = loop {
            if let Some(f) = decode_frame(&mut buf, p.max_message)? {
                break f;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        };
        out.clear();
        match BackendMessage::parse(&frame)? {
            BackendMessage::Authentication(auth) => match auth {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    frontend::password_message(&mut out, p.password)?;
                }
                Authentication::Md5Password { salt } => {
                    let hashed = md5_hash(p.user.as_bytes(), p.password, salt);
                    frontend::password_message(&mut out, hashed.as_bytes())?;
                }
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.contains(&SCRAM_SHA_256) {
                        return Err(UpstreamError::UnsupportedAuth(format!(
                            "SASL {}",
                            mechanisms.join(",")
                        )));
                    }
                    // No channel binding ("n"): accepted by servers that
                    // offer SCRAM-SHA-256-PLUS too; the TLS layer
                    // (verify-full) authenticates the server.
                    let s = ScramSha256::new(p.password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(&mut out, SCRAM_SHA_256, s.message())?;
                    scram = Some(s);
                }
                Authentication::SaslContinue(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Unexpected("SASLContinue".into()))?;
                    s.update(data).map_err(UpstreamError::Scram)?;
                    frontend::sasl_response(&mut out, s.message())?;
                }
                Authentication::SaslFinal(data) => {
                    let mut s = scram
                        .take()
                        .ok_or_else(|| UpstreamError::Unexpected("SASLFinal".into()))?;
                    // Verifies the server's signature: the server knew the
                    // password too.
                    s.finish(data).map_err(UpstreamError::Scram)?;
                }
                other => {
                    return Err(UpstreamError::UnsupportedAuth(format!("{other:?}")));
                }
            },
            BackendMessage::ParameterStatus { name, value } => {
                parameters.push((name.to_owned(), value.to_owned()));
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => key = Some((process_id, secret_key.to_vec())),
            BackendMessage::NoticeResponse(_) => {}
            BackendMessage::NegotiateProtocolVersion { .. } => {}
            BackendMessage::ErrorResponse(fields) => {
                return Err(UpstreamError::Refused {
                    sqlstate: fields.get(b'C').unwrap_or("?????").to_owned(),
                    message: fields.get(b'M').unwrap_or("").to_owned(),
                });
            }
            BackendMessage::ReadyForQuery { status } => {
                let (process_id, secret_key) = key.unwrap_or((0, Vec::new()));
                return Ok(Upstream {
                    stream,
                    parameters,
                    process_id,
                    secret_key,
                    status,
                    rest: buf,
                });
            }
            other => return Err(UpstreamError::Unexpected(format!("{:?}", tag_name(&other)))),
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

fn tag_name(m: &BackendMessage<'_>) -> &'static str {
    match m {
        BackendMessage::RowDescription { .. } => "RowDescription",
        BackendMessage::DataRow { .. } => "DataRow",
        BackendMessage::CommandComplete { .. } => "CommandComplete",
        _ => "an unexpected message",
    }
}

/// Reads the first line of a credential file through
/// [`crate::fsutil::read_secret`] (the secret must be the agent's alone).
pub fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = crate::fsutil::read_secret(path).map_err(|e| e.to_string())?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line.to_vec())
}
