//! The Active Manager as the configuration sets it up: its store (etcd records, or the location
//! file), its leadership (an etcd election; the one node with a location file; none when
//! automatic failover is off) and its settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mailfront_location::Locator;
use mailfront_location::etcd::records::EtcdRecords;
use mailfront_location::etcd::{EtcdConnection, Relister};
use mailfront_location::file::FileSource;
use mailfront_manager::active::{ActiveManager, ManagerSettings, PlacementSettings};
use mailfront_manager::blocks::SharedBlocks;
use mailfront_manager::health::Thresholds;
use mailfront_manager::leader::{Election, Leadership, elect};
use mailfront_manager::plan::Policy;
use mailfront_manager::presence::{Acks, LiveSessions, PresenceKeeper, acknowledge_moves};
use mailfront_manager::probe::{ProbeMode, ProbeSettings};
use mailfront_manager::store::Store;
use mailfront_metrics::Metrics;
use mailfront_model::group::{is_group, pinned_user};
use mailfront_model::{DatabaseName, Secret, ServerName};
use mailfront_proxy::NodeServices;
use mailfront_proxy::registry::StopReason;
use mailfront_resolve::Resolver;
use mailfront_resolve::moves::{MoveHold, Presence};
use tokio::task::JoinHandle;

use crate::config::{ActiveManagerConfig, Config, LocationConfig, ProbeModeConfig};

/// The `[active_manager]` in force: as configured, or the defaults (the operator's commands
/// work without the table; automatic failover needs it).
fn settings_of(config: &Config) -> (ActiveManagerConfig, bool) {
    match &config.active_manager {
        Some(manager) => (manager.clone(), manager.enabled),
        None => (ActiveManagerConfig::default(), false),
    }
}

/// The Active Manager of a node, and the background task of its election (if it campaigns).
pub fn active_manager(
    config: &Config,
    resolver: &Arc<Resolver>,
    metrics: &Arc<Metrics>,
    location_file: Option<&Arc<FileSource>>,
) -> Result<(Arc<ActiveManager>, Option<JoinHandle<()>>), String> {
    let (manager_config, automatic) = settings_of(config);
    let (store, leadership, election) = match &config.location {
        LocationConfig::File { path } => {
            let leadership = if automatic {
                Leadership::alone()
            } else {
                Leadership::never()
            };
            let store = Store::file(path.clone(), location_file.cloned());
            (store, leadership, None)
        }
        LocationConfig::Etcd(etcd) => {
            let records = Arc::new(etcd_records(config, etcd, &manager_config)?);
            let (leadership, task) = if automatic {
                let election = Election {
                    key: manager_config.election_key.clone(),
                    node: config.node.name.clone(),
                    ttl: manager_config.lease_ttl,
                };
                let (leadership, task) = elect(Arc::clone(&records), election);
                (leadership, Some(task))
            } else {
                (Leadership::never(), None)
            };
            (Store::Etcd(records), leadership, task)
        }
    };
    let settings = ManagerSettings {
        node: config.node.name.clone(),
        policy: Policy {
            hold_down: manager_config.hold_down,
        },
        interval: config
            .health
            .as_ref()
            .map_or(Duration::from_secs(2), |h| h.interval),
        copies: copies(config),
        failover_on: manager_config.failover_on.iter().copied().collect(),
        placement: config.placement.as_ref().map(|p| PlacementSettings {
            groups: p.groups,
            max_parallel_moves: p.max_parallel_moves as usize,
            move_timeout: p.move_timeout,
        }),
    };
    let manager = ActiveManager::new(
        store,
        leadership,
        Arc::clone(resolver),
        settings,
        Arc::clone(metrics),
    );
    Ok((Arc::new(manager), election))
}

/// The Active Manager's records in etcd; with placement by group, the nodes' presence and
/// acknowledgements too.
fn etcd_records(
    config: &Config,
    etcd: &mailfront_location::etcd::EtcdConfig,
    manager: &ActiveManagerConfig,
) -> Result<EtcdRecords, String> {
    let records = EtcdRecords::new(etcd, &manager.servers_prefix).map_err(|e| e.to_string())?;
    if config.placement.is_none() {
        return Ok(records);
    }
    records
        .with_presence(&manager.nodes_prefix, &manager.acks_prefix)
        .map_err(|e| e.to_string())
}

/// Safe moves of groups (`[placement]`): logins held during moves (and, with etcd, while this
/// node is not present), closes spread, and this node's presence and acknowledgements. Returns
/// the background tasks.
pub fn safe_moves(
    config: &Config,
    services: &NodeServices,
    locator: &Arc<Locator>,
    manager: &ActiveManager,
    relister: Option<Relister>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let Some(placement) = &config.placement else {
        return Ok(Vec::new());
    };
    services
        .registry
        .set_disconnect_spread(placement.disconnect_spread);
    let registry = Arc::clone(&services.registry);
    let live: Arc<LiveSessions> = Arc::new(move |database: &DatabaseName| registry.live(database));
    let node = config.node.name.clone();
    let mut tasks = Vec::new();
    let (presence, acks) = match (manager.etcd_records(), relister) {
        (Some(records), Some(relister)) => {
            let (manager_config, _) = settings_of(config);
            let presence = Arc::new(Presence::new());
            let (lease, leases) = tokio::sync::watch::channel(None);
            let registry = Arc::clone(&services.registry);
            let groups = placement.groups;
            let keeper = PresenceKeeper {
                records: Arc::clone(&records),
                node: node.clone(),
                ttl: manager_config.lease_ttl,
                presence: Arc::clone(&presence),
                relister,
                lease,
                close_groups: Box::new(move || {
                    registry.stop_where(
                        |info| {
                            is_group(&info.database, groups)
                                || pinned_user(&info.database).is_some()
                        },
                        &StopReason::Failover { to: None },
                    )
                }),
            };
            tasks.push(tokio::spawn(keeper.run()));
            let acks = Acks::Etcd {
                records,
                lease: leases,
            };
            (Some(presence), acks)
        }
        _ => (None, Acks::Local(manager.local_acks())),
    };
    services.resolver.set_move_hold(MoveHold {
        move_timeout: placement.move_timeout,
        groups: Some(placement.groups),
        presence,
    });
    tasks.push(tokio::spawn(acknowledge_moves(
        node,
        Arc::clone(locator),
        live,
        acks,
    )));
    Ok(tasks)
}

/// Login blocks shared through etcd (`[throttle] share_blocks` with the etcd location store):
/// the task that publishes this node's blocks and applies the others'. `None` without etcd,
/// with sharing or throttling off.
pub fn shared_blocks(
    config: &Config,
    services: &NodeServices,
) -> Result<Option<JoinHandle<()>>, String> {
    let LocationConfig::Etcd(etcd) = &config.location else {
        return Ok(None);
    };
    let throttle = &config.throttle;
    if !throttle.share_blocks || !throttle.enabled {
        return Ok(None);
    }
    let connection = EtcdConnection::new(etcd).map_err(|e| e.to_string())?;
    let (publisher, began) = tokio::sync::mpsc::unbounded_channel();
    services.resolver.throttle().publish_blocks_to(publisher);
    let shared = SharedBlocks {
        connection,
        prefix: throttle.blocks_prefix.clone(),
        node: config.node.name.clone(),
        resolver: Arc::clone(&services.resolver),
    };
    Ok(Some(tokio::spawn(shared.run(began))))
}

/// The configured copies of each database, in activation preference order.
pub fn copies(config: &Config) -> BTreeMap<DatabaseName, Vec<ServerName>> {
    config
        .database
        .iter()
        .map(|d| {
            let copies = d.copies.iter().map(ServerName::new).collect();
            (DatabaseName::new(&d.name), copies)
        })
        .collect()
}

/// The probes `[health]` describes (`None` without the table); reads the probe account's
/// password file.
pub fn probe_settings(config: &Config) -> Result<Option<ProbeSettings>, String> {
    let Some(health) = &config.health else {
        return Ok(None);
    };
    let login_password = health
        .login_password_file
        .as_ref()
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|text| Secret::new(text.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    format!(
                        "health.login_password_file: cannot read {}: {e}",
                        file.display()
                    )
                })
        })
        .transpose()?;
    Ok(Some(ProbeSettings {
        interval: health.interval,
        timeout: health.timeout,
        thresholds: Thresholds {
            fall: health.fall,
            rise: health.rise,
        },
        mode: match health.probe {
            ProbeModeConfig::Connect => ProbeMode::Connect,
            ProbeModeConfig::Greeting => ProbeMode::Greeting,
            ProbeModeConfig::Login => ProbeMode::Login,
        },
        http_path: health.http_path.clone(),
        login_user: health.login_user.clone(),
        login_password,
    }))
}
