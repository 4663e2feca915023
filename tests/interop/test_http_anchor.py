"""HTTP routed by the mailbox a request acts on (issue 17): a DAV path naming another user's
mailbox (`/dav/<address>/…`, `anchor_path = true`) goes to that user's server, not the caller's.
Two real Radicale servers with separate storage — mbx1 keeps alice's collections, mbx2 bob's —
and bob's server grants alice read access to bob's collections: alice (Basic) reads bob's
calendar through mailfront, answered by bob's server, which still decides what she may do. A
path naming nobody is refused by mailfront, not sent to the caller's server."""

from __future__ import annotations

import re

import pytest

from conftest import lab, node_settings, wait_until
from test_http import basic, propfind, request

# Radicale's rights (first matching section wins): alice may read bob's collections; everyone
# owns their own; the root is readable for discovery.
RIGHTS = r"""
[alice-reads-bob]
user: alice@example\.com
collection: bob@example\.com(/.*)?
permissions: Rr

[owner]
user: .+
collection: {user}(/.*)?
permissions: RrWw

[root]
user: .+
collection:
permissions: R
"""


@pytest.fixture(scope="module")
def anchored(lab_env):
    root = lab.reset_dir(lab_env.root / "http-anchor")
    rights = root / "rights"
    rights.write_text(RIGHTS)
    radicales = {name: lab.Radicale(root, name, lab.free_port(), root / f"dav-{name}", rights=rights)
                 for name in ("mbx1", "mbx2")}
    port = lab.free_port()
    settings = node_settings(lab_env, "anchor1", [lab.listener(None, "https", port, "implicit")])
    for server in settings["server"]:
        if server["name"] in radicales:
            server["http"] = radicales[server["name"]].url
    [dav] = [s for s in settings["http"]["service"] if s["name"] == "dav"]
    dav["anchor_path"] = True
    node = lab.Mailfront(lab_env.binary, lab.write_toml(root / "anchor1.toml", settings), root / "anchor1.log")
    try:
        for radicale in radicales.values():
            radicale.start()
        node.start()
        yield {"port": port, "node": node}
    finally:
        node.stop()
        for radicale in radicales.values():
            radicale.stop()


def backend_of_request(node: lab.Mailfront, path: str, user: str) -> str | None:
    """The backend of `user`'s last request for exactly `path` (`-`: answered by mailfront)."""
    lines = [l for l in node.log_text().splitlines()
             if "http request" in l and f"path={path} " in l and f"user={user}" in l]
    found = re.search(r"backend=(\S+)", lines[-1]) if lines else None
    return found.group(1) if found else None


def test_a_dav_path_naming_another_mailbox_goes_to_that_mailboxs_server(anchored):
    port, node = anchored["port"], anchored["node"]
    # bob makes a calendar on his own server (mbx2), through mailfront.
    made, body = request(port, "MKCOL", "/dav/bob@example.com/shared-cal/", basic("bob@example.com"))
    assert made.status == 201, body
    event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//lab//EN\r\nBEGIN:VEVENT\r\nUID:anchor-1\r\n" \
            "DTSTAMP:20261204T120000Z\r\nDTSTART:20261205T090000Z\r\nSUMMARY:bob's meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    # A plain collection (not a calendar): Radicale stores any item; read it back below.
    put, body = request(port, "PUT", "/dav/bob@example.com/shared-cal/meeting.ics",
                        {**basic("bob@example.com"), "Content-Type": "text/calendar"}, event)
    assert put.status in (201, 204), (put.status, body)
    # alice, authenticated as herself, reads bob's collection: routed to bob's server (mbx2),
    # whose storage alone holds it; on her own server (mbx1) it does not exist.
    status, listing = propfind(port, "/dav/bob@example.com/", basic("alice@example.com"))
    assert status == 207, listing
    assert b"shared-cal" in listing, listing
    assert wait_until(lambda: backend_of_request(node, "/dav/bob@example.com/", "alice@example.com"), 5,
                      "the request line") == "mbx2"
    got, item = request(port, "GET", "/dav/bob@example.com/shared-cal/meeting.ics", basic("alice@example.com"))
    assert got.status == 200 and b"bob's meeting" in item, (got.status, item)
    # bob's server still decides what she may do: reading, not writing.
    denied, _ = request(port, "PUT", "/dav/bob@example.com/shared-cal/alice.ics",
                        {**basic("alice@example.com"), "Content-Type": "text/calendar"}, event.replace("anchor-1", "a2"))
    assert denied.status == 403
    # Her own collections still go to her own server.
    status, _ = propfind(port, "/dav/alice@example.com/", basic("alice@example.com"))
    assert status == 207
    assert backend_of_request(node, "/dav/alice@example.com/", "alice@example.com") == "mbx1"


def test_a_dav_path_naming_nobody_is_refused_not_sent_to_the_callers_server(anchored):
    port, node = anchored["port"], anchored["node"]
    status, body = propfind(port, "/dav/nobody@example.com/", basic("alice@example.com"))
    assert status == 404, body
    # Answered by mailfront itself: no backend was asked.
    assert backend_of_request(node, "/dav/nobody@example.com/", "alice@example.com") == "-"
    # Not an address (the root, discovery paths): the caller's own server, as before.
    status, _ = propfind(port, "/dav/", basic("alice@example.com"))
    assert status == 207
    assert backend_of_request(node, "/dav/", "alice@example.com") == "mbx1"


def test_route_explains_the_mailbox_a_request_names(anchored, lab_env):
    """`mailfront route` routes an HTTP request by the mailbox it names, as the server does: a
    DAV path (`--url`), `MailboxId=` in the URL, or `--anchor` (X-AnchorMailbox); the caller
    stays alice. A name that is no mailbox is refused, not sent to alice's server."""
    import subprocess
    from conftest import USERS

    def route(*args: str) -> str:
        done = subprocess.run([str(lab_env.binary), "route", "--config", str(anchored["node"].config),
                               "alice@example.com", "--protocol", "http", "--service", "dav", *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "decision: proxy to mbx1" in route(), "the caller's own server without an anchor"
    bob_guid = next(u.guid or f"00000000-0000-4000-8000-{i + 1:012d}" for i, u in enumerate(USERS)
                    if u.address == "bob@example.com")
    for args in (("--url", "https://localhost/dav/bob%40example.com/calendar/"),
                 ("--anchor", "bob@example.com"),
                 ("--anchor", "SMTP:bob@example.com"),
                 ("--url", f"https://localhost/dav/?MailboxId={bob_guid}@example.com")):
        out = route(*args)
        assert "user:     alice@example.com (the caller)" in out, out
        assert "(mailbox bob@example.com, database DB02" in out, out
        assert "decision: proxy to mbx2" in out, (args, out)
    out = route("--anchor", "nobody@example.com")
    assert "anchor:   nobody@example.com (names no mailbox)" in out, out
    assert "decision: reject (permanent)" in out and "proxy" not in out, out
    refused = subprocess.run([str(lab_env.binary), "route", "--config", str(anchored["node"].config),
                              "alice@example.com", "--anchor", "bob@example.com"], capture_output=True, text=True)
    assert refused.returncode != 0 and "--anchor go with --protocol http" in refused.stderr, refused.stderr
