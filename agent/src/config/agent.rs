//! `[agent]`: the model (listeners, directories, cgroups, limits, fail
//! mode) and its checks (addresses, ranges, paths); the IPv6 listener in
//! effect.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer};

use super::account::check_cgroup;
use super::error::Diags;
use super::load::Decoded;
use super::model::{auto_or_cgroup_path, defaults, string_with};
use super::target::Target;
use super::validate::check_absolute;

/// Bounds of `agent.connect_timeout_ms` and `agent.relay_buffer_bytes`.
const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;
const MIN_RELAY_BUFFER: usize = 4096;
const MAX_RELAY_BUFFER: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// IPv4 loopback address the proxy listens on. Default `127.0.0.1:965`, a
    /// port below `ip_unprivileged_port_start`, so only root can bind it.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// IPv6 loopback listener, used for IPv6 targets. Default: `[::1]` with the
    /// port of `listen`, only when an IPv6 target exists. `"off"` disables it
    /// (IPv6 targets are then a config error).
    #[serde(default)]
    pub listen6: Listen6,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "defaults::bpf_pin_dir")]
    pub bpf_pin_dir: PathBuf,
    #[serde(default = "defaults::control_socket")]
    pub control_socket: PathBuf,
    /// cgroup2 path (relative to the cgroup2 mount, starting with `/`) where the
    /// programs are attached, or `"auto"` for the cgroup2 root.
    #[serde(default)]
    pub cgroup_root: CgroupRoot,
    /// cgroup2 path the agent moves itself into at start, or `"auto"`: stay in
    /// the current cgroup when started by systemd (the unit's own cgroup),
    /// otherwise `/warden.agent`.
    #[serde(default)]
    pub agent_cgroup: AgentCgroup,
    /// What enrolled connections to protected targets get while the agent is
    /// down: `"closed"` (refused) or `"open"` (passed through untouched).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// SO_MARK put on the agent's upstream sockets (never redirected). Non-zero.
    #[serde(default = "defaults::upstream_mark")]
    pub upstream_mark: u32,
    /// Upstream connect timeout in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Per-direction relay buffer in bytes (bounds memory per connection).
    #[serde(default = "defaults::relay_buffer_bytes")]
    pub relay_buffer_bytes: usize,
    /// Maximum concurrently relayed connections; beyond it new ones are refused
    /// and audited.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Maximum concurrently relayed connections of one account, so that one
    /// workload cannot take every slot; beyond it new ones are refused and
    /// audited.
    #[serde(default = "defaults::max_connections_per_account")]
    pub max_connections_per_account: usize,
    /// Redirected connects one account may make per second, counted in the
    /// kernel (read at start); beyond it `connect()` fails with EPERM and
    /// the refusal is audited (`connect_rate`). It bounds how fast one
    /// account writes the kernel's connection records, so it cannot push
    /// another account's out while they wait for the proxy's accept.
    #[serde(default = "defaults::max_connects_per_account_per_sec")]
    pub max_connects_per_account_per_sec: u32,
    /// Agent-wide budget for buffered client messages beyond 64 KiB per
    /// session (`proxy::budget`); what would exceed it is refused (53200).
    #[serde(default = "defaults::max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    // --- sockmap (issue 17): how `tcp` targets are relayed.
    /// `"splice"` (default): splice(2) through a pipe; `"sockmap"`
    /// (experimental): in the kernel, falling back to splice(2) when the
    /// relay's eBPF program cannot be attached. Read when a connection
    /// opens.
    #[serde(default)]
    pub tcp_relay: TcpRelay,
    /// Threads of the proxy's async runtime. Not set: half the CPUs, at
    /// least one (the audit writer has its own thread, and the proxy shares
    /// the host with its workloads: measured on 2 CPUs, one worker costs
    /// ~20% less CPU per statement than two, with the same throughput).
    /// Read at start.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Closed,
    Open,
}

/// `agent.tcp_relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpRelay {
    /// In the kernel (sk_skb verdict over a sockhash). Not the default: one
    /// CI run lost the tail of an 8 MiB echo through it (7,463,801 bytes
    /// of 8,388,608 arrived), and it was slower than splice in the only
    /// bench run (load ~20).
    Sockmap,
    #[default]
    Splice,
}

/// `"auto"` or a cgroup2 path starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CgroupRoot {
    #[default]
    Auto,
    Path(String),
}

/// `"auto"` or a cgroup2 path starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentCgroup {
    #[default]
    Auto,
    Path(String),
}

/// `"auto"`, `"off"` or an `[addr]:port`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Listen6 {
    #[default]
    Auto,
    Off,
    Addr(SocketAddr),
}

impl Default for AgentSection {
    /// The same values serde fills in for an empty `[agent]` table.
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            listen6: Listen6::default(),
            state_dir: defaults::state_dir(),
            bpf_pin_dir: defaults::bpf_pin_dir(),
            control_socket: defaults::control_socket(),
            cgroup_root: CgroupRoot::default(),
            agent_cgroup: AgentCgroup::default(),
            fail_mode: FailMode::default(),
            upstream_mark: defaults::upstream_mark(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            relay_buffer_bytes: defaults::relay_buffer_bytes(),
            max_connections: defaults::max_connections(),
            max_connections_per_account: defaults::max_connections_per_account(),
            max_connects_per_account_per_sec: defaults::max_connects_per_account_per_sec(),
            max_buffered_bytes: defaults::max_buffered_bytes(),
            tcp_relay: TcpRelay::default(),
            worker_threads: None,
        }
    }
}

impl FailMode {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

impl CgroupRoot {
    /// The configured path, or `None` for `"auto"`.
    pub fn path(&self) -> Option<&str> {
        match self {
            CgroupRoot::Auto => None,
            CgroupRoot::Path(p) => Some(p),
        }
    }
}

impl AgentCgroup {
    /// The configured path, or `None` for `"auto"`.
    pub fn path(&self) -> Option<&str> {
        match self {
            AgentCgroup::Auto => None,
            AgentCgroup::Path(p) => Some(p),
        }
    }
}

impl<'de> Deserialize<'de> for CgroupRoot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_cgroup_path(d)?.map_or(CgroupRoot::Auto, CgroupRoot::Path))
    }
}

impl<'de> Deserialize<'de> for AgentCgroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_cgroup_path(d)?.map_or(AgentCgroup::Auto, AgentCgroup::Path))
    }
}

impl<'de> Deserialize<'de> for Listen6 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const EXPECTING: &str = "\"auto\", \"off\" or an \"[IPv6]:port\" address";
        let s = string_with(d, EXPECTING)?;
        match s.as_str() {
            "auto" => Ok(Listen6::Auto),
            "off" => Ok(Listen6::Off),
            other => other
                .parse::<SocketAddr>()
                .map(Listen6::Addr)
                .map_err(|_| de::Error::invalid_value(Unexpected::Str(other), &EXPECTING)),
        }
    }
}

/// True for an IPv6 address that is not an IPv4-mapped one (`::ffff:a.b.c.d`
/// is IPv4 on the wire).
pub(crate) fn is_ipv6(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
    }
}

/// The IPv6 listener address in effect, given `listen6` and the targets.
pub(crate) fn effective_listen6<'a>(
    listen: SocketAddr,
    listen6: &Listen6,
    mut targets: impl Iterator<Item = &'a Target>,
) -> Option<SocketAddr> {
    match listen6 {
        Listen6::Off => None,
        Listen6::Addr(a) => Some(*a),
        Listen6::Auto => targets
            .any(|t| is_ipv6(&t.address))
            .then(|| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], listen.port()))),
    }
}

/// The address with IPv4-mapped IPv6 folded to IPv4, for comparisons.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

pub(super) fn check_agent(d: &Decoded, diags: &mut Diags<'_>) {
    let a = &d.agent;

    if !(a.listen.is_ipv4() && a.listen.ip().is_loopback()) || a.listen.port() == 0 {
        diags.at(
            "agent.listen",
            format!(
                "must be an IPv4 loopback address (127.0.0.0/8) with a non-zero port, got {}",
                a.listen
            ),
        );
    }
    if let Listen6::Addr(l6) = a.listen6 {
        let loopback = matches!(l6.ip(), IpAddr::V6(v6) if v6.is_loopback());
        if !loopback || l6.port() == 0 {
            diags.at(
                "agent.listen6",
                format!(
                    "must be \"auto\", \"off\" or the IPv6 loopback address [::1] with a \
                     non-zero port, got {l6}"
                ),
            );
        }
    }

    for (key, path) in [
        ("agent.state_dir", &a.state_dir),
        ("agent.bpf_pin_dir", &a.bpf_pin_dir),
        ("agent.control_socket", &a.control_socket),
    ] {
        check_absolute(key, path, diags);
    }

    if let Some(p) = a.cgroup_root.path() {
        check_cgroup("agent.cgroup_root", p, true, diags);
    }
    if let Some(p) = a.agent_cgroup.path() {
        check_cgroup("agent.agent_cgroup", p, false, diags);
    }

    if a.upstream_mark == 0 {
        diags.at(
            "agent.upstream_mark",
            "must be non-zero (0 means \"no mark\", so the agent's own upstream \
             connections would be redirected back to it)",
        );
    }
    if !(1..=MAX_CONNECT_TIMEOUT_MS).contains(&a.connect_timeout_ms) {
        diags.at(
            "agent.connect_timeout_ms",
            format!(
                "must be between 1 and {MAX_CONNECT_TIMEOUT_MS} (10 minutes), got {}",
                a.connect_timeout_ms
            ),
        );
    }
    if !(MIN_RELAY_BUFFER..=MAX_RELAY_BUFFER).contains(&a.relay_buffer_bytes) {
        diags.at(
            "agent.relay_buffer_bytes",
            format!(
                "must be between {MIN_RELAY_BUFFER} and {MAX_RELAY_BUFFER} (16 MiB), got {}",
                a.relay_buffer_bytes
            ),
        );
    }
    if a.max_connections_per_account == 0 {
        diags.at("agent.max_connections_per_account", "must be at least 1");
    }
    if a.max_connects_per_account_per_sec == 0 {
        diags.at(
            "agent.max_connects_per_account_per_sec",
            "must be at least 1",
        );
    }
    if a.max_connections == 0 {
        diags.at("agent.max_connections", "must be at least 1");
    }
    if a.worker_threads == Some(0) {
        diags.at(
            "agent.worker_threads",
            "must be at least 1 (or not set: half the CPUs)",
        );
    }
}
