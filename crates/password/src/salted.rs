//! `{SSHA}` and `{SSHA512}`: base64 of `digest(password || salt) || salt`.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha1::Sha1;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::random::random_bytes;
use crate::{PasswordHashError, Scheme};

/// Base64 for `{SSHA}`/`{SSHA512}`: the standard alphabet, tolerant about
/// padding and trailing bits (as Dovecot's decoder is).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Salt length, in bytes, of the `{SSHA}`/`{SSHA512}` hashes we make.
const SALTED_SALT_LEN: usize = 8;

/// The digest of a salted scheme: SHA-1 for `{SSHA}`, SHA-512 for `{SSHA512}`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaltedAlg {
    Sha1,
    Sha512,
}

impl SaltedAlg {
    fn digest_len(self) -> usize {
        match self {
            SaltedAlg::Sha1 => 20,
            SaltedAlg::Sha512 => 64,
        }
    }

    fn digest(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        match self {
            SaltedAlg::Sha1 => Sha1::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec(),
            SaltedAlg::Sha512 => Sha512::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize()
                .to_vec(),
        }
    }
}

/// A parsed `{SSHA}`/`{SSHA512}` hash.
#[derive(Clone)]
pub(crate) struct SaltedHash {
    alg: SaltedAlg,
    digest: Vec<u8>,
    salt: Vec<u8>,
}

impl SaltedHash {
    /// Decode the base64 after the prefix and split it into digest and salt.
    pub(crate) fn parse(
        scheme: Scheme,
        alg: SaltedAlg,
        encoded: &str,
    ) -> Result<SaltedHash, PasswordHashError> {
        let decoded = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| PasswordHashError::Base64 { scheme })?;
        let min = alg.digest_len() + 1;
        if decoded.len() < min {
            return Err(PasswordHashError::TooShort {
                scheme,
                len: decoded.len(),
                min,
            });
        }
        let (digest, salt) =
            decoded
                .split_at_checked(alg.digest_len())
                .ok_or(PasswordHashError::TooShort {
                    scheme,
                    len: decoded.len(),
                    min,
                })?;
        Ok(SaltedHash {
            alg,
            digest: digest.to_vec(),
            salt: salt.to_vec(),
        })
    }

    /// Whether `password` with the stored salt gives the stored digest,
    /// compared in constant time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let computed = self.alg.digest(password, &self.salt);
        computed.ct_eq(&self.digest).into()
    }
}

/// The encoded part of a new `{SSHA}`/`{SSHA512}` hash, with a fresh salt.
pub(crate) fn make(alg: SaltedAlg, password: &[u8]) -> Result<String, PasswordHashError> {
    let salt = random_bytes::<SALTED_SALT_LEN>()?;
    let mut raw = alg.digest(password, &salt);
    raw.extend_from_slice(&salt);
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}
