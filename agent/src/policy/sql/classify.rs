//! What kinds of statements, objects, functions and relations mean for a
//! statement's class: utility statements by node type, privileged object
//! types, the built-in safe function and operator lists, statistics and
//! system relations, functions that write.

use pg_query::protobuf::ObjectType;

use super::{Obj, StatementClass, enum_is};

/// Objects whose creation or removal escapes the account's tables.
pub(super) fn privileged_object(t: ObjectType) -> bool {
    matches!(
        t,
        ObjectType::ObjectDatabase
            | ObjectType::ObjectRole
            | ObjectType::ObjectExtension
            | ObjectType::ObjectFdw
            | ObjectType::ObjectForeignServer
            | ObjectType::ObjectUserMapping
            | ObjectType::ObjectEventTrigger
            | ObjectType::ObjectLanguage
            | ObjectType::ObjectPublication
            | ObjectType::ObjectPublicationNamespace
            | ObjectType::ObjectPublicationRel
            | ObjectType::ObjectSubscription
            | ObjectType::ObjectTablespace
    )
}

/// `TABLE`, `MATERIALIZED VIEW`... for a command name.
pub(super) fn object_type_words(t: ObjectType) -> &'static str {
    let name = t.as_str_name();
    OBJECT_WORDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("OBJECT", |(_, w)| w)
}

const OBJECT_WORDS: &[(&str, &str)] = &[
    ("OBJECT_TABLE", "TABLE"),
    ("OBJECT_VIEW", "VIEW"),
    ("OBJECT_MATVIEW", "MATERIALIZED VIEW"),
    ("OBJECT_INDEX", "INDEX"),
    ("OBJECT_SEQUENCE", "SEQUENCE"),
    ("OBJECT_FOREIGN_TABLE", "FOREIGN TABLE"),
    ("OBJECT_SCHEMA", "SCHEMA"),
    ("OBJECT_TYPE", "TYPE"),
    ("OBJECT_DOMAIN", "DOMAIN"),
    ("OBJECT_FUNCTION", "FUNCTION"),
    ("OBJECT_PROCEDURE", "PROCEDURE"),
    ("OBJECT_ROUTINE", "ROUTINE"),
    ("OBJECT_AGGREGATE", "AGGREGATE"),
    ("OBJECT_OPERATOR", "OPERATOR"),
    ("OBJECT_TRIGGER", "TRIGGER"),
    ("OBJECT_RULE", "RULE"),
    ("OBJECT_POLICY", "POLICY"),
    ("OBJECT_COLLATION", "COLLATION"),
    ("OBJECT_CONVERSION", "CONVERSION"),
    ("OBJECT_CAST", "CAST"),
    ("OBJECT_STATISTIC_EXT", "STATISTICS"),
    ("OBJECT_EXTENSION", "EXTENSION"),
    ("OBJECT_DATABASE", "DATABASE"),
    ("OBJECT_ROLE", "ROLE"),
    ("OBJECT_TABLESPACE", "TABLESPACE"),
    ("OBJECT_LANGUAGE", "LANGUAGE"),
    ("OBJECT_PUBLICATION", "PUBLICATION"),
    ("OBJECT_SUBSCRIPTION", "SUBSCRIPTION"),
    ("OBJECT_FOREIGN_SERVER", "SERVER"),
    ("OBJECT_FDW", "FOREIGN DATA WRAPPER"),
    ("OBJECT_EVENT_TRIGGER", "EVENT TRIGGER"),
    ("OBJECT_TSCONFIGURATION", "TEXT SEARCH CONFIGURATION"),
    ("OBJECT_TSDICTIONARY", "TEXT SEARCH DICTIONARY"),
    ("OBJECT_TSPARSER", "TEXT SEARCH PARSER"),
    ("OBJECT_TSTEMPLATE", "TEXT SEARCH TEMPLATE"),
    ("OBJECT_OPCLASS", "OPERATOR CLASS"),
    ("OBJECT_OPFAMILY", "OPERATOR FAMILY"),
    ("OBJECT_ACCESS_METHOD", "ACCESS METHOD"),
    ("OBJECT_TRANSFORM", "TRANSFORM"),
];

/// Statements that define code the server runs later on its own: functions
/// and procedures (their bodies are strings or bodies analysed only once),
/// triggers, rules and row-security policies (run by other statements),
/// operators, casts, aggregates, conversions, transforms, operator classes
/// and access methods (invoked implicitly). What such code does is outside
/// the analysis of the statements that later reach it, so defining or
/// altering it is `privileged` whatever the policy allows for `ddl`.
pub(super) fn defines_code(ty: &str) -> bool {
    matches!(
        ty,
        "CreateFunctionStmt"
            | "AlterFunctionStmt"
            | "DefineStmt"
            | "CreateOpClassStmt"
            | "CreateOpFamilyStmt"
            | "AlterOpFamilyStmt"
            | "AlterOperatorStmt"
            | "CreateTrigStmt"
            | "RuleStmt"
            | "CreatePolicyStmt"
            | "AlterPolicyStmt"
            | "CreateConversionStmt"
            | "CreateCastStmt"
            | "CreateTransformStmt"
            | "CreateAmStmt"
    )
}

/// Command words and class of the utility statements not handled one by
/// one in the walk. A statement type missing here is `unknown`; the ones
/// that define code ([`defines_code`]) are `privileged`.
pub(super) fn utility_class(ty: &str) -> Option<(&'static str, StatementClass)> {
    use StatementClass::*;
    Some(match ty {
        // Schema changes and maintenance.
        "CreateStmt" => ("CREATE TABLE", Ddl),
        "ViewStmt" => ("CREATE VIEW", Ddl),
        "AlterTableStmt" => ("ALTER TABLE", Ddl),
        "TruncateStmt" => ("TRUNCATE", Ddl),
        "IndexStmt" => ("CREATE INDEX", Ddl),
        "CreateSchemaStmt" => ("CREATE SCHEMA", Ddl),
        "CreateSeqStmt" => ("CREATE SEQUENCE", Ddl),
        "AlterSeqStmt" => ("ALTER SEQUENCE", Ddl),
        "CreateFunctionStmt" => ("CREATE FUNCTION", Privileged),
        "AlterFunctionStmt" => ("ALTER FUNCTION", Privileged),
        "CreateDomainStmt" => ("CREATE DOMAIN", Ddl),
        "AlterDomainStmt" => ("ALTER DOMAIN", Ddl),
        "CompositeTypeStmt" => ("CREATE TYPE", Ddl),
        "CreateEnumStmt" => ("CREATE TYPE", Ddl),
        "CreateRangeStmt" => ("CREATE TYPE", Ddl),
        "AlterEnumStmt" => ("ALTER TYPE", Ddl),
        "AlterTypeStmt" => ("ALTER TYPE", Ddl),
        "DefineStmt" => ("CREATE", Privileged),
        "CreateOpClassStmt" => ("CREATE OPERATOR CLASS", Privileged),
        "CreateOpFamilyStmt" => ("CREATE OPERATOR FAMILY", Privileged),
        "AlterOpFamilyStmt" => ("ALTER OPERATOR FAMILY", Privileged),
        "AlterOperatorStmt" => ("ALTER OPERATOR", Privileged),
        "CreateTrigStmt" => ("CREATE TRIGGER", Privileged),
        "RuleStmt" => ("CREATE RULE", Privileged),
        "CreatePolicyStmt" => ("CREATE POLICY", Privileged),
        "AlterPolicyStmt" => ("ALTER POLICY", Privileged),
        "RenameStmt" => ("ALTER", Ddl),
        "AlterObjectSchemaStmt" => ("ALTER", Ddl),
        "AlterObjectDependsStmt" => ("ALTER", Ddl),
        "CreateStatsStmt" => ("CREATE STATISTICS", Ddl),
        "AlterStatsStmt" => ("ALTER STATISTICS", Ddl),
        "AlterTsDictionaryStmt" => ("ALTER TEXT SEARCH DICTIONARY", Ddl),
        "AlterTsConfigurationStmt" => ("ALTER TEXT SEARCH CONFIGURATION", Ddl),
        "CreateConversionStmt" => ("CREATE CONVERSION", Privileged),
        "CreateCastStmt" => ("CREATE CAST", Privileged),
        "CreateTransformStmt" => ("CREATE TRANSFORM", Privileged),
        "CreateAmStmt" => ("CREATE ACCESS METHOD", Privileged),
        "AlterCollationStmt" => ("ALTER COLLATION", Ddl),
        "AlterTableMoveAllStmt" => ("ALTER TABLE", Ddl),
        "ReplicaIdentityStmt" => ("ALTER TABLE", Ddl),
        // `RETURN expr` of a SQL-standard function body (inside CREATE
        // FUNCTION, which is DDL): nothing of its own.
        "ReturnStmt" => ("RETURN", Read),
        "ReindexStmt" => ("REINDEX", Ddl),
        "ClusterStmt" => ("CLUSTER", Ddl),
        "RefreshMatViewStmt" => ("REFRESH MATERIALIZED VIEW", Ddl),
        "AlterDefaultPrivilegesStmt" => ("ALTER DEFAULT PRIVILEGES", Privileged),
        // Roles, the database, the server, code and the outside world.
        "GrantRoleStmt" => ("GRANT", Privileged),
        "CreateRoleStmt" => ("CREATE ROLE", Privileged),
        "AlterRoleStmt" => ("ALTER ROLE", Privileged),
        "AlterRoleSetStmt" => ("ALTER ROLE", Privileged),
        "DropRoleStmt" => ("DROP ROLE", Privileged),
        "CreateExtensionStmt" => ("CREATE EXTENSION", Privileged),
        "AlterExtensionStmt" => ("ALTER EXTENSION", Privileged),
        "AlterExtensionContentsStmt" => ("ALTER EXTENSION", Privileged),
        "CreateFdwStmt" => ("CREATE FOREIGN DATA WRAPPER", Privileged),
        "AlterFdwStmt" => ("ALTER FOREIGN DATA WRAPPER", Privileged),
        "CreateForeignServerStmt" => ("CREATE SERVER", Privileged),
        "AlterForeignServerStmt" => ("ALTER SERVER", Privileged),
        "CreateForeignTableStmt" => ("CREATE FOREIGN TABLE", Privileged),
        "CreateUserMappingStmt" => ("CREATE USER MAPPING", Privileged),
        "AlterUserMappingStmt" => ("ALTER USER MAPPING", Privileged),
        "DropUserMappingStmt" => ("DROP USER MAPPING", Privileged),
        "ImportForeignSchemaStmt" => ("IMPORT FOREIGN SCHEMA", Privileged),
        "CreatedbStmt" => ("CREATE DATABASE", Privileged),
        "AlterDatabaseStmt" => ("ALTER DATABASE", Privileged),
        "AlterDatabaseSetStmt" => ("ALTER DATABASE", Privileged),
        "AlterDatabaseRefreshCollStmt" => ("ALTER DATABASE", Privileged),
        "DropdbStmt" => ("DROP DATABASE", Privileged),
        "LoadStmt" => ("LOAD", Privileged),
        "DoStmt" => ("DO", Privileged),
        "CheckPointStmt" => ("CHECKPOINT", Privileged),
        "AlterSystemStmt" => ("ALTER SYSTEM", Privileged),
        "CreatePLangStmt" => ("CREATE LANGUAGE", Privileged),
        "CreateEventTrigStmt" => ("CREATE EVENT TRIGGER", Privileged),
        "AlterEventTrigStmt" => ("ALTER EVENT TRIGGER", Privileged),
        "CreateTableSpaceStmt" => ("CREATE TABLESPACE", Privileged),
        "DropTableSpaceStmt" => ("DROP TABLESPACE", Privileged),
        "AlterTableSpaceOptionsStmt" => ("ALTER TABLESPACE", Privileged),
        "ReassignOwnedStmt" => ("REASSIGN OWNED", Privileged),
        "DropOwnedStmt" => ("DROP OWNED", Privileged),
        "CreateSubscriptionStmt" => ("CREATE SUBSCRIPTION", Privileged),
        "AlterSubscriptionStmt" => ("ALTER SUBSCRIPTION", Privileged),
        "DropSubscriptionStmt" => ("DROP SUBSCRIPTION", Privileged),
        "CreatePublicationStmt" => ("CREATE PUBLICATION", Privileged),
        "AlterPublicationStmt" => ("ALTER PUBLICATION", Privileged),
        "SecLabelStmt" => ("SECURITY LABEL", Privileged),
        "AlterOwnerStmt" => ("ALTER OWNER", Privileged),
        "AlterSystemSetStmt" => ("ALTER SYSTEM", Privileged),
        _ => return None,
    })
}

/// Built-in functions a statement may call without the policy naming
/// them: the functions of PostgreSQL 15's `pg_catalog` that neither run
/// SQL given as text nor touch server files, large objects, settings,
/// locks, other sessions, replication or backups, and are not restricted
/// to superusers by default. Generated from the server's `pg_proc` by
/// `safe_functions.sql` (a test checks the list against the server).
static SAFE_FUNCTIONS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| list_file(include_str!("../safe_functions.txt")));

/// Operators of PostgreSQL 15's `pg_catalog` (`safe_operators.sql`).
static SAFE_OPERATORS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| list_file(include_str!("../safe_operators.txt")));

fn list_file(text: &'static str) -> std::collections::HashSet<&'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether an unqualified (or `pg_catalog`) function name is on the safe
/// list. Unqualified names resolve through `pg_catalog` first (it is
/// searched before the path unless the path names it later); a function
/// of the same name in a schema of the path wins only with a better
/// matching signature, which is why the schemas of the path must not be
/// writable by others (PostgreSQL 15's default for `public`).
pub fn is_safe_builtin(name: &str) -> bool {
    SAFE_FUNCTIONS.contains(name)
}

/// Whether an operator symbol is a built-in one.
pub fn is_safe_operator(op: &str) -> bool {
    SAFE_OPERATORS.contains(op)
}

/// Catalog relations that show other tables' values (column statistics),
/// other sessions (activity, query texts, locks, replication, SSL) or
/// server internals (memory, configuration files): every `pg_stat_*` and
/// `pg_statio_*` view (they call functions off the safe list), the
/// statistics tables and views, and those below. Reading them is
/// `privileged`. `pg_statistic_ext` itself (definitions, read by psql's
/// `\d`) is not one of them.
const STATISTICS_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_locks",
    "pg_replication_slots",
    "pg_replication_origin_status",
    "pg_prepared_xacts",
    "pg_backend_memory_contexts",
    "pg_shmem_allocations",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
];

/// See [`STATISTICS_RELATIONS`].
pub(super) fn is_statistics_relation(name: &str) -> bool {
    name.starts_with("pg_stat_")
        || name.starts_with("pg_statio_")
        || STATISTICS_RELATIONS.contains(&name)
}

/// The function PostgreSQL 15 calls for a node of SQL/JSON (or MERGE)
/// syntax it does not have.
pub(super) fn pg16_function_name(ty: &str, f: &Obj) -> &'static str {
    use pg_query::protobuf::JsonExprOp as Op;
    match ty {
        "JsonObjectConstructor" => "json_object",
        "JsonArrayConstructor" | "JsonArrayQueryConstructor" => "json_array",
        "JsonObjectAgg" => "json_objectagg",
        "JsonArrayAgg" => "json_arrayagg",
        "JsonParseExpr" => "json",
        "JsonScalarExpr" => "json_scalar",
        "JsonSerializeExpr" => "json_serialize",
        "JsonFuncExpr" if enum_is(f, "op", Op::JsonExistsOp) => "json_exists",
        "JsonFuncExpr" if enum_is(f, "op", Op::JsonValueOp) => "json_value",
        "JsonFuncExpr" => "json_query",
        "JsonTable" => "json_table",
        _ => "merge_action",
    }
}

/// A system relation: one in `pg_catalog` or `information_schema`, or an
/// unqualified `pg_*` name (`pg_catalog` is searched before the path
/// unless the path names it later, so such a name is the catalog's when
/// the catalog has it; a user table of that name is taken for one too).
pub(super) fn is_system_relation(schema: Option<&str>, name: &str) -> bool {
    match schema {
        Some(s) => s == "pg_catalog" || s == "information_schema",
        None => name.starts_with("pg_"),
    }
}

/// Functions that change data though called from a SELECT.
pub(super) const WRITING_FUNCTIONS: &[&str] = &["nextval", "setval", "pg_notify"];
