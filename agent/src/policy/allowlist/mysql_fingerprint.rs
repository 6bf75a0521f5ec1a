//! MySQL/MariaDB statement fingerprints (issue 19 for issue 20's protocol):
//! the same normalised form as PostgreSQL's ([`super::fingerprint`]) read
//! with sqlparser's MySQL tokenizer, the one the MySQL classifier uses
//! (texts whose tokenisation MySQL and sqlparser could disagree on are
//! refused by the classifier before any allow-list verdict counts).
//!
//! - comments and whitespace dropped, trailing `;` dropped;
//! - MySQL's reserved words (which can never be names unquoted) folded to
//!   lower case; every other word is a name and keeps its exact text, shown
//!   in backticks whether it was quoted or not (`orders` and `` `orders` ``
//!   are one name; `Orders` is another, as it is to MySQL on Linux);
//! - `?` parameters become `$n`;
//! - *data* literals become `$?`: a literal right after a comparison or
//!   arithmetic operator, `LIMIT`/`OFFSET`, `BETWEEN … AND`, `WHEN`/`THEN`/
//!   `ELSE`, or an element of an `IN (…)` or `VALUES (…)` list. Every other
//!   literal keeps its text: function arguments (`LOAD_FILE('/etc/passwd')`,
//!   `SLEEP(1)`), patterns (`LIKE '4%'`), `ORDER BY 2` positions,
//!   select-list constants, and every literal of a `SET` statement (setting
//!   values, user variables that may hold code);
//! - `IN ($?, $?)` and `VALUES ($?), ($?)` lists collapsed to one element.
//!
//! Protocol `mysql` in the id.

use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::fingerprint::{Fingerprint, PARAM_PLACEHOLDER, PLACEHOLDER, collapse_lists};

/// MySQL's reserved words among those statements of services use (a
/// reserved word cannot name anything unquoted, so folding it merges
/// nothing that MySQL tells apart).
const RESERVED: &[&str] = &[
    "all",
    "and",
    "as",
    "asc",
    "between",
    "binary",
    "by",
    "call",
    "case",
    "collate",
    "cross",
    "default",
    "delete",
    "desc",
    "describe",
    "distinct",
    "div",
    "else",
    "exists",
    "explain",
    "false",
    "for",
    "from",
    "group",
    "having",
    "ignore",
    "in",
    "inner",
    "insert",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "kill",
    "left",
    "like",
    "limit",
    "lock",
    "mod",
    "natural",
    "not",
    "null",
    "on",
    "or",
    "order",
    "outer",
    "regexp",
    "replace",
    "right",
    "rlike",
    "select",
    "set",
    "show",
    "straight_join",
    "then",
    "true",
    "union",
    "update",
    "use",
    "using",
    "values",
    "when",
    "where",
    "with",
    "xor",
];

/// Words after which a literal is a data value.
const DATA_AFTER: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "<=>", "+", "-", "*", "/", "%", "div", "mod", "limit",
    "offset", "between", "when", "then", "else",
];

/// The fingerprint of a MySQL statement text; `None` when it does not
/// tokenize (the classifier refuses it too).
pub fn mysql_fingerprint(sql: &str) -> Option<Fingerprint> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql).tokenize().ok()?;
    let mut words: Vec<String> = Vec::with_capacity(tokens.len());
    // Per open parenthesis: whether it holds an IN or VALUES list.
    let mut lists: Vec<bool> = Vec::new();
    // `BETWEEN x AND y`: the AND of a pending BETWEEN takes a data value.
    let mut between = 0usize;
    for t in &tokens {
        let w = match t {
            Token::Whitespace(_) => continue,
            Token::Word(w) if w.quote_style.is_none() => {
                let lower = w.value.to_ascii_lowercase();
                if RESERVED.contains(&lower.as_str()) {
                    lower
                } else {
                    format!("`{}`", w.value.replace('`', "``"))
                }
            }
            Token::Word(w) if w.quote_style == Some('`') => {
                format!("`{}`", w.value.replace('`', "``"))
            }
            Token::Placeholder(p) if p == "?" => PARAM_PLACEHOLDER.to_owned(),
            Token::Placeholder(p) => format!("`{}`", p.replace('`', "``")),
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => {
                let prev = words.last().map(String::as_str);
                let in_list =
                    lists.last().copied().unwrap_or(false) && matches!(prev, Some("(") | Some(","));
                let after_between = prev == Some("and") && between > 0;
                if after_between {
                    between -= 1;
                }
                let data = words.first().is_none_or(|w| w != "set")
                    && (in_list || after_between || prev.is_some_and(|p| DATA_AFTER.contains(&p)));
                if data {
                    PLACEHOLDER.to_owned()
                } else {
                    t.to_string()
                }
            }
            other => other.to_string(),
        };
        match w.as_str() {
            "(" => {
                let prev = words.last().map(String::as_str);
                let next_tuple = prev == Some(",") && lists_open_after_values(&words);
                lists.push(matches!(prev, Some("in") | Some("values")) || next_tuple);
            }
            ")" => {
                lists.pop();
            }
            "between" => between += 1,
            _ => {}
        }
        words.push(w);
    }
    while words.last().is_some_and(|w| w == ";") {
        words.pop();
    }
    collapse_lists(&mut words);
    Some(Fingerprint::new("mysql", words.join(" ")))
}

/// Whether the words so far end in `VALUES (…), (…),` (what opens next is
/// another tuple of the VALUES list).
fn lists_open_after_values(words: &[String]) -> bool {
    let mut depth = 0usize;
    for w in words.iter().rev() {
        match (w.as_str(), depth) {
            (")", _) => depth += 1,
            ("(", _) => depth = depth.saturating_sub(1),
            (",", 0) => {}
            ("values", 0) => return true,
            (_, 0) => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sql: &str) -> String {
        mysql_fingerprint(sql).unwrap().text
    }

    #[test]
    fn data_literals_parameters_and_lists_are_normalised() {
        assert_eq!(
            text("SELECT name FROM customers WHERE id = 42"),
            "select `name` from `customers` where `id` = $?"
        );
        assert_eq!(
            text("select  `name` from customers /* x */ where id=7 -- y\n;"),
            "select `name` from `customers` where `id` = $?"
        );
        assert_eq!(
            text("SELECT name FROM customers WHERE id = ?"),
            "select `name` from `customers` where `id` = $n"
        );
        assert_eq!(
            text("SELECT * FROM orders WHERE id IN (1, 2, 3) LIMIT 10"),
            text("SELECT * FROM orders WHERE id IN (7) LIMIT 5")
        );
        assert_eq!(
            text("INSERT INTO orders VALUES (1, 2, 3.5), (4, 5, 6)"),
            "insert into `orders` values ( $? , $? , $? )"
        );
        assert_eq!(
            text("SELECT id FROM orders WHERE total BETWEEN 1 AND 2"),
            "select `id` from `orders` where `total` between $? and $?"
        );
    }

    #[test]
    fn code_literals_names_and_shapes_keep_their_text() {
        for (a, b) in [
            (
                "SELECT LOAD_FILE('/etc/passwd')",
                "SELECT LOAD_FILE('/tmp/x')",
            ),
            (
                "SELECT name FROM customers WHERE name LIKE 'A%'",
                "SELECT name FROM customers WHERE name LIKE 'B%'",
            ),
            (
                "SELECT name FROM customers ORDER BY 1",
                "SELECT name FROM customers ORDER BY 2",
            ),
            ("SELECT name FROM Customers", "SELECT name FROM customers"),
            (
                "SELECT id FROM orders WHERE id = 1",
                "SELECT id FROM orders WHERE id = 1 OR 1 = 1",
            ),
            (
                "SELECT id FROM orders WHERE id = 1",
                "SELECT id FROM orders WHERE id = 1; SELECT 1",
            ),
            ("SELECT 1", "SELECT 2"),
            (
                "SET @q = 'SELECT 1'",
                "SET @q = 'SELECT token FROM secrets'",
            ),
            ("SET time_zone = '+00:00'", "SET time_zone = 'UTC'"),
        ] {
            assert_ne!(text(a), text(b), "{a} / {b}");
        }
        assert_eq!(
            text("SELECT `id` FROM `orders`"),
            text("select id from orders")
        );
        assert_ne!(
            mysql_fingerprint("SELECT 1").unwrap().id,
            super::super::fingerprint::sql_fingerprint("SELECT 1")
                .unwrap()
                .id
        );
    }
}
