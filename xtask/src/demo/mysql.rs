//! The demo's MySQL act: a throwaway MariaDB 10.11 on loopback (`pgkit`),
//! Warden restarted with `config/demo.toml` plus a `mysql` target (TLS to
//! the server, verified) and a grant for the /warden-demo/inventory-job
//! cgroup, and a workload there running the `mariadb` client with no
//! password: a masked customer list, a read of a blocked table and a
//! refused DELETE (ERROR 1142), then `warden audit tail` and `warden audit
//! replay` of that session.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use pgkit::mariadb::{self, MariaDb};

use super::{Cleanup, STATE, step};

/// The workload's cgroup under the demo's cgroup.
pub const CGROUP: &str = "inventory-job";
const ACCOUNT: &str = "inventory-job";

/// What the workload runs, in one `mariadb` session (`--force`: on after
/// an error, as a batch job goes on and reports each).
const STATEMENTS: [&str; 3] = [
    "SELECT id, name, email, card FROM customers ORDER BY id",
    "SELECT * FROM secrets",
    "DELETE FROM orders WHERE id = 1",
];

const POLICY: &str = r#"
[policy.inventory]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets"], name = "no-secrets" },
]

[masking.shop-pii]
columns = [ { column = "customers.card", strategy = "last4" } ]
patterns = ["email", "ssn"]
"#;

pub fn act(guard: &mut Cleanup, mount: &Path) -> Result<()> {
    println!("\n\n######## MySQL act");
    step("a throwaway MariaDB 10.11 on loopback (TLS on, tables customers, orders, secrets)");
    let db = MariaDb::start();
    println!(
        "   MariaDB on {}: database {}, user {} (reads and writes on {})",
        db.addr(),
        mariadb::DB,
        mariadb::APP_USER,
        mariadb::DB
    );

    let dir = Path::new(STATE).join("mysql");
    std::fs::create_dir_all(&dir)?;
    let cgroup = mount.join(super::DEMO_CGROUP).join(CGROUP);
    std::fs::create_dir_all(&cgroup)?;
    let pw = dir.join("shop_app.pw");
    std::fs::write(&pw, format!("{}\n", db.password()))?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    let sections = format!(
        "
[[target]]
name = \"shop-db\"
protocol = \"mysql\"
address = \"{addr}\"
tls = {{ mode = \"verify-full\", ca_file = \"{ca}\", server_name = \"localhost\" }}

[[account]]
name = \"{ACCOUNT}\"
cgroups = [\"/{demo}/{CGROUP}\"]

[[grant]]
account = \"{ACCOUNT}\"
target = \"shop-db\"
database = \"{dbname}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"inventory\"
masking = \"shop-pii\"
{POLICY}",
        addr = db.addr(),
        ca = db.ca_pem_path().display(),
        demo = super::DEMO_CGROUP,
        dbname = mariadb::DB,
        user = mariadb::APP_USER,
        pw = pw.display(),
    );
    let config = dir.join("warden.toml");
    let base = std::fs::read_to_string(&guard.config)?;
    std::fs::write(&config, format!("{base}{sections}"))?;
    step(&format!(
        "Warden restarted with a mysql target; what the demo added to config/demo.toml ({}):",
        config.display()
    ));
    for line in sections.trim().lines() {
        println!("   | {line}");
    }
    guard.start(&config)?;

    step(&format!(
        "the workload (cgroup /{}/{CGROUP}, user `workload`, no password anywhere) runs three \
         statements in one mariadb session",
        super::DEMO_CGROUP
    ));
    let port = db.port().to_string();
    let args = vec![
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "-P",
        &port,
        "-u",
        "workload",
        "--skip-password",
        "--table",
        "--force",
        "-v",
        // Flushed after each statement, so each error shows where it
        // happened in the combined output.
        "--unbuffered",
        mariadb::DB,
    ];
    // stdout and stderr into one file, so each error shows where it happened.
    let out_path = dir.join("mariadb.out");
    let out = std::fs::File::create(&out_path)?;
    // The statements on its standard input (batch mode: with `--force` it
    // goes on after an error, as `-e` would not).
    let mut child = crate::pg::in_cgroup(&cgroup, Path::new("/usr/bin/mariadb"), &args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::piped())
        .spawn()
        .context("running mariadb")?;
    let script: String = STATEMENTS.iter().map(|s| format!("{s};\n")).collect();
    child
        .stdin
        .take()
        .context("mariadb's stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    for line in std::fs::read_to_string(&out_path)?.lines() {
        let mark = if STATEMENTS.iter().any(|s| line.trim_end_matches(';') == *s) {
            "workload>"
        } else {
            "        |"
        };
        println!("   {mark} {line}");
    }
    println!(
        "   (mariadb exit code {}: e-mails and cards came back masked, `secrets` and the DELETE \
         were refused with ERROR 1142)",
        status.code().unwrap_or(-1)
    );
    let left = db.root_sql("SELECT count(*) FROM shop.orders WHERE id = 1");
    println!(
        "   checked directly as root: order 1 is still there ({} row), and the client never had \
         a password",
        String::from_utf8_lossy(&left.stdout).trim()
    );

    std::thread::sleep(std::time::Duration::from_millis(500));
    step(&format!("warden audit tail --account {ACCOUNT}"));
    let session = guard.tail_session(&config, ACCOUNT)?;
    step(&format!("warden audit replay {session}"));
    guard.warden(&config, &["audit", "replay", &session])?;

    step("warden uninstall; the MariaDB server is stopped and removed");
    guard.uninstall(&config)?;
    drop(db);
    Ok(())
}
