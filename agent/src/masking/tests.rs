//! Masker-level tests: compile problems, strategies end to end, the
//! backstop over realistic values.

use super::*;

const KEY: &[u8] = b"masking-test-key-0123456789";

fn cfg(toml_text: &str) -> MaskingConfig {
    toml::from_str(toml_text).unwrap()
}

fn masker(toml_text: &str) -> Masker {
    Masker::compile(&cfg(toml_text), Some(KEY.to_vec())).unwrap()
}

fn expected_token(input: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(KEY).unwrap();
    mac.update(input);
    let tag = hex::encode(mac.finalize().into_bytes());
    format!("tok_{}", &tag[..16])
}

fn s(m: &Masker, v: &str) -> String {
    m.mask_str(v).0.into_owned()
}

#[test]
fn masker_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Masker>();
}

#[test]
fn compile_reports_every_problem_at_once() {
    let c = cfg(r#"
columns = [
  { column = "customers.email", strategy = "redact" },
  { column = "email", strategy = "redact" },
  { column = "Customers.EMAIL", strategy = "null" },
  { column = "a.b", strategy = "hmac" },
]
patterns = ["card", "phone", "card", "employee_id"]
pattern_strategy = "hmac"
custom = [
  { name = "employee_id", regex = "EMP-[0-9]{6}" },
  { name = "bad", regex = "(unclosed" },
  { name = "Bad Name", regex = "x" },
  { name = "card", regex = "x" },
  { name = "empty", regex = "a*" },
]
"#);
    let problems = Masker::compile(&c, None).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "columns[1].column",
        "columns[2].column",
        "patterns[1]",
        "patterns[2]",
        "custom[1].regex",
        "custom[2].name",
        "custom[3].name",
        "custom[4].regex",
        "custom[1]",
        "hmac_key_file",
    ] {
        assert!(keys.contains(&want), "missing {want} in {problems:#?}");
    }
    assert!(!keys.contains(&"columns[0].column"));
    assert!(!keys.contains(&"columns[3].column"));
    assert!(!keys.contains(&"patterns[3]"));
    let dup = problems
        .iter()
        .find(|p| p.key == "columns[2].column")
        .unwrap();
    assert!(dup.message.contains("columns[0]"), "{dup}");
    let unknown = problems.iter().find(|p| p.key == "patterns[1]").unwrap();
    assert!(unknown.message.contains("phone") && unknown.message.contains("employee_id"));
    let key = problems.iter().find(|p| p.key == "hmac_key_file").unwrap();
    assert!(
        key.message.contains("columns[3]") && key.message.contains("pattern_strategy"),
        "{key}"
    );
}

#[test]
fn hmac_key_problems() {
    let c = cfg(r#"columns = [{ column = "t.c", strategy = "hmac" }]
hmac_key_file = "/k""#);
    let p = Masker::compile(&c, None).unwrap_err();
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("no key was loaded"));
    let p = Masker::compile(&c, Some(b"short".to_vec())).unwrap_err();
    assert_eq!(p[0].key, "hmac_key_file");
    assert!(Masker::compile(&c, Some(KEY.to_vec())).is_ok());
    // No hmac in use: no key needed.
    assert!(Masker::compile(&cfg(r#"patterns = ["card"]"#), None).is_ok());
}

#[test]
fn read_hmac_key_trims_and_checks_length() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    std::fs::write(&p, b"0123456789abcdefXYZ\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A key others can read is refused (fsutil::read_secret).
    match read_hmac_key(&p) {
        Err(e @ MaskingError::KeyRead { .. }) => {
            assert!(e.to_string().contains("mode 0644"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_hmac_key(&p).unwrap(), b"0123456789abcdefXYZ");
    std::fs::write(&p, b"short\n\n").unwrap();
    assert!(matches!(
        read_hmac_key(&p),
        Err(MaskingError::KeyTooShort { len: 5, .. })
    ));
    assert!(matches!(
        read_hmac_key(&dir.path().join("missing")),
        Err(MaskingError::KeyRead { .. })
    ));
}

#[test]
fn column_strategies_on_whole_values() {
    let m = masker(
        r#"columns = [
  { column = "customers.email", strategy = "redact" },
  { column = "customers.card", strategy = "last4" },
  { column = "public.customers.ssn", strategy = "null" },
  { column = "customers.tax_id", strategy = "hmac" },
]"#,
    );
    assert!(m.has_columns() && !m.has_patterns());
    let email = m.column_strategy("public", "Customers", "EMAIL").unwrap();
    assert_eq!(email, Strategy::Redact);
    assert_eq!(
        m.apply(email, b"alice@example.com"),
        Masked::Value(b"[MASKED]".to_vec())
    );
    let card = m.column_strategy("s", "customers", "card").unwrap();
    assert_eq!(
        m.apply(card, b"4111 1111 1111 1111"),
        Masked::Value(b"**** **** **** 1111".to_vec())
    );
    assert_eq!(m.column_strategy("other", "customers", "ssn"), None);
    let ssn = m.column_strategy("public", "customers", "ssn").unwrap();
    assert_eq!(m.apply(ssn, b"123-45-6789"), Masked::Null);
    let tax = m.column_strategy("public", "customers", "tax_id").unwrap();
    assert_eq!(
        m.apply(tax, b"DE123456789"),
        Masked::Value(expected_token(b"DE123456789").into_bytes())
    );
    // Invalid UTF-8 is fine for every strategy.
    for st in [
        Strategy::Redact,
        Strategy::Last4,
        Strategy::Hmac,
        Strategy::Null,
    ] {
        let _ = m.apply(st, b"\xff\xfe\xc3");
    }
}

#[test]
fn hmac_without_key_fails_closed() {
    assert_eq!(
        builtin().apply(Strategy::Hmac, b"secret"),
        Masked::Value(b"[MASKED]".to_vec())
    );
}

#[test]
fn redact_markers_name_the_kind() {
    let m = builtin();
    let text = "mail bob@x.io card 4111111111111111 ssn 123-45-6789 iban DE89370400440532013000 key AKIAIOSFODNN7EXAMPLE";
    let (out, n) = m.mask_str(text);
    assert_eq!(n, 5);
    assert_eq!(
        out,
        "mail [MASKED:email] card [MASKED:card] ssn [MASKED:ssn] iban [MASKED:iban] key [MASKED:token]"
    );
}

#[test]
fn last4_pattern_strategy() {
    let m = masker(
        r#"patterns = ["card", "email", "ssn", "iban"]
pattern_strategy = "last4""#,
    );
    assert_eq!(
        s(&m, "card 4111-1111-1111-1111 ok"),
        "card ****-****-****-1111 ok"
    );
    assert_eq!(s(&m, "ssn 123-45-6789"), "ssn ***-**-6789");
    assert_eq!(s(&m, "to: bob@x.io"), "to: [MASKED:email]");
    assert_eq!(
        s(&m, "DE89 3704 0044 0532 0130 00"),
        "**** **** **** **** **30 00"
    );
}

#[test]
fn hmac_pattern_strategy_is_deterministic_and_normalised() {
    let m = masker(
        r#"patterns = ["card", "email", "ssn"]
pattern_strategy = "hmac""#,
    );
    let card = expected_token(b"4111111111111111");
    assert_eq!(s(&m, "4111 1111 1111 1111"), card);
    assert_eq!(s(&m, "x 4111-1111-1111-1111 y"), format!("x {card} y"));
    assert_eq!(
        s(&m, "a@b.io,a@b.io"),
        format!("{0},{0}", expected_token(b"a@b.io"))
    );
    assert_eq!(s(&m, "123-45-6789"), expected_token(b"123456789"));
    // A column token of the bare digits equals the pattern token.
    assert_eq!(
        m.apply(Strategy::Hmac, b"4111111111111111"),
        Masked::Value(card.into_bytes())
    );
}

#[test]
fn null_pattern_strategy() {
    let m = masker(
        r#"patterns = ["email"]
pattern_strategy = "null""#,
    );
    assert_eq!(m.mask_value(b"hi bob@x.io"), Some((Masked::Null, 1)));
    assert_eq!(m.mask_value(b"nothing here"), None);
    // Where NULL cannot exist, the match is redacted.
    assert_eq!(s(&m, "hi bob@x.io"), "hi [MASKED:email]");
}

#[test]
fn custom_detectors() {
    let m = masker(
        r#"patterns = ["employee_id"]
custom = [{ name = "employee_id", regex = "EMP-[0-9]{6}" }]"#,
    );
    assert!(m.has_patterns());
    assert_eq!(
        m.mask_str("by EMP-123456 and EMP-654321."),
        (
            Cow::Owned("by [MASKED:employee_id] and [MASKED:employee_id].".into()),
            2
        )
    );
    // Only listed detectors run.
    assert_eq!(m.mask_patterns(b"bob@x.io 4111111111111111"), None);
}

#[test]
fn overlapping_matches_merge() {
    let m = builtin();
    // A card number and an email inside a token value.
    let (out, n) = m.mask_str(r#"api_key="4111111111111111 bob@bank.example""#);
    assert_eq!(n, 1);
    assert_eq!(out, r#"api_key="[MASKED:token]""#);
    // A bearer header hit by two token rules.
    let (out, n) = m.mask_str("Authorization: Bearer abcdef0123456789xyz");
    assert_eq!(
        (out.as_ref(), n),
        ("Authorization: Bearer [MASKED:token]", 1)
    );
}

#[test]
fn backstop_catches_aliases_expressions_and_rows() {
    let m = builtin();
    // row_to_json(u)
    let row = r#"{"id":42,"name":"Ann","email":"ann@corp.example","ssn":"123-45-6789","card":"5555 5555 5555 4444"}"#;
    let (out, n) = m.mask_str(row);
    assert_eq!(n, 3);
    assert_eq!(
        out,
        r#"{"id":42,"name":"Ann","email":"[MASKED:email]","ssn":"[MASKED:ssn]","card":"[MASKED:card]"}"#
    );
    // ssn || '' / concat with text
    assert_eq!(s(&m, "SSN: 123-45-6789!"), "SSN: [MASKED:ssn]!");
    // COPY text row with tabs
    assert_eq!(
        s(&m, "42\tann@corp.example\t4111111111111111\n"),
        "42\t[MASKED:email]\t[MASKED:card]\n"
    );
}

#[test]
fn nothing_matched_borrows_and_allocates_nothing() {
    let m = builtin();
    for v in [
        "",
        "42",
        "Alice Smith",
        "2024-01-02 03:04:05.123456+00",
        "1700000000000",
        "550e8400-e29b-41d4-a716-446655440000",
        "Asia/Tokyo",
        "SELECT * FROM orders WHERE id = $1",
        "duplicate key value violates unique constraint \"orders_pkey\"",
    ] {
        let (out, n) = m.mask_str(v);
        assert!(matches!(out, Cow::Borrowed(_)), "{v}");
        assert_eq!(n, 0);
        assert_eq!(m.mask_patterns(v.as_bytes()), None, "{v}");
        assert_eq!(m.mask_value(v.as_bytes()), None, "{v}");
    }
}

#[test]
fn error_and_statement_text() {
    let m = builtin();
    assert_eq!(
        s(&m, "Key (email)=(bob@example.com) already exists."),
        "Key (email)=([MASKED:email]) already exists."
    );
    assert_eq!(
        s(
            &m,
            "UPDATE users SET card = '4111111111111111' WHERE email = 'a@b.co'"
        ),
        "UPDATE users SET card = '[MASKED:card]' WHERE email = '[MASKED:email]'"
    );
}

#[test]
fn invalid_utf8_values_do_not_panic() {
    let m = builtin();
    let v = b"\xff4111111111111111\xfe a@b.co \xc3 api_key=\xff\xff \x80";
    let (out, n) = m.mask_patterns(v).unwrap();
    assert!(n >= 2);
    assert!(!out.windows(16).any(|w| w == b"4111111111111111"));
    // mask_str with a custom byte regex that splits a character stays UTF-8.
    let m = masker(
        r#"patterns = ["half"]
custom = [{ name = "half", regex = "(?-u:\\xC3)" }]"#,
    );
    let (out, n) = m.mask_str("é");
    assert_eq!(n, 1);
    assert!(out.starts_with("[MASKED:half]"));
}

#[test]
fn debug_does_not_print_the_key() {
    let m = masker(r#"columns = [{ column = "t.c", strategy = "hmac" }]"#);
    let d = format!("{m:?}");
    assert!(d.contains("<set>"));
    assert!(!d.contains("masking-test-key"));
}

/// Regression (fuzz/regressions/masking, the `masking` fuzz target's
/// differential): a value masked for a detector never matches it again,
/// with every pattern strategy; the token detector found its own output
/// (`token=tok_…`) and masked it a second time.
#[test]
fn masked_values_do_not_match_again() {
    for strategy in ["redact", "last4", "hmac", "null"] {
        let m = masker(&format!(
            "patterns = [\"card\", \"email\", \"ssn\", \"iban\", \"token\"]\n\
             pattern_strategy = \"{strategy}\"\nhmac_key_file = \"/k\""
        ));
        for v in [
            "token=ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "password=hunter2hunter2 card 4111 1111 1111 1111",
            r#"{"api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "mail": "jane@example.com"}"#,
            "Authorization: Bearer abcdefghijklmnop",
        ] {
            let (once, n) = m.mask_patterns(v.as_bytes()).expect("something to mask");
            assert!(n > 0);
            assert_eq!(
                m.mask_patterns(&once)
                    .map(|(b, _)| String::from_utf8_lossy(&b).into_owned()),
                None,
                "{strategy}: {v} -> {}",
                String::from_utf8_lossy(&once)
            );
        }
    }
}

/// fuzz/regressions/masking/crash-a3f7…: with hmac, addresses that share
/// characters (`élève@æcole.élève@æcole.fr`) masked to `tok_…@æcole.fr`,
/// the domain of the second still readable and a match again.
#[test]
fn addresses_sharing_characters_mask_whole() {
    let input = include_bytes!(
        "../../../fuzz/regressions/masking/crash-a3f733bebe6d9ddc6a3d11418ed6de2e5f2b13ea"
    );
    for strategy in ["redact", "last4", "hmac", "null"] {
        let m = masker(&format!(
            "patterns = [\"card\", \"email\", \"ssn\", \"iban\", \"token\"]\n\
             pattern_strategy = \"{strategy}\"\nhmac_key_file = \"/k\""
        ));
        for v in [
            &input[1..],
            b"a@b.cd@e.fg",
            "x élève@æcole.élève@æcole.fr y".as_bytes(),
        ] {
            let (once, _) = m.mask_patterns(v).expect("an address");
            let text = String::from_utf8_lossy(&once);
            assert!(
                !text.contains("cole.fr") && !text.contains("e.fg"),
                "{strategy}: {text}"
            );
            assert_eq!(
                m.mask_patterns(&once)
                    .map(|(b, _)| String::from_utf8_lossy(&b).into_owned()),
                None,
                "{strategy}: {text}"
            );
        }
    }
}

#[test]
fn an_unkeyed_masker_redacts_until_keyed_without_compiling_again() {
    let c = cfg(r#"
patterns = ["email"]
pattern_strategy = "hmac"
columns = [{ column = "customers.tax_id", strategy = "hmac" }]
hmac_key_file = "/etc/warden/mask.key"
"#);
    // At load the key is not read: no key problem, and no key.
    let unkeyed = Masker::compile_unkeyed(&c).unwrap();
    let v = "mail ana@example.com";
    assert!(!s(&unkeyed, v).contains("tok_"), "{}", s(&unkeyed, v));
    let t = unkeyed
        .column_strategy("public", "customers", "tax_id")
        .unwrap();
    assert_eq!(unkeyed.apply(t, b"123"), Masked::Value(REDACTED.to_vec()));
    // Keyed, it tokenises exactly as a masker compiled with the key.
    let keyed = unkeyed.keyed(KEY.to_vec()).unwrap();
    let direct = Masker::compile(&c, Some(KEY.to_vec())).unwrap();
    assert_eq!(s(&keyed, v), s(&direct, v));
    assert_eq!(
        keyed.apply(t, b"123"),
        Masked::Value(expected_token(b"123").into_bytes())
    );
    // The unkeyed one is left as it was; a short key is refused.
    assert!(!s(&unkeyed, v).contains("tok_"));
    let p = unkeyed.keyed(b"short".to_vec()).unwrap_err();
    assert_eq!(p[0].key, "hmac_key_file");
    assert!(p[0].message.contains("at least"), "{}", p[0].message);
    // hmac without a key file is still a problem at load.
    let p = Masker::compile_unkeyed(&cfg(r#"patterns = ["email"]
pattern_strategy = "hmac""#))
    .unwrap_err();
    assert!(p[0].message.contains("is required by strategy"), "{p:?}");
}
