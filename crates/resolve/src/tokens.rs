//! Logging in with an OAuth 2.0 access token (SASL OAUTHBEARER or XOAUTH2) instead of a
//! password: the token is checked against the provider's keys (`mailfront_oauth`), the user it
//! names is looked up in the directory (they must exist; their protocols are checked by the
//! resolve step as for any login), and a refused token is throttled and delayed exactly like a
//! wrong password.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use mailfront_model::{Principal, Protocol, Secret, Source};
use mailfront_oauth::{Verifier, VerifyError};
use mailfront_routing::RejectKind;
use tokio::time::Instant;

use crate::{Refusal, Resolver};

/// What the node accepts of OAuth (`[oauth]`).
pub struct TokenLogins {
    /// Checks tokens against the provider.
    pub verifier: Arc<Verifier>,
    /// The scope a token must grant, per protocol.
    pub scopes: BTreeMap<Protocol, String>,
}

/// A login by token: who, and until when the token is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLogin {
    /// The user the token names.
    pub principal: Principal,
    /// When the token expires (Unix seconds).
    pub expires: u64,
}

/// The OpenID provider as clients may be told of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSummary {
    /// The issuer identifier.
    pub issuer: String,
    /// Where a client sends its user to log in (from discovery, once fetched).
    pub authorization_endpoint: Option<String>,
    /// Where a client gets tokens (from discovery, once fetched).
    pub token_endpoint: Option<String>,
    /// The scopes to ask for: `openid`, `email`, and each protocol's required one.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenLogins")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Accepts OAuth tokens from now on (`[oauth]`, at start).
    pub fn accept_tokens(&self, logins: TokenLogins) {
        self.tokens.store(Some(Arc::new(logins)));
    }

    /// What clients may be told of the provider (autoconfiguration): its issuer, the scopes to
    /// ask for, and its endpoints once its discovery document was fetched. `None` without
    /// `[oauth]`.
    pub fn oauth_provider(&self) -> Option<ProviderSummary> {
        let logins = self.tokens.load_full()?;
        let provider = logins.verifier.provider();
        let mut scopes = vec!["openid".to_owned(), "email".to_owned()];
        for scope in logins.scopes.values() {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        Some(ProviderSummary {
            issuer: provider.issuer().to_owned(),
            authorization_endpoint: provider.endpoint("authorization_endpoint"),
            token_endpoint: provider.endpoint("token_endpoint"),
            scopes,
        })
    }

    /// Whether tokens are accepted.
    pub fn accepts_tokens(&self) -> bool {
        self.tokens.load().is_some()
    }

    /// Authenticates a token presented for `protocol` from `client`; `claimed` is the name the
    /// client gave beside it (may be empty), which must then be the token's user or one of their
    /// aliases. Refusals take the failure delay (or the throttle's) from `started`; a provider
    /// whose keys cannot be had is a temporary refusal.
    pub async fn authenticate_token(
        &self,
        protocol: Protocol,
        client: IpAddr,
        claimed: &str,
        token: &Secret<Vec<u8>>,
        started: Instant,
    ) -> Result<TokenLogin, Refusal> {
        let bad = |detail: String| Refusal::new(RejectKind::AuthFailed, Source::Client, detail);
        let Some(logins) = self.tokens.load_full() else {
            return Err(bad("OAuth tokens are not accepted here".to_owned()));
        };
        // The claimed name is throttled like a login name; an empty one counts the address only.
        self.unless_blocked(protocol, client, claimed, started)
            .await?;
        let scope = logins.scopes.get(&protocol).map(String::as_str);
        let accepted = match logins.verifier.verify(token.expose(), scope).await {
            Ok(accepted) => accepted,
            Err(VerifyError::Unavailable(why)) => {
                return Err(Refusal::new(
                    RejectKind::Temporary,
                    Source::Directory,
                    why.to_string(),
                ));
            }
            Err(VerifyError::Refused(why)) => {
                self.refuse_credentials(protocol, client, claimed, started)
                    .await;
                return Err(bad(format!("token refused: {why}")));
            }
        };
        let principal = match self.lookup(&accepted.user).await? {
            Some(principal) => principal,
            None => {
                self.refuse_credentials(protocol, client, claimed, started)
                    .await;
                return Err(bad(format!(
                    "the token's user {} is not in the directory",
                    accepted.user
                )));
            }
        };
        if !claimed.is_empty() && !principal.answers_to(claimed) {
            return Err(Refusal::new(
                RejectKind::AuthzidRefused,
                Source::Client,
                format!("the token is {}'s, not {claimed}'s", principal.address),
            )
            .for_user(&principal.address));
        }
        self.throttle.succeeded(client, claimed);
        tracing::debug!(user = %principal.address, token_id = accepted.id.as_deref().unwrap_or("-"), expires = accepted.expires, "token accepted");
        Ok(TokenLogin {
            principal,
            expires: accepted.expires,
        })
    }
}
