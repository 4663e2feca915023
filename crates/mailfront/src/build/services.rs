//! What the node's sessions and front doors share, as the configuration sets it up: the
//! resolver (authentication with throttling, the resolve step), how backends are reached, the
//! HTTPS front door, the admin token.

use std::path::Path;
use std::sync::Arc;

use mailfront_directory::Directory;
use mailfront_http::cookie::CookieKeys;
use mailfront_http::{FrontDoorParts, HttpFrontDoor};
use mailfront_location::Locator;
use mailfront_metrics::{Known, Metrics};
use mailfront_model::Secret;
use mailfront_net::node::NodeState;
use mailfront_net::tls::TlsConnector;
use mailfront_proxy::NodeServices;
use mailfront_proxy::backend::{BackendTimeouts, Backends};
use mailfront_proxy::registry::Registry;
use mailfront_resolve::throttle::ThrottleSettings;
use mailfront_resolve::{Resolver, ResolverSettings};
use mailfront_routing::Topology;
use tokio::task::JoinHandle;

use crate::build::listeners::listener_name;
use crate::config::{Config, ListenerProtocol, SessionMax};
use mailfront_proxy::token_checks::{Introspection, TokenChecks};

/// Throttling as configured; its first delay is the failure delay every refusal takes.
pub fn throttle_settings(config: &Config) -> ThrottleSettings {
    let t = &config.throttle;
    ThrottleSettings {
        enabled: t.enabled,
        base_delay: config.timeouts.auth_failure_delay,
        max_delay: t.max_delay,
        block_after: t.block_after,
        block_user_after: t.block_user_after,
        block_for: t.block_for,
        forget_after: t.forget_after,
        trusted: t.trusted_networks.clone(),
    }
}

/// How the resolver authenticates and looks up: its time limits and throttling.
pub fn resolver_settings(config: &Config) -> ResolverSettings {
    let t = &config.timeouts;
    ResolverSettings {
        auth_failure_delay: t.auth_failure_delay,
        directory_timeout: t.directory,
        throttle: throttle_settings(config),
    }
}

/// How the node reaches its mailbox servers.
pub fn backends(config: &Config, connector: Option<TlsConnector>) -> Backends {
    let t = &config.timeouts;
    Backends {
        tls: connector,
        timeouts: BackendTimeouts {
            connect: t.backend_connect,
            login: t.backend_login,
        },
    }
}

/// What every session of the node shares, built from its parts.
pub fn node_services(
    config: &Config,
    directory: Arc<dyn Directory>,
    locator: &Arc<Locator>,
    topology: Topology,
    connector: Option<TlsConnector>,
) -> NodeServices {
    let metrics = Arc::new(Metrics::new());
    metrics.declare(&known_labels(config));
    let resolver = Resolver::new(
        directory,
        Arc::clone(locator),
        topology,
        resolver_settings(config),
        Arc::clone(&metrics),
    );
    NodeServices {
        resolver: Arc::new(resolver),
        backends: backends(config, connector),
        registry: Arc::new(Registry::new(Arc::clone(locator))),
        metrics,
    }
}

/// The label values the configuration implies, declared at zero from the first scrape.
pub fn known_labels(config: &Config) -> Known {
    let mut known = Known::default();
    for listener in &config.listener {
        let name = listener_name(listener);
        match listener.protocol {
            ListenerProtocol::Imap | ListenerProtocol::Pop3 | ListenerProtocol::Submission => {
                let protocol = listener.protocol.as_str().to_owned();
                if !known.session_protocols.contains(&protocol) {
                    known.session_protocols.push(protocol);
                }
            }
            ListenerProtocol::Smtp | ListenerProtocol::Outbound => {
                known.transfer_listeners.push(name.clone());
            }
            ListenerProtocol::Https => known.http = true,
            ListenerProtocol::Sip => {}
        }
        known.listeners.push(name);
    }
    known.login_protocols = known.session_protocols.clone();
    if known.http {
        known.login_protocols.push("http".to_owned());
    }
    known.servers = config.server.iter().map(|s| s.name.clone()).collect();
    known.databases = config.database.iter().map(|d| d.name.clone()).collect();
    known
}

/// The HTTPS front door the configuration describes, if it has an `[http]` section.
pub fn http_front_door(
    config: &Config,
    services: &NodeServices,
    state: &Arc<NodeState>,
) -> Result<Option<Arc<HttpFrontDoor>>, String> {
    let Some(http) = &config.http else {
        return Ok(None);
    };
    let keys = CookieKeys::load(&http.cookie_keys).map_err(|e| format!("http.cookie_keys: {e}"))?;
    let backend_tls = super::tls::backend_client_config(config)?;
    let parts = FrontDoorParts {
        resolver: Arc::clone(&services.resolver),
        metrics: Arc::clone(&services.metrics),
        keys,
        backend_tls,
        connect_timeout: services.backends.timeouts.connect,
        node_name: config.node.name.clone(),
        state: Arc::clone(state),
    };
    HttpFrontDoor::new(http.clone(), parts).map(|front| Some(Arc::new(front)))
}

/// Reads the admin token file: one line, at least 16 characters.
pub fn admin_token(file: &Path) -> Result<Secret<String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("admin.token_file: cannot read {}: {e}", file.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(format!(
            "admin.token_file: {} must hold a token of at least 16 characters",
            file.display()
        ));
    }
    Ok(Secret::new(token.to_owned()))
}

/// OAuth token logins (`[oauth]`): the provider's keys (fetched now and kept fresh by a
/// returned task), the resolver's token check, and the re-checks of live sessions' tokens
/// (introspection, expiry) where configured. No tasks without `[oauth]`.
pub fn token_logins(
    config: &Config,
    services: &NodeServices,
) -> Result<Vec<JoinHandle<()>>, String> {
    let Some(oauth) = &config.oauth else {
        return Ok(Vec::new());
    };
    let provider = Arc::new(
        mailfront_oauth::Provider::new(oauth.provider_settings())
            .map_err(|e| format!("oauth.ca_file: {e}"))?,
    );
    let verifier = mailfront_oauth::Verifier::new(Arc::clone(&provider), oauth.policy());
    services
        .resolver
        .accept_tokens(mailfront_resolve::tokens::TokenLogins {
            verifier: Arc::new(verifier),
            scopes: oauth.scopes.clone(),
        });
    let introspection = match (
        &oauth.introspection_client_id,
        &oauth.introspection_secret_file,
    ) {
        (Some(client_id), Some(path)) => Some(Introspection {
            provider: Arc::clone(&provider),
            client_id: client_id.clone(),
            secret: read_secret_line(path)
                .map_err(|e| format!("oauth.introspection_secret_file: {e}"))?,
        }),
        _ => None,
    };
    let end_at_expiry = oauth.session_max == SessionMax::Token;
    let mut tasks = vec![tokio::spawn(provider.run())];
    if introspection.is_some() || end_at_expiry {
        tasks.push(tokio::spawn(mailfront_proxy::token_checks::run(
            Arc::clone(&services.registry),
            TokenChecks {
                every: oauth.recheck,
                end_at_expiry,
                introspection,
            },
        )));
    }
    Ok(tasks)
}

/// The first line of the file at `path`, which must not be empty.
fn read_secret_line(path: &Path) -> Result<Secret<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().to_owned();
    if line.is_empty() {
        return Err(format!("{}: the first line is empty", path.display()));
    }
    Ok(Secret::new(line))
}
