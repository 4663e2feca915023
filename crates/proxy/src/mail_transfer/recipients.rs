//! Which recipients a mail-transfer listener takes: accepted domains, then the resolve step.

use mailfront_model::{Protocol, ServerName, Source};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_resolve::Mailbox;
use mailfront_routing::{Decision, RejectKind, Request};

use crate::NodeServices;

/// A recipient resolved to its mailbox: its primary address and its active server.
pub(super) struct Resolved {
    /// The mailbox's own address (what the mailbox server knows; aliases resolve to it).
    pub address: String,
    /// The server hosting the active copy of its database.
    pub active: ServerName,
}

/// Whether the listener takes mail for `address` at all, and if so the resolve step's answer:
/// its mailbox and active server, or the reply that refuses it.
pub(super) async fn resolve(
    services: &NodeServices,
    accepted_domains: &[String],
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
            active: server,
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
