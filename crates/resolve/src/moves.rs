//! Holding a login while its group moves, and while this node may not know of a move.
//!
//! Safe moves (docs/architecture.md, "Safe moves"): while the leader moves a group, every node
//! holds that group's new logins until the move is done (then they go to the new server), at
//! most `move_timeout` (then the protocol's temporary error). A node that is not *present* in the
//! array's store — its lease lapsed, or it has not read the store since it came back — may have
//! missed a move, so it serves no group at all until it is present again. Nothing here does I/O:
//! the presence is kept by the Active Manager (`manager::presence`), the moves come with the
//! location map.

use std::sync::Mutex;
use std::time::Duration;

use mailfront_model::group::{group_of, is_group, pin_of, pinned_user};
use mailfront_model::{DatabaseName, Principal};
use mailfront_routing::Reason;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a login waits at most for its group's move (the default of
/// `placement.move_timeout`).
pub const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a held login looks again (besides every change of the location map).
const RECHECK: Duration = Duration::from_millis(20);

/// Whether this node is present in the array's store, and until when (its lease's keep-alive
/// answered; the instant is a margin before the lease can expire in etcd).
#[derive(Debug, Default)]
pub struct Presence {
    until: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Presence {
    /// Not present (yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Present until `until` (unless renewed).
    pub fn present_until(&self, until: Instant) {
        *self.lock() = Some(until);
        self.changed.notify_waiters();
    }

    /// Not present any more.
    pub fn absent(&self) {
        *self.lock() = None;
        self.changed.notify_waiters();
    }

    /// Whether this node is present now.
    pub fn is_present(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How logins are held during moves.
#[derive(Clone, Debug)]
pub struct MoveHold {
    /// The longest a login waits for its group's move.
    pub move_timeout: Duration,
    /// The groups placed by group (`g0` … `g<groups-1>`), if `[placement]` is configured.
    pub groups: Option<u32>,
    /// This node's presence in the array's store (`None`: there is no array — the location
    /// file — and the node is always present).
    pub presence: Option<std::sync::Arc<Presence>>,
}

impl Default for MoveHold {
    fn default() -> Self {
        Self {
            move_timeout: DEFAULT_MOVE_TIMEOUT,
            groups: None,
            presence: None,
        }
    }
}

impl MoveHold {
    /// Whether `database` is a group (or a pin) this node must be present to serve.
    fn needs_presence(&self, database: &DatabaseName) -> Option<&Presence> {
        let groups = self.groups?;
        let presence = self.presence.as_deref()?;
        (is_group(database, groups) || pinned_user(database).is_some()).then_some(presence)
    }
}

impl super::Resolver {
    /// Whether sessions of `database` need a fence (see [`Self::may_serve`]): a group or a pin,
    /// with an array store (etcd) in which this node must be present.
    pub fn fences(&self, database: &DatabaseName) -> bool {
        self.moves.load().needs_presence(database).is_some()
    }

    /// Whether this node may still forward a client's bytes of `database` to `server`: it is
    /// present in the array's store, and its map still has the database on that server. False
    /// after a freeze longer than the presence (the leader may have moved the group without this
    /// node) until the node is back with a fresh map — and then the map says where it went.
    pub fn may_serve(&self, database: &DatabaseName, server: &mailfront_model::ServerName) -> bool {
        let hold = self.moves.load();
        hold.needs_presence(database)
            .is_none_or(Presence::is_present)
            && self
                .locator
                .locate(database)
                .is_ok_and(|active| &active == server)
    }

    /// `principal` with the database the location map gives its user now, if that changed
    /// since the directory answered: a pin made meanwhile wins over the group, and a pin
    /// removed meanwhile gives the user back to the group. `None`: unchanged (or not placed by
    /// group). A login asks again before each try, so that it registers under the database it
    /// is served by.
    pub fn regroup(&self, principal: &Principal) -> Option<Principal> {
        let groups = self.moves.load().groups?;
        let pin = pin_of(&principal.address);
        if principal.database != pin && !is_group(&principal.database, groups) {
            // A database of the user's own: not placed by group.
            return None;
        }
        let now = if self.locator.locate(&pin).is_ok() {
            pin
        } else {
            group_of(&principal.address, groups)
        };
        (principal.database != now).then(|| Principal {
            database: now,
            ..principal.clone()
        })
    }

    /// Waits while `database` is moving, or is a group this node is not present to serve, at
    /// most the hold's `move_timeout`; `Some(reason)` if it is still so then.
    pub(crate) async fn settled(&self, database: &DatabaseName) -> Option<Reason> {
        let hold = self.moves.load_full();
        let presence = hold.needs_presence(database);
        let unsettled = || {
            if presence.is_some_and(|p| !p.is_present()) {
                return Some(Reason::NotPresent(database.clone()));
            }
            self.locator
                .moving(database)
                .map(|underway| Reason::MoveUnderway {
                    database: database.clone(),
                    to: underway.to,
                })
        };
        // Settled (the usual case): no wait at all.
        let mut reason = unsettled()?;
        let started = Instant::now();
        let deadline = started + hold.move_timeout;
        let mut changes = self.locator.subscribe();
        loop {
            let wake = async {
                tokio::select! {
                    _ = changes.changed() => {}
                    () = async {
                        match presence {
                            Some(p) => p.changed.notified().await,
                            None => std::future::pending().await,
                        }
                    } => {}
                    () = tokio::time::sleep(RECHECK) => {}
                }
            };
            if tokio::time::timeout_at(deadline, wake).await.is_err() {
                return unsettled();
            }
            match unsettled() {
                Some(still) => reason = still,
                None => {
                    tracing::info!(%database, held_ms = started.elapsed().as_millis() as u64, was = %reason, "login held until the group settled");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn presence_lapses_by_time_alone() {
        let presence = Presence::new();
        assert!(!presence.is_present());
        presence.present_until(Instant::now() + Duration::from_secs(3));
        assert!(presence.is_present());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!presence.is_present(), "no renewal: the node is absent");
        presence.present_until(Instant::now() + Duration::from_secs(3));
        presence.absent();
        assert!(!presence.is_present());
    }
}
