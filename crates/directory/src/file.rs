//! The embedded directory: a TOML file of users, reloaded when an operator changes it.
//!
//! ```toml
//! [[user]]
//! address = "alice@example.com"
//! aliases = ["a.smith@example.com"]       # optional
//! display_name = "Alice Smith"            # optional
//! password = "{SHA512-CRYPT}$6$..."       # from `mailfront hash-password`
//! mailbox_guid = "0b0c7a4e-…"             # unique
//! tenant = "example.com"                  # optional; defaults to the address's domain
//! database = "DB01"                      # optional with [placement]: the user's group instead
//! version = "15.1"
//! protocols = ["imap", "pop3", "submission", "smtp", "http", "sip"]   # optional; default all
//! sip_extension = "4001"                  # optional; unique (a SIP call to 4001 finds this user)
//! password_protocols = ["http"]           # optional; where the main password works; default all
//! app_passwords = [                       # optional; from `mailfront app-password`
//!   { name = "phone", protocols = ["imap", "submission"], created = "2026-12-04T17:00:00Z",
//!     hash = "{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$…" },
//! ]
//! ```
//!
//! App passwords (see [`credential`](crate::credential)) are checked before the main password;
//! each has a name unique within the user, at least one protocol, a creation time (RFC 3339,
//! UTC; a TOML date-time or a string) and a hash that is not `{PLAIN}`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use mailfront_filewatch::{FileWatch, spawn_poller};
use mailfront_model::{DatabaseName, Principal, ProtocolSet, Secret, Version};
use mailfront_password::{PasswordHash, Scheme, hash_password};
use serde::Deserialize;

use crate::credential::{self, AppPassword, Authenticated, Credential};
use crate::{AuthError, Directory, Unavailable};

/// Why a directory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryFileError {
    /// The file could not be read.
    #[error("cannot read directory file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid directory; the message names the key.
    #[error("invalid directory file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key (e.g. `user[2].password: …`).
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    user: Vec<UserRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    address: String,
    #[serde(default)]
    aliases: Vec<String>,
    display_name: Option<String>,
    password: String,
    mailbox_guid: String,
    tenant: Option<String>,
    #[serde(default)]
    database: String,
    version: Version,
    protocols: Option<ProtocolSet>,
    sip_extension: Option<String>,
    password_protocols: Option<ProtocolSet>,
    #[serde(default)]
    app_passwords: Vec<AppPasswordRecord>,
}

/// One `app_passwords` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPasswordRecord {
    name: String,
    hash: String,
    protocols: ProtocolSet,
    created: Created,
}

/// A creation time: a quoted RFC 3339 string or a bare TOML date-time.
#[derive(Deserialize)]
#[serde(untagged)]
enum Created {
    Text(String),
    Toml(toml::value::Datetime),
}

impl Created {
    fn text(&self) -> String {
        match self {
            Created::Text(text) => text.clone(),
            Created::Toml(datetime) => datetime.to_string(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    hash: PasswordHash,
    /// The protocols the main password may be used for.
    password_protocols: ProtocolSet,
    apps: Vec<AppPassword>,
}

impl Entry {
    /// Whether every check is cheap enough to do in place.
    fn is_cheap(&self) -> bool {
        self.hash.is_cheap() && self.apps.iter().all(AppPassword::is_cheap)
    }

    /// The credential `password` matches: an app password, else the main password.
    fn check(&self, password: &[u8]) -> Option<Authenticated> {
        let credential = credential::matching_app_password(&self.apps, password).or_else(|| {
            self.hash.verify(password).then_some(Credential::Password {
                protocols: self.password_protocols,
            })
        })?;
        Some(Authenticated {
            principal: self.principal.clone(),
            credential,
        })
    }
}

/// A parsed, validated directory file.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<Entry>>,
    /// By `sip_extension`, exactly as written (trimmed).
    by_extension: HashMap<String, Arc<Entry>>,
    /// By `mailbox_guid`, lowercase.
    by_guid: HashMap<String, Arc<Entry>>,
    count: usize,
    plaintext: Vec<String>,
}

impl Users {
    /// How many users the file defines.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the file defines no user.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Addresses of users whose password is stored as `{PLAIN}` (`mailfront check` warns).
    pub fn plaintext_passwords(&self) -> &[String] {
        &self.plaintext
    }

    /// Addresses of users whose entry names no database (placed by group, `[placement]`), by
    /// address.
    pub fn without_database(&self) -> Vec<&str> {
        let mut found: Vec<&str> = self
            .by_name
            .iter()
            .filter(|(name, entry)| {
                **name == entry.principal.address && entry.principal.database.as_str().is_empty()
            })
            .map(|(name, _)| name.as_str())
            .collect();
        found.sort_unstable();
        found
    }

    /// The users of `tenant`, each once, by address.
    pub fn in_tenant(&self, tenant: &str) -> Vec<Principal> {
        let mut users: Vec<Principal> = self
            .by_name
            .iter()
            .filter(|(name, entry)| {
                **name == entry.principal.address
                    && entry.principal.tenant.eq_ignore_ascii_case(tenant)
            })
            .map(|(_, entry)| entry.principal.clone())
            .collect();
        users.sort_by(|a, b| a.address.cmp(&b.address));
        users
    }

    fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_name.get(&name.to_ascii_lowercase())
    }

    fn get_extension(&self, extension: &str) -> Option<&Arc<Entry>> {
        self.by_extension.get(extension)
    }

    fn get_guid(&self, guid: &str) -> Option<&Arc<Entry>> {
        self.by_guid.get(&guid.to_ascii_lowercase())
    }
}

fn valid_address(address: &str) -> bool {
    let mut parts = address.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None) if !local.is_empty() && !domain.is_empty()
    ) && !address.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Parses and validates the text of a directory file. Errors name the offending key.
pub fn parse(text: &str) -> Result<Users, String> {
    let deserializer = toml::Deserializer::new(text);
    let file: UserFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().message().to_owned();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    let mut users = Users::default();
    let mut guids = HashSet::new();
    for (i, record) in file.user.into_iter().enumerate() {
        let key = format!("user[{i}]");
        let entry = user_entry(&key, record, &mut guids)?;
        users.add(&key, entry)?;
    }
    Ok(users)
}

/// Checks one user record (`key` is `user[i]`) and makes its entry; `guids` are the mailbox
/// GUIDs of the users before it, and get this one's.
fn user_entry(key: &str, record: UserRecord, guids: &mut HashSet<String>) -> Result<Entry, String> {
    let address = record.address.trim().to_ascii_lowercase();
    if !valid_address(&address) {
        return Err(format!(
            "{key}.address: `{}` is not an address (local@domain)",
            record.address
        ));
    }
    let hash: PasswordHash = record
        .password
        .parse()
        .map_err(|e| format!("{key}.password: {e}"))?;
    if record.mailbox_guid.trim().is_empty() {
        return Err(format!("{key}.mailbox_guid: must not be empty"));
    }
    if !guids.insert(record.mailbox_guid.clone()) {
        return Err(format!(
            "{key}.mailbox_guid: `{}` is already used by another user",
            record.mailbox_guid
        ));
    }
    let mut aliases = Vec::with_capacity(record.aliases.len());
    for (j, alias) in record.aliases.iter().enumerate() {
        let alias = alias.trim().to_ascii_lowercase();
        if !valid_address(&alias) {
            return Err(format!(
                "{key}.aliases[{j}]: `{alias}` is not an address (local@domain)"
            ));
        }
        aliases.push(alias);
    }
    let sip_extension = match record.sip_extension {
        Some(extension) => {
            let extension = extension.trim().to_owned();
            if extension.is_empty() || extension.chars().any(char::is_control) {
                return Err(format!(
                    "{key}.sip_extension: must not be empty (leave the key out instead)"
                ));
            }
            Some(extension)
        }
        None => None,
    };
    let tenant = match record.tenant {
        Some(tenant) => tenant.to_ascii_lowercase(),
        None => address.split('@').nth(1).unwrap_or_default().to_owned(),
    };
    let apps = app_passwords(key, record.app_passwords)?;
    let principal = Principal {
        address,
        aliases,
        display_name: record.display_name,
        mailbox_guid: record.mailbox_guid,
        tenant,
        database: DatabaseName::new(record.database.trim()),
        version: record.version,
        protocols: record.protocols.unwrap_or(ProtocolSet::ALL),
        sip_extension,
    };
    Ok(Entry {
        principal,
        hash,
        password_protocols: record.password_protocols.unwrap_or(ProtocolSet::ALL),
        apps,
    })
}

/// Checks the `app_passwords` of the user `key` (`user[i]`); errors name the key of the part.
fn app_passwords(key: &str, records: Vec<AppPasswordRecord>) -> Result<Vec<AppPassword>, String> {
    let mut apps = Vec::with_capacity(records.len());
    for (j, record) in records.into_iter().enumerate() {
        let at = |error: credential::AppPasswordError| match error.part() {
            Some(part) => format!("{key}.app_passwords[{j}].{part}: {error}"),
            None => format!("{key}.app_passwords[{j}]: {error}"),
        };
        let created = record.created.text();
        let app =
            AppPassword::new(&record.name, record.protocols, &created, &record.hash).map_err(at)?;
        credential::add(&mut apps, app).map_err(at)?;
    }
    Ok(apps)
}

impl Users {
    /// Adds the user of `entry` (`key` is `user[i]`), refusing an address, alias or extension
    /// that an earlier user already has.
    fn add(&mut self, key: &str, entry: Entry) -> Result<(), String> {
        let entry = Arc::new(entry);
        let principal = &entry.principal;
        if entry.hash.is_plaintext() {
            self.plaintext.push(principal.address.clone());
        }
        // Unique already (checked while parsing); case does not make another GUID.
        self.by_guid.insert(
            principal.mailbox_guid.to_ascii_lowercase(),
            Arc::clone(&entry),
        );
        if let Some(extension) = &principal.sip_extension
            && self
                .by_extension
                .insert(extension.clone(), Arc::clone(&entry))
                .is_some()
        {
            return Err(format!(
                "{key}.sip_extension: `{extension}` is already the extension of another user"
            ));
        }
        let names = std::iter::once((&principal.address, format!("{key}.address"))).chain(
            principal
                .aliases
                .iter()
                .enumerate()
                .map(|(j, a)| (a, format!("{key}.aliases[{j}]"))),
        );
        for (name, name_key) in names {
            if self
                .by_name
                .insert(name.clone(), Arc::clone(&entry))
                .is_some()
            {
                return Err(format!(
                    "{name_key}: `{name}` is already the address or alias of another user"
                ));
            }
        }
        self.count += 1;
        Ok(())
    }
}

/// Reads and validates a directory file once (for `mailfront check` and start-up).
pub fn load(path: &Path) -> Result<Users, DirectoryFileError> {
    let bytes = std::fs::read(path).map_err(|source| DirectoryFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_bytes(path, &bytes)
}

fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Users, DirectoryFileError> {
    let invalid = |message: String| DirectoryFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text =
        std::str::from_utf8(bytes).map_err(|_| invalid("the file is not UTF-8".to_owned()))?;
    parse(text).map_err(invalid)
}

/// The embedded file directory.
pub struct FileDirectory {
    users: Arc<ArcSwap<Users>>,
    /// Verified against for unknown users, so that they cost the same work as known ones.
    decoy: Option<Arc<PasswordHash>>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FileDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDirectory")
            .field("users", &self.users.load().len())
            .finish_non_exhaustive()
    }
}

/// A hash of a random password that nobody knows.
fn decoy_hash() -> Option<PasswordHash> {
    let mut random = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut random[..]);
    hash_password(Scheme::Sha512Crypt, &random)
        .ok()
        .and_then(|h| h.parse().ok())
}

impl FileDirectory {
    /// A directory over already-loaded users, not watching any file (tests, `mailfront route`).
    pub fn from_users(users: Users) -> Self {
        Self {
            users: Arc::new(ArcSwap::from_pointee(users)),
            decoy: decoy_hash().map(Arc::new),
            poller: None,
        }
    }

    /// Loads the file (an error stops start-up) and follows changes every `interval`. A change
    /// that does not validate is logged and ignored: the last good users stay in force.
    pub fn start(path: &Path, interval: Duration) -> Result<Self, DirectoryFileError> {
        let mut watch = FileWatch::new(path);
        let bytes = watch.read().map_err(|source| DirectoryFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let users = parse_bytes(path, &bytes)?;
        tracing::info!(path = %path.display(), users = users.len(), "directory loaded");
        let mut directory = Self::from_users(users);
        let shared = Arc::clone(&directory.users);
        let path = path.to_owned();
        directory.poller = Some(spawn_poller(
            watch,
            interval,
            move |bytes| match parse_bytes(&path, &bytes) {
                Ok(users) => {
                    tracing::info!(path = %path.display(), users = users.len(), "directory reloaded");
                    shared.store(Arc::new(users));
                }
                Err(error) => {
                    tracing::error!(%error, "directory change rejected; keeping the last good users");
                }
            },
        ));
        Ok(directory)
    }

    /// The users currently in force.
    pub fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }
}

impl Drop for FileDirectory {
    fn drop(&mut self) {
        if let Some(poller) = &self.poller {
            poller.abort();
        }
    }
}

#[async_trait]
impl Directory for FileDirectory {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError> {
        let entry = self.users.load().get(login).cloned();
        // Cheap schemes are checked in place: handing microseconds of work to the blocking pool
        // costs more (two thread switches) than the work. Unknown users still go to the pool,
        // for the decoy (failures take `timeouts.auth_failure_delay` anyway).
        if let Some(entry) = entry.as_ref().filter(|e| e.is_cheap()) {
            return entry
                .check(password.expose())
                .ok_or(AuthError::InvalidCredentials);
        }
        let password = password.clone();
        let decoy = self.decoy.clone();
        // Hash verification is deliberately slow CPU work: keep it off the async threads.
        let verified = tokio::task::spawn_blocking(move || match entry {
            Some(entry) => entry.check(password.expose()),
            None => {
                if let Some(decoy) = decoy {
                    let _ = decoy.verify(password.expose());
                }
                None
            }
        })
        .await
        .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
        verified.ok_or(AuthError::InvalidCredentials)
    }

    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self.users.load().get(name).map(|e| e.principal.clone()))
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Unavailable> {
        Ok(self.users.load().in_tenant(tenant))
    }

    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self
            .users
            .load()
            .get_extension(extension)
            .map(|e| e.principal.clone()))
    }

    async fn lookup_guid(&self, guid: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self
            .users
            .load()
            .get_guid(guid)
            .map(|e| e.principal.clone()))
    }
}

#[cfg(test)]
mod tests;
