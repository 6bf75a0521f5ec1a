//! Harness for the privileged end-to-end tests: a test cgroup tree, a real
//! `warden` daemon with its own pin dir, state dir and control socket, echo
//! servers on loopback, and clients placed in cgroups. Everything the harness
//! creates is removed in `Drop`, also when a test fails.
#![allow(dead_code)]

pub mod forward;
pub mod mariadb;
pub mod mysql;
pub mod nginx;
pub mod pg;
pub mod regress;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/client.py")
}

/// tests/support/kernel_client.py: connect, squat, hold, nest,
/// exec-after-connect (see its docstring).
pub fn kernel_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/kernel_client.py")
}

pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("cgroup2 must be mounted for the end-to-end tests")
}

/// A free TCP port on `ip` (bound then released).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Echo server recording the peer address of every connection it accepts.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl EchoServer {
    pub fn start(bind: &str) -> Self {
        let l = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = l.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let p = Arc::clone(&peers);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                if let Ok(peer) = conn.peer_addr() {
                    p.lock().unwrap().push(peer);
                }
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if w.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { addr, peers }
    }

    /// True when the server saw a connection coming straight from `port`
    /// (i.e. not through Warden).
    pub fn saw_direct_from(&self, port: u16) -> bool {
        self.peers.lock().unwrap().iter().any(|p| p.port() == port)
    }

    /// Connections the server saw from `ip` (a client with a source
    /// address of its own: Warden connects from 127.0.0.1).
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ip() == ip)
            .count()
    }

    pub fn connections(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

#[derive(Debug, Clone)]
pub struct ClientResult {
    pub json: Value,
}

impl ClientResult {
    pub fn ok(&self) -> bool {
        self.json["ok"].as_bool().unwrap_or(false)
    }
    pub fn local_port(&self) -> Option<u16> {
        self.json["local_port"].as_u64().map(|p| p as u16)
    }
    pub fn error(&self) -> String {
        format!(
            "{} {} {}",
            self.json["error"].as_str().unwrap_or(""),
            self.json["read_error"].as_str().unwrap_or(""),
            self.json["write_error"].as_str().unwrap_or("")
        )
    }
    /// `connect()` failed with EPERM: the kernel side refused it (an
    /// enrolled connection to a fail-closed target while the agent is down).
    pub fn denied_at_connect(&self) -> bool {
        self.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("PermissionError"))
    }
    pub fn same_bytes_back(&self) -> bool {
        self.ok() && self.json["sent_sha"] == self.json["recv_sha"]
    }
}

pub struct TestEnv {
    pub id: String,
    pub mount: PathBuf,
    /// cgroup2 path of this test's root cgroup, e.g. `/warden-e2e-123-0`.
    pub cg_root: String,
    pub agent_cg: String,
    pub tmp: tempfile::TempDir,
    pub pin_dir: PathBuf,
    pub config_path: PathBuf,
    pub listen_port: u16,
    pub daemon: Option<Child>,
    /// The agent binary `start` runs (this build's, unless a test installs
    /// another, e.g. from a package).
    pub agent_binary: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        assert!(
            nix_is_root(),
            "the end-to-end tests need root (eBPF, cgroups): run them with `cargo xtask test`"
        );
        sweep_stale();
        let id = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mount = cgroup2_mount();
        // A slice, so systemd-style units can live below it in tests.
        let cg_root = format!("/warden-e2e-{id}.slice");
        std::fs::create_dir_all(mount.join(cg_root.trim_start_matches('/'))).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("warden-e2e-")
            .tempdir()
            .unwrap();
        Self {
            agent_cg: format!("/warden-e2e-{id}-agent"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/warden-e2e-{id}")),
            config_path: tmp.path().join("warden.toml"),
            listen_port: free_port("127.0.0.1"),
            id,
            mount,
            cg_root,
            tmp,
            daemon: None,
            agent_binary: PathBuf::from(WARDEN),
        }
    }

    /// Creates `<test root>/<name>` and returns its cgroup2 path.
    pub fn cgroup(&self, name: &str) -> String {
        let p = format!("{}/{}", self.cg_root, name);
        std::fs::create_dir_all(self.cg_dir(&p)).unwrap();
        p
    }

    pub fn cg_dir(&self, cg: &str) -> PathBuf {
        self.mount.join(cg.trim_start_matches('/'))
    }

    /// `program args` run inside cgroup `cg` (the shell joins it, then
    /// execs the program), with an empty environment but `PATH`.
    pub fn in_cgroup_cmd(&self, cg: &str, program: &Path, args: &[&str]) -> Command {
        let procs = self.cg_dir(cg).join("cgroup.procs");
        let mut quoted = String::new();
        for a in args {
            quoted.push_str(" '");
            quoted.push_str(&a.replace('\'', "'\\''"));
            quoted.push('\'');
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec '{}'{quoted}",
                procs.display(),
                program.display()
            ))
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        cmd
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.tmp.path().join("control.sock")
    }

    /// The `[agent]` table for this environment; `cgroup_root` is either this
    /// test's own cgroup or "auto" (the cgroup2 root).
    pub fn agent_table(&self, attach_at_root: bool, extra: &str) -> String {
        format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{state}\"\nbpf_pin_dir = \"{pins}\"\ncontrol_socket = \"{sock}\"\ncgroup_root = \"{root}\"\nagent_cgroup = \"{agent}\"\n{extra}\n",
            port = self.listen_port,
            state = self.state_dir().display(),
            pins = self.pin_dir.display(),
            sock = self.control_socket().display(),
            root = if attach_at_root {
                "auto".to_owned()
            } else {
                self.cg_root.clone()
            },
            agent = self.agent_cg,
        )
    }

    pub fn write_config(&self, body: &str) {
        std::fs::write(&self.config_path, body).unwrap();
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the daemon with extra environment variables and waits until its
    /// control socket answers.
    pub fn start_with_env(&mut self, envs: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("warden.log"))
            .unwrap();
        let child = Command::new(&self.agent_binary)
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("WARDEN_LOG", "debug")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(self.control_socket()).is_ok() {
                break;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("warden exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "warden did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("warden.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix_kill(c.id(), "TERM");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("warden did not stop on SIGTERM; log:\n{}", self.log());
        }
    }

    pub fn warden(&self, args: &[&str]) -> Output {
        Command::new(WARDEN)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the test client inside `cgroup` (a cgroup2 path), optionally as `uid`.
    pub fn client(
        &self,
        cgroup: &str,
        host: &str,
        port: u16,
        nbytes: usize,
        uid: Option<u32>,
    ) -> ClientResult {
        let procs = self.cg_dir(cgroup).join("cgroup.procs");
        let uid = uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec /usr/bin/python3 '{}' '{}' {} {} {}",
                procs.display(),
                client_script().display(),
                host,
                port,
                nbytes,
                uid
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "client output not JSON ({e}): {stdout} / {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        ClientResult { json }
    }

    /// Runs `kernel_client.py ARGS` inside `cgroup` and parses its JSON answer.
    pub fn kernel_client(&self, cgroup: &str, args: &[&str]) -> Value {
        let procs = self.cg_dir(cgroup).join("cgroup.procs");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec /usr/bin/python3 \"$0\" \"$@\"",
                procs.display()
            ))
            .arg(kernel_script())
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "kernel_client output not JSON ({e}): {stdout} / {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// All audit events, oldest first, as OCSF JSON.
    pub fn audit_events(&self) -> Vec<Value> {
        let out = self.warden(&["audit", "tail", "--json", "-n", "1000000"]);
        assert!(
            out.status.success(),
            "audit tail failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit events whose client port is `port`, waiting up to 5 s for `want` of them.
    pub fn events_for_client_port(&self, port: u16, want: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let evs: Vec<Value> = self
                .audit_events()
                .into_iter()
                .filter(|e| e["src_endpoint"]["port"].as_u64() == Some(u64::from(port)))
                .collect();
            if evs.len() >= want || start.elapsed() > Duration::from_secs(5) {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The connection from client port `port` was refused as
    /// `identity_mismatch` with `needle` in the detail, and its audit event
    /// names no executable (what /proc showed could not be trusted).
    pub fn assert_unconfirmed_exe(&self, port: u16, needle: &str) {
        let evs = self.events_for_client_port(port, 1);
        assert!(!evs.is_empty(), "no audit event\n{}", self.log());
        let w = &evs[0]["unmapped"]["warden"];
        assert_eq!(w["reason"], "identity_mismatch", "{:#}", evs[0]);
        assert!(
            w["detail"].as_str().unwrap().contains(needle),
            "{:#}",
            evs[0]
        );
        assert!(
            evs[0]["actor"]["process"]["file"]["path"].is_null(),
            "the audit names an executable it could not confirm: {:#}",
            evs[0]
        );
    }

    pub fn status_json(&self) -> Value {
        let out = self.warden(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(WARDEN)
            .arg("--config")
            .arg(&self.config_path)
            .arg("uninstall")
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        remove_cgroup_tree(&self.mount.join(self.cg_root.trim_start_matches('/')));
        remove_cgroup_tree(&self.mount.join(self.agent_cg.trim_start_matches('/')));
    }
}

/// Kills whatever still runs in `dir` and removes it, children first.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes pins and cgroups left by test processes that no longer exist.
fn sweep_stale() {
    let mount = cgroup2_mount();
    for base in [Path::new("/sys/fs/bpf"), mount.as_path()] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("warden-e2e-") else {
                continue;
            };
            let pid: u32 = rest
                .split('-')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if pid == 0 || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if base == Path::new("/sys/fs/bpf") {
                let cfg = format!("[agent]\nbpf_pin_dir = \"{}\"\n", e.path().display());
                let f =
                    std::env::temp_dir().join(format!("warden-sweep-{}.toml", std::process::id()));
                let _ = std::fs::write(&f, cfg);
                let _ = Command::new(WARDEN)
                    .arg("--config")
                    .arg(&f)
                    .arg("uninstall")
                    .output();
                let _ = std::fs::remove_file(&f);
            } else {
                remove_cgroup_tree(&e.path());
            }
        }
    }
}

pub fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn nix_kill(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// Connects from this (non-enrolled) test process straight to Warden's proxy port.
pub fn connect_direct(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
}

/// Every program attached at a cgroup directory, by name (bpftool's view).
pub fn programs_attached_at(dir: &Path) -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of loaded programs that are Warden's.
pub fn loaded_warden_programs() -> Vec<(u64, String)> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let name = p["name"].as_str()?;
                    name.starts_with("warden_")
                        .then(|| (p["id"].as_u64().unwrap_or(0), name.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A system user created for the test, removed on drop.
pub struct User {
    pub name: String,
    pub uid: u32,
}

impl User {
    pub fn create(name: &str) -> User {
        let _ = Command::new("userdel").arg(name).output();
        let out = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = Command::new("id").args(["-u", name]).output().unwrap();
        let uid = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        User {
            name: name.into(),
            uid,
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A mount removed (lazily) on drop.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. "3m") on `dir`, created if missing: a
/// small file system to fill up.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Unmount {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a {size} tmpfs on {}", dir.display());
    Unmount(dir.to_owned())
}

/// A `[[target]]` table of protocol `tcp`.
pub fn tcp_target(name: &str, addr: &str) -> String {
    format!("[[target]]\nname = \"{name}\"\nprotocol = \"tcp\"\naddress = \"{addr}\"\n")
}

/// An `[[account]]` table enrolling `cgroups` and `uids`, granted `targets`.
pub fn account(name: &str, cgroups: &[&str], uids: &[u32], targets: &[&str]) -> String {
    let q = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let u = uids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[account]]\nname = \"{name}\"\ncgroups = [{}]\nuids = [{u}]\ntargets = [{}]\n",
        q(cgroups),
        q(targets)
    )
}
