//! The masking configuration as written in `[masking.NAME]` (deserialised by
//! the config loader), the strategy names, and the two small value types of
//! the API: [`Masked`] (a masked value or SQL NULL) and [`MaskingProblem`]
//! (one configuration problem, reported all at once by
//! [`Masker::compile`](super::Masker::compile)).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// One `[masking.NAME]` table.
///
/// ```toml
/// [masking.pii]
/// columns = [ { column = "customers.email", strategy = "redact" },
///             { column = "customers.card", strategy = "last4" } ]
/// patterns = ["card", "email", "ssn", "iban", "token", "employee_id"]
/// pattern_strategy = "redact"
/// custom = [ { name = "employee_id", regex = "EMP-[0-9]{6}" } ]
/// hmac_key_file = "/etc/warden/masking.key"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Column rules, matched against the names the proxy resolves from
    /// RowDescription (table OID + attribute number).
    #[serde(default)]
    pub columns: Vec<ColumnRuleConfig>,
    /// Detectors applied to every value: the built-in `card`, `email`,
    /// `ssn`, `iban`, `token`, or the `name` of an entry of `custom`.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Strategy for pattern hits; default `redact`.
    #[serde(default)]
    pub pattern_strategy: Option<Strategy>,
    /// Extra detectors (`regex` crate syntax). Each must be listed in
    /// `patterns` to be active.
    #[serde(default)]
    pub custom: Vec<CustomPattern>,
    /// File holding the HMAC key; required when any strategy is `hmac`.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// HTTP bodies: JSON members masked by name (anywhere in the document)
    /// or by JSON pointer, and form fields by name.
    #[serde(default)]
    pub fields: Vec<FieldRuleConfig>,
    /// HTTP bodies: content codings Warden cannot decode (e.g. `br`,
    /// `zstd`) that may pass through *unmasked*, recorded as such. Default:
    /// none (such a body is refused with 502). gzip and deflate are always
    /// decoded and masked.
    #[serde(default)]
    pub unmasked_encodings: Vec<String>,
    /// HTTP bodies: media types (`type/subtype` or `type/*`) Warden cannot
    /// mask that may pass through *unmasked*, recorded as such (a listed
    /// text type, which field rules cannot apply to, still gets the
    /// patterns). Default: none: on a grant with this masking, a response
    /// of any type but JSON, form-urlencoded and (without field rules)
    /// text is refused with 502.
    #[serde(default)]
    pub unmasked_types: Vec<String>,
    /// PostgreSQL: where a column of `columns` may be used other than as a
    /// bare output column of the top-level select list (see
    /// [`MaskedInPredicates`]). Default `equality`.
    #[serde(default)]
    pub masked_in_predicates: MaskedInPredicates,
    /// HTTP bodies: what field rules assume about response member names
    /// (see [`RequestNamedFields`]). Default `mask`.
    #[serde(default)]
    pub request_named_fields: RequestNamedFields,
}

/// Whether a response member named by the request may hold a field of
/// `fields` under a name the caller chose (PostgREST `select=n:name`,
/// GraphQL aliases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestNamedFields {
    /// When a request mentions a field rule's name, every response member
    /// whose name is also a word of the request gets that rule (masks
    /// more than needed on APIs that project on request: a GraphQL query
    /// for `{ id name }` masks `id` too).
    #[default]
    Mask,
    /// The upstream's member names are fixed by its schema, whatever the
    /// request says (an API without projection or aliases): rules match
    /// names only. Wrong for PostgREST, GraphQL, OData, Hasura.
    Trust,
}

/// Where a masked column may appear outside the select list of a
/// PostgreSQL statement, and so what a workload can infer about its
/// values without ever receiving them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskedInPredicates {
    /// Nowhere: a masked column can only be returned (masked). Nothing is
    /// inferred beyond what the masked value itself shows.
    Refuse,
    /// Compared with `=`, `<>`, `IN`, `NOT IN`, `IS [NOT] DISTINCT FROM`,
    /// `= ANY(...)` against literals or parameters, or `IS NULL` (not `IS
    /// NOT NULL`, nor planner settings: row order, M7), in
    /// WHERE / JOIN ON / HAVING conditions (joined by AND, OR, NOT): a
    /// workload can confirm a value it already guesses (look a row up by
    /// e-mail; a dictionary attack on low-entropy values), never learn
    /// one by ranges, patterns, ordering or grouping.
    #[default]
    Equality,
    /// Anywhere a condition, ordering or grouping can use it (LIKE, ranges,
    /// functions of it, ORDER BY, GROUP BY, DISTINCT, window partitions,
    /// JOIN USING): values can be inferred bit by bit (`WHERE ssn LIKE
    /// '1%'`) or by rank; they are still never returned unmasked.
    Any,
}

impl MaskedInPredicates {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskedInPredicates::Refuse => "refuse",
            MaskedInPredicates::Equality => "equality",
            MaskedInPredicates::Any => "any",
        }
    }
}

/// `{ field = "email", strategy = "redact" }` or
/// `{ pointer = "/customer/card", strategy = "last4" }` (exactly one of
/// `field`, `pointer`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRuleConfig {
    /// Member name, matched case-insensitively at any depth (also form
    /// field names).
    #[serde(default)]
    pub field: Option<String>,
    /// RFC 6901 JSON pointer; array indexes may be `*`.
    #[serde(default)]
    pub pointer: Option<String>,
    pub strategy: Strategy,
}

/// `{ column = "table.column", strategy = "redact" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRuleConfig {
    /// `table.column` or `schema.table.column`. An unqualified table matches
    /// any schema; unquoted parts match case-insensitively, `"Quoted"` parts
    /// exactly (`""` inside quotes is one `"`).
    pub column: String,
    pub strategy: Strategy,
}

/// `{ name = "employee_id", regex = "EMP-[0-9]{6}" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Detector name: lowercase ASCII letters, digits and `_`; it appears in
    /// the redaction marker `[MASKED:name]`.
    pub name: String,
    pub regex: String,
}

/// What happens to a value (column rule) or to a match (pattern rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Replace with a fixed marker: `[MASKED]` for a column, `[MASKED:kind]`
    /// for a pattern match.
    Redact,
    /// Keep the last four letters/digits (when at least eight are present),
    /// `*` for the rest; spaces and dashes are kept.
    Last4,
    /// `tok_` + 16 hex digits of HMAC-SHA256(key, value): deterministic, so
    /// equality (joins, GROUP BY) survives.
    Hmac,
    /// SQL NULL (for a pattern match: the whole value).
    Null,
}

impl Strategy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Last4 => "last4",
            Strategy::Hmac => "hmac",
            Strategy::Null => "null",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A masked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked {
    /// Send SQL NULL instead of the value.
    Null,
    /// Send these bytes instead of the value.
    Value(Vec<u8>),
}

/// One configuration problem. `key` is relative to the `[masking.NAME]`
/// table: `columns[1].column`, `patterns[0]`, `custom[0].regex`,
/// `hmac_key_file`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskingProblem {
    pub key: String,
    pub message: String,
}

impl MaskingProblem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for MaskingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        masking: std::collections::BTreeMap<String, MaskingConfig>,
    }

    #[test]
    fn the_issue_example_deserialises() {
        let doc: Doc = toml::from_str(
            r#"
[masking.pii]
columns = [ { column = "customers.email", strategy = "redact" }, { column = "customers.card", strategy = "last4" } ]
patterns = ["card", "email", "ssn", "iban", "token"]
"#,
        )
        .unwrap();
        let pii = &doc.masking["pii"];
        assert_eq!(pii.columns.len(), 2);
        assert_eq!(pii.columns[1].column, "customers.card");
        assert_eq!(pii.columns[1].strategy, Strategy::Last4);
        assert_eq!(pii.patterns, ["card", "email", "ssn", "iban", "token"]);
        assert_eq!(pii.pattern_strategy, None);
        assert!(pii.custom.is_empty());
        assert_eq!(pii.hmac_key_file, None);
    }

    #[test]
    fn every_field_and_strategy_spelling() {
        let cfg: MaskingConfig = toml::from_str(
            r#"
columns = [ { column = "a.b", strategy = "hmac" }, { column = "a.c", strategy = "null" },
            { column = "a.d", strategy = "redact" }, { column = "a.e", strategy = "last4" } ]
pattern_strategy = "hmac"
custom = [ { name = "employee_id", regex = "EMP-[0-9]{6}" } ]
hmac_key_file = "/k"
"#,
        )
        .unwrap();
        let got: Vec<_> = cfg.columns.iter().map(|c| c.strategy.as_str()).collect();
        assert_eq!(got, ["hmac", "null", "redact", "last4"]);
        assert_eq!(cfg.pattern_strategy, Some(Strategy::Hmac));
        assert_eq!(cfg.custom[0].name, "employee_id");
        assert_eq!(cfg.hmac_key_file, Some(PathBuf::from("/k")));
    }

    #[test]
    fn unknown_keys_and_strategies_are_refused() {
        assert!(toml::from_str::<MaskingConfig>("colums = []").is_err());
        assert!(
            toml::from_str::<MaskingConfig>(r#"columns = [{ column = "a.b", strategy = "hash" }]"#)
                .is_err()
        );
        assert!(
            toml::from_str::<MaskingConfig>(
                r#"columns = [{ column = "a.b", strategy = "redact", extra = 1 }]"#
            )
            .is_err()
        );
        assert!(
            toml::from_str::<MaskingConfig>(r#"custom = [{ name = "x", regex = "y", z = 1 }]"#)
                .is_err()
        );
    }
}
