//! The Active Manager as the configuration sets it up: its store (etcd records, or the location
//! file), its leadership (an etcd election; the one node with a location file; none when
//! automatic failover is off) and its settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mailfront_location::etcd::records::EtcdRecords;
use mailfront_location::file::FileSource;
use mailfront_manager::active::{ActiveManager, ManagerSettings, PlacementSettings};
use mailfront_manager::health::Thresholds;
use mailfront_manager::leader::{Election, Leadership, elect};
use mailfront_manager::plan::Policy;
use mailfront_manager::probe::{ProbeMode, ProbeSettings};
use mailfront_manager::store::Store;
use mailfront_metrics::Metrics;
use mailfront_model::{DatabaseName, Secret, ServerName};
use mailfront_resolve::Resolver;
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
            let records = Arc::new(
                EtcdRecords::new(etcd, &manager_config.servers_prefix)
                    .map_err(|e| e.to_string())?,
            );
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
