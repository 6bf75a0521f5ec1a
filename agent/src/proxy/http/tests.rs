//! In-process tests of the HTTP proxy: a small upstream on loopback that
//! answers with what it received, a real audit store, and raw HTTP/1.1 on
//! the client side (so pipelining, malformed input and the HTTP/2 preface
//! can be sent byte for byte).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::audit::event::SessionId;
use crate::audit::testutil::opts;

/// A test upstream's next request head from `s` (`buf` keeps what follows
/// it); `None` when the peer closed.
pub(super) async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Option<RequestHead> {
    loop {
        if let Ok(Some((h, n))) = crate::protocol::http::parse_request(buf, 1 << 16) {
            bytes::Buf::advance(buf, n);
            return Some(h);
        }
        if s.read_buf(buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
}

/// The whole body of the request `head` read by [`read_head`]; `None`
/// when the peer closed inside it.
pub(super) async fn read_request_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    head: &RequestHead,
) -> Option<Vec<u8>> {
    let mut dec = BodyDecoder::new(request_body(head).unwrap());
    let mut body = Vec::new();
    loop {
        match dec.decode(buf, 1 << 16).unwrap() {
            Some(BodyEvent::Data(d)) => body.extend_from_slice(&d),
            Some(BodyEvent::End) => return Some(body),
            None => {
                if s.read_buf(buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        }
    }
}

/// A credential file holding `value` (mode 0600) in `dir`.
pub(super) fn secret_file(dir: &Path, value: &str) -> std::path::PathBuf {
    let secret = dir.join("token");
    std::fs::write(&secret, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

/// Warden serving `cfg`'s first target on a loopback port, each
/// connection as the account `svc` with its own session.
pub(super) async fn spawn_proxy(cfg: Arc<Config>, audit: &AuditHandle) -> std::net::SocketAddr {
    let rt = Arc::new(HttpRuntime::build(&cfg).unwrap());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = audit.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (s, _) = l.accept().await.unwrap();
            n += 1;
            let (cfg, rt, h) = (Arc::clone(&cfg), Arc::clone(&rt), h.clone());
            tokio::spawn(async move {
                let caller = Caller {
                    session: SessionId(n),
                    account: "svc".into(),
                    process: crate::audit::event::ProcessInfo::default(),
                    identity: None,
                };
                serve(&rt, &cfg, &h, &cfg.targets[0], caller, s).await;
            });
        }
    });
    addr
}

/// An upstream that answers each request with a JSON body holding the
/// request line, whether it got the injected Authorization, the Cookie it
/// got, the body length, and some PII; `/close` answers without a length
/// and closes.
async fn upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    let Some(head) = read_head(&mut s, &mut buf).await else {
                        return;
                    };
                    if head.has_token("connection", "upgrade") {
                        // Switch, then echo raw bytes until the peer closes.
                        let hello = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {}\r\nConnection: Upgrade\r\n\r\nup:",
                            head.get("upgrade").unwrap_or("")
                        );
                        if s.write_all(hello.as_bytes()).await.is_err() {
                            return;
                        }
                        let (mut r, mut w) = s.split();
                        let _ = w.write_all(&buf).await;
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    let Some(body) = read_request_body(&mut s, &mut buf, &head).await else {
                        return;
                    };
                    let len = body.len();
                    let body = serde_json::json!({
                        "line": format!("{} {}", head.method, head.target),
                        "auth_injected": head.get("authorization") == Some("Bearer s3cret"),
                        "auth_present": head.get("authorization").is_some(),
                        "cookie": head.get("cookie"),
                        "len": len,
                        "user": {"email": "bob@example.com", "cards": ["4111 1111 1111 1111"]},
                    })
                    .to_string();
                    if let Some(coding) = head.target.strip_prefix("/enc/") {
                        // The JSON body in a content coding.
                        use std::io::Write as _;
                        let coded = match coding {
                            "gzip" => {
                                let mut e = flate2::write::GzEncoder::new(
                                    Vec::new(),
                                    flate2::Compression::fast(),
                                );
                                e.write_all(body.as_bytes()).unwrap();
                                e.finish().unwrap()
                            }
                            "deflate" => {
                                let mut e = flate2::write::ZlibEncoder::new(
                                    Vec::new(),
                                    flate2::Compression::fast(),
                                );
                                e.write_all(body.as_bytes()).unwrap();
                                e.finish().unwrap()
                            }
                            // Not really encoded: Warden must not look.
                            _ => body.clone().into_bytes(),
                        };
                        let mut resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
                            coded.len()
                        )
                        .into_bytes();
                        resp.extend_from_slice(&coded);
                        if s.write_all(&resp).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let resp = if head.target == "/close" {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n{body}"
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if s.write_all(resp.as_bytes()).await.is_err() || head.target == "/close" {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(dir: &Path, up: std::net::SocketAddr, masking: bool) -> Config {
    let secret = secret_file(dir, "s3cret");
    let text = format!(
        r#"[agent]
listen = "127.0.0.1:15001"

[[target]]
name = "api"
protocol = "http"
address = "{up}"
tls = {{ mode = "disable", server_name = "api" }}
max_message_bytes = 65536
allow_upgrade = ["websocket"]

[[account]]
name = "svc"
uids = [1001]

[[grant]]
account = "svc"
target = "api"
policy = "p"
{masking}
credential = {{ kind = "bearer", file = "{secret}" }}

[policy.p]
rules = [
  {{ action = "allow", methods = ["GET", "POST", "PUT"], paths = ["/**"] }},
  {{ action = "block", methods = ["DELETE"], paths = ["/admin/**"], name = "no-admin-delete" }},
  {{ action = "block", paths = ["/admin/**"], name = "no-admin" }},
]

[masking.m]
patterns = ["card", "email"]
unmasked_encodings = ["br"]
unmasked_types = ["application/octet-stream"]
"#,
        masking = if masking { "masking = \"m\"" } else { "" },
        secret = secret.display()
    );
    Config::parse(&text, Path::new("t.toml")).unwrap()
}

struct Rig {
    addr: std::net::SocketAddr,
    audit: AuditHandle,
    _dir: tempfile::TempDir,
}

async fn rig(masking: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let cfg = Arc::new(config(dir.path(), up, masking));
    let (audit, _task) = crate::audit::spawn_writer(&dir.path().join("a.db"), opts(0)).unwrap();
    let addr = spawn_proxy(cfg, &audit).await;
    Rig {
        addr,
        audit,
        _dir: dir,
    }
}

/// Reads one response (head and Content-Length or chunked body).
async fn response(s: &mut TcpStream, buf: &mut BytesMut) -> (ResponseHead, String) {
    let (head, n) = loop {
        if let Some(h) = parse_response(buf, 1 << 16).unwrap() {
            break h;
        }
        assert!(
            s.read_buf(buf).await.unwrap() > 0,
            "closed before a response"
        );
    };
    bytes::Buf::advance(buf, n);
    let mut dec = BodyDecoder::new(response_body("GET", &head).unwrap());
    let mut body = Vec::new();
    loop {
        match dec.decode(buf, 1 << 16).unwrap() {
            Some(BodyEvent::Data(d)) => body.extend_from_slice(&d),
            Some(BodyEvent::End) => break,
            None => {
                if s.read_buf(buf).await.unwrap() == 0 {
                    break;
                }
            }
        }
    }
    (head, String::from_utf8(body).unwrap())
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn keep_alive_mixing_allowed_and_blocked_with_credential_injection() {
    let r = rig(false).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    s.write_all(b"GET /orders?id=1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer mine\r\nCookie: a=b\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["line"], "GET /orders?id=1");
    assert_eq!(v["auth_injected"], true, "the workload's header replaced");
    assert_eq!(v["cookie"], serde_json::Value::Null, "cookie stripped");
    // Blocked, on the same connection, then allowed again.
    s.write_all(b"DELETE /admin/x HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rule"], "no-admin-delete");
    for bypass in [
        "/ADMIN/x",
        "/a/../admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/admin;p=1/x",
    ] {
        let req = format!("GET {bypass} HTTP/1.1\r\nHost: api\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (h, body) = response(&mut s, &mut buf).await;
        // /ADMIN too: a block rule reads paths without regard to case
        // (Express, ASP.NET Core and IIS route them alike), whatever
        // path_case says for allow rules.
        assert_eq!(h.status, 403, "{bypass}: {body}");
    }
    // Pipelined: three requests in one write, answered in order; one with a
    // chunked body.
    s.write_all(
        b"GET /p1 HTTP/1.1\r\nHost: api\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nDELETE /admin/y HTTP/1.1\r\nHost: api\r\n\r\n",
    )
    .await
    .unwrap();
    let (h1, b1) = response(&mut s, &mut buf).await;
    let (h2, b2) = response(&mut s, &mut buf).await;
    let (h3, _) = response(&mut s, &mut buf).await;
    assert_eq!((h1.status, h2.status, h3.status), (200, 200, 403));
    assert!(b1.contains("GET /p1"));
    let v: serde_json::Value = serde_json::from_str(&b2).unwrap();
    assert_eq!(v["len"], 11);
    // Ambiguous paths: 400 and a close.
    s.write_all(b"GET /%2fadmin HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, _) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 400);
    assert!(closed(&mut s).await);
    drop(r.audit);
}

#[tokio::test]
async fn malformed_smuggling_and_h2_get_an_error_and_a_close() {
    let r = rig(false).await;
    for (input, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..], 400),
        (b"GET\x01/ HTTP/1.1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /%2fadmin HTTP/1.1\r\n\r\n", 400),
        (b"GET /admin%2F.. HTTP/1.1\r\n\r\n", 400),
        // HTTP/1.1 without Host, or with two.
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: api\r\nHost: api\r\n\r\n", 400),
        (b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n", 403),
        (b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: websocket, h2c\r\n\r\n", 403),
        (b"GET /ws HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\n\r\n", 403),
    ] {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(input).await.unwrap();
        let mut buf = BytesMut::new();
        let (h, _) = response(&mut s, &mut buf).await;
        assert_eq!(h.status, status, "{:?}", String::from_utf8_lossy(input));
        if status != 403 {
            assert!(closed(&mut s).await);
        }
    }
}

#[tokio::test]
async fn json_responses_are_masked_and_others_streamed() {
    let r = rig(true).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    s.write_all(b"GET /u HTTP/1.1\r\nHost: api\r\nAccept-Encoding: gzip\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 200);
    assert!(!body.contains("bob@example.com"), "{body}");
    assert!(!body.contains("4111"), "{body}");
    assert_eq!(h.get("content-length").unwrap(), body.len().to_string());
    // Not JSON, listed in unmasked_types: streamed untouched (re-chunked,
    // as the upstream closes).
    s.write_all(b"GET /close HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 200);
    assert!(body.contains("bob@example.com"));
    // Expect: 100-continue on an allowed upload: Warden says continue.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (h, _) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 100);
    s.write_all(b"abcd").await.unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 200);
    assert!(body.contains("\"len\":4"), "{body}");
}

#[test]
fn credentials() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s");
    std::fs::write(&f, "pw\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let basic = HttpCredential {
        kind: CredentialKind::Basic,
        file: f.clone(),
        username: Some("u".into()),
        header: None,
        issued: Default::default(),
    };
    let h = credential_header(&basic).unwrap();
    assert_eq!(
        (h.name.as_str(), &h.value[..]),
        ("Authorization", &b"Basic dTpwdw=="[..])
    );
    let hdr = HttpCredential {
        kind: CredentialKind::Header,
        file: f.clone(),
        username: None,
        header: Some("X-Api-Key".into()),
        issued: Default::default(),
    };
    let h = credential_header(&hdr).unwrap();
    assert_eq!((h.name.as_str(), &h.value[..]), ("X-Api-Key", &b"pw"[..]));
    assert_eq!(h.echo.find(b"x pw y"), Some("as it is"));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        credential_header(&hdr).is_err(),
        "group/world-readable secrets are refused"
    );
}

#[test]
fn a_credential_is_read_again_once_its_ttl_passed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s");
    std::fs::write(&f, "one\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cred = Credential::new(HttpCredential {
        kind: CredentialKind::Header,
        file: f.clone(),
        username: None,
        header: Some("X-Api-Key".into()),
        issued: Default::default(),
    });
    let t0 = Instant::now();
    assert_eq!(cred.header(t0).unwrap().value, b"one");
    // Rotated on disk: the old value until the TTL passed, then the new.
    std::fs::write(&f, "two\n").unwrap();
    assert_eq!(cred.header(t0 + CREDENTIAL_TTL / 2).unwrap().value, b"one");
    assert_eq!(cred.header(t0 + CREDENTIAL_TTL).unwrap().value, b"two");
    // A file that becomes unusable refuses after the TTL, and recovers.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(cred.header(t0 + CREDENTIAL_TTL * 2).is_err());
    assert!(
        cred.header(t0 + CREDENTIAL_TTL * 2 + CREDENTIAL_TTL / 2)
            .is_err()
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(cred.header(t0 + CREDENTIAL_TTL * 3).unwrap().value, b"two");
}

#[tokio::test]
async fn audit_events_are_committed_with_masked_query_and_no_credentials() {
    let r = rig(true).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    s.write_all(b"GET /find?email=bob%40example.com&x=1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer workload-secret\r\nUser-Agent: t\r\n\r\nDELETE /admin/z HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut s, &mut buf).await.0.status, 200);
    assert_eq!(response(&mut s, &mut buf).await.0.status, 403);
    // Result events are queued detached: give the writer a moment.
    let rows = api_rows(&r, 4).await;
    let summary: Vec<(&str, &str)> = rows
        .iter()
        .map(|(a, d, _)| (a.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("api_request", "allowed"),
            ("api_result", "allowed"),
            ("api_request", "blocked"),
            ("api_result", "blocked")
        ]
    );
    for (_, _, data) in &rows {
        assert!(
            !data.contains("bob%40example.com") && !data.contains("bob@example.com"),
            "{data}"
        );
        assert!(
            !data.contains("workload-secret") && !data.contains("s3cret"),
            "{data}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(&rows[1].2).unwrap();
    assert_eq!(v["class_uid"], 6003);
    assert_eq!(v["http_request"]["url"]["path"], "/find");
    assert_eq!(v["http_response"]["code"], 200);
    assert!(
        v["unmapped"]["warden"]["api"]["values_masked"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let blocked: serde_json::Value = serde_json::from_str(&rows[2].2).unwrap();
    assert_eq!(
        blocked["unmapped"]["warden"]["api"]["rule"],
        "no-admin-delete"
    );
    assert_eq!(blocked["activity_id"], 4);
}

#[tokio::test]
async fn an_allowed_upgrade_is_tunnelled_after_the_policy_allowed_it() {
    let r = rig(false).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    // Refused by the policy even though websocket upgrades are allowed.
    s.write_all(
        b"GET /admin/ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = BytesMut::new();
    let (head, body) = response(&mut s, &mut buf).await;
    assert_eq!(head.status, 403, "{body}");
    // Allowed: 101, then bytes flow both ways untouched (no masking).
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = buf.to_vec();
    while !got.windows(7).any(|w| w == b"\r\n\r\nup:") {
        let mut b = [0u8; 1024];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    s.write_all(b"ping bob@example.com").await.unwrap();
    let mut echo = Vec::new();
    while echo.len() < 20 {
        let mut b = [0u8; 64];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0);
        echo.extend_from_slice(&b[..n]);
    }
    assert_eq!(&echo[..], b"ping bob@example.com");
    s.shutdown().await.unwrap();
    assert!(closed(&mut s).await);
    // The result event has the 101.
    let rows = api_rows(&r, 4).await;
    assert!(
        rows.iter()
            .any(|(act, _, data)| act == "api_result" && data.contains("\"code\":101")),
        "{rows:?}"
    );
}

/// The API events in the store (activity, decision, data), once at least
/// `want` are there (result events are queued detached) or after 2 s.
async fn api_rows(r: &Rig, want: usize) -> Vec<(String, String, String)> {
    let db = r._dir.path().join("a.db");
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = crate::audit::testutil::api_rows(&db);
        if rows.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rows
}

#[tokio::test]
async fn compressed_bodies_are_decoded_masked_and_re_encoded_or_refused() {
    let r = rig(true).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    // gzip, client takes gzip: masked, then gzip again.
    s.write_all(b"GET /enc/gzip HTTP/1.1\r\nHost: api\r\nAccept-Encoding: br, gzip\r\n\r\n")
        .await
        .unwrap();
    let (head, n) = loop {
        if let Some(h) = parse_response(&buf, 1 << 16).unwrap() {
            break h;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    };
    bytes::Buf::advance(&mut buf, n);
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-encoding"), Some("gzip"));
    let len: usize = head.get("content-length").unwrap().parse().unwrap();
    while buf.len() < len {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    let zipped = buf.split_to(len);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(
        plain.contains("\"line\"") && !plain.contains("bob@example.com"),
        "{plain}"
    );
    // gzip, client does not take it (q=0): masked, sent plain.
    s.write_all(b"GET /enc/gzip HTTP/1.1\r\nHost: api\r\nAccept-Encoding: gzip;q=0\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.get("content-encoding"), None);
    assert!(
        !body.contains("bob@example.com") && body.contains("\"line\""),
        "{body}"
    );
    // deflate (zlib): decoded and masked.
    s.write_all(b"GET /enc/deflate HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 200);
    assert!(
        !body.contains("bob@example.com") && body.contains("\"line\""),
        "{body}"
    );
    // br is listed in unmasked_encodings, but this grant injects a
    // credential that a br body could carry unseen: 502 and a close.
    s.write_all(b"GET /enc/br HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 502, "{body}");
    assert!(body.contains("credential"), "{body}");
    assert!(closed(&mut s).await);
    // zstd is not listed: 502 and a close, body never read.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = BytesMut::new();
    s.write_all(b"GET /enc/zstd HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let (h, body) = response(&mut s, &mut buf).await;
    assert_eq!(h.status, 502, "{body}");
    assert!(body.contains("zstd"), "{body}");
    assert!(closed(&mut s).await);
    let rows = api_rows(&r, 10).await;
    assert!(
        rows.iter().any(|(a, _, d)| a == "api_result"
            && d.contains("/enc/br")
            && d.contains("credential")),
        "{rows:#?}"
    );
}
