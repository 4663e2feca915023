//! The Active Manager's part of the admin API: the fleet's databases and servers, and the
//! operator's commands (move, hold, maintenance, evacuate). Any node answers: views come from
//! the store and this node's probes; commands write through the store's compare-and-swap.
//!
//! | Method | Path | Does |
//! |---|---|---|
//! | GET | `/databases` | every database: active server, copies and their state, epoch, hold, last move |
//! | GET | `/servers` | every server: its endpoints' health, maintenance, active databases |
//! | POST | `/databases/move?database=&server=[&force=yes]` | a switchover |
//! | POST | `/databases/hold?database=&on=yes\|no` | hold on or off |
//! | POST | `/servers/maintenance?server=&on=yes\|no` | maintenance on or off |
//! | POST | `/servers/evacuate?server=` | maintenance on, every database moved to its best other copy |
//! | GET | `/groups` | placement by group: each group's server, each server's weight, share and groups, and this node's live sessions per group |
//! | POST | `/groups/rebalance[?dry_run=yes]` | the moves that even the shares; without `dry_run`, the first `max_parallel_moves` of them made |
//!
//! A command that lost a race with another writer answers `409` (nothing written), one that is
//! not allowed `422`, and a store that cannot be asked `503`.

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use mailfront_http::form::field;
use mailfront_manager::active::ActiveManager;
use mailfront_manager::ops::CommandError;
use mailfront_model::{DatabaseName, ServerName};
use mailfront_proxy::registry::{Filter, Registry};
use serde_json::json;

use super::Answer;

/// The paths this module answers.
pub(super) const PATHS: [&str; 10] = [
    "/databases",
    "/servers",
    "/databases/move",
    "/databases/hold",
    "/servers/maintenance",
    "/servers/evacuate",
    "/groups",
    "/groups/rebalance",
    "/users/pin",
    "/users/unpin",
];

fn failed(error: &CommandError) -> Answer {
    let status = match error {
        CommandError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CommandError::Conflict(_) => StatusCode::CONFLICT,
        CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Answer::error(status, error.to_string())
}

fn required(query: &str, name: &str) -> Result<String, Answer> {
    field(query, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Answer::error(StatusCode::BAD_REQUEST, format!("`{name}` is required")))
}

fn on_off(query: &str) -> Result<bool, Answer> {
    match field(query, "on").as_deref() {
        Some("yes" | "on" | "true" | "1") => Ok(true),
        Some("no" | "off" | "false" | "0") => Ok(false),
        _ => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "`on` must be yes or no",
        )),
    }
}

/// Answers one request for the fleet (`method` and `path` among [`PATHS`]).
pub(super) async fn answer(
    manager: &ActiveManager,
    registry: &Registry,
    method: &Method,
    path: &str,
    query: &str,
) -> Answer {
    let result = match (method.as_str(), path) {
        ("GET", "/databases") => databases(manager).await,
        ("GET", "/servers") => servers(manager, registry).await,
        ("POST", "/databases/move") => move_database(manager, query).await,
        ("POST", "/databases/hold") => hold(manager, query).await,
        ("POST", "/servers/maintenance") => maintenance(manager, query).await,
        ("POST", "/servers/evacuate") => evacuate(manager, query).await,
        ("GET", "/groups") => groups(manager, registry).await,
        ("POST", "/groups/rebalance") => rebalance(manager, query).await,
        ("POST", "/users/pin") => pin(manager, query).await,
        ("POST", "/users/unpin") => unpin(manager, query).await,
        _ => Err(Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
    };
    result.unwrap_or_else(|answer| answer)
}

async fn databases(manager: &ActiveManager) -> Result<Answer, Answer> {
    let list = manager.databases().await.map_err(|e| failed(&e))?;
    let body = json!({ "leader": manager.is_leader(), "databases": list });
    Ok(Answer::json(StatusCode::OK, &body))
}

/// Each server's state and databases (groups too), with this node's live sessions on it (each
/// node answers for its own).
async fn servers(manager: &ActiveManager, registry: &Registry) -> Result<Answer, Answer> {
    let list = manager.servers().await.map_err(|e| failed(&e))?;
    let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
    for session in registry.list(&Filter::default()) {
        *sessions.entry(session.server.to_string()).or_default() += 1;
    }
    let list: Vec<serde_json::Value> = list
        .into_iter()
        .map(|server| {
            let live = sessions.get(&server.server).copied().unwrap_or(0);
            let mut value = json!(server);
            if let Some(object) = value.as_object_mut() {
                object.insert("sessions".to_owned(), json!(live));
            }
            value
        })
        .collect();
    let body = json!({ "leader": manager.is_leader(), "servers": list });
    Ok(Answer::json(StatusCode::OK, &body))
}

async fn move_database(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let database = DatabaseName::new(required(query, "database")?);
    let server = ServerName::new(required(query, "server")?);
    let force = field(query, "force").as_deref() == Some("yes");
    let moved = manager
        .move_database(&database, &server, force)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(StatusCode::OK, &json!(moved)))
}

async fn hold(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let database = DatabaseName::new(required(query, "database")?);
    let on = on_off(query)?;
    manager
        .set_hold(&database, on)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(
        StatusCode::OK,
        &json!({ "database": database.as_str(), "hold": on }),
    ))
}

async fn maintenance(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let server = ServerName::new(required(query, "server")?);
    let on = on_off(query)?;
    manager
        .set_maintenance(&server, on, "set by an operator")
        .await
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(
        StatusCode::OK,
        &json!({ "server": server.as_str(), "maintenance": on }),
    ))
}

async fn groups(manager: &ActiveManager, registry: &Registry) -> Result<Answer, Answer> {
    let report = manager
        .groups_report()
        .await
        .map_err(|e| Answer::error(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    // This node's live sessions per group (each node answers for its own).
    let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
    for session in registry.list(&Filter::default()) {
        if report.placement.contains_key(session.database.as_str()) {
            *sessions.entry(session.database.to_string()).or_default() += 1;
        }
    }
    Ok(Answer::json(
        StatusCode::OK,
        &json!({ "leader": manager.is_leader(), "groups": report, "sessions": sessions }),
    ))
}

async fn pin(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let user = required(query, "user")?;
    let server = ServerName::new(required(query, "server")?);
    let started = manager
        .pin_user(&user, &server)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(StatusCode::OK, &json!(started)))
}

async fn unpin(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let user = required(query, "user")?;
    let started = manager.unpin_user(&user).await.map_err(|e| failed(&e))?;
    Ok(Answer::json(StatusCode::OK, &json!(started)))
}

async fn rebalance(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let dry_run = field(query, "dry_run").as_deref() == Some("yes");
    let report = manager
        .rebalance(dry_run)
        .await
        .map_err(|e| Answer::error(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(Answer::json(
        StatusCode::OK,
        &json!({ "dry_run": dry_run, "moves": report.moves, "written": report.written }),
    ))
}

async fn evacuate(manager: &ActiveManager, query: &str) -> Result<Answer, Answer> {
    let server = ServerName::new(required(query, "server")?);
    let report = manager.evacuate(&server).await.map_err(|e| failed(&e))?;
    Ok(Answer::json(StatusCode::OK, &json!(report)))
}
