//! `[policy.NAME]` tables: each compiled once, at load, for both kinds of
//! target (SQL rules for PostgreSQL/MySQL, HTTP rules for HTTP); every
//! problem of each is reported at its key. The compiled policies travel in
//! the [`Config`](super::Config) ([`Compiled`](super::Compiled)) to the
//! protocol runtimes, which never compile a policy themselves.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Diags, join};
use super::load::Decoded;
use crate::policy::{HttpPolicy, Policy};

/// Every `[policy.NAME]` compiled: the SQL and the HTTP form of each.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicies {
    pub(super) sql: BTreeMap<String, Arc<Policy>>,
    pub(super) http: BTreeMap<String, Arc<HttpPolicy>>,
}

/// Compiles each `[policy.NAME]`, reporting every problem at its key.
pub(super) fn check(d: &Decoded, diags: &mut Diags<'_>) -> CompiledPolicies {
    let mut out = CompiledPolicies::default();
    for (name, cfg) in &d.policies {
        let Some(cfg) = cfg else { continue };
        let at = join("policy", name);
        match Policy::compile(name, cfg) {
            Ok(p) => {
                out.sql.insert(name.clone(), Arc::new(p));
            }
            Err(problems) => {
                for p in problems {
                    diags.at(&sub_key(&at, &p.key), p.message);
                }
            }
        }
        match HttpPolicy::compile(name, cfg) {
            Ok(p) => {
                out.http.insert(name.clone(), Arc::new(p));
            }
            Err(problems) => {
                for p in problems {
                    diags.at(&sub_key(&at, &p.key), p.message);
                }
            }
        }
    }
    out
}

/// `parent.key` for a key path relative to `parent` (`rules[2].tables[0]`);
/// `parent` alone for a problem of the whole table.
pub(super) fn sub_key(parent: &str, key: &str) -> String {
    if key.is_empty() {
        parent.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}
