//! Warden in front of a throwaway PostgreSQL (`pgkit`), shared by
//! `cargo xtask bench pg` and the demo's PostgreSQL act: the configuration
//! sections for a `postgres` target (target, account, grant, policy,
//! masking) and workload commands run inside a cgroup with no password.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use pgkit::PgServer;

/// The statement policy: reads allowed, secrets blocked, writes to orders
/// held for an approval (nobody approves in the demo or the bench: the
/// hold times out after a few seconds and the statement is refused),
/// anything else denied.
const POLICY: &str = r#"
[policy.ro]
default = "deny"
rules = [
  { action = "allow", classes = ["read"] },
  { action = "block", tables = ["secrets", "public.payroll"], name = "no-secrets" },
  { action = "approve", classes = ["write"], tables = ["orders"], name = "orders-writes" },
  { action = "block", functions = ["pg_read_file", "dblink*", "lo_*", "set_config"], name = "no-file-access" },
]

[approvals]
approval_timeout_secs = 3
"#;

/// Masking: column rules plus every built-in pattern detector, which runs
/// on every value of every result.
const MASKING: &str = r#"
[masking.pii]
columns = [
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "customers.ssn", strategy = "redact" },
]
patterns = ["card", "email", "ssn", "iban", "token"]
"#;

/// `[[target]]`, `[[account]]` (the cgroup `cgroup`, relative to the cgroup2
/// mount), a read-only `[[grant]]` as `pgkit::ORDERS_RO` with policy and
/// masking, for the server `pg`. The role's password is written to
/// `secrets_dir/orders_ro.pw` (mode 0600): the workload never sees it.
/// `tls`: Warden checks the server's certificate against the server's CA
/// (`verify-full`); otherwise Warden talks plain TCP to it (loopback).
pub fn sections(
    pg: &PgServer,
    account: &str,
    cgroup: &str,
    secrets_dir: &Path,
    tls: bool,
) -> Result<String> {
    let pw = secrets_dir.join("orders_ro.pw");
    std::fs::write(&pw, format!("{}\n", pg.password(pgkit::ORDERS_RO)))?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    let tls = if tls {
        format!(
            "tls = {{ mode = \"verify-full\", ca_file = \"{}\" }}\n",
            pg.ca_pem_path().display()
        )
    } else {
        String::new()
    };
    Ok(format!(
        "
[[target]]
name = \"orders-pg\"
protocol = \"postgres\"
address = \"{addr}\"
{tls}
[[account]]
name = \"{account}\"
cgroups = [\"{cgroup}\"]

[[grant]]
account = \"{account}\"
target = \"orders-pg\"
database = \"{db}\"
upstream_user = \"{user}\"
password_file = \"{pw}\"
policy = \"ro\"
masking = \"pii\"
read_only = true
{POLICY}{MASKING}",
        addr = pg.addr(),
        db = pgkit::DB,
        user = pgkit::ORDERS_RO,
        pw = pw.display(),
    ))
}

/// `program args…` placed in the cgroup directory `cgroup` before it
/// starts, with a clean environment that aims libpq at the server's address
/// (which Warden intercepts for enrolled cgroups) as user `workload`, with
/// no password anywhere. Add `.env()` for anything else.
pub fn workload(pg: &PgServer, cgroup: &Path, program: &Path, args: &[&str]) -> Command {
    let mut c = in_cgroup(cgroup, program, args);
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", "workload")
        .env("PGDATABASE", pgkit::DB)
        .env("PGSSLMODE", "disable")
        // A path that cannot exist: libpq then reads no password file
        // (quietly; /dev/null itself draws a warning).
        .env("PGPASSFILE", "/dev/null/none")
        .env("PGCONNECT_TIMEOUT", "10");
    c
}

/// `program args…` started inside the cgroup directory `cgroup` (the shell
/// moves itself there, then execs), environment inherited.
pub fn in_cgroup(cgroup: &Path, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(cgroup.join("cgroup.procs"))
        .arg(program)
        .args(args);
    c
}
