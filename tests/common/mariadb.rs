//! MariaDB for tests: `pgkit::mariadb` (a throwaway Debian MariaDB on
//! loopback with an application user and a data set).

// Not every test binary that includes `common` uses MariaDB.
#[allow(unused_imports)]
pub use pgkit::mariadb::*;
