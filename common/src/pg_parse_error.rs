//! The error libpg_query reports for text PostgreSQL's grammar rejects,
//! with its cursor position. The `pg_query` crate returns only the
//! message; the position (a 1-based character offset, as the server puts
//! in an ErrorResponse's `P` field) is in the same C struct. This is the
//! one call into libpg_query that the safe wrapper does not expose; the
//! library itself is the one `pg_query` builds and links.

extern crate alloc;
extern crate std;

use alloc::string::String;
use core::ffi::{CStr, c_char, c_int};
use std::ffi::CString;

// Keep the crate (and the static library it links) in the build.
use pg_query as _;

#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// A rejection by the grammar: the parser's message and, when it names
/// one, the 1-based character position of the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub position: Option<u32>,
}

/// Parses `sql` and returns the grammar's error, or `None` when the text
/// parses (or contains a NUL byte, which no PostgreSQL string can).
pub fn parse_error(sql: &str) -> Option<ParseError> {
    let input = CString::new(sql).ok()?;
    // SAFETY: `input` is a valid NUL-terminated string that outlives the
    // call; libpg_query returns owned pointers (or NULL) that are read
    // before the result is handed back to its own free function exactly
    // once, and never used after.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let out = if result.error.is_null() {
            None
        } else {
            let e = &*result.error;
            let message = if e.message.is_null() {
                String::new()
            } else {
                CStr::from_ptr(e.message).to_string_lossy().into_owned()
            };
            let position = u32::try_from(e.cursorpos).ok().filter(|p| *p > 0);
            Some(ParseError { message, position })
        };
        pg_query_free_parse_result(result);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_the_servers() {
        let e = parse_error("SELECT 123abc").unwrap();
        assert_eq!(
            e.message,
            "trailing junk after numeric literal at or near \"123abc\""
        );
        assert_eq!(e.position, Some(8));
        let e = parse_error("SELECT 'é' FROM FROM").unwrap();
        assert_eq!(e.position, Some(17));
        assert_eq!(parse_error("SELECT 1"), None);
    }
}
