//! Where a session goes, decided without I/O.
//!
//! In the flow of a session (docs/architecture.md) this crate is the *route* step: after the directory has
//! answered who the user is and the locator has answered which server holds the active copy of
//! the user's database, [`route()`] decides whether to proxy the session there, redirect the
//! client, or refuse it (permanently or temporarily). It also holds the [`Topology`] model
//! (this node, sites, mailbox servers and how to reach them) that the decision is made against.
//!
//! Everything here is pure data and pure functions, so the rules are tested as tables of cases.

pub mod delivery;
mod route;
mod topology;

pub use route::{
    Decision, Facts, HttpRequest, LocationFailure, Reason, RejectKind, Request, route,
};
pub use topology::{
    Endpoint, Endpoints, LoginMethod, MasterUser, Node, Server, Site, Topology, TopologyError,
};
