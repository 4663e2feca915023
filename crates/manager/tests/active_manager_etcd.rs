//! Two Active Managers over one real etcd: one leader writes a failover, the other does not; an
//! operator's move racing the leader's wins or loses as a whole (no lost update); a deposed
//! leader's write is fenced; a leader that loses etcd stops acting before its lease expires.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailfront_directory::file::{FileDirectory, parse};
use mailfront_location::Locator;
use mailfront_location::etcd::records::EtcdRecords;
use mailfront_location::testing::Etcd;
use mailfront_manager::active::{ActiveManager, ManagerSettings};
use mailfront_manager::leader::{Election, elect};
use mailfront_manager::ops::CommandError;
use mailfront_manager::plan::{Move, MoveKind, Policy};
use mailfront_manager::store::{Store, WriteError};
use mailfront_metrics::Metrics;
use mailfront_model::{DatabaseName, Protocol, SaslMechanism, ServerName, SiteName, Version};
use mailfront_resolve::{Resolver, ResolverSettings};
use mailfront_routing::{Endpoints, LoginMethod, Server, Site, Topology};

const TTL: Duration = Duration::from_secs(2);
const PATIENCE: Duration = Duration::from_secs(20);

fn topology() -> Topology {
    let server = |name: &str| Server {
        name: ServerName::new(name),
        site: SiteName::new("lab"),
        version: Version::new(15, 1, 0),
        endpoints: Endpoints::default(),
        login: LoginMethod::PassThrough {
            mechanism: SaslMechanism::Plain,
        },
        delivery_group: "default".to_owned(),
        weight: 1,
    };
    Topology::new(
        mailfront_routing::Node {
            name: "cas".to_owned(),
            site: SiteName::new("lab"),
            version: Version::new(15, 1, 0),
        },
        [Site {
            name: SiteName::new("lab"),
            external_urls: BTreeMap::new(),
            costs: BTreeMap::new(),
            imap_referral: None,
        }],
        ["mbx1", "mbx2", "mbx3"].map(server),
    )
    .unwrap()
}

struct Member {
    manager: Arc<ActiveManager>,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    election: tokio::task::JoinHandle<()>,
}

fn member(etcd: &Etcd, name: &str) -> Member {
    let records = Arc::new(EtcdRecords::new(&etcd.config(), "/mailfront/servers/").unwrap());
    let metrics = Arc::new(Metrics::new());
    let directory = Arc::new(FileDirectory::from_users(parse("").unwrap()));
    let resolver = Arc::new(Resolver::new(
        directory,
        Arc::new(Locator::new()),
        topology(),
        ResolverSettings {
            auth_failure_delay: Duration::ZERO,
            directory_timeout: Duration::from_secs(1),
            throttle: Default::default(),
        },
        Arc::clone(&metrics),
    ));
    let (leadership, election) = elect(
        Arc::clone(&records),
        Election {
            key: "/mailfront/leader".to_owned(),
            node: name.to_owned(),
            ttl: TTL,
        },
    );
    let copies = ["mbx1", "mbx2", "mbx3"].map(ServerName::new).to_vec();
    let settings = ManagerSettings {
        node: name.to_owned(),
        policy: Policy {
            hold_down: Duration::from_secs(600),
        },
        interval: Duration::from_millis(200),
        copies: BTreeMap::from([(DatabaseName::new("DB01"), copies)]),
        failover_on: [Protocol::Imap].into(),
        placement: None,
    };
    let manager = Arc::new(ActiveManager::new(
        Store::Etcd(records),
        leadership,
        Arc::clone(&resolver),
        settings,
        Arc::clone(&metrics),
    ));
    Member {
        manager,
        resolver,
        metrics,
        election,
    }
}

/// Polls `check` until it holds (or fails the test after `limit`); returns how long it took.
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn moves(metrics: &Metrics, kind: &str) -> u64 {
    let text = metrics.encode();
    text.lines()
        .find(|l| l.starts_with("mailfront_database_moves_total{") && l.contains(kind))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn db01(etcd: &Etcd) -> (String, u64) {
    let records = EtcdRecords::new(&etcd.config(), "/mailfront/servers/").unwrap();
    let record = records.read().await.unwrap().databases[&DatabaseName::new("DB01")]
        .value
        .clone();
    (record.active.to_string(), record.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fails_over_and_races_and_fences_are_decided_in_etcd() {
    let mut etcd = Etcd::start();
    etcd.etcdctl(&["put", "/mailfront/databases/DB01", "mbx1"]);
    let (a, b) = (member(&etcd, "cas-a"), member(&etcd, "cas-b"));
    let nodes: HashMap<&str, &Member> = HashMap::from([("a", &a), ("b", &b)]);
    until("a leader", PATIENCE, || {
        nodes.values().filter(|n| n.manager.is_leader()).count() == 1
    })
    .await;
    let (leader, follower) = if a.manager.is_leader() {
        (&a, &b)
    } else {
        (&b, &a)
    };

    // mbx1 down in both nodes' probes: both run a round, only the leader writes.
    for n in [&a, &b] {
        n.resolver
            .health()
            .set_endpoint(&ServerName::new("mbx1"), Protocol::Imap, false);
    }
    follower.manager.round().await;
    assert_eq!(
        db01(&etcd).await,
        ("mbx1".to_owned(), 0),
        "a follower moved"
    );
    leader.manager.round().await;
    follower.manager.round().await;
    assert_eq!(db01(&etcd).await, ("mbx2".to_owned(), 1));
    assert_eq!(moves(&leader.metrics, "failover"), 1);
    assert_eq!(moves(&follower.metrics, "failover"), 0);

    // A race: the leader read the store; an operator moves DB01 meanwhile; the leader's write
    // from what it read loses, as a whole.
    let stale = {
        let records = EtcdRecords::new(&etcd.config(), "/mailfront/servers/").unwrap();
        records.read().await.unwrap()
    };
    let operator = follower
        .manager
        .move_database(&DatabaseName::new("DB01"), &ServerName::new("mbx3"), false)
        .await
        .unwrap();
    assert_eq!((operator.to.as_str(), operator.epoch), ("mbx3", 2));
    let term = leader.manager.leadership().acting().unwrap();
    let late = Move {
        database: DatabaseName::new("DB01"),
        from: ServerName::new("mbx2"),
        to: ServerName::new("mbx1"),
        kind: MoveKind::Failover,
    };
    let lost = leader
        .manager
        .apply(&stale, &late, "test", Some(&term))
        .await
        .unwrap_err();
    assert!(matches!(lost, WriteError::Conflict), "{lost}");
    assert_eq!(db01(&etcd).await, ("mbx3".to_owned(), 2), "no lost update");
    // And the other way round: the operator's command from a stale read reports the conflict.
    let again = follower
        .manager
        .move_database(&DatabaseName::new("DB01"), &ServerName::new("mbx2"), false)
        .await
        .unwrap();
    assert_eq!(again.epoch, 3);

    // The leader dies (its election stops: no more keep-alives): the other node leads within
    // the TTL and a little, and a write with the old fence is refused by etcd.
    leader.election.abort();
    let took = until("a new leader", TTL * 3, || follower.manager.is_leader()).await;
    assert!(took < TTL + Duration::from_secs(2), "took {took:?}");
    let fresh = {
        let records = EtcdRecords::new(&etcd.config(), "/mailfront/servers/").unwrap();
        records.read().await.unwrap()
    };
    let deposed = leader
        .manager
        .apply(&fresh, &late, "test", Some(&term))
        .await
        .unwrap_err();
    assert!(matches!(deposed, WriteError::Fenced), "{deposed}");

    // The new leader loses etcd: it stops acting before its lease could have expired.
    etcd.kill();
    let stopped = until("the leader stops acting", TTL * 2, || {
        !follower.manager.is_leader()
    })
    .await;
    assert!(stopped < TTL, "acted {stopped:?} after losing etcd");
    // Commands say the store is unavailable; nothing pretends to work.
    let refused = follower
        .manager
        .set_hold(&DatabaseName::new("DB01"), true)
        .await
        .unwrap_err();
    assert!(matches!(refused, CommandError::Unavailable(_)), "{refused}");
}
