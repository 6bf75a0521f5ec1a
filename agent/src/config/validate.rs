//! The semantic pass over the deserialised sections: runs each section's
//! checks (in `agent.rs`, `audit.rs`, `target.rs`, `account.rs`,
//! `grant.rs`, `policy.rs`, `masking.rs`, `forward.rs`, `approvals.rs`,
//! `metrics.rs`: ranges, paths, addresses, names, cross-references) and
//! returns what they compiled. Every problem is reported; none stops the
//! pass. The tests below cover every section's rules through
//! [`Config::parse`](super::Config::parse).

use std::net::SocketAddr;
use std::path::Path;

use super::account::check_accounts;
use super::agent::{Listen6, check_agent};
use super::audit::check_audit;
use super::error::Diags;
use super::forward::check_forwards;
use super::grant::{check_allowlists, check_grants};
use super::load::Decoded;
use super::target::check_targets;

/// Checks every section; the policies and maskings are compiled on the way
/// and returned for the runtimes.
pub(crate) fn validate(d: &Decoded, diags: &mut Diags<'_>) -> super::Compiled {
    check_agent(d, diags);
    check_audit(d, diags);
    check_targets(d, diags);
    check_accounts(d, diags);
    check_grants(d, diags);
    check_allowlists(d, diags);
    let policies = super::policy::check(d, diags);
    let maskings = super::masking::check(d, diags);
    check_forwards(d, diags);
    super::approvals::check(&d.approvals, &d.agent.control_socket, diags);
    let proxy: Vec<SocketAddr> = std::iter::once(d.agent.listen)
        .chain(match d.agent.listen6 {
            Listen6::Addr(a) => Some(a),
            _ => None,
        })
        .collect();
    super::metrics::check(&d.metrics, &proxy, diags);
    super::Compiled { policies, maskings }
}

/// A path key must be absolute.
pub(super) fn check_absolute(key: &str, path: &Path, diags: &mut Diags<'_>) {
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
        assert_eq!(
            super::super::forward::https_url_problem("https://c.example:8443/x/y"),
            None
        );
        assert!(super::super::forward::https_url_problem("https:///x").is_some());
        assert!(super::super::forward::https_url_problem("https://c.example/?token=1").is_some());
        assert_eq!(
            super::super::forward::host_port_problem("siem.example:6514"),
            None
        );
        assert_eq!(super::super::forward::host_port_problem("[::1]:6514"), None);
        assert!(super::super::forward::host_port_problem("::1:6514").is_some());
        assert!(super::super::forward::host_port_problem("siem.example:0").is_some());
        assert!(super::super::forward::host_port_problem(":514").is_some());
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
        assert_eq!(super::super::account::cgroup_level(&deepest), 127);
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
