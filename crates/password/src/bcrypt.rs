//! `{BLF-CRYPT}`: bcrypt, `$2a$`, `$2b$` or `$2y$`.
//!
//! `::bcrypt` is the external crate that computes and compares the hashes;
//! this module validates the strings and makes new ones.

use base64::Engine as _;

use crate::crypt_alphabet::is_crypt_char;
use crate::random::random_bytes;
use crate::{PasswordHashError, Scheme};

/// The bcrypt variants we accept, each with the same algorithm.
pub(crate) const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];

/// bcrypt cost of the `{BLF-CRYPT}` hashes we make.
const BCRYPT_COST: u32 = 10;

/// A validated bcrypt string.
#[derive(Clone)]
pub(crate) struct BcryptHash(
    /// The full, validated crypt string.
    String,
);

impl BcryptHash {
    /// Validate `$2a$` / `$2b$` / `$2y$` `NN$` + 22 salt + 31 hash characters.
    pub(crate) fn parse(scheme: Scheme, encoded: &str) -> Result<BcryptHash, PasswordHashError> {
        let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
        let body = BCRYPT_PREFIXES.iter().find_map(|p| encoded.strip_prefix(p));
        let Some(body) = body else {
            if encoded.starts_with("$2x$") {
                return Err(malformed(
                    "$2x$ (the legacy buggy bcrypt variant) is not supported; expected $2a$, $2b$ or $2y$",
                ));
            }
            return Err(malformed(
                "expected a bcrypt string starting with $2a$, $2b$ or $2y$",
            ));
        };
        let (cost, rest) = body
            .split_once('$')
            .ok_or(malformed("missing $ after the cost"))?;
        if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("cost is not two decimal digits"));
        }
        let cost: u32 = cost
            .parse()
            .map_err(|_| malformed("cost is not two decimal digits"))?;
        if !(4..=31).contains(&cost) {
            return Err(malformed("cost is outside 04..=31"));
        }
        if rest.len() != 53 {
            return Err(malformed("salt and hash are not 53 characters long"));
        }
        if !rest.chars().all(is_crypt_char) {
            return Err(malformed(
                "salt or hash contains characters outside [./0-9A-Za-z]",
            ));
        }
        let (salt, hash) = rest
            .split_at_checked(22)
            .ok_or(malformed("salt and hash are not 53 characters long"))?;
        let salt_ok = ::bcrypt::BASE_64
            .decode(salt)
            .is_ok_and(|bytes| bytes.len() == 16);
        let hash_ok = ::bcrypt::BASE_64
            .decode(hash)
            .is_ok_and(|bytes| bytes.len() == 23);
        if !salt_ok || !hash_ok {
            return Err(malformed("salt or hash is not a canonical bcrypt encoding"));
        }
        // And the crate's own parser, which `bcrypt::verify` uses, must agree.
        encoded
            .parse::<::bcrypt::HashParts>()
            .map_err(|_| malformed("rejected by the bcrypt parser"))?;
        Ok(BcryptHash(encoded.to_owned()))
    }

    /// Whether `password` (its first 72 bytes) matches.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        // bcrypt::verify recomputes the hash and compares it in constant time.
        ::bcrypt::verify(password, &self.0).unwrap_or(false)
    }
}

/// A new `$2y$` bcrypt string of cost 10 with a fresh salt.
pub(crate) fn make(scheme: Scheme, password: &[u8]) -> Result<String, PasswordHashError> {
    let salt = random_bytes::<16>()?;
    Ok(::bcrypt::hash_with_salt(password, BCRYPT_COST, salt)
        .map_err(|_| PasswordHashError::Hashing {
            scheme,
            reason: "bcrypt reported an error",
        })?
        .format_for_version(::bcrypt::Version::TwoY))
}
