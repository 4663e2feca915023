//! SIP (RFC 3261) at the front door: telephony is redirected, never proxied.
//!
//! Routing rule 1 (DESIGN.md): an `INVITE` for a user is answered `302 Moved Temporarily` with
//! a `Contact` naming the voice-mail endpoint of the mailbox server that hosts the active copy
//! of the user's database, because the phone or PBX must set up its SIP and RTP sessions with
//! that server directly. mailfront acts as a *stateless* redirect server (RFC 3261 §8.2.7): it
//! keeps no transaction or dialog, so any node of an array can answer any request, and a
//! retransmitted request gets the same answer (the To tag is a keyed hash of the request).
//!
//! This module is the sans-I/O half, in the order a request meets it:
//!
//! - [`framer::StreamFramer`] cuts a TCP or TLS stream into messages (a UDP datagram is one
//!   message as it is);
//! - [`read_request`] parses one message within [`SipLimits`] and checks what every request must
//!   have (RFC 3261 §8.1.1), giving a [`Request`], a reply for a request too broken to serve,
//!   or nothing to answer;
//! - [`Request::step`] says what the request needs: nothing (ACK), a reply now (OPTIONS,
//!   405, 481, 416, 404), or a directory lookup of a [`Target`] first;
//! - [`answer`] renders the response bytes for a request and a [`Reply`].
//!
//! The driver (`mailfront_proxy::sip`) owns the sockets, asks the directory, the locator and
//! `route()`, and turns the decision into a [`Reply`].
//!
//! # Replies
//!
//! | request | reply |
//! |---|---|
//! | INVITE for a user with voice mail | `302 Moved Temporarily`, `Contact: <server's sip URI>` |
//! | INVITE for an unknown user, or one without voice mail (SIP not in their protocols) | `404 Not Found` (the same bytes) |
//! | INVITE whose Request-URI names no user | `404 Not Found` |
//! | INVITE with a To tag (re-INVITE: mailfront never makes a dialog) | `481 Call/Transaction Does Not Exist` |
//! | directory, location store or the active server's SIP endpoint unavailable | `503 Service Unavailable`, `Retry-After` |
//! | OPTIONS | `200 OK`, `Allow`, `Accept: application/sdp` |
//! | ACK | nothing (the ACK of a 3xx, RFC 3261 §17.1.1.3, or any other) |
//! | CANCEL | `481` (RFC 3261 §9.2: no matching transaction; a stateless server keeps none) |
//! | BYE | `481` (§15.1.2: no dialog) |
//! | any other method (REGISTER, SUBSCRIBE, MESSAGE, …) | `405 Method Not Allowed`, `Allow` |
//! | a Request-URI scheme other than sip, sips, tel | `416 Unsupported URI Scheme` |
//! | missing or malformed mandatory header, bad Request-URI, CSeq method mismatch, body shorter than Content-Length | `400 Bad Request (<what>)` |
//! | a version other than SIP/2.0 | `505 Version Not Supported` |
//! | a TCP message over `max_message_size` | `513 Message Too Large`, then the connection closes |
//! | not SIP, a response, a UDP datagram over `max_message_size`, a broken ACK | nothing |
//!
//! Every response copies all Via values in order (the top one with `received`/`rport`,
//! §18.2.1 and RFC 3581), From, To (with a tag added if it had none), Call-ID and CSeq, and
//! ends with `Content-Length: 0`.

pub mod framer;
pub mod message;
pub mod response;
pub mod uri;
pub mod via;

use std::net::SocketAddr;

pub use framer::{Frame, FramingError, StreamFramer};
pub use message::{Defect, Message, SipLimits, Unparseable};
pub use response::{ALLOW, Echo, Reply, contact_uri, render};
pub use uri::{RequestUri, Scheme, Target};

/// A request that has every header field RFC 3261 §8.1.1 requires of it (Max-Forwards is not
/// required: a redirect server forwards nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method (case-sensitive, RFC 3261 §7.1).
    pub method: String,
    /// The Request-URI as received.
    pub request_uri: String,
    /// The Request-URI, parsed.
    pub uri: RequestUri,
    /// The header fields its responses copy.
    pub echo: Echo,
    /// Whether the To field has a tag (the request belongs to a dialog, RFC 3261 §12.2).
    pub in_dialog: bool,
}

/// What one received message comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A request to serve.
    Request(Request),
    /// A request too broken to serve: answer with `reply` (400, 505), copying `echo`.
    Reject {
        /// The method, for the log.
        method: String,
        /// The reply.
        reply: Reply,
        /// The header fields to copy.
        echo: Echo,
    },
    /// Nothing to answer.
    Ignore(Ignored),
}

/// Why a message gets no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not a request: empty, not SIP, a response, over the size limit.
    Unparseable(Unparseable),
    /// A broken ACK: an ACK is never answered (RFC 3261 §17.1.1.3), whatever is wrong with it.
    BrokenAck,
}

/// What a request needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing: an ACK (for the 3xx mailfront sent, or any other) is absorbed.
    Absorb,
    /// Answer with this reply now.
    Reply(Reply),
    /// Find who this is (directory, then locator and `route()`), then answer.
    Lookup(Target),
}

/// The single-valued header fields every request must have, in the order they are checked.
const REQUIRED: [&str; 4] = ["Call-ID", "CSeq", "From", "To"];

/// Parses and checks one message (a UDP datagram or a frame from [`StreamFramer`]).
pub fn read_request(bytes: &[u8], limits: &SipLimits) -> Received {
    let message = match message::parse(bytes, limits) {
        Ok(message) => message,
        Err(why) => return Received::Ignore(Ignored::Unparseable(why)),
    };
    let echo = Echo::from_headers(&message.headers);
    let reject = |reply: Reply| {
        if message.method == "ACK" {
            Received::Ignore(Ignored::BrokenAck)
        } else {
            Received::Reject {
                method: message.method.clone(),
                reply,
                echo: echo.clone(),
            }
        }
    };
    if let Some(defect) = check(&message) {
        return reject(Reply::BadRequest(defect));
    }
    if !message.version.eq_ignore_ascii_case("SIP/2.0") {
        return reject(Reply::VersionNotSupported);
    }
    let Ok(uri) = uri::parse_request_uri(&message.request_uri) else {
        return reject(Reply::BadRequest(Defect::MalformedRequestUri));
    };
    let in_dialog = echo.to.as_deref().and_then(response::tag_of).is_some();
    Received::Request(Request {
        method: message.method,
        request_uri: message.request_uri,
        uri,
        echo,
        in_dialog,
    })
}

/// The first thing wrong with a message as a request.
fn check(message: &Message) -> Option<Defect> {
    if let Some(defect) = message.defect {
        return Some(defect);
    }
    let vias: Vec<&str> = message.headers_named("Via").collect();
    let Some(top) = vias.first() else {
        return Some(Defect::MissingHeader("Via"));
    };
    if via::Via::parse(via::first_value(top).0).is_none() {
        return Some(Defect::MalformedHeader("Via"));
    }
    for name in REQUIRED {
        let mut values = message.headers_named(name);
        match (values.next(), values.next()) {
            (None, _) | (Some(""), _) => return Some(Defect::MissingHeader(name)),
            (Some(_), Some(_)) => return Some(Defect::DuplicateHeader(name)),
            (Some(_), None) => {}
        }
    }
    // CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16), the number below 2**31 (§8.1.1.5), the
    // method the request's own.
    let cseq = message.header("CSeq").unwrap_or_default();
    let mut words = cseq.split_whitespace();
    let (Some(number), Some(method), None) = (words.next(), words.next(), words.next()) else {
        return Some(Defect::MalformedHeader("CSeq"));
    };
    let number_ok = number.len() <= 10
        && number.bytes().all(|b| b.is_ascii_digit())
        && number.parse::<u64>().is_ok_and(|n| n < 1 << 31);
    if !number_ok {
        return Some(Defect::MalformedHeader("CSeq"));
    }
    if method != message.method {
        return Some(Defect::CSeqMismatch);
    }
    None
}

impl Request {
    /// What the request needs (the table in the module documentation, checked in the order of
    /// RFC 3261 §8.2: method, then Request-URI, then dialog).
    pub fn step(&self) -> Step {
        match self.method.as_str() {
            "ACK" => Step::Absorb,
            "INVITE" => {
                if !self.uri.is_supported() {
                    Step::Reply(Reply::UnsupportedUriScheme)
                } else if self.in_dialog {
                    Step::Reply(Reply::NoTransaction)
                } else {
                    match self.uri.target() {
                        Some(target) => Step::Lookup(target),
                        None => Step::Reply(Reply::NotFound),
                    }
                }
            }
            "OPTIONS" if !self.uri.is_supported() => Step::Reply(Reply::UnsupportedUriScheme),
            "OPTIONS" => Step::Reply(Reply::Options),
            "CANCEL" | "BYE" => Step::Reply(Reply::NoTransaction),
            _ => Step::Reply(Reply::MethodNotAllowed),
        }
    }
}

/// The response to `request`: see [`render`].
pub fn answer(request: &Request, reply: &Reply, source: SocketAddr, tag: &str) -> Vec<u8> {
    render(reply, &request.echo, source, tag)
}

#[cfg(test)]
mod tests;
