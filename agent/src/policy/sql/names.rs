//! Names in SQL text: quoting identifiers and reading `search_path`
//! values. One place for these helpers, used by the analysis, the column
//! checks and the PostgreSQL proxy's session state.

use super::MAX_IDENT_BYTES;

/// Read a `search_path` value as PostgreSQL stores it (`a, "B", public`):
/// bare items lower-cased, quoted items exact. `$user` is returned as is
/// for the caller to resolve.
pub fn parse_search_path(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut item = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim().to_ascii_lowercase();
        }
        out.push(truncate_ident(item));
    }
    out
}

/// Quote an identifier when PostgreSQL would need quotes to read it back.
pub fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

pub(super) fn truncate_ident(mut v: String) -> String {
    if v.len() > MAX_IDENT_BYTES {
        let mut cut = MAX_IDENT_BYTES;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    v
}

/// A session's `search_path` as the proxy tracks it (`"$user", public` →
/// lower-cased names with `$user` resolved to `user`): the value of a
/// `SET` as [`super::analyze`] reports it (the stored form), the text of
/// `set_config`, or the client's startup parameter. Read as the server
/// reads the list ([`parse_search_path`]: a quoted item keeps its commas
/// and quotes), with `$user` resolved and empty items dropped.
pub fn resolve_search_path(v: &str, user: &str) -> Vec<String> {
    parse_search_path(v)
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| if p == "$user" { user.to_owned() } else { p })
        .collect()
}

/// An identifier always quoted: safe to splice into SQL that is parsed
/// again (keywords and dots included), where [`quote_ident`] quotes only
/// what needs it for display.
pub fn quote_ident_always(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_are_normalised() {
        assert_eq!(
            resolve_search_path("\"$user\", public", "orders_ro"),
            vec!["orders_ro", "public"]
        );
        assert_eq!(
            resolve_search_path("Sales, \"Mixed Case\"", "u"),
            vec!["sales", "Mixed Case"]
        );
        // Single quotes are not list syntax: a schema named `''`.
        assert_eq!(resolve_search_path("''", "u"), vec!["''"]);
    }

    /// `SET search_path TO "a,b"` names one schema, `a,b`, as the server
    /// reads it (NOTES-18): the tracked path must not split it.
    #[test]
    fn quoted_commas_and_quotes_stay_inside_one_schema_name() {
        assert_eq!(resolve_search_path("\"a,b\"", "u"), vec!["a,b"]);
        assert_eq!(
            resolve_search_path("\"x,public,y\", audit", "u"),
            vec!["x,public,y", "audit"]
        );
        assert_eq!(
            resolve_search_path("\"say \"\"hi\"\", $x\", \"$user\"", "u"),
            vec!["say \"hi\", $x", "u"]
        );
        // The stored form of `SET search_path = ''`, and set_config's raw
        // text.
        assert_eq!(resolve_search_path("\"\"", "u"), Vec::<String>::new());
        assert_eq!(resolve_search_path("a,B , \"C\"", "u"), vec!["a", "b", "C"]);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident_always("lo_open"), "\"lo_open\"");
        assert_eq!(quote_ident_always("a\"b"), "\"a\"\"b\"");
    }
}
