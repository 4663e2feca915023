//! `[placement]`: users placed on servers by group, for fleets whose backends share one mail
//! store (no mailbox databases).

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
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            mode: PlacementMode::Databases,
            groups: mailfront_model::group::DEFAULT_GROUPS,
            max_parallel_moves: 16,
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
