//! Checks on a request that do not depend on its grant's policy: which host
//! it is for, and whether it asks the upstream to read another method or
//! path than the one the policy judges. Pure code.
//!
//! **Host.** A target is one virtual host: `tls.server_name` when the
//! target has one (required with `intercept_tls`), else its address. The
//! upstream always receives that name as `Host` (with the port when it is
//! not the scheme's default), so the credential never reaches another
//! virtual host behind the same address. A request must name it too, or
//! the target's IP address: the `Host` header (exactly one; required in
//! HTTP/1.1), the authority of an absolute-form target, an intercepted
//! connection's SNI, and every header that names a host to frameworks
//! behind proxies (`X-Forwarded-Host`, `Forwarded: host=`, ...). Another
//! name gets `421 Misdirected Request`; nothing is forwarded.
//!
//! **Overrides.** Frameworks honour a method other than the request line's
//! (`X-HTTP-Method-Override`, `X-Method-Override`, `X-HTTP-Method`, a
//! `_method` parameter in the query or a form, multipart or JSON body) and
//! a path other than the target's (`X-Original-URL`, `X-Rewrite-URL`,
//! `X-Forwarded-Uri`, ...). The policy judges the request line, so such a
//! request is refused (`403`) rather than guessed at, and so is a body
//! with parameters in a content coding (`415`, [`coded_params`]).

use std::net::IpAddr;

use crate::config::Target;
use crate::protocol::http::params::{Param, fold_header, fold_name};
use crate::protocol::http::{Headers, RequestHead, path};

/// Headers that make frameworks use another method.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// Headers that make servers or frameworks route another path.
const PATH_OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
];

/// Headers that name the host a request is for, to frameworks behind a
/// proxy (`Forwarded` is read for its `host=` pairs).
const HOST_HEADERS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-server",
    "x-host",
    "x-original-host",
    "x-http-host-override",
];

/// The one virtual host of a target.
#[derive(Debug, Clone)]
pub struct HostNames {
    /// `tls.server_name`, lower case, without a trailing dot.
    name: Option<String>,
    ip: IpAddr,
    /// The `Host` sent upstream.
    authority: String,
}

impl HostNames {
    pub fn new(t: &Target) -> Self {
        let name = t
            .tls
            .as_ref()
            .and_then(|x| x.server_name.as_deref())
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let tls = t
            .effective_upstream_tls()
            .is_some_and(|x| x.mode != crate::config::TlsMode::Disable);
        let default_port = if tls { 443 } else { 80 };
        let host = match (&name, t.address.ip()) {
            (Some(n), _) => n.clone(),
            (None, IpAddr::V6(v6)) => format!("[{v6}]"),
            (None, ip) => ip.to_string(),
        };
        let authority = if t.address.port() == default_port {
            host
        } else {
            format!("{host}:{}", t.address.port())
        };
        Self {
            name,
            ip: t.address.ip(),
            authority,
        }
    }

    /// The `Host` header value sent upstream.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether `host` (`name`, `name:port`, `[v6]:port`) names this target
    /// (any port).
    pub fn accepts(&self, host: &str) -> bool {
        let host = host.trim();
        let name = match host.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((v6, rest))
                    if rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port) =>
                {
                    v6
                }
                _ => return false,
            },
            None => match host.rsplit_once(':') {
                Some((h, port)) if is_port(port) => h,
                Some(_) => return false,
                None => host,
            },
        };
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return false;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip == self.ip;
        }
        self.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }

    fn shown(&self) -> String {
        match &self.name {
            Some(n) => format!("{n:?} (or {})", self.ip),
            None => format!("{} (the target has no tls.server_name)", self.ip),
        }
    }

    /// Checks every name the request gives for its host: `Err((status,
    /// why))` with 400 for a missing or repeated `Host`, 421 for another
    /// host.
    pub fn check(
        &self,
        head: &RequestHead,
        target: &path::Target,
        sni: Option<&str>,
    ) -> Result<(), (u16, String)> {
        let misdirected = |what: &str, name: &str| {
            Err((
                421,
                format!(
                    "{what} {:?} is not this target's host {}",
                    name.chars().take(128).collect::<String>(),
                    self.shown()
                ),
            ))
        };
        let hosts: Vec<&[u8]> = head.all("host").collect();
        match hosts.as_slice() {
            [] if head.version == 1 => {
                return Err((400, "an HTTP/1.1 request needs a Host header".into()));
            }
            [] => {}
            [one] => {
                let h = String::from_utf8_lossy(one);
                if !self.accepts(&h) {
                    return misdirected("Host", &h);
                }
            }
            _ => return Err((400, "several Host headers".into())),
        }
        if let Some(a) = &target.authority
            && !self.accepts(a)
        {
            return misdirected("the request target's host", a);
        }
        if let Some(sni) = sni
            && !self.accepts(sni)
        {
            return misdirected("the TLS server name (SNI)", sni);
        }
        for h in &head.headers {
            let name = fold_header(&h.name);
            let value = String::from_utf8_lossy(&h.value);
            let named: Vec<String> = if HOST_HEADERS.contains(&name.as_str()) {
                value.split(',').map(|v| v.trim().to_owned()).collect()
            } else if name == "forwarded" {
                forwarded_hosts(&value)
            } else {
                continue;
            };
            for n in named {
                if !self.accepts(&n) {
                    return misdirected(&h.name, &n);
                }
            }
        }
        Ok(())
    }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The `host=` values of a `Forwarded` header (quotes removed).
fn forwarded_hosts(value: &str) -> Vec<String> {
    value
        .split([',', ';'])
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("host")
                .then(|| v.trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// A header asking for another method or path: why the request is refused.
pub fn header_override(head: &RequestHead) -> Option<String> {
    head.headers.iter().find_map(|h| {
        let name = fold_header(&h.name);
        if METHOD_OVERRIDES.contains(&name.as_str()) {
            Some(format!(
                "method override header {} is refused: the policy judges the request line's method",
                h.name
            ))
        } else if PATH_OVERRIDES.contains(&name.as_str()) {
            Some(format!(
                "path override header {} is refused: the policy judges the request target",
                h.name
            ))
        } else {
            None
        }
    })
}

/// A body with parameters (form, multipart, JSON) in a content coding:
/// why it is refused (`415`). Frameworks that decompress requests would
/// read parameters Warden, which judges the bytes as sent, cannot see.
pub fn coded_params(head: &RequestHead) -> Option<String> {
    let codings: Vec<String> = crate::protocol::http::tokens(head, "content-encoding")
        .into_iter()
        .filter(|t| t != "identity")
        .collect();
    (!codings.is_empty()).then(|| {
        format!(
            "a request body with parameters in content-encoding {} cannot be judged",
            codings.join(", ")
        )
    })
}

/// Whether the request body is of a text type an upstream may parse for
/// names (`text/*`, GraphQL, XML, SQL, YAML, JSON, forms, JavaScript);
/// several or unreadable Content-Types count as text.
pub fn textual_body(head: &RequestHead) -> bool {
    let types: Vec<String> = head
        .all("content-type")
        .map(|v| crate::protocol::http::media_type(&String::from_utf8_lossy(v)).essence)
        .collect();
    match types.as_slice() {
        [] => false,
        [one] => {
            one.starts_with("text/")
                || one.is_empty()
                || [
                    "graphql",
                    "xml",
                    "sql",
                    "yaml",
                    "json",
                    "form",
                    "javascript",
                    "query",
                ]
                .iter()
                .any(|w| one.contains(w))
        }
        _ => true,
    }
}

/// A `_method` parameter (query or body): why the request is refused.
pub fn param_override(params: &[Param], place: &str) -> Option<String> {
    let method = fold_name("_method").0;
    params.iter().any(|p| p.name == method).then(|| {
        format!(
            "a _method parameter in the {place} is refused: the policy judges the request line's method"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_are_told_from_binary_ones() {
        let head = |ct: &str| {
            crate::protocol::http::parse_request(
                format!("POST / HTTP/1.1\r\nHost: a\r\n{ct}\r\n").as_bytes(),
                1 << 16,
            )
            .unwrap()
            .unwrap()
            .0
        };
        for ct in [
            "Content-Type: application/graphql\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Type: application/soap+xml\r\n",
            "Content-Type: application/sql\r\n",
            "Content-Type: nonsense\r\n",
            "Content-Type: a/b\r\nContent-Type: c/d\r\n",
        ] {
            assert!(textual_body(&head(ct)), "{ct}");
        }
        for ct in [
            "",
            "Content-Type: application/octet-stream\r\n",
            "Content-Type: image/png\r\n",
        ] {
            assert!(!textual_body(&head(ct)), "{ct}");
        }
    }
    use crate::protocol::http::params::query_params;
    use crate::protocol::http::parse_request;

    fn target(lines: &str) -> Target {
        let text = format!(
            "[[target]]\nname = \"t\"\nprotocol = \"http\"\n{lines}\n[[account]]\nname = \"a\"\nuids = [1]\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap()
            .targets
            .remove(0)
    }

    fn req(text: &str) -> RequestHead {
        parse_request(text.as_bytes(), 1 << 16).unwrap().unwrap().0
    }

    fn check(n: &HostNames, text: &str, sni: Option<&str>) -> Result<(), u16> {
        let h = req(text);
        let t = path::normalize(&h.target).unwrap();
        n.check(&h, &t, sni).map_err(|(s, _)| s)
    }

    #[test]
    fn the_configured_host_is_sent_and_the_only_one_accepted() {
        let named = HostNames::new(&target(
            "address = \"10.0.0.7:443\"\nupstream_tls = true\ntls = { mode = \"verify-full\", server_name = \"API.internal\" }",
        ));
        assert_eq!(named.authority(), "api.internal");
        for ok in [
            "api.internal",
            "API.Internal:8443",
            "api.internal.",
            "10.0.0.7",
            "10.0.0.7:80",
        ] {
            assert!(named.accepts(ok), "{ok}");
        }
        for no in [
            "admin.internal",
            "api.internal.evil",
            "api.internal:x",
            "10.0.0.8",
            "",
            "api.internal:443:443",
            "[::1]",
            "user@api.internal",
        ] {
            assert!(!named.accepts(no), "{no}");
        }
        let plain = HostNames::new(&target("address = \"127.0.0.1:8080\""));
        assert_eq!(plain.authority(), "127.0.0.1:8080");
        assert!(plain.accepts("127.0.0.1:8080") && !plain.accepts("localhost"));
        let v6 = HostNames::new(&target("address = \"[::1]:80\""));
        assert_eq!(v6.authority(), "[::1]");
        assert!(v6.accepts("[::1]:80") && v6.accepts("[::1]"));
    }

    #[test]
    fn every_name_a_request_gives_for_its_host_is_checked() {
        let n = HostNames::new(&target(
            "address = \"10.0.0.7:80\"\ntls = { mode = \"disable\", server_name = \"api.internal\" }",
        ));
        assert_eq!(n.authority(), "api.internal");
        let ok = "GET / HTTP/1.1\r\nHost: api.internal\r\n";
        assert_eq!(check(&n, &format!("{ok}\r\n"), None), Ok(()));
        assert_eq!(check(&n, "GET / HTTP/1.0\r\n\r\n", None), Ok(()));
        assert_eq!(
            check(&n, &format!("{ok}\r\n"), Some("api.internal")),
            Ok(())
        );
        assert_eq!(
            check(
                &n,
                &format!(
                    "{ok}X-Forwarded-Host: api.internal\r\nForwarded: for=1.2.3.4;host=\"api.internal:80\"\r\n\r\n"
                ),
                None
            ),
            Ok(())
        );
        for (text, sni, status) in [
            ("GET / HTTP/1.1\r\n\r\n", None, 400),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\nHost: other\r\n\r\n",
                None,
                400,
            ),
            ("GET / HTTP/1.1\r\nHost: other\r\n\r\n", None, 421),
            (
                "GET http://other/x HTTP/1.1\r\nHost: api.internal\r\n\r\n",
                None,
                421,
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\n\r\n",
                Some("other"),
                421,
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\nX-Forwarded-Host: other\r\n\r\n",
                None,
                421,
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\nX_Forwarded_Host: api.internal, other\r\n\r\n",
                None,
                421,
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\nForwarded: for=x, host=other\r\n\r\n",
                None,
                421,
            ),
            (
                "GET / HTTP/1.1\r\nHost: api.internal\r\nX-Original-Host: other\r\n\r\n",
                None,
                421,
            ),
        ] {
            assert_eq!(check(&n, text, sni), Err(status), "{text:?} {sni:?}");
        }
    }

    #[test]
    fn overrides_are_found_in_headers_and_parameters() {
        for h in [
            "X-HTTP-Method-Override: DELETE",
            "x-method-override: PUT",
            "X_HTTP_Method: DELETE",
            "X-Original-URL: /admin",
            "X-Rewrite-Url: /admin",
        ] {
            let r = req(&format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n"));
            assert!(header_override(&r).is_some(), "{h}");
        }
        assert!(
            header_override(&req("POST / HTTP/1.1\r\nHost: a\r\nX-Method: a\r\n\r\n")).is_none()
        );
        for q in [
            "_method=DELETE",
            "_METHOD=delete",
            "x=1;_method=DELETE",
            "_method[]=x",
            "%5Fmethod=PUT",
        ] {
            assert!(param_override(&query_params(q), "query").is_some(), "{q}");
        }
        assert!(param_override(&query_params("method=x&_methods=y"), "query").is_none());
    }
}
