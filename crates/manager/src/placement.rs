//! Placement by group, for fleets whose backends share one mail store: which group a user is
//! in, and which server serves each group — without I/O.
//!
//! With shared storage any backend can serve any user, but a user must be served by one backend
//! at a time (two would corrupt Dovecot's indexes). Users are put in groups
//! ([`mailfront_model::group::group_of`]: a stable hash of the address), and each group is a
//! "database" for the rest of mailfront (locator, registry, failover, `route`): one active
//! server at a time.
//!
//! [`assign`] decides the servers: every group on a server that takes groups, each server's
//! count within one group of its weighted share, and as few groups moved as that allows —
//! adding a server moves about `groups / N` of them (only to it), removing one moves only its
//! own.

use std::collections::BTreeMap;

use mailfront_model::group::all_groups;
use mailfront_model::{DatabaseName, ServerName};

/// Each server's share of `groups`, by weight: the floor of its ideal share, and one more for
/// the servers with the largest remainders, so that the shares add up to `groups` and each is
/// within one of the ideal. Among equal remainders the extra goes to the servers holding more
/// groups now (`held`: fewer moves), then by name. Servers of weight 0 get none.
pub fn shares(
    servers: &BTreeMap<ServerName, u32>,
    groups: u32,
    held: &BTreeMap<ServerName, u32>,
) -> BTreeMap<ServerName, u32> {
    let total: u64 = servers.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return servers.keys().map(|s| (s.clone(), 0)).collect();
    }
    let groups = u64::from(groups);
    let mut out = BTreeMap::new();
    let mut remainders = Vec::new();
    let mut given = 0;
    for (server, weight) in servers {
        let exact = groups * u64::from(*weight);
        let floor = exact / total;
        given += floor;
        out.insert(server.clone(), u32::try_from(floor).unwrap_or(u32::MAX));
        remainders.push((exact % total, server.clone()));
    }
    // Largest remainder first; among equals, the server holding more; then by name (the same
    // answer on every node).
    let holding = |s: &ServerName| held.get(s).copied().unwrap_or(0);
    remainders.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| holding(&b.1).cmp(&holding(&a.1)))
            .then_with(|| a.1.cmp(&b.1))
    });
    for (_, server) in remainders.into_iter().take((groups - given) as usize) {
        if let Some(share) = out.get_mut(&server) {
            *share += 1;
        }
    }
    out
}

/// How many groups each server of `current` (group → server) serves.
pub fn held(current: &BTreeMap<DatabaseName, ServerName>) -> BTreeMap<ServerName, u32> {
    let mut held: BTreeMap<ServerName, u32> = BTreeMap::new();
    for server in current.values() {
        *held.entry(server.clone()).or_default() += 1;
    }
    held
}

/// One group to move.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupMove {
    /// The group.
    pub group: DatabaseName,
    /// Where it is served now (`None`: nowhere yet).
    pub from: Option<ServerName>,
    /// Where it goes.
    pub to: ServerName,
}

/// The moves that take `current` (group → server) to a placement over `servers` (the servers
/// that take groups now, by weight) of every group of `groups`: each server within one group of
/// its share, and no group moved that need not be — an operator's rebalance.
///
/// A group stays where it is while its server takes groups and is not over its share; the
/// groups that must move (their server is gone, down, in maintenance, or over its share —
/// there, the highest-numbered ones) go to the servers furthest under their share. Without any
/// server of positive weight nothing can be placed: no moves.
pub fn assign(
    current: &BTreeMap<DatabaseName, ServerName>,
    servers: &BTreeMap<ServerName, u32>,
    groups: u32,
) -> Vec<GroupMove> {
    moves(current, servers, groups, true)
}

/// The moves that place every group without a server that takes groups (never placed, or its
/// server gone, down, in maintenance) on the servers furthest under their share, leaving every
/// other group where it is even above a share — what the Active Manager does by itself.
pub fn place(
    current: &BTreeMap<DatabaseName, ServerName>,
    servers: &BTreeMap<ServerName, u32>,
    groups: u32,
) -> Vec<GroupMove> {
    moves(current, servers, groups, false)
}

fn moves(
    current: &BTreeMap<DatabaseName, ServerName>,
    servers: &BTreeMap<ServerName, u32>,
    groups: u32,
    rebalance: bool,
) -> Vec<GroupMove> {
    let targets = shares(servers, groups, &held(current));
    if targets.values().all(|t| *t == 0) {
        return Vec::new();
    }
    let mut load: BTreeMap<&ServerName, u32> = targets.keys().map(|s| (s, 0)).collect();
    let mut homeless: Vec<(DatabaseName, Option<ServerName>)> = Vec::new();
    let mut kept: BTreeMap<&ServerName, Vec<DatabaseName>> = BTreeMap::new();
    for group in all_groups(groups) {
        match current.get(&group) {
            Some(server) if targets.get(server).is_some_and(|t| *t > 0) => {
                kept.entry(server).or_default().push(group);
            }
            other => homeless.push((group, other.cloned())),
        }
    }
    for (server, mut mine) in kept {
        let target = targets.get(server).copied().unwrap_or(0) as usize;
        // Over its share: the highest-numbered groups leave (by number, not by name, so that
        // g10 counts as above g9).
        mine.sort_by_key(group_number);
        if rebalance {
            for group in mine.split_off(target.min(mine.len())) {
                homeless.push((group, Some(server.clone())));
            }
        }
        load.insert(server, u32::try_from(mine.len()).unwrap_or(u32::MAX));
    }
    homeless.sort_by_key(|(g, _)| group_number(g));
    let mut moves = Vec::with_capacity(homeless.len());
    for (group, from) in homeless {
        // The server furthest under its share (then by name); placing without a rebalance, the
        // servers may all be at or over their share: then the least loaded against it.
        let gap = |(s, l): (&&ServerName, &u32)| {
            i64::from(targets.get(*s).copied().unwrap_or(0)) - i64::from(*l)
        };
        let Some(to) = load
            .iter()
            .filter(|(s, _)| targets.get(**s).is_some_and(|t| *t > 0))
            .max_by(|a, b| gap(*a).cmp(&gap(*b)).then_with(|| b.0.cmp(a.0)))
            .filter(|best| !rebalance || gap(*best) > 0)
            .map(|(s, _)| (*s).clone())
        else {
            break;
        };
        if let Some(count) = load.get_mut(&to) {
            *count += 1;
        }
        moves.push(GroupMove { group, from, to });
    }
    moves
}

/// The number of a group's name, for ordering (`g10` after `g9`); other names sort last.
fn group_number(group: &DatabaseName) -> u32 {
    mailfront_model::group::group_number(group).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
