//! The routing topology and the rules location maps are checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mailfront_location::LocationMap;
use mailfront_location::file::Validator;
use mailfront_model::{ServerName, SiteName};
use mailfront_routing::{
    Endpoint, Endpoints, LoginMethod, MasterUser, Node, Server, Site, Topology,
};

use crate::config::{Config, EndpointConfig, LoginMethodConfig, MailRedirect, ServerConfig};

/// Builds the routing topology from the configuration (reads master password files).
pub fn topology(config: &Config) -> Result<Topology, String> {
    let mut servers = Vec::with_capacity(config.server.len());
    for (i, s) in config.server.iter().enumerate() {
        servers.push(server(config, i, s)?);
    }
    let node = Node {
        name: config.node.name.clone(),
        site: SiteName::new(&config.node.site),
        version: config.node.version,
    };
    Topology::new(node, sites(config).into_values(), servers).map_err(|e| e.to_string())
}

/// The sites of the configuration, by name.
fn sites(config: &Config) -> BTreeMap<SiteName, Site> {
    let mut sites: BTreeMap<SiteName, Site> = config
        .site
        .iter()
        .map(|s| {
            let site = Site {
                name: SiteName::new(&s.name),
                external_urls: s.external_urls.clone(),
                costs: s
                    .costs
                    .iter()
                    .map(|(name, cost)| (SiteName::new(name), *cost))
                    .collect(),
                imap_referral: (s.mail_redirect == MailRedirect::Referral)
                    .then(|| s.imap_host.clone())
                    .flatten(),
            };
            (site.name.clone(), site)
        })
        .collect();
    if config.site.is_empty() {
        // Without [[site]] tables, every site named anywhere exists, with no URLs or costs.
        let named = std::iter::once(config.node.site.as_str())
            .chain(config.server.iter().map(|s| s.site.as_str()));
        for name in named {
            let name = SiteName::new(name);
            sites.entry(name.clone()).or_insert_with(|| Site {
                name,
                external_urls: BTreeMap::new(),
                costs: BTreeMap::new(),
                imap_referral: None,
            });
        }
    }
    sites
}

/// Server `i` of the configuration (its master password read, if it logs in as a master).
fn server(config: &Config, i: usize, s: &ServerConfig) -> Result<Server, String> {
    let endpoint = |e: &Option<EndpointConfig>| {
        e.as_ref().map(|e| Endpoint {
            host: e.host.clone().unwrap_or_else(|| s.host.clone()),
            port: e.port,
            tls: e.tls.into(),
        })
    };
    let login = match s.login.method {
        LoginMethodConfig::Passthrough => LoginMethod::PassThrough {
            mechanism: s.login.mechanism.into(),
        },
        LoginMethodConfig::Master => {
            let password = config
                .master_password(i)?
                .ok_or_else(|| format!("server[{i}].login.master_password_file: required"))?;
            LoginMethod::Master {
                master: MasterUser {
                    user: s.login.master_user.clone().unwrap_or_default(),
                    password,
                    separator: s.login.separator.clone(),
                },
                mechanism: s.login.mechanism.into(),
            }
        }
    };
    Ok(Server {
        name: ServerName::new(&s.name),
        site: SiteName::new(&s.site),
        version: s.version,
        endpoints: Endpoints {
            imap: endpoint(&s.imap),
            pop3: endpoint(&s.pop3),
            submission: endpoint(&s.submission),
            delivery: s.delivery.as_ref().map(|e| Endpoint {
                host: e.host.clone().unwrap_or_else(|| s.host.clone()),
                port: e.port,
                tls: e.tls.into(),
            }),
            delivery_protocol: s
                .delivery
                .as_ref()
                .map(|e| e.protocol.into())
                .unwrap_or_default(),
            http: s.http.clone(),
            sip: s.sip.clone(),
        },
        login,
        delivery_group: s.delivery_group.clone(),
        weight: s.weight,
    })
}

/// What a location map is checked against: every server it names must be defined, and where
/// a database's copies are configured, its active server must be one of them.
#[derive(Debug, Default)]
pub struct LocationRules {
    servers: BTreeSet<String>,
    copies: BTreeMap<String, BTreeSet<String>>,
}

impl LocationRules {
    /// The rules of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            servers: config.server.iter().map(|s| s.name.clone()).collect(),
            copies: config
                .database
                .iter()
                .map(|d| (d.name.clone(), d.copies.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Checks `map`; the error names the offending entry.
    pub fn check(&self, map: &LocationMap) -> Result<(), String> {
        for (database, server) in map.iter() {
            if !self.servers.contains(server.as_str()) {
                return Err(format!("active.{database}: unknown server `{server}`"));
            }
            if let Some(copies) = self.copies.get(database.as_str())
                && !copies.contains(server.as_str())
            {
                return Err(format!(
                    "active.{database}: `{server}` holds no copy of {database} (copies: {})",
                    copies.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// A fixed check of location maps against `config` (for `check` and `route`).
pub fn location_validator(config: &Config) -> Arc<Validator> {
    let rules = LocationRules::from_config(config);
    Arc::new(move |map: &LocationMap| rules.check(map))
}

/// A check of location maps against rules that a configuration reload can replace.
pub fn live_validator(rules: &Arc<ArcSwap<LocationRules>>) -> Arc<Validator> {
    let rules = Arc::clone(rules);
    Arc::new(move |map: &LocationMap| rules.load().check(map))
}
