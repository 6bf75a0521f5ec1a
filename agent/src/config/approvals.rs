//! The `[approvals]` section: who may approve held statements, how long a
//! statement is held, whether a reason is required, where the approvals
//! socket is and which webhooks hear of new requests. Model, defaults and
//! validation in one place (the section is independent of the others).

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Diags;

/// Longest hold (one day).
const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Longest grant (`--for`), 7 days.
const MAX_GRANT_SECS: u64 = 7 * 86_400;

/// `[approvals]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// Who may approve, deny and revoke.
    #[serde(default)]
    pub approvers: Approvers,
    /// How long a statement is held before it is refused (timeout = deny).
    #[serde(default = "defaults::approval_timeout_secs")]
    pub approval_timeout_secs: u64,
    /// Decisions must carry `--reason`.
    #[serde(default)]
    pub require_reason: bool,
    /// Longest `--for` an approver may give a grant.
    #[serde(default = "defaults::max_grant_secs")]
    pub max_grant_secs: u64,
    /// The approvals socket (mode 0666: every peer is checked by
    /// SO_PEERCRED against `approvers`). Default: `approvals.sock` next to
    /// `agent.control_socket` (see [`ApprovalsSection::socket_path`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Notified of each new request (JSON POST, retried, never blocking).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// `approvers = { groups = [...], uids = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Group names; a peer in any of them (primary or supplementary) may
    /// approve.
    #[serde(default = "defaults::approver_groups")]
    pub groups: Vec<String>,
    /// Numeric uids that may approve.
    #[serde(default)]
    pub uids: Vec<u32>,
}

/// One webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    #[serde(default)]
    pub kind: WebhookKind,
}

/// Payload shape of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// The request as JSON.
    #[default]
    Generic,
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
}

impl Default for Approvers {
    fn default() -> Self {
        Self {
            groups: defaults::approver_groups(),
            uids: Vec::new(),
        }
    }
}

impl Default for ApprovalsSection {
    /// The same values serde fills in for an empty `[approvals]` table.
    fn default() -> Self {
        Self {
            approvers: Approvers::default(),
            approval_timeout_secs: defaults::approval_timeout_secs(),
            require_reason: false,
            max_grant_secs: defaults::max_grant_secs(),
            socket: None,
            webhooks: Vec::new(),
        }
    }
}

impl ApprovalsSection {
    /// The approvals socket: `socket`, or `approvals.sock` in the directory
    /// of the control socket.
    pub fn socket_path(&self, control_socket: &std::path::Path) -> PathBuf {
        match &self.socket {
            Some(s) => s.clone(),
            None => control_socket
                .parent()
                .map_or_else(defaults::socket, |d| d.join("approvals.sock")),
        }
    }
}

pub mod defaults {
    use std::path::PathBuf;

    pub fn approval_timeout_secs() -> u64 {
        300
    }
    pub fn max_grant_secs() -> u64 {
        86_400
    }
    pub fn socket() -> PathBuf {
        PathBuf::from("/run/warden/approvals.sock")
    }
    pub fn approver_groups() -> Vec<String> {
        vec!["warden-approvers".to_owned()]
    }
}

/// Semantic checks of `[approvals]`.
pub(crate) fn check(a: &ApprovalsSection, control_socket: &std::path::Path, diags: &mut Diags<'_>) {
    if !(1..=MAX_TIMEOUT_SECS).contains(&a.approval_timeout_secs) {
        diags.at(
            "approvals.approval_timeout_secs",
            format!(
                "must be between 1 and {MAX_TIMEOUT_SECS}, got {}",
                a.approval_timeout_secs
            ),
        );
    }
    if !(1..=MAX_GRANT_SECS).contains(&a.max_grant_secs) {
        diags.at(
            "approvals.max_grant_secs",
            format!(
                "must be between 1 and {MAX_GRANT_SECS}, got {}",
                a.max_grant_secs
            ),
        );
    }
    // A derived path is as absolute as agent.control_socket (checked there).
    let socket = a.socket_path(control_socket);
    if a.socket.is_some() && !socket.is_absolute() {
        diags.at(
            "approvals.socket",
            format!(
                "must be an absolute path, got {:?}",
                socket.display().to_string()
            ),
        );
    }
    if socket == control_socket {
        diags.at(
            "approvals.socket",
            "must differ from agent.control_socket (that one is root-only)",
        );
    }
    for (i, g) in a.approvers.groups.iter().enumerate() {
        if g.is_empty() || g.contains(|c: char| c.is_whitespace() || c == ':') {
            diags.at(
                &format!("approvals.approvers.groups[{i}]"),
                format!("{g:?} is not a group name"),
            );
        }
    }
    for (i, w) in a.webhooks.iter().enumerate() {
        let key = format!("approvals.webhooks[{i}].url");
        let ok = (w.url.starts_with("http://") || w.url.starts_with("https://"))
            && w.url.parse::<ureq::http::Uri>().is_ok();
        if !ok {
            diags.at(&key, format!("{:?} is not an http(s) URL", w.url));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape_and_defaults() {
        let a: ApprovalsSection = toml::from_str(
            r#"
approvers = { groups = ["dba"], uids = [1002] }
approval_timeout_secs = 60
require_reason = true
webhooks = [{ url = "https://hooks.example/x", kind = "slack" }, { url = "http://127.0.0.1:9/" }]
"#,
        )
        .unwrap();
        assert_eq!(a.approvers.groups, vec!["dba"]);
        assert_eq!(a.approvers.uids, vec![1002]);
        assert_eq!(a.approval_timeout_secs, 60);
        assert!(a.require_reason);
        assert_eq!(a.webhooks[0].kind, WebhookKind::Slack);
        assert_eq!(a.webhooks[1].kind, WebhookKind::Generic);
        let d: ApprovalsSection = toml::from_str("").unwrap();
        assert_eq!(d, ApprovalsSection::default());
        assert_eq!(d.approval_timeout_secs, 300);
        assert_eq!(d.approvers.groups, vec!["warden-approvers"]);
        assert!(toml::from_str::<ApprovalsSection>("approvers = { group = [] }").is_err());
        assert!(
            toml::from_str::<ApprovalsSection>("webhooks = [{ url = \"x\", kind = \"teams\" }]")
                .is_err()
        );
    }
}
