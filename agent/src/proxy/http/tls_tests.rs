//! In-process tests of the HTTP proxy's TLS: an HTTPS upstream made here
//! (rustls, a certificate for `api.test` from a test CA), Warden's TLS
//! origination (`upstream_tls`) and interception (`intercept_tls`, leaves
//! from the local CA), and clients that trust, or do not trust, that CA.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tests::{read_head, secret_file};
use super::*;
use crate::audit::event::SessionId;
use crate::audit::testutil::opts;

/// What the upstream saw: TLS handshakes completed, requests answered.
#[derive(Default)]
struct Seen {
    handshakes: AtomicUsize,
    requests: AtomicUsize,
}

/// A test CA and an upstream certificate for `api.test`.
struct TestPki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["api.test".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server: Arc::new(server),
    }
}

/// An HTTPS upstream answering each request with JSON holding the request
/// line, the Authorization it got, and some PII.
async fn tls_upstream(pki: &TestPki, seen: Arc<Seen>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&pki.server));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.handshakes.fetch_add(1, Ordering::SeqCst);
                let mut buf = BytesMut::new();
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else {
                        return;
                    };
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({
                        "line": format!("{} {}", head.method, head.target),
                        "auth_injected": head.get("authorization") == Some("Bearer s3cret"),
                        "user": {"email": "bob@example.com"},
                    })
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A config with one http target at `up` carrying `target_lines`, masking
/// emails, a bearer credential, and its state in `dir/state`.
fn config(dir: &Path, up: std::net::SocketAddr, target_lines: &str) -> Config {
    let secret = secret_file(dir, "s3cret");
    let text = format!(
        r#"[agent]
listen = "127.0.0.1:15001"
state_dir = "{state}"

[[target]]
name = "api"
protocol = "http"
address = "{up}"
{target_lines}

[[account]]
name = "svc"
uids = [1001]

[[grant]]
account = "svc"
target = "api"
policy = "p"
masking = "m"
credential = {{ kind = "bearer", file = "{secret}" }}

[policy.p]
rules = [{{ action = "allow", methods = ["GET"], paths = ["/**"] }}]

[masking.m]
patterns = ["email"]
"#,
        state = dir.join("state").display(),
        secret = secret.display()
    );
    Config::parse(&text, Path::new("t.toml")).unwrap()
}

struct Rig {
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    pki: TestPki,
    dir: tempfile::TempDir,
    _audit: AuditHandle,
}

impl Rig {
    /// The next connection's close outcome.
    async fn outcome(&mut self) -> Outcome {
        tokio::time::timeout(Duration::from_secs(10), self.outcomes.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// Warden's CA certificate, from the state directory.
    fn warden_ca(&self) -> CertificateDer<'static> {
        let pem = ca::LocalCa::read_cert_pem(&self.dir.path().join("state")).unwrap();
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Warden's API events' data, in order, once `n` are stored.
    async fn api_events(&self, n: usize) -> Vec<serde_json::Value> {
        let db = self.dir.path().join("a.db");
        for _ in 0..200 {
            let rows: Vec<String> = crate::audit::testutil::api_rows(&db)
                .into_iter()
                .map(|(_, _, json)| json)
                .collect();
            if rows.len() >= n {
                return rows
                    .iter()
                    .map(|r| serde_json::from_str(r).unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {n} API events");
    }
}

/// Warden serving the target with `target_lines` (`{ca}` is replaced by the
/// test CA's file) in front of a TLS upstream.
async fn rig(target_lines: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let seen = Arc::new(Seen::default());
    let up = tls_upstream(&pki, Arc::clone(&seen)).await;
    let lines = target_lines.replace("{ca}", &ca_file.display().to_string());
    let cfg = Arc::new(config(dir.path(), up, &lines));
    let rt = Arc::new(HttpRuntime::build(&cfg).unwrap());
    let (audit, _task) = crate::audit::spawn_writer(&dir.path().join("a.db"), opts(0)).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let h = audit.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (s, _) = l.accept().await.unwrap();
            n += 1;
            let (cfg, rt, h, tx) = (Arc::clone(&cfg), Arc::clone(&rt), h.clone(), tx.clone());
            tokio::spawn(async move {
                let caller = Caller {
                    session: SessionId(n),
                    account: "svc".into(),
                    process: crate::audit::event::ProcessInfo::default(),
                    identity: None,
                };
                let _ = tx.send(serve(&rt, &cfg, &h, &cfg.targets[0], caller, s).await);
            });
        }
    });
    Rig {
        addr,
        seen,
        outcomes,
        pki,
        dir,
        _audit: audit,
    }
}

/// A TLS client to Warden trusting `root`, asking for `name`.
async fn tls_client(
    addr: std::net::SocketAddr,
    root: CertificateDer<'static>,
    name: ServerName<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    // TLS 1.3: the client's verdict on the server reaches Warden with the
    // first write; make sure a refusal is seen here.
    s.flush().await?;
    Ok(s)
}

/// Sends one GET and reads the (Content-Length) response.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> (u16, String) {
    get_host(s, path, "api.test").await
}

async fn get_host<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    host: &str,
) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let (head, n) = loop {
        if let Some(h) = parse_response(&buf, 1 << 16).unwrap() {
            break h;
        }
        assert!(
            s.read_buf(&mut buf).await.unwrap() > 0,
            "closed before a response"
        );
    };
    bytes::Buf::advance(&mut buf, n);
    let len: usize = head.get("content-length").unwrap().parse().unwrap();
    while buf.len() < len {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    (head.status, String::from_utf8(buf[..len].to_vec()).unwrap())
}

const INTERCEPT: &str = "intercept_tls = true\ntls = { mode = \"verify-full\", ca_file = \"{ca}\", server_name = \"api.test\" }";

#[tokio::test]
async fn intercepted_https_is_served_masked_and_audited_with_the_sni() {
    let mut r = rig(INTERCEPT).await;
    let state = r.dir.path().join("state");
    let key_mode = std::fs::metadata(state.join(ca::KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let name = ServerName::try_from("api.test").unwrap();
    let mut s = tls_client(r.addr, r.warden_ca(), name.clone())
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "h2 is not offered"
    );
    let (status, body) = get(&mut s, "/orders?id=1").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["line"], "GET /orders?id=1");
    assert_eq!(v["auth_injected"], true, "credential injected");
    assert!(!body.contains("bob@example.com"), "masked: {body}");
    // Keep-alive over the same TLS connection.
    assert_eq!(get(&mut s, "/two").await.0, 200);
    drop(s);
    let o = r.outcome().await;
    assert_eq!(o.reason, None, "{o:?}");
    assert!(o.bytes_up > 0 && o.bytes_down > 0);
    assert_eq!(r.seen.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 2);
    let evs = r.api_events(4).await;
    let headers = &evs[0]["unmapped"]["warden"]["api"]["request_headers"];
    assert!(
        headers
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == ":sni" && h[1] == "api.test"),
        "{headers}"
    );
    // A second client for the same name gets the cached leaf; the client
    // checks it against the name it asked for.
    let mut s = tls_client(r.addr, r.warden_ca(), name).await.unwrap();
    assert_eq!(get(&mut s, "/three").await.0, 200);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_warden_ca_fails_and_nothing_goes_upstream() {
    let mut r = rig(INTERCEPT).await;
    let untrusted = r.pki.ca_der.clone();
    let name = ServerName::try_from("api.test").unwrap();
    let e = match tls_client(r.addr, untrusted, name).await {
        Ok(_) => panic!("the handshake succeeded against an untrusted CA"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let o = r.outcome().await;
    assert_eq!(o.reason.as_deref(), Some("tls_handshake_failed"), "{o:?}");
    let detail = o.detail.unwrap();
    assert!(detail.contains("warden ca cert"), "{detail}");
    assert!(detail.contains("sni api.test"), "{detail}");
    // Plain HTTP to an intercepting target is no TLS handshake either.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let o = r.outcome().await;
    assert_eq!(o.reason.as_deref(), Some("tls_handshake_failed"), "{o:?}");
    assert_eq!(r.seen.handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_hello_without_sni_gets_the_server_name_and_another_sni_gets_421() {
    // Without tls.server_name an intercepting target is a config error:
    // the workload's SNI never chooses what the upstream is verified as.
    let dir = tempfile::tempdir().unwrap();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let lines = "intercept_tls = true\ntls = { mode = \"verify-full\" }";
    let parsed = std::panic::catch_unwind(|| config(dir.path(), up, lines));
    assert!(
        parsed.is_err(),
        "a config without tls.server_name was accepted"
    );
    // rustls sends no SNI when connecting to an IP address: the leaf names
    // the server name and the target's address, and the upstream is
    // verified as server_name.
    let mut r = rig(INTERCEPT).await;
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut s = tls_client(r.addr, r.warden_ca(), ip).await.unwrap();
    assert_eq!(get_host(&mut s, "/by-ip", "127.0.0.1").await.0, 200);
    drop(s);
    assert_eq!(r.outcome().await.reason, None);
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 1);
    // Another SNI: Warden's leaf names it, but a request on that
    // connection is misdirected (421), whatever its Host, and nothing is
    // sent upstream.
    for host in ["evil.test", "api.test"] {
        let name = ServerName::try_from("evil.test").unwrap();
        let mut s = tls_client(r.addr, r.warden_ca(), name).await.unwrap();
        let (status, body) = get_host(&mut s, "/", host).await;
        assert_eq!(status, 421, "{body}");
        assert!(body.contains("evil.test"), "{body}");
    }
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 1);
    assert_eq!(r.seen.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upstream_tls_originates_verified_tls_for_plain_http_clients() {
    let mut r = rig(
        "upstream_tls = true\ntls = { mode = \"verify-full\", ca_file = \"{ca}\", server_name = \"api.test\" }",
    )
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let (status, body) = get(&mut s, "/plain").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("GET /plain") && !body.contains("bob@example.com"));
    drop(s);
    assert_eq!(r.outcome().await.reason, None);
    assert_eq!(r.seen.handshakes.load(Ordering::SeqCst), 1);
    // No local CA is made for a target that does not intercept.
    assert!(!r.dir.path().join("state").join(ca::CERT_FILE).exists());

    // The wrong name: 502 with a body that says so, nothing sent.
    let mut r = rig(
        "upstream_tls = true\ntls = { mode = \"verify-full\", ca_file = \"{ca}\", server_name = \"other.test\" }",
    )
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let (status, body) = get_host(&mut s, "/plain", "other.test").await;
    assert_eq!(status, 502, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["reason"].as_str().unwrap().contains("certificate"),
        "{body}"
    );
    let o = r.outcome().await;
    assert_eq!(o.reason.as_deref(), Some("upstream_error"), "{o:?}");
    assert_eq!(r.seen.handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_intercepted_request_for_another_host_gets_421_and_nothing_is_sent() {
    let r = rig(INTERCEPT).await;
    let name = ServerName::try_from("api.test").unwrap();
    let mut s = tls_client(r.addr, r.warden_ca(), name).await.unwrap();
    let (status, body) = get_host(&mut s, "/", "admin.test").await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("admin.test"), "{body}");
    assert_eq!(r.seen.requests.load(Ordering::SeqCst), 0);
}
