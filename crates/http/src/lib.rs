//! The HTTPS front door.
//!
//! In the flow of a session (DESIGN.md) this crate is HTTP's whole path through mailfront: it
//! authenticates each request (Basic, the forms-login cookie, a bearer token, or not at all for
//! health pages and autodiscover), finds the mailbox the request acts on — the user's own, or an
//! anchor mailbox it names — and proxies the request to the mailbox server hosting the active
//! copy, or redirects the client where the routing rules say. It renders nothing but its own
//! login page, autodiscover documents and the address book.
//!
//! The forms-login cookie is sealed with a key every node shares ([`cookie::CookieKeys`]), so any
//! node of an array serves any request: no load-balancer affinity (the spec's "Session
//! Affinity").

pub mod address_book;
pub mod autodiscover;
pub mod config;
pub mod cookie;
pub mod form;
mod front;
pub mod login;
pub mod server;

pub use front::{Body, HttpFrontDoor};
