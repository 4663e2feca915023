//! OAuth 2.0 access tokens at the front door (issue 16): a client presents a token from the
//! organisation's OpenID provider instead of a password (SASL OAUTHBEARER or XOAUTH2, or an
//! HTTP `Authorization: Bearer`), and mailfront checks it itself before it looks the user up.
//!
//! - [`token`]: whether a token is accepted and whom it names — pure, over the provider's keys;
//! - [`provider`]: the provider's keys (OpenID Connect discovery, then its JWKS), cached,
//!   refreshed on a timer and when a token names a key not seen yet (rate-limited), so that a
//!   provider that is briefly unreachable does not stop logins;
//! - [`Verifier`]: the two together, the one call the resolve step makes.

pub mod provider;
pub mod token;

pub use provider::{Provider, ProviderSettings, Unavailable};
pub use token::{Accepted, Policy, TokenError, UserClaim};

/// Why a token could not be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not acceptable (the client's fault).
    #[error("token refused: {0}")]
    Refused(#[from] TokenError),
    /// The provider's keys are not known (never fetched): a temporary failure (ours).
    #[error("{0}")]
    Unavailable(#[from] Unavailable),
}

/// Checks tokens against a provider's keys.
pub struct Verifier {
    provider: std::sync::Arc<Provider>,
    policy: Policy,
}

impl Verifier {
    /// A verifier of tokens from `provider` by `policy`.
    pub fn new(provider: std::sync::Arc<Provider>, policy: Policy) -> Self {
        Self { provider, policy }
    }

    /// The provider (for its discovery URL, in error challenges).
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// Checks `token`; `scope` must be granted if given. A token naming a key not seen yet
    /// makes the provider's keys be fetched again (at most every few seconds) and is checked
    /// once more.
    pub async fn verify(&self, token: &[u8], scope: Option<&str>) -> Result<Accepted, VerifyError> {
        let keys = self.provider.keys().await?;
        match token::check(token, &keys, &self.policy, scope) {
            Err(TokenError::UnknownKey(kid)) => {
                let Some(fresh) = self.provider.refetch_for_unknown_key().await else {
                    return Err(TokenError::UnknownKey(kid).into());
                };
                Ok(token::check(token, &fresh, &self.policy, scope)?)
            }
            other => Ok(other?),
        }
    }
}
