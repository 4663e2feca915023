//! Builders: from a validated [`Config`](crate::config::Config) to the parts a node runs with.
//!
//! Everything here reads the configuration (and the files it names) and returns a part (a
//! setting, a TLS acceptor, a bound socket) without spawning anything to run it; the exceptions
//! are a directory built to `follow` its file, which watches it, and the Active Manager's
//! election, which campaigns as soon as it is built. The running node
//! ([`crate::app`]), a reload ([`crate::reload`]) and the operator commands ([`crate::cli`]) all
//! build their parts here, the same way, so none of them needs another to do it.
//!
//! - [`topology`](mod@topology): servers, sites and the node ([`topology()`]), and the rules a location map is
//!   checked against ([`LocationRules`]).
//! - [`tls`]: the acceptors clients meet and the connector towards backends.
//! - [`sources`]: the directory and the location map, built or loaded once.
//! - [`services`]: what sessions share (the resolver, backends, registry, metrics), throttling,
//!   the HTTPS front door, the admin token.
//! - [`listeners`]: listening sockets, listener names, and each protocol's settings.
//! - [`manager`]: the Active Manager (store, leadership, settings).

pub mod listeners;
pub mod manager;
pub mod services;
pub mod sources;
pub mod tls;
pub mod topology;

pub use manager::{active_manager, copies, probe_settings, safe_moves, shared_blocks};
pub use services::{
    admin_token, backends, http_front_door, node_services, resolver_settings, throttle_settings,
    token_logins,
};
pub use sources::{directory, load_directory_file, load_locations, probe_directory};
pub use tls::{acceptor, admin_acceptor, connector, http_acceptor};
pub use topology::{LocationRules, live_validator, location_validator, topology};
