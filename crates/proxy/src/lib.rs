//! The front door's moving parts: listeners, TLS, the session driver, admission, backend login
//! and the relay.
//!
//! In the flow of a session (DESIGN.md) this crate owns every socket: [`listener::run`] accepts,
//! [`driver::serve`] runs one session — it feeds the protocol's sans-I/O front end, asks the
//! [`admission::Gateway`] to authenticate, locate, route and log in to the backend, and then hands
//! both connections to the [`relay::Relay`]. Protocols plug in through [`LineProtocol`]; there is
//! one driver for all of them.

pub mod admission;
pub mod backend;
pub mod client;
pub mod driver;
pub mod gate;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod relay;
pub mod sip;
mod stream;
pub mod throttle;
pub mod tls;
pub mod transport;
pub mod workers;

mod protocols;

use mailfront_model::{BackendTls, Protocol};
use mailfront_protocol::{BackendAuth, BackendLogin, ClientInfo, FrontEnd};

pub use protocols::{Imap, Pop3, Submission};
pub use stream::Stream;

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
