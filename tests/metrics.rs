//! Prometheus metrics through the real binary: traffic from an enrolled
//! cgroup (a relayed and a refused TCP connection, an allowed and a denied
//! HTTP request), then the `/metrics` endpoint is linted with `promtool`,
//! read directly, and scraped by a real Prometheus (Debian's package) whose
//! HTTP API the test queries for the series. Labels must never carry what a
//! workload sent (paths, values).
//!
//! Run as root: `cargo test -p warden --test metrics -- --test-threads=1`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A path only the workload knows; it must not appear in the exposition.
const SECRET_PATH: &str = "/private-3f9c/customer-4711";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` on loopback: the HTTP upstream.
fn http_upstream(dir: &std::path::Path) -> (Kill, u16) {
    let port = free_port("127.0.0.1");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    let child = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Kill(child), port)
}

/// GET (or another method) through Warden from inside `cgroup`; the status.
fn http_in(env: &TestEnv, cgroup: &str, method: &str, url: &str) -> u16 {
    let procs = env.cg_dir(cgroup).join("cgroup.procs");
    let script = "import sys, urllib.request, urllib.error\n\
                  req = urllib.request.Request(sys.argv[2], method=sys.argv[1])\n\
                  try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n\
                  except urllib.error.HTTPError as e:\n    print(e.code)\n";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec /usr/bin/python3 -c \"$0\" \"$@\"",
            procs.display()
        ))
        .arg(script)
        .args([method, url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "http client: {} / {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The bearer token of the metrics endpoint in the tests' configuration.
const METRICS_TOKEN: &str = "scrape-token-0123";

fn scrape(port: u16) -> (String, String) {
    scrape_with(port, &format!("Authorization: Bearer {METRICS_TOKEN}\r\n"))
}

fn scrape_with(port: u16, headers: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample `line_prefix` (name and labels exactly as
/// rendered), if present.
fn sample(body: &str, line_prefix: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Asks Prometheus' HTTP API for `query` until it returns a series.
fn prom_query(port: u16, query: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let out = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, json, urllib.request, urllib.parse\n\
                 q = urllib.parse.urlencode({'query': sys.argv[2]})\n\
                 print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/api/v1/query?{q}', timeout=5).read().decode())",
                &port.to_string(),
                query,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            if !result.is_empty() {
                return result;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "Prometheus has no series for {query}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_scrapes_counters_gauges_and_histograms_without_workload_data() {
    let mut env = TestEnv::new();
    let db = EchoServer::start("127.0.0.1:0");
    let billing = EchoServer::start("127.0.0.1:0");
    let (_web, web_port) = http_upstream(&env.tmp.path().join("www"));
    let app = env.cgroup("app");
    let token = env.tmp.path().join("api.token");
    std::fs::write(&token, "metrics-test-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let metrics_port = free_port("127.0.0.1");
    let metrics_token = env.tmp.path().join("metrics.token");
    std::fs::write(&metrics_token, format!("{METRICS_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&metrics_token, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.write_config(&format!(
        r#"{agent}
[[target]]
name = "db"
protocol = "tcp"
address = "{db}"

[[target]]
name = "billing"
protocol = "tcp"
address = "{billing}"

[[target]]
name = "api"
protocol = "http"
address = "127.0.0.1:{web_port}"

[[account]]
name = "app"
cgroups = ["{app}"]
targets = ["db"]

[[grant]]
account = "app"
target = "api"
policy = "api"
credential = {{ kind = "bearer", file = "{token}" }}

[policy.api]
default = "deny"
rules = [ {{ action = "allow", methods = ["GET"], paths = ["/hello.txt"] }} ]

[metrics]
listen = "127.0.0.1:{metrics_port}"
token_file = "{metrics_token}"
"#,
        agent = env.agent_table(false, ""),
        db = db.addr,
        billing = billing.addr,
        token = token.display(),
        metrics_token = metrics_token.display(),
    ));
    env.start();

    // Traffic: a relayed and a refused connection, an allowed and a denied
    // request (the denied one to a path that must stay out of the labels).
    assert!(
        env.client(&app, "127.0.0.1", db.addr.port(), 1000, None)
            .ok()
    );
    assert!(
        !env.client(&app, "127.0.0.1", billing.addr.port(), 10, None)
            .ok()
    );
    let base = format!("http://127.0.0.1:{web_port}");
    assert_eq!(
        http_in(&env, &app, "GET", &format!("{base}/hello.txt")),
        200
    );
    assert_eq!(
        http_in(
            &env,
            &app,
            "GET",
            &format!("{base}{SECRET_PATH}?ssn=123-45-6789")
        ),
        403
    );

    // Without the token (any local user, enrolled workloads included):
    // nothing but 401.
    for headers in ["", "Authorization: Bearer wrong\r\n"] {
        let (head, body) = scrape_with(metrics_port, headers);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(!body.contains("warden_"), "{body}");
    }
    // The exposition, read directly.
    let (head, body) = scrape(metrics_port);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let want = [
        (
            "warden_connections_total{account=\"app\",target=\"db\",activity=\"open\",decision=\"allowed\"}",
            1.0,
        ),
        (
            "warden_http_requests_total{account=\"app\",target=\"api\",decision=\"allowed\"}",
            1.0,
        ),
        (
            "warden_http_requests_total{account=\"app\",target=\"api\",decision=\"denied\"}",
            1.0,
        ),
        (
            "warden_refusals_total{kind=\"http\",reason=\"denied\"}",
            1.0,
        ),
        (
            "warden_refusals_total{kind=\"connection\",reason=\"target_not_granted\"}",
            1.0,
        ),
    ];
    for (line, value) in want {
        assert_eq!(sample(&body, line), Some(value), "{line} in\n{body}");
    }
    for name in [
        "warden_audit_commit_seconds_count",
        "warden_audit_store_bytes",
        "warden_audit_durable_seq",
        "warden_approvals_pending",
        "warden_bpf_programs_attached",
        "warden_bpf_map_entries{map=\"enrolled_cgroups\"}",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        let v = sample(&body, name).unwrap_or_else(|| panic!("{name} missing in\n{body}"));
        assert!(v >= 0.0);
    }
    assert!(sample(&body, "warden_audit_commit_seconds_count").unwrap() >= 3.0);
    assert_eq!(
        sample(&body, "warden_decision_seconds_count{protocol=\"http\"}"),
        Some(2.0),
        "{body}"
    );
    assert!(sample(&body, "warden_bpf_map_entries{map=\"enrolled_cgroups\"}").unwrap() >= 1.0);
    assert!(sample(&body, "warden_bpf_programs_attached").unwrap() >= 2.0);
    for leak in [
        "private-3f9c",
        "customer-4711",
        "123-45-6789",
        "metrics-test-token",
    ] {
        assert!(
            !body.contains(leak),
            "{leak} leaked into the metrics:\n{body}"
        );
    }

    // promtool lints names, types and help texts.
    let mut lint = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Only GET/HEAD /metrics is served.
    let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");

    // A real Prometheus scrapes it.
    let prom_dir = env.tmp.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_port = free_port("127.0.0.1");
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: warden\n    \
             authorization:\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            metrics_token.display()
        ),
    )
    .unwrap();
    let _prom = Kill(
        Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let up = prom_query(prom_port, "up{job=\"warden\"} == 1");
    assert_eq!(up.len(), 1, "{up:?}");
    let conns = prom_query(
        prom_port,
        "warden_connections_total{account=\"app\",target=\"db\",activity=\"open\"}",
    );
    assert_eq!(conns[0]["value"][1], "1", "{conns:?}");
    let denied = prom_query(
        prom_port,
        "warden_http_requests_total{target=\"api\",decision=\"denied\"}",
    );
    assert_eq!(denied[0]["value"][1], "1", "{denied:?}");
    let p99 = prom_query(
        prom_port,
        "histogram_quantile(0.99, sum by (le) (warden_audit_commit_seconds_bucket))",
    );
    let v: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(v > 0.0 && v <= 5.0, "audit commit p99 {v}");
    let rss = prom_query(prom_port, "process_resident_memory_bytes{job=\"warden\"}");
    let rss: f64 = rss[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(rss > 1e6, "rss {rss}");

    // Every query of the shipped Grafana dashboard is valid PromQL that
    // Prometheus evaluates over these series.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            let out = Command::new("/usr/bin/python3")
                .args([
                    "-c",
                    "import sys, urllib.request, urllib.parse, urllib.error\n\
                     q = urllib.parse.urlencode({'query': sys.argv[2]})\n\
                     try:\n    print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/api/v1/query?{q}', timeout=5).read().decode())\n\
                     except urllib.error.HTTPError as e:\n    print(e.read().decode())",
                    &prom_port.to_string(),
                    &expr,
                ])
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("{expr}: {e}: {}", String::from_utf8_lossy(&out.stderr))
            });
            assert_eq!(v["status"], "success", "{}: {expr}: {v}", panel["title"]);
        }
    }
}

#[test]
fn a_non_loopback_metrics_address_needs_allow_remote() {
    let env = TestEnv::new();
    // Without a token, or saying none is wanted: refused.
    env.write_config(&format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
        env.agent_table(false, "")
    ));
    let out = env.warden(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("metrics.listen") && err.contains("token_file"),
        "{err}"
    );
    env.write_config(&format!(
        "{}\n[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_unauthenticated = true\n",
        env.agent_table(false, "")
    ));
    let out = env.warden(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("metrics.listen") && err.contains("allow_remote"),
        "{err}"
    );
    env.write_config(&format!(
        "{}\n[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\nallow_unauthenticated = true\n",
        env.agent_table(false, "")
    ));
    let out = env.warden(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
