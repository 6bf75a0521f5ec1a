//! The hash chain over stored audit events: the hash function and the
//! chain id in its raw form.
//!
//! `hash(seq) = SHA-256(0x01 ‖ chain_id (16 raw bytes) ‖ seq (u64 BE) ‖
//! hash(seq - 1) ‖ data)`, with 32 zero bytes as the hash before seq 1 and
//! `data` the exact bytes stored in `events.data` (never a re-serialisation).
//! The domain byte keeps event hashes apart from any other SHA-256 Warden
//! computes; the chain id binds every hash to one store, and `seq` binds it
//! to one position, so a row cannot be moved, renumbered or replayed into
//! another store without its hash changing.

use sha2::{Digest, Sha256};

use super::AuditError;

/// Length of an event hash.
pub const HASH_LEN: usize = 32;

/// An event hash (or the SHA-256 of a checkpoint body).
pub type Hash = [u8; HASH_LEN];

/// The "previous hash" of seq 1.
pub const GENESIS: Hash = [0; HASH_LEN];

/// Domain-separation byte of event hashes.
const DOMAIN_EVENT: u8 = 0x01;

/// A store's chain id as the 16 raw bytes that are hashed (the store keeps
/// it as 32 lowercase hex digits in `meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainKey([u8; 16]);

impl ChainKey {
    /// Parse the hex form kept in `meta.chain_id`.
    pub fn parse(chain_id: &str) -> Result<Self, AuditError> {
        let mut raw = [0u8; 16];
        hex::decode_to_slice(chain_id, &mut raw).map_err(|_| AuditError::Decode {
            detail: format!("chain_id {chain_id:?} is not 32 hex digits"),
        })?;
        Ok(Self(raw))
    }
}

/// The hash of the event at `seq` whose predecessor's stored hash is `prev`
/// (normally 32 bytes; whatever is stored is hashed, so a damaged
/// predecessor cannot be papered over) and whose stored bytes are `data`.
pub fn event_hash(chain: &ChainKey, seq: u64, prev: &[u8], data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([DOMAIN_EVENT]);
    h.update(chain.0);
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(data);
    h.finalize().into()
}

/// Plain SHA-256 (checkpoint body digests, key ids).
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// `bytes` as a [`Hash`] when it has the right length.
pub fn as_hash(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hash_matches_the_documented_layout() {
        let chain = ChainKey::parse("000102030405060708090a0b0c0d0e0f").unwrap();
        let prev = [0xab; 32];
        let mut input = vec![0x01];
        input.extend(0u8..16);
        input.extend(7u64.to_be_bytes());
        input.extend(prev);
        input.extend(b"{\"x\":1}");
        assert_eq!(
            event_hash(&chain, 7, &prev, b"{\"x\":1}"),
            <[u8; 32]>::from(Sha256::digest(&input))
        );
        // Every input changes the hash.
        let base = event_hash(&chain, 7, &prev, b"a");
        assert_ne!(base, event_hash(&chain, 8, &prev, b"a"));
        assert_ne!(base, event_hash(&chain, 7, &[0xac; 32], b"a"));
        assert_ne!(base, event_hash(&chain, 7, &prev, b"b"));
        let other = ChainKey::parse("ff0102030405060708090a0b0c0d0e0f").unwrap();
        assert_ne!(base, event_hash(&other, 7, &prev, b"a"));
    }

    #[test]
    fn chain_key_needs_32_hex_digits() {
        assert!(ChainKey::parse("abc").is_err());
        assert!(ChainKey::parse("zz0102030405060708090a0b0c0d0e0f").is_err());
        assert!(ChainKey::parse(&"0".repeat(32)).is_ok());
    }
}
