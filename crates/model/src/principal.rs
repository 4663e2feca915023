//! The directory's answer about a user.

use serde::{Deserialize, Serialize};

use crate::{DatabaseName, Protocol, ProtocolSet, Version};

/// A mailbox user as the directory knows them: who they are, where their mailbox lives, and what
/// they may use. Produced by a successful authentication or lookup; contains no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The primary address, lowercase (`alice@example.com`). This is the name mailfront uses
    /// when it logs in to a mailbox server on the user's behalf.
    pub address: String,
    /// Other addresses that reach the same mailbox, lowercase.
    pub aliases: Vec<String>,
    /// A display name for address lists, if the directory has one.
    pub display_name: Option<String>,
    /// The mailbox's stable identifier (unique within its tenant).
    pub mailbox_guid: String,
    /// The tenant (organisation) domain the mailbox belongs to.
    pub tenant: String,
    /// The mailbox database that holds the mailbox.
    pub database: DatabaseName,
    /// The version of the mailbox (for legacy redirects).
    pub version: Version,
    /// The protocols this user may use.
    pub protocols: ProtocolSet,
    /// The user's telephone extension for voice mail, if any.
    pub sip_extension: Option<String>,
}

impl Principal {
    /// Whether the user may use `protocol`.
    pub fn allows(&self, protocol: Protocol) -> bool {
        self.protocols.contains(protocol)
    }

    /// Whether `name` (compared case-insensitively) is one of this user's addresses.
    pub fn answers_to(&self, name: &str) -> bool {
        self.address.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}
