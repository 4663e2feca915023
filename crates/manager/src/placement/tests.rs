use std::collections::BTreeMap;

use mailfront_model::{DatabaseName, ServerName};

use super::*;

fn servers(weights: &[(&str, u32)]) -> BTreeMap<ServerName, u32> {
    weights
        .iter()
        .map(|(s, w)| (ServerName::new(s), *w))
        .collect()
}

/// The placement after applying `moves` to `current`.
fn apply(
    current: &BTreeMap<DatabaseName, ServerName>,
    moves: &[GroupMove],
) -> BTreeMap<DatabaseName, ServerName> {
    let mut next = current.clone();
    for m in moves {
        next.insert(m.group.clone(), m.to.clone());
    }
    next
}

/// A first placement of `groups` over `servers` (by `assign`).
fn first_placement(
    servers: &BTreeMap<ServerName, u32>,
    groups: u32,
) -> BTreeMap<DatabaseName, ServerName> {
    apply(&BTreeMap::new(), &assign(&BTreeMap::new(), servers, groups))
}

fn counts(placement: &BTreeMap<DatabaseName, ServerName>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for server in placement.values() {
        *out.entry(server.to_string()).or_default() += 1;
    }
    out
}

#[test]
fn shares_follow_the_weights_within_one_group() {
    let none = BTreeMap::new();
    type Row<'a> = (&'a [(&'a str, u32)], u32, &'a [u32]);
    let table: &[Row] = &[
        (&[("a", 1), ("b", 1), ("c", 1)], 256, &[86, 85, 85]),
        (&[("a", 2), ("b", 1)], 256, &[171, 85]),
        (&[("a", 1), ("b", 0)], 10, &[10, 0]),
        (&[("a", 0)], 10, &[0]),
        (
            &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
            256,
            &[64, 64, 64, 64],
        ),
        (&[("a", 3), ("b", 1), ("c", 1)], 7, &[4, 2, 1]),
    ];
    for (weights, groups, expected) in table {
        let got: Vec<u32> = shares(&servers(weights), *groups, &none)
            .into_values()
            .collect();
        assert_eq!(&got[..], *expected, "{weights:?} of {groups}");
        if got.iter().any(|s| *s > 0) {
            assert_eq!(got.iter().sum::<u32>(), *groups);
        }
    }
    // The extra group goes to a server that already holds it, not by name.
    let held = BTreeMap::from([(ServerName::new("c"), 86), (ServerName::new("a"), 85)]);
    let got: Vec<u32> = shares(&servers(&[("a", 1), ("b", 1), ("c", 1)]), 256, &held)
        .into_values()
        .collect();
    assert_eq!(got, [85, 85, 86]);
}

#[test]
fn a_first_placement_fills_every_server_to_its_share_and_a_second_moves_nothing() {
    let fleet = servers(&[("mbx1", 1), ("mbx2", 1), ("mbx3", 1)]);
    let moves = assign(&BTreeMap::new(), &fleet, 256);
    assert_eq!(moves.len(), 256);
    assert!(moves.iter().all(|m| m.from.is_none()));
    let placed = apply(&BTreeMap::new(), &moves);
    assert_eq!(
        counts(&placed),
        BTreeMap::from([
            ("mbx1".into(), 86),
            ("mbx2".into(), 85),
            ("mbx3".into(), 85)
        ])
    );
    assert_eq!(assign(&placed, &fleet, 256), []);
}

#[test]
fn a_new_server_takes_only_its_share_and_only_from_the_others() {
    let three = servers(&[("mbx1", 1), ("mbx2", 1), ("mbx3", 1)]);
    let placed = first_placement(&three, 256);
    let four = servers(&[("mbx1", 1), ("mbx2", 1), ("mbx3", 1), ("mbx4", 1)]);
    let moves = assign(&placed, &four, 256);
    assert_eq!(moves.len(), 64, "the ideal: 256 / 4");
    assert!(
        moves
            .iter()
            .all(|m| m.to.as_str() == "mbx4" && m.from.is_some())
    );
    let after = apply(&placed, &moves);
    assert!(counts(&after).values().all(|c| *c == 64));
}

#[test]
fn a_server_removed_or_down_gives_up_only_its_own_groups() {
    let three = servers(&[("mbx1", 1), ("mbx2", 1), ("mbx3", 1)]);
    let placed = first_placement(&three, 256);
    let two = servers(&[("mbx1", 1), ("mbx3", 1)]);
    let moves = assign(&placed, &two, 256);
    let had = placed.values().filter(|s| s.as_str() == "mbx2").count();
    assert_eq!(moves.len(), had);
    assert!(
        moves
            .iter()
            .all(|m| m.from.as_ref().is_some_and(|f| f.as_str() == "mbx2"))
    );
    let after = apply(&placed, &moves);
    assert_eq!(
        counts(&after),
        BTreeMap::from([("mbx1".into(), 128), ("mbx3".into(), 128)])
    );
}

#[test]
fn weights_shape_the_placement_and_nothing_is_placed_without_a_server() {
    let weighted = servers(&[("big", 3), ("small", 1)]);
    let placed = first_placement(&weighted, 256);
    assert_eq!(
        counts(&placed),
        BTreeMap::from([("big".into(), 192), ("small".into(), 64)])
    );
    assert_eq!(assign(&placed, &BTreeMap::new(), 256), []);
    assert_eq!(assign(&placed, &servers(&[("big", 0)]), 256), []);
}

#[test]
fn fewer_groups_than_servers_and_groups_outside_the_count() {
    // Two groups over three servers: one server gets none.
    let three = servers(&[("a", 1), ("b", 1), ("c", 1)]);
    let placed = first_placement(&three, 2);
    assert_eq!(placed.len(), 2);
    // A placement with a group the count no longer has (groups lowered): it is not placed again.
    let mut stale = placed.clone();
    stale.insert(DatabaseName::new("g9"), ServerName::new("a"));
    let moves = assign(&stale, &three, 2);
    assert!(moves.iter().all(|m| m.group.as_str() != "g9"), "{moves:?}");
}

#[test]
fn placing_by_itself_moves_only_groups_without_a_server_and_never_rebalances() {
    let three = servers(&[("mbx1", 1), ("mbx2", 1), ("mbx3", 1)]);
    let placed = apply(&BTreeMap::new(), &place(&BTreeMap::new(), &three, 256));
    assert_eq!(
        counts(&placed).values().copied().collect::<Vec<_>>(),
        [86, 85, 85]
    );
    // mbx2 fails: only its groups move, spread over the two others.
    let two = servers(&[("mbx1", 1), ("mbx3", 1)]);
    let moves = place(&placed, &two, 256);
    assert_eq!(moves.len(), 85);
    assert!(
        moves
            .iter()
            .all(|m| m.from.as_ref().is_some_and(|f| f.as_str() == "mbx2"))
    );
    let after = apply(&placed, &moves);
    assert_eq!(
        counts(&after),
        BTreeMap::from([("mbx1".into(), 128), ("mbx3".into(), 128)])
    );
    // mbx2 is back: nothing moves by itself (failback is the operator's rebalance).
    assert_eq!(place(&after, &three, 256), []);
    let rebalance = assign(&after, &three, 256);
    assert_eq!(rebalance.len(), 85);
    assert!(rebalance.iter().all(|m| m.to.as_str() == "mbx2"));
}
