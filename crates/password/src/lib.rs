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

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{self, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHasher};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha1::Sha1;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

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
    fn from_name(name: &str) -> Result<Scheme, PasswordHashError> {
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

const SUPPORTED_LIST: &str =
    "SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, SSHA, SSHA512, PLAIN, CRYPT";

/// Alphabet of the crypt(3) base64 variant (used by SHA-crypt and bcrypt salts).
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

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
/// Salt length, in characters, of the SHA-crypt hashes we make.
const SHA_CRYPT_SALT_LEN: usize = 16;
/// bcrypt cost of the `{BLF-CRYPT}` hashes we make.
const BCRYPT_COST: u32 = 10;

/// A parsed, validated password hash.
///
/// Made with [`str::parse`] from a `{SCHEME}encoded` string. Its
/// [`Debug`](fmt::Debug) output shows only the scheme.
#[derive(Clone)]
pub struct PasswordHash {
    scheme: Scheme,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// `{PLAIN}`: the stored password.
    Plain(Vec<u8>),
    /// `{SSHA}`/`{SSHA512}`.
    Salted {
        alg: SaltedAlg,
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
    /// `$6$` / `$5$`.
    ShaCrypt(ShaCrypt),
    /// `$2a$` / `$2b$` / `$2y$`; the full, validated crypt string.
    Bcrypt(String),
    /// `$argon2id$...`; the full, validated PHC string.
    Argon2(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SaltedAlg {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum ShaCryptAlg {
    Sha512,
    Sha256,
}

impl ShaCryptAlg {
    fn id(self) -> &'static str {
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
                let params = sha_crypt::Sha512Params::new(rounds).ok()?;
                sha_crypt::sha512_crypt_b64(password, salt, &params).ok()
            }
            ShaCryptAlg::Sha256 => {
                let params = sha_crypt::Sha256Params::new(rounds).ok()?;
                sha_crypt::sha256_crypt_b64(password, salt, &params).ok()
            }
        }
    }
}

#[derive(Clone)]
struct ShaCrypt {
    alg: ShaCryptAlg,
    rounds: usize,
    salt: String,
    /// The encoded digest (86 or 43 crypt-base64 characters).
    hash: String,
}

impl ShaCrypt {
    fn verify(&self, password: &[u8]) -> bool {
        match self
            .alg
            .compute(password, self.salt.as_bytes(), self.rounds)
        {
            Some(computed) => computed.as_bytes().ct_eq(self.hash.as_bytes()).into(),
            None => false,
        }
    }
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
            Inner::Plain(stored) => {
                // Compare fixed-size digests so the time taken does not
                // depend on where, or whether in length, the inputs differ.
                let stored = Sha512::digest(stored);
                let given = Sha512::digest(password);
                stored.ct_eq(&given).into()
            }
            Inner::Salted { alg, digest, salt } => {
                let computed = alg.digest(password, salt);
                computed.ct_eq(digest).into()
            }
            Inner::ShaCrypt(c) => c.verify(password),
            // bcrypt::verify recomputes the hash and compares it in constant time.
            Inner::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
            Inner::Argon2(s) => match password_hash::PasswordHash::new(s) {
                // The verifier takes algorithm, version and parameters from
                // the hash and compares the outputs in constant time.
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
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
            Scheme::Plain => Inner::Plain(encoded.as_bytes().to_vec()),
            Scheme::Ssha => parse_salted(scheme, SaltedAlg::Sha1, encoded)?,
            Scheme::Ssha512 => parse_salted(scheme, SaltedAlg::Sha512, encoded)?,
            Scheme::Sha512Crypt => {
                Inner::ShaCrypt(parse_sha_crypt(scheme, ShaCryptAlg::Sha512, encoded)?)
            }
            Scheme::Sha256Crypt => {
                Inner::ShaCrypt(parse_sha_crypt(scheme, ShaCryptAlg::Sha256, encoded)?)
            }
            Scheme::BlfCrypt => Inner::Bcrypt(parse_bcrypt(scheme, encoded)?),
            Scheme::Argon2id => Inner::Argon2(parse_argon2id(scheme, encoded)?),
            Scheme::Crypt => parse_crypt(encoded)?,
        };
        Ok(PasswordHash { scheme, inner })
    }
}

fn parse_salted(scheme: Scheme, alg: SaltedAlg, encoded: &str) -> Result<Inner, PasswordHashError> {
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
    Ok(Inner::Salted {
        alg,
        digest: digest.to_vec(),
        salt: salt.to_vec(),
    })
}

fn is_crypt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '/'
}

fn crypt_char_index(c: u8) -> Option<usize> {
    CRYPT_ALPHABET.iter().position(|&a| a == c)
}

/// Parse `$6$[rounds=N$]salt$hash` / `$5$...` the way glibc writes them.
fn parse_sha_crypt(
    scheme: Scheme,
    alg: ShaCryptAlg,
    encoded: &str,
) -> Result<ShaCrypt, PasswordHashError> {
    let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
    let body = encoded.strip_prefix(alg.id()).ok_or(match alg {
        ShaCryptAlg::Sha512 => malformed("expected a crypt string starting with $6$"),
        ShaCryptAlg::Sha256 => malformed("expected a crypt string starting with $5$"),
    })?;
    let mut fields = body.split('$');
    let mut field = fields.next().unwrap_or_default();
    let mut rounds = sha_crypt::ROUNDS_DEFAULT;
    if let Some(r) = field.strip_prefix("rounds=") {
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("rounds= is not a decimal number"));
        }
        rounds = r
            .parse::<usize>()
            .ok()
            .filter(|n| (sha_crypt::ROUNDS_MIN..=sha_crypt::ROUNDS_MAX).contains(n))
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
    Ok(ShaCrypt {
        alg,
        rounds,
        salt: salt.to_owned(),
        hash: hash.to_owned(),
    })
}

/// Validate `$2a$` / `$2b$` / `$2y$` `NN$` + 22 salt + 31 hash characters.
fn parse_bcrypt(scheme: Scheme, encoded: &str) -> Result<String, PasswordHashError> {
    let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
    let body = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| encoded.strip_prefix(p));
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
    let salt_ok = bcrypt::BASE_64
        .decode(salt)
        .is_ok_and(|bytes| bytes.len() == 16);
    let hash_ok = bcrypt::BASE_64
        .decode(hash)
        .is_ok_and(|bytes| bytes.len() == 23);
    if !salt_ok || !hash_ok {
        return Err(malformed("salt or hash is not a canonical bcrypt encoding"));
    }
    // And the crate's own parser, which `bcrypt::verify` uses, must agree.
    encoded
        .parse::<bcrypt::HashParts>()
        .map_err(|_| malformed("rejected by the bcrypt parser"))?;
    Ok(encoded.to_owned())
}

/// Validate an Argon2id PHC string with the argon2 crate's own parser.
fn parse_argon2id(scheme: Scheme, encoded: &str) -> Result<String, PasswordHashError> {
    let malformed = |reason| PasswordHashError::Malformed { scheme, reason };
    let parsed =
        password_hash::PasswordHash::new(encoded).map_err(|e| malformed(phc_error_reason(e)))?;
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
    Ok(encoded.to_owned())
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

/// `{CRYPT}`: detect the algorithm from the crypt string's own prefix.
fn parse_crypt(encoded: &str) -> Result<Inner, PasswordHashError> {
    let scheme = Scheme::Crypt;
    if encoded.starts_with("$6$") {
        return Ok(Inner::ShaCrypt(parse_sha_crypt(
            scheme,
            ShaCryptAlg::Sha512,
            encoded,
        )?));
    }
    if encoded.starts_with("$5$") {
        return Ok(Inner::ShaCrypt(parse_sha_crypt(
            scheme,
            ShaCryptAlg::Sha256,
            encoded,
        )?));
    }
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| encoded.starts_with(p))
    {
        return Ok(Inner::Bcrypt(parse_bcrypt(scheme, encoded)?));
    }
    let format = if encoded.is_empty() {
        return Err(PasswordHashError::Malformed {
            scheme,
            reason: "empty crypt string",
        });
    } else if encoded.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if encoded.starts_with("$2x$") {
        "legacy buggy bcrypt ($2x$)"
    } else if encoded.starts_with("$2") {
        "unknown bcrypt variant"
    } else if encoded.starts_with("$y$") {
        "yescrypt ($y$)"
    } else if encoded.starts_with("$gy$") {
        "gost-yescrypt ($gy$)"
    } else if encoded.starts_with("$7$") {
        "scrypt ($7$)"
    } else if encoded.starts_with("$argon2") {
        "argon2 (use the {ARGON2ID} prefix)"
    } else if encoded.starts_with("$md5") {
        "Sun MD5 crypt"
    } else if encoded.starts_with("$sha1$") {
        "NetBSD sha1crypt"
    } else if encoded.starts_with("$3$") {
        "NT hash ($3$)"
    } else if encoded.starts_with('_') {
        "BSDi extended DES crypt"
    } else if encoded.len() == 13 && encoded.chars().all(is_crypt_char) {
        "traditional DES crypt"
    } else if encoded.starts_with('$') {
        "unknown $id$ crypt format"
    } else {
        "not a modular crypt string"
    };
    Err(PasswordHashError::UnsupportedCrypt { scheme, format })
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
        Scheme::Plain => std::str::from_utf8(password)
            .map_err(|_| PasswordHashError::NonUtf8Plaintext)?
            .to_owned(),
        Scheme::Ssha => make_salted(SaltedAlg::Sha1, password)?,
        Scheme::Ssha512 => make_salted(SaltedAlg::Sha512, password)?,
        Scheme::Sha512Crypt | Scheme::Crypt => {
            make_sha_crypt(scheme, ShaCryptAlg::Sha512, password)?
        }
        Scheme::Sha256Crypt => make_sha_crypt(scheme, ShaCryptAlg::Sha256, password)?,
        Scheme::BlfCrypt => {
            let mut salt = [0u8; 16];
            fill_random(&mut salt)?;
            bcrypt::hash_with_salt(password, BCRYPT_COST, salt)
                .map_err(|_| PasswordHashError::Hashing {
                    scheme,
                    reason: "bcrypt reported an error",
                })?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Argon2id => {
            let mut salt = [0u8; 16];
            fill_random(&mut salt)?;
            let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordHashError::Hashing {
                scheme,
                reason: "could not encode the salt",
            })?;
            Argon2::default()
                .hash_password(password, &salt)
                .map_err(|_| PasswordHashError::Hashing {
                    scheme,
                    reason: "argon2 reported an error",
                })?
                .to_string()
        }
    };
    Ok(format!("{{{}}}{encoded}", scheme.name()))
}

fn fill_random(buf: &mut [u8]) -> Result<(), PasswordHashError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|_| PasswordHashError::Random)
}

fn make_salted(alg: SaltedAlg, password: &[u8]) -> Result<String, PasswordHashError> {
    let mut salt = [0u8; SALTED_SALT_LEN];
    fill_random(&mut salt)?;
    let mut raw = alg.digest(password, &salt);
    raw.extend_from_slice(&salt);
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

fn make_sha_crypt(
    scheme: Scheme,
    alg: ShaCryptAlg,
    password: &[u8],
) -> Result<String, PasswordHashError> {
    let mut random = [0u8; SHA_CRYPT_SALT_LEN];
    fill_random(&mut random)?;
    // 256 is a multiple of 64, so masking keeps the characters uniform.
    let salt: String = random
        .iter()
        .filter_map(|b| CRYPT_ALPHABET.get(usize::from(b & 0x3f)))
        .map(|&c| char::from(c))
        .collect();
    let hash = alg
        .compute(password, salt.as_bytes(), sha_crypt::ROUNDS_DEFAULT)
        .ok_or(PasswordHashError::Hashing {
            scheme,
            reason: "sha-crypt reported an error",
        })?;
    Ok(format!("{}{salt}${hash}", alg.id()))
}
