"""Inbound SMTP extensions that mailfront passes on rather than handles (issue 17): DSN (RFC 3461)
and SMTPUTF8 (RFC 6531), offered only while every delivery server announces them; and recipients
that are not mailboxes (`[transport] non_mailbox_recipients`), which reach the seeds' third
delivery rule — no mailbox recipient: a random server of the local site.

Delivery servers: the lab's Dovecot 2.3 LMTP, which announces neither extension, and Postfix
(Debian's package) in front of each Dovecot as the mailbox server's own MTA, which announces both
and acts on them: its delivery report, sent back to the sender's mailbox, shows what mailfront
passed on. Clients: smtplib and raw sockets."""

from __future__ import annotations

import email
import imaplib
import smtplib
import socket
import uuid
from pathlib import Path

import pytest

from conftest import lab, node_settings, wait_until

PASSWORD = lab.DEMO_PASSWORD


def ehlo_extensions(port: int) -> set[str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo("client.example.org")
        return set(client.esmtp_features)


def exchange(port: int, lines: list[bytes]) -> list[str]:
    """Says EHLO, then each line; returns the replies to the lines (one line each)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        reader = s.makefile("rb")
        reader.readline()
        s.sendall(b"EHLO client.example.org\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        replies = []
        for line in lines:
            s.sendall(line + b"\r\n")
            replies.append(reader.readline().decode("utf-8", "replace").strip())
        s.sendall(b"QUIT\r\n")
        return replies


def find_message(user: str, text: str, port: int, timeout: float = 20.0) -> bytes:
    """Polls `user`'s INBOX (through mailfront at `port`) for a message containing `text`."""
    def found():
        client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        try:
            client.login(user, PASSWORD)
            client.select("INBOX")
            _, data = client.search("UTF-8", "TEXT", f'"{text}"'.encode())
            if not data[0]:
                return None
            _, fetched = client.fetch(data[0].split()[-1], "(RFC822)")
            return fetched[0][1]
        finally:
            client.logout()
    return wait_until(found, timeout, f"a message with {text!r} for {user}", interval=0.2)


def test_dovecot_23_announces_neither_so_mailfront_refuses_both_cleanly(lab_env):
    """The lab's node delivers to Dovecot 2.3's LMTP, which announces neither DSN nor SMTPUTF8:
    mailfront offers neither, refuses their parameters as unsupported, and a non-ASCII address
    without SMTPUTF8 with RFC 6531's reply; a plain message still goes through."""
    port = lab_env.smtp_port
    # A message first, so that mailfront has heard the delivery server's LHLO answer.
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.sendmail("sender@remote.org", ["alice@example.com"], b"Subject: plain\r\n\r\nplain\r\n")
    features = ehlo_extensions(port)
    assert "dsn" not in features and "smtputf8" not in features, features
    replies = exchange(port, [
        b"MAIL FROM:<sender@remote.org> RET=HDRS",
        b"MAIL FROM:<sender@remote.org> SMTPUTF8",
        "MAIL FROM:<j\u00f6rg@remote.org>".encode(),
        b"MAIL FROM:<sender@remote.org>",
        b"RCPT TO:<alice@example.com> NOTIFY=SUCCESS",
        "RCPT TO:<j\u00f6rg@example.com>".encode(),
    ])
    assert replies == [
        "555 5.5.4 Unsupported parameter",
        "555 5.5.4 Unsupported parameter",
        "553 5.6.7 Non-ASCII address requires SMTPUTF8",
        "250 2.1.0 OK",
        "555 5.5.4 Unsupported parameter",
        "553 5.6.7 Non-ASCII address requires SMTPUTF8",
    ], replies


@pytest.fixture(scope="module")
def postfix_node(lab_env):
    """A node whose mailbox servers take mail through their own Postfix (SMTP), each Postfix
    delivering to its Dovecot's LMTP. Probes read what the Postfixes announce."""
    root = lab.reset_dir(lab_env.root / "smtp-extensions")
    mtas = {name: lab.Postfix(root, name, lab.free_port(), lab_env.servers[name].ports.lmtp, ["example.com"])
            for name in ("mbx1", "mbx2")}
    smtp_port = lab.free_port()
    settings = node_settings(lab_env, "mta1", [lab.listener(None, "smtp", smtp_port, "none")],
                             {"health": {"interval": "500ms", "timeout": "500ms"}})
    for server in settings["server"]:
        if server["name"] in mtas:
            server["delivery"] = {"port": mtas[server["name"]].smtp_port, "protocol": "smtp"}
        else:
            # Only the two servers with a Postfix take mail here.
            server.pop("delivery", None)
    node = lab.Mailfront(lab_env.binary, lab.write_toml(root / "mta1.toml", settings), root / "mta1.log")
    try:
        for mta in mtas.values():
            mta.start()
        node.start()
        yield {"port": smtp_port, "node": node, "mtas": mtas}
    finally:
        node.stop()
        for mta in mtas.values():
            mta.stop()


def test_dsn_and_smtputf8_are_offered_once_every_delivery_server_announces_them(postfix_node):
    features = wait_until(lambda: (f := ehlo_extensions(postfix_node["port"])) >= {"dsn", "smtputf8"} and f,
                          15, "DSN and SMTPUTF8 in the EHLO answer")
    assert {"dsn", "smtputf8", "8bitmime"} <= features
    assert "delivery server's extensions" in postfix_node["node"].log_since_start()


def test_dsn_parameters_reach_the_mailbox_servers_mta(postfix_node, lab_env):
    """bob sends to alice's alias with RET, ENVID and NOTIFY=SUCCESS: alice gets the message, and
    bob gets Postfix's delivery report naming the envelope id he chose (passed on by mailfront)
    and the address he wrote (the ORCPT mailfront added when it turned the alias into alice's own
    address)."""
    wait_until(lambda: "dsn" in ehlo_extensions(postfix_node["port"]), 15, "DSN offered")
    envid = f"env{uuid.uuid4().hex}"
    subject = f"dsn {uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", postfix_node["port"], timeout=15) as client:
        refused = client.sendmail("bob@example.com", ["alice.smith@example.com"],
                                  f"Subject: {subject}\r\n\r\nwith a receipt\r\n".encode(),
                                  mail_options=["RET=HDRS", f"ENVID={envid}"], rcpt_options=["NOTIFY=SUCCESS"])
    assert refused == {}
    assert subject.encode() in find_message("alice@example.com", subject, lab_env.plain_port)
    report = email.message_from_bytes(find_message("bob@example.com", envid, lab_env.plain_port))
    text = report.as_string()
    assert f"Original-Envelope-Id: {envid}" in text, text
    assert "Original-Recipient: rfc822;alice.smith@example.com" in text, text
    # Postfix hands it to Dovecot's LMTP, which has no DSN: "relayed" (RFC 3461 §6.3.3).
    assert "Action: relayed" in text and "Status: 2.0.0" in text, text
    # RET=HDRS: the report returns the headers only.
    assert "with a receipt" not in text


def test_an_smtputf8_transaction_is_passed_on(postfix_node, lab_env):
    """A UTF-8 sender in an SMTPUTF8 transaction: mailfront passes the transaction on, and the
    mailbox server's Postfix takes it (Postfix refuses a UTF-8 address without SMTPUTF8, "553
    5.6.7 Must declare SMTPUTF8"). The client hears 250 only after Postfix accepted it."""
    wait_until(lambda: "smtputf8" in ehlo_extensions(postfix_node["port"]), 15, "SMTPUTF8 offered")
    marker = uuid.uuid4().hex
    sender = f"j\u00f6rg.{marker}@b\u00fccher.example"
    message = f"From: {sender}\r\nSubject: Gr\u00fc\u00dfe {marker}\r\n\r\n\u00e7a va\r\n".encode()
    with smtplib.SMTP("127.0.0.1", postfix_node["port"], timeout=15) as client:
        client.ehlo("client.example.org")
        assert client.sendmail(sender, ["alice@example.com"], message, mail_options=["SMTPUTF8"]) == {}
    mtas = postfix_node["mtas"].values()
    wait_until(lambda: any(f"from=<{sender}>, size=" in mta.log_text() for mta in mtas), 10,
               "Postfix's queue line for the UTF-8 sender")


def test_an_extension_one_delivery_server_stops_announcing_is_no_longer_offered(postfix_node):
    """mbx2's Postfix restarts without SMTPUTF8: once a probe has read its new EHLO answer,
    mailfront stops offering SMTPUTF8 (any message may go to any server), and offers it again
    when the server does."""
    port, mta = postfix_node["port"], postfix_node["mtas"]["mbx2"]
    wait_until(lambda: "smtputf8" in ehlo_extensions(port), 15, "SMTPUTF8 offered")
    mta.stop()
    mta.smtputf8 = False
    mta.start()
    try:
        features = wait_until(lambda: "smtputf8" not in (f := ehlo_extensions(port)) and f, 15,
                              "SMTPUTF8 withdrawn")
        assert "dsn" in features
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
            client.ehlo("client.example.org")
            code, text = client.docmd("MAIL FROM:<sender@remote.org> SMTPUTF8")
            assert (code, text) == (555, b"5.5.4 Unsupported parameter")
    finally:
        mta.stop()
        mta.smtputf8 = True
        mta.start()
    wait_until(lambda: "smtputf8" in ehlo_extensions(port), 15, "SMTPUTF8 offered again")


ROLE_USER = "postmaster@example.com"


@pytest.fixture(scope="module")
def role_node(lab_env):
    """A node that takes `postmaster@` at every accepted domain, though the directory has no
    such mailbox, with mbx1 and mbx3 in its own site and mbx2 in another. Each Dovecot knows a
    postmaster of its own (its own folder), so the folder a message lands in names the server."""
    root = lab.reset_dir(lab_env.root / "role-recipients")
    uid, gid, _ = lab.mail_owner()
    for name in ("mbx1", "mbx2", "mbx3"):
        dovecot = lab_env.servers[name]
        users = dovecot.dir / "users"
        folder = dovecot.db_root / f"ROLE-{name}" / ROLE_USER
        line = (f"{ROLE_USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{dovecot.dir}/home/{ROLE_USER}"
                f"::userdb_mail=maildir:{folder}\n")
        if ROLE_USER not in users.read_text():
            users.write_text(users.read_text() + line)
    port = lab.free_port()
    settings = node_settings(lab_env, "roles1", [lab.listener(None, "smtp", port, "none")],
                             {"transport": {"non_mailbox_recipients": ["postmaster"]}})
    for server in settings["server"]:
        if server["name"] == "mbx2":
            server["site"] = "east"
        elif server["name"] not in ("mbx1", "mbx3"):
            server.pop("delivery", None)
    settings["site"] = [{"name": "lab"}, {"name": "east"}]
    node = lab.Mailfront(lab_env.binary, lab.write_toml(root / "roles1.toml", settings), root / "roles1.log")
    node.start()
    try:
        yield {"port": port, "node": node, "db": lab_env.servers["mbx1"].db_root}
    finally:
        node.stop()


def landed(db: Path, marker: str) -> list[str]:
    """The servers whose postmaster folder holds a message containing `marker`."""
    servers = []
    for name in ("mbx1", "mbx2", "mbx3"):
        folder = db / f"ROLE-{name}" / ROLE_USER / "new"
        if folder.exists() and any(marker.encode() in f.read_bytes() for f in folder.iterdir()):
            servers.append(name)
    return servers


def test_a_message_with_no_mailbox_recipient_goes_to_a_random_server_of_the_local_site(role_node):
    """The seeds' third rule: twelve messages to postmaster@ (no mailbox recipient) land on the
    servers of this node's site only (mbx1, mbx3; never mbx2 in site east), on more than one of
    them (chance of one server taking all twelve by luck: 1 in 2048)."""
    port, db = role_node["port"], role_node["db"]
    markers = [f"role-{uuid.uuid4().hex}" for _ in range(12)]
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        for marker in markers:
            # Case does not matter in the local part (RFC 5321 §4.5.1).
            assert client.sendmail("sender@remote.org", ["PostMaster@example.com"],
                                   f"Subject: {marker}\r\n\r\n{marker}\r\n".encode()) == {}
    where = [wait_until(lambda m=marker: landed(db, m), 10, f"message {marker}") for marker in markers]
    assert all(len(servers) == 1 for servers in where), where
    chosen = {servers[0] for servers in where}
    assert chosen <= {"mbx1", "mbx3"}, where
    assert chosen == {"mbx1", "mbx3"}, f"every message went to {chosen}: not random"


def test_a_non_mailbox_recipient_goes_along_with_the_mailbox_recipients(role_node, lab_env):
    """With a mailbox recipient too, the mailbox decides (rule 1: its delivery group, nearest
    site, the server hosting its active copy first): four messages to postmaster and alice all
    land where alice's do, never at random."""
    port, db = role_node["port"], role_node["db"]
    active = lab.read_locations(lab_env.locations)["DB01"]
    # The lab's servers share one delivery group; this site has mbx1 and mbx3.
    expected = active if active in ("mbx1", "mbx3") else "mbx1"
    markers = [f"along-{uuid.uuid4().hex}" for _ in range(4)]
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        for marker in markers:
            assert client.sendmail("sender@remote.org", ["postmaster@example.com", "alice@example.com"],
                                   f"Subject: {marker}\r\n\r\n{marker}\r\n".encode()) == {}
    for marker in markers:
        assert wait_until(lambda m=marker: landed(db, m), 10, "postmaster's copy") == [expected]
    # Other local parts are still unknown users, and the list does not open relaying.
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo("client.example.org")
        client.mail("sender@remote.org")
        assert client.rcpt("hostmaster@example.com") == (550, b"5.1.1 User unknown")
        assert client.rcpt("postmaster@elsewhere.org") == (554, b"5.7.1 Relaying denied")
