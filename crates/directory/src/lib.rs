//! Who a user is.
//!
//! In the flow of a session (docs/architecture.md) this crate is the *auth* step: it checks a login name
//! and password and answers with the [`Principal`] — the user's addresses, mailbox, database,
//! version and enabled protocols — and which of the user's secrets matched ([`Credential`]: the
//! main password or an app password, with the protocols it may be used for), or says why not. The [`Directory`] trait is what the rest of
//! mailfront calls. Backends: [`file::FileDirectory`], the embedded one (a TOML file of users,
//! reloaded when it changes), and [`ldap::LdapDirectory`] (an LDAP server, Active Directory's
//! role in the seeds), usually behind a [`cache::CachedDirectory`].

pub mod cache;
pub mod credential;
pub mod file;
pub mod grouped;
pub mod ldap;

use async_trait::async_trait;
use mailfront_model::{Principal, Secret};

pub use credential::{Authenticated, Credential};

/// Why authentication did not produce a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password. One variant on purpose: nothing downstream can tell
    /// them apart, so no reply can either.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The directory could not be asked (the client gets a temporary error).
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// A lookup that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct Unavailable(pub String);

/// A source of users. Implementations must be cheap to share between sessions.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Checks `password` for the user known by `login` (address or alias, any case): against
    /// the user's app passwords, then the main password. The answer names the credential that
    /// matched; whether it may be used for the login's protocol is the caller's decision
    /// ([`Credential::allows`]), so that an answer holds for every protocol (and may be cached).
    /// Implementations run password verification off the async threads.
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError>;

    /// Finds a user by address or alias without a password (for inbound recipients, anchor
    /// mailboxes and `mailfront route`). `Ok(None)`: no such user.
    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable>;

    /// Finds a user by telephone extension (the principal's `sip_extension`, compared exactly),
    /// without a password: a SIP call to an extension. `Ok(None)`: nobody has it.
    ///
    /// The default says nobody has one; the backends in this crate (file, LDAP, cache) all
    /// answer for real.
    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        let _ = extension;
        Ok(None)
    }

    /// Finds a user by mailbox GUID (the principal's `mailbox_guid`, compared without regard to
    /// case), without a password: an HTTP request naming the mailbox it acts on by GUID, as the
    /// seeds' endpoint identity `<guid>@<tenant>` does. `Ok(None)`: nobody has it.
    ///
    /// The default says nobody has one; the backends in this crate all answer for real.
    async fn lookup_guid(&self, guid: &str) -> Result<Option<Principal>, Unavailable> {
        let _ = guid;
        Ok(None)
    }

    /// Every user of `tenant` (for the offline address book). Backends that cannot list say so
    /// with [`Unavailable`].
    async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Unavailable> {
        let _ = tenant;
        Err(Unavailable(
            "this directory cannot list its users".to_owned(),
        ))
    }
}
