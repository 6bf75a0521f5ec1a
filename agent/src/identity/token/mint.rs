//! `mint` sources: where no identity provider exists, Warden signs a
//! short-lived EdDSA (Ed25519) JWT per connection that binds what the kernel
//! and `/proc` said about the caller. The host key is generated at first use
//! and kept in `<dir>/identity.key` (PKCS#8 PEM, mode 0600, created with
//! O_EXCL and linked into place, so it is never half-written and two
//! starting agents agree on one key). [`Minter::jwks`] publishes the public
//! key, with an RFC 7638 thumbprint as kid, for collectors.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::TryRngCore;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::validate::now_secs;
use super::{TokenError, ValidatedToken};

/// The key file's name inside the key directory.
pub const KEY_FILE_NAME: &str = "identity.key";
/// Longest TTL of a minted token.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest key file read (a PKCS#8 Ed25519 PEM is ~170 bytes).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// What a minted token binds, per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MintClaims {
    pub account: String,
    pub pid: u32,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
    /// The caller's cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

#[derive(Serialize)]
struct MintedPayload<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    host: &'a str,
    #[serde(flatten)]
    bound: &'a MintClaims,
}

/// The host's token signer.
pub struct Minter {
    key_path: PathBuf,
    encoding: EncodingKey,
    /// base64url of the Ed25519 public key.
    public_x: String,
    kid: String,
    host: String,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("key_path", &self.key_path)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// Loads `<dir>/identity.key`, or generates and stores it if absent.
    /// Tokens are issued as `warden:<host>` for `audience`, valid for `ttl`
    /// (1 s to 24 h).
    pub fn load_or_create(
        dir: &Path,
        host: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        if host.is_empty() {
            return Err(TokenError::Config("mint host must not be empty".into()));
        }
        if audience.is_empty() {
            return Err(TokenError::Config("mint audience must not be empty".into()));
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(TokenError::Config(
                "mint ttl must be between 1 s and 24 h".into(),
            ));
        }
        let key_path = dir.join(KEY_FILE_NAME);
        let key_err = |detail: String| TokenError::SigningKey {
            path: key_path.clone(),
            detail,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| key_err(format!("creating the key directory: {e}")))?;
        let signing = match read_key(&key_path)? {
            Some(k) => k,
            None => create_key(&key_path)?,
        };
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| key_err(format!("encoding: {e}")))?;
        let public_x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let kid = thumbprint(&public_x);
        Ok(Minter {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public_x,
            kid,
            host: host.to_owned(),
            issuer: format!("warden:{host}"),
            audience: audience.to_owned(),
            ttl,
            key_path,
        })
    }

    /// The key id (RFC 7638 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The issuer minted tokens carry: `warden:<host>`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token for one connection; returns it with what it says.
    pub fn mint(&self, claims: &MintClaims) -> Result<(String, ValidatedToken), TokenError> {
        if claims.account.is_empty() {
            return Err(TokenError::Mint("account must not be empty".into()));
        }
        let now = now_secs();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let mut jti = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut jti)
            .map_err(|e| TokenError::Mint(format!("no randomness for jti: {e}")))?;
        let payload = MintedPayload {
            iss: &self.issuer,
            sub: format!("{}:{}", self.issuer, claims.account),
            aud: &self.audience,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: URL_SAFE_NO_PAD.encode(jti),
            host: &self.host,
            bound: claims,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &payload, &self.encoding)
            .map_err(|e| TokenError::Mint(format!("signing: {e}")))?;
        let validated = ValidatedToken {
            iss: self.issuer.clone(),
            sub: payload.sub,
            aud: vec![self.audience.clone()],
            jti: Some(payload.jti),
            exp: payload.exp,
            iat: Some(now),
            kid: Some(self.kid.clone()),
            alg: "EdDSA".into(),
        };
        Ok((token, validated))
    }

    /// The public JWKS (one OKP/Ed25519 key) that verifies minted tokens.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.public_x,
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key (members in
/// lexicographic order, no whitespace), base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The stored key, `None` if there is none; refuses a key file others can
/// read, a symlink, or content that is not an Ed25519 PKCS#8 PEM.
fn read_key(path: &Path) -> Result<Option<SigningKey>, TokenError> {
    let key_err = |detail: String| TokenError::SigningKey {
        path: path.to_owned(),
        detail,
    };
    // fsutil::read_secret: no symlink, a regular file, the agent's own, 0600.
    let Some(bytes) =
        crate::fsutil::read_secret_optional(path).map_err(|e| key_err(e.to_string()))?
    else {
        return Ok(None);
    };
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(key_err(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
    }
    let pem = String::from_utf8(bytes).map_err(|_| key_err("not UTF-8 text".into()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|e| key_err(format!("not an Ed25519 PKCS#8 PEM key: {e}")))
}

/// Generates a key and links it into place atomically; if another process
/// got there first, its key is used.
fn create_key(path: &Path) -> Result<SigningKey, TokenError> {
    let key_err = |detail: String| TokenError::SigningKey {
        path: path.to_owned(),
        detail,
    };
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| key_err(format!("no randomness: {e}")))?;
    let signing = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| key_err(format!("encoding: {e}")))?;

    match crate::fsutil::create_exclusive(path, pem.as_bytes(), 0o600) {
        Ok(true) => {
            tracing::info!(key.path = %path.display(), "generated the identity token signing key");
            Ok(signing)
        }
        // Another agent got there first: use its key.
        Ok(false) => read_key(path)?.ok_or_else(|| key_err("vanished while being created".into())),
        Err(e) => Err(key_err(format!("storing: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::verify_with_jwks;
    use super::*;

    const AUD: &str = "collector";

    fn claims() -> MintClaims {
        MintClaims {
            account: "billing".into(),
            pid: 4242,
            uid: 1000,
            exe_sha256: Some("ab".repeat(32)),
            cgroup: Some("/system.slice/billing.service".into()),
        }
    }

    fn payload(token: &str) -> Value {
        let p = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn minted_tokens_verify_with_the_published_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let m =
            Minter::load_or_create(dir.path(), "db-host-1", AUD, Duration::from_secs(300)).unwrap();
        let (token, minted) = m.mint(&claims()).unwrap();
        let v = verify_with_jwks(&token, &m.jwks(), "warden:db-host-1", AUD).unwrap();
        assert_eq!(v, minted);
        assert_eq!(v.sub, "warden:db-host-1:billing");
        assert_eq!(v.alg, "EdDSA");
        assert_eq!(v.kid.as_deref(), Some(m.kid()));
        assert_eq!(v.exp - v.iat.unwrap(), 300);
        let p = payload(&token);
        assert_eq!(p["host"], "db-host-1");
        assert_eq!(p["account"], "billing");
        assert_eq!(p["pid"], 4242);
        assert_eq!(p["uid"], 1000);
        assert_eq!(p["exe_sha256"], "ab".repeat(32));
        assert_eq!(p["cgroup"], "/system.slice/billing.service");
        assert_eq!(p["nbf"], p["iat"]);
        // jti is random per token.
        let (t2, v2) = m.mint(&claims()).unwrap();
        assert_ne!(v2.jti, v.jti);
        assert_ne!(t2, token);
        // The wrong audience or issuer is refused.
        assert_eq!(
            verify_with_jwks(&token, &m.jwks(), "warden:db-host-1", "other")
                .unwrap_err()
                .reason(),
            "token_wrong_audience"
        );
        assert_eq!(
            verify_with_jwks(&token, &m.jwks(), "warden:other", AUD)
                .unwrap_err()
                .reason(),
            "token_wrong_issuer"
        );
        let jwk = &m.jwks()["keys"][0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        assert!(jwk.get("d").is_none(), "no private part in the JWKS");
    }

    #[test]
    fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let keydir = dir.path().join("keys");
        let m1 = Minter::load_or_create(&keydir, "h", AUD, Duration::from_secs(60)).unwrap();
        let path = keydir.join(KEY_FILE_NAME);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let leftovers: Vec<_> = std::fs::read_dir(&keydir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [KEY_FILE_NAME]);
        let m2 = Minter::load_or_create(&keydir, "h", AUD, Duration::from_secs(60)).unwrap();
        assert_eq!(m1.kid(), m2.kid());
        let (t, _) = m1.mint(&claims()).unwrap();
        verify_with_jwks(&t, &m2.jwks(), "warden:h", AUD).unwrap();
    }

    #[test]
    fn tokens_of_another_key_fail() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let m1 = Minter::load_or_create(d1.path(), "h", AUD, Duration::from_secs(60)).unwrap();
        let m2 = Minter::load_or_create(d2.path(), "h", AUD, Duration::from_secs(60)).unwrap();
        assert_ne!(m1.kid(), m2.kid());
        let (t2, _) = m2.mint(&claims()).unwrap();
        assert_eq!(
            verify_with_jwks(&t2, &m1.jwks(), "warden:h", AUD)
                .unwrap_err()
                .reason(),
            "token_unknown_kid"
        );
        // m1's key published under m2's kid: the signature does not verify.
        let mut jwks = m1.jwks();
        jwks["keys"][0]["kid"] = json!(m2.kid());
        assert_eq!(
            verify_with_jwks(&t2, &jwks, "warden:h", AUD)
                .unwrap_err()
                .reason(),
            "token_bad_signature"
        );
    }

    #[test]
    fn unsafe_or_broken_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        Minter::load_or_create(dir.path(), "h", AUD, Duration::from_secs(60)).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Minter::load_or_create(dir.path(), "h", AUD, Duration::from_secs(60)).unwrap_err();
        assert_eq!(e.reason(), "token_signing_key_invalid");
        assert!(e.to_string().contains("0644"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Minter::load_or_create(dir.path(), "h", AUD, Duration::from_secs(60)).unwrap_err();
        assert_eq!(e.reason(), "token_signing_key_invalid");

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join(KEY_FILE_NAME)).unwrap();
        let e = Minter::load_or_create(dir.path(), "h", AUD, Duration::from_secs(60)).unwrap_err();
        assert_eq!(e.reason(), "token_signing_key_invalid");
        assert!(!target.exists());
    }

    #[test]
    fn mint_config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        for (host, aud, ttl) in [
            ("", AUD, 60),
            ("h", "", 60),
            ("h", AUD, 0),
            ("h", AUD, 24 * 3600 + 1),
        ] {
            let e = Minter::load_or_create(dir.path(), host, aud, Duration::from_secs(ttl))
                .unwrap_err();
            assert_eq!(e.reason(), "token_config_invalid");
        }
        let m = Minter::load_or_create(dir.path(), "h", AUD, Duration::from_secs(60)).unwrap();
        let mut c = claims();
        c.account.clear();
        assert_eq!(m.mint(&c).unwrap_err().reason(), "token_mint_failed");
        // Optional bindings are omitted, not null.
        c.account = "a".into();
        c.exe_sha256 = None;
        c.cgroup = None;
        let (t, _) = m.mint(&c).unwrap();
        let p = payload(&t);
        assert!(p.get("exe_sha256").is_none() && p.get("cgroup").is_none());
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3: thumbprint of the example Ed25519 key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
