//! Byte-level tests of the probes against scripted server transcripts, every script split at
//! every byte.

use mailfront_model::{BackendTls, SaslMechanism};

use super::*;
use crate::Step;
use crate::testing::master;

/// Runs `probe` against a server that sends `pieces` one after the other (one per read), then
/// closes. Returns what the probe sent and its verdict.
fn run<P: Probe>(mut probe: P, pieces: &[&[u8]]) -> (String, ProbeEvent) {
    run_on(&mut probe, pieces)
}

/// [`run`], on a probe the caller keeps.
fn run_on<P: Probe>(probe: &mut P, pieces: &[&[u8]]) -> (String, ProbeEvent) {
    let mut sent = String::new();
    let mut pieces = pieces.iter();
    loop {
        match probe.next_step() {
            Step::Send(bytes) => sent.push_str(&String::from_utf8(bytes).unwrap()),
            Step::Read => match pieces.next() {
                Some(piece) => probe.feed(piece),
                None => probe.eof(),
            },
            Step::StartTls => {
                sent.push_str("<TLS>");
                probe.tls_established();
            }
            Step::Event(event) => return (sent, event),
        }
    }
}

/// Every way of cutting `script`: in two at each byte, and into single bytes.
fn splits(script: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all: Vec<Vec<&[u8]>> = (0..=script.len())
        .map(|at| vec![&script[..at], &script[at..]])
        .collect();
    all.push(script.chunks(1).collect());
    all
}

/// Asserts that `make()` against `script`, cut every way, sends `sent` and ends with `verdict`.
fn check<P: Probe>(make: impl Fn() -> P, script: &[u8], sent: &str, verdict: &ProbeEvent) {
    for pieces in splits(script) {
        let (got_sent, got) = run(make(), &pieces);
        assert_eq!(got_sent, sent, "{script:?} cut as {pieces:?}");
        assert_eq!(&got, verdict, "{script:?} cut as {pieces:?}");
    }
}

/// Asserts that `make()` against `script`, cut every way, ends unhealthy with a reason
/// containing `why`.
fn check_unhealthy<P: Probe>(make: impl Fn() -> P, script: &[u8], why: &str) {
    for pieces in splits(script) {
        match run(make(), &pieces) {
            (_, ProbeEvent::Unhealthy(reason)) => {
                assert!(reason.contains(why), "{script:?}: {reason:?}");
                assert!(!reason.chars().any(char::is_control), "{reason:?}");
            }
            (sent, healthy) => panic!("{script:?} cut as {pieces:?}: {sent:?} {healthy:?}"),
        }
    }
}

fn greeting(kind: Greeting) -> impl Fn() -> GreetingProbe {
    move || GreetingProbe::new(kind, "cas1.example.com")
}

#[test]
fn imap_greetings() {
    let imap = greeting(Greeting::Imap);
    let logout = "mfprobe LOGOUT\r\n";
    check(
        &imap,
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.\r\n",
        logout,
        &ProbeEvent::Healthy,
    );
    check(
        &imap,
        b"* PREAUTH welcome\r\n",
        logout,
        &ProbeEvent::Healthy,
    );
    check(&imap, b"* ok\n", logout, &ProbeEvent::Healthy);
    check_unhealthy(&imap, b"* BYE [UNAVAILABLE] Too many\r\n", "* BYE");
    check_unhealthy(&imap, b"* OKAY\r\n", "greeting");
    check_unhealthy(&imap, b"+OK Dovecot ready.\r\n", "greeting");
    check_unhealthy(&imap, b"* OK partial", "closed");
    check_unhealthy(&imap, b"", "closed");
}

#[test]
fn pop3_greetings() {
    let pop3 = greeting(Greeting::Pop3);
    check(
        &pop3,
        b"+OK Dovecot ready.\r\n",
        "QUIT\r\n",
        &ProbeEvent::Healthy,
    );
    check(&pop3, b"+OK\r\n", "QUIT\r\n", &ProbeEvent::Healthy);
    check_unhealthy(&pop3, b"-ERR [SYS/TEMP] busy\r\n", "-ERR");
    check_unhealthy(&pop3, b"* OK IMAP\r\n", "greeting");
    check_unhealthy(&pop3, b"+OKAY\r\n", "greeting");
}

#[test]
fn submission_greetings() {
    let submission = greeting(Greeting::Submission);
    check(
        &submission,
        b"220-mbx1.example.com ESMTP\r\n220 ready\r\n",
        "QUIT\r\n",
        &ProbeEvent::Healthy,
    );
    check_unhealthy(&submission, b"421 4.3.2 busy\r\n", "421");
    check_unhealthy(
        &submission,
        b"554-no\r\n554 go away\r\n",
        "554 no / go away",
    );
    check_unhealthy(&submission, b"220-one\r\n250 two\r\n", "malformed");
    check_unhealthy(&submission, b"+OK POP3\r\n", "malformed");
    check_unhealthy(&submission, b"220-half", "closed");
}

#[test]
fn lmtp_and_smtp_say_hello() {
    let answer = b"220 mbx1 LMTP ready\r\n250-mbx1\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    check(
        greeting(Greeting::Lmtp),
        answer,
        "LHLO cas1.example.com\r\nQUIT\r\n",
        &ProbeEvent::Healthy,
    );
    check(
        greeting(Greeting::Smtp),
        answer,
        "EHLO cas1.example.com\r\nQUIT\r\n",
        &ProbeEvent::Healthy,
    );
    check_unhealthy(
        greeting(Greeting::Lmtp),
        b"220 ready\r\n451 4.3.0 cannot deliver now\r\n",
        "LHLO: 451",
    );
    check_unhealthy(greeting(Greeting::Lmtp), b"220 ready\r\n", "closed");
    check_unhealthy(greeting(Greeting::Smtp), b"421 busy\r\n", "greeting: 421");
}

#[test]
fn the_hello_answer_says_what_a_delivery_server_offers() {
    let mut probe = GreetingProbe::new(Greeting::Lmtp, "cas1");
    assert_eq!(probe.offers(), None);
    run_on(
        &mut probe,
        &[b"220 mx\r\n250-mx\r\n250-DSN\r\n250 8BITMIME\r\n"],
    );
    assert_eq!(
        probe.offers(),
        Some(mailfront_model::DeliveryExtensions {
            dsn: true,
            smtputf8: false
        })
    );
    let mut refused = GreetingProbe::new(Greeting::Smtp, "cas1");
    run_on(&mut refused, &[b"220 mx\r\n451 busy\r\n"]);
    assert_eq!(refused.offers(), None);
}

#[test]
fn a_hello_name_cannot_add_a_command() {
    let (sent, _) = run(
        GreetingProbe::new(Greeting::Lmtp, "cas1\r\nRSET x"),
        &[b"220 hi\r\n"],
    );
    assert_eq!(sent, "LHLO cas1RSETx\r\n");
    let (sent, _) = run(GreetingProbe::new(Greeting::Smtp, " "), &[b"220 hi\r\n"]);
    assert_eq!(sent, "EHLO localhost\r\n");
}

#[test]
fn long_lines_are_unhealthy_and_bounded() {
    let mut long = vec![b'*'; MAX_PROBE_LINE + 10];
    long.extend_from_slice(b"\r\n");
    for kind in [
        Greeting::Imap,
        Greeting::Pop3,
        Greeting::Submission,
        Greeting::Lmtp,
    ] {
        // In one piece, and endless: the verdict comes once the limit is passed.
        let (_, verdict) = run(GreetingProbe::new(kind, "n"), &[&long]);
        assert!(
            matches!(&verdict, ProbeEvent::Unhealthy(why) if why.contains("too long")),
            "{kind:?}: {verdict:?}"
        );
        let mut probe = GreetingProbe::new(kind, "n");
        let mut fed = 0;
        while probe.next_step() == Step::Read {
            probe.feed(&[b'2'; 1024]);
            fed += 1024;
            assert!(fed < 4 * MAX_PROBE_LINE, "{kind:?} reads without bound");
        }
    }
    let (_, verdict) = run(HttpProbe::new("h", "/"), &[&long]);
    assert!(matches!(verdict, ProbeEvent::Unhealthy(why) if why.contains("too long")));
}

#[test]
fn any_byte_is_judged_without_panic() {
    // Every byte value at the start of a line and inside one, and a bare CR, for every probe:
    // each ends with a verdict, and no reason carries a control character into the log.
    for byte in 0..=255u8 {
        for script in [
            vec![byte, b'\r', b'\n'],
            vec![b'2', b'2', b'0', b' ', byte, b'\r', b'\n'],
            vec![b'*', b' ', b'B', b'Y', b'E', b' ', byte, b'\r', b'x', b'\n'],
            b"HTTP/1.1 500 "
                .iter()
                .copied()
                .chain([byte, b'\n'])
                .collect(),
        ] {
            for kind in [
                Greeting::Imap,
                Greeting::Pop3,
                Greeting::Submission,
                Greeting::Lmtp,
                Greeting::Smtp,
            ] {
                if let (_, ProbeEvent::Unhealthy(why)) =
                    run(GreetingProbe::new(kind, "n"), &[&script])
                {
                    assert!(!why.chars().any(char::is_control), "{why:?}");
                }
            }
            if let (_, ProbeEvent::Unhealthy(why)) = run(HttpProbe::new("h", "/"), &[&script]) {
                assert!(!why.chars().any(char::is_control), "{why:?}");
            }
        }
    }
}

#[test]
fn http_status_lines() {
    let http = || HttpProbe::new("mbx1.example.com:8443", "/health");
    let request = "GET /health HTTP/1.1\r\nHost: mbx1.example.com:8443\r\nUser-Agent: mailfront-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    for good in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 204 \r\n",
        b"HTTP/1.0 302 Found\r\nLocation: /owa/\r\n\r\n",
        b"HTTP/1.1 399\n",
    ] {
        check(http, good, request, &ProbeEvent::Healthy);
    }
    check_unhealthy(
        http,
        b"HTTP/1.1 503 Service Unavailable\r\n",
        "HTTP status: ",
    );
    check_unhealthy(http, b"HTTP/1.1 404 Not Found\r\n", "404");
    check_unhealthy(http, b"HTTP/1.1 100 Continue\r\n", "HTTP status");
    check_unhealthy(http, b"HTTP/2 200\r\n", "not an HTTP response");
    check_unhealthy(http, b"HTTP/1.1 2000 OK\r\n", "not an HTTP response");
    check_unhealthy(http, b"HTTP/1.1 20x OK\r\n", "not an HTTP response");
    check_unhealthy(http, b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP response");
    check_unhealthy(http, b"HTTP/1.1 200 O", "closed");
}

#[test]
fn an_unsafe_http_request_is_never_sent() {
    for (authority, path) in [
        ("h", "/a b"),
        ("h", "/a\r\nX-Evil: 1"),
        ("h", "relative"),
        ("h\r\nX: y", "/"),
        ("", "/"),
    ] {
        let (sent, verdict) = run(HttpProbe::new(authority, path), &[b"HTTP/1.1 200 OK\r\n"]);
        assert_eq!(sent, "", "{authority:?} {path:?}");
        assert!(
            matches!(&verdict, ProbeEvent::Unhealthy(why) if !why.chars().any(char::is_control)),
            "{verdict:?}"
        );
    }
}

#[test]
fn imap_login() {
    let probe = || LoginProbe::imap(master(SaslMechanism::Plain), BackendTls::None);
    let script = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\nmf1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n";
    for pieces in splits(script) {
        let (sent, verdict) = run(probe(), &pieces);
        assert_eq!(verdict, ProbeEvent::Healthy, "{pieces:?}");
        let mut lines = sent.split("\r\n");
        let auth = lines.next().unwrap();
        crate::testing::assert_master_plain(auth.strip_prefix("mf1 AUTHENTICATE PLAIN ").unwrap());
        assert_eq!(lines.collect::<Vec<_>>(), ["mfprobe LOGOUT", ""]);
    }
    check_unhealthy(
        probe,
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\nmf1 NO [AUTHENTICATIONFAILED] no\r\n",
        "login: backend refused the login",
    );
    check_unhealthy(
        probe,
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n",
        "closed",
    );
    check_unhealthy(probe, b"* BYE go away\r\n", "login: ");
}

#[test]
fn pop3_login() {
    let probe = || LoginProbe::pop3(master(SaslMechanism::Login), BackendTls::None);
    check(
        probe,
        b"+OK hi\r\n-ERR no CAPA\r\n+OK\r\n+OK Logged in.\r\n",
        "CAPA\r\nUSER alice@example.com*casmaster\r\nPASS masterpw\r\nQUIT\r\n",
        &ProbeEvent::Healthy,
    );
    check_unhealthy(
        probe,
        b"+OK hi\r\n-ERR no CAPA\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n",
        "[AUTH]",
    );
}

#[test]
fn submission_login() {
    let probe = || {
        LoginProbe::submission(
            master(SaslMechanism::Plain),
            BackendTls::None,
            "cas1".into(),
        )
    };
    for pieces in splits(b"220 hi\r\n250-mbx1\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n") {
        let (sent, verdict) = run(probe(), &pieces);
        assert_eq!(verdict, ProbeEvent::Healthy);
        assert!(sent.starts_with("EHLO cas1\r\nAUTH PLAIN "), "{sent:?}");
        assert!(sent.ends_with("\r\nQUIT\r\n"), "{sent:?}");
    }
    check_unhealthy(
        probe,
        b"220 hi\r\n250-mbx1\r\n250 AUTH PLAIN\r\n535 5.7.8 no\r\n",
        "535",
    );
    // STARTTLS is the login's step, carried out by the pump.
    let probe = LoginProbe::submission(
        master(SaslMechanism::Plain),
        BackendTls::StartTls,
        "cas1".into(),
    );
    let (sent, verdict) = run(
        probe,
        &[
            b"220 hi\r\n250-mbx1\r\n250 STARTTLS\r\n",
            b"220 go\r\n",
            b"250-mbx1\r\n250 AUTH PLAIN\r\n",
            b"235 ok\r\n",
        ],
    );
    assert!(
        sent.starts_with("EHLO cas1\r\nSTARTTLS\r\n<TLS>EHLO cas1\r\n"),
        "{sent:?}"
    );
    assert_eq!(verdict, ProbeEvent::Healthy);
}

#[test]
fn asked_again_after_the_verdict_a_probe_only_waits() {
    let mut probe = GreetingProbe::new(Greeting::Pop3, "n");
    let (_, verdict) = run_on(&mut probe, &[b"+OK\r\n"]);
    assert_eq!(verdict, ProbeEvent::Healthy);
    probe.feed(b"+OK more\r\n");
    probe.eof();
    assert_eq!(probe.next_step(), Step::Read);
    let mut login = LoginProbe::pop3(master(SaslMechanism::Login), BackendTls::None);
    let (_, verdict) = run_on(&mut login, &[b"-ERR no\r\n"]);
    assert!(matches!(verdict, ProbeEvent::Unhealthy(_)));
    login.eof();
    assert_eq!(login.next_step(), Step::Read);
}
