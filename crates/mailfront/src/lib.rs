//! mailfront, the binary's library half: configuration, wiring and the command line.
//!
//! In the flow of a session (docs/architecture.md) this crate is the outermost layer: it reads the one
//! configuration file, builds the topology, directory, locator and gateway from it, binds the
//! listeners, and offers the operator commands (`serve`, `check`, `init`, `route`, `hash-password`…).
//!
//! # Where is what
//!
//! - [`config`]: the configuration file as types, its loading and its validation, one module
//!   per section.
//! - [`build`]: from a configuration to the parts of a node (topology, TLS, directory,
//!   location map, settings, sockets); shared by the modules below.
//! - [`app`]: the running node: starts the parts in named steps, keeps them alive, stops them.
//! - [`reload`]: applies a changed configuration to a running node.
//! - [`admin`]: the admin listener's API; [`admin_client`]: the commands that call it.
//! - [`init`]: the starter configuration `mailfront init` writes (and the package ships).
//! - [`cli`]: the command line; [`systemd`]: readiness for `Type=notify`.
//!
//! Dependencies go one way: `cli` → `app` → `admin` → `reload` → `build` → `config`, and
//! `cli`, `app` and `reload` take what they build from [`build`], never from each other.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod build;
pub mod cli;
pub mod config;
pub mod init;
pub mod reload;
pub mod systemd;
