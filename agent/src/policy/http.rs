//! HTTP rules: the same `[policy.NAME]` tables as SQL, with rules that
//! carry HTTP criteria (`methods`, `paths`, `query`, `headers`,
//! `max_body_bytes`) compiled into an [`HttpPolicy`]. Pure code.
//!
//! A rule matches when every criterion it has matches: the method is
//! listed, a path glob matches the normalised path (see
//! [`crate::protocol::http::path`]; lower-cased on both sides with
//! `path_case = "insensitive"`, and always for `block` and `approve`
//! rules, since Express, ASP.NET Core and IIS route paths without regard
//! to case), its `query` and `headers` matchers match,
//! and the body is at most `max_body_bytes` (a body of unknown size
//! matches, with the bound enforced while it streams). The most
//! restrictive match wins (block > approve > allow); nothing matching means
//! the policy's default (deny unless `default = "allow"`). SQL rules in the
//! table are ignored here.
//!
//! `HEAD` is `GET` to a `block` or `approve` rule: nginx, Rails, Flask,
//! Express, Django and Spring run the GET handler for it (its effects
//! happen, its head reaches the client). An `allow` rule names the methods
//! it lets through exactly.
//!
//! Parameters and headers are read as every framework may read them (see
//! [`crate::protocol::http::params`]: folded names, `&`/`;` splitting,
//! parameters in form, multipart and JSON bodies, header values whole and
//! as lists), and a matcher must hold under every reading, in the
//! direction that is safe for its rule:
//! - an `allow` rule's matcher needs the parameter in the query (the
//!   header in the head) and **every** occurrence, in the query and the
//!   body, to be a string matching the glob: `?dry_run=true&dry_run=false`,
//!   `?dry_run[]=true` or a body field `dry_run=false` do not match
//!   `query = { dry_run = "true" }`;
//! - a `block` or `approve` rule's matcher matches when **any** occurrence
//!   matches (or is no plain string: an array or a file may be read as
//!   anything), so a second copy cannot hide the value it looks for.

use std::collections::HashMap;

use super::glob::glob_match;
use super::model::{DefaultAction, PathCase, PolicyConfig, RuleAction};
use super::rules::{Action, PolicyProblem, RuleRef};
use crate::protocol::http::params::{Param, fold_header, fold_name};
use crate::protocol::http::path::path_glob;

/// One request as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestFacts<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Normalised match path (see `Target::match_path`).
    pub path: &'a str,
    /// Query parameters, every reading ([`crate::protocol::http::params::query_params`]).
    pub query: &'a [Param],
    /// Parameters of a form, multipart or JSON body, when it was read.
    pub body: &'a [Param],
    /// Request headers ([`crate::protocol::http::params::header_params`]).
    pub headers: &'a [Param],
    /// Declared body size; `None` when chunked (unknown).
    pub body_len: Option<u64>,
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpVerdict {
    pub action: Action,
    /// The deciding rule; `None` = the default.
    pub rule: Option<RuleRef>,
    /// Human text naming the rule or saying why.
    pub reason: String,
    /// For an allowed body of unknown size: the most bytes it may have.
    pub body_limit: Option<u64>,
}

impl HttpVerdict {
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

#[derive(Debug, Clone)]
struct HttpRule {
    index: usize,
    label: String,
    action: RuleAction,
    methods: Vec<String>,
    paths: Vec<String>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    max_body_bytes: Option<u64>,
}

/// A compiled HTTP policy.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    name: String,
    default: DefaultAction,
    insensitive: bool,
    rules: Vec<HttpRule>,
}

impl HttpPolicy {
    /// Validate and compile the HTTP rules of `[policy.NAME]`.
    pub fn compile(name: &str, cfg: &PolicyConfig) -> Result<HttpPolicy, Vec<PolicyProblem>> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| {
            problems.push(PolicyProblem { key, message });
        };
        let insensitive = cfg.path_case == PathCase::Insensitive;
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::new();
        for (i, rc) in cfg.rules.iter().enumerate() {
            if !rc.is_http() {
                continue;
            }
            let key = format!("rules[{i}]");
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
            let mut methods = Vec::new();
            for (j, m) in rc.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                    problem(
                        format!("{key}.methods[{j}]"),
                        format!("{m:?} is not a method name"),
                    );
                }
                methods.push(m.to_ascii_uppercase());
            }
            let mut paths = Vec::new();
            for (j, p) in rc.paths.iter().enumerate() {
                if !p.starts_with('/') {
                    problem(
                        format!("{key}.paths[{j}]"),
                        format!("{p:?} must start with '/'"),
                    );
                } else if p.contains(['?', '#', '%', '\\']) {
                    problem(
                        format!("{key}.paths[{j}]"),
                        format!(
                            "{p:?}: write the decoded path, without query, fragment or escapes"
                        ),
                    );
                } else if p
                    .split('/')
                    .any(|s| s == "." || s == ".." || (s.contains("**") && s != "**"))
                {
                    problem(
                        format!("{key}.paths[{j}]"),
                        format!("{p:?}: no '.'/'..' segments; '**' must be a whole segment"),
                    );
                }
                // Block and approve rules compare paths without regard to
                // case whatever `path_case` says (see [`HttpPolicy::decide`]).
                paths.push(if insensitive || rc.action != RuleAction::Allow {
                    p.to_lowercase()
                } else {
                    p.clone()
                });
            }
            if rc.max_body_bytes == Some(0) && rc.action != RuleAction::Allow {
                problem(
                    format!("{key}.max_body_bytes"),
                    "0 with a block/approve rule matches only empty bodies; say what is meant"
                        .into(),
                );
            }
            rules.push(HttpRule {
                index: i,
                label,
                action: rc.action,
                methods,
                paths,
                query: rc
                    .query
                    .iter()
                    .map(|(k, v)| (fold_name(k).0, v.clone()))
                    .collect(),
                headers: rc
                    .headers
                    .iter()
                    .map(|(k, v)| (fold_header(k), v.clone()))
                    .collect(),
                max_body_bytes: rc.max_body_bytes,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(HttpPolicy {
            name: name.to_owned(),
            default: cfg.default,
            insensitive,
            rules,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The readings of a request path (see [`Readings`]).
    fn readings(&self, path: &str) -> Readings {
        Readings {
            exact: [if self.insensitive {
                path.to_lowercase()
            } else {
                path.to_owned()
            }],
            loose: format_readings(&path.to_lowercase()),
        }
    }

    /// Whether a rule with parameter matchers (`query = {…}`) applies to
    /// this method and path: then the parameters of the request's body
    /// matter, whatever its type says (see
    /// [`crate::protocol::http::params::untyped_body_params`]).
    pub fn reads_body_parameters(&self, method: &str, path: &str) -> bool {
        let readings = self.readings(path);
        self.rules
            .iter()
            .any(|r| !r.query.is_empty() && Self::applies(r, method, readings.of(r.action)))
    }

    /// Whether a method override (`_method` in an untyped POST body, which
    /// Rack's MethodOverride and Symfony honour for POST) could change how
    /// `req` is judged: some method is decided otherwise here, or has
    /// rules that read parameters. Methods no rule names are all judged
    /// alike, so the methods the rules name and one they do not are every
    /// case.
    pub fn method_override_matters(&self, req: &HttpRequestFacts<'_>) -> bool {
        let judged = |method: &str| {
            let v = self.decide(&HttpRequestFacts { method, ..*req });
            (v.action, v.body_limit)
        };
        let as_sent = judged(req.method);
        self.rules
            .iter()
            .flat_map(|r| r.methods.iter().map(String::as_str))
            .chain(["WARDEN-UNNAMED"])
            .any(|m| judged(m) != as_sent || self.reads_body_parameters(m, req.path))
    }

    /// Decide on one request.
    pub fn decide(&self, req: &HttpRequestFacts<'_>) -> HttpVerdict {
        let readings = self.readings(req.path);
        let mut best: Option<(&HttpRule, Action)> = None;
        for r in &self.rules {
            if !Self::matches(r, req, readings.of(r.action)) {
                continue;
            }
            let action = match r.action {
                RuleAction::Allow => Action::Allow,
                RuleAction::Approve => Action::Approve,
                RuleAction::Block => Action::Block,
            };
            let rank = |a: Action| match a {
                Action::Allow => 0,
                Action::Approve => 1,
                Action::Deny => 2,
                Action::Block => 3,
            };
            if best.is_none_or(|(_, b)| rank(action) > rank(b)) {
                best = Some((r, action));
            }
        }
        match best {
            Some((r, action)) => {
                let verb = match action {
                    Action::Allow => "allowed",
                    Action::Approve => "requires approval",
                    _ => "blocked",
                };
                HttpVerdict {
                    action,
                    rule: Some(RuleRef {
                        index: r.index,
                        label: r.label.clone(),
                    }),
                    reason: format!("{verb} by rule {:?} of policy {:?}", r.label, self.name),
                    body_limit: if action == Action::Allow && req.body_len.is_none() {
                        r.max_body_bytes
                    } else {
                        None
                    },
                }
            }
            None => match self.default {
                DefaultAction::Allow => HttpVerdict {
                    action: Action::Allow,
                    rule: None,
                    reason: format!("allowed by the default of policy {:?}", self.name),
                    body_limit: None,
                },
                DefaultAction::Deny => HttpVerdict {
                    action: Action::Deny,
                    rule: None,
                    reason: format!("no rule of policy {:?} allows this request", self.name),
                    body_limit: None,
                },
            },
        }
    }

    /// Whether `r`'s method and path criteria match.
    fn applies(r: &HttpRule, method: &str, readings: &[String]) -> bool {
        let every = r.action == RuleAction::Allow;
        // A `block` or `approve` rule on GET holds HEAD too: servers and
        // frameworks run the GET handler for it (see the module docs).
        let method_is = |m: &String| m == method || (!every && m == "GET" && method == "HEAD");
        if !r.methods.is_empty() && !r.methods.iter().any(method_is) {
            return false;
        }
        r.paths.is_empty()
            || r.paths
                .iter()
                .any(|p| readings.iter().any(|path| path_glob(p, path)))
    }

    fn matches(r: &HttpRule, req: &HttpRequestFacts<'_>, readings: &[String]) -> bool {
        // See the module docs: every occurrence for allow, any for the rest.
        let every = r.action == RuleAction::Allow;
        if !Self::applies(r, req.method, readings) {
            return false;
        }
        let holds = |name: &str, glob: &str, first: &[Param], more: &[Param]| {
            let mut all = first.iter().chain(more).filter(|p| p.name == name);
            if every {
                let fits = |p: &Param| p.value.as_deref().is_some_and(|v| glob_match(glob, v));
                first.iter().any(|p| p.name == name) && all.all(fits)
            } else {
                let fits = |p: &Param| p.value.as_deref().is_some_and(|v| loose_match(glob, v));
                all.any(|p| p.value.is_none() || fits(p))
            }
        };
        if !r
            .query
            .iter()
            .all(|(k, glob)| holds(k, glob, req.query, req.body))
        {
            return false;
        }
        if !r
            .headers
            .iter()
            .all(|(k, glob)| holds(k, glob, req.headers, &[]))
        {
            return false;
        }
        if let (Some(max), Some(len)) = (r.max_body_bytes, req.body_len)
            && len > max
        {
            return false;
        }
        true
    }
}

/// How rules read one request path. An `allow` rule reads it as written
/// (lower-cased with `path_case = "insensitive"`); `block` and `approve`
/// rules read it as loosely as an upstream may: without regard to case
/// (Express's router, ASP.NET Core and IIS route `/ADMIN` to `/admin` by
/// default) and with a format suffix cut ([`format_readings`]).
struct Readings {
    exact: [String; 1],
    loose: Vec<String>,
}

impl Readings {
    fn of(&self, action: RuleAction) -> &[String] {
        if action == RuleAction::Allow {
            &self.exact
        } else {
            &self.loose
        }
    }
}

/// The paths a `block` or `approve` rule matches a request path as: as
/// written, and with a format suffix cut from its last segment (`.json`,
/// `.tar.gz`, a trailing `.`), which routers read as the same action (Rails'
/// `(.:format)`, Spring's suffix patterns, IIS's trailing dots).
fn format_readings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    let trimmed = path.trim_end_matches('/');
    let start = trimmed.rfind('/').map_or(0, |i| i + 1);
    let last = &trimmed[start..];
    for cut in [last.find('.'), last.rfind('.')].into_iter().flatten() {
        if cut > 0 {
            let reading = format!("{}{}", &trimmed[..start], &last[..cut]);
            if !out.contains(&reading) {
                out.push(reading);
            }
        }
    }
    out
}

/// How a `block` or `approve` matcher reads a value: as loosely as an
/// upstream may. Frameworks read header values without regard to case and
/// booleans in many spellings (`TRUE`, `1`, `on`, `yes`, `t`...), often
/// after trimming blanks, so a value that some reading takes for the one a
/// matcher looks for matches it. (`allow` matchers stay exact.)
fn loose_match(glob: &str, value: &str) -> bool {
    let (g, v) = (glob.to_lowercase(), value.trim().to_lowercase());
    if glob_match(&g, &v) {
        return true;
    }
    matches!((boolean(&g), boolean(&v)), (Some(a), Some(b)) if a == b)
}

/// The truth value a framework may read from a spelling.
fn boolean(s: &str) -> Option<bool> {
    match s {
        "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::params::{BodyFormat, body_params, header_params, query_params};

    fn policy(text: &str) -> HttpPolicy {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        HttpPolicy::compile("api", &cfg).unwrap()
    }

    fn decide(p: &HttpPolicy, method: &str, path: &str) -> HttpVerdict {
        p.decide(&HttpRequestFacts {
            method,
            path,
            query: &[],
            body: &[],
            headers: &[],
            body_len: Some(0),
        })
    }

    #[test]
    fn a_method_override_matters_where_another_method_is_judged_otherwise() {
        let p = policy(
            r#"
rules = [
  { action = "allow", paths = ["/upload/*"] },
  { action = "allow", methods = ["POST"], paths = ["/items/*"] },
  { action = "allow", paths = ["/limits/*"] },
  { action = "approve", methods = ["PUT"], paths = ["/limits/*"] },
  { action = "allow", methods = ["GET", "POST"], paths = ["/q/*"] },
  { action = "block", methods = ["GET"], paths = ["/q/*"], query = { a = "1" } },
]
"#,
        );
        let matters = |path: &str| {
            p.method_override_matters(&HttpRequestFacts {
                method: "POST",
                path,
                query: &[],
                body: &[],
                headers: &[],
                body_len: Some(1 << 30),
            })
        };
        assert!(!matters("/upload/a"));
        // DELETE (and any method no rule names) is denied there.
        assert!(matters("/items/7"));
        // PUT is held for approval there.
        assert!(matters("/limits/x"));
        // GET has a rule that reads parameters.
        assert!(matters("/q/x"));
    }

    const POLICY: &str = r#"
rules = [
  { action = "allow", methods = ["GET", "post"], paths = ["/**"] },
  { action = "block", methods = ["DELETE"], paths = ["/admin/**"], name = "no-admin-delete" },
  { action = "block", paths = ["/admin/**"], name = "no-admin" },
  { action = "approve", methods = ["PUT"], paths = ["/orders/*"] },
  { action = "allow", methods = ["DELETE"], paths = ["/tmp/*"], query = { dry_run = "true" } },
  { action = "allow", methods = ["PUT"], paths = ["/upload"], max_body_bytes = 10 },
]
"#;

    #[test]
    fn most_restrictive_match_wins_and_default_denies() {
        let p = policy(POLICY);
        assert!(decide(&p, "GET", "/orders/1").is_allowed());
        let v = decide(&p, "DELETE", "/admin/x");
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.rule.as_ref().unwrap().label, "no-admin-delete");
        assert_eq!(decide(&p, "GET", "/admin").action, Action::Block);
        assert_eq!(decide(&p, "PUT", "/orders/1").action, Action::Approve);
        let v = decide(&p, "PATCH", "/orders/1");
        assert_eq!(v.action, Action::Deny);
        assert!(v.rule.is_none());
        assert_eq!(decide(&p, "DELETE", "/tmp/x").action, Action::Deny);
        assert!(decide(&p, "POST", "/x").is_allowed());
    }

    #[test]
    fn head_is_get_to_block_and_approve_rules_only() {
        let p = policy(
            r#"
default = "allow"
rules = [
  { action = "block", methods = ["GET"], paths = ["/admin/**"] },
  { action = "approve", methods = ["GET"], paths = ["/export"] },
]
"#,
        );
        assert_eq!(decide(&p, "HEAD", "/admin/x").action, Action::Block);
        assert_eq!(decide(&p, "HEAD", "/export").action, Action::Approve);
        assert!(decide(&p, "HEAD", "/other").is_allowed());
        let p = policy(r#"rules = [{ action = "allow", methods = ["GET"], paths = ["/**"] }]"#);
        assert_eq!(decide(&p, "HEAD", "/x").action, Action::Deny);
    }

    #[test]
    fn query_headers_and_body_size() {
        let p = policy(POLICY);
        let q = query_params("dry_run=true");
        let facts = |body_len| HttpRequestFacts {
            method: "DELETE",
            path: "/tmp/x",
            query: &q,
            body: &[],
            headers: &[],
            body_len,
        };
        assert!(p.decide(&facts(Some(0))).is_allowed());
        let put = |body_len| {
            p.decide(&HttpRequestFacts {
                method: "PUT",
                path: "/upload",
                query: &[],
                body: &[],
                headers: &[],
                body_len,
            })
        };
        assert!(put(Some(10)).is_allowed());
        assert_eq!(put(Some(11)).action, Action::Deny);
        let v = put(None);
        assert!(v.is_allowed());
        assert_eq!(v.body_limit, Some(10));
        let h = policy(
            r#"rules = [{ action = "allow", paths = ["/x"], headers = { "X-Env" = "prod*" } }]"#,
        );
        let hd = header_params([("x-env", &b"production"[..])]);
        let f = HttpRequestFacts {
            method: "GET",
            path: "/x",
            query: &[],
            body: &[],
            headers: &hd,
            body_len: Some(0),
        };
        assert!(h.decide(&f).is_allowed());
        assert_eq!(decide(&h, "GET", "/x").action, Action::Deny);
    }

    #[test]
    fn case_insensitive_paths() {
        let text = "path_case = \"insensitive\"\nrules = [{ action = \"block\", paths = [\"/Admin/**\"] }, { action = \"allow\", paths = [\"/**\"] }]";
        let p = policy(text);
        assert_eq!(decide(&p, "GET", "/ADMIN").action, Action::Block);
        assert_eq!(decide(&p, "GET", "/aDmIn/x").action, Action::Block);
        // A block rule reads paths without regard to case whatever
        // path_case says (Express, ASP.NET Core, IIS route them alike);
        // an allow rule compares them as written unless told otherwise.
        let s = policy(&text.replace("path_case = \"insensitive\"", ""));
        assert_eq!(decide(&s, "GET", "/ADMIN").action, Action::Block);
        assert_eq!(decide(&s, "GET", "/aDmIn/x.json").action, Action::Block);
        let a = policy("rules = [{ action = \"allow\", paths = [\"/Public/**\"] }]");
        assert!(decide(&a, "GET", "/Public/x").is_allowed());
        assert_eq!(decide(&a, "GET", "/public/x").action, Action::Deny);
    }

    #[test]
    fn compile_problems_and_sql_rules_ignored() {
        let cfg: PolicyConfig = toml::from_str(
            r#"rules = [
  { action = "allow", paths = ["admin"] },
  { action = "allow", methods = ["G E T"] },
  { action = "allow", paths = ["/a/../b", "/a**"] },
  { action = "allow", classes = ["read"] },
]"#,
        )
        .unwrap();
        let problems = HttpPolicy::compile("p", &cfg).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rules[0].paths[0]",
                "rules[1].methods[0]",
                "rules[2].paths[0]",
                "rules[2].paths[1]"
            ]
        );
        // The SQL compiler skips HTTP rules and refuses mixed ones.
        let sql: PolicyConfig = toml::from_str(
            r#"rules = [{ action = "allow", paths = ["/x"] }, { action = "allow", classes = ["read"], methods = ["GET"] }]"#,
        )
        .unwrap();
        let problems = crate::policy::Policy::compile("p", &sql).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "rules[1]");
        assert!(sql.has_http_rules() && sql.has_sql_rules());
    }

    /// `(method, query, body form, headers)` decided by `p` on `/tmp/x`.
    fn facts_decide(
        p: &HttpPolicy,
        method: &str,
        q: &str,
        body: &str,
        h: &[(&str, &str)],
    ) -> Action {
        let query = query_params(q);
        let body = body_params(&BodyFormat::Form, body.as_bytes()).unwrap();
        let headers = header_params(h.iter().map(|(k, v)| (*k, v.as_bytes())));
        p.decide(&HttpRequestFacts {
            method,
            path: "/tmp/x",
            query: &query,
            body: &body,
            headers: &headers,
            body_len: Some(0),
        })
        .action
    }

    #[test]
    fn an_allow_matcher_holds_for_every_occurrence_and_reading() {
        let p = policy(POLICY);
        let d = |q: &str, body: &str| facts_decide(&p, "DELETE", q, body, &[]);
        assert_eq!(d("dry_run=true", ""), Action::Allow);
        assert_eq!(d("dry_run=true&x=1", "y=2"), Action::Allow);
        for (q, body) in [
            ("dry_run=true&dry_run=false", ""),
            ("dry_run=false&dry_run=true", ""),
            ("dry_run=true;dry_run=false", ""),
            ("dry_run=true&DRY_RUN=false", ""),
            ("dry_run=true&dry.run=false", ""),
            ("dry_run=true&dry_run[]=true", ""),
            ("dry_run[]=true", ""),
            ("dry_run=true&%64ry_run=false", ""),
            ("dry_run=true", "dry_run=false"),
            ("dry_run=true", "dry_run[x]=true"),
            ("", "dry_run=true"),
            ("dry_run=true%00", ""),
        ] {
            assert_eq!(d(q, body), Action::Deny, "?{q} body {body}");
        }
        // Headers: every line and every list member.
        let h = policy(
            r#"rules = [{ action = "allow", paths = ["/**"], headers = { "X-Env" = "prod*" } }]"#,
        );
        let hd = |hs: &[(&str, &str)]| facts_decide(&h, "GET", "", "", hs);
        assert_eq!(hd(&[("x-env", "production")]), Action::Allow);
        assert_eq!(hd(&[("X-Env", "prod"), ("x-env", "dev")]), Action::Deny);
        assert_eq!(hd(&[("X-Env", "prod"), ("X_Env", "dev")]), Action::Deny);
        assert_eq!(hd(&[("X-Env", "prod, dev")]), Action::Deny);
        assert_eq!(hd(&[("X_ENV", "prod")]), Action::Allow);
    }

    #[test]
    fn a_block_matcher_holds_for_any_occurrence_and_reading() {
        let p = policy(
            r#"rules = [
  { action = "allow", paths = ["/**"] },
  { action = "block", paths = ["/**"], query = { force = "true" }, name = "no-force" },
  { action = "approve", paths = ["/**"], headers = { "X-Sudo" = "1" } },
]"#,
        );
        let d = |q: &str, body: &str| facts_decide(&p, "POST", q, body, &[]);
        assert_eq!(d("force=false", ""), Action::Allow);
        for (q, body) in [
            ("force=true", ""),
            ("force=false&force=true", ""),
            ("x=1;force=true", ""),
            ("FORCE=true", ""),
            ("force[]=x", ""),
            ("", "force=true"),
            ("force=false", "a=1&force=true"),
        ] {
            assert_eq!(d(q, body), Action::Block, "?{q} body {body}");
        }
        let h = |hs: &[(&str, &str)]| facts_decide(&p, "GET", "", "", hs);
        assert_eq!(h(&[("x-sudo", "0")]), Action::Allow);
        assert_eq!(h(&[("x-sudo", "0"), ("X-Sudo", "1")]), Action::Approve);
        assert_eq!(h(&[("x_sudo", "0, 1")]), Action::Approve);
    }

    #[test]
    fn block_and_approve_matchers_read_values_as_loosely_as_an_upstream_may() {
        use super::loose_match;
        for v in [
            "true", "TRUE", "True", "1", "on", "ON", "yes", "t", " true ",
        ] {
            assert!(loose_match("true", v), "{v}");
        }
        for v in ["false", "0", "off", "no", "truex", ""] {
            assert!(!loose_match("true", v), "{v}");
        }
        assert!(loose_match("prod*", "PROD-eu"));
        assert!(loose_match("prod*", "Prod"));
        assert!(!loose_match("prod*", "staging"));
        assert!(loose_match("0", "false"));
    }

    #[test]
    fn block_paths_match_with_a_format_suffix_cut() {
        use super::format_readings;
        assert_eq!(format_readings("/admin.json"), ["/admin.json", "/admin"]);
        assert_eq!(format_readings("/admin."), ["/admin.", "/admin"]);
        assert_eq!(format_readings("/admin.html/"), ["/admin.html/", "/admin"]);
        assert_eq!(
            format_readings("/a/b.tar.gz"),
            ["/a/b.tar.gz", "/a/b", "/a/b.tar"]
        );
        assert_eq!(format_readings("/a/.well-known"), ["/a/.well-known"]);
        assert_eq!(format_readings("/"), ["/"]);
    }
}
