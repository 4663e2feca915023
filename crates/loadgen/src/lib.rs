//! The load generator behind `mailfront-bench`, the driver of the side-by-side benchmark
//! (`bench/compare.py`). It speaks to any front door (mailfront, nginx's mail proxy, Dovecot,
//! HAProxy) as a plain client would and measures what the client sees: operations per second,
//! latency percentiles, bytes moved, errors. What the front door itself costs (CPU, memory) is
//! read from /proc by the harness, never here.
//!
//! Scenarios (see [`settings::Scenario`]): `login-storm`, `idle`, `latency`, `throughput` (IMAP),
//! `smtp` (inbound delivery) and `https` (proxied GETs).

pub mod conn;
pub mod imap;
pub mod report;
pub mod scenarios;
pub mod settings;
pub mod smtp;
