//! [`TokenError`]: every way obtaining, validating or minting an identity
//! token can fail, each with a distinct machine-readable reason for audit
//! events. Messages name files, claims and key ids, never the token.

use std::path::PathBuf;

/// Why a token was refused or could not be obtained. [`TokenError::reason`]
/// is the stable machine-readable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf or iat in the future)")]
    NotYetValid,
    #[error("token issuer {found:?} is not the expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("token audience does not include {expected:?}")]
    WrongAudience { expected: String },
    #[error("token has no audience (aud)")]
    AudienceMissing,
    #[error("token algorithm {alg:?} is not allowed")]
    AlgNotAllowed { alg: String },
    #[error("no key with id {kid:?} in the JWKS")]
    UnknownKid { kid: Option<String> },
    #[error("key {kid:?} does not fit algorithm {alg}: {detail}")]
    KeyMismatch {
        kid: Option<String>,
        alg: String,
        detail: &'static str,
    },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token subject {found:?} {detail}")]
    WrongSubject { found: String, detail: String },
    #[error("token file {} does not exist", path.display())]
    FileMissing { path: PathBuf },
    #[error("token file {} cannot be read: {detail}", path.display())]
    Unreadable { path: PathBuf, detail: String },
    #[error("token is malformed: {detail}")]
    Malformed { detail: &'static str },
    #[error("token lacks required claim {claim:?}")]
    MissingClaim { claim: &'static str },
    #[error("JWKS from {source_name} unreachable and no keys cached: {detail}")]
    JwksUnreachable { source_name: String, detail: String },
    #[error("JWKS from {source_name} is invalid: {detail}")]
    JwksInvalid { source_name: String, detail: String },
    #[error("token source configuration: {0}")]
    Config(String),
    #[error("signing key {}: {detail}", path.display())]
    SigningKey { path: PathBuf, detail: String },
    #[error("minting a token failed: {0}")]
    Mint(String),
}

impl TokenError {
    /// Stable machine-readable reason, used as the audit refusal reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongIssuer { .. } => "token_wrong_issuer",
            TokenError::WrongAudience { .. } => "token_wrong_audience",
            TokenError::AudienceMissing => "token_audience_missing",
            TokenError::AlgNotAllowed { .. } => "token_alg_not_allowed",
            TokenError::UnknownKid { .. } => "token_unknown_kid",
            TokenError::KeyMismatch { .. } => "token_key_mismatch",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::WrongSubject { .. } => "token_wrong_subject",
            TokenError::FileMissing { .. } => "token_file_missing",
            TokenError::Unreadable { .. } => "token_unreadable",
            TokenError::Malformed { .. } => "token_malformed",
            TokenError::MissingClaim { .. } => "token_missing_claim",
            TokenError::JwksUnreachable { .. } => "jwks_unreachable",
            TokenError::JwksInvalid { .. } => "jwks_invalid",
            TokenError::Config(_) => "token_config_invalid",
            TokenError::SigningKey { .. } => "token_signing_key_invalid",
            TokenError::Mint(_) => "token_mint_failed",
        }
    }
}

impl TokenError {
    /// Every reason [`TokenError::reason`] can return.
    pub const REASONS: &'static [&'static str] = &[
        "token_expired",
        "token_not_yet_valid",
        "token_wrong_issuer",
        "token_wrong_audience",
        "token_audience_missing",
        "token_alg_not_allowed",
        "token_unknown_kid",
        "token_key_mismatch",
        "token_bad_signature",
        "token_wrong_subject",
        "token_file_missing",
        "token_unreadable",
        "token_malformed",
        "token_missing_claim",
        "jwks_unreachable",
        "jwks_invalid",
        "token_config_invalid",
        "token_signing_key_invalid",
        "token_mint_failed",
    ];
}

/// Cuts an attacker-controlled string (an `alg`, a `kid`, an issuer) to a
/// length fit for a log line, keeping only printable characters.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_and_listed() {
        let errs = [
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongIssuer {
                expected: "a".into(),
                found: "b".into(),
            },
            TokenError::WrongAudience {
                expected: "a".into(),
            },
            TokenError::AudienceMissing,
            TokenError::AlgNotAllowed { alg: "none".into() },
            TokenError::UnknownKid { kid: None },
            TokenError::KeyMismatch {
                kid: None,
                alg: "RS256".into(),
                detail: "x",
            },
            TokenError::BadSignature,
            TokenError::WrongSubject {
                found: "s".into(),
                detail: "d".into(),
            },
            TokenError::FileMissing { path: "/x".into() },
            TokenError::Unreadable {
                path: "/x".into(),
                detail: "d".into(),
            },
            TokenError::Malformed { detail: "d" },
            TokenError::MissingClaim { claim: "exp" },
            TokenError::JwksUnreachable {
                source_name: "s".into(),
                detail: "d".into(),
            },
            TokenError::JwksInvalid {
                source_name: "s".into(),
                detail: "d".into(),
            },
            TokenError::Config("c".into()),
            TokenError::SigningKey {
                path: "/k".into(),
                detail: "d".into(),
            },
            TokenError::Mint("m".into()),
        ];
        let reasons: std::collections::BTreeSet<&str> = errs.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), errs.len(), "reasons must be distinct");
        let listed: std::collections::BTreeSet<&str> =
            TokenError::REASONS.iter().copied().collect();
        assert_eq!(reasons, listed);
    }

    #[test]
    fn clip_cuts_and_strips_controls() {
        assert_eq!(clip("RS\n256"), "RS256");
        let long = "a".repeat(200);
        assert_eq!(clip(&long).chars().count(), 81);
    }
}
