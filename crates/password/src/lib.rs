//! Password hash schemes of the embedded directory.
//!
//! Hashes are stored as Dovecot-compatible strings of the form
//! `{SCHEME}encoded`, e.g. `{SHA512-CRYPT}$6$salt$hash` or
//! `{SSHA}base64(sha1(password || salt) || salt)`, so a Dovecot `passwd-file`
//! or the output of `doveadm pw` can be used as-is.
//!
//! Where it sits: the embedded directory parses every stored hash with
//! [`PasswordHash::from_str`](std::str::FromStr) when it loads its user file
//! (so a malformed hash is reported at load time, not at login) and calls
//! [`PasswordHash::verify`] when a client authenticates; the
//! `mailfront hash-password` command makes new hashes with [`hash_password`].
//!
//! Supported schemes (see [`Scheme`]): `SHA512-CRYPT`, `SHA256-CRYPT`,
//! `BLF-CRYPT` (bcrypt), `ARGON2ID`, `SSHA`, `SSHA512`, `PLAIN` and `CRYPT`
//! (a modular-crypt string recognised by its own `$6$`, `$5$` or
//! `$2a$`/`$2b$`/`$2y$` prefix).
//!
//! Secrets never leave this crate through diagnostics: error messages name
//! what is wrong but never contain the hash or password text, and the
//! [`Debug`](std::fmt::Debug) output of a [`PasswordHash`] shows only its
//! scheme.
//!
//! Where is what:
//! - [`Scheme`] (`scheme.rs`): the scheme names, parsing them, and the
//!   Dovecot schemes we refuse;
//! - [`PasswordHashError`] (`error.rs`): every way parsing or making a hash
//!   fails;
//! - `plain.rs`, `salted.rs` (`SSHA`, `SSHA512`), `sha_crypt.rs`
//!   (`SHA512-CRYPT`, `SHA256-CRYPT`), `bcrypt.rs` (`BLF-CRYPT`) and
//!   `argon2id.rs` (`ARGON2ID`): one scheme family each, parsing, verifying
//!   and making its hashes;
//! - `crypt.rs`: `{CRYPT}`, telling the algorithm from the crypt string's own
//!   prefix (and naming the formats we do not support);
//! - `crypt_alphabet.rs` and `random.rs`: the crypt(3) base64 alphabet and
//!   random salt bytes, shared by the schemes;
//! - here: [`PasswordHash`] (parse, [`verify`](PasswordHash::verify)) and
//!   [`hash_password`].

mod argon2id;
mod bcrypt;
mod crypt;
mod crypt_alphabet;
mod error;
mod plain;
mod random;
mod salted;
mod scheme;
mod sha_crypt;

use std::fmt;
use std::str::FromStr;

use crate::argon2id::Argon2idHash;
use crate::bcrypt::BcryptHash;
use crate::plain::PlainPassword;
use crate::salted::{SaltedAlg, SaltedHash};
use crate::sha_crypt::{ShaCryptAlg, ShaCryptHash};

pub use crate::error::PasswordHashError;
pub use crate::scheme::Scheme;

/// A parsed, validated password hash.
///
/// Made with [`str::parse`] from a `{SCHEME}encoded` string. Its
/// [`Debug`](fmt::Debug) output shows only the scheme.
#[derive(Clone)]
pub struct PasswordHash {
    scheme: Scheme,
    inner: Inner,
}

/// What a [`PasswordHash`] holds, by algorithm.
#[derive(Clone)]
enum Inner {
    /// `{PLAIN}`: the stored password.
    Plain(PlainPassword),
    /// `{SSHA}`/`{SSHA512}`.
    Salted(SaltedHash),
    /// `$6$` / `$5$`.
    ShaCrypt(ShaCryptHash),
    /// `$2a$` / `$2b$` / `$2y$`; the full, validated crypt string.
    Bcrypt(BcryptHash),
    /// `$argon2id$...`; the full, validated PHC string.
    Argon2(Argon2idHash),
}

impl PasswordHash {
    /// The scheme named by the hash's `{SCHEME}` prefix.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether the "hash" is the plaintext password itself (`{PLAIN}`).
    pub fn is_plaintext(&self) -> bool {
        matches!(self.inner, Inner::Plain(_))
    }

    /// Whether checking a password against this hash takes microseconds (`{PLAIN}`, `{SSHA}`,
    /// `{SSHA512}`: one hash or none), so that a caller may do it in place instead of handing it
    /// to a thread for slow work. The crypt schemes, bcrypt and Argon2id are slow on purpose.
    pub fn is_cheap(&self) -> bool {
        matches!(
            self.scheme(),
            Scheme::Plain | Scheme::Ssha | Scheme::Ssha512
        )
    }

    /// Check `password` against this hash.
    ///
    /// The computed digest is compared with the stored one in constant time.
    /// Never panics, whatever the password. Every scheme hashes the raw
    /// bytes, so a password that is not valid UTF-8 verifies only against a
    /// hash of exactly those bytes. As everywhere, bcrypt (`BLF-CRYPT`, and
    /// `CRYPT` with `$2?$`) looks only at the first 72 bytes.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.inner {
            Inner::Plain(stored) => stored.verify(password),
            Inner::Salted(salted) => salted.verify(password),
            Inner::ShaCrypt(sha_crypt) => sha_crypt.verify(password),
            Inner::Bcrypt(bcrypt) => bcrypt.verify(password),
            Inner::Argon2(argon2) => argon2.verify(password),
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("scheme", &format_args!("{}", self.scheme))
            .finish_non_exhaustive()
    }
}

impl FromStr for PasswordHash {
    type Err = PasswordHashError;

    /// Parse and validate a `{SCHEME}encoded` string.
    ///
    /// The whole string is taken as-is: no whitespace is trimmed (a
    /// `{PLAIN}` password may end in spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PasswordHashError::Empty);
        }
        let rest = s
            .strip_prefix('{')
            .ok_or(PasswordHashError::MissingScheme)?;
        let (name, encoded) = rest
            .split_once('}')
            .ok_or(PasswordHashError::MalformedPrefix)?;
        let scheme = Scheme::from_name(name)?;
        let inner = match scheme {
            Scheme::Plain => Inner::Plain(PlainPassword::new(encoded)),
            Scheme::Ssha => Inner::Salted(SaltedHash::parse(scheme, SaltedAlg::Sha1, encoded)?),
            Scheme::Ssha512 => {
                Inner::Salted(SaltedHash::parse(scheme, SaltedAlg::Sha512, encoded)?)
            }
            Scheme::Sha512Crypt => {
                Inner::ShaCrypt(ShaCryptHash::parse(scheme, ShaCryptAlg::Sha512, encoded)?)
            }
            Scheme::Sha256Crypt => {
                Inner::ShaCrypt(ShaCryptHash::parse(scheme, ShaCryptAlg::Sha256, encoded)?)
            }
            Scheme::BlfCrypt => Inner::Bcrypt(BcryptHash::parse(scheme, encoded)?),
            Scheme::Argon2id => Inner::Argon2(Argon2idHash::parse(scheme, encoded)?),
            Scheme::Crypt => crypt::parse_crypt(encoded)?,
        };
        Ok(PasswordHash { scheme, inner })
    }
}

/// Make a new hash of `password` with a fresh random salt, as a
/// `{SCHEME}...` string that [`PasswordHash::from_str`](FromStr) accepts.
///
/// Parameters: SHA512-CRYPT and SHA256-CRYPT use the default 5000 rounds
/// (written without `rounds=`) and a 16-character salt; BLF-CRYPT uses cost
/// 10 with the `$2y$` prefix Dovecot writes; ARGON2ID uses the argon2
/// crate's default parameters (m=19456, t=2, p=1); SSHA and SSHA512 use an
/// 8-byte salt; PLAIN writes `{PLAIN}password` and needs UTF-8; CRYPT
/// writes a `$6$` SHA-512 crypt string.
///
/// A password containing a NUL byte is refused, because crypt(3)-based
/// verifiers (Dovecot) would see only the part before it. bcrypt uses only
/// the first 72 bytes of a password.
pub fn hash_password(scheme: Scheme, password: &[u8]) -> Result<String, PasswordHashError> {
    if password.contains(&0) {
        return Err(PasswordHashError::PasswordContainsNul);
    }
    let encoded = match scheme {
        Scheme::Plain => plain::make(password)?,
        Scheme::Ssha => salted::make(SaltedAlg::Sha1, password)?,
        Scheme::Ssha512 => salted::make(SaltedAlg::Sha512, password)?,
        Scheme::Sha512Crypt | Scheme::Crypt => {
            sha_crypt::make(scheme, ShaCryptAlg::Sha512, password)?
        }
        Scheme::Sha256Crypt => sha_crypt::make(scheme, ShaCryptAlg::Sha256, password)?,
        Scheme::BlfCrypt => bcrypt::make(scheme, password)?,
        Scheme::Argon2id => argon2id::make(scheme, password)?,
    };
    Ok(format!("{{{}}}{encoded}", scheme.name()))
}
