//! The `[metrics]` section: whether and where the agent serves Prometheus
//! metrics. Model, defaults and validation in one place.
//!
//! Off unless `listen` is set. Labels name accounts, targets and outputs, so
//! the endpoint is loopback-only unless `allow_remote = true` says an
//! operator chose to expose it.

use std::net::SocketAddr;

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
