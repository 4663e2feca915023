//! Byte-level tests of the IMAP backend login against scripted server transcripts.

use mailfront_model::Secret;

use super::*;
use crate::sasl::{decode_base64, decode_plain};
use crate::testing::{self, log_in as run, master};
use crate::{Machine, Step};

fn client() -> ClientInfo {
    testing::client("192.0.2.7:50123", "127.0.0.1:1143", "s1")
}

const DOVECOT_GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n";

#[test]
fn master_plain_with_id_at_every_split() {
    let mut script = DOVECOT_GREETING.to_vec();
    script.extend_from_slice(b"* ID NIL\r\nmf1 OK ID completed.\r\nmf2 OK [CAPABILITY IMAP4rev1 IDLE SORT] Logged in\r\n* 3 EXISTS\r\n");
    let login = || {
        ImapBackendLogin::new(
            master(SaslMechanism::Plain),
            BackendTls::None,
            Some(client()),
        )
    };
    for (chunk, sent, end) in testing::log_in_at_every_split(&script, login) {
        let mut lines = sent.split("\r\n");
        assert_eq!(
            lines.next().unwrap(),
            "mf1 ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"50123\" \"x-connected-ip\" \"127.0.0.1\" \"x-connected-port\" \"1143\" \"x-session-ext-id\" \"s1\")"
        );
        let auth = lines.next().unwrap();
        testing::assert_master_plain(auth.strip_prefix("mf2 AUTHENTICATE PLAIN ").unwrap());
        let LoginEvent::Ready {
            capabilities,
            leftover,
        } = end
        else {
            panic!("chunk {chunk}: {end:?}")
        };
        assert_eq!(capabilities.as_deref(), Some("IMAP4rev1 IDLE SORT"));
        // Whatever arrived after the login reply is handed on (all of it, at any split).
        // The leftover is what the machine had read past the login reply when it finished; the
        // rest would reach the client through the relay. Together they are the whole tail.
        let tail = b"* 3 EXISTS\r\n";
        assert!(tail.starts_with(&leftover), "chunk {chunk}: {leftover:?}");
    }
}

#[test]
fn master_login_command_and_capability_fallbacks() {
    // Greeting without capabilities, LOGIN with the separator, OK without capabilities.
    let script = b"* OK ready\r\n* CAPABILITY IMAP4rev1\r\nmf1 OK done\r\nmf2 OK Logged in\r\n* CAPABILITY IMAP4rev1 IDLE\r\nmf3 OK done\r\n";
    let login = ImapBackendLogin::new(
        master(SaslMechanism::Login),
        BackendTls::None,
        Some(client()),
    );
    let (sent, end) = run(login, script, script.len());
    assert_eq!(
        sent,
        "mf1 CAPABILITY\r\nmf2 LOGIN \"alice@example.com*casmaster\" \"masterpw\"\r\nmf3 CAPABILITY\r\n"
    );
    assert!(
        matches!(end, LoginEvent::Ready { capabilities: Some(c), .. } if c == "IMAP4rev1 IDLE")
    );
}

#[test]
fn pass_through_without_sasl_ir() {
    let auth = BackendAuth::PassThrough {
        user: "alice@example.com".into(),
        password: Secret::new(b"p\"w".to_vec()),
        mechanism: SaslMechanism::Plain,
    };
    let script = b"* OK [CAPABILITY IMAP4rev1] hi\r\n+ \r\nmf1 OK [CAPABILITY IMAP4rev1 X] ok\r\n";
    let (sent, end) = run(
        ImapBackendLogin::new(auth, BackendTls::None, None),
        script,
        5,
    );
    let mut lines = sent.split("\r\n");
    assert_eq!(lines.next(), Some("mf1 AUTHENTICATE PLAIN"));
    let plain = decode_plain(&decode_base64(lines.next().unwrap().as_bytes()).unwrap()).unwrap();
    assert_eq!(
        (plain.authzid, plain.authcid.as_str()),
        (None, "alice@example.com")
    );
    assert_eq!(plain.password.expose(), b"p\"w");
    assert!(matches!(end, LoginEvent::Ready { .. }));
}

#[test]
fn login_quoting_and_literals() {
    let auth = |password: &[u8]| BackendAuth::PassThrough {
        user: "alice".into(),
        password: Secret::new(password.to_vec()),
        mechanism: SaslMechanism::Login,
    };
    let with_literal =
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\nmf1 OK [CAPABILITY IMAP4rev1] ok\r\n";
    let (sent, _) = run(
        ImapBackendLogin::new(auth(b"a\\\"b"), BackendTls::None, None),
        with_literal,
        99,
    );
    assert_eq!(sent, "mf1 LOGIN \"alice\" \"a\\\\\\\"b\"\r\n");
    let (sent, _) = run(
        ImapBackendLogin::new(auth("é".as_bytes()), BackendTls::None, None),
        with_literal,
        99,
    );
    assert_eq!(sent, "mf1 LOGIN \"alice\" {2+}\r\né\r\n");
    // Without LITERAL+ an unquotable password cannot be sent.
    let without = b"* OK [CAPABILITY IMAP4rev1] hi\r\n";
    assert_eq!(
        testing::failure(
            ImapBackendLogin::new(auth(b"a\r\nb"), BackendTls::None, None),
            without,
            99
        ),
        BackendFailure::UnsafeName
    );
}

#[test]
fn refusals_and_garbage() {
    let failure = |script: &[u8], chunk| {
        let login = ImapBackendLogin::new(master(SaslMechanism::Plain), BackendTls::None, None);
        testing::failure(login, script, chunk)
    };
    let refused = b"* OK [CAPABILITY IMAP4rev1 SASL-IR] hi\r\nmf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
    assert!(
        matches!(failure(refused, 7), BackendFailure::Refused(t) if t.contains("AUTHENTICATIONFAILED"))
    );
    assert!(matches!(
        failure(b"SSH-2.0-OpenSSH\r\n", 99),
        BackendFailure::Protocol(_)
    ));
    assert!(matches!(
        failure(b"* BYE go away\r\n", 99),
        BackendFailure::Refused(_)
    ));
    assert_eq!(failure(b"* OK [CAPAB", 99), BackendFailure::Closed);
    // A huge line from something that is not IMAP is bounded.
    assert!(matches!(
        failure(&vec![b'x'; 200_000], 4096),
        BackendFailure::Protocol(_)
    ));
}

#[test]
fn user_containing_the_separator_is_refused() {
    let auth = BackendAuth::Master {
        user: "bob*other".into(),
        master: "casmaster".into(),
        password: Secret::new("pw".into()),
        separator: "*".into(),
        mechanism: SaslMechanism::Login,
    };
    assert_eq!(
        run(
            ImapBackendLogin::new(auth, BackendTls::None, None),
            DOVECOT_GREETING,
            99
        ),
        (
            "".to_owned(),
            LoginEvent::Failed(BackendFailure::UnsafeName)
        )
    );
}

#[test]
fn starttls_to_backend() {
    let mut login = ImapBackendLogin::new(master(SaslMechanism::Plain), BackendTls::StartTls, None);
    assert!(matches!(login.next_step(), Step::Read));
    // Bytes after the STARTTLS reply in the same read came in clear text: they are dropped.
    login.feed(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n");
    assert!(matches!(login.next_step(), Step::Send(b) if b == b"mf1 STARTTLS\r\n"));
    assert!(matches!(login.next_step(), Step::Read));
    login.feed(b"mf1 OK go\r\nmf9 injected\r\n");
    assert!(matches!(login.next_step(), Step::StartTls));
    login.tls_established();
    let (sent, end) = run(
        login,
        b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\nmf2 OK caps\r\nmf3 OK [CAPABILITY IMAP4rev1] in\r\n",
        10,
    );
    assert!(
        sent.starts_with("mf2 CAPABILITY\r\nmf3 AUTHENTICATE PLAIN "),
        "{sent}"
    );
    assert!(matches!(end, LoginEvent::Ready { .. }));
    // A backend without STARTTLS is refused, not used in clear text.
    assert_eq!(
        run(
            ImapBackendLogin::new(master(SaslMechanism::Plain), BackendTls::StartTls, None),
            DOVECOT_GREETING,
            99
        ),
        (
            "".to_owned(),
            LoginEvent::Failed(BackendFailure::Unsupported("STARTTLS"))
        )
    );
}

#[test]
fn capabilities_with_control_characters_are_not_passed_on() {
    let mut script = DOVECOT_GREETING.to_vec();
    script.extend_from_slice(
        b"* ID NIL\r\nmf1 OK ID completed.\r\nmf2 OK [CAPABILITY IMAP4rev1 ID\rLE] Logged in\r\n",
    );
    let login = ImapBackendLogin::new(
        master(SaslMechanism::Plain),
        BackendTls::None,
        Some(client()),
    );
    let (_, end) = run(login, &script, script.len());
    assert!(
        matches!(
            end,
            LoginEvent::Ready {
                capabilities: None,
                ..
            }
        ),
        "{end:?}"
    );
}
