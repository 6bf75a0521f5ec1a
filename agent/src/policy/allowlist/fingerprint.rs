//! Request fingerprints: one normalised form per request, shared by the
//! decision cache, the statement allow-lists and approval grants.
//!
//! SQL: PostgreSQL's own scanner (`pg_query::scan_tokens`, the server's
//! lexer compiled as a library) splits the text, so Warden and the server
//! agree on where every literal is (standard-conforming and `E''` strings,
//! dollar quotes, `U&` strings and identifiers, comments). The normalised
//! text is the token stream with comments and whitespace dropped, keywords
//! and unquoted identifiers folded as PostgreSQL folds them (ASCII only:
//! the server leaves other letters alone in UTF-8), quoted identifiers and
//! operators verbatim, *data* literals replaced by `$?` and parameters by
//! `$n`,
//! and `IN ($?, $?)` / `VALUES ($?), ($?)` lists collapsed to one element.
//!
//! Which literals are data is read from the parse tree, by an allow-list
//! of positions ([`data_literals`]): a constant directly under a
//! comparison or arithmetic operator, `IN`/`BETWEEN`/`DISTINCT`, a select
//! or `VALUES` list, an `UPDATE ... SET`, a boolean or `CASE` expression, a
//! row or array constructor, `LIMIT`/`OFFSET`, of a `SELECT`, `INSERT`,
//! `UPDATE`, `DELETE` or `MERGE`. Every other literal keeps its text: code,
//! commands, paths, setting and object names, function arguments
//! (`nextval('seq')`, `pg_read_file('/etc/passwd')`), cast operands
//! (`'orders'::regclass`, typed literals), patterns (`LIKE`, `~`), JSON keys
//! (`doc->>'k'`), `ORDER BY 1` / `GROUP BY 1` positions, and every literal
//! of any other statement (SET, COPY, DDL, EXPLAIN ...).
//!
//! The same rule makes the decision cache sound: the analysis never reads
//! the value of a data literal (classes, tables, functions, settings,
//! column positions all come from the kept ones), so two statements whose
//! tokens agree everywhere but at data literals get the same decision
//! ([`SqlScan::cache_key`] plus the kept literals' texts).
//!
//! HTTP: the method, the path with numeric, UUID and long hex segments
//! replaced by `{id}`, and the sorted, de-duplicated query parameter names.
//!
//! The id of a fingerprint is the first 16 hex digits of SHA-256 over the
//! protocol and the normalised text.

use std::collections::HashSet;

use pg_query::protobuf::{AExprKind as K, Token as T};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::policy::sql::{MAX_DEPTH, Obj, as_node, enum_is, list_field, name_list};

/// What replaces a data literal or a parameter in a normalised text: no
/// PostgreSQL token is spelt so (`$` starts only parameters and dollar
/// quotes), so a normalised text cannot be confused with a literal one.
pub const PLACEHOLDER: &str = "$?";

/// What replaces a parameter (`$1`, `$2`...): its number does not matter,
/// but a parameter is not a literal (an approval of `id = $1` is of the
/// values bound at each execution).
pub const PARAM_PLACEHOLDER: &str = "$n";

/// A request's normalised form and its short id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// 16 hex digits of SHA-256(protocol, text).
    pub id: String,
    /// The normalised text.
    pub text: String,
}

impl Fingerprint {
    /// The fingerprint of a normalised `text` of `protocol` (`postgres`,
    /// `http`).
    pub fn new(protocol: &str, text: String) -> Self {
        Fingerprint {
            id: fingerprint_id(protocol, &text),
            text,
        }
    }
}

/// The short id of a normalised text.
pub fn fingerprint_id(protocol: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(protocol.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    let mut id = hex::encode(h.finalize());
    id.truncate(16);
    id
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Comment: not part of any normalised form.
    Comment,
    /// A literal constant of the given key marker.
    Literal(char),
    /// `$n`.
    Param,
    /// Keyword or unquoted identifier: ASCII-folded.
    Word,
    /// Anything else, verbatim (quoted identifiers, operators, punctuation).
    Verbatim,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Which literal tokens of a scan are data ([`SqlScan::data_mask`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiteralMask {
    /// Per literal, in order: a data value.
    pub data: Vec<bool>,
    /// Per literal: a data value whose `-` sign PostgreSQL folded into it.
    pub signed: Vec<bool>,
}

/// One statement text as PostgreSQL's scanner split it.
#[derive(Debug)]
pub struct SqlScan<'a> {
    sql: &'a str,
    toks: Vec<Tok>,
}

impl<'a> SqlScan<'a> {
    /// Scans `sql`; `None` when the scanner rejects it (unterminated
    /// string or comment, NUL byte...), which the parser then rejects too.
    pub fn new(sql: &'a str) -> Option<Self> {
        if sql.as_bytes().contains(&0) {
            return None;
        }
        // pg_query 18.1's `scan_tokens` builds a slice from a null pointer
        // when the text has no token (empty or blank), which is undefined
        // behaviour (the fuzz target's debug assertions caught it). A
        // sentinel `;` on a line of its own always scans as a token (a
        // `--` comment ends at the newline; an unterminated string or
        // block comment is a scan error either way) and is dropped below.
        let padded = format!("{sql}\n;");
        let raw = pg_query::scan_tokens(&padded).ok()?;
        let mut toks = Vec::with_capacity(raw.len());
        for t in raw
            .into_iter()
            .filter(|t| usize::try_from(t.start).is_ok_and(|s| s < sql.len()))
        {
            let start = usize::try_from(t.start).ok()?;
            let end = usize::try_from(t.end).ok()?;
            let text = sql.get(start..end)?;
            let kind = match T::try_from(t.token).ok() {
                Some(T::SqlComment | T::CComment) => Kind::Comment,
                Some(T::Sconst | T::Usconst) => Kind::Literal('s'),
                Some(T::Iconst) => Kind::Literal('i'),
                Some(T::Fconst) => Kind::Literal('f'),
                Some(T::Bconst) => Kind::Literal('b'),
                Some(T::Xconst) => Kind::Literal('x'),
                Some(T::Param) => Kind::Param,
                _ if text.starts_with('"') || text.starts_with("U&") || text.starts_with("u&") => {
                    Kind::Verbatim
                }
                _ if t.keyword_kind != 0 || T::try_from(t.token).ok() == Some(T::Ident) => {
                    Kind::Word
                }
                _ => Kind::Verbatim,
            };
            toks.push(Tok { start, end, kind });
        }
        Some(SqlScan { sql, toks })
    }

    /// The scanned text.
    pub fn sql(&self) -> &'a str {
        self.sql
    }

    fn text(&self, t: &Tok) -> &'a str {
        // Bounds were checked in `new`.
        self.sql.get(t.start..t.end).unwrap_or_default()
    }

    fn literals(&self) -> impl Iterator<Item = &Tok> {
        self.toks
            .iter()
            .filter(|t| matches!(t.kind, Kind::Literal(_)))
    }

    /// The decision-cache key: every token but comments, words folded,
    /// each literal replaced by a marker of its kind (`\u{1}s`, `\u{1}i`
    /// ...: no token is spelt so), parameters kept. Two texts with one key
    /// differ at most in comments, whitespace, letter case of words and the
    /// values of literals; which literals matter is the cache entry's
    /// business ([`SqlScan::kept_literals`]).
    pub fn cache_key(&self) -> String {
        let mut out = String::with_capacity(self.sql.len() + 8);
        for t in &self.toks {
            match t.kind {
                Kind::Comment => continue,
                Kind::Literal(c) => {
                    out.push('\u{1}');
                    out.push(c);
                }
                Kind::Word => out.extend(self.text(t).chars().map(|c| c.to_ascii_lowercase())),
                Kind::Param | Kind::Verbatim => out.push_str(self.text(t)),
            }
            out.push(' ');
        }
        out
    }

    /// Number of literal tokens.
    pub fn literal_count(&self) -> usize {
        self.literals().count()
    }

    /// For each literal token in order, whether it is data (its start, or
    /// the start of the `-` sign PostgreSQL folds into a negative number,
    /// is in `data`), and whether such a sign was folded.
    pub fn data_mask(&self, data: &HashSet<usize>) -> LiteralMask {
        let mut mask = LiteralMask::default();
        let mut prev: Option<&Tok> = None;
        for t in self.toks.iter().filter(|t| t.kind != Kind::Comment) {
            if matches!(t.kind, Kind::Literal(_)) {
                let signed = prev.is_some_and(|p| self.text(p) == "-" && data.contains(&p.start));
                mask.data.push(data.contains(&t.start) || signed);
                mask.signed.push(signed);
            }
            prev = Some(t);
        }
        mask
    }

    /// The literals that are not data, as (ordinal, text): a cached
    /// decision applies to another text of the same key only if these
    /// agree.
    pub fn kept_literals(&self, mask: &LiteralMask) -> Vec<(usize, Box<str>)> {
        self.literals()
            .enumerate()
            .filter(|(i, _)| !mask.data.get(*i).copied().unwrap_or(false))
            .map(|(i, t)| (i, self.text(t).into()))
            .collect()
    }

    /// True when this text's literals agree with `kept`.
    pub fn keeps(&self, kept: &[(usize, Box<str>)]) -> bool {
        let lits: Vec<&Tok> = self.literals().collect();
        kept.iter()
            .all(|(i, text)| lits.get(*i).is_some_and(|t| self.text(t) == &**text))
    }

    /// The normalised text (see the module docs), data literals (by
    /// `mask`) and parameters replaced.
    pub fn normalised(&self, mask: &LiteralMask) -> String {
        let mut words: Vec<String> = Vec::with_capacity(self.toks.len());
        let mut lit = 0usize;
        for t in &self.toks {
            let w = match t.kind {
                Kind::Comment => continue,
                Kind::Literal(_) => {
                    let data = mask.data.get(lit).copied().unwrap_or(false);
                    // `- 5` is one constant, -5: a value like any other.
                    if mask.signed.get(lit).copied().unwrap_or(false) {
                        words.pop();
                    }
                    lit += 1;
                    if data {
                        PLACEHOLDER.to_owned()
                    } else {
                        self.text(t).to_owned()
                    }
                }
                Kind::Param => PARAM_PLACEHOLDER.to_owned(),
                Kind::Word => self.text(t).to_ascii_lowercase(),
                Kind::Verbatim => self.text(t).to_owned(),
            };
            words.push(w);
        }
        // Trailing `;` are not part of any statement.
        while words.last().is_some_and(|w| w == ";") {
            words.pop();
        }
        collapse_lists(&mut words);
        words.join(" ")
    }

    /// The fingerprint (protocol `postgres`).
    pub fn fingerprint(&self, mask: &LiteralMask) -> Fingerprint {
        Fingerprint::new("postgres", self.normalised(mask))
    }

    /// The text with every literal, comment and quoted identifier passed
    /// through `mask` (the rest is keywords, names and punctuation, copied):
    /// the audit trail's statement text, made from the positions the
    /// scanner found rather than by scanning the whole text.
    pub fn masked_text(&self, mut mask: impl FnMut(&str) -> String) -> String {
        let mut out = String::with_capacity(self.sql.len());
        let mut at = 0usize;
        for t in &self.toks {
            let text = self.text(t);
            let sensitive = match t.kind {
                Kind::Literal(_) | Kind::Comment => true,
                Kind::Verbatim => {
                    text.starts_with('"') || text.starts_with("U&") || text.starts_with("u&")
                }
                Kind::Param | Kind::Word => false,
            };
            if !sensitive {
                continue;
            }
            out.push_str(self.sql.get(at..t.start).unwrap_or_default());
            out.push_str(&mask(text));
            at = t.end;
        }
        out.push_str(self.sql.get(at..).unwrap_or_default());
        out
    }
}

/// `in ( $? , $? , ... )` → `in ( $? )`; `values ( … ) , ( … )` with
/// identical groups → one group.
pub(crate) fn collapse_lists(words: &mut Vec<String>) {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "in" && words.get(i + 1).is_some_and(|w| w == "(") {
            // A list of placeholders only.
            let mut j = i + 2;
            let mut ok = false;
            while j < words.len() && (words[j] == PLACEHOLDER || words[j] == PARAM_PLACEHOLDER) {
                match words.get(j + 1).map(String::as_str) {
                    Some(",") => j += 2,
                    Some(")") => {
                        ok = true;
                        j += 1;
                        break;
                    }
                    _ => break,
                }
            }
            if ok {
                out.extend(["in", "(", PLACEHOLDER, ")"].map(String::from));
                i = j + 1;
                continue;
            }
        }
        if w == "values" && words.get(i + 1).is_some_and(|w| w == "(") {
            out.push(w.clone());
            let Some(end) = group_end(words, i + 1) else {
                i += 1;
                continue;
            };
            let group = &words[i + 1..=end];
            out.extend(group.iter().cloned());
            let mut j = end + 1;
            while words.get(j).is_some_and(|w| w == ",")
                && words.get(j + 1..j + 1 + group.len()) == Some(group)
            {
                j += 1 + group.len();
            }
            i = j;
            continue;
        }
        out.push(w.clone());
        i += 1;
    }
    *words = out;
}

/// Index of the `)` closing the `(` at `open`.
fn group_end(words: &[String], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, w) in words.iter().enumerate().skip(open) {
        match w.as_str() {
            "(" => depth += 1,
            ")" => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Byte offsets of the data literals of a parse tree (PostgreSQL's, in its
/// serde form): constants reached from a `SELECT`/`INSERT`/`UPDATE`/
/// `DELETE`/`MERGE` statement through data positions only (see the
/// module docs). Everything not listed here is kept.
pub fn data_literals(tree: &Value) -> HashSet<usize> {
    let mut out = HashSet::new();
    for raw in tree
        .get("stmts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(stmt) = raw.get("stmt")
            && let Some((ty, f)) = as_node(stmt)
            && matches!(
                ty,
                "SelectStmt" | "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
            )
        {
            walk_msg(ty, f, 0, &mut out);
        }
    }
    out
}

/// The fields of a node of type `ty` that hold data positions, with the
/// message type of fields that are typed messages rather than nodes.
fn data_fields(ty: &str, f: &Obj) -> &'static [(&'static str, Option<&'static str>)] {
    match ty {
        "SelectStmt" => &[
            ("target_list", None),
            ("from_clause", None),
            ("where_clause", None),
            ("having_clause", None),
            ("values_lists", None),
            ("limit_offset", None),
            ("limit_count", None),
            ("with_clause", Some("WithClause")),
            ("larg", Some("SelectStmt")),
            ("rarg", Some("SelectStmt")),
        ],
        "InsertStmt" => &[
            ("select_stmt", None),
            ("on_conflict_clause", Some("OnConflictClause")),
            ("returning_clause", Some("ReturningClause")),
            ("with_clause", Some("WithClause")),
        ],
        "UpdateStmt" => &[
            ("target_list", None),
            ("where_clause", None),
            ("from_clause", None),
            ("returning_clause", Some("ReturningClause")),
            ("with_clause", Some("WithClause")),
        ],
        "DeleteStmt" => &[
            ("using_clause", None),
            ("where_clause", None),
            ("returning_clause", Some("ReturningClause")),
            ("with_clause", Some("WithClause")),
        ],
        "MergeStmt" => &[
            ("source_relation", None),
            ("join_condition", None),
            ("merge_when_clauses", None),
            ("returning_clause", Some("ReturningClause")),
            ("with_clause", Some("WithClause")),
        ],
        "MergeWhenClause" => &[("condition", None), ("target_list", None), ("values", None)],
        "OnConflictClause" => &[("target_list", None), ("where_clause", None)],
        "ReturningClause" => &[("exprs", None)],
        "WithClause" => &[("ctes", None)],
        "CommonTableExpr" => &[("ctequery", None)],
        "ResTarget" => &[("val", None)],
        "AExpr" if data_operator(f) => &[("lexpr", None), ("rexpr", None)],
        "BoolExpr" | "RowExpr" | "CoalesceExpr" | "MinMaxExpr" => &[("args", None)],
        "NullTest" | "BooleanTest" => &[("arg", None)],
        "SubLink" => &[("testexpr", None), ("subselect", None)],
        "RangeSubselect" => &[("subquery", None)],
        "JoinExpr" => &[("larg", None), ("rarg", None), ("quals", None)],
        "CaseExpr" => &[("arg", None), ("args", None), ("defresult", None)],
        "CaseWhen" => &[("expr", None), ("result", None)],
        "AArrayExpr" => &[("elements", None)],
        "List" => &[("items", None)],
        _ => &[],
    }
}

/// An operator whose operands are values: comparisons and arithmetic
/// (unqualified), `IN`, `BETWEEN`, `IS [NOT] DISTINCT FROM`, `NULLIF`, and
/// `= ANY (...)`-style comparisons. Not patterns, JSON or other operators
/// whose right operand names or steers something.
fn data_operator(f: &Obj) -> bool {
    let op_ok = || {
        matches!(
            name_list(list_field(f, "name")).as_deref(),
            Some([op]) if matches!(
                op.as_str(),
                "=" | "<>" | "!=" | "<" | ">" | "<=" | ">=" | "+" | "-" | "*" | "/" | "%"
            )
        )
    };
    if enum_is(f, "kind", K::AexprOp)
        || enum_is(f, "kind", K::AexprOpAny)
        || enum_is(f, "kind", K::AexprOpAll)
        || enum_is(f, "kind", K::AexprIn)
    {
        return op_ok();
    }
    enum_is(f, "kind", K::AexprDistinct)
        || enum_is(f, "kind", K::AexprNotDistinct)
        || enum_is(f, "kind", K::AexprNullif)
        || enum_is(f, "kind", K::AexprBetween)
        || enum_is(f, "kind", K::AexprNotBetween)
        || enum_is(f, "kind", K::AexprBetweenSym)
        || enum_is(f, "kind", K::AexprNotBetweenSym)
}

fn walk_msg(ty: &str, f: &Obj, depth: usize, out: &mut HashSet<usize>) {
    if depth > MAX_DEPTH {
        return;
    }
    for (key, typed) in data_fields(ty, f) {
        let Some(child) = f.get(*key) else {
            continue;
        };
        match typed {
            Some(t) => {
                if let Some(o) = child.as_object() {
                    walk_msg(t, o, depth + 1, out);
                }
            }
            None => walk_value(child, depth + 1, out),
        }
    }
}

fn walk_value(v: &Value, depth: usize, out: &mut HashSet<usize>) {
    match v {
        Value::Array(items) => {
            for i in items {
                walk_value(i, depth, out);
            }
        }
        _ => {
            let Some((ty, f)) = as_node(v) else {
                return;
            };
            if ty == "AConst" {
                if let Some(at) = f
                    .get("location")
                    .and_then(Value::as_i64)
                    .and_then(|l| usize::try_from(l).ok())
                {
                    out.insert(at);
                }
                return;
            }
            walk_msg(ty, f, depth, out);
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP.

/// The normalised form of an HTTP request: `METHOD /path/{id}?a&b`.
pub fn http_normalised(method: &str, path: &str, query_names: &[&str]) -> String {
    let mut out = method.to_ascii_uppercase();
    out.push(' ');
    let segments: Vec<&str> = path.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id_segment(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
    let mut names: Vec<&str> = query_names.to_vec();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        out.push('?');
        out.push_str(&names.join("&"));
    }
    out
}

/// The fingerprint of an HTTP request (protocol `http`).
pub fn http_fingerprint(method: &str, path: &str, query_names: &[&str]) -> Fingerprint {
    Fingerprint::new("http", http_normalised(method, path, query_names))
}

/// A numeric, UUID or long hexadecimal path segment.
fn is_id_segment(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let b = seg.as_bytes();
    if b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
    {
        return true;
    }
    b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit)
}

/// The fingerprint of a statement text: scan, parse for the data literals,
/// normalise. `None` when the text does not scan.
pub fn sql_fingerprint(sql: &str) -> Option<Fingerprint> {
    let scan = SqlScan::new(sql)?;
    let data = crate::policy::sql::parse_tree(sql)
        .map(|t| data_literals(&t))
        .unwrap_or_default();
    Some(scan.fingerprint(&scan.data_mask(&data)))
}

#[cfg(test)]
mod tests;
