//! The grant's own credential must never reach the workload: an upstream
//! that echoes what it received (a debug endpoint, an error message quoting
//! the token, a "whoami" that returns the request headers) would hand the
//! workload the secret Warden injects for it.
//!
//! [`Echo`] looks for the secret in the forms an upstream can reasonably
//! produce: as it is, the header value Warden set (`Bearer …`, `Basic
//! base64(user:secret)`), base64 (standard and URL-safe alphabets, at each
//! of the three byte alignments inside a longer base64 text, padding
//! ignored), hex (lower and upper case), percent-encoded (every byte, or
//! only the reserved ones), with `/` escaped as in JSON (`\/`) and with
//! every character escaped as in JSON (`\u0073…`, lower or upper hex).
//! [`Echo::find_decoded`] also reads a percent-decoded copy of the text.
//! Encoded forms shorter than [`MIN_ENCODED`] bytes are left out (in a
//! large binary body they would match by chance); the secret itself is
//! always looked for.
//!
//! [`EchoFilter`] does it on a stream: it holds back the bytes at the end
//! of what it was given that could begin a match (the longest suffix that
//! is a prefix of one of the forms), so a match split across two pieces is
//! found before any of its bytes are sent, and everything else goes on at
//! once (an interactive tunnel does not stall). At the end of the stream,
//! or when a tunnel has been idle, the held bytes are released only when
//! they are fewer than half the secret (at most [`MIN_ENCODED`]): a stream that stops on a long
//! beginning of the secret is cut instead.

use aho_corasick::AhoCorasick;
use base64::Engine as _;

/// Shortest encoded form looked for.
pub const MIN_ENCODED: usize = 8;

/// The forms of one secret, ready to search.
#[derive(Debug)]
pub struct Echo {
    ac: AhoCorasick,
    forms: Vec<&'static str>,
    /// The forms, for partial matches at the end of a stream piece.
    patterns: Vec<Vec<u8>>,
    /// Held bytes fewer than this may be released at the end or on idle:
    /// half the secret, at most [`MIN_ENCODED`].
    exposable: usize,
}

impl Echo {
    /// The forms of `secret` and of the header value `header_value` that
    /// carries it; `None` for an empty secret.
    pub fn new(secret: &[u8], header_value: &[u8]) -> Option<Echo> {
        if secret.is_empty() {
            return None;
        }
        let mut patterns: Vec<(Vec<u8>, &'static str)> = vec![(secret.to_vec(), "as it is")];
        if header_value != secret && !header_value.is_empty() {
            patterns.push((header_value.to_vec(), "the injected header value"));
        }
        let mut encoded = |p: Vec<u8>, form: &'static str| {
            if p.len() >= MIN_ENCODED && !patterns.iter().any(|(q, _)| *q == p) {
                patterns.push((p, form));
            }
        };
        for engine in [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            for k in 0..3usize {
                // The characters that depend on the secret's bits alone,
                // wherever it starts in a longer base64 text.
                let mut padded = vec![0u8; k];
                padded.extend_from_slice(secret);
                let text = engine.encode(&padded);
                let from = (8 * k).div_ceil(6);
                let to = (8 * (k + secret.len())) / 6;
                if from < to {
                    encoded(text.as_bytes()[from..to].to_vec(), "base64");
                }
            }
        }
        let lower = hex::encode(secret);
        encoded(lower.to_ascii_uppercase().into_bytes(), "hex");
        encoded(lower.into_bytes(), "hex");
        let every = |upper: bool| {
            secret
                .iter()
                .flat_map(|b| {
                    let h = if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    };
                    h.into_bytes()
                })
                .collect::<Vec<u8>>()
        };
        encoded(every(true), "percent-encoded");
        encoded(every(false), "percent-encoded");
        let reserved = percent_encoding::percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .into_bytes();
        encoded(reserved, "percent-encoded");
        if secret.contains(&b'/') {
            let escaped: Vec<u8> = secret
                .iter()
                .flat_map(|&b| {
                    if b == b'/' {
                        vec![b'\\', b'/']
                    } else {
                        vec![b]
                    }
                })
                .collect();
            encoded(escaped, "JSON-escaped");
        }
        if let Ok(text) = std::str::from_utf8(secret) {
            for upper in [false, true] {
                let escaped: String = text
                    .encode_utf16()
                    .map(|u| {
                        if upper {
                            format!("\\u{u:04X}")
                        } else {
                            format!("\\u{u:04x}")
                        }
                    })
                    .collect();
                encoded(escaped.into_bytes(), "JSON-escaped");
            }
        }
        let forms = patterns.iter().map(|(_, f)| *f).collect();
        let ac = AhoCorasick::new(patterns.iter().map(|(p, _)| p)).ok()?;
        Some(Echo {
            ac,
            forms,
            patterns: patterns.into_iter().map(|(p, _)| p).collect(),
            exposable: (secret.len() / 2).clamp(1, MIN_ENCODED),
        })
    }

    /// The length of the longest suffix of `hay` that is a proper prefix
    /// of one of the forms (a match that may go on in the next piece).
    fn partial(&self, hay: &[u8]) -> usize {
        self.patterns
            .iter()
            .filter_map(|p| {
                let most = (p.len() - 1).min(hay.len());
                (1..=most).rev().find(|&k| hay.ends_with(&p[..k]))
            })
            .max()
            .unwrap_or(0)
    }

    /// The form of the secret found in `hay`, if any.
    pub fn find(&self, hay: &[u8]) -> Option<&'static str> {
        self.ac
            .find(hay)
            .map(|m| self.forms[m.pattern().as_usize()])
    }

    /// [`find`](Self::find) in `hay` and in its percent-decoded copy.
    pub fn find_decoded(&self, hay: &[u8]) -> Option<&'static str> {
        self.find(hay).or_else(|| {
            if !hay.contains(&b'%') {
                return None;
            }
            let decoded: Vec<u8> = percent_encoding::percent_decode(hay).collect();
            self.find(&decoded)
        })
    }

    /// A filter for one stream.
    pub fn filter(&self) -> EchoFilter<'_> {
        EchoFilter {
            echo: self,
            held: Vec::new(),
        }
    }
}

/// Stream side of [`Echo`]: what may be sent of each piece.
pub struct EchoFilter<'a> {
    echo: &'a Echo,
    held: Vec<u8>,
}

impl EchoFilter<'_> {
    /// Takes the next piece; returns the bytes that may be sent now, or
    /// the form of the secret found (nothing of it has been returned).
    pub fn push(&mut self, piece: &[u8]) -> Result<Vec<u8>, &'static str> {
        self.held.extend_from_slice(piece);
        if let Some(form) = self.echo.find(&self.held) {
            return Err(form);
        }
        // Bytes before the longest possible beginning of a match can never
        // be part of one (a match starting earlier would make a longer
        // suffix a prefix of a form).
        let keep = self.echo.partial(&self.held);
        let rest = self.held.split_off(self.held.len() - keep);
        Ok(std::mem::replace(&mut self.held, rest))
    }

    /// Whether bytes are held back (the stream ends in a possible
    /// beginning of the secret).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The end of the stream, or an idle tunnel: the bytes held back, when
    /// they are too few to matter (see the module docs); else the stream
    /// must be cut.
    pub fn release(&mut self) -> Result<Vec<u8>, &'static str> {
        if self.held.len() >= self.echo.exposable {
            return Err("the beginning of one of its forms");
        }
        Ok(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"tok-3f9a/Zq+7";

    fn echo() -> Echo {
        Echo::new(SECRET, b"Bearer tok-3f9a/Zq+7").unwrap()
    }

    #[test]
    fn finds_the_secret_in_every_covered_form() {
        let e = echo();
        let b64 = |prefix: &[u8], engine: base64::engine::GeneralPurpose| {
            let mut v = prefix.to_vec();
            v.extend_from_slice(SECRET);
            v.extend_from_slice(b" trailing");
            engine.encode(v)
        };
        let mut cases: Vec<(String, &str)> = vec![
            (
                format!("x {} y", String::from_utf8_lossy(SECRET)),
                "as it is",
            ),
            (hex::encode(SECRET), "hex"),
            (hex::encode_upper(SECRET), "hex"),
            (
                percent_encoding::percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
                "percent-encoded",
            ),
            (
                SECRET.iter().map(|b| format!("%{b:02x}")).collect(),
                "percent-encoded",
            ),
            ("tok-3f9a\\/Zq+7".into(), "JSON-escaped"),
            (
                SECRET.iter().map(|b| format!("\\u{:04x}", b)).collect(),
                "JSON-escaped",
            ),
            (
                SECRET.iter().map(|b| format!("\\u{:04X}", b)).collect(),
                "JSON-escaped",
            ),
        ];
        for prefix in [&b""[..], b"A", b"Authorization: Bearer "] {
            cases.push((
                b64(prefix, base64::engine::general_purpose::STANDARD),
                "base64",
            ));
            cases.push((
                b64(prefix, base64::engine::general_purpose::URL_SAFE),
                "base64",
            ));
        }
        for (text, form) in cases {
            assert_eq!(e.find(text.as_bytes()), Some(form), "{text}");
        }
        // Partly percent-encoded: found in the decoded copy.
        assert_eq!(e.find(b"tok-3f9a%2FZq%2B7"), None);
        assert_eq!(e.find_decoded(b"tok-3f9a%2FZq%2B7"), Some("as it is"));
        assert_eq!(e.find(b"tok-3f9a/Zq+ and something else"), None);
    }

    #[test]
    fn a_stream_never_releases_part_of_a_match() {
        let e = echo();
        let mut body = vec![b'a'; 1000];
        body.extend_from_slice(SECRET);
        body.extend_from_slice(&[b'b'; 1000]);
        for step in [1, 3, 7, 64, 5000] {
            let mut f = e.filter();
            let mut sent = Vec::new();
            let mut found = None;
            for piece in body.chunks(step) {
                match f.push(piece) {
                    Ok(ok) => sent.extend_from_slice(&ok),
                    Err(form) => {
                        found = Some(form);
                        break;
                    }
                }
            }
            assert_eq!(found, Some("as it is"), "step {step}");
            assert!(sent.len() <= 1000, "step {step}: {} bytes sent", sent.len());
        }
        // A clean stream comes out whole, and each piece at once (a
        // tunnel does not wait for more to come).
        let mut f = e.filter();
        let clean = vec![b'c'; 10_000];
        let mut out = Vec::new();
        for piece in clean.chunks(333) {
            let now = f.push(piece).unwrap();
            assert_eq!(now, piece);
            out.extend_from_slice(&now);
        }
        out.extend_from_slice(&f.release().unwrap());
        assert_eq!(out, clean);
        assert!(Echo::new(b"", b"").is_none());
    }

    #[test]
    fn only_a_possible_beginning_is_held_and_a_long_one_is_never_released() {
        let e = echo();
        let mut f = e.filter();
        // "tok" may begin the secret: held, then released when the
        // stream ends (3 bytes of it are no secret).
        assert_eq!(f.push(b"ping tok").unwrap(), b"ping ");
        assert!(f.holding());
        assert_eq!(f.push(b"en ").unwrap(), b"token ");
        assert!(!f.holding());
        assert_eq!(f.push(b"Bear").unwrap(), b"");
        assert_eq!(f.release().unwrap(), b"Bear");
        // A stream that stops on most of the secret is cut.
        let mut f = e.filter();
        assert_eq!(f.push(b"x: tok-3f9a/Z").unwrap(), b"x: ");
        assert!(f.release().is_err());
        // Split across pieces: found, nothing of it released.
        let mut f = e.filter();
        assert_eq!(f.push(b"a tok-3f").unwrap(), b"a ");
        assert_eq!(f.push(b"9a/Zq+7"), Err("as it is"));
    }
}
