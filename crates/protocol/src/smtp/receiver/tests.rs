//! Tests of the front-end transport machine with a scripted driver.

use super::*;
use crate::{Machine, Step};

/// What the scripted driver saw.
#[derive(Debug, Default)]
struct World {
    output: String,
    delivered: Vec<(Envelope, Vec<u8>)>,
    aborted: usize,
    opened: usize,
    closed: bool,
}

struct Script<'a> {
    recipient: &'a dyn Fn(&str) -> Result<(), Reply>,
    open: &'a dyn Fn(&Envelope) -> Result<(), Reply>,
    finish: &'a dyn Fn(&[u8]) -> Reply,
}

fn local(address: &str) -> Result<(), Reply> {
    if address.ends_with("@example.com") {
        if address.starts_with("nobody") {
            Err(Reply::new(550, "5.1.1 User unknown"))
        } else {
            Ok(())
        }
    } else {
        Err(Reply::new(554, "5.7.1 Relaying denied"))
    }
}

fn accept_all(_: &Envelope) -> Result<(), Reply> {
    Ok(())
}

fn delivered(_: &[u8]) -> Reply {
    Reply::new(250, "2.0.0 Delivered")
}

const DEFAULT: Script<'static> = Script {
    recipient: &local,
    open: &accept_all,
    finish: &delivered,
};

fn settings() -> ReceiverSettings {
    ReceiverSettings {
        tls: ClientTls::None,
        hostname: "mx.test".into(),
        max_message_size: 100,
        max_recipients: 3,
        max_line_length: 512,
        chunking: true,
        passes_on: DeliveryExtensions::default(),
    }
}

/// The recipients' addresses of an envelope.
fn addresses(envelope: &Envelope) -> Vec<&str> {
    envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect()
}

fn run_with(settings: ReceiverSettings, script: &Script<'_>, input: &[u8], chunk: usize) -> World {
    let mut server = Receiver::new(settings);
    let mut world = World::default();
    let mut pieces = input.chunks(chunk.max(1));
    let mut open: Option<(Envelope, Vec<u8>)> = None;
    loop {
        match server.next_step() {
            Step::Send(bytes) => world.output.push_str(&String::from_utf8(bytes).unwrap()),
            Step::Read => match pieces.next() {
                Some(piece) => server.feed(piece),
                None => {
                    server.client_closed();
                    // Drain what closing queued (an abort).
                    while let Step::Event(ReceiverEvent::AbortDelivery) = server.next_step() {
                        world.aborted += 1;
                    }
                    return world;
                }
            },
            Step::StartTls => server.tls_established(),
            Step::Event(ReceiverEvent::Close) => {
                world.closed = true;
                return world;
            }
            Step::Event(ReceiverEvent::CheckRecipient(to)) => {
                server.recipient_checked((script.recipient)(&to))
            }
            Step::Event(ReceiverEvent::OpenDelivery(envelope)) => {
                world.opened += 1;
                let result = (script.open)(&envelope);
                if result.is_ok() {
                    open = Some((envelope, Vec::new()));
                }
                server.delivery_opened(result);
            }
            Step::Event(ReceiverEvent::Content(bytes)) => open
                .as_mut()
                .expect("content without delivery")
                .1
                .extend(bytes),
            Step::Event(ReceiverEvent::FinishDelivery) => {
                let (envelope, content) = open.take().expect("finish without delivery");
                let reply = (script.finish)(&content);
                if reply.is_positive() {
                    world.delivered.push((envelope, content));
                }
                server.delivery_finished(reply);
            }
            Step::Event(ReceiverEvent::AbortDelivery) => {
                world.aborted += 1;
                open = None;
            }
        }
    }
}

fn run(input: &[u8]) -> World {
    run_with(settings(), &DEFAULT, input, input.len())
}

#[test]
fn a_message_at_every_split() {
    let input: &[u8] = b"EHLO c\r\nMAIL FROM:<s@x.org> BODY=8BITMIME\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    for chunk in 1..=input.len() {
        let world = run_with(settings(), &DEFAULT, input, chunk);
        assert_eq!(
            world.output,
            "220 mx.test ESMTP ready\r\n250-mx.test greets c\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n\
             250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 User unknown\r\n250 2.1.5 OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n\
             250 2.0.0 Delivered\r\n221 2.0.0 Bye\r\n",
            "chunk {chunk}"
        );
        assert_eq!(world.delivered.len(), 1);
        let (envelope, content) = &world.delivered[0];
        assert_eq!(envelope.from, "s@x.org");
        assert_eq!(
            addresses(envelope),
            ["alice@example.com", "bob@example.com"]
        );
        assert_eq!(envelope.params.body, Some(command::Body::EightBitMime));
        assert_eq!(content, b"Subject: hi\r\n\r\n.dot\r\n");
        assert!(world.closed);
    }
}

#[test]
fn bdat_chunks_at_every_split() {
    let input: &[u8] = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nBDAT 5\r\nab\r\ncBDAT 3 LAST\r\ndef";
    for chunk in 1..=input.len() {
        let world = run_with(settings(), &DEFAULT, input, chunk);
        assert!(world.output.ends_with("250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.0.0 5 octets received\r\n250 2.0.0 Delivered\r\n"), "{}", world.output);
        assert_eq!(world.delivered[0].1, b"ab\r\ncdef");
    }
}

#[test]
fn relaying_and_unknown_users_are_refused() {
    let world = run(b"HELO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<victim@other.org>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n");
    assert!(world.output.ends_with("250 2.1.0 OK\r\n554 5.7.1 Relaying denied\r\n550 5.1.1 User unknown\r\n554 5.5.1 No valid recipients\r\n"), "{}", world.output);
    assert!(world.delivered.is_empty());
}

#[test]
fn sequence_errors() {
    let world = run(b"MAIL FROM:<a@b>\r\nEHLO c\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN x\r\nRSET\r\nRCPT TO:<alice@example.com>\r\n");
    assert!(
        world
            .output
            .starts_with("220 mx.test ESMTP ready\r\n503 5.5.1 Send HELO/EHLO first\r\n250-")
    );
    assert!(world.output.ends_with(
        "503 5.5.1 Need MAIL command first\r\n503 5.5.1 Need MAIL command first\r\n250 2.1.0 OK\r\n503 5.5.1 Nested MAIL command\r\n\
         502 5.5.1 Command not implemented\r\n250 2.0.0 OK\r\n503 5.5.1 Need MAIL command first\r\n"
    ), "{}", world.output);
}

#[test]
fn size_limits() {
    // Declared too large.
    let world = run(b"EHLO c\r\nMAIL FROM:<a@b> SIZE=101\r\n");
    assert!(
        world
            .output
            .ends_with("552 5.3.4 Message size exceeds fixed maximum message size\r\n")
    );
    // Too large in fact: the content is read to its end, nothing is delivered.
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n".to_vec();
    input.extend(std::iter::repeat_n(b"0123456789\r\n".as_slice(), 20).flatten());
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let world = run(&input);
    assert!(world.output.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"), "{}", world.output);
    assert!(world.delivered.is_empty());
    assert_eq!(world.aborted, 1);
    // BDAT over the limit.
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nBDAT 60\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 60]);
    input.extend_from_slice(b"BDAT 60 LAST\r\n");
    input.extend_from_slice(&[b'y'; 60]);
    input.extend_from_slice(b"NOOP\r\n");
    let world = run(&input);
    assert!(world.output.ends_with("250 2.0.0 60 octets received\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"), "{}", world.output);
    assert!(world.delivered.is_empty());
    assert_eq!(world.aborted, 1);
}

#[test]
fn recipient_limit() {
    let world = run(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n");
    assert!(
        world
            .output
            .ends_with("250 2.1.5 OK\r\n452 4.5.3 Too many recipients\r\n")
    );
}

#[test]
fn no_backend_and_failed_delivery() {
    let refuse = |_: &Envelope| Err(Reply::new(451, "4.4.0 No mailbox server available"));
    let script = Script {
        open: &refuse,
        ..DEFAULT
    };
    let world = run_with(
        settings(),
        &script,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nMAIL FROM:<a@b>\r\n",
        1000,
    );
    assert!(
        world
            .output
            .ends_with("451 4.4.0 No mailbox server available\r\n250 2.1.0 OK\r\n"),
        "{}",
        world.output
    );
    // BDAT with no backend: the chunk is still read (not taken as commands), then refused.
    let world = run_with(settings(), &script, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n", 1000);
    assert!(
        world
            .output
            .ends_with("451 4.4.0 No mailbox server available\r\n250 2.0.0 OK\r\n"),
        "{}",
        world.output
    );
    let fail = |_: &[u8]| Reply::new(451, "4.3.0 Backend said no");
    let script = Script {
        finish: &fail,
        ..DEFAULT
    };
    let world = run_with(
        settings(),
        &script,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nx\r\n.\r\n",
        1000,
    );
    assert!(world.output.ends_with("451 4.3.0 Backend said no\r\n"));
    assert!(world.delivered.is_empty());
}

#[test]
fn client_vanishing_mid_data_delivers_nothing() {
    let world = run(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: half\r\n",
    );
    assert!(world.delivered.is_empty());
    assert_eq!(world.aborted, 1);
}

#[test]
fn starttls_and_refusal_at_connect() {
    let tls = ReceiverSettings {
        tls: ClientTls::StartTls,
        ..settings()
    };
    let mut server = Receiver::new(tls);
    let _ = server.next_step();
    server.feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n");
    let Step::Send(ehlo) = server.next_step() else {
        panic!()
    };
    assert!(String::from_utf8(ehlo).unwrap().contains("250 STARTTLS"));
    assert_eq!(
        server.next_step(),
        Step::Send(b"220 2.0.0 Ready to start TLS\r\n".to_vec())
    );
    assert_eq!(server.next_step(), Step::StartTls);
    server.tls_established();
    assert_eq!(server.next_step(), Step::Read);
    server.feed(b"MAIL FROM:<a@b>\r\n");
    assert_eq!(
        server.next_step(),
        Step::Send(b"503 5.5.1 Send HELO/EHLO first\r\n".to_vec())
    );

    let mut refused = Receiver::refuse(settings(), "Not a mailbox server");
    assert_eq!(
        refused.next_step(),
        Step::Send(b"554 5.7.1 Not a mailbox server\r\n".to_vec())
    );
    assert_eq!(refused.next_step(), Step::Event(ReceiverEvent::Close));
}

#[test]
fn smuggling_is_one_message() {
    let input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: one\r\n\nbody\n.\nMAIL FROM:<evil@x>\nRCPT TO:<bob@example.com>\nDATA\nforged\r\n.\r\n";
    let big = ReceiverSettings {
        max_message_size: 10_000,
        ..settings()
    };
    let world = run_with(big, &DEFAULT, input, 3);
    assert_eq!(world.delivered.len(), 1);
    let content = String::from_utf8(world.delivered[0].1.clone()).unwrap();
    assert!(content.contains("MAIL FROM:<evil@x>\r\n"), "{content:?}");
    assert_eq!(addresses(&world.delivered[0].0), ["alice@example.com"]);
}

#[test]
fn a_reset_between_bdat_chunks_drops_the_open_delivery() {
    // EHLO, HELO and RSET after a chunk that is not the last one (found by fuzzing: EHLO and
    // HELO left the delivery open at the driver).
    for reset in ["EHLO c", "HELO c", "RSET"] {
        let input = format!(
            "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nBDAT 2\r\nab{reset}\r\n"
        );
        let world = run(input.as_bytes());
        assert_eq!(world.aborted, 1, "{reset}");
        assert!(world.delivered.is_empty());
    }
}

#[test]
fn data_after_an_empty_bdat_chunk_is_refused() {
    // `BDAT 0` opens the delivery without content; DATA must not open a second one (found by
    // fuzzing).
    let world = run(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nBDAT 0\r\nDATA\r\nBDAT 2 LAST\r\nab",
    );
    assert!(
        world.output.contains("503 5.5.1 DATA after BDAT\r\n"),
        "{}",
        world.output
    );
    assert_eq!(world.delivered.len(), 1);
    assert_eq!(world.delivered[0].1, b"ab");
}

#[test]
fn an_oversized_first_bdat_chunk_opens_no_delivery() {
    let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\n".to_vec();
    let size = settings().max_message_size + 1;
    input.extend_from_slice(format!("BDAT {size} LAST\r\n").as_bytes());
    input.resize(input.len() + usize::try_from(size).unwrap(), b'x');
    input.extend_from_slice(b"QUIT\r\n");
    let world = run(&input);
    assert_eq!(world.opened, 0, "{}", world.output);
    assert!(world.delivered.is_empty());
    assert!(
        world
            .output
            .contains("552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
        "{}",
        world.output
    );
    assert!(
        world.output.ends_with("221 2.0.0 Bye\r\n"),
        "{}",
        world.output
    );
}

#[test]
fn junk_commands_are_bounded_and_a_message_resets_the_count() {
    let junk = |n: u32| "NOOP\r\nVRFY x\r\nRSET\r\nbogus\r\n".repeat(n as usize / 4);
    let message = "MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nhi\r\n.\r\n";
    // 100 junk commands, a message, 100 more, QUIT: served to the end.
    let input = format!("EHLO c\r\n{}{message}{}QUIT\r\n", junk(100), junk(100));
    let world = run(input.as_bytes());
    assert_eq!(world.delivered.len(), 1);
    assert!(
        world.output.ends_with("221 2.0.0 Bye\r\n"),
        "{}",
        world.output
    );
    // The 101st is one too many.
    let input = format!("EHLO c\r\n{}NOOP\r\nQUIT\r\n", junk(100));
    let world = run(input.as_bytes());
    assert!(
        world.output.ends_with(
            "500 5.5.2 Unrecognized command\r\n\
             421 4.7.0 Too many commands without a message, closing connection\r\n"
        ),
        "{}",
        world.output
    );
    assert!(world.closed);
}

#[test]
fn dsn_and_smtputf8_only_when_passed_on() {
    let message = "EHLO c\r\nMAIL FROM:<s@x.org> RET=HDRS ENVID=e1\r\nRCPT TO:<alice@example.com> NOTIFY=SUCCESS ORCPT=rfc822;a+40example.com\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    // Not offered: the parameters are refused as unsupported, and EHLO does not name them.
    let world = run(message.as_bytes());
    assert!(!world.output.contains("DSN"), "{}", world.output);
    assert!(world.output.contains("555 5.5.4 Unsupported parameter"));
    assert!(world.delivered.is_empty());
    // Offered: announced, accepted and handed on with the envelope.
    let mut passing = settings();
    passing.passes_on = DeliveryExtensions {
        dsn: true,
        smtputf8: true,
    };
    let world = run_with(passing.clone(), &DEFAULT, message.as_bytes(), message.len());
    assert!(
        world.output.contains("250-DSN\r\n250 SMTPUTF8\r\n"),
        "{}",
        world.output
    );
    let (envelope, _) = &world.delivered[0];
    assert_eq!(envelope.params.ret, Some(command::Ret::Hdrs));
    assert_eq!(envelope.params.envid.as_deref(), Some("e1"));
    assert_eq!(
        envelope.recipients[0].params,
        RcptParams {
            notify: Some("SUCCESS".into()),
            orcpt: Some("rfc822;a+40example.com".into()),
        }
    );
    // A non-ASCII address needs SMTPUTF8 in the transaction; with it, it goes through.
    let utf8 = "EHLO c\r\nMAIL FROM:<j\u{f6}rg@x.org>\r\nMAIL FROM:<s@x.org>\r\nRCPT TO:<j\u{f6}rg@example.com>\r\nRSET\r\nMAIL FROM:<j\u{f6}rg@x.org> SMTPUTF8\r\nRCPT TO:<j\u{f6}rg@example.com>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let world = run_with(passing, &DEFAULT, utf8.as_bytes(), utf8.len());
    assert_eq!(
        world
            .output
            .matches("553 5.6.7 Non-ASCII address requires SMTPUTF8")
            .count(),
        2,
        "{}",
        world.output
    );
    assert_eq!(world.delivered.len(), 1);
    assert!(world.delivered[0].0.params.smtputf8);
    // Without SMTPUTF8 offered, the parameter is refused.
    let world = run("EHLO c\r\nMAIL FROM:<s@x.org> SMTPUTF8\r\nQUIT\r\n".as_bytes());
    assert!(world.output.contains("555 5.5.4 Unsupported parameter"));
}
