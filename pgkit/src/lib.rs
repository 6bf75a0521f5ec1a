//! Throwaway PostgreSQL for Warden's tests, benchmarks and demo: a Debian
//! PostgreSQL server on loopback (SCRAM, md5 and cleartext roles, TLS with a
//! CA made here, a fixed data set with sensitive-looking values), and a
//! PgBouncer in front of it. Everything runs as the `postgres` user
//! (PostgreSQL and PgBouncer refuse root) in a temp dir (tmpfs when there is
//! one) that `Drop` removes after stopping the processes; a later start
//! sweeps what a killed process left.
//!
//! Used by `tests/common/pg.rs` (re-exported as `common::pg`) and by
//! `cargo xtask bench pg | demo`. A harness, not library code: a step that
//! cannot succeed (missing package, server that will not start) panics with
//! the command's output and the server log, which is what a test or a
//! developer task wants to show.
//!
//! Missing Debian packages are installed on first use (`apt-get`, under a
//! file lock so parallel test binaries do not race); `cargo xtask setup`
//! installs the same list (`PG_PACKAGES`) up front.

pub mod mariadb;

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Debian packages the PostgreSQL tests use, each with a file that tells us
/// it is installed (`cargo xtask setup` installs them too).
pub const PG_PACKAGES: &[(&str, &str)] = &[
    ("postgresql", "/usr/lib/postgresql/15/bin/initdb"),
    ("postgresql-client", "/usr/lib/postgresql/15/bin/psql"),
    ("pgbouncer", "/usr/sbin/pgbouncer"),
    (
        "python3-psycopg2",
        "/usr/lib/python3/dist-packages/psycopg2/__init__.py",
    ),
];

/// Debian packages PostgreSQL's own regression suite needs
/// (`tests/e2e_pg_regress.rs`): `dpkg-source` for `apt-get source`, the
/// server headers and a C toolchain to build `regress.so`, bzip2 for the
/// source tarball. `pg_regress` itself and PGXS come with
/// `postgresql-client-15` (in `PG_PACKAGES`).
pub const REGRESS_PACKAGES: &[(&str, &str)] = &[
    ("dpkg-dev", "/usr/bin/dpkg-source"),
    (
        "postgresql-server-dev-15",
        "/usr/include/postgresql/15/server/postgres.h",
    ),
    ("make", "/usr/bin/make"),
    ("gcc", "/usr/bin/gcc"),
    ("libc6-dev", "/usr/include/stdio.h"),
    ("bzip2", "/bin/bzip2"),
];

pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Roles created on start. `postgres` is the superuser.
pub const SUPERUSER: &str = "postgres";
/// SCRAM, SELECT on every table of `orders`.
pub const ORDERS_RO: &str = "orders_ro";
/// SCRAM, SELECT/INSERT/UPDATE/DELETE on every table of `orders`.
pub const ORDERS_RW: &str = "orders_rw";
/// md5-hashed password, `md5` in pg_hba; SELECT like `orders_ro`.
pub const MD5_USER: &str = "md5_user";
/// Cleartext password auth (`password` in pg_hba); SELECT like `orders_ro`.
pub const PLAIN_USER: &str = "plain_user";
pub const ROLES: &[&str] = &[SUPERUSER, ORDERS_RO, ORDERS_RW, MD5_USER, PLAIN_USER];

/// The database holding the test data.
pub const DB: &str = "orders";
/// The table with `PgOptions::stream_rows` rows, for streaming tests.
pub const STREAM_TABLE: &str = "public.events";

/// One row of `public.customers`; ids are 1.. in this order.
#[derive(Debug, Clone, Copy)]
pub struct Customer {
    pub name: &'static str,
    pub email: &'static str,
    /// A Luhn-valid test card number.
    pub card: &'static str,
    pub ssn: &'static str,
}

pub const CUSTOMERS: &[Customer] = &[
    Customer {
        name: "Alice Anderson",
        email: "alice@example.com",
        card: "4111111111111111",
        ssn: "123-45-6789",
    },
    Customer {
        name: "Bob Brown",
        email: "bob.brown@example.org",
        card: "5555555555554444",
        ssn: "234-56-7890",
    },
    Customer {
        name: "Carol O'Connor",
        email: "carol+billing@example.net",
        card: "378282246310005",
        ssn: "345-67-8901",
    },
    Customer {
        name: "Dave Diaz",
        email: "dave@example.com",
        card: "6011111111111117",
        ssn: "456-78-9012",
    },
    Customer {
        name: "Eve Evans",
        email: "eve@example.com",
        card: "4012888888881881",
        ssn: "567-89-0123",
    },
];

/// Rows of `public.orders`: (customer_id, amount, note); ids are 1.. in this order.
pub const ORDERS: &[(i32, &str, &str)] = &[
    (1, "19.99", "first order"),
    (1, "250.00", "gift wrap"),
    (2, "5.50", "refund to card 5555555555554444 requested"),
    (
        3,
        "1200.00",
        "contact carol+billing@example.net before shipping",
    ),
    (4, "42.00", ""),
    (5, "7.25", "express"),
];

/// Rows of `public.secrets`: (name, value).
pub const SECRETS: &[(&str, &str)] = &[
    ("stripe_api_key", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
    ("db_password", "hunter2-not-a-real-one"),
];

/// Rows of `public."Secrets"` (a different table from `secrets`): ("Name", "Value").
pub const QUOTED_SECRETS: &[(&str, &str)] = &[("Launch Code", "0000-1111-2222")];

/// Rows of `public.payroll`: (employee, salary, iban).
pub const PAYROLL: &[(&str, &str, &str)] = &[
    ("Alice Anderson", "123456.78", "DE89370400440532013000"),
    ("Bob Brown", "98000.00", "GB82WEST12345698765432"),
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);
const TMP_PREFIX: &str = "warden-pg-";
const BOUNCER_PREFIX: &str = "warden-pgb-";
const APT_LOCK: &str = "/tmp/warden-pgapt.lock";
/// Bump when the initdb arguments change, so old templates are not used.
const TEMPLATE_REV: u32 = 1;

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `max_connections`; the benchmarks need ≥ 500 concurrent sessions.
    pub max_connections: u32,
    /// Rows in `STREAM_TABLE`.
    pub stream_rows: u32,
    /// `log_connections` (the tests read the auth method from the log).
    pub log_connections: bool,
    /// Appended to the generated configuration.
    pub extra_conf: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 600,
            stream_rows: 5000,
            log_connections: true,
            extra_conf: String::new(),
        }
    }
}

/// How long each step of `PgServer::start` took.
#[derive(Debug, Clone, Default)]
pub struct StartTimings {
    pub packages: Duration,
    /// Copying the initdb template (and making it, the first time on this
    /// machine).
    pub initdb: Duration,
    pub start: Duration,
    pub setup: Duration,
    pub total: Duration,
}

pub struct PgServer {
    tmp: tempfile::TempDir,
    data: PathBuf,
    bindir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    passwords: HashMap<&'static str, String>,
    ca_pem: PathBuf,
    postmaster: Option<i32>,
    /// Superuser password of the template, until `create_data` changes it.
    template_password: String,
    watchdog: Option<Child>,
    pub opts: PgOptions,
    pub timings: StartTimings,
}

impl PgServer {
    /// Initialises and starts a server, creates the roles and the data set.
    /// Blocking; from a tokio test call it before building the runtime or
    /// inside `spawn_blocking`.
    pub fn start(opts: PgOptions) -> Self {
        let t0 = Instant::now();
        ensure_packages();
        sweep_stale();
        let packages = t0.elapsed();
        let bindir = pg_bindir();
        let owner = postgres_owner();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(
                "{TMP_PREFIX}{}-{}-",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ))
            .tempdir_in(base_dir())
            .unwrap();
        give_to_postgres(tmp.path(), owner, 0o700);
        let data = tmp.path().join("data");
        let mut passwords = HashMap::new();
        for role in ROLES {
            passwords.insert(
                *role,
                format!("{role}-{}", hex::encode(rand::random::<[u8; 12]>())),
            );
        }

        // A copy of the machine's initdb template (`create_data` gives the
        // superuser this server's own password).
        let t = Instant::now();
        let (template, template_password) = template(&bindir, owner);
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "copying the template: {}", show(&out));
        let initdb = t.elapsed();

        // TLS material and configuration.
        let ca_pem = write_tls(tmp.path(), owner);
        let mut conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\ninclude = 'warden.conf'\n");
        fs::write(data.join("postgresql.conf"), conf).unwrap();
        fs::write(data.join("pg_hba.conf"), HBA).unwrap();

        let mut server = Self {
            watchdog: Some(watchdog(tmp.path(), owner, &bindir)),
            template_password,
            data,
            bindir,
            port: 0,
            owner,
            passwords,
            ca_pem,
            postmaster: None,
            opts,
            timings: StartTimings::default(),
            tmp,
        };

        // Start, retrying with another port if a parallel test took ours
        // between `free_port` and the bind.
        let t = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port("127.0.0.1");
            server.write_conf();
            let out = server
                .pg_ctl()
                .arg("-l")
                .arg(server.log_path())
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null())
                .output()
                .unwrap();
            server.postmaster = server.read_postmaster_pid();
            if out.status.success() {
                break;
            }
            let log = server.log();
            let bind = log.contains("could not bind") || log.contains("Address already in use");
            if bind && attempt < 5 {
                server.kill_postmaster();
                let _ = fs::write(server.log_path(), "");
                continue;
            }
            panic!("pg_ctl start failed: {}\nserver log:\n{log}", show(&out));
        }
        let start = t.elapsed();

        let t = Instant::now();
        server.create_data();
        let setup = t.elapsed();
        server.timings = StartTimings {
            packages,
            initdb,
            start,
            setup,
            total: t0.elapsed(),
        };
        eprintln!(
            "pg harness: PostgreSQL on {} up in {:?} ({:?})",
            server.addr(),
            server.timings.total,
            server.timings
        );
        server
    }

    /// One server (default options) for all the tests of a test binary,
    /// started by the first that asks. For tests that only read, or that
    /// undo what they write. It is never dropped: its watchdog stops it and
    /// removes its directory when the test process has exited.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| PgServer::start(PgOptions::default()))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server certificate (SAN 127.0.0.1, localhost).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    pub fn password(&self, role: &str) -> &str {
        self.passwords
            .get(role)
            .unwrap_or_else(|| panic!("no such test role: {role}"))
    }

    /// `/usr/lib/postgresql/<ver>/bin/<name>` (psql, pgbench, …).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// libpq key=value string for `role` on `db` over TCP, with the password
    /// and no sslmode (libpq and tokio-postgres default to `prefer`).
    pub fn conn_string(&self, role: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={role} password={} dbname={db}",
            self.port,
            self.password(role)
        )
    }

    /// Like `conn_string` with `sslmode` and, for the verify modes, the CA.
    pub fn conn_string_ssl(&self, role: &str, db: &str, sslmode: &str) -> String {
        format!(
            "{} sslmode={sslmode} sslrootcert={}",
            self.conn_string(role, db),
            self.ca_pem.display()
        )
    }

    pub fn super_conn_string(&self) -> String {
        self.conn_string(SUPERUSER, DB)
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1` for `role` on `db`, connection
    /// settings in PG* variables (override with `.env()` or `-h`/`-p` to aim
    /// it elsewhere, e.g. at Warden). Add `-c SQL` or `-f FILE`.
    pub fn psql_cmd(&self, role: &str, db: &str, sslmode: &str) -> Command {
        let mut c = Command::new(self.bin("psql"));
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        self.client_env(&mut c, role, db, sslmode);
        c
    }

    /// Runs one SQL string with psql over TLS checked against the CA
    /// (`verify-full`).
    pub fn psql(&self, role: &str, db: &str, sql: &str) -> Output {
        self.psql_ssl(role, db, "verify-full", sql)
    }

    pub fn psql_ssl(&self, role: &str, db: &str, sslmode: &str, sql: &str) -> Output {
        self.psql_cmd(role, db, sslmode)
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap()
    }

    /// `psql` that must succeed; returns its stdout trimmed.
    pub fn psql_ok(&self, role: &str, db: &str, sql: &str) -> String {
        let out = self.psql(role, db, sql);
        assert!(
            out.status.success(),
            "psql as {role}: {sql}: {}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `pgbench` with the same PG* settings as `psql_cmd`.
    pub fn pgbench_cmd(&self, role: &str, db: &str, sslmode: &str) -> Command {
        let mut c = Command::new(self.bin("pgbench"));
        self.client_env(&mut c, role, db, sslmode);
        c
    }

    /// Sets the PG* variables `psql_cmd` and `pgbench_cmd` use on any
    /// libpq client command (and clears those that would override them).
    pub fn client_env(&self, c: &mut Command, role: &str, db: &str, sslmode: &str) {
        for v in [
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGREQUIRESSL",
            "PGHOSTADDR",
        ] {
            c.env_remove(v);
        }
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", role)
            .env("PGDATABASE", db)
            .env("PGPASSWORD", self.password(role))
            .env("PGSSLMODE", sslmode)
            .env("PGSSLROOTCERT", &self.ca_pem)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGPASSFILE", "/dev/null");
    }

    /// The server's log (stderr of the postmaster).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits up to 5 s for a line containing `needle` in the server log.
    pub fn wait_log(&self, needle: &str) -> bool {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if start.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn postmaster_pid(&self) -> Option<i32> {
        self.postmaster
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("postgres.log")
    }

    fn pg_ctl(&self) -> Command {
        let mut c = as_owner(
            Command::new(self.bin("pg_ctl")),
            self.owner,
            self.tmp.path(),
        );
        c.arg("-D").arg(&self.data);
        c
    }

    fn read_postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn write_conf(&self) {
        let dir = self.tmp.path();
        // fsync, synchronous_commit and full_page_writes off: the data is
        // thrown away after the test, and this makes setup and benchmarks
        // independent of the disk. Say so next to any figure they produce.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             max_connections = {maxc}\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             log_connections = {logc}\n\
             log_min_messages = warning\n\
             {extra}\n",
            port = self.port,
            dir = dir.display(),
            maxc = self.opts.max_connections,
            logc = if self.opts.log_connections {
                "on"
            } else {
                "off"
            },
            extra = self.opts.extra_conf,
        );
        let path = self.data.join("warden.conf");
        fs::write(&path, conf).unwrap();
        give_to_postgres(&path, self.owner, 0o600);
    }

    /// Roles, the `orders` database, tables and rows, over the Unix socket
    /// as the superuser.
    fn create_data(&self) {
        let pw = |r: &str| lit(self.password(r));
        let mut sql = String::new();
        sql.push_str(&format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {ORDERS_RO} LOGIN PASSWORD {};\n\
             CREATE ROLE {ORDERS_RW} LOGIN PASSWORD {};\n\
             CREATE ROLE {PLAIN_USER} LOGIN PASSWORD {};\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN PASSWORD {};\n\
             RESET password_encryption;\n\
             CREATE DATABASE {DB};\n\
             \\connect {DB}\n",
            pw(ORDERS_RO),
            pw(ORDERS_RW),
            pw(PLAIN_USER),
            pw(MD5_USER),
        ));
        sql.push_str(
            "CREATE TABLE public.customers (id serial PRIMARY KEY, name text NOT NULL, \
                 email text, card text, ssn text);\n\
             CREATE TABLE public.orders (id serial PRIMARY KEY, \
                 customer_id int REFERENCES public.customers(id), amount numeric(12,2), note text);\n\
             CREATE TABLE public.secrets (id serial PRIMARY KEY, name text NOT NULL, value text NOT NULL);\n\
             CREATE TABLE public.\"Secrets\" (id serial PRIMARY KEY, \"Name\" text, \"Value\" text);\n\
             CREATE TABLE public.payroll (id serial PRIMARY KEY, employee text NOT NULL, \
                 salary numeric(12,2), iban text);\n\
             CREATE TABLE public.events (id bigserial PRIMARY KEY, customer_id int, kind text, \
                 payload text, created_at timestamptz);\n",
        );
        for c in CUSTOMERS {
            sql.push_str(&format!(
                "INSERT INTO public.customers (name, email, card, ssn) VALUES ({}, {}, {}, {});\n",
                lit(c.name),
                lit(c.email),
                lit(c.card),
                lit(c.ssn)
            ));
        }
        for (cust, amount, note) in ORDERS {
            sql.push_str(&format!(
                "INSERT INTO public.orders (customer_id, amount, note) VALUES ({cust}, {amount}, {});\n",
                lit(note)
            ));
        }
        for (name, value) in SECRETS {
            sql.push_str(&format!(
                "INSERT INTO public.secrets (name, value) VALUES ({}, {});\n",
                lit(name),
                lit(value)
            ));
        }
        for (name, value) in QUOTED_SECRETS {
            sql.push_str(&format!(
                "INSERT INTO public.\"Secrets\" (\"Name\", \"Value\") VALUES ({}, {});\n",
                lit(name),
                lit(value)
            ));
        }
        for (emp, salary, iban) in PAYROLL {
            sql.push_str(&format!(
                "INSERT INTO public.payroll (employee, salary, iban) VALUES ({}, {salary}, {});\n",
                lit(emp),
                lit(iban)
            ));
        }
        // Every 100th event carries an e-mail address, every 250th a card
        // number, so masking is exercised in the middle of a long stream.
        sql.push_str(&format!(
            "INSERT INTO public.events (customer_id, kind, payload, created_at) \
             SELECT g % {n} + 1, (ARRAY['view','click','buy'])[g % 3 + 1], \
               'event ' || g \
               || CASE WHEN g % 100 = 0 THEN ' contact alice@example.com' ELSE '' END \
               || CASE WHEN g % 250 = 0 THEN ' paid with 4111111111111111' ELSE '' END, \
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' \
             FROM generate_series(1, {rows}) AS g;\n",
            n = CUSTOMERS.len(),
            rows = self.opts.stream_rows,
        ));
        sql.push_str(&format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ORDERS_RO}, {MD5_USER}, {PLAIN_USER};\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ORDERS_RW};\n\
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ORDERS_RW};\n\
             ANALYZE;\n\
             ALTER ROLE {SUPERUSER} PASSWORD {};\n",
            pw(SUPERUSER)
        ));
        let file = self.tmp.path().join("setup.sql");
        fs::write(&file, sql).unwrap();
        let out = Command::new(self.bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
            .arg("-h")
            .arg(self.tmp.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-f"])
            .arg(&file)
            .env("PGPASSWORD", &self.template_password)
            .env("PGPASSFILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "creating the test data failed: {}\nserver log:\n{}",
            show(&out),
            self.log()
        );
    }

    fn kill_postmaster(&mut self) {
        if let Some(pid) = self.postmaster.take() {
            kill9_if(pid, "postgres");
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.postmaster.is_some() || self.data.join("postmaster.pid").exists() {
            let _ = self
                .pg_ctl()
                .args(["-m", "immediate", "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .output();
        }
        // Whatever pg_ctl could not stop (or a test panicked mid-start).
        self.kill_postmaster();
        // The TempDir field removes the directory.
    }
}

/// How PgBouncer hands out server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    pub mode: PoolMode,
    /// Server connections per (database, user) pair.
    pub pool_size: u32,
    pub max_client_conn: u32,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        Self {
            mode: PoolMode::Session,
            pool_size: 550,
            max_client_conn: 2000,
        }
    }
}

/// PgBouncer in front of a `PgServer`: SCRAM towards clients (every test
/// role, passwords in its auth_file), plaintext to the server, TLS offered to
/// clients with the server's certificate.
pub struct PgBouncer {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    watchdog: Option<Child>,
    port: u16,
    passwords: HashMap<&'static str, String>,
    ca_pem: PathBuf,
}

impl PgBouncer {
    pub fn start(pg: &PgServer, mode: PoolMode) -> Self {
        Self::start_with(
            pg,
            PgBouncerOptions {
                mode,
                ..PgBouncerOptions::default()
            },
        )
    }

    pub fn start_with(pg: &PgServer, opts: PgBouncerOptions) -> Self {
        ensure_packages();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(
                "{BOUNCER_PREFIX}{}-{}-",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ))
            .tempdir_in(base_dir())
            .unwrap();
        give_to_postgres(tmp.path(), pg.owner, 0o700);
        let dir = tmp.path().to_owned();
        let userlist: String = ROLES
            .iter()
            .map(|r| format!("\"{r}\" \"{}\"\n", pg.password(r)))
            .collect();
        fs::write(dir.join("userlist.txt"), userlist).unwrap();
        give_to_postgres(&dir.join("userlist.txt"), pg.owner, 0o600);
        let mut me = Self {
            watchdog: Some(watchdog(&dir, pg.owner, &pg.bindir)),
            child: None,
            port: 0,
            passwords: pg.passwords.clone(),
            ca_pem: pg.ca_pem.clone(),
            tmp,
        };
        for attempt in 1.. {
            me.port = free_port("127.0.0.1");
            let ini = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pgport}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {dir}/userlist.txt\n\
                 admin_users = {SUPERUSER}\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {pool}\n\
                 max_client_conn = {maxc}\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 client_tls_sslmode = allow\n\
                 client_tls_cert_file = {pgdir}/server.crt\n\
                 client_tls_key_file = {pgdir}/server.key\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                pgport = pg.port,
                port = me.port,
                dir = dir.display(),
                pgdir = pg.dir().display(),
                mode = opts.mode.as_str(),
                pool = opts.pool_size,
                maxc = opts.max_client_conn,
            );
            let ini_path = dir.join("pgbouncer.ini");
            fs::write(&ini_path, ini).unwrap();
            give_to_postgres(&ini_path, pg.owner, 0o600);
            let mut child = as_owner(Command::new(PGBOUNCER), pg.owner, &dir)
                .arg(&ini_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let t = Instant::now();
            let up = loop {
                if TcpStream::connect_timeout(&me.addr(), Duration::from_millis(200)).is_ok() {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || t.elapsed() > Duration::from_secs(15) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                me.child = Some(child);
                return me;
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = me.log();
            let bind = log.contains("Address already in use") || log.contains("bind");
            assert!(bind && attempt < 5, "pgbouncer did not start; log:\n{log}");
        }
        unreachable!("the loop returns or panics")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// libpq key=value string for `role` on `db` through PgBouncer.
    pub fn conn_string(&self, role: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={role} password={} dbname={db}",
            self.port,
            self.passwords
                .get(role)
                .unwrap_or_else(|| panic!("no such test role: {role}"))
        )
    }

    /// The pgbouncer process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CA that signed the certificate PgBouncer offers to clients.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free TCP port on `ip` (bound then released).
pub(crate) fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// `/usr/lib/postgresql/<highest version>/bin`.
pub fn pg_bindir() -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .flatten()
    {
        let Ok(v) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let bin = e.path().join("bin");
        if bin.join("initdb").exists()
            && bin.join("psql").exists()
            && best.as_ref().is_none_or(|(b, _)| v > *b)
        {
            best = Some((v, bin));
        }
    }
    best.expect("no /usr/lib/postgresql/<ver>/bin with initdb and psql")
        .1
}

/// Where servers and the template live: /dev/shm when it is a tmpfs with
/// room (the data is thrown away; copies and writes stay off the disk, which
/// other builds keep busy), else /tmp. Not $TMPDIR: the postgres user must
/// be able to reach it.
pub fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let roomy = nix::sys::statvfs::statvfs(shm)
            .is_ok_and(|v| v.blocks_available() * v.fragment_size() >= 2 << 30);
        let sticky = fs::metadata(shm).is_ok_and(|m| m.permissions().mode() & 0o1777 == 0o1777);
        if roomy && sticky {
            shm.to_owned()
        } else {
            PathBuf::from("/tmp")
        }
    })
}

/// The machine's initdb template for this PostgreSQL version, made once
/// (under a lock, then renamed into place) and copied by every start: initdb
/// costs a second or more, a copy a fraction of that. Returns the template's
/// data dir and its superuser password.
fn template(bindir: &Path, owner: Option<(u32, u32)>) -> (PathBuf, String) {
    let ver = bindir
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Per owner too: `cp -a` keeps the files' owner.
    let uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u);
    let dir = base_dir().join(format!("warden-pgtmpl-{ver}-r{TEMPLATE_REV}-u{uid}"));
    let read = || -> Option<(PathBuf, String)> {
        let pw = fs::read_to_string(dir.join("superuser.pw")).ok()?;
        let data = dir.join("data");
        data.join("PG_VERSION")
            .exists()
            .then(|| (data, pw.trim().to_owned()))
    };
    if let Some(t) = read() {
        return t;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(base_dir().join(format!("warden-pgtmpl-{ver}.lock")))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if let Some(t) = read() {
        return t;
    }
    let building = PathBuf::from(format!("{}.building", dir.display()));
    let _ = fs::remove_dir_all(&building);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&building).unwrap();
    give_to_postgres(&building, owner, 0o700);
    let pw = hex::encode(rand::random::<[u8; 16]>());
    let pwfile = building.join("superuser.pw");
    fs::write(&pwfile, format!("{pw}\n")).unwrap();
    give_to_postgres(&pwfile, owner, 0o600);
    let out = as_owner(Command::new(bindir.join("initdb")), owner, &building)
        .arg("-D")
        .arg(building.join("data"))
        .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8"])
        .args(["--locale=C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb failed: {}", show(&out));
    fs::rename(&building, &dir).unwrap();
    read().expect("template just made")
}

/// A process (as the postgres user, in its own process group so a Ctrl-C
/// aimed at the tests does not reach it) that waits for this test process to
/// end, then stops the server or bouncer running from `dir` and removes it. It covers what
/// `Drop` cannot: statics, aborts, SIGKILL. `Drop` kills it first.
fn watchdog(dir: &Path, owner: Option<(u32, u32)>, bindir: &Path) -> Child {
    let script = r#"
        while [ -d "/proc/$1" ]; do sleep 1; done
        if [ -f "$2/data/postmaster.pid" ]; then
            "$3/pg_ctl" -D "$2/data" -m immediate -w -t 20 stop
        fi
        for f in "$2/data/postmaster.pid:postgres" "$2/pgbouncer.pid:pgbouncer"; do
            pid=$(head -n 1 "${f%:*}" 2>/dev/null)
            if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${f##*:}" ]; then
                kill -9 "$pid"
            fi
        done
        rm -rf "$2"
    "#;
    as_owner(Command::new("sh"), owner, Path::new("/"))
        .arg("-c")
        .arg(script)
        .arg("warden-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(bindir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Installs whatever of `PG_PACKAGES` is missing (once per machine; other
/// test binaries wait on the lock and then find everything there).
pub fn ensure_packages() {
    ensure_apt(PG_PACKAGES);
}

/// Installs whatever of `packages` (name, probe file) is missing, under a
/// machine-wide lock, each as [`apt_name`] spells it.
pub fn ensure_apt(packages: &[(&'static str, &'static str)]) {
    let missing = || -> Vec<&'static str> {
        packages
            .iter()
            .filter(|(_, probe)| !Path::new(probe).exists())
            .map(|(p, _)| *p)
            .collect()
    };
    if missing().is_empty() {
        return;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(APT_LOCK)
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let todo = missing();
    if todo.is_empty() {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "missing {todo:?}: install them (cargo xtask setup) or run the tests as root"
    );
    let names: Vec<String> = todo.iter().map(|p| apt_name(p)).collect();
    eprintln!("pg harness: installing {}", names.join(" "));
    let out = Command::new("apt-get")
        .args(["update", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "apt-get update: {}", show(&out));
    let out = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(["-o", "DPkg::Lock::Timeout=300"])
        .args(&names)
        .output()
        .unwrap();
    assert!(out.status.success(), "apt-get install: {}", show(&out));
    let still = missing();
    assert!(still.is_empty(), "still missing after install: {still:?}");
}

/// The name to give `apt-get install` for `package`: the server headers
/// (`postgresql-server-dev-N`) pinned to the version of the installed
/// server (`postgresql-N`), so what is built against them (`regress.so`)
/// matches the server that loads it; any other package as it is.
pub fn apt_name(package: &str) -> String {
    let Some(major) = package.strip_prefix("postgresql-server-dev-") else {
        return package.to_owned();
    };
    match installed_version(&format!("postgresql-{major}")) {
        Some(v) => format!("{package}={v}"),
        None => package.to_owned(),
    }
}

/// The Debian version of an installed package (`15.18-0+deb12u1`).
pub fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().strip_prefix("installed ")?;
    (out.status.success() && !v.is_empty()).then(|| v.to_owned())
}

/// Stops servers and bouncers left by test processes that no longer exist
/// (killed before their `Drop` ran) and removes their directories.
fn sweep_stale() {
    let entries = ["/tmp", "/dev/shm"]
        .into_iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (rest, pidfile, comm) = if let Some(r) = name.strip_prefix(BOUNCER_PREFIX) {
            (r, "pgbouncer.pid", "pgbouncer")
        } else if let Some(r) = name.strip_prefix(TMP_PREFIX) {
            (r, "data/postmaster.pid", "postgres")
        } else {
            continue;
        };
        let owner: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if owner == 0 || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let pid = fs::read_to_string(e.path().join(pidfile))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            kill9_if(pid, comm);
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

/// SIGKILL `pid` if it still runs a program named `comm` (guards against
/// PID reuse), and waits briefly for it to go.
fn kill9_if(pid: i32, comm: &str) {
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if name.trim() != comm {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    for _ in 0..100 {
        if !process_running(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while `pid` exists and is not a zombie (whoever adopted a
/// daemonised postmaster may reap it late).
pub fn process_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3, after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// (uid, gid) of `postgres` when we are root; `None` runs everything as us.
fn postgres_owner() -> Option<(u32, u32)> {
    system_owner("postgres")
}

/// The uid and gid of the system user `name` (made by a server package)
/// when running as root, which the servers refuse to run as; `None` when
/// not root (the servers run as the caller).
pub(crate) fn system_owner(name: &str) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("the {name} user (created by its server package)"));
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// Runs `c` as the postgres user (like `runuser -u postgres`, without PAM)
/// from `cwd`, which that user can enter.
pub(crate) fn as_owner(mut c: Command, owner: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = owner {
        // std drops supplementary groups when it changes the uid as root.
        c.uid(uid).gid(gid);
    }
    c.current_dir(cwd).env("HOME", cwd);
    c
}

pub(crate) fn give_to_postgres(path: &Path, owner: Option<(u32, u32)>, mode: u32) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// CA (ca.pem, world-readable) and server certificate/key signed by it.
pub(crate) fn write_tls(dir: &Path, owner: Option<(u32, u32)>) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "warden pg test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut srv =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    srv.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = srv.signed_by(&key, &issuer).unwrap();
    let ca_pem = dir.join("ca.pem");
    fs::write(&ca_pem, ca_cert.pem()).unwrap();
    fs::set_permissions(&ca_pem, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    give_to_postgres(&dir.join("server.crt"), owner, 0o644);
    fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    give_to_postgres(&dir.join("server.key"), owner, 0o600);
    ca_pem
}

/// pg_hba.conf: the md5 and cleartext roles first, SCRAM for the rest, TLS
/// and plaintext both accepted over TCP (`host`), SCRAM on the Unix socket.
const HBA: &str = "\
local   all  all                       scram-sha-256
host    all  md5_user    127.0.0.1/32  md5
host    all  plain_user  127.0.0.1/32  password
host    all  all         127.0.0.1/32  scram-sha-256
";

/// SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Exit status, stdout and stderr of a finished command, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
