//! mailfront's own pages: the forms login and logout, bearer tokens, autoconfiguration and
//! autodiscover documents, the mobile configuration profile and the address book.

use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use mailfront_model::{Principal, Protocol};
use subtle::ConstantTimeEq;

use crate::HttpFrontDoor;
use crate::address_book;
use crate::auth::client_of;
use crate::autodiscover;
use crate::cookie::{Purpose, Session};
use crate::form;
use crate::login;
use crate::reply::{self, Body, full, redirect, text, unavailable};
use crate::service::host_of;

/// The CSRF cookie of the login form (double-submit: the form carries the same value).
pub(crate) const CSRF_COOKIE: &str = "mailfront_csrf";
/// Largest request body mailfront reads itself (login forms, autodiscover requests).
const MAX_OWN_BODY: usize = 16 * 1024;

/// A page's response and the user it was for, if known.
type Page = (Response<Body>, Option<String>);

impl HttpFrontDoor {
    fn session_cookie(&self, session: &Session) -> String {
        format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            self.config.cookie_name,
            self.keys.load().seal(session, Purpose::Session),
            self.config.session_lifetime.as_secs()
        )
    }

    /// Reads a body mailfront answers itself: bounded in size and in time, UTF-8.
    async fn read_body(
        &self,
        request: Request<Incoming>,
    ) -> Result<(http::request::Parts, String), Response<Body>> {
        let (parts, body) = request.into_parts();
        let collected = tokio::time::timeout(
            self.config.body_timeout,
            Limited::new(body, MAX_OWN_BODY).collect(),
        )
        .await;
        match collected {
            Ok(Ok(collected)) => match String::from_utf8(collected.to_bytes().to_vec()) {
                Ok(text) => Ok((parts, text)),
                Err(_) => Err(text(
                    StatusCode::BAD_REQUEST,
                    "The request body is not UTF-8",
                )),
            },
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            )),
            Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "Malformed request body")),
            Err(_) => {
                let mut response = text(StatusCode::REQUEST_TIMEOUT, "Request body too slow");
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Err(response)
            }
        }
    }

    fn login_page(
        &self,
        status: StatusCode,
        return_to: &str,
        error: Option<&str>,
    ) -> Response<Body> {
        let mut token = [0u8; 24];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut token[..]);
        let csrf = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token);
        let mut response = full(
            status,
            "text/html; charset=utf-8",
            login::page(&self.node_name, return_to, &csrf, error),
        );
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; Secure; SameSite=Strict"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        headers.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
        response
    }

    pub(crate) async fn login(&self, request: Request<Incoming>) -> Page {
        let return_to = form::safe_return(
            request
                .uri()
                .query()
                .and_then(|q| form::field(q, "return"))
                .as_deref(),
        );
        match *request.method() {
            Method::GET | Method::HEAD => {
                return (self.login_page(StatusCode::OK, &return_to, None), None);
            }
            Method::POST => {}
            _ => {
                return (
                    text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
                    None,
                );
            }
        }
        let client = client_of(&request);
        let (parts, body) = match self.read_body(request).await {
            Ok(read) => read,
            Err(response) => return (response, None),
        };
        let return_to = form::safe_return(form::field(&body, "return").as_deref());
        // Login CSRF: the form's token must equal the cookie set with the form.
        let cookie = form::cookie(&parts.headers, CSRF_COOKIE).unwrap_or_default();
        let field = form::field(&body, "csrf").unwrap_or_default();
        if cookie.is_empty() || !bool::from(cookie.as_bytes().ct_eq(field.as_bytes())) {
            return (
                self.login_page(
                    StatusCode::FORBIDDEN,
                    &return_to,
                    Some("The form expired. Please sign in again."),
                ),
                None,
            );
        }
        let user = form::field(&body, "user").unwrap_or_default();
        let password = form::field(&body, "password")
            .unwrap_or_default()
            .into_bytes();
        if user.is_empty() || user.chars().any(char::is_control) {
            return (
                self.login_page(
                    StatusCode::UNAUTHORIZED,
                    &return_to,
                    Some("The e-mail address or password is incorrect."),
                ),
                None,
            );
        }
        let checked = self.check_password(client, &user, password).await;
        self.login_answer(checked, &return_to)
    }

    /// The answer to a login form whose credentials were checked: the session cookie and a
    /// redirect back, or the form again with what went wrong.
    fn login_answer(&self, checked: Result<Principal, Response<Body>>, return_to: &str) -> Page {
        const WRONG: &str = "The e-mail address or password is incorrect.";
        match checked {
            Ok(principal) if principal.allows(Protocol::Http) => {
                let session = Session::new(
                    &principal.address,
                    SystemTime::now(),
                    self.config.session_lifetime,
                );
                let mut response = redirect(StatusCode::SEE_OTHER, return_to);
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&self.session_cookie(&session)) {
                    headers.append(header::SET_COOKIE, value);
                }
                headers.append(header::SET_COOKIE, HeaderValue::from_static("mailfront_csrf=; Path=/login; Max-Age=0; HttpOnly; Secure; SameSite=Strict"));
                (response, Some(principal.address))
            }
            Ok(principal) => (
                self.login_page(
                    StatusCode::FORBIDDEN,
                    return_to,
                    Some("Web access is not enabled for this account."),
                ),
                Some(principal.address),
            ),
            Err(response) if response.status() == StatusCode::UNAUTHORIZED => (
                self.login_page(StatusCode::UNAUTHORIZED, return_to, Some(WRONG)),
                None,
            ),
            Err(response) => (response, None),
        }
    }

    pub(crate) fn logout(&self) -> Page {
        let mut response = redirect(StatusCode::SEE_OTHER, "/login");
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
            self.config.cookie_name
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        (response, None)
    }

    /// `POST /auth/token` with Basic credentials: a bearer token for API clients.
    pub(crate) async fn token(&self, request: Request<Incoming>) -> Page {
        if request.method() != Method::POST {
            return (text(StatusCode::METHOD_NOT_ALLOWED, "Use POST"), None);
        }
        let Some((user, password)) = form::basic_credentials(request.headers()) else {
            let response =
                reply::unauthorized("Authentication required", "Basic realm=\"mailfront\"");
            return (response, None);
        };
        match self
            .check_password(client_of(&request), &user, password)
            .await
        {
            Ok(principal) => {
                let session = Session::new(
                    &principal.address,
                    SystemTime::now(),
                    self.config.session_lifetime,
                );
                let token = self.keys.load().seal(&session, Purpose::Bearer);
                let body = serde_json::json!({ "token_type": "Bearer", "access_token": token, "expires_in": self.config.session_lifetime.as_secs() });
                (
                    full(StatusCode::OK, "application/json", body.to_string()),
                    Some(principal.address),
                )
            }
            Err(response) => (response, None),
        }
    }

    pub(crate) fn autoconfig(&self, request: &Request<Incoming>) -> Page {
        let Some(config) = &self.config.autodiscover else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        let address = request
            .uri()
            .query()
            .and_then(|q| form::field(q, "emailaddress"));
        let domain = match address.as_deref().and_then(autodiscover::plain_address) {
            Some((_, domain)) => domain.to_owned(),
            // Thunderbird may ask by domain only: the Host names it.
            None => config.domains.first().cloned().unwrap_or_default(),
        };
        if !config.serves(&domain) {
            return (
                text(StatusCode::NOT_FOUND, "Not a domain served here"),
                None,
            );
        }
        (
            full(
                StatusCode::OK,
                "application/xml; charset=utf-8",
                autodiscover::thunderbird(config, &domain, self.oauth_announcement().as_ref()),
            ),
            None,
        )
    }

    /// OAuth 2.0 as Thunderbird's autoconfig announces it: with `[oauth]`, once the provider's
    /// endpoints are known.
    fn oauth_announcement(&self) -> Option<autodiscover::OAuthAnnouncement> {
        let provider = self.resolver.oauth_provider()?;
        Some(autodiscover::OAuthAnnouncement {
            issuer: provider.issuer,
            scope: provider.scopes.join(" "),
            auth_url: provider.authorization_endpoint?,
            token_url: provider.token_endpoint?,
        })
    }

    pub(crate) async fn pox(&self, request: Request<Incoming>) -> Page {
        let Some(config) = self.config.autodiscover.clone() else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        if request.method() != Method::POST {
            return (text(StatusCode::METHOD_NOT_ALLOWED, "Use POST"), None);
        }
        let (_, body) = match self.read_body(request).await {
            Ok(read) => read,
            Err(response) => return (response, None),
        };
        let Some(address) = autodiscover::pox_request_address(&body) else {
            return (
                full(
                    StatusCode::OK,
                    "text/xml; charset=utf-8",
                    autodiscover::outlook_error(600, "Invalid Request"),
                ),
                None,
            );
        };
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if !config.serves(domain) {
            return (
                full(
                    StatusCode::OK,
                    "text/xml; charset=utf-8",
                    autodiscover::outlook_error(500, "The e-mail address cannot be found."),
                ),
                None,
            );
        }
        (
            full(
                StatusCode::OK,
                "text/xml; charset=utf-8",
                autodiscover::outlook(&config, &address, None),
            ),
            None,
        )
    }

    pub(crate) fn autodiscover_json(&self, request: &Request<Incoming>) -> Page {
        if self.config.autodiscover.is_none() {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        }
        let query = request.uri().query().unwrap_or("");
        let protocol = form::field(query, "Protocol").unwrap_or_default();
        let host = host_of(request);
        match autodiscover::json(&protocol, &format!("https://{host}")) {
            Ok(body) => (full(StatusCode::OK, "application/json", body), None),
            Err(body) => (
                full(StatusCode::BAD_REQUEST, "application/json", body),
                None,
            ),
        }
    }

    pub(crate) async fn mobileconfig(&self, request: Request<Incoming>) -> Page {
        let Some(config) = self.config.autodiscover.clone() else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        let principal = match self.own_page_user(&request).await {
            Ok(p) => p,
            Err(response) => return (response, None),
        };
        let name = principal
            .display_name
            .clone()
            .unwrap_or_else(|| principal.address.clone());
        match autodiscover::mobileconfig(
            &config,
            &principal.address,
            &name,
            [autodiscover::uuid_v4(), autodiscover::uuid_v4()],
        ) {
            Some(profile) => {
                let mut response =
                    full(StatusCode::OK, "application/x-apple-aspen-config", profile);
                response.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""),
                );
                (response, Some(principal.address))
            }
            None => (
                text(
                    StatusCode::NOT_FOUND,
                    "No incoming or outgoing server is configured",
                ),
                Some(principal.address),
            ),
        }
    }

    pub(crate) async fn address_book(&self, request: Request<Incoming>) -> Page {
        if !self.config.address_book {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        }
        let principal = match self.own_page_user(&request).await {
            Ok(p) => p,
            Err(response) => return (response, None),
        };
        match self.resolver.list(&principal.tenant).await {
            Ok(users) => {
                // Only the user's own tenant, whatever the backend returned.
                let users: Vec<Principal> = users
                    .into_iter()
                    .filter(|u| u.tenant == principal.tenant)
                    .collect();
                let mut response = full(
                    StatusCode::OK,
                    "text/vcard; charset=utf-8",
                    address_book::vcards(&users),
                );
                response.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"address-book.vcf\""),
                );
                (response, Some(principal.address))
            }
            _ => (
                unavailable("The address book is temporarily unavailable"),
                Some(principal.address),
            ),
        }
    }
}
