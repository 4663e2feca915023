//! The Active Manager at work: every node reads the store each round (maintenance flags reach
//! its health board), and the leader plans failovers from its own probes and writes them.
//!
//! A round runs every `interval`, and at once when a probe changes an endpoint's state. The
//! leader writes each move with a compare-and-swap on the database's record, fenced by its
//! leader key; the one node that wrote it logs `database moved`, and every node's location
//! source sees the new map and closes the sessions left on the old server.
//!
//! Nothing moves while the store cannot be read (the leader cannot know what it would
//! overwrite) — and with etcd unreachable the leader's term runs out anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use mailfront_location::etcd::records::EtcdRecords;
use mailfront_location::record::{MoveStamp, Records, unix_now};
use mailfront_metrics::Metrics;
use mailfront_model::{DatabaseName, Protocol, ServerName, SiteName};
use mailfront_resolve::Resolver;
use mailfront_resolve::health::ServerHealth;
use tokio::sync::{Notify, watch};

use crate::health::Health;
use crate::leader::{Leadership, Term};
use crate::plan::{DatabaseView, Fleet, Move, MoveKind, Policy, ServerView, plan_failover};
use crate::store::{Store, WriteError};

mod groups;
mod pins;

pub use groups::{GroupsReport, MoveUnderway, PlacementSettings, Rebalance, ServerShare};
pub use pins::PinReport;

/// How the Active Manager runs.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// This node's name (logs).
    pub node: String,
    /// The guard rails.
    pub policy: Policy,
    /// How often a round runs without a probe's news.
    pub interval: Duration,
    /// The configured copies of each database, in activation preference order (`[[database]]`)
    /// at start; a reload replaces them ([`ActiveManager::set_copies`]).
    pub copies: BTreeMap<DatabaseName, Vec<ServerName>>,
    /// The endpoints whose failure makes a server down for failover (`failover_on`): a server
    /// whose HTTP service alone fails keeps its databases unless HTTP is listed.
    pub failover_on: BTreeSet<Protocol>,
    /// Placement by group (`[placement]`), if configured: the leader places the groups.
    pub placement: Option<PlacementSettings>,
}

/// The Active Manager of one node.
pub struct ActiveManager {
    pub(crate) store: Store,
    pub(crate) leadership: Leadership,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) settings: ManagerSettings,
    /// The configured copies in force (reloadable).
    copies: ArcSwap<BTreeMap<DatabaseName, Vec<ServerName>>>,
    metrics: Arc<Metrics>,
    /// What the last round said about a halt or skipped databases (said again only when it
    /// changes, so that a long outage does not fill the log).
    last_said: Mutex<String>,
    /// With the location file: this node's acknowledgements of moves (it is the only node).
    local_acks: crate::presence::LocalAcks,
}

/// How soon the leader's next round comes while a move is under way.
const MOVE_ROUND: Duration = Duration::from_millis(20);

impl std::fmt::Debug for ActiveManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveManager")
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

/// A server as failover sees it: down when an endpoint of `failover_on` is down; suspect when
/// the last probe of one of them failed.
fn server_view(
    site: SiteName,
    probed: Option<&ServerHealth>,
    maintenance: bool,
    failover_on: &BTreeSet<Protocol>,
) -> ServerView {
    let counted = |protocol: &Protocol| failover_on.contains(protocol);
    let down = probed.is_some_and(|h| h.endpoints.iter().any(|(p, up)| counted(p) && !up));
    let failing = probed.is_some_and(|h| h.failing.iter().any(counted));
    ServerView {
        site,
        health: if down { Health::Down } else { Health::Up },
        maintenance,
        suspect: down || failing,
    }
}

/// When a stamped move happened.
fn stamped_at(stamp: &MoveStamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(stamp.at)
}

impl ActiveManager {
    /// An Active Manager over `store`, acting when `leadership` says so.
    pub fn new(
        store: Store,
        leadership: Leadership,
        resolver: Arc<Resolver>,
        settings: ManagerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            leadership,
            resolver,
            copies: ArcSwap::from_pointee(settings.copies.clone()),
            settings,
            metrics,
            last_said: Mutex::new(String::new()),
            local_acks: crate::presence::LocalAcks::default(),
        }
    }

    /// Where this node acknowledges moves when the store is the location file (it is the
    /// array's only node).
    pub fn local_acks(&self) -> crate::presence::LocalAcks {
        Arc::clone(&self.local_acks)
    }

    /// The etcd store this manager writes to (`None` with the location file): the node's
    /// presence and acknowledgements go through the same client.
    pub fn etcd_records(&self) -> Option<Arc<EtcdRecords>> {
        match &self.store {
            Store::Etcd(records) => Some(Arc::clone(records)),
            Store::File { .. } => None,
        }
    }

    /// Every record; with the location file, this node is the one present node and its
    /// acknowledgements are in memory.
    pub(crate) async fn read_records(&self) -> Result<Records, String> {
        let mut records = self.store.read().await?;
        if let Store::File { .. } = &self.store {
            records.nodes = [self.settings.node.clone()].into();
            let acks = self
                .local_acks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (database, epoch) in acks.iter() {
                records
                    .acks
                    .entry(database.clone())
                    .or_default()
                    .insert(self.settings.node.clone(), *epoch);
            }
        }
        Ok(records)
    }

    /// Replaces the configured copies (a reload changed `[[database]]`): the next round and the
    /// next operator command rank copies by these.
    pub fn set_copies(&self, copies: BTreeMap<DatabaseName, Vec<ServerName>>) {
        self.copies.store(Arc::new(copies));
    }

    /// This node's leadership.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Whether this node leads the array now.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// The fleet as this node sees it: every configured server (its site, its health from this
    /// node's probes, maintenance from the store) and every database of the store.
    pub fn fleet(&self, records: &Records) -> Fleet {
        let topology = self.resolver.topology();
        let board = self.resolver.health().snapshot();
        let servers = topology
            .servers
            .values()
            .map(|server| {
                let view = server_view(
                    server.site.clone(),
                    board.get(&server.name),
                    records.in_maintenance(&server.name),
                    &self.settings.failover_on,
                );
                (server.name.clone(), view)
            })
            .collect();
        let configured = self.copies.load();
        let databases = records
            .databases
            .iter()
            .map(|(name, stored)| {
                let record = &stored.value;
                let copies = configured
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| record.copies.clone());
                let last_move = record.moved.as_ref().and_then(|stamp| {
                    MoveKind::from_word(&stamp.by).map(|kind| (kind, stamped_at(stamp)))
                });
                let view = DatabaseView {
                    active: record.active.clone(),
                    copies,
                    hold: record.hold,
                    last_move,
                };
                (name.clone(), view)
            })
            .collect();
        Fleet { servers, databases }
    }

    /// Runs rounds until `shutdown`: every `interval`, and at once when `wake` is notified (a
    /// probe saw a change).
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let mut was_leader = false;
        loop {
            let leader = self.is_leader();
            if leader != was_leader {
                self.metrics.leader.set(i64::from(leader));
                was_leader = leader;
            }
            let underway = self.round().await;
            let pause = if underway {
                MOVE_ROUND
            } else {
                self.settings.interval
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// One round: read the store, bring maintenance flags to the health board, and — as the
    /// leader — finish the group moves under way and fail over what needs it. Returns whether a
    /// move is under way (the next round comes sooner).
    pub async fn round(&self) -> bool {
        let records = match self.read_records().await {
            Ok(records) => records,
            Err(why) => {
                if self.is_leader() {
                    self.say(format!("the store cannot be read, nothing moves: {why}"));
                }
                return false;
            }
        };
        let health = self.resolver.health();
        for name in self.resolver.topology().servers.keys() {
            health.set_maintenance(name, records.in_maintenance(name));
        }
        let Some(term) = self.leadership.acting() else {
            return false;
        };
        let underway = self.finish_moves(&records, &term).await;
        let fleet = self.fleet(&records);
        let databases = self.without_groups(fleet.clone());
        let plan = plan_failover(&databases, &self.settings.policy, SystemTime::now());
        let mut said = Vec::new();
        if let Some(halt) = &plan.halted {
            said.push(halt.to_string());
        }
        for (database, skip) in &plan.skipped {
            said.push(format!("{database} stays on its down server: {skip}"));
        }
        self.say(said.join("; "));
        for step in plan.moves {
            let reason = self.down_reason(&step.from);
            // Written or not, the outcome is logged; a move that failed is planned again next
            // round from what the store says then.
            let _ = self.apply(&records, &step, &reason, Some(&term)).await;
        }
        let marked = plan.halted.is_none() && self.place_groups(&records, &fleet, &term).await;
        underway || marked
    }

    /// Logs `message` (a warning) if it differs from what the last round said.
    fn say(&self, message: String) {
        let mut last = self
            .last_said
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *last != message {
            if !message.is_empty() {
                tracing::warn!(node = %self.settings.node, "active manager: {message}");
            } else {
                // The warning before this one no longer holds: say so, or the last word in the
                // log would still be that something is stuck.
                tracing::info!(
                    node = %self.settings.node,
                    "active manager: nothing is held back any more"
                );
            }
            *last = message;
        }
    }

    /// Why `server` counts as down: its failing endpoints.
    fn down_reason(&self, server: &ServerName) -> String {
        let board = self.resolver.health().snapshot();
        let failing: Vec<&str> = board
            .get(server)
            .map(|h| {
                h.endpoints
                    .iter()
                    .filter(|(_, up)| !**up)
                    .map(|(protocol, _)| protocol.as_str())
                    .collect()
            })
            .unwrap_or_default();
        format!("{server} is down ({} failing)", failing.join(", "))
    }

    /// Writes one move through the compare-and-swap path, from what `records` said (a record
    /// that changed since makes it [`WriteError::Conflict`]); with a leader's `term`, fenced.
    /// Logs and counts it when written; returns the database's new epoch.
    pub async fn apply(
        &self,
        records: &Records,
        step: &Move,
        reason: &str,
        term: Option<&Term>,
    ) -> Result<u64, WriteError> {
        let Some(current) = records.databases.get(&step.database) else {
            return Err(WriteError::Conflict);
        };
        let stamp = MoveStamp {
            by: step.kind.as_str().to_owned(),
            reason: reason.to_owned(),
            at: unix_now(),
        };
        let record = current.value.moved_to(step.to.clone(), stamp);
        let fence = term.and_then(|t| t.fence.as_ref());
        let written = self
            .store
            .write_database(&step.database, current, &record, fence)
            .await;
        match &written {
            Ok(()) => {
                tracing::info!(
                    node = %self.settings.node,
                    database = %step.database,
                    from = %step.from,
                    to = %step.to,
                    epoch = record.epoch,
                    by = %step.kind.as_str(),
                    reason = %reason,
                    "database moved"
                );
                self.metrics.moved(step.kind.as_str());
            }
            Err(error) => tracing::warn!(
                node = %self.settings.node,
                database = %step.database,
                to = %step.to,
                %error,
                "database not moved"
            ),
        }
        written.map(|()| record.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(endpoints: &[(Protocol, bool)], failing: &[Protocol]) -> ServerHealth {
        ServerHealth {
            endpoints: endpoints.iter().copied().collect(),
            maintenance: false,
            failing: failing.iter().copied().collect(),
        }
    }

    #[test]
    fn only_the_endpoints_failover_counts_make_a_server_down() {
        let on: BTreeSet<Protocol> = [Protocol::Imap, Protocol::Pop3].into();
        let view = |h: Option<&ServerHealth>| {
            let v = server_view(SiteName::new("w"), h, false, &on);
            (v.health, v.suspect)
        };
        assert_eq!(view(None), (Health::Up, false));
        let http_down = probed(&[(Protocol::Imap, true), (Protocol::Http, false)], &[]);
        assert_eq!(view(Some(&http_down)), (Health::Up, false));
        let imap_down = probed(&[(Protocol::Imap, false), (Protocol::Http, true)], &[]);
        assert_eq!(view(Some(&imap_down)), (Health::Down, true));
        let pop3_failing = probed(&[(Protocol::Pop3, true)], &[Protocol::Pop3]);
        assert_eq!(view(Some(&pop3_failing)), (Health::Up, true));
        let http_failing = probed(&[(Protocol::Http, true)], &[Protocol::Http]);
        assert_eq!(view(Some(&http_failing)), (Health::Up, false));
    }
}
