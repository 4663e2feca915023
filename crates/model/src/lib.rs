//! The shared vocabulary of mailfront.
//!
//! Every stage of a session (front end, directory, locator, router, proxy) speaks about the same
//! few things: a [`Principal`] found in the directory, the [`Protocol`] a client uses, the names
//! of databases, servers and sites, mailbox [`Version`]s, [`Secret`]s that must never reach a
//! log, and the address ranges ([`Cidr`]) that configuration trusts. They live here, free of any
//! I/O or policy, so that every crate can share them without depending on each other.

mod backend;
mod cidr;
pub mod group;
mod names;
mod principal;
mod protocol;
mod secret;
mod source;
mod version;

pub use backend::{BackendTls, DeliveryExtensions, DeliveryProtocol, SaslMechanism};
pub use cidr::Cidr;
pub use names::{DatabaseName, ServerName, SiteName};
pub use principal::Principal;
pub use protocol::{Protocol, ProtocolSet, UnknownProtocol};
pub use secret::Secret;
pub use source::Source;
pub use version::{Version, VersionError};
