//! What the store keeps about each database and server beyond "database → active server": the
//! Active Manager's bookkeeping, written by failovers and by operators' commands through one
//! compare-and-swap path, read back by every node.
//!
//! - Per database ([`DatabaseRecord`]): the active server, its copies (informational), the
//!   **epoch** (incremented by every move, so that a client of the store can tell one activation
//!   from the next), **hold** (never moved automatically), and the last move: who made it
//!   (`failover`, `switchover`, `evacuation`), why, and when.
//! - Per server: **maintenance** (it receives no database, and no delivery).
//!
//! Older values stay readable: a bare server name is a record with epoch 0, no hold and no last
//! move, and fields a reader does not know are ignored.

use std::collections::BTreeMap;

use mailfront_model::{DatabaseName, ServerName};
use serde::{Deserialize, Serialize};

/// Whether an epoch is 0, the value a record without one has (serde: the field is left out
/// when it says nothing, in the location file and in etcd alike).
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Seconds since the Unix epoch, now (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How and when a database got to its active server last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveStamp {
    /// Who moved it: `failover` (the Active Manager), `switchover` or `evacuation` (operators).
    pub by: String,
    /// Why, in words (for operators).
    #[serde(default)]
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// A move under way (placement by group): the leader has marked the database, every node holds
/// its new logins and closes its sessions, and the leader flips it to `to` once every live node
/// has acknowledged (docs/architecture.md, "Safe moves").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    /// Where it goes.
    pub to: ServerName,
    /// When the move started, in seconds since the Unix epoch.
    pub since: u64,
    /// Who moves it (`failover`, `rebalance`), as the move's stamp will say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// Why, in words (for operators).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One database as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseRecord {
    /// The server hosting the active copy.
    pub active: ServerName,
    /// The servers holding a copy (informational; empty when the value does not say).
    pub copies: Vec<ServerName>,
    /// Incremented by every move.
    pub epoch: u64,
    /// On hold: never moved automatically.
    pub hold: bool,
    /// The last move, if one was recorded.
    pub moved: Option<MoveStamp>,
    /// A move under way, if one is.
    pub moving: Option<Moving>,
}

impl DatabaseRecord {
    /// A record that says only where the database is active.
    pub fn active_on(server: ServerName) -> Self {
        Self {
            active: server,
            copies: Vec::new(),
            epoch: 0,
            hold: false,
            moved: None,
            moving: None,
        }
    }

    /// Whether the record says more than its active server (and so needs the JSON form).
    pub fn is_bare(&self) -> bool {
        self.copies.is_empty()
            && self.epoch == 0
            && !self.hold
            && self.moved.is_none()
            && self.moving.is_none()
    }

    /// The record after a move to `to`: the next epoch and a stamp (a move under way ends).
    pub fn moved_to(&self, to: ServerName, stamp: MoveStamp) -> Self {
        Self {
            active: to,
            copies: self.copies.clone(),
            epoch: self.epoch.saturating_add(1),
            hold: self.hold,
            moved: Some(stamp),
            moving: None,
        }
    }

    /// The record with `moving` under way (same server, same epoch: the nodes acknowledge this
    /// epoch).
    pub fn marked_moving(&self, moving: Moving) -> Self {
        Self {
            moving: Some(moving),
            ..self.clone()
        }
    }

    /// Where the database is served once the move under way (if any) is done: the move's
    /// target, else the active server.
    pub fn destination(&self) -> &ServerName {
        self.moving.as_ref().map_or(&self.active, |m| &m.to)
    }

    /// The record without its move under way (an aborted move).
    pub fn unmarked(&self) -> Self {
        Self {
            moving: None,
            ..self.clone()
        }
    }
}

/// A value read from the store with what a compare-and-swap compares: etcd's modification
/// revision of the key (0: the key does not exist); in the location file, always 0 (the file
/// store compares the values themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored<T> {
    /// The value.
    pub value: T,
    /// The key's modification revision (etcd), or 0.
    pub revision: i64,
}

/// A server's record: in maintenance or not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// In maintenance: it receives no database and no delivery.
    #[serde(default)]
    pub maintenance: bool,
    /// Why (for operators).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Everything the Active Manager reads from the store at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Every database the store knows.
    pub databases: BTreeMap<DatabaseName, Stored<DatabaseRecord>>,
    /// Every server the store has a record of (servers without one are not in maintenance).
    pub servers: BTreeMap<ServerName, Stored<ServerRecord>>,
    /// The nodes present now (each under a key bound to its own lease; etcd only).
    pub nodes: std::collections::BTreeSet<String>,
    /// Per database under a move, the epoch each node acknowledged (etcd only).
    pub acks: BTreeMap<DatabaseName, BTreeMap<String, u64>>,
}

impl Records {
    /// Whether `server` is in maintenance.
    pub fn in_maintenance(&self, server: &ServerName) -> bool {
        self.servers
            .get(server)
            .is_some_and(|record| record.value.maintenance)
    }
}
