//! Who is calling: enrollment selectors (cgroups, uids) and their resolution
//! to kernel ids (units along systemd's slice layout), live enroll/unenroll
//! persisted in the state dir, and the process facts read from `/proc`.

pub mod enrolled;
pub mod enrollment;
pub mod facts;
pub mod sources;
pub mod token;
pub mod unit;

pub use enrolled::Enrolled;
pub use enrollment::{EnrollError, Enrollments, Selector};
