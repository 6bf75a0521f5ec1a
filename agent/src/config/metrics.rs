//! The `[metrics]` section: whether and where the agent serves Prometheus
//! metrics. Model, defaults and validation in one place.
//!
//! Off unless `listen` is set. Labels name accounts, targets and outputs, so
//! the endpoint is loopback-only unless `allow_remote = true` says an
//! operator chose to expose it, and every scrape must carry the bearer
//! token of `token_file` unless `allow_unauthenticated = true` says that
//! every local user (enrolled workloads included) may read them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Diags;

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the `/metrics` endpoint (e.g. `127.0.0.1:9464`). Absent:
    /// no endpoint.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Permit a non-loopback `listen`. Default: false.
    #[serde(default)]
    pub allow_remote: bool,
    /// A file holding the bearer token every scrape must send
    /// (`Authorization: Bearer …`; Prometheus: `authorization:
    /// credentials_file`). Not readable by every user (read at start).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Serve without a token: any local user, enrolled workloads included,
    /// reads the metrics. Default: false.
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

pub(crate) fn check(m: &MetricsSection, proxy: &[SocketAddr], diags: &mut Diags<'_>) {
    let Some(addr) = m.listen else {
        if m.allow_remote {
            diags.at(
                "metrics.allow_remote",
                "has no effect without metrics.listen",
            );
        }
        return;
    };
    match (&m.token_file, m.allow_unauthenticated) {
        (None, false) => diags.at(
            "metrics.listen",
            "needs metrics.token_file: the metrics name accounts and targets and count what \
             they do, and without a token every local user (enrolled workloads included) reads \
             them; set metrics.allow_unauthenticated = true to serve them to anyone who can \
             connect",
        ),
        (Some(_), true) => diags.at(
            "metrics.allow_unauthenticated",
            "contradicts metrics.token_file",
        ),
        (Some(path), false) if !path.is_absolute() => diags.at(
            "metrics.token_file",
            format!("must be an absolute path, got {}", path.display()),
        ),
        _ => {}
    }
    if addr.port() == 0 {
        diags.at(
            "metrics.listen",
            format!("needs a non-zero port, got {addr}"),
        );
    }
    if !addr.ip().to_canonical().is_loopback() && !m.allow_remote {
        diags.at(
            "metrics.listen",
            format!(
                "{addr} is not a loopback address: metrics name accounts and targets; \
                 set metrics.allow_remote = true to expose them beyond this host"
            ),
        );
    }
    if proxy
        .iter()
        .any(|p| p.port() == addr.port() && (p.ip() == addr.ip() || addr.ip().is_unspecified()))
    {
        diags.at(
            "metrics.listen",
            format!("{addr} is the proxy's own listener"),
        );
    }
}
