//! Statement and request allow-lists learned from traffic (learn → freeze
//! → enforce), and the fingerprint they, the decision cache and approval
//! grants share.
//!
//! - [`fingerprint`]: one normalised form per request (SQL through
//!   PostgreSQL's own scanner; HTTP method, path shape, parameter names)
//!   and its short id.
//! - [`shape_cache`]: values (decisions) cached by statement shape.
//! - [`file`]: the reviewed allow-list file a grant names.
//! - [`learned`]: what a grant in learn mode has seen.
//!
//! A grant's `mode`:
//! - absent: the rule policy decides; the fingerprint is still recorded.
//! - `learn`: the rule policy decides; each fingerprint is recorded in the
//!   grant's learned file (`warden policy learned`, `warden policy freeze`).
//! - `enforce`: a request passes only if its fingerprint is in the
//!   `allowlist` file **and** the rule policy allows it; a new one is
//!   refused (`on_new = "refuse"`, the default) or held for approval
//!   (`on_new = "approve"`; `warden approvals approve --learn` adds it to
//!   the file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub mod commands;
pub mod file;
pub mod fingerprint;
pub mod learned;
// MySQL (issue 20): its normaliser, on sqlparser's MySQL tokenizer.
pub mod mysql_fingerprint;
pub mod shape_cache;

pub use file::{AllowlistFile, AllowlistFileError};
pub use fingerprint::{
    Fingerprint, LiteralMask, SqlScan, data_literals, http_fingerprint, sql_fingerprint,
};
pub use learned::{LearnStore, LearnedFile, learned_path};
pub use mysql_fingerprint::mysql_fingerprint;
pub use shape_cache::ShapeCache;

/// `mode` of a `[[grant]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Learn,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Enforce => "enforce",
        }
    }
}

/// `on_new` of a `[[grant]]` in enforce mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNew {
    /// Refused (42501 / 403) naming the fingerprint.
    #[default]
    Refuse,
    /// Held for approval.
    Approve,
}

/// The allow-list keys of a `[[grant]]`, decoded apart from the grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistSettings {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub allowlist: Option<PathBuf>,
    #[serde(default)]
    pub on_new: Option<OnNew>,
}

impl AllowlistSettings {
    /// True when no key was given.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.allowlist.is_none() && self.on_new.is_none()
    }
}

/// What the allow-list made of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListVerdict {
    /// Learn mode: recorded.
    Learned,
    /// Enforce mode: listed.
    Listed,
    /// Enforce mode: not listed (refused or held).
    NotListed,
}

/// The allow-list facts of an audit event (statement or API).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllowlistFacts {
    /// Fingerprint id (`None` when the request has none, e.g. a text the
    /// scanner rejects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `learn` or `enforce`; absent when the grant has no mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<ListVerdict>,
}

/// A grant's allow-list, compiled at configuration load.
#[derive(Debug)]
pub struct GrantAllowlist {
    pub grant: String,
    pub mode: Mode,
    pub on_new: OnNew,
    pub file: Option<PathBuf>,
    list: RwLock<AllowlistFile>,
    learn: Option<Arc<LearnStore>>,
}

/// What [`GrantAllowlist::judge`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Go on with the rule policy's decision.
    Pass,
    /// Refuse, with the client's message.
    Refuse(String),
    /// Hold for approval, with why.
    Hold(String),
}

impl GrantAllowlist {
    /// The runtime of a grant's settings (`None` without a mode).
    pub fn build(
        settings: &AllowlistSettings,
        state_dir: &Path,
        account: &str,
        target: &str,
    ) -> Result<Option<Self>, AllowlistFileError> {
        let Some(mode) = settings.mode else {
            return Ok(None);
        };
        let grant = format!("{account}/{target}");
        let list = match (&settings.allowlist, mode) {
            (Some(p), Mode::Enforce) => AllowlistFile::load(p)?,
            _ => AllowlistFile::default(),
        };
        let learn = (mode == Mode::Learn)
            .then(|| learned::store_for(&learned_path(state_dir, account, target), &grant));
        Ok(Some(GrantAllowlist {
            grant,
            mode,
            on_new: settings.on_new.unwrap_or_default(),
            file: settings.allowlist.clone(),
            list: RwLock::new(list),
            learn,
        }))
    }

    /// The allow-list's verdict on a request with fingerprint `fp`
    /// (`None`: the request has none, so it is never listed), whose rule
    /// decision is `decision`, shown as `example` (masked).
    pub fn judge(
        &self,
        fp: Option<&Fingerprint>,
        protocol: &str,
        example: &str,
        decision: &str,
    ) -> (ListVerdict, Judged) {
        match self.mode {
            Mode::Learn => {
                if let (Some(fp), Some(store)) = (fp, &self.learn) {
                    store.record(fp, protocol, example, decision);
                }
                (ListVerdict::Learned, Judged::Pass)
            }
            Mode::Enforce => {
                let listed = fp.is_some_and(|fp| {
                    self.list
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&fp.id)
                });
                if listed {
                    return (ListVerdict::Listed, Judged::Pass);
                }
                let id = fp.map_or("(none: the request could not be fingerprinted)", |f| &f.id);
                let why = format!(
                    "fingerprint {id} is not in the allow-list of grant {}",
                    self.grant
                );
                let j = match self.on_new {
                    OnNew::Refuse => Judged::Refuse(why),
                    OnNew::Approve if fp.is_some() => Judged::Hold(why),
                    OnNew::Approve => Judged::Refuse(why),
                };
                (ListVerdict::NotListed, j)
            }
        }
    }

    // --- `approve --learn` (learn area: approval/learn.rs writes the file) ---
    /// Lists `entry` from now on (it is in the file: `approve --learn`
    /// wrote it); the rest of the file waits for a reload.
    pub fn list_also(&self, entry: file::Entry) {
        self.list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .insert(entry.id.clone(), entry);
    }

    /// Adds a fingerprint to the allow-list file and to this runtime
    /// (`approve --learn`).
    pub fn add(
        &self,
        fp: &Fingerprint,
        protocol: &str,
        example: &str,
    ) -> Result<(), AllowlistFileError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.file else {
            return Ok(());
        };
        // The file as the operator left it, plus the new entry.
        let mut on_disk = AllowlistFile::load(path)?;
        on_disk.entries.insert(
            fp.id.clone(),
            file::Entry {
                id: fp.id.clone(),
                protocol: protocol.to_owned(),
                text: fp.text.clone(),
                example: Some(example.to_owned()),
            },
        );
        on_disk.write(path, &format!("Allow-list of grant {}", self.grant))?;
        *list = on_disk;
        Ok(())
    }
}
