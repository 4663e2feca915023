//! The delivery client (`DeliveryClient`, LMTP or SMTP) fed arbitrary backend bytes in
//! arbitrary chunks, with every TLS mode. Invariants: no panic; whole CRLF lines sent; STARTTLS
//! only when configured, and no envelope command before it then; `ReadyForContent` only after
//! every recipient was sent; `Finished` lists exactly one outcome per recipient, in order;
//! `Finished`, `Refused` and `Failed` are final; `verdict` of the outcomes, which may be a
//! backend's own reply passed on to the client, is a valid reply of whole CRLF lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, assert_crlf_lines, find};
use mailfront_model::BackendTls;
use mailfront_protocol::Machine;
use mailfront_protocol::Step;
use mailfront_protocol::smtp::command::{Body, MailParams, RcptParams, Ret};
use mailfront_protocol::smtp::delivery::{
    DeliveryClient, DeliveryEvent, DeliveryProtocol, verdict,
};
use mailfront_protocol::smtp::receiver::{Envelope, Recipient};

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let flags = input.flags;
    let mut rng = input.rng;
    let payload = input.payload;
    let tls = match flags & 3 {
        0 | 3 => BackendTls::None,
        1 => BackendTls::StartTls,
        _ => BackendTls::Implicit,
    };
    let protocol = if flags & 4 != 0 {
        DeliveryProtocol::Smtp
    } else {
        DeliveryProtocol::Lmtp
    };
    let recipients: Vec<String> = (0..1 + (flags >> 3 & 3))
        .map(|i| format!("rcpt{i}@example.com"))
        .collect();
    // Some envelopes ask for DSN and SMTPUTF8, which only a server announcing them hears.
    let extended = flags & 32 != 0;
    let envelope = Envelope {
        from: "sender@fuzz.test".to_owned(),
        params: MailParams {
            size: Some(1234),
            body: Some(Body::EightBitMime),
            ret: extended.then_some(Ret::Hdrs),
            envid: extended.then(|| "e+2B1".to_owned()),
            smtputf8: extended,
        },
        recipients: recipients
            .iter()
            .map(|address| Recipient {
                address: address.clone(),
                params: RcptParams {
                    notify: extended.then(|| "SUCCESS".to_owned()),
                    orcpt: None,
                },
            })
            .collect(),
    };
    let mut client = DeliveryClient::new(protocol, tls, "mx.fuzz".to_owned(), envelope);
    let mut fed = 0;
    let mut tls_done = tls == BackendTls::Implicit;
    let mut sent = Vec::new();
    let mut eof = false;
    for _ in 0..1_000_000 {
        match client.next_step() {
            Step::Send(bytes) => {
                assert_crlf_lines(&bytes);
                if tls == BackendTls::StartTls && !tls_done {
                    assert!(!bytes.starts_with(b"MAIL") && !bytes.starts_with(b"RCPT"));
                }
                sent.extend_from_slice(&bytes);
                assert!(sent.len() <= 4096 + 16 * fed);
            }
            Step::Read => {
                if fed < payload.len() {
                    let n = rng.chunk(payload.len() - fed);
                    client.feed(&payload[fed..fed + n]);
                    fed += n;
                } else if !eof {
                    eof = true;
                    client.eof();
                } else {
                    // After eof, a finished client may only read.
                    return;
                }
            }
            Step::StartTls => {
                assert_eq!(tls, BackendTls::StartTls);
                assert!(!tls_done);
                tls_done = true;
                client.tls_established();
            }
            Step::Event(DeliveryEvent::ReadyForContent) => {
                for r in &recipients {
                    assert!(find(&sent, format!("RCPT TO:<{r}>").as_bytes()).is_some());
                }
                assert!(sent.ends_with(b"DATA\r\n"));
                // The driver streams the content, then says it is complete.
                client.finish();
            }
            Step::Event(DeliveryEvent::Finished(results)) => {
                let names: Vec<&String> = results.iter().map(|(r, _)| r).collect();
                assert_eq!(names, recipients.iter().collect::<Vec<_>>());
                let reply = verdict(&results);
                assert!((200..600).contains(&reply.code));
                assert_crlf_lines(&reply.to_bytes());
                break;
            }
            Step::Event(DeliveryEvent::Refused(reply)) => {
                // Whatever its code (a backend may refuse with a 2xx greeting other than 220),
                // the driver only logs it and tries the next server.
                assert_crlf_lines(&reply.to_bytes());
                break;
            }
            Step::Event(DeliveryEvent::Failed(_)) => break,
        }
    }
    client.feed(b"250 OK\r\n");
    assert_eq!(client.next_step(), Step::Read, "a finished delivery acted");
});
