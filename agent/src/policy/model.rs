//! The policy configuration model as written in TOML under `[policy.NAME]`:
//! the default action, the rules (action plus criteria) and an optional
//! forced `search_path`. Plain serde types; [`super::rules::Policy::compile`]
//! validates and compiles them.

use serde::{Deserialize, Serialize};

/// One `[policy.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What happens to a statement no rule matches (`deny` unless told).
    #[serde(default)]
    pub default: DefaultAction,
    /// The rules; the most restrictive match wins (block > approve > allow).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// A forced search path: unqualified names resolve through it. Without
    /// one the server's default (`"$user", public`) is forced. Either way
    /// it is sent at startup and every way to change it (`SET`/`RESET
    /// search_path`, `set_config`, `SET ROLE`, `SET SESSION AUTHORIZATION`,
    /// the startup parameter) is refused, unless `manage_search_path`.
    #[serde(default)]
    pub search_path: Option<Vec<String>>,
    /// Let the workload manage its own `search_path`. Warden then cannot
    /// know where an unqualified name resolves: block entries still match
    /// it by name in any schema, and only unqualified allow entries cover
    /// it (a schema-qualified allow entry covers only qualified names).
    #[serde(default)]
    pub manage_search_path: bool,
    /// HTTP targets: whether `paths` globs match case-sensitively (the
    /// default) or not (`"insensitive"`: both sides are lower-cased).
    #[serde(default)]
    pub path_case: PathCase,
}

/// How HTTP path globs compare letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathCase {
    #[default]
    Sensitive,
    Insensitive,
}

/// The action for statements no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Refuse (the default).
    #[default]
    Deny,
    /// Let through.
    Allow,
}

/// One rule: an action and criteria that must all match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What a match does.
    pub action: RuleAction,
    /// Statement classes the rule applies to (empty: any class but
    /// `unknown`, which only a rule naming it can match).
    #[serde(default)]
    pub classes: Vec<StatementClass>,
    /// Tables, `name` (any schema) or `schema.name`; `*` is a wildcard
    /// outside double quotes.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Function name globs (`*` only), e.g. `dblink*`, `lo_*`.
    #[serde(default)]
    pub functions: Vec<String>,
    /// A label for audit events and messages (`rules[N]` when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP: request methods (`GET`, `DELETE`...; case-insensitive).
    #[serde(default)]
    pub methods: Vec<String>,
    /// HTTP: path globs over the normalised path (`*` within a segment,
    /// `**` any number of segments), e.g. `/admin/**`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP: query parameters that must be present with a value matching
    /// the glob (`*` only), e.g. `{ dry_run = "true" }`.
    #[serde(default)]
    pub query: std::collections::BTreeMap<String, String>,
    /// HTTP: request headers that must be present with a value matching
    /// the glob (names case-insensitive).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// HTTP: the rule matches only requests whose body is at most this many
    /// bytes (a chunked body of unknown size is cut off, and the request
    /// abandoned, once it grows past it).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
}

impl RuleConfig {
    /// A rule with `action` and no criteria.
    pub fn new(action: RuleAction) -> Self {
        Self {
            action,
            classes: Vec::new(),
            tables: Vec::new(),
            functions: Vec::new(),
            name: None,
            methods: Vec::new(),
            paths: Vec::new(),
            query: Default::default(),
            headers: Default::default(),
            max_body_bytes: None,
        }
    }

    /// True when the rule has SQL criteria (classes, tables, functions).
    pub fn is_sql(&self) -> bool {
        !self.classes.is_empty() || !self.tables.is_empty() || !self.functions.is_empty()
    }

    /// True when the rule has HTTP criteria.
    pub fn is_http(&self) -> bool {
        !self.methods.is_empty()
            || !self.paths.is_empty()
            || !self.query.is_empty()
            || !self.headers.is_empty()
            || self.max_body_bytes.is_some()
    }
}

impl PolicyConfig {
    /// True when some rule has SQL criteria.
    pub fn has_sql_rules(&self) -> bool {
        self.rules.iter().any(RuleConfig::is_sql)
    }

    /// True when some rule has HTTP criteria.
    pub fn has_http_rules(&self) -> bool {
        self.rules.iter().any(RuleConfig::is_http)
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Let the statement through.
    Allow,
    /// Refuse it.
    Block,
    /// Hold it for a human's approval.
    Approve,
}

impl RuleAction {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Block => "block",
            RuleAction::Approve => "approve",
        }
    }
}

/// What a statement does, from least to most severe (the derived order is
/// the severity order used to combine statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementClass {
    /// Reads data or only touches the session (SELECT, SHOW, BEGIN, SET of
    /// a safe setting, LISTEN, DEALLOCATE, EXPLAIN without ANALYZE...).
    Read,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY FROM STDIN,
    /// SELECT ... FOR UPDATE, data-modifying CTEs, nextval, NOTIFY, CALL...).
    Write,
    /// Changes the schema or does maintenance (CREATE, ALTER, DROP,
    /// TRUNCATE, COMMENT, SELECT INTO, VACUUM, ANALYZE...).
    Ddl,
    /// Escapes the account's role or the database (GRANT, roles, DO, COPY
    /// to/from files or programs, LOAD, CREATE EXTENSION, dangerous
    /// built-in functions...).
    Privileged,
    /// Parsed but not understood by the classifier.
    Unknown,
}

impl StatementClass {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Privileged => "privileged",
            StatementClass::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for StatementClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let text = r#"
default = "deny"
search_path = ["app", "public"]
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
  { action = "approve", classes = ["write"], tables = ["orders"] },
  { action = "block", functions = ["pg_read_file", "dblink*"] },
]
"#;
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.default, DefaultAction::Deny);
        assert_eq!(cfg.rules.len(), 4);
        assert_eq!(cfg.rules[1].name.as_deref(), Some("no-secrets"));
        assert_eq!(cfg.rules[2].classes, vec![StatementClass::Write]);
        assert_eq!(cfg.rules[3].action, RuleAction::Block);
        assert_eq!(cfg.search_path.as_deref().unwrap().len(), 2);
    }

    #[test]
    fn rejects_unknown_keys_and_classes() {
        assert!(toml::from_str::<PolicyConfig>("defualt = \"deny\"").is_err());
        assert!(
            toml::from_str::<PolicyConfig>("rules = [{ action = \"allow\", clases = [] }]")
                .is_err()
        );
        assert!(
            toml::from_str::<PolicyConfig>(
                "rules = [{ action = \"allow\", classes = [\"select\"] }]"
            )
            .is_err()
        );
        assert!(toml::from_str::<PolicyConfig>("default = \"block\"").is_err());
        let empty: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(empty.default, DefaultAction::Deny);
    }

    #[test]
    fn severity_order() {
        assert!(StatementClass::Read < StatementClass::Write);
        assert!(StatementClass::Write < StatementClass::Ddl);
        assert!(StatementClass::Ddl < StatementClass::Privileged);
        assert!(StatementClass::Privileged < StatementClass::Unknown);
        assert_eq!(StatementClass::Ddl.as_str(), "ddl");
    }
}
