"""Active Directory-style entries (`[directory] profile = "active-directory"`) against a real
slapd loaded with the AD look-alike schema (scripts/ldap/ad-lab.schema) and the lab's real
Dovecot mailbox servers: logins by userPrincipalName and by an `smtp:` proxy address, the
primary address from `SMTP:`, the database from homeMDB's RDN, userAccountControl's disabled
bit, binary GUIDs (Microsoft byte order) as HTTP anchors, and an address book longer than the
server's size limit (RFC 2696 paged search)."""

from __future__ import annotations

import base64
import http.client
import imaplib
import re
import subprocess
import uuid

import pytest

import lab.ldap  # scripts/ is on sys.path through conftest
from conftest import client_tls, lab, node_settings

PASSWORD = "ad-pw-1"
# Fewer than the users below: an address book that ignores paging comes back cut.
SIZE_LIMIT = 4

# alice's mailbox GUID is her objectGUID (she has no msExchMailboxGuid); bob has both, and his
# mailbox GUID is msExchMailboxGuid. The first three fields differ when byte-swapped, so a
# reading in the wrong byte order names nobody.
ALICE_OBJECT_GUID = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
BOB_MAILBOX_GUID = "00112233-4455-6677-8899-aabbccddeeff"
BOB_OBJECT_GUID = "f0e1d2c3-b4a5-4697-8877-665544332211"

AD_USERS = [
    # The primary address is the SMTP: value, not `mail` (Dovecot knows alice@example.com only).
    {"upn": "asmith@corp.example.com", "cn": "alice", "password": PASSWORD, "mail": "alice.mail@example.com",
     "proxy_addresses": ["SMTP:alice@example.com", "smtp:alice.alias@example.com", "X500:/o=Example/cn=alice",
                         "SIP:alice.sip@example.com"],
     "object_guid": ALICE_OBJECT_GUID, "database": "DB01", "uac": 512, "display_name": "Alice Smith"},
    {"upn": "bob@corp.example.com", "cn": "bob", "password": PASSWORD, "mail": "bob@example.com",
     "proxy_addresses": ["SMTP:bob@example.com"],
     "object_guid": BOB_OBJECT_GUID, "mailbox_guid": BOB_MAILBOX_GUID, "database": "DB02", "uac": 66048},
    # ACCOUNTDISABLE (0x2) set: 514 = NORMAL_ACCOUNT | ACCOUNTDISABLE.
    {"upn": "eve@corp.example.com", "cn": "eve", "password": PASSWORD,
     "proxy_addresses": ["SMTP:eve@example.com"], "object_guid": str(uuid.uuid4()), "database": "DB01", "uac": 514},
] + [
    {"upn": f"user{i:02d}@corp.example.com", "password": PASSWORD, "proxy_addresses": [f"SMTP:user{i:02d}@example.com"],
     "object_guid": str(uuid.uuid4()), "database": "DB01"}
    for i in range(1, 8)
]
EVERY_ADDRESS = ["alice@example.com", "bob@example.com", "eve@example.com"] + \
    [f"user{i:02d}@example.com" for i in range(1, 8)]


@pytest.fixture(scope="module")
def ad_env(lab_env):
    """Another mailfront node on the lab's mailbox servers and locations, with its users in an
    AD-like slapd (size limit SIZE_LIMIT)."""
    lab.ensure_installed("slapd")
    root = lab.reset_dir(lab_env.root / "ldap-ad")
    slapd = lab.ldap.Slapd(root / "slapd", lab.free_port(), access="service", profile="active-directory",
                           sizelimit=SIZE_LIMIT)
    slapd.add_users(AD_USERS)
    slapd.start()
    imap, https = lab.free_port(), lab.free_port()
    settings = node_settings(lab_env, "test1", [
        lab.listener(None, "imap", imap, "none", allow_plaintext_auth=True),
        lab.listener(None, "https", https, "implicit"),
    ])
    # Small pages: the address book takes several, each under the size limit.
    settings["directory"] = slapd.directory_config(timeout="2s", page_size=3, cache_ttl="0s",
                                                   negative_cache_ttl="0s")
    config = lab.write_toml(root / "mailfront.toml", settings)
    node = lab.Mailfront(lab_env.binary, config, root / "mailfront.log")
    node.start()
    yield {"slapd": slapd, "node": node, "imap": imap, "https": https, "config": config, "binary": lab_env.binary}
    node.stop()
    slapd.stop()


def imap_login(env, user: str, password: str = PASSWORD) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", env["imap"], timeout=15)
    client.login(user, password)
    return client


def proxied_line(env, login_count: int) -> str:
    """The last `session proxied` line, once there are `login_count` of them."""
    lines = [l for l in env["node"].log_since_start().splitlines() if "session proxied" in l]
    assert len(lines) >= login_count, lines
    return lines[-1]


def test_login_by_upn_and_by_an_smtp_proxy_address(ad_env):
    count = 0
    for login, backend in (("asmith@corp.example.com", "mbx1"),
                           ("alice.alias@example.com", "mbx1"),
                           # The filter's smtp: finds SMTP: too (matching ignores case), any case of the address.
                           ("ALICE@Example.COM", "mbx1"),
                           ("bob@corp.example.com", "mbx2")):
        client = imap_login(ad_env, login)
        status, _ = client.select("INBOX")
        assert status == "OK", login
        client.logout()
        count += 1
        line = proxied_line(ad_env, count)
        # The mailbox server saw the primary SMTP: address, on the server of homeMDB's database.
        user = "bob@example.com" if backend == "mbx2" else "alice@example.com"
        assert f"user={user}" in line and f"backend={backend}" in line, (login, line)


def test_refusals(ad_env):
    # Disabled by userAccountControl: the password is right, the answer is a disabled account's
    # (the same as `mailEnabled: FALSE` gets).
    with pytest.raises(imaplib.IMAP4.error) as refused:
        imap_login(ad_env, "eve@corp.example.com")
    assert str(refused.value) == str(b"[CONTACTADMIN] IMAP access is not enabled for this account."), refused.value
    # Not logins: a wrong password, the X500: and SIP: proxy addresses, `mail` of another kind of entry.
    for login, password in (("asmith@corp.example.com", "wrong"),
                            ("/o=Example/cn=alice", PASSWORD),
                            ("alice.sip@example.com", PASSWORD),
                            ("nobody@corp.example.com", PASSWORD)):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap_login(ad_env, login, password)


def route(env, name: str) -> str:
    result = subprocess.run([str(env["binary"]), "route", "--config", str(env["config"]), name],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_route_shows_the_database_of_home_mdb(ad_env):
    for name, address, database, server in (("asmith@corp.example.com", "alice@example.com", "DB01", "mbx1"),
                                            ("alice.alias@example.com", "alice@example.com", "DB01", "mbx1"),
                                            ("bob@example.com", "bob@example.com", "DB02", "mbx2")):
        out = route(ad_env, name)
        # homeMDB is a whole DN (CN=DB01,CN=Databases,…); the database is its first RDN. No
        # entry has a version attribute: the profile's default, 15.1.
        assert f"user:     {address} (database {database}, version 15.1.0)" in out, out
        assert f"decision: proxy to {server}" in out, out
        assert "CN=" not in out, out


def request(env, headers: dict, path: str = "/freebusy/"):
    conn = http.client.HTTPSConnection("127.0.0.1", env["https"], context=client_tls(), timeout=20)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def basic(user: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def last_request_line(env, count: int) -> str:
    lines = [l for l in env["node"].log_since_start().splitlines() if "http request" in l and "/freebusy/" in l]
    assert len(lines) >= count, lines
    return lines[-1]


def big_endian_reading(text: str) -> str:
    """The GUID a reader would get from AD's bytes if it took them in RFC 4122 (big-endian) order."""
    return str(uuid.UUID(bytes=uuid.UUID(text).bytes_le))


def test_binary_guids_anchor_http_requests(ad_env):
    count = 0

    def anchored(caller: str, anchor: str):
        nonlocal count
        response, _ = request(ad_env, {**basic(caller), "X-AnchorMailbox": anchor})
        count += 1
        return response.status, last_request_line(ad_env, count)

    # bob's mailbox GUID (msExchMailboxGuid, decoded in Microsoft byte order) at his tenant: bob's server.
    for anchor in (f"{BOB_MAILBOX_GUID}@example.com", f"{BOB_MAILBOX_GUID.upper()}@example.com",
                   f"{BOB_MAILBOX_GUID.replace('-', '')}@example.com"):
        _, line = anchored("asmith@corp.example.com", anchor)
        assert "backend=mbx2" in line, (anchor, line)
    # alice's comes from her objectGUID (she has no msExchMailboxGuid): alice's server, for bob.
    _, line = anchored("bob@corp.example.com", f"{ALICE_OBJECT_GUID}@example.com")
    assert "backend=mbx1" in line, line
    # The same bytes read in the other byte order, and bob's objectGUID (his mailbox GUID is
    # msExchMailboxGuid), name no mailbox: refused, not routed to the caller's own server.
    assert big_endian_reading(BOB_MAILBOX_GUID) != BOB_MAILBOX_GUID
    for anchor in (f"{big_endian_reading(BOB_MAILBOX_GUID)}@example.com",
                   f"{big_endian_reading(ALICE_OBJECT_GUID)}@example.com",
                   f"{BOB_OBJECT_GUID}@example.com"):
        status, line = anchored("asmith@corp.example.com", anchor)
        assert status == 404 and "backend=-" in line, (anchor, status, line)


def test_the_address_book_is_complete_beyond_the_size_limit(ad_env):
    slapd = ad_env["slapd"]
    base = ["ldapsearch", "-x", "-LLL", "-H", slapd.url, "-D", lab.ldap.SERVICE_DN, "-w", slapd.service_password,
            "-b", lab.ldap.PEOPLE]
    # The server does cut an unpaged search at the limit, and gives everything page by page.
    unpaged = subprocess.run(base + ["(proxyAddresses=*)", "1.1"], capture_output=True, text=True)
    assert unpaged.returncode == 4 and unpaged.stdout.count("dn:") == SIZE_LIMIT, unpaged.stdout + unpaged.stderr
    paged = subprocess.run(base + ["-E", "pr=3/noprompt", "(proxyAddresses=*)", "1.1"], capture_output=True, text=True)
    assert paged.returncode == 0 and paged.stdout.count("dn:") == len(AD_USERS), paged.stdout + paged.stderr

    response, body = request(ad_env, basic("asmith@corp.example.com"), "/oab/")
    text = body.decode()
    assert response.status == 200, text
    listed = re.findall(r"^EMAIL;TYPE=work;PREF=1:(.+?)\r?$", text, re.MULTILINE)
    assert sorted(listed) == sorted(EVERY_ADDRESS), text
    # smtp: values are further addresses of the same card; X500:/SIP: ones are not addresses.
    assert "EMAIL;TYPE=work:alice.alias@example.com" in text, text
    assert "/o=Example" not in text and "alice.sip@" not in text, text
    assert "address list truncated" not in ad_env["node"].log_since_start()
