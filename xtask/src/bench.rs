//! `cargo xtask bench [NAME]`: benchmarks that print figures and assert
//! nothing. Without a name, every one of them in turn.
//!
//! `relay`: the TCP relay, direct vs through Warden, in one run on this
//! host. Prints bulk throughput, connect+echo latency (p50/p99) and the
//! agent's RSS with 1,000 idle relayed connections.
//!
//! `pg` (`bench/pg.rs`): pgbench against PostgreSQL directly, through
//! Warden and through PgBouncer, and the agent's memory with 500 sessions.
//!
//! `mysql` (`bench/mysql.rs`): sysbench against MariaDB directly and
//! through Warden (`protocol = "mysql"`) and socat, with CPU per query.
//!
//! `http` (`bench/http.rs`): wrk keep-alive GETs against nginx directly and
//! through Warden (policy, credential, masking, audit on).
//!
//! `audit`, `masking`, `policy`, …: the agent crate's `[[bench]]` targets
//! (`agent/benches/*.rs`), measured in-process on the real library code:
//! e.g. the audit store's append rate with hash chain and group commit,
//! added latency per record and `verify` speed.
//!
//! The clients run in cgroups created for the bench (enrolled for the
//! Warden runs, a sibling cgroup for the direct runs); Warden's programs are
//! attached at the bench's own cgroup, so nothing else on the host is touched.

mod http;
mod mysql;
mod pg;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const BULK_BYTES: u64 = 1 << 30; // 1 GiB per throughput run
const BULK_RUNS: usize = 3;
const LATENCY_ITERS: usize = 2000;
const IDLE_CONNS: usize = 1000;

/// The system benches (release binary, root, eBPF); the others are the
/// agent crate's `[[bench]]` targets.
const SYSTEM: &[&str] = &["relay", "pg", "http", "mysql"];

/// The agent crate's `[[bench]]` targets, from agent/Cargo.toml.
pub fn micro_benches(root: &Path) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root.join("agent/Cargo.toml"))?;
    let mut names = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench && let Some(v) = line.strip_prefix("name") {
            names.push(
                v.trim_start_matches([' ', '='])
                    .trim_matches('"')
                    .to_owned(),
            );
        }
    }
    Ok(names)
}

/// `cargo xtask bench [NAME]`; `build` makes target/release/warden, called
/// only when a system bench runs.
pub fn main(root: &Path, which: Option<&str>, build: impl Fn() -> Result<()>) -> Result<()> {
    let micro = micro_benches(root)?;
    let all: Vec<&str> = micro
        .iter()
        .map(String::as_str)
        .chain(SYSTEM.iter().copied())
        .collect();
    let chosen: Vec<&str> = match which {
        None => all.clone(),
        Some(w) if all.contains(&w) => vec![w],
        Some(w) => bail!("unknown bench {w:?} (available: {})", all.join(", ")),
    };
    let mut built = false;
    for name in &chosen {
        if chosen.len() > 1 {
            println!("\n==== cargo xtask bench {name}");
        }
        if micro.iter().any(|m| m == name) {
            // In-process: needs no release binary, no root, no eBPF.
            crate::run(
                crate::cargo()
                    .current_dir(root)
                    .args(["bench", "-p", "warden", "--bench", name]),
            )?;
            continue;
        }
        if !built && std::env::var_os("WARDEN_BENCH_BIN").is_none() {
            build()?;
            built = true;
        }
        match *name {
            "relay" => relay(root)?,
            "pg" => pg::run(root)?,
            "http" => http::run(root)?,
            "mysql" => mysql::run(root)?,
            other => bail!("no runner for {other}"),
        }
    }
    Ok(())
}

fn relay(root: &Path) -> Result<()> {
    let mut guard = Guard::new(root)?;
    let (enrolled, direct) = (guard.enrolled.clone(), guard.direct.clone());

    // Servers: a sink (counts bytes, answers once at EOF) and an echo.
    let sink = TcpListener::bind("127.0.0.2:0")?;
    let sink_addr = sink.local_addr()?;
    std::thread::spawn(move || serve(sink, false));
    let echo = TcpListener::bind("127.0.0.2:0")?;
    let echo_addr = echo.local_addr()?;
    std::thread::spawn(move || serve(echo, true));

    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let targets = format!(
        "\n[[target]]\nname = \"sink\"\nprotocol = \"tcp\"\naddress = \"{sink_addr}\"\n\n[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"{echo_addr}\"\n\n[[account]]\nname = \"bench\"\ncgroups = [\"{cg}\"]\ntargets = [\"sink\", \"echo\"]\n",
        cg = guard.enrolled_cgroup(),
    );

    println!("relay benchmark on this host (loopback, server on 127.0.0.2), one run");
    println!(
        "{:<40} {:>13} {:>13} {:>10}",
        "", "direct", "via warden", ""
    );
    // Reference: the same transfer through socat, a plain userspace copy
    // relay, shows what relaying through any local proxy costs on this host.
    let mut bulk_s = Vec::new();
    if let Some(mut socat) = start_socat(sink_addr, "")? {
        for _ in 0..BULK_RUNS {
            bulk_s.push(client(&direct, "bulk", SOCAT_ADDR.parse()?)?.value("mib_s")?);
        }
        let _ = socat.kill();
        let _ = socat.wait();
    }
    // Each relay (`agent.tcp_relay`) with the default audit durability:
    // bulk (direct and Warden runs alternated, median of each), then
    // connect+echo latency.
    let mut pid = 0;
    let mut rss_start = 0;
    for mode in ["splice", "sockmap"] {
        guard.stop();
        std::fs::write(
            &guard.config,
            guard.relay_toml(listen_port, None, mode) + &targets,
        )?;
        pid = guard.start()?;
        rss_start = rss_kib(pid)?;
        let mut bulk_d = Vec::new();
        let mut bulk_w = Vec::new();
        for _ in 0..BULK_RUNS {
            bulk_d.push(client(&direct, "bulk", sink_addr)?.value("mib_s")?);
            bulk_w.push(client(&enrolled, "bulk", sink_addr)?.value("mib_s")?);
        }
        let (d, w) = (median(&mut bulk_d), median(&mut bulk_w));
        println!(
            "{:<40} {:>7.0} MiB/s {:>7.0} MiB/s {:>9.1}%   (goal: >= 80%)",
            format!("bulk 1 GiB upload, {mode} (median of {BULK_RUNS})"),
            d,
            w,
            100.0 * w / d
        );
        let l_direct = client(&direct, "latency", echo_addr)?;
        let l_warden = client(&enrolled, "latency", echo_addr)?;
        print_latency(&format!("{mode}, default durability"), &l_direct, &l_warden)?;
    }
    if !bulk_s.is_empty() {
        let s = median(&mut bulk_s);
        println!(
            "{:<40} {:>13} {:>7.0} MiB/s   (reference: socat relay)",
            "bulk 1 GiB upload via socat", "", s,
        );
    }

    // The sockmap agent is still running.
    let mut idle = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec '{}' bench-client idle {echo_addr}",
            enrolled.join("cgroup.procs").display(),
            std::env::current_exe()?.display()
        ))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()?;
    let mut out = idle.stdout.take().context("idle client stdout")?;
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready)?; // "ready\n" once all connections are open
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_kib(pid)?;
    drop(idle.stdin.take()); // EOF tells the client to close everything
    let _ = idle.wait();
    println!(
        "{:<40} {:>13} {:>10.1} MB   (agent RSS at start: {:.1} MB)",
        format!("agent RSS, {IDLE_CONNS} idle relayed conns"),
        "",
        rss_idle as f64 / 1024.0,
        rss_start as f64 / 1024.0
    );

    // For comparison: the latency with each audit durability named.
    for sync in ["full", "normal"] {
        guard.stop();
        std::fs::write(
            &guard.config,
            guard.relay_toml(listen_port, Some(sync), "sockmap") + &targets,
        )?;
        guard.start()?;
        let l_direct = client(&direct, "latency", echo_addr)?;
        let l_warden = client(&enrolled, "latency", echo_addr)?;
        print_latency(
            &format!("sockmap, synchronous={sync}"),
            &l_direct,
            &l_warden,
        )?;
    }
    guard.stop();
    Ok(())
}

/// Hidden entry point: `xtask bench-client MODE ADDR`, run inside a cgroup.
pub fn client_main(mode: &str, addr: &str) -> Result<()> {
    let addr: SocketAddr = addr.parse()?;
    match mode {
        "bulk" => {
            let mut s = TcpStream::connect(addr)?;
            let buf = vec![0x5au8; 256 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < BULK_BYTES {
                s.write_all(&buf)?;
                sent += buf.len() as u64;
            }
            s.shutdown(Shutdown::Write)?;
            let mut ack = [0u8; 8];
            s.read_exact(&mut ack)?;
            let secs = start.elapsed().as_secs_f64();
            if u64::from_be_bytes(ack) != sent {
                bail!("sink counted {} of {sent} bytes", u64::from_be_bytes(ack));
            }
            println!("mib_s={}", sent as f64 / (1024.0 * 1024.0) / secs);
        }
        "latency" => {
            let mut samples = Vec::with_capacity(LATENCY_ITERS);
            for _ in 0..LATENCY_ITERS {
                let start = Instant::now();
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                samples.push(start.elapsed().as_secs_f64() * 1e6);
                drop(s);
            }
            samples.sort_by(f64::total_cmp);
            let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
            println!("p50_us={}\np99_us={}", p(0.5), p(0.99));
        }
        "idle" => {
            let mut conns = Vec::with_capacity(IDLE_CONNS);
            for _ in 0..IDLE_CONNS {
                let mut s = TcpStream::connect(addr)?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                conns.push(s);
            }
            let mut stdout = std::io::stdout();
            stdout.write_all(b"ready\n")?;
            stdout.flush()?;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(conns);
        }
        other => bail!("unknown client mode {other}"),
    }
    Ok(())
}

const SOCAT_ADDR: &str = "127.0.0.4:17099";

/// socat relaying SOCAT_ADDR → `to`, when socat is installed; `options`
/// (e.g. `,nodelay`) are added to both addresses.
fn start_socat(to: SocketAddr, options: &str) -> Result<Option<Child>> {
    let Ok(child) = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:17099,bind=127.0.0.4,reuseaddr,fork{options}"
        ))
        .arg(format!("TCP:{to}{options}"))
        .stderr(Stdio::null())
        .spawn()
    else {
        return Ok(None);
    };
    let start = Instant::now();
    while TcpStream::connect_timeout(&SOCAT_ADDR.parse()?, Duration::from_millis(100)).is_err() {
        if start.elapsed() > Duration::from_secs(5) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(child))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_latency(label: &str, d: &Figures, w: &Figures) -> Result<()> {
    for key in ["p50_us", "p99_us"] {
        let (d, w) = (d.value(key)?, w.value(key)?);
        println!(
            "{:<40} {:>10.0} µs {:>10.0} µs {:>+7.0} µs{}",
            format!("connect+echo {} ({label})", &key[..3]),
            d,
            w,
            w - d,
            if key == "p50_us" {
                "   (goal: <= +100 µs)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

struct Figures(String);

impl Figures {
    fn value(&self, key: &str) -> Result<f64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .with_context(|| format!("client printed no {key}: {}", self.0))?
            .trim()
            .parse()
            .context("parsing a figure")
    }
}

fn client(cgroup: &Path, mode: &str, addr: SocketAddr) -> Result<Figures> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec '{}' bench-client {mode} {addr}",
            cgroup.join("cgroup.procs").display(),
            std::env::current_exe()?.display()
        ))
        .output()?;
    if !out.status.success() {
        bail!(
            "bench client {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Figures(String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn serve(l: TcpListener, echo: bool) {
    for conn in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut conn = conn;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n as u64;
                        if echo && conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            if !echo {
                let _ = conn.write_all(&total.to_be_bytes());
            }
        });
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM, …).
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// A bench's cgroups (its own root with `enrolled` and `direct`, the
/// agent's cgroup beside it), temp dir and Warden daemon; `Drop` uninstalls
/// Warden and removes them.
struct Guard {
    warden: PathBuf,
    config: PathBuf,
    tmp: PathBuf,
    /// `warden-bench-<pid>`: the cgroup the programs attach at.
    base: String,
    enrolled: PathBuf,
    direct: PathBuf,
    cgroups: Vec<PathBuf>,
    daemon: Option<Child>,
}

impl Guard {
    fn new(root: &Path) -> Result<Self> {
        let mount = crate::demo::cgroup2_mount()?;
        let base = format!("warden-bench-{}", std::process::id());
        let enrolled = mount.join(&base).join("enrolled");
        let direct = mount.join(&base).join("direct");
        let tmp = std::env::temp_dir().join(&base);
        let guard = Guard {
            // `WARDEN_BENCH_BIN`: another build (an A/B of two binaries in
            // one session); nothing is built then.
            warden: std::env::var_os("WARDEN_BENCH_BIN")
                .map_or_else(|| root.join("target/release/warden"), PathBuf::from),
            config: tmp.join("warden.toml"),
            tmp: tmp.clone(),
            enrolled: enrolled.clone(),
            direct: direct.clone(),
            cgroups: vec![
                enrolled.clone(),
                direct.clone(),
                mount.join(&base),
                mount.join(format!("{base}-agent")),
            ],
            base,
            daemon: None,
        };
        std::fs::create_dir_all(&enrolled)?;
        std::fs::create_dir_all(&direct)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(guard)
    }

    /// The enrolled cgroup as the config names it (relative to the mount).
    fn enrolled_cgroup(&self) -> String {
        format!("/{}/enrolled", self.base)
    }

    /// The `[agent]` and `[audit]` tables: everything under the bench's temp
    /// dir (on disk: /tmp), programs attached at the bench's cgroup.
    fn agent_toml(&self, listen_port: u16, synchronous: &str) -> String {
        self.relay_toml(listen_port, Some(synchronous), "sockmap")
    }

    /// [`Guard::agent_toml`] with `agent.tcp_relay` and the audit
    /// durability chosen (`None`: the default).
    fn relay_toml(&self, listen_port: u16, synchronous: Option<&str>, tcp_relay: &str) -> String {
        let audit = synchronous
            .map(|s| format!("\n[audit]\nsynchronous = \"{s}\"\n"))
            .unwrap_or_default();
        format!(
            "[agent]\nlisten = \"127.0.0.1:{listen_port}\"\nstate_dir = \"{state}\"\nbpf_pin_dir = \"/sys/fs/bpf/{base}\"\ncontrol_socket = \"{sock}\"\ncgroup_root = \"/{base}\"\nagent_cgroup = \"/{base}-agent\"\nmax_connections = 20000\nmax_connections_per_account = 20000\ntcp_relay = \"{tcp_relay}\"\n{audit}",
            state = self.tmp.join("state").display(),
            sock = self.tmp.join("control.sock").display(),
            base = self.base,
        )
    }

    /// Starts Warden with `self.config`; returns its pid once it answers.
    fn start(&mut self) -> Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.join("warden.log"))?;
        let child = Command::new(&self.warden)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.daemon = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.tmp.join("control.sock")).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "warden did not start: {}",
                    std::fs::read_to_string(self.tmp.join("warden.log"))?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pid)
    }

    fn stop(&mut self) {
        if !self.config.exists() {
            return; // never started
        }
        let _ = Command::new(&self.warden)
            .arg("--config")
            .arg(&self.config)
            .arg("uninstall")
            .stdout(Stdio::null())
            .status();
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
        for cg in &self.cgroups {
            let _ = std::fs::remove_dir(cg);
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
