//! Masked columns, however a statement uses them: from PostgreSQL's own
//! parse tree (the serde form read by [`super::sql`]), every reference to
//! a column that a `[masking.NAME]` column rule masks is found and judged
//! by where it stands.
//!
//! The proxy masks a result column by the table OID and attribute number
//! the server reports in RowDescription, which PostgreSQL fills in only
//! for a column that is a plain column reference of the select list. So a
//! masked column is safe to return only as a **bare output column of the
//! top-level select list** (aliasing allowed: `SELECT email AS e`, `c.*`,
//! `*`), or of `RETURNING`, `DECLARE CURSOR`, `PREPARE`, `EXPLAIN`, and of
//! `COPY (SELECT ...) TO STDOUT` / `COPY table TO STDOUT` (masked by
//! position in the copied rows, see [`CopyMasking`]). Everywhere else its
//! value would leave unmasked or transformed, and the statement is
//! refused ([`ColumnError::MaskedUse`], naming the column and the rule):
//! inside a function, operator, cast, aggregate, window function,
//! `CASE`, array or row constructor, subscript or field selection, as the
//! output of a sub-query, CTE or set operation (`UNION`...), in `VALUES`,
//! as a value written by INSERT/UPDATE/MERGE or into a table or view
//! (`CREATE TABLE AS`, `SELECT INTO`), as a table function's argument, as a
//! whole-row value (`row_to_json(c)`, `c::text`, `SELECT c FROM t c`).
//!
//! Where a masked column may appear *outside* the select list (conditions,
//! ordering, grouping) is the masking's [`MaskedInPredicates`]:
//! `refuse`, `equality` (default: `=`, `<>`, `IN`, `IS [NOT] DISTINCT
//! FROM`, `= ANY` against literals or parameters, `IS NULL` — not `IS NOT
//! NULL` in any spelling, whose rows an index on the column would return
//! in the column's order —, in
//! WHERE / ON / HAVING conditions combined by AND/OR/NOT), or `any`.
//!
//! Names are resolved as PostgreSQL resolves them, conservatively where
//! Warden cannot know: table aliases and column alias lists, CTEs (with
//! PostgreSQL's scoping), sub-queries in FROM, LATERAL, correlated
//! sub-queries, JOIN ... USING / NATURAL JOIN (a merged column counts as
//! both sides and is never a bare column), whole-row references (`c`,
//! `c.*`, `*`). An unqualified table name matches every relation of that
//! name in the catalog (whatever the search path), and a relation Warden
//! has no catalog entry for (a temporary table, one created after the
//! session started) is masked by the rules that name it: its `*` or
//! whole row is refused when a rule names the table, as Warden cannot
//! know its columns. A view whose definition reads a masked column is in
//! the catalog with every column masked ([`ColumnCatalog`]).

use std::collections::HashMap;
use std::sync::Arc;

use pg_query::protobuf::{AExprKind, BoolExprType, NullTestType, SetOperation, SubLinkType};
use serde_json::Value;

use super::sql::{
    AnalyzeError, MAX_DEPTH, Obj, as_node, bool_field, const_text, enum_is, fields_of, int_field,
    list_field, name_list, parse_tree, str_field, string_node,
};
use crate::masking::{MaskedInPredicates, Masker, Strategy};

/// Why a statement is refused for its use of masked columns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// A masked column used where its value would escape the masking.
    #[error(
        "masked column {column} (masking rule \"{rule}\") is used {usage}; a masked column can only be returned as a bare column of the top-level select list"
    )]
    MaskedUse {
        /// `schema.table.column` (or the view's column).
        column: String,
        /// The column rule's spec as configured.
        rule: String,
        /// Where it was used, e.g. `inside function format()`.
        usage: String,
    },
    /// A relation named by a masking rule whose columns Warden does not
    /// know, used where its columns would have to be known.
    #[error(
        "{relation} is named by masking rule \"{rule}\" but its columns are not in Warden's catalog, so {usage} cannot be checked"
    )]
    UnknownColumns {
        relation: String,
        rule: String,
        usage: String,
    },
    /// The statement cannot be analysed (its text did not parse, or a
    /// construct is not understood).
    #[error("{0}")]
    Analyze(#[from] AnalyzeError),
    /// A form Warden cannot mask (binary COPY of masked columns...).
    #[error("{0}")]
    Unsupported(String),
}

/// The masking of one catalog column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMask {
    /// The rule's spec as configured (`customers.email`), or for a view
    /// the rule of the column it reads.
    pub rule: String,
    pub strategy: Strategy,
}

/// One column of a catalog relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    pub mask: Option<ColumnMask>,
    /// A stored generated column (left out of `COPY table TO`, as the
    /// server does).
    pub generated: bool,
}

/// A relation (table, view, materialized view, foreign or partitioned
/// table) with its columns in attribute order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRelation {
    pub schema: String,
    pub name: String,
    pub columns: Vec<CatalogColumn>,
}

impl CatalogRelation {
    fn has_masks(&self) -> bool {
        self.columns.iter().any(|c| c.mask.is_some())
    }
}

/// What the analysis knows of the database: the relations of the
/// catalog (by name) and, for relations not in it, the masking's rules.
#[derive(Debug, Default)]
pub struct ColumnCatalog {
    relations: HashMap<String, Vec<CatalogRelation>>,
    rules: Option<Arc<Masker>>,
    /// The masking's name (`[masking.NAME]`), for refusals.
    masking: String,
    /// Names of the system relations (`pg_catalog`, `information_schema`).
    system: std::collections::HashSet<String>,
}

impl ColumnCatalog {
    /// A catalog of `relations`; relations not among them are judged by
    /// `rules` (the masking's column rules, by name).
    pub fn new(masking: &str, relations: Vec<CatalogRelation>, rules: Option<Arc<Masker>>) -> Self {
        let mut by_name: HashMap<String, Vec<CatalogRelation>> = HashMap::new();
        for r in relations {
            by_name.entry(r.name.clone()).or_default().push(r);
        }
        Self {
            relations: by_name,
            rules,
            masking: masking.to_owned(),
            system: Default::default(),
        }
    }

    /// The names of the system relations, which statements may name
    /// without naming a relation the catalog is missing.
    pub fn with_system_names(mut self, names: std::collections::HashSet<String>) -> Self {
        self.system = names;
        self
    }

    /// Whether `schema.name` is (or, unqualified, may be) a system
    /// relation.
    fn is_system(&self, schema: Option<&str>, name: &str) -> bool {
        match schema {
            Some("pg_catalog" | "information_schema") => true,
            Some(_) => false,
            None => self.system.contains(name),
        }
    }

    /// The masking's name.
    pub fn masking(&self) -> &str {
        &self.masking
    }

    /// Whether any relation or rule masks a column.
    pub fn masks_anything(&self) -> bool {
        self.rules.as_ref().is_some_and(|m| m.has_columns())
            || self
                .relations
                .values()
                .flatten()
                .any(CatalogRelation::has_masks)
    }

    /// Every relation of the catalog (for the proxy's column map).
    pub fn relations(&self) -> impl Iterator<Item = &CatalogRelation> {
        self.relations.values().flatten()
    }

    fn candidates(&self, schema: Option<&str>, name: &str) -> Vec<&CatalogRelation> {
        self.relations
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|r| schema.is_none_or(|s| s == r.schema))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn loose_rule(
        &self,
        schema: Option<&str>,
        table: &str,
        column: Option<&str>,
    ) -> Option<ColumnMask> {
        let m = self.rules.as_ref()?;
        m.column_rule_loose(schema, table, column)
            .map(|(rule, strategy)| ColumnMask {
                rule: rule.to_owned(),
                strategy,
            })
    }
}

/// COPY ... TO STDOUT of masked columns: how to find and mask them in
/// each CopyData row (one row per message, as the server sends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyMasking {
    /// CSV (else PostgreSQL's text format).
    pub csv: bool,
    pub delimiter: u8,
    /// CSV quote and escape characters.
    pub quote: u8,
    pub escape: u8,
    /// The NULL marker (`\N` in text, empty in CSV by default).
    pub null: String,
    /// The first row is a header.
    pub header: bool,
    /// The strategy of each field, by position (`None`: not masked).
    pub fields: Vec<Option<Strategy>>,
}

impl CopyMasking {
    /// One CopyData row of COPY TO with its masked fields rewritten by
    /// `apply` (a masked value, or SQL NULL). `Ok(None)`: nothing to
    /// change (a NULL, or every masked field NULL). A row whose shape is
    /// not the expected one is an error (the caller fails closed).
    pub fn mask_row(
        &self,
        row: &[u8],
        apply: &dyn Fn(Strategy, &[u8]) -> crate::masking::Masked,
    ) -> Result<Option<Vec<u8>>, String> {
        use crate::masking::Masked;
        let (body, eol) = match row.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (row, &b""[..]),
        };
        let fields = if self.csv {
            csv_fields(body, self.delimiter, self.quote, self.escape)?
        } else {
            text_fields(body, self.delimiter)
        };
        if fields.len() != self.fields.len() {
            return Err(format!(
                "a COPY row has {} fields where {} were expected",
                fields.len(),
                self.fields.len()
            ));
        }
        let mut changed = false;
        let mut out = Vec::with_capacity(row.len() + 16);
        for (i, (raw, quoted)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            let strategy = self.fields.get(i).copied().flatten();
            let is_null = !quoted && *raw == self.null.as_bytes();
            match strategy {
                Some(strategy) if !is_null => {
                    changed = true;
                    let value = if self.csv {
                        csv_unquote(raw, *quoted, self.quote, self.escape)
                    } else {
                        text_unescape(raw)
                    };
                    match apply(strategy, &value) {
                        Masked::Null => out.extend_from_slice(self.null.as_bytes()),
                        Masked::Value(v) if self.csv => {
                            out.push(self.quote);
                            for &b in &v {
                                if b == self.quote || b == self.escape {
                                    out.push(self.escape);
                                }
                                out.push(b);
                            }
                            out.push(self.quote);
                        }
                        Masked::Value(v) => text_escape(&v, self.delimiter, &mut out),
                    }
                }
                _ => out.extend_from_slice(raw),
            }
        }
        out.extend_from_slice(eol);
        Ok(changed.then_some(out))
    }
}

/// Raw fields of a text-format row (escapes kept), unquoted.
fn text_fields(body: &[u8], delimiter: u8) -> Vec<(&[u8], bool)> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < body.len() {
        if body[i] == b'\\' {
            i += 2;
            continue;
        }
        if body[i] == delimiter {
            out.push((&body[start..i], false));
            start = i + 1;
        }
        i += 1;
    }
    out.push((&body[start.min(body.len())..], false));
    out
}

/// PostgreSQL's text-format escapes decoded.
fn text_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i >= raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
    out
}

fn text_escape(v: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            _ => out.push(b),
        }
    }
}

/// Raw fields of a CSV row (a quoted field with its quotes) and whether
/// each was quoted.
fn csv_fields(
    body: &[u8],
    delimiter: u8,
    quote: u8,
    escape: u8,
) -> Result<Vec<(&[u8], bool)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        if body.get(i) == Some(&quote) {
            i += 1;
            loop {
                match body.get(i) {
                    None => return Err("an unterminated quoted CSV field".into()),
                    Some(&b)
                        if b == escape
                            && body.get(i + 1).is_some_and(|n| *n == quote || *n == escape)
                            && (escape != quote || body.get(i + 1) == Some(&quote)) =>
                    {
                        i += 2
                    }
                    Some(&b) if b == quote => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push((&body[start..i], true));
        } else {
            while i < body.len() && body[i] != delimiter {
                i += 1;
            }
            out.push((&body[start..i], false));
        }
        match body.get(i) {
            None => return Ok(out),
            Some(&b) if b == delimiter => i += 1,
            Some(_) => return Err("a CSV field continues after its closing quote".into()),
        }
    }
}

fn csv_unquote(raw: &[u8], quoted: bool, quote: u8, escape: u8) -> Vec<u8> {
    if !quoted || raw.len() < 2 {
        return raw.to_vec();
    }
    let inner = &raw[1..raw.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b == escape
            && inner
                .get(i + 1)
                .is_some_and(|n| *n == quote || *n == escape)
        {
            out.push(inner[i + 1]);
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// What the analysis found in an allowed query text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnFacts {
    /// Masked columns the text reads (bare outputs and allowed
    /// conditions), `schema.table.column`, and tables with masked columns
    /// it writes, deduplicated: the server's errors and notices for it may
    /// quote their values.
    pub masked: Vec<String>,
    /// A COPY TO STDOUT that copies masked columns.
    pub copy: Option<CopyMasking>,
    /// The statement names a relation the catalog does not know (created
    /// after the catalog was read, or not existing): the decision holds
    /// only for a current catalog.
    pub unknown_relations: bool,
}

impl ColumnFacts {
    /// Whether the statement reads any masked column.
    pub fn reads_masked(&self) -> bool {
        !self.masked.is_empty()
    }
}

/// Analyse `sql` (one or more statements) against `catalog`.
pub fn check(
    sql: &str,
    catalog: &ColumnCatalog,
    mode: MaskedInPredicates,
) -> Result<ColumnFacts, ColumnError> {
    let tree = parse_tree(sql)?;
    let stmts = tree
        .get("stmts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut a = Analyzer {
        catalog,
        mode,
        masked: Vec::new(),
        ctes: Vec::new(),
        copy: None,
        copy_fields: None,
        unknown: std::cell::Cell::new(false),
        negated: 0,
    };
    for raw in stmts {
        if let Some(stmt) = raw.get("stmt") {
            a.statement(stmt, &[], Role::Top, 0)?;
        }
    }
    if a.copy.is_some() && stmts.len() > 1 {
        return Err(ColumnError::Unsupported(
            "a COPY of masked columns must be sent as a query of its own".into(),
        ));
    }
    Ok(ColumnFacts {
        unknown_relations: a.unknown.get(),
        masked: a.masked,
        copy: a.copy,
    })
}

// ---------------------------------------------------------------------------
// The analysis.

/// A masked column a value comes from.
#[derive(Debug, Clone)]
struct Src {
    column: String,
    mask: ColumnMask,
    /// The value is not the column itself (through a sub-query, CTE,
    /// merged JOIN column, expression or whole row): PostgreSQL reports no
    /// origin for it, so it is never masked as a result column.
    derived: bool,
    /// The column is in the catalog (so in the proxy's column map): a
    /// column known only from a rule cannot be masked as a result column.
    cataloged: bool,
}

type Taint = Vec<Src>;

fn derive(t: &[Src]) -> Taint {
    t.iter()
        .map(|s| Src {
            derived: true,
            ..s.clone()
        })
        .collect()
}

/// A column of a FROM item (or an output column).
#[derive(Debug, Clone)]
struct Col {
    name: String,
    taint: Taint,
}

/// The columns of a FROM item.
#[derive(Debug, Clone)]
enum Cols {
    Known(Vec<Col>),
    /// Not known: a relation outside the catalog (`table` for its rules)
    /// or a function's result.
    Unknown {
        table: Option<(Option<String>, String)>,
    },
}

/// One FROM item visible in a scope.
#[derive(Debug, Clone)]
struct Entry {
    /// Alias, or relation name; `None` for an unaliased sub-query or a
    /// join's merged columns.
    refname: Option<String>,
    /// Schema of an unaliased relation (for `schema.table.column`).
    schema: Option<String>,
    cols: Cols,
    /// Columns merged by JOIN USING / NATURAL JOIN (visible unqualified).
    merged: bool,
    /// `cols` holds more than `*` expands to (several relations a name
    /// may denote), so output positions are not known.
    inexact: bool,
}

type Level = Vec<Entry>;

/// Where a select list's values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// To the client as result columns (masked by their origin).
    Top,
    /// To the client as COPY rows (masked by position).
    Copy,
    /// Elsewhere (a table, another expression...): masked values refused.
    Inner(&'static str),
    /// Into a condition (a sub-query in WHERE...).
    Pred(Region),
    /// The select list of EXISTS, a condition on the sub-query's rows. No
    /// place in a statement is evaluated for nothing: the list runs
    /// (aggregates, set-returning functions, casts that fail...) and can
    /// decide whether a row exists, so every expression in it is judged as
    /// a condition; only a bare column reference, which can neither fail
    /// nor change the rows, is left out.
    Exists(Region),
}

/// The kind of place an expression stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// A top-level select list item (or RETURNING...).
    Output,
    /// Data that goes somewhere the masking cannot follow.
    Inner(&'static str),
    /// A WHERE / ON / HAVING condition.
    Filter,
    /// Ordering or grouping.
    Order(&'static str),
}

/// How an expression stands in its region.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// The region's value itself (a select list item, a condition's root
    /// reached through AND/OR/NOT only).
    Bare,
    /// An operand of an equality-like comparison with literals or
    /// parameters, at a condition's root.
    Compared,
    /// Inside an expression.
    Inside(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pos {
    region: Region,
    shape: Shape,
}

impl Pos {
    fn new(region: Region) -> Self {
        Pos {
            region,
            shape: Shape::Bare,
        }
    }

    fn inside(&self, what: impl Into<String>) -> Pos {
        Pos {
            region: self.region,
            shape: match &self.shape {
                // The innermost construct names the use.
                Shape::Inside(w) => Shape::Inside(w.clone()),
                _ => Shape::Inside(what.into()),
            },
        }
    }
}

/// One CTE of a `WITH` in scope: its name and (once analysed) columns.
struct CteFrame {
    ctes: Vec<(String, Option<Vec<Col>>)>,
    visible: usize,
}

struct Analyzer<'a> {
    catalog: &'a ColumnCatalog,
    mode: MaskedInPredicates,
    masked: Vec<String>,
    ctes: Vec<CteFrame>,
    copy: Option<CopyMasking>,
    /// The field strategies of the select list of a COPY's query.
    copy_fields: Option<Vec<Option<Strategy>>>,
    /// A relation name that is neither in the catalog nor a system
    /// relation was resolved (see [`ColumnFacts::unknown_relations`]).
    unknown: std::cell::Cell<bool>,
    /// Conditions being walked under this many `NOT`s (a negated `IS
    /// NULL` is an `IS NOT NULL` to the planner).
    negated: usize,
}

type R<T> = Result<T, ColumnError>;

/// Functions whose argument reaches another session or the server's
/// state (never allowed to see a masked value, whatever the mode).
const CHANNEL_FUNCTIONS: &[&str] = &["pg_notify", "set_config", "setval", "nextval"];

impl Analyzer<'_> {
    fn too_deep(depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(AnalyzeError::Unsupported {
                reason: "the statement is nested too deeply to analyse".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Judge a value's masked sources at `pos`.
    fn judge(&mut self, taint: &[Src], pos: &Pos) -> R<()> {
        for s in taint {
            self.judge_one(s, pos)?;
        }
        Ok(())
    }

    fn judge_one(&mut self, s: &Src, pos: &Pos) -> R<()> {
        let refuse = |usage: String| {
            Err(ColumnError::MaskedUse {
                column: s.column.clone(),
                rule: s.mask.rule.clone(),
                usage,
            })
        };
        let inside = |what: &str| format!("inside {what}");
        match (pos.region, &pos.shape) {
            (Region::Output, Shape::Bare) if !s.derived && s.cataloged => {}
            (Region::Output, Shape::Bare) if !s.derived => {
                return Err(ColumnError::UnknownColumns {
                    relation: s.column.clone(),
                    rule: s.mask.rule.clone(),
                    usage: "masking it as a result column".into(),
                });
            }
            (Region::Output, Shape::Bare) => {
                return refuse(
                    "through a sub-query, CTE, set operation, JOIN USING column or whole-row value"
                        .into(),
                );
            }
            (Region::Output, Shape::Inside(w)) => return refuse(inside(w)),
            (Region::Output, Shape::Compared) => return refuse("in a comparison".into()),
            (Region::Inner(why), Shape::Inside(w)) => {
                return refuse(format!("{} ({why})", inside(w)));
            }
            (Region::Inner(why), _) => return refuse(why.to_owned()),
            (Region::Filter, shape) => {
                let allowed = match self.mode {
                    MaskedInPredicates::Refuse => false,
                    MaskedInPredicates::Equality => *shape == Shape::Compared && !s.derived,
                    MaskedInPredicates::Any => true,
                };
                if !allowed {
                    let how = match shape {
                        Shape::Inside(w) => inside(w),
                        Shape::Compared => "compared".to_owned(),
                        Shape::Bare => "as a condition".to_owned(),
                    };
                    return refuse(format!(
                        "in a condition ({how}), and masked_in_predicates = \"{}\" {}",
                        self.mode.as_str(),
                        match self.mode {
                            MaskedInPredicates::Refuse => "allows no condition on it",
                            _ =>
                                "allows only =, <>, IN, IS [NOT] DISTINCT FROM against literals or parameters, or IS NULL",
                        }
                    ));
                }
            }
            (Region::Order(what), _) => {
                if self.mode != MaskedInPredicates::Any {
                    return refuse(format!(
                        "in {what}, and masked_in_predicates = \"{}\" does not allow ordering or grouping by it",
                        self.mode.as_str()
                    ));
                }
            }
        }
        if !self.masked.contains(&s.column) {
            self.masked.push(s.column.clone());
        }
        Ok(())
    }

    /// A side channel function: its arguments never see a masked value.
    fn channel(&self, name: &str, taint: &[Src]) -> R<()> {
        if let Some(s) = taint.first() {
            return Err(ColumnError::MaskedUse {
                column: s.column.clone(),
                rule: s.mask.rule.clone(),
                usage: format!("as an argument of {name}(), which sends it outside the result"),
            });
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // Statements.

    /// One statement; returns its output columns (RETURNING, select list).
    fn statement(&mut self, v: &Value, outer: &[Level], role: Role, depth: usize) -> R<Vec<Col>> {
        Self::too_deep(depth)?;
        let Some((ty, f)) = as_node(v) else {
            // A typed SelectStmt (set operation branches).
            if let Some(o) = v.as_object() {
                return self.select(o, outer, role, depth + 1);
            }
            return Ok(Vec::new());
        };
        match ty {
            "SelectStmt" => self.select(f, outer, role, depth + 1),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.with(f, outer, depth, |a| a.modify(ty, f, outer, role, depth + 1))
            }
            "CopyStmt" => {
                self.copy_stmt(f, depth + 1)?;
                Ok(Vec::new())
            }
            "ExplainStmt" | "PrepareStmt" => match f.get("query") {
                Some(q) => self.statement(q, outer, role, depth + 1),
                None => Ok(Vec::new()),
            },
            "DeclareCursorStmt" => match f.get("query") {
                Some(q) => self.statement(q, outer, role, depth + 1),
                None => Ok(Vec::new()),
            },
            "CreateTableAsStmt" => match f.get("query") {
                Some(q) => {
                    self.statement(q, outer, Role::Inner("written to a new table"), depth + 1)
                }
                None => Ok(Vec::new()),
            },
            "ViewStmt" => match f.get("query") {
                Some(q) => self.statement(q, outer, Role::Inner("stored in a view"), depth + 1),
                None => Ok(Vec::new()),
            },
            _ => {
                // Any other statement: its nested queries and expressions
                // keep their values inside the server (rules, functions,
                // DDL); judged as data that escapes the masking.
                self.generic(
                    f,
                    outer,
                    &Pos::new(Region::Inner("inside a utility statement")),
                    depth + 1,
                )?;
                Ok(Vec::new())
            }
        }
    }

    /// The `WITH` clause of `f` in scope while `rest` runs.
    fn with<T>(
        &mut self,
        f: &Obj,
        outer: &[Level],
        depth: usize,
        rest: impl FnOnce(&mut Self) -> R<T>,
    ) -> R<T> {
        let Some(with) = f.get("with_clause").and_then(Value::as_object) else {
            return rest(self);
        };
        let ctes = list_field(with, "ctes");
        let recursive = bool_field(with, "recursive");
        let names: Vec<(String, Option<Vec<Col>>)> = ctes
            .iter()
            .filter_map(|c| fields_of(c, "CommonTableExpr"))
            .map(|c| (str_field(c, "ctename").to_owned(), None))
            .collect();
        let n = names.len();
        self.ctes.push(CteFrame {
            ctes: names,
            visible: if recursive { n } else { 0 },
        });
        let result = (|| {
            for (i, cte) in ctes.iter().enumerate() {
                let Some(c) = fields_of(cte, "CommonTableExpr") else {
                    continue;
                };
                if let Some(frame) = self.ctes.last_mut() {
                    frame.visible = if recursive { n } else { i };
                }
                let mut cols = match c.get("ctequery") {
                    Some(q) => {
                        self.statement(q, outer, Role::Inner("as the output of a CTE"), depth + 1)?
                    }
                    None => Vec::new(),
                };
                rename(&mut cols, list_field(c, "aliascolnames"));
                if let Some(frame) = self.ctes.last_mut()
                    && let Some(slot) = frame.ctes.get_mut(i)
                {
                    slot.1 = Some(cols.into_iter().map(|c| derived_col(&c)).collect());
                }
            }
            if let Some(frame) = self.ctes.last_mut() {
                frame.visible = n;
            }
            rest(self)
        })();
        self.ctes.pop();
        result
    }

    /// A visible CTE named `name`: `Some(columns)` (`None` inside: being
    /// analysed, i.e. a recursive reference).
    fn cte(&self, name: &str) -> Option<Option<Vec<Col>>> {
        for frame in self.ctes.iter().rev() {
            if let Some((_, cols)) = frame.ctes[..frame.visible.min(frame.ctes.len())]
                .iter()
                .find(|(n, _)| n == name)
            {
                return Some(cols.clone());
            }
        }
        None
    }

    /// A SELECT (plain, VALUES or set operation).
    fn select(&mut self, f: &Obj, outer: &[Level], role: Role, depth: usize) -> R<Vec<Col>> {
        Self::too_deep(depth)?;
        let role = if f.get("into_clause").is_some_and(|v| !v.is_null()) {
            Role::Inner("written to a new table by SELECT INTO")
        } else {
            role
        };
        self.with(f, outer, depth, |a| a.select_body(f, outer, role, depth))
    }

    fn select_body(&mut self, f: &Obj, outer: &[Level], role: Role, depth: usize) -> R<Vec<Col>> {
        let op = int_field(f, "op");
        if op != SetOperation::SetopNone as i64 && op != SetOperation::Undefined as i64 {
            let branch_role = match role {
                Role::Top | Role::Copy => {
                    Role::Inner("in a set operation (UNION, INTERSECT, EXCEPT)")
                }
                // INTERSECT and EXCEPT compare the values of the branches.
                Role::Exists(r) => Role::Pred(r),
                r => r,
            };
            let left = match f.get("larg") {
                Some(l) => self.statement(l, outer, branch_role, depth + 1)?,
                None => Vec::new(),
            };
            let right = match f.get("rarg") {
                Some(r) => self.statement(r, outer, branch_role, depth + 1)?,
                None => Vec::new(),
            };
            let mut out: Vec<Col> = left.iter().map(derived_col).collect();
            for (i, c) in right.iter().enumerate() {
                if let Some(o) = out.get_mut(i) {
                    o.taint.extend(derive(&c.taint));
                }
            }
            return self.over_outputs(f, outer, out, depth);
        }
        let values = list_field(f, "values_lists");
        if !values.is_empty() {
            let pos = Pos::new(match role {
                Role::Pred(r) | Role::Exists(r) => r,
                _ => Region::Inner("in a VALUES list"),
            });
            let mut out: Vec<Col> = Vec::new();
            for row in values {
                let items = match as_node(row) {
                    Some(("List", l)) => list_field(l, "items"),
                    _ => std::slice::from_ref(row),
                };
                for (i, item) in items.iter().enumerate() {
                    let t = self.expr(item, outer, &pos, depth + 1)?;
                    if out.len() <= i {
                        out.push(Col {
                            name: format!("column{}", i + 1),
                            taint: Vec::new(),
                        });
                    }
                    out[i].taint.extend(derive(&t));
                }
            }
            return self.over_outputs(f, outer, out, depth);
        }
        // FROM: one new level, LATERAL items see the items before them.
        let mut scope: Vec<Level> = outer.to_vec();
        scope.push(Vec::new());
        for item in list_field(f, "from_clause") {
            let entries = self.range_item(item, &scope, depth + 1)?;
            if let Some(level) = scope.last_mut() {
                level.extend(entries);
            }
        }
        // The select list.
        let (out, exact) = self.target_list(list_field(f, "target_list"), &scope, role, depth)?;
        // Conditions.
        if let Some(w) = f.get("where_clause") {
            self.expr(w, &scope, &Pos::new(Region::Filter), depth + 1)?;
        }
        if let Some(h) = f.get("having_clause") {
            self.expr(h, &scope, &Pos::new(Region::Filter), depth + 1)?;
        }
        // Grouping and ordering.
        self.sort_items(
            list_field(f, "group_clause"),
            &scope,
            &out,
            exact,
            "GROUP BY",
            depth,
        )?;
        let distinct = list_field(f, "distinct_clause");
        if !distinct.is_empty() {
            if distinct.iter().all(|d| as_node(d).is_none()) {
                // Plain DISTINCT: grouped by every output column.
                for c in &out {
                    self.judge(&c.taint, &Pos::new(Region::Order("SELECT DISTINCT")))?;
                }
            } else {
                self.sort_items(distinct, &scope, &out, exact, "DISTINCT ON", depth)?;
            }
        }
        for w in list_field(f, "window_clause") {
            self.window(w, &scope, depth + 1)?;
        }
        self.sort_items(
            list_field(f, "sort_clause"),
            &scope,
            &out,
            exact,
            "ORDER BY",
            depth,
        )?;
        self.limits(f, &scope, depth)?;
        Ok(out)
    }

    /// ORDER BY / LIMIT of a set operation or VALUES: over its output
    /// columns.
    fn over_outputs(
        &mut self,
        f: &Obj,
        outer: &[Level],
        out: Vec<Col>,
        depth: usize,
    ) -> R<Vec<Col>> {
        let mut scope = outer.to_vec();
        scope.push(vec![Entry {
            refname: None,
            schema: None,
            cols: Cols::Known(out.clone()),
            merged: false,
            inexact: false,
        }]);
        let sort = list_field(f, "sort_clause");
        self.sort_items(sort, &scope, &out, true, "ORDER BY", depth)?;
        self.limits(f, &scope, depth)?;
        Ok(out)
    }

    fn limits(&mut self, f: &Obj, scope: &[Level], depth: usize) -> R<()> {
        let pos = Pos::new(Region::Inner("in LIMIT/OFFSET"));
        self.fields_at(f, &["limit_count", "limit_offset"], scope, &pos, depth)
    }

    /// A select list; returns its output columns and whether they are
    /// exactly known (every `*` expanded over known columns).
    fn target_list(
        &mut self,
        items: &[Value],
        scope: &[Level],
        role: Role,
        depth: usize,
    ) -> R<(Vec<Col>, bool)> {
        let pos = Pos::new(match role {
            Role::Top | Role::Copy => Region::Output,
            Role::Inner(why) => Region::Inner(why),
            Role::Pred(r) => return self.target_list_in(items, scope, r, depth, false),
            Role::Exists(r) => return self.target_list_in(items, scope, r, depth, true),
        });
        let mut out = Vec::new();
        let mut exact = true;
        let mut copy_fields: Vec<Option<Strategy>> = Vec::new();
        for item in items {
            let Some(rt) = fields_of(item, "ResTarget") else {
                continue;
            };
            let Some(val) = rt.get("val") else { continue };
            // `*` and `x.*` in a select list expand to bare columns.
            if let Some(("ColumnRef", cr)) = as_node(val)
                && let Some((qual, None)) = column_ref_parts(cr)
            {
                let (cols, all_known) = self.star(&qual, scope, "*")?;
                exact &= all_known;
                for c in cols {
                    self.judge(&c.taint, &pos)?;
                    copy_fields.push(copy_strategy(&c.taint));
                    out.push(Col {
                        name: c.name.clone(),
                        taint: c.taint.clone(),
                    });
                }
                continue;
            }
            let taint = self.expr(val, scope, &pos, depth + 1)?;
            copy_fields.push(copy_strategy(&taint));
            let name = match str_field(rt, "name") {
                "" => figure_colname(val),
                n => n.to_owned(),
            };
            out.push(Col { name, taint });
        }
        if role == Role::Copy {
            if !exact && copy_fields.iter().any(Option::is_some) {
                return Err(ColumnError::Unsupported(
                    "COPY of masked columns through * over a join or a relation whose columns Warden does not know: name the columns"
                        .into(),
                ));
            }
            self.copy_fields = Some(copy_fields);
        }
        Ok((out, exact))
    }

    /// The select list of a sub-query standing in a condition.
    fn target_list_in(
        &mut self,
        items: &[Value],
        scope: &[Level],
        region: Region,
        depth: usize,
        exists: bool,
    ) -> R<(Vec<Col>, bool)> {
        let pos = Pos::new(region).inside("a sub-query");
        let mut out = Vec::new();
        for item in items {
            let Some(rt) = fields_of(item, "ResTarget") else {
                continue;
            };
            let Some(val) = rt.get("val") else { continue };
            if exists && as_node(val).is_some_and(|(ty, _)| ty == "ColumnRef") {
                continue;
            }
            let taint = self.expr(val, scope, &pos, depth + 1)?;
            out.push(Col {
                name: figure_colname(val),
                taint,
            });
        }
        Ok((out, false))
    }

    /// ORDER BY / GROUP BY / DISTINCT ON items: an output column by
    /// position or name, else an expression of the FROM items.
    fn sort_items(
        &mut self,
        items: &[Value],
        scope: &[Level],
        out: &[Col],
        exact: bool,
        what: &'static str,
        depth: usize,
    ) -> R<()> {
        let pos = Pos::new(Region::Order(what));
        for item in items {
            let node = match as_node(item) {
                Some(("SortBy", s)) => match s.get("node") {
                    Some(n) => n,
                    None => continue,
                },
                Some(("GroupingSet", g)) => {
                    self.sort_items(list_field(g, "content"), scope, out, exact, what, depth)?;
                    continue;
                }
                _ => item,
            };
            // Output column by position.
            if let Some(("AConst", _)) = as_node(node)
                && let Some(k) = const_text(node).and_then(|t| t.parse::<usize>().ok())
            {
                if exact {
                    if let Some(c) = k.checked_sub(1).and_then(|i| out.get(i)) {
                        self.judge(&c.taint, &pos)?;
                    }
                } else {
                    for c in out {
                        self.judge(&c.taint, &pos)?;
                    }
                }
                continue;
            }
            // Output column by name (ORDER BY prefers it, GROUP BY the
            // input column: both are judged).
            if let Some(("ColumnRef", cr)) = as_node(node)
                && let Some((qual, Some(name))) = column_ref_parts(cr)
                && qual.is_empty()
            {
                for c in out.iter().filter(|c| c.name == name) {
                    self.judge(&c.taint, &pos)?;
                }
            }
            self.expr(node, scope, &pos, depth + 1)?;
            if let Some(("SortBy", s)) = as_node(item) {
                for o in list_field(s, "use_op") {
                    self.expr(o, scope, &pos, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn window(&mut self, w: &Value, scope: &[Level], depth: usize) -> R<()> {
        let Some(wd) = fields_of(w, "WindowDef") else {
            return Ok(());
        };
        let none: &[Col] = &[];
        self.sort_items(
            list_field(wd, "partition_clause"),
            scope,
            none,
            true,
            "a window's PARTITION BY",
            depth,
        )?;
        self.sort_items(
            list_field(wd, "order_clause"),
            scope,
            none,
            true,
            "a window's ORDER BY",
            depth,
        )?;
        let frame = Pos::new(Region::Inner("in a window frame"));
        self.fields_at(wd, &["start_offset", "end_offset"], scope, &frame, depth)
    }

    /// The expressions in fields `keys` of `f`, at `pos`.
    fn fields_at(
        &mut self,
        f: &Obj,
        keys: &[&str],
        scope: &[Level],
        pos: &Pos,
        depth: usize,
    ) -> R<()> {
        for key in keys {
            if let Some(v) = f.get(*key) {
                self.expr(v, scope, pos, depth + 1)?;
            }
        }
        Ok(())
    }

    /// INSERT / UPDATE / DELETE / MERGE.
    fn modify(
        &mut self,
        ty: &str,
        f: &Obj,
        outer: &[Level],
        role: Role,
        depth: usize,
    ) -> R<Vec<Col>> {
        let target = match f.get("relation").and_then(|r| fields_of(r, "RangeVar")) {
            Some(rv) => self.range_var(rv, false),
            None => Entry {
                refname: None,
                schema: None,
                cols: Cols::Unknown { table: None },
                merged: false,
                inexact: false,
            },
        };
        // The server's errors about a written row quote it whole
        // ("Failing row contains (...)"), masked columns included.
        let masked_target = match &target.cols {
            Cols::Known(cols) => cols.iter().any(|c| !c.taint.is_empty()),
            Cols::Unknown {
                table: Some((schema, name)),
            } => self
                .catalog
                .loose_rule(schema.as_deref(), name, None)
                .is_some(),
            Cols::Unknown { table: None } => false,
        };
        if masked_target {
            let marker = format!(
                "writes {}, which has masked columns",
                target.refname.as_deref().unwrap_or("a table")
            );
            if !self.masked.contains(&marker) {
                self.masked.push(marker);
            }
        }
        let written = match ty {
            "InsertStmt" => "as a value written by INSERT",
            "UpdateStmt" => "as a value written by UPDATE",
            _ => "as a value written by MERGE",
        };
        let mut scope: Vec<Level> = outer.to_vec();
        scope.push(vec![target.clone()]);
        match ty {
            "InsertStmt" => {
                if let Some(s) = f.get("select_stmt") {
                    self.statement(s, outer, Role::Inner(written), depth + 1)?;
                }
                if let Some(oc) = f.get("on_conflict_clause").and_then(Value::as_object) {
                    // EXCLUDED holds the row being inserted (the client's).
                    let mut excluded = target.clone();
                    excluded.refname = Some("excluded".into());
                    excluded.schema = None;
                    if let Cols::Known(cols) = &mut excluded.cols {
                        for c in cols.iter_mut() {
                            c.taint.clear();
                        }
                    } else {
                        excluded.cols = Cols::Unknown { table: None };
                    }
                    let mut sc = scope.clone();
                    if let Some(level) = sc.last_mut() {
                        level.push(excluded);
                    }
                    self.assignments(list_field(oc, "target_list"), &sc, written, depth)?;
                    if let Some(w) = oc.get("where_clause") {
                        self.expr(w, &sc, &Pos::new(Region::Filter), depth + 1)?;
                    }
                    if let Some(infer) = oc.get("infer").and_then(Value::as_object)
                        && let Some(w) = infer.get("where_clause")
                    {
                        self.expr(w, &sc, &Pos::new(Region::Filter), depth + 1)?;
                    }
                }
            }
            "UpdateStmt" | "DeleteStmt" => {
                let key = if ty == "UpdateStmt" {
                    "from_clause"
                } else {
                    "using_clause"
                };
                for item in list_field(f, key) {
                    let entries = self.range_item(item, &scope, depth + 1)?;
                    if let Some(level) = scope.last_mut() {
                        level.extend(entries);
                    }
                }
                self.assignments(list_field(f, "target_list"), &scope, written, depth)?;
                if let Some(w) = f.get("where_clause") {
                    self.expr(w, &scope, &Pos::new(Region::Filter), depth + 1)?;
                }
            }
            _ => {
                if let Some(src) = f.get("source_relation") {
                    let entries = self.range_item(src, &scope, depth + 1)?;
                    if let Some(level) = scope.last_mut() {
                        level.extend(entries);
                    }
                }
                if let Some(j) = f.get("join_condition") {
                    self.expr(j, &scope, &Pos::new(Region::Filter), depth + 1)?;
                }
                for w in list_field(f, "merge_when_clauses") {
                    let Some(mw) = fields_of(w, "MergeWhenClause") else {
                        continue;
                    };
                    if let Some(c) = mw.get("condition") {
                        self.expr(c, &scope, &Pos::new(Region::Filter), depth + 1)?;
                    }
                    self.assignments(list_field(mw, "target_list"), &scope, written, depth)?;
                    for v in list_field(mw, "values") {
                        self.expr(v, &scope, &Pos::new(Region::Inner(written)), depth + 1)?;
                    }
                }
            }
        }
        // RETURNING: a select list over the target (and FROM/USING items).
        let returning = f
            .get("returning_clause")
            .and_then(Value::as_object)
            .map(|r| list_field(r, "exprs"))
            .or_else(|| Some(list_field(f, "returning_list")))
            .unwrap_or_default();
        let (out, _) = self.target_list(returning, &scope, role, depth)?;
        Ok(out)
    }

    /// `SET col = expr` items (UPDATE, ON CONFLICT, MERGE).
    fn assignments(
        &mut self,
        items: &[Value],
        scope: &[Level],
        written: &'static str,
        depth: usize,
    ) -> R<()> {
        let pos = Pos::new(Region::Inner(written));
        for item in items {
            let Some(rt) = fields_of(item, "ResTarget") else {
                continue;
            };
            for ind in list_field(rt, "indirection") {
                self.expr(ind, scope, &pos, depth + 1)?;
            }
            if let Some(v) = rt.get("val") {
                self.expr(v, scope, &pos, depth + 1)?;
            }
        }
        Ok(())
    }

    /// COPY: a relation's masked columns, or a query's bare masked
    /// outputs, are masked by position in text and CSV rows; binary COPY
    /// of a masked column is refused.
    fn copy_stmt(&mut self, f: &Obj, depth: usize) -> R<()> {
        if bool_field(f, "is_from") {
            // Rows come from the client; a WHERE filters them, not stored data.
            return Ok(());
        }
        let fields: Vec<Option<Strategy>> = if let Some(q) = f.get("query").filter(|q| !q.is_null())
        {
            self.copy_fields = None;
            self.statement(q, &[], Role::Copy, depth + 1)?;
            self.copy_fields.take().unwrap_or_default()
        } else if let Some(rv) = f.get("relation").and_then(|r| fields_of(r, "RangeVar")) {
            let cols = self.copy_relation(rv, list_field(f, "attlist"))?;
            for c in &cols {
                self.judge(&c.taint, &Pos::new(Region::Output))?;
            }
            cols.iter().map(|c| copy_strategy(&c.taint)).collect()
        } else {
            Vec::new()
        };
        if !fields.iter().any(Option::is_some) {
            return Ok(());
        }
        match copy_options(list_field(f, "options"))? {
            Some(mut m) => {
                m.fields = fields;
                self.copy = Some(m);
                Ok(())
            }
            None => Err(ColumnError::Unsupported(
                "COPY in binary format of masked columns: binary values cannot be masked in place; use text or CSV"
                    .into(),
            )),
        }
    }

    /// The copied columns of `COPY relation [(columns)]`.
    fn copy_relation(&self, rv: &Obj, attlist: &[Value]) -> R<Vec<Col>> {
        let entry = self.range_var(rv, false);
        let attlist: Vec<String> = attlist
            .iter()
            .filter_map(string_node)
            .map(str::to_owned)
            .collect();
        if attlist.is_empty() {
            // The server leaves stored generated columns out of a COPY of
            // the whole relation.
            let generated: Vec<&str> = match &entry.cols {
                Cols::Known(_) => {
                    let schema = Some(str_field(rv, "schemaname")).filter(|s| !s.is_empty());
                    self.catalog
                        .candidates(schema, str_field(rv, "relname"))
                        .iter()
                        .flat_map(|r| r.columns.iter())
                        .filter(|c| c.generated)
                        .map(|c| c.name.as_str())
                        .collect()
                }
                Cols::Unknown { .. } => Vec::new(),
            };
            let (cols, exact) = self.star(
                &[entry.refname.clone().unwrap_or_default()],
                &[vec![entry]],
                "COPY of all its columns",
            )?;
            let cols: Vec<Col> = cols
                .into_iter()
                .filter(|c| !generated.contains(&c.name.as_str()))
                .collect();
            if !exact {
                if cols.iter().any(|c| !c.taint.is_empty()) {
                    return Err(ColumnError::Unsupported(
                        "COPY of a relation whose name denotes several relations with masked columns: qualify it with its schema".into(),
                    ));
                }
                // Unknown columns, but no rule names the relation.
                return Ok(Vec::new());
            }
            return Ok(cols);
        }
        Ok(attlist
            .iter()
            .map(|a| Col {
                name: a.clone(),
                taint: entry_column(self.catalog, &entry, a),
            })
            .collect())
    }

    // -----------------------------------------------------------------
    // FROM items.

    fn range_var(&self, rv: &Obj, may_be_cte: bool) -> Entry {
        let schema = Some(str_field(rv, "schemaname")).filter(|s| !s.is_empty());
        let name = str_field(rv, "relname");
        let alias = rv.get("alias").and_then(Value::as_object);
        let colnames = alias.map(|a| list_field(a, "colnames")).unwrap_or_default();
        let refname = alias
            .map(|a| str_field(a, "aliasname").to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| name.to_owned());
        let (cols, inexact) = if may_be_cte
            && schema.is_none()
            && let Some(c) = self.cte(name)
        {
            match c {
                Some(mut cols) => {
                    rename(&mut cols, colnames);
                    (Cols::Known(cols), false)
                }
                None => (Cols::Unknown { table: None }, false),
            }
        } else {
            self.relation_cols(schema, name, colnames)
        };
        Entry {
            refname: Some(refname),
            schema: if alias.is_some() {
                None
            } else {
                schema.map(str::to_owned)
            },
            cols,
            merged: false,
            inexact,
        }
    }

    /// The columns of a catalog relation, renamed by an alias list. An
    /// unqualified name may be any relation of that name: of the same
    /// shape, their masks are merged by position; of different shapes,
    /// the entry has the columns of all of them (`true`: `*` is then not
    /// exactly known).
    fn relation_cols(&self, schema: Option<&str>, name: &str, colnames: &[Value]) -> (Cols, bool) {
        let cands = self.catalog.candidates(schema, name);
        if cands.is_empty() {
            if !self.catalog.is_system(schema, name) {
                self.unknown.set(true);
            }
            let table = Some((schema.map(str::to_owned), name.to_owned()));
            return (Cols::Unknown { table }, false);
        }
        let per: Vec<Vec<Col>> = cands
            .iter()
            .map(|r| {
                let mut cols: Vec<Col> = r
                    .columns
                    .iter()
                    .map(|c| Col {
                        name: c.name.clone(),
                        taint: c
                            .mask
                            .clone()
                            .map(|mask| Src {
                                column: format!(
                                    "{}.{}",
                                    display_rel(Some(&r.schema), &r.name),
                                    c.name
                                ),
                                mask,
                                derived: false,
                                cataloged: true,
                            })
                            .into_iter()
                            .collect(),
                    })
                    .collect();
                rename(&mut cols, colnames);
                cols
            })
            .collect();
        let first = &per[0];
        let same_shape = per.iter().all(|cols| {
            cols.len() == first.len() && cols.iter().zip(first).all(|(a, b)| a.name == b.name)
        });
        if !same_shape {
            return (Cols::Known(per.concat()), true);
        }
        let mut merged = first.clone();
        for cols in &per[1..] {
            for (m, c) in merged.iter_mut().zip(cols) {
                m.taint.extend(c.taint.iter().cloned());
            }
        }
        (Cols::Known(merged), false)
    }

    /// Entries a FROM item adds to its level.
    fn range_item(&mut self, item: &Value, scope: &[Level], depth: usize) -> R<Vec<Entry>> {
        Self::too_deep(depth)?;
        let Some((ty, f)) = as_node(item) else {
            return Ok(Vec::new());
        };
        // What LATERAL items see: everything of the enclosing levels and
        // the items before them on this level (given in `scope`).
        let outer_only = &scope[..scope.len().saturating_sub(1)];
        match ty {
            "RangeVar" => Ok(vec![self.range_var(f, true)]),
            "RangeSubselect" => {
                let sees = if bool_field(f, "lateral") {
                    scope
                } else {
                    outer_only
                };
                let mut cols = match f.get("subquery") {
                    Some(q) => self.statement(
                        q,
                        sees,
                        Role::Inner("as the output of a sub-query"),
                        depth + 1,
                    )?,
                    None => Vec::new(),
                };
                let alias = f.get("alias").and_then(Value::as_object);
                if let Some(a) = alias {
                    rename(&mut cols, list_field(a, "colnames"));
                }
                Ok(vec![Entry {
                    refname: alias.map(|a| str_field(a, "aliasname").to_owned()),
                    schema: None,
                    cols: Cols::Known(cols.iter().map(derived_col).collect()),
                    merged: false,
                    inexact: false,
                }])
            }
            "RangeFunction" => {
                let pos = Pos::new(Region::Inner("as an argument of a table function"));
                for func in list_field(f, "functions") {
                    // Each item is a List [FuncCall, coldeflist].
                    let parts = match as_node(func) {
                        Some(("List", l)) => list_field(l, "items"),
                        _ => std::slice::from_ref(func),
                    };
                    if let Some(call) = parts.first() {
                        self.expr(call, scope, &pos, depth + 1)?;
                    }
                }
                Ok(vec![function_entry(f, "alias", "coldeflist")])
            }
            "RangeTableFunc" | "JsonTable" => {
                let pos = Pos::new(Region::Inner("as an argument of a table function"));
                self.generic(f, scope, &pos, depth + 1)?;
                let alias = f.get("alias").and_then(Value::as_object);
                let mut names: Vec<String> = list_field(f, "columns")
                    .iter()
                    .filter_map(|c| as_node(c).map(|(_, o)| str_field(o, "colname").to_owned()))
                    .filter(|n| !n.is_empty())
                    .collect();
                if let Some(a) = alias {
                    for (i, n) in list_field(a, "colnames")
                        .iter()
                        .filter_map(string_node)
                        .enumerate()
                    {
                        if let Some(slot) = names.get_mut(i) {
                            *slot = n.to_owned();
                        }
                    }
                }
                Ok(vec![result_entry(
                    alias.map(|a| str_field(a, "aliasname").to_owned()),
                    names,
                )])
            }
            "RangeTableSample" => {
                let mut entries = match f.get("relation") {
                    Some(r) => self.range_item(r, scope, depth + 1)?,
                    None => Vec::new(),
                };
                let mut sc = scope.to_vec();
                if let Some(level) = sc.last_mut() {
                    level.extend(entries.iter().cloned());
                }
                let pos = Pos::new(Region::Inner("in TABLESAMPLE"));
                for key in ["args", "repeatable"] {
                    if let Some(v) = f.get(key) {
                        self.expr(v, &sc, &pos, depth + 1)?;
                    }
                }
                Ok(std::mem::take(&mut entries))
            }
            "JoinExpr" => self.join(f, scope, depth),
            _ => {
                self.generic(
                    f,
                    scope,
                    &Pos::new(Region::Inner("in a FROM item")),
                    depth + 1,
                )?;
                Ok(vec![Entry {
                    refname: None,
                    schema: None,
                    cols: Cols::Unknown { table: None },
                    merged: false,
                    inexact: false,
                }])
            }
        }
    }

    fn join(&mut self, f: &Obj, scope: &[Level], depth: usize) -> R<Vec<Entry>> {
        let mut left = match f.get("larg") {
            Some(l) => self.range_item(l, scope, depth + 1)?,
            None => Vec::new(),
        };
        // The right side of a join sees the left (LATERAL).
        let mut sc = scope.to_vec();
        if let Some(level) = sc.last_mut() {
            level.extend(left.iter().cloned());
        }
        let right = match f.get("rarg") {
            Some(r) => self.range_item(r, &sc, depth + 1)?,
            None => Vec::new(),
        };
        if let Some(level) = sc.last_mut() {
            level.extend(right.iter().cloned());
        }
        // Merged columns: USING names, or NATURAL: the common names.
        let mut using: Vec<String> = list_field(f, "using_clause")
            .iter()
            .filter_map(string_node)
            .map(str::to_owned)
            .collect();
        if bool_field(f, "is_natural") {
            match (known_names(&left), known_names(&right)) {
                (Some(l), Some(r)) => {
                    using = l.into_iter().filter(|n| r.contains(n)).collect();
                }
                _ => {
                    // Unknown columns on a side: any masked column of the
                    // other could be merged.
                    for e in left.iter().chain(&right) {
                        if let Cols::Known(cols) = &e.cols {
                            using.extend(
                                cols.iter()
                                    .filter(|c| !c.taint.is_empty())
                                    .map(|c| c.name.clone()),
                            );
                        }
                    }
                }
            }
        }
        let mut merged_cols = Vec::new();
        for name in &using {
            let mut taint = Vec::new();
            for e in left.iter().chain(&right) {
                taint.extend(entry_column(self.catalog, e, name));
            }
            // The join compares them (a condition between columns).
            self.judge(
                &taint,
                &Pos::new(Region::Order("JOIN USING / NATURAL JOIN")),
            )?;
            merged_cols.push(Col {
                name: name.clone(),
                taint: derive(&taint),
            });
        }
        if let Some(q) = f.get("quals") {
            self.expr(q, &sc, &Pos::new(Region::Filter), depth + 1)?;
        }
        let mut entries = Vec::new();
        if !merged_cols.is_empty() {
            entries.push(Entry {
                refname: f
                    .get("join_using_alias")
                    .and_then(Value::as_object)
                    .map(|a| str_field(a, "aliasname").to_owned())
                    .filter(|a| !a.is_empty()),
                schema: None,
                cols: Cols::Known(merged_cols.clone()),
                merged: true,
                inexact: false,
            });
        }
        if let Some(alias) = f.get("alias").and_then(Value::as_object) {
            // `(a JOIN b ...) AS j`: j has the merged columns, then the
            // others of each side; the inner names stay visible here
            // (more is judged, never less).
            let mut cols = merged_cols;
            let mut known = true;
            for e in left.iter().chain(&right) {
                if e.merged {
                    continue;
                }
                match &e.cols {
                    Cols::Known(c) => {
                        cols.extend(c.iter().filter(|c| !using.contains(&c.name)).cloned())
                    }
                    Cols::Unknown { .. } => known = false,
                }
            }
            if known {
                rename(&mut cols, list_field(alias, "colnames"));
            }
            entries.push(Entry {
                refname: Some(str_field(alias, "aliasname").to_owned()),
                schema: None,
                cols: if known {
                    Cols::Known(cols)
                } else {
                    Cols::Unknown { table: None }
                },
                merged: false,
                inexact: false,
            });
        }
        entries.append(&mut left);
        entries.extend(right);
        Ok(entries)
    }

    /// The columns of `*` (`qual` empty) or `qual.*`, and whether they
    /// are exactly the columns PostgreSQL expands (not when an item's
    /// columns are unknown, or a join merged some). An unknown relation
    /// that a rule names is refused.
    fn star(&self, qual: &[String], scope: &[Level], usage: &str) -> R<(Vec<Col>, bool)> {
        let entries: Vec<&Entry> = if qual.is_empty() {
            scope.last().map(|l| l.iter().collect()).unwrap_or_default()
        } else {
            find_entries(scope, qual).unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut exact = true;
        for e in entries {
            exact &= !e.merged && !e.inexact;
            match &e.cols {
                Cols::Known(cols) => out.extend(cols.iter().cloned()),
                Cols::Unknown { table } => {
                    if let Some((schema, name)) = table
                        && let Some(m) = self.catalog.loose_rule(schema.as_deref(), name, None)
                    {
                        return Err(ColumnError::UnknownColumns {
                            relation: display_rel(schema.as_deref(), name),
                            rule: m.rule,
                            usage: usage.to_owned(),
                        });
                    }
                    exact = false;
                }
            }
        }
        Ok((out, exact))
    }

    // -----------------------------------------------------------------
    // Expressions.

    /// An expression at `pos`; returns the masked sources of its value.
    fn expr(&mut self, v: &Value, scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        Self::too_deep(depth)?;
        let (ty, f) = match v {
            Value::Array(items) => {
                let mut t = Vec::new();
                for i in items {
                    t.extend(self.expr(i, scope, pos, depth + 1)?);
                }
                return Ok(t);
            }
            Value::Object(_) => match as_node(v) {
                Some(x) => x,
                None => {
                    let Some(o) = v.as_object() else {
                        return Ok(Vec::new());
                    };
                    return self.generic(o, scope, pos, depth + 1);
                }
            },
            _ => return Ok(Vec::new()),
        };
        match ty {
            "ColumnRef" => {
                let taint = self.column_ref(f, scope)?;
                self.judge(&taint, pos)?;
                Ok(taint)
            }
            "AConst" | "ParamRef" | "SQLValueFunction" => Ok(Vec::new()),
            "ResTarget" => match f.get("val") {
                Some(val) => self.expr(val, scope, pos, depth + 1),
                None => Ok(Vec::new()),
            },
            "BoolExpr" => {
                // AND / OR / NOT keep a condition's root.
                let inner = if pos.region == Region::Filter && pos.shape == Shape::Bare {
                    pos.clone()
                } else {
                    let op = if enum_is(f, "boolop", BoolExprType::AndExpr) {
                        "AND"
                    } else if enum_is(f, "boolop", BoolExprType::OrExpr) {
                        "OR"
                    } else {
                        "NOT"
                    };
                    pos.inside(format!("operator {op}"))
                };
                let not = enum_is(f, "boolop", BoolExprType::NotExpr);
                self.negated += usize::from(not);
                let t = self.expr_list(list_field(f, "args"), scope, &inner, depth);
                self.negated -= usize::from(not);
                Ok(derive(&t?))
            }
            "AExpr" => self.a_expr(f, scope, pos, depth),
            "NullTest" => {
                // Under `equality`, only `IS NULL` is a lookup: every row it
                // selects has the same value. `IS NOT NULL` (also as a
                // negated `IS NULL`) selects distinct unknown values, which
                // an index scan on the column returns in the column's
                // order (M7): judged as a use of the value.
                let not_null =
                    enum_is(f, "nulltesttype", NullTestType::IsNotNull) != (self.negated % 2 == 1);
                let inner = if pos.region == Region::Filter
                    && pos.shape == Shape::Bare
                    && !(not_null && self.mode == MaskedInPredicates::Equality)
                {
                    Pos {
                        region: pos.region,
                        shape: Shape::Compared,
                    }
                } else {
                    pos.inside(if not_null {
                        "IS NOT NULL (an index scan would return rows in the column's order)"
                    } else {
                        "IS NULL"
                    })
                };
                let t = match f.get("arg") {
                    Some(a) => self.expr(a, scope, &inner, depth + 1)?,
                    None => Vec::new(),
                };
                Ok(derive(&t))
            }
            "TypeCast" => {
                let tn = type_name(f.get("type_name"));
                let t = match f.get("arg") {
                    Some(a) => {
                        self.expr(a, scope, &pos.inside(format!("a cast to {tn}")), depth + 1)?
                    }
                    None => Vec::new(),
                };
                Ok(derive(&t))
            }
            "FuncCall" => self.func_call(f, scope, pos, depth),
            "SubLink" => self.sub_link(f, scope, pos, depth),
            "CaseExpr" => self.inside(f, scope, pos, "CASE", depth),
            "CoalesceExpr" => self.inside(f, scope, pos, "COALESCE", depth),
            "MinMaxExpr" => self.inside(f, scope, pos, "GREATEST/LEAST", depth),
            "RowExpr" => self.inside(f, scope, pos, "a ROW constructor", depth),
            "AArrayExpr" => self.inside(f, scope, pos, "an ARRAY constructor", depth),
            "AIndirection" => self.inside(f, scope, pos, "a subscript or field selection", depth),
            "CollateClause" => self.inside(f, scope, pos, "COLLATE", depth),
            "BooleanTest" => self.inside(f, scope, pos, "IS TRUE/FALSE/UNKNOWN", depth),
            "GroupingFunc" => self.inside(f, scope, pos, "GROUPING()", depth),
            "SelectStmt" | "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                let cols = self.statement(
                    v,
                    scope,
                    Role::Inner("as the output of a sub-query"),
                    depth + 1,
                )?;
                Ok(cols.iter().flat_map(|c| derive(&c.taint)).collect())
            }
            other => {
                let what = other.to_owned();
                self.inside(f, scope, pos, &what, depth)
            }
        }
    }

    fn expr_list(&mut self, items: &[Value], scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        let mut t = Vec::new();
        for i in items {
            t.extend(self.expr(i, scope, pos, depth + 1)?);
        }
        Ok(t)
    }

    /// Every field of `f` as an expression inside `what`.
    fn inside(
        &mut self,
        f: &Obj,
        scope: &[Level],
        pos: &Pos,
        what: &str,
        depth: usize,
    ) -> R<Taint> {
        let inner = pos.inside(what);
        let t = self.generic(f, scope, &inner, depth + 1)?;
        Ok(derive(&t))
    }

    /// Every field of a node, at `pos` (nested statements and
    /// expressions are recognised wherever they stand).
    fn generic(&mut self, f: &Obj, scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        Self::too_deep(depth)?;
        let mut t = Vec::new();
        for v in f.values() {
            if v.is_object() || v.is_array() {
                t.extend(self.expr(v, scope, pos, depth + 1)?);
            }
        }
        Ok(t)
    }

    fn a_expr(&mut self, f: &Obj, scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        use AExprKind as K;
        let op = name_list(list_field(f, "name"))
            .and_then(|n| n.last().cloned())
            .unwrap_or_default();
        let kind = |k: K| enum_is(f, "kind", k);
        let equality_op = matches!(op.as_str(), "=" | "<>" | "!=");
        let eq_like = (kind(K::AexprOp) && equality_op)
            || kind(K::AexprDistinct)
            || kind(K::AexprNotDistinct)
            || ((kind(K::AexprIn) || kind(K::AexprOpAny) || kind(K::AexprOpAll)) && equality_op);
        let (l, r) = (f.get("lexpr"), f.get("rexpr"));
        // `IS [NOT] DISTINCT FROM NULL` is the server's `IS [NOT] NULL`
        // (see NullTest).
        let null_const = |x: Option<&Value>| {
            x.and_then(|v| fields_of(v, "AConst"))
                .is_some_and(|c| bool_field(c, "isnull"))
        };
        let not_null =
            (null_const(l) || null_const(r)) && (kind(K::AexprDistinct) != (self.negated % 2 == 1));
        let at_root = pos.region == Region::Filter
            && pos.shape == Shape::Bare
            && !(not_null && self.mode == MaskedInPredicates::Equality);
        let what = match () {
            _ if kind(K::AexprLike) => "LIKE".to_owned(),
            _ if kind(K::AexprIlike) => "ILIKE".to_owned(),
            _ if kind(K::AexprSimilar) => "SIMILAR TO".to_owned(),
            _ if kind(K::AexprBetween) || kind(K::AexprNotBetween) || kind(K::AexprBetweenSym) => {
                "BETWEEN".to_owned()
            }
            _ if kind(K::AexprNullif) => "NULLIF".to_owned(),
            _ if kind(K::AexprIn) => "IN".to_owned(),
            _ => format!("operator {op}"),
        };
        let mut taint = Vec::new();
        if eq_like && at_root {
            let lit = |x: Option<&Value>| x.is_none_or(literal_like);
            let compared = Pos {
                region: pos.region,
                shape: Shape::Compared,
            };
            let other = pos.inside(what.clone());
            let (lpos, rpos) = if kind(K::AexprIn) || kind(K::AexprOpAny) || kind(K::AexprOpAll) {
                // col IN (literals), col = ANY(literal array or parameter).
                (if lit(r) { &compared } else { &other }, &other)
            } else {
                (
                    if lit(r) { &compared } else { &other },
                    if lit(l) { &compared } else { &other },
                )
            };
            if let Some(l) = l {
                taint.extend(self.expr(l, scope, lpos, depth + 1)?);
            }
            if let Some(r) = r {
                taint.extend(self.expr(r, scope, rpos, depth + 1)?);
            }
        } else {
            let inner = pos.inside(what);
            for x in [l, r].into_iter().flatten() {
                taint.extend(self.expr(x, scope, &inner, depth + 1)?);
            }
        }
        Ok(derive(&taint))
    }

    fn func_call(&mut self, f: &Obj, scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        let name = name_list(list_field(f, "funcname"))
            .and_then(|n| n.last().cloned())
            .unwrap_or_else(|| "?".into());
        let inner = pos.inside(format!("function {name}()"));
        let mut taint = self.expr_list(list_field(f, "args"), scope, &inner, depth)?;
        if CHANNEL_FUNCTIONS.contains(&name.as_str()) {
            self.channel(&name, &taint)?;
        }
        // ORDER BY and FILTER of an aggregate shape its value.
        for o in list_field(f, "agg_order") {
            let node = fields_of(o, "SortBy")
                .and_then(|s| s.get("node"))
                .unwrap_or(o);
            taint.extend(self.expr(node, scope, &inner, depth + 1)?);
        }
        if let Some(filter) = f.get("agg_filter") {
            // FILTER (WHERE ...) selects rows as WHERE does.
            self.expr(filter, scope, &Pos::new(Region::Filter), depth + 1)?;
        }
        if let Some(over) = f.get("over") {
            self.window(over, scope, depth)?;
        }
        Ok(derive(&taint))
    }

    fn sub_link(&mut self, f: &Obj, scope: &[Level], pos: &Pos, depth: usize) -> R<Taint> {
        use SubLinkType as K;
        let kind = |k: K| enum_is(f, "sub_link_type", k);
        let mut taint = Vec::new();
        if let Some(t) = f.get("testexpr") {
            // `x IN (SELECT ...)`, `x = ANY (SELECT ...)`: compared with
            // a sub-query's values, not with literals.
            taint.extend(self.expr(
                t,
                scope,
                &pos.inside("a comparison with a sub-query"),
                depth + 1,
            )?);
        }
        let role = if kind(K::ExistsSublink) {
            // EXISTS is a condition on its sub-query's rows, and its select
            // list is evaluated with them: a condition too.
            match pos.region {
                Region::Order(what) => Role::Exists(Region::Order(what)),
                _ => Role::Exists(Region::Filter),
            }
        } else {
            match pos.region {
                Region::Filter | Region::Order(_) => Role::Pred(pos.region),
                Region::Output => Role::Inner("as the output of a sub-query"),
                Region::Inner(why) => Role::Inner(why),
            }
        };
        if let Some(q) = f.get("subselect") {
            let cols = self.statement(q, scope, role, depth + 1)?;
            if !kind(K::ExistsSublink) {
                taint.extend(cols.iter().flat_map(|c| derive(&c.taint)));
            }
        }
        Ok(derive(&taint))
    }

    // -----------------------------------------------------------------
    // Names.

    /// The masked sources a column reference reads (a whole-row
    /// reference reads every column of its relation).
    fn column_ref(&self, f: &Obj, scope: &[Level]) -> R<Taint> {
        let Some((qual, col)) = column_ref_parts(f) else {
            return Ok(Vec::new());
        };
        let Some(col) = col else {
            // `x.*` or `*` inside an expression: a whole row.
            let (cols, _) = self.star(&qual, scope, "a whole-row reference")?;
            return Ok(cols.iter().flat_map(|c| derive(&c.taint)).collect());
        };
        if qual.is_empty() {
            return Ok(self.unqualified(&col, scope));
        }
        match find_entries(scope, &qual) {
            Some(entries) => Ok(entries
                .iter()
                .flat_map(|e| entry_column(self.catalog, e, &col))
                .collect()),
            None => {
                // `a.b` where `a` is no relation: field b of column a.
                let t = match qual.last() {
                    Some(first) if qual.len() == 1 => self.unqualified(first, scope),
                    _ => Vec::new(),
                };
                Ok(derive(&t))
            }
        }
    }

    /// An unqualified name: the nearest level with a column of that name
    /// (levels with columns Warden does not know are passed through,
    /// adding what a rule says); else a whole-row reference to a FROM item
    /// of that name.
    fn unqualified(&self, name: &str, scope: &[Level]) -> Taint {
        let mut taint = Vec::new();
        for level in scope.iter().rev() {
            let mut definite = false;
            for e in level {
                match &e.cols {
                    Cols::Known(cols) => {
                        for c in cols.iter().filter(|c| c.name == name) {
                            definite = true;
                            taint.extend(c.taint.iter().cloned());
                        }
                    }
                    Cols::Unknown { .. } => taint.extend(entry_column(self.catalog, e, name)),
                }
            }
            if definite {
                return taint;
            }
        }
        // A whole-row reference (`SELECT c FROM customers c`).
        for level in scope.iter().rev() {
            let rows: Vec<&Entry> = level
                .iter()
                .filter(|e| e.refname.as_deref() == Some(name) && !e.merged)
                .collect();
            if !rows.is_empty() {
                for e in rows {
                    match &e.cols {
                        Cols::Known(cols) => {
                            taint.extend(cols.iter().flat_map(|c| derive(&c.taint)))
                        }
                        Cols::Unknown { table } => {
                            if let Some((schema, t)) = table
                                && let Some(mask) =
                                    self.catalog.loose_rule(schema.as_deref(), t, None)
                            {
                                taint.push(Src {
                                    column: format!("{}.*", display_rel(schema.as_deref(), t)),
                                    mask,
                                    derived: true,
                                    cataloged: false,
                                });
                            }
                        }
                    }
                }
                return taint;
            }
        }
        taint
    }
}

/// A column of an entry by name: its masked sources (for an unknown
/// relation, what a rule naming it says).
fn entry_column(catalog: &ColumnCatalog, e: &Entry, name: &str) -> Taint {
    match &e.cols {
        Cols::Known(cols) => cols
            .iter()
            .filter(|c| c.name == name)
            .flat_map(|c| c.taint.iter().cloned())
            .collect(),
        Cols::Unknown {
            table: Some((schema, t)),
        } => catalog
            .loose_rule(schema.as_deref(), t, Some(name))
            .map(|mask| Src {
                column: format!("{}.{name}", display_rel(schema.as_deref(), t)),
                mask,
                derived: false,
                cataloged: false,
            })
            .into_iter()
            .collect(),
        Cols::Unknown { table: None } => Vec::new(),
    }
}

/// Entries named by a qualifier (`a`, `s.a`, `db.s.a`) at the nearest
/// level that has one.
fn find_entries<'a>(scope: &'a [Level], qual: &[String]) -> Option<Vec<&'a Entry>> {
    let (schema, name) = match qual {
        [name] => (None, name),
        [.., schema, name] => (Some(schema), name),
        [] => return None,
    };
    for level in scope.iter().rev() {
        let found: Vec<&Entry> = level
            .iter()
            .filter(|e| {
                e.refname.as_deref() == Some(name.as_str())
                    && schema.is_none_or(|s| {
                        e.schema.as_deref() == Some(s.as_str()) || e.schema.is_none()
                    })
            })
            .collect();
        if !found.is_empty() {
            return Some(found);
        }
    }
    None
}

/// `(qualifier, column)` of a ColumnRef; column `None` for `*`.
fn column_ref_parts(f: &Obj) -> Option<(Vec<String>, Option<String>)> {
    let fields = list_field(f, "fields");
    let (last, init) = fields.split_last()?;
    let qual = init
        .iter()
        .map(|v| string_node(v).map(str::to_owned))
        .collect::<Option<Vec<String>>>()?;
    match as_node(last) {
        Some(("AStar", _)) => Some((qual, None)),
        _ => Some((qual, Some(string_node(last)?.to_owned()))),
    }
}

/// Known column names of the entries (`None` when any is unknown).
fn known_names(entries: &[Entry]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| !e.merged) {
        match &e.cols {
            Cols::Known(c) => out.extend(c.iter().map(|c| c.name.clone())),
            Cols::Unknown { .. } => return None,
        }
    }
    Some(out)
}

fn derived_col(c: &Col) -> Col {
    Col {
        name: c.name.clone(),
        taint: derive(&c.taint),
    }
}

/// Column alias list: renames the first columns.
fn rename(cols: &mut [Col], names: &[Value]) {
    for (c, n) in cols.iter_mut().zip(names.iter().filter_map(string_node)) {
        c.name = n.to_owned();
    }
}

/// A table function's entry: columns from its alias list or column
/// definitions, else unknown.
fn function_entry(f: &Obj, alias_key: &str, coldef_key: &str) -> Entry {
    let alias = f.get(alias_key).and_then(Value::as_object);
    let mut names: Vec<String> = alias
        .map(|a| {
            list_field(a, "colnames")
                .iter()
                .filter_map(string_node)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = list_field(f, coldef_key)
            .iter()
            .filter_map(|c| fields_of(c, "ColumnDef"))
            .map(|c| str_field(c, "colname").to_owned())
            .collect();
    }
    result_entry(alias.map(|a| str_field(a, "aliasname").to_owned()), names)
}

/// A FROM item whose columns come from a function (no masked sources):
/// known by name when `names` is not empty.
fn result_entry(refname: Option<String>, names: Vec<String>) -> Entry {
    Entry {
        refname,
        schema: None,
        cols: if names.is_empty() {
            Cols::Unknown { table: None }
        } else {
            Cols::Known(
                names
                    .into_iter()
                    .map(|name| Col {
                        name,
                        taint: Vec::new(),
                    })
                    .collect(),
            )
        },
        merged: false,
        inexact: false,
    }
}

/// A literal, a parameter, a cast of one, or an array of them.
fn literal_like(v: &Value) -> bool {
    match as_node(v) {
        Some(("AConst" | "ParamRef", _)) => true,
        Some(("TypeCast", f)) => f.get("arg").is_some_and(literal_like),
        Some(("AArrayExpr", f)) => list_field(f, "elements").iter().all(literal_like),
        Some(("List", f)) => list_field(f, "items").iter().all(literal_like),
        _ => v.as_array().is_some_and(|a| a.iter().all(literal_like)),
    }
}

/// The strategy of a COPY field (bare masked columns only reach here).
fn copy_strategy(taint: &[Src]) -> Option<Strategy> {
    taint
        .iter()
        .map(|s| s.mask.strategy)
        .max_by_key(|s| match s {
            Strategy::Last4 => 0,
            Strategy::Hmac => 1,
            Strategy::Redact => 2,
            Strategy::Null => 3,
        })
}

/// COPY options: `None` for binary; an error for options the masking
/// cannot follow.
fn copy_options(options: &[Value]) -> R<Option<CopyMasking>> {
    let mut m = CopyMasking {
        csv: false,
        delimiter: b'\t',
        quote: b'"',
        escape: b'"',
        null: "\\N".into(),
        header: false,
        fields: Vec::new(),
    };
    let (mut delimiter, mut null, mut escape) = (None, None, None);
    let mut binary = false;
    for o in options {
        let Some(("DefElem", d)) = as_node(o) else {
            continue;
        };
        let arg = d.get("arg").and_then(const_text);
        let one_byte = |what: &str| -> R<u8> {
            match arg.as_deref().map(str::as_bytes) {
                Some([b]) if b.is_ascii() => Ok(*b),
                _ => Err(ColumnError::Unsupported(format!(
                    "COPY {what} must be a single ASCII character when masked columns are copied"
                ))),
            }
        };
        match str_field(d, "defname") {
            "format" => match arg.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("csv") => m.csv = true,
                Some("text") => m.csv = false,
                Some("binary") => binary = true,
                _ => {
                    return Err(ColumnError::Unsupported(
                        "COPY format not understood".into(),
                    ));
                }
            },
            "delimiter" => delimiter = Some(one_byte("DELIMITER")?),
            "quote" => m.quote = one_byte("QUOTE")?,
            "escape" => escape = Some(one_byte("ESCAPE")?),
            "null" => null = arg.clone(),
            // CSV quoting of every field: the CSV reader takes quoted fields.
            "force_quote" => {}
            "header" => {
                m.header = arg
                    .as_deref()
                    .is_none_or(|a| super::settings::parse_bool(a) != Some(false))
            }
            "encoding" => {
                return Err(ColumnError::Unsupported(
                    "COPY with ENCODING cannot be masked".into(),
                ));
            }
            other => {
                return Err(ColumnError::Unsupported(format!(
                    "COPY option {other} is not understood when masked columns are copied"
                )));
            }
        }
    }
    if binary {
        return Ok(None);
    }
    m.delimiter = delimiter.unwrap_or(if m.csv { b',' } else { b'\t' });
    m.escape = escape.unwrap_or(m.quote);
    m.null = if m.csv { String::new() } else { "\\N".into() };
    match null {
        // In CSV a value equal to the NULL marker is quoted, and the server
        // refuses a marker with the delimiter or the quote in it.
        Some(n) if m.csv => m.null = n,
        // In text the server writes its NULL marker raw and does not escape
        // a value equal to it: another marker would let a chosen value pass
        // as NULL (an equality oracle), and one with a backslash would
        // shift the fields the masker reads.
        Some(n) if n != m.null => {
            return Err(ColumnError::Unsupported(
                "COPY in text format with a NULL marker other than \\N cannot be masked".into(),
            ));
        }
        _ => {}
    }
    Ok(Some(m))
}

fn display_rel(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!(
            "{}.{}",
            super::sql::quote_ident(s),
            super::sql::quote_ident(name)
        ),
        None => super::sql::quote_ident(name),
    }
}

fn type_name(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .and_then(|t| name_list(list_field(t, "names")))
        .and_then(|n| n.last().cloned())
        .unwrap_or_else(|| "a type".into())
}

/// The output column name PostgreSQL gives an expression
/// (FigureColname), as far as the analysis needs it.
fn figure_colname(v: &Value) -> String {
    fn go(v: &Value) -> Option<(String, u8)> {
        let (ty, f) = as_node(v)?;
        match ty {
            "ColumnRef" => {
                let (_, c) = column_ref_parts(f)?;
                Some((c?, 2))
            }
            "AIndirection" => {
                let last = list_field(f, "indirection").last()?;
                string_node(last)
                    .map(|s| (s.to_owned(), 2))
                    .or_else(|| f.get("arg").and_then(go))
            }
            "FuncCall" => Some((name_list(list_field(f, "funcname"))?.last()?.clone(), 2)),
            "TypeCast" => match f.get("arg").and_then(go) {
                Some((n, 2)) => Some((n, 2)),
                _ => Some((type_name(f.get("type_name")), 1)),
            },
            "CaseExpr" => Some(("case".into(), 1)),
            "AArrayExpr" => Some(("array".into(), 2)),
            "RowExpr" => Some(("row".into(), 2)),
            "CoalesceExpr" => Some(("coalesce".into(), 2)),
            _ => None,
        }
    }
    go(v).map_or_else(|| "?column?".to_owned(), |(n, _)| n)
}

#[cfg(test)]
mod tests;
