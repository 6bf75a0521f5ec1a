//! Signed checkpoints of the audit chain, and the Ed25519 key that signs
//! them.
//!
//! A checkpoint says "the chain `origin` had `size` events and the hash of
//! event `size` was `head_hash`" at `time_ms`, links to the previous
//! checkpoint (`prev_checkpoint_hash` = hex SHA-256 of its body bytes, empty
//! for the first) and names the signing key (`key_id`). Its *body* is
//! canonical JSON with exactly that field order and no whitespace, e.g.
//!
//! ```text
//! {"origin":"warden:<chain_id>","size":1000,"head_hash":"<64 hex>","time_ms":1795957502123,"prev_checkpoint_hash":"","key_id":"<32 hex>"}
//! ```
//!
//! and the Ed25519 signature covers exactly those bytes. The body bytes are
//! kept verbatim everywhere (table row, chain event, exported file); a body
//! that is not in canonical form is rejected, so there is one byte string
//! per checkpoint.
//!
//! Keys: `checkpoint.key` (PKCS#8 PEM, mode 0600) and `checkpoint.pub`
//! (SubjectPublicKeyInfo PEM) live next to the store. The private key is
//! written to a temporary file, synced, and hard-linked into place, which
//! fails if the name exists (O_EXCL semantics): the name never shows a half
//! written key, and two starters cannot end up with different keys. Key id =
//! first 16 bytes of SHA-256(raw 32-byte public key), hex. Public keys are
//! also kept in the store's `keys` table, so checkpoints signed by an older
//! key stay verifiable after the key file is replaced.
//!
//! Exported checkpoints (`Checkpoint::to_json`, e.g. shipped off-host and
//! later given to `verify` as an anchor) are
//! `{"format":"warden-checkpoint-v1","body":"<body as a JSON string>","signature":"<hex>","public_key":"<hex>"}`.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::TryRngCore as _;
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::{Hash, sha256};

/// File name of the signing key, in the store's directory.
pub const KEY_FILE: &str = "checkpoint.key";
/// File name of the public key, in the store's directory.
pub const PUB_FILE: &str = "checkpoint.pub";
/// `format` of an exported checkpoint file.
pub const EXPORT_FORMAT: &str = "warden-checkpoint-v1";
/// Prefix of `origin`; the chain id follows.
pub const ORIGIN_PREFIX: &str = "warden:";

/// `(checkpoint.key, checkpoint.pub)` for the store at `store_path`.
pub fn key_paths(store_path: &Path) -> (PathBuf, PathBuf) {
    let dir = store_dir(store_path);
    (dir.join(KEY_FILE), dir.join(PUB_FILE))
}

fn store_dir(store_path: &Path) -> PathBuf {
    match store_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Key id of a raw Ed25519 public key: hex of the first 16 bytes of its
/// SHA-256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&sha256(public_key)[..16])
}

/// The signed fields of a checkpoint, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    /// `"warden:<chain_id>"`.
    pub origin: String,
    /// Last `seq` covered.
    pub size: u64,
    /// Hex of the hash of event `size`.
    pub head_hash: String,
    /// When the checkpoint was made, ms since the Unix epoch.
    pub time_ms: i64,
    /// Hex SHA-256 of the previous checkpoint's body bytes; empty for the
    /// first checkpoint of the chain.
    pub prev_checkpoint_hash: String,
    /// Id of the signing key.
    pub key_id: String,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CheckpointBody {
    /// The canonical bytes (what is signed).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AuditError> {
        serde_json::to_vec(self).map_err(|source| AuditError::Encode { source })
    }

    /// Parse canonical body bytes; anything else (other field order,
    /// whitespace, malformed hex) is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let body: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("body is not checkpoint JSON: {e}"))?;
        if !body.origin.starts_with(ORIGIN_PREFIX) {
            return Err(format!("origin {:?} is not warden:<chain_id>", body.origin));
        }
        if !is_lower_hex(&body.head_hash, 64) {
            return Err("head_hash is not 64 lowercase hex digits".into());
        }
        if !body.prev_checkpoint_hash.is_empty() && !is_lower_hex(&body.prev_checkpoint_hash, 64) {
            return Err("prev_checkpoint_hash is neither empty nor 64 lowercase hex digits".into());
        }
        if !is_lower_hex(&body.key_id, 32) {
            return Err("key_id is not 32 lowercase hex digits".into());
        }
        match serde_json::to_vec(&body) {
            Ok(canonical) if canonical == bytes => Ok(body),
            _ => Err("body is not in canonical form".into()),
        }
    }
}

/// A checkpoint: canonical body bytes, their signature and (when known)
/// the signer's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    body: CheckpointBody,
    body_bytes: Vec<u8>,
    head: Hash,
    prev: Option<Hash>,
    signature: Vec<u8>,
    public_key: Option<[u8; 32]>,
}

/// Exported form, see the module docs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    body: String,
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

fn hex32(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
}

impl Checkpoint {
    /// This checkpoint with the public key that verified it attached (ready
    /// for [`Checkpoint::to_json`]).
    pub(crate) fn with_public_key(self, public_key: [u8; 32]) -> Self {
        Self {
            public_key: Some(public_key),
            ..self
        }
    }

    /// Build from stored parts; fails (with a reason) when the body is not
    /// canonical.
    pub(crate) fn from_parts(
        body_bytes: Vec<u8>,
        signature: Vec<u8>,
        public_key: Option<[u8; 32]>,
    ) -> Result<Self, String> {
        let body = CheckpointBody::parse(&body_bytes)?;
        // Both were validated as lowercase hex of the right length by parse.
        let head = hex32(&body.head_hash).ok_or("head_hash is not hex")?;
        let prev = if body.prev_checkpoint_hash.is_empty() {
            None
        } else {
            Some(hex32(&body.prev_checkpoint_hash).ok_or("prev_checkpoint_hash is not hex")?)
        };
        Ok(Self {
            body,
            body_bytes,
            head,
            prev,
            signature,
            public_key,
        })
    }

    /// The signed fields.
    pub fn body(&self) -> &CheckpointBody {
        &self.body
    }

    /// The exact signed bytes.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// Last seq covered.
    pub fn size(&self) -> u64 {
        self.body.size
    }

    /// Hash of event `size`.
    pub fn head_hash(&self) -> &Hash {
        &self.head
    }

    /// SHA-256 of the previous checkpoint's body (`None` for the first).
    pub fn prev_checkpoint_hash(&self) -> Option<&Hash> {
        self.prev.as_ref()
    }

    /// Id of the signing key.
    pub fn key_id(&self) -> &str {
        &self.body.key_id
    }

    /// The Ed25519 signature over [`body_bytes`](Self::body_bytes).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The signer's raw public key, when known.
    pub fn public_key(&self) -> Option<&[u8; 32]> {
        self.public_key.as_ref()
    }

    /// SHA-256 of the body bytes (what the next checkpoint links to).
    pub fn digest(&self) -> Hash {
        sha256(&self.body_bytes)
    }

    /// Whether the signature verifies under `key` (strict verification:
    /// no malleable or small-order encodings).
    pub(crate) fn signature_valid(&self, key: &VerifyingKey) -> bool {
        Signature::from_slice(&self.signature)
            .is_ok_and(|sig| key.verify_strict(&self.body_bytes, &sig).is_ok())
    }

    /// The public key embedded in this checkpoint, checked against its key
    /// id. `Ok(None)` when none is embedded.
    pub(crate) fn embedded_key(&self) -> Result<Option<VerifyingKey>, String> {
        let Some(pk) = &self.public_key else {
            return Ok(None);
        };
        if key_id(pk) != self.body.key_id {
            return Err(format!(
                "embedded public key has id {}, the body names {}",
                key_id(pk),
                self.body.key_id
            ));
        }
        VerifyingKey::from_bytes(pk)
            .map(Some)
            .map_err(|_| "embedded public key is not a valid Ed25519 key".into())
    }

    /// The exported JSON document (see the module docs), pretty-printed,
    /// ending in a newline.
    pub fn to_json(&self) -> String {
        let file = ExportFile {
            format: EXPORT_FORMAT.into(),
            // Canonical bodies are produced by serde_json, hence UTF-8.
            body: String::from_utf8_lossy(&self.body_bytes).into_owned(),
            signature: hex::encode(&self.signature),
            public_key: self.public_key.map(hex::encode),
        };
        // Serializing a struct of strings cannot fail; an empty document
        // would be rejected by `from_json` anyway.
        let mut s = serde_json::to_string_pretty(&file).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parse an exported checkpoint document.
    pub fn from_json(text: &str) -> Result<Self, AuditError> {
        let bad = |detail: String| AuditError::Checkpoint { detail };
        let file: ExportFile =
            serde_json::from_str(text).map_err(|e| bad(format!("not a checkpoint file: {e}")))?;
        if file.format != EXPORT_FORMAT {
            return Err(bad(format!(
                "format {:?} is not {EXPORT_FORMAT:?}",
                file.format
            )));
        }
        let signature =
            hex::decode(&file.signature).map_err(|_| bad("signature is not hex".into()))?;
        let public_key = match &file.public_key {
            Some(pk) => {
                Some(hex32(pk).ok_or_else(|| bad("public_key is not 64 hex digits".into()))?)
            }
            None => None,
        };
        let cp = Self::from_parts(file.body.into_bytes(), signature, public_key).map_err(bad)?;
        cp.embedded_key().map_err(bad)?;
        Ok(cp)
    }

    /// Read an exported checkpoint document from `path`.
    pub fn from_json_file(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
            op: "read checkpoint file",
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            AuditError::Checkpoint { detail } => AuditError::Checkpoint {
                detail: format!("{}: {detail}", path.display()),
            },
            other => other,
        })
    }
}

/// Public keys known for the store at `store_path`, by key id: `stored`
/// (its `keys` table, [`crate::audit::store::stored_keys`]) plus `checkpoint.pub`. Entries whose id is not the hash of their
/// key are ignored (ids are self-certifying).
pub(crate) fn known_keys(
    stored: Vec<(String, Vec<u8>)>,
    store_path: &Path,
) -> HashMap<String, VerifyingKey> {
    let mut out = HashMap::new();
    for (id, pk) in stored {
        if let Some(pk) = <[u8; 32]>::try_from(pk.as_slice()).ok()
            && key_id(&pk) == id
            && let Ok(vk) = VerifyingKey::from_bytes(&pk)
        {
            out.insert(id, vk);
        }
    }
    let (_, pub_path) = key_paths(store_path);
    if let Ok(pem) = std::fs::read_to_string(&pub_path)
        && let Ok(vk) = VerifyingKey::from_public_key_pem(&pem)
    {
        out.entry(key_id(&vk.to_bytes())).or_insert(vk);
    }
    out
}

/// The checkpoint signing key of a store.
pub(crate) struct CheckpointSigner {
    key: SigningKey,
    public: [u8; 32],
    key_id: String,
}

impl CheckpointSigner {
    /// Load `checkpoint.key` next to `store_path`, generating it on first
    /// use, and make sure `checkpoint.pub` matches it.
    pub(crate) fn load_or_create(store_path: &Path) -> Result<Self, AuditError> {
        let (key_path, pub_path) = key_paths(store_path);
        let key = match read_key(&key_path)? {
            Some(key) => key,
            None => {
                let key = generate_key(&key_path)?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| AuditError::Key {
                        path: key_path.clone(),
                        detail: format!("cannot encode: {e}"),
                    })?;
                if create_exclusive(&key_path, pem.as_bytes())? {
                    tracing::info!(
                        audit.key = %key_path.display(),
                        audit.key_id = %key_id(&key.verifying_key().to_bytes()),
                        "generated audit checkpoint key"
                    );
                    key
                } else {
                    // Someone else created it first: use theirs.
                    read_key(&key_path)?.ok_or_else(|| AuditError::Key {
                        path: key_path.clone(),
                        detail: "vanished right after it was created".into(),
                    })?
                }
            }
        };
        let vk = key.verifying_key();
        let public = vk.to_bytes();
        write_public_key(&pub_path, &vk)?;
        Ok(Self {
            key,
            public,
            key_id: key_id(&public),
        })
    }

    /// Load `checkpoint.key` next to `store_path`; unlike
    /// [`load_or_create`](Self::load_or_create), a missing key is an error
    /// (tools that sign on the store's behalf must not invent a key).
    pub(crate) fn load_existing(store_path: &Path) -> Result<Self, AuditError> {
        let (key_path, _) = key_paths(store_path);
        let key = read_key(&key_path)?.ok_or_else(|| AuditError::Key {
            path: key_path.clone(),
            detail: "no such key (the daemon creates it at its first start)".into(),
        })?;
        let public = key.verifying_key().to_bytes();
        Ok(Self {
            key,
            public,
            key_id: key_id(&public),
        })
    }

    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Ed25519 signature of `bytes`.
    pub(crate) fn sign_bytes(&self, bytes: &[u8]) -> [u8; 64] {
        self.key.sign(bytes).to_bytes()
    }

    pub(crate) fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Sign `body` (whose `key_id` must be this key's).
    pub(crate) fn sign(&self, body: &CheckpointBody) -> Result<Checkpoint, AuditError> {
        let bytes = body.to_bytes()?;
        let signature = self.key.sign(&bytes).to_bytes().to_vec();
        let prev = if body.prev_checkpoint_hash.is_empty() {
            None
        } else {
            hex32(&body.prev_checkpoint_hash)
        };
        Ok(Checkpoint {
            body: body.clone(),
            // The writer builds head_hash with hex::encode of a hash.
            head: hex32(&body.head_hash).unwrap_or_default(),
            prev,
            body_bytes: bytes,
            signature,
            public_key: Some(self.public),
        })
    }
}

fn key_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Io { op, path, source }
}

/// The key at `path`, `None` when there is no file.
fn read_key(path: &Path) -> Result<Option<SigningKey>, AuditError> {
    // fsutil::read_secret: no symlink, a regular file, the agent's own, 0600
    // (a key others can read is refused, not just reported).
    let Some(bytes) = crate::fsutil::read_secret_optional(path).map_err(|e| AuditError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })?
    else {
        return Ok(None);
    };
    let pem = String::from_utf8(bytes).map_err(|_| AuditError::Key {
        path: path.to_owned(),
        detail: "not UTF-8 text".into(),
    })?;
    SigningKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|e| AuditError::Key {
            path: path.to_owned(),
            detail: format!(
                "not an Ed25519 PKCS#8 PEM key ({e}); move it away to generate a new key \
                 (checkpoints signed by the old key stay verifiable)"
            ),
        })
}

fn generate_key(path: &Path) -> Result<SigningKey, AuditError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| AuditError::Key {
            path: path.to_owned(),
            detail: format!("no randomness from the OS: {e}"),
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Write `contents` to `path` only if it does not exist: temp file (0600,
/// O_EXCL), fsync, hard link to the final name (fails if it exists), remove
/// the temp name, fsync the directory. `Ok(false)` when `path` existed.
fn create_exclusive(path: &Path, contents: &[u8]) -> Result<bool, AuditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_err(&tmp, "write")(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    // The temp name is only scaffolding; losing it changes nothing.
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(key_err(path, "create")(e)),
    }
}

fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(audit.dir = %dir.display(), audit.error = %e, "fsync of directory failed");
    }
}

/// (Re)write `checkpoint.pub` unless it already holds `vk`.
fn write_public_key(path: &Path, vk: &VerifyingKey) -> Result<(), AuditError> {
    if let Ok(pem) = std::fs::read_to_string(path)
        && VerifyingKey::from_public_key_pem(&pem).is_ok_and(|k| k == *vk)
    {
        return Ok(());
    }
    let pem = vk
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| AuditError::Key {
            path: path.to_owned(),
            detail: format!("cannot encode public key: {e}"),
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{PUB_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_err(path, "write")(e));
    }
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn body(size: u64) -> CheckpointBody {
        CheckpointBody {
            origin: "warden:00112233445566778899aabbccddeeff".into(),
            size,
            head_hash: "ab".repeat(32),
            time_ms: 1_795_957_502_123,
            prev_checkpoint_hash: String::new(),
            key_id: "cd".repeat(16),
        }
    }

    #[test]
    fn body_is_canonical_json_in_field_order() {
        let b = body(7).to_bytes().unwrap();
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            format!(
                "{{\"origin\":\"warden:00112233445566778899aabbccddeeff\",\"size\":7,\
                 \"head_hash\":\"{}\",\"time_ms\":1795957502123,\"prev_checkpoint_hash\":\"\",\
                 \"key_id\":\"{}\"}}",
                "ab".repeat(32),
                "cd".repeat(16)
            )
        );
        assert_eq!(CheckpointBody::parse(&b).unwrap(), body(7));
        // Same content, other byte strings: rejected.
        let spaced = String::from_utf8(b.clone()).unwrap().replace(",", ", ");
        assert!(CheckpointBody::parse(spaced.as_bytes()).is_err());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let mut reordered = serde_json::Map::new();
        reordered.insert("size".into(), v["size"].clone());
        for (k, val) in v.as_object().unwrap() {
            reordered.entry(k.clone()).or_insert(val.clone());
        }
        let reordered = serde_json::to_vec(&reordered).unwrap();
        assert_ne!(reordered, b);
        assert!(CheckpointBody::parse(&reordered).is_err());
        let mut upper = body(7);
        upper.head_hash = "AB".repeat(32);
        assert!(CheckpointBody::parse(&upper.to_bytes().unwrap()).is_err());
        let mut extra: serde_json::Value = v.clone();
        extra["x"] = 1.into();
        assert!(CheckpointBody::parse(&serde_json::to_vec(&extra).unwrap()).is_err());
    }

    #[test]
    fn key_is_created_once_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("audit.db");
        let a = CheckpointSigner::load_or_create(&store).unwrap();
        let (key_path, pub_path) = key_paths(&store);
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&key_path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let pem = std::fs::read_to_string(&pub_path).unwrap();
        assert_eq!(
            VerifyingKey::from_public_key_pem(&pem).unwrap().to_bytes(),
            *a.public_key()
        );
        assert_eq!(a.key_id(), hex::encode(&sha256(a.public_key())[..16]));
        assert_eq!(a.key_id().len(), 32);
        // No temp files left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        std::fs::remove_file(&pub_path).unwrap();
        let b = CheckpointSigner::load_or_create(&store).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(pub_path.exists(), "checkpoint.pub is restored");

        // An existing name is never overwritten.
        assert!(!create_exclusive(&key_path, b"junk").unwrap());
        assert_eq!(
            CheckpointSigner::load_or_create(&store).unwrap().key_id(),
            a.key_id()
        );
        // A damaged key is an error, not silently replaced.
        std::fs::write(&key_path, b"half a key").unwrap();
        let err = CheckpointSigner::load_or_create(&store).err().unwrap();
        assert!(matches!(err, AuditError::Key { .. }), "{err}");
    }

    #[test]
    fn sign_export_import_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let signer = CheckpointSigner::load_or_create(&dir.path().join("a.db")).unwrap();
        let mut b = body(42);
        b.key_id = signer.key_id().to_owned();
        b.prev_checkpoint_hash = "01".repeat(32);
        let cp = signer.sign(&b).unwrap();
        let vk = VerifyingKey::from_bytes(signer.public_key()).unwrap();
        assert!(cp.signature_valid(&vk));
        assert_eq!(cp.size(), 42);
        assert_eq!(cp.head_hash(), &[0xab; 32]);
        assert_eq!(cp.prev_checkpoint_hash(), Some(&[0x01; 32]));
        assert_eq!(cp.digest(), sha256(cp.body_bytes()));

        let json = cp.to_json();
        let back = Checkpoint::from_json(&json).unwrap();
        assert_eq!(back, cp);
        let file = dir.path().join("cp.json");
        std::fs::write(&file, &json).unwrap();
        assert_eq!(Checkpoint::from_json_file(&file).unwrap(), cp);

        // A flipped signature bit no longer verifies.
        let mut sig = cp.signature().to_vec();
        sig[10] ^= 1;
        let forged = Checkpoint::from_parts(cp.body_bytes().to_vec(), sig, None).unwrap();
        assert!(!forged.signature_valid(&vk));
        // An embedded key must match the key id.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["public_key"] = hex::encode([7u8; 32]).into();
        let err = Checkpoint::from_json(&v.to_string()).err().unwrap();
        assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
        assert!(Checkpoint::from_json("{}").is_err());
    }
}
