//! JSON Web Key Sets: parsing JWKs into verification keys (RSA ≥ 2048 bits,
//! EC P-256/P-384, Ed25519; symmetric and encryption keys are skipped), the
//! per-source key cache keyed by (issuer, kid), and fetching from a file or
//! an HTTPS URL (blocking client on the blocking pool, one fetch at a time,
//! at most one per cool-down). Keys a refresh no longer lists are kept for
//! the configured maximum token lifetime, so tokens they signed keep
//! validating until they expire.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::error::clip;
use super::validate::alg_name;
use super::{JwksSource, TokenError};

/// Base64url, padded or not (JWKS publishers differ).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Largest JWKS document read, in bytes.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Whole-request limit for one HTTPS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The key types a token algorithm can be verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether this key type is the one `alg` is defined over.
    pub fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyKind::P256, Algorithm::ES256)
                | (KeyKind::P384, Algorithm::ES384)
                | (KeyKind::Ed25519, Algorithm::EdDSA)
        )
    }

    /// An algorithm of this key type, to check the key material at load.
    fn probe_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// One usable verification key from a JWKS.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Picks, among the keys published under the token's kid, the one that fits
/// the token's algorithm (key type, and the JWK's `alg` when present).
fn choose<'a>(
    candidates: impl IntoIterator<Item = &'a VerifyKey>,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<DecodingKey, TokenError> {
    let mut any = false;
    let mut type_fits = false;
    for k in candidates {
        any = true;
        if k.kind.fits(alg) {
            type_fits = true;
            if k.alg.is_none_or(|a| a == alg) {
                return Ok(k.key.clone());
            }
        }
    }
    if !any {
        return Err(TokenError::UnknownKid { kid: kid.map(clip) });
    }
    Err(TokenError::KeyMismatch {
        kid: kid.map(clip),
        alg: alg_name(alg).into(),
        detail: if type_fits {
            "the key's own alg differs from the token's"
        } else {
            "the key type does not fit the algorithm"
        },
    })
}

/// The usable keys of one JWKS document, by kid (`None`: a JWK without kid).
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<(Option<String>, VerifyKey)>,
}

impl KeySet {
    /// Parses a JWKS document; fails when it is not one or has no usable key.
    pub fn from_slice(bytes: &[u8], source_name: &str) -> Result<Self, TokenError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| TokenError::JwksInvalid {
            source_name: source_name.to_owned(),
            detail: format!("not JSON: {e}"),
        })?;
        Self::from_value(&v, source_name)
    }

    pub fn from_value(v: &Value, source_name: &str) -> Result<Self, TokenError> {
        let invalid = |detail: String| TokenError::JwksInvalid {
            source_name: source_name.to_owned(),
            detail,
        };
        let Some(items) = v.get("keys").and_then(Value::as_array) else {
            return Err(invalid("no \"keys\" array".into()));
        };
        let mut keys = Vec::with_capacity(items.len());
        let mut skipped = 0usize;
        for item in items {
            match parse_jwk(item) {
                Ok(k) => keys.push(k),
                Err(why) => {
                    skipped += 1;
                    let kid = item.get("kid").and_then(Value::as_str).map(clip);
                    tracing::debug!(jwks.source = %source_name, jwk.kid = ?kid, jwk.skipped = why, "JWK not used");
                }
            }
        }
        if keys.is_empty() {
            return Err(invalid(format!(
                "no usable signing key ({skipped} skipped)"
            )));
        }
        Ok(KeySet { keys })
    }

    /// The key for a token's kid and algorithm.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        choose(
            self.keys
                .iter()
                .filter(|(k, _)| k.as_deref() == kid)
                .map(|(_, v)| v),
            kid,
            alg,
        )
    }
}

fn b64(v: &Value, field: &'static str) -> Result<Vec<u8>, &'static str> {
    let s = v.get(field).and_then(Value::as_str).ok_or(field)?;
    B64URL.decode(s).map_err(|_| "a key field is not base64url")
}

/// One JWK to a verification key, or why it is not used.
fn parse_jwk(v: &Value) -> Result<(Option<String>, VerifyKey), &'static str> {
    if !v.is_object() {
        return Err("not an object");
    }
    match v.get("use") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not \"sig\""),
    }
    if let Some(ops) = v.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("key_ops lacks \"verify\"");
        }
    }
    let kid = match v.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("kid is not a string"),
    };
    let alg = match v.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match Algorithm::from_str(s) {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                return Err("HMAC key");
            }
            Ok(a) => Some(a),
            Err(_) => return Err("alg is not a signature algorithm"),
        },
        Some(_) => return Err("alg is not a string"),
    };
    let kty = v.get("kty").and_then(Value::as_str).ok_or("no kty")?;
    let (kind, key) = match kty {
        "RSA" => {
            let n = b64(v, "n")?;
            let e = b64(v, "e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err("RSA modulus shorter than 2048 bits");
            }
            if e.is_empty() {
                return Err("RSA exponent empty");
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, len) = match v.get("crv").and_then(Value::as_str) {
                Some("P-256") => (KeyKind::P256, 32),
                Some("P-384") => (KeyKind::P384, 48),
                _ => return Err("EC curve is not P-256 or P-384"),
            };
            let x = b64(v, "x")?;
            let y = b64(v, "y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinate length does not fit the curve");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if v.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("OKP curve is not Ed25519");
            }
            let x = b64(v, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key is not 32 bytes");
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => return Err("symmetric keys are never used"),
        _ => return Err("unsupported kty"),
    };
    // The verifier parses the key: a point off the curve or a bad modulus is
    // caught here rather than on the first token (a wrong signature on a good
    // key is Ok(false)).
    if jsonwebtoken::crypto::verify("", b"warden-probe", &key, kind.probe_alg()).is_err() {
        return Err("key material does not parse");
    }
    Ok((kid, VerifyKey { kind, alg, key }))
}

/// Where a JWKS comes from, ready to fetch.
pub(crate) enum Fetcher {
    File(PathBuf),
    Url { url: String, agent: ureq::Agent },
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fetcher({})", self.name())
    }
}

impl Fetcher {
    /// Checks the source and, for a URL, builds the HTTPS client (reading
    /// the CA file now, so a bad one is a configuration error).
    pub fn new(src: &JwksSource) -> Result<Self, TokenError> {
        match src {
            JwksSource::File(p) => Ok(Fetcher::File(p.clone())),
            JwksSource::Url { url, ca_file } => {
                let lower = url.to_ascii_lowercase();
                let host = lower.strip_prefix("https://").unwrap_or("");
                if host.is_empty() || host.starts_with('/') {
                    return Err(TokenError::Config(format!(
                        "jwks_url {:?} must be an https:// URL with a host",
                        clip(url)
                    )));
                }
                let roots = match ca_file {
                    // The system's trust store (/etc/ssl/certs and kin).
                    None => ureq::tls::RootCerts::PlatformVerifier,
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            TokenError::Config(format!("jwks CA file {}: {e}", path.display()))
                        })?;
                        let mut certs = Vec::new();
                        for item in ureq::tls::parse_pem(&pem) {
                            match item {
                                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                                Ok(_) => {}
                                Err(e) => {
                                    return Err(TokenError::Config(format!(
                                        "jwks CA file {}: {e}",
                                        path.display()
                                    )));
                                }
                            }
                        }
                        if certs.is_empty() {
                            return Err(TokenError::Config(format!(
                                "jwks CA file {} holds no certificate",
                                path.display()
                            )));
                        }
                        ureq::tls::RootCerts::Specific(Arc::new(certs))
                    }
                };
                let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
                let config = ureq::Agent::config_builder()
                    .tls_config(tls)
                    .https_only(true)
                    .timeout_global(Some(FETCH_TIMEOUT))
                    .max_redirects(3)
                    .build();
                Ok(Fetcher::Url {
                    url: url.clone(),
                    agent: ureq::Agent::new_with_config(config),
                })
            }
        }
    }

    /// The file or URL, for messages.
    pub fn name(&self) -> String {
        match self {
            Fetcher::File(p) => p.display().to_string(),
            Fetcher::Url { url, .. } => redact_url(url),
        }
    }

    /// Reads and parses the JWKS, on the blocking pool.
    pub async fn fetch(&self) -> Result<KeySet, TokenError> {
        let name = self.name();
        let unreachable = |detail: String| TokenError::JwksUnreachable {
            source_name: name.clone(),
            detail,
        };
        let bytes = match self {
            Fetcher::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_limited(&path))
                    .await
                    .map_err(|e| unreachable(format!("read task failed: {e}")))?
            }
            Fetcher::Url { url, agent } => {
                let (url, agent) = (url.clone(), agent.clone());
                tokio::task::spawn_blocking(move || get_limited(&agent, &url))
                    .await
                    .map_err(|e| unreachable(format!("fetch task failed: {e}")))?
            }
        };
        let bytes = bytes.map_err(|f| match f {
            FetchFailure::Unreachable(d) => unreachable(d),
            FetchFailure::TooLarge => TokenError::JwksInvalid {
                source_name: name.clone(),
                detail: format!("larger than {MAX_JWKS_BYTES} bytes"),
            },
        })?;
        KeySet::from_slice(&bytes, &name)
    }
}

/// The URL without user information (`https://user:secret@host/…`) or
/// query, for messages and logs.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return clip(url);
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

enum FetchFailure {
    Unreachable(String),
    TooLarge,
}

fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, FetchFailure> {
    let f = std::fs::File::open(path).map_err(|e| FetchFailure::Unreachable(e.to_string()))?;
    let mut buf = Vec::new();
    f.take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FetchFailure::Unreachable(e.to_string()))?;
    if buf.len() as u64 > MAX_JWKS_BYTES {
        return Err(FetchFailure::TooLarge);
    }
    Ok(buf)
}

fn get_limited(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, FetchFailure> {
    let mut resp = agent
        .get(url)
        .header("accept", "application/json, application/jwk-set+json")
        .call()
        .map_err(|e| FetchFailure::Unreachable(e.to_string()))?;
    resp.body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => FetchFailure::TooLarge,
            e => FetchFailure::Unreachable(e.to_string()),
        })
}

/// A cached key and when a fetched JWKS last listed it.
#[derive(Debug)]
struct Entry {
    key: VerifyKey,
    last_seen: Instant,
    /// Listed by the latest successful fetch.
    current: bool,
}

#[derive(Debug, Default)]
struct CacheState {
    keys: HashMap<(String, Option<String>), Vec<Entry>>,
    /// A fetch has succeeded at least once.
    loaded: bool,
    last_attempt: Option<Instant>,
    last_error: Option<TokenError>,
}

/// The keys of one token source's JWKS, keyed by (issuer, kid).
#[derive(Debug)]
pub(crate) struct JwksCache {
    issuer: String,
    fetcher: Fetcher,
    cooldown: Duration,
    retention: Duration,
    state: Mutex<CacheState>,
    /// One fetch at a time; waiters re-check the cache after it.
    fetch_gate: tokio::sync::Mutex<()>,
    /// Test clock offset, seconds (moving "now" forward rather than
    /// instants back, which could underflow on a freshly booted machine).
    #[cfg(test)]
    skew_secs: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    pub fn new(issuer: String, fetcher: Fetcher, cooldown: Duration, retention: Duration) -> Self {
        JwksCache {
            issuer,
            fetcher,
            cooldown,
            retention,
            state: Mutex::new(CacheState::default()),
            fetch_gate: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            skew_secs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.skew()
    }

    #[cfg(test)]
    fn skew(&self) -> Duration {
        Duration::from_secs(self.skew_secs.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[cfg(not(test))]
    fn skew(&self) -> Duration {
        Duration::ZERO
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is consistent after every statement that changes it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key for a token's kid and algorithm. A kid not in the cache
    /// triggers a fetch unless one was attempted within the cool-down.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, TokenError> {
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        let _gate = self.fetch_gate.lock().await;
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        {
            let mut st = self.state();
            let now = self.now();
            if st
                .last_attempt
                .is_some_and(|t| now.saturating_duration_since(t) < self.cooldown)
            {
                return Err(self.miss_error(&st, kid));
            }
            st.last_attempt = Some(now);
        }
        let fetched = self.fetcher.fetch().await;
        self.absorb(fetched);
        self.lookup(kid, alg)
            .unwrap_or_else(|| Err(self.miss_error(&self.state(), kid)))
    }

    /// Why a kid is not available: unknown once a JWKS was loaded,
    /// otherwise the last fetch failure.
    fn miss_error(&self, st: &CacheState, kid: Option<&str>) -> TokenError {
        if st.loaded {
            TokenError::UnknownKid { kid: kid.map(clip) }
        } else {
            st.last_error
                .clone()
                .unwrap_or_else(|| TokenError::JwksUnreachable {
                    source_name: self.fetcher.name(),
                    detail: "not fetched yet".into(),
                })
        }
    }

    /// `None` when no key is cached under the kid (a retired key past its
    /// retention is dropped on the way).
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, TokenError>> {
        let mut st = self.state();
        let id = (self.issuer.clone(), kid.map(str::to_owned));
        let now = self.now();
        let entries = st.keys.get_mut(&id)?;
        entries
            .retain(|e| e.current || now.saturating_duration_since(e.last_seen) < self.retention);
        if entries.is_empty() {
            st.keys.remove(&id);
            return None;
        }
        Some(choose(entries.iter().map(|e| &e.key), kid, alg))
    }

    /// Merges a fetch result: listed keys replace what was cached under
    /// their kid; unlisted ones are retired and kept for the retention.
    fn absorb(&self, fetched: Result<KeySet, TokenError>) {
        let mut st = self.state();
        let set = match fetched {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(jwks.source = %self.fetcher.name(), jwks.cached = st.loaded, error = %e, "JWKS fetch failed");
                st.last_error = Some(e);
                return;
            }
        };
        let now = self.now();
        for entries in st.keys.values_mut() {
            for e in entries.iter_mut() {
                e.current = false;
            }
        }
        let mut fresh: HashMap<(String, Option<String>), Vec<Entry>> = HashMap::new();
        for (kid, key) in set.keys {
            fresh
                .entry((self.issuer.clone(), kid))
                .or_default()
                .push(Entry {
                    key,
                    last_seen: now,
                    current: true,
                });
        }
        let listed = fresh.len();
        st.keys.extend(fresh);
        let retention = self.retention;
        st.keys.retain(|_, entries| {
            entries.retain(|e| e.current || now.saturating_duration_since(e.last_seen) < retention);
            !entries.is_empty()
        });
        let retired = st.keys.len() - listed;
        tracing::debug!(jwks.source = %self.fetcher.name(), jwks.kids = listed, jwks.retired = retired, "JWKS refreshed");
        st.loaded = true;
        st.last_error = None;
    }

    /// Test hook: lets `by` pass on the cache's clock.
    #[cfg(test)]
    pub fn age_by(&self, by: Duration) {
        self.skew_secs
            .fetch_add(by.as_secs(), std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub fn cached_kids(&self) -> Vec<Option<String>> {
        let mut kids: Vec<_> = self.state().keys.keys().map(|(_, k)| k.clone()).collect();
        kids.sort();
        kids
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit;
    use super::*;

    #[test]
    fn jwk_parsing_skips_what_cannot_verify() {
        let rsa = testkit::rsa_a("r1");
        let ec = testkit::p256("e1");
        let ed = testkit::ed25519("o1");
        let mut enc = rsa.jwk.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let mut hmac_alg = ec.jwk.clone();
        hmac_alg["alg"] = json!("HS256");
        let mut bad_point = ec.jwk.clone();
        bad_point["kid"] = json!("bad");
        bad_point["x"] = json!(B64URL.encode([1u8; 32]));
        let mut short_rsa = rsa.jwk.clone();
        short_rsa["n"] = json!(B64URL.encode([0xffu8; 128]));
        let mut wrong_len = ed.jwk.clone();
        wrong_len["x"] = json!(B64URL.encode([7u8; 31]));
        let doc = json!({"keys": [
            rsa.jwk, ec.jwk, ed.jwk, enc, hmac_alg, bad_point, short_rsa, wrong_len,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "r1", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
            "not an object"
        ]});
        let set = KeySet::from_value(&doc, "t").unwrap();
        let kids: Vec<_> = set.keys.iter().map(|(k, _)| k.clone().unwrap()).collect();
        assert_eq!(kids, ["r1", "e1", "o1"]);
        assert!(set.select(Some("r1"), Algorithm::RS256).is_ok());
        assert!(set.select(Some("r1"), Algorithm::PS256).is_ok());
        assert!(set.select(Some("o1"), Algorithm::EdDSA).is_ok());
        assert_eq!(
            set.select(Some("e1"), Algorithm::ES384)
                .unwrap_err()
                .reason(),
            "token_key_mismatch"
        );
        assert_eq!(
            set.select(Some("sym"), Algorithm::RS256)
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        assert_eq!(
            set.select(None, Algorithm::RS256).unwrap_err().reason(),
            "token_unknown_kid"
        );
    }

    #[test]
    fn jwk_alg_must_match_header_alg() {
        let mut rsa = testkit::rsa_a("r1").jwk;
        rsa["alg"] = json!("RS256");
        let set = KeySet::from_value(&json!({"keys": [rsa]}), "t").unwrap();
        assert!(set.select(Some("r1"), Algorithm::RS256).is_ok());
        let e = set.select(Some("r1"), Algorithm::PS256).unwrap_err();
        assert_eq!(e.reason(), "token_key_mismatch");
        assert!(e.to_string().contains("own alg"), "{e}");
    }

    #[test]
    fn jwks_documents_without_usable_keys_are_invalid() {
        for doc in [
            json!([]),
            json!({"keys": {}}),
            json!({"keys": []}),
            json!({"keys": [{"kty": "oct", "k": "AA"}]}),
        ] {
            assert_eq!(
                KeySet::from_value(&doc, "t").unwrap_err().reason(),
                "jwks_invalid",
                "{doc}"
            );
        }
        assert_eq!(
            KeySet::from_slice(b"<html>", "t").unwrap_err().reason(),
            "jwks_invalid"
        );
        // Padded base64url is accepted.
        let mut ed = testkit::ed25519("p").jwk;
        let x = ed["x"].as_str().unwrap().to_string() + "=";
        ed["x"] = json!(x);
        KeySet::from_value(&json!({"keys": [ed]}), "t").unwrap();
    }

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        assert_eq!(
            redact_url("https://user:pw@idp.example:8443/keys?token=x#f"),
            "https://idp.example:8443/keys"
        );
        assert_eq!(redact_url("https://idp.example"), "https://idp.example");
    }

    #[test]
    fn url_sources_must_be_https() {
        for url in [
            "http://idp.example/jwks",
            "https://",
            "https:///x",
            "idp.example",
        ] {
            let e = Fetcher::new(&JwksSource::Url {
                url: url.into(),
                ca_file: None,
            })
            .unwrap_err();
            assert_eq!(e.reason(), "token_config_invalid", "{url}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "no certificate here").unwrap();
        let e = Fetcher::new(&JwksSource::Url {
            url: "https://idp.example/jwks".into(),
            ca_file: Some(ca),
        })
        .unwrap_err();
        assert_eq!(e.reason(), "token_config_invalid");
        let e = Fetcher::new(&JwksSource::Url {
            url: "https://idp.example/jwks".into(),
            ca_file: Some(dir.path().join("missing.pem")),
        })
        .unwrap_err();
        assert_eq!(e.reason(), "token_config_invalid");
    }

    /// Retention: a key dropped from the JWKS is served until the retention
    /// has passed since it was last listed, then dropped.
    #[tokio::test]
    async fn retired_keys_are_kept_for_the_retention_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let a = testkit::ed25519("a");
        let b = testkit::ed25519("b");
        testkit::write_atomic(&path, &testkit::jwks(&[&a]).to_string());
        let cache = JwksCache::new(
            "iss".into(),
            Fetcher::File(path.clone()),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        cache.key_for(Some("a"), Algorithm::EdDSA).await.unwrap();
        testkit::write_atomic(&path, &testkit::jwks(&[&b]).to_string());
        // Within the cool-down: no refetch, b is unknown.
        assert_eq!(
            cache
                .key_for(Some("b"), Algorithm::EdDSA)
                .await
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        cache.age_by(Duration::from_secs(31));
        cache.key_for(Some("b"), Algorithm::EdDSA).await.unwrap();
        // a is retired but still trusted.
        cache.key_for(Some("a"), Algorithm::EdDSA).await.unwrap();
        assert_eq!(cache.cached_kids(), [Some("a".into()), Some("b".into())]);
        cache.age_by(Duration::from_secs(3600));
        // b is current (listed by the last fetch) and stays; a is gone, and
        // its miss falls within no cool-down (aged too), so it refetches and
        // still does not find it.
        cache.key_for(Some("b"), Algorithm::EdDSA).await.unwrap();
        assert_eq!(
            cache
                .key_for(Some("a"), Algorithm::EdDSA)
                .await
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        assert_eq!(cache.cached_kids(), [Some("b".into())]);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_cache_and_respects_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let a = testkit::ed25519("a");
        let cache = JwksCache::new(
            "iss".into(),
            Fetcher::File(path.clone()),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        // Nothing there yet: unreachable, and within the cool-down the
        // failure is repeated without a new read.
        let e = cache
            .key_for(Some("a"), Algorithm::EdDSA)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "jwks_unreachable");
        testkit::write_atomic(&path, &testkit::jwks(&[&a]).to_string());
        let e = cache
            .key_for(Some("a"), Algorithm::EdDSA)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "jwks_unreachable");
        cache.age_by(Duration::from_secs(30));
        cache.key_for(Some("a"), Algorithm::EdDSA).await.unwrap();
        // A broken refresh keeps what was cached.
        std::fs::write(&path, "{").unwrap();
        cache.age_by(Duration::from_secs(30));
        assert_eq!(
            cache
                .key_for(Some("zz"), Algorithm::EdDSA)
                .await
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        cache.key_for(Some("a"), Algorithm::EdDSA).await.unwrap();
    }

    #[tokio::test]
    async fn invalid_jwks_with_nothing_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, "{\"keys\": 5}").unwrap();
        let cache = JwksCache::new(
            "iss".into(),
            Fetcher::File(path),
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        let e = cache
            .key_for(Some("a"), Algorithm::EdDSA)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "jwks_invalid");
    }
}
