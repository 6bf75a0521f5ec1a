//! The SQL policy engine of the PostgreSQL proxy: a pure module (no I/O).
//!
//! - [`model`]: the `[policy.NAME]` TOML model.
//! - [`sql`]: classification of query texts on PostgreSQL's own parse tree
//!   (`pg_query`) into [`Analysis`] (classes, tables, functions and
//!   operators, settings, read-write, PREPARE/EXECUTE).
//! - [`columns`]: where each reference to a masked column stands (bare
//!   output, condition, anything else), for column masking that holds
//!   however the column is used.
//! - [`rules`]: the compiled [`Policy`] and its [`Verdict`]s.
//! - [`settings`]: which session settings may change (tokenisation safety).
//! - [`allowlist`]: request fingerprints and allow-lists learned from
//!   traffic.
//! - [`http`]: HTTP rules (methods, paths, query, headers, body size) of the
//!   same tables, compiled into an [`HttpPolicy`].
//!
//! The proxy's flow for a Query (or Parse) message: the session's
//! [`sql::session::SqlSession`] answers from its cache by statement shape,
//! or the text is analysed and decided with `policy.decide(&analysis,
//! session.context())`; an `Err` analysis or a non-`Allow` verdict is refused
//! with SQLSTATE 42501 and the verdict's reason (`Approve`: "requires
//! approval", naming the rule) and never forwarded; an empty analysis gets
//! EmptyQueryResponse. After the server accepted the statements the proxy
//! applies their effects to the session ([`sql::session::SqlSession::apply`],
//! which keeps the [`SessionContext`]): `search_path` changes
//! (see [`sql::parse_search_path`]), PREPARE (with
//! [`Policy::decide_prepared`]) and Parse of a named statement record the
//! verdict in [`SessionContext::prepared`], DEALLOCATE / DISCARD ALL /
//! Close forget it. Everything is fail-closed: see [`sql`] and [`rules`]
//! for the exact semantics.

pub mod allowlist;
pub mod columns;
pub mod glob;
pub mod http;
pub mod model;
pub mod mysql;
pub mod rules;
pub mod settings;
pub mod sql;

pub use http::{HttpPolicy, HttpRequestFacts, HttpVerdict};
pub use model::{DefaultAction, PathCase, PolicyConfig, RuleAction, RuleConfig, StatementClass};
pub use rules::{
    Action, Policy, PolicyProblem, PreparedStatements, RuleRef, SessionContext, Verdict,
};
pub use settings::{check_setting, parse_options};
pub use sql::{Analysis, AnalyzeError, FuncRef, SettingChange, StatementFacts, TableRef, analyze};

#[cfg(test)]
mod corpus;
