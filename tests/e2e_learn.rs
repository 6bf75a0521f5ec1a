//! Statement allow-lists learned from traffic, through the real `warden`
//! binary (issue 19): a grant in `mode = "learn"` records what pgbench and
//! a psycopg2 program send; `warden policy freeze` writes the allow-list;
//! `mode = "enforce"` lets the same workloads through with other literal
//! values and refuses every new shape with 42501 naming its fingerprint;
//! an edited allow-list is picked up by `warden reload`; a malformed one
//! is a `check-config` error with file:line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::pg::{self, PgServer};
use common::*;
use serde_json::Value;

const POLICY: &str = r#"
[policy.rw]
default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "block", functions = ["pg_read_file", "set_config"], name = "no-file-access" },
]
"#;

struct Env {
    env: TestEnv,
    pg: &'static PgServer,
    app: String,
    pw: PathBuf,
}

impl Env {
    fn start(grant_extra: &str) -> Self {
        let pg = PgServer::shared();
        let env = TestEnv::new();
        let app = env.cgroup("app");
        let pw = env.tmp.path().join("orders_rw.pw");
        std::fs::write(&pw, format!("{}\n", pg.password(pg::ORDERS_RW))).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Env { env, pg, app, pw };
        e.write(grant_extra);
        let mut e = e;
        e.env.start();
        e
    }

    fn write(&self, grant_extra: &str) {
        self.env.write_config(&format!(
            "{agent}
[[target]]
name = \"pg\"
protocol = \"postgres\"
address = \"{addr}\"
tls = {{ mode = \"verify-full\", ca_file = \"{ca}\" }}

[[account]]
name = \"app\"
cgroups = [\"{app}\"]

[[grant]]
account = \"app\"
target = \"pg\"
database = \"{db}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"rw\"
{grant_extra}
{POLICY}",
            agent = self.env.agent_table(false, ""),
            addr = self.pg.addr(),
            ca = self.pg.ca_pem_path().display(),
            app = self.app,
            db = pg::DB,
            user = pg::ORDERS_RW,
            pw = self.pw.display(),
        ));
    }

    fn in_app(&self, program: &Path, args: &[&str]) -> Output {
        self.env
            .in_cgroup_cmd(&self.app, program, args)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port().to_string())
            .env("PGUSER", "workload")
            .env("PGDATABASE", pg::DB)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    }

    fn psql(&self, sql: &str) -> Output {
        self.in_app(
            &self.pg.bin("psql"),
            &["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
    }

    fn pgbench(&self, args: &[&str]) {
        let out = self.in_app(&self.pg.bin("pgbench"), args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("actually processed: 40/40"),
            "pgbench {args:?}: {text}\n{}\nwarden log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.env.log())
        );
    }

    fn psycopg2(&self) -> Value {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/pg_warden_client.py");
        let out = self.in_app(Path::new("/usr/bin/python3"), &[script.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn workloads(&self) {
        for mode in ["simple", "extended", "prepared"] {
            self.pgbench(&["-n", "-S", "-M", mode, "-c", "2", "-t", "20"]);
            self.pgbench(&["-n", "-b", "tpcb-like", "-M", mode, "-c", "2", "-t", "20"]);
        }
        let res = self.psycopg2();
        assert!(
            res.get("error").is_none(),
            "{res:#}\nwarden log:\n{}",
            tail(&self.env.log())
        );
        assert_eq!(res["rows"].as_array().unwrap().len(), 2, "{res:#}");
        assert_eq!(res["cursor_rows"], 1000, "{res:#}");
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn learn_freeze_enforce_reload_and_malformed_allowlists() {
    // pgbench's tables, written by the grant's role.
    let pg = PgServer::shared();
    let init = pg
        .pgbench_cmd(pg::SUPERUSER, pg::DB, "require")
        .args(["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    pg.psql_ok(
        pg::SUPERUSER,
        pg::DB,
        "GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_branches, \
         pgbench_tellers, pgbench_history TO orders_rw",
    );

    // 1. Learn.
    let mut e = Env::start("mode = \"learn\"");
    e.workloads();
    let learned: Value = serde_json::from_str(&ok(&e
        .env
        .warden(&["policy", "learned", "--grant", "app/pg", "--json"])))
    .unwrap();
    let fps = learned["fingerprints"].as_object().unwrap();
    let texts: Vec<&str> = fps.values().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(
        texts.contains(&"select abalance from pgbench_accounts where aid = $?"),
        "{texts:#?}"
    );
    assert!(
        texts.contains(&"update pgbench_accounts set abalance = abalance + $? where aid = $?"),
        "{texts:#?}"
    );
    // The psycopg2 program's statements, with the rule's decision.
    assert!(
        fps.values()
            .any(|f| f["text"] == "delete from orders where id = $?" && f["decision"] == "allowed"),
        "{texts:#?}"
    );
    // Simple mode sends literals, extended and prepared `$1`: two shapes.
    assert!(
        texts.contains(&"select abalance from pgbench_accounts where aid = $n"),
        "{texts:#?}"
    );
    // The point select ran 40 times in simple mode.
    let point = fps
        .values()
        .find(|f| f["text"] == "select abalance from pgbench_accounts where aid = $?")
        .unwrap();
    assert!(point["count"].as_u64().unwrap() >= 40, "{point:#}");
    let events = e.env.audit_events();
    let st = events
        .iter()
        .find(|ev| ev["class_uid"] == 6005 && ev.to_string().contains("pgbench_accounts where aid"))
        .or_else(|| events.iter().find(|ev| ev["class_uid"] == 6005))
        .expect("statement events");
    let al = &st["unmapped"]["warden"]["allowlist"];
    assert_eq!(al["mode"], "learn", "{st:#}");
    assert_eq!(al["verdict"], "learned", "{st:#}");

    // 2. Freeze.
    let list = e.env.tmp.path().join("app-pg.allowlist.toml");
    ok(&e.env.warden(&[
        "policy",
        "freeze",
        "--grant",
        "app/pg",
        "--out",
        list.to_str().unwrap(),
    ]));
    let frozen = std::fs::read_to_string(&list).unwrap();
    assert!(frozen.contains("[[fingerprint]]"), "{frozen}");

    // 3. Enforce (reload): the same workloads, other literal values.
    e.write(&format!(
        "mode = \"enforce\"\nallowlist = \"{}\"",
        list.display()
    ));
    ok(&e.env.warden(&["reload"]));
    e.workloads();
    let refused = |ev: &Value| {
        ev["class_uid"] == 6005 && ev["unmapped"]["warden"]["allowlist"]["verdict"] == "not_listed"
    };
    assert!(
        !e.env.audit_events().iter().any(refused),
        "the learned workloads ran again without refusals"
    );

    // New shapes are refused whatever the rules say, naming the fingerprint.
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 OR true",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1; SELECT 1",
        "SELECT * FROM pgbench_accounts",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT abalance FROM pgbench_accounts WHERE aid = (SELECT 1)",
        "SELECT set_config('search_path', 'evil', false)",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 UNION SELECT 1",
        "SELECT abalance FROM pgbench_accounts /* x */ WHERE aid = 1 -- x\n OR aid = 2",
        "SELECT abalance FROM \"pgbench_accounts\" WHERE aid = $$1$$::int OR 1=1",
        "SELECT 1",
    ] {
        let out = e.psql(sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}: must be refused");
        assert!(
            err.contains("not in the allow-list") || err.contains("refused"),
            "{sql}: {err}"
        );
    }
    let out = e.psql("SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = err
        .split("fingerprint ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in {err}"))
        .to_owned();
    let tailed = ok(&e
        .env
        .warden(&["audit", "tail", "--fingerprint", &id, "--json"]));
    assert!(tailed.lines().count() >= 2, "{tailed}");
    assert!(tailed.contains("not_listed"), "{tailed}");

    // 4. An operator pastes a shape into the file; reload picks it up.
    let mut edited = frozen.clone();
    edited.push_str("\n[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"select $?\"\n");
    std::fs::write(&list, &edited).unwrap();
    ok(&e.env.warden(&["reload"]));
    let out = e.psql("SELECT 42");
    assert_eq!(ok(&out).trim(), "42");

    // 5. A malformed allow-list is a check-config error naming file:line,
    // and a reload with it changes nothing.
    std::fs::write(
        &list,
        format!("{edited}\n[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"select $?\"\nid = \"0000\"\n"),
    )
    .unwrap();
    let check = e.env.warden(&["check-config"]);
    let msg = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(!check.status.success(), "{msg}");
    let line = edited.lines().count() + 5;
    assert!(
        msg.contains(&format!("{}:{line}:", list.display())),
        "want {}:{line}: in {msg}",
        list.display()
    );
    assert!(!e.env.warden(&["reload"]).status.success());
    assert_eq!(ok(&e.psql("SELECT 43")).trim(), "43");
    e.env.stop();
}
