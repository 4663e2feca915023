//! Responses mailfront writes itself: text, documents, redirects, "try again later".

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The response body type: generated bodies and streamed backend bodies alike.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A response with `body` of `content_type`.
pub(crate) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// A plain-text response (one line).
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

/// A redirect to `location`.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = text(status, &format!("See {location}"));
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `503` with `Retry-After`: something mailfront depends on cannot answer now.
pub(crate) fn unavailable(why: &str) -> Response<Body> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, why);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    response
}

/// `401` with a challenge for the given scheme (`Basic realm=…`, `Bearer realm=…`).
pub(crate) fn unauthorized(body: &str, challenge: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, body);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The Basic challenge mailfront sends.
pub(crate) const BASIC_CHALLENGE: &str = "Basic realm=\"mailfront\", charset=\"UTF-8\"";

/// The text of a `503` when the directory cannot answer.
pub(crate) const DIRECTORY_UNAVAILABLE: &str = "Directory temporarily unavailable, try again later";
