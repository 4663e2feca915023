//! `{CRYPT}`: a modular-crypt string whose own prefix selects the algorithm.

use crate::bcrypt::{BCRYPT_PREFIXES, BcryptHash};
use crate::crypt_alphabet::is_crypt_char;
use crate::sha_crypt::{ShaCryptAlg, ShaCryptHash};
use crate::{Inner, PasswordHashError, Scheme};

/// Crypt formats we recognise but do not support, by prefix, each with the
/// description an error gives. The first matching prefix wins, so `$2x$`
/// stands before `$2`.
const UNSUPPORTED_CRYPT_PREFIXES: &[(&str, &str)] = &[
    ("$1$", "MD5-crypt ($1$)"),
    ("$2x$", "legacy buggy bcrypt ($2x$)"),
    ("$2", "unknown bcrypt variant"),
    ("$y$", "yescrypt ($y$)"),
    ("$gy$", "gost-yescrypt ($gy$)"),
    ("$7$", "scrypt ($7$)"),
    ("$argon2", "argon2 (use the {ARGON2ID} prefix)"),
    ("$md5", "Sun MD5 crypt"),
    ("$sha1$", "NetBSD sha1crypt"),
    ("$3$", "NT hash ($3$)"),
    ("_", "BSDi extended DES crypt"),
];

/// `{CRYPT}`: detect the algorithm from the crypt string's own prefix.
pub(crate) fn parse_crypt(encoded: &str) -> Result<Inner, PasswordHashError> {
    let scheme = Scheme::Crypt;
    if let Some(alg) = [ShaCryptAlg::Sha512, ShaCryptAlg::Sha256]
        .into_iter()
        .find(|alg| encoded.starts_with(alg.id()))
    {
        return Ok(Inner::ShaCrypt(ShaCryptHash::parse(scheme, alg, encoded)?));
    }
    if BCRYPT_PREFIXES.iter().any(|p| encoded.starts_with(p)) {
        return Ok(Inner::Bcrypt(BcryptHash::parse(scheme, encoded)?));
    }
    if encoded.is_empty() {
        return Err(PasswordHashError::Malformed {
            scheme,
            reason: "empty crypt string",
        });
    }
    Err(PasswordHashError::UnsupportedCrypt {
        scheme,
        format: unsupported_crypt_format(encoded),
    })
}

/// Describe a non-empty crypt string of a format we do not support.
fn unsupported_crypt_format(encoded: &str) -> &'static str {
    if let Some((_, format)) = UNSUPPORTED_CRYPT_PREFIXES
        .iter()
        .find(|(prefix, _)| encoded.starts_with(prefix))
    {
        format
    } else if encoded.len() == 13 && encoded.chars().all(is_crypt_char) {
        "traditional DES crypt"
    } else if encoded.starts_with('$') {
        "unknown $id$ crypt format"
    } else {
        "not a modular crypt string"
    }
}
