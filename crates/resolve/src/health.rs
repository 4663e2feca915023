//! What this node knows of the mailbox servers' health.
//!
//! Two sources, one board:
//!
//! - the Active Manager's probes (when `[health]` is configured) say, per server and endpoint,
//!   up or down, and the store says which servers an operator put in maintenance; routing
//!   refuses a login at once, with the protocol's temporary error, when the active server's
//!   endpoint for it is known down (no connect timeout), and delivery skips down servers;
//! - without probes, a server that a delivery could not reach is skipped for
//!   [`BackendHealth::RETRY_AFTER`] when there is a choice, so that every message does not pay
//!   its timeout again.
//!
//! Beside health, the board keeps what each delivery server last announced of the extensions an
//! inbound listener can only pass on (DSN, SMTPUTF8), as probes and deliveries read it in the
//! server's `LHLO`/`EHLO` answer: a listener offers one only while every delivery server is
//! known to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use mailfront_model::{DeliveryExtensions, Protocol, ServerName};
use tokio::time::Instant;

/// A server's probed state, endpoint by endpoint, and whether it is in maintenance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHealth {
    /// Per endpoint (the delivery endpoint under [`Protocol::Smtp`]): `true` while up.
    pub endpoints: BTreeMap<Protocol, bool>,
    /// Put in maintenance by an operator.
    pub maintenance: bool,
    /// The endpoints whose last probe failed (up or not: `fall` may not have confirmed it yet).
    pub failing: BTreeSet<Protocol>,
}

impl ServerHealth {
    /// Whether every probed endpoint is up.
    pub fn all_up(&self) -> bool {
        self.endpoints.values().all(|up| *up)
    }

    /// Whether the server looks down: an endpoint down, or its last probe failed.
    pub fn looks_down(&self) -> bool {
        !self.all_up() || !self.failing.is_empty()
    }
}

/// The health board of one node.
#[derive(Debug, Default)]
pub struct BackendHealth {
    probing: AtomicBool,
    probed: RwLock<HashMap<ServerName, ServerHealth>>,
    down_until: Mutex<HashMap<ServerName, Instant>>,
    /// What each delivery server announced in its last `LHLO`/`EHLO` answer.
    delivery_offers: RwLock<HashMap<ServerName, DeliveryExtensions>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The maps hold plain states; a panic elsewhere cannot leave them inconsistent.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BackendHealth {
    /// How long a server that a delivery could not reach is skipped (without probes).
    pub const RETRY_AFTER: Duration = Duration::from_secs(10);

    fn passive(&self) -> std::sync::MutexGuard<'_, HashMap<ServerName, Instant>> {
        self.down_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Says that probes run from now on: their states decide, and failures seen by sessions
    /// no longer mark servers down.
    pub fn start_probing(&self) {
        self.probing.store(true, Ordering::Relaxed);
    }

    /// Whether probes run.
    pub fn is_probing(&self) -> bool {
        self.probing.load(Ordering::Relaxed)
    }

    /// Records a probed endpoint's state (a transition, or the first state).
    pub fn set_endpoint(&self, server: &ServerName, protocol: Protocol, up: bool) {
        write(&self.probed)
            .entry(server.clone())
            .or_default()
            .endpoints
            .insert(protocol, up);
    }

    /// Records whether the last probe of `server`'s `protocol` endpoint failed.
    pub fn set_failing(&self, server: &ServerName, protocol: Protocol, failing: bool) {
        let known = read(&self.probed)
            .get(server)
            .is_some_and(|h| h.failing.contains(&protocol) == failing);
        if known {
            return;
        }
        let mut probed = write(&self.probed);
        let failing_set = &mut probed.entry(server.clone()).or_default().failing;
        if failing {
            failing_set.insert(protocol);
        } else {
            failing_set.remove(&protocol);
        }
    }

    /// Records whether `server` is in maintenance.
    pub fn set_maintenance(&self, server: &ServerName, maintenance: bool) {
        write(&self.probed)
            .entry(server.clone())
            .or_default()
            .maintenance = maintenance;
    }

    /// A copy of what is known of every server.
    pub fn snapshot(&self) -> BTreeMap<ServerName, ServerHealth> {
        read(&self.probed)
            .iter()
            .map(|(name, health)| (name.clone(), health.clone()))
            .collect()
    }

    /// Whether probes say `server`'s endpoint for `protocol` is down.
    pub fn is_down(&self, server: &ServerName, protocol: Protocol) -> bool {
        read(&self.probed)
            .get(server)
            .and_then(|health| health.endpoints.get(&protocol))
            .is_some_and(|up| !up)
    }

    /// Records a failure to reach `server` during a delivery (counts only without probes).
    pub fn mark_down(&self, server: &ServerName) {
        if !self.is_probing() {
            self.passive()
                .insert(server.clone(), Instant::now() + Self::RETRY_AFTER);
        }
    }

    /// Records a success with `server`.
    pub fn mark_up(&self, server: &ServerName) {
        self.passive().remove(server);
    }

    /// Records what `server` announced in an answer to `LHLO`/`EHLO` (a probe's or a
    /// delivery's).
    pub fn learn_delivery_offers(&self, server: &ServerName, offers: DeliveryExtensions) {
        if read(&self.delivery_offers).get(server) != Some(&offers) {
            tracing::info!(backend = %server, dsn = offers.dsn, smtputf8 = offers.smtputf8, "delivery server's extensions");
            write(&self.delivery_offers).insert(server.clone(), offers);
        }
    }

    /// What every one of `servers` is known to offer: an extension counts only if each of them
    /// announced it last time it was asked (a server never asked offers nothing, and so do no
    /// servers at all).
    pub fn delivery_offers<'a>(
        &self,
        servers: impl IntoIterator<Item = &'a ServerName>,
    ) -> DeliveryExtensions {
        let known = read(&self.delivery_offers);
        let all = DeliveryExtensions {
            dsn: true,
            smtputf8: true,
        };
        let mut servers = servers.into_iter().peekable();
        if servers.peek().is_none() {
            return DeliveryExtensions::default();
        }
        servers.fold(all, |offers, server| {
            offers.and(known.get(server).copied().unwrap_or_default())
        })
    }

    /// Whether a delivery may be tried at `server`: its delivery endpoint is not known down,
    /// it is not in maintenance, and (without probes) it did not fail recently.
    pub fn may_deliver(&self, server: &ServerName) -> bool {
        if let Some(health) = read(&self.probed).get(server)
            && (health.maintenance || health.endpoints.get(&Protocol::Smtp) == Some(&false))
        {
            return false;
        }
        self.passive()
            .get(server)
            .is_none_or(|until| *until <= Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_is_offered_only_when_every_server_announced_it() {
        let board = BackendHealth::default();
        let (a, b) = (ServerName::new("mbx1"), ServerName::new("mbx2"));
        let both = DeliveryExtensions {
            dsn: true,
            smtputf8: true,
        };
        assert_eq!(
            board.delivery_offers([&a, &b]),
            DeliveryExtensions::default()
        );
        board.learn_delivery_offers(&a, both);
        assert_eq!(board.delivery_offers([&a]), both);
        assert_eq!(
            board.delivery_offers([&a, &b]),
            DeliveryExtensions::default()
        );
        board.learn_delivery_offers(
            &b,
            DeliveryExtensions {
                dsn: true,
                smtputf8: false,
            },
        );
        assert_eq!(
            board.delivery_offers([&a, &b]),
            DeliveryExtensions {
                dsn: true,
                smtputf8: false
            }
        );
        // A server that stops announcing one takes it away.
        board.learn_delivery_offers(&a, DeliveryExtensions::default());
        assert_eq!(
            board.delivery_offers([&a, &b]),
            DeliveryExtensions::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probes_decide_once_they_run_and_failures_count_before() {
        let health = BackendHealth::default();
        let mbx1 = ServerName::new("mbx1");
        // Without probes: a failed delivery skips the server for a while.
        health.mark_down(&mbx1);
        assert!(!health.may_deliver(&mbx1));
        tokio::time::advance(BackendHealth::RETRY_AFTER).await;
        assert!(health.may_deliver(&mbx1));

        // With probes: a delivery failure alone does not skip it; the probe state does.
        health.start_probing();
        health.mark_down(&mbx1);
        assert!(health.may_deliver(&mbx1));
        health.set_endpoint(&mbx1, Protocol::Smtp, false);
        health.set_endpoint(&mbx1, Protocol::Imap, true);
        assert!(!health.may_deliver(&mbx1));
        assert!(health.is_down(&mbx1, Protocol::Smtp));
        assert!(!health.is_down(&mbx1, Protocol::Imap));
        assert!(
            !health.is_down(&mbx1, Protocol::Pop3),
            "an unprobed endpoint is not down"
        );
        health.set_endpoint(&mbx1, Protocol::Smtp, true);
        assert!(health.may_deliver(&mbx1));
        // Maintenance keeps deliveries away, whatever the probes say.
        health.set_maintenance(&mbx1, true);
        assert!(!health.may_deliver(&mbx1));
        assert!(health.snapshot()[&mbx1].maintenance);
    }
}
