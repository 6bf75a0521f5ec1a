//! MariaDB for tests: a throwaway Debian MariaDB 10.11 server on loopback
//! (run as the `mysql` user: the server refuses root), with an application
//! user that logs in with `mysql_native_password`, TLS on (a CA of its own)
//! and a small data set.
//! Its watchdog stops the server and removes its directory once the test
//! process has exited.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Debian packages the MariaDB tests (and `cargo xtask setup`) need:
/// (package, a file it provides that tells us it is installed).
pub const MARIADB_PACKAGES: &[(&str, &str)] = &[
    ("mariadb-server", "/usr/sbin/mariadbd"),
    ("mariadb-client", "/usr/bin/mariadb"),
    (
        "python3-pymysql",
        "/usr/lib/python3/dist-packages/pymysql/__init__.py",
    ),
    ("sysbench", "/usr/bin/sysbench"),
];

/// The database the data set lives in.
pub const DB: &str = "shop";
/// The application user Warden logs in as (read and write on `shop`).
pub const APP_USER: &str = "shop_app";

/// One customer of the data set.
pub struct Customer {
    pub id: u32,
    pub name: &'static str,
    pub email: &'static str,
    pub ssn: &'static str,
    pub card: &'static str,
}

pub const CUSTOMERS: &[Customer] = &[
    Customer {
        id: 1,
        name: "Alice",
        email: "alice@example.com",
        ssn: "123-45-6789",
        card: "4111111111111111",
    },
    Customer {
        id: 2,
        name: "Bob",
        email: "bob@example.org",
        ssn: "234-56-7890",
        card: "5500005555555559",
    },
];

/// A running MariaDB server.
pub struct MariaDb {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    _watchdog: Child,
}

impl MariaDb {
    /// Initialises and starts a server and creates the data set. Blocking.
    pub fn start() -> Self {
        crate::ensure_apt(MARIADB_PACKAGES);
        let owner = mysql_owner();
        let dir = tempfile::Builder::new()
            .prefix("warden-mariadb-")
            .tempdir_in(crate::base_dir())
            .unwrap();
        crate::give_to_postgres(dir.path(), owner, 0o700);
        // TLS on: ca.pem signs server.crt (SAN 127.0.0.1, localhost).
        crate::write_tls(dir.path(), owner);
        let data = dir.path().join("data");
        let out = crate::as_owner(Command::new("mariadb-install-db"), owner, dir.path())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db: {}", show(&out));
        let watchdog = watchdog(dir.path(), owner);
        let password = format!("app-{}", hex::encode(rand::random::<[u8; 12]>()));
        let mut server = Self {
            dir,
            port: 0,
            password,
            _watchdog: watchdog,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = crate::free_port("127.0.0.1");
            if server.launch(owner) {
                break;
            }
            assert!(attempt < 5, "mariadbd did not start:\n{}", server.log());
        }
        server.create_data();
        eprintln!("mariadb harness: MariaDB on {}", server.addr());
        server
    }

    /// One server for all the tests of a test binary, started by the first
    /// that asks; never dropped (its watchdog cleans up).
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(MariaDb::start)
    }

    fn launch(&self, owner: Option<(u32, u32)>) -> bool {
        let d = self.dir.path();
        let _ = fs::remove_file(self.log_path());
        let child = crate::as_owner(Command::new("/usr/sbin/mariadbd"), owner, d)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--ssl-cert={}", d.join("server.crt").display()))
            .arg(format!("--ssl-key={}", d.join("server.key").display()))
            .arg(format!("--ssl-ca={}", self.ca_pem_path().display()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--performance-schema=OFF",
                "--skip-name-resolve",
                "--max-connections=200",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(self.addr()).is_ok() && self.socket().exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn create_data(&self) {
        let mut sql = format!(
            "CREATE DATABASE {DB};
             CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password \
               USING PASSWORD('{pw}');
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON {DB}.* \
               TO '{APP_USER}'@'127.0.0.1';
             USE {DB};
             CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), \
               email VARCHAR(128), ssn VARCHAR(16), card VARCHAR(32));
             CREATE TABLE secrets (id INT PRIMARY KEY, token VARCHAR(64));
             INSERT INTO secrets VALUES (1, 'top-secret-token');
             CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2));
             INSERT INTO orders VALUES (1, 1, 10.50), (2, 2, 99.99);\n",
            pw = self.password
        );
        for c in CUSTOMERS {
            sql.push_str(&format!(
                "INSERT INTO customers VALUES ({}, '{}', '{}', '{}', '{}');\n",
                c.id, c.name, c.email, c.ssn, c.card
            ));
        }
        let out = self.root_sql(&sql);
        assert!(
            out.status.success(),
            "creating the data set: {}",
            show(&out)
        );
    }

    /// Runs `sql` as the server's root over its socket.
    pub fn root_sql(&self, sql: &str) -> Output {
        Command::new("/usr/bin/mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server's certificate (SAN 127.0.0.1,
    /// localhost).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The application user's password (what Warden's password_file holds).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadbd.err")
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn show(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `mysql` user (made by the mariadb-server package) when running as
/// root: the server refuses to run as root.
fn mysql_owner() -> Option<(u32, u32)> {
    crate::system_owner("mysql")
}

/// A server that is dropped (not the shared one) stops at once, as its
/// watchdog would stop it when the process exits: otherwise removing its
/// directory would leave `mariadbd` running with no pid file to find it by.
impl Drop for MariaDb {
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("mariadbd.pid");
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "mariadbd" {
                let _ = Command::new("kill")
                    .args(["-9", &pid])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                // Gone, or a zombie of this process (it started the server).
                let alive = || {
                    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                        st.rsplit_once(')')
                            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                    })
                };
                let gone = std::time::Instant::now();
                // The leader turns zombie before its other threads have
                // exited and closed the listener: wait for both.
                let listening = || std::net::TcpStream::connect(self.addr()).is_ok();
                while (alive() || listening())
                    && gone.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        let _ = self._watchdog.kill();
        let _ = self._watchdog.wait();
    }
}

/// Stops the server (by its pid file, checking the process is mariadbd)
/// and removes its directory once the test process `std::process::id()`
/// has exited.
fn watchdog(dir: &Path, owner: Option<(u32, u32)>) -> Child {
    let script = r#"
        while [ -d "/proc/$1" ]; do sleep 1; done
        pid=$(head -n 1 "$2/mariadbd.pid" 2>/dev/null)
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "mariadbd" ]; then
            kill -9 "$pid"
        fi
        rm -rf "$2"
    "#;
    crate::as_owner(Command::new("sh"), owner, Path::new("/"))
        .arg("-c")
        .arg(script)
        .arg("warden-mariadb-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_server_stops_and_its_directory_goes() {
        let db = MariaDb::start();
        let dir = db.dir.path().to_owned();
        let pid = fs::read_to_string(dir.join("mariadbd.pid")).unwrap();
        let pid = pid.trim().to_owned();
        assert!(std::net::TcpStream::connect(db.addr()).is_ok());
        let addr = db.addr();
        drop(db);
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .unwrap()
                    .1
                    .trim_start()
                    .starts_with('Z'),
            "mariadbd {pid} still runs: {stat}"
        );
        assert!(std::net::TcpStream::connect(addr).is_err());
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
