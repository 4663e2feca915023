//! Admission: from credentials to a logged-in backend session, or a refusal.
//!
//! This is the middle of DESIGN.md's flow — auth, locate, route, backend connect and login —
//! shared by every protocol. It never sees the client's socket; it is given credentials and
//! answers with an [`Admitted`] session or a [`Refused`] with the [`AuthFailure`] the protocol
//! front end turns into its own reply.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mailfront_directory::{AuthError, Directory};
use mailfront_location::{LocateError, Locator};
use mailfront_model::{DatabaseName, Principal, Secret, ServerName};
use mailfront_protocol::{AuthFailure, BackendAuth, ClientInfo, Credentials};
use mailfront_routing::{
    Decision, Facts, LocationFailure, LoginMethod, RejectKind, Request, Topology, route,
};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::LineProtocol;
use crate::backend::{self, BackendSession, BackendTimeouts};
use crate::metrics::{Metrics, ProtocolLabel, ResultLabels, seconds};
use crate::registry::Registry;
use crate::throttle::{Throttle, ThrottleSettings, Verdict};

/// Why a login name and password were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialRefusal {
    /// Wrong, unknown, or blocked by throttling (one case to the client); the text is for logs.
    Invalid(&'static str),
    /// The directory could not be asked.
    Unavailable(String),
}

/// Time limits and delays of admission.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// How long every refused login takes, measured from the start of the attempt (so that
    /// unknown users, wrong passwords and fast or slow hashes all look the same from outside).
    pub auth_failure_delay: Duration,
    /// How long the directory may take to answer.
    pub directory_timeout: Duration,
    /// Backend connect and login limits.
    pub backend: BackendTimeouts,
    /// Login throttling.
    pub throttle: ThrottleSettings,
}

/// A session that passed admission: the user, where they went, and the logged-in backend.
#[derive(Debug)]
pub struct Admitted {
    /// The user.
    pub principal: Principal,
    /// The server hosting the active copy of the user's database.
    pub server: ServerName,
    /// The user's database.
    pub database: DatabaseName,
    /// The backend session, logged in.
    pub backend: BackendSession,
}

/// A refusal: what the client is told, and why (for the log only).
#[derive(Debug)]
pub struct Refused {
    /// What the client is told.
    pub failure: AuthFailure,
    /// Why, for the log. Never contains a password.
    pub reason: String,
    /// The user, if the directory knew them.
    pub user: Option<String>,
}

/// Everything admission consults. One per node, shared by all sessions.
pub struct Gateway {
    directory: Arc<dyn Directory>,
    locator: Arc<Locator>,
    topology: ArcSwap<Topology>,
    backend_tls: Option<TlsConnector>,
    settings: AdmissionSettings,
    health: Health,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    throttle: Throttle,
}

/// Which backends failed recently. A server that could not be reached is skipped for a while
/// when there is a choice (delivery), so that every message does not pay its timeout again.
#[derive(Debug, Default)]
pub struct Health {
    down_until: std::sync::Mutex<std::collections::HashMap<ServerName, Instant>>,
}

impl Health {
    /// How long a failed server is skipped.
    pub const RETRY_AFTER: Duration = Duration::from_secs(10);

    /// Records a failure to reach `server`.
    pub fn mark_down(&self, server: &ServerName) {
        if let Ok(mut map) = self.down_until.lock() {
            map.insert(server.clone(), Instant::now() + Self::RETRY_AFTER);
        }
    }

    /// Records a success with `server`.
    pub fn mark_up(&self, server: &ServerName) {
        if let Ok(mut map) = self.down_until.lock() {
            map.remove(server);
        }
    }

    /// Whether `server` may be tried.
    pub fn is_healthy(&self, server: &ServerName) -> bool {
        match self.down_until.lock() {
            Ok(map) => map.get(server).is_none_or(|until| *until <= Instant::now()),
            Err(_) => true,
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway. `backend_tls` is required if any endpoint uses TLS.
    pub fn new(
        directory: Arc<dyn Directory>,
        locator: Arc<Locator>,
        topology: Topology,
        backend_tls: Option<TlsConnector>,
        settings: AdmissionSettings,
    ) -> Self {
        Self {
            directory,
            registry: Arc::new(Registry::new(Arc::clone(&locator))),
            throttle: Throttle::new(settings.throttle.clone()),
            locator,
            topology: ArcSwap::from_pointee(topology),
            backend_tls,
            settings,
            health: Health::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live proxied sessions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The TLS connector for backends, if configured.
    pub fn backend_tls(&self) -> Option<&TlsConnector> {
        self.backend_tls.as_ref()
    }

    /// Recent backend failures.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Admission's time limits.
    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// The locator (for failover subscriptions and status).
    pub fn locator(&self) -> &Arc<Locator> {
        &self.locator
    }

    /// The topology in force.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// Replaces the topology (a configuration reload). Sessions already proxied keep their
    /// backend connection; only new logins and deliveries see the new topology.
    pub fn set_topology(&self, topology: Topology) {
        self.topology.store(Arc::new(topology));
    }

    /// Checks the credentials, locates and routes the user, and logs in to their backend.
    pub async fn admit<P: LineProtocol>(
        &self,
        protocol: &P,
        credentials: Credentials,
        client: &ClientInfo,
    ) -> Result<Admitted, Refused> {
        let started = Instant::now();
        let result = self.try_admit(protocol, credentials, client, started).await;
        if let Err(refused) = &result
            && refused.failure != AuthFailure::Temporary
        {
            // Every refusal of credentials takes the same time from the start of the attempt
            // (a wrong password may take longer still, when throttled: see check_password).
            tokio::time::sleep_until(started + self.settings.auth_failure_delay).await;
        }
        result
    }

    /// Checks a login name and password, for every protocol: throttling first (a blocked
    /// address or name is refused without asking the directory), then the directory within its
    /// timeout. A refusal of the credentials returns only after its delay — the configured
    /// failure delay, or longer when throttled — counted from `started`, so that every cause
    /// looks the same from outside.
    pub async fn check_password(
        &self,
        protocol: &str,
        client: IpAddr,
        login: &str,
        password: &Secret<Vec<u8>>,
        started: Instant,
    ) -> Result<Principal, CredentialRefusal> {
        if self.throttle.check(client, login) == Verdict::Blocked {
            self.metrics
                .throttled
                .get_or_create(&ResultLabels {
                    protocol: protocol.to_owned(),
                    result: "blocked".to_owned(),
                })
                .inc();
            tokio::time::sleep_until(started + self.throttle.blocked_delay()).await;
            return Err(CredentialRefusal::Invalid("blocked by throttling"));
        }
        let asked = Instant::now();
        let authenticated = tokio::time::timeout(
            self.settings.directory_timeout,
            self.directory.authenticate(login, password),
        )
        .await
        .unwrap_or_else(|_| {
            Err(AuthError::Unavailable(format!(
                "no answer within {:?}",
                self.settings.directory_timeout
            )))
        });
        self.metrics
            .directory_latency
            .observe(seconds(asked.elapsed()));
        match authenticated {
            Ok(principal) => {
                self.throttle.succeeded(client, login);
                Ok(principal)
            }
            Err(AuthError::InvalidCredentials) => {
                let delay = self.throttle.failed(client, login);
                if delay > self.settings.auth_failure_delay {
                    self.metrics
                        .throttled
                        .get_or_create(&ResultLabels {
                            protocol: protocol.to_owned(),
                            result: "delayed".to_owned(),
                        })
                        .inc();
                }
                tokio::time::sleep_until(started + delay.max(self.settings.auth_failure_delay))
                    .await;
                Err(CredentialRefusal::Invalid("unknown user or wrong password"))
            }
            Err(AuthError::Unavailable(why)) => Err(CredentialRefusal::Unavailable(why)),
        }
    }

    /// The throttle (for status pages).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    async fn try_admit<P: LineProtocol>(
        &self,
        protocol: &P,
        credentials: Credentials,
        client: &ClientInfo,
        started: Instant,
    ) -> Result<Admitted, Refused> {
        let refused = |failure, reason: String, user: Option<&str>| Refused {
            failure,
            reason,
            user: user.map(str::to_owned),
        };
        let checked = self
            .check_password(
                P::PROTOCOL.as_str(),
                client.client.ip(),
                &credentials.authcid,
                &credentials.password,
                started,
            )
            .await;
        let principal = match checked {
            Ok(principal) => principal,
            Err(CredentialRefusal::Invalid(why)) => {
                return Err(refused(AuthFailure::BadCredentials, why.into(), None));
            }
            Err(CredentialRefusal::Unavailable(why)) => {
                return Err(refused(
                    AuthFailure::Temporary,
                    format!("directory unavailable: {why}"),
                    None,
                ));
            }
        };
        let user = Some(principal.address.as_str());
        if let Some(authzid) = &credentials.authzid
            && !principal.answers_to(authzid)
        {
            return Err(refused(
                AuthFailure::AuthzidRefused,
                "authorization identity is another user".into(),
                user,
            ));
        }

        let asked = Instant::now();
        let active = self.locator.locate(&principal.database);
        self.metrics
            .location_latency
            .observe(seconds(asked.elapsed()));
        let active_ref = active.as_ref().map_err(|e| match e {
            LocateError::Unavailable => LocationFailure::Unavailable,
            LocateError::UnknownDatabase => LocationFailure::UnknownDatabase,
        });
        let topology = self.topology.load();
        let decision = route(
            &topology,
            &Request::protocol(P::PROTOCOL),
            Facts::Authenticated {
                principal: &principal,
                active: active_ref,
            },
        );
        let server_name = match decision {
            Decision::Proxy { server, .. } => server,
            Decision::Reject { kind, reason } => {
                let failure = match kind {
                    RejectKind::AuthFailed => AuthFailure::BadCredentials,
                    RejectKind::ProtocolDisabled => AuthFailure::ProtocolDisabled,
                    RejectKind::Temporary => AuthFailure::Temporary,
                };
                return Err(refused(failure, reason.to_string(), user));
            }
            Decision::Redirect { reason, .. } => {
                // Line protocols are never redirected by the rules; refuse rather than guess.
                return Err(refused(
                    AuthFailure::Temporary,
                    format!("unexpected redirect for {}: {reason}", P::PROTOCOL),
                    user,
                ));
            }
        };
        let Some(server) = topology.server(&server_name) else {
            return Err(refused(
                AuthFailure::Temporary,
                format!("unknown server {server_name}"),
                user,
            ));
        };
        let Some(endpoint) = server.endpoints.for_protocol(P::PROTOCOL) else {
            return Err(refused(
                AuthFailure::Temporary,
                format!("server {server_name} has no {} endpoint", P::PROTOCOL),
                user,
            ));
        };
        let auth = match &server.login {
            LoginMethod::Master { master, mechanism } => BackendAuth::Master {
                user: principal.address.clone(),
                master: master.user.clone(),
                password: master.password.clone(),
                separator: master.separator.clone(),
                mechanism: *mechanism,
            },
            LoginMethod::PassThrough { mechanism } => BackendAuth::PassThrough {
                user: principal.address.clone(),
                password: credentials.password,
                mechanism: *mechanism,
            },
        };
        let login = protocol.backend_login(auth, endpoint.tls, client.clone());
        let asked = Instant::now();
        let opened = backend::open(
            endpoint,
            self.backend_tls.as_ref(),
            login,
            self.settings.backend,
        )
        .await;
        self.metrics
            .backend_login_latency
            .get_or_create(&ProtocolLabel {
                protocol: P::PROTOCOL.to_string(),
            })
            .observe(seconds(asked.elapsed()));
        match opened {
            Ok(backend) => Ok(Admitted {
                database: principal.database.clone(),
                principal,
                server: server_name,
                backend,
            }),
            Err(error) => Err(refused(
                AuthFailure::Temporary,
                format!("backend {server_name}: {error}"),
                user,
            )),
        }
    }
}
