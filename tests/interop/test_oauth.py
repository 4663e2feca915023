"""OAuth 2.0 at the front door (issue 16): IMAP clients log in with an access token from a real
OpenID provider (the npm package oidc-provider, `lab.Oidc`) by SASL XOAUTH2 and OAUTHBEARER
(RFC 7628), mailfront checks the token itself (keys from discovery and the JWKS, issuer,
audience, time, scope, the user it names) and proxies to the real Dovecot as the master user.
Every refusal has the exact reply, and the error challenge of RFC 7628 comes first."""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import json
import uuid

import pytest

from conftest import lab, node_settings, wait_until

AUDIENCE = "https://mail.example.com"
REFUSED = "[AUTHENTICATIONFAILED] Authentication failed."


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def oauth(lab_env):
    root = lab.reset_dir(lab_env.root / "oauth")
    users = ["alice@example.com", "bob@example.com", "dave@example.com", "ghost@example.com"]
    oidc = lab.Oidc(root / "oidc", lab.free_port(), users, AUDIENCE)
    oidc.start()
    port, pop3, submission, https = lab.free_port(), lab.free_port(), lab.free_port(), lab.free_port()
    settings = node_settings(
        lab_env, "oauth1",
        [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True),
         lab.listener(None, "pop3", pop3, "none", allow_plaintext_auth=True),
         lab.listener(None, "submission", submission, "none", allow_plaintext_auth=True),
         lab.listener(None, "https", https, "implicit")],
        {"oauth": {"issuer": oidc.issuer, "audiences": [AUDIENCE],
                   "scopes": {"imap": "imap", "pop3": "pop3", "submission": "submission", "http": "dav"},
                   "min_refetch": "1s"},
         # A token's SASL line is longer than the lab's usual 1 KiB limit.
         "limits": {"max_line_length": 8192}})
    node = lab.Mailfront(lab_env.binary, lab.write_toml(root / "oauth1.toml", settings), root / "oauth1.log")
    node.start()
    try:
        wait_until(lambda: "OpenID provider's keys fetched" in node.log_since_start(), 10, "the provider's keys")
        yield {"oidc": oidc, "node": node, "port": port, "pop3": pop3, "submission": submission, "https": https,
               "root": root}
    finally:
        node.stop()
        oidc.stop()


class Login:
    """One AUTHENTICATE with a token through imaplib; keeps the error challenge, if any."""

    def __init__(self, port: int, user: str, token: str, mechanism: str = "XOAUTH2"):
        self.challenge: dict | None = None
        self.client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        self.capabilities = self.client.capabilities
        if mechanism == "XOAUTH2":
            message = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        else:
            message = f"n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
        sent = []

        def answer(challenge: bytes) -> bytes:
            if not sent:
                sent.append(True)
                return message
            # The error challenge (RFC 7628 §3.2.2): answered with the dummy response.
            self.challenge = json.loads(challenge)
            return b"\x01" if mechanism == "OAUTHBEARER" else b""

        try:
            self.typ, data = self.client.authenticate(mechanism, answer)
            self.text = data[0].decode()
        except imaplib.IMAP4.error as e:
            self.typ, self.text = "NO", str(e)

    def close(self):
        try:
            self.client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def login(oauth, user: str, token: str, mechanism: str = "XOAUTH2") -> Login:
    attempt = Login(oauth["port"], user, token, mechanism)
    attempt.close()
    return attempt


def test_a_valid_token_logs_in_with_either_mechanism_and_reaches_the_mailbox(oauth):
    oidc = oauth["oidc"]
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        attempt = Login(oauth["port"], "alice@example.com", oidc.mint("alice@example.com"), mechanism)
        assert "AUTH=XOAUTH2" in attempt.capabilities and "AUTH=OAUTHBEARER" in attempt.capabilities
        assert attempt.typ == "OK", attempt.text
        # Dovecot serves alice's mailbox behind it (the master user logged in for her).
        assert attempt.client.select("INBOX")[0] == "OK"
        attempt.close()
    # An ES256-signed token, and a client that names nobody (OAUTHBEARER `n,,`): the token decides.
    es = oidc.mint("bob@example.com", alg="ES256")
    client = imaplib.IMAP4("127.0.0.1", oauth["port"], timeout=15)
    typ, _ = client.authenticate("OAUTHBEARER", lambda _: f"n,,\x01auth=Bearer {es}\x01\x01".encode())
    assert typ == "OK"
    client.logout()
    assert "user=bob@example.com" in oauth["node"].log_since_start()


def forged(token: str, header: dict | None = None, claims: dict | None = None, signature: bytes | None = None) -> str:
    head, body, sig = token.split(".")
    if header is not None:
        head = b64url(json.dumps(header).encode())
    if claims is not None:
        body = b64url(json.dumps(claims).encode())
    if signature is not None:
        sig = b64url(signature)
    return f"{head}.{body}.{sig}"


def test_every_bad_token_is_refused_after_the_error_challenge(oauth, lab_env):
    oidc = oauth["oidc"]
    good = oidc.mint("alice@example.com")
    header, claims = lab.oidc.jwt_parts(good)
    public = next(k for k in oidc.public_jwks()["keys"] if k["kid"] == header["kid"])
    hs256_header = {"alg": "HS256", "typ": "JWT", "kid": header["kid"]}
    unsigned = forged(good, header=hs256_header, signature=b"")
    signing_input = unsigned.rsplit(".", 1)[0].encode()
    confused = forged(good, header=hs256_header,
                      signature=hmac.new(json.dumps(public).encode(), signing_input, hashlib.sha256).digest())
    other = lab.Oidc(oauth["root"] / "oidc-other", lab.free_port(), ["alice@example.com"], AUDIENCE)
    other.start()
    try:
        from_other_issuer = other.mint("alice@example.com")
    finally:
        other.stop()
    cases = {
        "expired": oidc.mint("alice@example.com", shift=-7200),
        "not yet valid": oidc.mint("alice@example.com", shift=3600),
        "wrong audience": oidc.mint("alice@example.com", resource="https://other.example.com"),
        "another issuer": from_other_issuer,
        "bad signature": forged(good, claims={**claims, "email": "bob@example.com"}),
        "alg none": forged(good, header={"alg": "none", "kid": header["kid"]}, signature=b""),
        "HS256 signed with the public key": confused,
        "a user mailfront does not know": oidc.mint("ghost@example.com"),
        "no imap scope": oidc.mint("alice@example.com", scope="openid email pop3"),
        "not a JWT": "opaque-token-123",
    }
    configuration = f"{oidc.issuer}/.well-known/openid-configuration"
    for name, token in cases.items():
        attempt = login(oauth, "alice@example.com", token)
        assert attempt.typ == "NO" and REFUSED in attempt.text, (name, attempt.text)
        assert attempt.challenge == {"status": "invalid_token", "scope": "imap",
                                     "openid-configuration": configuration}, (name, attempt.challenge)
    log = oauth["node"].log_since_start()
    for reason in ("token refused: expired", "token refused: not yet valid", "token refused: wrong audience",
                   "token refused: bad signature", "token refused: algorithm `none` is not accepted",
                   "token refused: algorithm `HS256` is not accepted", "token refused: scope `imap` not granted",
                   "is not in the directory", "token refused: not a signed JWT"):
        assert reason in log, reason
    assert good not in log, "a token in the log"


def test_a_disabled_protocol_and_another_users_name_are_refused_like_passwords(oauth):
    oidc = oauth["oidc"]
    # dave may use POP3 only.
    attempt = login(oauth, "dave@example.com", oidc.mint("dave@example.com"))
    assert attempt.typ == "NO" and "[CONTACTADMIN]" in attempt.text, attempt.text
    assert attempt.challenge is None, "not a token problem: no error challenge"
    # alice's token, with bob's name: not alice's to use as bob.
    attempt = login(oauth, "bob@example.com", oidc.mint("alice@example.com"))
    assert attempt.typ == "NO" and "[AUTHORIZATIONFAILED]" in attempt.text, attempt.text


def test_a_key_rotation_is_followed_and_cached_keys_outlive_the_provider(oauth):
    oidc, node = oauth["oidc"], oauth["node"]
    old = oidc.mint("alice@example.com")
    old_kid = lab.oidc.jwt_parts(old)[0]["kid"]
    oidc.rotate_keys(keep_old=False)
    new = oidc.mint("alice@example.com")
    assert lab.oidc.jwt_parts(new)[0]["kid"] != old_kid
    # An unknown kid makes mailfront fetch the keys again, and the new token works at once.
    attempt = login(oauth, "alice@example.com", new)
    assert attempt.typ == "OK", attempt.text
    # The old key is gone: its tokens no longer verify.
    wait_until(lambda: login(oauth, "alice@example.com", old).typ == "NO", 5, "the old key refused")
    # The provider goes away: the keys mailfront holds keep working.
    oidc.stop()
    try:
        attempt = login(oauth, "alice@example.com", new)
        assert attempt.typ == "OK", attempt.text
    finally:
        oidc.start()


def test_a_provider_unreachable_at_start_is_a_temporary_error(oauth, lab_env):
    port = lab.free_port()
    dead = f"http://127.0.0.1:{lab.free_port()}"
    settings = node_settings(lab_env, "oauth-dead", [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True)],
                             {"oauth": {"issuer": dead, "audiences": [AUDIENCE], "timeout": "1s"},
                              "limits": {"max_line_length": 8192}})
    node = lab.Mailfront(lab_env.binary, lab.write_toml(oauth["root"] / "oauth-dead.toml", settings),
                         oauth["root"] / "oauth-dead.log")
    node.start()
    try:
        attempt = Login(port, "alice@example.com", oauth["oidc"].mint("alice@example.com"))
        attempt.close()
        assert attempt.typ == "NO" and "[UNAVAILABLE]" in attempt.text, attempt.text
        assert "cannot fetch the OpenID provider's keys" in node.log_since_start()
        # Passwords still work meanwhile.
        client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        assert client.login("alice@example.com", lab.DEMO_PASSWORD)[0] == "OK"
        client.logout()
    finally:
        node.stop()


def test_without_oauth_no_token_mechanism_is_offered(lab_env):
    import socket
    client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=15)
    assert "AUTH=XOAUTH2" not in client.capabilities and "AUTH=OAUTHBEARER" not in client.capabilities
    client.logout()
    message = base64.b64encode(f"user=alice@example.com\x01auth=Bearer {uuid.uuid4().hex}\x01\x01".encode())
    with socket.create_connection(("127.0.0.1", lab_env.plain_port), timeout=15) as s:
        reader = s.makefile("rb")
        reader.readline()
        s.sendall(b"a1 AUTHENTICATE XOAUTH2 " + message + b"\r\n")
        assert reader.readline() == b"a1 NO Unsupported authentication mechanism.\r\n"


def test_pop3_and_submission_take_tokens_too(oauth):
    import smtplib
    import socket
    oidc = oauth["oidc"]
    message = f"user=alice@example.com\x01auth=Bearer {oidc.mint('alice@example.com')}\x01\x01".encode()
    # POP3 AUTH (RFC 5034) with an initial response.
    with socket.create_connection(("127.0.0.1", oauth["pop3"]), timeout=15) as s:
        reader = s.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        s.sendall(b"CAPA\r\n")
        capabilities = b""
        while not capabilities.endswith(b".\r\n"):
            capabilities += reader.readline()
        assert b"SASL PLAIN LOGIN OAUTHBEARER XOAUTH2" in capabilities
        s.sendall(b"AUTH XOAUTH2 " + base64.b64encode(message) + b"\r\n")
        assert reader.readline() == b"+OK Logged in.\r\n"
        s.sendall(b"STAT\r\n")
        assert reader.readline().startswith(b"+OK ")
    # Submission: smtplib's own AUTH with an authobject.
    with smtplib.SMTP("127.0.0.1", oauth["submission"], timeout=15) as client:
        client.ehlo("client.example.org")
        assert "OAUTHBEARER" in client.esmtp_features["auth"] and "XOAUTH2" in client.esmtp_features["auth"]
        code, _ = client.auth("XOAUTH2", lambda challenge=None: message.decode())
        assert code == 235
    # A refused token on submission: 334 with the error challenge, then 535 after the empty answer.
    challenges = []
    expired = f"user=alice@example.com\x01auth=Bearer {oidc.mint('alice@example.com', shift=-7200)}\x01\x01"

    def answer(challenge=None):
        if challenge is None:
            return expired
        challenges.append(json.loads(challenge))
        return ""

    with smtplib.SMTP("127.0.0.1", oauth["submission"], timeout=15) as client:
        client.ehlo("client.example.org")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("XOAUTH2", answer)
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    assert challenges == [{"status": "invalid_token", "scope": "submission",
                           "openid-configuration": f"{oidc.issuer}/.well-known/openid-configuration"}]
    # A token without the submission scope.
    narrow = f"user=alice@example.com\x01auth=Bearer {oidc.mint('alice@example.com', scope='openid imap')}\x01\x01"
    with smtplib.SMTP("127.0.0.1", oauth["submission"], timeout=15) as client:
        client.ehlo("client.example.org")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("XOAUTH2", lambda challenge=None: narrow if challenge is None else "")


def test_an_https_request_with_the_providers_access_token(oauth):
    """`Authorization: Bearer <JWT>` on a service with bearer auth: checked like the SASL tokens,
    then proxied to the user's server as that user; a refused one is RFC 6750's invalid_token."""
    from test_http import propfind
    oidc = oauth["oidc"]
    token = oidc.mint("alice@example.com", scope="openid email dav")
    status, body = propfind(oauth["https"], "/dav/alice@example.com/", {"Authorization": f"Bearer {token}"})
    assert status == 207 and b"multistatus" in body, (status, body[:300])
    for name, bad in {"expired": oidc.mint("alice@example.com", scope="dav", shift=-7200),
                      "no dav scope": oidc.mint("alice@example.com", scope="openid imap")}.items():
        from test_http import request
        response, _ = request(oauth["https"], "PROPFIND", "/dav/alice@example.com/",
                              {"Authorization": f"Bearer {bad}", "Depth": "0"})
        assert response.status == 401, name
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="mailfront", error="invalid_token"', name


def test_thunderbird_autoconfig_announces_oauth2(oauth, lab_env):
    """With `[oauth]`, the autoconfig document lists OAuth2 first for every server and names the
    provider's endpoints (from its discovery document) and the scopes to ask for; without it,
    passwords only."""
    import xml.etree.ElementTree as ET
    from test_http import request
    oidc = oauth["oidc"]
    path = "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.com"
    response, body = request(oauth["https"], "GET", path)
    assert response.status == 200, body
    document = ET.fromstring(body)
    servers = document.findall("./emailProvider/incomingServer") + document.findall("./emailProvider/outgoingServer")
    assert servers and all([a.text for a in s.findall("authentication")] == ["OAuth2", "password-cleartext"]
                           for s in servers), body
    assert document.findtext("./oAuth2/issuer") == oidc.issuer
    assert document.findtext("./oAuth2/authURL") == oidc.discovery["authorization_endpoint"]
    assert document.findtext("./oAuth2/tokenURL") == oidc.discovery["token_endpoint"]
    scopes = document.findtext("./oAuth2/scope").split()
    assert scopes[:2] == ["openid", "email"] and sorted(scopes[2:]) == ["dav", "imap", "pop3", "submission"], scopes
    response, body = request(lab_env.https_port, "GET", path)
    assert response.status == 200 and b"OAuth2" not in body and b"<oAuth2>" not in body


def test_a_revoked_or_expired_token_closes_its_live_sessions(oauth, lab_env):
    """With introspection configured, the tokens of live sessions are re-checked every
    `recheck`: a token revoked at the provider closes its IMAP session with `* BYE`; with
    `session_max = "token"` a session also ends when its token expires. A session opened with
    a password is not touched."""
    import time
    oidc, root = oauth["oidc"], oauth["root"]
    secret = root / "introspection.secret"
    secret.write_text(oidc.client_secret + "\n")
    port = lab.free_port()
    settings = node_settings(
        lab_env, "oauth-recheck", [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True)],
        {"oauth": {"issuer": oidc.issuer, "audiences": [AUDIENCE], "recheck": "1s", "session_max": "token",
                   "introspection_client_id": oidc.client_id, "introspection_secret_file": str(secret)},
         "limits": {"max_line_length": 8192}})
    node = lab.Mailfront(lab_env.binary, lab.write_toml(root / "oauth-recheck.toml", settings), root / "oauth-recheck.log")
    node.start()

    def ended(client: imaplib.IMAP4) -> bool:
        try:
            client.noop()
            return False
        except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
            return True

    try:
        wait_until(lambda: "OpenID provider's keys fetched" in node.log_since_start(), 10, "the provider's keys")
        import socket
        token = oidc.mint("alice@example.com")
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        reader = raw.makefile("rb")
        reader.readline()
        message = base64.b64encode(f"user=alice@example.com\x01auth=Bearer {token}\x01\x01".encode())
        raw.sendall(b"a1 AUTHENTICATE XOAUTH2 " + message + b"\r\na2 SELECT INBOX\r\n")
        assert reader.readline().startswith(b"a1 OK"), "token login"
        while not reader.readline().startswith(b"a2 OK"):
            pass
        password = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        assert password.login("bob@example.com", lab.DEMO_PASSWORD)[0] == "OK"
        oidc.revoke(token)
        revoked_at = time.monotonic()
        raw.settimeout(5)
        line = reader.readline()
        took = time.monotonic() - revoked_at
        assert line == b"* BYE Your access token is no longer valid; log in again.\r\n", line
        assert reader.readline() == b"", "the connection is closed after the BYE"
        raw.close()
        assert "session closed: its access token is no longer active" in node.log_since_start()
        print(f"revocation at the provider -> session closed: {took * 1000:.0f} ms (recheck 1s)")
        # The password session goes on.
        assert not ended(password)
        password.logout()
        # A token that expires in 3 s ends its session then.
        short = Login(port, "alice@example.com", oidc.mint("alice@example.com", ttl=3))
        assert short.typ == "OK", short.text
        opened = time.monotonic()
        wait_until(lambda: ended(short.client), 8, "the expired token's session end", interval=0.1)
        assert time.monotonic() - opened > 1.5, "ended before its token expired"
        assert "session closed: its access token expired" in node.log_since_start()
    finally:
        node.stop()
