//! Users of a shared-storage fleet put in groups: any [`Directory`] whose principals name the
//! group (`g<N>`, [`mailfront_model::group::group_of`]) as their database.
//!
//! In the flow of a session it sits right above the real directory (or its cache), so that
//! every step after it — locate, route, the session registry, kicks — sees the group exactly as
//! it sees a mailbox database. With `every_user`, every principal is grouped (`[placement]
//! mode = "groups"`); without, only those whose entry names no database.

use std::sync::Arc;

use async_trait::async_trait;
use mailfront_model::group::{group_of, pin_of};
use mailfront_model::{DatabaseName, Principal, Secret};

use crate::{AuthError, Authenticated, Directory, Unavailable};

/// Whether a pin's database (`pin:<address>`) exists in the location map.
pub type PinLookup = dyn Fn(&DatabaseName) -> bool + Send + Sync;

/// A directory whose principals are placed in groups.
pub struct GroupedDirectory {
    inner: Arc<dyn Directory>,
    groups: u32,
    every_user: bool,
    pins: Option<Arc<PinLookup>>,
}

impl std::fmt::Debug for GroupedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedDirectory")
            .field("groups", &self.groups)
            .field("every_user", &self.every_user)
            .finish_non_exhaustive()
    }
}

impl GroupedDirectory {
    /// Groups the principals of `inner` into `groups` groups: all of them with `every_user`,
    /// else those without a database.
    pub fn new(inner: Arc<dyn Directory>, groups: u32, every_user: bool) -> Self {
        Self {
            inner,
            groups,
            every_user,
            pins: None,
        }
    }

    /// Users with a pin (its database in the location map, as `pins` says) get the pin's
    /// database instead of their group: the pin wins.
    pub fn with_pins(mut self, pins: Arc<PinLookup>) -> Self {
        self.pins = Some(pins);
        self
    }

    fn grouped(&self, mut principal: Principal) -> Principal {
        if self.every_user || principal.database.as_str().is_empty() {
            let pin = pin_of(&principal.address);
            principal.database = match &self.pins {
                Some(pinned) if pinned(&pin) => pin,
                _ => group_of(&principal.address, self.groups),
            };
        }
        principal
    }
}

#[async_trait]
impl Directory for GroupedDirectory {
    async fn authenticate(
        &self,
        login: &str,
        password: &Secret<Vec<u8>>,
    ) -> Result<Authenticated, AuthError> {
        let mut authenticated = self.inner.authenticate(login, password).await?;
        authenticated.principal = self.grouped(authenticated.principal);
        Ok(authenticated)
    }

    async fn lookup(&self, name: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self.inner.lookup(name).await?.map(|p| self.grouped(p)))
    }

    async fn lookup_extension(&self, extension: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self
            .inner
            .lookup_extension(extension)
            .await?
            .map(|p| self.grouped(p)))
    }

    async fn lookup_guid(&self, guid: &str) -> Result<Option<Principal>, Unavailable> {
        Ok(self.inner.lookup_guid(guid).await?.map(|p| self.grouped(p)))
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Unavailable> {
        Ok(self
            .inner
            .list(tenant)
            .await?
            .into_iter()
            .map(|p| self.grouped(p))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileDirectory;

    fn users() -> Arc<dyn Directory> {
        let text = r#"
[[user]]
address = "alice@example.com"
password = "{PLAIN}pw"
mailbox_guid = "a"
database = "DB01"
version = "15.1"

[[user]]
address = "bob@example.com"
password = "{PLAIN}pw"
mailbox_guid = "b"
version = "15.1"
"#;
        Arc::new(FileDirectory::from_users(
            crate::file::parse(text).expect("users"),
        ))
    }

    #[tokio::test]
    async fn every_user_or_only_those_without_a_database_is_grouped() {
        let every = GroupedDirectory::new(users(), 256, true);
        let alice = every.lookup("alice@example.com").await.unwrap().unwrap();
        assert_eq!(alice.database.as_str(), "g70");
        let password = Secret::new(b"pw".to_vec());
        let bob = every
            .authenticate("BOB@example.com", &password)
            .await
            .unwrap()
            .principal;
        assert_eq!(bob.database.as_str(), "g153");
        let some = GroupedDirectory::new(users(), 256, false);
        let alice = some.lookup("alice@example.com").await.unwrap().unwrap();
        assert_eq!(alice.database.as_str(), "DB01");
        let bob = some.lookup("bob@example.com").await.unwrap().unwrap();
        assert_eq!(bob.database.as_str(), "g153");
    }

    #[tokio::test]
    async fn a_pin_in_the_map_wins_over_the_group() {
        let pinned: Arc<PinLookup> =
            Arc::new(|database: &DatabaseName| database.as_str() == "pin:bob@example.com");
        let every = GroupedDirectory::new(users(), 256, true).with_pins(pinned);
        let bob = every.lookup("Bob@Example.com").await.unwrap().unwrap();
        assert_eq!(bob.database.as_str(), "pin:bob@example.com");
        let alice = every.lookup("alice@example.com").await.unwrap().unwrap();
        assert_eq!(alice.database.as_str(), "g70");
    }
}
