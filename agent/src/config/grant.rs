//! `[[grant]]`: the model (an account on a target: upstream identity,
//! policy, masking, HTTP credential, allow-list) and its checks, including
//! the references to accounts, targets, policies and maskings.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Diags, index, join};
use super::load::Decoded;
use super::target::{Protocol, protocol_of};
use super::validate::check_absolute;

/// `[[grant]]`: one account on one target, with the upstream identity Warden
/// uses for it and the rules it is held to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub account: String,
    pub target: String,
    /// Upstream database the account works in; a client may ask for this
    /// one (or none, meaning this one) and no other.
    #[serde(default)]
    pub database: Option<String>,
    /// Role Warden authenticates as upstream.
    #[serde(default)]
    pub upstream_user: Option<String>,
    /// File holding that role's password (first line), readable only by the
    /// agent; never sent by, or shown to, the workload.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of the `[policy.NAME]` the account's statements are held to.
    #[serde(default)]
    pub policy: Option<String>,
    /// Name of the `[masking.NAME]` applied to what comes back.
    #[serde(default)]
    pub masking: Option<String>,
    /// The grant is read-only: the upstream session is started with
    /// `default_transaction_read_only = on` and a client may not turn it off.
    #[serde(default)]
    pub read_only: bool,
}

/// `credential = { kind = "bearer", file = "/etc/warden/secrets/api" }`,
/// `{ kind = "basic", username = "svc", file = "..." }` or
/// `{ kind = "header", header = "X-Api-Key", file = "..." }` in a
/// `[[grant]]` on an HTTP target: the credential Warden sets on every
/// request (the workload's own `Authorization`, `Proxy-Authorization` and
/// `Cookie` headers are always removed). The file's first line is the
/// secret; it must be owned by the agent and mode 0600. Kept beside the
/// grant in [`Config::credentials`] (keyed by account and target).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCredential {
    pub kind: CredentialKind,
    pub file: PathBuf,
    /// `basic` only: the user name.
    #[serde(default)]
    pub username: Option<String>,
    /// `header` only: the header's name.
    #[serde(default)]
    pub header: Option<String>,
    /// What becomes of the credentials the upstream issues in exchange for
    /// this one (session cookies, tokens). Default `hold`.
    #[serde(default)]
    pub issued: IssuedCredentials,
}

/// `issued = "hold" | "drop" | "pass"` in a `credential`: a session cookie
/// or token the upstream derives from the injected credential is a
/// credential of its own, usable without Warden (on other hosts of the
/// cookie's domain, or after the workload leaves its cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuedCredentials {
    /// `Set-Cookie` is kept by Warden (one jar per grant) and sent back on
    /// the grant's later requests, so upstream sessions still work;
    /// token-bearing response headers are removed and token members of
    /// JSON bodies redacted: the workload never holds them.
    #[default]
    Hold,
    /// As `hold`, but cookies are dropped instead of kept.
    Drop,
    /// Passed to the workload as the upstream sent them (it can then talk
    /// to the upstream without Warden).
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(username:secret)`.
    Basic,
    /// `<header>: <secret>`.
    Header,
}

pub(super) fn check_grants(d: &Decoded, diags: &mut Diags<'_>) {
    let accounts: HashSet<&str> = d
        .accounts
        .iter()
        .flatten()
        .map(|a| a.name.as_str())
        .collect();
    let target_names: HashSet<&str> = d
        .target_names
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let policies: HashSet<&str> = d.policies.iter().map(|(k, _)| k.as_str()).collect();
    let maskings: HashSet<&str> = d.maskings.iter().map(|(k, _)| k.as_str()).collect();
    let mut pairs: HashMap<(&str, &str), String> = HashMap::new();
    for (i, g) in d.grants.iter().enumerate() {
        let Some(g) = g else { continue };
        let at = index("grant", i);
        if !accounts.contains(g.account.as_str()) {
            diags.at(
                &join(&at, "account"),
                format!(
                    "unknown account {:?} (no [[account]] has that name)",
                    g.account
                ),
            );
        }
        if !target_names.contains(g.target.as_str()) {
            diags.at(
                &join(&at, "target"),
                format!(
                    "unknown target {:?} (no [[target]] has that name)",
                    g.target
                ),
            );
        }
        if let Some(first) = pairs.get(&(g.account.as_str(), g.target.as_str())) {
            let line = diags.line_of(first);
            diags.at(
                &at,
                format!(
                    "a second grant of {:?} on {:?} (the first is at line {line})",
                    g.account, g.target
                ),
            );
        } else {
            pairs.insert((&g.account, &g.target), at.clone());
        }
        let Some(protocol) = protocol_of(d, &g.target) else {
            continue;
        };
        if protocol == Protocol::Tcp {
            for (key, set) in [
                ("database", g.database.is_some()),
                ("upstream_user", g.upstream_user.is_some()),
                ("password_file", g.password_file.is_some()),
                ("policy", g.policy.is_some()),
                ("masking", g.masking.is_some()),
                ("read_only", g.read_only),
                (
                    "credential",
                    d.credentials.get(i).is_some_and(Option::is_some),
                ),
            ] {
                if set {
                    diags.at(
                        &join(&at, key),
                        format!(
                            "{:?} is a tcp target: Warden does not speak its protocol, \
                             so `{key}` cannot apply",
                            g.target
                        ),
                    );
                }
            }
            continue;
        }
        if protocol == Protocol::Http {
            check_http_grant(
                &at,
                g,
                d.credentials.get(i).and_then(Option::as_ref),
                d,
                diags,
            );
            continue;
        }
        if d.credentials.get(i).is_some_and(Option::is_some) {
            diags.at(
                &join(&at, "credential"),
                format!(
                    "`credential` is for http targets; {:?} is a {} target (use \
                     upstream_user and password_file)",
                    g.target,
                    protocol.as_str()
                ),
            );
        }
        if let Some(p) = g.policy.as_deref()
            && let Some(Some(cfg)) = d.policies.iter().find(|(k, _)| k == p).map(|(_, c)| c)
            && cfg.has_http_rules()
        {
            diags.at(
                &join(&at, "policy"),
                format!(
                    "policy {p:?} has HTTP rules (methods, paths, ...), which cannot apply to \
                     the {} target {:?}",
                    protocol.as_str(),
                    g.target
                ),
            );
        }
        for (key, missing) in [
            ("database", g.database.is_none()),
            ("upstream_user", g.upstream_user.is_none()),
            ("password_file", g.password_file.is_none()),
            ("policy", g.policy.is_none()),
        ] {
            if missing {
                diags.at(
                    &at,
                    format!(
                        "missing `{key}`: a grant on the {} target {:?} needs database, \
                         upstream_user, password_file and policy",
                        protocol.as_str(),
                        g.target
                    ),
                );
            }
        }
        for (key, v) in [
            ("database", &g.database),
            ("upstream_user", &g.upstream_user),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.contains('\0'))
            {
                diags.at(&join(&at, key), "must be a non-empty name without NUL");
            }
        }
        if let Some(p) = &g.password_file {
            check_absolute(&join(&at, "password_file"), p, diags);
        }
        if let Some(p) = &g.policy
            && !policies.contains(p.as_str())
        {
            diags.at(
                &join(&at, "policy"),
                format!("unknown policy {p:?} (no [policy.{p}] table)"),
            );
        }
        if let Some(m) = &g.masking
            && !maskings.contains(m.as_str())
        {
            diags.at(
                &join(&at, "masking"),
                format!("unknown masking {m:?} (no [masking.{m}] table)"),
            );
        }
    }
}

// --- allow-lists (issue 19) ---
/// `mode`, `allowlist` and `on_new` of each `[[grant]]`: enforce needs an
/// allow-list file that parses (its problems are reported as
/// `file:line`), `on_new` is for enforce mode, tcp targets have none.
pub(super) fn check_allowlists(d: &Decoded, diags: &mut Diags<'_>) {
    use crate::policy::allowlist::{AllowlistFile, Mode};
    for (i, (g, a)) in d.grants.iter().zip(&d.allowlists).enumerate() {
        let (Some(g), Some(a)) = (g, a) else { continue };
        let at = index("grant", i);
        if protocol_of(d, &g.target) == Some(Protocol::Tcp) {
            diags.at(
                &join(&at, "mode"),
                format!(
                    "{:?} is a tcp target: Warden does not see its requests, so \
                     there is nothing to learn or enforce",
                    g.target
                ),
            );
            continue;
        }
        match a.mode {
            None => diags.at(
                &at,
                "`allowlist` and `on_new` need `mode = \"learn\"` or `mode = \"enforce\"`",
            ),
            Some(Mode::Enforce) if a.allowlist.is_none() => diags.at(
                &join(&at, "mode"),
                "mode = \"enforce\" needs `allowlist = FILE` (write one with \
                 `warden policy freeze`)",
            ),
            Some(Mode::Learn) if a.on_new.is_some() => diags.at(
                &join(&at, "on_new"),
                "`on_new` applies in mode = \"enforce\"",
            ),
            _ => {}
        }
        if let Some(path) = &a.allowlist {
            check_absolute(&join(&at, "allowlist"), path, diags);
            if a.mode == Some(Mode::Enforce)
                && path.is_absolute()
                && let Err(e) = AllowlistFile::load(path)
            {
                diags.at(&join(&at, "allowlist"), e.to_string());
            }
        }
    }
}

/// A grant on an HTTP target: a policy (with no SQL rules), an optional
/// credential, and none of the database keys.
pub(super) fn check_http_grant(
    at: &str,
    g: &crate::config::Grant,
    credential: Option<&crate::config::HttpCredential>,
    d: &Decoded,
    diags: &mut Diags<'_>,
) {
    for (key, set) in [
        ("database", g.database.is_some()),
        ("upstream_user", g.upstream_user.is_some()),
        ("password_file", g.password_file.is_some()),
        ("read_only", g.read_only),
    ] {
        if set {
            diags.at(
                &join(at, key),
                format!(
                    "{:?} is an http target: `{key}` is for database targets (use credential)",
                    g.target
                ),
            );
        }
    }
    match g.policy.as_deref() {
        None => diags.at(
            at,
            format!(
                "missing `policy`: a grant on the http target {:?} needs a policy",
                g.target
            ),
        ),
        Some(p) => match d.policies.iter().find(|(k, _)| k == p) {
            None => diags.at(
                &join(at, "policy"),
                format!("unknown policy {p:?} (no [policy.{p}] table)"),
            ),
            Some((_, Some(cfg))) if cfg.has_sql_rules() => diags.at(
                &join(at, "policy"),
                format!(
                    "policy {p:?} has SQL rules (classes, tables, functions), which cannot \
                     apply to the http target {:?}",
                    g.target
                ),
            ),
            Some(_) => {}
        },
    }
    if let Some(m) = &g.masking
        && !d.maskings.iter().any(|(k, _)| k == m)
    {
        diags.at(
            &join(at, "masking"),
            format!("unknown masking {m:?} (no [masking.{m}] table)"),
        );
    }
    if let Some(c) = credential {
        use crate::config::CredentialKind;
        let key = join(at, "credential");
        check_absolute(&join(&key, "file"), &c.file, diags);
        match (c.kind, &c.username, &c.header) {
            (CredentialKind::Basic, None, _) => diags.at(&key, "kind = \"basic\" needs `username`"),
            (CredentialKind::Basic, Some(u), _) if u.contains(':') || u.is_empty() => {
                diags.at(&join(&key, "username"), "must be non-empty and without ':'")
            }
            (CredentialKind::Header, _, None) => {
                diags.at(&key, "kind = \"header\" needs `header` (its name)")
            }
            (CredentialKind::Header, _, Some(h))
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
            {
                diags.at(&join(&key, "header"), format!("{h:?} is not a header name"))
            }
            (CredentialKind::Bearer, Some(_), _) | (CredentialKind::Header, Some(_), _) => diags
                .at(
                    &join(&key, "username"),
                    "only kind = \"basic\" has a username",
                ),
            _ => {}
        }
        if c.kind != CredentialKind::Header && c.header.is_some() {
            diags.at(
                &join(&key, "header"),
                "only kind = \"header\" names a header",
            );
        }
    }
}
