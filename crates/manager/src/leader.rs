//! One leader per array: the node that acts as the Active Manager, elected through etcd.
//!
//! Each node holds a lease (TTL `active_manager.lease_ttl`) kept alive every third of the TTL,
//! and campaigns on the election key with it; etcd makes one campaigner the leader, and the
//! leader's key lives exactly as long as its lease. When the leader dies or loses etcd, its
//! lease expires, its key goes, and the next campaigner is elected.
//!
//! A leader that loses etcd must stop acting before its lease can expire elsewhere: it counts
//! its term from the *sending* of its last answered keep-alive (etcd renewed the lease at or
//! after that moment, so the lease lives at least until then plus the TTL) and stops a quarter
//! of the TTL before that — [`Leadership::acting`] answers `None` from then on. On top of that,
//! every write a leader makes is fenced by its leader key (see
//! `mailfront_location::etcd::records`): a write from a deposed leader fails in etcd itself.
//!
//! With the embedded location file there is no array: the one node is its own leader
//! ([`Leadership::alone`]).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use mailfront_location::etcd::records::{EtcdRecords, Fence};
use tokio::sync::watch;
use tokio::time::Instant;

/// A term as leader: the fence for its writes, and when it must stop acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The leader key's fence (`None` for a node alone with its location file).
    pub fence: Option<Fence>,
    /// When the term ends unless the lease is renewed meanwhile.
    pub valid_until: Instant,
}

/// Whether this node leads, shared by the Active Manager's loop and the admin API.
#[derive(Clone, Debug)]
pub struct Leadership {
    term: watch::Receiver<Option<Term>>,
}

impl Leadership {
    /// A node that is its own leader for ever (the embedded location file).
    pub fn alone() -> Self {
        let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let (_, term) = watch::channel(Some(Term {
            fence: None,
            valid_until: forever,
        }));
        Self { term }
    }

    /// A node that never leads (automatic failover is off): the operator's commands still work.
    pub fn never() -> Self {
        let (_, term) = watch::channel(None);
        Self { term }
    }

    /// The current term, if this node leads and the term has not run out.
    pub fn acting(&self) -> Option<Term> {
        self.term
            .borrow()
            .clone()
            .filter(|term| Instant::now() < term.valid_until)
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.acting().is_some()
    }
}

/// The settings of an election.
#[derive(Clone, Debug)]
pub struct Election {
    /// The election key (etcd's election name).
    pub key: String,
    /// This node's name, the value of its campaign (who leads is readable in etcd).
    pub node: String,
    /// The lease TTL (whole seconds, at least 2).
    pub ttl: Duration,
}

/// Starts campaigning in the background: the leadership, and the task (abort it to stop).
pub fn elect(
    records: Arc<EtcdRecords>,
    election: Election,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (publish, term) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match records.client().await {
                Ok(client) => {
                    if let Err(why) = campaign(client, &election, &publish).await {
                        tracing::warn!(key = %election.key, error = %why, "leader election interrupted; campaigning again");
                    }
                    backoff = Duration::from_millis(200);
                }
                Err(error) => {
                    tracing::debug!(%error, "etcd unreachable for the leader election");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if publish.send_replace(None).is_some() {
                tracing::warn!(node = %election.node, "no longer the Active Manager's leader");
            }
            tokio::time::sleep(backoff).await;
        }
    });
    (Leadership { term }, task)
}

/// One lease: keeps it alive while campaigning, then while leading. Returns when the lease is
/// lost (a keep-alive failed or went unanswered, or etcd says it expired).
async fn campaign(
    mut client: Client,
    election: &Election,
    publish: &watch::Sender<Option<Term>>,
) -> Result<(), String> {
    let LeaseTiming {
        secs,
        ttl,
        every,
        margin,
    } = LeaseTiming::new(election.ttl);
    let lease = client
        .lease_grant(secs, None)
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id();
    let (mut keeper, mut answers) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("lease keep-alive: {e}"))?;
    let mut campaigner = client.clone();
    let mut campaigning =
        Box::pin(campaigner.campaign(election.key.clone(), election.node.clone(), lease));
    let mut fence: Option<Fence> = None;
    let mut next = Instant::now();
    let result = loop {
        tokio::select! {
            won = &mut campaigning, if fence.is_none() => {
                let won = won.map_err(|e| format!("campaign: {e}"))?;
                let Some(key) = won.leader() else {
                    break Err("campaign: no leader key in the answer".to_owned());
                };
                fence = Some(Fence { key: key.key().to_vec(), revision: key.rev() });
                tracing::info!(node = %election.node, key = %election.key, "elected the Active Manager's leader");
                // The term starts now: the last keep-alive was answered within the last third.
                next = Instant::now();
            }
            () = tokio::time::sleep_until(next) => {
                let sent = match keep_alive(&mut keeper, &mut answers, every).await {
                    Ok(sent) => sent,
                    Err(why) => break Err(why),
                };
                if let Some(fence) = &fence {
                    publish.send_replace(Some(Term {
                        fence: Some(fence.clone()),
                        valid_until: sent + ttl - margin,
                    }));
                }
                next = sent + every;
            }
        }
    };
    // Best effort: give the lease back so the next leader need not wait for it to expire.
    let _ = tokio::time::timeout(every, client.lease_revoke(lease)).await;
    result
}

/// How a lease of `active_manager.lease_ttl` is kept (the leader's and each node's presence):
/// whole seconds, at least 2; a keep-alive every third of the TTL; and whatever the lease
/// guarantees ends a quarter of the TTL before the lease could expire in etcd.
pub(crate) struct LeaseTiming {
    /// The TTL asked of etcd, in seconds.
    pub secs: i64,
    /// The same TTL.
    pub ttl: Duration,
    /// How often a keep-alive is sent (and how long its answer may take).
    pub every: Duration,
    /// How long before the lease could expire its holder stops relying on it.
    pub margin: Duration,
}

impl LeaseTiming {
    pub fn new(ttl: Duration) -> Self {
        let secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let ttl = Duration::from_secs(secs.unsigned_abs());
        Self {
            secs,
            ttl,
            every: ttl / 3,
            margin: ttl / 4,
        }
    }
}

/// One keep-alive of a lease: sent, and its answer awaited for at most `every`. Returns when it
/// was sent (what the lease's validity counts from); an expired lease, an error or no answer in
/// time is an error (a late answer could not be told from the next one's: start over).
pub(crate) async fn keep_alive(
    keeper: &mut LeaseKeeper,
    answers: &mut LeaseKeepAliveStream,
    every: Duration,
) -> Result<Instant, String> {
    let sent = Instant::now();
    let answered = tokio::time::timeout(every, async {
        keeper.keep_alive().await.map_err(|e| e.to_string())?;
        answers.message().await.map_err(|e| e.to_string())
    })
    .await;
    match answered {
        Ok(Ok(Some(answer))) if answer.ttl() > 0 => Ok(sent),
        Ok(Ok(_)) => Err("the lease expired".to_owned()),
        Ok(Err(why)) => Err(format!("keep-alive: {why}")),
        Err(_) => Err("keep-alive unanswered".to_owned()),
    }
}
