//! Configuration: owns the TOML model, its defaults, loading and validation.
//!
//! Problems are never reported one at a time: [`Config::load`] returns all of
//! them at once, each as `file:line:column: key: message`.
//!
//! Loading happens in passes, each of which reports all it finds:
//! 1. TOML syntax (`load::parse_document`); a broken document stops here.
//! 2. Shape and types (`load::decode`): unknown keys, missing required keys and
//!    values that do not deserialise, element by element and key by key.
//! 3. Meaning (`validate`): ranges, paths, addresses, names, references.
//!
//! The defaults of every key are written out in `config/warden.toml`, which a
//! test below keeps valid and complete.

pub mod account;
pub mod agent;
pub mod approvals;
pub mod audit;
mod error;
pub mod files;
pub mod forward;
pub mod grant;
mod load;
pub mod masking;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod target;
mod validate;
pub mod warnings;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use account::*;
pub use agent::*;
pub use audit::*;
pub use error::{ConfigError, Diagnostic};
pub use forward::*;
pub use grant::*;
pub use model::*;
pub use target::*;

use error::{Diags, LineIndex};

/// The `[policy.NAME]` and `[masking.NAME]` tables as validation compiled
/// them: the protocol runtimes take these and compile nothing again, so a
/// policy problem is reported once, at load, as `file:line`.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    policies: policy::CompiledPolicies,
    maskings: BTreeMap<String, masking::CompiledMasking>,
}

/// The compiled forms are a function of the `policies` and `maskings`
/// tables a [`Config`] compares beside them: equal when they name the same
/// tables.
impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.policies.sql.keys().eq(other.policies.sql.keys())
            && self.policies.http.keys().eq(other.policies.http.keys())
            && self.maskings.keys().eq(other.maskings.keys())
    }
}

impl Compiled {
    /// The SQL form of `[policy.NAME]` (PostgreSQL, MySQL).
    pub fn sql_policy(&self, name: &str) -> Option<&Arc<crate::policy::Policy>> {
        self.policies.sql.get(name)
    }

    /// The HTTP form of `[policy.NAME]`.
    pub fn http_policy(&self, name: &str) -> Option<&Arc<crate::policy::HttpPolicy>> {
        self.policies.http.get(name)
    }

    /// `[masking.NAME]` compiled (its masker still without the HMAC key).
    pub fn masking(&self, name: &str) -> Option<&masking::CompiledMasking> {
        self.maskings.get(name)
    }

    /// Every compiled masking, by name.
    pub fn maskings(&self) -> impl Iterator<Item = (&String, &masking::CompiledMasking)> {
        self.maskings.iter()
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(src) => Self::parse(src, path),
            Err(e) => {
                let before = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
                let d = LineIndex::new(&before).diagnostic(
                    "syntax",
                    before.len(),
                    "the file is not valid UTF-8".to_owned(),
                );
                Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    diagnostics: vec![d],
                })
            }
        }
    }

    /// Validates configuration text; `path` is recorded as `source` and used
    /// in messages.
    pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |diagnostics| ConfigError::Invalid {
            path: path.to_owned(),
            diagnostics,
        };
        let root = load::parse_document(src).map_err(invalid)?;
        let mut diags = Diags::new(src, load::value_spans(&root));
        let decoded = load::decode(root, &mut diags);
        let compiled = validate::validate(&decoded, &mut diags);
        if !diags.is_empty() {
            return Err(invalid(diags.finish()));
        }
        // No diagnostics, so every element deserialised (each `None` was reported).
        Ok(Config {
            agent: decoded.agent,
            audit: decoded.audit,
            targets: decoded.targets.into_iter().flatten().collect(),
            accounts: decoded.accounts.into_iter().flatten().collect(),
            credentials: decoded
                .grants
                .iter()
                .zip(&decoded.credentials)
                .filter_map(|(g, c)| {
                    let g = g.as_ref()?;
                    Some(((g.account.clone(), g.target.clone()), c.clone()?))
                })
                .collect(),
            allowlists: decoded
                .grants
                .iter()
                .zip(&decoded.allowlists)
                .filter_map(|(g, a)| {
                    let g = g.as_ref()?;
                    Some(((g.account.clone(), g.target.clone()), a.clone()?))
                })
                .collect(),
            grants: decoded.grants.into_iter().flatten().collect(),
            policies: decoded
                .policies
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
            maskings: decoded
                .maskings
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
            forwards: decoded.forwards.into_iter().flatten().collect(),
            approvals: decoded.approvals,
            metrics: decoded.metrics,
            compiled,
            source: path.to_owned(),
            sha256: hex::encode(Sha256::digest(src.as_bytes())),
        })
    }

    /// Opens every file the configuration names (secrets, certificates,
    /// JWKS, allow-lists, executables...) as the agent will and returns
    /// each problem at the line of the key naming the file (see
    /// [`files`]). The file is read again for its lines; one that changed
    /// since the load is reported as such.
    pub fn check_files(&self) -> Result<Vec<Diagnostic>, ConfigError> {
        let bytes = fs::read(&self.source).map_err(|source| ConfigError::Read {
            path: self.source.clone(),
            source,
        })?;
        if hex::encode(Sha256::digest(&bytes)) != self.sha256 {
            return Ok(vec![Diagnostic {
                line: 1,
                column: 1,
                key: "file".into(),
                message: "the file changed while it was being checked; check it again".into(),
            }]);
        }
        Ok(files::check(self, &String::from_utf8_lossy(&bytes)))
    }

    // --- allow-lists (issue 19) ---
    /// The allow-list settings of the grant of `account` on `target`.
    pub fn allowlist_of(
        &self,
        account: &str,
        target: &str,
    ) -> Option<&crate::policy::allowlist::AllowlistSettings> {
        self.allowlists
            .get(&(account.to_owned(), target.to_owned()))
    }

    /// The audit database: `audit.path`, or `<state_dir>/audit.db`.
    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.agent.state_dir.join("audit.db"))
    }

    /// The IPv6 listener address, if one is to be opened: the explicit
    /// address; for `"auto"`, `[::1]` with the port of `listen` when some
    /// target has an IPv6 (not IPv4-mapped) address; `None` for `"off"`.
    pub fn listen6_addr(&self) -> Option<SocketAddr> {
        agent::effective_listen6(self.agent.listen, &self.agent.listen6, self.targets.iter())
    }

    /// The fail mode in effect for `t`: its own, else `agent.fail_mode`.
    pub fn fail_mode_of(&self, t: &Target) -> FailMode {
        t.fail_mode.unwrap_or(self.agent.fail_mode)
    }

    /// Each account's enrolled uids (they may never approve the account's
    /// own held requests).
    pub fn account_uids(&self) -> std::collections::HashMap<String, Vec<u32>> {
        self.accounts
            .iter()
            .map(|a| (a.name.clone(), a.uids.clone()))
            .collect()
    }

    /// The `[[target]]` named `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The `[[grant]]` of `account` on `target`, if any.
    pub fn grant(&self, account: &str, target: &str) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.account == account && g.target == target)
    }

    /// May `account` reach `target`: listed in the account's `targets` (plain
    /// TCP targets) or granted by a `[[grant]]`.
    pub fn is_granted(&self, account: &str, target: &str) -> bool {
        self.grant(account, target).is_some()
            || self
                .account(account)
                .is_some_and(|a| a.targets.iter().any(|t| t == target))
    }

    /// The `[[account]]` named `name`.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"[agent]
listen = "127.0.0.1:965"
state_dir = "/var/lib/warden"
bpf_pin_dir = "/sys/fs/bpf/warden"
control_socket = "/run/warden/control.sock"
cgroup_root = "auto"        # or a cgroup2 directory to attach at
fail_mode = "closed"        # or "open"
[[target]]
name = "orders-db"
protocol = "tcp"            # later: postgres, mysql, http
address = "10.0.0.5:5432"   # IPv4 or [IPv6]:port
[[account]]
name = "orders-api"
cgroups = ["/system.slice/orders-api.service"]   # cgroup2 paths, relative to the cgroup2 mount
uids = [1001]
targets = ["orders-db"]
"#;

    const REFERENCE: &str = include_str!("../../../config/warden.toml");

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(src, Path::new("/etc/warden/warden.toml"))
    }

    fn diagnostics(src: &str) -> Vec<Diagnostic> {
        match parse(src) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    #[test]
    fn the_design_example_parses() {
        let c = match parse(EXAMPLE) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.agent, AgentSection::default());
        assert_eq!(c.targets.len(), 1);
        let t = &c.targets[0];
        assert_eq!(t.name, "orders-db");
        assert_eq!(t.protocol, Protocol::Tcp);
        assert_eq!(t.address, SocketAddr::from(([10, 0, 0, 5], 5432)));
        assert_eq!(t.fail_mode, None);
        assert_eq!(
            c.accounts,
            vec![Account {
                name: "orders-api".into(),
                units: vec![],
                cgroups: vec!["/system.slice/orders-api.service".into()],
                uids: vec![1001],
                targets: vec!["orders-db".into()],
                exe: None,
                identity: None,
            }]
        );
        assert_eq!(c.source, PathBuf::from("/etc/warden/warden.toml"));
        assert_eq!(c.sha256, hex::encode(Sha256::digest(EXAMPLE.as_bytes())));
    }

    #[test]
    fn defaults_apply_to_missing_keys_and_tables() {
        let c = match parse("") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.agent.listen, SocketAddr::from(([127, 0, 0, 1], 965)));
        assert_eq!(c.agent.listen6, Listen6::Auto);
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/warden"));
        assert_eq!(c.agent.bpf_pin_dir, PathBuf::from("/sys/fs/bpf/warden"));
        assert_eq!(
            c.agent.control_socket,
            PathBuf::from("/run/warden/control.sock")
        );
        assert_eq!(c.agent.cgroup_root, CgroupRoot::Auto);
        assert_eq!(c.agent.agent_cgroup, AgentCgroup::Auto);
        assert_eq!(c.agent.fail_mode, FailMode::Closed);
        assert_eq!(c.agent.upstream_mark, 0x5744_0001);
        assert_eq!(c.agent.connect_timeout_ms, 5_000);
        assert_eq!(c.agent.relay_buffer_bytes, 65_536);
        assert_eq!(c.agent.max_connections, 10_000);
        assert_eq!(c.audit.path, None);
        assert_eq!(c.audit.synchronous, Synchronous::Pipelined);
        assert_eq!(c.audit.batch_max, 256);
        assert!(c.targets.is_empty() && c.accounts.is_empty());
        // The well-known digest of the empty input.
        assert_eq!(
            c.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );

        // Keys left out of a table that is present get the same defaults.
        let c = match parse("[agent]\nfail_mode = \"open\"\n[audit]\nsynchronous = \"normal\"\n") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            c.agent,
            AgentSection {
                fail_mode: FailMode::Open,
                ..AgentSection::default()
            }
        );
        assert_eq!(
            c.audit,
            AuditSection {
                synchronous: Synchronous::Normal,
                ..AuditSection::default()
            }
        );
    }

    #[test]
    fn several_independent_mistakes_are_all_reported() {
        let src = r#"[agent]
listen = "127.0.0.1:15001"
listn = "127.0.0.1:15002"
fail-mode = "open"

[[target]]
name = "orders-db"
protocol = "tcp"
address = "10.0.0.5:5432"

[[target]]
name = "cache"
protocol = "tcp"
address = "10.0.0.7"

[[account]]
name = "orders-api"
uids = [1001]
targets = ["orders-db", "payments-db"]

[[account]]
name = "batch"
uids = [1002, 1001]
targets = ["cache"]
"#;
        let list = diagnostics(src);
        let got: Vec<(usize, &str)> = list.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (3, "agent.listn"),
                (4, "agent.fail-mode"),
                (14, "target[1].address"),
                (19, "account[0].targets[1]"),
                (23, "account[1].uids[1]"),
            ],
            "{list:#?}"
        );
        assert!(list[0].message.contains("unknown key `listn`"));
        assert!(list[1].message.contains("unknown key `fail-mode`"));
        assert!(
            list[2]
                .message
                .contains("invalid socket address \"10.0.0.7\"")
        );
        assert!(list[3].message.contains("unknown target \"payments-db\""));
        assert!(list[4].message.contains(
            "uid 1001 is claimed by both account \"orders-api\" (line 18) and account \"batch\""
        ));

        let text = match parse(src) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected errors"),
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[0].starts_with("/etc/warden/warden.toml:3:1: agent.listn: unknown key"));
        assert!(lines[2].starts_with("/etc/warden/warden.toml:14:11: target[1].address: "));
        assert_eq!(lines[5], "5 errors in /etc/warden/warden.toml");
    }

    #[test]
    fn syntax_errors_report_their_line() {
        let src = "[agent]\nlisten = \"127.0.0.1:15001\"\nfail_mode = closed\n";
        let list = diagnostics(src);
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!((list[0].line, list[0].column), (3, 13));
        assert_eq!(list[0].key, "syntax");

        let list = diagnostics("[agent]\n\n[agent]\n");
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].line, 3);
    }

    #[test]
    fn load_reads_the_file() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("warden.toml");
        if let Err(e) = fs::write(&path, EXAMPLE) {
            panic!("{e}");
        }
        let c = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.source, path);
        assert_eq!(c.sha256, hex::encode(Sha256::digest(EXAMPLE.as_bytes())));

        match Config::load(&dir.path().join("missing.toml")) {
            Err(ConfigError::Read { path: p, source }) => {
                assert_eq!(p, dir.path().join("missing.toml"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected a read error, got {other:?}"),
        }

        let bad = dir.path().join("bad.toml");
        if let Err(e) = fs::write(&bad, b"[agent]\nstate_dir = \"/x\xff\"\n") {
            panic!("{e}");
        }
        match Config::load(&bad) {
            Err(e @ ConfigError::Invalid { .. }) => {
                let d = &e.diagnostics()[0];
                assert_eq!((d.line, d.column), (2, 16));
                assert!(d.message.contains("UTF-8"));
            }
            other => panic!("expected invalid UTF-8, got {other:?}"),
        }
    }

    #[test]
    fn accessors() {
        let src = format!(
            "{EXAMPLE}[audit]\npath = \"/srv/audit.db\"\n[[target]]\nname = \"v6\"\n\
             protocol = \"tcp\"\naddress = \"[fd00::1]:443\"\nfail_mode = \"open\"\n"
        );
        let c = match parse(&src) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.audit_path(), PathBuf::from("/srv/audit.db"));
        assert_eq!(c.listen6_addr(), "[::1]:965".parse().ok());
        let db = c.target("orders-db");
        let v6 = c.target("v6");
        assert_eq!(db.map(|t| c.fail_mode_of(t)), Some(FailMode::Closed));
        assert_eq!(v6.map(|t| c.fail_mode_of(t)), Some(FailMode::Open));
        assert!(c.target("nope").is_none());
        assert_eq!(
            c.account("orders-api").map(|a| a.uids.clone()),
            Some(vec![1001])
        );
        assert!(c.account("nope").is_none());

        // Defaults: audit.db under state_dir; no IPv6 target, no IPv6 listener.
        let c = match parse(&EXAMPLE.replace("/var/lib/warden", "/tmp/w")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.audit_path(), PathBuf::from("/tmp/w/audit.db"));
        assert_eq!(c.listen6_addr(), None);

        // IPv4-mapped targets do not need the IPv6 listener.
        let mapped = EXAMPLE.replace("10.0.0.5:5432", "[::ffff:10.0.0.5]:5432");
        assert_eq!(parse(&mapped).ok().and_then(|c| c.listen6_addr()), None);
        // Explicit address and "off".
        let explicit = EXAMPLE.replace("[agent]\n", "[agent]\nlisten6 = \"[::1]:16000\"\n");
        assert_eq!(
            parse(&explicit).ok().and_then(|c| c.listen6_addr()),
            "[::1]:16000".parse().ok()
        );
        let off = EXAMPLE.replace("[agent]\n", "[agent]\nlisten6 = \"off\"\n");
        let off = parse(&off);
        assert!(off.is_ok());
        assert_eq!(off.ok().and_then(|c| c.listen6_addr()), None);
    }

    #[test]
    fn reference_config_is_valid_and_shows_the_defaults() {
        let c = match parse(REFERENCE) {
            Ok(c) => c,
            Err(e) => panic!("config/warden.toml is invalid:\n{e}"),
        };
        assert_eq!(c.agent, AgentSection::default());
        assert_eq!(c.audit, AuditSection::default());
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.grants.len(), 1);
        assert!(c.policies.contains_key("orders-readonly"));
        assert!(c.maskings.contains_key("pii"));
        assert!(c.is_granted("orders-api", "orders-pg"));
        assert!(c.is_granted("orders-api", "orders-db"));
        assert_eq!(c.forwards.len(), 1);
        let f = &c.forwards[0];
        assert_eq!(
            (f.kind, f.format),
            (ForwardKind::Https, ForwardFormat::Ocsf)
        );
        // Every default the reference writes out is the model's default.
        let bare = match parse(
            "[[forward]]\nname = \"x\"\nkind = \"https\"\nurl = \"https://c.example/\"\n\
             auth = \"bearer\"\ntoken_file = \"/t\"\n",
        ) {
            Ok(c) => c.forwards[0].clone(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            Forward {
                name: f.name.clone(),
                url: f.url.clone(),
                token_file: f.token_file.clone(),
                ..bare
            },
            *f
        );
        assert_eq!(c.approvals, approvals::ApprovalsSection::default());
    }

    #[test]
    fn load_carries_every_policy_and_masking_compiled() {
        let c = match parse(REFERENCE) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        for name in c.policies.keys() {
            assert!(c.compiled.sql_policy(name).is_some(), "{name}");
            assert!(c.compiled.http_policy(name).is_some(), "{name}");
        }
        assert!(c.compiled.sql_policy("nope").is_none());
        let names: Vec<&String> = c.compiled.maskings().map(|(n, _)| n).collect();
        assert_eq!(names, c.maskings.keys().collect::<Vec<_>>());
        assert!(c.compiled.masking("pii").is_some());
        // Two loads of one text are equal configurations.
        assert_eq!(parse(REFERENCE).ok(), Some(c));
    }

    #[test]
    fn reference_config_mentions_every_key() {
        let tables: [(&str, &[&str]); 10] = [
            (
                "[approvals]",
                load::field_names::<approvals::ApprovalsSection>(),
            ),
            ("[metrics]", load::field_names::<metrics::MetricsSection>()),
            ("[agent]", load::field_names::<AgentSection>()),
            ("[audit]", load::field_names::<AuditSection>()),
            ("[[target]]", load::field_names::<Target>()),
            ("[[account]]", load::field_names::<Account>()),
            ("[[grant]]", load::field_names::<Grant>()),
            ("[[forward]]", load::field_names::<Forward>()),
            (
                "[policy.orders-readonly]",
                load::field_names::<crate::policy::PolicyConfig>(),
            ),
            (
                "[masking.pii]",
                load::field_names::<crate::masking::MaskingConfig>(),
            ),
        ];
        for (header, fields) in tables {
            let Some(start) = REFERENCE.find(&format!("\n{header}\n")) else {
                panic!("config/warden.toml has no {header}");
            };
            // The table's text runs to the next header.
            let body = &REFERENCE[start + header.len() + 2..];
            let body = body.find("\n[").map_or(body, |end| &body[..end]);
            for f in fields {
                let written = body.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.starts_with(&format!("{f} = "))
                });
                assert!(written, "config/warden.toml does not show {header} {f}");
            }
        }
    }
}
