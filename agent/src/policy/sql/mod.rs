//! SQL classification: parse a PostgreSQL query string with PostgreSQL's
//! own grammar (`pg_query`, libpg_query: the server's parser compiled as a
//! library) and reduce every statement to the facts the policy decides on:
//! its class, the tables it touches, the functions it calls, the settings
//! it changes, its PREPARE/EXECUTE/DEALLOCATE and transaction effects.
//!
//! The walk is generic over the whole parse tree: every node of every kind
//! is visited (the tree is read through its serde form, so a node type the
//! walker has no rule for is still descended into), and the nodes that
//! matter are recognised wherever they stand: statements (a data-modifying
//! CTE, an EXPLAIN target, a PREPAREd body, a rule action), relations
//! (`RangeVar`), function calls (`FuncCall`, table functions, TABLESAMPLE
//! methods), and `WITH` scopes. The statement's class is the most severe
//! found anywhere in it.
//!
//! Fail-closed rules:
//! - Text the grammar rejects is an [`AnalyzeError::Syntax`] carrying the
//!   parser's own message and position; the proxy answers it with SQLSTATE
//!   42601 as the server would, and forwards nothing. The grammar is
//!   PostgreSQL 18's, newer than a PostgreSQL 15 server: syntax only 16+
//!   accepts parses here and is then rejected by the server itself.
//! - Statement kinds the classifier does not know are
//!   [`StatementClass::Unknown`]: only a rule naming class `unknown` allows
//!   them.
//! - Tokenisation follows the server's (`standard_conforming_strings = on`,
//!   UTF-8): [`super::settings`] keeps the session there.
//! - Dangerous built-in functions (server files, large objects, dblink,
//!   `*_to_xml` and `ts_stat` which run SQL given as text or read tables
//!   by name, `set_config`, backend signalling, replication, backups...)
//!   make the statement [`StatementClass::Privileged`] whatever the rules;
//!   `nextval`/`setval`/`pg_notify` make it [`StatementClass::Write`].
//!   `set_config` with literal arguments is also reported as the setting it
//!   changes (with a computed name: the unknown setting `?`).
//!
//! Classes of session statements: transaction control (BEGIN, COMMIT,
//! ROLLBACK, SAVEPOINT, RELEASE, SET TRANSACTION, SET CONSTRAINTS, PREPARE
//! TRANSACTION), SET/RESET of a safe setting, SHOW, DISCARD, DEALLOCATE,
//! LISTEN, UNLISTEN, DECLARE/FETCH/MOVE/CLOSE of a cursor, EXECUTE (whose
//! decision is the prepared statement's) and EXPLAIN without ANALYZE are
//! `read`. NOTIFY, LOCK, CALL and `SELECT ... FOR UPDATE/SHARE` are
//! `write`. `SELECT ... INTO`, VACUUM, ANALYZE, REINDEX, CLUSTER and
//! REFRESH are `ddl`. SET ROLE, SET SESSION AUTHORIZATION, GRANT/REVOKE,
//! roles, DO, CHECKPOINT, LOAD, extensions, foreign data, publications and
//! subscriptions, event triggers, languages, tablespaces, ALTER SYSTEM,
//! CREATE/ALTER/DROP DATABASE, ownership changes, COMMIT/ROLLBACK PREPARED
//! (another session's transaction), COPY to/from a server file or a
//! program are `privileged`. `EXPLAIN ANALYZE` (or `EXPLAIN (ANALYZE ...)`
//! unless the option is plainly false) has its target's class.
//!
//! Names are as PostgreSQL's scanner leaves them: unquoted identifiers
//! lower-cased, quoted ones exact, both truncated to 63 bytes. A
//! function's `pg_catalog` schema is dropped. References to a CTE of an
//! enclosing `WITH` (scoped as PostgreSQL scopes them: a non-recursive CTE
//! is not visible in its own body or earlier ones) are not tables; the
//! target of INSERT/UPDATE/DELETE/MERGE is always a table.
//!
//! Here: the facts' types, the entry points ([`analyze`]) and the reading
//! of the tree's serde form. The walk is in `analyze.rs`, what node kinds,
//! objects, functions and relations mean for the class in `classify.rs`,
//! identifier quoting and `search_path` values in `names.rs`, and one
//! session's SQL state in [`session`].

use pg_query::protobuf::ObjectType;
use serde_json::{Map, Value};

use super::model::StatementClass;

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

mod analyze;
mod classify;
mod names;
pub mod session;

use analyze::statement_facts;
#[cfg(test)]
use classify::{defines_code, utility_class};
pub use classify::{is_safe_builtin, is_safe_operator};
#[cfg(test)]
use names::truncate_ident;
pub use names::{parse_search_path, quote_ident, quote_ident_always, resolve_search_path};

/// Deepest tree walked (PostgreSQL's own parser stops far earlier on
/// expressions; this bounds the walker's recursion whatever the input).
pub(crate) const MAX_DEPTH: usize = 2000;

pub(crate) type Obj = Map<String, Value>;

/// Why a query text could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    /// PostgreSQL's grammar rejected the text (the server would answer
    /// SQLSTATE 42601 with the same message and position).
    #[error("{message}")]
    Syntax {
        /// The parser's message, e.g. `syntax error at or near "FROM"`.
        message: String,
        /// 1-based character position in the text, as the server's
        /// ErrorResponse `P` field; `None` when it cannot be placed.
        position: Option<u32>,
    },
    /// The text parses but uses a construct the classifier refuses.
    #[error("unsupported SQL: {reason}")]
    Unsupported {
        /// What was refused.
        reason: String,
    },
}

impl AnalyzeError {
    /// True when the server itself would reject the text as a syntax error.
    pub fn is_syntax(&self) -> bool {
        matches!(self, AnalyzeError::Syntax { .. })
    }
}

/// Everything one query text does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// One entry per statement, in order (empty for an empty query).
    pub statements: Vec<StatementFacts>,
}

impl Analysis {
    /// Withdraws the safe-list trust from every call whose unqualified (or
    /// `pg_catalog.`-qualified) name is also the name of a function or
    /// operator in another schema of the database: the server picks the
    /// best-matching signature across the search path, so a user object
    /// named like a safe built-in can win over it (`public.+(text, text)`,
    /// `public.lower(integer)`). `shadowed` is the session's catalog
    /// snapshot of such names.
    pub fn distrust_shadowed(&mut self, shadowed: &std::collections::HashSet<String>) {
        if shadowed.is_empty() {
            return;
        }
        for st in &mut self.statements {
            for f in &mut st.functions {
                if f.safe && f.schema.is_none() && shadowed.contains(&f.name) {
                    f.safe = false;
                }
            }
            for op in &st.operators {
                if shadowed.contains(op) && !st.functions.iter().any(|f| &f.name == op) {
                    st.functions.push(FuncRef {
                        schema: None,
                        name: op.clone(),
                        safe: false,
                    });
                }
            }
            if let Some((_, inner)) = &mut st.prepare {
                inner.distrust_shadowed(shadowed);
            }
        }
    }

    /// True for an empty or whitespace/comment-only query.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The most severe class among the statements (`read` when empty).
    pub fn class(&self) -> StatementClass {
        self.statements
            .iter()
            .map(|s| s.class)
            .max()
            .unwrap_or(StatementClass::Read)
    }

    /// True when a statement runs a prepared statement, so the decision
    /// depends on the session's prepared statements, not only on the text.
    pub fn depends_on_session(&self) -> bool {
        self.statements.iter().any(|s| s.execute.is_some())
    }
}

/// The facts of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFacts {
    /// The most severe class found in the statement and everything nested.
    pub class: StatementClass,
    /// The command, e.g. `SELECT`, `DELETE`, `SET`, `CREATE TABLE`.
    pub command: String,
    /// Every table referenced (deduplicated; `write` if any reference writes).
    pub tables: Vec<TableRef>,
    /// Every function called (deduplicated).
    pub functions: Vec<FuncRef>,
    /// Built-in operator symbols used unqualified (deduplicated): trusted
    /// unless the database overloads the symbol elsewhere
    /// ([`Analysis::distrust_shadowed`]).
    pub operators: Vec<String>,
    /// Settings changed by SET/RESET/SET NAMES/DISCARD ALL/set_config.
    pub settings: Vec<SettingChange>,
    /// `PREPARE name AS stmt`: the name and the analysis of `stmt`.
    pub prepare: Option<(String, Box<Analysis>)>,
    /// `EXECUTE name` (also inside EXPLAIN): the prepared statement's name.
    pub execute: Option<String>,
    /// `DEALLOCATE name` (`Some(Some(name))`) or `DEALLOCATE ALL` /
    /// `DISCARD ALL` (`Some(None)`).
    pub deallocate: Option<Option<String>>,
    /// The portal a cursor statement names: `DECLARE name`, `FETCH`/`MOVE
    /// … name`, `CLOSE name` (`Some(Some(name))`); `CLOSE ALL` and
    /// `DISCARD ALL` close every portal (`Some(None)`). SQL cursors and
    /// the extended protocol's portals are one namespace on the server.
    pub cursor: Option<Option<String>>,
    /// `DECLARE … WITH HOLD`: the cursor outlives its transaction.
    pub cursor_hold: bool,
    /// Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...).
    pub transaction: bool,
    /// The statement asks for a read-write transaction or session
    /// (`BEGIN READ WRITE`, `SET TRANSACTION READ WRITE`, `SET SESSION
    /// CHARACTERISTICS AS TRANSACTION READ WRITE`); settings that do the
    /// same are in [`StatementFacts::settings`].
    pub read_write: bool,
    /// Why the class is more severe than the command suggests, e.g.
    /// `calls pg_read_file`, `COPY to a program`.
    pub note: Option<String>,
}

impl StatementFacts {
    pub(crate) fn new() -> Self {
        StatementFacts {
            class: StatementClass::Read,
            command: String::new(),
            tables: Vec::new(),
            functions: Vec::new(),
            operators: Vec::new(),
            settings: Vec::new(),
            prepare: None,
            execute: None,
            deallocate: None,
            cursor: None,
            cursor_hold: false,
            transaction: false,
            read_write: false,
            note: None,
        }
    }

    /// Raise the class to `class` (keeping the most severe), with why.
    pub(crate) fn bump(&mut self, class: StatementClass, note: Option<String>) {
        if class > self.class {
            self.class = class;
            if note.is_some() {
                self.note = note;
            }
        } else if class == self.class && self.note.is_none() && class > StatementClass::Read {
            self.note = note;
        }
    }
}

/// A table reference, normalised (unquoted → lower case, quoted exact).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The schema when the reference is qualified.
    pub schema: Option<String>,
    /// The table (or view, sequence...) name.
    pub name: String,
    /// Whether the statement writes it.
    pub write: bool,
}

impl TableRef {
    /// `schema.name` or `name`, each part quoted when PostgreSQL would
    /// need quotes.
    pub fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// A function call (or a call of an operator, whose name is then its
/// symbol), normalised (`pg_catalog` schema dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncRef {
    /// The schema when qualified with anything but `pg_catalog`.
    pub schema: Option<String>,
    /// The function name (operator symbol).
    pub name: String,
    /// A built-in of the safe list ([`is_safe_builtin`]): it may be called
    /// without a policy naming it. Any other function or operator makes
    /// the statement `privileged` unless an allow rule names it.
    pub safe: bool,
}

impl FuncRef {
    /// `schema.name` or `name`.
    pub fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// A run-time parameter change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    /// Lower-case parameter name (`all` for RESET ALL / DISCARD ALL, `?`
    /// for a `set_config` whose name is computed).
    pub name: String,
    /// The new value as PostgreSQL would store it (list items of
    /// `search_path` quoted when needed); `None` for RESET / DEFAULT, and
    /// for a computed `set_config` value.
    pub value: Option<String>,
    /// `SET LOCAL` (until the end of the transaction).
    pub local: bool,
    /// The value is computed at run time (`set_config` with a non-literal
    /// argument): nothing can be concluded from [`SettingChange::value`].
    pub computed: bool,
}

/// Analyse a query text (one or more statements).
pub fn analyze(sql: &str) -> Result<Analysis, AnalyzeError> {
    analyze_tree(&parse_tree(sql)?)
}

/// Analyse a parse tree ([`parse_tree`]), for callers that read the tree
/// for something else too (the fingerprint's data literals).
pub(crate) fn analyze_tree(tree: &Value) -> Result<Analysis, AnalyzeError> {
    let mut out = Analysis::default();
    let stmts = tree
        .get("stmts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for raw in stmts {
        let Some(stmt) = raw.get("stmt") else {
            continue;
        };
        out.statements.push(statement_facts(stmt)?);
    }
    Ok(out)
}

/// PostgreSQL's parse tree of `sql` in its serde form.
pub(crate) fn parse_tree(sql: &str) -> Result<Value, AnalyzeError> {
    if sql.as_bytes().contains(&0) {
        return Err(AnalyzeError::Syntax {
            message: "invalid byte sequence: the statement contains a NUL byte".into(),
            position: None,
        });
    }
    let parsed = match pg_query::parse(sql, 0) {
        Ok(p) => p,
        Err(pg_query::Error::Parse(message)) => {
            let position = error_position(sql, &message);
            return Err(AnalyzeError::Syntax { message, position });
        }
        Err(e) => {
            return Err(AnalyzeError::Unsupported {
                reason: format!("the parse tree could not be read: {e}"),
            });
        }
    };
    serde_json::to_value(&parsed.protobuf).map_err(|e| AnalyzeError::Unsupported {
        reason: format!("the parse tree could not be read: {e}"),
    })
}

/// Where the parser stopped, as the server reports it (1-based character
/// position, the `P` field): libpg_query's own cursor position, which its
/// Rust binding drops (`warden_common::pg_parse_error`).
fn error_position(sql: &str, message: &str) -> Option<u32> {
    let e = warden_common::pg_parse_error::parse_error(sql)?;
    // The same parser on the same text: the messages agree.
    (e.message == message).then_some(e.position).flatten()
}

/// The statement's shape, for approval grants: its normalised text
/// ([`crate::policy::allowlist::fingerprint`], the one implementation the
/// decision cache and allow-lists share): PostgreSQL's own tokens with
/// data literals and parameters replaced by `$?`, comments and trailing
/// `;` dropped, keywords and unquoted identifiers folded as PostgreSQL
/// folds them, quoted identifiers kept. `None` when the text does not
/// scan. Literals that name or steer something (function arguments, cast
/// operands, patterns, JSON keys, `ORDER BY` positions, every literal of a
/// statement other than SELECT/INSERT/UPDATE/DELETE/MERGE) keep their
/// text: a grant for `LIKE 'gift wrap'` does not cover `LIKE '%'`.
pub fn statement_shape(sql: &str) -> Option<String> {
    crate::policy::allowlist::sql_fingerprint(sql).map(|f| f.text)
}

// ---------------------------------------------------------------------------
// Reading the serde form of the tree.

/// `(type, fields)` of a `Node` wrapper (`{"node": {"SelectStmt": {...}}}`).
pub(crate) fn as_node(v: &Value) -> Option<(&str, &Obj)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    let inner = o.get("node")?.as_object()?;
    if inner.len() != 1 {
        return None;
    }
    let (ty, fields) = inner.iter().next()?;
    Some((ty.as_str(), fields.as_object()?))
}

/// The fields of a node of type `ty`, whether `v` is a wrapper or the
/// typed message itself.
pub(crate) fn fields_of<'a>(v: &'a Value, ty: &str) -> Option<&'a Obj> {
    match as_node(v) {
        Some((t, f)) if t == ty => Some(f),
        Some(_) => None,
        None => v.as_object(),
    }
}

pub(crate) fn str_field<'a>(o: &'a Obj, key: &str) -> &'a str {
    o.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn int_field(o: &Obj, key: &str) -> i64 {
    o.get(key).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn bool_field(o: &Obj, key: &str) -> bool {
    o.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn list_field<'a>(o: &'a Obj, key: &str) -> &'a [Value] {
    o.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The text of a `String` node.
pub(crate) fn string_node(v: &Value) -> Option<&str> {
    match as_node(v)? {
        ("String", f) => f.get("sval")?.as_str(),
        _ => None,
    }
}

/// A qualified name given as a list of `String` nodes.
pub(crate) fn name_list(items: &[Value]) -> Option<Vec<String>> {
    items
        .iter()
        .map(|i| string_node(i).map(str::to_owned))
        .collect()
}

/// A constant's text: `AConst` (string, integer, float, boolean, bit
/// string) or a `String`/`Integer` node; `None` for anything else.
pub(crate) fn const_text(v: &Value) -> Option<String> {
    let (ty, f) = as_node(v)?;
    match ty {
        "AConst" => {
            if bool_field(f, "isnull") {
                return None;
            }
            let (kind, inner) = f.get("val")?.as_object()?.iter().next()?;
            let inner = inner.as_object()?;
            match kind.as_str() {
                "Sval" => Some(str_field(inner, "sval").to_owned()),
                "Ival" => Some(int_field(inner, "ival").to_string()),
                "Fval" => Some(str_field(inner, "fval").to_owned()),
                "Boolval" => Some(bool_field(inner, "boolval").to_string()),
                "Bsval" => Some(str_field(inner, "bsval").to_owned()),
                _ => None,
            }
        }
        "String" => Some(str_field(f, "sval").to_owned()),
        "Integer" => Some(int_field(f, "ival").to_string()),
        "Float" => Some(str_field(f, "fval").to_owned()),
        "Boolean" => Some(bool_field(f, "boolval").to_string()),
        _ => None,
    }
}

/// A typed `RangeVar` (relation reference) message.
fn is_range_var(o: &Obj) -> bool {
    o.contains_key("relname") && o.contains_key("relpersistence")
}

/// A typed `FuncCall` message.
fn is_func_call(o: &Obj) -> bool {
    o.contains_key("funcname") && o.contains_key("agg_star")
}

pub(crate) fn enum_is<E: TryFrom<i32> + PartialEq>(o: &Obj, key: &str, want: E) -> bool {
    i32::try_from(int_field(o, key))
        .ok()
        .and_then(|v| E::try_from(v).ok())
        .is_some_and(|v| v == want)
}

fn object_type(o: &Obj, key: &str) -> Option<ObjectType> {
    i32::try_from(int_field(o, key))
        .ok()
        .and_then(|v| ObjectType::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

    /// The parser reads PostgreSQL 16+ SQL/JSON and MERGE syntax that
    /// PostgreSQL 15 reads as calls of functions of those names: each is
    /// a call off the safe list (or not understood).
    #[test]
    fn newer_syntax_is_the_function_call_postgresql_15_makes() {
        for (sql, name) in [
            ("SELECT json_array(1)", "json_array"),
            ("SELECT json_array()", "json_array"),
            ("SELECT json_object()", "json_object"),
            ("SELECT json_scalar('x')", "json_scalar"),
            ("SELECT json_serialize('x')", "json_serialize"),
            ("SELECT json('{}')", "json"),
            ("SELECT json_query('{}', '$')", "json_query"),
            ("SELECT json_value('{}', '$')", "json_value"),
            ("SELECT json_exists('{}', '$')", "json_exists"),
            ("SELECT json_arrayagg(id) FROM t", "json_arrayagg"),
        ] {
            let st = one(sql);
            assert!(
                st.functions.iter().any(|f| f.name == name && !f.safe),
                "{sql}: {st:?}"
            );
        }
        assert_eq!(class("SELECT '{}' IS JSON"), Unknown);
    }

    fn one(sql: &str) -> StatementFacts {
        let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(a.statements.len(), 1, "{sql}: {a:?}");
        a.statements.into_iter().next().unwrap()
    }

    fn class(sql: &str) -> StatementClass {
        analyze(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .class()
    }

    fn tables(sql: &str) -> Vec<String> {
        let a = analyze(sql).unwrap();
        let mut v: Vec<String> = a
            .statements
            .iter()
            .flat_map(|s| s.tables.iter().map(|t| t.display()))
            .collect();
        v.sort();
        v
    }

    fn functions(sql: &str) -> Vec<String> {
        let a = analyze(sql).unwrap();
        a.statements
            .iter()
            .flat_map(|s| s.functions.iter().map(|f| f.display()))
            .collect()
    }

    #[test]
    fn empty_queries_have_no_statements() {
        for sql in [
            "",
            "   ",
            "\n\t",
            "-- just a comment",
            "/* c */",
            ";",
            " ; ;",
        ] {
            let a = analyze(sql).unwrap();
            assert!(a.is_empty(), "{sql:?}: {a:?}");
        }
    }

    #[test]
    fn statements_that_define_code_are_privileged() {
        for sql in [
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN END$$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
            "ALTER FUNCTION f() SECURITY DEFINER",
            "CREATE TRIGGER t BEFORE INSERT ON tt FOR EACH ROW EXECUTE FUNCTION g()",
            "CREATE RULE r AS ON INSERT TO tt DO ALSO NOTIFY x",
            "CREATE POLICY p ON tt USING (true)",
            "ALTER POLICY p ON tt USING (false)",
            "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)",
            "ALTER OPERATOR === (int, int) SET (RESTRICT = eqsel)",
            "CREATE AGGREGATE a(int) (SFUNC = s, STYPE = int)",
            "CREATE CAST (text AS t) WITH FUNCTION k(text) AS IMPLICIT",
            "CREATE CONVERSION c FOR 'UTF8' TO 'LATIN1' FROM f",
            "CREATE OPERATOR CLASS oc FOR TYPE int USING btree AS OPERATOR 1 <",
            "CREATE OPERATOR FAMILY of USING btree",
            "CREATE TRANSFORM FOR int LANGUAGE plpgsql (FROM SQL WITH FUNCTION f(internal))",
            "CREATE ACCESS METHOD am TYPE TABLE HANDLER h",
        ] {
            assert_eq!(class(sql), Privileged, "{sql}");
        }
        // Every statement type that defines code is classed privileged.
        for ty in [
            "CreateFunctionStmt",
            "AlterFunctionStmt",
            "DefineStmt",
            "CreateOpClassStmt",
            "CreateOpFamilyStmt",
            "AlterOpFamilyStmt",
            "AlterOperatorStmt",
            "CreateTrigStmt",
            "RuleStmt",
            "CreatePolicyStmt",
            "AlterPolicyStmt",
            "CreateConversionStmt",
            "CreateCastStmt",
            "CreateTransformStmt",
            "CreateAmStmt",
        ] {
            assert!(defines_code(ty), "{ty}");
            assert_eq!(utility_class(ty).map(|(_, c)| c), Some(Privileged), "{ty}");
        }
        // Plain data definitions stay ddl.
        assert_eq!(class("CREATE TABLE t (a int)"), Ddl);
        assert_eq!(class("CREATE INDEX ON t (a)"), Ddl);
        assert_eq!(class("CREATE VIEW v AS SELECT 1"), Ddl);
    }

    #[test]
    fn basic_classes() {
        assert_eq!(class("SELECT 1"), Read);
        assert_eq!(class("VALUES (1), (2)"), Read);
        assert_eq!(class("SHOW search_path"), Read);
        assert_eq!(class("TABLE t"), Read);
        assert_eq!(class("INSERT INTO t VALUES (1)"), Write);
        assert_eq!(class("UPDATE t SET a = 1"), Write);
        assert_eq!(class("DELETE FROM t"), Write);
        assert_eq!(
            class("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE"),
            Write
        );
        assert_eq!(class("CREATE TABLE x (a int)"), Ddl);
        assert_eq!(class("DROP TABLE t"), Ddl);
        assert_eq!(class("TRUNCATE t"), Ddl);
        assert_eq!(class("ALTER TABLE t ADD COLUMN b int"), Ddl);
        assert_eq!(class("COMMENT ON TABLE t IS 'x'"), Ddl);
        assert_eq!(class("GRANT SELECT ON t TO bob"), Privileged);
        assert_eq!(class("CREATE ROLE bob"), Privileged);
        assert_eq!(class("SET ROLE admin"), Privileged);
        assert_eq!(class("SET SESSION AUTHORIZATION admin"), Privileged);
        assert_eq!(class("LOAD 'plugin'"), Privileged);
        assert_eq!(class("CREATE EXTENSION dblink"), Privileged);
        assert_eq!(class("DO $$BEGIN NULL; END$$"), Privileged);
        assert_eq!(class("CHECKPOINT"), Privileged);
    }

    #[test]
    fn nested_writes_are_found() {
        assert_eq!(
            class("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            Write
        );
        assert_eq!(
            class(
                "SELECT * FROM (SELECT 1) a WHERE EXISTS (WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM x)"
            ),
            Write
        );
        assert_eq!(class("EXPLAIN ANALYZE DELETE FROM t"), Write);
        assert_eq!(class("EXPLAIN (ANALYZE) DELETE FROM t"), Write);
        assert_eq!(class("EXPLAIN (ANALYZE true) DELETE FROM t"), Write);
        assert_eq!(class("EXPLAIN (ANALYZE on, VERBOSE) DELETE FROM t"), Write);
        assert_eq!(class("EXPLAIN (ANALYZE false) DELETE FROM t"), Read);
        assert_eq!(class("EXPLAIN DELETE FROM t"), Read);
        assert_eq!(class("SELECT * FROM t FOR UPDATE"), Write);
        assert_eq!(class("SELECT * INTO newt FROM t"), Ddl);
    }

    #[test]
    fn multi_statement_most_severe() {
        let a = analyze("SELECT 1; DROP TABLE t;;").unwrap();
        assert_eq!(a.statements.len(), 2);
        assert_eq!(a.statements[0].class, Read);
        assert_eq!(a.statements[1].class, Ddl);
        assert_eq!(a.class(), Ddl);
    }

    #[test]
    fn tables_are_normalised_and_ctes_are_not_tables() {
        assert_eq!(
            tables("SELECT * FROM Orders o JOIN \"Secrets\" s ON true"),
            vec!["\"Secrets\"", "orders"]
        );
        assert_eq!(tables("SELECT * FROM PUBLIC.T"), vec!["public.t"]);
        assert_eq!(tables("SELECT * FROM db.public.t"), vec!["public.t"]);
        assert_eq!(
            tables("WITH x AS (SELECT * FROM a) SELECT * FROM x"),
            vec!["a"]
        );
        // A non-recursive CTE is not visible in its own body: that
        // `secrets` is the real table.
        assert_eq!(
            tables("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets"),
            vec!["secrets"]
        );
        // Out of the WITH's scope the name is a table again.
        assert_eq!(
            tables("SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) a, s"),
            vec!["s"]
        );
        assert_eq!(
            tables(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r"
            ),
            Vec::<String>::new()
        );
        let d = one("DELETE FROM \"Secrets\" WHERE id IN (SELECT id FROM keep)");
        assert!(d.tables.iter().any(|t| t.name == "Secrets" && t.write));
        assert!(d.tables.iter().any(|t| t.name == "keep" && !t.write));
    }

    #[test]
    fn functions_are_found_everywhere() {
        let cases = [
            (
                "SELECT pg_catalog.PG_READ_FILE('/etc/passwd')",
                "pg_read_file",
            ),
            ("SELECT \"set_config\"('role','admin',false)", "set_config"),
            ("SELECT * FROM t ORDER BY pg_read_file('x')", "pg_read_file"),
            ("SELECT * FROM t, LATERAL pg_ls_dir(t.d) x", "pg_ls_dir"),
            ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
            ("VALUES (lo_import('/etc/passwd'))", "lo_import"),
            (
                "SELECT CASE WHEN true THEN dblink_exec('x','y') END",
                "dblink_exec",
            ),
            ("SELECT (SELECT set_config('a','b',false))", "set_config"),
            (
                "SELECT 1 UNION SELECT length(query_to_xml('select 1', true, true, ''))::int",
                "query_to_xml",
            ),
            ("INSERT INTO t VALUES (pg_read_file('x'))", "pg_read_file"),
            (
                "CREATE TABLE z (a text DEFAULT pg_read_file('x'))",
                "pg_read_file",
            ),
            (
                "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM t",
                "pg_sleep",
            ),
        ];
        for (sql, f) in cases {
            let got = functions(sql);
            assert!(
                got.iter().any(|g| g.eq_ignore_ascii_case(f)),
                "{sql}: {got:?}"
            );
        }
        // Not on the safe list: the policy makes the statement privileged
        // unless an allow rule names the function.
        let f = one("SELECT pg_catalog.PG_READ_FILE('/etc/passwd')").functions;
        assert!(!f[0].safe, "{f:?}");
        let f = one("SELECT public.lower('x'), lower('x')").functions;
        assert!(!f[0].safe && f[1].safe, "{f:?}");
        assert_eq!(class("SELECT pg_sleep(0.1)"), Read);
        assert_eq!(class("SELECT nextval('s')"), Write);
        assert!(functions("SELECT * FROM pg_ls_dir('.')").len() == 1);
        assert!(tables("SELECT * FROM pg_ls_dir('.')").is_empty());
    }

    #[test]
    fn copy_forms() {
        assert_eq!(class("COPY t TO STDOUT"), Read);
        assert_eq!(class("COPY (SELECT * FROM t) TO STDOUT"), Read);
        assert_eq!(class("COPY t FROM STDIN"), Write);
        assert_eq!(
            class("copy pgbench_accounts from stdin with (freeze on)"),
            Write
        );
        assert_eq!(class("COPY t TO PROGRAM 'id'"), Privileged);
        assert_eq!(class("COPY t FROM '/file'"), Privileged);
        assert_eq!(class("COPY t TO '/tmp/x'"), Privileged);
        assert!(one("COPY t FROM STDIN").tables[0].write);
    }

    #[test]
    fn settings_are_reported() {
        let s = one("SET standard_conforming_strings = off");
        assert_eq!(s.settings[0].name, "standard_conforming_strings");
        assert_eq!(s.settings[0].value.as_deref(), Some("off"));
        let s = one("SET LOCAL search_path TO App, \"B\", 'c d'");
        assert_eq!(s.settings[0].value.as_deref(), Some("app, \"B\", \"c d\""));
        assert!(s.settings[0].local);
        assert_eq!(
            parse_search_path("app, \"B\", \"c d\""),
            vec!["app", "B", "c d"]
        );
        assert_eq!(
            parse_search_path("\"$user\", public"),
            vec!["$user", "public"]
        );
        let s = one("SET client_encoding TO DEFAULT");
        assert_eq!(s.settings[0].value, None);
        let s = one("SET NAMES 'SJIS'");
        assert_eq!(s.settings[0].name, "client_encoding");
        let s = one("RESET ALL");
        assert_eq!(s.settings[0].name, "all");
        let s = one("DISCARD ALL");
        assert_eq!(s.deallocate, Some(None));
    }

    #[test]
    fn prepare_execute_deallocate() {
        let p = one("PREPARE p(int) AS DELETE FROM t WHERE a = $1");
        let (name, inner) = p.prepare.as_ref().unwrap();
        assert_eq!(name, "p");
        assert_eq!(inner.class(), Write);
        assert_eq!(p.class, Write);
        assert_eq!(one("EXECUTE P(1)").execute.as_deref(), Some("p"));
        assert_eq!(
            one("EXPLAIN ANALYZE EXECUTE p(1)").execute.as_deref(),
            Some("p")
        );
        assert_eq!(one("DEALLOCATE ALL").deallocate, Some(None));
        assert_eq!(one("DISCARD ALL").cursor, Some(None));
        assert!(one("DECLARE c CURSOR WITH HOLD FOR SELECT 1").cursor_hold);
        assert!(!one("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1").cursor_hold);
        assert!(!one("DECLARE c SCROLL CURSOR FOR SELECT 1").cursor_hold);
        assert_eq!(one("CLOSE ALL").cursor, Some(None));
        assert_eq!(one("CLOSE \"P\"").cursor, Some(Some("P".into())));
        assert_eq!(one("FETCH 2 FROM p").cursor, Some(Some("p".into())));
        assert_eq!(one("MOVE ALL IN p").cursor, Some(Some("p".into())));
        assert_eq!(
            one("DECLARE c CURSOR WITH HOLD FOR SELECT 1").cursor,
            Some(Some("c".into()))
        );
        assert_eq!(
            one("DEALLOCATE PREPARE \"Q\"").deallocate,
            Some(Some("Q".into()))
        );
        assert!(one("BEGIN").transaction);
        assert!(one("END").transaction);
    }

    #[test]
    fn syntax_errors_carry_the_parsers_message_and_position() {
        let e = analyze("SELEC 1").unwrap_err();
        assert_eq!(
            e,
            AnalyzeError::Syntax {
                message: "syntax error at or near \"SELEC\"".into(),
                position: Some(1)
            }
        );
        let e = analyze("SELECT 1; FROBNICATE").unwrap_err();
        assert!(
            matches!(
                e,
                AnalyzeError::Syntax {
                    position: Some(11),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = analyze("SELECT * FROM t WHERE").unwrap_err();
        assert_eq!(
            e,
            AnalyzeError::Syntax {
                message: "syntax error at end of input".into(),
                position: Some(22)
            }
        );
        // Positions count characters, not bytes.
        let e = analyze("SELECT 'é' FROM FROM").unwrap_err();
        assert!(
            matches!(
                e,
                AnalyzeError::Syntax {
                    position: Some(17),
                    ..
                }
            ),
            "{e:?}"
        );
        // A lexer error is placed where its token starts, as the server
        // places it.
        let e = analyze("SELECT 'é', 'unterminated").unwrap_err();
        assert_eq!(
            e,
            AnalyzeError::Syntax {
                message: "unterminated quoted string at or near \"'unterminated\"".into(),
                position: Some(13)
            }
        );
        let e = analyze("SELECT 1 /* open").unwrap_err();
        assert!(e.is_syntax(), "{e:?}");
        // Positions the server reports (its regression suite's expected
        // output): scanner errors, errors inside a literal, and errors the
        // grammar's actions place on an earlier token.
        for (sql, want) in [
            ("SELECT 123abc", 8),
            ("SELECT E'wrong: \\udb99xy'", 23),
            ("SELECT U&'wrong: \\061'", 18),
            ("CREATE TABLE p (a int) PARTITION BY MAGIC (a)", 37),
            (
                "SELECT * FROM t ORDER BY a FETCH FIRST 1 ROW WITH TIES FOR UPDATE SKIP LOCKED",
                46,
            ),
        ] {
            match analyze(sql) {
                Err(AnalyzeError::Syntax { position, .. }) => {
                    assert_eq!(position, Some(want), "{sql}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(analyze("SELECT '\u{0}'").unwrap_err().is_syntax());
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        let _ = analyze(&deep);
    }

    #[test]
    fn unicode_escapes_are_read_as_the_server_reads_them() {
        // sqlparser read U&"..." as `U & "..."`; PostgreSQL's own scanner
        // decodes it.
        let f = functions("SELECT U&\"pg_read_fil\\0065\"('x')");
        assert_eq!(f, vec!["pg_read_file"]);
        assert!(!one("SELECT U&\"pg_read_fil\\0065\"('x')").functions[0].safe);
        assert_eq!(
            tables("SELECT u&\"secr\\0065ts\".x FROM u&\"secr\\0065ts\""),
            vec!["secrets"]
        );
    }

    #[test]
    fn postgresql_syntax_sqlparser_could_not_read() {
        for sql in [
            "INSERT INTO t (k, v) VALUES (1, 2) ON CONFLICT (k) WHERE v > 0 DO UPDATE SET v = EXCLUDED.v",
            "UPDATE t SET arr[1] = 42",
            "SELECT name 'x' = name 'x'",
            "SELECT concat(VARIADIC array['a','b'])",
            "SELECT a FROM t ORDER BY a COLLATE \"C\"",
            "SELECT 'a' @@ ANY ('{x,y}'::tsquery[])",
            "FETCH ABSOLUTE -1 FROM c",
            "MOVE NEXT IN c",
            "SET CONSTRAINTS ALL DEFERRED",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            "PREPARE TRANSACTION 'x'",
            "CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)",
            "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING",
            "CREATE STATISTICS s ON a, b FROM t",
            "ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (1)",
            "ALTER TABLE p DETACH PARTITION c",
            "SELECT 'a'\n'b' AS x",
        ] {
            let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_ne!(a.class(), Unknown, "{sql}: {a:?}");
        }
        assert_eq!(class("CREATE PUBLICATION p FOR TABLE t"), Privileged);
        assert_eq!(class("CREATE FOREIGN TABLE f (a int) SERVER s"), Privileged);
        assert_eq!(class("COMMIT PREPARED 'x'"), Privileged);
        assert_eq!(class("ALTER SYSTEM SET work_mem = '1MB'"), Privileged);
        assert_eq!(one("MOVE NEXT IN c").command, "MOVE");
    }

    #[test]
    fn read_write_transactions_are_reported() {
        for sql in [
            "BEGIN READ WRITE",
            "START TRANSACTION READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        ] {
            assert!(one(sql).read_write, "{sql}");
        }
        for sql in [
            "BEGIN",
            "BEGIN READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert!(!one(sql).read_write, "{sql}");
        }
        let s = one("SELECT set_config('transaction_read_only', 'off', false)");
        assert_eq!(s.settings[0].name, "transaction_read_only");
        assert_eq!(s.settings[0].value.as_deref(), Some("off"));
        let s = one("SELECT pg_catalog.set_config('search_path', 'a, B', true)");
        assert_eq!(s.settings[0].name, "search_path");
        assert!(s.settings[0].local);
        let s = one("SELECT set_config(n, 'x', false) FROM t");
        assert_eq!(s.settings[0].name, "?");
        assert!(s.settings[0].computed);
    }

    #[test]
    fn cte_scoping_follows_postgresql() {
        // `secrets` in the first CTE is the real table: the second CTE of
        // that name is not visible there.
        assert_eq!(
            tables(
                "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a, secrets"
            ),
            vec!["secrets"]
        );
        // A CTE named like the DML target does not hide the table.
        let d = one("WITH t AS (SELECT 1) DELETE FROM t");
        assert_eq!(d.tables.len(), 1);
        assert!(d.tables[0].write);
        assert_eq!(
            tables("WITH x AS (SELECT 1) SELECT * FROM x UNION SELECT * FROM secrets"),
            vec!["secrets"]
        );
    }

    #[test]
    fn vacuum_and_maintenance() {
        let v = one("vacuum analyze pgbench_branches");
        assert_eq!(v.class, Ddl);
        assert_eq!(v.tables[0].name, "pgbench_branches");
        let v = one("VACUUM (VERBOSE, ANALYZE) a, s.b (x, y)");
        assert_eq!(v.tables.len(), 2);
        assert_eq!(class("vacuum pgbench_branches"), Ddl);
        assert_eq!(class("ANALYZE t"), Ddl);
        let r = one("REINDEX TABLE Secrets");
        assert_eq!(r.tables[0].name, "secrets");
        assert!(
            analyze("VACUUM a; DO $$ x $$; CHECKPOINT")
                .unwrap()
                .statements
                .len()
                == 3
        );
        assert!(analyze("VACUUM a + b").unwrap_err().is_syntax());
    }

    #[test]
    fn ident_helpers() {
        assert_eq!(quote_ident("abc"), "abc");
        assert_eq!(quote_ident("Abc"), "\"Abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let long = "a".repeat(70);
        assert_eq!(truncate_ident(long).len(), 63);
    }
}
