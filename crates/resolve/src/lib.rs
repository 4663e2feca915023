//! Who the user is, and where their mailbox is served: the one "find the user's server" step.
//!
//! In the flow of a session (docs/architecture.md) this crate joins the *auth*, *locate* and
//! *route* steps into calls every front door makes the same way:
//!
//! - [`Resolver::authenticate`] checks a login name and password: throttling first, then the
//!   directory within its timeout, and every refusal of credentials takes the same time;
//! - [`Resolver::resolve`] takes what identifies a mailbox ([`Mailbox`]: an authenticated user, an
//!   address, a telephone extension, an HTTP anchor, or nobody) and what was asked
//!   ([`Request`]: the protocol, and for HTTP the service and URL), looks the mailbox up,
//!   locates its database and asks [`route()`](mailfront_routing::route) for the [`Decision`].
//!
//! IMAP, POP3, submission, inbound SMTP, HTTPS, SIP and `mailfront route` all come here; none of
//! them asks the directory or the locator by itself. Refusals are typed by [`Source`] (client,
//! directory, locator, backend, internal), which decides the client's reply in one place per
//! protocol.
//!
//! No sockets: the directory and locator are traits and in-memory maps; the only waiting is the
//! directory's and the failure delay.

pub mod health;
pub mod moves;
pub mod throttle;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mailfront_directory::{AuthError, Authenticated, Directory};
use mailfront_location::{LocateError, Locator};
use mailfront_metrics::{Metrics, ResultLabels, seconds};
use mailfront_model::{Principal, Protocol, Secret, Source};
use mailfront_routing::{
    Decision, Facts, LocationFailure, Reason, RejectKind, Request, Server, Topology,
};
use tokio::time::Instant;

use crate::health::BackendHealth;
use crate::throttle::{Throttle, ThrottleSettings, Verdict};

/// The location map's changes, as a [`Resolver`] hands them out (the latest map; `None` until
/// one is loaded).
pub type LocationChanges =
    tokio::sync::watch::Receiver<Option<Arc<mailfront_location::LocationMap>>>;

/// Time limits and delays of authentication and lookups.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    /// How long every refused login takes, measured from the start of the attempt (so that
    /// unknown users, wrong passwords and fast or slow hashes all look the same from outside).
    pub auth_failure_delay: Duration,
    /// How long the directory may take to answer.
    pub directory_timeout: Duration,
    /// Login throttling.
    pub throttle: ThrottleSettings,
}

/// A refusal: how the client is refused, where the cause lies, and what happened (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal the client hears (its protocol's reply is chosen from this).
    pub kind: RejectKind,
    /// Where the cause lies.
    pub source: Source,
    /// What happened, for the log. Never contains a password.
    pub detail: String,
    /// The user, if the directory knew them.
    pub user: Option<String>,
    /// Where the client should log in instead (an IMAP login referral), if that is the answer.
    pub referral: Option<String>,
}

impl Refusal {
    /// A refusal with no user known yet.
    pub fn new(kind: RejectKind, source: Source, detail: impl Into<String>) -> Self {
        Self {
            kind,
            source,
            detail: detail.into(),
            user: None,
            referral: None,
        }
    }

    /// Not a refusal of the user but of this node: the mailbox is served at `url`'s host, and
    /// the client is told to log in there (IMAP login referrals, RFC 2221).
    pub fn referral(url: String, detail: impl Into<String>) -> Self {
        let mut refusal = Self::new(RejectKind::Temporary, Source::Internal, detail);
        refusal.referral = Some(url);
        refusal
    }

    /// The same refusal, naming the user.
    pub fn for_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// A temporary refusal because a mailbox server failed us.
    pub fn backend(detail: impl Into<String>) -> Self {
        Self::new(RejectKind::Temporary, Source::Backend, detail)
    }

    /// A temporary refusal because mailfront cannot serve the request as configured.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(RejectKind::Temporary, Source::Internal, detail)
    }
}

/// What identifies the mailbox a request is for.
#[derive(Clone, Copy, Debug)]
pub enum Mailbox<'a> {
    /// A user who authenticated: their own mailbox, no lookup.
    User(&'a Principal),
    /// An address or alias, looked up without a password (a recipient, `mailfront route`).
    Address(&'a str),
    /// A telephone extension, looked up without a password (a SIP call).
    Extension(&'a str),
    /// An HTTP request's anchor mailbox (`X-AnchorMailbox` or a query parameter), sent by an
    /// authenticated caller: the named mailbox; refused (never the caller's own instead) when
    /// the anchor names nobody. As sent (`SMTP:`/`smtp:` prefixes are dropped).
    Anchor(&'a str),
    /// Nobody: a service without authentication.
    Anyone,
}

/// What [`Resolver::resolve`] found and decided.
#[derive(Debug)]
pub struct Resolved {
    /// The mailbox's owner, when the mailbox was looked up (an address, an extension, an anchor
    /// that names someone). `None` for [`Mailbox::User`] (the caller has it), for
    /// [`Mailbox::Anyone`], and when nobody has the name.
    pub principal: Option<Principal>,
    /// Why the directory could not answer, when it could not (for the log).
    pub directory_error: Option<String>,
    /// The decision.
    pub decision: Decision,
    topology: Arc<Topology>,
}

impl Resolved {
    /// The server of a proxy decision, as the topology the decision was made against describes
    /// it (its endpoints, its login method).
    pub fn server(&self) -> Option<&Server> {
        match &self.decision {
            Decision::Proxy { server, .. } => self.topology.server(server),
            _ => None,
        }
    }

    /// The topology the decision was made against.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The refusal, if the decision is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match &self.decision {
            Decision::Reject { kind, reason } => Some(Refusal::new(
                *kind,
                reason.source().unwrap_or(Source::Internal),
                reason.to_string(),
            )),
            _ => None,
        }
    }
}

/// The resolver of one node, shared by every session and request.
pub struct Resolver {
    directory: Arc<dyn Directory>,
    locator: Arc<Locator>,
    topology: ArcSwap<Topology>,
    settings: ResolverSettings,
    throttle: Throttle,
    health: BackendHealth,
    metrics: Arc<Metrics>,
    /// The directory's last failure, until it answers again: when, and why.
    directory_trouble: std::sync::Mutex<Option<(Instant, String)>>,
    /// How logins wait for moves (placement by group).
    moves: ArcSwap<moves::MoveHold>,
    /// OAuth token logins, where `[oauth]` is configured.
    tokens: arc_swap::ArcSwapOption<tokens::TokenLogins>,
}

/// How long a directory failure makes the node's health pages red without another call.
const DIRECTORY_TROUBLE_SHOWN: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver over these parts.
    pub fn new(
        directory: Arc<dyn Directory>,
        locator: Arc<Locator>,
        topology: Topology,
        settings: ResolverSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            directory,
            locator,
            topology: ArcSwap::from_pointee(topology),
            throttle: Throttle::new(settings.throttle.clone()),
            settings,
            health: BackendHealth::default(),
            metrics,
            directory_trouble: std::sync::Mutex::new(None),
            moves: ArcSwap::from_pointee(moves::MoveHold::default()),
            tokens: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Sets how logins wait for moves (placement by group; at start and on reload).
    pub fn set_move_hold(&self, hold: moves::MoveHold) {
        self.moves.store(Arc::new(hold));
    }

    /// How logins wait for moves.
    pub fn move_hold(&self) -> Arc<moves::MoveHold> {
        self.moves.load_full()
    }

    /// Why the directory failed, if its last call failed within the last 30 s (and none has
    /// succeeded since): the node's per-protocol health pages are red meanwhile.
    pub fn directory_failing(&self) -> Option<String> {
        self.trouble()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DIRECTORY_TROUBLE_SHOWN)
            .map(|(_, why)| why.clone())
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.directory_trouble
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers how the directory's last call went.
    fn directory_answered(&self, failure: Option<&str>) {
        let mut trouble = self.trouble();
        match failure {
            Some(why) => *trouble = Some((Instant::now(), why.to_owned())),
            None => {
                if trouble.is_some() {
                    *trouble = None;
                }
            }
        }
    }

    /// The topology in force.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// Replaces the topology (a configuration reload). Sessions already proxied keep their
    /// backend connection; only new logins, requests and deliveries see the new topology.
    pub fn set_topology(&self, topology: Topology) {
        self.topology.store(Arc::new(topology));
    }

    /// The settings in force.
    pub fn settings(&self) -> &ResolverSettings {
        &self.settings
    }

    /// The login throttle (for status pages).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Which mailbox servers failed recently.
    pub fn health(&self) -> &BackendHealth {
        &self.health
    }

    /// Changes of the location map (a session bound to a server follows its database with it).
    pub fn location_changes(&self) -> LocationChanges {
        self.locator.subscribe()
    }

    /// Whether a location map is loaded: without one no login can be routed (health pages).
    pub fn has_location_map(&self) -> bool {
        self.locator.snapshot().is_some()
    }

    /// Checks a login name and password, for every protocol: throttling first (a blocked
    /// address or name is refused without asking the directory), then the directory within its
    /// timeout, then whether the credential that matched (the main password or an app password)
    /// may be used for `protocol` — one that may not is refused as a wrong password is. A refusal of the credentials returns only after its delay — the configured
    /// failure delay, or longer when throttled — counted from `started`, so that every cause
    /// looks the same from outside. A directory that cannot answer is a temporary refusal at
    /// once.
    pub async fn authenticate(
        &self,
        protocol: Protocol,
        client: IpAddr,
        login: &str,
        password: &Secret<Vec<u8>>,
        started: Instant,
    ) -> Result<Principal, Refusal> {
        let bad = |detail: &str| Refusal::new(RejectKind::AuthFailed, Source::Client, detail);
        self.unless_blocked(protocol, client, login, started)
            .await?;
        let asked = Instant::now();
        let authenticated = tokio::time::timeout(
            self.settings.directory_timeout,
            self.directory.authenticate(login, password),
        )
        .await
        .unwrap_or_else(|_| Err(AuthError::Unavailable(self.no_answer())));
        self.metrics
            .directory_latency
            .observe(seconds(asked.elapsed()));
        match &authenticated {
            Err(AuthError::Unavailable(why)) => self.directory_answered(Some(why)),
            _ => self.directory_answered(None),
        }
        match authenticated {
            Ok(Authenticated {
                principal,
                credential,
            }) if credential.allows(protocol) => {
                self.throttle.succeeded(client, login);
                Ok(principal)
            }
            // The right secret for another protocol (an app password limited to IMAP used for
            // submission, a main password barred from the mail protocols): refused exactly as
            // a wrong password is — same reply, same throttling, same delay — so that nobody
            // learns that the secret was right; only the log says why.
            Ok(Authenticated {
                principal,
                credential,
            }) => {
                self.refuse_credentials(protocol, client, login, started)
                    .await;
                Err(bad(&format!("{credential} not allowed for {protocol}"))
                    .for_user(&principal.address))
            }
            Err(AuthError::InvalidCredentials) => {
                self.refuse_credentials(protocol, client, login, started)
                    .await;
                Err(bad("unknown user or wrong password"))
            }
            Err(AuthError::Unavailable(why)) => Err(Refusal::new(
                RejectKind::Temporary,
                Source::Directory,
                format!("directory unavailable: {why}"),
            )),
        }
    }

    /// Refuses a login from a blocked address or for a blocked name — after the blocked delay,
    /// counted from `started`, with the same reply as a wrong password — without asking anyone.
    async fn unless_blocked(
        &self,
        protocol: Protocol,
        client: IpAddr,
        login: &str,
        started: Instant,
    ) -> Result<(), Refusal> {
        if self.throttle.check(client, login) != Verdict::Blocked {
            return Ok(());
        }
        self.count_throttled(protocol, "blocked");
        tokio::time::sleep_until(started + self.throttle.blocked_delay()).await;
        Err(Refusal::new(
            RejectKind::AuthFailed,
            Source::Client,
            "blocked by throttling",
        ))
    }

    /// Counts a refused login with the throttle and waits out its delay (the failure delay, or
    /// longer when throttled), counted from `started`.
    async fn refuse_credentials(
        &self,
        protocol: Protocol,
        client: IpAddr,
        login: &str,
        started: Instant,
    ) {
        let delay = self.throttle.failed(client, login);
        if delay > self.settings.auth_failure_delay {
            self.count_throttled(protocol, "delayed");
        }
        tokio::time::sleep_until(started + delay.max(self.settings.auth_failure_delay)).await;
    }

    /// Waits until the failure delay, counted from `started`, has passed: every refusal of a
    /// login that is not temporary takes at least that long (an authorization identity refused
    /// or a disabled protocol must not answer faster than a wrong password).
    pub async fn failure_delay(&self, started: Instant) {
        tokio::time::sleep_until(started + self.settings.auth_failure_delay).await;
    }

    fn count_throttled(&self, protocol: Protocol, result: &str) {
        self.metrics
            .throttled
            .get_or_create(&ResultLabels {
                protocol: protocol.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    fn no_answer(&self) -> String {
        format!("no answer within {:?}", self.settings.directory_timeout)
    }

    /// Finds a user by address or alias without a password, within the directory timeout.
    /// `Ok(None)`: nobody has the name. `Err`: the directory could not answer.
    pub async fn lookup(&self, name: &str) -> Result<Option<Principal>, Refusal> {
        self.ask_directory(self.directory.lookup(name)).await
    }

    /// Every user of `tenant` (the address book), within the directory timeout.
    pub async fn list(&self, tenant: &str) -> Result<Vec<Principal>, Refusal> {
        self.ask_directory(self.directory.list(tenant)).await
    }

    async fn ask_directory<T>(
        &self,
        asking: impl Future<Output = Result<T, mailfront_directory::Unavailable>>,
    ) -> Result<T, Refusal> {
        let unavailable = |why: String| Refusal::new(RejectKind::Temporary, Source::Directory, why);
        let answer = match tokio::time::timeout(self.settings.directory_timeout, asking).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(error)) => Err(unavailable(error.to_string())),
            Err(_) => Err(unavailable(format!("directory: {}", self.no_answer()))),
        };
        self.directory_answered(answer.as_ref().err().map(|r| r.detail.as_str()));
        answer
    }

    /// The one resolve step: finds the mailbox `mailbox` names (asking the directory, within its
    /// timeout, unless it is an authenticated user), locates its database, and decides by the
    /// routing rules where `request` goes. Never fails: a directory that cannot answer, an
    /// unknown name or a database the locator does not know become a [`Decision::Reject`] with
    /// its reason.
    pub async fn resolve(&self, mailbox: Mailbox<'_>, request: &Request<'_>) -> Resolved {
        let topology = self.topology.load_full();
        let found = match mailbox {
            Mailbox::User(user) => Found::Given(user),
            Mailbox::Anyone => Found::Nobody,
            Mailbox::Address(name) => Found::from(self.lookup(name).await),
            Mailbox::Extension(extension) => Found::from(
                self.ask_directory(self.directory.lookup_extension(extension))
                    .await,
            ),
            Mailbox::Anchor(anchor) => {
                let address = anchor
                    .strip_prefix("SMTP:")
                    .or_else(|| anchor.strip_prefix("smtp:"))
                    .unwrap_or(anchor);
                let by_guid = match guid_identity(address) {
                    // The seeds' endpoint identity: the mailbox GUID at its tenant's domain.
                    Some((guid, tenant)) => {
                        match Found::from(
                            self.ask_directory(self.directory.lookup_guid(guid)).await,
                        ) {
                            Found::Owner(owner) if owner.tenant.eq_ignore_ascii_case(tenant) => {
                                Some(Found::Owner(owner))
                            }
                            Found::Unavailable(why) => Some(Found::Unavailable(why)),
                            _ => None,
                        }
                    }
                    None => None,
                };
                let found = match by_guid {
                    Some(found) => found,
                    None => Found::from(self.lookup(address).await),
                };
                match found {
                    // Refused, not re-routed to the caller's own mailbox: the request acts on
                    // a mailbox that does not exist.
                    Found::NoSuchName => Found::UnknownAnchor(printable(anchor)),
                    found => found,
                }
            }
        };
        let decision = match &found {
            Found::Given(owner) => self.route_mailbox(&topology, request, owner).await,
            Found::Owner(owner) => self.route_mailbox(&topology, request, owner).await,
            Found::NoSuchName => mailfront_routing::route(&topology, request, Facts::AuthFailed),
            Found::UnknownAnchor(anchor) => Decision::Reject {
                kind: RejectKind::AuthzidRefused,
                reason: Reason::UnknownAnchor(anchor.clone()),
            },
            Found::Nobody => mailfront_routing::route(&topology, request, Facts::Anonymous),
            Found::Unavailable(_) => {
                mailfront_routing::route(&topology, request, Facts::DirectoryUnavailable)
            }
        };
        let (principal, directory_error) = match found {
            Found::Owner(owner) => (Some(owner), None),
            Found::Unavailable(why) => (None, Some(why)),
            Found::Given(_) | Found::NoSuchName | Found::UnknownAnchor(_) | Found::Nobody => {
                (None, None)
            }
        };
        Resolved {
            principal,
            directory_error,
            decision,
            topology,
        }
    }

    async fn route_mailbox(
        &self,
        topology: &Topology,
        request: &Request<'_>,
        owner: &Principal,
    ) -> Decision {
        let regrouped = self.regroup(owner);
        let owner = regrouped.as_ref().unwrap_or(owner);
        // SIP is only redirected and serves no mailbox: it need not wait for a move.
        if request.protocol != Protocol::Sip
            && let Some(reason) = self.settled(&owner.database).await
        {
            return Decision::Reject {
                kind: RejectKind::Temporary,
                reason,
            };
        }
        // The hold may have ended with the user's pin removed (or made): route by what serves
        // the user now. (A login sees the change too, and starts over under it.)
        let settled = self.regroup(owner);
        let owner = settled.as_ref().unwrap_or(owner);
        let asked = Instant::now();
        let active = self.locator.locate(&owner.database);
        self.metrics
            .location_latency
            .observe(seconds(asked.elapsed()));
        let active = active.as_ref().map_err(|error| match error {
            LocateError::Unavailable => LocationFailure::Unavailable,
            LocateError::UnknownDatabase => LocationFailure::UnknownDatabase,
        });
        let decision = mailfront_routing::route(
            topology,
            request,
            Facts::Authenticated {
                principal: owner,
                active,
            },
        );
        // Inbound mail picks its delivery server by health later (the delivery group).
        match decision {
            Decision::Proxy { server, .. }
                if request.protocol != Protocol::Smtp
                    && self.health.is_down(&server, request.protocol) =>
            {
                Decision::Reject {
                    kind: RejectKind::Temporary,
                    reason: Reason::ServerDown {
                        server,
                        protocol: request.protocol,
                    },
                }
            }
            decision => decision,
        }
    }
}

/// `<guid>@<tenant>` when the local part is a GUID (32 hex digits, dashes allowed where a
/// GUID's text form has them): the GUID and the tenant domain.
fn guid_identity(anchor: &str) -> Option<(&str, &str)> {
    let (guid, tenant) = anchor.split_once('@')?;
    let hex = guid.bytes().filter(u8::is_ascii_hexdigit).count();
    let shaped = guid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && (hex == 32 && (guid.len() == 32 || guid.len() == 36));
    (shaped && !tenant.is_empty()).then_some((guid, tenant))
}

/// `text` cut to 128 printable ASCII characters, for a reason that quotes client input.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(128)
        .collect()
}

/// What the directory step found, before routing.
enum Found<'a> {
    /// A mailbox whose principal the caller holds.
    Given(&'a Principal),
    /// The owner of a looked-up name.
    Owner(Principal),
    /// Nobody has the name.
    NoSuchName,
    /// Nobody has the anchor mailbox's name (as given, printable).
    UnknownAnchor(String),
    /// No mailbox to follow at all (anonymous).
    Nobody,
    /// The directory could not answer; why, for the log.
    Unavailable(String),
}

impl From<Result<Option<Principal>, Refusal>> for Found<'_> {
    fn from(lookup: Result<Option<Principal>, Refusal>) -> Self {
        match lookup {
            Ok(Some(owner)) => Found::Owner(owner),
            Ok(None) => Found::NoSuchName,
            Err(refusal) => Found::Unavailable(refusal.detail),
        }
    }
}

#[cfg(test)]
mod tests;
