//! A SIP request end to end, as the driver serves one: `sip::read_request`, `Request::step`,
//! then the response rendered by `sip::answer`/`sip::render` (for a lookup: a redirect whose
//! Contact comes from `contact_uri`, a 404 or a 503). Invariants: a broken ACK is never
//! answered; a target is a clean extension or address; every response is whole CRLF lines, is
//! one message and exactly one to the stream framer (Content-Length: 0 ends it, nothing a
//! request carried can add a line or a message), and parsed back its header fields are the
//! request's Via (all, in order), From, To (with a tag), Call-ID and CSeq.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, assert_clean_name, assert_crlf_lines};
use mailfront_protocol::sip::message::{self, Unparseable};
use mailfront_protocol::sip::{
    self, Echo, Frame, Received, Reply, SipLimits, Step, StreamFramer, Target, contact_uri,
};

const WIDE: SipLimits = SipLimits {
    max_message_size: 1 << 20,
    max_headers: 1 << 16,
    max_line_length: 1 << 20,
};

/// What `render` does to a copied value (drops control characters other than tab).
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

fn check_response(bytes: &[u8], reply: &Reply, echo: &Echo, tag: &str) {
    assert_crlf_lines(bytes);
    let status = format!("SIP/2.0 {} ", reply.status());
    assert!(
        bytes.starts_with(status.as_bytes()),
        "status line of {bytes:?}"
    );
    assert!(bytes.ends_with(b"\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(message::parse(bytes, &WIDE), Err(Unparseable::Response));
    // One message on a stream, exactly.
    let mut framer = StreamFramer::new(WIDE);
    framer.push(bytes);
    assert_eq!(
        framer.next_frame(),
        Ok(Some(Frame::Message(bytes.to_vec())))
    );
    assert_eq!(framer.next_frame(), Ok(None));
    // Read back as if it were a request: the copied fields are there, in order, as one each.
    let head_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut as_request = b"OPTIONS sip:fuzz SIP/2.0\r\n".to_vec();
    as_request.extend_from_slice(&bytes[head_end..]);
    let parsed = message::parse(&as_request, &WIDE).expect("a response reads back");
    assert_eq!(parsed.defect, None, "{as_request:?}");
    assert_eq!(parsed.headers_named("Via").count(), echo.via.len());
    for (name, value) in [
        ("From", &echo.from),
        ("To", &echo.to),
        ("Call-ID", &echo.call_id),
        ("CSeq", &echo.cseq),
    ] {
        assert_eq!(
            parsed.headers_named(name).count(),
            usize::from(value.is_some()),
            "{name}"
        );
    }
    if let Some(to) = &echo.to {
        // The request's To as it was if it had a tag, else with ours added.
        let got = parsed.header("To").unwrap();
        let to = clean(to);
        if sip::response::tag_of(&to).is_some() {
            assert_eq!(got, to.trim_matches([' ', '\t']));
        } else {
            assert!(
                got.ends_with(&format!(";tag={tag}")),
                "To without our tag: {got:?}"
            );
        }
    }
    assert_eq!(parsed.header("Content-Length"), Some("0"));
}

fuzz_target!(|data: &[u8]| {
    let Input {
        flags,
        mut rng,
        payload,
    } = Input::new(data);
    let limits = if flags & 1 != 0 {
        SipLimits {
            max_message_size: 600,
            max_headers: 12,
            max_line_length: 120,
        }
    } else {
        SipLimits::default()
    };
    let source: SocketAddr = if flags & 2 != 0 {
        "[2001:db8::7]:5071".parse().unwrap()
    } else {
        "192.0.2.7:5071".parse().unwrap()
    };
    let tag = format!("{:016x}", rng.next());
    match sip::read_request(payload, &limits) {
        Received::Request(request) => {
            assert!(message::is_token(&request.method));
            let reply = match request.step() {
                Step::Absorb => {
                    assert_eq!(request.method, "ACK");
                    return;
                }
                Step::Reply(reply) => reply,
                Step::Lookup(target) => {
                    assert_eq!(request.method, "INVITE");
                    match &target {
                        Target::Extension(number) => {
                            let digits = number.strip_prefix('+').unwrap_or(number);
                            assert!(
                                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                            );
                        }
                        Target::Address(address) => {
                            assert_clean_name(address);
                            assert!(!address.contains(char::is_whitespace));
                            assert_eq!(address.matches('@').count(), 1, "{address:?}");
                        }
                    }
                    match rng.below(3) {
                        0 => Reply::Redirect {
                            contact: contact_uri(
                                "sip:{extension}@mbx1.example.com:5070;user={user}",
                                request.uri.user.as_deref().unwrap_or_default(),
                                (flags & 4 != 0).then_some("4001"),
                            ),
                        },
                        1 => Reply::NotFound,
                        _ => Reply::ServiceUnavailable { retry_after: 30 },
                    }
                }
            };
            let bytes = sip::answer(&request, &reply, source, &tag);
            check_response(&bytes, &reply, &request.echo, &tag);
            // The same request gets the same tag (stateless, RFC 3261 §8.2.7).
            let key =
                std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(
                );
            assert_eq!(
                request.echo.stateless_tag(&key),
                request.echo.stateless_tag(&key)
            );
            let _ = request.echo.udp_destination(source);
        }
        Received::Reject {
            method,
            reply,
            echo,
        } => {
            assert_ne!(method, "ACK", "a broken ACK answered");
            assert!(matches!(reply.status(), 400 | 505));
            let bytes = sip::render(&reply, &echo, source, &tag);
            check_response(&bytes, &reply, &echo, &tag);
        }
        Received::Ignore(_) => {}
    }
});
