//! Just-in-time approvals through the real `warden` binary against a real
//! PostgreSQL: a psql session in an enrolled cgroup holds on a DELETE
//! (policy `approve`) while approvers (other uids, run with setpriv) decide
//! through the approvals socket; grants, timeouts, cancel, concurrency,
//! webhooks, `audit tail` and `audit export` are checked on the way.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::{self, PgServer};
use common::*;
use serde_json::Value;

struct Env {
    env: TestEnv,
    pg: &'static PgServer,
    app: String,
    table: String,
    socket: std::path::PathBuf,
    hooks: Arc<Mutex<Vec<Value>>>,
}

/// A webhook receiver: records every JSON body, answers 200.
fn webhook_server(store: Arc<Mutex<Vec<Value>>>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                store.lock().unwrap().push(v);
            }
            let mut s = s;
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    url
}

impl Env {
    fn start(approver: u32) -> Env {
        let pg = PgServer::shared();
        let mut env = TestEnv::new();
        let app = env.cgroup("app");
        // Tests of this file run in parallel: each its own table and socket.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let tag = format!(
            "{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let table = format!("appr_{tag}");
        pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            &format!(
                "DROP TABLE IF EXISTS public.{table}; \
                 CREATE TABLE public.{table} (id int PRIMARY KEY, note text); \
                 INSERT INTO public.{table} SELECT g, 'n' || g FROM generate_series(1, 20) g; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON public.{table} TO {};",
                pg::ORDERS_RW
            ),
        );
        let pw = env.tmp.path().join("orders_rw.pw");
        std::fs::write(&pw, format!("{}\n", pg.password(pg::ORDERS_RW))).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sock_dir = std::path::PathBuf::from(format!("/tmp/warden-appr-{tag}"));
        let _ = std::fs::remove_dir_all(&sock_dir);
        let socket = sock_dir.join("approvals.sock");
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let url = webhook_server(Arc::clone(&hooks));
        env.write_config(&format!(
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
policy = \"p\"

[policy.p]
default = \"deny\"
rules = [
  {{ action = \"allow\", classes = [\"read\"] }},
  {{ action = \"approve\", classes = [\"write\"], tables = [\"{table}\"], name = \"deletes\" }},
]

[approvals]
approvers = {{ groups = [], uids = [{approver}, 0] }}
approval_timeout_secs = 3
socket = \"{socket}\"
webhooks = [{{ url = \"{url}\", kind = \"generic\" }}]
",
            agent = env.agent_table(false, ""),
            addr = pg.addr(),
            ca = pg.ca_pem_path().display(),
            db = pg::DB,
            user = pg::ORDERS_RW,
            pw = pw.display(),
            socket = socket.display(),
        ));
        env.start();
        // The approvals socket is bound just after the control socket.
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "{}", env.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Env {
            env,
            pg,
            app,
            table,
            socket,
            hooks,
        }
    }

    fn psql(&self, sql: &str) -> Child {
        self.psql_as(None, sql)
    }

    /// psql in the enrolled cgroup, as root or (setpriv) as `uid`.
    fn psql_as(&self, uid: Option<u32>, sql: &str) -> Child {
        let procs = self.env.cg_dir(&self.app).join("cgroup.procs");
        let setpriv = uid
            .map(|u| format!("setpriv --reuid={u} --regid={u} --clear-groups "))
            .unwrap_or_default();
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec {setpriv}'{}' -X -A -t -v VERBOSITY=verbose -v ON_ERROR_STOP=1 -c \"$0\"",
                procs.display(),
                self.pg.bin("psql").display()
            ))
            .arg(sql)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port().to_string())
            .env("PGUSER", "workload")
            .env("PGDATABASE", pg::DB)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `warden approvals ARGS` as `uid` (0: root, directly).
    fn approvals_as(&self, uid: u32, args: &[&str]) -> Output {
        let mut cmd = if uid == 0 {
            Command::new(WARDEN)
        } else {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(WARDEN);
            c
        };
        self.approvals_by(&mut cmd, args)
    }

    /// `cmd` (ending in the warden binary) given `approvals --socket … ARGS`.
    fn approvals_by(&self, cmd: &mut Command, args: &[&str]) -> Output {
        cmd.arg("--config")
            .arg("/nonexistent/warden.toml")
            .arg("approvals")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `warden approvals ARGS` as root from inside cgroup `cg`.
    fn approvals_in(&self, cg: &str, args: &[&str]) -> Output {
        let procs = self.env.cg_dir(cg).join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(WARDEN);
        self.approvals_by(&mut cmd, args)
    }

    fn pending(&self) -> Vec<Value> {
        let out = self.approvals_as(0, &["--json", "list"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pending"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `n` requests are pending; their ids, oldest first.
    fn wait_pending(&self, n: usize) -> Vec<String> {
        let t = Instant::now();
        loop {
            let p = self.pending();
            if p.len() >= n {
                return p
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} pending, wanted {n}\n{}",
                p.len(),
                self.env.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exists(&self, id: i32) -> bool {
        self.pg.psql_ok(
            pg::SUPERUSER,
            pg::DB,
            &format!("SELECT count(*) FROM public.{} WHERE id = {id}", self.table),
        ) == "1"
    }
}

fn finish(c: Child, within: Duration) -> Output {
    let t = Instant::now();
    let mut c = c;
    while c.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < within, "psql still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn statements_are_held_and_approved_denied_timed_out_granted_and_withdrawn() {
    let approver = User::create("wdn-approver");
    let stranger = User::create("wdn-stranger");
    let e = Env::start(approver.uid);
    let t = &e.table;

    // Held, then approved by another uid: the DELETE runs.
    let c = e.psql(&format!("DELETE FROM {t} WHERE id = 1"));
    let id = e.wait_pending(1).remove(0);
    // The requesting process runs as root: root cannot approve its own.
    let own = e.approvals_as(0, &["approve", &id, "--reason", "mine"]);
    assert!(!own.status.success());
    assert!(
        text(&own).contains("cannot decide its own request"),
        "{}",
        text(&own)
    );
    let other = e.approvals_as(stranger.uid, &["approve", &id]);
    assert!(!other.status.success());
    assert!(text(&other).contains("not an approver"), "{}", text(&other));
    assert!(e.exists(1), "nothing ran while held");
    let ok = e.approvals_as(approver.uid, &["approve", &id, "--reason", "ticket 42"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = finish(c, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("held for approval (request {id})")),
        "{}",
        text(&out)
    );
    assert!(!e.exists(1));

    // Denied: 42501 with the reason, nothing changed.
    let c = e.psql(&format!("DELETE FROM {t} WHERE id = 2"));
    let id = e.wait_pending(1).remove(0);
    let d = e.approvals_as(approver.uid, &["deny", &id, "--reason", "not now"]);
    assert!(d.status.success(), "{}", text(&d));
    let out = finish(c, Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("42501") && text(&out).contains("not now"),
        "{}",
        text(&out)
    );
    assert!(e.exists(2));

    // Timeout (3 s): refused.
    let started = Instant::now();
    let out = finish(
        e.psql(&format!("DELETE FROM {t} WHERE id = 3")),
        Duration::from_secs(15),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("timed out"), "{}", text(&out));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(e.exists(3));

    // Cancel (SIGINT) withdraws: 57014.
    let c = e.psql(&format!("DELETE FROM {t} WHERE id = 4"));
    e.wait_pending(1);
    assert!(nix_kill(c.id(), "INT"));
    let out = finish(c, Duration::from_secs(5));
    assert!(
        text(&out).contains("57014") && text(&out).contains("canceling statement"),
        "{}",
        text(&out)
    );
    assert!(e.pending().is_empty());
    assert!(e.exists(4));

    // Concurrent requests resolve independently.
    let c5 = e.psql(&format!("DELETE FROM {t} WHERE id = 5"));
    let c6 = e.psql(&format!("DELETE FROM {t} WHERE note = 'n6'"));
    let ids = e.wait_pending(2);
    let list = e.pending();
    let id_of = |needle: &str| {
        list.iter()
            .find(|r| r["statement"].as_str().unwrap().contains(needle))
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (i5, i6) = (id_of("id ="), id_of("note ="));
    assert_eq!(ids.len(), 2);
    assert!(
        e.approvals_as(approver.uid, &["deny", &i6])
            .status
            .success()
    );
    assert!(
        e.approvals_as(approver.uid, &["approve", &i5])
            .status
            .success()
    );
    assert!(finish(c5, Duration::from_secs(10)).status.success());
    assert!(!finish(c6, Duration::from_secs(10)).status.success());
    assert!(!e.exists(5) && e.exists(6));

    // A grant lets the same statement (other literal) through, until revoked.
    let c = e.psql(&format!("DELETE FROM {t} WHERE id = 7"));
    let id = e.wait_pending(1).remove(0);
    let g = e.approvals_as(
        approver.uid,
        &["approve", &id, "--for", "1m", "--reason", "batch"],
    );
    assert!(g.status.success(), "{}", text(&g));
    assert!(finish(c, Duration::from_secs(10)).status.success());
    let quick = Instant::now();
    let out = finish(
        e.psql(&format!("DELETE FROM {t} WHERE id = 8")),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(quick.elapsed() < Duration::from_secs(3));
    assert!(!e.exists(8));
    let l = e.approvals_as(0, &["--json", "list"]);
    let lv: Value = serde_json::from_slice(&l.stdout).unwrap();
    let grant = lv["grants"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        e.approvals_as(stranger.uid, &["revoke", &grant])
            .status
            .code()
            != Some(0)
    );
    assert!(
        e.approvals_as(approver.uid, &["revoke", &grant])
            .status
            .success()
    );
    let out = finish(
        e.psql(&format!("DELETE FROM {t} WHERE id = 9")),
        Duration::from_secs(15),
    );
    assert!(
        !out.status.success(),
        "after revocation the statement is held again"
    );
    assert!(e.exists(9));

    // The webhook heard of the requests.
    let hooks = e.hooks.lock().unwrap().clone();
    assert!(
        hooks.iter().any(|h| h["id"].as_str() == Some(i5.as_str())),
        "{hooks:?}"
    );
    assert!(
        hooks
            .iter()
            .all(|h| h["approve"].as_str().unwrap().contains("approve"))
    );

    // Every transition is in the trail, and in the export.
    let tail = e.env.warden(&["audit", "tail", "-n", "500"]);
    let tail = String::from_utf8_lossy(&tail.stdout).into_owned();
    for s in [
        "approval requested",
        "approval approved",
        "approval denied",
        "approval timed_out",
        "approval withdrawn",
        "approval grant_used",
        "approval revoked",
        "approval decision_refused",
    ] {
        assert!(tail.contains(s), "audit tail lacks {s:?}:\n{tail}");
    }
    assert!(
        tail.contains(&format!("approver.uid={}", approver.uid)),
        "{tail}"
    );
    let out_dir = e.env.tmp.path().join("bundle");
    let ex = e.env.warden(&[
        "audit",
        "export",
        "--from",
        "-1h",
        "--to",
        "now",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ex.status.success(), "{}", text(&ex));
    let lines = std::fs::read_to_string(out_dir.join("approvals.jsonl")).unwrap();
    assert!(lines.lines().count() >= 20, "{lines}");
    assert!(lines.contains("\"class_uid\":3005"));
    let v = e
        .env
        .warden(&["audit", "verify-export", out_dir.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let _ = std::fs::remove_dir_all(e.socket.parent().unwrap());
}

/// A root process inside the requesting account's cgroup, or below it, is
/// an approver by uid but can never decide that account's requests; root
/// outside it still can. The workload runs as another uid, so the uid rule
/// (the requesting process's own uid) does not catch it.
#[test]
fn a_root_approver_inside_the_enrolled_cgroup_cannot_decide_for_its_account() {
    let workload = User::create("wdn-workload1");
    let e = Env::start(0);
    let t = &e.table;
    let below = e.env.cgroup("app/shell");
    let c = e.psql_as(
        Some(workload.uid),
        &format!("DELETE FROM {t} WHERE id = 11"),
    );
    let id = e.wait_pending(1).remove(0);
    for cg in [e.app.as_str(), below.as_str()] {
        let own = e.approvals_in(cg, &["approve", &id, "--reason", "self-service"]);
        assert!(
            !own.status.success(),
            "root in {cg} approved its own account's request: {}",
            text(&own)
        );
        assert!(
            text(&own).contains("enrolled for the requesting account app"),
            "{}",
            text(&own)
        );
        assert!(e.exists(11), "nothing ran while held");
    }
    // Nor may it change its enrollment (or reload, or stop Warden) through
    // the root control socket; reading the status is fine.
    let procs = e.env.cg_dir(&below).join("cgroup.procs");
    let control = |args: &[&str]| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(WARDEN)
            .arg("--config")
            .arg(&e.env.config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let un = control(&["unenroll", "app", "--cgroup", &e.app]);
    assert!(!un.status.success(), "{}", text(&un));
    assert!(
        text(&un).contains("enrolled for account app"),
        "{}",
        text(&un)
    );
    let st = control(&["status"]);
    assert!(st.status.success(), "{}", text(&st));
    // Denying is deciding too.
    let deny = e.approvals_in(&e.app, &["deny", &id]);
    assert!(!deny.status.success(), "{}", text(&deny));
    assert_eq!(e.wait_pending(1), vec![id.clone()], "still pending");
    // Root outside the account's cgroups decides.
    let ok = e.approvals_as(0, &["approve", &id, "--reason", "ticket 7"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = finish(c, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!e.exists(11));
    // The refusals are in the trail, naming the cgroup.
    let refused: Vec<String> = e
        .env
        .audit_events()
        .iter()
        .map(|v| v.to_string())
        .filter(|s| s.contains("decision_refused"))
        .collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused.iter().any(|s| s.contains(&below)), "{refused:#?}");
    let _ = std::fs::remove_dir_all(e.socket.parent().unwrap());
}

/// Run as root by [`decide_from_inside`]: joins cgroup `inside`, connects
/// the approvals socket, then (`fork`) hands the connection to a child and
/// exits, and (both modes) leaves for cgroup `outside` once Warden has
/// accepted, before sending its decision; the answer goes to `out`.
const LEAVER: &str = r#"
import os, socket, sys, time
mode, sock, inside, outside, req, out = sys.argv[1:7]
open(inside, "w").write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
if mode == "fork":
    if os.fork() > 0:
        os._exit(0)
    time.sleep(0.3)
time.sleep(0.3)
open(outside, "w").write(str(os.getpid()))
s.sendall(req.encode() + b"\n")
data = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    data += c
open(out + ".tmp", "w").write(data.decode())
os.rename(out + ".tmp", out)
"#;

impl Env {
    /// Approves `id` the [`LEAVER`] way; Warden's answer.
    fn decide_from_inside(&self, mode: &str, id: &str, outside: &str) -> Value {
        let out = self.env.tmp.path().join(format!("leaver-{mode}.json"));
        let req = serde_json::json!({
            "op": "approvals_decide", "id": id, "approve": true, "reason": mode,
        });
        let procs = |cg: &str| self.env.cg_dir(cg).join("cgroup.procs");
        let status = Command::new("python3")
            .arg("-c")
            .arg(LEAVER)
            .arg(mode)
            .arg(&self.socket)
            .arg(procs(&self.app))
            .arg(procs(outside))
            .arg(req.to_string())
            .arg(&out)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let t = Instant::now();
        while !out.exists() {
            assert!(t.elapsed() < Duration::from_secs(5), "no answer ({mode})");
            std::thread::sleep(Duration::from_millis(20));
        }
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap()
    }
}

/// What else reaches the same place: a root process that connects from
/// inside the enrolled cgroup and leaves it before sending its decision
/// (the peer is placed when Warden accepts, not when it reads the request),
/// one that hands the connection to a forked child outside and exits (the
/// connecting process is the peer; gone, it is placed nowhere), and an
/// approver outside every cgroup whose uid is enrolled for the account
/// (live, after the request was held). Each is refused and audited, nothing
/// runs; root outside then decides.
#[test]
fn leaving_the_cgroup_after_connecting_handing_the_socket_on_or_an_enrolled_uid_cannot_decide() {
    let workload = User::create("wdn-workload2");
    let approver = User::create("wdn-approver2");
    let e = Env::start(approver.uid);
    let t = &e.table;
    let outside = e.env.cgroup("outside");
    for (n, mode) in [(12, "move"), (13, "fork")] {
        let c = e.psql_as(
            Some(workload.uid),
            &format!("DELETE FROM {t} WHERE id = {n}"),
        );
        let id = e.wait_pending(1).remove(0);
        let v = e.decide_from_inside(mode, &id, &outside);
        assert_eq!(v["result"], "error", "{mode}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot decide"),
            "{mode}: {v}"
        );
        assert!(e.exists(n), "{mode}: nothing ran");
        let deny = e.approvals_as(0, &["deny", &id, "--reason", "refused test"]);
        assert!(deny.status.success(), "{}", text(&deny));
        let out = finish(c, Duration::from_secs(10));
        assert!(!out.status.success(), "{mode}: {}", text(&out));
        assert!(e.exists(n));
    }
    // An approver by uid, enrolled for the account once its request is held.
    let c = e.psql_as(
        Some(workload.uid),
        &format!("DELETE FROM {t} WHERE id = 14"),
    );
    let id = e.wait_pending(1).remove(0);
    let uid = approver.uid.to_string();
    let en = e.env.warden(&["enroll", "app", "--uid", &uid]);
    assert!(en.status.success(), "{}", text(&en));
    let own = e.approvals_as(approver.uid, &["approve", &id, "--reason", "mine now"]);
    assert!(!own.status.success(), "{}", text(&own));
    assert!(
        text(&own).contains("requesting account app"),
        "{}",
        text(&own)
    );
    assert!(e.exists(14));
    let ok = e.approvals_as(0, &["approve", &id, "--reason", "ticket 8"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = finish(c, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!e.exists(14));
    let refused = e
        .env
        .audit_events()
        .iter()
        .map(|v| v.to_string())
        .filter(|s| s.contains("decision_refused"))
        .count();
    assert_eq!(refused, 3);
    let _ = std::fs::remove_dir_all(e.socket.parent().unwrap());
}

/// Issue 21, item 5: a `--for` grant survives a restart with its expiry
/// and keeps letting its statement shape through; a request that was held
/// when the agent died is recorded as withdrawn by the next start.
#[test]
fn grants_survive_a_restart_and_requests_held_across_it_are_withdrawn() {
    let approver = User::create("wdn-restorer");
    let mut e = Env::start(approver.uid);
    let t = e.table.clone();

    let c = e.psql(&format!("DELETE FROM {t} WHERE id = 1"));
    let id = e.wait_pending(1).remove(0);
    let g = e.approvals_as(
        approver.uid,
        &["approve", &id, "--for", "10m", "--reason", "migration"],
    );
    assert!(g.status.success(), "{}", text(&g));
    assert!(finish(c, Duration::from_secs(10)).status.success());
    let before: Value =
        serde_json::from_slice(&e.approvals_as(0, &["--json", "list"]).stdout).unwrap();
    let grant = before["grants"][0].clone();
    assert!(grant["id"].is_string(), "{before:#}");

    // Another shape is held when the agent is killed.
    let held = e.psql(&format!("UPDATE {t} SET note = 'x' WHERE id = 2"));
    let held_id = e.wait_pending(1).remove(0);
    e.env.kill9();
    let _ = finish(held, Duration::from_secs(10));
    e.env.start();
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&e.socket).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", e.env.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The grant is back, same id, same expiry, its use counted.
    let after: Value =
        serde_json::from_slice(&e.approvals_as(0, &["--json", "list"]).stdout).unwrap();
    assert_eq!(
        after["pending"].as_array().map(Vec::len),
        Some(0),
        "{after:#}"
    );
    let restored = &after["grants"][0];
    for k in [
        "id",
        "fingerprint",
        "until_ms",
        "request_id",
        "account",
        "target",
    ] {
        assert_eq!(restored[k], grant[k], "{k}: {after:#} vs {before:#}");
    }
    // ... and lets the same shape (another literal) through without a hold.
    let quick = Instant::now();
    let out = finish(
        e.psql(&format!("DELETE FROM {t} WHERE id = 3")),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(quick.elapsed() < Duration::from_secs(3));
    assert!(!e.exists(3));
    // The held request's end is in the trail, recorded by the new agent.
    let events: Vec<String> = e
        .env
        .audit_events()
        .iter()
        .map(|v| v.to_string())
        .filter(|s| s.contains(&held_id))
        .collect();
    assert!(
        events
            .iter()
            .any(|s| s.contains("\"Withdrawn\"") && s.contains("agent stopped")),
        "{events:#?}"
    );
    let used: Vec<String> = e
        .env
        .audit_events()
        .iter()
        .map(|v| v.to_string())
        .filter(|s| s.contains("Grant Used") && s.contains(grant["id"].as_str().unwrap()))
        .collect();
    assert_eq!(used.len(), 1, "{used:#?}");
    // Revoking it after the restart works as before.
    let r = e.approvals_as(approver.uid, &["revoke", grant["id"].as_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let _ = std::fs::remove_dir_all(e.socket.parent().unwrap());
}
