//! What replaces a masked value or match: the redaction markers, the
//! keep-last-4 rewrite, and HMAC-SHA256 tokens. Every replacement is ASCII,
//! so masking a valid UTF-8 value at character boundaries keeps it valid.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::detect::Kind;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Marker for a redacted column value.
pub const REDACTED: &[u8] = b"[MASKED]";

/// Prefix of HMAC tokens.
pub const TOKEN_PREFIX: &str = "tok_";

/// Hex digits of HMAC output kept in a token (64 bits: a collision needs
/// about 2^32 distinct values under one key).
pub const TOKEN_HEX_LEN: usize = 16;

/// Fewest letters/digits a value needs before `last4` reveals its last four;
/// shorter values are masked completely (a 4-digit PIN is not "last 4").
pub const LAST4_MIN_ALNUM: usize = 8;

/// Marker for a redacted pattern match.
pub(crate) fn kind_marker(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Card => b"[MASKED:card]",
        Kind::Email => b"[MASKED:email]",
        Kind::Ssn => b"[MASKED:ssn]",
        Kind::Iban => b"[MASKED:iban]",
        Kind::Token => b"[MASKED:token]",
        // Custom markers are built per detector; callers handle them.
        Kind::Custom(_) => b"[MASKED]",
    }
}

/// Keep the last four ASCII letters/digits of `v` when it has at least
/// [`LAST4_MIN_ALNUM`]; spaces and dashes stay; every other character
/// (ASCII or not) becomes one `*`. Bytes of invalid UTF-8 count as one
/// character each.
pub(crate) fn last4(v: &[u8], out: &mut Vec<u8>) {
    let alnum = v.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    let keep_from = if alnum >= LAST4_MIN_ALNUM {
        alnum - 4
    } else {
        usize::MAX
    };
    let mut seen = 0;
    for &b in v {
        if b.is_ascii_alphanumeric() {
            out.push(if seen >= keep_from { b } else { b'*' });
            seen += 1;
        } else if b == b' ' || b == b'-' {
            out.push(b);
        } else if b & 0xC0 != 0x80 {
            // ASCII punctuation or the first byte of a multi-byte
            // character; continuation bytes add nothing.
            out.push(b'*');
        }
    }
}

/// `tok_` + the first 16 hex digits of HMAC-SHA256(key, input).
pub(crate) fn hmac_token(key: &HmacSha256, input: &[u8], out: &mut Vec<u8>) {
    let mut mac = key.clone();
    mac.update(input);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(TOKEN_PREFIX.as_bytes());
    let mut hex = [0u8; TOKEN_HEX_LEN];
    // Invariant: 16 hex digits need 8 of the tag's 32 bytes and the buffer
    // is exactly 16 long, so encoding cannot fail.
    if hex::encode_to_slice(&tag[..TOKEN_HEX_LEN / 2], &mut hex).is_ok() {
        out.extend_from_slice(&hex);
    }
}

/// The bytes a pattern match is tokenised from: card and SSN digits only,
/// IBAN letters/digits uppercased (so `4111 1111 …` and `4111-1111-…` and
/// the bare digits give one token, as a column token of the bare value
/// does); everything else as matched.
pub(crate) fn normalise(kind: Kind, m: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match kind {
        Kind::Card | Kind::Ssn => m.iter().copied().filter(u8::is_ascii_digit).collect(),
        Kind::Iban => m
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(u8::to_ascii_uppercase)
            .collect(),
        _ => std::borrow::Cow::Borrowed(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l4(s: &str) -> String {
        let mut out = Vec::new();
        last4(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn last4_keeps_separators_and_four_alnums() {
        assert_eq!(l4("4111 1111 1111 1234"), "**** **** **** 1234");
        assert_eq!(l4("4111-1111-1111-1234"), "****-****-****-1234");
        assert_eq!(l4("123-45-6789"), "***-**-6789");
        assert_eq!(l4("(555) 123-4567"), "***** ***-4567");
        assert_eq!(l4("ab.cd/ef+gh"), "******ef*gh");
    }

    #[test]
    fn last4_hides_short_values_completely() {
        assert_eq!(l4("1234"), "****");
        assert_eq!(l4("1234567"), "*******");
        assert_eq!(l4("12345678"), "****5678");
        assert_eq!(l4(""), "");
    }

    #[test]
    fn last4_counts_characters_not_bytes() {
        assert_eq!(l4("Zoë Ünal-Kraft 1234"), "*** ****-***** 1234");
        let mut out = Vec::new();
        last4(b"\xff\xfe12345678", &mut out);
        assert_eq!(out, b"******5678");
    }

    #[test]
    fn hmac_tokens_match_an_independent_computation() {
        let key = b"0123456789abcdef-test-key";
        let mac = HmacSha256::new_from_slice(key).unwrap();
        let mut out = Vec::new();
        hmac_token(&mac, b"alice@example.com", &mut out);
        // Independently: a fresh HMAC over the same input.
        let mut check = HmacSha256::new_from_slice(key).unwrap();
        check.update(b"alice@example.com");
        let full = hex::encode(check.finalize().into_bytes());
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            format!("tok_{}", &full[..16])
        );
        // Deterministic; different input or key, different token.
        let mut again = Vec::new();
        hmac_token(&mac, b"alice@example.com", &mut again);
        assert_eq!(out, again);
        let mut other = Vec::new();
        hmac_token(&mac, b"bob@example.com", &mut other);
        assert_ne!(out, other);
        let mac2 = HmacSha256::new_from_slice(b"another-key-0123456789").unwrap();
        let mut other_key = Vec::new();
        hmac_token(&mac2, b"alice@example.com", &mut other_key);
        assert_ne!(out, other_key);
    }

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        let mut out = Vec::new();
        hmac_token(&mac, b"what do ya want for nothing?", &mut out);
        assert_eq!(out, b"tok_5bdcc146bf60754e");
    }

    #[test]
    fn normalisation_per_kind() {
        assert_eq!(&*normalise(Kind::Card, b"4111 1111-1111"), b"411111111111");
        assert_eq!(&*normalise(Kind::Ssn, b"123-45-6789"), b"123456789");
        assert_eq!(&*normalise(Kind::Iban, b"de89 3704"), b"DE893704");
        assert_eq!(&*normalise(Kind::Email, b"A@B.cd"), b"A@B.cd");
    }
}
