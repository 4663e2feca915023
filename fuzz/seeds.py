#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/ (real client and server dialogues).

Most targets read `[flags][seed: 8 bytes LE][payload]` (see fuzz/src/lib.rs): the flags pick the
settings, the seed drives the PRNG that cuts the payload into chunks (its low two bits: 0 whole,
1 byte by byte, 2 small pieces, 3 larger ones) and answers the machine (authentication results,
recipient checks). `pick_seed` finds a seed whose first answers are the ones a dialogue needs,
with the same SplitMix64 as the Rust side.

    python3 fuzz/seeds.py            # (re)writes the seed files; the fuzzer's own finds stay
"""

import base64
import hashlib
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class Rng:
    def __init__(self, seed):
        self.state = seed ^ GOLDEN

    def next(self):
        self.state = (self.state + GOLDEN) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n


WHOLE, BYTES = 0, 1
# What `front::answer` makes of `below(8)`.
PROXIED, FAILED, TEMPORARY = (0, 1), (2, 3, 4, 5), (6, 7)


def pick_seed(chunking, answers=()):
    """A seed with this chunking whose first `below(8)` draws fall in `answers` (a list of sets).
    Only valid for whole or byte-by-byte chunking, where cutting draws nothing."""
    for n in range(1 << 20):
        seed = (n << 2) | chunking
        rng = Rng(seed)
        if all(rng.below(8) in allowed for allowed in answers):
            return seed
    raise SystemExit("no seed found")


def framed(flags, seed, payload):
    return bytes([flags]) + struct.pack("<Q", seed) + payload


def write(target, name, data):
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text)


# Front-end flags: bits 0-1 TLS (0 STARTTLS, 1 none, 2 implicit), bit 2 plaintext auth allowed,
# bit 3 small limits.
STARTTLS, NONE, IMPLICIT, PLAINTEXT, SMALL = 0, 1, 2, 4, 8
PLAIN_IR = b64("\0alice@example.com\0demo-password-1")
USER_B64, PASS_B64 = b64("alice@example.com"), b64("demo-password-1")


def imap():
    ok = pick_seed(BYTES, [PROXIED])
    write("imap_front", "thunderbird-starttls", framed(STARTTLS, ok,
        b"1 capability\r\n2 starttls\r\n3 capability\r\n"
        b"4 authenticate PLAIN " + PLAIN_IR + b"\r\n5 select INBOX\r\n6 fetch 1:* (FLAGS)\r\n"))
    write("imap_front", "login-literals", framed(NONE | PLAINTEXT, pick_seed(BYTES, [FAILED, PROXIED]),
        b"a1 LOGIN {17}\r\nalice@example.com {3+}\r\nbad\r\n"
        b"a2 LOGIN {17+}\r\nalice@example.com {15}\r\ndemo-password-1\r\na3 SELECT INBOX\r\n"))
    write("imap_front", "authenticate-login", framed(IMPLICIT, pick_seed(BYTES, [TEMPORARY, PROXIED]),
        b"a1 AUTHENTICATE LOGIN\r\n" + USER_B64 + b"\r\n" + PASS_B64 + b"\r\n"
        b"a2 AUTHENTICATE PLAIN\r\n" + PLAIN_IR + b"\r\na3 IDLE\r\n"))
    write("imap_front", "id-noop-logout", framed(STARTTLS, pick_seed(WHOLE),
        b'a1 ID ("name" "Thunderbird" "version" "115.0")\r\na2 NOOP\r\n'
        b'a3 LOGIN alice pw\r\na4 AUTHENTICATE PLAIN\r\n*\r\na5 SELECT INBOX\r\na6 LOGOUT\r\n'))
    write("imap_front", "quoted-failures", framed(IMPLICIT | SMALL, pick_seed(BYTES, [FAILED, FAILED]),
        b'a1 LOGIN "alice@example.com" "wrong"\r\na2 LOGIN "alice@example.com" "wr\\"ong"\r\n'
        b'a3 LOGIN {100}\r\na4 NOOP\r\n'))


def pop3():
    write("pop3_front", "stls-user-pass", framed(STARTTLS, pick_seed(BYTES, [PROXIED]),
        b"CAPA\r\nSTLS\r\nCAPA\r\nUSER alice@example.com\r\nPASS demo-password-1\r\nSTAT\r\nQUIT\r\n"))
    write("pop3_front", "auth-plain", framed(IMPLICIT, pick_seed(BYTES, [FAILED, PROXIED]),
        b"AUTH\r\nAUTH PLAIN\r\n" + b64("\0alice@example.com\0bad") + b"\r\n"
        b"AUTH PLAIN " + PLAIN_IR + b"\r\nLIST\r\n"))
    write("pop3_front", "auth-login", framed(NONE | PLAINTEXT, pick_seed(BYTES, [TEMPORARY, PROXIED]),
        b"AUTH LOGIN\r\n" + USER_B64 + b"\r\n" + PASS_B64 + b"\r\nAUTH LOGIN " + USER_B64 +
        b"\r\n" + PASS_B64 + b"\r\nRETR 1\r\n"))
    write("pop3_front", "refusals", framed(STARTTLS | SMALL, pick_seed(WHOLE),
        b"USER alice\r\nAPOP alice c4c9334bac560ecc979e58001b3e22fb\r\nNOOP\r\nAUTH CRAM-MD5\r\n"
        b"AUTH PLAIN\r\n*\r\nQUIT\r\n"))


def submission():
    write("submission_front", "starttls-auth-plain", framed(STARTTLS, pick_seed(BYTES, [PROXIED]),
        b"EHLO client.example.org\r\nSTARTTLS\r\nEHLO client.example.org\r\n"
        b"AUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<alice@example.com>\r\n"))
    write("submission_front", "auth-login", framed(IMPLICIT, pick_seed(BYTES, [FAILED, PROXIED]),
        b"EHLO [192.0.2.7]\r\nAUTH LOGIN\r\n" + USER_B64 + b"\r\n" + b64("nope") + b"\r\n"
        b"AUTH LOGIN " + USER_B64 + b"\r\n" + PASS_B64 + b"\r\nRCPT TO:<bob@example.com>\r\n"))
    write("submission_front", "commands", framed(NONE | PLAINTEXT, pick_seed(WHOLE),
        b"HELO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<c@d.e>\r\nDATA\r\nBDAT 10 LAST\r\n"
        b"VRFY x\r\nEXPN y\r\nHELP\r\nNOOP\r\nRSET\r\nLHLO x\r\nAUTH PLAIN\r\n=\r\nQUIT\r\n"))


# Transport flags: bits 0-1 TLS, bit 2 chunking, bit 3 small limits, bits 4-5 mode.
RAW, DATA_MODE, BDAT_MODE = 0x00, 0x20, 0x30
CHUNKING = 4


def transport():
    write("smtp_receiver", "inbound-data", framed(NONE | CHUNKING, pick_seed(BYTES),
        b"EHLO mx.example.org\r\nMAIL FROM:<bob@example.org> SIZE=120 BODY=8BITMIME\r\n"
        b"RCPT TO:<alice@example.com>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n"
        b"From: bob@example.org\r\nSubject: hi\r\n\r\n..leading dot\r\nbare\nlf\r\n.\r\nQUIT\r\n"))
    write("smtp_receiver", "inbound-bdat", framed(NONE | CHUNKING, pick_seed(WHOLE),
        b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nBDAT 5\r\nhelloBDAT 7 LAST\r\n"
        b"\r\n.\r\nxyRSET\r\nMAIL FROM:<c@d>\r\nRCPT TO:<a@example.com>\r\nBDAT 0 LAST\r\nQUIT\r\n"))
    write("smtp_receiver", "smuggling", framed(STARTTLS | CHUNKING, pick_seed(BYTES),
        b"EHLO x\r\nSTARTTLS\r\nEHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n"
        b"body\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n.\r\n"))
    write("smtp_receiver", "limits", framed(IMPLICIT | SMALL, pick_seed(WHOLE),
        b"HELO x\r\nMAIL FROM:<a@b> SIZE=999999\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@example.com>\r\n"
        b"RCPT TO:<2@example.com>\r\nRCPT TO:<3@example.com>\r\nDATA\r\n" + b"x" * 210 +
        b"\r\n.\r\nBDAT 3\r\nabcVRFY x\r\nQUIT\r\n"))
    write("smtp_receiver", "structured-data", framed(DATA_MODE | NONE, pick_seed(BYTES),
        b"Subject: x\r\n\r\n.\r\n..\r\nend\r\n.\r\nQUIT\r\n"))
    write("smtp_receiver", "structured-data-shapes", framed(DATA_MODE | NONE, pick_seed(WHOLE),
        b"a\n.\nb\r.\rc\n.\r\nd\r\n.\ne\r.\r\n\r\n.\r\n"))
    write("smtp_receiver", "structured-bdat", framed(BDAT_MODE | NONE, pick_seed(WHOLE),
        b"binary\x00data\r\n.\r\nnot the end\r\n"))


def data():
    write("smtp_data", "message", framed(0, pick_seed(BYTES),
        b"Subject: x\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n"))
    for i, sep in enumerate([b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r"]):
        write("smtp_data", "smuggling-%d" % i, framed(0, pick_seed(WHOLE),
            b"Subject: a\r\n\r\nbody" + sep + b"MAIL FROM:<evil@x>\r\nDATA\r\n.\r\n"))


def command():
    for i, line in enumerate([
        b"EHLO client.example.org", b"MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME", b"MAIL FROM:<>",
        b"mail from: <a@b> AUTH=<>", b'RCPT TO:<"quoted >"@example.com>',
        b"RCPT TO:<@route,@r2:user@example.com>", b"BDAT 100 LAST", b"AUTH PLAIN dGVzdA==",
        b"STARTTLS", b"VRFY x", b"HELO [192.0.2.1]",
    ]):
        write("smtp_command", "%02d" % i, line)


def reply():
    write("smtp_reply", "ehlo", framed(0, pick_seed(BYTES),
        b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n354 go ahead\r\n"
        b"550 5.1.1 unknown\r\n250\r\n"))


# Backend flags: bits 0-1 TLS (0 none, 1 STARTTLS, 2 implicit), bit 2 master user, bit 3 LOGIN,
# bit 4 client info, bits 5-6 protocol (0 IMAP, 1 POP3, 2 submission).
B_NONE, B_STARTTLS, B_IMPLICIT, MASTER, LOGIN_MECH, CLIENT = 0, 1, 2, 4, 8, 16
IMAP_P, POP3_P, SUBM_P = 0, 32, 64


def backend():
    greeting = (b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
                b"AUTH=PLAIN] Dovecot ready.\r\n")
    write("backend_login", "imap-master-plain", framed(IMAP_P | MASTER | CLIENT, pick_seed(WHOLE),
        greeting + b"* ID NIL\r\nmf1 OK ID completed.\r\n"
        b"mf2 OK [CAPABILITY IMAP4rev1 IDLE SORT] Logged in\r\n* 3 EXISTS\r\n"))
    write("backend_login", "imap-login-capability", framed(IMAP_P | MASTER | LOGIN_MECH, pick_seed(BYTES),
        b"* OK ready\r\n* CAPABILITY IMAP4rev1\r\nmf1 OK done\r\nmf2 OK Logged in\r\n"
        b"* CAPABILITY IMAP4rev1 IDLE\r\nmf3 OK done\r\n"))
    write("backend_login", "imap-starttls", framed(IMAP_P | B_STARTTLS, pick_seed(BYTES),
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\nmf1 OK go\r\n"
        b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\nmf2 OK caps\r\nmf3 OK [CAPABILITY IMAP4rev1] in\r\n"))
    write("backend_login", "imap-continuation", framed(IMAP_P, pick_seed(BYTES),
        b"* OK [CAPABILITY IMAP4rev1] hi\r\n+ \r\nmf1 NO [AUTHENTICATIONFAILED] failed\r\n"))
    capa = (b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n"
            b"SASL PLAIN LOGIN\r\nXCLIENT\r\nSTLS\r\n.\r\n")
    write("backend_login", "pop3-xclient", framed(POP3_P | MASTER | CLIENT, pick_seed(BYTES),
        b"+OK Dovecot ready.\r\n" + capa + b"+OK\r\n+OK Logged in.\r\n"))
    write("backend_login", "pop3-stls-user", framed(POP3_P | B_STARTTLS | LOGIN_MECH, pick_seed(BYTES),
        b"+OK hi\r\n" + capa + b"+OK Begin TLS\r\n" + capa + b"+OK\r\n-ERR [AUTH] failed.\r\n"))
    ehlo = (b"250-mbx1\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-XCLIENT ADDR PORT\r\n"
            b"250-STARTTLS\r\n250 SIZE 40000000\r\n")
    write("backend_login", "submission-xclient", framed(SUBM_P | MASTER | CLIENT, pick_seed(BYTES),
        b"220 mbx1 ESMTP Dovecot\r\n" + ehlo + b"220 mbx1 ESMTP Dovecot\r\n" + ehlo +
        b"235 2.7.0 Logged in.\r\n"))
    write("backend_login", "submission-starttls-login", framed(SUBM_P | B_STARTTLS | LOGIN_MECH, pick_seed(BYTES),
        b"220 hi\r\n" + ehlo + b"220 go\r\n" + ehlo +
        b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n"))


def delivery():
    # Flags: bits 0-1 TLS, bit 2 SMTP (else LMTP), bits 3-4 extra recipients.
    write("smtp_delivery", "lmtp-two", framed(0 | (1 << 3), pick_seed(BYTES),
        b"220 mbx1 LMTP ready\r\n250-mbx1\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
        b"250 SIZE\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 go\r\n"
        b"250 2.0.0 <rcpt0@example.com> Saved\r\n452 4.2.2 <rcpt1@example.com> Quota\r\n"))
    write("smtp_delivery", "smtp-starttls", framed(1 | 4, pick_seed(BYTES),
        b"220 relay ESMTP\r\n250-relay\r\n250-STARTTLS\r\n250 8BITMIME\r\n220 go\r\n"
        b"250-relay\r\n250 8BITMIME\r\n250 OK\r\n250 OK\r\n354 go\r\n250 queued\r\n"))
    write("smtp_delivery", "refused", framed(0, pick_seed(WHOLE),
        b"220 hi\r\n250 hi\r\n550 5.7.1 sender refused\r\n"))


def line_reader():
    write("line_reader", "lines", framed(16, pick_seed(BYTES), b"USER alice\r\nPASS x\nQUIT\r\npartial"))
    write("line_reader", "too-long", framed(4, pick_seed(WHOLE), b"abcd\r\nabcde\r\n"))


def sasl():
    write("sasl", "plain", framed(0, 0, b"\0alice@example.com\0demo-password-1"))
    write("sasl", "plain-authzid", framed(0, 0, b"bob@example.com\0alice@example.com\0pw"))
    write("sasl", "login-exchange", framed(1, 0, USER_B64 + b"\n" + PASS_B64))
    write("sasl", "initial-response", framed(2, 0, PLAIN_IR + b"\n*"))
    write("sasl", "base64", framed(0, 0, b"AGFsaWNlAHB3"))
    token = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.c2ln"
    write("sasl", "oauthbearer", framed(0, 0, b"n,a=alice@example.com,\x01host=mail.example.com\x01port=993"
                                              b"\x01auth=Bearer " + token + b"\x01\x01"))
    write("sasl", "xoauth2", framed(0, 0, b"user=alice@example.com\x01auth=Bearer " + token + b"\x01\x01"))


def oauth_token():
    # Header half (the kid) and claims half: "k1" + claims the target signs itself.
    claims = (b'{"iss":"https://id.example","aud":"https://mail.example","exp":4102444800,'
              b'"email":"alice@example.com","scope":"imap"}')
    header = b"k1"
    # The halves split at len // 2: pad the kid so that the claims start there.
    kid = header + b" " * (len(claims) - len(header))
    write("oauth_token", "accepted", framed(0, 0, kid + claims))


def framing():
    write("imap_framing", "literals", framed(0, pick_seed(BYTES),
        b"a1 NOOP\r\na2 LOGIN {5}\r\nalice {3+}\r\npw!\r\na3 CAPABILITY\na4 X\r\n"
        b"a5 LOGIN {41}\r\nb {99999999999}\r\n"))


INVITE = (b"INVITE sip:4001@cas.example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1;rport\r\n"
          b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-0\r\n"
          b"Max-Forwards: 70\r\nFrom: \"Carol\" <sip:carol@example.com>;tag=abc\r\n"
          b"To: <sip:4001@cas.example.com>\r\nCall-ID: 1-2-3@192.0.2.7\r\nCSeq: 1 INVITE\r\n"
          b"Contact: <sip:carol@192.0.2.7:5071>\r\nContent-Type: application/sdp\r\n"
          b"Content-Length: 5\r\n\r\nv=0\r\n")
OPTIONS = (b"OPTIONS sip:cas.example.com SIP/2.0\r\nv: SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK-9\r\n"
           b"f: <sip:sbc@example.com>;tag=1\r\nt: <sip:cas.example.com>\r\ni: ka-1\r\nCSeq: 7 OPTIONS\r\n"
           b"l: 0\r\n\r\n")
COMPACT = (b"INVITE sips:alice%40x@example.com SIP/2.0\nv: SIP/2.0/TLS h\n ;branch=z9hG4bK-2\n"
           b"f: a <sip:a@b>;tag=9\nt: b <tel:+15550100>;tag=x\ni: c\nCSeq: 2 INVITE\nl: 0\n\n")
OTHERS = [
    b"ACK sip:4001@cas SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:4001@cas>;tag=2\r\nCall-ID: x\r\nCSeq: 1 ACK\r\n\r\n",
    b"REGISTER sip:cas SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:a@b>\r\nCall-ID: y\r\nCSeq: 3 REGISTER\r\n\r\n",
    b"INVITE tel:+1-555-0100;phone-context=example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <tel:+15550100>\r\nCall-ID: z\r\nCSeq: 4 INVITE\r\n\r\n",
    b"BYE sip:x SIP/3.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: w\r\nCSeq: 5 BYE\r\n\r\n",
]


def sip():
    for target in ("sip_request", "sip_message"):
        for i, message in enumerate([INVITE, OPTIONS, COMPACT] + OTHERS):
            write(target, "%02d" % i, framed(0, 0, message))
    write("sip_framer", "stream", framed(0, pick_seed(BYTES),
        b"\r\n" + INVITE + b"\r\n\r\n" + OPTIONS + b"BYE sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nab"))
    write("sip_framer", "too-large", framed(1, pick_seed(WHOLE), INVITE.replace(b"Length: 5", b"Length: 999")))
    for i, text in enumerate([
        b"sip:4001@cas.example.com", b"tel:+1-555-0100;phone-context=example.com",
        b"sips:alice%40x:secret@[2001:db8::1]:5061;transport=tls?subject=x", b"mailto:a@b",
        b"SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1;rport, SIP/2.0/TCP h2",
        b"\"Carol\" <sip:carol@example.com;x=1>;tag=abc", b"sip:+4930123@gw.example.com;user=phone",
    ]):
        write("sip_uri", "%02d" % i, text)


def proxy():
    write("proxy_header", "v1-tcp4", framed(2, 0, b"PROXY TCP4 192.0.2.7 127.0.0.1 50123 143\r\na1 NOOP\r\n"))
    write("proxy_header", "v1-tcp6", framed(3, 0, b"PROXY TCP6 2001:db8::7 ::1 50123 993\r\n"))
    write("proxy_header", "v1-unknown", framed(2, 0, b"PROXY UNKNOWN\r\n"))
    sig = b"\r\n\r\n\0\r\nQUIT\n"
    write("proxy_header", "v2-ipv4", framed(0, 0, sig + bytes([0x21, 0x11, 0, 12, 198, 51, 100, 9,
        127, 0, 0, 1, 0xC3, 0x50, 0, 0x8F]) + b"hello"))
    write("proxy_header", "v2-ipv6-tlv", framed(0x31, 0, sig + bytes([0x21, 0x21, 0, 36 + 7]) +
        bytes(range(32)) + b"\x01\xbb\x00\x8f" + b"\x01\x00\x04http"))
    write("proxy_header", "v2-local", framed(0, 0, sig + b"\x20\x00\x00\x00"))


def cookie():
    # A token sealed with key 1 of the target's key set (see fuzz_targets/cookie.rs) for
    # alice@example.com, issued 2027-01-15, valid 100 years: made once with CookieKeys::seal.
    token = (b"AQAAAAFq25D_iBMCUYu5qreCbVpEAxUYGXBj9ych5cAK72wktJIJ2vbk4Qn1bpL7R9tLQ6pZr4jVaSH5KC4JJYIxgFhc"
             b"fNZZt7ezk-68")
    write("cookie", "valid-session", framed(0, 0, token))
    write("cookie", "malformed", framed(1, 0, b"AQAAAAcAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))


def config():
    readme = os.path.join(os.path.dirname(ROOT), "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    start = text.index("```toml\n[node]")
    end = text.index("```", start + 7)
    write("config", "readme", text[start + 8:end].encode())
    write("config", "minimal", b"""[node]
name = "cas1"
site = "lab"
version = "15.1"

[[server]]
name = "mbx1"
site = "lab"
version = "15.1"
host = "127.0.0.1"
imap = { port = 10143 }
pop3 = { port = 10110, tls = "starttls" }
submission = { port = 10587 }
delivery = { port = 10024, protocol = "lmtp" }
sip = "sip:{extension}@mbx1.example.com:5070"
http = "http://127.0.0.1:5232/"
[server.login]
method = "master"
mechanism = "login"
master_user = "casmaster"
master_password = "secret"

[directory]
backend = "file"
path = "users.toml"

[location]
backend = "file"
path = "locations.toml"

[tls]
certificate = "cert.pem"
key = "key.pem"

[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
allow_plaintext_auth = true

[[listener]]
protocol = "sip"
address = "127.0.0.1:5060"

[[listener]]
protocol = "smtp"
address = "127.0.0.1:1025"
proxy_protocol = true

[proxy_protocol]
trusted = ["10.0.0.5/32"]

[transport]
accepted_domains = ["example.com"]

[limits]
max_line_length = 4096

[timeouts]
login = "30s"
""")


def files():
    hash_ = "{SHA512-CRYPT}$6$usesomesillystri$T9d9DxSZZpqZJdmaNC7fHoaUmqmDVhnmWghZppx9/Nehb/Lp1h3Zza/MzyvK1YLCAX.4khvOTI881ftSJ0z0v/"
    write("users_file", "users", ("""[[user]]
address = "alice@example.com"
aliases = ["alice.smith@example.com"]
display_name = "Alice Smith"
password = "%s"
mailbox_guid = "0b0c7a4e-5f0e-4c1b-9a53-3f1f5a0c2d11"
database = "DB01"
version = "15.1"
protocols = ["imap", "pop3", "submission", "smtp", "http", "sip"]
sip_extension = "4001"

[[user]]
address = "bob@example.com"
password = "{PLAIN}demo-password-1"
mailbox_guid = "b0b"
tenant = "Example.com"
database = "DB02"
version = "15.0.1"
""" % hash_).encode())
    write("location_file", "map", b'[active]\nDB01 = "mbx1"\nDB02 = "mbx2"\n"DB 03" = \'mbx1\'\n')


def http():
    write("http_form", "login-form", framed(0, 0,
        b"return\nreturn=%2Fcalendar%2F&user=alice%40example.com&password=demo-password-1&csrf=a+b%zz"))
    write("http_form", "cookies", framed(0, 0, b"mailfront_session=\"abc\"; csrf=1; theme=dark"))
    write("http_form", "basic", framed(1, 0, b"alice@example.com:demo:password-1"))
    write("autodiscover", "pox", b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns='
          b'"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
          b'<Request><EMailAddress>alice@example.com</EMailAddress><AcceptableResponseSchema>'
          b'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
          b'</AcceptableResponseSchema></Request></Autodiscover>')
    write("autodiscover", "json", b"AutodiscoverV1\nhttps://mail.example.com")
    write("autodiscover", "address", b"alice.smith@example.com")


if __name__ == "__main__":
    imap()
    pop3()
    submission()
    transport()
    data()
    command()
    reply()
    backend()
    delivery()
    line_reader()
    sasl()
    oauth_token()
    framing()
    sip()
    proxy()
    cookie()
    config()
    files()
    http()
