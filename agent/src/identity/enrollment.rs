//! Enrollment: which cgroups and uids belong to which account.
//!
//! Selectors come from the config file and from `warden enroll` (persisted in
//! `<state_dir>/enrollments.json` so they survive restarts). cgroup paths are
//! resolved to cgroup ids (the cgroup directory's inode), and re-resolved
//! periodically because systemd recreates a unit's cgroup, with a new id, on
//! every restart.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warden_common::{ConnMeta, MATCH_CGROUP, MATCH_UID};

use super::unit;
use crate::config::Config;
use crate::ebpf::cgroup;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Cgroup(String),
    /// A systemd unit, resolved to its cgroup under its slice.
    Unit(String),
    Uid(u32),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Cgroup(p) => write!(f, "cgroup {p}"),
            Selector::Unit(u) => write!(f, "unit {u}"),
            Selector::Uid(u) => write!(f, "uid {u}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorSource {
    Config,
    Live,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("no account named {account:?} in the configuration")]
    UnknownAccount { account: String },
    #[error("{selector} is already enrolled for account {account:?}")]
    Claimed { selector: Selector, account: String },
    #[error("{selector} is not enrolled for account {account:?}")]
    NotEnrolled { selector: Selector, account: String },
    #[error("{selector} of account {account:?} is set in {file}; remove it there and restart")]
    FromConfig {
        selector: Selector,
        account: String,
        file: PathBuf,
    },
    #[error("invalid unit name {unit:?}: {reason}")]
    InvalidUnit { unit: String, reason: &'static str },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidCgroup { path: String, reason: &'static str },
    #[error("saving enrollments to {path}: {source}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enrollments file {path} is unreadable: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    account: String,
    selector: Selector,
    source: SelectorSource,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersistedFile {
    version: u32,
    entries: Vec<PersistedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersistedEntry {
    account: String,
    #[serde(flatten)]
    selector: Selector,
}

/// One row of `warden status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollmentView {
    pub account: String,
    pub selector: Selector,
    pub source: SelectorSource,
    /// Resolved cgroup id; `None` for uids, and for cgroups that do not exist (yet).
    pub cgroup_id: Option<u64>,
    /// For units: the cgroup2 path the unit currently has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
}

pub struct Enrollments {
    entries: Vec<Entry>,
    persist_path: PathBuf,
    config_file: PathBuf,
    account_tags: HashMap<String, u32>,
    cgroup_ids: HashMap<u64, (String, String)>,
    path_ids: BTreeMap<String, u64>,
    unit_paths: BTreeMap<String, String>,
    /// Where each enrolled unit's cgroup was last seen, kept while the unit
    /// is down (between a restart's rmdir and mkdir), so the kernel keeps
    /// watching that path for the cgroup's return.
    last_unit_paths: BTreeMap<String, String>,
    uids: HashMap<u32, String>,
}

impl Enrollments {
    /// Selectors from the config plus the persisted live ones. Persisted
    /// entries whose account vanished from the config, or that the config now
    /// gives to another account, are dropped with a warning.
    pub fn load(config: &Config, persist_path: PathBuf) -> Result<Self, EnrollError> {
        let mut entries = Vec::new();
        for a in &config.accounts {
            for u in &a.units {
                entries.push(Entry {
                    account: a.name.clone(),
                    selector: Selector::Unit(u.clone()),
                    source: SelectorSource::Config,
                });
            }
            for c in &a.cgroups {
                entries.push(Entry {
                    account: a.name.clone(),
                    selector: Selector::Cgroup(c.clone()),
                    source: SelectorSource::Config,
                });
            }
            for u in &a.uids {
                entries.push(Entry {
                    account: a.name.clone(),
                    selector: Selector::Uid(*u),
                    source: SelectorSource::Config,
                });
            }
        }
        let mut me = Self {
            entries,
            persist_path,
            config_file: config.source.clone(),
            account_tags: config
                .accounts
                .iter()
                .enumerate()
                .map(|(i, a)| (a.name.clone(), i as u32))
                .collect(),
            cgroup_ids: HashMap::new(),
            path_ids: BTreeMap::new(),
            unit_paths: BTreeMap::new(),
            last_unit_paths: BTreeMap::new(),
            uids: HashMap::new(),
        };
        match fs::read(&me.persist_path) {
            Ok(bytes) => {
                let file: PersistedFile =
                    serde_json::from_slice(&bytes).map_err(|e| EnrollError::Corrupt {
                        path: me.persist_path.clone(),
                        detail: e.to_string(),
                    })?;
                for p in file.entries {
                    if let Err(e) = me.check_new(&p.account, &p.selector) {
                        tracing::warn!(account = %p.account, selector = %p.selector, error = %e, "dropping persisted enrollment");
                        continue;
                    }
                    me.entries.push(Entry {
                        account: p.account,
                        selector: p.selector,
                        source: SelectorSource::Live,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EnrollError::Persist {
                    path: me.persist_path.clone(),
                    source,
                });
            }
        }
        me.rebuild_uids();
        Ok(me)
    }

    fn check_new(&self, account: &str, selector: &Selector) -> Result<(), EnrollError> {
        if !self.account_tags.contains_key(account) {
            return Err(EnrollError::UnknownAccount {
                account: account.to_owned(),
            });
        }
        match selector {
            Selector::Cgroup(p) => validate_cgroup_path(p)?,
            Selector::Unit(u) => {
                if let Some(reason) = crate::config::account::unit_name_problem(u) {
                    return Err(EnrollError::InvalidUnit {
                        unit: u.clone(),
                        reason,
                    });
                }
            }
            Selector::Uid(_) => {}
        }
        if let Some(e) = self.entries.iter().find(|e| &e.selector == selector) {
            return Err(EnrollError::Claimed {
                selector: selector.clone(),
                account: e.account.clone(),
            });
        }
        Ok(())
    }

    /// Adds a live selector and persists it. The caller then resolves and
    /// syncs the kernel maps.
    pub fn enroll(&mut self, account: &str, selector: Selector) -> Result<(), EnrollError> {
        self.check_new(account, &selector)?;
        self.entries.push(Entry {
            account: account.to_owned(),
            selector,
            source: SelectorSource::Live,
        });
        if let Err(e) = self.persist() {
            self.entries.pop();
            return Err(e);
        }
        self.rebuild_uids();
        Ok(())
    }

    /// Removes a live selector and persists the change.
    pub fn unenroll(&mut self, account: &str, selector: &Selector) -> Result<(), EnrollError> {
        let Some(pos) = self
            .entries
            .iter()
            .position(|e| e.account == account && &e.selector == selector)
        else {
            return Err(EnrollError::NotEnrolled {
                selector: selector.clone(),
                account: account.to_owned(),
            });
        };
        if self.entries[pos].source == SelectorSource::Config {
            return Err(EnrollError::FromConfig {
                selector: selector.clone(),
                account: account.to_owned(),
                file: self.config_file.clone(),
            });
        }
        let removed = self.entries.remove(pos);
        if let Err(e) = self.persist() {
            self.entries.insert(pos, removed);
            return Err(e);
        }
        self.rebuild_uids();
        Ok(())
    }

    fn persist(&self) -> Result<(), EnrollError> {
        let file = PersistedFile {
            version: 1,
            entries: self
                .entries
                .iter()
                .filter(|e| e.source == SelectorSource::Live)
                .map(|e| PersistedEntry {
                    account: e.account.clone(),
                    selector: e.selector.clone(),
                })
                .collect(),
        };
        let err = |source| EnrollError::Persist {
            path: self.persist_path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| err(io::Error::other(e)))?;
        if let Some(dir) = self.persist_path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        crate::fsutil::replace_atomic(&self.persist_path, &bytes, 0o600).map_err(err)
    }

    fn rebuild_uids(&mut self) {
        self.uids = self
            .entries
            .iter()
            .filter_map(|e| match e.selector {
                Selector::Uid(u) => Some((u, e.account.clone())),
                Selector::Cgroup(_) | Selector::Unit(_) => None,
            })
            .collect();
    }

    /// Re-reads the cgroup id of every enrolled cgroup path, and the cgroup
    /// of every enrolled unit. Returns true when anything changed (the kernel
    /// map must then be synced). When two selectors land on the same cgroup,
    /// the first keeps it and the clash is logged.
    pub fn resolve(&mut self, mount: &Path) -> bool {
        let mut ids: HashMap<u64, (String, String)> = HashMap::new();
        let mut path_ids = BTreeMap::new();
        let mut unit_paths = BTreeMap::new();
        for e in &self.entries {
            let path = match &e.selector {
                Selector::Cgroup(p) => p.clone(),
                Selector::Unit(u) => match unit::resolve(mount, u) {
                    Some(p) => {
                        unit_paths.insert(u.clone(), p.clone());
                        p
                    }
                    None => continue,
                },
                Selector::Uid(_) => continue,
            };
            match cgroup::cgroup_id(&cgroup::cgroup_dir(mount, &path)) {
                Ok(id) => {
                    if let Some((other, _)) = ids.get(&id) {
                        if other != &e.account {
                            tracing::warn!(cgroup = %path, account = %e.account, other.account = %other, "cgroup claimed by two accounts; keeping the first");
                        }
                        continue;
                    }
                    ids.insert(id, (e.account.clone(), path.clone()));
                    path_ids.insert(path, id);
                }
                Err(err) => {
                    tracing::debug!(cgroup = %path, error = %err, "enrolled cgroup does not exist (yet)");
                }
            }
        }
        let changed = ids != self.cgroup_ids;
        self.cgroup_ids = ids;
        self.path_ids = path_ids;
        for (u, p) in &unit_paths {
            self.last_unit_paths.insert(u.clone(), p.clone());
        }
        self.unit_paths = unit_paths;
        changed
    }

    /// Contents for the kernel's enrolled-cgroups map.
    pub fn cgroup_entries(&self) -> Vec<(u64, u32)> {
        self.cgroup_ids
            .iter()
            .map(|(id, (acct, _))| (*id, self.tag(acct)))
            .collect()
    }

    /// Contents for the kernel's enrolled-unit paths: each enrolled unit's
    /// cgroup2 path (where it was last seen, also while it is down; else
    /// where systemd puts a service by default, `/system.slice/UNIT`) and its
    /// account's tag, so the kernel enrolls the unit's cgroup the moment it
    /// is created.
    pub fn unit_path_entries(&self) -> Vec<(String, u32)> {
        self.entries
            .iter()
            .filter_map(|e| match &e.selector {
                Selector::Unit(u) => Some((
                    self.last_unit_paths
                        .get(u)
                        .cloned()
                        .unwrap_or_else(|| format!("/system.slice/{u}")),
                    self.tag(&e.account),
                )),
                Selector::Cgroup(_) | Selector::Uid(_) => None,
            })
            .collect()
    }

    /// Contents for the kernel's enrolled-uids map.
    pub fn uid_entries(&self) -> Vec<(u32, u32)> {
        self.uids
            .iter()
            .map(|(uid, acct)| (*uid, self.tag(acct)))
            .collect()
    }

    fn tag(&self, account: &str) -> u32 {
        self.account_tags.get(account).copied().unwrap_or(u32::MAX)
    }

    /// The account the kernel matched for this connection, and the enrolled
    /// cgroup path when it matched by cgroup.
    pub fn account_for(&self, meta: &ConnMeta) -> Option<(String, Option<String>)> {
        match meta.match_kind {
            MATCH_CGROUP => self
                .cgroup_ids
                .get(&meta.matched_id)
                .map(|(a, p)| (a.clone(), Some(p.clone()))),
            MATCH_UID => u32::try_from(meta.matched_id)
                .ok()
                .and_then(|u| self.uids.get(&u))
                .map(|a| (a.clone(), None)),
            _ => None,
        }
    }

    /// The accounts a process belongs to by enrollment, sorted: those
    /// enrolled for one of `cgroup_ids` (its cgroups and every ancestor; any
    /// of them, not only the nearest), for a cgroup path (or a unit's
    /// current path) that is one of `cgroup_paths` or an ancestor of one
    /// (which also holds between two resolutions, after a cgroup was
    /// recreated, and for every account of a cgroup two accounts claim),
    /// or for one of `uids`.
    pub fn accounts_of(
        &self,
        cgroup_ids: &[u64],
        cgroup_paths: &[String],
        uids: &[u32],
    ) -> Vec<String> {
        let by_path = self.entries.iter().filter_map(|e| {
            let enrolled = match &e.selector {
                Selector::Cgroup(p) => Some(p.as_str()),
                Selector::Unit(u) => self.unit_paths.get(u).map(String::as_str),
                Selector::Uid(_) => None,
            }?;
            cgroup_paths
                .iter()
                .any(|p| cgroup_within(p, enrolled))
                .then(|| e.account.clone())
        });
        let mut out: Vec<String> = cgroup_ids
            .iter()
            .filter_map(|id| self.cgroup_ids.get(id).map(|(a, _)| a.clone()))
            .chain(by_path)
            .chain(uids.iter().filter_map(|u| self.uids.get(u).cloned()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn list(&self) -> Vec<EnrollmentView> {
        self.entries
            .iter()
            .map(|e| EnrollmentView {
                account: e.account.clone(),
                selector: e.selector.clone(),
                source: e.source,
                cgroup_id: match &e.selector {
                    Selector::Cgroup(p) => self.path_ids.get(p).copied(),
                    Selector::Unit(u) => self
                        .unit_paths
                        .get(u)
                        .and_then(|p| self.path_ids.get(p))
                        .copied(),
                    Selector::Uid(_) => None,
                },
                cgroup_path: match &e.selector {
                    Selector::Unit(u) => self.unit_paths.get(u).cloned(),
                    _ => None,
                },
            })
            .collect()
    }
}

/// Whether cgroup `path` is `ancestor` or below it (both relative to the
/// cgroup2 mount, `/`-separated).
fn cgroup_within(path: &str, ancestor: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty()
        || path
            .strip_prefix(a)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A cgroup2 path relative to the mount, checked as the config file's are.
/// The root cannot be enrolled: it would cover every process; nor can a
/// cgroup deeper than the kernel side's ancestor walk reaches.
pub fn validate_cgroup_path(p: &str) -> Result<(), EnrollError> {
    match crate::config::account::enrolled_cgroup_problem(p) {
        Some(reason) => Err(EnrollError::InvalidCgroup {
            path: p.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(src: &str) -> Config {
        Config::parse(src, Path::new("/etc/warden/warden.toml")).unwrap()
    }

    const CFG: &str = r#"
[[target]]
name = "db"
protocol = "tcp"
address = "127.0.0.2:5432"
[[account]]
name = "a"
cgroups = ["/a.slice"]
uids = [1001]
targets = ["db"]
[[account]]
name = "b"
targets = ["db"]
"#;

    #[test]
    fn live_enrollments_persist_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enrollments.json");
        let cfg = config(CFG);
        let mut e = Enrollments::load(&cfg, path.clone()).unwrap();
        e.enroll("b", Selector::Uid(2002)).unwrap();
        e.enroll("b", Selector::Cgroup("/b.slice/x".into()))
            .unwrap();
        let e2 = Enrollments::load(&cfg, path).unwrap();
        let live: Vec<_> = e2
            .list()
            .into_iter()
            .filter(|v| v.source == SelectorSource::Live)
            .map(|v| v.selector)
            .collect();
        assert_eq!(
            live,
            vec![Selector::Uid(2002), Selector::Cgroup("/b.slice/x".into())]
        );
    }

    #[test]
    fn conflicts_and_config_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(CFG);
        let mut e = Enrollments::load(&cfg, dir.path().join("e.json")).unwrap();
        assert!(matches!(
            e.enroll("b", Selector::Uid(1001)),
            Err(EnrollError::Claimed { .. })
        ));
        assert!(matches!(
            e.enroll("nobody", Selector::Uid(5)),
            Err(EnrollError::UnknownAccount { .. })
        ));
        assert!(matches!(
            e.unenroll("a", &Selector::Uid(1001)),
            Err(EnrollError::FromConfig { .. })
        ));
        assert!(matches!(
            e.unenroll("b", &Selector::Uid(7)),
            Err(EnrollError::NotEnrolled { .. })
        ));
        for bad in ["a", "/", "/a/", "/a//b", "/a/../b", "/./a"] {
            assert!(
                matches!(
                    e.enroll("b", Selector::Cgroup(bad.into())),
                    Err(EnrollError::InvalidCgroup { .. })
                ),
                "{bad}"
            );
        }
        e.enroll("b", Selector::Uid(7)).unwrap();
        e.unenroll("b", &Selector::Uid(7)).unwrap();
        assert!(e.uid_entries().iter().all(|(u, _)| *u != 7));
    }

    #[test]
    fn resolves_cgroup_ids_by_inode_and_matches_accounts() {
        let mount = tempfile::tempdir().unwrap();
        fs::create_dir_all(mount.path().join("a.slice")).unwrap();
        let cfg = config(CFG);
        let state = tempfile::tempdir().unwrap();
        let mut e = Enrollments::load(&cfg, state.path().join("e.json")).unwrap();
        assert!(e.resolve(mount.path()));
        assert!(!e.resolve(mount.path()), "unchanged on second pass");
        let id = cgroup::cgroup_id(&mount.path().join("a.slice")).unwrap();
        assert_eq!(e.cgroup_entries(), vec![(id, 0)]);
        let meta = ConnMeta {
            match_kind: MATCH_CGROUP,
            matched_id: id,
            ..Default::default()
        };
        assert_eq!(
            e.account_for(&meta),
            Some(("a".into(), Some("/a.slice".into())))
        );
        let by_uid = ConnMeta {
            match_kind: MATCH_UID,
            matched_id: 1001,
            ..Default::default()
        };
        assert_eq!(e.account_for(&by_uid), Some(("a".into(), None)));
        // Recreated cgroup (as systemd does on restart) gets a new id. The
        // old directory is moved aside, not removed: a removed directory's
        // inode can be handed out again at once (ext4 does, when tests run
        // in parallel), which cgroupfs ids never are.
        fs::rename(mount.path().join("a.slice"), mount.path().join("old")).unwrap();
        fs::create_dir(mount.path().join("a.slice")).unwrap();
        assert!(e.resolve(mount.path()));
        assert_eq!(e.account_for(&meta), None);
    }

    #[test]
    fn a_process_belongs_to_the_accounts_of_its_cgroups_ancestors_and_uids() {
        let mount = tempfile::tempdir().unwrap();
        fs::create_dir_all(mount.path().join("a.slice/shell")).unwrap();
        let cfg = config(CFG);
        let state = tempfile::tempdir().unwrap();
        let mut e = Enrollments::load(&cfg, state.path().join("e.json")).unwrap();
        e.resolve(mount.path());
        let id = cgroup::cgroup_id(&mount.path().join("a.slice")).unwrap();
        let none: [String; 0] = [];
        assert_eq!(e.accounts_of(&[99, id], &none, &[]), vec!["a".to_owned()]);
        assert_eq!(e.accounts_of(&[], &none, &[1001]), vec!["a".to_owned()]);
        assert!(e.accounts_of(&[99], &none, &[0, 4000]).is_empty());
        // By path: below, not beside; also when the ids are not (yet) the
        // resolved ones (a cgroup recreated since the last resolution; not
        // recreated here: freed inodes would disturb the inode test above).
        let below = ["/a.slice/shell".to_owned()];
        assert_eq!(e.accounts_of(&[], &below, &[]), vec!["a".to_owned()]);
        assert!(
            e.accounts_of(&[], &["/a.slice2".to_owned()], &[])
                .is_empty()
        );
        assert_eq!(
            e.accounts_of(&[u64::MAX], &["/a.slice".to_owned()], &[]),
            vec!["a".to_owned()]
        );
        // A process in cgroups of two accounts belongs to both.
        e.enroll("b", Selector::Cgroup("/a.slice/shell".into()))
            .unwrap();
        e.resolve(mount.path());
        assert_eq!(
            e.accounts_of(&[], &below, &[1001]),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert!(cgroup_within("/x/y", "/"));
        assert!(cgroup_within("/x/y", "/x/"));
        assert!(!cgroup_within("/xy", "/x"));
    }

    #[test]
    fn units_follow_their_cgroup_across_restarts() {
        let mount = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let cfg = config(&CFG.replace(
            "name = \"b\"\n",
            "name = \"b\"\nunits = [\"api.service\"]\n",
        ));
        let mut e = Enrollments::load(&cfg, state.path().join("e.json")).unwrap();
        // Not started yet: nothing to enroll, nothing claimed.
        e.resolve(mount.path());
        assert!(e.cgroup_entries().is_empty());
        // The kernel watches where systemd puts a service by default...
        assert_eq!(
            e.unit_path_entries(),
            vec![("/system.slice/api.service".to_owned(), 1)]
        );
        let unit_dir = mount.path().join("app.slice/api.service");
        fs::create_dir_all(&unit_dir).unwrap();
        assert!(e.resolve(mount.path()));
        let id = cgroup::cgroup_id(&unit_dir).unwrap();
        let meta = ConnMeta {
            match_kind: MATCH_CGROUP,
            matched_id: id,
            ..Default::default()
        };
        assert_eq!(
            e.account_for(&meta),
            Some(("b".into(), Some("/app.slice/api.service".into())))
        );
        let view = e
            .list()
            .into_iter()
            .find(|v| v.selector == Selector::Unit("api.service".into()))
            .unwrap();
        assert_eq!(view.cgroup_path.as_deref(), Some("/app.slice/api.service"));
        assert_eq!(view.cgroup_id, Some(id));
        // systemd restarts the unit: a new cgroup, a new id, followed.
        // (Moved aside, not removed: see the test above.)
        fs::rename(&unit_dir, mount.path().join("app.slice/old")).unwrap();
        // ...and, once seen, where the unit was, also while it is down.
        e.resolve(mount.path());
        assert_eq!(
            e.unit_path_entries(),
            vec![("/app.slice/api.service".to_owned(), 1)]
        );
        fs::create_dir(mount.path().join("app.slice/spacer")).unwrap();
        fs::create_dir(&unit_dir).unwrap();
        assert!(e.resolve(mount.path()));
        let new_id = cgroup::cgroup_id(&unit_dir).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(e.cgroup_entries(), vec![(new_id, 1)]);
        // Live enrollment of units is validated like the config's.
        assert!(matches!(
            e.enroll("a", Selector::Unit("nope".into())),
            Err(EnrollError::InvalidUnit { .. })
        ));
    }
}
