//! Classification of MySQL/MariaDB query texts into the same [`Analysis`]
//! the PostgreSQL classifier produces, so one [`super::Policy`] decides
//! both. Read with sqlparser's MySQL dialect (backtick identifiers, `#`
//! comments, `--` comments only when followed by whitespace, backslash
//! escapes in strings, double quotes as strings).
//!
//! Fail closed, before and after the parse:
//! - executable comments (`/*! … */`, `/*!50000 … */`, MariaDB's `/*M! … */`)
//!   are code to the server and a comment to the parser: any text holding
//!   one is refused;
//! - what the parser rejects is refused;
//! - settings that change how the server tokenises (`sql_mode`, with
//!   `ANSI_QUOTES` and `NO_BACKSLASH_ESCAPES`; `SET NAMES`, `SET CHARACTER
//!   SET`, `character_set_*`, `collation_connection`) are refused: the
//!   session is pinned to what Warden logged in with;
//! - `USE` of another database than the grant's is refused;
//! - statements the classifier does not know are class `unknown`.

use std::ops::ControlFlow;

use sqlparser::ast::{
    ContextModifier, Expr, FunctionArguments, GroupByExpr, ObjectName, OrderBy, OrderByKind, Query,
    SelectItem, SetExpr, Statement, Value, Visit, Visitor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::model::StatementClass;
use super::sql::{Analysis, AnalyzeError, FuncRef, StatementFacts, TableRef};

/// Functions any policy may let a statement call: they read nothing but
/// their arguments (and session facts), write nothing, and do not sleep or
/// lock. Anything else raises the statement to `privileged` unless an
/// allow rule names it (`LOAD_FILE`, `SLEEP`, `BENCHMARK`, `GET_LOCK`,
/// user-defined functions…).
const SAFE_FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "bit_length",
    "cast",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "connection_id",
    "convert",
    "count",
    "curdate",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "floor",
    "found_rows",
    "from_unixtime",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "instr",
    "isnull",
    "json_array",
    "json_extract",
    "json_object",
    "json_unquote",
    "last_insert_id",
    "lcase",
    "least",
    "left",
    "length",
    "locate",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "minute",
    "mod",
    "month",
    "now",
    "nullif",
    "position",
    "power",
    "rand",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "rpad",
    "rtrim",
    "schema",
    "second",
    "session_user",
    "sha1",
    "sha2",
    "sign",
    "sqrt",
    "str_to_date",
    "strcmp",
    "substr",
    "substring",
    "substring_index",
    "sum",
    "system_user",
    "time",
    "timestamp",
    "timestampdiff",
    "trim",
    "truncate",
    "ucase",
    "unhex",
    "unix_timestamp",
    "upper",
    "user",
    "utc_timestamp",
    "uuid",
    "version",
    "week",
    "year",
];

/// Session variables a workload may set: none of them changes how the
/// server reads statements, which account runs them or what they can reach.
const SAFE_SETTINGS: &[&str] = &[
    "autocommit",
    "time_zone",
    "transaction_isolation",
    "tx_isolation",
    "transaction_read_only",
    "tx_read_only",
    "sql_select_limit",
    "max_execution_time",
    "max_statement_time",
    "wait_timeout",
    "interactive_timeout",
    "net_read_timeout",
    "net_write_timeout",
    "group_concat_max_len",
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "sql_safe_updates",
    "unique_checks",
    "foreign_key_checks",
];

/// Settings that change tokenisation or the character set the server reads
/// statements in: refused (the session is pinned).
const PINNED_SETTINGS: &[&str] = &[
    "sql_mode",
    "names",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "charset",
    "character set",
];

/// The first word of the `SHOW` forms sqlparser does not model that read
/// nothing but metadata or the session's own diagnostics.
const HARMLESS_SHOW: &[&str] = &[
    "warnings",
    "errors",
    "count",
    "engines",
    "table",
    "index",
    "indexes",
    "keys",
    "privileges",
];

/// The tables of `information_schema` that describe schema objects and the
/// server's character sets (read like any table); its other tables
/// (`PROCESSLIST` with the statement texts of other sessions, `INNODB_*`,
/// user and client statistics…) and the `performance_schema`, `sys` and
/// `mysql` schemas are privileged.
const METADATA_TABLES: &[&str] = &[
    "character_sets",
    "check_constraints",
    "collation_character_set_applicability",
    "collations",
    "column_privileges",
    "columns",
    "engines",
    "events",
    "key_column_usage",
    "keywords",
    "parameters",
    "partitions",
    "plugins",
    "referential_constraints",
    "routines",
    "schema_privileges",
    "schemata",
    "sql_functions",
    "statistics",
    "table_constraints",
    "table_privileges",
    "tables",
    "triggers",
    "user_privileges",
    "views",
];

/// Schemas whose tables hold server state rather than the database's data.
const SERVER_SCHEMAS: &[&str] = &["performance_schema", "sys", "mysql"];

/// Whether a table reference is a table of a database or a metadata table,
/// not server state (see [`METADATA_TABLES`], [`SERVER_SCHEMAS`]).
fn plain_table(t: &TableRef) -> bool {
    let Some(schema) = t.schema.as_deref().map(str::to_ascii_lowercase) else {
        return true;
    };
    if schema == "information_schema" {
        return METADATA_TABLES.contains(&t.name.to_ascii_lowercase().as_str());
    }
    !SERVER_SCHEMAS.contains(&schema.as_str())
}

/// Classifies a MySQL query text; `database` is the grant's (the only one a
/// `USE` may name).
pub fn analyze(text: &str, database: &str) -> Result<Analysis, AnalyzeError> {
    if let Some((at, c)) = ambiguous_character(text) {
        return Err(AnalyzeError::Unsupported {
            reason: format!(
                "character U+{:04X} at byte {at}: MySQL and the classifier do not read it \
                 alike (a comment start or a name to one, a space to the other)",
                u32::from(c)
            ),
        });
    }
    if let Some(at) = executable_comment(text) {
        return Err(AnalyzeError::Unsupported {
            reason: format!(
                "executable comment at byte {at}: MySQL runs the text of /*! ... */ as \
                 part of the statement"
            ),
        });
    }
    let statements =
        Parser::parse_sql(&MySqlDialect {}, text).map_err(|e| AnalyzeError::Syntax {
            message: e.to_string(),
            position: None,
        })?;
    let mut out = Analysis {
        statements: Vec::with_capacity(statements.len()),
    };
    for st in &statements {
        out.statements.push(classify(st, database)?);
    }
    Ok(out)
}

/// The connection id a text that is exactly one `KILL [CONNECTION |
/// QUERY] id` names (the proxy lets it through only for the account's own
/// connections); `None` for anything else, which the policy decides
/// (`KILL USER …`, `KILL QUERY ID …` and executable comments included).
pub fn kill_target(text: &str) -> Option<u64> {
    if executable_comment(text).is_some() || ambiguous_character(text).is_some() {
        return None;
    }
    let statements = Parser::parse_sql(&MySqlDialect {}, text).ok()?;
    match statements.as_slice() {
        [Statement::Kill { modifier, id }]
            if !matches!(modifier, Some(sqlparser::ast::KillType::Mutation)) =>
        {
            Some(*id)
        }
        _ => None,
    }
}

/// The first character MySQL and sqlparser read differently, if any:
/// ASCII control characters other than the usual spaces (`--` followed by
/// one starts a comment for MySQL, not for sqlparser; a NUL ends a `#`
/// comment for MySQL), and Unicode spaces outside ASCII (`--\u{a0}` starts
/// a comment for sqlparser; to MySQL U+00A0 is part of a name, so `1
/// --\u{a0} UNION SELECT …` runs the UNION). Conservative: inside string
/// literals too (such text can travel as a parameter or a hex literal).
fn ambiguous_character(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|&(_, c)| {
        if c.is_ascii() {
            c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0b' | '\x0c')
        } else {
            c.is_whitespace() || c.is_control()
        }
    })
}

/// Where the first executable comment starts, if any. Conservative: the
/// marker counts anywhere, even inside a string literal (such a statement
/// is refused rather than read wrongly).
fn executable_comment(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(2)).find(|&i| {
        b[i] == b'/'
            && b[i + 1] == b'*'
            && (b[i + 2] == b'!' || (b[i + 2] | 0x20 == b'm' && b.get(i + 3) == Some(&b'!')))
    })
}

fn facts(class: StatementClass, command: &str) -> StatementFacts {
    let mut f = StatementFacts::new();
    f.class = class;
    f.command = command.to_owned();
    f
}

fn unsupported(reason: String) -> AnalyzeError {
    AnalyzeError::Unsupported { reason }
}

fn classify(st: &Statement, database: &str) -> Result<StatementFacts, AnalyzeError> {
    use StatementClass::*;
    let mut f = match st {
        Statement::Query(q) => {
            let mut f = facts(Read, "SELECT");
            if select_into(q) {
                f.bump(
                    Privileged,
                    Some("SELECT ... INTO writes a file or variables".into()),
                );
            }
            f
        }
        Statement::Insert(_) => facts(Write, "INSERT"),
        Statement::Update(_) => facts(Write, "UPDATE"),
        Statement::Delete(_) => facts(Write, "DELETE"),
        Statement::LoadData { .. } => {
            let mut f = facts(Write, "LOAD DATA");
            f.bump(
                Privileged,
                Some("LOAD DATA reads a file of the server or the client".into()),
            );
            f
        }
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => {
            let mut f = facts(Read, "TRANSACTION");
            f.transaction = true;
            f
        }
        // sqlparser's catch-all for the SHOW forms it does not model
        // (`SHOW ENGINE INNODB STATUS`, `SHOW BINLOG EVENTS`, `SHOW
        // RELAYLOG EVENTS`…, some of which show statement texts): only the
        // known harmless ones are reads.
        Statement::ShowVariable { variable } => {
            let first = variable
                .first()
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default();
            if HARMLESS_SHOW.contains(&first.as_str()) {
                facts(Read, "SHOW")
            } else {
                let mut f = facts(Privileged, "SHOW");
                f.note = Some(format!(
                    "SHOW {} is not a plain read",
                    variable
                        .iter()
                        .map(|i| i.value.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                f
            }
        }
        Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset { .. }
        | Statement::ShowViews { .. }
        | Statement::ExplainTable { .. } => facts(Read, "SHOW"),
        Statement::Explain {
            statement, analyze, ..
        } => {
            let inner = classify(statement, database)?;
            let mut f = facts(Read, "EXPLAIN");
            // EXPLAIN ANALYZE runs the statement.
            if *analyze {
                f.bump(inner.class, inner.note.clone());
            }
            f
        }
        Statement::Use(u) => {
            let name = u.to_string();
            let named = name
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .trim_matches('`');
            if named != database {
                return Err(unsupported(format!(
                    "USE {named}: the grant's database is {database}"
                )));
            }
            facts(Read, "USE")
        }
        Statement::Set(s) => set(s)?,
        Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView { .. }
        | Statement::AlterTable { .. }
        | Statement::Drop { .. }
        | Statement::Truncate { .. }
        | Statement::RenameTable { .. }
        | Statement::CreateDatabase { .. } => facts(Ddl, "DDL"),
        Statement::Grant { .. }
        | Statement::Revoke { .. }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_)
        | Statement::CreateRole { .. }
        | Statement::Kill { .. }
        | Statement::Flush { .. }
        | Statement::Install { .. }
        | Statement::Call(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::LockTables { .. }
        | Statement::UnlockTables => {
            let mut f = facts(Privileged, "PRIVILEGED");
            f.note = Some(format!(
                "{} escapes the grant",
                st.to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            f
        }
        // PREPARE/EXECUTE/DEALLOCATE and everything else: not understood.
        _ => facts(Unknown, "UNKNOWN"),
    };
    collect_names(st, &mut f);
    if let Some(t) = f.tables.iter().find(|t| !plain_table(t)) {
        let note = format!(
            "{} holds server state (statement texts, accounts, data of other sessions)",
            t.display()
        );
        f.bump(Privileged, Some(note));
    }
    if f.class == StatementClass::Write || f.class == StatementClass::Ddl {
        for t in &mut f.tables {
            t.write = true;
        }
    }
    Ok(f)
}

/// Any `SELECT ... INTO` (OUTFILE, DUMPFILE, variables) in the query.
fn select_into(q: &Query) -> bool {
    struct Into(bool);
    impl Visitor for Into {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            fn body(s: &SetExpr) -> bool {
                match s {
                    SetExpr::Select(sel) => sel.into.is_some(),
                    SetExpr::Query(q) => body(&q.body),
                    SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
                    _ => false,
                }
            }
            if body(&q.body) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Into(false);
    let _ = q.visit(&mut v);
    // The parser keeps INTO OUTFILE / DUMPFILE text it does not model as
    // part of the query; look for them in the rendering too.
    let text = q.to_string().to_ascii_uppercase();
    v.0 || text.contains(" OUTFILE ") || text.contains(" DUMPFILE ")
}

fn set(s: &sqlparser::ast::Set) -> Result<StatementFacts, AnalyzeError> {
    use sqlparser::ast::Set as S;
    let check = |scope: Option<&ContextModifier>, name: &ObjectName| {
        // `sql_mode` and sql_mode name the same setting.
        let n = name.to_string().to_ascii_lowercase().replace('`', "");
        if n.starts_with('@') && !n.starts_with("@@") {
            // A user variable.
            return Ok(StatementClass::Read);
        }
        let global = matches!(scope, Some(ContextModifier::Global))
            || n.starts_with("@@global.")
            || n.starts_with("global.");
        let bare = n
            .trim_start_matches("@@")
            .trim_start_matches("session.")
            .trim_start_matches("local.")
            .to_owned();
        if global {
            return Ok(StatementClass::Privileged);
        }
        if PINNED_SETTINGS.contains(&bare.as_str()) {
            return Err(unsupported(format!(
                "changing {bare} is refused: it changes how the server reads statements"
            )));
        }
        if SAFE_SETTINGS.contains(&bare.as_str()) {
            Ok(StatementClass::Read)
        } else {
            Ok(StatementClass::Privileged)
        }
    };
    let mut f = facts(StatementClass::Read, "SET");
    let mut raise = |c: StatementClass, what: &str| {
        if c > StatementClass::Read {
            f.bump(c, Some(format!("SET {what}")));
        }
    };
    match s {
        S::SingleAssignment {
            scope, variable, ..
        } => raise(check(scope.as_ref(), variable)?, &variable.to_string()),
        S::MultipleAssignments { assignments } => {
            for a in assignments {
                raise(check(a.scope.as_ref(), &a.name)?, &a.name.to_string());
            }
        }
        S::SetTransaction { .. } => {}
        S::SetNames { .. } | S::SetNamesDefault { .. } => {
            return Err(unsupported(
                "SET NAMES is refused: it changes how the server reads statements".into(),
            ));
        }
        other => {
            return Err(unsupported(format!(
                "{other} is not understood by the MySQL classifier"
            )));
        }
    }
    Ok(f)
}

/// Tables and functions named anywhere in the statement.
fn collect_names(st: &Statement, f: &mut StatementFacts) {
    let mut tables: Vec<TableRef> = Vec::new();
    let _ = sqlparser::ast::visit_relations(st, |name: &ObjectName| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| {
                p.as_ident()
                    .map_or_else(|| p.to_string(), |i| i.value.clone())
            })
            .collect();
        let t = match parts.as_slice() {
            [schema, table] => TableRef {
                schema: Some(schema.clone()),
                name: table.clone(),
                write: false,
            },
            _ => TableRef {
                schema: None,
                name: parts.join("."),
                write: false,
            },
        };
        if !tables.contains(&t) {
            tables.push(t);
        }
        ControlFlow::<()>::Continue(())
    });
    let mut functions: Vec<FuncRef> = Vec::new();
    let _ = sqlparser::ast::visit_expressions(st, |e: &Expr| {
        if let Expr::Function(func) = e {
            let parts: Vec<String> = func
                .name
                .0
                .iter()
                .map(|p| {
                    p.as_ident()
                        .map_or_else(|| p.to_string(), |i| i.value.to_ascii_lowercase())
                })
                .collect();
            let (schema, name) = match parts.as_slice() {
                [s, n] => (Some(s.clone()), n.clone()),
                _ => (None, parts.join(".")),
            };
            // Calls without parentheses (CURRENT_TIMESTAMP) count as well.
            let _ = matches!(func.args, FunctionArguments::None);
            let safe = schema.is_none() && SAFE_FUNCTIONS.contains(&name.as_str());
            let r = FuncRef { schema, name, safe };
            if !functions.contains(&r) {
                functions.push(r);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    f.tables = tables;
    f.functions = functions;
}

/// Where a masked column is used other than as a bare output column
/// (`SELECT card`, `SELECT c.card AS x`): in a condition, an expression,
/// an ORDER BY or GROUP BY, a join. Such a use could reveal the value
/// (`WHERE card LIKE '4%'`) or carry it out of reach of the column mask, so
/// the statement is refused. `masked(column)` says whether a column of that
/// name is masked in any table the statement reads; qualifiers are not
/// resolved (a name that is masked anywhere counts); `reads_masked`: the
/// statement reads a table with masked columns. `None`: no such use (or
/// the text does not parse: the classifier refuses it anyway).
///
/// Decided on the token stream, not on where the parser keeps names: every
/// word that is a masked name, or the alias of a bare masked output column
/// (`SELECT card AS x … ORDER BY x`), must be one of the top-level bare
/// output columns (a name in `USING (card)` or `MATCH (card)` counts like
/// one in an expression). What reaches a masked column without naming it is
/// refused when the statement reads a masked table: a position (`ORDER BY
/// 2`, `GROUP BY 5`) naming a masked output column or lying at or after a
/// `*`, a `*` below the top-level projection (derived tables, CTEs with
/// renaming column lists, subqueries, set operations; `EXISTS (SELECT *
/// …)` excepted), and `NATURAL` joins.
pub fn masked_column_misuse(
    text: &str,
    masked: impl Fn(&str) -> bool,
    reads_masked: bool,
) -> Option<String> {
    let statements = Parser::parse_sql(&MySqlDialect {}, text).ok()?;
    let tokens = sqlparser::tokenizer::Tokenizer::new(&MySqlDialect {}, text)
        .tokenize()
        .ok()?;
    let mut top = Vec::new();
    let mut allowed: Vec<(String, usize)> = Vec::new();
    let mut allow = |name: &str| {
        let name = name.to_ascii_lowercase();
        match allowed.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => allowed.push((name, 1)),
        }
    };
    for st in &statements {
        let Statement::Query(q) = st else { continue };
        let SetExpr::Select(sel) = &*q.body else {
            continue;
        };
        top.push(&**q as *const Query);
        // What each output position is: a masked column, a `*`, other.
        let mut star_from: Option<usize> = None;
        let mut masked_at: Vec<usize> = Vec::new();
        for (k, item) in sel.projection.iter().enumerate() {
            let (e, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
                _ => {
                    star_from.get_or_insert(k + 1);
                    continue;
                }
            };
            if let Some(n) = bare_name(e).filter(|n| masked(n)) {
                allow(&n);
                if let Some(a) = alias {
                    allow(&a.value);
                }
                masked_at.push(k + 1);
            }
        }
        // DISTINCT groups by every output column: over a masked one it
        // tells how many distinct values there are, and the server may
        // return them in their order (a sort or an index scan).
        if matches!(
            sel.distinct,
            Some(sqlparser::ast::Distinct::Distinct | sqlparser::ast::Distinct::On(_))
        ) && (!masked_at.is_empty() || (reads_masked && star_from.is_some()))
        {
            return Some(
                "SELECT DISTINCT over a masked column groups by it: it reveals how many \
                 distinct values it holds and their order"
                    .to_owned(),
            );
        }
        let mut positions: Vec<&Expr> = Vec::new();
        if let Some(OrderBy {
            kind: OrderByKind::Expressions(list),
            ..
        }) = &q.order_by
        {
            positions.extend(list.iter().map(|o| &o.expr));
        }
        if let GroupByExpr::Expressions(list, _) = &sel.group_by {
            positions.extend(list.iter());
        }
        for e in positions {
            let Expr::Value(v) = e else { continue };
            let Value::Number(n, _) = &v.value else {
                continue;
            };
            let n: usize = n.parse().unwrap_or(usize::MAX);
            if masked_at.contains(&n) || (reads_masked && star_from.is_some_and(|s| n >= s)) {
                return Some(format!(
                    "output position {n} may be a masked column: ORDER BY or GROUP BY it \
                     reveals its order"
                ));
            }
        }
    }
    // Every word naming a masked column (or an alias of one) is a bare
    // top-level output column.
    let mut seen: Vec<(String, usize)> = Vec::new();
    for t in &tokens {
        let Token::Word(w) = t else { continue };
        if !matches!(w.quote_style, None | Some('`')) {
            continue;
        }
        let name = w.value.to_ascii_lowercase();
        if reads_masked && w.quote_style.is_none() && name == "distinctrow" {
            // MySQL's DISTINCTROW is DISTINCT (the parser reads a name).
            return Some(
                "DISTINCTROW in a statement reading masked columns groups by them".to_owned(),
            );
        }
        if reads_masked && w.quote_style.is_none() && name == "natural" {
            return Some(
                "a NATURAL join of a table with masked columns compares them unseen".to_owned(),
            );
        }
        let aliased = allowed.iter().any(|(n, _)| *n == name);
        if !aliased && !masked(&w.value) {
            continue;
        }
        let k = match seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => {
                *k += 1;
                *k
            }
            None => {
                seen.push((name.clone(), 1));
                1
            }
        };
        let limit = allowed
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, k)| *k);
        if k > limit {
            return Some(format!(
                "masked column {} is used other than as a bare output column",
                w.value
            ));
        }
    }
    if reads_masked && let Some(why) = nested_star(&statements, &top) {
        return Some(why);
    }
    None
}

/// The column a bare output item names (`card`, `c.card`).
fn bare_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

/// A `*` in a SELECT that is not a top-level one (`top`), other than
/// directly under `EXISTS`.
fn nested_star(statements: &[Statement], top: &[*const Query]) -> Option<String> {
    struct Stars<'a> {
        top: &'a [*const Query],
        exists: Vec<*const Query>,
        found: bool,
    }
    fn selects<'s>(s: &'s SetExpr, out: &mut Vec<&'s sqlparser::ast::Select>) {
        match s {
            SetExpr::Select(sel) => out.push(sel),
            SetExpr::SetOperation { left, right, .. } => {
                selects(left, out);
                selects(right, out);
            }
            _ => {}
        }
    }
    impl Visitor for Stars<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Exists { subquery, .. } = e {
                self.exists.push(&**subquery as *const Query);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            let p = q as *const Query;
            if self.top.contains(&p) || self.exists.contains(&p) {
                return ControlFlow::Continue(());
            }
            let mut list = Vec::new();
            selects(&q.body, &mut list);
            let star = list.iter().any(|sel| {
                sel.projection.iter().any(|i| {
                    matches!(
                        i,
                        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                    )
                })
            });
            if star {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Stars {
        top,
        exists: Vec::new(),
        found: false,
    };
    for st in statements {
        if st.visit(&mut v).is_break() {
            break;
        }
    }
    v.found
        .then(|| "a * below the top-level select list reaches masked columns unnamed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> StatementFacts {
        let a = analyze(sql, "shop").unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(a.statements.len(), 1, "{sql}");
        a.statements.into_iter().next().unwrap()
    }

    fn refused(sql: &str) -> String {
        match analyze(sql, "shop") {
            Err(e) => e.to_string(),
            Ok(a) => panic!("{sql} was accepted: {a:?}"),
        }
    }

    #[test]
    fn selects_are_reads_with_their_tables_backticks_and_databases() {
        let f = one("SELECT `name`, email FROM `customers` c JOIN shop.orders o ON o.id = c.id");
        assert_eq!(f.class, StatementClass::Read);
        let names: Vec<String> = f.tables.iter().map(TableRef::display).collect();
        assert_eq!(names, vec!["customers", "shop.orders"]);
        assert_eq!(
            one("SELECT @@version_comment LIMIT 1").class,
            StatementClass::Read
        );
    }

    #[test]
    fn hash_and_dash_comments_hide_nothing_from_the_classifier() {
        // `--x` is not a comment in MySQL: the subquery is real.
        let f = one("SELECT 1 --x, (SELECT token FROM secrets)");
        assert!(f.tables.iter().any(|t| t.name == "secrets"), "{f:?}");
        let f = one("SELECT 1 # a comment\n, (SELECT token FROM secrets)");
        assert!(f.tables.iter().any(|t| t.name == "secrets"), "{f:?}");
    }

    #[test]
    fn only_a_lone_kill_of_a_connection_id_names_a_kill_target() {
        assert_eq!(kill_target("KILL 42"), Some(42));
        assert_eq!(kill_target("kill query 7"), Some(7));
        assert_eq!(kill_target("KILL CONNECTION 9"), Some(9));
        for sql in [
            "KILL USER shop_app",
            "KILL QUERY ID 3",
            "KILL 4; DROP TABLE customers",
            "KILL 4 /*! ; DROP TABLE customers */",
            "SELECT 1",
        ] {
            assert_eq!(kill_target(sql), None, "{sql}");
        }
    }

    #[test]
    fn every_statement_of_a_multi_statement_text_is_classified() {
        let a = analyze("SELECT 1; DELETE FROM customers", "shop").unwrap();
        assert_eq!(a.statements.len(), 2);
        assert_eq!(a.statements[1].class, StatementClass::Write);
        assert!(analyze("SELECT 1; SELEC 2", "shop").is_err());
        // A backslash-escaped quote does not end the string (MySQL's
        // default): what follows it is text, not a second statement.
        let a = analyze(r"SELECT 'a\'; DELETE FROM customers; -- '", "shop").unwrap();
        assert_eq!(a.statements.len(), 1, "{a:?}");
        assert_eq!(a.statements[0].class, StatementClass::Read);
    }

    #[test]
    fn executable_comments_are_refused_wherever_they_are() {
        for sql in [
            "SELECT 1 /*! , (SELECT token FROM secrets) */",
            "SELECT 1 /*!50000 UNION SELECT token FROM secrets */",
            "SELECT 1 /*M!100000 UNION SELECT token FROM secrets */",
            "/*!*/SELECT 1",
        ] {
            assert!(refused(sql).contains("executable comment"), "{sql}");
        }
        // Optimizer hints and ordinary comments are comments.
        assert_eq!(
            one("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1").class,
            StatementClass::Read
        );
    }

    #[test]
    fn characters_mysql_and_the_parser_read_differently_are_refused() {
        for sql in [
            "SELECT 1 FROM t WHERE 1 --\u{a0} UNION SELECT token FROM secrets",
            "SELECT 1 --\u{3000} x",
            "SELECT 1 --\u{1}, (SELECT token FROM secrets)",
            "SELECT 1 # \0\n",
            "SELECT 'a\u{85}'",
        ] {
            assert!(refused(sql).contains("do not read it alike"), "{sql:?}");
        }
        assert_eq!(one("SELECT 'caf\u{e9}'\t\r\n").class, StatementClass::Read);
        assert_eq!(kill_target("KILL 4 --\u{a0}"), None);
    }

    #[test]
    fn server_state_catalogs_are_privileged_and_metadata_is_read() {
        for sql in [
            "SELECT info FROM information_schema.processlist",
            "SELECT * FROM INFORMATION_SCHEMA.INNODB_TRX",
            "SELECT * FROM performance_schema.events_statements_history",
            "SELECT * FROM sys.session",
            "SELECT * FROM mysql.user",
            "SHOW ENGINE INNODB STATUS",
            "SHOW BINLOG EVENTS",
        ] {
            assert_eq!(one(sql).class, StatementClass::Privileged, "{sql}");
        }
        for sql in [
            "SELECT table_name FROM information_schema.TABLES",
            "SELECT * FROM information_schema.columns",
            "SHOW WARNINGS",
            "SHOW TABLE STATUS",
        ] {
            assert_eq!(one(sql).class, StatementClass::Read, "{sql}");
        }
    }

    #[test]
    fn file_access_and_escapes_are_privileged() {
        for sql in [
            "SELECT LOAD_FILE('/etc/passwd')",
            "SELECT * FROM customers INTO OUTFILE '/tmp/x'",
            "SELECT * FROM customers INTO DUMPFILE '/tmp/x'",
            "SET GLOBAL general_log = 1",
            "SET @@global.read_only = 0",
            "GRANT ALL ON *.* TO 'x'@'%'",
            "CREATE USER 'x'@'%' IDENTIFIED BY 'y'",
            "CALL shop.proc()",
            "SELECT SLEEP(10)",
            "SELECT BENCHMARK(100000000, MD5('x'))",
        ] {
            // Not parsed is refused too; parsed must be privileged or call
            // a function off the safe list (which the policy raises to
            // privileged unless an allow rule names it).
            if let Ok(a) = analyze(sql, "shop") {
                let st = &a.statements[0];
                assert!(
                    st.class == StatementClass::Privileged || st.functions.iter().any(|f| !f.safe),
                    "{sql}: {st:?}"
                );
            }
        }
    }

    #[test]
    fn functions_outside_the_safe_list_are_marked_unsafe() {
        let f = one("SELECT LOAD_FILE('/etc/passwd'), upper(name) FROM customers");
        let load = f.functions.iter().find(|x| x.name == "load_file").unwrap();
        assert!(!load.safe);
        assert!(f.functions.iter().any(|x| x.name == "upper" && x.safe));
    }

    #[test]
    fn tokenisation_settings_are_refused_and_safe_settings_read() {
        for sql in [
            "SET sql_mode = 'ANSI_QUOTES'",
            "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
            "SET @@sql_mode = ''",
            "SET NAMES gbk",
            "SET character_set_client = sjis",
            "SET `sql_mode` = ''",
        ] {
            let e = refused(sql);
            assert!(
                e.contains("refused") || e.contains("not understood"),
                "{sql}: {e}"
            );
        }
        assert_eq!(one("SET autocommit = 1").class, StatementClass::Read);
        assert_eq!(one("SET @x = 1").class, StatementClass::Read);
        assert_eq!(
            one("SET max_heap_table_size = 1").class,
            StatementClass::Privileged
        );
    }

    #[test]
    fn writes_ddl_and_unknowns_are_classified() {
        let f = one("INSERT INTO orders VALUES (3, 1, 1.0)");
        assert_eq!(f.class, StatementClass::Write);
        assert!(f.tables[0].write);
        assert_eq!(
            one("DELETE FROM orders WHERE id = 3").class,
            StatementClass::Write
        );
        assert_eq!(one("DROP TABLE orders").class, StatementClass::Ddl);
        assert!(refused("USE mysql").contains("grant's database"));
        assert_eq!(one("USE shop").class, StatementClass::Read);
        // Garbage and half statements do not parse.
        assert!(analyze("SELEC 1", "shop").is_err());
        assert!(
            analyze("HANDLER customers OPEN", "shop").is_err() || {
                one("HANDLER customers OPEN").class == StatementClass::Unknown
            }
        );
    }

    #[test]
    fn masked_columns_only_as_bare_output_columns() {
        let masked = |c: &str| c.eq_ignore_ascii_case("card");
        for ok in [
            "SELECT card FROM customers",
            "SELECT c.card AS x, name FROM customers c WHERE id = 1",
            "SELECT * FROM customers",
            "SELECT name FROM customers ORDER BY id",
            "SELECT card AS card FROM customers ORDER BY 1 + 0",
            "SELECT name, card FROM customers ORDER BY 1",
            "SELECT name FROM customers WHERE EXISTS (SELECT * FROM orders)",
            "SELECT 'card', \"card\" FROM customers",
            "SELECT DISTINCT name FROM customers",
            "SELECT ALL card FROM customers",
        ] {
            assert_eq!(masked_column_misuse(ok, masked, true), None, "{ok}");
        }
        for bad in [
            "SELECT name FROM customers WHERE card LIKE '4111%'",
            "SELECT upper(card) FROM customers",
            "SELECT concat(c.card, '') FROM customers c",
            "SELECT name FROM customers ORDER BY card",
            "SELECT card FROM customers WHERE card = '1'",
            "SELECT name FROM customers WHERE id IN (SELECT id FROM customers WHERE card > '4')",
            "SELECT name FROM customers UNION SELECT card FROM customers",
            "SELECT x FROM (SELECT card AS x FROM customers) t",
            "WITH c AS (SELECT card FROM customers) SELECT card FROM c",
            "SELECT (SELECT card FROM customers LIMIT 1) AS x",
            "SELECT card AS x, name FROM customers ORDER BY x",
            "SELECT card x FROM customers HAVING x LIKE '4%'",
            "SELECT name, card FROM customers ORDER BY 2",
            "SELECT * FROM customers ORDER BY 5",
            "SELECT id, c.* FROM customers c GROUP BY 1, 3",
            "SELECT a.name FROM customers a JOIN (SELECT '4' AS card) b USING (card)",
            "SELECT a.name FROM customers a NATURAL JOIN (SELECT 'Alice' AS name) b",
            "SELECT name FROM customers WHERE MATCH (card) AGAINST ('4')",
            "WITH t (a, x) AS (SELECT * FROM customers) SELECT a FROM t WHERE x > '4'",
            "SELECT name FROM customers WHERE (1, 'a') IN (SELECT * FROM customers)",
            "SELECT * FROM customers UNION SELECT * FROM customers",
            "SELECT DISTINCT card FROM customers",
            "SELECT DISTINCT c.card AS k FROM customers c",
            "SELECT DISTINCT * FROM customers",
            "SELECT SQL_BIG_RESULT DISTINCT card FROM customers",
            "SELECT DISTINCTROW card FROM customers",
        ] {
            assert!(masked_column_misuse(bad, masked, true).is_some(), "{bad}");
        }
    }
}
