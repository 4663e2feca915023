//! Byte-level tests of the POP3 front end, including every split of the input.

use super::*;
use crate::testing::{Seen, auth, drive, goodbye, out, password_pw, proxied, refused};
use crate::{Machine, Step};

fn settings() -> Pop3Settings {
    Pop3Settings {
        tls: ClientTls::None,
        allow_plaintext_auth: true,
        ..Pop3Settings::default()
    }
}

fn run(
    settings: Pop3Settings,
    input: &[u8],
    answer: impl FnMut(&Credentials) -> AuthResult,
) -> Vec<Seen> {
    drive(Pop3FrontEnd::new(settings), input, input.len(), answer)
}

#[test]
fn every_split_gives_the_same_session() {
    let input: &[u8] = b"CAPA\r\nNOOP\r\nUSER alice\r\nPASS wrong pw\r\nAUTH PLAIN\r\nAGFsaWNlAHB3\r\nSTAT\r\nLIST";
    let mut answer = password_pw(proxied);
    let expected = vec![
        out(
            "+OK mailfront ready.\r\n+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n-ERR Not logged in.\r\n+OK\r\n",
        ),
        auth("alice", b"wrong pw", "USER"),
        out("-ERR [AUTH] Authentication failed.\r\n+ \r\n"),
        auth("alice", b"pw", "PLAIN"),
        out("+OK Logged in.\r\n"),
        Seen::Proxy(b"STAT\r\nLIST".to_vec()),
    ];
    for chunk in 1..=input.len() {
        assert_eq!(
            drive(Pop3FrontEnd::new(settings()), input, chunk, &mut answer),
            expected,
            "chunk {chunk}"
        );
    }
}

#[test]
fn auth_forms() {
    let seen = run(settings(), b"AUTH PLAIN AGFsaWNlAHB3\r\n", proxied);
    assert_eq!(seen[1], auth("alice", b"pw", "PLAIN"));
    let seen = run(settings(), b"AUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\n", proxied);
    assert_eq!(
        seen[0],
        out("+OK mailfront ready.\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n")
    );
    assert_eq!(seen[1], auth("alice", b"pw", "LOGIN"));
    let seen = run(settings(), b"AUTH LOGIN YWxpY2U=\r\ncHc=\r\n", proxied);
    assert_eq!(seen[1], auth("alice", b"pw", "LOGIN"));
    let seen = run(
        settings(),
        b"AUTH\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\n",
        proxied,
    );
    assert_eq!(
        seen,
        vec![out(
            "+OK mailfront ready.\r\n+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n-ERR Unsupported authentication mechanism.\r\n\
             -ERR Invalid base64 data in initial response.\r\n+ \r\n-ERR Authentication cancelled.\r\n\
             -ERR [AUTH] Authentication failed.\r\n"
        )]
    );
}

#[test]
fn plaintext_refused_and_stls() {
    let starttls = Pop3Settings::default();
    let seen = run(
        starttls.clone(),
        b"CAPA\r\nUSER alice\r\nAUTH PLAIN AGFsaWNlAHB3\r\n",
        proxied,
    );
    assert_eq!(
        seen,
        vec![out(
            "+OK mailfront ready.\r\n+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n.\r\n\
             -ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n\
             -ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n"
        )]
    );
    // STLS discards what was pipelined with it.
    let mut front = Pop3FrontEnd::new(starttls);
    let _ = front.next_step();
    front.feed(b"STLS\r\nUSER alice\r\nPASS pw\r\n");
    assert!(
        matches!(front.next_step(), Step::Send(b) if b == b"+OK Begin TLS negotiation now.\r\n")
    );
    assert!(matches!(front.next_step(), Step::StartTls));
    front.tls_established();
    assert!(matches!(front.next_step(), Step::Read));
    front.feed(b"USER alice\r\nPASS pw\r\n");
    assert!(matches!(front.next_step(), Step::Send(b) if b == b"+OK\r\n"));
    assert!(matches!(
        front.next_step(),
        Step::Event(FrontEvent::Authenticate(_))
    ));
    let seen = run(settings(), b"STLS\r\n", proxied);
    assert_eq!(
        seen,
        vec![out(
            "+OK mailfront ready.\r\n-ERR STLS is not available on this port.\r\n"
        )]
    );
}

#[test]
fn failures_and_limits() {
    let cases = [
        (
            AuthFailure::BadCredentials,
            "-ERR [AUTH] Authentication failed.\r\n",
        ),
        (
            AuthFailure::Temporary,
            "-ERR [SYS/TEMP] Service temporarily unavailable, try again later.\r\n",
        ),
        (
            AuthFailure::ProtocolDisabled,
            "-ERR [AUTH] POP3 access is not enabled for this account.\r\n",
        ),
    ];
    for (failure, reply) in cases {
        let seen = run(settings(), b"USER a\r\nPASS b\r\n", |_| {
            AuthResult::Failed(failure)
        });
        assert_eq!(seen[2], out(reply));
    }
    let limited = Pop3Settings {
        limits: Limits {
            max_line_length: 600,
            max_commands_before_auth: 3,
            max_auth_failures: 2,
            ..Limits::default()
        },
        ..settings()
    };
    let seen = run(limited.clone(), &[b'A'; 700], proxied);
    assert_eq!(
        seen,
        vec![
            out("+OK mailfront ready.\r\n-ERR Line too long.\r\n"),
            Seen::Close
        ]
    );
    let seen = run(limited, b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n", proxied);
    assert_eq!(seen.last(), Some(&Seen::Close));
    assert!(
        matches!(&seen[0], Seen::Out(t) if t.ends_with("-ERR Too many commands before authentication.\r\n"))
    );
    let failing = Pop3Settings {
        limits: Limits {
            max_auth_failures: 2,
            ..Limits::default()
        },
        ..settings()
    };
    let seen = run(
        failing,
        b"USER a\r\nPASS b\r\nUSER a\r\nPASS b\r\nUSER a\r\n",
        refused,
    );
    assert_eq!(seen.last(), Some(&Seen::Close));
    assert!(
        matches!(&seen[seen.len() - 2], Seen::Out(t) if t.ends_with("-ERR Too many authentication failures.\r\n"))
    );
}

#[test]
fn quit_and_misc() {
    let seen = run(
        settings(),
        b"PASS x\r\nAPOP a b\r\nRETR 1\r\nXYZZY\r\nUSER \r\nQUIT\r\nNOOP\r\n",
        proxied,
    );
    assert_eq!(
        seen,
        vec![
            out(
                "+OK mailfront ready.\r\n-ERR No user name given (USER first).\r\n-ERR APOP is not supported.\r\n\
                 -ERR Not logged in.\r\n-ERR Unknown command.\r\n-ERR Invalid user name.\r\n+OK Logging out.\r\n"
            ),
            Seen::Close
        ]
    );
}

#[test]
fn idle_timeout() {
    let front = || Pop3FrontEnd::new(settings());
    assert_eq!(
        goodbye(front(), FrontEnd::idle_timeout),
        b"-ERR Disconnected for inactivity.\r\n"
    );
    assert_eq!(
        goodbye(front(), FrontEnd::login_timeout),
        b"-ERR Login took too long.\r\n"
    );
}
