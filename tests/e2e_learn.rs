//! Statement allow-lists learned from traffic, through the real `warden`
//! binary (issue 19): a grant in `mode = "learn"` records what pgbench and
//! a psycopg2 program send; `warden policy freeze` writes the allow-list;
//! `mode = "enforce"` lets the same workloads through with other literal
//! values and refuses every new shape with 42501 naming its fingerprint;
//! an edited allow-list is picked up by `warden reload`; a malformed one
//! is a `check-config` error with file:line. The same for HTTP against a
//! real nginx (id-like path segments collapse, query names are sorted);
//! a tokio-postgres program (extended protocol, binary parameters) learns
//! the fingerprints that text-format and simple-protocol clients are then
//! held to; with `on_new = "approve"` a new shape is held, and an
//! approver's `warden approvals approve ID --learn` lets it through and
//! adds it to the allow-list file, so the next one passes without asking
//! (the workload itself cannot).

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
    pgbench_tables();

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
        // The soundness issue's list (issue 15), each a shape never learned.
        "SET LOCAL search_path = nosuch",
        "RESET search_path",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION DEFAULT",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT filler FROM pgbench_accounts')",
        "SELECT query_to_xml('SELECT * FROM pgbench_accounts', true, true, '')",
        "SELECT table_to_xml('pgbench_accounts', true, true, '')",
        "SELECT histogram_bounds FROM pg_stats WHERE tablename = 'pgbench_accounts'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "START TRANSACTION READ WRITE",
        "SET transaction_read_only = off",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "DO $$ BEGIN EXECUTE 'DROP TABLE pgbench_history'; END $$",
        "COPY pgbench_accounts TO PROGRAM 'gzip'",
        "SELECT abalance || '' FROM pgbench_accounts WHERE aid = 1",
        "SELECT abalance::text FROM pgbench_accounts WHERE aid = 1",
        "SELECT row_to_json(a) FROM pgbench_accounts a WHERE aid = 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1 ORDER BY abalance",
        "COPY pgbench_accounts (aid, abalance) TO STDOUT",
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

// --- HTTP against a real nginx, and `approve --learn` (issue 19) ---

/// `warden approvals --socket SOCKET ARGS` as `uid` (setpriv).
fn approvals_as(socket: &Path, uid: u32, args: &[&str]) -> Output {
    std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(WARDEN)
        .args([
            "--config",
            "/nonexistent/warden.toml",
            "approvals",
            "--socket",
        ])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// The first pending request (waits up to 15 s).
fn first_pending(socket: &Path, approver: u32, log: &dyn Fn() -> String) -> Value {
    let t = std::time::Instant::now();
    loop {
        let v: Value =
            serde_json::from_str(&ok(&approvals_as(socket, approver, &["--json", "list"])))
                .unwrap();
        if let Some(p) = v["pending"].as_array().and_then(|p| p.first()) {
            return p.clone();
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "nothing pending\n{}",
            tail(&log())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An HTTP grant on a real nginx in learn, then enforce mode.
struct HttpLearn {
    env: TestEnv,
    nginx: common::nginx::Nginx,
    app: String,
    approver: User,
    socket: PathBuf,
}

impl HttpLearn {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let env = TestEnv::new();
        let app = env.cgroup("app");
        let dir = env.tmp.path().to_owned();
        let certs = common::forward::make_certs(&dir.join("certs"));
        let nginx = common::nginx::Nginx::start(&dir.join("nginx"), &certs);
        std::fs::create_dir_all(dir.join("nginx/www/v1/orders")).unwrap();
        std::fs::write(dir.join("nginx/www/v1/orders/17"), "order 17\n").unwrap();
        std::fs::write(dir.join("nginx/www/v1/orders/42"), "order 42\n").unwrap();
        let approver = User::create(&format!("wdn-l{}", std::process::id() % 100_000));
        // The approvers' socket where they can reach it.
        let sock_dir = dir.join("approvals");
        std::fs::create_dir_all(&sock_dir).unwrap();
        for d in [dir.as_path(), sock_dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let e = HttpLearn {
            env,
            nginx,
            app,
            approver,
            socket: sock_dir.join("approvals.sock"),
        };
        e.write("mode = \"learn\"");
        let mut e = e;
        e.env.start();
        e
    }

    fn write(&self, grant_extra: &str) {
        self.env.write_config(&format!(
            r#"{agent}
[[target]]
name = "api"
protocol = "http"
address = "127.0.0.1:{port}"

[[account]]
name = "app"
cgroups = ["{app}"]

[[grant]]
account = "app"
target = "api"
policy = "api"
{grant_extra}

[policy.api]
default = "deny"
rules = [
  {{ action = "allow", methods = ["GET", "HEAD"], paths = ["/**"] }},
  {{ action = "block", paths = ["/admin/**"], name = "no-admin" }},
]

[approvals]
approval_timeout_secs = 30
approvers = {{ groups = [], uids = [{approver}, 0] }}
socket = "{socket}"
"#,
            agent = self.env.agent_table(false, ""),
            port = self.nginx.port,
            app = self.app,
            approver = self.approver.uid,
            socket = self.socket.display(),
        ));
    }

    /// `curl` in the enrolled cgroup: one line `CODE BODY` per URL path.
    fn get(&self, path: &str) -> (u16, String) {
        let out = self
            .env
            .in_cgroup_cmd(
                &self.app,
                Path::new("/usr/bin/curl"),
                &[
                    "-sS",
                    "--max-time",
                    "40",
                    "-w",
                    "\n@@%{http_code}",
                    &format!("http://127.0.0.1:{}{path}", self.nginx.port),
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once("\n@@").unwrap_or_else(|| {
            panic!(
                "curl {path}: {text}\n{}\nwarden log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.env.log())
            )
        });
        (code.trim().parse().unwrap(), body.to_owned())
    }

    /// `warden approvals ARGS` as `uid` (setpriv).
    fn approvals_as(&self, uid: u32, args: &[&str]) -> Output {
        approvals_as(&self.socket, uid, args)
    }

    /// `warden approvals ARGS` as root from inside the workload's cgroup.
    fn approvals_in_app(&self, args: &[&str]) -> Output {
        self.env
            .in_cgroup_cmd(
                &self.app,
                Path::new(WARDEN),
                &[
                    &[
                        "--config",
                        "/nonexistent/warden.toml",
                        "approvals",
                        "--socket",
                    ],
                    &[self.socket.to_str().unwrap()][..],
                    args,
                ]
                .concat(),
            )
            .output()
            .unwrap()
    }

    fn pending(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&ok(
            &self.approvals_as(self.approver.uid, &["--json", "list"])
        ))
        .unwrap();
        v["pending"].as_array().cloned().unwrap_or_default()
    }

    fn wait_pending(&self) -> Value {
        first_pending(&self.socket, self.approver.uid, &|| self.env.log())
    }
}

#[test]
fn http_learn_freeze_enforce_against_nginx_and_approve_learn() {
    let mut e = HttpLearn::start();

    // 1. Learn: ids in paths and query values vary, parameter order too.
    for path in [
        "/hello.txt",
        "/v1/orders/17",
        "/v1/orders/42",
        "/v1/orders/550e8400-e29b-41d4-a716-446655440000",
        "/customers.json?b=1&a=x",
        "/customers.json?a=y&b=2",
    ] {
        let (code, body) = e.get(path);
        assert!(code == 200 || code == 404, "{path}: {code} {body}");
    }
    let learned: Value = serde_json::from_str(&ok(&e
        .env
        .warden(&["policy", "learned", "--grant", "app/api", "--json"])))
    .unwrap();
    let fps = learned["fingerprints"].as_object().unwrap();
    let mut texts: Vec<&str> = fps.values().map(|f| f["text"].as_str().unwrap()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        [
            "GET /customers.json?a&b",
            "GET /hello.txt",
            "GET /v1/orders/{id}",
        ],
        "id-like segments collapse, query names are sorted: {learned:#}"
    );
    let orders = fps
        .values()
        .find(|f| f["text"] == "GET /v1/orders/{id}")
        .unwrap();
    assert_eq!(orders["count"], 3, "{orders:#}");

    // 2. Freeze, 3. enforce (reload).
    let list = e.env.tmp.path().join("app-api.allowlist.toml");
    ok(&e.env.warden(&[
        "policy",
        "freeze",
        "--grant",
        "app/api",
        "--out",
        list.to_str().unwrap(),
    ]));
    e.write(&format!(
        "mode = \"enforce\"\nallowlist = \"{}\"",
        list.display()
    ));
    ok(&e.env.warden(&["reload"]));
    // The same shapes with other values pass.
    for path in [
        "/hello.txt",
        "/v1/orders/42",
        "/v1/orders/9000",
        "/v1/orders/0123456789abcdef0123",
        "/customers.json?a=1&b=2",
        "/customers.json?b=3&a=4",
    ] {
        let (code, body) = e.get(path);
        assert!(code == 200 || code == 404, "{path}: {code} {body}");
    }
    assert_eq!(e.get("/v1/orders/17").1, "order 17\n");
    // An unlisted shape is refused with 403 naming its fingerprint,
    // whatever the rules allow: another parameter, a missing one, another
    // path, another method.
    for path in [
        "/customers.json?a=1",
        "/customers.json?a=1&b=2&c=3",
        "/hello.txt?x=1",
        "/v1/orders/17/items",
        "/v1/orders/latest",
        "/big.bin",
    ] {
        let (code, body) = e.get(path);
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("not in the allow-list of grant app/api"),
            "{path}: {body}"
        );
        let id = body
            .split("fingerprint ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no fingerprint in {body}"));
        assert_eq!(id.len(), 16, "{body}");
        let tailed = ok(&e
            .env
            .warden(&["audit", "tail", "--fingerprint", id, "--json"]));
        assert!(tailed.contains("not_listed"), "{path}: {tailed}");
    }
    // Block rules still win over a listed shape: /admin was never listed
    // anyway, and a listed shape stays subject to the rules.
    assert_eq!(e.get("/admin/x").0, 403);

    // 4. on_new = "approve": a new shape is held; the workload cannot
    // learn it into its own allow-list; an approver's `approve --learn`
    // lets it through, adds it to the file, and the next one passes
    // without asking.
    e.write(&format!(
        "mode = \"enforce\"\nallowlist = \"{}\"\non_new = \"approve\"",
        list.display()
    ));
    ok(&e.env.warden(&["reload"]));
    let before = std::fs::read_to_string(&list).unwrap();
    let held = e
        .env
        .in_cgroup_cmd(
            &e.app,
            Path::new("/usr/bin/curl"),
            &[
                "-sS",
                "--max-time",
                "40",
                "-w",
                "\n@@%{http_code}",
                &format!("http://127.0.0.1:{}/v1/orders/17?expand=1", e.nginx.port),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = e.wait_pending();
    let id = pending["id"].as_str().unwrap().to_owned();
    // Root is an approver, but not from inside the workload's cgroup.
    let own = e.approvals_in_app(&["approve", &id, "--learn"]);
    assert!(!own.status.success(), "the workload approved its own shape");
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("cannot decide"),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), before);
    let approved = e.approvals_as(
        e.approver.uid,
        &["approve", &id, "--learn", "--reason", "ticket 9"],
    );
    let said = ok(&approved);
    assert!(said.contains("added to the grant's allow-list"), "{said}");
    let out = held.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n@@200"), "{text}");
    // The file: the operator's text as it was, then the new shape under a
    // comment naming the request; it still loads.
    let after = std::fs::read_to_string(&list).unwrap();
    assert!(after.starts_with(&before), "{after}");
    let added = &after[before.len()..];
    assert!(added.contains(&format!("request {id} by ")), "{added}");
    assert!(
        added.contains("text = \"GET /v1/orders/{id}?expand\""),
        "{added}"
    );
    ok(&e.env.warden(&["check-config"]));
    // The running agent lists it: the next one passes without asking.
    let t = std::time::Instant::now();
    let (code, body) = e.get("/v1/orders/42?expand=2");
    assert_eq!((code, body.as_str()), (200, "order 42\n"));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(e.pending().is_empty());
    // The approval's audit event names the fingerprint added.
    let fp = added
        .lines()
        .find_map(|l| l.strip_prefix("id = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let events = e.env.audit_events();
    let approval = events
        .iter()
        .find(|ev| {
            ev["class_uid"] == 3005 && ev["unmapped"]["warden"]["approval"]["status"] == "approved"
        })
        .expect("approval event");
    assert_eq!(
        approval["unmapped"]["warden"]["approval"]["learned"], fp,
        "{approval:#}"
    );
    // A request held by an allow-list of on_new = "refuse" never is; one
    // held otherwise cannot be learnt: covered by the unit tests.
    e.env.stop();
}

// --- tokio-postgres: extended protocol, binary parameters (issue 19) ---

/// Not a test of its own: the tokio-postgres workload that
/// `binary_parameters_learn_and_enforce_the_same_fingerprints` runs in the
/// enrolled cgroup (this test binary, executed again with
/// `WARDEN_TEST_TOKIO_PG` set to the port and a seed for its values). It
/// prints one line `@@{json}`: the rows it read and the errors it got.
#[test]
fn tokio_postgres_workload() {
    let Ok(spec) = std::env::var("WARDEN_TEST_TOKIO_PG") else {
        return;
    };
    let (port, seed) = spec.split_once(':').unwrap();
    let seed: i32 = seed.parse().unwrap();
    let conn = format!(
        "host=127.0.0.1 port={port} user=workload dbname={} sslmode=disable connect_timeout=10",
        pg::DB
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async move {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut errors = Vec::new();
        let mut rows = 0usize;
        let mut note = |r: Result<usize, tokio_postgres::Error>| match r {
            Ok(n) => rows += n,
            Err(e) => errors.push(match e.as_db_error() {
                Some(db) => format!("{} {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
        };
        // Extended protocol: Parse/Bind/Execute, parameters and results in
        // binary (int4, int8, text, an int4 array).
        let aid = 1 + seed;
        note(
            client
                .query(
                    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                    &[&aid],
                )
                .await
                .map(|r| r.len()),
        );
        note(
            client
                .execute(
                    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
                    &[&(seed % 7), &aid],
                )
                .await
                .map(|n| n as usize),
        );
        note(
            client
                .query(
                    "SELECT aid, abalance FROM pgbench_accounts WHERE aid = ANY($1) AND bid = $2::int8",
                    &[&vec![aid, aid + 1, aid + 2], &1i64],
                )
                .await
                .map(|r| r.len()),
        );
        note(
            client
                .query(
                    "SELECT count(*) FROM pgbench_branches WHERE filler IS DISTINCT FROM $1",
                    &[&format!("x{seed}")],
                )
                .await
                .map(|r| r.len()),
        );
        // A prepared statement executed twice.
        match client
            .prepare("SELECT tid FROM pgbench_tellers WHERE bid = $1 LIMIT $2")
            .await
        {
            Ok(st) => {
                for n in [1i64, 2 + i64::from(seed % 3)] {
                    note(client.query(&st, &[&1i32, &n]).await.map(|r| r.len()));
                }
            }
            Err(e) => note(Err(e)),
        }
        // The simple protocol, literals in the text.
        note(
            client
                .simple_query(&format!(
                    "SELECT abalance FROM pgbench_accounts WHERE aid = {}",
                    aid + 3
                ))
                .await
                .map(|m| m.len()),
        );
        // A new shape when `WARDEN_TEST_TOKIO_PG_NEW` is set.
        if std::env::var_os("WARDEN_TEST_TOKIO_PG_NEW").is_some() {
            note(
                client
                    .query(
                        "SELECT abalance FROM pgbench_accounts WHERE aid = $1 OR $2",
                        &[&aid, &true],
                    )
                    .await
                    .map(|r| r.len()),
            );
        }
        serde_json::json!({ "rows": rows, "errors": errors })
    });
    println!("@@{out}");
}

impl Env {
    /// [`tokio_postgres_workload`] in the enrolled cgroup.
    fn tokio_pg(&self, seed: i32, new_shape: bool) -> Value {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = self.env.in_cgroup_cmd(
            &self.app,
            &exe,
            &[
                "--exact",
                "tokio_postgres_workload",
                "--nocapture",
                "--test-threads=1",
            ],
        );
        cmd.env("WARDEN_TEST_TOKIO_PG", format!("{}:{seed}", self.pg.port()));
        if new_shape {
            cmd.env("WARDEN_TEST_TOKIO_PG_NEW", "1");
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // The harness prints the test's name on the same line.
        let json = text
            .split_once("@@{")
            .and_then(|(_, r)| r.lines().next())
            .map(|l| format!("{{{l}"))
            .unwrap_or_else(|| {
                panic!(
                    "no result: {text}\n{}\nwarden log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    tail(&self.env.log())
                )
            });
        serde_json::from_str(&json).unwrap()
    }
}

/// pgbench's tables in the shared server, written by the grant's role.
fn pgbench_tables() {
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
}

#[test]
fn binary_parameters_learn_and_enforce_the_same_fingerprints() {
    pgbench_tables();
    // Learn from the tokio-postgres program (binary parameters), and
    // pgbench in simple mode only (its setup queries; its statements with
    // literals).
    let mut e = Env::start("mode = \"learn\"");
    let res = e.tokio_pg(0, false);
    assert_eq!(res["errors"], serde_json::json!([]), "{res:#}");
    assert!(res["rows"].as_u64().unwrap() >= 6, "{res:#}");
    e.pgbench(&["-n", "-S", "-M", "simple", "-c", "2", "-t", "20"]);
    let learned: Value = serde_json::from_str(&ok(&e
        .env
        .warden(&["policy", "learned", "--grant", "app/pg", "--json"])))
    .unwrap();
    let fps = learned["fingerprints"].as_object().unwrap();
    let texts: Vec<&str> = fps.values().map(|f| f["text"].as_str().unwrap()).collect();
    for want in [
        // Bound parameters are `$n` whatever their format; literals `$?`.
        "select abalance from pgbench_accounts where aid = $n",
        "update pgbench_accounts set abalance = abalance + $n where aid = $n",
        "select abalance from pgbench_accounts where aid = $?",
    ] {
        assert!(texts.contains(&want), "{want} not in {texts:#?}");
    }

    // Freeze, enforce.
    let list = e.env.tmp.path().join("binary.allowlist.toml");
    ok(&e.env.warden(&[
        "policy",
        "freeze",
        "--grant",
        "app/pg",
        "--out",
        list.to_str().unwrap(),
    ]));
    e.write(&format!(
        "mode = \"enforce\"\nallowlist = \"{}\"",
        list.display()
    ));
    ok(&e.env.warden(&["reload"]));
    // The same program with other values: nothing refused.
    let res = e.tokio_pg(17, false);
    assert_eq!(res["errors"], serde_json::json!([]), "{res:#}");
    // pgbench's extended mode binds the same statement's parameter in
    // text format: the fingerprint learnt from binary parameters lets it
    // through.
    e.pgbench(&["-n", "-S", "-M", "extended", "-c", "2", "-t", "20"]);
    // psql's simple protocol with a literal: listed too.
    assert!(
        ok(&e.psql("SELECT abalance FROM pgbench_accounts WHERE aid = 99"))
            .trim()
            .parse::<i64>()
            .is_ok()
    );
    // A new shape with binary parameters is refused, naming it.
    let res = e.tokio_pg(18, true);
    let errors = res["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{res:#}");
    let err = errors[0].as_str().unwrap();
    assert!(
        err.starts_with("42501") && err.contains("not in the allow-list"),
        "{err}"
    );
    let refused: Vec<Value> = e
        .env
        .audit_events()
        .into_iter()
        .filter(|ev| {
            ev["class_uid"] == 6005
                && ev["unmapped"]["warden"]["allowlist"]["verdict"] == "not_listed"
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    e.env.stop();
}

#[test]
fn postgres_on_new_approve_holds_a_new_shape_and_approve_learn_lists_it() {
    pgbench_tables();
    let approver = User::create(&format!("wdn-p{}", std::process::id() % 100_000));
    let pg = PgServer::shared();
    // The allow-list: one pasted shape.
    let dir = tempfile::Builder::new()
        .prefix("warden-learn-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let list = dir.path().join("app-pg.toml");
    let reviewed =
        "# reviewed by ann\n[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"select $?\"\n";
    std::fs::write(&list, reviewed).unwrap();
    // The file belongs to whoever reviews it: the agent's rewrite keeps
    // its owner, group and mode.
    std::os::unix::fs::chown(&list, Some(approver.uid), Some(approver.uid)).unwrap();
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o664)).unwrap();
    let socket = dir.path().join("approvals.sock");
    let mut e = Env::start(&format!(
        "mode = \"enforce\"\nallowlist = \"{}\"\non_new = \"approve\"\n\n\
         [approvals]\napproval_timeout_secs = 30\n\
         approvers = {{ groups = [], uids = [{}] }}\nsocket = \"{}\"\n",
        list.display(),
        approver.uid,
        socket.display()
    ));
    assert_eq!(ok(&e.psql("SELECT 7")).trim(), "7");
    // A new shape is held.
    let held = e
        .env
        .in_cgroup_cmd(
            &e.app,
            &pg.bin("psql"),
            &[
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 5",
            ],
        )
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", "workload")
        .env("PGDATABASE", pg::DB)
        .env("PGPASSFILE", "/dev/null")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = first_pending(&socket, approver.uid, &|| e.env.log());
    let id = pending["id"].as_str().unwrap().to_owned();
    let said = ok(&approvals_as(
        &socket,
        approver.uid,
        &["approve", &id, "--learn", "--reason", "new report"],
    ));
    assert!(said.contains("added to the grant's allow-list"), "{said}");
    let out = held.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&list).unwrap();
    assert!(after.starts_with(reviewed), "{after}");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&list).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (approver.uid, approver.uid, 0o664),
            "the rewritten allow-list changed hands"
        );
    }
    // The text tail names the shape the approval added.
    let text = ok(&e.env.warden(&["audit", "tail", "-n", "50"]));
    assert!(text.lines().any(|l| l.contains(" learned=")), "{text}");
    assert!(
        after.contains("text = \"select abalance from pgbench_accounts where aid = $?\""),
        "{after}"
    );
    // The next one, other value, passes without asking.
    let t = std::time::Instant::now();
    assert!(
        ok(&e.psql("SELECT abalance FROM pgbench_accounts WHERE aid = 6"))
            .trim()
            .parse::<i64>()
            .is_ok()
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    e.env.stop();
}
