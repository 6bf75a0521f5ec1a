//! Statement decisions for one session: parse (PostgreSQL's own grammar,
//! through `policy::sql`), check session settings, apply the grant's policy,
//! column masking and allow-list, and say how a refusal is answered. What
//! later messages depend on (the tracked `search_path`, SQL `PREPARE`d
//! statements for their `EXECUTE`s, the decision cache) is the policy's
//! [`SqlSession`]. Fail closed: anything that cannot be parsed, resolved or
//! classified is refused.

use std::sync::Arc;

use crate::audit::event::StatementDecision;
use crate::policy::Verdict;
use crate::policy::allowlist::{AllowlistFacts, Fingerprint, SqlScan, data_literals};
use crate::policy::columns::{self, ColumnError, ColumnFacts};
use crate::policy::sql::session::{SqlSession, check_settings};
use crate::policy::sql::{Analysis, AnalyzeError, analyze, quote_ident_always};
use crate::policy::sql::{analyze_tree, parse_tree};

use super::SessionInfo;

/// How a refused statement is answered: as the server itself would have
/// answered a statement it rejects anyway, or as a policy refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Refused by Warden (policy, settings, fail closed): SQLSTATE 42501.
    Policy,
    /// PostgreSQL's grammar rejects the text: SQLSTATE 42601 with the
    /// parser's own message and position, as the server answers.
    Syntax { position: Option<u32> },
    /// `EXECUTE` of a prepared statement the session does not have:
    /// SQLSTATE 26000, as the server answers.
    UndefinedPrepared { name: String },
    /// A Parse of a statement name the session already has: SQLSTATE
    /// 42P05, as the server answers (and keeps the old statement).
    DuplicatePrepared { name: String },
}

impl Answer {
    /// The SQLSTATE of the ErrorResponse (and of the audit event).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Answer::Policy => "42501",
            Answer::Syntax { .. } => "42601",
            Answer::UndefinedPrepared { .. } => "26000",
            Answer::DuplicatePrepared { .. } => "42P05",
        }
    }
}

/// The decision on one statement string, with what the audit trail and the
/// client are told.
#[derive(Debug, Clone)]
pub struct Decided {
    pub decision: StatementDecision,
    /// How a refusal is answered (`Policy` when allowed).
    pub answer: Answer,
    /// Most severe class (`read`, `write`, …); `unknown` when not parsed.
    pub class: String,
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    /// The rule that decided (`rules[2]` or its name).
    pub rule: Option<String>,
    /// Why (for refusals, what the client is told).
    pub reason: Option<String>,
    /// Statement text, masked for the audit trail.
    pub statement: String,
    /// The parse, kept for the session state it changes.
    pub analysis: Option<Analysis>,
    /// Masked columns the statement reads and how a COPY of them is
    /// masked (`None` without column rules or masked columns).
    pub columns: Option<Arc<ColumnFacts>>,
    // --- allow-lists (issue 19) ---
    /// The statement's fingerprint (`None` when the text does not scan or
    /// the decision was not made on a text).
    pub fingerprint: Option<Arc<Fingerprint>>,
    /// Fingerprint id, the grant's allow-list mode and verdict, for the
    /// audit trail.
    pub allowlist: AllowlistFacts,
}

impl Decided {
    pub fn allowed(&self) -> bool {
        self.decision == StatementDecision::Allowed
    }

    /// An empty query string (nothing to decide).
    pub fn is_empty(&self) -> bool {
        self.allowed()
            && self
                .analysis
                .as_ref()
                .is_some_and(|a| a.statements.is_empty())
    }

    /// The ErrorResponse message.
    pub fn client_message(&self) -> String {
        let why = self.reason.as_deref().unwrap_or("refused by policy");
        match &self.answer {
            // The server's own words.
            Answer::Syntax { .. } => return why.to_owned(),
            Answer::UndefinedPrepared { name } => {
                return format!("prepared statement \"{name}\" does not exist");
            }
            Answer::DuplicatePrepared { name } => {
                return format!("prepared statement \"{name}\" already exists");
            }
            Answer::Policy => {}
        }
        match self.decision {
            StatementDecision::ApprovalRequired => {
                format!("statement requires approval and was not approved: {why}")
            }
            StatementDecision::Rejected => format!("statement refused: {why}"),
            _ => format!("statement refused: {why}"),
        }
    }

    /// This decision after an approval step: allowed (`allow`) or refused
    /// with `why`, keeping the statement's facts.
    pub fn after_approval(&self, allow: bool, why: String) -> Decided {
        Decided {
            decision: if allow {
                StatementDecision::Allowed
            } else {
                StatementDecision::ApprovalRequired
            },
            answer: Answer::Policy,
            reason: Some(why),
            ..self.clone()
        }
    }

    /// Whether the statement reads a masked column: the server's errors
    /// and notices about it may quote the value.
    pub fn reads_masked(&self) -> bool {
        self.columns.as_ref().is_some_and(|c| c.reads_masked())
    }

    /// Whether the statement names a relation the session's catalog
    /// snapshot does not know: decided again on a current one.
    pub fn names_unknown_relations(&self) -> bool {
        self.columns.as_ref().is_some_and(|c| c.unknown_relations)
    }

    /// Whether the statement may change the catalog (DDL or more): the
    /// session's snapshot is refreshed after it.
    pub fn may_change_catalog(&self) -> bool {
        self.analysis
            .as_ref()
            .is_some_and(|a| a.class() >= crate::policy::model::StatementClass::Ddl)
    }

    /// The ErrorResponse detail: the rule.
    pub fn detail(&self) -> Option<String> {
        self.rule.as_ref().map(|r| format!("policy rule: {r}"))
    }

    pub fn hint(&self) -> Option<&'static str> {
        if self.answer != Answer::Policy {
            return None;
        }
        match self.decision {
            StatementDecision::Rejected => {
                Some("Warden refuses what it cannot parse or classify (fail closed)")
            }
            _ => None,
        }
    }
}

/// Decides statements for one session.
pub struct Decider {
    info: Arc<SessionInfo>,
    /// The session's SQL state (search_path, prepared statements, masked
    /// cursors) and its decisions by statement shape.
    sql: SqlSession<Decided>,
}

impl Decider {
    pub fn new(info: Arc<SessionInfo>) -> Self {
        let sql = SqlSession::new(&info.upstream_user, info.startup_search_path.as_deref());
        Self { info, sql }
    }

    /// Forgets cached decisions (they were made with an older catalog
    /// snapshot).
    pub fn catalog_changed(&mut self) {
        self.sql.forget_decisions();
    }

    /// The decision for `sql` as sent by the client.
    pub fn decide(&mut self, sql: &str) -> Arc<Decided> {
        let started = std::time::Instant::now();
        let d = self.decide_text(sql);
        let d = self.through_cursors(d);
        let d = self.allowlist_gate(d);
        crate::metrics::global().observe(
            crate::metrics::Family::DecisionSeconds,
            &[("protocol", "postgres")],
            started.elapsed(),
        );
        d
    }

    // --- allow-lists (issue 19) ---
    /// The grant's allow-list over the rule decision (learn: record;
    /// enforce: an unlisted fingerprint is refused, or held for approval,
    /// whatever the rules say; block and deny still win).
    fn allowlist_gate(&self, d: Arc<Decided>) -> Arc<Decided> {
        let Some(gate) = self.info.allowlist.as_deref() else {
            return d;
        };
        let (facts, judged) = crate::proxy::session::judge_allowlist(
            gate,
            d.fingerprint.as_deref(),
            "postgres",
            &d.statement,
            d.decision,
        );
        let mut out = (*d).clone();
        out.allowlist = AllowlistFacts {
            fingerprint: d.allowlist.fingerprint.clone(),
            ..facts
        };
        let (decision, why) = match judged {
            crate::policy::allowlist::Judged::Pass => return Arc::new(out),
            crate::policy::allowlist::Judged::Refuse(why) => (StatementDecision::Denied, why),
            crate::policy::allowlist::Judged::Hold(why) => {
                (StatementDecision::ApprovalRequired, why)
            }
        };
        if matches!(
            d.decision,
            StatementDecision::Allowed | StatementDecision::ApprovalRequired
        ) {
            out.decision = decision;
            out.answer = Answer::Policy;
            out.rule = Some(format!("allowlist of grant {}", gate.grant));
            out.reason = Some(why);
        }
        Arc::new(out)
    }

    /// A cursor declared over masked columns: its rows come back through
    /// FETCH/MOVE, whose errors may then quote them too. Once such a
    /// cursor was declared in the session, every FETCH and MOVE, and every
    /// transaction control statement (a WITH HOLD cursor is run to its end
    /// at COMMIT), counts as reading masked columns.
    fn through_cursors(&mut self, d: Arc<Decided>) -> Arc<Decided> {
        if d.allowed()
            && d.reads_masked()
            && let Some(a) = &d.analysis
        {
            self.sql.note_masked_reads(a);
        }
        if d.reads_masked() || !self.sql.reads_through_masked_cursor(d.analysis.as_ref()) {
            return d;
        }
        reading_masked_through(&d, "a cursor over masked columns".into())
    }

    /// A SQL `FETCH`/`MOVE` of `portal`, a protocol portal whose statement
    /// Warden may not let the server run that way: one of an `approve`
    /// rule not yet approved (asked at its Execute, with its values), or
    /// one Warden never decided.
    pub fn portal_run_by_sql(
        &self,
        d: &Decided,
        portal: &str,
        rule: Option<String>,
    ) -> Arc<Decided> {
        Arc::new(Decided {
            decision: StatementDecision::Denied,
            answer: Answer::Policy,
            rule,
            reason: Some(format!(
                "{} of portal {portal:?} would run the statement bound to it, which is asked \
                 about (or was never decided) at its protocol Execute: send the Execute",
                d.analysis
                    .iter()
                    .flat_map(|a| &a.statements)
                    .map(|s| s.command.as_str())
                    .find(|c| matches!(*c, "FETCH" | "MOVE"))
                    .unwrap_or("FETCH")
            )),
            columns: None,
            ..d.clone()
        })
    }

    fn decide_text(&mut self, sql: &str) -> Arc<Decided> {
        // One scan by PostgreSQL's own scanner: the cache key, the
        // fingerprint and the audit text's literal positions.
        let Some(scan) = SqlScan::new(sql) else {
            // The scanner rejects it: so does the parser (nothing cached).
            return Arc::new(self.decide_uncached(sql, None, &mut Default::default()));
        };
        let key = scan.cache_key();
        if let Some((d, _)) = self.sql.cached(&key, &scan) {
            return Arc::new(Decided {
                statement: self.masked(&scan),
                ..(*d).clone()
            });
        }
        let mut data = Default::default();
        let mut d = self.decide_uncached(sql, Some(&scan), &mut data);
        let mask = scan.data_mask(&data);
        let fingerprint = Arc::new(scan.fingerprint(&mask));
        d.allowlist.fingerprint = Some(fingerprint.id.clone());
        d.fingerprint = Some(Arc::clone(&fingerprint));
        let d = Arc::new(d);
        let analysis = d.analysis.as_ref();
        self.sql.cache(
            sql,
            analysis,
            (key, &scan, &mask),
            Arc::clone(&d),
            fingerprint,
        );
        d
    }

    /// The audit trail's text of a scanned statement: literals, comments
    /// and quoted identifiers through the grant's text masker.
    fn masked(&self, scan: &SqlScan<'_>) -> String {
        scan.masked_text(|t| self.info.text_masker.mask_str(t).0.into_owned())
    }

    /// Parses and decides `sql`; `data` receives the byte offsets of its
    /// data literals (for the fingerprint and the cache).
    fn decide_uncached(
        &self,
        sql: &str,
        scan: Option<&SqlScan<'_>>,
        data: &mut std::collections::HashSet<usize>,
    ) -> Decided {
        let statement = match scan {
            Some(s) => self.masked(s),
            None => self.info.mask_statement(sql),
        };
        let analysis = match parse_tree(sql).and_then(|tree| {
            *data = data_literals(&tree);
            analyze_tree(&tree)
        }) {
            Ok(a) => a,
            Err(AnalyzeError::Syntax { message, position }) => {
                let mut d = self.rejected(statement, message);
                d.answer = Answer::Syntax { position };
                return d;
            }
            Err(e) => {
                return self.rejected(statement, format!("it could not be analysed ({e})"));
            }
        };
        let d = self.decide_analysis(analysis, statement);
        if d.allowed() {
            self.check_columns(sql, d)
        } else {
            d
        }
    }

    /// An allowed statement under column masking: every masked column it
    /// references must stand where the masking holds
    /// ([`crate::policy::columns`]); refused otherwise.
    fn check_columns(&self, sql: &str, mut d: Decided) -> Decided {
        let Some(masker) = &self.info.masker else {
            return d;
        };
        let snapshot = self.info.catalog.get();
        let catalog = &snapshot.columns;
        if !catalog.masks_anything() {
            return d;
        }
        let masking = catalog.masking().to_owned();
        let mut facts = match columns::check(sql, catalog, masker.masked_in_predicates()) {
            Ok(f) => f,
            Err(e) => {
                let rule = match &e {
                    ColumnError::MaskedUse { rule, .. }
                    | ColumnError::UnknownColumns { rule, .. } => {
                        format!("[masking.{masking}] column rule \"{rule}\"")
                    }
                    _ => format!("[masking.{masking}]"),
                };
                tracing::info!(masking = %masking, reason = %e, "statement refused by column masking");
                return Decided {
                    decision: StatementDecision::Denied,
                    answer: Answer::Policy,
                    rule: Some(rule),
                    reason: Some(e.to_string()),
                    columns: None,
                    ..d
                };
            }
        };
        for s in d.analysis.iter().flat_map(|a| &a.statements) {
            let Some(name) = s
                .execute
                .as_ref()
                .filter(|n| self.sql.prepared_reads_masked(n))
            else {
                continue;
            };
            if matches!(
                s.command.as_str(),
                "CREATE TABLE AS" | "SELECT INTO" | "CREATE MATERIALIZED VIEW"
            ) {
                return Decided {
                    decision: StatementDecision::Denied,
                    answer: Answer::Policy,
                    rule: Some(format!("[masking.{masking}]")),
                    reason: Some(format!(
                        "prepared statement \"{name}\" reads masked columns and would be written to a new table"
                    )),
                    columns: None,
                    ..d
                };
            }
            facts.masked.push(format!("prepared statement {name}"));
        }
        if facts.reads_masked() || facts.copy.is_some() || facts.unknown_relations {
            d.columns = Some(Arc::new(facts));
        }
        d
    }

    fn decide_analysis(&self, mut analysis: Analysis, statement: String) -> Decided {
        analysis.distrust_shadowed(&self.info.shadowed);
        // EXECUTE of a statement the session never prepared: the server's
        // own error (a PREPARE earlier in the same text counts).
        if let Some(name) = self.sql.undefined_execute(&analysis) {
            let name = name.to_owned();
            let mut d = self.rejected(
                statement,
                format!("prepared statement \"{name}\" does not exist"),
            );
            d.answer = Answer::UndefinedPrepared { name };
            return d;
        }
        // Session rules that no policy can waive.
        let fixes_planner = self
            .info
            .masker
            .as_deref()
            .is_some_and(crate::policy::settings::masking_fixes_planner);
        if let Err(why) = check_settings(&analysis, fixes_planner, self.info.read_only) {
            return self.rejected(statement, why);
        }
        let verdict = self.info.policy.decide(&analysis, self.sql.context());
        // A read-only grant reads, whatever its policy allows: PostgreSQL
        // itself lets a read-only transaction LOCK, NOTIFY, summarise
        // indexes or run functions with effects, so nothing above `read`
        // (functions off the safe list included) reaches the server.
        if self.info.read_only && verdict.class > crate::policy::StatementClass::Read {
            return self.rejected(
                statement,
                format!(
                    "the grant is read-only: a {} statement is refused",
                    verdict.class.as_str()
                ),
            );
        }
        decided_from(verdict, statement, analysis)
    }

    fn rejected(&self, statement: String, why: String) -> Decided {
        Decided {
            decision: StatementDecision::Rejected,
            answer: Answer::Policy,
            class: "unknown".into(),
            tables: Vec::new(),
            functions: Vec::new(),
            rule: None,
            reason: Some(why),
            statement,
            analysis: None,
            columns: None,
            fingerprint: None,
            allowlist: AllowlistFacts::default(),
        }
    }

    /// A Parse of a statement name the session already has (by Parse or by
    /// SQL `PREPARE`): the server would refuse it and keep the old
    /// statement, so Warden answers for it and its books stay the server's.
    pub fn duplicate_prepared(&self, name: &str, statement: &str) -> Arc<Decided> {
        let mut d = self.rejected(
            statement.to_owned(),
            format!("prepared statement \"{name}\" already exists"),
        );
        d.answer = Answer::DuplicatePrepared {
            name: name.to_owned(),
        };
        Arc::new(d)
    }

    /// Whether SQL `PREPARE` made a statement of this name in the session.
    pub fn knows_prepared(&self, name: &str) -> bool {
        self.sql.knows_prepared(name)
    }

    /// A protocol Close of a statement: the server's one namespace of
    /// prepared statements loses the name, whoever made it.
    pub fn forget_prepared(&mut self, name: &str) {
        self.sql.forget_prepared(name);
    }

    /// What an approver of `d` must see besides its text: for each
    /// `EXECUTE name`, the statement that prepared `name`.
    pub fn executed_texts(&self, d: &Decided) -> Option<String> {
        self.sql.executed_texts(d.analysis.as_ref()?)
    }

    /// A text that is not [`tokenisation_neutral`] and arrived while a
    /// statement Warden forwarded is still unanswered: refused, because
    /// that statement may have changed how the server lexes it (a trusted
    /// function, a trigger), which the server reports only at its
    /// ReadyForQuery (for the extended protocol, at the batch's Sync).
    pub fn lexed_while_running(&self, sql: &str) -> Arc<Decided> {
        Arc::new(
            self.rejected(
                self.info.mask_statement(sql),
                "a statement text with a backslash or a non-ASCII character was sent before the \
             statements ahead of it were answered: a setting they changed (reported by the \
             server only at ReadyForQuery) could make the server read it otherwise; send it \
             after the answer (after Sync in a batch)"
                    .into(),
            ),
        )
    }

    /// An Execute of a portal Warden has no decision for.
    pub fn unknown_portal(&self, portal: &str) -> Arc<Decided> {
        Arc::new(self.rejected(
            format!("EXECUTE portal {portal:?}"),
            format!("portal {portal:?} is not bound to a statement Warden has seen"),
        ))
    }

    /// A FunctionCall message: decided as `SELECT schema.name()`.
    pub fn function_call(&self, oid: u32, name: Option<(&str, &str)>) -> Arc<Decided> {
        let Some((schema, name)) = name else {
            return Arc::new(self.rejected(
                format!("FunctionCall oid {oid}"),
                format!("function oid {oid} could not be resolved to a name"),
            ));
        };
        // Schema and name quoted apart: a name with a dot in it
        // (`public."pg_catalog.lower"`) is not the built-in it spells.
        let qualified = format!(
            "{}.{}",
            quote_ident_always(schema),
            quote_ident_always(name)
        );
        let sql = format!("SELECT {qualified}()");
        let statement = format!("FunctionCall {qualified} (oid {oid})");
        // No statement text, so no fingerprint: an enforcing allow-list
        // refuses it (fail closed).
        self.allowlist_gate(Arc::new(match analyze(&sql) {
            Ok(a) => self.decide_analysis(a, statement),
            Err(e) => self.rejected(statement, format!("it could not be analysed ({e})")),
        }))
    }

    /// Applies what an allowed statement changes in the session.
    pub fn after_allowed(&mut self, d: &Decided) {
        let Some(a) = &d.analysis else { return };
        self.sql
            .apply(a, d.reads_masked(), &d.statement, &self.info.policy);
    }
}

/// Whether `sql` is lexed alike under every setting a statement may
/// change without Warden seeing it before the server reads the next text:
/// ASCII without a backslash. `standard_conforming_strings` and
/// `backslash_quote` change only what a backslash means, and every client
/// encoding PostgreSQL accepts reads ASCII bytes as ASCII characters unless
/// they follow a non-ASCII lead byte.
pub fn tokenisation_neutral(sql: &str) -> bool {
    sql.bytes().all(|b| b.is_ascii() && b != b'\\')
}

/// `d`, which also reads masked columns through `what` (a cursor, a
/// portal): the server's texts about it are withheld.
pub fn reading_masked_through(d: &Decided, what: String) -> Arc<Decided> {
    let mut facts = d.columns.as_deref().cloned().unwrap_or_default();
    facts.masked.push(what);
    Arc::new(Decided {
        columns: Some(Arc::new(facts)),
        ..d.clone()
    })
}

/// The session decision for a policy verdict.
fn decided_from(v: Verdict, statement: String, analysis: Analysis) -> Decided {
    Decided {
        decision: crate::proxy::session::decision_of(v.action),
        answer: Answer::Policy,
        class: v.class.as_str().to_owned(),
        tables: v.tables,
        functions: v.functions,
        rule: v.rule.map(|r| r.label),
        reason: Some(v.reason),
        statement,
        analysis: Some(analysis),
        columns: None,
        fingerprint: None,
        allowlist: AllowlistFacts::default(),
    }
}
