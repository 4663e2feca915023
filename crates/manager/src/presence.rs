//! This node's part in safe moves (docs/architecture.md, "Safe moves"): being *present* in the
//! array's store, and *acknowledging* each move once none of its sessions of the moving group
//! is left.
//!
//! **Presence** (etcd): the node holds a lease of its own (TTL `active_manager.lease_ttl`), kept
//! alive every third of the TTL, and a key `<nodes_prefix><NODE>` bound to it. The leader flips a
//! group only when every present node has acknowledged, so a node that is not present must not
//! serve groups: it counts its presence from the *sending* of its last answered keep-alive and
//! stops a quarter of the TTL before the lease could expire (like the leader's term), and after
//! (re)gaining its presence it serves groups only once its location map was read at a revision
//! after its presence key was written — so it cannot route by a map older than the moves the
//! leader counted it for. When the presence lapses, its group sessions are closed at once.
//!
//! **Acknowledgements**: for every move under way in the location map, once the registry holds
//! no session of that group (they were told to close; logins in flight count), the node writes
//! `<acks_prefix><GROUP>/<NODE>` = the record's epoch, bound to its lease. With the location
//! file there is one node; its acknowledgements stay in memory ([`Acks::Local`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailfront_location::etcd::Relister;
use mailfront_location::etcd::records::EtcdRecords;
use mailfront_location::{LocationMap, Locator};
use mailfront_model::DatabaseName;
use mailfront_resolve::moves::Presence;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leader::LeaseTiming;

/// How many sessions of a database this node has (logging in or proxied).
pub type LiveSessions = dyn Fn(&DatabaseName) -> usize + Send + Sync;

/// Where a node's acknowledgements go.
#[derive(Clone)]
pub enum Acks {
    /// etcd, under the node's lease (`None` while it has none).
    Etcd {
        /// The store.
        records: Arc<EtcdRecords>,
        /// The node's current presence lease.
        lease: watch::Receiver<Option<i64>>,
    },
    /// In memory (the location file: one node, its own leader).
    Local(LocalAcks),
}

/// The one node's acknowledgements, in memory: database → epoch.
pub type LocalAcks = Arc<Mutex<BTreeMap<DatabaseName, u64>>>;

impl Acks {
    /// Records this node's acknowledgement of `database`'s move at `epoch`.
    async fn ack(&self, node: &str, database: &DatabaseName, epoch: u64) -> Result<(), String> {
        match self {
            Acks::Etcd { records, lease } => {
                let Some(lease) = *lease.borrow() else {
                    return Err("this node is not present in the store".to_owned());
                };
                records
                    .put_ack(database, node, epoch, lease)
                    .await
                    .map_err(|e| e.to_string())
            }
            Acks::Local(acks) => {
                acks.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(database.clone(), epoch);
                Ok(())
            }
        }
    }
}

/// How often a move waiting for this node's sessions to close looks again.
const DRAIN_CHECK: Duration = Duration::from_millis(10);

/// Acknowledges every move under way in `locator`'s map once `live` says this node holds no
/// session of the group, until the locator is gone.
pub async fn acknowledge_moves(
    node: String,
    locator: Arc<Locator>,
    live: Arc<LiveSessions>,
    acks: Acks,
) {
    let mut changes = locator.subscribe();
    // Database → the epoch this node acknowledged.
    let mut acked: BTreeMap<DatabaseName, u64> = BTreeMap::new();
    loop {
        let map: Option<Arc<LocationMap>> = changes.borrow_and_update().clone();
        let mut waiting = false;
        if let Some(map) = map {
            acked.retain(|database, epoch| {
                map.moving(database)
                    .is_some_and(|underway| underway.epoch == *epoch)
            });
            for (database, underway) in map.moves_underway() {
                if acked.get(database) == Some(&underway.epoch) {
                    continue;
                }
                if live(database) > 0 {
                    waiting = true;
                    continue;
                }
                match acks.ack(&node, database, underway.epoch).await {
                    Ok(()) => {
                        tracing::info!(%node, %database, to = %underway.to, epoch = underway.epoch, "move acknowledged: no session of the group is left on this node");
                        acked.insert(database.clone(), underway.epoch);
                    }
                    Err(error) => {
                        tracing::warn!(%node, %database, %error, "move not acknowledged yet; trying again");
                        waiting = true;
                    }
                }
            }
        }
        if waiting {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(DRAIN_CHECK) => {}
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What keeping a presence needs.
pub struct PresenceKeeper {
    /// The store.
    pub records: Arc<EtcdRecords>,
    /// This node's name.
    pub node: String,
    /// The lease TTL (whole seconds, at least 2).
    pub ttl: Duration,
    /// The resolver's view of this node's presence.
    pub presence: Arc<Presence>,
    /// Asks this node's location source for a fresh read.
    pub relister: Relister,
    /// Publishes the current lease (for acknowledgements).
    pub lease: watch::Sender<Option<i64>>,
    /// Closes this node's group sessions (the presence lapsed).
    pub close_groups: Box<dyn Fn() -> usize + Send + Sync>,
}

impl PresenceKeeper {
    /// Keeps this node present until the task is aborted.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.one_lease().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(why) => {
                    tracing::warn!(node = %self.node, error = %why, "not present in the array's store: serving no group until present again");
                }
            }
            self.lapse();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The presence is gone: serve no group, close the group sessions.
    fn lapse(&self) {
        let was_present = self.presence.is_present();
        self.presence.absent();
        self.lease.send_replace(None);
        let closed = (self.close_groups)();
        if was_present || closed > 0 {
            tracing::warn!(node = %self.node, sessions = closed, "presence lapsed: group sessions closed, group logins held");
        }
    }

    /// One lease: grant, say present, catch up, keep alive. Returns when the lease is lost.
    async fn one_lease(&self) -> Result<(), String> {
        let LeaseTiming {
            secs,
            ttl,
            every,
            margin,
        } = LeaseTiming::new(self.ttl);
        let mut client = self.records.client().await.map_err(|e| e.to_string())?;
        let granted_at = Instant::now();
        let lease = tokio::time::timeout(every, client.lease_grant(secs, None))
            .await
            .map_err(|_| "lease grant unanswered".to_owned())?
            .map_err(|e| format!("lease grant: {e}"))?
            .id();
        let result = self
            .keep(&mut client, lease, granted_at, ttl, margin, every)
            .await;
        // Best effort: give the lease back so the leader need not wait for it to expire.
        let _ = tokio::time::timeout(every, client.lease_revoke(lease)).await;
        result
    }

    async fn keep(
        &self,
        client: &mut etcd_client::Client,
        lease: i64,
        granted_at: Instant,
        ttl: Duration,
        margin: Duration,
        every: Duration,
    ) -> Result<(), String> {
        let (mut keeper, mut answers) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("lease keep-alive: {e}"))?;
        let revision = tokio::time::timeout(every, self.records.put_presence(&self.node, lease))
            .await
            .map_err(|_| "presence put unanswered".to_owned())?
            .map_err(|e| e.to_string())?;
        // Routing by a map read before the presence key would miss moves the leader counted
        // this node for: read the store again first.
        if !self.relister.relist(revision, ttl - margin).await {
            return Err("the location map could not be read again after the presence key".into());
        }
        let mut valid_until = granted_at + ttl - margin;
        if Instant::now() >= valid_until {
            return Err("the presence lease ran out while catching up".to_owned());
        }
        self.lease.send_replace(Some(lease));
        self.presence.present_until(valid_until);
        tracing::info!(node = %self.node, lease, revision, "present in the array's store: serving groups");
        let mut next = Instant::now() + every;
        loop {
            tokio::time::sleep_until(next.min(valid_until)).await;
            if Instant::now() >= valid_until {
                return Err("presence lease keep-alives unanswered".to_owned());
            }
            let sent = crate::leader::keep_alive(&mut keeper, &mut answers, every)
                .await
                .map_err(|why| format!("presence lease: {why}"))?;
            valid_until = sent + ttl - margin;
            self.presence.present_until(valid_until);
            next = sent + every;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mailfront_location::Underway;

    use super::*;

    fn marked(epoch: u64) -> LocationMap {
        LocationMap::new([(DatabaseName::new("g1"), "sm1".into())]).with_moving([(
            DatabaseName::new("g1"),
            Underway {
                to: "sm2".into(),
                epoch,
            },
        )])
    }

    async fn acked(acks: &LocalAcks, epoch: u64) {
        let g1 = DatabaseName::new("g1");
        while acks.lock().unwrap().get(&g1) != Some(&epoch) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_is_acknowledged_only_once_no_session_of_the_group_is_left() {
        let locator = Arc::new(Locator::new());
        locator.publish(LocationMap::new([(DatabaseName::new("g1"), "sm1".into())]));
        let sessions = Arc::new(AtomicUsize::new(2));
        let counted = Arc::clone(&sessions);
        let live: Arc<LiveSessions> = Arc::new(move |database: &DatabaseName| {
            if database.as_str() == "g1" {
                counted.load(Ordering::SeqCst)
            } else {
                0
            }
        });
        let acks = LocalAcks::default();
        let task = tokio::spawn(acknowledge_moves(
            "cas1".into(),
            Arc::clone(&locator),
            live,
            Acks::Local(Arc::clone(&acks)),
        ));
        locator.publish(marked(4));
        // Two sessions left: no acknowledgement, however long they take to close.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(acks.lock().unwrap().is_empty());
        sessions.store(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(acks.lock().unwrap().is_empty());
        // The last one gone: acknowledged (at the record's epoch) within a drain check.
        sessions.store(0, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_millis(100), acked(&acks, 4))
            .await
            .expect("acknowledged");
        // A new move of the same group (another epoch) is acknowledged again.
        locator.publish(LocationMap::new([(DatabaseName::new("g1"), "sm2".into())]));
        locator.publish(marked(5));
        tokio::time::timeout(Duration::from_millis(100), acked(&acks, 5))
            .await
            .expect("acknowledged again");
        task.abort();
    }
}
