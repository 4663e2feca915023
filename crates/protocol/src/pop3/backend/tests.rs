//! Byte-level tests of the POP3 backend login against scripted server transcripts.

use mailfront_model::Secret;

use super::*;
use crate::testing::{self, log_in as run, master};
use crate::{Machine, Step};

fn client() -> ClientInfo {
    testing::client("192.0.2.7:50123", "127.0.0.1:1110", "abc-1")
}

const DOVECOT_CAPA: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\nXCLIENT\r\n.\r\n";

#[test]
fn master_plain_with_xclient_at_every_split() {
    let mut script = b"+OK Dovecot ready.\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    script.extend_from_slice(b"+OK\r\n+OK Logged in.\r\n");
    let login = || {
        Pop3BackendLogin::new(
            master(SaslMechanism::Plain),
            BackendTls::None,
            Some(client()),
        )
    };
    for (chunk, sent, end) in testing::log_in_at_every_split(&script, login) {
        let mut lines = sent.split("\r\n");
        assert_eq!(lines.next(), Some("CAPA"));
        assert_eq!(
            lines.next(),
            Some("XCLIENT ADDR=192.0.2.7 PORT=50123 SESSION=abc1")
        );
        testing::assert_master_plain(lines.next().unwrap().strip_prefix("AUTH PLAIN ").unwrap());
        assert!(
            matches!(end, LoginEvent::Ready { .. }),
            "chunk {chunk}: {end:?}"
        );
    }
}

#[test]
fn master_user_pass_with_separator() {
    let mut script = b"+OK hi\r\n-ERR no CAPA\r\n".to_vec();
    script.extend_from_slice(b"+OK\r\n+OK Logged in.\r\n");
    let (sent, end) = run(
        Pop3BackendLogin::new(master(SaslMechanism::Login), BackendTls::None, None),
        &script,
        99,
    );
    assert_eq!(
        sent,
        "CAPA\r\nUSER alice@example.com*casmaster\r\nPASS masterpw\r\n"
    );
    assert!(matches!(end, LoginEvent::Ready { .. }));
}

#[test]
fn refusals() {
    let failure = |tls, script: &[u8], chunk| {
        let login = Pop3BackendLogin::new(master(SaslMechanism::Plain), tls, None);
        testing::failure(login, script, chunk)
    };
    let mut script = b"+OK hi\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    let mut refused = script.clone();
    refused.extend_from_slice(b"-ERR [AUTH] Authentication failed.\r\n");
    assert!(
        matches!(failure(BackendTls::None, &refused, 3), BackendFailure::Refused(t) if t.contains("[AUTH]"))
    );
    assert!(matches!(
        failure(BackendTls::None, b"* OK IMAP\r\n", 99),
        BackendFailure::Protocol(_)
    ));
    assert_eq!(
        failure(BackendTls::None, b"+OK hi\r\n", 99),
        BackendFailure::Closed
    );
    // STLS required but not offered.
    assert_eq!(
        failure(BackendTls::StartTls, &script, 99),
        BackendFailure::Unsupported("STLS")
    );
}

#[test]
fn pass_through_user_pass_refuses_line_breaks() {
    let auth = BackendAuth::PassThrough {
        user: "alice".into(),
        password: Secret::new(b"p\r\nDELE 1".to_vec()),
        mechanism: SaslMechanism::Login,
    };
    let mut script = b"+OK hi\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    assert_eq!(
        run(
            Pop3BackendLogin::new(auth, BackendTls::None, None),
            &script,
            99
        ),
        (
            "CAPA\r\n".to_owned(),
            LoginEvent::Failed(BackendFailure::UnsafeName)
        )
    );
}

#[test]
fn stls_to_backend() {
    let mut login = Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::StartTls, None);
    let _ = login.next_step();
    login.feed(b"+OK hi\r\n+OK\r\nSTLS\r\nSASL PLAIN\r\n.\r\n");
    assert!(matches!(login.next_step(), Step::Send(b) if b == b"CAPA\r\n"));
    assert!(matches!(login.next_step(), Step::Send(b) if b == b"STLS\r\n"));
    assert!(matches!(login.next_step(), Step::Read));
    login.feed(b"+OK Begin TLS\r\n+OK injected\r\n");
    assert!(matches!(login.next_step(), Step::StartTls));
    login.tls_established();
    let (sent, end) = run(login, b"+OK\r\nSASL PLAIN\r\n.\r\n+OK Logged in.\r\n", 4);
    assert!(sent.starts_with("CAPA\r\nAUTH PLAIN "), "{sent}");
    assert!(matches!(end, LoginEvent::Ready { .. }));
}
