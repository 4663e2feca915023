"""A real browser (Debian's Chromium, driven by playwright-core) logs in through mailfront's
form, lands on Radicale's web page through mailfront, and a second node that shares the cookie
key accepts the same cookie: no load-balancer affinity needed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import https_node, lab

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
