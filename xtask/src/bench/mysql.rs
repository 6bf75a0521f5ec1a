//! `cargo xtask bench mysql`: sysbench `oltp_point_select`,
//! `oltp_read_only` and `oltp_read_write` against a throwaway MariaDB
//! (`pgkit::mariadb`) directly and through the real `warden` binary
//! (`protocol = "mysql"`, policy + masking + audit, sysbench in an enrolled
//! cgroup holding no password) and through socat (the non-parsing
//! reference), in one run on this host. Prints TPS, QPS, latency p95 and
//! each proxy's CPU time per query (utime + stime during the run /
//! queries), with the Warden / direct and Warden / socat ratios. Asserts
//! nothing.
//!
//! Settings (environment): `WARDEN_BENCH_MYSQL_SECS` (per run, default 10),
//! `WARDEN_BENCH_MYSQL_THREADS` (sysbench client threads, 8),
//! `WARDEN_BENCH_MYSQL_TABLE_SIZE` (rows per table, 10000; 2 tables),
//! `WARDEN_BENCH_MYSQL_PS` (sysbench `--db-ps-mode`: `auto`, server-side
//! prepared statements and binary rows, or `disable`, text protocol),
//! `WARDEN_BENCH_MYSQL_SYNC` (the audit durability, `pipelined`),
//! `WARDEN_BENCH_MYSQL_WRITES` (`0`: skip `oltp_read_write`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use pgkit::mariadb::{self, MariaDb};

use super::Guard;
use super::pg::{clock_ticks, cpu_ticks, env_num, fs_type, load_avg, machine_facts, warn_if_busy};

const SYSBENCH: &str = "/usr/bin/sysbench";
const TABLES: u64 = 2;

/// Reads (and the transactions around them) allowed; `rw` adds writes.
const POLICY: &str = r#"
[policy.ro]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets"], name = "no-secrets" },
]

[policy.rw]
default = "deny"
rules = [
  { action = "allow", classes = ["read", "write"] },
  { action = "block", tables = ["secrets"], name = "no-secrets" },
]

[masking.pii]
columns = [
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "customers.ssn", strategy = "redact" },
]
patterns = ["card", "email", "ssn", "iban", "token"]
"#;

pub fn run(root: &Path) -> Result<()> {
    let secs = env_num("WARDEN_BENCH_MYSQL_SECS", 10)?;
    let threads = env_num("WARDEN_BENCH_MYSQL_THREADS", 8)?;
    let table_size = env_num("WARDEN_BENCH_MYSQL_TABLE_SIZE", 10_000)?;
    let ps = std::env::var("WARDEN_BENCH_MYSQL_PS").unwrap_or_else(|_| "auto".into());
    let sync = std::env::var("WARDEN_BENCH_MYSQL_SYNC").unwrap_or_else(|_| "pipelined".into());
    let writes = std::env::var("WARDEN_BENCH_MYSQL_WRITES").as_deref() != Ok("0");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    machine_facts(cpus)?;

    let mut guard = Guard::new(root)?;
    eprintln!("bench mysql: starting MariaDB, sysbench prepare ({TABLES} x {table_size} rows)");
    // Never dropped: dropping it would remove its directory (and the pid
    // file its watchdog kills the server by) while the server runs. The
    // watchdog stops the server and removes the directory once this
    // process has exited, whatever happens here.
    let db: &'static MariaDb = Box::leak(Box::new(MariaDb::start()));
    let common = [
        format!("--tables={TABLES}"),
        format!("--table-size={table_size}"),
        format!("--mysql-db={}", mariadb::DB),
    ];
    let prepare = Command::new(SYSBENCH)
        .arg("oltp_read_only")
        .arg(format!("--mysql-socket={}", db.socket().display()))
        .arg("--mysql-user=root")
        .args(&common)
        .arg("prepare")
        .output()?;
    if !prepare.status.success() {
        bail!("sysbench prepare failed: {}", pgkit::show(&prepare));
    }
    let version = String::from_utf8_lossy(&db.root_sql("SELECT VERSION()").stdout)
        .trim()
        .to_owned();

    let pw = guard.tmp.join("shop_app.pw");
    std::fs::write(&pw, format!("{}\n", db.password()))?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    let listen_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let agent_toml = guard.agent_toml(listen_port, &sync);
    let enrolled_cgroup = guard.enrolled_cgroup();
    let config = |policy: &str| {
        format!(
            "{agent}
[[target]]
name = \"shop\"
protocol = \"mysql\"
address = \"{addr}\"

[[account]]
name = \"bench\"
cgroups = [\"{cg}\"]

[[grant]]
account = \"bench\"
target = \"shop\"
database = \"{dbname}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"{policy}\"
masking = \"pii\"
{POLICY}",
            agent = agent_toml,
            addr = db.addr(),
            cg = enrolled_cgroup,
            dbname = mariadb::DB,
            user = mariadb::APP_USER,
            pw = pw.display(),
        )
    };
    std::fs::write(&guard.config, config("ro"))?;
    let mut agent = guard.start()?;

    println!(
        "\nsysbench, {threads} threads, {secs} s per run, {TABLES} tables x {table_size} rows, \
         --db-ps-mode={ps}, one run each, direct then through Warden"
    );
    println!(
        "MariaDB {version} on loopback ({} as mysql_native_password, no TLS on either hop)",
        mariadb::APP_USER
    );
    println!(
        "warden: release build, protocol = \"mysql\", policy (default deny, allow reads; writes \
         too for oltp_read_write), masking (3 column rules + all 5 patterns), audit synchronous={sync} \
         (state on {}), sysbench in an enrolled cgroup with no password\n",
        fs_type(&guard.tmp)
    );
    println!(
        "{:<18} {:<7} {:>9} {:>10} {:>10} {:>10} {:>15} {:>7}",
        "workload", "path", "TPS", "QPS", "p95 lat", "vs direct", "proxy CPU/q", "load1"
    );
    let port = db.port().to_string();
    let mut workloads = vec![("oltp_point_select", "ro"), ("oltp_read_only", "ro")];
    if writes {
        workloads.push(("oltp_read_write", "rw"));
    }
    let mut summary = Vec::new();
    let mut policy = "ro";
    let socat = super::start_socat(db.addr(), ",nodelay")?.map(Killed);
    for (workload, wants) in workloads {
        if wants != policy {
            guard.stop();
            std::fs::write(&guard.config, config(wants))?;
            agent = guard.start()?;
            policy = wants;
        }
        let run = |host: &str, port: &str, user: &str, password: &str| {
            let mut args = vec![
                workload.to_owned(),
                format!("--mysql-host={host}"),
                format!("--mysql-port={port}"),
                format!("--mysql-user={user}"),
                format!("--mysql-password={password}"),
                format!("--db-ps-mode={ps}"),
                format!("--threads={threads}"),
                format!("--time={secs}"),
                "--histogram=off".into(),
            ];
            args.extend(common.iter().cloned());
            args.push("run".into());
            args
        };
        let in_cgroup = |cgroup: &Path, args: &[String]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::pg::in_cgroup(cgroup, Path::new(SYSBENCH), &args)
        };
        let direct = in_cgroup(
            &guard.direct,
            &run("127.0.0.1", &port, mariadb::APP_USER, db.password()),
        );
        let d = Figures::measure(direct, Watch::None)?;
        d.print(workload, "direct", None);

        // No password anywhere: Warden answers the handshake itself.
        let mut warden = in_cgroup(&guard.enrolled, &run("127.0.0.1", &port, "workload", ""));
        warden
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent");
        let w = Figures::measure(warden, Watch::Process(agent)).with_context(|| {
            let log = std::fs::read_to_string(guard.tmp.join("warden.log")).unwrap_or_default();
            format!(
                "through Warden; its log ends:\n{}",
                &log[log.len().saturating_sub(4000)..]
            )
        })?;
        w.print(workload, "warden", Some(&d));

        // The non-parsing reference: socat (TCP_NODELAY both ways, as
        // Warden), forking a process per connection (their CPU time is
        // the parent's once reaped).
        let s = match &socat {
            Some(socat) => {
                let (host, port) = super::SOCAT_ADDR
                    .split_once(':')
                    .context("SOCAT_ADDR is host:port")?;
                let relay = in_cgroup(
                    &guard.direct,
                    &run(host, port, mariadb::APP_USER, db.password()),
                );
                let s = Figures::measure(relay, Watch::Reaped(socat.0.id()))?;
                s.print(workload, "socat", Some(&d));
                Some(s)
            }
            None => None,
        };
        summary.push((workload, d, w, s));
    }
    println!(
        "\ngoals (issue 20): Warden >= 60% of direct throughput; Warden CPU/query <= 2x a \
         non-parsing relay's (socat here; socat: {})",
        if socat.is_some() {
            "installed"
        } else {
            "not installed, no reference"
        }
    );
    for (workload, d, w, s) in &summary {
        let cpu = match (w.cpu_us_per_q, s.as_ref().and_then(|s| s.cpu_us_per_q)) {
            (Some(w), Some(s)) if s > 0.0 => format!(
                "CPU/query {w:.1} µs, {:.1}x socat's (goal <= 2x: {})",
                w / s,
                met(w <= 2.0 * s)
            ),
            (Some(w), _) => format!("CPU/query {w:.1} µs"),
            _ => "CPU/query not measured".into(),
        };
        println!(
            "{workload:<18} Warden/direct: TPS {:.1}% (goal >= 60%: {}), QPS {:.1}%, p95 {:+.2} ms; \
             {cpu}; errors {} direct, {} warden",
            100.0 * w.tps / d.tps,
            met(w.tps >= 0.6 * d.tps),
            100.0 * w.qps / d.qps,
            w.p95_ms - d.p95_ms,
            d.errors,
            w.errors,
        );
    }
    warn_if_busy(cpus)?;
    guard.stop();
    Ok(())
}

/// Whose CPU time a run is charged: nobody, a process (all its threads), or
/// a process and its children once reaped (socat's per-connection forks).
#[derive(Clone, Copy)]
enum Watch {
    None,
    Process(u32),
    Reaped(u32),
}

impl Watch {
    /// utime + stime so far (with cutime + cstime for `Reaped`), in ticks.
    fn ticks(self) -> Result<Option<u64>> {
        match self {
            Watch::None => Ok(None),
            Watch::Process(pid) => cpu_ticks(pid).map(Some),
            Watch::Reaped(pid) => {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
                // cutime and cstime: fields 16 and 17, the 14th and 15th
                // after the parenthesised command name.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let children: u64 = rest
                    .split_whitespace()
                    .skip(13)
                    .take(2)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum();
                Ok(Some(cpu_ticks(pid)? + children))
            }
        }
    }
}

/// A helper process killed (and waited for) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// One sysbench run's figures.
struct Figures {
    tps: f64,
    qps: f64,
    p95_ms: f64,
    /// sysbench's "ignored errors" (deadlocks and the like it retried).
    errors: u64,
    /// CPU time of the watched process per query, µs.
    cpu_us_per_q: Option<f64>,
    load1: f64,
}

impl Figures {
    /// Runs sysbench (`cmd`) and reads its summary; with `watch`, also the
    /// CPU time that process used during the run.
    fn measure(mut cmd: Command, watch: Watch) -> Result<Self> {
        let before = watch.ticks()?;
        let out = cmd.output()?;
        if let Watch::Reaped(_) = watch {
            // Let the relay reap its per-connection children.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let after = watch.ticks()?;
        if !out.status.success() {
            bail!("sysbench failed: {}", pgkit::show(&out));
        }
        let f = Self::parse(&String::from_utf8_lossy(&out.stdout))?;
        let queries = f.0;
        let cpu_us_per_q = match (before, after) {
            (Some(b), Some(a)) if queries > 0.0 => {
                Some(a.saturating_sub(b) as f64 * 1e6 / clock_ticks()? as f64 / queries)
            }
            _ => None,
        };
        Ok(Self {
            cpu_us_per_q,
            load1: load_avg()?.0,
            ..f.1
        })
    }

    /// (queries, figures) from sysbench's report.
    fn parse(text: &str) -> Result<(f64, Self)> {
        // "    queries:   14000  (1393.03 per sec.)": the count and the rate.
        let line = |label: &str| -> Result<(f64, f64)> {
            let rest = text
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(label))
                .with_context(|| format!("no {label:?} in sysbench's output:\n{text}"))?;
            let mut words = rest.split_whitespace();
            let count = words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let rate = words
                .next()
                .and_then(|v| v.trim_start_matches('(').parse().ok())
                .unwrap_or(0.0);
            Ok((count, rate))
        };
        let (_, tps) = line("transactions:")?;
        let (queries, qps) = line("queries:")?;
        let (errors, _) = line("ignored errors:")?;
        let (p95_ms, _) = line("95th percentile:")?;
        Ok((
            queries,
            Self {
                tps,
                qps,
                p95_ms,
                errors: errors as u64,
                cpu_us_per_q: None,
                load1: 0.0,
            },
        ))
    }

    fn print(&self, workload: &str, path: &str, direct: Option<&Figures>) {
        let vs = direct.map_or_else(String::new, |d| format!("{:.1}%", 100.0 * self.tps / d.tps));
        let cpu = self
            .cpu_us_per_q
            .map_or_else(String::new, |c| format!("{c:.1} µs"));
        println!(
            "{workload:<18} {path:<7} {:>9.0} {:>10.0} {:>7.2} ms {vs:>10} {cpu:>15} {:>7.2}",
            self.tps, self.qps, self.p95_ms, self.load1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Figures;

    #[test]
    fn reads_sysbench_report() {
        let text = "SQL statistics:\n    queries performed:\n        read:  9800\n        \
                    total:                           14000\n    transactions:                        \
                    1000   (99.50 per sec.)\n    queries:                             14000  \
                    (1393.03 per sec.)\n    ignored errors:                      2      (0.00 per \
                    sec.)\nLatency (ms):\n         95th percentile:                        5.47\n";
        let (q, f) = Figures::parse(text).unwrap();
        assert_eq!(q, 14000.0);
        assert_eq!(f.tps, 99.5);
        assert_eq!(f.qps, 1393.03);
        assert_eq!(f.errors, 2);
        assert_eq!(f.p95_ms, 5.47);
    }
}
