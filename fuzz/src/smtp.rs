//! SMTP content: an independent reference for DATA decoding (RFC 5321 §4.5.2 and the
//! anti-smuggling rules of `mailfront_protocol::smtp::data`), the dot-stuffing round trip, and
//! the driver of the front-end transport machine.

use mailfront_protocol::smtp::data::{DataDecoder, DotStuffer};
use mailfront_protocol::smtp::receiver::{
    DeliveryExtensions, Envelope, Receiver, ReceiverEvent, ReceiverSettings,
};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_protocol::{ClientTls, Machine, Step};

use crate::{Input, assert_crlf_lines, find};

/// How a line ended in raw client content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Crlf,
    BareLf,
    BareCr,
}

/// Decodes raw DATA content by the documented rules, written line by line (not as a byte
/// automaton like the real decoder): lines end with CRLF, bare LF or bare CR; the content ends
/// only at a line `.` ended by CRLF whose previous line also ended by CRLF (or that is the very
/// first line); another lone `.` line is content; otherwise a leading dot is removed; every line
/// is written with CRLF. Returns the content and the bytes consumed, or `None` if the end of
/// data is not in `raw`.
pub fn reference_decode(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut previous = End::Crlf;
    loop {
        let rest = raw.get(at..)?;
        let stop = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
        let line = &rest[..stop];
        let (end, len) = match (rest[stop], rest.get(stop + 1)) {
            (b'\r', Some(b'\n')) => (End::Crlf, 2),
            // A CR as the last byte: whether an LF follows is not known yet.
            (b'\r', None) => return None,
            (b'\r', Some(_)) => (End::BareCr, 1),
            _ => (End::BareLf, 1),
        };
        at += stop + len;
        if line == b"." && end == End::Crlf && previous == End::Crlf {
            return Some((out, at));
        }
        if line == b"." {
            out.extend_from_slice(b".");
        } else {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out.extend_from_slice(b"\r\n");
        previous = end;
    }
}

/// `content` with every line ending (CRLF, bare CR, bare LF) written as CRLF and a final CRLF
/// if the last line had none: what a backend receives for it.
pub fn canonical(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 2);
    let mut i = 0;
    while let Some(&b) = content.get(i) {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if content.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            other => out.push(other),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Dot-stuffs `content` as a delivery does (in the given pieces) and asserts the anti-smuggling
/// promise: the wire form has exactly one end of data, at its very end, and decoding it gives
/// back the canonical content and stops exactly at the end.
pub fn assert_stuffing_round_trip(content: &[u8], pieces: &[&[u8]]) {
    let mut wire = Vec::new();
    let mut stuffer = DotStuffer::new();
    for piece in pieces {
        stuffer.encode(piece, &mut wire);
    }
    stuffer.finish(&mut wire);
    let mut whole = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.encode(content, &mut whole);
    stuffer.finish(&mut whole);
    assert_eq!(
        wire, whole,
        "dot-stuffing depends on how the content was cut"
    );
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(&wire);
    assert_eq!(
        find(&framed, b"\r\n.\r\n"),
        Some(framed.len() - 5),
        "the wire form has an end of data before its end: {wire:?}"
    );
    let mut decoder = DataDecoder::new();
    let mut decoded = Vec::new();
    let used = decoder.decode(&wire, &mut decoded);
    assert!(decoder.is_done(), "the wire form does not end");
    assert_eq!(used, wire.len(), "the wire form ends early");
    assert_eq!(
        decoded,
        canonical(content),
        "round trip changed the content"
    );
    assert_eq!(decoder.size(), decoded.len() as u64);
}

/// What the flag bits choose for the transport: bits 0–1 TLS, bit 2 chunking, bit 3 small
/// limits, bits 4–5 the mode (0–1 raw stream, 2 one DATA transaction then the stream, 3 one BDAT
/// transfer whose chunks the PRNG cuts), bit 6 DSN and SMTPUTF8 passed on.
pub fn transport_settings(flags: u8) -> ReceiverSettings {
    let tls = match flags & 3 {
        0 | 3 => ClientTls::StartTls,
        1 => ClientTls::None,
        _ => ClientTls::Implicit,
    };
    let small = flags & 8 != 0;
    ReceiverSettings {
        tls,
        hostname: "mx.fuzz".to_owned(),
        max_message_size: if small { 200 } else { 35 * 1024 * 1024 },
        max_recipients: if small { 2 } else { 100 },
        max_line_length: if small { 80 } else { 2048 },
        chunking: flags & 4 != 0 || (flags >> 4) & 3 == 3,
        // Bit 6: the servers behind offer DSN and SMTPUTF8, so the parameters are taken.
        passes_on: DeliveryExtensions {
            dsn: flags & 64 != 0,
            smtputf8: flags & 64 != 0,
        },
    }
}

/// The envelope every structured mode opens with.
pub const PREFIX: &[u8] =
    b"EHLO client.fuzz\r\nMAIL FROM:<sender@fuzz.test>\r\nRCPT TO:<rcpt@example.com>\r\n";

#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    None,
    /// Open; `data` once its kind is known (`Some(true)`: DATA, 354 sent).
    Open {
        data: Option<bool>,
        content: Vec<u8>,
        pieces: Vec<Vec<u8>>,
    },
    Finishing,
}

/// A message the driver saw delivered.
#[derive(Debug)]
pub struct Delivered {
    /// The envelope.
    pub envelope: Envelope,
    /// Whether it came with DATA (else BDAT).
    pub data: bool,
    /// The content handed over.
    pub content: Vec<u8>,
}

/// Runs the transport machine over the input and asserts its promises (see the target).
pub fn drive_transport(input: Input<'_>) {
    let Input {
        flags,
        mut rng,
        payload,
    } = input;
    let settings = transport_settings(flags);
    let mode = (flags >> 4) & 3;
    // The structured modes build the stream around the payload.
    let mut stream = Vec::new();
    let mut expected: Option<Vec<u8>> = None;
    let mut expect_delivery = false;
    match mode {
        2 => {
            stream.extend_from_slice(PREFIX);
            stream.extend_from_slice(b"DATA\r\n");
            stream.extend_from_slice(payload);
            if let Some((content, _)) = reference_decode(payload) {
                expect_delivery = content.len() as u64 <= settings.max_message_size;
                expected = Some(content);
            }
        }
        3 => {
            stream.extend_from_slice(PREFIX);
            let mut at = 0;
            loop {
                let left = payload.len() - at;
                let n = if left == 0 {
                    0
                } else {
                    1 + rng.below(left as u64) as usize
                };
                let last = at + n == payload.len();
                let command = if last {
                    format!("BDAT {n} LAST\r\n")
                } else {
                    format!("BDAT {n}\r\n")
                };
                stream.extend_from_slice(command.as_bytes());
                stream.extend_from_slice(&payload[at..at + n]);
                at += n;
                if last {
                    break;
                }
            }
            expected = Some(payload.to_vec());
            expect_delivery = payload.len() as u64 <= settings.max_message_size;
        }
        _ => stream.extend_from_slice(payload),
    }
    let structured = mode >= 2;

    let mut server = Receiver::new(settings.clone());
    let mut fed = 0usize;
    let mut tls_done = settings.tls == ClientTls::Implicit;
    let mut must_read = false;
    let mut delivery = Delivery::None;
    let mut delivered: Vec<Delivered> = Vec::new();
    let mut opening: Option<Envelope> = None;
    let mut first_check = true;
    let mut first_open = true;
    let mut output = 0usize;
    let mut steps = 0usize;
    let mut closed_by_client = false;
    loop {
        steps += 1;
        assert!(steps < 2_000_000, "endless steps");
        let step = server.next_step();
        if must_read {
            assert_eq!(step, Step::Read, "pre-TLS bytes processed after STARTTLS");
            must_read = false;
        }
        // The first step after a delivery opened tells DATA (354) from BDAT.
        if let Delivery::Open {
            data: data @ None, ..
        } = &mut delivery
        {
            *data = Some(matches!(&step, Step::Send(b) if b.starts_with(b"354")));
        }
        match step {
            Step::Send(bytes) => {
                assert_crlf_lines(&bytes);
                output += bytes.len();
                assert!(
                    output <= 4096 + 64 * fed,
                    "output {output} for {fed} input bytes"
                );
            }
            Step::Read => {
                if fed < stream.len() {
                    let n = rng.chunk(stream.len() - fed);
                    server.feed(&stream[fed..fed + n]);
                    fed += n;
                } else if !closed_by_client {
                    closed_by_client = true;
                    server.client_closed();
                } else {
                    panic!("reading after the client closed");
                }
            }
            Step::StartTls => {
                assert_eq!(
                    settings.tls,
                    ClientTls::StartTls,
                    "STARTTLS on a non-STARTTLS port"
                );
                assert!(!tls_done, "STARTTLS twice");
                assert_eq!(delivery, Delivery::None, "STARTTLS during a delivery");
                tls_done = true;
                server.tls_established();
                must_read = true;
            }
            Step::Event(ReceiverEvent::CheckRecipient(to)) => {
                assert!(!to.is_empty());
                assert!(
                    !to.chars().any(char::is_control),
                    "control character in {to:?}"
                );
                let verdict = if (structured && first_check) || rng.below(4) != 0 {
                    Ok(())
                } else {
                    Err(Reply::new(550, "5.1.1 User unknown"))
                };
                first_check = false;
                server.recipient_checked(verdict);
            }
            Step::Event(ReceiverEvent::OpenDelivery(envelope)) => {
                assert_eq!(
                    delivery,
                    Delivery::None,
                    "a second delivery while one is open"
                );
                assert!(
                    !envelope.recipients.is_empty(),
                    "a delivery without recipients"
                );
                assert!(envelope.recipients.len() <= settings.max_recipients);
                let accept = (structured && first_open) || rng.below(5) != 0;
                first_open = false;
                if accept {
                    delivery = Delivery::Open {
                        data: None,
                        content: Vec::new(),
                        pieces: Vec::new(),
                    };
                    opening = Some(envelope);
                    server.delivery_opened(Ok(()));
                } else {
                    server.delivery_opened(Err(Reply::new(451, "4.4.0 No server available")));
                }
            }
            Step::Event(ReceiverEvent::Content(bytes)) => {
                let Delivery::Open {
                    content, pieces, ..
                } = &mut delivery
                else {
                    panic!("content without an open delivery: {delivery:?}");
                };
                assert!(!bytes.is_empty(), "empty content event");
                content.extend_from_slice(&bytes);
                pieces.push(bytes);
                assert!(
                    content.len() as u64 <= settings.max_message_size,
                    "content past max_message_size handed over"
                );
            }
            Step::Event(ReceiverEvent::FinishDelivery) => {
                let Delivery::Open {
                    data,
                    content,
                    pieces,
                } = std::mem::replace(&mut delivery, Delivery::Finishing)
                else {
                    panic!("finish without an open delivery");
                };
                let data = data.unwrap_or(false);
                if data {
                    // DATA content is canonical already: CRLF line endings only, and whole lines.
                    assert_eq!(canonical(&content), content, "DATA content not canonical");
                }
                let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
                assert_stuffing_round_trip(&content, &pieces);
                delivered.push(Delivered {
                    envelope: opening.take().expect("an envelope"),
                    data,
                    content,
                });
                let reply = match rng.below(4) {
                    0 => Reply::new(451, "4.3.0 Try again later"),
                    _ => Reply::new(250, "2.0.0 Delivered"),
                };
                delivery = Delivery::None;
                server.delivery_finished(reply);
            }
            Step::Event(ReceiverEvent::AbortDelivery) => {
                assert!(
                    matches!(delivery, Delivery::Open { .. }),
                    "abort without an open delivery: {delivery:?}"
                );
                delivery = Delivery::None;
                opening = None;
            }
            Step::Event(ReceiverEvent::Close) => {
                assert_eq!(delivery, Delivery::None, "closed with a delivery open");
                for _ in 0..2 {
                    server.feed(b"MAIL FROM:<x@y>\r\nDATA\r\n");
                    assert_eq!(server.next_step(), Step::Event(ReceiverEvent::Close));
                }
                break;
            }
        }
    }

    if structured {
        let first = delivered.first();
        if expect_delivery {
            let first = first.expect("the structured message was not delivered");
            assert_eq!(first.data, mode == 2);
            assert_eq!(first.envelope.from, "sender@fuzz.test");
            let addresses: Vec<&str> = first
                .envelope
                .recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect();
            assert_eq!(addresses, ["rcpt@example.com"]);
            assert_eq!(
                Some(&first.content),
                expected.as_ref(),
                "delivered content differs from what the client sent"
            );
        } else if mode == 3 {
            // Too large: refused, and the stream ends with the transfer.
            assert!(first.is_none(), "an oversized message was delivered");
        } else if expected.is_none() {
            // DATA never ended: everything after it is content, nothing is delivered.
            assert!(
                first.is_none(),
                "a message without its end of data was delivered"
            );
        }
        // (Too large DATA: no content past the limit was ever handed over, checked above.)
    }
}
