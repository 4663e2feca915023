//! Which recipients a mail-transfer listener takes: accepted domains, then the resolve step,
//! then the addresses the operator declared that are not mailboxes.

use mailfront_model::{Protocol, ServerName, Source};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_resolve::Mailbox;
use mailfront_routing::{Decision, RejectKind, Request};

use crate::NodeServices;

/// A recipient resolved: a mailbox (its primary address and active server), or an address the
/// operator declared that is not one.
pub(super) struct Resolved {
    /// The mailbox's own address (what the mailbox server knows; aliases resolve to it), or
    /// the declared address as the client gave it.
    pub address: String,
    /// The server hosting the active copy of its database; none for a recipient that is not a
    /// mailbox (any delivery server takes it: the seeds' third rule when it is alone).
    pub active: Option<ServerName>,
}

/// The addresses an inbound listener takes that are not mailboxes (`[transport]
/// non_mailbox_recipients`): local parts at every accepted domain, or whole addresses.
#[derive(Clone, Debug, Default)]
pub struct NonMailboxRecipients {
    /// Lowercase entries; those without `@` are local parts.
    entries: Vec<String>,
}

impl NonMailboxRecipients {
    /// The list as configured (`postmaster`, `lists@example.com`, …).
    pub fn new(entries: &[String]) -> Self {
        Self {
            entries: entries.iter().map(|e| e.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `address` (in an accepted domain) is one of them; case does not matter.
    pub(super) fn contains(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let local = address.rsplit_once('@').map_or("", |(local, _)| local);
        self.entries
            .iter()
            .any(|entry| *entry == address || (!entry.contains('@') && entry == local))
    }
}

/// Whether the listener takes mail for `address` at all, and if so the resolve step's answer:
/// its mailbox and active server (or, for a declared non-mailbox address the directory does not
/// know, no server), or the reply that refuses it.
pub(super) async fn resolve(
    services: &NodeServices,
    accepted_domains: &[String],
    non_mailbox: &NonMailboxRecipients,
    address: &str,
) -> Result<Resolved, Reply> {
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !accepted_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return Err(Reply::relaying_denied());
    }
    let resolved = services
        .resolver
        .resolve(
            Mailbox::Address(address),
            &Request::protocol(Protocol::Smtp),
        )
        .await;
    match (resolved.decision, resolved.principal) {
        (Decision::Proxy { server, .. }, Some(principal)) => Ok(Resolved {
            address: principal.address,
            active: Some(server),
        }),
        // The directory does not know it, and the operator says it is not a mailbox.
        (
            Decision::Reject {
                kind: RejectKind::AuthFailed,
                ..
            },
            None,
        ) if non_mailbox.contains(address) => Ok(Resolved {
            address: address.to_owned(),
            active: None,
        }),
        (Decision::Reject { kind, reason }, _) => Err(refused(kind, reason.source())),
        _ => Err(refused(RejectKind::Temporary, None)),
    }
}

/// The reply to a recipient the resolve step refused (the one place where refusals become
/// SMTP replies): unknown and disabled mailboxes are permanent, a directory or location store
/// that cannot answer is temporary.
fn refused(kind: RejectKind, source: Option<Source>) -> Reply {
    match (kind, source) {
        (RejectKind::AuthFailed, _) => Reply::user_unknown(),
        (RejectKind::ProtocolDisabled, _) => Reply::mailbox_disabled(),
        (_, Some(Source::Directory)) => Reply::directory_unavailable(),
        _ => Reply::location_unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_match_at_every_domain_and_addresses_only_themselves() {
        let list = NonMailboxRecipients::new(&["Postmaster".into(), "lists@example.com".into()]);
        assert!(list.contains("postmaster@example.com"));
        assert!(list.contains("POSTMASTER@other.example"));
        assert!(list.contains("Lists@Example.com"));
        assert!(!list.contains("lists@other.example"));
        assert!(!list.contains("postmaster2@example.com"));
        assert!(!list.contains("x.postmaster@example.com"));
        assert!(!NonMailboxRecipients::default().contains("postmaster@example.com"));
    }
}
