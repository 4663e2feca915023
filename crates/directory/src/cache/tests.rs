//! Tests of the directory cache, with a fake directory that counts calls and tokio's paused
//! clock to make entries expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mailfront_model::{DatabaseName, ProtocolSet, Version};

use super::*;

/// A directory of users in memory that counts how often it is asked.
#[derive(Default)]
struct Fake {
    users: Mutex<HashMap<String, (String, Principal)>>,
    down: Mutex<bool>,
    authentications: AtomicUsize,
    lookups: AtomicUsize,
}

impl Fake {
    fn set(&self, address: &str, password: &str, database: &str) {
        lock(&self.users).insert(
            address.to_owned(),
            (password.to_owned(), principal(address, database)),
        );
    }

    fn set_extension(&self, address: &str, extension: &str) {
        if let Some((_, principal)) = lock(&self.users).get_mut(address) {
            principal.sip_extension = Some(extension.to_owned());
        }
    }

    fn remove(&self, address: &str) {
        lock(&self.users).remove(address);
    }

    fn set_down(&self, down: bool) {
        *lock(&self.down) = down;
    }

    fn authentications(&self) -> usize {
        self.authentications.load(Ordering::SeqCst)
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

fn principal(address: &str, database: &str) -> Principal {
    Principal {
        address: address.to_owned(),
        aliases: vec![],
        display_name: None,
        mailbox_guid: format!("guid-{address}"),
        tenant: "example.com".to_owned(),
        database: DatabaseName::new(database),
        version: Version::new(15, 1, 0),
        protocols: ProtocolSet::ALL,
        sip_extension: None,
    }
}

#[async_trait]
impl Directory for Arc<Fake> {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError> {
        self.authentications.fetch_add(1, Ordering::SeqCst);
        if *lock(&self.down) {
            return Err(AuthError::Unavailable("fake is down".to_owned()));
        }
        match lock(&self.users).get(&login.to_lowercase()) {
            Some((right, principal)) if right.as_bytes() == password.expose().as_slice() => {
                Ok(Authenticated::main_password(principal.clone()))
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if *lock(&self.down) {
            return Err(Unavailable("fake is down".to_owned()));
        }
        Ok(lock(&self.users)
            .get(&name.to_lowercase())
            .map(|(_, p)| p.clone()))
    }

    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if *lock(&self.down) {
            return Err(Unavailable("fake is down".to_owned()));
        }
        Ok(lock(&self.users)
            .values()
            .map(|(_, p)| p)
            .find(|p| p.sip_extension.as_deref() == Some(extension))
            .cloned())
    }
}

fn pw(text: &str) -> Secret<Vec<u8>> {
    Secret::new(text.as_bytes().to_vec())
}

fn cached(fake: &Arc<Fake>) -> CachedDirectory<Arc<Fake>> {
    CachedDirectory::new(Arc::clone(fake), CacheSettings::default())
}

const TTL: Duration = Duration::from_secs(60);
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
const LITTLE: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_successful_login_is_answered_from_the_cache_until_the_ttl() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    let directory = cached(&fake);

    let first = directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap()
        .principal;
    assert_eq!(first.database, DatabaseName::new("DB01"));
    // Any case of the login is the same key.
    let again = directory
        .authenticate("ALICE@Example.com", &pw("right"))
        .await
        .unwrap()
        .principal;
    assert_eq!(again, first);
    assert_eq!(fake.authentications(), 1);

    // The backend changes (database moved to another record): not seen before the TTL…
    fake.set("alice@example.com", "right", "DB07");
    tokio::time::advance(TTL - LITTLE).await;
    let cached = directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap()
        .principal;
    assert_eq!(cached.database, DatabaseName::new("DB01"));
    assert_eq!(fake.authentications(), 1);

    // …and seen after it.
    tokio::time::advance(LITTLE * 2).await;
    let fresh = directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap()
        .principal;
    assert_eq!(fresh.database, DatabaseName::new("DB07"));
    assert_eq!(fake.authentications(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_after_a_right_one_is_not_answered_from_the_positive_cache() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    let directory = cached(&fake);

    directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap();
    assert_eq!(
        directory
            .authenticate("alice@example.com", &pw("wrong"))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(fake.authentications(), 2);
    // A prefix or an extension of the right password is a different key too.
    for other in ["righ", "right ", "rightt", ""] {
        assert_eq!(
            directory
                .authenticate("alice@example.com", &pw(other))
                .await,
            Err(AuthError::InvalidCredentials),
            "{other:?}"
        );
    }
    assert_eq!(fake.authentications(), 6);
    // The right password is still answered from the cache.
    directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap();
    assert_eq!(fake.authentications(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_is_remembered_for_the_negative_ttl() {
    let fake = Arc::new(Fake::default());
    let directory = cached(&fake);

    for _ in 0..3 {
        assert_eq!(
            directory.authenticate("carol@example.com", &pw("pw")).await,
            Err(AuthError::InvalidCredentials)
        );
    }
    assert_eq!(fake.authentications(), 1);

    // Carol is created; the refusal stands until the negative TTL is over.
    fake.set("carol@example.com", "pw", "DB03");
    tokio::time::advance(NEGATIVE_TTL - LITTLE).await;
    assert_eq!(
        directory.authenticate("carol@example.com", &pw("pw")).await,
        Err(AuthError::InvalidCredentials)
    );
    tokio::time::advance(LITTLE * 2).await;
    directory
        .authenticate("carol@example.com", &pw("pw"))
        .await
        .unwrap();
    assert_eq!(fake.authentications(), 2);
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_never_cached() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    fake.set_down(true);
    let directory = cached(&fake);

    for _ in 0..3 {
        assert!(matches!(
            directory
                .authenticate("alice@example.com", &pw("right"))
                .await,
            Err(AuthError::Unavailable(_))
        ));
        assert!(directory.lookup("alice@example.com").await.is_err());
    }
    assert_eq!(fake.authentications(), 3);
    assert_eq!(fake.lookups(), 3);

    fake.set_down(false);
    directory
        .authenticate("alice@example.com", &pw("right"))
        .await
        .unwrap();
    assert!(
        directory
            .lookup("alice@example.com")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(fake.authentications(), 4);
    assert_eq!(fake.lookups(), 4);
}

#[tokio::test(start_paused = true)]
async fn lookups_are_cached_positively_and_negatively() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    let directory = cached(&fake);

    assert!(
        directory
            .lookup("Alice@example.com")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        directory
            .lookup("alice@example.com")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(directory.lookup("nobody@example.com").await.unwrap(), None);
    assert_eq!(directory.lookup("nobody@example.com").await.unwrap(), None);
    assert_eq!(fake.lookups(), 2);

    // Nobody is created and alice removed: nobody is seen after the negative TTL, alice's
    // removal after the positive one.
    fake.set("nobody@example.com", "x", "DB09");
    fake.remove("alice@example.com");
    tokio::time::advance(NEGATIVE_TTL + LITTLE).await;
    assert!(
        directory
            .lookup("nobody@example.com")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        directory
            .lookup("alice@example.com")
            .await
            .unwrap()
            .is_some()
    );
    tokio::time::advance(TTL).await;
    assert_eq!(directory.lookup("alice@example.com").await.unwrap(), None);
    assert_eq!(fake.lookups(), 4);
}

#[tokio::test(start_paused = true)]
async fn extension_lookups_are_cached_like_lookups() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    fake.set_extension("alice@example.com", "4001");
    let directory = cached(&fake);

    for _ in 0..3 {
        let alice = directory.lookup_extension("4001").await.unwrap().unwrap();
        assert_eq!(alice.address, "alice@example.com");
        assert_eq!(directory.lookup_extension("4002").await.unwrap(), None);
    }
    assert_eq!(fake.lookups(), 2);
    // A name and an extension are different keys, even when they are the same text.
    assert_eq!(directory.lookup("4001").await.unwrap(), None);
    assert_eq!(fake.lookups(), 3);

    // Bob gets 4002: seen after the negative TTL. Alice's extension moves to 4003: her old one
    // answers from the cache until the positive TTL is over.
    fake.set("bob@example.com", "pw", "DB02");
    fake.set_extension("bob@example.com", "4002");
    fake.set_extension("alice@example.com", "4003");
    tokio::time::advance(NEGATIVE_TTL + LITTLE).await;
    let bob = directory.lookup_extension("4002").await.unwrap().unwrap();
    assert_eq!(bob.address, "bob@example.com");
    assert!(directory.lookup_extension("4001").await.unwrap().is_some());
    tokio::time::advance(TTL).await;
    assert_eq!(directory.lookup_extension("4001").await.unwrap(), None);

    // Unavailable is never remembered.
    directory.clear();
    fake.set_down(true);
    let before = fake.lookups();
    for _ in 0..2 {
        assert!(directory.lookup_extension("4003").await.is_err());
    }
    assert_eq!(fake.lookups(), before + 2);
    fake.set_down(false);
    assert!(directory.lookup_extension("4003").await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_disables_caching() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "right", "DB01");
    let directory = CachedDirectory::new(
        Arc::clone(&fake),
        CacheSettings {
            ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            ..CacheSettings::default()
        },
    );
    for _ in 0..2 {
        directory
            .authenticate("alice@example.com", &pw("right"))
            .await
            .unwrap();
        let _ = directory
            .authenticate("alice@example.com", &pw("wrong"))
            .await;
        directory.lookup("alice@example.com").await.unwrap();
    }
    assert_eq!(fake.authentications(), 4);
    assert_eq!(fake.lookups(), 2);
    assert_eq!(directory.entries(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded() {
    let fake = Arc::new(Fake::default());
    let directory = CachedDirectory::new(
        Arc::clone(&fake),
        CacheSettings {
            max_entries: 100,
            ..CacheSettings::default()
        },
    );
    for i in 0..1000 {
        let _ = directory
            .authenticate(&format!("user{i}@example.com"), &pw("pw"))
            .await;
        let _ = directory.lookup(&format!("user{i}@example.com")).await;
        let (logins, lookups) = directory.entries();
        assert!(logins <= 100 && lookups <= 100, "{logins} {lookups}");
        tokio::time::advance(LITTLE).await;
    }
    // The newest answers stayed; the oldest were evicted.
    let before = fake.authentications();
    let _ = directory
        .authenticate("user999@example.com", &pw("pw"))
        .await;
    assert_eq!(fake.authentications(), before);
    let _ = directory.authenticate("user0@example.com", &pw("pw")).await;
    assert_eq!(fake.authentications(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_evicted_first() {
    let mut map: Expiring<u32, u32> = Expiring::new(4);
    let now = Instant::now();
    map.insert(1, 1, Duration::from_secs(1), now);
    map.insert(2, 2, Duration::from_secs(100), now);
    map.insert(3, 3, Duration::from_secs(1), now);
    map.insert(4, 4, Duration::from_secs(100), now);
    let later = now + Duration::from_secs(2);
    map.insert(5, 5, Duration::from_secs(100), later);
    // Only the two expired entries went; nothing live was evicted.
    assert_eq!(map.len(), 3);
    for live in [2, 4, 5] {
        assert_eq!(map.get(&live, later), Some(live));
    }
    // Updating a key that is there never evicts.
    map.insert(6, 6, Duration::from_secs(100), later);
    map.insert(6, 7, Duration::from_secs(100), later);
    assert_eq!(map.len(), 4);
    assert_eq!(map.get(&6, later), Some(7));
}

#[tokio::test]
async fn the_password_is_not_kept() {
    let fake = Arc::new(Fake::default());
    fake.set("alice@example.com", "correct horse battery staple", "DB01");
    let directory = cached(&fake);
    directory
        .authenticate("alice@example.com", &pw("correct horse battery staple"))
        .await
        .unwrap();
    let logins = lock(&directory.logins);
    let dump = format!("{:?}", logins.map);
    assert!(!dump.contains("correct horse"), "{dump}");
    let digest = logins.map.keys().next().unwrap().1;
    let unkeyed: [u8; 32] = Sha256::digest(b"correct horse battery staple").into();
    assert_ne!(digest, unkeyed);
}
