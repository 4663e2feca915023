//! `[throttle]`: login throttling.

use std::time::Duration;

use mailfront_model::Cidr;
use serde::Deserialize;

/// `[throttle]`: login throttling (see `mailfront_resolve::throttle`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Whether throttling applies.
    pub enabled: bool,
    /// The longest a refused login takes (the first takes `timeouts.auth_failure_delay`, each
    /// further one twice as long).
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Failures from one address (IPv6: one /64) before it is blocked.
    pub block_after: u32,
    /// Failures against one user name before it is blocked.
    pub block_user_after: u32,
    /// How long a block lasts.
    #[serde(with = "humantime_serde")]
    pub block_for: Duration,
    /// Failures are forgotten after this long without another.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Addresses or ranges never throttled.
    pub trusted_networks: Vec<Cidr>,
    /// With the etcd location store: a block that begins on one node is published under
    /// `blocks_prefix` and applied by every node at once (counting stays per node). Default
    /// true; without etcd, blocks are per node.
    pub share_blocks: bool,
    /// The etcd prefix of shared blocks (starts and ends with `/`, overlaps no other prefix).
    /// Default `/mailfront/blocks/`.
    pub blocks_prefix: String,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let d = mailfront_resolve::throttle::ThrottleSettings::default();
        Self {
            enabled: d.enabled,
            max_delay: d.max_delay,
            block_after: d.block_after,
            block_user_after: d.block_user_after,
            block_for: d.block_for,
            forget_after: d.forget_after,
            trusted_networks: Vec::new(),
            share_blocks: true,
            blocks_prefix: "/mailfront/blocks/".to_owned(),
        }
    }
}

impl ThrottleConfig {
    /// Checks what the types alone do not.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.block_after == 0 || self.block_user_after == 0 {
            return Err("throttle.block_after: must be at least 1 (block_user_after too)".into());
        }
        Ok(())
    }

    /// The prefix of shared blocks, checked against the other etcd prefixes of `config`
    /// (`others`: each key's name and value).
    pub(super) fn validate_prefix(&self, others: &[(&str, &str)]) -> Result<(), String> {
        let prefix = &self.blocks_prefix;
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
            return Err(format!(
                "throttle.blocks_prefix: `{prefix}` must start and end with `/`"
            ));
        }
        for (key, other) in others {
            if other.starts_with(prefix.as_str()) || prefix.starts_with(other) {
                return Err(format!(
                    "throttle.blocks_prefix: `{prefix}` overlaps {key} `{other}`"
                ));
            }
        }
        Ok(())
    }
}
