//! The demo's PostgreSQL act: a throwaway PostgreSQL 15 (`pgkit`: loopback,
//! SCRAM, TLS), Warden restarted with `config/demo.toml` plus a `postgres`
//! target and a read-only grant for the /warden-demo/reports-job cgroup
//! (the configuration is written to the demo's state dir), and a workload
//! there that holds no password: an allowed query, a masked e-mail, a
//! refused DELETE (SQLSTATE 42501), then `warden audit tail` and `warden
//! audit replay` of that session.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use pgkit::{PgOptions, PgServer};

use super::{Cleanup, STATE, step};

/// The workload's cgroup under the demo's cgroup.
pub const CGROUP: &str = "reports-job";
const ACCOUNT: &str = "reports-job";

/// What the workload runs, in one psql session.
const STATEMENTS: [&str; 3] = [
    "SELECT count(*) AS orders, sum(amount) AS total FROM orders",
    "SELECT id, name, email FROM customers ORDER BY id LIMIT 3",
    "DELETE FROM orders WHERE id = 1",
];

pub fn act(root: &Path, guard: &mut Cleanup, mount: &Path) -> Result<()> {
    println!("\n\n######## PostgreSQL act");
    step("a throwaway PostgreSQL 15 on loopback (SCRAM passwords, TLS)");
    let pg = PgServer::start(PgOptions {
        max_connections: 50,
        stream_rows: 10,
        log_connections: false,
        extra_conf: String::new(),
    });
    println!(
        "   PostgreSQL on {}: database {}, role {} (read-only), tables customers, orders, …",
        pg.addr(),
        pgkit::DB,
        pgkit::ORDERS_RO
    );

    let dir = Path::new(STATE).join("pg");
    std::fs::create_dir_all(&dir)?;
    let cgroup = mount.join(super::DEMO_CGROUP).join(CGROUP);
    std::fs::create_dir_all(&cgroup)?;
    let config = dir.join("warden.toml");
    let sections = crate::pg::sections(
        &pg,
        ACCOUNT,
        &format!("/{}/{CGROUP}", super::DEMO_CGROUP),
        &dir,
        true,
    )?;
    let base = std::fs::read_to_string(root.join("config/demo.toml"))?;
    std::fs::write(&config, format!("{base}{sections}"))?;

    step(&format!(
        "Warden restarted with a postgres target; what the demo added to config/demo.toml ({}):",
        config.display()
    ));
    for line in sections.trim().lines() {
        println!("   | {line}");
    }
    guard.start(&config)?;

    step(&format!(
        "the workload (cgroup /{}/{CGROUP}, PGUSER=workload, no password anywhere) runs three \
         statements in one psql session",
        super::DEMO_CGROUP
    ));
    let mut args = vec!["-X", "-e", "-v", "VERBOSITY=verbose"];
    for sql in STATEMENTS {
        args.extend(["-c", sql]);
    }
    // stdout and stderr into one file, so the error shows where it happened.
    let out_path = dir.join("psql.out");
    let out = std::fs::File::create(&out_path)?;
    let status = crate::pg::workload(&pg, &cgroup, &pg.bin("psql"), &args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .status()
        .context("running psql")?;
    for line in std::fs::read_to_string(&out_path)?.lines() {
        let mark = if STATEMENTS.contains(&line) {
            "workload$"
        } else {
            "        |"
        };
        println!("   {mark} {line}");
    }
    println!(
        "   (psql exit code {}: the e-mails came back masked, the DELETE was refused)",
        status.code().unwrap_or(-1)
    );
    let left = pg.psql_ok(
        pgkit::SUPERUSER,
        pgkit::DB,
        "SELECT count(*) FROM orders WHERE id = 1",
    );
    println!(
        "   checked directly as the superuser: order 1 is still there ({left} row), and psql \
         never had a password"
    );

    std::thread::sleep(std::time::Duration::from_millis(500));
    step(&format!("warden audit tail --account {ACCOUNT}"));
    let session = guard.tail_session(&config, ACCOUNT)?;

    step(&format!(
        "warden audit replay {session} (the session as it happened: who, each statement, results)"
    ));
    guard.warden(&config, &["audit", "replay", &session])?;

    step("warden audit verify");
    guard.warden(&config, &["audit", "verify"])?;

    step("warden uninstall; the PostgreSQL server is stopped and removed");
    guard.uninstall(&config)?;
    drop(pg);
    Ok(())
}
