//! The [`Scheme`] enum: the word between the braces of a `{SCHEME}` prefix,
//! its canonical name, and parsing it (including the Dovecot schemes we know
//! but refuse, so the error can name them).

use std::fmt;
use std::str::FromStr;

use crate::PasswordHashError;

/// A password hash scheme, named by the word between the braces of a
/// `{SCHEME}` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `{SHA512-CRYPT}`: glibc/Drepper SHA-512 crypt, `$6$[rounds=N$]salt$hash`.
    Sha512Crypt,
    /// `{SHA256-CRYPT}`: glibc/Drepper SHA-256 crypt, `$5$[rounds=N$]salt$hash`.
    Sha256Crypt,
    /// `{BLF-CRYPT}`: bcrypt, `$2a$`, `$2b$` or `$2y$`.
    BlfCrypt,
    /// `{ARGON2ID}`: Argon2id in the PHC string format, `$argon2id$v=19$m=..,t=..,p=..$salt$hash`.
    Argon2id,
    /// `{SSHA}`: base64 of `SHA1(password || salt) || salt`.
    Ssha,
    /// `{SSHA512}`: base64 of `SHA512(password || salt) || salt`.
    Ssha512,
    /// `{PLAIN}`: the password itself, unhashed.
    Plain,
    /// `{CRYPT}`: a modular-crypt string whose own prefix selects the
    /// algorithm: `$6$` (SHA-512 crypt), `$5$` (SHA-256 crypt) or
    /// `$2a$`/`$2b$`/`$2y$` (bcrypt). DES and MD5 (`$1$`) crypt are not
    /// supported.
    Crypt,
}

impl Scheme {
    /// Every supported scheme, in the order they are documented.
    pub const ALL: [Scheme; 8] = [
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::BlfCrypt,
        Scheme::Argon2id,
        Scheme::Ssha,
        Scheme::Ssha512,
        Scheme::Plain,
        Scheme::Crypt,
    ];

    /// The scheme's name as written between the braces of the prefix,
    /// e.g. `"SHA512-CRYPT"`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Ssha => "SSHA",
            Scheme::Ssha512 => "SSHA512",
            Scheme::Plain => "PLAIN",
            Scheme::Crypt => "CRYPT",
        }
    }

    /// Look a scheme up by its bare name (no braces), ignoring ASCII case.
    pub(crate) fn from_name(name: &str) -> Result<Scheme, PasswordHashError> {
        if let Some(scheme) = Scheme::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
        {
            return Ok(scheme);
        }
        // Only names from our own table are ever echoed back, so that text
        // which is not a scheme name (e.g. part of a hash) never reaches a log.
        if let Some(known) = UNSUPPORTED_DOVECOT_SCHEMES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(name))
        {
            return Err(PasswordHashError::UnsupportedScheme { scheme: known });
        }
        Err(PasswordHashError::UnknownScheme)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = PasswordHashError;

    /// Parse a scheme name, case-insensitively, with or without the braces:
    /// `"SSHA"`, `"{ssha}"` and `"{SSHA}"` all give [`Scheme::Ssha`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = match s.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or(PasswordHashError::MalformedPrefix)?,
            None if s.ends_with('}') => return Err(PasswordHashError::MalformedPrefix),
            None => s,
        };
        Scheme::from_name(name)
    }
}

/// Schemes Dovecot knows that this crate deliberately does not support; used
/// only to give a precise error message.
const UNSUPPORTED_DOVECOT_SCHEMES: &[&str] = &[
    "ARGON2I",
    "CLEAR",
    "CLEARTEXT",
    "CRAM-MD5",
    "DES-CRYPT",
    "DIGEST-MD5",
    "HMAC-MD5",
    "LANMAN",
    "LDAP-MD5",
    "MD5",
    "MD5-CRYPT",
    "NTLM",
    "OTP",
    "PBKDF2",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "PLAIN-TRUNC",
    "RPA",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA512",
    "SKEY",
    "SMD5",
    "SSHA256",
];

/// The supported scheme names, as listed in error messages.
pub(crate) const SUPPORTED_LIST: &str =
    "SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, SSHA, SSHA512, PLAIN, CRYPT";
