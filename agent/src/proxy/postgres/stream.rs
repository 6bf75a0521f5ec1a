//! Byte streams on either side of a PostgreSQL session: plain TCP or TLS
//! (rustls), behind one type so the session code is written once.
//!
//! Also builds the rustls configurations: the server side that terminates a
//! workload's TLS with the target's `client_tls` certificate, and the client
//! side towards the upstream (`tls.mode`: `require` encrypts without
//! verifying, `verify-full` checks the chain against `ca_file` or the system
//! roots and the name against `server_name` or the target's address).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{ClientTls, TlsMode, UpstreamTls};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: String },
    #[error("reading the private key: {0}")]
    Secret(#[from] crate::fsutil::SecretError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// A connection to the workload or to the upstream.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::ClientTls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::Pem {
            what: "certificates",
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what: "certificate",
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The server side: terminates workloads' TLS with the target's certificate.
pub fn server_config(c: &ClientTls) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let certs = read_certs(&c.cert_file)?;
    // The private key is a secret (fsutil::read_secret).
    let pem = crate::fsutil::read_secret(&c.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsSetupError::Pem {
        what: "private key",
        path: c.key_file.display().to_string(),
        source,
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// The client side towards the upstream, and the name to verify (and send
/// as SNI). `None` for `mode = "disable"`.
pub fn client_config(
    tls: &UpstreamTls,
    addr: std::net::SocketAddr,
) -> Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>, TlsSetupError> {
    let name = match &tls.server_name {
        Some(n) => {
            ServerName::try_from(n.clone()).map_err(|_| TlsSetupError::ServerName(n.clone()))?
        }
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let cfg = match tls.mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &tls.ca_file {
                Some(ca) => {
                    for cert in read_certs(ca)? {
                        roots.add(cert)?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        // Unparseable system roots are skipped, as every
                        // TLS client does.
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some((Arc::new(cfg), name)))
}

/// `mode = "require"`: encryption without authentication of the server,
/// what libpq's `sslmode=require` does. The handshake signature is still
/// checked (so the session keys belong to whoever holds the presented key).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
