//! The whole configuration ([`Config`]: every section, validated, with its
//! policies and maskings compiled), the defaults of every key, and the
//! serde helpers the sections share. Each section's own model lives beside
//! its checks (`agent.rs`, `audit.rs`, `target.rs`, `account.rs`,
//! `grant.rs`, `forward.rs`, `approvals.rs`, `metrics.rs`).
//!
//! Every table denies unknown keys. Optional keys have the defaults written out
//! in `config/warden.toml`; nothing else is filled in silently.

use std::path::PathBuf;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

use super::account::Account;
use super::agent::AgentSection;
use super::audit::AuditSection;
use super::forward::Forward;
use super::grant::{Grant, HttpCredential};
use super::target::Target;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentSection,
    pub audit: AuditSection,
    pub targets: Vec<Target>,
    pub accounts: Vec<Account>,
    /// `[[grant]]`s: what an account may do on a target (required for
    /// protocol targets, which need upstream credentials and a policy).
    pub grants: Vec<Grant>,
    /// `[policy.NAME]` tables, by name.
    pub policies: std::collections::BTreeMap<String, crate::policy::PolicyConfig>,
    /// `[masking.NAME]` tables, by name.
    pub maskings: std::collections::BTreeMap<String, crate::masking::MaskingConfig>,
    /// `[[forward]]` outputs: where audit events are shipped off the host.
    pub forwards: Vec<Forward>,
    /// `[approvals]`: approvers, hold timeout, webhooks.
    pub approvals: super::approvals::ApprovalsSection,
    /// `[metrics]`: the Prometheus endpoint (off unless `listen` is set).
    pub metrics: super::metrics::MetricsSection,
    /// HTTP grants' `credential`s, by (account, target).
    pub credentials: std::collections::BTreeMap<(String, String), HttpCredential>,
    // --- allow-lists (issue 19) ---
    /// Grants' `mode`/`allowlist`/`on_new`, by (account, target).
    pub allowlists:
        std::collections::BTreeMap<(String, String), crate::policy::allowlist::AllowlistSettings>,
    /// `policies` and `maskings` compiled at load, for the runtimes.
    pub compiled: super::Compiled,
    /// File the configuration was read from (for messages and audit).
    pub source: PathBuf,
    /// Hex SHA-256 of the file's exact bytes.
    pub sha256: String,
}

/// Deserialises a string, with `expecting` as the description in type errors.
pub(super) fn string_with<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct StrVisitor(&'static str);
    impl Visitor<'_> for StrVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
    d.deserialize_str(StrVisitor(expecting))
}

pub(super) const CGROUP_EXPECTING: &str = "\"auto\" or a cgroup2 path starting with \"/\"";

/// `"auto"` or a string starting with `/`; the path's shape is checked by validation.
pub(super) fn auto_or_cgroup_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let s = string_with(d, CGROUP_EXPECTING)?;
    if s == "auto" {
        Ok(None)
    } else if s.starts_with('/') {
        Ok(Some(s))
    } else {
        Err(de::Error::invalid_value(
            Unexpected::Str(&s),
            &CGROUP_EXPECTING,
        ))
    }
}

pub mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 965))
    }
    pub fn state_dir() -> PathBuf {
        PathBuf::from("/var/lib/warden")
    }
    pub fn bpf_pin_dir() -> PathBuf {
        PathBuf::from("/sys/fs/bpf/warden")
    }
    pub fn control_socket() -> PathBuf {
        PathBuf::from("/run/warden/control.sock")
    }
    pub fn upstream_mark() -> u32 {
        0x5744_0001
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn relay_buffer_bytes() -> usize {
        64 * 1024
    }
    pub fn algorithms() -> Vec<String> {
        ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
    pub fn leeway_secs() -> u64 {
        30
    }
    pub fn refresh_cooldown_secs() -> u64 {
        30
    }
    pub fn mint_ttl_secs() -> u64 {
        300
    }
    pub fn max_message_bytes() -> usize {
        16 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_connections_per_account() -> usize {
        1_000
    }
    pub fn max_connects_per_account_per_sec() -> u32 {
        warden_common::CONNECTS_PER_ACCOUNT_PER_SEC
    }
    pub fn max_buffered_bytes() -> usize {
        crate::proxy::budget::DEFAULT_LIMIT
    }
    pub fn checkpoint_every() -> u64 {
        1000
    }
    pub fn checkpoint_interval_secs() -> u64 {
        60
    }
    pub fn batch_max() -> usize {
        256
    }
    pub fn retention_days() -> u32 {
        400
    }
    pub fn forward_gzip() -> bool {
        true
    }
    pub fn forward_ack_timeout_secs() -> u64 {
        300
    }
    pub fn forward_facility() -> String {
        "local0".to_owned()
    }
    pub fn forward_rotate_bytes() -> u64 {
        100 * 1024 * 1024
    }
    pub fn forward_keep_files() -> u32 {
        5
    }
    pub fn forward_batch_max_events() -> usize {
        1000
    }
    pub fn forward_batch_max_bytes() -> usize {
        1024 * 1024
    }
    pub fn forward_batch_wait_ms() -> u64 {
        1000
    }
    pub fn forward_timeout_secs() -> u64 {
        30
    }
    pub fn forward_retry_max_secs() -> u64 {
        60
    }
    pub fn forward_backlog_warn() -> u64 {
        100_000
    }
}
