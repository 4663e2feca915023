//! Table tests of delivery-server selection, one row per rule, tie and health case.

use std::collections::{BTreeMap, BTreeSet};

use mailfront_model::{SaslMechanism, Secret, ServerName, SiteName, Version};

use super::*;
use crate::{Endpoint, Endpoints, LoginMethod, MasterUser, Node, Server, Site};

fn server(name: &str, site: &str, group: &str, delivery: bool) -> Server {
    Server {
        name: name.into(),
        site: site.into(),
        version: Version::new(15, 0, 0),
        endpoints: Endpoints {
            delivery: delivery.then(|| Endpoint {
                host: "127.0.0.1".into(),
                port: 24,
                tls: Default::default(),
            }),
            ..Endpoints::default()
        },
        login: LoginMethod::Master {
            master: MasterUser {
                user: "m".into(),
                password: Secret::new("p".into()),
                separator: "*".into(),
            },
            mechanism: SaslMechanism::Plain,
        },
        delivery_group: group.into(),
        weight: 1,
    }
}

/// Node in `west`. `east` costs 10, `north` costs 20, `south` has no configured cost.
/// dag1: w1, w2 (west), e1 (east). dag2: e2 (east), n1 (north). dag3: s1 (south).
/// w3 (west, dag1) has no delivery endpoint.
fn topology() -> Topology {
    let site = |name: &str, costs: &[(&str, u32)]| Site {
        name: name.into(),
        external_urls: BTreeMap::new(),
        costs: costs.iter().map(|(s, c)| (SiteName::new(s), *c)).collect(),
        imap_referral: None,
    };
    Topology::new(
        Node {
            name: "cas".into(),
            site: "west".into(),
            version: Version::new(15, 0, 0),
        },
        [
            site("west", &[("east", 10), ("north", 20)]),
            site("east", &[]),
            site("north", &[]),
            site("south", &[]),
        ],
        [
            server("w1", "west", "dag1", true),
            server("w2", "west", "dag1", true),
            server("w3", "west", "dag1", false),
            server("e1", "east", "dag1", true),
            server("e2", "east", "dag2", true),
            server("n1", "north", "dag2", true),
            server("s1", "south", "dag3", true),
        ],
    )
    .unwrap()
}

fn names(list: &[&str]) -> Vec<ServerName> {
    list.iter().map(ServerName::new).collect()
}

#[test]
fn selection_table() {
    let topo = topology();
    let all_healthy = |_: &ServerName| true;
    let s = |n: &str| ServerName::new(n);
    let (w1, w2, e1, e2, n1, s1) = (s("w1"), s("w2"), s("e1"), s("e2"), s("n1"), s("s1"));
    fn r(server: &ServerName) -> MailboxRecipient<'_> {
        MailboxRecipient { active: server }
    }
    let down = |dead: &'static [&'static str]| move |n: &ServerName| !dead.contains(&n.as_str());

    type Row<'a> = (
        &'a str,
        Vec<MailboxRecipient<'a>>,
        Box<dyn Fn(&ServerName) -> bool>,
        usize,
        Vec<ServerName>,
    );
    let rows: Vec<Row<'_>> = vec![
        // One mailbox recipient: its group, nearest site first.
        (
            "one recipient, active in west",
            vec![r(&w1)],
            Box::new(all_healthy),
            0,
            names(&["w1", "w2", "e1"]),
        ),
        (
            "tie in site: the active copy's server first",
            vec![r(&w2)],
            Box::new(all_healthy),
            0,
            names(&["w2", "w1", "e1"]),
        ),
        (
            "active copy far away: still nearest first",
            vec![r(&e1)],
            Box::new(all_healthy),
            0,
            names(&["w1", "w2", "e1"]),
        ),
        (
            "other group, nearest member first",
            vec![r(&n1)],
            Box::new(all_healthy),
            0,
            names(&["e2", "n1"]),
        ),
        (
            "unconfigured cost is farthest",
            vec![r(&s1)],
            Box::new(all_healthy),
            0,
            names(&["s1"]),
        ),
        (
            "unhealthy servers are skipped",
            vec![r(&w1)],
            Box::new(down(&["w1", "w2"])),
            0,
            names(&["e1"]),
        ),
        (
            "a whole group down: no candidate",
            vec![r(&s1)],
            Box::new(down(&["s1"])),
            0,
            names(&[]),
        ),
        // Several recipients: the nearest group, then its servers.
        (
            "two groups: nearest wins",
            vec![r(&n1), r(&w1)],
            Box::new(all_healthy),
            0,
            names(&["w1", "w2", "e1", "e2", "n1"]),
        ),
        (
            "nearest group down: next group",
            vec![r(&n1), r(&w1)],
            Box::new(down(&["w1", "w2", "e1"])),
            0,
            names(&["e2", "n1"]),
        ),
        (
            "hosting more active copies breaks a tie",
            vec![r(&w2), r(&w2), r(&w1)],
            Box::new(all_healthy),
            0,
            names(&["w2", "w1", "e1"]),
        ),
        (
            "equal group cost: more recipients wins",
            vec![r(&e2), r(&e2), r(&e1)],
            Box::new(down(&["w1", "w2"])),
            0,
            names(&["e2", "n1", "e1"]),
        ),
        // No mailbox recipient: a random local server, others after.
        (
            "no recipients, pick 0",
            vec![],
            Box::new(all_healthy),
            0,
            names(&["w1", "w2", "e1", "e2", "n1", "s1"]),
        ),
        (
            "no recipients, pick 1",
            vec![],
            Box::new(all_healthy),
            1,
            names(&["w2", "w1", "e1", "e2", "n1", "s1"]),
        ),
        (
            "no recipients, local site down",
            vec![],
            Box::new(down(&["w1", "w2"])),
            7,
            names(&["e1", "e2", "n1", "s1"]),
        ),
    ];
    for (name, recipients, healthy, random, expected) in rows {
        assert_eq!(
            delivery_candidates(&topo, &recipients, &*healthy, random),
            expected,
            "row `{name}`"
        );
    }
}

#[test]
fn only_the_first_twenty_recipients_choose() {
    let topo = topology();
    let (s1, n1) = (ServerName::new("s1"), ServerName::new("n1"));
    // 20 recipients in dag3 (far), then 30 in dag2 (nearer): dag3 is the only group the
    // choosing recipients name, so it wins; dag2 is not even a candidate.
    let mut recipients = vec![MailboxRecipient { active: &s1 }; 20];
    recipients.extend(vec![MailboxRecipient { active: &n1 }; 30]);
    assert_eq!(
        delivery_candidates(&topo, &recipients, &|_| true, 0),
        names(&["s1"])
    );
    // One of dag2 among the first 20: the nearer group wins.
    recipients[19] = MailboxRecipient { active: &n1 };
    let chosen = delivery_candidates(&topo, &recipients, &|_| true, 0);
    assert_eq!(chosen.first(), Some(&ServerName::new("e2")));
}

#[test]
fn no_bifurcation_every_candidate_list_is_for_one_message() {
    // Property: whatever the input, candidates are distinct and all have a delivery endpoint.
    let topo = topology();
    let servers: Vec<ServerName> = topo.servers.keys().cloned().collect();
    for pick in 0..servers.len() {
        let recipients: Vec<_> = servers
            .iter()
            .take(pick)
            .map(|s| MailboxRecipient { active: s })
            .collect();
        let list = delivery_candidates(&topo, &recipients, &|_| true, pick);
        let distinct: BTreeSet<_> = list.iter().collect();
        assert_eq!(distinct.len(), list.len());
        assert!(!list.contains(&ServerName::new("w3")));
    }
}
