//! Masking of HTTP bodies: JSON documents (field rules by member name or
//! JSON pointer, then the pattern detectors on every string, number and
//! member name), `application/x-www-form-urlencoded` bodies (field rules by
//! name, then patterns on names and values) and text (patterns). Works on
//! whole, decoded bodies; the proxy bounds their size and decides which
//! bodies can be masked at all ([`FieldRules::passes_type`],
//! [`FieldRules::passes_unmasked`]).
//!
//! What a client could read differently from the masker is refused rather
//! than guessed: a JSON document with a member name twice in one object
//! (parsers disagree on which one wins) and a form body that is not UTF-8.
//! A string member that holds a JSON object or array is masked inside too.
//!
//! Member names are compared as the most lenient reader would bind them
//! ([`fold_member`]): Unicode compatibility forms (`ｎａｍｅ`), any case
//! (Go's `encoding/json`, Jackson and System.Text.Json options bind `Name`
//! and `NAME` to `name`; Go folds `ſ` to `s` and the Kelvin sign to `k`),
//! without `_`, `-`, spaces and invisible format characters (`first_name`,
//! `firstName`, `first-name` are one field to naming strategies). Escapes
//! (`"n\u0061me"`) are decoded by the parser before any comparison.
//! Names that nest (`customer[name]`, `name[]`, `customer.name`: `qs`,
//! Rack, PHP, Spring's binder and flattened documents read them as the
//! member `name` of `customer`) get the rule of their last named
//! component, and pointer rules see them split.
//!
//! Names the *request* chose: many APIs let the caller name response
//! members (PostgREST `select=n:name`, GraphQL aliases `{ n: name }`,
//! OData `compute … as n`). A [`Projection`] holds the (folded) words of
//! the request; when it mentions a field rule's name, every response
//! member whose name is also one of those words may be that field under a
//! name the caller chose, and its scalar values get the rule's strategy
//! (the strictest, `redact`, when several rules with different strategies
//! are mentioned). Members the request does not name keep their values.

use std::collections::HashSet;

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::{Masked, Masker, MaskingConfig, MaskingProblem, Strategy};

/// Invisible format characters a reader may drop from a name (soft hyphen,
/// zero-width spaces and joiners, bidi marks, word joiner, BOM...).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A member (or form field) name as the most lenient reader binds it:
/// NFKC, lower case (Unicode), without `_`, `-`, whitespace and invisible
/// format characters. Two names with the same fold are one field to some
/// client or upstream.
pub fn fold_member(name: &str) -> String {
    let lower: String = name.nfkc().collect::<String>().to_lowercase();
    lower
        .nfkc()
        .filter(|c| !(matches!(c, '_' | '-') || c.is_whitespace() || is_invisible(*c)))
        .collect()
}

/// The components of a name that nested-parameter readers split
/// (`customer[name]`, `name[]`, `items[0][name]` in `qs`, Rack, PHP;
/// `customer.name` in Spring's binder and in flattened JSON documents):
/// `None` for a name with no `[`, `]` or `.`. A field rule on `name`
/// applies to such a member too (over-masking `file.name` is the safe
/// side).
fn nested_components(name: &str) -> Option<Vec<String>> {
    if !name.contains(['[', ']', '.']) {
        return None;
    }
    let parts: Vec<String> = name
        .split(['[', ']', '.'])
        .filter(|p| !p.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// Content codings the proxy decodes itself (never passed unmasked).
const DECODED_ENCODINGS: &[&str] = &["gzip", "x-gzip", "deflate"];

/// Whether a body in content coding `encoding` (lower case, "" for none)
/// is one Warden cannot decode to mask it.
pub fn undecodable(encoding: &str) -> bool {
    !encoding.is_empty() && encoding != "identity" && !DECODED_ENCODINGS.contains(&encoding)
}

/// Whether a media type (`type/subtype`, lower case) is one of the JSON
/// types Warden masks: `*/json`, `*/x-json` and `*/*+json`.
pub fn is_json_type(essence: &str) -> bool {
    let sub = essence.split_once('/').map_or("", |(_, s)| s);
    sub == "json" || sub == "x-json" || sub.ends_with("+json")
}

/// The form type Warden masks.
pub const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// HTTP body rules compiled from a `[masking.NAME]`: `fields`,
/// `unmasked_encodings` and `unmasked_types`.
#[derive(Debug, Clone, Default)]
pub struct FieldRules {
    /// Member names, folded ([`fold_member`]).
    names: Vec<(String, Strategy)>,
    /// Pointer segments (unescaped, folded; `*` matches any array index).
    pointers: Vec<(Vec<String>, Strategy)>,
    /// Lower-case content codings that pass through unmasked.
    unmasked_encodings: Vec<String>,
    /// Lower-case media types (`type/subtype` or `type/*`) that pass
    /// through unmasked.
    unmasked_types: Vec<String>,
    /// `request_named_fields = "trust"`: no [`Projection`].
    trust_names: bool,
}

/// Whether `t` is a media-type token (RFC 9110 `token`).
fn is_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl FieldRules {
    /// Validate and compile `cfg.fields`, `cfg.unmasked_encodings` and
    /// `cfg.unmasked_types`.
    /// Whether any rule names a member or a pointer (structure matters).
    pub fn has_field_rules(&self) -> bool {
        !self.names.is_empty() || !self.pointers.is_empty()
    }

    pub fn compile(cfg: &MaskingConfig) -> Result<FieldRules, Vec<MaskingProblem>> {
        let mut problems = Vec::new();
        let mut out = FieldRules {
            trust_names: cfg.request_named_fields == super::model::RequestNamedFields::Trust,
            ..FieldRules::default()
        };
        for (i, f) in cfg.fields.iter().enumerate() {
            let key = format!("fields[{i}]");
            match (&f.field, &f.pointer) {
                (Some(name), None) if !fold_member(name).is_empty() => {
                    out.names.push((fold_member(name), f.strategy))
                }
                (None, Some(p)) if p.starts_with('/') => out.pointers.push((
                    p[1..]
                        .split('/')
                        .map(|s| match s {
                            "*" => "*".to_owned(),
                            s => fold_member(&s.replace("~1", "/").replace("~0", "~")),
                        })
                        .collect(),
                    f.strategy,
                )),
                (None, Some(p)) => problems.push(MaskingProblem {
                    key: format!("{key}.pointer"),
                    message: format!("{p:?} is not a JSON pointer (starts with '/')"),
                }),
                _ => problems.push(MaskingProblem {
                    key,
                    message: "give exactly one of `field` (a non-empty name) or `pointer`".into(),
                }),
            }
        }
        for (i, e) in cfg.unmasked_encodings.iter().enumerate() {
            let lower = e.trim().to_ascii_lowercase();
            let key = format!("unmasked_encodings[{i}]");
            if lower.is_empty()
                || !lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                problems.push(MaskingProblem {
                    key,
                    message: format!("{e:?} is not a content coding (e.g. \"br\")"),
                });
            } else if !undecodable(&lower) {
                problems.push(MaskingProblem {
                    key,
                    message: format!(
                        "{lower} bodies are decoded and masked; only codings Warden cannot decode \
                         may pass unmasked"
                    ),
                });
            } else {
                out.unmasked_encodings.push(lower);
            }
        }
        for (i, t) in cfg.unmasked_types.iter().enumerate() {
            let lower = t.trim().to_ascii_lowercase();
            let key = format!("unmasked_types[{i}]");
            let problem = match lower.split_once('/') {
                _ if lower == "*/*" => Some(
                    "\"*/*\" would let every response pass unmasked: remove the masking from \
                     the grant instead"
                        .to_owned(),
                ),
                Some((ty, sub)) if is_token(ty) && ty != "*" && is_token(sub) => {
                    if is_json_type(&lower) || lower == FORM_TYPE {
                        Some(format!(
                            "{lower} bodies are always masked; only types Warden cannot mask may \
                             pass unmasked"
                        ))
                    } else if sub.contains('*') && sub != "*" {
                        Some(format!(
                            "{t:?}: '*' stands only for a whole subtype (\"image/*\")"
                        ))
                    } else {
                        None
                    }
                }
                _ => Some(format!(
                    "{t:?} is not a media type (\"type/subtype\" or \"type/*\", no parameters)"
                )),
            };
            match problem {
                Some(message) => problems.push(MaskingProblem { key, message }),
                None => out.unmasked_types.push(lower),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// Whether a body in content coding `encoding` (lower case) may pass
    /// through unmasked.
    pub fn passes_unmasked(&self, encoding: &str) -> bool {
        self.unmasked_encodings.iter().any(|e| e == encoding)
    }

    /// Whether a body of media type `essence` (`type/subtype`, lower case)
    /// that Warden cannot mask may pass through unmasked.
    pub fn passes_type(&self, essence: &str) -> bool {
        let ty = essence.split_once('/').map_or(essence, |(t, _)| t);
        self.unmasked_types.iter().any(|u| {
            u == essence
                || u.strip_suffix("/*")
                    .is_some_and(|p| p == ty && essence.contains('/'))
        })
    }

    /// Whether there are field rules (which text bodies cannot honour).
    pub fn has_fields(&self) -> bool {
        !self.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.pointers.is_empty()
    }

    /// The rule for a member or field named `name`: as it is, else as a
    /// nested-parameter reader binds it (its last named component, see
    /// [`nested_components`]).
    fn by_name(&self, name: &str) -> Option<Strategy> {
        let find = |n: &str| {
            let folded = fold_member(n);
            self.names
                .iter()
                .find(|(n, _)| *n == folded)
                .map(|(_, s)| *s)
        };
        find(name).or_else(|| {
            nested_components(name)?
                .iter()
                .rev()
                .find(|c| !c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|leaf| find(leaf))
        })
    }

    fn by_pointer(&self, path: &[String]) -> Option<Strategy> {
        let matches = |path: &[String]| {
            self.pointers
                .iter()
                .find(|(p, _)| {
                    p.len() == path.len()
                        && p.iter().zip(path).all(|(a, b)| {
                            (a == "*" && b.bytes().all(|c| c.is_ascii_digit()))
                                || *a == fold_member(b)
                        })
                })
                .map(|(_, s)| *s)
        };
        matches(path).or_else(|| {
            // `{"customer.name": …}` is `/customer/name` to a reader that
            // unflattens names.
            if !path.iter().any(|seg| nested_components(seg).is_some()) {
                return None;
            }
            let split: Vec<String> = path
                .iter()
                .flat_map(|seg| nested_components(seg).unwrap_or_else(|| vec![seg.clone()]))
                .collect();
            matches(&split)
        })
    }

    /// The words of a request (its target, header names and values, body)
    /// and the strategy for members whose names the request may have
    /// chosen: see [`Projection`].
    pub fn projection<'a>(&self, texts: impl IntoIterator<Item = &'a [u8]>) -> Projection {
        let mut words = HashSet::new();
        if !self.has_field_rules() || self.trust_names {
            return Projection::default();
        }
        for t in texts {
            request_words(&String::from_utf8_lossy(t), &mut words, 0);
        }
        let mut mentioned: Vec<Strategy> = self
            .names
            .iter()
            .filter(|(n, _)| words.contains(n))
            .map(|(_, s)| *s)
            .chain(
                self.pointers
                    .iter()
                    .filter(|(p, _)| p.iter().any(|seg| seg != "*" && words.contains(seg)))
                    .map(|(_, s)| *s),
            )
            .collect();
        mentioned.dedup();
        let strategy = match mentioned.as_slice() {
            [] => None,
            [one] => Some(*one),
            more if more.iter().all(|s| *s == more[0]) => Some(more[0]),
            _ => Some(Strategy::Redact),
        };
        Projection { words, strategy }
    }
}

/// What a request said about the names of its response's members: its
/// words (folded) and, when it mentions a field rule, the strategy for
/// members it may have named (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    words: HashSet<String>,
    strategy: Option<Strategy>,
}

impl Projection {
    /// The strategy for a member named `name` that no rule names: the
    /// request mentions a masked field and also `name`.
    fn chosen(&self, name: &str) -> Option<Strategy> {
        self.strategy
            .filter(|_| self.words.contains(&fold_member(name)))
    }
}

/// How many times a request text is percent-decoded and its JSON strings
/// opened, looking for words (an upstream may decode twice).
const MAX_WORD_DEPTH: usize = 4;

/// Adds the folded words of `text` to `words`: as written, percent-decoded
/// (`+` a space), and the strings and member names of the JSON it holds.
fn request_words(text: &str, words: &mut HashSet<String>, depth: usize) {
    let norm: String = text.nfkc().collect();
    for w in norm.split(|c: char| {
        !(c.is_alphanumeric()
            || matches!(c, '_' | '-')
            || is_invisible(c)
            || ('\u{0300}'..='\u{036F}').contains(&c))
    }) {
        let f = fold_member(w);
        if !f.is_empty() {
            words.insert(f);
        }
    }
    if depth >= MAX_WORD_DEPTH {
        return;
    }
    let decoded = percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned();
    if decoded != text {
        request_words(&decoded, words, depth + 1);
    }
    let t = text.trim_start();
    if (t.starts_with('{') || t.starts_with('[') || t.starts_with('"'))
        && let Ok(v) = serde_json::from_str::<Value>(text)
    {
        json_words(&v, words, depth + 1);
    }
}

fn json_words(v: &Value, words: &mut HashSet<String>, depth: usize) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                request_words(k, words, depth);
                json_words(child, words, depth);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| json_words(c, words, depth)),
        Value::String(s) => request_words(s, words, depth),
        _ => {}
    }
}

/// A JSON document whose objects each name a member at most once: parsers
/// disagree on which of two equal names wins, so a masker that reads one
/// and a client that reads the other would not see the same document.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|Strict(v)| v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "member {:?} appears twice in one object",
                    k.chars().take(64).collect::<String>()
                )));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses a JSON document, refusing one that names a member twice in an
/// object (see [`Strict`]).
pub fn parse_strict(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Strict>(body)
        .map(|Strict(v)| v)
        .map_err(|e| format!("JSON body cannot be masked: {e}"))
}

/// How deep JSON held in JSON strings is opened.
const MAX_NESTED: usize = 4;

/// Masks `v` in place; returns how many values (and member names) were
/// masked, or why the document cannot be masked.
pub fn mask_json(masker: &Masker, rules: &FieldRules, v: &mut Value) -> Result<usize, String> {
    mask_json_for(masker, rules, &Projection::default(), v)
}

/// [`mask_json`] of the response to a request that said `proj` about the
/// names of its members.
pub fn mask_json_for(
    masker: &Masker,
    rules: &FieldRules,
    proj: &Projection,
    v: &mut Value,
) -> Result<usize, String> {
    let mut path = Vec::new();
    let w = Walk {
        masker,
        rules,
        proj,
    };
    w.walk(v, &mut path, 0, None)
}

/// What a walk over one document applies.
struct Walk<'a> {
    masker: &'a Masker,
    rules: &'a FieldRules,
    proj: &'a Projection,
}

impl Walk<'_> {
    fn walk(
        &self,
        v: &mut Value,
        path: &mut Vec<String>,
        nested: usize,
        chosen: Option<Strategy>,
    ) -> Result<usize, String> {
        let (masker, rules) = (self.masker, self.rules);
        // `chosen`: a member the request may have named (see [`Projection`]):
        // its scalars, also inside arrays, get the mentioned rule's strategy.
        if !path.is_empty() {
            let strategy = rules
                .by_pointer(path)
                .or_else(|| path.last().and_then(|k| rules.by_name(k)))
                .or(chosen.filter(|_| !v.is_array() && !v.is_object()));
            if let Some(s) = strategy
                && !v.is_null()
            {
                let text = match &*v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *v = match masker.apply(s, text.as_bytes()) {
                    Masked::Null => Value::Null,
                    Masked::Value(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
                };
                return Ok(1);
            }
        }
        match v {
            Value::Object(map) => {
                let mut n = 0;
                // Member names carry data too (maps keyed by e-mail): masked
                // like values; a masked name that collides gets a suffix.
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|k| match masker.mask_str(k) {
                        (std::borrow::Cow::Owned(m), c) if c > 0 => Some((k.clone(), m)),
                        _ => None,
                    })
                    .collect();
                for (old, new) in renamed {
                    if let Some(child) = map.remove(&old) {
                        let mut name = new.clone();
                        let mut i = 2;
                        while map.contains_key(&name) {
                            name = format!("{new}~{i}");
                            i += 1;
                        }
                        map.insert(name, child);
                        n += 1;
                    }
                }
                for (k, child) in map.iter_mut() {
                    path.push(k.clone());
                    n += self.walk(child, path, nested, self.proj.chosen(k))?;
                    path.pop();
                }
                Ok(n)
            }
            Value::Array(items) => {
                let mut n = 0;
                for (i, child) in items.iter_mut().enumerate() {
                    path.push(i.to_string());
                    n += self.walk(child, path, nested, chosen)?;
                    path.pop();
                }
                Ok(n)
            }
            Value::String(s) => {
                // A document inside a string (`"payload": "{\"email\": …}"`):
                // its members get the field rules too.
                // So is a JSON string literal that holds one (`"\"{…}\""`).
                let t = s.trim_start();
                let opens = |t: &str| t.starts_with('{') || t.starts_with('[');
                let document = (opens(t) || t.starts_with('"'))
                    .then(|| serde_json::from_str::<Value>(s).ok())
                    .flatten()
                    .filter(|inner| match inner {
                        Value::String(x) => opens(x.trim_start()),
                        _ => true,
                    });
                if let Some(mut inner) = document {
                    if nested >= MAX_NESTED {
                        if rules.has_field_rules() {
                            // Fail closed: field rules cannot be applied below.
                            return Err(format!(
                                "a JSON document nested more than {MAX_NESTED} deep in strings cannot be masked"
                            ));
                        }
                    } else {
                        if !inner.is_string() {
                            parse_strict(s.as_bytes())?;
                        }
                        let mut inner_path = Vec::new();
                        let n = self.walk(&mut inner, &mut inner_path, nested + 1, None)?;
                        if n > 0 {
                            *s = inner.to_string();
                        }
                        // A client may read the string as text: what a
                        // detector still finds in the whole of it (a value
                        // the document's walk did not reach as one piece)
                        // masks it as text (fuzz/regressions/http_body/
                        // json-in-string-card).
                        return Ok(match masker.mask_str(s) {
                            (std::borrow::Cow::Owned(m), k) if k > 0 => {
                                *s = m;
                                n + k
                            }
                            _ => n,
                        });
                    }
                }
                Ok(match masker.mask_str(s) {
                    (std::borrow::Cow::Owned(m), n) if n > 0 => {
                        *s = m;
                        n
                    }
                    _ => 0,
                })
            }
            Value::Number(num) => {
                let text = num.to_string();
                Ok(match masker.mask_str(&text) {
                    (std::borrow::Cow::Owned(m), n) if n > 0 => {
                        *v = Value::String(m);
                        n
                    }
                    _ => 0,
                })
            }
            _ => Ok(0),
        }
    }
}

/// Masks a form-urlencoded body (names and values); `Ok(None)` when nothing
/// changed; an error when it is not UTF-8 (a client could decode it in
/// another charset than the detectors read).
pub fn mask_form(
    masker: &Masker,
    rules: &FieldRules,
    body: &[u8],
) -> Result<Option<(Vec<u8>, usize)>, String> {
    mask_form_for(masker, rules, &Projection::default(), body)
}

/// [`mask_form`] of the response to a request that said `proj` about the
/// names of its fields.
pub fn mask_form_for(
    masker: &Masker,
    rules: &FieldRules,
    proj: &Projection,
    body: &[u8],
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| "form body is not UTF-8: it cannot be masked".to_owned())?;
    let mut n = 0;
    let mut parts = Vec::new();
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k);
        let value = decode(v);
        let (out_name, name_hits) = match masker.mask_str(&name) {
            (std::borrow::Cow::Owned(m), c) if c > 0 => (encode(&m), c),
            _ => (k.to_owned(), 0),
        };
        n += name_hits;
        let masked = if let Some(s) = rules.by_name(&name).or_else(|| proj.chosen(&name)) {
            n += 1;
            match masker.apply(s, value.as_bytes()) {
                Masked::Null => String::new(),
                Masked::Value(b) => String::from_utf8_lossy(&b).into_owned(),
            }
        } else {
            match masker.mask_str(&value) {
                (std::borrow::Cow::Owned(m), c) if c > 0 => {
                    n += c;
                    m
                }
                _ if name_hits > 0 => {
                    parts.push(format!("{out_name}={v}"));
                    continue;
                }
                _ => {
                    parts.push(pair.to_owned());
                    continue;
                }
            }
        };
        parts.push(format!("{out_name}={}", encode(&masked)));
    }
    Ok((n > 0).then(|| (parts.join("&").into_bytes(), n)))
}

/// A form name or value as a client reads it: `+` a space, percent-decoded.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(text: &str) -> (Masker, FieldRules) {
        let cfg: MaskingConfig = toml::from_str(text).unwrap();
        (
            Masker::compile(&cfg, None).unwrap(),
            FieldRules::compile(&cfg).unwrap(),
        )
    }

    /// The keys of the problems `FieldRules::compile` finds in `text`.
    fn problem_keys(text: &str) -> Vec<String> {
        let cfg: MaskingConfig = toml::from_str(text).unwrap();
        FieldRules::compile(&cfg)
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    /// fuzz/regressions/http_body/json-in-string-card: a document inside
    /// a string was masked member by member, yet its text still held a
    /// card number a detector finds; every string of the masked body now
    /// holds no match.
    #[test]
    fn documents_in_strings_hold_no_match_as_text() {
        let (m, r) = setup(
            r#"patterns = ["card", "email", "ssn", "iban", "token"]
pattern_strategy = "last4"
fields = [{ field = "password", strategy = "redact" }, { pointer = "/user/ssn", strategy = "null" }]"#,
        );
        let input = include_bytes!("../../../fuzz/regressions/http_body/json-in-string-card");
        let mut v = parse_strict(&input[1..]).unwrap();
        mask_json(&m, &r, &mut v).unwrap();
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                Value::Object(o) => o.iter().for_each(|(k, x)| {
                    out.push(k.clone());
                    strings(x, out)
                }),
                other => out.push(other.to_string()),
            }
        }
        let mut all = Vec::new();
        strings(&v, &mut all);
        for s in all {
            assert_eq!(m.mask_str(&s).1, 0, "still a match in {s:?} of {v}");
        }
    }

    #[test]
    fn unmasked_encodings_are_codings_warden_cannot_decode() {
        let (_, r) = setup("unmasked_encodings = [\"br\", \"ZSTD\"]");
        assert!(r.passes_unmasked("br") && r.passes_unmasked("zstd"));
        assert!(!r.passes_unmasked("gzip") && !r.passes_unmasked("compress"));
        let keys =
            problem_keys("unmasked_encodings = [\"gzip\", \"\", \"br\", \"a b\", \"identity\"]");
        assert_eq!(
            keys,
            [
                "unmasked_encodings[0]",
                "unmasked_encodings[1]",
                "unmasked_encodings[3]",
                "unmasked_encodings[4]"
            ]
        );
    }

    #[test]
    fn masks_nested_fields_pointers_and_patterns_in_arrays() {
        let (m, r) = setup(
            r#"patterns = ["card", "email"]
fields = [{ field = "SSN", strategy = "redact" }, { pointer = "/items/*/secret", strategy = "null" }]"#,
        );
        let mut v: Value = serde_json::from_str(
            r#"{"user":{"contact":"mail bob@example.com now","ssn":"123-45-6789"},
                "items":[{"secret":"x","card":4111111111111111},{"note":["4111 1111 1111 1111"]}],
                "ok":"plain"}"#,
        )
        .unwrap();
        let n = mask_json(&m, &r, &mut v).unwrap();
        assert_eq!(n, 5);
        let s = v.to_string();
        assert!(!s.contains("bob@example.com"), "{s}");
        assert!(!s.contains("4111"), "{s}");
        assert!(!s.contains("6789"), "{s}");
        assert_eq!(v["items"][0]["secret"], Value::Null);
        assert_eq!(v["ok"], "plain");
        assert_eq!(v["user"]["ssn"], "[MASKED]");
    }

    #[test]
    fn documents_in_strings_are_opened_or_refused_past_the_depth() {
        let (m, r) = setup(r#"fields = [{ field = "name", strategy = "redact" }]"#);
        // A document held in a string, and one held in a JSON string
        // literal inside a string: both opened.
        let mut v: Value = serde_json::from_str(
            r#"{"a":"{\"name\":\"Ana\"}","b":"\"{\\\"name\\\":\\\"Bo\\\"}\""}"#,
        )
        .unwrap();
        assert_eq!(mask_json(&m, &r, &mut v).unwrap(), 2);
        let s = v.to_string();
        assert!(!s.contains("Ana") && !s.contains("Bo\\"), "{s}");
        // Nested one level more than Warden opens: refused, not passed.
        let mut doc = serde_json::json!({"name": "Ana"});
        for _ in 0..=MAX_NESTED {
            doc = serde_json::json!({ "payload": doc.to_string() });
        }
        assert!(mask_json(&m, &r, &mut doc).is_err());
        // Without field rules the patterns scan the text at any depth.
        let (m, r) = setup(r#"patterns = ["email"]"#);
        let mut doc = serde_json::json!({"mail": "a@b.example"});
        for _ in 0..=MAX_NESTED {
            doc = serde_json::json!({ "payload": doc.to_string() });
        }
        assert!(mask_json(&m, &r, &mut doc).is_ok());
    }

    #[test]
    fn masks_forms_and_reports_problems() {
        let (m, r) = setup(
            r#"patterns = ["email"]
fields = [{ field = "password", strategy = "redact" }]"#,
        );
        let (out, n) = mask_form(&m, &r, b"user=bob&password=hunter2&mail=a%40b.example")
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(n, 2);
        assert!(out.starts_with("user=bob&password="), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("a%40b"), "{out}");
        assert!(mask_form(&m, &r, b"user=bob").unwrap().is_none());
        let cfg: MaskingConfig = toml::from_str(
            r#"fields = [{ strategy = "redact" }, { pointer = "x", strategy = "redact" }]"#,
        )
        .unwrap();
        let p = FieldRules::compile(&cfg).unwrap_err();
        assert_eq!(p[0].key, "fields[0]");
        assert_eq!(p[1].key, "fields[1].pointer");
    }

    #[test]
    fn unmasked_types_are_media_types_warden_cannot_mask() {
        let (_, r) =
            setup(r#"unmasked_types = ["application/octet-stream", "Image/*", "text/csv"]"#);
        assert!(r.passes_type("application/octet-stream"));
        assert!(r.passes_type("image/png") && r.passes_type("text/csv"));
        assert!(!r.passes_type("application/x-ndjson") && !r.passes_type("image"));
        assert!(!r.passes_type("text/plain") && !r.passes_type(""));
        let keys = problem_keys(
            r#"unmasked_types = ["*/*", "application/json", "application/problem+json",
               "application/x-www-form-urlencoded", "text", "a/b; charset=x", "*/x", "a/b*", "text/html"]"#,
        );
        assert_eq!(
            keys,
            (0..8)
                .map(|i| format!("unmasked_types[{i}]"))
                .collect::<Vec<_>>()
        );
        assert!(is_json_type("application/json") && is_json_type("text/json"));
        assert!(is_json_type("application/vnd.api+json") && is_json_type("application/x-json"));
        assert!(!is_json_type("application/x-ndjson") && !is_json_type("application/json-seq"));
    }

    #[test]
    fn member_names_are_masked_like_values() {
        let (m, r) = setup(r#"patterns = ["email"]"#);
        let mut v = parse_strict(
            br#"{"bob@example.com": {"since": 2020}, "[MASKED:email]": 1, "ok": {"ann@example.org": true}}"#,
        )
        .unwrap();
        let n = mask_json(&m, &r, &mut v).unwrap();
        assert_eq!(n, 2);
        let s = v.to_string();
        assert!(!s.contains("@example"), "{s}");
        assert_eq!(
            v.as_object().unwrap().len(),
            3,
            "a colliding name is kept apart: {s}"
        );
    }

    #[test]
    fn duplicate_member_names_are_refused_at_any_depth() {
        for doc in [
            &br#"{"note":"bob@example.com","note":"hi"}"#[..],
            br#"{"a":[{"x":1,"y":2,"x":3}]}"#,
        ] {
            let e = parse_strict(doc).unwrap_err();
            assert!(e.contains("twice"), "{e}");
        }
        assert!(parse_strict(br#"{"a":{"x":1},"b":{"x":2}}"#).is_ok());
    }

    #[test]
    fn json_inside_a_string_gets_the_field_rules() {
        let (m, r) = setup(
            r#"patterns = ["email"]
fields = [{ field = "name", strategy = "redact" }]"#,
        );
        let mut v = parse_strict(
            br#"{"payload":"{\"name\":\"Ann\",\"contact\":\"ann@example.org\"}","other":"[not json"}"#,
        )
        .unwrap();
        let n = mask_json(&m, &r, &mut v).unwrap();
        assert_eq!(n, 2);
        let inner: Value = serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
        assert_eq!(inner["name"], "[MASKED]");
        assert!(!v.to_string().contains("ann@"), "{v}");
        // A nested document with a duplicate name cannot be masked either.
        let mut v = parse_strict(br#"{"p":"{\"name\":\"x\",\"name\":\"Ann\"}"}"#).unwrap();
        assert!(mask_json(&m, &r, &mut v).is_err());
    }

    #[test]
    fn member_names_are_compared_as_lenient_readers_bind_them() {
        let (m, r) = setup(
            r#"fields = [{ field = "name", strategy = "redact" }, { field = "first_name", strategy = "redact" },
                         { pointer = "/customer/card", strategy = "null" }]"#,
        );
        for doc in [
            r#"{"Name":"Ann"}"#,
            r#"{"NAME":"Ann"}"#,
            r#"{"n\u0061me":"Ann"}"#,
            r#"{"\uff4e\uff41\uff4d\uff45":"Ann"}"#,
            r#"{"na\u200bme":"Ann"}"#,
            r#"{"na\u00adme":"Ann"}"#,
            r#"{" name":"Ann"}"#,
            r#"{"firstName":"Ann"}"#,
            r#"{"first-name":"Ann"}"#,
            r#"{"FIRST_NAME":"Ann"}"#,
            r#"{"x":[{"nAmE":["Ann"]}]}"#,
            r#"{"CUSTOMER":{"Card":"Ann"}}"#,
            r#"{"p":"{\"NAME\":\"Ann\"}"}"#,
        ] {
            let mut v = parse_strict(doc.as_bytes()).unwrap();
            mask_json(&m, &r, &mut v).unwrap();
            assert!(!v.to_string().contains("Ann"), "{doc} -> {v}");
        }
        // The Kelvin sign and the long s fold like Go's encoding/json.
        let (m, r) = setup(r#"fields = [{ field = "ssn_key", strategy = "redact" }]"#);
        let mut v = parse_strict("{\"\u{17f}sn_\u{212a}ey\":\"Ann\"}".as_bytes()).unwrap();
        mask_json(&m, &r, &mut v).unwrap();
        assert!(!v.to_string().contains("Ann"), "{v}");
        // Other names stay.
        let (m, r) = setup(r#"fields = [{ field = "name", strategy = "redact" }]"#);
        let mut v = parse_strict(br#"{"names":"Ann","nom":"Bo"}"#).unwrap();
        assert_eq!(mask_json(&m, &r, &mut v).unwrap(), 0);
        let (out, _) = mask_form(&m, &r, b"NA%E2%80%8BME=Ann&x=1")
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("Ann"));
    }

    #[test]
    fn members_a_request_names_get_the_rule_it_mentions() {
        let (m, r) = setup(
            r#"fields = [{ field = "name", strategy = "redact" }, { field = "card", strategy = "last4" }]"#,
        );
        let masked = |texts: &[&str], doc: &str| {
            let p = r.projection(texts.iter().map(|t| t.as_bytes()));
            let mut v = parse_strict(doc.as_bytes()).unwrap();
            mask_json_for(&m, &r, &p, &mut v).unwrap();
            v.to_string()
        };
        let row = r#"[{"n":["Alice Anderson"],"id":7,"o":{"k":"v"}}]"#;
        for target in [
            "/customers?select=n:name",
            "/customers?select=n:NAME",
            "/customers?select=n:na%6De",
            "/customers?select=n:na%256De",
            "/customers?select=n:%22name%22",
            "/customers?select=n:name::text",
            "/customers?select=n:ｎａｍｅ",
            "/customers?select=x:customers(n:name)",
            "/customers?$select=name&$compute=name%20as%20n",
        ] {
            let s = masked(&[target], row);
            assert!(!s.contains("Alice"), "{target} -> {s}");
            assert!(s.contains("\"id\":7"), "{target} -> {s}");
        }
        // GraphQL: the alias in a JSON body, escaped or not, or in a
        // header; a card alias keeps its rule's strategy.
        for body in [
            r#"{"query":"{ customers { n: name id } }"}"#,
            r#"{"query":"{ customers { n: \u006eame } }"}"#,
            r#"{"query":"query($v: String) { customers { n: Name } }","variables":{}}"#,
        ] {
            let s = masked(
                &["/graphql", body],
                r#"{"data":{"customers":[{"n":"Alice Anderson"}]}}"#,
            );
            assert!(!s.contains("Alice"), "{body} -> {s}");
        }
        let s = masked(&["/c", "x-fields: n:name"], r#"{"n":"Alice Anderson"}"#);
        assert!(!s.contains("Alice"), "{s}");
        let s = masked(&["/c?select=c:card"], r#"{"c":"4111111111111111"}"#);
        assert!(s.contains("1111") && !s.contains("4111"), "{s}");
        // Two rules of different strategies: the strictest.
        let s = masked(&["/c?select=c:card,m:name"], r#"{"c":"4111111111111111"}"#);
        assert!(!s.contains("1111"), "{s}");
        // A request that mentions no masked field changes nothing.
        let s = masked(
            &["/customers?select=n:email"],
            r#"[{"n":"Alice Anderson"}]"#,
        );
        assert!(s.contains("Alice"), "{s}");
        // Forms too.
        let p = r.projection([&b"/c?select=n:name"[..]]);
        let (out, _) = mask_form_for(&m, &r, &p, b"n=Alice&id=1").unwrap().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "n=%5BMASKED%5D&id=1");
        // `request_named_fields = "trust"`: names only.
        let (m, r) = setup(
            r#"request_named_fields = "trust"
fields = [{ field = "name", strategy = "redact" }]"#,
        );
        let p = r.projection([&b"/c?select=n:name"[..]]);
        assert!(
            mask_form_for(&m, &r, &p, b"n=Alice&id=1")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn form_names_are_masked_and_non_utf8_forms_refused() {
        let (m, r) = setup(r#"patterns = ["email"]"#);
        let (out, n) = mask_form(&m, &r, b"bob%40example.com=1&x=2")
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(n, 1);
        assert!(!out.contains("bob") && out.ends_with("=1&x=2"), "{out}");
        assert!(mask_form(&m, &r, b"a=\xff&mail=bob%40example.com").is_err());
    }
}
