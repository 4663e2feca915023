"""A node that has outgrown the files: users in LDAP (a real slapd), database locations in etcd
(a real etcd). Logins, refusals, a disabled user, the cache's TTL, slapd going away and coming
back in every protocol; an etcd switchover closing a live session; etcd going away while logins
keep working on the last map."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import subprocess
import time

import pytest

import lab.etcd  # scripts/ is on sys.path through conftest
import lab.ldap
import conftest
from conftest import ACTIVE, lab, node_settings

PASSWORD = "ldap-pw-1"
CACHE_TTL = 1.0
TIMEOUT = 1.0

LDAP_USERS = [
    {"address": "alice@example.com", "password": PASSWORD, "aliases": ["alice.smith@example.com"],
     "database": "DB01", "guid": "0b0c7a4e-0000-4000-8000-000000000001"},
    {"address": "bob@example.com", "password": lab.ldap.hash_sha512_crypt(PASSWORD), "database": "DB02",
     "guid": "0b0c7a4e-0000-4000-8000-000000000002"},
    {"address": "eve@example.com", "password": PASSWORD, "database": "DB01", "enabled": False,
     "guid": "0b0c7a4e-0000-4000-8000-000000000005"},
    {"address": "heidi@example.com", "password": PASSWORD, "database": "DB07",
     "guid": "0b0c7a4e-0000-4000-8000-000000000007"},
]


@pytest.fixture(scope="module")
def ldap_env(lab_env):
    """A second mailfront node on the same mailbox servers, with users in slapd and locations
    in etcd."""
    lab.ensure_installed("slapd")
    root = lab.reset_dir(lab_env.root / "ldap-node")
    slapd = lab.ldap.Slapd(root / "slapd", lab.free_port())
    slapd.add_users(LDAP_USERS)
    slapd.start()
    etcd = lab.etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
    etcd.start()
    for database, server in ACTIVE.items():
        etcd.put_active(database, server)
    imap, pop3, submission, smtp, https = (lab.free_port() for _ in range(5))
    # Same servers, locations and certificates (and node name); another directory and other listeners.
    settings = node_settings(lab_env, "test1", [
        *(lab.listener(None, protocol, port, "none", allow_plaintext_auth=True)
          for protocol, port in (("imap", imap), ("pop3", pop3), ("submission", submission))),
        lab.listener(None, "smtp", smtp, "none"),
        lab.listener(None, "https", https, "implicit"),
    ])
    settings["directory"] = slapd.directory_config(timeout=f"{int(TIMEOUT * 1000)}ms",
                                                   cache_ttl=f"{int(CACHE_TTL * 1000)}ms", negative_cache_ttl="500ms")
    settings["location"] = etcd.location_config(timeout="1s")
    config = lab.write_toml(root / "mailfront.toml", settings)
    node = lab.Mailfront(lab_env.binary, config, root / "mailfront.log")
    node.start()
    env = {"slapd": slapd, "etcd": etcd, "node": node, "imap": imap, "pop3": pop3, "submission": submission,
           "smtp": smtp, "https": https, "config": config}
    yield env
    node.stop()
    slapd.stop()
    etcd.stop()


def imap_login(env, user: str, password: str = PASSWORD) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", env["imap"], timeout=15)
    client.login(user, password)
    return client


def test_login_through_ldap(ldap_env):
    for user in ("alice@example.com", "ALICE.SMITH@example.com", "bob@example.com"):
        client = imap_login(ldap_env, user)
        client.select("INBOX")
        client.logout()
    assert "backend=mbx1" in ldap_env["node"].log_since_start()
    assert "backend=mbx2" in ldap_env["node"].log_since_start()


def test_refusals(ldap_env):
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(ldap_env, "alice@example.com", "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(ldap_env, "nobody@example.com")
    # A disabled entry: the password is right, every protocol is refused.
    with pytest.raises(imaplib.IMAP4.error, match="CONTACTADMIN"):
        imap_login(ldap_env, "eve@example.com")


def test_check_and_route_with_ldap(ldap_env, lab_env):
    check = subprocess.run([str(lab_env.binary), "check", "--config", str(ldap_env["config"])],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "LDAP directory reachable" in check.stdout
    route = subprocess.run([str(lab_env.binary), "route", "--config", str(ldap_env["config"]), "alice.smith@example.com"],
                           capture_output=True, text=True)
    assert "decision: proxy to mbx1" in route.stdout, route.stdout + route.stderr


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """conftest.wait_until at a gentler pace: most predicates here are whole logins."""
    return conftest.wait_until(predicate, timeout, what, interval=0.1)


def imap_failure(env, user: str) -> str:
    try:
        imap_login(env, user).logout()
        return ""
    except imaplib.IMAP4.error as e:
        return str(e)


def test_ldap_down_is_temporary_everywhere_and_recovers(ldap_env):
    slapd = ldap_env["slapd"]
    slapd.stop()
    try:
        # Cached successes may answer for up to the cache TTL; then every protocol says "later".
        start = time.monotonic()
        failure = wait_until(lambda: imap_failure(ldap_env, "alice@example.com"), what="IMAP refusal")
        assert "[UNAVAILABLE]" in failure
        assert time.monotonic() - start < CACHE_TTL + TIMEOUT + 5
        pop = poplib.POP3("127.0.0.1", ldap_env["pop3"], timeout=15)
        pop.user("bob@example.com")
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            pop.pass_(PASSWORD)
        pop.close()
        smtp = smtplib.SMTP("127.0.0.1", ldap_env["submission"], timeout=15)
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login("heidi@example.com", PASSWORD)
        assert refused.value.smtp_code == 454
        smtp.close()
        inbound = smtplib.SMTP("127.0.0.1", ldap_env["smtp"], timeout=15)
        inbound.ehlo("t")
        inbound.mail("x@remote.org")
        code, text = inbound.rcpt("heidi@example.com")
        assert (code, text[:5]) == (451, b"4.3.0"), (code, text)
        inbound.quit()
    finally:
        slapd.start()
    # Back without a restart of mailfront.
    client = wait_until(lambda: _try_login(ldap_env), what="login after slapd returned")
    client.logout()


def _try_login(env):
    try:
        return imap_login(env, "alice@example.com")
    except imaplib.IMAP4.error:
        return None


def test_a_changed_entry_is_seen_after_the_cache_ttl(ldap_env):
    slapd = ldap_env["slapd"]
    imap_login(ldap_env, "bob@example.com").logout()
    slapd.set_password("bob@example.com", "new-password-2")
    try:
        # Within the TTL the cached success may still answer; after it, LDAP decides.
        client = wait_until(lambda: _login_or_none(ldap_env, "bob@example.com", "new-password-2"),
                            timeout=CACHE_TTL + 5, what="new password accepted")
        client.logout()
        # The old password, remembered at the first login, stops working once the TTL is over.
        start = time.monotonic()
        wait_until(lambda: "AUTHENTICATIONFAILED" in imap_failure_with(ldap_env, "bob@example.com", PASSWORD),
                   timeout=CACHE_TTL + 5, what="old password refused")
        assert time.monotonic() - start < CACHE_TTL + 2
    finally:
        slapd.set_password("bob@example.com", PASSWORD)


def _login_or_none(env, user, password):
    try:
        return imap_login(env, user, password)
    except imaplib.IMAP4.error:
        return None


def imap_failure_with(env, user, password) -> str:
    try:
        imap_login(env, user, password).logout()
        return ""
    except imaplib.IMAP4.error as e:
        return str(e)


def test_etcd_switchover_closes_the_live_session(ldap_env):
    etcd, node = ldap_env["etcd"], ldap_env["node"]
    subject = f"etcd switchover {time.monotonic_ns()}"
    client = imap_login(ldap_env, "alice@example.com")
    client.append("INBOX", None, None, f"Subject: {subject}\r\n\r\nx\r\n".encode())
    client.select("INBOX")
    start = time.monotonic()
    etcd.put_active("DB01", "mbx2")
    try:
        # The client sees BYE [UNAVAILABLE] on its next command.
        with pytest.raises(imaplib.IMAP4.abort, match="UNAVAILABLE"):
            client.noop()
        assert time.monotonic() - start < 2
        again = imap_login(ldap_env, "alice@example.com")
        again.select("INBOX")
        _, found = again.search(None, "SUBJECT", f'"{subject}"')
        assert found[0], "alice's mail is not on mbx2"
        again.logout()
        log = node.log_since_start()
        assert "active copy moved database=DB01 from=mbx1 to=mbx2" in log
        last = [l for l in log.splitlines() if "session proxied" in l and "user=alice@example.com" in l][-1]
        assert "backend=mbx2" in last
    finally:
        etcd.put_active("DB01", "mbx1")


def test_etcd_down_keeps_routing_on_the_last_map(ldap_env):
    etcd, node = ldap_env["etcd"], ldap_env["node"]
    etcd.kill()
    try:
        wait_until(lambda: "lost the etcd location store" in node.log_since_start(), what="staleness noticed")
        for user in ("alice@example.com", "bob@example.com"):
            client = imap_login(ldap_env, user)
            client.select("INBOX")
            client.logout()
    finally:
        etcd.start()
    # Back: a change is followed again.
    etcd.put_active("DB02", "mbx1")
    try:
        wait_until(lambda: "active copy moved database=DB02 from=mbx2 to=mbx1" in node.log_since_start(),
                   what="change after etcd returned")
    finally:
        etcd.put_active("DB02", "mbx2")


def test_address_book_from_ldap(ldap_env):
    import base64
    import http.client

    from conftest import client_tls

    conn = http.client.HTTPSConnection("127.0.0.1", ldap_env["https"], context=client_tls(), timeout=20)
    auth = base64.b64encode(f"alice@example.com:{PASSWORD}".encode()).decode()
    conn.request("GET", "/oab/", headers={"Authorization": f"Basic {auth}"})
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 200, text
    # Everyone of the tenant, from slapd, including the disabled entry (it is still an address).
    for address in ("alice@example.com", "bob@example.com", "heidi@example.com"):
        assert f"EMAIL;TYPE=work;PREF=1:{address}" in text, text
    assert "EMAIL;TYPE=work:alice.smith@example.com" in text
