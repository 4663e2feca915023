//! Sessions of the line protocols and SIP: the front door's moving parts after the gate.
//!
//! In the flow of a session (docs/architecture.md) this crate runs what comes after a
//! connection passed the gate (`mailfront-net`): [`listener`] starts a session per connection,
//! [`driver::serve`] runs an IMAP, POP3 or submission session — it feeds the protocol's sans-I/O
//! front end, [`login::log_in`] authenticates, resolves and logs in to the backend, and then
//! both connections go to the [`relay::Relay`]. [`mail_transfer`] serves the inbound and
//! outbound SMTP listeners (no queue: each message streamed to one mailbox server), [`sip`]
//! answers telephony with redirects, [`registry`] knows every live proxied session (so that a
//! failover or an operator can close them), [`token_checks`] closes the sessions whose OAuth
//! token was revoked or expired, and [`workers`] runs the sessions on one single-threaded
//! runtime per core.
//!
//! Protocols plug in through [`LineProtocol`]; there is one driver for all of them.

pub mod backend;
pub mod driver;
pub mod listener;
pub mod login;
pub mod mail_transfer;
pub mod registry;
pub mod relay;
pub mod sip;
pub mod token_checks;
pub mod workers;

mod protocols;

use std::sync::Arc;

use mailfront_metrics::Metrics;
use mailfront_model::{BackendTls, Protocol};
use mailfront_protocol::{BackendAuth, BackendLogin, ClientInfo, FrontEnd};
use mailfront_resolve::Resolver;

pub use protocols::{Imap, Pop3, Submission};

use crate::backend::Backends;
use crate::registry::Registry;

/// What every session of this node shares: who users are and where they go, how to reach the
/// mailbox servers, the live sessions, and the counters. One per node.
#[derive(Debug)]
pub struct NodeServices {
    /// Authentication and the resolve step.
    pub resolver: Arc<Resolver>,
    /// How to connect and log in to mailbox servers.
    pub backends: Backends,
    /// The live proxied sessions.
    pub registry: Arc<Registry>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
}

/// A line protocol the driver can serve: how to start its front end and its backend login.
pub trait LineProtocol: Send + Sync + 'static {
    /// Which protocol this is (routing, endpoints, logs).
    const PROTOCOL: Protocol;
    /// The client-side machine.
    type FrontEnd: FrontEnd + Send;
    /// The backend-login machine.
    type Login: BackendLogin + Send;

    /// A front end for a new connection; `tls_active` if the connection is already TLS.
    fn front_end(&self, tls_active: bool) -> Self::FrontEnd;

    /// A backend login on the user's behalf.
    fn backend_login(&self, auth: BackendAuth, tls: BackendTls, client: ClientInfo) -> Self::Login;

    /// What to tell a proxied client when its session is stopped (the database moved, an
    /// operator closed it, the node shuts down), if the protocol has a way to say it.
    fn stop_notice(&self, reason: &registry::StopReason) -> Option<&'static [u8]>;

    /// What a client is told when the listener or its address has no room left (then the
    /// connection is closed).
    fn busy_notice(&self) -> &'static [u8];
}
