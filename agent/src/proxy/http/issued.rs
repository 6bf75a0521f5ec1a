//! Credentials the upstream issues in exchange for the one Warden injects
//! (finding H6): a session cookie, a token in a response header or in a
//! JSON body is a credential of its own, which the workload could use
//! without Warden (on another host of the cookie's domain, or after it
//! leaves the enrolled cgroup). On a grant with a credential, unless its
//! `issued = "pass"`:
//! - `Set-Cookie` / `Set-Cookie2` never reach the workload: with `hold`
//!   (the default) Warden keeps them in one [`Jar`] per grant and sends
//!   them back (`Cookie`) on the grant's later requests, so upstream
//!   sessions keep working through Warden; with `drop` they are dropped;
//! - query and fragment parameters named so in URL headers (`Location:
//!   /cb#access_token=…`) are redacted;
//! - response headers whose names say they carry a credential
//!   ([`is_issued_header`]: `X-Subject-Token`, `X-Auth-Token`,
//!   `Authentication-Info`, `Authorization`, `X-Session-Id`…) are removed;
//! - JSON and form bodies (read whole, bounded by `max_message_bytes`)
//!   have string members (form fields) whose names say they hold a credential ([`is_issued_member`]:
//!   `access_token`, `refresh_token`, `id_token`, `SessionToken`,
//!   `SecretAccessKey`, `api_key`, `password`…) redacted, at any depth
//!   and in JSON held in strings.
//!
//! The names are a list: an upstream that issues a credential under
//! another name is held by the policy (block the endpoint that issues it)
//! or by a field rule of the grant's masking. Cookie values are never
//! logged.

use std::sync::Mutex;

use serde_json::Value;

use crate::masking::REDACTED;
use crate::masking::json::{decode, fold_member};
use crate::protocol::http::{Header, remove_header};

/// Words that make a (folded) header or member name a credential's.
const ISSUED_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "session",
    "cookie",
    "apikey",
    "credential",
    "jwt",
    "bearer",
    "privatekey",
    "accesskey",
    "authoriz",
    "authentic",
];

/// Folded names that are credentials though they hold none of the words.
const ISSUED_NAMES: &[&str] = &[
    "sid",
    "key",
    "sig",
    "signature",
    "nonce",
    "nextnonce",
    "otp",
    "totp",
    "code",
];

/// Response headers that hold none of the words but carry a credential
/// (devise_token_auth's `client`/`uid` go with `access-token`).
const ISSUED_HEADERS: &[&str] = &["set-cookie", "set-cookie2", "client", "uid"];

/// Whether a response header's name says it carries a credential.
pub fn is_issued_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ISSUED_HEADERS.contains(&lower.as_str()) || is_issued_member(&lower)
}

/// Whether a JSON member's name says it holds a credential.
pub fn is_issued_member(name: &str) -> bool {
    let f = fold_member(name);
    ISSUED_NAMES.contains(&f.as_str()) || ISSUED_WORDS.iter().any(|w| f.contains(w))
}

/// How deep JSON held in strings is opened (as the masking does).
const MAX_NESTED: usize = 4;

/// Redacts, in place, the string values of members that hold a credential
/// (also in arrays under them, and in JSON held in strings); how many.
pub fn mask_issued(v: &mut Value) -> usize {
    walk(v, false, 0)
}

fn walk(v: &mut Value, issued: bool, nested: usize) -> usize {
    match v {
        Value::Object(map) => map
            .iter_mut()
            .map(|(k, child)| walk(child, is_issued_member(k), nested))
            .sum(),
        Value::Array(items) => items.iter_mut().map(|c| walk(c, issued, nested)).sum(),
        Value::String(s) if issued => {
            *s = String::from_utf8_lossy(REDACTED).into_owned();
            1
        }
        Value::String(s) if nested < MAX_NESTED => {
            let t = s.trim_start();
            if !(t.starts_with('{') || t.starts_with('[')) {
                return 0;
            }
            let Ok(mut inner) = serde_json::from_str::<Value>(s) else {
                return 0;
            };
            let n = walk(&mut inner, false, nested + 1);
            if n > 0 {
                *s = inner.to_string();
            }
            n
        }
        _ => 0,
    }
}

/// Redacts the values of form fields that hold a credential
/// (`access_token=…&token_type=bearer`, as GitHub's token endpoint
/// answers); `None` when there is none.
pub fn mask_issued_form(body: &[u8]) -> Option<(Vec<u8>, usize)> {
    let text = String::from_utf8_lossy(body);
    let mut n = 0;
    let parts: Vec<String> = text
        .split('&')
        .map(|pair| {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            if is_issued_member(&decode(k)) {
                n += 1;
                format!("{k}=%5BMASKED%5D")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    (n > 0).then(|| (parts.join("&").into_bytes(), n))
}

/// Headers that carry a URL (a login's redirect can carry the session:
/// `Location: /cb#access_token=…`).
const URL_HEADERS: &[&str] = &["location", "content-location", "refresh", "link"];

/// Redacts, in the URL headers of `headers`, the values of query and
/// fragment parameters whose names say credential; how many.
pub fn mask_issued_urls(headers: &mut [Header]) -> usize {
    let mut n = 0;
    for h in headers
        .iter_mut()
        .filter(|h| URL_HEADERS.iter().any(|u| h.name.eq_ignore_ascii_case(u)))
    {
        let text = String::from_utf8_lossy(&h.value).into_owned();
        let Some(start) = text.find(['?', '#']) else {
            continue;
        };
        // `name=value` pieces after the first `?` or `#`, each with the
        // separator before it (`?`, `#`, `&`, `;`).
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..start]);
        let mut k = 0;
        let rest = &text[start..];
        let mut piece_start = 0;
        let cuts: Vec<usize> = rest
            .char_indices()
            .filter(|(_, c)| matches!(c, '?' | '#' | '&' | ';'))
            .map(|(i, _)| i)
            .chain(std::iter::once(rest.len()))
            .collect();
        for &cut in cuts.iter().skip(1) {
            let piece = &rest[piece_start..cut];
            let (sep, pair) = piece.split_at(1);
            match pair.split_once('=') {
                Some((name, _)) if is_issued_member(&decode(name)) => {
                    k += 1;
                    out.push_str(sep);
                    out.push_str(name);
                    out.push_str("=%5BMASKED%5D");
                }
                _ => out.push_str(piece),
            }
            piece_start = cut;
        }
        if k > 0 {
            n += k;
            h.value = out.into_bytes();
        }
    }
    n
}

/// The most cookies, and bytes of one cookie, a jar keeps.
const MAX_COOKIES: usize = 64;
const MAX_COOKIE: usize = 4096;

/// The cookies an upstream set on one grant's responses, sent back on its
/// requests. Scoped to the grant's one target (its one virtual host):
/// `Domain` and `Path` are not needed to choose, `Max-Age=0` or an
/// `Expires` in the past removes a cookie.
#[derive(Debug, Default)]
pub struct Jar {
    cookies: Mutex<Vec<(String, String)>>,
}

impl Jar {
    /// Takes every `Set-Cookie` (and `Set-Cookie2`) out of `headers`, into
    /// the jar when `keep`; how many there were.
    pub fn take(&self, headers: &mut Vec<Header>, keep: bool) -> usize {
        let set: Vec<Vec<u8>> = headers
            .iter()
            .filter(|h| {
                h.name.eq_ignore_ascii_case("set-cookie")
                    || h.name.eq_ignore_ascii_case("set-cookie2")
            })
            .map(|h| h.value.clone())
            .collect();
        remove_header(headers, "set-cookie");
        remove_header(headers, "set-cookie2");
        if keep {
            let mut jar = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
            for v in &set {
                store(&mut jar, &String::from_utf8_lossy(v));
            }
        }
        set.len()
    }

    /// The `Cookie` header value for a request, if the jar holds any.
    pub fn header(&self) -> Option<String> {
        let jar = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Applies one `Set-Cookie` value to the jar.
fn store(jar: &mut Vec<(String, String)>, set: &str) {
    let mut parts = set.split(';');
    let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
        return;
    };
    let (name, value) = (name.trim(), value.trim());
    let valid = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b','))
    };
    if name.is_empty() || !valid(name) || !valid(value) || name.len() + value.len() > MAX_COOKIE {
        return;
    }
    let gone = parts.any(|a| {
        let (k, v) = a.split_once('=').unwrap_or((a, ""));
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        (k == "max-age" && v.parse::<i64>().is_ok_and(|n| n <= 0)) || (k == "expires" && expired(v))
    });
    jar.retain(|(k, _)| k != name);
    if !gone && jar.len() < MAX_COOKIES {
        jar.push((name.to_owned(), value.to_owned()));
    }
}

/// Whether an `Expires` date (`Thu, 01 Jan 1970 00:00:00 GMT`, also with
/// dashes) is in the past; an unreadable one is not.
fn expired(v: &str) -> bool {
    let text = v.replace('-', " ").replace("GMT", "+0000");
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc2822)
        .is_ok_and(|t| t <= time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn set_cookie_goes_to_the_jar_and_back_never_to_the_workload() {
        let jar = Jar::default();
        let mut headers = vec![
            h("Content-Type", "application/json"),
            h(
                "Set-Cookie",
                "sid=derived-7f3a; Domain=.example.com; Path=/; HttpOnly",
            ),
            h("set-cookie", "lang=en"),
            h("SET-COOKIE2", "old=1"),
        ];
        assert_eq!(jar.take(&mut headers, true), 3);
        assert_eq!(headers.len(), 1);
        assert_eq!(
            jar.header().as_deref(),
            Some("sid=derived-7f3a; lang=en; old=1")
        );
        // Replaced, then removed by Max-Age=0 and by a past Expires.
        let mut headers = vec![
            h("Set-Cookie", "sid=new"),
            h("Set-Cookie", "lang=; Max-Age=0"),
            h("Set-Cookie", "old=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        ];
        jar.take(&mut headers, true);
        assert_eq!(jar.header().as_deref(), Some("sid=new"));
        // `drop`: taken, not kept.
        let jar = Jar::default();
        let mut headers = vec![h("Set-Cookie", "sid=x")];
        assert_eq!(jar.take(&mut headers, false), 1);
        assert!(headers.is_empty() && jar.header().is_none());
    }

    #[test]
    fn issued_headers_and_members_are_recognised() {
        for n in [
            "X-Subject-Token",
            "X-Auth-Token",
            "Authorization",
            "Authentication-Info",
            "access-token",
            "X-Session-Id",
            "X-Amz-Security-Token",
            "Set-Cookie",
            "client",
            "uid",
        ] {
            assert!(is_issued_header(n), "{n}");
        }
        for n in ["Content-Type", "ETag", "X-Request-Id", "Location"] {
            assert!(!is_issued_header(n), "{n}");
        }
        let mut v: Value = serde_json::from_str(
            r#"{"access_token":"a1","Refresh-Token":"r1","expires_in":3600,"token_type":"Bearer",
                "Credentials":{"AccessKeyId":"AK","SecretAccessKey":"SK","SessionToken":"ST"},
                "user":{"name":"bo","sid":"S1"},"usage":{"total_tokens":12},
                "wrapped":"{\"id_token\":\"I1\"}","list":{"api_keys":["K1","K2"]}}"#,
        )
        .unwrap();
        let n = mask_issued(&mut v);
        let s = v.to_string();
        for secret in ["a1", "r1", "AK", "SK", "ST", "S1", "I1", "K1", "K2"] {
            assert!(
                !s.contains(&format!("\"{secret}\"")) && !s.contains(&format!("\\\"{secret}\\\"")),
                "{secret}: {s}"
            );
        }
        assert_eq!(n, 10, "{s}");
        assert_eq!(v["usage"]["total_tokens"], 12);
        assert_eq!(v["user"]["name"], "bo");
        assert_eq!(v["expires_in"], 3600);
        let (out, n) =
            mask_issued_form(b"access_token=gho_x1&scope=repo&token_type=bearer&Refresh%5Ftoken=r")
                .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "access_token=%5BMASKED%5D&scope=repo&token_type=%5BMASKED%5D&Refresh%5Ftoken=%5BMASKED%5D"
        );
        assert!(mask_issued_form(b"a=1&b=2").is_none());
    }

    #[test]
    fn tokens_in_redirect_urls_are_redacted() {
        let mut headers = vec![
            h(
                "Location",
                "https://app.example/cb?state=x#access_token=gho_1&token_type=bearer&expires_in=3600",
            ),
            h("Content-Location", "/s?sessionid=abc"),
            h("X-Other", "/s?sessionid=abc"),
            h("Location", "/plain?page=2"),
        ];
        assert_eq!(mask_issued_urls(&mut headers), 3);
        let v = |i: usize| String::from_utf8_lossy(&headers[i].value).into_owned();
        assert_eq!(
            v(0),
            "https://app.example/cb?state=x#access_token=%5BMASKED%5D&token_type=%5BMASKED%5D&expires_in=3600"
        );
        assert_eq!(v(1), "/s?sessionid=%5BMASKED%5D");
        assert_eq!(v(2), "/s?sessionid=abc");
        assert_eq!(v(3), "/plain?page=2");
    }
}
