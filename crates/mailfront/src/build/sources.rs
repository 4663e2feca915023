//! Where users and database locations come from: the directory, and the location map loaded
//! once (a running node follows the map with a source, which [`crate::app`] starts).

use std::sync::Arc;

use mailfront_directory::Directory;
use mailfront_directory::cache::CachedDirectory;
use mailfront_directory::file::{self as directory_file, FileDirectory};
use mailfront_directory::grouped::{GroupedDirectory, PinLookup};
use mailfront_directory::ldap::LdapDirectory;
use mailfront_location::etcd;
use mailfront_location::file as location_file;
use mailfront_location::{LocationMap, Locator};
use mailfront_model::DatabaseName;
use mailfront_net::tls;

use super::topology::location_validator;
use crate::config::{Config, DirectoryConfig, LocationConfig, PlacementMode};

/// Loads the embedded directory file once, without watching (for `check`); `None` for other
/// directory backends.
pub fn load_directory_file(config: &Config) -> Result<Option<directory_file::Users>, String> {
    match &config.directory {
        DirectoryConfig::File { path } => directory_file::load(path)
            .map(Some)
            .map_err(|e| format!("directory.path: {e}")),
        DirectoryConfig::Ldap(_) => Ok(None),
    }
}

/// Connects to an external directory once to see that it answers (for `check`). `Ok(None)`
/// for the embedded file, which has nothing to connect to.
pub async fn probe_directory(config: &Config) -> Result<Option<String>, String> {
    match &config.directory {
        DirectoryConfig::File { .. } => Ok(None),
        DirectoryConfig::Ldap(ldap) => {
            tls::install_crypto_provider();
            let backend = LdapDirectory::new(ldap).map_err(|e| format!("directory: {e}"))?;
            backend
                .probe()
                .await
                .map(|()| Some(format!("LDAP directory at {} answers", ldap.url)))
                .map_err(|e| format!("directory.url: {} does not answer: {e}", ldap.url))
        }
    }
}

/// The directory the configuration describes. With `follow`, the embedded file is watched for
/// edits (a running node); without, it is read once (`route`). With placement by group, a
/// user's pin in `locator`'s map wins over the group.
pub fn directory(
    config: &Config,
    follow: bool,
    locator: &Arc<Locator>,
) -> Result<Arc<dyn Directory>, String> {
    let Some(placement) = &config.placement else {
        return backend_directory(config, follow);
    };
    let every_user = placement.mode == PlacementMode::Groups;
    let locator = Arc::clone(locator);
    let pins: Arc<PinLookup> = Arc::new(move |pin: &DatabaseName| locator.locate(pin).is_ok());
    Ok(Arc::new(
        GroupedDirectory::new(
            backend_directory(config, follow)?,
            placement.groups,
            every_user,
        )
        .with_pins(pins),
    ))
}

/// The directory `[directory]` names, before placement by group.
fn backend_directory(config: &Config, follow: bool) -> Result<Arc<dyn Directory>, String> {
    Ok(match &config.directory {
        DirectoryConfig::File { path } if follow => Arc::new(
            FileDirectory::start(path, config.reload.interval)
                .map_err(|e| format!("directory.path: {e}"))?,
        ),
        DirectoryConfig::File { path } => Arc::new(FileDirectory::from_users(
            directory_file::load(path).map_err(|e| format!("directory.path: {e}"))?,
        )),
        DirectoryConfig::Ldap(ldap) => {
            tls::install_crypto_provider();
            let backend = LdapDirectory::new(ldap).map_err(|e| format!("directory: {e}"))?;
            Arc::new(CachedDirectory::new(backend, ldap.cache_settings()))
        }
    })
}

/// Loads the location map once, without watching (for `check` and `route`), with warnings
/// about entries left out (etcd values that do not parse or validate).
pub async fn load_locations(config: &Config) -> Result<(LocationMap, Vec<String>), String> {
    match &config.location {
        LocationConfig::File { path } => location_file::load(path, &*location_validator(config))
            .map(|map| (map, Vec::new()))
            .map_err(|e| format!("location.path: {e}")),
        LocationConfig::Etcd(etcd) => etcd::load(etcd, &*location_validator(config))
            .await
            .map(|snapshot| {
                let warnings = snapshot
                    .rejected
                    .into_iter()
                    .map(|r| format!("location: {r}"))
                    .collect();
                (snapshot.map, warnings)
            })
            .map_err(|e| format!("location.endpoints: {e}")),
    }
}
