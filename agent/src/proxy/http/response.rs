//! What becomes of an upstream response on a grant with a masking: masked
//! whole, passed as it is because the masking says so, or refused (`502`)
//! because Warden cannot mask it. Pure code; the proxy does the I/O.
//!
//! A response body is masked when it is JSON (`*/json`, `*/x-json`,
//! `*/*+json`), form-urlencoded, or text (`text/*` but event streams,
//! `application/xml`, `*/*+xml`) on a masking without field rules, in
//! UTF-8, ASCII or a Latin charset, in no content coding or in gzip or
//! deflate. Everything else is refused before its body is read, unless the
//! masking lists the type in `unmasked_types` (or the coding in
//! `unmasked_encodings`): it then passes unmasked and the result event says
//! so. In particular:
//! - a body without `Content-Type`, or with two different ones;
//! - NDJSON, JSON sequences, event streams, multipart (`byteranges` too),
//!   msgpack, protobuf, octet streams, images...;
//! - text when the masking has field rules, which only JSON and forms can
//!   honour (a listed text type still gets the patterns);
//! - a partial response (`206`) of a type Warden masks (its pieces, each
//!   harmless alone, would add up): `Range` is removed from requests on a
//!   masked grant, so only an upstream that ignores that sends one;
//! - several content codings, or one Warden cannot decode.
//!
//! The response head is masked too: the detectors run on every header
//! value (a header whose name holds a match is dropped) and the reason
//! phrase is replaced by the standard one.

use crate::masking::Masker;
use crate::masking::json::{FORM_TYPE, FieldRules, is_json_type, undecodable};
use crate::protocol::http::{
    BodyKind, Header, Headers, ResponseHead, media_type, remove_header, tokens,
};

use super::echo::Echo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyClass {
    Json,
    Form,
    Text,
}

/// The content coding of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    /// Anything else, or several codings (as written, lower case).
    Other(String),
}

impl Coding {
    /// From every `Content-Encoding` header (`identity` dropped).
    pub fn of(resp: &ResponseHead) -> Coding {
        let list: Vec<String> = tokens(resp, "content-encoding")
            .into_iter()
            .filter(|t| t != "identity")
            .collect();
        match list.as_slice() {
            [] => Coding::Identity,
            [one] if one == "gzip" || one == "x-gzip" => Coding::Gzip,
            [one] if one == "deflate" => Coding::Deflate,
            _ => Coding::Other(list.join(", ")),
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Read the body whole, decode it and mask it; `note` says what of the
    /// masking the configuration waived.
    Mask {
        class: BodyClass,
        note: Option<String>,
    },
    /// Send it as it is; `note` says why it is not masked, when masking
    /// applies to the grant.
    Stream { note: Option<String> },
    /// Refuse it (502), for this reason.
    Refuse(String),
}

/// Charsets in which the detectors read what a client reads (ASCII
/// characters are the same bytes).
const READABLE_CHARSETS: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "latin1",
    "windows-1252",
];

/// The class of a media type Warden masks; `None` for any other.
fn class_of(essence: &str) -> Option<BodyClass> {
    if is_json_type(essence) {
        Some(BodyClass::Json)
    } else if essence == FORM_TYPE {
        Some(BodyClass::Form)
    } else if (essence.starts_with("text/") && essence != "text/event-stream")
        || essence == "application/xml"
        || essence.ends_with("+xml")
    {
        Some(BodyClass::Text)
    } else {
        None
    }
}

/// Decides what becomes of a response of `kind` on a grant whose masking
/// has `rules` (`None`: no masking).
pub fn plan(resp: &ResponseHead, kind: BodyKind, rules: Option<&FieldRules>) -> Plan {
    let Some(rules) = rules else {
        return Plan::Stream { note: None };
    };
    if kind == BodyKind::Empty {
        return Plan::Stream { note: None };
    }
    let mut types: Vec<String> = resp
        .all("content-type")
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        .collect();
    types.dedup();
    if types.len() > 1 {
        return Plan::Refuse(format!(
            "several Content-Type headers ({}): a client could read either",
            types.join(" | ")
        ));
    }
    let mt = types.first().map(|t| media_type(t));
    let essence = mt.as_ref().map_or("", |m| m.essence.as_str());
    let listed = || {
        rules
            .passes_type(essence)
            .then(|| format!("not masked: content-type {essence} passes unmasked (unmasked_types)"))
    };
    let unmaskable = |why: String| match listed() {
        Some(note) => Plan::Stream { note: Some(note) },
        None => Plan::Refuse(format!(
            "{why}; list the type in the masking's unmasked_types to let it pass unmasked"
        )),
    };
    let Some(class) = class_of(essence) else {
        return if essence.is_empty() {
            Plan::Refuse("a response body without a (valid) Content-Type cannot be masked".into())
        } else {
            unmaskable(format!("content-type {essence} cannot be masked"))
        };
    };
    if let Some(cs) = mt.as_ref().and_then(|m| m.charset.as_deref())
        && !READABLE_CHARSETS.contains(&cs)
    {
        return unmaskable(format!("charset {cs} of {essence} cannot be masked"));
    }
    let mut note = None;
    if class == BodyClass::Text && rules.has_fields() {
        match listed() {
            Some(_) => {
                note = Some(format!(
                    "field rules not applied: {essence} is text (unmasked_types); patterns applied"
                ))
            }
            None => {
                return Plan::Refuse(format!(
                    "field rules cannot be applied to {essence}; list the type in the \
                     masking's unmasked_types to let it pass with the patterns only"
                ));
            }
        }
    }
    if resp.status == 206 {
        return Plan::Refuse(format!(
            "a partial response (206) of {essence} cannot be masked: its pieces are judged \
             apart"
        ));
    }
    match Coding::of(resp) {
        Coding::Identity | Coding::Gzip | Coding::Deflate => Plan::Mask { class, note },
        Coding::Other(coding) if undecodable(&coding) && rules.passes_unmasked(&coding) => {
            Plan::Stream {
                note: Some(format!(
                    "not masked: content-encoding {coding} passes unmasked (unmasked_encodings)"
                )),
            }
        }
        Coding::Other(coding) => {
            Plan::Refuse(format!("content-encoding {coding:?} cannot be masked"))
        }
    }
}

/// Headers the detectors leave alone (framing).
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// Masks the values of a response head with the detectors; a header whose
/// name holds a match is dropped. Returns how many were masked.
pub fn mask_head(m: &Masker, headers: &mut Vec<Header>) -> usize {
    let mut n = 0;
    headers.retain(|h| {
        let hit = m.mask_str(&h.name).1 > 0;
        n += usize::from(hit);
        !hit
    });
    for h in headers.iter_mut() {
        if FRAMING.iter().any(|f| h.name.eq_ignore_ascii_case(f)) {
            continue;
        }
        if let Some((v, c)) = m.mask_patterns(&h.value) {
            h.value = v;
            n += c;
        }
    }
    n
}

/// Where the secret shows in a response head, if it does.
pub fn echo_in_head(e: &Echo, resp: &ResponseHead) -> Option<String> {
    if let Some(form) = e.find_decoded(resp.reason.as_bytes()) {
        return Some(format!("the reason phrase ({form})"));
    }
    resp.headers.iter().find_map(|h| {
        e.find_decoded(h.name.as_bytes())
            .or_else(|| e.find_decoded(&h.value))
            .map(|form| {
                format!(
                    "header {} ({form})",
                    h.name.chars().take(64).collect::<String>()
                )
            })
    })
}

/// The standard reason phrase of `status` ("" when it has none).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// A text or form body a client could read in another encoding than the
/// detectors do: a UTF-16/32 byte-order mark, or NUL bytes.
pub fn unreadable_text(body: &[u8]) -> Option<&'static str> {
    if body.starts_with(&[0xFF, 0xFE])
        || body.starts_with(&[0xFE, 0xFF])
        || body.starts_with(&[0, 0, 0xFE, 0xFF])
    {
        Some("a UTF-16/32 byte-order mark")
    } else if body.contains(&0) {
        Some("NUL bytes")
    } else {
        None
    }
}

/// Removes a request's `Range` and `If-Range` (masked grants: see the
/// module docs).
pub fn strip_range(headers: &mut Vec<Header>) {
    remove_header(headers, "range");
    remove_header(headers, "if-range");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::MaskingConfig;
    use crate::protocol::http::parse_response;

    fn head(text: &str) -> ResponseHead {
        parse_response(text.as_bytes(), 1 << 16).unwrap().unwrap().0
    }

    fn rules(text: &str) -> FieldRules {
        let cfg: MaskingConfig = toml::from_str(text).unwrap();
        FieldRules::compile(&cfg).unwrap()
    }

    fn decide(rules: &FieldRules, lines: &str) -> Plan {
        plan(
            &head(&format!("HTTP/1.1 200 OK\r\n{lines}\r\n")),
            BodyKind::Length(10),
            Some(rules),
        )
    }

    fn refused(p: &Plan) -> bool {
        matches!(p, Plan::Refuse(_))
    }

    #[test]
    fn only_what_can_be_masked_is_masked_the_rest_refused_or_listed() {
        let r = rules(r#"unmasked_types = ["application/octet-stream", "image/*"]"#);
        let mask = |class| Plan::Mask { class, note: None };
        for (lines, want) in [
            ("Content-Type: application/json\r\n", mask(BodyClass::Json)),
            (
                "Content-Type: Application/Problem+JSON; charset=UTF-8\r\n",
                mask(BodyClass::Json),
            ),
            ("Content-Type: text/json\r\n", mask(BodyClass::Json)),
            (
                "Content-Type: application/x-www-form-urlencoded\r\n",
                mask(BodyClass::Form),
            ),
            (
                "Content-Type: text/html; charset=iso-8859-1\r\n",
                mask(BodyClass::Text),
            ),
            (
                "Content-Type: application/atom+xml\r\n",
                mask(BodyClass::Text),
            ),
            (
                "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
                mask(BodyClass::Json),
            ),
            (
                "Content-Type: application/json\r\nContent-Encoding: identity\r\n",
                mask(BodyClass::Json),
            ),
        ] {
            assert_eq!(decide(&r, lines), want, "{lines}");
        }
        for lines in [
            "",
            "Content-Type: nonsense\r\n",
            "Content-Type: application/x-ndjson\r\n",
            "Content-Type: application/json-seq\r\n",
            "Content-Type: application/msgpack\r\n",
            "Content-Type: text/event-stream\r\n",
            "Content-Type: multipart/byteranges; boundary=x\r\n",
            "Content-Type: text/plain; charset=utf-16\r\n",
            "Content-Type: application/json; charset=utf-32\r\n",
            "Content-Type: application/json\r\nContent-Type: application/octet-stream\r\n",
            "Content-Type: application/json\r\nContent-Encoding: br\r\n",
            "Content-Type: application/json\r\nContent-Encoding: gzip, gzip\r\n",
            "Content-Type: application/json\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\nContent-Encoding: br\r\n",
        ] {
            assert!(
                refused(&decide(&r, lines)),
                "{lines}: {:?}",
                decide(&r, lines)
            );
        }
        for lines in [
            "Content-Type: application/octet-stream\r\n",
            "Content-Type: image/png\r\n",
        ] {
            assert!(
                matches!(decide(&r, lines), Plan::Stream { note: Some(n) } if n.contains("unmasked_types")),
                "{lines}"
            );
        }
        // A partial response of a masked type.
        let partial =
            head("HTTP/1.1 206 Partial Content\r\nContent-Type: application/json\r\n\r\n");
        assert!(refused(&plan(&partial, BodyKind::Length(5), Some(&r))));
        // No masking, or no body: nothing to do.
        let none = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            plan(&none, BodyKind::Length(5), None),
            Plan::Stream { note: None }
        );
        assert_eq!(
            plan(&none, BodyKind::Empty, Some(&r)),
            Plan::Stream { note: None }
        );
    }

    #[test]
    fn field_rules_refuse_text_unless_its_type_is_listed() {
        let r = rules(r#"fields = [{ field = "name", strategy = "redact" }]"#);
        assert!(refused(&decide(&r, "Content-Type: text/csv\r\n")));
        assert!(refused(&decide(&r, "Content-Type: application/xml\r\n")));
        let r = rules(
            r#"fields = [{ field = "name", strategy = "redact" }]
unmasked_types = ["text/csv"]"#,
        );
        assert!(matches!(
            decide(&r, "Content-Type: text/csv\r\n"),
            Plan::Mask {
                class: BodyClass::Text,
                note: Some(_)
            }
        ));
    }

    #[test]
    fn heads_are_masked_and_searched_for_the_secret() {
        let cfg: MaskingConfig = toml::from_str(r#"patterns = ["email", "card"]"#).unwrap();
        let m = Masker::compile(&cfg, None).unwrap();
        let mut h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 4111111111111111\r\nX-Contact: bob@example.com\r\nX-4111111111111111: 1\r\nX-Ok: 1\r\n\r\n",
        );
        assert_eq!(mask_head(&m, &mut h.headers), 2);
        assert_eq!(h.get("x-ok"), Some("1"));
        assert_eq!(h.get("content-length"), Some("4111111111111111"));
        assert!(!h.get("x-contact").unwrap().contains("bob"));
        assert_eq!(h.headers.len(), 3);
        let e = Echo::new(b"s3cret-token-1234", b"Bearer s3cret-token-1234").unwrap();
        let h = head("HTTP/1.1 200 s3cret-token-1234\r\n\r\n");
        assert!(echo_in_head(&e, &h).unwrap().contains("reason"));
        let h = head("HTTP/1.1 200 OK\r\nLocation: /x?t=s3cret%2Dtoken%2D1234\r\n\r\n");
        assert!(echo_in_head(&e, &h).unwrap().contains("Location"));
        assert!(echo_in_head(&e, &head("HTTP/1.1 200 OK\r\nX: y\r\n\r\n")).is_none());
        assert_eq!(
            unreadable_text(b"\xff\xfeb\0"),
            Some("a UTF-16/32 byte-order mark")
        );
        assert_eq!(unreadable_text(b"b\0o\0b\0"), Some("NUL bytes"));
        assert_eq!(unreadable_text(b"plain"), None);
    }

    /// The masking of fuzz/fuzz.toml's `[masking.web]` (every detector,
    /// last4), as the http_response and http_body targets use it.
    fn web_masker() -> Masker {
        let cfg: MaskingConfig = toml::from_str(
            r#"patterns = ["card", "email", "ssn", "iban", "token"]
pattern_strategy = "last4""#,
        )
        .unwrap();
        Masker::compile(&cfg, None).unwrap()
    }

    /// fuzz/regressions/http_response/crash-1ec1…: a masked header value
    /// still held a detector's match.
    #[test]
    fn masked_header_values_hold_no_match() {
        let m = web_masker();
        let input = include_bytes!(
            "../../../../fuzz/regressions/http_response/crash-1ec102f5a3799bc5003df561bb83051d34f69ee3"
        );
        let (mut h, _) = parse_response(&input[1..], 1 << 16).unwrap().unwrap();
        mask_head(&m, &mut h.headers);
        for h in &h.headers {
            if FRAMING.iter().any(|f| h.name.eq_ignore_ascii_case(f)) {
                continue;
            }
            let v = String::from_utf8_lossy(&h.value);
            assert_eq!(
                m.mask_str(&v).1,
                0,
                "header {} keeps a match: {v:?}",
                h.name
            );
        }
    }

    /// fuzz/regressions/http_body/crash-c97c…: a text body masked with
    /// last4 still held a detector's match.
    #[test]
    fn masked_text_bodies_hold_no_match() {
        let m = web_masker();
        let input = include_bytes!(
            "../../../../fuzz/regressions/http_body/crash-c97c3f1e9efeb3aa14401a4ff25e4c014d8a03cd"
        );
        let (masked, _) = m.mask_patterns(&input[1..]).unwrap();
        assert_eq!(
            m.mask_patterns(&masked)
                .map(|(b, _)| String::from_utf8_lossy(&b).into_owned()),
            None,
            "{}",
            String::from_utf8_lossy(&masked)
        );
    }
}
