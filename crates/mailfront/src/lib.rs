//! mailfront, the binary's library half: configuration, wiring and the command line.
//!
//! In the flow of a session (DESIGN.md) this crate is the outermost layer: it reads the one
//! configuration file, builds the topology, directory, locator and gateway from it, binds the
//! listeners, and offers the operator commands (`serve`, `check`, `route`, `hash-password`).

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod cli;
pub mod config;
pub mod reload;
