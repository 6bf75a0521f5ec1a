//! `cargo xtask demo`: Warden's main job end to end on this host.
//!
//! Starts two demo TCP services on 127.0.0.2, starts Warden with
//! `config/demo.toml` (state in /tmp/warden-demo, programs attached at the
//! demo's own cgroup), runs clients inside and outside the enrolled cgroup,
//! shows `warden status` and `warden audit tail`, then uninstalls. Then a
//! PostgreSQL act (`demo/pg.rs`): a throwaway PostgreSQL, a workload with no
//! password, an allowed query, a masked e-mail, a refused DELETE and their
//! audit trail. Then an HTTP act (`demo/http.rs`): nginx as a payments API,
//! the credential injected by Warden, masked JSON, a refused `/admin`.
//! Then a MySQL act (`demo/mysql.rs`): a throwaway MariaDB, the `mariadb`
//! client with no password, masked rows, a refused read and DELETE.
//! Everything it created is removed, also when a step fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod http;
mod mysql;
mod pg;

const STATE: &str = "/tmp/warden-demo";
const DEMO_CGROUP: &str = "warden-demo";
const AGENT_CGROUP: &str = "warden-demo-agent";

pub fn run(root: &Path) -> Result<()> {
    let warden = root.join("target/release/warden");
    let config = root.join("config/demo.toml");
    let mount = cgroup2_mount()?;
    let mut guard = Cleanup {
        warden: warden.clone(),
        config: config.clone(),
        mount: mount.clone(),
        daemon: None,
    };
    guard.clean(); // leftovers of an interrupted run

    std::fs::create_dir_all(STATE)?;
    let enrolled = mount.join(DEMO_CGROUP).join("orders-api");
    let other = mount.join(DEMO_CGROUP).join("reporting");
    std::fs::create_dir_all(&enrolled)?;
    std::fs::create_dir_all(&other)?;

    for (name, port) in [("orders-db", 7070), ("billing-db", 7071)] {
        let l = TcpListener::bind(("127.0.0.2", port))
            .with_context(|| format!("binding demo service {name} on 127.0.0.2:{port}"))?;
        std::thread::spawn(move || serve(name, l));
    }
    println!("== demo services: orders-db on 127.0.0.2:7070, billing-db on 127.0.0.2:7071");

    guard.start(&config)?;

    step("warden status");
    guard.warden(&config, &["status"])?;

    step(
        "an enrolled client (cgroup /warden-demo/orders-api) connects to orders-db: relayed through Warden",
    );
    client(&enrolled, 7070)?;
    step("the same client tries billing-db, which its account is not granted: refused");
    client(&enrolled, 7071)?;
    step("a client in a cgroup that is not enrolled connects to orders-db: untouched, not audited");
    client(&other, 7070)?;

    // The close event is written when the relay ends; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    step("warden audit tail");
    guard.warden(&config, &["audit", "tail", "-n", "20"])?;

    step("warden audit verify (recomputes the hash chain, checks signed checkpoints)");
    guard.warden(&config, &["audit", "verify"])?;

    step("warden uninstall (stops the daemon, detaches the programs, removes the pins)");
    guard.uninstall(&config)?;

    pg::act(root, &mut guard, &mount)?;
    http::act(root, &mut guard, &mount)?;
    mysql::act(&mut guard, &mount)?;
    println!("\nDemo finished; Warden's log was {STATE}/warden.log (removed with the demo state).");
    Ok(())
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn show(cmd: &mut Command) -> Result<()> {
    let status = cmd.status()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A shell placed in `cgroup` talks to 127.0.0.2:`port` with bash's /dev/tcp.
fn client(cgroup: &Path, port: u16) -> Result<()> {
    let script = format!(
        "echo $$ > {procs}; \
         if exec 3<>/dev/tcp/127.0.0.2/{port}; then \
           printf 'SELECT 1\\n' >&3; \
           timeout 5 head -n 2 <&3 || echo '(connection closed by Warden)'; \
         else echo '(connect failed)'; fi",
        procs = cgroup.join("cgroup.procs").display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    for line in text.lines().chain(err.lines()) {
        println!("   client> {line}");
    }
    Ok(())
}

fn serve(name: &'static str, l: TcpListener) {
    for conn in l.incoming().flatten() {
        std::thread::spawn(move || {
            let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let mut w = match conn.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let _ = writeln!(w, "{name}: hello, I see you as {peer}");
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                if writeln!(w, "{name}: got {line:?}").is_err() {
                    break;
                }
            }
        });
    }
}

fn wait_for(sock: &Path, child: Option<&mut Child>) -> Result<()> {
    let Some(child) = child else {
        bail!("no daemon")
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log =
                std::fs::read_to_string(Path::new(STATE).join("warden.log")).unwrap_or_default();
            bail!("warden exited early ({status}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("warden did not open its control socket within 20 s")
}

pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup2 mount in /proc/self/mounts")
}

struct Cleanup {
    warden: PathBuf,
    config: PathBuf,
    mount: PathBuf,
    daemon: Option<Child>,
}

impl Cleanup {
    /// Starts `warden run` with `config` (log appended to STATE/warden.log)
    /// and waits for its control socket.
    fn start(&mut self, config: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(STATE).join("warden.log"))?;
        let child = Command::new(&self.warden)
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting warden")?;
        self.daemon = Some(child);
        wait_for(
            Path::new(STATE).join("control.sock").as_path(),
            self.daemon.as_mut(),
        )
    }

    /// `warden -c CONFIG ARGS…`, its output shown; fails on a non-zero exit.
    fn warden(&self, config: &Path, args: &[&str]) -> Result<()> {
        show(Command::new(&self.warden).arg("-c").arg(config).args(args))
    }

    /// `warden -c CONFIG audit tail --account ACCOUNT`, shown; returns the
    /// session of its first statement event (for `audit replay`).
    fn tail_session(&self, config: &Path, account: &str) -> Result<String> {
        let tail = Command::new(&self.warden)
            .arg("-c")
            .arg(config)
            .args(["audit", "tail", "--account", account, "-n", "20"])
            .output()?;
        let text = String::from_utf8_lossy(&tail.stdout);
        print!("{text}");
        text.lines()
            .filter(|l| l.contains(" statement "))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("session="))
            })
            .map(str::to_owned)
            .context("no statement event in the audit tail")
    }

    /// `warden uninstall` (stops the daemon, detaches the programs, removes
    /// the pins), then reaps the daemon.
    fn uninstall(&mut self, config: &Path) -> Result<()> {
        self.warden(config, &["uninstall"])?;
        if let Some(mut c) = self.daemon.take() {
            let _ = c.wait();
        }
        Ok(())
    }

    fn clean(&mut self) {
        if Path::new(STATE).exists() || Path::new("/sys/fs/bpf/warden-demo").exists() {
            let _ = Command::new(&self.warden)
                .arg("-c")
                .arg(&self.config)
                .arg("uninstall")
                .stdout(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dir in [
            self.mount.join(DEMO_CGROUP).join("orders-api"),
            self.mount.join(DEMO_CGROUP).join("reporting"),
            self.mount.join(DEMO_CGROUP).join(pg::CGROUP),
            self.mount.join(DEMO_CGROUP).join(http::CGROUP),
            self.mount.join(DEMO_CGROUP).join(mysql::CGROUP),
            self.mount.join(DEMO_CGROUP),
        ] {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir_all(STATE);
        // The agent cgroup can only go once the daemon has left it.
        let _ = std::fs::remove_dir(self.mount.join(AGENT_CGROUP));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.clean();
    }
}
