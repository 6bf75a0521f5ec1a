//! Configuration reload: the live snapshot ([`Live`]: config, protocol
//! handlers, identity sources, target lookup) that the accept path reads
//! once per connection (as [`crate::proxy::InForce`]), and [`Reloader`],
//! which the daemon builds once and `SIGHUP` and `warden reload` run to
//! replace it.
//!
//! A reload re-reads the file through [`Config::load`] (every problem at
//! once), refuses changes to settings that need a restart
//! ([`restart_required`]), builds the new runtimes (secret files, CA,
//! policies), records the change in the audit chain and only then swaps the
//! snapshot and syncs the kernel maps (targets, enrolled cgroups and uids).
//! Any failure leaves the running configuration untouched and is recorded as
//! a failed reload. Connections already open keep the snapshot they were
//! accepted with until they close; new connections use the new one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};
use warden_common::TargetKey;

use crate::approval::Approvals;
use crate::audit::event::{ConfigAction, ConfigChange, ConfigOutcome};
use crate::audit::store::AuditHandle;
use crate::config::{Config, ConfigError, Target};
use crate::ebpf::{Datapath, keys};
use crate::identity::{Enrolled, Enrollments};
use crate::proxy::http::HttpRuntime;
use crate::proxy::mysql::MysqlRuntime;
use crate::proxy::postgres::PgRuntime;
use crate::proxy::{Handlers, InForce, LiveSource, OrigDst};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Settings that only take effect at start, one entry per key.
    #[error("restart required; nothing was changed:\n{}", .0.join("\n"))]
    RestartRequired(Vec<String>),
    #[error("identity source: {0}")]
    Identity(#[from] crate::identity::token::TokenError),
    #[error("PostgreSQL targets: {0}")]
    Postgres(#[source] crate::proxy::session::SetupError),
    #[error("HTTP targets: {0}")]
    Http(#[source] crate::proxy::session::SetupError),
    #[error("MySQL targets: {0}")]
    Mysql(#[source] crate::proxy::session::SetupError),
    #[error("enrollments: {0}")]
    Enroll(#[from] crate::identity::EnrollError),
    /// Audit before effect: an unrecorded reload does not happen.
    #[error("the reload could not be recorded in the audit trail, so it was refused: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Everything a connection needs from the configuration, built together
/// and swapped as one.
pub struct Live {
    pub config: Config,
    /// One handler per protocol (PostgreSQL, HTTP, MySQL): grants,
    /// compiled policies and masking, TLS.
    pub handlers: Handlers,
    pub identities: crate::identity::sources::IdentitySources,
    targets_by_key: HashMap<TargetKey, usize>,
    /// When this configuration took effect (ms since the Unix epoch).
    pub loaded_ms: i64,
    /// How: the start's load or a reload.
    pub action: ConfigAction,
}

impl Live {
    /// Builds the runtimes of `config`; fails on anything a connection
    /// would fail on later (secret files, CA, policies, identity keys).
    pub fn build(
        config: Config,
        approvals: &Arc<crate::approval::Approvals>,
        host: &str,
        action: ConfigAction,
    ) -> Result<Self, ReloadError> {
        let identities = crate::identity::sources::IdentitySources::from_config(&config, host)?;
        // Every masking (compiled at load) keyed once, for every runtime;
        // an unusable key is reported as the PostgreSQL runtime's.
        let maskers =
            crate::proxy::session::Maskers::build(&config).map_err(ReloadError::Postgres)?;
        let pg = PgRuntime::build_with(&config, &maskers)
            .map_err(ReloadError::Postgres)?
            .with_approvals(Arc::clone(approvals));
        let http = HttpRuntime::build_with(&config, &maskers)
            .map_err(ReloadError::Http)?
            .with_approvals(Arc::clone(approvals));
        let mysql = MysqlRuntime::build_with(&config, &maskers)
            .map_err(ReloadError::Mysql)?
            .with_approvals(Arc::clone(approvals));
        let handlers = Handlers::default().with(pg).with(http).with(mysql);
        let targets_by_key = keys::target_entries(&config)
            .into_iter()
            .map(|(k, v)| (k, v.target_id as usize))
            .collect();
        Ok(Self {
            config,
            handlers,
            identities,
            targets_by_key,
            loaded_ms: crate::proxy::now_ms(),
            action,
        })
    }

    /// The target the workload asked for, by its original destination.
    pub fn target_for(&self, orig: OrigDst) -> Option<&Target> {
        self.targets_by_key
            .get(&keys::target_key(orig.0))
            .and_then(|&i| self.config.targets.get(i))
    }
}

impl InForce for Live {
    fn config(&self) -> &Config {
        &self.config
    }

    fn target_for(&self, orig: OrigDst) -> Option<&Target> {
        Live::target_for(self, orig)
    }

    fn identities(&self) -> &crate::identity::sources::IdentitySources {
        &self.identities
    }

    fn handlers(&self) -> &Handlers {
        &self.handlers
    }
}

/// A value replaced as a whole while readers keep the one they took: the
/// accept path loads it once per connection, a reload swaps it.
pub struct Snapshot<T>(RwLock<Arc<T>>);

impl<T> Snapshot<T> {
    pub fn new(v: Arc<T>) -> Self {
        Self(RwLock::new(v))
    }

    /// The current value (a cheap `Arc` clone).
    pub fn load(&self) -> Arc<T> {
        // The lock only guards an `Arc` assignment, which cannot be torn by
        // a panic, so a poisoned lock still holds a whole value.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `v` in place for later loads; returns the previous value.
    pub fn swap(&self, v: Arc<T>) -> Arc<T> {
        let mut g = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *g, v)
    }
}

/// Who asked for a reload (recorded as the event's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Control { pid: Option<i32> },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Signal => f.write_str("SIGHUP"),
            Trigger::Control { pid: Some(p) } => write!(f, "warden reload (pid {p})"),
            Trigger::Control { pid: None } => f.write_str("warden reload"),
        }
    }
}

/// The last failed reload, for `warden status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadFailure {
    pub time_ms: i64,
    /// sha256 of the file that was refused (empty when it could not be read).
    pub sha256: String,
    pub errors: Vec<String>,
}

/// Reload bookkeeping kept beside the snapshot.
#[derive(Debug, Default)]
pub struct ReloadState {
    pub reloads: u64,
    pub last_failure: Option<ReloadFailure>,
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub sha256: String,
    pub previous_sha256: String,
    /// Kernel map syncs that failed after the switch (the new configuration
    /// is in force in the proxy; enrollments are re-synced every second).
    pub warnings: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Reload bookkeeping is a pair of assignments: still whole after a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The configuration in force and what replacing it touches, built once by
/// the daemon: the snapshot connections read, the audit trail a reload is
/// recorded in, the enrollments and kernel maps it re-syncs.
pub struct Reloader {
    live: Snapshot<Live>,
    /// Serialises reloads (SIGHUP and `warden reload`).
    one_at_a_time: tokio::sync::Mutex<()>,
    state: Mutex<ReloadState>,
    approvals: Arc<Approvals>,
    audit: AuditHandle,
    enrolled: Arc<Enrolled>,
    datapath: Arc<Datapath>,
    host: String,
}

impl Reloader {
    pub fn new(
        live: Live,
        approvals: Arc<Approvals>,
        audit: AuditHandle,
        enrolled: Arc<Enrolled>,
        datapath: Arc<Datapath>,
        host: String,
    ) -> Self {
        Self {
            live: Snapshot::new(Arc::new(live)),
            one_at_a_time: tokio::sync::Mutex::new(()),
            state: Mutex::new(ReloadState::default()),
            approvals,
            audit,
            enrolled,
            datapath,
            host,
        }
    }

    /// The configuration in force now; a connection takes it once and keeps
    /// it until it closes.
    pub fn live(&self) -> Arc<Live> {
        self.live.load()
    }

    /// Reloads so far and the last failure, for `warden status`.
    pub fn state(&self) -> (u64, Option<ReloadFailure>) {
        let s = lock(&self.state);
        (s.reloads, s.last_failure.clone())
    }

    /// See [`reload`].
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        reload(self, trigger).await
    }
}

impl LiveSource for Reloader {
    fn current(&self) -> Arc<dyn InForce> {
        self.live.load()
    }
}

/// Settings read only at start. Each changed one is named, with its old and
/// new value where the value carries no secret.
pub fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, changed: bool, values: Option<(String, String)>| {
        if changed {
            out.push(match values {
                Some((a, b)) => {
                    format!("{key}: changed from {a} to {b}; restart required to apply it")
                }
                None => format!("{key}: changed; restart required to apply it"),
            });
        }
    };
    macro_rules! field {
        ($section:ident . $field:ident) => {
            check(
                concat!(stringify!($section), ".", stringify!($field)),
                old.$section.$field != new.$section.$field,
                Some((
                    format!("{:?}", old.$section.$field),
                    format!("{:?}", new.$section.$field),
                )),
            )
        };
        (opaque $section:ident . $field:ident) => {
            check(
                concat!(stringify!($section), ".", stringify!($field)),
                old.$section.$field != new.$section.$field,
                None,
            )
        };
    }
    field!(agent.listen);
    check(
        "agent.listen6",
        old.agent.listen6 != new.agent.listen6 || old.listen6_addr() != new.listen6_addr(),
        Some((
            format!("{:?}", old.listen6_addr()),
            format!("{:?}", new.listen6_addr()),
        )),
    );
    field!(agent.state_dir);
    field!(agent.bpf_pin_dir);
    field!(agent.control_socket);
    field!(agent.cgroup_root);
    field!(agent.agent_cgroup);
    field!(agent.upstream_mark);
    field!(agent.max_buffered_bytes);
    field!(agent.worker_threads);
    field!(audit.path);
    field!(audit.synchronous);
    field!(audit.batch_max);
    field!(audit.checkpoint_every);
    field!(audit.checkpoint_interval_secs);
    field!(audit.retention_days);
    // Forward outputs and webhooks may carry URLs with secrets: names only.
    for i in 0..old.forwards.len().max(new.forwards.len()) {
        let (a, b) = (old.forwards.get(i), new.forwards.get(i));
        let name = b.or(a).map(|f| f.name.as_str()).unwrap_or_default();
        check(&format!("forward[{i}] ({name})"), a != b, None);
    }
    // The approvals socket, approvers and hold state live as long as the
    // daemon (held statements must survive a reload).
    field!(opaque approvals.approvers);
    field!(approvals.approval_timeout_secs);
    field!(approvals.require_reason);
    field!(approvals.max_grant_secs);
    field!(approvals.socket);
    field!(opaque approvals.webhooks);
    field!(metrics.listen);
    field!(metrics.allow_remote);
    field!(metrics.token_file);
    field!(metrics.allow_unauthenticated);
    out
}

/// Lowercase hex SHA-256 of the file, or empty when it cannot be read.
fn file_sha256(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(&b)))
        .unwrap_or_default()
}

/// Every problem of `e`, one per entry.
pub fn error_lines(e: &ReloadError) -> Vec<String> {
    match e {
        ReloadError::RestartRequired(keys) => keys.clone(),
        ReloadError::Config(ConfigError::Read { path, source }) => {
            vec![format!(
                "cannot read configuration file {}: {source}",
                path.display()
            )]
        }
        other => other.to_string().lines().map(str::to_owned).collect(),
    }
}

/// Re-reads the configuration file and, when it is valid, needs no restart
/// and its runtimes build, records the change and puts it in force. Reloads
/// run one at a time. On any error nothing changes and the failed attempt is
/// recorded (best effort: a failing audit store is logged).
async fn reload(shared: &Reloader, trigger: Trigger) -> Result<Reloaded, ReloadError> {
    let _one_at_a_time = shared.one_at_a_time.lock().await;
    let current = shared.live();
    let path = current.config.source.clone();
    let previous_sha256 = current.config.sha256.clone();
    info!(path = %path.display(), by = %trigger, "reloading configuration");
    let prepared = prepare(shared, &current, &path);
    let (live, enrollments) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let sha256 = file_sha256(&path);
            return Err(fail(shared, &path, sha256, previous_sha256, trigger, e).await);
        }
    };
    let sha256 = live.config.sha256.clone();
    // Audit before effect.
    let change = ConfigChange {
        time_ms: live.loaded_ms,
        path: path.display().to_string(),
        sha256: sha256.clone(),
        action: ConfigAction::Reload,
        detail: Some(format!("by {trigger}")),
        previous_sha256: Some(previous_sha256.clone()),
        outcome: ConfigOutcome::Applied,
        reason: None,
    };
    if let Err(e) = shared.audit.record(change).await {
        error!(error = %e, "reload refused: it could not be recorded");
        let e = ReloadError::Audit(e);
        note_failure(shared, sha256, &e);
        return Err(e);
    }
    let warnings = apply(shared, live, enrollments);
    lock(&shared.state).reloads += 1;
    info!(sha256 = %sha256, previous_sha256 = %previous_sha256, by = %trigger, "configuration reloaded");
    Ok(Reloaded {
        sha256,
        previous_sha256,
        warnings,
    })
}

/// Loads, checks and builds everything the new configuration needs, without
/// touching what is running.
fn prepare(
    shared: &Reloader,
    current: &Live,
    path: &Path,
) -> Result<(Live, Enrollments), ReloadError> {
    let config = Config::load(path)?;
    let restart = restart_required(&current.config, &config);
    if !restart.is_empty() {
        return Err(ReloadError::RestartRequired(restart));
    }
    let enrollments = Enrollments::load(&config, enrollments_path(&config))?;
    let mut live = Live::build(
        config,
        &shared.approvals,
        &shared.host,
        ConfigAction::Reload,
    )?;
    // What must outlive a reload (PostgreSQL: cancel keys of open sessions).
    live.handlers.take_over(&current.handlers);
    Ok((live, enrollments))
}

fn enrollments_path(config: &Config) -> std::path::PathBuf {
    config.agent.state_dir.join("enrollments.json")
}

/// Logs and records a refused reload; returns the error for the caller.
async fn fail(
    shared: &Reloader,
    path: &Path,
    sha256: String,
    previous_sha256: String,
    trigger: Trigger,
    e: ReloadError,
) -> ReloadError {
    let lines = error_lines(&e);
    warn!(path = %path.display(), by = %trigger, errors = %lines.join("; "), "configuration reload refused; the running configuration is unchanged");
    let change = ConfigChange {
        time_ms: crate::proxy::now_ms(),
        path: path.display().to_string(),
        sha256: sha256.clone(),
        action: ConfigAction::Reload,
        detail: Some(format!("by {trigger}")),
        previous_sha256: Some(previous_sha256),
        outcome: ConfigOutcome::Failed,
        reason: Some(lines.join("\n")),
    };
    if let Err(ae) = shared.audit.record(change).await {
        error!(error = %ae, "could not record the failed reload");
    }
    note_failure(shared, sha256, &e);
    e
}

fn note_failure(shared: &Reloader, sha256: String, e: &ReloadError) {
    lock(&shared.state).last_failure = Some(ReloadFailure {
        time_ms: crate::proxy::now_ms(),
        sha256,
        errors: error_lines(e),
    });
}

/// Puts a recorded configuration in force: the snapshot first (new
/// connections see it at once), then enrollments and the kernel maps.
/// Returns the kernel syncs that failed.
fn apply(shared: &Reloader, live: Live, enrollments: Enrollments) -> Vec<String> {
    let targets = keys::target_entries(&live.config);
    shared.live.swap(Arc::new(live));
    let mut warnings = Vec::new();
    // Re-read under the lock so a live enroll since `prepare` is kept.
    let config = &shared.live().config;
    shared.enrolled.replace_with(
        || match Enrollments::load(config, enrollments_path(config)) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "re-reading live enrollments failed; using those read before");
                enrollments
            }
        },
    );
    if let Err(e) = shared.datapath.sync_targets(&targets) {
        error!(error = %e, "syncing targets to the kernel failed after a reload");
        warnings.push(format!("syncing targets to the kernel failed: {e}"));
    }
    if let Err(e) = shared.enrolled.sync() {
        // The heartbeat retries every second.
        warn!(error = %e, "syncing enrollments to the kernel failed after a reload");
        warnings.push(format!(
            "syncing enrollments to the kernel failed (retried every second): {e}"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const BASE: &str = r#"
[agent]
listen = "127.0.0.1:15001"
state_dir = "/tmp/warden-reload-test"
bpf_pin_dir = "/sys/fs/bpf/warden-reload-test"
control_socket = "/tmp/warden-reload-test/control.sock"

[[target]]
name = "t1"
protocol = "tcp"
address = "127.0.0.2:7001"

[[target]]
name = "t2"
protocol = "tcp"
address = "127.0.0.2:7002"

[[account]]
name = "a"
cgroups = ["/app"]
targets = ["t1"]
"#;

    fn parse(src: &str) -> Config {
        Config::parse(src, &PathBuf::from("/etc/warden/warden.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reloadable_changes_need_no_restart() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace("targets = [\"t1\"]", "targets = [\"t1\", \"t2\"]")
                .replace(
                    "[agent]\n",
                    "[agent]\nmax_connections = 7\nconnect_timeout_ms = 900\nfail_mode = \"open\"\n",
                ),
        );
        assert_ne!(old, new);
        assert_eq!(restart_required(&old, &new), Vec::<String>::new());
        assert!(restart_required(&old, &old).is_empty());
    }

    #[test]
    fn each_restart_only_key_is_named() {
        let old = parse(BASE);
        let new = parse(
            &BASE.replace("127.0.0.1:15001", "127.0.0.1:15002").replace(
                "control.sock\"\n",
                "control.sock\"\nupstream_mark = 77\n\n[audit]\nbatch_max = 3\n\n[approvals]\nrequire_reason = true\n",
            ),
        );
        let got = restart_required(&old, &new);
        let keys: Vec<&str> = got
            .iter()
            .map(|l| l.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            vec![
                "agent.listen",
                "agent.upstream_mark",
                "audit.batch_max",
                "approvals.require_reason"
            ],
            "{got:#?}"
        );
        assert!(got[0].contains("127.0.0.1:15001") && got[0].contains("127.0.0.1:15002"));
        assert!(got.iter().all(|l| l.contains("restart required")));
    }

    #[test]
    fn an_ipv6_target_without_a_v6_listener_needs_a_restart() {
        let old = parse(BASE);
        let new = parse(&format!(
            "{BASE}\n[[target]]\nname = \"t6\"\nprotocol = \"tcp\"\naddress = \"[::1]:7006\"\n"
        ));
        let got = restart_required(&old, &new);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("agent.listen6:"), "{got:#?}");
    }

    #[test]
    fn forward_changes_are_named_without_their_values() {
        let fwd = "\n[[forward]]\nname = \"siem\"\nkind = \"file\"\npath = \"/tmp/w/out.jsonl\"\n";
        let old = parse(BASE);
        let new = parse(&format!("{BASE}{fwd}"));
        let got = restart_required(&old, &new);
        assert_eq!(
            got,
            vec!["forward[0] (siem): changed; restart required to apply it".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_snapshot_resolves_targets_and_a_held_one_survives_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, task) = crate::audit::spawn_writer(
            &dir.path().join("audit.db"),
            crate::audit::WriterOptions {
                sync: crate::audit::store::SyncMode::Normal,
                batch_max: 8,
                host: "h".into(),
                checkpoint_every: 0,
                checkpoint_interval: std::time::Duration::ZERO,
            },
        )
        .unwrap();
        let cfg = parse(BASE);
        let approvals =
            crate::approval::Approvals::new(cfg.approvals.clone(), audit.clone(), "w".into());
        let t2: std::net::SocketAddr = "127.0.0.2:7002".parse().unwrap();
        let t3: std::net::SocketAddr = "127.0.0.2:7003".parse().unwrap();
        let first = Live::build(cfg, &approvals, "h", ConfigAction::Load).unwrap();
        assert_eq!(
            first.target_for(OrigDst(t2)).map(|t| t.name.as_str()),
            Some("t2")
        );
        assert!(first.target_for(OrigDst(t3)).is_none());
        assert!(!first.config.is_granted("a", "t2"));

        let snap = Snapshot::new(Arc::new(first));
        let held = snap.load();
        let second = parse(
            &BASE
                .replace("targets = [\"t1\"]", "targets = [\"t2\"]")
                .replace("7002", "7003"),
        );
        let second = Live::build(second, &approvals, "h", ConfigAction::Reload).unwrap();
        let old = snap.swap(Arc::new(second));
        assert!(Arc::ptr_eq(&old, &held));
        // The connection that took the first snapshot keeps it whole.
        assert!(held.config.is_granted("a", "t1"));
        assert_eq!(
            held.target_for(OrigDst(t2)).map(|t| t.name.as_str()),
            Some("t2")
        );
        assert_eq!(held.action, ConfigAction::Load);
        // New connections see the new one.
        let now = snap.load();
        assert!(now.config.is_granted("a", "t2") && !now.config.is_granted("a", "t1"));
        assert!(now.target_for(OrigDst(t2)).is_none());
        assert_eq!(
            now.target_for(OrigDst(t3)).map(|t| t.name.as_str()),
            Some("t2")
        );
        assert_eq!(now.action, ConfigAction::Reload);
        drop(approvals);
        audit.shutdown().await;
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_failed_reload_event_carries_both_hashes_and_every_reason() {
        use crate::audit::ocsf::{decode_config, encode_config};
        let change = ConfigChange {
            time_ms: 1_700_000_000_000,
            path: "/etc/warden/warden.toml".into(),
            sha256: "ab".repeat(32),
            action: ConfigAction::Reload,
            detail: Some("by SIGHUP".into()),
            previous_sha256: Some("cd".repeat(32)),
            outcome: ConfigOutcome::Failed,
            reason: Some("agent.listen: changed\nagent.state_dir: changed".into()),
        };
        let bytes = encode_config(&change, 5, "c0ffee", "h").unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["status"], "Failure", "{doc}");
        assert_eq!(doc["status_id"], 2);
        let c = &doc["unmapped"]["warden"]["config"];
        assert_eq!(c["outcome"], "failed");
        assert_eq!(c["previous_sha256"], "cd".repeat(32));
        assert_eq!(c["sha256"], "ab".repeat(32));
        assert_eq!(decode_config(&bytes).unwrap().change, change);

        let applied = ConfigChange {
            outcome: ConfigOutcome::Applied,
            reason: None,
            ..change
        };
        let bytes = encode_config(&applied, 6, "c0ffee", "h").unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["status"], "Success");
        assert_eq!(doc["unmapped"]["warden"]["config"]["outcome"], "applied");
        assert_eq!(decode_config(&bytes).unwrap().change, applied);
    }
}
