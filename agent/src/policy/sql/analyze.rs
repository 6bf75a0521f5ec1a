//! The walk over one statement's parse tree ([`statement_facts`]): every
//! node of every kind is visited, and statements, relations, function
//! calls and `WITH` scopes are recognised wherever they stand (see the
//! parent module for the rules). What a node's kind means for the class
//! is [`super::classify`]'s.

use std::collections::BTreeMap;

use pg_query::protobuf::{DiscardMode, TransactionStmtKind, VariableSetKind};

use super::classify::{
    WRITING_FUNCTIONS, defines_code, is_safe_builtin, is_safe_operator, is_statistics_relation,
    is_system_relation, object_type_words, pg16_function_name, privileged_object, utility_class,
};
use pg_query::protobuf::ObjectType;
use serde_json::Value;

use super::{
    Analysis, AnalyzeError, FuncRef, MAX_DEPTH, Obj, SettingChange, StatementClass, StatementFacts,
    TableRef, as_node, bool_field, const_text, enum_is, fields_of, int_field, is_func_call,
    is_range_var, list_field, name_list, object_type, quote_ident, str_field,
};

/// Facts of one top-level statement (`stmt` is its `Node`).
pub(super) fn statement_facts(stmt: &Value) -> Result<StatementFacts, AnalyzeError> {
    if let Some(("PrepareStmt", f)) = as_node(stmt) {
        let name = str_field(f, "name").to_owned();
        let inner = match f.get("query") {
            Some(q) => statement_facts(q)?,
            None => StatementFacts::new(),
        };
        let mut facts = StatementFacts::new();
        facts.command = "PREPARE".into();
        facts.class = inner.class;
        facts.note = inner.note.clone();
        facts.tables = inner.tables.clone();
        facts.functions = inner.functions.clone();
        facts.prepare = Some((
            name,
            Box::new(Analysis {
                statements: vec![inner],
            }),
        ));
        return Ok(facts);
    }
    let mut walker = Walker::default();
    walker.walk(stmt, 0)?;
    Ok(walker.finish())
}

/// One `WITH` clause in scope during the walk.
struct CteFrame {
    names: Vec<String>,
    /// How many of `names` are visible where the walk is now.
    visible: usize,
}

/// How a relation is used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read (or only named): may be a CTE reference.
    Read,
    /// Written or defined: always a table.
    Write,
}

#[derive(Default)]
struct Walker {
    facts: Option<StatementFacts>,
    tables: BTreeMap<(Option<String>, String), bool>,
    functions: Vec<FuncRef>,
    ctes: Vec<CteFrame>,
    /// One entry per EXPLAIN being walked: whether it executes its target.
    explains: Vec<bool>,
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
        if plan_only && class <= StatementClass::Ddl {
            return;
        }
        self.facts().bump(class, note);
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

    fn add_table(&mut self, schema: Option<String>, name: String, write: bool) {
        let write = write && !self.plan_only();
        if write && is_system_relation(schema.as_deref(), &name) {
            // `pg_settings` has an UPDATE rule that calls set_config and
            // PUBLIC may update it: a write to a system relation runs
            // what the catalog's rules say, outside this analysis.
            self.bump(
                StatementClass::Privileged,
                Some(format!(
                    "writes the system relation {}, whose rules run outside the analysis \
                     (pg_settings changes settings)",
                    quote_ident(&name)
                )),
            );
        }
        let e = self.tables.entry((schema, name)).or_insert(false);
        *e |= write;
    }

    /// A relation given as a name list (`DROP TABLE a.b`, `COMMENT ON`).
    fn add_table_names(&mut self, parts: &[String], write: bool) {
        match parts {
            [name] => self.add_table(None, name.clone(), write),
            [.., schema, name] if parts.len() <= 3 => {
                self.add_table(Some(schema.clone()), name.clone(), write)
            }
            _ => self.bump(
                StatementClass::Unknown,
                Some(format!(
                    "relation name {} is not understood",
                    parts.join(".")
                )),
            ),
        }
    }

    /// A catalog relation that shows other tables' values, other sessions
    /// or server internals (see [`is_statistics_relation`]) makes the
    /// statement `privileged`, however it is read (FROM, COPY).
    fn statistics_relation(&mut self, schema: &str, name: &str) {
        if (schema.is_empty() || schema == "pg_catalog") && is_statistics_relation(name) {
            self.bump(
                StatementClass::Privileged,
                Some(format!(
                    "reads {name}, which shows values of other tables, other sessions or \
                     server internals"
                )),
            );
        }
    }

    fn range_var(&mut self, o: &Obj, access: Access) {
        let schema = str_field(o, "schemaname");
        let name = str_field(o, "relname").to_owned();
        self.statistics_relation(schema, &name);
        if schema.is_empty() {
            if access == Access::Read && self.is_cte(&name) {
                return;
            }
            self.add_table(None, name, access == Access::Write);
        } else {
            self.add_table(Some(schema.to_owned()), name, access == Access::Write);
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        self.ctes
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| n == name))
    }

    /// A function named by a list of `String` nodes.
    fn add_function(&mut self, funcname: &[Value]) {
        let Some(parts) = name_list(funcname) else {
            self.bump(
                StatementClass::Unknown,
                Some("function name is not understood".into()),
            );
            return;
        };
        let n = parts.len();
        if n == 0 || n > 3 {
            self.bump(
                StatementClass::Unknown,
                Some(format!(
                    "function name {} is not understood",
                    parts.join(".")
                )),
            );
            return;
        }
        let fname = parts[n - 1].clone();
        let schema = if n >= 2 {
            Some(parts[n - 2].clone()).filter(|s| s != "pg_catalog")
        } else {
            None
        };
        let safe = schema.is_none() && is_safe_builtin(&fname);
        if safe && WRITING_FUNCTIONS.contains(&fname.as_str()) {
            self.bump(
                StatementClass::Write,
                Some(format!("calls {}", quote_ident(&fname))),
            );
        }
        self.push_function(FuncRef {
            schema,
            name: fname,
            safe,
        });
    }

    fn push_function(&mut self, f: FuncRef) {
        if !self.functions.contains(&f) {
            self.functions.push(f);
        }
    }

    /// An operator named by a list of `String` nodes (`+`, or
    /// `OPERATOR(schema.op)`): a built-in operator is safe, any other runs
    /// a function the policy has not seen.
    fn add_operator(&mut self, name: &[Value]) {
        let Some(parts) = name_list(name) else {
            return;
        };
        self.add_operator_parts(&parts);
    }

    fn add_operator_parts(&mut self, parts: &[String]) {
        let (schema, op) = match parts {
            [op] => (None, op.clone()),
            [.., schema, op] => (
                Some(schema.clone()).filter(|s| s != "pg_catalog"),
                op.clone(),
            ),
            [] => return,
        };
        let safe = schema.is_none() && is_safe_operator(&op);
        if !safe {
            self.push_function(FuncRef {
                schema,
                name: op,
                safe,
            });
        } else if !self.facts().operators.contains(&op) {
            self.facts().operators.push(op);
        }
    }

    fn func_call(&mut self, o: &Obj) {
        let funcname = list_field(o, "funcname");
        self.add_function(funcname);
        // set_config(name, value, is_local) changes a setting like SET.
        let is_set_config = name_list(funcname).is_some_and(|p| {
            p.last().is_some_and(|n| n == "set_config")
                && (p.len() == 1 || p[p.len() - 2] == "pg_catalog")
        });
        if is_set_config {
            let args = list_field(o, "args");
            let name = args.first().and_then(const_text);
            let value = args.get(1).and_then(const_text);
            let local = args
                .get(2)
                .and_then(const_text)
                .and_then(|v| crate::policy::settings::parse_bool(&v));
            let computed = name.is_none() || value.is_none() || local.is_none();
            let name = name.map_or_else(|| "?".to_owned(), |n| n.trim().to_ascii_lowercase());
            let value = if computed {
                None
            } else {
                value.map(|v| quote_list_value(&name, &v))
            };
            self.facts().settings.push(SettingChange {
                name,
                value,
                local: local.unwrap_or(false),
                computed,
            });
        }
    }

    /// Walk every field of a message.
    fn walk_fields(&mut self, o: &Obj, depth: usize, skip: &[&str]) -> Result<(), AnalyzeError> {
        for (k, v) in o {
            if !skip.contains(&k.as_str()) {
                self.walk(v, depth + 1)?;
            }
        }
        Ok(())
    }

    fn walk(&mut self, v: &Value, depth: usize) -> Result<(), AnalyzeError> {
        if depth > MAX_DEPTH {
            return Err(AnalyzeError::Unsupported {
                reason: "the statement is nested too deeply to analyse".into(),
            });
        }
        match v {
            Value::Array(items) => {
                for i in items {
                    self.walk(i, depth + 1)?;
                }
                Ok(())
            }
            Value::Object(o) => match as_node(v) {
                Some((ty, f)) => self.node(ty, f, depth),
                None => self.message(o, depth),
            },
            _ => Ok(()),
        }
    }

    /// A typed (not wrapped) message: recognised by its fields.
    fn message(&mut self, o: &Obj, depth: usize) -> Result<(), AnalyzeError> {
        if is_range_var(o) {
            self.range_var(o, Access::Read);
            return self.walk_fields(o, depth, &[]);
        }
        if is_func_call(o) {
            self.func_call(o);
        }
        self.walk_fields(o, depth, &[])
    }

    /// The body of a statement with a `WITH` clause: CTE bodies see the
    /// CTEs before them (all of them when recursive), the rest sees all.
    fn with_scope(
        &mut self,
        f: &Obj,
        depth: usize,
        rest: impl FnOnce(&mut Self) -> Result<(), AnalyzeError>,
    ) -> Result<(), AnalyzeError> {
        let Some(with) = f.get("with_clause").and_then(Value::as_object) else {
            return rest(self);
        };
        let ctes = list_field(with, "ctes");
        let recursive = bool_field(with, "recursive");
        let names: Vec<String> = ctes
            .iter()
            .filter_map(|c| fields_of(c, "CommonTableExpr"))
            .map(|c| str_field(c, "ctename").to_owned())
            .collect();
        let n = names.len();
        self.ctes.push(CteFrame {
            names,
            visible: if recursive { n } else { 0 },
        });
        let mut result = Ok(());
        for (i, cte) in ctes.iter().enumerate() {
            if let Some(frame) = self.ctes.last_mut() {
                frame.visible = if recursive { n } else { i };
            }
            result = self.walk(cte, depth + 1);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            if let Some(frame) = self.ctes.last_mut() {
                frame.visible = n;
            }
            result = rest(self);
        }
        self.ctes.pop();
        result
    }

    /// The target relation of INSERT/UPDATE/DELETE/MERGE: always a table.
    fn write_target(&mut self, f: &Obj, key: &str) {
        match f.get(key).and_then(|v| fields_of(v, "RangeVar")) {
            Some(rv) if is_range_var(rv) => self.range_var(rv, Access::Write),
            _ => self.bump(
                StatementClass::Unknown,
                Some("write target is not a plain table".into()),
            ),
        }
    }

    fn node(&mut self, ty: &str, f: &Obj, depth: usize) -> Result<(), AnalyzeError> {
        use StatementClass::*;
        match ty {
            "RangeVar" => {
                self.range_var(f, Access::Read);
                return Ok(());
            }
            "FuncCall" => self.func_call(f),
            "AExpr" => {
                use pg_query::protobuf::AExprKind as K;
                let between = [
                    K::AexprBetween,
                    K::AexprNotBetween,
                    K::AexprBetweenSym,
                    K::AexprNotBetweenSym,
                ];
                if between.iter().any(|k| enum_is(f, "kind", *k)) {
                    // `a BETWEEN x AND y` is `a >= x AND a <= y`, each
                    // operator resolved through the path like any other.
                    for op in [">=", "<="] {
                        self.add_operator_parts(&[op.to_owned()]);
                    }
                } else {
                    // Operators, IN (=, <>), LIKE/ILIKE/SIMILAR (~~, ~~*,
                    // ~), NULLIF and IS DISTINCT FROM (=): all resolved by
                    // name through the path.
                    self.add_operator(list_field(f, "name"));
                }
            }
            "AlterTableCmd" => {
                use pg_query::protobuf::AlterTableType as T;
                // Giving a relation away, or turning off what guards its
                // rows (row security, triggers, rules), changes who may do
                // what: as privileged as ALTER ... OWNER of other objects.
                let guarded = [
                    T::AtChangeOwner,
                    T::AtDisableRowSecurity,
                    T::AtNoForceRowSecurity,
                    T::AtDisableTrig,
                    T::AtDisableTrigAll,
                    T::AtDisableTrigUser,
                    T::AtEnableAlwaysTrig,
                    T::AtEnableReplicaTrig,
                    T::AtDisableRule,
                    T::AtEnableAlwaysRule,
                    T::AtEnableReplicaRule,
                ];
                if guarded.iter().any(|t| enum_is(f, "subtype", *t)) {
                    self.bump(
                        Privileged,
                        Some(
                            "changes the owner, row security, triggers or rules of a relation"
                                .into(),
                        ),
                    );
                }
            }
            "JsonObjectConstructor"
            | "JsonArrayConstructor"
            | "JsonArrayQueryConstructor"
            | "JsonObjectAgg"
            | "JsonArrayAgg"
            | "JsonParseExpr"
            | "JsonScalarExpr"
            | "JsonSerializeExpr"
            | "JsonFuncExpr"
            | "JsonTable"
            | "MergeSupportFunc" => {
                // Syntax of PostgreSQL 16 and later (the parser is newer
                // than the server): PostgreSQL 15 reads `json_array(x)`,
                // `json_scalar(x)`, `merge_action()`... as calls of
                // functions of those names, resolved through the path (a
                // user's function, when one exists). A call of a function
                // off the safe list, as the server would make it.
                self.push_function(FuncRef {
                    schema: None,
                    name: pg16_function_name(ty, f).to_owned(),
                    safe: false,
                });
            }
            "JsonIsPredicate" => self.bump(
                Unknown,
                Some("IS JSON is syntax PostgreSQL 15 does not read".into()),
            ),
            "SortBy" => {
                // ORDER BY x USING op.
                self.add_operator(list_field(f, "use_op"));
            }
            "SubLink" => self.add_operator(list_field(f, "oper_name")),
            "RangeTableSample" => {
                // TABLESAMPLE method(...) calls the method's handler.
                self.add_function(list_field(f, "method"));
            }
            "SelectStmt" => {
                self.set_command("SELECT");
                if !list_field(f, "locking_clause").is_empty() {
                    self.bump(Write, Some("SELECT ... FOR UPDATE/SHARE locks rows".into()));
                }
                if let Some(into) = f.get("into_clause").and_then(Value::as_object) {
                    self.bump(Ddl, Some("SELECT ... INTO creates a table".into()));
                    if let Some(rel) = into.get("rel").and_then(Value::as_object) {
                        self.range_var(rel, Access::Write);
                    }
                }
                return self.with_scope(f, depth, |w| {
                    w.walk_fields(f, depth, &["with_clause", "into_clause"])
                });
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                let cmd = match ty {
                    "InsertStmt" => "INSERT",
                    "UpdateStmt" => "UPDATE",
                    "DeleteStmt" => "DELETE",
                    _ => "MERGE",
                };
                self.set_command(cmd);
                self.bump(Write, None);
                return self.with_scope(f, depth, |w| {
                    w.write_target(f, "relation");
                    w.walk_fields(f, depth, &["with_clause", "relation"])
                });
            }
            "CopyStmt" => {
                self.set_command("COPY");
                let from = bool_field(f, "is_from");
                let file = !str_field(f, "filename").is_empty();
                if bool_field(f, "is_program") {
                    self.bump(Privileged, Some("COPY with a program".into()));
                } else if file {
                    let dir = if from { "from" } else { "to" };
                    self.bump(Privileged, Some(format!("COPY {dir} a server file")));
                } else if from {
                    self.bump(Write, None);
                }
                if let Some(rel) = f.get("relation").and_then(Value::as_object) {
                    self.statistics_relation(
                        str_field(rel, "schemaname"),
                        str_field(rel, "relname"),
                    );
                    let access = if from { Access::Write } else { Access::Read };
                    // COPY names a table, never a CTE.
                    self.add_table(
                        Some(str_field(rel, "schemaname"))
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                        str_field(rel, "relname").to_owned(),
                        access == Access::Write,
                    );
                }
                return self.walk_fields(f, depth, &["relation"]);
            }
            "VariableSetStmt" => self.variable_set(f),
            "VariableShowStmt" => self.set_command("SHOW"),
            "TransactionStmt" => self.transaction(f),
            "ConstraintsSetStmt" => {
                self.set_command("SET CONSTRAINTS");
                self.facts().transaction = true;
            }
            "DiscardStmt" => {
                self.set_command("DISCARD");
                if enum_is(f, "target", DiscardMode::DiscardAll) {
                    let facts = self.facts();
                    facts.deallocate = Some(None);
                    facts.cursor = Some(None);
                    facts.settings.push(SettingChange {
                        name: "all".into(),
                        value: None,
                        local: false,
                        computed: false,
                    });
                }
            }
            "DeallocateStmt" => {
                self.set_command("DEALLOCATE");
                let name = str_field(f, "name");
                self.facts().deallocate = Some(if bool_field(f, "isall") || name.is_empty() {
                    None
                } else {
                    Some(name.to_owned())
                });
            }
            "ExecuteStmt" => {
                self.set_command("EXECUTE");
                self.facts().execute = Some(str_field(f, "name").to_owned());
            }
            "PrepareStmt" => {
                // Nested (EXPLAIN cannot hold one; kept for completeness):
                // its body is walked like any statement.
                self.set_command("PREPARE");
            }
            "ExplainStmt" => {
                self.set_command("EXPLAIN");
                let runs = explain_runs(list_field(f, "options"));
                self.explains.push(runs);
                let r = self.walk_fields(f, depth, &[]);
                self.explains.pop();
                return r;
            }
            "CallStmt" => {
                self.set_command("CALL");
                self.bump(Write, None);
            }
            "ListenStmt" => self.set_command("LISTEN"),
            "UnlistenStmt" => self.set_command("UNLISTEN"),
            "NotifyStmt" => {
                self.set_command("NOTIFY");
                self.bump(Write, None);
            }
            "LockStmt" => {
                self.set_command("LOCK");
                self.bump(Write, None);
            }
            "DeclareCursorStmt" => {
                self.set_command("DECLARE");
                self.facts().cursor = Some(Some(str_field(f, "portalname").to_owned()));
                // CURSOR_OPT_HOLD of PostgreSQL's parsenodes.h.
                self.facts().cursor_hold = int_field(f, "options") & 0x0020 != 0;
            }
            "FetchStmt" => {
                let cmd = if bool_field(f, "ismove") {
                    "MOVE"
                } else {
                    "FETCH"
                };
                self.set_command(cmd);
                self.facts().cursor = Some(Some(str_field(f, "portalname").to_owned()));
            }
            "ClosePortalStmt" => {
                self.set_command("CLOSE");
                let name = str_field(f, "portalname");
                self.facts().cursor = Some((!name.is_empty()).then(|| name.to_owned()));
            }
            "CreateTableAsStmt" => {
                let cmd = match object_type(f, "objtype") {
                    Some(ObjectType::ObjectMatview) => "CREATE MATERIALIZED VIEW",
                    _ if bool_field(f, "is_select_into") => "SELECT INTO",
                    _ => "CREATE TABLE AS",
                };
                self.set_command(cmd);
                self.bump(Ddl, None);
                if let Some(rel) = f
                    .get("into")
                    .and_then(Value::as_object)
                    .and_then(|i| i.get("rel"))
                    .and_then(Value::as_object)
                {
                    self.range_var(rel, Access::Write);
                }
                return self.walk_fields(f, depth, &["into"]);
            }
            "DropStmt" => self.drop(f),
            "CommentStmt" => {
                self.set_command("COMMENT");
                self.bump(Ddl, None);
                self.named_object(f, "objtype", "object");
            }
            "GrantStmt" => {
                let cmd = if bool_field(f, "is_grant") {
                    "GRANT"
                } else {
                    "REVOKE"
                };
                self.set_command(cmd);
                self.bump(Privileged, None);
                if matches!(
                    object_type(f, "objtype"),
                    Some(ObjectType::ObjectTable | ObjectType::ObjectSequence)
                ) {
                    for o in list_field(f, "objects") {
                        if let Some(("RangeVar", rv)) = as_node(o) {
                            self.range_var(rv, Access::Write);
                        }
                    }
                    return self.walk_fields(f, depth, &["objects"]);
                }
            }
            "VacuumStmt" => {
                let cmd = if bool_field(f, "is_vacuumcmd") {
                    "VACUUM"
                } else {
                    "ANALYZE"
                };
                self.set_command(cmd);
                self.bump(Ddl, None);
            }
            other => {
                if let Some((command, class)) = utility_class(other) {
                    self.set_command(command);
                    let why = defines_code(other).then(|| {
                        "defines code that runs later, outside the analysis of the \
                         statements that invoke it"
                            .to_owned()
                    });
                    self.bump(class, why);
                    if class >= Ddl {
                        // The relation a DDL statement defines or alters.
                        for key in ["relation", "view", "table"] {
                            if let Some(rv) = f.get(key).and_then(Value::as_object)
                                && is_range_var(rv)
                            {
                                self.range_var(rv, Access::Write);
                            }
                        }
                        return self.walk_fields(f, depth, &["relation", "view", "table"]);
                    }
                } else if other.ends_with("Stmt") {
                    let command = other.trim_end_matches("Stmt").to_owned();
                    self.set_command(&command);
                    self.bump(
                        Unknown,
                        Some(format!(
                            "{command} statements are not understood by the policy"
                        )),
                    );
                }
            }
        }
        self.walk_fields(f, depth, &[])
    }

    fn variable_set(&mut self, f: &Obj) {
        use StatementClass::*;
        let name = str_field(f, "name").to_ascii_lowercase();
        let local = bool_field(f, "is_local");
        let args = list_field(f, "args");
        let kind = |k: VariableSetKind| enum_is(f, "kind", k);
        if kind(VariableSetKind::VarSetMulti) {
            // SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS
            // TRANSACTION ..., SET TRANSACTION SNAPSHOT.
            let facts = self.facts();
            facts.command = "SET TRANSACTION".into();
            facts.transaction = true;
            if transaction_options_read_write(args) {
                facts.read_write = true;
            }
            return;
        }
        if kind(VariableSetKind::VarResetAll) {
            self.set_command("RESET");
            self.facts().settings.push(SettingChange {
                name: "all".into(),
                value: None,
                local: false,
                computed: false,
            });
            return;
        }
        if kind(VariableSetKind::VarSetCurrent) {
            // `SET x FROM CURRENT` keeps the current value.
            self.set_command("SET");
            return;
        }
        let reset = kind(VariableSetKind::VarReset);
        self.set_command(if reset { "RESET" } else { "SET" });
        let value = if reset || kind(VariableSetKind::VarSetDefault) {
            None
        } else if kind(VariableSetKind::VarSetValue) {
            let items: Option<Vec<String>> = args.iter().map(setting_item).collect();
            match items {
                Some(items) => Some(
                    items
                        .iter()
                        .map(|i| quote_list_value(&name, i))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                None => {
                    self.bump(Unknown, Some(format!("SET {name} value is not understood")));
                    return;
                }
            }
        } else {
            self.bump(Unknown, Some("SET form is not understood".into()));
            return;
        };
        if value.is_some() && matches!(name.as_str(), "role" | "session_authorization") {
            let what = if name == "role" {
                "SET ROLE"
            } else {
                "SET SESSION AUTHORIZATION"
            };
            self.bump(Privileged, Some(what.into()));
        }
        self.facts().settings.push(SettingChange {
            name,
            value,
            local,
            computed: false,
        });
    }

    fn transaction(&mut self, f: &Obj) {
        use TransactionStmtKind as K;
        let kind = i32::try_from(int_field(f, "kind"))
            .ok()
            .and_then(|k| K::try_from(k).ok());
        let command = match kind {
            Some(K::TransStmtBegin) => "BEGIN",
            Some(K::TransStmtStart) => "START TRANSACTION",
            Some(K::TransStmtCommit) => "COMMIT",
            Some(K::TransStmtRollback) => "ROLLBACK",
            Some(K::TransStmtSavepoint) => "SAVEPOINT",
            Some(K::TransStmtRelease) => "RELEASE",
            Some(K::TransStmtRollbackTo) => "ROLLBACK TO SAVEPOINT",
            Some(K::TransStmtPrepare) => "PREPARE TRANSACTION",
            Some(K::TransStmtCommitPrepared) => "COMMIT PREPARED",
            Some(K::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
            _ => "TRANSACTION",
        };
        self.set_command(command);
        self.facts().transaction = true;
        if matches!(
            kind,
            Some(K::TransStmtCommitPrepared | K::TransStmtRollbackPrepared)
        ) {
            self.bump(
                StatementClass::Privileged,
                Some(format!("{command} ends a transaction of another session")),
            );
        }
        if transaction_options_read_write(list_field(f, "options")) {
            self.facts().read_write = true;
        }
    }

    fn drop(&mut self, f: &Obj) {
        use StatementClass::*;
        let ty = object_type(f, "remove_type");
        let what = ty.map_or("OBJECT", object_type_words);
        self.set_command(&format!("DROP {what}"));
        match ty {
            Some(
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectIndex
                | ObjectType::ObjectSequence
                | ObjectType::ObjectForeignTable,
            ) => {
                self.bump(Ddl, None);
                for o in list_field(f, "objects") {
                    let parts = match as_node(o) {
                        Some(("List", l)) => name_list(list_field(l, "items")),
                        _ => None,
                    };
                    match parts {
                        Some(p) => self.add_table_names(&p, true),
                        None => self.bump(Unknown, Some("DROP target is not understood".into())),
                    }
                }
            }
            Some(t) if privileged_object(t) => self.bump(Privileged, None),
            _ => self.bump(Ddl, None),
        }
    }

    /// `COMMENT ON`/`SECURITY LABEL ON` object: a relation or a column of one.
    fn named_object(&mut self, f: &Obj, type_key: &str, object_key: &str) {
        let ty = object_type(f, type_key);
        let parts = f.get(object_key).and_then(|o| match as_node(o) {
            Some(("List", l)) => name_list(list_field(l, "items")),
            _ => None,
        });
        let Some(mut parts) = parts else { return };
        match ty {
            Some(
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectSequence
                | ObjectType::ObjectIndex
                | ObjectType::ObjectForeignTable,
            ) => self.add_table_names(&parts, true),
            Some(ObjectType::ObjectColumn) => {
                parts.pop();
                if !parts.is_empty() {
                    self.add_table_names(&parts, true);
                }
            }
            _ => {}
        }
    }
}

/// `BEGIN`/`SET TRANSACTION` options that ask for read-write.
fn transaction_options_read_write(options: &[Value]) -> bool {
    options.iter().any(|o| {
        let Some(("DefElem", d)) = as_node(o) else {
            return false;
        };
        str_field(d, "defname") == "transaction_read_only"
            && d.get("arg")
                .and_then(const_text)
                .and_then(|v| crate::policy::settings::parse_bool(&v))
                != Some(true)
    })
}

/// Whether EXPLAIN's options run the statement: `ANALYZE` alone or with
/// any argument but a plain false is taken as yes.
fn explain_runs(options: &[Value]) -> bool {
    options.iter().any(|o| {
        let Some(("DefElem", d)) = as_node(o) else {
            return false;
        };
        let name = str_field(d, "defname");
        if name != "analyze" && name != "analyse" {
            return false;
        }
        match d.get("arg").filter(|a| !a.is_null()) {
            None => true,
            Some(arg) => match const_text(arg) {
                Some(text) => crate::policy::settings::parse_bool(&text) != Some(false),
                None => true,
            },
        }
    })
}

/// One SET value item as PostgreSQL stores it.
fn setting_item(v: &Value) -> Option<String> {
    if let Some(t) = const_text(v) {
        return Some(t);
    }
    // SET TIME ZONE INTERVAL '...' and typed literals: the literal's text.
    if let Some(("TypeCast", f)) = as_node(v) {
        return f.get("arg").and_then(const_text);
    }
    None
}

/// List items of GUC_LIST_QUOTE parameters are stored quoted when needed.
fn quote_list_value(name: &str, item: &str) -> String {
    if list_quoted(name) {
        quote_ident(item)
    } else {
        item.to_owned()
    }
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
