"""A real browser (Debian's Chromium, driven by playwright-core) logs in through mailfront's
form, lands on Radicale's web page through mailfront, and a second node that shares the cookie
key accepts the same cookie: no load-balancer affinity needed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import https_node, lab, start_node

BROWSER = Path(__file__).resolve().parents[1] / "browser"


def test_forms_login_in_chromium_and_a_second_node(lab_env):
    assert Path("/usr/bin/chromium").exists(), "Chromium is missing: scripts/test installs it"
    assert (BROWSER / "node_modules" / "playwright-core").exists(), "run scripts/test (it runs npm ci in tests/browser)"
    node_b, port_b = https_node(lab_env, "test2", lab_env.cookie_keys)
    try:
        out = subprocess.run(
            ["node", str(BROWSER / "login.mjs"), f"https://127.0.0.1:{lab_env.https_port}",
             f"https://127.0.0.1:{port_b}", "alice@example.com", lab.DEMO_PASSWORD],
            capture_output=True, text=True, timeout=120, cwd=BROWSER,
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        node_b.stop()
    assert "/login?return=" in seen["loginUrl"]
    assert "/calendar/.web" in seen["landedOn"], seen
    assert "Radicale" in seen["title"], seen
    assert seen["cookie"] == {"httpOnly": True, "secure": True, "sameSite": "Lax"}
    # Node B never saw a login, yet serves the calendar: it opened node A's cookie.
    assert "/calendar/.web" in seen["nodeBUrl"] and "/login" not in seen["nodeBUrl"], seen
    assert "Radicale" in seen["nodeBTitle"]
    assert "session cookie refused" not in node_b.log_since_start()


def test_the_status_page_in_chromium(lab_env):
    """The admin listener's status page, as a browser shows it: the lab's servers with their
    sessions, the databases and where they are active, logins by result; it reloads itself."""
    import imaplib
    assert (BROWSER / "node_modules" / "playwright-core").exists(), "run scripts/test (it runs npm ci in tests/browser)"
    token = lab_env.root / "status-token"
    token.write_text("status-page-token-1\n")
    admin = lab.free_port()
    node = start_node(lab_env, "status-page", [lab.listener(None, "imap", (imap := lab.free_port()), "none",
                                                            allow_plaintext_auth=True)],
                      {"admin": {"address": f"127.0.0.1:{admin}", "token_file": str(token)}})
    client = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    try:
        assert client.login("alice@example.com", lab.DEMO_PASSWORD)[0] == "OK"  # a live session on mbx1
        with pytest.raises(imaplib.IMAP4.error):
            imaplib.IMAP4("127.0.0.1", imap, timeout=15).login("alice@example.com", "wrong")
        shot = lab_env.root / "status-page.png"
        out = subprocess.run(["node", str(BROWSER / "status.mjs"), f"http://127.0.0.1:{admin}", str(shot),
                              "status-page-token-1"], capture_output=True, text=True, timeout=120, cwd=BROWSER)
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        # Without the token the page is refused, and a browser is asked for it.
        import urllib.error
        import urllib.request
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/", timeout=10)
    finally:
        client.logout()
        node.stop()
    assert seen["status"] == 200 and seen["node"] == "status-page", seen
    servers = {row[0]: row for row in seen["servers"]}
    assert set(servers) == {s["name"] for s in lab_env.settings["server"]}, seen["servers"]
    assert servers["mbx1"][2].startswith("1 (imap 1)"), servers["mbx1"]
    databases = dict(tuple(row) for row in seen["databases"])
    assert databases["DB01"] == "mbx1", seen["databases"]
    logins = {row[0]: row for row in seen["logins"]}
    assert logins["ok"][2] == "1" and logins["auth_failed"][2] == "1", seen["logins"]
    assert seen["reloaded"], "the page did not reload itself"
    assert shot.stat().st_size > 10_000
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Basic ")
