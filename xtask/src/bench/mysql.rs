//! `cargo xtask bench mysql`: sysbench `oltp_point_select`,
//! `oltp_read_only` and `oltp_read_write` against a throwaway MariaDB
//! (`pgkit::mariadb`) directly and through the real `warden` binary
//! (`protocol = "mysql"`, policy + masking + audit, sysbench in an enrolled
//! cgroup holding no password), in one run on this host. Prints TPS, QPS,
//! latency p95 and the agent's CPU time per query (utime + stime of the
//! agent during the run / queries), with the Warden / direct ratios.
//! Asserts nothing.
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
    // Its watchdog stops the server and removes its directory once this
    // process has exited, whatever happens here.
    let db = MariaDb::start();
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
        "workload", "path", "TPS", "QPS", "p95 lat", "vs direct", "warden CPU/q", "load1"
    );
    let port = db.port().to_string();
    let mut workloads = vec![("oltp_point_select", "ro"), ("oltp_read_only", "ro")];
    if writes {
        workloads.push(("oltp_read_write", "rw"));
    }
    let mut summary = Vec::new();
    let mut policy = "ro";
    for (workload, wants) in workloads {
        if wants != policy {
            guard.stop();
            std::fs::write(&guard.config, config(wants))?;
            agent = guard.start()?;
            policy = wants;
        }
        let mut args: Vec<String> = vec![
            workload.into(),
            "--mysql-host=127.0.0.1".into(),
            format!("--mysql-port={port}"),
            format!("--db-ps-mode={ps}"),
            format!("--threads={threads}"),
            format!("--time={secs}"),
            "--report-interval=0".into(),
            "--histogram=off".into(),
        ];
        args.extend(common.iter().cloned());
        let mut direct_args = args.clone();
        direct_args.push(format!("--mysql-user={}", mariadb::APP_USER));
        direct_args.push(format!("--mysql-password={}", db.password()));
        direct_args.push("run".into());
        let direct_args: Vec<&str> = direct_args.iter().map(String::as_str).collect();
        let direct = crate::pg::in_cgroup(&guard.direct, Path::new(SYSBENCH), &direct_args);
        let d = Figures::measure(direct, None)?;
        d.print(workload, "direct", None);

        // No password anywhere: Warden answers the handshake itself.
        args.push("--mysql-user=workload".into());
        args.push("--mysql-password=".into());
        args.push("run".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut warden = crate::pg::in_cgroup(&guard.enrolled, Path::new(SYSBENCH), &args);
        warden
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent");
        let w = Figures::measure(warden, Some(agent)).with_context(|| {
            let log = std::fs::read_to_string(guard.tmp.join("warden.log")).unwrap_or_default();
            format!("through Warden; its log ends:\n{}", &log[log.len().saturating_sub(4000)..])
        })?;
        w.print(workload, "warden", Some(&d));
        summary.push((workload, d, w));
    }
    println!(
        "\ngoals (issue 20): >= 60% of direct throughput; agent CPU/query within 2x a \
         non-parsing relay's (see `cargo xtask bench pg` for PgBouncer's CPU/tx on this host)"
    );
    for (workload, d, w) in &summary {
        let cpu = w
            .cpu_us_per_q
            .map_or_else(|| "not measured".into(), |c| format!("{c:.1} µs"));
        println!(
            "{workload:<18} Warden/direct: TPS {:.1}% (goal >= 60%: {}), QPS {:.1}%, p95 {:+.2} ms; \
             agent CPU/query {cpu}; errors {} direct, {} warden",
            100.0 * w.tps / d.tps,
            if w.tps >= 0.6 * d.tps { "met" } else { "MISSED" },
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
    fn measure(mut cmd: Command, watch: Option<u32>) -> Result<Self> {
        let before = watch.map(cpu_ticks).transpose()?;
        let out = cmd.output()?;
        let after = watch.map(cpu_ticks).transpose()?;
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
