//! Tests of the etcd source that need no etcd: the value format, the map state, the
//! configuration, and failing to start. `tests/etcd_real.rs` runs the rest against a real etcd.

use mailfront_model::DatabaseName;
use serde::Deserialize;

use super::state::Change;
use super::*;

fn any(_: &LocationMap) -> Result<(), String> {
    Ok(())
}

fn only_mbx(map: &LocationMap) -> Result<(), String> {
    match map.iter().find(|(_, s)| !s.as_str().starts_with("mbx")) {
        Some((d, s)) => Err(format!("active.{d}: unknown server `{s}`")),
        None => Ok(()),
    }
}

fn put(key: &str, value: &str) -> Change {
    Change::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn delete(key: &str) -> Change {
    Change::Delete {
        key: key.as_bytes().to_vec(),
    }
}

fn active(state: &MapState, database: &str) -> Option<String> {
    state
        .active
        .get(&DatabaseName::new(database))
        .map(ToString::to_string)
}

#[test]
fn parses_bare_names_and_json() {
    let bare = parse_value(b"mbx1").unwrap();
    assert_eq!(bare.active, "mbx1".into());
    assert!(bare.copies.is_empty());
    assert_eq!(parse_value(b"  mbx1\n").unwrap().active, "mbx1".into());

    let json = parse_value(br#"{"active": "mbx2", "copies": ["mbx1", "mbx2"]}"#).unwrap();
    assert_eq!(json.active, "mbx2".into());
    assert_eq!(json.copies, vec!["mbx1".into(), "mbx2".into()]);
    let no_copies = parse_value(br#"{"active":"mbx2"}"#).unwrap();
    assert!(no_copies.copies.is_empty());
    // Unknown members are ignored (a newer writer may add some).
    assert_eq!(
        parse_value(br#"{"active":"mbx2","since":"2024-01-01"}"#)
            .unwrap()
            .active,
        "mbx2".into()
    );
}

#[test]
fn rejects_bad_values_with_a_reason() {
    for (value, says) in [
        (&b""[..], "empty"),
        (b"   \n", "empty"),
        (b"mbx 1", "whitespace"),
        (b"mbx/1", "`/`"),
        (b"\xff\xfe", "UTF-8"),
        (b"{\"active\": ", "invalid JSON"),
        (b"{\"copies\": [\"mbx1\"]}", "active"),
        (b"{\"active\": 3}", "invalid JSON"),
        (b"{\"active\": \"\"}", "empty"),
        (
            b"{\"active\": \"mbx3\", \"copies\": [\"mbx1\", \"mbx2\"]}",
            "not one of the copies",
        ),
        (
            b"{\"active\": \"mbx1\", \"copies\": [\"mbx1\", \"\"]}",
            "empty",
        ),
        (b"\"mbx1\"", "bare server name"),
        (b"[\"mbx1\"]", "bare server name"),
    ] {
        let error = parse_value(value).unwrap_err();
        assert!(error.contains(says), "{value:?}: {error}");
    }
    // A huge value is not copied into the message (nor into the log).
    let huge = format!("mbx {}", "x".repeat(100_000));
    let error = parse_value(huge.as_bytes()).unwrap_err();
    assert!(
        error.len() < 200 && error.ends_with("…` contains whitespace, a control character or `/`"),
        "{error}"
    );
}

#[test]
fn encodes_what_it_parses() {
    for text in ["mbx1", r#"{"active":"mbx2","copies":["mbx1","mbx2"]}"#] {
        let value = parse_value(text.as_bytes()).unwrap();
        assert_eq!(encode_value(&value), text);
        assert_eq!(parse_value(encode_value(&value).as_bytes()).unwrap(), value);
    }
}

#[test]
fn the_active_managers_bookkeeping_round_trips_and_old_values_stay_readable() {
    let value = parse_value(
        br#"{"active":"mbx2","copies":["mbx1","mbx2"],"epoch":4,"hold":true,
            "moved":{"by":"failover","reason":"mbx1 down","at":1764750000},"future":1}"#,
    )
    .unwrap();
    assert_eq!(value.epoch, 4);
    assert!(value.hold);
    assert_eq!(value.moved.as_ref().unwrap().by, "failover");
    assert_eq!(parse_value(encode_value(&value).as_bytes()).unwrap(), value);
    // A bare name is epoch 0, no hold, no move; and is written back bare.
    let bare = parse_value(b"mbx1\n").unwrap();
    assert_eq!(
        (bare.epoch, bare.hold, bare.moved.clone()),
        (0, false, None)
    );
    assert_eq!(encode_value(&bare), "mbx1");
    // A move makes the next epoch and keeps the hold.
    let moved = value.moved_to(
        "mbx1".into(),
        crate::record::MoveStamp {
            by: "switchover".into(),
            reason: String::new(),
            at: 1,
        },
    );
    assert_eq!(
        (moved.active.as_str(), moved.epoch, moved.hold),
        ("mbx1", 5, true)
    );
}

#[test]
fn a_move_under_way_round_trips_and_a_flip_ends_it() {
    let marked = parse_value(
        br#"{"active":"sm1","epoch":7,"moving":{"to":"sm2","since":1764750000,"by":"rebalance","reason":"operator's rebalance"}}"#,
    )
    .unwrap();
    let moving = marked.moving.clone().unwrap();
    assert_eq!((moving.to.as_str(), moving.since), ("sm2", 1_764_750_000));
    assert_eq!(
        parse_value(encode_value(&marked).as_bytes()).unwrap(),
        marked
    );
    // `by` and `reason` are optional; a bad target is refused like any server name.
    assert!(parse_value(br#"{"active":"sm1","moving":{"to":"sm2","since":1}}"#).is_ok());
    let error = parse_value(br#"{"active":"sm1","moving":{"to":"s m2","since":1}}"#).unwrap_err();
    assert!(error.contains("a move goes to"), "{error}");
    // The flip: the next epoch on the target, no longer moving; calling it off keeps the epoch.
    let flipped = marked.moved_to(
        moving.to.clone(),
        crate::record::MoveStamp {
            by: moving.by.clone(),
            reason: moving.reason.clone(),
            at: 2,
        },
    );
    assert_eq!((flipped.active.as_str(), flipped.epoch), ("sm2", 8));
    assert!(flipped.moving.is_none());
    let off = marked.unmarked();
    assert_eq!(
        (off.active.as_str(), off.epoch, off.moving),
        ("sm1", 7, None)
    );
    assert_eq!(marked.unmarked().marked_moving(moving), marked);
}

#[test]
fn the_map_says_which_moves_are_under_way() {
    let mut state = MapState::new(DEFAULT_PREFIX);
    state.apply(
        vec![put(
            "/mailfront/databases/g1",
            r#"{"active":"sm1","epoch":3}"#,
        )],
        &any,
    );
    assert_eq!(state.map().moves_underway().count(), 0);
    // Marked: same server, so only the move changed — still a change the nodes must see.
    let applied = state.apply(
        vec![put(
            "/mailfront/databases/g1",
            r#"{"active":"sm1","epoch":3,"moving":{"to":"sm2","since":1}}"#,
        )],
        &any,
    );
    assert!(applied.changed);
    let underway = state.map().moving(&DatabaseName::new("g1")).cloned();
    assert_eq!(
        underway,
        Some(crate::Underway {
            to: "sm2".into(),
            epoch: 3
        })
    );
    assert_eq!(
        active(&state, "g1").as_deref(),
        Some("sm1"),
        "not moved yet"
    );
    // The same mark again is no change; the flip moves it and ends the move.
    let again = state.apply(
        vec![put(
            "/mailfront/databases/g1",
            r#"{"active":"sm1","epoch":3,"moving":{"to":"sm2","since":1}}"#,
        )],
        &any,
    );
    assert!(!again.changed);
    let flip = state.apply(
        vec![put(
            "/mailfront/databases/g1",
            r#"{"active":"sm2","epoch":4}"#,
        )],
        &any,
    );
    assert!(flip.changed);
    assert_eq!(state.map().moves_underway().count(), 0);
    assert_eq!(active(&state, "g1").as_deref(), Some("sm2"));
    // A delete during a move forgets it too.
    state.apply(
        vec![put(
            "/mailfront/databases/g1",
            r#"{"active":"sm2","epoch":4,"moving":{"to":"sm3","since":1}}"#,
        )],
        &any,
    );
    assert_eq!(state.map().moves_underway().count(), 1);
    state.apply(vec![delete("/mailfront/databases/g1")], &any);
    assert_eq!(state.map().moves_underway().count(), 0);
}

#[test]
fn database_names_come_from_keys() {
    let prefix = DEFAULT_PREFIX;
    assert_eq!(
        database_from_key(prefix, b"/mailfront/databases/DB01"),
        Ok("DB01".into())
    );
    assert!(database_from_key(prefix, b"/mailfront/databases/").is_err());
    assert!(database_from_key(prefix, b"/mailfront/databases/a/b").is_err());
    assert!(database_from_key(prefix, b"/mailfront/databases/a b").is_err());
    assert!(database_from_key(prefix, b"/other/DB01").is_err());
    assert!(database_from_key(prefix, b"/mailfront/databases/\xff").is_err());
}

#[test]
fn changes_apply_per_database_and_bad_ones_keep_the_last_value() {
    let mut state = MapState::new(DEFAULT_PREFIX);
    let applied = state.apply(
        vec![
            put("/mailfront/databases/DB01", "mbx1"),
            put("/mailfront/databases/DB02", r#"{"active":"mbx2"}"#),
            put("/mailfront/databases/DB03", "{broken"),
            put("/mailfront/databases/DB04", "web9"),
            put("/mailfront/databases/x/y", "mbx1"),
        ],
        &only_mbx,
    );
    assert!(applied.changed);
    assert_eq!(applied.rejected.len(), 3, "{:?}", applied.rejected);
    assert_eq!(active(&state, "DB01").as_deref(), Some("mbx1"));
    assert_eq!(active(&state, "DB02").as_deref(), Some("mbx2"));
    assert_eq!(active(&state, "DB03"), None, "never valid: absent");
    assert_eq!(active(&state, "DB04"), None, "never accepted: absent");

    // An invalid value and a rejected one keep the last good value; others still move.
    let applied = state.apply(
        vec![
            put("/mailfront/databases/DB01", "mbx 9"),
            put("/mailfront/databases/DB02", "web1"),
            put("/mailfront/databases/DB03", "mbx3"),
        ],
        &only_mbx,
    );
    assert!(applied.changed);
    assert_eq!(applied.rejected.len(), 2);
    assert_eq!(active(&state, "DB01").as_deref(), Some("mbx1"));
    assert_eq!(active(&state, "DB02").as_deref(), Some("mbx2"));
    assert_eq!(active(&state, "DB03").as_deref(), Some("mbx3"));

    // Rewriting the same server is not a change; a delete is.
    let applied = state.apply(vec![put("/mailfront/databases/DB01", "mbx1")], &any);
    assert!(!applied.changed);
    let applied = state.apply(
        vec![
            delete("/mailfront/databases/DB01"),
            delete("/mailfront/databases/nothing"),
        ],
        &any,
    );
    assert!(applied.changed);
    assert_eq!(active(&state, "DB01"), None);
    let applied = state.apply(vec![delete("/mailfront/databases/DB01")], &any);
    assert!(!applied.changed);
}

#[test]
fn a_listing_replaces_the_map() {
    let mut state = MapState::new(DEFAULT_PREFIX);
    state.apply(
        vec![
            put("/mailfront/databases/DB01", "mbx1"),
            put("/mailfront/databases/DB02", "mbx2"),
        ],
        &any,
    );
    let kvs = vec![
        (b"/mailfront/databases/DB02".to_vec(), b"mbx1".to_vec()),
        (
            b"/mailfront/databases/DB03".to_vec(),
            b"garbage value".to_vec(),
        ),
    ];
    let applied = state.replace(kvs, 42, &any);
    assert!(applied.changed);
    assert_eq!(state.revision, 42);
    assert_eq!(active(&state, "DB01"), None, "no longer listed");
    assert_eq!(active(&state, "DB02").as_deref(), Some("mbx1"));
    assert_eq!(active(&state, "DB03"), None);
    assert_eq!(applied.rejected.len(), 1);
}

#[test]
fn config_defaults_and_validation() {
    #[derive(Deserialize)]
    #[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
    enum Location {
        Etcd(EtcdConfig),
    }
    #[derive(Deserialize)]
    struct Wrapper {
        location: Location,
    }
    let parsed: Wrapper =
        toml::from_str("[location]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n")
            .unwrap();
    let Location::Etcd(config) = parsed.location;
    assert_eq!(config, EtcdConfig::new(["http://127.0.0.1:2379"]));
    assert_eq!(config.prefix, "/mailfront/databases/");
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.validate(), Ok(()));

    let parsed: Wrapper = toml::from_str(
        "[location]\nbackend = \"etcd\"\nendpoints = [\"https://etcd1:2379\"]\ntimeout = \"250ms\"\nprefix = \"/x/\"\nca_file = \"ca.pem\"\nusername = \"u\"\npassword_file = \"p\"\n",
    )
    .unwrap();
    let Location::Etcd(config) = parsed.location;
    assert_eq!(config.timeout, Duration::from_millis(250));
    assert_eq!(config.validate(), Ok(()));

    assert!(
        toml::from_str::<Wrapper>(
            "[location]\nbackend = \"etcd\"\nendpoints = []\nendpoint = \"x\"\n"
        )
        .is_err()
    );

    let invalid = |edit: &dyn Fn(&mut EtcdConfig)| {
        let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
        edit(&mut config);
        config.validate().unwrap_err()
    };
    assert!(invalid(&|c| c.endpoints.clear()).starts_with("location.endpoints: "));
    assert!(
        invalid(&|c| c.endpoints = vec!["127.0.0.1:2379".into()])
            .starts_with("location.endpoints[0]: ")
    );
    assert!(
        invalid(&|c| c.endpoints.push("http://127.0.0.1".into()))
            .starts_with("location.endpoints[1]: ")
    );
    assert!(
        invalid(&|c| c.endpoints.push("http://:2379".into()))
            .starts_with("location.endpoints[1]: ")
    );
    let leak = invalid(&|c| c.endpoints = vec!["http://u:pw-secret@127.0.0.1:2379".into()]);
    assert!(leak.starts_with("location.endpoints[0]: ") && !leak.contains("pw-secret"));
    assert!(
        invalid(&|c| c.endpoints.push("https://127.0.0.1:2379".into()))
            .starts_with("location.endpoints: ")
    );
    assert!(
        invalid(&|c| c.endpoints = vec!["https://127.0.0.1:2379".into()])
            .starts_with("location.ca_file: ")
    );
    assert!(invalid(&|c| c.ca_file = Some("ca.pem".into())).starts_with("location.ca_file: "));
    assert!(invalid(&|c| c.prefix = "/mailfront/db".into()).starts_with("location.prefix: "));
    assert!(invalid(&|c| c.timeout = Duration::ZERO).starts_with("location.timeout: "));
    assert!(invalid(&|c| c.username = Some("u".into())).starts_with("location.password_file: "));
    assert!(invalid(&|c| c.password_file = Some("p".into())).starts_with("location.username: "));
}

#[test]
fn start_fails_only_on_configuration() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let locator = Arc::new(Locator::new());
    let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
    config.username = Some("u".into());
    config.password_file = Some("/nonexistent/password".into());
    let error = runtime
        .block_on(async { EtcdSource::start(&config, Arc::clone(&locator), Arc::new(any)) })
        .err()
        .unwrap();
    assert!(error.to_string().starts_with("location.password_file: "));
    assert!(matches!(
        EtcdSource::start(
            &EtcdConfig::new(["http://127.0.0.1:2379"]),
            locator,
            Arc::new(any)
        ),
        Err(EtcdError::NoRuntime)
    ));
}

#[test]
fn describes_connection_errors_with_their_cause() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let error = runtime
        .block_on(load(&EtcdConfig::new(["http://127.0.0.1:1"]), &any))
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("etcd range read failed: Unavailable"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
