//! Request parameters as the application behind an upstream may read them,
//! for the policy's `query` and `headers` matchers. Pure code.
//!
//! Web frameworks do not agree on what a parameter is, so every reading is
//! kept and the policy judges them all (see [`crate::policy::HttpPolicy`]):
//! - names are folded ([`fold_name`]): Unicode compatibility forms (NFKC),
//!   case (ASP.NET compares names case-insensitively), PHP's `.` and
//!   space to `_`, and `name[...]` (an array or map in PHP, Rails and
//!   `qs`) is the parameter `name` with a value that is no string;
//! - a query is split at `&` and, as some servers still do, at `;`: both
//!   readings are kept;
//! - a body of a form, multipart or JSON type holds parameters too (PHP's
//!   `$_REQUEST`, Rails' and Laravel's `params`): its top-level fields are
//!   parameters like the query's ([`body_format`], [`body_params`]); so
//!   does a body of another type or none when a rule looks at parameters
//!   (FastAPI, Go handlers, Rack read them whatever the type says:
//!   [`untyped_body_params`]);
//! - cookies are parameters too (ASP.NET's `Request[name]`, PHP's
//!   `$_REQUEST`): [`cookie_params`];
//! - a header's name is folded (`X_Env` is `X-Env` to CGI-style servers)
//!   and its value is read whole and as a comma-separated list.
//!
//! Bodies whose parameters cannot be read without guessing (two
//! `Content-Type`s, a type that names a form or JSON Warden does not parse,
//! multipart framing servers disagree about, JSON that does not parse) are
//! errors: the proxy refuses them.

use percent_encoding::percent_decode_str;
use unicode_normalization::UnicodeNormalization;

/// One parameter: its folded name and its value, `None` when it is not a
/// plain string (an array or map member, a file, a JSON object...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("several Content-Type headers")]
    SeveralTypes,
    #[error(
        "request body of type {0:?} cannot be judged (a form or JSON type Warden does not read)"
    )]
    UnknownType(String),
    #[error("multipart body without a boundary")]
    NoBoundary,
    #[error("multipart body cannot be read unambiguously: {0}")]
    Multipart(String),
    #[error("JSON request body does not parse: {0}")]
    Json(String),
    #[error(
        "request body in charset {0:?} cannot be judged (an upstream reads its parameters in \
         that charset; UTF-8, US-ASCII and ISO-8859-1 are read)"
    )]
    Charset(String),
}

/// Charsets in which every parameter name and value Warden reads as UTF-8
/// reads the same where it matters: ASCII bytes are ASCII characters and
/// no other byte makes one. Any other declared charset (UTF-16, UTF-7,
/// EBCDIC…) is refused on a body whose parameters are read: Tomcat and
/// Spring percent-decode form bytes and then decode them in it.
const READ_CHARSETS: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "iso-8859-1",
    "iso_8859-1",
    "latin1",
    "windows-1252",
    "cp1252",
];

/// The name a framework may read for `raw`, and whether `raw` names an
/// array or map member (`a[]`, `a[k]`).
pub fn fold_name(raw: &str) -> (String, bool) {
    let text: String = raw.nfkc().collect::<String>().to_lowercase();
    let text = text.trim_start();
    let (base, bracketed) = match text.find('[') {
        Some(i) if text[i..].contains(']') => (&text[..i], true),
        _ => (text, false),
    };
    let folded = base
        .chars()
        .map(|c| if matches!(c, '.' | ' ' | '[') { '_' } else { c })
        .collect();
    (folded, bracketed)
}

/// The folded form of a header name: lower case, `_` read as `-`.
pub fn fold_header(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn param(name: &str, value: Option<String>) -> Param {
    let (name, bracketed) = fold_name(name);
    Param {
        name,
        value: value.filter(|_| !bracketed),
    }
}

/// Decoded `name=value` pairs (`+` is a space) of a query or form body,
/// split at `&` and, separately, at `&` and `;`: every pair of both
/// readings (each once).
pub fn query_params(query: &str) -> Vec<Param> {
    let mut out: Vec<Param> = Vec::new();
    for sep in [&['&'][..], &['&', ';'][..]] {
        for pair in query.split(sep).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let p = param(&decode_component(k), Some(decode_component(v)));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

pub(crate) fn decode_component(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// Every header as parameters: the folded name with the whole value, and
/// with each comma-separated part when there are several.
pub fn header_params<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<Param> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let name = fold_header(name);
        let value = String::from_utf8_lossy(value);
        let whole = value.trim();
        out.push(Param {
            name: name.clone(),
            value: Some(whole.to_owned()),
        });
        if whole.contains(',') {
            for part in whole.split(',') {
                out.push(Param {
                    name: name.clone(),
                    value: Some(part.trim().to_owned()),
                });
            }
        }
    }
    out
}

/// A request body that carries parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/*`, with its boundary.
    Multipart(String),
    /// `application/json`, `*+json`...
    Json,
}

/// What the request's `Content-Type` values say about parameters in its
/// body: `Ok(None)` for a body no framework reads parameters from.
pub fn body_format<'a>(
    content_types: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<BodyFormat>, ParamError> {
    let values: Vec<&[u8]> = content_types.into_iter().collect();
    let value = match values.as_slice() {
        [] => return Ok(None),
        [one] => String::from_utf8_lossy(one).into_owned(),
        _ => return Err(ParamError::SeveralTypes),
    };
    if let Some(cs) = crate::protocol::http::media_type(&value).charset
        && !READ_CHARSETS.contains(&cs.as_str())
        && ["form", "json", "multipart", "urlencoded"]
            .iter()
            .any(|w| value.to_ascii_lowercase().contains(w))
    {
        return Err(ParamError::Charset(cs));
    }
    // PHP ends the type at ';', ',' or a space: so does this.
    let essence = value
        .split([';', ',', ' ', '\t'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if essence == crate::masking::json::FORM_TYPE {
        return Ok(Some(BodyFormat::Form));
    }
    if essence.starts_with("multipart/") {
        return boundary(&value)
            .map(|b| Some(BodyFormat::Multipart(b)))
            .ok_or(ParamError::NoBoundary);
    }
    if crate::masking::json::is_json_type(&essence) {
        return Ok(Some(BodyFormat::Json));
    }
    if ["form", "json", "multipart", "urlencoded"]
        .iter()
        .any(|w| value.to_ascii_lowercase().contains(w))
    {
        return Err(ParamError::UnknownType(essence));
    }
    Ok(None)
}

/// The `boundary` parameter of a multipart type; `None` when missing or
/// given twice.
fn boundary(content_type: &str) -> Option<String> {
    let mut found = None;
    for p in content_type.split(';').skip(1) {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        if v.is_empty() || v.len() > 70 || v.contains(['"', '\\']) {
            return None;
        }
        found = Some(v.to_owned());
    }
    found
}

/// The parameters of a body of `format`.
pub fn body_params(format: &BodyFormat, body: &[u8]) -> Result<Vec<Param>, ParamError> {
    match format {
        BodyFormat::Form => Ok(query_params(&String::from_utf8_lossy(body))),
        BodyFormat::Multipart(b) => multipart(body, b),
        BodyFormat::Json => json_members(body),
    }
}

/// The pairs of `Cookie` headers as parameters: ASP.NET's `Request[name]`
/// and PHP's `$_REQUEST` (its built-in request order) read cookies with
/// the query and the form. Each value as sent and percent-decoded (PHP
/// decodes it), quotes removed.
pub fn cookie_params<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<Param> {
    let mut out: Vec<Param> = Vec::new();
    for v in values {
        let text = String::from_utf8_lossy(v);
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.trim().trim_matches('"');
            for p in [
                param(k.trim(), Some(v.to_owned())),
                param(&decode_component(k.trim()), Some(decode_component(v))),
            ] {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// The parameters an application may read from a body whose type names no
/// parameter format (none at all, `text/plain`,
/// `application/octet-stream`…): FastAPI reads an untyped body as JSON, Go
/// handlers decode JSON whatever the type, as do Flask's
/// `get_json(force=True)` and Express's `json({type: '*/*'})`, and Rack
/// (Rails, Sinatra) parses an untyped POST body as a form. Every reading
/// is kept: the body as a form, and, when it is a JSON document (its
/// first character, after blanks and a byte-order mark, is `{`), its
/// members; a document that does not parse is an error, as it is under a
/// JSON type.
pub fn untyped_body_params(body: &[u8]) -> Result<Vec<Param>, ParamError> {
    let mut out = query_params(&String::from_utf8_lossy(body));
    // Jackson tells UTF-16 and UTF-32 documents by their first bytes,
    // whatever the type says.
    let wide = wide_text(body);
    let text = match &wide {
        Some(w) => w.trim_start().as_bytes(),
        None => body.trim_ascii_start(),
    };
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    if text.starts_with(b"{") {
        out.extend(json_members(text)?);
    }
    Ok(out)
}

/// `body` decoded as UTF-16 or UTF-32 when its first bytes say so as
/// Jackson reads them (a byte-order mark, or the zero bytes around an
/// ASCII first character); `None` otherwise or when it does not decode.
fn wide_text(body: &[u8]) -> Option<String> {
    let b = body.get(..4)?;
    let units = |n: usize, be: bool| -> Vec<u32> {
        body.chunks_exact(n)
            .map(|c| {
                c.iter().enumerate().fold(0u32, |acc, (i, x)| {
                    let shift = if be { 8 * (n - 1 - i) } else { 8 * i };
                    acc | (u32::from(*x) << shift)
                })
            })
            .collect()
    };
    let utf16 = |be: bool| -> Option<String> {
        let u: Vec<u16> = units(2, be)
            .into_iter()
            .map(|x| u16::try_from(x).unwrap_or(0xFFFD))
            .collect();
        String::from_utf16(&u).ok()
    };
    let utf32 =
        |be: bool| -> Option<String> { units(4, be).into_iter().map(char::from_u32).collect() };
    let text = match b {
        [0, 0, 0xFE, 0xFF] => utf32(true)?,
        [0xFF, 0xFE, 0, 0] => utf32(false)?,
        [0, 0, 0, x] if *x != 0 => utf32(true)?,
        [x, 0, 0, 0] if *x != 0 => utf32(false)?,
        [0xFE, 0xFF, ..] => utf16(true)?,
        [0xFF, 0xFE, ..] => utf16(false)?,
        [0, x, ..] if *x != 0 => utf16(true)?,
        [x, 0, ..] if *x != 0 => utf16(false)?,
        _ => return None,
    };
    Some(text.trim_start_matches('\u{feff}').to_owned())
}

/// The top-level members of a JSON object body, each occurrence of a name
/// kept (parsers disagree on which of two equal names wins).
fn json_members(body: &[u8]) -> Result<Vec<Param>, ParamError> {
    struct Members(Vec<(String, serde_json::Value)>);
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Members, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                        out.push((k, v));
                    }
                    Ok(Members(out))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Members, A::Error> {
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(Members(Vec::new()))
                }
                fn visit_str<E>(self, _: &str) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
                fn visit_unit<E>(self) -> Result<Members, E> {
                    Ok(Members(Vec::new()))
                }
            }
            d.deserialize_any(V)
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let Members(members) =
        serde_json::from_slice(body).map_err(|e| ParamError::Json(e.to_string()))?;
    Ok(members
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            param(&k, value)
        })
        .collect())
}

/// The fields of a `multipart/form-data` body. Every delimiter must start
/// a line (CRLF) and be followed by CRLF or the closing `--`; every part
/// needs exactly one `Content-Disposition` with exactly one plain `name`.
/// A file part, or one with its own transfer coding, has no string value.
fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Param>, ParamError> {
    let bad = |why: &str| ParamError::Multipart(why.to_owned());
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let finder = memchr::memmem::Finder::new(delim);
    // Each delimiter at the start of the body or of a line, followed by
    // CRLF (after optional padding) or the closing "--".
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut open: Option<usize> = None;
    let mut closed = false;
    for at in finder.find_iter(body) {
        if closed {
            return Err(bad("a delimiter after the closing one"));
        }
        if at != 0 && (at < 2 || &body[at - 2..at] != b"\r\n") {
            return Err(bad("a delimiter that does not start a line"));
        }
        if let Some(start) = open.take() {
            parts.push((start, (at - 2).max(start)));
        }
        let mut p = at + delim.len();
        if body[p..].starts_with(b"--") {
            closed = true;
            continue;
        }
        while body.get(p).is_some_and(|b| *b == b' ' || *b == b'\t') {
            p += 1;
        }
        if !body[p..].starts_with(b"\r\n") {
            return Err(bad("a delimiter line with other text"));
        }
        open = Some(p + 2);
    }
    if !closed {
        return Err(bad("no closing delimiter"));
    }
    let mut out = Vec::new();
    for (start, end) in parts {
        let part = &body[start..end];
        let Some(split) = memchr::memmem::find(part, b"\r\n\r\n")
            .map(|i| (i, i + 4))
            .or_else(|| part.starts_with(b"\r\n").then_some((0, 2)))
        else {
            return Err(bad("a part without an empty line after its headers"));
        };
        let head = String::from_utf8_lossy(&part[..split.0]);
        let content = &part[split.1..];
        let mut disposition = None;
        let mut coded = false;
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let Some((k, v)) = line.split_once(':') else {
                return Err(bad("a part header line without ':'"));
            };
            if k.trim() != k || k.contains([' ', '\t', '\n']) {
                return Err(bad("a part header name with spaces"));
            }
            if k.eq_ignore_ascii_case("content-disposition") {
                if disposition.is_some() {
                    return Err(bad("two Content-Disposition headers in one part"));
                }
                disposition = Some(v.trim().to_owned());
            } else if k.eq_ignore_ascii_case("content-transfer-encoding") {
                coded = true;
            }
        }
        let Some(d) = disposition else {
            return Err(bad("a part without Content-Disposition"));
        };
        let (name, file) = disposition_name(&d)
            .ok_or_else(|| bad("a Content-Disposition without exactly one plain name parameter"))?;
        let value = (!file && !coded).then(|| String::from_utf8_lossy(content).into_owned());
        out.push(param(&name, value));
    }
    Ok(out)
}

/// The `name` of a `form-data` disposition and whether it names a file;
/// `None` when the name is missing, given twice or in the `name*` form.
fn disposition_name(d: &str) -> Option<(String, bool)> {
    let mut params = split_params(d)?.into_iter();
    let kind = params.next()?;
    if !kind.0.eq_ignore_ascii_case("form-data") || kind.1.is_some() {
        return None;
    }
    let mut name = None;
    let mut file = false;
    for (k, v) in params {
        let k = k.to_ascii_lowercase();
        match k.as_str() {
            "name" if name.is_none() => name = Some(v?),
            "name" | "name*" => return None,
            "filename" | "filename*" => file = true,
            _ => {}
        }
    }
    name.map(|n| (n, file))
}

/// `token; k=v; k="quoted \" value"` as (key, value) pairs; the first is
/// the disposition type. `None` on an unterminated quote.
fn split_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_owned();
        let value = if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut done = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => v.push(chars.next()?),
                        '"' => {
                            done = true;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                if !done {
                    return None;
                }
                while chars.peek().is_some_and(|c| *c != ';') {
                    if !chars.next()?.is_whitespace() {
                        return None;
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim().to_owned();
            }
            Some(v)
        } else {
            None
        };
        if !key.is_empty() || value.is_some() {
            out.push((key, value));
        }
        if chars.next().is_none() {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ps: &[Param]) -> Vec<(&str, Option<&str>)> {
        ps.iter()
            .map(|p| (p.name.as_str(), p.value.as_deref()))
            .collect()
    }

    #[test]
    fn names_fold_as_frameworks_read_them() {
        for (raw, want) in [
            ("dry_run", ("dry_run", false)),
            ("DRY_RUN", ("dry_run", false)),
            ("dry.run", ("dry_run", false)),
            ("dry run", ("dry_run", false)),
            (" dry_run", ("dry_run", false)),
            ("dry_run[]", ("dry_run", true)),
            ("dry_run[a][b]", ("dry_run", true)),
            ("dry[run", ("dry_run", false)),
            ("ｄｒｙ_ｒｕｎ", ("dry_run", false)),
            ("_method", ("_method", false)),
        ] {
            let (n, b) = fold_name(raw);
            assert_eq!((n.as_str(), b), want, "{raw}");
        }
        assert_eq!(fold_header("X_Env"), "x-env");
    }

    #[test]
    fn queries_are_read_with_and_without_semicolons() {
        let ps = query_params("dry_run=true;dry_run=false&a[]=1&b=%41+c");
        assert_eq!(
            names(&ps),
            [
                ("dry_run", Some("true;dry_run=false")),
                ("a", None),
                ("b", Some("A c")),
                ("dry_run", Some("true")),
                ("dry_run", Some("false")),
            ]
        );
    }

    #[test]
    fn header_values_whole_and_as_lists() {
        let ps = header_params([("X_Env", &b"prod, dev"[..]), ("x-env", b"prod")]);
        assert_eq!(
            names(&ps),
            [
                ("x-env", Some("prod, dev")),
                ("x-env", Some("prod")),
                ("x-env", Some("dev")),
                ("x-env", Some("prod")),
            ]
        );
    }

    #[test]
    fn body_formats() {
        let f = |v: &[&str]| body_format(v.iter().map(|s| s.as_bytes()));
        assert_eq!(f(&[]), Ok(None));
        assert_eq!(f(&["text/plain"]), Ok(None));
        assert_eq!(f(&["application/octet-stream"]), Ok(None));
        assert_eq!(
            f(&["Application/X-WWW-Form-Urlencoded; charset=utf-8"]),
            Ok(Some(BodyFormat::Form))
        );
        assert_eq!(
            f(&["application/x-www-form-urlencoded,text/plain"]),
            Ok(Some(BodyFormat::Form)),
            "PHP ends the type at a comma"
        );
        assert_eq!(f(&["application/vnd.x+json"]), Ok(Some(BodyFormat::Json)));
        assert_eq!(
            f(&["multipart/form-data; boundary=\"ab c\""]),
            Ok(Some(BodyFormat::Multipart("ab c".into())))
        );
        assert_eq!(f(&["multipart/form-data"]), Err(ParamError::NoBoundary));
        assert_eq!(
            f(&["multipart/form-data; boundary=a; boundary=b"]),
            Err(ParamError::NoBoundary)
        );
        assert!(matches!(
            f(&["application/x-www-form-urlencodedx"]),
            Err(ParamError::UnknownType(_))
        ));
        assert!(matches!(
            f(&["application/x-ndjson"]),
            Err(ParamError::UnknownType(_))
        ));
        assert_eq!(
            f(&["text/plain", "text/plain"]),
            Err(ParamError::SeveralTypes)
        );
    }

    #[test]
    fn cookies_are_parameters() {
        let ps = cookie_params([&b"a=1; Force=\"%74rue\""[..], &b"sid=x"[..]]);
        assert!(ps.contains(&Param {
            name: "force".into(),
            value: Some("true".into())
        }));
        assert!(ps.iter().any(|p| p.name == "sid"));
    }

    #[test]
    fn untyped_bodies_are_read_as_forms_and_as_json() {
        let ps = untyped_body_params(b" {\"Force\": true}").unwrap();
        assert!(ps.contains(&Param {
            name: "force".into(),
            value: Some("true".into())
        }));
        let ps = untyped_body_params(b"\xef\xbb\xbf{\"a\": 1}").unwrap();
        assert!(ps.iter().any(|p| p.name == "a"));
        let ps = untyped_body_params(b"a=1&force=on").unwrap();
        assert!(ps.contains(&Param {
            name: "force".into(),
            value: Some("on".into())
        }));
        assert!(untyped_body_params(b"{\"force\": true,}").is_err());
        // UTF-16 and UTF-32 documents, as Jackson detects them.
        for doc in [
            "{\"force\": true}"
                .encode_utf16()
                .flat_map(u16::to_be_bytes)
                .collect::<Vec<u8>>(),
            "{\"force\": true}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            "{\"force\": true}"
                .chars()
                .flat_map(|c| u32::from(c).to_be_bytes())
                .collect(),
        ] {
            let ps = untyped_body_params(&doc).unwrap();
            assert!(ps.iter().any(|p| p.name == "force"), "{doc:?}");
        }
        assert!(matches!(
            body_format([&b"application/x-www-form-urlencoded; charset=UTF-16BE"[..]]),
            Err(ParamError::Charset(_))
        ));
        assert!(matches!(
            body_format([&b"application/json; charset=\"utf-8\""[..]]),
            Ok(Some(BodyFormat::Json))
        ));
        assert_eq!(body_format([&b"text/plain; charset=utf-16"[..]]), Ok(None));
        assert!(untyped_body_params(b"\x01\x02 binary").is_ok());
    }

    #[test]
    fn json_members_keep_every_occurrence() {
        let ps = body_params(
            &BodyFormat::Json,
            br#"{"dry_run": true, "_METHOD": "DELETE", "dry_run": false, "n": 1, "o": {"a": 1}, "l": null}"#,
        )
        .unwrap();
        assert_eq!(
            names(&ps),
            [
                ("dry_run", Some("true")),
                ("_method", Some("DELETE")),
                ("dry_run", Some("false")),
                ("n", Some("1")),
                ("o", None),
                ("l", None),
            ]
        );
        assert!(
            body_params(&BodyFormat::Json, b"[1, 2]")
                .unwrap()
                .is_empty()
        );
        assert!(body_params(&BodyFormat::Json, b"").unwrap().is_empty());
        assert!(body_params(&BodyFormat::Json, b"{\"a\":").is_err());
    }

    #[test]
    fn multipart_fields_and_ambiguities() {
        let mp = |b: &str| body_params(&BodyFormat::Multipart("XX".into()), b.as_bytes());
        let ok = "preamble\r\n--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX  \r\nContent-Disposition: form-data; name=\"f\"; filename=\"a;b.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n--XX\r\ncontent-disposition: form-data; name=plain\r\n\r\nv\r\n--XX--\r\nepilogue";
        assert_eq!(
            names(&mp(ok).unwrap()),
            [
                ("_method", Some("DELETE")),
                ("f", None),
                ("plain", Some("v"))
            ]
        );
        for bad in [
            // A delimiter after a bare LF.
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\n--XX\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--XX--",
            // No closing delimiter.
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1",
            // name twice, name*, no name, two dispositions.
            "--XX\r\nContent-Disposition: form-data; name=\"a\"; name=\"b\"\r\n\r\n1\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name*=UTF-8''a\r\n\r\n1\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\n1\r\n--XX--",
            // Text after the delimiter on its line.
            "--XXY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--",
            // Unterminated quote.
            "--XX\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--XX--",
        ] {
            assert!(mp(bad).is_err(), "{bad:?}");
        }
    }
}
