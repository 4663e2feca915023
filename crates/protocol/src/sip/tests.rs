//! Requests in, response bytes out: every case of the table in the module documentation,
//! byte for byte.

use super::*;

const TAG: &str = "5eed";

fn source() -> SocketAddr {
    "192.0.2.7:5071".parse().unwrap()
}

/// A request with the given method, Request-URI and extra header lines (after the usual five).
fn request(method: &str, uri: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1\r\n\
         Max-Forwards: 70\r\n\
         From: \"Carol\" <sip:carol@example.com>;tag=c1\r\n\
         To: <{uri}>\r\n\
         Call-ID: call-1@192.0.2.7\r\n\
         CSeq: 7 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn read(bytes: &[u8]) -> Request {
    match read_request(bytes, &SipLimits::default()) {
        Received::Request(request) => request,
        other => panic!("not a request: {other:?}"),
    }
}

/// The header lines every response to [`request`] copies, To tagged.
fn echoed(uri: &str, method: &str) -> String {
    format!(
        "Via: SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1\r\n\
         From: \"Carol\" <sip:carol@example.com>;tag=c1\r\n\
         To: <{uri}>;tag={TAG}\r\n\
         Call-ID: call-1@192.0.2.7\r\n\
         CSeq: 7 {method}\r\n"
    )
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn invite_by_extension_is_redirected() {
    let uri = "sip:4001@cas.example.com";
    let req = read(&request(
        "INVITE",
        uri,
        "Contact: <sip:carol@192.0.2.7:5071>\r\n",
    ));
    assert_eq!(req.step(), Step::Lookup(Target::Extension("4001".into())));
    let reply = Reply::Redirect {
        contact: "sip:4001@mbx1.example.com:5070".into(),
    };
    assert_eq!(
        text(answer(&req, &reply, source(), TAG)),
        format!(
            "SIP/2.0 302 Moved Temporarily\r\n{}\
             Contact: <sip:4001@mbx1.example.com:5070>\r\n\
             Content-Length: 0\r\n\r\n",
            echoed(uri, "INVITE")
        )
    );
}

#[test]
fn invite_by_address_asks_for_user_at_domain() {
    let req = read(&request("INVITE", "sip:Alice@Example.com", ""));
    assert_eq!(
        req.step(),
        Step::Lookup(Target::Address("Alice@example.com".into()))
    );
}

#[test]
fn not_found_and_unavailable() {
    let uri = "sip:4999@cas.example.com";
    let req = read(&request("INVITE", uri, ""));
    assert_eq!(
        text(answer(&req, &Reply::NotFound, source(), TAG)),
        format!(
            "SIP/2.0 404 Not Found\r\n{}Content-Length: 0\r\n\r\n",
            echoed(uri, "INVITE")
        )
    );
    assert_eq!(
        text(answer(
            &req,
            &Reply::ServiceUnavailable { retry_after: 30 },
            source(),
            TAG
        )),
        format!(
            "SIP/2.0 503 Service Unavailable\r\n{}Retry-After: 30\r\nContent-Length: 0\r\n\r\n",
            echoed(uri, "INVITE")
        )
    );
    // No user part: nobody to look up.
    let req = read(&request("INVITE", "sip:cas.example.com", ""));
    assert_eq!(req.step(), Step::Reply(Reply::NotFound));
}

#[test]
fn options_is_a_keep_alive() {
    let uri = "sip:cas.example.com";
    let req = read(&request("OPTIONS", uri, "Accept: application/sdp\r\n"));
    assert_eq!(req.step(), Step::Reply(Reply::Options));
    assert_eq!(
        text(answer(&req, &Reply::Options, source(), TAG)),
        format!(
            "SIP/2.0 200 OK\r\n{}Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
             Accept: application/sdp\r\nContent-Length: 0\r\n\r\n",
            echoed(uri, "OPTIONS")
        )
    );
}

#[test]
fn other_methods_are_not_allowed() {
    for method in [
        "REGISTER",
        "SUBSCRIBE",
        "MESSAGE",
        "INFO",
        "invite",
        "PUBLISH",
    ] {
        let uri = "sip:alice@example.com";
        let req = read(&request(method, uri, ""));
        assert_eq!(req.step(), Step::Reply(Reply::MethodNotAllowed), "{method}");
        assert_eq!(
            text(answer(&req, &Reply::MethodNotAllowed, source(), TAG)),
            format!(
                "SIP/2.0 405 Method Not Allowed\r\n{}\
                 Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nContent-Length: 0\r\n\r\n",
                echoed(uri, method)
            )
        );
    }
}

#[test]
fn ack_is_absorbed_and_never_answered() {
    let req = read(&request("ACK", "sip:4001@cas.example.com", ""));
    assert_eq!(req.step(), Step::Absorb);
    // Even broken: no Call-ID, a wrong version, a bad CSeq.
    for broken in [
        b"ACK sip:4001@cas SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 ACK\r\n\r\n".to_vec(),
        request("ACK", "sip:4001@cas", "").replace_version(),
        b"ACK sip:4001@cas SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: x ACK\r\n\r\n".to_vec(),
    ] {
        assert_eq!(
            read_request(&broken, &SipLimits::default()),
            Received::Ignore(Ignored::BrokenAck)
        );
    }
}

trait ReplaceVersion {
    fn replace_version(self) -> Vec<u8>;
}

impl ReplaceVersion for Vec<u8> {
    fn replace_version(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1)
            .into_bytes()
    }
}

#[test]
fn cancel_bye_and_reinvite_find_no_transaction() {
    let uri = "sip:4001@cas.example.com";
    for method in ["CANCEL", "BYE"] {
        let req = read(&request(method, uri, ""));
        assert_eq!(req.step(), Step::Reply(Reply::NoTransaction), "{method}");
        assert_eq!(
            text(answer(&req, &Reply::NoTransaction, source(), TAG)),
            format!(
                "SIP/2.0 481 Call/Transaction Does Not Exist\r\n{}Content-Length: 0\r\n\r\n",
                echoed(uri, method)
            )
        );
    }
    // A re-INVITE (To tag): mailfront never made a dialog. Its To tag is kept, not added to.
    let bytes = String::from_utf8(request("INVITE", uri, ""))
        .unwrap()
        .replace(&format!("To: <{uri}>"), &format!("To: <{uri}>;tag=theirs"));
    let req = read(bytes.as_bytes());
    assert!(req.in_dialog);
    assert_eq!(req.step(), Step::Reply(Reply::NoTransaction));
    assert!(
        text(answer(&req, &Reply::NoTransaction, source(), TAG))
            .contains(&format!("\r\nTo: <{uri}>;tag=theirs\r\nCall-ID"))
    );
}

#[test]
fn unsupported_schemes() {
    let req = read(&request("INVITE", "mailto:alice@example.com", ""));
    assert_eq!(req.step(), Step::Reply(Reply::UnsupportedUriScheme));
    let req = read(&request("OPTIONS", "im:alice@example.com", ""));
    assert_eq!(req.step(), Step::Reply(Reply::UnsupportedUriScheme));
    // The method is checked first (RFC 3261 §8.2.1 before §8.2.2).
    let req = read(&request("REGISTER", "im:alice@example.com", ""));
    assert_eq!(req.step(), Step::Reply(Reply::MethodNotAllowed));
    assert!(
        text(answer(&req, &Reply::UnsupportedUriScheme, source(), TAG))
            .starts_with("SIP/2.0 416 Unsupported URI Scheme\r\n")
    );
}

/// Each row: a request, the status and reason phrase of its reply.
#[test]
fn malformed_requests_are_answered_400_with_the_reason() {
    let good = String::from_utf8(request("INVITE", "sip:4001@cas", "")).unwrap();
    let without = |line: &str| good.replace(line, "");
    let rows: Vec<(String, &str)> = vec![
        (
            without("Via: SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1\r\n"),
            "400 Bad Request (missing Via)",
        ),
        (
            good.replace("SIP/2.0/UDP 192.0.2.7:5071", "SIP/2.0/UDP"),
            "400 Bad Request (malformed Via)",
        ),
        (
            without("Call-ID: call-1@192.0.2.7\r\n"),
            "400 Bad Request (missing Call-ID)",
        ),
        (
            without("CSeq: 7 INVITE\r\n"),
            "400 Bad Request (missing CSeq)",
        ),
        (
            without("From: \"Carol\" <sip:carol@example.com>;tag=c1\r\n"),
            "400 Bad Request (missing From)",
        ),
        (
            without("To: <sip:4001@cas>\r\n"),
            "400 Bad Request (missing To)",
        ),
        (
            good.replace("Call-ID: call-1@192.0.2.7", "Call-ID:"),
            "400 Bad Request (missing Call-ID)",
        ),
        (
            good.replace("Max-Forwards: 70", "t: <sip:x@y>"),
            "400 Bad Request (more than one To)",
        ),
        (
            good.replace("CSeq: 7 INVITE", "CSeq: seven INVITE"),
            "400 Bad Request (malformed CSeq)",
        ),
        (
            good.replace("CSeq: 7 INVITE", "CSeq: 7"),
            "400 Bad Request (malformed CSeq)",
        ),
        (
            good.replace("CSeq: 7 INVITE", "CSeq: 2147483648 INVITE"),
            "400 Bad Request (malformed CSeq)",
        ),
        (
            good.replace("CSeq: 7 INVITE", "CSeq: 7 OPTIONS"),
            "400 Bad Request (CSeq method does not match)",
        ),
        (
            good.replace("INVITE sip:4001@cas", "INVITE sip:4001@ca_s"),
            "400 Bad Request (malformed Request-URI)",
        ),
        (
            good.replace("Content-Length: 0", "Content-Length: 100"),
            "400 Bad Request (body shorter than Content-Length)",
        ),
        (
            good.replace("Content-Length: 0", "Content-Length: zero"),
            "400 Bad Request (malformed Content-Length)",
        ),
        (
            good.replace("Max-Forwards: 70", "Max-Forwards 70"),
            "400 Bad Request (malformed header line)",
        ),
        (
            good.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia"),
            "505 Version Not Supported",
        ),
    ];
    for (input, status_line) in rows {
        match read_request(input.as_bytes(), &SipLimits::default()) {
            Received::Reject {
                method,
                reply,
                echo,
            } => {
                assert_eq!(method, "INVITE");
                let bytes = text(render(&reply, &echo, source(), TAG));
                assert!(
                    bytes.starts_with(&format!("SIP/2.0 {status_line}\r\n")),
                    "{input:?} → {bytes:?}"
                );
                assert!(bytes.ends_with("\r\nContent-Length: 0\r\n\r\n"));
            }
            other => panic!("{input:?} → {other:?}"),
        }
    }
}

#[test]
fn a_reject_copies_what_it_could_read() {
    let input = b"OPTIONS sip:cas SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5071\r\nCall-ID: x\r\n\r\n";
    let Received::Reject { reply, echo, .. } = read_request(input, &SipLimits::default()) else {
        panic!("not rejected");
    };
    assert_eq!(
        text(render(&reply, &echo, source(), TAG)),
        "SIP/2.0 400 Bad Request (missing CSeq)\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5071\r\n\
         Call-ID: x\r\n\
         Content-Length: 0\r\n\r\n"
    );
}

#[test]
fn every_via_goes_back_in_order_with_received_and_rport() {
    let input = b"INVITE sip:4001@cas SIP/2.0\r\n\
v: SIP/2.0/UDP phone.example.com:5080;rport;branch=z9hG4bK-top, SIP/2.0/UDP p1.example.com;branch=z9hG4bK-p1\r\n\
Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bK-p2\r\n\
f: <sip:carol@example.com>;tag=c1\r\n\
t: sip:4001@cas\r\n\
i: c2\r\n\
CSeq: 1 INVITE\r\n\
l: 0\r\n\r\n";
    let req = read(input);
    let source: SocketAddr = "198.51.100.9:61000".parse().unwrap();
    let reply = Reply::Redirect {
        contact: "sip:4001@mbx2:5080".into(),
    };
    assert_eq!(
        text(answer(&req, &reply, source, TAG)),
        "SIP/2.0 302 Moved Temporarily\r\n\
Via: SIP/2.0/UDP phone.example.com:5080;rport=61000;branch=z9hG4bK-top;received=198.51.100.9, SIP/2.0/UDP p1.example.com;branch=z9hG4bK-p1\r\n\
Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bK-p2\r\n\
From: <sip:carol@example.com>;tag=c1\r\n\
To: sip:4001@cas;tag=5eed\r\n\
Call-ID: c2\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:4001@mbx2:5080>\r\n\
Content-Length: 0\r\n\r\n"
    );
    // rport: the response goes to the source port.
    assert_eq!(req.echo.udp_destination(source), source);
}

#[test]
fn unparseable_messages_are_ignored() {
    let limits = SipLimits::default();
    for (input, why) in [
        (&b"SIP/2.0 200 OK\r\n\r\n"[..], Unparseable::Response),
        (b"\r\n\r\n", Unparseable::Empty),
        (b"hello", Unparseable::NotSip),
    ] {
        assert_eq!(
            read_request(input, &limits),
            Received::Ignore(Ignored::Unparseable(why))
        );
    }
}

#[test]
fn a_contact_cannot_break_the_response() {
    let req = read(&request("INVITE", "sip:4001@cas", ""));
    let reply = Reply::Redirect {
        contact: "sip:x@y>\r\nEvil: 1".into(),
    };
    let bytes = text(answer(&req, &reply, source(), TAG));
    assert!(
        bytes.contains("\r\nContact: <sip:x@yEvil: 1>\r\n"),
        "{bytes}"
    );
}

#[test]
fn never_panics_on_mutations() {
    let base = request("INVITE", "sip:4001@cas.example.com", "");
    let limits = SipLimits {
        max_message_size: 600,
        max_headers: 8,
        max_line_length: 80,
    };
    for i in 0..base.len() {
        for byte in [
            0u8, b'\r', b'\n', b':', b' ', b',', b';', b'"', b'<', b'@', 0xff,
        ] {
            let mut mutated = base.clone();
            mutated[i] = byte;
            match read_request(&mutated, &limits) {
                Received::Request(req) => {
                    let _ = req.step();
                    let _ = answer(&req, &Reply::NotFound, source(), TAG);
                }
                Received::Reject { reply, echo, .. } => {
                    let _ = render(&reply, &echo, source(), TAG);
                }
                Received::Ignore(_) => {}
            }
        }
    }
}
