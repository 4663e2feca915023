//! Tables of fleets and what the Active Manager does with them.

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

/// `servers`: (name, site, up?, maintenance?); `databases`: (name, active, copies).
fn fleet(servers: &[(&str, &str, bool, bool)], databases: &[(&str, &str, &[&str])]) -> Fleet {
    Fleet {
        servers: servers
            .iter()
            .map(|(name, site, up, maintenance)| {
                (
                    ServerName::new(name),
                    ServerView {
                        site: SiteName::new(site),
                        health: if *up { Health::Up } else { Health::Down },
                        maintenance: *maintenance,
                        suspect: false,
                    },
                )
            })
            .collect(),
        databases: databases
            .iter()
            .map(|(name, active, copies)| {
                (
                    DatabaseName::new(name),
                    DatabaseView {
                        active: ServerName::new(active),
                        copies: copies.iter().copied().map(ServerName::new).collect(),
                        hold: false,
                        last_move: None,
                    },
                )
            })
            .collect(),
    }
}

fn policy() -> Policy {
    Policy {
        hold_down: 5 * MINUTE,
    }
}

/// A plan as (database, to) pairs and (database, skip) pairs.
type Outcome = (Vec<(String, String)>, Vec<(String, Skip)>);

fn outcome(plan: &Plan) -> Outcome {
    (
        plan.moves
            .iter()
            .map(|m| (m.database.to_string(), m.to.to_string()))
            .collect(),
        plan.skipped
            .iter()
            .map(|(d, s)| (d.to_string(), s.clone()))
            .collect(),
    )
}

fn moves(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(d, s)| ((*d).to_owned(), (*s).to_owned()))
        .collect()
}

#[test]
fn failover_moves_each_database_of_a_dead_server_to_its_best_copy() {
    let now = SystemTime::now();
    type Row<'a> = (&'a str, Fleet, Vec<(String, String)>, Vec<(String, Skip)>);
    let rows: Vec<Row<'_>> = vec![
        (
            "nothing down: nothing moves",
            fleet(
                &[("mbx1", "w", true, false), ("mbx2", "w", true, false)],
                &[("DB01", "mbx1", &["mbx1", "mbx2"])],
            ),
            vec![],
            vec![],
        ),
        (
            "the only other copy takes it",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", true, false),
                    ("mbx3", "w", true, false),
                ],
                &[("DB01", "mbx1", &["mbx1", "mbx2"])],
            ),
            moves(&[("DB01", "mbx2")]),
            vec![],
        ),
        (
            "never a server without a copy, even if it is up",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", false, false),
                    ("mbx3", "w", true, false),
                    ("mbx4", "w", true, false),
                ],
                &[("DB01", "mbx1", &["mbx1", "mbx2"])],
            ),
            vec![],
            vec![("DB01".to_owned(), Skip::NoHealthyCopy)],
        ),
        (
            "no copies configured: stays",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", true, false),
                    ("mbx3", "w", true, false),
                ],
                &[("DB01", "mbx1", &[])],
            ),
            vec![],
            vec![("DB01".to_owned(), Skip::NoCopies)],
        ),
        (
            "a copy in maintenance is passed over",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", true, true),
                    ("mbx3", "w", true, false),
                ],
                &[("DB01", "mbx1", &["mbx1", "mbx2", "mbx3"])],
            ),
            moves(&[("DB01", "mbx3")]),
            vec![],
        ),
        (
            "same site before another site, whatever the preference",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "e", true, false),
                    ("mbx3", "w", true, false),
                ],
                &[("DB01", "mbx1", &["mbx1", "mbx2", "mbx3"])],
            ),
            moves(&[("DB01", "mbx3")]),
            vec![],
        ),
        (
            "the databases of a dead server spread over the survivors",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", true, false),
                    ("mbx3", "w", true, false),
                ],
                &[
                    ("DB01", "mbx1", &["mbx1", "mbx2", "mbx3"]),
                    ("DB02", "mbx1", &["mbx1", "mbx2", "mbx3"]),
                    ("DB03", "mbx1", &["mbx1", "mbx2", "mbx3"]),
                    ("DB04", "mbx2", &["mbx2", "mbx1"]),
                ],
            ),
            // mbx2 already hosts DB04: mbx3 takes the first, then they alternate by load,
            // preference breaking the tie.
            moves(&[("DB01", "mbx3"), ("DB02", "mbx2"), ("DB03", "mbx3")]),
            vec![],
        ),
        (
            "activation preference breaks a tie",
            fleet(
                &[
                    ("mbx1", "w", false, false),
                    ("mbx2", "w", true, false),
                    ("mbx3", "w", true, false),
                ],
                &[("DB01", "mbx1", &["mbx1", "mbx3", "mbx2"])],
            ),
            moves(&[("DB01", "mbx3")]),
            vec![],
        ),
        (
            "exactly half down still moves",
            fleet(
                &[("mbx1", "w", false, false), ("mbx2", "w", true, false)],
                &[("DB01", "mbx1", &["mbx1", "mbx2"])],
            ),
            moves(&[("DB01", "mbx2")]),
            vec![],
        ),
    ];
    for (name, fleet, expected_moves, expected_skips) in rows {
        let plan = plan_failover(&fleet, &policy(), now);
        assert_eq!(plan.halted, None, "row `{name}`");
        assert_eq!(
            outcome(&plan),
            (expected_moves, expected_skips),
            "row `{name}`"
        );
        assert!(
            plan.moves.iter().all(|m| m.kind == MoveKind::Failover),
            "row `{name}`"
        );
    }
}

#[test]
fn more_than_half_down_moves_nothing() {
    let fleet = fleet(
        &[
            ("mbx1", "w", false, false),
            ("mbx2", "w", false, false),
            ("mbx3", "w", true, false),
        ],
        &[("DB01", "mbx1", &["mbx1", "mbx3"])],
    );
    let plan = plan_failover(&fleet, &policy(), SystemTime::now());
    assert_eq!(
        plan.halted,
        Some(Halt::MostServersDown { down: 2, total: 3 })
    );
    assert!(plan.moves.is_empty());
    assert!(
        plan.halted
            .unwrap()
            .to_string()
            .contains("2 of 3 servers look down")
    );
}

#[test]
fn servers_failing_their_last_probe_count_as_looking_down() {
    // One server confirmed down, a second only failing its last probe: two of three look down.
    let mut fleet = fleet(
        &[
            ("mbx1", "w", false, false),
            ("mbx2", "w", true, false),
            ("mbx3", "w", true, false),
        ],
        &[("DB01", "mbx1", &["mbx1", "mbx2", "mbx3"])],
    );
    if let Some(mbx2) = fleet.servers.get_mut(&ServerName::new("mbx2")) {
        mbx2.suspect = true;
    }
    let plan = plan_failover(&fleet, &policy(), SystemTime::now());
    assert_eq!(
        plan.halted,
        Some(Halt::MostServersDown { down: 2, total: 3 })
    );
    assert!(plan.moves.is_empty());
}

#[test]
fn hold_and_hold_down_keep_a_database_where_it_is() {
    let now = SystemTime::now();
    let base = fleet(
        &[
            ("mbx1", "w", false, false),
            ("mbx2", "w", true, false),
            ("mbx3", "w", true, false),
        ],
        &[("DB01", "mbx1", &["mbx1", "mbx2"])],
    );
    let db = DatabaseName::new("DB01");
    let with = |change: &dyn Fn(&mut DatabaseView)| {
        let mut fleet = base.clone();
        if let Some(view) = fleet.databases.get_mut(&db) {
            change(view);
        }
        outcome(&plan_failover(&fleet, &policy(), now))
    };

    assert_eq!(
        with(&|d| d.hold = true).1,
        vec![("DB01".into(), Skip::OnHold)]
    );
    // Moved automatically a minute ago: held down for four more.
    let recent = now - MINUTE;
    assert_eq!(
        with(&|d| d.last_move = Some((MoveKind::Failover, recent))).1,
        vec![(
            "DB01".into(),
            Skip::HeldDown {
                until: recent + 5 * MINUTE
            }
        )]
    );
    // After the hold-down, or after an operator's move, it moves again.
    let long_ago = now - 6 * MINUTE;
    assert_eq!(
        with(&|d| d.last_move = Some((MoveKind::Failover, long_ago))).0,
        moves(&[("DB01", "mbx2")])
    );
    assert_eq!(
        with(&|d| d.last_move = Some((MoveKind::Switchover, recent))).0,
        moves(&[("DB01", "mbx2")])
    );
}

#[test]
fn failback_is_never_automatic() {
    // DB01 failed over to mbx2; mbx1 is back up: nothing moves.
    let fleet = fleet(
        &[("mbx1", "w", true, false), ("mbx2", "w", true, false)],
        &[("DB01", "mbx2", &["mbx1", "mbx2"])],
    );
    assert_eq!(
        plan_failover(&fleet, &policy(), SystemTime::now()),
        Plan::default()
    );
}

#[test]
fn operator_moves_are_checked_and_force_overrides_all_but_a_missing_copy() {
    let fleet = fleet(
        &[
            ("mbx1", "w", true, false),
            ("mbx2", "w", false, false),
            ("mbx3", "w", true, true),
            ("mbx4", "w", true, false),
        ],
        &[("DB01", "mbx1", &["mbx1", "mbx2", "mbx3"])],
    );
    let db = DatabaseName::new("DB01");
    let check = |to: &str, force| check_move(&fleet, &db, &ServerName::new(to), force);
    assert_eq!(check("mbx1", false), Err(MoveRefused::AlreadyActive));
    assert_eq!(check("mbx2", false), Err(MoveRefused::ServerDown));
    assert_eq!(check("mbx3", false), Err(MoveRefused::InMaintenance));
    assert_eq!(check("mbx4", false), Err(MoveRefused::NotACopy));
    assert_eq!(
        check("mbx9", true),
        Err(MoveRefused::UnknownServer(ServerName::new("mbx9")))
    );
    assert_eq!(
        check_move(
            &fleet,
            &DatabaseName::new("DB09"),
            &ServerName::new("mbx1"),
            false
        ),
        Err(MoveRefused::UnknownDatabase(DatabaseName::new("DB09")))
    );
    let forced = check("mbx2", true).unwrap();
    assert_eq!(
        (forced.to.as_str(), forced.kind),
        ("mbx2", MoveKind::Switchover)
    );
    // A server without a copy has none of the mail: not even forced.
    assert_eq!(check("mbx4", true), Err(MoveRefused::NotACopy));
    // Without configured copies mailfront cannot know: the operator decides.
    let mut unconfigured = fleet.clone();
    if let Some(db01) = unconfigured.databases.get_mut(&db) {
        db01.copies.clear();
    }
    assert!(check_move(&unconfigured, &db, &ServerName::new("mbx4"), false).is_ok());
}

#[test]
fn a_held_down_database_is_described_the_same_every_round() {
    // The Active Manager logs what it skips only when the words change.
    let until = SystemTime::now() + Duration::from_secs(600);
    let first = Skip::HeldDown { until }.to_string();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(Skip::HeldDown { until }.to_string(), first);
    assert!(first.contains("until 20"), "{first}");
}

#[test]
fn evacuation_moves_what_can_move_and_names_what_cannot() {
    let fleet = fleet(
        &[
            ("mbx1", "w", true, false),
            ("mbx2", "w", true, false),
            ("mbx3", "w", false, false),
        ],
        &[
            ("DB01", "mbx1", &["mbx1", "mbx2"]),
            ("DB02", "mbx1", &["mbx1", "mbx3"]),
            ("DB03", "mbx1", &[]),
            ("DB04", "mbx2", &["mbx2", "mbx1"]),
        ],
    );
    let plan = plan_evacuate(&fleet, &ServerName::new("mbx1"));
    assert_eq!(
        outcome(&plan),
        (
            moves(&[("DB01", "mbx2")]),
            vec![
                ("DB02".to_owned(), Skip::NoHealthyCopy),
                ("DB03".to_owned(), Skip::NoCopies)
            ]
        )
    );
    assert!(plan.moves.iter().all(|m| m.kind == MoveKind::Evacuation));
}
