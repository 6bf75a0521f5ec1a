//! The catalog of masked columns of one database, as a session sees it.
//!
//! Result columns are masked by the table OID and attribute number the
//! server names in RowDescription, and statements are analysed by the
//! relation names they use ([`crate::policy::columns`]); both come from
//! one snapshot of the catalog ([`MaskedCatalog`]). A snapshot can be
//! older than the database (DDL by anyone, in this session or another),
//! so it is never trusted blindly:
//!
//! - it is shared by sessions only while its **digest** (an md5 of the
//!   rows of every catalog query it was built from, computed by the
//!   server) is unchanged: each new session asks for the digest and
//!   rebuilds on a difference (no time-based reuse);
//! - it knows every (relation OID, attribute number) it read: a result
//!   column whose origin it cannot place ([`Origin::Unplaced`], a
//!   relation or column created after the snapshot) is withheld (NULL)
//!   and the session's snapshot is marked stale ([`CatalogSlot`]);
//! - a stale snapshot is refreshed before the session's next statement is
//!   decided, as after DDL sent through Warden, and when a statement names
//!   a relation the snapshot does not know.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::masking::{Masker, Strategy, strictness};
use crate::policy::columns::{CatalogColumn, CatalogRelation, ColumnCatalog, ColumnMask};

/// OIDs below this are PostgreSQL's own objects (`FirstNormalObjectId`):
/// system catalogs, never masked by column rules.
const FIRST_NORMAL_OID: u32 = 16384;

/// Every column of the user relations (also temporary ones and
/// sequences, whose columns can be result origins).
const COLUMNS: &str = "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE a.attnum > 0 AND NOT a.attisdropped \
     AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
     AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
     ORDER BY c.oid, a.attnum";

/// What each view or materialized view reads (relations and columns).
const VIEWS: &str = "SELECT DISTINCT r.ev_class, d.refobjid, d.refobjsubid \
     FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_depend d ON d.objid = r.oid \
     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
     WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
     AND d.refobjid <> r.ev_class";

const INHERITS: &str = "SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits";

/// Every stored generated column, with what its expression reads: a
/// column of its relation (`refobjsubid`), or a function or operator
/// outside `pg_catalog` (`true`: Warden cannot see what it reads).
/// Dependencies on PostgreSQL's own objects are not recorded.
const GENERATED: &str = "SELECT ad.adrelid, ad.adnum, d.refobjsubid, \
     d.refclassid <> 'pg_catalog.pg_class'::pg_catalog.regclass \
     FROM pg_catalog.pg_attrdef ad \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
     LEFT JOIN pg_catalog.pg_depend d \
     ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid \
     AND d.refclassid IN ('pg_catalog.pg_class'::pg_catalog.regclass, \
     'pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass) \
     WHERE a.attgenerated <> ''";

/// Names of the system relations: a statement naming one does not name a
/// relation the snapshot is missing.
const SYSTEM_NAMES: &str = "SELECT DISTINCT c.relname FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname IN ('pg_catalog', 'information_schema')";

/// Views and materialized views whose definition calls a function or
/// operator outside `pg_catalog` (dependencies on PostgreSQL's own
/// objects are not recorded): what such code reads is recorded nowhere.
const VIEW_FUNCTIONS: &str = "SELECT DISTINCT r.ev_class FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_depend d ON d.objid = r.oid \
     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
     LEFT JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
     AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
     LEFT JOIN pg_catalog.pg_operator o ON o.oid = d.refobjid \
     AND d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass \
     WHERE p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace \
     OR o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace";

/// The definition of every user view and materialized view, for the
/// built-in functions it calls (a built-in off the safe list, such as
/// `query_to_xml`, can read any table by SQL text).
const VIEW_DEFS: &str = "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid) \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('v', 'm') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Every query a snapshot is built from, in [`CatalogRows`] order.
const QUERIES: [&str; 7] = [
    COLUMNS,
    VIEWS,
    INHERITS,
    SYSTEM_NAMES,
    GENERATED,
    VIEW_FUNCTIONS,
    VIEW_DEFS,
];

/// One query's rows, as text.
pub(super) type Rows = Vec<Vec<Option<String>>>;

/// The rows of [`QUERIES`].
pub(super) struct CatalogRows {
    pub columns: Rows,
    pub views: Rows,
    pub inherits: Rows,
    pub system: Rows,
    pub generated: Rows,
    pub view_functions: Rows,
    pub view_defs: Rows,
}

/// Runs Warden's own catalog queries on an upstream session.
pub(super) trait CatalogSource {
    async fn rows(&mut self, sql: &str) -> Result<Rows, String>;
}

/// One query returning the digest of the rows of every catalog query:
/// equal digests, equal snapshots.
fn digest_query() -> String {
    let parts: Vec<String> = QUERIES
        .iter()
        .map(|q| {
            format!(
                "pg_catalog.md5(COALESCE((SELECT pg_catalog.string_agg(q::text, ';' ORDER BY q::text) \
                 FROM ({q}) q), ''))"
            )
        })
        .collect();
    format!("SELECT {}", parts.join(" || '/' || "))
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog query failed: {0}")]
    Query(String),
    #[error("the catalog digest query returned no value")]
    NoDigest,
}

/// The snapshot of the catalog for `masker` (named `masking`): `previous`
/// again if the server's digest is still the one it was built from, else
/// a new one.
pub(super) async fn load<S: CatalogSource>(
    src: &mut S,
    masking: &str,
    masker: &Arc<Masker>,
    previous: Option<&Arc<MaskedCatalog>>,
) -> Result<Arc<MaskedCatalog>, CatalogError> {
    if !masker.has_columns() {
        return Ok(Arc::new(MaskedCatalog::empty()));
    }
    let digest = src
        .rows(&digest_query())
        .await
        .map_err(CatalogError::Query)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or(CatalogError::NoDigest)?;
    if let Some(p) = previous.filter(|p| p.digest == digest) {
        return Ok(Arc::clone(p));
    }
    let mut rows = Vec::with_capacity(QUERIES.len());
    for q in QUERIES {
        rows.push(src.rows(q).await.map_err(CatalogError::Query)?);
    }
    let mut rows = rows.into_iter();
    let mut next = || rows.next().unwrap_or_default();
    let rows = CatalogRows {
        columns: next(),
        views: next(),
        inherits: next(),
        system: next(),
        generated: next(),
        view_functions: next(),
        view_defs: next(),
    };
    let mut built = build_catalog(masking, masker, &rows);
    built.digest = digest;
    Ok(Arc::new(built))
}

/// Where a result column comes from, as the snapshot places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No origin (an expression), a system catalog, or a column of the
    /// snapshot without a mask.
    Unmasked,
    Masked(Strategy),
    /// A relation or column the snapshot does not know: created after it.
    Unplaced,
}

/// What a database's catalog says about a masking: the result columns to
/// mask (by table OID and attribute number, as RowDescription names
/// them) and the relations with their columns, for the statement
/// analysis ([`crate::policy::columns`]).
pub struct MaskedCatalog {
    /// (table oid, attribute number) → column strategy.
    pub rules: Arc<HashMap<(u32, i16), Strategy>>,
    pub columns: Arc<ColumnCatalog>,
    /// Every (relation oid, attnum) the snapshot read; `None`: the masking
    /// has no column rules, so every origin is placed.
    known: Option<HashSet<(u32, i16)>>,
    /// The server's digest of the rows it was built from.
    digest: String,
}

impl MaskedCatalog {
    /// The catalog of a masking without column rules.
    pub fn empty() -> Self {
        Self {
            rules: Arc::new(HashMap::new()),
            columns: Arc::new(ColumnCatalog::default()),
            known: None,
            digest: String::new(),
        }
    }

    /// A catalog of the given relations (masks by name for the analysis)
    /// and no column rules by origin: for in-process harnesses and the
    /// policy fuzz target, which decide statements without a server.
    pub fn from_columns(columns: ColumnCatalog) -> Self {
        Self {
            columns: Arc::new(columns),
            ..Self::empty()
        }
    }

    /// Where a RowDescription field's origin is, and its mask.
    pub fn origin(&self, table_oid: u32, attnum: i16) -> Origin {
        if let Some(s) = self.rules.get(&(table_oid, attnum)) {
            return Origin::Masked(*s);
        }
        match &self.known {
            Some(known)
                if table_oid >= FIRST_NORMAL_OID && !known.contains(&(table_oid, attnum)) =>
            {
                Origin::Unplaced
            }
            _ => Origin::Unmasked,
        }
    }
}

/// A session's snapshot, replaced when Warden refreshes it: the client
/// half decides statements with it, the upstream half masks results.
pub struct CatalogSlot {
    current: Mutex<Arc<MaskedCatalog>>,
    /// Something showed the snapshot is older than the database (a result
    /// origin it cannot place, DDL sent through Warden): refresh before the
    /// next statement is decided.
    stale: AtomicBool,
}

impl CatalogSlot {
    pub fn new(c: Arc<MaskedCatalog>) -> Self {
        Self {
            current: Mutex::new(c),
            stale: AtomicBool::new(false),
        }
    }

    pub fn get(&self) -> Arc<MaskedCatalog> {
        // A poisoned lock still holds a complete Arc.
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, c: Arc<MaskedCatalog>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Whether the snapshot was marked stale (and clears the mark).
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::AcqRel)
    }
}

/// A snapshot from the rows of its catalog queries: every relation of the
/// user schemas with its columns, masked by the rules that name them; a
/// child table (inheritance, partitions) and its parent share their masks
/// by column name (rows of one are read through the other), and every
/// column of a view or materialized view whose definition reads a masked
/// column (directly or through other views) is masked with the strictest
/// of them, as Warden cannot see which output column derives from which.
pub(super) fn build_catalog(name: &str, masker: &Arc<Masker>, rows: &CatalogRows) -> MaskedCatalog {
    struct Rel {
        schema: String,
        name: String,
        /// (attnum, attname, mask)
        cols: Vec<(i16, String, Option<ColumnMask>)>,
        /// Stored generated columns (attnums).
        generated: HashSet<i16>,
    }
    let mut rels: BTreeMap<u32, Rel> = BTreeMap::new();
    for row in &rows.columns {
        let [
            Some(oid),
            Some(schema),
            Some(table),
            Some(attnum),
            Some(column),
        ] = &row[..]
        else {
            continue;
        };
        let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
            continue;
        };
        let mask = masker
            .column_rule(schema, table, column)
            .map(|(rule, strategy)| ColumnMask {
                rule: rule.to_owned(),
                strategy,
            });
        rels.entry(oid)
            .or_insert_with(|| Rel {
                schema: schema.clone(),
                name: table.clone(),
                cols: Vec::new(),
                generated: HashSet::new(),
            })
            .cols
            .push((attnum, column.clone(), mask));
    }
    let pairs = |rows: &Rows| -> Vec<(u32, u32, i16)> {
        rows.iter()
            .filter_map(|r| {
                let a = r.first()?.as_deref()?.parse().ok()?;
                let b = r.get(1)?.as_deref()?.parse().ok()?;
                let sub = match r.get(2) {
                    Some(Some(s)) => s.parse().ok()?,
                    _ => 0,
                };
                Some((a, b, sub))
            })
            .collect()
    };
    let (views, inherits) = (pairs(&rows.views), pairs(&rows.inherits));
    // (relation, generated attnum, source attnum or None for a function
    // Warden cannot see into).
    let mut generated: Vec<(u32, i16, Option<i16>)> = Vec::new();
    for r in &rows.generated {
        let (Some(Ok(rel)), Some(Ok(attnum))) = (
            r.first().cloned().flatten().map(|v| v.parse::<u32>()),
            r.get(1).cloned().flatten().map(|v| v.parse::<i16>()),
        ) else {
            continue;
        };
        if let Some(rel) = rels.get_mut(&rel) {
            rel.generated.insert(attnum);
        }
        let opaque = r.get(3).cloned().flatten().as_deref() == Some("t");
        let source = r
            .get(2)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<i16>().ok());
        match (opaque, source) {
            (true, _) => generated.push((rel, attnum, None)),
            (false, Some(s)) if s > 0 => generated.push((rel, attnum, Some(s))),
            _ => {}
        }
    }
    // What a value computed by code Warden cannot see into may hold: any
    // masked column of the database (the strictest mask there is).
    let opaque = rels
        .values()
        .flat_map(|r| r.cols.iter().filter_map(|(_, _, m)| m.clone()))
        .max_by_key(|m| strictness(m.strategy))
        .map(|m| ColumnMask {
            rule: format!("{} (computed by a function Warden cannot see into)", m.rule),
            strategy: m.strategy,
        });
    // A view whose definition calls code Warden cannot see into (a
    // function or operator outside `pg_catalog`, a built-in off the safe
    // list, or a definition Warden cannot analyse): every column is masked
    // as if it read any masked column (M5). Views over it follow below.
    if let Some(opaque) = &opaque {
        let by_function = rows
            .view_functions
            .iter()
            .filter_map(|r| r.first()?.as_deref()?.parse::<u32>().ok());
        let by_definition = rows.view_defs.iter().filter_map(|r| {
            let oid = r.first()?.as_deref()?.parse::<u32>().ok()?;
            let calls_unsafe = match r.get(1).cloned().flatten() {
                Some(def) => crate::policy::sql::analyze(&def).map_or(true, |a| {
                    a.statements
                        .iter()
                        .any(|s| s.functions.iter().any(|f| !f.safe))
                }),
                None => true,
            };
            calls_unsafe.then_some(oid)
        });
        for view in by_function.chain(by_definition).collect::<Vec<_>>() {
            if let Some(v) = rels.get_mut(&view) {
                mask_all(&mut v.cols, opaque);
            }
        }
    }
    // Propagate to a fixpoint (each round masks at least one more column
    // or stops; bounded by the number of columns).
    loop {
        let mut changed = false;
        // Both ways: a child's rows are read through its parent too.
        let both_ways = inherits
            .iter()
            .flat_map(|&(child, parent, _)| [(child, parent), (parent, child)]);
        for (child, parent) in both_ways {
            let masked: Vec<(String, ColumnMask)> = rels
                .get(&parent)
                .map(|p| {
                    p.cols
                        .iter()
                        .filter_map(|(_, n, m)| Some((n.clone(), m.clone()?)))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(c) = rels.get_mut(&child) {
                for (_, n, m) in c.cols.iter_mut().filter(|(_, _, m)| m.is_none()) {
                    if let Some((_, pm)) = masked.iter().find(|(pn, _)| pn == n) {
                        *m = Some(pm.clone());
                        changed = true;
                    }
                }
            }
        }
        // A stored generated column holds a value the server derived from
        // the columns its expression reads.
        for &(rel, attnum, source) in &generated {
            let Some(r) = rels.get_mut(&rel) else {
                continue;
            };
            let mask = match source {
                Some(s) => r
                    .cols
                    .iter()
                    .find(|(a, _, _)| *a == s)
                    .and_then(|(_, _, m)| m.clone()),
                None => opaque.clone(),
            };
            let Some(mask) = mask else { continue };
            if let Some((_, _, m)) = r.cols.iter_mut().find(|(a, _, _)| *a == attnum)
                && m.as_ref()
                    .is_none_or(|m| strictness(m.strategy) < strictness(mask.strategy))
            {
                *m = Some(mask);
                changed = true;
            }
        }
        for &(view, refobj, sub) in &views {
            let source = rels.get(&refobj).and_then(|r| {
                r.cols
                    .iter()
                    .filter(|(a, _, _)| sub == 0 || *a == sub)
                    .filter_map(|(_, _, m)| m.clone())
                    .max_by_key(|m| strictness(m.strategy))
            });
            let (Some(source), Some(v)) = (source, rels.get_mut(&view)) else {
                continue;
            };
            changed |= mask_all(&mut v.cols, &source);
        }
        if !changed {
            break;
        }
    }
    let mut rules = HashMap::new();
    let mut known = HashSet::new();
    let mut relations = Vec::with_capacity(rels.len());
    for (oid, r) in rels {
        for (attnum, _, m) in &r.cols {
            known.insert((oid, *attnum));
            if let Some(m) = m {
                rules.insert((oid, *attnum), m.strategy);
            }
        }
        relations.push(CatalogRelation {
            schema: r.schema,
            name: r.name,
            columns: r
                .cols
                .into_iter()
                .map(|(attnum, name, mask)| CatalogColumn {
                    name,
                    mask,
                    generated: r.generated.contains(&attnum),
                })
                .collect(),
        });
    }
    let system = rows
        .system
        .iter()
        .filter_map(|r| r.first().cloned().flatten())
        .collect();
    MaskedCatalog {
        rules: Arc::new(rules),
        columns: Arc::new(
            ColumnCatalog::new(name, relations, Some(Arc::clone(masker))).with_system_names(system),
        ),
        known: Some(known),
        digest: String::new(),
    }
}

/// Masks every column of `cols` with `source` unless it has a mask at
/// least as strict; whether any changed.
fn mask_all(cols: &mut [(i16, String, Option<ColumnMask>)], source: &ColumnMask) -> bool {
    let mut changed = false;
    for (_, _, m) in cols.iter_mut() {
        if m.as_ref()
            .is_none_or(|m| strictness(m.strategy) < strictness(source.strategy))
        {
            *m = Some(source.clone());
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    fn masker(rules: &str) -> Arc<Masker> {
        let cfg: crate::masking::MaskingConfig = toml::from_str(rules).unwrap();
        Arc::new(Masker::compile(&cfg, None).unwrap())
    }

    #[test]
    fn views_and_child_tables_inherit_column_masks_from_the_catalog() {
        let masker = masker(
            r#"columns = [ { column = "customers.email", strategy = "redact" },
                          { column = "customers.ssn", strategy = "null" } ]"#,
        );
        let columns = vec![
            // customers (10): id, email, ssn
            row(&["10", "public", "customers", "1", "id"]),
            row(&["10", "public", "customers", "2", "email"]),
            row(&["10", "public", "customers", "3", "ssn"]),
            // a partition of customers (11)
            row(&["11", "public", "customers_2024", "1", "id"]),
            row(&["11", "public", "customers_2024", "2", "email"]),
            // v1 (20) reads customers.email; v2 (21) reads v1; v3 (22)
            // reads only customers.id.
            row(&["20", "public", "v1", "1", "id"]),
            row(&["20", "public", "v1", "2", "contact"]),
            row(&["21", "public", "v2", "1", "x"]),
            row(&["22", "public", "v3", "1", "id"]),
            row(&["30", "public", "orders", "1", "id"]),
            row(&["40", "public", "people", "1", "ssn"]),
            row(&["41", "hr", "customers", "1", "ssn"]),
        ];
        let views = vec![
            row(&["20", "10", "1"]),
            row(&["20", "10", "2"]),
            row(&["21", "20", "2"]),
            row(&["22", "10", "1"]),
            row(&["22", "30", "1"]),
        ];
        // customers_2024 (11) is a partition of customers (10); hr.customers (41)
        // a child of people (40), masked by its own rule.
        let inherits = vec![row(&["11", "10"]), row(&["41", "40"])];
        let rows = CatalogRows {
            columns,
            views,
            inherits,
            system: vec![],
            generated: vec![],
            view_functions: vec![],
            view_defs: vec![],
        };
        let c = build_catalog("pii", &masker, &rows);
        let mut masked: Vec<_> = c.rules.iter().map(|(k, s)| (*k, *s)).collect();
        masked.sort_by_key(|(k, _)| *k);
        assert_eq!(
            masked,
            vec![
                ((10, 2), Strategy::Redact),
                ((10, 3), Strategy::Null),
                ((11, 2), Strategy::Redact),
                ((20, 1), Strategy::Redact),
                ((20, 2), Strategy::Redact),
                ((21, 1), Strategy::Redact),
                ((40, 1), Strategy::Null),
                ((41, 1), Strategy::Null),
            ]
        );
        assert_eq!(c.columns.masking(), "pii");
        assert!(c.columns.masks_anything());
    }

    #[test]
    fn generated_columns_carry_the_masks_of_what_they_are_computed_from() {
        let masker = masker(
            r#"columns = [ { column = "customers.name", strategy = "redact" },
                          { column = "customers.ssn", strategy = "null" } ]"#,
        );
        let rows = CatalogRows {
            columns: vec![
                row(&["16400", "public", "customers", "1", "id"]),
                row(&["16400", "public", "customers", "2", "name"]),
                row(&["16400", "public", "customers", "3", "ssn"]),
                row(&["16400", "public", "customers", "4", "name_key"]),
                row(&["16400", "public", "customers", "5", "id_text"]),
                row(&["16400", "public", "customers", "6", "digest"]),
                row(&["16400", "public", "customers", "7", "constant"]),
            ],
            views: vec![],
            inherits: vec![],
            system: vec![],
            generated: vec![
                // name_key = lower(name); id_text = id::text; digest =
                // app.hash(id) (a user function); constant = 1 (no deps).
                vec![
                    Some("16400".into()),
                    Some("4".into()),
                    Some("2".into()),
                    Some("f".into()),
                ],
                vec![
                    Some("16400".into()),
                    Some("5".into()),
                    Some("1".into()),
                    Some("f".into()),
                ],
                vec![
                    Some("16400".into()),
                    Some("6".into()),
                    Some("1".into()),
                    Some("f".into()),
                ],
                vec![
                    Some("16400".into()),
                    Some("6".into()),
                    Some("0".into()),
                    Some("t".into()),
                ],
                vec![Some("16400".into()), Some("7".into()), None, None],
            ],
            view_functions: vec![],
            view_defs: vec![],
        };
        let c = build_catalog("pii", &masker, &rows);
        assert_eq!(c.origin(16400, 4), Origin::Masked(Strategy::Redact));
        assert_eq!(c.origin(16400, 5), Origin::Unmasked);
        assert_eq!(c.origin(16400, 6), Origin::Masked(Strategy::Null));
        assert_eq!(c.origin(16400, 7), Origin::Unmasked);
        let generated: Vec<_> = c
            .columns
            .relations()
            .flat_map(|r| {
                r.columns
                    .iter()
                    .filter(|c| c.generated)
                    .map(|c| c.name.clone())
            })
            .collect();
        assert_eq!(generated, ["name_key", "id_text", "digest", "constant"]);
    }

    #[test]
    fn views_calling_code_warden_cannot_see_into_are_masked() {
        let pii = masker(r#"columns = [ { column = "customers.name", strategy = "redact" } ]"#);
        let view = |oid: &str, name: &str| {
            vec![
                row(&[oid, "public", name, "1", "id"]),
                row(&[oid, "public", name, "2", "x"]),
            ]
        };
        let mut columns = vec![
            row(&["16400", "public", "customers", "1", "id"]),
            row(&["16400", "public", "customers", "2", "name"]),
            row(&["16410", "public", "orders", "1", "id"]),
        ];
        // 16420 calls a user function (pg_depend); 16421 query_to_xml;
        // 16422 only safe built-ins; 16423 cannot be parsed; 16424 reads
        // 16420.
        for (oid, name) in [
            ("16420", "by_function"),
            ("16421", "by_xml"),
            ("16422", "plain"),
            ("16423", "garbled"),
            ("16424", "over_view"),
        ] {
            columns.extend(view(oid, name));
        }
        let rows = CatalogRows {
            columns,
            views: vec![row(&["16424", "16420", "2"])],
            inherits: vec![],
            system: vec![],
            generated: vec![],
            view_functions: vec![row(&["16420"])],
            view_defs: vec![
                row(&[
                    "16420",
                    " SELECT o.id, customer_name(o.id) AS x FROM orders o;",
                ]),
                row(&[
                    "16421",
                    " SELECT o.id, query_to_xml('select name from customers', true, true, '') AS x FROM orders o;",
                ]),
                row(&[
                    "16422",
                    " SELECT o.id, lower(o.id::text) AS x FROM orders o;",
                ]),
                row(&["16423", "SELECT (("]),
                row(&["16424", " SELECT v.id, v.x FROM by_function v;"]),
            ],
        };
        let c = build_catalog("pii", &pii, &rows);
        for oid in [16420, 16421, 16423, 16424] {
            assert_eq!(c.origin(oid, 2), Origin::Masked(Strategy::Redact), "{oid}");
            assert_eq!(c.origin(oid, 1), Origin::Masked(Strategy::Redact), "{oid}");
        }
        assert_eq!(c.origin(16422, 2), Origin::Unmasked);
        // Without any masked column in the database nothing is masked.
        let none = masker(r#"columns = [ { column = "nosuch.name", strategy = "redact" } ]"#);
        let c = build_catalog("pii", &none, &rows);
        assert_eq!(c.origin(16420, 2), Origin::Unmasked);
    }

    #[test]
    fn origins_the_snapshot_does_not_know_are_unplaced() {
        let masker = masker(r#"columns = [ { column = "customers.name", strategy = "redact" } ]"#);
        let rows = CatalogRows {
            columns: vec![
                row(&["16400", "public", "customers", "1", "id"]),
                row(&["16400", "public", "customers", "2", "name"]),
            ],
            views: vec![],
            inherits: vec![],
            system: vec![row(&["pg_class"])],
            generated: vec![],
            view_functions: vec![],
            view_defs: vec![],
        };
        let c = build_catalog("pii", &masker, &rows);
        assert_eq!(c.origin(16400, 1), Origin::Unmasked);
        assert_eq!(c.origin(16400, 2), Origin::Masked(Strategy::Redact));
        // A column added, a relation created after the snapshot.
        assert_eq!(c.origin(16400, 3), Origin::Unplaced);
        assert_eq!(c.origin(16500, 2), Origin::Unplaced);
        // No origin, a system catalog.
        assert_eq!(c.origin(0, 0), Origin::Unmasked);
        assert_eq!(c.origin(1259, 1), Origin::Unmasked);
        // Without column rules every origin is placed.
        assert_eq!(MaskedCatalog::empty().origin(16500, 2), Origin::Unmasked);
    }
}
