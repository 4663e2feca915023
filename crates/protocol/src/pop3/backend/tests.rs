//! Byte-level tests of the POP3 backend login against scripted server transcripts.

use std::net::SocketAddr;

use mailfront_model::Secret;

use super::*;
use crate::sasl::{decode_base64, decode_plain};

fn master(mechanism: SaslMechanism) -> BackendAuth {
    BackendAuth::Master {
        user: "alice@example.com".into(),
        master: "casmaster".into(),
        password: Secret::new("masterpw".into()),
        separator: "*".into(),
        mechanism,
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        client: "192.0.2.7:50123".parse::<SocketAddr>().unwrap(),
        local: "127.0.0.1:1110".parse::<SocketAddr>().unwrap(),
        session_id: "abc-1".into(),
    }
}

fn run(mut login: Pop3BackendLogin, script: &[u8], chunk: usize) -> (String, BackendAction) {
    let mut sent = String::new();
    let mut pieces = script.chunks(chunk.max(1));
    loop {
        match login.next_action() {
            BackendAction::Send(bytes) => sent.push_str(&String::from_utf8(bytes).unwrap()),
            BackendAction::Read => match pieces.next() {
                Some(piece) => login.feed(piece),
                None => login.eof(),
            },
            BackendAction::StartTls => {
                sent.push_str("<TLS>");
                login.tls_established();
            }
            end => return (sent, end),
        }
    }
}

const DOVECOT_CAPA: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\nXCLIENT\r\n.\r\n";

#[test]
fn master_plain_with_xclient_at_every_split() {
    let mut script = b"+OK Dovecot ready.\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    script.extend_from_slice(b"+OK\r\n+OK Logged in.\r\n");
    for chunk in 1..=script.len() {
        let login = Pop3BackendLogin::new(
            master(SaslMechanism::Plain),
            BackendTls::None,
            Some(client()),
        );
        let (sent, end) = run(login, &script, chunk);
        let mut lines = sent.split("\r\n");
        assert_eq!(lines.next(), Some("CAPA"));
        assert_eq!(
            lines.next(),
            Some("XCLIENT ADDR=192.0.2.7 PORT=50123 SESSION=abc1")
        );
        let b64 = lines.next().unwrap().strip_prefix("AUTH PLAIN ").unwrap();
        let plain = decode_plain(&decode_base64(b64.as_bytes()).unwrap()).unwrap();
        assert_eq!(plain.authzid.as_deref(), Some("alice@example.com"));
        assert_eq!(plain.authcid, "casmaster");
        assert!(
            matches!(end, BackendAction::Ready { .. }),
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
    assert!(matches!(end, BackendAction::Ready { .. }));
}

#[test]
fn refusals() {
    let mut script = b"+OK hi\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    script.extend_from_slice(b"-ERR [AUTH] Authentication failed.\r\n");
    let (_, end) = run(
        Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::None, None),
        &script,
        3,
    );
    assert!(
        matches!(end, BackendAction::Failed(BackendFailure::Refused(t)) if t.contains("[AUTH]"))
    );
    let (_, end) = run(
        Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::None, None),
        b"* OK IMAP\r\n",
        99,
    );
    assert!(matches!(
        end,
        BackendAction::Failed(BackendFailure::Protocol(_))
    ));
    let (_, end) = run(
        Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::None, None),
        b"+OK hi\r\n",
        99,
    );
    assert!(matches!(end, BackendAction::Failed(BackendFailure::Closed)));
    // STLS required but not offered.
    let mut script = b"+OK hi\r\n".to_vec();
    script.extend_from_slice(DOVECOT_CAPA);
    let (_, end) = run(
        Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::StartTls, None),
        &script,
        99,
    );
    assert!(matches!(
        end,
        BackendAction::Failed(BackendFailure::Unsupported("STLS"))
    ));
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
    let (sent, end) = run(
        Pop3BackendLogin::new(auth, BackendTls::None, None),
        &script,
        99,
    );
    assert_eq!(sent, "CAPA\r\n");
    assert!(matches!(
        end,
        BackendAction::Failed(BackendFailure::UnsafeName)
    ));
}

#[test]
fn stls_to_backend() {
    let mut login = Pop3BackendLogin::new(master(SaslMechanism::Plain), BackendTls::StartTls, None);
    let _ = login.next_action();
    login.feed(b"+OK hi\r\n+OK\r\nSTLS\r\nSASL PLAIN\r\n.\r\n");
    assert!(matches!(login.next_action(), BackendAction::Send(b) if b == b"CAPA\r\n"));
    assert!(matches!(login.next_action(), BackendAction::Send(b) if b == b"STLS\r\n"));
    assert!(matches!(login.next_action(), BackendAction::Read));
    login.feed(b"+OK Begin TLS\r\n+OK injected\r\n");
    assert!(matches!(login.next_action(), BackendAction::StartTls));
    login.tls_established();
    let (sent, end) = run(login, b"+OK\r\nSASL PLAIN\r\n.\r\n+OK Logged in.\r\n", 4);
    assert!(sent.starts_with("CAPA\r\nAUTH PLAIN "), "{sent}");
    assert!(matches!(end, BackendAction::Ready { .. }));
}
