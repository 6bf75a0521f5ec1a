//! `cargo xtask bench relay`: the TCP relay, direct vs through Warden, in one
//! run on this host. Prints bulk throughput, connect+echo latency (p50/p99)
//! and the agent's RSS with 1,000 idle relayed connections.
//!
//! The client runs in a cgroup created for the bench (enrolled for the
//! Warden runs, a sibling cgroup for the direct runs); Warden's programs are
//! attached at the bench's own cgroup, so nothing else on the host is touched.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const BULK_BYTES: u64 = 1 << 30; // 1 GiB per throughput run
const LATENCY_ITERS: usize = 2000;
const IDLE_CONNS: usize = 1000;

pub fn run(root: &Path, which: &str) -> Result<()> {
    if which != "relay" {
        bail!("unknown bench {which:?} (available: relay)");
    }
    let mount = crate::demo::cgroup2_mount()?;
    let id = std::process::id();
    let base = format!("warden-bench-{id}");
    let enrolled = mount.join(&base).join("enrolled");
    let direct = mount.join(&base).join("direct");
    std::fs::create_dir_all(&enrolled)?;
    std::fs::create_dir_all(&direct)?;
    let tmp = std::env::temp_dir().join(format!("warden-bench-{id}"));
    std::fs::create_dir_all(&tmp)?;
    let mut guard = Guard {
        warden: root.join("target/release/warden"),
        config: tmp.join("warden.toml"),
        tmp: tmp.clone(),
        cgroups: vec![
            enrolled.clone(),
            direct.clone(),
            mount.join(&base),
            mount.join(format!("{base}-agent")),
        ],
        daemon: None,
    };

    // Servers: a sink (counts bytes, answers once at EOF) and an echo.
    let sink = TcpListener::bind("127.0.0.2:0")?;
    let sink_addr = sink.local_addr()?;
    std::thread::spawn(move || serve(sink, false));
    let echo = TcpListener::bind("127.0.0.2:0")?;
    let echo_addr = echo.local_addr()?;
    std::thread::spawn(move || serve(echo, true));

    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = format!(
        "[agent]\nlisten = \"127.0.0.1:{listen_port}\"\nstate_dir = \"{state}\"\nbpf_pin_dir = \"/sys/fs/bpf/warden-bench-{id}\"\ncontrol_socket = \"{sock}\"\ncgroup_root = \"/{base}\"\nagent_cgroup = \"/{base}-agent\"\nmax_connections = 20000\n{extra}\n\n[[target]]\nname = \"sink\"\nprotocol = \"tcp\"\naddress = \"{sink_addr}\"\n\n[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"{echo_addr}\"\n\n[[account]]\nname = \"bench\"\ncgroups = [\"/{base}/enrolled\"]\ntargets = [\"sink\", \"echo\"]\n",
        state = tmp.join("state").display(),
        sock = tmp.join("control.sock").display(),
        extra = std::env::var("WARDEN_BENCH_AGENT_EXTRA").unwrap_or_default(),
    );
    std::fs::write(&guard.config, cfg)?;
    let log = std::fs::File::create(tmp.join("warden.log"))?;
    let child = Command::new(&guard.warden)
        .arg("--config")
        .arg(&guard.config)
        .arg("run")
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    guard.daemon = Some(child);
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(tmp.join("control.sock")).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "warden did not start: {}",
                std::fs::read_to_string(tmp.join("warden.log"))?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_start = rss_kib(pid)?;

    println!("relay benchmark (loopback, 127.0.0.2), Warden audit synchronous=full");
    println!(
        "{:<28} {:>14} {:>14} {:>9}",
        "", "direct", "via warden", "ratio"
    );
    let t_direct = client(&direct, "bulk", sink_addr)?;
    let t_warden = client(&enrolled, "bulk", sink_addr)?;
    let (d, w) = (t_direct.value("mib_s")?, t_warden.value("mib_s")?);
    println!(
        "{:<28} {:>10.0} MiB/s {:>10.0} MiB/s {:>8.1}%",
        "bulk upload 1 GiB",
        d,
        w,
        100.0 * w / d
    );

    let l_direct = client(&direct, "latency", echo_addr)?;
    let l_warden = client(&enrolled, "latency", echo_addr)?;
    for key in ["p50_us", "p99_us"] {
        let (d, w) = (l_direct.value(key)?, l_warden.value(key)?);
        println!(
            "{:<28} {:>11.0} µs {:>11.0} µs {:>+8.0} µs",
            format!("connect+echo {}", &key[..3]),
            d,
            w,
            w - d
        );
    }

    let idle = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec '{}' bench-client idle {echo_addr}",
            enrolled.join("cgroup.procs").display(),
            std::env::current_exe()?.display()
        ))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()?;
    let mut idle = idle;
    let mut out = idle.stdout.take().context("idle client stdout")?;
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready)?; // "ready\n" once all connections are open
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_kib(pid)?;
    drop(idle.stdin.take()); // EOF tells the client to close everything
    let _ = idle.wait();
    println!(
        "{:<28} {:>14} {:>11.1} MB {:>9}",
        format!("agent RSS, {IDLE_CONNS} idle conns"),
        "",
        rss_idle as f64 / 1024.0,
        format!("(idle {:.1} MB)", rss_start as f64 / 1024.0)
    );
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

struct Guard {
    warden: PathBuf,
    config: PathBuf,
    tmp: PathBuf,
    cgroups: Vec<PathBuf>,
    daemon: Option<Child>,
}

impl Guard {
    fn stop(&mut self) {
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
