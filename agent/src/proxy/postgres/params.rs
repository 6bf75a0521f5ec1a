//! The bound parameters of one extended-protocol execution as an approver
//! sees them, and a digest of their exact values.
//!
//! Each value is shown in its text form: text-format values as sent,
//! binary values of common types decoded by the type the client declared
//! at Parse or the server described, any other binary value as hex. Every
//! value is masked with the detectors (as statement text is), then quoted
//! as a SQL literal, with control and direction-changing characters
//! escaped so that a value cannot pose as more statement text, and cut to
//! [`MAX_VALUE_CHARS`] characters with the number left out said.
//!
//! The digest covers every value exactly (format, length, bytes): a grant
//! that must not generalise over what the approver saw includes it.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::masking::Masker;

/// Longest value shown, in characters (after masking).
const MAX_VALUE_CHARS: usize = 1000;
/// Most parameters shown; the rest are counted.
const MAX_SHOWN_PARAMS: usize = 100;

/// Binary format code of the protocol.
const BINARY: i16 = 1;

/// Parameters for display and for an exact fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// `$1 = 'x', $2 = NULL`, masked; empty without parameters.
    pub text: String,
    /// Hex SHA-256 of the exact values and their formats.
    pub digest: String,
}

/// Renders `params` bound with `formats` (0, 1 or one code per value) to
/// a statement whose parameter types are `types` (0 or missing: not
/// known).
pub fn show(params: &[Option<&[u8]>], formats: &[i16], types: &[u32], masker: &Masker) -> Shown {
    let mut hash = Sha256::new();
    let mut text = String::new();
    for (i, value) in params.iter().enumerate() {
        let format = match formats {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        };
        hash.update(format.to_be_bytes());
        match value {
            None => hash.update((-1i64).to_be_bytes()),
            Some(v) => {
                hash.update((v.len() as i64).to_be_bytes());
                hash.update(v);
            }
        }
        if i >= MAX_SHOWN_PARAMS {
            continue;
        }
        if i > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "${} = ", i + 1);
        let Some(v) = value else {
            text.push_str("NULL");
            continue;
        };
        let ty = types.get(i).copied().unwrap_or(0);
        let (raw, note) = if format == BINARY {
            match binary_text(ty, v) {
                Some(s) => (s, None),
                None if ty == BYTEA => (format!("\\x{}", hex::encode(v)), None),
                None => (
                    format!("\\x{}", hex::encode(v)),
                    Some(format!(" (binary value of type oid {ty})")),
                ),
            }
        } else {
            (String::from_utf8_lossy(v).into_owned(), None)
        };
        let masked = masker.mask_str(&raw).0;
        let total = masked.chars().count();
        let kept: String = masked.chars().take(MAX_VALUE_CHARS).collect();
        text.push_str(&literal(&kept));
        if total > MAX_VALUE_CHARS {
            let _ = write!(
                text,
                " (… {} more characters not shown)",
                total - MAX_VALUE_CHARS
            );
        }
        if let Some(n) = note {
            text.push_str(&n);
        }
    }
    if params.len() > MAX_SHOWN_PARAMS {
        let _ = write!(
            text,
            ", … ({} more parameters not shown)",
            params.len() - MAX_SHOWN_PARAMS
        );
    }
    Shown {
        text,
        digest: hex::encode(hash.finalize()),
    }
}

const BYTEA: u32 = 17;

/// The text form of a binary value of a type read here, or `None`.
fn binary_text(ty: u32, v: &[u8]) -> Option<String> {
    let utf8 = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    match ty {
        // bool
        16 => match v {
            [b] => Some(if *b != 0 { "t" } else { "f" }.to_owned()),
            _ => None,
        },
        // int2, int4, int8, oid
        21 => Some(i16::from_be_bytes(v.try_into().ok()?).to_string()),
        23 => Some(i32::from_be_bytes(v.try_into().ok()?).to_string()),
        20 => Some(i64::from_be_bytes(v.try_into().ok()?).to_string()),
        26 => Some(u32::from_be_bytes(v.try_into().ok()?).to_string()),
        // float4, float8
        700 => Some(f32::from_be_bytes(v.try_into().ok()?).to_string()),
        701 => Some(f64::from_be_bytes(v.try_into().ok()?).to_string()),
        // text, varchar, bpchar, name, char, unknown, json, xml
        25 | 1043 | 1042 | 19 | 18 | 705 | 114 | 142 => utf8(v),
        // jsonb: a version byte, then the text
        3802 => match v.split_first() {
            Some((1, rest)) => utf8(rest),
            _ => None,
        },
        // uuid
        2950 if v.len() == 16 => {
            let h = hex::encode(v);
            Some(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ))
        }
        _ => None,
    }
}

/// `s` as a SQL string literal (`standard_conforming_strings` on).
/// Control characters and characters that change the direction or
/// visibility of text make it an escape string (`E'…'`, backslashes
/// doubled) with those characters escaped, so the shown value is one
/// visible piece of text.
fn literal(s: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !s.chars().any(hidden) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        crate::masking::builtin()
    }

    #[test]
    fn text_and_binary_values_are_shown_as_literals() {
        let m = masker();
        let s = show(
            &[
                Some(b"O'Brien".as_slice()),
                None,
                Some(&2i32.to_be_bytes()),
                Some(&[1]),
                Some(&[0xde, 0xad]),
                Some(&[0xde, 0xad]),
            ],
            &[0, 0, 1, 1, 1, 1],
            &[25, 25, 23, 16, 17, 1186],
            &m,
        );
        assert_eq!(
            s.text,
            "$1 = 'O''Brien', $2 = NULL, $3 = '2', $4 = 't', $5 = '\\xdead', \
             $6 = '\\xdead' (binary value of type oid 1186)"
        );
        // One format code for all.
        let s = show(&[Some(&7i64.to_be_bytes())], &[1], &[20], &m);
        assert_eq!(s.text, "$1 = '7'");
    }

    #[test]
    fn values_are_masked_escaped_and_cut() {
        let m = masker();
        let s = show(&[Some(b"bob@example.com".as_slice())], &[], &[], &m);
        assert!(!s.text.contains("bob@example.com"), "{}", s.text);
        let s = show(
            &[Some("x'\n-- parameters: $1 = 'ok\u{202e}".as_bytes())],
            &[],
            &[],
            &m,
        );
        assert_eq!(s.text, "$1 = E'x''\\n-- parameters: $1 = ''ok\\u202E'");
        let long = "y".repeat(MAX_VALUE_CHARS + 5);
        let s = show(&[Some(long.as_bytes())], &[], &[], &m);
        assert!(
            s.text.ends_with("' (… 5 more characters not shown)"),
            "{}",
            s.text
        );
        let many: Vec<Option<&[u8]>> = vec![None; MAX_SHOWN_PARAMS + 3];
        let s = show(&many, &[], &[], &m);
        assert!(s.text.ends_with(", … (3 more parameters not shown)"));
    }

    #[test]
    fn the_digest_covers_every_value_exactly() {
        let m = masker();
        let d = |p: &[Option<&[u8]>], f: &[i16]| show(p, f, &[], &m).digest;
        let a = d(&[Some(b"/var/log/x")], &[]);
        assert_eq!(a, d(&[Some(b"/var/log/x")], &[0]));
        assert_ne!(a, d(&[Some(b"/root/.pgpass")], &[]));
        assert_ne!(a, d(&[Some(b"/var/log/x")], &[1]));
        assert_ne!(d(&[None], &[]), d(&[Some(b"")], &[]));
        assert_ne!(
            d(&[Some(b"ab"), Some(b"c")], &[]),
            d(&[Some(b"a"), Some(b"bc")], &[])
        );
        // Values past those shown still count.
        let mut many: Vec<Option<&[u8]>> = vec![None; MAX_SHOWN_PARAMS + 1];
        let before = d(&many, &[]);
        many[MAX_SHOWN_PARAMS] = Some(b"x");
        assert_ne!(before, d(&many, &[]));
    }
}
