//! The HTTP probe: one `GET`, judged by its status line alone.

use super::{MAX_PROBE_LINE, ProbeEvent, excerpt};
use crate::conversation::{Conversation, Input, Peer};
use crate::line::LineReader;

/// The HTTP probe. See the [module documentation](super).
#[derive(Debug)]
pub struct HttpProbe {
    peer: Peer<ProbeEvent, LineReader>,
}

/// Whether `text` can go into a request line or a header as it is: visible ASCII only, so that
/// a configured path or host cannot end the line or add a header.
fn visible(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

impl HttpProbe {
    /// A probe that asks for `path` (absolute: `/…`) with `Host: authority` (`host` or
    /// `host:port`, as the server's URL writes it). The request is HTTP/1.1 with
    /// `Connection: close` (RFC 9112 §9.6): the probe reads the status line and hangs up. A path
    /// or authority that cannot be sent safely makes the probe unhealthy before it sends a
    /// byte.
    pub fn new(authority: &str, path: &str) -> Self {
        let mut peer = Peer::new(LineReader::new(MAX_PROBE_LINE), false);
        if !path.starts_with('/') || !visible(path) || !visible(authority) {
            peer.finish(ProbeEvent::Unhealthy(format!(
                "cannot send the probe's request for {:?} at {:?}",
                excerpt(path.as_bytes()),
                excerpt(authority.as_bytes())
            )));
        } else {
            peer.send(format!(
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mailfront-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            ));
        }
        Self { peer }
    }

    fn on_status_line(&mut self, line: &[u8]) {
        let verdict = match status(line) {
            Some(code) if (200..400).contains(&code) => ProbeEvent::Healthy,
            Some(_) => ProbeEvent::Unhealthy(format!("HTTP status: {}", excerpt(line))),
            None => ProbeEvent::Unhealthy(format!("not an HTTP response: {}", excerpt(line))),
        };
        self.peer.finish(verdict);
    }
}

/// The status code of an HTTP/1 status line (RFC 9112 §4: `HTTP/1.x SP 3DIGIT SP reason`; the
/// reason may be empty, and some servers leave out its space).
fn status(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ").filter(|_| minor.is_ascii_digit())?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Conversation for HttpProbe {
    type Event = ProbeEvent;

    fn advance(&mut self) -> bool {
        match self.peer.input.next_line() {
            Ok(None) => return false,
            Ok(Some(line)) => self.on_status_line(&line),
            Err(_) => self
                .peer
                .finish(ProbeEvent::Unhealthy("status line too long".into())),
        }
        true
    }

    fn peer(&mut self) -> &mut Peer<ProbeEvent, impl Input> {
        &mut self.peer
    }
}
