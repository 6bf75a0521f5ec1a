//! Per-account identity sources, built once from the config: a token file
//! validated against a JWKS, or a token Warden mints per connection. The
//! proxy asks for the caller's identity after the account is known; an error
//! refuses the connection with the token error's reason.

use std::collections::HashMap;
use std::time::Duration;

use super::facts::ProcessFacts;
use super::token::{
    DEFAULT_MAX_TOKEN_LIFETIME, JwksSource, MintClaims, Minter, TokenError, TokenFileConfig,
    TokenFileSource, ValidatedToken,
};
use crate::audit::event::TokenIdentity;
use crate::config::{Config, IdentityConfig, IdentityKind};

/// Audience of minted tokens when the config names none.
pub const DEFAULT_MINT_AUDIENCE: &str = "warden";

enum Source {
    TokenFile(TokenFileSource),
    Mint(Box<Minter>),
}

#[derive(Default)]
pub struct IdentitySources {
    by_account: HashMap<String, Source>,
}

impl IdentitySources {
    /// Builds a source for every account that has `identity`. Mint keys live
    /// in `state_dir` (`identity.key`).
    pub fn from_config(cfg: &Config, host: &str) -> Result<Self, TokenError> {
        let mut by_account = HashMap::new();
        for a in &cfg.accounts {
            let Some(id) = &a.identity else { continue };
            let source = match id.kind {
                IdentityKind::TokenFile => {
                    Source::TokenFile(TokenFileSource::new(token_file_config(id)?)?)
                }
                IdentityKind::Mint => Source::Mint(Box::new(minter(cfg, id, host)?)),
            };
            by_account.insert(a.name.clone(), source);
        }
        Ok(Self { by_account })
    }

    /// The identity bound to this connection: `Ok(None)` when the account
    /// has no identity source.
    pub async fn identify(
        &self,
        account: &str,
        facts: &ProcessFacts,
    ) -> Result<Option<TokenIdentity>, TokenError> {
        match self.by_account.get(account) {
            None => Ok(None),
            Some(Source::TokenFile(src)) => {
                let v = src.validate_current().await?;
                Ok(Some(identity("token_file", v, None)))
            }
            Some(Source::Mint(m)) => {
                let (token, v) = m.mint(&MintClaims {
                    account: account.to_owned(),
                    pid: facts.tgid,
                    uid: facts.uid,
                    exe_sha256: facts.exe_sha256.clone(),
                    cgroup: facts.cgroup_path.clone(),
                })?;
                Ok(Some(identity("mint", v, Some(token))))
            }
        }
    }
}

/// The public keys of minted tokens (`warden identity jwks`).
pub fn mint_jwks(cfg: &Config, host: &str) -> Result<serde_json::Value, TokenError> {
    let id = IdentityConfig {
        kind: IdentityKind::Mint,
        token_file: None,
        jwks_file: None,
        jwks_url: None,
        jwks_ca_file: None,
        issuer: None,
        audience: None,
        subject: None,
        spiffe_trust_domain: None,
        algorithms: Vec::new(),
        leeway_secs: 0,
        refresh_cooldown_secs: 0,
        recheck: Default::default(),
        ttl_secs: crate::config::model::defaults::mint_ttl_secs(),
    };
    Ok(minter(cfg, &id, host)?.jwks())
}

fn minter(cfg: &Config, id: &IdentityConfig, host: &str) -> Result<Minter, TokenError> {
    Minter::load_or_create(
        &cfg.agent.state_dir,
        host,
        id.audience.as_deref().unwrap_or(DEFAULT_MINT_AUDIENCE),
        Duration::from_secs(id.ttl_secs),
    )
}

fn token_file_config(id: &IdentityConfig) -> Result<TokenFileConfig, TokenError> {
    let missing = |what: &str| TokenError::Config(format!("identity needs {what}"));
    let jwks = match (&id.jwks_file, &id.jwks_url) {
        (Some(f), _) => JwksSource::File(f.clone()),
        (None, Some(u)) => JwksSource::Url {
            url: u.clone(),
            ca_file: id.jwks_ca_file.clone(),
        },
        (None, None) => return Err(missing("jwks_file or jwks_url")),
    };
    Ok(TokenFileConfig {
        token_file: id.token_file.clone().ok_or_else(|| missing("token_file"))?,
        jwks,
        issuer: id.issuer.clone().ok_or_else(|| missing("issuer"))?,
        audience: id.audience.clone().ok_or_else(|| missing("audience"))?,
        subject: id.subject.clone(),
        spiffe_trust_domain: id.spiffe_trust_domain.clone(),
        algorithms: id.algorithms.clone(),
        leeway_secs: id.leeway_secs,
        refresh_cooldown: Duration::from_secs(id.refresh_cooldown_secs),
        max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
    })
}

fn identity(source: &str, v: ValidatedToken, attestation: Option<String>) -> TokenIdentity {
    TokenIdentity {
        source: source.to_owned(),
        iss: v.iss,
        sub: v.sub,
        aud: v.aud,
        jti: v.jti,
        exp: v.exp,
        kid: v.kid,
        alg: v.alg,
        attestation,
    }
}
