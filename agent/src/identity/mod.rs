//! Who is calling: enrollment selectors (cgroups, uids) and their resolution
//! to kernel ids, live enroll/unenroll persisted in the state dir, and the
//! process facts read from `/proc` for each connection.

pub mod enrollment;
pub mod facts;
pub mod process;
pub mod unit;

pub use enrollment::{EnrollError, Enrollments, Selector};
pub use process::process_info;
