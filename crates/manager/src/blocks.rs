//! Login blocks shared across the array (etcd).
//!
//! Throttling counts failures per node (`mailfront_resolve::throttle`): behind a balancer an
//! attacker would otherwise get N nodes' budget. So a *block* — an address or a user name past
//! its threshold — is published: the node where it began writes `<prefix><key>` (the key as
//! [`Key::encode`] writes it; the value `<unix ms when it ends> <node>`) under a lease of the
//! block's length, and every node watches the prefix and applies each block at once, with the
//! same reply and delay as its own. The lease takes the key away when the block ends, and a node
//! that starts (or reconnects) reads the blocks still in force first.
//!
//! Failures of the store cost nothing but the sharing: a block that cannot be written stays on
//! its node (logged), and while the watch is down the node blocks by its own counts, as without
//! etcd.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions, WatchResponse};
use mailfront_location::etcd::{EtcdConnection, EtcdError};
use mailfront_resolve::Resolver;
use mailfront_resolve::throttle::{Block, Key};
use tokio::sync::mpsc::UnboundedReceiver;

/// The longest wait between two attempts to reach the store.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One node's share of the array's blocks.
pub struct SharedBlocks {
    /// The store.
    pub connection: EtcdConnection,
    /// Where blocks live (`[throttle] blocks_prefix`; starts and ends with `/`).
    pub prefix: String,
    /// This node's name (in the values, for the logs of the others).
    pub node: String,
    /// Whose throttle applies the others' blocks.
    pub resolver: Arc<Resolver>,
}

/// What a published block says: when it ends, and where it began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Milliseconds since the Unix epoch.
    pub until_ms: u64,
    /// The node that published it.
    pub node: String,
}

impl Published {
    /// The value as stored.
    pub fn encode(&self) -> String {
        format!("{} {}", self.until_ms, self.node)
    }

    /// A stored value, or `None` if it is not one.
    pub fn decode(value: &[u8]) -> Option<Published> {
        let text = std::str::from_utf8(value).ok()?;
        let (until, node) = text.split_once(' ')?;
        Some(Published {
            until_ms: until.parse().ok()?,
            node: node.to_owned(),
        })
    }

    /// How long the block still lasts at `now_ms` (none once it ended).
    pub fn remaining(&self, now_ms: u64) -> Option<Duration> {
        let left = self.until_ms.checked_sub(now_ms)?;
        (left > 0).then(|| Duration::from_millis(left))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SharedBlocks {
    /// Publishes the blocks that begin here (`began`, fed by the throttle) and applies the
    /// others', reconnecting after failures, until `began` closes.
    pub async fn run(self, mut began: UnboundedReceiver<Block>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&mut began).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "login blocks: the store is unreachable; blocks stay on this node until it is back");
                }
            }
            // Blocks that begin meanwhile cannot be shared; they stay here.
            let deadline = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    block = began.recv() => match block {
                        Some(block) => tracing::warn!(key = %block.key.encode(), "login block not shared: the store is unreachable"),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: read the blocks in force, then publish and watch until something fails.
    async fn session(&self, began: &mut UnboundedReceiver<Block>) -> Result<(), EtcdError> {
        let mut client = self.connection.connect().await?;
        let listing = self
            .connection
            .call(
                "get",
                client.get(
                    self.prefix.as_bytes(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        for kv in listing.kvs() {
            self.apply(kv.key(), kv.value());
        }
        let from = listing.header().map_or(0, |h| h.revision()) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self
            .connection
            .call("watch", client.watch(self.prefix.as_bytes(), Some(options)))
            .await?;
        tracing::info!(prefix = %self.prefix, in_force = listing.kvs().len(), "login blocks: shared through etcd");
        loop {
            tokio::select! {
                block = began.recv() => match block {
                    Some(block) => self.publish(&mut client, block).await?,
                    None => return Ok(()),
                },
                message = stream.message() => match message {
                    Ok(Some(response)) => self.on_response(&response)?,
                    Ok(None) => return Err(EtcdError::Store { operation: "watch", message: "the watch ended".to_owned() }),
                    Err(error) => return Err(EtcdError::Store { operation: "watch", message: error.to_string() }),
                },
            }
        }
    }

    /// Writes `block` under a lease of its length.
    async fn publish(&self, client: &mut Client, block: Block) -> Result<(), EtcdError> {
        let ttl = i64::try_from(block.lasts.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self
            .connection
            .call("lease grant", client.lease_grant(ttl, None))
            .await?;
        let key = format!("{}{}", self.prefix, block.key.encode());
        let value = Published {
            until_ms: now_ms()
                .saturating_add(u64::try_from(block.lasts.as_millis()).unwrap_or(u64::MAX)),
            node: self.node.clone(),
        };
        let options = Some(PutOptions::new().with_lease(lease.id()));
        self.connection
            .call("put", client.put(key, value.encode(), options))
            .await?;
        tracing::info!(key = %block.key.encode(), seconds = ttl, "login block shared with the array");
        Ok(())
    }

    fn on_response(&self, response: &WatchResponse) -> Result<(), EtcdError> {
        if response.canceled() {
            return Err(EtcdError::Store {
                operation: "watch",
                message: format!("canceled: {}", response.cancel_reason()),
            });
        }
        for event in response.events() {
            // A deletion (version 0) is a block ending: the throttle's own clock ends it too.
            if let Some(kv) = event.kv()
                && kv.version() > 0
            {
                self.apply(kv.key(), kv.value());
            }
        }
        Ok(())
    }

    /// Applies one stored block (its own included: applying is idempotent).
    fn apply(&self, raw: &[u8], value: &[u8]) {
        let key = std::str::from_utf8(raw)
            .ok()
            .and_then(|k| k.strip_prefix(&self.prefix))
            .and_then(Key::decode);
        let (Some(key), Some(published)) = (key, Published::decode(value)) else {
            tracing::warn!(key = %String::from_utf8_lossy(raw), "login blocks: a key that is not a block; ignored");
            return;
        };
        let Some(lasts) = published.remaining(now_ms()) else {
            return;
        };
        if published.node != self.node {
            tracing::info!(key = %key.encode(), from = %published.node, seconds = lasts.as_secs(), "login block from another node applied");
        }
        self.resolver.throttle().apply(key, lasts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_say_when_and_where_and_nothing_else_is_one() {
        let value = Published {
            until_ms: 1_800_000_000_000,
            node: "cas2".into(),
        };
        assert_eq!(value.encode(), "1800000000000 cas2");
        assert_eq!(
            Published::decode(value.encode().as_bytes()),
            Some(value.clone())
        );
        assert_eq!(
            value.remaining(1_799_999_999_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(value.remaining(1_800_000_000_000), None);
        assert_eq!(value.remaining(1_900_000_000_000), None);
        for junk in [&b""[..], b"soon cas2", b"1800000000000", b"\xff\xfe 1"] {
            assert_eq!(Published::decode(junk), None);
        }
    }
}
