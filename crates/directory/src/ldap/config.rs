//! The `[directory]` keys of the LDAP backend, their checks, and the files they name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailfront_model::Secret;
use serde::Deserialize;

use super::syntax::{Template, parse_url};
use crate::cache::CacheSettings;

/// Which kind of directory the defaults of `filter`, `default_version` and
/// `[directory.attributes]` are for (`[directory] profile`). Every default a profile sets can
/// still be overridden key by key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// `"openldap"`, the default: a directory with mailfront's schema (or one mapped to it):
    /// text attributes, `mail`/`mailAlternateAddress`, `entryUUID` as the mailbox GUID, the
    /// database name as it is in `mailboxDatabase`, the `mailEnabled` flag.
    #[default]
    OpenLdap,
    /// `"active-directory"`: Active Directory with Exchange's attributes. Login by
    /// `userPrincipalName`, `mail` or an `smtp:` value of `proxyAddresses`; the primary address
    /// is the `SMTP:` value of `proxyAddresses` (else `mail`), the `smtp:` values are aliases;
    /// the mailbox GUID is the binary `msExchMailboxGuid` (else `objectGUID`), in Microsoft's
    /// byte order; the database is the first RDN of the `homeMDB` DN; the account is disabled
    /// when `userAccountControl` has the ACCOUNTDISABLE bit (0x2). Unlike the other profile,
    /// the GUID attributes are read as 16-byte binary values and the database attribute as a DN,
    /// whatever attributes they are mapped to.
    ActiveDirectory,
}

impl Profile {
    /// Every profile, for messages.
    const ALL: [Profile; 2] = [Profile::OpenLdap, Profile::ActiveDirectory];

    /// The name the `profile` key takes.
    pub fn name(self) -> &'static str {
        match self {
            Profile::OpenLdap => "openldap",
            Profile::ActiveDirectory => "active-directory",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The profile's default search filter.
    pub fn default_filter(self) -> &'static str {
        match self {
            Profile::OpenLdap => "(|(mail={login})(mailAlternateAddress={login}))",
            // AD's proxyAddresses matching ignores case, so `smtp:` also finds the `SMTP:`
            // (primary) value.
            Profile::ActiveDirectory => {
                "(|(userPrincipalName={login})(mail={login})(proxyAddresses=smtp:{login}))"
            }
        }
    }

    /// The version a principal gets when its entry has no version attribute: none (the
    /// attribute is required) in `openldap`; `15.1` in `active-directory`, where no standard
    /// attribute holds a mailbox version in that form (`msExchVersion` is an opaque number).
    pub fn default_version(self) -> Option<&'static str> {
        match self {
            Profile::OpenLdap => None,
            Profile::ActiveDirectory => Some("15.1"),
        }
    }

    /// The profile's default `[directory.attributes]`.
    pub fn default_attributes(self) -> LdapAttributes {
        match self {
            Profile::OpenLdap => LdapAttributes {
                address: "mail".to_owned(),
                aliases: "mailAlternateAddress".to_owned(),
                proxy_addresses: String::new(),
                display_name: "cn".to_owned(),
                mailbox_guid: "entryUUID".to_owned(),
                mailbox_guid_fallback: String::new(),
                tenant: None,
                database: "mailboxDatabase".to_owned(),
                version: "mailboxVersion".to_owned(),
                protocols: "mailProtocol".to_owned(),
                sip_extension: "telephoneNumber".to_owned(),
                enabled: Some("mailEnabled".to_owned()),
                account_control: String::new(),
                app_passwords: String::new(),
                password_protocols: String::new(),
            },
            Profile::ActiveDirectory => LdapAttributes {
                address: "mail".to_owned(),
                aliases: String::new(),
                proxy_addresses: "proxyAddresses".to_owned(),
                display_name: "displayName".to_owned(),
                mailbox_guid: "msExchMailboxGuid".to_owned(),
                mailbox_guid_fallback: "objectGUID".to_owned(),
                tenant: None,
                database: "homeMDB".to_owned(),
                version: "mailboxVersion".to_owned(),
                protocols: "mailProtocol".to_owned(),
                sip_extension: "telephoneNumber".to_owned(),
                enabled: None,
                account_control: "userAccountControl".to_owned(),
                app_passwords: String::new(),
                password_protocols: String::new(),
            },
        }
    }
}

/// The `[directory]` keys of the LDAP backend (`backend = "ldap"`). Keys left out take the
/// default of the [`Profile`].
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawLdapConfig")]
pub struct LdapConfig {
    /// Which kind of directory the defaults are for: `"openldap"` (the default) or
    /// `"active-directory"`. See [`Profile`].
    pub profile: Profile,
    /// The server: `ldap://host[:port]` or `ldaps://host[:port]` (implicit TLS). Required.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14) before anything else.
    /// Default false.
    pub starttls: bool,
    /// A PEM file of CA certificates that sign the server's certificate (for `ldaps://` and
    /// StartTLS). Default: the system's CA certificates, as ldap3 loads them (note: if any
    /// system certificate fails to load, ldap3 trusts none, and TLS fails with "UnknownIssuer";
    /// set this key to be independent of the system store).
    pub ca_file: Option<PathBuf>,
    /// The DN under which users are searched (subtree). Required.
    pub base: String,
    /// The search filter; `{login}` is replaced by the login name escaped for a filter value
    /// (RFC 4515 §3). Default: the profile's ([`Profile::default_filter`]).
    pub filter: String,
    /// A DN template such as `uid={local},ou=people,dc=example,dc=com`. When set, a login binds
    /// to this DN directly, without a search. `{login}` is the whole login name, `{local}` the
    /// part before the last `@`, `{domain}` the part after it; each is escaped as an attribute
    /// value in a DN (RFC 4514 §2.4). Default: none (search mode).
    pub user_dn: Option<String>,
    /// The DN of the service account that searches run as. Default: none (anonymous searches).
    pub service_dn: Option<String>,
    /// A file holding the service account's password (one line; a trailing newline is
    /// ignored). Required with `service_dn`.
    pub service_password_file: Option<PathBuf>,
    /// How long one directory call may take in all: waiting for a connection, connecting, TLS,
    /// binding and searching share this deadline. Default 5 s.
    pub timeout: Duration,
    /// How many connections are kept open for searches (bound as the service account); as many
    /// again are kept for checking passwords. Also the number of concurrent calls of each kind;
    /// further calls wait (within `timeout`). Default 8.
    pub pool_size: usize,
    /// How long a successful login or lookup is remembered (see
    /// [`CachedDirectory`](crate::cache::CachedDirectory)). Default 60 s; 0 disables.
    pub cache_ttl: Duration,
    /// How long a refused login or an unknown name is remembered. Default 10 s; 0 disables.
    pub negative_cache_ttl: Duration,
    /// How many entries the server is asked for per page when listing every user (the address
    /// book), with the Simple Paged Results control (RFC 2696), so that the server's size limit
    /// does not cut the list. Default 500 (Active Directory's MaxPageSize is 1000).
    pub page_size: u32,
    /// The mailbox version of an entry without the `version` attribute (`15.1`). Default: the
    /// profile's ([`Profile::default_version`]); `""` for none, which makes the attribute
    /// required.
    pub default_version: Option<String>,
    /// Which LDAP attributes hold which part of the user (`[directory.attributes]`).
    pub attributes: LdapAttributes,
    /// A `profile` value that names no profile, reported by [`LdapConfig::validate`].
    unknown_profile: Option<String>,
}

/// `[directory]` as written: what is left out gets the profile's default in `From`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapConfig {
    #[serde(default)]
    profile: Option<String>,
    url: String,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    base: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    user_dn: Option<String>,
    #[serde(default)]
    service_dn: Option<String>,
    #[serde(default)]
    service_password_file: Option<PathBuf>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_pool_size")]
    pool_size: usize,
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    cache_ttl: Duration,
    #[serde(default = "default_negative_cache_ttl", with = "humantime_serde")]
    negative_cache_ttl: Duration,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default)]
    default_version: Option<String>,
    #[serde(default)]
    attributes: RawAttributes,
}

/// `[directory.attributes]` as written (see [`LdapAttributes`] for the keys).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawAttributes {
    address: Option<String>,
    aliases: Option<String>,
    proxy_addresses: Option<String>,
    display_name: Option<String>,
    mailbox_guid: Option<String>,
    mailbox_guid_fallback: Option<String>,
    tenant: Option<String>,
    database: Option<String>,
    version: Option<String>,
    protocols: Option<String>,
    sip_extension: Option<String>,
    enabled: Option<String>,
    account_control: Option<String>,
    app_passwords: Option<String>,
    password_protocols: Option<String>,
}

impl From<RawLdapConfig> for LdapConfig {
    fn from(raw: RawLdapConfig) -> Self {
        let (profile, unknown_profile) = match raw.profile {
            None => (Profile::default(), None),
            Some(name) => match Profile::from_name(&name) {
                Some(profile) => (profile, None),
                None => (Profile::default(), Some(name)),
            },
        };
        let defaults = profile.default_attributes();
        let a = raw.attributes;
        let attributes = LdapAttributes {
            address: a.address.unwrap_or(defaults.address),
            aliases: a.aliases.unwrap_or(defaults.aliases),
            proxy_addresses: a.proxy_addresses.unwrap_or(defaults.proxy_addresses),
            display_name: a.display_name.unwrap_or(defaults.display_name),
            mailbox_guid: a.mailbox_guid.unwrap_or(defaults.mailbox_guid),
            mailbox_guid_fallback: a
                .mailbox_guid_fallback
                .unwrap_or(defaults.mailbox_guid_fallback),
            tenant: a.tenant.or(defaults.tenant),
            database: a.database.unwrap_or(defaults.database),
            version: a.version.unwrap_or(defaults.version),
            protocols: a.protocols.unwrap_or(defaults.protocols),
            sip_extension: a.sip_extension.unwrap_or(defaults.sip_extension),
            enabled: a.enabled.or(defaults.enabled),
            account_control: a.account_control.unwrap_or(defaults.account_control),
            app_passwords: a.app_passwords.unwrap_or(defaults.app_passwords),
            password_protocols: a.password_protocols.unwrap_or(defaults.password_protocols),
        };
        let default_version = match raw.default_version {
            None => profile.default_version().map(str::to_owned),
            Some(text) if text.trim().is_empty() => None,
            Some(text) => Some(text),
        };
        Self {
            profile,
            url: raw.url,
            starttls: raw.starttls,
            ca_file: raw.ca_file,
            base: raw.base,
            filter: raw
                .filter
                .unwrap_or_else(|| profile.default_filter().to_owned()),
            user_dn: raw.user_dn,
            service_dn: raw.service_dn,
            service_password_file: raw.service_password_file,
            timeout: raw.timeout,
            pool_size: raw.pool_size,
            cache_ttl: raw.cache_ttl,
            negative_cache_ttl: raw.negative_cache_ttl,
            page_size: raw.page_size,
            default_version,
            attributes,
            unknown_profile,
        }
    }
}

/// The `[directory.attributes]` keys: the LDAP attribute (its primary name in the server's
/// schema, compared without regard to case) that holds each part of a [`Principal`](mailfront_model::Principal). An empty
/// name means "not read" where the part is optional. The defaults are the profile's
/// ([`Profile::default_attributes`]); those of `openldap` are given below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapAttributes {
    /// The primary address (required in every entry unless `proxy_addresses` gives one; further
    /// values become aliases). Default `mail`.
    pub address: String,
    /// Alias addresses (multi-valued). Default `mailAlternateAddress`; none in
    /// `active-directory`.
    pub aliases: String,
    /// Exchange-style typed addresses (multi-valued): the `SMTP:` value is the primary address
    /// (before `address`, which then becomes an alias if it differs), the `smtp:` values are
    /// aliases, other types (`X500:`, `SIP:`…) are ignored. Default: none;
    /// `proxyAddresses` in `active-directory`.
    pub proxy_addresses: String,
    /// The display name. Default `cn`; `displayName` in `active-directory`.
    pub display_name: String,
    /// The mailbox's stable identifier (required in every entry, unless the fallback gives
    /// one). Default `entryUUID` (an operational attribute, RFC 4530, which the server
    /// maintains); `msExchMailboxGuid` in `active-directory`.
    pub mailbox_guid: String,
    /// Where the mailbox GUID comes from in an entry without `mailbox_guid`. Default: none;
    /// `objectGUID` in `active-directory`.
    pub mailbox_guid_fallback: String,
    /// The tenant. Default: none, and the tenant is the domain of the address.
    pub tenant: Option<String>,
    /// The mailbox database (required in every entry). Default `mailboxDatabase`; `homeMDB` in
    /// `active-directory`, whose value is a DN: the database is its first RDN's value.
    pub database: String,
    /// The mailbox version, like `15.1` (required in every entry unless `default_version` is
    /// set). Default `mailboxVersion`.
    pub version: String,
    /// The enabled protocols (multi-valued: `imap`, `pop3`, …); an entry without it may use
    /// every protocol. Default `mailProtocol`.
    pub protocols: String,
    /// The telephone extension for voice mail. Default `telephoneNumber` (in both profiles:
    /// AD's `msRTCSIP-Line` is a `tel:` URI, not an extension).
    pub sip_extension: String,
    /// A flag that disables the user when it is `FALSE`, `false`, `0` or `no`: the principal then
    /// has no protocols at all. Default `mailEnabled`; none in `active-directory`; empty to
    /// ignore.
    pub enabled: Option<String>,
    /// An AD `userAccountControl`-style integer: the ACCOUNTDISABLE bit (0x2) disables the user
    /// like `enabled`; a value that is not an integer makes the entry unusable. Default: none;
    /// `userAccountControl` in `active-directory`.
    pub account_control: String,
    /// The user's app passwords (multi-valued), one per value as
    /// `name;protocols;created;hash` (see [`credential`](crate::credential)); mailfront checks
    /// them itself, so the service account must be able to read them (and nobody else should).
    /// Only in search mode (no `user_dn`): without the user's main password there is no bind
    /// to read the entry with. Default: none (not read), in both profiles.
    pub app_passwords: String,
    /// The protocols the user's main password may be used for (multi-valued, like
    /// `protocols`); an entry without it may use the main password everywhere. Leaving out the
    /// mail protocols makes app passwords the only way in there. Default: none (not read).
    pub password_protocols: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        Profile::OpenLdap.default_attributes()
    }
}

fn default_page_size() -> u32 {
    500
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_pool_size() -> usize {
    8
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_negative_cache_ttl() -> Duration {
    Duration::from_secs(10)
}

impl LdapConfig {
    /// A configuration with every optional key at its default (the `openldap` profile).
    pub fn new(url: impl Into<String>, base: impl Into<String>) -> Self {
        Self::with_profile(Profile::OpenLdap, url, base)
    }

    /// A configuration with every optional key at `profile`'s default.
    pub fn with_profile(profile: Profile, url: impl Into<String>, base: impl Into<String>) -> Self {
        Self {
            profile,
            url: url.into(),
            starttls: false,
            ca_file: None,
            base: base.into(),
            filter: profile.default_filter().to_owned(),
            user_dn: None,
            service_dn: None,
            service_password_file: None,
            timeout: default_timeout(),
            pool_size: default_pool_size(),
            cache_ttl: default_cache_ttl(),
            negative_cache_ttl: default_negative_cache_ttl(),
            page_size: default_page_size(),
            default_version: profile.default_version().map(str::to_owned),
            attributes: profile.default_attributes(),
            unknown_profile: None,
        }
    }

    /// Checks the keys without touching the network or the files. Messages start with the key
    /// (`directory.url: …`).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.unknown_profile {
            let known: Vec<String> = Profile::ALL
                .iter()
                .map(|p| format!("`{}`", p.name()))
                .collect();
            return Err(format!(
                "directory.profile: `{name}` is not a profile (expected {})",
                known.join(" or ")
            ));
        }
        let endpoint = parse_url(&self.url).map_err(|e| format!("directory.url: {e}"))?;
        if endpoint.implicit_tls && self.starttls {
            return Err(
                "directory.starttls: an ldaps:// URL is already TLS; use ldap:// with starttls"
                    .to_owned(),
            );
        }
        if self.ca_file.is_some() && !endpoint.implicit_tls && !self.starttls {
            return Err(
                "directory.ca_file: set, but the connection does not use TLS \
                 (use an ldaps:// URL or starttls = true)"
                    .to_owned(),
            );
        }
        if self.base.trim().is_empty() {
            return Err("directory.base: must not be empty".to_owned());
        }
        let filter = Template::parse(&self.filter, &["login"])
            .map_err(|e| format!("directory.filter: {e}"))?;
        if !filter.uses_placeholders() {
            return Err("directory.filter: must contain {login}".to_owned());
        }
        if ldap3::parse_filter(filter.expand("probe@example.com")).is_err() {
            return Err(format!(
                "directory.filter: `{}` is not an LDAP filter (RFC 4515)",
                self.filter
            ));
        }
        if let Some(user_dn) = &self.user_dn {
            let template = Template::parse(user_dn, &["login", "local", "domain"])
                .map_err(|e| format!("directory.user_dn: {e}"))?;
            if !template.uses_placeholders() {
                return Err(
                    "directory.user_dn: must contain {login}, {local} or {domain}".to_owned(),
                );
            }
        }
        match (&self.service_dn, &self.service_password_file) {
            (Some(dn), Some(_)) if dn.trim().is_empty() => {
                return Err("directory.service_dn: must not be empty".to_owned());
            }
            (Some(_), None) => {
                return Err(
                    "directory.service_password_file: required with directory.service_dn"
                        .to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "directory.service_dn: required with directory.service_password_file"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err("directory.timeout: must be more than 0".to_owned());
        }
        if self.pool_size == 0 {
            return Err("directory.pool_size: must be at least 1".to_owned());
        }
        if self.page_size == 0 || i32::try_from(self.page_size).is_err() {
            return Err(format!(
                "directory.page_size: must be between 1 and {}",
                i32::MAX
            ));
        }
        if let Some(version) = &self.default_version
            && let Err(e) = version.parse::<mailfront_model::Version>()
        {
            return Err(format!("directory.default_version: {e}"));
        }
        if self.user_dn.is_some() && !self.attributes.app_passwords.is_empty() {
            return Err(
                "directory.attributes.app_passwords: needs search mode (no directory.user_dn): \
                 an app password cannot bind as the user to read the entry"
                    .to_owned(),
            );
        }
        self.attributes.validate()
    }

    /// Things that work but should not stay (for `mailfront check`): passwords sent in clear
    /// text to a server that is not on this machine.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Ok(endpoint) = parse_url(&self.url)
            && !endpoint.implicit_tls
            && !self.starttls
            && !endpoint.is_loopback()
        {
            warnings.push(format!(
                "directory.url: passwords go to {} in clear text (use ldaps:// or starttls = true)",
                self.url
            ));
        }
        warnings
    }

    /// The cache lifetimes these keys ask for (`cache_ttl`, `negative_cache_ttl`).
    pub fn cache_settings(&self) -> CacheSettings {
        CacheSettings {
            ttl: self.cache_ttl,
            negative_ttl: self.negative_cache_ttl,
            ..CacheSettings::default()
        }
    }
}

impl LdapAttributes {
    /// Checks the attribute names: the required ones are set, and every name is one.
    pub(super) fn validate(&self) -> Result<(), String> {
        let required = [
            ("address", &self.address),
            ("mailbox_guid", &self.mailbox_guid),
            ("database", &self.database),
            ("version", &self.version),
        ];
        for (key, name) in required {
            if name.is_empty() {
                return Err(format!("directory.attributes.{key}: must not be empty"));
            }
        }
        let all = [
            ("address", Some(&self.address)),
            ("aliases", Some(&self.aliases)),
            ("proxy_addresses", Some(&self.proxy_addresses)),
            ("mailbox_guid_fallback", Some(&self.mailbox_guid_fallback)),
            ("account_control", Some(&self.account_control)),
            ("display_name", Some(&self.display_name)),
            ("mailbox_guid", Some(&self.mailbox_guid)),
            ("tenant", self.tenant.as_ref()),
            ("database", Some(&self.database)),
            ("version", Some(&self.version)),
            ("protocols", Some(&self.protocols)),
            ("sip_extension", Some(&self.sip_extension)),
            ("enabled", self.enabled.as_ref()),
            ("app_passwords", Some(&self.app_passwords)),
            ("password_protocols", Some(&self.password_protocols)),
        ];
        for (key, name) in all {
            if let Some(name) = name
                && !name.is_empty()
                && !valid_attribute_name(name)
            {
                return Err(format!(
                    "directory.attributes.{key}: `{name}` is not an attribute name \
                     (a letter then letters, digits or '-', or a numeric OID)"
                ));
            }
        }
        Ok(())
    }

    /// The attribute names to request, once each.
    pub(super) fn requested(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let candidates = [
            Some(&self.address),
            Some(&self.aliases),
            Some(&self.proxy_addresses),
            Some(&self.mailbox_guid_fallback),
            Some(&self.account_control),
            Some(&self.display_name),
            Some(&self.mailbox_guid),
            self.tenant.as_ref(),
            Some(&self.database),
            Some(&self.version),
            Some(&self.protocols),
            Some(&self.sip_extension),
            self.enabled.as_ref(),
            Some(&self.app_passwords),
            Some(&self.password_protocols),
        ];
        for name in candidates.into_iter().flatten() {
            if !name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// RFC 4512 §1.4: `descr` (a letter, then letters, digits and hyphens) or a numeric OID.
pub(super) fn valid_attribute_name(name: &str) -> bool {
    let descr = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !name.is_empty()
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    descr || oid
}

/// Why an [`LdapDirectory`](super::LdapDirectory) could not be set up (before any connection is made).
#[derive(Debug, thiserror::Error)]
pub enum LdapSetupError {
    /// A key is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The service account's password file could not be read.
    #[error("directory.service_password_file: cannot read {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file could not be read or holds no usable certificate.
    #[error("directory.ca_file: {path}: {message}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads the service account's password: the file's text without its trailing line break.
pub(super) fn read_service_password(path: &Path) -> Result<Secret<String>, LdapSetupError> {
    let bytes = std::fs::read(path).map_err(|source| LdapSetupError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| LdapSetupError::PasswordFile {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    let secret = Secret::new(text);
    let password = secret.expose().trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(LdapSetupError::PasswordFile {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(Secret::new(password))
}

/// The TLS client configuration that trusts the CA certificates of `path` (PEM).
pub(super) fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, LdapSetupError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let invalid = |message: String| LdapSetupError::CaFile {
        path: path.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| invalid(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| invalid(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| invalid(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no PEM certificate in the file".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
