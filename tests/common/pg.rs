//! PostgreSQL for tests: the `pgkit` workspace crate (a throwaway Debian
//! PostgreSQL server on loopback with roles, TLS and a data set, and a
//! PgBouncer in front of it), shared with `cargo xtask bench pg` and the demo.

pub use pgkit::*;
