//! `[oauth]`: OAuth 2.0 access tokens from the organisation's OpenID provider, accepted instead
//! of passwords (see `mailfront_oauth`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mailfront_model::Protocol;
use mailfront_oauth::token::ASYMMETRIC;
use mailfront_oauth::{Policy, ProviderSettings, UserClaim};
use serde::Deserialize;

/// Which claim names the user, as configured.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserClaimConfig {
    /// `email` (refused when `email_verified` is false).
    #[default]
    Email,
    /// `preferred_username`.
    PreferredUsername,
    /// `sub`.
    Sub,
}

/// `[oauth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The provider's issuer identifier (`https://…`; `http://` only on loopback). Its keys come
    /// from `<issuer>/.well-known/openid-configuration`. Required.
    pub issuer: String,
    /// Audiences accepted in `aud` (the resource mailfront is to the provider). Required.
    pub audiences: Vec<String>,
    /// The claim that names the user, looked up in the directory. Default `email`.
    #[serde(default)]
    pub user_claim: UserClaimConfig,
    /// Signature algorithms accepted: asymmetric ones only. Default RS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock difference tolerated for `exp` and `nbf`. Default 60 s, at most 5 min.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// The scope a token must grant per protocol (`imap = "imap"`, …). Default: none.
    #[serde(default)]
    pub scopes: BTreeMap<Protocol, String>,
    /// A PEM file of CAs for the provider's TLS. Default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often the provider's keys are fetched again. Default 1 h.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// The least time between two fetches caused by tokens naming unknown keys. Default 10 s.
    #[serde(default = "default_min_refetch", with = "humantime_serde")]
    pub min_refetch: Duration,
    /// The longest one request to the provider may take. Default 5 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// mailfront's client id at the provider, for its introspection endpoint (RFC 7662): with
    /// it, live sessions' tokens are re-checked every `recheck` and a revoked one closes them.
    #[serde(default)]
    pub introspection_client_id: Option<String>,
    /// A file holding that client's secret (one line). Required with the client id.
    #[serde(default)]
    pub introspection_secret_file: Option<PathBuf>,
    /// Time between two re-checks of a live session's token. Default 60 s.
    #[serde(default = "default_recheck", with = "humantime_serde")]
    pub recheck: Duration,
    /// `"token"`: a session ends when its token expires. Default `"none"` (a session opened with
    /// a valid token lasts, like one opened with a password).
    #[serde(default)]
    pub session_max: SessionMax,
}

/// How long a session opened with a token may last.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionMax {
    /// As long as it is used.
    #[default]
    None,
    /// Until its token expires.
    Token,
}

fn default_recheck() -> Duration {
    Duration::from_secs(60)
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).into()
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_min_refetch() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Whether `url` is `http://` to a loopback host (where a lab or a sidecar provider may run).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OAuthConfig {
    /// Checks what the types alone do not; messages start with the key.
    pub(super) fn validate(&self) -> Result<(), String> {
        let issuer = &self.issuer;
        if !(issuer.starts_with("https://") || is_loopback_http(issuer))
            || issuer.contains(['?', '#', ' '])
        {
            return Err(format!(
                "oauth.issuer: `{issuer}` is not an https:// URL (http:// only on loopback)"
            ));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err("oauth.audiences: name at least one, none empty".to_owned());
        }
        if self.algorithms.is_empty() {
            return Err("oauth.algorithms: name at least one".to_owned());
        }
        for (i, name) in self.algorithms.iter().enumerate() {
            if !ASYMMETRIC.iter().any(|a| format!("{a:?}") == *name) {
                return Err(format!(
                    "oauth.algorithms[{i}]: `{name}` is not accepted (asymmetric only: RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; never none or HMAC)"
                ));
            }
        }
        if self.clock_skew > Duration::from_secs(300) {
            return Err("oauth.clock_skew: at most 5m".to_owned());
        }
        for (protocol, scope) in &self.scopes {
            if scope.is_empty() || scope.contains(' ') {
                return Err(format!("oauth.scopes.{protocol}: one scope, not empty"));
            }
        }
        match (
            &self.introspection_client_id,
            &self.introspection_secret_file,
        ) {
            (Some(id), Some(_)) if id.trim().is_empty() => {
                return Err("oauth.introspection_client_id: must not be empty".to_owned());
            }
            (Some(_), None) => {
                return Err(
                    "oauth.introspection_secret_file: required with introspection_client_id"
                        .to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "oauth.introspection_client_id: required with introspection_secret_file"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if self.recheck < Duration::from_secs(1) {
            return Err("oauth.recheck: at least 1s".to_owned());
        }
        if self.timeout.is_zero() || self.refresh.is_zero() {
            return Err("oauth.timeout: must be more than 0 (refresh too)".to_owned());
        }
        Ok(())
    }

    /// Where the provider is, for `mailfront_oauth::Provider`.
    pub fn provider_settings(&self) -> ProviderSettings {
        ProviderSettings {
            issuer: self.issuer.clone(),
            ca_file: self.ca_file.clone(),
            refresh: self.refresh,
            min_refetch: self.min_refetch,
            timeout: self.timeout,
        }
    }

    /// What a token must be.
    pub fn policy(&self) -> Policy {
        Policy {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            algorithms: ASYMMETRIC
                .into_iter()
                .filter(|a| self.algorithms.contains(&format!("{a:?}")))
                .collect(),
            clock_skew: self.clock_skew,
            user_claim: match self.user_claim {
                UserClaimConfig::Email => UserClaim::Email,
                UserClaimConfig::PreferredUsername => UserClaim::PreferredUsername,
                UserClaimConfig::Sub => UserClaim::Sub,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_http;

    #[test]
    fn http_is_only_for_loopback() {
        for (url, loopback) in [
            ("http://127.0.0.1:9400", true),
            ("http://localhost:9400/realms/x", true),
            ("http://[::1]:9400", true),
            ("http://127.0.0.2", true),
            ("http://id.example.com", false),
            ("http://10.0.0.1:9400", false),
            ("https://127.0.0.1", false),
            ("http://127.0.0.1.evil.example", false),
        ] {
            assert_eq!(is_loopback_http(url), loopback, "{url}");
        }
    }
}
