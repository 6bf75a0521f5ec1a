//! Fingerprints for approval grants, hashed with SHA-256 and kept apart by
//! protocol and kind: a statement's shape as its protocol normalised it
//! (for PostgreSQL, the server's own tokens with constants as `?`:
//! `DELETE FROM orders WHERE id = 7` and `delete from orders where id=8`
//! share one; a different table, column or operator does not), its exact
//! text (for statements whose literals are code, paths or names), or an
//! HTTP request's method, path and parameter names. The approval module
//! knows no protocol: callers normalise.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a statement's shape as a protocol normalised it (for
/// PostgreSQL, `policy::sql::statement_shape`: PostgreSQL's own tokens
/// with constants generalised). Falls back to the exact text when there is
/// no shape.
pub fn shape_fingerprint(protocol: &str, shape: Option<&str>, text: &str) -> String {
    match shape {
        Some(shape) => hex::encode(Sha256::digest(format!("{protocol}\0shape\0{shape}"))),
        None => exact_fingerprint(protocol, text),
    }
}

/// Hex SHA-256 of the exact statement text: a grant for it covers that
/// very text and nothing else (DDL and privileged statements, whose
/// literals are code, commands, paths, setting or object names).
pub fn exact_fingerprint(protocol: &str, text: &str) -> String {
    hex::encode(Sha256::digest(format!("{protocol}\0exact\0{text}")))
}

/// Hex SHA-256 of an HTTP request's shape: method, normalised path and the
/// sorted, de-duplicated query parameter names (values do not matter, path
/// segments do: `/orders/7` and `/orders/8` differ).
///
/// A request with a body is fingerprinted with the body's exact bytes: a
/// grant covers the body the approver saw, never another one.
pub fn http_fingerprint(
    method: &str,
    path: &str,
    query_names: &[&str],
    body: Option<&[u8]>,
) -> String {
    let mut names: Vec<&str> = query_names.to_vec();
    names.sort_unstable();
    names.dedup();
    let normal = format!(
        "http\0{}\0{path}\0{}",
        method.to_ascii_uppercase(),
        names.join("&")
    );
    let mut h = Sha256::new();
    h.update(normal.as_bytes());
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        h.update(b"\0body\0");
        h.update(Sha256::digest(b));
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sql::statement_shape;

    fn fp(s: &str) -> String {
        shape_fingerprint("postgres", statement_shape(s).as_deref(), s)
    }

    #[test]
    fn http_shapes_share_a_fingerprint_only_when_method_path_and_names_match() {
        let a = http_fingerprint("delete", "/orders/7", &["force", "why"], None);
        assert_eq!(
            a,
            http_fingerprint("DELETE", "/orders/7", &["why", "force", "why"], None)
        );
        assert_ne!(
            a,
            http_fingerprint("DELETE", "/orders/8", &["force", "why"], None)
        );
        assert_ne!(
            a,
            http_fingerprint("POST", "/orders/7", &["force", "why"], None)
        );
        assert_ne!(a, http_fingerprint("DELETE", "/orders/7", &["force"], None));
    }

    #[test]
    fn literals_case_and_spacing_do_not_matter() {
        assert_eq!(
            fp("DELETE FROM orders WHERE id = 7"),
            fp("delete  from orders\nwhere id=8 -- again")
        );
        assert_eq!(
            fp("UPDATE t SET note = 'a' WHERE x = $$y$$"),
            fp("update t set note = 'something else' where x = 'z';")
        );
        assert_eq!(
            statement_shape("DELETE FROM orders WHERE id = 7").unwrap(),
            "delete from orders where id = $?"
        );
        // The exact text is another fingerprint than any shape.
        assert_ne!(
            exact_fingerprint("postgres", "DELETE FROM orders WHERE id = 7"),
            fp("DELETE FROM orders WHERE id = 7")
        );
    }

    #[test]
    fn literals_that_name_or_steer_keep_their_text() {
        for (a, b) in [
            (
                "SELECT pg_notify('orders_audit', 'x')",
                "SELECT pg_notify('payments', 'x')",
            ),
            (
                "INSERT INTO orders (id) VALUES (nextval('orders_id_seq'))",
                "INSERT INTO orders (id) VALUES (nextval('payments_id_seq'))",
            ),
            (
                "DELETE FROM orders WHERE note LIKE 'gift wrap'",
                "DELETE FROM orders WHERE note LIKE '%'",
            ),
            (
                "DELETE FROM orders WHERE note ~ '^gift'",
                "DELETE FROM orders WHERE note ~ '.*'",
            ),
            ("SELECT 'orders'::regclass", "SELECT 'payments'::regclass"),
        ] {
            assert_ne!(fp(a), fp(b), "{a} / {b}");
        }
        // Data literals still generalise.
        assert_eq!(
            fp("UPDATE orders SET note = 'a' WHERE note LIKE 'x%'"),
            fp("UPDATE orders SET note = 'b' WHERE note LIKE 'x%'")
        );
    }

    #[test]
    fn structure_matters() {
        assert_ne!(
            fp("DELETE FROM orders WHERE id = 7"),
            fp("DELETE FROM orders")
        );
        assert_ne!(
            fp("DELETE FROM orders WHERE id = 7"),
            fp("DELETE FROM other WHERE id = 7")
        );
        assert_ne!(
            fp("DELETE FROM orders WHERE id = 7"),
            fp("DELETE FROM orders WHERE id > 7")
        );
        assert_ne!(fp("SELECT \"A\""), fp("SELECT a"));
        assert_ne!(fp("SELECT $1"), fp("SELECT 1"));
    }

    #[test]
    fn http_bodies_are_fingerprinted_exactly() {
        let a = http_fingerprint("POST", "/payments", &[], Some(b"{\"amount\": 1}"));
        assert_eq!(
            a,
            http_fingerprint("POST", "/payments", &[], Some(b"{\"amount\": 1}"))
        );
        assert_ne!(
            a,
            http_fingerprint("POST", "/payments", &[], Some(b"{\"amount\": 9}"))
        );
        assert_ne!(a, http_fingerprint("POST", "/payments", &[], None));
        assert_eq!(
            http_fingerprint("POST", "/payments", &[], Some(b"")),
            http_fingerprint("POST", "/payments", &[], None)
        );
    }
}
