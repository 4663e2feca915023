//! The leader's part in placement by group ([`crate::placement`]): every round, the groups
//! without a server that takes groups (never placed yet, or their server down, in maintenance,
//! removed or of weight 0) are placed; an operator's rebalance moves groups to even the shares,
//! at most `max_parallel_moves` at a time.

use std::collections::BTreeMap;

use mailfront_location::record::{DatabaseRecord, MoveStamp, Records, unix_now};
use mailfront_model::group::is_group;
use mailfront_model::{DatabaseName, ServerName};

use super::ActiveManager;
use crate::leader::Term;
use crate::placement::{self, GroupMove};
use crate::plan::{Fleet, Move, MoveKind};
use crate::store::WriteError;

/// How users are placed by group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementSettings {
    /// How many groups (`g0` … `g<groups-1>`).
    pub groups: u32,
    /// The most groups a rebalance moves at once.
    pub max_parallel_moves: usize,
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
    /// The groups and where they are served, from `records`.
    pub fn group_placement(&self, records: &Records) -> BTreeMap<DatabaseName, ServerName> {
        let Some(placement) = &self.settings.placement else {
            return BTreeMap::new();
        };
        records
            .databases
            .iter()
            .filter(|(name, _)| is_group(name, placement.groups))
            .map(|(name, stored)| (name.clone(), stored.value.active.clone()))
            .collect()
    }

    /// Where the groups are, and each server's share.
    pub async fn groups_report(&self) -> Result<GroupsReport, String> {
        let Some(placement) = &self.settings.placement else {
            return Err("placement by group is not configured ([placement])".to_owned());
        };
        let records = self.store.read().await?;
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
        Ok(GroupsReport {
            groups: placement.groups,
            placement: current
                .iter()
                .map(|(g, s)| (g.to_string(), s.to_string()))
                .collect(),
            servers,
        })
    }

    /// `fleet` without the groups: databases move by their copies (failover, evacuation), groups
    /// by the placement rule (any server takes any group).
    pub(crate) fn without_groups(&self, mut fleet: Fleet) -> Fleet {
        if let Some(placement) = &self.settings.placement {
            fleet
                .databases
                .retain(|name, _| !is_group(name, placement.groups));
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

    /// The leader's round for groups: place those without a server that takes them.
    pub(super) async fn place_groups(&self, records: &Records, fleet: &Fleet, term: &Term) {
        let Some(placement) = &self.settings.placement else {
            return;
        };
        let current = self.group_placement(records);
        let servers = self.group_servers(fleet);
        let moves = placement::place(&current, &servers, placement.groups);
        if moves.is_empty() {
            return;
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
        for step in &moves {
            let reason = match &step.from {
                None => "first placement".to_owned(),
                Some(from) if fleet.servers.get(from).is_some_and(|s| s.maintenance) => {
                    format!("{from} is in maintenance")
                }
                Some(from) if fleet.servers.contains_key(from) => self.down_reason(from),
                Some(from) => format!("{from} takes no groups (removed, or weight 0)"),
            };
            let _ = self
                .write_group_move(records, step, &reason, Some(term))
                .await;
        }
    }

    /// An operator's rebalance: the moves that even the shares ([`placement::assign`]); unless
    /// `dry_run`, the first `max_parallel_moves` of them written (run it again for the next).
    pub async fn rebalance(&self, dry_run: bool) -> Result<Rebalance, String> {
        let Some(placement) = &self.settings.placement else {
            return Err("placement by group is not configured ([placement])".to_owned());
        };
        let records = self.store.read().await?;
        let fleet = self.fleet(&records);
        let current = self.group_placement(&records);
        let servers = self.group_servers(&fleet);
        let moves = placement::assign(&current, &servers, placement.groups);
        if dry_run {
            return Ok(Rebalance { moves, written: 0 });
        }
        let mut written = 0;
        for step in moves.iter().take(placement.max_parallel_moves) {
            match self
                .write_group_move(&records, step, "operator's rebalance", None)
                .await
            {
                Ok(()) => written += 1,
                Err(WriteError::Conflict) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Rebalance { moves, written })
    }

    /// Writes one group's move (or first placement) through the compare-and-swap path.
    async fn write_group_move(
        &self,
        records: &Records,
        step: &GroupMove,
        reason: &str,
        term: Option<&Term>,
    ) -> Result<(), WriteError> {
        match (&step.from, records.databases.get(&step.group)) {
            (Some(from), Some(_)) => {
                let kind = if term.is_some() {
                    MoveKind::Failover
                } else {
                    MoveKind::Rebalance
                };
                let step = Move {
                    database: step.group.clone(),
                    from: from.clone(),
                    to: step.to.clone(),
                    kind,
                };
                self.apply(records, &step, reason, term).await.map(|_| ())
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
