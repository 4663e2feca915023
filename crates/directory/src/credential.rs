//! Which of a user's secrets a password matched: the main password or one of their app
//! passwords, and the protocols that secret may be used for.
//!
//! In the flow of a session (docs/architecture.md) a [`Directory`](crate::Directory) answers a
//! successful `authenticate` with an [`Authenticated`]: the [`Principal`] and the
//! [`Credential`] that matched. The directory does not know the protocol of the login; the
//! resolver (`Resolver::authenticate`) refuses a credential that is not allowed for it, with the
//! same reply and delay as a wrong password. Because the answer names the credential and not
//! the protocol, the auth cache can remember it per (login, password) without ever widening an
//! app password limited to IMAP to another protocol.
//!
//! # App passwords
//!
//! Extra passwords of a user for clients without OAuth, each with a name (`phone`), a hash (any
//! scheme of the password crate except `{PLAIN}`), the protocols it may be used for, and when it
//! was made. They are checked by mailfront itself, before the main password (so that in LDAP a
//! login with an app password is never a failed bind that the server's lockout policy would
//! count). A user has at most [`MAX_APP_PASSWORDS`], which bounds the hashing work a wrong
//! password costs.
//!
//! In the users file they are a TOML array of tables (see `file`); in LDAP each is one value of
//! a multi-valued attribute, four fields separated by `;` ([`AppPassword::from_ldap_value`]):
//!
//! ```text
//! phone;imap,submission;2026-12-04T17:00:00Z;{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$…
//! ```
//!
//! The hash is last, so it may itself contain `;`.
//!
//! # The main password's protocols
//!
//! `password_protocols` lists the protocols the main password may be used for (default: all).
//! Leaving the mail protocols out makes app passwords (or OAuth) the only way in there, while
//! the main password still works, say, for the web login.

use std::fmt;
use std::time::SystemTime;

use mailfront_model::{Principal, Protocol, ProtocolSet, Secret};
use mailfront_password::{PasswordHash, PasswordHashError};
use rand::RngCore as _;

/// The most app passwords one user may have: a wrong password is checked against each.
pub const MAX_APP_PASSWORDS: usize = 20;

/// The longest name of an app password, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Which secret of a user a password matched, and what it may be used for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The user's main password (in LDAP: the bind), allowed for `protocols`
    /// (`password_protocols`; every protocol unless the directory says otherwise).
    Password {
        /// The protocols the main password may be used for.
        protocols: ProtocolSet,
    },
    /// One of the user's app passwords.
    App {
        /// Its name, as the user or operator gave it (never the secret).
        name: String,
        /// The protocols it may be used for.
        protocols: ProtocolSet,
    },
}

impl Credential {
    /// The main password, allowed for every protocol.
    pub const MAIN: Credential = Credential::Password {
        protocols: ProtocolSet::ALL,
    };

    /// Whether this credential may be used to log in with `protocol`.
    pub fn allows(&self, protocol: Protocol) -> bool {
        match self {
            Credential::Password { protocols } | Credential::App { protocols, .. } => {
                protocols.contains(protocol)
            }
        }
    }
}

impl fmt::Display for Credential {
    /// For logs: "the main password" or "app password `phone`". Never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password { .. } => f.write_str("the main password"),
            Credential::App { name, .. } => write!(f, "app password `{name}`"),
        }
    }
}

/// A successful authentication: who the user is and which of their secrets matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The user.
    pub principal: Principal,
    /// The secret the password matched. Whether it may be used for the login's protocol is
    /// the caller's decision ([`Credential::allows`]).
    pub credential: Credential,
}

impl Authenticated {
    /// A login with the main password, allowed for every protocol.
    pub fn main_password(principal: Principal) -> Self {
        Self {
            principal,
            credential: Credential::MAIN,
        }
    }
}

/// Why an app password (a users-file entry or an LDAP value) cannot be used. The message
/// never contains the hash; [`AppPasswordError::part`] names the part it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppPasswordError {
    /// An LDAP value without its four `;`-separated fields.
    #[error("expected `name;protocols;created;hash`")]
    Fields,
    /// The name is empty, too long, or has `;`, spaces or control characters.
    #[error("must be 1 to {MAX_NAME_LEN} characters without `;`, spaces or control characters")]
    Name,
    /// Two app passwords of one user share a name (compared without regard to case).
    #[error("`{0}` is the name of another app password of this user")]
    DuplicateName(String),
    /// A protocol name mailfront does not know.
    #[error("{0}")]
    Protocol(String),
    /// No protocol at all: the app password could never be used.
    #[error("must name at least one protocol")]
    NoProtocol,
    /// The creation time is not an RFC 3339 time.
    #[error("`{0}` is not an RFC 3339 time in UTC (like 2026-12-04T17:00:00Z)")]
    Created(String),
    /// The hash does not parse.
    #[error("{0}")]
    Hash(PasswordHashError),
    /// A `{PLAIN}` "hash": app passwords are always stored hashed.
    #[error("{{PLAIN}} is not allowed for app passwords; store a hash (mailfront app-password)")]
    Plaintext,
    /// More than [`MAX_APP_PASSWORDS`].
    #[error("a user has at most {MAX_APP_PASSWORDS} app passwords")]
    TooMany,
}

impl AppPasswordError {
    /// The part of the app password the error is about (`name`, `protocols`, `created`,
    /// `hash`), if it is about one part.
    pub fn part(&self) -> Option<&'static str> {
        match self {
            AppPasswordError::Fields | AppPasswordError::TooMany => None,
            AppPasswordError::Name | AppPasswordError::DuplicateName(_) => Some("name"),
            AppPasswordError::Protocol(_) | AppPasswordError::NoProtocol => Some("protocols"),
            AppPasswordError::Created(_) => Some("created"),
            AppPasswordError::Hash(_) | AppPasswordError::Plaintext => Some("hash"),
        }
    }
}

/// One app password of a user. Its [`Debug`](fmt::Debug) shows the hash's scheme only.
#[derive(Clone, Debug)]
pub struct AppPassword {
    name: String,
    protocols: ProtocolSet,
    created: SystemTime,
    hash: PasswordHash,
}

impl AppPassword {
    /// Checks and makes an app password from its parts as written (users file or LDAP).
    pub fn new(
        name: &str,
        protocols: ProtocolSet,
        created: &str,
        hash: &str,
    ) -> Result<Self, AppPasswordError> {
        let name = name.trim();
        if !valid_name(name) {
            return Err(AppPasswordError::Name);
        }
        if protocols == ProtocolSet::NONE {
            return Err(AppPasswordError::NoProtocol);
        }
        let created = humantime::parse_rfc3339(created.trim())
            .map_err(|_| AppPasswordError::Created(created.trim().to_owned()))?;
        let hash: PasswordHash = hash.parse().map_err(AppPasswordError::Hash)?;
        if hash.is_plaintext() {
            return Err(AppPasswordError::Plaintext);
        }
        Ok(Self {
            name: name.to_owned(),
            protocols,
            created,
            hash,
        })
    }

    /// Reads one LDAP value: `name;protocols;created;hash`, the protocols separated by `,`
    /// (spaces around fields and protocol names are ignored). The hash is everything after
    /// the third `;`.
    pub fn from_ldap_value(value: &str) -> Result<Self, AppPasswordError> {
        let mut fields = value.splitn(4, ';');
        let (Some(name), Some(protocols), Some(created), Some(hash)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(AppPasswordError::Fields);
        };
        let protocols = parse_protocols(protocols.split(',').filter(|p| !p.trim().is_empty()))?;
        Self::new(name, protocols, created, hash.trim())
    }

    /// The name (`phone`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocols it may be used for.
    pub fn protocols(&self) -> ProtocolSet {
        self.protocols
    }

    /// When it was made.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Whether checking it takes microseconds (see [`PasswordHash::is_cheap`]).
    pub fn is_cheap(&self) -> bool {
        self.hash.is_cheap()
    }

    /// The credential this app password is.
    pub fn credential(&self) -> Credential {
        Credential::App {
            name: self.name.clone(),
            protocols: self.protocols,
        }
    }

    /// Whether `password` is this app password.
    pub fn verify(&self, password: &[u8]) -> bool {
        self.hash.verify(password)
    }
}

/// Reads protocol names (any case, trimmed) into a set.
pub fn parse_protocols<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<ProtocolSet, AppPasswordError> {
    let mut set = ProtocolSet::NONE;
    for name in names {
        let protocol: Protocol =
            name.trim()
                .parse()
                .map_err(|e: mailfront_model::UnknownProtocol| {
                    AppPasswordError::Protocol(e.to_string())
                })?;
        set = set.with(protocol);
    }
    Ok(set)
}

/// Whether `name` may name an app password: 1 to [`MAX_NAME_LEN`] bytes, no `;` (the LDAP
/// separator), whitespace or control characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c == ';' || c.is_whitespace() || c.is_control())
}

/// Adds `app` to a user's app passwords `apps`, refusing a name already there and more than
/// [`MAX_APP_PASSWORDS`].
pub fn add(apps: &mut Vec<AppPassword>, app: AppPassword) -> Result<(), AppPasswordError> {
    if apps
        .iter()
        .any(|earlier| earlier.name.eq_ignore_ascii_case(&app.name))
    {
        return Err(AppPasswordError::DuplicateName(app.name));
    }
    if apps.len() >= MAX_APP_PASSWORDS {
        return Err(AppPasswordError::TooMany);
    }
    apps.push(app);
    Ok(())
}

/// The app password `password` is, if any: each is tried in order. Slow hashes make this slow
/// CPU work (callers keep it off the async threads).
pub fn matching_app_password(apps: &[AppPassword], password: &[u8]) -> Option<Credential> {
    apps.iter()
        .find(|app| app.verify(password))
        .map(AppPassword::credential)
}

/// The characters of a new app password: lowercase letters and digits, easy to type on a phone.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A new random app password: four groups of four lowercase letters and digits joined by `-`
/// (`k3vq-8zmt-p0aw-r7nd`), about 82 bits from the operating system's generator, without bias
/// (bytes of 252 and up are drawn again). `None`: the generator failed.
pub fn generate() -> Option<Secret<String>> {
    let mut chosen = Vec::with_capacity(19);
    let mut random = [0u8; 32];
    while chosen.len() < 19 {
        rand::rngs::OsRng.try_fill_bytes(&mut random).ok()?;
        for byte in random.iter().filter(|b| **b < 252) {
            if chosen.len() == 19 {
                break;
            }
            if chosen.len() % 5 == 4 {
                chosen.push(b'-');
            }
            chosen.push(*ALPHABET.get(usize::from(*byte % 36))?);
        }
    }
    random.fill(0);
    String::from_utf8(chosen).ok().map(Secret::new)
}

/// A creation time as app passwords write it: RFC 3339, UTC, to the second.
pub fn created_text(created: SystemTime) -> String {
    humantime::format_rfc3339_seconds(created).to_string()
}

/// The LDAP value of an app password made now (for `mailfront app-password`): the format
/// [`AppPassword::from_ldap_value`] reads.
pub fn ldap_value(name: &str, protocols: ProtocolSet, created: SystemTime, hash: &str) -> String {
    let protocols: Vec<&str> = protocols.iter().map(Protocol::as_str).collect();
    format!(
        "{name};{};{};{hash}",
        protocols.join(","),
        created_text(created)
    )
}

#[cfg(test)]
mod tests;
