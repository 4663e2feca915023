//! Which mailbox server takes an inbound message (the seeds' Front-End Transport rules).
//!
//! One healthy server is chosen for the whole message (no bifurcation):
//!
//! - one mailbox recipient: a server in that recipient's delivery group, nearest site first;
//! - several: the first 20 recipients choose the nearest delivery group (ties: the group with
//!   more of those recipients, then by name), then its nearest server;
//! - none: a random healthy server in the local site.
//!
//! Within a group, servers are ordered by site cost, then by how many of the recipients'
//! active copies they host, then by name — so ties are deterministic and testable. The result
//! is an ordered list of candidates: if the first cannot be reached, the driver tries the
//! next, which follows the same rules.

use std::collections::BTreeMap;

use mailfront_model::ServerName;

use crate::{Server, Topology};

/// How many recipients decide the delivery group (the seeds' rule).
pub const RECIPIENTS_THAT_CHOOSE: usize = 20;

/// A recipient that is a mailbox: where its database's active copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxRecipient<'a> {
    /// The server hosting the active copy of the recipient's database.
    pub active: &'a ServerName,
}

/// The ordered delivery candidates for a message. `healthy` says whether a server may be
/// tried; `random` picks among equals where the rules ask for randomness (no mailbox
/// recipient). Only servers with a delivery endpoint are candidates.
pub fn delivery_candidates(
    topology: &Topology,
    recipients: &[MailboxRecipient<'_>],
    healthy: &dyn Fn(&ServerName) -> bool,
    random: usize,
) -> Vec<ServerName> {
    let usable: Vec<&Server> = topology
        .servers
        .values()
        .filter(|s| s.endpoints.delivery.is_some() && healthy(&s.name))
        .collect();
    if recipients.is_empty() {
        return any_local_first(topology, &usable, random);
    }
    let choosing = recipients
        .get(..RECIPIENTS_THAT_CHOOSE)
        .unwrap_or(recipients);
    // Active copies hosted per server, and recipients per group, among the choosing ones.
    let mut hosted: BTreeMap<&ServerName, usize> = BTreeMap::new();
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for recipient in choosing {
        *hosted.entry(recipient.active).or_default() += 1;
        if let Some(server) = topology.server(recipient.active) {
            *per_group.entry(server.delivery_group.as_str()).or_default() += 1;
        }
    }
    let local = &topology.node.site;
    let mut candidates = Vec::new();
    for group in groups_by_preference(topology, &usable, &per_group) {
        let mut members: Vec<_> = usable
            .iter()
            .filter(|s| s.delivery_group == group)
            .collect();
        members.sort_by(|a, b| {
            topology
                .cost(local, &a.site)
                .cmp(&topology.cost(local, &b.site))
                .then_with(|| hosted.get(&b.name).cmp(&hosted.get(&a.name)))
                .then_with(|| a.name.cmp(&b.name))
        });
        candidates.extend(members.into_iter().map(|s| s.name.clone()));
    }
    candidates
}

/// No mailbox recipient: a random usable server of the local site, then (so that the message is
/// not refused when the local site has none) the others, nearest first.
fn any_local_first(topology: &Topology, usable: &[&Server], random: usize) -> Vec<ServerName> {
    let local = &topology.node.site;
    let mut here: Vec<ServerName> = usable
        .iter()
        .filter(|s| &s.site == local)
        .map(|s| s.name.clone())
        .collect();
    if !here.is_empty() {
        let len = here.len();
        here.rotate_left(random % len);
    }
    let mut elsewhere: Vec<_> = usable.iter().filter(|s| &s.site != local).collect();
    elsewhere.sort_by(|a, b| {
        topology
            .cost(local, &a.site)
            .cmp(&topology.cost(local, &b.site))
            .then_with(|| a.name.cmp(&b.name))
    });
    here.extend(elsewhere.into_iter().map(|s| s.name.clone()));
    here
}

/// The recipients' delivery groups, nearest reachable first (a group with no usable server
/// last), then the group with more of the recipients, then by name.
fn groups_by_preference<'g>(
    topology: &Topology,
    usable: &[&Server],
    per_group: &BTreeMap<&'g str, usize>,
) -> Vec<&'g str> {
    let local = &topology.node.site;
    let group_cost = |group: &str| {
        usable
            .iter()
            .filter(|s| s.delivery_group == group)
            .map(|s| topology.cost(local, &s.site))
            .min()
    };
    let mut groups: Vec<(&str, usize, Option<u64>)> = per_group
        .iter()
        .map(|(group, count)| (*group, *count, group_cost(group)))
        .collect();
    groups.sort_by(|a, b| {
        a.2.is_none()
            .cmp(&b.2.is_none())
            .then(a.2.cmp(&b.2))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(b.0))
    });
    groups.into_iter().map(|(group, _, _)| group).collect()
}

#[cfg(test)]
mod tests;
