//! The `[directory]` keys of the LDAP backend, their checks, and the files they name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailfront_model::Secret;
use serde::Deserialize;

use super::syntax::{Template, parse_url};
use crate::cache::CacheSettings;

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
/// schema, compared without regard to case) that holds each part of a [`Principal`](mailfront_model::Principal). An empty
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

pub(super) fn default_filter() -> String {
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
    pub(super) fn requested(&self) -> Vec<String> {
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
