//! The socket plumbing every front door shares.
//!
//! In the flow of a session (docs/architecture.md) this crate is the edge where bytes meet
//! sockets, for the line protocols ([`mailfront-proxy`]), HTTPS (`mailfront-http`) and SIP alike:
//!
//! - [`listen::accept_loop`] accepts connections until shutdown;
//! - [`gate::Gate`] decides on each one before any protocol byte: the real client behind a
//!   trusted load balancer (PROXY protocol v1/v2) and whether there is room for it;
//! - [`tls`] loads certificates (chosen by SNI), the TLS policy, shared session-ticket keys and
//!   the trust towards backends; [`keyfile`] reads files of shared secret keys; [`stream::Stream`] is a connection that may turn TLS
//!   in place (STARTTLS, either side), [`conn::Conn`] buffers a connection's writes and reads
//!   within deadlines, and [`connect::connect`] makes every connection to a mailbox server;
//! - [`pump::pump`] is the one driver of every sans-I/O machine of `mailfront-protocol`: it sends,
//!   reads and upgrades to TLS for the machine until the machine has an event for its caller;
//! - [`node::NodeState`] says whether the node is draining.
//!
//! Nothing here knows a mail protocol's words or a user.

pub mod conn;
pub mod connect;
pub mod gate;
pub mod keyfile;
pub mod listen;
pub mod node;
pub mod pump;
pub mod stream;
pub mod tls;

pub use stream::Stream;
