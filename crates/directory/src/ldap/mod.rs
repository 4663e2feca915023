//! The LDAP directory: users are entries in an LDAP server (OpenLDAP, 389 DS, Active Directory…).
//!
//! In the flow of a session (docs/architecture.md) this is the *auth* step when the directory lives in LDAP:
//! [`LdapDirectory`] finds the user's entry, checks the password by binding as that entry, and
//! maps the entry's attributes to a [`Principal`]. Wrap it in
//! [`CachedDirectory`](crate::cache::CachedDirectory) so that every login does not cost the
//! directory a search and a bind.
//!
//! ```toml
//! [directory]
//! backend = "ldap"
//! url = "ldaps://ldap.example.com"            # or ldap:// (with starttls = true)
//! starttls = false                            # StartTLS on an ldap:// URL
//! ca_file = "/etc/mailfront/ldap-ca.pem"      # optional; default: the system's CA certificates
//! base = "ou=people,dc=example,dc=com"
//! filter = "(|(mail={login})(mailAlternateAddress={login}))"     # the default
//! # user_dn = "uid={local},ou=people,dc=example,dc=com"  # optional: bind without searching
//! service_dn = "cn=mailfront,ou=services,dc=example,dc=com"      # optional; default anonymous
//! service_password_file = "/etc/mailfront/ldap.pw"               # with service_dn
//! timeout = "5s"              # a whole directory call: connect, TLS, bind(s) and search
//! pool_size = 8               # connections kept for searches (and as many for binds)
//! cache_ttl = "60s"           # for CachedDirectory
//! negative_cache_ttl = "10s"  # for CachedDirectory
//! page_size = 500             # entries per page when listing (RFC 2696)
//! profile = "openldap"        # or "active-directory": other defaults (see below)
//! # default_version = "15.1"  # for entries without a version; default: none (openldap)
//!
//! [directory.attributes]      # the defaults (of the openldap profile)
//! address = "mail"
//! aliases = "mailAlternateAddress"
//! proxy_addresses = ""        # not read
//! mailbox_guid_fallback = ""  # not read
//! account_control = ""        # not read
//! display_name = "cn"
//! mailbox_guid = "entryUUID"
//! # tenant = "o"              # optional; default: the domain of the address
//! database = "mailboxDatabase"
//! version = "mailboxVersion"
//! protocols = "mailProtocol"
//! sip_extension = "telephoneNumber"   # also searched for SIP calls to an extension
//! enabled = "mailEnabled"
//! app_passwords = ""          # not read; e.g. "mailfrontAppPassword" (search mode only)
//! password_protocols = ""     # not read; e.g. "mailfrontPasswordProtocol"
//! ```
//!
//! # How a login is checked
//!
//! 1. An empty password is refused at once, before anything reaches the server: a simple bind
//!    with a DN and an empty password is an *unauthenticated* bind, which some servers answer
//!    with success (RFC 4513 §5.1.2).
//! 2. Search mode (no `user_dn`): the filter, with `{login}` replaced by the login name escaped
//!    as RFC 4515 §3 requires, is searched under `base` (subtree, at most 2 entries) on a
//!    connection bound as the service account (or anonymous). No entry, or more than one (the
//!    latter logged as a warning: the directory is ambiguous), is "invalid credentials".
//! 3. The password is checked by a simple bind as the entry's DN (RFC 4513 §5.1.3) on a
//!    connection of a second pool that is only ever used for user binds — see
//!    [`LdapDirectory`] for why. Result code 49 (invalidCredentials) is "invalid credentials";
//!    anything else that goes wrong is "unavailable".
//! 4. App passwords (`[directory.attributes] app_passwords`, search mode only): before the bind,
//!    the password is checked against the entry's app passwords by mailfront itself (module
//!    `credentials`); one that matches logs in without a bind, so that app-password logins are
//!    never failed binds that the server's lockout policy would count. The bind is the main
//!    password, usable for the entry's `password_protocols` (default: all).
//! 5. Template mode (`user_dn` set): the bind goes straight to the templated DN and the entry is
//!    then read (base scope) *as the user*, so the directory's access rules must let users read
//!    their own mail attributes. Only names the template maps to a DN log in this way: aliases
//!    work in search mode.
//!
//! # Entries that cannot be used
//!
//! An entry without one of the attributes a session needs (address, mailbox GUID, database,
//! version), or with an unusable value there, cannot be routed anywhere. [`LdapDirectory`]
//! logs a warning naming the DN and the attribute, and answers as if the user did not exist:
//! `authenticate` says [`AuthError::InvalidCredentials`] without trying the password (there is
//! nothing to log in to; the client learns nothing about the directory, and retrying would not
//! help, which a temporary error would invite), `lookup` says `Ok(None)`. The warning is the
//! operator's signal. A login or name that matches two or more entries is treated the same way
//! (warning, no such user).
//!
//! A directory that refuses the search itself (say, anonymous searches are not allowed, or the
//! service account's password is wrong) is *unavailable*, not "invalid credentials": the
//! problem is the configuration, not the user's password, and the message says what the server
//! answered.
//!
//! # Disabled users and protocols
//!
//! The `protocols` attribute lists the protocols a user may use (`imap`, `pop3`, `submission`,
//! `smtp`, `http`, `sip`; unknown values are ignored with a warning); without it, every protocol.
//! When the `enabled` attribute is present and its value is `FALSE`, `false`, `0` or `no` (any
//! case) the user is disabled: the password is still checked, but the principal has *no*
//! protocols, so routing refuses every protocol with the protocol's own "not allowed" answer.
//!
//! # Active Directory
//!
//! `profile = "active-directory"` ([`Profile::ActiveDirectory`]) sets AD's defaults: the filter
//! `(|(userPrincipalName={login})(mail={login})(proxyAddresses=smtp:{login}))`, the primary
//! address from the `SMTP:` value of `proxyAddresses` (else `mail`) and aliases from its `smtp:`
//! values, the mailbox GUID from `msExchMailboxGuid` (else `objectGUID`), the database from the
//! first RDN of `homeMDB`, the display name from `displayName`, the disabled state from
//! `userAccountControl`'s ACCOUNTDISABLE bit, and the version `15.1` when `mailboxVersion` is
//! absent. GUID attributes are 16 bytes in Microsoft's layout (the first three fields
//! little-endian): an entry's GUID is rendered as canonical lowercase text, and a GUID lookup
//! searches for the bytes, each escaped (RFC 4515). The decoding is in `ad`; an entry it cannot
//! read (a GUID of another length, a `homeMDB` that is not a DN, a `userAccountControl` that is
//! not an integer) is unusable, as above. (Windows refuses the bind of a disabled account itself,
//! so there a disabled user's login fails as a wrong password would; the bit still disables the
//! principal that lookups find.)
//!
//! # Listing
//!
//! The address book ([`Directory::list`]) reads every entry with an address under the base in
//! pages of `page_size` (the Simple Paged Results control, RFC 2696), all on one connection, so
//! a server's size limit per search (AD's MaxPageSize) does not cut the list. At most
//! 10,000 entries are read (then a warning). The server's control is read without panicking
//! (`paging`).
//!
//! # Failures
//!
//! Every network step of one call (waiting for a pooled connection, connecting, TLS, binding,
//! searching) shares one deadline, `timeout` from the start of the call. A pooled connection
//! that fails at the transport level is dropped and the operation is retried once on a fresh
//! connection, so a restarted server is used again by the next call without restarting
//! mailfront. Passwords are never logged or put in an error message.
//!
//! # Where is what
//!
//! The keys, the profiles, their checks and the files they name are in `config`; the URL, the
//! filter and DN templates and their escaping in `syntax`; entries and their mapping to a
//! [`Principal`] in `entry`, with Active Directory's value formats in `ad`; paged searches in
//! `paging`; the connection pools in `pool`. This module holds [`LdapDirectory`] and its
//! [`Directory`] implementation: the searches and binds of a call.

mod ad;
mod config;
mod credentials;
mod entry;
mod paging;
mod pool;
mod syntax;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{LdapResult, Scope, SearchOptions};
use mailfront_model::{Principal, Secret};
use tokio::time::Instant;

pub use config::{LdapAttributes, LdapConfig, LdapSetupError, Profile};
pub use syntax::{escape_dn_value, escape_filter_value};

use crate::{AuthError, Authenticated, Credential, Directory, Unavailable};
use config::{read_service_password, tls_config};
use entry::{Entry, Mapping, parse_entry, principal_from_entry};
use pool::{Pool, Role};
use syntax::Template;

/// The LDAP result code for a wrong password or an unknown bind DN (RFC 4511 §A.2).
const INVALID_CREDENTIALS: u32 = 49;
/// The LDAP result code for a search that hit its size limit (RFC 4511 §A.2).
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// The most entries an address-book listing reads (its search size limit).
const MAX_LISTED: i32 = 10_000;
/// Longer login names are refused without asking the server.
const MAX_LOGIN_LEN: usize = 512;

/// The settings an [`LdapDirectory`] works with, resolved from an [`LdapConfig`].
struct Settings {
    url: String,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    base: String,
    filter: Template,
    user_dn: Option<Template>,
    service: Option<(String, Secret<String>)>,
    timeout: Duration,
    mapping: Mapping,
    requested: Vec<String>,
    /// The attributes whose values are kept as bytes (the AD profile's GUIDs).
    binary: Vec<String>,
    /// Entries per page when listing (validated to fit).
    page_size: i32,
}

/// The LDAP directory backend.
///
/// It keeps two bounded pools of connections (each `pool_size`): one bound as the service
/// account (or anonymous) for searches, and one used only for user binds. A user bind changes
/// the identity of the connection it is sent on (RFC 4511 §4.2.1), so checking a password on a
/// search connection would leave it bound as that user — or, if re-binding the service account
/// afterwards failed, searching with the user's rights. A separate pool avoids that class of
/// mistake without a TCP and TLS handshake per login: each bind on a bind connection replaces
/// whatever identity the previous one left, and nothing else runs there.
///
/// Creating the directory does not connect: the first call does, and a server that is down at
/// start-up makes calls fail with "unavailable" until it is back. See [`LdapDirectory::probe`].
pub struct LdapDirectory {
    settings: Settings,
    search: Pool,
    bind: Pool,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.settings.url)
            .field("base", &self.settings.base)
            .finish_non_exhaustive()
    }
}

/// How one search for a login came out.
enum Found {
    Nobody,
    One(Entry),
    Several,
}

impl LdapDirectory {
    /// Validates the configuration and reads the files it names (service password, CA
    /// certificates). Does not connect.
    pub fn new(config: &LdapConfig) -> Result<Self, LdapSetupError> {
        config.validate().map_err(LdapSetupError::Invalid)?;
        // ldap3 builds its own rustls configuration (system roots) when no CA file is given,
        // with rustls' process-wide provider. Another part of mailfront may have installed it
        // already, which is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = config.ca_file.as_deref().map(tls_config).transpose()?;
        let service = match (&config.service_dn, &config.service_password_file) {
            (Some(dn), Some(path)) => Some((dn.clone(), read_service_password(path)?)),
            _ => None,
        };
        let filter =
            Template::parse(&config.filter, &["login"]).map_err(LdapSetupError::Invalid)?;
        let user_dn = config
            .user_dn
            .as_deref()
            .map(|t| Template::parse(t, &["login", "local", "domain"]))
            .transpose()
            .map_err(LdapSetupError::Invalid)?;
        let default_version = config
            .default_version
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| LdapSetupError::Invalid(format!("directory.default_version: {e}")))?;
        let mapping = Mapping {
            names: config.attributes.clone(),
            profile: config.profile,
            default_version,
        };
        let settings = Settings {
            url: config.url.clone(),
            starttls: config.starttls,
            tls,
            base: config.base.clone(),
            filter,
            user_dn,
            service,
            timeout: config.timeout,
            requested: config.attributes.requested(),
            binary: mapping.binary_attributes(),
            mapping,
            page_size: i32::try_from(config.page_size).unwrap_or(i32::MAX),
        };
        Ok(Self {
            settings,
            search: Pool::new(Role::Search, config.pool_size),
            bind: Pool::new(Role::Bind, config.pool_size),
        })
    }

    /// Asks the server once, for `mailfront check` and start-up logs: connects (binding the
    /// service account, if any) and reads the `base` entry. The connection stays in the pool.
    pub async fn probe(&self) -> Result<(), Unavailable> {
        let deadline = Instant::now() + self.settings.timeout;
        let base = self.settings.base.as_str();
        // "1.1": no attributes, just whether the entry is there (RFC 4511 §4.5.1.8).
        let result = self
            .run(&self.search, deadline, "probe", |mut ldap| async move {
                ldap.search(base, Scope::Base, "(objectClass=*)", ["1.1"])
                    .await
            })
            .await?;
        let ldap3::SearchResult(entries, outcome) = result;
        if outcome.rc != 0 || entries.is_empty() {
            return Err(self.unavailable(
                "probe",
                format_args!("cannot read the base {base}: {}", describe(&outcome)),
            ));
        }
        Ok(())
    }

    fn unavailable(&self, step: &str, error: impl std::fmt::Display) -> Unavailable {
        Unavailable(format!("LDAP {} ({step}): {error}", self.settings.url))
    }

    fn timed_out(&self, step: &str) -> Unavailable {
        self.unavailable(
            step,
            format_args!(
                "no answer within {}",
                humantime_serde::re::humantime::format_duration(self.settings.timeout)
            ),
        )
    }

    /// Every entry with an address under the base (at most [`MAX_LISTED`]), for the address
    /// book. Read in pages of `page_size` entries with the Simple Paged Results control
    /// (RFC 2696), all on one connection (a paging cookie belongs to its connection), so that
    /// the server's size limit per search does not cut the list. A server that does not page
    /// answers the first request with everything it will give, which is then the list.
    async fn search_all(&self, deadline: Instant) -> Result<Vec<Entry>, Unavailable> {
        let base = self.settings.base.as_str();
        let attributes = &self.settings.requested;
        let names = &self.settings.mapping.names;
        let filter = if names.proxy_addresses.is_empty() {
            format!("({}=*)", names.address)
        } else {
            format!("(|({}=*)({}=*))", names.address, names.proxy_addresses)
        };
        let page_size = self.settings.page_size;
        let listing = self
            .run(&self.search, deadline, "search", |ldap| {
                paging::search_paged(ldap, base, &filter, attributes, page_size, MAX_LISTED)
            })
            .await?;
        if let Some(problem) = &listing.problem {
            return Err(self.unavailable("search", problem));
        }
        let outcome = &listing.outcome;
        if outcome.rc == SIZE_LIMIT_EXCEEDED || listing.truncated {
            tracing::warn!(
                base = %self.settings.base,
                limit = MAX_LISTED,
                listed = listing.entries.len(),
                "address list truncated at the size limit"
            );
        } else if outcome.rc != 0 {
            return Err(self.unavailable("search", describe(outcome)));
        }
        let binary = &self.settings.binary;
        Ok(listing
            .entries
            .into_iter()
            .filter_map(|e| parse_entry(e.0, binary))
            .collect())
    }

    /// Searches for the entry of `login` with the filter, on a search connection.
    async fn find(&self, login: &str, deadline: Instant) -> Result<Found, Unavailable> {
        self.search_entry(self.settings.filter.expand(login), deadline)
            .await
    }

    /// The one user whose `attribute` equals `value` (escaped, RFC 4515 §3), without a
    /// password. No attribute configured or an unusable value: nobody. Two entries with the
    /// value are an ambiguous directory: a warning naming `what`, and nobody.
    async fn lookup_by(
        &self,
        attribute: &str,
        value: &str,
        what: &str,
    ) -> Result<Option<Principal>, Unavailable> {
        if attribute.is_empty() || !usable_name(value) {
            return Ok(None);
        }
        let filter = format!("({attribute}={})", escape_filter_value(value));
        self.lookup_filter(filter, value, what).await
    }

    /// The one user `filter` finds (searched for `value`, named `what` in a warning about an
    /// ambiguous directory).
    async fn lookup_filter(
        &self,
        filter: String,
        value: &str,
        what: &str,
    ) -> Result<Option<Principal>, Unavailable> {
        let deadline = Instant::now() + self.settings.timeout;
        match self.search_entry(filter.clone(), deadline).await? {
            Found::One(entry) => Ok(self.usable(&entry)),
            Found::Nobody => Ok(None),
            Found::Several => {
                tracing::warn!(
                    value,
                    filter = %filter,
                    base = %self.settings.base,
                    "{what} matches more than one directory entry; treated as unknown"
                );
                Ok(None)
            }
        }
    }

    /// The filter that finds the entry whose mailbox GUID is `guid` (text, any case), or `None`
    /// when `guid` cannot be one. Text GUIDs compare as text (`entryUUID`'s UUID matching
    /// ignores case). Binary GUIDs (the AD profile) compare as AD's 16 bytes, escaped: the
    /// first three fields little-endian. With a fallback attribute, an entry is found by the
    /// fallback only when it has no value of the main attribute, as the mapping reads it.
    fn guid_filter(&self, guid: &str) -> Option<String> {
        let names = &self.settings.mapping.names;
        let value = if self.settings.mapping.binary_guids() {
            ad::escape_filter_bytes(&ad::ms_bytes_from_guid_text(guid)?)
        } else {
            if !usable_name(guid) {
                return None;
            }
            escape_filter_value(guid)
        };
        let main = &names.mailbox_guid;
        let fallback = &names.mailbox_guid_fallback;
        Some(if fallback.is_empty() {
            format!("({main}={value})")
        } else {
            format!("(|({main}={value})(&(!({main}=*))({fallback}={value})))")
        })
    }

    /// Searches `filter` under the base (subtree, at most two entries), on a search connection.
    async fn search_entry(&self, filter: String, deadline: Instant) -> Result<Found, Unavailable> {
        let base = self.settings.base.as_str();
        let attributes = &self.settings.requested;
        let result = self
            .run(&self.search, deadline, "search", |mut ldap| {
                let filter = filter.clone();
                async move {
                    ldap.with_search_options(SearchOptions::new().sizelimit(2))
                        .search(base, Scope::Subtree, &filter, attributes)
                        .await
                }
            })
            .await?;
        let ldap3::SearchResult(entries, outcome) = result;
        if outcome.rc == SIZE_LIMIT_EXCEEDED || entries.len() > 1 {
            return Ok(Found::Several);
        }
        if outcome.rc != 0 {
            return Err(self.unavailable("search", describe(&outcome)));
        }
        match entries.into_iter().next() {
            None => Ok(Found::Nobody),
            Some(entry) => parse_entry(entry.0, &self.settings.binary)
                .map(Found::One)
                .ok_or_else(|| self.unavailable("search", "malformed entry in the result")),
        }
    }

    /// Checks `password` by a simple bind as `dn` on a bind connection. `Ok(false)`: refused.
    async fn bind_as(
        &self,
        dn: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<bool, Unavailable> {
        let result = self
            .run(&self.bind, deadline, "bind", |mut ldap| async move {
                ldap.simple_bind(dn, password).await
            })
            .await?;
        match result.rc {
            0 => Ok(true),
            INVALID_CREDENTIALS => Ok(false),
            _ => Err(self.unavailable("bind", describe(&result))),
        }
    }

    /// Template mode: binds as the templated DN and reads that entry as the user.
    async fn bind_and_read(
        &self,
        dn: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<Option<Entry>, AuthError> {
        let attributes = &self.settings.requested;
        let (bound, read) = self
            .run(&self.bind, deadline, "bind", |mut ldap| async move {
                let bound = ldap.simple_bind(dn, password).await?;
                if bound.rc != 0 {
                    return Ok((bound, None));
                }
                let read = ldap
                    .search(dn, Scope::Base, "(objectClass=*)", attributes)
                    .await?;
                Ok((bound, Some(read)))
            })
            .await
            .map_err(|e| AuthError::Unavailable(e.0))?;
        match bound.rc {
            0 => {}
            INVALID_CREDENTIALS => return Err(AuthError::InvalidCredentials),
            _ => {
                return Err(AuthError::Unavailable(
                    self.unavailable("bind", describe(&bound)).0,
                ));
            }
        }
        let Some(ldap3::SearchResult(entries, outcome)) = read else {
            return Ok(None);
        };
        if outcome.rc != 0 {
            tracing::warn!(
                dn,
                result = %describe(&outcome),
                "user bound but cannot read their own entry; login refused"
            );
            return Ok(None);
        }
        Ok(entries
            .into_iter()
            .next()
            .and_then(|e| parse_entry(e.0, &self.settings.binary)))
    }

    fn usable(&self, entry: &Entry) -> Option<Principal> {
        match principal_from_entry(entry, &self.settings.mapping) {
            Ok(principal) => Some(principal),
            Err(problem) => {
                tracing::warn!(
                    dn = %entry.dn,
                    key = %format_args!("directory.attributes.{}", problem.key),
                    attribute = %problem.attribute,
                    problem = %problem.problem,
                    "directory entry unusable (treated as no such user)"
                );
                None
            }
        }
    }

    /// The main password's credential for `entry`.
    fn main_password(&self, entry: &Entry) -> Credential {
        Credential::Password {
            protocols: credentials::password_protocols(entry, &self.settings.mapping.names),
        }
    }

    async fn authenticate_by_search(
        &self,
        login: &str,
        secret: &Secret<Vec<u8>>,
        password: &str,
        deadline: Instant,
    ) -> Result<Authenticated, AuthError> {
        let entry = match self.find(login, deadline).await {
            Ok(Found::One(entry)) => entry,
            Ok(Found::Nobody) => return Err(AuthError::InvalidCredentials),
            Ok(Found::Several) => {
                tracing::warn!(
                    login,
                    base = %self.settings.base,
                    "login matches more than one directory entry; refused"
                );
                return Err(AuthError::InvalidCredentials);
            }
            Err(e) => return Err(AuthError::Unavailable(e.0)),
        };
        let principal = self.usable(&entry).ok_or(AuthError::InvalidCredentials)?;
        let apps = credentials::app_passwords(&entry, &self.settings.mapping.names);
        if !apps.is_empty() {
            let matched = credentials::check_app_passwords(apps, secret)
                .await
                .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
            if let Some(credential) = matched {
                return Ok(Authenticated {
                    principal,
                    credential,
                });
            }
        }
        match self.bind_as(&entry.dn, password, deadline).await {
            Ok(true) => Ok(Authenticated {
                credential: self.main_password(&entry),
                principal,
            }),
            Ok(false) => Err(AuthError::InvalidCredentials),
            Err(e) => Err(AuthError::Unavailable(e.0)),
        }
    }
}

/// Whether `value` may be searched for: not empty, not too long, no control characters.
fn usable_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_LOGIN_LEN && !value.chars().any(char::is_control)
}

/// An LDAP result for a message: `rc=50 (insufficientAccessRights), dn: "", text: "…"`.
pub(super) fn describe(result: &LdapResult) -> String {
    result.to_string()
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError> {
        let secret = password;
        // RFC 4513 §5.1.2: a DN with an empty password is an unauthenticated bind, which a
        // server may answer with success. Never let one reach the server.
        if password.expose().is_empty() {
            tracing::debug!(login, "empty password refused without asking the directory");
            return Err(AuthError::InvalidCredentials);
        }
        if login.is_empty() || login.len() > MAX_LOGIN_LEN || login.chars().any(char::is_control) {
            return Err(AuthError::InvalidCredentials);
        }
        // ldap3 takes the bind password as text; a password that is not UTF-8 cannot be sent.
        let Ok(password) = std::str::from_utf8(password.expose()) else {
            tracing::debug!(login, "password is not UTF-8; refused");
            return Err(AuthError::InvalidCredentials);
        };
        let deadline = Instant::now() + self.settings.timeout;
        match &self.settings.user_dn {
            None => {
                self.authenticate_by_search(login, secret, password, deadline)
                    .await
            }
            Some(template) => {
                let dn = template.expand_dn(login);
                let entry = self.bind_and_read(&dn, password, deadline).await?;
                let Some(entry) = entry else {
                    tracing::warn!(dn = %dn, "bound as the user but found no entry; login refused");
                    return Err(AuthError::InvalidCredentials);
                };
                let principal = self.usable(&entry).ok_or(AuthError::InvalidCredentials)?;
                Ok(Authenticated {
                    credential: self.main_password(&entry),
                    principal,
                })
            }
        }
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Unavailable> {
        let deadline = Instant::now() + self.settings.timeout;
        let entries = self.search_all(deadline).await?;
        Ok(entries
            .iter()
            .filter_map(|entry| self.usable(entry))
            .filter(|p| p.tenant.eq_ignore_ascii_case(tenant))
            .collect())
    }

    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable> {
        if name.is_empty() || name.len() > MAX_LOGIN_LEN || name.chars().any(char::is_control) {
            return Ok(None);
        }
        let deadline = Instant::now() + self.settings.timeout;
        match self.find(name, deadline).await? {
            Found::One(entry) => Ok(self.usable(&entry)),
            Found::Nobody => Ok(None),
            Found::Several => {
                tracing::warn!(
                    name,
                    base = %self.settings.base,
                    "name matches more than one directory entry; treated as unknown"
                );
                Ok(None)
            }
        }
    }

    /// Searches `(<mailbox_guid attribute>=<guid>)` under the base, like an extension (see
    /// `guid_filter` for binary GUIDs and the fallback attribute). A `guid` that cannot be one
    /// (in the AD profile: not 32 hex digits) finds nobody, without asking the server.
    async fn lookup_guid(&self, guid: &str) -> Result<Option<Principal>, Unavailable> {
        match self.guid_filter(guid) {
            Some(filter) => self.lookup_filter(filter, guid, "mailbox GUID").await,
            None => Ok(None),
        }
    }

    /// Searches `(<sip_extension attribute>=<extension>)` under the base (the attribute's own
    /// equality rule decides what matches: `telephoneNumber` ignores spaces and hyphens).
    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        let attribute = &self.settings.mapping.names.sip_extension;
        self.lookup_by(attribute, extension, "extension").await
    }
}

#[cfg(test)]
mod tests;
