//! The top `Via` (RFC 3261 §18.2, §20.42) and where a response goes (RFC 3581 `rport`).

use std::net::{IpAddr, SocketAddr};

use crate::quoted::split_unquoted;

/// The default SIP port over UDP and TCP (RFC 3261 §19.1.2).
pub const DEFAULT_PORT: u16 = 5060;

/// One Via value: `SIP/2.0/UDP host:port;param;param=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// The sent-protocol and sent-by, as received (`SIP/2.0/UDP 192.0.2.7:5071`).
    pub head: &'a str,
    /// The sent-by host, without IPv6 brackets.
    pub host: &'a str,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// The parameters, in order: each name and its value if it has one.
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Via<'a> {
    /// Parses one Via value (not a comma-separated list: see [`first_value`]).
    pub fn parse(value: &'a str) -> Option<Via<'a>> {
        let mut pieces = split_unquoted(value, ';').into_iter();
        let head = pieces.next()?.trim();
        // sent-protocol LWS sent-by; the protocol may itself contain LWS around its slashes.
        let (protocol, sent_by) = head.rsplit_once([' ', '\t'])?;
        let protocol: String = protocol.chars().filter(|c| !c.is_whitespace()).collect();
        let mut parts = protocol.split('/');
        let name_ok = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("SIP"));
        let (Some(_version), Some(transport), None) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !name_ok || !super::message::is_token(transport) {
            return None;
        }
        let (host, port) = if let Some(rest) = sent_by.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            (host, after)
        } else {
            match sent_by.split_once(':') {
                Some((host, _)) => (host, sent_by.get(host.len()..).unwrap_or_default()),
                None => (sent_by, ""),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let port = match port {
            "" => None,
            port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        let mut params = Vec::new();
        for piece in pieces {
            let piece = piece.trim();
            if piece.is_empty() {
                return None;
            }
            match piece.split_once('=') {
                Some((name, value)) => params.push((name.trim(), Some(value.trim()))),
                None => params.push((piece, None)),
            }
        }
        Some(Via {
            head,
            host,
            port,
            params,
        })
    }

    /// A parameter's presence and value (`Some(None)`: present without a value).
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether the client asked for `rport` (RFC 3581 §4).
    pub fn wants_rport(&self) -> bool {
        self.param("rport").is_some()
    }

    /// The value as it goes back in a response from `source` (RFC 3261 §18.2.1): a `received`
    /// parameter when the sent-by host is not the source address (a name, or another address),
    /// and with RFC 3581 `rport`, the source port in `rport` and `received` always.
    pub fn stamped(&self, source: SocketAddr) -> String {
        let ip = canonical(source.ip());
        let same_host = self
            .host
            .parse::<IpAddr>()
            .is_ok_and(|h| canonical(h) == ip);
        let rport = self.wants_rport();
        let add_received = rport || !same_host;
        if !add_received {
            return self.rebuild(None, None);
        }
        self.rebuild(Some(ip), rport.then_some(source.port()))
    }

    fn rebuild(&self, received: Option<IpAddr>, rport: Option<u16>) -> String {
        let mut out = self.head.to_owned();
        let mut wrote_received = false;
        for (name, value) in &self.params {
            out.push(';');
            if name.eq_ignore_ascii_case("rport")
                && let Some(port) = rport
            {
                out.push_str(&format!("rport={port}"));
            } else if name.eq_ignore_ascii_case("received")
                && let Some(ip) = received
            {
                out.push_str(&format!("received={ip}"));
                wrote_received = true;
            } else {
                out.push_str(name);
                if let Some(value) = value {
                    out.push('=');
                    out.push_str(value);
                }
            }
        }
        if let Some(ip) = received
            && !wrote_received
        {
            out.push_str(&format!(";received={ip}"));
        }
        out
    }

    /// Where a response to a request received over UDP from `source` goes (RFC 3261 §18.2.2
    /// with RFC 3581 §4): the source address always (it is the `received` address, or equal to
    /// the sent-by address); the source port if the client asked for `rport`, otherwise the
    /// sent-by port (5060 if none).
    pub fn udp_destination(&self, source: SocketAddr) -> SocketAddr {
        let port = if self.wants_rport() {
            source.port()
        } else {
            self.port.unwrap_or(DEFAULT_PORT)
        };
        SocketAddr::new(source.ip(), port)
    }
}

/// An IPv4 address seen as a v4-mapped IPv6 address on a dual-stack socket is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first value of a Via header line that may hold several, separated by commas
/// (RFC 3261 §7.3.1), and the rest of the line from its comma on (empty if none).
pub fn first_value(line: &str) -> (&str, &str) {
    let first = split_unquoted(line, ',')
        .into_iter()
        .next()
        .unwrap_or_default();
    (first, line.get(first.len()..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_a_via() {
        let via = Via::parse("SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1;rport").unwrap();
        assert_eq!(via.head, "SIP/2.0/UDP 192.0.2.7:5071");
        assert_eq!(via.host, "192.0.2.7");
        assert_eq!(via.port, Some(5071));
        assert_eq!(via.param("BRANCH"), Some(Some("z9hG4bK-1")));
        assert!(via.wants_rport());
        let v6 = Via::parse("SIP / 2.0 / TCP [2001:db8::1];branch=x").unwrap();
        assert_eq!(v6.host, "2001:db8::1");
        assert_eq!(v6.port, None);
        for bad in [
            "",
            "SIP/2.0/UDP",
            "HTTP/1.1/TCP h",
            "SIP/2.0 h",
            "SIP/2.0/UDP h:x",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h;;branch=1",
        ] {
            assert_eq!(Via::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn received_and_rport() {
        let source = addr("192.0.2.7:40000");
        // Same address, no rport: unchanged.
        let via = Via::parse("SIP/2.0/UDP 192.0.2.7:5071;branch=b").unwrap();
        assert_eq!(via.stamped(source), "SIP/2.0/UDP 192.0.2.7:5071;branch=b");
        assert_eq!(via.udp_destination(source), addr("192.0.2.7:5071"));
        // A name: received added; the response goes to the sent-by port at the source address.
        let via = Via::parse("SIP/2.0/UDP phone.example.com;branch=b").unwrap();
        assert_eq!(
            via.stamped(source),
            "SIP/2.0/UDP phone.example.com;branch=b;received=192.0.2.7"
        );
        assert_eq!(via.udp_destination(source), addr("192.0.2.7:5060"));
        // rport: filled in, received always, and the response goes to the source port.
        let via = Via::parse("SIP/2.0/UDP 192.0.2.7:5071;rport;branch=b").unwrap();
        assert_eq!(
            via.stamped(source),
            "SIP/2.0/UDP 192.0.2.7:5071;rport=40000;branch=b;received=192.0.2.7"
        );
        assert_eq!(via.udp_destination(source), source);
        // A received the client put there itself is replaced.
        let via = Via::parse("SIP/2.0/UDP 10.0.0.1;received=10.9.9.9").unwrap();
        assert_eq!(
            via.stamped(source),
            "SIP/2.0/UDP 10.0.0.1;received=192.0.2.7"
        );
        // A v4-mapped source is its IPv4 address.
        let via = Via::parse("SIP/2.0/UDP 127.0.0.1:5071").unwrap();
        assert_eq!(
            via.stamped(addr("[::ffff:127.0.0.1]:5071")),
            "SIP/2.0/UDP 127.0.0.1:5071"
        );
    }

    #[test]
    fn first_value_respects_quotes() {
        assert_eq!(
            first_value("SIP/2.0/UDP a;x=\"1,2\", SIP/2.0/UDP b"),
            ("SIP/2.0/UDP a;x=\"1,2\"", ", SIP/2.0/UDP b")
        );
        assert_eq!(first_value("SIP/2.0/UDP a"), ("SIP/2.0/UDP a", ""));
    }
}
