//! The leader's part in placement by group ([`crate::placement`]): every round, the groups
//! without a server that takes groups (never placed yet, or their server down, in maintenance,
//! removed or of weight 0) are placed; an operator's rebalance moves groups to even the shares,
//! at most `max_parallel_moves` at a time.
//!
//! A group that has a server moves safely (docs/architecture.md, "Safe moves"): the leader
//! *marks* it moving (its record's `moving`), every node closes its sessions of the group, holds
//! its new logins and acknowledges (`crate::presence`); each round the leader *flips* every
//! marked group that all present nodes have acknowledged (the record's next epoch, on its new
//! server), and unmarks one whose acknowledgements did not all come within `move_timeout` (the
//! group stays where it was; a failover is marked again next round). While a move is under way
//! the rounds come every 20 ms.

use std::collections::BTreeMap;
use std::time::Duration;

use mailfront_location::record::{DatabaseRecord, MoveStamp, Moving, Records, Stored, unix_now};
use mailfront_model::group::{is_group, pinned_user};
use mailfront_model::{DatabaseName, ServerName};

use super::{ActiveManager, pins};
use crate::leader::Term;
use crate::ops::{CommandError, MoveReport};
use crate::placement::{self, GroupMove};
use crate::plan::{Fleet, MoveKind};
use crate::store::WriteError;
use mailfront_location::etcd::records::Fence;

/// How long after `move_timeout` an unacknowledged move is called off: every login held by it
/// (each for at most `move_timeout`) has had its temporary error by then, instead of racing the
/// call-off to the old server.
const CALL_OFF_GRACE: Duration = Duration::from_secs(1);

/// How users are placed by group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementSettings {
    /// How many groups (`g0` … `g<groups-1>`).
    pub groups: u32,
    /// The most groups a rebalance moves at once.
    pub max_parallel_moves: usize,
    /// How long a move waits for every node's acknowledgement before it is called off.
    pub move_timeout: Duration,
}

/// Where the groups are, for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupsReport {
    /// How many groups there are.
    pub groups: u32,
    /// Each group's server (groups not placed yet are missing).
    pub placement: BTreeMap<String, String>,
    /// Per server: its weight, its share now (0 while it takes no groups) and how many groups
    /// it serves.
    pub servers: BTreeMap<String, ServerShare>,
    /// The moves under way: group (or pin) → where from, where to, since when, which nodes
    /// acknowledged.
    pub moving: BTreeMap<String, MoveUnderway>,
    /// The pinned users: address → server (where it goes, while it moves).
    pub pins: BTreeMap<String, String>,
}

/// A group's move under way, for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoveUnderway {
    /// Where it is served until the flip.
    pub from: String,
    /// Where it goes.
    pub to: String,
    /// When the move started (seconds since the Unix epoch).
    pub since: u64,
    /// The present nodes that acknowledged it.
    pub acknowledged: Vec<String>,
    /// The present nodes that have not yet.
    pub waiting_for: Vec<String>,
}

/// One server's part in placement by group.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerShare {
    /// Its configured weight.
    pub weight: u32,
    /// Its share of the groups among the servers that take groups now.
    pub share: u32,
    /// How many groups it serves.
    pub serving: u32,
}

/// What a rebalance would do, or did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rebalance {
    /// The moves, in order.
    pub moves: Vec<GroupMove>,
    /// How many of them were written (0 for a dry run).
    pub written: usize,
}

impl ActiveManager {
    /// The groups and where they are served, from `records` (a group under a move: where it
    /// goes).
    pub fn group_placement(&self, records: &Records) -> BTreeMap<DatabaseName, ServerName> {
        let Some(placement) = &self.settings.placement else {
            return BTreeMap::new();
        };
        records
            .databases
            .iter()
            .filter(|(name, _)| is_group(name, placement.groups))
            .map(|(name, stored)| {
                let record = &stored.value;
                let server = record.destination();
                (name.clone(), server.clone())
            })
            .collect()
    }

    /// The groups under a move in `records`.
    fn groups_moving(
        records: &Records,
    ) -> impl Iterator<Item = (&DatabaseName, &DatabaseRecord, &Moving)> {
        records.databases.iter().filter_map(|(name, stored)| {
            let moving = stored.value.moving.as_ref()?;
            Some((name, &stored.value, moving))
        })
    }

    /// The present nodes that acknowledged `database`'s move at `epoch`, and those that have
    /// not.
    fn acknowledgements(
        records: &Records,
        database: &DatabaseName,
        epoch: u64,
    ) -> (Vec<String>, Vec<String>) {
        let acks = records.acks.get(database);
        records
            .nodes
            .iter()
            .cloned()
            .partition(|node| acks.and_then(|a| a.get(node)) == Some(&epoch))
    }

    /// The leader's round for moves under way: flips each group every present node has
    /// acknowledged; calls off each that waited longer than `move_timeout`. Returns whether a
    /// move is still under way.
    pub(super) async fn finish_moves(&self, records: &Records, term: &Term) -> bool {
        let Some(placement) = &self.settings.placement else {
            return false;
        };
        let mut underway = false;
        for (database, record, moving) in Self::groups_moving(records) {
            let (_, waiting_for) = Self::acknowledgements(records, database, record.epoch);
            let Some(current) = records.databases.get(database) else {
                continue;
            };
            let fence = term.fence.as_ref();
            if waiting_for.is_empty() && moving.by == pins::UNPIN {
                // No session of the user is left anywhere and every node holds the user: the
                // pin can go, and the user follows the group again.
                self.remove_pin(database, current, fence, "every present node acknowledged")
                    .await;
                continue;
            }
            if waiting_for.is_empty() {
                let stamp = MoveStamp {
                    by: moving.by.clone(),
                    reason: moving.reason.clone(),
                    at: unix_now(),
                };
                let flipped = record.moved_to(moving.to.clone(), stamp);
                let written = self
                    .store
                    .write_database(database, current, &flipped, fence)
                    .await;
                match written {
                    Ok(()) => {
                        let held_for = unix_now().saturating_sub(moving.since);
                        tracing::info!(
                            node = %self.settings.node,
                            database = %database,
                            from = %record.active,
                            to = %moving.to,
                            epoch = flipped.epoch,
                            by = %moving.by,
                            reason = %moving.reason,
                            nodes = records.nodes.len(),
                            seconds = held_for,
                            "database moved (every present node acknowledged)"
                        );
                        self.metrics.moved(if moving.by.is_empty() {
                            "rebalance"
                        } else {
                            &moving.by
                        });
                    }
                    Err(error) => {
                        underway = true;
                        tracing::warn!(node = %self.settings.node, database = %database, %error, "group move not flipped yet");
                    }
                }
                continue;
            }
            let waited = Duration::from_secs(unix_now().saturating_sub(moving.since));
            if waited <= placement.move_timeout + CALL_OFF_GRACE {
                underway = true;
                continue;
            }
            if moving.by == pins::PIN && record.moved.is_none() {
                // A pin never made: nobody was served by it (its logins were held), so it goes.
                self.remove_pin(database, current, fence, "the pin was not made: not every present node acknowledged within placement.move_timeout").await;
                continue;
            }
            let written = self
                .store
                .write_database(database, current, &record.unmarked(), fence)
                .await;
            tracing::warn!(
                node = %self.settings.node,
                database = %database,
                to = %moving.to,
                waiting_for = %waiting_for.join(", "),
                written = written.is_ok(),
                "group move called off: not every present node acknowledged within placement.move_timeout; it stays on {}",
                record.active
            );
        }
        underway
    }

    /// Deletes a pin's record (and the nodes' acknowledgements of its moves).
    async fn remove_pin(
        &self,
        pin: &DatabaseName,
        current: &Stored<DatabaseRecord>,
        fence: Option<&Fence>,
        why: &str,
    ) {
        match self.store.delete_database(pin, current, fence).await {
            Ok(()) => {
                // With the location file, this node's acknowledgements live in memory: a pin
                // made again starts its epochs over and must not meet an old one.
                self.local_acks
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(pin);
                tracing::info!(node = %self.settings.node, database = %pin, reason = %why, "pin removed: the user follows the group again");
            }
            Err(error) => {
                tracing::warn!(node = %self.settings.node, database = %pin, %error, "pin not removed yet");
            }
        }
    }

    /// Where the groups are, and each server's share.
    pub async fn groups_report(&self) -> Result<GroupsReport, String> {
        let Some(placement) = &self.settings.placement else {
            return Err("placement by group is not configured ([placement])".to_owned());
        };
        let records = self.read_records().await?;
        let fleet = self.fleet(&records);
        let current = self.group_placement(&records);
        let taking = self.group_servers(&fleet);
        let held = placement::held(&current);
        let shares = placement::shares(&taking, placement.groups, &held);
        let servers = self
            .resolver
            .topology()
            .servers
            .values()
            .map(|s| {
                let share = ServerShare {
                    weight: s.weight,
                    share: shares.get(&s.name).copied().unwrap_or(0),
                    serving: held.get(&s.name).copied().unwrap_or(0),
                };
                (s.name.to_string(), share)
            })
            .collect();
        let moving = Self::groups_moving(&records)
            .map(|(database, record, moving)| {
                let (acknowledged, waiting_for) =
                    Self::acknowledgements(&records, database, record.epoch);
                let underway = MoveUnderway {
                    from: record.active.to_string(),
                    to: moving.to.to_string(),
                    since: moving.since,
                    acknowledged,
                    waiting_for,
                };
                (database.to_string(), underway)
            })
            .collect();
        Ok(GroupsReport {
            groups: placement.groups,
            moving,
            pins: Self::pins(&records),
            placement: current
                .iter()
                .map(|(g, s)| (g.to_string(), s.to_string()))
                .collect(),
            servers,
        })
    }

    /// Whether `database` is a group of placement by group.
    pub fn is_placed_group(&self, database: &DatabaseName) -> bool {
        self.settings
            .placement
            .as_ref()
            .is_some_and(|p| is_group(database, p.groups))
    }

    /// An operator's move of one group to `to`, the safe way (marked, acknowledged, flipped);
    /// `force`: even to a server that takes no groups now (down, in maintenance, weight 0).
    pub async fn move_group(
        &self,
        group: &DatabaseName,
        to: &ServerName,
        force: bool,
    ) -> Result<MoveReport, CommandError> {
        let records = self
            .read_records()
            .await
            .map_err(CommandError::Unavailable)?;
        let Some(stored) = records.databases.get(group) else {
            return Err(CommandError::Refused(format!("{group} is not placed yet")));
        };
        let record = &stored.value;
        if !self.resolver.topology().servers.contains_key(to) {
            return Err(CommandError::Refused(format!(
                "no server {to} is configured"
            )));
        }
        if let Some(moving) = &record.moving {
            return Err(CommandError::Refused(format!(
                "{group} is already moving to {}",
                moving.to
            )));
        }
        if &record.active == to {
            return Err(CommandError::Refused(format!("{group} is already on {to}")));
        }
        let fleet = self.fleet(&records);
        if !force && !self.group_servers(&fleet).contains_key(to) {
            return Err(CommandError::Refused(format!(
                "{to} takes no groups now (down, in maintenance or of weight 0); force=yes moves anyway"
            )));
        }
        let step = GroupMove {
            group: group.clone(),
            from: Some(record.active.clone()),
            to: to.clone(),
        };
        self.write_group_move(
            &records,
            &step,
            MoveKind::Switchover,
            "moved by an operator",
            None,
        )
        .await
        .map_err(|e| crate::ops::written(e, group.as_str()))?;
        Ok(MoveReport {
            database: group.to_string(),
            from: record.active.to_string(),
            to: to.to_string(),
            epoch: record.epoch.saturating_add(1),
        })
    }

    /// `fleet` without the groups: databases move by their copies (failover, evacuation), groups
    /// by the placement rule (any server takes any group).
    pub(crate) fn without_groups(&self, mut fleet: Fleet) -> Fleet {
        if let Some(placement) = &self.settings.placement {
            fleet
                .databases
                .retain(|name, _| !is_group(name, placement.groups) && pinned_user(name).is_none());
        }
        fleet
    }

    /// The servers that take groups now, by weight: configured with a positive weight, up and
    /// out of maintenance.
    pub fn group_servers(&self, fleet: &Fleet) -> BTreeMap<ServerName, u32> {
        self.resolver
            .topology()
            .servers
            .values()
            .filter(|s| s.weight > 0)
            .filter(|s| {
                fleet
                    .servers
                    .get(&s.name)
                    .is_some_and(|v| v.takes_databases())
            })
            .map(|s| (s.name.clone(), s.weight))
            .collect()
    }

    /// The leader's round for groups: place those without a server that takes them. Returns
    /// whether a move was started.
    pub(super) async fn place_groups(&self, records: &Records, fleet: &Fleet, term: &Term) -> bool {
        let Some(placement) = &self.settings.placement else {
            return false;
        };
        let current = self.group_placement(records);
        let servers = self.group_servers(fleet);
        let mut moves = placement::place(&current, &servers, placement.groups);
        // A group under a move is placed by it (called off, it is placed again next round).
        moves.retain(|m| {
            records
                .databases
                .get(&m.group)
                .is_none_or(|stored| stored.value.moving.is_none())
        });
        if moves.is_empty() {
            return false;
        }
        let created = moves.iter().filter(|m| m.from.is_none()).count();
        if created > 0 {
            tracing::info!(
                node = %self.settings.node,
                groups = created,
                servers = servers.len(),
                "placing groups that have no server yet"
            );
        }
        let mut started = false;
        let topology = self.resolver.topology();
        for step in &moves {
            let (kind, reason) = match &step.from {
                None => (MoveKind::Failover, "first placement".to_owned()),
                Some(from) if topology.servers.get(from).is_none_or(|s| s.weight == 0) => (
                    MoveKind::Drain,
                    format!("{from} takes no groups (removed, or weight 0)"),
                ),
                Some(from) if fleet.servers.get(from).is_some_and(|s| s.maintenance) => {
                    (MoveKind::Drain, format!("{from} is in maintenance"))
                }
                Some(from) => (MoveKind::Failover, self.down_reason(from)),
            };
            let written = self
                .write_group_move(records, step, kind, &reason, Some(term))
                .await;
            started |= written.is_ok() && step.from.is_some();
        }
        started
    }

    /// An operator's rebalance: the moves that even the shares ([`placement::assign`]); unless
    /// `dry_run`, the first `max_parallel_moves` of them written (run it again for the next).
    pub async fn rebalance(&self, dry_run: bool) -> Result<Rebalance, String> {
        let Some(placement) = &self.settings.placement else {
            return Err("placement by group is not configured ([placement])".to_owned());
        };
        let records = self.read_records().await?;
        let fleet = self.fleet(&records);
        let current = self.group_placement(&records);
        let servers = self.group_servers(&fleet);
        let moves = placement::assign(&current, &servers, placement.groups);
        if dry_run {
            return Ok(Rebalance { moves, written: 0 });
        }
        let underway = Self::groups_moving(&records).count();
        let room = placement.max_parallel_moves.saturating_sub(underway);
        let mut written = 0;
        for step in moves.iter().take(room) {
            match self
                .write_group_move(
                    &records,
                    step,
                    MoveKind::Rebalance,
                    "operator's rebalance",
                    None,
                )
                .await
            {
                Ok(()) => written += 1,
                Err(WriteError::Conflict) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Rebalance { moves, written })
    }

    /// Starts one group's move (marks it: the nodes close its sessions and acknowledge, the
    /// leader's rounds flip it), or places a group for the first time, through the
    /// compare-and-swap path.
    async fn write_group_move(
        &self,
        records: &Records,
        step: &GroupMove,
        kind: MoveKind,
        reason: &str,
        term: Option<&Term>,
    ) -> Result<(), WriteError> {
        match (&step.from, records.databases.get(&step.group)) {
            (Some(from), Some(current)) => {
                let marked = current.value.marked_moving(Moving {
                    to: step.to.clone(),
                    since: unix_now(),
                    by: kind.as_str().to_owned(),
                    reason: reason.to_owned(),
                });
                let fence = term.and_then(|t| t.fence.as_ref());
                let written = self
                    .store
                    .write_database(&step.group, current, &marked, fence)
                    .await;
                match &written {
                    Ok(()) => tracing::info!(
                        node = %self.settings.node,
                        database = %step.group,
                        from = %from,
                        to = %step.to,
                        epoch = marked.epoch,
                        by = %kind.as_str(),
                        reason = %reason,
                        "group move started: nodes close its sessions and hold its logins"
                    ),
                    Err(error) => tracing::warn!(
                        node = %self.settings.node,
                        database = %step.group,
                        to = %step.to,
                        %error,
                        "group move not started"
                    ),
                }
                written
            }
            _ => {
                let mut record = DatabaseRecord::active_on(step.to.clone());
                record.moved = Some(MoveStamp {
                    by: "placement".to_owned(),
                    reason: reason.to_owned(),
                    at: unix_now(),
                });
                let fence = term.and_then(|t| t.fence.as_ref());
                let written = self
                    .store
                    .create_database(&step.group, &record, fence)
                    .await;
                if let Err(error) = &written {
                    tracing::warn!(
                        node = %self.settings.node,
                        group = %step.group,
                        to = %step.to,
                        %error,
                        "group not placed"
                    );
                }
                written
            }
        }
    }
}
