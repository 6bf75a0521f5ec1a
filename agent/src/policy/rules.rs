//! The compiled policy and the decision.
//!
//! [`Policy::compile`] validates a [`PolicyConfig`] (every problem at once)
//! and normalises its names; [`Policy::decide`] turns an [`Analysis`] and the
//! session's state into a [`Verdict`].
//!
//! Per statement, in order:
//! 1. Settings: a change [`check_change`] refuses, or any `search_path`
//!    change when the policy forces one, is `Block` (no rule can allow it).
//! 2. `EXECUTE name`: the verdict remembered for `name` when it was
//!    prepared (unknown name: `Deny`), combined with the EXECUTE's own
//!    arguments when they reference tables or call functions.
//! 3. Rules. A rule matches when all its non-empty criteria match:
//!    - `classes` contains the statement's class. A rule without classes
//!      never matches an `unknown` statement: only a rule naming `unknown`
//!      can.
//!    - `tables`: for `block`/`approve`, ANY referenced table matches an
//!      entry, compared case-insensitively (so `"Secrets"` is caught by
//!      `secrets`); for `allow`, the statement references at least one
//!      table and ALL of them match an entry exactly (PostgreSQL's
//!      normalisation: unquoted entries are lower-cased, quoted ones kept).
//!    - `functions`: the same, with `*` globs on the normalised name
//!      (`pg_catalog.` dropped from calls and entries).
//!
//!    An entry without schema matches the name in any schema. A qualified
//!    entry matches a qualified reference with the same schema; for an
//!    unqualified reference it matches, for `block`/`approve`, when the
//!    entry's schema is on the effective search path (or `pg_catalog`,
//!    searched implicitly, or the path is empty: unknown resolution), and
//!    for `allow` only when EVERY schema on the search path (plus
//!    `pg_catalog` for `pg_*` names) is covered by some entry.
//!    The effective search path is the policy's forced one, else the
//!    session's tracked one.
//! 4. Precedence: block > approve > allow > the policy's default.
//!
//! Over several statements the most restrictive verdict wins
//! (block > deny > approve > allow); its class is the most severe.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::glob::glob_match;
use super::model::{DefaultAction, PolicyConfig, RuleAction, StatementClass};
use super::settings::check_change;
use super::sql::{Analysis, AnalyzeError, FuncRef, StatementFacts, TableRef};

/// A configuration problem, keyed relative to the `[policy.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// e.g. `rules[2].functions[0]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// What to do with a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward it.
    Allow,
    /// Hold it for approval.
    Approve,
    /// Refused because nothing allows it (the default action).
    Deny,
    /// Refused by a rule or a built-in refusal.
    Block,
}

impl Action {
    /// Restrictiveness, for combining statements.
    fn rank(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Approve => 1,
            Action::Deny => 2,
            Action::Block => 3,
        }
    }

    /// Lower-case name for audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Block => "block",
        }
    }
}

/// The rule a verdict came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// Position in `rules`.
    pub index: usize,
    /// The rule's name, or `rules[N]`.
    pub label: String,
}

/// The decision on a query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// The deciding rule, if a rule decided.
    pub rule: Option<RuleRef>,
    /// Human text naming the rule or saying why.
    pub reason: String,
    /// The most severe class among the statements.
    pub class: StatementClass,
    /// Tables referenced, normalised (`schema.table` when qualified).
    pub tables: Vec<String>,
    /// Functions called, normalised.
    pub functions: Vec<String>,
}

impl Verdict {
    /// True when the statement may be forwarded now.
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }

    /// The verdict for a text that could not be analysed: refused.
    pub fn unparsable(err: &AnalyzeError) -> Verdict {
        Verdict {
            action: Action::Block,
            rule: None,
            reason: err.to_string(),
            class: StatementClass::Unknown,
            tables: Vec::new(),
            functions: Vec::new(),
        }
    }
}

/// Prepared statements of one session (SQL `PREPARE` and protocol-level
/// named statements share PostgreSQL's namespace): name → verdict of the
/// prepared statement, consulted by `EXECUTE` and by Bind/Execute.
#[derive(Debug, Clone)]
pub struct PreparedStatements {
    map: HashMap<String, Verdict>,
    limit: usize,
}

impl Default for PreparedStatements {
    fn default() -> Self {
        Self::new(PreparedStatements::DEFAULT_LIMIT)
    }
}

impl PreparedStatements {
    /// Default bound on remembered statements per session.
    pub const DEFAULT_LIMIT: usize = 10_000;

    /// An empty map holding at most `limit` statements.
    pub fn new(limit: usize) -> Self {
        PreparedStatements {
            map: HashMap::new(),
            limit,
        }
    }

    /// Remember `name`'s verdict (replacing an earlier one). `Err` when the
    /// session already holds `limit` statements: the proxy refuses the
    /// PREPARE/Parse.
    pub fn insert(&mut self, name: &str, verdict: Verdict) -> Result<(), String> {
        if !self.map.contains_key(name) && self.map.len() >= self.limit {
            return Err(format!(
                "too many prepared statements in this session (limit {})",
                self.limit
            ));
        }
        self.map.insert(name.to_string(), verdict);
        Ok(())
    }

    /// The verdict remembered for `name`.
    pub fn get(&self, name: &str) -> Option<&Verdict> {
        self.map.get(name)
    }

    /// Forget `name` (DEALLOCATE, Close).
    pub fn remove(&mut self, name: &str) -> Option<Verdict> {
        self.map.remove(name)
    }

    /// Forget everything (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What the policy needs to know about the session.
#[derive(Debug, Clone, Default)]
pub struct SessionContext {
    /// The tracked effective `search_path`, normalised, `"$user"` already
    /// resolved by the caller.
    pub search_path: Vec<String>,
    /// The session's prepared statements.
    pub prepared: PreparedStatements,
}

impl SessionContext {
    /// A context with this search path and no prepared statements.
    pub fn new(search_path: Vec<String>) -> Self {
        SessionContext {
            search_path,
            prepared: PreparedStatements::default(),
        }
    }
}

/// One part of a configured name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// Normalised text (unquoted → lower case).
    text: String,
    /// Quoted in the configuration: literal, no globbing.
    quoted: bool,
}

impl Part {
    /// Exact match (allow): PostgreSQL's name equality, `*` globs in
    /// unquoted parts.
    fn matches_exact(&self, value: &str) -> bool {
        if self.quoted {
            self.text == value
        } else {
            glob_match(&self.text, value)
        }
    }

    /// Loose match (block/approve): case-insensitive, globs everywhere.
    fn matches_loose(&self, value: &str) -> bool {
        glob_match(&self.text.to_lowercase(), &value.to_lowercase())
    }
}

/// A `tables` or `functions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    schema: Option<Part>,
    name: Part,
}

#[derive(Debug, Clone)]
struct Rule {
    index: usize,
    label: String,
    action: RuleAction,
    classes: Vec<StatementClass>,
    tables: Vec<NamePattern>,
    functions: Vec<NamePattern>,
}

/// A compiled policy: immutable, `Send + Sync`, share it in an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    name: String,
    version: u64,
    default: DefaultAction,
    rules: Vec<Rule>,
    search_path: SearchPathRule,
}

/// How a policy treats the session's `search_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SearchPathRule {
    /// The policy's own path, forced.
    Forced(Vec<String>),
    /// The server's default path, forced.
    ServerDefault,
    /// The workload's business (`manage_search_path = true`).
    Managed,
}

/// PostgreSQL's default `search_path`, forced when a policy names none.
const SERVER_DEFAULT_PATH: &[&str] = &["$user", "public"];

impl Policy {
    /// Validate and compile `[policy.NAME]`, reporting every problem.
    pub fn compile(name: &str, cfg: &PolicyConfig) -> Result<Policy, Vec<PolicyProblem>> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| {
            problems.push(PolicyProblem { key, message });
        };
        if name.trim().is_empty() {
            problem(String::new(), "policy name is empty".into());
        }
        let mut rules = Vec::new();
        let mut labels: HashMap<String, usize> = HashMap::new();
        for (i, rc) in cfg.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            if rc.is_http() {
                // HTTP rules are compiled by `HttpPolicy`; with SQL criteria
                // too the rule is refused there. They never match a statement.
                if rc.is_sql() {
                    problem(
                        key.clone(),
                        "rule mixes SQL criteria (classes, tables, functions) with HTTP criteria \
                         (methods, paths, query, headers, max_body_bytes)"
                            .into(),
                    );
                }
                continue;
            }
            if rc.classes.is_empty() && rc.tables.is_empty() && rc.functions.is_empty() {
                problem(
                    key.clone(),
                    format!(
                        "rule has no classes, tables or functions and would match every statement; set `default = \"{}\"` instead",
                        if rc.action == RuleAction::Allow {
                            "allow"
                        } else {
                            "deny"
                        }
                    ),
                );
            }
            let label = match &rc.name {
                Some(n) if n.trim().is_empty() => {
                    problem(format!("{key}.name"), "rule name is empty".into());
                    key.clone()
                }
                Some(n) => {
                    if let Some(prev) = labels.insert(n.clone(), i) {
                        problem(
                            format!("{key}.name"),
                            format!("rule name {n:?} is already used by rules[{prev}]"),
                        );
                    }
                    n.clone()
                }
                None => key.clone(),
            };
            let mut seen = Vec::new();
            for (j, c) in rc.classes.iter().enumerate() {
                if seen.contains(c) {
                    problem(
                        format!("{key}.classes[{j}]"),
                        format!("class {c} is listed twice"),
                    );
                }
                seen.push(*c);
            }
            let mut tables = Vec::new();
            for (j, t) in rc.tables.iter().enumerate() {
                match parse_pattern(t, false) {
                    Ok(p) => tables.push(p),
                    Err(m) => problem(format!("{key}.tables[{j}]"), m),
                }
            }
            let mut functions = Vec::new();
            for (j, f) in rc.functions.iter().enumerate() {
                match parse_pattern(f, true) {
                    Ok(p) => functions.push(p),
                    Err(m) => problem(format!("{key}.functions[{j}]"), m),
                }
            }
            rules.push(Rule {
                index: i,
                label,
                action: rc.action,
                classes: rc.classes.clone(),
                tables,
                functions,
            });
        }
        let search_path = match &cfg.search_path {
            None if cfg.manage_search_path => SearchPathRule::Managed,
            None => SearchPathRule::ServerDefault,
            Some(_) if cfg.manage_search_path => {
                problem(
                    "manage_search_path".into(),
                    "a policy that forces a search_path cannot also let the workload manage it"
                        .into(),
                );
                SearchPathRule::Managed
            }
            Some(entries) => {
                let mut out = Vec::new();
                for (j, e) in entries.iter().enumerate() {
                    let key = format!("search_path[{j}]");
                    if e.contains('$') {
                        problem(
                            key,
                            "\"$user\" cannot be used in a forced search_path; name the schema"
                                .into(),
                        );
                        continue;
                    }
                    match parse_parts(e) {
                        Ok(parts) if parts.len() == 1 && !parts[0].text.contains('*') => {
                            out.push(parts[0].text.clone())
                        }
                        Ok(_) => problem(key, format!("{e:?} is not a schema name")),
                        Err(m) => problem(key, m),
                    }
                }
                SearchPathRule::Forced(out)
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policy {
            name: name.to_string(),
            version: config_version(name, cfg),
            default: cfg.default,
            rules,
            search_path,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A hash of the name and configuration: changes when the rules do.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The search path the proxy sends at startup (the proxy then refuses
    /// a `search_path` startup parameter): the policy's, or the server's
    /// default; `None` when the workload manages its own.
    pub fn forced_search_path(&self) -> Option<Vec<String>> {
        match &self.search_path {
            SearchPathRule::Forced(p) => Some(p.clone()),
            SearchPathRule::ServerDefault => Some(
                SERVER_DEFAULT_PATH
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            SearchPathRule::Managed => None,
        }
    }

    /// The search path unqualified names resolve through: the forced one
    /// (the server's default as the session resolved it, `$user` being the
    /// grant's role), or none at all when the workload manages it (then
    /// nothing unqualified provably resolves to a schema).
    pub fn effective_search_path<'a>(&'a self, ctx: &'a SessionContext) -> &'a [String] {
        match &self.search_path {
            SearchPathRule::Forced(p) => p,
            SearchPathRule::ServerDefault => &ctx.search_path,
            SearchPathRule::Managed => &[],
        }
    }

    /// Decide on an analysed query text.
    pub fn decide(&self, analysis: &Analysis, ctx: &SessionContext) -> Verdict {
        let mut tables = Vec::new();
        let mut functions = Vec::new();
        let mut class = StatementClass::Read;
        let mut best: Option<Decision> = None;
        // The path cannot change within the text: changes are refused
        // unless the workload manages it, and then no path is trusted.
        let path = self.effective_search_path(ctx);
        for st in &analysis.statements {
            let st = &*self.effective(st);
            class = class.max(st.class);
            for t in &st.tables {
                let d = t.display();
                if !tables.contains(&d) {
                    tables.push(d);
                }
            }
            for f in &st.functions {
                let d = f.display();
                if !functions.contains(&d) {
                    functions.push(d);
                }
            }
            let d = self.decide_statement(st, ctx, path);
            if best
                .as_ref()
                .is_none_or(|b| d.action.rank() > b.action.rank())
            {
                best = Some(d);
            }
        }
        let best = best.unwrap_or(Decision {
            action: Action::Allow,
            rule: None,
            reason: "empty query".into(),
        });
        Verdict {
            action: best.action,
            rule: best.rule,
            reason: best.reason,
            class,
            tables,
            functions,
        }
    }

    /// For a `PREPARE name AS stmt`, the name and the verdict on `stmt`
    /// that `EXECUTE name` will use (the proxy stores it in
    /// [`SessionContext::prepared`] once the server accepted the PREPARE).
    pub fn decide_prepared(
        &self,
        facts: &StatementFacts,
        ctx: &SessionContext,
    ) -> Option<(String, Verdict)> {
        let (name, inner) = facts.prepare.as_ref()?;
        Some((name.clone(), self.decide(inner, ctx)))
    }

    /// The statement with its class raised to `privileged` when it calls a
    /// function or operator that is neither on the built-in safe list nor
    /// named by an allow rule (`functions = ["app.*"]`): what an unknown
    /// function does cannot be seen from the statement.
    fn effective<'a>(&self, st: &'a StatementFacts) -> std::borrow::Cow<'a, StatementFacts> {
        let untrusted: Vec<String> = st
            .functions
            .iter()
            .filter(|f| !f.safe && !self.trusted_function(f))
            .map(FuncRef::display)
            .collect();
        if untrusted.is_empty() {
            return std::borrow::Cow::Borrowed(st);
        }
        let mut st = st.clone();
        st.bump(
            StatementClass::Privileged,
            Some(format!(
                "calls {}, which is not a built-in safe function and not named by an allow rule",
                untrusted.join(", ")
            )),
        );
        std::borrow::Cow::Owned(st)
    }

    fn trusted_function(&self, f: &FuncRef) -> bool {
        self.rules
            .iter()
            .filter(|r| r.action == RuleAction::Allow)
            .any(|r| r.functions.iter().any(|p| function_matches_exact(p, f)))
    }

    fn decide_statement(
        &self,
        st: &StatementFacts,
        ctx: &SessionContext,
        path: &[String],
    ) -> Decision {
        for s in &st.settings {
            if let Err(reason) = check_change(&s.name, s.value.as_deref(), s.computed) {
                return Decision::block(format!("setting refused: {reason}"));
            }
            // RESET ALL and DISCARD ALL return to the startup value, which
            // the proxy set. A role change would change what `$user` and
            // the role's own settings resolve to.
            let changes_path = match s.name.as_str() {
                "search_path" | "?" => true,
                // RESET ROLE returns to the session's own role, which SET
                // ROLE (refused) is the only way to leave.
                "role" | "session_authorization" => s.value.is_some() || s.computed,
                _ => false,
            };
            if self.search_path != SearchPathRule::Managed && changes_path {
                let what = match s.name.as_str() {
                    "?" => "a setting named at run time".to_owned(),
                    n => format!("changing {n}"),
                };
                return Decision::block(format!(
                    "{what} is refused: search_path is fixed by policy {} \
                     (manage_search_path = true lets the workload change it)",
                    self.name
                ));
            }
        }
        let own = self.decide_rules(st, path);
        let Some(name) = &st.execute else {
            return own;
        };
        let remembered = match ctx.prepared.get(name) {
            Some(v) => Decision {
                action: v.action,
                rule: v.rule.clone(),
                reason: format!("prepared statement {name}: {}", v.reason),
            },
            None => {
                return Decision {
                    action: Action::Deny,
                    rule: None,
                    reason: format!("prepared statement {name} is unknown to the policy"),
                };
            }
        };
        let args_matter =
            st.class > StatementClass::Read || !st.tables.is_empty() || !st.functions.is_empty();
        if args_matter && own.action.rank() > remembered.action.rank() {
            own
        } else {
            remembered
        }
    }

    fn decide_rules(&self, st: &StatementFacts, path: &[String]) -> Decision {
        let mut found: [Option<(&Rule, String)>; 3] = [None, None, None];
        for rule in &self.rules {
            let slot = match rule.action {
                RuleAction::Block => 0,
                RuleAction::Approve => 1,
                RuleAction::Allow => 2,
            };
            if found[slot].is_some() {
                continue;
            }
            if let Some(what) = rule_matches(rule, st, path) {
                found[slot] = Some((rule, what));
            }
        }
        let rule_ref = |r: &Rule| RuleRef {
            index: r.index,
            label: r.label.clone(),
        };
        if let Some((r, what)) = &found[0] {
            return Decision {
                action: Action::Block,
                rule: Some(rule_ref(r)),
                reason: format!("{what} is blocked by {}", describe_rule(r)),
            };
        }
        if let Some((r, what)) = &found[1] {
            return Decision {
                action: Action::Approve,
                rule: Some(rule_ref(r)),
                reason: format!("{what} requires approval by {}", describe_rule(r)),
            };
        }
        if let Some((r, what)) = &found[2] {
            return Decision {
                action: Action::Allow,
                rule: Some(rule_ref(r)),
                reason: format!("{what} is allowed by {}", describe_rule(r)),
            };
        }
        let what = describe_statement(st);
        match self.default {
            DefaultAction::Deny => Decision {
                action: Action::Deny,
                rule: None,
                reason: format!("{what} is not allowed (default deny)"),
            },
            DefaultAction::Allow if st.class == StatementClass::Unknown => Decision {
                action: Action::Deny,
                rule: None,
                reason: format!(
                    "{what} is not allowed: only a rule naming class unknown can allow it"
                ),
            },
            DefaultAction::Allow => Decision {
                action: Action::Allow,
                rule: None,
                reason: format!("{what} is allowed (default allow)"),
            },
        }
    }
}

struct Decision {
    action: Action,
    rule: Option<RuleRef>,
    reason: String,
}

impl Decision {
    fn block(reason: String) -> Decision {
        Decision {
            action: Action::Block,
            rule: None,
            reason,
        }
    }
}

/// `rules[2] (block tables)` or `no-secrets (rules[1], block tables)`.
fn describe_rule(r: &Rule) -> String {
    let mut crit = Vec::new();
    if !r.classes.is_empty() {
        crit.push("classes");
    }
    if !r.tables.is_empty() {
        crit.push("tables");
    }
    if !r.functions.is_empty() {
        crit.push("functions");
    }
    let what = format!("{} {}", r.action.as_str(), crit.join("+"));
    let key = format!("rules[{}]", r.index);
    if r.label == key {
        format!("{key} ({what})")
    } else {
        format!("rule {} ({key}, {what})", r.label)
    }
}

fn describe_statement(st: &StatementFacts) -> String {
    let mut s = format!("statement class {} ({})", st.class, st.command);
    if let Some(note) = &st.note {
        s.push_str(&format!(": {note}"));
    }
    if !st.tables.is_empty() {
        let names: Vec<String> = st.tables.iter().take(3).map(TableRef::display).collect();
        let more = if st.tables.len() > 3 { ", ..." } else { "" };
        s.push_str(&format!(" on {}{more}", names.join(", ")));
    }
    s
}

/// `Some(description of what matched)` when every criterion of `rule`
/// matches `st`.
fn rule_matches(rule: &Rule, st: &StatementFacts, path: &[String]) -> Option<String> {
    let mut what = Vec::new();
    if rule.classes.is_empty() {
        // Only a rule naming `unknown` may allow what the classifier does
        // not understand; block and approve rules still apply to it.
        if st.class == StatementClass::Unknown && rule.action == RuleAction::Allow {
            return None;
        }
    } else if rule.classes.contains(&st.class) {
        what.push(format!("statement class {}", st.class));
    } else {
        return None;
    }
    let restrictive = rule.action != RuleAction::Allow;
    if !rule.tables.is_empty() {
        if restrictive {
            let hit = st
                .tables
                .iter()
                .find(|t| rule.tables.iter().any(|p| table_matches_loose(p, t)))?;
            what.push(format!("table {}", hit.display()));
        } else {
            if st.tables.is_empty()
                || !st
                    .tables
                    .iter()
                    .all(|t| table_allowed(&rule.tables, t, path))
            {
                return None;
            }
            let names: Vec<String> = st.tables.iter().map(TableRef::display).collect();
            what.push(format!("tables {}", names.join(", ")));
        }
    }
    if !rule.functions.is_empty() {
        if restrictive {
            let hit = st
                .functions
                .iter()
                .find(|f| rule.functions.iter().any(|p| function_matches_loose(p, f)))?;
            what.push(format!("function {}", hit.display()));
        } else {
            if st.functions.is_empty()
                || !st
                    .functions
                    .iter()
                    .all(|f| rule.functions.iter().any(|p| function_matches_exact(p, f)))
            {
                return None;
            }
            let names: Vec<String> = st.functions.iter().map(FuncRef::display).collect();
            what.push(format!("functions {}", names.join(", ")));
        }
    }
    Some(what.join(" on "))
}

fn table_matches_loose(p: &NamePattern, t: &TableRef) -> bool {
    if !p.name.matches_loose(&t.name) {
        return false;
    }
    let Some(ps) = &p.schema else {
        return true;
    };
    // An unqualified name matches a schema-qualified block entry whatever
    // the path: block is conservative (the path the server uses may not be
    // the one Warden believes).
    match &t.schema {
        Some(s) => ps.matches_loose(s),
        None => true,
    }
}

/// Whether every place an (unqualified) reference can resolve to is
/// covered by an entry of an allow rule.
fn table_allowed(patterns: &[NamePattern], t: &TableRef, path: &[String]) -> bool {
    let covers = |schema: &str| {
        patterns.iter().any(|p| {
            p.name.matches_exact(&t.name)
                && p.schema.as_ref().is_none_or(|s| s.matches_exact(schema))
        })
    };
    match &t.schema {
        Some(s) => covers(s),
        None => {
            if patterns
                .iter()
                .any(|p| p.schema.is_none() && p.name.matches_exact(&t.name))
            {
                return true;
            }
            if path.is_empty() {
                return false;
            }
            let catalog_ok = !t.name.starts_with("pg_") || covers("pg_catalog");
            catalog_ok && path.iter().all(|s| covers(s))
        }
    }
}

fn function_matches_loose(p: &NamePattern, f: &FuncRef) -> bool {
    if !p.name.matches_loose(&f.name) {
        return false;
    }
    match (&p.schema, &f.schema) {
        (None, _) | (Some(_), None) => true,
        (Some(ps), Some(s)) => ps.matches_loose(s),
    }
}

fn function_matches_exact(p: &NamePattern, f: &FuncRef) -> bool {
    if !p.name.matches_exact(&f.name) {
        return false;
    }
    match (&p.schema, &f.schema) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ps), Some(s)) => ps.matches_exact(s),
    }
}

/// Parse a `tables`/`functions` entry: one or two dot-separated parts,
/// each a bare name (lower-cased; letters, digits, `_`, `$`, `*`) or a
/// double-quoted name (`""` for a quote).
fn parse_pattern(entry: &str, function: bool) -> Result<NamePattern, String> {
    let mut parts = parse_parts(entry)?;
    match parts.len() {
        1 => Ok(NamePattern {
            schema: None,
            name: parts.remove(0),
        }),
        2 => {
            let name = parts.remove(1);
            let schema = parts.remove(0);
            let schema = if function && !schema.quoted && schema.text == "pg_catalog" {
                None
            } else {
                Some(schema)
            };
            Ok(NamePattern { schema, name })
        }
        _ => Err(format!(
            "{entry:?} has {} parts; use name or schema.name",
            parts.len()
        )),
    }
}

fn parse_parts(entry: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut chars = entry.trim().chars().peekable();
    if entry.trim().is_empty() {
        return Err("empty name".into());
    }
    loop {
        let mut text = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        text.push('"');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    text.push(c);
                }
            }
            if !closed {
                return Err(format!("{entry:?} has an unterminated quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$' || c == '*') {
                    return Err(format!(
                        "{entry:?}: character {c:?} is not allowed in a bare name (quote the name; only * is a wildcard)"
                    ));
                }
                text.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if text.is_empty() {
            return Err(format!("{entry:?} has an empty name part"));
        }
        parts.push(Part { text, quoted });
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(c) => return Err(format!("{entry:?}: unexpected {c:?} after a quoted name")),
        }
    }
    Ok(parts)
}

fn config_version(name: &str, cfg: &PolicyConfig) -> u64 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    // Serialising plain data to JSON cannot fail; the debug form is a
    // stable fallback all the same.
    match serde_json::to_vec(cfg) {
        Ok(bytes) => h.update(&bytes),
        Err(_) => h.update(format!("{cfg:?}").as_bytes()),
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::RuleConfig;
    use crate::policy::sql::analyze;

    fn policy(text: &str) -> Policy {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        Policy::compile("p", &cfg).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn decide(p: &Policy, sql: &str) -> Verdict {
        let ctx = SessionContext::new(vec!["public".into()]);
        p.decide(&analyze(sql).unwrap(), &ctx)
    }

    /// A statement the classifier does not understand (PostgreSQL's
    /// grammar produces none today: every statement type it has is
    /// classified), built by hand.
    fn unknown_statement() -> crate::policy::Analysis {
        let mut a = analyze("SELECT 1").unwrap();
        a.statements[0].class = StatementClass::Unknown;
        a.statements[0].command = "FROBNICATE".into();
        a
    }

    const ISSUE: &str = r#"
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"] },
  { action = "approve", classes = ["write"], tables = ["orders"] },
  { action = "block", functions = ["pg_read_file", "dblink*"] },
]
"#;

    #[test]
    fn the_issue_policy() {
        let p = policy(ISSUE);
        let v = decide(&p, "SELECT * FROM orders");
        assert_eq!(v.action, Action::Allow);
        assert_eq!(v.rule.as_ref().unwrap().index, 0);
        let v = decide(&p, "SELECT * FROM Secrets");
        assert_eq!(v.action, Action::Block);
        assert!(v.reason.contains("table secrets"), "{}", v.reason);
        assert!(v.reason.contains("rules[1]"), "{}", v.reason);
        let v = decide(&p, "SELECT * FROM payroll");
        assert_eq!(v.action, Action::Block, "{}", v.reason);
        let v = decide(&p, "SELECT * FROM hr.payroll");
        assert_eq!(v.action, Action::Allow, "{}", v.reason);
        let v = decide(&p, "UPDATE orders SET a = 1");
        assert_eq!(v.action, Action::Approve);
        assert!(v.reason.contains("requires approval"), "{}", v.reason);
        let v = decide(&p, "UPDATE orders SET a = (SELECT x FROM secrets)");
        assert_eq!(v.action, Action::Block);
        let v = decide(&p, "DELETE FROM customers");
        assert_eq!(v.action, Action::Deny);
        assert!(
            v.reason.contains("statement class write") && v.reason.contains("default deny"),
            "{}",
            v.reason
        );
        let v = decide(&p, "SELECT dblink_exec('x', 'y')");
        assert_eq!(v.action, Action::Block);
        assert!(v.reason.contains("dblink_exec"), "{}", v.reason);
        let v = decide(
            &p,
            "SELECT 1; UPDATE orders SET a = 1; SELECT * FROM secrets",
        );
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.class, StatementClass::Write);
        assert!(v.tables.contains(&"orders".to_string()));
    }

    #[test]
    fn allow_with_tables_requires_all() {
        let p = policy(
            r#"
rules = [
  { action = "allow", classes = ["write"], tables = ["orders", "public.items"] },
]
"#,
        );
        assert_eq!(
            decide(&p, "INSERT INTO orders VALUES (1)").action,
            Action::Allow
        );
        assert_eq!(
            decide(&p, "INSERT INTO orders SELECT * FROM secrets").action,
            Action::Deny
        );
        assert_eq!(decide(&p, "UPDATE items SET a = 1").action, Action::Allow);
        assert_eq!(
            decide(&p, "UPDATE public.items SET a = 1").action,
            Action::Allow
        );
        assert_eq!(
            decide(&p, "UPDATE other.items SET a = 1").action,
            Action::Deny
        );
        assert_eq!(
            decide(&p, "UPDATE \"ORDERS\" SET a = 1").action,
            Action::Deny
        );
        // An unqualified name that could resolve outside `public` is not allowed.
        let ctx = SessionContext::new(vec!["evil".into(), "public".into()]);
        let v = p.decide(&analyze("UPDATE items SET a = 1").unwrap(), &ctx);
        assert_eq!(v.action, Action::Deny);
        // Statements with no table never match a tables criterion.
        let p = policy(r#"rules = [{ action = "allow", tables = ["orders"] }]"#);
        assert_eq!(decide(&p, "DO $$ BEGIN END $$").action, Action::Deny);
    }

    #[test]
    fn block_resolves_through_search_path() {
        let p = policy(
            r#"
default = "allow"
rules = [{ action = "block", tables = ["hr.payroll"] }]
"#,
        );
        let v = |path: &[&str], sql: &str| {
            let ctx = SessionContext::new(path.iter().map(|s| s.to_string()).collect());
            p.decide(&analyze(sql).unwrap(), &ctx).action
        };
        // Block is conservative: an unqualified name matches a qualified
        // block entry whatever the path Warden believes in.
        assert_eq!(v(&["public"], "SELECT * FROM payroll"), Action::Block);
        assert_eq!(v(&["hr", "public"], "SELECT * FROM payroll"), Action::Block);
        assert_eq!(
            v(&["public"], "SELECT * FROM public.payroll"),
            Action::Allow
        );
        assert_eq!(v(&[], "SELECT * FROM payroll"), Action::Block);
        assert_eq!(v(&["public"], "SELECT * FROM HR.PAYROLL"), Action::Block);
        let forced = policy(
            r#"
default = "allow"
search_path = ["hr"]
rules = [{ action = "block", tables = ["hr.payroll"] }]
"#,
        );
        let ctx = SessionContext::new(vec!["public".into()]);
        let d = forced.decide(&analyze("SELECT * FROM payroll").unwrap(), &ctx);
        assert_eq!(d.action, Action::Block);
        let d = p.decide(
            &analyze("SET search_path = hr; SELECT * FROM payroll").unwrap(),
            &ctx,
        );
        assert_eq!(d.action, Action::Block, "{}", d.reason);
        let d = p.decide(&analyze("RESET ALL; SELECT * FROM payroll").unwrap(), &ctx);
        assert_eq!(d.action, Action::Block, "{}", d.reason);
        let d = forced.decide(&analyze("SET search_path = public").unwrap(), &ctx);
        assert_eq!(d.action, Action::Block);
        assert!(d.reason.contains("search_path"), "{}", d.reason);
    }

    #[test]
    fn unknown_needs_an_explicit_rule() {
        let p = policy(r#"default = "allow""#);
        let ctx = SessionContext::new(vec!["public".into()]);
        let v = p.decide(&unknown_statement(), &ctx);
        assert_eq!(v.class, StatementClass::Unknown);
        assert_eq!(v.action, Action::Deny, "{}", v.reason);
        let p = policy(r#"rules = [{ action = "allow", classes = ["unknown"] }]"#);
        assert_eq!(p.decide(&unknown_statement(), &ctx).action, Action::Allow);
    }

    #[test]
    fn policy_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Policy>();
        shareable::<Verdict>();
        shareable::<crate::policy::sql::session::SqlSession<Verdict>>();
    }

    #[test]
    fn block_rules_apply_to_unknown_statements() {
        let p = policy(
            r#"
rules = [
  { action = "allow", classes = ["unknown"] },
  { action = "block", tables = ["secrets"] },
]
"#,
        );
        let a = unknown_statement();
        assert_eq!(
            p.decide(&a, &SessionContext::default()).action,
            Action::Allow
        );
        let mut a = a;
        a.statements[0].tables.push(TableRef {
            schema: None,
            name: "secrets".into(),
            write: false,
        });
        assert_eq!(
            p.decide(&a, &SessionContext::default()).action,
            Action::Block
        );
    }

    #[test]
    fn settings_and_execute() {
        let p = policy(r#"default = "allow""#);
        let v = decide(&p, "SET standard_conforming_strings = off");
        assert_eq!(v.action, Action::Block);
        assert!(
            v.reason.contains("standard_conforming_strings"),
            "{}",
            v.reason
        );
        assert_eq!(
            decide(&p, "SET client_encoding = 'UTF-8'").action,
            Action::Allow
        );
        assert_eq!(decide(&p, "SET NAMES 'GBK'").action, Action::Block);

        let ro = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let mut ctx = SessionContext::new(vec!["public".into()]);
        let a = analyze("PREPARE d AS DELETE FROM t").unwrap();
        assert_eq!(ro.decide(&a, &ctx).action, Action::Deny);
        let (name, v) = ro.decide_prepared(&a.statements[0], &ctx).unwrap();
        ctx.prepared.insert(&name, v).unwrap();
        let a = analyze("PREPARE s AS SELECT 1").unwrap();
        let (name, v) = ro.decide_prepared(&a.statements[0], &ctx).unwrap();
        ctx.prepared.insert(&name, v).unwrap();
        assert_eq!(
            ro.decide(&analyze("EXECUTE d").unwrap(), &ctx).action,
            Action::Deny
        );
        assert_eq!(
            ro.decide(&analyze("EXECUTE s").unwrap(), &ctx).action,
            Action::Allow
        );
        let v = ro.decide(&analyze("EXECUTE s(pg_read_file('/x'))").unwrap(), &ctx);
        assert_eq!(v.action, Action::Deny, "{}", v.reason);
        let v = ro.decide(&analyze("EXECUTE nope").unwrap(), &ctx);
        assert_eq!(v.action, Action::Deny);
        assert!(v.reason.contains("unknown"), "{}", v.reason);
        assert_eq!(
            ro.decide(&analyze("EXPLAIN ANALYZE EXECUTE d").unwrap(), &ctx)
                .action,
            Action::Deny
        );
    }

    #[test]
    fn compile_reports_every_problem() {
        let cfg = PolicyConfig {
            search_path: Some(vec!["$user".into(), "a.b".into()]),
            rules: vec![
                RuleConfig {
                    action: RuleAction::Allow,
                    classes: vec![],
                    tables: vec![],
                    functions: vec![],
                    name: None,
                    ..RuleConfig::new(RuleAction::Allow)
                },
                RuleConfig {
                    action: RuleAction::Block,
                    classes: vec![StatementClass::Read, StatementClass::Read],
                    tables: vec!["".into(), "a.b.c.d".into(), "\"open".into()],
                    functions: vec!["pg_read_file".into(), "db?link".into()],
                    name: Some("".into()),
                    ..RuleConfig::new(RuleAction::Allow)
                },
                RuleConfig {
                    action: RuleAction::Block,
                    classes: vec![StatementClass::Ddl],
                    tables: vec![],
                    functions: vec![],
                    name: Some("x".into()),
                    ..RuleConfig::new(RuleAction::Allow)
                },
                RuleConfig {
                    action: RuleAction::Block,
                    classes: vec![StatementClass::Privileged],
                    tables: vec![],
                    functions: vec![],
                    name: Some("x".into()),
                    ..RuleConfig::new(RuleAction::Allow)
                },
            ],
            ..Default::default()
        };
        let problems = Policy::compile("", &cfg).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "",
            "rules[0]",
            "rules[1].name",
            "rules[1].classes[1]",
            "rules[1].tables[0]",
            "rules[1].tables[1]",
            "rules[1].tables[2]",
            "rules[1].functions[1]",
            "rules[3].name",
            "search_path[0]",
            "search_path[1]",
        ] {
            assert!(keys.contains(&want), "missing {want:?} in {problems:#?}");
        }
        assert!(!keys.contains(&"rules[1].functions[0]"));
    }

    #[test]
    fn version_follows_the_config() {
        let a = policy(ISSUE);
        let b = policy(ISSUE);
        assert_eq!(a.version(), b.version());
        let c = policy(&ISSUE.replace("dblink*", "dblink"));
        assert_ne!(a.version(), c.version());
        assert_eq!(a.name(), "p");
    }

    #[test]
    fn prepared_statements_are_bounded() {
        let mut ps = PreparedStatements::new(2);
        let v = Verdict::unparsable(&AnalyzeError::Syntax {
            message: "x".into(),
            position: None,
        });
        ps.insert("a", v.clone()).unwrap();
        ps.insert("b", v.clone()).unwrap();
        ps.insert("a", v.clone()).unwrap();
        assert!(ps.insert("c", v).is_err());
        assert_eq!(ps.len(), 2);
        ps.remove("a");
        assert!(ps.get("a").is_none());
        ps.clear();
        assert!(ps.is_empty());
    }
}
