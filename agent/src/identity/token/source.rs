//! `token_file` sources: [`TokenFileConfig`] (checked once, at
//! [`TokenFileSource::new`]) and [`TokenFileSource`], which re-reads the
//! token file when its identity changes (device, inode, size, mtime, ctime —
//! a Kubernetes projected token is swapped by symlink, a rotated file by
//! rename, both give a new inode) and validates the current token against
//! its JWKS cache. File reads and JWKS fetches run on the blocking pool.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::jwks::{Fetcher, JwksCache};
use super::validate::{MAX_TOKEN_BYTES, Policy, precheck, verify_signed};
use super::{
    DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_LIFETIME, DEFAULT_REFRESH_COOLDOWN,
    SUPPORTED_ALGORITHMS, TokenError, ValidatedToken,
};

/// Longest `max_token_lifetime` a configuration may ask for.
const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest `refresh_cooldown` a configuration may ask for.
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Where the keys that sign the tokens are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk (re-read on an unknown kid).
    File(PathBuf),
    /// A JWKS served over HTTPS. `ca_file` (PEM) replaces the system's
    /// trust store for this server.
    Url {
        url: String,
        ca_file: Option<PathBuf>,
    },
}

/// One `token_file` source as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFileConfig {
    /// The JWT on disk.
    pub token_file: PathBuf,
    pub jwks: JwksSource,
    /// Required exact `iss`.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// Exact `sub`, when set.
    pub subject: Option<String>,
    /// `sub` must be `spiffe://<domain>/<path>`, when set.
    pub spiffe_trust_domain: Option<String>,
    /// Allowed header algorithms, a subset of [`SUPPORTED_ALGORITHMS`].
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`, `nbf`, `iat`; at most 60.
    pub leeway_secs: u64,
    /// Shortest interval between JWKS fetches caused by unknown kids.
    pub refresh_cooldown: Duration,
    /// How long a key that left the JWKS is still trusted.
    pub max_token_lifetime: Duration,
}

impl TokenFileConfig {
    /// A configuration with the defaults: every supported algorithm, 30 s
    /// leeway, 30 s cool-down, 24 h maximum token lifetime, no subject rule.
    pub fn new(
        token_file: impl Into<PathBuf>,
        jwks: JwksSource,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        TokenFileConfig {
            token_file: token_file.into(),
            jwks,
            issuer: issuer.into(),
            audience: audience.into(),
            subject: None,
            spiffe_trust_domain: None,
            algorithms: SUPPORTED_ALGORITHMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            refresh_cooldown: DEFAULT_REFRESH_COOLDOWN,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }
}

/// The identity of the token file's content as `stat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

struct CachedToken {
    stamp: FileStamp,
    token: Arc<str>,
}

struct Inner {
    token_file: PathBuf,
    policy: Policy,
    jwks: JwksCache,
    current: Mutex<Option<CachedToken>>,
}

/// A validated-on-demand token file. Cheap to clone; share it freely.
#[derive(Clone)]
pub struct TokenFileSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenFileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFileSource")
            .field("token_file", &self.inner.token_file)
            .field("issuer", &self.inner.policy.issuer)
            .field("audience", &self.inner.policy.audience)
            .finish_non_exhaustive()
    }
}

impl TokenFileSource {
    /// Checks the configuration (leeway ≤ 60 s, algorithms from the allowed
    /// set, https JWKS URL, readable CA file, …). Reads no token and fetches
    /// no JWKS yet: the first validation does.
    pub fn new(cfg: TokenFileConfig) -> Result<Self, TokenError> {
        let policy = Policy::new(
            &cfg.issuer,
            &cfg.audience,
            cfg.subject.as_deref(),
            cfg.spiffe_trust_domain.as_deref(),
            &cfg.algorithms,
            cfg.leeway_secs,
        )?;
        if cfg.token_file.as_os_str().is_empty() {
            return Err(TokenError::Config("token_file must not be empty".into()));
        }
        if cfg.refresh_cooldown > MAX_COOLDOWN {
            return Err(TokenError::Config(
                "refresh_cooldown must be at most 24 h".into(),
            ));
        }
        if cfg.max_token_lifetime.is_zero() || cfg.max_token_lifetime > MAX_RETENTION {
            return Err(TokenError::Config(
                "max_token_lifetime must be more than 0 and at most 30 days".into(),
            ));
        }
        let fetcher = Fetcher::new(&cfg.jwks)?;
        let jwks = JwksCache::new(
            cfg.issuer.clone(),
            fetcher,
            cfg.refresh_cooldown,
            cfg.max_token_lifetime,
        );
        Ok(TokenFileSource {
            inner: Arc::new(Inner {
                token_file: cfg.token_file,
                policy,
                jwks,
                current: Mutex::new(None),
            }),
        })
    }

    /// The token file this source reads.
    pub fn token_file(&self) -> &Path {
        &self.inner.token_file
    }

    /// Reads the token file if it changed since the last call, and validates
    /// the token in it.
    pub async fn validate_current(&self) -> Result<ValidatedToken, TokenError> {
        let token = self.current_token().await?;
        self.validate(&token).await
    }

    /// Validates a token given directly (e.g. presented by a client) with
    /// this source's policy and keys.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, TokenError> {
        let policy = &self.inner.policy;
        let header = precheck(token, policy)?;
        let key = self
            .inner
            .jwks
            .key_for(header.kid.as_deref(), header.alg)
            .await?;
        verify_signed(token, &header, &key, policy)
    }

    async fn current_token(&self) -> Result<Arc<str>, TokenError> {
        let known = self.lock_current().as_ref().map(|c| c.stamp);
        let path = self.inner.token_file.clone();
        let read = tokio::task::spawn_blocking(move || read_if_changed(&path, known))
            .await
            .map_err(|e| TokenError::Unreadable {
                path: self.inner.token_file.clone(),
                detail: format!("read task failed: {e}"),
            })??;
        let mut current = self.lock_current();
        match (read, current.as_ref()) {
            (Some((stamp, token)), _) => {
                tracing::debug!(token.file = %self.inner.token_file.display(), "token file (re)read");
                let token: Arc<str> = Arc::from(token);
                *current = Some(CachedToken {
                    stamp,
                    token: token.clone(),
                });
                Ok(token)
            }
            (None, Some(c)) => Ok(c.token.clone()),
            // "Unchanged" needs a stamp we had, and the cache is never
            // emptied once filled; answer as for a vanished file regardless.
            (None, None) => Err(TokenError::FileMissing {
                path: self.inner.token_file.clone(),
            }),
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<CachedToken>> {
        // Replaced whole under the lock: never half-written.
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn jwks_cache(&self) -> &JwksCache {
        &self.inner.jwks
    }
}

/// `None` when the file still has the stamp `known`; otherwise its new
/// stamp and trimmed content (stamp and content from the same open file).
fn read_if_changed(
    path: &Path,
    known: Option<FileStamp>,
) -> Result<Option<(FileStamp, String)>, TokenError> {
    let io_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TokenError::FileMissing {
                path: path.to_owned(),
            }
        } else {
            TokenError::Unreadable {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        }
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if known == Some(FileStamp::of(&meta)) {
        return Ok(None);
    }
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(TokenError::Unreadable {
            path: path.to_owned(),
            detail: "not a regular file".into(),
        });
    }
    let mut buf = Vec::new();
    file.take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed {
            detail: "token file larger than 16 KiB",
        });
    }
    let text = String::from_utf8(buf).map_err(|_| TokenError::Malformed {
        detail: "token file is not UTF-8",
    })?;
    Ok(Some((FileStamp::of(&meta), text.trim().to_owned())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testkit::{self, TestKey};
    use super::*;

    /// A temp dir with a token file and a JWKS file.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn token_path(&self) -> PathBuf {
            self.dir.path().join("token")
        }
        fn jwks_path(&self) -> PathBuf {
            self.dir.path().join("jwks.json")
        }
        fn set_token(&self, token: &str) {
            testkit::write_atomic(&self.token_path(), token);
        }
        fn set_keys(&self, keys: &[&TestKey]) {
            testkit::write_atomic(&self.jwks_path(), &testkit::jwks(keys).to_string());
        }
        fn config(&self) -> TokenFileConfig {
            TokenFileConfig::new(
                self.token_path(),
                JwksSource::File(self.jwks_path()),
                testkit::ISS,
                testkit::AUD,
            )
        }
        fn source(&self) -> TokenFileSource {
            TokenFileSource::new(self.config()).unwrap()
        }
        async fn reason_for(&self, src: &TokenFileSource, token: &str) -> &'static str {
            self.set_token(token);
            match src.validate_current().await {
                Ok(v) => panic!("accepted: {v:?}"),
                Err(e) => {
                    assert!(!e.to_string().contains(token), "message carries the token");
                    e.reason()
                }
            }
        }
    }

    #[tokio::test]
    async fn accepts_every_supported_algorithm() {
        let fx = Fixture::new();
        let rsa = testkit::rsa_a("rsa-1");
        let ec256 = testkit::p256("ec256-1");
        let ec384 = testkit::p384("ec384-1");
        let ed = testkit::ed25519("ed-1");
        fx.set_keys(&[&rsa, &ec256, &ec384, &ed]);
        let src = fx.source();
        let cases = [
            (&rsa, jsonwebtoken::Algorithm::RS256, "RS256"),
            (&rsa, jsonwebtoken::Algorithm::RS384, "RS384"),
            (&rsa, jsonwebtoken::Algorithm::RS512, "RS512"),
            (&rsa, jsonwebtoken::Algorithm::PS256, "PS256"),
            (&ec256, jsonwebtoken::Algorithm::ES256, "ES256"),
            (&ec384, jsonwebtoken::Algorithm::ES384, "ES384"),
            (&ed, jsonwebtoken::Algorithm::EdDSA, "EdDSA"),
        ];
        for (key, alg, name) in cases {
            let mut claims = testkit::claims(&format!("sub-{name}"));
            claims["jti"] = json!(format!("jti-{name}"));
            fx.set_token(&testkit::sign_alg(key, alg, &claims));
            let v = src
                .validate_current()
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.alg, name);
            assert_eq!(v.sub, format!("sub-{name}"));
            assert_eq!(v.iss, testkit::ISS);
            assert_eq!(v.aud, vec![testkit::AUD.to_string()]);
            assert_eq!(v.kid.as_deref(), Some(key.kid.as_str()));
            assert_eq!(v.jti, Some(format!("jti-{name}")));
            assert_eq!(v.exp, claims["exp"].as_i64().unwrap());
            assert_eq!(v.iat, claims["iat"].as_i64());
            let json = serde_json::to_value(&v).unwrap();
            assert_eq!(json["alg"], name);
        }
    }

    #[tokio::test]
    async fn refusals_have_distinct_reasons() {
        let fx = Fixture::new();
        let rsa = testkit::rsa_a("rsa-1");
        fx.set_keys(&[&rsa]);
        let src = fx.source();
        let now = testkit::now();
        let good = testkit::claims("system:serviceaccount:prod:app");
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = good.clone();
            f(&mut c);
            testkit::sign(&rsa, &c)
        };
        // Sanity: the unmodified token passes, so each refusal below is due
        // to its one change.
        fx.set_token(&with(&|_| {}));
        src.validate_current().await.unwrap();

        let mut seen = std::collections::BTreeSet::new();
        let cases: Vec<(&str, String)> = vec![
            ("token_expired", with(&|c| c["exp"] = json!(now - 3600))),
            (
                "token_not_yet_valid",
                with(&|c| c["nbf"] = json!(now + 3600)),
            ),
            (
                "token_wrong_issuer",
                with(&|c| c["iss"] = json!("https://other.example")),
            ),
            (
                "token_wrong_audience",
                with(&|c| c["aud"] = json!("someone-else")),
            ),
            (
                "token_audience_missing",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
            (
                "token_missing_claim",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            (
                "token_alg_not_allowed",
                testkit::alg_none_token("rsa-1", &good),
            ),
            (
                "token_unknown_kid",
                testkit::sign(&testkit::rsa_b("rsa-2"), &good),
            ),
            (
                "token_bad_signature",
                testkit::flip_signature_bit(&with(&|_| {})),
            ),
            ("token_malformed", "not-a-jwt".to_string()),
        ];
        for (want, token) in cases {
            assert_eq!(fx.reason_for(&src, &token).await, want);
            seen.insert(want);
        }
        assert_eq!(seen.len(), 10);
    }

    /// The classic confusion: HS256 with the RSA public key (PEM) as the HMAC
    /// secret. The token is a genuine HMAC token for that secret, and it is
    /// refused on its header before any key is touched.
    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_refused() {
        let fx = Fixture::new();
        let rsa = testkit::rsa_a("rsa-1");
        fx.set_keys(&[&rsa]);
        let src = fx.source();
        let claims = testkit::claims("app");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let secret = rsa.public_pem.as_bytes();
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap();
        let mut hv = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        hv.set_audience(&[testkit::AUD]);
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret),
            &hv,
        )
        .expect("the attack token is a valid HMAC token for the PEM");
        assert_eq!(fx.reason_for(&src, &token).await, "token_alg_not_allowed");
        // Also with the raw DER modulus-exponent form as secret, and HS512.
        header.alg = jsonwebtoken::Algorithm::HS512;
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(rsa.public_der.as_slice()),
        )
        .unwrap();
        assert_eq!(fx.reason_for(&src, &token).await, "token_alg_not_allowed");
    }

    #[tokio::test]
    async fn configured_algorithm_subset_is_enforced() {
        let fx = Fixture::new();
        let rsa = testkit::rsa_a("rsa-1");
        let ec = testkit::p256("ec-1");
        fx.set_keys(&[&rsa, &ec]);
        let mut cfg = fx.config();
        cfg.algorithms = vec!["ES256".into()];
        let src = TokenFileSource::new(cfg).unwrap();
        fx.set_token(&testkit::sign(&ec, &testkit::claims("a")));
        src.validate_current().await.unwrap();
        let t = testkit::sign(&rsa, &testkit::claims("a"));
        assert_eq!(fx.reason_for(&src, &t).await, "token_alg_not_allowed");
    }

    #[tokio::test]
    async fn key_type_must_fit_the_header_alg() {
        let fx = Fixture::new();
        let ec = testkit::p256("shared");
        fx.set_keys(&[&ec]);
        let src = fx.source();
        // An RSA-signed token claiming the EC key's kid.
        let rsa = testkit::rsa_a("shared");
        let t = testkit::sign(&rsa, &testkit::claims("a"));
        assert_eq!(fx.reason_for(&src, &t).await, "token_key_mismatch");
    }

    #[tokio::test]
    async fn signature_bit_flips_fail_for_every_key_type() {
        let fx = Fixture::new();
        let keys = [
            testkit::rsa_a("r"),
            testkit::p256("e2"),
            testkit::p384("e3"),
            testkit::ed25519("o"),
        ];
        fx.set_keys(&keys.iter().collect::<Vec<_>>());
        let src = fx.source();
        for k in &keys {
            let t = testkit::sign(k, &testkit::claims("a"));
            fx.set_token(&t);
            src.validate_current().await.unwrap();
            let bad = testkit::flip_signature_bit(&t);
            assert_eq!(
                fx.reason_for(&src, &bad).await,
                "token_bad_signature",
                "{}",
                k.kid
            );
            // A payload edit (sub changed) with the old signature fails too.
            let forged = testkit::replace_payload(&t, &testkit::claims("admin"));
            assert_eq!(
                fx.reason_for(&src, &forged).await,
                "token_bad_signature",
                "{}",
                k.kid
            );
        }
        // Another key published under the same kid: bad signature.
        let other = testkit::ed25519("o");
        let t = testkit::sign(&other, &testkit::claims("a"));
        assert_eq!(fx.reason_for(&src, &t).await, "token_bad_signature");
    }

    #[tokio::test]
    async fn subject_rules() {
        let fx = Fixture::new();
        let ed = testkit::ed25519("ed");
        fx.set_keys(&[&ed]);
        let mut cfg = fx.config();
        cfg.subject = Some("system:serviceaccount:prod:app".into());
        let src = TokenFileSource::new(cfg).unwrap();
        fx.set_token(&testkit::sign(
            &ed,
            &testkit::claims("system:serviceaccount:prod:app"),
        ));
        src.validate_current().await.unwrap();
        let t = testkit::sign(&ed, &testkit::claims("system:serviceaccount:prod:other"));
        assert_eq!(fx.reason_for(&src, &t).await, "token_wrong_subject");

        let mut cfg = fx.config();
        cfg.spiffe_trust_domain = Some("prod.example.org".into());
        let src = TokenFileSource::new(cfg).unwrap();
        fx.set_token(&testkit::sign(
            &ed,
            &testkit::claims("spiffe://prod.example.org/ns/app/sa/x"),
        ));
        src.validate_current().await.unwrap();
        let t = testkit::sign(
            &ed,
            &testkit::claims("spiffe://dev.example.org/ns/app/sa/x"),
        );
        assert_eq!(fx.reason_for(&src, &t).await, "token_wrong_subject");
    }

    #[tokio::test]
    async fn token_file_missing_or_unreadable() {
        let fx = Fixture::new();
        let ed = testkit::ed25519("ed");
        fx.set_keys(&[&ed]);
        let src = fx.source();
        let e = src.validate_current().await.unwrap_err();
        assert_eq!(e.reason(), "token_file_missing");
        // A file that was there and vanished is missing again, not cached.
        fx.set_token(&testkit::sign(&ed, &testkit::claims("a")));
        src.validate_current().await.unwrap();
        std::fs::remove_file(fx.token_path()).unwrap();
        assert_eq!(
            src.validate_current().await.unwrap_err().reason(),
            "token_file_missing"
        );
        // A directory where the token should be.
        std::fs::create_dir(fx.token_path()).unwrap();
        assert_eq!(
            src.validate_current().await.unwrap_err().reason(),
            "token_unreadable"
        );
        std::fs::remove_dir(fx.token_path()).unwrap();
        // Empty and oversized files are malformed.
        fx.set_token("\n");
        assert_eq!(
            src.validate_current().await.unwrap_err().reason(),
            "token_malformed"
        );
        fx.set_token(&"a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            src.validate_current().await.unwrap_err().reason(),
            "token_malformed"
        );
    }

    #[tokio::test]
    async fn rewritten_token_file_is_picked_up() {
        let fx = Fixture::new();
        let ed = testkit::ed25519("ed");
        fx.set_keys(&[&ed]);
        let src = fx.source();
        // Replaced by rename (new inode), as kubelet and most writers do.
        fx.set_token(&testkit::sign(&ed, &testkit::claims("first")));
        assert_eq!(src.validate_current().await.unwrap().sub, "first");
        fx.set_token(&testkit::sign(&ed, &testkit::claims("second")));
        assert_eq!(src.validate_current().await.unwrap().sub, "second");
        // Rewritten in place (same inode) with a different length.
        std::fs::write(
            fx.token_path(),
            format!("{}\n", testkit::sign(&ed, &testkit::claims("third-longer"))),
        )
        .unwrap();
        assert_eq!(src.validate_current().await.unwrap().sub, "third-longer");
        // Rewritten in place with the same length and a forced mtime.
        let t4 = testkit::sign(&ed, &testkit::claims("fourth-longe"));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.token_path())
            .unwrap();
        std::io::Write::write_all(&mut &f, format!("{t4}\n").as_bytes()).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        drop(f);
        assert_eq!(src.validate_current().await.unwrap().sub, "fourth-longe");
        // Through a symlink swap, as a projected volume's ..data link.
        let real = fx.dir.path().join("real-token");
        testkit::write_atomic(&real, &testkit::sign(&ed, &testkit::claims("linked")));
        std::fs::remove_file(fx.token_path()).unwrap();
        std::os::unix::fs::symlink(&real, fx.token_path()).unwrap();
        assert_eq!(src.validate_current().await.unwrap().sub, "linked");
    }

    #[tokio::test]
    async fn unknown_kid_refetch_obeys_the_cooldown() {
        let fx = Fixture::new();
        let a = testkit::p256("a");
        let b = testkit::p256("b");
        fx.set_keys(&[&a]);
        let src = fx.source(); // 30 s cool-down
        fx.set_token(&testkit::sign(&a, &testkit::claims("x")));
        src.validate_current().await.unwrap();
        fx.set_keys(&[&b]);
        let tb = testkit::sign(&b, &testkit::claims("x"));
        assert_eq!(fx.reason_for(&src, &tb).await, "token_unknown_kid");
        src.jwks_cache().age_by(Duration::from_secs(29));
        assert_eq!(fx.reason_for(&src, &tb).await, "token_unknown_kid");
        src.jwks_cache().age_by(Duration::from_secs(1));
        fx.set_token(&tb);
        src.validate_current().await.unwrap();
        // a was dropped by the JWKS but is kept: its token still validates.
        fx.set_token(&testkit::sign(&a, &testkit::claims("x")));
        src.validate_current().await.unwrap();
    }

    #[tokio::test]
    async fn jwks_unreachable_with_nothing_cached() {
        let fx = Fixture::new();
        fx.set_token(&testkit::sign(
            &testkit::ed25519("ed"),
            &testkit::claims("a"),
        ));
        // A closed local port.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cfg = fx.config();
        cfg.jwks = JwksSource::Url {
            url: format!("https://127.0.0.1:{port}/jwks"),
            ca_file: None,
        };
        let src = TokenFileSource::new(cfg).unwrap();
        let e = src.validate_current().await.unwrap_err();
        assert_eq!(e.reason(), "jwks_unreachable", "{e}");
        // A missing JWKS file likewise.
        let src = fx.source();
        assert_eq!(
            src.validate_current().await.unwrap_err().reason(),
            "jwks_unreachable"
        );
    }

    fn https_config(
        fx: &Fixture,
        server: &testkit::JwksServer,
        cooldown: Duration,
    ) -> TokenFileConfig {
        let mut cfg = fx.config();
        cfg.jwks = JwksSource::Url {
            url: server.url.clone(),
            ca_file: Some(server.ca_file.clone()),
        };
        cfg.refresh_cooldown = cooldown;
        cfg.max_token_lifetime = Duration::from_secs(3600);
        cfg
    }

    /// Key rotation at the identity provider, over HTTPS: the new kid is
    /// fetched on first sight, the dropped key keeps validating its
    /// still-valid tokens until the retention ends, and nothing restarts.
    #[tokio::test]
    async fn jwks_rotation_over_https() {
        let a = testkit::rsa_a("key-2024");
        let b = testkit::rsa_b("key-2025");
        let server = testkit::JwksServer::start(&testkit::jwks(&[&a])).await;
        let fx = Fixture::new();
        let src = TokenFileSource::new(https_config(&fx, &server, Duration::ZERO)).unwrap();

        let ta = testkit::sign(&a, &testkit::claims("app"));
        fx.set_token(&ta);
        assert_eq!(
            src.validate_current().await.unwrap().kid.as_deref(),
            Some("key-2024")
        );
        src.validate_current().await.unwrap();
        assert_eq!(server.hits(), 1, "known kids are served from the cache");

        // Rotate: the server now lists only the new key.
        server.set(&testkit::jwks(&[&b]));
        fx.set_token(&testkit::sign(&b, &testkit::claims("app")));
        assert_eq!(
            src.validate_current().await.unwrap().kid.as_deref(),
            Some("key-2025")
        );
        assert_eq!(server.hits(), 2);

        // The old key's still-valid token keeps validating, without a fetch.
        fx.set_token(&ta);
        assert_eq!(
            src.validate_current().await.unwrap().kid.as_deref(),
            Some("key-2024")
        );
        assert_eq!(server.hits(), 2);
        // ... until it expires.
        let mut old = testkit::claims("app");
        old["exp"] = json!(testkit::now() - 3600);
        old["iat"] = json!(testkit::now() - 7200);
        let expired = testkit::sign(&a, &old);
        assert_eq!(fx.reason_for(&src, &expired).await, "token_expired");

        // Past the maximum token lifetime the old key is dropped.
        src.jwks_cache().age_by(Duration::from_secs(3600));
        assert_eq!(fx.reason_for(&src, &ta).await, "token_unknown_kid");
        assert_eq!(server.hits(), 3);
        fx.set_token(&testkit::sign(&b, &testkit::claims("app")));
        src.validate_current().await.unwrap();
    }

    /// Unknown kids cause at most one fetch per cool-down, and concurrent
    /// callers share one fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_refetch_is_rate_limited_and_single_flight() {
        let a = testkit::ed25519("a");
        let b = testkit::ed25519("b");
        let server = testkit::JwksServer::start(&testkit::jwks(&[&a])).await;
        let fx = Fixture::new();
        let src =
            TokenFileSource::new(https_config(&fx, &server, Duration::from_secs(30))).unwrap();
        src.validate(&testkit::sign(&a, &testkit::claims("x")))
            .await
            .unwrap();
        assert_eq!(server.hits(), 1);
        server.set(&testkit::jwks(&[&a, &b]));
        let tb = testkit::sign(&b, &testkit::claims("x"));
        let run_many = |src: TokenFileSource, tb: String| async move {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (src, tb) = (src.clone(), tb.clone());
                    tokio::spawn(async move { src.validate(&tb).await.map_err(|e| e.reason()) })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        };
        let results = run_many(src.clone(), tb.clone()).await;
        assert!(
            results.iter().all(|r| *r == Err("token_unknown_kid")),
            "{results:?}"
        );
        assert_eq!(server.hits(), 1, "no fetch within the cool-down");
        src.jwks_cache().age_by(Duration::from_secs(30));
        let results = run_many(src.clone(), tb).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(server.hits(), 2, "one fetch for all concurrent callers");
    }

    #[tokio::test]
    async fn https_jwks_needs_a_trusted_certificate() {
        let a = testkit::ed25519("a");
        let server = testkit::JwksServer::start(&testkit::jwks(&[&a])).await;
        let fx = Fixture::new();
        fx.set_token(&testkit::sign(&a, &testkit::claims("x")));
        // Without the test CA the server's certificate is not trusted.
        let mut cfg = https_config(&fx, &server, Duration::ZERO);
        cfg.jwks = JwksSource::Url {
            url: server.url.clone(),
            ca_file: None,
        };
        let src = TokenFileSource::new(cfg).unwrap();
        let e = src.validate_current().await.unwrap_err();
        assert_eq!(e.reason(), "jwks_unreachable", "{e}");
        assert_eq!(server.hits(), 0);
        // With it, the same source works.
        let src = TokenFileSource::new(https_config(&fx, &server, Duration::ZERO)).unwrap();
        src.validate_current().await.unwrap();
        assert_eq!(server.hits(), 1);
    }

    #[test]
    fn config_is_checked_at_construction() {
        let fx = Fixture::new();
        type Edit = Box<dyn Fn(&mut TokenFileConfig)>;
        let cases: Vec<Edit> = vec![
            Box::new(|c| c.leeway_secs = 61),
            Box::new(|c| c.algorithms = vec!["HS256".into()]),
            Box::new(|c| c.algorithms = vec!["none".into()]),
            Box::new(|c| c.algorithms = vec![]),
            Box::new(|c| c.issuer = String::new()),
            Box::new(|c| c.audience = String::new()),
            Box::new(|c| c.spiffe_trust_domain = Some("spiffe://x".into())),
            Box::new(|c| c.max_token_lifetime = Duration::ZERO),
            Box::new(|c| c.refresh_cooldown = Duration::from_secs(2 * 24 * 3600)),
            Box::new(|c| c.token_file = PathBuf::new()),
            Box::new(|c| {
                c.jwks = JwksSource::Url {
                    url: "http://idp.example/jwks".into(),
                    ca_file: None,
                }
            }),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut cfg = fx.config();
            f(&mut cfg);
            let e = TokenFileSource::new(cfg).unwrap_err();
            assert_eq!(e.reason(), "token_config_invalid", "case {i}");
        }
        let mut cfg = fx.config();
        cfg.leeway_secs = 60;
        cfg.refresh_cooldown = Duration::ZERO;
        TokenFileSource::new(cfg).unwrap();
    }

    #[test]
    fn source_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<TokenFileSource>();
    }
}
