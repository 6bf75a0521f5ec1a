//! The decision cache: analysis and verdict by (statement shape, policy
//! version, effective search path), bounded, sharded, shared by sessions.
//!
//! The shape is the statement's tokens as PostgreSQL's scanner splits them
//! with literal values left out ([`SqlScan::cache_key`]), plus the texts
//! of the literals that are not data
//! ([`crate::policy::allowlist::fingerprint`]): a statement that differs
//! from a decided one only in data literals, comments, spacing or letter
//! case is neither parsed nor analysed again. A hit costs one scan, a hash
//! of the shape, a mutex and a compare (see `benches/policy.rs`).
//! A verdict that depends on the session's prepared statements (the text
//! runs `EXECUTE`) is recomputed from the cached analysis on every hit.
//! Texts longer than [`MAX_CACHED_TEXT`] are analysed every time. When a
//! shard is full its oldest entry is evicted (FIFO).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::allowlist::{SqlScan, data_literals};
use super::rules::{Policy, SessionContext, Verdict};
use super::sql::{Analysis, AnalyzeError, analyze, analyze_tree, parse_tree};

/// Longest statement text kept in the cache.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// An analysed statement text and the policy's verdict on it.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The analysis, or why the text could not be analysed (the verdict
    /// then blocks).
    pub analysis: Result<Arc<Analysis>, AnalyzeError>,
    /// The verdict.
    pub verdict: Verdict,
}

struct Entry {
    shape: Box<str>,
    kept: Vec<(usize, Box<str>)>,
    version: u64,
    search_path: Box<[String]>,
    decision: Arc<Decision>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry>,
    order: VecDeque<u64>,
}

/// A bounded, sharded cache of decisions.
pub struct DecisionCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("capacity", &(self.per_shard * self.shards.len()))
            .field("len", &self.len())
            .finish()
    }
}

impl DecisionCache {
    /// A cache holding about `capacity` decisions (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, 16);
        let per_shard = capacity.div_ceil(n).max(1);
        DecisionCache {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The decision on `sql` under `policy` in session `ctx`, from the
    /// cache when possible.
    pub fn decide(&self, sql: &str, policy: &Policy, ctx: &SessionContext) -> Arc<Decision> {
        let path = policy.effective_search_path(ctx);
        let Some(scan) = SqlScan::new(sql) else {
            // The scanner rejects it, so does the parser: nothing to cache.
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(Self::analysed(analyze(sql), policy, ctx));
        };
        let shape = scan.cache_key();
        let key = self.key(&shape, policy.version(), path);
        let shard_ix = (key % self.shards.len() as u64) as usize;
        let cached = {
            let shard = self.lock(shard_ix);
            shard.map.get(&key).and_then(|e| {
                (e.version == policy.version()
                    && *e.shape == *shape
                    && *e.search_path == *path
                    && scan.keeps(&e.kept))
                .then(|| e.decision.clone())
            })
        };
        if let Some(d) = cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return match &d.analysis {
                Ok(a) if a.depends_on_session() => Arc::new(Decision {
                    analysis: Ok(a.clone()),
                    verdict: policy.decide(a, ctx),
                }),
                _ => d,
            };
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut data = Default::default();
        let analysis = parse_tree(sql).and_then(|tree| {
            data = data_literals(&tree);
            analyze_tree(&tree)
        });
        let decision = Arc::new(Self::analysed(analysis, policy, ctx));
        if sql.len() <= MAX_CACHED_TEXT {
            let mut shard = self.lock(shard_ix);
            let entry = Entry {
                kept: scan.kept_literals(&scan.data_mask(&data)),
                shape: shape.into(),
                version: policy.version(),
                search_path: path.into(),
                decision: decision.clone(),
            };
            if shard.map.insert(key, entry).is_none() {
                shard.order.push_back(key);
                while shard.order.len() > self.per_shard {
                    if let Some(old) = shard.order.pop_front() {
                        shard.map.remove(&old);
                    }
                }
            }
        }
        decision
    }

    fn analysed(
        analysis: Result<Analysis, AnalyzeError>,
        policy: &Policy,
        ctx: &SessionContext,
    ) -> Decision {
        match analysis {
            Ok(a) => {
                let verdict = policy.decide(&a, ctx);
                Decision {
                    analysis: Ok(Arc::new(a)),
                    verdict,
                }
            }
            Err(e) => Decision {
                verdict: Verdict::unparsable(&e),
                analysis: Err(e),
            },
        }
    }

    /// Number of cached decisions.
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).map.len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop everything (e.g. after a configuration reload, though a new
    /// policy version already misses).
    pub fn clear(&self) {
        for i in 0..self.shards.len() {
            let mut s = self.lock(i);
            s.map.clear();
            s.order.clear();
        }
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn key(&self, shape: &str, version: u64, path: &[String]) -> u64 {
        let mut h = self.hasher.build_hasher();
        shape.hash(&mut h);
        version.hash(&mut h);
        path.hash(&mut h);
        h.finish()
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock leaves a consistent map (every
        // mutation is a single insert/remove), so a poisoned lock is usable.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::PolicyConfig;
    use crate::policy::rules::Action;

    fn policy(text: &str) -> Policy {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        Policy::compile("p", &cfg).unwrap()
    }

    #[test]
    fn hits_misses_and_keys() {
        let p = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let cache = DecisionCache::new(64);
        let ctx = SessionContext::new(vec!["public".into()]);
        let a = cache.decide("SELECT 1", &p, &ctx);
        let b = cache.decide("SELECT 1", &p, &ctx);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.stats(), (1, 1));
        assert_eq!(b.verdict.action, Action::Allow);
        // Another search path is another key.
        let ctx2 = SessionContext::new(vec!["app".into()]);
        let c = cache.decide("SELECT 1", &p, &ctx2);
        assert!(!Arc::ptr_eq(&a, &c));
        // Another policy version is another key.
        let p2 = policy(r#"rules = [{ action = "block", classes = ["read"] }]"#);
        assert_eq!(
            cache.decide("SELECT 1", &p2, &ctx).verdict.action,
            Action::Block
        );
        assert_eq!(cache.stats(), (1, 3));
        // Parse errors are cached and blocked.
        let e = cache.decide("SELEC 1", &p, &ctx);
        assert!(e.analysis.is_err());
        assert_eq!(e.verdict.action, Action::Block);
        assert_eq!(cache.len(), 4);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn data_literals_share_an_entry_kept_literals_do_not() {
        let p = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let cache = DecisionCache::new(64);
        let ctx = SessionContext::default();
        let a = cache.decide("SELECT a FROM t WHERE id = 1", &p, &ctx);
        let b = cache.decide("select a from t where id = 2 -- again", &p, &ctx);
        assert!(Arc::ptr_eq(&a, &b));
        // A function argument is not data: another decision.
        let c = cache.decide("SELECT pg_read_file('/tmp/x')", &p, &ctx);
        let d = cache.decide("SELECT pg_read_file('/etc/shadow')", &p, &ctx);
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(cache.stats(), (1, 3));
    }

    #[test]
    fn bounded() {
        let p = policy(r#"default = "allow""#);
        let cache = DecisionCache::new(32);
        let ctx = SessionContext::default();
        for i in 0..1000 {
            cache.decide(&format!("SELECT c{i} FROM t"), &p, &ctx);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        assert!(cache.len() >= 16);
    }

    #[test]
    fn execute_is_recomputed() {
        let p = policy(r#"rules = [{ action = "allow", classes = ["read"] }]"#);
        let cache = DecisionCache::new(8);
        let mut ctx = SessionContext::default();
        assert_eq!(
            cache.decide("EXECUTE s", &p, &ctx).verdict.action,
            Action::Deny
        );
        let a = analyze("PREPARE s AS SELECT 1").unwrap();
        let (name, v) = p.decide_prepared(&a.statements[0], &ctx).unwrap();
        ctx.prepared.insert(&name, v).unwrap();
        assert_eq!(
            cache.decide("EXECUTE s", &p, &ctx).verdict.action,
            Action::Allow
        );
        assert_eq!(cache.stats(), (1, 1));
    }
}
