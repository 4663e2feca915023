//! `{ARGON2ID}`: Argon2id in the PHC string format,
//! `$argon2id$v=19$m=..,t=..,p=..$salt$hash`.

use argon2::password_hash::{self, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHasher};

use crate::random::random_bytes;
use crate::{PasswordHashError, Scheme};

/// A validated Argon2id PHC string.
#[derive(Clone)]
pub(crate) struct Argon2idHash(
    /// The full, validated PHC string.
    String,
);

impl Argon2idHash {
    /// Validate an Argon2id PHC string with the argon2 crate's own parser.
    pub(crate) fn parse(scheme: Scheme, encoded: &str) -> Result<Argon2idHash, PasswordHashError> {
        let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
        let parsed = password_hash::PasswordHash::new(encoded)
            .map_err(|e| malformed(phc_error_reason(e)))?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)
            .map_err(|_| malformed("not an argon2 PHC string"))?;
        if algorithm != argon2::Algorithm::Argon2id {
            return Err(malformed("algorithm is not argon2id"));
        }
        if let Some(version) = parsed.version {
            argon2::Version::try_from(version).map_err(|_| malformed("unknown argon2 version"))?;
        }
        if parsed.salt.is_none() {
            return Err(malformed("missing salt"));
        }
        if parsed.hash.is_none() {
            return Err(malformed("missing hash output"));
        }
        argon2::Params::try_from(&parsed).map_err(|e| malformed(phc_error_reason(e)))?;
        Ok(Argon2idHash(encoded.to_owned()))
    }

    /// Whether `password` matches.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match password_hash::PasswordHash::new(&self.0) {
            // The verifier takes algorithm, version and parameters from
            // the hash and compares the outputs in constant time.
            Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
            Err(_) => false,
        }
    }
}

/// Describe a PHC parse error without echoing any of the input (the crate's
/// own messages can quote an offending character).
fn phc_error_reason(e: password_hash::Error) -> &'static str {
    match e {
        password_hash::Error::Algorithm => "unsupported algorithm",
        password_hash::Error::B64Encoding(_) => "invalid base64 in salt or hash",
        password_hash::Error::OutputSize { .. } => "hash output has an invalid length",
        password_hash::Error::ParamNameDuplicated => "duplicate parameter",
        password_hash::Error::ParamNameInvalid => "unknown parameter",
        password_hash::Error::ParamValueInvalid(_) => "invalid parameter value",
        password_hash::Error::ParamsMaxExceeded => "too many parameters",
        password_hash::Error::PhcStringField => {
            "not a PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash)"
        }
        password_hash::Error::PhcStringTrailingData => "trailing data after the hash",
        password_hash::Error::SaltInvalid(_) => "invalid salt",
        password_hash::Error::Version => "invalid version",
        _ => "invalid PHC string",
    }
}

/// A new Argon2id PHC string with the argon2 crate's default parameters and
/// a fresh salt.
pub(crate) fn make(scheme: Scheme, password: &[u8]) -> Result<String, PasswordHashError> {
    let salt = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordHashError::Hashing {
        scheme,
        reason: "could not encode the salt",
    })?;
    Ok(Argon2::default()
        .hash_password(password, &salt)
        .map_err(|_| PasswordHashError::Hashing {
            scheme,
            reason: "argon2 reported an error",
        })?
        .to_string())
}
