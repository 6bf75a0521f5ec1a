//! `cargo xtask bench pg`: pgbench `-S` (8 and 64 clients, simple and prepared
//! protocol) against a throwaway PostgreSQL 15 directly, through the real
//! `warden` binary (policy + masking + audit, the client in an enrolled
//! cgroup holding no password) and through PgBouncer (session mode), in one
//! run on this host; then the agent's memory idle and with 500 sessions held
//! open through it. Prints figures, asserts nothing.
//!
//! Settings (environment): `WARDEN_BENCH_PG_SECS` (per run, default 20),
//! `WARDEN_BENCH_PG_CLIENTS` (`8,64`), `WARDEN_BENCH_PG_SCALE` (10),
//! `WARDEN_BENCH_PG_SESSIONS` (500); `WARDEN_BENCH_PG_SYNC` (the main run's
//! durability, `pipelined`); `WARDEN_BENCH_PG_COMPARE` (the durability modes
//! run after it, `strict,relaxed,normal`; empty: none); `WARDEN_BENCH_PG_PERF` (set: `perf
//! record` the agent during the simple-protocol Warden run and print its
//! hottest symbols; that run's figures then include perf's overhead);
//! `WARDEN_BENCH_PG_ENFORCE` (`0`: skip the enforce rows);
//! `WARDEN_BENCH_PG_TPCB` (`0`: skip the TPC-B-like rows: `pgbench -b
//! tpcb-like`, simple protocol, the same client counts, direct / Warden with
//! a grant that allows the writes / PgBouncer).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgkit::{PgBouncer, PgOptions, PgServer, PoolMode};

use super::{Guard, status_kib};

/// Opens N sessions (libpq settings from the environment), runs one query
/// on each, prints "ready N", holds them until stdin closes.
const HOLDER: &str = r#"
import sys, psycopg2
conns = []
for _ in range(int(sys.argv[1])):
    c = psycopg2.connect("")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM pgbench_branches")
    cur.fetchone()
    conns.append(c)
print("ready", len(conns), flush=True)
sys.stdin.read()
"#;

pub fn run(root: &Path) -> Result<()> {
    let secs = env_num("WARDEN_BENCH_PG_SECS", 20)?;
    let client_counts = env_list("WARDEN_BENCH_PG_CLIENTS", &[8, 64])?;
    let scale = env_num("WARDEN_BENCH_PG_SCALE", 10)?;
    let sessions = env_num("WARDEN_BENCH_PG_SESSIONS", 500)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    machine_facts(cpus)?;

    let mut guard = Guard::new(root)?;
    eprintln!("bench pg: starting PostgreSQL, pgbench -i -s {scale}");
    let pg = PgServer::start(PgOptions {
        max_connections: u32::try_from(sessions)?.saturating_add(100),
        stream_rows: 10,
        log_connections: false,
        extra_conf: String::new(),
    });
    let init = pg
        .pgbench_cmd(pgkit::SUPERUSER, pgkit::DB, "disable")
        .args(["-i", "-q", "-s", &scale.to_string()])
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i failed: {}", pgkit::show(&init));
    }
    pg.psql_ok(
        pgkit::SUPERUSER,
        pgkit::DB,
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO orders_ro",
    );
    let version = pg.psql_ok(pgkit::SUPERUSER, pgkit::DB, "SHOW server_version");

    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let sync = std::env::var("WARDEN_BENCH_PG_SYNC").unwrap_or_else(|_| "pipelined".into());
    let config = guard.agent_toml(listen_port, &sync)
        + &crate::pg::sections(&pg, "bench", &guard.enrolled_cgroup(), &guard.tmp, false)?;
    std::fs::write(&guard.config, config)?;
    let agent = guard.start()?;
    let idle = Mem::of(agent)?;
    let bouncer = PgBouncer::start(&pg, PoolMode::Session);

    println!(
        "\npgbench -S (select only), {client_counts:?} clients (as many threads as CPUs), \
         {secs} s per run, scale {scale}, one run each, interleaved"
    );
    println!(
        "PostgreSQL {version} on loopback (fsync, synchronous_commit, full_page_writes off: \
         throwaway data), SCRAM, no TLS on any hop"
    );
    println!(
        "warden: release build, read-only grant, policy (default deny, allow reads), masking \
         (3 column rules + all 5 patterns), audit synchronous={sync} (state on {}), client in an \
         enrolled cgroup with no password",
        fs_type(&guard.tmp)
    );
    println!("pgbouncer: Debian package, session mode, SCRAM towards clients\n");
    println!(
        "{:<14} {:<10} {:>10} {:>11} {:>10} {:>14} {:>9} {:>7}",
        "protocol", "path", "TPS", "avg lat", "vs direct", "proxy CPU/tx", "cswch/tx", "load1"
    );
    let pgbench = pg.bin("pgbench");
    let mut summary = Vec::new();
    let perf_wanted = std::env::var_os("WARDEN_BENCH_PG_PERF").is_some();
    let mut profile = None;
    let runs = client_counts
        .iter()
        .flat_map(|&c| MODES.map(|m| Run::new(m, c, cpus)));
    for mode in runs {
        let args = mode.args(secs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut direct = crate::pg::in_cgroup(&guard.direct, &pgbench, &args);
        pg.client_env(&mut direct, pgkit::ORDERS_RO, pgkit::DB, "disable");
        let d = Figures::measure(direct, None)?;
        d.print(&mode, "direct", None);

        let warden = crate::pg::workload(&pg, &guard.enrolled, &pgbench, &args);
        let perf =
            (profile.is_none() && mode.mode == "simple" && perf_wanted).then(|| Perf::start(agent));
        let w = Figures::measure(warden, Some(agent))?;
        if let Some(p) = perf {
            profile = Some(p?.report()?);
        }
        w.print(&mode, "warden", Some(&d));

        let mut via = crate::pg::in_cgroup(&guard.direct, &pgbench, &args);
        pg.client_env(&mut via, pgkit::ORDERS_RO, pgkit::DB, "disable");
        via.env("PGPORT", bouncer.port().to_string());
        let b = Figures::measure(via, bouncer.pid())?;
        b.print(&mode, "pgbouncer", Some(&d));
        summary.push((mode, d, w, b));
    }
    println!();
    println!("goals (issue 17): Warden TPS >= PgBouncer TPS; Warden CPU/tx <= 2x PgBouncer's");
    for (mode, d, w, b) in &summary {
        let cpu = match (w.cpu_us_per_tx, b.cpu_us_per_tx) {
            (Some(w), Some(b)) if b > 0.0 => format!(
                "CPU/tx {:.1}x pgbouncer's (goal <= 2x: {})",
                w / b,
                met(w <= 2.0 * b)
            ),
            _ => "CPU/tx not measured".into(),
        };
        println!(
            "{mode:<14} TPS {:.1}% of pgbouncer's (goal >= 100%: {}), {cpu}; {:.1}% of direct; \
             latency {:+.3} ms vs direct",
            100.0 * w.tps / b.tps,
            met(w.tps >= b.tps),
            100.0 * w.tps / d.tps,
            w.lat_ms - d.lat_ms,
        );
    }
    let busy = Mem::of(agent)?;
    drop(bouncer);

    // Sessions held open through Warden from the enrolled cgroup.
    let t = Instant::now();
    let mut holder = crate::pg::workload(
        &pg,
        &guard.enrolled,
        Path::new("/usr/bin/python3"),
        &["-c", HOLDER, &sessions.to_string()],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .context("starting the session holder (python3-psycopg2)")?;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().context("holder stdout")?).read_line(&mut line)?;
    if !line.starts_with("ready") {
        let _ = holder.kill();
        let out = holder.wait_with_output()?;
        bail!(
            "the session holder failed: {}\nwarden log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_tail(&guard.tmp.join("warden.log"))
        );
    }
    let opened = t.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let held = Mem::of(agent)?;
    let upstream = pg.psql_ok(
        pgkit::SUPERUSER,
        pgkit::DB,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'orders_ro'",
    );
    drop(holder.stdin.take()); // EOF: the holder closes everything
    let _ = holder.wait();

    println!("\nagent memory (RSS = VmRSS at that moment, HWM = VmHWM, the peak since start)");
    idle.print("idle, after start");
    busy.print("after the pgbench runs");
    held.print(&format!(
        "{sessions} sessions held open ({upstream} upstream, opened in {:.1} s)",
        opened.as_secs_f64()
    ));
    println!("  (goal: <= 100 MB at 500 sessions)");
    let audited: f64 = summary.iter().map(|(_, _, w, _)| w.tx).sum();
    let store = dir_bytes(&guard.tmp.join("state")) as f64;
    println!(
        "\naudit store after the Warden runs: {:.1} MB, {:.0} bytes per pgbench transaction \
         ({audited:.0} transactions, each audited as a request and a result event)",
        store / 1e6,
        store / audited.max(1.0)
    );

    // The other durability modes, same runs: what each promise costs.
    let compare =
        std::env::var("WARDEN_BENCH_PG_COMPARE").unwrap_or_else(|_| "strict,relaxed,normal".into());
    for other in compare.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        if other == sync {
            continue;
        }
        guard.stop();
        let config = guard.agent_toml(listen_port, other)
            + &crate::pg::sections(&pg, "bench", &guard.enrolled_cgroup(), &guard.tmp, false)?;
        std::fs::write(&guard.config, config)?;
        let agent = guard.start()?;
        println!("\nfor comparison, Warden with audit synchronous={other}:");
        for (mode, d, _, _) in &summary {
            let args = mode.args(secs);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let warden = crate::pg::workload(&pg, &guard.enrolled, &pgbench, &args);
            Figures::measure(warden, Some(agent))?.print(mode, "warden", Some(d));
        }
    }
    if std::env::var("WARDEN_BENCH_PG_ENFORCE").as_deref() != Ok("0") {
        enforce_rows(&mut guard, &pg, listen_port, &sync, &summary, secs)?;
    }
    if std::env::var("WARDEN_BENCH_PG_TPCB").as_deref() != Ok("0") {
        let runs: Vec<Run> = client_counts.iter().map(|&c| Run::tpcb(c, cpus)).collect();
        tpcb_rows(&mut guard, &pg, listen_port, &sync, &runs, secs)?;
    }
    if let Some(profile) = profile {
        println!(
            "\nagent CPU profile during the simple-protocol Warden run (synchronous={sync}; its \
             figures include perf's overhead):\n{profile}"
        );
    }
    warn_if_busy(cpus)?;
    guard.stop();
    Ok(())
}

// --- the TPC-B-like rows (issue 17) ---

/// The bench configuration with a grant that allows pgbench's writes
/// (policy `rw`: reads and writes allowed, everything else denied; not
/// read-only), same masking and audit.
fn writes_config(guard: &Guard, pg: &PgServer, listen_port: u16, sync: &str) -> Result<String> {
    let sections = crate::pg::sections(pg, "bench", &guard.enrolled_cgroup(), &guard.tmp, false)?;
    let sections = sections
        .replacen("policy = \"ro\"", "policy = \"rw\"", 1)
        .replacen("read_only = true", "read_only = false", 1);
    Ok(format!(
        "{}{sections}\n[policy.rw]\ndefault = \"deny\"\nrules = [\n  {{ action = \"allow\", \
         classes = [\"read\", \"write\"] }},\n]\n",
        guard.agent_toml(listen_port, sync)
    ))
}

/// pgbench TPC-B-like (BEGIN; 3 UPDATEs, a SELECT, an INSERT; END) directly,
/// through Warden with a grant that allows the writes, and through
/// PgBouncer, one run each per client count.
fn tpcb_rows(
    guard: &mut Guard,
    pg: &PgServer,
    listen_port: u16,
    sync: &str,
    runs: &[Run],
    secs: u64,
) -> Result<()> {
    pg.psql_ok(
        pgkit::SUPERUSER,
        pgkit::DB,
        "GRANT UPDATE ON pgbench_accounts, pgbench_tellers, pgbench_branches TO orders_ro; \
         GRANT INSERT ON pgbench_history TO orders_ro",
    );
    guard.stop();
    std::fs::write(&guard.config, writes_config(guard, pg, listen_port, sync)?)?;
    let agent = guard.start()?;
    let bouncer = PgBouncer::start(pg, PoolMode::Session);
    let pgbench = pg.bin("pgbench");
    println!(
        "\npgbench -b tpcb-like (BEGIN, 3 UPDATEs, SELECT, INSERT, END per transaction), simple \
         protocol; Warden grant: reads and writes allowed (not read-only), audit \
         synchronous={sync} (a write is forwarded only once its record is on disk)"
    );
    for run in runs {
        let args = run.args(secs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut direct = crate::pg::in_cgroup(&guard.direct, &pgbench, &args);
        pg.client_env(&mut direct, pgkit::ORDERS_RO, pgkit::DB, "disable");
        let d = Figures::measure(direct, None)?;
        d.print(run, "direct", None);
        let warden = crate::pg::workload(pg, &guard.enrolled, &pgbench, &args);
        let w = Figures::measure(warden, Some(agent))?;
        w.print(run, "warden", Some(&d));
        let mut via = crate::pg::in_cgroup(&guard.direct, &pgbench, &args);
        pg.client_env(&mut via, pgkit::ORDERS_RO, pgkit::DB, "disable");
        via.env("PGPORT", bouncer.port().to_string());
        let b = Figures::measure(via, bouncer.pid())?;
        b.print(run, "pgbouncer", Some(&d));
        let cpu = match (w.cpu_us_per_tx, b.cpu_us_per_tx) {
            (Some(w), Some(b)) if b > 0.0 => format!("CPU/tx {:.1}x pgbouncer's", w / b),
            _ => "CPU/tx not measured".into(),
        };
        println!(
            "{run:<14} TPS {:.1}% of pgbouncer's, {cpu}; {:.1}% of direct",
            100.0 * w.tps / b.tps,
            100.0 * w.tps / d.tps,
        );
    }
    Ok(())
}

// --- the enforce row (issue 19; learn area) ---

/// Warden with the pgbench shapes frozen into an allow-list and the grant
/// in `mode = "enforce"`: a short run of each protocol in `mode = "learn"`,
/// `warden policy freeze`, then the same runs as above, beside the rule
/// policy alone (the allow-list check must cost no more than it).
fn enforce_rows(
    guard: &mut Guard,
    pg: &PgServer,
    listen_port: u16,
    sync: &str,
    summary: &[(Run, Figures, Figures, Figures)],
    secs: u64,
) -> Result<()> {
    let pgbench = pg.bin("pgbench");
    let sections = crate::pg::sections(pg, "bench", &guard.enrolled_cgroup(), &guard.tmp, false)?;
    let agent_toml = guard.agent_toml(listen_port, sync);
    let with_grant_keys = |keys: &str| -> Result<String> {
        let at = sections
            .find("[[grant]]\n")
            .context("no [[grant]] in the bench configuration")?
            + "[[grant]]\n".len();
        Ok(format!(
            "{agent_toml}{}{keys}\n{}",
            &sections[..at],
            &sections[at..]
        ))
    };
    guard.stop();
    std::fs::write(&guard.config, with_grant_keys("mode = \"learn\"")?)?;
    guard.start()?;
    for mode in MODES {
        let args = Run::new(mode, 2, 1).args(2);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::pg::workload(pg, &guard.enrolled, &pgbench, &args).output()?;
        if !out.status.success() {
            bail!("pgbench in learn mode failed: {}", pgkit::show(&out));
        }
    }
    let list = guard.tmp.join("bench.allowlist.toml");
    let frozen = Command::new(&guard.warden)
        .arg("--config")
        .arg(&guard.config)
        .args(["policy", "freeze", "--grant", "bench/orders-pg", "--out"])
        .arg(&list)
        .output()?;
    if !frozen.status.success() {
        bail!("warden policy freeze failed: {}", pgkit::show(&frozen));
    }
    guard.stop();
    std::fs::write(
        &guard.config,
        with_grant_keys(&format!(
            "mode = \"enforce\"\nallowlist = \"{}\"",
            list.display()
        ))?,
    )?;
    let agent = guard.start()?;
    println!(
        "\nWarden in mode = \"enforce\" (the pgbench shapes frozen into an allow-list, {}; \
         audit synchronous={sync}), beside the rule policy alone:",
        String::from_utf8_lossy(&frozen.stdout).trim()
    );
    for (mode, d, w, _) in summary {
        let args = mode.args(secs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let warden = crate::pg::workload(pg, &guard.enrolled, &pgbench, &args);
        let e = Figures::measure(warden, Some(agent))?;
        e.print(mode, "enforce", Some(d));
        println!(
            "{:<14} {:<10} {:>10} {:+.3} ms latency, {:+.1}% TPS vs the rule policy alone",
            "",
            "",
            "",
            e.lat_ms - w.lat_ms,
            100.0 * (e.tps / w.tps - 1.0)
        );
    }
    Ok(())
}

/// One pgbench run's figures.
struct Figures {
    /// Transactions completed.
    tx: f64,
    tps: f64,
    lat_ms: f64,
    failed: u64,
    /// CPU time of the watched proxy process per transaction, µs.
    cpu_us_per_tx: Option<f64>,
    /// Context switches (voluntary + involuntary, all threads) of the
    /// watched process per transaction.
    switches_per_tx: Option<f64>,
    load1: f64,
}

impl Figures {
    /// Runs pgbench (`cmd`) and reads its summary; with `watch`, also the
    /// CPU time that process used during the run.
    fn measure(mut cmd: Command, watch: Option<u32>) -> Result<Self> {
        let switched_before = watch.map(context_switches);
        let before = watch.map(cpu_ticks).transpose()?;
        let out = cmd.output()?;
        let after = watch.map(cpu_ticks).transpose()?;
        let switched_after = watch.map(context_switches);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("pgbench failed: {}", pgkit::show(&out));
        }
        let field = |prefix: &str| -> Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {prefix:?} in pgbench's output:\n{text}"))
        };
        let tx = field("number of transactions actually processed: ")?;
        let cpu_us_per_tx = match (before, after) {
            (Some(b), Some(a)) if tx > 0.0 => {
                Some((a - b) as f64 * 1e6 / clock_ticks()? as f64 / tx)
            }
            _ => None,
        };
        let switches_per_tx = match (switched_before, switched_after) {
            (Some(b), Some(a)) if tx > 0.0 => Some(a.saturating_sub(b) as f64 / tx),
            _ => None,
        };
        Ok(Self {
            tx,
            switches_per_tx,
            tps: field("tps = ")?,
            lat_ms: field("latency average = ")?,
            failed: field("number of failed transactions: ").unwrap_or(0.0) as u64,
            cpu_us_per_tx,
            load1: load_avg()?.0,
        })
    }

    fn print(&self, mode: &Run, path: &str, direct: Option<&Figures>) {
        let vs = direct.map_or_else(String::new, |d| format!("{:.1}%", 100.0 * self.tps / d.tps));
        let cpu = self
            .cpu_us_per_tx
            .map_or_else(String::new, |c| format!("{c:.0} µs"));
        let switches = self
            .switches_per_tx
            .map_or_else(String::new, |c| format!("{c:.1}"));
        let failed = if self.failed > 0 {
            format!("   ({} failed transactions)", self.failed)
        } else {
            String::new()
        };
        println!(
            "{mode:<14} {path:<10} {:>10.0} {:>8.3} ms {vs:>10} {cpu:>14} {switches:>9} {:>7.2}{failed}",
            self.tps, self.lat_ms, self.load1
        );
    }
}

/// Context switches so far of every thread of `pid` (voluntary and not),
/// from /proc; 0 when unreadable.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|st| {
            st.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The agent's VmRSS and VmHWM at one moment.
struct Mem {
    rss: u64,
    hwm: u64,
}

impl Mem {
    fn of(pid: u32) -> Result<Self> {
        Ok(Self {
            rss: status_kib(pid, "VmRSS")?,
            hwm: status_kib(pid, "VmHWM")?,
        })
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<56} RSS {:>6.1} MB   HWM {:>6.1} MB",
            self.rss as f64 / 1024.0,
            self.hwm as f64 / 1024.0
        );
    }
}

const MODES: [&str; 2] = ["simple", "prepared"];

/// One pgbench workload: protocol and client count.
#[derive(Clone, Copy)]
struct Run {
    mode: &'static str,
    clients: u64,
    threads: u64,
    /// A pgbench built-in script (`-b`) instead of `-S`.
    builtin: Option<&'static str>,
}

impl Run {
    fn new(mode: &'static str, clients: u64, cpus: usize) -> Self {
        Self {
            mode,
            clients,
            threads: clients.min(cpus as u64).max(1),
            builtin: None,
        }
    }

    /// TPC-B-like, simple protocol.
    fn tpcb(clients: u64, cpus: usize) -> Self {
        Self {
            builtin: Some("tpcb-like"),
            ..Self::new("simple", clients, cpus)
        }
    }

    fn args(&self, secs: u64) -> Vec<String> {
        let mut args: Vec<String> = match self.builtin {
            Some(b) => ["-n", "-b", b, "-M", self.mode].map(str::to_owned).into(),
            None => ["-n", "-S", "-M", self.mode].map(str::to_owned).into(),
        };
        for (flag, v) in [("-c", self.clients), ("-j", self.threads), ("-T", secs)] {
            args.push(flag.to_owned());
            args.push(v.to_string());
        }
        args
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Padded by the caller's width.
        match self.builtin {
            Some(_) => f.pad(&format!("tpcb c={}", self.clients)),
            None => f.pad(&format!("{} c={}", self.mode, self.clients)),
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// A comma-separated list of numbers from the environment, or `default`.
fn env_list(name: &str, default: &[u64]) -> Result<Vec<u64>> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .with_context(|| format!("{name}: {n:?} is not a number"))
            })
            .collect(),
        Err(_) => Ok(default.to_vec()),
    }
}

/// `perf record` of one process while a run lasts (WARDEN_BENCH_PG_PERF).
struct Perf {
    child: std::process::Child,
    data: std::path::PathBuf,
}

impl Perf {
    /// Records into /tmp/warden-bench-pg.perf.data (kept for `perf report -i`).
    fn start(pid: u32) -> Result<Self> {
        let data = std::env::temp_dir().join("warden-bench-pg.perf.data");
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "499",
                "-g",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf (WARDEN_BENCH_PG_PERF is set)")?;
        Ok(Self { child, data })
    }

    /// Stops the recording; where the agent's CPU time went: by binary
    /// (self time), then the agent's own functions including what they call.
    fn report(mut self) -> Result<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = |args: &[&str], keep: &dyn Fn(&str) -> bool, lines: usize| {
            let out = Command::new("perf")
                .args(["report", "--stdio", "-g", "none", "-i"])
                .arg(&self.data)
                .args(args)
                .output()?;
            Ok::<_, anyhow::Error>(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && keep(l))
                    .take(lines)
                    .map(str::trim_end)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        let all = |_: &str| true;
        let by_dso = report(&["--no-children", "--sort", "dso"], &all, 6)?;
        // User stacks are not unwound (no frame pointers in the release
        // build), but the kernel's are: time spent in each system call.
        let syscalls = report(
            &["--children", "--sort", "sym"],
            &|l: &str| l.contains("__x64_sys_"),
            8,
        )?;
        let user = report(
            &[
                "--no-children",
                "--sort",
                "dso,sym",
                "--dsos",
                "warden,libc.so.6",
            ],
            &all,
            15,
        )?;
        Ok(format!(
            "by binary (self time):\n{by_dso}\nin system calls (with the kernel work they \
             cause):\n{syscalls}\nhottest user-space symbols (self time):\n{user}\n\
             (recording kept: perf report -i {})",
            self.data.display()
        ))
    }
}

pub(super) fn env_num(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

pub(super) fn machine_facts(cpus: usize) -> Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |m| m.trim_start_matches([' ', '\t', ':']));
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs ({model}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    );
    warn_if_busy(cpus)
}

/// Prints the load averages, with a warning when other work competes for
/// the CPUs (the figures are then noisy, and low for every path).
pub(super) fn warn_if_busy(cpus: usize) -> Result<()> {
    let (l1, l5, l15) = load_avg()?;
    println!("load average: {l1:.2} {l5:.2} {l15:.2}");
    if l1 > 0.5 * cpus as f64 || l5 > 0.5 * cpus as f64 {
        println!(
            "WARNING: this machine is busy (load {l1:.2} on {cpus} CPUs): other work shares the \
             CPUs with the servers, the proxies and the load generator; compare paths within this run only"
        );
    }
    Ok(())
}

pub(super) fn load_avg() -> Result<(f64, f64, f64)> {
    let s = std::fs::read_to_string("/proc/loadavg")?;
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => bail!("unreadable /proc/loadavg: {s}"),
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unreadable /proc/{pid}/stat"))
    };
    Ok(get(11)? + get(12)?)
}

pub(super) fn clock_ticks() -> Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")
}

pub(super) fn fs_type(path: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
