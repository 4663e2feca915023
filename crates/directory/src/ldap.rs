//! The LDAP directory: users are entries in an LDAP server (OpenLDAP, 389 DS, Active Directory…).
//!
//! In the flow of a session (DESIGN.md) this is the *auth* step when the directory lives in LDAP:
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
//!
//! [directory.attributes]      # the defaults
//! address = "mail"
//! aliases = "mailAlternateAddress"
//! display_name = "cn"
//! mailbox_guid = "entryUUID"
//! # tenant = "o"              # optional; default: the domain of the address
//! database = "mailboxDatabase"
//! version = "mailboxVersion"
//! protocols = "mailProtocol"
//! sip_extension = "telephoneNumber"   # also searched for SIP calls to an extension
//! enabled = "mailEnabled"
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
//! 4. Template mode (`user_dn` set): the bind goes straight to the templated DN and the entry is
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
//! # Failures
//!
//! Every network step of one call (waiting for a pooled connection, connecting, TLS, binding,
//! searching) shares one deadline, `timeout` from the start of the call. A pooled connection
//! that fails at the transport level is dropped and the operation is retried once on a fresh
//! connection, so a restarted server is used again by the next call without restarting
//! mailfront. Passwords are never logged or put in an error message.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::asn1::{PL, StructureTag};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Scope, SearchOptions};
use mailfront_model::{DatabaseName, Principal, Protocol, ProtocolSet, Secret, Version};
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, timeout_at};

use crate::cache::CacheSettings;
use crate::{AuthError, Directory, Unavailable};

/// The LDAP result code for a wrong password or an unknown bind DN (RFC 4511 §A.2).
const INVALID_CREDENTIALS: u32 = 49;
/// The LDAP result code for a search that hit its size limit (RFC 4511 §A.2).
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// The protocol tag of a SearchResultEntry (RFC 4511 §4.5.2: `[APPLICATION 4]`).
const SEARCH_RESULT_ENTRY: u64 = 4;
/// The most entries an address-book listing reads (its search size limit).
const MAX_LISTED: i32 = 10_000;
/// Longer login names are refused without asking the server.
const MAX_LOGIN_LEN: usize = 512;

/// The `[directory]` keys of the LDAP backend (`backend = "ldap"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// The server: `ldap://host[:port]` or `ldaps://host[:port]` (implicit TLS). Required.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14) before anything else.
    /// Default false.
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file of CA certificates that sign the server's certificate (for `ldaps://` and
    /// StartTLS). Default: the system's CA certificates, as ldap3 loads them (note: if any
    /// system certificate fails to load, ldap3 trusts none, and TLS fails with "UnknownIssuer";
    /// set this key to be independent of the system store).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The DN under which users are searched (subtree). Required.
    pub base: String,
    /// The search filter; `{login}` is replaced by the login name escaped for a filter value
    /// (RFC 4515 §3). Default `(|(mail={login})(mailAlternateAddress={login}))`.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// A DN template such as `uid={local},ou=people,dc=example,dc=com`. When set, a login binds
    /// to this DN directly, without a search. `{login}` is the whole login name, `{local}` the
    /// part before the last `@`, `{domain}` the part after it; each is escaped as an attribute
    /// value in a DN (RFC 4514 §2.4). Default: none (search mode).
    #[serde(default)]
    pub user_dn: Option<String>,
    /// The DN of the service account that searches run as. Default: none (anonymous searches).
    #[serde(default)]
    pub service_dn: Option<String>,
    /// A file holding the service account's password (one line; a trailing newline is
    /// ignored). Required with `service_dn`.
    #[serde(default)]
    pub service_password_file: Option<PathBuf>,
    /// How long one directory call may take in all: waiting for a connection, connecting, TLS,
    /// binding and searching share this deadline. Default 5 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How many connections are kept open for searches (bound as the service account); as many
    /// again are kept for checking passwords. Also the number of concurrent calls of each kind;
    /// further calls wait (within `timeout`). Default 8.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a successful login or lookup is remembered (see
    /// [`CachedDirectory`](crate::cache::CachedDirectory)). Default 60 s; 0 disables.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long a refused login or an unknown name is remembered. Default 10 s; 0 disables.
    #[serde(default = "default_negative_cache_ttl", with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Which LDAP attributes hold which part of the user (`[directory.attributes]`).
    #[serde(default)]
    pub attributes: LdapAttributes,
}

/// The `[directory.attributes]` keys: the LDAP attribute (its primary name in the server's
/// schema, compared without regard to case) that holds each part of a [`Principal`]. An empty
/// name means "not read" where the part is optional.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LdapAttributes {
    /// The primary address (required in every entry; further values become aliases).
    /// Default `mail`.
    pub address: String,
    /// Alias addresses (multi-valued). Default `mailAlternateAddress`.
    pub aliases: String,
    /// The display name. Default `cn`.
    pub display_name: String,
    /// The mailbox's stable identifier (required in every entry). Default `entryUUID` (an
    /// operational attribute, RFC 4530, which the server maintains).
    pub mailbox_guid: String,
    /// The tenant. Default: none, and the tenant is the domain of the address.
    pub tenant: Option<String>,
    /// The mailbox database (required in every entry). Default `mailboxDatabase`.
    pub database: String,
    /// The mailbox version, like `15.1` (required in every entry). Default `mailboxVersion`.
    pub version: String,
    /// The enabled protocols (multi-valued: `imap`, `pop3`, …); an entry without it may use
    /// every protocol. Default `mailProtocol`.
    pub protocols: String,
    /// The telephone extension for voice mail. Default `telephoneNumber`.
    pub sip_extension: String,
    /// A flag that disables the user when it is `FALSE`, `false`, `0` or `no`: the principal then
    /// has no protocols at all. Default `mailEnabled`; empty to ignore.
    pub enabled: Option<String>,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        Self {
            address: "mail".to_owned(),
            aliases: "mailAlternateAddress".to_owned(),
            display_name: "cn".to_owned(),
            mailbox_guid: "entryUUID".to_owned(),
            tenant: None,
            database: "mailboxDatabase".to_owned(),
            version: "mailboxVersion".to_owned(),
            protocols: "mailProtocol".to_owned(),
            sip_extension: "telephoneNumber".to_owned(),
            enabled: Some("mailEnabled".to_owned()),
        }
    }
}

fn default_filter() -> String {
    "(|(mail={login})(mailAlternateAddress={login}))".to_owned()
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
    /// A configuration with every optional key at its default.
    pub fn new(url: impl Into<String>, base: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            starttls: false,
            ca_file: None,
            base: base.into(),
            filter: default_filter(),
            user_dn: None,
            service_dn: None,
            service_password_file: None,
            timeout: default_timeout(),
            pool_size: default_pool_size(),
            cache_ttl: default_cache_ttl(),
            negative_cache_ttl: default_negative_cache_ttl(),
            attributes: LdapAttributes::default(),
        }
    }

    /// Checks the keys without touching the network or the files. Messages start with the key
    /// (`directory.url: …`).
    pub fn validate(&self) -> Result<(), String> {
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
    fn validate(&self) -> Result<(), String> {
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
            ("display_name", Some(&self.display_name)),
            ("mailbox_guid", Some(&self.mailbox_guid)),
            ("tenant", self.tenant.as_ref()),
            ("database", Some(&self.database)),
            ("version", Some(&self.version)),
            ("protocols", Some(&self.protocols)),
            ("sip_extension", Some(&self.sip_extension)),
            ("enabled", self.enabled.as_ref()),
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
    fn requested(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let candidates = [
            Some(&self.address),
            Some(&self.aliases),
            Some(&self.display_name),
            Some(&self.mailbox_guid),
            self.tenant.as_ref(),
            Some(&self.database),
            Some(&self.version),
            Some(&self.protocols),
            Some(&self.sip_extension),
            self.enabled.as_ref(),
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
fn valid_attribute_name(name: &str) -> bool {
    let descr = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !name.is_empty()
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    descr || oid
}

/// The parts of an LDAP URL mailfront uses.
#[derive(Debug)]
struct Endpoint {
    host: String,
    implicit_tls: bool,
}

impl Endpoint {
    fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Accepts `ldap://host[:port][/]` and `ldaps://…`; no DN, attributes or extensions (RFC 4516
/// URL parts that would mean something else here).
fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (implicit_tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "ldaps://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "ldap://") {
        (false, rest)
    } else {
        return Err(format!("`{url}` is not an ldap:// or ldaps:// URL"));
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if hostport
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "`{url}`: only a host and a port are allowed (no DN, query or user)"
        ));
    }
    let host = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) => hostport.get(..=end).unwrap_or_default(),
            None => return Err(format!("`{url}`: unclosed `[` in the host")),
        }
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if let Some(port) = hostport.get(host.len()..).filter(|p| !p.is_empty()) {
        let valid = port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0);
        if !valid {
            return Err(format!("`{url}`: invalid port"));
        }
    }
    Ok(Endpoint {
        host: host.to_owned(),
        implicit_tls,
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// Escapes a string for use as an assertion value in a search filter (RFC 4515 §3): `*`, `(`,
/// `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`. Everything else, UTF-8 included,
/// is left as it is.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a string for use as an attribute value in a DN (RFC 4514 §2.4): `"`, `+`, `,`, `;`,
/// `<`, `>` and `\` get a backslash, and so do a leading space or `#` and a trailing space; NUL
/// becomes `\00`.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c => out.push(c),
        }
    }
    out
}

/// A filter or DN template, parsed once: literal text and `{name}` placeholders.
#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Login,
    Local,
    Domain,
}

impl Template {
    fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let (literal, tail) = rest.split_at(start);
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal.to_owned()));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let name = tail.get(1..end).unwrap_or_default();
            if !allowed.contains(&name) {
                let expected: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                return Err(format!(
                    "unknown placeholder `{{{name}}}` (expected {})",
                    expected.join(", ")
                ));
            }
            pieces.push(match name {
                "login" => Piece::Login,
                "local" => Piece::Local,
                _ => Piece::Domain,
            });
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in `{text}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    fn uses_placeholders(&self) -> bool {
        self.0.iter().any(|p| !matches!(p, Piece::Literal(_)))
    }

    /// The filter for `login` (each placeholder escaped for a filter value).
    fn expand(&self, login: &str) -> String {
        self.render(login, escape_filter_value)
    }

    /// The DN for `login` (each placeholder escaped for a DN attribute value).
    fn expand_dn(&self, login: &str) -> String {
        self.render(login, escape_dn_value)
    }

    fn render(&self, login: &str, escape: fn(&str) -> String) -> String {
        let (local, domain) = login.rsplit_once('@').unwrap_or((login, ""));
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Login => out.push_str(&escape(login)),
                Piece::Local => out.push_str(&escape(local)),
                Piece::Domain => out.push_str(&escape(domain)),
            }
        }
        out
    }
}

/// Why an [`LdapDirectory`] could not be set up (before any connection is made).
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

/// An entry as the server returned it: attribute names lowercased, values as UTF-8 text (values
/// that are not UTF-8 are left out: no attribute mailfront reads is binary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    fn values(&self, name: &str) -> &[String] {
        if name.is_empty() {
            return &[];
        }
        self.attrs
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.values(name)
            .iter()
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
    }
}

/// Reads a SearchResultEntry (RFC 4511 §4.5.2) without panicking on a malformed one (ldap3's
/// own `SearchEntry::construct` panics on a malformed entry, and the server is a peer).
fn parse_entry(tag: StructureTag) -> Option<Entry> {
    if tag.id != SEARCH_RESULT_ENTRY {
        return None;
    }
    let PL::C(parts) = tag.payload else {
        return None;
    };
    let mut parts = parts.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut pair = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(pair.next()?.expect_primitive()?).ok()?;
        let values = pair.next()?.expect_constructed()?;
        let slot = attrs.entry(name.to_ascii_lowercase()).or_default();
        for value in values {
            if let Some(bytes) = value.expect_primitive()
                && let Ok(text) = String::from_utf8(bytes)
            {
                slot.push(text);
            }
        }
    }
    Some(Entry { dn, attrs })
}

/// What makes an entry unusable: which attribute, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryProblem {
    key: &'static str,
    attribute: String,
    problem: String,
}

fn valid_address(address: &str) -> bool {
    matches!(address.split_once('@'), Some((local, domain))
        if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !address.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Whether an `enabled` value says "disabled".
fn is_disabled_value(value: &str) -> bool {
    ["false", "0", "no"]
        .iter()
        .any(|v| value.trim().eq_ignore_ascii_case(v))
}

/// Maps an entry to a principal, or says which required attribute is missing or unusable.
fn principal_from_entry(entry: &Entry, names: &LdapAttributes) -> Result<Principal, EntryProblem> {
    let problem = |key: &'static str, attribute: &str, problem: String| EntryProblem {
        key,
        attribute: attribute.to_owned(),
        problem,
    };
    let missing = |key: &'static str, attribute: &str| problem(key, attribute, "missing".into());

    let mut addresses = entry
        .values(&names.address)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty());
    let address = addresses
        .next()
        .ok_or_else(|| missing("address", &names.address))?;
    if !valid_address(&address) {
        return Err(problem(
            "address",
            &names.address,
            format!("`{address}` is not an address (local@domain)"),
        ));
    }
    // Further values of the address attribute are addresses of the same mailbox too.
    let mut aliases: Vec<String> = Vec::new();
    let more = entry
        .values(&names.aliases)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase());
    for alias in addresses.chain(more) {
        if valid_address(&alias) && alias != address && !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    let mailbox_guid = entry
        .first(&names.mailbox_guid)
        .ok_or_else(|| missing("mailbox_guid", &names.mailbox_guid))?
        .to_owned();
    let database = entry
        .first(&names.database)
        .ok_or_else(|| missing("database", &names.database))?;
    let version_text = entry
        .first(&names.version)
        .ok_or_else(|| missing("version", &names.version))?;
    let version: Version = version_text
        .parse()
        .map_err(|e| problem("version", &names.version, format!("{e}")))?;
    let tenant = names
        .tenant
        .as_deref()
        .and_then(|name| entry.first(name))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| {
            address
                .rsplit_once('@')
                .map(|(_, domain)| domain.to_owned())
                .unwrap_or_default()
        });
    let listed = entry.values(&names.protocols);
    let mut protocols = if listed.is_empty() {
        ProtocolSet::ALL
    } else {
        let mut set = ProtocolSet::NONE;
        for value in listed {
            match value.trim().parse::<Protocol>() {
                Ok(protocol) => set = set.with(protocol),
                Err(_) => tracing::warn!(
                    dn = %entry.dn,
                    attribute = %names.protocols,
                    value = %value,
                    "unknown protocol in directory entry; ignored"
                ),
            }
        }
        set
    };
    let disabled = names
        .enabled
        .as_deref()
        .and_then(|name| entry.first(name))
        .is_some_and(is_disabled_value);
    if disabled {
        protocols = ProtocolSet::NONE;
    }
    Ok(Principal {
        address,
        aliases,
        display_name: entry.first(&names.display_name).map(str::to_owned),
        mailbox_guid,
        tenant,
        database: DatabaseName::new(database),
        version,
        protocols,
        sip_extension: entry.first(&names.sip_extension).map(str::to_owned),
    })
}

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Searches, bound as the service account (or anonymous).
    Search,
    /// User binds (and, in template mode, reading the user's own entry as the user).
    Bind,
}

/// A bounded set of open connections of one role. Connections are taken out for one operation
/// and put back only if it did not fail at the transport level; a connection whose driver has
/// ended (the server closed it) is discarded when next taken.
struct Pool {
    role: Role,
    idle: Mutex<Vec<Ldap>>,
    slots: Semaphore,
}

impl Pool {
    fn new(role: Role, size: usize) -> Self {
        Self {
            role,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_back(&self, ldap: Ldap, _permit: SemaphorePermit<'_>) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ldap);
    }
}

/// Errors that mean the connection itself is broken (as opposed to an LDAP result code, after
/// which the connection is still good).
fn is_transport_error(error: &LdapError) -> bool {
    !matches!(
        error,
        LdapError::LdapResult { .. } | LdapError::FilterParsing
    )
}

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
    attributes: LdapAttributes,
    requested: Vec<String>,
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

fn read_service_password(path: &Path) -> Result<Secret<String>, LdapSetupError> {
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

fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, LdapSetupError> {
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
        let settings = Settings {
            url: config.url.clone(),
            starttls: config.starttls,
            tls,
            base: config.base.clone(),
            filter,
            user_dn,
            service,
            timeout: config.timeout,
            attributes: config.attributes.clone(),
            requested: config.attributes.requested(),
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

    /// Opens a connection for `role` (and binds the service account on a search connection).
    async fn open(&self, role: Role, deadline: Instant) -> Result<Ldap, Unavailable> {
        let mut settings = LdapConnSettings::new().set_starttls(self.settings.starttls);
        if let Some(tls) = &self.settings.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (connection, mut ldap) = timeout_at(
            deadline,
            LdapConnAsync::with_settings(settings, &self.settings.url),
        )
        .await
        .map_err(|_| self.timed_out("connect"))?
        .map_err(|e| self.unavailable("connect", e))?;
        let url = self.settings.url.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.drive().await {
                tracing::debug!(url = %url, %error, "LDAP connection ended");
            }
        });
        if role == Role::Search
            && let Some((dn, password)) = &self.settings.service
        {
            let result = timeout_at(deadline, ldap.simple_bind(dn, password.expose()))
                .await
                .map_err(|_| self.timed_out("service account bind"))?
                .map_err(|e| self.unavailable("service account bind", e))?;
            if result.rc != 0 {
                // Not the user's fault: the service account's own credentials are refused.
                return Err(self.unavailable(
                    "service account bind",
                    format_args!("{dn}: {}", describe(&result)),
                ));
            }
        }
        tracing::debug!(url = %self.settings.url, role = ?role, "LDAP connection opened");
        Ok(ldap)
    }

    /// Runs `op` on a connection of `pool` before `deadline`. A pooled connection that fails at
    /// the transport level (the server restarted, an idle timeout closed it) is dropped and the
    /// operation is retried on the next one, and finally on a fresh connection.
    async fn run<T, F, Fut>(
        &self,
        pool: &Pool,
        deadline: Instant,
        step: &str,
        mut op: F,
    ) -> Result<T, Unavailable>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let permit = timeout_at(deadline, pool.slots.acquire())
            .await
            .map_err(|_| self.timed_out("waiting for a free connection"))?
            .map_err(|e| self.unavailable("waiting for a free connection", e))?;
        loop {
            let (ldap, reused) = match pool.take_idle() {
                Some(ldap) => (ldap, true),
                None => (self.open(pool.role, deadline).await?, false),
            };
            match timeout_at(deadline, op(ldap.clone())).await {
                Err(_) => return Err(self.timed_out(step)),
                Ok(Ok(value)) => {
                    pool.put_back(ldap, permit);
                    return Ok(value);
                }
                Ok(Err(error)) if reused && is_transport_error(&error) => {
                    tracing::debug!(
                        url = %self.settings.url,
                        %error,
                        "pooled LDAP connection failed; retrying on another"
                    );
                }
                Ok(Err(error)) => {
                    if !is_transport_error(&error) {
                        pool.put_back(ldap, permit);
                    }
                    return Err(self.unavailable(step, error));
                }
            }
        }
    }

    /// Every entry with an address under the base (at most [`MAX_LISTED`]), for the address
    /// book.
    async fn search_all(&self, deadline: Instant) -> Result<Vec<Entry>, Unavailable> {
        let base = self.settings.base.as_str();
        let attributes = &self.settings.requested;
        let filter = format!("({}=*)", self.settings.attributes.address);
        let result = self
            .run(&self.search, deadline, "search", |mut ldap| {
                let filter = filter.clone();
                async move {
                    ldap.with_search_options(SearchOptions::new().sizelimit(MAX_LISTED))
                        .search(base, Scope::Subtree, &filter, attributes)
                        .await
                }
            })
            .await?;
        let ldap3::SearchResult(entries, outcome) = result;
        if outcome.rc == SIZE_LIMIT_EXCEEDED {
            tracing::warn!(base = %self.settings.base, limit = MAX_LISTED, "address list truncated at the size limit");
        } else if outcome.rc != 0 {
            return Err(self.unavailable("search", describe(&outcome)));
        }
        Ok(entries
            .into_iter()
            .filter_map(|e| parse_entry(e.0))
            .collect())
    }

    /// Searches for the entry of `login` with the filter, on a search connection.
    async fn find(&self, login: &str, deadline: Instant) -> Result<Found, Unavailable> {
        self.search_entry(self.settings.filter.expand(login), deadline)
            .await
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
            Some(entry) => parse_entry(entry.0)
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
        Ok(entries.into_iter().next().and_then(|e| parse_entry(e.0)))
    }

    fn usable(&self, entry: &Entry) -> Option<Principal> {
        match principal_from_entry(entry, &self.settings.attributes) {
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

    async fn authenticate_by_search(
        &self,
        login: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<Principal, AuthError> {
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
        match self.bind_as(&entry.dn, password, deadline).await {
            Ok(true) => Ok(principal),
            Ok(false) => Err(AuthError::InvalidCredentials),
            Err(e) => Err(AuthError::Unavailable(e.0)),
        }
    }
}

/// An LDAP result for a message: `rc=50 (insufficientAccessRights), dn: "", text: "…"`.
fn describe(result: &LdapResult) -> String {
    result.to_string()
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Principal, AuthError> {
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
            None => self.authenticate_by_search(login, password, deadline).await,
            Some(template) => {
                let dn = template.expand_dn(login);
                let entry = self.bind_and_read(&dn, password, deadline).await?;
                let Some(entry) = entry else {
                    tracing::warn!(dn = %dn, "bound as the user but found no entry; login refused");
                    return Err(AuthError::InvalidCredentials);
                };
                self.usable(&entry).ok_or(AuthError::InvalidCredentials)
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

    /// Searches `(<sip_extension attribute>=<extension>)` (the value escaped, RFC 4515 §3)
    /// under the base. The attribute's own equality rule decides what matches
    /// (`telephoneNumber` ignores spaces and hyphens). Two entries with the extension are an
    /// ambiguous directory: a warning, and nobody.
    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        let attribute = &self.settings.attributes.sip_extension;
        if attribute.is_empty()
            || extension.is_empty()
            || extension.len() > MAX_LOGIN_LEN
            || extension.chars().any(char::is_control)
        {
            return Ok(None);
        }
        let filter = format!("({attribute}={})", escape_filter_value(extension));
        let deadline = Instant::now() + self.settings.timeout;
        match self.search_entry(filter, deadline).await? {
            Found::One(entry) => Ok(self.usable(&entry)),
            Found::Nobody => Ok(None),
            Found::Several => {
                tracing::warn!(
                    extension,
                    attribute = %attribute,
                    base = %self.settings.base,
                    "extension matches more than one directory entry; treated as unknown"
                );
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests;
