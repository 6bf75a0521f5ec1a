//! Semantic checks on the deserialised sections: ranges, paths, addresses,
//! names and cross-references. Every problem is reported; none stops the pass.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::error::{Diags, index, join};
use super::load::Decoded;
use super::model::{
    Forward, ForwardAuth, ForwardFormat, ForwardKind, IdentityConfig, IdentityKind, Listen6,
    Protocol, SyslogTransport, Target, TlsMode,
};

/// Protocols this build can relay.
const SUPPORTED_PROTOCOLS: &[Protocol] = &[
    Protocol::Tcp,
    Protocol::Postgres,
    Protocol::Http,
    Protocol::Mysql,
];
const MIN_MESSAGE_BYTES: usize = 1024;
const MAX_MESSAGE_BYTES: usize = 1 << 30;
const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;
const MIN_RELAY_BUFFER: usize = 4096;
const MAX_RELAY_BUFFER: usize = 16 * 1024 * 1024;
const MAX_BATCH: usize = 10_000;
const MAX_RETENTION_DAYS: u32 = 36_500;

pub(crate) fn validate(d: &Decoded, diags: &mut Diags<'_>) {
    check_agent(d, diags);
    check_audit(d, diags);
    check_targets(d, diags);
    check_accounts(d, diags);
    check_grants(d, diags);
    check_allowlists(d, diags);
    check_policies(d, diags);
    check_forwards(d, diags);
    super::approvals::check(&d.approvals, &d.agent.control_socket, diags);
    let proxy: Vec<SocketAddr> = std::iter::once(d.agent.listen)
        .chain(match d.agent.listen6 {
            Listen6::Addr(a) => Some(a),
            _ => None,
        })
        .collect();
    super::metrics::check(&d.metrics, &proxy, diags);
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
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn check_agent(d: &Decoded, diags: &mut Diags<'_>) {
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

fn check_audit(d: &Decoded, diags: &mut Diags<'_>) {
    if let Some(p) = &d.audit.path {
        check_absolute("audit.path", p, diags);
    }
    if !(1..=MAX_BATCH).contains(&d.audit.batch_max) {
        diags.at(
            "audit.batch_max",
            format!(
                "must be between 1 and {MAX_BATCH}, got {}",
                d.audit.batch_max
            ),
        );
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&d.audit.retention_days) {
        diags.at(
            "audit.retention_days",
            format!(
                "must be between 1 and {MAX_RETENTION_DAYS} (100 years), got {}",
                d.audit.retention_days
            ),
        );
    }
}

fn check_targets(d: &Decoded, diags: &mut Diags<'_>) {
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

fn check_accounts(d: &Decoded, diags: &mut Diags<'_>) {
    let target_names: HashSet<&str> = d
        .target_names
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut names: HashMap<&str, String> = HashMap::new();
    // First claim of each cgroup path / uid: (account index, key of the claim).
    let mut cgroups: HashMap<&str, (usize, String)> = HashMap::new();
    let mut uids: HashMap<u32, (usize, String)> = HashMap::new();
    let mut units: HashMap<&str, (usize, String)> = HashMap::new();
    let label = |i: usize| match d.accounts.get(i) {
        Some(Some(a)) => format!("account {:?}", a.name),
        _ => index("account", i),
    };

    for (i, a) in d.accounts.iter().enumerate() {
        let Some(a) = a else { continue };
        let at = index("account", i);
        let name_key = join(&at, "name");

        if a.name.is_empty() {
            diags.at(&name_key, "must not be empty");
        } else if !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            diags.at(
                &name_key,
                format!(
                    "invalid account name {:?}: use only letters, digits, '.', '_' and '-'",
                    a.name
                ),
            );
        }
        if !a.name.is_empty() {
            if let Some(first) = names.get(a.name.as_str()) {
                let line = diags.line_of(first);
                diags.at(
                    &name_key,
                    format!(
                        "duplicate account name {:?} (also used at line {line})",
                        a.name
                    ),
                );
            } else {
                names.insert(&a.name, name_key.clone());
            }
        }

        for (j, cg) in a.cgroups.iter().enumerate() {
            let key = index(&join(&at, "cgroups"), j);
            if let Some(problem) = enrolled_cgroup_problem(cg) {
                diags.at(&key, format!("invalid cgroup path {cg:?}: {problem}"));
            }
            match cgroups.get(cg.as_str()) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "cgroup {cg:?} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    cgroups.insert(cg, (i, key));
                }
            }
        }

        for (j, uid) in a.uids.iter().enumerate() {
            let key = index(&join(&at, "uids"), j);
            match uids.get(uid) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "uid {uid} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    uids.insert(*uid, (i, key));
                }
            }
        }

        for (j, unit) in a.units.iter().enumerate() {
            let key = index(&join(&at, "units"), j);
            if let Some(problem) = unit_name_problem(unit) {
                diags.at(&key, format!("invalid unit name {unit:?}: {problem}"));
            }
            match units.get(unit.as_str()) {
                Some((owner, first)) if *owner != i => {
                    let line = diags.line_of(first);
                    diags.at(
                        &key,
                        format!(
                            "unit {unit:?} is claimed by both {} (line {line}) and {}",
                            label(*owner),
                            label(i)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    units.insert(unit, (i, key));
                }
            }
        }

        // A unit and a cgroup path naming the same cgroup, in two accounts.
        for (j, unit) in a.units.iter().enumerate() {
            for (k, other) in d.accounts.iter().enumerate() {
                let Some(other) = other else { continue };
                if k == i {
                    continue;
                }
                if let Some(cg) = other
                    .cgroups
                    .iter()
                    .find(|cg| cg.rsplit('/').next() == Some(unit.as_str()))
                {
                    diags.at(
                        &index(&join(&at, "units"), j),
                        format!(
                            "unit {unit:?} of {} is the cgroup {cg:?} that {} claims",
                            label(i),
                            label(k)
                        ),
                    );
                }
            }
        }

        if let Some(exe) = &a.exe {
            let key = join(&at, "exe");
            check_absolute(&join(&key, "path"), &exe.path, diags);
            if let Some(h) = &exe.sha256
                && !(h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                diags.at(
                    &join(&key, "sha256"),
                    "must be 64 lowercase hex digits (the output of sha256sum)",
                );
            }
        }

        if let Some(id) = &a.identity {
            check_identity(&join(&at, "identity"), id, diags);
        }

        for (j, t) in a.targets.iter().enumerate() {
            let key = index(&join(&at, "targets"), j);
            if !target_names.contains(t.as_str()) {
                diags.at(
                    &key,
                    format!("unknown target {t:?} (no [[target]] has name = {t:?})"),
                );
            } else if let Some(p) = protocol_of(d, t)
                && p != Protocol::Tcp
                && SUPPORTED_PROTOCOLS.contains(&p)
            {
                diags.at(
                    &key,
                    format!(
                        "{t:?} is a {} target: it needs a [[grant]] (upstream_user, \
                         password_file, policy), not an entry in targets",
                        p.as_str()
                    ),
                );
            }
        }
    }
}

/// The protocol of the target named `name`, when it deserialised.
fn protocol_of(d: &Decoded, name: &str) -> Option<Protocol> {
    d.targets
        .iter()
        .flatten()
        .find(|t| t.name == name)
        .map(|t| t.protocol)
}

/// Options that only protocol targets have, and their values.
fn check_protocol_options(at: &str, t: &Target, diags: &mut Diags<'_>) {
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
fn check_upgrades(at: &str, t: &Target, diags: &mut Diags<'_>) {
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
fn check_http_tls(at: &str, t: &Target, diags: &mut Diags<'_>) {
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

fn check_grants(d: &Decoded, diags: &mut Diags<'_>) {
    let accounts: HashSet<&str> = d
        .accounts
        .iter()
        .flatten()
        .map(|a| a.name.as_str())
        .collect();
    let target_names: HashSet<&str> = d
        .target_names
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let policies: HashSet<&str> = d.policies.iter().map(|(k, _)| k.as_str()).collect();
    let maskings: HashSet<&str> = d.maskings.iter().map(|(k, _)| k.as_str()).collect();
    let mut pairs: HashMap<(&str, &str), String> = HashMap::new();
    for (i, g) in d.grants.iter().enumerate() {
        let Some(g) = g else { continue };
        let at = index("grant", i);
        if !accounts.contains(g.account.as_str()) {
            diags.at(
                &join(&at, "account"),
                format!(
                    "unknown account {:?} (no [[account]] has that name)",
                    g.account
                ),
            );
        }
        if !target_names.contains(g.target.as_str()) {
            diags.at(
                &join(&at, "target"),
                format!(
                    "unknown target {:?} (no [[target]] has that name)",
                    g.target
                ),
            );
        }
        if let Some(first) = pairs.get(&(g.account.as_str(), g.target.as_str())) {
            let line = diags.line_of(first);
            diags.at(
                &at,
                format!(
                    "a second grant of {:?} on {:?} (the first is at line {line})",
                    g.account, g.target
                ),
            );
        } else {
            pairs.insert((&g.account, &g.target), at.clone());
        }
        let Some(protocol) = protocol_of(d, &g.target) else {
            continue;
        };
        if protocol == Protocol::Tcp {
            for (key, set) in [
                ("database", g.database.is_some()),
                ("upstream_user", g.upstream_user.is_some()),
                ("password_file", g.password_file.is_some()),
                ("policy", g.policy.is_some()),
                ("masking", g.masking.is_some()),
                ("read_only", g.read_only),
                (
                    "credential",
                    d.credentials.get(i).is_some_and(Option::is_some),
                ),
            ] {
                if set {
                    diags.at(
                        &join(&at, key),
                        format!(
                            "{:?} is a tcp target: Warden does not speak its protocol, \
                             so `{key}` cannot apply",
                            g.target
                        ),
                    );
                }
            }
            continue;
        }
        if protocol == Protocol::Http {
            check_http_grant(
                &at,
                g,
                d.credentials.get(i).and_then(Option::as_ref),
                d,
                diags,
            );
            continue;
        }
        if d.credentials.get(i).is_some_and(Option::is_some) {
            diags.at(
                &join(&at, "credential"),
                format!(
                    "`credential` is for http targets; {:?} is a {} target (use \
                     upstream_user and password_file)",
                    g.target,
                    protocol.as_str()
                ),
            );
        }
        if let Some(p) = g.policy.as_deref()
            && let Some(Some(cfg)) = d.policies.iter().find(|(k, _)| k == p).map(|(_, c)| c)
            && cfg.has_http_rules()
        {
            diags.at(
                &join(&at, "policy"),
                format!(
                    "policy {p:?} has HTTP rules (methods, paths, ...), which cannot apply to \
                     the {} target {:?}",
                    protocol.as_str(),
                    g.target
                ),
            );
        }
        for (key, missing) in [
            ("database", g.database.is_none()),
            ("upstream_user", g.upstream_user.is_none()),
            ("password_file", g.password_file.is_none()),
            ("policy", g.policy.is_none()),
        ] {
            if missing {
                diags.at(
                    &at,
                    format!(
                        "missing `{key}`: a grant on the {} target {:?} needs database, \
                         upstream_user, password_file and policy",
                        protocol.as_str(),
                        g.target
                    ),
                );
            }
        }
        for (key, v) in [
            ("database", &g.database),
            ("upstream_user", &g.upstream_user),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.contains('\0'))
            {
                diags.at(&join(&at, key), "must be a non-empty name without NUL");
            }
        }
        if let Some(p) = &g.password_file {
            check_absolute(&join(&at, "password_file"), p, diags);
        }
        if let Some(p) = &g.policy
            && !policies.contains(p.as_str())
        {
            diags.at(
                &join(&at, "policy"),
                format!("unknown policy {p:?} (no [policy.{p}] table)"),
            );
        }
        if let Some(m) = &g.masking
            && !maskings.contains(m.as_str())
        {
            diags.at(
                &join(&at, "masking"),
                format!("unknown masking {m:?} (no [masking.{m}] table)"),
            );
        }
    }
}

/// A grant on an HTTP target: a policy (with no SQL rules), an optional
/// credential, and none of the database keys.
// --- allow-lists (issue 19) ---
/// `mode`, `allowlist` and `on_new` of each `[[grant]]`: enforce needs an
/// allow-list file that parses (its problems are reported as
/// `file:line`), `on_new` is for enforce mode, tcp targets have none.
fn check_allowlists(d: &Decoded, diags: &mut Diags<'_>) {
    use crate::policy::allowlist::{AllowlistFile, Mode};
    for (i, (g, a)) in d.grants.iter().zip(&d.allowlists).enumerate() {
        let (Some(g), Some(a)) = (g, a) else { continue };
        let at = index("grant", i);
        if protocol_of(d, &g.target) == Some(Protocol::Tcp) {
            diags.at(
                &join(&at, "mode"),
                format!(
                    "{:?} is a tcp target: Warden does not see its requests, so \
                     there is nothing to learn or enforce",
                    g.target
                ),
            );
            continue;
        }
        match a.mode {
            None => diags.at(
                &at,
                "`allowlist` and `on_new` need `mode = \"learn\"` or `mode = \"enforce\"`",
            ),
            Some(Mode::Enforce) if a.allowlist.is_none() => diags.at(
                &join(&at, "mode"),
                "mode = \"enforce\" needs `allowlist = FILE` (write one with \
                 `warden policy freeze`)",
            ),
            Some(Mode::Learn) if a.on_new.is_some() => diags.at(
                &join(&at, "on_new"),
                "`on_new` applies in mode = \"enforce\"",
            ),
            _ => {}
        }
        if let Some(path) = &a.allowlist {
            check_absolute(&join(&at, "allowlist"), path, diags);
            if a.mode == Some(Mode::Enforce)
                && path.is_absolute()
                && let Err(e) = AllowlistFile::load(path)
            {
                diags.at(&join(&at, "allowlist"), e.to_string());
            }
        }
    }
}

fn check_http_grant(
    at: &str,
    g: &crate::config::Grant,
    credential: Option<&crate::config::HttpCredential>,
    d: &Decoded,
    diags: &mut Diags<'_>,
) {
    for (key, set) in [
        ("database", g.database.is_some()),
        ("upstream_user", g.upstream_user.is_some()),
        ("password_file", g.password_file.is_some()),
        ("read_only", g.read_only),
    ] {
        if set {
            diags.at(
                &join(at, key),
                format!(
                    "{:?} is an http target: `{key}` is for database targets (use credential)",
                    g.target
                ),
            );
        }
    }
    match g.policy.as_deref() {
        None => diags.at(
            at,
            format!(
                "missing `policy`: a grant on the http target {:?} needs a policy",
                g.target
            ),
        ),
        Some(p) => match d.policies.iter().find(|(k, _)| k == p) {
            None => diags.at(
                &join(at, "policy"),
                format!("unknown policy {p:?} (no [policy.{p}] table)"),
            ),
            Some((_, Some(cfg))) if cfg.has_sql_rules() => diags.at(
                &join(at, "policy"),
                format!(
                    "policy {p:?} has SQL rules (classes, tables, functions), which cannot \
                     apply to the http target {:?}",
                    g.target
                ),
            ),
            Some(_) => {}
        },
    }
    if let Some(m) = &g.masking
        && !d.maskings.iter().any(|(k, _)| k == m)
    {
        diags.at(
            &join(at, "masking"),
            format!("unknown masking {m:?} (no [masking.{m}] table)"),
        );
    }
    if let Some(c) = credential {
        use crate::config::CredentialKind;
        let key = join(at, "credential");
        check_absolute(&join(&key, "file"), &c.file, diags);
        match (c.kind, &c.username, &c.header) {
            (CredentialKind::Basic, None, _) => diags.at(&key, "kind = \"basic\" needs `username`"),
            (CredentialKind::Basic, Some(u), _) if u.contains(':') || u.is_empty() => {
                diags.at(&join(&key, "username"), "must be non-empty and without ':'")
            }
            (CredentialKind::Header, _, None) => {
                diags.at(&key, "kind = \"header\" needs `header` (its name)")
            }
            (CredentialKind::Header, _, Some(h))
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
            {
                diags.at(&join(&key, "header"), format!("{h:?} is not a header name"))
            }
            (CredentialKind::Bearer, Some(_), _) | (CredentialKind::Header, Some(_), _) => diags
                .at(
                    &join(&key, "username"),
                    "only kind = \"basic\" has a username",
                ),
            _ => {}
        }
        if c.kind != CredentialKind::Header && c.header.is_some() {
            diags.at(
                &join(&key, "header"),
                "only kind = \"header\" names a header",
            );
        }
    }
}

/// Each `[policy.NAME]` and `[masking.NAME]` compiles; every problem of
/// each is reported at its key.
fn check_policies(d: &Decoded, diags: &mut Diags<'_>) {
    for (name, cfg) in &d.policies {
        let Some(cfg) = cfg else { continue };
        if let Err(problems) = crate::policy::Policy::compile(name, cfg) {
            let at = join("policy", name);
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        }
        if let Err(problems) = crate::policy::HttpPolicy::compile(name, cfg) {
            let at = join("policy", name);
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        }
    }
    for (name, cfg) in &d.maskings {
        let Some(cfg) = cfg else { continue };
        let at = join("masking", name);
        if let Some(f) = &cfg.hmac_key_file {
            check_absolute(&join(&at, "hmac_key_file"), f, diags);
        }
        // The key itself is read at start; a stand-in lets the rest be checked.
        let key = cfg.hmac_key_file.as_ref().map(|_| vec![0u8; 32]);
        if let Err(problems) = crate::masking::Masker::compile(cfg, key) {
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        }
        if let Err(problems) = crate::masking::json::FieldRules::compile(cfg) {
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        }
    }
}

/// Syslog facility names, in code order (`kern` = 0 .. `local7` = 23).
pub const SYSLOG_FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Keys of `[[forward]]` that apply to `kind` (besides those every kind
/// takes); a key written for another kind is reported.
fn forward_keys(kind: ForwardKind, transport: SyslogTransport) -> &'static [&'static str] {
    match kind {
        ForwardKind::Https => &[
            "url",
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "auth",
            "token_file",
            "credentials_file",
            "gzip",
            "timeout_secs",
        ],
        ForwardKind::SplunkHec => &[
            "url",
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "token_file",
            "gzip",
            "index",
            "sourcetype",
            "ack",
            "ack_timeout_secs",
            "timeout_secs",
        ],
        ForwardKind::Elasticsearch => &[
            "url",
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "auth",
            "token_file",
            "credentials_file",
            "gzip",
            "index",
            "timeout_secs",
        ],
        ForwardKind::Syslog => match transport {
            SyslogTransport::Tls => &[
                "address",
                "transport",
                "ca_file",
                "client_cert_file",
                "client_key_file",
                "server_name",
                "facility",
                "timeout_secs",
            ],
            SyslogTransport::Tcp | SyslogTransport::Udp => {
                &["address", "transport", "facility", "timeout_secs"]
            }
        },
        ForwardKind::File => &["path", "rotate_bytes", "keep_files"],
    }
}

/// Keys every `[[forward]]` takes.
const FORWARD_COMMON: &[&str] = &[
    "name",
    "kind",
    "format",
    "batch_max_events",
    "batch_max_bytes",
    "batch_wait_ms",
    "retry_max_secs",
    "backlog_warn",
];

fn check_forwards(d: &Decoded, diags: &mut Diags<'_>) {
    let mut names: HashMap<&str, String> = HashMap::new();
    for (i, f) in d.forwards.iter().enumerate() {
        let Some(f) = f else { continue };
        let at = index("forward", i);
        let name_key = join(&at, "name");
        if f.name.is_empty() {
            diags.at(&name_key, "must not be empty");
        } else if !f
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            diags.at(
                &name_key,
                format!(
                    "may contain only letters, digits, '.', '_' and '-', got {:?}",
                    f.name
                ),
            );
        } else if let Some(first) = names.get(f.name.as_str()) {
            let line = diags.line_of(first);
            diags.at(
                &name_key,
                format!(
                    "duplicate forward name {:?} (also used at line {line}); each output \
                     has its own cursor, kept under its name",
                    f.name
                ),
            );
        } else {
            names.insert(&f.name, name_key.clone());
        }
        check_forward(&at, f, diags);
    }
}

fn check_forward(at: &str, f: &Forward, diags: &mut Diags<'_>) {
    let field = |name: &str| join(at, name);
    let kind = f.kind.as_str();
    let transport = f.transport.unwrap_or(SyslogTransport::Tls);
    let allowed = forward_keys(f.kind, transport);
    for key in super::load::field_names::<Forward>() {
        if FORWARD_COMMON.contains(key) || allowed.contains(key) {
            continue;
        }
        if diags.is_written(&field(key)) {
            let why = if f.kind == ForwardKind::Syslog && transport != SyslogTransport::Tls {
                format!(
                    "{key} is not used with kind = \"syslog\", transport = \"{}\"",
                    transport.as_str()
                )
            } else {
                format!("{key} is not used with kind = \"{kind}\"")
            };
            diags.at(&field(key), why);
        }
    }
    for (key, path) in [
        ("path", &f.path),
        ("ca_file", &f.ca_file),
        ("client_cert_file", &f.client_cert_file),
        ("client_key_file", &f.client_key_file),
        ("token_file", &f.token_file),
        ("credentials_file", &f.credentials_file),
    ] {
        if let Some(p) = path {
            check_absolute(&field(key), p, diags);
        }
    }
    if f.client_cert_file.is_some() != f.client_key_file.is_some() {
        let key = if f.client_cert_file.is_some() {
            "client_cert_file"
        } else {
            "client_key_file"
        };
        diags.at(
            &field(key),
            "client_cert_file and client_key_file go together (mutual TLS)",
        );
    }

    match f.kind {
        ForwardKind::Https | ForwardKind::SplunkHec | ForwardKind::Elasticsearch => match &f.url {
            None => diags.at(at, format!("kind = \"{kind}\" needs url")),
            Some(u) => {
                if let Some(problem) = https_url_problem(u) {
                    diags.at(&field("url"), format!("{problem}, got {u:?}"));
                }
            }
        },
        ForwardKind::Syslog => match &f.address {
            None => diags.at(at, "kind = \"syslog\" needs address (\"host:port\")"),
            Some(a) => {
                if let Some(problem) = host_port_problem(a) {
                    diags.at(&field("address"), format!("{problem}, got {a:?}"));
                }
            }
        },
        ForwardKind::File => {
            if f.path.is_none() {
                diags.at(at, "kind = \"file\" needs path");
            }
        }
    }

    match f.kind {
        ForwardKind::Https | ForwardKind::Elasticsearch => {
            let needs = |diags: &mut Diags<'_>, key: &str, set: bool| {
                if !set {
                    diags.at(
                        &field("auth"),
                        format!("auth = \"{}\" needs {key}", f.auth.as_str()),
                    );
                }
            };
            match f.auth {
                ForwardAuth::None => {}
                ForwardAuth::Bearer => needs(diags, "token_file", f.token_file.is_some()),
                ForwardAuth::Apikey => {
                    needs(diags, "token_file", f.token_file.is_some());
                    if f.kind != ForwardKind::Elasticsearch {
                        diags.at(
                            &field("auth"),
                            "auth = \"apikey\" is for kind = \"elasticsearch\"; use \"bearer\"",
                        );
                    }
                }
                ForwardAuth::Basic => {
                    needs(diags, "credentials_file", f.credentials_file.is_some())
                }
            }
            let token_used = matches!(f.auth, ForwardAuth::Bearer | ForwardAuth::Apikey);
            if f.token_file.is_some() && !token_used {
                diags.at(
                    &field("token_file"),
                    "token_file is used with auth = \"bearer\" or \"apikey\"",
                );
            }
            if f.credentials_file.is_some() && f.auth != ForwardAuth::Basic {
                diags.at(
                    &field("credentials_file"),
                    "credentials_file is used with auth = \"basic\"",
                );
            }
        }
        ForwardKind::SplunkHec => {
            if f.token_file.is_none() {
                diags.at(at, "kind = \"splunk-hec\" needs token_file (the HEC token)");
            }
            if !(1..=3600).contains(&f.ack_timeout_secs) {
                diags.at(
                    &field("ack_timeout_secs"),
                    format!("must be between 1 and 3600, got {}", f.ack_timeout_secs),
                );
            }
        }
        _ => {}
    }

    if f.kind == ForwardKind::Elasticsearch {
        match &f.index {
            None => diags.at(at, "kind = \"elasticsearch\" needs index"),
            Some(ix) => {
                if let Some(problem) = es_index_problem(ix) {
                    diags.at(&field("index"), format!("{problem}, got {ix:?}"));
                }
            }
        }
        if f.format == ForwardFormat::Cef {
            diags.at(
                &field("format"),
                "Elasticsearch stores JSON documents: use \"ocsf\" or \"ecs\"",
            );
        }
    }
    for key in ["index", "sourcetype"] {
        let v = if key == "index" {
            &f.index
        } else {
            &f.sourcetype
        };
        if v.as_deref().is_some_and(str::is_empty) {
            diags.at(&field(key), "must not be empty");
        }
    }
    if f.kind == ForwardKind::Syslog && !SYSLOG_FACILITIES.contains(&f.facility.as_str()) {
        diags.at(
            &field("facility"),
            format!(
                "unknown syslog facility {:?} (known: {})",
                f.facility,
                SYSLOG_FACILITIES.join(", ")
            ),
        );
    }
    if f.server_name.as_deref().is_some_and(str::is_empty) {
        diags.at(&field("server_name"), "must not be empty");
    }

    let ranges: [(&str, u64, u64, u64); 7] = [
        ("batch_max_events", f.batch_max_events as u64, 1, 100_000),
        ("batch_max_bytes", f.batch_max_bytes as u64, 1024, 64 << 20),
        ("batch_wait_ms", f.batch_wait_ms, 0, 60_000),
        ("timeout_secs", f.timeout_secs, 1, 600),
        ("retry_max_secs", f.retry_max_secs, 1, 3600),
        ("backlog_warn", f.backlog_warn, 1, u64::MAX),
        ("keep_files", u64::from(f.keep_files), 1, 1000),
    ];
    for (key, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            let msg = if hi == u64::MAX {
                format!("must be at least {lo}, got {v}")
            } else {
                format!("must be between {lo} and {hi}, got {v}")
            };
            diags.at(&field(key), msg);
        }
    }
    if f.kind == ForwardKind::File && f.rotate_bytes < 4096 {
        diags.at(
            &field("rotate_bytes"),
            format!("must be at least 4096, got {}", f.rotate_bytes),
        );
    }
}

/// What is wrong with a collector URL, if anything: `https://host[:port][/path]`,
/// no credentials, query or fragment (they would end up in logs and status).
pub fn https_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Some("must be an https:// URL");
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Some("has no host");
    }
    if authority.contains('@') {
        return Some("must not carry credentials (use token_file or credentials_file)");
    }
    if url.contains('?') || url.contains('#') {
        return Some("must not have a query or fragment");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters");
    }
    None
}

/// What is wrong with a `host:port` (or `[IPv6]:port`) address, if anything.
pub fn host_port_problem(addr: &str) -> Option<&'static str> {
    let (host, port) = match addr.rsplit_once(':') {
        Some(hp) => hp,
        None => return Some("must be \"host:port\""),
    };
    let bad = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_err(),
        None => host.is_empty() || host.contains(':'),
    };
    if bad {
        return Some("must be \"host:port\" (IPv6 in brackets)");
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => None,
        _ => Some("needs a port between 1 and 65535"),
    }
}

/// What Elasticsearch would refuse in an index name, if anything.
fn es_index_problem(ix: &str) -> Option<&'static str> {
    if ix.is_empty() {
        Some("must not be empty")
    } else if ix.chars().any(|c| c.is_ascii_uppercase()) {
        Some("must be lowercase")
    } else if ix.starts_with(['-', '_', '+']) || ix == "." || ix == ".." {
        Some("must not start with '-', '_' or '+', nor be '.' or '..'")
    } else if ix.chars().any(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        )
    }) {
        Some("must not contain \\ / * ? \" < > | space , # or :")
    } else {
        None
    }
}

/// `parent.key` for a key path relative to `parent` (`rules[2].tables[0]`).
fn sub_key(parent: &str, key: &str) -> String {
    if key.is_empty() {
        parent.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn check_identity(key: &str, id: &IdentityConfig, diags: &mut Diags<'_>) {
    let field = |name: &str| join(key, name);
    match id.kind {
        IdentityKind::TokenFile => {
            match &id.token_file {
                Some(p) => check_absolute(&field("token_file"), p, diags),
                None => diags.at(key, "kind = \"token_file\" needs token_file"),
            }
            match (&id.jwks_file, &id.jwks_url) {
                (Some(p), None) => check_absolute(&field("jwks_file"), p, diags),
                (None, Some(u)) => {
                    if !u.starts_with("https://") {
                        diags.at(
                            &field("jwks_url"),
                            format!("must be an https:// URL, got {u:?}"),
                        );
                    }
                }
                (Some(_), Some(_)) => {
                    diags.at(&field("jwks_url"), "give jwks_file or jwks_url, not both")
                }
                (None, None) => diags.at(key, "kind = \"token_file\" needs jwks_file or jwks_url"),
            }
            if let Some(p) = &id.jwks_ca_file {
                check_absolute(&field("jwks_ca_file"), p, diags);
                if id.jwks_url.is_none() {
                    diags.at(&field("jwks_ca_file"), "only used with jwks_url");
                }
            }
            for (name, v) in [("issuer", &id.issuer), ("audience", &id.audience)] {
                match v {
                    Some(v) if v.is_empty() => diags.at(&field(name), "must not be empty"),
                    Some(_) => {}
                    None => diags.at(key, format!("kind = \"token_file\" needs {name}")),
                }
            }
            if id.subject.is_some() && id.spiffe_trust_domain.is_some() {
                diags.at(
                    &field("spiffe_trust_domain"),
                    "give subject or spiffe_trust_domain, not both",
                );
            }
            if id.algorithms.is_empty() {
                diags.at(&field("algorithms"), "must name at least one algorithm");
            }
            for (j, alg) in id.algorithms.iter().enumerate() {
                if !crate::identity::token::SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                    diags.at(
                        &index(&field("algorithms"), j),
                        format!(
                            "algorithm {alg:?} is not allowed (allowed: {})",
                            crate::identity::token::SUPPORTED_ALGORITHMS.join(", ")
                        ),
                    );
                }
            }
            if id.leeway_secs > 60 {
                diags.at(
                    &field("leeway_secs"),
                    format!("must be at most 60, got {}", id.leeway_secs),
                );
            }
        }
        IdentityKind::Mint => {
            for (name, set) in [
                ("token_file", id.token_file.is_some()),
                ("jwks_file", id.jwks_file.is_some()),
                ("jwks_url", id.jwks_url.is_some()),
                ("jwks_ca_file", id.jwks_ca_file.is_some()),
                ("issuer", id.issuer.is_some()),
                ("subject", id.subject.is_some()),
                ("spiffe_trust_domain", id.spiffe_trust_domain.is_some()),
            ] {
                if set {
                    diags.at(
                        &field(name),
                        format!("{name} is not used with kind = \"mint\""),
                    );
                }
            }
            if !(10..=3600).contains(&id.ttl_secs) {
                diags.at(
                    &field("ttl_secs"),
                    format!("must be between 10 and 3600, got {}", id.ttl_secs),
                );
            }
        }
    }
}

fn check_absolute(key: &str, path: &Path, diags: &mut Diags<'_>) {
    if !path.is_absolute() {
        diags.at(
            key,
            format!(
                "must be an absolute path, got {:?}",
                path.display().to_string()
            ),
        );
    }
}

/// A cgroup2 path relative to the cgroup2 mount: `/a/b`, no `.`/`..` or empty
/// segments, no trailing `/`. The root `/` itself only when `allow_root`.
fn check_cgroup(key: &str, path: &str, allow_root: bool, diags: &mut Diags<'_>) {
    if let Some(problem) = cgroup_path_problem(path, allow_root) {
        diags.at(key, format!("invalid cgroup path {path:?}: {problem}"));
    }
}

/// What is wrong with a cgroup2 path (relative to the mount), if anything.
/// Shared by the config checks and live `warden enroll`.
pub fn cgroup_path_problem(path: &str, allow_root: bool) -> Option<&'static str> {
    if path == "/" {
        (!allow_root).then_some("the cgroup2 root \"/\" is not allowed here")
    } else if !path.starts_with('/') {
        Some("must start with \"/\" (a path relative to the cgroup2 mount)")
    } else if path == "/sys/fs/cgroup" || path.starts_with("/sys/fs/cgroup/") {
        Some(
            "must be relative to the cgroup2 mount: write \"/x.service\", not \
             \"/sys/fs/cgroup/x.service\"",
        )
    } else if path.ends_with('/') {
        Some("must not end with \"/\"")
    } else if path[1..].split('/').any(str::is_empty) {
        Some("must not contain an empty segment (\"//\")")
    } else if path[1..].split('/').any(|s| s == "." || s == "..") {
        Some("must not contain \".\" or \"..\" segments")
    } else {
        None
    }
}

/// What is wrong with a cgroup2 path to enroll, if anything: a valid path
/// (not the root) no deeper than the kernel side's ancestor walk reaches
/// (`warden_common::MAX_ENROLLED_LEVEL`; callers below it are covered at any
/// depth). Shared by the config checks and live `warden enroll`.
pub fn enrolled_cgroup_problem(path: &str) -> Option<&'static str> {
    cgroup_path_problem(path, false).or_else(|| {
        (cgroup_level(path) > warden_common::MAX_ENROLLED_LEVEL as usize).then_some(
            "is deeper than level 127, the deepest an enrolled cgroup may be (the \
             kernel side checks a caller's ancestors from there up; enroll an \
             ancestor instead, which covers every cgroup below it)",
        )
    })
}

/// Level of a cgroup2 path: `/` is 0, `/a` is 1, `/a/b` is 2.
pub fn cgroup_level(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

/// What is wrong with a systemd unit name, if anything.
pub fn unit_name_problem(unit: &str) -> Option<&'static str> {
    let Some((stem, kind)) = unit.rsplit_once('.') else {
        return Some("must end in .service or .scope");
    };
    if !matches!(kind, "service" | "scope") {
        Some("must end in .service or .scope")
    } else if stem.is_empty() {
        Some("has an empty name")
    } else if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
    {
        Some("may contain only letters, digits and \":-_.\\@\"")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Diagnostic, ForwardFormat};

    /// A valid configuration: one IPv4 target, one account.
    const BASE: &str = r#"[agent]
listen = "127.0.0.1:15001"

[[target]]
name = "db"
protocol = "tcp"
address = "10.0.0.5:5432"

[[account]]
name = "api"
cgroups = ["/system.slice/api.service"]
uids = [1001]
targets = ["db"]
"#;

    fn diagnostics(src: &str) -> Vec<Diagnostic> {
        match Config::parse(src, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    /// Asserts that exactly one diagnostic exists, for `key` at `line`, whose
    /// message contains `needle`.
    #[track_caller]
    fn only(src: &str, key: &str, line: usize, needle: &str) {
        let list = diagnostics(src);
        assert_eq!(list.len(), 1, "expected one diagnostic, got {list:#?}");
        let d = &list[0];
        assert_eq!((d.key.as_str(), d.line), (key, line), "{d:?}");
        assert!(
            d.message.contains(needle),
            "{:?} does not contain {needle:?}",
            d.message
        );
    }

    /// BASE with an extra key in [agent].
    fn agent(line: &str) -> String {
        BASE.replacen("[agent]\n", &format!("[agent]\n{line}\n"), 1)
    }

    fn with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    /// BASE plus a PostgreSQL target, its grant, a policy and a masking.
    const PG: &str = r#"
[[target]]
name = "pg"
protocol = "postgres"
address = "10.0.0.6:5432"

[[grant]]
account = "api"
target = "pg"
database = "orders"
upstream_user = "orders_ro"
password_file = "/etc/warden/secrets/ro"
policy = "ro"
masking = "pii"

[policy.ro]
rules = [{ action = "allow", classes = ["read"] }]

[masking.pii]
patterns = ["email"]
"#;

    #[test]
    fn every_forward_kind_has_a_valid_form() {
        let src = with(
            r#"
[[forward]]
name = "vector"
kind = "https"
url = "https://collector.example:8443/warden"
auth = "basic"
credentials_file = "/etc/warden/basic"
ca_file = "/etc/warden/ca.pem"
client_cert_file = "/etc/warden/c.pem"
client_key_file = "/etc/warden/c.key"

[[forward]]
name = "splunk"
kind = "splunk-hec"
url = "https://splunk.example:8088"
token_file = "/etc/warden/hec"
ack = true
format = "cef"

[[forward]]
name = "es"
kind = "elasticsearch"
url = "https://es.example:9200"
index = "warden-audit"
auth = "apikey"
token_file = "/etc/warden/es"
format = "ecs"

[[forward]]
name = "siem"
kind = "syslog"
address = "[fd00::5]:6514"
server_name = "siem.example"
facility = "authpriv"

[[forward]]
name = "lab"
kind = "syslog"
address = "127.0.0.1:514"
transport = "udp"

[[forward]]
name = "disk"
kind = "file"
path = "/var/log/warden/audit.ndjson"
keep_files = 3
"#,
        );
        assert_eq!(diagnostics(&src), Vec::new());
        let c = Config::parse(&src, Path::new("t.toml")).unwrap();
        let kinds: Vec<&str> = c.forwards.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "https",
                "splunk-hec",
                "elasticsearch",
                "syslog",
                "syslog",
                "file"
            ]
        );
        assert!(c.forwards[1].ack);
        assert_eq!(c.forwards[2].format, ForwardFormat::Ecs);
    }

    #[test]
    fn forward_problems_are_all_reported_with_lines() {
        // Line numbers: BASE is 14 lines; the extra text starts at line 15.
        let src = with(
            r#"
[[forward]]
name = "a b"
kind = "https"
url = "http://collector.example/"
auth = "bearer"
index = "x"
batch_max_events = 0

[[forward]]
name = "es"
kind = "elasticsearch"
url = "https://user:pw@es.example:9200"
format = "cef"
client_cert_file = "relative.pem"

[[forward]]
name = "es"
kind = "syslog"
address = "siem.example"
transport = "udp"
ca_file = "/etc/ca.pem"
facility = "local9"

[[forward]]
name = "disk"
kind = "file"
gzip = false
rotate_bytes = 10
[[forward]]
name = "hec"
kind = "splunk-hec"
url = "https://splunk.example:8088"
auth = "bearer"
"#,
        );
        let got: Vec<(usize, String)> = diagnostics(&src)
            .into_iter()
            .map(|d| (d.line, format!("{}: {}", d.key, d.message)))
            .collect();
        let expect: &[(usize, &str)] = &[
            (16, "forward[0].name: may contain only"),
            (18, "forward[0].url: must be an https:// URL"),
            (19, "forward[0].auth: auth = \"bearer\" needs token_file"),
            (
                20,
                "forward[0].index: index is not used with kind = \"https\"",
            ),
            (
                21,
                "forward[0].batch_max_events: must be between 1 and 100000",
            ),
            (23, "forward[1]: kind = \"elasticsearch\" needs index"),
            (26, "forward[1].url: must not carry credentials"),
            (27, "forward[1].format: Elasticsearch stores JSON"),
            (28, "forward[1].client_cert_file: must be an absolute path"),
            (
                28,
                "forward[1].client_cert_file: client_cert_file and client_key_file go together",
            ),
            (
                31,
                "forward[2].name: duplicate forward name \"es\" (also used at line 24)",
            ),
            (33, "forward[2].address: must be \"host:port\""),
            (
                35,
                "forward[2].ca_file: ca_file is not used with kind = \"syslog\", transport = \"udp\"",
            ),
            (
                36,
                "forward[2].facility: unknown syslog facility \"local9\"",
            ),
            (38, "forward[3]: kind = \"file\" needs path"),
            (41, "forward[3].gzip: gzip is not used with kind = \"file\""),
            (42, "forward[3].rotate_bytes: must be at least 4096"),
            (43, "forward[4]: kind = \"splunk-hec\" needs token_file"),
            (
                47,
                "forward[4].auth: auth is not used with kind = \"splunk-hec\"",
            ),
        ];
        assert_eq!(got.len(), expect.len(), "{got:#?}");
        for ((line, text), (want_line, want)) in got.iter().zip(expect) {
            assert_eq!(line, want_line, "{text}");
            assert!(
                text.starts_with(want),
                "{text:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn forward_shape_errors_come_from_the_loader() {
        let list = diagnostics(&with(
            "\n[[forward]]\nname = \"x\"\n[[forward]]\nkind = \"kafka\"\nname = \"y\"\nbogus = 1\n",
        ));
        let got: Vec<(usize, &str)> = list.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (15, "forward[0]"),
                (18, "forward[1].kind"),
                (20, "forward[1].bogus")
            ],
            "{list:#?}"
        );
        assert_eq!(list[0].message, "missing required key `kind`");
        assert!(
            list[1].message.contains("unknown variant `kafka`"),
            "{}",
            list[1].message
        );
    }

    #[test]
    fn url_and_address_checks() {
        assert_eq!(super::https_url_problem("https://c.example:8443/x/y"), None);
        assert!(super::https_url_problem("https:///x").is_some());
        assert!(super::https_url_problem("https://c.example/?token=1").is_some());
        assert_eq!(super::host_port_problem("siem.example:6514"), None);
        assert_eq!(super::host_port_problem("[::1]:6514"), None);
        assert!(super::host_port_problem("::1:6514").is_some());
        assert!(super::host_port_problem("siem.example:0").is_some());
        assert!(super::host_port_problem(":514").is_some());
    }

    #[test]
    fn a_postgres_grant_is_valid() {
        let src = with(PG);
        assert_eq!(diagnostics(&src), Vec::new());
        let c = Config::parse(&src, Path::new("t.toml")).unwrap();
        assert!(c.is_granted("api", "pg"));
        assert!(c.is_granted("api", "db"));
        assert!(!c.is_granted("other", "pg"));
        assert_eq!(
            c.grant("api", "pg").unwrap().database.as_deref(),
            Some("orders")
        );
    }

    #[test]
    fn grants_are_checked_all_at_once() {
        let src = with(PG)
            .replace(
                "account = \"api\"\ntarget = \"pg\"",
                "account = \"nobody\"\ntarget = \"pg\"",
            )
            .replace("policy = \"ro\"", "policy = \"missing\"")
            .replace("masking = \"pii\"", "masking = \"nope\"")
            .replace(
                "password_file = \"/etc/warden/secrets/ro\"",
                "password_file = \"secrets/ro\"",
            );
        let keys: Vec<String> = diagnostics(&src).into_iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            [
                "grant[0].account",
                "grant[0].password_file",
                "grant[0].policy",
                "grant[0].masking"
            ],
            "{src}"
        );
        // Protocol grants need their four keys.
        let src = with(PG).replace("upstream_user = \"orders_ro\"\n", "");
        let list = diagnostics(&src);
        assert_eq!(list.len(), 1, "{list:#?}");
        assert!(
            list[0].message.contains("missing `upstream_user`"),
            "{list:?}"
        );
        // A second grant of the same pair.
        let twice = format!(
            "{}\n[[grant]]\naccount = \"api\"\ntarget = \"pg\"\ndatabase = \"o\"\nupstream_user = \"u\"\npassword_file = \"/p\"\npolicy = \"ro\"\n",
            with(PG)
        );
        let list = diagnostics(&twice);
        assert_eq!(list.len(), 1, "{list:#?}");
        assert!(list[0].message.contains("a second grant"), "{list:?}");
    }

    #[test]
    fn tcp_targets_take_no_protocol_options() {
        let src = with("[[grant]]\naccount = \"api\"\ntarget = \"db\"\npolicy = \"x\"\n");
        only(&src, "grant[0].policy", 17, "tcp target");
        let src = BASE.replace(
            "address = \"10.0.0.5:5432\"",
            "address = \"10.0.0.5:5432\"\ntls = { mode = \"require\" }",
        );
        only(&src, "target[0].tls", 8, "byte for byte");
    }

    #[test]
    fn protocol_targets_are_reached_through_grants_only() {
        let src = with(PG).replace("targets = [\"db\"]", "targets = [\"db\", \"pg\"]");
        only(&src, "account[0].targets[1]", 13, "needs a [[grant]]");
    }

    #[test]
    fn target_tls_options_are_checked() {
        let src = with(PG).replace(
            "address = \"10.0.0.6:5432\"",
            "address = \"10.0.0.6:5432\"\ntls = { mode = \"require\", ca_file = \"/ca.pem\", server_name = \"bad name!\" }\nclient_tls = { cert_file = \"c.pem\", key_file = \"/k.pem\" }\nmax_message_bytes = 10",
        );
        let keys: Vec<String> = diagnostics(&src).into_iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            [
                "target[1].tls.ca_file",
                "target[1].tls.server_name",
                "target[1].client_tls.cert_file",
                "target[1].max_message_bytes"
            ]
        );
    }

    /// BASE plus an HTTP target (its address on line 18), its grant and a
    /// policy.
    const HTTP: &str = r#"
[[target]]
name = "web"
protocol = "http"
address = "10.0.0.7:443"

[[grant]]
account = "api"
target = "web"
policy = "web"

[policy.web]
rules = [{ action = "allow", methods = ["GET"], paths = ["/**"] }]
"#;

    fn http_target(lines: &str) -> String {
        with(HTTP).replace(
            "address = \"10.0.0.7:443\"",
            &format!("address = \"10.0.0.7:443\"\n{lines}"),
        )
    }

    #[test]
    fn http_tls_modes_are_accepted_and_resolved_to_verify_full() {
        for lines in [
            "upstream_tls = true",
            "upstream_tls = true\nintercept_tls = true\ntls = { mode = \"verify-full\", server_name = \"api.internal\" }",
            "intercept_tls = true\ntls = { mode = \"verify-full\", ca_file = \"/ca.pem\", server_name = \"api.internal\" }",
            "upstream_tls = true\ntls = { mode = \"verify-full\", server_name = \"api.internal\" }",
        ] {
            let src = http_target(lines);
            assert_eq!(diagnostics(&src), Vec::new(), "{lines}");
            let c = Config::parse(&src, Path::new("t.toml")).unwrap();
            let t = &c.targets[1];
            let tls = t.effective_upstream_tls().unwrap();
            assert_eq!(tls.mode, crate::config::TlsMode::VerifyFull, "{lines}");
            assert_eq!(
                tls.server_name.is_some(),
                lines.contains("server_name"),
                "{lines}"
            );
            assert_eq!(t.intercept_tls, lines.contains("intercept_tls"));
        }
        // Neither key: the tls table as written (or none).
        let c = Config::parse(&with(HTTP), Path::new("t.toml")).unwrap();
        assert_eq!(c.targets[1].effective_upstream_tls(), None);
    }

    #[test]
    fn http_tls_contradictions_are_reported_with_lines() {
        let src = http_target("upstream_tls = true\ntls = { mode = \"disable\" }");
        only(
            &src,
            "target[1].upstream_tls",
            19,
            "tls.mode is \"disable\" (line 20)",
        );
        let src = http_target(
            "intercept_tls = true\ntls = { mode = \"require\", server_name = \"api.internal\" }",
        );
        only(&src, "target[1].intercept_tls", 19, "verify-full");
        let src = http_target(
            "intercept_tls = true\ntls = { mode = \"verify-full\", server_name = \"a.b\" }\nclient_tls = { cert_file = \"/c.pem\", key_file = \"/k.pem\" }",
        );
        only(&src, "target[1].client_tls", 21, "intercept_tls = true");
        // Intercepting needs the name the upstream is: never the workload's SNI.
        for lines in [
            "intercept_tls = true",
            "intercept_tls = true\ntls = { mode = \"verify-full\", ca_file = \"/ca.pem\" }",
        ] {
            only(
                &http_target(lines),
                "target[1].intercept_tls",
                19,
                "tls.server_name",
            );
        }
        // Both keys on a postgres and a tcp target: one error per key.
        let src = with(PG).replace(
            "address = \"10.0.0.6:5432\"",
            "address = \"10.0.0.6:5432\"\nupstream_tls = true\nintercept_tls = true",
        );
        let got: Vec<(String, usize)> = diagnostics(&src)
            .into_iter()
            .map(|d| (d.key, d.line))
            .collect();
        assert_eq!(
            got,
            [
                ("target[1].upstream_tls".to_owned(), 19),
                ("target[1].intercept_tls".to_owned(), 20)
            ]
        );
        let src = BASE.replace(
            "address = \"10.0.0.5:5432\"",
            "address = \"10.0.0.5:5432\"\nintercept_tls = true",
        );
        only(&src, "target[0].intercept_tls", 8, "only http targets");
        // A typo is an unknown key, with its line.
        let list = diagnostics(&http_target("intercept_tsl = true"));
        assert_eq!(list.len(), 1, "{list:#?}");
        assert_eq!(
            (list[0].key.as_str(), list[0].line),
            ("target[1].intercept_tsl", 19)
        );
    }

    #[test]
    fn upgrades_are_http_only_plain_tokens_and_never_h2c() {
        let src = with(PG).replace(
            "address = \"10.0.0.6:5432\"",
            "address = \"10.0.0.6:5432\"\nallow_upgrade = [\"websocket\"]",
        );
        only(&src, "target[1].allow_upgrade", 19, "only http targets");
        let http = "[[target]]\nname = \"api\"\nprotocol = \"http\"\naddress = \"10.0.0.7:80\"\nallow_upgrade = [\"websocket\", \"h2c\", \"bad token\"]\n";
        let keys: Vec<String> = diagnostics(&with(http))
            .into_iter()
            .filter(|d| d.key.contains("allow_upgrade"))
            .map(|d| d.key)
            .collect();
        assert_eq!(
            keys,
            ["target[1].allow_upgrade[1]", "target[1].allow_upgrade[2]"]
        );
    }

    #[test]
    fn policy_and_masking_problems_are_reported_at_their_keys() {
        let src = with(PG)
            .replace(
                "rules = [{ action = \"allow\", classes = [\"read\"] }]",
                "rules = [{ action = \"allow\", classes = [\"read\"] }, { action = \"block\", functions = [\"\"] }]",
            )
            .replace("patterns = [\"email\"]", "patterns = [\"email\", \"nosuch\"]");
        let keys: Vec<String> = diagnostics(&src).into_iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            ["policy.ro.rules[1].functions[0]", "masking.pii.patterns[1]"],
            "{src}"
        );
        // An unknown key in a policy table is a shape error with its line.
        let src = with(PG).replace("[policy.ro]\n", "[policy.ro]\ndefualt = \"deny\"\n");
        let list = diagnostics(&src);
        assert_eq!(list.len(), 1, "{list:#?}");
        assert_eq!(list[0].key, "policy.ro.defualt");
    }

    #[test]
    fn base_is_valid() {
        assert_eq!(diagnostics(BASE), Vec::new());
    }

    #[test]
    fn listen_must_be_ipv4_loopback_with_a_port() {
        for bad in [
            "0.0.0.0:15001",
            "10.0.0.1:15001",
            "127.0.0.1:0",
            "[::1]:15001",
        ] {
            let src = BASE.replace("127.0.0.1:15001", bad);
            only(&src, "agent.listen", 2, "IPv4 loopback");
        }
        assert_eq!(
            diagnostics(&BASE.replace("127.0.0.1:15001", "127.0.0.2:1")),
            Vec::new()
        );
    }

    #[test]
    fn listen6_must_be_ipv6_loopback_with_a_port() {
        for bad in [
            "[::]:15001",
            "[::ffff:127.0.0.1]:15001",
            "127.0.0.1:15002",
            "[::1]:0",
        ] {
            only(
                &agent(&format!("listen6 = {bad:?}")),
                "agent.listen6",
                2,
                "[::1]",
            );
        }
        assert_eq!(diagnostics(&agent("listen6 = \"[::1]:15002\"")), Vec::new());
    }

    #[test]
    fn ipv6_targets_need_listen6() {
        let v6 =
            with("[[target]]\nname = \"v6\"\nprotocol = \"tcp\"\naddress = \"[fd00::5]:5432\"\n");
        assert_eq!(diagnostics(&v6), Vec::new());
        let off = v6.replacen("[agent]\n", "[agent]\nlisten6 = \"off\"\n", 1);
        only(
            &off,
            "target[1].address",
            18,
            "agent.listen6 = \"off\" (line 2)",
        );
        // An IPv4-mapped address is IPv4 on the wire: no IPv6 listener needed.
        let mapped = off.replace("[fd00::5]:5432", "[::ffff:10.0.0.6]:5432");
        assert_eq!(diagnostics(&mapped), Vec::new());
    }

    #[test]
    fn paths_must_be_absolute() {
        for key in ["state_dir", "bpf_pin_dir", "control_socket"] {
            only(
                &agent(&format!("{key} = \"var/x\"")),
                &format!("agent.{key}"),
                2,
                "absolute",
            );
        }
        only(
            &with("[audit]\npath = \"audit.db\"\n"),
            "audit.path",
            15,
            "absolute",
        );
        assert_eq!(
            diagnostics(&with("[audit]\npath = \"/tmp/a.db\"\n")),
            Vec::new()
        );
    }

    #[test]
    fn cgroup_paths_are_checked() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "/sys/fs/cgroup/system.slice/api.service",
            "/",
        ] {
            let src = BASE.replace("/system.slice/api.service", bad);
            only(&src, "account[0].cgroups[0]", 11, "invalid cgroup path");
        }
        // Enrolled cgroups as deep as the kernel side's walk reaches, not deeper
        // (issue 16, item 1c).
        let deepest = "/d".repeat(warden_common::MAX_ENROLLED_LEVEL as usize);
        assert_eq!(super::cgroup_level(&deepest), 127);
        assert_eq!(
            diagnostics(&BASE.replace("/system.slice/api.service", &deepest)),
            Vec::new()
        );
        only(
            &BASE.replace("/system.slice/api.service", &format!("{deepest}/x")),
            "account[0].cgroups[0]",
            11,
            "deeper than level 127",
        );
        // Attaching at, or running the agent in, a deep cgroup is fine.
        assert_eq!(
            diagnostics(&agent(&format!("cgroup_root = \"{deepest}/x\""))),
            Vec::new()
        );
        // A cgroup that does not start with "/".
        only(
            &BASE.replace("/system.slice/api.service", "system.slice/x"),
            "account[0].cgroups[0]",
            11,
            "must start with \"/\"",
        );

        for bad in ["/a/", "/a//b", "/..", "/sys/fs/cgroup"] {
            only(
                &agent(&format!("cgroup_root = {bad:?}")),
                "agent.cgroup_root",
                2,
                "invalid cgroup path",
            );
            only(
                &agent(&format!("agent_cgroup = {bad:?}")),
                "agent.agent_cgroup",
                2,
                "invalid cgroup path",
            );
        }
        // The root is fine to attach at, not to move the agent into.
        assert_eq!(diagnostics(&agent("cgroup_root = \"/\"")), Vec::new());
        only(
            &agent("agent_cgroup = \"/\""),
            "agent.agent_cgroup",
            2,
            "root",
        );
        assert_eq!(
            diagnostics(&agent("agent_cgroup = \"/warden.agent\"")),
            Vec::new()
        );
    }

    #[test]
    fn numeric_ranges() {
        only(
            &agent("upstream_mark = 0"),
            "agent.upstream_mark",
            2,
            "non-zero",
        );
        only(
            &agent("connect_timeout_ms = 0"),
            "agent.connect_timeout_ms",
            2,
            "between 1 and 600000",
        );
        only(
            &agent("connect_timeout_ms = 600001"),
            "agent.connect_timeout_ms",
            2,
            "between",
        );
        assert_eq!(
            diagnostics(&agent("connect_timeout_ms = 600000")),
            Vec::new()
        );
        only(
            &agent("relay_buffer_bytes = 4095"),
            "agent.relay_buffer_bytes",
            2,
            "between 4096",
        );
        only(
            &agent("relay_buffer_bytes = 16777217"),
            "agent.relay_buffer_bytes",
            2,
            "16 MiB",
        );
        assert_eq!(diagnostics(&agent("relay_buffer_bytes = 4096")), Vec::new());
        assert_eq!(
            diagnostics(&agent("relay_buffer_bytes = 16777216")),
            Vec::new()
        );
        only(
            &agent("max_connections = 0"),
            "agent.max_connections",
            2,
            "at least 1",
        );
        assert_eq!(diagnostics(&agent("max_connections = 1")), Vec::new());
        only(
            &agent("max_connections_per_account = 0"),
            "agent.max_connections_per_account",
            2,
            "at least 1",
        );
        only(
            &agent("worker_threads = 0"),
            "agent.worker_threads",
            2,
            "at least 1",
        );
        assert_eq!(diagnostics(&agent("worker_threads = 1")), Vec::new());
        only(
            &with("[audit]\nbatch_max = 0\n"),
            "audit.batch_max",
            15,
            "between 1 and 10000",
        );
        only(
            &with("[audit]\nbatch_max = 10001\n"),
            "audit.batch_max",
            15,
            "between 1 and 10000",
        );
        assert_eq!(
            diagnostics(&with("[audit]\nbatch_max = 10000\n")),
            Vec::new()
        );
        only(
            &with("[audit]\nretention_days = 0\n"),
            "audit.retention_days",
            15,
            "between 1 and 36500",
        );
        only(
            &with("[audit]\nretention_days = 36501\n"),
            "audit.retention_days",
            15,
            "between 1 and 36500",
        );
        for ok in ["1", "400", "36500"] {
            assert_eq!(
                diagnostics(&with(&format!("[audit]\nretention_days = {ok}\n"))),
                Vec::new(),
                "{ok}"
            );
        }
    }

    #[test]
    fn target_names_are_non_empty_and_unique() {
        let empty = BASE
            .replace("name = \"db\"", "name = \"\"")
            .replace("targets = [\"db\"]", "targets = []");
        only(&empty, "target[0].name", 5, "must not be empty");
        let dup =
            with("[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"10.0.0.6:5432\"\n");
        only(
            &dup,
            "target[1].name",
            15,
            "duplicate target name \"db\" (also used at line 5)",
        );
    }

    #[test]
    fn target_addresses_are_unique() {
        let dup =
            with("[[target]]\nname = \"db2\"\nprotocol = \"tcp\"\naddress = \"10.0.0.5:5432\"\n");
        only(
            &dup,
            "target[1].address",
            17,
            "duplicate target address 10.0.0.5:5432 (also used by target[0] at line 7)",
        );
        // The same address spelt as IPv4-mapped IPv6 is the same address.
        let mapped = with(
            "[[target]]\nname = \"db2\"\nprotocol = \"tcp\"\naddress = \"[::ffff:10.0.0.5]:5432\"\n",
        );
        let list = diagnostics(&mapped);
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].message.contains("duplicate target address"));
        // Same IP, other port: fine.
        let other_port =
            with("[[target]]\nname = \"db2\"\nprotocol = \"tcp\"\naddress = \"10.0.0.5:5433\"\n");
        assert_eq!(diagnostics(&other_port), Vec::new());
    }

    #[test]
    fn mysql_targets_are_protocol_targets_with_upstream_tls_only() {
        // Issue 20: mysql is served now; like postgres it needs a grant;
        // upstream TLS is spoken, the workload's side is refused until it
        // is.
        let src = BASE.replace(
            "protocol = \"tcp\"",
            "protocol = \"mysql\"\ntls = { mode = \"require\" }\n\
             client_tls = { cert_file = \"/c.pem\", key_file = \"/k.pem\" }",
        );
        let list = diagnostics(&src);
        let messages: Vec<&str> = list.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("mysql targets do not support client_tls yet")),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m.contains("support TLS")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("is a mysql target: it needs a [[grant]]")),
            "{messages:?}"
        );
        assert!(
            !messages
                .iter()
                .any(|m| m.contains("not supported yet by this build"))
        );
    }

    #[test]
    fn target_port_zero_is_rejected() {
        only(
            &BASE.replace("10.0.0.5:5432", "10.0.0.5:0"),
            "target[0].address",
            7,
            "port must not be 0",
        );
    }

    #[test]
    fn target_cannot_be_the_proxy() {
        only(
            &BASE.replace("10.0.0.5:5432", "127.0.0.1:15001"),
            "target[0].address",
            7,
            "own proxy listen address",
        );
        // Also when the listen address is the default (not written).
        let src = BASE
            .replace("listen = \"127.0.0.1:15001\"\n", "")
            .replace("10.0.0.5:5432", "127.0.0.1:965");
        only(&src, "target[0].address", 6, "own proxy listen address");
        // And the IPv6 listener, explicit or implied by "auto".
        let v6 = agent("listen6 = \"[::1]:15009\"").replace("10.0.0.5:5432", "[::1]:15009");
        only(&v6, "target[0].address", 8, "own proxy listen address");
        only(
            &BASE.replace("10.0.0.5:5432", "[::1]:15001"),
            "target[0].address",
            7,
            "own proxy listen address",
        );
    }

    #[test]
    fn account_names_are_valid_and_unique() {
        only(
            &BASE.replace("name = \"api\"", "name = \"\""),
            "account[0].name",
            10,
            "must not be empty",
        );
        only(
            &BASE.replace("name = \"api\"", "name = \"my api\""),
            "account[0].name",
            10,
            "invalid account name",
        );
        only(
            &BASE.replace("name = \"api\"", "name = \"a/b\""),
            "account[0].name",
            10,
            "invalid account name",
        );
        assert_eq!(
            diagnostics(&BASE.replace("name = \"api\"", "name = \"A-z_0.9\"")),
            Vec::new()
        );
        only(
            &with("[[account]]\nname = \"api\"\n"),
            "account[1].name",
            15,
            "duplicate account name \"api\" (also used at line 10)",
        );
    }

    #[test]
    fn account_targets_must_exist() {
        only(
            &BASE.replace("targets = [\"db\"]", "targets = [\"db\", \"cache\"]"),
            "account[0].targets[1]",
            13,
            "unknown target \"cache\"",
        );
    }

    #[test]
    fn a_reference_to_a_broken_target_is_not_also_unknown() {
        let src = BASE.replace("10.0.0.5:5432", "10.0.0.5");
        let list = diagnostics(&src);
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].key, "target[0].address");
    }

    #[test]
    fn cgroups_and_uids_belong_to_one_account() {
        let second = "[[account]]\nname = \"batch\"\ncgroups = [\"/x.service\", \"/system.slice/api.service\"]\n";
        only(
            &with(second),
            "account[1].cgroups[1]",
            16,
            "cgroup \"/system.slice/api.service\" is claimed by both account \"api\" (line 11) and account \"batch\"",
        );
        let second = "[[account]]\nname = \"batch\"\nuids = [7, 1001]\n";
        only(
            &with(second),
            "account[1].uids[1]",
            16,
            "uid 1001 is claimed by both account \"api\" (line 12) and account \"batch\"",
        );
        // Repeating a claim inside one account is harmless.
        assert_eq!(
            diagnostics(&BASE.replace("uids = [1001]", "uids = [1001, 1001]")),
            Vec::new()
        );
    }

    /// BASE plus lines appended to its [[account]] (which starts at line 9).
    fn account_with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    #[test]
    fn units_are_named_like_units_and_belong_to_one_account() {
        assert!(diagnostics(&account_with("units = [\"web.service\", \"x.scope\"]\n")).is_empty());
        only(
            &account_with("units = [\"api\"]\n"),
            "account[0].units[0]",
            14,
            "must end in .service or .scope",
        );
        only(
            &account_with("units = [\"a/b.service\"]\n"),
            "account[0].units[0]",
            14,
            "may contain only",
        );
        let src = account_with(
            "units = [\"web.service\"]\n[[account]]\nname = \"batch\"\nunits = [\"web.service\"]\n",
        );
        only(
            &src,
            "account[1].units[0]",
            17,
            "unit \"web.service\" is claimed by both account \"api\" (line 14) and account \"batch\"",
        );
    }

    #[test]
    fn a_unit_and_a_cgroup_path_of_two_accounts_cannot_overlap() {
        let src = account_with("[[account]]\nname = \"batch\"\nunits = [\"api.service\"]\n");
        only(
            &src,
            "account[1].units[0]",
            16,
            "unit \"api.service\" of account \"batch\" is the cgroup \"/system.slice/api.service\" that account \"api\" claims",
        );
    }

    #[test]
    fn exe_pins_are_absolute_with_a_real_digest() {
        let good = format!(
            "exe = {{ path = \"/usr/bin/api\", sha256 = \"{}\" }}\n",
            "ab".repeat(32)
        );
        assert!(diagnostics(&account_with(&good)).is_empty());
        only(
            &account_with("exe = { path = \"bin/api\" }\n"),
            "account[0].exe.path",
            14,
            "absolute",
        );
        only(
            &account_with(&format!(
                "exe = {{ path = \"/usr/bin/api\", sha256 = \"{}\" }}\n",
                "AB".repeat(32)
            )),
            "account[0].exe.sha256",
            14,
            "64 lowercase hex",
        );
        let list = diagnostics(&account_with(
            "exe = { path = \"/usr/bin/api\", md5 = \"x\" }\n",
        ));
        assert_eq!(list.len(), 1, "{list:#?}");
        assert!(list[0].message.contains("md5"), "{list:#?}");
    }

    #[test]
    fn token_file_identity_needs_its_keys() {
        let ok = "identity = { kind = \"token_file\", token_file = \"/run/t\", jwks_url = \"https://idp/jwks\", issuer = \"https://idp\", audience = \"warden\" }\n";
        assert!(
            diagnostics(&account_with(ok)).is_empty(),
            "{:#?}",
            diagnostics(&account_with(ok))
        );
        let list = diagnostics(&account_with("identity = { kind = \"token_file\" }\n"));
        let msgs: Vec<&str> = list.iter().map(|d| d.message.as_str()).collect();
        for needle in [
            "needs token_file",
            "needs jwks_file or jwks_url",
            "needs issuer",
            "needs audience",
        ] {
            assert!(
                msgs.iter().any(|m| m.contains(needle)),
                "{needle}: {msgs:#?}"
            );
        }
        only(
            &account_with(&ok.replace("https://idp/jwks", "http://idp/jwks")),
            "account[0].identity.jwks_url",
            14,
            "https://",
        );
        only(
            &account_with(&ok.replace(" }", ", algorithms = [\"RS256\", \"HS256\"] }")),
            "account[0].identity.algorithms[1]",
            14,
            "\"HS256\" is not allowed",
        );
        only(
            &account_with(&ok.replace(" }", ", algorithms = [\"none\"] }")),
            "account[0].identity.algorithms[0]",
            14,
            "\"none\" is not allowed",
        );
        only(
            &account_with(&ok.replace(" }", ", leeway_secs = 61 }")),
            "account[0].identity.leeway_secs",
            14,
            "at most 60",
        );
        only(
            &account_with(&ok.replace(" }", ", subject = \"a\", spiffe_trust_domain = \"b\" }")),
            "account[0].identity.spiffe_trust_domain",
            14,
            "not both",
        );
    }

    #[test]
    fn mint_identity_takes_no_token_source() {
        assert!(diagnostics(&account_with("identity = { kind = \"mint\" }\n")).is_empty());
        only(
            &account_with("identity = { kind = \"mint\", jwks_file = \"/x\" }\n"),
            "account[0].identity.jwks_file",
            14,
            "not used with kind = \"mint\"",
        );
        only(
            &account_with("identity = { kind = \"mint\", ttl_secs = 5 }\n"),
            "account[0].identity.ttl_secs",
            14,
            "between 10 and 3600",
        );
    }
}
