//! Whether an access token is one mailfront accepts, and whom it names: pure (no I/O), over the
//! provider's keys as last fetched.
//!
//! The checks, in order (each failure its own [`TokenError`], for the log; the client hears
//! one refusal):
//! 1. three base64url parts; the header's `alg` is one of the accepted *asymmetric* algorithms
//!    (`none` and HMAC never are: a provider's public key must not become an HMAC secret);
//! 2. the key: the JWKS entry with the header's `kid` (with no `kid`, the only key there is),
//!    meant for signatures, of the same algorithm if it says one;
//! 3. the signature, then `iss` (exactly the configured issuer), `aud` (one of the accepted
//!    audiences), `exp` and `nbf` (with the clock skew allowed);
//! 4. the scope the protocol requires (`scope`, space-separated, or `scp`);
//! 5. the user: the configured claim (`email` by default — refused when `email_verified` is
//!    false), a clean name.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

/// The algorithms a token may be signed with: asymmetric only.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Longest user name a token may give (an address is at most 254 octets, RFC 5321 §4.5.3.1.3).
const MAX_USER: usize = 320;

/// Which claim names the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserClaim {
    /// `email` (refused when `email_verified` is `false`).
    Email,
    /// `preferred_username`.
    PreferredUsername,
    /// `sub`.
    Sub,
}

impl UserClaim {
    /// The claim's name in a token.
    pub fn name(self) -> &'static str {
        match self {
            UserClaim::Email => "email",
            UserClaim::PreferredUsername => "preferred_username",
            UserClaim::Sub => "sub",
        }
    }
}

/// What a token must be to be accepted.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The provider's issuer identifier (`iss` must be exactly this).
    pub issuer: String,
    /// Audiences accepted (`aud` must name one).
    pub audiences: Vec<String>,
    /// Algorithms accepted (a subset of [`ASYMMETRIC`]).
    pub algorithms: Vec<Algorithm>,
    /// Clock difference tolerated for `exp` and `nbf`.
    pub clock_skew: Duration,
    /// The claim that names the user.
    pub user_claim: UserClaim,
}

/// An accepted token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The user it names (the [`Policy::user_claim`]), as the token says it.
    pub user: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// Its identifier (`jti`), if any (for the logs: never the token itself).
    pub id: Option<String>,
}

/// Why a token was refused. The client is told only that it was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS compact serialization (three base64url parts, JSON header and claims).
    #[error("not a signed JWT")]
    Malformed,
    /// The header's algorithm is not accepted (`none`, HMAC, or not configured).
    #[error("algorithm `{0}` is not accepted")]
    Algorithm(String),
    /// No key of the provider has the header's `kid` (the keys may have rotated).
    #[error("no provider key with kid {0:?}")]
    UnknownKey(Option<String>),
    /// The key is not usable for this token (another algorithm, an encryption key, a type
    /// the algorithm does not use).
    #[error("the key {0:?} does not fit the token's algorithm")]
    KeyMismatch(Option<String>),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim every token must have is missing.
    #[error("no `{0}` claim")]
    MissingClaim(String),
    /// The scope the protocol requires is not granted.
    #[error("scope `{0}` not granted")]
    MissingScope(String),
    /// The user claim is absent or not a clean name.
    #[error("no usable `{0}` claim")]
    NoUser(&'static str),
    /// The provider says the email address is not verified.
    #[error("email address not verified")]
    EmailNotVerified,
}

/// Checks `token` against `keys` and `policy`; `scope`, if any, must be granted.
pub fn check(
    token: &[u8],
    keys: &JwkSet,
    policy: &Policy,
    scope: Option<&str>,
) -> Result<Accepted, TokenError> {
    let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
    let (algorithm, kid) = header(text, policy)?;
    let jwk = key_for(keys, kid.as_deref())?;
    if !fits(jwk, algorithm) {
        return Err(TokenError::KeyMismatch(kid));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::KeyMismatch(kid.clone()))?;
    let mut validation = Validation::new(algorithm);
    validation.leeway = policy.clock_skew.as_secs();
    validation.validate_nbf = true;
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&policy.audiences);
    validation.required_spec_claims = ["exp", "iss", "aud"].map(str::to_owned).into();
    let data = jsonwebtoken::decode::<Value>(text, &key, &validation).map_err(|e| {
        match e.into_kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{algorithm:?}")),
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => TokenError::KeyMismatch(kid.clone()),
            _ => TokenError::Malformed,
        }
    })?;
    let claims = data.claims;
    let scopes = scopes(&claims);
    if let Some(required) = scope
        && !scopes.iter().any(|s| s == required)
    {
        return Err(TokenError::MissingScope(required.to_owned()));
    }
    let user = user(&claims, policy.user_claim)?;
    Ok(Accepted {
        user,
        scopes,
        expires: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        id: claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|id| id.len() <= 128 && !id.chars().any(char::is_control))
            .map(str::to_owned),
    })
}

/// The header's algorithm (accepted ones only) and key id. Read by hand first, so that an
/// algorithm the JWT library does not know (`none`) is reported by its name.
fn header(token: &str, policy: &Policy) -> Result<(Algorithm, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?;
    let algorithm = policy
        .algorithms
        .iter()
        .copied()
        .filter(|a| ASYMMETRIC.contains(a))
        .find(|a| format!("{a:?}") == name)
        .ok_or_else(|| TokenError::Algorithm(printable(name)))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok((algorithm, kid))
}

/// The provider's key for `kid`; without a `kid`, the only key there is.
fn key_for<'a>(keys: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, TokenError> {
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| TokenError::UnknownKey(Some(printable(kid)))),
        None => match keys.keys.as_slice() {
            [only] => Ok(only),
            _ => Err(TokenError::UnknownKey(None)),
        },
    }
}

/// Whether `jwk` may verify a signature made with `algorithm`: meant for signatures (or not
/// saying), and of that algorithm if it names one.
fn fits(jwk: &Jwk, algorithm: Algorithm) -> bool {
    let signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let same = jwk
        .common
        .key_algorithm
        .is_none_or(|a| format!("{a:?}") == format!("{algorithm:?}"));
    signing && same
}

/// The granted scopes: `scope` (space-separated, RFC 8693 §4.2) or `scp` (a list or a string).
fn scopes(claims: &Value) -> Vec<String> {
    let words = |text: &str| {
        text.split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(scope)), _) => words(scope),
        (_, Some(Value::Array(list))) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        (_, Some(Value::String(scope))) => words(scope),
        _ => Vec::new(),
    }
}

/// The user the token names, by `claim`.
fn user(claims: &Value, claim: UserClaim) -> Result<String, TokenError> {
    if claim == UserClaim::Email && claims.get("email_verified") == Some(&Value::Bool(false)) {
        return Err(TokenError::EmailNotVerified);
    }
    claims
        .get(claim.name())
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= MAX_USER && !u.chars().any(char::is_control))
        .map(str::to_owned)
        .ok_or(TokenError::NoUser(claim.name()))
}

/// Text from a token, fit for a log line: printable ASCII, at most 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests;
