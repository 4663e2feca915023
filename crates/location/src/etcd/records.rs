//! The Active Manager's records in etcd ([`crate::record`]): read all at once, written one key at
//! a time with a compare-and-swap, and — for automatic moves — fenced by the leader's key.
//!
//! Layout: the database keys are the location map's own (`<prefix><DATABASE>`, their JSON value
//! carrying `epoch`, `hold`, `moved` and `moving`); a server's record is
//! `<servers_prefix><SERVER>`, JSON `{"maintenance": true, "reason": "…"}`. With safe moves
//! ([`EtcdRecords::with_presence`]): each node's presence is `<nodes_prefix><NODE>` and its
//! acknowledgement of a move `<acks_prefix><DATABASE>/<NODE>` = the epoch, both bound to the
//! node's own lease, so that they vanish when the node does.
//!
//! Every write compares the key's modification revision with the one the writer read (0: the
//! key must not exist yet), so an operator's concurrent write is never silently overwritten:
//! exactly one of two racing writers wins, and the other hears [`WriteError::Conflict`]. A write
//! made as the array's leader also compares the leader key's creation revision ([`Fence`]): a
//! leader whose lease expired (its key deleted, another node elected) cannot write, even if it
//! has not noticed yet.

use std::collections::BTreeMap;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use mailfront_model::{DatabaseName, ServerName};

use super::client::Prepared;
use super::value::{check_name, encode_value, parse_value};
use super::{EtcdConfig, EtcdError};
use crate::record::{DatabaseRecord, Records, ServerRecord, Stored};

/// Proof of leadership for a write: the leader key of the election and its creation revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader key (`<election>/<lease id>`).
    pub key: Vec<u8>,
    /// Its creation revision.
    pub revision: i64,
}

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The key changed since it was read (another writer won).
    #[error("the record changed since it was read (another writer was first)")]
    Conflict,
    /// This node is no longer the leader.
    #[error("this node is no longer the leader")]
    Fenced,
    /// The store could not be asked.
    #[error("{0}")]
    Store(#[from] EtcdError),
}

/// The records in one etcd cluster.
pub struct EtcdRecords {
    prepared: Prepared,
    servers_prefix: String,
    presence: Option<PresencePrefixes>,
    client: tokio::sync::Mutex<Option<Client>>,
}

/// Where nodes say they are present, and acknowledge moves.
#[derive(Clone, Debug)]
struct PresencePrefixes {
    nodes: String,
    acks: String,
}

impl std::fmt::Debug for EtcdRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRecords")
            .field("servers_prefix", &self.servers_prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdRecords {
    /// Records in the cluster `config` names; server records under `servers_prefix` (which must
    /// end with `/` and not overlap the databases' prefix).
    pub fn new(config: &EtcdConfig, servers_prefix: &str) -> Result<Self, EtcdError> {
        let prepared = Prepared::new(config)?;
        if !servers_prefix.ends_with('/')
            || servers_prefix.starts_with(&prepared.prefix)
            || prepared.prefix.starts_with(servers_prefix)
        {
            return Err(EtcdError::Config(format!(
                "active_manager.servers_prefix: `{servers_prefix}` must end with `/` and not \
                 overlap location.prefix `{}`",
                prepared.prefix
            )));
        }
        Ok(Self {
            prepared,
            servers_prefix: servers_prefix.to_owned(),
            presence: None,
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// The same records with the nodes' presence under `nodes_prefix` and their move
    /// acknowledgements under `acks_prefix` (each ends with `/`; no prefix overlaps another).
    pub fn with_presence(
        mut self,
        nodes_prefix: &str,
        acks_prefix: &str,
    ) -> Result<Self, EtcdError> {
        let prefixes = [
            ("location.prefix", self.prepared.prefix.as_str()),
            (
                "active_manager.servers_prefix",
                self.servers_prefix.as_str(),
            ),
            ("active_manager.nodes_prefix", nodes_prefix),
            ("active_manager.acks_prefix", acks_prefix),
        ];
        for (i, (key, prefix)) in prefixes.iter().enumerate().skip(2) {
            if !prefix.starts_with('/') || !prefix.ends_with('/') {
                return Err(EtcdError::Config(format!(
                    "{key}: `{prefix}` must start and end with `/`"
                )));
            }
            let overlap = prefixes
                .iter()
                .take(i)
                .find(|(_, other)| other.starts_with(prefix) || prefix.starts_with(other));
            if let Some((other, value)) = overlap {
                return Err(EtcdError::Config(format!(
                    "{key}: `{prefix}` overlaps {other} `{value}`"
                )));
            }
        }
        self.presence = Some(PresencePrefixes {
            nodes: nodes_prefix.to_owned(),
            acks: acks_prefix.to_owned(),
        });
        Ok(self)
    }

    /// Says that `node` is present, under a key bound to `lease`; returns the store's revision
    /// after the write.
    pub async fn put_presence(&self, node: &str, lease: i64) -> Result<i64, EtcdError> {
        let Some(presence) = &self.presence else {
            return Err(EtcdError::Config("presence is not configured".to_owned()));
        };
        check_name("node name", node).map_err(EtcdError::Invalid)?;
        let key = format!("{}{node}", presence.nodes);
        let options = Some(PutOptions::new().with_lease(lease));
        let response = self
            .call("put", |mut client| async move {
                client.put(key.into_bytes(), Vec::new(), options).await
            })
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// Records that `node` holds no session of `database` at `epoch` any more, under a key bound
    /// to `lease` (its presence's).
    pub async fn put_ack(
        &self,
        database: &DatabaseName,
        node: &str,
        epoch: u64,
        lease: i64,
    ) -> Result<(), EtcdError> {
        let Some(presence) = &self.presence else {
            return Err(EtcdError::Config("presence is not configured".to_owned()));
        };
        let key = format!("{}{database}/{node}", presence.acks);
        let options = Some(PutOptions::new().with_lease(lease));
        self.call("put", |mut client| async move {
            client
                .put(key.into_bytes(), epoch.to_string(), options)
                .await
        })
        .await
        .map(|_| ())
    }

    /// A connected client (kept between calls; a failed call drops it so the next reconnects).
    pub async fn client(&self) -> Result<Client, EtcdError> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        let client = self.prepared.connect().await?;
        *cached = Some(client.clone());
        Ok(client)
    }

    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    /// Runs `request` on a connected client; on failure, drops the client.
    async fn call<T, F, Fut>(&self, operation: &'static str, request: F) -> Result<T, EtcdError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let result = self.prepared.call(operation, request(client)).await;
        if result.is_err() {
            self.forget_client().await;
        }
        result
    }

    /// Every database and server record, read at one revision. Values that do not parse are
    /// left out (the location source logs them).
    pub async fn read(&self) -> Result<Records, EtcdError> {
        let prefixed = || Some(GetOptions::new().with_prefix());
        let mut gets = vec![
            TxnOp::get(self.prepared.prefix.as_bytes(), prefixed()),
            TxnOp::get(self.servers_prefix.as_bytes(), prefixed()),
        ];
        if let Some(presence) = &self.presence {
            gets.push(TxnOp::get(presence.nodes.as_bytes(), prefixed()));
            gets.push(TxnOp::get(presence.acks.as_bytes(), prefixed()));
        }
        let txn = Txn::new().and_then(gets);
        let response = self
            .call(
                "range read",
                |mut client| async move { client.txn(txn).await },
            )
            .await?;
        let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let mut records = Records::default();
        if let Some(databases) = gets.next() {
            for kv in databases.kvs() {
                let Some(name) = name_under(&self.prepared.prefix, kv.key()) else {
                    continue;
                };
                if let Ok(value) = parse_value(kv.value()) {
                    let stored = Stored {
                        value,
                        revision: kv.mod_revision(),
                    };
                    records.databases.insert(DatabaseName::new(name), stored);
                }
            }
        }
        if let Some(servers) = gets.next() {
            records.servers = server_records(&self.servers_prefix, servers.kvs());
        }
        if let Some(presence) = &self.presence {
            if let Some(nodes) = gets.next() {
                records.nodes = nodes
                    .kvs()
                    .iter()
                    .filter_map(|kv| name_under(&presence.nodes, kv.key()))
                    .map(str::to_owned)
                    .collect();
            }
            if let Some(acks) = gets.next() {
                for kv in acks.kvs() {
                    let Some((database, node)) = kv
                        .key()
                        .strip_prefix(presence.acks.as_bytes())
                        .and_then(|rest| std::str::from_utf8(rest).ok())
                        .and_then(|rest| rest.split_once('/'))
                    else {
                        continue;
                    };
                    let Some(epoch) = std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    else {
                        continue;
                    };
                    records
                        .acks
                        .entry(DatabaseName::new(database))
                        .or_default()
                        .insert(node.to_owned(), epoch);
                }
            }
        }
        Ok(records)
    }

    /// Writes `database`'s record if its key is still at `expected.revision`, and, with a
    /// `fence`, only while the fence's leader key exists at its creation revision.
    pub async fn write_database(
        &self,
        database: &DatabaseName,
        expected: i64,
        record: &DatabaseRecord,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        check_name("database name", database.as_str()).map_err(EtcdError::Invalid)?;
        let key = format!("{}{database}", self.prepared.prefix);
        let put = TxnOp::put(key.as_bytes(), encode_value(record), None);
        self.compare_and(key, expected, vec![put], fence).await
    }

    /// Deletes `database`'s record if its key is still at `expected` (a pin removed), with the
    /// nodes' acknowledgements of its moves in the same transaction (so that a record made
    /// again under the same name, its epochs starting over, cannot meet an old one); with a
    /// `fence`, only while the fence's leader key exists at its creation revision.
    pub async fn delete_database(
        &self,
        database: &DatabaseName,
        expected: i64,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        check_name("database name", database.as_str()).map_err(EtcdError::Invalid)?;
        let key = format!("{}{database}", self.prepared.prefix);
        let mut ops = vec![TxnOp::delete(key.as_bytes(), None)];
        if let Some(presence) = &self.presence {
            let acks = format!("{}{database}/", presence.acks);
            ops.push(TxnOp::delete(
                acks.as_bytes(),
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        self.compare_and(key, expected, ops, fence).await
    }

    /// Writes `server`'s record if its key is still at `expected` (0: absent).
    pub async fn write_server(
        &self,
        server: &ServerName,
        expected: i64,
        record: &ServerRecord,
    ) -> Result<(), WriteError> {
        check_name("server name", server.as_str()).map_err(EtcdError::Invalid)?;
        let key = format!("{}{server}", self.servers_prefix);
        // Serialising a flag and a string cannot fail.
        let value = serde_json::to_string(record).unwrap_or_default();
        let put = TxnOp::put(key.as_bytes(), value, None);
        self.compare_and(key, expected, vec![put], None).await
    }

    /// Runs `ops` if `key` is still at `expected` (0: absent) and the `fence` holds.
    async fn compare_and(
        &self,
        key: String,
        expected: i64,
        ops: Vec<TxnOp>,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        let unchanged = if expected == 0 {
            Compare::version(key.as_bytes(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.as_bytes(), CompareOp::Equal, expected)
        };
        let mut when = vec![unchanged];
        let mut otherwise = Vec::new();
        if let Some(fence) = fence {
            when.push(Compare::create_revision(
                fence.key.clone(),
                CompareOp::Equal,
                fence.revision,
            ));
            otherwise.push(TxnOp::get(fence.key.clone(), None));
        }
        let txn = Txn::new().when(when).and_then(ops).or_else(otherwise);
        let response = self
            .call("put", |mut client| async move { client.txn(txn).await })
            .await?;
        if response.succeeded() {
            return Ok(());
        }
        let Some(fence) = fence else {
            return Err(WriteError::Conflict);
        };
        // Which comparison failed: the leader key gone or re-created means leadership is lost.
        let leader_still_ours = response.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == fence.revision),
            _ => false,
        });
        Err(if leader_still_ours {
            WriteError::Conflict
        } else {
            WriteError::Fenced
        })
    }
}

/// The name after `prefix` in `key`, if it is one.
fn name_under<'k>(prefix: &str, key: &'k [u8]) -> Option<&'k str> {
    let name = std::str::from_utf8(key.strip_prefix(prefix.as_bytes())?).ok()?;
    check_name("name", name).ok().map(|()| name)
}

/// The server records among `kvs` (values that are not JSON records are left out).
fn server_records(
    prefix: &str,
    kvs: &[etcd_client::KeyValue],
) -> BTreeMap<ServerName, Stored<ServerRecord>> {
    kvs.iter()
        .filter_map(|kv| {
            let name = name_under(prefix, kv.key())?;
            let value: ServerRecord = serde_json::from_slice(kv.value()).ok()?;
            let stored = Stored {
                value,
                revision: kv.mod_revision(),
            };
            Some((ServerName::new(name), stored))
        })
        .collect()
}
