//! The protocols a client can speak to mailfront.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A client-facing protocol. The same value names what a listener speaks, what a user is
/// allowed to use (the directory's "enabled protocols") and which endpoint of a mailbox server a
/// session goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IMAP4rev1 (RFC 3501), plain, STARTTLS or implicit TLS.
    Imap,
    /// POP3 (RFC 1939).
    Pop3,
    /// Message submission by an authenticated user (RFC 6409).
    Submission,
    /// Inbound SMTP from other mail systems (the seeds' front-end transport).
    Smtp,
    /// HTTPS services (webmail-like browser apps, DAV, autodiscover).
    Http,
    /// SIP telephony (always redirected, never proxied).
    Sip,
}

impl Protocol {
    /// Every protocol, in declaration order.
    pub const ALL: [Protocol; 6] = [
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Submission,
        Protocol::Smtp,
        Protocol::Http,
        Protocol::Sip,
    ];

    /// The lowercase name used in configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Submission => "submission",
            Protocol::Smtp => "smtp",
            Protocol::Http => "http",
            Protocol::Sip => "sip",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that mailfront does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (expected one of imap, pop3, submission, smtp, http, sip)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

/// A set of protocols (a user's enabled protocols), stored as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Protocol>", into = "Vec<Protocol>")]
pub struct ProtocolSet(u8);

impl ProtocolSet {
    /// The empty set.
    pub const NONE: ProtocolSet = ProtocolSet(0);
    /// Every protocol.
    pub const ALL: ProtocolSet = ProtocolSet(0b11_1111);

    /// Whether `protocol` is in the set.
    pub fn contains(self, protocol: Protocol) -> bool {
        self.0 & protocol.bit() != 0
    }

    /// The set with `protocol` added.
    #[must_use]
    pub fn with(self, protocol: Protocol) -> Self {
        ProtocolSet(self.0 | protocol.bit())
    }

    /// The protocols in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        Protocol::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Protocol> for ProtocolSet {
    fn from_iter<I: IntoIterator<Item = Protocol>>(iter: I) -> Self {
        iter.into_iter().fold(ProtocolSet::NONE, ProtocolSet::with)
    }
}

impl From<Vec<Protocol>> for ProtocolSet {
    fn from(list: Vec<Protocol>) -> Self {
        list.into_iter().collect()
    }
}

impl From<ProtocolSet> for Vec<Protocol> {
    fn from(set: ProtocolSet) -> Self {
        set.iter().collect()
    }
}

impl fmt::Debug for ProtocolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert_eq!("IMAP".parse::<Protocol>(), Ok(Protocol::Imap));
        assert!("gopher".parse::<Protocol>().is_err());
    }

    #[test]
    fn set_membership() {
        let set: ProtocolSet = [Protocol::Imap, Protocol::Sip].into_iter().collect();
        assert!(set.contains(Protocol::Imap));
        assert!(set.contains(Protocol::Sip));
        assert!(!set.contains(Protocol::Pop3));
        assert_eq!(set.iter().count(), 2);
        assert!(Protocol::ALL.iter().all(|p| ProtocolSet::ALL.contains(*p)));
    }
}
