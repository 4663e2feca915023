//! [`PasswordHashError`]: what went wrong parsing or making a password hash.

use crate::Scheme;
use crate::scheme::SUPPORTED_LIST;

/// What went wrong parsing or making a password hash.
///
/// Messages name the problem but never contain the hash or password text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordHashError {
    /// The hash string is empty.
    #[error("password hash is empty")]
    Empty,
    /// The hash string does not start with a `{SCHEME}` prefix.
    #[error(
        "password hash has no {{SCHEME}} prefix (expected e.g. {{SHA512-CRYPT}}$6$... or {{SSHA}}...)"
    )]
    MissingScheme,
    /// The `{SCHEME}` prefix is not closed by `}` or otherwise malformed.
    #[error("malformed {{SCHEME}} prefix (missing closing or opening brace)")]
    MalformedPrefix,
    /// The name between the braces is not a password scheme we know.
    #[error("unknown password scheme in {{SCHEME}} prefix (supported: {SUPPORTED_LIST})")]
    UnknownScheme,
    /// The name is a known Dovecot scheme that this crate does not support.
    #[error("password scheme {{{scheme}}} is not supported (supported: {SUPPORTED_LIST})")]
    UnsupportedScheme {
        /// The unsupported scheme's canonical name.
        scheme: &'static str,
    },
    /// The encoded part is not valid base64.
    #[error("{scheme} hash is not valid base64")]
    Base64 {
        /// The scheme whose hash is malformed.
        scheme: Scheme,
    },
    /// A salted digest is too short to hold the digest plus a salt.
    #[error(
        "{scheme} hash is too short: decodes to {len} bytes, need at least {min} (digest plus salt)"
    )]
    TooShort {
        /// The scheme whose hash is malformed.
        scheme: Scheme,
        /// Decoded length in bytes.
        len: usize,
        /// Minimum decoded length in bytes.
        min: usize,
    },
    /// The encoded part does not have the structure the scheme requires.
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        /// The scheme whose hash is malformed.
        scheme: Scheme,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A crypt string of a format we do not support (DES, MD5, ...).
    #[error(
        "unsupported crypt format under {scheme}: {format} (supported: $6$ sha512-crypt, $5$ sha256-crypt, $2a$/$2b$/$2y$ bcrypt)"
    )]
    UnsupportedCrypt {
        /// The scheme prefix the string was found under.
        scheme: Scheme,
        /// A description of the crypt format that was detected.
        format: &'static str,
    },
    /// `{PLAIN}` can only store a password that is valid UTF-8.
    #[error("a {{PLAIN}} password must be valid UTF-8")]
    NonUtf8Plaintext,
    /// The password to hash contains a NUL byte, which crypt(3)-style
    /// verifiers such as Dovecot silently truncate at.
    #[error("password contains a NUL byte")]
    PasswordContainsNul,
    /// The operating system's random number generator failed.
    #[error("could not get random bytes for a salt from the operating system")]
    Random,
    /// The hash function itself reported an error.
    #[error("hashing with {scheme} failed: {reason}")]
    Hashing {
        /// The scheme being used.
        scheme: Scheme,
        /// What the hashing library reported.
        reason: &'static str,
    },
}
