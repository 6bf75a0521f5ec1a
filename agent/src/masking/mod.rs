//! Masking: detectors and maskers applied to values where bytes leave the
//! proxy (PostgreSQL DataRow/CopyData/ErrorResponse/NoticeResponse/
//! NotificationResponse, statement text in the audit log, later HTTP
//! bodies). Pure: no I/O besides [`read_hmac_key`], no protocol knowledge.
//!
//! A [`Masker`] is compiled from one `[masking.NAME]` table
//! ([`MaskingConfig`]) and shared in an `Arc`. It has two kinds of rules:
//!
//! - **Column rules** (`customers.card` → `last4`): the proxy resolves each
//!   result column's table OID and attribute number to names and asks
//!   [`Masker::column_strategy`] once per RowDescription, then calls
//!   [`Masker::apply`] on every value of a masked column. That holds only
//!   for a bare column of the select list, so the PostgreSQL proxy first
//!   refuses every statement that uses a masked column any other way
//!   (expressions, sub-queries, set operations, whole rows; conditions as
//!   [`MaskedInPredicates`] allows): see [`crate::policy::columns`].
//! - **Pattern rules** (`card`, `email`, `ssn`, `iban`, `token`, custom
//!   regexes): a backstop only, run on every value with
//!   [`Masker::mask_patterns`] / [`Masker::mask_value`] /
//!   [`Masker::mask_str`]: values of columns no rule names, values echoed
//!   in notifications and statement text. A value transformed so that no
//!   detector recognises it (`translate(email, '@.', '#,')`) passes them;
//!   only a column rule protects a column.
//!
//! # Strategies
//!
//! | strategy | column value | pattern match |
//! |---|---|---|
//! | `redact` | `[MASKED]` | `[MASKED:card]`, `[MASKED:email]`, …, `[MASKED:<custom name>]`: names the kind, leaks nothing (not even the length) |
//! | `last4`  | last 4 letters/digits kept, `*` for every other character, spaces and dashes kept: `**** **** **** 1234`, `***-**-6789` | same per match; emails keep nothing (`[MASKED:email]`: the last four characters of an address are its TLD) |
//! | `hmac`   | `tok_` + 16 hex digits of HMAC-SHA256(key, value) | same over the match, normalised: card/SSN digits only, IBAN alphanumerics uppercased |
//! | `null`   | SQL NULL | the whole value becomes NULL ([`Masker::mask_value`]); where NULL cannot exist (messages, statement text: [`Masker::mask_patterns`], [`Masker::mask_str`]) the match is redacted instead |
//!
//! `last4` reveals nothing from values with fewer than eight letters/digits
//! (`1234` → `****`). `last4` and `redact` markers replace text, so a
//! masked value of a numeric column no longer parses as a number; the
//! proxy decides whether to retype the column or to use `null`.
//!
//! HMAC tokens are deterministic under one key, so equality survives
//! masking (joins, `GROUP BY`, `DISTINCT` still work on tokens) and the
//! same card gives the same token whether it was masked by a column rule
//! on the bare digits or found by the pattern backstop in spaced form.
//! The price of determinism: equal values are visibly equal, and the
//! proxy is a tokenisation oracle (see below). Tokens are truncated to 64
//! bits; collisions need about 2^32 distinct values under one key. The key
//! comes from `hmac_key_file` (the file's bytes without trailing whitespace,
//! see [`read_hmac_key`]) and must be at least 16 bytes.
//!
//! # Detectors (see `detect.rs` for the exact rules)
//!
//! - `card`: 13–19 digits in one group or in groups of ≥ 3 digits
//!   separated by single spaces or dashes, first digit 2–6 or 8, Luhn-valid,
//!   never a slice of a longer digit group. Leading digits 0, 1, 7 and 9
//!   are excluded on purpose: they cover epoch milliseconds and 64-bit ids
//!   (≈10% of which pass Luhn) but no major card network (UATP airline cards
//!   start with 1 and are not matched).
//! - `email`: dot-atom local part (`._%+-!#$&*^~`, letters, digits,
//!   non-ASCII, an apostrophe between letters), a domain of ≥ 2 labels with
//!   a final label of ≥ 2 characters containing a letter. Quoted local
//!   parts, `[IP]` domains and percent-encoded `%40` are not matched.
//! - `ssn`: `AAA-GG-SSSS` or `AAA GG SSSS`, never-issued numbers rejected
//!   (area 000, 666, 900–999; group 00; serial 0000), not adjacent to other
//!   digits. Nine bare digits are **not** matched: every 9-digit integer
//!   (amounts in cents, ids, ZIP+4 without dash) would be masked. Store
//!   SSNs behind a column rule.
//! - `iban`: uppercase country code, 2 check digits, BBAN; 15–34
//!   characters, compact or grouped by four with single spaces; ISO 7064
//!   mod-97 must be 1. An all-lowercase IBAN is not matched (lowercase hex
//!   and base-36 ids would otherwise hit 1 in 97).
//! - `token`: `Authorization:` values, `Bearer <token>`, JWTs
//!   (`eyJ….eyJ….sig`), AWS access key ids (`AKIA`/`ASIA` + 16), GitHub
//!   (`ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`), Slack (`xox[bpars]-`), Stripe
//!   (`sk_live_`, `rk_live_`), key/value pairs whose key names a secret
//!   (`api_key=`, `apikey:`, `"client_secret": "…"`, `password=`, `token=`,
//!   …; the value is masked, the key kept) and SQL `PASSWORD '…'`.
//! - custom: `{ name, regex }` in `regex` crate syntax, listed in
//!   `patterns` to be active.
//!
//! Overlapping matches are merged, and the merged range is masked as the
//! kind that starts first.
//!
//! # Cost
//!
//! The backstop runs on every value, so the no-match path allocates nothing
//! and runs no regex: one pass over the bytes counts digits, uppercase
//! letters, `@`, dashes and spaces, and each scanner runs only when its
//! precondition holds (≥ 13 digits for cards, `@` for emails, ≥ 9 digits
//! and a separator for SSNs, ≥ 2 uppercase letters, ≥ 2 digits and ≥ 15
//! bytes for IBANs, an ASCII letter and then a secret keyword found by one
//! Aho-Corasick DFA pass for tokens). Custom regexes run on every value (the `regex` crate's own
//! literal prefilters apply). `cargo bench -p warden --bench masking`
//! prints the figures.
//!
//! # What masking cannot prevent
//!
//! Masking rewrites what leaves in results; it does not stop a workload
//! that may run arbitrary SQL from learning protected values another way.
//! The real controls are the policy layer and a least-privilege upstream
//! role per account.
//!
//! - **Inference through predicates:** for columns with a rule, what
//!   `masked_in_predicates` allows (`equality`, the default: confirming a
//!   guessed value, `WHERE card = '4111…'`; `any`: `WHERE ssn LIKE '1%'`,
//!   `ORDER BY ssn`); for other columns anything, and timing.
//! - **Transformations the patterns do not recognise** (of values no
//!   column rule covers): `reverse(ssn)`,
//!   `translate(card, '0123456789', 'abcdefghij')`, `encode(…, 'base64')`,
//!   `md5(ssn)` (dictionary-attackable), arithmetic on numbers,
//!   `substr(card, 1, 8)` returned piecewise, digits glued to other digits
//!   (`card || '7'`), nine bare SSN digits, fullwidth or other non-ASCII
//!   digits, unusual separators.
//! - **HMAC as an oracle:** a workload that can select literals gets them
//!   tokenised under the same key (`SELECT '078-05-1120'`), and so can build
//!   a token → value dictionary for low-entropy values (SSNs, cards with a
//!   known BIN). Use `redact`/`null` where that matters, or keep ad-hoc
//!   SELECTs out of policy.
//! - **Side channels of the marker:** `last4` keeps lengths and separator
//!   positions; a masked value's presence still shows a match happened.
//! - **Data outside masked messages:** values of columns no rule covers in
//!   binary format of non-text types pass the pattern backstop unread (a
//!   masked column in binary is sent as its marker, or NULL where no
//!   marker fits the type).

pub(crate) mod column;
mod detect;
pub mod json;
mod model;
mod strategy;

// The order of strictness of column strategies (masksound: the catalog
// picks the strictest mask a derived column inherits).
pub(crate) use column::strictness;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use hmac::Mac;
use regex::bytes::RegexBuilder;

pub use model::{
    ColumnRuleConfig, CustomPattern, FieldRuleConfig, Masked, MaskedInPredicates, MaskingConfig,
    MaskingProblem, RequestNamedFields, Strategy,
};
pub use strategy::{LAST4_MIN_ALNUM, REDACTED, TOKEN_HEX_LEN, TOKEN_PREFIX};

use column::ColumnRule;
use detect::{CustomDetector, Hit, Kind};
use strategy::HmacSha256;

/// Names of the built-in detectors.
pub const BUILTIN_DETECTORS: [&str; 5] = ["card", "email", "ssn", "iban", "token"];

/// Shortest HMAC key accepted.
pub const HMAC_KEY_MIN_LEN: usize = 16;

/// Errors of the masking module's own I/O (reading the HMAC key).
#[derive(Debug, thiserror::Error)]
pub enum MaskingError {
    #[error("cannot read masking HMAC key: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: crate::fsutil::SecretError,
    },
    #[error(
        "masking HMAC key {path} holds {len} bytes (after trailing whitespace); at least {HMAC_KEY_MIN_LEN} are needed",
        path = path.display()
    )]
    KeyTooShort { path: PathBuf, len: usize },
}

/// Read an HMAC key file: its bytes with trailing ASCII whitespace removed
/// (so a key written by `head -c 32 /dev/urandom | base64 > F` works as the
/// text it looks like); at least [`HMAC_KEY_MIN_LEN`] bytes. Read through
/// [`crate::fsutil::read_secret`] (the agent's own file, mode 0600).
pub fn read_hmac_key(path: &Path) -> Result<Vec<u8>, MaskingError> {
    let mut key = crate::fsutil::read_secret(path).map_err(|source| MaskingError::KeyRead {
        path: path.to_path_buf(),
        source,
    })?;
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    if key.len() < HMAC_KEY_MIN_LEN {
        return Err(MaskingError::KeyTooShort {
            path: path.to_path_buf(),
            len: key.len(),
        });
    }
    Ok(key)
}

/// A compiled `[masking.NAME]`: column rules, active detectors, the pattern
/// strategy and the HMAC key. `Send + Sync`; share it in an `Arc`.
#[derive(Clone)]
pub struct Masker {
    columns: Vec<ColumnRule>,
    card: bool,
    email: bool,
    ssn: bool,
    iban: bool,
    token: bool,
    custom: Vec<CustomDetector>,
    pattern_strategy: Strategy,
    hmac: Option<HmacSha256>,
    masked_in_predicates: MaskedInPredicates,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let custom: Vec<&str> = self.custom.iter().map(|c| c.name.as_str()).collect();
        f.debug_struct("Masker")
            .field("columns", &self.columns.len())
            .field("card", &self.card)
            .field("email", &self.email)
            .field("ssn", &self.ssn)
            .field("iban", &self.iban)
            .field("token", &self.token)
            .field("custom", &custom)
            .field("pattern_strategy", &self.pattern_strategy)
            .field("hmac_key", &self.hmac.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// When a masking's HMAC key is given: at compile time, or later
/// ([`Masker::keyed`]).
enum KeyAt {
    Now(Option<Vec<u8>>),
    Later,
}

/// The HMAC of a key read from `hmac_key_file`: at least
/// [`HMAC_KEY_MIN_LEN`] bytes.
fn hmac_mac(key: Vec<u8>) -> Result<HmacSha256, Vec<MaskingProblem>> {
    if key.len() < HMAC_KEY_MIN_LEN {
        return Err(vec![MaskingProblem::new(
            "hmac_key_file",
            format!(
                "the key holds {} bytes; at least {HMAC_KEY_MIN_LEN} are needed",
                key.len()
            ),
        )]);
    }
    // HMAC takes keys of any length; kept for completeness.
    HmacSha256::new_from_slice(&key)
        .map_err(|e| vec![MaskingProblem::new("hmac_key_file", e.to_string())])
}

/// Every built-in detector, pattern strategy `redact`, no column rules, no
/// key: for masking literals in audited statement text and messages.
pub fn builtin() -> Masker {
    Masker::all_builtin()
}

fn valid_custom_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Masker {
    /// See [`builtin`].
    pub fn all_builtin() -> Masker {
        Masker {
            columns: Vec::new(),
            card: true,
            email: true,
            ssn: true,
            iban: true,
            token: true,
            custom: Vec::new(),
            pattern_strategy: Strategy::Redact,
            hmac: None,
            masked_in_predicates: MaskedInPredicates::default(),
        }
    }

    /// Compile `cfg`; `hmac_key` is the content of `cfg.hmac_key_file`
    /// (see [`read_hmac_key`]). Reports every problem at once.
    pub fn compile(
        cfg: &MaskingConfig,
        hmac_key: Option<Vec<u8>>,
    ) -> Result<Masker, Vec<MaskingProblem>> {
        Self::compile_inner(cfg, KeyAt::Now(hmac_key))
    }

    /// Compile `cfg` before its key is read (configuration load): every
    /// problem but the key's own. The result has no key (strategy `hmac`
    /// redacts, fail closed) until [`keyed`](Self::keyed) gives it one.
    pub fn compile_unkeyed(cfg: &MaskingConfig) -> Result<Masker, Vec<MaskingProblem>> {
        Self::compile_inner(cfg, KeyAt::Later)
    }

    /// This masker with the HMAC key read from `hmac_key_file` (see
    /// [`read_hmac_key`]); the rules are not compiled again.
    pub fn keyed(&self, hmac_key: Vec<u8>) -> Result<Masker, Vec<MaskingProblem>> {
        let mut m = self.clone();
        m.hmac = Some(hmac_mac(hmac_key)?);
        Ok(m)
    }

    fn compile_inner(cfg: &MaskingConfig, key: KeyAt) -> Result<Masker, Vec<MaskingProblem>> {
        let mut problems = Vec::new();
        let mut hmac_users: Vec<String> = Vec::new();

        // Column rules.
        let mut columns: Vec<ColumnRule> = Vec::new();
        let mut seen_keys: Vec<(column::ColumnKey, usize)> = Vec::new();
        for (i, rule) in cfg.columns.iter().enumerate() {
            if rule.strategy == Strategy::Hmac {
                hmac_users.push(format!("columns[{i}]"));
            }
            match column::parse_spec(&rule.column) {
                Ok(key) => {
                    if let Some((_, first)) = seen_keys.iter().find(|(k, _)| *k == key) {
                        problems.push(MaskingProblem::new(
                            format!("columns[{i}].column"),
                            format!("{:?} is already ruled by columns[{first}]", rule.column),
                        ));
                        continue;
                    }
                    seen_keys.push((key.clone(), i));
                    columns.push(ColumnRule::new(key, rule.strategy, &rule.column));
                }
                Err(msg) => problems.push(MaskingProblem::new(format!("columns[{i}].column"), msg)),
            }
        }

        // Custom detectors (compiled whether listed or not, so every bad
        // regex is reported).
        let mut custom_compiled: Vec<Option<CustomDetector>> = Vec::new();
        for (i, c) in cfg.custom.iter().enumerate() {
            let mut ok = true;
            if !valid_custom_name(&c.name) {
                ok = false;
                problems.push(MaskingProblem::new(
                    format!("custom[{i}].name"),
                    format!("{:?} is not a detector name (1-64 of a-z, 0-9, _)", c.name),
                ));
            } else if BUILTIN_DETECTORS.contains(&c.name.as_str()) {
                ok = false;
                problems.push(MaskingProblem::new(
                    format!("custom[{i}].name"),
                    format!("{:?} is a built-in detector", c.name),
                ));
            } else if let Some(j) = cfg.custom[..i].iter().position(|o| o.name == c.name) {
                ok = false;
                problems.push(MaskingProblem::new(
                    format!("custom[{i}].name"),
                    format!("{:?} is already defined by custom[{j}]", c.name),
                ));
            }
            let regex = match RegexBuilder::new(&c.regex)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
            {
                Ok(r) if r.is_match(b"") => {
                    problems.push(MaskingProblem::new(
                        format!("custom[{i}].regex"),
                        "matches the empty string; a detector must match at least one character",
                    ));
                    None
                }
                Ok(r) => Some(r),
                Err(e) => {
                    problems.push(MaskingProblem::new(
                        format!("custom[{i}].regex"),
                        format!("invalid regex: {e}"),
                    ));
                    None
                }
            };
            custom_compiled.push(match (ok, regex) {
                (true, Some(regex)) => Some(CustomDetector {
                    marker: format!("[MASKED:{}]", c.name).into_bytes(),
                    name: c.name.clone(),
                    regex,
                }),
                _ => None,
            });
        }

        // Patterns.
        let mut m = Masker {
            columns,
            card: false,
            email: false,
            ssn: false,
            iban: false,
            token: false,
            custom: Vec::new(),
            pattern_strategy: cfg.pattern_strategy.unwrap_or(Strategy::Redact),
            hmac: None,
            masked_in_predicates: cfg.masked_in_predicates,
        };
        let mut listed_custom = vec![false; cfg.custom.len()];
        for (i, name) in cfg.patterns.iter().enumerate() {
            if let Some(j) = cfg.patterns[..i].iter().position(|o| o == name) {
                problems.push(MaskingProblem::new(
                    format!("patterns[{i}]"),
                    format!("{name:?} is already listed at patterns[{j}]"),
                ));
                continue;
            }
            let flag = match name.as_str() {
                "card" => Some(&mut m.card),
                "email" => Some(&mut m.email),
                "ssn" => Some(&mut m.ssn),
                "iban" => Some(&mut m.iban),
                "token" => Some(&mut m.token),
                _ => None,
            };
            if let Some(flag) = flag {
                *flag = true;
                continue;
            }
            match cfg.custom.iter().position(|c| &c.name == name) {
                Some(j) => {
                    listed_custom[j] = true;
                    if let Some(d) = custom_compiled[j].take() {
                        m.custom.push(d);
                    }
                }
                None => {
                    let mut known: Vec<&str> = BUILTIN_DETECTORS.to_vec();
                    known.extend(cfg.custom.iter().map(|c| c.name.as_str()));
                    problems.push(MaskingProblem::new(
                        format!("patterns[{i}]"),
                        format!("unknown detector {name:?} (known: {})", known.join(", ")),
                    ));
                }
            }
        }
        for (j, listed) in listed_custom.iter().enumerate() {
            if !listed {
                problems.push(MaskingProblem::new(
                    format!("custom[{j}]"),
                    format!(
                        "detector {:?} is defined but not listed in patterns, so it would never run",
                        cfg.custom[j].name
                    ),
                ));
            }
        }
        if cfg.pattern_strategy == Some(Strategy::Hmac) {
            hmac_users.push("pattern_strategy".into());
        }

        // Key.
        match key {
            KeyAt::Now(Some(key)) => match hmac_mac(key) {
                Ok(mac) => m.hmac = Some(mac),
                Err(p) => problems.extend(p),
            },
            // `hmac_key_file` is read when the runtime is built.
            KeyAt::Later if cfg.hmac_key_file.is_some() => {}
            KeyAt::Now(None) | KeyAt::Later if !hmac_users.is_empty() => {
                let msg = if cfg.hmac_key_file.is_some() {
                    "is set but no key was loaded"
                } else {
                    "is required by strategy \"hmac\""
                };
                problems.push(MaskingProblem::new(
                    "hmac_key_file",
                    format!("{msg} (used by {})", hmac_users.join(", ")),
                ));
            }
            KeyAt::Now(None) | KeyAt::Later => {}
        }

        if problems.is_empty() {
            Ok(m)
        } else {
            Err(problems)
        }
    }

    /// The strategy of the column `schema.table.column` (names as resolved
    /// from the catalog), or `None` when no column rule covers it.
    pub fn column_strategy(&self, schema: &str, table: &str, column: &str) -> Option<Strategy> {
        column::lookup(&self.columns, schema, table, column)
    }

    /// The column rule covering `schema.table.column`: its spec as written
    /// and its strategy.
    pub fn column_rule(&self, schema: &str, table: &str, column: &str) -> Option<(&str, Strategy)> {
        column::lookup_rule(&self.columns, schema, table, column).map(|r| (r.spec(), r.strategy()))
    }

    /// The strictest column rule that could cover a column of a relation
    /// Warden has no catalog entry for: `schema` `None` matches any schema,
    /// `column` `None` any column.
    pub fn column_rule_loose(
        &self,
        schema: Option<&str>,
        table: &str,
        column: Option<&str>,
    ) -> Option<(&str, Strategy)> {
        column::lookup_loose(&self.columns, schema, table, column).map(|r| (r.spec(), r.strategy()))
    }

    /// Where masked columns may be used outside the select list.
    pub fn masked_in_predicates(&self) -> MaskedInPredicates {
        self.masked_in_predicates
    }

    /// Whether any pattern detector is active (else the backstop can be
    /// skipped).
    pub fn has_patterns(&self) -> bool {
        self.card || self.email || self.ssn || self.iban || self.token || !self.custom.is_empty()
    }

    /// Whether column rules exist.
    pub fn has_columns(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The strategy applied to pattern matches.
    pub fn pattern_strategy(&self) -> Strategy {
        self.pattern_strategy
    }

    /// Apply a column strategy to one value (UTF-8 text bytes; invalid
    /// UTF-8 is tolerated). `Masked::Null` means the proxy sends SQL NULL.
    /// `Hmac` without a key (only possible on a masker not built from a
    /// config that uses hmac) redacts: fail closed.
    pub fn apply(&self, strategy: Strategy, value: &[u8]) -> Masked {
        match strategy {
            Strategy::Null => Masked::Null,
            Strategy::Redact => Masked::Value(REDACTED.to_vec()),
            Strategy::Last4 => {
                let mut out = Vec::with_capacity(value.len());
                strategy::last4(value, &mut out);
                Masked::Value(out)
            }
            Strategy::Hmac => match &self.hmac {
                Some(key) => {
                    let mut out = Vec::with_capacity(TOKEN_PREFIX.len() + TOKEN_HEX_LEN);
                    strategy::hmac_token(key, value, &mut out);
                    Masked::Value(out)
                }
                None => Masked::Value(REDACTED.to_vec()),
            },
        }
    }

    /// Pattern backstop: `None` when nothing matched (the hot path: no
    /// allocation), else the rewritten bytes and the number of masked
    /// ranges (overlapping matches count once). With pattern strategy
    /// `null` the matches are redacted here; use [`Masker::mask_value`] for
    /// values that can be NULL.
    pub fn mask_patterns(&self, value: &[u8]) -> Option<(Vec<u8>, usize)> {
        let hits = self.hits(value);
        if hits.is_empty() {
            return None;
        }
        Some(self.rewrite(value, hits))
    }

    /// Pattern backstop for a value that may become NULL (DataRow, CopyData
    /// fields): like [`Masker::mask_patterns`], but with pattern strategy
    /// `null` any match turns the whole value into [`Masked::Null`].
    pub fn mask_value(&self, value: &[u8]) -> Option<(Masked, usize)> {
        let hits = self.hits(value);
        if hits.is_empty() {
            return None;
        }
        if self.pattern_strategy == Strategy::Null {
            // Counted as mask_patterns counts (its passes included).
            let (_, n) = self.rewrite(value, hits);
            return Some((Masked::Null, n));
        }
        let (bytes, n) = self.rewrite(value, hits);
        Some((Masked::Value(bytes), n))
    }

    /// Same as [`Masker::mask_patterns`] for text (error messages,
    /// statement text): `Cow::Borrowed` when nothing matched.
    pub fn mask_str<'a>(&self, s: &'a str) -> (Cow<'a, str>, usize) {
        match self.mask_patterns(s.as_bytes()) {
            None => (Cow::Borrowed(s), 0),
            // Built-in ranges start and end on ASCII bytes and replacements
            // are ASCII, so the result is UTF-8; a custom regex written to
            // match raw bytes could split a character, hence the fallback.
            Some((bytes, n)) => match String::from_utf8(bytes) {
                Ok(s) => (Cow::Owned(s), n),
                Err(e) => (
                    Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    n,
                ),
            },
        }
    }

    /// Every detector's matches in `v` (unsorted, possibly overlapping).
    fn hits(&self, v: &[u8]) -> Vec<Hit> {
        let mut out = Vec::new();
        if v.is_empty() {
            return out;
        }
        let f = detect::features(v);
        if self.card && f.digits >= 13 {
            detect::find_cards(v, &mut out);
        }
        if self.email && f.at {
            detect::find_emails(v, &mut out);
        }
        if self.ssn && f.digits >= 9 && f.dash_or_space {
            detect::find_ssns(v, &mut out);
        }
        if self.iban && f.upper >= 2 && f.digits >= 2 && v.len() >= 15 {
            detect::find_ibans(v, &mut out);
        }
        if self.token && f.letters {
            detect::tokens().find(v, &mut out);
        }
        for (i, c) in self.custom.iter().enumerate() {
            c.find(i, v, &mut out);
        }
        out
    }

    /// Rewrites every match, then again while the result still holds one:
    /// a rendering can join its neighbours into a new match (last4's kept
    /// digits beside other digits make a card; an HMAC token is a local
    /// part before an `@` left over). Masking is a fixed point: the result
    /// never matches a detector. Past [`MAX_PASSES`] (never seen: every
    /// pass leaves fewer letters and digits) the whole value is redacted.
    fn rewrite(&self, v: &[u8], hits: Vec<Hit>) -> (Vec<u8>, usize) {
        let first = merge(hits.clone()).first().map(|h| h.kind);
        let (mut out, mut n) = self.rewrite_once(v, hits);
        for _ in 1..MAX_PASSES {
            let again = self.hits(&out);
            if again.is_empty() {
                return (out, n);
            }
            let (next, k) = self.rewrite_once(&out, again);
            out = next;
            n += k;
        }
        if self.hits(&out).is_empty() {
            return (out, n);
        }
        let kind = first.unwrap_or(Kind::Token);
        (self.marker(kind).to_vec(), n)
    }

    fn rewrite_once(&self, v: &[u8], hits: Vec<Hit>) -> (Vec<u8>, usize) {
        let ranges = merge(hits);
        let mut out = Vec::with_capacity(v.len() + 16);
        let mut at = 0;
        for h in &ranges {
            out.extend_from_slice(&v[at..h.start]);
            self.replace(h.kind, &v[h.start..h.end], &mut out);
            at = h.end;
        }
        out.extend_from_slice(&v[at..]);
        (out, ranges.len())
    }

    fn marker(&self, kind: Kind) -> &[u8] {
        match kind {
            Kind::Custom(i) => self.custom.get(i).map_or(REDACTED, |c| &c.marker),
            k => strategy::kind_marker(k),
        }
    }

    fn replace(&self, kind: Kind, m: &[u8], out: &mut Vec<u8>) {
        match self.pattern_strategy {
            Strategy::Last4 if kind != Kind::Email => strategy::last4(m, out),
            Strategy::Hmac => match &self.hmac {
                Some(key) => strategy::hmac_token(key, &strategy::normalise(kind, m), out),
                None => out.extend_from_slice(self.marker(kind)),
            },
            _ => out.extend_from_slice(self.marker(kind)),
        }
    }
}

/// How many times [`Masker::rewrite`] masks its own result before it
/// redacts the whole value.
const MAX_PASSES: usize = 4;

/// Sort by start and merge overlapping ranges; a merged range keeps the
/// kind of the match that starts first (the longer one on a tie, then the
/// detector order card, email, ssn, iban, token, custom: the sort is
/// stable).
fn merge(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        match merged.last_mut() {
            Some(last) if h.start < last.end => last.end = last.end.max(h.end),
            _ => merged.push(h),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
