//! Attacker round on the kernel side (issue 16): an unprivileged enrolled
//! workload (by cgroup and by uid) tries to reach a protected target without
//! the proxy. Each test runs the real `warden` binary with its programs
//! attached at the test's own cgroup; clients run in cgroups the test creates
//! (`tests/support/kernel_client.py`).
//!
//! Run as root, one at a time: `cargo test -p warden --test kernel_attack --
//! --test-threads=1`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A UDP echo server counting the datagrams it received.
struct UdpEcho {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
}

impl UdpEcho {
    fn start(addr: SocketAddr) -> UdpEcho {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("udp bind {addr}: {e}"));
        let addr = s.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, peer)) = s.recv_from(&mut buf) {
                n.fetch_add(1, Ordering::SeqCst);
                let _ = s.send_to(&buf[..len], peer);
            }
        });
        UdpEcho { addr, seen }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Kernel refusals (OCSF Process Activity) of `kind`, waiting up to 5 s for `want`.
fn kernel_events(env: &TestEnv, kind: &str, want: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let evs: Vec<Value> = env
            .audit_events()
            .into_iter()
            .filter(|e| e["class_uid"] == 1007 && e.to_string().contains(kind))
            .collect();
        if evs.len() >= want || start.elapsed() > Duration::from_secs(5) {
            return evs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bypass (closed): Warden relays TCP only, and the connect programs let
/// every non-stream socket through, so an enrolled workload reached a
/// protected target's UDP port (HTTP/3 on an API's 443, a server's UDP side)
/// directly, with no audit event — by `sendto()` on an unconnected socket or
/// `connect()` + `send()`, in IPv4, IPv6 and IPv4-mapped spellings, and
/// through the unspecified address. Now each is refused with EPERM and
/// audited as `datagram_to_target`; other UDP of enrolled workloads and all
/// UDP of others is untouched.
#[test]
fn datagrams_to_a_target_are_refused_and_audited() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let other = env.cgroup("other");
    let db4 = EchoServer::start("127.0.0.2:0");
    let db6 = EchoServer::start("[::1]:0");
    let u4 = UdpEcho::start(db4.addr);
    let u6 = UdpEcho::start(db6.addr);
    let free = UdpEcho::start("127.0.0.2:0".parse().unwrap());
    let uid = 64_000 + (std::process::id() % 1000);
    env.write_config(&format!(
        "{}{}{}{}{}",
        env.agent_table(false, ""),
        tcp_target("db4", &db4.addr.to_string()),
        tcp_target("db6", &db6.addr.to_string()),
        account("app", &[&app], &[], &["db4", "db6"]),
        account("batch", &[], &[uid], &["db4", "db6"]),
    ));
    env.start();
    let (p4, p6) = (db4.addr.port().to_string(), db6.addr.port().to_string());
    let uid_s = uid.to_string();
    let cases: [(&str, &str, bool); 5] = [
        ("127.0.0.2", &p4, false),
        ("::ffff:127.0.0.2", &p4, false),
        ("::1", &p6, false),
        ("0.0.0.0", &p6, true),
        ("::", &p6, true),
    ];
    let mut refused = 0;
    for (who, cg, extra) in [
        ("cgroup", &app, vec![]),
        ("uid", &other, vec!["--uid", uid_s.as_str()]),
    ] {
        for (host, port, unspecified) in cases {
            for connected in [false, true] {
                if unspecified && host == "0.0.0.0" {
                    // 0.0.0.0 stands for 127.0.0.1, not a target here.
                    continue;
                }
                let mut args = vec!["udp", host, port];
                if connected {
                    args.push("--connected");
                }
                args.extend(extra.iter().copied());
                let (b4, b6) = (u4.seen(), u6.seen());
                let r = env.kernel_client(cg, &args);
                assert_eq!(
                    r["errno"], 1,
                    "{who}: UDP to {host}:{port} (connected: {connected}) not refused with EPERM: {r}"
                );
                assert_eq!(
                    (u4.seen(), u6.seen()),
                    (b4, b6),
                    "{who}: a datagram reached the target ({host})"
                );
                refused += 1;
            }
        }
    }
    // Every refusal is audited (individually: fewer than 20 a second here).
    let evs = kernel_events(&env, "datagram_to_target", refused);
    assert!(
        evs.len() >= refused,
        "{} of {refused} refusals audited: {evs:#?}\n{}",
        evs.len(),
        env.log()
    );
    assert!(
        evs.iter().any(|e| e.to_string().contains("db4")),
        "the target is named: {evs:#?}"
    );

    // Not a target: the enrolled workload's other UDP passes.
    let fp = free.addr.port().to_string();
    let r = env.kernel_client(&app, &["udp", "127.0.0.2", &fp]);
    assert_eq!(r["ok"], true, "enrolled UDP to a non-target: {r}");
    // Not enrolled: untouched.
    let r = env.kernel_client(&other, &["udp", "127.0.0.2", &p4]);
    assert_eq!(r["ok"], true, "non-enrolled UDP: {r}");
    let r = env.kernel_client(&other, &["udp", "::1", &p6, "--connected"]);
    assert_eq!(r["ok"], true, "non-enrolled UDP: {r}");
}

/// Held: stream connects that take another path into the kernel are still
/// decided by the connect programs — an `IPPROTO_MPTCP` socket (the hook runs
/// on its first subflow), `sendto(MSG_FASTOPEN)` without `connect()`, a socket
/// disconnected with `AF_UNSPEC` after a connection elsewhere and connected
/// again, and a sockaddr longer than `sockaddr_in`. Each is relayed through
/// the agent (audited, never a direct connection), by cgroup and by uid.
#[test]
fn stream_connect_variants_are_redirected() {
    let mut env = TestEnv::new();
    let app = env.cgroup("app");
    let other = env.cgroup("other");
    let db = EchoServer::start("127.0.0.2:0");
    let elsewhere = EchoServer::start("127.0.0.3:0");
    let uid = 64_000 + (std::process::id() % 1000);
    env.write_config(&format!(
        "{}{}{}{}",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
        account("app", &[&app], &[], &["db"]),
        account("batch", &[], &[uid], &["db"]),
    ));
    env.start();
    let p = db.addr.port().to_string();
    let pe = elsewhere.addr.port().to_string();
    let uid_s = uid.to_string();
    let attempts: [Vec<&str>; 6] = [
        vec!["mptcp", "127.0.0.2", &p],
        vec!["mptcp", "::ffff:127.0.0.2", &p],
        vec!["tfo-sendto", "127.0.0.2", &p],
        vec!["tfo-sendto", "::ffff:127.0.0.2", &p],
        vec!["unspec-reconnect", "127.0.0.3", &pe, "127.0.0.2", &p],
        vec!["long-sockaddr", "127.0.0.2", &p],
    ];
    for (who, cg, extra) in [
        ("cgroup", &app, vec![]),
        ("uid", &other, vec!["--uid", uid_s.as_str()]),
    ] {
        for a in &attempts {
            let mut args = a.clone();
            args.extend(extra.iter().copied());
            let r = env.kernel_client(cg, &args);
            assert_eq!(r["ok"], true, "{who}: {a:?}: {r}\n{}", env.log());
            let lp = r["local_port"].as_u64().unwrap() as u16;
            assert!(
                !db.saw_direct_from(lp),
                "{who}: {a:?} reached the target directly"
            );
            let evs = env.events_for_client_port(lp, 1);
            assert!(!evs.is_empty(), "{who}: {a:?}: no audit event");
        }
    }
}

/// Bypass (closed): an exe pin checked `/proc/<pid>/exe`, which an
/// unprivileged process can point at any file it may execute without an
/// exec: in a new user namespace it has CAP_CHECKPOINT_RESTORE, unmaps its
/// own executable and calls `prctl(PR_SET_MM, PR_SET_MM_MAP)` with `exe_fd`
/// (tests/support/forge_exe.c, preloaded into `/usr/bin/true` as `nobody`).
/// Its connection then passed the pin to `/usr/bin/sleep`. Now the kernel
/// records the file each process exec'ed (raw `sched_process_exec`,
/// inherited at `sched_process_fork`) and the proxy refuses a caller whose
/// `/proc/<pid>/exe` is another file, as `identity_mismatch`, naming no
/// executable in the audit.
#[test]
fn exe_forged_without_exec_is_refused_as_identity_mismatch() {
    let Some(so) = build_forge() else {
        return;
    };
    let mut env = TestEnv::new();
    let (db, app) = pinned_to_sleep(&mut env);
    let r = forge(&env, &app, &so, &db, "", &[]);
    let lp = r["local_port"].as_u64().unwrap() as u16;
    assert!(lp != 0 && !db.saw_direct_from(lp), "not redirected: {r}");
    assert_eq!(r["ok"], false, "the forged caller was served: {r}");
    env.assert_unconfirmed_exe(lp, "did not exec");
}

/// `tests/support/forge_exe.c` as a shared object to preload.
fn build_forge() -> Option<TempBin> {
    build_c("forge_exe.c", &["-shared", "-fPIC", "-Wl,-z,now"])
}

/// A target `db` and an account `pinned` (a new cgroup) pinned to
/// `/usr/bin/sleep`; the agent started.
fn pinned_to_sleep(env: &mut TestEnv) -> (EchoServer, String) {
    let app = env.cgroup("app");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}[[account]]\nname = \"pinned\"\ncgroups = [\"{app}\"]\ntargets = [\"db\"]\nexe = {{ path = \"/usr/bin/sleep\" }}\n",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
    ));
    env.start();
    (db, app)
}

/// Runs `/usr/bin/true` as `nobody` in cgroup `app` with the forge preloaded
/// (its `/proc/self/exe` pointed at `/usr/bin/sleep`, then a connection to
/// `db`), with `extra` environment variables; gives its JSON, after checking
/// that the forgery itself worked.
fn forge(
    env: &TestEnv,
    app: &str,
    so: &TempBin,
    db: &EchoServer,
    before: &str,
    extra: &[(&str, &str)],
) -> Value {
    let procs = env.cg_dir(app).join("cgroup.procs");
    let extra: String = extra.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' || exit 1; {before} exec runuser -u nobody -- env LD_PRELOAD='{}' FORGE_EXE=/usr/bin/sleep FORGE_HOST=127.0.0.2 FORGE_PORT={} {extra}/usr/bin/true",
            procs.display(),
            so.path(),
            db.addr.port()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "forge output not JSON ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // The attack itself worked: /proc/<pid>/exe named the pinned binary.
    assert_eq!(r["prctl"], 0, "{r}");
    assert_eq!(r["exe"], "/usr/bin/sleep", "{r}");
    r
}

/// Bypass (closed): uid enrollment matched the caller's uid as the initial
/// namespace sees it, and a user with subordinate uids (`/etc/subuid`, mapped
/// by the setuid `newuidmap` into a user namespace it creates) becomes one of
/// those by `setuid(0)` inside: not enrolled, so it connected directly. The
/// test writes the map itself, as `newuidmap` would. Now a process in a user
/// namespace created (at any depth) by an enrolled uid is enrolled as that
/// uid.
#[test]
fn user_namespace_uid_of_an_enrolled_user_is_enrolled() {
    use std::io::{BufRead, Write};
    let mut env = TestEnv::new();
    let other = env.cgroup("other");
    let db = EchoServer::start("127.0.0.2:0");
    let uid = 64_000 + (std::process::id() % 1000);
    let sub = 200_000 + (std::process::id() % 1000) * 100;
    env.write_config(&format!(
        "{}{}{}",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
        account("batch", &[], &[uid], &["db"]),
    ));
    env.start();
    let procs = env.cg_dir(&other).join("cgroup.procs");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec /usr/bin/python3 -u \"$0\" \"$@\"",
            procs.display()
        ))
        .arg(kernel_script())
        .args([
            "userns-connect",
            "127.0.0.2",
            &db.addr.port().to_string(),
            "--uid",
            &uid.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: u32 = line
        .strip_prefix("unshared ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no namespace: {line}"));
    // What newuidmap does for a user's subordinate range.
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {sub} 1\n")).unwrap();
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {sub} 1\n")).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = child.wait();
    let r: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(r["ok"], true, "{r}");
    let lp = r["local_port"].as_u64().unwrap() as u16;
    assert!(
        !db.saw_direct_from(lp),
        "uid {sub} (uid 0 in a namespace of enrolled uid {uid}) connected directly: {r}"
    );
    let evs = env.events_for_client_port(lp, 1);
    assert!(!evs.is_empty(), "no audit event: {r}\n{}", env.log());
}

/// Sets `kernel.pid_max` for the test and restores the value it found when
/// dropped (also when the test fails).
struct PidMax(String);

impl PidMax {
    const PATH: &'static str = "/proc/sys/kernel/pid_max";

    fn raise_to(v: u64) -> PidMax {
        let old = std::fs::read_to_string(Self::PATH)
            .unwrap()
            .trim()
            .to_owned();
        std::fs::write(Self::PATH, v.to_string()).unwrap();
        PidMax(old)
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PATH, &self.0) {
            eprintln!("could not restore kernel.pid_max to {}: {e}", self.0);
        }
    }
}

/// Builds `tests/support/<src>` with `cc ARGS` into a temporary file removed
/// on drop; `None` (the test skips) without a C compiler.
fn build_c(src: &str, args: &[&str]) -> Option<TempBin> {
    use std::os::unix::fs::PermissionsExt;
    let out = std::env::temp_dir().join(format!(
        "warden-{}-{}",
        src.trim_end_matches(".c"),
        std::process::id()
    ));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/support")
        .join(src);
    let built = std::process::Command::new("cc")
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(&path)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: no C compiler to build {}", path.display());
        return None;
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(TempBin(out))
}

struct TempBin(std::path::PathBuf);

impl TempBin {
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Processes the workload spawns before it connects: more than the 65,536
/// the kernel's per-process maps used to hold.
const CHURN: u64 = 120_000;

/// Bypass (closed): the exec'ed-file check (and the exec-after-connect
/// check) kept each process's record in an LRU map of 65,536 processes.
/// With `kernel.pid_max` above that (systemd sets 4,194,304; the test raises
/// it and restores it after), the forging process of
/// [`exe_forged_without_exec_is_refused_as_identity_mismatch`] — a fork
/// that never exec'ed, so its record was inserted once and never marked
/// recently used — waits while a sibling runs 120,000 short-lived processes
/// that each fork and exec twice, then forges its exe and connects: their
/// records evicted its own, the check found nothing to compare, and
/// `/usr/bin/true` passed the pin to `/usr/bin/sleep` (measured 2026-12-08
/// before the fix: served). Now a process's record is kept in a hash map
/// that never evicts (sized to the most processes the kernel allows,
/// deleted when the process exits), and a live caller without a record is
/// refused.
#[test]
fn exec_file_record_cannot_be_evicted_by_spawning_processes() {
    let (Some(so), Some(churn), Some(exit0)) = (
        build_forge(),
        build_c("churn.c", &["-O2"]),
        build_c("exit0.c", &["-O2", "-static", "-nostdlib"]),
    ) else {
        return;
    };
    let _pid_max = PidMax::raise_to(4_194_304);
    let mut env = TestEnv::new();
    let (db, app) = pinned_to_sleep(&mut env);
    let done = std::env::temp_dir().join(format!("warden-churned-{}", std::process::id()));
    let _done = TempBin(done.clone());
    let _ = std::fs::remove_file(&done);
    let done = done.to_str().unwrap();
    // A sibling runs the churn once the forging process has connected.
    let before = format!(
        "{{ sleep 2; {} {CHURN} {} > '{done}.tmp'; mv '{done}.tmp' '{done}'; }} &",
        churn.path(),
        exit0.path()
    );
    let r = forge(&env, &app, &so, &db, &before, &[("FORGE_WAIT", done)]);
    assert_eq!(r["churned"], CHURN, "the churn did not run: {r}");
    let lp = r["local_port"].as_u64().unwrap() as u16;
    assert!(lp != 0 && !db.saw_direct_from(lp), "not redirected: {r}");
    assert_eq!(
        r["ok"], false,
        "the forged caller evicted its exec record and was served: {r}"
    );
    env.assert_unconfirmed_exe(lp, "did not exec");
}

/// Entries of a pinned map of the running agent (`bpftool`), or `None`.
fn map_entries(env: &TestEnv, name: &str) -> Option<usize> {
    let pin = env
        .pin_dir
        .join(format!("v{}", warden_common::LAYOUT_VERSION))
        .join(name);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&pin)
        .output()
        .ok()?;
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .ok()
        .map(|v| v.len())
}

/// Measurement (issue 16, kernel side): can one account's connections
/// crowd another account's out of the kernel's connection records
/// (`WARDEN_PENDING`, `WARDEN_ORIG_DST`, LRU maps of 65,536)? Account
/// `flood` opens and at once resets 70,000 redirected connections as fast
/// as one process can, while account `victim` connects every 100 ms; the
/// test reports the victim's failures and the most records the maps held
/// (sampled every 200 ms), and asserts only that the flood ran. Ignored by
/// default (about a minute); run by hand:
/// `cargo test -p warden --test kernel_attack -- --ignored --test-threads=1 connection_record_flood`.
#[test]
#[ignore = "measurement, about a minute; run by hand"]
fn connection_record_flood_by_one_account_is_measured() {
    use std::sync::atomic::AtomicBool;
    let mut env = TestEnv::new();
    let flood = env.cgroup("flood");
    let victim = env.cgroup("victim");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}{}{}",
        env.agent_table(false, ""),
        tcp_target("db", &db.addr.to_string()),
        account("flood", &[&flood], &[], &["db"]),
        account("victim", &[&victim], &[], &["db"]),
    ));
    env.start();
    let port = db.addr.port().to_string();
    let done = AtomicBool::new(false);
    let (flooded, (ok, failed, errors), most) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut most = (0, 0);
            while !done.load(Ordering::SeqCst) {
                let p = map_entries(&env, "WARDEN_PENDING").unwrap_or(0);
                let o = map_entries(&env, "WARDEN_ORIG_DST").unwrap_or(0);
                most = (most.0.max(p), most.1.max(o));
                std::thread::sleep(Duration::from_millis(200));
            }
            most
        });
        let victims = s.spawn(|| {
            let (mut ok, mut failed, mut errors) = (0, 0, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let r = env.kernel_client(&victim, &["connect", "127.0.0.2", &port]);
                if r["ok"] == true {
                    ok += 1;
                } else {
                    failed += 1;
                    errors.push(r["error"].to_string());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed, errors)
        });
        let r = env.kernel_client(&flood, &["flood", "127.0.0.2", &port, "70000"]);
        done.store(true, Ordering::SeqCst);
        (r, victims.join().unwrap(), sampler.join().unwrap())
    });
    let unredirected = env
        .audit_events()
        .into_iter()
        .filter(|e| e.to_string().contains("unredirected"))
        .count();
    eprintln!(
        "MEASURED flood={flooded} victim_ok={ok} victim_failed={failed} most_pending={} most_orig_dst={} unredirected_events={unredirected} errors={errors:?}",
        most.0, most.1
    );
    assert!(flooded["opened"].as_u64().unwrap_or(0) > 0, "{flooded}");
}

/// Bound (issue 16, kernel side): the connection records the kernel keeps
/// until the proxy's accept (`WARDEN_PENDING`, `WARDEN_ORIG_DST`, LRU maps
/// of 65,536) were written at every redirected connect with no limit, so
/// one account could push another account's records out and have its
/// connections refused as unredirected. Now each account may make at most
/// `max_connects_per_account_per_sec` redirected connects a second
/// (counted in the connect programs); beyond it `connect()` fails with
/// EPERM and the refusal is audited as `connect_rate`, while another
/// account's connections are untouched. Here the limit is 100 and one
/// account opens 1,500 connections as fast as it can.
#[test]
fn connect_rate_of_one_account_is_bounded_and_audited() {
    use std::sync::atomic::AtomicBool;
    let mut env = TestEnv::new();
    let flood = env.cgroup("flood");
    let victim = env.cgroup("victim");
    let db = EchoServer::start("127.0.0.2:0");
    env.write_config(&format!(
        "{}{}{}{}",
        env.agent_table(false, "max_connects_per_account_per_sec = 100\n"),
        tcp_target("db", &db.addr.to_string()),
        account("flood", &[&flood], &[], &["db"]),
        account("victim", &[&victim], &[], &["db"]),
    ));
    env.start();
    let port = db.addr.port().to_string();
    let done = AtomicBool::new(false);
    let (flooded, victims) = std::thread::scope(|s| {
        let victims = s.spawn(|| {
            let mut results = Vec::new();
            while !done.load(Ordering::SeqCst) || results.is_empty() {
                results.push(env.kernel_client(&victim, &["connect", "127.0.0.2", &port]));
            }
            results
        });
        let r = env.kernel_client(&flood, &["flood", "127.0.0.2", &port, "1500"]);
        done.store(true, Ordering::SeqCst);
        (r, victims.join().unwrap())
    });
    let (opened, failed) = (
        flooded["opened"].as_u64().unwrap(),
        flooded["failed"].as_u64().unwrap(),
    );
    let per_sec = (opened + failed) as f64 / flooded["seconds"].as_f64().unwrap();
    assert!(
        failed > 0,
        "1,500 connects at {per_sec:.0}/s under a limit of 100/s were never refused: {flooded}"
    );
    // At most the limit per started second (and a few over: the count is
    // not atomic across CPUs).
    let seconds = flooded["seconds"].as_f64().unwrap().ceil() as u64 + 1;
    assert!(
        opened <= seconds * 100 + 20,
        "{opened} connects passed in {seconds} s under a limit of 100/s: {flooded}"
    );
    for r in &victims {
        assert_eq!(r["ok"], true, "another account's connection failed: {r}");
    }
    let evs = kernel_events(&env, "connect_rate", 1);
    assert!(
        !evs.is_empty(),
        "the refusals are not audited\n{}",
        env.log()
    );
}
