//! The HTTPS front door.
//!
//! In the flow of a session (docs/architecture.md) this crate is HTTP's whole path through mailfront: it
//! authenticates each request (Basic, the forms-login cookie, a bearer token, or not at all for
//! health pages and autodiscover), finds the mailbox the request acts on — the user's own, or an
//! anchor mailbox it names — and proxies the request to the mailbox server hosting the active
//! copy, or redirects the client where the routing rules say. It renders nothing but its own
//! login page, autodiscover documents and the address book.
//!
//! The forms-login cookie is sealed with a key every node shares ([`cookie::CookieKeys`]), so any
//! node of an array serves any request: no load-balancer affinity (the spec's "Session
//! Affinity").

//! Where things are: [`server`] accepts connections and runs hyper; `front` holds the front door
//! and dispatches each request; `auth` finds who is asking; `service` resolves the mailbox a
//! service request acts on and carries out the decision; `forward` proxies it to the mailbox
//! server; `pages` are mailfront's own pages (login, tokens, autodiscover, address book);
//! `reply` builds the responses mailfront writes itself.

pub mod address_book;
mod auth;
pub mod autodiscover;
pub mod config;
pub mod cookie;
pub mod form;
mod forward;
mod front;
pub mod login;
mod pages;
mod reply;
pub mod server;
mod service;

pub use front::{FrontDoorParts, HttpFrontDoor};
pub use reply::Body;
pub use service::anchor_of;
