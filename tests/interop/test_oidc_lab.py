"""The lab's OpenID provider itself (lab.Oidc, scripts/lab/oidc/provider.mjs), without mailfront:
discovery, minted JWT access tokens (claims, header, signature checked here in pure Python),
introspection, revocation and key rotation."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from conftest import lab

AUDIENCE = "https://mail.example.com"
USERS = ["alice@example.com", "bob@example.com"]


@pytest.fixture(scope="module")
def oidc():
    provider = lab.Oidc(lab.reset_dir(lab.lab_root("oidc-lab")), lab.free_port(), USERS, AUDIENCE)
    provider.start()
    yield provider
    provider.stop()


def b64int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def signature_of(token: str) -> tuple[bytes, bytes]:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}".encode(), base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))


def verify_rs256(token: str, jwk: dict) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2.2), by hand: no crypto library needed."""
    signed, signature = signature_of(token)
    n, e = b64int(jwk["n"]), b64int(jwk["e"])
    size = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(size, "big")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(signed).digest()
    return em == b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info)) + b"\x00" + digest_info


# P-256 (FIPS 186-4 D.1.2.3), for checking ES256 signatures by hand.
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
A = P - 3
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def point_add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    if p1[0] == p2[0] and (p1[1] + p2[1]) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * p1[0] * p1[0] + A) * pow(2 * p1[1], -1, P) % P
    else:
        slope = (p2[1] - p1[1]) * pow(p2[0] - p1[0], -1, P) % P
    x = (slope * slope - p1[0] - p2[0]) % P
    return x, (slope * (p1[0] - x) - p1[1]) % P


def point_mul(k: int, point):
    result = None
    while k:
        if k & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        k >>= 1
    return result


def verify_es256(token: str, jwk: dict) -> bool:
    """ECDSA over P-256 with SHA-256, the JWS signature being r || s (RFC 7518 3.4)."""
    signed, signature = signature_of(token)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    z = int.from_bytes(hashlib.sha256(signed).digest(), "big")
    w = pow(s, -1, N)
    point = point_add(point_mul(z * w % N, G), point_mul(r * w % N, (b64int(jwk["x"]), b64int(jwk["y"]))))
    return point is not None and point[0] % N == r


def tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"


def key_for(jwks: dict, kid: str) -> dict:
    found = [k for k in jwks["keys"] if k["kid"] == kid]
    assert len(found) == 1, f"kid {kid} not (once) in {[k['kid'] for k in jwks['keys']]}"
    return found[0]


def test_discovery(oidc):
    d = oidc.discovery
    assert d["issuer"] == oidc.issuer == f"http://127.0.0.1:{oidc.port}"
    assert d["jwks_uri"] == f"{oidc.issuer}/jwks"
    assert d["introspection_endpoint"] == f"{oidc.issuer}/token/introspection"
    assert d["revocation_endpoint"] == f"{oidc.issuer}/token/revocation"
    assert "urn:mailfront:lab:mint" in d["grant_types_supported"]
    assert {"authorization_code", "refresh_token"} <= set(d["grant_types_supported"])
    assert d["code_challenge_methods_supported"] == ["S256"]
    # Public keys only, one per algorithm.
    jwks = oidc.public_jwks()
    assert sorted(k["alg"] for k in jwks["keys"]) == ["ES256", "EdDSA", "RS256"]
    assert not any("d" in k for k in jwks["keys"])


def test_minted_token(oidc):
    before = int(time.time())
    token = oidc.mint("alice@example.com")
    header, claims = lab.oidc.jwt_parts(token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": header["kid"]}
    jwk = key_for(oidc.public_jwks(), header["kid"])
    assert verify_rs256(token, jwk)
    assert not verify_rs256(tampered(token), jwk)
    assert set(claims) == {"iss", "aud", "sub", "email", "scope", "client_id", "iat", "exp", "jti"}
    assert claims["iss"] == oidc.issuer
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == "alice@example.com"
    assert claims["sub"] == oidc.subject("alice@example.com") != "alice@example.com"
    assert claims["scope"] == "openid email imap pop3 submission"
    assert claims["client_id"] == oidc.client_id
    assert before - 1 <= claims["iat"] <= time.time() + 1
    assert claims["exp"] == claims["iat"] + 3600

    info = oidc.introspect(token)
    assert info["active"] is True
    assert info["sub"] == claims["sub"] and info["email"] == "alice@example.com"
    assert info["aud"] == AUDIENCE and info["scope"] == claims["scope"] and info["exp"] == claims["exp"]

    oidc.revoke(token)
    assert oidc.introspect(token) == {"active": False}
    # A token the provider never issued (here: the signature changed) is simply inactive.
    assert oidc.introspect(tampered(oidc.mint("bob@example.com"))) == {"active": False}


def test_mint_options(oidc):
    token = oidc.mint("bob@example.com", scope="imap", resource="https://other.example.com", ttl=60, alg="ES256")
    header, claims = lab.oidc.jwt_parts(token)
    assert header["alg"] == "ES256"
    jwk = key_for(oidc.public_jwks(), header["kid"])
    assert jwk["crv"] == "P-256" and verify_es256(token, jwk) and not verify_es256(tampered(token), jwk)
    assert (claims["aud"], claims["scope"], claims["exp"] - claims["iat"]) == ("https://other.example.com", "imap", 60)
    assert oidc.introspect(token)["active"] is True

    # EdDSA: header and key only (no Ed25519 verifier here without a crypto library).
    header, _ = lab.oidc.jwt_parts(oidc.mint("bob@example.com", alg="EdDSA"))
    assert header["alg"] == "EdDSA" and key_for(oidc.public_jwks(), header["kid"])["crv"] == "Ed25519"

    # Expired an hour ago, and valid only in an hour: both properly signed, both inactive/active
    # as the provider sees them.
    now = time.time()
    _, expired = lab.oidc.jwt_parts(oidc.mint("alice@example.com", shift=-7200))
    assert expired["exp"] < now - 3000 and "nbf" not in expired
    future_token = oidc.mint("alice@example.com", shift=3600)
    _, future = lab.oidc.jwt_parts(future_token)
    assert future["nbf"] == future["iat"] > now + 3000

    with pytest.raises(RuntimeError, match="invalid_grant"):
        oidc.mint("mallory@example.com")


def test_rotation(oidc):
    old_kid = lab.oidc.jwt_parts(oidc.mint("alice@example.com"))[0]["kid"]

    oidc.rotate_keys(keep_old=True)
    kids = [k["kid"] for k in oidc.public_jwks()["keys"]]
    token = oidc.mint("alice@example.com")
    new_kid = lab.oidc.jwt_parts(token)[0]["kid"]
    assert new_kid != old_kid and kids.index(new_kid) < kids.index(old_kid)
    assert verify_rs256(token, key_for(oidc.public_jwks(), new_kid))

    oidc.rotate_keys(keep_old=False)
    kids = [k["kid"] for k in oidc.public_jwks()["keys"]]
    newest = lab.oidc.jwt_parts(oidc.mint("alice@example.com"))[0]["kid"]
    assert newest not in (old_kid, new_kid) and newest in kids
    assert old_kid not in kids and new_kid not in kids
    assert len(kids) == 3


def test_code_flow(oidc):
    """The ordinary login (code flow with PKCE, development login page) gives the same kind of
    access token as the mint, and a refresh token that gives another."""
    tokens = oidc.login("bob@example.com")
    header, claims = lab.oidc.jwt_parts(tokens["access_token"])
    assert header["alg"] == "RS256" and verify_rs256(tokens["access_token"], key_for(oidc.public_jwks(), header["kid"]))
    assert (claims["aud"], claims["email"]) == (AUDIENCE, "bob@example.com")
    assert claims["sub"] == oidc.subject("bob@example.com")
    assert claims["scope"] == "imap pop3 submission"  # a resource's token has the resource's scopes
    assert oidc.introspect(tokens["access_token"])["active"] is True
    _, id_claims = lab.oidc.jwt_parts(tokens["id_token"])
    assert id_claims["aud"] == oidc.client_id and id_claims["sub"] == claims["sub"]

    refreshed = oidc.token_request({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    _, again = lab.oidc.jwt_parts(refreshed["access_token"])
    assert again["aud"] == AUDIENCE and again["jti"] != claims["jti"]
    oidc.revoke(refreshed["access_token"])
    assert oidc.introspect(refreshed["access_token"]) == {"active": False}
