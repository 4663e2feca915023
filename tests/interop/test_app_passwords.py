"""App passwords and `password_protocols` against the real mailbox servers, with Python's own
clients: an app password logs in only where its protocols say, and is refused elsewhere with
exactly the reply (and delay) of a wrong password; a main password barred from IMAP is refused
there while an app password gets in. Once from the users file, once from a real slapd (the app
passwords in a multi-valued attribute that only the service account may read). The app
passwords are made by `mailfront app-password` itself."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import subprocess
import time

import pytest

import lab.ldap  # scripts/ is on sys.path through conftest
from conftest import AUTH_FAILURE_DELAY, lab, node_settings

PASSWORD = lab.DEMO_PASSWORD
IMAP_REFUSAL = "b'[AUTHENTICATIONFAILED] Authentication failed.'"
POP3_REFUSAL = "b'-ERR [AUTH] Authentication failed.'"


class Node:
    """A mailfront node of the lab with plain IMAP, POP3 and submission listeners."""

    def __init__(self, lab_env, name: str, directory: dict):
        self.imap, self.pop3, self.submission = lab.free_port(), lab.free_port(), lab.free_port()
        settings = node_settings(lab_env, name, [
            lab.listener(None, protocol, port, "none", allow_plaintext_auth=True)
            for protocol, port in (("imap", self.imap), ("pop3", self.pop3), ("submission", self.submission))
        ])
        settings["directory"] = directory
        config = lab.write_toml(lab_env.root / f"{name}.toml", settings)
        self.process = lab.Mailfront(lab_env.binary, config, lab_env.root / f"{name}.log")

    def log(self) -> str:
        return self.process.log_since_start()

    def imap_login(self, user: str, password: str) -> tuple[str | None, float]:
        """None and the time taken if the login worked (and INBOX opened), else the refusal."""
        client = imaplib.IMAP4("127.0.0.1", self.imap, timeout=15)
        started = time.monotonic()
        try:
            client.login(user, password)
        except imaplib.IMAP4.error as e:
            elapsed = time.monotonic() - started
            client.logout()
            return str(e), elapsed
        elapsed = time.monotonic() - started
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        return None, elapsed

    def pop3_login(self, user: str, password: str) -> tuple[str | None, float]:
        client = poplib.POP3("127.0.0.1", self.pop3, timeout=15)
        client.user(user)
        started = time.monotonic()
        try:
            client.pass_(password)
        except poplib.error_proto as e:
            elapsed = time.monotonic() - started
            client.close()
            return str(e), elapsed
        elapsed = time.monotonic() - started
        client.stat()
        client.quit()
        return None, elapsed

    def submission_login(self, user: str, password: str) -> tuple[str | None, float]:
        """None if AUTH worked, else the whole reply (`535 5.7.8 …`)."""
        client = smtplib.SMTP("127.0.0.1", self.submission, timeout=20)
        client.ehlo("t")
        started = time.monotonic()
        try:
            client.login(user, password)
        except smtplib.SMTPAuthenticationError as e:
            elapsed = time.monotonic() - started
            client.close()
            return f"{e.smtp_code} {e.smtp_error.decode()}", elapsed
        elapsed = time.monotonic() - started
        client.quit()
        return None, elapsed


def refused_as_wrong(got: tuple[str | None, float], wrong: tuple[str | None, float]) -> None:
    """`got` is refused exactly as the wrong password `wrong` was, after the failure delay."""
    (reply, elapsed), (wrong_reply, wrong_elapsed) = got, wrong
    assert wrong_reply is not None and reply == wrong_reply, (reply, wrong_reply)
    assert elapsed >= AUTH_FAILURE_DELAY - 0.05, elapsed
    assert abs(elapsed - wrong_elapsed) < 0.5, (elapsed, wrong_elapsed)


@pytest.fixture(scope="module")
def file_node(lab_env):
    """alice: `phone` for IMAP only, `mail` for POP3 and submission, main password everywhere;
    bob: main password for submission only (`password_protocols`), `tablet` for IMAP."""
    made = {
        "phone": lab.new_app_password(lab_env.binary, "phone", ["imap"]),
        "mail": lab.new_app_password(lab_env.binary, "mail", ["pop3", "submission"]),
        "tablet": lab.new_app_password(lab_env.binary, "tablet", ["imap"]),
    }
    users = [
        lab.User("alice@example.com", "DB01", app_passwords=[made["phone"].entry, made["mail"].entry]),
        lab.User("bob@example.com", "DB02", app_passwords=[made["tablet"].entry], password_protocols=["submission"]),
    ]
    users_file = lab_env.root / "app-users.toml"
    lab.write_users(users_file, users, lab_env.binary)
    node = Node(lab_env, "apps-file", {"backend": "file", "path": users_file})
    node.process.start()
    yield node, {name: m.password for name, m in made.items()}
    node.process.stop()


def test_an_app_password_limited_to_imap_logs_in_to_imap_only(file_node):
    node, secret = file_node
    assert node.imap_login("alice@example.com", secret["phone"])[0] is None
    wrong_submission = node.submission_login("alice@example.com", "wrong-password")
    assert wrong_submission[0].startswith("535 5.7.8 "), wrong_submission
    refused_as_wrong(node.submission_login("alice@example.com", secret["phone"]), wrong_submission)
    wrong_pop3 = node.pop3_login("alice@example.com", "wrong-password")
    assert wrong_pop3[0] == POP3_REFUSAL
    refused_as_wrong(node.pop3_login("alice@example.com", secret["phone"]), wrong_pop3)
    # The log says why; never the secret.
    log = node.log()
    assert "app password `phone` not allowed for submission" in log
    assert "app password `phone` not allowed for pop3" in log
    assert all(s not in log for s in secret.values())


def test_an_app_password_works_for_each_of_its_protocols(file_node):
    node, secret = file_node
    assert node.submission_login("alice@example.com", secret["mail"])[0] is None
    assert node.pop3_login("alice@example.com", secret["mail"])[0] is None
    wrong_imap = node.imap_login("alice@example.com", "wrong-password")
    refused_as_wrong(node.imap_login("alice@example.com", secret["mail"]), wrong_imap)
    # Without password_protocols the main password still works everywhere.
    assert node.imap_login("alice@example.com", PASSWORD)[0] is None
    assert node.submission_login("alice@example.com", PASSWORD)[0] is None


def test_a_main_password_barred_from_imap_is_refused_there_and_an_app_password_gets_in(file_node):
    node, secret = file_node
    wrong = node.imap_login("bob@example.com", "wrong-password")
    assert wrong[0] == IMAP_REFUSAL
    refused_as_wrong(node.imap_login("bob@example.com", PASSWORD), wrong)
    assert "the main password not allowed for imap" in node.log()
    assert node.imap_login("bob@example.com", secret["tablet"])[0] is None
    # The main password is still good where password_protocols allows it.
    assert node.submission_login("bob@example.com", PASSWORD)[0] is None


@pytest.fixture(scope="module")
def ldap_node(lab_env):
    """The same through slapd: alice's app passwords in `mailfrontAppPassword` (readable only by
    the service account), her main password only for POP3 (`mailfrontPasswordProtocol`)."""
    lab.ensure_installed("slapd")
    root = lab.reset_dir(lab_env.root / "apps-ldap")
    phone = lab.new_app_password(lab_env.binary, "phone", ["imap"])
    slapd = lab.ldap.Slapd(root / "slapd", lab.free_port(), access="service")
    slapd.add_users([
        {"address": "alice@example.com", "password": PASSWORD, "database": "DB01",
         "guid": "0b0c7a4e-0000-4000-8000-0000000000a1", "app_passwords": [phone.entry],
         "password_protocols": ["pop3"]},
    ])
    slapd.start()
    # Only the service account reads the hashes: not alice, not an anonymous client.
    for bind in ([], ["-D", slapd.dn_of("alice@example.com"), "-w", PASSWORD]):
        out = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", slapd.url, *bind, "-b",
                              slapd.dn_of("alice@example.com"), "mailfrontAppPassword"],
                             capture_output=True, text=True)
        assert "mailfrontAppPassword" not in out.stdout, out.stdout
    directory = slapd.directory_config(attributes={
        "app_passwords": "mailfrontAppPassword",
        "password_protocols": "mailfrontPasswordProtocol",
    })
    node = Node(lab_env, "apps-ldap", directory)
    node.process.start()
    yield node, phone
    node.process.stop()
    slapd.stop()


def test_ldap_app_passwords_from_a_multi_valued_attribute(ldap_node):
    node, phone = ldap_node
    assert node.imap_login("alice@example.com", phone.password)[0] is None
    wrong_submission = node.submission_login("alice@example.com", "wrong-password")
    assert wrong_submission[0].startswith("535 5.7.8 "), wrong_submission
    refused_as_wrong(node.submission_login("alice@example.com", phone.password), wrong_submission)
    # The main password (the bind) only for POP3.
    wrong_imap = node.imap_login("alice@example.com", "wrong-password")
    assert wrong_imap[0] == IMAP_REFUSAL
    refused_as_wrong(node.imap_login("alice@example.com", PASSWORD), wrong_imap)
    assert node.pop3_login("alice@example.com", PASSWORD)[0] is None
    log = node.log()
    assert "app password `phone` not allowed for submission" in log
    assert "the main password not allowed for imap" in log
    assert phone.password not in log
