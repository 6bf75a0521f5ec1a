//! MySQL/MariaDB through the real `warden` binary: a workload in an
//! enrolled test cgroup runs the `mariadb` client and pymysql against a real
//! MariaDB 10.11 (started by the harness) without holding any password.
//! Warden answers the client's handshake itself, logs in upstream as the
//! grant's user, decides every statement, masks results and audits.

mod common;

use common::mariadb::{self, MariaDb};

#[test]
fn the_harness_starts_mariadb_with_the_data_set() {
    let db = MariaDb::shared();
    let out = db.root_sql("SELECT name FROM shop.customers ORDER BY id");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Alice\nBob\n");
    // The application user logs in over TCP with its password.
    let out = std::process::Command::new("/usr/bin/mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P"])
        .arg(db.port().to_string())
        .args(["-u", mariadb::APP_USER])
        .arg(format!("-p{}", db.password()))
        .args([
            mariadb::DB,
            "-N",
            "-B",
            "-e",
            "SELECT count(*) FROM secrets",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
}
