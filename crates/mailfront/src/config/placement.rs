//! `[placement]`: users placed on servers by group, for fleets whose backends share one mail
//! store (no mailbox databases).

use std::time::Duration;

use serde::Deserialize;

/// Which users are placed by group.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlacementMode {
    /// Users whose directory entry names a database follow it; the others are placed by group.
    #[default]
    Databases,
    /// Every user is placed by group (the directory's database is ignored).
    Groups,
}

/// `[placement]`: each user is in group `g<N>` (a stable hash of the primary address, modulo
/// `groups`); the Active Manager's leader puts every group on a server, by `[[server]] weight`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Who is placed by group.
    pub mode: PlacementMode,
    /// How many groups. Changing it moves users between groups: set it once.
    pub groups: u32,
    /// The most groups an operator's rebalance moves at once.
    pub max_parallel_moves: u32,
    /// How long a login waits for its group's move, and how long the leader waits for every
    /// node's acknowledgement before it calls a move off.
    #[serde(with = "humantime_serde")]
    pub move_timeout: Duration,
    /// Sessions closed by a move or a failover are closed at random moments within this time,
    /// so that their clients do not all reconnect at once (0s: all at once).
    #[serde(with = "humantime_serde")]
    pub disconnect_spread: Duration,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            mode: PlacementMode::Databases,
            groups: mailfront_model::group::DEFAULT_GROUPS,
            max_parallel_moves: 16,
            move_timeout: mailfront_resolve::moves::DEFAULT_MOVE_TIMEOUT,
            disconnect_spread: Duration::from_secs(2),
        }
    }
}

impl PlacementConfig {
    /// Checks the counts, and that someone places the groups (the Active Manager's leader).
    pub(super) fn validate(&self, automatic: bool) -> Result<(), String> {
        if !(1..=65_536).contains(&self.groups) {
            return Err("placement.groups: must be between 1 and 65536".to_owned());
        }
        if self.max_parallel_moves == 0 {
            return Err("placement.max_parallel_moves: must be at least 1".to_owned());
        }
        if self.move_timeout < Duration::from_secs(1) {
            return Err("placement.move_timeout: must be at least 1s".to_owned());
        }
        if self.disconnect_spread >= self.move_timeout {
            return Err(format!(
                "placement.disconnect_spread: must be shorter than placement.move_timeout ({:?}): \
                 a move waits for the spread closes before it is done",
                self.move_timeout
            ));
        }
        if !automatic {
            return Err(
                "placement: groups are placed by the Active Manager's leader: add [health] and \
                 [active_manager] (enabled)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}
