//! The Active Manager's records against a real etcd: one read at one revision, compare-and-swap
//! writes where exactly one of two racing writers wins, and writes fenced by a leader key that
//! fail once the leader's lease is gone.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use etcd_client::Client;
use mailfront_location::etcd::records::{EtcdRecords, Fence, WriteError};
use mailfront_location::record::{DatabaseRecord, MoveStamp, ServerRecord};
use mailfront_location::testing::Etcd;
use mailfront_model::{DatabaseName, ServerName};

const SERVERS: &str = "/mailfront/servers/";

fn stamp(by: &str) -> MoveStamp {
    MoveStamp {
        by: by.to_owned(),
        reason: "test".to_owned(),
        at: 1,
    }
}

#[tokio::test]
async fn writes_compare_the_revision_they_read_and_leaders_are_fenced() {
    let etcd = Etcd::start();
    let records = EtcdRecords::new(&etcd.config(), SERVERS).unwrap();
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    client
        .put("/mailfront/databases/DB01", "mbx1", None)
        .await
        .unwrap();
    client
        .put("/mailfront/databases/DB02", "not a/valid value", None)
        .await
        .unwrap();

    // One read: the bare value as a record, the unreadable one left out, no server records.
    let read = records.read().await.unwrap();
    let db01 = DatabaseName::new("DB01");
    let seen = read.databases[&db01].clone();
    assert_eq!(
        seen.value,
        DatabaseRecord::active_on(ServerName::new("mbx1"))
    );
    assert!(seen.revision > 0);
    assert_eq!(read.databases.len(), 1);
    assert!(read.servers.is_empty());

    // Two writers read the same revision: the first wins, the second hears of the conflict.
    let to_mbx2 = seen
        .value
        .moved_to(ServerName::new("mbx2"), stamp("switchover"));
    let to_mbx3 = seen
        .value
        .moved_to(ServerName::new("mbx3"), stamp("failover"));
    records
        .write_database(&db01, seen.revision, &to_mbx2, None)
        .await
        .unwrap();
    let lost = records
        .write_database(&db01, seen.revision, &to_mbx3, None)
        .await
        .unwrap_err();
    assert!(matches!(lost, WriteError::Conflict), "{lost}");
    let now = records.read().await.unwrap().databases[&db01].clone();
    assert_eq!((now.value.active.as_str(), now.value.epoch), ("mbx2", 1));

    // A server record that did not exist: expected revision 0; then again with its revision.
    let mbx1 = ServerName::new("mbx1");
    let on = ServerRecord {
        maintenance: true,
        reason: "patching".to_owned(),
    };
    records.write_server(&mbx1, 0, &on).await.unwrap();
    assert!(matches!(
        records.write_server(&mbx1, 0, &on).await,
        Err(WriteError::Conflict)
    ));
    let read = records.read().await.unwrap();
    assert!(read.in_maintenance(&mbx1));

    // A leader: a lease, a campaign, a fenced write that works while the lease lives...
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let campaign = client
        .campaign("/mailfront/leader", "cas1", lease)
        .await
        .unwrap();
    let leader = campaign.leader().unwrap();
    let fence = Fence {
        key: leader.key().to_vec(),
        revision: leader.rev(),
    };
    let current = records.read().await.unwrap().databases[&db01].clone();
    let back = current
        .value
        .moved_to(ServerName::new("mbx1"), stamp("failover"));
    records
        .write_database(&db01, current.revision, &back, Some(&fence))
        .await
        .unwrap();
    // ...and is refused as fenced once the lease is gone, even with the right revision.
    client.lease_revoke(lease).await.unwrap();
    let current = records.read().await.unwrap().databases[&db01].clone();
    let again = current
        .value
        .moved_to(ServerName::new("mbx2"), stamp("failover"));
    let fenced = records
        .write_database(&db01, current.revision, &again, Some(&fence))
        .await
        .unwrap_err();
    assert!(matches!(fenced, WriteError::Fenced), "{fenced}");
    assert_eq!(
        records.read().await.unwrap().databases[&db01]
            .value
            .active
            .as_str(),
        "mbx1"
    );
}

#[test]
fn the_servers_prefix_must_not_overlap_the_databases() {
    let config = mailfront_location::etcd::EtcdConfig::new(["http://127.0.0.1:1"]);
    for bad in [
        "/mailfront/servers",
        "/mailfront/databases/servers/",
        "/mailfront/",
    ] {
        assert!(EtcdRecords::new(&config, bad).is_err(), "{bad}");
    }
    assert!(EtcdRecords::new(&config, SERVERS).is_ok());
}
