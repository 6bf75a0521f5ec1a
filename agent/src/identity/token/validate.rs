//! Validating one compact JWT against a policy: the header pre-check that
//! refuses `none`, every HS* and anything outside the configured algorithms
//! before a key is looked at; signature and time checks by `jsonwebtoken`;
//! then issuer, subject, audience and the optional claims, each failure with
//! its own reason. [`verify_with_jwks`] is the offline form over a JWKS.

use std::collections::HashSet;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::error::clip;
use super::jwks::KeySet;
use super::{
    DEFAULT_LEEWAY_SECS, MAX_LEEWAY_SECS, SUPPORTED_ALGORITHMS, TokenError, ValidatedToken,
};

/// Longest token accepted, in bytes (real ones are a few KiB).
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub issuer: String,
    pub audience: String,
    pub subject: Option<String>,
    pub spiffe_trust_domain: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: u64,
}

impl Policy {
    /// Checks and builds a policy from configuration values.
    pub fn new(
        issuer: &str,
        audience: &str,
        subject: Option<&str>,
        spiffe_trust_domain: Option<&str>,
        algorithms: &[String],
        leeway_secs: u64,
    ) -> Result<Self, TokenError> {
        if issuer.trim().is_empty() {
            return Err(TokenError::Config("issuer must not be empty".into()));
        }
        if audience.trim().is_empty() {
            return Err(TokenError::Config("audience must not be empty".into()));
        }
        if subject.is_some_and(|s| s.is_empty()) {
            return Err(TokenError::Config(
                "subject must not be empty when set".into(),
            ));
        }
        if let Some(td) = spiffe_trust_domain {
            check_trust_domain(td)?;
        }
        if leeway_secs > MAX_LEEWAY_SECS {
            return Err(TokenError::Config(format!(
                "leeway {leeway_secs} s exceeds the maximum of {MAX_LEEWAY_SECS} s"
            )));
        }
        Ok(Policy {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            subject: subject.map(str::to_owned),
            spiffe_trust_domain: spiffe_trust_domain.map(str::to_owned),
            algorithms: parse_algorithms(algorithms)?,
            leeway: leeway_secs,
        })
    }
}

/// The configured algorithm names, each of [`SUPPORTED_ALGORITHMS`].
pub(crate) fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, TokenError> {
    if names.is_empty() {
        return Err(TokenError::Config(
            "algorithms must name at least one algorithm".into(),
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !SUPPORTED_ALGORITHMS.contains(&name.as_str()) {
            return Err(TokenError::Config(format!(
                "algorithm {:?} is not allowed (allowed: {})",
                clip(name),
                SUPPORTED_ALGORITHMS.join(", ")
            )));
        }
        let alg = Algorithm::from_str(name)
            .map_err(|_| TokenError::Config(format!("algorithm {name:?} is unknown")))?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
fn check_trust_domain(td: &str) -> Result<(), TokenError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(TokenError::Config(format!(
            "spiffe_trust_domain {:?} is not a trust domain name (lowercase letters, digits, '.', '-', '_'; no scheme or path)",
            clip(td)
        )))
    }
}

/// The algorithm's JOSE name.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // Algorithm is non-exhaustive; a future variant is never allowed.
        _ => "unknown",
    }
}

/// What the pre-check took from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Reads the header without trusting it and refuses a disallowed `alg`
/// before any key is chosen: `none`, HS* and anything outside the policy
/// fail here, so no public key can ever be used as an HMAC secret.
pub(crate) fn precheck(token: &str, policy: &Policy) -> Result<TokenHeader, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Malformed {
            detail: "empty token",
        });
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed {
            detail: "token longer than 16 KiB",
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed {
            detail: "not a compact JWS (three dot-separated parts)",
        });
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(TokenError::Malformed {
            detail: "empty header or payload",
        });
    }
    let raw = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| TokenError::Malformed {
            detail: "header is not base64url",
        })?;
    let header: Map<String, Value> =
        serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed {
            detail: "header is not a JSON object",
        })?;
    let alg_str = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "header alg is not a string",
            });
        }
        None => {
            return Err(TokenError::Malformed {
                detail: "header has no alg",
            });
        }
    };
    let alg = policy
        .algorithms
        .iter()
        .copied()
        .find(|a| alg_name(*a) == alg_str)
        .ok_or_else(|| TokenError::AlgNotAllowed { alg: clip(alg_str) })?;
    if header.contains_key("crit") {
        return Err(TokenError::Malformed {
            detail: "header has crit extensions, none are supported",
        });
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "header kid is not a string",
            });
        }
    };
    Ok(TokenHeader { alg, kid })
}

/// Verifies the signature with `key` (already chosen for `header`), the
/// times with `jsonwebtoken`, then the claims against `policy`.
pub(crate) fn verify_signed(
    token: &str,
    header: &TokenHeader,
    key: &DecodingKey,
    policy: &Policy,
) -> Result<ValidatedToken, TokenError> {
    let mut validation = Validation::new(header.alg);
    validation.leeway = policy.leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // Issuer, audience, subject and presence are checked below, in a fixed
    // order and with distinct reasons.
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|e| map_jwt_error(&e, header))?;
    // The same header jsonwebtoken verified; the pre-check read it too.
    if data.header.alg != header.alg {
        return Err(TokenError::AlgNotAllowed {
            alg: alg_name(data.header.alg).into(),
        });
    }
    check_claims(&data.claims, header, policy)
}

fn check_claims(
    claims: &Map<String, Value>,
    header: &TokenHeader,
    policy: &Policy,
) -> Result<ValidatedToken, TokenError> {
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim { claim: "exp" }),
        Some(v) => numeric(v).ok_or(TokenError::Malformed {
            detail: "exp is not a number",
        })?,
    };
    let iss = match claims.get("iss") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim { claim: "iss" }),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "iss is not a string",
            });
        }
    };
    if iss != policy.issuer {
        return Err(TokenError::WrongIssuer {
            expected: policy.issuer.clone(),
            found: clip(&iss),
        });
    }
    let sub = match claims.get("sub") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim { claim: "sub" }),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(TokenError::MissingClaim { claim: "sub" });
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "sub is not a string",
            });
        }
    };
    let aud: Vec<String> = match claims.get("aud") {
        None | Some(Value::Null) => return Err(TokenError::AudienceMissing),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(TokenError::Malformed {
                detail: "aud holds a non-string",
            })?,
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "aud is neither a string nor an array",
            });
        }
    };
    if aud.iter().all(|a| a.is_empty()) {
        return Err(TokenError::AudienceMissing);
    }
    if !aud.contains(&policy.audience) {
        return Err(TokenError::WrongAudience {
            expected: policy.audience.clone(),
        });
    }
    let iat = match claims.get("iat") {
        None | Some(Value::Null) => None,
        Some(v) => Some(numeric(v).ok_or(TokenError::Malformed {
            detail: "iat is not a number",
        })?),
    };
    if let Some(iat) = iat {
        let leeway = i64::try_from(policy.leeway).unwrap_or(i64::MAX);
        if iat > now_secs().saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    let jti = match claims.get("jti") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(TokenError::Malformed {
                detail: "jti is not a string",
            });
        }
    };
    check_subject(&sub, policy)?;
    Ok(ValidatedToken {
        iss,
        sub,
        aud,
        jti,
        exp,
        iat,
        kid: header.kid.clone(),
        alg: alg_name(header.alg).to_owned(),
    })
}

fn check_subject(sub: &str, policy: &Policy) -> Result<(), TokenError> {
    if let Some(want) = &policy.subject
        && sub != want
    {
        return Err(TokenError::WrongSubject {
            found: clip(sub),
            detail: format!("is not the expected {want:?}"),
        });
    }
    if let Some(td) = &policy.spiffe_trust_domain {
        let in_domain = sub
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(domain, path)| domain == td && !path.is_empty());
        if !in_domain {
            return Err(TokenError::WrongSubject {
                found: clip(sub),
                detail: format!("is not a SPIFFE ID in trust domain {td:?}"),
            });
        }
    }
    Ok(())
}

/// A NumericDate as whole seconds (fractions are truncated).
fn numeric(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error, header: &TokenHeader) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::AlgNotAllowed {
            alg: alg_name(header.alg).into(),
        },
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenError::KeyMismatch {
            kid: header.kid.as_deref().map(clip),
            alg: alg_name(header.alg).into(),
            detail: "the key cannot verify this algorithm",
        },
        ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed {
            detail: "a time claim is not a NumericDate",
        },
        // Issuer, audience, subject and claim presence are not delegated
        // (see verify_signed); what remains is undecodable input.
        _ => TokenError::Malformed {
            detail: "token cannot be decoded",
        },
    }
}

/// Verifies a token offline against a JWKS document (as [`super::Minter::jwks`]
/// returns it): any supported algorithm, the default leeway, exact issuer
/// and audience, no subject constraint. For collectors and tests.
pub fn verify_with_jwks(
    token: &str,
    jwks: &Value,
    issuer: &str,
    audience: &str,
) -> Result<ValidatedToken, TokenError> {
    let all: Vec<String> = SUPPORTED_ALGORITHMS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let policy = Policy::new(issuer, audience, None, None, &all, DEFAULT_LEEWAY_SECS)?;
    let keys = KeySet::from_value(jwks, "the given JWKS")?;
    let header = precheck(token, &policy)?;
    let key = keys.select(header.kid.as_deref(), header.alg)?;
    verify_signed(token, &header, &key, &policy)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit::{self, TestKey};
    use super::*;

    fn policy() -> Policy {
        let all: Vec<String> = SUPPORTED_ALGORITHMS.iter().map(|s| s.to_string()).collect();
        Policy::new(testkit::ISS, testkit::AUD, None, None, &all, 30).unwrap()
    }

    fn check(key: &TestKey, token: &str, policy: &Policy) -> Result<ValidatedToken, TokenError> {
        let keys = KeySet::from_value(&testkit::jwks(&[key]), "test").unwrap();
        let header = precheck(token, policy)?;
        let k = keys.select(header.kid.as_deref(), header.alg)?;
        verify_signed(token, &header, &k, policy)
    }

    #[test]
    fn config_rules() {
        let ok = |algs: &[&str], leeway| {
            let algs: Vec<String> = algs.iter().map(|s| s.to_string()).collect();
            Policy::new("i", "a", None, None, &algs, leeway)
        };
        assert!(ok(&["RS256", "EdDSA"], 60).is_ok());
        for bad in [&["HS256"][..], &["none"], &["PS384"], &["rs256"], &[]] {
            let e = ok(bad, 0).unwrap_err();
            assert_eq!(e.reason(), "token_config_invalid", "{bad:?}");
        }
        assert_eq!(
            ok(&["RS256"], 61).unwrap_err().reason(),
            "token_config_invalid"
        );
        let algs = vec!["RS256".to_string()];
        assert!(Policy::new("", "a", None, None, &algs, 0).is_err());
        assert!(Policy::new("i", " ", None, None, &algs, 0).is_err());
        assert!(Policy::new("i", "a", Some(""), None, &algs, 0).is_err());
        for td in ["spiffe://example.org", "Example.org", "example.org/x", ""] {
            assert!(
                Policy::new("i", "a", None, Some(td), &algs, 0).is_err(),
                "{td}"
            );
        }
        assert!(Policy::new("i", "a", None, Some("prod.example-1.org"), &algs, 0).is_ok());
    }

    #[test]
    fn header_precheck() {
        let p = policy();
        for (token, reason) in [
            ("", "token_malformed"),
            ("abc", "token_malformed"),
            ("a.b", "token_malformed"),
            ("a.b.c.d", "token_malformed"),
            ("!!!.e30.", "token_malformed"),
            (".e30.x", "token_malformed"),
        ] {
            assert_eq!(precheck(token, &p).unwrap_err().reason(), reason, "{token}");
        }
        let hdr = |h: Value| format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(h.to_string()));
        let cases = [
            (json!({"alg": "none"}), "token_alg_not_allowed"),
            (json!({"alg": "HS256", "kid": "k"}), "token_alg_not_allowed"),
            (json!({"alg": "HS512"}), "token_alg_not_allowed"),
            (json!({"alg": "PS512"}), "token_alg_not_allowed"),
            (json!({"alg": "rs256"}), "token_alg_not_allowed"),
            (json!({"alg": 5}), "token_malformed"),
            (json!({"typ": "JWT"}), "token_malformed"),
            (json!({"alg": "RS256", "kid": 7}), "token_malformed"),
            (json!({"alg": "RS256", "crit": ["exp"]}), "token_malformed"),
        ];
        for (h, reason) in cases {
            assert_eq!(
                precheck(&hdr(h.clone()), &p).unwrap_err().reason(),
                reason,
                "{h}"
            );
        }
        let ok = precheck(&hdr(json!({"alg": "ES384", "kid": "k1"})), &p).unwrap();
        assert_eq!(
            ok,
            TokenHeader {
                alg: Algorithm::ES384,
                kid: Some("k1".into())
            }
        );
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(precheck(&long, &p).unwrap_err().reason(), "token_malformed");
    }

    #[test]
    fn claim_rules_each_have_their_reason() {
        let key = testkit::ed25519("ed-1");
        let p = policy();
        let now = now_secs();
        let base = testkit::claims("spiffe://example.org/ns/app");
        let with = |f: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = base.as_object().unwrap().clone();
            f(&mut c);
            testkit::sign(&key, &Value::Object(c))
        };
        let cases: Vec<(String, &str)> = vec![
            (
                with(&|c| {
                    c.remove("exp");
                }),
                "token_missing_claim",
            ),
            (
                with(&|c| {
                    c.remove("sub");
                }),
                "token_missing_claim",
            ),
            (
                with(&|c| {
                    c.insert("sub".into(), json!(""));
                }),
                "token_missing_claim",
            ),
            (
                with(&|c| {
                    c.remove("iss");
                }),
                "token_missing_claim",
            ),
            (
                with(&|c| {
                    c.remove("aud");
                }),
                "token_audience_missing",
            ),
            (
                with(&|c| {
                    c.insert("aud".into(), json!([]));
                }),
                "token_audience_missing",
            ),
            (
                with(&|c| {
                    c.insert("aud".into(), json!(["other"]));
                }),
                "token_wrong_audience",
            ),
            (
                with(&|c| {
                    c.insert("aud".into(), json!([1]));
                }),
                "token_malformed",
            ),
            (
                with(&|c| {
                    c.insert("iss".into(), json!("https://evil"));
                }),
                "token_wrong_issuer",
            ),
            (
                with(&|c| {
                    c.insert("exp".into(), json!(now - 3600));
                }),
                "token_expired",
            ),
            (
                with(&|c| {
                    c.insert("exp".into(), json!("soon"));
                }),
                "token_malformed",
            ),
            (
                with(&|c| {
                    c.insert("nbf".into(), json!(now + 3600));
                }),
                "token_not_yet_valid",
            ),
            (
                with(&|c| {
                    c.insert("iat".into(), json!(now + 3600));
                }),
                "token_not_yet_valid",
            ),
            (
                with(&|c| {
                    c.insert("jti".into(), json!(5));
                }),
                "token_malformed",
            ),
        ];
        for (token, reason) in cases {
            let e = check(&key, &token, &p).unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
            assert!(
                !e.to_string().contains(&token),
                "message must not carry the token"
            );
        }
        // Leeway: expired 10 s ago and nbf 10 s ahead pass with 30 s leeway.
        let t = with(&|c| {
            c.insert("exp".into(), json!(now - 10));
            c.insert("nbf".into(), json!(now + 10));
        });
        check(&key, &t, &p).unwrap();
        let mut strict = p.clone();
        strict.leeway = 0;
        assert_eq!(
            check(&key, &t, &strict).unwrap_err().reason(),
            "token_expired"
        );
        // Audience as a list that includes ours.
        let t = with(&|c| {
            c.insert("aud".into(), json!(["x", testkit::AUD]));
        });
        assert_eq!(
            check(&key, &t, &p).unwrap().aud,
            vec!["x".to_string(), testkit::AUD.into()]
        );
    }

    #[test]
    fn subject_and_trust_domain() {
        let key = testkit::p256("ec-1");
        let mut p = policy();
        p.subject = Some("system:serviceaccount:prod:app".into());
        let t = testkit::sign(&key, &testkit::claims("system:serviceaccount:prod:app"));
        check(&key, &t, &p).unwrap();
        let t = testkit::sign(&key, &testkit::claims("system:serviceaccount:prod:other"));
        assert_eq!(
            check(&key, &t, &p).unwrap_err().reason(),
            "token_wrong_subject"
        );

        let mut p = policy();
        p.spiffe_trust_domain = Some("example.org".into());
        for sub in ["spiffe://example.org/ns/app", "spiffe://example.org/x"] {
            let t = testkit::sign(&key, &testkit::claims(sub));
            assert_eq!(check(&key, &t, &p).unwrap().sub, sub);
        }
        for sub in [
            "spiffe://evil.org/ns/app",
            "spiffe://example.org.evil.org/ns/app",
            "spiffe://example.org",
            "spiffe://example.org/",
            "example.org/ns/app",
            "https://example.org/ns/app",
        ] {
            let t = testkit::sign(&key, &testkit::claims(sub));
            let e = check(&key, &t, &p).unwrap_err();
            assert_eq!(e.reason(), "token_wrong_subject", "{sub}");
        }
    }

    #[test]
    fn offline_verify_with_jwks() {
        let key = testkit::p384("ec384");
        let t = testkit::sign(&key, &testkit::claims("svc"));
        let jwks = testkit::jwks(&[&key]);
        let v = verify_with_jwks(&t, &jwks, testkit::ISS, testkit::AUD).unwrap();
        assert_eq!((v.alg.as_str(), v.kid.as_deref()), ("ES384", Some("ec384")));
        assert_eq!(
            verify_with_jwks(&t, &jwks, "other", testkit::AUD)
                .unwrap_err()
                .reason(),
            "token_wrong_issuer"
        );
        let other = testkit::p384("other");
        assert_eq!(
            verify_with_jwks(&t, &testkit::jwks(&[&other]), testkit::ISS, testkit::AUD)
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        assert_eq!(
            verify_with_jwks(&t, &json!({"nokeys": []}), testkit::ISS, testkit::AUD)
                .unwrap_err()
                .reason(),
            "jwks_invalid"
        );
    }
}
