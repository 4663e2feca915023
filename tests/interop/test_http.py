"""The HTTPS front door against real Radicale servers: health pages, forms login with the shared
cookie, CalDAV through mailfront, identity-header rules, anchors, redirects, autodiscover and the
address book. Clients: curl and Python's http.client."""

from __future__ import annotations

import base64
import http.client
import json
import plistlib
import re
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import USERS, client_tls, lab

PASSWORD = lab.DEMO_PASSWORD


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | str | None = None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_tls(), timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def basic(user: str, password: str = PASSWORD) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def set_cookies(response) -> dict[str, str]:
    """Cookie name -> the whole Set-Cookie value."""
    return {v.split("=", 1)[0]: v for v in response.headers.get_all("Set-Cookie") or []}


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def forms_login(port: int, user: str, password: str = PASSWORD, return_to: str = "/calendar/"):
    """Logs in through the form; returns the login response and the session cookie value."""
    page, html = request(port, "GET", f"/login?return={return_to}")
    assert page.status == 200
    csrf = cookie_value(set_cookies(page)["mailfront_csrf"])
    assert f'name="csrf" value="{csrf}"' in html.decode()
    form = f"user={user}&password={password}&csrf={csrf}&return={return_to}"
    response, _ = request(port, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                  "Cookie": f"mailfront_csrf={csrf}"}, form)
    session = set_cookies(response).get("mailfront_session")
    return response, (cookie_value(session) if session else None)


def test_health_pages(lab_env):
    response, body = request(lab_env.https_port, "GET", "/calendar/healthcheck.htm")
    assert (response.status, body) == (200, b"test1\n")
    response, _ = request(lab_env.https_port, "GET", "/dav/healthcheck.htm")
    assert response.status == 200


def test_browser_app_sends_strangers_to_the_login_page(lab_env):
    response, _ = request(lab_env.https_port, "GET", "/calendar/")
    assert response.status == 302
    assert response.getheader("Location") == "/login?return=/calendar/"


def test_forms_login_and_the_calendar(lab_env):
    response, session = forms_login(lab_env.https_port, "alice@example.com")
    assert response.status == 303 and response.getheader("Location") == "/calendar/"
    flags = set_cookies(response)["mailfront_session"]
    for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert flag in flags, flags
    # Through mailfront to Radicale: its root redirects to the web UI, under our prefix.
    response, _ = request(lab_env.https_port, "GET", "/calendar/", {"Cookie": f"mailfront_session={session}"})
    assert response.status in (301, 302) and response.getheader("Location").startswith("/calendar/.web"), response.getheader("Location")
    response, body = request(lab_env.https_port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={session}"})
    assert response.status == 200 and b"Radicale" in body
    # The identity reached the backend in the trusted header, from mailfront.
    assert "alice@example.com" in lab_env.radicales["mbx1"].log_text()


def test_wrong_password_on_the_form(lab_env):
    start = time.monotonic()
    response, session = forms_login(lab_env.https_port, "alice@example.com", "wrong")
    assert response.status == 401 and session is None
    assert time.monotonic() - start >= 0.95  # the configured failure delay (1 s)


def test_login_csrf(lab_env):
    form = f"user=alice@example.com&password={PASSWORD}&csrf=forged&return=/calendar/"
    response, body = request(lab_env.https_port, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                                   "Cookie": "mailfront_csrf=other"}, form)
    assert response.status == 403 and "mailfront_session" not in set_cookies(response)
    assert b"The form expired" in body


def test_open_redirect_is_refused(lab_env):
    response, _ = forms_login(lab_env.https_port, "alice@example.com", return_to="//evil.example/")
    assert response.getheader("Location") == "/"


def test_tampered_cookie(lab_env):
    _, session = forms_login(lab_env.https_port, "alice@example.com")
    tampered = session[:-2] + ("A" if session[-2] != "A" else "B") + session[-1]
    response, _ = request(lab_env.https_port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={tampered}"})
    assert response.status == 302 and response.getheader("Location").startswith("/login")


def propfind(port: int, path: str, headers: dict) -> tuple[int, bytes]:
    response, body = request(port, "PROPFIND", path, {"Depth": "1", "Content-Type": "application/xml", **headers},
                             '<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop></propfind>')
    return response.status, body


def test_caldav_propfind_through_mailfront(lab_env):
    status, body = propfind(lab_env.https_port, "/dav/alice@example.com/", basic("alice@example.com"))
    assert status == 207, body
    assert b"multistatus" in body
    # Radicale's hrefs point back through mailfront's prefix.
    assert b"<href>/dav/alice%40example.com/</href>" in body
    # Someone else's collection: Radicale refuses, because the identity is alice.
    status, _ = propfind(lab_env.https_port, "/dav/bob@example.com/", basic("alice@example.com"))
    assert status == 403


def test_curl_as_a_dav_client(lab_env):
    out = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"bob@example.com:{PASSWORD}", "-X", "PROPFIND",
         "-H", "Depth: 0", f"https://127.0.0.1:{lab_env.https_port}/dav/bob@example.com/"],
        capture_output=True, text=True, timeout=30)
    assert out.stdout == "207"
    line = [l for l in lab_env.log().splitlines() if "http request" in l and "/dav/bob@example.com/" in l][-1]
    assert "backend=mbx2" in line, line


def test_client_identity_header_is_never_trusted(lab_env):
    # Authenticated as alice, claiming to be bob: the claim is replaced.
    status, _ = propfind(lab_env.https_port, "/dav/bob@example.com/", {**basic("alice@example.com"),
                                                                       "X-Remote-User": "bob@example.com"})
    assert status == 403
    # Not authenticated at all, claiming to be bob: no way in.
    status, _ = propfind(lab_env.https_port, "/dav/bob@example.com/", {"X-Remote-User": "bob@example.com"})
    assert status == 401


def test_bearer_tokens(lab_env):
    response, body = request(lab_env.https_port, "POST", "/auth/token", basic("alice@example.com"))
    assert response.status == 200
    token = json.loads(body)["access_token"]
    status, _ = propfind(lab_env.https_port, "/dav/alice@example.com/", {"Authorization": f"Bearer {token}"})
    assert status == 207
    # A session cookie is not a bearer token (sealed for another purpose).
    _, session = forms_login(lab_env.https_port, "alice@example.com")
    status, _ = propfind(lab_env.https_port, "/dav/alice@example.com/", {"Authorization": f"Bearer {session}"})
    assert status == 401


def test_anchor_mailbox_routes_to_the_mailbox_acted_on(lab_env):
    response, _ = request(lab_env.https_port, "GET", "/freebusy/?mailbox=bob@example.com", basic("alice@example.com"))
    line = [l for l in lab_env.log().splitlines() if "http request" in l and "/freebusy/" in l][-1]
    assert "user=alice@example.com" in line and "backend=mbx2" in line, line
    request(lab_env.https_port, "GET", "/freebusy/", {**basic("alice@example.com"), "X-AnchorMailbox": "SMTP:bob@example.com"})
    line = [l for l in lab_env.log().splitlines() if "http request" in l and "/freebusy/" in l][-1]
    assert "backend=mbx2" in line, line
    request(lab_env.https_port, "GET", "/freebusy/", basic("alice@example.com"))
    line = [l for l in lab_env.log().splitlines() if "http request" in l and "/freebusy/" in l][-1]
    assert "backend=mbx1" in line, line
    # The seeds' endpoint identity: bob's mailbox GUID at his tenant (header, or MAPI's MailboxId).
    bob_guid = next(u.guid or f"00000000-0000-4000-8000-{i + 1:012d}" for i, u in enumerate(USERS)
                    if u.address == "bob@example.com")
    for path, headers in ((f"/freebusy/?MailboxId={bob_guid}@example.com", {}),
                          ("/freebusy/", {"X-AnchorMailbox": f"{bob_guid.upper()}@example.com"})):
        request(lab_env.https_port, "GET", path, {**basic("alice@example.com"), **headers})
        line = [l for l in lab_env.log().splitlines() if "http request" in l and "/freebusy/" in l][-1]
        assert "backend=mbx2" in line, line
    # The GUID at another tenant names nobody.
    response, _ = request(lab_env.https_port, "GET", "/freebusy/",
                          {**basic("alice@example.com"), "X-AnchorMailbox": f"{bob_guid}@other.example"})
    assert response.status == 404
    # An anchor that names nobody is refused, not answered from alice's own mailbox.
    response, body = request(lab_env.https_port, "GET", "/freebusy/",
                             {**basic("alice@example.com"), "X-AnchorMailbox": "ghost@example.com"})
    assert response.status == 404 and b"does not exist" in body, (response.status, body)
    line = [l for l in lab_env.log().splitlines() if "http request" in l and "/freebusy/" in l][-1]
    assert "backend=-" in line and "status=404" in line, line


def test_legacy_mailbox_is_redirected(lab_env):
    _, session = forms_login(lab_env.https_port, "oldtimer@example.com")
    response, _ = request(lab_env.https_port, "GET", "/calendar/", {"Cookie": f"mailfront_session={session}"})
    assert response.status == 302 and response.getheader("Location") == "https://legacy.example.com/owa/"


def test_autodiscover_documents(lab_env):
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.com",
                 "/mail/config-v1.1.xml?emailaddress=alice@example.com"):
        response, body = request(lab_env.https_port, "GET", path)
        assert response.status == 200
        root = ET.fromstring(body)
        # Thunderbird's format (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        provider = root.find("emailProvider")
        assert provider.get("id") == "example.com" and provider.findtext("domain") == "example.com"
        incoming = {s.get("type"): s for s in provider.findall("incomingServer")}
        assert incoming["imap"].findtext("hostname") == "mail.example.com"
        assert incoming["imap"].findtext("port") == "993" and incoming["imap"].findtext("socketType") == "SSL"
        assert incoming["pop3"].findtext("port") == "995"
        smtp = provider.find("outgoingServer")
        assert smtp.get("type") == "smtp" and smtp.findtext("socketType") == "STARTTLS"
        assert smtp.findtext("username") == "%EMAILADDRESS%"
    response, _ = request(lab_env.https_port, "GET", "/mail/config-v1.1.xml?emailaddress=x@other.org")
    assert response.status == 404

    pox_request = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
                   'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.com</EMailAddress>'
                   '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema'
                   '/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    response, body = request(lab_env.https_port, "POST", "/autodiscover/autodiscover.xml", {"Content-Type": "text/xml"},
                             pox_request)
    assert response.status == 200
    ns = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
          "o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    root = ET.fromstring(body)
    account = root.find("o:Response/o:Account", ns)
    assert account.findtext("o:AccountType", namespaces=ns) == "email"
    protocols = {p.findtext("o:Type", namespaces=ns): p for p in account.findall("o:Protocol", ns)}
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    assert protocols["IMAP"].findtext("o:Port", namespaces=ns) == "993"
    assert protocols["SMTP"].findtext("o:Encryption", namespaces=ns) == "TLS"
    assert protocols["IMAP"].findtext("o:LoginName", namespaces=ns) == "alice@example.com"

    response, body = request(lab_env.https_port, "GET", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=AutodiscoverV1")
    assert response.status == 200
    assert json.loads(body)["Url"].endswith("/autodiscover/autodiscover.xml")
    response, _ = request(lab_env.https_port, "GET", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=Rest")
    assert response.status == 400

    response, _ = request(lab_env.https_port, "GET", "/autodiscover/mobileconfig")
    assert response.status == 401
    response, body = request(lab_env.https_port, "GET", "/autodiscover/mobileconfig", basic("bob@example.com"))
    assert response.status == 200
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    account = profile["PayloadContent"][0]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == "bob@example.com" and account["IncomingMailServerPortNumber"] == 993
    assert account["EmailAccountType"] == "EmailTypeIMAP" and account["OutgoingMailServerUseSSL"] is True


def test_address_book(lab_env):
    response, _ = request(lab_env.https_port, "GET", "/oab/")
    assert response.status == 401
    response, body = request(lab_env.https_port, "GET", "/oab/", basic("alice@example.com"))
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/vcard")
    text = body.decode()
    assert text.count("BEGIN:VCARD") == text.count("END:VCARD") >= 2
    assert "EMAIL;TYPE=work;PREF=1:bob@example.com" in text
    assert "EMAIL;TYPE=work:alice.smith@example.com" in text


def test_plain_http_errors(lab_env):
    response, _ = request(lab_env.https_port, "GET", "/nowhere")
    assert response.status == 404
    response, _ = request(lab_env.https_port, "GET", "/calendar")
    assert response.status == 301 and response.getheader("Location") == "/calendar/"


def test_expired_and_retired_keys(lab_env, tmp_path):
    from conftest import https_node

    # A node with a short session lifetime (whole seconds: 3 s leaves at least 2): its cookie
    # expires, on every node.
    short, short_port = https_node(lab_env, "short", lab_env.cookie_keys, lifetime="3s")
    # A node whose key file no longer lists key 1 (retired), only key 2.
    retired_keys = lab.write_cookie_keys(lab_env.binary, tmp_path / "keys.toml", key_id=2)
    retired, retired_port = https_node(lab_env, "retired", retired_keys)
    try:
        _, session = forms_login(short_port, "alice@example.com")
        response, _ = request(lab_env.https_port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={session}"})
        assert response.status == 200  # valid for now, and on another node too
        log_offset = len(lab_env.log())
        deadline = time.monotonic() + 10
        while True:
            response, _ = request(lab_env.https_port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={session}"})
            if response.status == 302:
                break
            assert time.monotonic() < deadline, "the expired cookie is still accepted"
            time.sleep(0.2)
        assert "session cookie refused error=expired" in lab_env.log()[log_offset:]
        # A cookie sealed with key 1 is refused where key 1 is retired.
        _, session = forms_login(lab_env.https_port, "alice@example.com")
        response, _ = request(retired_port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={session}"})
        assert response.status == 302
        assert "session cookie refused error=unknown or retired key" in retired.log_since_start()
    finally:
        short.stop()
        retired.stop()
