//! `[[forward]]`: the model (one output shipping the audit trail off the
//! host: kind, format, transport, credentials, batching) and its checks.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Diags, index, join};
use super::load::Decoded;
use super::model::defaults;
use super::validate::check_absolute;

/// `[[forward]]`: one output that ships every audit event (checkpoints
/// included) off the host, at least once, with its own cursor in the store.
/// Which keys apply depends on `kind`; validation rejects the others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// Unique name; also the key of the output's cursor in the store.
    pub name: String,
    pub kind: ForwardKind,
    /// How each event is written: the stored OCSF bytes, ECS JSON or CEF.
    #[serde(default)]
    pub format: ForwardFormat,
    /// `https`, `splunk-hec`, `elasticsearch`: an `https://` URL (for HEC
    /// and Elasticsearch the base URL; the API path is appended).
    #[serde(default)]
    pub url: Option<String>,
    /// `syslog`: `host:port` of the receiver.
    #[serde(default)]
    pub address: Option<String>,
    /// `syslog`: `tls` (RFC 5425, default), `tcp` or `udp` (labs only).
    #[serde(default)]
    pub transport: Option<SyslogTransport>,
    /// `file`: the NDJSON file written (rotated next to itself).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// CA bundle (PEM) the collector's certificate must chain to; default:
    /// the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// `syslog` over TLS: the name the receiver's certificate must carry
    /// (and SNI); default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `https`, `elasticsearch`: `none`, `bearer` or `apikey` (token from
    /// `token_file`), `basic` (`user:password` from `credentials_file`).
    #[serde(default)]
    pub auth: ForwardAuth,
    /// Bearer/API-key token (`auth`), or the HEC token (`splunk-hec`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `auth = "basic"`: first line `user:password`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// HTTP outputs: gzip request bodies.
    #[serde(default = "defaults::forward_gzip")]
    pub gzip: bool,
    /// `elasticsearch`: index (or data stream) written; `splunk-hec`:
    /// optional index of every event.
    #[serde(default)]
    pub index: Option<String>,
    /// `splunk-hec`: sourcetype of every event; default `warden:<format>`.
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// `splunk-hec`: wait for indexer acknowledgment before advancing.
    #[serde(default)]
    pub ack: bool,
    /// `splunk-hec` with `ack`: give up waiting and resend after this long.
    #[serde(default = "defaults::forward_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// `syslog`: facility name (`kern` .. `local7`).
    #[serde(default = "defaults::forward_facility")]
    pub facility: String,
    /// `file`: rotate when the file would grow past this many bytes.
    #[serde(default = "defaults::forward_rotate_bytes")]
    pub rotate_bytes: u64,
    /// `file`: rotated files kept (`path.1` newest .. `path.N`).
    #[serde(default = "defaults::forward_keep_files")]
    pub keep_files: u32,
    /// Most events per batch.
    #[serde(default = "defaults::forward_batch_max_events")]
    pub batch_max_events: usize,
    /// Most bytes (formatted, before compression) per batch; one larger
    /// event still goes alone.
    #[serde(default = "defaults::forward_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A batch that is not full is sent this long after its first event
    /// was read.
    #[serde(default = "defaults::forward_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Network timeout of one request or connection, in seconds.
    #[serde(default = "defaults::forward_timeout_secs")]
    pub timeout_secs: u64,
    /// Longest pause between two retries, in seconds.
    #[serde(default = "defaults::forward_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Warn (log and status) when more events than this wait.
    #[serde(default = "defaults::forward_backlog_warn")]
    pub backlog_warn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardKind {
    Https,
    SplunkHec,
    Elasticsearch,
    Syslog,
    File,
}

impl ForwardKind {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardKind::Https => "https",
            ForwardKind::SplunkHec => "splunk-hec",
            ForwardKind::Elasticsearch => "elasticsearch",
            ForwardKind::Syslog => "syslog",
            ForwardKind::File => "file",
        }
    }

    /// Kinds that speak HTTP (and take `url`, `gzip`, auth).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ForwardKind::Https | ForwardKind::SplunkHec | ForwardKind::Elasticsearch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFormat {
    /// The stored OCSF 1.8 JSON bytes, unchanged.
    #[default]
    Ocsf,
    /// Elastic Common Schema JSON.
    Ecs,
    /// ArcSight Common Event Format lines.
    Cef,
}

impl ForwardFormat {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardFormat::Ocsf => "ocsf",
            ForwardFormat::Ecs => "ecs",
            ForwardFormat::Cef => "cef",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Tls,
    Tcp,
    Udp,
}

impl SyslogTransport {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransport::Tls => "tls",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardAuth {
    #[default]
    None,
    Bearer,
    Basic,
    Apikey,
}

impl ForwardAuth {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardAuth::None => "none",
            ForwardAuth::Bearer => "bearer",
            ForwardAuth::Basic => "basic",
            ForwardAuth::Apikey => "apikey",
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
pub(super) fn forward_keys(
    kind: ForwardKind,
    transport: SyslogTransport,
) -> &'static [&'static str] {
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
pub(super) const FORWARD_COMMON: &[&str] = &[
    "name",
    "kind",
    "format",
    "batch_max_events",
    "batch_max_bytes",
    "batch_wait_ms",
    "retry_max_secs",
    "backlog_warn",
];

pub(super) fn check_forwards(d: &Decoded, diags: &mut Diags<'_>) {
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

pub(super) fn check_forward(at: &str, f: &Forward, diags: &mut Diags<'_>) {
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
pub(super) fn es_index_problem(ix: &str) -> Option<&'static str> {
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
