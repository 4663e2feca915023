//! `{PLAIN}`: the password stored as itself.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::PasswordHashError;

/// A `{PLAIN}` "hash": the stored password.
#[derive(Clone)]
pub(crate) struct PlainPassword(Vec<u8>);

impl PlainPassword {
    /// Take everything after the `{PLAIN}` prefix, as-is.
    pub(crate) fn new(encoded: &str) -> PlainPassword {
        PlainPassword(encoded.as_bytes().to_vec())
    }

    /// Whether `password` is the stored one, compared in constant time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        // Compare fixed-size digests so the time taken does not
        // depend on where, or whether in length, the inputs differ.
        let stored = Sha512::digest(&self.0);
        let given = Sha512::digest(password);
        stored.ct_eq(&given).into()
    }
}

/// The encoded part of a new `{PLAIN}` hash: the password, which must be UTF-8.
pub(crate) fn make(password: &[u8]) -> Result<String, PasswordHashError> {
    Ok(std::str::from_utf8(password)
        .map_err(|_| PasswordHashError::NonUtf8Plaintext)?
        .to_owned())
}
