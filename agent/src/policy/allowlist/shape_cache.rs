//! A cache of per-statement values (decisions) keyed by statement shape:
//! [`SqlScan::cache_key`] (the tokens with literal values left out) plus
//! the texts of the literals that are not data, so a statement that
//! differs from a cached one only in data literals, comments, spacing or
//! letter case of words is neither parsed nor analysed again.
//!
//! Soundness: an entry records which literals of the statement it was
//! computed from were data ([`super::fingerprint::data_literals`]: values
//! the analysis never reads); a lookup matches only when every other
//! literal has the same text. A key holds at most [`MAX_VARIANTS`] such
//! entries (the oldest is dropped); the whole cache at most `max` entries
//! (then it is emptied: a session's memory stays bounded).

use std::collections::HashMap;
use std::sync::Arc;

use super::fingerprint::{Fingerprint, LiteralMask, SqlScan};

/// Entries per key (the same tokens with different kept literals).
pub const MAX_VARIANTS: usize = 8;

struct Variant<V> {
    kept: Vec<(usize, Box<str>)>,
    value: Arc<V>,
    fingerprint: Arc<Fingerprint>,
}

/// A bounded shape-keyed cache.
pub struct ShapeCache<V> {
    map: HashMap<String, Vec<Variant<V>>>,
    len: usize,
    max: usize,
}

impl<V> std::fmt::Debug for ShapeCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapeCache")
            .field("len", &self.len)
            .field("max", &self.max)
            .finish()
    }
}

impl<V> ShapeCache<V> {
    /// A cache of at most `max` entries.
    pub fn new(max: usize) -> Self {
        ShapeCache {
            map: HashMap::new(),
            len: 0,
            max: max.max(1),
        }
    }

    /// The value cached for a statement of this `key` (its scan's
    /// [`SqlScan::cache_key`]) whose kept literals agree with `scan`.
    pub fn get(&self, key: &str, scan: &SqlScan<'_>) -> Option<(Arc<V>, Arc<Fingerprint>)> {
        self.map.get(key)?.iter().find_map(|v| {
            scan.keeps(&v.kept)
                .then(|| (Arc::clone(&v.value), Arc::clone(&v.fingerprint)))
        })
    }

    /// Caches `value` for the statement `scan` whose data literals are
    /// `mask` ([`SqlScan::data_mask`]).
    pub fn insert(
        &mut self,
        key: String,
        scan: &SqlScan<'_>,
        mask: &LiteralMask,
        value: Arc<V>,
        fingerprint: Arc<Fingerprint>,
    ) {
        if self.len >= self.max {
            self.clear();
        }
        let variants = self.map.entry(key).or_default();
        if variants.len() >= MAX_VARIANTS {
            variants.remove(0);
            self.len -= 1;
        }
        variants.push(Variant {
            kept: scan.kept_literals(mask),
            value,
            fingerprint,
        });
        self.len += 1;
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::allowlist::data_literals;

    fn put(c: &mut ShapeCache<u32>, sql: &str, v: u32) {
        let s = SqlScan::new(sql).unwrap();
        let tree = crate::policy::sql::parse_tree(sql).unwrap();
        let mask = s.data_mask(&data_literals(&tree));
        let fp = Arc::new(s.fingerprint(&mask));
        c.insert(s.cache_key(), &s, &mask, Arc::new(v), fp);
    }

    fn get(c: &ShapeCache<u32>, sql: &str) -> Option<u32> {
        let s = SqlScan::new(sql).unwrap();
        c.get(&s.cache_key(), &s).map(|(v, _)| *v)
    }

    #[test]
    fn data_literals_share_kept_ones_do_not() {
        let mut c = ShapeCache::new(16);
        put(&mut c, "SELECT a FROM t WHERE id = 1", 1);
        assert_eq!(get(&c, "select a from t where id = 99 -- x"), Some(1));
        assert_eq!(get(&c, "SELECT a FROM t WHERE id = 'x'"), None);
        put(&mut c, "SELECT nextval('a')", 2);
        assert_eq!(get(&c, "SELECT nextval('a')"), Some(2));
        assert_eq!(get(&c, "SELECT nextval('b')"), None);
        put(&mut c, "SELECT nextval('b')", 3);
        assert_eq!(get(&c, "SELECT nextval('b')"), Some(3));
        assert_eq!(get(&c, "SELECT nextval('a')"), Some(2));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn bounded() {
        let mut c = ShapeCache::new(4);
        for i in 0..20 {
            put(&mut c, &format!("SELECT nextval('s{i}')"), i);
            assert!(c.len() <= 4);
        }
    }
}
