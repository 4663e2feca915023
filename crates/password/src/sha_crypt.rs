//! `{SHA512-CRYPT}` and `{SHA256-CRYPT}`: glibc/Drepper SHA-crypt,
//! `$6$[rounds=N$]salt$hash` and `$5$[rounds=N$]salt$hash`.
//!
//! `::sha_crypt` is the external crate that computes the hashes; this module
//! parses and validates the strings and makes new ones.

use subtle::ConstantTimeEq;

use crate::crypt_alphabet::{CRYPT_ALPHABET, crypt_char_index, is_crypt_char};
use crate::random::random_bytes;
use crate::{PasswordHashError, Scheme};

/// Salt length, in characters, of the SHA-crypt hashes we make.
const SHA_CRYPT_SALT_LEN: usize = 16;

/// Which SHA-crypt: `$6$` (SHA-512) or `$5$` (SHA-256).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShaCryptAlg {
    Sha512,
    Sha256,
}

impl ShaCryptAlg {
    /// The `$id$` prefix of the crypt string.
    pub(crate) fn id(self) -> &'static str {
        match self {
            ShaCryptAlg::Sha512 => "$6$",
            ShaCryptAlg::Sha256 => "$5$",
        }
    }

    /// Length of the encoded digest.
    fn encoded_len(self) -> usize {
        match self {
            ShaCryptAlg::Sha512 => 86,
            ShaCryptAlg::Sha256 => 43,
        }
    }

    /// The last character of the encoded digest carries only 2 (SHA-512) or
    /// 4 (SHA-256) bits, so its alphabet index must be below this.
    fn last_char_limit(self) -> usize {
        match self {
            ShaCryptAlg::Sha512 => 4,
            ShaCryptAlg::Sha256 => 16,
        }
    }

    fn compute(self, password: &[u8], salt: &[u8], rounds: usize) -> Option<String> {
        match self {
            ShaCryptAlg::Sha512 => {
                let params = ::sha_crypt::Sha512Params::new(rounds).ok()?;
                ::sha_crypt::sha512_crypt_b64(password, salt, &params).ok()
            }
            ShaCryptAlg::Sha256 => {
                let params = ::sha_crypt::Sha256Params::new(rounds).ok()?;
                ::sha_crypt::sha256_crypt_b64(password, salt, &params).ok()
            }
        }
    }
}

/// A parsed SHA-crypt string.
#[derive(Clone)]
pub(crate) struct ShaCryptHash {
    alg: ShaCryptAlg,
    rounds: usize,
    salt: String,
    /// The encoded digest (86 or 43 crypt-base64 characters).
    hash: String,
}

impl ShaCryptHash {
    /// Parse `$6$[rounds=N$]salt$hash` / `$5$...` the way glibc writes them.
    pub(crate) fn parse(
        scheme: Scheme,
        alg: ShaCryptAlg,
        encoded: &str,
    ) -> Result<ShaCryptHash, PasswordHashError> {
        let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
        let body = encoded.strip_prefix(alg.id()).ok_or(match alg {
            ShaCryptAlg::Sha512 => malformed("expected a crypt string starting with $6$"),
            ShaCryptAlg::Sha256 => malformed("expected a crypt string starting with $5$"),
        })?;
        let mut fields = body.split('$');
        let mut field = fields.next().unwrap_or_default();
        let mut rounds = ::sha_crypt::ROUNDS_DEFAULT;
        if let Some(r) = field.strip_prefix("rounds=") {
            if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("rounds= is not a decimal number"));
            }
            rounds = r
                .parse::<usize>()
                .ok()
                .filter(|n| (::sha_crypt::ROUNDS_MIN..=::sha_crypt::ROUNDS_MAX).contains(n))
                .ok_or(malformed("rounds= is outside 1000..=999999999"))?;
            field = fields
                .next()
                .ok_or(malformed("missing salt and hash fields"))?;
        }
        let salt = field;
        let hash = fields.next().ok_or(malformed("missing hash field"))?;
        if fields.next().is_some() {
            return Err(malformed("too many $-separated fields"));
        }
        if salt.len() > SHA_CRYPT_SALT_LEN {
            return Err(malformed("salt is longer than 16 characters"));
        }
        if salt.chars().any(|c| c == ':' || c.is_control()) {
            return Err(malformed("salt contains a control character or ':'"));
        }
        if hash.len() != alg.encoded_len() {
            return Err(match alg {
                ShaCryptAlg::Sha512 => malformed("hash field is not 86 characters long"),
                ShaCryptAlg::Sha256 => malformed("hash field is not 43 characters long"),
            });
        }
        if !hash.chars().all(is_crypt_char) {
            return Err(malformed(
                "hash field contains characters outside [./0-9A-Za-z]",
            ));
        }
        let last_ok = hash
            .bytes()
            .next_back()
            .and_then(crypt_char_index)
            .is_some_and(|i| i < alg.last_char_limit());
        if !last_ok {
            return Err(malformed("hash field is not a canonical encoding"));
        }
        Ok(ShaCryptHash {
            alg,
            rounds,
            salt: salt.to_owned(),
            hash: hash.to_owned(),
        })
    }

    /// Whether `password` with the stored salt and rounds gives the stored
    /// hash, compared in constant time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self
            .alg
            .compute(password, self.salt.as_bytes(), self.rounds)
        {
            Some(computed) => computed.as_bytes().ct_eq(self.hash.as_bytes()).into(),
            None => false,
        }
    }
}

/// A new SHA-crypt string (default rounds, written without `rounds=`) with a
/// fresh 16-character salt.
pub(crate) fn make(
    scheme: Scheme,
    alg: ShaCryptAlg,
    password: &[u8],
) -> Result<String, PasswordHashError> {
    let random = random_bytes::<SHA_CRYPT_SALT_LEN>()?;
    // 256 is a multiple of 64, so masking keeps the characters uniform.
    let salt: String = random
        .iter()
        .filter_map(|b| CRYPT_ALPHABET.get(usize::from(b & 0x3f)))
        .map(|&c| char::from(c))
        .collect();
    let hash = alg
        .compute(password, salt.as_bytes(), ::sha_crypt::ROUNDS_DEFAULT)
        .ok_or(PasswordHashError::Hashing {
            scheme,
            reason: "sha-crypt reported an error",
        })?;
    Ok(format!("{}{salt}${hash}", alg.id()))
}
