//! The Active Manager: mailfront noticing a dead mailbox server and moving its databases.
//!
//! In the seed spec (step 5) the front door asks the Active Manager where a database's active
//! copy is; in Exchange the Active Manager is also what moves it when a server fails. Here:
//!
//! - [`probe`]: every node probes every mailbox server's endpoints (greeting, login or HTTP GET)
//!   and keeps the health board and the metrics;
//! - [`health`]: whether an endpoint is up, from its probes (HAProxy's `fall`/`rise`);
//! - [`plan`]: what to move where — automatic failover with its guard rails, the operator's
//!   switchover and evacuation — as pure functions over a [`plan::Fleet`];
//! - [`store`]: where records are read and written (etcd, or the location file), always by
//!   compare-and-swap;
//! - [`leader`]: one leader per array, elected through etcd, that stops acting before its lease
//!   can expire elsewhere;
//! - [`active`]: the rounds — every node brings maintenance flags to its health board, the
//!   leader fails over what its probes see down;
//! - [`ops`]: the operator's views and commands, through the same compare-and-swap path;
//! - [`presence`]: this node's part in safe moves — present in the store under its own lease,
//!   acknowledging each group move once its sessions of the group are gone;
//! - [`blocks`]: login blocks shared across the array (not the Active Manager's, but the same
//!   store and the same care).

pub mod active;
pub mod blocks;
pub mod health;
pub mod leader;
pub mod ops;
pub mod placement;
pub mod plan;
pub mod presence;
pub mod probe;
pub mod store;
