//! `cargo xtask bench http`: wrk (Debian's package) against a throwaway
//! nginx on loopback, small keep-alive GETs, directly and through the real
//! `warden` binary (client in an enrolled cgroup; policy, credential
//! injection, masking of the text body and audit with the shipped
//! durability (`pipelined`, which for HTTP answers after the fsync) all
//! on), interleaved in one run, with nginx itself as a keep-alive reverse
//! proxy (no policy, no audit) as a reference for what an optimised proxy
//! costs on the same machine. Prints requests/s, latency p50/p99, the
//! proxy's CPU time per request and its memory. Asserts nothing.
//!
//! Settings (environment): `WARDEN_BENCH_HTTP_SECS` (per run, default 10),
//! `WARDEN_BENCH_HTTP_CONNS` (keep-alive connections, 16),
//! `WARDEN_BENCH_HTTP_ROUNDS` (direct/warden pairs, 2),
//! `WARDEN_BENCH_HTTP_SYNC` (audit durability, `pipelined`).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Guard;
use super::pg::{clock_ticks, cpu_ticks, env_num, fs_type, machine_facts, warn_if_busy};
use crate::nginx::{NGINX, Nginx};

const WRK: &str = "/usr/bin/wrk";

pub fn run(root: &Path) -> Result<()> {
    let secs = env_num("WARDEN_BENCH_HTTP_SECS", 10)?;
    let conns = env_num("WARDEN_BENCH_HTTP_CONNS", 16)?;
    let rounds = env_num("WARDEN_BENCH_HTTP_ROUNDS", 2)?;
    let sync = std::env::var("WARDEN_BENCH_HTTP_SYNC").unwrap_or_else(|_| "pipelined".into());
    for (what, path) in [("wrk", WRK), ("nginx", NGINX)] {
        if !Path::new(path).exists() {
            bail!("{what} is missing ({path}): run `cargo xtask setup`");
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    machine_facts(cpus)?;
    let threads = (conns as usize).min(cpus).max(1);

    let mut guard = Guard::new(root)?;
    let nginx = Nginx::start(
        &guard.tmp.join("nginx"),
        r#"location / { default_type text/plain; return 200 "hello from nginx 42\n"; }"#,
    )?;
    // A reference: nginx itself as a keep-alive reverse proxy in front of
    // the same nginx (no policy, no audit), i.e. what an optimised C proxy
    // costs on this machine.
    let reference = Nginx::start_with(
        &guard.tmp.join("nginx-proxy"),
        &format!(
            "upstream origin {{ server 127.0.0.1:{}; keepalive 64; }}",
            nginx.port
        ),
        "location / { proxy_pass http://origin; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }",
    )?;
    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let secret = guard.tmp.join("api.token");
    std::fs::write(&secret, "bench-token\n")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let config = guard.agent_toml(listen_port, &sync)
        + &format!(
            r#"
[[target]]
name = "api"
protocol = "http"
address = "127.0.0.1:{port}"

[[account]]
name = "bench"
cgroups = ["{cg}"]

[[grant]]
account = "bench"
target = "api"
policy = "api"
masking = "pii"
credential = {{ kind = "bearer", file = "{secret}" }}

[policy.api]
rules = [
  {{ action = "allow", methods = ["GET"], paths = ["/v1/**"] }},
  {{ action = "block", paths = ["/admin/**"] }},
]

[masking.pii]
patterns = ["card", "email", "ssn", "iban", "token"]
"#,
            port = nginx.port,
            cg = guard.enrolled_cgroup(),
            secret = secret.display(),
        );
    std::fs::write(&guard.config, config)?;
    let agent = guard.start()?;
    let idle_kib = super::status_kib(agent, "VmRSS")?;

    let url = format!("http://127.0.0.1:{}/v1/small", nginx.port);
    let proxy_url = format!("http://127.0.0.1:{}/v1/small", reference.port);
    println!(
        "\nwrk, {conns} keep-alive connections, {threads} threads, {secs} s per run, GET \
         /v1/small (nginx {}: 20-byte text/plain body), {rounds} rounds, direct and warden \
         interleaved",
        nginx.version()
    );
    println!(
        "warden: release build, policy (allow GET /v1/**), bearer credential injected, masking \
         (5 patterns on the text body), one audit request + result event per request, \
         synchronous={sync} (state on {}), client in an enrolled cgroup",
        fs_type(&guard.tmp)
    );
    println!(
        "\n{:<8} {:>12} {:>10} {:>10} {:>10} {:>16}",
        "path", "requests/s", "p50", "p99", "vs direct", "proxy CPU/req"
    );
    let mut direct = Vec::new();
    let mut warden = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..rounds {
        let d = Wrk::run(&guard.direct, &url, threads, conns, secs, None)?;
        d.print("direct", None);
        let w = Wrk::run(&guard.enrolled, &url, threads, conns, secs, Some(agent))?;
        w.print("warden", Some(&d));
        let p = Wrk::run(
            &guard.direct,
            &proxy_url,
            threads,
            conns,
            secs,
            reference.pid(),
        )?;
        p.print("nginx-rp", Some(&d));
        direct.push(d);
        warden.push(w);
        proxied.push(p);
    }
    let mean = |v: &[Wrk]| v.iter().map(|w| w.rps).sum::<f64>() / v.len() as f64;
    let (d, w, p) = (mean(&direct), mean(&warden), mean(&proxied));
    let cpu = |v: &[Wrk]| {
        let c: Vec<f64> = v.iter().filter_map(|w| w.cpu_us_per_req).collect();
        (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64)
    };
    let p99 = |v: &[Wrk]| v.iter().map(|w| w.p99_ms).fold(0.0, f64::max);
    println!(
        "\nmean: direct {d:.0} req/s, warden {w:.0} req/s ({:.1}% of direct), nginx as a \
         reverse proxy (no policy, no audit) {p:.0} req/s ({:.1}% of direct)",
        100.0 * w / d,
        100.0 * p / d
    );
    println!(
        "goals (issue 17): Warden req/s >= nginx's; Warden CPU/req <= 2x nginx's; p99 reported"
    );
    let cpu_line = match (cpu(&warden), cpu(&proxied)) {
        (Some(wc), Some(pc)) if pc > 0.0 => format!(
            "CPU/req {wc:.1} µs = {:.1}x nginx's {pc:.1} µs (goal <= 2x: {})",
            wc / pc,
            if wc <= 2.0 * pc { "met" } else { "MISSED" }
        ),
        _ => "CPU/req not measured".into(),
    };
    println!(
        "keep-alive GET  req/s {:.1}% of nginx's (goal >= 100%: {}), {cpu_line}; worst p99 \
         warden {:.3} ms, nginx {:.3} ms, direct {:.3} ms",
        100.0 * w / p,
        if w >= p { "met" } else { "MISSED" },
        p99(&warden),
        p99(&proxied),
        p99(&direct),
    );
    let busy_kib = super::status_kib(agent, "VmRSS")?;
    let hwm_kib = super::status_kib(agent, "VmHWM")?;
    println!(
        "agent RSS: idle {:.1} MiB, after the runs {:.1} MiB (peak {:.1} MiB)",
        idle_kib as f64 / 1024.0,
        busy_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    let audit_db = guard.tmp.join("state/audit.db");
    if let Ok(m) = std::fs::metadata(&audit_db) {
        let total: f64 = warden.iter().map(|w| w.requests).sum();
        println!(
            "audit store: {:.1} MiB for {total:.0} requests ({:.0} bytes per request, WAL not \
             counted)",
            m.len() as f64 / 1048576.0,
            m.len() as f64 / total.max(1.0)
        );
    }
    warn_if_busy(cpus)?;
    drop(reference);
    drop(nginx);
    guard.stop();
    Ok(())
}

/// One wrk run's figures.
struct Wrk {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    cpu_us_per_req: Option<f64>,
}

impl Wrk {
    /// wrk inside `cgroup`; with `watch`, also that process's CPU time.
    fn run(
        cgroup: &Path,
        url: &str,
        threads: usize,
        conns: u64,
        secs: u64,
        watch: Option<u32>,
    ) -> Result<Self> {
        let args = [
            "-t".to_owned(),
            threads.to_string(),
            "-c".to_owned(),
            conns.to_string(),
            "-d".to_owned(),
            format!("{secs}s"),
            "--latency".to_owned(),
            url.to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = watch.map(cpu_ticks).transpose()?;
        let out = crate::pg::in_cgroup(cgroup, Path::new(WRK), &args).output()?;
        let after = watch.map(cpu_ticks).transpose()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        let requests = text
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("requests in").then(|| n.parse().ok())?
            })
            .with_context(|| format!("no request count in wrk's output: {text}"))?;
        let rps = field(&text, "Requests/sec:")?;
        let p50_ms = duration_ms(&field_str(&text, "50%")?)?;
        let p99_ms = duration_ms(&field_str(&text, "99%")?)?;
        // "Non-2xx or 3xx responses: N" and "Socket errors: …" when any.
        let errors = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let cpu_us_per_req = match (before, after) {
            (Some(b), Some(a)) => {
                let tick_us = 1e6 / clock_ticks()? as f64;
                Some((a - b) as f64 * tick_us / f64::max(requests, 1.0))
            }
            _ => None,
        };
        if text.contains("Socket errors") {
            println!(
                "  (wrk: {})",
                text.lines()
                    .find(|l| l.contains("Socket errors"))
                    .unwrap_or("")
                    .trim()
            );
        }
        Ok(Wrk {
            requests,
            rps,
            p50_ms,
            p99_ms,
            errors,
            cpu_us_per_req,
        })
    }

    fn print(&self, path: &str, direct: Option<&Wrk>) {
        println!(
            "{path:<8} {:>12.0} {:>8.3}ms {:>8.3}ms {:>10} {:>16}{}",
            self.rps,
            self.p50_ms,
            self.p99_ms,
            direct.map_or("-".into(), |d| format!("{:.1}%", 100.0 * self.rps / d.rps)),
            self.cpu_us_per_req
                .map_or("-".into(), |c| format!("{c:.1} µs")),
            if self.errors > 0 {
                format!("  ({} non-2xx answers)", self.errors)
            } else {
                String::new()
            }
        );
    }
}

fn field_str(text: &str, key: &str) -> Result<String> {
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix(key).map(|v| v.trim().to_owned())
        })
        .with_context(|| format!("no {key:?} in wrk's output: {text}"))
}

fn field(text: &str, key: &str) -> Result<f64> {
    let v = field_str(text, key)?;
    v.parse().with_context(|| format!("{key} {v:?}"))
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`.
fn duration_ms(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unreadable duration {v:?}")
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("duration {v:?}"))?
        * scale)
}
