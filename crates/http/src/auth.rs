//! Who is asking: the forms-login cookie, a bearer token, Basic credentials, or nobody, by each
//! service's modes.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mailfront_model::{Principal, Protocol, Secret, Source};
use tokio::time::Instant;

use crate::HttpFrontDoor;
use crate::config::{AuthMode, ServiceConfig};
use crate::cookie::{Purpose, Session};
use crate::form;
use crate::reply::{self, BASIC_CHALLENGE, Body, DIRECTORY_UNAVAILABLE};

/// The client's address, carried in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub SocketAddr);

/// The client's address of a request (the loopback address if it was never recorded).
pub(crate) fn client_of<B>(request: &Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// What authentication found.
pub(crate) enum Identity {
    /// Nobody (a service without authentication).
    Anonymous,
    /// A user.
    User(Principal),
}

impl HttpFrontDoor {
    /// Checks credentials through the resolver (so HTTP logins are throttled like every other
    /// protocol), taking the failure delay on refusal.
    pub(crate) async fn check_password(
        &self,
        client: IpAddr,
        user: &str,
        password: Vec<u8>,
    ) -> Result<Principal, Response<Body>> {
        let secret = Secret::new(password);
        let checked = self
            .resolver
            .authenticate(Protocol::Http, client, user, &secret, Instant::now())
            .await;
        match checked {
            Ok(principal) => Ok(principal),
            Err(refusal) if refusal.source == Source::Client => Err(reply::unauthorized(
                "Authentication failed",
                BASIC_CHALLENGE,
            )),
            Err(refusal) => {
                tracing::warn!(reason = %refusal.detail, "directory unavailable for an HTTP login");
                Err(reply::unavailable(DIRECTORY_UNAVAILABLE))
            }
        }
    }

    /// Checks an OAuth access token through the resolver (throttled and delayed like a password);
    /// a refusal is RFC 6750's `invalid_token` challenge.
    async fn check_access_token(
        &self,
        client: IpAddr,
        token: String,
    ) -> Result<Principal, Response<Body>> {
        let token = Secret::new(token.into_bytes());
        let checked = self
            .resolver
            .authenticate_token(Protocol::Http, client, "", &token, Instant::now())
            .await;
        match checked {
            Ok(login) => Ok(login.principal),
            Err(refusal) if refusal.kind == mailfront_routing::RejectKind::Temporary => {
                tracing::warn!(reason = %refusal.detail, "OpenID provider unavailable for an HTTP request");
                Err(reply::unavailable(DIRECTORY_UNAVAILABLE))
            }
            Err(refusal) => {
                tracing::info!(reason = %refusal.detail, "access token refused");
                Err(reply::unauthorized(
                    "Authentication failed",
                    "Bearer realm=\"mailfront\", error=\"invalid_token\"",
                ))
            }
        }
    }

    /// The user a cookie or token names, as the directory knows them now (`None`: gone).
    pub(crate) async fn principal_of(
        &self,
        session: &Session,
    ) -> Result<Option<Principal>, Response<Body>> {
        self.resolver
            .lookup(&session.user)
            .await
            .map_err(|_| reply::unavailable(DIRECTORY_UNAVAILABLE))
    }

    /// Who is asking, by the service's modes; `Err` is the response to send instead.
    pub(crate) async fn authenticate(
        &self,
        service: &ServiceConfig,
        request: &Request<Incoming>,
    ) -> Result<Identity, Response<Body>> {
        if service.auth.contains(&AuthMode::None) {
            return Ok(Identity::Anonymous);
        }
        let headers = request.headers();
        let now = SystemTime::now();
        if service.auth.contains(&AuthMode::Forms)
            && let Some(value) = form::cookie(headers, &self.config.cookie_name)
        {
            match self.keys.load().open(&value, Purpose::Session, now) {
                Ok(session) => {
                    if let Some(principal) = self.principal_of(&session).await? {
                        return Ok(Identity::User(principal));
                    }
                }
                Err(error) => tracing::info!(%error, "session cookie refused"),
            }
        }
        if service.auth.contains(&AuthMode::Bearer)
            && let Some(token) = form::bearer_token(headers)
        {
            // A JWT (three dot-separated parts) is the OpenID provider's access token; anything
            // else is one of mailfront's own sealed tokens.
            if token.matches('.').count() == 2 && self.resolver.accepts_tokens() {
                return self
                    .check_access_token(client_of(request), token)
                    .await
                    .map(Identity::User);
            }
            return match self.keys.load().open(&token, Purpose::Bearer, now) {
                Ok(session) => match self.principal_of(&session).await? {
                    Some(principal) => Ok(Identity::User(principal)),
                    None => Err(self.challenge(service, request)),
                },
                Err(error) => {
                    tracing::info!(%error, "bearer token refused");
                    Err(self.challenge(service, request))
                }
            };
        }
        if service.auth.contains(&AuthMode::Basic)
            && let Some((user, password)) = form::basic_credentials(headers)
        {
            return self
                .check_password(client_of(request), &user, password)
                .await
                .map(Identity::User);
        }
        Err(self.challenge(service, request))
    }

    /// The answer to a request without (valid) credentials.
    fn challenge(&self, service: &ServiceConfig, request: &Request<Incoming>) -> Response<Body> {
        if service.browser_app
            && service.auth.contains(&AuthMode::Forms)
            && request.method() == Method::GET
        {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            return reply::redirect(
                StatusCode::FOUND,
                &format!("/login?return={}", form::encode_component(target)),
            );
        }
        let challenge = if service.auth.contains(&AuthMode::Basic) {
            BASIC_CHALLENGE
        } else {
            "Bearer realm=\"mailfront\""
        };
        reply::unauthorized("Authentication required", challenge)
    }

    /// Authenticates a request to one of mailfront's own pages (Basic, or the forms cookie).
    pub(crate) async fn own_page_user(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Principal, Response<Body>> {
        if let Some(value) = form::cookie(request.headers(), &self.config.cookie_name)
            && let Ok(session) = self
                .keys
                .load()
                .open(&value, Purpose::Session, SystemTime::now())
            && let Some(principal) = self.principal_of(&session).await?
        {
            return Ok(principal);
        }
        match form::basic_credentials(request.headers()) {
            Some((user, password)) => {
                self.check_password(client_of(request), &user, password)
                    .await
            }
            None => Err(reply::unauthorized(
                "Authentication required",
                BASIC_CHALLENGE,
            )),
        }
    }
}
