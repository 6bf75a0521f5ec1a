//! `[[target]]`: the model (name, protocol, address, TLS both ways,
//! per-protocol options) and its checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::agent::{FailMode, Listen6, canonical, effective_listen6, is_ipv6};
use super::error::{Diags, index, join};
use super::load::Decoded;
use super::model::defaults;
use super::validate::check_absolute;

/// Bounds of a target's `max_message_bytes`.
const MIN_MESSAGE_BYTES: usize = 1024;
const MAX_MESSAGE_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    /// `a.b.c.d:port` or `[v6]:port`.
    pub address: SocketAddr,
    /// Overrides `agent.fail_mode` for this target.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// Protocol targets: TLS from Warden to the upstream,
    /// `{ mode = "disable" | "require" | "verify-full", ca_file, server_name }`.
    /// Default: `disable` (say so explicitly for anything off-host).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Protocol targets: TLS between the workload and Warden, terminated with
    /// this certificate (PEM chain and key). Without it, a PostgreSQL
    /// SSLRequest is answered `N` (loopback only, the bytes never leave the
    /// host).
    #[serde(default)]
    pub client_tls: Option<ClientTls>,
    /// HTTP targets: the workload speaks plain HTTP to the original address
    /// and Warden originates TLS, verified (`verify-full`: the system roots
    /// or `tls.ca_file`, the name `tls.server_name`, default the address).
    #[serde(default)]
    pub upstream_tls: bool,
    /// HTTP targets: the workload speaks HTTPS; Warden terminates it with a
    /// certificate for the requested SNI issued by its local CA (`warden ca
    /// cert`) and re-originates TLS upstream, verified against the SNI (or
    /// `tls.server_name`).
    #[serde(default)]
    pub intercept_tls: bool,
    /// Protocol targets: largest single protocol message accepted from
    /// either side, in bytes; larger ones end the session with an error.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// HTTP targets: protocols a request may upgrade to (`Upgrade:`
    /// tokens, e.g. `["websocket"]`), after the policy allowed the request.
    /// The upgraded connection is relayed byte for byte: no further policy
    /// or masking applies to it. Default: none (upgrades get 403).
    #[serde(default)]
    pub allow_upgrade: Vec<String>,
}

impl Target {
    /// The TLS Warden uses towards the upstream: `upstream_tls` and
    /// `intercept_tls` mean `verify-full` with the `tls` table's `ca_file`
    /// and `server_name`; otherwise the `tls` table as written.
    pub fn effective_upstream_tls(&self) -> Option<UpstreamTls> {
        if self.upstream_tls || self.intercept_tls {
            Some(UpstreamTls {
                mode: TlsMode::VerifyFull,
                ca_file: self.tls.as_ref().and_then(|t| t.ca_file.clone()),
                server_name: self.tls.as_ref().and_then(|t| t.server_name.clone()),
            })
        } else {
            self.tls.clone()
        }
    }
}

/// `tls = { mode = "verify-full", ca_file = "/etc/warden/pg-ca.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub mode: TlsMode,
    /// CA bundle (PEM) to verify the upstream against; default: the system
    /// roots. Only with `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name the certificate must carry (and SNI); default: the target's IP
    /// address.
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP to the upstream.
    Disable,
    /// TLS, certificate not verified (encryption only; active attackers win).
    Require,
    /// TLS, certificate chain and name verified.
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `client_tls = { cert_file = "...", key_file = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM certificate chain presented to workloads.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), readable only by the agent.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Postgres,
    Mysql,
    Http,
}

impl Protocol {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Http => "http",
        }
    }
}

/// Protocols this build can relay.
pub(super) const SUPPORTED_PROTOCOLS: &[Protocol] = &[
    Protocol::Tcp,
    Protocol::Postgres,
    Protocol::Http,
    Protocol::Mysql,
];

pub(super) fn check_targets(d: &Decoded, diags: &mut Diags<'_>) {
    let listen = canonical(d.agent.listen);
    let listen6 = effective_listen6(d.agent.listen, &d.agent.listen6, d.targets.iter().flatten())
        .map(canonical);
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();

    for (i, t) in d.targets.iter().enumerate() {
        let Some(t) = t else { continue };
        let at = index("target", i);
        let name_key = join(&at, "name");
        let addr_key = join(&at, "address");

        if t.name.is_empty() {
            diags.at(&name_key, "must not be empty");
        } else if let Some(first) = names.get(t.name.as_str()) {
            let line = diags.line_of(first);
            diags.at(
                &name_key,
                format!(
                    "duplicate target name {:?} (also used at line {line})",
                    t.name
                ),
            );
        } else {
            names.insert(&t.name, name_key.clone());
        }

        if !SUPPORTED_PROTOCOLS.contains(&t.protocol) {
            let supported: Vec<&str> = SUPPORTED_PROTOCOLS.iter().map(|p| p.as_str()).collect();
            diags.at(
                &join(&at, "protocol"),
                format!(
                    "protocol {:?} is not supported yet by this build (supported: {})",
                    t.protocol.as_str(),
                    supported.join(", ")
                ),
            );
        }

        check_protocol_options(&at, t, diags);
        check_upgrades(&at, t, diags);

        let addr = canonical(t.address);
        if t.address.port() == 0 {
            diags.at(&addr_key, "port must not be 0");
        }
        if addr == listen || Some(addr) == listen6 {
            diags.at(
                &addr_key,
                format!(
                    "{} is the agent's own proxy listen address; a target cannot be the proxy",
                    t.address
                ),
            );
        }
        if is_ipv6(&t.address) && d.agent.listen6 == Listen6::Off {
            let line = diags.line_of("agent.listen6");
            diags.at(
                &addr_key,
                format!(
                    "IPv6 target {} needs the IPv6 listener, but agent.listen6 = \"off\" \
                     (line {line})",
                    t.address
                ),
            );
        }
        if let Some(first) = addrs.get(&addr) {
            let line = diags.line_of(first);
            diags.at(
                &addr_key,
                format!(
                    "duplicate target address {} (also used by {} at line {line})",
                    t.address,
                    first.trim_end_matches(".address")
                ),
            );
        } else {
            addrs.insert(addr, addr_key);
        }
    }
}

/// The protocol of the target named `name`, when it deserialised.
pub(super) fn protocol_of(d: &Decoded, name: &str) -> Option<Protocol> {
    d.targets
        .iter()
        .flatten()
        .find(|t| t.name == name)
        .map(|t| t.protocol)
}

/// Options that only protocol targets have, and their values.
pub(super) fn check_protocol_options(at: &str, t: &Target, diags: &mut Diags<'_>) {
    let plain = t.protocol == Protocol::Tcp;
    // MySQL (issue 20): TLS towards the upstream (`tls`) is spoken; the
    // workload's side (`client_tls`) is not yet: refused rather than
    // silently ignored.
    if t.protocol == Protocol::Mysql && t.client_tls.is_some() {
        diags.at(
            &join(at, "client_tls"),
            "mysql targets do not support client_tls yet (remove it; see issue 20)",
        );
    }
    if let Some(tls) = &t.tls {
        let key = join(at, "tls");
        if plain {
            diags.at(
                &key,
                "tcp targets are relayed byte for byte: TLS to the upstream is the \
                 workload's own (remove tls)",
            );
        }
        if let Some(ca) = &tls.ca_file {
            check_absolute(&join(&key, "ca_file"), ca, diags);
            if tls.mode != TlsMode::VerifyFull {
                diags.at(
                    &join(&key, "ca_file"),
                    format!(
                        "ca_file is only used with mode = \"verify-full\" (mode is {:?})",
                        tls.mode.as_str()
                    ),
                );
            }
        }
        if let Some(name) = &tls.server_name
            && (name.is_empty() || rustls_pki_types::ServerName::try_from(name.as_str()).is_err())
        {
            diags.at(
                &join(&key, "server_name"),
                format!("{name:?} is not a valid DNS name or IP address"),
            );
        }
    }
    check_http_tls(at, t, diags);
    if let Some(c) = &t.client_tls {
        let key = join(at, "client_tls");
        if plain {
            diags.at(&key, "tcp targets cannot terminate TLS (remove client_tls)");
        } else if t.protocol == Protocol::Http {
            diags.at(
                &key,
                "http targets terminate the workload's TLS with intercept_tls = true \
                 (certificates from Warden's local CA), not client_tls",
            );
        }
        check_absolute(&join(&key, "cert_file"), &c.cert_file, diags);
        check_absolute(&join(&key, "key_file"), &c.key_file, diags);
    }
    if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&t.max_message_bytes) {
        diags.at(
            &join(at, "max_message_bytes"),
            format!(
                "must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}, got {}",
                t.max_message_bytes
            ),
        );
    }
}

/// `allow_upgrade`: HTTP targets only, plain protocol tokens, never h2c
/// (HTTP/2 is refused until Warden speaks it).
pub(super) fn check_upgrades(at: &str, t: &Target, diags: &mut Diags<'_>) {
    if t.allow_upgrade.is_empty() {
        return;
    }
    let key = join(at, "allow_upgrade");
    if t.protocol != Protocol::Http {
        diags.at(&key, "only http targets have protocol upgrades");
        return;
    }
    for (i, u) in t.allow_upgrade.iter().enumerate() {
        let k = index(&key, i);
        if u.is_empty()
            || !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
        {
            diags.at(
                &k,
                format!("{u:?} is not an Upgrade protocol token (e.g. \"websocket\")"),
            );
        } else if u.eq_ignore_ascii_case("h2c") || u.to_ascii_lowercase().starts_with("http/2") {
            diags.at(
                &k,
                "HTTP/2 is not supported by Warden yet: h2c upgrades cannot be allowed",
            );
        }
    }
}

/// `upstream_tls` and `intercept_tls`: HTTP targets only, and never with a
/// `tls` table that says something else than `verify-full`.
pub(super) fn check_http_tls(at: &str, t: &Target, diags: &mut Diags<'_>) {
    for (set, name) in [
        (t.upstream_tls, "upstream_tls"),
        (t.intercept_tls, "intercept_tls"),
    ] {
        if !set {
            continue;
        }
        let key = join(at, name);
        if t.protocol != Protocol::Http {
            diags.at(
                &key,
                format!(
                    "only http targets take {name} (this target's protocol is {:?}); \
                     use tls = {{ mode = ... }} for postgres",
                    t.protocol.as_str()
                ),
            );
            continue;
        }
        if let Some(tls) = &t.tls
            && tls.mode != TlsMode::VerifyFull
        {
            diags.at(
                &key,
                format!(
                    "{name} = true means TLS verified upstream (verify-full), but \
                     tls.mode is {:?} (line {}); set mode = \"verify-full\" (or leave \
                     tls out to verify against the system roots)",
                    tls.mode.as_str(),
                    diags.line_of(&join(&join(at, "tls"), "mode"))
                ),
            );
        }
        // The one name the upstream is verified as and requests may name:
        // never whatever the workload asks for.
        if t.intercept_tls
            && t.tls
                .as_ref()
                .and_then(|x| x.server_name.as_ref())
                .is_none()
        {
            diags.at(
                &key,
                "intercept_tls = true needs tls.server_name: the name the upstream is verified \
                 as and the only host requests may name (the workload's SNI is not trusted)",
            );
        }
    }
}
