//! Request-target normalisation: what policy matches and what is forwarded
//! are the same path, so an upstream cannot read a request differently
//! from the way the policy did.
//!
//! Steps: absolute-form (`http://host/p`) is reduced to origin-form;
//! the query is split off; the path is percent-decoded; `//` collapse;
//! `.` and `..` segments are resolved (RFC 3986 §5.2.4, never above the
//! root); the result is re-encoded canonically (unreserved characters
//! plain, everything else `%XX` upper-case) and forwarded in place of the
//! original. For matching, `;parameters` are cut from each segment and,
//! when the policy says so, the path is lower-cased.
//!
//! Refused outright (fail closed, `400`): encoded `/` or `\` (`%2F`,
//! `%5C`), an encoded `%` that makes another escape (`%252e`: read as `.`
//! by an upstream that decodes twice), a literal `\`, NUL, invalid `%` escapes, decoded bytes that are
//! not UTF-8, a fragment, dot segments carrying parameters (`..;x`), which
//! servers disagree about, userinfo in an absolute-form target, and
//! characters outside ASCII that servers or frameworks may fold into
//! others: anything Unicode compatibility normalisation (NFKC) changes
//! (full-width `／` and `．`, `ﬀ`, `ſ`, `K`...), letters whose case
//! mapping is ASCII (`ı`, `İ`), controls and invisible (default-ignorable)
//! characters. Other non-ASCII text (`/café`, `/日本`) is kept.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target {0:?} is not origin-form")]
    NotOriginForm(String),
    #[error("invalid percent escape in the path")]
    BadEscape,
    #[error("encoded '/' or '\\' in the path (refused: servers disagree about them)")]
    EncodedSeparator,
    #[error(
        "an encoded '%' that makes another escape in the path (refused: an upstream that decodes \
         twice would read another path)"
    )]
    DoubleEncoded,
    #[error("'\\' or NUL in the path")]
    ForbiddenByte,
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
    #[error("a '.' or '..' segment with parameters")]
    DotParams,
    #[error(
        "path character {0} may be read as another one by the upstream (Unicode folding): refused"
    )]
    Folds(String),
}

/// A normalised request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Canonical, encoded path to forward (always starts with `/`).
    pub path: String,
    /// Decoded path with `;params` cut from each segment: what rules match.
    pub match_path: String,
    /// The raw query (after `?`), forwarded as is.
    pub query: Option<String>,
    /// The authority of an absolute-form target (`http://HOST:PORT/...`),
    /// which names the host the request is for.
    pub authority: Option<String>,
}

impl Target {
    /// Origin-form target to forward.
    pub fn forward(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Characters escaped when re-encoding a segment: everything but
/// unreserved, sub-delims, `:` and `@` (RFC 3986 pchar).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Normalises a request target (see the module docs). `*` (for OPTIONS)
/// is returned as the path `*`.
pub fn normalize(target: &str) -> Result<Target, PathError> {
    if target == "*" {
        return Ok(Target {
            path: "*".into(),
            match_path: "*".into(),
            query: None,
            authority: None,
        });
    }
    let (origin, authority) = match strip_scheme(target) {
        Some(rest) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..end];
            if authority.is_empty() || authority.contains('@') {
                return Err(PathError::NotOriginForm(target.chars().take(64).collect()));
            }
            let origin = match &rest[end..] {
                "" => "/".to_owned(),
                o if o.starts_with('?') => format!("/{o}"),
                o => o.to_owned(),
            };
            (origin, Some(authority.to_owned()))
        }
        None => (target.to_owned(), None),
    };
    let origin = origin.as_str();
    if !origin.starts_with('/') || origin.contains('#') {
        return Err(PathError::NotOriginForm(target.chars().take(64).collect()));
    }
    let (raw, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (origin, None),
    };
    check_escapes(raw)?;
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    if decoded.contains(['\\', '\0']) {
        return Err(PathError::ForbiddenByte);
    }
    // A decoded path that still holds an escape is read as another path
    // by an upstream that decodes twice (nginx with variables in
    // proxy_pass, IIS, applications that unescape again): `%252e%252e`
    // is `..`, `%252f` is `/`, and so is every spelling of the escape's
    // own characters (`%25%32%65`). Judged on the decoded text, so no
    // spelling is missed, and a forwarded path (which encodes `%` again)
    // normalises to itself.
    if holds_escape(&decoded) {
        return Err(PathError::DoubleEncoded);
    }
    check_unicode(&decoded)?;
    let trailing = decoded.len() > 1 && decoded.ends_with('/');
    let mut out: Vec<&str> = Vec::new();
    let mut last_was_dir = false;
    for seg in decoded.split('/') {
        let bare = seg.split(';').next().unwrap_or("");
        if (bare == "." || bare == "..") && bare != seg {
            return Err(PathError::DotParams);
        }
        match seg {
            "" => {}
            "." => last_was_dir = true,
            ".." => {
                out.pop();
                last_was_dir = true;
            }
            s => {
                out.push(s);
                last_was_dir = false;
            }
        }
    }
    let dir = trailing || (last_was_dir && !out.is_empty());
    let mut path = String::with_capacity(raw.len());
    let mut match_path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
        match_path.push('/');
        match_path.push_str(s.split(';').next().unwrap_or(""));
    }
    if out.is_empty() || dir {
        path.push('/');
        match_path.push('/');
    }
    Ok(Target {
        path,
        match_path,
        query,
        authority,
    })
}

/// A `%` followed by two hex digits.
fn holds_escape(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Refuses non-ASCII characters that an upstream may fold into others
/// (see the module docs).
fn check_unicode(path: &str) -> Result<(), PathError> {
    use unicode_normalization::UnicodeNormalization;
    if path.is_ascii() {
        return Ok(());
    }
    let named = |c: char| format!("U+{:04X}", c as u32);
    for c in path.chars().filter(|c| !c.is_ascii()) {
        if c.is_control()
            || default_ignorable(c)
            || c.to_lowercase().any(|l| l.is_ascii())
            || c.to_uppercase().any(|u| u.is_ascii())
        {
            return Err(PathError::Folds(named(c)));
        }
    }
    if !path.nfkc().eq(path.chars()) {
        let first = path
            .chars()
            .find(|c| !c.to_string().nfkc().eq(std::iter::once(*c)))
            .unwrap_or('?');
        return Err(PathError::Folds(named(first)));
    }
    Ok(())
}

/// Unicode's Default_Ignorable_Code_Point: invisible characters that
/// identifier and URL mappings drop.
fn default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

fn strip_scheme(t: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        // Byte-wise: the target may hold multi-byte characters anywhere.
        if t.as_bytes()
            .get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes()))
        {
            return t.get(scheme.len()..);
        }
    }
    None
}

/// Every `%` starts a valid escape, and none encodes a separator.
fn check_escapes(raw: &str) -> Result<(), PathError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEscape);
            }
            let v = u8::from_str_radix(
                std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?,
                16,
            )
            .map_err(|_| PathError::BadEscape)?;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Decoded `name=value` pairs of a query (`+` is a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// Glob match of a normalised path against a pattern of `/`-separated
/// segments: `**` is any number of segments (including none), `*` inside
/// a segment any run of characters but `/`.
pub fn path_glob(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segs_match(&p, &t)
}

/// Pattern segments against path segments, `**` standing for any number
/// of segments. Dynamic programming over (pattern, path) positions: time
/// is their product, never exponential in the number of `**` (the path is
/// the client's, up to the head limit).
fn segs_match(p: &[&str], t: &[&str]) -> bool {
    // ok[j]: the pattern's first i segments match the path's first j.
    let mut ok = vec![false; t.len() + 1];
    ok[0] = true;
    for seg in p {
        let mut next = vec![false; t.len() + 1];
        if *seg == "**" {
            let mut any = false;
            for j in 0..=t.len() {
                any |= ok[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = ok[j - 1] && crate::policy::glob::glob_match(seg, t[j - 1]);
            }
        }
        ok = next;
    }
    ok[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str) -> String {
        normalize(t).unwrap().match_path
    }

    #[test]
    fn multi_byte_characters_where_a_scheme_could_start_do_not_panic() {
        // Found by `cargo fuzz run http_request`: "kkkkkk" then a two-byte
        // character across byte 7 (the length of "http://").
        for t in [
            "kkkkkk\u{4eb}P+",
            "kkkk+\u{4eb}P+",
            "\u{4eb}\u{4eb}\u{4eb}\u{4eb}",
            "httpsé//x",
        ] {
            let _ = normalize(t);
        }
        assert!(strip_scheme("HTTP://a/b").is_some());
        assert!(strip_scheme("kkkkkk\u{4eb}").is_none());
    }

    #[test]
    fn bypass_attempts_normalise_to_the_same_path() {
        for t in [
            "/admin",
            "//admin",
            "/%61dmin",
            "/a/../admin",
            "/admin/../admin",
            "/./admin",
            "/../admin",
            "/admin;jsessionid=1",
            "http://example.com/admin",
        ] {
            assert_eq!(m(t), "/admin", "{t}");
        }
        assert_eq!(m("/ADMIN"), "/ADMIN");
        assert_eq!(m("/admin/"), "/admin/");
        assert_eq!(m("/admin/x/.."), "/admin/");
        assert_eq!(m("/"), "/");
        assert_eq!(m("/a/.."), "/");
    }

    #[test]
    fn refuses_ambiguous_targets() {
        assert_eq!(normalize("/%2fadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/admin%2F.."), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(
            normalize("/x/%252e%252e/admin"),
            Err(PathError::DoubleEncoded)
        );
        assert_eq!(normalize("/admin%252Fx"), Err(PathError::DoubleEncoded));
        // The escape's own characters encoded (`%25%32%65` is `%2e` once
        // decoded, `.` twice), split anywhere.
        assert_eq!(
            normalize("/x/%25%32%65%25%32%65/admin"),
            Err(PathError::DoubleEncoded)
        );
        assert_eq!(normalize("/x/%252%65"), Err(PathError::DoubleEncoded));
        // A fuzz find (fuzz/regressions/http_path/split-double-escape):
        // `%25` `2` `%35` `3` decodes to `%253`, accepted by the raw check,
        // whose forwarded form (`%25253`) did not normalise again.
        assert_eq!(
            normalize("/)/.%252%353.\u{1}"),
            Err(PathError::DoubleEncoded)
        );
        let t = normalize("/100%25off").unwrap();
        assert_eq!(normalize(&t.forward()), Ok(t.clone()));
        assert_eq!(normalize("/100%25"), Ok(normalize("/100%25").unwrap()));
        assert!(normalize("/100%25off").is_ok());
        assert_eq!(normalize("/a\\b"), Err(PathError::ForbiddenByte));
        assert_eq!(normalize("/a%00"), Err(PathError::ForbiddenByte));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(normalize("/..;/admin"), Err(PathError::DotParams));
        assert!(normalize("admin").is_err());
        assert!(normalize("/a#b").is_err());
    }

    #[test]
    fn forwards_the_canonical_form_and_keeps_the_query() {
        let t = normalize("//a/./b%20c/../%7euser?x=%2F&y=1").unwrap();
        assert_eq!(t.path, "/a/~user");
        assert_eq!(t.query.as_deref(), Some("x=%2F&y=1"));
        assert_eq!(t.forward(), "/a/~user?x=%2F&y=1");
        assert_eq!(normalize("/caf%C3%A9").unwrap().path, "/caf%C3%A9");
        assert_eq!(
            query_pairs("a=1&b=x+y&c=%41&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "A".into()),
                ("d".into(), "".into())
            ]
        );
    }

    #[test]
    fn globs() {
        assert!(path_glob("/admin/**", "/admin"));
        assert!(path_glob("/admin/**", "/admin/x/y"));
        assert!(!path_glob("/admin/**", "/administrator"));
        assert!(path_glob("/api/*/orders", "/api/v1/orders"));
        assert!(!path_glob("/api/*/orders", "/api/v1/x/orders"));
        assert!(path_glob("/**/secret", "/a/b/secret"));
        assert!(path_glob("/v*", "/v2"));
        assert!(!path_glob("/a", "/a/b"));
    }

    #[test]
    fn characters_that_fold_into_others_are_refused() {
        for t in [
            "/%EF%BD%81dmin",            // full-width a
            "/admin%EF%BC%8Fx",          // full-width solidus
            "/%EF%BC%8E%EF%BC%8E/admin", // full-width full stops
            "/adm%C4%B1n",               // dotless i: upper case is I
            "/%C4%B0",                   // dotted capital I: lower case is i + dot
            "/ad%C2%ADmin",              // soft hyphen
            "/ad%E2%80%8Bmin",           // zero-width space
            "/%C5%BFecret",              // long s
            "/%E2%84%AAey",              // Kelvin sign
            "/cafe%CC%81",               // decomposed é (NFKC composes it)
            "/a%C2%A0b",                 // no-break space
            "/a%C2%85b",                 // NEL
            "/\u{ff41}dmin",             // raw full-width a
            "/stra%C3%9Fe",              // sharp s: upper case is SS
        ] {
            assert!(
                matches!(normalize(t), Err(PathError::Folds(_))),
                "{t}: {:?}",
                normalize(t)
            );
        }
        for t in ["/caf%C3%A9", "/%E6%97%A5%E6%9C%AC", "/%D0%BC%D0%B8%D1%80"] {
            assert!(normalize(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn absolute_form_keeps_its_authority() {
        let t = normalize("http://api.example:8080/a?b=1").unwrap();
        assert_eq!(t.authority.as_deref(), Some("api.example:8080"));
        assert_eq!(t.forward(), "/a?b=1");
        let t = normalize("HTTPS://other?x").unwrap();
        assert_eq!(
            (t.authority.as_deref(), t.forward().as_str()),
            (Some("other"), "/?x")
        );
        assert_eq!(normalize("/a").unwrap().authority, None);
        assert!(normalize("http://user@api.example/a").is_err());
        assert!(normalize("http:///a").is_err());
    }

    #[test]
    fn globs_with_many_double_stars_match_in_polynomial_time() {
        let pattern = "/**/a/**/b/**/c/**/d/**/e/**/f/**/z";
        let path = format!("/{}", vec!["a"; 4000].join("/"));
        let t = std::time::Instant::now();
        assert!(!path_glob(pattern, &path));
        // Exponential backtracking took minutes here; the table takes
        // well under a second even in a debug build on a loaded machine.
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(path_glob("/**/a/**", "/x/a"));
        assert!(path_glob("/**", "/"));
        assert!(path_glob("/a/**/b", "/a/b"));
        assert!(path_glob("/a/**/b", "/a/x/y/b"));
        assert!(!path_glob("/a/**/b", "/a/x/y/c"));
        assert!(path_glob("/a/*/c", "/a/b/c"));
        assert!(!path_glob("/a/*/c", "/a/c"));
    }
}
