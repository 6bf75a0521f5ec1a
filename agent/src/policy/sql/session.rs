//! One PostgreSQL session's SQL state, as the policy needs it: the tracked
//! `search_path` (unqualified names resolve through it), SQL-level
//! prepared statements with their verdicts (for their `EXECUTE`s), which of
//! them and which cursors read masked columns, the texts that prepared
//! them, and the session's decision cache (by statement shape). Also the
//! session rules no policy can waive ([`check_settings`]). Pure: the proxy
//! feeds it what the server accepted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::names::resolve_search_path;
use super::{Analysis, AnalyzeError, analyze_tree, parse_tree};
use crate::policy::allowlist::{Fingerprint, LiteralMask, ShapeCache, SqlScan, data_literals};
use crate::policy::rules::{Policy, SessionContext, Verdict};
use crate::policy::settings;

/// Most decisions cached per session (statement shape → decision).
pub const CACHE_MAX: usize = 512;

/// Longest statement text kept in the cache: a session's memory stays
/// bounded by one message, not by [`CACHE_MAX`] of them.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// One session's SQL state; `D` is the decision the caller caches.
pub struct SqlSession<D> {
    /// Tracked search_path and SQL-level prepared statements (PREPARE name
    /// AS …) with their verdicts, for EXECUTE.
    ctx: SessionContext,
    /// The role the server runs the session as (`$user` in a path).
    user: String,
    /// The path at startup (what `RESET search_path` returns to).
    initial_search_path: Vec<String>,
    /// Decisions by statement shape: a statement that differs from a
    /// decided one only in data literals is not parsed again
    /// ([`crate::policy::allowlist::shape_cache`]).
    cache: ShapeCache<D>,
    /// SQL-level prepared statements that read masked columns: their
    /// EXECUTEs do too.
    masked_prepared: HashSet<String>,
    /// The (masked) text that prepared each SQL-prepared statement, shown
    /// to an approver of its `EXECUTE`.
    prepared_texts: HashMap<String, String>,
    /// A cursor over masked columns was declared.
    masked_cursors: bool,
}

impl<D> SqlSession<D> {
    /// A session of `user` that starts with `startup_search_path` (the
    /// client's startup parameter, or the server's default).
    pub fn new(user: &str, startup_search_path: Option<&str>) -> Self {
        let initial_search_path =
            resolve_search_path(startup_search_path.unwrap_or("\"$user\", public"), user);
        Self {
            ctx: SessionContext::new(initial_search_path.clone()),
            user: user.to_owned(),
            initial_search_path,
            cache: ShapeCache::new(CACHE_MAX),
            masked_prepared: HashSet::new(),
            prepared_texts: HashMap::new(),
            masked_cursors: false,
        }
    }

    /// What the policy decides with: the search path and prepared verdicts.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Forgets cached decisions (they were made with an older catalog
    /// snapshot).
    pub fn forget_decisions(&mut self) {
        self.cache.clear();
    }

    /// The cached decision for a text of this shape, if any.
    pub fn cached(&self, key: &str, scan: &SqlScan<'_>) -> Option<(Arc<D>, Arc<Fingerprint>)> {
        self.cache.get(key, scan)
    }

    /// Caches `d` for `sql` when it depends on nothing but the text (and
    /// the search path, which empties the cache when it changes) and the
    /// text is short.
    pub fn cache(
        &mut self,
        sql: &str,
        a: Option<&Analysis>,
        (key, scan, mask): (String, &SqlScan<'_>, &LiteralMask),
        d: Arc<D>,
        fingerprint: Arc<Fingerprint>,
    ) {
        if sql.len() <= MAX_CACHED_TEXT && a.is_some_and(cacheable) {
            self.cache.insert(key, scan, mask, d, fingerprint);
        }
    }

    /// The first `EXECUTE` in `a` of a statement the session never
    /// prepared (a `PREPARE` earlier in the same text counts).
    pub fn undefined_execute<'a>(&self, a: &'a Analysis) -> Option<&'a str> {
        let mut prepared_here: Vec<&str> = Vec::new();
        for s in &a.statements {
            if let Some((name, _)) = &s.prepare {
                prepared_here.push(name);
            }
            if let Some(name) = &s.execute
                && self.ctx.prepared.get(name).is_none()
                && !prepared_here.contains(&name.as_str())
            {
                return Some(name);
            }
        }
        None
    }

    /// Whether SQL `PREPARE` made a statement of this name in the session.
    pub fn knows_prepared(&self, name: &str) -> bool {
        self.ctx.prepared.get(name).is_some()
    }

    /// Whether the statement prepared as `name` reads masked columns.
    pub fn prepared_reads_masked(&self, name: &str) -> bool {
        self.masked_prepared.contains(name)
    }

    /// An allowed statement text that reads masked columns: its cursors
    /// and prepared statements do too. Registered when decided (by Query
    /// or Parse), so EXECUTE and FETCH through either protocol know;
    /// forgetting is [`Self::apply`]'s (a name kept too long only
    /// withholds more).
    pub fn note_masked_reads(&mut self, a: &Analysis) {
        for s in &a.statements {
            if s.command == "DECLARE" {
                self.masked_cursors = true;
            }
            if let Some((name, _)) = &s.prepare {
                self.masked_prepared.insert(name.clone());
            }
        }
    }

    /// Whether `a` reads through a cursor over masked columns: once such a
    /// cursor was declared in the session, every FETCH and MOVE, and every
    /// transaction control statement (a WITH HOLD cursor is run to its end
    /// at COMMIT), counts as reading masked columns.
    pub fn reads_through_masked_cursor(&self, a: Option<&Analysis>) -> bool {
        self.masked_cursors
            && a.iter()
                .flat_map(|a| &a.statements)
                .any(|s| s.transaction || matches!(s.command.as_str(), "FETCH" | "MOVE"))
    }

    /// A protocol Close of a statement: the server's one namespace of
    /// prepared statements loses the name, whoever made it.
    pub fn forget_prepared(&mut self, name: &str) {
        self.ctx.prepared.remove(name);
        self.masked_prepared.remove(name);
        self.prepared_texts.remove(name);
    }

    /// What an approver of `a` must see besides its text: for each
    /// `EXECUTE name`, the statement that prepared `name`.
    pub fn executed_texts(&self, a: &Analysis) -> Option<String> {
        let lines: Vec<String> = a
            .statements
            .iter()
            .filter_map(|s| s.execute.as_ref())
            .filter_map(|name| {
                self.prepared_texts
                    .get(name)
                    .map(|text| format!("-- {name} was prepared by: {text}"))
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Applies what an allowed statement text changes in the session:
    /// `search_path` (SET, RESET, RESET ALL), prepared statements (PREPARE
    /// with `policy`'s verdict, DEALLOCATE). `reads_masked`: whether the
    /// text reads masked columns; `statement`: its (masked) text.
    pub fn apply(&mut self, a: &Analysis, reads_masked: bool, statement: &str, policy: &Policy) {
        for s in &a.statements {
            match (&s.prepare, &s.deallocate) {
                (Some(_), _) if reads_masked => {}
                (Some((name, _)), _) | (_, Some(Some(name))) => {
                    self.masked_prepared.remove(name);
                }
                (_, Some(None)) => self.masked_prepared.clear(),
                _ => {}
            }
            for set in &s.settings {
                if set.name == "search_path" {
                    self.ctx.search_path = match &set.value {
                        Some(v) => resolve_search_path(v, &self.user),
                        None => self.initial_search_path.clone(),
                    };
                    self.cache.clear();
                } else if set.name == "all" && set.value.is_none() {
                    // RESET ALL
                    self.ctx.search_path = self.initial_search_path.clone();
                    self.cache.clear();
                }
            }
            if let Some((name, _)) = &s.prepare {
                self.prepared_texts
                    .insert(name.clone(), statement.to_owned());
            }
            match &s.deallocate {
                Some(Some(name)) => {
                    self.prepared_texts.remove(name);
                }
                Some(None) => self.prepared_texts.clear(),
                None => {}
            }
            if let Some((name, verdict)) = policy.decide_prepared(s, &self.ctx) {
                // Over the limit: EXECUTE of it is then refused as unknown.
                if let Err(e) = self.ctx.prepared.insert(&name, verdict) {
                    tracing::warn!(error = %e, "prepared statement not remembered");
                }
            }
            match &s.deallocate {
                Some(Some(name)) => {
                    self.ctx.prepared.remove(name);
                }
                Some(None) => self.ctx.prepared.clear(),
                None => {}
            }
        }
    }
}

impl SqlSession<Verdict> {
    /// The policy's verdict on `sql` in this session, through the session's
    /// cache: a text that differs from a decided one only in data literals
    /// is neither parsed nor analysed again. (The PostgreSQL proxy caches
    /// its own, richer decision the same way; the policy bench and tests
    /// use this one.)
    pub fn verdict(&mut self, sql: &str, policy: &Policy) -> Result<Arc<Verdict>, AnalyzeError> {
        let scan = SqlScan::new(sql);
        if let Some(scan) = &scan
            && let Some((v, _)) = self.cached(&scan.cache_key(), scan)
        {
            return Ok(v);
        }
        let tree = parse_tree(sql)?;
        let a = analyze_tree(&tree)?;
        let v = Arc::new(policy.decide(&a, &self.ctx));
        if let Some(scan) = scan {
            let mask = scan.data_mask(&data_literals(&tree));
            let fingerprint = Arc::new(scan.fingerprint(&mask));
            let key = scan.cache_key();
            self.cache(
                sql,
                Some(&a),
                (key, &scan, &mask),
                Arc::clone(&v),
                fingerprint,
            );
        }
        Ok(v)
    }

    /// How many decisions the session has cached.
    pub fn cached_decisions(&self) -> usize {
        self.cache.len()
    }
}

/// Whether a decision on `a` depends on nothing but the text (and the
/// search path): no setting, PREPARE, EXECUTE or DEALLOCATE.
pub fn cacheable(a: &Analysis) -> bool {
    a.statements.iter().all(|s| {
        s.settings.is_empty()
            && s.prepare.is_none()
            && s.execute.is_none()
            && s.deallocate.is_none()
    })
}

/// The session rules that no policy can waive, in statement order: a
/// setting PostgreSQL may not change under Warden
/// ([`settings::check_change`]), a planner setting on a grant whose
/// masking fixes the planner (`masking_fixes_planner`), and on a
/// `read_only` grant anything that leaves read-only. `Err`: why the text
/// is refused.
pub fn check_settings(
    a: &Analysis,
    masking_fixes_planner: bool,
    read_only: bool,
) -> Result<(), String> {
    let named = |name: &str| -> String {
        if name == "?" {
            "a setting named at run time".to_owned()
        } else {
            name.to_owned()
        }
    };
    for s in &a.statements {
        for set in &s.settings {
            settings::check_change(&set.name, set.value.as_deref(), set.computed)?;
            if masking_fixes_planner
                && settings::is_planner_setting(&set.name)
                // RESET returns to the startup value, checked there.
                && (set.value.is_some() || set.computed || set.name == "?")
            {
                return Err(settings::planner_fixed(&named(&set.name)));
            }
            if read_only
                && settings::leaves_read_only(&set.name, set.value.as_deref(), set.computed)
            {
                return Err(format!(
                    "the grant is read-only: {} cannot be turned off",
                    named(&set.name)
                ));
            }
        }
        if read_only && s.read_write {
            return Err(
                "the grant is read-only: a read-write transaction cannot be started".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::PolicyConfig;
    use crate::policy::rules::Action;
    use crate::policy::sql::analyze;

    fn policy(text: &str) -> Policy {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        Policy::compile("p", &cfg).unwrap()
    }

    fn session() -> SqlSession<Verdict> {
        SqlSession::new("app_user", None)
    }

    /// What the server accepted: its effects on the session.
    fn ran(s: &mut SqlSession<Verdict>, sql: &str, p: &Policy) {
        s.apply(&analyze(sql).unwrap(), false, sql, p);
    }

    /// `SET search_path TO "a,b"` names one schema, `a,b`: an unqualified
    /// table resolves to `"a,b".t`, so an allow rule on that schema covers
    /// it and allow rules on schemas `a` and `b` do not (NOTES-18). (A
    /// policy that resolves through the session's path refuses a SET of
    /// it today; the session state is what the server accepted.)
    #[test]
    fn a_quoted_search_path_item_with_a_comma_is_one_schema() {
        let p = policy(
            r#"
rules = [
  { action = "allow", tables = ['"a,b".t'] },
  { action = "allow", tables = ["a.u", "b.u"] },
]
"#,
        );
        let mut s = session();
        let allowed = |s: &mut SqlSession<Verdict>, sql: &str| {
            let v = s.verdict(sql, &p).unwrap();
            (v.action == Action::Allow, v.reason.clone())
        };
        assert!(!allowed(&mut s, "SELECT * FROM t").0);
        ran(&mut s, "SET search_path TO \"a,b\"", &p);
        let (ok, why) = allowed(&mut s, "SELECT * FROM t");
        assert!(ok, "{why}");
        let (ok, why) = allowed(&mut s, "SELECT * FROM u");
        assert!(!ok, "{why}");
        assert_eq!(s.context().search_path, vec!["a,b"]);
        // RESET returns to the startup path.
        ran(&mut s, "RESET search_path", &p);
        assert_eq!(s.context().search_path, vec!["app_user", "public"]);
        assert!(!allowed(&mut s, "SELECT * FROM t").0);
    }

    #[test]
    fn data_literals_share_an_entry_kept_literals_do_not_and_a_path_change_empties_it() {
        let p = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let mut s = session();
        let a = s.verdict("SELECT a FROM t WHERE id = 1", &p).unwrap();
        let b = s
            .verdict("select a from t where id = 2 -- again", &p)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(s.cached_decisions(), 1);
        // A function argument is not data: another decision.
        let c = s.verdict("SELECT pg_read_file('/tmp/x')", &p).unwrap();
        let d = s.verdict("SELECT pg_read_file('/etc/shadow')", &p).unwrap();
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(s.cached_decisions(), 3);
        // A text that changes the session is never cached.
        s.verdict("SET search_path TO app", &p).unwrap();
        assert_eq!(s.cached_decisions(), 3);
        ran(&mut s, "SET search_path TO app", &p);
        assert_eq!(s.cached_decisions(), 0);
        assert!(s.verdict("SELEC 1", &p).is_err());
    }

    #[test]
    fn prepared_statements_are_tracked_for_their_executes() {
        let p = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let mut s = session();
        let exec = analyze("EXECUTE s").unwrap();
        assert_eq!(s.undefined_execute(&exec), Some("s"));
        assert_eq!(
            s.undefined_execute(&analyze("PREPARE s AS SELECT 1; EXECUTE s").unwrap()),
            None
        );
        assert_eq!(s.verdict("EXECUTE s", &p).unwrap().action, Action::Deny);
        ran(&mut s, "PREPARE s AS SELECT 1", &p);
        assert!(s.knows_prepared("s"));
        assert_eq!(s.undefined_execute(&exec), None);
        assert_eq!(s.verdict("EXECUTE s", &p).unwrap().action, Action::Allow);
        assert_eq!(
            s.executed_texts(&exec).as_deref(),
            Some("-- s was prepared by: PREPARE s AS SELECT 1")
        );
        s.forget_prepared("s");
        assert!(!s.knows_prepared("s"));
        assert_eq!(s.executed_texts(&exec), None);
    }

    #[test]
    fn session_rules_no_policy_waives() {
        let ro = analyze("SET default_transaction_read_only = off").unwrap();
        assert!(check_settings(&ro, false, false).is_ok());
        let why = check_settings(&ro, false, true).unwrap_err();
        assert!(why.contains("read-only"), "{why}");
        let rw = analyze("BEGIN READ WRITE").unwrap();
        assert!(check_settings(&rw, false, true).is_err());
        let planner = analyze("SET enable_seqscan = off").unwrap();
        assert!(check_settings(&planner, false, false).is_ok());
        let why = check_settings(&planner, true, false).unwrap_err();
        assert!(why.contains("enable_seqscan"), "{why}");
    }
}
