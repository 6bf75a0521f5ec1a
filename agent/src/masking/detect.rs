//! The pattern detectors: where in a value a card number, email address, US
//! SSN, IBAN or secret token sits. Detectors only find byte ranges; what
//! replaces them is `strategy.rs`'s business.
//!
//! Card, email, SSN and IBAN are hand-written single-pass scanners (no
//! regex, no allocation); the token detector is one `regex::bytes` pattern
//! behind an Aho-Corasick keyword prefilter. Every detector works on raw
//! bytes (invalid UTF-8 is fine) and starts and ends its ranges on ASCII
//! bytes or at the value's ends, so a range never splits a UTF-8 character.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;

/// What a range was detected as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Card,
    Email,
    Ssn,
    Iban,
    Token,
    /// Index into the masker's custom detectors.
    Custom(usize),
}

/// One detected range `value[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// Cheap facts about a value, gathered in one pass, that decide which
/// scanners can possibly match.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Features {
    pub digits: usize,
    pub upper: usize,
    pub at: bool,
    pub dash_or_space: bool,
    /// Any ASCII letter (every token keyword has some).
    pub letters: bool,
}

const C_DIGIT: u8 = 1;
const C_UPPER: u8 = 2;
const C_AT: u8 = 4;
const C_SEP: u8 = 8;
const C_LOWER: u8 = 16;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_digit() {
            C_DIGIT
        } else if b.is_ascii_uppercase() {
            C_UPPER
        } else if b.is_ascii_lowercase() {
            C_LOWER
        } else if b == b'@' {
            C_AT
        } else if b == b'-' || b == b' ' {
            C_SEP
        } else {
            0
        };
        i += 1;
    }
    t
};

pub(crate) fn features(v: &[u8]) -> Features {
    let (mut digits, mut upper, mut flags) = (0usize, 0usize, 0u8);
    for &b in v {
        let c = CLASS[b as usize];
        digits += (c & C_DIGIT) as usize;
        upper += ((c & C_UPPER) >> 1) as usize;
        flags |= c;
    }
    Features {
        digits,
        upper,
        at: flags & C_AT != 0,
        dash_or_space: flags & C_SEP != 0,
        letters: flags & (C_UPPER | C_LOWER) != 0,
    }
}

// ---------------------------------------------------------------- cards

/// Most digit groups one run can hold; a longer run is cut there.
const MAX_GROUPS: usize = 24;

/// Payment card numbers: 13–19 digits, in one group or in groups of at
/// least 3 digits separated by single spaces or dashes, Luhn-valid, first
/// digit 2–6 or 8 (Mastercard 2-series, Amex/Diners/JCB, Visa,
/// Mastercard/Maestro, Discover/UnionPay/Maestro, RuPay). A match never
/// takes part of a digit group: `12345678901234567890` (20 digits) is not
/// searched for a 16-digit card inside it.
pub(crate) fn find_cards(v: &[u8], out: &mut Vec<Hit>) {
    let n = v.len();
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    let mut i = 0;
    while i < n {
        if !v[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut g = 0;
        let mut pos = i;
        loop {
            let s = pos;
            while pos < n && v[pos].is_ascii_digit() {
                pos += 1;
            }
            groups[g] = (s, pos);
            g += 1;
            if g < MAX_GROUPS
                && pos + 1 < n
                && (v[pos] == b' ' || v[pos] == b'-')
                && v[pos + 1].is_ascii_digit()
            {
                pos += 1;
                continue;
            }
            break;
        }
        card_spans(v, &groups[..g], out);
        i = pos;
    }
}

/// Greedy left to right: at each group, the longest valid span starting
/// there.
fn card_spans(v: &[u8], groups: &[(usize, usize)], out: &mut Vec<Hit>) {
    let glen = |k: usize| groups[k].1 - groups[k].0;
    let mut i = 0;
    while i < groups.len() {
        let mut best = None;
        let mut digits = 0;
        for j in i..groups.len() {
            if j > i && (glen(j) < 3 || glen(i) < 3) {
                break;
            }
            digits += glen(j);
            if digits > 19 {
                break;
            }
            if digits >= 13 && card_valid(v, &groups[i..=j], digits) {
                best = Some(j);
            }
        }
        match best {
            Some(j) => {
                out.push(Hit {
                    start: groups[i].0,
                    end: groups[j].1,
                    kind: Kind::Card,
                });
                i = j + 1;
            }
            None => i += 1,
        }
    }
}

fn card_valid(v: &[u8], groups: &[(usize, usize)], count: usize) -> bool {
    let first = v[groups[0].0];
    if !matches!(first, b'2'..=b'6' | b'8') {
        return false;
    }
    let mut digits = [0u8; 19];
    let mut k = 0;
    for &(s, e) in groups {
        for &b in &v[s..e] {
            digits[k] = b - b'0';
            k += 1;
        }
    }
    luhn(&digits[..count])
}

/// The Luhn check over decimal digit values.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let d = u32::from(d);
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------- SSNs

/// US social security numbers written `AAA-GG-SSSS` (or with single spaces
/// in both places), not adjacent to another digit or to a further
/// separator-digit pair, with the SSA's never-issued values excluded: area
/// 000, 666 and 900–999, group 00, serial 0000. Nine bare digits are not
/// matched (see the module doc of `masking`).
pub(crate) fn find_ssns(v: &[u8], out: &mut Vec<Hit>) {
    let n = v.len();
    let mut i = 0;
    while i + 11 <= n {
        if let Some(end) = ssn_at(v, i) {
            out.push(Hit {
                start: i,
                end,
                kind: Kind::Ssn,
            });
            i = end;
        } else {
            i += 1;
        }
    }
}

fn ssn_at(v: &[u8], i: usize) -> Option<usize> {
    let w = &v[i..i + 11];
    let sep = w[3];
    if !(sep == b'-' || sep == b' ') || w[6] != sep {
        return None;
    }
    let all_digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    if !(all_digits(&w[0..3]) && all_digits(&w[4..6]) && all_digits(&w[7..11])) {
        return None;
    }
    let digit_at = |k: usize| v.get(k).is_some_and(u8::is_ascii_digit);
    if i > 0 && (digit_at(i - 1) || (v[i - 1] == sep && i >= 2 && digit_at(i - 2))) {
        return None;
    }
    let end = i + 11;
    if digit_at(end) || (v.get(end) == Some(&sep) && digit_at(end + 1)) {
        return None;
    }
    let num = |r: &[u8]| r.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0'));
    let (area, group, serial) = (num(&w[0..3]), num(&w[4..6]), num(&w[7..11]));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    Some(end)
}

// ---------------------------------------------------------------- emails

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || b >= 0x80
        || matches!(
            b,
            b'.' | b'_' | b'%' | b'+' | b'-' | b'!' | b'#' | b'$' | b'&' | b'*' | b'^' | b'~'
        )
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b == b'-'
}

/// Email addresses, a practical subset of RFC 5322: a dot-atom local part
/// of letters, digits, non-ASCII and `._%+-!#$&*^~` (an apostrophe between
/// two letters too, as in `o'brien`), `@`, and a domain of at least two
/// dot-separated labels whose last label is at least two characters and
/// holds a letter. Quoted local parts and `[IP]` domains are not matched.
///
/// Addresses that share characters (`a@b.cd@e.fg`: the second local part
/// is the first one's domain) are one hit: masking the first alone would
/// leave the rest (`@e.fg`) to make a new address with whatever the mask
/// puts before it (`tok_…@e.fg`).
pub(crate) fn find_emails(v: &[u8], out: &mut Vec<Hit>) {
    let first = out.len();
    for at in memchr::memchr_iter(b'@', v) {
        let mut s = at;
        while s > 0 {
            let b = v[s - 1];
            let apostrophe = b == b'\''
                && s >= 2
                && v[s - 2].is_ascii_alphanumeric()
                && v[s].is_ascii_alphanumeric();
            if is_local(b) || apostrophe {
                s -= 1;
            } else {
                break;
            }
        }
        while s < at && v[s] == b'.' {
            s += 1;
        }
        if s == at {
            continue;
        }
        let Some(end) = domain_end(v, at + 1) else {
            continue;
        };
        match out[first..].last_mut() {
            Some(prev) if s <= prev.end => prev.end = prev.end.max(end),
            _ => out.push(Hit {
                start: s,
                end,
                kind: Kind::Email,
            }),
        }
    }
}

fn domain_end(v: &[u8], start: usize) -> Option<usize> {
    let mut k = start;
    let mut labels = 0;
    let (mut last_start, mut last_end) = (start, start);
    loop {
        let ls = k;
        while k < v.len() && is_domain(v[k]) {
            k += 1;
        }
        if k == ls {
            break;
        }
        labels += 1;
        (last_start, last_end) = (ls, k);
        if k + 1 < v.len() && v[k] == b'.' && is_domain(v[k + 1]) {
            k += 1;
        } else {
            break;
        }
    }
    let last = &v[last_start..last_end];
    let tld_ok = last.len() >= 2 && last.iter().any(|b| b.is_ascii_alphabetic() || *b >= 0x80);
    (labels >= 2 && tld_ok).then_some(last_end)
}

// ---------------------------------------------------------------- IBANs

/// IBANs: two uppercase letters (country), two digits, then BBAN letters
/// and digits, 15–34 characters in all, either compact or in groups of four
/// separated by single spaces (last group 1–4), with ISO 7064 mod-97 == 1.
/// A compact candidate must be a whole alphanumeric word; a grouped one is
/// the longest prefix of groups that verifies.
pub(crate) fn find_ibans(v: &[u8], out: &mut Vec<Hit>) {
    let n = v.len();
    let mut i = 0;
    while i + 15 <= n {
        let starts = v[i].is_ascii_uppercase()
            && v[i + 1].is_ascii_uppercase()
            && v[i + 2].is_ascii_digit()
            && v[i + 3].is_ascii_digit()
            && (i == 0 || !v[i - 1].is_ascii_alphanumeric());
        if starts && let Some(end) = iban_at(v, i) {
            out.push(Hit {
                start: i,
                end,
                kind: Kind::Iban,
            });
            i = end;
            continue;
        }
        i += 1;
    }
}

fn iban_at(v: &[u8], i: usize) -> Option<usize> {
    let n = v.len();
    let alnum = |k: usize| k < n && v[k].is_ascii_alphanumeric();
    if alnum(i + 4) {
        // Compact: the whole word.
        let mut e = i + 4;
        while alnum(e) {
            e += 1;
        }
        return ((15..=34).contains(&(e - i)) && mod97(v[i..e].iter().copied())).then_some(e);
    }
    // Grouped: "CCdd dddd dddd ...".
    if !(i + 5 < n && v[i + 4] == b' ' && alnum(i + 5)) {
        return None;
    }
    let mut ends = [0usize; 10];
    let mut count = 0;
    let mut k = i + 5;
    loop {
        let s = k;
        while alnum(k) && k - s < 5 {
            k += 1;
        }
        let len = k - s;
        if len == 5 {
            break; // a longer word: not part of this IBAN
        }
        ends[count] = k;
        count += 1;
        if len == 4 && count < ends.len() && k + 1 < n && v[k] == b' ' && alnum(k + 1) {
            k += 1;
            continue;
        }
        break;
    }
    for c in (0..count).rev() {
        let e = ends[c];
        let chars = v[i..e].iter().copied().filter(|b| *b != b' ');
        let len = chars.clone().count();
        if (15..=34).contains(&len) && mod97(chars) {
            return Some(e);
        }
    }
    None
}

/// ISO 13616 check: move the first four characters to the end, letters to
/// 10..35, the number mod 97 must be 1.
pub(crate) fn mod97(chars: impl Iterator<Item = u8> + Clone) -> bool {
    let head = chars.clone().take(4);
    let tail = chars.skip(4);
    let mut r = 0u32;
    for b in tail.chain(head) {
        r = match b {
            b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(b - b'A') + 10) % 97,
            b'a'..=b'z' => (r * 100 + u32::from(b - b'a') + 10) % 97,
            _ => return false,
        };
    }
    r == 1
}

// ---------------------------------------------------------------- tokens

/// The secret-token detector: a keyword prefilter and one regex whose every
/// alternative has exactly one participating capture group, the range to
/// mask (so `Bearer ` and `api_key=` stay readable, the secret does not).
pub(crate) struct TokenDetector {
    keywords: AhoCorasick,
    regex: Regex,
}

/// Every alternative of [`TOKEN_REGEX`] contains one of these (ASCII case
/// folded), so a value without any cannot match.
const TOKEN_KEYWORDS: &[&str] = &[
    "bearer",
    "eyj",
    "akia",
    "asia",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "_live_",
    "key",
    "secret",
    "passw",
    "pwd",
    "token",
    "credential",
    "authorization",
];

/// ASCII-only (`(?-u)`): `\b` and `\s` are ASCII, `[^…]` classes take any
/// other byte, so invalid UTF-8 is fine and ranges end on ASCII bytes.
const TOKEN_REGEX: &str = r#"(?x-u)
    # Authorization: Bearer/Basic/... <credential>
      (?i:\bauthorization)["']?\s*[:=]\s*["']?(?:[A-Za-z]+\s+)?([^\s"',;]+)
    # Bearer <token>
    | (?i:\bbearer)\s+([A-Za-z0-9\-._~+/]{12,}=*)
    # JWT: header.payload.signature, both JSON objects base64url("{")
    | \b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)
    # AWS access key ids
    | \b((?:AKIA|ASIA)[A-Z0-9]{16})\b
    # GitHub tokens
    | \b(gh[pousr]_[A-Za-z0-9]{30,})\b
    | \b(github_pat_[A-Za-z0-9_]{22,})
    # Slack
    | \b(xox[bpars]-[A-Za-z0-9-]{10,})
    # Stripe live secret and restricted keys
    | \b([sr]k_live_[A-Za-z0-9]{10,})
    # key = value, key: value, "key": "value" where the key names a secret
    | (?i:\b[A-Za-z0-9_.-]*(?:api[_-]?key|secret|passw(?:or)?d|pwd|token|credential|access[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*)
      ["']?\s*[:=]\s*(?:"([^"]+)"|'([^']+)'|([^\s"'&,;}<>)\]]+))
    # SQL: PASSWORD 'literal'
    | (?i:\bpassword)\s+'([^']+)'
"#;

static TOKENS: LazyLock<TokenDetector> = LazyLock::new(|| TokenDetector {
    // Invariant: static keyword list, DFA kind supported for it; exercised
    // by every token test.
    keywords: AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .kind(Some(AhoCorasickKind::DFA))
        .build(TOKEN_KEYWORDS)
        .expect("static token keywords build"),
    // Invariant: static pattern; exercised by every token test.
    regex: Regex::new(TOKEN_REGEX).expect("static token regex compiles"),
});

/// The shared token detector (built on first use).
pub(crate) fn tokens() -> &'static TokenDetector {
    &TOKENS
}

impl TokenDetector {
    pub(crate) fn find(&self, v: &[u8], out: &mut Vec<Hit>) {
        if v.len() < 5 || !self.keywords.is_match(v) {
            return;
        }
        for caps in self.regex.captures_iter(v) {
            if let Some(m) = caps.iter().skip(1).flatten().next()
                && !m.is_empty()
                && !is_mask_output(v, m.start(), m.end())
            {
                out.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    kind: Kind::Token,
                });
            }
        }
    }
}

/// Whether the secret `v[start..end]` is what masking wrote in place of
/// one: a marker (`[MASKED]`, `[MASKED:name]`; an unquoted value stops
/// before its `]`), an HMAC token (`tok_` + 16 hex digits) or a `last4`
/// rendering (only `*`, spaces, dashes and at most four letters or
/// digits). Found again, it would be masked again: `token=tok_…` would get
/// a token of the token, breaking the equality HMAC tokens promise, and a
/// marker would grow a `]` at each pass. None of them holds a secret.
fn is_mask_output(v: &[u8], start: usize, end: usize) -> bool {
    let m = &v[start..end];
    if let Some(rest) = m.strip_prefix(b"[MASKED") {
        let closed = rest
            .strip_suffix(b"]")
            .or_else(|| (v.get(end) == Some(&b']')).then_some(rest));
        return closed.is_some_and(|inner| {
            inner.is_empty()
                || inner.strip_prefix(b":").is_some_and(|name| {
                    !name.is_empty()
                        && name.len() <= 64
                        && name
                            .iter()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                })
        });
    }
    if let Some(hex) = m.strip_prefix(super::TOKEN_PREFIX.as_bytes()) {
        return hex.len() == super::TOKEN_HEX_LEN
            && hex
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    }
    // last4 keeps four letters or digits wherever they stood (other
    // characters, also after them, became `*`).
    let kept = m.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    kept <= 4
        && m.contains(&b'*')
        && m.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b' ' | b'-'))
}

// ---------------------------------------------------------------- custom

/// A configured `{ name, regex }` detector.
#[derive(Debug, Clone)]
pub(crate) struct CustomDetector {
    pub name: String,
    /// `[MASKED:name]`, built once.
    pub marker: Vec<u8>,
    pub regex: Regex,
}

impl CustomDetector {
    pub(crate) fn find(&self, index: usize, v: &[u8], out: &mut Vec<Hit>) {
        for m in self.regex.find_iter(v) {
            if !m.is_empty() {
                out.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    kind: Kind::Custom(index),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(f: fn(&[u8], &mut Vec<Hit>), v: &str) -> Vec<&str> {
        let mut out = Vec::new();
        f(v.as_bytes(), &mut out);
        out.iter().map(|h| &v[h.start..h.end]).collect()
    }

    fn tok(v: &str) -> Vec<&str> {
        let mut out = Vec::new();
        tokens().find(v.as_bytes(), &mut out);
        out.iter().map(|h| &v[h.start..h.end]).collect()
    }

    /// Regression (fuzz/regressions/masking): what masking writes for a
    /// secret (`token=tok_…`, `token=[MASKED:token]`, `token=****…B4a`) was
    /// found as a secret again, so a second pass changed it.
    #[test]
    fn mask_outputs_are_not_secrets_again() {
        for v in [
            "token=tok_f520687bcbbc0908",
            "token=[MASKED:token]",
            "password=[MASKED]",
            r#"{"api_key": "[MASKED:token]"}"#,
            "secret: [MASKED:my_rule]",
            "token=************************************B4a",
            "pwd=****-****-ab12",
            "pwd=********",
            "token=******E***6***C7*",
        ] {
            assert_eq!(tok(v), Vec::<&str>::new(), "{v}");
        }
        // Near misses stay secrets.
        for (v, secret) in [
            ("token=tok_f520687bcbbc090", "tok_f520687bcbbc090"),
            ("token=tok_F520687BCBBC0908", "tok_F520687BCBBC0908"),
            ("token=[MASKED:Token]", "[MASKED:Token"),
            ("token=[MASKEDx]", "[MASKEDx"),
            ("token=**12345", "**12345"),
            ("token=*a*bcde", "*a*bcde"),
            ("token=*ab_cd", "*ab_cd"),
        ] {
            assert_eq!(tok(v), vec![secret], "{v}");
        }
    }

    /// Append the Luhn check digit to `body` (computed here, so the test
    /// does not trust hard-coded valid numbers).
    fn with_luhn(body: &str) -> String {
        for d in 0..10u8 {
            let s = format!("{body}{d}");
            let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
            if luhn(&digits) {
                return s;
            }
        }
        unreachable!()
    }

    /// `prefix` plus one more digit such that the whole run is Luhn-invalid
    /// (so a match could only come from searching inside the run).
    fn longer(prefix: &str) -> String {
        for d in 0..10u8 {
            let s = format!("{prefix}{d}");
            let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
            if !luhn(&digits) {
                return s;
            }
        }
        unreachable!()
    }

    /// Flip the last digit so the Luhn check fails.
    fn broken(card: &str) -> String {
        let (head, last) = card.split_at(card.len() - 1);
        let d = (last.as_bytes()[0] - b'0' + 1) % 10;
        format!("{head}{d}")
    }

    #[test]
    fn luhn_matches_the_definition() {
        // Published examples: 79927398713 is the textbook Luhn-valid number;
        // 4111 1111 1111 1111 is the well-known Visa test number.
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        let visa: Vec<u8> = "4111111111111111".bytes().map(|b| b - b'0').collect();
        assert!(luhn(&visa));
    }

    #[test]
    fn cards_in_every_layout() {
        let c16 = with_luhn("411111111111111");
        let c15 = with_luhn("37828224631000");
        let c13 = with_luhn("422222222222");
        let c19 = with_luhn("622222222222222222");
        for c in [&c16, &c15, &c13, &c19] {
            assert_eq!(found(find_cards, c), [c.as_str()]);
            let text = format!("card: {c}, thanks");
            assert_eq!(found(find_cards, &text), [c.as_str()]);
        }
        let spaced = format!(
            "{} {} {} {}",
            &c16[0..4],
            &c16[4..8],
            &c16[8..12],
            &c16[12..16]
        );
        let dashed = spaced.replace(' ', "-");
        let amex = format!("{} {} {}", &c15[0..4], &c15[4..10], &c15[10..15]);
        for c in [&spaced, &dashed, &amex] {
            assert_eq!(found(find_cards, &format!("x{c}y")), [c.as_str()]);
        }
        // JSON from row_to_json / a concatenation with text.
        let json = format!(r#"{{"id":7,"card":"{c16}"}}"#);
        assert_eq!(found(find_cards, &json), [c16.as_str()]);
        // Next to an unrelated number separated by a space.
        assert_eq!(found(find_cards, &format!("2024 {c16} 1")), [c16.as_str()]);
        // Two cards in one value.
        assert_eq!(
            found(find_cards, &format!("{c16},{c13}")),
            [c16.as_str(), c13.as_str()]
        );
    }

    #[test]
    fn not_cards() {
        let c16 = with_luhn("411111111111111");
        let cases = [
            broken(&c16),                             // Luhn-invalid
            longer(&format!("4{c16}")),               // inside a longer run
            longer(&c16),                             // inside a longer run
            format!("{c16}1234"),                     // inside a 20-digit run
            with_luhn("123456789012345"),             // first digit 1 (ids, epoch ms)
            with_luhn("91234567890123"),              // first digit 9
            with_luhn("41111111111"),                 // 12 digits
            with_luhn("4111111111111111111"),         // 20 digits
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1".into(), // groups too small
            "2024-01-02 03:04:05.123456+00".into(),   // timestamp
            "0000000000000000".into(),                // Luhn-valid zeros
        ];
        for c in &cases {
            assert_eq!(found(find_cards, c), Vec::<&str>::new(), "{c}");
        }
    }

    #[test]
    fn ssns() {
        for s in ["123-45-6789", "078-05-1120", "665 12 0001", "899-99-9999"] {
            assert_eq!(found(find_ssns, s), [s]);
            let t = format!("ssn={s};");
            assert_eq!(found(find_ssns, &t), [s]);
        }
        for s in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45 6789",
            "1123-45-6789",
            "123-45-67890",
            "1-123-45-6789",
            "123-45-6789-1",
            "123456789",
            "12-345-6789",
        ] {
            assert_eq!(found(find_ssns, s), Vec::<&str>::new(), "{s}");
        }
    }

    #[test]
    fn emails() {
        for (text, want) in [
            ("alice@example.com", "alice@example.com"),
            (
                "Mail: A.B+tag@mail.example.co.uk.",
                "A.B+tag@mail.example.co.uk",
            ),
            (r#"{"email":"bob_99@x-y.io"}"#, "bob_99@x-y.io"),
            ("<o'brien@corp.example>", "o'brien@corp.example"),
            ("email='eve@ex.org'", "eve@ex.org"),
            ("josé@exämple.de", "josé@exämple.de"),
            ("..dots@ex.org", "dots@ex.org"),
        ] {
            assert_eq!(found(find_emails, text), [want], "{text}");
        }
        assert_eq!(found(find_emails, "a@b.cd, c@d.ef"), ["a@b.cd", "c@d.ef"]);
        // Addresses that share characters are one hit (fuzz finding
        // masking/crash-a3f7…: masking the first alone left `@æcole.fr`).
        for text in [
            "élève@æcole.élève@æcole.fr",
            "a@b.cd@e.fg",
            "a@b.cd.@e.fg",
            "x@y.zz@w.vv@u.tt",
        ] {
            assert_eq!(found(find_emails, text), [text], "{text}");
        }
        for text in [
            "@example.com",
            "user@",
            "user@localhost",
            "user@host.c",
            "user@10.0.0.1",
            "postgres@:5432",
            "a @ b.com",
        ] {
            assert_eq!(found(find_emails, text), Vec::<&str>::new(), "{text}");
        }
    }

    /// Build a valid IBAN for a country and BBAN by computing the check
    /// digits (ISO 13616: 98 - (BBAN ‖ CC ‖ "00") mod 97).
    fn iban(cc: &str, bban: &str) -> String {
        let mut r = 0u32;
        for b in format!("{bban}{cc}00").bytes() {
            r = if b.is_ascii_digit() {
                (r * 10 + u32::from(b - b'0')) % 97
            } else {
                (r * 100 + u32::from(b.to_ascii_uppercase() - b'A') + 10) % 97
            };
        }
        format!("{cc}{:02}{bban}", 98 - r)
    }

    fn grouped(s: &str) -> String {
        s.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn ibans() {
        // The ISO 13616 / ECBS published example IBANs.
        for published in ["DE89370400440532013000", "GB82WEST12345698765432"] {
            assert_eq!(found(find_ibans, published), [published]);
        }
        let de = iban("DE", "370400440532013000");
        assert_eq!(de, "DE89370400440532013000"); // our check-digit helper agrees
        let nl = iban("NL", "ABNA0417164300");
        let mt = iban("MT", "MALT011000012345MTLCAST001S");
        for s in [&de, &nl, &mt] {
            assert_eq!(found(find_ibans, s), [s.as_str()]);
            let g = grouped(s);
            let text = format!("IBAN: {g} please");
            assert_eq!(found(find_ibans, &text), [g.as_str()], "{text}");
            let text = format!("({g}),");
            assert_eq!(found(find_ibans, &text), [g.as_str()]);
        }
        // Last group of four followed by a 4-letter word: the longest
        // verifying prefix of groups.
        let be = iban("BE", "539007547034");
        assert_eq!(be.len(), 16);
        let g = grouped(&be);
        let text = format!("{g} then");
        assert_eq!(found(find_ibans, &text), [g.as_str()]);
    }

    #[test]
    fn not_ibans() {
        let de = iban("DE", "370400440532013000");
        let mut bad = de.clone().into_bytes();
        bad[10] = if bad[10] == b'9' { b'0' } else { bad[10] + 1 };
        let bad = String::from_utf8(bad).unwrap();
        for s in [
            bad.clone(),
            grouped(&bad),
            format!("X{de}"),                               // inside a word
            format!("{de}X"),                               // inside a word
            de.to_ascii_lowercase(),                        // lowercase country code
            iban("DE", "37040044053201300012345678901234"), // > 34
            iban("DE", "3704004405"),                       // < 15
        ] {
            assert_eq!(found(find_ibans, &s), Vec::<&str>::new(), "{s}");
        }
    }

    #[test]
    fn tokens_mask_the_secret_not_the_label() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2J5dGVz";
        let gh = format!("ghp_{}", "a1B2".repeat(9));
        let cases: Vec<(String, Vec<String>)> = vec![
            (
                "Authorization: Bearer abcdef0123456789xyz".into(),
                vec!["abcdef0123456789xyz".into()],
            ),
            (
                "bearer abcdef0123456789.XYZ-_~+/==".into(),
                vec!["abcdef0123456789.XYZ-_~+/==".into()],
            ),
            (format!("token {jwt} end"), vec![jwt.into()]),
            (
                "AKIAIOSFODNN7EXAMPLE".into(),
                vec!["AKIAIOSFODNN7EXAMPLE".into()],
            ),
            (
                "id=ASIAABCDEFGHIJKLMNOP,".into(),
                vec!["ASIAABCDEFGHIJKLMNOP".into()],
            ),
            (format!("gh: {gh}"), vec![gh.clone()]),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijkl".into(),
                vec!["github_pat_11ABCDEFG0123456789_abcdefghijkl".into()],
            ),
            (
                "xoxb-123456789012-abcdefABCDEF".into(),
                vec!["xoxb-123456789012-abcdefABCDEF".into()],
            ),
            (
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(),
                vec!["sk_live_4eC39HqLyjWDarjtT1zdp7dc".into()],
            ),
            ("api_key=s3cr3t&x=1".into(), vec!["s3cr3t".into()]),
            ("APIKEY: abc123".into(), vec!["abc123".into()]),
            (
                r#"{"client_secret": "two words", "n": 1}"#.into(),
                vec!["two words".into()],
            ),
            (
                "host=db password=hunter2 user=x".into(),
                vec!["hunter2".into()],
            ),
            (
                "ALTER ROLE app PASSWORD 'p@ss w0rd'".into(),
                vec!["p@ss w0rd".into()],
            ),
            ("WHERE token = 'abc'".into(), vec!["abc".into()]),
        ];
        for (text, want) in &cases {
            let got = tok(text);
            let got: Vec<String> = got.iter().map(|s| s.to_string()).collect();
            // The Authorization rule and the Bearer rule may both report the
            // same range; the masker merges overlaps.
            let mut dedup = got.clone();
            dedup.dedup();
            assert_eq!(&dedup, want, "{text}");
        }
    }

    #[test]
    fn not_tokens() {
        for s in [
            "Alice Smith",
            "the bearer of bad news",
            "AKIAIOSFODNN7EXAMPL", // 15 after the prefix
            "XAKIAIOSFODNN7EXAMPLE",
            "ghp_short",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "Asia/Tokyo",
            "monkey business",
            "eyJhbGciOiJIUzI1NiJ9 alone",
            "api_key=",
        ] {
            assert_eq!(tok(s), Vec::<&str>::new(), "{s}");
        }
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let mut v = b"\xff\xfe4111111111111111\xc3".to_vec();
        v.extend_from_slice(b"\x80a@b.co\xff api_key=\xff\xfe AKIAIOSFODNN7EXAMPLE DE89370400440532013000 123-45-6789");
        let mut out = Vec::new();
        find_cards(&v, &mut out);
        find_emails(&v, &mut out);
        find_ssns(&v, &mut out);
        find_ibans(&v, &mut out);
        tokens().find(&v, &mut out);
        assert!(out.len() >= 5);
        for h in out {
            assert!(h.start < h.end && h.end <= v.len());
        }
    }

    #[test]
    fn features_count_what_the_scanners_need() {
        let f = features(b"Ab 12-@x9");
        assert_eq!(f.digits, 3);
        assert_eq!(f.upper, 1);
        assert!(f.at && f.dash_or_space && f.letters);
        assert!(!features(b"2025-01-02 03:04:05+00").letters);
        let f = features(b"abc");
        assert!(f.letters);
        assert_eq!(
            (f.digits, f.upper, f.at, f.dash_or_space),
            (0, 0, false, false)
        );
    }
}
