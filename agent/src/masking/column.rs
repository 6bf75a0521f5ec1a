//! Column rules: parsing `table.column` / `schema.table.column` specs with
//! PostgreSQL's quoting rules, and matching them against the names the proxy
//! resolves from RowDescription.
//!
//! An unquoted part matches case-insensitively (ASCII), so `Customers.Email`
//! also covers a table created as `"Customers"`: masking errs towards
//! covering more. A `"quoted"` part matches exactly. An unqualified table
//! matches in every schema. When several rules match one column, a
//! schema-qualified rule beats an unqualified one (so a schema can be given
//! its own strategy); between rules of equal specificity the strictest
//! strategy wins (null > redact > hmac > last4).

use super::model::Strategy;

/// One part of a column spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Ident {
    /// Unquoted parts are stored lowercased (ASCII).
    text: String,
    quoted: bool,
}

impl Ident {
    fn matches(&self, name: &str) -> bool {
        if self.quoted {
            self.text == name
        } else {
            self.text.eq_ignore_ascii_case(name)
        }
    }
}

/// A parsed column spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ColumnKey {
    schema: Option<Ident>,
    table: Ident,
    column: Ident,
}

/// A compiled column rule.
#[derive(Debug, Clone)]
pub(crate) struct ColumnRule {
    key: ColumnKey,
    strategy: Strategy,
    /// The spec as written in the configuration (named in refusals).
    spec: String,
}

impl ColumnRule {
    pub(crate) fn new(key: ColumnKey, strategy: Strategy, spec: &str) -> Self {
        Self {
            key,
            strategy,
            spec: spec.to_owned(),
        }
    }

    /// The spec as written (`customers.email`).
    pub(crate) fn spec(&self) -> &str {
        &self.spec
    }

    pub(crate) fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// Strictness order used to break ties between equally specific rules.
pub(crate) fn strictness(s: Strategy) -> u8 {
    match s {
        Strategy::Last4 => 0,
        Strategy::Hmac => 1,
        Strategy::Redact => 2,
        Strategy::Null => 3,
    }
}

/// The strategy for `schema.table.column` under `rules` (see the module doc
/// for precedence).
pub(crate) fn lookup(
    rules: &[ColumnRule],
    schema: &str,
    table: &str,
    column: &str,
) -> Option<Strategy> {
    lookup_rule(rules, schema, table, column).map(|r| r.strategy)
}

/// The rule that decides `schema.table.column` (see [`lookup`]).
pub(crate) fn lookup_rule<'a>(
    rules: &'a [ColumnRule],
    schema: &str,
    table: &str,
    column: &str,
) -> Option<&'a ColumnRule> {
    let mut best: Option<(bool, &ColumnRule)> = None;
    for r in rules {
        let k = &r.key;
        if !k.column.matches(column) || !k.table.matches(table) {
            continue;
        }
        let qualified = match &k.schema {
            Some(s) if s.matches(schema) => true,
            Some(_) => continue,
            None => false,
        };
        let better = match best {
            None => true,
            Some((bq, b)) => {
                (qualified && !bq)
                    || (qualified == bq && strictness(r.strategy) > strictness(b.strategy))
            }
        };
        if better {
            best = Some((qualified, r));
        }
    }
    best.map(|(_, r)| r)
}

/// The strictest rule that could cover a column of a relation whose
/// schema (`None`: any) or column (`None`: any) is not known: for
/// relations Warden has no catalog entry for.
pub(crate) fn lookup_loose<'a>(
    rules: &'a [ColumnRule],
    schema: Option<&str>,
    table: &str,
    column: Option<&str>,
) -> Option<&'a ColumnRule> {
    rules
        .iter()
        .filter(|r| {
            r.key.table.matches(table)
                && column.is_none_or(|c| r.key.column.matches(c))
                && match (&r.key.schema, schema) {
                    (Some(s), Some(schema)) => s.matches(schema),
                    _ => true,
                }
        })
        .max_by_key(|r| strictness(r.strategy))
}

/// Parse `table.column` or `schema.table.column`.
pub(crate) fn parse_spec(spec: &str) -> Result<ColumnKey, String> {
    let mut parts: Vec<Ident> = Vec::new();
    let mut rest = spec;
    loop {
        let (ident, after) = parse_ident(rest)?;
        parts.push(ident);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.is_empty() => break,
            None => {
                return Err(format!(
                    "unexpected {:?} after a name; expected `.` or the end",
                    after.chars().next().unwrap_or(' ')
                ));
            }
        }
    }
    let mut it = parts.into_iter();
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(table), Some(column), None, _) => Ok(ColumnKey {
            schema: None,
            table,
            column,
        }),
        (Some(schema), Some(table), Some(column), None) => Ok(ColumnKey {
            schema: Some(schema),
            table,
            column,
        }),
        (_, None, _, _) => Err(format!(
            "{spec:?} names no table; write \"table.column\" or \"schema.table.column\""
        )),
        _ => Err(format!(
            "{spec:?} has more than three parts; write \"table.column\" or \"schema.table.column\""
        )),
    }
}

/// One identifier at the start of `s`; returns it and the rest.
fn parse_ident(s: &str) -> Result<(Ident, &str), String> {
    if let Some(body) = s.strip_prefix('"') {
        let mut text = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                text.push(c);
                continue;
            }
            if body[i + 1..].starts_with('"') {
                text.push('"');
                chars.next();
                continue;
            }
            if text.is_empty() {
                return Err("empty quoted name \"\"".into());
            }
            return Ok((Ident { text, quoted: true }, &body[i + 1..]));
        }
        return Err("unterminated quoted name".into());
    }
    let end = s.find(['.', '"']).unwrap_or(s.len());
    let word = &s[..end];
    let mut chars = word.chars();
    match chars.next() {
        None => return Err("empty name (two dots, or a dot at an end)".into()),
        Some(c) if c.is_alphabetic() || c == '_' => {}
        Some(c) => {
            return Err(format!(
                "name {word:?} starts with {c:?}; quote names that are not plain identifiers"
            ));
        }
    }
    if let Some(c) = chars.find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '$')) {
        return Err(format!(
            "name {word:?} contains {c:?}; quote names that are not plain identifiers"
        ));
    }
    Ok((
        Ident {
            text: word.to_ascii_lowercase(),
            quoted: false,
        },
        &s[end..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[(&str, Strategy)]) -> Vec<ColumnRule> {
        specs
            .iter()
            .map(|(s, st)| ColumnRule::new(parse_spec(s).unwrap(), *st, s))
            .collect()
    }

    #[test]
    fn unqualified_table_matches_any_schema_case_insensitively() {
        let r = rules(&[("Customers.EMAIL", Strategy::Redact)]);
        assert_eq!(
            lookup(&r, "public", "customers", "email"),
            Some(Strategy::Redact)
        );
        assert_eq!(
            lookup(&r, "crm", "CUSTOMERS", "Email"),
            Some(Strategy::Redact)
        );
        assert_eq!(lookup(&r, "public", "customers", "name"), None);
        assert_eq!(lookup(&r, "public", "customer", "email"), None);
    }

    #[test]
    fn schema_qualified_matches_only_that_schema() {
        let r = rules(&[("crm.customers.email", Strategy::Null)]);
        assert_eq!(
            lookup(&r, "CRM", "customers", "email"),
            Some(Strategy::Null)
        );
        assert_eq!(lookup(&r, "public", "customers", "email"), None);
    }

    #[test]
    fn quoted_parts_match_exactly_and_may_hold_dots_and_quotes() {
        let r = rules(&[(r#""Sales"."Customers"."E.mail""#, Strategy::Redact)]);
        assert_eq!(
            lookup(&r, "Sales", "Customers", "E.mail"),
            Some(Strategy::Redact)
        );
        assert_eq!(lookup(&r, "sales", "Customers", "E.mail"), None);
        assert_eq!(lookup(&r, "Sales", "customers", "E.mail"), None);
        let r = rules(&[(r#"t."a""b""#, Strategy::Redact)]);
        assert_eq!(lookup(&r, "s", "t", "a\"b"), Some(Strategy::Redact));
    }

    #[test]
    fn qualified_beats_unqualified_then_strictest_wins() {
        let r = rules(&[
            ("customers.email", Strategy::Null),
            ("public.customers.email", Strategy::Last4),
        ]);
        assert_eq!(
            lookup(&r, "public", "customers", "email"),
            Some(Strategy::Last4)
        );
        assert_eq!(
            lookup(&r, "other", "customers", "email"),
            Some(Strategy::Null)
        );
        let r = rules(&[
            ("customers.email", Strategy::Last4),
            (r#""customers".email"#, Strategy::Redact),
        ]);
        assert_eq!(
            lookup(&r, "public", "customers", "email"),
            Some(Strategy::Redact)
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for bad in [
            "email",
            "a.b.c.d",
            "a..b",
            ".a.b",
            "a.b.",
            "a b.c",
            "1a.b",
            r#""a.b"#,
            r#""".b"#,
            r#""a"x.b"#,
            "",
        ] {
            let err = parse_spec(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
        assert!(parse_spec("_a$1.b_2").is_ok());
        assert!(parse_spec("kunden.straße").is_ok());
    }
}
