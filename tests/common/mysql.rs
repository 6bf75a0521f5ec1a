//! MySQL end-to-end harness: an agent in front of the shared MariaDB
//! (`common::mariadb`), a workload in an enrolled cgroup running the
//! `mariadb` client, pymysql or a raw-socket Python client.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;

use super::TestEnv;
use super::mariadb::{self, MariaDb};

pub const POLICY: &str = r#"
[policy.ro]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets"], name = "no-secrets" },
  { action = "approve", classes = ["write"], tables = ["orders"], name = "orders-writes" },
]

# Nobody approves in these tests: `approve` statements are refused after 1 s.
[approvals]
approval_timeout_secs = 1

[masking.pii]
columns = [ { column = "customers.card", strategy = "last4" } ]
patterns = ["email", "ssn"]
"#;

/// A running agent in front of the shared MariaDB.
pub struct MyEnv {
    pub env: TestEnv,
    pub db: &'static MariaDb,
    pub app: String,
}

impl MyEnv {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// An agent whose target has `target_extra` (TOML lines) added.
    pub fn start_with(target_extra: &str) -> Self {
        Self::start_custom(target_extra, "", POLICY)
    }

    /// An agent whose target has `target_extra` and whose grant has
    /// `grant_extra` (TOML lines) added, with `policy` (the `[policy.ro]`,
    /// `[approvals]` and `[masking.pii]` tables) instead of [`POLICY`].
    pub fn start_custom(target_extra: &str, grant_extra: &str, policy: &str) -> Self {
        let db = MariaDb::shared();
        let env = TestEnv::new();
        let app = env.cgroup("app");
        let pw = env.tmp.path().join("shop_app.pw");
        std::fs::write(&pw, format!("{}\n", db.password())).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut e = Self { env, db, app };
        e.configure(target_extra, grant_extra, policy);
        e.env.start();
        e
    }

    /// Writes the agent's configuration (see [`Self::start_custom`]); a
    /// running agent reads it at `warden reload`.
    pub fn configure(&self, target_extra: &str, grant_extra: &str, policy: &str) {
        let pw = self.env.tmp.path().join("shop_app.pw");
        self.env.write_config(&format!(
            "{agent}
[[target]]
name = \"shop\"
protocol = \"mysql\"
address = \"{addr}\"
max_message_bytes = 1048576
{target_extra}

[[account]]
name = \"app\"
cgroups = [\"{app}\"]

[[grant]]
account = \"app\"
target = \"shop\"
database = \"{dbname}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"ro\"
masking = \"pii\"
{grant_extra}
{policy}",
            agent = self.env.agent_table(false, ""),
            addr = self.db.addr(),
            app = self.app,
            dbname = mariadb::DB,
            user = mariadb::APP_USER,
            pw = pw.display(),
        ));
    }

    /// A command run inside the enrolled cgroup, with no MySQL password
    /// anywhere in its environment.
    pub fn in_app(&self, program: &str, args: &[&str]) -> Output {
        self.app_command(program, args).output().unwrap()
    }

    /// [`Self::in_app`] started in the background, its stdout piped.
    pub fn spawn_in_app(&self, program: &str, args: &[&str]) -> std::process::Child {
        self.app_command(program, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn app_command(&self, program: &str, args: &[&str]) -> Command {
        let procs = self.env.cg_dir(&self.app).join("cgroup.procs");
        let mut quoted = String::new();
        for a in args {
            quoted.push_str(" '");
            quoted.push_str(&a.replace('\'', "'\\''"));
            quoted.push('\'');
        }
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec '{program}'{quoted}",
                procs.display()
            ))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent");
        c
    }

    /// The `mariadb` client as user `workload`, no password.
    pub fn mariadb(&self, sql: &str) -> Output {
        let port = self.db.port().to_string();
        self.in_app(
            "/usr/bin/mariadb",
            &[
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-u",
                "workload",
                "--skip-password",
                mariadb::DB,
                "-N",
                "-B",
                "-e",
                sql,
            ],
        )
    }

    pub fn mariadb_ok(&self, sql: &str) -> String {
        let out = self.mariadb(sql);
        assert!(
            out.status.success(),
            "mariadb through Warden failed for {sql:?}: {}\n{}\nwarden log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.env.log())
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// `script` run by Debian's python3 (pymysql) with `PORT` set.
    pub fn python(&self, script: &str) -> Output {
        let port = self.db.port().to_string();
        self.in_app("/usr/bin/python3", &["-c", script, &port])
    }

    pub fn statements(&self) -> Vec<Value> {
        self.env
            .audit_events()
            .into_iter()
            .filter(|e| e["class_uid"] == 6005)
            .collect()
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `sql` run by the `mariadb` client as the application user with its
/// password, directly (not through Warden: the test process is in no
/// enrolled cgroup).
pub fn app_direct(db: &MariaDb, sql: &str) -> Output {
    Command::new("/usr/bin/mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P"])
        .arg(db.port().to_string())
        .args(["-u", mariadb::APP_USER])
        .arg(format!("-p{}", db.password()))
        .args([mariadb::DB, "-N", "-B", "-e", sql])
        .output()
        .unwrap()
}

/// The first line of `out` that starts with `prefix`.
pub fn line_of(out: &str, prefix: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line: {out}"))
        .to_owned()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A minimal MySQL client in Python over a raw socket: the binary
/// protocol (prepare, execute, fetch, close), `COM_CHANGE_USER`,
/// `COM_RESET_CONNECTION` and statement ids of its own choosing, which no
/// driver lets a test send. Loaded before each test's script.
pub const RAW_CLIENT: &str = r#"
import socket, struct, sys
port = int(sys.argv[1])
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
def packet(s):
    h = recv_exact(s, 4)
    return h[3], recv_exact(s, h[0] | h[1] << 8 | h[2] << 16)
def send(s, seq, body):
    s.sendall(struct.pack("<I", len(body))[:3] + bytes([seq]) + body)
def lenenc(p, i):
    f = p[i]
    if f < 0xfb: return f, i + 1
    if f == 0xfc: return struct.unpack_from("<H", p, i + 1)[0], i + 3
    if f == 0xfd: return int.from_bytes(p[i+1:i+4], "little"), i + 4
    return struct.unpack_from("<Q", p, i + 1)[0], i + 9
def lenstr(p, i):
    n, i = lenenc(p, i)
    return p[i:i+n], i + n
def err(p):
    return ("err", struct.unpack_from("<H", p, 1)[0], p[9:].decode(errors="replace"))
DEPRECATE_EOF = False
def connect(db=b"shop"):
    s = socket.create_connection(("127.0.0.1", port)); packet(s)
    caps = 0x1 | 0x8 | 0x0200 | 0x8000 | 0x10000 | 0x20000 | 0x40000 | 0x80000
    if DEPRECATE_EOF: caps |= 0x1000000
    body = struct.pack("<IIB23x", caps, 1 << 24, 45) + b"x\x00" + b"\x00" + db + b"\x00" + b"mysql_native_password\x00"
    send(s, 1, body)
    _, p = packet(s)
    assert p[0] == 0, p
    return s
def column(p):
    i = 0
    parts = []
    for _ in range(6):
        v, i = lenstr(p, i); parts.append(v)
    charset, length, typ, flags = struct.unpack_from("<HIBH", p, i + 1)
    return {"table": parts[2], "name": parts[4], "type": typ, "flags": flags}
def ok_status(p):
    i = lenenc(p, 1)[1]
    return struct.unpack_from("<H", p, lenenc(p, i)[1])[0]
def columns(s, n):
    cols = [column(packet(s)[1]) for _ in range(n)]
    if DEPRECATE_EOF: return cols, 0
    _, eof = packet(s)
    assert eof[0] == 0xfe, eof
    return cols, struct.unpack_from("<H", eof, 3)[0]
def prepare(s, sql):
    send(s, 0, b"\x16" + sql.encode())
    _, p = packet(s)
    if p[0] == 0xff: return err(p)
    sid, ncols, nparams = struct.unpack_from("<IHH", p, 1)
    if nparams: columns(s, nparams)
    cols = columns(s, ncols)[0] if ncols else []
    return ("ok", sid, cols)
def value(p, i, t, flags):
    if t in (1,): return struct.unpack_from("<B" if flags & 32 else "<b", p, i)[0], i + 1
    if t in (2, 13): return struct.unpack_from("<h", p, i)[0], i + 2
    if t in (3, 9): return struct.unpack_from("<I" if flags & 32 else "<i", p, i)[0], i + 4
    if t == 8: return struct.unpack_from("<Q" if flags & 32 else "<q", p, i)[0], i + 8
    if t == 5: return struct.unpack_from("<d", p, i)[0], i + 8
    if t in (7, 10, 12): n = p[i]; return ("date", p[i+1:i+1+n]), i + 1 + n
    v, i = lenstr(p, i)
    return v.decode(errors="replace"), i
def rows(s, cols):
    out = []
    while True:
        _, p = packet(s)
        if p[0] == 0xff: return err(p)
        if p[0] == 0xfe and (len(p) < 9 or DEPRECATE_EOF and len(p) < 0xffffff):
            if DEPRECATE_EOF and ok_status(p) & 0x40: return ("cursor", cols)
            return out
        nb = (len(cols) + 9) // 8
        i = 1 + nb
        row = []
        for k, c in enumerate(cols):
            if p[1 + (k + 2) // 8] & (1 << ((k + 2) % 8)):
                row.append(None); continue
            v, i = value(p, i, c["type"], c["flags"])
            row.append(v)
        assert i == len(p), (p, cols)
        out.append(row)
def execute(s, sid, params=(), cursor=0):
    body = b"\x17" + struct.pack("<IBI", sid, cursor, 1)
    if params:
        body += bytes((len(params) + 7) // 8) + b"\x01" + b"\xfd\x00" * len(params)
        for v in params:
            v = str(v).encode(); body += bytes([len(v)]) + v
    send(s, 0, body)
    _, p = packet(s)
    if p[0] == 0xff: return err(p)
    if p[0] == 0x00: return ("ok", [])
    n, _ = lenenc(p, 0)
    cols, status = columns(s, n)
    if status & 0x40: return ("cursor", cols)
    r = rows(s, cols)
    if isinstance(r, tuple) and r[0] == "cursor": return r
    return ("rows", cols, r)
def fetch(s, sid, cols, n=100):
    send(s, 0, b"\x1c" + struct.pack("<II", sid, n))
    return rows(s, cols)
def query(s, sql):
    send(s, 0, b"\x03" + sql.encode())
    _, p = packet(s)
    if p[0] == 0xff: return err(p)
    if p[0] == 0x00: return ("ok",)
    n, _ = lenenc(p, 0)
    cols, _ = columns(s, n)
    out = []
    while True:
        _, p = packet(s)
        if p[0] == 0xff: return err(p)
        if p[0] == 0xfe and len(p) < 9: return ("rows", out)
        i, row = 0, []
        for _ in cols:
            if p[i] == 0xfb: row.append(None); i += 1; continue
            v, i = lenstr(p, i); row.append(v.decode(errors="replace"))
        out.append(row)
def simple(s, body):
    send(s, 0, body)
    _, p = packet(s)
    return err(p) if p[0] == 0xff else ("ok",)
"#;

impl MyEnv {
    /// `script` after [`RAW_CLIENT`]; its stdout.
    pub fn raw(&self, script: &str) -> String {
        self.raw_with(script, &[])
    }

    /// `script` after [`RAW_CLIENT`] with `args` after the port
    /// (`sys.argv[2:]`); its stdout.
    pub fn raw_with(&self, script: &str, args: &[&str]) -> String {
        let port = self.db.port().to_string();
        let script = format!("{RAW_CLIENT}\n{script}");
        let mut argv = vec!["-c", &script, &port];
        argv.extend_from_slice(args);
        let out = self.in_app("/usr/bin/python3", &argv);
        let so = text(&out.stdout);
        assert!(
            out.status.success(),
            "{so}\n{}\nwarden log:\n{}",
            text(&out.stderr),
            tail(&self.env.log())
        );
        so
    }
}
