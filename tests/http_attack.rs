//! Attacks on the HTTP proxy's masking, credential and approvals (branch
//! `attack2`): every test here asserts the SECURE behaviour, so a test
//! FAILS while the bypass it describes works. Findings are written up in
//! `ATTACK2-FINDINGS.md`.
//!
//! In process: `warden::proxy::http::serve` behind a loopback listener, a
//! scripted upstream that records what it receives and answers by path,
//! raw HTTP/1.1 on the client side.
//!
//! `cargo test -p warden --test http_attack -- --test-threads=1`

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden::approval::peer::{Peer, Place};
use warden::approval::{Approvals, Decision, RequestView};
use warden::audit::event::{ProcessInfo, SessionId};
use warden::audit::{AuditHandle, WriterOptions, WriterTask};
use warden::config::Config;
use warden::proxy::Caller;
use warden::proxy::http::{HttpRuntime, serve};

const SECRET: &str = "s3cret-0123456789abcdef";
const NAME: &str = "Alice Anderson";

/// What the scripted upstream received: each request's raw bytes.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

fn reply(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Every member of a (multi-member) gzip body, as curl, Go, urllib3 and
/// browsers decode it.
fn gunzip_all(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out);
    out
}

fn query_value(target: &str, key: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// A JSON string literal of `s`.
fn jstr(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The scripted answers, by path.
/// Member names a client binds to `name` (raw JSON text).
const NAME_SPELLINGS: &[&str] = &[
    "Name",
    "NAME",
    "n\\u0061me",
    "\\uff4e\\uff41\\uff4d\\uff45",
    "na\\u200bme",
    "\\u004eAME",
    " name",
    "na_me",
];

fn answer(target: &str, auth: &str, body: &[u8]) -> Vec<u8> {
    answer_range(target, auth, body, None)
}

/// [`answer`] to a request with `Range: bytes=A-B`.
fn answer_range(target: &str, auth: &str, body: &[u8], range: Option<(usize, usize)>) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or("");
    let json = ("Content-Type", "application/json");
    match path {
        // An endpoint that says who the caller is, in two gzip members
        // (a server that compresses as it flushes, or a cache that joins
        // stored pieces): the credential is in the second.
        "/whoami" => {
            let mut body = gzip(b"{\"ok\": true, ");
            body.extend(gzip(format!("\"auth\": {}}}", jstr(auth)).as_bytes()));
            reply("200 OK", &[json, ("Content-Encoding", "gzip")], &body)
        }
        // An API whose client names the output members (PostgREST
        // `select=alias:column`, GraphQL aliases, OData/`fields=`): here
        // `?select=ALIAS:name`.
        "/customers" => {
            let sel = query_value(target, "select").unwrap_or_else(|| "name".into());
            let alias = sel.split(':').next().unwrap_or("name").to_owned();
            let body = format!("[{{{}: {}, \"id\": 1}}]", jstr(&alias), jstr(NAME));
            reply("200 OK", &[json], body.as_bytes())
        }
        // GraphQL: `{ customers { ALIAS: name } }` in a JSON body.
        "/graphql" => {
            // `application/graphql`: the document is the body.
            let q = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["query"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            let alias = q
                .rsplit('{')
                .next()
                .and_then(|i| i.split(':').next())
                .unwrap_or("name")
                .trim()
                .to_owned();
            let body = format!(
                "{{\"data\": {{\"customers\": [{{{}: {}}}]}}}}",
                jstr(&alias),
                jstr(NAME)
            );
            reply("200 OK", &[json], body.as_bytes())
        }
        // The `name` member spelled as `?k=` says (raw JSON text).
        "/keyed" => {
            let k: usize = query_value(target, "k")
                .and_then(|k| k.parse().ok())
                .unwrap_or(0);
            let body = format!("{{\"{}\": {}}}", NAME_SPELLINGS[k], jstr(NAME));
            reply("200 OK", &[json], body.as_bytes())
        }
        // A document that carries documents in strings, 5 deep.
        "/deep" => {
            let mut inner = format!("{{\"name\": {}}}", jstr(NAME));
            for _ in 0..5 {
                inner = format!("{{\"payload\": {}}}", jstr(&inner));
            }
            reply("200 OK", &[json], inner.as_bytes())
        }
        // A login that turns the injected credential into a session: the
        // cookie (and the token in the body) are credentials of their own.
        "/session" => reply(
            "200 OK",
            &[
                json,
                (
                    "Set-Cookie",
                    "sid=derived-session-7f3a; Domain=.example.com; Path=/",
                ),
            ],
            b"{\"access_token\": \"derived-token-9c1e\"}",
        ),
        // A token service that answers in a header (OpenStack Keystone).
        "/v3/auth/tokens" => reply(
            "201 Created",
            &[
                json,
                ("X-Subject-Token", "derived-token-5b2d"),
                ("set-cookie2", "legacy=derived-legacy-11aa"),
            ],
            b"{\"token\": {\"expires_at\": \"2030-01-01\"}, \"credentials\": {\"SessionToken\": \"derived-sts-77\"}}",
        ),
        // An OAuth implicit grant: the token in the redirect's fragment.
        "/oauth/authorize" => reply(
            "302 Found",
            &[
                json,
                (
                    "Location",
                    "https://app.example/cb?state=s1#access_token=derived-implicit-1&token_type=bearer",
                ),
            ],
            b"{}",
        ),
        // GitHub's token endpoint answers in a form by default.
        "/login/oauth/access_token" => reply(
            "200 OK",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"access_token=derived-gho-3e3e&scope=repo&token_type=bearer",
        ),
        // Session 3: a form answer whose field names nest (`qs`, Rack, PHP
        // read `customer[name]` as `customer.name`), and JSON with
        // flattened dotted or bracketed member names.
        "/form-nested" => reply(
            "200 OK",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!(
                "customer[name]={n}&id=1&name[]={n}&name%5B0%5D={n}",
                n = NAME.replace(' ', "+")
            )
            .as_bytes(),
        ),
        "/flat" => reply(
            "200 OK",
            &[json],
            format!(
                "{{\"customer.name\": {n}, \"customer[name]\": {n}, \"id\": 1}}",
                n = jstr(NAME)
            )
            .as_bytes(),
        ),
        // Session 3: the echo in a transfer coding other than chunked
        // (framed by the close).
        "/te-gzip" => {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n".to_vec();
            out.extend(gzip(format!("{{\"auth\": {}}}", jstr(auth)).as_bytes()));
            out
        }
        // Session 3: an echo that honours `Range` (Go's ServeContent,
        // nginx with proxy_force_ranges, static-file servers).
        "/echo-range" => {
            let full = format!("{{\"auth\": {}}}", jstr(auth)).into_bytes();
            match range {
                Some((a, b)) if a < full.len() => {
                    let b = b.min(full.len() - 1);
                    reply(
                        "206 Partial Content",
                        &[
                            ("Content-Type", "text/plain"),
                            (
                                "Content-Range",
                                &format!("bytes {a}-{b}/{}", full.len()),
                            ),
                        ],
                        &full[a..=b],
                    )
                }
                _ => reply("200 OK", &[("Content-Type", "text/plain")], &full),
            }
        }
        _ => reply("200 OK", &[json], b"{\"ok\": true}"),
    }
}

/// A WebSocket handshake answered with one text message that echoes the
/// request's Authorization header: compressed (permessage-deflate, RSV1)
/// when the request offered that extension, as servers do, or `always`.
fn websocket_echo(head: &str, auth: &str, always: bool) -> Vec<u8> {
    let deflate = always || head.to_ascii_lowercase().contains("permessage-deflate");
    let mut out =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            .to_vec();
    // Long enough, and repetitive enough, that deflate codes it (a short
    // text would go in a stored block, as it is).
    let text = format!(
        "{{\"you_sent\": \"{auth}\", \"pad\": \"{}\"}}",
        "ab".repeat(200)
    );
    let (first, payload) = if deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate\r\n");
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        (0xC1u8, e.finish().unwrap())
    } else {
        (0x81u8, text.into_bytes())
    };
    out.extend_from_slice(b"\r\n");
    out.push(first);
    out.push(126);
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

async fn scripted() -> (std::net::SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    // Head.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut b = [0u8; 65536];
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        let mut b = [0u8; 65536];
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let raw: Vec<u8> = buf.drain(..end + len).collect();
                    seen.lock().unwrap().push(raw.clone());
                    let target = head
                        .lines()
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("/")
                        .to_owned();
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let range = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        let (a, b) = k
                            .eq_ignore_ascii_case("range")
                            .then(|| v.trim().strip_prefix("bytes="))??
                            .split_once('-')?;
                        Some((a.parse().ok()?, b.parse().unwrap_or(usize::MAX)))
                    });
                    let out = if target.starts_with("/ws") {
                        websocket_echo(&head, &auth, target == "/ws-always")
                    } else {
                        answer_range(&target, &auth, &raw[end..], range)
                    };
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    // An answer framed by the close.
                    if out.windows(19).any(|w| w == b"Connection: close\r\n") {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

struct Rig {
    addr: std::net::SocketAddr,
    seen: Seen,
    approvals: Arc<Approvals>,
    _dir: tempfile::TempDir,
    _audit: AuditHandle,
    _writer: WriterTask,
}

const BEARER: &str = "credential = { kind = \"bearer\", file = \"{secret}\" }";
const MASKED: &str = "masking = \"m\"\ncredential = { kind = \"bearer\", file = \"{secret}\" }";
/// Field rules on `name` (which no detector matches) and the e-mail
/// detector.
const FIELDS: &str =
    "patterns = [\"email\"]\nfields = [{ field = \"name\", strategy = \"redact\" }]";
const ALLOW_ALL: &str = "default = \"allow\"";
const APPROVERS: &str = "approvers = { groups = [], uids = [5001] }\napproval_timeout_secs = 30";

async fn rig(grant_lines: &str, policy: &str, masking: &str) -> Rig {
    rig_with_target(grant_lines, policy, masking, "").await
}

/// [`rig`] with extra keys of the `[[target]]` table.
async fn rig_with_target(
    grant_lines: &str,
    policy: &str,
    masking: &str,
    target_extra: &str,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (up, seen) = scripted().await;
    let secret = dir.path().join("token");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        r#"[agent]
state_dir = "{state}"

[[target]]
name = "api"
protocol = "http"
address = "{up}"
max_message_bytes = 1048576
{target_extra}

[[account]]
name = "svc"
uids = [1001]

[[grant]]
account = "svc"
target = "api"
policy = "p"
{grant}

[policy.p]
{policy}

[masking.m]
{masking}

[approvals]
{APPROVERS}
"#,
        state = dir.path().join("state").display(),
        grant = grant_lines.replace("{secret}", &secret.display().to_string()),
    );
    let cfg = Arc::new(
        Config::parse(&text, &dir.path().join("warden.toml"))
            .unwrap_or_else(|e| panic!("config: {e}\n{text}")),
    );
    let opts = WriterOptions {
        sync: warden::audit::SyncMode::Normal,
        ..WriterOptions::default()
    };
    let (audit, writer) = warden::audit::spawn_writer(&dir.path().join("a.db"), opts).unwrap();
    let approvals = Approvals::new(
        cfg.approvals.clone(),
        audit.clone(),
        "warden approvals".into(),
    );
    let rt = Arc::new(
        HttpRuntime::build(&cfg)
            .unwrap_or_else(|e| panic!("runtime: {e}"))
            .with_approvals(Arc::clone(&approvals)),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = audit.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            n += 1;
            let (cfg, rt, h) = (Arc::clone(&cfg), Arc::clone(&rt), h.clone());
            tokio::spawn(async move {
                let caller = Caller {
                    session: SessionId(n),
                    account: "svc".into(),
                    process: ProcessInfo::default(),
                    identity: None,
                };
                serve(&rt, &cfg, &h, &cfg.targets[0], caller, s).await;
            });
        }
    });
    Rig {
        addr,
        seen,
        approvals,
        _dir: dir,
        _audit: audit,
        _writer: writer,
    }
}

/// One answer as the client got it.
#[derive(Debug)]
struct Got {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Rig {
    fn host(&self) -> String {
        self.addr_of_upstream()
    }

    fn addr_of_upstream(&self) -> String {
        // The target has no server_name: its IP is its host.
        "127.0.0.1".into()
    }

    /// Sends `request` on a new connection; reads until the close or 3 s.
    async fn ask(&self, request: &[u8]) -> Got {
        let (mut s, mut w) = TcpStream::connect(self.addr).await.unwrap().into_split();
        // Written beside the reading: a refusal may come (and the
        // connection close) before a large request is all sent.
        let request = request.to_vec();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&request).await;
            w
        });
        let mut all = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut b = [0u8; 65536];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut b)).await {
                Ok(Ok(n)) if n > 0 => all.extend_from_slice(&b[..n]),
                _ => break,
            }
        }
        writer.abort();
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(all.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&all[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Got {
            status,
            head,
            body: all[end..].to_vec(),
        }
    }

    async fn get(&self, path: &str, extra: &str) -> Got {
        self.ask(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n",
                self.host()
            )
            .as_bytes(),
        )
        .await
    }

    /// The one pending approval request, once there is one (5 s limit).
    async fn pending(&self) -> Option<RequestView> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(v) = self.approvals.list().pending.pop() {
                return Some(v);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    async fn decide(&self, id: &str, approve: bool, grant_secs: Option<u64>) {
        let approver = Peer {
            uid: 5001,
            gid: 5001,
            pid: None,
            gids: vec![5001],
            uids: vec![5001],
            place: Place::Known {
                cgroups: vec!["/user.slice/approver".into()],
                cgroup_ids: vec![77],
                accounts: vec![],
            },
        };
        let d = Decision {
            approve,
            reason: Some("test".into()),
            grant_secs,
        };
        self.approvals.decide(id, &approver, d).await.unwrap();
    }
}

fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), f()).await })
        .expect("test timed out");
}

/// Whether the grant's secret is in `b`, as it is or gzip-ed (every
/// member decoded, as clients do).
fn holds_secret(b: &[u8]) -> bool {
    let s = String::from_utf8_lossy(b);
    s.contains(SECRET) || String::from_utf8_lossy(&gunzip_all(b)).contains(SECRET)
}

// ---------------------------------------------------------------------------
// H1: the credential-echo search decodes only the first member of a gzip
// body, and the body is sent on as it came.
// ---------------------------------------------------------------------------

#[test]
fn h1_credential_echoed_in_a_second_gzip_member_reaches_the_workload() {
    run(|| async {
        let r = rig(BEARER, ALLOW_ALL, "patterns = [\"email\"]").await;
        let got = r.get("/whoami", "").await;
        let plain = gunzip_all(&got.body);
        assert!(
            !holds_secret(&got.body),
            "status {}: the grant's credential reached the workload: {}",
            got.status,
            String::from_utf8_lossy(&plain)
        );
    });
}

// ---------------------------------------------------------------------------
// H2: JSON field rules are matched by member name, and the client names the
// members in many APIs (PostgREST `select=alias:column`, GraphQL aliases).
// ---------------------------------------------------------------------------

#[test]
fn h2_field_rule_dodged_by_a_member_name_the_client_chooses() {
    run(|| async {
        let r = rig(MASKED, ALLOW_ALL, FIELDS).await;
        // Control: the member named `name` is masked.
        let got = r.get("/customers?select=name:name", "").await;
        assert_eq!(got.status, 200, "{got:?}");
        assert!(!got.text().contains(NAME), "control: {}", got.text());
        // The same column under a name the client chose.
        for target in [
            "/customers?select=n:name",
            "/customers?select=n:NAME",
            "/customers?select=n:na%6De",
            "/customers?select=n:na%256De",
            "/customers?select=n:%22name%22",
            "/customers?select=ident:name",
            "/customers?select=Name:name",
        ] {
            let got = r.get(target, "").await;
            assert_eq!(got.status, 200, "{target}: {got:?}");
            assert!(
                !got.text().contains(NAME),
                "{target}: field rule dodged by an alias: {}",
                got.text()
            );
        }
        // A GraphQL alias in the body, as written or escaped.
        for query in [
            "{ customers { n: name } }",
            "{ customers { n: NAME } }",
            "{ customers { n: \u{ff4e}ame } }",
        ] {
            let body = serde_json::json!({ "query": query }).to_string();
            let got = r
                .ask(
                    format!(
                        "POST /graphql HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        r.host(),
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            assert_eq!(got.status, 200, "{query}: {got:?}");
            assert!(
                !got.text().contains(NAME),
                "{query}: field rule dodged by a GraphQL alias: {}",
                got.text()
            );
        }
        // A GraphQL document as the body, sent chunked.
        let doc = "{ customers { n: name } }";
        let got = r
            .ask(
                format!(
                    "POST /graphql HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                     Content-Type: application/graphql\r\nTransfer-Encoding: chunked\r\n\r\n\
                     {:x}\r\n{doc}\r\n0\r\n\r\n",
                    r.host(),
                    doc.len()
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            !got.text().contains(NAME),
            "field rule dodged by a GraphQL alias in a chunked document: {}",
            got.text()
        );
        // The same field in spellings a client binds to it.
        for (k, spelling) in NAME_SPELLINGS.iter().enumerate() {
            let got = r.get(&format!("/keyed?k={k}"), "").await;
            assert_eq!(got.status, 200, "{spelling}: {got:?}");
            assert!(
                !got.text().contains(NAME),
                "{spelling}: field rule dodged by a spelling of the name: {}",
                got.text()
            );
        }
    });
}

// ---------------------------------------------------------------------------
// H3: documents in strings are opened only 4 deep; below that a field rule
// does not apply and the body passes (not refused).
// ---------------------------------------------------------------------------

#[test]
fn h3_field_rule_does_not_apply_below_four_nested_documents() {
    run(|| async {
        let r = rig(MASKED, ALLOW_ALL, FIELDS).await;
        let got = r.get("/deep", "").await;
        // What a client that opens each payload reads.
        let mut v: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_default();
        while let Some(p) = v.get("payload").and_then(|p| p.as_str()) {
            v = serde_json::from_str(p).unwrap_or_default();
        }
        assert!(
            v.get("name").and_then(|n| n.as_str()) != Some(NAME),
            "status {}: a field rule's value passed 5 documents deep: {}",
            got.status,
            got.text()
        );
    });
}

// ---------------------------------------------------------------------------
// HA1: a held request's body is never shown to the approver (nor kept in
// the approval's fingerprint): approving `POST /payments` approves any
// payment.
// ---------------------------------------------------------------------------

#[test]
fn ha1_approver_of_a_post_never_sees_its_body() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "allow"
rules = [ { action = "approve", methods = ["POST"], paths = ["/payments"], name = "payments" } ]"#,
            "patterns = [\"email\"]",
        )
        .await;
        let body = r#"{"amount": 9999999, "to": "DE00-attacker-account"}"#;
        let req = format!(
            "POST /payments HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.host(),
            body.len()
        );
        let addr = r.addr;
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
            all
        });
        let view = r.pending().await.expect("the POST was not held");
        let shown = format!("{view:?}");
        r.decide(&view.id, false, None).await;
        let _ = client.await;
        assert!(
            shown.contains("9999999") && shown.contains("attacker"),
            "the approver decides on a payment without seeing it: {shown}"
        );
    });
}

// ---------------------------------------------------------------------------
// H4: block matchers compare values case-sensitively and as text, while
// the frameworks behind the upstream read `TRUE`, `True`, `1`, `on` as the
// boolean the rule blocks (Java's Boolean.parseBoolean, Rails' and
// Django's boolean casts) and header values case-insensitively.
// ---------------------------------------------------------------------------

#[test]
fn h4_block_rule_values_dodged_by_spellings_the_upstream_reads_alike() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "allow"
rules = [
  { action = "block", paths = ["/orders/**"], query = { force = "true" }, name = "no-force" },
  { action = "block", paths = ["/deploy"], headers = { "X-Env" = "prod*" }, name = "no-prod" },
]"#,
            "patterns = [\"email\"]",
        )
        .await;
        // Control: blocked as written.
        let got = r.get("/orders/7?force=true", "").await;
        assert_eq!(got.status, 403, "control: {got:?}");
        let got = r.get("/deploy", "X-Env: prod-eu\r\n").await;
        assert_eq!(got.status, 403, "control: {got:?}");
        let mut through = Vec::new();
        for (path, extra) in [
            ("/orders/7?force=TRUE", ""),
            ("/orders/7?force=True", ""),
            ("/orders/7?force=1", ""),
            ("/orders/7?force=on", ""),
            ("/deploy", "X-Env: PROD-eu\r\n"),
            ("/deploy", "X-Env: Prod\r\n"),
        ] {
            let got = r.get(path, extra).await;
            if got.status != 403 {
                through.push(format!("{path} {extra:?} -> {}", got.status));
            }
        }
        assert!(
            through.is_empty(),
            "block rules dodged (forwarded upstream): {through:#?}"
        );
    });
}

// ---------------------------------------------------------------------------
// H5: a block rule on a path is matched against the path as written, while
// common frameworks route a format suffix to the same action: Rails'
// `(.:format)` on every route, Spring MVC's suffix pattern matching (the
// default before 5.3), Express/Django apps with `.:format` routes.
// ---------------------------------------------------------------------------

#[test]
fn h5_block_rule_on_a_path_dodged_by_a_format_suffix() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "allow"
rules = [ { action = "block", paths = ["/admin/**"], name = "no-admin" } ]"#,
            "patterns = [\"email\"]",
        )
        .await;
        let got = r.get("/admin", "").await;
        assert_eq!(got.status, 403, "control: {got:?}");
        let got = r.get("/admin/users", "").await;
        assert_eq!(got.status, 403, "control: {got:?}");
        let mut through = Vec::new();
        for path in [
            "/admin.json",
            "/admin.",
            "/admin/users.json",
            "/admin.html/",
            // S4-H2 (session 4): case. Express's router (caseSensitive:
            // false), ASP.NET Core and IIS route `/ADMIN` to the `/admin`
            // handler by default; block and approve rules now read paths
            // without regard to case, as they read values (H4).
            "/ADMIN/users",
            "/Admin",
            "/aDmin/users.json",
        ] {
            let got = r.get(path, "").await;
            if got.status != 403 {
                through.push(format!("{path} -> {}", got.status));
            }
        }
        assert!(
            through.is_empty(),
            "block rule dodged by a format suffix or case: {through:#?}"
        );
        // Allowed paths are untouched.
        assert_eq!(r.get("/public/Admin", "").await.status, 200);

        // S4-H5: an encoded '%' that makes another escape reaches an
        // upstream that decodes twice (nginx with variables in proxy_pass,
        // IIS) as `..` or `/`: refused.
        for path in ["/x/%252e%252e/admin/users", "/admin%252fusers"] {
            let got = r.get(path, "").await;
            assert_eq!(got.status, 400, "{path}: {got:?}");
        }
    });
}

// ---------------------------------------------------------------------------
// Probes that held: ambiguous framing, other hosts, overrides, folding.
// ---------------------------------------------------------------------------

#[test]
fn held_probes_requests_read_differently_upstream_are_refused() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "allow"
rules = [
  { action = "block", paths = ["/admin/**"], name = "no-admin" },
  { action = "block", methods = ["DELETE"], name = "no-delete" },
]"#,
            "patterns = [\"email\"]",
        )
        .await;
        let h = r.host();
        let cases: Vec<(String, &[u16])> = vec![
            (
                format!(
                    "POST /x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                ),
                &[400],
            ),
            (
                format!(
                    "POST /x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd"
                ),
                &[400],
            ),
            (
                format!(
                    "POST /x HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
                ),
                &[400, 501],
            ),
            (
                format!(
                    "POST /x HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
                ),
                &[400, 501],
            ),
            (
                format!("GET /x HTTP/1.1\r\nHost: {h}\r\nX-Foo: a\r\n b\r\n\r\n"),
                &[400],
            ),
            (
                format!("GET /x HTTP/1.1\r\nHost: {h}\r\nHost: other.example\r\n\r\n"),
                &[400, 421],
            ),
            (
                format!("GET http://other.example/x HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400, 421],
            ),
            (
                format!("GET /x HTTP/1.1\r\nHost: {h}\r\nX-Forwarded-Host: other.example\r\n\r\n"),
                &[421],
            ),
            (
                format!("GET /x HTTP/1.1\r\nHost: {h}\r\nForwarded: host=other.example\r\n\r\n"),
                &[421],
            ),
            (
                format!(
                    "POST /orders/7 HTTP/1.1\r\nHost: {h}\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n"
                ),
                &[403],
            ),
            (
                format!(
                    "POST /orders/7 HTTP/1.1\r\nHost: {h}\r\nX_HTTP_Method_Override: DELETE\r\nContent-Length: 0\r\n\r\n"
                ),
                &[400, 403],
            ),
            (
                format!(
                    "POST /orders/7?_method=DELETE HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\n\r\n"
                ),
                &[403],
            ),
            (
                format!(
                    "POST /orders/7 HTTP/1.1\r\nHost: {h}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\n_method=DELETE"
                ),
                &[403],
            ),
            (
                format!("delete /orders/7 HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400, 403, 405, 501],
            ),
            (
                format!("GET /public/..%2fadmin HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400],
            ),
            (
                format!("GET /public/..;/admin HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400, 403],
            ),
            (
                format!("GET /%61dmin HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[403],
            ),
            (
                format!("GET /admin;x=1 HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[403],
            ),
            (
                format!("GET /public/\u{ff0e}\u{ff0e}/admin HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400],
            ),
            (
                format!("GET /public\\..\\admin HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                &[400],
            ),
            (
                format!("GET /x HTTP/1.1\r\nHost: {h}\r\nX-Original-URL: /admin\r\n\r\n"),
                &[403],
            ),
            (
                format!(
                    "GET /x HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                ),
                &[400, 403],
            ),
            (
                format!(
                    "GET /x HTTP/1.1\r\nHost: {h}\r\n\r\nGET /admin HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
                ),
                &[],
            ),
        ];
        let mut bad = Vec::new();
        for (req, want) in cases {
            let before = r.seen.lock().unwrap().len();
            let got = r.ask(req.as_bytes()).await;
            let seen: Vec<String> = r.seen.lock().unwrap()[before..]
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            if want.is_empty() {
                // Pipelined: the second (blocked) request never goes up.
                if seen.iter().any(|s| s.contains("/admin")) {
                    bad.push(format!("{req:?}: forwarded {seen:?}"));
                }
                continue;
            }
            if !want.contains(&got.status) || !seen.is_empty() {
                bad.push(format!("{req:?}: status {} forwarded {seen:?}", got.status));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
}

// ---------------------------------------------------------------------------
// H6: the echo check looks for the grant's secret only; a session the
// upstream derives from it (Set-Cookie, an OAuth token in the body) reaches
// the workload, which can use it wherever that upstream's sessions are
// accepted without Warden (another host of the cookie's domain).
// ---------------------------------------------------------------------------

#[test]
fn h6_session_cookie_derived_from_the_injected_credential_reaches_the_workload() {
    run(|| async {
        for grant in [BEARER, MASKED] {
            let r = rig(grant, ALLOW_ALL, "patterns = [\"email\"]").await;
            let got = r.get("/session", "").await;
            assert_eq!(got.status, 200, "{got:?}");
            assert!(
                !got.head.to_ascii_lowercase().contains("set-cookie"),
                "a session cookie issued for the grant's credential reached the workload:\n{}",
                got.head
            );
            assert!(
                !got.text().contains("derived-token-9c1e"),
                "a token issued for the grant's credential reached the workload: {}",
                got.text()
            );
            // Tokens in headers and nested members of a token service.
            let got = r.get("/v3/auth/tokens", "").await;
            assert_eq!(got.status, 201, "{got:?}");
            let all = format!("{}{}", got.head, got.text());
            assert!(
                !all.contains("derived-"),
                "a credential issued for the grant's reached the workload:\n{all}"
            );
            let got = r.get("/oauth/authorize", "").await;
            assert_eq!(got.status, 302, "{got:?}");
            assert!(
                !got.head.contains("derived-") && got.head.contains("state=s1"),
                "a token issued in a redirect reached the workload:\n{}",
                got.head
            );
            let got = r.get("/login/oauth/access_token", "").await;
            assert_eq!(got.status, 200, "{got:?}");
            assert!(
                !got.text().contains("derived-") && got.text().contains("scope=repo"),
                "a token issued in a form body reached the workload: {}",
                got.text()
            );
            // The upstream session still works through Warden: the jar sends
            // the cookie back (the workload's own Cookie is replaced).
            let got = r.get("/next", "Cookie: sid=forged\r\n").await;
            assert_eq!(got.status, 200, "{got:?}");
            let seen = r.seen.lock().unwrap();
            let last = String::from_utf8_lossy(seen.last().unwrap()).to_ascii_lowercase();
            assert!(
                last.contains("cookie: sid=derived-session-7f3a")
                    && last.contains("legacy=derived-legacy-11aa")
                    && !last.contains("forged"),
                "the grant's cookie jar was not sent upstream:\n{last}"
            );
        }
    });
}

/// `issued = "pass"`: the documented knob gives the workload what the
/// upstream issued (as before H6).
#[test]
fn h6_issued_pass_gives_the_workload_the_cookie() {
    run(|| async {
        let grant = BEARER.replace(
            "file = \"{secret}\" }",
            "file = \"{secret}\", issued = \"pass\" }",
        );
        let r = rig(&grant, ALLOW_ALL, "patterns = [\"email\"]").await;
        let got = r.get("/session", "").await;
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            got.head
                .to_ascii_lowercase()
                .contains("set-cookie: sid=derived"),
            "{}",
            got.head
        );
        assert!(got.text().contains("derived-token-9c1e"), "{}", got.text());
    });
}

// ---------------------------------------------------------------------------
// Session 3 (s3-httpattack).
// ---------------------------------------------------------------------------

// S3-H1: a block rule on GET does not hold HEAD, which every common server
// and framework routes to the GET handler (nginx, Rails, Flask, Express,
// Django, Spring): the handler runs (its side effects happen) and the
// response head (Content-Length, ETag, Location, cookies) reaches the
// workload.
#[test]
fn s3_h1_block_rule_on_get_dodged_by_head() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "allow"
rules = [ { action = "block", methods = ["GET"], paths = ["/admin/**"], name = "no-admin-read" } ]"#,
            "patterns = [\"email\"]",
        )
        .await;
        let got = r.get("/admin/export", "").await;
        assert_eq!(got.status, 403, "control: {got:?}");
        let got = r
            .ask(
                format!(
                    "HEAD /admin/export HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    r.host()
                )
                .as_bytes(),
            )
            .await;
        let reached = r
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.starts_with(b"HEAD /admin"));
        assert!(
            got.status == 403 && !reached,
            "HEAD ran the GET handler a block rule refuses: {got:?}"
        );
    });
}

// S3-H2: a field rule on `name` misses a form field or JSON member whose
// name nests it (`customer[name]`, `name[]`, `customer.name`), which `qs`,
// Rack, PHP and Spring's binder read as the member `name`.
#[test]
fn s3_h2_field_rule_dodged_by_nested_parameter_names() {
    run(|| async {
        let r = rig(MASKED, ALLOW_ALL, FIELDS).await;
        for path in ["/form-nested", "/flat"] {
            let got = r.get(path, "").await;
            let text = got.text();
            assert!(
                !text.contains("Alice") && (got.status == 200 || got.status == 502),
                "{path}: a field masked by name reached the workload under a nested name: {got:?}"
            );
        }
        // The other fields stay as they were.
        let got = r.get("/form-nested", "").await;
        assert!(got.text().contains("id=1"), "{got:?}");
    });
}

// S3-H3: a response in a transfer coding other than chunked
// (`Transfer-Encoding: gzip`, framed by the close) is passed with its
// coding unnamed and unread: the credential echoed in it reaches the
// workload, gzip-ed.
#[test]
fn s3_h3_credential_echoed_in_a_transfer_coding_reaches_the_workload() {
    run(|| async {
        let r = rig(BEARER, ALLOW_ALL, "patterns = [\"email\"]").await;
        let got = r.get("/te-gzip", "").await;
        assert!(
            !holds_secret(&got.body),
            "the credential reached the workload in a transfer coding: {got:?}"
        );
        assert_eq!(got.status, 502, "{got:?}");
    });
}

// S3-H4: on a grant with a credential (no masking), `Range` goes upstream:
// an echo that honours it hands the workload the credential in pieces,
// each shorter than any form the search looks for.
#[test]
fn s3_h4_credential_echoed_in_ranges_reaches_the_workload() {
    run(|| async {
        let r = rig(BEARER, ALLOW_ALL, "patterns = [\"email\"]").await;
        let got = r.get("/echo-range", "").await;
        assert_eq!(
            got.status, 502,
            "control: the whole echo is refused: {got:?}"
        );
        let mut joined = Vec::new();
        for (a, b) in [(0, 20), (21, 29), (30, 200)] {
            let got = r
                .get("/echo-range", &format!("Range: bytes={a}-{b}\r\n"))
                .await;
            if got.status == 206 {
                joined.extend_from_slice(&got.body);
            }
        }
        assert!(
            !holds_secret(&joined),
            "the credential reached the workload in ranges: {}",
            String::from_utf8_lossy(&joined)
        );
    });
}

// ---------------------------------------------------------------------------
// Session 4 attacks (round 4 of issue 15).
// ---------------------------------------------------------------------------

/// A POST on a new connection: `content_type` (when some) and `body`.
fn post(host: &str, path: &str, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let ct = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn reached(r: &Rig, prefix: &str) -> bool {
    r.seen
        .lock()
        .unwrap()
        .iter()
        .any(|q| q.starts_with(prefix.as_bytes()))
}

/// Sends each `(path, content type, body)` POST on a new connection and
/// lists those whose status is not `want`.
async fn posts_not(r: &Rig, want: u16, cases: &[(&str, Option<&str>, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, ct, body) in cases {
        let got = r.ask(&post(&r.host(), path, *ct, body)).await;
        if got.status != want {
            out.push(format!("{path} {ct:?} {body} -> {}", got.status));
        }
    }
    out
}

// S4-H1: parameters in a body whose Content-Type names no parameter format
// (none at all, text/plain, application/octet-stream) are parameters to
// the application all the same: FastAPI reads an untyped body as JSON, Go
// handlers decode JSON whatever the type, Flask's get_json(force=True) and
// Express's json({type: '*/*'}) too, and Rack (Rails, Sinatra) parses an
// untyped POST body as a form. Warden read body parameters only by type:
// a block rule on a parameter was dodged, and an allow rule that requires
// a value was met while the body said otherwise.
#[test]
fn s4_h1_body_parameters_under_a_type_that_names_no_format() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "deny"
rules = [
  { action = "allow", methods = ["POST"], paths = ["/deploy"], name = "deploy" },
  { action = "block", methods = ["POST"], paths = ["/deploy"], query = { force = "true" }, name = "no-force" },
  { action = "allow", methods = ["POST"], paths = ["/charge"], query = { dry_run = "true" }, name = "dry-only" },
  { action = "allow", methods = ["POST"], paths = ["/items/*"], name = "items-post" },
]"#,
            "patterns = [\"email\"]",
        )
        .await;
        let dry = "/charge?dry_run=true";
        let mut through = posts_not(
            &r,
            403,
            &[
                // Controls: a JSON body is read.
                ("/deploy", Some("application/json"), "{\"force\": true}"),
                (dry, Some("application/json"), "{\"dry_run\": false}"),
                ("/deploy", None, "{\"force\": true}"),
                ("/deploy", Some("text/plain"), "{\"force\": \"true\"}"),
                (
                    "/deploy",
                    Some("application/octet-stream"),
                    "{\"force\": 1}",
                ),
                (
                    "/deploy",
                    Some("text/plain; charset=utf-8"),
                    " {\"Force\": true}",
                ),
                ("/deploy", None, "force=true"),
                ("/deploy", Some("application/x-unknown"), "a=1&force=on"),
                (dry, None, "{\"dry_run\": false}"),
                (dry, Some("text/plain"), "dry_run=false"),
            ],
        )
        .await;
        // S4-H4: a body in a charset other than UTF-8 is read otherwise by
        // the upstream: Tomcat (Spring) percent-decodes form bytes and then
        // decodes them in the declared charset, so `%00f%00o…` is `force`
        // in UTF-16BE; Jackson reads a UTF-16 JSON document by its bytes.
        for (ct, body) in [
            (
                Some("application/x-www-form-urlencoded; charset=UTF-16BE"),
                "%00f%00o%00r%00c%00e=%00t%00r%00u%00e",
            ),
            (
                Some("application/x-www-form-urlencoded;charset=\"utf-16\""),
                "%FE%FF%00f%00o%00r%00c%00e=%FE%FF%00t%00r%00u%00e",
            ),
            (
                Some("application/json; charset=utf-7"),
                "{\"+AGY-orce\": true}",
            ),
            (
                Some("text/plain"),
                "\u{0}{\u{0}\"\u{0}f\u{0}o\u{0}r\u{0}c\u{0}e\u{0}\"\u{0}:\u{0}1\u{0}}",
            ),
        ] {
            let got = r.ask(&post(&r.host(), "/deploy", ct, body)).await;
            if ![400, 403, 415].contains(&got.status) {
                through.push(format!("{ct:?} {body:?} -> {}", got.status));
            }
        }
        // Rack parses an untyped POST body as a form and its MethodOverride
        // turns `_method=DELETE` into a DELETE before routing.
        through.extend(posts_not(&r, 403, &[("/items/7", None, "_method=DELETE")]).await);
        assert!(
            through.is_empty() && !reached(&r, "POST /deploy") && !reached(&r, "POST /items"),
            "a parameter rule dodged by a body of another type: {through:#?}"
        );
        // Benign: untyped bodies without the parameter still go through.
        let refused = posts_not(
            &r,
            200,
            &[
                ("/deploy", None, "{\"force\": false}"),
                (
                    "/deploy",
                    Some("application/octet-stream"),
                    "\u{1}\u{2}binary",
                ),
                (dry, None, "{\"amount\": 5}"),
            ],
        )
        .await;
        assert!(refused.is_empty(), "{refused:#?}");
    });
}

// S4-H3: on a credential grant that allows WebSocket upgrades, the tunnel
// is searched for the credential in the bytes as they come, but the
// workload chooses their encoding: offered `permessage-deflate`, the
// upstream compresses its messages and the echoed credential passed the
// search (the Accept-Encoding of upgraded connections).
#[test]
fn s4_h3_credential_echoed_in_a_compressed_websocket_message() {
    run(|| async {
        let r = rig_with_target(
            BEARER,
            ALLOW_ALL,
            "patterns = [\"email\"]",
            "allow_upgrade = [\"websocket\"]",
        )
        .await;
        let ask = |ext: &str| {
            format!(
                "GET /ws{} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
                if ext.is_empty() { "-always" } else { "" },
                r.host()
            )
        };
        // An upstream that compresses unasked: its 101 is refused.
        let got = r.ask(ask("").as_bytes()).await;
        assert_eq!(got.status, 502, "compressed unasked: {got:?}");
        let got = r
            .ask(
                ask("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
                    .as_bytes(),
            )
            .await;
        // What the workload's WebSocket library reads: each frame's
        // payload, inflated when RSV1 says so.
        let mut seen = got.body.clone();
        let mut b = &got.body[..];
        while b.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([b[2], b[3]])).min(b.len() - 4);
            let payload = &b[4..4 + len];
            if b[0] & 0x40 != 0 {
                let mut d = flate2::read::DeflateDecoder::new(payload);
                let _ = d.read_to_end(&mut seen);
            }
            b = &b[4 + len..];
        }
        assert!(
            !holds_secret(&seen),
            "the credential reached the workload in a compressed WebSocket message: {got:?}"
        );
    });
}

// S4-H6: a cookie is a parameter to ASP.NET's `Request[name]` and PHP's
// `$_REQUEST` (its built-in request order): `Cookie: force=true` dodged a
// block rule on the parameter (a grant without a credential passes the
// workload's cookies on).
#[test]
fn s4_h6_block_rule_on_a_parameter_dodged_by_a_cookie() {
    run(|| async {
        let r = rig(
            "",
            r#"default = "allow"
rules = [ { action = "block", paths = ["/orders/*"], query = { force = "true" }, name = "no-force" } ]"#,
            "patterns = [\"email\"]",
        )
        .await;
        assert_eq!(
            r.get("/orders/7?force=true", "").await.status,
            403,
            "control"
        );
        for cookie in ["sid=1; force=true", "FORCE=\"TRUE\"", "force=%74rue"] {
            let got = r.get("/orders/7", &format!("Cookie: {cookie}\r\n")).await;
            assert_eq!(
                got.status, 403,
                "a parameter in a cookie: {cookie}: {got:?}"
            );
        }
        assert_eq!(r.get("/orders/7", "Cookie: sid=1\r\n").await.status, 200);
    });
}

// S5-H1: an untyped POST body was read whole (Rack parses it as a form and
// its MethodOverride reads `_method` there) even where no method an
// override could choose is judged otherwise: a body larger than
// max_message_bytes was refused 413 although nothing in it could change
// the decision. A body Warden must inspect (a rule reads parameters of
// the request, or a method `_method` could name is decided otherwise on
// this path) and cannot is still refused; one it need not inspect streams.
#[test]
fn s5_h1_large_untyped_body_streams_when_nothing_in_it_can_matter() {
    run(|| async {
        let r = rig(
            BEARER,
            r#"default = "deny"
rules = [
  { action = "allow", paths = ["/upload/*"], name = "uploads" },
  { action = "allow", methods = ["POST"], paths = ["/items/*"], name = "items-post" },
  { action = "allow", methods = ["POST"], paths = ["/deploy"], name = "deploy" },
  { action = "block", methods = ["POST"], paths = ["/deploy"], query = { force = "true" }, name = "no-force" },
]"#,
            "",
        )
        .await;
        let big = "x".repeat(2 << 20);
        // Every method is decided alike on /upload: nothing to read.
        let got = r.ask(&post(&r.host(), "/upload/a", None, &big)).await;
        assert_eq!(got.status, 200, "a large untyped upload was refused");
        let forwarded = r
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|q| q.starts_with(b"POST /upload/a"))
            .map(Vec::len)
            .unwrap_or(0);
        assert!(forwarded > big.len(), "the body did not reach the upstream");
        // `_method=DELETE` would make it a DELETE, denied there: read, and
        // too large to read.
        let got = r.ask(&post(&r.host(), "/items/7", None, &big)).await;
        assert_eq!(got.status, 413);
        // A parameter rule applies: too large to read.
        let got = r.ask(&post(&r.host(), "/deploy", None, &big)).await;
        assert_eq!(got.status, 413);
        assert!(!reached(&r, "POST /items") && !reached(&r, "POST /deploy"));
        // Small bodies are still read where they can matter.
        let through = posts_not(&r, 403, &[("/items/7", None, "_method=DELETE")]).await;
        assert!(through.is_empty(), "{through:#?}");
    });
}
