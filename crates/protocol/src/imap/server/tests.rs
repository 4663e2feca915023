//! Byte-level tests of the IMAP front end, including every split of the input.

use super::*;
use crate::testing::{Seen, auth, goodbye, out, password_pw, refused};
use crate::{Machine, Step};

fn plain_settings() -> ImapSettings {
    ImapSettings {
        tls: ClientTls::None,
        allow_plaintext_auth: true,
        ..ImapSettings::default()
    }
}

fn drive(
    settings: ImapSettings,
    input: &[u8],
    chunk: usize,
    answer: impl FnMut(&Credentials) -> AuthResult,
) -> Vec<Seen> {
    crate::testing::drive(ImapFrontEnd::new(settings), input, chunk, answer)
}

fn ok_caps(_: &Credentials) -> AuthResult {
    AuthResult::Proxied {
        capabilities: Some("IMAP4rev1 IDLE".into()),
    }
}

const GREETING_PLAIN: &str = "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN] mailfront ready.\r\n";

#[test]
fn every_split_gives_the_same_session() {
    let input: &[u8] = b"a1 CAPABILITY\r\na2 NOOP\r\na3 ID (\"name\" \"imaplib\")\r\n\
        a4 LOGIN {5}\r\nalice {3+}\r\nbad\r\nfoo BAR\r\n\x00\xff\r\n\
        a5 AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\nz1 SELECT INBOX\r\nz2 NO";
    let mut attempts = 0;
    let mut check = password_pw(ok_caps);
    let mut answer = |c: &Credentials| {
        attempts += 1;
        check(c)
    };
    let expected = vec![
        out(&format!(
            "{GREETING_PLAIN}* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN\r\n\
             a1 OK Capability completed.\r\na2 OK NOOP completed.\r\n\
             * ID (\"name\" \"mailfront\")\r\na3 OK ID completed.\r\n+ OK\r\n"
        )),
        auth("alice", b"bad", "LOGIN"),
        out("a4 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n\
             foo BAD Error in IMAP command.\r\n* BAD Error in IMAP command.\r\n+ \r\n"),
        auth("alice", b"pw", "PLAIN"),
        out("a5 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        Seen::Proxy(b"z1 SELECT INBOX\r\nz2 NO".to_vec()),
    ];
    assert_eq!(
        drive(plain_settings(), input, input.len(), &mut answer),
        expected
    );
    for chunk in 1..input.len() {
        assert_eq!(
            drive(plain_settings(), input, chunk, &mut answer),
            expected,
            "chunk {chunk}"
        );
    }
    assert!(attempts > 0);
}

#[test]
fn login_argument_forms() {
    let cases: [(&[u8], &str, &[u8]); 5] = [
        (b"a LOGIN alice secret\r\n", "alice", b"secret"),
        (
            b"a LOGIN \"alice@example.com\" \"p\\\"w\\\\x\"\r\n",
            "alice@example.com",
            b"p\"w\\x",
        ),
        (
            b"a LOGIN {17}\r\nalice@example.com {6}\r\nsecret\r\n",
            "alice@example.com",
            b"secret",
        ),
        (
            b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n",
            "alice",
            b"secret",
        ),
        (
            b"a LOGIN alice {4+}\r\n\xc3\xa9\xc3\xa9\r\n",
            "alice",
            "éé".as_bytes(),
        ),
    ];
    for (input, user, password) in cases {
        let seen = drive(plain_settings(), input, input.len(), ok_caps);
        assert!(
            seen.contains(&auth(user, password, "LOGIN")),
            "{input:?}: {seen:?}"
        );
        assert!(matches!(seen.last(), Some(Seen::Proxy(p)) if p.is_empty()));
    }
}

#[test]
fn authenticate_variants() {
    let run = |input: &[u8], chunk| drive(plain_settings(), input, chunk, ok_caps);
    // PLAIN with SASL-IR, with an authorization identity.
    let seen = run(b"a AUTHENTICATE PLAIN Ym9iAGFsaWNlAHB3\r\n", 64);
    assert!(seen.contains(&Seen::Auth {
        authcid: "alice".into(),
        authzid: Some("bob".into()),
        password: b"pw".to_vec(),
        mechanism: "PLAIN"
    }));
    // LOGIN without initial response: two challenges.
    let seen = run(b"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\ncHc=\r\n", 64);
    assert_eq!(
        seen[0],
        out(&format!(
            "{GREETING_PLAIN}+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
        ))
    );
    assert_eq!(seen[1], auth("alice", b"pw", "LOGIN"));
    // LOGIN with the user name as initial response.
    let seen = run(b"a AUTHENTICATE LOGIN YWxpY2U=\r\ncHc=\r\n", 64);
    assert_eq!(seen[1], auth("alice", b"pw", "LOGIN"));
    // Cancelled, bad base64, malformed PLAIN, unknown mechanism.
    let seen = run(b"a AUTHENTICATE PLAIN\r\n*\r\nb AUTHENTICATE PLAIN\r\n!!\r\nc AUTHENTICATE PLAIN YWxpY2U=\r\nd AUTHENTICATE CRAM-MD5\r\n", 200);
    assert_eq!(
        seen,
        vec![out(&format!(
            "{GREETING_PLAIN}+ \r\na BAD Authentication aborted by client.\r\n\
             + \r\nb BAD Invalid base64 data in continued response.\r\n\
             c NO [AUTHENTICATIONFAILED] Authentication failed.\r\n\
             d NO Unsupported authentication mechanism.\r\n"
        ))]
    );
}

#[test]
fn plaintext_auth_refused_without_tls() {
    let settings = ImapSettings {
        tls: ClientTls::StartTls,
        ..ImapSettings::default()
    };
    let seen = drive(
        settings,
        b"a CAPABILITY\r\nb LOGIN alice pw\r\nc AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n",
        100,
        ok_caps,
    );
    assert_eq!(
        seen,
        vec![out(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS STARTTLS LOGINDISABLED] mailfront ready.\r\n\
             * CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS STARTTLS LOGINDISABLED\r\na OK Capability completed.\r\n\
             b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n\
             c NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n"
        )]
    );
}

#[test]
fn starttls_discards_pipelined_commands() {
    let settings = ImapSettings::default();
    let mut front = ImapFrontEnd::new(settings);
    assert!(matches!(front.next_step(), Step::Send(_)));
    front.feed(b"a STARTTLS\r\nb LOGIN alice pw\r\n");
    let Step::Send(reply) = front.next_step() else {
        panic!()
    };
    assert_eq!(reply, b"a OK Begin TLS negotiation now.\r\n");
    assert!(matches!(front.next_step(), Step::StartTls));
    // Bytes arriving before the handshake completes are not buffered either.
    front.feed(b"c LOGIN alice pw\r\n");
    front.tls_established();
    assert!(matches!(front.next_step(), Step::Read));
    // Over TLS: STARTTLS is gone, authentication is offered.
    front.feed(b"d CAPABILITY\r\ne STARTTLS\r\n");
    // The untagged and the tagged reply to one command are one send.
    let Step::Send(caps) = front.next_step() else {
        panic!()
    };
    assert_eq!(
        caps,
        b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN\r\nd OK Capability completed.\r\n"
    );
    let Step::Send(again) = front.next_step() else {
        panic!()
    };
    assert_eq!(again, b"e BAD TLS is already active.\r\n");
}

#[test]
fn starttls_where_not_offered() {
    let seen = drive(plain_settings(), b"a STARTTLS\r\n", 64, ok_caps);
    assert_eq!(
        seen,
        vec![out(&format!(
            "{GREETING_PLAIN}a BAD STARTTLS is not available on this port.\r\n"
        ))]
    );
    let implicit = ImapSettings {
        tls: ClientTls::Implicit,
        ..ImapSettings::default()
    };
    let seen = drive(implicit, b"a STARTTLS\r\n", 64, ok_caps);
    assert!(matches!(&seen[0], Seen::Out(t) if t.ends_with("a BAD TLS is already active.\r\n")));
}

#[test]
fn limits() {
    let limits = Limits {
        max_line_length: 40,
        max_literal_size: 10,
        max_commands_before_auth: 4,
        max_auth_failures: 2,
    };
    let settings = ImapSettings {
        limits,
        ..plain_settings()
    };
    let greeting = GREETING_PLAIN;
    let run = |input: &[u8]| drive(settings.clone(), input, 100, ok_caps);
    let closed_after = |text: &str| vec![out(&format!("{greeting}{text}")), Seen::Close];
    // A line over the limit: BYE and close, without waiting for its end.
    assert_eq!(run(&[b'a'; 100]), closed_after("* BYE Line too long.\r\n"));
    // A synchronising literal over the limit is refused and the session goes on.
    assert_eq!(
        run(b"a LOGIN {11}\r\nb NOOP\r\n"),
        vec![out(&format!(
            "{greeting}a BAD Literal too large.\r\nb OK NOOP completed.\r\n"
        ))]
    );
    // A non-synchronising one cannot be skipped safely: close.
    assert_eq!(
        run(b"a LOGIN {11+}\r\n01234567890\r\n"),
        closed_after("* BYE Literal too large.\r\n")
    );
    // Commands before authentication.
    let seen = run(b"a NOOP\r\nb NOOP\r\nc NOOP\r\nd NOOP\r\ne NOOP\r\n");
    assert_eq!(seen.last(), Some(&Seen::Close),);
    assert!(
        matches!(&seen[0], Seen::Out(t) if t.ends_with("d OK NOOP completed.\r\n* BYE Too many commands before authentication.\r\n"))
    );
    // Authentication failures.
    let seen = drive(
        settings,
        b"a LOGIN x y\r\nb LOGIN x y\r\nc LOGIN x y\r\n",
        100,
        refused,
    );
    assert_eq!(seen.last(), Some(&Seen::Close));
    let auths = seen
        .iter()
        .filter(|s| matches!(s, Seen::Auth { .. }))
        .count();
    assert_eq!(auths, 2);
    assert!(
        matches!(&seen[seen.len() - 2], Seen::Out(t) if t == "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n* BYE Too many authentication failures.\r\n")
    );
}

#[test]
fn failure_replies() {
    let cases = [
        (
            AuthFailure::BadCredentials,
            "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ),
        (
            AuthFailure::AuthzidRefused,
            "a NO [AUTHORIZATIONFAILED] Not authorized to act as that user.\r\n",
        ),
        (
            AuthFailure::ProtocolDisabled,
            "a NO [CONTACTADMIN] IMAP access is not enabled for this account.\r\n",
        ),
        (
            AuthFailure::Temporary,
            "a NO [UNAVAILABLE] Service temporarily unavailable, try again later.\r\n",
        ),
    ];
    for (failure, reply) in cases {
        let seen = drive(plain_settings(), b"a LOGIN x y\r\n", 64, |_| {
            AuthResult::Failed(failure)
        });
        assert_eq!(seen[2], out(reply), "{failure:?}");
    }
    // Temporary failures do not count towards the limit.
    let settings = one_failure_allowed();
    let seen = drive(settings, b"a LOGIN x y\r\nb LOGIN x y\r\n", 64, |_| {
        AuthResult::Failed(AuthFailure::Temporary)
    });
    assert!(!seen.contains(&Seen::Close));
}

/// Plain settings where the first counted authentication failure ends the session.
fn one_failure_allowed() -> ImapSettings {
    ImapSettings {
        limits: Limits {
            max_auth_failures: 1,
            ..Limits::default()
        },
        ..plain_settings()
    }
}

#[test]
fn a_referral_names_where_to_log_in_and_is_no_failure() {
    let settings = one_failure_allowed();
    let seen = drive(settings, b"a LOGIN x y\r\nb LOGIN x y\r\n", 64, |_| {
        AuthResult::Referred {
            url: "imap://x;AUTH=*@imap.east.example.com/".into(),
        }
    });
    assert_eq!(
        seen[2],
        out(
            "a NO [REFERRAL imap://x;AUTH=*@imap.east.example.com/] Your mailbox is served at another site.\r\n"
        )
    );
    assert!(
        !seen.contains(&Seen::Close),
        "a referral counted as a failure"
    );
}

#[test]
fn proxied_without_capabilities() {
    let seen = drive(plain_settings(), b"a LOGIN x y\r\n", 64, |_| {
        AuthResult::Proxied { capabilities: None }
    });
    assert_eq!(seen[2], out("a OK Logged in\r\n"));
}

#[test]
fn commands_needing_authentication_and_garbage() {
    let seen = drive(
        plain_settings(),
        b"a SELECT INBOX\r\n\r\n* NOOP\r\n\x01\x02\x03\r\nb LOGIN\r\nc LOGIN a b c\r\n",
        64,
        ok_caps,
    );
    assert_eq!(
        seen,
        vec![out(&format!(
            "{GREETING_PLAIN}a BAD Command not permitted before authentication.\r\n\
             * BAD Error in IMAP command.\r\n* BAD Error in IMAP command.\r\n* BAD Error in IMAP command.\r\n\
             b BAD Error in IMAP command.\r\nc BAD Error in IMAP command.\r\n"
        ))]
    );
}

#[test]
fn user_names_with_control_characters_never_reach_the_driver() {
    let seen = drive(
        plain_settings(),
        b"a LOGIN {7+}\r\nal\r\nice pw\r\n",
        64,
        ok_caps,
    );
    assert!(!seen.iter().any(|s| matches!(s, Seen::Auth { .. })));
    assert!(
        matches!(&seen[0], Seen::Out(t) if t.ends_with("a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
    );
}

#[test]
fn idle_timeout_and_shutdown_say_goodbye() {
    let front = || ImapFrontEnd::new(plain_settings());
    assert_eq!(
        goodbye(front(), FrontEnd::idle_timeout),
        b"* BYE Disconnected for inactivity.\r\n"
    );
    assert_eq!(
        goodbye(front(), FrontEnd::shutdown),
        b"* BYE Server shutting down.\r\n"
    );
    assert_eq!(
        goodbye(front(), FrontEnd::login_timeout),
        b"* BYE Login took too long.\r\n"
    );
}

#[test]
fn logout() {
    let seen = drive(plain_settings(), b"a LOGOUT\r\nb NOOP\r\n", 64, ok_caps);
    assert_eq!(
        seen,
        vec![
            out(&format!(
                "{GREETING_PLAIN}* BYE Logging out.\r\na OK Logout completed.\r\n"
            )),
            Seen::Close
        ]
    );
}

#[test]
fn oauth_tokens_where_offered_with_the_error_challenge_on_refusal() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let offer = OAuthOffer {
        configuration: "https://id.example.com/.well-known/openid-configuration".into(),
        scope: Some("imap".into()),
    };
    let settings = ImapSettings {
        oauth: Some(offer.clone()),
        ..plain_settings()
    };
    let xoauth2 = b64(b"user=alice@example.com\x01auth=Bearer good.token.sig\x01\x01");
    let bearer = b64(b"n,,\x01auth=Bearer bad.token.sig\x01\x01");
    let input = format!(
        "a1 CAPABILITY\r\na2 AUTHENTICATE OAUTHBEARER {bearer}\r\nAQ==\r\na3 AUTHENTICATE XOAUTH2 {xoauth2}\r\n"
    );
    let answer = |c: &Credentials| {
        assert!(c.is_token());
        if c.password.expose() == b"good.token.sig" {
            AuthResult::Proxied { capabilities: None }
        } else {
            AuthResult::Failed(AuthFailure::BadCredentials)
        }
    };
    let seen = drive(settings, input.as_bytes(), input.len(), answer);
    let challenge = offer.challenge();
    assert_eq!(
        seen,
        vec![
            out(
                "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2] mailfront ready.\r\n\
                 * CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2\r\na1 OK Capability completed.\r\n"
            ),
            auth("", b"bad.token.sig", "OAUTHBEARER"),
            out(&format!(
                "+ {challenge}\r\na2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
            )),
            auth("alice@example.com", b"good.token.sig", "XOAUTH2"),
            out("a3 OK Logged in\r\n"),
            Seen::Proxy(Vec::new()),
        ]
    );
    let json = base64::engine::general_purpose::STANDARD
        .decode(&challenge)
        .unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"status":"invalid_token","scope":"imap","openid-configuration":"https://id.example.com/.well-known/openid-configuration"}"#
    );
    // Not configured: not offered, and refused like any unknown mechanism.
    let seen = drive(
        plain_settings(),
        format!("a1 AUTHENTICATE XOAUTH2 {xoauth2}\r\n").as_bytes(),
        usize::MAX,
        |_: &Credentials| unreachable!("no token may reach the driver"),
    );
    assert_eq!(
        seen,
        vec![out(&format!(
            "{GREETING_PLAIN}a1 NO Unsupported authentication mechanism.\r\n"
        ))]
    );
}

#[test]
fn a_token_without_an_initial_response() {
    use base64::Engine;
    let message = base64::engine::general_purpose::STANDARD
        .encode(b"user=alice@example.com\x01auth=Bearer good.token.sig\x01\x01");
    let settings = ImapSettings {
        oauth: Some(OAuthOffer {
            configuration: "https://id.example.com/x".into(),
            scope: None,
        }),
        ..plain_settings()
    };
    let input = format!("a1 AUTHENTICATE XOAUTH2\r\n{message}\r\n");
    let seen = drive(
        settings,
        input.as_bytes(),
        input.len(),
        |_: &Credentials| AuthResult::Proxied { capabilities: None },
    );
    assert_eq!(
        seen.get(1),
        Some(&auth("alice@example.com", b"good.token.sig", "XOAUTH2")),
        "{seen:?}"
    );
}
