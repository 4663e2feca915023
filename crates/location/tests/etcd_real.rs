//! The etcd source against a real etcd 3.4 (the Debian `etcd-server` and `etcd-client`
//! packages, which `scripts/test` installs). Each test starts its own etcd on free loopback ports
//! with its data in a temporary folder, and kills it when done.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use mailfront_location::etcd::{EtcdError, EtcdSource, load, put_active};
use mailfront_location::file::Validator;
use mailfront_location::{LocateError, LocationMap, Locator};
use mailfront_model::DatabaseName;

const PREFIX: &str = "/mailfront/databases/";

use mailfront_location::testing::{Etcd, PATIENCE};

async fn client(etcd: &Etcd) -> Client {
    Client::connect([etcd.endpoint()], None).await.unwrap()
}

/// Runs etcdctl and insists that it worked.
fn etcdctl_ok(etcd: &Etcd, args: &[&str]) {
    let out = etcd.etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A put that retries while the server is still coming up (right after a restart).
async fn put_retrying(etcd: &Etcd, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = async {
            let mut client = Client::connect([etcd.endpoint()], None).await?;
            client.put(key, value, None).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(response)) => return response.header().unwrap().revision(),
            Ok(Err(error)) => assert!(Instant::now() < deadline, "put failed: {error}"),
            Err(_) => assert!(Instant::now() < deadline, "put timed out"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(database: &str) -> String {
    format!("{PREFIX}{database}")
}

fn any() -> Arc<Validator> {
    Arc::new(|_: &LocationMap| Ok(()))
}

fn located(locator: &Locator, database: &str) -> Result<String, LocateError> {
    locator
        .locate(&DatabaseName::new(database))
        .map(|server| server.to_string())
}

/// Waits (on the locator's change stream, no polling) until `check` holds for the latest map.
async fn until_map(locator: &Locator, what: &str, check: impl Fn(&LocationMap) -> bool) {
    let mut changes = locator.subscribe();
    let seen = tokio::time::timeout(
        PATIENCE,
        changes.wait_for(|map| map.as_deref().is_some_and(&check)),
    )
    .await;
    assert!(
        matches!(seen, Ok(Ok(_))),
        "{what}: not seen within {PATIENCE:?}; map: {:?}",
        locator.snapshot()
    );
}

fn active_is(database: &'static str, server: &'static str) -> impl Fn(&LocationMap) -> bool {
    move |map| map.active(&DatabaseName::new(database)).map(|s| s.as_str()) == Some(server)
}

/// Polls a condition that has no change stream (staleness), with a deadline.
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_the_prefix_then_follows_puts_and_deletes() {
    let etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx1", None).await.unwrap();
    kv.put(
        key("DB02"),
        r#"{"active": "mbx2", "copies": ["mbx1", "mbx2"]}"#,
        None,
    )
    .await
    .unwrap();
    kv.put("/mailfront/other/DB09", "mbx1", None).await.unwrap();

    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    assert!(source.is_loaded());
    assert!(!locator.is_stale());
    assert!(locator.last_update().is_some());
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
    assert_eq!(located(&locator, "DB02"), Ok("mbx2".into()));
    assert_eq!(
        located(&locator, "DB09"),
        Err(LocateError::UnknownDatabase),
        "keys outside the prefix are not databases"
    );

    // A switchover: one put.
    let mut changes = locator.subscribe();
    changes.borrow_and_update();
    kv.put(key("DB01"), "mbx2", None).await.unwrap();
    tokio::time::timeout(PATIENCE, changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(located(&locator, "DB01"), Ok("mbx2".into()));

    // A delete takes the database out of the map.
    kv.delete(key("DB02"), None).await.unwrap();
    until_map(&locator, "DB02 deleted", |map| {
        map.active(&"DB02".into()).is_none()
    })
    .await;
    assert_eq!(located(&locator, "DB02"), Err(LocateError::UnknownDatabase));

    // put_active: a new key is a bare name; an existing JSON value keeps its copies.
    put_active(&etcd.config(), "DB03", "mbx1").await.unwrap();
    until_map(&locator, "DB03 added", active_is("DB03", "mbx1")).await;
    let value = kv.get(key("DB03"), None).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"mbx1");

    kv.put(
        key("DB04"),
        r#"{"active":"mbx1","copies":["mbx1","mbx2"]}"#,
        None,
    )
    .await
    .unwrap();
    put_active(&etcd.config(), "DB04", "mbx2").await.unwrap();
    until_map(&locator, "DB04 moved", active_is("DB04", "mbx2")).await;
    let value = kv.get(key("DB04"), None).await.unwrap();
    assert_eq!(
        value.kvs()[0].value_str().unwrap(),
        r#"{"active":"mbx2","copies":["mbx1","mbx2"]}"#
    );
    let refused = put_active(&etcd.config(), "DB04", "mbx3")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EtcdError::Invalid(ref m) if m.contains("holds no copy")),
        "{refused}"
    );
    assert!(matches!(
        put_active(&etcd.config(), "DB 5", "mbx1").await,
        Err(EtcdError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_rejected_values_keep_the_database_on_its_last_value() {
    let etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx1", None).await.unwrap();
    kv.put(key("DB02"), "mbx1", None).await.unwrap();
    kv.put(key("DB03"), "{not json", None).await.unwrap();
    kv.put(key("DB05"), "mbx9", None).await.unwrap();

    // The configuration defines mbx1 and mbx2 only.
    let looked_at = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&looked_at);
    let validate: Arc<Validator> = Arc::new(move |map: &LocationMap| {
        counter.fetch_add(1, Ordering::SeqCst);
        match map
            .iter()
            .find(|(_, s)| !["mbx1", "mbx2"].contains(&s.as_str()))
        {
            Some((d, s)) => Err(format!("active.{d}: unknown server `{s}`")),
            None => Ok(()),
        }
    });

    // The one-shot load (for `mailfront check`) reports what it left out.
    let snapshot = load(&etcd.config(), &*validate).await.unwrap();
    assert_eq!(snapshot.map.iter().count(), 2);
    assert_eq!(snapshot.rejected.len(), 2, "{:?}", snapshot.rejected);
    assert!(snapshot.rejected.iter().any(|r| r.contains("DB03")));
    assert!(
        snapshot
            .rejected
            .iter()
            .any(|r| r.contains("DB05") && r.contains("unknown server `mbx9`"))
    );

    let locator = Arc::new(Locator::new());
    let source =
        EtcdSource::start(&etcd.config(), Arc::clone(&locator), Arc::clone(&validate)).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
    assert_eq!(
        located(&locator, "DB03"),
        Err(LocateError::UnknownDatabase),
        "an invalid value with no earlier value: absent"
    );
    assert_eq!(
        located(&locator, "DB05"),
        Err(LocateError::UnknownDatabase),
        "a rejected value with no earlier value: absent"
    );

    // Garbage, then an undefined server, for DB01; then a good change to DB02 as a marker:
    // events arrive in order, so once the marker is in, DB01's changes were looked at.
    kv.put(key("DB01"), "{\"active\": ", None).await.unwrap();
    let before = looked_at.load(Ordering::SeqCst);
    kv.put(key("DB01"), "mbx9", None).await.unwrap();
    kv.put(key("DB02"), "mbx2", None).await.unwrap();
    until_map(&locator, "marker DB02", active_is("DB02", "mbx2")).await;
    assert!(
        looked_at.load(Ordering::SeqCst) >= before + 2,
        "the validator saw mbx9 and the marker"
    );
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));

    // The next good value is applied.
    kv.put(key("DB01"), "mbx2", None).await.unwrap();
    until_map(&locator, "DB01 to mbx2", active_is("DB01", "mbx2")).await;
    kv.put(key("DB03"), "mbx1", None).await.unwrap();
    until_map(&locator, "DB03 fixed", active_is("DB03", "mbx1")).await;
    assert!(!locator.is_stale());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx1", None).await.unwrap();
    kv.put(key("DB02"), "mbx2", None).await.unwrap();
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    // A change seen proves the watch is established: the kill must break a live watch.
    kv.put(key("DB03"), "mbx1", None).await.unwrap();
    until_map(&locator, "watch established", active_is("DB03", "mbx1")).await;
    let lists = source.lists();

    etcd.kill();
    let noticed = until("stale after etcd died", Duration::from_secs(5), || {
        locator.is_stale()
    })
    .await;
    eprintln!("etcd killed: locator stale after {noticed:?}");
    let staleness = locator.staleness().unwrap();
    assert!(staleness.reason.contains("etcd"), "{}", staleness.reason);
    // Lookups keep answering from the last map.
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
    assert_eq!(located(&locator, "DB02"), Ok("mbx2".into()));

    // Back on the same ports and data; a change written at once must arrive (through the
    // re-read or the new watch, whichever comes first).
    etcd.spawn();
    let restarted = Instant::now();
    put_retrying(&etcd, &key("DB01"), "mbx2").await;
    until_map(&locator, "change after restart", active_is("DB01", "mbx2")).await;
    until("fresh after restart", PATIENCE, || !locator.is_stale()).await;
    eprintln!(
        "etcd restarted: change seen and fresh after {:?}",
        restarted.elapsed()
    );
    // (The count moves just after the publish.)
    until("the prefix read again", PATIENCE, || source.lists() > lists).await;
    assert_eq!(located(&locator, "DB02"), Ok("mbx2".into()));

    // And the new watch follows later changes.
    kv = client(&etcd).await;
    kv.put(key("DB02"), "mbx1", None).await.unwrap();
    until_map(
        &locator,
        "change on the new watch",
        active_is("DB02", "mbx1"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_reads_the_prefix_again() {
    let etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    let mut last = 0;
    for server in ["mbx1", "mbx2", "mbx1", "mbx2", "mbx3"] {
        last = kv
            .put(key("DB01"), server, None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    etcdctl_ok(&etcd, &["compaction", &last.to_string()]);

    // The first watch asks for history from revision 1, which is gone: etcd cancels it with
    // its compact revision, and the source must read the whole prefix again and re-watch.
    let locator = Arc::new(Locator::new());
    let source =
        EtcdSource::start_watching_from(&etcd.config(), Arc::clone(&locator), any(), 1).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    assert_eq!(located(&locator, "DB01"), Ok("mbx3".into()));
    until("second read after compaction", PATIENCE, || {
        source.lists() >= 2
    })
    .await;
    until("fresh after re-read", PATIENCE, || !locator.is_stale()).await;
    assert_eq!(
        located(&locator, "DB01"),
        Ok("mbx3".into()),
        "old history never replayed"
    );

    // The replacement watch works.
    kv.put(key("DB01"), "mbx4", None).await.unwrap();
    until_map(&locator, "change after re-watch", active_is("DB01", "mbx4")).await;
    assert_eq!(source.lists(), 2, "no further re-reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_etcd_and_loads_once_it_is_up() {
    let mut etcd = Etcd::new();
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    assert_eq!(
        located(&locator, "DB01"),
        Err(LocateError::Unavailable),
        "no map yet"
    );
    let error = source
        .wait_loaded(Duration::from_millis(500))
        .await
        .unwrap_err();
    eprintln!("while etcd is down: {error}");
    assert!(
        matches!(
            error,
            EtcdError::NotLoaded {
                last_error: Some(_),
                ..
            }
        ),
        "{error}"
    );
    assert!(locator.is_stale());
    assert!(!source.is_loaded());

    etcd.spawn();
    let up = Instant::now();
    put_retrying(&etcd, &key("DB01"), "mbx1").await;
    until_map(
        &locator,
        "map after etcd came up",
        active_is("DB01", "mbx1"),
    )
    .await;
    eprintln!("etcd up: map loaded after {:?}", up.elapsed());
    source.wait_loaded(PATIENCE).await.unwrap();
    assert!(!locator.is_stale());
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
}

/// The time from a put (client side) to the locator publishing it: printed, and loosely bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_to_publish_latency() {
    let etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx0", None).await.unwrap();
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    let mut changes = locator.subscribe();
    let mut samples = Vec::new();
    for i in 1..=50 {
        changes.borrow_and_update();
        let server = format!("mbx{i}");
        let started = Instant::now();
        kv.put(key("DB01"), server.as_str(), None).await.unwrap();
        let put_done = started.elapsed();
        tokio::time::timeout(
            PATIENCE,
            changes.wait_for(|map| {
                map.as_deref()
                    .and_then(|m| m.active(&"DB01".into()))
                    .is_some_and(|s| s.as_str() == server)
            }),
        )
        .await
        .unwrap()
        .unwrap();
        samples.push((started.elapsed(), put_done));
    }
    let mut total: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut put_only: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    total.sort();
    put_only.sort();
    eprintln!(
        "put → publish over {} runs: median {:?}, p90 {:?}, max {:?} (the put call alone: median {:?})",
        total.len(),
        total[total.len() / 2],
        total[total.len() * 9 / 10],
        total[total.len() - 1],
        put_only[put_only.len() / 2],
    );
    assert!(total[total.len() / 2] < Duration::from_secs(1));
    // The source saw every put, in order: the range read found the key once.
    let listing = kv
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(listing.kvs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_a_password_file() {
    let etcd = Etcd::start();
    etcdctl_ok(&etcd, &["user", "add", "root:root-secret-1"]);
    etcdctl_ok(&etcd, &["auth", "enable"]);
    etcdctl_ok(
        &etcd,
        &["--user", "root:root-secret-1", "put", &key("DB01"), "mbx2"],
    );

    let password = etcd.dir.path().join("etcd-password");
    std::fs::write(&password, "root-secret-1\n").unwrap();
    let mut config = etcd.config();
    config.username = Some("root".into());
    config.password_file = Some(password.clone());
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&config, Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    assert_eq!(located(&locator, "DB01"), Ok("mbx2".into()));
    put_active(&config, "DB01", "mbx1").await.unwrap();
    until_map(&locator, "authenticated watch", active_is("DB01", "mbx1")).await;

    // No password, or a wrong one: refused, and the error does not echo the password.
    let anonymous = load(&etcd.config(), &*any()).await.unwrap_err();
    eprintln!("anonymous: {anonymous}");
    std::fs::write(&password, "wrong-secret-2\n").unwrap();
    let refused = load(&config, &*any()).await.unwrap_err();
    eprintln!("wrong password: {refused}");
    assert!(
        refused.to_string().contains("authentication failed"),
        "{refused}"
    );
    let wrong = EtcdSource::start(&config, Arc::new(Locator::new()), any()).unwrap();
    let error = wrong.wait_loaded(Duration::from_secs(1)).await.unwrap_err();
    for text in [
        refused.to_string(),
        error.to_string(),
        format!("{config:?}"),
    ] {
        assert!(!text.contains("secret"), "a password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talks_tls_with_the_configured_ca() {
    let etcd = Etcd::start_tls();
    etcdctl_ok(&etcd, &["put", &key("DB01"), "mbx1"]);
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
    put_active(&etcd.config(), "DB01", "mbx2").await.unwrap();
    until_map(&locator, "change over TLS", active_is("DB01", "mbx2")).await;

    // A CA that did not sign the server's certificate: refused.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other",
        ])
        .current_dir(other.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut config = etcd.config();
    config.ca_file = Some(other.path().join("ca.pem"));
    let error = load(&config, &*any()).await.unwrap_err();
    eprintln!("unknown CA: {error}");
}

/// A hung server (its connections open, nothing answered) is noticed by keep-alive pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_a_hung_etcd() {
    let etcd = Etcd::start();
    let mut kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx1", None).await.unwrap();
    let locator = Arc::new(Locator::new());
    let source = EtcdSource::start(&etcd.config(), Arc::clone(&locator), any()).unwrap();
    source.wait_loaded(PATIENCE).await.unwrap();
    kv.put(key("DB02"), "mbx1", None).await.unwrap();
    until_map(&locator, "watch established", active_is("DB02", "mbx1")).await;

    etcd.signal("STOP");
    // Pings every 10 s (etcd's floor), answer due within `timeout` (1 s here).
    let noticed = until("stale while etcd hangs", PATIENCE, || locator.is_stale()).await;
    eprintln!("etcd stopped: locator stale after {noticed:?}");
    assert_eq!(located(&locator, "DB01"), Ok("mbx1".into()));
    etcd.signal("CONT");
    until("fresh once etcd answers", PATIENCE, || !locator.is_stale()).await;
    kv = client(&etcd).await;
    kv.put(key("DB01"), "mbx2", None).await.unwrap();
    until_map(&locator, "change after the hang", active_is("DB01", "mbx2")).await;
}
