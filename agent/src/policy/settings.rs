//! Session settings safety: which values of which run-time parameters the
//! proxy lets a client set, through `SET`/`RESET`/`SET NAMES` or through
//! startup parameters (including the `options` startup parameter, parsed by
//! [`parse_options`]).
//!
//! The classifier tokenises SQL the way PostgreSQL does with
//! `standard_conforming_strings = on` and a UTF-8 client encoding. A client
//! that changes how the server tokenises (`standard_conforming_strings`
//! off, a client encoding whose multibyte characters can hide a quote or a
//! backslash, `backslash_quote = on`) could make the server see statements
//! the classifier did not, so those values are refused. Switching role
//! (`role`, `session_authorization`) would escape the account's upstream
//! role and is refused too, as is loading libraries
//! (`*_preload_libraries`, `dynamic_library_path`) and
//! `session_replication_role` (disables triggers and foreign keys).
//! `None` (RESET, `DEFAULT`) returns to the value the session started with,
//! which the proxy checks at startup, so it is always accepted.

/// Whether parameter `name` (any case; `?` for a name computed at run
/// time) steers the planner: its choice of plan decides the order rows
/// come back in, so on a grant whose masking judges masked columns it
/// could make an index on a masked column an ordering oracle (M7).
pub fn is_planner_setting(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == "?"
        || n.starts_with("enable_")
        || n.starts_with("geqo")
        || n.ends_with("_cost")
        || matches!(
            n.as_str(),
            "effective_cache_size"
                | "cursor_tuple_fraction"
                | "from_collapse_limit"
                | "join_collapse_limit"
                | "constraint_exclusion"
        )
}

/// Whether a masking fixes the planner settings: it has column rules and
/// judges where masked columns are used (`refuse`, `equality`; under
/// `any` every inference is allowed already).
pub fn masking_fixes_planner(m: &crate::masking::Masker) -> bool {
    m.has_columns() && m.masked_in_predicates() != crate::masking::MaskedInPredicates::Any
}

/// The refusal of a planner setting on such a grant.
pub fn planner_fixed(name: &str) -> String {
    format!(
        "{name} is fixed on a grant with column masking: the plan decides the order rows come back in, which could follow an index on a masked column"
    )
}

/// Whether `value` of parameter `name` (any case) may be set. `Err` carries
/// the reason, naming the parameter (never a secret: parameter values are
/// not secrets, but only the parameter name and the expected values are
/// quoted).
pub fn check_setting(name: &str, value: Option<&str>) -> Result<(), String> {
    let name = name.trim().to_ascii_lowercase();
    let Some(value) = value else {
        return Ok(());
    };
    let v = value.trim();
    match name.as_str() {
        "standard_conforming_strings" => match parse_bool(v) {
            Some(true) => Ok(()),
            _ => Err(
                "standard_conforming_strings must stay on (it changes how SQL is tokenised)".into(),
            ),
        },
        "client_encoding" | "names" => {
            if is_utf8_name(v) {
                Ok(())
            } else {
                Err(
                    "client_encoding must be UTF8 (other encodings change how SQL is tokenised)"
                        .into(),
                )
            }
        }
        "backslash_quote" => {
            let l = v.to_ascii_lowercase();
            if l == "safe_encoding" || parse_bool(&l) == Some(false) {
                Ok(())
            } else {
                Err("backslash_quote must be off or safe_encoding (it changes how SQL is tokenised)".into())
            }
        }
        "role" | "session_authorization" => Err(format!(
            "{name} cannot be changed: the account's upstream role is fixed"
        )),
        "session_preload_libraries"
        | "local_preload_libraries"
        | "shared_preload_libraries"
        | "dynamic_library_path"
        | "session_replication_role" => Err(format!("{name} cannot be changed through Warden")),
        _ => Ok(()),
    }
}

/// Parameters [`check_setting`] refuses some values of: a value computed
/// at run time (a `set_config` argument that is not a literal) of one of
/// these could be any of them.
const GUARDED: &[&str] = &[
    "standard_conforming_strings",
    "client_encoding",
    "names",
    "backslash_quote",
    "role",
    "session_authorization",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
    "dynamic_library_path",
    "session_replication_role",
];

/// Whether a change of parameter `name` (`?`: named at run time) to
/// `value` (`None`: RESET / DEFAULT, or computed when `computed`) may be
/// made. A value computed at run time is not a RESET: for a parameter
/// Warden fixes some values of, it is refused, and so is any change of a
/// parameter named at run time (it could be any of them).
pub fn check_change(name: &str, value: Option<&str>, computed: bool) -> Result<(), String> {
    let n = name.trim().to_ascii_lowercase();
    if n == "?" {
        return Err(
            "a setting named at run time is refused: it could be one that changes how SQL is \
             tokenised or the role"
                .into(),
        );
    }
    if computed && GUARDED.contains(&n.as_str()) {
        return Err(format!(
            "{n} cannot be set to a value computed at run time (Warden checks its value)"
        ));
    }
    check_setting(&n, value)
}

/// PostgreSQL's boolean spellings (`parse_bool`): unique prefixes of
/// `true`/`false`/`yes`/`no`, `on`/`off` (at least `of`), `1`/`0`.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "on" || v == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// Whether an encoding name means UTF-8 the way PostgreSQL reads encoding
/// names (case-insensitive, non-alphanumerics ignored): `UTF8`, `utf-8`,
/// `Unicode`.
fn is_utf8_name(value: &str) -> bool {
    let clean: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    clean == "utf8" || clean == "unicode"
}

/// Parse the `options` startup parameter into `(name, value)` settings.
/// PostgreSQL splits it on whitespace (a backslash escapes the next
/// character) and reads it as command-line switches; only `-c name=value`,
/// `-cname=value` and `--name=value` are accepted (any other switch is
/// refused). Names are lower-cased with `-` turned into `_`, as the server
/// does.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => {
                    cur.push(n);
                    have = true;
                }
                None => return Err("options ends with a lone backslash".into()),
            }
        } else if c.is_ascii_whitespace() {
            if have {
                words.push(std::mem::take(&mut cur));
                have = false;
            }
        } else {
            cur.push(c);
            have = true;
        }
    }
    if have {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let assignment = if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else if w == "-c" {
            it.next()
                .ok_or_else(|| "options: -c without name=value".to_string())?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(format!(
                "options: only -c name=value and --name=value are accepted, not {w:?}"
            ));
        };
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("options: {assignment:?} is not name=value"))?;
        let name = name.replace('-', "_").to_ascii_lowercase();
        if name.is_empty() {
            return Err("options: empty parameter name".into());
        }
        out.push((name, value.to_string()));
    }
    Ok(out)
}

/// Whether a setting change can make a read-only session writable:
/// `transaction_read_only` / `default_transaction_read_only` set to
/// anything but true (RESET and DEFAULT included: the server's default is
/// off), or a `set_config` whose name or value is computed. `RESET ALL`
/// returns `default_transaction_read_only` to the startup value, which
/// Warden set to on.
/// (`name` `?`: named at run time; `computed`: the value is.)
pub fn leaves_read_only(name: &str, value: Option<&str>, computed: bool) -> bool {
    match name {
        "?" => true,
        "transaction_read_only" | "default_transaction_read_only" => computed || !is_on(value),
        _ => false,
    }
}

fn is_on(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().trim_matches('\'').to_ascii_lowercase())
            .as_deref(),
        Some("on" | "true" | "yes" | "1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_values_of_guarded_settings_and_computed_names_are_refused() {
        // Every guarded name refuses some literal value: the list follows
        // check_setting.
        for n in GUARDED {
            assert!(
                check_setting(n, Some("\u{1}not a value")).is_err()
                    || check_setting(n, Some("off")).is_err(),
                "{n}"
            );
            assert!(check_change(n, None, true).is_err(), "{n}");
            assert!(check_change(n, None, false).is_ok(), "RESET {n}");
        }
        assert!(check_change("?", Some("x"), false).is_err());
        assert!(check_change("?", None, true).is_err());
        assert!(check_change("app.tenant", None, true).is_ok());
        assert!(check_change(" Standard_Conforming_Strings", None, true).is_err());
        assert!(check_change("standard_conforming_strings", Some("on"), false).is_ok());
    }

    #[test]
    fn standard_conforming_strings_must_stay_on() {
        for ok in ["on", "ON", "true", "t", "yes", "1", " on "] {
            assert!(
                check_setting("standard_conforming_strings", Some(ok)).is_ok(),
                "{ok}"
            );
        }
        for bad in ["off", "of", "false", "0", "no", "maybe", ""] {
            let e = check_setting("Standard_Conforming_Strings", Some(bad)).unwrap_err();
            assert!(e.contains("standard_conforming_strings"), "{e}");
        }
        assert!(check_setting("standard_conforming_strings", None).is_ok());
    }

    #[test]
    fn client_encoding_must_be_utf8() {
        for ok in ["UTF8", "utf8", "UTF-8", "utf_8", "Unicode"] {
            assert!(check_setting("client_encoding", Some(ok)).is_ok(), "{ok}");
        }
        for bad in ["SJIS", "BIG5", "GBK", "LATIN1", "SQL_ASCII", "utf16", ""] {
            assert!(
                check_setting("client_encoding", Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(check_setting("names", Some("sjis")).is_err());
    }

    #[test]
    fn backslash_quote_and_roles() {
        assert!(check_setting("backslash_quote", Some("safe_encoding")).is_ok());
        assert!(check_setting("backslash_quote", Some("off")).is_ok());
        assert!(check_setting("backslash_quote", Some("on")).is_err());
        assert!(check_setting("role", Some("admin")).is_err());
        assert!(check_setting("session_authorization", Some("postgres")).is_err());
        assert!(check_setting("role", None).is_ok());
        assert!(check_setting("session_preload_libraries", Some("x")).is_err());
        assert!(check_setting("application_name", Some("psql")).is_ok());
        assert!(check_setting("DateStyle", Some("ISO, MDY")).is_ok());
    }

    #[test]
    fn options_parsing() {
        let got = parse_options("-c search_path=app -cstatement_timeout=5s --client-encoding=UTF8")
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("search_path".into(), "app".into()),
                ("statement_timeout".into(), "5s".into()),
                ("client_encoding".into(), "UTF8".into()),
            ]
        );
        let spaced = parse_options(r"-c application_name=my\ app").unwrap();
        assert_eq!(spaced, vec![("application_name".into(), "my app".into())]);
        assert!(parse_options("-e").is_err());
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-c novalue").is_err());
        assert!(parse_options("trailing\\").is_err());
        assert_eq!(parse_options("   ").unwrap(), vec![]);
    }

    #[test]
    fn bool_spellings() {
        assert_eq!(parse_bool("tru"), Some(true));
        assert_eq!(parse_bool("o"), None);
        assert_eq!(parse_bool("OFF"), Some(false));
        assert_eq!(parse_bool("2"), None);
    }
}
