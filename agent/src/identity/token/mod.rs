//! Identity tokens: validating a JWT that an identity provider left on disk
//! (`token_file` sources: Kubernetes projected tokens, SPIFFE JWT-SVIDs, OIDC
//! client-credentials tokens) against a JWKS from a file or an HTTPS URL, and
//! minting short-lived Ed25519 tokens where no identity provider exists.
//!
//! | file | owns |
//! | --- | --- |
//! | `error.rs` | [`TokenError`] and its machine-readable reasons |
//! | `validate.rs` | the validation policy, header pre-checks, claim checks, [`verify_with_jwks`] |
//! | `jwks.rs` | JWK parsing, the key cache keyed by (issuer, kid) with retention, fetching with a cool-down |
//! | `source.rs` | [`TokenFileConfig`], [`TokenFileSource`]: the token file, re-read when it changes |
//! | `mint.rs` | [`Minter`]: the host's Ed25519 key, minted tokens, the public JWKS |
//!
//! Nothing here logs or displays a token: errors carry reasons and
//! details, and a [`ValidatedToken`] carries claims, never the raw token.

mod error;
mod jwks;
mod mint;
mod source;
#[cfg(test)]
mod testkit;
mod validate;

use serde::Serialize;

pub use error::TokenError;
pub use mint::{KEY_FILE_NAME, MintClaims, Minter};
pub use source::{JwksSource, TokenFileConfig, TokenFileSource};
pub use validate::verify_with_jwks;

/// Signature algorithms a token may use; a configured list is a subset of
/// these. `none` and every HMAC algorithm (HS*) are never accepted.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

/// Largest clock leeway a configuration may ask for, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// Leeway used where none is configured (and by [`verify_with_jwks`]).
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Default shortest interval between two JWKS fetches triggered by unknown
/// key ids.
pub const DEFAULT_REFRESH_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// Default longest time a key dropped from the JWKS is still trusted (the
/// longest lifetime of a token it may have signed).
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// What a successfully validated (or freshly minted) token says. Never holds
/// the raw token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedToken {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub jti: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued-at, seconds since the Unix epoch, when the token says.
    pub iat: Option<i64>,
    /// The key id from the token's header.
    pub kid: Option<String>,
    /// The header's algorithm, e.g. `RS256`.
    pub alg: String,
}
