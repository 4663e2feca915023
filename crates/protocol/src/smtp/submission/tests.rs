//! Byte-level tests of the submission front end.

use super::*;
use crate::testing::{Seen, drive, out, password_pw, proxied};
use crate::{Machine, Step};

fn settings() -> SubmissionSettings {
    SubmissionSettings {
        tls: ClientTls::None,
        allow_plaintext_auth: true,
        hostname: "mx.test".into(),
        max_message_size: 1000,
        ..SubmissionSettings::default()
    }
}

const EHLO_PLAIN: &str = "250-mx.test greets c\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n";

#[test]
fn every_split_gives_the_same_session() {
    let input: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n";
    let mut answer = password_pw(proxied);
    let expected = vec![
        out(&format!(
            "220 mx.test ESMTP ready\r\n{EHLO_PLAIN}530 5.7.0 Authentication required\r\n"
        )),
        Seen::Auth {
            authcid: "alice".into(),
            authzid: None,
            password: b"wrong".to_vec(),
            mechanism: "PLAIN",
        },
        out(
            "535 5.7.8 Authentication credentials invalid\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n",
        ),
        Seen::Auth {
            authcid: "alice".into(),
            authzid: None,
            password: b"pw".to_vec(),
            mechanism: "LOGIN",
        },
        out("235 2.7.0 Authentication successful\r\n"),
        Seen::Proxy(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n".to_vec()),
    ];
    for chunk in 1..=input.len() {
        assert_eq!(
            drive(
                SubmissionFrontEnd::new(settings()),
                input,
                chunk,
                &mut answer
            ),
            expected,
            "chunk {chunk}"
        );
    }
}

#[test]
fn auth_rules() {
    let run = |s: SubmissionSettings, input: &[u8]| {
        drive(SubmissionFrontEnd::new(s), input, input.len(), proxied)
    };
    // AUTH before EHLO.
    assert_eq!(
        run(settings(), b"AUTH PLAIN AGFAYgBj\r\n")[0],
        out("220 mx.test ESMTP ready\r\n503 5.5.1 Send EHLO first\r\n")
    );
    // Plaintext refused where not allowed; the EHLO does not offer AUTH then.
    let starttls = SubmissionSettings {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        ..SubmissionSettings::default()
    };
    assert_eq!(
        run(starttls, b"EHLO c\r\nAUTH PLAIN AGFAYgBj\r\n")[0],
        out(
            "220 mx.test ESMTP ready\r\n250-mx.test greets c\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n\
             538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
    );
    // Unknown mechanism, bad base64, cancel.
    assert_eq!(
        run(
            settings(),
            b"EHLO c\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!\r\nAUTH PLAIN\r\n*\r\n"
        )[0],
        out(&format!(
            "220 mx.test ESMTP ready\r\n{EHLO_PLAIN}504 5.5.4 Unrecognized authentication type\r\n501 5.5.2 Invalid base64 data\r\n334 \r\n501 5.7.0 Authentication aborted\r\n"
        ))
    );
}

#[test]
fn other_commands() {
    let seen = drive(SubmissionFrontEnd::new(settings()), b"HELO c\r\nNOOP\r\nRSET\r\nVRFY x\r\nEXPN x\r\nHELP\r\nFOO\r\nMAIL FROM:x\r\nRCPT TO:<a@b>\r\nDATA\r\nSTARTTLS\r\nQUIT\r\nNOOP\r\n", 500, proxied);
    assert_eq!(
        seen,
        vec![
            out(
                "220 mx.test ESMTP ready\r\n250 mx.test\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n252 2.5.0 Cannot VRFY user\r\n\
                 502 5.5.1 EXPN not available\r\n214 2.0.0 See RFC 5321 and RFC 6409\r\n500 5.5.2 Unrecognized command\r\n\
                 501 5.1.3 Bad address syntax\r\n530 5.7.0 Authentication required\r\n530 5.7.0 Authentication required\r\n\
                 502 5.5.1 STARTTLS not available on this port\r\n221 2.0.0 Bye\r\n"
            ),
            Seen::Close
        ]
    );
}

#[test]
fn starttls_resets_and_discards() {
    let mut front = SubmissionFrontEnd::new(SubmissionSettings::default());
    let _ = front.next_step();
    front.feed(b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGFAYgBj\r\n");
    let Step::Send(_) = front.next_step() else {
        panic!()
    };
    assert!(matches!(front.next_step(), Step::Send(b) if b == b"220 2.0.0 Ready to start TLS\r\n"));
    assert!(matches!(front.next_step(), Step::StartTls));
    front.tls_established();
    assert!(matches!(front.next_step(), Step::Read));
    // After TLS, EHLO is needed again.
    front.feed(b"AUTH PLAIN AGFAYgBj\r\n");
    assert!(matches!(front.next_step(), Step::Send(b) if b == b"503 5.5.1 Send EHLO first\r\n"));
}

#[test]
fn failures_and_limits() {
    for (failure, reply) in [
        (
            AuthFailure::Temporary,
            "454 4.7.0 Temporary authentication failure\r\n",
        ),
        (
            AuthFailure::AuthzidRefused,
            "535 5.7.8 Not authorized to act as that user\r\n",
        ),
        (
            AuthFailure::ProtocolDisabled,
            "535 5.7.8 Submission is not enabled for this account\r\n",
        ),
    ] {
        let seen = drive(
            SubmissionFrontEnd::new(settings()),
            b"EHLO c\r\nAUTH PLAIN AGFAYgBj\r\n",
            500,
            |_| AuthResult::Failed(failure),
        );
        assert_eq!(seen[2], out(reply));
    }
    let tight = SubmissionSettings {
        limits: Limits {
            max_line_length: 600,
            max_commands_before_auth: 2,
            ..Limits::default()
        },
        ..settings()
    };
    let seen = drive(
        SubmissionFrontEnd::new(tight.clone()),
        &[b'x'; 700],
        700,
        proxied,
    );
    assert_eq!(
        seen,
        vec![
            out("220 mx.test ESMTP ready\r\n500 5.5.6 Line too long\r\n"),
            Seen::Close
        ]
    );
    let seen = drive(
        SubmissionFrontEnd::new(tight),
        b"NOOP\r\nNOOP\r\nNOOP\r\n",
        500,
        proxied,
    );
    assert!(
        matches!(&seen[0], Seen::Out(t) if t.ends_with("421 4.7.0 Too many commands before authentication\r\n"))
    );
}
