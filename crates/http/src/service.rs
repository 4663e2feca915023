//! A request for a service (a configured path prefix): authenticate, resolve the mailbox it acts
//! on, then forward, redirect or refuse.

use std::net::SocketAddr;

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mailfront_model::Protocol;
use mailfront_resolve::Mailbox;
use mailfront_routing::{Decision, HttpRequest, Reason, RejectKind, Request as RouteRequest};

use crate::HttpFrontDoor;
use crate::auth::Identity;
use crate::config::ServiceConfig;
use crate::form;
use crate::forward::Binding;
use crate::front::Handled;
use crate::reply::{self, Body};

/// The text of a `403` for a user without web access.
const WEB_DISABLED: &str = "Web access is not enabled for this account";

/// The text of a `503` when the request cannot be routed now.
const TRY_LATER: &str = "Service temporarily unavailable, try again later";

impl HttpFrontDoor {
    /// The service whose path prefix is the longest that `path` starts with.
    fn service_for(&self, path: &str) -> Option<&ServiceConfig> {
        self.config
            .service
            .iter()
            .filter(|s| path.starts_with(&s.path) || path == s.path.trim_end_matches('/'))
            .max_by_key(|s| s.path.len())
    }

    /// The URL the client used, for the routing rules (`https://host/path`).
    fn requested_url<B>(request: &Request<B>) -> String {
        format!("https://{}{}", host_of(request), request.uri().path())
    }

    /// Serves a request under a service's path.
    pub(crate) async fn route_service(
        &self,
        path: &str,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<'_> {
        let Some(service) = self.service_for(path) else {
            return Handled::page(reply::text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        let named = |response| Handled {
            response,
            user: None,
            service: Some(service.name.as_str()),
            backend: None,
        };
        if path == service.path.trim_end_matches('/') {
            return named(reply::redirect(
                StatusCode::MOVED_PERMANENTLY,
                &service.path,
            ));
        }
        if path
            .strip_prefix(&service.path)
            .is_some_and(|rest| rest.eq_ignore_ascii_case("healthcheck.htm"))
        {
            return named(self.health());
        }
        let mut handled = self.serve_service(service, request, peer).await;
        handled.service = Some(service.name.as_str());
        handled
    }

    /// A service's health page for the load balancer.
    fn health(&self) -> Response<Body> {
        if self.state.is_draining() {
            return reply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is in maintenance", self.node_name),
            );
        }
        // Without a location map no login can be routed: not ready (as the admin /health says).
        if !self.resolver.has_location_map() {
            return reply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} has no location map yet", self.node_name),
            );
        }
        reply::text(StatusCode::OK, &self.node_name)
    }

    /// Authenticates, resolves the mailbox the request acts on (the caller's own, an anchor it
    /// names, or none), and carries out the decision.
    async fn serve_service(
        &self,
        service: &ServiceConfig,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<'_> {
        let identity = match self.authenticate(service, &request).await {
            Ok(identity) => identity,
            Err(response) => return Handled::page(response, None),
        };
        let anchor = match &identity {
            Identity::User(_) => anchor_of(service, &request),
            Identity::Anonymous => None,
        };
        let (mailbox, user) = match &identity {
            Identity::Anonymous => (Mailbox::Anyone, None),
            Identity::User(principal) if !principal.allows(Protocol::Http) => {
                let response = reply::text(StatusCode::FORBIDDEN, WEB_DISABLED);
                return Handled::page(response, Some(principal.address.clone()));
            }
            Identity::User(principal) => {
                let mailbox = match &anchor {
                    Some(anchor) => Mailbox::Anchor(anchor),
                    None => Mailbox::User(principal),
                };
                (mailbox, Some(principal.address.clone()))
            }
        };
        let requested_url = Self::requested_url(&request);
        let route_request = RouteRequest {
            protocol: Protocol::Http,
            http: Some(HttpRequest {
                service: &service.name,
                browser_app: service.browser_app,
                requested_url: &requested_url,
                legacy_url: service.legacy_url.as_deref(),
            }),
        };
        let resolved = self.resolver.resolve(mailbox, &route_request).await;
        if let Some(why) = &resolved.directory_error {
            tracing::info!(reason = %why, "anchor mailbox lookup failed");
            return Handled::page(reply::unavailable(reply::DIRECTORY_UNAVAILABLE), user);
        }
        let base = resolved.server().and_then(|s| s.endpoints.http.clone());
        let response = match resolved.decision {
            Decision::Redirect { location, reason } => {
                tracing::debug!(%reason, "redirected");
                reply::redirect(StatusCode::FOUND, &location)
            }
            Decision::Reject { kind, reason } => {
                tracing::info!(%reason, "refused");
                refused(kind, &reason)
            }
            Decision::Proxy { server, reason } => {
                // A mailbox's requests follow its database; an anonymous one follows nothing.
                let binding = match reason {
                    Reason::ActiveCopy { database, .. } => Some(Binding {
                        database,
                        server: server.clone(),
                        changes: self.resolver.location_changes(),
                    }),
                    _ => None,
                };
                let response = match base {
                    Some(base) => {
                        self.forward(service, request, &base, user.as_deref(), peer, binding)
                            .await
                    }
                    None => reply::unavailable(TRY_LATER),
                };
                return Handled {
                    response,
                    user,
                    service: None,
                    backend: Some(server.to_string()),
                };
            }
        };
        Handled::page(response, user)
    }
}

/// The HTTP answer to a refusal of the resolve step (the one place where refusals become HTTP
/// statuses).
fn refused(kind: RejectKind, reason: &Reason) -> Response<Body> {
    match (kind, reason) {
        (_, Reason::NoServer(_)) => reply::unavailable("No server offers this service"),
        (_, Reason::UnknownAnchor(_)) => reply::text(
            StatusCode::NOT_FOUND,
            "The mailbox this request acts on does not exist",
        ),
        (RejectKind::AuthFailed | RejectKind::AuthzidRefused, _) => {
            reply::text(StatusCode::UNAUTHORIZED, "Authentication failed")
        }
        (RejectKind::ProtocolDisabled, _) => reply::text(StatusCode::FORBIDDEN, WEB_DISABLED),
        (RejectKind::Temporary, _) => reply::unavailable(TRY_LATER),
    }
}

/// The mailbox a request names besides the caller's (the anchor mailbox): the
/// `X-AnchorMailbox` header, the service's anchor query parameter, MAPI's `MailboxId`, or (with
/// `anchor_path`) the address in the path. As sent; the resolve step reads it
/// ([`Mailbox::Anchor`]). Also what `mailfront route` explains.
pub fn anchor_of<B>(service: &ServiceConfig, request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get("x-anchormailbox")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let parameter = service.anchor_query.as_deref()?;
            form::field(request.uri().query()?, parameter)
        })
        // MAPI over HTTP names the mailbox as `MailboxId=<guid>@<tenant>`.
        .or_else(|| form::field(request.uri().query()?, "MailboxId"))
        .or_else(|| {
            service
                .anchor_path
                .then(|| path_anchor(&service.path, request.uri().path()))
                .flatten()
        })
}

/// The address a DAV-style path names right after the service's `prefix`
/// (`/dav/bob%40example.com/calendar/` → `bob@example.com`); `None` when the first segment is
/// not an address (the root, `.well-known`, a principal path without one).
fn path_anchor(prefix: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    let segment = rest.split('/').next()?;
    // A path is not a form: `+` is itself (user+tag@example.com), not a space.
    let decoded = form::decode_component(&segment.replace('+', "%2B"))?;
    (decoded.contains('@') && !decoded.chars().any(char::is_control)).then_some(decoded)
}

/// The host the client asked for: the URI's authority, else the `Host` header.
pub(crate) fn host_of<B>(request: &Request<B>) -> String {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::path_anchor;

    #[test]
    fn a_dav_path_names_the_mailbox_after_the_service_prefix() {
        for (path, anchor) in [
            ("/dav/bob@example.com/calendar/", Some("bob@example.com")),
            ("/dav/bob%40example.com/", Some("bob@example.com")),
            ("/dav/bob+tag@example.com/x", Some("bob+tag@example.com")),
            ("/dav/bob@example.com", Some("bob@example.com")),
            ("/dav/", None),
            ("/dav/.well-known/caldav", None),
            ("/dav/principals/x/", None),
            ("/other/bob@example.com/", None),
            ("/dav/bob%0a@example.com/", None),
            ("/dav/%ff@example.com/", None),
        ] {
            assert_eq!(path_anchor("/dav/", path).as_deref(), anchor, "{path}");
        }
    }
}
