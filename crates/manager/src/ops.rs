//! The operator's commands (`mailfront admin databases|servers|move|evacuate|maintenance|hold`),
//! answered by any node: views of the fleet, and changes written through the same
//! compare-and-swap path as automatic failovers (so a command racing a failover either wins or
//! says that it lost). Every node sees a change through its location source or its next round.

use std::fmt;

use mailfront_location::record::{Records, ServerRecord, Stored};
use mailfront_model::{DatabaseName, ServerName};
use serde::Serialize;

use crate::active::ActiveManager;
use crate::health::Health;
use crate::plan::{self, Move, MoveRefused, Skip};
use crate::store::WriteError;

/// Why a command did nothing.
#[derive(Debug)]
pub enum CommandError {
    /// The request names nothing the fleet has, or the move is not allowed.
    Refused(String),
    /// Another writer changed the record first; nothing was written.
    Conflict(String),
    /// The store cannot be asked.
    Unavailable(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Refused(why) => write!(f, "refused: {why}"),
            CommandError::Conflict(why) => write!(f, "conflict: {why}"),
            CommandError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

/// A failed write as the operator's command answers it: a conflict names `what` changed.
pub(crate) fn written(error: WriteError, what: &str) -> CommandError {
    match error {
        WriteError::Conflict | WriteError::Fenced => CommandError::Conflict(format!(
            "{what} changed meanwhile (another operator or a failover was first); nothing written"
        )),
        WriteError::Unavailable(why) => CommandError::Unavailable(why),
    }
}

/// A database as `databases` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseReport {
    /// Its name.
    pub database: String,
    /// The server hosting the active copy.
    pub active: String,
    /// Its copies, in activation preference order, each with its server's state.
    pub copies: Vec<CopyReport>,
    /// Incremented by every move.
    pub epoch: u64,
    /// Never moved automatically.
    pub hold: bool,
    /// The last move: by whom, why, when (Unix seconds).
    pub last_move: Option<(String, String, u64)>,
}

/// One copy of a database.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    /// The server holding it.
    pub server: String,
    /// `up`, `down` or `maintenance`, as this node sees it.
    pub state: &'static str,
}

/// A server as `servers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    /// Its name.
    pub server: String,
    /// Its site.
    pub site: String,
    /// Each probed endpoint: `up` or `down`.
    pub endpoints: Vec<(String, &'static str)>,
    /// In maintenance.
    pub maintenance: bool,
    /// The databases active on it.
    pub databases: Vec<String>,
}

/// What a move did.
#[derive(Clone, Debug, Serialize)]
pub struct MoveReport {
    /// The database.
    pub database: String,
    /// Where it was active.
    pub from: String,
    /// Where it is active now.
    pub to: String,
    /// Its new epoch.
    pub epoch: u64,
}

/// What an evacuation did.
#[derive(Clone, Debug, Serialize)]
pub struct EvacuationReport {
    /// The server now in maintenance.
    pub server: String,
    /// The databases moved off it.
    pub moved: Vec<MoveReport>,
    /// The databases that stayed, and why.
    pub stayed: Vec<(String, String)>,
}

fn state_word(health: Health, maintenance: bool) -> &'static str {
    match (health, maintenance) {
        (_, true) => "maintenance",
        (Health::Up, false) => "up",
        (Health::Down, false) => "down",
    }
}

impl ActiveManager {
    async fn records(&self) -> Result<Records, CommandError> {
        self.store.read().await.map_err(CommandError::Unavailable)
    }

    /// Every database: active server, copies with their state, epoch, hold, last move.
    pub async fn databases(&self) -> Result<Vec<DatabaseReport>, CommandError> {
        let records = self.records().await?;
        let fleet = self.fleet(&records);
        let reports = fleet
            .databases
            .iter()
            .map(|(name, view)| {
                let record = records.databases.get(name).map(|s| &s.value);
                let copies = view
                    .copies
                    .iter()
                    .map(|server| CopyReport {
                        server: server.to_string(),
                        state: fleet
                            .servers
                            .get(server)
                            .map_or("unknown", |s| state_word(s.health, s.maintenance)),
                    })
                    .collect();
                DatabaseReport {
                    database: name.to_string(),
                    active: view.active.to_string(),
                    copies,
                    epoch: record.map_or(0, |r| r.epoch),
                    hold: view.hold,
                    last_move: record
                        .and_then(|r| r.moved.as_ref())
                        .map(|m| (m.by.clone(), m.reason.clone(), m.at)),
                }
            })
            .collect();
        Ok(reports)
    }

    /// Every configured server: endpoints' health, maintenance, active databases.
    pub async fn servers(&self) -> Result<Vec<ServerReport>, CommandError> {
        let records = self.records().await?;
        let board = self.resolver.health().snapshot();
        let topology = self.resolver.topology();
        let reports = topology
            .servers
            .values()
            .map(|server| ServerReport {
                server: server.name.to_string(),
                site: server.site.to_string(),
                endpoints: board
                    .get(&server.name)
                    .map(|h| {
                        h.endpoints
                            .iter()
                            .map(|(p, up)| (p.to_string(), if *up { "up" } else { "down" }))
                            .collect()
                    })
                    .unwrap_or_default(),
                maintenance: records.in_maintenance(&server.name),
                databases: records
                    .databases
                    .iter()
                    .filter(|(_, s)| s.value.active == server.name)
                    .map(|(d, _)| d.to_string())
                    .collect(),
            })
            .collect();
        Ok(reports)
    }

    /// Switches `database` over to `to` (`force`: even to a server that is down or in
    /// maintenance; never to one that holds no copy).
    pub async fn move_database(
        &self,
        database: &DatabaseName,
        to: &ServerName,
        force: bool,
    ) -> Result<MoveReport, CommandError> {
        if self.is_placed_group(database) {
            return self.move_group(database, to, force).await;
        }
        let records = self.records().await?;
        let fleet = self.fleet(&records);
        let step = plan::check_move(&fleet, database, to, force)
            .map_err(|refused: MoveRefused| CommandError::Refused(refused.to_string()))?;
        self.write_move(&records, &step, "moved by an operator")
            .await
    }

    async fn write_move(
        &self,
        records: &Records,
        step: &Move,
        reason: &str,
    ) -> Result<MoveReport, CommandError> {
        let epoch = self
            .apply(records, step, reason, None)
            .await
            .map_err(|e| written(e, step.database.as_str()))?;
        Ok(MoveReport {
            database: step.database.to_string(),
            from: step.from.to_string(),
            to: step.to.to_string(),
            epoch,
        })
    }

    /// Puts `server` in maintenance (or takes it out) with `reason`.
    pub async fn set_maintenance(
        &self,
        server: &ServerName,
        on: bool,
        reason: &str,
    ) -> Result<(), CommandError> {
        if self.resolver.topology().server(server).is_none() {
            return Err(CommandError::Refused(format!(
                "no server {server} in the configuration"
            )));
        }
        let records = self.records().await?;
        let expected: Option<&Stored<ServerRecord>> = records.servers.get(server);
        let record = ServerRecord {
            maintenance: on,
            reason: if on { reason.to_owned() } else { String::new() },
        };
        self.store
            .write_server(server, expected, &record)
            .await
            .map_err(|e| written(e, server.as_str()))?;
        self.resolver.health().set_maintenance(server, on);
        tracing::info!(server = %server, maintenance = on, reason, "server maintenance changed");
        Ok(())
    }

    /// Puts `database` on hold (never moved automatically) or takes it off.
    pub async fn set_hold(&self, database: &DatabaseName, on: bool) -> Result<(), CommandError> {
        let records = self.records().await?;
        let Some(current) = records.databases.get(database) else {
            return Err(CommandError::Refused(format!(
                "no database {database} in the location map"
            )));
        };
        let mut record = current.value.clone();
        record.hold = on;
        self.store
            .write_database(database, current, &record, None)
            .await
            .map_err(|e| written(e, database.as_str()))?;
        tracing::info!(database = %database, hold = on, "database hold changed");
        Ok(())
    }

    /// Puts `server` in maintenance, then moves every database off it to its best other copy.
    /// Groups are left to the leader, which places them elsewhere in its next round (a server
    /// in maintenance takes no groups).
    pub async fn evacuate(&self, server: &ServerName) -> Result<EvacuationReport, CommandError> {
        self.set_maintenance(server, true, "evacuated").await?;
        let records = self.records().await?;
        let fleet = self.without_groups(self.fleet(&records));
        let plan = plan::plan_evacuate(&fleet, server);
        let mut report = EvacuationReport {
            server: server.to_string(),
            moved: Vec::new(),
            stayed: plan
                .skipped
                .iter()
                .map(|(d, skip): &(DatabaseName, Skip)| (d.to_string(), skip.to_string()))
                .collect(),
        };
        for step in &plan.moves {
            let reason = format!("{server} evacuated");
            match self.write_move(&records, step, &reason).await {
                Ok(moved) => report.moved.push(moved),
                Err(error) => report
                    .stayed
                    .push((step.database.to_string(), error.to_string())),
            }
        }
        Ok(report)
    }
}
