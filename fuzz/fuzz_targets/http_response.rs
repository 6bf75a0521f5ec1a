//! Fuzzes the HTTP response side as the proxy reads an upstream answer
//! (`proxy::http`, `one` and `respond`): the head at production's limit
//! (`MAX_HEAD`), the head masked and its reason phrase replaced, the
//! framing for the request's method, the masking plan of a masked grant,
//! the body decoded in pieces (chunked, length, read-until-close with its
//! end of stream), bounded by `max_message_bytes`, gzip/deflate decoded
//! and masked as JSON, form or text.
//!
//! The first input byte picks the request method and whether the upstream
//! closes after the bytes given; the rest is the upstream's byte stream.
//! Nothing may panic; a head re-writes to one that parses back the same;
//! a masked head and a masked body (as a client decodes its values) hold
//! no value a detector of the grant's masking still finds.
#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warden::masking::Masker;
use warden::masking::json::FieldRules;
use warden::protocol::http::{
    BodyDecoder, BodyEvent, parse_response, response_body, strip_hop_by_hop, write_response,
};
use warden::proxy::http::response::{self, Coding, Plan};
use warden::proxy::http::{MAX_HEAD, PIECE, decode_body};

static WEB: LazyLock<(std::sync::Arc<Masker>, std::sync::Arc<FieldRules>)> =
    LazyLock::new(|| warden_fuzz::masking("web"));

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH",
];

fuzz_target!(|data: &[u8]| {
    let Some((sel, stream)) = warden_fuzz::selector(data) else {
        return;
    };
    let method = METHODS[usize::from(sel) % METHODS.len()];
    let closes = sel & 0x80 != 0;
    let (m, fields) = &*WEB;
    let limit = warden_fuzz::config()
        .target("web")
        .map_or(1 << 24, |t| t.max_message_bytes);

    let Ok(Some((mut resp, n))) = parse_response(stream, MAX_HEAD) else {
        return;
    };
    let mut out = Vec::new();
    write_response(&resp, &mut out);
    let (again, _) = parse_response(&out, MAX_HEAD + out.len())
        .expect("a written head parses")
        .expect("complete");
    assert_eq!(again.status, resp.status);
    assert_eq!(again.headers, resp.headers);

    resp.reason = response::reason_phrase(resp.status).to_owned();
    response::mask_head(m, &mut resp.headers);
    if resp.status == 101 || (100..200).contains(&resp.status) {
        return;
    }
    let Ok(kind) = response_body(method, &resp) else {
        return;
    };
    let plan = response::plan(&resp, kind, Some(fields));
    let coding = Coding::of(&resp);
    strip_hop_by_hop(&mut resp.headers);
    for h in &resp.headers {
        // Masked as a whole header value: nothing a detector finds is left
        // (hop-by-hop ones are gone; the framing ones are not data:
        // `response_body` accepted them).
        if ["content-length", "transfer-encoding"].contains(&h.name.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let Ok(v) = std::str::from_utf8(&h.value) {
            assert_eq!(m.mask_str(v).1, 0, "header {} keeps {v:?}", h.name);
        }
    }

    // The body, from the rest of the stream in small pieces.
    let mut dec = BodyDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut rest = &stream[n..];
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
            Ok(None) if rest.is_empty() => {
                // The upstream's end of stream: only a read-until-close
                // body (or one already complete) ends here.
                break closes && dec.eof().is_ok();
            }
            Ok(None) => {
                let k = rest.len().min(5);
                buf.extend_from_slice(&rest[..k]);
                rest = &rest[k..];
            }
            Err(_) => break false,
        }
    };
    assert!(body.len() <= stream.len());
    let Plan::Mask { class, .. } = plan else {
        return;
    };
    if !complete {
        return;
    }
    let plain = match coding {
        Coding::Gzip | Coding::Deflate => match decode_body(&body, coding == Coding::Gzip, limit) {
            Some(p) => p,
            None => return,
        },
        Coding::Identity => body,
        Coding::Other(_) => return,
    };
    assert!(plain.len() <= limit);
    if let Ok((masked, _)) = warden_fuzz::mask_body(m, fields, class, &plain) {
        for v in warden_fuzz::decoded_values(class, &masked) {
            assert!(
                m.mask_patterns(&v).is_none(),
                "a masked {class:?} body still holds {:?}",
                String::from_utf8_lossy(&v)
            );
        }
    }
});
