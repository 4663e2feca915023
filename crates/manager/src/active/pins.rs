//! Pins (`mailfront admin pin USER SERVER`, `unpin USER`): one user of a shared-storage fleet
//! served by a named server, whatever the user's group — to investigate, or to keep a heavy
//! user apart.
//!
//! A pin is a record of its own in the location store, `pin:<address>`
//! ([`mailfront_model::group::pin_of`]); the directory gives a user whose pin is in the map the
//! pin's database instead of the group (`directory::grouped`), so everything downstream routes,
//! holds and closes by it. Every change of a pin is a safe move (docs/architecture.md, "Safe
//! moves"): a pin is *made* marked moving (every node closes the user's sessions, whatever
//! database they were under, holds the user's logins and acknowledges), and the leader flips it
//! to its server; re-pinning marks it again; *unpinning* marks it too, and once every present
//! node has acknowledged (none of the user's sessions is left anywhere, every node holds the
//! user) the leader deletes the record, and the user follows the group again. A pin never fails
//! over: while its server is down its user gets the temporary error (unpin to let the group
//! place the user).

use std::collections::BTreeMap;

use mailfront_location::record::{DatabaseRecord, Moving, Records, unix_now};
use mailfront_model::group::{group_of, pin_of, pinned_user};
use mailfront_model::{DatabaseName, ServerName};

use super::ActiveManager;
use crate::ops::{CommandError, written};

/// The `by` of a pin's move (made or re-pinned).
pub(super) const PIN: &str = "pin";
/// The `by` of an unpin: when every node acknowledged, the record is deleted, not flipped.
pub(super) const UNPIN: &str = "unpin";

/// What a pin command started.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PinReport {
    /// The user (primary address).
    pub user: String,
    /// The user's group.
    pub group: String,
    /// Where the user is served until the move is done.
    pub from: String,
    /// Where the user goes (for an unpin: the group's server).
    pub to: String,
}

impl ActiveManager {
    /// Pins `user` (an address or alias) to `server`: starts the move of the user's pin there.
    pub async fn pin_user(
        &self,
        user: &str,
        server: &ServerName,
    ) -> Result<PinReport, CommandError> {
        let (address, group) = self.pinnable(user).await?;
        if !self.resolver.topology().servers.contains_key(server) {
            return Err(CommandError::Refused(format!(
                "no server {server} is configured"
            )));
        }
        let records = self.read_pins().await?;
        let pin = pin_of(&address);
        let moving = Moving {
            to: server.clone(),
            since: unix_now(),
            by: PIN.to_owned(),
            reason: "pinned by an operator".to_owned(),
        };
        let (from, outcome) = match records.databases.get(&pin) {
            Some(stored) => {
                let record = &stored.value;
                if let Some(underway) = &record.moving {
                    return Err(CommandError::Refused(format!(
                        "{address}'s pin is already moving to {}; try again when it is done",
                        underway.to
                    )));
                }
                if &record.active == server {
                    return Err(CommandError::Refused(format!(
                        "{address} is already pinned to {server}"
                    )));
                }
                let marked = record.marked_moving(moving);
                let outcome = self.store.write_database(&pin, stored, &marked, None).await;
                (record.active.clone(), outcome)
            }
            None => {
                // Made marked: until every node has closed the user's sessions (under the group)
                // and holds the user's logins, nobody may serve the user on the pin's server.
                let from = self
                    .group_server(&records, &group)
                    .unwrap_or_else(|| server.clone());
                let record = DatabaseRecord::active_on(from.clone()).marked_moving(moving);
                (from, self.store.create_database(&pin, &record, None).await)
            }
        };
        outcome.map_err(|e| written(e, &format!("{address}'s pin")))?;
        tracing::info!(node = %self.settings.node, user = %address, %group, from = %from, to = %server, "pin started: nodes close the user's sessions and hold the user's logins");
        Ok(PinReport {
            user: address,
            group: group.to_string(),
            from: from.to_string(),
            to: server.to_string(),
        })
    }

    /// Unpins `user`: starts the move back to the group; the leader removes the pin once every
    /// node has acknowledged.
    pub async fn unpin_user(&self, user: &str) -> Result<PinReport, CommandError> {
        let (address, group) = self.pinnable(user).await?;
        let records = self.read_pins().await?;
        let pin = pin_of(&address);
        let Some(stored) = records.databases.get(&pin) else {
            return Err(CommandError::Refused(format!("{address} is not pinned")));
        };
        let record = &stored.value;
        if let Some(underway) = &record.moving {
            return Err(CommandError::Refused(format!(
                "{address}'s pin is moving to {} ({}); try again when it is done",
                underway.to, underway.by
            )));
        }
        let to = self
            .group_server(&records, &group)
            .unwrap_or_else(|| record.active.clone());
        let marked = record.marked_moving(Moving {
            to: to.clone(),
            since: unix_now(),
            by: UNPIN.to_owned(),
            reason: "unpinned by an operator".to_owned(),
        });
        self.store
            .write_database(&pin, stored, &marked, None)
            .await
            .map_err(|e| written(e, &format!("{address}'s pin")))?;
        tracing::info!(node = %self.settings.node, user = %address, %group, from = %record.active, "unpin started: nodes close the user's sessions and hold the user's logins");
        Ok(PinReport {
            user: address,
            group: group.to_string(),
            from: record.active.to_string(),
            to: to.to_string(),
        })
    }

    /// Every pin in `records`: user → server (where it goes, while it moves).
    pub fn pins(records: &Records) -> BTreeMap<String, String> {
        records
            .databases
            .iter()
            .filter_map(|(name, stored)| {
                let user = pinned_user(name)?;
                let record = &stored.value;
                let server = record.destination();
                Some((user.to_owned(), server.to_string()))
            })
            .collect()
    }

    /// The user's primary address and group; refused without placement by group or for an
    /// unknown user.
    async fn pinnable(&self, user: &str) -> Result<(String, DatabaseName), CommandError> {
        let Some(placement) = &self.settings.placement else {
            return Err(CommandError::Refused(
                "pins need placement by group ([placement])".to_owned(),
            ));
        };
        let principal = self
            .resolver
            .lookup(user)
            .await
            .map_err(|refusal| CommandError::Unavailable(refusal.detail))?
            .ok_or_else(|| CommandError::Refused(format!("no user {user} in the directory")))?;
        let address = principal.address.to_ascii_lowercase();
        let group = group_of(&address, placement.groups);
        Ok((address, group))
    }

    async fn read_pins(&self) -> Result<Records, CommandError> {
        self.read_records().await.map_err(CommandError::Unavailable)
    }

    /// Where `group` is served (where it goes, while it moves), if it is placed.
    fn group_server(&self, records: &Records, group: &DatabaseName) -> Option<ServerName> {
        let record = &records.databases.get(group)?.value;
        Some(record.destination().clone())
    }
}
