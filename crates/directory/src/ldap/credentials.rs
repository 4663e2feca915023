//! The credentials of an entry besides the bind: its app passwords and the protocols its main
//! password may be used for (`[directory.attributes] app_passwords`, `password_protocols`), and
//! checking a password against the app passwords.
//!
//! A value that cannot be used is logged (naming the DN, the attribute and what is wrong, never
//! the hash) and left out: one broken app password must not lock the user out of the others or
//! of their main password.

use mailfront_model::{ProtocolSet, Secret};

use super::config::LdapAttributes;
use super::entry::Entry;
use crate::credential::{self, AppPassword, Credential};

/// The protocols the entry's main password may be used for: the `password_protocols` values
/// (unknown names logged and ignored), or every protocol when the attribute is not read or the
/// entry has none.
pub(super) fn password_protocols(entry: &Entry, names: &LdapAttributes) -> ProtocolSet {
    super::entry::listed_protocols(entry, &names.password_protocols)
}

/// The entry's usable app passwords, in the order the server sent them (at most
/// [`credential::MAX_APP_PASSWORDS`]; a value that cannot be used is logged and left out).
pub(super) fn app_passwords(entry: &Entry, names: &LdapAttributes) -> Vec<AppPassword> {
    let mut apps = Vec::new();
    for (index, value) in entry.values(&names.app_passwords).iter().enumerate() {
        let added =
            AppPassword::from_ldap_value(value).and_then(|app| credential::add(&mut apps, app));
        if let Err(error) = added {
            // The value holds a hash: log where it is and what is wrong, never the value.
            tracing::warn!(
                dn = %entry.dn,
                attribute = %names.app_passwords,
                value = index,
                part = error.part().unwrap_or("-"),
                %error,
                "unusable app password in directory entry; ignored"
            );
        }
    }
    apps
}

/// The app password `password` is, if any. Slow hashes are checked off the async threads.
pub(super) async fn check_app_passwords(
    apps: Vec<AppPassword>,
    password: &Secret<Vec<u8>>,
) -> Result<Option<Credential>, tokio::task::JoinError> {
    if apps.iter().all(AppPassword::is_cheap) {
        return Ok(credential::matching_app_password(&apps, password.expose()));
    }
    let password = password.clone();
    tokio::task::spawn_blocking(move || credential::matching_app_password(&apps, password.expose()))
        .await
}

#[cfg(test)]
mod tests;
