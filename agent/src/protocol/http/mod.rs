//! HTTP/1.1 codec for the HTTP proxy: request and response heads parsed
//! with `httparse`, the body framing each head implies (RFC 9112 §6), a
//! chunked-body decoder as a state machine, and request-target
//! normalisation ([`path`]). Pure code: no I/O, no policy.
//!
//! Fail-closed choices (each one is a `400` and a close in the proxy):
//! - a request with both `Content-Length` and `Transfer-Encoding`, with
//!   several differing `Content-Length`s, or with a `Transfer-Encoding`
//!   other than exactly `chunked` (request smuggling);
//! - obsolete line folding, invalid header names or values (httparse);
//! - chunk sizes that are not hex, overflow, or carry junk; chunk
//!   extensions are skipped, trailers are read and dropped.

pub mod params;
pub mod path;

use bytes::{Buf, Bytes, BytesMut};

/// Most header lines in one head.
pub const MAX_HEADERS: usize = 100;

/// Most header lines in a workload's request head: Warden adds a few on
/// the way (Host, the credential, framing, upgrade), and the head it
/// forwards must stay within [`MAX_HEADERS`] (found by fuzzing: a request
/// of 99 headers was forwarded as a head Warden's own parser refuses).
pub const MAX_REQUEST_HEADERS: usize = MAX_HEADERS - 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed head: {0}")]
    Head(String),
    #[error("head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("unsupported HTTP version 1.{0}")]
    Version(u8),
    #[error("conflicting framing: {0}")]
    Framing(String),
    #[error("invalid chunk: {0}")]
    Chunk(String),
}

/// One header as received (name as sent, value bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    /// The value as text, when it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// Minor version: 0 or 1.
    pub version: u8,
    pub headers: Vec<Header>,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Lookups shared by both heads.
pub trait Headers {
    fn headers(&self) -> &[Header];

    /// Every value of `name` (case-insensitive).
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The first value of `name` as text.
    fn get(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(Header::value_str)
    }

    /// Whether a comma-separated header `name` lists `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name).any(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }
}

impl Headers for RequestHead {
    fn headers(&self) -> &[Header] {
        &self.headers
    }
}

impl Headers for ResponseHead {
    fn headers(&self) -> &[Header] {
        &self.headers
    }
}

fn collect(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// Parses a request head from the start of `buf`: `Ok(None)` when more
/// bytes are needed (and `buf` is within `limit`), else the head and its
/// length in bytes.
pub fn parse_request(buf: &[u8], limit: usize) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if n > limit {
                return Err(HttpError::HeadTooLarge { limit });
            }
            let version = req.version.unwrap_or(1);
            Ok(Some((
                RequestHead {
                    method: req.method.unwrap_or_default().to_owned(),
                    target: req.path.unwrap_or_default().to_owned(),
                    version,
                    headers: collect(req.headers),
                },
                n,
            )))
        }
        Ok(httparse::Status::Partial) if buf.len() > limit => {
            Err(HttpError::HeadTooLarge { limit })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge { limit }),
        Err(e) => Err(HttpError::Head(e.to_string())),
    }
}

/// A workload's request head, as [`parse_request`], with at most
/// [`MAX_REQUEST_HEADERS`] header lines (more: [`HttpError::HeadTooLarge`]).
pub fn parse_workload_request(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let parsed = parse_request(buf, limit)?;
    if parsed
        .as_ref()
        .is_some_and(|(h, _)| h.headers.len() > MAX_REQUEST_HEADERS)
    {
        return Err(HttpError::HeadTooLarge { limit });
    }
    Ok(parsed)
}

/// Parses a response head; as [`parse_request`].
pub fn parse_response(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if n > limit {
                return Err(HttpError::HeadTooLarge { limit });
            }
            // httparse takes any three digits; `050` would be forwarded as
            // `50`, a head no client parses. Statuses are 100..=999.
            let status = res.code.unwrap_or(0);
            if status < 100 {
                return Err(HttpError::Head("invalid response status".into()));
            }
            Ok(Some((
                ResponseHead {
                    version: res.version.unwrap_or(1),
                    status,
                    reason: res.reason.unwrap_or_default().to_owned(),
                    headers: collect(res.headers),
                },
                n,
            )))
        }
        Ok(httparse::Status::Partial) if buf.len() > limit => {
            Err(HttpError::HeadTooLarge { limit })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge { limit }),
        Err(e) => Err(HttpError::Head(e.to_string())),
    }
}

/// The one `Content-Length` of a message (several equal values count as
/// one), or `None` when absent.
fn content_length(h: &impl Headers) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for v in h.all("content-length") {
        for part in String::from_utf8_lossy(v).split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 18 {
                return Err(HttpError::Framing(format!(
                    "invalid Content-Length {part:?}"
                )));
            }
            // At most 18 digits: fits in u64.
            let n: u64 = part
                .parse()
                .map_err(|_| HttpError::Framing("invalid Content-Length".into()))?;
            match found {
                Some(prev) if prev != n => {
                    return Err(HttpError::Framing("differing Content-Length values".into()));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// The comma-separated tokens of every `name` header, lower-cased, in
/// order (`Transfer-Encoding`, `Content-Encoding`).
pub fn tokens(h: &impl Headers, name: &str) -> Vec<String> {
    h.all(name)
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn transfer_codings(h: &impl Headers) -> Vec<String> {
    tokens(h, "transfer-encoding")
}

/// A `Content-Type` value read as a media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower case ("" when the value has none).
    pub essence: String,
    /// The `charset` parameter, lower case, unquoted.
    pub charset: Option<String>,
}

/// Reads a `Content-Type` value.
pub fn media_type(value: &str) -> MediaType {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let essence = if essence.contains('/') {
        essence
    } else {
        String::new()
    };
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    });
    MediaType { essence, charset }
}

/// The body framing of a request (RFC 9112 §6.3), refusing every
/// ambiguous combination.
pub fn request_body(head: &RequestHead) -> Result<BodyKind, HttpError> {
    let te = transfer_codings(head);
    let has_te = head.all("transfer-encoding").next().is_some();
    let cl = content_length(head)?;
    if has_te {
        if cl.is_some() {
            return Err(HttpError::Framing(
                "both Content-Length and Transfer-Encoding".into(),
            ));
        }
        if head.version == 0 {
            return Err(HttpError::Framing(
                "Transfer-Encoding in an HTTP/1.0 request".into(),
            ));
        }
        if te != ["chunked"] {
            return Err(HttpError::Framing(format!(
                "Transfer-Encoding {:?} (only \"chunked\" is accepted)",
                te.join(", ")
            )));
        }
        return Ok(BodyKind::Chunked);
    }
    Ok(match cl {
        Some(0) | None => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
    })
}

/// The body framing of a response to a request with `method`.
pub fn response_body(method: &str, head: &ResponseHead) -> Result<BodyKind, HttpError> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(BodyKind::Empty);
    }
    let has_te = head.all("transfer-encoding").next().is_some();
    if has_te {
        let te = transfer_codings(head);
        // A response with both is framed by Transfer-Encoding (§6.3 3).
        // Any other transfer coding (`gzip`, `chunked` after another one,
        // or one that is not `chunked` and framed by the close) is refused:
        // Transfer-Encoding is hop-by-hop, so its bytes would reach the
        // client with the coding unnamed, and unread by masking and the
        // credential search.
        if te != ["chunked"] {
            return Err(HttpError::Framing(format!(
                "response Transfer-Encoding {:?} (only \"chunked\" is relayed)",
                te.join(", ")
            )));
        }
        return Ok(BodyKind::Chunked);
    }
    Ok(match content_length(head)? {
        Some(0) => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
        None => BodyKind::UntilClose,
    })
}

/// What a [`BodyDecoder`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// Body bytes (chunk framing removed).
    Data(Bytes),
    /// The body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes left.
    Data(u64),
    /// After a chunk's data: expecting CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
    Done,
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Incremental body decoder for one message: feed it the connection's
/// buffer, it consumes what it can and returns events. Never holds more
/// than one line of framing; data is handed out as it arrives.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: BodyKind,
    remaining: u64,
    chunk: ChunkState,
    trailer_bytes: usize,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> Self {
        let remaining = match kind {
            BodyKind::Length(n) => n,
            _ => 0,
        };
        Self {
            kind,
            remaining,
            chunk: ChunkState::Size,
            trailer_bytes: 0,
        }
    }

    /// True once the whole body was decoded.
    pub fn is_done(&self) -> bool {
        match self.kind {
            BodyKind::Empty => true,
            BodyKind::Length(_) => self.remaining == 0,
            BodyKind::Chunked => self.chunk == ChunkState::Done,
            BodyKind::UntilClose => false,
        }
    }

    /// Decodes from the front of `buf`: `Ok(None)` when more input is
    /// needed. At most `max` data bytes per event.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<BodyEvent>, HttpError> {
        let max = max.max(1);
        match self.kind {
            BodyKind::Empty => Ok(Some(BodyEvent::End)),
            BodyKind::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(max);
                Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())))
            }
            BodyKind::Length(_) => {
                if self.remaining == 0 {
                    return Ok(Some(BodyEvent::End));
                }
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(self.remaining).min(max as u64) as usize;
                self.remaining -= n as u64;
                Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())))
            }
            BodyKind::Chunked => self.decode_chunked(buf, max),
        }
    }

    /// Tells the decoder the peer closed: an error unless the body may end
    /// here.
    pub fn eof(&self) -> Result<(), HttpError> {
        if self.kind == BodyKind::UntilClose || self.is_done() {
            Ok(())
        } else {
            Err(HttpError::Chunk("connection closed inside a body".into()))
        }
    }

    fn decode_chunked(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<BodyEvent>, HttpError> {
        loop {
            match self.chunk {
                ChunkState::Done => return Ok(Some(BodyEvent::End)),
                ChunkState::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.chunk = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left).min(max as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.chunk = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(BodyEvent::Data(data)));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(HttpError::Chunk("chunk data not followed by CRLF".into()));
                    }
                    buf.advance(2);
                    self.chunk = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(HttpError::Chunk("trailers too large".into()));
                    }
                    if line.is_empty() {
                        self.chunk = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// One CRLF-terminated line from the front of `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, HttpError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(HttpError::Chunk("bare LF in chunk framing".into()));
            }
            if i > MAX_LINE {
                return Err(HttpError::Chunk("chunk line too long".into()));
            }
            let line = buf.split_to(i + 1);
            Ok(Some(line[..i - 1].to_vec()))
        }
        None if buf.len() > MAX_LINE => Err(HttpError::Chunk("chunk line too long".into())),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ; ext ]`, at most 15 hex digits.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let digits = &line[..end];
    if digits.is_empty() || digits.len() > 15 {
        return Err(HttpError::Chunk(format!(
            "bad chunk size {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let rest = &line[end..];
    let rest_trim = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(&[][..], |i| &rest[i..]);
    if !rest_trim.is_empty() && rest_trim[0] != b';' {
        return Err(HttpError::Chunk(format!(
            "junk after chunk size {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let s = std::str::from_utf8(digits).map_err(|_| HttpError::Chunk("bad chunk size".into()))?;
    u64::from_str_radix(s, 16).map_err(|_| HttpError::Chunk("bad chunk size".into()))
}

/// Writes `data` as one chunk.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Serialises a request head.
pub fn write_request(head: &RequestHead, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&head.headers, out);
}

/// Serialises a response head (always as HTTP/1.1).
pub fn write_response(head: &ResponseHead, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("HTTP/1.1 {} ", head.status).as_bytes());
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(&head.headers, out);
}

fn write_headers(headers: &[Header], out: &mut Vec<u8>) {
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The HTTP/2 connection preface a prior-knowledge client starts with.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// True when `buf` starts like the HTTP/2 preface (as far as it goes).
pub fn looks_like_h2(buf: &[u8]) -> bool {
    let n = buf.len().min(H2_PREFACE.len());
    n >= 3 && buf[..n] == H2_PREFACE[..n]
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) removed before forwarding either way.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers and those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut Vec<Header>) {
    let named: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    headers.retain(|h| {
        let n = h.name.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&n.as_str()) && !named.contains(&n)
    });
}

/// Sets `name` to `value`, replacing every existing occurrence.
pub fn set_header(headers: &mut Vec<Header>, name: &str, value: impl Into<Vec<u8>>) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    headers.push(Header {
        name: name.to_owned(),
        value: value.into(),
    });
}

/// Removes every occurrence of `name`.
pub fn remove_header(headers: &mut Vec<Header>, name: &str) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> RequestHead {
        parse_request(text.as_bytes(), 8192).unwrap().unwrap().0
    }

    #[test]
    fn parses_a_request_head_and_its_length() {
        let text = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nBODY";
        let (h, n) = parse_request(text.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(n, text.len() - 4);
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.get("host"), Some("x"));
        assert_eq!(request_body(&h).unwrap(), BodyKind::Empty);
        assert!(
            parse_request(b"GET / HTTP/1.1\r\nHo", 8192)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_bad_heads() {
        assert!(parse_request(b"GET\x01 / HTTP/1.1\r\n\r\n", 8192).is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 8192).is_err());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
        assert_eq!(
            parse_request(big.as_bytes(), 8192),
            Err(HttpError::HeadTooLarge { limit: 8192 })
        );
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..150 {
            many.push_str(&format!("X{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert!(parse_request(many.as_bytes(), 1 << 20).is_err());
        // fuzz/regressions/http_request/many-headers: room is kept for what
        // Warden adds when it forwards.
        let input = include_bytes!("../../../../fuzz/regressions/http_request/many-headers");
        assert!(parse_request(input, 1 << 16).is_ok());
        assert!(matches!(
            parse_workload_request(input, 1 << 16),
            Err(HttpError::HeadTooLarge { .. })
        ));
    }

    #[test]
    fn framing_refuses_smuggling() {
        let both =
            req("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(request_body(&both).is_err());
        let two = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(request_body(&two).is_err());
        let same = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(request_body(&same).unwrap(), BodyKind::Length(3));
        let gz = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(request_body(&gz).is_err());
        let neg = req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        assert!(request_body(&neg).is_err());
        let plus = req("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n");
        assert!(request_body(&plus).is_err());
        let ch = req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(request_body(&ch).unwrap(), BodyKind::Chunked);
    }

    /// Regression (fuzz/regressions/http_response): `HTTP/1.1 050` parsed
    /// as status 50 and was written on as `HTTP/1.1 50`.
    #[test]
    fn response_statuses_below_100_are_refused() {
        for head in [
            "HTTP/1.1 050 x\r\n\r\n",
            "HTTP/1.1 000 x\r\n\r\n",
            "HTTP/1.0 099 \r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(head.as_bytes(), 1024),
                    Err(HttpError::Head(_))
                ),
                "{head:?}"
            );
        }
        for (head, status) in [
            ("HTTP/1.1 100 Continue\r\n\r\n", 100),
            ("HTTP/1.1 999 x\r\n\r\n", 999),
        ] {
            let (h, _) = parse_response(head.as_bytes(), 1024).unwrap().unwrap();
            assert_eq!(h.status, status);
            let mut out = Vec::new();
            write_response(&h, &mut out);
            assert_eq!(
                parse_response(&out, 1024).unwrap().unwrap().0.status,
                status
            );
        }
    }

    #[test]
    fn response_framing() {
        let r = |t: &str| parse_response(t.as_bytes(), 8192).unwrap().unwrap().0;
        let h = r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(response_body("GET", &h).unwrap(), BodyKind::Length(5));
        assert_eq!(response_body("HEAD", &h).unwrap(), BodyKind::Empty);
        let h = r("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(response_body("GET", &h).unwrap(), BodyKind::Empty);
        let h = r("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(response_body("GET", &h).unwrap(), BodyKind::UntilClose);
        let h = r("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(response_body("GET", &h).unwrap(), BodyKind::Chunked);
        for te in ["gzip", "gzip, chunked", "chunked, identity", "identity", ""] {
            let h = r(&format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n"
            ));
            assert!(response_body("GET", &h).is_err(), "{te}");
        }
    }

    fn decode_all(kind: BodyKind, input: &[u8], step: usize) -> Result<Vec<u8>, HttpError> {
        let mut d = BodyDecoder::new(kind);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf, 3)? {
                Some(BodyEvent::Data(b)) => out.extend_from_slice(&b),
                Some(BodyEvent::End) => return Ok(out),
                None => {
                    if fed >= input.len() {
                        d.eof()?;
                        return Ok(out);
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_decodes_byte_by_byte_and_at_once() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 7, body.len()] {
            assert_eq!(
                decode_all(BodyKind::Chunked, body, step).unwrap(),
                b"hello world"
            );
        }
        assert_eq!(
            decode_all(BodyKind::Length(4), b"abcdef", 1).unwrap(),
            b"abcd"
        );
    }

    #[test]
    fn chunked_refuses_bad_sizes() {
        for bad in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"ffffffffffffffffff\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
        ] {
            assert!(decode_all(BodyKind::Chunked, bad, 4).is_err(), "{bad:?}");
        }
        // Truncated: eof inside a body is an error.
        assert!(decode_all(BodyKind::Chunked, b"5\r\nhel", 4).is_err());
        assert!(decode_all(BodyKind::Length(5), b"hel", 4).is_err());
    }

    #[test]
    fn encodes_and_strips() {
        let mut out = Vec::new();
        encode_chunk(b"abc", &mut out);
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode_all(BodyKind::Chunked, &out, 2).unwrap(), b"abc");
        let mut h = req("GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nUpgrade: ws\r\nA: b\r\n\r\n").headers;
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].name, "A");
        assert!(looks_like_h2(b"PRI * HT"));
        assert!(!looks_like_h2(b"POST / HTTP/1.1"));
        let mut w = Vec::new();
        write_request(&req("GET /x HTTP/1.1\r\nA: b\r\n\r\n"), &mut w);
        assert_eq!(w, b"GET /x HTTP/1.1\r\nA: b\r\n\r\n");
    }
}
