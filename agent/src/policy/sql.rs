//! SQL classification: parse a PostgreSQL query string with `sqlparser`
//! (PostgreSQL dialect) and reduce every statement to the facts the policy
//! decides on: its class, the tables it touches, the functions it calls,
//! the settings it changes, and its PREPARE/EXECUTE/DEALLOCATE and
//! transaction effects.
//!
//! The walk uses sqlparser's visitor, so every nested statement, CTE,
//! sub-query, set operation, join, LATERAL item, function argument and
//! EXPLAIN target is reached; the classifier looks at every statement node
//! it meets (a data-modifying CTE is an `UPDATE`/`DELETE`/`INSERT` node
//! inside a query) and the statement's class is the most severe of them.
//! Statement kinds the classifier does not know are [`StatementClass::Unknown`].
//!
//! Fail-closed rules:
//! - Text sqlparser cannot parse is an [`AnalyzeError`]; the proxy refuses it.
//!   A few PostgreSQL utility statements sqlparser lacks (`VACUUM` with
//!   options, `DO`, `CHECKPOINT`, `COPY ... WITH (...)`, `TABLE t`,
//!   `REINDEX`, `CLUSTER`, `REFRESH MATERIALIZED VIEW`) are recognised from
//!   the token stream by strict patterns; anything else stays an error.
//! - Unicode-escaped identifiers (`U&"..."`) are refused: sqlparser reads
//!   them as `U & "..."`, which would hide the real name. So are
//!   dollar-quote tags PostgreSQL would not read as tags (`$1$...$1$`).
//! - `FROM ONLY t` / `UPDATE ONLY t` (which sqlparser reads as table `only`
//!   aliased `t`) are taken as table `t`.
//! - Tokenisation assumes `standard_conforming_strings = on` and a UTF-8
//!   client encoding; [`super::settings`] keeps the session there.
//! - Dangerous built-in functions (server files, large objects, dblink,
//!   `*_to_xml` and `ts_stat` which run SQL given as text or read tables
//!   by name, `set_config`, backend signalling, replication, backups...)
//!   make the statement [`StatementClass::Privileged`] whatever the rules;
//!   `nextval`/`setval`/`pg_notify` make it [`StatementClass::Write`].
//!   Names are matched case-insensitively whatever the schema.
//! - A user-defined function called from a SELECT is still a read: the
//!   proxy cannot see its body. The account's least-privilege upstream role
//!   is the backstop for that.
//!
//! Classes of session statements: transaction control (BEGIN, COMMIT,
//! ROLLBACK, SAVEPOINT, RELEASE, SET TRANSACTION), SET/RESET of a safe
//! setting, SHOW, DISCARD, DEALLOCATE, LISTEN, UNLISTEN, DECLARE/FETCH/CLOSE
//! of a cursor, EXECUTE (whose decision is the prepared statement's) and
//! EXPLAIN without ANALYZE are `read`. NOTIFY, LOCK, CALL and
//! `SELECT ... FOR UPDATE/SHARE` are `write`. `SELECT ... INTO`, VACUUM,
//! ANALYZE, REINDEX, CLUSTER and REFRESH are `ddl`. SET ROLE, SET SESSION
//! AUTHORIZATION, GRANT/REVOKE, roles, DO, CHECKPOINT, LOAD, extensions,
//! foreign servers, CREATE DATABASE, COPY to/from a server file or a
//! program are `privileged`. `EXPLAIN ANALYZE` (or `EXPLAIN (ANALYZE ...)`
//! unless the option is plainly false) has its target's class.
//!
//! Names are normalised like PostgreSQL does: unquoted identifiers are
//! lower-cased (ASCII), quoted ones kept exact, both truncated to 63 bytes;
//! a function's `pg_catalog` schema is dropped. References to a CTE of an
//! enclosing `WITH` (scoped as PostgreSQL scopes them: a non-recursive CTE
//! is not visible in its own body or earlier ones) are not tables.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, CopyTarget, DiscardObject, Expr, FromTable, Ident, ObjectName, ObjectNamePart,
    ObjectType, Query, Reset, Select, SetExpr, Statement, TableFactor, TableObject, Value, Visit,
    Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::model::StatementClass;
use super::rules::glob_match;

/// Longest query text analysed (longer texts are refused).
pub const MAX_SQL_LEN: usize = 4 << 20;

/// Nesting depth sqlparser may recurse to before giving up.
const RECURSION_LIMIT: usize = 64;

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

/// Why a query text could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    /// sqlparser rejected the text.
    #[error("cannot parse the statement: {message}")]
    Parse {
        /// The parser's message.
        message: String,
    },
    /// The text parses but uses a construct the classifier refuses.
    #[error("unsupported SQL: {reason}")]
    Unsupported {
        /// What was refused.
        reason: String,
    },
    /// The text is longer than [`MAX_SQL_LEN`].
    #[error("statement text of {len} bytes is longer than the {max} bytes analysed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Everything one query text does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// One entry per statement, in order (empty for an empty query).
    pub statements: Vec<StatementFacts>,
}

impl Analysis {
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
    /// Settings changed by SET/RESET/SET NAMES/DISCARD ALL.
    pub settings: Vec<SettingChange>,
    /// `PREPARE name AS stmt`: the name and the analysis of `stmt`.
    pub prepare: Option<(String, Box<Analysis>)>,
    /// `EXECUTE name` (also inside EXPLAIN): the prepared statement's name.
    pub execute: Option<String>,
    /// `DEALLOCATE name` (`Some(Some(name))`) or `DEALLOCATE ALL` /
    /// `DISCARD ALL` (`Some(None)`).
    pub deallocate: Option<Option<String>>,
    /// Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...).
    pub transaction: bool,
    /// Why the class is more severe than the command suggests, e.g.
    /// `calls pg_read_file`, `COPY to a program`.
    pub note: Option<String>,
}

impl StatementFacts {
    fn new() -> Self {
        StatementFacts {
            class: StatementClass::Read,
            command: String::new(),
            tables: Vec::new(),
            functions: Vec::new(),
            settings: Vec::new(),
            prepare: None,
            execute: None,
            deallocate: None,
            transaction: false,
            note: None,
        }
    }

    fn bump(&mut self, class: StatementClass, note: Option<String>) {
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

/// A function call, normalised (`pg_catalog` schema dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncRef {
    /// The schema when qualified with anything but `pg_catalog`.
    pub schema: Option<String>,
    /// The function name.
    pub name: String,
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
    /// Lower-case parameter name (`all` for RESET ALL / DISCARD ALL).
    pub name: String,
    /// The new value as PostgreSQL would store it (list items of
    /// `search_path` quoted when needed); `None` for RESET / DEFAULT.
    pub value: Option<String>,
    /// `SET LOCAL` (until the end of the transaction).
    pub local: bool,
}

/// Analyse a query text (one or more statements).
pub fn analyze(sql: &str) -> Result<Analysis, AnalyzeError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(AnalyzeError::TooLong {
            len: sql.len(),
            max: MAX_SQL_LEN,
        });
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| AnalyzeError::Parse {
            message: e.to_string(),
        })?;
    check_tokens(&tokens)?;
    if tokens.iter().all(|t| is_trivia(&t.token)) {
        return Ok(Analysis::default());
    }
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens.clone())
        .parse_statements();
    match parsed {
        Ok(statements) => {
            let mut out = Analysis::default();
            for st in &statements {
                out.statements.push(statement_facts(st)?);
            }
            Ok(out)
        }
        Err(first_error) => analyze_by_chunks(&dialect, tokens, first_error.to_string()),
    }
}

/// The slow path when the whole text does not parse: split it at the
/// top-level semicolons the tokenizer found, parse each piece, and try the
/// utility-statement patterns on the pieces sqlparser rejects.
fn analyze_by_chunks(
    dialect: &PostgreSqlDialect,
    tokens: Vec<TokenWithSpan>,
    first_error: String,
) -> Result<Analysis, AnalyzeError> {
    let mut chunks: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
    for t in tokens {
        if t.token == Token::SemiColon {
            chunks.push(Vec::new());
        } else if let Some(last) = chunks.last_mut() {
            last.push(t);
        }
    }
    let mut out = Analysis::default();
    for chunk in chunks {
        if chunk.iter().all(|t| is_trivia(&t.token)) {
            continue;
        }
        let significant: Vec<&Token> = chunk
            .iter()
            .map(|t| &t.token)
            .filter(|t| !is_trivia(t))
            .collect();
        let parsed = Parser::new(dialect)
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(chunk.clone())
            .parse_statements();
        match parsed {
            Ok(statements) => {
                for st in &statements {
                    out.statements.push(statement_facts(st)?);
                }
            }
            Err(e) => match fallback_statement(&significant) {
                Some(facts) => out.statements.push(facts),
                None => {
                    let message = if e.to_string().is_empty() {
                        first_error
                    } else {
                        e.to_string()
                    };
                    return Err(AnalyzeError::Parse { message });
                }
            },
        }
    }
    Ok(out)
}

fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Token-level refusals: constructs sqlparser would misread.
fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), AnalyzeError> {
    // PostgreSQL's dollar-quote tags start with a letter or `_` and go on
    // with letters, digits and `_`; sqlparser also takes `$1$...$1$`, which
    // PostgreSQL reads as a parameter followed by code.
    for t in tokens {
        if let Token::DollarQuotedString(d) = &t.token
            && let Some(tag) = &d.tag
        {
            let ok_start = tag
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_');
            let ok_rest = tag.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !(ok_start && ok_rest) {
                return Err(AnalyzeError::Unsupported {
                    reason: "dollar-quote tag PostgreSQL would not read as one".into(),
                });
            }
        }
    }
    for w in tokens.windows(3) {
        if let (Token::Word(u), Token::Ampersand, Token::Word(q)) =
            (&w[0].token, &w[1].token, &w[2].token)
            && u.quote_style.is_none()
            && u.value.eq_ignore_ascii_case("u")
            && q.quote_style == Some('"')
        {
            return Err(AnalyzeError::Unsupported {
                reason: "Unicode-escaped identifiers (U&\"...\") are not supported".into(),
            });
        }
    }
    Ok(())
}

/// Facts of one top-level statement.
fn statement_facts(st: &Statement) -> Result<StatementFacts, AnalyzeError> {
    if let Statement::Prepare {
        name, statement, ..
    } = st
    {
        let inner = statement_facts(statement)?;
        let mut facts = StatementFacts::new();
        facts.command = "PREPARE".into();
        facts.class = inner.class;
        facts.note = inner.note.clone();
        facts.tables = inner.tables.clone();
        facts.functions = inner.functions.clone();
        facts.prepare = Some((
            norm_ident(name),
            Box::new(Analysis {
                statements: vec![inner],
            }),
        ));
        return Ok(facts);
    }
    let mut walker = Walker::default();
    // The walker never breaks: every node is reached.
    let _ = st.visit(&mut walker);
    Ok(walker.finish())
}

/// One `WITH` clause in scope during the walk.
struct CteFrame {
    owner: *const Query,
    bodies: Vec<*const Query>,
    names: Vec<String>,
    recursive: bool,
    visible: usize,
}

#[derive(Default)]
struct Walker {
    facts: Option<StatementFacts>,
    tables: BTreeMap<(Option<String>, String), bool>,
    functions: Vec<FuncRef>,
    ctes: Vec<CteFrame>,
    /// One entry per EXPLAIN being walked: whether it executes its target.
    explains: Vec<bool>,
    /// The name of a `FROM f(...)` item: a function, not a relation.
    skip_relation: Option<*const ObjectName>,
}

impl Walker {
    fn facts(&mut self) -> &mut StatementFacts {
        self.facts.get_or_insert_with(StatementFacts::new)
    }

    /// True inside an EXPLAIN that does not run its target.
    fn plan_only(&self) -> bool {
        self.explains.iter().any(|analyze| !analyze)
    }

    fn bump(&mut self, class: StatementClass, note: Option<String>) {
        let plan_only = self.plan_only();
        let f = self.facts();
        if plan_only && class <= StatementClass::Ddl {
            return;
        }
        f.bump(class, note);
    }

    fn add_table(&mut self, name: &ObjectName, write: bool) {
        match table_ref(name) {
            Some((schema, table)) => {
                let write = write && !self.plan_only();
                let e = self.tables.entry((schema, table)).or_insert(false);
                *e |= write;
            }
            None => self.bump(
                StatementClass::Unknown,
                Some(format!("table name {name} is not understood")),
            ),
        }
    }

    fn add_function(&mut self, name: &ObjectName) {
        let Some(parts) = name_parts(name) else {
            self.bump(
                StatementClass::Unknown,
                Some(format!("function name {name} is not understood")),
            );
            return;
        };
        let n = parts.len();
        if n == 0 || n > 3 {
            self.bump(
                StatementClass::Unknown,
                Some(format!("function name {name} is not understood")),
            );
            return;
        }
        let fname = parts[n - 1].clone();
        let schema = if n >= 2 {
            Some(parts[n - 2].clone()).filter(|s| s != "pg_catalog")
        } else {
            None
        };
        let lower = fname.to_lowercase();
        if DANGEROUS_FUNCTIONS.iter().any(|g| glob_match(g, &lower)) {
            self.bump(
                StatementClass::Privileged,
                Some(format!("calls {}", quote_ident(&fname))),
            );
        } else if WRITING_FUNCTIONS.contains(&lower.as_str()) {
            self.bump(
                StatementClass::Write,
                Some(format!("calls {}", quote_ident(&fname))),
            );
        }
        let f = FuncRef {
            schema,
            name: fname,
        };
        if !self.functions.contains(&f) {
            self.functions.push(f);
        }
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let Some(parts) = name_parts(name) else {
            return false;
        };
        if parts.len() != 1 {
            return false;
        }
        self.ctes
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| *n == parts[0]))
    }

    fn set_command(&mut self, command: &str) {
        let f = self.facts();
        if f.command.is_empty() {
            f.command = command.to_string();
        }
    }

    fn finish(mut self) -> StatementFacts {
        let mut facts = self.facts.take().unwrap_or_else(StatementFacts::new);
        if facts.command.is_empty() {
            facts.command = "UNKNOWN".into();
        }
        facts.tables = self
            .tables
            .into_iter()
            .map(|((schema, name), write)| TableRef {
                schema,
                name,
                write,
            })
            .collect();
        facts.functions = self.functions;
        facts
    }

    fn classify(&mut self, st: &Statement) {
        use StatementClass::*;
        match st {
            Statement::Query(q) => {
                let cmd = match q.body.as_ref() {
                    SetExpr::Insert(_) => "INSERT",
                    SetExpr::Update(_) => "UPDATE",
                    SetExpr::Delete(_) => "DELETE",
                    SetExpr::Merge(_) => "MERGE",
                    _ => "SELECT",
                };
                self.set_command(cmd);
            }
            Statement::Insert(i) => {
                self.set_command("INSERT");
                self.bump(Write, None);
                match &i.table {
                    TableObject::TableName(name) => self.add_table(name, true),
                    TableObject::TableFunction(_) | TableObject::TableQuery(_) => self.bump(
                        Unknown,
                        Some("INSERT into a table function is not understood".into()),
                    ),
                }
            }
            Statement::Update(u) => {
                self.set_command("UPDATE");
                self.bump(Write, None);
                self.write_target(&u.table.relation);
            }
            Statement::Delete(d) => {
                self.set_command("DELETE");
                self.bump(Write, None);
                for name in &d.tables {
                    self.add_table(name, true);
                }
                let from = match &d.from {
                    FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
                };
                for twj in from {
                    self.write_target(&twj.relation);
                }
            }
            Statement::Merge(m) => {
                self.set_command("MERGE");
                self.bump(Write, None);
                self.write_target(&m.table);
            }
            Statement::Copy {
                source, to, target, ..
            } => {
                self.set_command("COPY");
                if let CopySource::Table { table_name, .. } = source {
                    self.add_table(table_name, !*to);
                }
                match (target, *to) {
                    (CopyTarget::Stdout, true) => self.bump(Read, None),
                    (CopyTarget::Stdin, false) => self.bump(Write, None),
                    (CopyTarget::File { .. }, true) => {
                        self.bump(Privileged, Some("COPY to a server file".into()))
                    }
                    (CopyTarget::File { .. }, false) => {
                        self.bump(Privileged, Some("COPY from a server file".into()))
                    }
                    (CopyTarget::Program { .. }, _) => {
                        self.bump(Privileged, Some("COPY with a program".into()))
                    }
                    _ => self.bump(Unknown, Some("COPY form is not understood".into())),
                }
            }
            Statement::Set(set) => self.classify_set(set),
            Statement::Reset(r) => {
                self.set_command("RESET");
                let name = match &r.reset {
                    Reset::ALL => Some("all".to_string()),
                    Reset::SessionAuthorization => Some("session_authorization".to_string()),
                    Reset::ConfigurationParameter(n) => setting_name(n),
                };
                match name {
                    Some(name) => self.facts().settings.push(SettingChange {
                        name,
                        value: None,
                        local: false,
                    }),
                    None => self.bump(Unknown, Some("RESET target is not understood".into())),
                }
            }
            Statement::ShowVariable { .. } => self.set_command("SHOW"),
            Statement::StartTransaction { .. } => {
                self.set_command("BEGIN");
                self.facts().transaction = true;
            }
            Statement::Commit { .. } => {
                self.set_command("COMMIT");
                self.facts().transaction = true;
            }
            Statement::Rollback { .. } => {
                self.set_command("ROLLBACK");
                self.facts().transaction = true;
            }
            Statement::Savepoint { .. } => {
                self.set_command("SAVEPOINT");
                self.facts().transaction = true;
            }
            Statement::ReleaseSavepoint { .. } => {
                self.set_command("RELEASE");
                self.facts().transaction = true;
            }
            Statement::Discard { object_type } => {
                self.set_command("DISCARD");
                if matches!(object_type, DiscardObject::ALL) {
                    let f = self.facts();
                    f.deallocate = Some(None);
                    f.settings.push(SettingChange {
                        name: "all".into(),
                        value: None,
                        local: false,
                    });
                }
            }
            Statement::Deallocate { name, .. } => {
                self.set_command("DEALLOCATE");
                let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                self.facts().deallocate = Some(if all { None } else { Some(norm_ident(name)) });
            }
            Statement::Execute {
                name: Some(name),
                immediate: false,
                into,
                using,
                ..
            } if into.is_empty() && using.is_empty() => {
                self.set_command("EXECUTE");
                match name_parts(name) {
                    Some(parts) if parts.len() == 1 => {
                        self.facts().execute = Some(parts[0].clone());
                    }
                    _ => self.bump(Unknown, Some("EXECUTE target is not understood".into())),
                }
            }
            Statement::Explain {
                analyze, options, ..
            } => {
                self.set_command("EXPLAIN");
                let runs = *analyze || explain_option_analyze(options.as_deref());
                self.explains.push(runs);
            }
            Statement::Call(f) => {
                self.set_command("CALL");
                self.bump(Write, None);
                self.add_function(&f.name);
            }
            Statement::LISTEN { .. } => self.set_command("LISTEN"),
            Statement::UNLISTEN { .. } => self.set_command("UNLISTEN"),
            Statement::NOTIFY { .. } => {
                self.set_command("NOTIFY");
                self.bump(Write, None);
            }
            Statement::Lock(_) => {
                self.set_command("LOCK");
                self.bump(Write, None);
            }
            Statement::Declare { .. } => self.set_command("DECLARE"),
            Statement::Fetch { .. } => self.set_command("FETCH"),
            Statement::Close { .. } => self.set_command("CLOSE"),
            Statement::Analyze(_) => {
                self.set_command("ANALYZE");
                self.bump(Ddl, None);
            }
            Statement::Vacuum(v) => {
                self.set_command("VACUUM");
                self.bump(Ddl, None);
                if let Some(t) = &v.table_name {
                    self.add_table(t, false);
                }
            }
            Statement::CreateTable(ct) => {
                self.set_command("CREATE TABLE");
                self.bump(Ddl, None);
                self.add_table(&ct.name, true);
            }
            Statement::CreateView(cv) => {
                self.set_command("CREATE VIEW");
                self.bump(Ddl, None);
                self.add_table(&cv.name, true);
            }
            Statement::AlterTable(at) => {
                self.set_command("ALTER TABLE");
                self.bump(Ddl, None);
                self.add_table(&at.name, true);
            }
            Statement::Truncate(t) => {
                self.set_command("TRUNCATE");
                self.bump(Ddl, None);
                for target in &t.table_names {
                    self.add_table(&target.name, true);
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                self.set_command(&format!("DROP {object_type}"));
                match object_type {
                    ObjectType::Role | ObjectType::User | ObjectType::Database => {
                        self.bump(Privileged, None)
                    }
                    ObjectType::Table
                    | ObjectType::View
                    | ObjectType::MaterializedView
                    | ObjectType::Index
                    | ObjectType::Sequence => {
                        self.bump(Ddl, None);
                        for n in names {
                            self.add_table(n, true);
                        }
                    }
                    _ => self.bump(Ddl, None),
                }
            }
            Statement::CreateIndex(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView { .. }
            | Statement::CreateSchema { .. }
            | Statement::AlterSchema(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::AlterType(_)
            | Statement::CreateDomain(_)
            | Statement::DropDomain(_)
            | Statement::CreateFunction(_)
            | Statement::AlterFunction(_)
            | Statement::DropFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::DropProcedure { .. }
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::CreatePolicy(_)
            | Statement::AlterPolicy(_)
            | Statement::DropPolicy(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::AlterTextSearch(_)
            | Statement::CreateCollation(_)
            | Statement::AlterCollation(_) => {
                let cmd = command_words(st);
                self.set_command(&cmd);
                self.bump(Ddl, None);
            }
            Statement::Grant(sqlparser::ast::Grant {
                objects: Some(objects),
                ..
            })
            | Statement::Revoke(sqlparser::ast::Revoke {
                objects: Some(objects),
                ..
            }) => {
                let cmd = command_words(st);
                self.set_command(&cmd);
                self.bump(Privileged, None);
                use sqlparser::ast::GrantObjects;
                if let GrantObjects::Tables(names)
                | GrantObjects::Views(names)
                | GrantObjects::Sequences(names) = objects
                {
                    for n in names {
                        self.add_table(n, true);
                    }
                }
            }
            Statement::Comment {
                object_type,
                object_name,
                ..
            } => {
                use sqlparser::ast::CommentObject;
                self.set_command("COMMENT");
                self.bump(Ddl, None);
                match object_type {
                    CommentObject::Table
                    | CommentObject::View
                    | CommentObject::MaterializedView
                    | CommentObject::Sequence
                    | CommentObject::Index => self.add_table(object_name, true),
                    CommentObject::Column => {
                        // table.column or schema.table.column
                        let mut parts = object_name.0.clone();
                        parts.pop();
                        if !parts.is_empty() {
                            self.add_table(&ObjectName(parts), true);
                        }
                    }
                    _ => {}
                }
            }
            Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::CreateExtension(_)
            | Statement::DropExtension(_)
            | Statement::CreateServer(_)
            | Statement::CreateDatabase { .. }
            | Statement::Load { .. } => {
                let cmd = command_words(st);
                self.set_command(&cmd);
                self.bump(Privileged, None);
            }
            other => {
                let cmd = command_words(other);
                self.set_command(&cmd);
                self.bump(
                    Unknown,
                    Some(format!("{cmd} statements are not understood by the policy")),
                );
            }
        }
    }

    fn write_target(&mut self, tf: &TableFactor) {
        if let Some(real) = only_target(tf) {
            self.add_table(&real, true);
            return;
        }
        match tf {
            TableFactor::Table {
                name, args: None, ..
            } => self.add_table(name, true),
            _ => self.bump(
                StatementClass::Unknown,
                Some("write target is not a plain table".into()),
            ),
        }
    }

    fn classify_set(&mut self, set: &sqlparser::ast::Set) {
        use StatementClass::*;
        use sqlparser::ast::{ContextModifier, Set};
        self.set_command("SET");
        match set {
            Set::SingleAssignment {
                scope,
                hivevar: false,
                variable,
                values,
            } => {
                let Some(name) = setting_name(variable) else {
                    self.bump(Unknown, Some("SET target is not understood".into()));
                    return;
                };
                let local = matches!(scope, Some(ContextModifier::Local));
                let value = setting_value(&name, values);
                if matches!(name.as_str(), "role" | "session_authorization") {
                    self.bump(Privileged, Some(format!("SET {name}")));
                }
                self.facts()
                    .settings
                    .push(SettingChange { name, value, local });
            }
            Set::SetRole {
                context_modifier,
                role_name,
            } => {
                self.bump(Privileged, Some("SET ROLE".into()));
                let local = matches!(context_modifier, Some(ContextModifier::Local));
                let value = Some(role_name.as_ref().map_or("none".into(), norm_ident));
                self.facts().settings.push(SettingChange {
                    name: "role".into(),
                    value,
                    local,
                });
            }
            Set::SetSessionAuthorization(p) => {
                self.bump(Privileged, Some("SET SESSION AUTHORIZATION".into()));
                self.facts().settings.push(SettingChange {
                    name: "session_authorization".into(),
                    value: Some(p.to_string()),
                    local: false,
                });
            }
            Set::SetTimeZone { local, value } => {
                let value = setting_value("timezone", std::slice::from_ref(value));
                self.facts().settings.push(SettingChange {
                    name: "timezone".into(),
                    value,
                    local: *local,
                });
            }
            Set::SetNames { charset_name, .. } => {
                self.facts().settings.push(SettingChange {
                    name: "client_encoding".into(),
                    value: Some(charset_name.value.clone()),
                    local: false,
                });
            }
            Set::SetNamesDefault {} => self.facts().settings.push(SettingChange {
                name: "client_encoding".into(),
                value: None,
                local: false,
            }),
            Set::SetTransaction { .. } => {
                let f = self.facts();
                f.command = "SET TRANSACTION".into();
                f.transaction = true;
            }
            _ => self.bump(Unknown, Some("SET form is not understood".into())),
        }
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        self.classify(st);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        if matches!(st, Statement::Explain { .. }) {
            self.explains.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let ptr: *const Query = q;
        // Entering the body of a CTE of the innermost WITH: only the CTEs
        // before it (all of them when recursive) are visible inside.
        if let Some(frame) = self.ctes.last_mut()
            && let Some(i) = frame.bodies.iter().position(|b| std::ptr::eq(*b, ptr))
        {
            frame.visible = if frame.recursive {
                frame.names.len()
            } else {
                i
            };
        }
        if !q.locks.is_empty() {
            self.bump(
                StatementClass::Write,
                Some("SELECT ... FOR UPDATE/SHARE locks rows".into()),
            );
        }
        if let Some(with) = &q.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| norm_ident(&c.alias.name))
                .collect();
            let bodies = with
                .cte_tables
                .iter()
                .map(|c| &*c.query as *const Query)
                .collect();
            self.ctes.push(CteFrame {
                owner: ptr,
                bodies,
                recursive: with.recursive,
                visible: if with.recursive { names.len() } else { 0 },
                names,
            });
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let ptr: *const Query = q;
        if let Some(frame) = self.ctes.last()
            && std::ptr::eq(frame.owner, ptr)
        {
            self.ctes.pop();
        }
        // Leaving a CTE body: it and the ones before it are visible from
        // now on (later CTEs and the main body).
        if let Some(frame) = self.ctes.last_mut()
            && let Some(i) = frame.bodies.iter().position(|b| std::ptr::eq(*b, ptr))
        {
            frame.visible = frame.visible.max(i + 1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            self.bump(
                StatementClass::Ddl,
                Some("SELECT ... INTO creates a table".into()),
            );
            for target in &into.targets {
                let name = match target {
                    Expr::Identifier(id) => ObjectName::from(vec![id.clone()]),
                    Expr::CompoundIdentifier(ids) => ObjectName::from(ids.clone()),
                    other => {
                        self.bump(
                            StatementClass::Unknown,
                            Some(format!("SELECT INTO target {other} is not understood")),
                        );
                        continue;
                    }
                };
                self.add_table(&name, true);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let Some(real) = only_target(tf) {
            // `FROM ONLY t` reads as table `only` with alias `t`.
            self.add_table(&real, false);
            if let TableFactor::Table { name, .. } = tf {
                self.skip_relation = Some(name as *const ObjectName);
            }
            return ControlFlow::Continue(());
        }
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.add_function(name);
                self.skip_relation = Some(name as *const ObjectName);
            }
            TableFactor::Function { name, .. } => self.add_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if let Some(skip) = self.skip_relation
            && std::ptr::eq(skip, name)
        {
            self.skip_relation = None;
            return ControlFlow::Continue(());
        }
        if !self.is_cte(name) {
            self.add_table(name, false);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.add_function(&f.name);
        }
        ControlFlow::Continue(())
    }
}

/// sqlparser reads PostgreSQL's `ONLY t` as table `only` aliased `t`; an
/// unquoted `only` cannot be a table name (it is reserved), so the alias
/// is the real table.
fn only_target(tf: &TableFactor) -> Option<ObjectName> {
    let TableFactor::Table {
        name,
        alias: Some(alias),
        args: None,
        ..
    } = tf
    else {
        return None;
    };
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)]
            if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("only") =>
        {
            Some(ObjectName::from(vec![alias.name.clone()]))
        }
        _ => None,
    }
}

/// Whether EXPLAIN's parenthesised options run the statement: `ANALYZE`
/// alone or with any argument but a plain false is taken as yes.
fn explain_option_analyze(options: Option<&[sqlparser::ast::UtilityOption]>) -> bool {
    let Some(options) = options else {
        return false;
    };
    options.iter().any(|o| {
        let name = o.name.value.to_ascii_lowercase();
        if name != "analyze" && name != "analyse" {
            return false;
        }
        match &o.arg {
            None => true,
            Some(arg) => {
                let text = match arg {
                    Expr::Value(v) => match &v.value {
                        Value::Boolean(b) => return *b,
                        Value::Number(n, _) => n.clone(),
                        Value::SingleQuotedString(s) => s.clone(),
                        _ => return true,
                    },
                    Expr::Identifier(id) => id.value.clone(),
                    _ => return true,
                };
                super::settings::parse_bool(&text) != Some(false)
            }
        }
    })
}

/// Functions that reach outside the account's tables or the session:
/// server files, large objects, other databases, SQL given as text, table
/// contents by name, settings, other backends, replication, backups.
const DANGEROUS_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*",
    "pg_file_*",
    "pg_logdir_ls",
    "lo_*",
    "loread",
    "lowrite",
    "dblink*",
    "*_to_xml",
    "*_to_xmlschema",
    "*_to_xml_and_xmlschema",
    "ts_stat",
    "set_config",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_*backup*",
    "pg_*replication*",
    "pg_logical_*",
    "pg_copy_*_slot",
    "pg_wal_replay_*",
    "pg_xlog_replay_*",
    "pg_stat_reset*",
    "pg_stat_statements_reset",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_truncate_visibility_map",
    "binary_upgrade_*",
];

/// Functions that change data though called from a SELECT.
const WRITING_FUNCTIONS: &[&str] = &["nextval", "setval", "pg_notify"];

/// Normalise an identifier the way PostgreSQL does.
pub fn norm_ident(id: &Ident) -> String {
    let v = if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_ascii_lowercase()
    };
    truncate_ident(v)
}

fn truncate_ident(mut v: String) -> String {
    if v.len() > MAX_IDENT_BYTES {
        let mut cut = MAX_IDENT_BYTES;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    v
}

/// Normalised parts of a name, `None` when a part is not an identifier.
fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => Some(norm_ident(id)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// (schema, table) of a relation name; `catalog.schema.table` keeps schema
/// and table.
fn table_ref(name: &ObjectName) -> Option<(Option<String>, String)> {
    let parts = name_parts(name)?;
    match parts.len() {
        1 => Some((None, parts[0].clone())),
        2 | 3 => {
            let n = parts.len();
            Some((Some(parts[n - 2].clone()), parts[n - 1].clone()))
        }
        _ => None,
    }
}

fn setting_name(name: &ObjectName) -> Option<String> {
    let parts = name_parts(name)?;
    if parts.is_empty() {
        return None;
    }
    Some(parts.join(".").to_ascii_lowercase())
}

/// Parameters whose list items PostgreSQL stores quoted (GUC_LIST_QUOTE).
fn list_quoted(name: &str) -> bool {
    matches!(
        name,
        "search_path"
            | "temp_tablespaces"
            | "session_preload_libraries"
            | "local_preload_libraries"
            | "shared_preload_libraries"
    )
}

/// A SET value as PostgreSQL stores it; `None` for DEFAULT.
fn setting_value(name: &str, values: &[Expr]) -> Option<String> {
    if let [Expr::Identifier(id)] = values
        && id.quote_style.is_none()
        && id.value.eq_ignore_ascii_case("default")
    {
        return None;
    }
    let items: Vec<String> = values
        .iter()
        .map(|e| {
            let item = match e {
                Expr::Identifier(id) => norm_ident(id),
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s)
                    | Value::EscapedStringLiteral(s)
                    | Value::UnicodeStringLiteral(s)
                    | Value::NationalStringLiteral(s) => s.clone(),
                    Value::DollarQuotedString(d) => d.value.clone(),
                    Value::Boolean(b) => b.to_string(),
                    Value::Number(n, _) => n.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            if list_quoted(name) {
                quote_ident(&item)
            } else {
                item
            }
        })
        .collect();
    Some(items.join(", "))
}

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

/// The leading keywords of a statement, for commands the walker does not
/// name itself (`CREATE INDEX`, `GRANT`...).
fn command_words(st: &Statement) -> String {
    let text = st.to_string();
    let mut words = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>();
    if words.len() == 2
        && !matches!(
            words[0].as_str(),
            "CREATE" | "ALTER" | "DROP" | "COMMENT" | "SHOW"
        )
    {
        words.truncate(1);
    }
    if words.is_empty() {
        "UNKNOWN".into()
    } else {
        words.join(" ")
    }
}

// ---------------------------------------------------------------------------
// Utility statements sqlparser does not parse, recognised by strict token
// patterns. Each returns `None` unless the whole statement matches.

fn fallback_statement(tokens: &[&Token]) -> Option<StatementFacts> {
    let first = match tokens.first()? {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => return None,
    };
    let rest = &tokens[1..];
    match first.as_str() {
        "DO" => fallback_do(rest),
        "CHECKPOINT" if rest.is_empty() => Some(facts(
            "CHECKPOINT",
            StatementClass::Privileged,
            Some("CHECKPOINT".into()),
            vec![],
        )),
        "VACUUM" => fallback_vacuum("VACUUM", rest),
        "ANALYZE" | "ANALYSE" => fallback_vacuum("ANALYZE", rest),
        "TABLE" => {
            let (name, rest) = qualified_name(rest)?;
            rest.is_empty()
                .then(|| facts("SELECT", StatementClass::Read, None, vec![name]))
        }
        "COPY" => fallback_copy(rest),
        "REINDEX" => fallback_maintenance("REINDEX", rest),
        "CLUSTER" => fallback_maintenance("CLUSTER", rest),
        "REFRESH" => fallback_maintenance("REFRESH MATERIALIZED VIEW", rest),
        _ => None,
    }
}

fn facts(
    command: &str,
    class: StatementClass,
    note: Option<String>,
    tables: Vec<TableRef>,
) -> StatementFacts {
    let mut f = StatementFacts::new();
    f.command = command.into();
    f.class = class;
    f.note = note;
    f.tables = tables;
    f
}

fn kw(t: &Token) -> Option<Keyword> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    }
}

fn is_kw(t: Option<&&Token>, k: Keyword) -> bool {
    t.and_then(|t| kw(t)) == Some(k)
}

/// `DO [LANGUAGE l] 'code' [LANGUAGE l]`.
fn fallback_do(rest: &[&Token]) -> Option<StatementFacts> {
    let mut i = 0;
    let skip_language = |i: &mut usize| {
        if is_kw(rest.get(*i), Keyword::LANGUAGE)
            && matches!(rest.get(*i + 1), Some(Token::Word(_)))
        {
            *i += 2;
        }
    };
    skip_language(&mut i);
    match rest.get(i) {
        Some(Token::DollarQuotedString(_)) | Some(Token::SingleQuotedString(_)) => i += 1,
        _ => return None,
    }
    skip_language(&mut i);
    (i == rest.len()).then(|| {
        facts(
            "DO",
            StatementClass::Privileged,
            Some("DO runs arbitrary procedural code".into()),
            vec![],
        )
    })
}

/// `VACUUM [(options)] [FULL|FREEZE|VERBOSE|ANALYZE]... [table [(cols)], ...]`
/// and `ANALYZE [(options)] [VERBOSE] [table [(cols)], ...]`.
fn fallback_vacuum(command: &str, mut rest: &[&Token]) -> Option<StatementFacts> {
    if matches!(rest.first(), Some(Token::LParen)) {
        rest = skip_option_list(rest)?;
    }
    while let Some(k) = rest.first().and_then(|t| kw(t)) {
        if matches!(
            k,
            Keyword::FULL | Keyword::FREEZE | Keyword::VERBOSE | Keyword::ANALYZE
        ) {
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let mut tables = Vec::new();
    while !rest.is_empty() {
        let (t, after) = qualified_name(rest)?;
        tables.push(t);
        rest = after;
        if matches!(rest.first(), Some(Token::LParen)) {
            rest = skip_ident_list(rest)?;
        }
        match rest.first() {
            None => break,
            Some(Token::Comma) => rest = &rest[1..],
            _ => return None,
        }
    }
    Some(facts(command, StatementClass::Ddl, None, tables))
}

/// `COPY table [(cols)] FROM STDIN | TO STDOUT [[WITH] (options)]`, the
/// form sqlparser rejects when an option value is `on`/`off`.
fn fallback_copy(rest: &[&Token]) -> Option<StatementFacts> {
    let (mut table, mut rest) = qualified_name(rest)?;
    if matches!(rest.first(), Some(Token::LParen)) {
        rest = skip_ident_list(rest)?;
    }
    let from = match rest.first().and_then(|t| kw(t)) {
        Some(Keyword::FROM) => true,
        Some(Keyword::TO) => false,
        _ => return None,
    };
    let want = if from {
        Keyword::STDIN
    } else {
        Keyword::STDOUT
    };
    if !is_kw(rest.get(1), want) {
        return None;
    }
    rest = &rest[2..];
    if is_kw(rest.first(), Keyword::WITH) {
        rest = &rest[1..];
    }
    if matches!(rest.first(), Some(Token::LParen)) {
        rest = skip_option_list(rest)?;
    }
    if !rest.is_empty() {
        return None;
    }
    table.write = from;
    let class = if from {
        StatementClass::Write
    } else {
        StatementClass::Read
    };
    Some(facts("COPY", class, None, vec![table]))
}

/// `REINDEX`, `CLUSTER`, `REFRESH MATERIALIZED VIEW`: words, dots, commas
/// and parenthesised options only; every name that is not a keyword is
/// taken as a table (conservative for block rules).
fn fallback_maintenance(command: &str, rest: &[&Token]) -> Option<StatementFacts> {
    let mut tables = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            Token::LParen => {
                let after = skip_option_list(&rest[i..])?;
                i = rest.len() - after.len();
            }
            Token::Comma => i += 1,
            Token::Word(w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword => i += 1,
            Token::Word(_) => {
                let (t, after) = qualified_name(&rest[i..])?;
                tables.push(t);
                i = rest.len() - after.len();
            }
            _ => return None,
        }
    }
    Some(facts(command, StatementClass::Ddl, None, tables))
}

/// A `name`, `schema.name` or `db.schema.name` at the start of `tokens`.
fn qualified_name<'a, 'b>(tokens: &'a [&'b Token]) -> Option<(TableRef, &'a [&'b Token])> {
    let mut parts = Vec::new();
    let mut i = 0;
    loop {
        match tokens.get(i) {
            Some(Token::Word(w)) => {
                let id = Ident {
                    value: w.value.clone(),
                    quote_style: w.quote_style,
                    span: sqlparser::tokenizer::Span::empty(),
                };
                parts.push(norm_ident(&id));
                i += 1;
            }
            _ => return None,
        }
        if matches!(tokens.get(i), Some(Token::Period)) {
            i += 1;
        } else {
            break;
        }
    }
    let n = parts.len();
    let (schema, name) = match n {
        1 => (None, parts.pop()?),
        2 | 3 => {
            let name = parts.pop()?;
            (parts.pop(), name)
        }
        _ => return None,
    };
    Some((
        TableRef {
            schema,
            name,
            write: false,
        },
        &tokens[i..],
    ))
}

/// Skip `( ident, ident ... )`.
fn skip_ident_list<'a, 'b>(tokens: &'a [&'b Token]) -> Option<&'a [&'b Token]> {
    if !matches!(tokens.first(), Some(Token::LParen)) {
        return None;
    }
    let mut i = 1;
    loop {
        match tokens.get(i) {
            Some(Token::Word(_)) => i += 1,
            _ => return None,
        }
        match tokens.get(i) {
            Some(Token::Comma) => i += 1,
            Some(Token::RParen) => return Some(&tokens[i + 1..]),
            _ => return None,
        }
    }
}

/// Skip a parenthesised option list made only of words, numbers, strings,
/// commas and nested parentheses.
fn skip_option_list<'a, 'b>(tokens: &'a [&'b Token]) -> Option<&'a [&'b Token]> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&tokens[i + 1..]);
                }
            }
            Token::Word(_) | Token::Number(..) | Token::SingleQuotedString(_) | Token::Comma => {}
            _ => return None,
        }
        if depth == 0 {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

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
        assert_eq!(
            class("SELECT pg_catalog.PG_READ_FILE('/etc/passwd')"),
            Privileged
        );
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
        assert_eq!(
            one("DEALLOCATE PREPARE \"Q\"").deallocate,
            Some(Some("Q".into()))
        );
        assert!(one("BEGIN").transaction);
        assert!(one("END").transaction);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            analyze("SELECT U&\"pg_read_fil\\0065\"('x')"),
            Err(AnalyzeError::Unsupported { .. })
        ));
        assert!(matches!(
            analyze("SELEC 1"),
            Err(AnalyzeError::Parse { .. })
        ));
        assert!(matches!(
            analyze("SELECT 1; FROBNICATE"),
            Err(AnalyzeError::Parse { .. })
        ));
        assert!(matches!(
            analyze("ALTER SYSTEM SET x = 1"),
            Err(AnalyzeError::Parse { .. })
        ));
        let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        assert!(analyze(&deep).is_err());
        let long = "x".repeat(MAX_SQL_LEN + 1);
        assert!(matches!(analyze(&long), Err(AnalyzeError::TooLong { .. })));
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
        assert!(analyze("VACUUM a + b").is_err());
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
