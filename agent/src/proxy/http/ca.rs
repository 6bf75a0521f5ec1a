//! Warden's local certificate authority, for HTTP targets with
//! `intercept_tls = true`: the workload speaks HTTPS to the original
//! address, and Warden answers with a certificate for the name the workload
//! asked for (its SNI), issued on the fly by this CA.
//!
//! - The CA is an ECDSA P-256 key and a self-signed certificate in the state
//!   directory: `ca.key` (PKCS#8 PEM, mode 0600, created exclusively so two
//!   agents starting at once agree on one key) and `ca.pem` (0644; what
//!   `warden ca cert` prints for the workload's trust store). Both are made
//!   at the first start that needs them and reused afterwards. A file that
//!   does not parse, a key readable by others, or a certificate that is not
//!   the key's is an error: a CA the workloads trust is never silently
//!   replaced.
//! - Leaves carry one name (a DNS name or an IP address), are valid for
//!   24 h (backdated 5 minutes for clock skew), are signed by the CA and
//!   cached (bounded) until an hour before they expire. [`LeafResolver`]
//!   hands them to rustls during the handshake.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The CA's private key, in the state directory.
pub const KEY_FILE: &str = "ca.key";
/// The CA's certificate, in the state directory.
pub const CERT_FILE: &str = "ca.pem";
/// How long the CA certificate is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf is valid.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How far `not_before` is set in the past (clock skew between hosts).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// A cached leaf is replaced this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// Most leaves kept.
const CACHE_MAX: usize = 1024;
/// The name of the leaf issued at load to prove the pair works.
const SELF_TEST_NAME: &str = "warden-ca-self-test.invalid";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no CA certificate at {path}: the local CA is created when `warden run` starts with an \
         http target that has intercept_tls = true"
    )]
    NotCreated { path: PathBuf },
    #[error("{path}: {detail} (the CA is never replaced automatically; fix or remove the file)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{key} is mode {mode:04o}: the CA key must be readable by the agent only (chmod 600)")]
    KeyMode { key: PathBuf, mode: u32 },
    #[error(
        "{cert} does not belong to {key}: {detail} (workloads may trust the existing \
         certificate, so nothing is regenerated; restore the pair or remove both files)"
    )]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        detail: String,
    },
    #[error("issuing a certificate for {name}: {detail}")]
    Issue { name: String, detail: String },
    #[error("{0:?} is not a DNS name or an IP address")]
    Name(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A name a leaf is issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, lower-case.
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    /// An IP address, or a DNS name valid for a certificate (lower-cased).
    pub fn parse(name: &str) -> Result<Self, CaError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(LeafName::Ip(ip));
        }
        match ServerName::try_from(name) {
            Ok(ServerName::DnsName(_)) => Ok(LeafName::Dns(name.to_ascii_lowercase())),
            _ => Err(CaError::Name(name.to_owned())),
        }
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(n) => f.write_str(n),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A cached leaf and when to replace it.
struct Cached {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

/// The loaded CA: issues and caches leaves.
pub struct LocalCa {
    cert_path: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<HashMap<Vec<LeafName>, Cached>>,
    cache_max: usize,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io { what, path, source }
}

fn system_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Reads the CA key through [`crate::fsutil::read_secret`] (no symlink, a
/// regular file, the agent's own, 0600); `None` when it does not exist.
fn read_key(path: &Path) -> Result<Option<String>, CaError> {
    use crate::fsutil::SecretError;
    match crate::fsutil::read_secret_optional(path) {
        Ok(Some(b)) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| CaError::Corrupt {
                path: path.to_owned(),
                detail: "not UTF-8 text".into(),
            }),
        Ok(None) => Ok(None),
        Err(SecretError::Mode { path, mode }) => Err(CaError::KeyMode { key: path, mode }),
        Err(SecretError::Open { path, source } | SecretError::Read { path, source }) => {
            Err(CaError::Io {
                what: "reading",
                path,
                source,
            })
        }
        Err(e) => Err(CaError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Reads a file; `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CaError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

fn parse_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::Corrupt {
        path: path.to_owned(),
        detail: format!("not a PEM certificate: {e}"),
    })
}

/// The CA's distinguished name: fixed words and a digest of its public key,
/// so a certificate re-made for the same key has the same name.
fn ca_name(key: &KeyPair) -> DistinguishedName {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.public_key_raw());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warden");
    dn.push(
        DnType::CommonName,
        format!("Warden local CA {}", hex::encode(&digest[..6])),
    );
    dn
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    // Positive and without a leading zero byte.
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

impl LocalCa {
    /// Loads the CA from `state_dir`, creating it when neither file exists
    /// (and the certificate alone when only the key exists: another agent
    /// is in the middle of creating the pair, or the certificate was
    /// removed; it is re-made with the same key and name).
    pub fn load_or_create(state_dir: &Path) -> Result<Self, CaError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err("creating", state_dir))?;
        let key_path = state_dir.join(KEY_FILE);
        let cert_path = state_dir.join(CERT_FILE);
        let key_pem = match read_key(&key_path)? {
            Some(pem) => pem,
            None => {
                if cert_path.exists() {
                    return Err(CaError::Mismatch {
                        key: key_path,
                        cert: cert_path,
                        detail: "the key is missing".into(),
                    });
                }
                let key =
                    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Issue {
                        name: "the CA key".into(),
                        detail: e.to_string(),
                    })?;
                let pem = key.serialize_pem();
                if crate::fsutil::create_exclusive(&key_path, pem.as_bytes(), 0o600)
                    .map_err(io_err("creating", &key_path))?
                {
                    tracing::info!(path = %key_path.display(), "created the local CA key");
                    pem
                } else {
                    // Another agent got there first: its key wins.
                    read_key(&key_path)?.ok_or_else(|| CaError::Corrupt {
                        path: key_path.clone(),
                        detail: "vanished while being created".into(),
                    })?
                }
            }
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Corrupt {
            path: key_path.clone(),
            detail: format!("not a PEM private key: {e}"),
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Corrupt {
                path: key_path,
                detail: "not an ECDSA P-256 key".into(),
            });
        }
        let cert_pem = match read_optional(&cert_path)? {
            Some(pem) => pem,
            None => {
                let pem = Self::self_signed(&key)?;
                if crate::fsutil::create_exclusive(&cert_path, pem.as_bytes(), 0o644)
                    .map_err(io_err("creating", &cert_path))?
                {
                    tracing::info!(path = %cert_path.display(), "created the local CA certificate");
                    pem
                } else {
                    read_optional(&cert_path)?.ok_or_else(|| CaError::Corrupt {
                        path: cert_path.clone(),
                        detail: "vanished while being created".into(),
                    })?
                }
            }
        };
        Self::from_parts(key_path, cert_path, key, &key_pem, cert_pem)
    }

    /// The CA certificate (PEM) in `state_dir`, without touching the key:
    /// what `warden ca cert` prints.
    pub fn read_cert_pem(state_dir: &Path) -> Result<String, CaError> {
        let path = state_dir.join(CERT_FILE);
        let pem =
            read_optional(&path)?.ok_or_else(|| CaError::NotCreated { path: path.clone() })?;
        parse_cert(&path, &pem)?;
        Ok(pem)
    }

    fn self_signed(key: &KeyPair) -> Result<String, CaError> {
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name(key);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = system_time(now - BACKDATE);
        params.not_after = system_time(now + CA_VALIDITY);
        params.serial_number = Some(random_serial());
        params
            .self_signed(key)
            .map(|c| c.pem())
            .map_err(|e| CaError::Issue {
                name: "the CA certificate".into(),
                detail: e.to_string(),
            })
    }

    /// Checks that the pair belongs together and works: the certificate's
    /// public key is the key's, and a leaf it signs verifies against it now.
    fn from_parts(
        key_path: PathBuf,
        cert_path: PathBuf,
        key: KeyPair,
        key_pem: &str,
        cert_pem: String,
    ) -> Result<Self, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert_der = parse_cert(&cert_path, &cert_pem)?;
        let signing = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|k| {
                provider
                    .key_provider
                    .load_private_key(k)
                    .map_err(|e| e.to_string())
            })
            .map_err(|detail| CaError::Corrupt {
                path: key_path.clone(),
                detail,
            })?;
        let mismatch = |detail: String| CaError::Mismatch {
            key: key_path.clone(),
            cert: cert_path.clone(),
            detail,
        };
        CertifiedKey::new(vec![cert_der.clone()], signing)
            .keys_match()
            .map_err(|e| mismatch(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::Corrupt {
            path: cert_path.clone(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
        let ca = LocalCa {
            cert_path,
            cert_pem,
            cert_der,
            issuer,
            provider,
            cache: Mutex::new(HashMap::new()),
            cache_max: CACHE_MAX,
        };
        let name = LeafName::Dns(SELF_TEST_NAME.into());
        let (leaf, _) = ca.issue(std::slice::from_ref(&name))?;
        ca.verify(&leaf, &name).map_err(|e| CaError::Corrupt {
            path: ca.cert_path.clone(),
            detail: format!("a certificate it signs does not verify: {e}"),
        })?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Checks `leaf` against this CA for `name`, as a client trusting only
    /// this CA would.
    pub fn verify(&self, leaf: &CertifiedKey, name: &LeafName) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let server_name = match name {
            LeafName::Dns(n) => ServerName::try_from(n.clone())
                .map_err(|_| rustls::Error::General(format!("bad name {n}")))?,
            LeafName::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        use rustls::client::danger::ServerCertVerifier as _;
        verifier
            .verify_server_cert(
                leaf.end_entity_cert()?,
                &leaf.cert[1..],
                &server_name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    /// The leaf for `names` (the first is its common name), from the cache
    /// or issued now.
    pub fn leaf(&self, names: &[LeafName]) -> Result<Arc<CertifiedKey>, CaError> {
        let now = SystemTime::now();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(names)
                && c.renew_at > now
            {
                return Ok(Arc::clone(&c.key));
            }
        }
        // Issued outside the lock: other handshakes are not held up.
        let (key, renew_at) = self.issue(names)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.cache_max && !cache.contains_key(names) {
            cache.retain(|_, c| c.renew_at > now);
            while cache.len() >= self.cache_max {
                // Evict the leaf closest to renewal (the oldest).
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.renew_at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        cache.insert(
            names.to_vec(),
            Cached {
                key: Arc::clone(&key),
                renew_at,
            },
        );
        Ok(key)
    }

    /// Leaves in the cache.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn issue(&self, names: &[LeafName]) -> Result<(Arc<CertifiedKey>, SystemTime), CaError> {
        let label = names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let fail = |detail: String| CaError::Issue {
            name: label.clone(),
            detail,
        };
        let Some(first) = names.first() else {
            return Err(fail("no name".into()));
        };
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n {
                LeafName::Dns(d) => d
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e: rcgen::Error| fail(e.to_string())),
                LeafName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = system_time(now - BACKDATE);
        params.not_after = system_time(now + LEAF_VALIDITY);
        params.serial_number = Some(random_serial());
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(e.to_string()))?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))?;
        let leaf = CertifiedKey::new(vec![cert.der().clone()], signing);
        Ok((Arc::new(leaf), now + LEAF_VALIDITY - RENEW_BEFORE))
    }

    /// A rustls server configuration presenting leaves of this CA for the
    /// client's SNI, or for `fallback` when the client sends none (empty:
    /// such a handshake fails). ALPN: `http/1.1` only.
    pub fn server_config(
        self: &Arc<Self>,
        fallback: Vec<LeafName>,
    ) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(LeafResolver {
                ca: Arc::clone(self),
                fallback,
            }));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Picks the leaf for a handshake: the SNI's, else the fallback names.
#[derive(Debug)]
pub struct LeafResolver {
    ca: Arc<LocalCa>,
    fallback: Vec<LeafName>,
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let names = match hello.server_name() {
            Some(sni) => vec![LeafName::parse(sni).ok()?],
            None if !self.fallback.is_empty() => self.fallback.clone(),
            // Nothing to put in a certificate: the handshake fails.
            None => return None,
        };
        match self.ca.leaf(&names) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "no certificate for a TLS handshake");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_then_reused_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(matches!(
            LocalCa::read_cert_pem(&state),
            Err(CaError::NotCreated { .. })
        ));
        let a = LocalCa::load_or_create(&state).unwrap();
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(CERT_FILE)), 0o644);
        assert_eq!(mode(&state), 0o700);
        let key = std::fs::read(state.join(KEY_FILE)).unwrap();
        let b = LocalCa::load_or_create(&state).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        assert_eq!(std::fs::read(state.join(KEY_FILE)).unwrap(), key);
        assert_eq!(LocalCa::read_cert_pem(&state).unwrap(), a.cert_pem());
        assert!(a.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        // A leaf of one instance verifies against the other's certificate.
        let name = LeafName::parse("api.example.com").unwrap();
        let leaf = a.leaf(std::slice::from_ref(&name)).unwrap();
        b.verify(&leaf, &name).unwrap();
        // Only the two files (no temporaries).
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 2);
    }

    #[test]
    fn corrupt_or_mismatched_files_are_errors_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (s1, s2) = (dir.path().join("one"), dir.path().join("two"));
        LocalCa::load_or_create(&s1).unwrap();
        LocalCa::load_or_create(&s2).unwrap();
        // Another CA's certificate beside this key.
        let other = std::fs::read(s2.join(CERT_FILE)).unwrap();
        std::fs::write(s1.join(CERT_FILE), &other).unwrap();
        let e = LocalCa::load_or_create(&s1).unwrap_err();
        assert!(matches!(e, CaError::Mismatch { .. }), "{e}");
        assert_eq!(std::fs::read(s1.join(CERT_FILE)).unwrap(), other);
        // Garbage in the certificate.
        std::fs::write(s1.join(CERT_FILE), "not a cert").unwrap();
        let e = LocalCa::load_or_create(&s1).unwrap_err();
        assert!(matches!(e, CaError::Corrupt { .. }), "{e}");
        assert!(LocalCa::read_cert_pem(&s1).is_err());
        assert_eq!(std::fs::read(s1.join(CERT_FILE)).unwrap(), b"not a cert");
        // Garbage in the key.
        crate::fsutil::replace_atomic(&s2.join(KEY_FILE), b"junk", 0o600).unwrap();
        let e = LocalCa::load_or_create(&s2).unwrap_err();
        assert!(matches!(e, CaError::Corrupt { .. }), "{e}");
        assert_eq!(std::fs::read(s2.join(KEY_FILE)).unwrap(), b"junk");
        // The key gone, the certificate still there: not regenerated.
        std::fs::remove_file(s2.join(KEY_FILE)).unwrap();
        let e = LocalCa::load_or_create(&s2).unwrap_err();
        assert!(matches!(e, CaError::Mismatch { .. }), "{e}");
        assert!(!s2.join(KEY_FILE).exists());
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = LocalCa::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, CaError::KeyMode { mode: 0o640, .. }), "{e}");
    }

    #[test]
    fn a_removed_certificate_is_remade_for_the_same_key_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalCa::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let b = LocalCa::load_or_create(dir.path()).unwrap();
        assert_ne!(a.cert_pem(), b.cert_pem());
        // Same key and subject: a client trusting the old certificate
        // accepts leaves of the new one.
        let name = LeafName::parse("10.1.2.3").unwrap();
        let leaf = b.leaf(std::slice::from_ref(&name)).unwrap();
        a.verify(&leaf, &name).unwrap();
    }

    #[test]
    fn leaves_chain_to_the_ca_carry_their_name_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = LocalCa::load_or_create(dir.path()).unwrap();
        ca.cache_max = 4;
        let dns = LeafName::parse("API.Example.com").unwrap();
        assert_eq!(dns, LeafName::Dns("api.example.com".into()));
        let ip = LeafName::parse("::1").unwrap();
        let leaf = ca.leaf(std::slice::from_ref(&dns)).unwrap();
        ca.verify(&leaf, &dns).unwrap();
        let other = LeafName::Dns("other.example.com".into());
        assert!(ca.verify(&leaf, &other).is_err(), "the name is checked");
        let by_ip = ca.leaf(std::slice::from_ref(&ip)).unwrap();
        ca.verify(&by_ip, &ip).unwrap();
        assert!(ca.verify(&by_ip, &dns).is_err());
        // Two names: both verify.
        let both = [dns.clone(), LeafName::parse("127.0.0.1").unwrap()];
        let two = ca.leaf(&both).unwrap();
        for n in &both {
            ca.verify(&two, n).unwrap();
        }
        // Not trusted by another CA.
        let dir2 = tempfile::tempdir().unwrap();
        let stranger = LocalCa::load_or_create(dir2.path()).unwrap();
        assert!(stranger.verify(&leaf, &dns).is_err());
        // Cached: the same leaf again; bounded.
        assert!(Arc::ptr_eq(
            &leaf,
            &ca.leaf(std::slice::from_ref(&dns)).unwrap()
        ));
        for i in 0..10 {
            let n = LeafName::Dns(format!("h{i}.example.com"));
            ca.leaf(std::slice::from_ref(&n)).unwrap();
            assert!(ca.cached() <= 4, "{}", ca.cached());
        }
        assert_eq!(ca.cached(), 4);
        // Names that cannot be in a certificate.
        assert!(LeafName::parse("bad name").is_err());
        assert!(LeafName::parse("").is_err());
    }
}
