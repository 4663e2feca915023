//! A cache in front of any [`Directory`], so that a busy front door does not ask the directory
//! (an LDAP search and a bind) for every login.
//!
//! In the flow of a session (docs/architecture.md) it sits between the protocol front end and the real
//! directory: `authenticate` and `lookup` answers are remembered for a while.
//!
//! - A successful login is remembered for `ttl`, a refused one ("invalid credentials") for
//!   `negative_ttl`. The key is the lowercased login and a keyed hash of the password:
//!   SHA-256 over a random key made when the cache is created, then the password. The password
//!   itself is never stored, and the hash is useless outside this process. A different password
//!   is a different key, so a wrong password after a right one is asked of the directory (and a
//!   right one after a wrong one too). What is remembered is the directory's whole answer,
//!   the credential that matched included (main password or which app password, with its
//!   protocols), and the protocol check is made on it after the cache, by the caller: a
//!   remembered app password limited to IMAP is still refused for submission.
//! - `lookup` and `lookup_extension` answers are remembered for `ttl` (a user) and
//!   `negative_ttl` (no such user), in one map (a name and an extension are different keys).
//! - "Unavailable" is never remembered: the next call asks again.
//! - The price: a change in the directory (a new password, a disabled user, a moved database)
//!   is seen after at most `ttl` — the old password keeps working that long.
//! - Each of the two maps holds at most `max_entries`; when full, expired entries go first, then
//!   the entries closest to expiring (the oldest), so memory cannot grow without bound.
//!
//! Two concurrent misses for the same key both ask the directory; the later answer stays.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mailfront_model::{Principal, Secret};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{AuthError, Authenticated, Directory, Unavailable};

/// How long answers are remembered and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a successful login or a found user is remembered. Zero: not at all.
    pub ttl: Duration,
    /// How long a refused login or an unknown name is remembered. Zero: not at all.
    pub negative_ttl: Duration,
    /// The most entries each map (logins, lookups) holds.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    /// 60 s, 10 s and 100 000 entries.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: 100_000,
        }
    }
}

/// A map whose entries expire, holding at most `max` of them.
#[derive(Debug)]
struct Expiring<K, V> {
    map: HashMap<K, (Instant, V)>,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Expiring<K, V> {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            max,
        }
    }

    fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.map.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() || self.max == 0 {
            return;
        }
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            self.make_room(now);
        }
        self.map.insert(key, (now + ttl, value));
    }

    /// Drops expired entries; if that is not enough, the oldest tenth, so that the next
    /// insertions do not each pay for a scan.
    fn make_room(&mut self, now: Instant) {
        self.map.retain(|_, (expires, _)| *expires > now);
        if self.map.len() < self.max {
            return;
        }
        let keep = self.max - self.max.div_ceil(10);
        let mut by_expiry: Vec<(Instant, K)> = self
            .map
            .iter()
            .map(|(key, (expires, _))| (*expires, key.clone()))
            .collect();
        by_expiry.sort_unstable_by_key(|(expires, _)| *expires);
        let excess = by_expiry.len().saturating_sub(keep);
        for (_, key) in by_expiry.into_iter().take(excess) {
            self.map.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn clear(&mut self) {
        self.map.clear();
    }
}

/// The key of a login: lowercased name and the keyed hash of the password.
type LoginKey = (String, [u8; 32]);

/// The key of a lookup: a lowercased name, or an extension as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum LookupKey {
    Name(String),
    Extension(String),
    Guid(String),
}

/// A [`Directory`] that remembers the answers of another one. See the module documentation.
pub struct CachedDirectory<D: Directory> {
    inner: D,
    settings: CacheSettings,
    /// The random key of the password hash, made per cache (so per process).
    key: Secret<Vec<u8>>,
    logins: Mutex<Expiring<LoginKey, Result<Authenticated, ()>>>,
    lookups: Mutex<Expiring<LookupKey, Option<Principal>>>,
}

impl<D: Directory + std::fmt::Debug> std::fmt::Debug for CachedDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<D: Directory> CachedDirectory<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, settings: CacheSettings) -> Self {
        let mut key = vec![0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut key[..]);
        Self {
            inner,
            settings,
            key: Secret::new(key),
            logins: Mutex::new(Expiring::new(settings.max_entries)),
            lookups: Mutex::new(Expiring::new(settings.max_entries)),
        }
    }

    /// The directory behind the cache.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Forgets every answer (after an operator's change that must be seen at once).
    pub fn clear(&self) {
        lock(&self.logins).clear();
        lock(&self.lookups).clear();
    }

    /// How many answers are remembered now (logins, lookups), expired ones included until
    /// they are next touched or evicted.
    pub fn entries(&self) -> (usize, usize) {
        (lock(&self.logins).len(), lock(&self.lookups).len())
    }

    fn login_key(&self, login: &str, password: &Secret<Vec<u8>>) -> LoginKey {
        // Length extension does not matter here: the digest never leaves the process.
        let digest = Sha256::new()
            .chain_update(self.key.expose())
            .chain_update(password.expose())
            .finalize();
        (login.to_lowercase(), digest.into())
    }
}

impl<D: Directory> CachedDirectory<D> {
    /// A lookup answered from the cache, or by `ask` (and then remembered, unless unavailable).
    async fn remembered(
        &self,
        key: LookupKey,
        ask: impl std::future::Future<Output = Result<Option<Principal>, Unavailable>>,
    ) -> Result<Option<Principal>, Unavailable> {
        if let Some(answer) = lock(&self.lookups).get(&key, Instant::now()) {
            return Ok(answer);
        }
        let answer = ask.await?;
        let ttl = if answer.is_some() {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        };
        lock(&self.lookups).insert(key, answer.clone(), ttl, Instant::now());
        Ok(answer)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl<D: Directory> Directory for CachedDirectory<D> {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError> {
        let key = self.login_key(login, password);
        if let Some(answer) = lock(&self.logins).get(&key, Instant::now()) {
            return answer.map_err(|()| AuthError::InvalidCredentials);
        }
        let answer = self.inner.authenticate(login, password).await;
        let now = Instant::now();
        match &answer {
            Ok(authenticated) => {
                let remembered = Ok(authenticated.clone());
                lock(&self.logins).insert(key, remembered, self.settings.ttl, now);
            }
            Err(AuthError::InvalidCredentials) => {
                lock(&self.logins).insert(key, Err(()), self.settings.negative_ttl, now);
            }
            Err(AuthError::Unavailable(_)) => {}
        }
        answer
    }

    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable> {
        let key = LookupKey::Name(name.to_lowercase());
        self.remembered(key, self.inner.lookup(name)).await
    }

    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        let key = LookupKey::Extension(extension.to_owned());
        self.remembered(key, self.inner.lookup_extension(extension))
            .await
    }

    async fn lookup_guid(&self, guid: &str) -> Result<Option<Principal>, Unavailable> {
        let key = LookupKey::Guid(guid.to_ascii_lowercase());
        self.remembered(key, self.inner.lookup_guid(guid)).await
    }

    /// Not cached: an address book is asked for rarely, and should be current.
    async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Unavailable> {
        self.inner.list(tenant).await
    }
}

#[cfg(test)]
mod tests;
