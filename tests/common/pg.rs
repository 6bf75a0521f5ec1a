//! PostgreSQL for tests: the `pgkit` workspace crate (a throwaway Debian
//! PostgreSQL server on loopback with roles, TLS and a data set, and a
//! PgBouncer in front of it), shared with `cargo xtask bench pg` and the demo.

// Not every test binary that includes `common` uses PostgreSQL.
#[allow(unused_imports)]
pub use pgkit::*;
