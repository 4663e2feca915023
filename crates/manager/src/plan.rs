//! What to move, and where: the Active Manager's decisions, without I/O.
//!
//! [`plan_failover`] is the automatic part: for every database whose active server is down, the
//! best other copy, under guard rails that each have a test:
//!
//! - never a server that holds no copy (a database without configured copies never moves by
//!   itself);
//! - if more than half of the servers look down at once, nothing moves: the likelier story is
//!   that this node is the one cut off;
//! - a database on hold never moves by itself;
//! - a database moved automatically is not moved automatically again within the hold-down time
//!   (a flapping server must not bounce it);
//! - failback is never automatic: a server that comes back gets nothing until an operator moves
//!   a database to it.
//!
//! [`check_move`] and [`plan_evacuate`] are the operator's switchover and evacuation, judged by
//! the same ranking of copies ([`best_copy`]).
//!
//! The best copy is, among the copies that are up and not in maintenance: one in the same site
//! as the server it replaces first, then the one with the fewest active databases (so that the
//! databases of a dead server spread over the survivors), then the database's activation
//! preference (its `copies` order), as Exchange's best copy selection uses preference last.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use mailfront_model::{DatabaseName, ServerName, SiteName};

use crate::health::Health;

/// A mailbox server as the Active Manager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerView {
    /// Its site.
    pub site: SiteName,
    /// Up or down, from this node's probes.
    pub health: Health,
    /// Put in maintenance by an operator: it receives no database.
    pub maintenance: bool,
    /// Up, but its last probe failed: not moved away from, but counted as looking down when
    /// the planner asks whether this node is the one cut off (a node cut from the network sees
    /// every server fail within one probe interval, not all confirmed at the same moment).
    pub suspect: bool,
}

impl ServerView {
    /// Whether a database may be activated here.
    pub fn takes_databases(&self) -> bool {
        self.health == Health::Up && !self.maintenance
    }
}

/// How a database got to its active server last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// The Active Manager moved it (its server was down).
    Failover,
    /// An operator moved it (`move`).
    Switchover,
    /// An operator evacuated its server.
    Evacuation,
    /// An operator's rebalance of groups ([`crate::placement`]).
    Rebalance,
    /// The Active Manager moved a group off a server that takes no groups any more (weight 0,
    /// removed, in maintenance).
    Drain,
}

impl MoveKind {
    /// The word stored with the move and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveKind::Failover => "failover",
            MoveKind::Switchover => "switchover",
            MoveKind::Evacuation => "evacuation",
            MoveKind::Rebalance => "rebalance",
            MoveKind::Drain => "drain",
        }
    }

    /// The kind a stored word names.
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "failover" => Some(MoveKind::Failover),
            "switchover" => Some(MoveKind::Switchover),
            "evacuation" => Some(MoveKind::Evacuation),
            "rebalance" => Some(MoveKind::Rebalance),
            "drain" => Some(MoveKind::Drain),
            _ => None,
        }
    }
}

/// A mailbox database as the Active Manager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseView {
    /// The server hosting the active copy.
    pub active: ServerName,
    /// The servers holding a copy, in activation preference order (empty: not configured).
    pub copies: Vec<ServerName>,
    /// On hold: never moved automatically.
    pub hold: bool,
    /// The last move, if the store knows it: what kind, and when.
    pub last_move: Option<(MoveKind, SystemTime)>,
}

/// The fleet: servers and databases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Every mailbox server of the configuration.
    pub servers: BTreeMap<ServerName, ServerView>,
    /// Every database of the location map.
    pub databases: BTreeMap<DatabaseName, DatabaseView>,
}

impl Fleet {
    /// How many databases each server hosts the active copy of.
    pub fn active_counts(&self) -> BTreeMap<ServerName, usize> {
        let mut counts: BTreeMap<ServerName, usize> =
            self.servers.keys().map(|s| (s.clone(), 0)).collect();
        for database in self.databases.values() {
            *counts.entry(database.active.clone()).or_default() += 1;
        }
        counts
    }
}

/// The guard rails' settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A database moved automatically is not moved automatically again within this time.
    pub hold_down: Duration,
}

/// A move to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The database.
    pub database: DatabaseName,
    /// Where it is active now.
    pub from: ServerName,
    /// Where it goes.
    pub to: ServerName,
    /// What kind of move.
    pub kind: MoveKind,
}

/// Why a database that would need a move was left where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// An operator put it on hold.
    OnHold,
    /// It was moved automatically too recently.
    HeldDown {
        /// When the hold-down ends.
        until: SystemTime,
    },
    /// No copies are configured for it: mailfront does not know where else it could go.
    NoCopies,
    /// No other copy is up and out of maintenance.
    NoHealthyCopy,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::OnHold => f.write_str("the database is on hold"),
            // The end of the hold-down, not the time left: the line must read the same every
            // round, or the Active Manager would log it again every round.
            Skip::HeldDown { until } => write!(
                f,
                "it was moved automatically within the hold-down time (until {})",
                humantime::format_rfc3339_seconds(*until)
            ),
            Skip::NoCopies => f.write_str("no copies are configured ([[database]] copies)"),
            Skip::NoHealthyCopy => f.write_str("no other copy is up and out of maintenance"),
        }
    }
}

/// Why the whole plan was called off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// More than half of the servers look down.
    MostServersDown {
        /// How many look down.
        down: usize,
        /// How many there are.
        total: usize,
    },
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Halt::MostServersDown { down, total } => write!(
                f,
                "{down} of {total} servers look down: more likely this node is cut off than that \
                 they all failed, so nothing moves"
            ),
        }
    }
}

/// The automatic failover plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The moves to make.
    pub moves: Vec<Move>,
    /// Databases on a down server that stay, and why.
    pub skipped: Vec<(DatabaseName, Skip)>,
    /// Set when nothing may move at all.
    pub halted: Option<Halt>,
}

/// The best copy of `database` to activate instead of `replacing`, given how many databases
/// each server hosts (`counts`); `None` if no other copy is up and out of maintenance.
pub fn best_copy(
    fleet: &Fleet,
    database: &DatabaseView,
    replacing: &ServerName,
    counts: &BTreeMap<ServerName, usize>,
) -> Option<ServerName> {
    let site = fleet.servers.get(replacing).map(|s| &s.site);
    database
        .copies
        .iter()
        .enumerate()
        .filter(|(_, name)| *name != replacing)
        .filter_map(|(preference, name)| {
            let server = fleet.servers.get(name)?;
            server.takes_databases().then(|| {
                let elsewhere = Some(&server.site) != site;
                let load = counts.get(name).copied().unwrap_or(0);
                ((elsewhere, load, preference), name)
            })
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name)| name.clone())
}

/// The automatic failover plan for `fleet` at `now`.
pub fn plan_failover(fleet: &Fleet, policy: &Policy, now: SystemTime) -> Plan {
    let total = fleet.servers.len();
    let down = fleet
        .servers
        .values()
        .filter(|s| s.health == Health::Down || s.suspect)
        .count();
    if down * 2 > total {
        return Plan {
            halted: Some(Halt::MostServersDown { down, total }),
            ..Plan::default()
        };
    }
    let mut plan = Plan::default();
    let mut counts = fleet.active_counts();
    for (name, database) in &fleet.databases {
        let active_down = fleet
            .servers
            .get(&database.active)
            .is_some_and(|s| s.health == Health::Down);
        if !active_down {
            continue;
        }
        match failover_target(fleet, database, policy, now, &counts) {
            Ok(to) => {
                if let Some(count) = counts.get_mut(&to) {
                    *count += 1;
                }
                plan.moves.push(Move {
                    database: name.clone(),
                    from: database.active.clone(),
                    to,
                    kind: MoveKind::Failover,
                });
            }
            Err(skip) => plan.skipped.push((name.clone(), skip)),
        }
    }
    plan
}

fn failover_target(
    fleet: &Fleet,
    database: &DatabaseView,
    policy: &Policy,
    now: SystemTime,
    counts: &BTreeMap<ServerName, usize>,
) -> Result<ServerName, Skip> {
    if database.hold {
        return Err(Skip::OnHold);
    }
    if let Some((MoveKind::Failover, at)) = database.last_move {
        let until = at + policy.hold_down;
        if now < until {
            return Err(Skip::HeldDown { until });
        }
    }
    if database.copies.is_empty() {
        return Err(Skip::NoCopies);
    }
    best_copy(fleet, database, &database.active, counts).ok_or(Skip::NoHealthyCopy)
}

/// Why an operator's move was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveRefused {
    /// The location map has no such database.
    UnknownDatabase(DatabaseName),
    /// The configuration has no such server.
    UnknownServer(ServerName),
    /// The database is already active there.
    AlreadyActive,
    /// The server holds no copy of the database: its users would find an empty mailbox there
    /// (`--force` does not override this; add the server to the database's `copies` first).
    NotACopy,
    /// The server is down (`--force` overrides).
    ServerDown,
    /// The server is in maintenance (`--force` overrides).
    InMaintenance,
}

impl fmt::Display for MoveRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveRefused::UnknownDatabase(d) => write!(f, "no database {d} in the location map"),
            MoveRefused::UnknownServer(s) => write!(f, "no server {s} in the configuration"),
            MoveRefused::AlreadyActive => f.write_str("the database is already active there"),
            MoveRefused::NotACopy => f.write_str(
                "that server holds no copy of the database (its users would find an empty \
                 mailbox there); add it to the database's [[database]] copies first",
            ),
            MoveRefused::ServerDown => {
                f.write_str("that server is down (use --force to move anyway)")
            }
            MoveRefused::InMaintenance => {
                f.write_str("that server is in maintenance (use --force to move anyway)")
            }
        }
    }
}

/// Checks an operator's switchover of `database` to `to`.
pub fn check_move(
    fleet: &Fleet,
    database: &DatabaseName,
    to: &ServerName,
    force: bool,
) -> Result<Move, MoveRefused> {
    let view = fleet
        .databases
        .get(database)
        .ok_or_else(|| MoveRefused::UnknownDatabase(database.clone()))?;
    let server = fleet
        .servers
        .get(to)
        .ok_or_else(|| MoveRefused::UnknownServer(to.clone()))?;
    if &view.active == to {
        return Err(MoveRefused::AlreadyActive);
    }
    // Not even forced: a server without a copy has none of the database's mail. (A database
    // without configured copies may go anywhere: mailfront does not know where its copies are.)
    if !view.copies.is_empty() && !view.copies.contains(to) {
        return Err(MoveRefused::NotACopy);
    }
    if !force {
        if server.health == Health::Down {
            return Err(MoveRefused::ServerDown);
        }
        if server.maintenance {
            return Err(MoveRefused::InMaintenance);
        }
    }
    Ok(Move {
        database: database.clone(),
        from: view.active.clone(),
        to: to.clone(),
        kind: MoveKind::Switchover,
    })
}

/// The moves that take every database off `server` (before maintenance), each to its best
/// other copy, and the databases that cannot go anywhere.
pub fn plan_evacuate(fleet: &Fleet, server: &ServerName) -> Plan {
    let mut plan = Plan::default();
    let mut counts = fleet.active_counts();
    for (name, database) in &fleet.databases {
        if &database.active != server {
            continue;
        }
        if database.copies.is_empty() {
            plan.skipped.push((name.clone(), Skip::NoCopies));
            continue;
        }
        match best_copy(fleet, database, server, &counts) {
            Some(to) => {
                if let Some(count) = counts.get_mut(&to) {
                    *count += 1;
                }
                plan.moves.push(Move {
                    database: name.clone(),
                    from: server.clone(),
                    to,
                    kind: MoveKind::Evacuation,
                });
            }
            None => plan.skipped.push((name.clone(), Skip::NoHealthyCopy)),
        }
    }
    plan
}

#[cfg(test)]
mod tests;
