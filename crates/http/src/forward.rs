//! Forwarding a request to the mailbox server's HTTP service: the path mapped into the
//! service's backend path, hop-by-hop and smuggling-prone headers dropped, identity asserted by
//! mailfront alone, and upgraded connections (WebSocket) tunnelled.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mailfront_model::{DatabaseName, ServerName};
use mailfront_resolve::LocationChanges;

use crate::HttpFrontDoor;
use crate::config::ServiceConfig;
use crate::form;
use crate::pages::CSRF_COOKIE;
use crate::reply::{self, Body};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes every header whose name has an underscore. CGI and WSGI servers turn `X_Remote_User`
/// and `X-Remote-User` into the same variable, so a client could smuggle a second copy of the
/// identity header (or of `X-Forwarded-For`) past a check that looks for the dashed name only.
/// nginx drops such headers by default for the same reason.
fn strip_underscored(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(&name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in named
        .iter()
        .map(String::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        if keep_upgrade && (name == "upgrade" || name == "connection") {
            continue;
        }
        headers.remove(name);
    }
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The backend URL of a request under `service`: its path below the service's prefix, mapped
/// into the backend's path for the service, on `base`, with the client's query.
fn backend_uri(service: &ServiceConfig, request: &Request<Incoming>, base: &str) -> Option<Uri> {
    let rest = request
        .uri()
        .path()
        .strip_prefix(&service.path)
        .unwrap_or("");
    let backend_path = format!("{}{}", service.backend_path, rest);
    let slash = if backend_path.starts_with('/') {
        ""
    } else {
        "/"
    };
    let target = format!("{}{slash}{backend_path}", base.trim_end_matches('/'));
    let target = match request.uri().query() {
        Some(query) => format!("{target}?{query}"),
        None => target,
    };
    target.parse().ok()
}

/// The database and server an upgraded connection is bound to, and the location map's changes:
/// when the database moves to another server, the tunnel is closed (as a proxied IMAP session
/// is), and the client's next request goes to the new server.
pub(crate) struct Binding {
    /// The database whose mailbox the request acts on.
    pub database: DatabaseName,
    /// The server it went to.
    pub server: ServerName,
    /// The location map's changes.
    pub changes: LocationChanges,
}

impl Binding {
    /// Completes when the database is active on another server.
    async fn moved_away(&mut self) {
        loop {
            let moved = self
                .changes
                .borrow_and_update()
                .as_ref()
                .and_then(|map| map.active(&self.database).cloned())
                .is_some_and(|active| active != self.server);
            if moved {
                return;
            }
            if self.changes.changed().await.is_err() {
                // No more maps: nothing will ever move it.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The client's response: hop-by-hop headers dropped; for a switch of protocols, the tunnel
/// between the two upgraded connections is started, closed if its database moves away.
fn relay_response(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    binding: Option<Binding>,
) -> Response<Body> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            let tunnel = tokio::io::copy_bidirectional(&mut client, &mut backend);
            match binding {
                Some(mut binding) => tokio::select! {
                    _ = tunnel => {}
                    () = binding.moved_away() => tracing::info!(
                        database = %binding.database,
                        from = %binding.server,
                        "failover: closing an upgraded connection on the previous server"
                    ),
                },
                None => {
                    let _ = tunnel.await;
                }
            }
        });
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, body.boxed());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // Our connection with the client has its own version (a backend may answer HTTP/1.0).
    parts.version = http::Version::default();
    Response::from_parts(parts, body.boxed())
}

impl HttpFrontDoor {
    /// Proxies the request to `base` (the server's HTTP base URL), with the identity header.
    pub(crate) async fn forward(
        &self,
        service: &ServiceConfig,
        mut request: Request<Incoming>,
        base: &str,
        user: Option<&str>,
        peer: SocketAddr,
        binding: Option<Binding>,
    ) -> Response<Body> {
        let Some(uri) = backend_uri(service, &request, base) else {
            return reply::text(StatusCode::BAD_REQUEST, "Bad request path");
        };
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        self.backend_headers(&mut parts.headers, service, upgrade, user, peer);
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let outgoing = Request::from_parts(parts, body.boxed());
        let sent =
            tokio::time::timeout(self.config.backend_timeout, self.client.request(outgoing)).await;
        match sent {
            Ok(Ok(response)) => relay_response(response, client_upgrade, binding),
            Ok(Err(error)) => {
                tracing::warn!(backend = %base, %error, "backend request failed");
                reply::unavailable("Mailbox server temporarily unavailable, try again later")
            }
            Err(_) => {
                tracing::warn!(backend = %base, "backend did not answer in time");
                reply::unavailable("Mailbox server did not answer in time, try again later")
            }
        }
    }

    /// The request's headers as the backend gets them: hop-by-hop and underscored headers
    /// gone, mailfront's own credentials and cookies gone, identity and forwarding headers set
    /// by mailfront alone.
    fn backend_headers(
        &self,
        headers: &mut HeaderMap,
        service: &ServiceConfig,
        upgrade: bool,
        user: Option<&str>,
        peer: SocketAddr,
    ) {
        let original_host = headers.get(header::HOST).cloned();
        strip_hop_by_hop(headers, upgrade);
        strip_underscored(headers);
        // Identity is ours to say: a client's own copy never reaches the backend, nor do the
        // credentials and cookies mailfront consumed.
        headers.remove(&self.identity_header);
        headers.remove(header::AUTHORIZATION);
        match form::cookie_without(headers, &[&self.config.cookie_name, CSRF_COOKIE]) {
            Some(cookies) => {
                if let Ok(value) = HeaderValue::from_str(&cookies) {
                    headers.insert(header::COOKIE, value);
                }
            }
            None => {
                headers.remove(header::COOKIE);
            }
        }
        if let Some(user) = user
            && let Ok(value) = HeaderValue::from_str(user)
        {
            headers.insert(self.identity_header.clone(), value);
        }
        if let Some(name) = &service.prefix_header
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(service.path.trim_end_matches('/')),
            )
        {
            headers.insert(name, value);
        }
        // A client's own X-Forwarded-For is a claim, not a fact: it is replaced by the address
        // mailfront saw.
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        if let Some(host) = original_host {
            headers.insert("x-forwarded-host", host);
        }
        headers.remove(header::HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn underscored_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert("x_remote_user", HeaderValue::from_static("intruder"));
        headers.insert("x_forwarded_for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-remote-user", HeaderValue::from_static("kept"));
        strip_underscored(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-remote-user"));
    }
}
