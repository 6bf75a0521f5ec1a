//! Fuzzes identity-token validation (`identity::token`): the JWT header
//! pre-check (base64url, JSON, `alg` against the allowed list, `crit`,
//! `kid`), JWKS parsing and key selection, signature and time checks, and
//! the claims checks (issuer, audience, subject, expiry) — through
//! `verify_with_jwks`, the offline form of what the token source runs.
//!
//! First byte even: the input is a JWKS document and a token separated by
//! a NUL, both the fuzzer's (an attacker who controls the token and a
//! JWKS endpoint's answer). First byte odd: the rest is the claims of a
//! token signed with a fixed Ed25519 key whose JWKS is given, so the
//! claims checks behind the signature are reached.
//!
//! A token is accepted only with the configured issuer and audience and
//! an expiry; nothing may panic.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use warden::identity::token::verify_with_jwks;

const ISS: &str = "https://idp.example.test";
const AUD: &str = "warden";

static KEY: LazyLock<(SigningKey, serde_json::Value)> = LazyLock::new(|| {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let jwks = serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "fuzz", "use": "sig", "alg": "EdDSA",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    }]});
    (key, jwks)
});

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = warden_fuzz::selector(data) else {
        return;
    };
    let result = if sel & 1 == 0 {
        let (jwks, token) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&b"{\"keys\":[]}"[..], rest),
        };
        let Ok(jwks) = serde_json::from_slice::<serde_json::Value>(jwks) else {
            return;
        };
        let Ok(token) = std::str::from_utf8(token) else {
            return;
        };
        verify_with_jwks(token, &jwks, ISS, AUD)
    } else {
        let (key, jwks) = &*KEY;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz"}"#);
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(rest));
        let sig = key.sign(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        verify_with_jwks(&token, jwks, ISS, AUD)
    };
    if let Ok(t) = result {
        assert_eq!(t.iss, ISS);
        assert!(t.aud.iter().any(|a| a == AUD), "{:?}", t.aud);
        assert!(t.exp > 0);
    }
});
