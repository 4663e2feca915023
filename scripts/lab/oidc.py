"""The lab's OpenID provider: the npm package oidc-provider run by `oidc/provider.mjs` on
127.0.0.1 over plain HTTP (a loopback lab only; issuer `http://127.0.0.1:PORT`), for mailfront's
OAuth 2.0 tests.

    oidc = Oidc(root / "oidc", lab.free_port(), ["alice@example.com", "bob@example.com"],
                "https://mail.example.com")
    oidc.start()                         # npm ci on first use; returns once discovery answers 200
    token = oidc.mint("alice@example.com")              # a signed JWT access token
    oidc.mint("bob@example.com", scope="imap", alg="ES256", ttl=60, resource="https://other")
    oidc.mint("alice@example.com", shift=-7200)         # expired an hour ago
    oidc.introspect(token)["active"]                    # RFC 7662, as the test client
    oidc.revoke(token)                                  # RFC 7009; inactive from now on
    oidc.login("bob@example.com")["refresh_token"]      # the code flow with PKCE
    oidc.rotate_keys(keep_old=True)     # fresh keys first (they sign from now on), restart
    oidc.public_jwks(), oidc.issuer, oidc.jwks_uri, oidc.discovery
    oidc.stop()

Tokens come without a browser through a lab-only grant, `urn:mailfront:lab:mint`, at the token
endpoint (client_secret_basic): for a lab user (`account`), it saves a real access token through
the provider's own models, signed by the provider's first key of the asked algorithm, so the
provider's introspection and revocation know it. The same provider also runs the ordinary
authorization code flow (PKCE required, refresh tokens with `offline_access`) through
oidc-provider's development login pages, where a lab user logs in with their address and any
password.

Access tokens for the audience are JWTs (header `alg`, `typ: at+jwt`, `kid`) with `iss`, `aud`,
`sub` (not the address: `Oidc.subject(user)`), `email`, `scope`, `client_id`, `iat`, `exp`,
`jti`, and `nbf` when minted for the future. oidc-provider itself neither stores nor introspects
JWT access tokens; provider.mjs adds that (see there). Everything lives in the provider's memory:
a restart (and so a key rotation) forgets every token, which introspection then calls inactive.

Keys are made by node (`provider.mjs genkey`): an RS256, an ES256 and an EdDSA key per
generation, kids `rs256-N`, `es256-N`, `eddsa-N`.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .base import ROOT, atomic_write, log
from .processes import Child, http_ok

SOURCE = ROOT / "scripts" / "lab" / "oidc"
MINT_GRANT = "urn:mailfront:lab:mint"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_SCOPE = "openid email imap pop3 submission"


def ensure_node_modules() -> None:
    """`npm ci` in scripts/lab/oidc when its node_modules is missing (once, under a lock: tests
    may start several providers at the same moment)."""
    if (SOURCE / "node_modules" / "oidc-provider").exists():
        return
    with open(SOURCE / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (SOURCE / "node_modules" / "oidc-provider").exists():
            return
        log("npm ci in scripts/lab/oidc (oidc-provider)")
        cache = Path(os.environ.get("MAILFRONT_CACHE", Path.home() / ".cache" / "mailfront")) / "npm"
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent", "--cache", str(cache)],
                       cwd=SOURCE, check=True, stdout=subprocess.DEVNULL)


def generate_key(alg: str, kid: str) -> dict:
    """A new private JWK for `alg` (RS256, ES256, EdDSA), made by node's crypto."""
    out = subprocess.run(["node", SOURCE / "provider.mjs", "genkey", alg, kid], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_parts(token: str) -> tuple[dict, dict]:
    """A JWT's header and claims, not verified."""
    header, claims, _ = token.split(".")
    return b64url_json(header), b64url_json(claims)


class Oidc(Child):
    """oidc-provider on 127.0.0.1:`port` with the lab users `users` (addresses), access tokens for
    the resource `audience` (more audiences may follow it), and one confidential test client.
    Its keys, log and state live under `root`."""

    def __init__(self, root: Path, port: int, users: list[str], audience: str | list[str],
                 client_id: str = "lab-client", client_secret: str = "lab-client-secret",
                 redirect_uris: list[str] | None = None, ttl: int = 3600):
        self.root = Path(root)
        super().__init__("oidc-provider", self.root / "oidc.log")
        self.port = port
        self.users = list(users)
        self.audiences = [audience] if isinstance(audience, str) else list(audience)
        self.audience = self.audiences[0]
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris or ["http://127.0.0.1/callback"])
        self.ttl = ttl
        self.keys_path = self.root / "keys.json"
        self.generation = 0
        self.issuer = f"http://127.0.0.1:{port}"
        self.discovery: dict = {}

    @staticmethod
    def subject(user: str) -> str:
        """The `sub` of a lab user (provider.mjs derives the same)."""
        return hashlib.sha256(user.encode()).hexdigest()[:16]

    # -- the process -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        ensure_node_modules()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.generation == 0:  # a new provider starts with keys of its own
            self._write_keys([])
        argv = ["node", SOURCE / "provider.mjs", "--port", self.port, "--keys", self.keys_path,
                "--client-id", self.client_id, "--client-secret", self.client_secret, "--ttl", self.ttl]
        for user in self.users:
            argv += ["--user", user]
        for audience in self.audiences:
            argv += ["--audience", audience]
        for uri in self.redirect_uris:
            argv += ["--redirect-uri", uri]
        self.spawn(argv)
        self.wait_ready(lambda: http_ok(f"{self.issuer}/.well-known/openid-configuration"), timeout, interval=0.05)
        self.discovery = self._get_json("/.well-known/openid-configuration")

    def attach(self) -> None:
        """Uses a provider already running on this port (another process started it, such as
        `scripts/demo --oidc`): reads its discovery document."""
        self.discovery = self._get_json("/.well-known/openid-configuration")

    @property
    def jwks_uri(self) -> str:
        return self.discovery["jwks_uri"]

    def rotate_keys(self, keep_old: bool) -> None:
        """A key rotation as a provider does it: a fresh key per algorithm goes first in the keys
        file (so it signs from now on), the old ones stay after it (published, still verifying)
        or go; then a restart on the same port. The restart forgets every issued token."""
        old = json.loads(self.keys_path.read_text())["keys"] if keep_old else []
        self.stop()
        self._write_keys(old)
        self.start()

    def _write_keys(self, old: list[dict]) -> None:
        self.generation += 1
        fresh = [generate_key(alg, f"{alg.lower()}-{self.generation}") for alg in ALGORITHMS]
        atomic_write(self.keys_path, json.dumps({"keys": fresh + old}))
        self.keys_path.chmod(0o600)

    def private_jwks(self) -> dict:
        """The provider's keys, private parts included (for tests that forge tokens)."""
        return json.loads(self.keys_path.read_text())

    def public_jwks(self) -> dict:
        """The JWKS the provider publishes now (at `jwks_uri`)."""
        return self._get_json(urllib.parse.urlsplit(self.jwks_uri).path)

    # -- the test client's calls -------------------------------------------------------------

    def mint(self, user: str, scope: str = DEFAULT_SCOPE, resource: str | None = None, ttl: int | None = None,
             alg: str | None = None, shift: int | None = None) -> str:
        """A fresh access token (a JWT) for the lab user `user`, for `resource` (default: the
        audience), signed with `alg` (default RS256), valid `ttl` seconds (default the
        provider's), its iat and exp moved by `shift` seconds (negative: already expired;
        positive: not valid yet, with `nbf`)."""
        fields = {"grant_type": MINT_GRANT, "account": user, "scope": scope, "resource": resource, "ttl": ttl,
                  "alg": alg, "shift": shift}
        return self.token_request(fields)["access_token"]

    def login(self, user: str, scope: str = "openid email offline_access imap pop3 submission",
              resource: str | None = None) -> dict:
        """The authorization code flow with PKCE as a browser runs it, through the development
        login and consent pages (any password): the token response (access_token, a JWT for
        `resource` or the audience; refresh_token with offline_access; id_token)."""
        verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = self.redirect_uris[0]
        query = {"client_id": self.client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": scope,
                 "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_hex(8),
                 "prompt": "consent", "resource": resource}
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(), _NoRedirect())
        url, form = self.discovery["authorization_endpoint"] + "?" + _encode(query), None
        for _ in range(12):
            if url.startswith(redirect_uri):
                code = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code"][0]
                return self.token_request({"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": redirect_uri, "code_verifier": verifier})
            try:
                with browser.open(url, data=form and _encode(form).encode(), timeout=10) as response:
                    page = response.read().decode()
            except urllib.error.HTTPError as e:
                if e.code not in (302, 303):
                    raise RuntimeError(f"{url}: {e.code} {e.read().decode(errors='replace')}") from None
                url, form = urllib.parse.urljoin(url, e.headers["Location"]), None
                continue
            # A login or consent page: submit its one form.
            action = re.search(r'<form[^>]*action="([^"]+)"', page).group(1)
            prompt = re.search(r'name="prompt" value="(\w+)"', page).group(1)
            url = urllib.parse.urljoin(url, html.unescape(action))
            form = {"prompt": prompt, "login": user, "password": "lab"} if prompt == "login" else {"prompt": prompt}
        raise RuntimeError("the login did not come back to the redirect URI")

    def token_request(self, fields: dict) -> dict:
        """A POST to the token endpoint as the test client (fields that are None are left out)."""
        return self._post("token_endpoint", fields)

    def introspect(self, token: str) -> dict:
        return self._post("introspection_endpoint", {"token": token})

    def revoke(self, token: str) -> None:
        self._post("revocation_endpoint", {"token": token})

    def _post(self, endpoint: str, fields: dict) -> dict:
        body = _encode(fields).encode()
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        request = urllib.request.Request(self.discovery[endpoint], data=body, method="POST",
                                         headers={"Authorization": f"Basic {basic}",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{endpoint}: {e.code} {e.read().decode(errors='replace')}") from None
        return json.loads(text) if text else {}

    def _get_json(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.issuer}{path}", timeout=10) as response:
            return json.loads(response.read())


def _encode(fields: dict) -> str:
    """A form or query string of the fields that are not None."""
    return urllib.parse.urlencode({k: str(v) for k, v in fields.items() if v is not None})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as HTTPError, for the login walk to follow them itself."""

    def redirect_request(self, *args, **kwargs):
        return None
