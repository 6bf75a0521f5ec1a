//! `[[account]]`: the model (units, cgroups, uids, targets, pinned
//! executable, identity source) and its checks; the cgroup-path and
//! unit-name rules enrollment shares.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Diags, index, join};
use super::load::Decoded;
use super::model::defaults;
use super::target::{Protocol, SUPPORTED_PROTOCOLS, protocol_of};
use super::validate::check_absolute;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    /// systemd units whose cgroup belongs to this account, e.g.
    /// `orders-api.service`; resolved to the unit's cgroup2 path under its
    /// slice, and re-resolved when the unit restarts.
    #[serde(default)]
    pub units: Vec<String>,
    /// cgroup2 paths relative to the cgroup2 mount, e.g. `/system.slice/x.service`.
    #[serde(default)]
    pub cgroups: Vec<String>,
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Names of `[[target]]`s this account may reach.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Executable pin: connections whose process runs another binary are
    /// refused (`identity_mismatch`).
    #[serde(default)]
    pub exe: Option<ExePin>,
    /// Where the account's identity token comes from.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

/// `exe = { path = "/usr/bin/orders-api", sha256 = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExePin {
    /// Absolute path of the executable (`/proc/<pid>/exe`).
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the executable's bytes.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `identity = { kind = "token_file", … }` or `identity = { kind = "mint" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub kind: IdentityKind,
    /// `token_file`: the JWT on disk (re-read when it changes).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `token_file`: JWKS on disk; exactly one of `jwks_file`, `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// `token_file`: JWKS over HTTPS.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// `token_file`: CA bundle for `jwks_url` (default: the system roots).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// `token_file`: required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (`token_file`), or the `aud` of minted tokens (`mint`).
    #[serde(default)]
    pub audience: Option<String>,
    /// `token_file`: exact `sub` the token must carry.
    #[serde(default)]
    pub subject: Option<String>,
    /// `token_file`: `sub` must be `spiffe://<domain>/…`.
    #[serde(default)]
    pub spiffe_trust_domain: Option<String>,
    /// `token_file`: accepted `alg`s (RS256, RS384, RS512, PS256, ES256, ES384, EdDSA).
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// `token_file`: clock leeway in seconds (at most 60).
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// `token_file`: least time between two JWKS fetches caused by an unknown `kid`.
    #[serde(default = "defaults::refresh_cooldown_secs")]
    pub refresh_cooldown_secs: u64,
    /// `token_file`: check the token once per connection (default) or before
    /// every command of protocols that have commands.
    #[serde(default)]
    pub recheck: Recheck,
    /// `mint`: lifetime of minted tokens in seconds.
    #[serde(default = "defaults::mint_ttl_secs")]
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    TokenFile,
    Mint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recheck {
    #[default]
    PerConnection,
    PerCommand,
}

pub(super) fn check_accounts(d: &Decoded, diags: &mut Diags<'_>) {
    let target_names: HashSet<&str> = d
        .target_names
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut names: HashMap<&str, String> = HashMap::new();
    // First claim of each cgroup path / uid: (account index, key of the claim).
    let mut cgroups: HashMap<&str, (usize, String)> = HashMap::new();
    let mut uids: HashMap<u32, (usize, String)> = HashMap::new();
    let mut units: HashMap<&str, (usize, String)> = HashMap::new();
    let label = |i: usize| match d.accounts.get(i) {
        Some(Some(a)) => format!("account {:?}", a.name),
        _ => index("account", i),
    };

    for (i, a) in d.accounts.iter().enumerate() {
        let Some(a) = a else { continue };
        let at = index("account", i);
        let name_key = join(&at, "name");

        if a.name.is_empty() {
            diags.at(&name_key, "must not be empty");
        } else if !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            diags.at(
                &name_key,
                format!(
                    "invalid account name {:?}: use only letters, digits, '.', '_' and '-'",
                    a.name
                ),
            );
        }
        if !a.name.is_empty() {
            if let Some(first) = names.get(a.name.as_str()) {
                let line = diags.line_of(first);
                diags.at(
                    &name_key,
                    format!(
                        "duplicate account name {:?} (also used at line {line})",
                        a.name
                    ),
                );
            } else {
                names.insert(&a.name, name_key.clone());
            }
        }

        for (j, cg) in a.cgroups.iter().enumerate() {
            let key = index(&join(&at, "cgroups"), j);
            if let Some(problem) = enrolled_cgroup_problem(cg) {
                diags.at(&key, format!("invalid cgroup path {cg:?}: {problem}"));
            }
            match cgroups.get(cg.as_str()) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "cgroup {cg:?} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    cgroups.insert(cg, (i, key));
                }
            }
        }

        for (j, uid) in a.uids.iter().enumerate() {
            let key = index(&join(&at, "uids"), j);
            match uids.get(uid) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "uid {uid} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    uids.insert(*uid, (i, key));
                }
            }
        }

        for (j, unit) in a.units.iter().enumerate() {
            let key = index(&join(&at, "units"), j);
            if let Some(problem) = unit_name_problem(unit) {
                diags.at(&key, format!("invalid unit name {unit:?}: {problem}"));
            }
            match units.get(unit.as_str()) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "unit {unit:?} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    units.insert(unit, (i, key));
                }
            }
        }

        // A unit and a cgroup path naming the same cgroup, in two accounts.
        for (j, unit) in a.units.iter().enumerate() {
            for (k, other) in d.accounts.iter().enumerate() {
                let Some(other) = other else { continue };
                if k == i {
                    continue;
                }
                if let Some(cg) = other
                    .cgroups
                    .iter()
                    .find(|cg| cg.rsplit('/').next() == Some(unit.as_str()))
                {
                    diags.at(
                        &index(&join(&at, "units"), j),
                        format!(
                            "unit {unit:?} of {} is the cgroup {cg:?} that {} claims",
                            label(i),
                            label(k)
                        ),
                    );
                }
            }
        }

        if let Some(exe) = &a.exe {
            let key = join(&at, "exe");
            check_absolute(&join(&key, "path"), &exe.path, diags);
            if let Some(h) = &exe.sha256
                && !(h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                diags.at(
                    &join(&key, "sha256"),
                    "must be 64 lowercase hex digits (the output of sha256sum)",
                );
            }
        }

        if let Some(id) = &a.identity {
            check_identity(&join(&at, "identity"), id, diags);
        }

        for (j, t) in a.targets.iter().enumerate() {
            let key = index(&join(&at, "targets"), j);
            if !target_names.contains(t.as_str()) {
                diags.at(
                    &key,
                    format!("unknown target {t:?} (no [[target]] has name = {t:?})"),
                );
            } else if let Some(p) = protocol_of(d, t)
                && p != Protocol::Tcp
                && SUPPORTED_PROTOCOLS.contains(&p)
            {
                diags.at(
                    &key,
                    format!(
                        "{t:?} is a {} target: it needs a [[grant]] (upstream_user, \
                         password_file, policy), not an entry in targets",
                        p.as_str()
                    ),
                );
            }
        }
    }
}

pub(super) fn check_identity(key: &str, id: &IdentityConfig, diags: &mut Diags<'_>) {
    let field = |name: &str| join(key, name);
    match id.kind {
        IdentityKind::TokenFile => {
            match &id.token_file {
                Some(p) => check_absolute(&field("token_file"), p, diags),
                None => diags.at(key, "kind = \"token_file\" needs token_file"),
            }
            match (&id.jwks_file, &id.jwks_url) {
                (Some(p), None) => check_absolute(&field("jwks_file"), p, diags),
                (None, Some(u)) => {
                    if !u.starts_with("https://") {
                        diags.at(
                            &field("jwks_url"),
                            format!("must be an https:// URL, got {u:?}"),
                        );
                    }
                }
                (Some(_), Some(_)) => {
                    diags.at(&field("jwks_url"), "give jwks_file or jwks_url, not both")
                }
                (None, None) => diags.at(key, "kind = \"token_file\" needs jwks_file or jwks_url"),
            }
            if let Some(p) = &id.jwks_ca_file {
                check_absolute(&field("jwks_ca_file"), p, diags);
                if id.jwks_url.is_none() {
                    diags.at(&field("jwks_ca_file"), "only used with jwks_url");
                }
            }
            for (name, v) in [("issuer", &id.issuer), ("audience", &id.audience)] {
                match v {
                    Some(v) if v.is_empty() => diags.at(&field(name), "must not be empty"),
                    Some(_) => {}
                    None => diags.at(key, format!("kind = \"token_file\" needs {name}")),
                }
            }
            if id.subject.is_some() && id.spiffe_trust_domain.is_some() {
                diags.at(
                    &field("spiffe_trust_domain"),
                    "give subject or spiffe_trust_domain, not both",
                );
            }
            if id.algorithms.is_empty() {
                diags.at(&field("algorithms"), "must name at least one algorithm");
            }
            for (j, alg) in id.algorithms.iter().enumerate() {
                if !crate::identity::token::SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                    diags.at(
                        &index(&field("algorithms"), j),
                        format!(
                            "algorithm {alg:?} is not allowed (allowed: {})",
                            crate::identity::token::SUPPORTED_ALGORITHMS.join(", ")
                        ),
                    );
                }
            }
            if id.leeway_secs > 60 {
                diags.at(
                    &field("leeway_secs"),
                    format!("must be at most 60, got {}", id.leeway_secs),
                );
            }
        }
        IdentityKind::Mint => {
            for (name, set) in [
                ("token_file", id.token_file.is_some()),
                ("jwks_file", id.jwks_file.is_some()),
                ("jwks_url", id.jwks_url.is_some()),
                ("jwks_ca_file", id.jwks_ca_file.is_some()),
                ("issuer", id.issuer.is_some()),
                ("subject", id.subject.is_some()),
                ("spiffe_trust_domain", id.spiffe_trust_domain.is_some()),
            ] {
                if set {
                    diags.at(
                        &field(name),
                        format!("{name} is not used with kind = \"mint\""),
                    );
                }
            }
            if !(10..=3600).contains(&id.ttl_secs) {
                diags.at(
                    &field("ttl_secs"),
                    format!("must be between 10 and 3600, got {}", id.ttl_secs),
                );
            }
        }
    }
}

/// A cgroup2 path relative to the cgroup2 mount: `/a/b`, no `.`/`..` or empty
/// segments, no trailing `/`. The root `/` itself only when `allow_root`.
pub(super) fn check_cgroup(key: &str, path: &str, allow_root: bool, diags: &mut Diags<'_>) {
    if let Some(problem) = cgroup_path_problem(path, allow_root) {
        diags.at(key, format!("invalid cgroup path {path:?}: {problem}"));
    }
}

/// What is wrong with a cgroup2 path (relative to the mount), if anything.
/// Shared by the config checks and live `warden enroll`.
pub fn cgroup_path_problem(path: &str, allow_root: bool) -> Option<&'static str> {
    if path == "/" {
        (!allow_root).then_some("the cgroup2 root \"/\" is not allowed here")
    } else if !path.starts_with('/') {
        Some("must start with \"/\" (a path relative to the cgroup2 mount)")
    } else if path == "/sys/fs/cgroup" || path.starts_with("/sys/fs/cgroup/") {
        Some(
            "must be relative to the cgroup2 mount: write \"/x.service\", not \
             \"/sys/fs/cgroup/x.service\"",
        )
    } else if path.ends_with('/') {
        Some("must not end with \"/\"")
    } else if path[1..].split('/').any(str::is_empty) {
        Some("must not contain an empty segment (\"//\")")
    } else if path[1..].split('/').any(|s| s == "." || s == "..") {
        Some("must not contain \".\" or \"..\" segments")
    } else {
        None
    }
}

/// What is wrong with a cgroup2 path to enroll, if anything: a valid path
/// (not the root) no deeper than the kernel side's ancestor walk reaches
/// (`warden_common::MAX_ENROLLED_LEVEL`; callers below it are covered at any
/// depth). Shared by the config checks and live `warden enroll`.
pub fn enrolled_cgroup_problem(path: &str) -> Option<&'static str> {
    cgroup_path_problem(path, false).or_else(|| {
        (cgroup_level(path) > warden_common::MAX_ENROLLED_LEVEL as usize).then_some(
            "is deeper than level 127, the deepest an enrolled cgroup may be (the \
             kernel side checks a caller's ancestors from there up; enroll an \
             ancestor instead, which covers every cgroup below it)",
        )
    })
}

/// Level of a cgroup2 path: `/` is 0, `/a` is 1, `/a/b` is 2.
pub fn cgroup_level(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

/// What is wrong with a systemd unit name, if anything.
pub fn unit_name_problem(unit: &str) -> Option<&'static str> {
    let Some((stem, kind)) = unit.rsplit_once('.') else {
        return Some("must end in .service or .scope");
    };
    if !matches!(kind, "service" | "scope") {
        Some("must end in .service or .scope")
    } else if stem.is_empty() {
        Some("has an empty name")
    } else if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
    {
        Some("may contain only letters, digits and \":-_.\\@\"")
    } else {
        None
    }
}
