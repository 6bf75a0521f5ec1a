//! Fuzzes the HTTP request side as the proxy reads a request
//! (`proxy::http`, `one`): the head at production's limit (`MAX_HEAD`,
//! 64 KiB), its framing, the target normalised, the Host checks of the
//! target's one virtual host, method/path overrides, query and header
//! parameters, the protocol upgrade, the body parameters of a body read
//! whole, then the head as it is forwarded (hop-by-hop headers stripped,
//! credentials and framing headers replaced). Nothing may panic; a
//! re-written head parses back to the same method, target and headers; a
//! normalised path normalises to itself; the forwarded head carries none
//! of the stripped headers and exactly one Host.
#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warden::protocol::http::{
    BodyDecoder, BodyEvent, BodyKind, Headers, RequestHead, params, parse_request,
    parse_workload_request, path, remove_header, request_body, set_header, strip_hop_by_hop,
    write_request,
};
use warden::proxy::http::{MAX_HEAD, PIECE, request, upgrade_of};

static NAMES: LazyLock<request::HostNames> = LazyLock::new(|| {
    let cfg = warden_fuzz::config();
    match cfg.target("web") {
        Some(t) => request::HostNames::new(t),
        None => panic!("fuzz.toml has no target web"),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, n))) = parse_workload_request(data, MAX_HEAD) else {
        return;
    };
    let mut out = Vec::new();
    write_request(&head, &mut out);
    let (again, _) = parse_request(&out, MAX_HEAD + out.len())
        .expect("a written head parses")
        .expect("complete");
    assert_eq!(again.method, head.method);
    assert_eq!(again.target, head.target);
    assert_eq!(again.headers, head.headers);

    let Ok(kind) = request_body(&head) else {
        return;
    };
    let Ok(target) = path::normalize(&head.target) else {
        return;
    };
    let twice = path::normalize(&target.forward()).expect("a normalised target normalises");
    assert_eq!(twice.path, target.path);
    assert_eq!(twice.match_path, target.match_path);
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return;
    }
    let sni = (data.len() % 3 == 0).then_some("api.internal");
    let _ = NAMES.check(&head, &target, sni);
    let query = target
        .query
        .as_deref()
        .map(params::query_params)
        .unwrap_or_default();
    let _ = request::header_override(&head).or_else(|| request::param_override(&query, "query"));
    let Ok(format) = params::body_format(head.all("content-type")) else {
        return;
    };
    let format = format.filter(|_| kind != BodyKind::Empty);
    if format.is_some() {
        let _ = request::coded_params(&head);
    }
    let _ = params::header_params(
        head.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice())),
    );
    let upgrade = upgrade_of(&head, &["websocket".to_owned()]);
    let _ = target.query.as_deref().map(path::query_pairs);

    // The body, decoded from the rest of the input in small pieces (every
    // decoder state is reached), bounded like `read_body`.
    let limit = warden_fuzz::config()
        .target("web")
        .map_or(1 << 24, |t| t.max_message_bytes);
    let mut dec = BodyDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut rest = &data[n..];
    let mut body = Vec::new();
    let complete = loop {
        match dec.decode(&mut buf, PIECE) {
            Ok(Some(BodyEvent::Data(d))) => {
                assert!(!d.is_empty() && d.len() <= PIECE);
                if body.len() + d.len() > limit {
                    break false;
                }
                body.extend_from_slice(&d);
            }
            Ok(Some(BodyEvent::End)) => break true,
            Ok(None) if rest.is_empty() => break false,
            Ok(None) => {
                let k = rest.len().min(3);
                buf.extend_from_slice(&rest[..k]);
                rest = &rest[k..];
            }
            Err(_) => break false,
        }
    };
    assert!(body.len() <= data.len());
    if complete
        && let Some(f) = &format
        && let Ok(found) = params::body_params(f, &body)
    {
        let _ = request::param_override(&found, "body");
    }

    // The forwarded head.
    let mut fwd = head.headers.clone();
    strip_hop_by_hop(&mut fwd);
    for h in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "expect",
        "content-length",
    ] {
        remove_header(&mut fwd, h);
    }
    set_header(&mut fwd, "Host", NAMES.authority());
    if let Ok(Some(u)) = &upgrade {
        set_header(&mut fwd, "connection", "upgrade");
        set_header(&mut fwd, "upgrade", u.as_bytes());
    }
    if let BodyKind::Length(n) = kind {
        set_header(&mut fwd, "Content-Length", n.to_string());
    }
    if kind == BodyKind::Chunked {
        set_header(&mut fwd, "Transfer-Encoding", "chunked");
    }
    let up = RequestHead {
        method: head.method.to_ascii_uppercase(),
        target: target.forward(),
        version: 1,
        headers: fwd,
    };
    for h in ["authorization", "proxy-authorization", "cookie", "expect"] {
        assert!(up.get(h).is_none(), "{h} forwarded");
    }
    assert_eq!(up.all("host").count(), 1, "one Host forwarded");
    if !matches!(upgrade, Ok(Some(_))) {
        assert!(
            up.get("upgrade").is_none(),
            "an upgrade not allowed is forwarded"
        );
    }
    let mut bytes = Vec::new();
    write_request(&up, &mut bytes);
    let (fwd_again, used) = parse_request(&bytes, bytes.len())
        .expect("the forwarded head parses")
        .expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(fwd_again.target, up.target);
    assert_eq!(request_body(&fwd_again).ok(), request_body(&up).ok());
});
