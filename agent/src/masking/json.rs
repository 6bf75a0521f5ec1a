//! Masking of HTTP bodies: JSON documents (field rules by member name or
//! JSON pointer, then the pattern detectors on every string and number),
//! `application/x-www-form-urlencoded` bodies (field rules by name, then
//! patterns on values) and text (patterns). Works on whole, decoded
//! bodies; the proxy bounds their size.

use serde_json::Value;

use super::{Masked, Masker, MaskingConfig, MaskingProblem, Strategy};

/// Content codings the proxy decodes itself (never passed unmasked).
const DECODED_ENCODINGS: &[&str] = &["gzip", "x-gzip", "deflate"];

/// Whether a body in content coding `encoding` (lower case, "" for none)
/// is one Warden cannot decode to mask it.
pub fn undecodable(encoding: &str) -> bool {
    !encoding.is_empty() && encoding != "identity" && !DECODED_ENCODINGS.contains(&encoding)
}

/// HTTP body rules compiled from a `[masking.NAME]`: `fields` and
/// `unmasked_encodings`.
#[derive(Debug, Clone, Default)]
pub struct FieldRules {
    /// Lower-case member names.
    names: Vec<(String, Strategy)>,
    /// Pointer segments (unescaped; `*` matches any array index).
    pointers: Vec<(Vec<String>, Strategy)>,
    /// Lower-case content codings that pass through unmasked.
    unmasked_encodings: Vec<String>,
}

impl FieldRules {
    /// Validate and compile `cfg.fields`.
    pub fn compile(cfg: &MaskingConfig) -> Result<FieldRules, Vec<MaskingProblem>> {
        let mut problems = Vec::new();
        let mut out = FieldRules::default();
        for (i, f) in cfg.fields.iter().enumerate() {
            let key = format!("fields[{i}]");
            match (&f.field, &f.pointer) {
                (Some(name), None) if !name.is_empty() => {
                    out.names.push((name.to_lowercase(), f.strategy))
                }
                (None, Some(p)) if p.starts_with('/') => out.pointers.push((
                    p[1..]
                        .split('/')
                        .map(|s| s.replace("~1", "/").replace("~0", "~"))
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

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.pointers.is_empty()
    }

    fn by_name(&self, name: &str) -> Option<Strategy> {
        let lower = name.to_lowercase();
        self.names
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, s)| *s)
    }

    fn by_pointer(&self, path: &[String]) -> Option<Strategy> {
        self.pointers
            .iter()
            .find(|(p, _)| {
                p.len() == path.len()
                    && p.iter()
                        .zip(path)
                        .all(|(a, b)| a == b || (a == "*" && b.bytes().all(|c| c.is_ascii_digit())))
            })
            .map(|(_, s)| *s)
    }
}

/// Masks `v` in place; returns how many values were masked.
pub fn mask_json(masker: &Masker, rules: &FieldRules, v: &mut Value) -> usize {
    let mut path = Vec::new();
    walk(masker, rules, v, &mut path)
}

fn walk(masker: &Masker, rules: &FieldRules, v: &mut Value, path: &mut Vec<String>) -> usize {
    if !path.is_empty() {
        let strategy = rules
            .by_pointer(path)
            .or_else(|| path.last().and_then(|k| rules.by_name(k)));
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
            return 1;
        }
    }
    match v {
        Value::Object(map) => {
            let mut n = 0;
            for (k, child) in map.iter_mut() {
                path.push(k.clone());
                n += walk(masker, rules, child, path);
                path.pop();
            }
            n
        }
        Value::Array(items) => {
            let mut n = 0;
            for (i, child) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                n += walk(masker, rules, child, path);
                path.pop();
            }
            n
        }
        Value::String(s) => match masker.mask_str(s) {
            (std::borrow::Cow::Owned(m), n) if n > 0 => {
                *s = m;
                n
            }
            _ => 0,
        },
        Value::Number(num) => {
            let text = num.to_string();
            match masker.mask_str(&text) {
                (std::borrow::Cow::Owned(m), n) if n > 0 => {
                    *v = Value::String(m);
                    n
                }
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// Masks a form-urlencoded body; `None` when nothing changed.
pub fn mask_form(masker: &Masker, rules: &FieldRules, body: &[u8]) -> Option<(Vec<u8>, usize)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut n = 0;
    let mut parts = Vec::new();
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k);
        let value = decode(v);
        let masked = if let Some(s) = rules.by_name(&name) {
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
                _ => {
                    parts.push(pair.to_owned());
                    continue;
                }
            }
        };
        parts.push(format!("{k}={}", encode(&masked)));
    }
    (n > 0).then(|| (parts.join("&").into_bytes(), n))
}

fn decode(s: &str) -> String {
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

    #[test]
    fn unmasked_encodings_are_codings_warden_cannot_decode() {
        let (_, r) = setup("unmasked_encodings = [\"br\", \"ZSTD\"]");
        assert!(r.passes_unmasked("br") && r.passes_unmasked("zstd"));
        assert!(!r.passes_unmasked("gzip") && !r.passes_unmasked("compress"));
        let cfg: MaskingConfig =
            toml::from_str("unmasked_encodings = [\"gzip\", \"\", \"br\", \"a b\", \"identity\"]")
                .unwrap();
        let keys: Vec<String> = FieldRules::compile(&cfg)
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
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
        let n = mask_json(&m, &r, &mut v);
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
    fn masks_forms_and_reports_problems() {
        let (m, r) = setup(
            r#"patterns = ["email"]
fields = [{ field = "password", strategy = "redact" }]"#,
        );
        let (out, n) = mask_form(&m, &r, b"user=bob&password=hunter2&mail=a%40b.example").unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(n, 2);
        assert!(out.starts_with("user=bob&password="), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("a%40b"), "{out}");
        assert!(mask_form(&m, &r, b"user=bob").is_none());
        let cfg: MaskingConfig = toml::from_str(
            r#"fields = [{ strategy = "redact" }, { pointer = "x", strategy = "redact" }]"#,
        )
        .unwrap();
        let p = FieldRules::compile(&cfg).unwrap_err();
        assert_eq!(p[0].key, "fields[0]");
        assert_eq!(p[1].key, "fields[1].pointer");
    }
}
